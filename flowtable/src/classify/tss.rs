//! The delta: tuple space search with merged tuples (TupleMerge-style),
//! priority-ordered subtables with early exit, and incremental insert and
//! delete. It holds every rule the compiled core does not: rules changed since
//! the last compile, and rules the core cannot hold (IPv6 prefixes, in_port,
//! identities). See flowtable/DESIGN.md, "Classifier".
//!
//! ```text
//! rule -> exact tuple (src len, dst len, sport/dport prefix len, proto?, in_port?, ids?)
//!      -> the most specific existing subtable whose tuple it covers and whose
//!         bucket has room, else a new subtable of the relaxed tuple
//! subtable: masks + open hash (bucket -> chain of rule slots, best rule first)
//!           + max rank of its rules; subtables kept sorted by max rank
//! lookup: for each subtable in rank order, stop when the best match so far
//!         outranks the subtable's max; hash the masked key; walk the chain
//!         until a rule matches (full check: ranges and long prefixes are
//!         verified there) or ranks drop below the best.
//! ```

use std::collections::HashMap;

use super::hot::{self, Hot, KeyV4};
use super::prune::{self, Bits, KeySlots, Prune, PRUNE_IDS};
use super::tuple::{Masks, Tuple, Words};
use super::{rank, ClassifierStats, ClassifyError, IdMap, BURST, NIL};
use crate::key::FlowKey;
use crate::rule::{Rule, RuleId};

/// A chain longer than this makes an insert look for (or create) a more
/// specific subtable. Tuned on ClassBench (DESIGN.md).
const COLLISION_LIMIT: u32 = 8;

/// Subtables up to this many buckets recompute their max rank when their
/// best rule is deleted; larger ones keep it as an upper bound.
const EXACT_MAX_BUCKETS: usize = 256;

/// Grow a subtable's bucket array when rules exceed 1/this of it.
const LOAD_INV: usize = 4;

/// Relaxation levels tried for a new subtable (see `Tuple::relaxed`).
const RELAX_LEVELS: u8 = 2;

#[derive(Clone, Debug)]
struct Subtable {
    tuple: Tuple,
    masks: Masks,
    /// Upper bound of the ranks of its rules (exact except after deleting the
    /// best rule of a big subtable).
    max_rank: u64,
    /// Chain heads; length a power of two.
    buckets: Vec<u32>,
    /// Rules in the subtable.
    count: u32,
    /// Occupancy of the pruning slots by its rules (see `prune`), sparse.
    counts: prune::Counts,
}

impl Subtable {
    fn new(tuple: Tuple) -> Self {
        Subtable {
            tuple,
            masks: tuple.masks(),
            max_rank: 0,
            buckets: vec![NIL; 8],
            count: 0,
            counts: prune::Counts::default(),
        }
    }
    #[inline(always)]
    fn bucket(&self, w: &Words) -> usize {
        (w.masked(&self.masks).hash() as usize) & (self.buckets.len() - 1)
    }
}

/// The tuple-space classifier. See the module doc.
///
/// Updates are incremental: an insert touches one subtable (and moves it in
/// the rank order), a delete unlinks one chain entry; a subtable's bucket
/// array doubles when it fills (amortised) and nothing else is ever rebuilt.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tss {
    /// Rule slots (free slots keep a stale rule).
    rules: Vec<Rule>,
    /// Per slot: rank, chain link and a compact form of the match.
    hot: Vec<Hot>,
    /// Per slot: index into `tables`.
    table_of: Vec<u32>,
    /// Per slot: the next (lower-ranked) rule with an identical match. Only
    /// the best of such a group is on a chain; the others can never win and
    /// wait here to be promoted when it is removed.
    dup_next: Vec<u32>,
    /// Per slot: for a rule waiting in a group, the group's chained rule; NIL
    /// for chained rules.
    dup_of: Vec<u32>,
    free: Vec<u32>,
    ids: IdMap,
    /// Subtables; a removed one leaves a free entry.
    tables: Vec<Subtable>,
    free_tables: Vec<u32>,
    by_tuple: HashMap<Tuple, u32>,
    /// Live subtables by decreasing `max_rank`: the lookup order.
    order: Vec<u32>,
    /// Per-field candidate bitsets over subtables.
    prune: Prune,
}

