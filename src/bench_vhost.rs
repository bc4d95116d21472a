//! `bulkhead bench vhost`: VM-to-VM forwarding through vhost-user, Bulkhead
//! against dpdk-testpmd and OVS-DPDK, one after the other in one run.
//!
//! The device under test (DUT) is the vhost-user backend of two sockets,
//! SOCK0 and SOCK1 (client mode: the frontends own the sockets), forwarding on
//! one core (`fwd_cpu`; its main lcore on `gen_cpu`), no hugepages:
//!   bulkhead-io      `bulkhead run`, io engine (net_vhost client=1 ports)
//!   bulkhead-policy  `bulkhead run`, policy engine: two workloads, one allow
//!                    rule (sink isolated for ingress, allowed from gen on
//!                    9/udp: testpmd txonly's 198.18.0.1 -> 198.18.0.2)
//!   testpmd          dpdk-testpmd io with net_vhost client=1 vdevs
//!   ovs              OVS-DPDK, dpdkvhostuserclient ports, one flow per
//!                    direction, in_port=1,actions=output:2 and back
//!                    (peers/ovs-dpdk-vhost.sh)
//! Frontends (dpdk-testpmd virtio_user, server=1, 64-byte txonly frames):
//!   loop (default)   one frontend process, both sockets, one lcore on
//!                    `gen_cpu`: a txonly burst (`start tx_first 32`), then io
//!                    forwarding sends back what the DUT delivers; see
//!                    [`one_loop`]. Two busy pollers on two CPUs.
//!   split            G txonly on SOCK0 and R rxonly on SOCK1, both on
//!                    `gen_cpu`: three busy pollers. On a 2-CPU machine the
//!                    two frontends time-share one CPU and each starves the
//!                    other for whole scheduler slices (a 1024-entry ring
//!                    fills in microseconds): every DUT then measures the same
//!                    ~0.1 Mpps, so use it only with three free CPUs.
//! dut_cpu = share of a CPU the DUT's forwarding thread got (from /proc), and
//! mpps_per_cpu = mpps / dut_cpu, the better figure on a shared machine.
//! `--rounds` runs every system once per round, interleaved, and reports the
//! medians and the ratios of the medians to OVS: on a shared 2-CPU machine a
//! single 4 s sample of one system moved by up to 6x between rounds.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{median, thread_cpu_ns};
use crate::switch::Error;

/// Options of `bulkhead bench vhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostBenchOpts {
    /// Systems, in order (bulkhead-io, bulkhead-policy, testpmd, ovs).
    pub systems: Vec<String>,
    /// `loop` (one frontend process: generator and receiver on one lcore)
    /// or `split` (txonly and rxonly frontends, two busy pollers).
    pub topology: String,
    /// Measured seconds per system.
    pub seconds: u64,
    /// Rounds over all systems (medians are reported).
    pub rounds: u32,
    /// Seconds of traffic before measuring.
    pub warmup: u64,
    /// CPU of the generator, the receiver and the DUT's main lcore.
    pub gen_cpu: u32,
    /// CPU of the DUT's forwarding core.
    pub fwd_cpu: u32,
    /// The testpmd binary.
    pub testpmd: PathBuf,
    /// The OVS peer script.
    pub ovs_script: PathBuf,
    /// Scratch directory (default: a fresh one in /tmp, removed after).
    pub workdir: Option<PathBuf>,
}

impl Default for VhostBenchOpts {
    fn default() -> Self {
        Self {
            systems: ["bulkhead-io", "bulkhead-policy", "testpmd", "ovs"].map(String::from).to_vec(),
            topology: "loop".into(),
            seconds: 5,
            rounds: 3,
            warmup: 2,
            gen_cpu: 0,
            fwd_cpu: 1,
            testpmd: PathBuf::from("dpdk-testpmd"),
            ovs_script: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/ovs-dpdk-vhost.sh")),
            workdir: None,
        }
    }
}

