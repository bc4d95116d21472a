//! parse/<packet>: parse_into over a burst of 32 frames; throughput in packets.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flowtable::key::{addr_of, v4_mapped};
use flowtable::parse::build::{Spec, L4};
use flowtable::parse::parse_into;
use flowtable::FlowKey;
use std::time::Duration;

fn frames(make: impl Fn(u16) -> Spec) -> Vec<Vec<u8>> {
    (0..32u16).map(|i| make(i).build()).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(32));
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    let v6a = addr_of("2001:db8::1".parse().unwrap());
    let v6b = addr_of("2001:db8::2".parse().unwrap());
    let sets = [
        ("tcp4", frames(|i| Spec::new(v4_mapped(0x0a00_0001), v4_mapped(0x0a00_0002), L4::Tcp { sport: 1000 + i, dport: 80, flags: 0x10 }))),
        ("udp4_qinq", frames(|i| {
            let mut s = Spec::new(v4_mapped(0x0a00_0001), v4_mapped(0x0a00_0002), L4::Udp { sport: 1000 + i, dport: 53 });
            s.vlans = vec![(0x88a8, 100), (0x8100, 200)];
            s
        })),
        ("tcp6_ext3", frames(|i| {
            let mut s = Spec::new(v6a, v6b, L4::Tcp { sport: 1000 + i, dport: 443, flags: 0x10 });
            s.ipv6_ext = vec![0, 43, 60];
            s
        })),
    ];
    for (name, fs) in &sets {
        let mut keys = [FlowKey::default(); 32];
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut h = 0u32;
                for (f, k) in fs.iter().zip(keys.iter_mut()) {
                    if let Ok(m) = parse_into(black_box(f), 1, None, k) {
                        h ^= m.hash;
                    }
                }
                black_box(h)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
