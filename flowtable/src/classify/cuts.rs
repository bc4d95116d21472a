//! The compiled core: cut trees over the IPv4 5-tuple, built at once from a
//! snapshot of the rules and immutable afterwards (shared by `Arc` between
//! the left-right copies). Deletes are tombstones in a per-copy bitmap, so a
//! tree never changes; see flowtable/DESIGN.md, "Classifier".
//!
//! ```text
//! rules (IPv4-or-any, no in_port/identity) sorted best first: slot = rank order
//! layout: one tree, or one per address partition (src /16+?, dst /16+?),
//!         the latter also with less replication (3x), whichever a cost
//!         estimate prefers; a tree over its memory budget is split (by
//!         address, then by port narrowness), then given up (its rules stay
//!         in the delta)
//! node:   cut one field of its box into 2^b equal parts (HiCuts: the field
//!         and b that minimise the largest child, replication <= SPACE x)
//!         child = kids[base + (key[field] >> shift & mask)]  one 8-byte load;
//!         a kid also carries the best slot beneath it (lanes that already
//!         have a better match stop); alike neighbouring children (same
//!         rules, all covering both whole in the field) share one subtree
//! leaf:   the rules overlapping its box, best first, down to the second one
//!         that covers the whole box: 4-byte slots, whose 32-byte records
//!         (one per rule) are scanned until the first live match; if the
//!         covering ones are deleted, every rule is scanned
//! lookup: trees in order of their best rule, lowest slot wins
//! ```

use std::collections::HashMap;

use super::hot::{Hot, FULL};
use super::{IdMap, BURST, NIL};
use crate::key::{is_v4, FlowKey};
use crate::rule::{PortRange, Prefix, Rule, RuleId};

/// Fields a tree cuts: src, dst, sport, dport, proto.
const DIMS: usize = 5;
/// Bits of each field's domain.
const DOMAIN: [u8; DIMS] = [32, 32, 16, 16, 8];
/// A box with at most this many rules is a leaf.
const BINTH: usize = 8;
/// At most 2^this children per node.
const MAX_CUT_BITS: u8 = 8;
/// At most 2^this children at a tree's root.
const MAX_ROOT_CUT_BITS: u8 = 14;
/// Replication bound per node (HiCuts spfac): the children's rule counts plus
/// the children themselves stay under this many times the node's rules.
const SPACE: usize = 4;
/// Depth bound (a box that cannot be split further becomes a long leaf).
const MAX_DEPTH: u32 = 24;
/// Bound of a tree's kids plus leaf entries, per rule of its partition plus a
/// base. A tree that outgrows it is split into smaller partitions, and past
/// that its rules are left to the delta (tuple space search holds wide,
/// overlapping rules without replication), so no rule set can make a compile
/// run away.
const BUDGET_PER_RULE: usize = 64;
const BUDGET_BASE: usize = 1 << 16;
/// And at most this many per tree (128 MiB if all were 8-byte kids).
const BUDGET_MAX: usize = 1 << 24;
/// A leaf keeps its rules down to the KEEP_COVERING-th rule that covers its
/// whole box and drops the rest (they can never win while one of those is
/// live). If they are all deleted, the scan falls back to every rule.
const KEEP_COVERING: usize = 2;
/// A leaf entry (`Compiled::refs`): a slot, and on the leaf's last entry
/// one of these flags above it.
const LAST: u32 = 1 << 30;
/// The last entry of a leaf that dropped rules.
const LAST_CUT: u32 = 3 << 30;
const REF_SLOT: u32 = LAST - 1;
/// A prefix at least this long is "specific" when partitioning.
const SPECIFIC_LEN: u8 = 16;
/// A port range narrower than this is "narrow" when a partition is split
/// by ports.
const NARROW_PORTS: u16 = 1024;
/// A partition smaller than this joins the largest one.
const MIN_PART: usize = 64;

// A kid (child pointer) is one u64:
//   bit 63      leaf
//   bits 41..63 the best (lowest) slot under it, >> `Compiled::qs`
//   leaf:       bits 0..32 its first record
//   internal:   bits 0..29 first kid, 29..33 log2 kids, 33..38 shift, 38..41 field
const LEAF: u64 = 1 << 63;
const MIN_AT: u32 = 41;
const MIN_MAX: u64 = (1 << 22) - 1;
/// A leaf with no rules.
const EMPTY: u64 = LEAF | MIN_MAX << MIN_AT | NIL as u64;
const BASE_MAX: usize = (1 << 29) - 1;

#[inline(always)]
fn kid_child(k: u64, v: &[u32; DIMS]) -> usize {
    let base = (k & BASE_MAX as u64) as usize;
    let bits = (k >> 29) & 0xf;
    let shift = (k >> 33) & 0x1f;
    let dim = ((k >> 38) & 0x7) as usize;
    base + ((v[dim] >> shift) as usize & ((1usize << bits) - 1))
}

/// True if slot `s` is live in the tombstone bitmap `alive`.
#[inline(always)]
pub(crate) fn is_live(alive: &[u64], s: u32) -> bool {
    alive[(s >> 6) as usize] >> (s & 63) & 1 == 1
}

/// Marks slot `s` live or dead in `alive`.
pub(crate) fn set_live(alive: &mut [u64], s: u32, on: bool) {
    let (w, bit) = (&mut alive[(s >> 6) as usize], 1u64 << (s & 63));
    if on {
        *w |= bit;
    } else {
        *w &= !bit;
    }
}

