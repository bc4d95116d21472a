//! pipeline/<case>: Pipeline::process over bursts of 32 frames; throughput
//! in packets. `emc_hit/*` is the per-packet hit path the design budgets
//! (parse + cache + conntrack update by handle + verdict).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flowtable::act::PacketVerdict;
use flowtable::emc::EmcConfig;
use flowtable::key::v4_mapped;
use flowtable::parse::build::{Spec, L4};
use flowtable::pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};
use flowtable::{Action, Classifier, Match, PolicyTables, PortRange, Prefix, PrefixMap, Rule, RuleId, RuleLookup, Tier};
use std::time::Duration;

const FLOWS: u16 = 1024;

fn tables<C: Default>(mut insert: impl FnMut(&mut C, Rule)) -> PolicyTables<C> {
    let mut t = Tier::<C> { name: "app".into(), ..Default::default() };
    // 64 rules of filler for other identity pairs, then the allow and a deny.
    for i in 0..64u32 {
        let m = Match { src_id: Some(100 + i), dst_id: Some(200 + i), proto: Some(6), dport: PortRange::exact(8000 + i as u16), ..Match::ANY };
        insert(&mut t.egress, Rule { id: RuleId(i + 10), priority: 10, m, action: Action::Allow, cookie: i as u64 });
    }
    let m = Match { src_id: Some(1), dst_id: Some(2), proto: Some(6), dport: PortRange::exact(80), ..Match::ANY };
    insert(&mut t.egress, Rule { id: RuleId(1), priority: 10, m, action: Action::Allow, cookie: 1 });
    let m = Match { proto: Some(17), ..Match::ANY };
    insert(&mut t.egress, Rule { id: RuleId(2), priority: 10, m, action: Action::Deny, cookie: 2 });
    PolicyTables { tiers: vec![t], default_egress: Action::Deny, default_ingress: Action::Allow }
}

fn bursts(frames: &[Vec<u8>]) -> Vec<Vec<RxPacket<'_>>> {
    frames.chunks(32).map(|c| c.iter().map(|f| RxPacket { frame: f, rss: None, in_port: 1 }).collect()).collect()
}

fn run<C: RuleLookup>(c: &mut Criterion, cls: &str, t: &PolicyTables<C>) {
    let mut ids = PrefixMap::new();
    ids.insert(Prefix::v4(0x0a01_0000, 16), 1u32);
    ids.insert(Prefix::v4(0x0a02_0000, 16), 2u32);
    let mut routes = PrefixMap::new();
    routes.insert(Prefix::v4(0x0a00_0000, 8), 1u16);
    let policy = Policy { gen: 1, tables: t, identities: &ids, routes: &routes, cut_before: 0 };
    let tcp: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| Spec::new(v4_mapped(0x0a01_0000 + u32::from(i)), v4_mapped(0x0a02_0001), L4::Tcp { sport: 1024 + i, dport: 80, flags: 0x10 }).build())
        .collect();
    let udp: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| Spec::new(v4_mapped(0x0a01_0000 + u32::from(i)), v4_mapped(0x0a02_0001), L4::Udp { sport: 1024 + i, dport: 53 }).build())
        .collect();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(32));
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    let mut out = [PacketVerdict::default(); 32];
    // A burst of one flow, as a VM's queue often delivers.
    let one_flow: Vec<Vec<u8>> = vec![tcp[0].clone(); 32];
    let cases: [(&str, &[Vec<u8>], u32); 4] = [
        ("emc_hit/tcp_allowed_ct", &tcp, 1),
        ("emc_hit/udp_denied", &udp, 1),
        ("emc_hit/tcp_allowed_ct_one_flow", &one_flow, 1),
        ("slow_path/tcp_ct_hit", &tcp, u32::MAX),
    ];
    for (name, frames, inv) in cases {
        let bs = bursts(frames);
        // Sweeps paced as the switch's handler paces them (a whole table walk
        // per second at most), not one after every burst.
        let mut cfg = PipelineConfig { emc: EmcConfig { entries: 8192, insert_inv_prob: inv }, ..Default::default() };
        cfg.pace_sweeps();
        let mut p = Pipeline::new(cfg);
        for b in &bs {
            p.process(&policy, b, 0, &mut out);
        }
        let mut n = 0usize;
        g.bench_function(format!("{name}/{cls}"), |bch| {
            bch.iter(|| {
                p.process(&policy, black_box(&bs[n % bs.len()]), 1, &mut out);
                n += 1;
                black_box(&out);
            })
        });
        let s = p.stats();
        eprintln!("{name}/{cls}: emc_hit {} emc_miss {} cls_lookup {} ct_hit {}", s.emc_hit, s.emc_miss, s.cls_lookup, s.ct_hit);
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    run(c, "linear", &tables::<flowtable::LinearClassifier>(|t, r| assert!(t.insert(r))));
    run(c, "classifier", &tables::<Classifier>(|t, r| t.insert(r).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
