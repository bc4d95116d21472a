//! Rule-set generations: how the control thread publishes classifier changes
//! to the poll-mode lcores without ever blocking them.
//!
//! A left-right double buffer over [`arc_swap::ArcSwap`] ([`crate::leftright`],
//! with the classifier as the state and insert/remove as its operations):
//!
//! ```text
//! writer: insert/remove  -> applied to the spare copy (nobody reads it) + logged
//!         publish()      -> spare.gen = ++gen; swap it in (one atomic store);
//!                           wait until the readers of the old copy have let go
//!                           (their guards are per burst); replay the log on it;
//!                           it is the new spare
//! reader: load()         -> a guard on the current Snapshot, once per burst
//! ```
//!
//! A reader never blocks and never sees half a batch: everything staged
//! between two `publish` calls appears in one swap, together with its
//! generation number. Every update stays incremental (it is applied twice,
//! once per copy); nothing is cloned or rebuilt after [`RuleSetWriter::new`].
//! Memory is two classifiers. Retired snapshots are reclaimed by reference
//! count (arc-swap's debt list is settled by the swap, so the count is exact).

use std::sync::Arc;

use arc_swap::Guard;

use crate::classify::{Classifier, ClassifyError, BURST};
use crate::key::FlowKey;
use crate::leftright::{Absorb, Reader, Versioned, Writer};
use crate::rule::{Rule, RuleId, RuleLookup};

/// One published rule-set generation: immutable while readers hold it.
pub type Snapshot = Versioned<Classifier>;

impl Versioned<Classifier> {
    /// The classifier of this generation.
    #[inline]
    pub fn classifier(&self) -> &Classifier {
        self.data()
    }
    /// Batch lookup; see [`Classifier::lookup_batch`].
    #[inline]
    pub fn lookup_batch<'a>(
        &'a self,
        keys: &[FlowKey; BURST],
        live: u32,
        out: &mut [Option<&'a Rule>; BURST],
    ) -> u32 {
        self.data().lookup_batch(keys, live, out)
    }
}

impl RuleLookup for Versioned<Classifier> {
    #[inline]
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        self.data().lookup(k)
    }
}

/// A change to a classifier, as the left-right log records it.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Insert a rule.
    Insert(Rule),
    /// Remove a rule (absent: nothing happens).
    Remove(RuleId),
}

impl Absorb for Classifier {
    type Op = Op;
    type Error = ClassifyError;
    fn absorb(&mut self, op: &Op) -> Result<(), ClassifyError> {
        match *op {
            Op::Insert(r) => self.insert(r),
            Op::Remove(id) => {
                self.remove(id);
                Ok(())
            }
        }
    }
}

/// The single writer (the control thread). Not `Clone`: there is one.
#[derive(Debug)]
pub struct RuleSetWriter {
    inner: Writer<Classifier>,
}

/// A reader handle (one per lcore; cheap to clone).
#[derive(Debug, Clone)]
pub struct RuleSetReader {
    inner: Reader<Classifier>,
}

impl RuleSetReader {
    /// The current snapshot. Wait-free; hold the guard for one burst at most
    /// (the writer's next publish waits for it).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.inner.load()
    }
    /// The generation currently published.
    pub fn gen(&self) -> u64 {
        self.inner.load().gen()
    }
}

impl RuleSetWriter {
    /// Publishes `initial` as generation 0.
    pub fn new(initial: Classifier) -> Self {
        RuleSetWriter { inner: Writer::new(initial) }
    }

    /// A new reader handle.
    pub fn reader(&self) -> RuleSetReader {
        RuleSetReader { inner: self.inner.reader() }
    }

    /// Stages an insert (visible to readers at the next [`Self::publish`]).
    ///
    /// # Errors
    /// [`ClassifyError::DuplicateId`] if the id is present in the staged set.
    pub fn insert(&mut self, rule: Rule) -> Result<(), ClassifyError> {
        self.inner.apply(Op::Insert(rule))
    }

