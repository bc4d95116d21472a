//! A global allocator that asks for transparent huge pages under large
//! allocations: the system allocator, except that an allocation of 2 MiB or
//! more is aligned and sized to whole 2 MiB pages and `madvise`d
//! `MADV_HUGEPAGE`.
//!
//! Why: the dataplane's big tables (the exact-match cache, connection
//! tables, the classifier's compiled trees) are read at random, a line a
//! lookup, over megabytes; on 4 KiB pages nearly every such read also misses
//! the TLB. Hosts commonly run THP in `madvise` mode (Debian's default), so
//! the advice is what makes the kernel back them with 2 MiB pages. DPDK's
//! own memory (mbufs, rings) is not the Rust heap and is untouched.
//!
//! ```text
//! size < 2 MiB   System, as asked
//! size >= 2 MiB  System with size and alignment rounded up to 2 MiB,
//!                then madvise(MADV_HUGEPAGE) unless disabled
//! ```
//! Whether an allocation takes the second path depends on its size alone,
//! so `dealloc` always gives `System` back the layout it allocated with.
//! [`set_advise`]`(false)` (before the big tables exist) keeps the rounding
//! and drops the advice, for comparison runs. If the kernel refuses the
//! advice (THP `never`, or no THP at all) the memory is ordinary memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Size of a huge page (x86-64, aarch64 with 4 KiB base pages).
pub const HUGE: usize = 2 << 20;

static ADVISE: AtomicBool = AtomicBool::new(true);

/// Advise huge pages for large allocations made from now on (the default),
/// or not.
pub fn set_advise(on: bool) {
    ADVISE.store(on, Ordering::Relaxed);
}

/// The environment variable that turns the advice off when it is `0`.
pub const ENV: &str = "BULKHEAD_THP";

/// [`set_advise`]`(false)` if [`ENV`] is `0`: for a program's start, before
/// its big tables exist.
pub fn advise_from_env() {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        set_advise(false);
    }
}

/// The layout `System` is asked for when `l` is large: whole huge pages,
/// aligned to one. None for small layouts (or on overflow).
fn huge(l: Layout) -> Option<Layout> {
    if l.size() < HUGE {
        return None;
    }
    Layout::from_size_align(l.size().checked_next_multiple_of(HUGE)?, HUGE.max(l.align())).ok()
}

/// The global allocator (see the module doc):
/// `#[global_allocator] static A: pmd::thp::ThpAlloc = pmd::thp::ThpAlloc;`
#[derive(Debug, Clone, Copy, Default)]
pub struct ThpAlloc;

impl ThpAlloc {
    /// A block for `l` from `System`'s `alloc` or `alloc_zeroed` (`f`): as
    /// asked if small, else whole huge pages, advised.
    ///
    /// # Safety
    /// `l` has a non-zero size (`GlobalAlloc::alloc`'s contract).
    unsafe fn alloc_with(l: Layout, f: unsafe fn(&System, Layout) -> *mut u8) -> *mut u8 {
        match huge(l) {
            Some(h) => {
                // SAFETY: `h` has a non-zero size (at least HUGE).
                let p = unsafe { f(&System, h) };
                Self::advise(p, h.size());
                p
            }
            // SAFETY: the caller's contract, passed on.
            None => unsafe { f(&System, l) },
        }
    }

    /// Advises `p..p + len` (a fresh `System` block of whole huge pages).
    fn advise(p: *mut u8, len: usize) {
        if !p.is_null() && ADVISE.load(Ordering::Relaxed) {
            // SAFETY: `p` is the start of a live allocation of `len` bytes,
            // aligned to a huge page (hence to a base page); madvise with
            // MADV_HUGEPAGE changes no contents and no mapping, and a
            // failure (EINVAL where THP is absent) is harmless.
            unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) };
        }
    }
}

