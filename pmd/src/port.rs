//! Ethernet ports from devargs: probe, configure (queues, descriptors, RSS),
//! start/stop/close, link, promiscuous mode, stats and xstats.

use std::ffi::{CStr, CString};
use std::sync::Arc;

use crate::error::{rc, Error, PortNum, Result};
use crate::mempool::Mempool;
use dpdk_ffi as ffi;

/// Queue and descriptor configuration of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConf {
    /// Number of rx queues (RSS spreads flows over them when > 1).
    pub rxq: u16,
    /// Number of tx queues.
    pub txq: u16,
    /// Descriptors per rx queue (adjusted to the device's limits).
    pub rxd: u16,
    /// Descriptors per tx queue (adjusted to the device's limits).
    pub txd: u16,
    /// Promiscuous mode after start (ignored where the driver lacks it).
    pub promiscuous: bool,
}

impl Default for PortConf {
    fn default() -> Self {
        Self { rxq: 1, txq: 1, rxd: 1024, txd: 1024, promiscuous: true }
    }
}

/// Where a port is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// Configured, queues set up, not started.
    Stopped,
    /// Started: rx/tx bursts allowed.
    Started,
    /// Closed: the ethdev is released and cannot be restarted.
    Closed,
}

impl std::fmt::Display for PortState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortState::Stopped => "stopped",
            PortState::Started => "started",
            PortState::Closed => "closed",
        })
    }
}

/// Link status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Link up.
    pub up: bool,
    /// Speed in Mbps (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Static facts about a port (`show port info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port id.
    pub id: PortNum,
    /// Device name (`net_pcap0`, `0000:01:00.0`).
    pub name: String,
    /// The devargs it was probed with.
    pub devargs: String,
    /// Driver name (`net_pcap`).
    pub driver: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// NUMA socket (-1 unknown).
    pub socket: i32,
    /// Configured rx queues.
    pub rxq: u16,
    /// Configured tx queues.
    pub txq: u16,
    /// Configured rx descriptors per queue.
    pub rxd: u16,
    /// Configured tx descriptors per queue.
    pub txd: u16,
    /// Device maximum rx queues.
    pub max_rxq: u16,
    /// Device maximum tx queues.
    pub max_txq: u16,
    /// RSS hash functions enabled (0 = RSS off).
    pub rss_hf: u64,
    /// Promiscuous mode on.
    pub promiscuous: bool,
    /// Link status.
    pub link: Link,
    /// Life-cycle state.
    pub state: PortState,
}

/// Basic counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped by the device (rx queue full).
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// rx mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// Device name from devargs: the text before the first comma.
pub fn devargs_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or("").trim()
}

fn port_by_name(name: &str) -> Option<PortNum> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer for the duration of the call.
    let r = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (r == 0).then_some(id)
}

/// Probe (hot-plug) a device from devargs and return its port id. A device
/// already present (e.g. given to EAL as `--vdev`) is looked up by name.
///
/// # Errors
/// [`Error::Probe`] naming the devargs when the driver refuses it.
pub fn probe(devargs: &str) -> Result<PortNum> {
    let name = devargs_name(devargs);
    if name.is_empty() {
        return Err(Error::Invalid(format!("empty devargs {devargs:?}")));
    }
    if let Some(id) = port_by_name(name) {
        return Ok(id);
    }
    let c = CString::new(devargs).map_err(|_| Error::Invalid(format!("devargs contain NUL: {devargs:?}")))?;
    // SAFETY: `c` is a valid C string; EAL is initialised (ports are only
    // created by code holding an Eal).
    let r = unsafe { ffi::rte_dev_probe(c.as_ptr()) };
    if r < 0 {
        return Err(Error::Probe { devargs: devargs.to_string(), errno: -r });
    }
    port_by_name(name).ok_or_else(|| Error::NoSuchPortName { name: name.to_string() })
}

/// An ethdev port. Stopped and closed on drop.
#[derive(Debug)]
pub struct Port {
    id: PortNum,
    name: String,
    devargs: String,
    conf: PortConf,
    rss_hf: u64,
    state: PortState,
    pool: Arc<Mempool>,
}