    /// Stages a removal; returns the rule if it was present in the staged set.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let r = self.inner.staged().get(id).copied()?;
        self.inner.apply(Op::Remove(id)).ok()?;
        Some(r)
    }

    /// The staged rule set (what the next publish makes visible).
    pub fn staged(&self) -> &Classifier {
        self.inner.staged()
    }

    /// The generation of the last publish.
    pub fn gen(&self) -> u64 {
        self.inner.gen()
    }

    /// True if there are staged changes.
    pub fn dirty(&self) -> bool {
        self.inner.dirty()
    }

    /// Makes every staged change visible at once as a new generation, and
    /// returns it. Blocks the writer (never a reader) until the readers of the
    /// previous snapshot have dropped their guards, then replays the changes
    /// on that copy ([`crate::leftright`]).
    pub fn publish(&mut self) -> u64 {
        self.inner.publish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Action, Match, PortRange};
    use core::net::Ipv4Addr;

    fn rule(id: u32, port: u16) -> Rule {
        Rule {
            id: RuleId(id),
            priority: id,
            m: Match { dport: PortRange::exact(port), ..Match::ANY },
            action: Action::Allow,
            cookie: 0,
        }
    }

    #[test]
    fn publish_makes_a_batch_visible_with_a_new_generation() {
        let mut w = RuleSetWriter::new(Classifier::new());
        let r = w.reader();
        let k = FlowKey::v4(0, Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), 6, 1, 80);
        w.insert(rule(1, 80)).unwrap();
        assert_eq!(w.insert(rule(1, 81)), Err(ClassifyError::DuplicateId(RuleId(1))));
        let before = r.load();
        assert_eq!(before.gen(), 0);
        assert!(before.lookup(&k).is_none(), "staged changes are invisible");
        drop(before);
        assert_eq!(w.publish(), 1);
        let s = r.load();
        assert_eq!((s.gen(), s.lookup(&k).map(|r| r.id)), (1, Some(RuleId(1))));
        drop(s);
        w.remove(RuleId(1)).unwrap();
        w.insert(rule(2, 80)).unwrap();
        assert_eq!(w.publish(), 2);
        assert_eq!(r.load().lookup(&k).map(|r| r.id), Some(RuleId(2)));
        // Both copies agree after the replay.
        assert_eq!(w.staged().len(), 1);
        assert_eq!(w.staged().get(RuleId(2)), r.load().classifier().get(RuleId(2)));
    }

    #[test]
    fn concurrent_readers_never_see_half_a_batch() {
        // Each batch moves a pair of rules (ids 2p, 2p+1) in or out together;
        // a reader must always see both or neither, and generations never go
        // back. Readers do a fixed number of loads; the writer publishes until
        // they are done.
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let mut w = RuleSetWriter::new(Classifier::new());
        let done = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..2 {
            let r = w.reader();
            let done = done.clone();
            handles.push(std::thread::spawn(move || {
                let mut gens = std::collections::BTreeSet::new();
                let mut last = 0;
                for _ in 0..20_000 {
                    let s = r.load();
                    assert!(s.gen() >= last);
                    last = s.gen();
                    gens.insert(last);
                    for p in 0..8u32 {
                        let a = s.classifier().get(RuleId(2 * p)).is_some();
                        let b = s.classifier().get(RuleId(2 * p + 1)).is_some();
                        assert_eq!(a, b, "gen {} shows half of pair {p}", s.gen());
                    }
                }
                done.fetch_add(1, Relaxed);
                gens.len()
            }));
        }
        let mut n = 0u32;
        while done.load(Relaxed) < 2 {
            let p = n % 8;
            if w.staged().get(RuleId(2 * p)).is_some() {
                w.remove(RuleId(2 * p)).unwrap();
                w.remove(RuleId(2 * p + 1)).unwrap();
            } else {
                w.insert(rule(2 * p, p as u16)).unwrap();
                w.insert(rule(2 * p + 1, p as u16)).unwrap();
            }
            assert_eq!(w.publish(), n as u64 + 1);
            n += 1;
        }
        for h in handles {
            assert!(h.join().unwrap() >= 1);
        }
        // The two copies hold the same rules after all the replays.
        let r = w.reader();
        let live = r.load();
        assert_eq!(live.classifier().len(), w.staged().len());
        for x in w.staged().iter() {
            assert_eq!(live.classifier().get(x.id), Some(x));
        }
    }
}
