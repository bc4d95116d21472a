//! Left-right publication of any state the control thread updates and the
//! lcores read: two copies, one live and one spare, kept equal by replaying an
//! operation log (the protocol [`crate::ruleset`] uses for one classifier,
//! generalised to whole dataplane states).
//!
//! ```text
//! writer: apply(op)  -> absorbed by the spare copy (nobody reads it) + logged
//!         publish()  -> spare.gen = ++gen; swap it in (one atomic store);
//!                       wait until readers of the old copy let go (guards are
//!                       held for one burst); replay the log on it; it is the
//!                       new spare
//! reader: load()     -> a guard on the current Versioned<T>, once per burst
//! ```
//! A reader never blocks and never sees half a batch. Updates stay incremental
//! (each op is applied twice, once per copy); nothing is cloned after `new`.

use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;

/// State that absorbs operations.
pub trait Absorb {
    /// One change.
    type Op;
    /// Why a change was refused.
    type Error: core::fmt::Debug;
    /// Applies `op`. On error the state must be unchanged; an op that succeeded
    /// once must succeed again on an equal state (it is replayed on the twin).
    fn absorb(&mut self, op: &Self::Op) -> Result<(), Self::Error>;
}

/// One published generation of `T`.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    gen: u64,
    data: T,
}

impl<T> Versioned<T> {
    /// The generation (strictly increasing with every publish; the first is 0).
    #[inline]
    pub fn gen(&self) -> u64 {
        self.gen
    }
    /// The state.
    #[inline]
    pub fn data(&self) -> &T {
        &self.data
    }
}

impl<T> core::ops::Deref for Versioned<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.data
    }
}

/// The single writer.
#[derive(Debug)]
pub struct Writer<T: Absorb> {
    shared: Arc<ArcSwap<Versioned<T>>>,
    spare: Option<Arc<Versioned<T>>>,
    log: Vec<T::Op>,
    gen: u64,
}

/// A reader handle (one per lcore; cheap to clone).
#[derive(Debug)]
pub struct Reader<T> {
    shared: Arc<ArcSwap<Versioned<T>>>,
}

impl<T> Clone for Reader<T> {
    fn clone(&self) -> Self {
        Reader { shared: self.shared.clone() }
    }
}

impl<T> Reader<T> {
    /// The current generation. Wait-free; hold the guard for one burst at most.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Versioned<T>>> {
        self.shared.load()
    }
}

impl<T: Absorb + Clone> Writer<T> {
    /// Publishes `initial` as generation 0.
    pub fn new(initial: T) -> Self {
        let live = Arc::new(Versioned { gen: 0, data: initial.clone() });
        Writer { shared: Arc::new(ArcSwap::new(live)), spare: Some(Arc::new(Versioned { gen: 0, data: initial })), log: Vec::new(), gen: 0 }
    }
}

impl<T: Absorb> Writer<T> {
    /// A new reader.
    pub fn reader(&self) -> Reader<T> {
        Reader { shared: self.shared.clone() }
    }

    fn spare_mut(&mut self) -> &mut Versioned<T> {
        Arc::get_mut(self.spare.as_mut().expect("spare present between calls")).expect("the spare copy is never shared")
    }

    /// Stages `op` (visible to readers at the next [`Self::publish`]).
    ///
    /// # Errors
    /// Whatever the state refuses; nothing is staged then.
    pub fn apply(&mut self, op: T::Op) -> Result<(), T::Error> {
        self.spare_mut().data.absorb(&op)?;
        self.log.push(op);
        Ok(())
    }

    /// The staged state (what the next publish makes visible).
    pub fn staged(&self) -> &T {
        &self.spare.as_ref().expect("spare present between calls").data
    }

    /// The generation of the last publish.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// True if there are staged changes.
    pub fn dirty(&self) -> bool {
        !self.log.is_empty()
    }

    /// Makes every staged change visible at once as a new generation and
    /// returns it. Blocks the writer (never a reader) until the readers of the
    /// previous copy have dropped their guards, then replays the log on it.
    pub fn publish(&mut self) -> u64 {
        self.gen += 1;
        let gen = self.gen;
        self.spare_mut().gen = gen;
        let fresh = self.spare.take().expect("spare present between calls");
        // The swap settles arc-swap's outstanding debts on `old`: from here on
        // its strong count counts every reader still holding it.
        let mut old = self.shared.swap(fresh);
        let mut spins = 0u32;
        let v = loop {
            if let Some(v) = Arc::get_mut(&mut old) {
                break v;
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        for op in self.log.drain(..) {
            v.data.absorb(&op).expect("replay of an op that succeeded on the twin copy");
        }
        v.gen = gen;
        self.spare = Some(old);
        gen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Pairs(Vec<u32>);
    impl Absorb for Pairs {
        type Op = (bool, u32);
        type Error = &'static str;
        fn absorb(&mut self, &(add, v): &(bool, u32)) -> Result<(), &'static str> {
            if add {
                if self.0.contains(&v) {
                    return Err("present");
                }
                self.0.push(v);
            } else {
                let i = self.0.iter().position(|x| *x == v).ok_or("absent")?;
                self.0.remove(i);
            }
            Ok(())
        }
    }

    #[test]
    fn batches_appear_whole_with_their_generation() {
        let mut w = Writer::new(Pairs::default());
        let r = w.reader();
        w.apply((true, 1)).unwrap();
        assert_eq!(w.apply((true, 1)), Err("present"));
        assert_eq!(r.load().gen(), 0);
        assert!(r.load().0.is_empty(), "staged changes are invisible");
        assert_eq!(w.publish(), 1);
        assert_eq!((r.load().gen(), r.load().0.clone()), (1, vec![1]));
        w.apply((false, 1)).unwrap();
        w.apply((true, 2)).unwrap();
        w.publish();
        assert_eq!(r.load().0, vec![2]);
        assert_eq!(w.staged(), &Pairs(vec![2]), "both copies agree after the replay");
    }

    #[test]
    fn concurrent_readers_see_pairs_whole_and_generations_rise() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let mut w = Writer::new(Pairs::default());
        let done = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let r = w.reader();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut gens = std::collections::BTreeSet::new();
                    let mut last = 0;
                    for _ in 0..20_000 {
                        let s = r.load();
                        assert!(s.gen() >= last);
                        last = s.gen();
                        gens.insert(last);
                        for p in 0..4u32 {
                            assert_eq!(s.0.contains(&(2 * p)), s.0.contains(&(2 * p + 1)), "half a pair at gen {}", s.gen());
                        }
                    }
                    done.fetch_add(1, Relaxed);
                    gens.len()
                })
            })
            .collect();
        let mut round = 0u32;
        while done.load(Relaxed) < 2 {
            let p = round % 4;
            let add = (round / 4) & 1 == 0;
            w.apply((add, 2 * p)).unwrap();
            w.apply((add, 2 * p + 1)).unwrap();
            w.publish();
            round += 1;
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(w.gen(), u64::from(round));
        assert_eq!(w.staged(), w.reader().load().data(), "the copies agree");
    }
}
