//! The switch configuration: TOML, every key optional with a documented
//! default (`bulkhead config default` prints them), unknown keys rejected.
//! Errors name the file, the line and the key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented default configuration, as printed by
/// `bulkhead config default`. Parsing it gives [`Config::default`].
const DEFAULT_TOML: &str = r#"# Bulkhead configuration. Every key is optional; the values below are the defaults.

[eal]
# Memory EAL reserves, in MB (-m). 0 = sized from the mempool. Without
# hugepages all of it is touched at start (about 1.2 s per GB): size to need.
memory_mb = 0
# Use hugepages; false passes --no-huge (IOVA as VA, 4 KiB pages).
hugepages = false
# --file-prefix. Empty = "bulkhead-<pid>", unique per process. Two processes
# with the same prefix cannot run at once.
file_prefix = ""
# lcores: -l syntax ("0,1", "0-3") or --lcores syntax when it contains '@'
# ("0@0,1@1,2@1"). The first lcore is the main (control) lcore; the others
# can forward.
lcores = "0,1"
# EAL log level (--log-level), e.g. "notice", "error", "lib.eal:debug".
log_level = "error"
# Extra EAL arguments, appended last (escape hatch for real hardware).
extra_args = []

[mempool]
# mbufs in the packet pool. 0 = enough for every rx/tx ring, per-lcore caches
# and bursts, plus one per packet of every net_pcap infinite_rx file.
mbufs = 0
# Per-lcore mbuf cache.
cache = 256
# Bytes per mbuf including the 128-byte headroom.
data_room = 2176

[forwarding]
# Engine: io, mac, macswap, rxonly, txonly, flowgen (testpmd's names), or
# policy (Bulkhead's: label policies enforced per packet, see [policy]).
mode = "io"
# Packets per rx/tx burst (1..=32).
burst = 32
# Forwarding lcores to use (testpmd's nbcore), at most lcores - 1.
nb_cores = 1
# Queues per port; more than one rx queue turns RSS on.
rxq = 1
txq = 1
# Descriptors per queue (adjusted to the device's limits).
rxd = 1024
txd = 1024
# Frame length of txonly/flowgen packets, and flowgen's flow count.
tx_pkt_len = 64
flowgen_flows = 1024
# Start forwarding as soon as the ports are up.
autostart = true

# Ports, in port-id order, by DPDK devargs: net_null, net_ring, net_pcap,
# net_af_packet, net_vhost (vhost-user), or a PCI address. A VM port is
# "net_vhostN,iface=SOCKET[,client=1][,queues=N]": server mode by default
# (Bulkhead creates SOCKET, removing a stale one), client=1 when QEMU owns the
# socket (Bulkhead reconnects); it has queues= queue pairs whatever rxq/txq
# say, and survives its VM going away and coming back. Ports are paired
# like testpmd: 0 <-> 1, 2 <-> 3; an odd last port forwards to itself.
# The default pair of net_null ports generates traffic on rx and frees it on
# tx: a self-contained demo. Add "no-rx=1" to make one a pure sink.
[[port]]
devargs = "net_null0"
# Promiscuous mode once started (ignored where the driver lacks it).
promiscuous = true

[[port]]
devargs = "net_null1"
promiscuous = true

# The policy engine (forwarding mode "policy").
[policy]
# Workloads and namespaces (YAML or TOML; see docs/policy-format.md). Each
# workload with a `port` is reached through that port.
model = ""
# Policy files loaded at start (Kubernetes NetworkPolicy YAML, Bulkhead TOML).
files = []
# Port id traffic to addresses of no local workload goes to; -1 = none (dropped).
uplink = -1
# Exact-match cache entries per forwarding lcore, and 1-in-N insertion.
emc_entries = 8192
emc_insert_inv_prob = 1
# Tracked connections per forwarding lcore.
ct_capacity = 65536
# Denied flows counted per forwarding lcore (packets and bytes per denied
# flow, for their periodic and end records; 0 = none: a denied flow then
# gets a start record per decision and no counts). When a bucket of the
# table is full, a new denied flow is not counted (denied as usual, one start
# record, `denied_uncounted` in show pmd stats) until a flow there goes idle.
denied_flows = 8192
# A denied flow that sends nothing for this long ends (its end record), ms.
denied_idle_ms = 30000
# Keep established connections when a policy change would deny them
# (default: re-evaluate them, so a change cuts live connections too).
keep_established = false
# Hardware offload of hot flows: "off", or "model" (the software NIC model in
# the rx path of the ports below; `offload on|off` at run time). Denied hot
# flows get DROP rules, allowed ones MARK + QUEUE.
offload = "off"
# Ports with a model ([] = every port).
offload_ports = []
# Packets within one millisecond that make a flow hot (`set offload threshold N`).
offload_threshold = 64
# Rules per model port (the coldest is evicted past it).
offload_capacity = 8192

