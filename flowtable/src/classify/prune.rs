//! Tuple pruning: before probing, each lane computes the set of subtables that
//! hold at least one rule compatible with it in every one of five fields,
//! each field judged alone on a coarse chunk of its value (Srinivasan &
//! Varghese's tuple pruning, with bitsets instead of per-field LPM):
//!
//! ```text
//! field   chunk of a key                  a rule occupies
//! src     top 12 bits of an IPv4 address  the chunks its prefix spans (> 64: WILD)
//! dst     same                            same
//! sport   low 8 bits of the port          the chunks of its range (>= 16 ports: WILD)
//! dport   same                            same
//! proto   the protocol                    its protocol (any: WILD)
//! IPv6 keys and rules use one V6 slot per address field (no pruning); an
//! IPv6 prefix that contains the whole IPv4-mapped block counts as WILD.
//! ```
//!
//! For each field and chunk a bitset over subtable *positions in the lookup
//! order* (the first 128; later ones are always probed) is kept exact under
//! inserts and deletes by per-subtable occupancy counts. Because bit order is
//! lookup order, a lane visits its candidates lowest bit first and stops at
//! the first subtable whose max rank is below its best match. When a
//! subtable changes position, every bitset moves one bit (a few µs).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::key::{is_v4, FlowKey};

/// A subtable's occupancy: slot -> rules of the subtable occupying it.
pub(crate) type Counts = HashMap<u16, u32, BuildHasherDefault<super::IdHasher>>;

/// Heap bytes of a `Counts` (hashbrown: entry + control byte per bucket).
pub(crate) fn counts_bytes(c: &Counts) -> usize {
    (c.capacity() * 8 / 7) * (core::mem::size_of::<(u16, u32)>() + 1)
}
use crate::rule::{Match, PortRange, Prefix};

/// The first address of the IPv4-mapped block.
const V4_BLOCK: u128 = 0xffff_0000_0000;

/// Subtable positions below this take part in pruning.
pub(crate) const PRUNE_IDS: usize = 256;

/// A set of subtable positions `0..256`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bits {
    lo: u128,
    hi: u128,
}

impl core::ops::BitAnd for Bits {
    type Output = Bits;
    #[inline(always)]
    fn bitand(self, o: Bits) -> Bits {
        Bits { lo: self.lo & o.lo, hi: self.hi & o.hi }
    }
}
impl core::ops::BitOr for Bits {
    type Output = Bits;
    #[inline(always)]
    fn bitor(self, o: Bits) -> Bits {
        Bits { lo: self.lo | o.lo, hi: self.hi | o.hi }
    }
}
impl core::ops::Not for Bits {
    type Output = Bits;
    #[inline(always)]
    fn not(self) -> Bits {
        Bits { lo: !self.lo, hi: !self.hi }
    }
}

impl Bits {
    #[cfg(test)]
    pub const ALL: Bits = Bits { lo: u128::MAX, hi: u128::MAX };
    /// Only position `p`.
    #[inline(always)]
    pub fn bit(p: usize) -> Bits {
        if p < 128 {
            Bits { lo: 1 << p, hi: 0 }
        } else {
            Bits { lo: 0, hi: 1 << (p - 128) }
        }
    }
    /// Positions `< a` (`a` in `0..=256`).
    #[inline]
    pub fn below(a: usize) -> Bits {
        let m = |n: usize| {
            if n == 0 {
                0
            } else if n >= 128 {
                u128::MAX
            } else {
                u128::MAX >> (128 - n)
            }
        };
        Bits { lo: m(a.min(128)), hi: m(a.saturating_sub(128)) }
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.lo == 0 && self.hi == 0
    }
    #[inline(always)]
    pub fn test(&self, p: usize) -> bool {
        !(*self & Bits::bit(p)).is_empty()
    }
    /// The lowest position (the set must not be empty).
    #[inline(always)]
    pub fn first(&self) -> usize {
        if self.lo != 0 {
            self.lo.trailing_zeros() as usize
        } else {
            128 + self.hi.trailing_zeros() as usize
        }
    }
    /// Removes the lowest position.
    #[inline(always)]
    pub fn clear_first(&mut self) {
        if self.lo != 0 {
            self.lo &= self.lo - 1;
        } else {
            self.hi &= self.hi.wrapping_sub(1);
        }
    }
    pub fn count(&self) -> u32 {
        self.lo.count_ones() + self.hi.count_ones()
    }
    /// Every position up one (255 drops off).
    #[inline]
    fn up(self) -> Bits {
        Bits { lo: self.lo << 1, hi: self.hi << 1 | self.lo >> 127 }
    }
    /// Every position down one (0 drops off).
    #[inline]
    fn down(self) -> Bits {
        Bits { lo: self.lo >> 1 | self.hi << 127, hi: self.hi >> 1 }
    }
}

