//! vhost-user ports: DPDK's `net_vhost` PMD, a VM's virtio-net device seen as
//! an ethdev on the same polled rx/tx path as every other port.
//!
//! ```text
//!  devargs  net_vhost0,iface=/run/bulkhead/vm1.sock[,client=1][,queues=N]
//!  server   (default) Bulkhead creates and listens on the socket; QEMU (or a
//!           virtio_user frontend) connects, disconnects and connects again
//!  client   (client=1) the VM's QEMU owns the socket; DPDK's vhost library
//!           reconnects every second until it is there, and after it goes away
//!  events   the vhost thread raises RTE_ETH_EVENT_INTR_LSC on connect and
//!           disconnect and RTE_ETH_EVENT_QUEUE_STATE per vring enable/disable;
//!           [`watch`] counts them in per-port atomics the control thread reads
//! ```
//!
//! A port outlives its VM: while nothing is connected, `rx_burst` returns 0 and
//! `tx_burst` sends nothing (the poll loop frees and counts the unsent mbufs),
//! so no mbuf is held by a dead connection.
//!
//! The packet path of a started vhost port skips the PMD's burst functions
//! and calls the vhost library itself, as OVS does (see [`Direct`]): the
//! PMD's rx and tx walk every packet again for its counters and free sent
//! mbufs one by one (perf: 6.8 % of a policy lcore). Its control side (probe,
//! sockets, reconnects, link events) stays as it is.

use std::ffi::{c_int, c_void, CStr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{rc, Error, PortNum, Result};
use crate::route::bump;
use dpdk_ffi as ffi;

/// Who owns the vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// Bulkhead listens (QEMU `-chardev socket,path=...` without `server`).
    Server,
    /// QEMU listens (`-chardev socket,path=...,server=on`); Bulkhead reconnects.
    Client,
}

impl std::fmt::Display for VhostMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VhostMode::Server => "server",
            VhostMode::Client => "client",
        })
    }
}

/// The vhost-user settings of a `net_vhost` devargs string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostArgs {
    /// Socket path (`iface=`).
    pub iface: PathBuf,
    /// Server (default) or client (`client=1`).
    pub mode: VhostMode,
    /// Queue pairs (`queues=`, default 1).
    pub queues: u16,
}

/// Most queue pairs a `net_vhost` port takes (the PMD's own limit).
pub const MAX_QUEUES: u16 = 1024;

/// True for `net_vhost*` (and the legacy `eth_vhost*`) device names.
pub fn is_vhost(devargs: &str) -> bool {
    let name = crate::port::devargs_name(devargs);
    name.starts_with("net_vhost") || name.starts_with("eth_vhost")
}

impl VhostArgs {
    /// Parses the vhost-user part of devargs; `Ok(None)` for other devices.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a missing `iface`, a `client` other than 0/1 or
    /// a `queues` outside 1..=[`MAX_QUEUES`].
    pub fn parse(devargs: &str) -> Result<Option<VhostArgs>> {
        if !is_vhost(devargs) {
            return Ok(None);
        }
        let name = crate::port::devargs_name(devargs);
        let (mut iface, mut mode, mut queues) = (None, VhostMode::Server, 1u16);
        for kv in devargs.split(',').skip(1) {
            let Some((k, v)) = kv.split_once('=') else { continue };
            match (k.trim(), v.trim()) {
                ("iface", v) if !v.is_empty() => iface = Some(PathBuf::from(v)),
                ("client", "0") => mode = VhostMode::Server,
                ("client", "1") => mode = VhostMode::Client,
                ("client", v) => return Err(Error::Invalid(format!("{name}: client={v}: expected 0 (server) or 1 (client)"))),
                ("queues", v) => {
                    queues = v
                        .parse()
                        .ok()
                        .filter(|q| (1..=MAX_QUEUES).contains(q))
                        .ok_or_else(|| Error::Invalid(format!("{name}: queues={v}: expected 1..={MAX_QUEUES}")))?;
                }
                _ => {}
            }
        }
        let iface = iface.ok_or_else(|| Error::Invalid(format!("{name}: iface=SOCKET_PATH is required for a vhost-user port")))?;
        Ok(Some(VhostArgs { iface, mode, queues }))
    }

