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

/// A case that is broken (not a verdict that differs) fails with an error
/// naming what is wrong, never a pass: a cell other than 1, 0 or -; a
/// `denied` list that disagrees with the matrix; nothing to check.
#[test]
fn broken_cases_fail_with_their_reason() {
    let dir = std::env::temp_dir().join(format!("bh-conf-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let step = |probe: &str| {
        format!(
            "id: T1\nsteps:\n- step: 1\n  actions:\n  - op: create_policy\n    policy:\n      apiVersion: networking.k8s.io/v1\n      kind: NetworkPolicy\n      metadata: {{name: deny, namespace: x}}\n      spec: {{podSelector: {{matchLabels: {{pod: a}}}}, policyTypes: [Ingress]}}\n{probe}"
        )
    };
    let probe = |matrix: &str, denied: &str| format!("  probes:\n  - port: 80\n    protocol: TCP\n    columns: [x/a, x/b]\n    matrix: {{x/b: \"{matrix}\"}}\n{denied}");
    let cases = [
        ("good", step(&probe("0-", "    denied: [x/b->x/a]\n")), None),
        ("typo", step(&probe("O-", "")), Some("cell `O` is not 1, 0 or -")),
        ("denied", step(&probe("0-", "    denied: []\n")), Some("zero only in the matrix x/b->x/a")),
        ("listed", step(&probe("1-", "    denied: [x/b->x/a]\n")), Some("listed only x/b->x/a")),
        ("empty", "id: T2\nsteps: []\n".to_string(), Some("no cell to check")),
    ];
    for (name, text, want) in cases {
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        let res = run_conformance(&ConformanceArgs { model: Some(shared().join("model.yaml")), cases: vec![p] }).unwrap();
        match want {
            None => assert!(res[0].passed() && res[0].cells == 1, "{name}: {:?}", res[0]),
            Some(w) => assert!(!res[0].passed() && res[0].error.as_deref().is_some_and(|e| e.contains(w)), "{name}: {:?}", res[0]),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
