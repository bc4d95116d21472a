//! lcores: enumerate workers, launch closures on them, wait for them, and a
//! cheap TSC read for per-burst cycle accounting.

use std::os::raw::{c_int, c_void};

use crate::error::{rc, Error, Result};
use dpdk_ffi as ffi;

/// TSC now. Inline on x86_64 (no call); through the shim elsewhere.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86_64 CPU DPDK supports.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: no arguments.
        unsafe { ffi::dpdkffi_rdtsc() }
    }
}

/// This thread's lcore id (`u32::MAX` for non-EAL threads).
pub fn current() -> u32 {
    // SAFETY: reads the per-thread lcore id through the shim.
    unsafe { ffi::dpdkffi_lcore_id() }
}

/// The main lcore.
pub fn main_lcore() -> u32 {
    // SAFETY: EAL-initialised global read.
    unsafe { ffi::rte_get_main_lcore() }
}

/// Worker lcores (every enabled lcore except the main one), ascending.
pub fn workers() -> Vec<u32> {
    let mut v = Vec::new();
    let mut i = u32::MAX; // "-1": start before the first lcore
    loop {
        // SAFETY: pure iteration over EAL's lcore table.
        i = unsafe { ffi::rte_get_next_lcore(i, 1, 0) };
        if i >= ffi::RTE_MAX_LCORE {
            break;
        }
        v.push(i);
    }
    v
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, passed exactly once.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Run `f` on worker `lcore`. The lcore must be idle (waiting).
///
/// # Errors
/// [`Error::Lcore`] for the main lcore; `-EBUSY` when the lcore is running.
pub fn launch<F: FnOnce() -> i32 + Send + 'static>(lcore: u32, f: F) -> Result<()> {
    if lcore == main_lcore() {
        return Err(Error::Lcore { lcore, what: "cannot launch on the main lcore" });
    }
    if !workers().contains(&lcore) {
        return Err(Error::Lcore { lcore, what: "not an enabled worker lcore" });
    }
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: the trampoline takes back ownership of `arg` exactly once.
    let r = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if r < 0 {
        // SAFETY: not launched: reclaim the job so it is not leaked.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
    }
    rc("rte_eal_remote_launch", r).map(|_| ())
}

/// Wait for `lcore` to finish its job; returns the job's return value.
pub fn wait(lcore: u32) -> i32 {
    // SAFETY: waiting on any lcore id is allowed; idle lcores return 0.
    unsafe { ffi::rte_eal_wait_lcore(lcore) }
}
