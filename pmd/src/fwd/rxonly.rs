//! rxonly: receive and free (testpmd `rxonly`). Nothing is transmitted.

use super::{BurstHandler, StreamCtx};
use crate::burst::Burst;

/// The rxonly engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxOnly;

impl BurstHandler for RxOnly {
    #[inline(always)]
    fn handle(&mut self, _ctx: &StreamCtx, burst: &mut Burst) -> usize {
        burst.free_all();
        0
    }
}
