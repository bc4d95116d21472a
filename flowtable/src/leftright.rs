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
//! cached: load()     -> the copy it holds, revalidated by one relaxed load
//! ```
//! A reader never blocks and never sees half a batch. Updates stay incremental
//! (each op is applied twice, once per copy); nothing is cloned after `new`,
//! except when a cached reader has not let go of the old copy within
//! [`PIN_WAIT`] (then the live copy is cloned into a new spare).
//!
//! Why two kinds of reader: a guard (`load`) costs a store and a full fence
//! per call (arc-swap's debt slot), which after a burst of vhost copies drains
//! a full store buffer: 3 % of the cycles of a vhost forwarding lcore. A
//! lcore polls without pause, so it can hold the copy between bursts and
//! check it once per poll round instead ([`CachedReader`]).

use arc_swap::{ArcSwap, Cache, Guard};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long [`Writer::publish`] waits for readers to let go of the old copy
/// before it clones the live one instead. Guards are held for one burst and
/// polling [`CachedReader`]s revalidate every round, so this is only reached
/// when a cached reader is not polling (or its thread is not running).
pub const PIN_WAIT: Duration = Duration::from_millis(10);

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
    clones: u64,
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

    /// A reader that holds the current copy between calls (for a polling
    /// lcore; see [`CachedReader`]).
    pub fn cached(&self) -> CachedReader<T> {
        CachedReader { cache: Cache::new(self.shared.clone()) }
    }
}

/// A reader that keeps the copy it last saw: [`load`](Self::load) is one
/// relaxed load and a compare while nothing was published (no atomic
/// read-modify-write, no fence); a new generation is picked up by the first
/// `load` after its publish.
///
/// It pins that copy until its next `load`, and a publish waits (up to
/// [`PIN_WAIT`]) for the old copy to be let go: call `load` every poll round,
/// busy or idle, and drop the reader when the thread stops polling.
pub struct CachedReader<T> {
    cache: Cache<Arc<ArcSwap<Versioned<T>>>, Arc<Versioned<T>>>,
}

impl<T> CachedReader<T> {
    /// The current generation (revalidated now).
    #[inline]
    pub fn load(&mut self) -> &Versioned<T> {
        self.cache.load()
    }
}

impl<T> core::fmt::Debug for CachedReader<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CachedReader")
    }
}

impl<T: Absorb + Clone> Writer<T> {
    /// Publishes `initial` as generation 0.
    pub fn new(initial: T) -> Self {
        let live = Arc::new(Versioned { gen: 0, data: initial.clone() });
        Writer {
            shared: Arc::new(ArcSwap::new(live)),
            spare: Some(Arc::new(Versioned { gen: 0, data: initial })),
            log: Vec::new(),
            gen: 0,
            clones: 0,
        }
    }
}

impl<T: Absorb + Clone> Writer<T> {
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
    /// previous copy have let go of it (guards dropped, cached readers
    /// revalidated), then replays the log on it; after [`PIN_WAIT`] it clones
    /// the live copy as the next spare instead.
    pub fn publish(&mut self) -> u64 {
        self.gen += 1;
        let gen = self.gen;
        self.spare_mut().gen = gen;
        let fresh = self.spare.take().expect("spare present between calls");
        // The swap settles arc-swap's outstanding debts on `old`: from here on
        // its strong count counts every reader still holding it.
        let mut old = self.shared.swap(fresh);
        let since = Instant::now();
        let mut spins = 0u32;
        while Arc::get_mut(&mut old).is_none() {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else if since.elapsed() < PIN_WAIT {
                std::thread::yield_now();
            } else {
                // A cached reader that is not polling still holds the old
                // copy: leave it to that reader and clone the live one.
                let live = self.shared.load_full();
                self.spare = Some(Arc::new(Versioned { gen, data: live.data.clone() }));
                self.log.clear();
                self.clones += 1;
                return gen;
            }
        }
        let v = Arc::get_mut(&mut old).expect("checked just above");
        for op in self.log.drain(..) {
            v.data.absorb(&op).expect("replay of an op that succeeded on the twin copy");
        }
        v.gen = gen;
        self.spare = Some(old);
        gen
    }

    /// How many publishes cloned the live copy because a reader held the old
    /// one past [`PIN_WAIT`].
    pub fn clones(&self) -> u64 {
        self.clones
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
        // Reader 0 takes a guard per round, reader 1 keeps a cached copy.
        let hs: Vec<_> = (0..2)
            .map(|k| {
                let r = w.reader();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut cached = (k == 1).then(|| r.cached());
                    let mut gens = std::collections::BTreeSet::new();
                    let mut last = 0;
                    for _ in 0..20_000 {
                        let guard;
                        let s: &Versioned<Pairs> = match cached.as_mut() {
                            Some(c) => c.load(),
                            None => {
                                guard = r.load();
                                &guard
                            }
                        };
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

    #[test]
    fn a_cached_reader_that_stops_polling_costs_the_writer_a_clone_never_a_hang() {
        let mut w = Writer::new(Pairs::default());
        let mut c = w.reader().cached();
        w.apply((true, 1)).unwrap();
        w.publish();
        assert_eq!(w.clones(), 1, "the reader pinned generation 0 when it was made");
        assert_eq!((c.load().gen(), c.load().0.clone()), (1, vec![1]));
        // `c` now pins generation 1 and does not poll: publishing generation 2
        // cannot reuse that copy.
        w.apply((true, 2)).unwrap();
        let t = Instant::now();
        assert_eq!(w.publish(), 2);
        assert!(t.elapsed() >= PIN_WAIT, "it waited for the reader first");
        assert_eq!(w.clones(), 2);
        assert_eq!(c.load().0, vec![1, 2], "the reader moves on at its next load");
        assert_eq!(w.staged(), c.load().data(), "the cloned spare equals the live copy");
        // Polling on its own thread, it lets go of each old copy in time: the
        // writer replays its log instead of cloning (all but rarely, when the
        // poller is descheduled for longer than PIN_WAIT).
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                loop {
                    // Acquire: a load after the stop sees the last publish.
                    let stopping = stop.load(std::sync::atomic::Ordering::Acquire);
                    let s = c.load();
                    assert!(s.gen() >= last);
                    last = s.gen();
                    if stopping {
                        return last;
                    }
                }
            })
        };
        let before = w.clones();
        for v in 10..60 {
            w.apply((true, v)).unwrap();
            w.publish();
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(poller.join().unwrap(), 52, "the poller saw the last generation");
        assert!(w.clones() - before < 50, "a polling reader let go of old copies ({} clones of 50)", w.clones() - before);
        let mut want = vec![1, 2];
        want.extend(10..60);
        assert_eq!(w.reader().load().0, want);
        assert_eq!(w.staged(), w.reader().load().data(), "the copies agree");
    }
}
