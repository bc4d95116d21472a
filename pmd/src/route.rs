//! Per-packet output ports: the poll loop of a switch, where each packet of a
//! burst goes to the port its handler chose (or is dropped), and transmits
//! are batched per output port.
//!
//! ```text
//! for each rx queue of this lcore:
//!     rx_burst(32) -> RouteHandler::handle -> dest[i] per packet
//!     route(): packet i moves to outs[dest[i]] (or is freed if DROP)
//!     tx_burst once per output with packets; unsent mbufs freed and counted
//! ```
//! Contract: the handler decides `dest[..burst.len()]` and may rewrite packet
//! bytes in place (`Burst::data_mut`). It never frees or keeps mbufs; the loop
//! owns them. No allocation inside the loop: the output bursts are made once.

use crate::burst::{Burst, BURST};
use crate::lcore;
use crate::mbuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `dest` value for a packet to free.
pub const DROP: u8 = u8::MAX;

/// Where a packet can go: a port and the tx queue this lcore owns on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// Port id.
    pub port: u16,
    /// Tx queue (one writer: this lcore).
    pub queue: u16,
}

/// An rx queue this lcore polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxQueue {
    /// Port id.
    pub port: u16,
    /// Queue id.
    pub queue: u16,
}

/// Decides each packet's output.
pub trait RouteHandler: Send {
    /// Called once per poll-loop iteration, before any rx (load the current
    /// rule snapshot, read the clock, ...).
    fn begin(&mut self) {}
    /// Sets `dest[i]` for each of the `burst.len()` packets received on `rx`:
    /// an index into the loop's outputs, or [`DROP`]. `now` is the TSC the
    /// loop read last, at most eight bursts handled (about 2,000 packets
    /// at 64 bytes: microseconds) before the call: a clock for timeouts and
    /// records without a TSC read of the handler's own (see the busy clock
    /// in [`route_loop`] for their cost).
    fn handle(&mut self, rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], now: u64);
    /// Called when the loop is idle (no packet on any queue this iteration).
    fn idle(&mut self) {}
}

/// Counters of one routing lcore. Single writer (the lcore); read by anyone.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RouteStats {
    /// Packets received.
    pub rx_packets: AtomicU64,
    /// Packets transmitted.
    pub tx_packets: AtomicU64,
    /// Packets the driver did not take on tx (freed).
    pub tx_dropped: AtomicU64,
    /// Packets the handler dropped.
    pub dropped: AtomicU64,
    /// TSC cycles spent in iterations that received packets.
    pub busy_cycles: AtomicU64,
    /// TSC cycles since the loop started.
    pub total_cycles: AtomicU64,
    /// Loop iterations.
    pub loops: AtomicU64,
}

