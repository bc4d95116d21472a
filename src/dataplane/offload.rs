//! Hardware offload in the policy switch, with the software NIC model
//! (offload::model) standing in for the NIC of a virtual port.
//!
//! ```text
//! lcore, per rx burst on a model-offloaded port (LcoreOffload):
//!   model rx (the "NIC" parses and matches every packet):
//!     DROP rule        -> freed before software, counted as a hardware drop
//!     MARK m           -> mark slot m: same generation as the burst's state?
//!                           yes: forward with the verdict bound to m (no parse,
//!                                no lookup in software)
//!                           no:  ignored (counted stale); software decides
//!     miss             -> software (parse, cache, classifier, conntrack)
//!   software verdicts feed the hot-flow detector; a flow crossing the
//!   threshold is requested (lock-free queue, never waited on):
//!     policy deny -> DROP; allow -> a fresh mark slot bound to (generation,
//!     destination), MARK + QUEUE
//! offload thread (OffloadRuntime): one offload::Manager per model port;
//!   on every new generation revokes older rules (a relaxation removes
//!   hardware DROPs), installs quarantine prefix DROPs at once, runs the
//!   shell's `flow` commands, and services a model's queue while no lcore
//!   holds it (forwarding stopped).
//! ```
//! The lcore side allocates nothing and takes no lock per burst: the model's
//! port half is taken from its slot when the lcore starts and given back when
//! it stops. (The model's own rule inserts, applied between bursts as a NIC
//! engine would, do allocate: they simulate the device, not Bulkhead's path.)

use super::state::DpState;
use crossbeam_queue::ArrayQueue;
use flowtable::act::{DropReason, Fate};
use flowtable::leftright::Reader;
use offload::manager::{feeder, request_queue};
use offload::model::{channel, SoftNicBackend, SoftNicPort};
use offload::{
    Backend, FlowAction, FlowCommand, FlowSpec, Headers, HotConfig, HotDetector, HwRuleId, HwVerdict, Intent, Manager, ManagerConfig,
    OffloadError, OffloadRequest, OffloadStats, SoftNicConfig,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of the model offload (from `[policy]`).
#[derive(Clone, Debug)]
pub struct OffloadSettings {
    /// Packets within one millisecond that make a flow hot.
    pub threshold: u32,
    /// Rules per model port.
    pub capacity: usize,
}

impl Default for OffloadSettings {
    fn default() -> Self {
        OffloadSettings { threshold: 64, capacity: 8192 }
    }
}

/// Mark slots per lcore (a power of two); the slot is the mark's low bits.
const MARK_SLOTS: usize = 4096;
const SLOT_BITS: u32 = MARK_SLOTS.trailing_zeros();

/// What a mark stands for: the verdict software decided, under which generation.
#[derive(Clone, Copy, Debug, Default)]
struct MarkSlot {
    /// The full mark value last bound to this slot (0: never).
    mark: u32,
    gen: u64,
    dest: u16,
}

/// Counters of one lcore's offload path (single writer, relaxed).
#[derive(Debug, Default)]
pub struct LcoreOffloadStats {
    /// Packets a hardware DROP rule freed.
    pub hw_drops: AtomicU64,
    /// Packets forwarded on a current mark (software skipped parse and lookup).
    pub hw_marked: AtomicU64,
    /// Marked packets whose mark was older than the generation: software decided.
    pub stale_marks: AtomicU64,
    /// Hot flows requested.
    pub requests: AtomicU64,
    /// Requests the full queue refused.
    pub queue_full: AtomicU64,
    /// TSC cycles this lcore spent in the model itself (header extraction and
    /// rule match: the NIC's work, which real hardware does off the CPU).
    pub model_cycles: AtomicU64,
}

/// State shared by the control thread, the offload thread and the lcores.
#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    threshold: AtomicU32,
    lcores: Mutex<Vec<Arc<LcoreOffloadStats>>>,
}

/// A model port: its device half lives here while no lcore holds it.
#[derive(Debug)]
struct PortSlot {
    port: u16,
    dev: Mutex<Option<SoftNicPort>>,
}

