//! Wildcard classifier benchmarks on ClassBench sets (../shared/data/classbench).
//!
//! ids: `classify/<set>/lookup` (one burst of 32 per iteration, cycling over the
//! trace; throughput in packets), `classify/<set>/update` (delete + re-insert of
//! a random existing rule: two updates per iteration), `classify/<set>/publish`
//! (the same pair through `RuleSetWriter` plus a publish). The ~50k sets have no
//! trace: one is synthesised from their rules (2 headers per rule).

use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flowtable::classbench::{self, Rng};
use flowtable::classify::BURST;
use flowtable::RuleSetWriter;

const SETS: &[(&str, Option<&str>)] = &[
    ("acl1_10k", Some("acl1_10k_trace.gen")),
    ("fw1_10k", Some("fw1_10k_trace")),
    ("ipc1_10k", Some("ipc1_10k_trace")),
    ("acl1_100k", None),
    ("fw1_100k", None),
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/classbench").join(name)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.sample_size(20);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(2));
    for &(set, trace) in SETS {
        if !data(set).exists() {
            eprintln!("classify: {} missing, skipped", data(set).display());
            continue;
        }
        let rules = classbench::parse_rules(&data(set)).expect("rule set parses");
        let keys = match trace {
            Some(t) => classbench::parse_trace(&data(t)).expect("trace parses"),
            None => classbench::synth_trace(&rules, 2, 0x7ace),
        };
        let mut cls = classbench::build(&rules);
        let bursts = classbench::bursts(&keys);

        g.throughput(Throughput::Elements(BURST as u64));
        let mut out = [None; BURST];
        let mut i = 0;
        g.bench_function(format!("{set}/lookup"), |b| {
            b.iter(|| {
                let (k, live) = &bursts[i];
                i = if i + 1 == bursts.len() { 0 } else { i + 1 };
                black_box(cls.lookup_batch(black_box(k), *live, &mut out))
            })
        });

        g.throughput(Throughput::Elements(2));
        let mut rng = Rng::new(7);
        g.bench_function(format!("{set}/update"), |b| {
            b.iter(|| {
                let r = rules[rng.below(rules.len() as u64) as usize];
                cls.remove(r.id).expect("present");
                cls.insert(r).expect("absent");
            })
        });

        let mut w = RuleSetWriter::new(cls);
        g.bench_function(format!("{set}/publish"), |b| {
            b.iter(|| {
                let r = rules[rng.below(rules.len() as u64) as usize];
                w.remove(r.id).expect("present");
                w.insert(r).expect("absent");
                w.publish()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
