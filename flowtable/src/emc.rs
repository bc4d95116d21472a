//! The exact-match cache: one per lcore, owned through `&mut`, no locks and
//! no atomics (OVS's EMC, with generations instead of a dead flag).
//!
//! ```text
//! hash -> primary bucket (low bits), preferred way (3 signature bits)
//!      -> that entry { key, gen, value } (64 bytes): live and the key? found
//!         (no bucket read: most flows sit in their preferred way)
//!      else primary bucket -> 8 signatures (high half | 1; 0 = empty), 16 bytes
//!      -> matching way -> entry -> full key compare
//!      no signature in the primary -> the alternate bucket (primary ^ high bits), same
//! entry.gen != current gen  => miss (decided under an older rule set)
//! ```
//!
//! An entry is one cache line: the key as the compare needs it (addresses,
//! one word of ports, in_port, VLAN id and key flags, the protocol), the low
//! half of the generation, a live bit (set while a signature names the
//! entry), and the value packed into 18.5 bytes
//! ([`CacheValue`]). With many flows the cache lives in memory, and each line
//! a hit reads is a miss: at 100,000 flows, 192-byte entries cost `bench fwd`
//! 20-25 cycles a packet more than 128-byte ones (2026-11-29; the 64-byte
//! entry's figures are in flowtable/DESIGN.md).
//!
//! Two choices per flow: an insert goes to the primary bucket while it has a
//! free or stale way, else to the alternate one; when both are full of
//! current entries, one of their entries moves to its own other bucket if
//! that has room (one cuckoo step), and only then does it evict (a
//! pseudo-random way of the two). With
//! one choice, a few of the 1,024 buckets of a default cache holding a couple
//! of thousand flows get more than 8 of them and those flows evict each other
//! for ever, each time taking the slow path again; with two choices the
//! chance that 16 ways overflow is negligible at that load. In its primary
//! bucket, a new flow takes its preferred way when that is empty, or held
//! by an entry that prefers another way (which moves to the victim's way);
//! a flow there costs one entry read and no bucket read. At a quarter load
//! (2,000 flows in 8,192 entries) 89 % of the flows sit there, at 100,000
//! in 262,144 83 %.
//!
//! The key compare covers what identifies a flow on the wire: addresses,
//! ports (ICMP type/code), protocol, in_port, VLAN and the key flags; not
//! `tcp_flags` (per packet) nor the identities (derived from the addresses).
//!
//! Insertion is probabilistic like OVS (`emc-insert-inv-prob`): a new flow
//! is cached with probability 1/N so that a flood of short flows does not
//! thrash the hot ones; an entry for the same key is always refreshed in
//! place (a flow already cached stays cached across generations). The victim
//! is an empty way, else one of an older generation, else a pseudo-random way.

use core::marker::PhantomData;

use crate::classify::BURST;
use crate::hint::prefetch;
use crate::key::FlowKey;

/// Ways per bucket.
pub const WAYS: usize = 8;

/// Size and insertion policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EmcConfig {
    /// Number of entries (rounded up to a power of two, at least [`WAYS`]).
    pub entries: usize,
    /// Insert a new flow with probability 1/N (1 = always; 0 is taken as 1).
    pub insert_inv_prob: u32,
}

impl Default for EmcConfig {
    fn default() -> Self {
        EmcConfig { entries: 8192, insert_inv_prob: 1 }
    }
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(16))]
struct Bucket {
    /// Way j's 16-bit signature at bits 16 * (j % 4) of word j / 4.
    sig: [u64; 2],
}

impl Bucket {
    #[inline(always)]
    fn way(&self, j: usize) -> u16 {
        (self.sig[j / 4] >> (16 * (j % 4))) as u16
    }

    #[inline(always)]
    fn set_way(&mut self, j: usize, sig: u16) {
        let (w, sh) = (j / 4, 16 * (j % 4));
        self.sig[w] = self.sig[w] & !(0xffff << sh) | u64::from(sig) << sh;
    }

    /// The ways holding `sig`: bit 16 * j + 15 set for way j. A SWAR compare
    /// of the two words (exact: no borrow crosses a lane), about a dozen
    /// instructions; LLVM's vectorisation of an eight-way loop took ~30.
    #[inline(always)]
    fn ways_of(&self, sig: u16) -> u128 {
        const H: u64 = 0x7fff_7fff_7fff_7fff;
        let all = u64::from(sig) * 0x0001_0001_0001_0001;
        let zero = |x: u64| !(((x & H) + H) | x | H);
        u128::from(zero(self.sig[0] ^ all)) | u128::from(zero(self.sig[1] ^ all)) << 64
    }
}

/// A value the cache can keep: 20 bits beside the key and 128 after it, so
/// that an entry is one 64-byte cache line and a hit reads one line (with
/// 100,000 flows each extra line cost `bench fwd` 20-25 cycles a packet).
pub trait CacheValue: Copy + Default {
    /// The value as (20 bits, 128 bits): the first below `1 << 20`.
    fn pack(&self) -> (u32, u128);
    /// The value [`CacheValue::pack`] gave these for.
    fn unpack(lo: u32, hi: u128) -> Self;
}

impl CacheValue for u32 {
    fn pack(&self) -> (u32, u128) {
        (0, u128::from(*self))
    }
    fn unpack(_: u32, hi: u128) -> Self {
        hi as u32
    }
}

impl CacheValue for u64 {
    fn pack(&self) -> (u32, u128) {
        (0, u128::from(*self))
    }
    fn unpack(_: u32, hi: u128) -> Self {
        hi as u64
    }
}