/// A lower bound of the slots under kid `k`.
#[inline(always)]
fn kid_min(k: u64, qs: u32) -> u32 {
    (((k >> MIN_AT) & MIN_MAX) << qs).min(NIL as u64) as u32
}

/// A rule's bounds per field, inclusive.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    lo: [u32; DIMS],
    hi: [u32; DIMS],
}

/// An aligned box: field d spans `lo[d] ..= lo[d] + 2^bits[d] - 1`.
#[derive(Clone, Copy, Debug)]
struct Cell {
    lo: [u32; DIMS],
    bits: [u8; DIMS],
}

impl Cell {
    fn hi(&self, d: usize) -> u32 {
        (self.lo[d] as u64 + (1u64 << self.bits[d]) - 1) as u32
    }
}

fn addr_bounds(p: Prefix) -> (u32, u32) {
    if p.len == 0 {
        (0, u32::MAX)
    } else {
        let l = (p.len - 96) as u32;
        let a = p.addr as u32;
        let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        (a & m, a | !m)
    }
}

impl Bounds {
    fn of(r: &Rule) -> Bounds {
        let m = &r.m;
        let (s0, s1) = addr_bounds(m.src);
        let (d0, d1) = addr_bounds(m.dst);
        let (p0, p1) = m.proto.map_or((0, 255), |p| (p as u32, p as u32));
        Bounds {
            lo: [s0, d0, m.sport.lo as u32, m.dport.lo as u32, p0],
            hi: [s1, d1, m.sport.hi as u32, m.dport.hi as u32, p1],
        }
    }
    /// A key at the centre of the rule's box.
    fn centre(&self) -> FlowKey {
        Compiled::key_of(&core::array::from_fn(|d| self.lo[d] + (self.hi[d] - self.lo[d]) / 2))
    }

    fn covers(&self, c: &Cell) -> bool {
        (0..DIMS).all(|d| self.lo[d] <= c.lo[d] && self.hi[d] >= c.hi(d))
    }
}

/// A rule as a leaf scans it (IPv4 keys only).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
struct Leaf {
    src: u32,
    smask: u32,
    dst: u32,
    dmask: u32,
    sp_lo: u16,
    /// hi - lo.
    sp_w: u16,
    dp_lo: u16,
    dp_w: u16,
    proto: u8,
    pmask: u8,
    _pad: [u8; 6],
}

impl Leaf {
    fn of(r: &Rule, b: &Bounds) -> Leaf {
        Leaf {
            src: b.lo[0],
            smask: !(b.hi[0] ^ b.lo[0]),
            dst: b.lo[1],
            dmask: !(b.hi[1] ^ b.lo[1]),
            sp_lo: r.m.sport.lo,
            sp_w: r.m.sport.hi - r.m.sport.lo,
            dp_lo: r.m.dport.lo,
            dp_w: r.m.dport.hi - r.m.dport.lo,
            proto: r.m.proto.unwrap_or(0),
            pmask: if r.m.proto.is_some() { 0xff } else { 0 },
            _pad: [0; 6],
        }
    }
    #[inline(always)]
    fn matches(&self, v: &[u32; DIMS]) -> bool {
        let a = (v[0] ^ self.src) & self.smask == 0;
        let b = (v[1] ^ self.dst) & self.dmask == 0;
        let c = (v[2] as u16).wrapping_sub(self.sp_lo) <= self.sp_w;
        let d = (v[3] as u16).wrapping_sub(self.dp_lo) <= self.dp_w;
        let e = (v[4] as u8 ^ self.proto) & self.pmask == 0;
        a & b & c & d & e
    }
}

/// One partition's tree.
#[derive(Clone, Copy, Debug)]
struct Tree {
    root: u64,
    /// Its best rule (lowest slot): lanes whose match is better skip it.
    first: u32,
}

/// Shape of a compiled core (for design notes and the bench's diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Rules compiled.
    pub rules: usize,
    /// Trees (partitions).
    pub trees: usize,
    /// Child pointers (8 bytes each).
    pub kids: usize,
    /// Leaf entries (4 bytes each): rules times their replication.
    pub leaf_records: usize,
    /// Deepest leaf.
    pub max_depth: u32,
}

/// The compiled core. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// By slot; slot order is rank order (slot 0 is the best rule).
    rules: Vec<Rule>,
    ids: IdMap,
    trees: Vec<Tree>,
    kids: Vec<u64>,
    /// One record per slot.
    recs: Vec<Leaf>,
    /// Leaves: runs of slots, best first, the last flagged ([`LAST`]).
    refs: Vec<u32>,
    /// Slots of rules with an address field of both families (`Prefix::ANY`),
    /// best first: the only ones a non-IPv4 key can match.
    any_family: Vec<u32>,
    /// Ids of the rules of the snapshot left out (trees over budget), sorted.
    left_out: Vec<RuleId>,
    /// Slot bounds in kids are stored shifted right by this.
    qs: u32,
    stats: CoreStats,
}

/// True if the core can hold this rule (IPv4 or any-family prefixes, no
/// in_port, no identities).
pub(crate) fn eligible(r: &Rule) -> bool {
    Hot::of(r).kind & FULL == 0
}