impl Tss {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rule with this id.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.ids.get(&id).map(|&s| &self.rules[s as usize])
    }

    /// All rules, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.ids.values().map(|&s| &self.rules[s as usize])
    }

    /// Heap and inline bytes held by the classifier, rule records included
    /// (`size_of::<Rule>()` each).
    pub fn bytes(&self) -> usize {
        use core::mem::size_of;
        let slots = self.rules.capacity() * size_of::<Rule>()
            + self.hot.capacity() * size_of::<Hot>()
            + self.table_of.capacity() * 4
            + (self.dup_next.capacity() + self.dup_of.capacity()) * 4
            + self.free.capacity() * 4;
        // hashbrown: one control byte + one entry per bucket, buckets >= cap * 8/7.
        let ids = (self.ids.capacity() * 8 / 7) * (size_of::<(RuleId, u32)>() + 1);
        let tuples = (self.by_tuple.capacity() * 8 / 7) * (size_of::<(Tuple, u32)>() + 1);
        let tables: usize =
            self.tables.iter().map(|t| t.buckets.capacity() * 4 + prune::counts_bytes(&t.counts)).sum::<usize>()
                + self.prune.bytes()
                + self.tables.capacity() * size_of::<Subtable>()
                + (self.order.capacity() + self.free_tables.capacity()) * 4;
        size_of::<Self>() + slots + ids + tuples + tables
    }

    /// Bytes of the index alone: [`Self::bytes`] minus the rule records.
    pub fn index_bytes(&self) -> usize {
        self.bytes() - self.rules.capacity() * core::mem::size_of::<Rule>()
    }

    /// Releases spare capacity (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        self.rules.shrink_to_fit();
        self.hot.shrink_to_fit();
        self.table_of.shrink_to_fit();
        self.dup_next.shrink_to_fit();
        self.dup_of.shrink_to_fit();
        self.free.shrink_to_fit();
        self.ids.shrink_to_fit();
        for t in &mut self.tables {
            t.counts.shrink_to_fit();
        }
    }

    /// Shape statistics.
    pub fn stats(&self) -> ClassifierStats {
        let mut max_chain = 0;
        for &t in &self.order {
            for &h in &self.tables[t as usize].buckets {
                let (mut n, mut s) = (0, h);
                while s != NIL {
                    n += 1;
                    s = self.hot[s as usize].next;
                }
                max_chain = max_chain.max(n);
            }
        }
        ClassifierStats { rules: self.len(), subtables: self.order.len(), max_chain, ..Default::default() }
    }

    /// Adds a rule.
    ///
    /// # Errors
    /// [`ClassifyError::DuplicateId`] if its id is taken; nothing changes then.
    pub fn insert(&mut self, rule: Rule) -> Result<(), ClassifyError> {
        if self.ids.contains_key(&rule.id) {
            return Err(ClassifyError::DuplicateId(rule.id));
        }
        self.prune.ensure();
        let w = Words::of_match(&rule.m);
        let t = self.pick_table(&rule, &w);
        let rk = rank(&rule);
        let slot = match self.free.pop() {
            Some(s) => {
                let i = s as usize;
                self.rules[i] = rule;
                self.hot[i] = Hot::of(&rule);
                self.table_of[i] = t;
                self.dup_next[i] = NIL;
                self.dup_of[i] = NIL;
                s
            }
            None => {
                self.rules.push(rule);
                self.hot.push(Hot::of(&rule));
                self.table_of.push(t);
                self.dup_next.push(NIL);
                self.dup_of.push(NIL);
                (self.rules.len() - 1) as u32
            }
        };
        self.ids.insert(rule.id, slot);
        let tb = &mut self.tables[t as usize];
        let pos = self.order.iter().position(|&x| x == t).expect("live table is in order");
        self.prune.update(pos, &mut tb.counts, &rule.m, true);
        tb.count += 1;
        if tb.count as usize * LOAD_INV > tb.buckets.len() {
            self.grow(t);
        }
        let b = self.tables[t as usize].bucket(&w);
        match self.same_match(t, b, &rule) {
            Some(e) if self.hot[e as usize].rank > rk => self.add_dup(e, slot),
            Some(e) => {
                // The new rule outranks an identical one: it takes its place.
                self.unlink(t, b, e);
                self.link(t, b, slot);
                self.dup_next[slot as usize] = e;
                self.set_group_head(slot);
            }
            None => self.link(t, b, slot),
        }
        let tb = &mut self.tables[t as usize];
        if tb.count == 1 || rk > tb.max_rank {
            tb.max_rank = rk;
            self.reorder(t);
        }
        Ok(())
    }

    /// Removes the rule with this id, returning it.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let slot = self.ids.remove(&id)?;
        let i = slot as usize;
        let rule = self.rules[i];
        let t = self.table_of[i];
        let b = self.tables[t as usize].bucket(&Words::of_match(&rule.m));
        if self.dup_of[i] != NIL {
            // Waiting in a group: unlink from the group's list.
            let mut p = self.dup_of[i];
            while self.dup_next[p as usize] != slot {
                p = self.dup_next[p as usize];
            }
            self.dup_next[p as usize] = self.dup_next[i];
            self.dup_next[i] = NIL;
            self.dup_of[i] = NIL;
        } else {
            self.unlink(t, b, slot);
            let n = self.dup_next[i];
            if n != NIL {
                // Promote the next of its group to the chain.
                self.dup_next[i] = NIL;
                self.set_group_head(n);
                self.link(t, b, n);
            }
        }
        self.free.push(slot);
        let tb = &mut self.tables[t as usize];
        let pos = self.order.iter().position(|&x| x == t).expect("live table is in order");
        self.prune.update(pos, &mut tb.counts, &rule.m, false);
        tb.count -= 1;
        if tb.count == 0 {
            self.drop_table(t);
        } else if self.hot[i].rank == tb.max_rank && tb.buckets.len() <= EXACT_MAX_BUCKETS {
            // Chains are sorted, so the new max is the best chain head. Big
            // subtables keep the old max: an upper bound is enough for the
            // early exit, and the update stays O(1).
            let hot = &self.hot;
            tb.max_rank = tb.buckets.iter().filter(|&&h| h != NIL).map(|&h| hot[h as usize].rank).max().unwrap_or(0);
            self.reorder(t);
        }
        Some(rule)
    }

    /// The rule in slot `s` (a slot returned by a lookup).
    #[inline]
    pub fn rule(&self, s: u32) -> &Rule {
        &self.rules[s as usize]
    }

    /// True if a rule with this id is present.
    #[inline]
    pub fn contains(&self, id: RuleId) -> bool {
        self.ids.contains_key(&id)
    }

    /// Probes subtable `tb` for `k`; raises (`best_rank`, `best`) on a match.
    #[inline(always)]
    fn probe(&self, tb: &Subtable, w: &Words, k: &FlowKey, kv: &KeyV4, best_rank: &mut u64, best: &mut u32) {
        let mut s = tb.buckets[tb.bucket(w)];
        while s != NIL {
            let h = &self.hot[s as usize];
            if h.rank < *best_rank {
                return;
            }
            if self.matches(s, k, kv) {
                *best_rank = h.rank;
                *best = s;
                return;
            }
            s = h.next;
        }
    }

    /// The slot of the best rule for `k` that outranks `best_rank` (the best
    /// match found elsewhere; 0: none), or NIL.
    ///
    /// Candidate subtables (pruning bits, in lookup order) lowest bit first;
    /// stop at the first whose max rank is below the best match so far.
    #[inline(always)]
    pub fn find_from(&self, k: &FlowKey, mut best_rank: u64) -> u32 {
        if self.order.is_empty() {
            return NIL;
        }
        let w = Words::of_key(k);
        let kv = KeyV4::of(k);
        let mut cand = self.prune.candidates(&KeySlots::of(k), self.order.len() > 128);
        let mut best = NIL;
        while !cand.is_empty() {
            let pos = cand.first();
            cand.clear_first();
            let tb = &self.tables[self.order[pos] as usize];
            if best_rank > tb.max_rank {
                return best;
            }
            self.probe(tb, &w, k, &kv, &mut best_rank, &mut best);
        }
        // Subtables past the pruned range are all candidates.
        for &t in self.order.iter().skip(PRUNE_IDS) {
            let tb = &self.tables[t as usize];
            if best_rank > tb.max_rank {
                break;
            }
            self.probe(tb, &w, k, &kv, &mut best_rank, &mut best);
        }
        best
    }

    /// Work done by one lookup: (candidate subtables << 16 | subtables
    /// probed). For tuning and design notes.
    #[doc(hidden)]
    pub fn lookup_cost(&self, k: &FlowKey) -> (u32, u32) {
        if self.order.is_empty() {
            return (0, 0);
        }
        let w = Words::of_key(k);
        let kv = KeyV4::of(k);
        let mut cand = self.prune.candidates(&KeySlots::of(k), self.order.len() > 128);
        let n = cand.count();
        let (mut best_rank, mut probes, mut found_at, mut steps) = (0u64, 0u32, 0u32, 0u32);
        while !cand.is_empty() {
            let pos = cand.first();
            cand.clear_first();
            let tb = &self.tables[self.order[pos] as usize];
            if best_rank > tb.max_rank {
                break;
            }
            probes += 1;
            let mut s = tb.buckets[tb.bucket(&w)];
            while s != NIL {
                steps += 1;
                let h = &self.hot[s as usize];
                if h.rank < best_rank {
                    break;
                }
                if self.matches(s, k, &kv) {
                    best_rank = h.rank;
                    found_at = probes;
                    break;
                }
                s = h.next;
            }
        }
        (probes | steps << 16, n << 16 | found_at << 8)
    }

    /// Looks up the keys of the `live` lanes (bit i = `keys[i]`). A lane's
    /// `best_rank` is the rank of the best match found elsewhere (0: none);
    /// where this classifier has a better rule, its slot goes to `best` and
    /// its rank to `best_rank` (other lanes' `best` are left untouched).
    ///
    /// In rounds: each round takes the next candidate subtable of every lane
    /// still searching, first fetching all their bucket heads (independent
    /// loads, no data-dependent branches: their cache misses overlap), then
    /// walking the chains.
    pub fn lookup_batch_from(
        &self,
        keys: &[FlowKey; BURST],
        live: u32,
        best_rank: &mut [u64; BURST],
        best: &mut [u32; BURST],
    ) {
        if self.order.is_empty() {
            return;
        }
        let mut words = [Words::default(); BURST];
        let mut kv = [KeyV4::default(); BURST];
        let mut cand = [Bits::default(); BURST];
        let wide = self.order.len() > 128;
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            words[i] = Words::of_key(&keys[i]);
            kv[i] = KeyV4::of(&keys[i]);
            cand[i] = self.prune.candidates(&KeySlots::of(&keys[i]), wide);
        }
        let mut head = [NIL; BURST];
        // Lanes that stopped early (no later subtable can beat their best).
        let mut done = 0u32;
        let mut active = live;
        while active != 0 {
            let mut m = active;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let c = &mut cand[i];
                if c.is_empty() {
                    active &= !(1 << i);
                    continue;
                }
                let pos = c.first();
                c.clear_first();
                let tb = &self.tables[self.order[pos] as usize];
                if best_rank[i] > tb.max_rank {
                    active &= !(1 << i);
                    done |= 1 << i;
                    continue;
                }
                head[i] = tb.buckets[tb.bucket(&words[i])];
            }
            let mut m = active;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let mut s = head[i];
                while s != NIL {
                    let h = &self.hot[s as usize];
                    if h.rank < best_rank[i] {
                        break;
                    }
                    if self.matches(s, &keys[i], &kv[i]) {
                        best_rank[i] = h.rank;
                        best[i] = s;
                        break;
                    }
                    s = h.next;
                }
            }
        }
        if self.order.len() > PRUNE_IDS {
            // Subtables past the pruned range are candidates of every lane.
            let mut m = live & !done;
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                for &t in &self.order[PRUNE_IDS..] {
                    let tb = &self.tables[t as usize];
                    if best_rank[i] > tb.max_rank {
                        break;
                    }
                    self.probe(tb, &words[i], &keys[i], &kv[i], &mut best_rank[i], &mut best[i]);
                }
            }
        }
    }

    /// Full match check of slot `s` against a key, from the compact record
    /// when the rule is IPv4/any with no port or identity fields.
    #[inline(always)]
    fn matches(&self, s: u32, k: &FlowKey, kv: &KeyV4) -> bool {
        let h = &self.hot[s as usize];
        if h.kind & hot::FULL != 0 {
            return self.rules[s as usize].m.matches(k);
        }
        h.matches_v4(k, kv)
    }

    /// Chooses the subtable for a new rule (creating it if needed).
    fn pick_table(&mut self, rule: &Rule, w: &Words) -> u32 {
        let exact = Tuple::of(&rule.m);
        let mut pick: Option<(u32, u32)> = None; // (bits, table)
        for &t in &self.order {
            let tb = &self.tables[t as usize];
            if !tb.tuple.covers(&exact) {
                continue;
            }
            let bits = tb.tuple.bits();
            if pick.is_some_and(|(b, _)| b >= bits) {
                continue;
            }
            if self.chain_len(tb.buckets[tb.bucket(w)]) < COLLISION_LIMIT {
                pick = Some((bits, t));
            }
        }
        if let Some((_, t)) = pick {
            return t;
        }
        // No room: a new subtable at the coarsest relaxation level whose shape
        // does not exist yet. If every level exists (all crowded for this
        // key), the most specific covering subtable takes it anyway: a longer
        // chain costs less than a new subtable for every rare shape.
        let Some(tuple) = (0..RELAX_LEVELS).map(|l| exact.relaxed(l)).find(|t| !self.by_tuple.contains_key(t)) else {
            let tables = &self.tables;
            return *self
                .order
                .iter()
                .filter(|&&t| tables[t as usize].tuple.covers(&exact))
                .max_by_key(|&&t| tables[t as usize].tuple.bits())
                .expect("the level-0 tuple exists and covers the rule");
        };
        let st = Subtable::new(tuple);
        let t = match self.free_tables.pop() {
            Some(t) => {
                self.tables[t as usize] = st;
                t
            }
            None => {
                self.tables.push(st);
                (self.tables.len() - 1) as u32
            }
        };
        self.by_tuple.insert(tuple, t);
        if self.order.len() >= 128 {
            self.prune.ensure_wide();
        }
        self.order.push(t); // placed by `reorder` once it has its first rule
        t
    }

    /// The chained rule of bucket `b` of table `t` with the same match as `r`.
    fn same_match(&self, t: u32, b: usize, r: &Rule) -> Option<u32> {
        let mut s = self.tables[t as usize].buckets[b];
        while s != NIL {
            if self.rules[s as usize].m == r.m {
                return Some(s);
            }
            s = self.hot[s as usize].next;
        }
        None
    }

    /// Adds `slot` to the group of chained rule `e`, keeping it by decreasing rank.
    fn add_dup(&mut self, e: u32, slot: u32) {
        let rk = self.hot[slot as usize].rank;
        let mut p = e;
        while self.dup_next[p as usize] != NIL && self.hot[self.dup_next[p as usize] as usize].rank > rk {
            p = self.dup_next[p as usize];
        }
        self.dup_next[slot as usize] = self.dup_next[p as usize];
        self.dup_next[p as usize] = slot;
        self.dup_of[slot as usize] = e;
    }

    /// Makes `h` the chained head of the group that follows it.
    fn set_group_head(&mut self, h: u32) {
        self.dup_of[h as usize] = NIL;
        let mut x = self.dup_next[h as usize];
        while x != NIL {
            self.dup_of[x as usize] = h;
            x = self.dup_next[x as usize];
        }
    }

    /// Unlinks chained `slot` from chain `b` of table `t`.
    fn unlink(&mut self, t: u32, b: usize, slot: u32) {
        let i = slot as usize;
        let tb = &mut self.tables[t as usize];
        if tb.buckets[b] == slot {
            tb.buckets[b] = self.hot[i].next;
        } else {
            let mut p = tb.buckets[b];
            while self.hot[p as usize].next != slot {
                p = self.hot[p as usize].next;
            }
            self.hot[p as usize].next = self.hot[i].next;
        }
        self.hot[i].next = NIL;
    }

    fn chain_len(&self, mut s: u32) -> u32 {
        let mut n = 0;
        while s != NIL && n < COLLISION_LIMIT {
            n += 1;
            s = self.hot[s as usize].next;
        }
        n
    }

    /// Links `slot` into chain `b` of table `t`, keeping the chain sorted by
    /// decreasing rank.
    fn link(&mut self, t: u32, b: usize, slot: u32) {
        let rk = self.hot[slot as usize].rank;
        let tb = &mut self.tables[t as usize];
        let head = tb.buckets[b];
        if head == NIL || self.hot[head as usize].rank < rk {
            self.hot[slot as usize].next = head;
            tb.buckets[b] = slot;
            return;
        }
        let mut p = head;
        loop {
            let n = self.hot[p as usize].next;
            if n == NIL || self.hot[n as usize].rank < rk {
                self.hot[slot as usize].next = n;
                self.hot[p as usize].next = slot;
                return;
            }
            p = n;
        }
    }

    /// Doubles the bucket array of table `t` (amortised O(1) per insert).
    #[cold]
    fn grow(&mut self, t: u32) {
        let old = core::mem::take(&mut self.tables[t as usize].buckets);
        let mut slots = Vec::with_capacity(self.tables[t as usize].count as usize);
        for &h in &old {
            let mut s = h;
            while s != NIL {
                slots.push(s);
                s = self.hot[s as usize].next;
            }
        }
        // Re-link best first, appending, so every chain stays sorted.
        slots.sort_unstable_by_key(|&s| core::cmp::Reverse(self.hot[s as usize].rank));
        let n = old.len() * 2;
        let mut heads = vec![NIL; n];
        let mut tails = vec![NIL; n];
        for &s in &slots {
            let w = Words::of_match(&self.rules[s as usize].m);
            let tb = &self.tables[t as usize];
            let b = (w.masked(&tb.masks).hash() as usize) & (n - 1);
            self.hot[s as usize].next = NIL;
            if tails[b] == NIL {
                heads[b] = s;
            } else {
                self.hot[tails[b] as usize].next = s;
            }
            tails[b] = s;
        }
        self.tables[t as usize].buckets = heads;
    }

    /// Moves table `t` to its place in `order` after its max rank changed.
    fn reorder(&mut self, t: u32) {
        let pos = self.order.iter().position(|&x| x == t).expect("live table is in order");
        self.order.remove(pos);
        let mr = self.tables[t as usize].max_rank;
        let tables = &self.tables;
        let at = self.order.partition_point(|&x| tables[x as usize].max_rank > mr);
        self.order.insert(at, t);
        if pos == at {
            return;
        }
        if pos < PRUNE_IDS && at < PRUNE_IDS {
            self.prune.move_pos(pos, at);
        } else {
            self.unplace(pos);
            self.prune.insert_pos(at, &self.tables[t as usize].counts);
        }
    }

    /// Pruning bits after the subtable at `pos` left the order (`order`
    /// already updated).
    fn unplace(&mut self, pos: usize) {
        self.prune.remove_pos(pos);
        if pos < PRUNE_IDS && self.order.len() >= PRUNE_IDS {
            let u = self.order[PRUNE_IDS - 1];
            self.prune.fill(PRUNE_IDS - 1, &self.tables[u as usize].counts);
        }
    }

    fn drop_table(&mut self, t: u32) {
        let pos = self.order.iter().position(|&x| x == t).expect("live table is in order");
        self.order.remove(pos);
        self.unplace(pos);
        let tuple = self.tables[t as usize].tuple;
        self.by_tuple.remove(&tuple);
        let tb = &mut self.tables[t as usize];
        tb.buckets = Vec::new();
        tb.counts = prune::Counts::default();
        self.free_tables.push(t);
    }
}