fn dev_info(id: PortNum) -> Result<ffi::rte_eth_dev_info> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: `info` is a valid out-struct; invalid ids return -ENODEV.
    rc("rte_eth_dev_info_get", unsafe { ffi::rte_eth_dev_info_get(id, &mut info) })?;
    Ok(info)
}

impl Port {
    /// Probe `devargs` and configure the port with `conf`, rx buffers from
    /// `pool`. The port is left stopped.
    ///
    /// # Errors
    /// Probe failures, [`Error::TooManyRxQueues`]/[`Error::TooManyTxQueues`],
    /// and any failing configure or queue setup call.
    pub fn open(devargs: &str, conf: PortConf, pool: Arc<Mempool>) -> Result<Port> {
        // Probe + configure from several control threads at once races in
        // EAL's device lists: one at a time.
        static OPEN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let vhost = crate::vhost::VhostArgs::parse(devargs)?;
        if let Some(v) = &vhost {
            v.prepare()?;
        }
        let id = probe(devargs)?;
        let mut port = Port {
            id,
            name: devargs_name(devargs).to_string(),
            devargs: devargs.to_string(),
            conf,
            rss_hf: 0,
            state: PortState::Stopped,
            pool,
        };
        if let Err(e) = port.configure(conf) {
            // Release the device so a failed open leaves nothing behind.
            // SAFETY: the port exists and is not started.
            unsafe { ffi::rte_eth_dev_close(id) };
            port.state = PortState::Closed;
            return Err(e);
        }
        if vhost.is_some() {
            // Connect/disconnect of the VM arrive as link-state events.
            if let Err(e) = crate::vhost::watch(id) {
                let _ = port.close();
                return Err(e);
            }
        }
        Ok(port)
    }

    /// (Re)configure queues and descriptors. The port must be stopped.
    ///
    /// # Errors
    /// As [`Port::open`]; [`Error::PortState`] if started or closed.
    pub fn configure(&mut self, conf: PortConf) -> Result<()> {
        match self.state {
            PortState::Started => return Err(Error::PortState { port: self.id, what: "stop the port first" }),
            PortState::Closed => return Err(Error::PortState { port: self.id, what: "port is closed" }),
            PortState::Stopped => {}
        }
        let info = dev_info(self.id)?;
        if conf.rxq == 0 || conf.rxq > info.max_rx_queues {
            return Err(Error::TooManyRxQueues { port: self.id, want: conf.rxq, max: info.max_rx_queues });
        }
        if conf.txq == 0 || conf.txq > info.max_tx_queues {
            return Err(Error::TooManyTxQueues { port: self.id, want: conf.txq, max: info.max_tx_queues });
        }
        let mut ec = ffi::rte_eth_conf::default();
        self.rss_hf = 0;
        if conf.rxq > 1 {
            let hf = (ffi::RTE_ETH_RSS_IP | ffi::RTE_ETH_RSS_TCP | ffi::RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
            if hf != 0 {
                ec.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode::RTE_ETH_MQ_RX_RSS;
                ec.rx_adv_conf.rss_conf.rss_hf = hf;
                ec.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
                if info.rx_offload_capa & ffi::RTE_ETH_RX_OFFLOAD_RSS_HASH != 0 {
                    ec.rxmode.offloads |= ffi::RTE_ETH_RX_OFFLOAD_RSS_HASH;
                }
                self.rss_hf = hf;
            }
        }
        if info.tx_offload_capa & ffi::RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE != 0 {
            ec.txmode.offloads |= ffi::RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
        }
        // SAFETY: the port exists and is stopped; `ec` lives for the call.
        rc("rte_eth_dev_configure", unsafe { ffi::rte_eth_dev_configure(self.id, conf.rxq, conf.txq, &ec) })?;
        let (mut rxd, mut txd) = (conf.rxd, conf.txd);
        // SAFETY: valid port and out-pointers.
        rc("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rxd, &mut txd)
        })?;
        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..conf.rxq {
            // SAFETY: configured port; NULL rxconf means the driver default;
            // the pool outlives the port (we hold an Arc).
            rc("rte_eth_rx_queue_setup", unsafe {
                ffi::rte_eth_rx_queue_setup(self.id, q, rxd, socket, std::ptr::null(), self.pool.as_ptr())
            })?;
        }
        for q in 0..conf.txq {
            // SAFETY: configured port; NULL txconf means the driver default.
            rc("rte_eth_tx_queue_setup", unsafe {
                ffi::rte_eth_tx_queue_setup(self.id, q, txd, socket, std::ptr::null())
            })?;
        }
        self.conf = PortConf { rxd, txd, ..conf };
        Ok(())
    }

