//! Control-plane figures: full compile of many policies over many workloads
//! (time, peak RSS) and incremental diff latency (p50/p99) for label changes
//! and workload moves. A harness that prints figures, not a test.
//!
//! ```text
//! CARGO_PROFILE_RELEASE_LTO=off cargo run --release -p control --example compile_bench [-- POLICIES WORKLOADS]
//! ```

use control::model::{proto, Model, NamedPort, Workload};
use control::policy::{
    NsScope, Origin, Peer, Policy, PolicyRule, PolicySet, PortRef, PortSpec, RuleAction, TierKind,
};
use control::{Compiler, LabelSelector, Labels};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const APPS: usize = 100;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn sel(k: &str, v: String) -> LabelSelector {
    LabelSelector {
        match_labels: labels(&[(k, v)]),
        ..Default::default()
    }
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32))
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A table that only stores rules: isolates the compiler's own cost from the classifier's.
#[derive(Default, Debug)]
struct StoreOnly(std::collections::HashMap<flowtable::RuleId, flowtable::Rule>);

impl flowtable::RuleLookup for StoreOnly {
    fn lookup(&self, k: &flowtable::FlowKey) -> Option<&flowtable::Rule> {
        self.0
            .values()
            .filter(|r| r.m.matches(k))
            .max_by_key(|r| (r.priority, std::cmp::Reverse(r.id)))
    }
}

impl control::RuleTable for StoreOnly {
    fn insert_rule(&mut self, r: flowtable::Rule) {
        self.0.insert(r.id, r);
    }
    fn remove_rule(&mut self, id: flowtable::RuleId) {
        self.0.remove(&id);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--store-only") {
        println!("tables: rule store only (no classifier index)");
        run::<StoreOnly>();
    } else {
        println!("tables: flowtable::Classifier");
        run::<flowtable::Classifier>();
    }
}

