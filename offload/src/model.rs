//! The software NIC model: a stand-in for rte_flow hardware on machines whose
//! ports take no rules (every virtual PMD answers ENOTSUP).
//!
//! It keeps rte_flow's match semantics (groups, priorities where a lower value
//! wins, spec/mask items, JUMP between groups, DROP / MARK / QUEUE / COUNT), a
//! capacity (ENOSPC when full) and a latency model. It sits in the rx path of
//! a virtual port: [`SoftNic::rx`] returns what the hardware would have done to
//! a packet before software sees it.
//!
//! Threads: the device state is single-owner. [`channel`] splits it into a
//! [`SoftNicBackend`] (the [`Backend`] the offload manager thread drives) and a
//! [`SoftNicPort`] owned by the lcore that polls the port; the two talk through
//! bounded lock-free queues, and the lcore applies queued operations between
//! bursts ([`SoftNicPort::service`]), as a NIC's own engine would. The lcore
//! never blocks or locks.

use crate::backend::{Backend, Completion, HwCounters, HwRuleId, OffloadError, Op};
use crate::spec::{FlowAction, FlowSpec, Headers, Item};
use crossbeam_queue::ArrayQueue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Model parameters.
#[derive(Clone, Debug)]
pub struct SoftNicConfig {
    /// Rules the table holds; past this, create fails with [`OffloadError::NoResources`].
    pub capacity: usize,
    /// Fixed cost of one synchronous call (driver round trip), busy-waited.
    pub sync_call: Duration,
    /// Cost of one rule update inside the device (both modes), busy-waited when applied.
    pub per_rule: Duration,
    /// Queue depth between the backend and the port (async ops in flight).
    pub queue_depth: usize,
    /// Items the model accepts (by name: eth vlan ipv4 ipv6 tcp udp sctp icmp).
    pub items: Vec<&'static str>,
}

impl Default for SoftNicConfig {
    fn default() -> Self {
        Self {
            capacity: 65536,
            sync_call: Duration::from_micros(10),
            per_rule: Duration::from_nanos(200),
            queue_depth: 4096,
            items: vec!["eth", "vlan", "ipv4", "ipv6", "tcp", "udp", "sctp", "icmp"],
        }
    }
}

fn spin(d: Duration) {
    if d.is_zero() {
        return;
    }
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// What the hardware did to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwVerdict {
    /// No rule matched (or none decided): software handles it in full.
    Miss,
    /// A DROP rule matched: the packet never reaches software.
    Drop(HwRuleId),
    /// A MARK rule matched: the packet reaches software tagged.
    Mark {
        /// The rule.
        rule: HwRuleId,
        /// The mark value.
        mark: u32,
    },
}

/// A fast multiply-xor hasher for the model's tables (a NIC's exact-match
/// table costs no CPU; the model should cost little, and its keys are not
/// attacker-chosen in tests and benches).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Exact 5-tuple key of a fully specified rule, for hashed lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ExactKey {
    group: u32,
    src: u128,
    dst: u128,
    proto: u8,
    sport: u16,
    dport: u16,
}

fn exact_key_of(spec: &FlowSpec) -> Option<ExactKey> {
    let mut k = ExactKey { group: spec.attr.group, src: 0, dst: 0, proto: 0, sport: 0, dport: 0 };
    let mut l3 = false;
    let mut l4 = false;
    for it in &spec.pattern {
        match *it {
            Item::Eth { dst, src, ty } if !dst.is_set() && !src.is_set() && !ty.is_set() => {}
            Item::Ipv4 { src, dst, proto } if src.mask == u32::MAX && dst.mask == u32::MAX && !proto.is_set() => {
                k.src = flowtable::key::v4_mapped(src.spec);
                k.dst = flowtable::key::v4_mapped(dst.spec);
                l3 = true;
            }
            Item::Ipv6 { src, dst, proto } if src.mask == u128::MAX && dst.mask == u128::MAX && !proto.is_set() => {
                k.src = src.spec;
                k.dst = dst.spec;
                l3 = true;
            }
            Item::Tcp { src, dst } | Item::Udp { src, dst } | Item::Sctp { src, dst }
                if src.mask == u16::MAX && dst.mask == u16::MAX =>
            {
                k.proto = match it {
                    Item::Tcp { .. } => 6,
                    Item::Udp { .. } => 17,
                    _ => 132,
                };
                k.sport = src.spec;
                k.dport = dst.spec;
                l4 = true;
            }
            _ => return None,
        }
    }
    (l3 && l4).then_some(k)
}

