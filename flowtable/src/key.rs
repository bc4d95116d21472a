//! The flow key: what the parser extracts from a packet and every later stage
//! (exact-match cache, classifier, conntrack) keys on.
//!
//! Addresses are always 16 bytes. IPv4 addresses are stored IPv4-mapped
//! (`::ffff:a.b.c.d`), so one prefix type covers both families: an IPv4 prefix
//! `a.b.c.d/n` is the IPv6 prefix `::ffff:a.b.c.d/(96 + n)`, and an IPv4 rule can
//! never match an IPv6 packet (and the other way round).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A 16-byte address, IPv4 stored IPv4-mapped. Big-endian (network order) value.
pub type Addr = u128;

/// Converts an IPv4 address (host-order u32) to the key's 16-byte form.
#[inline]
pub const fn v4_mapped(a: u32) -> Addr {
    0xffff_0000_0000u128 | a as u128
}

/// Converts a std IP address to the key's 16-byte form.
#[inline]
pub fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4_mapped(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Converts the key's 16-byte form back to a std IP address (IPv4-mapped becomes V4).
pub fn ip_of(a: Addr) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// True when the address is an IPv4-mapped one.
#[inline]
pub const fn is_v4(a: Addr) -> bool {
    a >> 32 == 0xffff
}

/// Key flag bits ([`FlowKey::flags`]).
pub mod flags {
    /// The packet is IPv6.
    pub const V6: u8 = 1;
    /// A non-first IP fragment: no L4 header, ports are zero.
    pub const FRAG_LATER: u8 = 2;
    /// The first fragment of a fragmented datagram (L4 header present).
    pub const FRAG_FIRST: u8 = 4;
}

/// A parsed flow key. 64 bytes, cache-line aligned.
///
/// For ICMP and ICMPv6, `sport` holds the type and `dport` the code (the
/// classifier matches them like ports, as OVS does). `src_id`/`dst_id` are the
/// security identities of the two addresses, filled in by the pipeline from the
/// IP -> identity map (the parser leaves them 0 = unknown).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[repr(C, align(64))]
pub struct FlowKey {
    /// Source address (IPv4-mapped for IPv4).
    pub src: Addr,
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: Addr,
    /// Source security identity (0 = unknown / not resolved).
    pub src_id: u32,
    /// Destination security identity (0 = unknown / not resolved).
    pub dst_id: u32,
    /// L4 source port (ICMP: type).
    pub sport: u16,
    /// L4 destination port (ICMP: code).
    pub dport: u16,
    /// Input port.
    pub in_port: u16,
    /// Outer VLAN id (0 = untagged).
    pub vlan: u16,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// TCP flags of this packet (not part of flow identity for caching;
    /// conntrack reads them). Zero for non-TCP.
    pub tcp_flags: u8,
    _pad: u8,
}

impl FlowKey {
    /// Builds a key from its parts (tcp flags and identities zero).
    #[allow(clippy::too_many_arguments)]
    pub fn new(in_port: u16, src: Addr, dst: Addr, proto: u8, sport: u16, dport: u16) -> Self {
        let v6 = if is_v4(src) && is_v4(dst) { 0 } else { flags::V6 };
        FlowKey { src, dst, sport, dport, in_port, proto, flags: v6, ..Default::default() }
    }

    /// Convenience: an IPv4 key.
    pub fn v4(in_port: u16, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Self {
        Self::new(in_port, v4_mapped(src.into()), v4_mapped(dst.into()), proto, sport, dport)
    }

    /// The same flow seen from the other side (addresses, ports and identities swapped).
    #[inline]
    pub fn reversed(&self) -> Self {
        let mut r = *self;
        r.src = self.dst;
        r.dst = self.src;
        r.sport = self.dport;
        r.dport = self.sport;
        r.src_id = self.dst_id;
        r.dst_id = self.src_id;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 64);
        assert_eq!(core::mem::align_of::<FlowKey>(), 64);
    }

    #[test]
    fn mapped_round_trip() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let a = addr_of(ip);
        assert!(is_v4(a));
        assert_eq!(ip_of(a), ip);
        let ip6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!is_v4(addr_of(ip6)));
        assert_eq!(ip_of(addr_of(ip6)), ip6);
    }
}
