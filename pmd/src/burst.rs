//! A burst of up to [`BURST`] mbufs in a fixed array (no allocation).

use crate::mbuf;
use dpdk_ffi as ffi;

/// Maximum packets per burst.
pub const BURST: usize = 32;

/// Up to [`BURST`] owned mbufs. Packets still in the burst when it is dropped
/// are freed.
#[derive(Debug)]
pub struct Burst {
    pkts: [*mut ffi::rte_mbuf; BURST],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Burst {
        Burst { pkts: [std::ptr::null_mut(); BURST], len: 0 }
    }

    /// Number of packets.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A vhost port's direct path (see [`crate::vhost::Direct`]) receives
    /// into the empty burst, when it serves `port`/`queue`.
    ///
    /// # Safety
    /// As [`Burst::rx`].
    #[inline(always)]
    unsafe fn rx_vhost(&mut self, port: u16, queue: u16, max: u16) -> Option<usize> {
        let d = crate::vhost::Direct::of(port, queue)?;
        // SAFETY: caller's contract (this thread alone polls the queue).
        self.len = unsafe { d.rx(queue, &mut self.pkts[..max as usize]) };
        Some(self.len)
    }

    /// A vhost port's direct path sends the (non-empty) burst, when it serves
    /// `port`/`queue`: `(sent, dropped)`, the burst emptied (sent or freed).
    ///
    /// # Safety
    /// As [`Burst::tx`].
    #[inline(always)]
    unsafe fn tx_vhost(&mut self, port: u16, queue: u16) -> Option<(usize, usize)> {
        let d = crate::vhost::Direct::of(port, queue)?;
        let n = std::mem::take(&mut self.len);
        // SAFETY: caller's contract; the first n pointers are owned and
        // leave the burst here.
        let sent = unsafe { d.tx(queue, &mut self.pkts[..n]) };
        Some((sent, n - sent))
    }

    /// Receive up to `max` (<= BURST) packets into an empty burst through the
    /// shim (one call per burst). Returns how many arrived.
    ///
    /// # Safety
    /// The port and queue must be started and polled by this thread only.
    #[inline(always)]
    pub unsafe fn rx(&mut self, port: u16, queue: u16, max: u16) -> usize {
        debug_assert!(self.len == 0);
        let max = (max as usize).min(BURST) as u16;
        // SAFETY: caller's contract (this thread alone polls the queue).
        if let Some(n) = unsafe { self.rx_vhost(port, queue, max) } {
            return n;
        }
        // SAFETY: caller's contract; the array has room for `max` pointers.
        let n = unsafe { ffi::dpdkffi_rx_burst(port, queue, self.pkts.as_mut_ptr(), max) };
        self.len = n as usize;
        self.len
    }

    /// Transmit all packets through the shim; packets the driver did not take
    /// are freed. Returns `(sent, dropped)`; the burst is empty afterwards.
    ///
    /// # Safety
    /// The port and tx queue must be started and used by this thread only.
    #[inline(always)]
    pub unsafe fn tx(&mut self, port: u16, queue: u16) -> (usize, usize) {
        let n = self.len;
        if n == 0 {
            return (0, 0);
        }
        // SAFETY: caller's contract; the first n pointers are owned.
        if let Some(r) = unsafe { self.tx_vhost(port, queue) } {
            return r;
        }
        // SAFETY: caller's contract; the first `n` pointers are owned mbufs.
        let sent = unsafe { ffi::dpdkffi_tx_burst(port, queue, self.pkts.as_mut_ptr(), n as u16) } as usize;
        if sent < n {
            // SAFETY: the driver took ownership of the first `sent`; the rest
            // are still ours.
            unsafe { mbuf::free_bulk(&mut self.pkts[sent..n]) };
        }
        self.len = 0;
        (sent, n - sent)
    }

