//! `bulkhead bench fwd --mode policy`, as a smoke test: a tiny run (1 s
//! rounds) through the real binary, real DPDK and dpdk-testpmd. It checks that
//! one line per flow count is printed with sane, nonzero figures and that the
//! ACL verdicts come out as gen_bench.py's rule semantics say; it asserts no
//! rate.

use std::collections::HashMap;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).collect()
}

fn num(f: &HashMap<&str, &str>, k: &str) -> f64 {
    f.get(k).unwrap_or_else(|| panic!("no {k}= in {f:?}")).parse().unwrap_or_else(|_| panic!("{k} is not a number"))
}

fn leftovers(pid: u32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/var/run/dpdk") else { return vec![] };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("bhbench-{pid}")) || n.starts_with(&format!("bhbench-tp-{pid}-")))
        .collect()
}

/// Runs the bench; its stdout lines and the child's pid.
fn bench(args: &[&str]) -> (Vec<String>, u32) {
    let child = Command::new(BIN)
        .args(["bench", "fwd", "--mode", "policy", "--seconds", "1", "--warmup", "1", "--rounds", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bulkhead");
    let pid = child.id();
    let out = child.wait_with_output().expect("bulkhead output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");
    (stdout.lines().filter(|l| l.starts_with("fwd=policy ")).map(String::from).collect(), pid)
}

#[test]
fn policy_bench_prints_one_sane_line_per_case() {
    // 1000 rules: one per source subnet, dst 172.16/16. Flow i (i < 1000) has
    // subnet i: rule i denies when i % 5 == 4 (which includes every port-9999
    // flow, i % 10 == 9, that no rule matches), so flow 0 is forwarded and
    // 100 flows are forwarded 80 %.
    for (stateful, flows) in [(false, "1,100"), (true, "100")] {
        let mut args = vec!["--rules", "1000", "--flows", flows];
        if stateful {
            args.push("--stateful");
        }
        let (lines, pid) = bench(&args);
        let want: Vec<&str> = flows.split(',').collect();
        assert_eq!(lines.len(), want.len(), "one line per flow count: {lines:?}");
        for (line, n) in lines.iter().zip(want) {
            let f = fields(line);
            assert_eq!(f["flows"], n, "{line}");
            assert_eq!(f["rules"], "1000", "{line}");
            assert_eq!(f["stateful"], stateful.to_string(), "{line}");
            for k in ["bulkhead_mpps", "testpmd_io_mpps", "ratio", "cycles_per_pkt", "testpmd_cycles_per_pkt"] {
                let v = num(&f, k);
                assert!(v > 0.0 && v.is_finite(), "{k}={v} in {line}");
            }
            // Sane: at most a few hundred Mpps and ratio = bulkhead / testpmd.
            assert!(num(&f, "bulkhead_mpps") < 500.0 && num(&f, "testpmd_io_mpps") < 500.0, "{line}");
            let r = num(&f, "bulkhead_mpps") / num(&f, "testpmd_io_mpps");
            assert!((r - num(&f, "ratio")).abs() < 0.01, "{line}");
            let share = num(&f, "fwd_share");
            let expect = if n == "1" { 1.0 } else { 0.8 };
            assert!((share - expect).abs() < 0.02, "forwarded share {share}, expected {expect}: {line}");
            // Every flow is cached after the warm-up: lookups are rare.
            assert!(num(&f, "emc_hit_rate") > 0.95, "{line}");
        }
        assert_eq!(leftovers(pid), Vec::<String>::new(), "EAL runtime dirs left behind");
    }
}

#[test]
fn bad_policy_bench_arguments_are_refused_before_anything_starts() {
    for (args, msg) in [
        (vec!["--mode", "policy", "--rules", "0"], "--rules 0"),
        (vec!["--mode", "policy", "--rules", "10001"], "--rules 10001"),
        (vec!["--mode", "io", "--stateful"], "--stateful is for --mode policy"),
        (vec!["--mode", "rxonly"], "not rxonly"),
    ] {
        let out = Command::new(BIN).args(["bench", "fwd"]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}
