//! Prefetch hint: the one place flowtable allows `unsafe` (see lib.rs).

/// Asks the CPU to bring the cache line holding `*p` into L1 ahead of use.
/// A no-op on targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache hierarchy: it never faults,
    // never reads into a register and has no architectural effect, so any
    // address is fine; here it comes from a live reference anyway. SSE is
    // part of the x86_64 baseline, so the target feature is always present.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((p as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
