//! Command logic behind `bulkhead policy check`, `policy explain`, `reach` and
//! `conformance`. Each takes plain arguments, writes to `out`, and returns the
//! process exit code (`Ok`) or an error whose [`Error::exit_code`] applies.

use crate::compiler::{Compiler, RuleOrigin};
use crate::conformance::{load_case, run_case, CaseResult};
use crate::error::{Error, Result};
use crate::identity::reserved_name;
use crate::labels::{labels_string, LabelSelector};
use crate::model::{proto, Model, Workload};
use crate::policy::{load_files, PolicySet};
use flowtable::{Classifier, Decision, FlowKey, Verdict};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `bulkhead policy check [--model FILE] FILE...`
#[derive(Clone, Debug, Default)]
pub struct CheckArgs {
    /// Model (without one, policies are validated and compiled over an empty model).
    pub model: Option<PathBuf>,
    /// Policy files.
    pub files: Vec<PathBuf>,
}

/// `bulkhead policy explain --model FILE --from W --to W --port N/PROTO FILE...`
#[derive(Clone, Debug, Default)]
pub struct ExplainArgs {
    /// Model.
    pub model: PathBuf,
    /// Policy files.
    pub policies: Vec<PathBuf>,
    /// Source workload (`ns/name`, unique `name`, or an IP address).
    pub from: String,
    /// Destination workload (same forms).
    pub to: String,
    /// `443/TCP`, `53/udp` or `80` (TCP).
    pub port: String,
}

/// `bulkhead reach --model FILE [--from SEL] [--to SEL] [--port N/PROTO] [--json] FILE...`
#[derive(Clone, Debug, Default)]
pub struct ReachArgs {
    /// Model.
    pub model: PathBuf,
    /// Policy files.
    pub policies: Vec<PathBuf>,
    /// Sources: a label selector (`app=web,env in (prod)`), or `ns/name`; all when absent.
    pub from: Option<String>,
    /// Destinations (same forms); all when absent.
    pub to: Option<String>,
    /// One port; without it every port a rule names is tried.
    pub port: Option<String>,
    /// JSON output.
    pub json: bool,
}

/// `bulkhead conformance [--model FILE] CASE.yaml...`
#[derive(Clone, Debug, Default)]
pub struct ConformanceArgs {
    /// Model; default: `model.yaml` next to the cases' directory.
    pub model: Option<PathBuf>,
    /// Case files.
    pub cases: Vec<PathBuf>,
}

fn build(model: &Path, policies: &[PathBuf]) -> Result<Compiler> {
    let m = Model::load(model)?;
    let set = load_files(policies)?;
    Compiler::with_policies(m, set)
}

/// Parses `443/TCP`, `53/udp`, `80` into (proto, port).
pub fn parse_port_proto(s: &str) -> Result<(u8, u16)> {
    let bad = |m: &str| Error::BadArg {
        arg: format!("--port {s}"),
        msg: m.to_string(),
    };
    let (p, pr) = s.split_once('/').unwrap_or((s, "TCP"));
    let port: u16 = p
        .trim()
        .parse()
        .map_err(|_| bad("port must be a number 0-65535"))?;
    let pr = proto::parse(pr.trim())
        .ok_or_else(|| bad("protocol must be TCP, UDP, SCTP or a number"))?;
    Ok((pr, port))
}

/// `policy check`: validates and compiles; prints the rule count per policy.
/// Exit code 0 when everything is valid.
pub fn policy_check(args: &CheckArgs, out: &mut dyn Write) -> Result<i32> {
    let set = load_files(&args.files)?;
    let model = match &args.model {
        Some(m) => Model::load(m)?,
        None => Model::default(),
    };
    let n = set.policies.len();
    let c: Compiler = Compiler::with_policies(model, set)?;
    for p in c.policies() {
        let d = match (&p.ingress, &p.egress) {
            (Some(_), Some(_)) => "ingress+egress",
            (Some(_), None) => "ingress",
            (None, Some(_)) => "egress",
            (None, None) => "-",
        };
        writeln!(
            out,
            "{:<40} {:<13} tier {:<11} prio {:<5} {:<14}{} {:>6} rules   ({}:{})",
            p.key(),
            p.origin.kind,
            p.tier.name(),
            p.priority,
            d,
            if p.audit { " audit" } else { "" },
            c.policy_rule_count(&p.key()),
            p.origin.file,
            p.origin.line
        )?;
    }
    writeln!(
        out,
        "ok: {n} policies, {} rules, {} identities, {} workloads{}",
        c.rule_count(),
        c.identities().len(),
        c.model().workloads.len(),
        if args.model.is_none() {
            " (no model given: rules need workloads)"
        } else {
            ""
        }
    )?;
    Ok(0)
}

