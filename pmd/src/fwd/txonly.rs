//! txonly: transmit generated UDP packets, one template (testpmd `txonly`:
//! 198.18.0.1 -> 198.18.0.2, UDP 9 -> 9, 64-byte frames by default).

use std::sync::Arc;

use super::{BurstHandler, StreamCtx};
use crate::burst::{Burst, BURST};
use crate::mempool::Mempool;
use crate::pkt::UdpFrame;
use dpdk_ffi as ffi;

/// The txonly engine.
#[derive(Debug)]
pub struct TxOnly {
    pool: Arc<Mempool>,
    burst: u16,
    template: Template,
}

impl TxOnly {
    /// Generator drawing from `pool`, `burst` packets per call, frames of
    /// `len` bytes (without FCS).
    pub fn new(pool: Arc<Mempool>, burst: u16, len: u16) -> TxOnly {
        TxOnly { pool, burst: burst.clamp(1, BURST as u16), template: Template::new(len) }
    }
}

/// The UDP frame a generator sends (198.18.0.1:9 -> `dst_ip`:9), rebuilt
/// only when the stream it serves changes (MACs come from the stream).
#[derive(Debug)]
pub(crate) struct Template {
    len: u16,
    bytes: [u8; 2048],
    for_port: Option<(u16, u16)>,
}

impl Template {
    /// A template for frames of `len` bytes (clamped to 60..=1514).
    pub(crate) fn new(len: u16) -> Template {
        Template { len: len.clamp(60, 1514), bytes: [0; 2048], for_port: None }
    }

    /// The frame for `ctx`'s tx port and queue.
    #[inline]
    pub(crate) fn frame(&mut self, ctx: &StreamCtx, dst_ip: [u8; 4]) -> &[u8] {
        let key = (ctx.tx_port, ctx.tx_queue);
        if self.for_port != Some(key) {
            let f = UdpFrame {
                dst_mac: ctx.peer_mac,
                src_mac: ctx.tx_mac,
                src_ip: [198, 18, 0, 1],
                dst_ip,
                sport: 9,
                dport: 9,
                ip_id: 0,
                ttl: 64,
            };
            f.write(&mut self.bytes[..self.len as usize]);
            self.for_port = Some(key);
        }
        &self.bytes[..self.len as usize]
    }
}

/// Fill `burst` with up to `n` mbufs from `pool`, each a copy of `frame`
/// patched by `patch(i, data)`. Returns how many were allocated.
#[inline(always)]
pub(crate) fn fill(pool: &Mempool, burst: &mut Burst, n: u16, frame: &[u8], mut patch: impl FnMut(&mut [u8])) -> usize {
    // SAFETY: we write only freshly allocated, owned mbufs into the first
    // `n` slots and set the length to match.
    let (pkts, len) = unsafe { burst.raw_parts_mut() };
    // SAFETY: the array has room for BURST >= n pointers; alloc_bulk fills
    // all n or none.
    if unsafe { ffi::dpdkffi_pktmbuf_alloc_bulk(pool.as_ptr(), pkts.as_mut_ptr(), u32::from(n)) } != 0 {
        return 0;
    }
    let flen = frame.len();
    for &m in &pkts[..n as usize] {
        // SAFETY: `m` is a freshly reset mbuf with default headroom; its data
        // room (>= 2048 bytes) holds `flen` <= 1514 bytes.
        unsafe {
            let p = crate::mbuf::mtod(m);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), p, flen);
            (*m).data_len = flen as u16;
            (*m).pkt_len = flen as u32;
            patch(std::slice::from_raw_parts_mut(p, flen));
        }
    }
    *len = n as usize;
    n as usize
}

impl BurstHandler for TxOnly {
    fn receives(&self) -> bool {
        false
    }

    #[inline]
    fn handle(&mut self, ctx: &StreamCtx, burst: &mut Burst) -> usize {
        let frame = self.template.frame(ctx, [198, 18, 0, 2]);
        fill(&self.pool, burst, self.burst, frame, |_| {});
        0
    }
}
