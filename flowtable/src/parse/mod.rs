//! Packet parsing: zero-copy views over the frame bytes (smoltcp style:
//! `new_checked` validates once, accessors then never panic) and
//! [`parse_into`], which walks L2 -> L3 -> L4 and fills a [`FlowKey`].
//!
//! ```text
//! Ethernet -> [802.1Q | 802.1ad/QinQ]{0,2} -> IPv4 (options, fragments)
//!                                          -> IPv6 (hop-by-hop, routing, fragment,
//!                                                   destination options, AH; <= 8)
//!                                          -> ARP (own class)
//!                                          -> anything else: NonIp class
//!          -> TCP (ports, flags) | UDP | UDP-Lite | SCTP | ICMP/ICMPv6 (type, code)
//! ```
//!
//! Fragments: a first fragment (MF set, offset 0) carries its L4 header and is
//! flagged [`flags::FRAG_FIRST`]; a later one is keyed without ports and
//! flagged [`flags::FRAG_LATER`]. Malformed input is an `Err(Malformed)` the
//! pipeline counts as a drop reason, never a panic (fuzzed: flowtable/fuzz).

pub mod arp;
pub mod build;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod vlan;

use crate::key::{flags, v4_mapped, Addr, FlowKey};
use arp::ArpPacket;
use ethernet::{ethertype, EthernetFrame};
use ipv4::Ipv4Packet;
use ipv6::{next_header as nh, ExtHeader, FragHeader, Ipv6Packet, MAX_EXT_HEADERS};
use l4::{proto, IcmpHeader, PortsHeader, TcpHeader};
use vlan::VlanTag;

/// Why a frame could not be parsed. Each is a counted drop reason.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    Runt,
    /// A VLAN TPID without the 4 tag bytes.
    TruncatedVlan,
    /// More than [`vlan::MAX_TAGS`] stacked VLAN tags.
    TooManyVlans,
    /// ARP that is short or not Ethernet/IPv4.
    BadArp,
    /// Shorter than the fixed IP header.
    TruncatedIp,
    /// IP version field does not match the ethertype.
    BadVersion,
    /// IPv4 IHL below 5 or past the buffer.
    BadIhl,
    /// IPv4 total length below the header or past the buffer.
    BadTotalLength,
    /// IPv6 payload length past the buffer.
    BadPayloadLength,
    /// An IPv6 extension header cut short.
    TruncatedExtHeader,
    /// More than [`ipv6::MAX_EXT_HEADERS`] extension headers.
    TooManyExtHeaders,
    /// A hop-by-hop header that is not the first after the IPv6 header.
    MisplacedHopByHop,
    /// L4 header cut short (includes tiny first fragments).
    TruncatedL4,
    /// TCP data offset below 5.
    BadTcpOffset,
    /// IPv4 TCP fragment at offset 8 bytes (RFC 1858 overlap attack).
    BadFragment,
}

impl Malformed {
    /// Every variant, in declaration order (index = `self as usize`).
    pub const ALL: [Malformed; 15] = [
        Malformed::Runt,
        Malformed::TruncatedVlan,
        Malformed::TooManyVlans,
        Malformed::BadArp,
        Malformed::TruncatedIp,
        Malformed::BadVersion,
        Malformed::BadIhl,
        Malformed::BadTotalLength,
        Malformed::BadPayloadLength,
        Malformed::TruncatedExtHeader,
        Malformed::TooManyExtHeaders,
        Malformed::MisplacedHopByHop,
        Malformed::TruncatedL4,
        Malformed::BadTcpOffset,
        Malformed::BadFragment,
    ];