struct Endpoint {
    name: String,
    addr: IpAddr,
}

fn endpoint(c: &Compiler, s: &str, family_of: Option<IpAddr>) -> Result<Endpoint> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let wl = c
            .model()
            .workloads
            .values()
            .find(|w| w.addresses.contains(&ip))
            .cloned();
        return Ok(Endpoint {
            name: wl
                .as_ref()
                .map(|w| w.key())
                .unwrap_or_else(|| ip.to_string()),
            addr: ip,
        });
    }
    let w = c.model().find(s)?.clone();
    let addr = w
        .addresses
        .iter()
        .find(|a| family_of.is_none_or(|f| f.is_ipv4() == a.is_ipv4()))
        .copied()
        .ok_or_else(|| Error::BadArg {
            arg: s.to_string(),
            msg: "workload has no address (of that family)".into(),
        })?;
    Ok(Endpoint {
        name: w.key(),
        addr,
    })
}

fn id_text(c: &Compiler, id: u32) -> String {
    if let Some(n) = reserved_name(id) {
        return format!("identity {id} ({n})");
    }
    match c.identities().key(id) {
        Some(k) => format!(
            "identity {id} ({}: {})",
            k.namespace,
            labels_string(&k.labels)
        ),
        None => format!("identity {id}"),
    }
}

fn decision_text(c: &Compiler, d: &Decision, ingress: bool, k: &FlowKey) -> String {
    let act = if d.action == flowtable::Action::Allow {
        "ALLOW"
    } else {
        "DENY"
    };
    match &d.rule {
        Some(r) => {
            let o = c.origin(r);
            let mut s = format!("{act} by {o} [rule id {}]", r.id.0);
            if o.policy == "<isolation>" {
                let id = if ingress { k.dst_id } else { k.src_id };
                let sel = c.selecting_policies(id, ingress);
                s.push_str(&format!(
                    "; selected by {}; no rule of the tier allows",
                    sel.join(", ")
                ));
            }
            s
        }
        None => format!(
            "{act} by global default (no tier decided{})",
            if d.action == flowtable::Action::Deny {
                ", zero trust"
            } else {
                ""
            }
        ),
    }
}

/// `policy explain`: the verdict of one flow and what decided each direction.
/// Exit code 0 when allowed, 1 when denied.
pub fn policy_explain(args: &ExplainArgs, out: &mut dyn Write) -> Result<i32> {
    let c = build(&args.model, &args.policies)?;
    let (pr, port) = parse_port_proto(&args.port)?;
    let from = endpoint(&c, &args.from, None)?;
    let to = endpoint(&c, &args.to, Some(from.addr))?;
    let k = c.flow_key(from.addr, to.addr, pr, 40000, port);
    let v = c.decide(&k);
    writeln!(
        out,
        "flow    {} ({}) -> {} ({}) {port}/{}",
        from.name,
        from.addr,
        to.name,
        to.addr,
        proto::name(pr)
    )?;
    writeln!(out, "from    {}", id_text(&c, k.src_id))?;
    writeln!(out, "to      {}", id_text(&c, k.dst_id))?;
    writeln!(out, "egress  {}", decision_text(&c, &v.egress, false, &k))?;
    writeln!(out, "ingress {}", decision_text(&c, &v.ingress, true, &k))?;
    let o = c.observe(&k);
    for (d, name) in [(&o.egress, "egress"), (&o.ingress, "ingress")] {
        if let Some(r) = &d.rule {
            let what = if r.cookie & crate::compiler::cookie::AUDIT as u64 != 0 {
                "audit"
            } else {
                "log"
            };
            let act = match r.action {
                flowtable::Action::Allow => "allow",
                flowtable::Action::Deny => "deny",
                flowtable::Action::Pass => "pass",
            };
            writeln!(
                out,
                "{what:<7} {name}: {} would {act} (not enforced)",
                c.origin(r)
            )?;
        }
    }
    writeln!(
        out,
        "verdict {}",
        if v.allowed() { "ALLOW" } else { "DENY" }
    )?;
    Ok(if v.allowed() { 0 } else { 1 })
}

