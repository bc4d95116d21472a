//! Owned mbufs and inline accessors over raw mbuf pointers.
//!
//! The per-packet accessors here are plain field reads of `struct rte_mbuf`
//! (re-implemented from DPDK's static inline helpers, checked against the
//! shim in tests), so no call is made per packet.

use std::ptr::NonNull;

use crate::mempool::Mempool;
use dpdk_ffi as ffi;

/// Pointer to the first data byte of a single-segment mbuf (`rte_pktmbuf_mtod`).
///
/// # Safety
/// `m` must point to a valid mbuf.
#[inline(always)]
pub unsafe fn mtod(m: *const ffi::rte_mbuf) -> *mut u8 {
    // SAFETY: caller guarantees `m` is valid; buf_addr + data_off is inside
    // the mbuf's buffer by DPDK's invariants.
    unsafe { ((*m).buf_addr as *mut u8).add((*m).data_off as usize) }
}

/// The first segment's data as a mutable slice.
///
/// # Safety
/// `m` must point to a valid mbuf exclusively owned by the caller for `'a`.
#[inline(always)]
pub unsafe fn data_mut<'a>(m: *mut ffi::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: caller owns the mbuf; data_len bytes from mtod are initialised
    // packet data within the buffer.
    unsafe { std::slice::from_raw_parts_mut(mtod(m), (*m).data_len as usize) }
}

/// Total packet length over all segments.
///
/// # Safety
/// `m` must point to a valid mbuf.
#[inline(always)]
pub unsafe fn pkt_len(m: *const ffi::rte_mbuf) -> u32 {
    // SAFETY: caller guarantees validity.
    unsafe { (*m).pkt_len }
}

/// The NIC's RSS hash, when `RTE_MBUF_F_RX_RSS_HASH` is set in ol_flags.
///
/// # Safety
/// `m` must point to a valid mbuf.
#[inline(always)]
pub unsafe fn rss_hash(m: *const ffi::rte_mbuf) -> Option<u32> {
    // SAFETY: caller guarantees validity; `hash.rss` is the union's first
    // member, meaningful when the flag is set.
    unsafe {
        if (*m).ol_flags & ffi::RTE_MBUF_F_RX_RSS_HASH != 0 {
            Some((*m).__bindgen_anon_2.hash.rss)
        } else {
            None
        }
    }
}

/// Free a burst of mbufs (returns them to their pools). One call per burst.
///
/// # Safety
/// Every pointer must be a valid mbuf owned by the caller; they must not be
/// used afterwards.
#[inline]
pub unsafe fn free_bulk(pkts: &mut [*mut ffi::rte_mbuf]) {
    if !pkts.is_empty() {
        // SAFETY: caller's contract above.
        unsafe { ffi::dpdkffi_pktmbuf_free_bulk(pkts.as_mut_ptr(), pkts.len() as u32) }
    }
}

/// One owned mbuf, freed on drop.
#[derive(Debug)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an owned mbuf may move between threads; freeing it from any thread
// is allowed (mempool put is thread-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Allocate from `pool`; `None` when the pool is empty.
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the call.
        NonNull::new(unsafe { ffi::dpdkffi_pktmbuf_alloc(pool.as_ptr()) }).map(Mbuf)
    }

    /// Allocate and fill with `bytes` (single segment).
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        m.append(bytes).then_some(m)
    }

    /// Append `bytes` at the tail; false if there is no room.
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else { return false };
        // SAFETY: we own the mbuf; append returns NULL or a pointer to `len`
        // writable bytes in its tailroom.
        let p = unsafe { ffi::dpdkffi_pktmbuf_append(self.0.as_ptr(), len) };
        if p.is_null() {
            return false;
        }
        // SAFETY: `p` has room for bytes.len() bytes (checked by append).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p as *mut u8, bytes.len()) };
        true
    }

    /// Packet data of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: we own the mbuf; the returned borrow is tied to &self.
        unsafe { data_mut(self.0.as_ptr()) }
    }

    /// Mutable packet data of the first segment.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: we own the mbuf exclusively through &mut self.
        unsafe { data_mut(self.0.as_ptr()) }
    }

    /// Total packet length.
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: valid owned mbuf.
        unsafe { pkt_len(self.0.as_ptr()) }
    }

    /// Give up ownership (e.g. to hand it to tx_burst).
    pub fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nobody else owns or frees.
    pub unsafe fn from_raw(p: *mut ffi::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(p).map(Mbuf)
    }

    /// Raw pointer (ownership kept).
    pub fn as_ptr(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and never use it again.
        unsafe { ffi::dpdkffi_pktmbuf_free(self.0.as_ptr()) }
    }
}
