//! Replays policy-conformance cases (../shared/data/policy-conformance schema):
//! steps of policy, label, workload and namespace changes, each followed by
//! probe matrices decided through the compiled flowtable tables.
//!
//! A probe S -> D on port/proto opens a connection as the dataplane would:
//! the first packet (a SYN for TCP) gets its identities from the IP ->
//! identity map and its verdict from the compiled tables (egress at S AND
//! ingress at D); an allowed one is entered in flowtable's conntrack, and the
//! reply (SYN-ACK) must then be admitted by conntrack as the Reply direction
//! of that connection, whatever the policy says about the reverse direction.
//! The cell is allowed when both happen.

use crate::compiler::{Compiler, RuleDiff, RuleTable};
use crate::error::{from_yaml, Error, Result};
use crate::labels::Labels;
use crate::model::{proto, split_key, ConfPod, Model};
use crate::policy::k8s::NetworkPolicy;
use flowtable::conntrack::{Conntrack, CtConfig, CtDir};
use flowtable::parse::l4::tcp_flags::{ACK, SYN};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// One case file.
#[derive(Deserialize, Debug)]
pub struct Case {
    /// Case id (`E10`).
    pub id: String,
    /// Short name.
    #[serde(default)]
    pub name: Option<String>,
    /// Steps, applied cumulatively.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// A model replacing the default one (optional).
    #[serde(default)]
    pub model: Option<serde_yaml::Value>,
}

/// One step.
#[derive(Deserialize, Debug)]
pub struct Step {
    /// Step number.
    #[serde(default)]
    pub step: Option<serde_yaml::Value>,
    /// Changes.
    #[serde(default)]
    pub actions: Vec<CaseAction>,
    /// Checks after the changes.
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// One change.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CaseAction {
    /// Operation.
    pub op: String,
    /// Policy for create/update(/delete).
    #[serde(default)]
    pub policy: Option<serde_yaml::Value>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pod (`name` or `ns/name`).
    #[serde(default)]
    pub pod: Option<String>,
    /// Name (policy or pod).
    #[serde(default)]
    pub name: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<Labels>,
    /// Pod IP.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Pod IPs.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Container ports (`name: 80/TCP`).
    #[serde(default)]
    pub container_ports: Vec<crate::model::ContainerPort>,
}

/// One probe matrix.
#[derive(Deserialize, Debug)]
pub struct Probe {
    /// Destination port.
    pub port: u16,
    /// TCP, UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Destinations.
    pub columns: Vec<String>,
    /// Source -> row string over `columns`: `1` allowed, `0` denied, `-`
    /// not asserted.
    pub matrix: BTreeMap<String, serde_yaml::Value>,
    /// The matrix's zeros as `src->dst` (optional; checked against it).
    #[serde(default)]
    pub denied: Option<Vec<String>>,
}

fn tcp() -> String {
    "TCP".into()
}

/// The outcome of one case.
#[derive(Debug, Clone, Default)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Cells that differ: `step N port/PROTO src->dst: expected X, got Y`.
    pub diffs: Vec<String>,
    /// An error that stopped the case.
    pub error: Option<String>,
    /// Cells checked.
    pub cells: usize,
}

impl CaseResult {
    /// True when every cell matched and nothing failed.
    pub fn passed(&self) -> bool {
        self.diffs.is_empty() && self.error.is_none()
    }
}

/// Parses a case file.
pub fn load_case(path: &Path) -> Result<Case> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        file: path.into(),
        cause: e,
    })?;
    serde_yaml::from_str(&text).map_err(|e| from_yaml(&path.display().to_string(), 0, &e))
}

fn row_string(v: &serde_yaml::Value, width: usize) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        // An all-digit row unquoted in YAML reads as a number: restore leading zeros.
        serde_yaml::Value::Number(n) if n.is_u64() => Some(format!("{:0>width$}", n.as_u64()?)),
        _ => None,
    }
}

fn policy_key(a: &CaseAction) -> Option<String> {
    if let Some(p) = &a.policy {
        let md = p.get("metadata")?;
        let name = md.get("name")?.as_str()?;
        let ns = md
            .get("namespace")
            .and_then(|n| n.as_str())
            .unwrap_or("default");
        return Some(format!("{ns}/{name}"));
    }
    let name = a.name.as_deref()?;
    if name.contains('/') {
        return Some(name.to_string());
    }
    Some(format!(
        "{}/{name}",
        a.namespace.as_deref().unwrap_or("default")
    ))
}

