//! Shim per-burst call overhead versus an inlined path (prints figures; no
//! assertions). Run: `cargo run --release -p pmd --example shim_overhead`
//!
//! Two measurements, alternated over several rounds (medians printed):
//! - empty rx: `rx_burst` on a `net_null` port with `no-rx=1` (returns 0 at
//!   once), so the difference is the pure cost of the shim call.
//! - rx+tx: 32 packets from `net_null` (generating) to a `net_null` sink,
//!   the io-forwarding burst, via the shim and via `rte_eth_fp_ops` directly.

use pmd::{testing, Burst, Port, PortConf};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    testing::eal();
    let pool = testing::pool();
    let conf = PortConf { rxd: 512, txd: 512, promiscuous: false, ..PortConf::default() };
    let mut empty = Port::open("net_null_e,no-rx=1", conf, pool.clone()).unwrap();
    let mut src = Port::open("net_null_s,size=64", conf, pool.clone()).unwrap();
    let mut sink = Port::open("net_null_k,no-rx=1", conf, pool.clone()).unwrap();
    for p in [&mut empty, &mut src, &mut sink] {
        p.start().unwrap();
    }
    let (e, s, k) = (empty.id(), src.id(), sink.id());
    const ITERS: u64 = 2_000_000;
    let mut b = Burst::new();
    let (mut e_shim, mut e_inl, mut f_shim, mut f_inl) = (vec![], vec![], vec![], vec![]);
    let mut pkts = 0u64;
    for _round in 0..7 {
        // SAFETY (all blocks below): ports are started and polled by this
        // thread only.
        let t = pmd::lcore::rdtsc();
        for _ in 0..ITERS {
            // SAFETY: see above.
            pkts += unsafe { b.rx(e, 0, 32) } as u64;
        }
        e_shim.push((pmd::lcore::rdtsc() - t) as f64 / ITERS as f64);
        let t = pmd::lcore::rdtsc();
        for _ in 0..ITERS {
            // SAFETY: see above.
            pkts += unsafe { b.rx_inline(e, 0, 32) } as u64;
        }
        e_inl.push((pmd::lcore::rdtsc() - t) as f64 / ITERS as f64);
        let t = pmd::lcore::rdtsc();
        for _ in 0..ITERS / 10 {
            // SAFETY: see above.
            unsafe {
                pkts += b.rx(s, 0, 32) as u64;
                b.tx(k, 0);
            }
        }
        f_shim.push((pmd::lcore::rdtsc() - t) as f64 / (ITERS / 10) as f64);
        let t = pmd::lcore::rdtsc();
        for _ in 0..ITERS / 10 {
            // SAFETY: see above.
            unsafe {
                pkts += b.rx_inline(s, 0, 32) as u64;
                b.tx_inline(k, 0);
            }
        }
        f_inl.push((pmd::lcore::rdtsc() - t) as f64 / (ITERS / 10) as f64);
    }
    let (es, ei, fs, fi) = (median(&mut e_shim), median(&mut e_inl), median(&mut f_shim), median(&mut f_inl));
    println!("empty_rx_burst: shim_cycles={es:.2} inline_cycles={ei:.2} shim_overhead_cycles_per_call={:.2}", es - ei);
    println!(
        "rx32+tx32 burst: shim_cycles={fs:.1} inline_cycles={fi:.1} overhead_cycles_per_burst={:.1} per_packet={:.3} ({:+.2}%)",
        fs - fi,
        (fs - fi) / 32.0,
        (fs - fi) / fi * 100.0
    );
    // The poll loop reads the TSC per burst for busy-cycle accounting: its
    // cost matters on VMs where RDTSC may be slow.
    let t = std::time::Instant::now();
    let mut x = 0u64;
    for _ in 0..10_000_000 {
        x = x.wrapping_add(pmd::lcore::rdtsc());
    }
    let ns = t.elapsed().as_nanos() as f64 / 1e7;
    println!("rdtsc: {ns:.2} ns = {:.1} cycles per read (checksum {})", ns * pmd::Eal::tsc_hz() as f64 / 1e9, x & 1);
    println!("tsc_hz={} packets_moved={pkts}", pmd::Eal::tsc_hz());
    for p in [&mut empty, &mut src, &mut sink] {
        p.close().unwrap();
    }
}
