//! The offload manager: turns hot-flow reports from the lcores into hardware
//! rules, keeps the table within capacity, retries what the device refused for
//! a passing reason, and revokes rules when the policy generation changes.
//!
//! Threads: lcores own a [`Feeder`] each and push [`OffloadRequest`]s into one
//! bounded lock-free queue (a full queue is counted, never waited on). One
//! manager thread owns the [`Manager`] and the [`Backend`].
//!
//! Semantics (DESIGN.md "Updates without stale allows"): an allow in hardware
//! only MARKs (software still decides, and ignores a mark from an older
//! generation), a deny in hardware DROPs. On a policy change the switch calls
//! [`Manager::revoke_before`] with the new generation: every rule decided under
//! an older one is destroyed, so a hardware DROP cannot outlive a relaxation,
//! and requests stamped with an older generation are discarded.

use crate::backend::{Backend, Completion, HwRuleId, OffloadError, Op};
use crate::spec::{FlowAction, FlowSpec};
use crossbeam_queue::ArrayQueue;
use flowtable::FlowKey;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What hardware should do for a hot flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Intent {
    /// Denied flow: full offload.
    Drop,
    /// Allowed flow: partial offload (mark, deliver to `queue`).
    Mark {
        /// Rx queue the flow arrives on.
        queue: u16,
        /// The mark value the requester bound to its verdict; 0 lets the
        /// manager pick one (then only [`Manager::marks`] knows it).
        mark: u32,
    },
}

/// A hot flow reported by an lcore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadRequest {
    /// Port the flow arrives on.
    pub port: u16,
    /// The flow (identities ignored: hardware sees headers only).
    pub key: FlowKey,
    /// What to install.
    pub intent: Intent,
    /// Policy generation the verdict was decided under.
    pub gen: u64,
}

/// The lcore's end of the request queue.
#[derive(Debug)]
pub struct Feeder {
    q: Arc<ArrayQueue<OffloadRequest>>,
    /// Requests dropped because the queue was full.
    pub full: u64,
    /// Requests queued.
    pub sent: u64,
}

impl Feeder {
    /// Queues a request; never blocks. Returns false (and counts) when full.
    #[inline]
    pub fn push(&mut self, r: OffloadRequest) -> bool {
        match self.q.push(r) {
            Ok(()) => {
                self.sent += 1;
                true
            }
            Err(_) => {
                self.full += 1;
                false
            }
        }
    }
}

/// A request queue shared by the lcores and the manager.
pub fn request_queue(depth: usize) -> Arc<ArrayQueue<OffloadRequest>> {
    Arc::new(ArrayQueue::new(depth.max(1)))
}

/// A feeder on `q`.
pub fn feeder(q: &Arc<ArrayQueue<OffloadRequest>>) -> Feeder {
    Feeder { q: q.clone(), full: 0, sent: 0 }
}

/// Manager parameters.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Most rules Bulkhead keeps in hardware (the coldest is evicted past it).
    pub capacity: usize,
    /// Operations per asynchronous submit.
    pub batch: usize,
    /// Attempts for a transient failure before giving up on a flow.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff: Duration,
    /// Use the asynchronous queue when the backend has one.
    pub use_async: bool,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self { capacity: 8192, batch: 64, max_attempts: 5, backoff: Duration::from_micros(100), use_async: true }
    }
}

/// Counters for `show offload`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Requests taken from the queue.
    pub requested: u64,
    /// Rules installed (cumulative).
    pub installed: u64,
    /// Rules that failed for good.
    pub failed: u64,
    /// Rules removed to make room.
    pub evicted: u64,
    /// Rules removed because their generation ended.
    pub revoked: u64,
    /// Transient failures retried.
    pub retries: u64,
    /// Requests discarded: older generation, duplicate, or offload off.
    pub discarded: u64,
    /// Requests refused because the port takes no rules of that kind.
    pub unsupported: u64,
}

#[derive(Clone, Copy, Debug)]
struct Installed {
    hw: HwRuleId,
    gen: u64,
    mark: Option<u32>,
    last_hits: u64,
    heat: u64,
}

#[derive(Clone, Debug)]
enum Pending {
    Create { id: FlowId, req: OffloadRequest, attempt: u32, mark: Option<u32> },
    Destroy,
}

