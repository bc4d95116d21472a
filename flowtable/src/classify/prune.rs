//! Tuple pruning: before probing, each lane computes the set of subtables that
//! hold at least one rule compatible with it in every one of five fields,
//! each field judged alone on a coarse chunk of its value (Srinivasan &
//! Varghese's tuple pruning, with bitsets instead of per-field LPM):
//!
//! ```text
//! field   chunk of a key                  a rule occupies
//! src     top 12 bits of an IPv4 address  the chunks its prefix spans (> 64: WILD)
//! dst     same                            same
//! sport   low 8 bits of the port          the chunks of its range (>= 256 ports: WILD)
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
pub(crate) const PRUNE_IDS: usize = 128;

/// Bits `lo..=hi` set.
#[inline]
fn range(lo: usize, hi: usize) -> u128 {
    (u128::MAX >> (127 - hi)) & (u128::MAX << lo)
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
const NFIELDS: usize = 7;
const FIELD_SLOTS: [usize; NFIELDS] = [ADDR_CHUNKS + 2, ADDR_CHUNKS + 2, 258, 258, 258, PAIR_CHUNKS + 2, PAIR_CHUNKS + 2];
const OFFSETS: [usize; NFIELDS] = [
    0,
    ADDR_CHUNKS + 2,
    2 * (ADDR_CHUNKS + 2),
    2 * (ADDR_CHUNKS + 2) + 258,
    2 * (ADDR_CHUNKS + 2) + 516,
    2 * (ADDR_CHUNKS + 2) + 774,
    2 * (ADDR_CHUNKS + 2) + 774 + PAIR_CHUNKS + 2,
];

/// The slot in pair field `f` (5: 24-bit chunks, 6: 16-bit) of a chunk pair.
#[inline(always)]
fn pair_slot(f: usize, s: u32, d: u32) -> usize {
    OFFSETS[f] + (((s as u64) << 32 | d as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - PAIR_SLOT_BITS)) as usize
}

/// Address bits per side of pair field `f`.
const fn pair_bits(f: usize) -> u32 {
    if f == 5 { PAIR_BITS } else { 16 }
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
        let addr = |f: usize, a: u128| if is_v4(a) { OFFSETS[f] + ((a as u32) >> (32 - ADDR_BITS)) as usize } else { v6(f) };
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
            if is_v4(k.src) && is_v4(k.dst) {
                pair_slot(6, (k.src as u32) >> 16, (k.dst as u32) >> 16)
            } else {
                v6(6)
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
        if r.hi - r.lo >= 255 {
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
    for fi in [5, 6] {
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
        match (side(m.src), side(m.dst)) {
            (Ok((s, ns)), Ok((d, nd))) if ns.saturating_mul(nd) <= MAX_PAIRS => {
                for a in s..s + ns {
                    for b in d..d + nd {
                        f(pair_slot(fi, a, b));
                    }
                }
            }
            (Err(false), _) | (_, Err(false)) => f(v6(fi)),
            _ => f(wild(fi)),
        }
    }
}

/// The candidate bitsets.
#[derive(Clone, Debug)]
pub(crate) struct Prune {
    bits: Vec<u128>,
}

impl Default for Prune {
    fn default() -> Self {
        Prune { bits: vec![0; SLOTS] }
    }
}

impl Prune {
    /// Subtables (ids < 128) compatible with a key in every field.
    #[inline(always)]
    pub fn candidates(&self, s: &KeySlots) -> u128 {
        let b = &self.bits[..SLOTS];
        let mut c = u128::MAX;
        for f in 0..NFIELDS {
            c &= b[s.0[f] as usize] | b[wild(f)];
        }
        c
    }

    /// Adds or removes a rule of the subtable at position `pos` to `counts`
    /// (that subtable's occupancy, `SLOTS` long), keeping the bits exact.
    pub fn update(&mut self, pos: usize, counts: &mut Counts, m: &Match, add: bool) {
        let bit = 1u128 << (pos % PRUNE_IDS);
        let live = pos < PRUNE_IDS;
        for_each_slot(m, |s| {
            if add {
                let c = counts.entry(s as u16).or_insert(0);
                *c += 1;
                if *c == 1 && live {
                    self.bits[s] |= bit;
                }
            } else {
                let c = counts.get_mut(&(s as u16)).expect("a present rule occupies its slots");
                *c -= 1;
                if *c == 0 {
                    counts.remove(&(s as u16));
                    if live {
                        self.bits[s] &= !bit;
                    }
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
        let keep = if a == 0 { 0 } else { range(0, a - 1) };
        for w in &mut self.bits {
            *w = (*w & keep) | ((*w >> 1) & !keep);
        }
    }

    /// A subtable enters the order at position `b` with occupancy `counts`:
    /// positions from `b` up move up one (the one pushed to 128 is no longer
    /// pruned).
    pub fn insert_pos(&mut self, b: usize, counts: &Counts) {
        if b >= PRUNE_IDS {
            return;
        }
        let keep = if b == 0 { 0 } else { range(0, b - 1) };
        for w in self.bits.iter_mut() {
            *w = (*w & keep) | ((*w << 1) & !keep & !(1 << b));
        }
        for &s in counts.keys() {
            self.bits[s as usize] |= 1 << b;
        }
    }

    /// Sets the bits of position `pos` from `counts` (a subtable that moved
    /// down to position 127 from beyond the pruned range).
    pub fn fill(&mut self, pos: usize, counts: &Counts) {
        if pos >= PRUNE_IDS {
            return;
        }
        for w in self.bits.iter_mut() {
            *w &= !(1 << pos);
        }
        for &s in counts.keys() {
            self.bits[s as usize] |= 1 << pos;
        }
    }

    /// Moves position `a` to `b` (both pruned) in one pass.
    pub fn move_pos(&mut self, a: usize, b: usize) {
        debug_assert!(a < PRUNE_IDS && b < PRUNE_IDS);
        if a < b {
            let mid = range(a + 1, b);
            let all = range(a, b);
            for w in &mut self.bits {
                let bit = (*w >> a) & 1;
                *w = (*w & !all) | ((*w & mid) >> 1) | bit << b;
            }
        } else if a > b {
            let mid = range(b, a - 1);
            let all = range(b, a);
            for w in &mut self.bits {
                let bit = (*w >> a) & 1;
                *w = (*w & !all) | ((*w & mid) << 1) | bit << b;
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bits.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keep_other_bits() {
        let mut p = Prune { bits: vec![0b1011_0110u128, u128::MAX, 1 << 127 | 1] };
        p.move_pos(1, 5);
        assert_eq!(p.bits[0], 0b1011_1010);
        p.move_pos(5, 1);
        assert_eq!(p.bits[0], 0b1011_0110);
        assert_eq!(p.bits[1], u128::MAX);
        p.remove_pos(0);
        assert_eq!(p.bits[2], 1 << 126);
        p.insert_pos(0, &[(0u16, 1u32), (2, 1)].into_iter().collect());
        assert_eq!(p.bits[0], 0b1011_0111);
        assert_eq!(p.bits[1], u128::MAX - 1);
        assert_eq!(p.bits[2], 1 << 127 | 1);
        p.fill(3, &[(2u16, 1u32)].into_iter().collect());
        assert_eq!(p.bits[2], 1 << 127 | 1 << 3 | 1);
    }
}
