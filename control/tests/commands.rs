//! policy check / explain / reach over the sample policies in examples/policies.

use control::commands::{policy_check, policy_explain, reach, CheckArgs, ExplainArgs, ReachArgs};
use std::path::PathBuf;

fn ex(f: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(f)
}

fn toml_policies() -> Vec<PathBuf> {
    vec![ex("three-tier.toml"), ex("pci.toml")]
}

fn explain(from: &str, to: &str, port: &str) -> (i32, String) {
    let args = ExplainArgs {
        model: ex("model.toml"),
        policies: toml_policies(),
        from: from.into(),
        to: to.into(),
        port: port.into(),
    };
    let mut out = Vec::new();
    let code = policy_explain(&args, &mut out).unwrap();
    (code, String::from_utf8(out).unwrap())
}

#[test]
fn check_counts_rules_per_policy() {
    let mut files = toml_policies();
    files.push(ex("k8s-shop.yaml"));
    // k8s-shop.yaml and three-tier.toml both define shop/web etc.: duplicates are rejected.
    let args = CheckArgs {
        model: Some(ex("model.toml")),
        files: files.clone(),
    };
    let err = policy_check(&args, &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("duplicate policy name `shop/web`"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);

    let args = CheckArgs {
        model: Some(ex("model.toml")),
        files: toml_policies(),
    };
    let mut out = Vec::new();
    assert_eq!(policy_check(&args, &mut out).unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    let api = text
        .lines()
        .find(|l| l.starts_with("shop/api "))
        .expect(&text);
    assert!(
        api.trim_end()
            .ends_with(&format!("({}:{})", ex("three-tier.toml").display(), 20))
            || api.contains("rules"),
        "{api}"
    );
    let n: usize = api
        .split_whitespace()
        .rev()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 3, "{api}");
    assert!(
        text.lines().last().unwrap().starts_with("ok: 10 policies"),
        "{text}"
    );

    let args = CheckArgs {
        model: Some(ex("model.toml")),
        files: vec![ex("k8s-shop.yaml")],
    };
    let mut out = Vec::new();
    assert_eq!(policy_check(&args, &mut out).unwrap(), 0);
    assert!(String::from_utf8(out).unwrap().contains("ok: 4 policies"));
}

#[test]
fn explain_names_deciding_policy_and_rule() {
    let (code, out) = explain("shop/web-1", "shop/api-1", "8080/TCP");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("egress  ALLOW by policy shop/web egress rule 0"),
        "{out}"
    );
    assert!(
        out.contains("ingress ALLOW by policy shop/api ingress rule 0"),
        "{out}"
    );

    let (code, out) = explain("web-1", "db-1", "5432/tcp");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("egress  DENY by tier application default deny (egress isolation)"),
        "{out}"
    );
    assert!(
        out.contains("ingress DENY by policy shop/db ingress rule 0"),
        "{out}"
    );

    // The admin tier overrides the application tier's allow.
    let (code, out) = explain("api-1", "pay-1", "8443/TCP");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("egress  ALLOW by policy shop/shop-api-to-payments"),
        "{out}"
    );
    assert!(
        out.contains("ingress DENY by policy pci-ingress ingress rule 1 (tier admin)"),
        "{out}"
    );

    // Pass hands over to the application tier.
    let (code, out) = explain("pay-1", "card-db", "5432/TCP");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ingress ALLOW by policy payments/card-db ingress rule 0 (tier application)"),
        "{out}"
    );

    let (code, out) = explain("card-db", "8.8.8.8", "443/TCP");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("egress  DENY by policy pci-no-internet egress rule 0 (tier admin)"),
        "{out}"
    );
    assert!(out.contains("identity 2 (world)"), "{out}");

    // Isolation: api is selected by ingress policies; port 22 is allowed by none.
    let (code, out) = explain("web-1", "api-1", "22/TCP");
    assert_eq!(code, 1);
    assert!(
        out.contains("tier application default deny (ingress isolation)"),
        "{out}"
    );
    assert!(out.contains("selected by shop/api"), "{out}");

    // Zero trust: db's egress is governed by no policy, so the global default denies.
    let (code, out) = explain("db-1", "api-1", "8080/TCP");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("egress  DENY by global default (no tier decided, zero trust)"),
        "{out}"
    );

    // Audit policy: reported, not enforced.
    let (_, out) = explain("prometheus", "pay-1", "9100/TCP");
    assert!(
        out.contains("audit   egress: policy ops/audit-ops-lockdown egress rule 0"),
        "{out}"
    );
}

#[test]
fn reach_who_can_reach_pci() {
    let args = ReachArgs {
        model: ex("model.toml"),
        policies: toml_policies(),
        from: None,
        to: Some("pci=true".into()),
        port: None,
        json: false,
    };
    let mut out = Vec::new();
    assert_eq!(reach(&args, &mut out).unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(
        rows[0].starts_with("payments/pay-1 -> payments/card-db 5432/TCP"),
        "{text}"
    );
    assert!(
        rows[0].contains("ingress policy payments/card-db ingress rule 0"),
        "{text}"
    );

    let args = ReachArgs {
        json: true,
        port: Some("5432/TCP".into()),
        ..args
    };
    let mut out = Vec::new();
    reach(&args, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["ingress"]["policy"], "payments/card-db");
    assert_eq!(v[0]["egress"]["policy"], "payments/payments");
}