const ADDR_BITS: u32 = 12;
/// A prefix spanning more than 2^this chunks is entered as WILD.
const MAX_SPAN_BITS: u32 = 6;
const ADDR_CHUNKS: usize = 1 << ADDR_BITS;
/// Slots per field: chunks, then WILD, then V6.
/// Address bits of each side in the (src, dst) pair field.
const PAIR_BITS: u32 = 24;
/// Pair slots (hashed).
const PAIR_SLOT_BITS: u32 = 12;
/// A rule spanning more than this many (src, dst) chunk pairs is WILD there.
const MAX_PAIRS: u32 = 64;
const PAIR_CHUNKS: usize = 1 << PAIR_SLOT_BITS;
const NFIELDS: usize = 8;
const FIELD_SLOTS: [usize; NFIELDS] =
    [ADDR_CHUNKS + 2, ADDR_CHUNKS + 2, 258, 258, 258, PAIR_CHUNKS + 2, PAIR_CHUNKS + 2, PAIR_CHUNKS + 2];
const OFFSETS: [usize; NFIELDS] = [
    0,
    ADDR_CHUNKS + 2,
    2 * (ADDR_CHUNKS + 2),
    2 * (ADDR_CHUNKS + 2) + 258,
    2 * (ADDR_CHUNKS + 2) + 516,
    2 * (ADDR_CHUNKS + 2) + 774,
    2 * (ADDR_CHUNKS + 2) + 774 + PAIR_CHUNKS + 2,
    2 * (ADDR_CHUNKS + 2) + 774 + 2 * (PAIR_CHUNKS + 2),
];

/// Field 7: the 24-bit (src, dst) pair together with the destination port.
#[inline(always)]
fn pair_port_slot(s: u32, d: u32, port: u16) -> usize {
    let x = ((s as u64) << 32 | d as u64) ^ (port as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    OFFSETS[7] + (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - PAIR_SLOT_BITS)) as usize
}

/// A port range of this many ports or more is WILD in the port fields
/// (listing it would make its updates slow for little pruning).
const MAX_PORT_SPAN: u16 = 16;

/// Most destination ports a rule may list in field 7 (else WILD there).
const MAX_PAIR_PORTS: u32 = 4;

/// The slot in pair field `f` (5: 24-bit chunks, 6: 16-bit) of a chunk pair.
#[inline(always)]
fn pair_slot(f: usize, s: u32, d: u32) -> usize {
    OFFSETS[f] + (((s as u64) << 32 | d as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - PAIR_SLOT_BITS)) as usize
}

/// Address bits per side of pair field `f` (5 and 7: 24, 6: 16).
const fn pair_bits(f: usize) -> u32 {
    if f == 6 {
        16
    } else {
        PAIR_BITS
    }
}
/// Total slots over all fields.
pub(crate) const SLOTS: usize = OFFSETS[NFIELDS - 1] + FIELD_SLOTS[NFIELDS - 1];

#[inline(always)]
const fn wild(f: usize) -> usize {
    OFFSETS[f] + FIELD_SLOTS[f] - 2
}
#[inline(always)]
const fn v6(f: usize) -> usize {
    OFFSETS[f] + FIELD_SLOTS[f] - 1
}

/// Per-field slot indices of a key, computed once per lookup.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeySlots([u16; NFIELDS]);

