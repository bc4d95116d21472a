//! Hot-flow detection on the lcore: which flows carry enough packets per
//! second to be worth a hardware rule.
//!
//! A direct-mapped table indexed by the flow hash keeps, per slot, the flow's
//! key signature, its packet count in the current window and the window start.
//! A flow is reported once per window, when its count reaches the threshold.
//! Colliding flows overwrite each other (a cold flow loses nothing by it; two
//! hot flows on one slot delay each other by at most a window). No allocation
//! after construction, no atomics: one detector per lcore, owned through &mut.

/// Detector parameters.
#[derive(Clone, Copy, Debug)]
pub struct HotConfig {
    /// Packets within one window that make a flow hot.
    pub threshold: u32,
    /// Window length, in the caller's time unit (TSC cycles or ns).
    pub window: u64,
    /// Table slots (rounded up to a power of two).
    pub slots: usize,
}

impl Default for HotConfig {
    fn default() -> Self {
        // 64 packets within 1 ms (time in ns): flows above 64 kpps.
        Self { threshold: 64, window: 1_000_000, slots: 4096 }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    sig: u32,
    count: u32,
    start: u64,
    reported: bool,
}

/// Per-lcore detector.
#[derive(Debug)]
pub struct HotDetector {
    cfg: HotConfig,
    mask: usize,
    slots: Box<[Slot]>,
    /// Flows reported hot.
    pub reported: u64,
}

impl HotDetector {
    /// A detector with `cfg`.
    pub fn new(cfg: HotConfig) -> Self {
        let n = cfg.slots.max(1).next_power_of_two();
        Self { cfg, mask: n - 1, slots: vec![Slot::default(); n].into_boxed_slice(), reported: 0 }
    }

    /// Changes the threshold (shell: `set offload threshold N`).
    pub fn set_threshold(&mut self, t: u32) {
        self.cfg.threshold = t.max(1);
    }

    /// The current threshold.
    pub fn threshold(&self) -> u32 {
        self.cfg.threshold
    }

    /// Counts one packet of the flow with this hash at time `now`. Returns true
    /// exactly once per window, when the flow's count reaches the threshold.
    #[inline]
    pub fn observe(&mut self, hash: u32, now: u64) -> bool {
        self.observe_n(hash, 1, now)
    }

    /// Counts `n` packets of one flow (a per-flow batch within a burst).
    #[inline]
    pub fn observe_n(&mut self, hash: u32, n: u32, now: u64) -> bool {
        let s = &mut self.slots[hash as usize & self.mask];
        let sig = hash | 1; // 0 marks an empty slot
        if s.sig != sig || now.wrapping_sub(s.start) >= self.cfg.window {
            *s = Slot { sig, count: 0, start: now, reported: false };
        }
        s.count = s.count.saturating_add(n);
        if !s.reported && s.count >= self.cfg.threshold {
            s.reported = true;
            self.reported += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_per_window_at_threshold() {
        let mut d = HotDetector::new(HotConfig { threshold: 3, window: 100, slots: 16 });
        assert!(!d.observe(7, 0));
        assert!(!d.observe(7, 1));
        assert!(d.observe(7, 2));
        assert!(!d.observe(7, 3), "reported once");
        assert!(!d.observe(7, 50));
        // new window: counts start again
        assert!(!d.observe(7, 100));
        assert!(!d.observe(7, 101));
        assert!(d.observe(7, 102));
        // a slow flow never crosses
        let mut d = HotDetector::new(HotConfig { threshold: 3, window: 10, slots: 16 });
        for t in 0..100 {
            assert!(!d.observe(9, t * 6));
        }
        assert_eq!(d.reported, 0);
    }
}