/// One cached flow in one cache line: what identifies it (addresses, ports,
/// in_port, VLAN, key flags, protocol), the low half of its generation and
/// its value.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Entry {
    src: u128,
    dst: u128,
    /// [`ports_of`] the key.
    ports: u64,
    /// [`proto_flags`] of the key (bits 0..11), the value's 20 bits, and
    /// [`LIVE`] while a signature in its bucket names it.
    lo: u32,
    /// The generation's low half; the cache is emptied when the high half
    /// moves (see [`Emc::era`]).
    gen: u32,
    /// The value's other 128 bits.
    hi: u128,
}

const _: () = assert!(core::mem::size_of::<Entry>() == 64);

/// Sport, dport, in_port and VLAN as one word: the key's four adjacent
/// fields as they lie in memory, so the compiler reads them with one load.
#[inline(always)]
fn ports_of(k: &FlowKey) -> u64 {
    u64::from(k.sport) | u64::from(k.dport) << 16 | u64::from(k.in_port) << 32 | u64::from(k.vlan) << 48
}

/// Bits of an entry's `lo` that hold [`proto_flags`].
const PROTO_FLAGS: u32 = (1 << 11) - 1;

/// The bit of an entry's `lo` set while its way's signature is set: a
/// lookup that reads the entry of a flow's preferred way straight away,
/// without its bucket, can tell a live entry from a removed one.
const LIVE: u32 = 1 << 31;

/// The protocol and the key flags, as they lie in memory (one 16-bit load).
/// An entry keeps 3 bits of flags (a parsed key has no more): a key with
/// more sets bits over [`PROTO_FLAGS`], so it never matches an entry, and
/// is never cached.
#[inline(always)]
fn proto_flags(k: &FlowKey) -> u32 {
    u32::from(k.proto) | u32::from(k.flags) << 8
}

impl Entry {
    /// True when this entry is live and `k`'s flow (whatever the generation).
    #[inline(always)]
    fn holds(&self, k: &FlowKey) -> bool {
        let addrs = (self.src ^ k.src) | (self.dst ^ k.dst);
        let rest = (self.ports ^ ports_of(k)) | u64::from((self.lo & (PROTO_FLAGS | LIVE)) ^ (proto_flags(k) | LIVE));
        (addrs == 0) & (rest == 0)
    }

    #[inline(always)]
    fn val<V: CacheValue>(&self) -> V {
        V::unpack((self.lo & !LIVE) >> 11, self.hi)
    }
}

/// True when two keys are the same flow for caching purposes.
///
/// Every field is compared, without early exits: on the hit path the keys are
/// equal, so a chain of branches only adds work (one compare and branch per
/// field; `perf` put ~11 % of a vhost lcore's own cycles here).
#[inline(always)]
pub fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    let addrs = (a.src ^ b.src) | (a.dst ^ b.dst);
    let ports = u64::from(a.sport ^ b.sport)
        | u64::from(a.dport ^ b.dport) << 16
        | u64::from(a.in_port ^ b.in_port) << 32
        | u64::from(a.vlan ^ b.vlan) << 48;
    let rest = (a.proto ^ b.proto) | (a.flags ^ b.flags);
    (addrs == 0) & (ports == 0) & (rest == 0)
}

/// The alternate bucket of `hash` in a table of `mask + 1` buckets: the
/// primary (`hash & mask`) with bits flipped by the flow's signature (the
/// hash's high half, odd), never the primary itself unless there is only
/// one bucket. An entry's other bucket is thus its bucket flipped by the
/// signature it keeps there ([`Emc::other`]). Shared with the connection
/// table, which takes two choices the same way.
#[inline(always)]
pub(crate) fn alternate_bucket(hash: u32, mask: usize) -> usize {
    (hash as usize ^ usize::from(sig_of(hash))) & mask
}

/// The primary and the alternate bucket of `hash`, once when they are the
/// same.
#[inline(always)]
pub(crate) fn both_buckets(hash: u32, mask: usize) -> impl Iterator<Item = usize> {
    let (p, a) = (hash as usize & mask, alternate_bucket(hash, mask));
    [p, a].into_iter().take(if p == a { 1 } else { 2 })
}

/// The high half of a generation (see [`Emc::era`]).
#[inline(always)]
fn era(gen: u64) -> u32 {
    (gen >> 32) as u32
}

/// A flow's signature in its buckets: the hash's high half (never 0, which
/// marks an empty way). 16 bits so that a bucket is 16 bytes, four to a cache
/// line, and its eight signatures compare as two 64-bit words; the low half picks
/// the bucket, so up to 2^16 buckets the two do not overlap.
#[inline(always)]
fn sig_of(hash: u32) -> u16 {
    (hash >> 16) as u16 | 1
}

/// The way a flow with signature `sig` prefers in its primary bucket (three
/// of the signature's bits above its lowest): there a lookup finds it with
/// one read, its entry's, and no read of the bucket.
#[inline(always)]
fn pref_way(sig: u16) -> usize {
    usize::from(sig >> 1) % WAYS
}

/// The exact-match cache over values `V` (the pipeline uses [`crate::act::FlowVerdict`]).
#[derive(Clone, Debug)]
pub struct Emc<V> {
    buckets: Box<[Bucket]>,
    entries: Box<[Entry]>,
    mask: usize,
    insert_inv: u32,
    rng: u32,
    /// The high half of the generations the entries were written under
    /// (they keep the low half): another one is a miss, and the first
    /// insert under it empties the cache. Exact, and a cost paid once per
    /// 2^32 generations.
    era: u32,
    _val: PhantomData<V>,
}

impl<V: CacheValue> Emc<V> {
    /// An empty cache.
    pub fn new(cfg: EmcConfig) -> Self {
        let n = cfg.entries.max(WAYS).next_power_of_two();
        let nb = n / WAYS;
        Emc {
            buckets: vec![Bucket::default(); nb].into_boxed_slice(),
            entries: vec![Entry::default(); n].into_boxed_slice(),
            mask: nb - 1,
            insert_inv: cfg.insert_inv_prob.max(1),
            rng: 0x9e37_79b9,
            era: 0,
            _val: PhantomData,
        }
    }