impl KeySlots {
    #[inline(always)]
    pub fn of(k: &FlowKey) -> Self {
        let addr =
            |f: usize, a: u128| if is_v4(a) { OFFSETS[f] + ((a as u32) >> (32 - ADDR_BITS)) as usize } else { v6(f) };
        KeySlots([
            addr(0, k.src) as u16,
            addr(1, k.dst) as u16,
            (OFFSETS[2] + (k.sport & 0xff) as usize) as u16,
            (OFFSETS[3] + (k.dport & 0xff) as usize) as u16,
            (OFFSETS[4] + k.proto as usize) as u16,
            if is_v4(k.src) && is_v4(k.dst) {
                pair_slot(5, (k.src as u32) >> (32 - PAIR_BITS), (k.dst as u32) >> (32 - PAIR_BITS))
            } else {
                v6(5)
            } as u16,
            if is_v4(k.src) && is_v4(k.dst) { pair_slot(6, (k.src as u32) >> 16, (k.dst as u32) >> 16) } else { v6(6) }
                as u16,
            if is_v4(k.src) && is_v4(k.dst) {
                pair_port_slot((k.src as u32) >> (32 - PAIR_BITS), (k.dst as u32) >> (32 - PAIR_BITS), k.dport)
            } else {
                v6(7)
            } as u16,
        ])
    }
}

/// Calls `f` on every slot a rule occupies.
pub(crate) fn for_each_slot(m: &Match, mut f: impl FnMut(usize)) {
    let mut addr = |fi: usize, p: Prefix| {
        if p.len == 0 || (p.len < 96 && p.contains(V4_BLOCK)) {
            // Any address, or an IPv6 prefix wide enough to hold all of ::ffff:0:0/96.
            f(wild(fi));
        } else if p.len >= 96 && is_v4(p.addr) {
            let l = p.len - 96;
            let c = ((p.addr as u32) >> (32 - ADDR_BITS)) as usize;
            if l as u32 >= ADDR_BITS {
                f(OFFSETS[fi] + c);
            } else if l as u32 + MAX_SPAN_BITS >= ADDR_BITS {
                (c..c + (1usize << (ADDR_BITS - l as u32))).for_each(|x| f(OFFSETS[fi] + x));
            } else {
                // Too wide to list: counts as any address (still exact, less pruning).
                f(wild(fi));
            }
        } else {
            f(v6(fi));
        }
    };
    addr(0, m.src);
    addr(1, m.dst);
    let mut port = |fi: usize, r: PortRange| {
        if r.hi - r.lo >= MAX_PORT_SPAN {
            f(wild(fi));
        } else {
            let (lo, hi) = ((r.lo & 0xff) as usize, (r.hi & 0xff) as usize);
            if lo <= hi {
                (lo..=hi).for_each(|x| f(OFFSETS[fi] + x));
            } else {
                (lo..256).chain(0..=hi).for_each(|x| f(OFFSETS[fi] + x));
            }
        }
    };
    port(2, m.sport);
    port(3, m.dport);
    match m.proto {
        None => f(wild(4)),
        Some(p) => f(OFFSETS[4] + p as usize),
    }
    // The pair fields: only IPv4 prefixes on both sides are listed.
    for fi in [5, 6, 7] {
        let bits = pair_bits(fi);
        let side = |p: Prefix| -> Result<(u32, u32), bool> {
            if p.len >= 96 && is_v4(p.addr) {
                let l = (p.len - 96) as u32;
                let n = if l >= bits { 1 } else { 1u32 << (bits - l).min(31) };
                Ok(((p.addr as u32) >> (32 - bits), n))
            } else {
                // Err(true): may match IPv4 keys (WILD); Err(false): IPv6 only.
                Err(p.len == 0 || (p.len < 96 && p.contains(V4_BLOCK)))
            }
        };
        let ports = if fi == 7 { m.dport.hi as u32 - m.dport.lo as u32 + 1 } else { 1 };
        match (side(m.src), side(m.dst)) {
            (Ok((s, ns)), Ok((d, nd)))
                if ns.saturating_mul(nd) <= MAX_PAIRS && (fi != 7 || ports <= MAX_PAIR_PORTS) =>
            {
                for a in s..s + ns {
                    for b in d..d + nd {
                        if fi == 7 {
                            (m.dport.lo..=m.dport.hi).for_each(|p| f(pair_port_slot(a, b, p)));
                        } else {
                            f(pair_slot(fi, a, b));
                        }
                    }
                }
            }
            (Err(false), _) | (_, Err(false)) => f(v6(fi)),
            _ => f(wild(fi)),
        }
    }
}

