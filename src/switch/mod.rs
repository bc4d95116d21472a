//! The runtime: config -> EAL -> mempool -> ports -> forwarding lcores, and
//! the control surface the shell drives.
//!
//! Public API (stable; the shell and `main.rs` wire to exactly this):
//! ```text
//! pub fn run(config_path: &Path, stats_period: u64) -> Result<(), Error>
//! pub fn run_with(config_path: &Path, stats_period: u64,
//!                 tick: impl FnMut(&mut Switch) -> bool) -> Result<(), Error>
//!     // tick is called about every 100 ms on the control thread; return
//!     // false to shut down (e.g. the shell's `quit`).
//!
//! impl Switch {
//!   pub fn new(cfg: &Config) -> Result<Switch, Error>
//!   pub fn port_ids(&self) -> Vec<u16>
//!   pub fn port_info(&self, port: u16) -> Result<PortInfoReport, Error>          // Display
//!   pub fn port_stats(&mut self, port: u16) -> Result<PortStatsReport, Error>    // Display
//!   pub fn port_xstats(&self, port: u16) -> Result<Vec<(String, u64)>, Error>
//!   pub fn clear_port_stats(&mut self, port: Option<u16>) -> Result<(), Error>  // None = all
//!   pub fn fwd_stats(&self) -> FwdStatsReport                                    // Display
//!   pub fn clear_fwd_stats(&mut self)
//!   pub fn set_fwd(&mut self, mode: &str) -> Result<(), Error>
//!   pub fn fwd_mode(&self) -> &'static str
//!   pub fn start(&mut self) -> Result<(), Error>
//!   pub fn stop(&mut self) -> Result<FwdStatsReport, Error>
//!   pub fn is_forwarding(&self) -> bool
//!   pub fn port_start(&mut self, port: Option<u16>) -> Result<(), Error>
//!   pub fn port_stop(&mut self, port: Option<u16>) -> Result<(), Error>
//!   pub fn port_close(&mut self, port: Option<u16>) -> Result<(), Error>
//!   pub fn port_config(&mut self, what: QueueParam, n: u16) -> Result<(), Error>
//!   pub fn set_burst(&mut self, n: u16) -> Result<(), Error>
//!   pub fn set_nbcore(&mut self, n: u16) -> Result<(), Error>
//!   pub fn show_config(&self, what: ShowConfig) -> String
//!   pub fn stats_text(&mut self) -> String   // what --stats-period prints
//!   pub fn vhost_info(&self, port: u16) -> Option<VhostReport>   // VM port state
//!   pub fn vhost_list(&self) -> VhostList                          // show vhost
//!   pub fn port_id_by_name(&self, name: &str) -> Option<u16>
//!   pub fn poll_links(&mut self) -> Vec<(u16, bool)>  // VM link changes -> plane
//!   pub fn shutdown(self) -> Result<(), Error>
//! }
//! pub enum QueueParam { Rxq, Txq, Rxd, Txd }
//! pub enum ShowConfig { Fwd, Rxtx, Cores }
//! ```
//! Every `Error` displays as one line. Forwarding settings changed while
//! forwarding (`set fwd`, `set burst`, `set nbcore`) restart forwarding at once;
//! queue changes (`port config all ...`) need the ports stopped, as in testpmd,
//! and apply at the next `port start`.

mod cluster;
mod report;
mod vhost;

pub use report::{FwdStatsReport, PortInfoReport, PortStatsReport, StreamReport};
pub use vhost::VhostReport;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd::fwd::{self, EngineOpts, FwdMode, FwdPort, Running, Stream, StreamStats};
use pmd::port::{PortConf, PortState, PortStats};
use pmd::{Eal, EalConfig, Mempool, Port};

use crate::config::{devargs_kv, Config, ConfigError};
use crate::dataplane::engine::{EnginePort, LcoreSnapshot, PolicyEngine};
use crate::dataplane::offload::{OffloadRuntime, OffloadSettings};
use crate::dataplane::plane::PolicyPlane;
use crate::dataplane::state::Dest;
use crate::visibility::export::{FlowLog, FlowLogConfig};
use crate::visibility::metrics::Page;

/// Errors of the runtime; each displays as one line.
#[derive(Debug)]
pub enum Error {
    /// Bad configuration file.
    Config(ConfigError),
    /// DPDK layer failure.
    Pmd(pmd::Error),
    /// A request that cannot be honoured (bad port, bad value, wrong state).
    Invalid(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "config: {e}"),
            Error::Pmd(e) => write!(f, "{e}"),
            Error::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<pmd::Error> for Error {
    fn from(e: pmd::Error) -> Self {
        Error::Pmd(e)
    }
}

/// Which per-port queue setting `port config all` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueParam {
    /// rx queues.
    Rxq,
    /// tx queues.
    Txq,
    /// rx descriptors.
    Rxd,
    /// tx descriptors.
    Txd,
}

/// What `show config` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowConfig {
    /// Engine, streams and their lcores.
    Fwd,
    /// Queues, descriptors, burst.
    Rxtx,
    /// Forwarding lcores.
    Cores,
}

/// Per-packet footprint of an mbuf in the pool (object + headers), bytes.
const MBUF_FOOTPRINT: u64 = 2176 + 128 + 64 + 64;

/// mbufs the configuration needs (when `mempool.mbufs` is 0).
fn auto_mbufs(cfg: &Config, n_lcores: u32) -> Result<u32, Error> {
    let f = &cfg.forwarding;
    let mut n: u64 = 0;
    for p in &cfg.ports {
        n += u64::from(f.rxq) * u64::from(f.rxd) + u64::from(f.txq) * u64::from(f.txd);
        let kv: Vec<_> = devargs_kv(&p.devargs).collect();
        if kv.iter().any(|&(k, v)| k == "infinite_rx" && v == "1") {
            for (k, v) in &kv {
                if *k == "rx_pcap" {
                    n += pmd::pcap::count(Path::new(v))?;
                }
            }
        }
    }
    n += u64::from(n_lcores + 1) * u64::from(cfg.mempool.cache + u32::from(f.burst) * 2);
    n += 4096;
    u32::try_from(n).map_err(|_| Error::Invalid(format!("{n} mbufs needed: too many")))
}

fn lcore_count(spec: &str) -> u32 {
    if spec.contains('@') || spec.contains('(') {
        return spec.split(',').filter(|s| s.contains('@')).count().max(1) as u32;
    }
    spec.split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.trim().parse::<u32>().unwrap_or(0).saturating_sub(a.trim().parse().unwrap_or(0)) + 1,
            None => 1,
        })
        .sum()
}