/// One system's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct VhostBenchResult {
    /// System name.
    pub system: String,
    /// Packets per second R received, millions.
    pub mpps: f64,
    /// Share of a CPU the DUT's forwarding thread got.
    pub dut_cpu: f64,
    /// Packets received in the window.
    pub packets: u64,
    /// The DUT's own count of the processing (busy) cycles it spent per
    /// packet in the window: cycles of polls that returned packets, over the
    /// packets received (`show fwd stats all` busy cycles for Bulkhead,
    /// testpmd `--record-core-cycles`, OVS `pmd-stats-show` processing cycles).
    /// Empty polls do not count, so this is the DUT's cost per packet even
    /// when the frontend, not the DUT, limits the rate.
    pub dut_cycles_per_pkt: Option<f64>,
}

impl VhostBenchResult {
    /// mpps / dut_cpu.
    pub fn mpps_per_cpu(&self) -> f64 {
        if self.dut_cpu > 0.0 {
            self.mpps / self.dut_cpu
        } else {
            0.0
        }
    }
}

fn err(m: impl Into<String>) -> Error {
    Error::Invalid(m.into())
}

/// The number right after the first `key` in `text` (spaces skipped).
fn field_after(text: &str, key: &str) -> Option<u64> {
    let rest = text[text.find(key)? + key.len()..].trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The cycle count of a `CPU cycles/packet=X (busy cycles=B)` line (Bulkhead)
/// or `CPU cycles/packet=X (total cycles=B / total io packets=P)` (testpmd
/// 22.11 with `--record-core-cycles`, which counts polls that received
/// packets only, like Bulkhead's busy cycles).
fn busy_cycles(text: &str) -> Option<u64> {
    let line = &text[text.find("CPU cycles/packet=")?..];
    field_after(line, "cycles=")
}

/// Processing cycles per packet between two [`Dut::busy`] samples.
fn cycles_per_pkt(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((c0, p0), (c1, p1)) = (a?, b?);
    (p1 > p0).then(|| c1.saturating_sub(c0) as f64 / (p1 - p0) as f64)
}

/// An interactive testpmd child whose output goes to a log file.
struct Tp {
    child: Child,
    log: PathBuf,
    prefix: String,
}

impl Tp {
    fn spawn(bin: &Path, log: PathBuf, prefix: &str, eal: &[String], app: &[&str]) -> Result<Tp, Error> {
        let f = std::fs::File::create(&log).map_err(|e| err(format!("{}: {e}", log.display())))?;
        let mut args: Vec<String> = vec!["--no-huge".into(), "--no-pci".into(), format!("--file-prefix={prefix}"), "--log-level=error".into()];
        args.extend(eal.iter().cloned());
        args.push("--".into());
        args.push("-i".into());
        args.extend(app.iter().map(|s| s.to_string()));
        // Line-buffered stdout (coreutils' stdbuf execs testpmd: same pid), so
        // that what a command prints can be read from the log while it runs.
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg(bin)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(f.try_clone().map_err(|e| err(e.to_string()))?))
            .stderr(Stdio::from(f))
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e} (apt-get install dpdk)", bin.display())))?;
        let mut tp = Tp { child, log, prefix: prefix.into() };
        let t0 = Instant::now();
        while !tp.text().contains("testpmd>") {
            if let Ok(Some(st)) = tp.child.try_wait() {
                return Err(err(format!("testpmd exited ({st}); see {}", tp.log.display())));
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(err(format!("testpmd did not start; see {}", tp.log.display())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(tp)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cmd(&mut self, c: &str) -> Result<(), Error> {
        let s = self.child.stdin.as_mut().ok_or_else(|| err("testpmd stdin closed"))?;
        writeln!(s, "{c}").and_then(|_| s.flush()).map_err(|e| err(format!("testpmd: {e}")))
    }

    fn quit(&mut self) {
        let _ = self.cmd("quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `key` of the n-th (1-based) "NIC statistics for port 0" block.
    fn port0_field(&self, n: usize, key: &str) -> Option<u64> {
        self.port_field(0, n, key)
    }

    /// `key` of the n-th (1-based) "NIC statistics for port P" block.
    fn port_field(&self, port: u16, n: usize, key: &str) -> Option<u64> {
        let t = self.text();
        let block = t.split(&format!("NIC statistics for port {port} ")).nth(n)?;
        let l = block.lines().find(|l| l.contains(key))?;
        let mut w = l.split_whitespace();
        w.position(|x| x == key)?;
        w.next()?.parse().ok()
    }
}

impl Drop for Tp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// The device under test while it runs.
enum Dut {
    /// `bulkhead run` (its forwarding lcore thread is `rte-worker-1`).
    Switch { child: Child, prefix: String, socket: PathBuf },
    /// dpdk-testpmd io over net_vhost vdevs.
    Testpmd(Tp),
    /// OVS through the peer script (PMD thread `pmd-cNN...`).
    Ovs { script: PathBuf, work: PathBuf, pid: String, comm: String },
}

/// CPU ns of thread `comm` of `pid`, by exact name or else by prefix (OVS
/// names its PMD thread `pmd-cNN/id:M`).
fn fwd_thread_ns(pid: &str, comm: &str) -> u64 {
    if let Some(v) = thread_cpu_ns(pid, comm) {
        return v;
    }
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    for t in rd.flatten() {
        let c = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if c.trim().starts_with(comm) {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            return s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

impl Dut {
    fn cpu_ns(&self) -> u64 {
        match self {
            Dut::Switch { child, .. } => fwd_thread_ns(&child.id().to_string(), "rte-worker-1"),
            Dut::Testpmd(t) => fwd_thread_ns(&t.child.id().to_string(), "rte-worker-1"),
            Dut::Ovs { pid, comm, .. } => fwd_thread_ns(pid, comm),
        }
    }

    /// Cumulative (processing cycles, packets received) of the forwarding
    /// core, as the DUT itself counts them; None when it does not answer.
    fn busy(&mut self) -> Option<(u64, u64)> {
        match self {
            Dut::Switch { socket, .. } => {
                let mut c = crate::shell::socket::Client::connect(socket).ok()?;
                let text = crate::shell::socket::Target::execute(&mut c, "show fwd stats all").ok()?;
                let total = text.split("Accumulated forward statistics").nth(1)?;
                Some((busy_cycles(total)?, field_after(total, "RX-packets:")?))
            }
            Dut::Testpmd(t) => {
                let n = t.text().matches("Accumulated forward statistics").count();
                t.cmd("show fwd stats all").ok()?;
                let t0 = Instant::now();
                loop {
                    let text = t.text();
                    if let Some(block) = text.split("Accumulated forward statistics").nth(n + 1) {
                        if let (Some(c), Some(p)) = (busy_cycles(block), field_after(block, "RX-packets:")) {
                            return Some((c, p));
                        }
                    }
                    if t0.elapsed() > Duration::from_secs(5) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Dut::Ovs { script, work, .. } => {
                let out = Command::new("bash").arg(&*script).arg("pmd").arg(&*work).output().ok()?;
                let text = String::from_utf8_lossy(&out.stdout);
                Some((field_after(&text, "processing cycles:")?, field_after(&text, "packets received:")?))
            }
        }
    }

    fn stop(self) {
        match self {
            Dut::Testpmd(mut t) => {
                let _ = t.cmd("stop");
                t.quit();
            }
            Dut::Switch { mut child, prefix, .. } => {
                // SIGTERM: the switch stops its lcores and cleans up EAL.
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&prefix));
            }
            Dut::Ovs { script, work, .. } => {
                let _ = Command::new("bash").arg(&script).arg("stop").arg(&work).status();
            }
        }
    }
}

const MODEL: &str = r#"[[namespaces]]
name = "bench"
[[workloads]]
name = "gen"
namespace = "bench"
labels = { app = "gen" }
addresses = ["198.18.0.1"]
port = 0
[[workloads]]
name = "sink"
namespace = "bench"
labels = { app = "sink" }
addresses = ["198.18.0.2"]
port = 1
"#;

const POLICY: &str = r#"[[policy]]
name = "sink"
namespace = "bench"
selector = "app=sink"
  [[policy.ingress]]
  from = [{ selector = "app=gen" }]
  ports = ["9/udp"]
"#;

fn start_dut(o: &VhostBenchOpts, system: &str, work: &Path, s0: &Path, s1: &Path) -> Result<Dut, Error> {
    let pid = std::process::id();
    match system {
        "bulkhead-io" | "bulkhead-policy" => {
            let policy = system == "bulkhead-policy";
            let prefix = format!("bhvb-{system}-{pid}");
            let mut cfg = format!(
                "[eal]\nmemory_mb = 512\nfile_prefix = \"{prefix}\"\nlcores = \"0@{},1@{}\"\n[metrics]\nlisten = \"\"\n[flowlog]\nfollow = \"\"\n\
                 [forwarding]\nmode = \"{}\"\n[[port]]\ndevargs = \"net_vhost0,iface={},client=1\"\n[[port]]\ndevargs = \"net_vhost1,iface={},client=1\"\n",
                o.gen_cpu,
                o.fwd_cpu,
                if policy { "policy" } else { "io" },
                s0.display(),
                s1.display()
            );
            if policy {
                let (m, p) = (work.join("model.toml"), work.join("policy.toml"));
                std::fs::write(&m, MODEL).map_err(|e| err(e.to_string()))?;
                std::fs::write(&p, POLICY).map_err(|e| err(e.to_string()))?;
                cfg += &format!("[policy]\nmodel = \"{}\"\nfiles = [\"{}\"]\n", m.display(), p.display());
            }
            let path = work.join(format!("{system}.toml"));
            std::fs::write(&path, cfg).map_err(|e| err(e.to_string()))?;
            let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
            let log = std::fs::File::create(work.join(format!("{system}.log"))).map_err(|e| err(e.to_string()))?;
            let child = Command::new(exe)
                .args(["run", "--config"])
                .arg(&path)
                .arg("--socket")
                .arg(work.join(format!("{system}.sock")))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().map_err(|e| err(e.to_string()))?))
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| err(e.to_string()))?;
            Ok(Dut::Switch { child, prefix, socket: work.join(format!("{system}.sock")) })
        }
        "testpmd" => {
            let prefix = format!("bhvb-tpdut-{pid}");
            let eal = vec![
                "-m".into(),
                "512".into(),
                "--lcores".into(),
                format!("0@{},1@{}", o.gen_cpu, o.fwd_cpu),
                format!("--vdev=net_vhost0,iface={},client=1", s0.display()),
                format!("--vdev=net_vhost1,iface={},client=1", s1.display()),
            ];
            let mut tp = Tp::spawn(&o.testpmd, work.join("testpmd-dut.log"), &prefix, &eal, &["--forward-mode=io", "--burst=32", "--total-num-mbufs=16384", "--record-core-cycles"])?;
            tp.cmd("start")?;
            Ok(Dut::Testpmd(tp))
        }
        "ovs" => {
            let ow = work.join("ovs");
            std::fs::create_dir_all(&ow).map_err(|e| err(e.to_string()))?;
            let out = Command::new("bash")
                .arg(&o.ovs_script)
                .arg("start")
                .arg(&ow)
                .arg(s0)
                .arg(s1)
                .arg(o.fwd_cpu.to_string())
                .arg(o.gen_cpu.to_string())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| err(format!("{}: {e}", o.ovs_script.display())))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().find(|l| l.starts_with("ovs pid=")).ok_or_else(|| err(format!("OVS did not start ({}): {text}", out.status)))?;
            let kv = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or_default().to_string();
            Ok(Dut::Ovs { script: o.ovs_script.clone(), work: ow, pid: kv("pid="), comm: kv("pmd_comm=") })
        }
        other => Err(err(format!("unknown system {other:?} (bulkhead-io, bulkhead-policy, testpmd, ovs)"))),
    }
}

/// The loop topology: one frontend process F with two virtio_user ports on
/// one lcore, io forwarding. `start tx_first 32` injects 32 bursts of 64-byte
/// txonly frames (198.18.0.1 -> 198.18.0.2 udp 9) on each port; then F sends
/// back out of port 0 whatever it receives on port 1, so the frames circle
/// F port 0 -> DUT (SOCK0 -> SOCK1) -> F port 1 -> F port 0, and the frames
/// injected on port 1 the other way round where the DUT forwards that way
/// (io engines; OVS has one flow per direction; Bulkhead's policy engine
/// routes them by address, to SOCK1). Rate = F rx packets per second, both
/// ports = everything the DUT forwarded. Two busy pollers (F on `gen_cpu`,
/// the DUT on `fwd_cpu`) on two CPUs.
fn one_loop(o: &VhostBenchOpts, system: &str, work: &Path) -> Result<VhostBenchResult, Error> {
    let pid = std::process::id();
    let (s0, s1) = (work.join(format!("{system}-0.sock")), work.join(format!("{system}-1.sock")));
    let _ = std::fs::remove_file(&s0);
    let _ = std::fs::remove_file(&s1);
    let mut dut = start_dut(o, system, work, &s0, &s1)?;
    let eal = vec![
        "-m".to_string(),
        "512".into(),
        "--single-file-segments".into(),
        "--lcores".into(),
        format!("0@{},1@{}", o.gen_cpu, o.gen_cpu),
        format!("--vdev=virtio_user0,path={},server=1,queue_size=1024", s0.display()),
        format!("--vdev=virtio_user1,path={},server=1,queue_size=1024", s1.display()),
    ];
    let f = Tp::spawn(&o.testpmd, work.join(format!("{system}-f.log")), &format!("bhvb-f-{pid}"), &eal, &["--forward-mode=io", "--txpkts=64", "--total-num-mbufs=8192", "--no-flush-rx", "--burst=32"]);
    let mut f = match f {
        Ok(f) => f,
        Err(e) => {
            dut.stop();
            return Err(e);
        }
    };
    let res = (|| {
        std::thread::sleep(Duration::from_secs(1));
        f.cmd("start tx_first 32")?;
        std::thread::sleep(Duration::from_secs(o.warmup));
        let b0 = dut.busy();
        f.cmd("show port stats all")?;
        let c0 = dut.cpu_ns();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds));
        f.cmd("show port stats all")?;
        let c1 = dut.cpu_ns();
        let dt = t0.elapsed().as_secs_f64();
        let b1 = dut.busy();
        f.cmd("stop")?;
        Ok::<_, Error>((c1.saturating_sub(c0), dt, cycles_per_pkt(b0, b1)))
    })();
    dut.stop();
    f.quit();
    let (cpu_ns, dt, dut_cycles_per_pkt) = res?;
    // Both F ports: whatever the DUT forwarded, in either direction.
    let mut packets = 0;
    for port in [0, 1] {
        let (Some(a), Some(b)) = (f.port_field(port, 1, "RX-packets:"), f.port_field(port, 2, "RX-packets:")) else {
            return Err(err(format!("no frontend stats for {system}; see {}", f.log.display())));
        };
        packets += b.saturating_sub(a);
    }
    Ok(VhostBenchResult { system: system.into(), mpps: packets as f64 / dt / 1e6, dut_cpu: cpu_ns as f64 / 1e9 / dt, packets, dut_cycles_per_pkt })
}

fn one(o: &VhostBenchOpts, system: &str, work: &Path) -> Result<VhostBenchResult, Error> {
    if o.topology == "loop" {
        return one_loop(o, system, work);
    }
    let pid = std::process::id();
    let (s0, s1) = (work.join(format!("{system}-g.sock")), work.join(format!("{system}-r.sock")));
    let _ = std::fs::remove_file(&s0);
    let _ = std::fs::remove_file(&s1);
    let lc = format!("0@{},1@{}", o.gen_cpu, o.gen_cpu);
    let fe = |sock: &Path| vec!["-m".to_string(), "512".into(), "--single-file-segments".into(), "--lcores".into(), lc.clone(), format!("--vdev=virtio_user0,path={},server=1,queue_size=1024", sock.display())];
    // The DUT first: a virtio_user frontend in server mode waits in its
    // start-up for the backend to connect (the DUT retries every second).
    let mut dut = start_dut(o, system, work, &s0, &s1)?;
    let spawned = (|| {
        let r = Tp::spawn(&o.testpmd, work.join(format!("{system}-r.log")), &format!("bhvb-r-{pid}"), &fe(&s1), &["--forward-mode=rxonly", "--total-num-mbufs=4096", "--no-flush-rx"])?;
        let g = Tp::spawn(&o.testpmd, work.join(format!("{system}-g.log")), &format!("bhvb-g-{pid}"), &fe(&s0), &["--forward-mode=txonly", "--txpkts=64", "--total-num-mbufs=4096", "--burst=32"])?;
        Ok::<_, Error>((r, g))
    })();
    let (mut r, mut g) = match spawned {
        Ok(v) => v,
        Err(e) => {
            dut.stop();
            return Err(e);
        }
    };
    let res = (|| {
        std::thread::sleep(Duration::from_secs(1));
        r.cmd("start")?;
        g.cmd("start")?;
        std::thread::sleep(Duration::from_secs(o.warmup));
        let b0 = dut.busy();
        r.cmd("show port stats 0")?;
        let c0 = dut.cpu_ns();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(o.seconds));
        r.cmd("show port stats 0")?;
        let c1 = dut.cpu_ns();
        let dt = t0.elapsed().as_secs_f64();
        let b1 = dut.busy();
        g.cmd("stop")?;
        r.cmd("stop")?;
        Ok::<_, Error>((c1.saturating_sub(c0), dt, cycles_per_pkt(b0, b1)))
    })();
    dut.stop();
    g.quit();
    r.quit();
    let (cpu_ns, dt, dut_cycles_per_pkt) = res?;
    let (p0, p1) = (r.port0_field(1, "RX-packets:"), r.port0_field(2, "RX-packets:"));
    let (Some(p0), Some(p1)) = (p0, p1) else {
        return Err(err(format!("no receiver stats for {system}; see {}", r.log.display())));
    };
    let packets = p1.saturating_sub(p0);
    Ok(VhostBenchResult { system: system.into(), mpps: packets as f64 / dt / 1e6, dut_cpu: cpu_ns as f64 / 1e9 / dt, packets, dut_cycles_per_pkt })
}

/// Runs every system in turn and prints one line each, then the ratios.
///
/// # Errors
/// A system that cannot be started or measured.
pub fn vhost(o: &VhostBenchOpts) -> Result<Vec<VhostBenchResult>, Error> {
    let work = o.workdir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("bulkhead-bench-vhost-{}", std::process::id())));
    std::fs::create_dir_all(&work).map_err(|e| err(format!("{}: {e}", work.display())))?;
    println!(
        "# vhost-user VM->VM ({} topology): virtio_user txonly 64 B -> DUT (1 forwarding core on cpu {}) -> virtio_user; {} s per system after {} s warm-up; loadavg {}",
        o.topology,
        o.fwd_cpu,
        o.seconds,
        o.warmup,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?")
    );
    if o.topology != "loop" && o.topology != "split" {
        return Err(err(format!("--topology {}: expected loop or split", o.topology)));
    }
    // Rounds interleave the systems, so a burst of load from elsewhere on
    // the machine hits them alike; the medians are the result.
    let mut samples: Vec<VhostBenchResult> = Vec::new();
    for round in 1..=o.rounds.max(1) {
        for s in &o.systems {
            let r = one(o, s, &work)?;
            println!(
                "round={round} system={:<16} mpps={:.3} dut_cpu={:.2} mpps_per_cpu={:.3} packets={} dut_cycles_per_pkt={}",
                r.system,
                r.mpps,
                r.dut_cpu,
                r.mpps_per_cpu(),
                r.packets,
                r.dut_cycles_per_pkt.map_or("-".into(), |c| format!("{c:.1}"))
            );
            samples.push(r);
        }
    }
    let mut results = Vec::new();
    for s in &o.systems {
        if results.iter().any(|r: &VhostBenchResult| &r.system == s) {
            continue;
        }
        let mine: Vec<&VhostBenchResult> = samples.iter().filter(|r| &r.system == s).collect();
        let mut m: Vec<f64> = mine.iter().map(|r| r.mpps).collect();
        let mut c: Vec<f64> = mine.iter().map(|r| r.dut_cpu).collect();
        let mut p: Vec<f64> = mine.iter().map(|r| r.packets as f64).collect();
        let mut cyc: Vec<f64> = mine.iter().filter_map(|r| r.dut_cycles_per_pkt).collect();
        let dut_cycles_per_pkt = (!cyc.is_empty()).then(|| median(&mut cyc));
        results.push(VhostBenchResult { system: s.clone(), mpps: median(&mut m), dut_cpu: median(&mut c), packets: median(&mut p) as u64, dut_cycles_per_pkt });
    }
    let per_cpu = |s: &str| {
        let mut v: Vec<f64> = samples.iter().filter(|r| r.system == s).map(VhostBenchResult::mpps_per_cpu).collect();
        median(&mut v)
    };
    let ovs = results.iter().find(|r| r.system == "ovs").cloned();
    for r in &results {
        let (ratio, cratio) = match &ovs {
            Some(o) if o.mpps > 0.0 => (format!("{:.3}", r.mpps / o.mpps), format!("{:.3}", per_cpu(&r.system) / per_cpu("ovs").max(1e-9))),
            _ => ("-".to_string(), "-".to_string()),
        };
        // > 1: fewer processing cycles per packet than OVS (more capacity).
        let cyc_ratio = match (ovs.as_ref().and_then(|o| o.dut_cycles_per_pkt), r.dut_cycles_per_pkt) {
            (Some(o), Some(m)) if m > 0.0 => format!("{:.3}", o / m),
            _ => "-".to_string(),
        };
        println!(
            "system={:<16} median_mpps={:.3} median_dut_cpu={:.2} median_mpps_per_cpu={:.3} ratio_to_ovs={ratio} cpu_ratio_to_ovs={cratio} median_dut_cycles_per_pkt={} cycles_ratio_to_ovs={cyc_ratio}",
            r.system,
            r.mpps,
            r.dut_cpu,
            per_cpu(&r.system),
            r.dut_cycles_per_pkt.map_or("-".into(), |c| format!("{c:.1}"))
        );
    }
    if o.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dut_cycle_counts_parse_from_each_systems_output() {
        // `show fwd stats all` of the switch.
        let bh = "\n  +++++++++++++++ Accumulated forward statistics for all ports (policy) +++++++++++++++\n  \
                  RX-packets: 52632704       FWD-dropped: 0             RX-total: 52632704\n  \
                  TX-packets: 52632704       TX-dropped: 0              TX-total: 52632704\n\n  \
                  CPU cycles/packet=234.68 (busy cycles=12351895230)";
        let total = bh.split("Accumulated forward statistics").nth(1).unwrap();
        assert_eq!((busy_cycles(total), field_after(total, "RX-packets:")), (Some(12_351_895_230), Some(52_632_704)));
        // dpdk-testpmd 22.11 --record-core-cycles.
        let tp = "  RX-packets: 2246592        RX-dropped: 0             RX-total: 2246592\n\n  \
                  CPU cycles/packet=1147.53 (total cycles=2578036581 / total io packets=2246592) at 2600 MHz Clock\n";
        assert_eq!((busy_cycles(tp), field_after(tp, "RX-packets:")), (Some(2_578_036_581), Some(2_246_592)));
        // OVS pmd-stats-show.
        let ovs = "pmd thread numa_id 0 core_id 1:\n  packets received: 10417088\n  packet recirculations: 0\n  \
                   idle cycles: 5000 (10.00%)\n  processing cycles: 6882000000 (90.00%)\n";
        assert_eq!((field_after(ovs, "processing cycles:"), field_after(ovs, "packets received:")), (Some(6_882_000_000), Some(10_417_088)));
        assert_eq!(field_after("busy cycles=", "busy cycles="), None, "no digits");
        assert_eq!(busy_cycles("RX-packets: 5"), None, "no cycles line");
    }

    #[test]
    fn cycles_per_packet_is_a_delta_and_needs_packets() {
        assert_eq!(cycles_per_pkt(Some((1000, 10)), Some((3000, 20))), Some(200.0));
        assert_eq!(cycles_per_pkt(Some((1000, 10)), Some((3000, 10))), None, "no packet in the window");
        assert_eq!(cycles_per_pkt(None, Some((3000, 20))), None);
    }
}