    /// As [`Burst::rx`], but calling the driver's rx function straight from
    /// Rust through `rte_eth_fp_ops` (what DPDK's inline `rte_eth_rx_burst`
    /// does, minus its debug checks). Falls back to the shim when rx
    /// callbacks are installed. Exists to measure the shim's cost.
    ///
    /// # Safety
    /// As [`Burst::rx`].
    #[inline(always)]
    pub unsafe fn rx_inline(&mut self, port: u16, queue: u16, max: u16) -> usize {
        debug_assert!(self.len == 0);
        let max = (max as usize).min(BURST) as u16;
        // SAFETY: as in `rx`.
        if let Some(n) = unsafe { self.rx_vhost(port, queue, max) } {
            return n;
        }
        // SAFETY: rte_eth_fp_ops is DPDK's exported fast-path table, sized
        // RTE_MAX_ETHPORTS; a started port's entry and queue data are set up
        // and stay valid until the port stops, which the caller excludes.
        let n = unsafe {
            let ops = &*std::ptr::addr_of!(ffi::rte_eth_fp_ops[port as usize]);
            let clbk = *ops.rxq.clbk.add(queue as usize);
            match ops.rx_pkt_burst {
                Some(f) if clbk.is_null() => f(*ops.rxq.data.add(queue as usize), self.pkts.as_mut_ptr(), max),
                _ => ffi::dpdkffi_rx_burst(port, queue, self.pkts.as_mut_ptr(), max),
            }
        };
        self.len = n as usize;
        self.len
    }

    /// As [`Burst::tx`], but through `rte_eth_fp_ops` directly (see
    /// [`Burst::rx_inline`]).
    ///
    /// # Safety
    /// As [`Burst::tx`].
    #[inline(always)]
    pub unsafe fn tx_inline(&mut self, port: u16, queue: u16) -> (usize, usize) {
        let n = self.len;
        if n == 0 {
            return (0, 0);
        }
        // SAFETY: as in `tx`.
        if let Some(r) = unsafe { self.tx_vhost(port, queue) } {
            return r;
        }
        // SAFETY: as rx_inline; the first n pointers are owned mbufs.
        let sent = unsafe {
            let ops = &*std::ptr::addr_of!(ffi::rte_eth_fp_ops[port as usize]);
            let clbk = *ops.txq.clbk.add(queue as usize);
            match ops.tx_pkt_burst {
                Some(f) if clbk.is_null() => f(*ops.txq.data.add(queue as usize), self.pkts.as_mut_ptr(), n as u16),
                _ => ffi::dpdkffi_tx_burst(port, queue, self.pkts.as_mut_ptr(), n as u16),
            }
        } as usize;
        if sent < n {
            // SAFETY: the rest are still ours.
            unsafe { mbuf::free_bulk(&mut self.pkts[sent..n]) };
        }
        self.len = 0;
        (sent, n - sent)
    }

    /// The raw mbuf pointers (for handlers that need them).
    #[inline(always)]
    pub fn as_raw(&self) -> &[*mut ffi::rte_mbuf] {
        &self.pkts[..self.len]
    }

    /// Raw array and length for engines that fill the burst themselves.
    ///
    /// # Safety
    /// Whatever is written into the first `*len` slots must be owned, valid
    /// mbufs.
    #[inline(always)]
    pub unsafe fn raw_parts_mut(&mut self) -> (&mut [*mut ffi::rte_mbuf; BURST], &mut usize) {
        (&mut self.pkts, &mut self.len)
    }

    /// Packet `i`'s first-segment data, mutable.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[inline(always)]
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.len);
        // SAFETY: slot i < len holds an owned valid mbuf; the borrow is tied
        // to &mut self.
        unsafe { mbuf::data_mut(self.pkts[i]) }
    }

    /// Packet `i`'s data.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[inline(always)]
    pub fn data(&self, i: usize) -> &[u8] {
        assert!(i < self.len);
        // SAFETY: as data_mut; shared borrow of self.
        unsafe { mbuf::data_mut(self.pkts[i]) }
    }

    /// Keep only the packets for which `keep` returns true (order kept);
    /// others are freed in one bulk call. Returns how many were dropped.
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &mut [u8]) -> bool) -> usize {
        let mut dropped = [std::ptr::null_mut(); BURST];
        let (mut w, mut d) = (0, 0);
        for i in 0..self.len {
            let p = self.pkts[i];
            // SAFETY: slot i < len is an owned valid mbuf.
            if keep(i, unsafe { mbuf::data_mut(p) }) {
                self.pkts[w] = p;
                w += 1;
            } else {
                dropped[d] = p;
                d += 1;
            }
        }
        self.len = w;
        // SAFETY: the dropped pointers are owned and no longer in the burst.
        unsafe { mbuf::free_bulk(&mut dropped[..d]) };
        d
    }

    /// Free every packet; returns how many.
    #[inline]
    pub fn free_all(&mut self) -> usize {
        let n = self.len;
        // SAFETY: the first n are owned valid mbufs; len is reset below.
        unsafe { mbuf::free_bulk(&mut self.pkts[..n]) };
        self.len = 0;
        n
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}