    /// A snake_case name, as used in counters (`drop_<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            Malformed::Runt => "runt",
            Malformed::TruncatedVlan => "truncated_vlan",
            Malformed::TooManyVlans => "too_many_vlans",
            Malformed::BadArp => "bad_arp",
            Malformed::TruncatedIp => "truncated_ip",
            Malformed::BadVersion => "bad_version",
            Malformed::BadIhl => "bad_ihl",
            Malformed::BadTotalLength => "bad_total_length",
            Malformed::BadPayloadLength => "bad_payload_length",
            Malformed::TruncatedExtHeader => "truncated_ext_header",
            Malformed::TooManyExtHeaders => "too_many_ext_headers",
            Malformed::MisplacedHopByHop => "misplaced_hop_by_hop",
            Malformed::TruncatedL4 => "truncated_l4",
            Malformed::BadTcpOffset => "bad_tcp_offset",
            Malformed::BadFragment => "bad_fragment",
        }
    }
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of packet a well-formed frame is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Class {
    /// IPv4: the key is a full flow key.
    #[default]
    Ipv4,
    /// IPv6: the key is a full flow key.
    Ipv6,
    /// ARP (Ethernet/IPv4): key `src` = sender IP, `dst` = target IP (mapped),
    /// `sport` = operation; the frame's ARP body starts at [`Meta::l3`].
    Arp,
    /// Any other ethertype (or an 802.3 length field).
    NonIp {
        /// The innermost ethertype.
        ethertype: u16,
    },
}

/// What the parser learned besides the key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Meta {
    /// Packet class.
    pub class: Class,
    /// The NIC's RSS hash when given, else [`flow_hash`] of the key.
    pub hash: u32,
    /// Offset of the L3 header in the frame.
    pub l3: u16,
    /// Offset of the L4 header (0 when there is none: later fragments, no next header).
    pub l4: u16,
    /// ICMP/ICMPv6 echo identifier (0 for anything else): conntrack pairs
    /// echo requests with replies through it.
    pub echo_id: u16,
}

/// A parsed packet: key and metadata.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Parsed {
    /// The flow key (identities 0: the pipeline resolves them).
    pub key: FlowKey,
    /// Everything else.
    pub meta: Meta,
}

/// Reads a big-endian u16 at `at` (the caller has checked the length).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn tail(b: &[u8], off: usize) -> &[u8] {
    b.get(off..).unwrap_or(&[])
}

/// Parses `frame` into a new key; see [`parse_into`].
#[inline]
pub fn parse(frame: &[u8], in_port: u16, rss: Option<u32>) -> Result<Parsed, Malformed> {
    let mut key = FlowKey::default();
    let meta = parse_into(frame, in_port, rss, &mut key)?;
    Ok(Parsed { key, meta })
}

/// Parses one Ethernet frame into `key` (fully overwritten; identities 0,
/// `in_port` set) and returns the metadata. `rss` is the NIC's RSS hash when
/// the NIC marked it valid. Never panics; a malformed frame is an `Err` and
/// leaves `key` in an unspecified (but valid) state.
#[inline]
pub fn parse_into(frame: &[u8], in_port: u16, rss: Option<u32>, key: &mut FlowKey) -> Result<Meta, Malformed> {
    let mut meta = Meta::default();
    parse_into_meta(frame, in_port, rss, key, &mut meta)?;
    Ok(meta)
}

/// [`parse_into`] writing the metadata to `meta` as well (unspecified when
/// the frame is malformed): [`parse_fast`] then [`parse_general`], as the
/// pipeline calls them. The fast path writes `meta` in place: returned by
/// value, the metadata was assembled on the stack from narrow stores and read
/// back with a wider load, which the CPU cannot forward from two stores
/// (perf: 29 % of a policy lcore's own cycles stalled on that one load).
#[inline]
pub fn parse_into_meta(frame: &[u8], in_port: u16, rss: Option<u32>, key: &mut FlowKey, meta: &mut Meta) -> Result<(), Malformed> {
    if parse_fast(frame, in_port, rss, key, meta) {
        return Ok(());
    }
    *meta = parse_general(frame, in_port, rss, key)?;
    Ok(())
}

