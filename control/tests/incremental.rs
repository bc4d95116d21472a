//! Semantics beyond the shared cases (named ports differing per pod, ipBlock
//! except, pod and namespace lifecycle, quarantine) and incremental updates
//! checked against a fresh full compile.

use control::conformance::{probe, run_case, Case};
use control::model::{proto, Model, NamedPort, Workload};
use control::policy::parse_text;
use control::{Compiler, Labels};
use std::net::IpAddr;

fn labels(s: &str) -> Labels {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.split_once('=').unwrap())
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn wl(ns: &str, name: &str, l: &str, ip: &str, ports: &[(&str, u16)]) -> Workload {
    Workload {
        name: name.into(),
        namespace: ns.into(),
        labels: labels(l),
        addresses: vec![ip.parse().unwrap()],
        named_ports: ports
            .iter()
            .map(|(n, p)| NamedPort {
                name: n.to_string(),
                port: *p,
                proto: proto::TCP,
            })
            .collect(),
        ..Default::default()
    }
}

fn model() -> Model {
    let mut m = Model::default();
    m.add_namespace("x", labels("ns=x"));
    m.add_namespace("y", labels("ns=y"));
    for w in [
        wl("x", "a", "pod=a", "10.244.1.10", &[("web", 80)]),
        wl("x", "a2", "pod=a", "10.244.1.13", &[("web", 8080)]), // same identity, other port
        wl("x", "b", "pod=b", "10.244.1.11", &[("web", 80)]),
        wl("y", "a", "pod=a", "10.244.2.10", &[("web", 80)]),
        wl("y", "b", "pod=b", "10.244.2.11", &[]),
    ] {
        m.workloads.insert(w.key(), w);
    }
    m
}

fn policies(yaml: &str) -> control::PolicySet {
    parse_text("t.yaml", yaml).unwrap()
}

fn allowed(c: &Compiler, s: &str, d: &str, port: u16) -> bool {
    probe(c, s, d, proto::TCP, port).unwrap()
}

#[test]
fn named_port_resolves_per_destination_pod() {
    let set = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: web}]\n",
    );
    let c: Compiler = Compiler::with_policies(model(), set).unwrap();
    assert!(allowed(&c, "x/b", "x/a", 80));
    assert!(!allowed(&c, "x/b", "x/a", 8080));
    assert!(allowed(&c, "x/b", "x/a2", 8080));
    assert!(!allowed(&c, "x/b", "x/a2", 80));
    // Egress named port: resolved against each destination.
    let set = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: web}]\n",
    );
    let c: Compiler = Compiler::with_policies(model(), set).unwrap();
    assert!(allowed(&c, "x/b", "x/a", 80));
    assert!(allowed(&c, "x/b", "x/a2", 8080));
    assert!(!allowed(&c, "x/b", "x/a2", 80));
    assert!(!allowed(&c, "x/b", "y/b", 80), "y/b has no such named port");
}

#[test]
fn ip_block_except_and_world() {
    let set = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.10/32]}\n",
    );
    let c: Compiler = Compiler::with_policies(model(), set).unwrap();
    assert!(allowed(&c, "x/b", "x/a", 80));
    assert!(allowed(&c, "x/b", "y/b", 80));
    assert!(!allowed(&c, "x/b", "y/a", 80));
    let out: IpAddr = "8.8.8.8".parse().unwrap();
    let k = c.flow_key("10.244.1.11".parse().unwrap(), out, proto::TCP, 1000, 443);
    assert!(!c.decide(&k).allowed());
    assert_eq!(k.dst_id, control::identity::WORLD);
}

#[test]
fn quarantine_label_cuts_workload_off() {
    let set = parse_text(
        "q.toml",
        "[[policy]]\nname = \"open\"\nnamespace = \"x\"\n[[policy.ingress]]\n",
    )
    .unwrap();
    let mut c: Compiler = Compiler::with_policies(model(), set).unwrap();
    assert!(allowed(&c, "x/a", "x/b", 80));
    let d = c
        .set_workload_labels("x/a", labels("pod=a,bulkhead.io/quarantine=true"))
        .unwrap();
    assert!(!d.inserts.is_empty());
    assert!(!allowed(&c, "x/a", "x/b", 80));
    assert!(!allowed(&c, "y/a", "x/a", 80));
    assert!(
        allowed(&c, "x/a2", "x/b", 80),
        "same old labels, not quarantined"
    );
    c.set_workload_labels("x/a", labels("pod=a")).unwrap();
    assert!(allowed(&c, "x/a", "x/b", 80));
}

