//! Safe DPDK layer: EAL, mempools, mbufs, ports, queues, poll loops and
//! testpmd-style forwarding engines.
//!
//! ```text
//!  Eal::init(EalConfig)            argv generated; --no-huge -m N --no-pci --file-prefix
//!    Mempool::new ──────────────┐  RAII; Arc-shared with the ports' rx queues
//!    Port::open(devargs, conf) ─┘  probe, configure rxq/txq/rxd/txd (+RSS), start/stop/close
//!    fwd::build_streams(ports)     rx port/queue -> tx port/queue (paired, like testpmd)
//!    fwd::Running::launch(mode, streams, lcores)
//!       per lcore: poll_loop<H: BurstHandler>: rx_burst(32) -> H::handle -> tx_burst
//!                  (unsent mbufs freed and counted)
//! ```
//! All raw FFI lives in `dpdk-ffi`; every unsafe block here says why it holds.
//! See `pmd/DESIGN.md` for mbuf ownership and thread ownership.

#![warn(missing_docs)]

pub mod burst;
pub mod eal;
mod error;
pub mod flow;
pub mod fwd;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod pcap;
pub mod pkt;
pub mod port;
pub mod ringport;
pub mod route;
pub mod thp;
pub mod signal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vhost;

pub use burst::{Burst, BURST};
pub use eal::{Eal, EalConfig};
pub use error::{errno_text, Error, PortNum, Result};
pub use fwd::{BurstHandler, FwdMode, StreamCtx};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use ringport::RingTap;
pub use port::{Port, PortConf, PortInfo, PortState, PortStats};