fn pod_key(a: &CaseAction) -> Result<String, String> {
    let p = a
        .pod
        .as_deref()
        .or(a.name.as_deref())
        .ok_or("action needs `pod`")?;
    let (ns, n) = split_key(p, a.namespace.as_deref());
    Ok(format!("{ns}/{n}"))
}

/// Applies one case action to the compiler. Returns the rule diffs in the
/// order the compiler produced them (a dataplane stages them in that order).
///
/// # Errors
/// A malformed action or one the compiler refuses, as one line.
pub fn apply_action<C: RuleTable>(c: &mut Compiler<C>, a: &CaseAction) -> Result<Vec<RuleDiff>, String> {
    let err = |e: Error| e.to_string();
    let mut diffs = Vec::new();
    match a.op.as_str() {
        "create_policy" | "update_policy" => {
            let v = a.policy.clone().ok_or("action needs `policy`")?;
            let np: NetworkPolicy =
                serde_yaml::from_value(v).map_err(|e| format!("policy: {e}"))?;
            if np.api_version != "networking.k8s.io/v1" || np.kind != "NetworkPolicy" {
                return Err(format!(
                    "unsupported policy kind {} {}",
                    np.api_version, np.kind
                ));
            }
            diffs.push(c.set_policy(np.to_policy("<case>", 0)).map_err(err)?);
        }
        "delete_policy" => {
            let k = policy_key(a).ok_or("delete_policy needs `policy` or `name`")?;
            if c.policy(&k).is_none() {
                return Err(format!("delete_policy: no policy {k}"));
            }
            diffs.push(c.remove_policy(&k).map_err(err)?);
        }
        "delete_all_policies" => {
            let keys: Vec<String> = c.policies().iter().map(|p| p.key()).collect();
            for k in keys {
                diffs.push(c.remove_policy(&k).map_err(err)?);
            }
        }
        "set_pod_labels" => {
            let k = pod_key(a)?;
            diffs.push(
                c.set_workload_labels(&k, a.labels.clone().unwrap_or_default())
                    .map_err(err)?,
            );
        }
        "set_namespace_labels" => {
            let ns = a
                .namespace
                .as_deref()
                .or(a.name.as_deref())
                .ok_or("action needs `namespace`")?;
            diffs.push(
                c.set_namespace_labels(ns, a.labels.clone().unwrap_or_default())
                    .map_err(err)?,
            );
        }
        "create_namespace" => {
            let ns = a
                .namespace
                .as_deref()
                .or(a.name.as_deref())
                .ok_or("action needs `namespace`")?;
            diffs.push(
                c.add_namespace(ns, a.labels.clone().unwrap_or_default())
                    .map_err(err)?,
            );
        }
        "delete_namespace" => {
            let ns = a
                .namespace
                .as_deref()
                .or(a.name.as_deref())
                .ok_or("action needs `namespace`")?;
            diffs.push(c.remove_namespace(ns).map_err(err)?);
        }
        "create_pod" | "update_pod" | "set_pod_ip" | "move_pod" => {
            let k = pod_key(a)?;
            let (ns, n) = split_key(&k, None);
            let existing = c.model().workloads.get(&k).cloned();
            // create_pod of an existing pod re-creates it (a re-address, new labels).
            if a.op != "create_pod" && existing.is_none() {
                return Err(format!("{}: no pod {k}", a.op));
            }
            if !c.model().namespaces.contains_key(ns) {
                diffs.push(c.add_namespace(ns, Labels::new()).map_err(err)?);
            }
            let pod = ConfPod {
                namespace: Some(ns.to_string()),
                labels: a
                    .labels
                    .clone()
                    .or_else(|| existing.as_ref().map(|w| w.labels.clone()))
                    .unwrap_or_default(),
                ip: a.ip,
                ips: a.ips.clone(),
                container_ports: a.container_ports.clone(),
            };
            let mut w = pod.workload(ns, n)?;
            if let Some(old) = existing {
                if w.addresses.is_empty() {
                    w.addresses = old.addresses.clone();
                }
                if a.container_ports.is_empty() {
                    w.named_ports = old.named_ports.clone();
                }
                if w.labels == old.labels && w.named_ports == old.named_ports {
                    diffs.push(c.move_workload(&k, w.addresses).map_err(err)?);
                    return Ok(diffs);
                }
            } else if a.container_ports.is_empty() {
                // A new pod with no ports given serves what every pod of the
                // conformance topology serves: 80 and 81 on TCP, UDP and SCTP.
                for port in [80u16, 81] {
                    for (pn, pr) in [
                        ("tcp", proto::TCP),
                        ("udp", proto::UDP),
                        ("sctp", proto::SCTP),
                    ] {
                        let name = format!("serve-{port}-{pn}");
                        w.named_ports.push(crate::model::NamedPort {
                            name,
                            port,
                            proto: pr,
                        });
                    }
                }
            }
            diffs.push(c.replace_workload(w).map_err(err)?);
        }
        "delete_pod" => {
            let k = pod_key(a)?;
            diffs.push(c.remove_workload(&k).map_err(err)?);
        }
        op => return Err(format!("unknown op `{op}`")),
    }
    Ok(diffs)
}