    /// Port id.
    pub fn id(&self) -> PortNum {
        self.id
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The devargs the port was opened with.
    pub fn devargs(&self) -> &str {
        &self.devargs
    }

    /// Current configuration (descriptor counts as adjusted by the device).
    pub fn conf(&self) -> PortConf {
        self.conf
    }

    /// Life-cycle state.
    pub fn state(&self) -> PortState {
        self.state
    }

    /// Start the port (no-op when started).
    ///
    /// # Errors
    /// [`Error::PortState`] when closed; `rte_eth_dev_start` failures.
    pub fn start(&mut self) -> Result<()> {
        match self.state {
            PortState::Started => return Ok(()),
            PortState::Closed => return Err(Error::PortState { port: self.id, what: "port is closed" }),
            PortState::Stopped => {}
        }
        // SAFETY: configured port.
        rc("rte_eth_dev_start", unsafe { ffi::rte_eth_dev_start(self.id) })?;
        self.state = PortState::Started;
        if crate::vhost::is_vhost(&self.devargs) {
            crate::vhost::direct_on(self.id, self.pool.as_ptr());
        }
        if self.conf.promiscuous {
            // Not every virtual driver has it; the failure is not fatal.
            let _ = self.set_promiscuous(true);
        }
        Ok(())
    }

    /// Stop the port (no-op unless started). No thread may be polling it.
    ///
    /// # Errors
    /// `rte_eth_dev_stop` failures.
    pub fn stop(&mut self) -> Result<()> {
        if self.state != PortState::Started {
            return Ok(());
        }
        if crate::vhost::is_vhost(&self.devargs) {
            crate::vhost::direct_off(self.id);
        }
        // SAFETY: started port; the caller stopped the poll loops.
        rc("rte_eth_dev_stop", unsafe { ffi::rte_eth_dev_stop(self.id) })?;
        self.state = PortState::Stopped;
        Ok(())
    }

    /// Stop and close the port; it cannot be used again.
    ///
    /// # Errors
    /// Stop or close failures.
    pub fn close(&mut self) -> Result<()> {
        if self.state == PortState::Closed {
            return Ok(());
        }
        self.stop()?;
        if crate::vhost::is_vhost(&self.devargs) {
            crate::vhost::unwatch(self.id);
        }
        // SAFETY: stopped port, no pollers.
        rc("rte_eth_dev_close", unsafe { ffi::rte_eth_dev_close(self.id) })?;
        self.state = PortState::Closed;
        Ok(())
    }

    /// Enable or disable promiscuous mode.
    ///
    /// # Errors
    /// `-ENOTSUP` where the driver lacks it.
    pub fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        // SAFETY: valid port id.
        let r = unsafe {
            if on {
                ffi::rte_eth_promiscuous_enable(self.id)
            } else {
                ffi::rte_eth_promiscuous_disable(self.id)
            }
        };
        rc("rte_eth_promiscuous_enable/disable", r)?;
        self.conf.promiscuous = on;
        Ok(())
    }