/// A flow as hardware sees it (no identities, no per-packet flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    port: u16,
    src: u128,
    dst: u128,
    proto: u8,
    sport: u16,
    dport: u16,
}

impl FlowId {
    /// The hardware identity of a request.
    pub fn of(port: u16, k: &FlowKey) -> Self {
        FlowId { port, src: k.src, dst: k.dst, proto: k.proto, sport: k.sport, dport: k.dport }
    }
}

/// The manager. Owns the backend.
#[derive(Debug)]
pub struct Manager<B: Backend> {
    backend: B,
    cfg: ManagerConfig,
    enabled: bool,
    gen: u64,
    installed: HashMap<FlowId, Installed>,
    in_flight: HashSet<FlowId>,
    pending: HashMap<u64, Pending>,
    retry: VecDeque<(Instant, OffloadRequest, u32)>,
    batch: Vec<Op>,
    done: Vec<Completion>,
    next_user: u64,
    next_mark: u32,
    /// Flows left in the current counter sweep ([`Manager::scan_step`]).
    sweep: Vec<FlowId>,
    /// Counters.
    pub stats: OffloadStats,
    /// The last error that made the manager give up on a request (for `show offload`).
    pub last_error: Option<OffloadError>,
}

impl<B: Backend> Manager<B> {
    /// A manager driving `backend`.
    pub fn new(backend: B, cfg: ManagerConfig) -> Self {
        Self {
            backend,
            cfg,
            enabled: true,
            gen: 0,
            installed: HashMap::new(),
            in_flight: HashSet::new(),
            pending: HashMap::new(),
            retry: VecDeque::new(),
            batch: Vec::new(),
            done: Vec::new(),
            next_user: 1,
            next_mark: 1,
            sweep: Vec::new(),
            stats: OffloadStats::default(),
            last_error: None,
        }
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Rules Bulkhead has in hardware now.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// True when nothing is installed.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// `offload on|off`. Off removes every rule.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            let all: Vec<FlowId> = self.installed.keys().copied().collect();
            for id in all {
                self.remove(id);
            }
            self.flush_batch();
        }
    }

    /// True when offload is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn use_async(&self) -> bool {
        self.cfg.use_async && self.backend.has_async()
    }

    /// Handles one request: installs a rule unless it is stale, a duplicate,
    /// or offload is off.
    pub fn handle(&mut self, req: OffloadRequest) {
        self.stats.requested += 1;
        let id = FlowId::of(req.port, &req.key);
        if !self.enabled || req.gen < self.gen || self.installed.contains_key(&id) || self.in_flight.contains(&id) {
            self.stats.discarded += 1;
            return;
        }
        self.start_create(id, req, 0);
    }

    fn start_create(&mut self, id: FlowId, req: OffloadRequest, attempt: u32) {
        while self.installed.len() + self.in_flight.len() >= self.cfg.capacity {
            if !self.evict_coldest() {
                self.stats.failed += 1;
                return;
            }
        }
        let (actions, mark) = match req.intent {
            Intent::Drop => (vec![FlowAction::Drop], None),
            Intent::Mark { queue, mark } => {
                let m = if mark != 0 {
                    mark
                } else {
                    let m = self.next_mark;
                    self.next_mark = self.next_mark.wrapping_add(1).max(1);
                    m
                };
                (vec![FlowAction::Mark(m), FlowAction::Queue(queue)], Some(m))
            }
        };
        let spec = FlowSpec::exact(req.port, &req.key, actions);
        if self.use_async() {
            let user = self.next_user;
            self.next_user += 1;
            self.pending.insert(user, Pending::Create { id, req, attempt, mark });
            self.in_flight.insert(id);
            self.batch.push(Op::Create { user, spec });
            if self.batch.len() >= self.cfg.batch {
                self.flush_batch();
            }
        } else {
            let r = self.backend.create(&spec);
            self.finish_create(id, req, attempt, mark, r);
        }
    }

    fn finish_create(&mut self, id: FlowId, req: OffloadRequest, attempt: u32, mark: Option<u32>, r: Result<HwRuleId, OffloadError>) {
        self.in_flight.remove(&id);
        match r {
            Ok(hw) if req.gen < self.gen || !self.enabled => {
                // Revoked while in flight: take it out again.
                self.stats.discarded += 1;
                self.destroy_hw(hw);
            }
            Ok(hw) => {
                self.stats.installed += 1;
                self.installed.insert(id, Installed { hw, gen: req.gen, mark, last_hits: 0, heat: u64::MAX / 2 });
            }
            Err(OffloadError::NoResources) if attempt + 1 < self.cfg.max_attempts && self.evict_coldest() => {
                self.stats.retries += 1;
                self.start_create(id, req, attempt + 1);
            }
            Err(e) if e.is_transient() && attempt + 1 < self.cfg.max_attempts => {
                self.stats.retries += 1;
                let delay = self.cfg.backoff * 2u32.saturating_pow(attempt);
                self.retry.push_back((Instant::now() + delay, req, attempt + 1));
            }
            Err(e) => {
                if matches!(e, OffloadError::Unsupported(_)) {
                    self.stats.unsupported += 1;
                } else {
                    self.stats.failed += 1;
                }
                self.last_error = Some(e);
            }
        }
    }

    fn destroy_hw(&mut self, hw: HwRuleId) {
        if self.use_async() {
            let user = self.next_user;
            self.next_user += 1;
            self.pending.insert(user, Pending::Destroy);
            self.batch.push(Op::Destroy { user, id: hw });
        } else if let Err(e) = self.backend.destroy(hw) {
            self.last_error = Some(e);
        }
    }

    fn remove(&mut self, id: FlowId) -> bool {
        match self.installed.remove(&id) {
            Some(inst) => {
                self.destroy_hw(inst.hw);
                true
            }
            None => false,
        }
    }

    /// Reads every rule's counters and ranks them by hits since the last scan
    /// (the heat used for eviction). Call periodically.
    pub fn scan(&mut self) {
        let ids: Vec<(FlowId, HwRuleId)> = self.installed.iter().map(|(k, v)| (*k, v.hw)).collect();
        for (id, hw) in ids {
            if let Ok(c) = self.backend.query(hw) {
                if let Some(inst) = self.installed.get_mut(&id) {
                    inst.heat = c.hits.saturating_sub(inst.last_hits);
                    inst.last_hits = c.hits;
                }
            }
        }
    }

    /// One bounded step of a sweep over the rules' counters (as [`Manager::scan`],
    /// `budget` rules at a time, so a caller can interleave revocations with a
    /// sweep whose queries are slow). A new sweep starts when the last one has
    /// ended and `start` is true. Returns true while a sweep is in progress.
    pub fn scan_step(&mut self, budget: usize, start: bool) -> bool {
        if self.sweep.is_empty() {
            if !start {
                return false;
            }
            self.sweep = self.installed.keys().copied().collect();
        }
        for _ in 0..budget {
            let Some(id) = self.sweep.pop() else { break };
            let Some(hw) = self.installed.get(&id).map(|i| i.hw) else { continue };
            if let Ok(c) = self.backend.query(hw) {
                if let Some(inst) = self.installed.get_mut(&id) {
                    inst.heat = c.hits.saturating_sub(inst.last_hits);
                    inst.last_hits = c.hits;
                }
            }
        }
        !self.sweep.is_empty()
    }

    /// Removes the rule with the least heat. False when nothing can be evicted.
    fn evict_coldest(&mut self) -> bool {
        let Some((&id, _)) = self.installed.iter().min_by_key(|(_, v)| v.heat) else { return false };
        self.remove(id);
        self.stats.evicted += 1;
        true
    }

    /// A new policy generation is published: every rule decided under an older
    /// one is destroyed, and older requests are discarded from now on.
    /// Returns how many rules were revoked.
    pub fn revoke_before(&mut self, gen: u64) -> usize {
        self.gen = self.gen.max(gen);
        let old: Vec<FlowId> = self.installed.iter().filter(|(_, v)| v.gen < gen).map(|(k, _)| *k).collect();
        for id in &old {
            self.remove(*id);
        }
        self.retry.retain(|(_, r, _)| r.gen >= gen);
        self.stats.revoked += old.len() as u64;
        self.flush_batch();
        old.len()
    }

    /// Every rule this manager keeps in hardware, as the rule it installed
    /// (for `flow list`), with its handle and generation.
    pub fn rules(&self) -> Vec<(HwRuleId, FlowSpec, u64)> {
        let mut v: Vec<(HwRuleId, FlowSpec, u64)> = self
            .installed
            .iter()
            .map(|(id, inst)| {
                let k = FlowKey::new(id.port, id.src, id.dst, id.proto, id.sport, id.dport);
                let actions = match inst.mark {
                    Some(m) => vec![FlowAction::Mark(m), FlowAction::Queue(0)],
                    None => vec![FlowAction::Drop],
                };
                (inst.hw, FlowSpec::exact(id.port, &k, actions), inst.gen)
            })
            .collect();
        v.sort_by_key(|r| r.0);
        v
    }

    /// True when `hw` is a rule this manager installed.
    pub fn owns(&self, hw: HwRuleId) -> bool {
        self.installed.values().any(|i| i.hw == hw)
    }

    /// Forgets the rule `hw` without destroying it (someone else destroyed it).
    pub fn forget(&mut self, hw: HwRuleId) {
        self.installed.retain(|_, i| i.hw != hw);
    }

    /// Forgets every rule without destroying it (the device was flushed).
    pub fn forget_all(&mut self) {
        self.installed.clear();
    }

    /// The mark values currently in hardware, with their generation.
    pub fn marks(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.installed.values().filter_map(|v| v.mark.map(|m| (m, v.gen)))
    }

    /// Submits the queued asynchronous operations.
    pub fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.batch);
        let mut off = 0;
        let t = Instant::now();
        while off < ops.len() {
            match self.backend.submit(&ops[off..], &mut self.done) {
                Ok(n) => off += n,
                Err(OffloadError::Busy) if t.elapsed() < Duration::from_secs(1) => {
                    // Queue full: collect completions so the device can make room.
                    self.poll_completions();
                    std::hint::spin_loop();
                }
                Err(e) => {
                    for op in &ops[off..] {
                        let user = match op {
                            Op::Create { user, .. } | Op::Destroy { user, .. } => *user,
                        };
                        self.done.push(Completion { user, result: Err(e.clone()) });
                    }
                    break;
                }
            }
        }
        self.poll_completions();
    }

    /// Handles every completion available now, and due retries. Returns how many completions.
    pub fn poll_completions(&mut self) -> usize {
        self.backend.poll(&mut self.done);
        let done = std::mem::take(&mut self.done);
        let n = done.len();
        for c in done {
            match self.pending.remove(&c.user) {
                Some(Pending::Create { id, req, attempt, mark }) => self.finish_create(id, req, attempt, mark, c.result),
                Some(Pending::Destroy) => {
                    if let Err(e) = c.result {
                        self.last_error = Some(e);
                    }
                }
                None => {}
            }
        }
        let now = Instant::now();
        while self.retry.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, req, attempt) = self.retry.pop_front().expect("front exists");
            let id = FlowId::of(req.port, &req.key);
            if req.gen >= self.gen && !self.installed.contains_key(&id) && !self.in_flight.contains(&id) {
                self.start_create(id, req, attempt);
            }
        }
        n
    }

    /// Operations submitted and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Drains up to `budget` requests from `q`, submits, and polls. One step of
    /// the manager thread's loop. Returns the number of requests handled.
    pub fn step(&mut self, q: &ArrayQueue<OffloadRequest>, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(r) = q.pop() else { break };
            self.handle(r);
            n += 1;
        }
        self.flush_batch();
        self.poll_completions();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{channel, HwVerdict, SoftNic, SoftNicConfig};
    use crate::spec::Headers;
    use core::net::Ipv4Addr;

    fn key(i: u16) -> FlowKey {
        FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 1000 + i, 53)
    }
    fn hdr(i: u16) -> Headers {
        Headers { eth_type: 0x0800, key: key(i), ..Default::default() }
    }
    fn fast(capacity: usize) -> SoftNicConfig {
        SoftNicConfig { capacity, sync_call: Duration::ZERO, per_rule: Duration::ZERO, ..Default::default() }
    }
    fn req(i: u16, intent: Intent, gen: u64) -> OffloadRequest {
        OffloadRequest { port: 0, key: key(i), intent, gen }
    }

    #[test]
    fn sync_install_dedup_and_revoke_by_generation() {
        let mut m = Manager::new(SoftNic::new(fast(100)), ManagerConfig::default());
        m.handle(req(1, Intent::Drop, 1));
        m.handle(req(1, Intent::Drop, 1));
        m.handle(req(2, Intent::Mark { queue: 0, mark: 0 }, 1));
        assert_eq!(m.len(), 2);
        assert_eq!(m.stats.discarded, 1);
        assert!(matches!(m.backend().rx(&hdr(1), 64), HwVerdict::Drop(_)));
        assert!(matches!(m.backend().rx(&hdr(2), 64), HwVerdict::Mark { .. }));
        // generation 2: a relaxation; the DROP must go, older requests are stale
        assert_eq!(m.revoke_before(2), 2);
        assert_eq!(m.backend().rx(&hdr(1), 64), HwVerdict::Miss);
        m.handle(req(3, Intent::Drop, 1));
        assert_eq!(m.len(), 0, "a request decided under generation 1 is stale");
        m.handle(req(3, Intent::Drop, 2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn capacity_evicts_the_coldest() {
        let mut m = Manager::new(SoftNic::new(fast(1000)), ManagerConfig { capacity: 3, ..Default::default() });
        for i in 0..3 {
            m.handle(req(i, Intent::Drop, 0));
        }
        // flows 0 and 2 are hot, 1 is cold
        for _ in 0..10 {
            m.backend().rx(&hdr(0), 64);
            m.backend().rx(&hdr(2), 64);
        }
        m.scan();
        m.handle(req(9, Intent::Drop, 0));
        assert_eq!(m.len(), 3);
        assert_eq!(m.stats.evicted, 1);
        assert_eq!(m.backend().rx(&hdr(1), 64), HwVerdict::Miss, "the cold flow was evicted");
        assert!(matches!(m.backend().rx(&hdr(0), 64), HwVerdict::Drop(_)));
        assert!(matches!(m.backend().rx(&hdr(9), 64), HwVerdict::Drop(_)));
    }

    #[test]
    fn device_full_evicts_and_retries_and_unsupported_is_counted() {
        // the device holds 2 rules though the manager thinks 10 fit
        let mut m = Manager::new(SoftNic::new(fast(2)), ManagerConfig { capacity: 10, ..Default::default() });
        for i in 0..3 {
            m.handle(req(i, Intent::Drop, 0));
        }
        assert_eq!(m.len(), 2);
        assert_eq!(m.stats.evicted, 1);
        assert_eq!(m.stats.retries, 1);
        let cfg = SoftNicConfig { items: vec!["eth"], ..fast(10) };
        let mut m = Manager::new(SoftNic::new(cfg), ManagerConfig::default());
        m.handle(req(0, Intent::Drop, 0));
        assert_eq!((m.len(), m.stats.unsupported), (0, 1));
        assert!(matches!(m.last_error, Some(OffloadError::Unsupported(_))));
    }

    #[test]
    fn async_batches_through_a_split_device() {
        let (be, mut port) = channel(fast(1000));
        let mut m = Manager::new(be, ManagerConfig { batch: 8, ..Default::default() });
        let q = request_queue(4);
        let mut f = feeder(&q);
        let mut pushed = 0;
        for i in 0..6 {
            pushed += f.push(req(i, Intent::Mark { queue: 0, mark: 0 }, 0)) as u32;
        }
        assert_eq!((pushed, f.full), (4, 2), "a full queue is counted, never waited on");
        assert_eq!(m.step(&q, 64), 4);
        assert_eq!(m.len(), 0, "nothing installed until the device runs");
        assert_eq!(m.in_flight(), 4);
        port.service(64);
        m.poll_completions();
        assert_eq!(m.len(), 4);
        assert!(matches!(port.rx(&hdr(3), 64), HwVerdict::Mark { .. }));
        assert_eq!(m.marks().count(), 4);
        m.revoke_before(1);
        port.service(64);
        m.poll_completions();
        assert_eq!(port.rx(&hdr(3), 64), HwVerdict::Miss);
        assert_eq!(m.stats.revoked, 4);
    }
}
