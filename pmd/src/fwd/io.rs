//! io: forward packets untouched (testpmd `io`).

use super::{BurstHandler, StreamCtx};
use crate::burst::Burst;

/// The io engine: no header touch.
#[derive(Debug, Default, Clone, Copy)]
pub struct Io;

impl BurstHandler for Io {
    #[inline(always)]
    fn handle(&mut self, _ctx: &StreamCtx, _burst: &mut Burst) -> usize {
        0
    }
}