/// The common case on its own straight line: untagged Ethernet, IPv4
/// without options and not fragmented, TCP or UDP, every length consistent.
/// Anything else (including anything malformed) returns false without
/// touching `key` or `meta`, and [`parse_general`] decides. Both give the same key
/// and metadata for every frame this takes (a proptest checks it).
#[inline(always)]
pub fn parse_fast(frame: &[u8], in_port: u16, rss: Option<u32>, key: &mut FlowKey, meta: &mut Meta) -> bool {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + 20;
    let Some(h) = frame.get(..L4 + 8) else { return false };
    let h: &[u8; L4 + 8] = h.try_into().expect("L4 + 8 bytes");
    if be16(h, 12) != ethertype::IPV4 || h[L3] != 0x45 || be16(h, L3 + 6) & 0x3fff != 0 {
        return false;
    }
    let total = usize::from(be16(h, L3 + 2));
    if total > frame.len() - L3 {
        return false;
    }
    let proto = h[L3 + 9];
    let tcp_flags = match proto {
        // total >= 40 and inside the frame: the TCP header's 20 bytes are there.
        proto::TCP if total >= 40 && (20..=total - 20).contains(&(usize::from(frame[L4 + 12] >> 4) * 4)) => frame[L4 + 13],
        proto::UDP if total >= 28 => 0,
        _ => return false,
    };
    let mut k = FlowKey::default();
    k.src = v4_mapped(u32::from_be_bytes([h[L3 + 12], h[L3 + 13], h[L3 + 14], h[L3 + 15]]));
    k.dst = v4_mapped(u32::from_be_bytes([h[L3 + 16], h[L3 + 17], h[L3 + 18], h[L3 + 19]]));
    k.sport = be16(h, L4);
    k.dport = be16(h, L4 + 2);
    k.in_port = in_port;
    k.proto = proto;
    k.tcp_flags = tcp_flags;
    *key = k;
    let hash = match rss {
        Some(h) => h,
        None => flow_hash(key, 0),
    };
    *meta = Meta { class: Class::Ipv4, hash, l3: L3 as u16, l4: L4 as u16, echo_id: 0 };
    true
}

/// True when the fast path reads the same from frames `a` and `b`: the same
/// length (48 bytes or more) and the same bytes 12..48 but for those it
/// ignores (IPv4 ID, TTL and checksum; past the ports, all but TCP's data
/// offset and flags).
///
/// The fast path is a function of these bytes, `in_port` and `rss` alone, so
/// when it took `a`, it parses `b` to the same key and metadata (a proptest
/// checks it): the pipeline reuses them instead of parsing each packet of a
/// train of one flow's packets again ([`FastFields`]: `a`'s side read once).
#[inline(always)]
pub fn same_fast_fields(a: &[u8], b: &[u8]) -> bool {
    FastFields::of(a).is_some_and(|f| f.same(b))
}

/// The bytes [`same_fast_fields`] compares, read from one frame and masked
/// once: a train's first frame, against which each next frame is checked
/// with its own loads alone (its first frame's, re-read for every packet,
/// were a third of the check's instructions).
#[derive(Clone, Copy, Debug)]
pub struct FastFields {
    len: usize,
    /// Bytes 28..36: the source's second half, the destination, the source port.
    w28: u64,
    /// Bytes 12..28 under [`FastFields::M12`].
    w12: u128,
    /// Bytes 36..38: the destination port.
    w36: u16,
    /// Bytes 44..48 under `m44`.
    l4: u32,
    /// TCP: the data offset and flags; else nothing.
    m44: u32,
}

impl FastFields {
    /// Bytes 12..28 (loaded little-endian: byte k is bits 8(k-12)..): the
    /// ethertype, version/IHL, TOS, total length, fragment field, protocol
    /// and the source's first half; not the IPv4 ID, TTL or checksum.
    const M12: u128 = 0xffff_0000_ff00_ffff_0000_ffff_ffff_ffff;
    /// Bytes 44..48 of a TCP frame: data offset and flags.
    const M44_TCP: u32 = 0xffff_0000;

