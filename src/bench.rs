//! `bulkhead bench fwd`: Bulkhead's forwarding engine against dpdk-testpmd's,
//! alternately, on the same virtual devices, the same single forwarding core
//! and the same pcaps.
//!
//! Setup per flow count N (as ../shared/peers/testpmd-ceiling.sh):
//!   port 0 = net_pcap `rx_pcap=udp_N.pcap,infinite_rx=1` (N distinct 64-byte
//!            UDP flows, replayed round-robin; one mbuf pinned per packet)
//!   port 1 = net_null `no-rx=1` (tx frees)
//! Both sides: `--no-huge`, the same `-m`, the same mbuf count and cache,
//! burst 32, main lcore M and one forwarding lcore F, paired streams
//! (0 -> 1 and 1 -> 0). Bulkhead runs in this process (EAL once); testpmd is a
//! child process driven through its interactive prompt and stays idle while
//! Bulkhead measures, and the other way round. Rate = port 0 rx packets over
//! the measured window; cycles/packet = forwarding thread CPU time (from
//! /proc, the same way for both) x TSC Hz / packets. Medians of the rounds.
//!
//! `--mode policy` runs the policy engine (src/dataplane: PolicyEngine, the
//! flowtable pipeline: parse -> exact-match cache -> classifier [+ conntrack
//! with `--stateful`]) against testpmd `io` (the I/O ceiling). The rules are
//! the ACLs of ../shared/peers/gen_bench.py ([`acl_rules`]): one egress tier,
//! default deny, 80 % of the flows forwarded to port 1, so the figures line
//! up with ../shared/peers/ovs-dpdk-bench.sh (OVS-DPDK on the same vdevs).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtable::leftright::{Absorb as _, Reader, Writer};
use flowtable::pipeline::PipelineConfig;
use flowtable::tables::Tier;
use flowtable::{Action, Classifier, Match, PolicyTables, PortRange, Prefix, Rule, RuleId};
use pmd::fwd::{self, EngineOpts, FwdMode, FwdPort, Running};
use pmd::{Eal, EalConfig, Mempool, Port, PortConf};

use crate::dataplane::engine::{EnginePort, PolicyEngine};
use crate::dataplane::state::{Dest, DpOp, DpState};
use crate::switch::Error;

/// Options of `bulkhead bench fwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwdBenchOpts {
    /// Engine (io, mac, macswap): testpmd runs the same one.
    pub mode: String,
    /// Flow counts, one result line each.
    pub flows: Vec<u32>,
    /// Measured seconds per round and side.
    pub seconds: u64,
    /// Warm-up seconds before each measurement.
    pub warmup: u64,
    /// Rounds per side (medians are reported).
    pub rounds: u32,
    /// Main lcore (both sides).
    pub main_lcore: u32,
    /// Forwarding lcore (both sides).
    pub fwd_lcore: u32,
    /// The testpmd binary.
    pub testpmd: PathBuf,
    /// Scratch directory for pcaps and logs (default: a fresh dir in /tmp).
    pub workdir: Option<PathBuf>,
    /// `--mode policy`: ACL rules (gen_bench.py's, [`acl_rules`]).
    pub rules: u32,
    /// `--mode policy`: connection tracking on.
    pub stateful: bool,
}

impl Default for FwdBenchOpts {
    fn default() -> Self {
        Self {
            mode: "io".into(),
            flows: vec![1, 1000, 100_000],
            seconds: 5,
            warmup: 2,
            rounds: 3,
            main_lcore: 0,
            fwd_lcore: 1,
            testpmd: PathBuf::from("dpdk-testpmd"),
            workdir: None,
            rules: 10_000,
            stateful: false,
        }
    }
}

/// One flow count's result.
#[derive(Debug, Clone, PartialEq)]
pub struct FwdBenchResult {
    /// Engine.
    pub mode: String,
    /// Flows in the pcap.
    pub flows: u32,
    /// Median Bulkhead Mpps.
    pub bulkhead_mpps: f64,
    /// Median testpmd Mpps.
    pub testpmd_mpps: f64,
    /// Median Bulkhead forwarding-thread cycles per packet.
    pub bulkhead_cpp: f64,
    /// Median testpmd forwarding-thread cycles per packet.
    pub testpmd_cpp: f64,
    /// Median share of a CPU the Bulkhead forwarding thread got.
    pub bulkhead_cpu: f64,
    /// Median share of a CPU the testpmd forwarding thread got.
    pub testpmd_cpu: f64,
    /// `--mode policy`: the policy engine's own figures.
    pub policy: Option<PolicyFigures>,
}