    /// Gets the socket path ready before the device is probed. Server mode:
    /// creates the parent directory and removes a stale socket file that no
    /// process listens on (the vhost library refuses to bind over it), but
    /// never a live one or a file that is not a socket. Client mode: nothing
    /// (the socket is the VM's; DPDK retries until it appears).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the directory cannot be created, the path is a
    /// live socket (another switch serves it) or not a socket at all.
    pub fn prepare(&self) -> Result<()> {
        if self.mode == VhostMode::Client {
            return Ok(());
        }
        let p = &self.iface;
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Invalid(format!("vhost socket directory {}: {e}", dir.display())))?;
        }
        let Ok(meta) = std::fs::symlink_metadata(p) else { return Ok(()) };
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::Invalid(format!("vhost socket path {} exists and is not a socket", p.display())));
        }
        if UnixStream::connect(p).is_ok() {
            return Err(Error::Invalid(format!("vhost socket {} is served by another process", p.display())));
        }
        std::fs::remove_file(p).map_err(|e| Error::Invalid(format!("stale vhost socket {}: {e}", p.display())))
    }
}

/// Link and queue events seen on one port.
#[derive(Debug)]
struct PortEvents {
    lsc: AtomicU64,
    ups: AtomicU64,
    downs: AtomicU64,
    queue_state: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the array
const NO_EVENTS: PortEvents =
    PortEvents { lsc: AtomicU64::new(0), ups: AtomicU64::new(0), downs: AtomicU64::new(0), queue_state: AtomicU64::new(0) };
static EVENTS: [PortEvents; ffi::RTE_MAX_ETHPORTS as usize] = [NO_EVENTS; ffi::RTE_MAX_ETHPORTS as usize];

/// Counters of link-state events of a port (since the process started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkEvents {
    /// RTE_ETH_EVENT_INTR_LSC callbacks.
    pub lsc: u64,
    /// ... of which found the link up (a frontend connected).
    pub ups: u64,
    /// ... of which found the link down (the frontend went away).
    pub downs: u64,
    /// RTE_ETH_EVENT_QUEUE_STATE callbacks (vrings enabled or disabled).
    pub queue_state: u64,
}

