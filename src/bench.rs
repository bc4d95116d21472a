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

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd::fwd::{self, EngineOpts, FwdMode, FwdPort, Running};
use pmd::{Eal, EalConfig, Mempool, Port, PortConf};

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
                format!("--forward-mode={}", o.mode),
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

/// The Bulkhead side for one flow count: ports and pool in this process.
struct Side {
    ports: Vec<Port>,
    pool: Arc<Mempool>,
    mode: FwdMode,
    fwd_lcore: u32,
}

impl Side {
    fn open(o: &FwdBenchOpts, pcap: &Path, flows: u32, mbufs: u32) -> Result<Side, Error> {
        let pool = Arc::new(Mempool::new(&format!("bench_pool_{flows}"), mbufs, MBUF_CACHE, pmd::mempool::DEFAULT_DATA_ROOM, -1)?);
        let conf = PortConf { rxq: 1, txq: 1, rxd: 1024, txd: 1024, promiscuous: false };
        let mut ports = vec![
            Port::open(&format!("net_pcap_b{flows},rx_pcap={},infinite_rx=1", pcap.display()), conf, pool.clone())?,
            Port::open(&format!("net_null_b{flows},no-rx=1"), conf, pool.clone())?,
        ];
        for p in &mut ports {
            p.start()?;
        }
        Ok(Side { ports, pool, mode: o.mode.parse()?, fwd_lcore: o.fwd_lcore })
    }

    fn round(&self, o: &FwdBenchOpts, hz: u64) -> Result<Sample, Error> {
        let fp: Vec<FwdPort> =
            self.ports.iter().map(|p| FwdPort { id: p.id(), rxq: 1, txq: 1, mac: p.mac() }).collect();
        let streams = fwd::build_streams(&fp);
        let opts = EngineOpts { record_cycles: false, ..EngineOpts::default() };
        let run = Running::launch(self.mode, &streams, &[self.fwd_lcore], 32, self.pool.clone(), opts)?;
        let comm = format!("rte-worker-{}", self.fwd_lcore);
        std::thread::sleep(Duration::from_secs(o.warmup));
        let s0 = self.ports[0].stats()?.rx_packets;
        let c0 = thread_cpu_ns("self", &comm).unwrap_or(0);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds));
        let s1 = self.ports[0].stats()?.rx_packets;
        let c1 = thread_cpu_ns("self", &comm).unwrap_or(0);
        let dt = t0.elapsed().as_secs_f64();
        run.stop();
        Ok(sample(s1.saturating_sub(s0), dt, c1.saturating_sub(c0), hz))
    }
}

/// Run the comparison and print one line per flow count (as they finish).
///
/// # Errors
/// EAL, port or testpmd failures; a bad mode.
pub fn fwd(o: &FwdBenchOpts) -> Result<Vec<FwdBenchResult>, Error> {
    let mode: FwdMode = o.mode.parse()?;
    if !matches!(mode, FwdMode::Io | FwdMode::Mac | FwdMode::MacSwap) {
        return Err(Error::Invalid(format!("bench fwd compares forwarding modes io, mac, macswap; not {mode}")));
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
            for _ in 0..o.rounds.max(1) {
                let b = side.round(o, hz)?;
                bm.push(b.mpps);
                bc.push(b.cpp);
                bu.push(b.cpu);
                tround.push(tp.round(o)?);
            }
            tp.quit();
            let ts = tp.results(&tround, hz)?;
            drop(tp);
            let mut tm: Vec<f64> = ts.iter().map(|s| s.mpps).collect();
            let mut tc: Vec<f64> = ts.iter().map(|s| s.cpp).collect();
            let mut tu: Vec<f64> = ts.iter().map(|s| s.cpu).collect();
            drop(side);
            let r = FwdBenchResult {
                mode: o.mode.clone(),
                flows: n,
                bulkhead_mpps: median(&mut bm),
                testpmd_mpps: median(&mut tm),
                bulkhead_cpp: median(&mut bc),
                testpmd_cpp: median(&mut tc),
                bulkhead_cpu: median(&mut bu),
                testpmd_cpu: median(&mut tu),
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
