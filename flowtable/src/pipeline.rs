//! The per-lcore pipeline: a burst of frames in, a verdict per frame out.
//!
//! ```text
//! per burst (<= 32):  parse every frame -> keys, hashes      (ARP, non-IP, malformed: decided here)
//!                     emc.lookup_batch(keys, gen)            (prefetch buckets, compare signatures + keys)
//! per packet, in order:
//!   hit  -> cached connection? update it by handle (no hash lookup); stale handle -> miss
//!        -> verdict
//!   miss -> #[cold] slow path:
//!           identities (PrefixMap, src and dst) ; output port (PrefixMap, dst) or drop no_route
//!           conntrack lookup: found -> decided under this gen? (else re-evaluate the initiator's key,
//!                                      or keep it if established and keep_established)
//!                                   -> allowed both ways (stateful): forward
//!           policy (PolicyTables<C>: egress AND ingress through the tiers)
//!              deny  -> drop policy_egress / policy_ingress (cached)
//!              allow -> create the connection (and purge cached reply-direction drops) -> forward
//!           install the verdict in the cache, stamped with gen
//! once per call:      maintain: conntrack and denied-flow sweeps of a few slots (expiry off the
//!                     per-packet path), periodic notes for a few slots when an interval is set
//! ```
//!
//! Flow notes: a connection that ends (expiry after FIN / RST / idle,
//! eviction, revocation, cut, flush) and, every `report_interval`, a live
//! one with new packets, leave a [`CtNote`] (counters of both directions) in
//! a fixed-size buffer; so do denied flows, which a small table of their own
//! counts (`denied_flows`; its cached handle rides on the cache entry like a
//! connection's). The caller drains them after `process` or `maintain`
//! ([`Pipeline::drain_notes`]); a note the full buffer could not take is
//! counted in `flow_notes_lost`.
//!
//! `gen` must change whenever anything a verdict depends on changes: the
//! rules, the IP -> identity map, or the routes. Nothing here allocates,
//! locks or reads a clock (`now` is passed in; flowtable/tests/no_alloc.rs).

use crate::act::{vflags, DropReason, Fate, FlowVerdict, PacketVerdict};
use crate::classify::BURST;
use crate::conntrack::{trackable, Conntrack, CtConfig, CtDir, CtNote, CtRef, CtTimeouts, EndReason};
use crate::emc::{Emc, EmcConfig};
use crate::key::{Addr, FlowKey};
use crate::lpm::PrefixMap;
use crate::parse::{flow_hash, parse_fast, parse_general, Class, FastFields, Meta};
use crate::rule::{Action, RuleLookup};
use crate::stats::Stats;
use crate::tables::{PolicyTables, Verdict};

/// One received frame.
#[derive(Clone, Copy, Debug)]
pub struct RxPacket<'a> {
    /// The frame, from the Ethernet header.
    pub frame: &'a [u8],
    /// The NIC's RSS hash, when the NIC marked it valid.
    pub rss: Option<u32>,
    /// The port it arrived on.
    pub in_port: u16,
}

/// Everything a verdict depends on, published together under one generation.
#[derive(Debug)]
pub struct Policy<'a, C> {
    /// The generation of this state (the rule-set snapshot's); must change
    /// whenever the tables, identities or routes change.
    pub gen: u64,
    /// Tiered egress/ingress rule tables.
    pub tables: &'a PolicyTables<C>,
    /// IP -> security identity (longest prefix); unknown addresses get 0.
    pub identities: &'a PrefixMap<u32>,
    /// Destination IP -> output port (longest prefix); unknown: drop `no_route`.
    pub routes: &'a PrefixMap<u16>,
    /// Connections decided under a generation older than this are
    /// re-evaluated even with `keep_established` (a quarantine cuts live
    /// connections whatever that option says). 0: none.
    pub cut_before: u64,
}

impl<C> Clone for Policy<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C> Copy for Policy<'_, C> {}

