//! macswap: swap source and destination MAC (testpmd `macswap`).

use super::{BurstHandler, StreamCtx};
use crate::burst::Burst;

/// The macswap engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct MacSwap;

impl BurstHandler for MacSwap {
    #[inline(always)]
    fn handle(&mut self, _ctx: &StreamCtx, burst: &mut Burst) -> usize {
        for i in 0..burst.len() {
            let d = burst.data_mut(i);
            if d.len() >= 12 {
                let (dst, rest) = d.split_at_mut(6);
                dst.swap_with_slice(&mut rest[..6]);
            }
        }
        0
    }
}