#[derive(Clone, Debug)]
struct Entry {
    spec: FlowSpec,
    counters: HwCounters,
}

/// The device state.
#[derive(Debug)]
pub struct SoftNic {
    cfg: SoftNicConfig,
    rules: FastMap<HwRuleId, Entry>,
    exact: FastMap<ExactKey, HwRuleId>,
    /// Non-exact rules, sorted by (group, priority, id).
    masked: Vec<(u32, u32, HwRuleId)>,
    next_id: u32,
}

impl SoftNic {
    /// An empty device.
    pub fn new(cfg: SoftNicConfig) -> Self {
        Self { cfg, rules: FastMap::default(), exact: FastMap::default(), masked: Vec::new(), next_id: 0 }
    }

    fn check(&self, spec: &FlowSpec) -> Result<(), OffloadError> {
        if !spec.attr.ingress {
            return Err(OffloadError::Unsupported("only ingress rules".into()));
        }
        for it in &spec.pattern {
            let name = match it {
                Item::Eth { .. } => "eth",
                Item::Vlan { .. } => "vlan",
                Item::Ipv4 { .. } => "ipv4",
                Item::Ipv6 { .. } => "ipv6",
                Item::Tcp { .. } => "tcp",
                Item::Udp { .. } => "udp",
                Item::Sctp { .. } => "sctp",
                Item::Icmp { .. } => "icmp",
            };
            if !self.cfg.items.contains(&name) {
                return Err(OffloadError::Unsupported(format!("item {name}")));
            }
        }
        for a in &spec.actions {
            if let FlowAction::RepresentedPort(_) = a {
                return Err(OffloadError::Unsupported("represented_port".into()));
            }
        }
        if spec.actions.contains(&FlowAction::Drop) && spec.actions.iter().any(|a| matches!(a, FlowAction::Mark(_) | FlowAction::Queue(_))) {
            return Err(OffloadError::Invalid("drop with mark/queue".into()));
        }
        Ok(())
    }

