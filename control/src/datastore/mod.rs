//! Datastores: where the cluster's shared state lives.
//!
//! Two implementations of [`Datastore`]:
//! - [`FileStore`], the embedded default: one JSON file on this host, written
//!   atomically (temporary file, fsync, rename) and reloaded on restart;
//! - [`EtcdStore`]: etcd v3, every key under a configurable prefix, shared by
//!   every host; each host's [`agent`] watches it.
//!
//! Keys (relative to the prefix, the same in both stores):
//! ```text
//! ns/<name>                  namespace labels (JSON object)
//! wl/<ns>/<name>             workload: {labels, addresses, host, mac} (under the owning host's lease in etcd)
//! pol/<document>             a policy document (TOML when the name ends in .toml, YAML otherwise)
//! id/key/<ns>:<k=v,...>      cluster-wide identity number of that label set
//! id/num/<number>            the label set of that number
//! id/next                    the next free number (compare-and-swap)
//! hosts/<host>               the host's acknowledgement: {revision, workloads, at_ms} (under its lease)
//! ```
//! The data revision is etcd's mod revision of the last data key change (or the
//! file's own counter); a host acknowledges the data revision it enforces.

pub mod agent;
pub mod etcd;
pub mod file;
pub mod server;

pub use etcd::EtcdStore;
pub use file::FileStore;

use crate::error::{Error, Result};
use crate::identity::{IdentityKey, FIRST_DYNAMIC};
use crate::labels::Labels;
use crate::model::{Model, Workload};
use crate::policy::PolicySet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Key prefixes (relative to the store's prefix).
pub mod keys {
    /// Namespaces.
    pub const NS: &str = "ns/";
    /// Workloads.
    pub const WL: &str = "wl/";
    /// Policy documents.
    pub const POL: &str = "pol/";
    /// Identity by label set.
    pub const ID_KEY: &str = "id/key/";
    /// Label set by identity.
    pub const ID_NUM: &str = "id/num/";
    /// Next identity number.
    pub const ID_NEXT: &str = "id/next";
    /// Host acknowledgements.
    pub const HOSTS: &str = "hosts/";
}

/// A workload as stored: where it runs and what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRecord {
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Addresses (the first is the primary).
    pub addresses: Vec<IpAddr>,
    /// The host it runs on (its switch has the port).
    #[serde(default)]
    pub host: String,
    /// MAC address `aa:bb:cc:dd:ee:ff`, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A host's acknowledgement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAck {
    /// The data revision it enforces.
    pub revision: i64,
    /// Workloads in the state it enforces.
    pub workloads: usize,
    /// When it started enforcing it (Unix ms).
    pub at_ms: u64,
}

/// The canonical text of an identity key: `ns:k=v,k2=v2` (labels sorted).
pub fn identity_key_text(k: &IdentityKey) -> String {
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    format!("{}:{}", k.namespace, labels.join(","))
}

/// Parses [`identity_key_text`].
pub fn parse_identity_key(s: &str) -> Option<IdentityKey> {
    let (ns, rest) = s.split_once(':')?;
    let mut labels = Labels::new();
    for kv in rest.split(',').filter(|x| !x.is_empty()) {
        let (a, b) = kv.split_once('=')?;
        labels.insert(a.to_string(), b.to_string());
    }
    Some(IdentityKey { namespace: ns.to_string(), labels })
}

/// The shared state as raw keys and values (relative keys), with the data
/// revision it reflects. Parsing happens in [`ClusterState::desired`], so bad
/// data is reported with its key and never half-applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Relative key -> value.
    pub kvs: BTreeMap<String, String>,
    /// Revision of the last data change reflected here.
    pub revision: i64,
}

/// What a host enforces, built from a [`ClusterState`].
#[derive(Clone, Debug)]
pub struct Desired {
    /// The data revision.
    pub revision: i64,
    /// Namespaces and every workload of the cluster (this host's with their ports).
    pub model: Model,
    /// Every policy.
    pub policies: PolicySet,
    /// Cluster-wide identity numbers.
    pub identities: HashMap<IdentityKey, u32>,
}

/// True for keys that are cluster data (not acknowledgements).
pub fn is_data_key(rel: &str) -> bool {
    !rel.starts_with(keys::HOSTS)
}

