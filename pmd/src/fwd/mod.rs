//! testpmd-style forwarding: streams (rx port/queue -> tx port/queue) mapped
//! to forwarding lcores, one poll loop per lcore, and the engines io, mac,
//! macswap, rxonly, txonly and flowgen (one file each).
//!
//! The poll loop is generic over a [`BurstHandler`], so each engine (and later
//! the policy pipeline) is monomorphised into its own loop: no dynamic call
//! per burst. Counters are per stream and per lcore, written only by the
//! owning lcore (Relaxed load + store, no atomic RMW) and read by control.

mod flowgen;
mod io;
mod mac;
mod macswap;
mod rxonly;
mod txonly;

pub use flowgen::FlowGen;
pub use io::Io;
pub use mac::Mac;
pub use macswap::MacSwap;
pub use rxonly::RxOnly;
pub use txonly::TxOnly;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::burst::{Burst, BURST};
use crate::error::{Error, PortNum, Result};
use crate::lcore;
use crate::mempool::Mempool;

/// Forwarding modes, named as in testpmd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FwdMode {
    /// Forward packets untouched.
    Io,
    /// Rewrite source MAC (tx port's) and destination MAC (peer's).
    Mac,
    /// Swap source and destination MAC.
    MacSwap,
    /// Receive and free.
    RxOnly,
    /// Generate fixed UDP packets, ignore rx.
    TxOnly,
    /// Generate UDP packets over many flows (varying addresses).
    FlowGen,
}

impl FwdMode {
    /// All modes, for help texts and completion.
    pub const ALL: [FwdMode; 6] =
        [FwdMode::Io, FwdMode::Mac, FwdMode::MacSwap, FwdMode::RxOnly, FwdMode::TxOnly, FwdMode::FlowGen];

    /// testpmd's name.
    pub fn name(self) -> &'static str {
        match self {
            FwdMode::Io => "io",
            FwdMode::Mac => "mac",
            FwdMode::MacSwap => "macswap",
            FwdMode::RxOnly => "rxonly",
            FwdMode::TxOnly => "txonly",
            FwdMode::FlowGen => "flowgen",
        }
    }
}

impl std::fmt::Display for FwdMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FwdMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<FwdMode> {
        FwdMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::Invalid(format!("unknown forwarding mode '{s}' (io, mac, macswap, rxonly, txonly, flowgen)")))
    }
}

/// What a handler knows about the stream it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCtx {
    /// Receive port.
    pub rx_port: PortNum,
    /// Receive queue.
    pub rx_queue: u16,
    /// Transmit port.
    pub tx_port: PortNum,
    /// Transmit queue.
    pub tx_queue: u16,
    /// MAC address of the tx port (source MAC in mac mode).
    pub tx_mac: [u8; 6],
    /// Peer MAC for the tx port (destination MAC in mac mode), testpmd's
    /// default `02:00:00:00:00:<tx port>`.
    pub peer_mac: [u8; 6],
}

/// A packet-processing stage run on every burst of a stream.
///
/// Contract: on entry `burst` holds the packets just received on
/// `ctx.rx_port/rx_queue` (or is empty when [`BurstHandler::receives`] is
/// false). On return, the packets left in `burst` are sent on
/// `ctx.tx_port/tx_queue` by the poll loop, which frees and counts whatever
/// the driver does not take. Packets the handler removes it must free
/// (e.g. [`Burst::retain`]); it returns how many of those were drops.
pub trait BurstHandler: Send {
    /// Whether the loop calls rx_burst before `handle` (false for generators).
    fn receives(&self) -> bool {
        true
    }
    /// Process one burst; return packets dropped on purpose.
    fn handle(&mut self, ctx: &StreamCtx, burst: &mut Burst) -> usize;
}

/// Counters of one stream, written by its lcore only.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct StreamCounters {
    /// Packets received.
    pub rx_packets: AtomicU64,
    /// Packets handed to and accepted by tx_burst.
    pub tx_packets: AtomicU64,
    /// Packets tx_burst did not take (freed by the loop).
    pub tx_dropped: AtomicU64,
    /// Packets the handler dropped on purpose.
    pub fwd_dropped: AtomicU64,
    /// TSC cycles spent in bursts that did work.
    pub busy_cycles: AtomicU64,
}

/// Counters of one forwarding lcore.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LcoreCounters {
    /// Poll iterations over all its streams.
    pub loops: AtomicU64,
    /// TSC cycles in bursts that did work.
    pub busy_cycles: AtomicU64,
    /// TSC cycles from loop start to loop end (set when it stops; live value
    /// is updated once per 1024 loops).
    pub total_cycles: AtomicU64,
}

#[inline(always)]
fn bump(c: &AtomicU64, v: u64) {
    // Single writer: a plain load + store is enough; readers see a recent value.
    c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// A snapshot of stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Unsent packets freed after tx_burst.
    pub tx_dropped: u64,
    /// Handler drops.
    pub fwd_dropped: u64,
    /// Busy TSC cycles.
    pub busy_cycles: u64,
}

