//! Rule-set generations: how the control thread publishes classifier changes
//! to the poll-mode lcores without ever blocking them.
//!
//! A left-right double buffer over [`arc_swap::ArcSwap`]:
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

use arc_swap::{ArcSwap, Guard};

use crate::classify::{Classifier, ClassifyError, BURST};
use crate::key::FlowKey;
use crate::rule::{Rule, RuleId, RuleLookup};

/// One published rule-set generation: immutable while readers hold it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    gen: u64,
    cls: Classifier,
}

impl Snapshot {
    /// The generation: strictly increasing with every publish (the first is 0).
    /// Exact-match cache and conntrack entries record it and treat an older
    /// one as a miss.
    #[inline]
    pub fn gen(&self) -> u64 {
        self.gen
    }
    /// The classifier of this generation.
    #[inline]
    pub fn classifier(&self) -> &Classifier {
        &self.cls
    }
    /// Batch lookup; see [`Classifier::lookup_batch`].
    #[inline]
    pub fn lookup_batch<'a>(&'a self, keys: &[FlowKey; BURST], live: u32, out: &mut [Option<&'a Rule>; BURST]) -> u32 {
        self.cls.lookup_batch(keys, live, out)
    }
}

impl RuleLookup for Snapshot {
    #[inline]
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        self.cls.lookup(k)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Insert(Rule),
    Remove(RuleId),
}

/// The single writer (the control thread). Not `Clone`: there is one.
#[derive(Debug)]
pub struct RuleSetWriter {
    shared: Arc<ArcSwap<Snapshot>>,
    /// The copy no reader can see; always uniquely owned between calls.
    /// `None` only inside `publish`.
    spare: Option<Arc<Snapshot>>,
    /// Ops applied to `spare` since the last publish.
    log: Vec<Op>,
    gen: u64,
}

/// A reader handle (one per lcore; cheap to clone).
#[derive(Debug, Clone)]
pub struct RuleSetReader {
    shared: Arc<ArcSwap<Snapshot>>,
}

impl RuleSetReader {
    /// The current snapshot. Wait-free; hold the guard for one burst at most
    /// (the writer's next publish waits for it).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.shared.load()
    }
    /// The generation currently published.
    pub fn gen(&self) -> u64 {
        self.shared.load().gen
    }
}

impl RuleSetWriter {
    /// Publishes `initial` as generation 0.
    pub fn new(initial: Classifier) -> Self {
        let live = Arc::new(Snapshot { gen: 0, cls: initial.clone() });
        let spare = Arc::new(Snapshot { gen: 0, cls: initial });
        RuleSetWriter { shared: Arc::new(ArcSwap::new(live)), spare: Some(spare), log: Vec::new(), gen: 0 }
    }

    /// A new reader handle.
    pub fn reader(&self) -> RuleSetReader {
        RuleSetReader { shared: self.shared.clone() }
    }

    fn spare(&mut self) -> &mut Snapshot {
        let s = self.spare.as_mut().expect("a spare exists outside publish");
        Arc::get_mut(s).expect("the spare snapshot is never shared")
    }

    /// Stages an insert (visible to readers at the next [`Self::publish`]).
    ///
    /// # Errors
    /// [`ClassifyError::DuplicateId`] if the id is present in the staged set.
    pub fn insert(&mut self, rule: Rule) -> Result<(), ClassifyError> {
        self.spare().cls.insert(rule)?;
        self.log.push(Op::Insert(rule));
        Ok(())
    }

    /// Stages a removal; returns the rule if it was present in the staged set.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let r = self.spare().cls.remove(id)?;
        self.log.push(Op::Remove(id));
        Some(r)
    }

    /// The staged rule set (what the next publish makes visible).
    pub fn staged(&self) -> &Classifier {
        &self.spare.as_ref().expect("a spare exists outside publish").cls
    }

    /// The generation of the last publish.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// True if there are staged changes.
    pub fn dirty(&self) -> bool {
        !self.log.is_empty()
    }

    /// Makes every staged change visible at once as a new generation, and
    /// returns it. Blocks the writer (never a reader) until the readers of the
    /// previous snapshot have dropped their guards, then replays the changes
    /// on that copy.
    pub fn publish(&mut self) -> u64 {
        self.gen += 1;
        self.spare().gen = self.gen;
        // The writer keeps no reference to the published copy (it gets it back
        // as `old` at the next publish).
        let fresh = self.spare.take().expect("a spare exists outside publish");
        // The swap settles arc-swap's outstanding debts on `old`: from here on
        // its strong count counts every reader still holding it.
        let mut old = self.shared.swap(fresh);
        let mut spins = 0u32;
        let cls = loop {
            if let Some(s) = Arc::get_mut(&mut old) {
                break &mut s.cls;
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        for op in self.log.drain(..) {
            match op {
                Op::Insert(r) => {
                    cls.insert(r).expect("replay of an insert that succeeded on the twin copy");
                }
                Op::Remove(id) => {
                    cls.remove(id).expect("replay of a remove that succeeded on the twin copy");
                }
            }
        }
        self.spare = Some(old);
        self.gen
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
