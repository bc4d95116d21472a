//! Replays every shared policy-conformance case through the compiled tables.

use control::commands::{conformance, run_conformance, ConformanceArgs};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/policy-conformance")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared().join("cases"))
        .expect("shared cases present")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shared_case_passes() {
    let cases = cases();
    assert!(cases.len() >= 30, "found {} cases", cases.len());
    let args = ConformanceArgs {
        model: Some(shared().join("model.yaml")),
        cases,
    };
    let res = run_conformance(&args).unwrap();
    let failed: Vec<String> = res
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {:?} {:?}", r.id, r.error, r.diffs))
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    assert!(res.iter().all(|r| r.cells > 0));
}

#[test]
fn command_prints_summary_line_last() {
    let args = ConformanceArgs {
        model: None,
        cases: cases(),
    };
    let mut out = Vec::new();
    let code = conformance(&args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(last, format!("{} passed, 0 failed", args.cases.len()));
    assert_eq!(code, 0);
}