# Connection timeouts (ms) per state: how long an idle connection lives.
# A TCP connection's end record comes when FIN_WAIT/TIME_WAIT (FIN) or CLOSE
# (RST) expires, so that the last packets are counted.
[policy.ct_timeouts]
tcp_syn_sent = 60000
tcp_syn_recv = 60000
tcp_established = 21600000
tcp_fin_wait = 120000
tcp_time_wait = 120000
tcp_close = 10000
udp_new = 30000
udp_replied = 180000
icmp = 30000
other = 600000

# Flow records (policy mode): start (the first packet of every flow decided
# by policy), periodic (live flows with new packets) and end (FIN, RST,
# timeout, eviction, policy revocation, quarantine cut, stop), with packets
# and bytes both ways. See README "Visibility".
[flowlog]
# JSON-lines file, appended ("" = none).
json = ""
# IPFIX collector over UDP, host:port ("" = none), e.g. "127.0.0.1:4739".
ipfix = ""
# Unix socket that `bulkhead flows --follow` reads ("" = none).
follow = "/run/bulkhead/flows.sock"
# Records queued between the lcores and the exporter; a full queue is counted.
queue = 65536
# Periodic records of live flows every this many ms (0 = none).
interval_ms = 60000

# Prometheus metrics over HTTP ("" = off). Loopback unless you say otherwise.
[metrics]
listen = "127.0.0.1:9464"

# Many hosts. With etcd endpoints, the host agent registers this host's
# workloads (policy.model) in etcd, enforces every namespace, workload and
# policy found under `prefix`, and acknowledges the revision it enforces.
# Without, `state_file` (when set) is the embedded datastore, reloaded on
# restart. With both, state_file caches the last good cluster state.
[cluster]
etcd = []
prefix = "/bulkhead/"
# This host's name in the cluster ("" = the machine's hostname).
host = ""
# Lease on this host's workloads and acknowledgement, seconds.
lease_ttl = 5
state_file = ""
# Seconds between passes that delete identities no workload uses (an identity
# goes once it was unused for a whole interval; 0 = never).
identity_gc = 60
"#;

/// The documented default configuration text.
pub fn default_toml() -> &'static str {
    DEFAULT_TOML
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// EAL settings.
    pub eal: EalSection,
    /// Packet pool.
    pub mempool: MempoolSection,
    /// Forwarding engine and queues.
    pub forwarding: ForwardingSection,
    /// Ports, in port-id order.
    #[serde(rename = "port")]
    pub ports: Vec<PortSection>,
    /// The policy engine.
    pub policy: PolicySection,
    /// Flow records.
    pub flowlog: FlowlogSection,
    /// Prometheus metrics.
    pub metrics: MetricsSection,
    /// Many hosts: datastore and agent.
    pub cluster: ClusterSection,
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// etcd client URLs (empty = no etcd).
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    pub prefix: String,
    /// This host's name ("" = hostname).
    pub host: String,
    /// Lease TTL, seconds.
    pub lease_ttl: u32,
    /// Embedded state file / cache of the last good cluster state ("" = none).
    pub state_file: std::path::PathBuf,
    /// Seconds between identity collection passes (0 = never).
    pub identity_gc: u32,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection { etcd: Vec::new(), prefix: "/bulkhead/".into(), host: String::new(), lease_ttl: 5, state_file: std::path::PathBuf::new(), identity_gc: 60 }
    }
}

impl ClusterSection {
    /// True when the switch takes its state from a datastore.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty() || !self.state_file.as_os_str().is_empty()
    }

    /// The host name to use.
    pub fn host_name(&self) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
    }
}

/// `[flowlog]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowlogSection {
    /// JSON-lines file ("" = none).
    pub json: std::path::PathBuf,
    /// IPFIX collector ("" = none).
    pub ipfix: String,
    /// Follow socket ("" = none).
    pub follow: std::path::PathBuf,
    /// Queue depth.
    pub queue: u32,
    /// Periodic records every this many ms (0 = none).
    pub interval_ms: u64,
}

