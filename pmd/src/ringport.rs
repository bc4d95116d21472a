//! Ring ports: an ethdev (`net_ring`, through `rte_eth_from_rings`) whose rx
//! queue reads from one `rte_ring` and whose tx queue writes into another,
//! plus the other end of both rings ([`RingTap`]) for a test harness in the
//! same process: frames injected into the tap arrive on the port's rx queue,
//! frames the port transmits are drained from the tap.
//!
//! This is how `bulkhead conformance --dataplane` puts each workload on its
//! own virtual port and watches what the switch forwards, with real mbufs
//! through the real driver and no thread of the harness touching a queue.

use std::ffi::CString;

use crate::error::{Error, PortNum, Result};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use dpdk_ffi as ffi;

/// Slots per ring (a power of two; one slot stays empty).
const RING_SIZE: u32 = 1024;

/// One ring, freed on drop.
#[derive(Debug)]
struct Ring(*mut ffi::rte_ring);

// SAFETY: rte_rings are multi-producer/multi-consumer safe (created with
// default flags); the pointer stays valid until `Drop` frees it.
unsafe impl Send for Ring {}
// SAFETY: as above; every operation on the ring is thread-safe.
unsafe impl Sync for Ring {}

impl Ring {
    fn create(name: &str) -> Result<Ring> {
        let c = CString::new(name).map_err(|_| Error::Invalid(format!("ring name contains NUL: {name:?}")))?;
        // SAFETY: valid C string; EAL is up (ring ports are made by code that holds an Eal).
        let r = unsafe { ffi::rte_ring_create(c.as_ptr(), RING_SIZE, ffi::SOCKET_ID_ANY, 0) };
        if r.is_null() {
            // SAFETY: reads the calling thread's rte_errno.
            let errno = unsafe { ffi::dpdkffi_errno() };
            return Err(Error::Dpdk { op: "rte_ring_create", errno });
        }
        Ok(Ring(r))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Free whatever is still queued, then the ring.
        let mut objs = [std::ptr::null_mut::<std::ffi::c_void>(); 32];
        loop {
            // SAFETY: valid ring; `objs` has room for 32 pointers.
            let n = unsafe { ffi::dpdkffi_ring_dequeue_burst(self.0, objs.as_mut_ptr(), 32) } as usize;
            if n == 0 {
                break;
            }
            for &o in &objs[..n] {
                // SAFETY: only mbufs are ever enqueued; we own the dequeued ones.
                drop(unsafe { Mbuf::from_raw(o as *mut ffi::rte_mbuf) });
            }
        }
        // SAFETY: the ring is ours and no port uses it any more (the port was closed first).
        unsafe { ffi::rte_ring_free(self.0) };
    }
}

/// The harness end of a ring port.
#[derive(Debug)]
pub struct RingTap {
    /// The port's rx ring: the tap enqueues here.
    to_port: Ring,
    /// The port's tx ring: the tap dequeues here.
    from_port: Ring,
    port: PortNum,
    name: String,
}

impl RingTap {
    /// Creates two rings and a `net_ring_<name>` ethdev over them (one rx
    /// and one tx queue). Open the port with
    /// [`crate::Port::open`]`(`[`RingTap::device`]`, ...)`; close the port
    /// before dropping the tap (the rings go with the tap).
    ///
    /// # Errors
    /// Ring creation (e.g. a name in use) or device creation failures.
    pub fn create(name: &str) -> Result<RingTap> {
        let to_port = Ring::create(&format!("{name}_rx"))?;
        let from_port = Ring::create(&format!("{name}_tx"))?;
        let c = CString::new(name).map_err(|_| Error::Invalid(format!("port name contains NUL: {name:?}")))?;
        let rx = [to_port.0];
        let tx = [from_port.0];
        // SAFETY: valid C string and ring arrays for the call; the rings
        // outlive the port (the caller closes the port before dropping us).
        let id = unsafe { ffi::rte_eth_from_rings(c.as_ptr(), rx.as_ptr(), 1, tx.as_ptr(), 1, 0) };
        if id < 0 {
            // SAFETY: reads the calling thread's rte_errno.
            let errno = unsafe { ffi::dpdkffi_errno() };
            return Err(Error::Dpdk { op: "rte_eth_from_rings", errno });
        }
        Ok(RingTap { to_port, from_port, port: id as PortNum, name: format!("net_ring_{name}") })
    }

    /// The port id of the device.
    pub fn port(&self) -> PortNum {
        self.port
    }

    /// The device name (what [`crate::Port::open`] takes).
    pub fn device(&self) -> &str {
        &self.name
    }

    /// Copies `frames` into mbufs from `pool` and queues them for the port's
    /// rx queue. Returns how many were queued (the rest did not fit: ring or
    /// pool full, or a frame larger than an mbuf).
    pub fn inject<F: AsRef<[u8]>>(&self, pool: &Mempool, frames: &[F]) -> usize {
        let mut done = 0;
        for f in frames {
            let Some(m) = Mbuf::from_bytes(pool, f.as_ref()) else { break };
            let p = m.into_raw() as *mut std::ffi::c_void;
            let objs = [p];
            // SAFETY: valid ring; one owned mbuf pointer handed over on success.
            let n = unsafe { ffi::dpdkffi_ring_enqueue_burst(self.to_port.0, objs.as_ptr(), 1) };
            if n == 0 {
                // SAFETY: not enqueued: still ours.
                drop(unsafe { Mbuf::from_raw(p as *mut ffi::rte_mbuf) });
                break;
            }
            done += 1;
        }
        done
    }

    /// Frames injected but not yet received by the port.
    pub fn pending(&self) -> u32 {
        // SAFETY: valid ring.
        unsafe { ffi::dpdkffi_ring_count(self.to_port.0) }
    }

    /// Takes every frame the port has transmitted so far (copied; the mbufs
    /// are freed).
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut objs = [std::ptr::null_mut::<std::ffi::c_void>(); 32];
        loop {
            // SAFETY: valid ring; `objs` has room for 32 pointers.
            let n = unsafe { ffi::dpdkffi_ring_dequeue_burst(self.from_port.0, objs.as_mut_ptr(), 32) } as usize;
            for &o in &objs[..n] {
                // SAFETY: the port enqueues only mbufs, whose ownership passes to us.
                if let Some(m) = unsafe { Mbuf::from_raw(o as *mut ffi::rte_mbuf) } {
                    out.push(m.data().to_vec());
                }
            }
            if n < 32 {
                return out;
            }
        }
    }
}
