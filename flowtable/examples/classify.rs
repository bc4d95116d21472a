//! Standalone `classify` (the same logic as `bulkhead classify`).
//!
//! ```text
//! cargo run --release -p flowtable --example classify -- --rules F --trace F [--bench] [--secs S]
//! cargo run --release -p flowtable --example classify -- --rules F --gen-trace OUT [--per-rule N]
//! ```
//! `--gen-trace` writes a synthetic ClassBench trace drawn from the rules (for
//! sets that come without one), usable by peers/rte-acl-bench.sh as well.

use std::path::PathBuf;
use std::process::ExitCode;

use flowtable::classbench::{self, BenchOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut rules, mut trace, mut gen, mut bench) = (None, None, None, false);
    let mut per_rule = 10usize;
    let mut opts = BenchOptions::default();
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--rules" => rules = Some(PathBuf::from(val("--rules"))),
            "--trace" => trace = Some(PathBuf::from(val("--trace"))),
            "--gen-trace" => gen = Some(PathBuf::from(val("--gen-trace"))),
            "--per-rule" => per_rule = val("--per-rule").parse().expect("--per-rule N"),
            "--secs" => opts.lookup_secs = val("--secs").parse().expect("--secs S"),
            "--updates" => opts.update_pairs = val("--updates").parse().expect("--updates N"),
            "--bench" => bench = true,
            _ => {
                eprintln!("usage: classify --rules F (--trace F [--bench] [--secs S] [--updates N] | --gen-trace OUT [--per-rule N])");
                return ExitCode::from(2);
            }
        }
    }
    let Some(rules) = rules else {
        eprintln!("--rules is required");
        return ExitCode::from(2);
    };
    let res = if let Some(out) = gen {
        classbench::parse_rules(&rules).and_then(|rs| {
            let keys = classbench::synth_trace(&rs, per_rule, 0x7ace);
            let mut f =
                std::fs::File::create(&out).map_err(|source| classbench::Error::Io { path: out.clone(), cause: source })?;
            classbench::write_trace(&keys, &mut f).map_err(|source| classbench::Error::Io { path: out, cause: source })
        })
    } else if let Some(trace) = trace {
        if bench {
            classbench::bench(&rules, &trace, &opts).map(|r| {
                println!("{r}");
                eprintln!(
                    "subtables={} index_bytes_per_rule={:.0} lookup_mpps_mean={:.2} compiled={} trees={} delta: update_per_s={:.0} update_p99_us={:.2}",
                    r.subtables,
                    r.index_bytes_per_rule,
                    r.lookup_mpps_mean,
                    r.compiled,
                    r.trees,
                    r.delta_update_per_s,
                    r.delta_update_p99_us
                );
                if std::env::var_os("CLASSIFY_CPU").is_some() {
                    // Lookup rate per second of CPU time actually received
                    // (/proc/thread-self/schedstat), for A/B runs on a busy machine.
                    let rs = classbench::parse_rules(&rules).expect("parsed once already");
                    let keys = classbench::parse_trace(&trace).expect("parsed once already");
                    let c = classbench::build(&rs);
                    let cpu = || -> f64 {
                        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
                        s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
                    };
                    let c0 = cpu();
                    let (pkts, wall) = classbench::bench_lookup(&c, &keys, opts.lookup_secs);
                    let c1 = cpu();
                    eprintln!(
                        "lookup_mpps_cpu={:.2} (cpu {:.2}s of wall {:.2}s)",
                        pkts as f64 / (c1 - c0) / 1e6,
                        c1 - c0,
                        wall
                    );
                    let mut c = c;
                    let mut rng = classbench::Rng::new(opts.seed);
                    let c0 = cpu();
                    for _ in 0..opts.update_pairs {
                        let r = rs[rng.below(rs.len() as u64) as usize];
                        c.remove(r.id).expect("present");
                        c.insert(r).expect("absent");
                    }
                    let c1 = cpu();
                    eprintln!("update_per_cpu_s={:.0}", 2.0 * opts.update_pairs as f64 / (c1 - c0));
                }
                if std::env::var_os("CLASSIFY_COST").is_some() {
                    let rs = classbench::parse_rules(&rules).expect("parsed once already");
                    let keys = classbench::parse_trace(&trace).expect("parsed once already");
                    let c = classbench::build(&rs);
                    let (mut p, mut cands, mut found, mut steps) = (0u64, 0u64, 0u64, 0u64);
                    for k in &keys {
                        let (a, b) = c.lookup_cost(k);
                        p += (a & 0xffff) as u64;
                        steps += (a >> 16) as u64;
                        cands += (b >> 16) as u64;
                        found += ((b >> 8) & 0xff) as u64;
                    }
                    let n = keys.len().max(1) as f64;
                    if let Some(core) = c.compiled() {
                        let (mut trees, mut depth, mut scanned) = (0u64, 0u64, 0u64);
                        for k in &keys {
                            let (t, d, s) = core.cost(k);
                            trees += t as u64;
                            depth += d as u64;
                            scanned += s as u64;
                        }
                        eprintln!(
                            "core: trees/lookup={:.1} depth/lookup={:.1} leaf_records/lookup={:.1} {:?}",
                            trees as f64 / n,
                            depth as f64 / n,
                            scanned as f64 / n,
                            core.stats()
                        );
                    }
                    eprintln!(
                        "candidates/lookup={:.1} probes/lookup={:.1} best_found_at_probe={:.1} chain_steps={:.1} {:?}",
                        cands as f64 / n,
                        p as f64 / n,
                        found as f64 / n,
                        steps as f64 / n,
                        c.stats()
                    );
                }
            })
        } else {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            classbench::classify(&rules, &trace, &mut lock)
        }
    } else {
        eprintln!("--trace or --gen-trace is required");
        return ExitCode::from(2);
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classify: {e}");
            ExitCode::FAILURE
        }
    }
}
