//! Executes shell lines against the switch in this process: the server side
//! of the control socket, and the target of `bulkhead cli` when it runs the
//! switch itself. Output follows testpmd's shapes.

use super::command::{self, Command, PortSel};
use super::socket::Target;
use crate::switch::{Error, Switch};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The switch as a shell target.
#[derive(Debug)]
pub struct SwitchTarget<'a>(pub &'a mut Switch);

fn sel(p: PortSel) -> Option<u16> {
    match p {
        PortSel::All => None,
        PortSel::One(n) => Some(n),
    }
}

impl SwitchTarget<'_> {
    fn ports(&self, p: PortSel) -> Vec<u16> {
        match p {
            PortSel::All => self.0.port_ids(),
            PortSel::One(n) => vec![n],
        }
    }

    fn run(&mut self, cmd: Command) -> Result<String, crate::switch::Error> {
        // VM links changed since the last look are applied before the command
        // (the shell in this process has no other control loop).
        self.0.poll_links();
        let sw = &mut *self.0;
        let mut out = String::new();
        match cmd {
            Command::ShowPortInfo(p) => {
                for id in self.ports(p) {
                    let _ = write!(out, "{}", self.0.port_info(id)?);
                }
            }
            Command::ShowPortStats(p) => {
                for id in self.ports(p) {
                    let _ = write!(out, "{}", self.0.port_stats(id)?);
                }
            }
            Command::ShowPortXstats(p) => {
                for id in self.ports(p) {
                    let _ = writeln!(out, "###### NIC extended statistics for port {id:<2} ######");
                    for (k, v) in self.0.port_xstats(id)? {
                        let _ = writeln!(out, "{k}: {v}");
                    }
                    let _ = writeln!(out, "#########################################################");
                }
            }
            Command::ClearPortStats(p) => {
                sw.clear_port_stats(sel(p))?;
                for id in self.ports(p) {
                    let _ = writeln!(out, "\n  NIC statistics for port {id} cleared");
                }
            }
            Command::ShowFwdStats => {
                let _ = write!(out, "{}", sw.fwd_stats());
            }
            Command::ClearFwdStats => {
                sw.clear_fwd_stats();
                out.push_str("Forwarding statistics cleared\n");
            }
            Command::SetFwd(m) => {
                sw.set_fwd(&m)?;
                let _ = writeln!(out, "Set {m} packet forwarding mode");
            }
            Command::Start => {
                sw.start()?;
                out = sw.show_config(command::ConfigWhat::Fwd);
            }
            Command::Stop => {
                let r = sw.stop()?;
                let _ = write!(out, "Telling cores to stop...\nWaiting for lcores to finish...\n{r}\nDone.\n");
            }
            Command::PortStart(p) => sw.port_start(sel(p))?,
            Command::PortStop(p) => sw.port_stop(sel(p))?,
            Command::PortClose(p) => sw.port_close(sel(p))?,
            Command::PortConfig(q, n) => sw.port_config(q, n)?,
            Command::SetBurst(n) => {
                sw.set_burst(n)?;
                let _ = writeln!(out, "Number of packets per burst set to {n}");
            }
            Command::SetNbcore(n) => {
                sw.set_nbcore(n)?;
                let _ = writeln!(out, "Number of forwarding cores set to {n}");
            }
            Command::ShowConfig(w) => out = sw.show_config(w),
            Command::PolicyLoad(f) => {
                let pb = sw.plane_mut()?.load_policies(&[f.clone().into()]).map_err(ctl)?;
                let _ = writeln!(out, "policy load {f}: {pb}");
            }
            Command::PolicyDelete(k) => {
                let pb = sw.plane_mut()?.delete_policy(&k).map_err(ctl)?;
                let _ = writeln!(out, "policy delete {k}: {pb}");
            }
            Command::WorkloadAdd(k, args) => {
                // port=DEVICE (net_vhost0, or vhost0) names the port by device.
                let args: Vec<String> = args
                    .into_iter()
                    .map(|a| match a.strip_prefix("port=") {
                        Some(v) if v.parse::<u16>().is_err() => sw.port_id_by_name(v).map(|id| format!("port={id}")).ok_or_else(|| invalid(format!("no port named {v:?}"))),
                        _ => Ok(a),
                    })
                    .collect::<Result<_, _>>()?;
                let w = workload_from_args(&k, &args)?;
                let pb = sw.plane_mut()?.add_workload(w).map_err(ctl)?;
                let _ = writeln!(out, "workload add {k}: {pb}");
            }
            Command::WorkloadMove(k, args) => {
                let kv = key_values(&args)?;
                let ips = kv.iter().find(|(key, _)| key == "ip").map(|(_, v)| addresses(v)).transpose()?;
                let ips = ips.ok_or_else(|| invalid("workload move: ip=A[,B] is required"))?;
                let pb = sw.plane_mut()?.move_workload(&k, ips).map_err(ctl)?;
                let _ = writeln!(out, "workload move {k}: {pb}");
            }
            Command::WorkloadDel(k) => {
                let pb = sw.plane_mut()?.remove_workload(&k).map_err(ctl)?;
                let _ = writeln!(out, "workload del {k}: {pb}");
            }
            Command::WorkloadLabel(k, args) => {
                let labels = labels(&args.join(","))?;
                let pb = sw.plane_mut()?.label_workload(&k, labels).map_err(ctl)?;
                let _ = writeln!(out, "workload label {k}: {pb}");
            }
            Command::Quarantine(k) => {
                let msg = sw.quarantine(&k, true)?;
                let _ = writeln!(out, "quarantine {k}: {msg}");
            }
            Command::Unquarantine(k) => {
                let msg = sw.quarantine(&k, false)?;
                let _ = writeln!(out, "unquarantine {k}: {msg}");
            }
            Command::Flow(c) => {
                let _ = writeln!(out, "{}", sw.flow(c)?);
            }
            Command::ShowOffload => {
                let _ = writeln!(out, "{}", sw.offload_text());
            }
            Command::Offload(on) => {
                let _ = writeln!(out, "{}", sw.set_offload(on)?);
            }
            Command::SetOffloadThreshold(n) => {
                sw.set_offload_threshold(n as u32)?;
                let _ = writeln!(out, "offload threshold: {n} packets per millisecond");
            }
            Command::ShowPolicy => out = show_policy(sw),
            Command::ShowPmdStats => out = show_pmd_stats(sw),
            Command::ShowFlows => out = sw.flows_text(20),
            Command::ShowVhost => out = sw.vhost_list().to_string(),
            Command::ShowCluster => out = sw.cluster_text(),
            Command::Help => out = command::help_text(),
            Command::Quit => out = "Bye...\n".into(),
        }
        Ok(out)
    }
}

