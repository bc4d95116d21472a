//! Process arguments (clap): the verb tree of the `bulkhead` binary.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Bulkhead: a micro-segmentation dataplane on DPDK.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, long_about = None)]
pub struct Cli {
    /// Start the interactive shell (same as `bulkhead cli`).
    #[arg(short = 'i', long = "interactive", global = false)]
    pub interactive: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the switch: ports, forwarding, control socket.
    Run(RunArgs),
    /// testpmd-style shell: attaches to a running switch, or runs one in this process.
    Cli(CliArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Benchmarks that compare Bulkhead with its peers side by side.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Classify a ClassBench trace against a ClassBench rule set.
    Classify(ClassifyArgs),
    /// Policy tools: validate and compile, explain a verdict.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Who can reach whom (compliance report).
    Reach(ReachCli),
    /// Many hosts: the datastore's view of the cluster.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Replay NetworkPolicy conformance cases and check every probe matrix.
    Conformance(ConformanceCli),
    /// Stream flow records from a running switch.
    Flows(FlowsArgs),
    /// Write a pcap of generated traffic (64-byte UDP frames, one per flow).
    GenTraffic(GenTrafficArgs),
}

/// `bulkhead gen-traffic`
#[derive(Debug, Args)]
pub struct GenTrafficArgs {
    /// Distinct 5-tuples (one frame each; net_pcap infinite_rx replays them
    /// round-robin). With --model: source ports per (pair, service).
    #[arg(long, default_value_t = 1000)]
    pub flows: u32,
    /// Traffic between the workloads of this model instead: every ordered
    /// pair on common service ports (80, 443, 8080, 8443, 5432, 9100 TCP; 53 UDP).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output pcap file.
    #[arg(long)]
    pub out: PathBuf,
}

/// `bulkhead run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML; `bulkhead config default` prints one).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Print per-port rates every N seconds (0 = off).
    #[arg(long, default_value_t = 0)]
    pub stats_period: u64,
    /// Control socket to serve (`bulkhead cli --socket` attaches to it).
    #[arg(long, default_value = crate::shell::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `bulkhead cli`
#[derive(Debug, Args)]
pub struct CliArgs {
    /// Control socket of a running switch.
    #[arg(long, default_value = crate::shell::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Run these commands first (one per line), like testpmd's --cmdline-file.
    #[arg(long)]
    pub cmdline_file: Option<PathBuf>,
    /// With no switch running: start one in this process from this config.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// `bulkhead config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the documented default configuration.
    Default,
}

/// `bulkhead bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Forwarding rate: Bulkhead vs dpdk-testpmd on the same vdevs and pcaps
    /// (`--mode policy`: the policy engine on gen_bench.py's ACLs vs testpmd io).
    Fwd(BenchFwdArgs),
    /// Publish-to-enforced latency of live policy changes under load.
    PolicyUpdate(BenchPolicyUpdateArgs),
    /// VM-to-VM through vhost-user: Bulkhead (io, policy) vs testpmd vs OVS-DPDK.
    Vhost(BenchVhostArgs),
    /// Hot-flow offload to the software NIC model: policy switch rate with offload off vs on.
    Offload(BenchOffloadArgs),
}