// SAFETY: every block comes from `System` and goes back to it with the
// layout it was allocated with: `huge(l)` is a pure function of the size and
// alignment that `GlobalAlloc` callers must pass unchanged to `dealloc`, and
// `realloc` below keeps a block in place only when that function gives the
// same layout for the old and the new size.
unsafe impl GlobalAlloc for ThpAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Self::alloc_with(l, <System as GlobalAlloc>::alloc) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { Self::alloc_with(l, <System as GlobalAlloc>::alloc_zeroed) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if let Some(h) = huge(l) {
            // SAFETY: `p` was allocated by `System` with `h` (see `alloc`).
            unsafe { System.dealloc(p, h) }
        } else {
            // SAFETY: `p` was allocated by `System` with `l`.
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let Ok(nl) = Layout::from_size_align(new_size, l.align()) else {
            return core::ptr::null_mut();
        };
        match (huge(l), huge(nl)) {
            // SAFETY: `p` came from `System` with `l`, as the caller's
            // contract for `realloc` requires of `System` too.
            (None, None) => unsafe { System.realloc(p, l, new_size) },
            // The block already has the whole pages the new size needs.
            (Some(a), Some(b)) if a == b => p,
            _ => {
                // SAFETY: `nl` is non-zero (`new_size` is, per the contract).
                let q = unsafe { self.alloc(nl) };
                if !q.is_null() {
                    // SAFETY: both blocks are live, distinct and at least
                    // this long; `p` is then freed with the layout it came with.
                    unsafe {
                        core::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
                        self.dealloc(p, l);
                    }
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_layouts_round_to_whole_aligned_huge_pages() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(huge(l(HUGE - 1, 8)), None);
        assert_eq!(huge(l(HUGE, 8)), Some(l(HUGE, HUGE)));
        assert_eq!(huge(l(HUGE + 1, 64)), Some(l(2 * HUGE, HUGE)));
        assert_eq!(huge(l(3 * HUGE, 4 * HUGE)), Some(l(3 * HUGE, 4 * HUGE)));
    }

    /// Allocate, grow across the threshold and within a page, shrink back,
    /// zeroed: contents survive every move and blocks are aligned.
    #[test]
    fn blocks_keep_their_contents_across_reallocs() {
        let a = ThpAlloc;
        let l = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: non-zero layouts; every pointer is used within its size
        // and freed once with its current layout.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            for i in 0..l.size() {
                *p.add(i) = i as u8;
            }
            let sizes = [3 << 20, (3 << 20) + 4096, 5 << 20, 1 << 20];
            let (mut p, mut old) = (p, l);
            for s in sizes {
                p = a.realloc(p, old, s);
                assert!(!p.is_null());
                if s >= HUGE {
                    assert_eq!(p as usize % HUGE, 0, "huge blocks are page aligned");
                }
                for i in (0..l.size()).step_by(4093) {
                    assert_eq!(*p.add(i), i as u8, "byte {i} after realloc to {s}");
                }
                old = Layout::from_size_align(s, 8).unwrap();
            }
            a.dealloc(p, old);
            let z = Layout::from_size_align(4 << 20, 8).unwrap();
            let q = a.alloc_zeroed(z);
            assert!((0..z.size()).step_by(4096).all(|i| *q.add(i) == 0));
            a.dealloc(q, z);
        }
    }

    /// The kernel records the advice on the block's mapping (`hg` in its
    /// smaps VmFlags), where it has THP at all.
    #[test]
    fn large_blocks_are_advised() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("no THP in this kernel: nothing to check");
            return;
        }
        let l = Layout::from_size_align(8 << 20, 8).unwrap();
        // SAFETY: a non-zero layout, freed once below.
        let p = unsafe { ThpAlloc.alloc(l) };
        assert!(!p.is_null());
        let at = p as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut flags = None;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                        inside = a <= at && at < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    flags = Some(f.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
                }
            }
        }
        // SAFETY: allocated above with `l`.
        unsafe { ThpAlloc.dealloc(p, l) };
        let flags = flags.expect("the block's mapping in smaps");
        assert!(flags.iter().any(|f| f == "hg"), "VmFlags {flags:?}");
    }
}
