//! Forwarding engines over real DPDK virtual devices (no hugepages): pcap in
//! -> engine -> pcap out, checked byte for byte and against port stats.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmd::fwd::{self, EngineOpts, FwdMode, FwdPort, LcoreCounters, Stream};
use pmd::{testing, Port, PortConf};

fn conf() -> PortConf {
    PortConf { rxq: 1, txq: 1, rxd: 512, txd: 512, promiscuous: false }
}

fn fwd_port(p: &Port) -> FwdPort {
    FwdPort { id: p.id(), rxq: p.conf().rxq, txq: p.conf().txq, mac: p.mac() }
}

/// Run `mode` on a thread until `done(streams)` or a 10 s timeout; returns
/// the streams with their counters.
fn run_until(mode: FwdMode, ports: &[&Port], done: impl Fn(&[Stream]) -> bool) -> Vec<Stream> {
    let streams = fwd::build_streams(&ports.iter().map(|p| fwd_port(p)).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2) = (streams.clone(), stop.clone());
    let pool = testing::pool();
    let t = std::thread::spawn(move || {
        let lc = LcoreCounters::default();
        fwd::run_mode(mode, &s2, 32, &pool, &EngineOpts::default(), &st2, &lc);
    });
    let t0 = Instant::now();
    while !done(&streams) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    streams
}

fn frames(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(pmd::pcap::bench_flow).collect()
}

fn tx_total(s: &[Stream]) -> u64 {
    s.iter().map(|s| s.counters.snapshot().tx_packets).sum()
}

fn open_pcap_port(name: &str, dir: &Path, input: &[Vec<u8>]) -> Port {
    let inp = dir.join("in.pcap");
    pmd::pcap::write(&inp, input).unwrap();
    let out = dir.join("out.pcap");
    let devargs = format!("{name},rx_pcap={},tx_pcap={}", inp.display(), out.display());
    let mut p = Port::open(&devargs, conf(), testing::pool()).unwrap();
    p.start().unwrap();
    p
}