struct Builder<'a> {
    bounds: &'a [Bounds],
    kids: Vec<u64>,
    refs: Vec<u32>,
    /// Identical leaves are stored once.
    memo: HashMap<(Vec<u32>, bool), u64>,
    max_depth: u32,
    /// Kids plus leaf entries allowed for the tree being built.
    budget: usize,
    /// The tree went past its budget: it is given up.
    over: bool,
    qs: u32,
    /// Replication bound of this build ([`SPACE`]).
    space: usize,
}

impl<'a> Builder<'a> {
    /// A builder over the rules' `bounds` (by slot), with slot bounds in
    /// kids shifted by `qs` and the replication bound `space`.
    fn new(bounds: &'a [Bounds], qs: u32, space: usize) -> Self {
        Builder { bounds, kids: Vec::new(), refs: Vec::new(), memo: HashMap::new(), max_depth: 0, budget: 0, over: false, qs, space }
    }

    fn leaf(&mut self, list: Vec<u32>, cut: bool) -> u64 {
        let key = (list, cut);
        if let Some(&k) = self.memo.get(&key) {
            return k;
        }
        let list = &key.0;
        let start = self.refs.len() as u32;
        self.refs.extend_from_slice(list);
        *self.refs.last_mut().expect("a leaf has rules") |= if cut { LAST_CUT } else { LAST };
        let k = LEAF | ((list[0] >> self.qs) as u64) << MIN_AT | start as u64;
        self.memo.insert(key, k);
        k
    }

    /// The children index range rule `b` overlaps when field `d` of `c` is cut
    /// into parts of 2^cb.
    fn span(b: &Bounds, c: &Cell, d: usize, cb: u8) -> (usize, usize) {
        let lo = b.lo[d].max(c.lo[d]) - c.lo[d];
        let hi = b.hi[d].min(c.hi(d)) - c.lo[d];
        ((lo as u64 >> cb) as usize, (hi as u64 >> cb) as usize)
    }

    /// For field `d` of `c` cut into parts of 2^cb: per child, true if it
    /// is the same subtree as the child before it (EffiCuts' equi-dense
    /// cuts): the same rules, every one covering both children whole in
    /// field `d`. No cut of `d` below can then separate them, and the rest
    /// of their boxes is the same, so the subtree is built once.
    fn alike(&self, list: &[u32], c: &Cell, d: usize, cb: u8) -> Vec<bool> {
        let parts = 1usize << (c.bits[d] - cb);
        let mask = (1u64 << cb) - 1;
        // Per child boundary: a rule's children begin or end there; per
        // child: a rule covers it in part.
        let (mut edge, mut part) = (vec![false; parts + 1], vec![false; parts]);
        for &s in list {
            let b = &self.bounds[s as usize];
            let (a, z) = Self::span(b, c, d, cb);
            edge[a] = true;
            edge[z + 1] = true;
            let lo = (b.lo[d].max(c.lo[d]) - c.lo[d]) as u64;
            let hi = (b.hi[d].min(c.hi(d)) - c.lo[d]) as u64;
            part[a] |= lo & mask != 0;
            part[z] |= hi & mask != mask;
        }
        (0..parts).map(|i| i > 0 && !edge[i] && !part[i] && !part[i - 1]).collect()
    }

    /// HiCuts' choice: per field, the most cuts whose replication stays in
    /// bounds; among fields, the smallest largest child (then the least
    /// replication). None if no cut makes a child smaller than the node.
    fn choose(&self, list: &[u32], c: &Cell, root: bool) -> Option<(usize, u8)> {
        let n = list.len();
        let limit = if root { MAX_ROOT_CUT_BITS } else { MAX_CUT_BITS };
        let mut best: Option<(usize, usize, usize, u8)> = None; // (max child, sum, dim, bits)
        let mut counts = Vec::new();
        for d in 0..DIMS {
            let mut pick = None;
            for nb in 1..=c.bits[d].min(limit) {
                let parts = 1usize << nb;
                let cb = c.bits[d] - nb;
                counts.clear();
                counts.resize(parts + 1, 0i32);
                let mut sum = 0usize;
                for &s in list {
                    let (a, z) = Self::span(&self.bounds[s as usize], c, d, cb);
                    counts[a] += 1;
                    counts[z + 1] -= 1;
                    sum += z - a + 1;
                }
                let (mut run, mut max) = (0i32, 0i32);
                for &x in &counts[..parts] {
                    run += x;
                    max = max.max(run);
                }
                if sum + parts > self.space * n && pick.is_some() {
                    break;
                }
                pick = Some((max as usize, sum, nb));
            }
            if let Some((max, sum, nb)) = pick {
                if best.is_none_or(|(bm, bs, _, _)| (max, sum) < (bm, bs)) {
                    best = Some((max, sum, d, nb));
                }
            }
        }
        best.filter(|&(max, ..)| max < n).map(|(_, _, d, nb)| (d, nb))
    }