impl Default for FlowlogSection {
    fn default() -> Self {
        FlowlogSection {
            json: std::path::PathBuf::new(),
            ipfix: String::new(),
            follow: "/run/bulkhead/flows.sock".into(),
            queue: 65536,
            interval_ms: 60_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// host:port ("" = off).
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { listen: crate::visibility::metrics::DEFAULT_ADDR.into() }
    }
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// Model file ("" = no workloads).
    pub model: std::path::PathBuf,
    /// Policy files.
    pub files: Vec<std::path::PathBuf>,
    /// Uplink port id, -1 = none.
    pub uplink: i32,
    /// Exact-match cache entries per lcore.
    pub emc_entries: u32,
    /// Insert 1 in N new flows into the cache.
    pub emc_insert_inv_prob: u32,
    /// Conntrack entries per lcore.
    pub ct_capacity: u32,
    /// Keep established connections across policy changes.
    pub keep_established: bool,
    /// "off" or "model".
    pub offload: String,
    /// Ports with a model (empty: all).
    pub offload_ports: Vec<u16>,
    /// Hot threshold, packets per millisecond.
    pub offload_threshold: u32,
    /// Rules per model port.
    pub offload_capacity: u32,
    /// Denied flows counted per lcore (0: none).
    pub denied_flows: u32,
    /// Idle time that ends a denied flow, ms.
    pub denied_idle_ms: u64,
    /// Conntrack timeouts per state, ms.
    pub ct_timeouts: CtTimeoutsSection,
}

/// `[policy.ct_timeouts]`: milliseconds per connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CtTimeoutsSection {
    /// TCP SYN sent.
    pub tcp_syn_sent: u64,
    /// TCP SYN-ACK seen.
    pub tcp_syn_recv: u64,
    /// TCP established.
    pub tcp_established: u64,
    /// TCP one FIN seen.
    pub tcp_fin_wait: u64,
    /// TCP both FINs seen.
    pub tcp_time_wait: u64,
    /// TCP reset.
    pub tcp_close: u64,
    /// UDP before a reply.
    pub udp_new: u64,
    /// UDP after a reply.
    pub udp_replied: u64,
    /// ICMP echo.
    pub icmp: u64,
    /// Other protocols.
    pub other: u64,
}

impl Default for CtTimeoutsSection {
    fn default() -> Self {
        let t = flowtable::conntrack::CtTimeouts::with_hz(1000);
        CtTimeoutsSection {
            tcp_syn_sent: t.tcp_syn_sent,
            tcp_syn_recv: t.tcp_syn_recv,
            tcp_established: t.tcp_established,
            tcp_fin_wait: t.tcp_fin_wait,
            tcp_time_wait: t.tcp_time_wait,
            tcp_close: t.tcp_close,
            udp_new: t.udp_new,
            udp_replied: t.udp_replied,
            icmp: t.icmp,
            other: t.other,
        }
    }
}

impl CtTimeoutsSection {
    /// The timeouts in nanoseconds (what `PolicyHandler` takes).
    pub fn to_ns(self) -> flowtable::conntrack::CtTimeouts {
        let ns = |ms: u64| ms.saturating_mul(1_000_000);
        flowtable::conntrack::CtTimeouts {
            tcp_syn_sent: ns(self.tcp_syn_sent),
            tcp_syn_recv: ns(self.tcp_syn_recv),
            tcp_established: ns(self.tcp_established),
            tcp_fin_wait: ns(self.tcp_fin_wait),
            tcp_time_wait: ns(self.tcp_time_wait),
            tcp_close: ns(self.tcp_close),
            udp_new: ns(self.udp_new),
            udp_replied: ns(self.udp_replied),
            icmp: ns(self.icmp),
            other: ns(self.other),
        }
    }

    fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("tcp_syn_sent", self.tcp_syn_sent),
            ("tcp_syn_recv", self.tcp_syn_recv),
            ("tcp_established", self.tcp_established),
            ("tcp_fin_wait", self.tcp_fin_wait),
            ("tcp_time_wait", self.tcp_time_wait),
            ("tcp_close", self.tcp_close),
            ("udp_new", self.udp_new),
            ("udp_replied", self.udp_replied),
            ("icmp", self.icmp),
            ("other", self.other),
        ]
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            model: std::path::PathBuf::new(),
            files: Vec::new(),
            uplink: -1,
            emc_entries: 8192,
            emc_insert_inv_prob: 1,
            ct_capacity: 65536,
            keep_established: false,
            offload: "off".into(),
            offload_ports: Vec::new(),
            offload_threshold: 64,
            offload_capacity: 8192,
            denied_flows: 8192,
            denied_idle_ms: 30_000,
            ct_timeouts: CtTimeoutsSection::default(),
        }
    }
}

/// `[eal]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EalSection {
    /// -m in MB; 0 = auto.
    pub memory_mb: u32,
    /// Use hugepages.
    pub hugepages: bool,
    /// --file-prefix ("" = bulkhead-<pid>).
    pub file_prefix: String,
    /// lcore list.
    pub lcores: String,
    /// --log-level.
    pub log_level: String,
    /// Extra EAL args.
    pub extra_args: Vec<String>,
}

/// `[mempool]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolSection {
    /// Pool size; 0 = auto.
    pub mbufs: u32,
    /// Per-lcore cache.
    pub cache: u32,
    /// Data room per mbuf.
    pub data_room: u16,
}

/// `[forwarding]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardingSection {
    /// Engine name.
    pub mode: String,
    /// Burst size.
    pub burst: u16,
    /// Forwarding lcores.
    pub nb_cores: u16,
    /// rx queues per port.
    pub rxq: u16,
    /// tx queues per port.
    pub txq: u16,
    /// rx descriptors.
    pub rxd: u16,
    /// tx descriptors.
    pub txd: u16,
    /// txonly/flowgen frame length.
    pub tx_pkt_len: u16,
    /// flowgen flows.
    pub flowgen_flows: u32,
    /// Start forwarding at once.
    pub autostart: bool,
}

/// `[[port]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortSection {
    /// DPDK devargs.
    pub devargs: String,
    /// Promiscuous mode.
    pub promiscuous: bool,
}

impl Default for EalSection {
    fn default() -> Self {
        Self {
            memory_mb: 0,
            hugepages: false,
            file_prefix: String::new(),
            lcores: "0,1".into(),
            log_level: "error".into(),
            extra_args: Vec::new(),
        }
    }
}

impl Default for MempoolSection {
    fn default() -> Self {
        Self { mbufs: 0, cache: 256, data_room: pmd::mempool::DEFAULT_DATA_ROOM }
    }
}

impl Default for ForwardingSection {
    fn default() -> Self {
        Self {
            mode: "io".into(),
            burst: 32,
            nb_cores: 1,
            rxq: 1,
            txq: 1,
            rxd: 1024,
            txd: 1024,
            tx_pkt_len: 64,
            flowgen_flows: 1024,
            autostart: true,
        }
    }
}

impl Default for PortSection {
    fn default() -> Self {
        Self { devargs: String::new(), promiscuous: true }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            eal: EalSection::default(),
            mempool: MempoolSection::default(),
            forwarding: ForwardingSection::default(),
            ports: vec![
                PortSection { devargs: "net_null0".into(), promiscuous: true },
                PortSection { devargs: "net_null1".into(), promiscuous: true },
            ],
            policy: PolicySection::default(),
            flowlog: FlowlogSection::default(),
            metrics: MetricsSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

/// A configuration error: `FILE:LINE: KEY: MESSAGE` on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when not known).
    pub line: usize,
    /// Dotted key (`forwarding.burst`, `port[1].devargs`), may be empty.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key '{}'", self.key)?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// Locate things in the TOML text for error messages.
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    fn line_of_offset(&self, off: usize) -> usize {
        self.text[..off.min(self.text.len())].matches('\n').count() + 1
    }

    /// The dotted section path (with `[[port]]` index) in force at `line`.
    fn section_at(&self, line: usize) -> String {
        let mut sect = String::new();
        let mut port_idx: i64 = -1;
        for (i, l) in self.text.lines().enumerate() {
            if i + 1 > line {
                break;
            }
            let t = l.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim();
                if name == "port" {
                    port_idx += 1;
                    sect = format!("port[{port_idx}]");
                } else {
                    sect = name.to_string();
                }
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                sect = name.trim().to_string();
            }
        }
        sect
    }

