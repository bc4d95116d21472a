//! flowgen: transmit generated UDP packets spread over many flows (testpmd
//! `flowgen`): the destination address walks 198.18.1.0 + (k mod flows).

use std::sync::Arc;

use super::txonly::{fill, Template};
use super::{BurstHandler, StreamCtx};
use crate::burst::{Burst, BURST};
use crate::mempool::Mempool;
use crate::pkt::inet_csum;

/// The flowgen engine.
#[derive(Debug)]
pub struct FlowGen {
    pool: Arc<Mempool>,
    burst: u16,
    flows: u32,
    next: u32,
    template: Template,
}

impl FlowGen {
    /// Generator over `flows` distinct destination addresses.
    pub fn new(pool: Arc<Mempool>, burst: u16, len: u16, flows: u32) -> FlowGen {
        FlowGen { pool, burst: burst.clamp(1, BURST as u16), flows: flows.max(1), next: 0, template: Template::new(len) }
    }
}

impl BurstHandler for FlowGen {
    fn receives(&self) -> bool {
        false
    }

    #[inline]
    fn handle(&mut self, ctx: &StreamCtx, burst: &mut Burst) -> usize {
        let (flows, mut next) = (self.flows, self.next);
        let frame = self.template.frame(ctx, [198, 18, 1, 0]);
        fill(&self.pool, burst, self.burst, frame, |d| {
            let dst = u32::from_be_bytes([198, 18, 1, 0]).wrapping_add(next);
            d[30..34].copy_from_slice(&dst.to_be_bytes());
            d[24..26].copy_from_slice(&[0, 0]);
            let c = inet_csum(&d[14..34]);
            d[24..26].copy_from_slice(&c.to_be_bytes());
            next = if next + 1 >= flows { 0 } else { next + 1 };
        });
        self.next = next;
        0
    }
}