    /// The kid for the rules of `list` (ascending slots) overlapping `c`;
    /// `cut`: an ancestor already dropped rules below its covering ones.
    fn node(&mut self, mut list: Vec<u32>, c: Cell, depth: u32, mut cut: bool) -> u64 {
        let mut covering = list.iter().enumerate().filter(|&(_, &s)| self.bounds[s as usize].covers(&c));
        if let Some((p, _)) = covering.nth(KEEP_COVERING - 1) {
            cut |= p + 1 < list.len();
            list.truncate(p + 1);
        }
        if list.is_empty() || self.over {
            return EMPTY;
        }
        if self.kids.len() + self.refs.len() > self.budget || self.kids.len() + (1 << MAX_ROOT_CUT_BITS) > BASE_MAX {
            self.over = true;
            return EMPTY;
        }
        self.max_depth = self.max_depth.max(depth);
        if list.len() <= BINTH || depth >= MAX_DEPTH {
            return self.leaf(list, cut);
        }
        let Some((d, nb)) = self.choose(&list, &c, depth == 0) else {
            return self.leaf(list, cut);
        };
        let parts = 1usize << nb;
        let cb = c.bits[d] - nb;
        let first = list[0];
        let alike = self.alike(&list, &c, d, cb);
        // The rules of each run of alike children, at its first.
        let mut lists = vec![Vec::new(); parts];
        for &s in &list {
            let (a, z) = Self::span(&self.bounds[s as usize], &c, d, cb);
            for (i, l) in (a..=z).zip(&mut lists[a..=z]) {
                if !alike[i] {
                    l.push(s);
                }
            }
        }
        drop(list);
        let base = self.kids.len();
        self.kids.resize(base + parts, EMPTY);
        for (i, l) in lists.into_iter().enumerate() {
            if alike[i] {
                self.kids[base + i] = self.kids[base + i - 1];
                continue;
            }
            let mut cc = c;
            cc.lo[d] = (c.lo[d] as u64 + ((i as u64) << cb)) as u32;
            cc.bits[d] = cb;
            self.kids[base + i] = self.node(l, cc, depth + 1, cut);
        }
        base as u64 | (nb as u64) << 29 | (cb as u64) << 33 | (d as u64) << 38 | ((first >> self.qs) as u64) << MIN_AT
    }
}

/// The layouts a compile builds, the cheapest kept (see
/// [`Compiled::build_with`]): how the rules are first partitioned, and the
/// replication bound. A lower bound replicates less, so that a tree that
/// would outgrow its budget and be split may fit whole (fewer trees a lookup
/// walks), at the cost of more levels or longer leaves.
const LAYOUTS: [(Split, usize); 3] = [(Split::Whole, SPACE), (Split::Address, SPACE), (Split::Address, 3)];

/// How a partition of the rules was made (see `try_build`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// All rules.
    Whole,
    /// By which addresses are /16 or longer.
    Address,
    /// By which port ranges are narrow.
    Ports,
}

impl Split {
    fn next(self) -> Option<Split> {
        match self {
            Split::Whole => Some(Split::Address),
            Split::Address => Some(Split::Ports),
            Split::Ports => None,
        }
    }

    /// `list` (ascending slots) in up to four parts by this criterion, each
    /// ascending; parts under [`MIN_PART`] rules join the largest.
    fn split(self, list: Vec<u32>, rules: &[Rule]) -> [Vec<u32>; 4] {
        let spec = |p: Prefix| (p.len >= 96 + SPECIFIC_LEN) as usize;
        let narrow = |p: PortRange| (p.hi - p.lo < NARROW_PORTS) as usize;
        let mut parts: [Vec<u32>; 4] = Default::default();
        for s in list {
            let m = &rules[s as usize].m;
            let p = match self {
                Split::Whole => 0,
                Split::Address => spec(m.src) | spec(m.dst) << 1,
                Split::Ports => narrow(m.sport) | narrow(m.dport) << 1,
            };
            parts[p].push(s);
        }
        merge_small(&mut parts);
        for p in &mut parts {
            p.sort_unstable();
        }
        parts
    }
}

/// Moves every partition smaller than [`MIN_PART`] into the largest one.
fn merge_small(parts: &mut [Vec<u32>; 4]) {
    let big = (0..4).max_by_key(|&p| parts[p].len()).expect("four partitions");
    for p in 0..4 {
        if p != big && parts[p].len() < MIN_PART {
            let moved = core::mem::take(&mut parts[p]);
            parts[big].extend(moved);
        }
    }
}

impl Compiled {
    /// Compiles `rules` (every one [`eligible`], ids distinct). The rules of
    /// a partition whose tree would outgrow its budget are left out: they are
    /// not in the core (the classifier keeps them in its delta).
    ///
    /// # Panics
    /// On an ineligible rule or a repeated id.
    pub fn build(rules: Vec<Rule>) -> Compiled {
        Self::build_with(rules, BUDGET_PER_RULE, BUDGET_BASE)
    }