    /// Number of entries.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Entries in use (any generation). O(capacity): not for the data path.
    pub fn occupancy(&self) -> usize {
        self.buckets.iter().flat_map(|b| (0..WAYS).map(|j| b.way(j))).filter(|&s| s != 0).count()
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * core::mem::size_of::<Bucket>() + self.entries.len() * core::mem::size_of::<Entry>()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.entries.iter_mut().for_each(|e| e.lo &= !LIVE);
    }

    /// Sets way `i % WAYS` of bucket `i / WAYS` to `sig`; 0 empties it,
    /// and its entry is no longer live.
    #[inline]
    fn set_sig(&mut self, i: usize, sig: u16) {
        self.buckets[i / WAYS].set_way(i % WAYS, sig);
        if sig == 0 {
            self.entries[i].lo &= !LIVE;
        }
    }

    /// The entry a lookup of `hash` reads first: its preferred way in its
    /// primary bucket.
    #[inline(always)]
    fn direct(&self, hash: u32) -> usize {
        self.primary(hash) * WAYS + pref_way(sig_of(hash))
    }

    /// The primary bucket of `hash`.
    #[inline(always)]
    fn primary(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// The alternate bucket of `hash` (see [`alternate_bucket`]).
    #[inline(always)]
    fn alternate(&self, hash: u32) -> usize {
        alternate_bucket(hash, self.mask)
    }

    /// Ways of bucket `b` whose signature is `sig` ([`Bucket::ways_of`]:
    /// way = trailing zeros / 16).
    #[inline(always)]
    fn sig_ways(&self, b: usize, sig: u16) -> u128 {
        self.buckets[b].ways_of(sig)
    }

    #[inline(always)]
    fn find_in(&self, b: usize, key: &FlowKey, sig: u16) -> Option<usize> {
        let mut w = self.sig_ways(b, sig);
        while w != 0 {
            let i = b * WAYS + w.trailing_zeros() as usize / 16;
            w &= w - 1;
            if self.entries[i].holds(key) {
                return Some(i);
            }
        }
        None
    }

    #[inline(always)]
    fn find(&self, key: &FlowKey, hash: u32) -> Option<usize> {
        let sig = sig_of(hash);
        self.find_in(self.primary(hash), key, sig).or_else(|| self.find_in(self.alternate(hash), key, sig))
    }

    /// The value cached for `key` under generation `gen`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u32, gen: u64) -> Option<V> {
        if era(gen) != self.era {
            return None;
        }
        let e = &self.entries[self.find(key, hash)?];
        (e.gen == gen as u32).then(|| e.val())
    }

    /// Starts loading the entry a lookup of `hash` reads first (its
    /// preferred way), ahead of [`Emc::lookup_batch_runs`].
    #[inline(always)]
    pub fn prefetch(&self, hash: u32) {
        prefetch(&self.entries[self.direct(hash)]);
    }

    /// Looks up every lane set in `live` (bit i = `keys[i]`, `hashes[i]`),
    /// writing hits to `out` and returning the lanes that missed (absent or
    /// of another generation). Passes so that memory latency overlaps across
    /// the burst: prefetch each lane's preferred entry; compare keys and
    /// generations there; for the lanes not found, match signatures and
    /// prefetch the candidate entries, then compare.
    ///
    /// A lane whose flow is the previous live lane's (a train of one flow's
    /// packets, common from VMs and bulk transfers) takes that lane's answer
    /// without a lookup of its own: a hash compare per lane, and a key
    /// compare when the hashes agree.
    #[inline]
    pub fn lookup_batch(
        &self,
        keys: &[FlowKey; BURST],
        hashes: &[u32; BURST],
        live: u32,
        gen: u64,
        out: &mut [V; BURST],
    ) -> u32 {
        self.lookup_batch_runs::<false>(keys, hashes, live, 0, gen, out, |_| {})
    }

