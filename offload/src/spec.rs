//! FlowSpec: an rte_flow rule as plain data (attributes, pattern items with
//! spec and mask, actions), the matching semantics a NIC applies, and the
//! printer that writes any rule in testpmd `flow create` syntax.
//!
//! Items follow rte_flow: an item matches a header when, for every field,
//! `packet & mask == spec & mask`. A field left out has mask 0 (any). The
//! pattern is a stack: `eth / ipv4 / tcp` requires those headers in that order.

use core::fmt::{self, Write as _};
use core::net::{Ipv4Addr, Ipv6Addr};
use flowtable::key::{is_v4, Addr};
use flowtable::FlowKey;

/// A value and its mask (rte_flow `spec` + `mask`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Masked<T> {
    /// Bits to compare.
    pub spec: T,
    /// Which bits of `spec` matter (0 = field ignored).
    pub mask: T,
}

/// Integer field types a [`Masked`] can hold.
pub trait Bits: Copy + Default + PartialEq + core::ops::BitAnd<Output = Self> {
    /// All bits set.
    const ALL: Self;
}
macro_rules! bits {
    ($($t:ty),*) => {$( impl Bits for $t { const ALL: Self = <$t>::MAX; } )*};
}
bits!(u8, u16, u32, u64, u128);

impl<T: Bits> Masked<T> {
    /// An exact value (full mask).
    pub fn is(v: T) -> Self {
        Masked { spec: v, mask: T::ALL }
    }
    /// A field that matches anything.
    pub fn any() -> Self {
        Masked { spec: T::default(), mask: T::default() }
    }
    /// True if the field is compared at all.
    pub fn is_set(&self) -> bool {
        self.mask != T::default()
    }
    /// True if `v` matches.
    #[inline]
    pub fn matches(&self, v: T) -> bool {
        (v & self.mask) == (self.spec & self.mask)
    }
}

/// One pattern item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// Ethernet: MACs (as u64, low 48 bits) and ethertype.
    Eth {
        /// Destination MAC.
        dst: Masked<u64>,
        /// Source MAC.
        src: Masked<u64>,
        /// Ethertype.
        ty: Masked<u16>,
    },
    /// 802.1Q tag.
    Vlan {
        /// Tag control information (PCP, DEI, VID).
        tci: Masked<u16>,
    },
    /// IPv4 header fields (addresses host-order u32).
    Ipv4 {
        /// Source address.
        src: Masked<u32>,
        /// Destination address.
        dst: Masked<u32>,
        /// Next protocol.
        proto: Masked<u8>,
    },
    /// IPv6 header fields.
    Ipv6 {
        /// Source address.
        src: Masked<u128>,
        /// Destination address.
        dst: Masked<u128>,
        /// Next header.
        proto: Masked<u8>,
    },
    /// TCP ports.
    Tcp {
        /// Source port.
        src: Masked<u16>,
        /// Destination port.
        dst: Masked<u16>,
    },
    /// UDP ports.
    Udp {
        /// Source port.
        src: Masked<u16>,
        /// Destination port.
        dst: Masked<u16>,
    },
    /// SCTP ports.
    Sctp {
        /// Source port.
        src: Masked<u16>,
        /// Destination port.
        dst: Masked<u16>,
    },
    /// ICMP type and code.
    Icmp {
        /// Type.
        ty: Masked<u8>,
        /// Code.
        code: Masked<u8>,
    },
}

/// One action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlowAction {
    /// Drop the packet (full offload of a deny).
    Drop,
    /// Tag the packet with a 32-bit id (software skips parse and lookup).
    Mark(u32),
    /// Deliver to one rx queue.
    Queue(u16),
    /// Spread over rx queues.
    Rss(Vec<u16>),
    /// Count hits (queried with `flow query ... count`).
    Count,
    /// Continue in another group.
    Jump(u32),
    /// Send to another port of the same switch domain.
    RepresentedPort(u16),
}