    /// Key written on `line` (text before '='), if any.
    fn key_on_line(&self, line: usize) -> Option<String> {
        let l = self.text.lines().nth(line.checked_sub(1)?)?;
        let (k, _) = l.split_once('=')?;
        let k = k.trim().trim_matches('"');
        (!k.is_empty() && !k.starts_with('#')).then(|| k.to_string())
    }

    fn dotted(&self, line: usize, key: &str) -> String {
        let s = self.section_at(line);
        if s.is_empty() {
            key.to_string()
        } else {
            format!("{s}.{key}")
        }
    }

    /// Line where `key` is set inside section `sect` (`eal`, `port[1]`), or
    /// where the section starts, or 0.
    fn find(&self, sect: &str, key: &str) -> usize {
        let mut sect_line = 0;
        for (i, l) in self.text.lines().enumerate() {
            let line = i + 1;
            let t = l.trim_start();
            if t.starts_with('[') {
                if self.section_at(line) == sect {
                    sect_line = line;
                }
                continue;
            }
            if self.section_at(line) == sect {
                if let Some((k, _)) = t.split_once('=') {
                    if k.trim().trim_matches('"') == key {
                        return line;
                    }
                }
            }
        }
        sect_line
    }
}

impl Config {
    /// Read, parse and validate a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming file, line and key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate TOML text; `path` is used in error messages.
    ///
    /// # Errors
    /// [`ConfigError`] naming file, line and key.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let loc = Locator { text };
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            let (line, key) = match e.span() {
                Some(sp) => {
                    let line = loc.line_of_offset(sp.start);
                    let key = if let Some(f) = msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
                        loc.dotted(line, f)
                    } else {
                        loc.key_on_line(line).map(|k| loc.dotted(line, &k)).unwrap_or_else(|| loc.section_at(line))
                    };
                    (line, key)
                }
                None => (0, String::new()),
            };
            ConfigError { file: path.to_path_buf(), line, key, msg }
        })?;
        cfg.validate().map_err(|(sect, key, msg)| ConfigError {
            file: path.to_path_buf(),
            line: loc.find(&sect, &key),
            key: if sect.is_empty() { key } else { format!("{sect}.{key}") },
            msg,
        })?;
        Ok(cfg)
    }

    /// Semantic checks; the error is (section, key, message).
    fn validate(&self) -> Result<(), (String, String, String)> {
        let err = |s: &str, k: &str, m: String| Err((s.to_string(), k.to_string(), m));
        let c = &self.cluster;
        if !c.etcd.is_empty() {
            if c.lease_ttl == 0 {
                return err("cluster", "lease_ttl", "must be at least 1".into());
            }
            if !c.prefix.starts_with('/') {
                return err("cluster", "prefix", format!("{:?} must start with /", c.prefix));
            }
            if let Some(u) = c.etcd.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
                return err("cluster", "etcd", format!("{u:?} is not an http:// or https:// URL"));
            }
            if !self.policy.files.is_empty() {
                return err("policy", "files", "with [cluster] etcd the policies come from etcd: apply them with `bulkhead policy apply`".into());
            }
        }
        let f = &self.forwarding;
        if let Err(e) = f.mode.parse::<pmd::FwdMode>().map(|_| ()).or_else(|e| if f.mode == "policy" { Ok(()) } else { Err(e) }) {
            return err("forwarding", "mode", e.to_string());
        }
        if !(1..=pmd::BURST as u16).contains(&f.burst) {
            return err("forwarding", "burst", format!("{} is out of range 1..={}", f.burst, pmd::BURST));
        }
        if f.nb_cores == 0 {
            return err("forwarding", "nb_cores", "must be at least 1".into());
        }
        let p = &self.policy;
        if p.offload != "off" && p.offload != "model" {
            return err("policy", "offload", format!("\"{}\": expected \"off\" or \"model\"", p.offload));
        }
        if p.offload_threshold == 0 {
            return err("policy", "offload_threshold", "must be at least 1".into());
        }
        if p.offload_capacity == 0 {
            return err("policy", "offload_capacity", "must be at least 1".into());
        }
        if p.denied_idle_ms == 0 {
            return err("policy", "denied_idle_ms", "must be at least 1".into());
        }
        if let Some((k, _)) = p.ct_timeouts.named().into_iter().find(|(_, v)| *v == 0) {
            return err("policy.ct_timeouts", k, "must be at least 1 (ms)".into());
        }
        if let Some(bad) = p.offload_ports.iter().find(|&&i| i as usize >= self.ports.len()) {
            return err("policy", "offload_ports", format!("port {bad} is not configured ({} ports)", self.ports.len()));
        }
        for (k, v) in [("rxq", f.rxq), ("txq", f.txq), ("rxd", f.rxd), ("txd", f.txd)] {
            if v == 0 {
                return err("forwarding", k, "must be at least 1".into());
            }
        }
        if !(60..=1514).contains(&f.tx_pkt_len) {
            return err("forwarding", "tx_pkt_len", format!("{} is out of range 60..=1514", f.tx_pkt_len));
        }
        for (sec, key, v) in [("flowlog", "ipfix", &self.flowlog.ipfix), ("metrics", "listen", &self.metrics.listen)] {
            if !v.is_empty() && v.parse::<std::net::SocketAddr>().is_err() {
                return err(sec, key, format!("{v:?} is not host:port (an IP address and a port)"));
            }
        }
        if self.eal.lcores.trim().is_empty() {
            return err("eal", "lcores", "must name at least one lcore".into());
        }
        if self.ports.is_empty() {
            return err("", "port", "at least one [[port]] is required".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let sect = format!("port[{i}]");
            let name = pmd::port::devargs_name(&p.devargs);
            if name.is_empty() {
                return err(&sect, "devargs", "is empty".into());
            }
            if !names.insert(name.to_string()) {
                return err(&sect, "devargs", format!("device '{name}' is declared twice"));
            }
            if let Err(e) = pmd::vhost::VhostArgs::parse(&p.devargs) {
                return err(&sect, "devargs", e.to_string());
            }
            for (k, v) in devargs_kv(&p.devargs) {
                if k == "rx_pcap" && !Path::new(v).is_file() {
                    return err(&sect, "devargs", format!("rx_pcap file '{v}' does not exist"));
                }
                if k == "tx_pcap" {
                    let parent = Path::new(v).parent().filter(|d| !d.as_os_str().is_empty());
                    if parent.is_some_and(|d| !d.is_dir()) {
                        return err(&sect, "devargs", format!("tx_pcap directory of '{v}' does not exist"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `key=value` pairs of devargs after the device name.
pub fn devargs_kv(devargs: &str) -> impl Iterator<Item = (&str, &str)> {
    devargs.split(',').skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim(), v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("t.toml"))
    }

    #[test]
    fn documented_default_is_the_default() {
        assert_eq!(parse(default_toml()).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_gets_default_ports() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("[eal]\nmemory_mb = 64\n\n[forwarding]\nmode = \"io\"\nburts = 32\n").unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert_eq!(e.key, "forwarding.burts", "{e}");
        let s = e.to_string();
        assert!(s.starts_with("t.toml:6: key 'forwarding.burts': unknown field `burts`"), "{s}");
        assert!(!s.contains('\n'), "one line: {s}");
    }

    #[test]
    fn unknown_key_in_second_port() {
        let e = parse("[[port]]\ndevargs = \"net_null0\"\n[[port]]\ndevargs = \"net_null1\"\nspeed = 3\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "port[1].speed"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("[forwarding]\nburst = \"many\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "forwarding.burst"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = parse("[forwarding]\nmode = \"io\"\nburst = 64\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "forwarding.burst"), "{e}");
        let e = parse("[forwarding]\nmode = \"fast\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "forwarding.mode"), "{e}");
        let e = parse("[[port]]\ndevargs = \"net_pcap0,rx_pcap=/nonexistent/in.pcap\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "port[0].devargs"), "{e}");
        assert!(e.msg.contains("/nonexistent/in.pcap"));
        let e = parse("[[port]]\ndevargs = \"net_null0\"\n[[port]]\ndevargs = \"net_null0,no-rx=1\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "port[1].devargs"), "{e}");
        let e = parse("[[port]]\ndevargs = \"net_vhost0,queues=2\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "port[0].devargs"), "{e}");
        assert!(e.msg.contains("iface="), "{e}");
        let e = parse("[[port]]\ndevargs = \"net_vhost0,iface=/tmp/x.sock,queues=0\"\n").unwrap_err();
        assert!(e.msg.contains("queues=0"), "{e}");
    }
}
