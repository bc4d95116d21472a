//! The compact per-rule record walked by lookups: rank, chain link and, for
//! IPv4-or-any rules without in_port/identity fields (every ClassBench rule and
//! most policy rules with CIDRs), the whole match in 32 bytes, so a chain step
//! touches one cache line instead of the 88-byte [`Rule`].

use crate::key::{is_v4, FlowKey};
use crate::rule::{Prefix, Rule};

/// The record cannot decide alone: check the full rule.
pub(crate) const FULL: u8 = 1;
/// Protocol is exact.
pub(crate) const PROTO: u8 = 2;
/// Source is an IPv4 prefix (else any address of both families).
pub(crate) const SRC_V4: u8 = 4;
/// Destination is an IPv4 prefix (else any).
pub(crate) const DST_V4: u8 = 8;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Hot {
    pub rank: u64,
    pub next: u32,
    src: u32,
    dst: u32,
    sport_lo: u16,
    sport_hi: u16,
    dport_lo: u16,
    dport_hi: u16,
    /// IPv4 prefix lengths (0..=32).
    src_len: u8,
    dst_len: u8,
    proto: u8,
    pub kind: u8,
}

/// The parts of a key the compact check reads, computed once per lookup.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyV4 {
    src: u32,
    dst: u32,
    src_v4: bool,
    dst_v4: bool,
}

impl KeyV4 {
    #[inline(always)]
    pub fn of(k: &FlowKey) -> Self {
        KeyV4 { src: k.src as u32, dst: k.dst as u32, src_v4: is_v4(k.src), dst_v4: is_v4(k.dst) }
    }
}

/// (is v4 prefix, v4 address, v4 length), or None if neither v4 nor any.
fn v4_part(p: Prefix) -> Option<(bool, u32, u8)> {
    if p.len == 0 {
        Some((false, 0, 0))
    } else if p.len >= 96 && is_v4(p.addr) {
        Some((true, p.addr as u32, p.len - 96))
    } else {
        None
    }
}

#[inline(always)]
fn mask32(len: u8) -> u32 {
    (u64::MAX << (32 - len as u32)) as u32
}

impl Hot {
    pub fn of(r: &Rule) -> Hot {
        let m = &r.m;
        let mut h = Hot {
            rank: super::rank(r),
            next: u32::MAX,
            sport_lo: m.sport.lo,
            sport_hi: m.sport.hi,
            dport_lo: m.dport.lo,
            dport_hi: m.dport.hi,
            proto: m.proto.unwrap_or(0),
            kind: if m.proto.is_some() { PROTO } else { 0 },
            ..Hot::default()
        };
        match (v4_part(m.src), v4_part(m.dst)) {
            (Some((s4, s, sl)), Some((d4, d, dl)))
                if m.in_port.is_none() && m.src_id.is_none() && m.dst_id.is_none() =>
            {
                h.src = s;
                h.src_len = sl;
                h.dst = d;
                h.dst_len = dl;
                h.kind |= if s4 { SRC_V4 } else { 0 } | if d4 { DST_V4 } else { 0 };
            }
            _ => h.kind |= FULL,
        }
        h
    }

    /// The match check of a non-FULL record; same answer as `Match::matches`.
    #[inline(always)]
    pub fn matches_v4(&self, k: &FlowKey, kv: &KeyV4) -> bool {
        let ports = self.sport_lo <= k.sport
            && k.sport <= self.sport_hi
            && self.dport_lo <= k.dport
            && k.dport <= self.dport_hi;
        let proto = self.kind & PROTO == 0 || self.proto == k.proto;
        let src = self.kind & SRC_V4 == 0 || (kv.src_v4 && (kv.src ^ self.src) & mask32(self.src_len) == 0);
        let dst = self.kind & DST_V4 == 0 || (kv.dst_v4 && (kv.dst ^ self.dst) & mask32(self.dst_len) == 0);
        ports & proto & src & dst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::v4_mapped;
    use crate::rule::{Match, PortRange, RuleId};

    #[test]
    fn compact_check_agrees_with_match() {
        let prefixes = [
            Prefix::ANY,
            Prefix::v4(0, 0),
            Prefix::v4(0x0a00_0000, 8),
            Prefix::v4(0x0a01_0203, 32),
            Prefix::new(0x2001 << 112, 16),
        ];
        let addrs = [v4_mapped(0x0a01_0203), v4_mapped(0x0b00_0001), 0x2001u128 << 112 | 5, 1];
        for (i, &src) in prefixes.iter().enumerate() {
            for &dst in &prefixes {
                for proto in [None, Some(6)] {
                    let m = Match { src, dst, proto, sport: PortRange { lo: 10, hi: 20 }, ..Match::ANY };
                    let h = Hot::of(&Rule { id: RuleId(i as u32), m, ..Rule::default() });
                    assert_eq!(h.kind & FULL != 0, i == 4 || dst.len == 16);
                    for &a in &addrs {
                        for &b in &addrs {
                            for (p, sp) in [(6u8, 15u16), (17, 15), (6, 21)] {
                                let k = FlowKey::new(0, a, b, p, sp, 1);
                                if h.kind & FULL == 0 {
                                    assert_eq!(h.matches_v4(&k, &KeyV4::of(&k)), m.matches(&k), "{m:?} {k:?}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
