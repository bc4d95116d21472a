//! The wildcard classifier: a compiled core of cut trees (fast lookups,
//! immutable, deletes are tombstones) plus a delta of tuple space search
//! (microsecond inserts and deletes) for everything changed since the core
//! was compiled. See flowtable/DESIGN.md, "Classifier".
//!
//! ```text
//! insert: id tombstoned in the core with the same rule -> revive it
//!         else -> delta (tss.rs)
//! remove: in the delta -> unlink it; in the core -> clear its live bit
//! lookup: core (cuts.rs): best live match, its rank
//!         delta: only rules that outrank it (early exit on max rank)
//! compile: all rules the core can hold -> a new core (built off the update
//!          path by `ruleset`'s writer, or at once after a bulk load);
//!          install: rules changed meanwhile stay in the delta
//! ```

mod cuts;
mod hot;
mod prune;
mod tss;
mod tuple;

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::key::FlowKey;
use crate::rule::{Rule, RuleId, RuleLookup};
pub use cuts::{Compiled, CoreStats};
use tss::Tss;

/// Packets per burst.
pub const BURST: usize = 32;

const NIL: u32 = u32::MAX;

/// Why an update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// A rule with this id is already present; nothing was changed.
    #[error("rule id {} is already present", .0 .0)]
    DuplicateId(RuleId),
}

/// The order of rules as one number: higher priority first, then lower id.
/// Unique per rule because ids are unique.
#[inline]
pub(crate) fn rank(r: &Rule) -> u64 {
    (r.priority as u64) << 32 | (u32::MAX - r.id.0) as u64
}

/// Multiplicative hasher for the id maps (ids are small integers).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u32(v as u32)
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64 ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}
type IdMap = std::collections::HashMap<RuleId, u32, BuildHasherDefault<IdHasher>>;

/// Shape statistics (for design notes and `show` commands).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// Rules.
    pub rules: usize,
    /// Subtables of the delta.
    pub subtables: usize,
    /// Longest chain in any bucket of the delta.
    pub max_chain: usize,
    /// Rules served by the compiled core (live ones).
    pub compiled: usize,
    /// The compiled core's shape (all zero without one).
    pub core: CoreStats,
}

/// The wildcard classifier. See the module doc.
///
/// Updates never rebuild anything: an insert goes to the delta (or revives
/// its tombstone in the core), a delete unlinks or tombstones. Compiling is
/// separate: [`Self::compile`] at once, or [`Compiled::build`] on
/// [`Self::compile_input`] elsewhere and [`Self::install`] here.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    delta: Tss,
    core: Option<Arc<Compiled>>,
    /// Per core slot: live (not deleted since the compile).
    alive: Vec<u64>,
    /// Live core slots.
    core_live: usize,
    /// Rules in the delta that a compile would move to the core (the
    /// others cannot be compiled, or were left out by the last compile).
    drift: usize,
}