/// The candidate bitsets (empty until the first insert).
#[derive(Clone, Debug, Default)]
pub(crate) struct Prune {
    /// Positions 0..128 per slot (the only half a lookup reads while there
    /// are at most 128 subtables: half the cache footprint).
    lo: Vec<u128>,
    /// Positions 128..256 per slot; allocated when the 129th subtable is
    /// made (all zero until then, so nothing is lost by not storing it).
    hi: Vec<u128>,
}


impl Prune {
    /// Allocates the bitsets (an empty classifier holds none: there are many
    /// small ones, one per tier and direction).
    pub fn ensure(&mut self) {
        if self.lo.is_empty() {
            self.lo = vec![0; SLOTS];
        }
    }

    /// Allocates the upper half: call before a subtable takes position 128.
    pub fn ensure_wide(&mut self) {
        if self.hi.is_empty() {
            self.hi = vec![0; SLOTS];
        }
    }

    /// Subtables (positions < 256) compatible with a key in every field.
    /// Only called when some subtable exists (so the bitsets are allocated).
    /// `wide`: some subtable sits at position 128 or beyond.
    #[inline(always)]
    pub fn candidates(&self, s: &KeySlots, wide: bool) -> Bits {
        let lo = &self.lo[..SLOTS];
        let mut c = u128::MAX;
        for f in 0..NFIELDS {
            c &= lo[s.0[f] as usize] | lo[wild(f)];
        }
        let mut h = 0;
        if wide {
            let hi = &self.hi[..SLOTS];
            h = u128::MAX;
            for f in 0..NFIELDS {
                h &= hi[s.0[f] as usize] | hi[wild(f)];
            }
        }
        Bits { lo: c, hi: h }
    }

    #[inline]
    fn get(&self, s: usize) -> Bits {
        Bits { lo: self.lo[s], hi: self.hi.get(s).copied().unwrap_or(0) }
    }

    #[inline]
    fn set(&mut self, s: usize, b: Bits) {
        self.lo[s] = b.lo;
        match self.hi.get_mut(s) {
            Some(h) => *h = b.hi,
            None => debug_assert_eq!(b.hi, 0, "upper half used before ensure_wide"),
        }
    }

    /// Applies `f` to every slot's bits.
    fn map(&mut self, mut f: impl FnMut(Bits) -> Bits) {
        if self.hi.is_empty() {
            for l in self.lo.iter_mut() {
                let b = f(Bits { lo: *l, hi: 0 });
                debug_assert_eq!(b.hi, 0, "upper half used before ensure_wide");
                *l = b.lo;
            }
            return;
        }
        for (l, h) in self.lo.iter_mut().zip(self.hi.iter_mut()) {
            let b = f(Bits { lo: *l, hi: *h });
            *l = b.lo;
            *h = b.hi;
        }
    }

    /// Adds or removes a rule of the subtable at position `pos` to `counts`
    /// (that subtable's occupancy, `SLOTS` long), keeping the bits exact.
    pub fn update(&mut self, pos: usize, counts: &mut Counts, m: &Match, add: bool) {
        let live = pos < PRUNE_IDS;
        let bit = if live { Bits::bit(pos) } else { Bits::default() };
        for_each_slot(m, |s| {
            if add {
                let c = counts.entry(s as u16).or_insert(0);
                *c += 1;
                if *c == 1 {
                    self.set(s, self.get(s) | bit);
                }
            } else {
                let c = counts.get_mut(&(s as u16)).expect("a present rule occupies its slots");
                *c -= 1;
                if *c == 0 {
                    counts.remove(&(s as u16));
                    self.set(s, self.get(s) & !bit);
                }
            }
        });
    }

