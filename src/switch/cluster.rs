//! The switch's side of the datastore: at start, the embedded state file is
//! loaded (and this host's workloads written into it), or the etcd agent is
//! started; then the control loop enforces every checked state the agent
//! hands over as soon as it arrives, and acknowledges its revision.

use super::{Error, Switch};
use crate::config::Config;
use control::datastore::agent::{self, AgentConfig, AgentHandle};
use control::datastore::etcd::EtcdConfig;
use control::datastore::file::FileAck;
use control::datastore::{Datastore, Desired, FileStore, WorkloadRecord};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

fn local_model(cfg: &Config) -> Result<control::Model, Error> {
    if cfg.policy.model.as_os_str().is_empty() {
        return Ok(control::Model::default());
    }
    control::Model::load(&cfg.policy.model).map_err(|e| Error::Invalid(format!("policy: {e}")))
}

fn enforce(sw: &mut Switch, d: Desired) -> Result<(i64, usize), String> {
    let (rev, n) = (d.revision, d.model.workloads.len());
    let plane = sw.plane_mut().map_err(|e| e.to_string())?;
    match plane.apply_desired(d) {
        Ok(Some(p)) => println!("cluster: revision {rev} enforced: {p}"),
        Ok(None) => {}
        Err(e) => return Err(format!("cluster: revision {rev} not enforced: {e}")),
    }
    Ok((rev, n))
}

/// The embedded datastore as the switch follows it: the file is checked
/// on every control-loop tick and enforced again when it changed.
#[derive(Debug)]
pub(super) struct FileCluster {
    pub(super) path: std::path::PathBuf,
    /// The revision enforced.
    pub(super) revision: i64,
    /// The file's (modification time, length) last looked at.
    stamp: Option<(std::time::SystemTime, u64)>,
    host: String,
    local: control::Model,
    /// Why the last change was not enforced ("" = it was).
    pub(super) last_error: String,
    /// Workloads in the state enforced.
    workloads: usize,
}

impl FileCluster {
    /// Acknowledges what is enforced (and why a newer state is not) beside
    /// the file, for `policy apply --wait` and `cluster status`.
    fn ack(&self) {
        let a = FileAck {
            revision: self.revision,
            workloads: self.workloads,
            at_ms: control::datastore::now_ms(),
            pid: std::process::id(),
            error: self.last_error.clone(),
        };
        if let Err(e) = FileStore::new(&self.path).write_ack(&self.host, &a) {
            eprintln!("cluster: cannot acknowledge revision {}: {e}", self.revision);
        }
    }
}