impl Classifier {
    /// An empty classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.delta.len() + self.core_live
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline(always)]
    fn is_alive(&self, s: u32) -> bool {
        cuts::is_live(&self.alive, s)
    }

    /// The live core slot of this id.
    fn core_slot(&self, id: RuleId) -> Option<u32> {
        let s = self.core.as_ref()?.slot(id)?;
        self.is_alive(s).then_some(s)
    }

    /// The rule with this id.
    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.delta.get(id).or_else(|| {
            let s = self.core_slot(id)?;
            self.core.as_ref().map(|c| c.rule(s))
        })
    }

    /// All rules, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> + '_ {
        let core = self.core.as_deref().map_or(&[][..], |c| c.rules());
        let live = core.iter().enumerate().filter(|(s, _)| self.is_alive(*s as u32)).map(|(_, r)| r);
        self.delta.iter().chain(live)
    }

    /// Heap and inline bytes held by the classifier, rule records included
    /// (`size_of::<Rule>()` each). A core is counted whole although the two
    /// left-right copies share it.
    pub fn bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.delta.bytes()
            + self.core.as_ref().map_or(0, |c| c.bytes())
            + self.alive.capacity() * 8
    }

    /// Bytes of the index alone: [`Self::bytes`] minus the rule records.
    pub fn index_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.delta.index_bytes()
            + self.core.as_ref().map_or(0, |c| c.bytes() - c.rule_bytes())
            + self.alive.capacity() * 8
    }

    /// Releases spare capacity (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        self.delta.shrink_to_fit();
    }

    /// Shape statistics.
    pub fn stats(&self) -> ClassifierStats {
        let d = self.delta.stats();
        ClassifierStats {
            rules: self.len(),
            compiled: self.core_live,
            core: self.core.as_ref().map(|c| c.stats()).unwrap_or_default(),
            ..d
        }
    }

    /// The compiled core, if any.
    pub fn compiled(&self) -> Option<&Compiled> {
        self.core.as_deref()
    }

    /// Rules served by the compiled core (live ones); `stats().compiled`
    /// without walking the delta's chains.
    pub fn compiled_len(&self) -> usize {
        self.core_live
    }

    /// Rules in the delta (not served by the compiled core).
    pub fn delta_len(&self) -> usize {
        self.delta.len()
    }

    /// Rules in the delta that a new compile would take into the core: what
    /// a background compile waits for (rules the core cannot hold, or that
    /// the last compile left out, do not count).
    pub fn drift(&self) -> usize {
        self.drift
    }

    /// True if a compile would take this rule into the core.
    fn compilable(&self, r: &Rule) -> bool {
        cuts::eligible(r) && !self.core.as_ref().is_some_and(|c| c.left_out(r.id))
    }

    /// Adds a rule.
    ///
    /// # Errors
    /// [`ClassifyError::DuplicateId`] if its id is taken; nothing changes then.
    pub fn insert(&mut self, rule: Rule) -> Result<(), ClassifyError> {
        if self.delta.contains(rule.id) {
            return Err(ClassifyError::DuplicateId(rule.id));
        }
        if let Some(s) = self.core.as_ref().and_then(|c| c.slot(rule.id)) {
            if self.is_alive(s) {
                return Err(ClassifyError::DuplicateId(rule.id));
            }
            if self.core.as_ref().is_some_and(|c| *c.rule(s) == rule) {
                cuts::set_live(&mut self.alive, s, true);
                self.core_live += 1;
                return Ok(());
            }
        }
        self.delta.insert(rule)?;
        self.drift += self.compilable(&rule) as usize;
        Ok(())
    }

    /// Removes the rule with this id, returning it.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        if let Some(r) = self.delta.remove(id) {
            self.drift -= self.compilable(&r) as usize;
            return Some(r);
        }
        let s = self.core_slot(id)?;
        cuts::set_live(&mut self.alive, s, false);
        self.core_live -= 1;
        self.core.as_ref().map(|c| *c.rule(s))
    }

    /// The rules a compile would put in the core: every rule it can hold.
    pub fn compile_input(&self) -> Vec<Rule> {
        self.iter().filter(|r| cuts::eligible(r)).copied().collect()
    }

    /// Installs a core compiled from an earlier [`Self::compile_input`]: its
    /// rules that are still present, unchanged, are served by it; every other
    /// rule goes to a new delta. O(rules); nothing is compiled here.
    pub fn install(&mut self, core: Arc<Compiled>) {
        let mut alive = vec![0u64; core.len().div_ceil(64)];
        let mut live = 0;
        let mut rest = Vec::new();
        for r in self.iter() {
            match core.slot(r.id) {
                Some(s) if core.rule(s) == r => {
                    cuts::set_live(&mut alive, s, true);
                    live += 1;
                }
                _ => rest.push(*r),
            }
        }
        // Best first: the tuple space's shape depends on insertion order, and
        // this one is the same on both left-right copies.
        rest.sort_unstable_by_key(|r| core::cmp::Reverse(rank(r)));
        let mut delta = Tss::new();
        for r in rest {
            delta.insert(r).expect("ids are unique");
        }
        *self = Classifier { delta, core: Some(core), alive, core_live: live, drift: 0 };
        self.drift = self.delta.iter().filter(|r| self.compilable(r)).count();
    }

    /// Compiles every rule the core can hold into a new core, at once.
    pub fn compile(&mut self) {
        self.install(Arc::new(Compiled::build(self.compile_input())));
    }

    /// The best matching rule for `k`, per the ordering contract of [`crate::rule`].
    #[inline]
    pub fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        let (mut cs, mut rk) = (NIL, 0);
        if let Some(c) = &self.core {
            cs = c.find(k, &self.alive);
            if cs != NIL && !self.delta.is_empty() {
                rk = rank(c.rule(cs));
            }
        }
        let ds = self.delta.find_from(k, rk);
        if ds != NIL {
            Some(self.delta.rule(ds))
        } else if cs != NIL {
            self.core.as_ref().map(|c| c.rule(cs))
        } else {
            None
        }
    }

    /// Looks up the keys of the `live` lanes (bit i = `keys[i]`), writing the
    /// best rule of each to `out` (lanes outside `live` are left untouched).
    /// Returns the live lanes that matched no rule.
    pub fn lookup_batch<'a>(&'a self, keys: &[FlowKey; BURST], live: u32, out: &mut [Option<&'a Rule>; BURST]) -> u32 {
        let mut cs = [NIL; BURST];
        if let Some(c) = &self.core {
            c.find_batch(keys, live, &self.alive, &mut cs);
        }
        let mut ds = [NIL; BURST];
        if !self.delta.is_empty() {
            let mut rk = [0u64; BURST];
            if let Some(c) = &self.core {
                for i in 0..BURST {
                    if cs[i] != NIL {
                        rk[i] = rank(c.rule(cs[i]));
                    }
                }
            }
            self.delta.lookup_batch_from(keys, live, &mut rk, &mut ds);
        }
        let mut miss = 0;
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            out[i] = if ds[i] != NIL {
                Some(self.delta.rule(ds[i]))
            } else if cs[i] != NIL {
                self.core.as_ref().map(|c| c.rule(cs[i]))
            } else {
                miss |= 1 << i;
                None
            };
        }
        miss
    }

    /// Work done by one lookup in the delta: (candidate subtables << 16 |
    /// subtables probed). For tuning and design notes.
    #[doc(hidden)]
    pub fn lookup_cost(&self, k: &FlowKey) -> (u32, u32) {
        self.delta.lookup_cost(k)
    }
}

impl RuleLookup for Classifier {
    #[inline]
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        Classifier::lookup(self, k)
    }
}