/// What the policy engine did in its median round.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFigures {
    /// Rules in the ACL.
    pub rules: u32,
    /// Conntrack on.
    pub stateful: bool,
    /// Share of received packets forwarded (gen_bench.py's ACLs forward 0.80).
    pub fwd_share: f64,
    /// Share of packets decided from the exact-match cache.
    pub emc_hit_rate: f64,
    /// Classifier lookups per packet.
    pub cls_per_pkt: f64,
}

impl FwdBenchResult {
    /// bulkhead / testpmd.
    pub fn ratio(&self) -> f64 {
        if self.testpmd_mpps > 0.0 {
            self.bulkhead_mpps / self.testpmd_mpps
        } else {
            0.0
        }
    }
}

impl FwdBenchResult {
    /// testpmd cycles/packet over Bulkhead cycles/packet: the throughput ratio
    /// per CPU actually received, robust to the forwarding core being shared
    /// (on this machine the forwarding thread gets 40-65 % of a core).
    pub fn cpu_ratio(&self) -> f64 {
        if self.bulkhead_cpp > 0.0 {
            self.testpmd_cpp / self.bulkhead_cpp
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for FwdBenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = &self.policy {
            return write!(
                f,
                "fwd=policy flows={} rules={} bulkhead_mpps={:.3} testpmd_io_mpps={:.3} ratio={:.3} cycles_per_pkt={:.1} stateful={} testpmd_cycles_per_pkt={:.1} cpu_ratio={:.3} bulkhead_fwd_cpu={:.2} testpmd_fwd_cpu={:.2} fwd_share={:.3} emc_hit_rate={:.3} cls_per_pkt={:.4}",
                self.flows,
                p.rules,
                self.bulkhead_mpps,
                self.testpmd_mpps,
                self.ratio(),
                self.bulkhead_cpp,
                p.stateful,
                self.testpmd_cpp,
                self.cpu_ratio(),
                self.bulkhead_cpu,
                self.testpmd_cpu,
                p.fwd_share,
                p.emc_hit_rate,
                p.cls_per_pkt
            );
        }
        write!(
            f,
            "fwd={} flows={} bulkhead_mpps={:.3} testpmd_mpps={:.3} ratio={:.3} bulkhead_cycles_per_pkt={:.1} testpmd_cycles_per_pkt={:.1} cpu_ratio={:.3} bulkhead_fwd_cpu={:.2} testpmd_fwd_cpu={:.2}",
            self.mode,
            self.flows,
            self.bulkhead_mpps,
            self.testpmd_mpps,
            self.ratio(),
            self.bulkhead_cpp,
            self.testpmd_cpp,
            self.cpu_ratio(),
            self.bulkhead_cpu,
            self.testpmd_cpu
        )
    }
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// gen_bench.py's destination ports, by source subnet.
const ACL_PORTS: [u16; 8] = [80, 443, 22, 53, 8080, 3306, 5432, 6379];
/// The largest rule count gen_bench.py generates without repeating a match.
pub const MAX_ACL_RULES: u32 = 10_000;

/// The ACL of `gen_bench.py rules --rules R --proto udp`, as Bulkhead rules
/// (its default `priority=1,actions=drop` is the table's default deny):
/// rule j (id j, cookie j) for source subnet s = j % 1000 and destination
/// subnet k = (j / 1000) % 10: `10.s.0/24 -> 172.16.0.0/16` when R <= 1000,
/// else `-> 172.16.k.0/24`; destination port `ACL_PORTS[s % 8]` at priority
/// 300, except every third rule of the /24 kind (j % 3 == 2), which matches
/// any port at priority 200; deny when j % 5 == 4, else allow.
pub fn acl_rules(r: u32) -> Vec<Rule> {
    (0..r)
        .map(|j| {
            let s = j % 1000;
            let k = (j / 1000) % 10;
            let src = Prefix::v4((10 << 24) | (s << 8), 24);
            let dst = if r <= 1000 { Prefix::v4(0xac10_0000, 16) } else { Prefix::v4(0xac10_0000 | (k << 8), 24) };
            let portless = r > 1000 && j % 3 == 2;
            let m = Match {
                src,
                dst,
                proto: Some(17),
                dport: if portless { PortRange::ANY } else { PortRange::exact(ACL_PORTS[(s % 8) as usize]) },
                ..Match::ANY
            };
            let action = if j % 5 == 4 { Action::Deny } else { Action::Allow };
            Rule { id: RuleId(j), priority: if portless { 200 } else { 300 }, m, action, cookie: u64::from(j) }
        })
        .collect()
}

/// The dataplane state of the policy bench: the ACL as the one egress tier
/// (default deny), ingress open, every address routed to port `out` (the
/// uplink route, `::/0`), no identities.
fn acl_state(r: u32, out: u16) -> Result<DpState, Error> {
    let mut cls = Classifier::new();
    for rule in acl_rules(r) {
        cls.insert(rule).map_err(|e| Error::Invalid(format!("acl rule: {e}")))?;
    }
    let tier = Tier { name: "acl".into(), egress: cls, ingress: Classifier::new() };
    let enforce = PolicyTables { tiers: vec![tier], default_egress: Action::Deny, default_ingress: Action::Allow };
    let mut st = DpState::new(enforce, PolicyTables::default());
    st.absorb(&DpOp::SetDest(Prefix::ANY, Dest { port: out, mac: None })).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(st)
}

const MBUF_CACHE: u32 = 250; // testpmd's default --mbcache

/// mbufs for N flows: the pinned pcap plus rings, caches and bursts.
fn mbufs_for(flows: u32) -> u32 {
    (flows + 32 * 1024).max(65_536)
}

/// CPU nanoseconds consumed by thread `comm` of process `pid`.
pub(crate) fn thread_cpu_ns(pid: &str, comm: &str) -> Option<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let c = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if c.trim() == comm {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            return s.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

struct Sample {
    mpps: f64,
    cpp: f64,
    cpu: f64,
}

fn sample(pkts: u64, secs: f64, cpu_ns: u64, hz: u64) -> Sample {
    let cpu_s = cpu_ns as f64 / 1e9;
    Sample {
        mpps: pkts as f64 / secs / 1e6,
        cpp: if pkts > 0 { cpu_s * hz as f64 / pkts as f64 } else { 0.0 },
        cpu: cpu_s / secs,
    }
}

/// The testpmd side: one interactive child per flow count.
struct Testpmd {
    child: Child,
    log: PathBuf,
    prefix: String,
    fwd_comm: String,
}

impl Testpmd {
    fn spawn(o: &FwdBenchOpts, pcap: &Path, mbufs: u32, mem_mb: u32, work: &Path, flows: u32) -> Result<Testpmd, Error> {
        let prefix = format!("bhbench-tp-{}-{flows}", std::process::id());
        let log = work.join(format!("testpmd_{flows}.log"));
        let logf = std::fs::File::create(&log).map_err(|e| Error::Invalid(format!("{}: {e}", log.display())))?;
        let child = Command::new(&o.testpmd)
            .args([
                "--no-huge".to_string(),
                "-m".into(),
                mem_mb.to_string(),
                "--no-pci".into(),
                format!("--file-prefix={prefix}"),
                "-l".into(),
                format!("{},{}", o.main_lcore, o.fwd_lcore),
                "--main-lcore".into(),
                o.main_lcore.to_string(),
                format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
                "--vdev=net_null0,no-rx=1".into(),
                "--log-level=error".into(),
                "--".into(),
                "-i".into(),
                format!("--total-num-mbufs={mbufs}"),
                format!("--mbcache={MBUF_CACHE}"),
                format!("--forward-mode={}", if o.mode == "policy" { "io" } else { o.mode.as_str() }),
                "--burst=32".into(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(logf.try_clone().map_err(|e| Error::Invalid(e.to_string()))?))
            .stderr(Stdio::from(logf))
            .spawn()
            .map_err(|e| Error::Invalid(format!("cannot run {}: {e} (apt-get install dpdk)", o.testpmd.display())))?;
        let mut tp = Testpmd { child, log, prefix, fwd_comm: format!("rte-worker-{}", o.fwd_lcore) };
        tp.wait_for(|l| l.contains("testpmd>"), 1, Duration::from_secs(120))?;
        Ok(tp)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, pat: impl Fn(&str) -> bool, count: usize, timeout: Duration) -> Result<(), Error> {
        let t0 = Instant::now();
        loop {
            let t = self.text();
            if t.lines().filter(|l| pat(l)).count() >= count {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(Error::Invalid(format!("testpmd exited ({st}); see {}", self.log.display())));
            }
            if t0.elapsed() > timeout {
                return Err(Error::Invalid(format!("testpmd did not answer in time; see {}", self.log.display())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cmd(&mut self, c: &str) -> Result<(), Error> {
        let stdin = self.child.stdin.as_mut().ok_or_else(|| Error::Invalid("testpmd stdin closed".into()))?;
        writeln!(stdin, "{c}").and_then(|_| stdin.flush()).map_err(|e| Error::Invalid(format!("testpmd: {e}")))
    }

    /// Field `key` (e.g. "RX-packets:", "Rx-pps:") of the `n`-th (1-based)
    /// "NIC statistics for port 0" block in the log.
    fn port0_field(&self, n: usize, key: &str) -> Option<u64> {
        let t = self.text();
        let block = t.split("NIC statistics for port 0").nth(n)?;
        let l = block.lines().find(|l| l.contains(key))?;
        let mut w = l.split_whitespace();
        w.position(|x| x == key)?;
        w.next()?.parse().ok()
    }

    /// One round: start, warm up, two `show port stats 0` S seconds apart
    /// (testpmd's own Rx-pps of the second is the rate), stop. testpmd's
    /// stdout is block-buffered into the log, so the numbers are read after
    /// `quit` ([`Testpmd::results`]); this returns (cpu ns, seconds).
    fn round(&mut self, o: &FwdBenchOpts) -> Result<(u64, f64), Error> {
        let pid = self.child.id().to_string();
        self.cmd("start")?;
        std::thread::sleep(Duration::from_secs(o.warmup));
        self.cmd("show port stats 0")?;
        let c0 = thread_cpu_ns(&pid, &self.fwd_comm).unwrap_or(0);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds));
        let c1 = thread_cpu_ns(&pid, &self.fwd_comm).unwrap_or(0);
        let dt = t0.elapsed().as_secs_f64();
        self.cmd("show port stats 0")?;
        self.cmd("stop")?;
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(st)) = self.child.try_wait() {
            return Err(Error::Invalid(format!("testpmd exited ({st}); see {}", self.log.display())));
        }
        Ok((c1.saturating_sub(c0), dt))
    }

    /// After quit: one sample per round from the log.
    fn results(&self, rounds: &[(u64, f64)], hz: u64) -> Result<Vec<Sample>, Error> {
        let mut v = Vec::new();
        for (r, &(cpu_ns, dt)) in rounds.iter().enumerate() {
            let (a, b) = (2 * r + 1, 2 * r + 2);
            let pps = self.port0_field(b, "Rx-pps:");
            let p0 = self.port0_field(a, "RX-packets:");
            let p1 = self.port0_field(b, "RX-packets:");
            let (Some(pps), Some(p0), Some(p1)) = (pps, p0, p1) else {
                return Err(Error::Invalid(format!("no port stats for round {r} in {}", self.log.display())));
            };
            let mut s = sample(p1.saturating_sub(p0), dt, cpu_ns, hz);
            s.mpps = pps as f64 / 1e6;
            v.push(s);
        }
        Ok(v)
    }

    fn quit(&mut self) {
        let _ = self.cmd("quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.finish();
    }

    fn finish(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What runs on the Bulkhead side.
enum Engine {
    /// A testpmd-style forwarding engine.
    Fwd(FwdMode),
    /// The policy engine over a published ACL state.
    Policy { reader: Reader<DpState>, _writer: Writer<DpState>, cfg: Box<PipelineConfig> },
}

/// The Bulkhead side for one flow count: ports and pool in this process.
struct Side {
    ports: Vec<Port>,
    pool: Arc<Mempool>,
    engine: Engine,
    fwd_lcore: u32,
}

/// One Bulkhead round: the sample and, in policy mode, the engine's figures.
struct Round {
    s: Sample,
    policy: Option<(f64, f64, f64)>,
}

impl Side {
    fn open(o: &FwdBenchOpts, pcap: &Path, flows: u32, mbufs: u32) -> Result<Side, Error> {
        let engine = if o.mode == "policy" {
            let st = acl_state(o.rules, 1)?;
            let writer = Writer::new(st);
            let cfg = policy_config(flows, o.stateful);
            Engine::Policy { reader: writer.reader(), _writer: writer, cfg: Box::new(cfg) }
        } else {
            Engine::Fwd(o.mode.parse()?)
        };
        let pool = Arc::new(Mempool::new(&format!("bench_pool_{flows}"), mbufs, MBUF_CACHE, pmd::mempool::DEFAULT_DATA_ROOM, -1)?);
        let conf = PortConf { rxq: 1, txq: 1, rxd: 1024, txd: 1024, promiscuous: false };
        let mut ports = vec![
            Port::open(&format!("net_pcap_b{flows},rx_pcap={},infinite_rx=1", pcap.display()), conf, pool.clone())?,
            Port::open(&format!("net_null_b{flows},no-rx=1"), conf, pool.clone())?,
        ];
        for p in &mut ports {
            p.start()?;
        }
        Ok(Side { ports, pool, engine, fwd_lcore: o.fwd_lcore })
    }

    fn round(&self, o: &FwdBenchOpts, hz: u64) -> Result<Round, Error> {
        let comm = format!("rte-worker-{}", self.fwd_lcore);
        let mut run_fwd = None;
        let mut run_policy = None;
        match &self.engine {
            Engine::Fwd(mode) => {
                let fp: Vec<FwdPort> =
                    self.ports.iter().map(|p| FwdPort { id: p.id(), rxq: 1, txq: 1, mac: p.mac() }).collect();
                let streams = fwd::build_streams(&fp);
                let opts = EngineOpts { record_cycles: false, ..EngineOpts::default() };
                run_fwd = Some(Running::launch(*mode, &streams, &[self.fwd_lcore], 32, self.pool.clone(), opts)?);
            }
            Engine::Policy { reader, cfg, .. } => {
                // Both ports polled, like testpmd's paired streams.
                let ep: Vec<EnginePort> =
                    self.ports.iter().map(|p| EnginePort { id: p.id(), mac: p.mac(), rxq: 1, txq: 1 }).collect();
                let eng = PolicyEngine::start(reader, &ep, &[self.fwd_lcore], 32, **cfg, None, None)
                    .map_err(|e| Error::Invalid(format!("policy engine: {e}")))?;
                run_policy = Some(eng);
            }
        }
        std::thread::sleep(Duration::from_secs(o.warmup));
        let snap = |e: &Option<PolicyEngine>| e.as_ref().and_then(|e| e.snapshot().into_iter().next());
        let p0 = snap(&run_policy);
        let s0 = self.ports[0].stats()?.rx_packets;
        let c0 = thread_cpu_ns("self", &comm).unwrap_or(0);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds));
        let s1 = self.ports[0].stats()?.rx_packets;
        let c1 = thread_cpu_ns("self", &comm).unwrap_or(0);
        let dt = t0.elapsed().as_secs_f64();
        let p1 = snap(&run_policy);
        if let Some(r) = run_fwd {
            r.stop();
        }
        if let Some(mut e) = run_policy {
            e.stop();
        }
        let policy = match (p0, p1) {
            (Some(a), Some(b)) => {
                // Counters are published every 1024 bursts: deltas over the window.
                let d = |n: &str| b.get(n).saturating_sub(a.get(n)) as f64;
                let rx = d("rx_packets").max(1.0);
                Some((d("forwarded") / rx, d("emc_hit") / rx, d("cls_lookup") / rx))
            }
            _ => None,
        };
        Ok(Round { s: sample(s1.saturating_sub(s0), dt, c1.saturating_sub(c0), hz), policy })
    }
}

/// The policy engine's configuration for N flows: a cache and (stateful) a
/// conntrack sized for the flows, so the figures measure lookups rather than
/// thrashing.
fn policy_config(flows: u32, stateful: bool) -> PipelineConfig {
    let mut cfg = PipelineConfig { stateful, ..PipelineConfig::default() };
    let room = (2 * flows as usize).next_power_of_two();
    cfg.ct.capacity = room.max(cfg.ct.capacity);
    cfg.emc.entries = room.max(cfg.emc.entries);
    cfg
}

/// Run the comparison and print one line per flow count (as they finish).
///
/// # Errors
/// EAL, port or testpmd failures; a bad mode.
pub fn fwd(o: &FwdBenchOpts) -> Result<Vec<FwdBenchResult>, Error> {
    let policy = o.mode == "policy";
    if policy {
        if o.rules == 0 || o.rules > MAX_ACL_RULES {
            return Err(Error::Invalid(format!("--rules {}: gen_bench.py's ACLs have 1..={MAX_ACL_RULES} distinct rules", o.rules)));
        }
    } else {
        let mode: FwdMode = o.mode.parse()?;
        if !matches!(mode, FwdMode::Io | FwdMode::Mac | FwdMode::MacSwap) {
            return Err(Error::Invalid(format!("bench fwd compares forwarding modes io, mac, macswap, policy; not {mode}")));
        }
        if o.stateful {
            return Err(Error::Invalid("--stateful is for --mode policy".into()));
        }
    }
    if o.flows.is_empty() || o.flows.contains(&0) {
        return Err(Error::Invalid("--flows needs one or more counts >= 1".into()));
    }
    let work = o.workdir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work).map_err(|e| Error::Invalid(format!("{}: {e}", work.display())))?;
    let max_flows = o.flows.iter().copied().max().unwrap_or(1);
    // One -m for both sides and every flow count: sized for the largest pool.
    let mem_mb = (u64::from(mbufs_for(max_flows)) * 2600 * 5 / 4 / (1 << 20) + 160) as u32;
    let eal = Eal::init(&EalConfig {
        memory_mb: mem_mb,
        file_prefix: Some(format!("bhbench-{}", std::process::id())),
        lcores: format!("{},{}", o.main_lcore, o.fwd_lcore),
        main_lcore: Some(o.main_lcore),
        log_level: Some("error".into()),
        ..EalConfig::default()
    })?;
    let hz = Eal::tsc_hz();
    let mut results = Vec::new();
    let out = (|| {
        for &n in &o.flows {
            let pcap = work.join(format!("udp_{n}.pcap"));
            pmd::pcap::write_bench_flows(&pcap, n)?;
            let mbufs = mbufs_for(n);
            let side = Side::open(o, &pcap, n, mbufs)?;
            let mut tp = Testpmd::spawn(o, &pcap, mbufs, mem_mb, &work, n)?;
            let (mut bm, mut bc, mut bu, mut tround) = (vec![], vec![], vec![], vec![]);
            let mut figures = vec![];
            for _ in 0..o.rounds.max(1) {
                let b = side.round(o, hz)?;
                bm.push(b.s.mpps);
                bc.push(b.s.cpp);
                bu.push(b.s.cpu);
                figures.push((b.s.mpps, b.policy));
                tround.push(tp.round(o)?);
            }
            tp.quit();
            let ts = tp.results(&tround, hz)?;
            drop(tp);
            let mut tm: Vec<f64> = ts.iter().map(|s| s.mpps).collect();
            let mut tc: Vec<f64> = ts.iter().map(|s| s.cpp).collect();
            let mut tu: Vec<f64> = ts.iter().map(|s| s.cpu).collect();
            drop(side);
            // The engine's figures of the round whose rate was the median.
            let med = median(&mut bm.clone());
            figures.sort_by(|a, b| (a.0 - med).abs().partial_cmp(&(b.0 - med).abs()).unwrap_or(std::cmp::Ordering::Equal));
            let policy = policy.then(|| figures.first().and_then(|f| f.1).unwrap_or_default()).map(|(fwd_share, emc_hit_rate, cls_per_pkt)| PolicyFigures {
                rules: o.rules,
                stateful: o.stateful,
                fwd_share,
                emc_hit_rate,
                cls_per_pkt,
            });
            let r = FwdBenchResult {
                mode: o.mode.clone(),
                flows: n,
                bulkhead_mpps: median(&mut bm),
                testpmd_mpps: median(&mut tm),
                bulkhead_cpp: median(&mut bc),
                testpmd_cpp: median(&mut tc),
                bulkhead_cpu: median(&mut bu),
                testpmd_cpu: median(&mut tu),
                policy,
            };
            println!("{r}");
            results.push(r);
            let _ = std::fs::remove_file(&pcap);
        }
        Ok::<(), Error>(())
    })();
    drop(eal);
    if o.workdir.is_none() && out.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    }
    out.map(|_| results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtable::{FlowKey, LinearClassifier};
    use std::net::Ipv4Addr;

    fn gen_bench() -> PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/gen_bench.py");
        assert!(p.exists(), "{} is the reference generator these tests compare against", p.display());
        p
    }

    fn v4_prefix(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').expect("addr/len");
        Prefix::v4(u32::from(a.parse::<Ipv4Addr>().expect("IPv4")), l.parse().expect("len"))
    }

    /// One `ovs-ofctl add-flows` line of gen_bench.py as a Bulkhead rule
    /// (None for the default `priority=1,actions=drop`).
    fn of_rule(j: u32, line: &str) -> Option<Rule> {
        let mut r = Rule { id: RuleId(j), cookie: u64::from(j), m: Match::ANY, ..Rule::default() };
        let mut default = true;
        for f in line.split(',') {
            match f.split_once('=') {
                None if f == "udp" => {
                    r.m.proto = Some(17);
                    default = false;
                }
                Some(("priority", v)) => r.priority = v.parse().expect("priority"),
                Some(("nw_src", v)) => r.m.src = v4_prefix(v),
                Some(("nw_dst", v)) => r.m.dst = v4_prefix(v),
                Some(("tp_dst", v)) => r.m.dport = PortRange::exact(v.parse().expect("port")),
                Some(("actions", "drop")) => r.action = Action::Deny,
                Some(("actions", v)) if v.starts_with("output:") => r.action = Action::Allow,
                _ => panic!("unexpected field {f:?} in {line:?}"),
            }
        }
        (!default).then_some(r)
    }

    #[test]
    fn acl_rules_are_gen_bench_rules() {
        let dir = std::env::temp_dir().join(format!("bh-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for r in [1, 50, 1000, 1001, 10_000] {
            let out = dir.join(format!("acl_{r}.txt"));
            let st = Command::new("python3")
                .arg(gen_bench())
                .args(["rules", "--rules", &r.to_string(), "--out"])
                .arg(&out)
                .status()
                .expect("python3");
            assert!(st.success());
            let text = std::fs::read_to_string(&out).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() as u32, r + 1, "R rules and the default");
            assert_eq!(*lines.last().unwrap(), "priority=1,actions=drop");
            let theirs: Vec<Rule> = lines.iter().enumerate().filter_map(|(j, l)| of_rule(j as u32, l)).collect();
            assert_eq!(theirs, acl_rules(r), "rules={r}");
        }
        // The pcaps too: the same frames, in the same order.
        let ours = dir.join("ours.pcap");
        let theirs = dir.join("theirs.pcap");
        pmd::pcap::write_bench_flows(&ours, 2000).unwrap();
        let st = Command::new("python3")
            .arg(gen_bench())
            .args(["pcap", "--flows", "2000", "--out"])
            .arg(&theirs)
            .status()
            .expect("python3");
        assert!(st.success());
        let (a, b) = (pmd::pcap::read(&ours).unwrap(), pmd::pcap::read(&theirs).unwrap());
        assert_eq!(a.len(), 2000);
        assert!(a == b, "pmd::pcap::bench_flow differs from gen_bench.py's frames");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acl_state_forwards_what_the_reference_classifier_allows() {
        let st = acl_state(10_000, 1).unwrap();
        let mut lin = LinearClassifier::new();
        for r in acl_rules(10_000) {
            assert!(lin.insert(r));
        }
        let (mut fwd, mut deny, mut miss) = (0u32, 0u32, 0u32);
        let n = 20_000;
        for i in (0..n).step_by(3) {
            let f = pmd::pcap::bench_flow(i);
            let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
            let k = FlowKey::v4(0, src, dst, 17, u16::from_be_bytes([f[34], f[35]]), u16::from_be_bytes([f[36], f[37]]));
            let want = lin.lookup(&k).map(|r| r.action);
            let got = st.enforce.decide(&k);
            assert_eq!(got.allowed(), want == Some(Action::Allow), "flow {i}: {k:?}");
            match want {
                Some(Action::Allow) => fwd += 1,
                Some(_) => deny += 1,
                None => miss += 1,
            }
        }
        assert_eq!(st.dest(flowtable::key::v4_mapped(0xac10_0001)), Some(Dest { port: 1, mac: None }));
        // gen_bench.py's docstring says ~72 % forwarded, but its 10k rules
        // forward 80 % of the flows (the port-less allow rules also take
        // port-9999 flows): 6.7 % miss (default deny), 13.3 % denied.
        let t = f64::from(fwd + deny + miss);
        let share = |x: u32| f64::from(x) / t;
        assert!((0.78..0.82).contains(&share(fwd)), "forwarded {}", share(fwd));
        assert!((0.055..0.08).contains(&share(miss)), "missed {}", share(miss));
        assert!((0.12..0.145).contains(&share(deny)), "denied {}", share(deny));
    }
}
