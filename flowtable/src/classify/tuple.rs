//! Tuples: which bits of each field a subtable hashes on, and the hash itself.

use crate::key::FlowKey;
use crate::rule::{Match, PortRange};

/// A flow key reduced to the four words every subtable hashes over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Words {
    pub src: u128,
    pub dst: u128,
    /// proto | sport << 8 | dport << 24 | in_port << 40
    pub w1: u64,
    /// src_id | dst_id << 32
    pub w2: u64,
}

impl Words {
    #[inline(always)]
    pub fn of_key(k: &FlowKey) -> Words {
        Words {
            src: k.src,
            dst: k.dst,
            w1: k.proto as u64 | (k.sport as u64) << 8 | (k.dport as u64) << 24 | (k.in_port as u64) << 40,
            w2: k.src_id as u64 | (k.dst_id as u64) << 32,
        }
    }

    /// The words of a rule: the lowest key it matches in every field.
    pub fn of_match(m: &Match) -> Words {
        Words {
            src: m.src.addr,
            dst: m.dst.addr,
            w1: m.proto.unwrap_or(0) as u64
                | (m.sport.lo as u64) << 8
                | (m.dport.lo as u64) << 24
                | (m.in_port.unwrap_or(0) as u64) << 40,
            w2: m.src_id.unwrap_or(0) as u64 | (m.dst_id.unwrap_or(0) as u64) << 32,
        }
    }

    #[inline(always)]
    pub fn masked(&self, m: &Masks) -> Words {
        Words { src: self.src & m.src, dst: self.dst & m.dst, w1: self.w1 & m.w1, w2: self.w2 & m.w2 }
    }

    /// A 64-bit hash of the (already masked) words: three folded 64x64->128
    /// multiplies (the foldhash/wyhash mixer), every input bit reaches every
    /// output bit.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        let a = fold(self.src as u64 ^ 0x243f_6a88_85a3_08d3, self.dst as u64 ^ 0x1319_8a2e_0370_7344);
        let hi = (self.src >> 64) as u64 ^ ((self.dst >> 64) as u64).rotate_left(32);
        let b = fold(hi ^ 0xa409_3822_299f_31d0, self.w1 ^ 0x082e_fa98_ec4e_6c89);
        fold(a ^ self.w2, b ^ 0x4528_21e6_38d0_1377)
    }
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Per-subtable masks over [`Words`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Masks {
    pub src: u128,
    pub dst: u128,
    pub w1: u64,
    pub w2: u64,
}

/// The shape of a subtable: how many leading bits of each field it hashes.
/// Ports are hashed on a prefix of their value: a range `lo..=hi` lies inside
/// the block of its common leading bits, so every port in it shares those bits
/// with `lo` (TupleMerge's treatment of ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tuple {
    pub src: u8,
    pub dst: u8,
    pub sport: u8,
    pub dport: u8,
    pub proto: bool,
    pub in_port: bool,
    pub src_id: bool,
    pub dst_id: bool,
}

/// Leading bits common to all ports of the range (16 for one port, 0 for any).
pub(crate) fn port_len(r: PortRange) -> u8 {
    (r.lo ^ r.hi).leading_zeros() as u8
}

fn pmask16(len: u8) -> u64 {
    if len == 0 {
        0
    } else {
        (0xffffu64 << (16 - len as u32)) & 0xffff
    }
}

fn amask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl Tuple {
    /// The exact tuple of a rule: every bit it fixes.
    pub fn of(m: &Match) -> Tuple {
        Tuple {
            src: m.src.len,
            dst: m.dst.len,
            sport: port_len(m.sport),
            dport: port_len(m.dport),
            proto: m.proto.is_some(),
            in_port: m.in_port.is_some(),
            src_id: m.src_id.is_some(),
            dst_id: m.dst_id.is_some(),
        }
    }

    /// True if a rule of tuple `r` can live in a subtable of this tuple
    /// (the subtable hashes no bit the rule leaves free).
    #[inline]
    pub fn covers(&self, r: &Tuple) -> bool {
        self.src <= r.src
            && self.dst <= r.dst
            && self.sport <= r.sport
            && self.dport <= r.dport
            && (!self.proto || r.proto)
            && (!self.in_port || r.in_port)
            && (!self.src_id || r.src_id)
            && (!self.dst_id || r.dst_id)
    }

    /// Hashed bits: more bits, fewer collisions.
    pub fn bits(&self) -> u32 {
        self.src as u32
            + self.dst as u32
            + self.sport as u32
            + self.dport as u32
            + 8 * self.proto as u32
            + 16 * self.in_port as u32
            + 32 * (self.src_id as u32 + self.dst_id as u32)
    }

    /// The tuple of a new subtable for a rule of this tuple, at relaxation
    /// `level` (0 coarsest): level 0 rounds address lengths down to 8 bits
    /// inside the IPv4-mapped range (16 below it) and port prefixes to all or
    /// nothing; level 1 to 4 bits (8) and ports to 0, 8 or 16 bits. Fewer,
    /// wider subtables (TupleMerge); the collision limit splits crowded ones.
    pub fn relaxed(&self, level: u8) -> Tuple {
        let (v4, v6) = if level == 0 { (8, 16) } else { (4, 8) };
        let addr = |l: u8| if l >= 96 { 96 + (l - 96) / v4 * v4 } else { l / v6 * v6 };
        let port = |l: u8| {
            if l == 16 {
                16
            } else if l >= 8 && level > 0 {
                8
            } else {
                0
            }
        };
        Tuple { src: addr(self.src), dst: addr(self.dst), sport: port(self.sport), dport: port(self.dport), ..*self }
    }

    pub fn masks(&self) -> Masks {
        let w1 = if self.proto { 0xff } else { 0 }
            | pmask16(self.sport) << 8
            | pmask16(self.dport) << 24
            | if self.in_port { 0xffffu64 << 40 } else { 0 };
        let w2 = if self.src_id { 0xffff_ffffu64 } else { 0 } | if self.dst_id { 0xffff_ffffu64 << 32 } else { 0 };
        Masks { src: amask(self.src), dst: amask(self.dst), w1, w2 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_prefix_of_range_holds_every_port() {
        for (lo, hi) in [(0u16, 65535u16), (80, 80), (1024, 65535), (6000, 6063), (1, 2), (0, 1023)] {
            let r = PortRange { lo, hi };
            let m = pmask16(port_len(r)) as u16;
            for p in lo..=hi {
                assert_eq!(p & m, lo & m, "{lo}..={hi} at {p}");
            }
        }
        assert_eq!(port_len(PortRange::ANY), 0);
        assert_eq!(port_len(PortRange::exact(9)), 16);
    }

    #[test]
    fn relaxed_covers_exact() {
        let t =
            Tuple { src: 127, dst: 101, sport: 6, dport: 16, proto: true, in_port: false, src_id: true, dst_id: false };
        let r = t.relaxed(0);
        assert!(r.covers(&t));
        assert_eq!((r.src, r.dst, r.sport, r.dport), (120, 96, 0, 16));
        assert!(!t.covers(&r));
        let r1 = t.relaxed(1);
        assert!(r1.covers(&t) && !r1.covers(&r) || r1 == r || r.covers(&r1));
        assert_eq!((r1.src, r1.dst, r1.sport, r1.dport), (124, 100, 0, 16));
    }
}
