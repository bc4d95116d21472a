//! The host agent: one thread per host, off the packet path, that keeps this
//! host's view of the cluster current.
//!
//! - registers the host's namespaces and workloads in etcd, workloads under a
//!   lease kept alive by the agent (a dead host's workloads expire with it);
//! - watches the prefix and hands the control thread a checked [`Desired`]
//!   state after every change (a state that does not parse or compile is
//!   rejected with one log line, and the last good one stays enforced);
//! - writes the control thread's acknowledgements (the data revision it
//!   enforces) under `hosts/<host>`;
//! - when etcd is unreachable, keeps the last state (the control thread keeps
//!   enforcing it), retries with exponential backoff (50 ms to 2 s), logs one
//!   line per change of connectivity and shows it in [`AgentStatus`]; once
//!   back, it resumes the watch from the last revision it processed (a full
//!   re-read only when etcd compacted that revision away), so an unchanged
//!   state republishes nothing and established flows are untouched;
//! - optionally caches the last good state in a [`FileStore`], so a restarted
//!   host enforces it before etcd answers.

use super::etcd::{self, err, EtcdConfig};
use super::{keys, ClusterState, Desired, FileStore, HostAck, WorkloadRecord};
use crate::error::{Error, Result};
use crate::model::Model;
use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// What the agent does.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The etcd cluster.
    pub etcd: EtcdConfig,
    /// This host's name (unique in the cluster).
    pub host: String,
    /// Lease TTL in seconds for this host's workloads and acknowledgement.
    pub lease_ttl: i64,
    /// This host's namespaces and workloads (with their ports).
    pub local: Model,
    /// Where the last good state is cached (None: not cached).
    pub cache: Option<std::path::PathBuf>,
    /// How often the agent collects identities no workload uses (ZERO: never).
    /// An identity is collected only when it was unused for a whole interval.
    pub identity_gc: Duration,
}

/// Live figures (the `bulkhead_datastore_*` metrics and `show cluster`).
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// This host's name.
    pub host: String,
    /// The key prefix.
    pub prefix: String,
    /// The etcd member of the current (or last) session.
    pub endpoint: Mutex<String>,
    /// Every live host's acknowledged revision, as last seen (None: malformed).
    pub hosts: Mutex<BTreeMap<String, Option<i64>>>,
    /// Identities collected by this host's agent (unused label sets).
    pub identities_collected: AtomicU64,
    /// etcd reachable and the watch running.
    pub connected: AtomicBool,
    /// Times connectivity was lost.
    pub disconnects: AtomicU64,
    /// States rejected as malformed.
    pub rejected: AtomicU64,
    /// The last data revision seen.
    pub seen: AtomicI64,
    /// The last data revision acknowledged as enforced.
    pub enforced: AtomicI64,
    /// The last error (connectivity or rejected data).
    pub last_error: Mutex<String>,
}

