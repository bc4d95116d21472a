//! The shared policy recipes (../shared/data/policy-recipes): the Kubernetes
//! and Calico ones load and compile; Cilium's is refused with a clear error.

use control::commands::{policy_explain, ExplainArgs};
use control::policy::load_files;
use control::Error;
use std::path::PathBuf;

fn recipes() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/policy-recipes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn recipes_load_or_fail_clearly() {
    let all = recipes();
    assert!(all.len() >= 10);
    for f in &all {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        match load_files(&[f]) {
            Ok(set) => {
                assert!(!set.policies.is_empty(), "{name}");
                assert!(!name.contains("cilium"), "{name} should be refused");
            }
            Err(Error::Unsupported { kind, line, .. }) => {
                assert!(name.contains("cilium"), "{name}: unsupported {kind}");
                assert_eq!(kind, "CiliumClusterwideNetworkPolicy");
                assert!(line > 0);
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn calico_tiered_recipe_decides_like_calico() {
    let f = recipes()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("calico"))
        .unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/model.toml");
    let run = |from: &str, to: &str| {
        let args = ExplainArgs {
            model: model.clone(),
            policies: vec![f.clone()],
            from: from.into(),
            to: to.into(),
            port: "443/TCP".into(),
        };
        let mut out = Vec::new();
        let code = policy_explain(&args, &mut out).unwrap();
        (code, String::from_utf8(out).unwrap())
    };
    let (code, out) = run("api-1", "pay-1");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ingress DENY by policy security.pci-isolation ingress rule 2 (tier admin)"),
        "{out}"
    );
    assert!(
        out.contains("log     ingress: policy security.pci-isolation ingress rule 1"),
        "{out}"
    );
    let (code, out) = run("pay-1", "card-db");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ingress ALLOW by policy security.pci-isolation ingress rule 0"),
        "{out}"
    );
    let (code, out) = run("web-1", "api-1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ingress ALLOW by global default"), "{out}");
}