#[inline]
fn bump(c: &AtomicU64, v: u64) {
    // Single writer (the lcore): load + store, readers see a recent value.
    c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

#[inline]
fn key_hash(h: &Headers) -> u32 {
    let k = &h.key;
    let mut x = (k.src as u64) ^ ((k.src >> 64) as u64).rotate_left(17) ^ (k.dst as u64).rotate_left(31) ^ ((k.dst >> 64) as u64).rotate_left(47);
    x ^= (k.sport as u64) << 16 | (k.dport as u64) << 32 | (k.proto as u64) << 48;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as u32
}

/// What the model did with one packet, as the handler needs it.
#[derive(Clone, Copy, Debug)]
pub enum Pre {
    /// Software decides (with the model's headers, if it parsed the frame).
    Soft(Option<Headers>),
    /// A hardware DROP freed it.
    Dropped,
    /// A current mark: forward to this destination id.
    Forward(u16),
}

/// One lcore's offload path.
#[derive(Debug)]
pub struct LcoreOffload {
    shared: Arc<Shared>,
    /// Models this lcore polls: (port, device half, its slot to give back).
    devs: Vec<(u16, Option<SoftNicPort>, Arc<PortSlot>)>,
    /// Port id -> index into `devs` (u8::MAX: none).
    dev_of_port: Vec<u8>,
    marks: Box<[MarkSlot]>,
    next_slot: usize,
    next_seq: u32,
    hot: HotDetector,
    feeder: offload::Feeder,
    stats: Arc<LcoreOffloadStats>,
    cur: usize,
}

impl LcoreOffload {
    /// Accounts cycles spent in the model (see [`LcoreOffloadStats::model_cycles`]).
    #[inline]
    pub fn add_model_cycles(&mut self, c: u64) {
        bump(&self.stats.model_cycles, c);
    }

    /// True when `port` has a model on this lcore (selects it for the burst).
    #[inline]
    pub fn has_model(&mut self, port: u16) -> bool {
        match self.dev_of_port.get(port as usize) {
            Some(&i) if i != u8::MAX => {
                self.cur = i as usize;
                true
            }
            _ => false,
        }
    }

    /// Once per burst on a model port: lets the model apply queued rule
    /// operations (as a NIC's engine would between packets; also while
    /// offload is off, so its rules do go) and picks up a new threshold.
    /// Returns true when offload is on: packets go through the model.
    #[inline]
    pub fn begin_burst(&mut self) -> bool {
        if let Some(d) = self.devs[self.cur].1.as_mut() {
            d.service(64);
        }
        let t = self.shared.threshold.load(Ordering::Relaxed);
        if t != self.hot.threshold() {
            self.hot.set_threshold(t);
        }
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// The model's verdict on one frame of the current port, resolved against
    /// the burst's generation `gen`.
    #[inline]
    pub fn rx(&mut self, frame: &[u8], port: u16, gen: u64) -> Pre {
        let Some(h) = Headers::from_frame(frame, port) else { return Pre::Soft(None) };
        let Some(dev) = self.devs[self.cur].1.as_mut() else { return Pre::Soft(Some(h)) };
        match dev.rx(&h, frame.len() as u32) {
            HwVerdict::Miss => Pre::Soft(Some(h)),
            HwVerdict::Drop(_) => {
                bump(&self.stats.hw_drops, 1);
                Pre::Dropped
            }
            HwVerdict::Mark { mark, .. } => {
                let s = self.marks[mark as usize & (MARK_SLOTS - 1)];
                if s.mark == mark && s.gen == gen {
                    bump(&self.stats.hw_marked, 1);
                    Pre::Forward(s.dest)
                } else {
                    bump(&self.stats.stale_marks, 1);
                    Pre::Soft(Some(h))
                }
            }
        }
    }

    /// Feeds one software verdict to the hot-flow detector; a flow crossing
    /// the threshold is requested for hardware.
    #[inline]
    pub fn observe(&mut self, h: &Headers, port: u16, queue: u16, fate: Fate, gen: u64, now: u64) {
        if !matches!(fate, Fate::Forward(_) | Fate::Drop(DropReason::PolicyEgress | DropReason::PolicyIngress)) {
            return;
        }
        if !self.hot.observe(key_hash(h), now) {
            return;
        }
        let intent = match fate {
            Fate::Forward(dest) => {
                let slot = self.next_slot;
                self.next_slot = (self.next_slot + 1) & (MARK_SLOTS - 1);
                if slot == 0 {
                    self.next_seq = (self.next_seq + 1) & ((1 << (32 - SLOT_BITS)) - 1);
                    if self.next_seq == 0 {
                        self.next_seq = 1;
                    }
                }
                let mark = self.next_seq << SLOT_BITS | slot as u32;
                self.marks[slot] = MarkSlot { mark, gen, dest };
                Intent::Mark { queue, mark }
            }
            _ => Intent::Drop,
        };
        let mut key = h.key;
        key.src_id = 0;
        key.dst_id = 0;
        if self.feeder.push(OffloadRequest { port, key, intent, gen }) {
            bump(&self.stats.requests, 1);
        } else {
            bump(&self.stats.queue_full, 1);
        }
    }
}

impl Drop for LcoreOffload {
    fn drop(&mut self) {
        for (_, dev, slot) in &mut self.devs {
            if let Some(d) = dev.take() {
                *slot.dev.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
            }
        }
    }
}

type Reply = mpsc::Sender<Result<String, String>>;

enum Cmd {
    Flow(FlowCommand, Reply),
    Show(Reply),
    Enable(bool, Reply),
    Quarantine(Vec<IpAddr>, bool, Reply),
}

/// The offload thread and the model ports it manages.
#[derive(Debug)]
pub struct OffloadRuntime {
    shared: Arc<Shared>,
    slots: Vec<Arc<PortSlot>>,
    q: Arc<ArrayQueue<OffloadRequest>>,
    cmd: Mutex<mpsc::Sender<Cmd>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// One model port on the offload thread.
struct ModelPort {
    slot: Arc<PortSlot>,
    mgr: Manager<SoftNicBackend>,
    /// Rules created from the shell (`flow create`).
    user: BTreeMap<u32, FlowSpec>,
    /// Quarantine prefix DROPs by address.
    quarantine: BTreeMap<IpAddr, [HwRuleId; 2]>,
}

impl ModelPort {
    /// Runs `f` on the device: directly while no lcore holds it, else through
    /// the split backend (the lcore applies it between bursts).
    fn with_dev<T>(&mut self, f: impl FnOnce(&mut dyn Backend) -> T) -> T {
        let mut g = self.slot.dev.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(d) => {
                // The manager's queued operations go first, in order.
                d.service(usize::MAX);
                let r = f(&mut d.nic);
                drop(g);
                self.mgr.poll_completions();
                r
            }
            None => {
                drop(g);
                f(self.mgr.backend())
            }
        }
    }
}

fn flow_text(m: &mut ModelPort, c: FlowCommand) -> Result<String, String> {
    let port = m.slot.port;
    let e = |e: OffloadError| format!("port {port}: {e}");
    match c {
        FlowCommand::Validate(s) => m.with_dev(|d| d.validate(&s)).map(|_| "Flow rule validated".to_string()).map_err(e),
        FlowCommand::Create(s) => {
            let id = m.with_dev(|d| d.create(&s)).map_err(e)?;
            m.user.insert(id.0, s);
            Ok(format!("Flow rule #{} created", id.0))
        }
        FlowCommand::Destroy { rules, .. } => {
            let mut out = Vec::new();
            for r in rules {
                m.with_dev(|d| d.destroy(HwRuleId(r))).map_err(e)?;
                m.user.remove(&r);
                m.mgr.forget(HwRuleId(r));
                m.quarantine.retain(|_, v| !v.contains(&HwRuleId(r)));
                out.push(format!("Flow rule #{r} destroyed"));
            }
            Ok(out.join("\n"))
        }
        FlowCommand::Flush(_) => {
            m.with_dev(|d| d.flush()).map_err(e)?;
            m.user.clear();
            m.quarantine.clear();
            m.mgr.forget_all();
            Ok(format!("Flushed all flow rules on port {port}"))
        }
        FlowCommand::Query { rule, .. } => {
            let c = m.with_dev(|d| d.query(HwRuleId(rule))).map_err(e)?;
            Ok(format!("COUNT:\n hits_set: 1\n bytes_set: 1\n hits: {}\n bytes: {}", c.hits, c.bytes))
        }
        FlowCommand::List(_) => {
            let mut rows: Vec<(u32, String, String)> = m.user.iter().map(|(id, s)| (*id, "shell".to_string(), s.to_string())).collect();
            for (id, s, gen) in m.mgr.rules() {
                rows.push((id.0, format!("gen {gen}"), s.to_string()));
            }
            for (a, ids) in &m.quarantine {
                for (i, id) in ids.iter().enumerate() {
                    rows.push((id.0, format!("quarantine {a} {}", if i == 0 { "src" } else { "dst" }), String::new()));
                }
            }
            rows.sort_by_key(|r| r.0);
            let mut out = format!("{:<6} {:<22} rule\n", "ID", "origin");
            for (id, origin, s) in rows {
                out.push_str(&format!("{id:<6} {origin:<22} {s}\n"));
            }
            Ok(out.trim_end().to_string())
        }
    }
}

struct Worker {
    ports: Vec<ModelPort>,
    reader: Reader<DpState>,
    shared: Arc<Shared>,
    q: Arc<ArrayQueue<OffloadRequest>>,
    last_gen: u64,
}

impl Worker {
    fn port(&mut self, id: u16) -> Option<&mut ModelPort> {
        self.ports.iter_mut().find(|p| p.slot.port == id)
    }

    fn show(&mut self) -> String {
        let mut t = OffloadStats::default();
        let mut in_hw = 0;
        let mut last_error = None;
        for p in &mut self.ports {
            let s = p.mgr.stats;
            t.requested += s.requested;
            t.installed += s.installed;
            t.failed += s.failed;
            t.evicted += s.evicted;
            t.revoked += s.revoked;
            t.retries += s.retries;
            t.discarded += s.discarded;
            t.unsupported += s.unsupported;
            in_hw += p.mgr.backend().installed();
            if let Some(e) = &p.mgr.last_error {
                last_error = Some(e.to_string());
            }
        }
        let l = |f: fn(&LcoreOffloadStats) -> &AtomicU64| -> u64 {
            self.shared.lcores.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        let ports: Vec<String> = self.ports.iter().map(|p| p.slot.port.to_string()).collect();
        format!(
            "  ######################## Offload (software NIC model) ########################\n\
             \x20 state: {}  ports: {}  threshold: {} packets/ms  generation: {}\n\
             \x20 rules in hardware: {in_hw}\n\
             \x20 installed: {}  failed: {}  evicted: {}  revoked: {}  retries: {}  discarded: {}  unsupported: {}\n\
             \x20 hardware hits: {}  hw drops: {}  stale marks: {}\n\
             \x20 requests: {}  queue full: {}\n\
             \x20 last error: {}\n\
             \x20 ############################################################################",
            if self.shared.enabled.load(Ordering::Relaxed) { "on" } else { "off" },
            ports.join(","),
            self.shared.threshold.load(Ordering::Relaxed),
            self.last_gen,
            t.installed,
            t.failed,
            t.evicted,
            t.revoked,
            t.retries,
            t.discarded,
            t.unsupported,
            l(|s| &s.hw_marked) + l(|s| &s.hw_drops),
            l(|s| &s.hw_drops),
            l(|s| &s.stale_marks),
            l(|s| &s.requests),
            l(|s| &s.queue_full),
            last_error.unwrap_or_else(|| "none".into()),
        )
    }

    fn quarantine(&mut self, addrs: &[IpAddr], on: bool) -> Result<String, String> {
        let mut n = 0;
        for p in &mut self.ports {
            let port = p.slot.port;
            for a in addrs {
                if on && !p.quarantine.contains_key(a) {
                    let addr = flowtable::key::addr_of(*a);
                    let src = FlowSpec::prefix(port, addr, 128, true, vec![FlowAction::Drop]);
                    let dst = FlowSpec::prefix(port, addr, 128, false, vec![FlowAction::Drop]);
                    let s = p.with_dev(|d| d.create(&src)).map_err(|e| format!("port {port}: quarantine {a}: {e}"))?;
                    let d = match p.with_dev(|d| d.create(&dst)) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = p.with_dev(|d| d.destroy(s));
                            return Err(format!("port {port}: quarantine {a}: {e}"));
                        }
                    };
                    p.quarantine.insert(*a, [s, d]);
                    n += 2;
                } else if !on {
                    if let Some(ids) = p.quarantine.remove(a) {
                        for id in ids {
                            p.with_dev(|d| d.destroy(id)).map_err(|e| format!("port {port}: unquarantine {a}: {e}"))?;
                            n += 1;
                        }
                    }
                }
            }
        }
        Ok(format!("{n} quarantine prefix rules {}", if on { "installed" } else { "removed" }))
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Show(r) => {
                let _ = r.send(Ok(self.show()));
            }
            Cmd::Enable(on, r) => {
                self.shared.enabled.store(on, Ordering::SeqCst);
                for p in &mut self.ports {
                    p.mgr.set_enabled(on);
                    // Off: answer once the device has applied the removals.
                    let t = Instant::now();
                    while !on && t.elapsed() < Duration::from_secs(1) {
                        if let Ok(mut g) = p.slot.dev.try_lock() {
                            if let Some(d) = g.as_mut() {
                                d.service(usize::MAX);
                            }
                        }
                        p.mgr.poll_completions();
                        let want = p.user.len() + 2 * p.quarantine.len();
                        if p.mgr.in_flight() == 0 && p.mgr.backend().installed() == want {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                let _ = r.send(Ok(format!("offload {}", if on { "on" } else { "off" })));
            }
            Cmd::Quarantine(addrs, on, r) => {
                let _ = r.send(self.quarantine(&addrs, on));
            }
            Cmd::Flow(fc, r) => {
                let port = match &fc {
                    FlowCommand::Validate(s) | FlowCommand::Create(s) => s.port,
                    FlowCommand::Destroy { port, .. } | FlowCommand::Flush(port) | FlowCommand::List(port) | FlowCommand::Query { port, .. } => *port,
                };
                let res = match self.port(port) {
                    Some(m) => flow_text(m, fc),
                    None => Err(format!("port {port} has no offload model")),
                };
                let _ = r.send(res);
            }
        }
    }

    fn run(mut self, cmds: mpsc::Receiver<Cmd>, stop: Arc<AtomicBool>) {
        let mut last_scan = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            while let Ok(c) = cmds.try_recv() {
                self.command(c);
                busy = true;
            }
            let gen = self.reader.load().gen();
            if gen != self.last_gen {
                // A new generation: rules decided under older ones go (a hardware
                // DROP must not outlive a relaxation; stale marks are ignored by
                // the lcores meanwhile).
                for p in &mut self.ports {
                    p.mgr.revoke_before(gen);
                }
                self.last_gen = gen;
                busy = true;
            }
            let mut n = 0;
            while n < 1024 {
                let Some(r) = self.q.pop() else { break };
                n += 1;
                if let Some(p) = self.port(r.port) {
                    p.mgr.handle(r);
                }
            }
            busy |= n > 0;
            for p in &mut self.ports {
                p.mgr.flush_batch();
                p.mgr.poll_completions();
                // Forwarding stopped: the device half is here; run its queue.
                if let Ok(mut g) = p.slot.dev.try_lock() {
                    if let Some(d) = g.as_mut() {
                        busy |= d.service(1024) > 0;
                    }
                }
            }
            // Counters for eviction, one rule per iteration: a query waits for
            // the lcore, and must not hold up the next revocation.
            let start = last_scan.elapsed() > Duration::from_secs(1);
            if start {
                last_scan = Instant::now();
            }
            for p in &mut self.ports {
                // Only while an lcore holds the device (the queries go through it).
                let lent = p.slot.dev.try_lock().is_ok_and(|g| g.is_none());
                if lent {
                    p.mgr.scan_step(1, start);
                }
            }
            if !busy {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl OffloadRuntime {
    /// Models on `ports` and the offload thread, reading generations from `reader`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(reader: Reader<DpState>, ports: &[u16], s: &OffloadSettings) -> Result<Self, String> {
        let shared = Arc::new(Shared { enabled: AtomicBool::new(true), threshold: AtomicU32::new(s.threshold.max(1)), lcores: Mutex::new(Vec::new()) });
        let q = request_queue(4096);
        let mut slots = Vec::new();
        let mut models = Vec::new();
        for &port in ports {
            let cfg = SoftNicConfig { capacity: s.capacity, ..SoftNicConfig::default() };
            let (be, dev) = channel(cfg);
            let slot = Arc::new(PortSlot { port, dev: Mutex::new(Some(dev)) });
            slots.push(slot.clone());
            let mgr = Manager::new(be, ManagerConfig { capacity: s.capacity, ..ManagerConfig::default() });
            models.push(ModelPort { slot, mgr, user: BTreeMap::new(), quarantine: BTreeMap::new() });
        }
        let last_gen = reader.load().gen();
        let w = Worker { ports: models, reader, shared: shared.clone(), q: q.clone(), last_gen };
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("offload".into()).spawn(move || w.run(rx, stop2)).map_err(|e| format!("offload thread: {e}"))?;
        Ok(OffloadRuntime { shared, slots, q, cmd: Mutex::new(tx), stop, thread: Some(thread) })
    }

    /// True when `port` has a model.
    pub fn has_port(&self, port: u16) -> bool {
        self.slots.iter().any(|s| s.port == port)
    }

    /// The offload path of one lcore that polls every rx queue of `ports`
    /// (the model ports among them). Takes their device halves (given back
    /// when it drops). `hz` is the TSC rate (the hot window is 1 ms).
    pub fn lcore(&self, ports: &[u16], hz: u64) -> LcoreOffload {
        let mut devs = Vec::new();
        let mut dev_of_port = Vec::new();
        for slot in self.slots.iter().filter(|s| ports.contains(&s.port)) {
            let d = slot.dev.lock().unwrap_or_else(|e| e.into_inner()).take();
            if dev_of_port.len() <= slot.port as usize {
                dev_of_port.resize(slot.port as usize + 1, u8::MAX);
            }
            dev_of_port[slot.port as usize] = devs.len() as u8;
            devs.push((slot.port, d, slot.clone()));
        }
        let stats = Arc::new(LcoreOffloadStats::default());
        self.shared.lcores.lock().unwrap_or_else(|e| e.into_inner()).push(stats.clone());
        let hot = HotDetector::new(HotConfig { threshold: self.shared.threshold.load(Ordering::Relaxed), window: hz / 1000, slots: 4096 });
        LcoreOffload {
            shared: self.shared.clone(),
            devs,
            dev_of_port,
            marks: vec![MarkSlot::default(); MARK_SLOTS].into_boxed_slice(),
            next_slot: 0,
            next_seq: 1,
            hot,
            feeder: feeder(&self.q),
            stats,
            cur: 0,
        }
    }

    fn ask(&self, f: impl FnOnce(Reply) -> Cmd) -> Result<String, String> {
        let (tx, rx) = mpsc::channel();
        self.cmd.lock().unwrap_or_else(|e| e.into_inner()).send(f(tx)).map_err(|_| "offload thread stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "offload thread did not answer".to_string())?
    }

    /// `flow ...` on a model port.
    ///
    /// # Errors
    /// The device's refusal, as text naming the port.
    pub fn flow(&self, c: FlowCommand) -> Result<String, String> {
        self.ask(|r| Cmd::Flow(c, r))
    }

    /// `show offload`.
    pub fn show(&self) -> String {
        self.ask(Cmd::Show).unwrap_or_else(|e| e)
    }

    /// `offload on|off`: off removes every rule the manager installed and
    /// takes the model out of the rx path.
    ///
    /// # Errors
    /// The offload thread is gone.
    pub fn set_enabled(&self, on: bool) -> Result<String, String> {
        self.ask(|r| Cmd::Enable(on, r))
    }

    /// `set offload threshold N` (packets per millisecond).
    pub fn set_threshold(&self, n: u32) {
        self.shared.threshold.store(n.max(1), Ordering::Relaxed);
    }

    /// Quarantine (or release) these addresses: prefix DROP rules, source
    /// and destination, on every model port, installed before this returns.
    ///
    /// # Errors
    /// A device refusal (nothing is left half-installed for that address).
    pub fn quarantine(&self, addrs: Vec<IpAddr>, on: bool) -> Result<String, String> {
        self.ask(|r| Cmd::Quarantine(addrs, on, r))
    }

    /// Lcore counters summed: (hw drops, hw marked, stale marks, requests,
    /// queue full, model cycles).
    pub fn lcore_totals(&self) -> [u64; 6] {
        let mut t = [0; 6];
        for s in self.shared.lcores.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for (i, a) in [&s.hw_drops, &s.hw_marked, &s.stale_marks, &s.requests, &s.queue_full, &s.model_cycles].into_iter().enumerate() {
                t[i] += a.load(Ordering::Relaxed);
            }
        }
        t
    }
}

impl Drop for OffloadRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::handler::{PolicyHandler, PortMap};
    use crate::dataplane::plane::PolicyPlane;
    use flowtable::key::v4_mapped;
    use flowtable::parse::build::{Spec, L4};
    use flowtable::pipeline::PipelineConfig;
    use pmd::route::{Claim, Output, RouteHandler, RouteStats, RxQueue, DROP};
    use pmd::{testing, Burst, Port, PortConf, BURST};
    use std::sync::atomic::AtomicU64;

    const CLI: u32 = 0x0a01_0001;
    const SRV: u32 = 0x0a01_0002;
    /// Flows with a destination port at or above this are denied in the strict phase.
    const CUT: u16 = 85;

    /// The policy handler plus an oracle: every packet it forwards is checked
    /// against the verdict of the generation its burst was decided under.
    struct Checker {
        h: PolicyHandler,
        /// Generation -> strict phase? (the test records it before publishing).
        strict: Arc<Mutex<Vec<(u64, bool)>>>,
        forwarded: Arc<AtomicU64>,
        /// Forwarded packets of flows the strict phase denies.
        fwd_cut: Arc<AtomicU64>,
        stale_allows: Arc<AtomicU64>,
    }

    impl RouteHandler for Checker {
        fn handle(&mut self, rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], now: u64) {
            self.h.handle(rx, burst, dest, now);
            let gen = self.h.gen_seen.0;
            let strict = self.strict.lock().unwrap().iter().rev().find(|(g, _)| *g <= gen).is_some_and(|(_, s)| *s);
            for (i, d) in dest.iter().enumerate().take(burst.len()) {
                if *d == DROP {
                    continue;
                }
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                let k = flowtable::parse::parse(burst.data(i), rx.port, None).expect("a frame of the test pcap").key;
                if k.dport >= CUT {
                    self.fwd_cut.fetch_add(1, Ordering::Relaxed);
                    if strict {
                        self.stale_allows.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn policy(dir: &std::path::Path, strict: bool) -> std::path::PathBuf {
        let ports = if strict { format!("80-{}/tcp", CUT - 1) } else { "80-99/tcp".into() };
        let f = dir.join(if strict { "strict.toml" } else { "open.toml" });
        std::fs::write(
            &f,
            format!("[[policy]]\nname = \"srv\"\nnamespace = \"prod\"\nselector = \"app=srv\"\n  [[policy.ingress]]\n  from = [{{ selector = \"app=cli\" }}]\n  ports = [\"{ports}\"]\n"),
        )
        .unwrap();
        f
    }

    /// Offload on, traffic on, the policy alternating between allowing and
    /// denying a third of the flows: hot flows get MARK (allowed) and DROP
    /// (denied) rules in the model, and yet no packet is forwarded under a
    /// stale allow, and every relaxation lets the denied flows through again
    /// (their hardware DROPs are revoked).
    #[test]
    fn churn_with_offload_forwards_nothing_on_a_stale_allow() {
        let dir = testing::scratch("offload-churn");
        // 60 flows, dports 80..=89 (those >= 85 denied in the strict phase), replayed for ever.
        let frames: Vec<Vec<u8>> =
            (0..60u16).map(|i| Spec::new(v4_mapped(CLI), v4_mapped(SRV), L4::Tcp { sport: 1000 + i, dport: 80 + i % 10, flags: 0x10 }).build()).collect();
        let inp = dir.join("in.pcap");
        pmd::pcap::write(&inp, &frames).unwrap();
        let conf = PortConf { rxd: 256, txd: 256, ..PortConf::default() };
        let pool = testing::pool();
        let mut p0 = Port::open(&format!("net_pcap_oc0,rx_pcap={},infinite_rx=1", inp.display()), conf, pool.clone()).unwrap();
        let mut p1 = Port::open("net_null_oc1,no-rx=1", conf, pool).unwrap();
        p0.start().unwrap();
        p1.start().unwrap();
        let (id0, id1) = (p0.id(), p1.id());
        std::fs::write(
            dir.join("model.toml"),
            format!(
                "[[namespaces]]\nname = \"prod\"\n\
                 [[workloads]]\nname = \"cli\"\nnamespace = \"prod\"\nlabels = {{ app = \"cli\" }}\naddresses = [\"10.1.0.1\"]\nport = {id0}\n\
                 [[workloads]]\nname = \"srv\"\nnamespace = \"prod\"\nlabels = {{ app = \"srv\" }}\naddresses = [\"10.1.0.2\"]\nmac = \"02:00:00:00:00:02\"\nport = {id1}\n"
            ),
        )
        .unwrap();
        let model = control::Model::load(&dir.join("model.toml")).unwrap();
        let set = control::commands::load_policies(&[policy(&dir, false)]).unwrap();
        let mut plane = PolicyPlane::new(model, set, None).unwrap();
        let strict_file = policy(&dir, true);
        let open_file = policy(&dir, false);

        let hz = pmd::Eal::tsc_hz();
        let rt = OffloadRuntime::start(plane.reader(), &[id0], &OffloadSettings { threshold: 4, capacity: 1024 }).unwrap();
        let mut out_of_port = vec![DROP; 64];
        out_of_port[id0 as usize] = 0;
        out_of_port[id1 as usize] = 1;
        let ports = PortMap { out_of_port, mac_of_port: vec![[0u8; 6]; 64] };
        let mut h = PolicyHandler::new(plane.reader(), PipelineConfig::default(), ports, None, hz);
        h.set_offload(rt.lcore(&[id0], hz));
        let strict = Arc::new(Mutex::new(vec![(plane.gen(), false)]));
        let (forwarded, fwd_cut, stale) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut c = Checker { h, strict: strict.clone(), forwarded: forwarded.clone(), fwd_cut: fwd_cut.clone(), stale_allows: stale.clone() };
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::new(RouteStats::default());
        let (s2, st2) = (stop.clone(), st.clone());
        let t = std::thread::spawn(move || {
            let rxqs = [RxQueue { port: id0, queue: 0 }];
            let outs = [Output { port: id0, queue: 0 }, Output { port: id1, queue: 0 }];
            let claim = Claim::new(&rxqs, &outs).unwrap();
            pmd::route::run(&claim, &mut c, 32, &s2, &st2);
            drop(c); // gives the model back to the runtime
        });
        let phase = Duration::from_millis(40);
        std::thread::sleep(phase);
        let mut cut_in_open = Vec::new();
        for round in 0..24 {
            let to_strict = round % 2 == 0;
            let next = plane.gen() + 1;
            strict.lock().unwrap().push((next, to_strict));
            let pb = plane.load_policies(&[if to_strict { strict_file.clone() } else { open_file.clone() }]).unwrap();
            assert_eq!(pb.gen, next, "one change, one generation");
            let before = fwd_cut.load(Ordering::Relaxed);
            let (f0, r0) = (forwarded.load(Ordering::Relaxed), st.rx_packets.load(Ordering::Relaxed));
            std::thread::sleep(phase);
            eprintln!(
                "round {round} strict {to_strict}: rx {} forwarded {} cut {} hw {:?}",
                st.rx_packets.load(Ordering::Relaxed) - r0,
                forwarded.load(Ordering::Relaxed) - f0,
                fwd_cut.load(Ordering::Relaxed) - before,
                rt.lcore_totals()
            );
            if !to_strict {
                cut_in_open.push(fwd_cut.load(Ordering::Relaxed) - before);
            }
        }
        let hw_mid = rt.lcore_totals();
        let shown = rt.show();
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
        let [hw_drops, hw_marked, stale_marks, requests, _full, _cycles] = hw_mid;
        eprintln!(
            "churn: rx {} forwarded {} hw_drops {hw_drops} hw_marked {hw_marked} stale_marks {stale_marks} requests {requests}\n{shown}",
            st.rx_packets.load(Ordering::Relaxed),
            forwarded.load(Ordering::Relaxed)
        );
        assert_eq!(stale.load(Ordering::Relaxed), 0, "a packet was forwarded under a stale allow");
        assert!(hw_marked > 0, "allowed hot flows were forwarded on hardware marks");
        assert!(hw_drops > 0, "denied hot flows were dropped by hardware");
        assert!(
            cut_in_open.iter().all(|&n| n > 0),
            "every relaxation lets the once-denied flows through again (hardware DROPs revoked): {cut_in_open:?}"
        );
        // Quarantine: prefix DROPs at once, for both directions; removed again.
        let msg = rt.quarantine(vec!["10.1.0.1".parse().unwrap()], true).unwrap();
        assert!(msg.starts_with("2 quarantine prefix rules installed"), "{msg}");
        let list = rt.flow(FlowCommand::List(id0)).unwrap();
        assert_eq!(list.matches("quarantine 10.1.0.1").count(), 2, "{list}");
        let msg = rt.quarantine(vec!["10.1.0.1".parse().unwrap()], false).unwrap();
        assert!(msg.starts_with("2 quarantine prefix rules removed"), "{msg}");
        assert!(!rt.flow(FlowCommand::List(id0)).unwrap().contains("quarantine"));
        drop(rt);
        p0.stop().unwrap();
        p1.stop().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