fn ctl(e: control::Error) -> Error {
    Error::Invalid(e.to_string())
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// `k=v` arguments (the value may itself hold `=` and `,`).
fn key_values(args: &[String]) -> Result<Vec<(String, String)>, Error> {
    args.iter()
        .map(|a| a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| invalid(format!("expected key=value, got {a:?}"))))
        .collect()
}

fn addresses(v: &str) -> Result<Vec<IpAddr>, Error> {
    v.split(',').map(|a| a.trim().parse::<IpAddr>().map_err(|_| invalid(format!("bad IP address {a:?}")))).collect()
}

fn labels(v: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for kv in v.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, val) = kv.split_once('=').ok_or_else(|| invalid(format!("bad label {kv:?}: expected key=value")))?;
        m.insert(k.trim().to_string(), val.trim().to_string());
    }
    Ok(m)
}

/// `workload add ns/name ip=A[,B] labels=k=v[,k=v] [port=N] [mac=M]`.
fn workload_from_args(key: &str, args: &[String]) -> Result<control::Workload, Error> {
    let (ns, name) = key.split_once('/').ok_or_else(|| invalid(format!("workload {key:?}: expected namespace/name")))?;
    let mut w = control::Workload { name: name.to_string(), namespace: ns.to_string(), ..Default::default() };
    for (k, v) in key_values(args)? {
        match k.as_str() {
            "ip" => w.addresses = addresses(&v)?,
            "labels" => w.labels = labels(&v)?,
            "port" => w.port = Some(v.parse().map_err(|_| invalid(format!("bad port {v:?}")))?),
            "mac" => w.mac = Some(control::model::parse_mac(&v).ok_or_else(|| invalid(format!("bad MAC {v:?}")))?),
            _ => return Err(invalid(format!("unknown workload field {k:?} (ip, labels, port, mac)"))),
        }
    }
    if w.addresses.is_empty() {
        return Err(invalid("workload add: ip=A[,B] is required"));
    }
    Ok(w)
}