/// Pipeline configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PipelineConfig {
    /// Exact-match cache size and insertion policy.
    pub emc: EmcConfig,
    /// Conntrack capacity, timeouts and policy-change behaviour.
    pub ct: CtConfig,
    /// The NIC's RSS hash is symmetric (e.g. the 0x6d5a key), so the cache
    /// may index by it. Otherwise the symmetric software hash is used (the
    /// cache needs both directions of a flow in one bucket).
    pub symmetric_rss: bool,
    /// Flag 1 in N forwarded packets with [`vflags::SAMPLE`] (0: never).
    pub sample_inv: u32,
    /// Conntrack slots examined for expiry per sweep.
    pub sweep_budget: usize,
    /// Each table is walked whole about once per this long (unit of `now`):
    /// sweeps are spaced out to that pace instead of running after every
    /// burst (0: a sweep on every `process`/`maintain` call). A connection
    /// then ends at most about this long after its timeout. (Swept after
    /// every burst, at ~300 k bursts/s, a 64 k-slot table was walked ~75
    /// times a second, each walk a stream of cache misses: perf, up to 2.3 %
    /// of a vhost lcore's cycles.) The switch sets it with
    /// [`PipelineConfig::pace_sweeps`].
    pub sweep_period: u64,
    /// Track connections (replies of allowed flows pass, policy changes
    /// re-decide live connections). false: every packet is decided by the
    /// rules alone, like a stateless ACL; conntrack is never consulted.
    pub stateful: bool,
    /// Periodic notes: a live connection (or denied flow) with new packets
    /// is reported every this long (unit of `now`; 0: never).
    pub report_interval: u64,
    /// Denied flows counted per lcore (0: none; a denied flow then gets a
    /// start record per slow-path decision and no counters).
    pub denied_flows: usize,
    /// A denied flow idle this long ends (unit of `now`).
    pub denied_idle: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            emc: EmcConfig::default(),
            ct: CtConfig::default(),
            symmetric_rss: false,
            sample_inv: 0,
            sweep_budget: 16,
            sweep_period: 0,
            stateful: true,
            report_interval: 60_000_000_000,
            denied_flows: 8192,
            denied_idle: 30_000_000_000,
        }
    }
}

impl PipelineConfig {
    /// Sets [`Self::sweep_period`] from the times (in nanoseconds, as the
    /// defaults are): each table walked whole once a second, or four times
    /// within the shortest timeout (conntrack, denied-flow idle, report
    /// interval) if that is shorter. Connections then end at most that late,
    /// and the sweep stays off the per-burst path.
    pub fn pace_sweeps(&mut self) {
        let shortest = self.ct.timeouts.all().into_iter().chain([self.denied_idle]);
        let shortest = shortest.chain((self.report_interval != 0).then_some(self.report_interval)).min().unwrap_or(0);
        self.sweep_period = (shortest / 4).min(1_000_000_000);
    }
}

/// Consecutive failed train checks after which a burst stops checking.
const RUN_TRIES: u8 = 2;

/// One lcore's pipeline: its cache, its conntrack, its counters.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    emc: Emc<FlowVerdict>,
    ct: Conntrack,
    denied: Conntrack,
    stats: Stats,
    sample_left: u32,
    /// When the next sweep is due, and the time between sweeps.
    next_sweep: u64,
    sweep_gap: u64,
    keys: [FlowKey; BURST],
    hashes: [u32; BURST],
    metas: [Meta; BURST],
    vals: [FlowVerdict; BURST],
    /// Lane i's key, metadata and hash are lane `lead[i]`'s: itself, or the
    /// first lane of the train it follows (see [`FastFields`]).
    lead: [u8; BURST],
    /// See [`Pipeline::followers`].
    followers: u32,
}

/// The cookie a verdict reports: the ingress rule's, else the egress rule's.
fn allow_cookie(v: &Verdict) -> u64 {
    v.ingress.rule.or(v.egress.rule).map_or(0, |r| r.cookie)
}

#[inline]
fn resolve(ids: &PrefixMap<u32>, a: Addr) -> u32 {
    ids.lookup(a).map_or(0, |(_, v)| *v)
}