impl StreamCounters {
    /// Read a snapshot.
    pub fn snapshot(&self) -> StreamStats {
        StreamStats {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_dropped: self.tx_dropped.load(Ordering::Relaxed),
            fwd_dropped: self.fwd_dropped.load(Ordering::Relaxed),
            busy_cycles: self.busy_cycles.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for StreamStats {
    type Output = StreamStats;
    fn sub(self, o: StreamStats) -> StreamStats {
        StreamStats {
            rx_packets: self.rx_packets.wrapping_sub(o.rx_packets),
            tx_packets: self.tx_packets.wrapping_sub(o.tx_packets),
            tx_dropped: self.tx_dropped.wrapping_sub(o.tx_dropped),
            fwd_dropped: self.fwd_dropped.wrapping_sub(o.fwd_dropped),
            busy_cycles: self.busy_cycles.wrapping_sub(o.busy_cycles),
        }
    }
}

impl std::ops::AddAssign for StreamStats {
    fn add_assign(&mut self, o: StreamStats) {
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
        self.tx_dropped += o.tx_dropped;
        self.fwd_dropped += o.fwd_dropped;
        self.busy_cycles += o.busy_cycles;
    }
}

/// A stream with its counters.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Where it reads and writes.
    pub ctx: StreamCtx,
    /// Its counters (shared with control for reading).
    pub counters: Arc<StreamCounters>,
}

/// A port as the stream builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdPort {
    /// Port id.
    pub id: PortNum,
    /// rx queues.
    pub rxq: u16,
    /// tx queues.
    pub txq: u16,
    /// The port's MAC.
    pub mac: [u8; 6],
}

/// testpmd's default peer address for port `p`: 02:00:00:00:00:pp.
pub fn default_peer_mac(p: PortNum) -> [u8; 6] {
    [2, 0, 0, 0, 0, p as u8]
}

/// Build streams like testpmd's paired topology: port 2k forwards to 2k+1 and
/// back; an odd last port forwards to itself. One stream per rx queue; the tx
/// queue is the rx queue modulo the tx port's queue count.
pub fn build_streams(ports: &[FwdPort]) -> Vec<Stream> {
    let mut v = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let peer = if i % 2 == 0 { ports.get(i + 1).unwrap_or(p) } else { &ports[i - 1] };
        for q in 0..p.rxq {
            v.push(Stream {
                ctx: StreamCtx {
                    rx_port: p.id,
                    rx_queue: q,
                    tx_port: peer.id,
                    tx_queue: q % peer.txq.max(1),
                    tx_mac: peer.mac,
                    peer_mac: default_peer_mac(peer.id),
                },
                counters: Arc::default(),
            });
        }
    }
    v
}

/// Split `n_streams` over at most `n_lcores` lcores in contiguous blocks (as
/// testpmd does); returns one index range per lcore that has streams.
pub fn assign(n_streams: usize, n_lcores: usize) -> Vec<std::ops::Range<usize>> {
    let n_lcores = n_lcores.min(n_streams).max(1);
    let base = n_streams / n_lcores;
    let extra = n_streams % n_lcores;
    let mut out = Vec::with_capacity(n_lcores);
    let mut s = 0;
    for i in 0..n_lcores {
        let len = base + usize::from(i < extra);
        out.push(s..s + len);
        s += len;
    }
    out
}

/// The poll loop: for each stream, rx -> handler -> tx, until `stop` is set.
/// Generic over the handler so it is inlined per engine.
///
/// Runs on the calling thread, which must be the only one polling these
/// queues.
/// `RECORD` turns per-burst busy-cycle accounting on (two TSC reads per
/// productive burst and one per empty poll, as testpmd's
/// `--record-core-cycles`; about 35 cycles each on our VMs).
pub fn poll_loop<H: BurstHandler, const RECORD: bool>(
    streams: &[Stream],
    handler: &mut H,
    burst_size: u16,
    stop: &AtomicBool,
    lc: &LcoreCounters,
) {
    let burst_size = burst_size.clamp(1, BURST as u16);
    let mut burst = Burst::new();
    let receives = handler.receives();
    let start = lcore::rdtsc();
    let mut loops: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for s in streams {
            let t0 = if RECORD { lcore::rdtsc() } else { 0 };
            let n_rx = if receives {
                // SAFETY: each (port, queue) belongs to exactly one stream and
                // each stream to one lcore (assign()), so this thread is the
                // only poller; ports are started before loops launch and
                // stopped only after they end.
                let n = unsafe { burst.rx_inline(s.ctx.rx_port, s.ctx.rx_queue, burst_size) };
                if n == 0 {
                    continue;
                }
                n
            } else {
                0
            };
            let dropped = handler.handle(&s.ctx, &mut burst);
            // SAFETY: as above for the tx queue (one writer per tx queue).
            let (sent, unsent) = unsafe { burst.tx_inline(s.ctx.tx_port, s.ctx.tx_queue) };
            let c = &s.counters;
            if n_rx != 0 {
                bump(&c.rx_packets, n_rx as u64);
            }
            bump(&c.tx_packets, sent as u64);
            if unsent != 0 {
                bump(&c.tx_dropped, unsent as u64);
            }
            if dropped != 0 {
                bump(&c.fwd_dropped, dropped as u64);
            }
            if RECORD {
                let dt = lcore::rdtsc().wrapping_sub(t0);
                bump(&c.busy_cycles, dt);
                bump(&lc.busy_cycles, dt);
            }
        }
        loops += 1;
        if loops & 1023 == 0 {
            lc.loops.store(loops, Ordering::Relaxed);
            lc.total_cycles.store(lcore::rdtsc().wrapping_sub(start), Ordering::Relaxed);
        }
    }
    lc.loops.store(loops, Ordering::Relaxed);
    lc.total_cycles.store(lcore::rdtsc().wrapping_sub(start), Ordering::Relaxed);
}