    #[inline(always)]
    fn w64(h: &[u8; 48], at: usize) -> u64 {
        u64::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5], h[at + 6], h[at + 7]])
    }

    #[inline(always)]
    fn w128(h: &[u8; 48]) -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[12..28]);
        u128::from_le_bytes(b)
    }

    #[inline(always)]
    fn l4(h: &[u8; 48]) -> u32 {
        u32::from_le_bytes([h[44], h[45], h[46], h[47]])
    }

    /// The fields of `frame`, or `None` under 48 bytes (no frame is then the same).
    #[inline(always)]
    pub fn of(frame: &[u8]) -> Option<FastFields> {
        let a: &[u8; 48] = frame.get(..48)?.try_into().expect("48 bytes");
        // The protocol byte is compared, so a's decides the mask.
        let m44 = if a[ethernet::HEADER_LEN + 9] == proto::TCP { Self::M44_TCP } else { 0 };
        Some(FastFields {
            len: frame.len(),
            w28: Self::w64(a, 28),
            w12: Self::w128(a) & Self::M12,
            w36: u16::from_le_bytes([a[36], a[37]]),
            l4: Self::l4(a) & m44,
            m44,
        })
    }

    /// True when `b` reads, to the fast path, as the frame these came from
    /// ([`same_fast_fields`]). Addresses and ports are compared first: two
    /// different flows differ there, at the cost of one load.
    #[inline(always)]
    pub fn same(&self, b: &[u8]) -> bool {
        if b.len() != self.len {
            return false;
        }
        let Some(b) = b.get(..48) else { return false };
        let b: &[u8; 48] = b.try_into().expect("48 bytes");
        if Self::w64(b, 28) != self.w28 {
            return false;
        }
        ((Self::w128(b) & Self::M12) ^ self.w12) | u128::from(u16::from_le_bytes([b[36], b[37]]) ^ self.w36) | u128::from((Self::l4(b) & self.m44) ^ self.l4)
            == 0
    }
}

/// The full parser: every header this module knows, every check.
pub fn parse_general(frame: &[u8], in_port: u16, rss: Option<u32>, key: &mut FlowKey) -> Result<Meta, Malformed> {
    *key = FlowKey::default();
    key.in_port = in_port;
    let eth = EthernetFrame::new_checked(frame)?;
    let mut et = eth.ethertype();
    let mut off = ethernet::HEADER_LEN;
    let mut tags = 0;
    while vlan::is_tpid(et) {
        if tags == vlan::MAX_TAGS {
            return Err(Malformed::TooManyVlans);
        }
        let tag = VlanTag::new_checked(tail(frame, off))?;
        if tags == 0 {
            key.vlan = tag.vid();
        }
        et = tag.ethertype();
        off += vlan::TAG_LEN;
        tags += 1;
    }
    let mut meta = Meta { l3: off as u16, ..Meta::default() };
    match et {
        ethertype::IPV4 => {
            meta.class = Class::Ipv4;
            parse_ipv4(tail(frame, off), off, key, &mut meta)?;
        }
        ethertype::IPV6 => {
            meta.class = Class::Ipv6;
            key.flags = flags::V6;
            parse_ipv6(tail(frame, off), off, key, &mut meta)?;
        }
        ethertype::ARP => {
            let a = ArpPacket::new_checked(tail(frame, off))?;
            meta.class = Class::Arp;
            key.src = v4_mapped(a.sender_ip());
            key.dst = v4_mapped(a.target_ip());
            key.sport = a.operation();
        }
        other => meta.class = Class::NonIp { ethertype: other },
    }
    meta.hash = match rss {
        Some(h) => h,
        None => flow_hash(key, meta.echo_id),
    };
    Ok(meta)
}

#[inline]
fn parse_ipv4(b: &[u8], base: usize, key: &mut FlowKey, meta: &mut Meta) -> Result<(), Malformed> {
    let ip = Ipv4Packet::new_checked(b)?;
    key.src = v4_mapped(ip.src_addr());
    key.dst = v4_mapped(ip.dst_addr());
    key.proto = ip.protocol();
    let fo = ip.frag_offset();
    if fo != 0 {
        if fo == 1 && key.proto == proto::TCP {
            return Err(Malformed::BadFragment);
        }
        key.flags |= flags::FRAG_LATER;
        return Ok(());
    }
    if ip.more_frags() {
        key.flags |= flags::FRAG_FIRST;
    }
    meta.l4 = (base + ip.header_len()) as u16;
    parse_l4(ip.payload(), false, key, meta)
}