/// The denied-flow table's configuration, from the pipeline's.
fn denied_config(cfg: &PipelineConfig) -> CtConfig {
    let t = cfg.denied_idle;
    CtConfig {
        capacity: cfg.denied_flows,
        timeouts: CtTimeouts {
            tcp_syn_sent: t,
            tcp_syn_recv: t,
            tcp_established: t,
            tcp_fin_wait: t,
            tcp_time_wait: t,
            tcp_close: t,
            udp_new: t,
            udp_replied: t,
            icmp: t,
            other: t,
        },
        keep_established: false,
        // A full bucket refuses a new denied flow (it stays denied from the
        // cache, uncounted) rather than evicting a live one: with eviction,
        // more denied flows than a bucket holds evict each other on every
        // packet, each back to the slow path with a new start record.
        evict_live: false,
        notes: if cfg.denied_flows == 0 { 0 } else { cfg.ct.notes },
        flows_only: true,
    }
}

impl Pipeline {
    /// A pipeline with empty cache and conntrack.
    pub fn new(cfg: PipelineConfig) -> Self {
        let (ct, denied) = (Conntrack::new(cfg.ct), Conntrack::new(denied_config(&cfg)));
        // Sweeps per walk of the larger table.
        let sweeps = (ct.capacity().max(denied.capacity()) / cfg.sweep_budget.max(1)).max(1) as u64;
        Pipeline {
            cfg,
            emc: Emc::new(cfg.emc),
            ct,
            denied,
            stats: Stats::default(),
            sample_left: cfg.sample_inv,
            next_sweep: 0,
            sweep_gap: cfg.sweep_period / sweeps,
            keys: [FlowKey::default(); BURST],
            hashes: [0; BURST],
            metas: [Meta::default(); BURST],
            vals: [FlowVerdict::default(); BURST],
            lead: [0; BURST],
            followers: 0,
        }
    }