    /// Link status without waiting.
    pub fn link(&self) -> Link {
        let mut l = ffi::rte_eth_link::default();
        // SAFETY: valid out-struct.
        let r = unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut l) };
        if r < 0 {
            return Link { up: false, speed_mbps: 0, full_duplex: false };
        }
        Link { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 }
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = ffi::rte_ether_addr::default();
        // SAFETY: valid out-struct; on failure it stays zero.
        unsafe { ffi::rte_eth_macaddr_get(self.id, &mut a) };
        a.addr_bytes
    }

    /// Everything `show port info` prints.
    ///
    /// # Errors
    /// When the device info cannot be read (closed port).
    pub fn info(&self) -> Result<PortInfo> {
        if self.state == PortState::Closed {
            return Err(Error::PortState { port: self.id, what: "port is closed" });
        }
        let di = dev_info(self.id)?;
        let driver = if di.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name is a static NUL-terminated string of the driver.
            unsafe { CStr::from_ptr(di.driver_name) }.to_string_lossy().into_owned()
        };
        // SAFETY: valid port id.
        let promisc = unsafe { ffi::rte_eth_promiscuous_get(self.id) } == 1;
        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        Ok(PortInfo {
            id: self.id,
            name: self.name.clone(),
            devargs: self.devargs.clone(),
            driver,
            mac: self.mac(),
            socket,
            rxq: di.nb_rx_queues,
            txq: di.nb_tx_queues,
            rxd: self.conf.rxd,
            txd: self.conf.txd,
            max_rxq: di.max_rx_queues,
            max_txq: di.max_tx_queues,
            rss_hf: self.rss_hf,
            promiscuous: promisc,
            link: self.link(),
            state: self.state,
        })
    }

    /// Basic counters.
    ///
    /// # Errors
    /// When the driver cannot report them.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid out-struct.
        rc("rte_eth_stats_get", unsafe { ffi::rte_eth_stats_get(self.id, &mut s) })?;
        if crate::vhost::is_vhost(&self.devargs) {
            // What the direct path moved, past the PMD's own counters.
            let [rp, rb, tp, tb, td] = crate::vhost::direct_counts(self.id);
            s.ipackets += rp;
            s.ibytes += rb;
            s.opackets += tp;
            s.obytes += tb;
            s.oerrors += td;
        }
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Reset basic and extended counters.
    ///
    /// # Errors
    /// When the driver cannot reset them.
    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: valid port id.
        rc("rte_eth_stats_reset", unsafe { ffi::rte_eth_stats_reset(self.id) })?;
        crate::vhost::direct_reset(self.id);
        // SAFETY: valid port id; drivers without xstats return an error we ignore.
        unsafe { ffi::rte_eth_xstats_reset(self.id) };
        Ok(())
    }

    /// Extended counters as (name, value).
    ///
    /// # Errors
    /// When the driver cannot report them.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        // SAFETY: NULL/0 asks for the count only.
        let n = rc("rte_eth_xstats_get", unsafe { ffi::rte_eth_xstats_get(self.id, std::ptr::null_mut(), 0) })?;
        let mut vals = vec![ffi::rte_eth_xstat::default(); n as usize];
        let mut names = vec![ffi::rte_eth_xstat_name::default(); n as usize];
        // SAFETY: arrays of n entries each.
        let got = rc("rte_eth_xstats_get", unsafe { ffi::rte_eth_xstats_get(self.id, vals.as_mut_ptr(), n) })?;
        // SAFETY: arrays of n entries each.
        let gotn = rc("rte_eth_xstats_get_names", unsafe {
            ffi::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n)
        })?;
        let m = got.min(gotn).min(n) as usize;
        let mut out: Vec<(String, u64)> = vals[..m]
            .iter()
            .map(|v| {
                let nm = names.get(v.id as usize).map_or_else(String::new, |x| {
                    // SAFETY: DPDK writes NUL-terminated names into the 64-byte arrays.
                    unsafe { CStr::from_ptr(x.name.as_ptr()) }.to_string_lossy().into_owned()
                });
                (nm, v.value)
            })
            .collect();
        if crate::vhost::is_vhost(&self.devargs) {
            // The PMD's xstats see only what went through its burst functions.
            let names = ["direct_rx_packets", "direct_rx_bytes", "direct_tx_packets", "direct_tx_bytes", "direct_tx_dropped"];
            out.extend(names.iter().map(|n| n.to_string()).zip(crate::vhost::direct_counts(self.id)));
        }
        Ok(out)
    }

    /// The pool rx queues draw from.
    pub fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
