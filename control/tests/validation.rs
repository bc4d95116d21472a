//! Every load error names the file, the line and the field; a failed load
//! applies nothing.

use control::model::Model;
use control::policy::load_files;
use control::{Compiler, Error};
use std::path::PathBuf;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bulkhead-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Loads `text` as `name` and returns (file, line, field, msg) of the error.
fn err(name: &str, text: &str) -> (String, usize, String, String) {
    let p = write(name, text);
    match load_files(&[&p]) {
        Err(Error::Invalid {
            file,
            line,
            field,
            msg,
        }) => {
            assert_eq!(file, p.display().to_string());
            (file, line, field, msg)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n  podSelector: {}\n";

#[test]
fn bad_yaml() {
    let (_, line, _, msg) = err("bad.yaml", &format!("{HEAD}  ingress: [\n"));
    assert!(line >= 8, "line {line}: {msg}");
}

#[test]
fn unknown_field() {
    let (_, line, field, msg) = err("unknown.yaml", &format!("{HEAD}  ingres:\n  - {{}}\n"));
    assert_eq!(line, 8);
    assert_eq!(field, "spec");
    assert!(msg.contains("unknown field `ingres`"), "{msg}");
}

#[test]
fn bad_selector_operator() {
    let text = format!(
        "{HEAD}  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - key: a\n          operator: Maybe\n          values: [b]\n"
    );
    let (_, line, field, msg) = err("op.yaml", &text);
    assert!((13..=14).contains(&line), "{line} {field}: {msg}");
    assert!(
        field.starts_with("spec.ingress[0].from[0].podSelector.matchExpressions[0]"),
        "{field}"
    );
    assert!(msg.contains("unknown variant `Maybe`"), "{msg}");
}

#[test]
fn bad_cidr() {
    let text = format!("{HEAD}  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/33\n");
    let (_, line, field, msg) = err("cidr.yaml", &text);
    assert_eq!(line, 11);
    assert!(field.starts_with("spec.egress[0].to[0].ipBlock"), "{field}");
    assert!(msg.contains("bad CIDR `10.0.0.0/33`"), "{msg}");
}

#[test]
fn port_out_of_range() {
    let text = format!("{HEAD}  ingress:\n  - ports:\n    - port: 70000\n");
    let (_, line, field, msg) = err("range.yaml", &text);
    assert_eq!(line, 10);
    assert_eq!(field, "spec.ingress[0].ports.port");
    assert!(msg.contains("port 70000 out of range"), "{msg}");
}

#[test]
fn end_port_below_port() {
    let text = format!("{HEAD}  ingress:\n  - ports:\n    - port: 80\n      endPort: 70\n");
    let (_, line, field, msg) = err("end.yaml", &text);
    assert!((10..=11).contains(&line), "{line}");
    assert_eq!(field, "spec.ingress[0].ports.endPort");
    assert!(msg.contains("endPort 70 is below port 80"), "{msg}");
}

#[test]
fn named_port_with_end_port() {
    let text = format!("{HEAD}  ingress:\n  - ports:\n    - port: http\n      endPort: 90\n");
    let (_, line, field, msg) = err("named.yaml", &text);
    assert!((10..=11).contains(&line), "{line}");
    assert_eq!(field, "spec.ingress[0].ports.endPort");
    assert!(msg.contains("named port `http`"), "{msg}");
}

#[test]
fn duplicate_policy_name() {
    let text = format!("{HEAD}---\n{HEAD}");
    let (_, line, field, msg) = err("dup.yaml", &text);
    assert_eq!(line, 12);
    assert_eq!(field, "metadata.name");
    assert!(msg.contains("duplicate policy name `x/p`"), "{msg}");
}

#[test]
fn toml_errors_name_line_and_field() {
    let (_, line, field, msg) = err(
        "u.toml",
        "[[policy]]\nname = \"a\"\nselectr = \"app=web\"\n",
    );
    assert_eq!((line, field.as_str()), (3, "selectr"), "{msg}");
    assert!(msg.contains("unknown field `selectr`"), "{msg}");
    let (_, line, field, msg) = err(
        "s.toml",
        "[[policy]]\nname = \"a\"\nselector = \"app in web\"\n",
    );
    assert_eq!((line, field.as_str()), (3, "selector"), "{msg}");
    let (_, line, field, msg) = err(
        "p.toml",
        "[[policy]]\nname = \"a\"\n[[policy.ingress]]\nports = [\"99999/tcp\"]\n",
    );
    assert_eq!((line, field.as_str()), (4, "ports"), "{msg}");
    assert!(msg.contains("out of range"), "{msg}");
    let (_, line, field, msg) = err(
        "c.toml",
        "[[policy]]\nname = \"a\"\n[[policy.egress]]\nto = [{ cidr = \"10.1.2.3/8\" }]\n",
    );
    assert_eq!((line, field.as_str()), (4, "cidr"), "{msg}");
    assert!(msg.contains("host bits"), "{msg}");
    let (_, line, _, msg) = err("y.toml", "[[policy]\nname = 1\n");
    assert_eq!(line, 1, "{msg}");
}

#[test]
fn failed_load_applies_nothing() {
    let good = write("good.yaml", HEAD);
    let bad = write(
        "bad-second.yaml",
        &format!("{HEAD}  ingress:\n  - ports:\n    - port: 0\n"),
    );
    let model = Model::from_yaml(
        "m.yaml",
        "namespaces: [{name: x}]\nworkloads: [{name: a, namespace: x, addresses: [10.0.0.1]}]\n",
    )
    .unwrap();
    let mut c: Compiler = Compiler::new(model, Default::default()).unwrap();
    c.reload(&[&good]).unwrap();
    let before = (c.policies().len(), c.rule_count());
    assert_eq!(before, (1, 1)); // one isolation rule for the selected identity
    let e = c.reload(&[&good, &bad]).unwrap_err();
    assert!(
        e.to_string()
            .contains("bad-second.yaml:10: spec.ingress[0].ports.port"),
        "{e}"
    );
    assert_eq!((c.policies().len(), c.rule_count()), before);
}

/// Labels, names and ports as Kubernetes checks them: a label value must be
/// a string (a YAML `true`, `1` or `null` is refused, not turned into
/// text), keys and values have their syntax, names are DNS names, and a
/// quoted number is not a port.
#[test]
fn labels_names_and_quoted_ports_as_kubernetes_checks_them() {
    let sel = |labels: &str| format!("{HEAD}  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {labels}\n");
    for (labels, want) in [
        ("{app: true}", "expected a string"),
        ("{app: 1}", "expected a string"),
        ("{app: null}", "expected a string"),
        ("{\"bad key!\": x}", "bad label key `bad key!`"),
        ("{app: \"has space\"}", "bad label value `has space`"),
        ("{app: \"-web\"}", "bad label value `-web`"),
    ] {
        let (_, line, field, msg) = err("labels.yaml", &sel(labels));
        assert!(line >= 10 && field.starts_with("spec.ingress[0].from[0]") && msg.contains(want), "{labels}: {line} {field}: {msg}");
    }
    let exprs = format!("{HEAD}  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {{key: app, operator: In, values: [true]}}\n");
    let (_, _, _, msg) = err("exprs.yaml", &exprs);
    assert!(msg.contains("expected a string"), "{msg}");
    // Quoted, the same values are labels; a prefixed key is a key.
    let p = write("ok.yaml", &sel("{app: \"true\", example.com/tier: \"1\", empty: \"\"}"));
    assert!(load_files(&[&p]).is_ok());
    let (_, line, field, msg) = err("name.yaml", &HEAD.replace("name: p", "name: Bad_Name"));
    assert_eq!((line, field.as_str()), (4, "metadata"), "{msg}");
    assert!(msg.contains("bad name `Bad_Name`"), "{msg}");
    let (_, _, _, msg) = err("ns.yaml", &HEAD.replace("namespace: x", "namespace: X.y"));
    assert!(msg.contains("bad namespace `X.y`"), "{msg}");
    let (_, _, field, msg) = err("port.yaml", &format!("{HEAD}  ingress:\n  - ports:\n    - port: \"80\"\n"));
    assert!(field.ends_with("ports.port") && msg.contains("written unquoted"), "{field}: {msg}");
}
