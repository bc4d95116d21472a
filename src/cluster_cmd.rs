//! `bulkhead policy apply` and `bulkhead cluster status`: the operator's
//! side of the datastore.

use crate::cli::StoreArgs;
use anyhow::{bail, Context, Result};
use control::datastore::etcd::EtcdConfig;
use control::datastore::file::FileAck;
use control::datastore::{keys, Datastore, EtcdStore, FileStore, HostAck};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn open(s: &StoreArgs) -> Result<Box<dyn Datastore>> {
    match (&s.state, s.etcd.is_empty()) {
        (Some(p), _) => Ok(Box::new(FileStore::new(p))),
        (None, false) => Ok(Box::new(EtcdStore::connect(EtcdConfig::new(s.etcd.clone(), &s.prefix))?)),
        (None, true) => bail!("no datastore: give --etcd URL[,URL...] or --state FILE"),
    }
}

/// `bulkhead policy apply FILE... [--wait]`.
pub fn apply(s: &StoreArgs, files: &[PathBuf], wait: Option<Duration>) -> Result<u8> {
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        docs.push((name, text));
    }
    // All documents check before any is written: alone, then with the
    // documents already stored (a policy name defined in another document,
    // for instance, would make every host refuse the state).
    control::policy::load::load_texts(&docs)?;
    let mut ds = open(s)?;
    let mut next = ds.snapshot()?;
    for (name, text) in &docs {
        next.set(&format!("{}{name}", keys::POL), Some(text.clone()));
    }
    if let Err(e) = next.desired("", &control::Model::default()) {
        bail!("refused, nothing written: the stored state with these documents would not load: {e}");
    }
    let mut rev = 0;
    for (name, text) in &docs {
        rev = ds.put_policy(name, text)?;
        println!("applied {name} (revision {rev})");
    }
    let Some(timeout) = wait else { return Ok(0) };
    let t = Instant::now();
    if let Some(state) = &s.state {
        return wait_file(&FileStore::new(state), rev, timeout, t);
    }
    let mut st = EtcdStore::connect(EtcdConfig::new(s.etcd.clone(), &s.prefix))?;
    match st.wait_for(rev, timeout) {
        Ok(acks) if acks.is_empty() => {
            eprintln!("bulkhead: revision {rev} written, but no live host acknowledges anything (no switch is connected to this etcd and prefix)");
            Ok(1)
        }
        Ok(acks) => {
            println!("revision {rev} enforced by {} host(s) in {:.1} ms: {}", acks.len(), t.elapsed().as_secs_f64() * 1e3, acks.keys().cloned().collect::<Vec<_>>().join(", "));
            Ok(0)
        }
        Err(e) => {
            eprintln!("bulkhead: {e}");
            Ok(1)
        }
    }
}

/// `--wait` on the embedded store: until every live switch following the
/// file acknowledges `rev` or later beside it (one fails at once when none
/// does, after `timeout` naming the laggards and why they lag).
fn wait_file(fs: &FileStore, rev: i64, timeout: Duration, t: Instant) -> Result<u8> {
    loop {
        let acks = fs.acks()?;
        let live: Vec<(String, FileAck)> = acks.into_iter().filter_map(|(h, a)| a.ok().filter(FileAck::live).map(|a| (h, a))).collect();
        if live.is_empty() {
            eprintln!("bulkhead: revision {rev} written, but no running switch follows {} (no live acknowledgement beside it)", fs.path().display());
            return Ok(1);
        }
        let lag: Vec<String> = live
            .iter()
            .filter(|(_, a)| a.revision < rev)
            .map(|(h, a)| if a.error.is_empty() { format!("{h} (at revision {})", a.revision) } else { format!("{h} (at revision {}: {})", a.revision, a.error) })
            .collect();
        if lag.is_empty() {
            let hosts: Vec<&str> = live.iter().map(|(h, _)| h.as_str()).collect();
            println!("revision {rev} enforced by {} host(s) in {:.1} ms: {}", live.len(), t.elapsed().as_secs_f64() * 1e3, hosts.join(", "));
            return Ok(0);
        }
        if t.elapsed() >= timeout {
            eprintln!("bulkhead: timed out after {:.1} s waiting for revision {rev}; lagging: {}", timeout.as_secs_f64(), lag.join(", "));
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `bulkhead cluster status`.
pub fn status(s: &StoreArgs) -> Result<u8> {
    let mut ds = open(s)?;
    let snap = ds.snapshot()?;
    let wl = snap.workloads().unwrap_or_default();
    println!("data revision {}", snap.revision);
    println!("{:<24} {:>10} {:>10} {:>10}  state", "host", "revision", "workloads", "local");
    // The embedded store's switches acknowledge beside the file (only
    // those still running count), etcd's hosts under the prefix.
    let acks = match &s.state {
        Some(p) => FileStore::new(p)
            .acks()?
            .into_iter()
            .filter(|(_, a)| a.as_ref().map_or(true, FileAck::live))
            .map(|(h, a)| (h, a.map(|a| HostAck { revision: a.revision, workloads: a.workloads, at_ms: a.at_ms })))
            .collect(),
        None => snap.acks(),
    };
    if acks.is_empty() {
        println!("(no live host)");
    }
    let mut behind = 0;
    for (h, a) in acks {
        let local = wl.values().filter(|r| r.host == h).count();
        match a {
            Ok(a) => {
                let state = if a.revision >= snap.revision { "in sync" } else { "behind" };
                if a.revision < snap.revision {
                    behind += 1;
                }
                println!("{h:<24} {:>10} {:>10} {local:>10}  {state}", a.revision, a.workloads);
            }
            Err(e) => {
                behind += 1;
                println!("{h:<24} {:>10} {:>10} {local:>10}  bad ack: {e}", "?", "?");
            }
        }
    }
    Ok(u8::from(behind > 0))
}