fn select_workloads<'a>(c: &'a Compiler, sel: &Option<String>) -> Result<Vec<&'a Workload>> {
    let Some(s) = sel else {
        return Ok(c.model().workloads.values().collect());
    };
    if s.contains('/') && !s.contains('=') {
        return Ok(vec![c.model().find(s)?]);
    }
    let ls = LabelSelector::parse(s).map_err(|e| Error::BadArg {
        arg: s.clone(),
        msg: e,
    })?;
    Ok(c.model()
        .workloads
        .values()
        .filter(|w| ls.matches(&w.labels))
        .collect())
}

fn origin_json(o: Option<RuleOrigin>) -> serde_json::Value {
    match o {
        Some(o) => {
            serde_json::json!({"policy": o.policy, "direction": if o.ingress {"ingress"} else {"egress"}, "rule": o.rule, "tier": o.tier})
        }
        None => serde_json::json!("default"),
    }
}

/// `reach`: which workloads can open connections to which, and the rule that
/// allows each direction. Exit code 0 when some pair is reachable, 1 when none.
pub fn reach(args: &ReachArgs, out: &mut dyn Write) -> Result<i32> {
    let c = build(&args.model, &args.policies)?;
    let froms = select_workloads(&c, &args.from)?;
    let tos = select_workloads(&c, &args.to)?;
    // Ports to try: the one asked for, or every (proto, port) a rule names, plus one
    // arbitrary port per protocol for rules on all ports.
    let mut ports: Vec<(u8, u16)> = match &args.port {
        Some(p) => vec![parse_port_proto(p)?],
        None => {
            let mut v = vec![(proto::TCP, 0), (proto::UDP, 0), (proto::SCTP, 0)];
            for t in &c.tables().enforce.tiers {
                for r in t.egress.iter().chain(t.ingress.iter()) {
                    if !r.m.dport.is_any() {
                        v.push((r.m.proto.unwrap_or(proto::TCP), r.m.dport.lo));
                    }
                }
            }
            v
        }
    };
    ports.sort_unstable();
    ports.dedup();
    let mut rows = Vec::new();
    for f in &froms {
        for t in &tos {
            if f.key() == t.key() {
                continue;
            }
            let Some((sa, da)) = f.addresses.iter().find_map(|sa| {
                t.addresses
                    .iter()
                    .find(|da| da.is_ipv4() == sa.is_ipv4())
                    .map(|da| (*sa, *da))
            }) else {
                continue;
            };
            let mut all_ports_done = std::collections::HashSet::new();
            for &(pr, port) in &ports {
                let k = c.flow_key(sa, da, pr, 40000, port);
                let v: Verdict = c.decide(&k);
                if !v.allowed() {
                    continue;
                }
                let wide = |d: &Decision| d.rule.is_none_or(|r| r.m.dport.is_any());
                let any_port = wide(&v.egress) && wide(&v.ingress);
                let any_proto = any_port
                    && v.egress.rule.is_none_or(|r| r.m.proto.is_none())
                    && v.ingress.rule.is_none_or(|r| r.m.proto.is_none());
                let label = if any_proto {
                    "any".to_string()
                } else if any_port {
                    format!("*/{}", proto::name(pr))
                } else {
                    format!("{port}/{}", proto::name(pr))
                };
                if !all_ports_done.insert(label.clone()) {
                    continue;
                }
                let eg = v.egress.rule.map(|r| c.origin(&r));
                let ing = v.ingress.rule.map(|r| c.origin(&r));
                rows.push((f.key(), t.key(), label, eg, ing));
            }
        }
    }
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(f, t, p, e, i)| serde_json::json!({"from": f, "to": t, "port": p, "egress": origin_json(e), "ingress": origin_json(i)}))
            .collect();
        let reachable = !v.is_empty();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
        return Ok(if reachable { 0 } else { 1 });
    }
    let show = |o: &Option<RuleOrigin>| {
        o.as_ref()
            .map(|o| o.to_string())
            .unwrap_or_else(|| "default allow".into())
    };
    for (f, t, p, e, i) in &rows {
        writeln!(
            out,
            "{f} -> {t} {p}: egress {}; ingress {}",
            show(e),
            show(i)
        )?;
    }
    writeln!(out, "{} reachable (pair, port) entries", rows.len())?;
    Ok(if rows.is_empty() { 1 } else { 0 })
}

