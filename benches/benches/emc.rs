//! emc/<case>: exact-match cache batch lookup over a burst of 32 keys
//! (hashes precomputed); throughput in packets.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flowtable::act::FlowVerdict;
use flowtable::emc::{Emc, EmcConfig};
use flowtable::parse::flow_hash;
use flowtable::FlowKey;
use std::net::Ipv4Addr;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("emc");
    g.throughput(Throughput::Elements(32));
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    let mut emc = Emc::<FlowVerdict>::new(EmcConfig { entries: 8192, insert_inv_prob: 1 });
    // 4096 cached flows (half full); each burst looks up 32 of them.
    let all: Vec<FlowKey> = (0..4096u32)
        .map(|i| FlowKey::v4(1, Ipv4Addr::from(0x0a00_0000 + i), Ipv4Addr::new(10, 200, 0, 1), 6, 1024 + (i % 4000) as u16, 80))
        .collect();
    for k in &all {
        emc.insert(k, flow_hash(k, 0), 1, FlowVerdict::default());
    }
    let bursts: Vec<([FlowKey; 32], [u32; 32])> = (0..128)
        .map(|b| {
            let mut keys = [FlowKey::default(); 32];
            let mut hashes = [0u32; 32];
            for i in 0..32 {
                keys[i] = all[(b * 32 + i * 37) % all.len()];
                hashes[i] = flow_hash(&keys[i], 0);
            }
            (keys, hashes)
        })
        .collect();
    let mut out = [FlowVerdict::default(); 32];
    for (name, gen) in [("hit/burst32", 1u64), ("stale_gen/burst32", 2)] {
        let mut n = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let (k, h) = &bursts[n % bursts.len()];
                n += 1;
                black_box(emc.lookup_batch(black_box(k), h, u32::MAX, gen, &mut out))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