    /// Applies one rule insert (no latency).
    fn insert(&mut self, spec: &FlowSpec) -> Result<HwRuleId, OffloadError> {
        self.check(spec)?;
        if self.rules.len() >= self.cfg.capacity {
            return Err(OffloadError::NoResources);
        }
        let id = HwRuleId(self.next_id);
        if let Some(k) = exact_key_of(spec) {
            if self.exact.contains_key(&k) {
                return Err(OffloadError::Exists);
            }
            self.exact.insert(k, id);
        } else {
            let key = (spec.attr.group, spec.attr.priority, id);
            let at = self.masked.partition_point(|e| *e < key);
            self.masked.insert(at, key);
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.rules.insert(id, Entry { spec: spec.clone(), counters: HwCounters::default() });
        Ok(id)
    }

    fn remove(&mut self, id: HwRuleId) -> Result<(), OffloadError> {
        let e = self.rules.remove(&id).ok_or(OffloadError::NoSuchRule(id.0))?;
        match exact_key_of(&e.spec) {
            Some(k) => {
                self.exact.remove(&k);
            }
            None => self.masked.retain(|m| m.2 != id),
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Completion {
        spin(self.cfg.per_rule);
        match op {
            Op::Create { user, spec } => Completion { user: *user, result: self.insert(spec) },
            Op::Destroy { user, id } => Completion { user: *user, result: self.remove(*id).map(|_| *id) },
        }
    }

    /// The rule that decides `h` in `group` (lower priority value, then lower id, wins).
    fn best_in_group(&self, group: u32, h: &Headers) -> Option<HwRuleId> {
        let k = &h.key;
        let ek = ExactKey { group, src: k.src, dst: k.dst, proto: k.proto, sport: k.sport, dport: k.dport };
        let exact = self.exact.get(&ek).copied();
        let start = self.masked.partition_point(|e| e.0 < group);
        if !matches!(self.masked.get(start), Some(m) if m.0 == group) {
            return exact;
        }
        let exact_prio = exact.map(|id| (self.rules[&id].spec.attr.priority, id));
        for &(g, prio, id) in &self.masked[start..] {
            if g != group || exact_prio.is_some_and(|ep| (prio, id) > ep) {
                break;
            }
            if self.rules[&id].spec.matches(h) {
                return Some(id);
            }
        }
        exact
    }

    /// What the hardware does to one received packet of `len` bytes.
    #[inline]
    pub fn rx(&mut self, h: &Headers, len: u32) -> HwVerdict {
        if self.rules.is_empty() {
            return HwVerdict::Miss;
        }
        let mut group = 0;
        for _hop in 0..8 {
            let Some(id) = self.best_in_group(group, h) else { return HwVerdict::Miss };
            let e = self.rules.get_mut(&id).expect("indexed rule exists");
            let mut next = None;
            let mut mark = None;
            for a in &e.spec.actions {
                match a {
                    FlowAction::Count => {}
                    FlowAction::Drop => {
                        e.counters.hits += 1;
                        e.counters.bytes += len as u64;
                        return HwVerdict::Drop(id);
                    }
                    FlowAction::Mark(m) => mark = Some(*m),
                    FlowAction::Jump(g) => next = Some(*g),
                    FlowAction::Queue(_) | FlowAction::Rss(_) | FlowAction::RepresentedPort(_) => {}
                }
            }
            e.counters.hits += 1;
            e.counters.bytes += len as u64;
            if let Some(mark) = mark {
                return HwVerdict::Mark { rule: id, mark };
            }
            match next {
                Some(g) => group = g,
                None => return HwVerdict::Miss,
            }
        }
        HwVerdict::Miss
    }

    /// The installed rule with this handle.
    pub fn rule(&self, id: HwRuleId) -> Option<&FlowSpec> {
        self.rules.get(&id).map(|e| &e.spec)
    }

    /// All installed rules, by handle.
    pub fn rules(&self) -> impl Iterator<Item = (HwRuleId, &FlowSpec)> {
        self.rules.iter().map(|(id, e)| (*id, &e.spec))
    }
}

impl Backend for SoftNic {
    fn name(&self) -> String {
        "softnic".into()
    }
    fn validate(&mut self, spec: &FlowSpec) -> Result<(), OffloadError> {
        self.check(spec)
    }
    fn create(&mut self, spec: &FlowSpec) -> Result<HwRuleId, OffloadError> {
        spin(self.cfg.sync_call);
        self.apply(&Op::Create { user: 0, spec: spec.clone() }).result
    }
    fn destroy(&mut self, id: HwRuleId) -> Result<(), OffloadError> {
        spin(self.cfg.sync_call);
        self.apply(&Op::Destroy { user: 0, id }).result.map(|_| ())
    }
    fn query(&mut self, id: HwRuleId) -> Result<HwCounters, OffloadError> {
        self.rules.get(&id).map(|e| e.counters).ok_or(OffloadError::NoSuchRule(id.0))
    }
    fn flush(&mut self) -> Result<(), OffloadError> {
        self.rules.clear();
        self.exact.clear();
        self.masked.clear();
        Ok(())
    }
    fn installed(&self) -> usize {
        self.rules.len()
    }
}

/// Shared between the two halves of a split device.
#[derive(Debug)]
struct Shared {
    ops: ArrayQueue<Op>,
    done: ArrayQueue<Completion>,
    installed: AtomicUsize,
    /// Queries and flushes (rare, from the shell): (tag, request).
    ctl: ArrayQueue<(u64, Ctl)>,
    ctl_done: ArrayQueue<(u64, Result<HwCounters, OffloadError>)>,
}

/// A rare request the port half answers between bursts.
#[derive(Clone, Copy, Debug)]
enum Ctl {
    Query(HwRuleId),
    Flush,
}

/// The manager's half of a split device: a [`Backend`] whose operations are
/// carried out by the port's lcore.
#[derive(Debug)]
pub struct SoftNicBackend {
    shared: Arc<Shared>,
    sync_call: Duration,
    checker: SoftNic,
    next_user: u64,
    stash: Vec<Completion>,
}

/// The lcore's half of a split device: the device itself.
#[derive(Debug)]
pub struct SoftNicPort {
    shared: Arc<Shared>,
    /// The device state (rules, counters).
    pub nic: SoftNic,
}

/// Splits a new device into the manager's backend and the lcore's port half.
pub fn channel(cfg: SoftNicConfig) -> (SoftNicBackend, SoftNicPort) {
    let shared = Arc::new(Shared {
        ops: ArrayQueue::new(cfg.queue_depth.max(1)),
        done: ArrayQueue::new(cfg.queue_depth.max(1)),
        installed: AtomicUsize::new(0),
        ctl: ArrayQueue::new(16),
        ctl_done: ArrayQueue::new(16),
    });
    let b = SoftNicBackend {
        shared: shared.clone(),
        sync_call: cfg.sync_call,
        checker: SoftNic::new(cfg.clone()),
        next_user: 1 << 63,
        stash: Vec::new(),
    };
    (b, SoftNicPort { shared, nic: SoftNic::new(cfg) })
}

impl SoftNicPort {
    /// Applies up to `budget` queued operations. Called by the lcore between bursts.
    pub fn service(&mut self, budget: usize) -> usize {
        let mut n = 0;
        while n < budget && !self.shared.done.is_full() {
            let Some(op) = self.shared.ops.pop() else { break };
            let c = self.nic.apply(&op);
            // Cannot fail: we checked for room and we are the only producer.
            let _ = self.shared.done.push(c);
            n += 1;
        }
        if !self.shared.ctl.is_empty() && !self.shared.ctl_done.is_full() {
            if let Some((tag, c)) = self.shared.ctl.pop() {
                let r = match c {
                    Ctl::Query(id) => self.nic.query(id),
                    Ctl::Flush => self.nic.flush().map(|_| HwCounters::default()),
                };
                // Cannot fail: checked for room, single producer.
                let _ = self.shared.ctl_done.push((tag, r));
            }
        }
        // Relaxed: a statistic for `installed()`, no data is published through it.
        self.shared.installed.store(self.nic.installed(), Ordering::Relaxed);
        n
    }

    /// What the hardware does to one received packet.
    #[inline]
    pub fn rx(&mut self, h: &Headers, len: u32) -> HwVerdict {
        self.nic.rx(h, len)
    }
}

impl SoftNicBackend {
    /// Runs one query or flush on the port half and waits for the answer.
    fn ctl(&mut self, c: Ctl) -> Result<HwCounters, OffloadError> {
        let tag = self.next_user;
        self.next_user += 1;
        if self.shared.ctl.push((tag, c)).is_err() {
            return Err(OffloadError::Busy);
        }
        let t = Instant::now();
        loop {
            while let Some((t2, r)) = self.shared.ctl_done.pop() {
                if t2 == tag {
                    return r;
                }
            }
            // Short: a device whose port half stopped polling must not hold the
            // caller (a late answer is discarded by its tag).
            if t.elapsed() > Duration::from_millis(200) {
                return Err(OffloadError::Busy);
            }
            std::thread::yield_now();
        }
    }

    /// Runs one op synchronously: enqueue, wait for its completion.
    fn roundtrip(&mut self, op: Op) -> Result<HwRuleId, OffloadError> {
        spin(self.sync_call);
        let user = self.next_user;
        self.next_user += 1;
        let op = match op {
            Op::Create { spec, .. } => Op::Create { user, spec },
            Op::Destroy { id, .. } => Op::Destroy { user, id },
        };
        if self.shared.ops.push(op).is_err() {
            return Err(OffloadError::Busy);
        }
        let t = Instant::now();
        loop {
            while let Some(c) = self.shared.done.pop() {
                if c.user == user {
                    return c.result;
                }
                self.stash.push(c);
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err(OffloadError::Busy);
            }
            std::hint::spin_loop();
        }
    }
}

impl Backend for SoftNicBackend {
    fn name(&self) -> String {
        "softnic".into()
    }
    fn validate(&mut self, spec: &FlowSpec) -> Result<(), OffloadError> {
        self.checker.check(spec)
    }
    fn create(&mut self, spec: &FlowSpec) -> Result<HwRuleId, OffloadError> {
        self.roundtrip(Op::Create { user: 0, spec: spec.clone() })
    }
    fn destroy(&mut self, id: HwRuleId) -> Result<(), OffloadError> {
        self.roundtrip(Op::Destroy { user: 0, id }).map(|_| ())
    }
    fn query(&mut self, id: HwRuleId) -> Result<HwCounters, OffloadError> {
        self.ctl(Ctl::Query(id))
    }
    fn flush(&mut self) -> Result<(), OffloadError> {
        self.ctl(Ctl::Flush).map(|_| ())
    }
    fn has_async(&self) -> bool {
        true
    }
    fn submit(&mut self, ops: &[Op], _done: &mut Vec<Completion>) -> Result<usize, OffloadError> {
        let mut n = 0;
        for op in ops {
            if self.shared.ops.push(op.clone()).is_err() {
                break;
            }
            n += 1;
        }
        if n == 0 && !ops.is_empty() {
            return Err(OffloadError::Busy);
        }
        Ok(n)
    }
    fn poll(&mut self, done: &mut Vec<Completion>) -> usize {
        let before = done.len();
        done.append(&mut self.stash);
        while let Some(c) = self.shared.done.pop() {
            done.push(c);
        }
        done.len() - before
    }
    fn installed(&self) -> usize {
        // Relaxed: see SoftNicPort::service.
        self.shared.installed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{parse_flow, FlowCommand};
    use core::net::Ipv4Addr;
    use flowtable::FlowKey;

    fn spec(line: &str) -> FlowSpec {
        match parse_flow(line).unwrap() {
            FlowCommand::Create(s) => s,
            c => panic!("{c:?}"),
        }
    }
    fn hdr(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Headers {
        Headers { eth_type: 0x0800, key: FlowKey::v4(0, src.into(), dst.into(), proto, sport, dport), ..Default::default() }
    }
    fn fast() -> SoftNicConfig {
        SoftNicConfig { sync_call: Duration::ZERO, per_rule: Duration::ZERO, ..Default::default() }
    }

    #[test]
    fn priority_groups_masks_and_jump() {
        let mut nic = SoftNic::new(fast());
        let drop10 = nic
            .create(&spec("flow create 0 priority 5 ingress pattern eth / ipv4 src spec 10.0.0.0 src prefix 8 / end actions drop / end"))
            .unwrap();
        let mark = nic
            .create(&spec("flow create 0 priority 1 ingress pattern eth / ipv4 src is 10.1.1.1 / tcp dst is 80 / end actions mark id 7 / queue index 0 / end"))
            .unwrap();
        assert_eq!(nic.rx(&hdr([10, 1, 1, 1], [1, 1, 1, 1], 6, 9, 80), 64), HwVerdict::Mark { rule: mark, mark: 7 });
        assert_eq!(nic.rx(&hdr([10, 1, 1, 1], [1, 1, 1, 1], 6, 9, 81), 64), HwVerdict::Drop(drop10));
        assert_eq!(nic.rx(&hdr([11, 1, 1, 1], [1, 1, 1, 1], 6, 9, 80), 64), HwVerdict::Miss);
        // jump: group 0 sends udp to group 1, which drops port 53
        nic.create(&spec("flow create 0 ingress pattern eth / udp / end actions jump group 1 / end")).unwrap();
        let d53 = nic.create(&spec("flow create 0 group 1 ingress pattern udp dst is 53 / end actions drop / end")).unwrap();
        assert_eq!(nic.rx(&hdr([11, 1, 1, 1], [1, 1, 1, 1], 17, 9, 53), 64), HwVerdict::Drop(d53));
        assert_eq!(nic.rx(&hdr([11, 1, 1, 1], [1, 1, 1, 1], 17, 9, 54), 64), HwVerdict::Miss);
        assert_eq!(nic.query(drop10).unwrap(), HwCounters { hits: 1, bytes: 64 });
        nic.destroy(drop10).unwrap();
        assert_eq!(nic.rx(&hdr([10, 1, 1, 1], [1, 1, 1, 1], 6, 9, 81), 64), HwVerdict::Miss);
        assert_eq!(nic.destroy(drop10), Err(OffloadError::NoSuchRule(drop10.0)));
    }

    #[test]
    fn exact_rule_with_lower_priority_value_beats_masked() {
        let mut nic = SoftNic::new(fast());
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 5, 6);
        let mut ex = FlowSpec::exact(0, &k, vec![FlowAction::Mark(1)]);
        ex.attr.priority = 0;
        let ex = nic.create(&ex).unwrap();
        let wide = nic.create(&spec("flow create 0 priority 3 ingress pattern eth / ipv4 / end actions drop / end")).unwrap();
        let h = Headers { eth_type: 0x0800, key: k, ..Default::default() };
        assert_eq!(nic.rx(&h, 60), HwVerdict::Mark { rule: ex, mark: 1 });
        let mut other = h;
        other.key.sport = 99;
        assert_eq!(nic.rx(&other, 60), HwVerdict::Drop(wide));
        assert_eq!(nic.create(&FlowSpec::exact(0, &k, vec![FlowAction::Drop])), Err(OffloadError::Exists));
    }

    #[test]
    fn capacity_and_capabilities() {
        let mut nic = SoftNic::new(SoftNicConfig { capacity: 2, items: vec!["eth", "ipv4"], ..fast() });
        let r = spec("flow create 0 ingress pattern eth / ipv4 / end actions drop / end");
        nic.create(&r).unwrap();
        nic.create(&r).unwrap();
        assert_eq!(nic.create(&r), Err(OffloadError::NoResources));
        let tcp = spec("flow create 0 ingress pattern eth / ipv4 / tcp / end actions drop / end");
        assert!(matches!(nic.validate(&tcp), Err(OffloadError::Unsupported(_))));
        assert_eq!(nic.installed(), 2);
        nic.flush().unwrap();
        assert_eq!(nic.installed(), 0);
    }

    #[test]
    fn split_device_applies_ops_on_the_port_side() {
        let (mut be, mut port) = channel(fast());
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 5, 6);
        let ops: Vec<Op> = (0..10u16)
            .map(|i| {
                let mut k = k;
                k.sport = i;
                Op::Create { user: i as u64, spec: FlowSpec::exact(0, &k, vec![FlowAction::Drop]) }
            })
            .collect();
        let mut done = Vec::new();
        assert_eq!(be.submit(&ops, &mut done).unwrap(), 10);
        assert_eq!(be.poll(&mut done), 0, "nothing completes before the port services the queue");
        assert_eq!(port.service(4), 4);
        assert_eq!(port.service(100), 6);
        assert_eq!(be.poll(&mut done), 10);
        assert!(done.iter().all(|c| c.result.is_ok()));
        assert_eq!(be.installed(), 10);
        let with_sport = move |p: u16| {
            let mut k2 = k;
            k2.sport = p;
            k2
        };
        let h = Headers { eth_type: 0x0800, key: with_sport(3), ..Default::default() };
        assert!(matches!(port.rx(&h, 64), HwVerdict::Drop(_)));
        // a synchronous create needs the port to run: do it from another thread
        let t = std::thread::spawn(move || be.create(&FlowSpec::exact(0, &with_sport(77), vec![FlowAction::Mark(9)])));
        let mut served = 0;
        while served == 0 {
            served = port.service(8);
        }
        assert!(t.join().unwrap().is_ok());
        let h = Headers { eth_type: 0x0800, key: with_sport(77), ..Default::default() };
        assert!(matches!(port.rx(&h, 64), HwVerdict::Mark { mark: 9, .. }));
    }
}
