//! Runs the policy engine on the forwarding lcores (`set fwd policy`).
//!
//! Queue plan, like testpmd's streams: every (port, rx queue) is polled by
//! exactly one lcore (round-robin); lcore k transmits on tx queue k of every
//! port, so ports need at least as many tx queues as forwarding lcores (a
//! shortfall is a clear error, through [`pmd::route::Claim`]).
//!
//! Each lcore owns its [`PolicyHandler`] (cache, conntrack, counters). Every
//! 1024 bursts it copies its counters into a [`SharedStats`] of relaxed
//! atomics that the control thread reads (`show pmd stats`, metrics): no lock
//! on the data path, and a reader sees each counter whole.

use super::handler::{HandlerStats, PolicyHandler, PortMap};
use super::offload::OffloadRuntime;
use super::state::DpState;
use crate::visibility::export::EventSender;
use flowtable::leftright::Reader;
use flowtable::pipeline::PipelineConfig;
use flowtable::stats::Stats;
use pmd::route::{Claim, Output, RouteHandler, RouteStats, RxQueue, DROP};
use pmd::{Burst, BURST};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A port as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct EnginePort {
    /// Port id.
    pub id: u16,
    /// The port's MAC.
    pub mac: [u8; 6],
    /// Rx queues.
    pub rxq: u16,
    /// Tx queues.
    pub txq: u16,
}

/// Counters an lcore publishes for the control thread.
#[derive(Debug)]
pub struct SharedStats {
    pipeline: Vec<AtomicU64>,
    arp_replied: AtomicU64,
    nd_replied: AtomicU64,
    arp_dropped: AtomicU64,
    no_output: AtomicU64,
    link_down: AtomicU64,
    events_lost: AtomicU64,
    ct_entries: AtomicU64,
    gen_seen: AtomicU64,
    gen_seen_tsc: AtomicU64,
    /// The route loop's own counters (rx, tx, drops, cycles).
    pub route: RouteStats,
}

impl Default for SharedStats {
    fn default() -> Self {
        SharedStats {
            pipeline: Stats::NAMES.iter().map(|_| AtomicU64::new(0)).collect(),
            arp_replied: AtomicU64::new(0),
            nd_replied: AtomicU64::new(0),
            arp_dropped: AtomicU64::new(0),
            no_output: AtomicU64::new(0),
            link_down: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
            ct_entries: AtomicU64::new(0),
            gen_seen: AtomicU64::new(0),
            gen_seen_tsc: AtomicU64::new(0),
            route: RouteStats::default(),
        }
    }
}

/// A copy of one lcore's counters.
#[derive(Clone, Debug, Default)]
pub struct LcoreSnapshot {
    /// The lcore.
    pub lcore: u32,
    /// Pipeline counters, in [`Stats::NAMES`] order.
    pub pipeline: Vec<u64>,
    /// Handler counters.
    pub handler: HandlerStats,
    /// Connections tracked.
    pub ct_entries: u64,
    /// Packets received.
    pub rx: u64,
    /// Packets transmitted.
    pub tx: u64,
    /// Packets dropped (policy, no route, malformed, ...).
    pub dropped: u64,
    /// Packets the driver refused on tx.
    pub tx_dropped: u64,
    /// Cycles in bursts that received packets.
    pub busy_cycles: u64,
    /// Cycles since start.
    pub total_cycles: u64,
}

impl LcoreSnapshot {
    /// A pipeline counter by name.
    pub fn get(&self, name: &str) -> u64 {
        Stats::NAMES.iter().position(|n| *n == name).and_then(|i| self.pipeline.get(i).copied()).unwrap_or(0)
    }
}