/// `bulkhead bench vhost`
#[derive(Debug, Args)]
pub struct BenchVhostArgs {
    /// Systems to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "bulkhead-io,bulkhead-policy,testpmd,ovs")]
    pub systems: Vec<String>,
    /// Measured seconds per system.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Rounds over all systems, interleaved (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// loop: one frontend (txonly burst, then io) on one lcore; split: txonly
    /// and rxonly frontends (three busy pollers: needs three free CPUs).
    #[arg(long, default_value = "loop")]
    pub topology: String,
    /// The OVS peer script.
    #[arg(long)]
    pub ovs_script: Option<PathBuf>,
    /// Keep logs and configs here (default: a temporary directory, removed).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// `bulkhead bench offload`
#[derive(Debug, Args)]
pub struct BenchOffloadArgs {
    /// Distinct flows.
    #[arg(long, default_value_t = 1000)]
    pub flows: u32,
    /// Hot flows among them.
    #[arg(long, default_value_t = 100)]
    pub hot: u32,
    /// Percent of packets the hot flows carry.
    #[arg(long, default_value_t = 90)]
    pub hot_share: u32,
    /// Percent of flows the policy denies.
    #[arg(long, default_value_t = 20)]
    pub deny_pct: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds (offload off, then on, each round).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Hot threshold, packets per millisecond.
    #[arg(long, default_value_t = 16)]
    pub threshold: u32,
    /// EAL lcores: main, then the one forwarding lcore.
    #[arg(long, default_value = "0,1")]
    pub lcores: String,
}

/// `bulkhead bench policy-update`
#[derive(Debug, Args)]
pub struct BenchPolicyUpdateArgs {
    /// A policy-mode config whose traffic keeps the lcores busy (e.g. the demo's).
    #[arg(long)]
    pub config: PathBuf,
    /// The workload whose quarantine is toggled (`namespace/name`).
    #[arg(long)]
    pub workload: String,
    /// Changes to measure.
    #[arg(long, default_value_t = 1000)]
    pub iterations: u32,
    /// Seconds of traffic before the first change.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

/// `bulkhead bench fwd`
#[derive(Debug, Args)]
pub struct BenchFwdArgs {
    /// Forwarding mode: io, mac, macswap, or policy.
    #[arg(long, default_value = "io")]
    pub mode: String,
    /// Flow counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    pub flows: Vec<u32>,
    /// Seconds per measurement.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Rounds per system (medians are reported).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds of traffic before each measurement.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// `--mode policy`: ACL rules (as ../shared/peers/gen_bench.py rules --rules R).
    #[arg(long, default_value_t = 10_000)]
    pub rules: u32,
    /// `--mode policy`: connection tracking on (stateless ACL otherwise).
    #[arg(long)]
    pub stateful: bool,
}

/// `bulkhead classify`
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// ClassBench rule file.
    #[arg(long)]
    pub rules: PathBuf,
    /// ClassBench trace file.
    #[arg(long)]
    pub trace: PathBuf,
    /// Print one line of lookup and update figures instead of per-packet results.
    #[arg(long)]
    pub bench: bool,
}

/// `bulkhead policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate and compile policy files; rule count per policy.
    Check {
        /// Workloads and namespaces (YAML or TOML).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Policy files (Kubernetes NetworkPolicy YAML, Bulkhead TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Why a packet from one workload to another gets its verdict.
    Explain {
        /// Workloads and namespaces.
        #[arg(long)]
        model: PathBuf,
        /// Source workload (`namespace/name`).
        #[arg(long)]
        from: String,
        /// Destination workload (`namespace/name`).
        #[arg(long)]
        to: String,
        /// Destination port and protocol, e.g. `443/TCP`.
        #[arg(long)]
        port: String,
        /// Policy files.
        files: Vec<PathBuf>,
    },
    /// Write policy documents into the datastore (validated first; each file
    /// is one document named after the file).
    Apply {
        /// The datastore.
        #[command(flatten)]
        store: StoreArgs,
        /// Return only when every live host enforces the change (or fail
        /// after --timeout, naming the hosts that lag).
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Which datastore a command talks to.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/bulkhead/")]
    pub prefix: String,
    /// The embedded state file instead of etcd.
    #[arg(long, conflicts_with = "etcd")]
    pub state: Option<PathBuf>,
}

/// `bulkhead cluster`
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Every live host and the revision it enforces, against the data revision.
    Status {
        /// The datastore.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `bulkhead reach`
#[derive(Debug, Args)]
pub struct ReachCli {
    /// Workloads and namespaces.
    #[arg(long)]
    pub model: PathBuf,
    /// Sources: a label selector such as `app=web,env in (prod)`.
    #[arg(long)]
    pub from: Option<String>,
    /// Destinations: a label selector such as `pci=true`.
    #[arg(long)]
    pub to: Option<String>,
    /// Only this port and protocol, e.g. `5432/TCP`.
    #[arg(long)]
    pub port: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Policy files.
    pub files: Vec<PathBuf>,
}

/// `bulkhead conformance`
#[derive(Debug, Args)]
pub struct ConformanceCli {
    /// The shared topology (default: model.yaml beside the first case's folder).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Run every probe as real packets through DPDK.
    #[arg(long)]
    pub dataplane: bool,
    /// Case files.
    #[arg(required = true)]
    pub cases: Vec<PathBuf>,
}

/// `bulkhead flows`
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Keep streaming records as they come.
    #[arg(long)]
    pub follow: bool,
    /// The flow-record socket of a running switch.
    #[arg(long, default_value = "/run/bulkhead/flows.sock")]
    pub socket: PathBuf,
}