fn bad(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Datastore(format!("key {key}: {msg}"))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut n = 0;
    for (i, p) in s.split(':').enumerate() {
        if i >= 6 || p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(m)
}

impl ClusterState {
    /// Applies one change (None deletes); returns true when it was data.
    pub fn set(&mut self, rel: &str, value: Option<String>) -> bool {
        match value {
            Some(v) => self.kvs.insert(rel.to_string(), v),
            None => self.kvs.remove(rel),
        };
        is_data_key(rel)
    }

    /// Acknowledgements by host.
    pub fn acks(&self) -> BTreeMap<String, Result<HostAck>> {
        self.kvs
            .range(keys::HOSTS.to_string()..)
            .take_while(|(k, _)| k.starts_with(keys::HOSTS))
            .map(|(k, v)| {
                let ack = serde_json::from_str(v).map_err(|e| bad(k, e));
                (k[keys::HOSTS.len()..].to_string(), ack)
            })
            .collect()
    }

    /// The workload records by `ns/name`.
    pub fn workloads(&self) -> Result<BTreeMap<String, WorkloadRecord>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.kvs.range(keys::WL.to_string()..).take_while(|(k, _)| k.starts_with(keys::WL)) {
            let name = &k[keys::WL.len()..];
            if name.split('/').count() != 2 || name.split('/').any(str::is_empty) {
                return Err(bad(k, "a workload key is wl/<namespace>/<name>"));
            }
            let r: WorkloadRecord = serde_json::from_str(v).map_err(|e| bad(k, e))?;
            out.insert(name.to_string(), r);
        }
        Ok(out)
    }

    /// Builds and checks what `host` must enforce: every namespace, workload
    /// and policy, the workloads of `host` bound to the ports `local` gives
    /// them. Compiles it once as a dry run, so an error here (malformed
    /// JSON, a policy that does not parse or compile, a duplicate address)
    /// names the key and nothing of it is applied.
    ///
    /// # Errors
    /// [`Error::Datastore`] naming the bad key, or the policy parser's error.
    pub fn desired(&self, host: &str, local: &Model) -> Result<Desired> {
        let mut model = Model { host_addresses: local.host_addresses.clone(), ..Model::default() };
        for (k, v) in self.kvs.range(keys::NS.to_string()..).take_while(|(k, _)| k.starts_with(keys::NS)) {
            let labels: Labels = serde_json::from_str(v).map_err(|e| bad(k, e))?;
            model.add_namespace(&k[keys::NS.len()..], labels);
        }
        for (name, r) in self.workloads()? {
            let (ns, n) = name.split_once('/').expect("checked");
            if !model.namespaces.contains_key(ns) {
                return Err(bad(&format!("{}{name}", keys::WL), format!("unknown namespace `{ns}`")));
            }
            let mac = match &r.mac {
                Some(m) => Some(parse_mac(m).ok_or_else(|| bad(&format!("{}{name}", keys::WL), format!("bad MAC `{m}`")))?),
                None => None,
            };
            let mine = local.workloads.get(&name).filter(|_| r.host == host);
            model.workloads.insert(
                name.clone(),
                Workload {
                    name: n.to_string(),
                    namespace: ns.to_string(),
                    labels: r.labels,
                    addresses: r.addresses,
                    mac: mine.and_then(|w| w.mac).or(mac),
                    port: mine.and_then(|w| w.port),
                    named_ports: mine.map(|w| w.named_ports.clone()).unwrap_or_default(),
                },
            );
        }
        let docs: Vec<(String, String)> = self
            .kvs
            .range(keys::POL.to_string()..)
            .take_while(|(k, _)| k.starts_with(keys::POL))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let policies = crate::policy::load::load_texts(&docs)?;
        let mut identities = HashMap::new();
        for (k, v) in self.kvs.range(keys::ID_KEY.to_string()..).take_while(|(k, _)| k.starts_with(keys::ID_KEY)) {
            let ik = parse_identity_key(&k[keys::ID_KEY.len()..]).ok_or_else(|| bad(k, "not <ns>:<k=v,...>"))?;
            let id: u32 = v.trim().parse().map_err(|_| bad(k, format!("identity `{v}` is not a number")))?;
            if id < FIRST_DYNAMIC {
                return Err(bad(k, format!("identity {id} is reserved (below {FIRST_DYNAMIC})")));
            }
            identities.insert(ik, id);
        }
        crate::Compiler::<flowtable::Classifier>::with_pinned(model.clone(), policies.clone(), identities.clone())?;
        Ok(Desired { revision: self.revision, model, policies, identities })
    }
}

/// The operations both stores offer (blocking).
pub trait Datastore {
    /// The whole state, with its data revision.
    ///
    /// # Errors
    /// Unreachable store, unreadable file.
    fn snapshot(&mut self) -> Result<ClusterState>;
    /// Writes `value` at relative key `rel`; the new revision.
    ///
    /// # Errors
    /// As [`Datastore::snapshot`].
    fn put(&mut self, rel: &str, value: &str) -> Result<i64>;
    /// Deletes relative key `rel`; the new revision.
    ///
    /// # Errors
    /// As [`Datastore::snapshot`].
    fn delete(&mut self, rel: &str) -> Result<i64>;
    /// The cluster-wide number of `key`, allocating it if it has none. Two
    /// callers racing for the same or different keys never get one number
    /// for two keys.
    ///
    /// # Errors
    /// As [`Datastore::snapshot`]; [`Error::IdentitiesExhausted`].
    fn allocate_identity(&mut self, key: &IdentityKey) -> Result<u32>;

    /// Validates and writes a policy document (rejected before writing when
    /// it does not parse).
    ///
    /// # Errors
    /// The parser's error (file, line, field), or the store's.
    fn put_policy(&mut self, doc: &str, text: &str) -> Result<i64> {
        if doc.is_empty() || doc.contains('/') {
            return Err(Error::BadArg { arg: doc.into(), msg: "a policy document name is one path component".into() });
        }
        crate::policy::load::parse_text(doc, text)?;
        self.put(&format!("{}{doc}", keys::POL), text)
    }

    /// Writes a namespace's labels.
    ///
    /// # Errors
    /// The store's.
    fn put_namespace(&mut self, name: &str, labels: &Labels) -> Result<i64> {
        let v = serde_json::to_string(labels).map_err(|e| Error::Datastore(e.to_string()))?;
        self.put(&format!("{}{name}", keys::NS), &v)
    }

    /// Writes a workload (`ns/name`), its identity allocated first so every
    /// host finds the number when the workload arrives.
    ///
    /// # Errors
    /// The store's.
    fn put_workload(&mut self, key: &str, r: &WorkloadRecord) -> Result<i64> {
        let (ns, _) = key.split_once('/').ok_or_else(|| Error::BadArg { arg: key.into(), msg: "expected namespace/name".into() })?;
        self.allocate_identity(&IdentityKey { namespace: ns.into(), labels: r.labels.clone() })?;
        let v = serde_json::to_string(r).map_err(|e| Error::Datastore(e.to_string()))?;
        self.put(&format!("{}{key}", keys::WL), &v)
    }
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