fn parse_ipv6(b: &[u8], base: usize, key: &mut FlowKey, meta: &mut Meta) -> Result<(), Malformed> {
    let ip = Ipv6Packet::new_checked(b)?;
    key.src = ip.src_addr();
    key.dst = ip.dst_addr();
    let payload = ip.payload();
    let mut next = ip.next_header();
    let mut off = 0usize;
    let mut n = 0usize;
    loop {
        match next {
            nh::HOP_BY_HOP | nh::ROUTING | nh::DST_OPTS | nh::AH => {
                if next == nh::HOP_BY_HOP && n != 0 {
                    return Err(Malformed::MisplacedHopByHop);
                }
                if n == MAX_EXT_HEADERS {
                    return Err(Malformed::TooManyExtHeaders);
                }
                let h = ExtHeader::new_checked(tail(payload, off), next == nh::AH)?;
                next = h.next_header();
                off += h.header_len();
                n += 1;
            }
            nh::FRAGMENT => {
                if n == MAX_EXT_HEADERS {
                    return Err(Malformed::TooManyExtHeaders);
                }
                let f = FragHeader::new_checked(tail(payload, off))?;
                next = f.next_header();
                off += ipv6::FRAG_HEADER_LEN;
                n += 1;
                if f.frag_offset() != 0 {
                    key.proto = next;
                    key.flags |= flags::FRAG_LATER;
                    return Ok(());
                }
                if f.more_frags() {
                    key.flags |= flags::FRAG_FIRST;
                }
            }
            _ => break,
        }
    }
    key.proto = next;
    if next == nh::NONE {
        return Ok(());
    }
    meta.l4 = (base + ipv6::HEADER_LEN + off) as u16;
    parse_l4(tail(payload, off), true, key, meta)
}

#[inline]
fn parse_l4(b: &[u8], v6: bool, key: &mut FlowKey, meta: &mut Meta) -> Result<(), Malformed> {
    match key.proto {
        proto::TCP => {
            let t = TcpHeader::new_checked(b)?;
            key.sport = t.src_port();
            key.dport = t.dst_port();
            key.tcp_flags = t.flags();
        }
        proto::UDP | proto::UDPLITE => {
            let u = PortsHeader::new_checked(b, l4::UDP_LEN)?;
            key.sport = u.src_port();
            key.dport = u.dst_port();
        }
        proto::SCTP => {
            let s = PortsHeader::new_checked(b, l4::SCTP_LEN)?;
            key.sport = s.src_port();
            key.dport = s.dst_port();
        }
        p if (p == proto::ICMP && !v6) || (p == proto::ICMPV6 && v6) => {
            let i = IcmpHeader::new_checked(b, v6)?;
            key.sport = u16::from(i.msg_type());
            key.dport = u16::from(i.code());
            meta.echo_id = i.echo_id();
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

#[inline(always)]
fn fold_addr(a: Addr) -> u64 {
    (a as u64) ^ ((a >> 64) as u64).rotate_left(29)
}

/// The software flow hash: symmetric (a flow and its reply hash alike, so
/// one lcore and one cache bucket see both directions), over addresses,
/// ports, protocol, VLAN and `echo_id`; for ICMP echo the type is left out so
/// a request and its reply agree. Not keyed: the endpoints are folded to 64
/// bits, combined in sorted order, and mixed by one 64x64->128 multiply.
#[inline]
pub fn flow_hash(k: &FlowKey, echo_id: u16) -> u32 {
    let (a, b) = (fold_addr(k.src), fold_addr(k.dst));
    let (sp, dp) = if is_icmp_echo(k) { (echo_id, echo_id) } else { (k.sport, k.dport) };
    // Commutative combination of the two endpoints.
    let ea = a.wrapping_add(u64::from(sp).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let eb = b.wrapping_add(u64::from(dp).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (lo, hi) = if ea <= eb { (ea, eb) } else { (eb, ea) };
    let rest = u64::from(k.proto) | u64::from(k.vlan) << 8 | u64::from(k.flags & flags::V6) << 24;
    let h = fold(lo ^ 0xa409_3822_299f_31d0, hi ^ rest ^ 0x082e_fa98_ec4e_6c89);
    (h ^ (h >> 32)) as u32
}

#[inline(always)]
fn is_icmp_echo(k: &FlowKey) -> bool {
    let v6 = k.flags & flags::V6 != 0;
    ((k.proto == proto::ICMP && !v6) || (k.proto == proto::ICMPV6 && v6))
        && k.flags & flags::FRAG_LATER == 0
        && k.sport <= 255
        && l4::is_echo(v6, k.sport as u8)
}

#[cfg(test)]
mod tests;