#[test]
fn workload_move_touches_only_the_map() {
    let set = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: a}}}]\n",
    );
    let mut c: Compiler = Compiler::with_policies(model(), set).unwrap();
    let d = c
        .move_workload("y/b", vec!["10.244.9.9".parse().unwrap()])
        .unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        c.identity_of("10.244.9.9".parse().unwrap()),
        c.workload_identity("y/b").unwrap()
    );
    assert_eq!(
        c.identity_of("10.244.2.11".parse().unwrap()),
        control::identity::WORLD
    );
    // A label change to an existing label set changes no rule either.
    let d = c.set_workload_labels("y/b", labels("pod=a")).unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(c.workload_identity("y/b"), c.workload_identity("y/a"));
}

#[test]
fn case_with_pod_and_namespace_lifecycle() {
    let yaml = r#"
id: T01
steps:
- step: 1
  actions:
  - op: create_policy
    policy:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: allow-from-new, namespace: x}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{namespaceSelector: {matchLabels: {team: new}}}]
  - op: create_namespace
    namespace: n
    labels: {team: new}
  - op: create_pod
    namespace: n
    pod: d
    ip: 10.244.4.10
    labels: {pod: d}
    containerPorts: [{name: serve-80-tcp, containerPort: 80, protocol: TCP}, {containerPort: 9}]
  probes:
  - port: 80
    protocol: TCP
    columns: [x/a, x/b, n/d]
    matrix:
      x/a: '-11'
      x/b: 0-1
      n/d: 11-
- step: 2
  actions:
  - op: delete_pod
    namespace: n
    pod: d
  - op: create_pod
    pod: n/d
    ip: 10.244.4.99
    labels: {pod: d}
  - op: set_namespace_labels
    namespace: y
    labels: {team: new}
  probes:
  - port: 80
    protocol: TCP
    columns: [x/a, y/b, n/d]
    matrix:
      y/b: 1-1
      n/d: 11-
- step: 3
  actions:
  - op: delete_namespace
    namespace: n
  - op: delete_policy
    namespace: x
    name: allow-from-new
  - op: create_policy
    policy:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: deny-all, namespace: y}
      spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
  probes:
  - port: 80
    protocol: TCP
    columns: [x/a, x/b, y/a]
    matrix:
      x/b: 1-0
      y/b: 000
"#;
    let case: Case = serde_yaml::from_str(yaml).unwrap();
    let r = run_case::<flowtable::Classifier>(&case, &model());
    assert!(r.passed(), "{:?} {:?}", r.error, r.diffs);
    assert_eq!(r.cells, 6 + 4 + 5);
    // The same case with one cell flipped reports exactly that cell.
    let bad: Case = serde_yaml::from_str(&yaml.replace("x/b: 1-0", "x/b: 1-1")).unwrap();
    let r = run_case::<flowtable::Classifier>(&bad, &model());
    assert_eq!(
        r.diffs,
        vec!["step 3 80/TCP x/b->y/a: expected allow, got deny".to_string()]
    );
}

/// Decisions of every pair on a few ports, for comparing two compilers.
fn fingerprint<C: control::RuleTable>(c: &Compiler<C>) -> Vec<(String, bool)> {
    let keys: Vec<String> = c.model().workloads.keys().cloned().collect();
    let mut v = Vec::new();
    for s in &keys {
        for d in &keys {
            if s != d {
                for (pr, port) in [(proto::TCP, 80), (proto::TCP, 8080), (proto::UDP, 80)] {
                    v.push((
                        format!("{s}->{d} {port}/{pr}"),
                        probe(c, s, d, pr, port).unwrap(),
                    ));
                }
            }
        }
    }
    v
}

#[test]
fn incremental_updates_match_a_fresh_compile_linear() {
    incremental_vs_fresh::<flowtable::LinearClassifier>();
}

#[test]
fn incremental_updates_match_a_fresh_compile_classifier() {
    incremental_vs_fresh::<flowtable::Classifier>();
}

