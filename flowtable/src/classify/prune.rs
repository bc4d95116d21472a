//! Tuple pruning: before probing, each lane computes the set of subtables that
//! hold at least one rule compatible with it in every one of five fields,
//! each field judged alone on a coarse chunk of its value (Srinivasan &
//! Varghese's tuple pruning, with bitsets instead of per-field LPM):
//!
//! ```text
//! field   chunk of a key                  a rule occupies
//! src     top 8 bits of an IPv4 address   the chunks its prefix spans (all: WILD)
//! dst     same                            same
//! sport   low 8 bits of the port          the chunks of its range (>= 256 ports: WILD)
//! dport   same                            same
//! proto   the protocol                    its protocol (any: WILD)
//! IPv6 keys and rules use one V6 slot per address field (no pruning); an
//! IPv6 prefix that contains the whole IPv4-mapped block counts as WILD.
//! ```
//!
//! For each field and chunk a bitset of subtable ids (the first 128 ids; later
//! ids are always probed) is kept exact under inserts and deletes by per-
//! subtable occupancy counts.

use crate::key::{is_v4, FlowKey};
use crate::rule::{Match, PortRange, Prefix};

/// The first address of the IPv4-mapped block.
const V4_BLOCK: u128 = 0xffff_0000_0000;

/// Subtable ids below this take part in pruning.
pub(crate) const PRUNE_IDS: usize = 128;

const ADDR_CHUNKS: usize = 256;
/// Slots per field: chunks, then WILD, then V6.
const FIELD_SLOTS: [usize; 5] = [ADDR_CHUNKS + 2, ADDR_CHUNKS + 2, 258, 258, 258];
const OFFSETS: [usize; 5] = [0, 258, 516, 774, 1032];
/// Total slots over all fields.
pub(crate) const SLOTS: usize = 1290;

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
pub(crate) struct KeySlots([u16; 5]);

impl KeySlots {
    #[inline(always)]
    pub fn of(k: &FlowKey) -> Self {
        let addr = |f: usize, a: u128| if is_v4(a) { OFFSETS[f] + ((a as u32) >> 24) as usize } else { v6(f) };
        KeySlots([
            addr(0, k.src) as u16,
            addr(1, k.dst) as u16,
            (OFFSETS[2] + (k.sport & 0xff) as usize) as u16,
            (OFFSETS[3] + (k.dport & 0xff) as usize) as u16,
            (OFFSETS[4] + k.proto as usize) as u16,
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
            let c = ((p.addr as u32) >> 24) as usize;
            let span = if l >= 8 { 1 } else { 1usize << (8 - l) };
            for x in c..c + span {
                f(OFFSETS[fi] + x);
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
        for f in 0..5 {
            c &= b[s.0[f] as usize] | b[wild(f)];
        }
        c
    }

    /// Adds (`+1`) or removes (`-1`) a rule of subtable `tid` to `counts`
    /// (that subtable's occupancy, `SLOTS` long), keeping the bits exact.
    pub fn update(&mut self, tid: u32, counts: &mut [u32], m: &Match, add: bool) {
        let bit = 1u128 << (tid as usize % PRUNE_IDS);
        let live = (tid as usize) < PRUNE_IDS;
        for_each_slot(m, |s| {
            let c = &mut counts[s];
            if add {
                *c += 1;
                if *c == 1 && live {
                    self.bits[s] |= bit;
                }
            } else {
                *c -= 1;
                if *c == 0 && live {
                    self.bits[s] &= !bit;
                }
            }
        });
    }

    pub fn bytes(&self) -> usize {
        self.bits.capacity() * 16
    }
}
