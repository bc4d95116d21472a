//! `bulkhead conformance --dataplane`: every shared policy-conformance case
//! replayed as real packets through the policy engine on DPDK ring ports
//! must pass; a case with deliberately wrong expectations must fail, naming
//! exactly the cells that differ; nothing is left under /var/run/dpdk.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/policy-conformance")
}

fn leftovers() -> Vec<String> {
    std::fs::read_dir("/var/run/dpdk")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("bhconf-")).collect())
        .unwrap_or_default()
}

fn run(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(BIN).args(["conformance", "--dataplane"]).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_shared_case_passes_through_the_dataplane() {
    let dir = shared().join("cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    cases.sort();
    assert!(cases.len() >= 30, "the shared cases are there: {}", dir.display());
    let before = leftovers();
    let refs: Vec<&Path> = cases.iter().map(PathBuf::as_path).collect();
    let (code, out, err) = run(&refs);
    assert_eq!(code, 0, "{out}\n{err}");
    let last = out.lines().last().unwrap_or("");
    assert_eq!(last, format!("{} passed, 0 failed", cases.len()), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS ")).count(), cases.len(), "{out}");
    // Cells were really probed (E01 has 72 off-diagonal cells).
    assert!(out.contains("PASS E01 (72 cells)"), "{out}");
    assert_eq!(leftovers(), before, "EAL runtime directory removed");
}

#[test]
fn a_wrong_expectation_is_reported_as_a_failure() {
    let dir = std::env::temp_dir().join(format!("bh-conf-dp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    std::fs::copy(shared().join("model.yaml"), dir.join("model.yaml")).unwrap();
    let text = std::fs::read_to_string(shared().join("cases/E01-default-deny-ingress.yaml")).unwrap();
    // x/a -> x/b is denied (default deny ingress in x) and x/a -> z/c allowed:
    // expect the opposite of both (in the matrix and in its `denied` list,
    // which must agree with it).
    assert!(text.contains("x/a: '-00111111'") && text.matches("- x/a->x/b\n").count() == 1);
    let bad = text
        .replace("x/a: '-00111111'", "x/a: '-10111110'")
        .replace("- x/a->x/b\n", "- x/a->z/c\n")
        .replace("id: E01", "id: E01-wrong");
    let case = dir.join("cases/E01-wrong.yaml");
    std::fs::write(&case, bad).unwrap();
    let good = shared().join("cases/E02-default-deny-all.yaml");
    let (code, out, err) = run(&[case.as_path(), good.as_path()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAIL E01-wrong (72 cells, 2 differ)"), "{out}");
    assert!(out.contains("step 1 80/TCP x/a->x/b: expected allow, got deny"), "{out}");
    assert!(out.contains("step 1 80/TCP x/a->z/c: expected deny, got allow"), "{out}");
    assert!(out.contains("PASS E02"), "{out}");
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
