//! SIGINT/SIGTERM to a flag, for clean shutdown (ports stopped and closed,
//! mempools freed, EAL cleaned up) instead of dying mid-burst.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::SeqCst);
}

/// Install handlers for SIGINT and SIGTERM that set the flag returned by
/// [`stop_requested`].
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sa` is zero-initialised then filled; the handler only does
        // an atomic store, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ask for a stop as a signal would (for tests and the shell's `quit`).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
