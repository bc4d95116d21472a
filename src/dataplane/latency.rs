//! `bulkhead bench policy-update`: publish-to-enforced latency under load.
//!
//! The switch runs in policy mode from a config (traffic keeps every lcore
//! busy). The control thread toggles the quarantine of one workload, N times;
//! for each change it measures, on the TSC (synchronised across cores):
//! - `compile`: the compiler's diff;
//! - `publish`: staging plus the left-right swap (returns once readers of the
//!   old copy have let go and the log is replayed);
//! - `enforced`: from the swap that publishes the new generation until the
//!   LAST forwarding lcore decides its first burst under it: after that, no
//!   packet is decided under the old verdicts;
//! - `change`: the same end point, from just before the compile.
//!
//! A harness that prints figures (never a timed assertion).

use crate::config::Config;
use crate::switch::{Error, Switch};
use std::path::Path;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Runs the measurement and returns the report lines.
///
/// # Errors
/// Configuration, DPDK or policy errors; an unknown workload.
pub fn update_latency(config: &Path, workload: &str, iterations: u32, warmup: Duration) -> Result<String, Error> {
    let cfg = Config::load(config)?;
    let mut sw = Switch::new(&cfg)?;
    let r = measure(&mut sw, workload, iterations, warmup);
    if sw.is_forwarding() {
        let _ = sw.stop();
    }
    sw.shutdown()?;
    r
}

fn measure(sw: &mut Switch, workload: &str, iterations: u32, warmup: Duration) -> Result<String, Error> {
    if sw.fwd_mode() != "policy" {
        sw.set_fwd("policy")?;
    }
    if !sw.is_forwarding() {
        sw.start()?;
    }
    std::thread::sleep(warmup);
    let hz = pmd::Eal::tsc_hz() as f64;
    let us = |cycles: u64| cycles as f64 / hz * 1e6;
    let (mut compile, mut publish, mut enforced, mut change) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut timeouts = 0;
    let rx0 = sw.policy_lcores().iter().map(|s| s.rx).sum::<u64>();
    let t_start = Instant::now();
    for i in 0..iterations {
        let t0 = pmd::lcore::rdtsc();
        let pb = sw.plane_mut()?.quarantine(workload, i % 2 == 0).map_err(|e| Error::Invalid(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let done = loop {
            let seen = sw.policy_gens_seen();
            if !seen.is_empty() && seen.iter().all(|(g, _)| *g >= pb.gen) {
                break seen.iter().map(|(_, t)| *t).max();
            }
            if Instant::now() > deadline {
                break None;
            }
            std::hint::spin_loop();
        };
        compile.push(pb.compile.as_secs_f64() * 1e6);
        publish.push(pb.publish.as_secs_f64() * 1e6);
        match done {
            Some(t1) => {
                enforced.push(us(t1.saturating_sub(pb.swap_tsc)));
                change.push(us(t1.saturating_sub(t0)));
            }
            None => timeouts += 1,
        }
        // Let the lcores run a while between changes, as real changes are spaced.
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t_start.elapsed().as_secs_f64();
    let rx1 = sw.policy_lcores().iter().map(|s| s.rx).sum::<u64>();
    let mpps = (rx1 - rx0) as f64 / secs / 1e6;
    let lcores = sw.policy_gens_seen().len();
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "policy-update changes={iterations} lcores={lcores} load_mpps={mpps:.2} enforced_p50_us={:.1} enforced_p99_us={:.1} enforced_max_us={:.1} change_p50_us={:.1} change_p99_us={:.1} compile_p50_us={:.1} compile_p99_us={:.1} publish_p50_us={:.1} publish_p99_us={:.1} timeouts={timeouts}",
        pct(&mut enforced.clone(), 0.5),
        pct(&mut enforced.clone(), 0.99),
        pct(&mut enforced, 1.0),
        pct(&mut change.clone(), 0.5),
        pct(&mut change, 0.99),
        pct(&mut compile.clone(), 0.5),
        pct(&mut compile, 0.99),
        pct(&mut publish.clone(), 0.5),
        pct(&mut publish, 0.99),
    );
    Ok(out)
}