fn incremental_vs_fresh<C: control::RuleTable>() {
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p1, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}, {namespaceSelector: {matchLabels: {open: 'yes'}}}]\n    ports: [{port: web}, {protocol: UDP}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p2, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [b]}]}}]\n";
    let set = policies(yaml);
    let mut c: Compiler<C> = Compiler::with_policies(model(), set.clone()).unwrap();
    let check = |c: &Compiler<C>, what: &str| {
        let fresh: Compiler<C> = Compiler::with_policies(c.model().clone(), set.clone()).unwrap();
        let (a, b) = (fingerprint(c), fingerprint(&fresh));
        let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        assert!(differ.is_empty(), "after {what}: {differ:?}");
        assert_eq!(c.rule_count(), fresh.rule_count(), "after {what}");
    };
    check(&c, "load");
    c.set_workload_labels("x/b", labels("pod=b,role=client"))
        .unwrap();
    check(&c, "relabel to a new identity");
    c.set_namespace_labels("y", labels("ns=y,open=yes"))
        .unwrap();
    check(&c, "namespace relabel");
    c.add_workload(wl("y", "c", "pod=c", "10.244.2.12", &[("web", 81)]))
        .unwrap();
    check(&c, "add workload");
    c.move_workload("x/a2", vec!["10.244.1.99".parse().unwrap()])
        .unwrap();
    check(&c, "move a workload with a per-pod named port");
    c.set_workload_labels("x/a2", labels("pod=b")).unwrap();
    check(&c, "relabel to an existing identity");
    c.remove_workload("x/a").unwrap();
    check(&c, "remove workload");
    c.remove_namespace("y").unwrap();
    let set2 = control::PolicySet {
        policies: set
            .policies
            .iter()
            .filter(|p| p.namespace.as_deref() != Some("y"))
            .cloned()
            .collect(),
        settings: set.settings.clone(),
    };
    let fresh: Compiler<C> = Compiler::with_policies(c.model().clone(), set2).unwrap();
    assert_eq!(
        fingerprint(&c),
        fingerprint(&fresh),
        "after namespace delete"
    );
    assert_eq!(c.rule_count(), fresh.rule_count());
}

const MIXED: &str = r#"
[[policy]]
name = "admin-guard"
tier = "admin"
priority = 5
selector = "role=db"
  [[policy.ingress]]
  action = "pass"
  from = [{ namespaces = "env=prod", selector = "role=api" }]
  [[policy.ingress]]
  action = "deny"

[[policy]]
name = "api"
namespace = "x"
selector = "role=api"
  [[policy.ingress]]
  from = [{ selector = "role=web" }, { namespaces = "env=prod" }]
  ports = ["web", "81/udp"]
  [[policy.egress]]
  to = [{ selector = "role in (db,web)" }, { cidr = "10.244.0.0/16", except = ["10.244.2.0/24"] }]

[[policy]]
name = "db"
namespace = "y"
selector = "role=db"
  [[policy.ingress]]
  action = "deny"
  from = [{ namespaces = "", selector = "role=web" }]
  [[policy.ingress]]
  from = [{ namespaces = "" }]
  ports = ["80/tcp"]

[[policy]]
name = "baseline-web"
tier = "baseline"
selector = "role=web"
  [[policy.egress]]
  action = "deny"
  to = [{ entity = "cluster" }]
  ports = ["8080"]

[[policy]]
name = "egress-named"
namespace = "y"
selector = "!role"
  [[policy.egress]]
  to = [{ namespaces = "" }]
  ports = ["web"]
"#;