/// Rule attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attr {
    /// Table group (0 = root).
    pub group: u32,
    /// Lower value = higher priority (rte_flow convention).
    pub priority: u32,
    /// Applies to received packets.
    pub ingress: bool,
    /// Applies to transmitted packets.
    pub egress: bool,
    /// Applies in the switch domain.
    pub transfer: bool,
}

/// A complete rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowSpec {
    /// Port it is installed on.
    pub port: u16,
    /// Attributes.
    pub attr: Attr,
    /// Headers to match, outermost first.
    pub pattern: Vec<Item>,
    /// Actions, applied in order.
    pub actions: Vec<FlowAction>,
}

/// The header fields of one packet as the NIC model sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// Destination MAC (low 48 bits).
    pub eth_dst: u64,
    /// Source MAC (low 48 bits).
    pub eth_src: u64,
    /// Ethertype after VLAN tags.
    pub eth_type: u16,
    /// Outer VLAN TCI, if tagged.
    pub vlan: Option<u16>,
    /// The parsed flow key (addresses IPv4-mapped; ICMP type/code in ports).
    pub key: FlowKey,
}

impl Headers {
    /// What a NIC's parser extracts from a received frame: MACs, the outer
    /// VLAN tag, the ethertype after tags and the flow key (through
    /// flowtable's parser). None for a frame the parser rejects (no rule
    /// matches it, as on hardware whose parser gives up).
    #[inline]
    pub fn from_frame(frame: &[u8], in_port: u16) -> Option<Headers> {
        let p = flowtable::parse::parse(frame, in_port, None).ok()?;
        let mac = |b: &[u8]| b.iter().fold(0u64, |a, x| a << 8 | *x as u64);
        let l3 = p.meta.l3 as usize;
        if l3 < 14 || frame.len() < l3 {
            return None;
        }
        let vlan = (frame[12..14] == [0x81, 0x00] && frame.len() >= 18).then(|| u16::from_be_bytes([frame[14], frame[15]]));
        Some(Headers {
            eth_dst: mac(&frame[0..6]),
            eth_src: mac(&frame[6..12]),
            eth_type: u16::from_be_bytes([frame[l3 - 2], frame[l3 - 1]]),
            vlan,
            key: p.key,
        })
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

impl Item {
    fn matches(&self, h: &Headers) -> bool {
        let k = &h.key;
        let v4 = h.eth_type == ETH_IPV4 && is_v4(k.src);
        let v6 = h.eth_type == ETH_IPV6;
        match *self {
            Item::Eth { dst, src, ty } => dst.matches(h.eth_dst) && src.matches(h.eth_src) && ty.matches(h.eth_type),
            Item::Vlan { tci } => h.vlan.is_some_and(|t| tci.matches(t)),
            Item::Ipv4 { src, dst, proto } => {
                v4 && src.matches(k.src as u32) && dst.matches(k.dst as u32) && proto.matches(k.proto)
            }
            Item::Ipv6 { src, dst, proto } => v6 && src.matches(k.src) && dst.matches(k.dst) && proto.matches(k.proto),
            Item::Tcp { src, dst } => k.proto == 6 && src.matches(k.sport) && dst.matches(k.dport),
            Item::Udp { src, dst } => k.proto == 17 && src.matches(k.sport) && dst.matches(k.dport),
            Item::Sctp { src, dst } => k.proto == 132 && src.matches(k.sport) && dst.matches(k.dport),
            Item::Icmp { ty, code } => {
                (k.proto == 1 || k.proto == 58) && ty.matches(k.sport as u8) && code.matches(k.dport as u8)
            }
        }
    }
}

impl FlowSpec {
    /// True if every pattern item matches the packet.
    pub fn matches(&self, h: &Headers) -> bool {
        self.pattern.iter().all(|i| i.matches(h))
    }

    /// The exact 5-tuple rule for a flow key: `eth / ipv4|ipv6 src is .. dst is .. /
    /// tcp|udp|sctp src is .. dst is .. / end` (ICMP: type and code).
    pub fn exact(port: u16, k: &FlowKey, actions: Vec<FlowAction>) -> FlowSpec {
        let mut pattern = vec![Item::Eth { dst: Masked::any(), src: Masked::any(), ty: Masked::any() }];
        if is_v4(k.src) && is_v4(k.dst) {
            pattern.push(Item::Ipv4 { src: Masked::is(k.src as u32), dst: Masked::is(k.dst as u32), proto: Masked::any() });
        } else {
            pattern.push(Item::Ipv6 { src: Masked::is(k.src), dst: Masked::is(k.dst), proto: Masked::any() });
        }
        let (s, d) = (Masked::is(k.sport), Masked::is(k.dport));
        match k.proto {
            6 => pattern.push(Item::Tcp { src: s, dst: d }),
            17 => pattern.push(Item::Udp { src: s, dst: d }),
            132 => pattern.push(Item::Sctp { src: s, dst: d }),
            1 | 58 => pattern.push(Item::Icmp { ty: Masked::is(k.sport as u8), code: Masked::is(k.dport as u8) }),
            p => {
                let last = pattern.len() - 1;
                match &mut pattern[last] {
                    Item::Ipv4 { proto, .. } | Item::Ipv6 { proto, .. } => *proto = Masked::is(p),
                    _ => {}
                }
            }
        }
        FlowSpec { port, attr: Attr { ingress: true, ..Default::default() }, pattern, actions }
    }

    /// A prefix rule on one address (quarantine, ipBlock): `eth / ipv4 src|dst spec A src|dst mask M / end`.
    pub fn prefix(port: u16, addr: Addr, len: u8, is_src: bool, actions: Vec<FlowAction>) -> FlowSpec {
        let item = if is_v4(addr) {
            let len4 = len.saturating_sub(96).min(32);
            let mask = if len4 == 0 { 0 } else { u32::MAX << (32 - len4 as u32) };
            let m = Masked { spec: addr as u32 & mask, mask };
            if is_src {
                Item::Ipv4 { src: m, dst: Masked::any(), proto: Masked::any() }
            } else {
                Item::Ipv4 { src: Masked::any(), dst: m, proto: Masked::any() }
            }
        } else {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len.min(128) as u32) };
            let m = Masked { spec: addr & mask, mask };
            if is_src {
                Item::Ipv6 { src: m, dst: Masked::any(), proto: Masked::any() }
            } else {
                Item::Ipv6 { src: Masked::any(), dst: m, proto: Masked::any() }
            }
        };
        let eth = Item::Eth { dst: Masked::any(), src: Masked::any(), ty: Masked::any() };
        FlowSpec { port, attr: Attr { ingress: true, ..Default::default() }, pattern: vec![eth, item], actions }
    }