/// Runs on DPDK's vhost event thread: counts the event, nothing else.
unsafe extern "C" fn on_event(port: u16, event: ffi::rte_eth_event_type, _arg: *mut c_void, _ret: *mut c_void) -> c_int {
    let Some(e) = EVENTS.get(port as usize) else { return 0 };
    if event == ffi::rte_eth_event_type::RTE_ETH_EVENT_INTR_LSC {
        let mut l = ffi::rte_eth_link::default();
        // SAFETY: valid out-struct; the port exists while its callbacks are registered.
        let up = unsafe { ffi::rte_eth_link_get_nowait(port, &mut l) } == 0 && l.link_status() != 0;
        if up {
            e.ups.fetch_add(1, Ordering::Relaxed);
        } else {
            e.downs.fetch_add(1, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire in `events`; ups/downs are counted first.
        e.lsc.fetch_add(1, Ordering::Release);
        // On a disconnect this waits until no lcore is inside the library
        // with the old device: the library frees it when this returns.
        refresh_vid(port);
    } else if event == ffi::rte_eth_event_type::RTE_ETH_EVENT_QUEUE_STATE {
        e.queue_state.fetch_add(1, Ordering::Relaxed);
        take_queue_events(port);
    }
    0
}

const WATCHED: [ffi::rte_eth_event_type; 2] =
    [ffi::rte_eth_event_type::RTE_ETH_EVENT_INTR_LSC, ffi::rte_eth_event_type::RTE_ETH_EVENT_QUEUE_STATE];

/// Registers the link-state and queue-state callbacks of `port`.
///
/// # Errors
/// `rte_eth_dev_callback_register` failures.
pub fn watch(port: PortNum) -> Result<()> {
    for ev in WATCHED {
        // SAFETY: `on_event` is a plain function valid for the whole process
        // and touches only static atomics; the argument is unused (NULL).
        rc("rte_eth_dev_callback_register", unsafe {
            ffi::rte_eth_dev_callback_register(port, ev, Some(on_event), std::ptr::null_mut())
        })?;
    }
    Ok(())
}

/// Removes the callbacks [`watch`] registered (before the port closes).
pub fn unwatch(port: PortNum) {
    for ev in WATCHED {
        // SAFETY: same function and argument as registered; a missing
        // registration returns -ENOENT, which is fine to ignore.
        unsafe { ffi::rte_eth_dev_callback_unregister(port, ev, Some(on_event), std::ptr::null_mut()) };
    }
}

/// Link and queue events of `port` so far.
pub fn events(port: PortNum) -> LinkEvents {
    let Some(e) = EVENTS.get(port as usize) else { return LinkEvents::default() };
    // Acquire: pairs with the Release increment in `on_event`.
    let lsc = e.lsc.load(Ordering::Acquire);
    LinkEvents {
        lsc,
        ups: e.ups.load(Ordering::Relaxed),
        downs: e.downs.load(Ordering::Relaxed),
        queue_state: e.queue_state.load(Ordering::Relaxed),
    }
}

/// Queues per port the direct path serves; higher ones go through the PMD.
pub const DIRECT_QUEUES: usize = 8;

/// One queue pair's direct-path state: whether the frontend enabled its two
/// vrings, who is inside the library, and the counters the PMD would have
/// kept (single writer: the polling lcore).
#[derive(Debug)]
#[repr(align(64))]
struct DirectQueue {
    rx_on: AtomicBool,
    tx_on: AtomicBool,
    rx_busy: AtomicBool,
    tx_busy: AtomicBool,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
}

/// The direct packet path of a vhost port: `rte_vhost_dequeue_burst` and
/// `rte_vhost_enqueue_burst` on the device the PMD attached.
///
/// ```text
///  lcore (per burst)                  vhost thread (LSC callback)
///  busy = 1          (SeqCst)         connect:    vid = PMD's vid
///  v = vid           (SeqCst)         disconnect: vid = -1       (SeqCst)
///  v >= 0: dequeue/enqueue(v, ...)                wait until busy == 0
///  busy = 0          (Release)                    (then the library frees it)
/// ```
/// Either the lcore sees -1, or the callback sees it busy and waits: a
/// device is never used after its destroy callback returns. The same
/// handshake the PMD runs on its own queues (`allow_queuing`).
#[derive(Debug)]
pub struct Direct {
    on: AtomicBool,
    vid: AtomicI32,
    pool: AtomicPtr<ffi::rte_mempool>,
    q: [DirectQueue; DIRECT_QUEUES],
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the arrays
const NO_QUEUE: DirectQueue = DirectQueue {
    rx_on: AtomicBool::new(false),
    tx_on: AtomicBool::new(false),
    rx_busy: AtomicBool::new(false),
    tx_busy: AtomicBool::new(false),
    rx_packets: AtomicU64::new(0),
    rx_bytes: AtomicU64::new(0),
    tx_packets: AtomicU64::new(0),
    tx_bytes: AtomicU64::new(0),
    tx_dropped: AtomicU64::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const NO_DIRECT: Direct =
    Direct { on: AtomicBool::new(false), vid: AtomicI32::new(-1), pool: AtomicPtr::new(std::ptr::null_mut()), q: [NO_QUEUE; DIRECT_QUEUES] };
static DIRECT: [Direct; ffi::RTE_MAX_ETHPORTS as usize] = [NO_DIRECT; ffi::RTE_MAX_ETHPORTS as usize];
/// Serialises vid updates (callback thread, port start and stop).
static DIRECT_LOCK: Mutex<()> = Mutex::new(());

/// Takes the PMD's current device id for `port`, and on a disconnect waits
/// until no lcore is still inside the library with the old one (whose vrings
/// are all gone then).
fn refresh_vid(port: PortNum) {
    let Some(d) = DIRECT.get(port as usize) else { return };
    let _g = DIRECT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: plain lookup under the PMD's own lock; -1 when detached.
    let vid = unsafe { ffi::rte_eth_vhost_get_vid_from_port_id(port) };
    d.vid.store(vid, Ordering::SeqCst);
    if vid < 0 {
        d.wait_idle();
        for q in &d.q {
            q.rx_on.store(false, Ordering::Relaxed);
            q.tx_on.store(false, Ordering::Relaxed);
        }
    }
}

/// Takes the vring enables and disables the PMD recorded for `port` (its
/// queue events; nothing else here reads them). The PMD polls only enabled
/// vrings, and so does the direct path: the library logs an error for every
/// call on a vring the frontend never set up (a 2-queue port, a 1-queue VM).
fn take_queue_events(port: PortNum) {
    let Some(d) = DIRECT.get(port as usize) else { return };
    let _g = DIRECT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let mut ev = ffi::rte_eth_vhost_queue_event { queue_id: 0, rx: false, enable: false };
        // SAFETY: valid out-struct; -1 when no event is left (or not a vhost port).
        if unsafe { ffi::rte_eth_vhost_get_queue_event(port, &mut ev) } != 0 {
            break;
        }
        if let Some(q) = d.q.get(ev.queue_id as usize) {
            // The guest's tx vring is this side's rx queue.
            if ev.rx {
                q.rx_on.store(ev.enable, Ordering::Relaxed);
            } else {
                q.tx_on.store(ev.enable, Ordering::Relaxed);
            }
        }
    }
}

impl Direct {
    /// The direct path of `port` queue `queue`, when it serves it.
    #[inline(always)]
    pub fn of(port: u16, queue: u16) -> Option<&'static Direct> {
        let d = DIRECT.get(port as usize)?;
        // Acquire: pairs with the Release in `direct_on` (pool and vid first).
        (d.on.load(Ordering::Acquire) && (queue as usize) < DIRECT_QUEUES).then_some(d)
    }

    fn wait_idle(&self) {
        for q in &self.q {
            while q.rx_busy.load(Ordering::SeqCst) || q.tx_busy.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }
    }

    /// Dequeues up to `pkts.len()` packets the guest sent on queue pair
    /// `queue` into `pkts`; returns how many.
    ///
    /// # Safety
    /// `queue < DIRECT_QUEUES`, polled by this thread only; `pkts` has room.
    #[inline(always)]
    pub unsafe fn rx(&self, queue: u16, pkts: &mut [*mut ffi::rte_mbuf]) -> usize {
        let q = &self.q[queue as usize];
        if !q.rx_on.load(Ordering::Relaxed) {
            return 0;
        }
        q.rx_busy.store(true, Ordering::SeqCst);
        let vid = self.vid.load(Ordering::SeqCst);
        let n = if vid < 0 {
            0
        } else {
            // SAFETY: the device stays alive while rx_busy is set (see the
            // type's handshake); the pool is the queue's, set at start.
            unsafe {
                ffi::rte_vhost_dequeue_burst(vid, queue * 2 + 1, self.pool.load(Ordering::Relaxed), pkts.as_mut_ptr(), pkts.len() as u16)
            }
        } as usize;
        q.rx_busy.store(false, Ordering::Release);
        // The mbufs' `port` stays as the library left it: nothing here reads
        // it, and storing it cost ~9 cycles per packet in `bench vhost`.
        // SAFETY: freshly dequeued mbufs, owned by the caller now.
        let bytes: u64 = pkts[..n].iter().map(|&m| u64::from(unsafe { (*m).pkt_len })).sum();
        bump(&q.rx_packets, n as u64);
        bump(&q.rx_bytes, bytes);
        n
    }

    /// Enqueues `pkts` to the guest on queue pair `queue` (the library copies
    /// them) and frees them all; returns how many the guest got.
    ///
    /// # Safety
    /// `queue < DIRECT_QUEUES`, used by this thread only; `pkts` are owned
    /// mbufs, gone afterwards.
    #[inline(always)]
    pub unsafe fn tx(&self, queue: u16, pkts: &mut [*mut ffi::rte_mbuf]) -> usize {
        let q = &self.q[queue as usize];
        q.tx_busy.store(true, Ordering::SeqCst);
        let vid = self.vid.load(Ordering::SeqCst);
        let sent = if vid < 0 || !q.tx_on.load(Ordering::Relaxed) {
            0
        } else {
            // SAFETY: as in `rx`; the library only reads the mbufs.
            unsafe { ffi::rte_vhost_enqueue_burst(vid, queue * 2, pkts.as_mut_ptr(), pkts.len() as u16) }
        } as usize;
        q.tx_busy.store(false, Ordering::Release);
        // SAFETY: owned mbufs (caller's contract).
        let bytes: u64 = pkts[..sent].iter().map(|&m| u64::from(unsafe { (*m).pkt_len })).sum();
        bump(&q.tx_packets, sent as u64);
        bump(&q.tx_bytes, bytes);
        if sent < pkts.len() {
            bump(&q.tx_dropped, (pkts.len() - sent) as u64);
        }
        // SAFETY: copied or dropped, every one is still ours to free.
        unsafe { crate::mbuf::free_bulk(pkts) };
        sent
    }
}

/// What [`direct_reset`] saw last, per port (the counters have one writer,
/// the lcore, so a reset moves this base instead).
static DIRECT_BASE: Mutex<[[u64; 5]; ffi::RTE_MAX_ETHPORTS as usize]> = Mutex::new([[0; 5]; ffi::RTE_MAX_ETHPORTS as usize]);

fn direct_raw(port: PortNum) -> [u64; 5] {
    let mut c = [0u64; 5];
    if let Some(d) = DIRECT.get(port as usize) {
        for q in &d.q {
            for (v, a) in c.iter_mut().zip([&q.rx_packets, &q.rx_bytes, &q.tx_packets, &q.tx_bytes, &q.tx_dropped]) {
                *v += a.load(Ordering::Relaxed);
            }
        }
    }
    c
}

/// Counters of a port's direct path since the last [`direct_reset`]: rx
/// packets, rx bytes, tx packets, tx bytes, tx dropped (the guest's ring was
/// full or nothing was connected).
pub fn direct_counts(port: PortNum) -> [u64; 5] {
    let base = DIRECT_BASE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let b = base.get(port as usize).copied().unwrap_or_default();
    let mut c = direct_raw(port);
    for (v, b) in c.iter_mut().zip(b) {
        *v = v.wrapping_sub(b);
    }
    c
}

/// Zeroes what [`direct_counts`] reports for `port`.
pub fn direct_reset(port: PortNum) {
    let mut base = DIRECT_BASE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(b) = base.get_mut(port as usize) {
        *b = direct_raw(port);
    }
}

/// Turns the direct path of a started vhost port on, with rx buffers from `pool`.
pub(crate) fn direct_on(port: PortNum, pool: *mut ffi::rte_mempool) {
    let Some(d) = DIRECT.get(port as usize) else { return };
    d.pool.store(pool, Ordering::Relaxed);
    refresh_vid(port);
    take_queue_events(port);
    d.on.store(true, Ordering::Release);
}

/// Turns it off (the port stops): later bursts go to the PMD, which neither
/// receives nor sends on a stopped port.
pub(crate) fn direct_off(port: PortNum) {
    let Some(d) = DIRECT.get(port as usize) else { return };
    let _g = DIRECT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    d.on.store(false, Ordering::SeqCst);
    d.wait_idle();
}

/// What the vhost library knows of a port's frontend right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostConn {
    /// The vhost device id (None: no frontend connected).
    pub vid: Option<i32>,
    /// virtio feature bits the frontend and the backend agreed on.
    pub features: u64,
    /// vrings the frontend set up (2 per queue pair).
    pub vrings: u16,
}

/// The connection of vhost port `port` (None when nothing is connected).
pub fn connection(port: PortNum) -> VhostConn {
    // SAFETY: plain lookup; a non-vhost or unconnected port gives -1.
    let vid = unsafe { ffi::rte_eth_vhost_get_vid_from_port_id(port) };
    if vid < 0 {
        return VhostConn { vid: None, features: 0, vrings: 0 };
    }
    let mut features = 0u64;
    // SAFETY: valid out-pointer; an invalid vid returns -1 and leaves it 0.
    if unsafe { ffi::rte_vhost_get_negotiated_features(vid, &mut features) } != 0 {
        features = 0;
    }
    // SAFETY: plain query; 0 for an invalid vid.
    let vrings = unsafe { ffi::rte_vhost_get_vring_num(vid) };
    VhostConn { vid: Some(vid), features, vrings }
}

/// The socket path the vhost library registered for `vid` (diagnostics).
pub fn ifname(vid: i32) -> Option<String> {
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: `buf` is writable for its length; the library NUL-terminates.
    if unsafe { ffi::rte_vhost_get_ifname(vid, buf.as_mut_ptr(), buf.len()) } != 0 {
        return None;
    }
    // SAFETY: NUL-terminated within `buf` on success.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// virtio-net / vhost-user feature bits and their spec names.
const FEATURES: &[(u32, &str)] = &[
    (0, "CSUM"),
    (1, "GUEST_CSUM"),
    (2, "CTRL_GUEST_OFFLOADS"),
    (3, "MTU"),
    (5, "MAC"),
    (7, "GUEST_TSO4"),
    (8, "GUEST_TSO6"),
    (9, "GUEST_ECN"),
    (10, "GUEST_UFO"),
    (11, "HOST_TSO4"),
    (12, "HOST_TSO6"),
    (13, "HOST_ECN"),
    (14, "HOST_UFO"),
    (15, "MRG_RXBUF"),
    (16, "STATUS"),
    (17, "CTRL_VQ"),
    (18, "CTRL_RX"),
    (19, "CTRL_VLAN"),
    (20, "CTRL_RX_EXTRA"),
    (21, "GUEST_ANNOUNCE"),
    (22, "MQ"),
    (23, "CTRL_MAC_ADDR"),
    (24, "NOTIFY_ON_EMPTY"),
    (26, "LOG_ALL"),
    (27, "ANY_LAYOUT"),
    (28, "RING_INDIRECT_DESC"),
    (29, "RING_EVENT_IDX"),
    (30, "PROTOCOL_FEATURES"),
    (32, "VERSION_1"),
    (33, "ACCESS_PLATFORM"),
    (34, "RING_PACKED"),
    (35, "IN_ORDER"),
    (36, "ORDER_PLATFORM"),
    (37, "SR_IOV"),
    (38, "NOTIFICATION_DATA"),
    (63, "RSC_EXT"),
];

/// Names of the set feature bits (`BIT<n>` for bits without a name).
pub fn feature_names(bits: u64) -> Vec<String> {
    (0..64)
        .filter(|b| bits & (1u64 << b) != 0)
        .map(|b| FEATURES.iter().find(|(n, _)| *n == b).map_or_else(|| format!("BIT{b}"), |(_, s)| (*s).to_string()))
        .collect()
}

/// True when `path` is a socket someone accepts connections on.
pub fn socket_is_live(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_queues() {
        let a = VhostArgs::parse("net_vhost0,iface=/tmp/a.sock").unwrap().unwrap();
        assert_eq!(a, VhostArgs { iface: "/tmp/a.sock".into(), mode: VhostMode::Server, queues: 1 });
        let b = VhostArgs::parse("net_vhost1, iface=/tmp/b.sock ,client=1,queues=2").unwrap().unwrap();
        assert_eq!((b.mode, b.queues), (VhostMode::Client, 2));
        assert_eq!(VhostArgs::parse("net_null0").unwrap(), None);
    }

    #[test]
    fn rejects_bad_vhost_devargs() {
        for (d, needle) in [
            ("net_vhost0", "iface"),
            ("net_vhost0,iface=/x,client=2", "client=2"),
            ("net_vhost0,iface=/x,queues=0", "queues=0"),
            ("net_vhost0,iface=/x,queues=many", "queues=many"),
        ] {
            let e = VhostArgs::parse(d).unwrap_err().to_string();
            assert!(e.contains(needle), "{d}: {e}");
        }
    }

    #[test]
    fn feature_bits_have_names() {
        let n = feature_names((1 << 15) | (1 << 32) | (1 << 22) | (1 << 4));
        assert_eq!(n, vec!["BIT4", "MRG_RXBUF", "MQ", "VERSION_1"]);
    }

    #[test]
    fn prepare_removes_only_stale_sockets() {
        let d = std::env::temp_dir().join(format!("bh-vhost-prep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let sock = d.join("sub/vm.sock");
        let a = VhostArgs { iface: sock.clone(), mode: VhostMode::Server, queues: 1 };
        a.prepare().unwrap();
        assert!(sock.parent().unwrap().is_dir(), "parent directory created");
        // A live listener is refused, a dead one is removed.
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(a.prepare().unwrap_err().to_string().contains("another process"));
        drop(l);
        assert!(sock.exists());
        a.prepare().unwrap();
        assert!(!sock.exists(), "stale socket removed");
        std::fs::write(&sock, b"x").unwrap();
        assert!(a.prepare().unwrap_err().to_string().contains("not a socket"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