fn incremental_random<C: control::RuleTable>(seed: u64) {
    let set = parse_text("mixed.toml", MIXED).unwrap();
    let mut m = model();
    m.namespaces
        .get_mut("x")
        .unwrap()
        .labels
        .insert("env".into(), "prod".into());
    let mut c: Compiler<C> = Compiler::with_policies(m, set.clone()).unwrap();
    let mut x = seed;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let roles = [
        "role=web",
        "role=api",
        "role=db",
        "",
        "role=web,bulkhead.io/quarantine=true",
    ];
    let mut next_ip = 50;
    for step in 0..120 {
        let keys: Vec<String> = c.model().workloads.keys().cloned().collect();
        let what = match rnd(6) {
            0 | 1 if !keys.is_empty() => {
                let k = &keys[rnd(keys.len())];
                c.set_workload_labels(k, labels(roles[rnd(roles.len())]))
                    .unwrap();
                format!("relabel {k}")
            }
            2 => {
                next_ip += 1;
                let ns = ["x", "y"][rnd(2)];
                let ports: &[(&str, u16)] =
                    [&[("web", 80)][..], &[("web", 8080)][..], &[][..]][rnd(3)];
                let w = wl(
                    ns,
                    &format!("n{next_ip}"),
                    roles[rnd(roles.len())],
                    &format!("10.244.{}.{next_ip}", 1 + rnd(3)),
                    ports,
                );
                c.add_workload(w).unwrap();
                format!("add n{next_ip}")
            }
            3 if keys.len() > 2 => {
                let k = &keys[rnd(keys.len())];
                c.remove_workload(k).unwrap();
                format!("remove {k}")
            }
            4 if !keys.is_empty() => {
                next_ip += 1;
                let k = &keys[rnd(keys.len())];
                c.move_workload(
                    k,
                    vec![format!("10.244.{}.{next_ip}", 1 + rnd(3)).parse().unwrap()],
                )
                .unwrap();
                format!("move {k}")
            }
            _ => {
                let ns = ["x", "y"][rnd(2)];
                let l = ["env=prod", "env=dev", ""][rnd(3)];
                c.set_namespace_labels(ns, labels(l)).unwrap();
                format!("ns {ns} {l}")
            }
        };
        let fresh: Compiler<C> = Compiler::with_policies(c.model().clone(), set.clone()).unwrap();
        let (a, b) = (fingerprint(&c), fingerprint(&fresh));
        let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        assert!(
            differ.is_empty(),
            "seed {seed} step {step} after {what}: {differ:?}"
        );
        assert_eq!(
            c.rule_count(),
            fresh.rule_count(),
            "seed {seed} step {step} after {what}"
        );
    }
}

#[test]
fn random_changes_match_a_fresh_compile() {
    for seed in [1u64, 7, 42, 1234, 99991] {
        incremental_random::<flowtable::LinearClassifier>(seed);
    }
    incremental_random::<flowtable::Classifier>(5);
}

#[test]
fn ipv6_addresses_and_blocks() {
    let mut m = model();
    let mut w = wl("x", "six", "pod=six", "10.244.1.60", &[]);
    w.addresses.push("fd00:1::60".parse().unwrap());
    m.workloads.insert(w.key(), w);
    let mut w = wl("y", "six", "pod=six6", "10.244.2.60", &[]);
    w.addresses = vec![
        "fd00:2::60".parse().unwrap(),
        "10.244.2.60".parse().unwrap(),
    ];
    m.workloads.insert(w.key(), w);
    let set = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: six}}\n  ingress:\n  - from: [{ipBlock: {cidr: 'fd00:2::/32'}}]\n",
    );
    let c: Compiler = Compiler::with_policies(m, set).unwrap();
    let v6 = |s: &str, d: &str| {
        let k = c.flow_key(s.parse().unwrap(), d.parse().unwrap(), proto::TCP, 1000, 80);
        c.decide(&k).allowed()
    };
    assert_eq!(
        c.identity_of("fd00:1::60".parse().unwrap()),
        c.workload_identity("x/six").unwrap()
    );
    assert!(v6("fd00:2::60", "fd00:1::60"), "inside the v6 block");
    assert!(!v6("fd00:3::1", "fd00:1::60"), "outside the v6 block");
    assert!(
        !v6("10.244.2.60", "10.244.1.60"),
        "a v6 block never matches v4"
    );
    // The probe picks a common family: y/six has v6 first, x/six v4 first.
    assert!(probe(&c, "y/six", "x/six", proto::TCP, 80).unwrap());
}

#[test]
fn audit_policy_is_observed_never_enforced() {
    let toml = "[[policy]]\nname = \"lockdown\"\nnamespace = \"x\"\naudit = true\nselector = \"pod=a\"\n[[policy.ingress]]\naction = \"deny\"\n";
    let c: Compiler =
        Compiler::with_policies(model(), parse_text("a.toml", toml).unwrap()).unwrap();
    let k = c.flow_key(
        "10.244.1.11".parse().unwrap(),
        "10.244.1.10".parse().unwrap(),
        proto::TCP,
        1000,
        80,
    );
    assert!(c.decide(&k).allowed(), "audit mode enforces nothing");
    let o = c.observe(&k);
    let r = o.ingress.rule.expect("the audit rule matched");
    assert_eq!(o.ingress.action, flowtable::Action::Deny);
    assert_eq!(c.origin(&r).policy, "x/lockdown");
    assert_ne!(
        control::compiler::cookie::flags(r.cookie) & control::compiler::cookie::AUDIT,
        0
    );
}