    /// [`Emc::lookup_batch`] told that the lanes in `runs` hold the same flow
    /// as the previous live lane (the caller knows it, as the pipeline does
    /// from its parser): they are the caller's, who takes their run's first
    /// lane's answer. Nothing is done for them: their `keys`, `hashes` and
    /// `out` entries are neither read nor written, and the lanes returned
    /// (missed) are among `live & !runs`. (Done for each follower here, the
    /// pass over it and the copy of its answer cost a one-flow burst about
    /// 5 cycles a packet, perf in `bench fwd`.)
    ///
    /// `on_hit(v)` is called for each lane answered by a lookup of its own,
    /// as soon as its entry is verified: the caller can start loading what
    /// the value points to while the rest of the burst is compared (the
    /// pipeline prefetches the hit's connection).
    ///
    /// `PREFETCHED`: the caller has already started loading each lane's
    /// first entry ([`Emc::prefetch`], as the pipeline does while it
    /// parses), so the lookup does not again.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn lookup_batch_runs<const PREFETCHED: bool>(
        &self,
        keys: &[FlowKey; BURST],
        hashes: &[u32; BURST],
        live: u32,
        runs: u32,
        gen: u64,
        out: &mut [V; BURST],
        mut on_hit: impl FnMut(&V),
    ) -> u32 {
        let live = live & !runs;
        if era(gen) != self.era {
            return live;
        }
        // `lead[i]`: the first lane of lane i's run (followers only), which
        // `prev` names while the run lasts.
        let mut lead = [0u8; BURST];
        let mut follow = 0u32;
        let mut prev: Option<usize> = None;
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(p) = prev {
                if hashes[i] == hashes[p] && same_flow(&keys[i], &keys[p]) {
                    lead[i] = p as u8;
                    follow |= 1 << i;
                    continue;
                }
            }
            prev = Some(i);
            if !PREFETCHED {
                prefetch(&self.entries[self.direct(hashes[i])]);
            }
        }
        let miss = self.lookup_leaders(keys, hashes, live & !follow, gen, out, &mut on_hit);
        let mut miss_all = miss;
        let mut m = follow;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let l = lead[i] as usize;
            if miss & (1 << l) != 0 {
                miss_all |= 1 << i;
            } else {
                out[i] = out[l];
            }
        }
        miss_all
    }

    /// The key passes of [`Emc::lookup_batch`] over the lanes in `live`,
    /// whose preferred entries ([`Emc::direct`]) are being prefetched: those
    /// entries first; for the lanes not found there, the signatures of their
    /// primary buckets, then the entries they name.
    #[inline(always)]
    fn lookup_leaders(
        &self,
        keys: &[FlowKey; BURST],
        hashes: &[u32; BURST],
        live: u32,
        gen: u64,
        out: &mut [V; BURST],
        on_hit: &mut impl FnMut(&V),
    ) -> u32 {
        let mut miss = 0u32;
        // Lane i's answer from entry `e`, which holds its key: its value if
        // current, else a miss. (A macro: as a closure or a method, LLVM laid
        // the loop out with ~11 more instructions a packet, callgrind.)
        macro_rules! settle {
            ($i:expr, $e:expr) => {
                if $e.gen == gen as u32 {
                    out[$i] = $e.val();
                    on_hit(&out[$i]);
                } else {
                    miss |= 1 << $i;
                }
            };
        }
        let mut rest = 0u32;
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let e = &self.entries[self.direct(hashes[i])];
            if e.holds(&keys[i]) {
                settle!(i, e);
                continue;
            }
            rest |= 1 << i;
            prefetch(&self.buckets[self.primary(hashes[i])]);
        }
        if rest == 0 {
            return miss;
        }
        let mut cand = [0u32; BURST];
        let mut ways = 0u32;
        let mut m = rest;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let b = self.primary(hashes[i]);
            let w = self.sig_ways(b, sig_of(hashes[i]));
            if w != 0 {
                ways |= 1 << i;
                let e = b * WAYS + w.trailing_zeros() as usize / 16;
                cand[i] = e as u32;
                prefetch(&self.entries[e]);
            }
        }
        let mut m = rest;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let e = &self.entries[cand[i] as usize];
            if ways & (1 << i) != 0 && e.holds(&keys[i]) {
                settle!(i, e);
                continue;
            }
            // No signature in the primary bucket (the flow may sit in its
            // alternate), or a signature collision on the first candidate.
            match self.find(&keys[i], hashes[i]) {
                Some(e) => settle!(i, self.entries[e]),
                None => miss |= 1 << i,
            }
        }
        miss
    }

    #[inline]
    fn next_rand(&mut self) -> u32 {
        // xorshift32: per-cache, deterministic, no shared state.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    /// An empty way of bucket `b`, else one holding an entry of another
    /// generation than `gen`, as an entry index.
    fn free_way(&self, b: usize, gen: u64) -> Option<usize> {
        let bucket = &self.buckets[b];
        let w = (0..WAYS).position(|j| bucket.way(j) == 0).or_else(|| (0..WAYS).find(|&w| self.entries[b * WAYS + w].gen != gen as u32))?;
        Some(b * WAYS + w)
    }

    /// A way for a new flow with signature `sig` in its primary bucket `p`,
    /// as an entry index, when the bucket has an empty or stale way (the
    /// victims [`Emc::free_way`] picks): its preferred way if that is the
    /// one, or empty; else, unless a current entry holds it as its own
    /// preferred way, the entry there moves to the victim's way (its buckets
    /// stay the same) and the new flow takes the preferred way.
    fn free_way_pref(&mut self, p: usize, sig: u16, gen: u64) -> Option<usize> {
        let i = p * WAYS + pref_way(sig);
        let theirs = self.buckets[p].way(i % WAYS);
        if theirs == 0 {
            return Some(i);
        }
        let free = self.free_way(p, gen)?;
        if free == i || (pref_way(theirs) == i % WAYS && self.entries[i].gen == gen as u32) {
            return Some(free);
        }
        self.entries[free] = self.entries[i];
        self.set_sig(free, theirs);
        Some(i)
    }

    /// The other bucket of an entry sitting in bucket `b` with signature
    /// `sig` (see [`alternate_bucket`]).
    #[inline(always)]
    fn other(&self, b: usize, sig: u16) -> usize {
        (b ^ usize::from(sig)) & self.mask
    }

    /// Both buckets of a new flow are full of current entries: moves one of
    /// them to its own other bucket if that has a free or stale way (one
    /// cuckoo step), returning the way it left.
    fn make_room(&mut self, p: usize, a: usize, gen: u64) -> Option<usize> {
        for b in [p, a] {
            for w in 0..WAYS {
                let sig = self.buckets[b].way(w);
                let o = self.other(b, sig);
                if o == b {
                    continue;
                }
                if let Some(to) = self.free_way(o, gen) {
                    let from = b * WAYS + w;
                    self.entries[to] = self.entries[from];
                    self.set_sig(to, sig);
                    return Some(from);
                }
            }
        }
        None
    }

    /// Caches `val` for `key` under `gen`. An entry for the same key is
    /// always overwritten; a new one is inserted with probability
    /// 1/`insert_inv_prob`. Returns true when something was written (never
    /// for a key with flags over 3 bits, which no parsed key has: the entry
    /// has no room for them).
    pub fn insert(&mut self, key: &FlowKey, hash: u32, gen: u64, val: V) -> bool {
        if proto_flags(key) & !PROTO_FLAGS != 0 {
            return false;
        }
        if era(gen) != self.era {
            self.clear();
            self.era = era(gen);
        }
        let i = match self.find(key, hash) {
            Some(i) => i,
            None => {
                // `is_multiple_of` needs Rust 1.87; the workspace supports 1.80.
                #[allow(unknown_lints, clippy::manual_is_multiple_of)]
                let skip = self.insert_inv > 1 && self.next_rand() % self.insert_inv != 0;
                if skip {
                    return false;
                }
                let (p, a, sig) = (self.primary(hash), self.alternate(hash), sig_of(hash));
                let i = match self.free_way_pref(p, sig, gen).or_else(|| self.free_way(a, gen)).or_else(|| self.make_room(p, a, gen)) {
                    Some(i) => i,
                    None => {
                        let r = self.next_rand() as usize;
                        let b = if r & WAYS == 0 { p } else { a };
                        b * WAYS + r % WAYS
                    }
                };
                self.set_sig(i, sig);
                i
            }
        };
        let (lo, hi) = val.pack();
        debug_assert!(lo >> 20 == 0, "a cache value packs 20 bits beside the key");
        self.entries[i] = Entry {
            src: key.src,
            dst: key.dst,
            ports: ports_of(key),
            lo: proto_flags(key) | lo << 11 | LIVE,
            gen: gen as u32,
            hi,
        };
        true
    }

    /// Removes the entry for `key`, if cached. Returns true when one was removed.
    pub fn remove(&mut self, key: &FlowKey, hash: u32) -> bool {
        match self.find(key, hash) {
            Some(i) => {
                self.set_sig(i, 0);
                true
            }
            None => false,
        }
    }

    /// Removes, from the two buckets of `hash`, every entry whose addresses
    /// are `src`/`dst` swapped and whose protocol is `proto`, whatever its
    /// ports and in_port: the reply-direction entries of a flow. The pipeline
    /// calls it when a connection is created, so that a drop cached for the
    /// reply direction before the connection existed cannot outlive it (the
    /// pipeline's hash is symmetric, so replies live in the same two buckets).
    pub fn remove_replies(&mut self, hash: u32, src: u128, dst: u128, proto: u8) -> usize {
        let mut n = 0;
        for b in both_buckets(hash, self.mask) {
            for w in 0..WAYS {
                let e = &self.entries[b * WAYS + w];
                if self.buckets[b].way(w) != 0 && e.src == dst && e.dst == src && e.lo as u8 == proto {
                    self.set_sig(b * WAYS + w, 0);
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn key(i: u32) -> FlowKey {
        FlowKey::v4(1, Ipv4Addr::from(0x0a00_0000 + i), Ipv4Addr::new(10, 9, 9, 9), 6, 1000 + i as u16, 80)
    }

    fn hash(k: &FlowKey) -> u32 {
        crate::parse::flow_hash(k, 0)
    }

    #[test]
    fn signature_compare_finds_exactly_the_matching_ways() {
        // Values that stress the SWAR compare: lanes equal to the signature
        // but for the top bit, the low bit or one middle bit, zero lanes
        // (borrow-prone neighbours) and all-ones.
        let sigs = [0x0001u16, 0x8001, 0x7fff, 0xffff, 0x8000, 0x0101, 0x4001, 0xfffe];
        let mut rng = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut b = Bucket::default();
            let mut ways = [0u16; WAYS];
            for (j, w) in ways.iter_mut().enumerate() {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let pick = sigs[rng as usize % sigs.len()];
                *w = if rng >> 28 == 0 { 0 } else if rng >> 27 & 1 == 1 { pick ^ (1 << (rng >> 8 & 15)) } else { pick };
                b.set_way(j, *w);
            }
            for &sig in &sigs {
                let got = b.ways_of(sig);
                let want = (0..WAYS).filter(|&j| ways[j] == sig).fold(0u128, |m, j| m | 1 << (16 * j + 15));
                assert_eq!(got, want, "ways {ways:04x?} sig {sig:04x}");
                assert!((0..WAYS).all(|j| b.way(j) == ways[j]));
            }
        }
    }

    #[test]
    fn hit_miss_and_generations() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 64, insert_inv_prob: 1 });
        assert_eq!(c.capacity(), 64);
        let k = key(1);
        assert_eq!(c.lookup(&k, hash(&k), 5), None);
        assert!(c.insert(&k, hash(&k), 5, 42));
        assert_eq!(c.lookup(&k, hash(&k), 5), Some(42));
        assert_eq!(c.lookup(&k, hash(&k), 6), None, "older generation is a miss");
        // tcp_flags and identities do not split a flow.
        let mut k2 = k;
        k2.tcp_flags = 0x10;
        k2.src_id = 9;
        assert_eq!(c.lookup(&k2, hash(&k), 5), Some(42));
        // in_port does.
        let mut k3 = k;
        k3.in_port = 2;
        assert_eq!(c.lookup(&k3, hash(&k), 5), None);
        // Refresh in place under the new generation: still one entry.
        assert!(c.insert(&k, hash(&k), 6, 43));
        assert_eq!(c.lookup(&k, hash(&k), 6), Some(43));
        assert_eq!(c.occupancy(), 1);
        assert!(c.remove(&k, hash(&k)));
        assert!(!c.remove(&k, hash(&k)));
        assert_eq!(c.lookup(&k, hash(&k), 6), None);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn batch_lookup_reports_miss_lanes() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 4096, insert_inv_prob: 1 });
        let mut keys = [FlowKey::default(); BURST];
        let mut hashes = [0u32; BURST];
        for i in 0..BURST {
            keys[i] = key(i as u32);
            hashes[i] = hash(&keys[i]);
            if i % 3 == 0 {
                c.insert(&keys[i], hashes[i], 1, i as u32 + 100);
            }
        }
        c.insert(&keys[1], hashes[1], 0, 7); // stale generation
        let mut out = [0u32; BURST];
        let live = !(1u32 << 30); // lane 30 not live
        let mut seen = Vec::new();
        let miss = c.lookup_batch_runs::<false>(&keys, &hashes, live, 0, 1, &mut out, |v| seen.push(*v));
        let mut hits = Vec::new();
        for i in 0..BURST {
            let expect_hit = i % 3 == 0 && i != 30;
            assert_eq!(miss & (1 << i) == 0, expect_hit || i == 30, "lane {i}");
            if expect_hit {
                assert_eq!(out[i], i as u32 + 100);
                hits.push(out[i]);
            }
        }
        // `on_hit` saw every hit once, in lane order, and nothing else (not
        // the stale lane 1).
        assert_eq!(seen, hits);
        assert_eq!(c.lookup_batch(&keys, &hashes, live, 1, &mut [0u32; BURST]), miss);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn runs_of_one_flow_answer_like_lane_by_lane_lookups() {
        // Bursts drawn from five flows so that runs form; some flows cached
        // under the current generation, one under an old one, one absent. A
        // sixth key shares flow 0's hash but not its in_port: never a run.
        let mut c = Emc::<u32>::new(EmcConfig { entries: 256, insert_inv_prob: 1 });
        let mut flows: Vec<(FlowKey, u32)> = (0..5).map(|i| (key(i), hash(&key(i)))).collect();
        let mut other = flows[0].0;
        other.in_port = 9;
        flows.push((other, flows[0].1));
        c.insert(&flows[0].0, flows[0].1, 3, 10);
        c.insert(&flows[1].0, flows[1].1, 3, 11);
        c.insert(&flows[2].0, flows[2].1, 2, 12); // stale
        c.insert(&flows[5].0, flows[5].1, 3, 15);
        let mut rng = crate::classbench::Rng::new(0x2545_f491);
        let mut next = move || rng.next_u64() as u32;
        let mut runs = 0;
        for _ in 0..2000 {
            let mut keys = [FlowKey::default(); BURST];
            let mut hashes = [0u32; BURST];
            let mut fl = [0usize; BURST];
            let mut f = 0usize;
            for i in 0..BURST {
                if next() % 4 == 0 {
                    f = next() as usize % flows.len();
                }
                fl[i] = f;
                keys[i] = flows[f].0;
                keys[i].tcp_flags = next() as u8; // not part of the flow
                hashes[i] = flows[f].1;
            }
            let live = next() | next();
            let mut out = [u32::MAX; BURST];
            let miss = c.lookup_batch(&keys, &hashes, live, 3, &mut out);
            assert_eq!(miss & !live, 0, "only live lanes miss");
            for i in (0..BURST).filter(|&i| live & (1 << i) != 0) {
                match c.lookup(&keys[i], hashes[i], 3) {
                    Some(v) => assert!(miss & (1 << i) == 0 && out[i] == v, "lane {i}: hit {v}, got {} (miss {})", out[i], miss >> i & 1),
                    None => assert!(miss & (1 << i) != 0, "lane {i}: a miss"),
                }
                if i > 0 && live & (1 << (i - 1)) != 0 && same_flow(&keys[i], &keys[i - 1]) {
                    runs += 1;
                }
            }
            // Told which lanes repeat the previous live lane's flow, with
            // their keys and hashes overwritten by another flow's (never
            // read): the same answers.
            let (mut told, mut last) = (0u32, None);
            let (mut k2, mut h2) = (keys, hashes);
            for i in (0..BURST).filter(|&i| live & (1 << i) != 0) {
                if last.is_some_and(|p: usize| fl[p] == fl[i]) {
                    told |= 1 << i;
                    let g = (fl[i] + 1) % flows.len();
                    (k2[i], h2[i]) = flows[g];
                }
                last = Some(i);
            }
            // Told lanes are the caller's: neither answered nor reported.
            let mut out2 = [u32::MAX; BURST];
            assert_eq!(c.lookup_batch_runs::<false>(&k2, &h2, live, told, 3, &mut out2, |_| {}), miss & !told);
            for i in (0..BURST).filter(|&i| live & (1 << i) != 0) {
                let want = if told & (1 << i) != 0 || miss & (1 << i) != 0 { u32::MAX } else { out[i] };
                assert_eq!(out2[i], want, "lane {i}");
            }
        }
        assert!(runs > 10_000, "the bursts had runs: {runs}");
    }

    #[test]
    fn full_bucket_evicts_and_stale_goes_first() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 8, insert_inv_prob: 1 }); // one bucket
        for i in 0..WAYS as u32 {
            c.insert(&key(i), 7, if i == 3 { 1 } else { 2 }, i);
        }
        assert_eq!(c.occupancy(), WAYS);
        c.insert(&key(100), 7, 2, 100);
        assert_eq!(c.lookup(&key(100), 7, 2), Some(100));
        assert_eq!(c.lookup(&key(3), 7, 1), None, "the stale entry was the victim");
        for i in (0..WAYS as u32).filter(|&i| i != 3) {
            assert_eq!(c.lookup(&key(i), 7, 2), Some(i));
        }
        c.insert(&key(200), 7, 2, 200);
        assert_eq!(c.lookup(&key(200), 7, 2), Some(200));
        assert_eq!(c.occupancy(), WAYS);
    }

    #[test]
    fn a_full_primary_bucket_overflows_into_the_alternate() {
        // Two buckets; every hash below has primary 0 and alternate 1.
        let mut c = Emc::<u32>::new(EmcConfig { entries: 16, insert_inv_prob: 1 });
        let h = |i: u32| (i << 16) & !1;
        for i in 0..16 {
            assert!(c.insert(&key(i), h(i), 1, i));
        }
        assert_eq!(c.occupancy(), 16);
        for i in 0..16 {
            assert_eq!(c.lookup(&key(i), h(i), 1), Some(i), "flow {i} kept");
        }
        let mut keys = [FlowKey::default(); BURST];
        let mut hashes = [0u32; BURST];
        for i in 0..16 {
            keys[i] = key(i as u32);
            hashes[i] = h(i as u32);
        }
        let mut out = [0u32; BURST];
        assert_eq!(c.lookup_batch(&keys, &hashes, 0xffff, 1, &mut out), 0, "batch finds both buckets");
        assert_eq!(out[..16], core::array::from_fn::<u32, 16, _>(|i| i as u32));
        // Both full of current entries: the 17th evicts exactly one.
        assert!(c.insert(&key(99), h(99), 1, 99));
        assert_eq!(c.lookup(&key(99), h(99), 1), Some(99));
        assert_eq!((0..16).filter(|&i| c.lookup(&key(i), h(i), 1).is_some()).count(), 15);
        // Replies are cleared from either bucket.
        let r = key(3).reversed();
        let mut c = Emc::<u32>::new(EmcConfig { entries: 16, insert_inv_prob: 1 });
        for i in 0..8 {
            c.insert(&key(100 + i), h(3), 1, i);
        }
        c.insert(&r, h(3), 1, 7);
        assert_eq!(c.lookup(&r, h(3), 1), Some(7), "in the alternate bucket");
        assert_eq!(c.remove_replies(h(3), key(3).src, key(3).dst, key(3).proto), 1);
        assert_eq!(c.lookup(&r, h(3), 1), None);
    }

    #[test]
    fn a_half_full_cache_keeps_every_flow() {
        // With one bucket per flow, about 2 % of the 1,024 buckets would
        // receive more than 8 of these 4,096 flows and lose some.
        let mut c = Emc::<u32>::new(EmcConfig { entries: 8192, insert_inv_prob: 1 });
        let flows: Vec<FlowKey> = (0..4096u32)
            .map(|i| FlowKey::v4(1, Ipv4Addr::from(0x0a00_0000 + i), Ipv4Addr::new(10, 1, (i % 7) as u8, 9), 17, 5000 + (i % 300) as u16, 53))
            .collect();
        for (i, k) in flows.iter().enumerate() {
            c.insert(k, hash(k), 1, i as u32);
        }
        let lost = flows.iter().enumerate().filter(|&(i, k)| c.lookup(k, hash(k), 1) != Some(i as u32)).count();
        assert_eq!(lost, 0);
        assert_eq!(c.occupancy(), 4096);
        // Most sit in their preferred way, where a lookup reads no bucket
        // (8 ways: about 1 in 8 would, were the way left to chance).
        let direct = flows.iter().filter(|k| c.entries[c.direct(hash(k))].holds(k)).count();
        assert!(direct * 4 > flows.len() * 3, "{direct} of {} in their preferred way", flows.len());
    }

    #[test]
    fn probabilistic_insert_but_refresh_always() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 1 << 14, insert_inv_prob: 10 });
        let inserted = (0..10_000u32).filter(|&i| c.insert(&key(i), hash(&key(i)), 1, i)).count();
        assert!((500..2000).contains(&inserted), "about 1 in 10 new flows cached: {inserted}");
        let cached = (0..10_000u32).find(|&i| c.lookup(&key(i), hash(&key(i)), 1).is_some()).unwrap();
        let k = key(cached);
        for g in 2..50 {
            assert!(c.insert(&k, hash(&k), g, g as u32), "an existing entry is always refreshed");
        }
    }

    #[test]
    fn remove_replies_clears_reverse_entries() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 64, insert_inv_prob: 1 });
        let k = key(1);
        let mut r = k.reversed();
        r.in_port = 5;
        let h = hash(&k);
        assert_eq!(hash(&r), h);
        c.insert(&r, h, 1, 9);
        c.insert(&k, h, 1, 8);
        assert_eq!(c.remove_replies(h, k.src, k.dst, k.proto), 1);
        assert_eq!(c.lookup(&r, h, 1), None);
        assert_eq!(c.lookup(&k, h, 1), Some(8));
    }

    #[test]
    fn every_identifying_field_splits_a_flow() {
        let mut c = Emc::<u64>::new(EmcConfig { entries: 64, insert_inv_prob: 1 });
        let mut k = key(1);
        k.vlan = 0xabc;
        k.flags = crate::key::flags::FRAG_FIRST;
        assert!(c.insert(&k, hash(&k), 5, u64::MAX));
        assert_eq!(c.lookup(&k, hash(&k), 5), Some(u64::MAX), "all 64 bits of the value kept");
        let edits: [fn(&mut FlowKey); 9] = [
            |k| k.src ^= 1 << 100,
            |k| k.dst ^= 1,
            |k| k.sport ^= 0x8000,
            |k| k.dport ^= 1,
            |k| k.in_port ^= 0x8000,
            |k| k.vlan ^= 0x800,
            |k| k.flags ^= crate::key::flags::V6,
            |k| k.flags ^= crate::key::flags::FRAG_LATER,
            |k| k.proto ^= 0x80,
        ];
        for (n, edit) in edits.iter().enumerate() {
            let mut e = k;
            edit(&mut e);
            assert_eq!(c.lookup(&e, hash(&k), 5), None, "edit {n}");
        }
    }

    #[test]
    fn keys_the_entry_cannot_hold_are_never_cached_nor_aliased() {
        let mut c = Emc::<u32>::new(EmcConfig { entries: 64, insert_inv_prob: 1 });
        // An entry keeps 3 bits of key flags: a key with more is never
        // cached, and never finds the entry of the key with its low 3 bits.
        let mut held = key(1);
        held.vlan = 1;
        held.flags = 1;
        assert!(c.insert(&held, hash(&held), 1, 7));
        for high in [0x08, 0x10, 0x80] {
            let mut flagged = held;
            flagged.flags |= high;
            assert!(!c.insert(&flagged, hash(&held), 1, 9), "flags {:#x}", flagged.flags);
            assert_eq!(c.lookup(&flagged, hash(&held), 1), None, "flags {:#x}", flagged.flags);
        }
        // Every VLAN bit is kept: 0x1001 is another flow than 1.
        let mut wide = held;
        wide.vlan = 0x1001;
        assert_eq!(c.lookup(&wide, hash(&held), 1), None);
        assert!(c.insert(&wide, hash(&held), 1, 8));
        assert_eq!(c.lookup(&wide, hash(&held), 1), Some(8));
        assert_eq!(c.lookup(&held, hash(&held), 1), Some(7));
    }

    #[test]
    fn generations_differing_in_the_high_half_never_hit() {
        // Entries keep the low half of their generation; the high half is
        // the cache's (its era).
        let mut c = Emc::<u32>::new(EmcConfig { entries: 64, insert_inv_prob: 1 });
        let (old, new) = (5u64, 1 << 32 | 5);
        let (a, b) = (key(1), key(2));
        assert!(c.insert(&a, hash(&a), old, 1));
        assert_eq!(c.lookup(&a, hash(&a), new), None, "same low half, other era");
        let mut keys = [FlowKey::default(); BURST];
        let mut hashes = [0u32; BURST];
        keys[0] = a;
        hashes[0] = hash(&a);
        let mut out = [0u32; BURST];
        assert_eq!(c.lookup_batch(&keys, &hashes, 1, new, &mut out), 1);
        assert_eq!(c.lookup_batch(&keys, &hashes, 1, old, &mut out), 0);
        assert_eq!(out[0], 1);
        // The first insert of the new era empties the cache.
        assert!(c.insert(&b, hash(&b), new, 2));
        assert_eq!(c.occupancy(), 1);
        assert_eq!(c.lookup(&b, hash(&b), new), Some(2));
        assert_eq!(c.lookup(&a, hash(&a), old), None);
        assert_eq!(c.lookup(&a, hash(&a), new), None);
    }

    /// Random inserts, removes, reply purges and lookups on small caches
    /// whose flows crowd a few buckets and share signatures and preferred
    /// ways, against a model of what was last cached per flow. The cache may
    /// forget a flow (evictions), but a lookup never answers other than the
    /// model, a flow just inserted is found, a removed one is not, a batch
    /// answers like single lookups, and an entry is live exactly when a
    /// signature names it.
    #[test]
    fn random_operations_agree_with_a_model() {
        use std::collections::HashMap;
        let mut rng = crate::classbench::Rng::new(0x2545_f491);
        let mut next = move |n: u32| rng.below(u64::from(n)) as u32;
        for (entries, flows, hashes) in [(8, 24, 5u32), (32, 80, 23), (64, 100, 400)] {
            let mut c = Emc::<u32>::new(EmcConfig { entries, insert_inv_prob: 1 });
            // Flow 2n + 1 is flow 2n's reply, with its hash (the pipeline's
            // is symmetric). Few distinct hashes: buckets, signatures and
            // preferred ways collide.
            let h = |i: u32| (i / 2 % hashes).wrapping_mul(0x9e37_79b9) ^ (i / 2 % hashes) << 3;
            let keys: Vec<FlowKey> = (0..flows).map(|i| if i % 2 == 0 { key(i / 2) } else { key(i / 2).reversed() }).collect();
            let mut model: HashMap<u32, (u64, u32)> = HashMap::new();
            let mut gen = 1u64;
            for step in 0..20_000u32 {
                let i = next(flows);
                let k = &keys[i as usize];
                match next(10) {
                    0..=3 => {
                        assert!(c.insert(k, h(i), gen, step));
                        model.insert(i, (gen, step));
                        assert_eq!(c.lookup(k, h(i), gen), Some(step), "just inserted");
                    }
                    4 => {
                        c.remove(k, h(i));
                        model.remove(&i);
                        assert_eq!(c.lookup(k, h(i), gen), None, "just removed");
                    }
                    5 => {
                        // Flow i's replies: flow i ^ 1.
                        let n = c.remove_replies(h(i), k.src, k.dst, k.proto);
                        assert!(n <= usize::from(model.remove(&(i ^ 1)).is_some()), "{n} removed");
                        assert_eq!(c.lookup(&keys[(i ^ 1) as usize], h(i), gen), None, "reply purged");
                    }
                    6 => gen += u64::from(next(3) == 0),
                    _ => {
                        let mut ks = [FlowKey::default(); BURST];
                        let mut hs = [0u32; BURST];
                        let mut ids = [0u32; BURST];
                        for l in 0..BURST {
                            // Runs of one flow now and then.
                            ids[l] = if l > 0 && next(4) == 0 { ids[l - 1] } else { next(flows) };
                            ks[l] = keys[ids[l] as usize];
                            hs[l] = h(ids[l]);
                        }
                        let mut out = [u32::MAX; BURST];
                        let live = next(u32::MAX) | 1;
                        let miss = c.lookup_batch(&ks, &hs, live, gen, &mut out);
                        for l in 0..BURST {
                            if live & (1 << l) == 0 {
                                continue;
                            }
                            let one = c.lookup(&ks[l], hs[l], gen);
                            let got = (miss & (1 << l) == 0).then_some(out[l]);
                            assert_eq!(got, one, "lane {l}: batch as single lookups");
                            if let Some(v) = one {
                                assert_eq!(model.get(&ids[l]), Some(&(gen, v)), "flow {}: only what was cached", ids[l]);
                            }
                        }
                    }
                }
                let live = c.entries.iter().filter(|e| e.lo & LIVE != 0).count();
                assert_eq!(live, c.occupancy(), "step {step}: live entries are the signed ways");
            }
        }
    }
}