    /// The lanes of the last burst (bit i = packet i of the last
    /// [`process_burst`](Self::process_burst), or of the last 32 of a
    /// [`process`](Self::process)) that followed the lane before them in a
    /// train of cache hits: their frame has that lane's fast-path fields
    /// (untagged IPv4 TCP or UDP without options or fragments, the same
    /// addresses, ports and in_port) and their verdict is its verdict (fate
    /// and cookie) without [`vflags::LOG`]. A caller can take such a lane's
    /// disposition from the lane before it without looking at the packet.
    pub fn followers(&self) -> u32 {
        self.followers
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }
    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The counters, mutable (e.g. to reset them).
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }
    /// The connection table, mutable (flush, remove).
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.ct
    }
    /// The exact-match cache.
    pub fn emc(&self) -> &Emc<FlowVerdict> {
        &self.emc
    }
    /// The denied-flow table (flows only: one direction, no states).
    pub fn denied(&self) -> &Conntrack {
        &self.denied
    }

    /// Expiry and periodic reports off the per-packet path: a few slots of
    /// conntrack and of the denied-flow table, when a sweep is due (see
    /// [`PipelineConfig::sweep_period`]). `process` calls it once per call;
    /// call it when idle too, so flows end on time without traffic.
    pub fn maintain(&mut self, now: u64) {
        if self.sweep_gap != 0 && now < self.next_sweep {
            return;
        }
        self.next_sweep = now.saturating_add(self.sweep_gap);
        let (b, every) = (self.cfg.sweep_budget, self.cfg.report_interval);
        if self.cfg.stateful {
            self.ct.sweep_report(now, b, every);
        }
        if self.cfg.denied_flows != 0 {
            self.denied.sweep_report(now, b, every);
        }
    }

    /// Flow notes waiting to be drained.
    #[inline]
    pub fn pending_notes(&self) -> usize {
        self.ct.notes().len() + self.denied.notes().len()
    }

    /// Hands every pending flow note to `f` (`denied`: from the denied-flow
    /// table, else a connection) and empties the buffers.
    pub fn drain_notes(&mut self, mut f: impl FnMut(&CtNote, bool)) {
        self.ct.drain_notes(|n| f(n, false));
        self.denied.drain_notes(|n| f(n, true));
        self.stats.flow_notes_lost = self.ct.counters().notes_lost + self.denied.counters().notes_lost;
    }

    /// Forgets every connection and denied flow, handing `f` the pending
    /// notes and an end note ([`EndReason::Flush`]) for each (none lost).
    pub fn flush_with(&mut self, mut f: impl FnMut(&CtNote, bool)) {
        self.ct.flush_with(|n| f(n, false));
        self.denied.flush_with(|n| f(n, true));
        self.stats.flow_notes_lost = self.ct.counters().notes_lost + self.denied.counters().notes_lost;
    }

    /// Decides every packet of `pkts` (any number; handled 32 at a time),
    /// writing `out[i]` for `pkts[i]`. `now` is the time (unit of the
    /// conntrack timeouts).
    ///
    /// # Panics
    /// If `out` is shorter than `pkts`.
    pub fn process<C: RuleLookup>(
        &mut self,
        policy: &Policy<'_, C>,
        pkts: &[RxPacket<'_>],
        now: u64,
        out: &mut [PacketVerdict],
    ) {
        assert!(out.len() >= pkts.len(), "one verdict slot per packet");
        for (chunk, o) in pkts.chunks(BURST).zip(out.chunks_mut(BURST)) {
            self.burst(policy, chunk.len(), |i| chunk[i], now, o);
        }
        self.maintain(now);
    }

    /// [`process`](Self::process) for one burst of `n` packets handed over
    /// by index (`pkt(i)`, called once or twice per packet), so that the
    /// caller builds no array of packets: a poll loop reads them straight
    /// from its mbufs.
    ///
    /// # Panics
    /// If `n` is over [`BURST`] or `out` is shorter than `n`.
    #[inline]
    pub fn process_burst<'a, C: RuleLookup>(
        &mut self,
        policy: &Policy<'_, C>,
        n: usize,
        pkt: impl Fn(usize) -> RxPacket<'a>,
        now: u64,
        out: &mut [PacketVerdict],
    ) {
        assert!(n <= BURST && out.len() >= n, "at most one burst, one verdict slot per packet");
        self.burst(policy, n, pkt, now, out);
        self.maintain(now);
    }

    #[inline]
    fn finish(&mut self, fate: Fate, cookie: u64, mut flags: u8) -> PacketVerdict {
        match fate {
            Fate::Forward(_) => {
                self.stats.forwarded += 1;
                if self.cfg.sample_inv != 0 {
                    self.sample_left -= 1;
                    if self.sample_left == 0 {
                        self.sample_left = self.cfg.sample_inv;
                        flags |= vflags::SAMPLE;
                        self.stats.sampled += 1;
                    }
                }
            }
            Fate::Drop(r) => self.stats.count_drop(r),
            Fate::Arp => self.stats.arp += 1,
        }
        if flags & vflags::LOG != 0 {
            self.stats.logged += 1;
        }
        PacketVerdict { fate, flags, cookie }
    }

    #[inline]
    fn burst<'a, C: RuleLookup>(
        &mut self,
        policy: &Policy<'_, C>,
        n: usize,
        pkt: impl Fn(usize) -> RxPacket<'a>,
        now: u64,
        out: &mut [PacketVerdict],
    ) {
        let mut live = 0u32;
        self.followers = 0;
        // Lanes whose frame reads, to the fast path, as the previous lane's:
        // the same key, metadata and hash, reused rather than parsed (a
        // train of one flow's packets, common from VMs and bulk transfers).
        // The cache takes them as the same flow without comparing keys. Two
        // failed checks in a row end the checks for the burst (many
        // interleaved flows would pay for each).
        let mut runs = 0u32;
        // The current train's first frame (its fast-path fields), in_port and rss.
        let mut prev: Option<(FastFields, u16, Option<u32>)> = None;
        let mut tries = RUN_TRIES;
        // Summed here and counted once: as counters in `self` they were a
        // store and a load every packet, one packet's waiting on the last's.
        let mut bytes = 0u64;
        let mut i = 0;
        while i < n {
            let p = pkt(i);
            bytes += p.frame.len() as u64;
            if let Some((q, in_port, rss)) = &prev {
                let same = |p: &RxPacket<'_>| q.same(p.frame) && p.in_port == *in_port && p.rss == *rss;
                if same(&p) {
                    // The train goes on: its further lanes in a loop of
                    // their own, which carries nothing but the lane (as
                    // masks and lead indexes updated per lane, its state
                    // went through the stack, one lane's waiting on the
                    // last's).
                    let start = i;
                    i += 1;
                    while i < n {
                        let p = pkt(i);
                        if !same(&p) {
                            break;
                        }
                        bytes += p.frame.len() as u64;
                        i += 1;
                    }
                    runs |= (((1u64 << (i - start)) - 1) << start) as u32;
                    let l = self.lead[start - 1];
                    self.lead[start..i].fill(l);
                    tries = RUN_TRIES;
                    continue;
                }
                tries -= 1;
            }
            let o = &mut out[i];
            self.lead[i] = i as u8;
            let fast = parse_fast(p.frame, p.in_port, p.rss, &mut self.keys[i], &mut self.metas[i]);
            prev = if fast && tries != 0 { FastFields::of(p.frame).map(|f| (f, p.in_port, p.rss)) } else { None };
            let parsed = if fast {
                Ok(())
            } else {
                parse_general(p.frame, p.in_port, p.rss, &mut self.keys[i]).map(|m| self.metas[i] = m)
            };
            match parsed {
                Ok(()) => match self.metas[i].class {
                    Class::Ipv4 | Class::Ipv6 => {
                        let m = &self.metas[i];
                        let h = if self.cfg.symmetric_rss || p.rss.is_none() { m.hash } else { flow_hash(&self.keys[i], m.echo_id) };
                        self.hashes[i] = h;
                        self.emc.prefetch(h);
                        live |= 1 << i;
                    }
                    Class::Arp => *o = self.finish(Fate::Arp, 0, 0),
                    Class::NonIp { .. } => *o = self.finish(Fate::Drop(DropReason::NonIp), 0, 0),
                },
                Err(e) => *o = self.finish(Fate::Drop(DropReason::Malformed(e)), 0, 0),
            }
            i += 1;
        }
        // Train lanes are live too.
        live |= runs;
        self.stats.rx_packets += n as u64;
        self.stats.rx_bytes += bytes;
        let gen = policy.gen;
        // The hits' connections: loading starts as each hit is verified,
        // before the first update (with many flows each one is a cache miss;
        // started after the whole lookup, the first updates of a burst waited
        // for theirs). Train followers have none of their own.
        let (ct, denied) = (&self.ct, &self.denied);
        let prefetch = |v: &FlowVerdict| {
            if let Some((r, _)) = v.ct {
                match v.fate {
                    Fate::Forward(_) => ct.prefetch(r),
                    _ => denied.prefetch(r),
                }
            }
        };
        let miss = self.emc.lookup_batch_runs::<true>(&self.keys, &self.hashes, live, runs, gen, &mut self.vals, prefetch);
        // Connections created by earlier packets of this burst purge cached
        // reply-direction drops, but this burst's lookups ran before that:
        // cached policy drops are then re-checked on the slow path.
        let created_before = self.stats.ct_created;
        // Without trains (many flows), a loop without their checks (criterion,
        // 32 flows per burst: 508/516 -> 486/492 ns a burst).
        let at = (miss, created_before, now);
        if runs == 0 {
            self.verdicts::<false, C>(policy, live, 0, at, &pkt, out);
        } else {
            self.verdicts::<true, C>(policy, live, runs, at, &pkt, out);
        }
    }

    /// The hit loop of a burst: each live lane's cached verdict, checked
    /// against its connection, else the slow path. `TRAINS`: `runs` may be
    /// non-zero (a train's followers update conntrack once).
    #[inline(always)]
    fn verdicts<'a, const TRAINS: bool, C: RuleLookup>(
        &mut self,
        policy: &Policy<'_, C>,
        live: u32,
        runs: u32,
        (miss, created_before, now): (u32, u64, u64),
        pkt: &impl Fn(usize) -> RxPacket<'a>,
        out: &mut [PacketVerdict],
    ) {
        // The rest of lane i's train: its length, and with its bytes.
        let train_len = |i: usize| (runs >> (i + 1)).trailing_ones() as usize;
        let train_of = |i: usize| {
            let t = train_len(i);
            (t, (i + 1..=i + t).map(|l| pkt(l).frame.len() as u64).sum::<u64>())
        };
        let mut m = live;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let len = pkt(i).frame.len() as u32;
            // A train's followers take its first lane's answer (the cache
            // never looked them up).
            let j = if TRAINS { self.lead[i] as usize } else { i };
            if miss & (1 << j) == 0 {
                let v = self.vals[j];
                // Followers of lane i (hits, like it) that need nothing more:
                // accounted on its connection or denied flow at once, or
                // none to account.
                let mut train = 0usize;
                let more = TRAINS && runs & (2 << i) != 0;
                let fresh = match (v.fate, v.ct) {
                    (Fate::Forward(_), Some((r, dir))) => {
                        let flags = self.keys[j].tcp_flags;
                        let ok = self.ct.update(r, dir, self.metas[j].echo_id, flags, len, now).is_some();
                        if !ok {
                            self.stats.ct_stale += 1;
                        } else if more {
                            // The same packet to conntrack: one update for all.
                            let (t, bytes) = train_of(i);
                            if self.ct.repeat(r, dir, flags, t as u64, bytes) {
                                train = t;
                            }
                        }
                        ok
                    }
                    (Fate::Drop(DropReason::PolicyEgress | DropReason::PolicyIngress), d) => {
                        // Counted on its denied flow; a flow that ended there
                        // (idle, evicted) is decided again (a new one starts).
                        let ok = self.stats.ct_created == created_before
                            && d.is_none_or(|(r, _)| {
                                self.denied.update(r, CtDir::Orig, self.metas[j].echo_id, 0, len, now).is_some()
                            });
                        if ok && more {
                            let (t, bytes) = train_of(i);
                            if d.is_none_or(|(r, _)| self.denied.repeat(r, CtDir::Orig, 0, t as u64, bytes)) {
                                train = t;
                            }
                        }
                        ok
                    }
                    _ => {
                        if more {
                            train = train_len(i);
                        }
                        true
                    }
                };
                if fresh {
                    self.stats.emc_hit += 1;
                    out[i] = self.finish(v.fate, v.cookie, 0);
                    if TRAINS && train != 0 {
                        self.finish_train(v, &mut out[i + 1..=i + train]);
                        let lanes = (((1u64 << train) - 1) << (i + 1)) as u32;
                        m &= !lanes;
                        self.followers |= lanes;
                    }
                    continue;
                }
            }
            self.stats.emc_miss += 1;
            out[i] = self.slow(policy, i, len, now);
        }
    }

    /// The verdicts of a train's followers, whose connection is accounted.
    #[inline(never)]
    fn finish_train(&mut self, v: FlowVerdict, out: &mut [PacketVerdict]) {
        self.stats.emc_hit += out.len() as u64;
        for o in out {
            *o = self.finish(v.fate, v.cookie, 0);
        }
    }

    /// Installs a verdict in the cache (counted when written).
    fn install(&mut self, k: &FlowKey, hash: u32, gen: u64, v: FlowVerdict) {
        if self.emc.insert(k, hash, gen, v) {
            self.stats.emc_insert += 1;
        }
    }

    #[cold]
    #[inline(never)]
    fn slow<C: RuleLookup>(&mut self, policy: &Policy<'_, C>, i: usize, len: u32, now: u64) -> PacketVerdict {
        let gen = policy.gen;
        let j = self.lead[i] as usize;
        let mut k = self.keys[j];
        let hash = self.hashes[j];
        let echo = self.metas[j].echo_id;
        k.src_id = resolve(policy.identities, k.src);
        k.dst_id = resolve(policy.identities, k.dst);
        let port = match policy.routes.lookup(k.dst) {
            Some((_, &p)) => p,
            None => {
                let v = FlowVerdict { fate: Fate::Drop(DropReason::NoRoute), ct: None, cookie: 0 };
                self.install(&k, hash, gen, v);
                return self.finish(v.fate, 0, 0);
            }
        };
        let tracked = self.cfg.stateful && trackable(&k);
        if tracked {
            if let Some((r, dir)) = self.ct.lookup(&k, echo, now) {
                self.stats.ct_hit += 1;
                if self.revalidate(policy, r) {
                    self.ct.update(r, dir, echo, k.tcp_flags, len, now);
                    let cookie = self.ct.get(r).map_or(0, |c| c.cookie);
                    let v = FlowVerdict { fate: Fate::Forward(port), ct: Some((r, dir)), cookie };
                    self.install(&k, hash, gen, v);
                    return self.finish(v.fate, cookie, 0);
                }
            } else {
                self.stats.ct_miss += 1;
            }
        }
        self.stats.cls_lookup += 1;
        let d = policy.tables.decide(&k);
        if !d.allowed() {
            let reason =
                if d.egress.action != Action::Allow { DropReason::PolicyEgress } else { DropReason::PolicyIngress };
            let cookie = d.denied_by().and_then(|x| x.rule).map_or(0, |r| r.cookie);
            let (ct, flags) = self.count_denied(&k, echo, gen, cookie, len, now);
            let v = FlowVerdict { fate: Fate::Drop(reason), ct, cookie };
            self.install(&k, hash, gen, v);
            return self.finish(v.fate, cookie, flags);
        }
        let cookie = allow_cookie(&d);
        let mut ct = None;
        if tracked {
            match self.ct.create(&k, echo, gen, cookie, len, now) {
                Ok(Some(r)) => {
                    self.stats.ct_created += 1;
                    ct = Some((r, CtDir::Orig));
                    // A drop cached for the reply direction before this
                    // connection existed must not outlive it.
                    self.emc.remove_replies(hash, k.src, k.dst, k.proto);
                }
                Ok(None) => {
                    // A packet that starts no connection (a TCP RST): forwarded,
                    // but neither cached nor logged. Cached, the flow's next
                    // packets (a SYN on the same ports) would hit the entry and
                    // never be tracked, and their replies would be denied.
                    return self.finish(Fate::Forward(port), cookie, 0);
                }
                Err(()) => return self.finish(Fate::Drop(DropReason::CtFull), cookie, 0),
            }
        }
        let v = FlowVerdict { fate: Fate::Forward(port), ct, cookie };
        self.install(&k, hash, gen, v);
        self.finish(v.fate, cookie, vflags::LOG)
    }

    /// Counts a policy-denied packet on its denied flow (found, or started:
    /// then [`vflags::LOG`] for its start record). Without a denied-flow
    /// table, or when it refuses, every slow-path decision logs.
    fn count_denied(&mut self, k: &FlowKey, echo: u16, gen: u64, cookie: u64, len: u32, now: u64) -> (Option<(CtRef, CtDir)>, u8) {
        if self.cfg.denied_flows == 0 {
            return (None, vflags::LOG);
        }
        if let Some((r, _)) = self.denied.lookup(k, echo, now) {
            self.denied.update(r, CtDir::Orig, echo, 0, len, now);
            self.denied.restamp(r, gen, cookie);
            return (Some((r, CtDir::Orig)), 0);
        }
        match self.denied.create(k, echo, gen, cookie, len, now) {
            Ok(Some(r)) => {
                self.stats.denied_flows += 1;
                (Some((r, CtDir::Orig)), vflags::LOG)
            }
            _ => {
                self.stats.denied_uncounted += 1;
                (None, vflags::LOG)
            }
        }
    }

    /// Brings a tracked connection up to the current generation. Returns
    /// false (and removes it) when the current policy no longer allows it.
    fn revalidate<C: RuleLookup>(&mut self, policy: &Policy<'_, C>, r: CtRef) -> bool {
        match self.ct.gen_of(r) {
            None => return false,
            Some(g) if g == policy.gen => return true,
            Some(_) => {}
        }
        let Some(c) = self.ct.get(r) else { return false };
        let (state, mut orig, cookie) = (c.state, c.orig, c.cookie);
        let cut = self.ct.gen_of(r).is_some_and(|g| g < policy.cut_before);
        if self.ct.config().keep_established && !cut && state.is_some_and(|s| s.is_established()) {
            self.ct.restamp(r, policy.gen, cookie);
            self.stats.ct_revalidated += 1;
            return true;
        }
        orig.src_id = resolve(policy.identities, orig.src);
        orig.dst_id = resolve(policy.identities, orig.dst);
        self.stats.cls_lookup += 1;
        let d = policy.tables.decide(&orig);
        if d.allowed() {
            self.ct.restamp(r, policy.gen, allow_cookie(&d));
            self.stats.ct_revalidated += 1;
            true
        } else {
            self.ct.remove_as(r, if cut { EndReason::Cut } else { EndReason::Revoked });
            self.stats.ct_revoked += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests;