    /// [`Self::build`] with a tree budget of `per_rule` kids and leaf entries
    /// per rule plus `base`.
    ///
    /// The [`LAYOUTS`] are built: one tree for every rule, one per address
    /// partition, and one per address partition with less replication (in
    /// all, a tree over budget is split further). The one with the lower
    /// estimated lookup cost is kept, over keys at the centre
    /// of every rule (at most 4096, spread over the set): per key 15 per tree
    /// walked, 2.5 per level (a dependent load, rarely in L1), 2 per leaf
    /// record, and 64 times the share of rules left out. The weights are a
    /// fit of ns per lookup on the ClassBench sets here, over every layout
    /// forced in turn (flowtable/DESIGN.md).
    pub(crate) fn build_with(mut rules: Vec<Rule>, per_rule: usize, base: usize) -> Compiled {
        rules.sort_unstable_by_key(|r| core::cmp::Reverse(super::rank(r)));
        let step = rules.len().div_ceil(4096).max(1);
        let probes: Vec<FlowKey> = rules.iter().step_by(step).map(|r| Bounds::of(r).centre()).collect();
        let n = rules.len().max(1) as f64;
        let cost = |c: &Compiled| {
            let ns: f64 = probes.iter().map(|k| c.cost(k)).map(|(t, d, s)| 15.0 * t as f64 + 2.5 * d as f64 + 2.0 * s as f64).sum();
            ns / probes.len().max(1) as f64 + 64.0 * (n - c.len() as f64) / n
        };
        let mut best: Option<(f64, Compiled)> = None;
        for (level, space) in LAYOUTS {
            let mut rs = rules.clone();
            let c = loop {
                match Self::try_build(rs, per_rule, base, level, space) {
                    Ok(c) => break c,
                    Err(rest) => rs = rest,
                }
            };
            let k = cost(&c);
            if best.as_ref().is_none_or(|(b, bc)| (k, c.bytes()) < (*b, bc.bytes())) {
                best = Some((k, c));
            }
        }
        let mut c = best.expect("layouts").1;
        c.left_out = rules.iter().filter(|r| !c.ids.contains_key(&r.id)).map(|r| r.id).collect();
        c.left_out.sort_unstable();
        c
    }

    /// True if the rule with this id was in the compile's input but left out.
    pub(crate) fn left_out(&self, id: RuleId) -> bool {
        self.left_out.binary_search(&id).is_ok()
    }

    /// One attempt: the core, or the rules without the given-up partitions.
    fn try_build(rules: Vec<Rule>, per_rule: usize, base: usize, first: Split, space: usize) -> Result<Compiled, Vec<Rule>> {
        let mut ids = IdMap::default();
        ids.reserve(rules.len());
        let mut bounds = Vec::with_capacity(rules.len());
        let mut recs = Vec::with_capacity(rules.len());
        let mut any_family = Vec::new();
        for (s, r) in rules.iter().enumerate() {
            assert!(eligible(r), "rule {:?} cannot be compiled", r.id);
            assert!(ids.insert(r.id, s as u32).is_none(), "rule id {:?} repeated", r.id);
            let b = Bounds::of(r);
            recs.push(Leaf::of(r, &b));
            bounds.push(b);
            if r.m.src.len == 0 || r.m.dst.len == 0 {
                any_family.push(s as u32);
            }
        }
        assert!(rules.len() <= REF_SLOT as usize, "too many rules for one core");
        let mut qs = 0;
        while (rules.len() as u64 >> qs) >= MIN_MAX {
            qs += 1;
        }
        let mut b = Builder::new(&bounds, qs, space);
        let mut trees = Vec::new();
        let mut given_up = vec![false; rules.len()];
        // A tree over its budget is given up and its rules split: by which
        // addresses are specific, then by which ports are narrow (EffiCuts'
        // separation of large and small rules: replication comes from rules
        // wide in a field the tree cuts). Past that they are given up.
        let all: Vec<u32> = (0..rules.len() as u32).collect();
        let mut work: Vec<(Vec<u32>, Split)> = match first {
            Split::Whole => vec![(all, Split::Whole)],
            _ => first.split(all, &rules).into_iter().map(|l| (l, Split::Address)).collect(),
        };
        while let Some((list, level)) = work.pop() {
            if list.is_empty() {
                continue;
            }
            let (k0, l0, d0) = (b.kids.len(), b.refs.len(), b.max_depth);
            b.budget = k0 + l0 + (per_rule * list.len() + base).min(BUDGET_MAX);
            b.over = false;
            b.memo.clear();
            let first = list[0];
            let root = b.node(list.clone(), Cell { lo: [0; DIMS], bits: DOMAIN }, 0, false);
            if !b.over {
                trees.push(Tree { root, first });
                continue;
            }
            b.kids.truncate(k0);
            b.refs.truncate(l0);
            b.max_depth = d0;
            match level.next() {
                Some(next) => work.extend(next.split(list, &rules).into_iter().map(|l| (l, next))),
                None => {
                    for s in list {
                        given_up[s as usize] = true;
                    }
                }
            }
        }
        if given_up.iter().any(|&g| g) {
            return Err(rules.into_iter().zip(given_up).filter(|(_, g)| !g).map(|(r, _)| r).collect());
        }
        trees.sort_unstable_by_key(|t| t.first);
        let stats = CoreStats {
            rules: rules.len(),
            trees: trees.len(),
            kids: b.kids.len(),
            leaf_records: b.refs.len(),
            max_depth: b.max_depth,
        };
        let (mut kids, mut refs) = (b.kids, b.refs);
        kids.shrink_to_fit();
        refs.shrink_to_fit();
        Ok(Compiled { rules, ids, trees, kids, recs, refs, any_family, left_out: Vec::new(), qs, stats })
    }

    /// Rules compiled (live or not).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if nothing was compiled.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Shape statistics.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    pub(crate) fn rule(&self, s: u32) -> &Rule {
        &self.rules[s as usize]
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub(crate) fn slot(&self, id: RuleId) -> Option<u32> {
        self.ids.get(&id).copied()
    }