/// EAL arguments for a configuration (memory sized from the mbuf count).
pub fn eal_config(cfg: &Config, mbufs: u32) -> EalConfig {
    let e = &cfg.eal;
    let memory_mb = if e.memory_mb > 0 {
        e.memory_mb
    } else {
        (u64::from(mbufs) * MBUF_FOOTPRINT * 5 / 4 / (1 << 20) + 128) as u32
    };
    let pci: Vec<String> = cfg
        .ports
        .iter()
        .map(|p| pmd::port::devargs_name(&p.devargs).to_string())
        .filter(|n| looks_pci(n))
        .collect();
    EalConfig {
        memory_mb,
        hugepages: e.hugepages,
        file_prefix: (!e.file_prefix.is_empty()).then(|| e.file_prefix.clone()),
        lcores: e.lcores.clone(),
        main_lcore: None,
        pci_allow: pci,
        vdevs: Vec::new(),
        log_level: (!e.log_level.is_empty()).then(|| e.log_level.clone()),
        single_file_segments: false,
        extra_args: e.extra_args.clone(),
    }
}

/// `0000:01:00.0` or `01:00.0`.
fn looks_pci(name: &str) -> bool {
    let parts: Vec<&str> = name.split(':').collect();
    (parts.len() == 2 || parts.len() == 3) && name.contains('.') && name.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

/// The running switch. Field order is drop order: lcores, ports, pool, EAL.
#[derive(Debug)]
pub struct Switch {
    running: Option<Running>,
    streams: Vec<(Stream, u32)>,
    baseline: Vec<StreamStats>,
    ports: Vec<Port>,
    last_show: Vec<(Instant, PortStats)>,
    pool: Arc<Mempool>,
    mode: FwdMode,
    burst: u16,
    nb_cores: u16,
    conf: PortConf,
    applied: Vec<PortConf>,
    opts: EngineOpts,
    workers: Vec<u32>,
    policy: PolicyRuntime,
    /// Per port (index as `ports`): the link state last seen of a VM port.
    links: Vec<Option<bool>>,
    /// The datastore agent's figures (many hosts), when it runs.
    cluster: Option<std::sync::Arc<control::datastore::agent::AgentStatus>>,
    /// The embedded state file, when it is the datastore.
    cluster_file: Option<cluster::FileCluster>,
    // Held for its Drop (rte_eal_cleanup, runtime dir removal), last.
    #[allow(dead_code)]
    eal: Eal,
}

/// The policy engine's part of the switch (`set fwd policy`).
#[derive(Debug)]
struct PolicyRuntime {
    /// Forwarding mode is `policy` (the testpmd engine in `mode` is unused then).
    on: bool,
    /// Policies, workloads and the published dataplane state.
    plane: Option<PolicyPlane>,
    /// The lcores, while forwarding.
    engine: Option<PolicyEngine>,
    /// Hardware offload (software NIC models and the offload thread); kept
    /// across engine restarts, as hardware keeps its rules.
    offload: Option<OffloadRuntime>,
    /// rte_flow backends of ports without a model (`flow` commands), probed on first use.
    rte_flow: Vec<pmd::flow::RteFlowPort>,
    /// Counters at the last stop (reported after it).
    last: Vec<LcoreSnapshot>,
    /// Counters at the last `clear fwd stats`.
    baseline: StreamStats,
    cfg: crate::config::PolicySection,
    /// Flow records (started with the plane).
    flowlog: Option<FlowLog>,
    flowlog_cfg: crate::config::FlowlogSection,
    /// (when, rx, forwarded, dropped) at the last live-stats print.
    sample: Option<(Instant, u64, u64, u64)>,
}

fn load_plane(p: &crate::config::PolicySection, cluster: &crate::config::ClusterSection) -> Result<PolicyPlane, Error> {
    let ctl = |e: control::Error| Error::Invalid(format!("policy: {e}"));
    let model = if p.model.as_os_str().is_empty() { control::Model::default() } else { control::Model::load(&p.model).map_err(ctl)? };
    let mut set = control::commands::load_policies(&p.files).map_err(ctl)?;
    if !cluster.etcd.is_empty() {
        // Fail closed until the cluster's state (or the cached one) arrives.
        set.settings.default_deny_ingress = true;
        set.settings.default_deny_egress = true;
    }
    let uplink = u16::try_from(p.uplink).ok().map(|port| Dest { port, mac: None });
    PolicyPlane::new(model, set, uplink).map_err(ctl)
}

fn policy_total(snaps: &[LcoreSnapshot]) -> StreamStats {
    let mut t = StreamStats::default();
    for s in snaps {
        t.rx_packets += s.rx;
        t.tx_packets += s.tx;
        t.tx_dropped += s.tx_dropped;
        t.fwd_dropped += s.dropped;
        t.busy_cycles += s.busy_cycles;
    }
    t
}

impl Switch {
    /// Bring up EAL, the pool and every port (started), from `cfg`.
    ///
    /// # Errors
    /// EAL, pool or port failures (ports opened so far are closed).
    pub fn new(cfg: &Config) -> Result<Switch, Error> {
        let policy_on = cfg.forwarding.mode == "policy";
        let mode: FwdMode = if policy_on { FwdMode::Io } else { cfg.forwarding.mode.parse()? };
        // Policies first: a bad policy file fails before EAL starts.
        let plane = if policy_on || !cfg.policy.model.as_os_str().is_empty() || !cfg.policy.files.is_empty() || cfg.cluster.enabled() {
            Some(load_plane(&cfg.policy, &cfg.cluster)?)
        } else {
            None
        };
        let n_lcores = lcore_count(&cfg.eal.lcores);
        let mbufs = if cfg.mempool.mbufs > 0 { cfg.mempool.mbufs } else { auto_mbufs(cfg, n_lcores)? };
        let eal = Eal::init(&eal_config(cfg, mbufs))?;
        let pool = Arc::new(Mempool::new("bulkhead_pool", mbufs, cfg.mempool.cache, cfg.mempool.data_room, -1)?);
        let f = &cfg.forwarding;
        let conf = PortConf { rxq: f.rxq, txq: f.txq, rxd: f.rxd, txd: f.txd, promiscuous: true };
        let mut ports = Vec::with_capacity(cfg.ports.len());
        for p in &cfg.ports {
            let pc = vhost::port_conf(PortConf { promiscuous: p.promiscuous, ..conf }, &p.devargs);
            let mut port = Port::open(&p.devargs, pc, pool.clone())?;
            port.start()?;
            ports.push(port);
        }
        let applied = ports.iter().map(|p| vhost::port_conf(PortConf { promiscuous: p.conf().promiscuous, ..conf }, p.devargs())).collect();
        let links = vec![None; ports.len()];
        let workers = pmd::lcore::workers();
        let now = Instant::now();
        let last_show = ports.iter().map(|p| (now, p.stats().unwrap_or_default())).collect();
        Ok(Switch {
            running: None,
            streams: Vec::new(),
            baseline: Vec::new(),
            ports,
            last_show,
            pool,
            mode,
            burst: f.burst,
            nb_cores: f.nb_cores.min(workers.len().max(1) as u16),
            conf,
            applied,
            opts: EngineOpts { pkt_len: f.tx_pkt_len, flows: f.flowgen_flows, record_cycles: true },
            workers,
            policy: PolicyRuntime {
                on: policy_on,
                plane,
                engine: None,
                offload: None,
                rte_flow: Vec::new(),
                last: Vec::new(),
                baseline: StreamStats::default(),
                cfg: cfg.policy.clone(),
                flowlog: None,
                flowlog_cfg: cfg.flowlog.clone(),
                sample: None,
            },
            links,
            cluster: None,
            cluster_file: None,
            eal,
        })
    }

    /// Starts the flow-record exporter if it is not running (policy mode).
    fn flowlog_sender(&mut self) -> Result<Option<crate::visibility::export::EventSender>, Error> {
        if self.policy.flowlog.is_none() {
            let c = &self.policy.flowlog_cfg;
            if c.json.as_os_str().is_empty() && c.ipfix.is_empty() && c.follow.as_os_str().is_empty() {
                return Ok(None);
            }
            let names = self.plane_mut()?.names();
            let c = &self.policy.flowlog_cfg;
            let fc = FlowLogConfig {
                json: (!c.json.as_os_str().is_empty()).then(|| c.json.clone()),
                ipfix: c.ipfix.parse().ok(),
                follow: (!c.follow.as_os_str().is_empty()).then(|| c.follow.clone()),
                queue: c.queue as usize,
            };
            let log = FlowLog::start(&fc, std::sync::Arc::new(names)).map_err(|e| Error::Invalid(format!("flow records: {e}")))?;
            self.policy.flowlog = Some(log);
        }
        Ok(self.policy.flowlog.as_ref().map(FlowLog::sender))
    }

    /// The Prometheus exposition page: ports, policy-engine lcores (cycles,
    /// cache tiers, drops per reason), rules per policy, flow-record losses.
    pub fn metrics_page(&self) -> String {
        let mut p = Page::new();
        for port in &self.ports {
            if let Ok(st) = port.stats() {
                let id = port.id().to_string();
                let l = [("port", id.as_str())];
                p.counter("bulkhead_port_rx_packets_total", "Packets received by the port.", &l, st.rx_packets);
                p.counter("bulkhead_port_tx_packets_total", "Packets sent by the port.", &l, st.tx_packets);
                p.counter("bulkhead_port_rx_bytes_total", "Bytes received by the port.", &l, st.rx_bytes);
                p.counter("bulkhead_port_tx_bytes_total", "Bytes sent by the port.", &l, st.tx_bytes);
            }
        }
        let lcs = self.policy_lcores();
        for s in &lcs {
            let lc = s.lcore.to_string();
            let l = [("lcore", lc.as_str())];
            p.counter("bulkhead_lcore_rx_packets_total", "Packets received by the lcore.", &l, s.rx);
            p.counter("bulkhead_lcore_busy_cycles_total", "TSC cycles the lcore spent on bursts with packets.", &l, s.busy_cycles);
            p.counter("bulkhead_lcore_cycles_total", "TSC cycles since the lcore started.", &l, s.total_cycles);
        }
        for tier in ["emc_hit", "emc_miss", "cls_lookup", "ct_hit", "ct_miss", "ct_created"] {
            for s in &lcs {
                let lc = s.lcore.to_string();
                p.counter("bulkhead_cache_tier_total", "Lookups per cache tier and outcome.", &[("lcore", &lc), ("tier", tier)], s.get(tier));
            }
        }
        for (i, name) in flowtable::stats::Stats::NAMES.iter().enumerate() {
            if let Some(reason) = name.strip_prefix("drop_") {
                let v: u64 = lcs.iter().map(|s| s.pipeline.get(i).copied().unwrap_or(0)).sum();
                p.counter("bulkhead_drops_total", "Packets dropped, by reason.", &[("reason", reason)], v);
            }
        }
        if let Some(pl) = &self.policy.plane {
            let c = pl.compiler();
            p.gauge("bulkhead_policy_generation", "The published policy generation.", &[], pl.gen() as f64);
            for pol in c.policies() {
                let k = pol.key();
                p.gauge("bulkhead_policy_rules", "Compiled rules per policy.", &[("policy", k.as_str())], c.policy_rule_count(&k) as f64);
            }
        }
        if let Some(c) = &self.cluster {
            use std::sync::atomic::Ordering::Relaxed;
            p.gauge("bulkhead_datastore_connected", "1 while etcd is reachable and watched, 0 while the last state is enforced without it.", &[], if c.connected.load(Relaxed) { 1.0 } else { 0.0 });
            p.counter("bulkhead_datastore_disconnects_total", "Times etcd became unreachable.", &[], c.disconnects.load(Relaxed));
            p.counter("bulkhead_datastore_rejected_total", "Cluster states rejected as malformed (the last good one kept).", &[], c.rejected.load(Relaxed));
            p.gauge("bulkhead_datastore_revision", "Data revision seen in etcd and enforced here.", &[("which", "seen")], c.seen.load(Relaxed) as f64);
            p.gauge("bulkhead_datastore_revision", "Data revision seen in etcd and enforced here.", &[("which", "enforced")], c.enforced.load(Relaxed) as f64);
        }
        if let Some(f) = &self.policy.flowlog {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &f.stats;
            p.counter("bulkhead_flow_records_total", "Flow records exported.", &[], s.exported.load(Relaxed));
            let notes_lost: u64 = lcs.iter().map(|s| s.get("flow_notes_lost")).sum();
            for (sink, v) in [("queue", s.lost_queue.load(Relaxed)), ("json", s.lost_json.load(Relaxed)), ("ipfix", s.lost_ipfix.load(Relaxed)), ("follow", s.lost_follow.load(Relaxed)), ("lcore", notes_lost)] {
                p.counter("bulkhead_flow_records_lost_total", "Flow records lost, by where (lcore: end notes a full per-lcore note buffer could not take).", &[("where", sink)], v);
            }
            let hits = f.policy_hits();
            type Pick = fn(&crate::visibility::export::Hits) -> u64;
            let metrics: [(&str, &str, Pick); 3] = [
                ("bulkhead_policy_flows_total", "Flows decided, by deciding policy and verdict (start records; policy \"default\": no rule matched).", |h| h.flows),
                ("bulkhead_policy_packets_total", "Packets of those flows, both directions (from start, periodic and end records: live flows lag by up to one [flowlog] interval).", |h| h.packets),
                ("bulkhead_policy_bytes_total", "Bytes of those flows, both directions (as packets).", |h| h.bytes),
            ];
            for (name, help, pick) in metrics {
                for (pol, verdict, h) in &hits {
                    p.counter(name, help, &[("policy", pol.as_str()), ("verdict", verdict)], pick(h));
                }
            }
        }
        p.finish()
    }

    /// The policy plane (policies, workloads), if the policy engine is configured.
    pub fn plane(&self) -> Option<&PolicyPlane> {
        self.policy.plane.as_ref()
    }

    /// The policy plane, created empty if it does not exist yet.
    ///
    /// # Errors
    /// The configured model or policy files no longer load.
    pub fn plane_mut(&mut self) -> Result<&mut PolicyPlane, Error> {
        if self.policy.plane.is_none() {
            let mut pl = load_plane(&self.policy.cfg, &crate::config::ClusterSection::default())?;
            // VM ports already seen down stay down in the new plane.
            for (p, l) in self.ports.iter().zip(&self.links) {
                if *l == Some(false) {
                    pl.set_port_link(p.id(), false);
                }
            }
            self.policy.plane = Some(pl);
        }
        Ok(self.policy.plane.as_mut().expect("just set"))
    }

    /// Per policy lcore while forwarding: the newest generation it decided a
    /// burst under, and the TSC of its first such burst.
    pub fn policy_gens_seen(&self) -> Vec<(u64, u64)> {
        self.policy.engine.as_ref().map(|e| e.gens_seen()).unwrap_or_default()
    }

    /// Per-lcore policy-engine counters (live while forwarding, else as of the last stop).
    pub fn policy_lcores(&self) -> Vec<LcoreSnapshot> {
        match &self.policy.engine {
            Some(e) => e.snapshot(),
            None => self.policy.last.clone(),
        }
    }

    fn port_mut(&mut self, id: u16) -> Result<&mut Port, Error> {
        self.ports.iter_mut().find(|p| p.id() == id).ok_or_else(|| Error::Invalid(format!("port {id} does not exist")))
    }

    fn port(&self, id: u16) -> Result<&Port, Error> {
        self.ports.iter().find(|p| p.id() == id).ok_or_else(|| Error::Invalid(format!("port {id} does not exist")))
    }

    fn selected(&self, sel: Option<u16>) -> Result<Vec<u16>, Error> {
        match sel {
            None => Ok(self.port_ids()),
            Some(id) => self.port(id).map(|p| vec![p.id()]),
        }
    }

    /// Port ids, ascending.
    pub fn port_ids(&self) -> Vec<u16> {
        self.ports.iter().map(Port::id).collect()
    }

    /// The EAL file prefix in use.
    #[allow(dead_code)] // public API; main.rs uses run_with today
    pub fn file_prefix(&self) -> &str {
        self.eal.prefix()
    }

    /// `show port info N`.
    ///
    /// # Errors
    /// Unknown or closed port.
    pub fn port_info(&self, port: u16) -> Result<PortInfoReport, Error> {
        Ok(PortInfoReport(self.port(port)?.info()?, self.vhost_info(port)))
    }

    /// `show port stats N`, with throughput since the previous call.
    ///
    /// # Errors
    /// Unknown port or driver failure.
    pub fn port_stats(&mut self, port: u16) -> Result<PortStatsReport, Error> {
        let idx = self.ports.iter().position(|p| p.id() == port).ok_or_else(|| Error::Invalid(format!("port {port} does not exist")))?;
        let stats = self.ports[idx].stats()?;
        let now = Instant::now();
        let (t0, s0) = self.last_show[idx];
        let dt = now.duration_since(t0).as_secs_f64().max(1e-9);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let r = PortStatsReport {
            port,
            stats,
            rx_pps: rate(stats.rx_packets, s0.rx_packets),
            tx_pps: rate(stats.tx_packets, s0.tx_packets),
            rx_bps: rate(stats.rx_bytes, s0.rx_bytes) * 8.0,
            tx_bps: rate(stats.tx_bytes, s0.tx_bytes) * 8.0,
        };
        self.last_show[idx] = (now, stats);
        Ok(r)
    }

    /// `show port xstats N`.
    ///
    /// # Errors
    /// Unknown port or driver failure.
    pub fn port_xstats(&self, port: u16) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.port(port)?.xstats()?)
    }

    /// `clear port stats N|all`.
    ///
    /// # Errors
    /// Unknown port or driver failure.
    pub fn clear_port_stats(&mut self, port: Option<u16>) -> Result<(), Error> {
        let now = Instant::now();
        for id in self.selected(port)? {
            let idx = self.ports.iter().position(|p| p.id() == id).unwrap_or(0);
            self.ports[idx].reset_stats()?;
            self.last_show[idx] = (now, self.ports[idx].stats().unwrap_or_default());
        }
        Ok(())
    }

    /// `show fwd stats all`: since the last `start` or `clear fwd stats`.
    pub fn fwd_stats(&self) -> FwdStatsReport {
        if self.policy.on {
            let total = policy_total(&self.policy_lcores()) - self.policy.baseline;
            let pkts = total.rx_packets.max(total.tx_packets);
            let cycles_per_packet = if pkts > 0 { total.busy_cycles as f64 / pkts as f64 } else { 0.0 };
            return FwdStatsReport { mode: "policy".into(), streams: Vec::new(), total, cycles_per_packet };
        }
        let mut total = StreamStats::default();
        let streams: Vec<StreamReport> = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, (s, lc))| {
                let st = s.counters.snapshot() - self.baseline.get(i).copied().unwrap_or_default();
                total += st;
                StreamReport {
                    rx_port: s.ctx.rx_port,
                    rx_queue: s.ctx.rx_queue,
                    tx_port: s.ctx.tx_port,
                    tx_queue: s.ctx.tx_queue,
                    lcore: *lc,
                    stats: st,
                }
            })
            .collect();
        let pkts = total.rx_packets.max(total.tx_packets);
        let cycles_per_packet = if pkts > 0 { total.busy_cycles as f64 / pkts as f64 } else { 0.0 };
        FwdStatsReport { mode: self.mode.name().to_string(), streams, total, cycles_per_packet }
    }

    /// `clear fwd stats all`.
    pub fn clear_fwd_stats(&mut self) {
        self.baseline = self.streams.iter().map(|(s, _)| s.counters.snapshot()).collect();
        self.policy.baseline = policy_total(&self.policy_lcores());
    }

    /// The current engine's name.
    pub fn fwd_mode(&self) -> &'static str {
        if self.policy.on { "policy" } else { self.mode.name() }
    }

    /// True while forwarding lcores run.
    pub fn is_forwarding(&self) -> bool {
        self.running.is_some() || self.policy.engine.is_some()
    }

    /// `set fwd MODE` (restarts forwarding if it is running).
    ///
    /// # Errors
    /// Unknown mode.
    pub fn set_fwd(&mut self, mode: &str) -> Result<(), Error> {
        if mode == "policy" {
            self.plane_mut()?;
            return self.restarting(|s| {
                s.policy.on = true;
                Ok(())
            });
        }
        let m: FwdMode = mode.parse()?;
        self.restarting(|s| {
            s.mode = m;
            s.policy.on = false;
            Ok(())
        })
    }

    /// `set burst N` (1..=32).
    ///
    /// # Errors
    /// Out of range.
    pub fn set_burst(&mut self, n: u16) -> Result<(), Error> {
        if !(1..=pmd::BURST as u16).contains(&n) {
            return Err(Error::Invalid(format!("burst must be 1..={}, got {n}", pmd::BURST)));
        }
        self.restarting(|s| {
            s.burst = n;
            Ok(())
        })
    }

    /// `set nbcore N` (1..=worker lcores).
    ///
    /// # Errors
    /// Out of range.
    pub fn set_nbcore(&mut self, n: u16) -> Result<(), Error> {
        let max = self.workers.len() as u16;
        if n == 0 || n > max {
            return Err(Error::Invalid(format!("nbcore must be 1..={max} (worker lcores available), got {n}")));
        }
        self.restarting(|s| {
            s.nb_cores = n;
            Ok(())
        })
    }

    fn restarting(&mut self, f: impl FnOnce(&mut Switch) -> Result<(), Error>) -> Result<(), Error> {
        let was = self.is_forwarding();
        if was {
            self.stop()?;
        }
        f(self)?;
        if was {
            self.start()?;
        }
        Ok(())
    }

    /// `start`: build streams over the started ports and launch the engine on
    /// `nbcore` worker lcores. Forwarding stats restart from zero.
    ///
    /// # Errors
    /// Already forwarding, no started port, or lcore launch failure.
    pub fn start(&mut self) -> Result<(), Error> {
        if self.is_forwarding() {
            return Err(Error::Invalid("packet forwarding already started".into()));
        }
        if self.policy.on {
            return self.start_policy();
        }
        let fports: Vec<FwdPort> = self
            .ports
            .iter()
            .filter(|p| p.state() == PortState::Started)
            .map(|p| FwdPort { id: p.id(), rxq: p.conf().rxq, txq: p.conf().txq, mac: p.mac() })
            .collect();
        if fports.is_empty() {
            return Err(Error::Invalid("no started ports: run 'port start all' first".into()));
        }
        let streams = fwd::build_streams(&fports);
        let lcores: Vec<u32> = self.workers.iter().copied().take(self.nb_cores as usize).collect();
        let running = Running::launch(self.mode, &streams, &lcores, self.burst, self.pool.clone(), self.opts)?;
        let ranges = fwd::assign(streams.len(), lcores.len());
        self.streams = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let lc = ranges.iter().position(|r| r.contains(&i)).map_or(0, |k| lcores[k]);
                (s, lc)
            })
            .collect();
        self.baseline = vec![StreamStats::default(); self.streams.len()];
        self.running = Some(running);
        Ok(())
    }

    /// `stop`: stop forwarding, wait for the lcores, return the stats.
    ///
    /// # Errors
    /// Not forwarding.
    pub fn stop(&mut self) -> Result<FwdStatsReport, Error> {
        if let Some(mut e) = self.policy.engine.take() {
            e.stop();
            self.policy.last = e.snapshot();
            return Ok(self.fwd_stats());
        }
        let r = self.running.take().ok_or_else(|| Error::Invalid("packet forwarding not started".into()))?;
        r.stop();
        Ok(self.fwd_stats())
    }

    /// Launches the policy engine on `nbcore` lcores over the started ports.
    fn start_policy(&mut self) -> Result<(), Error> {
        let ports: Vec<EnginePort> = self
            .ports
            .iter()
            .filter(|p| p.state() == PortState::Started)
            .map(|p| EnginePort { id: p.id(), mac: p.mac(), rxq: p.conf().rxq, txq: p.conf().txq })
            .collect();
        if ports.is_empty() {
            return Err(Error::Invalid("no started ports: run 'port start all' first".into()));
        }
        let lcores: Vec<u32> = self.workers.iter().copied().take(self.nb_cores as usize).collect();
        let c = &self.policy.cfg;
        let mut pc = flowtable::pipeline::PipelineConfig::default();
        pc.emc.entries = c.emc_entries as usize;
        pc.emc.insert_inv_prob = c.emc_insert_inv_prob;
        pc.ct.capacity = c.ct_capacity as usize;
        pc.ct.keep_established = c.keep_established;
        pc.ct.timeouts = c.ct_timeouts.to_ns();
        pc.denied_flows = c.denied_flows as usize;
        pc.denied_idle = c.denied_idle_ms.saturating_mul(1_000_000);
        pc.report_interval = self.policy.flowlog_cfg.interval_ms.saturating_mul(1_000_000);
        let reader = self.plane_mut()?.reader();
        let events = self.flowlog_sender()?;
        if self.policy.cfg.offload == "model" && self.policy.offload.is_none() {
            self.policy.offload = Some(self.start_offload(&ports)?);
        }
        let off = self.policy.offload.as_ref();
        let e = PolicyEngine::start(&reader, &ports, &lcores, self.burst, pc, events, off).map_err(|e| Error::Invalid(format!("policy engine: {e}")))?;
        self.policy.engine = Some(e);
        self.policy.baseline = StreamStats::default();
        Ok(())
    }

    fn start_offload(&mut self, ports: &[EnginePort]) -> Result<OffloadRuntime, Error> {
        let c = &self.policy.cfg;
        let ids: Vec<u16> = if c.offload_ports.is_empty() { ports.iter().map(|p| p.id).collect() } else { c.offload_ports.clone() };
        let s = OffloadSettings { threshold: c.offload_threshold, capacity: c.offload_capacity as usize };
        let reader = self.plane_mut()?.reader();
        OffloadRuntime::start(reader, &ids, &s).map_err(Error::Invalid)
    }

    /// `show offload`.
    pub fn offload_text(&self) -> String {
        match &self.policy.offload {
            Some(o) => o.show(),
            None => format!(
                "offload: off (no model; [policy] offload = \"{}\"; 'offload on' puts the software NIC model in the rx path)",
                self.policy.cfg.offload
            ),
        }
    }

    /// `offload on|off`. The first `on` creates the models (restarting
    /// forwarding if it runs); later ones only switch them in or out.
    ///
    /// # Errors
    /// The policy engine cannot restart, or the offload thread is gone.
    pub fn set_offload(&mut self, on: bool) -> Result<String, Error> {
        if let Some(o) = &self.policy.offload {
            return o.set_enabled(on).map_err(Error::Invalid);
        }
        if !on {
            return Ok("offload off".into());
        }
        self.policy.cfg.offload = "model".into();
        if self.policy.engine.is_some() {
            self.restarting(|_| Ok(()))?;
        }
        Ok("offload on (software NIC model; rules are installed while packet forwarding runs in policy mode)".into())
    }

    /// `set offload threshold N`.
    ///
    /// # Errors
    /// N is 0.
    pub fn set_offload_threshold(&mut self, n: u32) -> Result<(), Error> {
        if n == 0 {
            return Err(Error::Invalid("offload threshold must be at least 1 packet per millisecond".into()));
        }
        self.policy.cfg.offload_threshold = n;
        if let Some(o) = &self.policy.offload {
            o.set_threshold(n);
        }
        Ok(())
    }

    /// The offload runtime, if models exist.
    pub fn offload(&self) -> Option<&OffloadRuntime> {
        self.policy.offload.as_ref()
    }

    /// testpmd's `flow ...`: on a model port the model takes it; elsewhere the
    /// port's rte_flow (virtual PMDs refuse with ENOTSUP, reported as such).
    ///
    /// # Errors
    /// Unknown port, or the device's refusal.
    pub fn flow(&mut self, c: offload::FlowCommand) -> Result<String, Error> {
        use offload::{Backend, FlowCommand as F, HwRuleId};
        let port = match &c {
            F::Validate(s) | F::Create(s) => s.port,
            F::Destroy { port, .. } | F::Flush(port) | F::List(port) | F::Query { port, .. } => *port,
        };
        self.port(port)?;
        if let Some(o) = self.policy.offload.as_ref().filter(|o| o.has_port(port)) {
            return o.flow(c).map_err(Error::Invalid);
        }
        let i = match self.policy.rte_flow.iter().position(|b| b.port() == port) {
            Some(i) => i,
            None => {
                self.policy.rte_flow.push(pmd::flow::RteFlowPort::probe(port));
                self.policy.rte_flow.len() - 1
            }
        };
        let b = &mut self.policy.rte_flow[i];
        let e = |e: offload::OffloadError| Error::Invalid(format!("port {port} (rte_flow, no offload model): {e}"));
        match c {
            F::Validate(s) => b.validate(&s).map(|_| "Flow rule validated".into()).map_err(e),
            F::Create(s) => b.create(&s).map(|id| format!("Flow rule #{} created", id.0)).map_err(e),
            F::Destroy { rules, .. } => {
                let mut out = Vec::new();
                for r in rules {
                    b.destroy(HwRuleId(r)).map_err(e)?;
                    out.push(format!("Flow rule #{r} destroyed"));
                }
                Ok(out.join("\n"))
            }
            F::Flush(_) => b.flush().map(|_| format!("Flushed all flow rules on port {port}")).map_err(e),
            F::Query { rule, .. } => {
                let c = b.query(HwRuleId(rule)).map_err(e)?;
                Ok(format!("COUNT:\n hits_set: 1\n bytes_set: 1\n hits: {}\n bytes: {}", c.hits, c.bytes))
            }
            F::List(_) => Ok(format!("{} rules on port {port} ({})", b.installed(), b.caps().summary(port))),
        }
    }

    /// `quarantine W` / `unquarantine W`: the policy change, then (offload on)
    /// prefix DROP rules for the workload's addresses on every model port.
    ///
    /// # Errors
    /// Unknown workload, or a device refusal (the policy change stands).
    pub fn quarantine(&mut self, key: &str, on: bool) -> Result<String, Error> {
        let ctl = |e: control::Error| Error::Invalid(e.to_string());
        let pb = self.plane_mut()?.quarantine(key, on).map_err(ctl)?;
        let mut msg = pb.to_string();
        let addrs = self.plane_mut()?.compiler().model().find(key).map_err(ctl)?.addresses.clone();
        if let Some(o) = &self.policy.offload {
            msg.push_str("; ");
            msg.push_str(&o.quarantine(addrs, on).map_err(Error::Invalid)?);
        }
        Ok(msg)
    }

    fn require_not_forwarding(&self, what: &str) -> Result<(), Error> {
        if self.is_forwarding() {
            Err(Error::Invalid(format!("stop forwarding first ('stop') before {what}")))
        } else {
            Ok(())
        }
    }

    /// `port start N|all`: reconfigures queues changed by `port config`.
    ///
    /// # Errors
    /// Closed port, configuration or start failure.
    pub fn port_start(&mut self, port: Option<u16>) -> Result<(), Error> {
        self.require_not_forwarding("starting ports")?;
        let conf = self.conf;
        for id in self.selected(port)? {
            let idx = self.ports.iter().position(|p| p.id() == id).unwrap_or(0);
            let want = vhost::port_conf(PortConf { promiscuous: self.ports[idx].conf().promiscuous, ..conf }, self.ports[idx].devargs());
            let p = &mut self.ports[idx];
            if p.state() == PortState::Stopped && self.applied[idx] != want {
                p.configure(want)?;
                self.applied[idx] = want;
            }
            p.start()?;
        }
        Ok(())
    }

    /// `port stop N|all`.
    ///
    /// # Errors
    /// Forwarding is running, unknown port, driver failure.
    pub fn port_stop(&mut self, port: Option<u16>) -> Result<(), Error> {
        self.require_not_forwarding("stopping ports")?;
        for id in self.selected(port)? {
            self.port_mut(id)?.stop()?;
        }
        Ok(())
    }

    /// `port close N|all`.
    ///
    /// # Errors
    /// Forwarding is running, unknown port, driver failure.
    pub fn port_close(&mut self, port: Option<u16>) -> Result<(), Error> {
        self.require_not_forwarding("closing ports")?;
        for id in self.selected(port)? {
            self.port_mut(id)?.close()?;
        }
        Ok(())
    }

    /// `port config all rxq|txq|rxd|txd N`: needs every port stopped; applies
    /// at the next `port start`.
    ///
    /// # Errors
    /// Ports started, zero, or more queues than a device has.
    pub fn port_config(&mut self, what: QueueParam, n: u16) -> Result<(), Error> {
        if self.ports.iter().any(|p| p.state() == PortState::Started) {
            return Err(Error::Invalid("please stop all ports first ('port stop all')".into()));
        }
        if n == 0 {
            return Err(Error::Invalid("value must be at least 1".into()));
        }
        for p in self.ports.iter().filter(|p| p.state() != PortState::Closed) {
            let i = p.info()?;
            match what {
                QueueParam::Rxq if n > i.max_rxq => {
                    return Err(pmd::Error::TooManyRxQueues { port: p.id(), want: n, max: i.max_rxq }.into())
                }
                QueueParam::Txq if n > i.max_txq => {
                    return Err(pmd::Error::TooManyTxQueues { port: p.id(), want: n, max: i.max_txq }.into())
                }
                _ => {}
            }
        }
        match what {
            QueueParam::Rxq => self.conf.rxq = n,
            QueueParam::Txq => self.conf.txq = n,
            QueueParam::Rxd => self.conf.rxd = n,
            QueueParam::Txd => self.conf.txd = n,
        }
        Ok(())
    }

    /// `show config fwd|rxtx|cores`.
    pub fn show_config(&self, what: ShowConfig) -> String {
        let mut s = String::new();
        let lcores: Vec<u32> = self.workers.iter().copied().take(self.nb_cores as usize).collect();
        match what {
            ShowConfig::Fwd if self.policy.on => {
                let started: Vec<&Port> = self.ports.iter().filter(|p| p.state() == PortState::Started).collect();
                let rxqs: Vec<(u16, u16)> = started.iter().flat_map(|p| (0..p.conf().rxq).map(move |q| (p.id(), q))).collect();
                let _ = writeln!(s, "policy packet forwarding - ports={} - cores={}", started.len(), lcores.len());
                for (k, lc) in lcores.iter().enumerate() {
                    let mine: Vec<String> = rxqs.iter().skip(k).step_by(lcores.len().max(1)).map(|(p, q)| format!("P={p}/Q={q}")).collect();
                    let _ = writeln!(s, "Logical Core {lc} polls RX {} and sends on TX queue {k} of every port", mine.join(" "));
                }
                if let Some(pl) = &self.policy.plane {
                    let c = pl.compiler();
                    let _ = writeln!(
                        s,
                        "policy generation {}: {} policies, {} rules, {} workloads",
                        pl.gen(),
                        c.policies().len(),
                        c.rule_count(),
                        c.model().workloads.len()
                    );
                }
            }
            ShowConfig::Fwd => {
                let started: Vec<FwdPort> = self
                    .ports
                    .iter()
                    .filter(|p| p.state() == PortState::Started)
                    .map(|p| FwdPort { id: p.id(), rxq: p.conf().rxq, txq: p.conf().txq, mac: p.mac() })
                    .collect();
                let streams = fwd::build_streams(&started);
                let ranges = fwd::assign(streams.len(), lcores.len());
                let _ = writeln!(
                    s,
                    "{} packet forwarding - ports={} - cores={} - streams={}",
                    self.mode,
                    started.len(),
                    ranges.len().min(lcores.len()),
                    streams.len()
                );
                for (k, r) in ranges.iter().enumerate() {
                    let Some(lc) = lcores.get(k) else { break };
                    let _ = writeln!(s, "Logical Core {lc} forwards packets on {} streams:", r.len());
                    for st in &streams[r.clone()] {
                        let c = st.ctx;
                        let pm = c.peer_mac.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
                        let _ = writeln!(
                            s,
                            "  RX P={}/Q={} -> TX P={}/Q={} peer={pm}",
                            c.rx_port, c.rx_queue, c.tx_port, c.tx_queue
                        );
                    }
                }
            }
            ShowConfig::Rxtx => {
                let _ = writeln!(s, "  {} packet forwarding packets/burst={}", self.fwd_mode(), self.burst);
                let _ = writeln!(s, "  nb forwarding cores={} - nb forwarding ports={}", self.nb_cores, self.ports.len());
                for p in &self.ports {
                    let c = p.conf();
                    let _ = writeln!(
                        s,
                        "  port {}: RX queue number: {} Tx queue number: {} ({})",
                        p.id(),
                        c.rxq,
                        c.txq,
                        p.state()
                    );
                    let _ = writeln!(s, "    RX desc={} - TX desc={}", c.rxd, c.txd);
                }
                if self.conf.rxq != self.ports.first().map_or(self.conf.rxq, |p| p.conf().rxq)
                    || self.conf.txq != self.ports.first().map_or(self.conf.txq, |p| p.conf().txq)
                {
                    let _ = writeln!(
                        s,
                        "  pending (next port start): rxq={} txq={} rxd={} txd={}",
                        self.conf.rxq, self.conf.txq, self.conf.rxd, self.conf.txd
                    );
                }
            }
            ShowConfig::Cores => {
                let _ = writeln!(s, "List of forwarding lcores:");
                for lc in &lcores {
                    let _ = writeln!(s, "  lcore {lc}");
                }
            }
        }
        s.truncate(s.trim_end().len());
        s
    }

    /// `show flows`: flow-record counters and the `n` most denied flows.
    pub fn flows_text(&self, n: usize) -> String {
        let Some(f) = &self.policy.flowlog else {
            return "no flow records (policy mode not started, or every [flowlog] sink is off)\n".into();
        };
        use std::sync::atomic::Ordering::Relaxed;
        let s = &f.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "flow records: {} exported; lost: queue {} json {} ipfix {} follow {}",
            s.exported.load(Relaxed),
            s.lost_queue.load(Relaxed),
            s.lost_json.load(Relaxed),
            s.lost_ipfix.load(Relaxed),
            s.lost_follow.load(Relaxed)
        );
        let top = f.top_denied(n);
        if top.is_empty() {
            out.push_str("no denied flows\n");
        }
        for (k, c, rule) in top {
            let _ = writeln!(out, "  {k:<48} {c:>7} flows denied  by {rule}");
        }
        out.push_str(&self.policy_hits_text());
        out
    }

    /// Hits per deciding policy and verdict (flows, packets, bytes), from the
    /// flow records; empty when records are off.
    pub fn policy_hits_text(&self) -> String {
        let Some(f) = &self.policy.flowlog else { return String::new() };
        let hits = f.policy_hits();
        let mut out = String::new();
        if hits.is_empty() {
            return out;
        }
        let _ = writeln!(out, "hits per policy (flows, packets and bytes both ways; live flows counted up to their last record):");
        for (pol, verdict, h) in hits {
            let _ = writeln!(out, "  {pol:<40} {verdict:<10} {:>9} flows {:>12} packets {:>14} bytes", h.flows, h.packets, h.bytes);
        }
        out
    }

    /// Live policy stats: rates, verdicts, cache hits, flow records and the
    /// most denied flows with workload names (what `--stats-period` prints in
    /// policy mode).
    pub fn policy_stats_text(&mut self) -> String {
        let lcs = self.policy_lcores();
        let (rx, tx, dropped) = lcs.iter().fold((0, 0, 0), |a, s| (a.0 + s.rx, a.1 + s.tx, a.2 + s.dropped));
        let sum = |name: &str| lcs.iter().map(|s| s.get(name)).sum::<u64>();
        let now = Instant::now();
        let (dt, drx, dtx, ddr) = match self.policy.sample {
            Some((t, r, f, d)) => (now.duration_since(t).as_secs_f64().max(1e-3), rx - r.min(rx), tx - f.min(tx), dropped - d.min(dropped)),
            None => (1.0, 0, 0, 0),
        };
        self.policy.sample = Some((now, rx, tx, dropped));
        let mpps = |n: u64| n as f64 / dt / 1e6;
        let (hit, miss) = (sum("emc_hit"), sum("emc_miss"));
        let mut s = String::new();
        let gen = self.policy.plane.as_ref().map_or(0, |p| p.gen());
        let _ = writeln!(
            s,
            "policy gen {gen} | rx {:.2} Mpps | forwarded {:.2} Mpps | dropped {:.2} Mpps | cache hits {:.1}% | totals: rx {rx} forwarded {tx} dropped {dropped} (policy {}, no route {})",
            mpps(drx),
            mpps(dtx),
            mpps(ddr),
            if hit + miss == 0 { 0.0 } else { 100.0 * hit as f64 / (hit + miss) as f64 },
            sum("drop_policy_egress") + sum("drop_policy_ingress"),
            sum("drop_no_route")
        );
        if let Some(f) = &self.policy.flowlog {
            use std::sync::atomic::Ordering::Relaxed;
            let lost = f.stats.lost_queue.load(Relaxed) + f.stats.lost_json.load(Relaxed) + f.stats.lost_ipfix.load(Relaxed);
            let _ = writeln!(s, "  flow records {} (lost {lost}); top denied flows:", f.stats.exported.load(Relaxed));
            for (k, n, rule) in f.top_denied(5) {
                let _ = writeln!(s, "    {k:<48} {n:>5} flows  by {rule}");
            }
        }
        s
    }

    /// The block `--stats-period` prints: every port's stats and rates (in
    /// policy mode, the policy engine's live stats).
    pub fn stats_text(&mut self) -> String {
        if self.policy.on && self.is_forwarding() {
            return self.policy_stats_text();
        }
        let mut s = String::new();
        for id in self.port_ids() {
            if let Ok(r) = self.port_stats(id) {
                let _ = writeln!(s, "{r}");
            }
        }
        s
    }

    /// Stop forwarding, stop and close every port, free the pool, clean up EAL
    /// (nothing left under /var/run/dpdk).
    ///
    /// # Errors
    /// The first port that fails to close (the rest is still cleaned up).
    pub fn shutdown(mut self) -> Result<(), Error> {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        if let Some(mut e) = self.policy.engine.take() {
            e.stop();
        }
        drop(self.policy.offload.take());
        self.policy.rte_flow.clear();
        if let Some(mut f) = self.policy.flowlog.take() {
            f.stop();
        }
        let mut first = Ok(());
        for p in &mut self.ports {
            if let Err(e) = p.close() {
                if first.is_ok() {
                    first = Err(e.into());
                }
            }
        }
        drop(self);
        first
    }
}

