//! Frame builder for tests, benchmarks, fuzz seeds and traffic generators
//! (not used on the data path; it allocates). Writes through the views'
//! setters, so building then parsing round-trips every field.

use super::arp::{self, ArpPacket};
use super::ethernet::{ethertype, EthernetFrame, HEADER_LEN};
use super::ipv4::Ipv4Packet;
use super::ipv6::{next_header, Ipv6Packet};
use super::l4::proto;
use super::vlan::VlanTag;
use crate::key::Addr;

/// The transport part of a built packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L4 {
    /// TCP with ports and flag byte (20-byte header).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag byte.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// SCTP common header.
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6); 8-byte header, `id` written at 4..6.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Echo identifier (bytes 4..6).
        id: u16,
    },
    /// Any other protocol, no header.
    Other(u8),
}

/// Fragment position of a built packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Frag {
    /// Not fragmented.
    #[default]
    None,
    /// First fragment (MF set, offset 0).
    First,
    /// A later fragment at this offset (8-byte units, non-zero); no L4 header written.
    Later(u16),
}

/// A packet to build. IPv4 when both addresses are IPv4-mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// VLAN tags outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (key form).
    pub src: Addr,
    /// Destination address (key form).
    pub dst: Addr,
    /// Transport header.
    pub l4: L4,
    /// Fragmentation.
    pub frag: Frag,
    /// IPv4: 4-byte words of NOP options (0..=10).
    pub ipv4_option_words: u8,
    /// IPv6: extension headers before the fragment header / L4
    /// (`0` hop-by-hop, `43` routing, `60` destination options), 8 bytes each.
    pub ipv6_ext: Vec<u8>,
    /// Payload bytes after the L4 header.
    pub payload: usize,
}

impl Spec {
    /// A plain packet between two addresses.
    pub fn new(src: Addr, dst: Addr, l4: L4) -> Self {
        Spec { vlans: Vec::new(), src, dst, l4, frag: Frag::None, ipv4_option_words: 0, ipv6_ext: Vec::new(), payload: 0 }
    }

    /// True when the packet is IPv4.
    pub fn is_v4(&self) -> bool {
        crate::key::is_v4(self.src) && crate::key::is_v4(self.dst)
    }

    /// The IP protocol number of the transport.
    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => proto::TCP,
            L4::Udp { .. } => proto::UDP,
            L4::Sctp { .. } => proto::SCTP,
            L4::Icmp { .. } if self.is_v4() => proto::ICMP,
            L4::Icmp { .. } => proto::ICMPV6,
            L4::Other(p) => p,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = match self.l4 {
            L4::Tcp { sport, dport, flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&sport.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
                t
            }
            L4::Udp { sport, dport } => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&sport.to_be_bytes());
                u[2..4].copy_from_slice(&dport.to_be_bytes());
                u[4..6].copy_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                u
            }
            L4::Sctp { sport, dport } => {
                let mut s = vec![0u8; 12];
                s[0..2].copy_from_slice(&sport.to_be_bytes());
                s[2..4].copy_from_slice(&dport.to_be_bytes());
                s
            }
            L4::Icmp { ty, code, id } => {
                let mut i = vec![ty, code, 0, 0, 0, 0, 0, 1];
                i[4..6].copy_from_slice(&id.to_be_bytes());
                i
            }
            L4::Other(_) => Vec::new(),
        };
        if matches!(self.frag, Frag::Later(_)) {
            b.clear();
        }
        b.resize(b.len() + self.payload, 0xab);
        b
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr([0x02, 0, 0, 0, 0, 0x02]);
        eth.set_src_addr([0x02, 0, 0, 0, 0, 0x01]);
        let l3_type = if self.is_v4() { ethertype::IPV4 } else { ethertype::IPV6 };
        let mut types = self.vlans.iter().map(|&(t, _)| t).chain(core::iter::once(l3_type));
        eth.set_ethertype(types.next().unwrap_or(l3_type));
        for &(_, vid) in &self.vlans {
            let at = f.len();
            f.resize(at + 4, 0);
            let mut t = VlanTag::new_unchecked(&mut f[at..]);
            t.set_tci(0, vid);
            t.set_ethertype(types.next().unwrap_or(l3_type));
        }
        let l4 = self.l4_bytes();
        if self.is_v4() {
            let hl = 20 + 4 * usize::from(self.ipv4_option_words.min(10));
            let at = f.len();
            f.resize(at + hl, 1); // NOP options
            f.extend_from_slice(&l4);
            let mut ip = Ipv4Packet::new_unchecked(&mut f[at..]);
            ip.set_header_len(hl);
            ip.set_total_len((hl + l4.len()) as u16);
            ip.set_ident(0x1234);
            match self.frag {
                Frag::None => ip.set_frag(true, false, 0),
                Frag::First => ip.set_frag(false, true, 0),
                Frag::Later(o) => ip.set_frag(false, false, o),
            }
            ip.set_ttl(64);
            ip.set_protocol(self.proto());
            ip.set_src_addr(self.src as u32);
            ip.set_dst_addr(self.dst as u32);
            ip.fill_checksum();
        } else {
            let at = f.len();
            f.resize(at + 40, 0);
            let mut chain: Vec<u8> = self.ipv6_ext.clone();
            if self.frag != Frag::None {
                chain.push(next_header::FRAGMENT);
            }
            let mut ext = Vec::new();
            for (i, &h) in chain.iter().enumerate() {
                let next = chain.get(i + 1).copied().unwrap_or(self.proto());
                if h == next_header::FRAGMENT {
                    let (off, m) = match self.frag {
                        Frag::Later(o) => (o, 0),
                        _ => (0, 1),
                    };
                    ext.push(next);
                    ext.push(0);
                    ext.extend_from_slice(&((off << 3) | m).to_be_bytes());
                    ext.extend_from_slice(&0x1234u32.to_be_bytes());
                } else {
                    ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // PadN
                }
            }
            f.extend_from_slice(&ext);
            f.extend_from_slice(&l4);
            let mut ip = Ipv6Packet::new_unchecked(&mut f[at..]);
            ip.set_version_flow(0);
            ip.set_payload_len((ext.len() + l4.len()) as u16);
            ip.set_next_header(chain.first().copied().unwrap_or(self.proto()));
            ip.set_hop_limit(64);
            ip.set_src_addr(self.src);
            ip.set_dst_addr(self.dst);
        }
        f
    }
}

/// An ARP frame (Ethernet/IPv4), `op` 1 request or 2 reply; addresses host order.
pub fn arp_frame(op: u16, sha: [u8; 6], spa: u32, tpa: u32) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN + arp::LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr([0xff; 6]);
    eth.set_src_addr(sha);
    eth.set_ethertype(ethertype::ARP);
    ArpPacket::new_unchecked(&mut f[HEADER_LEN..]).fill(op, sha, spa, [0; 6], tpa);
    f
}