/// Run the engine for `mode` over `streams` on the calling thread until
/// `stop` is set. `pool` feeds the generators (txonly, flowgen).
pub fn run_mode(
    mode: FwdMode,
    streams: &[Stream],
    burst_size: u16,
    pool: &Arc<Mempool>,
    opts: &EngineOpts,
    stop: &AtomicBool,
    lc: &LcoreCounters,
) {
    if opts.record_cycles {
        run_mode_impl::<true>(mode, streams, burst_size, pool, opts, stop, lc)
    } else {
        run_mode_impl::<false>(mode, streams, burst_size, pool, opts, stop, lc)
    }
}

fn run_mode_impl<const R: bool>(
    mode: FwdMode,
    streams: &[Stream],
    bs: u16,
    pool: &Arc<Mempool>,
    opts: &EngineOpts,
    stop: &AtomicBool,
    lc: &LcoreCounters,
) {
    match mode {
        FwdMode::Io => poll_loop::<_, R>(streams, &mut Io, bs, stop, lc),
        FwdMode::Mac => poll_loop::<_, R>(streams, &mut Mac, bs, stop, lc),
        FwdMode::MacSwap => poll_loop::<_, R>(streams, &mut MacSwap, bs, stop, lc),
        FwdMode::RxOnly => poll_loop::<_, R>(streams, &mut RxOnly, bs, stop, lc),
        FwdMode::TxOnly => poll_loop::<_, R>(streams, &mut TxOnly::new(pool.clone(), bs, opts.pkt_len), bs, stop, lc),
        FwdMode::FlowGen => {
            poll_loop::<_, R>(streams, &mut FlowGen::new(pool.clone(), bs, opts.pkt_len, opts.flows), bs, stop, lc)
        }
    }
}

/// Options of the generating engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOpts {
    /// Frame length without FCS (txonly/flowgen), testpmd default 64.
    pub pkt_len: u16,
    /// Distinct flows for flowgen (testpmd default 1024).
    pub flows: u32,
    /// Count busy TSC cycles per burst (testpmd's `--record-core-cycles`).
    pub record_cycles: bool,
}

impl Default for EngineOpts {
    fn default() -> Self {
        Self { pkt_len: 64, flows: 1024, record_cycles: true }
    }
}

/// Forwarding running on worker lcores.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    lcores: Vec<u32>,
    /// Per-lcore counters, in `lcores` order.
    pub lcore_counters: Vec<Arc<LcoreCounters>>,
}

impl Running {
    /// Launch `mode` on `lcores` (worker lcores), streams split in blocks.
    ///
    /// # Errors
    /// When there are no streams or an lcore cannot be launched (already
    /// launched ones are stopped first).
    pub fn launch(
        mode: FwdMode,
        streams: &[Stream],
        lcores: &[u32],
        burst_size: u16,
        pool: Arc<Mempool>,
        opts: EngineOpts,
    ) -> Result<Running> {
        if streams.is_empty() {
            return Err(Error::Invalid("no forwarding streams (no ports started?)".into()));
        }
        if lcores.is_empty() {
            return Err(Error::Invalid("no forwarding lcores: give EAL at least two lcores".into()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Running { stop: stop.clone(), lcores: Vec::new(), lcore_counters: Vec::new() };
        for (lc, range) in lcores.iter().zip(assign(streams.len(), lcores.len())) {
            let mine: Vec<Stream> = streams[range].to_vec();
            let counters = Arc::new(LcoreCounters::default());
            let (stop, pool, c) = (stop.clone(), pool.clone(), counters.clone());
            lcore::launch(*lc, move || {
                run_mode(mode, &mine, burst_size, &pool, &opts, &stop, &c);
                0
            })?;
            run.lcores.push(*lc);
            run.lcore_counters.push(counters);
        }
        Ok(run)
    }

    /// The lcores in use.
    pub fn lcores(&self) -> &[u32] {
        &self.lcores
    }

    /// Stop every loop and wait for the lcores.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for lc in self.lcores.drain(..) {
            lcore::wait(lc);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}