/// Decides one probe cell: true when S may open a connection to D.
pub fn probe<C: RuleTable>(
    c: &Compiler<C>,
    src: &str,
    dst: &str,
    proto: u8,
    port: u16,
) -> Result<bool, String> {
    let s = c
        .model()
        .workloads
        .get(src)
        .ok_or_else(|| format!("no pod {src}"))?;
    let d = c
        .model()
        .workloads
        .get(dst)
        .ok_or_else(|| format!("no pod {dst}"))?;
    // Same family: the first address of the destination's family the source has.
    let (sa, da) = s
        .addresses
        .iter()
        .find_map(|sa| {
            d.addresses
                .iter()
                .find(|da| da.is_ipv4() == sa.is_ipv4())
                .map(|da| (*sa, *da))
        })
        .ok_or_else(|| format!("{src} and {dst} share no address family"))?;
    let mut k = c.flow_key(sa, da, proto, 40000, port);
    let tcp = proto == crate::model::proto::TCP;
    if tcp {
        k.tcp_flags = SYN;
    }
    let mut ct = Conntrack::new(CtConfig {
        capacity: 16,
        ..Default::default()
    });
    let now = 1_000;
    if ct.lookup(&k, 0, now).is_some() {
        return Err("conntrack: a fresh table already knows the flow".into());
    }
    let v = c.decide(&k);
    if !v.allowed() {
        return Ok(false);
    }
    let cookie = v
        .ingress
        .rule
        .or(v.egress.rule)
        .map(|r| r.cookie)
        .unwrap_or(0);
    if ct
        .create(&k, 0, 1, cookie, 60, now)
        .map_err(|_| "conntrack full".to_string())?
        .is_none()
    {
        return Ok(false);
    }
    let mut reply = k.reversed();
    if tcp {
        reply.tcp_flags = SYN | ACK;
    }
    match ct.lookup(&reply, 0, now + 1) {
        Some((r, CtDir::Reply)) => Ok(ct
            .update(r, CtDir::Reply, 0, reply.tcp_flags, 60, now + 1)
            .is_some()),
        _ => Ok(false),
    }
}

/// One cell of a probe matrix: may `src` open a connection to `dst` on
/// `port`/`proto`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Source pod (`ns/name`).
    pub src: String,
    /// Destination pod (`ns/name`).
    pub dst: String,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port.
    pub port: u16,
}

/// Where a case is replayed: the compiler alone ([`run_case`]) or a real
/// dataplane (the binary's `conformance --dataplane`).
pub trait Replay {
    /// Applies one action of a step.
    ///
    /// # Errors
    /// The action is malformed or refused (stops the case).
    fn apply(&mut self, a: &CaseAction) -> Result<(), String>;
    /// Decides every cell of one probe matrix: true where the connection is
    /// allowed (the first packet and its reply both pass).
    ///
    /// # Errors
    /// A cell that cannot be probed (unknown pod, ...): stops the case.
    fn probe(&mut self, cells: &[Cell]) -> Result<Vec<bool>, String>;
}

/// The classifier replay: the compiler's tables plus flowtable's conntrack.
struct CompilerReplay<C: RuleTable>(Compiler<C>);

impl<C: RuleTable> Replay for CompilerReplay<C> {
    fn apply(&mut self, a: &CaseAction) -> Result<(), String> {
        apply_action(&mut self.0, a).map(|_| ())
    }
    fn probe(&mut self, cells: &[Cell]) -> Result<Vec<bool>, String> {
        cells.iter().map(|c| probe(&self.0, &c.src, &c.dst, c.proto, c.port)).collect()
    }
}

/// The model a case runs on: its own `model:` when it has one, else `model`.
///
/// # Errors
/// The case's own model does not parse.
pub fn case_model(case: &Case, model: &Model) -> Result<Model, String> {
    match &case.model {
        Some(v) => serde_yaml::to_string(v).map_err(|e| e.to_string()).and_then(|t| {
            Model::from_yaml(&format!("{} model", case.id), &t).map_err(|e| e.to_string())
        }),
        None => Ok(model.clone()),
    }
}