fn run<C: control::RuleTable>() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_pol = args.first().copied().unwrap_or(10_000);
    let n_wl = args.get(1).copied().unwrap_or(100_000);
    let n_ns = (n_pol / APPS).max(1);
    let rss0 = peak_rss_kb();

    // Model: n_ns namespaces, workloads spread over APPS apps per namespace.
    let mut model = Model::default();
    for n in 0..n_ns {
        model.add_namespace(
            &format!("ns{n}"),
            labels(&[("team", format!("t{}", n % 20))]),
        );
    }
    for i in 0..n_wl {
        let ns = i % n_ns;
        let app = (i / n_ns) % APPS;
        let w = Workload {
            name: format!("w{i}"),
            namespace: format!("ns{ns}"),
            labels: labels(&[
                ("app", format!("a{app}")),
                ("tier", format!("t{}", app % 3)),
            ]),
            addresses: vec![addr(i)],
            named_ports: vec![NamedPort {
                name: "http".into(),
                port: 8080,
                proto: proto::TCP,
            }],
            ..Default::default()
        };
        model.workloads.insert(w.key(), w);
    }

    // Policies: per namespace, policy j selects app=aj and admits app=a(j-1) on 8080;
    // every 10th also admits a team's namespaces, every 10th uses the named port,
    // every 25th adds an egress ipBlock rule.
    let mut policies = Vec::with_capacity(n_pol);
    for p in 0..n_pol {
        let ns = p % n_ns;
        let j = (p / n_ns) % APPS;
        let mut peers = vec![Peer::Pods {
            ns: NsScope::Same,
            pods: sel("app", format!("a{}", (j + APPS - 1) % APPS)),
        }];
        if p % 10 == 3 {
            peers.push(Peer::Pods {
                ns: NsScope::Select(sel("team", format!("t{}", p % 20))),
                pods: sel("app", "a0".into()),
            });
        }
        let port = if p % 10 == 7 {
            PortRef::Named("http".into())
        } else {
            PortRef::Num(8080, None)
        };
        let ingress = vec![PolicyRule {
            action: RuleAction::Allow,
            peers: Some(peers),
            ports: vec![PortSpec {
                proto: Some(proto::TCP),
                port: Some(port),
            }],
            log: false,
        }];
        let egress = (p % 25 == 5).then(|| {
            vec![PolicyRule {
                action: RuleAction::Allow,
                peers: Some(vec![Peer::Cidr {
                    cidr: control::policy::parse_cidr("192.168.0.0/16").unwrap(),
                    except: vec![control::policy::parse_cidr("192.168.7.0/24").unwrap()],
                }]),
                ports: vec![PortSpec {
                    proto: Some(proto::UDP),
                    port: Some(PortRef::Num(53, None)),
                }],
                log: false,
            }]
        });
        policies.push(Policy {
            name: format!("p{p}"),
            namespace: Some(format!("ns{ns}")),
            tier: TierKind::Application,
            priority: 1000,
            audit: false,
            selector: sel("app", format!("a{j}")),
            ns_selector: None,
            ingress: Some(ingress),
            egress,
            origin: Origin::default(),
        });
    }
    let set = PolicySet {
        policies,
        settings: Default::default(),
    };

    let t0 = Instant::now();
    let mut c: Compiler<C> = Compiler::new(model, Default::default()).expect("model");
    let t_model = t0.elapsed();
    let t1 = Instant::now();
    let d = c.replace_policies(set).expect("policies");
    let t_pol = t1.elapsed();
    println!(
        "full compile: {n_pol} policies over {n_wl} workloads ({n_ns} namespaces, {} identities): model {:.2} s + policies {:.2} s = {:.2} s; {} rules inserted; peak RSS {} MB (before build {} MB)",
        c.identities().len(),
        t_model.as_secs_f64(),
        t_pol.as_secs_f64(),
        (t_model + t_pol).as_secs_f64(),
        d.inserts.len(),
        peak_rss_kb() / 1024,
        rss0 / 1024
    );

    // Incremental: label change to a new label set (a new identity, rules for it).
    let iters = 2000;
    let mut new_set = Vec::with_capacity(iters);
    let mut cool = Vec::with_capacity(iters);
    let mut existing_set = Vec::with_capacity(iters);
    let mut moves = Vec::with_capacity(iters);
    let mut rules_touched = 0usize;
    let mut hot = Vec::new();
    let mut hot_rules = 0usize;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    for it in 0..iters {
        let i = rnd() % n_wl;
        let key = format!("ns{}/w{i}", i % n_ns);
        let w = c.model().workloads.get(&key).expect("workload").clone();
        // To a label set no other workload has: allocates an identity, compiles its rules.
        let mut l = w.labels.clone();
        l.insert("canary".into(), format!("c{it}"));
        let t = Instant::now();
        let d = c.set_workload_labels(&key, l).expect("relabel");
        let el = t.elapsed();
        new_set.push(el);
        if w.labels.get("app").is_some_and(|a| a == "a0") {
            hot.push(el);
            hot_rules += d.inserts.len() + d.deletes.len();
        } else {
            cool.push(el);
        }
        rules_touched += d.inserts.len() + d.deletes.len();
        // Back to its old labels: an identity that exists (releases the canary one).
        let t = Instant::now();
        c.set_workload_labels(&key, w.labels.clone())
            .expect("relabel back");
        existing_set.push(t.elapsed());
        // Move: a new address; only the IP -> identity map changes.
        let t = Instant::now();
        let d = c.move_workload(&key, vec![addr(n_wl + it)]).expect("move");
        moves.push(t.elapsed());
        assert!(d.is_empty() || !w.named_ports.is_empty());
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "label change to a new label set:    p50 {:.1} us  p99 {:.1} us  ({} iterations, {:.1} rule changes each)",
        us(pct(&mut new_set, 0.5)),
        us(pct(&mut new_set, 0.99)),
        iters,
        rules_touched as f64 / iters as f64
    );
    println!(
        "  without the hot label: p50 {:.1} us  p99 {:.1} us",
        us(pct(&mut cool, 0.5)),
        us(pct(&mut cool, 0.99))
    );
    if !hot.is_empty() {
        println!(
            "  of which app=a0 (a peer of {} policies): {} changes, {:.0} rule changes each, p50 {:.1} us, max {:.1} us",
            n_pol / 10,
            hot.len(),
            hot_rules as f64 / hot.len() as f64,
            us(pct(&mut hot, 0.5)),
            us(pct(&mut hot, 1.0))
        );
    }
    println!(
        "label change to an existing set:    p50 {:.1} us  p99 {:.1} us",
        us(pct(&mut existing_set, 0.5)),
        us(pct(&mut existing_set, 0.99))
    );
    println!(
        "workload move (new address):         p50 {:.1} us  p99 {:.1} us",
        us(pct(&mut moves, 0.5)),
        us(pct(&mut moves, 0.99))
    );
    // One policy changed (its port), then changed back.
    let mut pol = Vec::with_capacity(iters);
    for _ in 0..iters / 2 {
        let p = rnd() % n_pol;
        let key = format!("ns{}/p{p}", p % n_ns);
        let old = c.policy(&key).expect("policy").clone();
        let mut new = old.clone();
        if let Some(r) = new.ingress.as_mut().and_then(|v| v.first_mut()) {
            r.ports = vec![PortSpec {
                proto: Some(proto::TCP),
                port: Some(PortRef::Num(9090, None)),
            }];
        }
        let t = Instant::now();
        c.set_policy(new).expect("policy change");
        pol.push(t.elapsed());
        let t = Instant::now();
        c.set_policy(old).expect("policy change back");
        pol.push(t.elapsed());
    }
    println!(
        "one policy changed:                  p50 {:.1} us  p99 {:.1} us",
        us(pct(&mut pol, 0.5)),
        us(pct(&mut pol, 0.99))
    );
    println!("peak RSS at end: {} MB", peak_rss_kb() / 1024);
}