impl SharedStats {
    fn publish(&self, h: &PolicyHandler) {
        for (a, v) in self.pipeline.iter().zip(h.pipeline_stats().values()) {
            a.store(v, Ordering::Relaxed);
        }
        self.arp_replied.store(h.stats.arp_replied, Ordering::Relaxed);
        self.nd_replied.store(h.stats.nd_replied, Ordering::Relaxed);
        self.arp_dropped.store(h.stats.arp_dropped, Ordering::Relaxed);
        self.no_output.store(h.stats.no_output, Ordering::Relaxed);
        self.link_down.store(h.stats.link_down, Ordering::Relaxed);
        self.events_lost.store(h.stats.events_lost, Ordering::Relaxed);
        self.ct_entries.store(h.pipeline().conntrack().len() as u64, Ordering::Relaxed);
        self.publish_gen(h);
    }

    #[inline]
    fn publish_gen(&self, h: &PolicyHandler) {
        let (g, tsc) = h.gen_seen;
        if self.gen_seen.load(Ordering::Relaxed) != g {
            self.gen_seen_tsc.store(tsc, Ordering::Relaxed);
            // Release: pairs with the Acquire in `gen_seen`; the TSC is visible first.
            self.gen_seen.store(g, Ordering::Release);
        }
    }

    /// The newest generation this lcore decided a burst under, and the TSC of
    /// its first such burst.
    pub fn gen_seen(&self) -> (u64, u64) {
        // Acquire: pairs with the Release store in `publish_gen`.
        let g = self.gen_seen.load(Ordering::Acquire);
        (g, self.gen_seen_tsc.load(Ordering::Relaxed))
    }

    fn snapshot(&self, lcore: u32) -> LcoreSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LcoreSnapshot {
            lcore,
            pipeline: self.pipeline.iter().map(l).collect(),
            handler: HandlerStats {
                arp_replied: l(&self.arp_replied),
                nd_replied: l(&self.nd_replied),
                arp_dropped: l(&self.arp_dropped),
                no_output: l(&self.no_output),
                link_down: l(&self.link_down),
                events_lost: l(&self.events_lost),
            },
            ct_entries: l(&self.ct_entries),
            rx: l(&self.route.rx_packets),
            tx: l(&self.route.tx_packets),
            dropped: l(&self.route.dropped),
            tx_dropped: l(&self.route.tx_dropped),
            busy_cycles: l(&self.route.busy_cycles),
            total_cycles: l(&self.route.total_cycles),
        }
    }
}

/// The handler plus its periodic counter publication.
struct Publishing {
    h: PolicyHandler,
    shared: Arc<SharedStats>,
    bursts: u32,
}

impl RouteHandler for Publishing {
    // Into the route loop, as PolicyHandler::handle is into this.
    #[inline(always)]
    fn handle(&mut self, rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], now: u64) {
        self.h.handle(rx, burst, dest, now);
        self.shared.publish_gen(&self.h);
        self.bursts = self.bursts.wrapping_add(1);
        if self.bursts & 1023 == 0 {
            self.shared.publish(&self.h);
        }
    }
    fn idle(&mut self) {
        self.h.idle();
        self.bursts = self.bursts.wrapping_add(1);
        if self.bursts & 1023 == 0 {
            self.shared.publish(&self.h);
        }
    }
}

