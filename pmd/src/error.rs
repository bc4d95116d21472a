//! The one error type of the `pmd` crate and the funnel for DPDK return codes.

use std::ffi::CStr;

/// A port number as DPDK numbers them.
pub type PortNum = u16;

/// Everything that can go wrong in the safe DPDK layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DPDK call returned a negative errno.
    #[error("{op} failed: {}", errno_text(*errno))]
    Dpdk {
        /// The DPDK function that failed.
        op: &'static str,
        /// Positive errno value.
        errno: i32,
    },
    /// `rte_eal_init` failed.
    #[error("EAL init failed: {}{hint}", errno_text(*errno))]
    EalInit {
        /// rte_errno after the failure.
        errno: i32,
        /// Extra context ("" when none).
        hint: String,
    },
    /// EAL is already initialised in this process (it can only be once).
    #[error("EAL is already initialised in this process")]
    EalAlreadyInit,
    /// Another DPDK primary process holds the same `--file-prefix`.
    #[error("file prefix '{prefix}' is in use by another DPDK process (pid {pid}); choose another file_prefix")]
    PrefixInUse {
        /// The contested prefix.
        prefix: String,
        /// The process holding the lock.
        pid: i32,
    },
    /// A device could not be probed from its devargs.
    #[error("cannot probe device '{devargs}': {}", errno_text(*errno))]
    Probe {
        /// The devargs as given.
        devargs: String,
        /// Positive errno value.
        errno: i32,
    },
    /// A device was probed but no ethdev port carries its name.
    #[error("device '{name}' has no ethdev port")]
    NoSuchPortName {
        /// Device name (first devargs field).
        name: String,
    },
    /// A port id that does not exist.
    #[error("port {0} does not exist")]
    NoSuchPort(PortNum),
    /// A queue another poll loop of this process already uses.
    #[error("port {port} {} queue {queue} is already used by another poll loop", if *rx { "rx" } else { "tx" })]
    QueueBusy {
        /// Port id.
        port: PortNum,
        /// Queue id.
        queue: u16,
        /// An rx queue (else tx).
        rx: bool,
    },
    /// More rx queues requested than the device has.
    #[error("port {port}: {want} rx queues requested, device max {max}")]
    TooManyRxQueues {
        /// Port id.
        port: PortNum,
        /// Requested.
        want: u16,
        /// Device limit.
        max: u16,
    },
    /// More tx queues requested than the device has.
    #[error("port {port}: {want} tx queues requested, device max {max}")]
    TooManyTxQueues {
        /// Port id.
        port: PortNum,
        /// Requested.
        want: u16,
        /// Device limit.
        max: u16,
    },
    /// A mempool could not be created.
    #[error("cannot create mempool '{name}' of {n} mbufs: {}", errno_text(*errno))]
    Mempool {
        /// Pool name.
        name: String,
        /// Requested mbufs.
        n: u32,
        /// rte_errno.
        errno: i32,
    },
    /// A port is in the wrong state for the operation.
    #[error("port {port}: {what}")]
    PortState {
        /// Port id.
        port: PortNum,
        /// What is wrong.
        what: &'static str,
    },
    /// An lcore cannot be used as asked.
    #[error("lcore {lcore}: {what}")]
    Lcore {
        /// lcore id.
        lcore: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// Invalid argument given to the safe layer.
    #[error("{0}")]
    Invalid(String),
    /// An I/O error with the path involved.
    #[error("{path}: {cause}")]
    Io {
        /// File involved.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
}

/// Result of the `pmd` crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Human text for an errno: DPDK's own `rte_strerror` (covers the
/// RTE-specific codes beyond the libc range).
pub fn errno_text(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string valid until the next call on this thread; we copy
    // it out at once. It works before EAL init.
    let s = unsafe { CStr::from_ptr(dpdk_ffi::rte_strerror(errno)) };
    format!("{} (errno {errno})", s.to_string_lossy())
}

/// Funnel for DPDK's `int` return convention: `>= 0` is success (returned as
/// `u32`), negative is `-errno`.
#[inline]
pub(crate) fn rc(op: &'static str, ret: i32) -> Result<u32> {
    if ret >= 0 {
        Ok(ret as u32)
    } else {
        Err(Error::Dpdk { op, errno: -ret })
    }
}

/// For calls that return -1 and set rte_errno.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads this thread's rte_errno through the shim; no arguments.
    unsafe { dpdk_ffi::dpdkffi_errno() }
}
