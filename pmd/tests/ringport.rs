//! Ring ports: frames injected at the tap come out of the port's rx queue
//! byte for byte, frames the port transmits are drained at the tap, and the
//! port's counters see both.

use pmd::{testing, Burst, Port, PortConf, RingTap};

#[test]
fn ring_tap_injects_into_rx_and_drains_tx() {
    let pool = testing::pool();
    let tap = RingTap::create("rt_t0").unwrap();
    assert!(RingTap::create("rt_t0").is_err(), "a name in use is refused");
    let mut port = Port::open(tap.device(), PortConf::default(), pool.clone()).unwrap();
    assert_eq!(port.id(), tap.port());
    port.start().unwrap();
    let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 60 + i as usize]).collect();
    assert_eq!(tap.inject(&pool, &frames), 5);
    assert_eq!(tap.pending(), 5);
    let mut b = Burst::new();
    // SAFETY: this thread is the only user of the port's queues.
    let n = unsafe { b.rx(port.id(), 0, 32) };
    assert_eq!(n, 5);
    assert_eq!(tap.pending(), 0);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(b.data(i), &f[..]);
    }
    assert!(tap.drain().is_empty(), "nothing transmitted yet");
    // SAFETY: as above.
    let (sent, dropped) = unsafe { b.tx(port.id(), 0) };
    assert_eq!((sent, dropped), (5, 0));
    assert_eq!(tap.drain(), frames, "what the port sent, in order");
    let st = port.stats().unwrap();
    assert_eq!((st.rx_packets, st.tx_packets), (5, 5));
    // Frames left in the rings are freed with the tap.
    assert_eq!(tap.inject(&pool, &frames[..2]), 2);
    let in_use = pool.in_use();
    port.close().unwrap();
    drop(tap);
    assert_eq!(pool.in_use(), in_use - 2, "queued mbufs freed with the rings");
}