/// Run the switch from a config file until SIGINT/SIGTERM; print every port's
/// stats every `stats_period` seconds (0 = never).
///
/// # Errors
/// Configuration, EAL, pool or port errors (one line each).
#[allow(dead_code)] // public API; main.rs uses run_with today
pub fn run(config_path: &Path, stats_period: u64) -> Result<(), Error> {
    run_with(config_path, stats_period, |_| true)
}

/// As [`run`], calling `tick` about every 100 ms on the control thread (the
/// shell's socket server drives the switch from there); `tick` returning
/// false shuts the switch down.
///
/// # Errors
/// As [`run`].
pub fn run_with(config_path: &Path, stats_period: u64, mut tick: impl FnMut(&mut Switch) -> bool) -> Result<(), Error> {
    let cfg = Config::load(config_path)?;
    pmd::signal::install();
    let mut sw = Switch::new(&cfg)?;
    let agent = match cluster::start(&cfg, &mut sw) {
        Ok(a) => a,
        Err(e) => {
            let _ = sw.shutdown();
            return Err(e);
        }
    };
    if cfg.forwarding.autostart {
        if let Err(e) = sw.start() {
            let _ = sw.shutdown();
            return Err(e);
        }
    }
    let period = Duration::from_secs(stats_period);
    let mut next = Instant::now() + period;
    while !pmd::signal::stop_requested() {
        match &agent {
            // Cluster changes are enforced as soon as they arrive.
            Some(a) => cluster::serve(&mut sw, a, Duration::from_millis(100)),
            None => {
                std::thread::sleep(Duration::from_millis(100));
                cluster::follow_file(&mut sw);
            }
        }
        sw.poll_links();
        if !tick(&mut sw) {
            break;
        }
        if stats_period > 0 && Instant::now() >= next {
            print!("{}", sw.stats_text());
            next += period;
        }
    }
    if let Some(a) = agent {
        a.stop();
    }
    if sw.is_forwarding() {
        if let Ok(r) = sw.stop() {
            println!("{r}");
        }
    }
    sw.shutdown()
}
