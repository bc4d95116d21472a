//! `bulkhead policy apply` and `bulkhead cluster status`: the operator's
//! side of the datastore.

use crate::cli::StoreArgs;
use anyhow::{bail, Context, Result};
use control::datastore::etcd::EtcdConfig;
use control::datastore::{Datastore, EtcdStore, FileStore};
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
    // All documents check before any is written.
    control::policy::load::load_texts(&docs)?;
    let mut ds = open(s)?;
    let mut rev = 0;
    for (name, text) in &docs {
        rev = ds.put_policy(name, text)?;
        println!("applied {name} (revision {rev})");
    }
    let Some(timeout) = wait else { return Ok(0) };
    if s.etcd.is_empty() {
        println!("a switch running on this state file enforces it within about 100 ms (show cluster)");
        return Ok(0);
    }
    let t = Instant::now();
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

/// `bulkhead cluster status`.
pub fn status(s: &StoreArgs) -> Result<u8> {
    let mut ds = open(s)?;
    let snap = ds.snapshot()?;
    let wl = snap.workloads().unwrap_or_default();
    println!("data revision {}", snap.revision);
    println!("{:<24} {:>10} {:>10} {:>10}  state", "host", "revision", "workloads", "local");
    let acks = snap.acks();
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
