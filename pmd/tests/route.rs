//! The routing poll loop over real virtual devices: each packet goes to the
//! port its handler picks, drops are freed and counted, and every packet is
//! accounted for (rx = tx + dropped), byte for byte in the output pcap.

use pmd::route::{self, Output, RouteHandler, RouteStats, RxQueue, DROP};
use pmd::{testing, Burst, Port, PortConf, BURST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends frame i to output i % 3: 0 -> pcap port, 1 -> null sink, 2 -> DROP.
/// Frames are told apart by their UDP source port (bench_flow's layout).
struct ByIndex;

impl RouteHandler for ByIndex {
    fn handle(&mut self, _rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], _now: u64) {
        for (i, d) in dest.iter_mut().enumerate().take(burst.len()) {
            let f = burst.data(i);
            let sport = u16::from_be_bytes([f[34], f[35]]);
            let flow = u32::from(sport.wrapping_sub(1024)) % 3;
            *d = match flow {
                0 => 0,
                1 => 1,
                _ => DROP,
            };
        }
    }
}

/// Sends each whole burst where its first frame's class says (the one-
/// destination path of `route`), and remembers what it sent where.
#[derive(Default)]
struct ByBurst {
    to0: Vec<u16>,
    to1: u64,
    dropped: u64,
}

impl RouteHandler for ByBurst {
    fn handle(&mut self, _rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], _now: u64) {
        let sport = |i: usize| {
            let f = burst.data(i);
            u16::from_be_bytes([f[34], f[35]])
        };
        let d = match u32::from(sport(0).wrapping_sub(1024)) % 3 {
            0 => 0,
            1 => 1,
            _ => DROP,
        };
        for (i, slot) in dest.iter_mut().enumerate().take(burst.len()) {
            *slot = d;
            match d {
                0 => self.to0.push(sport(i)),
                1 => self.to1 += 1,
                _ => self.dropped += 1,
            }
        }
    }
}

/// What one routing run saw.
struct Run<H> {
    handler: H,
    rx: u64,
    dropped: u64,
    tx: u64,
    tx_dropped: u64,
    /// Packets the null port (output 1) sent.
    sink_tx: u64,
    /// Frames the pcap port (output 0) wrote, in order.
    out0: Vec<Vec<u8>>,
}

/// Routes the first `n` bench flows from a pcap port (output 0) with
/// `handler`; output 1 is a null port. `tag` keeps device names apart.
fn run<H: RouteHandler + Send + 'static>(tag: &str, n: u32, mut handler: H) -> Run<H> {
    let dir = testing::scratch(&format!("route_{tag}"));
    let frames: Vec<Vec<u8>> = (0..n).map(pmd::pcap::bench_flow).collect();
    let inp = dir.join("in.pcap");
    let out = dir.join("out0.pcap");
    pmd::pcap::write(&inp, &frames).unwrap();
    let conf = PortConf { rxd: 512, txd: 512, ..PortConf::default() };
    let mut p0 = Port::open(&format!("net_pcap_{tag}0,rx_pcap={},tx_pcap={}", inp.display(), out.display()), conf, testing::pool()).unwrap();
    let mut p1 = Port::open(&format!("net_null_{tag}1,no-rx=1"), conf, testing::pool()).unwrap();
    p0.start().unwrap();
    p1.start().unwrap();
    let (id0, id1) = (p0.id(), p1.id());
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::new(RouteStats::default());
    let (s2, st2) = (stop.clone(), st.clone());
    let t = std::thread::spawn(move || {
        let rxqs = [RxQueue { port: id0, queue: 0 }];
        let outs = [Output { port: id0, queue: 0 }, Output { port: id1, queue: 0 }];
        // SAFETY: this thread is the only poller of port 0 queue 0 and the only
        // transmitter on both ports' queue 0; the ports stay started until join.
        unsafe { route::route_loop(&rxqs, &outs, &mut handler, 32, &s2, &st2) };
        handler
    });
    let t0 = Instant::now();
    while st.rx_packets.load(Ordering::Relaxed) < u64::from(n) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let handler = t.join().unwrap();
    let sink_tx = p1.stats().unwrap().tx_packets;
    p0.stop().unwrap();
    p1.stop().unwrap();
    drop(p0); // closes the pcap port: flushes out0.pcap
    let out0 = pmd::pcap::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Run { handler, rx: l(&st.rx_packets), dropped: l(&st.dropped), tx: l(&st.tx_packets), tx_dropped: l(&st.tx_dropped), sink_tx, out0 }
}

#[test]
fn whole_bursts_to_one_destination_arrive_whole() {
    let n = 3000u32;
    let r = run("rb", n, ByBurst::default());
    let h = &r.handler;
    assert_eq!(r.rx, u64::from(n));
    assert!(h.dropped > 0 && h.to1 > 0 && !h.to0.is_empty(), "every destination had whole bursts");
    assert_eq!(r.dropped, h.dropped);
    assert_eq!(r.tx_dropped, 0);
    assert_eq!(r.sink_tx, h.to1);
    let got: Vec<u16> = r.out0.iter().map(|f| u16::from_be_bytes([f[34], f[35]])).collect();
    assert_eq!(got, h.to0, "port 0 got exactly the frames sent to it, in order");
}

#[test]
fn route_loop_sends_each_packet_where_the_handler_says() {
    let n = 3000u32;
    // bench_flow(i) has UDP source port 1024 + (i * 7919) % 60000; pick frames
    // whose class is known from that port.
    let frames: Vec<Vec<u8>> = (0..n).map(pmd::pcap::bench_flow).collect();
    let class = |f: &Vec<u8>| u32::from(u16::from_be_bytes([f[34], f[35]]).wrapping_sub(1024)) % 3;
    let want0: Vec<&Vec<u8>> = frames.iter().filter(|f| class(f) == 0).collect();
    let want1 = frames.iter().filter(|f| class(f) == 1).count() as u64;
    let want_drop = frames.iter().filter(|f| class(f) == 2).count() as u64;
    assert!(want_drop > 0 && want1 > 0 && !want0.is_empty());
    let r = run("rt", n, ByIndex);
    assert_eq!(r.rx, u64::from(n));
    assert_eq!(r.dropped, want_drop);
    assert_eq!(r.tx + r.dropped + r.tx_dropped, r.rx, "every packet accounted for");
    assert_eq!(r.sink_tx, want1);
    assert_eq!(r.out0.len(), want0.len());
    assert!(r.out0.iter().zip(&want0).all(|(a, b)| a == *b), "port 0 got exactly its frames, in order");
}