/// The running engine.
#[derive(Debug)]
pub struct PolicyEngine {
    stop: Arc<AtomicBool>,
    lcores: Vec<u32>,
    shared: Vec<Arc<SharedStats>>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No forwarding lcore.
    #[error("no forwarding lcores: give EAL at least two lcores")]
    NoLcores,
    /// More ports than a route table can address.
    #[error("{0} ports: the policy engine handles at most 254")]
    TooManyPorts(usize),
    /// A model-offloaded port whose rx queues several lcores poll.
    #[error("offload model on port {0}: its rx queues are spread over {1} lcores; one lcore must poll them all (fewer rxq or lcores)")]
    SplitModel(u16, usize),
    /// DPDK refused (a queue claimed twice: too few tx queues for the lcores, ...).
    #[error("{0}")]
    Pmd(#[from] pmd::Error),
}

impl PolicyEngine {
    /// Launches one policy lcore per entry of `lcores` over `ports`.
    ///
    /// # Errors
    /// [`EngineError`]; lcores already launched are stopped again.
    pub fn start(
        reader: &Reader<DpState>,
        ports: &[EnginePort],
        lcores: &[u32],
        burst: u16,
        cfg: PipelineConfig,
        events: Option<EventSender>,
        offload: Option<&OffloadRuntime>,
    ) -> Result<Self, EngineError> {
        if lcores.is_empty() {
            return Err(EngineError::NoLcores);
        }
        if ports.len() >= DROP as usize {
            return Err(EngineError::TooManyPorts(ports.len()));
        }
        let max_id = ports.iter().map(|p| p.id as usize).max().unwrap_or(0);
        let mut out_of_port = vec![DROP; max_id + 1];
        let mut mac_of_port = vec![[0u8; 6]; max_id + 1];
        for (i, p) in ports.iter().enumerate() {
            out_of_port[p.id as usize] = i as u8;
            mac_of_port[p.id as usize] = p.mac;
        }
        let map = PortMap { out_of_port, mac_of_port };
        let all_rx: Vec<RxQueue> = ports.iter().flat_map(|p| (0..p.rxq).map(move |q| RxQueue { port: p.id, queue: q })).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut eng = PolicyEngine { stop: stop.clone(), lcores: Vec::new(), shared: Vec::new() };
        let hz = pmd::Eal::tsc_hz();
        let rx_of = |k: usize| -> Vec<RxQueue> { all_rx.iter().copied().skip(k).step_by(lcores.len()).collect() };
        if let Some(o) = offload {
            // A model is one device: the lcore that owns it must poll all its queues.
            for p in ports.iter().filter(|p| o.has_port(p.id)) {
                let owners = (0..lcores.len()).filter(|&k| rx_of(k).iter().any(|r| r.port == p.id)).count();
                if owners > 1 {
                    return Err(EngineError::SplitModel(p.id, owners));
                }
            }
        }
        for (k, &lc) in lcores.iter().enumerate() {
            let rxqs: Vec<RxQueue> = rx_of(k);
            let outs: Vec<Output> = ports.iter().map(|p| Output { port: p.id, queue: k as u16 }).collect();
            if let Some(p) = ports.iter().find(|p| p.txq as usize <= k) {
                eng.stop();
                return Err(EngineError::Pmd(pmd::Error::QueueBusy { port: p.id, queue: k as u16 % p.txq.max(1), rx: false }));
            }
            let claim = match Claim::new(&rxqs, &outs) {
                Ok(c) => c,
                Err(e) => {
                    eng.stop();
                    return Err(e.into());
                }
            };
            let shared = Arc::new(SharedStats::default());
            let mut h = PolicyHandler::new(reader.clone(), cfg, map.clone(), events.clone(), hz);
            if let Some(o) = offload {
                let mine: Vec<u16> = rxqs.iter().map(|r| r.port).collect();
                h.set_offload(o.lcore(&mine, hz));
            }
            let (stop2, sh2) = (stop.clone(), shared.clone());
            let launched = pmd::lcore::launch(lc, move || {
                let mut p = Publishing { h, shared: sh2.clone(), bursts: 0 };
                pmd::route::run(&claim, &mut p, burst, &stop2, &sh2.route);
                // The lcore's connections and denied flows end here.
                p.h.finish();
                p.shared.publish(&p.h);
                drop(claim);
                0
            });
            if let Err(e) = launched {
                eng.stop();
                return Err(e.into());
            }
            eng.lcores.push(lc);
            eng.shared.push(shared);
        }
        Ok(eng)
    }

    /// Per lcore: the newest generation decided, and when (TSC).
    pub fn gens_seen(&self) -> Vec<(u64, u64)> {
        self.shared.iter().map(|s| s.gen_seen()).collect()
    }

    /// Per-lcore counters now.
    pub fn snapshot(&self) -> Vec<LcoreSnapshot> {
        self.lcores.iter().zip(&self.shared).map(|(lc, s)| s.snapshot(*lc)).collect()
    }

    /// Stops every lcore and waits for it (the counters stay readable).
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for &lc in &self.lcores {
            pmd::lcore::wait(lc);
        }
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.stop();
    }
}
