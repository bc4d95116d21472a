//! Offload figures with the software NIC model (a harness printing figures,
//! not a test):
//!
//! 1. install rate: synchronous create vs batched asynchronous submit, through a
//!    split device whose port half runs on its own thread (as an lcore would);
//! 2. time from a flow crossing the hot threshold on the "lcore" to its first
//!    hardware hit, through the lock-free request queue and the manager.
//!
//! `cargo run --release -p offload --example offload_bench [-- RULES]`

use flowtable::FlowKey;
use offload::manager::{feeder, request_queue};
use offload::model::channel;
use offload::{Backend, HotConfig, HotDetector, HwVerdict, Intent, Manager, ManagerConfig, OffloadRequest, Op, SoftNicConfig};
use offload::{FlowAction, FlowSpec, Headers};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(i: u32) -> FlowKey {
    FlowKey::v4(0, (0x0a00_0000 | (i >> 16)).into(), 0xac10_0001.into(), 17, i as u16, 53)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let cfg = SoftNicConfig { capacity: n as usize * 2, queue_depth: 8192, ..Default::default() };
    println!(
        "# model: sync call {:?} per call, {:?} per rule in the device, queue depth {}",
        cfg.sync_call, cfg.per_rule, cfg.queue_depth
    );

    // 1. install rate
    for (mode, batch) in [("sync", 1usize), ("async", 64), ("async", 256)] {
        let (mut be, mut port) = channel(cfg.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let dev = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                port.service(256);
            }
            port.nic.installed()
        });
        let specs: Vec<FlowSpec> = (0..n).map(|i| FlowSpec::exact(0, &key(i), vec![FlowAction::Drop])).collect();
        let t = Instant::now();
        let mut ok = 0usize;
        if mode == "sync" {
            for s in &specs {
                ok += be.create(s).is_ok() as usize;
            }
        } else {
            let mut done = Vec::new();
            let mut i = 0;
            while i < specs.len() {
                let end = (i + batch).min(specs.len());
                let ops: Vec<Op> = (i..end).map(|j| Op::Create { user: j as u64, spec: specs[j].clone() }).collect();
                match be.submit(&ops, &mut done) {
                    Ok(k) => i += k,
                    Err(_) => std::hint::spin_loop(),
                }
                be.poll(&mut done);
            }
            while done.len() < specs.len() {
                be.poll(&mut done);
            }
            ok = done.iter().filter(|c| c.result.is_ok()).count();
        }
        let dt = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let installed = dev.join().unwrap();
        println!(
            "offload install mode={mode} batch={batch} rules={n} ok={ok} installed={installed} rules_per_s={:.0} time_ms={:.1}",
            n as f64 / dt.as_secs_f64(),
            dt.as_secs_f64() * 1e3
        );
    }

    // 2. threshold -> first hardware hit
    let (be, mut port) = channel(cfg.clone());
    let q = request_queue(1024);
    let mq = q.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let mgr = std::thread::spawn(move || {
        let mut m = Manager::new(be, ManagerConfig { batch: 1, ..Default::default() });
        while !s2.load(Ordering::Relaxed) {
            if m.step(&mq, 64) == 0 {
                m.poll_completions();
            }
        }
        m.stats
    });
    let mut f = feeder(&q);
    let mut det = HotDetector::new(HotConfig { threshold: 32, window: u64::MAX, slots: 4096 });
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for i in 0..2000u32 {
        let k = key(1_000_000 + i);
        let h = Headers { eth_type: 0x0800, key: k, ..Default::default() };
        // the "lcore": packets of this flow until the detector fires
        let crossed = loop {
            port.service(64);
            let now = t0.elapsed().as_nanos() as u64;
            if det.observe(i.wrapping_mul(2654435761), now) {
                break Instant::now();
            }
        };
        f.push(OffloadRequest { port: 0, key: k, intent: Intent::Drop, gen: 0 });
        loop {
            port.service(64);
            if let HwVerdict::Drop(_) = port.rx(&h, 64) {
                lat.push(crossed.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if crossed.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let st = mgr.join().unwrap();
    println!(
        "offload threshold_to_hw_hit flows={} p50_us={:.1} p99_us={:.1} max_us={:.1} queue_full={} installed={}",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        f.full,
        st.installed
    );
}
