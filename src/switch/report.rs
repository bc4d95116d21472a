//! Text-able reports the shell prints, in testpmd's shapes.

use std::fmt;

use pmd::fwd::StreamStats;
use pmd::port::{PortInfo, PortStats};

fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// `show port info N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfoReport(pub PortInfo, pub Option<super::VhostReport>);

impl fmt::Display for PortInfoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.0;
        writeln!(f, "\n********************* Infos for port {:<2} *********************", i.id)?;
        writeln!(f, "MAC address: {}", mac(&i.mac))?;
        writeln!(f, "Device name: {}", i.name)?;
        writeln!(f, "Driver name: {}", i.driver)?;
        writeln!(f, "Devargs: {}", i.devargs)?;
        writeln!(f, "Connect to socket: {}", i.socket)?;
        writeln!(f, "Port state: {}", i.state)?;
        writeln!(f, "Link status: {}", if i.link.up { "up" } else { "down" })?;
        writeln!(f, "Link speed: {} Mbps", i.link.speed_mbps)?;
        writeln!(f, "Link duplex: {}", if i.link.full_duplex { "full-duplex" } else { "half-duplex" })?;
        writeln!(f, "Promiscuous mode: {}", if i.promiscuous { "enabled" } else { "disabled" })?;
        writeln!(f, "Max possible RX queues: {}", i.max_rxq)?;
        writeln!(f, "Current number of RX queues: {}", i.rxq)?;
        writeln!(f, "Max possible TX queues: {}", i.max_txq)?;
        writeln!(f, "Current number of TX queues: {}", i.txq)?;
        writeln!(f, "RX descriptors: {}  TX descriptors: {}", i.rxd, i.txd)?;
        write!(f, "RSS hash functions: {}", if i.rss_hf == 0 { "none (RSS off)".to_string() } else { format!("{:#x}", i.rss_hf) })?;
        if let Some(v) = &self.1 {
            write!(f, "\n{}", v.info_lines())?;
        }
        Ok(())
    }
}

/// `show port stats N`: counters plus throughput since the previous show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortStatsReport {
    /// Port id.
    pub port: u16,
    /// Counters now.
    pub stats: PortStats,
    /// Rx packets per second since the previous show.
    pub rx_pps: f64,
    /// Tx packets per second since the previous show.
    pub tx_pps: f64,
    /// Rx bits per second since the previous show.
    pub rx_bps: f64,
    /// Tx bits per second since the previous show.
    pub tx_bps: f64,
}

impl fmt::Display for PortStatsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "\n  ######################## NIC statistics for port {:<2} ########################", self.port)?;
        writeln!(f, "  RX-packets: {:<10} RX-missed: {:<10} RX-bytes:  {}", s.rx_packets, s.rx_missed, s.rx_bytes)?;
        writeln!(f, "  RX-errors: {}", s.rx_errors)?;
        writeln!(f, "  RX-nombuf:  {}", s.rx_nombuf)?;
        writeln!(f, "  TX-packets: {:<10} TX-errors: {:<10} TX-bytes:  {}", s.tx_packets, s.tx_errors, s.tx_bytes)?;
        writeln!(f)?;
        writeln!(f, "  Throughput (since last show)")?;
        writeln!(f, "  Rx-pps: {:>12.0}          Rx-bps: {:>12.0}", self.rx_pps, self.rx_bps)?;
        writeln!(f, "  Tx-pps: {:>12.0}          Tx-bps: {:>12.0}", self.tx_pps, self.tx_bps)?;
        write!(f, "  ############################################################################")
    }
}

/// One stream's forwarding counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReport {
    /// rx port.
    pub rx_port: u16,
    /// rx queue.
    pub rx_queue: u16,
    /// tx port.
    pub tx_port: u16,
    /// tx queue.
    pub tx_queue: u16,
    /// lcore forwarding it.
    pub lcore: u32,
    /// Counters since the last start or clear.
    pub stats: StreamStats,
}

/// `show fwd stats all`.
#[derive(Debug, Clone, PartialEq)]
pub struct FwdStatsReport {
    /// Engine name.
    pub mode: String,
    /// Per stream.
    pub streams: Vec<StreamReport>,
    /// Sum over streams.
    pub total: StreamStats,
    /// Busy TSC cycles per forwarded (rx, or tx for generators) packet.
    pub cycles_per_packet: f64,
}

impl fmt::Display for FwdStatsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.streams {
            writeln!(
                f,
                "\n  ------- Forward Stats for RX Port={:>2}/Queue={:>2} -> TX Port={:>2}/Queue={:>2} (lcore {}) -------",
                s.rx_port, s.rx_queue, s.tx_port, s.tx_queue, s.lcore
            )?;
            writeln!(
                f,
                "  RX-packets: {:<14} TX-packets: {:<14} TX-dropped: {:<14} FWD-dropped: {}",
                s.stats.rx_packets, s.stats.tx_packets, s.stats.tx_dropped, s.stats.fwd_dropped
            )?;
        }
        let t = &self.total;
        writeln!(f, "\n  +++++++++++++++ Accumulated forward statistics for all ports ({}) +++++++++++++++", self.mode)?;
        writeln!(f, "  RX-packets: {:<14} FWD-dropped: {:<13} RX-total: {}", t.rx_packets, t.fwd_dropped, t.rx_packets)?;
        writeln!(
            f,
            "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}",
            t.tx_packets,
            t.tx_dropped,
            t.tx_packets + t.tx_dropped
        )?;
        writeln!(f, "  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++")?;
        write!(f, "\n  CPU cycles/packet={:.2} (busy cycles={})", self.cycles_per_packet, t.busy_cycles)
    }
}