/// The control thread's side.
#[derive(Debug)]
pub struct AgentHandle {
    /// Checked states to enforce, in order.
    pub updates: mpsc::Receiver<Desired>,
    acks: tokio::sync::mpsc::UnboundedSender<HostAck>,
    /// Live figures.
    pub status: Arc<AgentStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentHandle {
    /// Reports that `revision` is enforced (with `workloads` workloads).
    pub fn ack(&self, revision: i64, workloads: usize) {
        let _ = self.acks.send(HostAck { revision, workloads, at_ms: super::now_ms() });
    }

    /// Stops the agent thread and waits for it (its lease is revoked, so its
    /// workloads leave the cluster at once).
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// A log sink (the binary prints; tests collect).
pub type Log = Box<dyn Fn(&str) + Send>;

/// Starts the agent thread.
///
/// # Errors
/// The thread or its runtime could not start.
pub fn spawn(cfg: AgentConfig, log: Log) -> Result<AgentHandle> {
    if cfg.etcd.endpoints.is_empty() {
        return Err(Error::Datastore("no etcd endpoints".into()));
    }
    let (tx, rx) = mpsc::channel();
    let (atx, arx) = tokio::sync::mpsc::unbounded_channel();
    let status = Arc::new(AgentStatus { host: cfg.host.clone(), prefix: cfg.etcd.prefix.clone(), ..AgentStatus::default() });
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Datastore(format!("runtime: {e}")))?;
    let mut a = Agent { cfg, log, tx, acks: arx, status: status.clone(), stop: stop.clone(), state: ClusterState::default(), store_rev: 0, synced: false, enforced: None, gc_floor: 0 };
    let thread = std::thread::Builder::new()
        .name("bh-agent".into())
        .spawn(move || rt.block_on(a.run()))
        .map_err(|e| Error::Datastore(format!("agent thread: {e}")))?;
    Ok(AgentHandle { updates: rx, acks: atx, status, stop, thread: Some(thread) })
}

struct Agent {
    cfg: AgentConfig,
    log: Log,
    tx: mpsc::Sender<Desired>,
    acks: tokio::sync::mpsc::UnboundedReceiver<HostAck>,
    status: Arc<AgentStatus>,
    stop: Arc<AtomicBool>,
    /// The last state seen (raw), and the store revision processed last.
    state: ClusterState,
    store_rev: i64,
    synced: bool,
    enforced: Option<HostAck>,
    /// The store revision of the last identity collection pass (identities
    /// written after it are too young to collect).
    gc_floor: i64,
}

impl Agent {
    async fn run(&mut self) {
        if let Some(p) = &self.cfg.cache {
            match FileStore::new(p).load() {
                Ok(st) if !st.kvs.is_empty() => {
                    (self.log)(&format!("cluster: enforcing the cached state (revision {}) until etcd answers", st.revision));
                    self.state = st;
                    self.deliver(false);
                }
                Ok(_) => {}
                Err(e) => (self.log)(&format!("cluster: cached state ignored: {e}")),
            }
        }
        let mut backoff = Duration::from_millis(50);
        let mut member = 0usize;
        while !self.stop.load(Relaxed) {
            let e = self.session(&mut backoff, member).await;
            // The next session tries the next member.
            member = member.wrapping_add(1);
            if self.stop.load(Relaxed) {
                break;
            }
            let e = e.err().map(|e| e.to_string()).unwrap_or_else(|| "session ended".into());
            if self.status.connected.swap(false, Relaxed) {
                self.status.disconnects.fetch_add(1, Relaxed);
                (self.log)(&format!("cluster: etcd unreachable ({e}); enforcing the last state (revision {}), retrying", self.status.enforced.load(Relaxed)));
            }
            *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
            let t = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < t && !self.stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Checks the current state and hands it to the control thread, or
    /// rejects it (the last good state stays). `save`: cache it.
    fn deliver(&mut self, save: bool) {
        self.status.seen.store(self.state.revision, Relaxed);
        match self.state.desired(&self.cfg.host, &self.cfg.local) {
            Ok(d) => {
                if save {
                    if let Some(p) = &self.cfg.cache {
                        if let Err(e) = FileStore::new(p).save(&self.state) {
                            (self.log)(&format!("cluster: caching the state: {e}"));
                        }
                    }
                }
                let _ = self.tx.send(d);
            }
            Err(e) => {
                self.status.rejected.fetch_add(1, Relaxed);
                let msg = format!("cluster: rejected revision {}: {e}; still enforcing revision {}", self.state.revision, self.status.enforced.load(Relaxed));
                (self.log)(&msg);
                *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = msg;
            }
        }
    }

    async fn register(&mut self, c: &mut Client, lease: i64) -> Result<()> {
        let p = self.cfg.etcd.prefix.clone();
        for (name, ns) in &self.cfg.local.namespaces {
            let mut labels = ns.labels.clone();
            labels.remove(crate::model::NS_NAME_LABEL);
            let v = serde_json::to_string(&labels).map_err(|e| Error::Datastore(e.to_string()))?;
            let k = format!("{p}{}{name}", keys::NS);
            if self.state.kvs.get(&k[p.len()..]) != Some(&v) {
                c.put(k, v, None).await.map_err(|e| err("put", e))?;
            }
        }
        for (key, w) in &self.cfg.local.workloads {
            let r = WorkloadRecord { labels: w.labels.clone(), addresses: w.addresses.clone(), host: self.cfg.host.clone(), mac: w.mac.map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")) };
            // A record already there keeps its value (labels changed in etcd
            // belong to the cluster; this host's view of them may be stale
            // after an outage) and only moves to the new lease: one
            // transaction, so a concurrent relabel is never overwritten. A
            // new record is written only while its identity exists.
            etcd::put_workload(c, &p, key, &r, lease, true).await?;
        }
        if let Some(a) = &self.enforced {
            self.put_ack(c, lease, a.clone()).await?;
        }
        Ok(())
    }

    async fn put_ack(&mut self, c: &mut Client, lease: i64, a: HostAck) -> Result<()> {
        let v = serde_json::to_string(&a).map_err(|e| Error::Datastore(e.to_string()))?;
        c.put(format!("{}{}{}", self.cfg.etcd.prefix, keys::HOSTS, self.cfg.host), v, Some(PutOptions::new().with_lease(lease))).await.map_err(|e| err("put ack", e))?;
        self.status.enforced.store(a.revision, Relaxed);
        self.enforced = Some(a);
        Ok(())
    }

    async fn resnapshot(&mut self, c: &mut Client) -> Result<()> {
        let (st, rev) = etcd::snapshot(c, &self.cfg.etcd.prefix).await?;
        self.state = st;
        self.store_rev = rev;
        self.synced = true;
        self.refresh_hosts();
        Ok(())
    }

    /// Copies the live hosts' acknowledgements into the status.
    fn refresh_hosts(&self) {
        let h = self.state.acks().into_iter().map(|(h, a)| (h, a.ok().map(|a| a.revision))).collect();
        *self.status.hosts.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// One identity collection pass (errors are logged, never fatal).
    async fn collect_identities(&mut self, c: &mut Client) {
        match etcd::collect_identities(c, &self.cfg.etcd.prefix, self.gc_floor).await {
            Ok((ids, rev)) => {
                self.gc_floor = rev;
                if !ids.is_empty() {
                    self.status.identities_collected.fetch_add(ids.len() as u64, Relaxed);
                    (self.log)(&format!("cluster: collected {} identities no workload uses: {ids:?}", ids.len()));
                }
            }
            Err(e) => (self.log)(&format!("cluster: identity collection skipped: {e}")),
        }
    }

    /// One session with one member (`member` modulo the endpoints): a
    /// channel balanced over every member keeps sending some requests to a
    /// dead one, so the agent talks to one member at a time and moves to the
    /// next when a session fails.
    async fn session(&mut self, backoff: &mut Duration, member: usize) -> Result<()> {
        let eps = &self.cfg.etcd.endpoints;
        let one = EtcdConfig { endpoints: vec![eps[member % eps.len().max(1)].clone()], prefix: self.cfg.etcd.prefix.clone() };
        *self.status.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = one.endpoints[0].clone();
        let mut c = etcd::connect(&one).await?;
        let lease = c.lease_grant(self.cfg.lease_ttl, None).await.map_err(|e| err("lease grant", e))?.id();
        let (mut keeper, mut ka) = c.lease_keep_alive(lease).await.map_err(|e| err("lease keep-alive", e))?;
        let full = !self.synced;
        if full {
            self.resnapshot(&mut c).await?;
        }
        self.register(&mut c, lease).await?;
        let prefix = self.cfg.etcd.prefix.clone();
        let mut watch = c.watch(prefix.as_str(), Some(WatchOptions::new().with_prefix().with_start_revision(self.store_rev + 1))).await.map_err(|e| err("watch", e))?;
        self.status.connected.store(true, Relaxed);
        let how = if full { "after reading the whole state" } else { "resuming after the last revision processed" };
        (self.log)(&format!("cluster: etcd connected ({}), host {} watching {prefix} from revision {} ({how})", one.endpoints[0], self.cfg.host, self.store_rev + 1));
        *backoff = Duration::from_millis(50);
        if full {
            self.deliver(true);
        }
        let mut tick = tokio::time::interval(Duration::from_millis((self.cfg.lease_ttl.max(1) as u64 * 1000) / 3));
        let mut stop_tick = tokio::time::interval(Duration::from_millis(50));
        let gc_every = if self.cfg.identity_gc.is_zero() { Duration::from_secs(3600 * 24 * 365) } else { self.cfg.identity_gc };
        let mut gc = tokio::time::interval_at(tokio::time::Instant::now() + gc_every, gc_every);
        // A member that dies under an open stream does not always end it:
        // ask for a progress report every second, and give the session up
        // when nothing came back for three.
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        let mut heard = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                _ = progress.tick() => {
                    if heard.elapsed() > Duration::from_secs(3) {
                        break Err(Error::Datastore("etcd watch stalled (no progress report for 3 s)".into()));
                    }
                    if let Err(e) = watch.request_progress().await {
                        break Err(err("watch progress", e));
                    }
                }
                m = watch.message() => {
                    heard = tokio::time::Instant::now();
                    let resp = match m {
                        Ok(Some(r)) => r,
                        Ok(None) => break Err(Error::Datastore("etcd watch closed".into())),
                        Err(e) => break Err(err("watch", e)),
                    };
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            (self.log)(&format!("cluster: revision {} was compacted; re-reading the whole state", self.store_rev + 1));
                            self.resnapshot(&mut c).await?;
                            self.deliver(true);
                            break Err(Error::Datastore("watch restarted after compaction".into()));
                        }
                        break Err(Error::Datastore(format!("etcd watch canceled: {}", resp.cancel_reason())));
                    }
                    let mut data = false;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(k) = kv.key_str() else { continue };
                        let Some(rel) = k.strip_prefix(prefix.as_str()) else { continue };
                        let v = match ev.event_type() {
                            EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                            EventType::Delete => None,
                        };
                        if self.state.set(rel, v) {
                            data = true;
                            self.state.revision = self.state.revision.max(kv.mod_revision());
                        }
                        self.store_rev = self.store_rev.max(kv.mod_revision());
                    }
                    if let Some(h) = resp.header() {
                        self.store_rev = self.store_rev.max(h.revision());
                    }
                    self.refresh_hosts();
                    if data {
                        self.deliver(true);
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        break Err(err("lease keep-alive", e));
                    }
                }
                r = ka.message() => match r {
                    Ok(Some(r)) if r.ttl() <= 0 => break Err(Error::Datastore("lease expired".into())),
                    Ok(Some(_)) => {}
                    Ok(None) => break Err(Error::Datastore("lease keep-alive stream closed".into())),
                    Err(e) => break Err(err("lease keep-alive", e)),
                },
                a = self.acks.recv() => {
                    if let Some(a) = a {
                        if let Err(e) = self.put_ack(&mut c, lease, a).await {
                            break Err(e);
                        }
                    }
                }
                _ = gc.tick(), if !self.cfg.identity_gc.is_zero() => {
                    self.collect_identities(&mut c).await;
                }
                _ = stop_tick.tick() => {
                    if self.stop.load(Relaxed) {
                        let _ = c.lease_revoke(lease).await;
                        break Ok(());
                    }
                }
            }
        };
        result
    }
}