/// Adds `v` to a counter with a single writer (the lcore): load + store, no
/// locked instruction; readers see a recent value.
#[inline(always)]
pub(crate) fn bump(c: &AtomicU64, v: u64) {
    // Single writer: load + store; readers see a recent value.
    c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// Moves packet `i` of `burst` to `outs[dest[i]]` and frees those marked
/// [`DROP`] (or pointing past `outs`, a handler bug, counted as a drop).
/// `burst` is empty afterwards. Returns the number freed.
///
/// Each output receives at most `burst.len()` packets, so an output with room
/// for [`BURST`] never overflows when it is flushed after every route.
pub fn route(burst: &mut Burst, dest: &[u8; BURST], outs: &mut [Burst]) -> usize {
    let mut freed = [core::ptr::null_mut(); BURST];
    let mut nf = 0;
    // SAFETY: we take the burst's first `len` owned pointers and set its length
    // to 0, so ownership moves to the outputs or the free list exactly once.
    let (pkts, len) = unsafe { burst.raw_parts_mut() };
    let n = *len;
    *len = 0;
    // The common case, one destination for the whole burst (a VM pair, one
    // uplink): one copy and one length update. Packet by packet, each output
    // length increment waits on the previous one's store (perf: 6.6 % of a
    // policy lcore's loop at one flow).
    // (Or-reduced without an early exit, the check is vectorised; `all`
    // compared byte by byte.)
    if n > 0 && dest[..n].iter().fold(0, |acc, &d| acc | (d ^ dest[0])) == 0 {
        let (moved, rest) = match outs.get_mut(dest[0] as usize) {
            Some(o) => {
                // SAFETY: the pointers are owned and valid; they move into `o`.
                let (op, olen) = unsafe { o.raw_parts_mut() };
                let k = n.min(BURST - *olen);
                op[*olen..*olen + k].copy_from_slice(&pkts[..k]);
                *olen += k;
                (k, n - k)
            }
            None => (0, n),
        };
        // SAFETY: the pointers not moved are owned and referenced nowhere else.
        unsafe { mbuf::free_bulk(&mut pkts[moved..n]) };
        return rest;
    }
    for i in 0..n {
        let p = pkts[i];
        let d = dest[i] as usize;
        match outs.get_mut(d) {
            Some(o) => {
                // SAFETY: `p` is an owned valid mbuf moving into `o`.
                let (op, olen) = unsafe { o.raw_parts_mut() };
                if *olen < BURST {
                    op[*olen] = p;
                    *olen += 1;
                } else {
                    freed[nf] = p;
                    nf += 1;
                }
            }
            None => {
                freed[nf] = p;
                nf += 1;
            }
        }
    }
    // SAFETY: the freed pointers are owned and referenced nowhere else.
    unsafe { mbuf::free_bulk(&mut freed[..nf]) };
    nf
}

/// The routing poll loop. Runs on the calling thread until `stop` is set.
///
/// # Safety
/// The calling thread must be the only one polling the rx queues in `rxqs` and
/// the only one transmitting on the tx queues in `outs`; the ports must stay
/// started until the loop returns.
pub unsafe fn route_loop<H: RouteHandler>(
    rxqs: &[RxQueue],
    outputs: &[Output],
    handler: &mut H,
    burst_size: u16,
    stop: &AtomicBool,
    st: &RouteStats,
) {
    let burst_size = burst_size.clamp(1, BURST as u16);
    let mut outs: Vec<Burst> = outputs.iter().map(|_| Burst::new()).collect();
    let mut burst = Burst::new();
    let mut dest = [DROP; BURST];
    let start = lcore::rdtsc();
    let mut loops: u64 = 0;
    // The busy clock: one TSC read per `TSC_EVERY` bursts handled (rdtsc
    // costs ~24-40 cycles in a VM; read after every burst, it took ~1.3
    // cycles a packet at one flow, perf). The time since the previous
    // checkpoint counts as busy, so the empty polls and loop overhead of
    // busy iterations count as busy. An idle iteration closes the bursts
    // still pending (its own empty poll counted with them), and the next
    // iteration moves the checkpoint.
    const TSC_EVERY: u32 = 8;
    let mut mark = start;
    let mut pending = 0u32;
    let mut busy = false;
    while !stop.load(Ordering::Relaxed) {
        handler.begin();
        if !busy {
            mark = lcore::rdtsc();
        }
        let mut any = false;
        for &rx in rxqs {
            // SAFETY: the caller guarantees this thread alone polls `rx`.
            let n = unsafe { burst.rx(rx.port, rx.queue, burst_size) };
            if n == 0 {
                continue;
            }
            any = true;
            handler.handle(rx, &mut burst, &mut dest, mark);
            let freed = route(&mut burst, &dest, &mut outs);
            let (mut sent, mut unsent) = (0, 0);
            for (o, out) in outs.iter_mut().zip(outputs) {
                if !o.is_empty() {
                    // SAFETY: the caller guarantees this thread alone uses the tx queue.
                    let (s, u) = unsafe { o.tx(out.port, out.queue) };
                    sent += s;
                    unsent += u;
                }
            }
            bump(&st.rx_packets, n as u64);
            bump(&st.tx_packets, sent as u64);
            if unsent != 0 {
                bump(&st.tx_dropped, unsent as u64);
            }
            if freed != 0 {
                bump(&st.dropped, freed as u64);
            }
            pending += 1;
            if pending == TSC_EVERY {
                let t = lcore::rdtsc();
                bump(&st.busy_cycles, t.wrapping_sub(mark));
                (mark, pending) = (t, 0);
            }
        }
        busy = any;
        if !any {
            if pending != 0 {
                bump(&st.busy_cycles, lcore::rdtsc().wrapping_sub(mark));
                pending = 0;
            }
            handler.idle();
        }
        loops += 1;
        if loops & 1023 == 0 {
            st.loops.store(loops, Ordering::Relaxed);
            st.total_cycles.store(lcore::rdtsc().wrapping_sub(start), Ordering::Relaxed);
        }
    }
    let end = lcore::rdtsc();
    if pending != 0 {
        bump(&st.busy_cycles, end.wrapping_sub(mark));
    }
    st.loops.store(loops, Ordering::Relaxed);
    st.total_cycles.store(end.wrapping_sub(start), Ordering::Relaxed);
}

/// Exclusive use of some rx and tx queues by one routing loop, checked at run
/// time: a queue can be claimed by one [`Claim`] at a time in this process.
/// Dropping the claim releases its queues.
#[derive(Debug)]
pub struct Claim {
    rxqs: Vec<RxQueue>,
    outputs: Vec<Output>,
}

static CLAIMED: std::sync::Mutex<Vec<(u16, u16, bool)>> = std::sync::Mutex::new(Vec::new());

impl Claim {
    /// Claims `rxqs` for polling and `outputs` for transmitting.
    ///
    /// # Errors
    /// [`crate::Error::QueueBusy`] naming the first queue another claim holds.
    pub fn new(rxqs: &[RxQueue], outputs: &[Output]) -> crate::Result<Claim> {
        let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        let want: Vec<(u16, u16, bool)> =
            rxqs.iter().map(|r| (r.port, r.queue, true)).chain(outputs.iter().map(|o| (o.port, o.queue, false))).collect();
        for (i, w) in want.iter().enumerate() {
            if held.contains(w) || want[..i].contains(w) {
                return Err(crate::Error::QueueBusy { port: w.0, queue: w.1, rx: w.2 });
            }
        }
        held.extend(want);
        Ok(Claim { rxqs: rxqs.to_vec(), outputs: outputs.to_vec() })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|h| {
            !(self.rxqs.iter().any(|r| (r.port, r.queue, true) == *h) || self.outputs.iter().any(|o| (o.port, o.queue, false) == *h))
        });
    }
}

/// Runs [`route_loop`] over the queues of `claim` until `stop` is set.
///
/// The ports must stay started while the loop runs (stop the loop first, as
/// the switch does); the claim guarantees no other routing loop of this
/// process uses the same queues.
pub fn run<H: RouteHandler>(claim: &Claim, handler: &mut H, burst_size: u16, stop: &AtomicBool, st: &RouteStats) {
    // SAFETY: the claim registry guarantees that this loop is the only user of
    // its rx and tx queues for as long as `claim` lives (it outlives the call);
    // keeping the ports started meanwhile is the documented caller contract.
    unsafe { route_loop(&claim.rxqs, &claim.outputs, handler, burst_size, stop, st) }
}