fn stamp(p: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Enforces the state file again if it changed since the last look (a
/// `bulkhead policy apply --state` replaced it): a state that does not
/// check is refused with one line and the last good one stays enforced.
pub(super) fn follow_file(sw: &mut Switch) {
    let Some(f) = &sw.cluster_file else { return };
    let now = stamp(&f.path);
    if now == f.stamp {
        return;
    }
    let (path, host, local, old) = (f.path.clone(), f.host.clone(), f.local.clone(), f.revision);
    let checked = match now {
        Some(_) => FileStore::new(&path).snapshot().and_then(|s| s.desired(&host, &local)),
        None => Err(control::Error::Datastore("the file is gone".into())),
    };
    let result = match checked {
        Ok(d) if d.revision == old => Ok(None),
        Ok(d) => enforce(sw, d).map(Some),
        Err(e) => Err(format!("cluster: {} rejected: {e}; still enforcing revision {old}", path.display())),
    };
    let f = sw.cluster_file.as_mut().expect("checked above");
    f.stamp = now;
    match result {
        Ok(None) if f.last_error.is_empty() => return,
        Ok(None) => f.last_error.clear(),
        Ok(Some((rev, n))) => {
            (f.revision, f.workloads) = (rev, n);
            f.last_error.clear();
        }
        Err(e) => {
            eprintln!("{e}");
            f.last_error = e;
        }
    }
    f.ack();
}

/// Starts what `[cluster]` asks for: None when it asks for nothing or for
/// the embedded state file only (applied here, then followed by [`follow_file`]).
///
/// # Errors
/// A state file that cannot be read or does not check, an agent that cannot start.
pub(super) fn start(cfg: &Config, sw: &mut Switch) -> Result<Option<AgentHandle>, Error> {
    let c = &cfg.cluster;
    if !c.enabled() {
        return Ok(None);
    }
    let local = local_model(cfg)?;
    let host = c.host_name();
    if c.etcd.is_empty() {
        // The embedded datastore: this host's namespaces and workloads are
        // written into the state file, then the whole file is enforced.
        let ds = |e: control::Error| Error::Invalid(format!("cluster.state_file {}: {e}", c.state_file.display()));
        let mut fs = FileStore::new(&c.state_file);
        let st = fs.snapshot().map_err(ds)?;
        for (name, ns) in &local.namespaces {
            let mut labels = ns.labels.clone();
            labels.remove(control::model::NS_NAME_LABEL);
            if !st.kvs.contains_key(&format!("ns/{name}")) {
                fs.put_namespace(name, &labels).map_err(ds)?;
            }
        }
        for (key, w) in &local.workloads {
            if !st.kvs.contains_key(&format!("wl/{key}")) {
                let r = WorkloadRecord { labels: w.labels.clone(), addresses: w.addresses.clone(), host: host.clone(), mac: None };
                fs.put_workload(key, &r).map_err(ds)?;
            }
        }
        let d = fs.snapshot().and_then(|s| s.desired(&host, &local)).map_err(ds)?;
        let st = stamp(&c.state_file);
        let (rev, workloads) = enforce(sw, d).map_err(Error::Invalid)?;
        println!("cluster: enforcing {} (revision {rev}), following its changes", c.state_file.display());
        let f = FileCluster { path: c.state_file.clone(), revision: rev, stamp: st, host, local, last_error: String::new(), workloads };
        f.ack();
        sw.cluster_file = Some(f);
        return Ok(None);
    }
    let cache = (!c.state_file.as_os_str().is_empty()).then(|| c.state_file.clone());
    let identity_gc = Duration::from_secs(u64::from(c.identity_gc));
    let ac = AgentConfig { etcd: EtcdConfig::new(c.etcd.clone(), &c.prefix), host, lease_ttl: i64::from(c.lease_ttl), local, cache, identity_gc };
    let a = agent::spawn(ac, Box::new(|l| println!("{l}"))).map_err(|e| Error::Invalid(e.to_string()))?;
    sw.cluster = Some(a.status.clone());
    Ok(Some(a))
}

/// Waits up to `wait` for a state from the agent and enforces the newest
/// one waiting, then acknowledges its revision.
pub(super) fn serve(sw: &mut Switch, a: &AgentHandle, wait: Duration) {
    let mut d = match a.updates.recv_timeout(wait) {
        Ok(d) => d,
        Err(RecvTimeoutError::Timeout) => return,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(wait);
            return;
        }
    };
    // Every state is whole: only the newest waiting one matters.
    while let Ok(n) = a.updates.try_recv() {
        d = n;
    }
    match enforce(sw, d) {
        Ok((rev, n)) => a.ack(rev, n),
        Err(e) => eprintln!("{e}"),
    }
}

impl Switch {
    /// `show cluster`: this host's datastore, its connection, the revisions
    /// it has seen and enforces, and every live host's acknowledgement.
    pub fn cluster_text(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let Some(c) = &self.cluster else {
            return match &self.cluster_file {
                Some(f) if f.last_error.is_empty() => format!("cluster: embedded state file {} (revision {} enforced)\n", f.path.display(), f.revision),
                Some(f) => format!("cluster: embedded state file {} (revision {} enforced)\n  last error: {}\n", f.path.display(), f.revision, f.last_error),
                None => "cluster: none configured (no [cluster] etcd or state_file)\n".into(),
            };
        };
        let lock = |m: &std::sync::Mutex<String>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (seen, enforced) = (c.seen.load(Relaxed), c.enforced.load(Relaxed));
        let conn = if c.connected.load(Relaxed) { "connected".to_string() } else { format!("unreachable, enforcing revision {enforced} without it") };
        let _ = writeln!(out, "cluster host {}: etcd {} {conn}, prefix {}", c.host, lock(&c.endpoint), c.prefix);
        let _ = writeln!(out, "  revision: seen {seen}, enforced {enforced}");
        let _ = writeln!(out, "  disconnects {}, rejected states {}, identities collected {}", c.disconnects.load(Relaxed), c.rejected.load(Relaxed), c.identities_collected.load(Relaxed));
        let e = lock(&c.last_error);
        if !e.is_empty() {
            let _ = writeln!(out, "  last error: {e}");
        }
        let hosts = c.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let when = if c.connected.load(Relaxed) { "live" } else { "as last seen" };
        let _ = writeln!(out, "  hosts ({when}, {}): acknowledged revision", hosts.len());
        for (h, r) in hosts {
            match r {
                Some(r) => {
                    let _ = writeln!(out, "    {h:<24} {r:>10}  {}", if r >= seen { "in sync" } else { "behind" });
                }
                None => {
                    let _ = writeln!(out, "    {h:<24} {:>10}  malformed acknowledgement", "?");
                }
            }
        }
        out
    }
}
