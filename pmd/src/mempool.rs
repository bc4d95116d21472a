//! RAII packet-mbuf pools.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use crate::error::{rte_errno, Error, Result};
use dpdk_ffi as ffi;

/// Default mbuf data room: 2048 bytes of data plus the 128-byte headroom
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`).
pub const DEFAULT_DATA_ROOM: u16 = 2048 + 128;

/// A packet mbuf pool (`rte_pktmbuf_pool_create`); freed on drop.
///
/// Drop it only after every port whose rx queues use it has been closed and
/// every mbuf taken from it has been returned.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
    name: String,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe; the
// pointer itself is only freed on drop, when no other owner exists.
unsafe impl Send for Mempool {}
// SAFETY: as above; shared use only calls thread-safe DPDK functions.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with a per-lcore `cache` and `data_room`
    /// bytes per mbuf, on `socket` (-1 for any).
    ///
    /// # Errors
    /// [`Error::Mempool`] with rte_errno when DPDK cannot allocate it.
    pub fn new(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let c = CString::new(name).map_err(|_| Error::Invalid(format!("bad pool name {name:?}")))?;
        // SAFETY: `c` is a valid NUL-terminated name that DPDK copies; other
        // arguments are plain integers.
        let p = unsafe { ffi::rte_pktmbuf_pool_create(c.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr, name: name.to_string() })
            .ok_or_else(|| Error::Mempool { name: name.to_string(), n, errno: rte_errno() })
    }

    /// Raw pointer for FFI calls.
    pub fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free mbufs (pool ring plus caches).
    pub fn avail(&self) -> u32 {
        // SAFETY: the pool is valid for the life of self.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs in use.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid for the life of self.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Look up a pool's name as DPDK stores it (for diagnostics).
    pub fn dpdk_name(&self) -> String {
        // SAFETY: `name` is an inline NUL-terminated array in a valid pool.
        unsafe { CStr::from_ptr((*self.ptr.as_ptr()).name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; the owner guarantees no port or mbuf still
        // refers to it (see type docs).
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
