//! `bulkhead bench offload`: the policy switch on one forwarding core with
//! the software NIC model offloading hot flows, against the same switch with
//! offload off, alternately in one run (same process, ports, pcap, core).
//!
//! Setup: port 0 = net_pcap `infinite_rx` replaying a pcap of `flows` TCP
//! flows from workload `cli` (port 0) to workload `srv` (port 1) where `hot`
//! flows carry `hot_share` % of the packets (shuffled); port 1 = net_null
//! `no-rx=1`. The policy allows `srv` port 80 from `cli`; `deny_pct` % of the
//! flows (hot and cold alike) go to port 81 and are denied. Offload on: hot
//! denied flows get DROP rules (freed before software), hot allowed flows
//! MARK rules (forwarded without parse and lookup). The model's own work
//! (header extraction and rule match on every packet) runs on the same core,
//! so "on" pays for the simulated NIC too.
//!
//! Rate = packets the forwarding lcore received per second over the window;
//! cycles/packet = its busy cycles over those packets. Medians of the rounds.
//! A harness that prints figures, never a timed assertion.

use crate::config::Config;
use crate::switch::{Error, Switch};
use flowtable::key::v4_mapped;
use flowtable::parse::build::{Spec, L4};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options of `bulkhead bench offload`.
#[derive(Clone, Debug)]
pub struct OffloadBenchOpts {
    /// Distinct flows.
    pub flows: u32,
    /// Hot flows among them.
    pub hot: u32,
    /// Percent of packets the hot flows carry.
    pub hot_share: u32,
    /// Percent of flows that are denied.
    pub deny_pct: u32,
    /// Packets in the pcap.
    pub packets: u32,
    /// Measured seconds per round and side.
    pub seconds: f64,
    /// Rounds (each: off then on).
    pub rounds: u32,
    /// Hot threshold, packets per millisecond.
    pub threshold: u32,
    /// EAL lcores (main, forwarding).
    pub lcores: String,
}

impl Default for OffloadBenchOpts {
    fn default() -> Self {
        OffloadBenchOpts { flows: 1000, hot: 100, hot_share: 90, deny_pct: 20, packets: 10_000, seconds: 3.0, rounds: 3, threshold: 16, lcores: "0,1".into() }
    }
}

/// The packet sequence: flow index per packet, hot flows carrying `hot_share` %.
fn sequence(o: &OffloadBenchOpts) -> Vec<u32> {
    let hot_pkts = (o.packets as u64 * o.hot_share as u64 / 100) as u32;
    let cold = o.flows - o.hot;
    let mut seq: Vec<u32> = (0..hot_pkts).map(|i| i % o.hot).chain((0..o.packets - hot_pkts).map(|i| o.hot + i % cold.max(1))).collect();
    // Deterministic shuffle (xorshift), so bursts mix hot and cold flows.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..seq.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seq.swap(i, (x % (i as u64 + 1)) as usize);
    }
    seq
}

fn frame(o: &OffloadBenchOpts, flow: u32) -> Vec<u8> {
    // Every (100 / deny_pct)-th flow, hot and cold alike, is denied.
    let denied = o.deny_pct > 0 && flow.is_multiple_of(100 / o.deny_pct.min(100));
    let dport = if denied { 81 } else { 80 };
    Spec::new(v4_mapped(0x0a01_0001), v4_mapped(0x0a01_0002), L4::Tcp { sport: 1024 + flow as u16, dport, flags: 0x10 }).build()
}

fn write_setup(o: &OffloadBenchOpts, dir: &Path) -> Result<std::path::PathBuf, Error> {
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let frames: Vec<Vec<u8>> = sequence(o).into_iter().map(|f| frame(o, f)).collect();
    let pcap = dir.join("hot.pcap");
    pmd::pcap::write(&pcap, &frames).map_err(|e| Error::Invalid(format!("{}: {e}", pcap.display())))?;
    std::fs::write(
        dir.join("model.toml"),
        "[[namespaces]]\nname = \"bench\"\n\
         [[workloads]]\nname = \"cli\"\nnamespace = \"bench\"\nlabels = { app = \"cli\" }\naddresses = [\"10.1.0.1\"]\nport = 0\n\
         [[workloads]]\nname = \"srv\"\nnamespace = \"bench\"\nlabels = { app = \"srv\" }\naddresses = [\"10.1.0.2\"]\nmac = \"02:00:00:00:00:02\"\nport = 1\n",
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("policy.toml"),
        "[[policy]]\nname = \"srv\"\nnamespace = \"bench\"\nselector = \"app=srv\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=cli\" }]\n  ports = [\"80/tcp\"]\n",
    )
    .map_err(io)?;
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[eal]\nlcores = \"{}\"\nfile_prefix = \"bulkhead-offload-bench-{}\"\n\
             [forwarding]\nmode = \"policy\"\nnb_cores = 1\n\
             [[port]]\ndevargs = \"net_pcap_ob0,rx_pcap={},infinite_rx=1\"\n\
             [[port]]\ndevargs = \"net_null_ob1,no-rx=1\"\n\
             [policy]\nmodel = \"{}\"\nfiles = [\"{}\"]\noffload = \"model\"\noffload_ports = [0]\noffload_threshold = {}\n\
             [flowlog]\nfollow = \"\"\n",
            o.lcores,
            std::process::id(),
            pcap.display(),
            dir.join("model.toml").display(),
            dir.join("policy.toml").display(),
            o.threshold
        ),
    )
    .map_err(io)?;
    Ok(cfg)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// (rx packets, busy cycles, hw drops, hw marked, model cycles) now.