/// Runs one case over a fresh compiler built from `model`.
pub fn run_case<C: RuleTable>(case: &Case, model: &Model) -> CaseResult {
    run_case_with(case, model, |m| {
        Compiler::<C>::new(m, Default::default())
            .map(CompilerReplay)
            .map_err(|e| e.to_string())
    })
}

/// Runs one case through the replay `make` builds over the case's model:
/// every step's actions, then every probe matrix compared cell by cell.
pub fn run_case_with<R: Replay>(
    case: &Case,
    model: &Model,
    make: impl FnOnce(Model) -> Result<R, String>,
) -> CaseResult {
    let mut res = CaseResult {
        id: case.id.clone(),
        ..Default::default()
    };
    let model = match case_model(case, model) {
        Ok(m) => m,
        Err(e) => {
            res.error = Some(e);
            return res;
        }
    };
    let mut r = match make(model) {
        Ok(r) => r,
        Err(e) => {
            res.error = Some(e);
            return res;
        }
    };
    for (si, step) in case.steps.iter().enumerate() {
        let sn = step
            .step
            .as_ref()
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
            .unwrap_or(si + 1);
        for a in &step.actions {
            if let Err(e) = r.apply(a) {
                res.error = Some(format!("step {sn}: {}: {e}", a.op));
                return res;
            }
        }
        for p in &step.probes {
            let Some(pr) = proto::parse(&p.protocol) else {
                res.error = Some(format!("step {sn}: bad protocol {}", p.protocol));
                return res;
            };
            let mut cells = Vec::new();
            let mut wants = Vec::new();
            for (src, row) in &p.matrix {
                let Some(row) = row_string(row, p.columns.len()) else {
                    res.error = Some(format!("step {sn}: matrix row {src} is not a string"));
                    return res;
                };
                let chars: Vec<char> = row.chars().collect();
                if chars.len() != p.columns.len() {
                    res.error = Some(format!(
                        "step {sn}: row {src} has {} cells for {} columns",
                        chars.len(),
                        p.columns.len()
                    ));
                    return res;
                }
                for (dst, want) in p.columns.iter().zip(chars) {
                    if !matches!(want, '0' | '1' | '-') {
                        res.error = Some(format!("step {sn}: row {src}, column {dst}: cell `{want}` is not 1, 0 or -"));
                        return res;
                    }
                    if want == '-' || src == dst {
                        continue;
                    }
                    cells.push(Cell {
                        src: src.clone(),
                        dst: dst.clone(),
                        proto: pr,
                        port: p.port,
                    });
                    wants.push(want == '1');
                }
            }
            if let Some(listed) = &p.denied {
                // The same zeros as a list: a disagreement is a broken case,
                // reported rather than silently going by the matrix.
                let zeros: std::collections::BTreeSet<String> =
                    cells.iter().zip(&wants).filter(|(_, w)| !**w).map(|(c, _)| format!("{}->{}", c.src, c.dst)).collect();
                let listed: std::collections::BTreeSet<String> = listed.iter().map(|d| d.split_whitespace().collect()).collect();
                if zeros != listed {
                    let only = |a: &std::collections::BTreeSet<String>, b: &std::collections::BTreeSet<String>| {
                        let v: Vec<&str> = a.difference(b).map(String::as_str).take(5).collect();
                        if v.is_empty() { "nothing".to_string() } else { v.join(", ") }
                    };
                    res.error = Some(format!(
                        "step {sn} {}/{}: `denied` disagrees with the matrix's zeros: listed only {}; zero only in the matrix {}",
                        p.port,
                        p.protocol,
                        only(&listed, &zeros),
                        only(&zeros, &listed)
                    ));
                    return res;
                }
            }
            res.cells += cells.len();
            let got = match r.probe(&cells) {
                Ok(g) => g,
                Err(e) => {
                    res.error = Some(format!("step {sn}: {e}"));
                    return res;
                }
            };
            for ((c, w), g) in cells.iter().zip(wants).zip(got) {
                if g != w {
                    res.diffs.push(format!(
                        "step {sn} {}/{} {}->{}: expected {}, got {}",
                        p.port,
                        p.protocol,
                        c.src,
                        c.dst,
                        if w { "allow" } else { "deny" },
                        if g { "allow" } else { "deny" }
                    ));
                }
            }
        }
    }
    if res.cells == 0 {
        res.error = Some("no cell to check (no step has a probe with a 1 or a 0)".into());
    }
    res
}
