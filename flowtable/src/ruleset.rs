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

use crate::classify::{Classifier, ClassifyError, Compiled, BURST};
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
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert a rule.
    Insert(Rule),
    /// Remove a rule (absent: nothing happens).
    Remove(RuleId),
    /// Install a compiled core ([`Classifier::install`]).
    Install(Arc<Compiled>),
}

impl Absorb for Classifier {
    type Op = Op;
    type Error = ClassifyError;
    fn absorb(&mut self, op: &Op) -> Result<(), ClassifyError> {
        match op {
            Op::Insert(r) => self.insert(*r),
            Op::Remove(id) => {
                self.remove(*id);
                Ok(())
            }
            Op::Install(core) => {
                self.install(core.clone());
                Ok(())
            }
        }
    }
}

/// The single writer (the control thread). Not `Clone`: there is one.
#[derive(Debug)]
pub struct RuleSetWriter {
    inner: Writer<Classifier>,
    /// A compile running on its own thread.
    compiling: Option<std::thread::JoinHandle<Compiled>>,
    /// Compiles started and installed.
    compiles: (u64, u64),
}

/// Whether the staged classifier has drifted enough from its compiled core
/// to compile a new one: more than 32 compilable rules in the delta and more
/// than 1/16 of the compiled ones, or a quarter of the compiled rules deleted.
/// Rules no compile would take (identities, IPv6, left out) never start one.
fn wants_compile(c: &Classifier) -> bool {
    let compiled = c.compiled().map_or(0, |k| k.len());
    let live = c.compiled_len();
    let drift = c.drift();
    (drift > 32 && drift > live / 16) || (compiled > 32 && compiled - live > compiled / 4)
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
        RuleSetWriter { inner: Writer::new(initial), compiling: None, compiles: (0, 0) }
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
    ///
    /// Also keeps the compiled core fresh, off the update path: a compile
    /// that has finished is installed first (part of this generation), and
    /// when the changes since the last one have piled up (see
    /// `wants_compile`) a new compile of the staged rules starts on its own
    /// thread. Neither waits for a compile.
    pub fn publish(&mut self) -> u64 {
        if self.compiling.as_ref().is_some_and(|h| h.is_finished()) {
            let h = self.compiling.take().expect("checked");
            // A compile that panicked leaves the current core in place.
            if let Ok(core) = h.join() {
                self.inner.apply(Op::Install(Arc::new(core))).expect("install cannot fail");
                self.compiles.1 += 1;
            }
        }
        let gen = self.inner.publish();
        if self.compiling.is_none() && wants_compile(self.inner.staged()) {
            let input = self.inner.staged().compile_input();
            let t = std::thread::Builder::new().name("ft-compile".into()).spawn(move || Compiled::build(input));
            // Without a thread there is no compile: the delta serves on.
            if let Ok(h) = t {
                self.compiling = Some(h);
                self.compiles.0 += 1;
            }
        }
        gen
    }

    /// Compiles (started, installed) by [`Self::publish`].
    pub fn compiles(&self) -> (u64, u64) {
        self.compiles
    }

    /// Waits for a running compile to finish (tests, orderly shutdown); the
    /// next [`Self::publish`] installs it.
    pub fn wait_compile(&mut self) {
        if let Some(h) = self.compiling.as_ref() {
            while !h.is_finished() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
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
    fn compiles_run_off_the_update_path_and_keep_later_changes() {
        use crate::rule::{LinearClassifier, Prefix};
        let mut w = RuleSetWriter::new(Classifier::new());
        let r = w.reader();
        let mut lin = LinearClassifier::new();
        let rule = |id: u32, prio: u32| Rule {
            id: RuleId(id),
            priority: prio,
            m: Match { dst: Prefix::v4(0x0a00_0000 | (id % 50) << 8, 24), dport: PortRange::exact(80 + (id % 7) as u16), ..Match::ANY },
            action: Action::Allow,
            cookie: 0,
        };
        for id in 0..300 {
            w.insert(rule(id, id % 13)).unwrap();
            lin.insert(rule(id, id % 13));
        }
        w.publish();
        assert_eq!(w.compiles(), (1, 0), "300 rules in the delta start a compile");
        // Changes while it runs: deletes, a changed rule, new rules.
        for id in (0..300).step_by(3) {
            assert_eq!(w.remove(RuleId(id)), lin.remove(RuleId(id)));
        }
        assert_eq!(w.remove(RuleId(1)), lin.remove(RuleId(1)));
        w.insert(rule(1, 99)).unwrap();
        lin.insert(rule(1, 99));
        for id in 300..310 {
            w.insert(rule(id, 5)).unwrap();
            lin.insert(rule(id, 5));
        }
        w.wait_compile();
        w.publish();
        assert_eq!(w.compiles().1, 1, "the finished compile is installed");
        let keys: Vec<FlowKey> = (0..60u32)
            .flat_map(|i| (78..90).map(move |p| FlowKey::v4(0, Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(10, 0, i as u8, 9), 6, 1000, p)))
            .collect();
        let snap = r.load();
        let c = snap.classifier();
        assert!(c.stats().compiled > 0 && c.delta_len() >= 11, "compiled {} delta {}", c.stats().compiled, c.delta_len());
        for k in &keys {
            assert_eq!(c.lookup(k), lin.lookup(k), "{k:?}");
            assert_eq!(w.staged().lookup(k), lin.lookup(k), "{k:?}");
        }
        assert_eq!((c.len(), w.staged().len()), (lin.len(), lin.len()));
    }

    #[test]
    fn rules_the_core_cannot_hold_start_no_compile() {
        let mut w = RuleSetWriter::new(Classifier::new());
        for id in 0..100 {
            let m = Match { src_id: Some(id), dport: PortRange::exact(80), ..Match::ANY };
            w.insert(Rule { id: RuleId(id), priority: 1, m, action: Action::Allow, cookie: 0 }).unwrap();
        }
        w.publish();
        w.publish();
        assert_eq!(w.compiles(), (0, 0));
        assert_eq!((w.staged().drift(), w.staged().delta_len()), (0, 100));
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