fn counters(sw: &Switch) -> (u64, u64, u64, u64, u64) {
    let l = sw.policy_lcores();
    let hw = sw.offload().map_or([0; 6], |o| o.lcore_totals());
    (l.iter().map(|s| s.rx).sum(), l.iter().map(|s| s.busy_cycles).sum(), hw[0], hw[1], hw[5])
}

struct Window {
    mpps: f64,
    cpp: f64,
    /// Cycles per packet spent in the model (the simulated NIC's share).
    model_cpp: f64,
    hw_share: f64,
}

fn window(sw: &Switch, secs: f64) -> Window {
    let (r0, c0, d0, m0, x0) = counters(sw);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let el = t.elapsed().as_secs_f64();
    let (r1, c1, d1, m1, x1) = counters(sw);
    let pkts = r1.saturating_sub(r0).max(1);
    Window {
        mpps: pkts as f64 / el / 1e6,
        cpp: c1.saturating_sub(c0) as f64 / pkts as f64,
        model_cpp: x1.saturating_sub(x0) as f64 / pkts as f64,
        hw_share: (d1 - d0 + m1 - m0) as f64 / pkts as f64,
    }
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// Setup, EAL or port failures.
pub fn run(o: &OffloadBenchOpts) -> Result<String, Error> {
    if o.hot == 0 || o.hot > o.flows || o.flows > 60_000 || o.hot_share > 100 || o.packets < o.flows {
        return Err(Error::Invalid("need 0 < hot <= flows <= 60000, hot_share <= 100, packets >= flows".into()));
    }
    let dir = std::env::temp_dir().join(format!("bulkhead-offload-bench-{}", std::process::id()));
    let cfg_path = write_setup(o, &dir)?;
    let cfg = Config::load(&cfg_path)?;
    let mut sw = Switch::new(&cfg)?;
    let r = measure(&mut sw, o);
    if sw.is_forwarding() {
        let _ = sw.stop();
    }
    sw.shutdown()?;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn measure(sw: &mut Switch, o: &OffloadBenchOpts) -> Result<String, Error> {
    sw.start()?;
    let settle = Duration::from_millis(700);
    std::thread::sleep(settle);
    let mut out = String::new();
    let (mut off_r, mut on_r, mut off_c, mut on_c, mut share) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sw_c = Vec::new();
    for round in 0..o.rounds {
        sw.set_offload(false)?;
        std::thread::sleep(settle);
        let off = window(sw, o.seconds);
        sw.set_offload(true)?;
        std::thread::sleep(settle);
        let on = window(sw, o.seconds);
        let _ = writeln!(
            out,
            "round {round}: off {:.3} Mpps {:.0} cycles/pkt | on {:.3} Mpps {:.0} cycles/pkt of which model {:.0} (software {:.0}), {:.1} % of packets decided by hardware",
            off.mpps,
            off.cpp,
            on.mpps,
            on.cpp,
            on.model_cpp,
            on.cpp - on.model_cpp,
            on.hw_share * 100.0
        );
        sw_c.push(off.cpp / (on.cpp - on.model_cpp).max(1e-9));
        off_r.push(off.mpps);
        on_r.push(on.mpps);
        off_c.push(off.cpp);
        on_c.push(on.cpp);
        share.push(on.hw_share * 100.0);
    }
    let (off, on) = (median(&mut off_r), median(&mut on_r));
    let _ = writeln!(
        out,
        "offload flows={} hot={} hot_share={}% denied={}% threshold={}/ms rounds={} seconds={}: off {off:.3} Mpps ({:.0} cycles/pkt), on {on:.3} Mpps ({:.0} cycles/pkt), on/off {:.2}x, hardware-decided {:.1} %; software cycles/pkt off/on (the model's cycles taken out, as a NIC would) {:.2}x",
        o.flows,
        o.hot,
        o.hot_share,
        o.deny_pct,
        o.threshold,
        o.rounds,
        o.seconds,
        median(&mut off_c),
        median(&mut on_c),
        on / off.max(1e-9),
        median(&mut share),
        median(&mut sw_c)
    );
    let _ = writeln!(out, "{}", sw.offload_text());
    Ok(out)
}