#[test]
fn io_pcap_in_pcap_out_identical() {
    let dir = testing::scratch("io");
    let input = frames(1000);
    let mut port = open_pcap_port("net_pcap_io", &dir, &input);
    let streams = run_until(FwdMode::Io, &[&port], |s| tx_total(s) >= 1000);
    let st = streams[0].counters.snapshot();
    assert_eq!((st.rx_packets, st.tx_packets, st.tx_dropped), (1000, 1000, 0));
    let ps = port.stats().unwrap();
    assert_eq!(ps.rx_packets, 1000);
    assert_eq!(ps.tx_packets, 1000);
    assert_eq!(ps.rx_bytes, 60 * 1000);
    assert_eq!(ps.tx_bytes, 60 * 1000);
    port.close().unwrap();
    let out = pmd::pcap::read(&dir.join("out.pcap")).unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out == input, "io forwarding changed packet bytes or order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mac_rewrites_addresses_only() {
    let dir = testing::scratch("mac");
    let input = frames(200);
    let mut port = open_pcap_port("net_pcap_mac", &dir, &input);
    let mac = port.mac();
    let id = port.id();
    let streams = run_until(FwdMode::Mac, &[&port], |s| tx_total(s) >= 200);
    assert_eq!(tx_total(&streams), 200);
    port.close().unwrap();
    let out = pmd::pcap::read(&dir.join("out.pcap")).unwrap();
    assert_eq!(out.len(), 200);
    for (o, i) in out.iter().zip(&input) {
        assert_eq!(&o[0..6], &[2, 0, 0, 0, 0, id as u8], "dst = testpmd peer address");
        assert_eq!(&o[6..12], &mac, "src = tx port MAC");
        assert_eq!(&o[12..], &i[12..], "payload untouched");
        assert_ne!(&o[..12], &i[..12]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn macswap_swaps() {
    let dir = testing::scratch("macswap");
    let input = frames(64);
    let mut port = open_pcap_port("net_pcap_swap", &dir, &input);
    run_until(FwdMode::MacSwap, &[&port], |s| tx_total(s) >= 64);
    port.close().unwrap();
    let out = pmd::pcap::read(&dir.join("out.pcap")).unwrap();
    assert_eq!(out.len(), 64);
    for (o, i) in out.iter().zip(&input) {
        assert_eq!(&o[0..6], &i[6..12]);
        assert_eq!(&o[6..12], &i[0..6]);
        assert_eq!(&o[12..], &i[12..]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rxonly_counts_and_sends_nothing() {
    let dir = testing::scratch("rxonly");
    let input = frames(500);
    let mut port = open_pcap_port("net_pcap_rxo", &dir, &input);
    let streams = run_until(FwdMode::RxOnly, &[&port], |s| s[0].counters.snapshot().rx_packets >= 500);
    let st = streams[0].counters.snapshot();
    assert_eq!((st.rx_packets, st.tx_packets, st.tx_dropped), (500, 0, 0));
    let ps = port.stats().unwrap();
    assert_eq!((ps.rx_packets, ps.tx_packets), (500, 0));
    port.close().unwrap();
    assert_eq!(pmd::pcap::read(&dir.join("out.pcap")).unwrap().len(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn txonly_and_flowgen_generate_counted_udp() {
    for (mode, name) in [(FwdMode::TxOnly, "net_pcap_txo"), (FwdMode::FlowGen, "net_pcap_fg")] {
        let dir = testing::scratch(name);
        let mut port = open_pcap_port(name, &dir, &[]);
        let streams = run_until(mode, &[&port], |s| tx_total(s) >= 2048);
        let sent = tx_total(&streams);
        assert!(sent >= 2048);
        let ps = port.stats().unwrap();
        assert_eq!(ps.tx_packets, sent, "{mode}: port stats agree with stream stats");
        assert_eq!(ps.rx_packets, 0);
        port.close().unwrap();
        let out = pmd::pcap::read(&dir.join("out.pcap")).unwrap();
        assert_eq!(out.len() as u64, sent);
        assert!(out.iter().all(|f| f.len() == 64 && f[23] == 17 && pmd::pkt::inet_csum(&f[14..34]) == 0));
        let dsts: std::collections::HashSet<_> = out.iter().map(|f| f[30..34].to_vec()).collect();
        match mode {
            FwdMode::TxOnly => assert_eq!(dsts.len(), 1),
            _ => assert_eq!(dsts.len(), 1024, "flowgen spreads over 1024 flows"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn two_ports_paired_forward_to_each_other() {
    let dir = testing::scratch("paired");
    let a_in = frames(300);
    let b_in: Vec<Vec<u8>> = frames(700).into_iter().skip(300).collect();
    let mk = |n: &str, inp: &[Vec<u8>]| {
        let i = dir.join(format!("{n}.in.pcap"));
        pmd::pcap::write(&i, inp).unwrap();
        let d = format!("{n},rx_pcap={},tx_pcap={}", i.display(), dir.join(format!("{n}.out.pcap")).display());
        let mut p = Port::open(&d, conf(), testing::pool()).unwrap();
        p.start().unwrap();
        p
    };
    let mut a = mk("net_pcap_pa", &a_in);
    let mut b = mk("net_pcap_pb", &b_in);
    let streams = run_until(FwdMode::Io, &[&a, &b], |s| tx_total(s) >= 700);
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0].ctx.tx_port, b.id());
    assert_eq!(streams[1].ctx.tx_port, a.id());
    assert_eq!(a.stats().unwrap().tx_packets, 400);
    assert_eq!(b.stats().unwrap().tx_packets, 300);
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(pmd::pcap::read(&dir.join("net_pcap_pb.out.pcap")).unwrap(), a_in);
    assert_eq!(pmd::pcap::read(&dir.join("net_pcap_pa.out.pcap")).unwrap(), b_in);
    let _ = std::fs::remove_dir_all(&dir);
}