#[cfg(test)]
impl Tss {
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        let s = self.find_from(k, 0);
        (s != NIL).then(|| self.rule(s))
    }

    fn lookup_batch<'a>(&'a self, keys: &[FlowKey; BURST], live: u32, out: &mut [Option<&'a Rule>; BURST]) -> u32 {
        let (mut rank, mut best) = ([0; BURST], [NIL; BURST]);
        self.lookup_batch_from(keys, live, &mut rank, &mut best);
        let mut miss = 0;
        for i in (0..BURST).filter(|i| live >> i & 1 == 1) {
            out[i] = (best[i] != NIL).then(|| self.rule(best[i]));
            miss |= ((best[i] == NIL) as u32) << i;
        }
        miss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Action, LinearClassifier, Match, PortRange, Prefix};
    use core::net::Ipv4Addr;

    fn rule(id: u32, priority: u32, m: Match) -> Rule {
        Rule { id: RuleId(id), priority, m, action: Action::Allow, cookie: id as u64 }
    }

    #[test]
    fn empty_classifier_misses_every_lane() {
        let c = Tss::new();
        let keys = [FlowKey::default(); BURST];
        let d = Rule::default();
        let mut out = [Some(&d); BURST];
        assert_eq!(c.lookup_batch(&keys, 0b1011, &mut out), 0b1011);
        assert_eq!((out[0], out[1], out[2], out[3]), (None, None, Some(&d), None));
        assert!(c.lookup(&keys[0]).is_none());
    }

    #[test]
    fn identical_matches_wait_and_are_promoted() {
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 1000, 80);
        let m = Match { dst: Prefix::v4(0x0a00_0000, 8), dport: PortRange { lo: 80, hi: 90 }, ..Match::ANY };
        // Every insertion and removal order of three identical matches.
        let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        for ins in orders {
            for del in orders {
                let mut c = Tss::new();
                let mut lin = LinearClassifier::new();
                for &i in &ins {
                    let r = rule(i, 5 + i % 2, m);
                    c.insert(r).unwrap();
                    lin.insert(r);
                }
                assert_eq!(c.lookup(&k), lin.lookup(&k));
                for &i in &del {
                    assert_eq!(c.remove(RuleId(i)), lin.remove(RuleId(i)));
                    assert_eq!(c.lookup(&k), lin.lookup(&k), "ins {ins:?} del {del:?} after {i}");
                }
                assert!(c.is_empty());
            }
        }
    }

    #[test]
    fn duplicate_id_changes_nothing() {
        let mut c = Tss::new();
        c.insert(rule(1, 5, Match::ANY)).unwrap();
        let m = Match { dport: PortRange::exact(80), ..Match::ANY };
        assert_eq!(c.insert(rule(1, 9, m)), Err(ClassifyError::DuplicateId(RuleId(1))));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(RuleId(1)).unwrap().priority, 5);
    }

    #[test]
    fn priority_then_lowest_id_and_removal() {
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 1000, 80);
        let mut c = Tss::new();
        c.insert(rule(5, 10, Match::ANY)).unwrap();
        c.insert(rule(3, 10, Match { src: Prefix::v4(0x0a00_0000, 8), ..Match::ANY })).unwrap();
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(3));
        c.insert(rule(9, 11, Match { dport: PortRange { lo: 79, hi: 81 }, ..Match::ANY })).unwrap();
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(9));
        assert_eq!(c.remove(RuleId(9)).unwrap().priority, 11);
        assert!(c.remove(RuleId(9)).is_none());
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(3));
        c.remove(RuleId(3));
        c.remove(RuleId(5));
        assert!(c.lookup(&k).is_none());
        assert!(c.is_empty());
        assert_eq!(c.stats().subtables, 0);
    }

    #[test]
    fn crowded_buckets_split_and_grow_stay_exact() {
        // 600 rules with the same addresses and proto, distinct dports, some ranges:
        // exercises the collision limit, new subtables and bucket growth.
        let mut c = Tss::new();
        let mut lin = LinearClassifier::new();
        for i in 0..600u32 {
            let lo = (i * 37 % 4000) as u16;
            let dport = if i % 3 == 0 { PortRange { lo, hi: lo + (i % 50) as u16 } } else { PortRange::exact(lo) };
            let m = Match { proto: Some(6), dst: Prefix::v4(0x0a00_0000, 8), dport, ..Match::ANY };
            let r = rule(i, i % 7, m);
            c.insert(r).unwrap();
            lin.insert(r);
        }
        assert!(c.stats().subtables > 1);
        for p in 0..4100u16 {
            let k = FlowKey::v4(0, Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(10, 9, 9, 9), 6, 5, p);
            assert_eq!(c.lookup(&k), lin.lookup(&k), "dport {p}");
        }
        let mut keys = [FlowKey::default(); BURST];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = FlowKey::v4(0, Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(10, 9, 9, 9), 6, 5, i as u16 * 111);
        }
        let mut out = [None; BURST];
        let miss = c.lookup_batch(&keys, u32::MAX, &mut out);
        for i in 0..BURST {
            assert_eq!(out[i], lin.lookup(&keys[i]));
            assert_eq!(miss >> i & 1 == 1, out[i].is_none());
        }
    }
}
