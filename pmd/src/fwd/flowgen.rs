//! flowgen: transmit generated UDP packets spread over many flows (testpmd
//! `flowgen`): the destination address walks 198.18.1.0 + (k mod flows).

use std::sync::Arc;

use super::txonly::fill;
use super::{BurstHandler, StreamCtx};
use crate::burst::{Burst, BURST};
use crate::mempool::Mempool;
use crate::pkt::{inet_csum, UdpFrame};

/// The flowgen engine.
#[derive(Debug)]
pub struct FlowGen {
    pool: Arc<Mempool>,
    burst: u16,
    len: u16,
    flows: u32,
    next: u32,
    template: [u8; 2048],
    for_port: Option<(u16, u16)>,
}

impl FlowGen {
    /// Generator over `flows` distinct destination addresses.
    pub fn new(pool: Arc<Mempool>, burst: u16, len: u16, flows: u32) -> FlowGen {
        FlowGen {
            pool,
            burst: burst.clamp(1, BURST as u16),
            len: len.clamp(60, 1514),
            flows: flows.max(1),
            next: 0,
            template: [0; 2048],
            for_port: None,
        }
    }
}

impl BurstHandler for FlowGen {
    fn receives(&self) -> bool {
        false
    }

    #[inline]
    fn handle(&mut self, ctx: &StreamCtx, burst: &mut Burst) -> usize {
        let key = (ctx.tx_port, ctx.tx_queue);
        if self.for_port != Some(key) {
            let f = UdpFrame {
                dst_mac: ctx.peer_mac,
                src_mac: ctx.tx_mac,
                src_ip: [198, 18, 0, 1],
                dst_ip: [198, 18, 1, 0],
                sport: 9,
                dport: 9,
                ip_id: 0,
                ttl: 64,
            };
            f.write(&mut self.template[..self.len as usize]);
            self.for_port = Some(key);
        }
        let (flows, mut next) = (self.flows, self.next);
        fill(&self.pool, burst, self.burst, &self.template[..self.len as usize], |d| {
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
