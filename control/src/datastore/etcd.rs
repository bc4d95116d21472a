//! The etcd v3 datastore (etcd-client over gRPC; etcd 3.4 and later). Every
//! key lives under a prefix (default `/bulkhead/`), so several clusters can
//! share one etcd. The async functions here are what the host agent uses;
//! [`EtcdStore`] wraps them for blocking callers (CLI commands, tests) with a
//! runtime of its own.

use super::{is_data_key, keys, ClusterState, Datastore, HostAck, WorkloadRecord};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, FIRST_DYNAMIC};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
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

/// Writes workload `key` (`ns/name`) with `value`, only while the identity
/// of its label set exists: the identity is allocated (or found) first, and
/// the write is one transaction that fails when the identity was collected
/// meanwhile (then it allocates again). Together with the check in
/// [`collect_identities`] no workload is ever stored without its number.
/// `lease`: a new key is attached to it (0 = none). `keep`: a record already
/// there keeps its value and only moves to `lease` (a host re-registering
/// after an outage must not overwrite a relabel made meanwhile); otherwise
/// (with `lease` 0, an operator's change) a record already there gets the
/// new value and keeps its lease, so it still expires with its host.
///
/// # Errors
/// etcd errors; a key that is not `ns/name`.
pub async fn put_workload(c: &mut Client, prefix: &str, key: &str, r: &WorkloadRecord, lease: i64, keep: bool) -> Result<i64> {
    let (ns, _) = key.split_once('/').ok_or_else(|| Error::BadArg { arg: key.into(), msg: "expected namespace/name".into() })?;
    let ik = IdentityKey { namespace: ns.into(), labels: r.labels.clone() };
    let id_k = format!("{prefix}{}{}", keys::ID_KEY, super::identity_key_text(&ik));
    let k = format!("{prefix}{}{key}", keys::WL);
    let v = serde_json::to_string(r).map_err(|e| Error::Datastore(e.to_string()))?;
    let opts = || if lease != 0 { Some(PutOptions::new().with_lease(lease)) } else { None };
    let rev = |r: &etcd_client::TxnResponse| r.header().map(|h| h.revision()).unwrap_or(0);
    for _ in 0..100 {
        if keep {
            let o = PutOptions::new().with_ignore_value();
            let o = if lease != 0 { o.with_lease(lease) } else { o };
            let txn = Txn::new().when([Compare::create_revision(k.as_str(), CompareOp::Greater, 0)]).and_then([TxnOp::put(k.as_str(), "", Some(o))]);
            let t = c.txn(txn).await.map_err(|e| err("register workload", e))?;
            if t.succeeded() {
                return Ok(rev(&t));
            }
        }
        allocate_identity(c, prefix, &ik).await?;
        let has_id = || Compare::create_revision(id_k.as_str(), CompareOp::Greater, 0);
        if !keep {
            // A record already there keeps the lease it has (its host's):
            // a plain put would detach it, and it would outlive its host.
            let o = PutOptions::new().with_ignore_lease();
            let txn = Txn::new().when([has_id(), Compare::create_revision(k.as_str(), CompareOp::Greater, 0)]).and_then([TxnOp::put(k.as_str(), v.as_str(), Some(o))]);
            let t = c.txn(txn).await.map_err(|e| err("put workload", e))?;
            if t.succeeded() {
                return Ok(rev(&t));
            }
        }
        let when = [has_id(), Compare::create_revision(k.as_str(), CompareOp::Equal, 0)];
        let t = c.txn(Txn::new().when(when).and_then([TxnOp::put(k.as_str(), v.as_str(), opts())])).await.map_err(|e| err("put workload", e))?;
        if t.succeeded() {
            return Ok(rev(&t));
        }
    }
    Err(Error::Datastore(format!("workload {key}: too much contention")))
}

/// Identities at most this many to a transaction (etcd's default limit is
/// 128 operations; each identity takes two deletes).
const GC_BATCH: usize = 50;

/// Deletes the identities no workload uses any more (`id/key/...` and its
/// `id/num/...`), if they were last written at or before store revision
/// `older_than` (a grace period: pass the store revision of the previous
/// pass, so an identity allocated just before its workload is written is
/// never taken). Each batch is one transaction that holds only while no
/// workload key was written since the read it decided on, and while each
/// identity key is unchanged, so a workload written concurrently (see
/// [`put_workload`]) either is seen here or finds its identity gone and
/// allocates again. Numbers are never reused (`id/next` only grows).
///
/// Returns the numbers collected and the store revision read.
///
/// # Errors
/// etcd errors; a malformed workload record (nothing is collected then:
/// which identities it uses is unknown).
pub async fn collect_identities(c: &mut Client, prefix: &str, older_than: i64) -> Result<(Vec<u32>, i64)> {
    let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(|e| err("get", e))?;
    let store_rev = r.header().map(|h| h.revision()).unwrap_or(0);
    let mut st = ClusterState::default();
    let mut ids = Vec::new();
    for kv in r.kvs() {
        let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else { continue };
        let rel = &k[prefix.len()..];
        if let Some(text) = rel.strip_prefix(keys::ID_KEY) {
            ids.push((text.to_string(), v.trim().to_string(), kv.mod_revision()));
        } else if rel.starts_with(keys::WL) {
            st.kvs.insert(rel.to_string(), v.to_string());
        }
    }
    let used: std::collections::HashSet<String> = st
        .workloads()?
        .iter()
        .map(|(name, w)| super::identity_key_text(&IdentityKey { namespace: name.split_once('/').map(|x| x.0).unwrap_or_default().into(), labels: w.labels.clone() }))
        .collect();
    let unused: Vec<_> = ids.into_iter().filter(|(text, _, rev)| !used.contains(text) && *rev <= older_than).collect();
    let wl = format!("{prefix}{}", keys::WL);
    let mut collected = Vec::new();
    for batch in unused.chunks(GC_BATCH) {
        let mut when = vec![Compare::mod_revision(wl.as_str(), CompareOp::Less, store_rev + 1).with_prefix()];
        let mut ops = Vec::new();
        for (text, num, rev) in batch {
            let k = format!("{prefix}{}{text}", keys::ID_KEY);
            when.push(Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev));
            ops.push(TxnOp::delete(k.as_str(), None));
            ops.push(TxnOp::delete(format!("{prefix}{}{num}", keys::ID_NUM), None));
        }
        let t = c.txn(Txn::new().when(when).and_then(ops)).await.map_err(|e| err("collect identities", e))?;
        if !t.succeeded() {
            // A workload was written meanwhile: the next pass decides again.
            break;
        }
        collected.extend(batch.iter().filter_map(|(_, n, _)| n.parse::<u32>().ok()));
    }
    Ok((collected, store_rev))
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

    /// Deletes the identities no workload uses, last written at or before
    /// store revision `older_than` (see [`collect_identities`]); the numbers
    /// collected and the store revision read.
    ///
    /// # Errors
    /// As [`collect_identities`].
    pub fn collect_identities(&mut self, older_than: i64) -> Result<(Vec<u32>, i64)> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move { collect_identities(&mut c, &p, older_than).await })
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

    fn put_workload(&mut self, key: &str, r: &WorkloadRecord) -> Result<i64> {
        let (mut c, p) = (self.client(), self.cfg.prefix.clone());
        self.block_on(async move { put_workload(&mut c, &p, key, r, 0, false).await })
    }
}