    /// The mark this rule sets, if any.
    pub fn mark(&self) -> Option<u32> {
        self.actions.iter().find_map(|a| if let FlowAction::Mark(m) = a { Some(*m) } else { None })
    }

    /// True if the rule drops.
    pub fn drops(&self) -> bool {
        self.actions.contains(&FlowAction::Drop)
    }
}

fn mac(v: u64) -> String {
    let b = v.to_be_bytes();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[2], b[3], b[4], b[5], b[6], b[7])
}

/// Writes one field in testpmd syntax: `name is V`, or `name spec V name mask M`.
fn field<T: Copy + PartialEq + Default>(
    out: &mut String,
    name: &str,
    m: Masked<T>,
    full: T,
    show: impl Fn(T) -> String,
) {
    if m.mask == T::default() {
        return;
    }
    if m.mask == full {
        let _ = write!(out, " {name} is {}", show(m.spec));
    } else {
        let _ = write!(out, " {name} spec {} {name} mask {}", show(m.spec), show(m.mask));
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let dec16 = |v: u16| v.to_string();
        let hex16 = |v: u16| format!("0x{v:04x}");
        let dec8 = |v: u8| v.to_string();
        let ip4 = |v: u32| Ipv4Addr::from(v).to_string();
        let ip6 = |v: u128| Ipv6Addr::from(v).to_string();
        match *self {
            Item::Eth { dst, src, ty } => {
                s.push_str("eth");
                field(&mut s, "dst", dst, 0xffff_ffff_ffff, mac);
                field(&mut s, "src", src, 0xffff_ffff_ffff, mac);
                field(&mut s, "type", ty, u16::MAX, hex16);
            }
            Item::Vlan { tci } => {
                s.push_str("vlan");
                field(&mut s, "tci", tci, u16::MAX, dec16);
            }
            Item::Ipv4 { src, dst, proto } => {
                s.push_str("ipv4");
                field(&mut s, "src", src, u32::MAX, ip4);
                field(&mut s, "dst", dst, u32::MAX, ip4);
                field(&mut s, "proto", proto, u8::MAX, dec8);
            }
            Item::Ipv6 { src, dst, proto } => {
                s.push_str("ipv6");
                field(&mut s, "src", src, u128::MAX, ip6);
                field(&mut s, "dst", dst, u128::MAX, ip6);
                field(&mut s, "proto", proto, u8::MAX, dec8);
            }
            Item::Tcp { src, dst } | Item::Udp { src, dst } | Item::Sctp { src, dst } => {
                s.push_str(match self {
                    Item::Tcp { .. } => "tcp",
                    Item::Udp { .. } => "udp",
                    _ => "sctp",
                });
                field(&mut s, "src", src, u16::MAX, dec16);
                field(&mut s, "dst", dst, u16::MAX, dec16);
            }
            Item::Icmp { ty, code } => {
                s.push_str("icmp");
                field(&mut s, "type", ty, u8::MAX, dec8);
                field(&mut s, "code", code, u8::MAX, dec8);
            }
        }
        f.write_str(&s)
    }
}