/// Runs conformance cases; prints PASS/FAIL per case with differing cells and
/// last `N passed, M failed`. Exit code 0 when all pass, 1 otherwise.
pub fn conformance(args: &ConformanceArgs, out: &mut dyn Write) -> Result<i32> {
    conformance_with(args, out, run_case::<Classifier>)
}

/// As [`conformance`], each case run by `run` (the binary's `--dataplane`
/// replays them through DPDK). Same output: one PASS/FAIL line per case,
/// differing cells under a failure, `N passed, M failed` last; 1 on failures.
pub fn conformance_with(
    args: &ConformanceArgs,
    out: &mut dyn Write,
    run: impl FnMut(&crate::conformance::Case, &Model) -> CaseResult,
) -> Result<i32> {
    let results = run_conformance_with(args, run)?;
    let (mut pass, mut fail) = (0, 0);
    for r in &results {
        if r.passed() {
            pass += 1;
            writeln!(out, "PASS {} ({} cells)", r.id, r.cells)?;
        } else {
            fail += 1;
            writeln!(
                out,
                "FAIL {} ({} cells, {} differ)",
                r.id,
                r.cells,
                r.diffs.len()
            )?;
            if let Some(e) = &r.error {
                writeln!(out, "  error: {e}")?;
            }
            for d in &r.diffs {
                writeln!(out, "  {d}")?;
            }
        }
    }
    writeln!(out, "{pass} passed, {fail} failed")?;
    Ok(if fail == 0 { 0 } else { 1 })
}

/// Runs conformance cases and returns each result (for tests and tools).
pub fn run_conformance(args: &ConformanceArgs) -> Result<Vec<CaseResult>> {
    run_conformance_with(args, run_case::<Classifier>)
}

/// As [`run_conformance`], each case run by `run`.
pub fn run_conformance_with(
    args: &ConformanceArgs,
    mut run: impl FnMut(&crate::conformance::Case, &Model) -> CaseResult,
) -> Result<Vec<CaseResult>> {
    let mut results = Vec::new();
    let mut cache: Option<(PathBuf, Model)> = None;
    for case_path in &args.cases {
        let model_path = match &args.model {
            Some(m) => m.clone(),
            None => {
                let dir = case_path.parent().unwrap_or(Path::new("."));
                let here = dir.join("model.yaml");
                let above = dir.parent().unwrap_or(Path::new(".")).join("model.yaml");
                if here.exists() {
                    here
                } else if above.exists() {
                    above
                } else {
                    return Err(Error::BadArg {
                        arg: "--model".into(),
                        msg: format!(
                            "not given, and no model.yaml beside {} ({}) or above it ({})",
                            case_path.display(),
                            here.display(),
                            above.display()
                        ),
                    });
                }
            }
        };
        if cache.as_ref().is_none_or(|(p, _)| *p != model_path) {
            cache = Some((model_path.clone(), Model::load(&model_path)?));
        }
        let model = &cache.as_ref().expect("loaded").1;
        let r = match load_case(case_path) {
            Ok(case) => run(&case, model),
            Err(e) => CaseResult {
                id: case_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                error: Some(e.to_string()),
                ..Default::default()
            },
        };
        results.push(r);
    }
    Ok(results)
}

/// Loads policy files (all or nothing); re-exported for the binary's `policy load`.
pub fn load_policies(files: &[PathBuf]) -> Result<PolicySet> {
    load_files(files)
}