    /// Heap and inline bytes, rule records included.
    pub fn bytes(&self) -> usize {
        use core::mem::size_of;
        size_of::<Self>()
            + self.rules.capacity() * size_of::<Rule>()
            + (self.ids.capacity() * 8 / 7) * (size_of::<(RuleId, u32)>() + 1)
            + self.trees.capacity() * size_of::<Tree>()
            + self.kids.capacity() * 8
            + self.recs.capacity() * size_of::<Leaf>()
            + self.refs.capacity() * 4
            + self.any_family.capacity() * 4
            + self.left_out.capacity() * 4
    }

    /// Bytes of the rule records alone.
    pub fn rule_bytes(&self) -> usize {
        self.rules.capacity() * core::mem::size_of::<Rule>()
    }

    #[inline(always)]
    fn values(k: &FlowKey) -> [u32; DIMS] {
        [k.src as u32, k.dst as u32, k.sport as u32, k.dport as u32, k.proto as u32]
    }

    /// The IPv4 key of [`Self::values`] `v` (core rules have no in_port or
    /// identities: the key needs none).
    fn key_of(v: &[u32; DIMS]) -> FlowKey {
        let a = crate::key::v4_mapped;
        FlowKey::new(0, a(v[0]), a(v[1]), v[4] as u8, v[2] as u16, v[3] as u16)
    }

    #[inline(always)]
    fn descend(&self, mut k: u64, v: &[u32; DIMS]) -> u64 {
        while k & LEAF == 0 {
            k = self.kids[kid_child(k, v)];
        }
        k
    }

    /// The first live match of leaf `k` better than slot `bound`, or NIL.
    /// Records are in slot order, so the scan stops at the first past it.
    #[inline(always)]
    fn scan(&self, k: u64, v: &[u32; DIMS], alive: &[u64], bound: u32) -> u32 {
        if k == EMPTY {
            return NIL;
        }
        let mut i = k as u32 as usize;
        loop {
            let e = self.refs[i];
            let s = e & REF_SLOT;
            if s >= bound {
                return NIL;
            }
            if self.recs[s as usize].matches(v) && is_live(alive, s) {
                return s;
            }
            if e >= LAST {
                return if e >= LAST_CUT { self.scan_all(v, alive, bound) } else { NIL };
            }
            i += 1;
        }
    }

    /// Every rule better than `bound`, in order: for a leaf whose covering
    /// rules were all deleted since the compile.
    #[cold]
    fn scan_all(&self, v: &[u32; DIMS], alive: &[u64], bound: u32) -> u32 {
        let k = Self::key_of(v);
        let end = (bound as usize).min(self.rules.len());
        for (s, r) in self.rules[..end].iter().enumerate() {
            if is_live(alive, s as u32) && r.m.matches(&k) {
                return s as u32;
            }
        }
        NIL
    }

    /// The best live rule for a key that is not IPv4 on both sides.
    #[cold]
    fn find_other(&self, k: &FlowKey, alive: &[u64]) -> u32 {
        for &s in &self.any_family {
            if is_live(alive, s) && self.rules[s as usize].m.matches(k) {
                return s;
            }
        }
        NIL
    }

    /// The slot of the best live rule for `k`, or NIL.
    #[inline]
    pub(crate) fn find(&self, k: &FlowKey, alive: &[u64]) -> u32 {
        if !(is_v4(k.src) && is_v4(k.dst)) {
            return self.find_other(k, alive);
        }
        let v = Self::values(k);
        let mut best = NIL;
        for t in &self.trees {
            if best < t.first {
                break;
            }
            let s = self.scan(self.descend(t.root, &v), &v, alive, best);
            best = best.min(s);
        }
        best
    }