impl fmt::Display for FlowAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowAction::Drop => f.write_str("drop"),
            FlowAction::Mark(id) => write!(f, "mark id {id}"),
            FlowAction::Queue(q) => write!(f, "queue index {q}"),
            FlowAction::Rss(qs) => {
                f.write_str("rss queues")?;
                for q in qs {
                    write!(f, " {q}")?;
                }
                f.write_str(" end")
            }
            FlowAction::Count => f.write_str("count"),
            FlowAction::Jump(g) => write!(f, "jump group {g}"),
            FlowAction::RepresentedPort(p) => write!(f, "represented_port ethdev_port_id {p}"),
        }
    }
}

impl FlowSpec {
    /// The rule in testpmd syntax after `flow <verb>`: `PORT [group N] [priority N]
    /// ingress pattern ... / end actions ... / end`.
    pub fn testpmd_body(&self) -> String {
        let mut s = format!("{}", self.port);
        if self.attr.group != 0 {
            let _ = write!(s, " group {}", self.attr.group);
        }
        if self.attr.priority != 0 {
            let _ = write!(s, " priority {}", self.attr.priority);
        }
        for (on, w) in [(self.attr.ingress, "ingress"), (self.attr.egress, "egress"), (self.attr.transfer, "transfer")] {
            if on {
                let _ = write!(s, " {w}");
            }
        }
        s.push_str(" pattern");
        for i in &self.pattern {
            let _ = write!(s, " {i} /");
        }
        s.push_str(" end actions");
        for a in &self.actions {
            let _ = write!(s, " {a} /");
        }
        s.push_str(" end");
        s
    }
}

impl fmt::Display for FlowSpec {
    /// `flow create ...`, ready to paste into testpmd.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow create {}", self.testpmd_body())
    }
}
