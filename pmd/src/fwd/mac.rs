//! mac: set the destination MAC to the tx port's peer and the source MAC to
//! the tx port's own address (testpmd `mac`).

use super::{BurstHandler, StreamCtx};
use crate::burst::Burst;

/// The mac engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mac;

impl BurstHandler for Mac {
    #[inline(always)]
    fn handle(&mut self, ctx: &StreamCtx, burst: &mut Burst) -> usize {
        let mut hdr = [0u8; 12];
        hdr[..6].copy_from_slice(&ctx.peer_mac);
        hdr[6..].copy_from_slice(&ctx.tx_mac);
        for i in 0..burst.len() {
            let d = burst.data_mut(i);
            if d.len() >= 12 {
                d[..12].copy_from_slice(&hdr);
            }
        }
        0
    }
}
