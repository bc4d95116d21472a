//! Kubernetes NetworkPolicy v1 oracle: random policies and pods, decided by a
//! direct reading of the v1 rules (no identities, no tables), must give the
//! same answers as the compiled rules in the flowtable classifier.

use control::labels::{LabelSelector, Labels, Operator, Requirement};
use control::model::{proto, Model, NamedPort, Workload};
use control::policy::{
    parse_cidr, NsScope, Origin, Peer, Policy, PolicyRule, PolicySet, PortRef, PortSpec,
    RuleAction, TierKind,
};
use control::Compiler;
use flowtable::key::addr_of;

struct Rng(u64);
impl Rng {
    fn n(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    fn b(&mut self, pct: usize) -> bool {
        self.n(100) < pct
    }
}

const KEYS: [&str; 2] = ["app", "tier"];
const VALS: [&str; 3] = ["a", "b", "c"];

fn rand_labels(r: &mut Rng) -> Labels {
    let mut l = Labels::new();
    for k in KEYS {
        if r.b(70) {
            l.insert(k.into(), VALS[r.n(3)].into());
        }
    }
    l
}

fn rand_sel(r: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::default();
    if r.b(50) {
        s.match_labels
            .insert(KEYS[r.n(2)].into(), VALS[r.n(3)].into());
    }
    if r.b(40) {
        let op = [
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ][r.n(4)];
        let values = match op {
            Operator::In | Operator::NotIn => {
                vec![VALS[r.n(3)].to_string(), VALS[r.n(3)].to_string()]
            }
            _ => vec![],
        };
        s.match_expressions.push(Requirement {
            key: KEYS[r.n(2)].into(),
            operator: op,
            values,
        });
    }
    s
}

fn rand_peer(r: &mut Rng) -> Peer {
    match r.n(4) {
        0 => Peer::Pods {
            ns: NsScope::Same,
            pods: rand_sel(r),
        },
        1 => Peer::Pods {
            ns: NsScope::Select(rand_sel(r)),
            pods: LabelSelector::default(),
        },
        2 => Peer::Pods {
            ns: NsScope::Select(rand_sel(r)),
            pods: rand_sel(r),
        },
        _ => {
            let cidr = ["10.9.0.0/16", "10.9.1.0/24", "0.0.0.0/0", "10.9.2.0/23"][r.n(4)];
            let except: Vec<_> = match (cidr, r.n(3)) {
                ("10.9.0.0/16" | "0.0.0.0/0", 0) => vec![parse_cidr("10.9.1.0/24").unwrap()],
                ("10.9.0.0/16" | "0.0.0.0/0", 1) => vec![
                    parse_cidr("10.9.2.3/32").unwrap(),
                    parse_cidr("10.9.3.0/25").unwrap(),
                ],
                _ => vec![],
            };
            Peer::Cidr {
                cidr: parse_cidr(cidr).unwrap(),
                except,
            }
        }
    }
}

fn rand_port(r: &mut Rng) -> PortSpec {
    let pr = [proto::TCP, proto::UDP, proto::SCTP][r.n(3)];
    let port = match r.n(5) {
        0 => None,
        1 => Some(PortRef::Num(80, None)),
        2 => Some(PortRef::Num(79, Some(81))),
        3 => Some(PortRef::Named("web".into())),
        _ => Some(PortRef::Named("alt".into())),
    };
    PortSpec {
        proto: Some(pr),
        port,
    }
}

fn rand_rules(r: &mut Rng) -> Vec<PolicyRule> {
    (0..r.n(3))
        .map(|_| PolicyRule {
            action: RuleAction::Allow,
            peers: if r.b(25) {
                None
            } else {
                Some((0..1 + r.n(2)).map(|_| rand_peer(r)).collect())
            },
            ports: if r.b(30) {
                vec![]
            } else {
                (0..1 + r.n(2)).map(|_| rand_port(r)).collect()
            },
            log: false,
        })
        .collect()
}

fn scenario(seed: u64) -> (Model, Vec<Policy>) {
    let mut r = Rng(seed);
    let mut m = Model::default();
    let nss = ["x", "y", "z"];
    for ns in nss {
        m.add_namespace(ns, rand_labels(&mut r));
    }
    for i in 0..9 {
        let ns = nss[i % 3];
        // Named ports differ per pod: "web" is 80 or 81, TCP or UDP; "alt" sometimes absent.
        let mut named = vec![NamedPort {
            name: "web".into(),
            port: 80 + r.n(2) as u16,
            proto: [proto::TCP, proto::UDP][r.n(2)],
        }];
        if r.b(50) {
            named.push(NamedPort {
                name: "alt".into(),
                port: 81,
                proto: proto::SCTP,
            });
        }
        let w = Workload {
            name: format!("p{i}"),
            namespace: ns.into(),
            labels: rand_labels(&mut r),
            addresses: vec![format!("10.9.{}.{}", i % 4, i).parse().unwrap()],
            named_ports: named,
            ..Default::default()
        };
        m.workloads.insert(w.key(), w);
    }
    let mut pols = Vec::new();
    for i in 0..1 + r.n(4) {
        let ing = r.b(70);
        let eg = r.b(50) || !ing;
        pols.push(Policy {
            name: format!("np{i}"),
            namespace: Some(nss[r.n(3)].into()),
            tier: TierKind::Application,
            priority: 1000,
            audit: false,
            selector: rand_sel(&mut r),
            ns_selector: None,
            ingress: ing.then(|| rand_rules(&mut r)),
            egress: eg.then(|| rand_rules(&mut r)),
            origin: Origin::default(),
        });
    }
    (m, pols)
}

/// v1 semantics, read directly.
fn oracle(m: &Model, pols: &[Policy], s: &Workload, d: &Workload, pr: u8, port: u16) -> bool {
    let nsl = |w: &Workload| &m.namespaces[&w.namespace].labels;
    let peer_ok = |p: &Policy, peer: &Peer, x: &Workload| match peer {
        Peer::Pods {
            ns: NsScope::Same,
            pods,
        } => Some(&x.namespace) == p.namespace.as_ref() && pods.matches(&x.labels),
        Peer::Pods {
            ns: NsScope::Select(n),
            pods,
        } => n.matches(nsl(x)) && pods.matches(&x.labels),
        Peer::Cidr { cidr, except } => {
            let a = addr_of(x.addresses[0]);
            cidr.contains(a) && !except.iter().any(|e| e.contains(a))
        }
        Peer::Entity(_) => unreachable!(),
    };
    let port_ok = |ps: &PortSpec| {
        ps.proto.is_none_or(|p| p == pr)
            && match &ps.port {
                None => true,
                Some(PortRef::Num(a, e)) => *a <= port && port <= e.unwrap_or(*a),
                Some(PortRef::Named(n)) => d.resolve_port(n, pr) == Some(port),
            }
    };
    let dir_ok = |w: &Workload, other: &Workload, ingress: bool| {
        let selecting: Vec<&Policy> = pols
            .iter()
            .filter(|p| {
                p.namespace.as_deref() == Some(&w.namespace) && p.selector.matches(&w.labels)
            })
            .filter(|p| {
                if ingress {
                    p.ingress.is_some()
                } else {
                    p.egress.is_some()
                }
            })
            .collect();
        selecting.is_empty()
            || selecting.iter().any(|p| {
                let rules = if ingress {
                    p.ingress.as_ref()
                } else {
                    p.egress.as_ref()
                };
                rules.unwrap().iter().any(|r| {
                    r.peers
                        .as_ref()
                        .is_none_or(|ps| ps.iter().any(|peer| peer_ok(p, peer, other)))
                        && (r.ports.is_empty() || r.ports.iter().any(port_ok))
                })
            })
    };
    dir_ok(s, d, false) && dir_ok(d, s, true)
}

#[test]
fn compiled_rules_agree_with_v1_oracle() {
    let mut cells = 0;
    let mut allowed = 0;
    for seed in 1..=150u64 {
        let (m, pols) = scenario(seed * 7919);
        let set = PolicySet {
            policies: pols.clone(),
            settings: Default::default(),
        };
        let c: Compiler = Compiler::with_policies(m.clone(), set).unwrap();
        for s in m.workloads.values() {
            for d in m.workloads.values() {
                if s.key() == d.key() {
                    continue;
                }
                for (pr, port) in [
                    (proto::TCP, 80),
                    (proto::TCP, 81),
                    (proto::UDP, 80),
                    (proto::UDP, 81),
                    (proto::SCTP, 81),
                    (proto::TCP, 8080),
                ] {
                    let want = oracle(&m, &pols, s, d, pr, port);
                    let got =
                        control::conformance::probe(&c, &s.key(), &d.key(), pr, port).unwrap();
                    assert_eq!(
                        got,
                        want,
                        "seed {seed}: {} -> {} {port}/{pr}\npolicies: {pols:#?}",
                        s.key(),
                        d.key()
                    );
                    cells += 1;
                    allowed += got as usize;
                }
            }
        }
    }
    // The scenarios exercise both outcomes substantially.
    assert!(
        allowed > cells / 10 && allowed < cells * 9 / 10,
        "{allowed} of {cells}"
    );
}