    /// [`Self::find`] for the `live` lanes, written to `best` (which must
    /// come in NIL for them; NIL out: no rule).
    /// Tree by tree; each walks all lanes one level at a time, so the lanes'
    /// loads are independent and their cache misses overlap.
    pub(crate) fn find_batch(&self, keys: &[FlowKey; BURST], live: u32, alive: &[u64], best: &mut [u32; BURST]) {
        let mut v = [[0u32; DIMS]; BURST];
        let mut v4 = 0u32;
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let k = &keys[i];
            if is_v4(k.src) && is_v4(k.dst) {
                v[i] = Self::values(k);
                v4 |= 1 << i;
            } else {
                best[i] = self.find_other(k, alive);
            }
        }
        let mut cur = [0u64; BURST];
        for t in &self.trees {
            let mut lanes = 0u32;
            let mut m = v4;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if best[i] > t.first {
                    lanes |= 1 << i;
                    cur[i] = t.root;
                }
            }
            // Level by level over the lanes; a lane stops where nothing
            // under its kid can beat its best match.
            let mut walking = if t.root & LEAF == 0 { lanes } else { 0 };
            while walking != 0 {
                let mut m = walking;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let n = self.kids[kid_child(cur[i], &v[i])];
                    cur[i] = n;
                    let first = kid_min(n, self.qs);
                    if first > best[i] {
                        walking &= !(1 << i);
                        lanes &= !(1 << i);
                    } else if n & LEAF != 0 {
                        walking &= !(1 << i);
                        // The leaf's entries, and its first record (its first
                        // slot, exactly when `qs` is 0), as the lane gets there.
                        if let Some(r) = self.refs.get(n as u32 as usize) {
                            crate::hint::prefetch(r);
                            if let Some(f) = self.recs.get(first as usize) {
                                crate::hint::prefetch(f);
                            }
                        }
                    }
                }
            }
            let mut m = lanes;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let s = self.scan(cur[i], &v[i], alive, best[i]);
                best[i] = best[i].min(s);
            }
        }
    }

    /// (trees walked, levels descended, leaf records scanned) of one lookup
    /// of an IPv4 key; for the layout choice, tuning and design notes.
    #[doc(hidden)]
    pub fn cost(&self, k: &FlowKey) -> (u32, u32, u32) {
        let v = Self::values(k);
        let (mut trees, mut depth, mut scanned, mut best) = (0, 0, 0, NIL);
        for t in &self.trees {
            if best < t.first {
                break;
            }
            trees += 1;
            let mut n = t.root;
            while n & LEAF == 0 {
                depth += 1;
                n = self.kids[kid_child(n, &v)];
            }
            if n != EMPTY {
                let mut i = n as u32 as usize;
                loop {
                    let e = self.refs[i];
                    let s = e & REF_SLOT;
                    if s >= best {
                        break;
                    }
                    scanned += 1;
                    if self.recs[s as usize].matches(&v) {
                        best = s;
                        break;
                    }
                    if e >= LAST {
                        break;
                    }
                    i += 1;
                }
            }
        }
        (trees, depth, scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;
    use crate::rule::{Action, LinearClassifier, Match};
    use core::net::Ipv4Addr;
    use std::sync::Arc;

    fn rule(id: u32, priority: u32, m: Match) -> Rule {
        Rule { id: RuleId(id), priority, m, action: Action::Allow, cookie: id as u64 }
    }

    /// The /16 of rule `i` (distinct for i < 2^16, spread over the space).
    fn net(i: u32) -> u32 {
        i.wrapping_mul(0x0135_0000)
    }

    /// 200 rules on /16s with three covering rules below them: many leaves
    /// drop the third covering rule.
    fn rules() -> Vec<Rule> {
        let mut v: Vec<Rule> = (0..200u32)
            .map(|i| {
                let dst = Prefix::v4(net(i), 16);
                rule(i, 100 + i % 5, Match { dst, dport: PortRange::exact(80 + (i % 3) as u16), ..Match::ANY })
            })
            .collect();
        for (id, prio) in [(1000, 50), (1001, 40), (1002, 30)] {
            v.push(rule(id, prio, Match::ANY));
        }
        v
    }

    fn keys() -> Vec<FlowKey> {
        (0..256u32)
            .flat_map(|i| {
                (79..83).map(move |p| FlowKey::v4(0, Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::from(net(i) | 7), 6, 5, p))
            })
            .collect()
    }

    fn check(c: &Classifier, lin: &LinearClassifier) {
        for k in keys() {
            assert_eq!(c.lookup(&k).map(|r| r.id), lin.lookup(&k).map(|r| r.id), "{k:?}");
        }
    }

    #[test]
    fn leaves_that_dropped_rules_fall_back_when_their_covering_rules_go() {
        let mut c = Classifier::new();
        let mut lin = LinearClassifier::new();
        for r in rules() {
            c.insert(r).unwrap();
            lin.insert(r);
        }
        c.compile();
        assert_eq!(c.stats().compiled, 203);
        assert!(c.compiled().unwrap().refs.iter().any(|&e| e >= LAST_CUT), "some leaf dropped rule 1002");
        check(&c, &lin);
        // The two best covering rules go: where no specific rule matches,
        // only the dropped one is left.
        for id in [1000, 1001] {
            assert_eq!(c.remove(RuleId(id)), lin.remove(RuleId(id)));
        }
        check(&c, &lin);
        let k = FlowKey::v4(0, Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::from(net(3) | 7), 6, 5, 1);
        assert_eq!(c.lookup(&k).map(|r| r.id), Some(RuleId(1002)));
        assert_eq!(c.delta_len(), 0, "served by the core's fallback");
    }

    /// Exact ports every 37 under ranges with unaligned ends, so that a cut
    /// of the port field leaves runs of children with only ranges (and
    /// children that a range covers in part): alike children share a
    /// subtree, and every port answers as a linear scan does.
    #[test]
    fn alike_children_share_subtrees_and_answer_as_the_rules_do() {
        let mut c = Classifier::new();
        let mut lin = LinearClassifier::new();
        let mut rs: Vec<Rule> = (0..60u32)
            .map(|i| rule(i, 100 + i % 7, Match { dport: PortRange::exact(300 + 37 * i as u16), proto: Some(6), ..Match::ANY }))
            .collect();
        for (id, lo, hi, prio) in [(100, 1000, 6000, 50), (101, 1500, 1733, 120), (102, 333, 2999, 40), (103, 0, 9000, 10)] {
            rs.push(rule(id, prio, Match { dport: PortRange { lo, hi }, ..Match::ANY }));
        }
        // Wide in ports, told apart by source: the runs of children that
        // hold them are split further (shared internal nodes).
        for i in 0..8u32 {
            let src = Prefix::v4((i * 32 + 1) << 24, 8);
            rs.push(rule(200 + i, 60 + i, Match { src, dport: PortRange { lo: 2400, hi: 5000 }, ..Match::ANY }));
        }
        for r in rs {
            c.insert(r).unwrap();
            lin.insert(r);
        }
        c.compile();
        let core = c.compiled().unwrap();
        assert_eq!(core.len(), 72);
        let mut internal: Vec<u64> = core.kids.iter().copied().filter(|k| k & LEAF == 0).collect();
        let n = internal.len();
        internal.sort_unstable();
        internal.dedup();
        assert!(internal.len() < n, "some subtree is shared: {:?}", core.stats());
        for port in 0..=u16::MAX {
            for (proto, src) in [(6, Ipv4Addr::new(1, 2, 3, 4)), (17, Ipv4Addr::new(65, 3, 7, 7)), (6, Ipv4Addr::new(99, 1, 0, 1))] {
                let k = FlowKey::v4(0, src, Ipv4Addr::new(5, 6, 7, 8), proto, 9, port);
                assert_eq!(c.lookup(&k).map(|r| r.id), lin.lookup(&k).map(|r| r.id), "{k:?}");
            }
        }
    }

    /// `alike` against its definition, on random port ranges and cuts: a
    /// child is alike to the one before only if both overlap the same rules
    /// and each of those covers both whole in the cut field; and a run of
    /// children with nothing between them is found.
    #[test]
    fn alike_is_same_rules_covering_both_children_whole() {
        let mut rng = crate::classbench::Rng::new(0x5eed);
        let mut shared = 0;
        for round in 0..300 {
            let n = 1 + rng.below(12) as usize;
            let bounds: Vec<Bounds> = (0..n)
                .map(|_| {
                    let (a, b) = (rng.below(1 << 16) as u32, rng.below(1 << 16) as u32);
                    let mut r = Bounds { lo: [0; DIMS], hi: [u32::MAX, u32::MAX, 0xffff, 0xffff, 0xff] };
                    (r.lo[3], r.hi[3]) = (a.min(b), a.max(b));
                    if round % 3 == 0 {
                        // Aligned ends: long runs of alike children.
                        r.lo[3] &= !0xfff;
                        r.hi[3] |= 0xfff;
                    }
                    r
                })
                .collect();
            let b = Builder::new(&bounds, 0, SPACE);
            let c = Cell { lo: [0; DIMS], bits: DOMAIN };
            let list: Vec<u32> = (0..n as u32).collect();
            let cb = 8 + rng.below(6) as u8;
            let alike = b.alike(&list, &c, 3, cb);
            let child = |i: usize| (i as u32) << cb..=(((i as u32 + 1) << cb) - 1);
            for (i, &same) in alike.iter().enumerate().skip(1) {
                let (p, q) = (child(i - 1), child(i));
                let over = |r: &Bounds, ch: &core::ops::RangeInclusive<u32>| r.lo[3] <= *ch.end() && r.hi[3] >= *ch.start();
                let whole = |r: &Bounds, ch: &core::ops::RangeInclusive<u32>| r.lo[3] <= *ch.start() && r.hi[3] >= *ch.end();
                let want = bounds.iter().all(|r| over(r, &p) == over(r, &q) && (!over(r, &p) || (whole(r, &p) && whole(r, &q))));
                assert_eq!(same, want, "round {round} child {i} cb {cb} {bounds:?}");
                shared += same as usize;
            }
            assert!(!alike[0]);
        }
        assert!(shared > 1000, "{shared} alike children");
    }

    #[test]
    fn partitions_over_budget_stay_in_the_delta() {
        let rs = rules();
        let core = Compiled::build_with(rs.clone(), 0, 0);
        assert_eq!((core.len(), core.stats().trees), (0, 0), "nothing fits a zero budget");
        let mut c = Classifier::new();
        let mut lin = LinearClassifier::new();
        for r in &rs {
            c.insert(*r).unwrap();
            lin.insert(*r);
        }
        c.install(Arc::new(core));
        assert_eq!((c.stats().compiled, c.delta_len()), (0, 203));
        check(&c, &lin);
        // A budget that fits the tree of the big partition.
        let core = Compiled::build_with(rs, 64, 1 << 12);
        assert!(core.len() >= 200, "{:?}", core.stats());
        c.install(Arc::new(core));
        check(&c, &lin);
        assert_eq!(c.len(), lin.len());
    }

    #[test]
    fn keys_of_other_families_see_any_family_rules_only() {
        let any = rule(1, 5, Match { dport: PortRange::exact(53), ..Match::ANY });
        let v4 = rule(2, 9, Match { dst: Prefix::v4(0, 0), ..Match::ANY });
        let mixed = rule(3, 7, Match { src: Prefix::v4(0x0a00_0000, 8), ..Match::ANY });
        let mut c = Classifier::new();
        for r in [any, v4, mixed] {
            c.insert(r).unwrap();
        }
        c.compile();
        assert_eq!(c.stats().compiled, 3);
        let v6 = FlowKey::new(0, 1, 2, 17, 9, 53);
        assert_eq!(c.lookup(&v6).map(|r| r.id), Some(RuleId(1)));
        let half = FlowKey::new(0, crate::key::v4_mapped(0x0a01_0101), 2, 17, 9, 54);
        assert_eq!(c.lookup(&half).map(|r| r.id), Some(RuleId(3)));
        let both = FlowKey::v4(0, Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(1, 1, 1, 1), 17, 9, 53);
        assert_eq!(c.lookup(&both).map(|r| r.id), Some(RuleId(2)));
    }
}