fn show_policy(sw: &Switch) -> String {
    let mut out = String::new();
    let Some(pl) = sw.plane() else {
        return "no policy engine configured ([policy] in the config, or 'set fwd policy')\n".into();
    };
    let c = pl.compiler();
    let e = &c.tables().enforce;
    let _ = writeln!(
        out,
        "generation {}  policies {}  rules {}  workloads {}  defaults: egress {:?}, ingress {:?}",
        pl.gen(),
        c.policies().len(),
        c.rule_count(),
        c.model().workloads.len(),
        e.default_egress,
        e.default_ingress
    );
    let mut ps: Vec<_> = c.policies().into_iter().map(|p| (p.key(), c.policy_rule_count(&p.key()))).collect();
    ps.sort();
    for (k, n) in ps {
        let _ = writeln!(out, "  {k:<40} {n:>6} rules");
    }
    out.push_str(&sw.policy_hits_text());
    out
}

fn show_pmd_stats(sw: &Switch) -> String {
    let mut out = String::new();
    let lcs = sw.policy_lcores();
    if lcs.is_empty() {
        return "no policy engine lcores (forwarding mode is not policy, or not started yet)\n".into();
    }
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    for s in lcs {
        let (hit, miss) = (s.get("emc_hit"), s.get("emc_miss"));
        let _ = writeln!(out, "pmd thread lcore {}:", s.lcore);
        let _ = writeln!(out, "  packets received: {}", s.rx);
        let _ = writeln!(out, "  packets forwarded: {}", s.tx);
        let _ = writeln!(out, "  exact match hits: {hit} ({:.1}%)", pct(hit, hit + miss));
        let _ = writeln!(out, "  classifier lookups: {}", s.get("cls_lookup"));
        let _ = writeln!(out, "  conntrack hits: {}  created: {}  entries: {}", s.get("ct_hit"), s.get("ct_created"), s.ct_entries);
        let _ = writeln!(
            out,
            "  denied flows counted: {} (uncounted, table full: {})  flow notes lost: {}  flow events lost: {}",
            s.get("denied_flows"),
            s.get("denied_uncounted"),
            s.get("flow_notes_lost"),
            s.handler.events_lost
        );
        let _ = writeln!(out, "  arp replied: {}  neighbour advertisements: {}", s.handler.arp_replied, s.handler.nd_replied);
        let cyc = if s.rx == 0 { 0.0 } else { s.busy_cycles as f64 / s.rx as f64 };
        let _ = writeln!(out, "  avg processing cycles per packet: {cyc:.1} ({:.1}% busy)", pct(s.busy_cycles, s.total_cycles));
        let drops: Vec<String> = flowtable::stats::Stats::NAMES
            .iter()
            .zip(&s.pipeline)
            .filter(|(n, v)| n.starts_with("drop_") && **v > 0)
            .map(|(n, v)| format!("{}={v}", &n[5..]))
            .chain((s.handler.link_down > 0).then(|| format!("link_down={}", s.handler.link_down)))
            .collect();
        let _ = writeln!(out, "  drops: {}", if drops.is_empty() { "none".to_string() } else { drops.join(" ") });
    }
    out
}

impl Target for SwitchTarget<'_> {
    fn execute(&mut self, line: &str) -> Result<String, String> {
        match command::parse(line) {
            Ok(None) => Ok(String::new()),
            Ok(Some(c)) => self.run(c).map_err(|e| e.to_string()),
            Err(e) => Err(e.msg),
        }
    }
}