    /// The subtable at position `a` leaves the order: higher positions move
    /// down one.
    pub fn remove_pos(&mut self, a: usize) {
        if a >= PRUNE_IDS {
            return;
        }
        let keep = Bits::below(a);
        self.map(|w| (w & keep) | (w.down() & !keep));
    }

    /// A subtable enters the order at position `b` with occupancy `counts`:
    /// positions from `b` up move up one (the one pushed past the pruned
    /// range is no longer pruned).
    pub fn insert_pos(&mut self, b: usize, counts: &Counts) {
        if b >= PRUNE_IDS {
            return;
        }
        let keep = Bits::below(b);
        let clear = !keep & !Bits::bit(b);
        self.map(|w| (w & keep) | (w.up() & clear));
        for &s in counts.keys() {
            self.set(s as usize, self.get(s as usize) | Bits::bit(b));
        }
    }

    /// Sets the bits of position `pos` from `counts` (a subtable that moved
    /// down into the pruned range).
    pub fn fill(&mut self, pos: usize, counts: &Counts) {
        if pos >= PRUNE_IDS {
            return;
        }
        let clear = !Bits::bit(pos);
        self.map(|w| w & clear);
        for &s in counts.keys() {
            self.set(s as usize, self.get(s as usize) | Bits::bit(pos));
        }
    }

    /// Moves position `a` to `b` (both pruned) in one pass.
    pub fn move_pos(&mut self, a: usize, b: usize) {
        debug_assert!(a < PRUNE_IDS && b < PRUNE_IDS);
        let (mid, all, up) = if a < b {
            (Bits::below(b + 1) & !Bits::below(a + 1), Bits::below(b + 1) & !Bits::below(a), false)
        } else if a > b {
            (Bits::below(a) & !Bits::below(b), Bits::below(a + 1) & !Bits::below(b), true)
        } else {
            return;
        };
        let bb = Bits::bit(b);
        self.map(|w| {
            let moved = if w.test(a) { bb } else { Bits::default() };
            let shifted = if up { (w & mid).up() } else { (w & mid).down() };
            (w & !all) | shifted | moved
        });
    }

    pub fn bytes(&self) -> usize {
        (self.lo.capacity() + self.hi.capacity()) * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(lo: u128, hi: u128) -> Bits {
        Bits { lo, hi }
    }

    #[test]
    fn moves_keep_other_bits() {
        let mut p = Prune { lo: vec![0b1011_0110, u128::MAX, 1 << 127 | 1], hi: vec![0, u128::MAX, 1 << 127] };
        p.move_pos(1, 5);
        assert_eq!(p.get(0), b(0b1011_1010, 0));
        p.move_pos(5, 1);
        assert_eq!(p.get(0), b(0b1011_0110, 0));
        assert_eq!(p.get(1), Bits::ALL);
        p.move_pos(127, 200);
        assert_eq!(p.get(2), b(1, 1 << 127 | 1 << 72));
        p.move_pos(200, 127);
        assert_eq!(p.get(2), b(1 << 127 | 1, 1 << 127));
        p.remove_pos(0);
        assert_eq!(p.get(2), b(1 << 126, 1 << 126));
        p.insert_pos(0, &[(0u16, 1u32), (2, 1)].into_iter().collect());
        assert_eq!(p.get(0), b(0b1011_0111, 0));
        assert_eq!(p.get(1), !Bits::bit(0));
        assert_eq!(p.get(2), b(1 << 127 | 1, 1 << 127));
        p.fill(3, &[(2u16, 1u32)].into_iter().collect());
        assert_eq!(p.get(2), b(1 << 127 | 1 << 3 | 1, 1 << 127));
        let mut c = b(1 << 5, 1 << 3);
        assert_eq!((c.first(), c.count()), (5, 2));
        c.clear_first();
        assert_eq!(c.first(), 131);
        assert_eq!(Bits::below(130), b(u128::MAX, 3));
    }
}
