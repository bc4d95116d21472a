//! The etcd v3 datastore (etcd-client over gRPC; etcd 3.4 and later). Every
//! key lives under a prefix (default `/bulkhead/`), so several clusters can
//! share one etcd. The async functions here are what the host agent uses;
//! [`EtcdStore`] wraps them for blocking callers (CLI commands, tests) with a
//! runtime of its own.

use super::{is_data_key, keys, ClusterState, Datastore, HostAck};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, FIRST_DYNAMIC};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the cluster lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`, ...).
    pub endpoints: Vec<String>,
    /// Key prefix, ending in `/`.
    pub prefix: String,
}

impl EtcdConfig {
    /// A config; `prefix` gets a trailing `/` when it has none.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdConfig { endpoints, prefix }
    }
}

/// Maps an etcd-client error.
pub fn err(what: &str, e: etcd_client::Error) -> Error {
    Error::Datastore(format!("etcd {what}: {e}"))
}

/// Connects (short timeouts: a dead member must not stall the agent).
///
/// # Errors
/// No endpoint, bad URL.
pub async fn connect(cfg: &EtcdConfig) -> Result<Client> {
    if cfg.endpoints.is_empty() {
        return Err(Error::Datastore("no etcd endpoints".into()));
    }
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(1000))
        .with_timeout(Duration::from_millis(3000))
        .with_keep_alive(Duration::from_millis(1000), Duration::from_millis(1000));
    Client::connect(&cfg.endpoints, Some(opts)).await.map_err(|e| err("connect", e))
}

/// The whole state under `prefix` and the store's revision at that read.
/// The data revision is the highest mod revision of a data key (acks excluded).
///
/// # Errors
/// etcd errors, non-UTF-8 keys or values.
pub async fn snapshot(c: &mut Client, prefix: &str) -> Result<(ClusterState, i64)> {
    let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(|e| err("get", e))?;
    let store_rev = r.header().map(|h| h.revision()).unwrap_or(0);
    let mut st = ClusterState::default();
    for kv in r.kvs() {
        let k = kv.key_str().map_err(|e| err("key", e))?;
        let rel = &k[prefix.len()..];
        let v = kv.value_str().map_err(|e| Error::Datastore(format!("key {rel}: value is not UTF-8: {e}")))?;
        if is_data_key(rel) {
            st.revision = st.revision.max(kv.mod_revision());
        }
        st.kvs.insert(rel.to_string(), v.to_string());
    }
    Ok((st, store_rev))
}

/// Allocates (or finds) the cluster-wide number of `key` with a transaction:
/// the label-set key must not exist and `id/next` must be unchanged since it
/// was read; a racing allocator makes it fail, and it retries (finding the
/// other's number when they raced for the same set).
///
/// # Errors
/// etcd errors, a malformed stored number.
pub async fn allocate_identity(c: &mut Client, prefix: &str, key: &IdentityKey) -> Result<u32> {
    let text = super::identity_key_text(key);
    let k = format!("{prefix}{}{text}", keys::ID_KEY);
    let next_k = format!("{prefix}{}", keys::ID_NEXT);
    let num = |k: &str, v: &[u8]| -> Result<u32> {
        std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| Error::Datastore(format!("key {k}: not an identity number")))
    };
    for _ in 0..1000 {
        let r = c.get(k.as_str(), None).await.map_err(|e| err("get", e))?;
        if let Some(kv) = r.kvs().first() {
            return num(&k, kv.value());
        }
        let r = c.get(next_k.as_str(), None).await.map_err(|e| err("get", e))?;
        let (next, next_rev) = match r.kvs().first() {
            Some(kv) => (num(&next_k, kv.value())?, kv.mod_revision()),
            None => (FIRST_DYNAMIC, 0),
        };
        let after = next.checked_add(1).ok_or(Error::IdentitiesExhausted)?;
        let txn = Txn::new()
            .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0), Compare::mod_revision(next_k.as_str(), CompareOp::Equal, next_rev)])
            .and_then([
                TxnOp::put(k.as_str(), next.to_string(), None),
                TxnOp::put(format!("{prefix}{}{next}", keys::ID_NUM), text.as_str(), None),
                TxnOp::put(next_k.as_str(), after.to_string(), None),
            ])
            .or_else([TxnOp::get(k.as_str(), None)]);
        let r = c.txn(txn).await.map_err(|e| err("txn", e))?;
        if r.succeeded() {
            return Ok(next);
        }
        for op in r.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    return num(&k, kv.value());
                }
            }
        }
    }
    Err(Error::Datastore(format!("identity for {text}: too much contention")))
}

/// The blocking etcd store.
pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    client: Client,
    cfg: EtcdConfig,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects.
    ///
    /// # Errors
    /// Runtime or connection failures.
    pub fn connect(cfg: EtcdConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Datastore(format!("runtime: {e}")))?;
        let client = rt.block_on(connect(&cfg))?;
        Ok(EtcdStore { rt, client, cfg })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    /// Every host's acknowledgement (live hosts only: acks expire with their
    /// host's lease), and the current data revision.
    ///
    /// # Errors
    /// etcd errors; a malformed ack is reported per host.
    pub fn hosts(&mut self) -> Result<(BTreeMap<String, Result<HostAck>>, i64)> {
        let st = self.snapshot()?;
        Ok((st.acks(), st.revision))
    }

    /// Every live host's acknowledgement (reads only `hosts/`).
    ///
    /// # Errors
    /// etcd errors.
    pub fn acks(&mut self) -> Result<BTreeMap<String, Result<HostAck>>> {
        let (mut c, p) = (self.client(), format!("{}{}", self.cfg.prefix, keys::HOSTS));
        self.block_on(async move {
            let r = c.get(p.as_str(), Some(GetOptions::new().with_prefix())).await.map_err(|e| err("get", e))?;
            let mut out = BTreeMap::new();
            for kv in r.kvs() {
                let k = String::from_utf8_lossy(kv.key()).into_owned();
                let ack = serde_json::from_slice(kv.value()).map_err(|e| Error::Datastore(format!("key {k}: {e}")));
                out.insert(k[p.len()..].to_string(), ack);
            }
            Ok(out)
        })
    }

    /// Waits until every live host acknowledges `revision` or later, or
    /// `timeout` passes. Ok(acks) on success; Err lists the laggards.
    ///
    /// # Errors
    /// [`Error::Datastore`] naming each host that lags, with its revision.
    pub fn wait_for(&mut self, revision: i64, timeout: Duration) -> Result<BTreeMap<String, HostAck>> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let acks = self.acks()?;
            let mut lag = Vec::new();
            let mut ok = BTreeMap::new();
            for (h, a) in acks {
                match a {
                    Ok(a) if a.revision >= revision => {
                        ok.insert(h, a);
                    }
                    Ok(a) => lag.push(format!("{h} (at revision {})", a.revision)),
                    Err(e) => lag.push(format!("{h} ({e})")),
                }
            }
            if lag.is_empty() {
                return Ok(ok);
            }
            if std::time::Instant::now() >= end {
                return Err(Error::Datastore(format!(
                    "timed out after {:.1} s waiting for revision {revision}; lagging: {}",
                    timeout.as_secs_f64(),
                    lag.join(", ")
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs a future on the store's runtime, blocking.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A handle on the client (cheap clone).
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Datastore for EtcdStore {
    fn snapshot(&mut self) -> Result<ClusterState> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move { snapshot(&mut c, &p).await.map(|(s, _)| s) })
    }

    fn put(&mut self, rel: &str, value: &str) -> Result<i64> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move {
            let r = c.put(format!("{p}{rel}"), value, None).await.map_err(|e| err("put", e))?;
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        })
    }

    fn delete(&mut self, rel: &str) -> Result<i64> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move {
            let r = c.delete(format!("{p}{rel}"), None).await.map_err(|e| err("delete", e))?;
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        })
    }

    fn allocate_identity(&mut self, key: &IdentityKey) -> Result<u32> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move { allocate_identity(&mut c, &p, key).await })
    }
}
