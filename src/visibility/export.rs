//! The flow-record pipeline: lcores -> bounded queue -> exporter thread -> sinks.
//!
//! Nothing is lost silently: an event that finds the queue full is counted in
//! `lost_queue` (by the lcore that could not push it), a record a sink could not
//! take is counted in `lost_sink` (per sink kind), and both appear in metrics
//! and in `show flows`.

use super::ipfix::IpfixExporter;
use super::record::{Enricher, FlowEvent, FlowRecord};
use crossbeam_queue::ArrayQueue;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where records go.
#[derive(Clone, Debug, Default)]
pub struct FlowLogConfig {
    /// A JSON-lines file (appended).
    pub json: Option<PathBuf>,
    /// An IPFIX collector (UDP).
    pub ipfix: Option<SocketAddr>,
    /// A Unix socket that `bulkhead flows --follow` connects to.
    pub follow: Option<PathBuf>,
    /// Queue depth between lcores and the exporter.
    pub queue: usize,
}

/// Counters, shared (read by metrics and the shell).
#[derive(Debug, Default)]
pub struct FlowLogStats {
    /// Events taken from the queue.
    pub exported: AtomicU64,
    /// Events lost because the queue was full.
    pub lost_queue: AtomicU64,
    /// Records the JSON sink failed to write.
    pub lost_json: AtomicU64,
    /// Records the IPFIX sink failed to send.
    pub lost_ipfix: AtomicU64,
    /// Records a slow `--follow` client could not take.
    pub lost_follow: AtomicU64,
}

/// The lcore's handle: pushes events, never blocks.
#[derive(Debug, Clone)]
pub struct EventSender {
    q: Arc<ArrayQueue<FlowEvent>>,
    stats: Arc<FlowLogStats>,
}

impl EventSender {
    /// Queues an event if there is room (nothing counted otherwise: the
    /// caller retries or calls [`send`](Self::send)).
    pub fn try_send(&self, e: FlowEvent) -> bool {
        self.q.push(e).is_ok()
    }

    /// Queues an event. On a full queue the event is counted as lost.
    #[inline]
    pub fn send(&self, e: FlowEvent) -> bool {
        if self.q.push(e).is_ok() {
            return true;
        }
        // Relaxed: a statistic; nothing is published through it.
        self.stats.lost_queue.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Denied flows per (source, destination, service), with the deciding rule:
/// what the demo and `show flows` rank. Written by the exporter thread only.
pub type DeniedTally = Arc<Mutex<std::collections::HashMap<String, (u64, String)>>>;

/// Hits of one deciding policy with one verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// Flows (start records).
    pub flows: u64,
    /// Packets, both directions (the deltas of every record: exact once a
    /// flow's end record is in; live flows lag by up to one export interval).
    pub packets: u64,
    /// Bytes, both directions, likewise.
    pub bytes: u64,
}

/// Hits per (deciding policy, verdict), from the enriched records: computed
/// by the exporter thread, nothing on the lcores.
pub type PolicyHits = Arc<Mutex<std::collections::BTreeMap<(String, &'static str), Hits>>>;

/// The verdict's name, as records write it.
pub fn verdict_name(v: super::record::FlowVerdict) -> &'static str {
    use super::record::FlowVerdict as V;
    match v {
        V::Allow => "allow",
        V::Deny => "deny",
        V::AuditDeny => "audit-deny",
        V::Drop => "drop",
    }
}

fn tally_hits(hits: &PolicyHits, batch: &[FlowRecord]) {
    let mut t = hits.lock().unwrap_or_else(|e| e.into_inner());
    for r in batch {
        let h = t.entry((r.policy.clone(), verdict_name(r.verdict))).or_default();
        if r.kind == super::record::RecordKind::Start {
            h.flows += 1;
        }
        h.packets += r.delta.packets[0] + r.delta.packets[1];
        h.bytes += r.delta.bytes[0] + r.delta.bytes[1];
    }
}

fn side(e: &super::record::Endpoint) -> String {
    match (&e.workload, e.ip) {
        (Some(w), _) => w.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "?".into(),
    }
}

fn proto_name(p: u8) -> String {
    control::model::proto::name(p).to_ascii_lowercase()
}

/// The running exporter.
#[derive(Debug)]
pub struct FlowLog {
    q: Arc<ArrayQueue<FlowEvent>>,
    /// Counters.
    pub stats: Arc<FlowLogStats>,
    denied: DeniedTally,
    hits: PolicyHits,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    follow_path: Option<PathBuf>,
}

type Clients = Arc<Mutex<Vec<UnixStream>>>;

fn follow_listener(path: &Path, clients: Clients) -> io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new().name("bh-flows-follow".into()).spawn(move || {
        for c in l.incoming().flatten() {
            if c.set_nonblocking(true).is_ok() {
                if let Ok(mut v) = clients.lock() {
                    v.push(c);
                }
            }
        }
    })?;
    Ok(())
}

impl FlowLog {
    /// Opens the sinks and starts the exporter thread.
    pub fn start(cfg: &FlowLogConfig, enricher: Arc<dyn Enricher + Send + Sync>) -> io::Result<Self> {
        let mut json: Option<BufWriter<File>> = match &cfg.json {
            Some(p) => Some(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| io::Error::new(e.kind(), format!("flow log {}: {e}", p.display())))?,
            )),
            None => None,
        };
        let mut ipfix = match cfg.ipfix {
            Some(a) => Some(IpfixExporter::new(a, 1)?),
            None => None,
        };
        let clients: Clients = Arc::new(Mutex::new(Vec::new()));
        if let Some(p) = &cfg.follow {
            follow_listener(p, clients.clone())?;
        }
        let q = Arc::new(ArrayQueue::new(cfg.queue.max(64)));
        let stats = Arc::new(FlowLogStats::default());
        let denied: DeniedTally = Arc::default();
        let tally = denied.clone();
        let hits: PolicyHits = Arc::default();
        let hits2 = hits.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (q2, st, stop2) = (q.clone(), stats.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("bh-flowlog".into()).spawn(move || {
            let mut batch: Vec<FlowRecord> = Vec::with_capacity(256);
            loop {
                // Acquire: pairs with the Release store in `stop()`; events queued before it are drained below.
                let stopping = stop2.load(Ordering::Acquire);
                while batch.len() < 256 {
                    let Some(e) = q2.pop() else { break };
                    batch.push(FlowRecord::from_event(&e, enricher.as_ref()));
                }
                if batch.is_empty() {
                    if stopping {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let n = batch.len() as u64;
                st.exported.fetch_add(n, Ordering::Relaxed);
                tally_hits(&hits2, &batch);
                if let Ok(mut t) = tally.lock() {
                    for r in batch.iter().filter(|r| r.verdict == super::record::FlowVerdict::Deny && r.kind == super::record::RecordKind::Start) {
                        let k = format!("{} -> {} :{}/{}", side(&r.src), side(&r.dst), r.dst.port, proto_name(r.proto));
                        let e = t.entry(k).or_insert((0, String::new()));
                        e.0 += 1;
                        e.1 = if r.policy == "default" { "the default (no rule matched)".into() } else { format!("{} {}", r.policy, r.rule) };
                    }
                }
                let lines: Vec<String> = batch.iter().map(FlowRecord::to_json).collect();
                if let Some(w) = json.as_mut() {
                    let ok = lines.iter().all(|l| writeln!(w, "{l}").is_ok()) && w.flush().is_ok();
                    if !ok {
                        st.lost_json.fetch_add(n, Ordering::Relaxed);
                    }
                }
                if let Some(x) = ipfix.as_mut() {
                    if x.export(&batch).is_err() {
                        st.lost_ipfix.fetch_add(n, Ordering::Relaxed);
                    }
                }
                if let Ok(mut cs) = clients.lock() {
                    cs.retain_mut(|c| {
                        for l in &lines {
                            let mut buf = l.clone().into_bytes();
                            buf.push(b'\n');
                            match c.write_all(&buf) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    st.lost_follow.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => return false,
                            }
                        }
                        true
                    });
                }
                batch.clear();
            }
        })?;
        Ok(Self { q, stats, denied, hits, stop, thread: Some(thread), follow_path: cfg.follow.clone() })
    }

    /// Hits per deciding policy and verdict (`default` for flows no rule
    /// decided), sorted by policy then verdict.
    pub fn policy_hits(&self) -> Vec<(String, &'static str, Hits)> {
        let t = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|((p, v), h)| (p.clone(), *v, *h)).collect()
    }

    /// The `n` most denied (source -> destination service) pairs: flows
    /// denied, and the rule that denied the last of them.
    pub fn top_denied(&self, n: usize) -> Vec<(String, u64, String)> {
        let t = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u64, String)> = t.iter().map(|(k, (c, r))| (k.clone(), *c, r.clone())).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// A sender for an lcore.
    pub fn sender(&self) -> EventSender {
        EventSender { q: self.q.clone(), stats: self.stats.clone() }
    }

    /// Drains what is queued, then stops the exporter.
    pub fn stop(&mut self) {
        // Release: pairs with the Acquire load in the exporter loop.
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.follow_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bulkhead flows --follow`: prints records from a running switch as they come.
pub fn follow(path: &Path, out: &mut dyn Write) -> io::Result<()> {
    let s = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e} (is `bulkhead run` up with flow records on?)", path.display())))?;
    let mut r = io::BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if io::BufRead::read_line(&mut r, &mut line)? == 0 {
            return Ok(());
        }
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visibility::record::{FlowVerdict, NoEnrich, RecordKind};
    use core::net::Ipv4Addr;
    use flowtable::FlowKey;

    fn ev(i: u16) -> FlowEvent {
        FlowEvent {
            kind: RecordKind::Start,
            key: FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, i, 53),
            verdict: FlowVerdict::Allow,
            cookie: 0,
            packets: [1, 0],
            bytes: [64, 0],
            reported_packets: [0; 2],
            reported_bytes: [0; 2],
            start_ms: 1,
            last_ms: 1,
            end: None,
        }
    }

    #[test]
    fn json_and_follow_sinks_get_every_record_and_losses_are_counted() {
        let dir = std::env::temp_dir().join(format!("bh-flowlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = FlowLogConfig {
            json: Some(dir.join("flows.jsonl")),
            follow: Some(dir.join("flows.sock")),
            queue: 64,
            ..Default::default()
        };
        let mut log = FlowLog::start(&cfg, Arc::new(NoEnrich)).unwrap();
        let follower = UnixStream::connect(dir.join("flows.sock")).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // let the listener register it
        let tx = log.sender();
        let mut sent = 0u64;
        for i in 0..1000 {
            if tx.send(ev(i)) {
                sent += 1;
            }
        }
        log.stop();
        let lost = log.stats.lost_queue.load(Ordering::Relaxed);
        assert_eq!(sent + lost, 1000, "every event is either queued or counted lost");
        assert_eq!(log.stats.exported.load(Ordering::Relaxed), sent);
        let text = std::fs::read_to_string(dir.join("flows.jsonl")).unwrap();
        assert_eq!(text.lines().count() as u64, sent);
        assert!(text.lines().all(|l| l.contains("\"verdict\":\"allow\"")));
        follower.set_nonblocking(true).unwrap();
        let mut got = String::new();
        let _ = io::Read::read_to_string(&mut &follower, &mut got);
        let followed = got.lines().count() as u64;
        assert_eq!(followed + log.stats.lost_follow.load(Ordering::Relaxed), sent);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn policy_hits_count_flows_on_start_and_packets_from_every_record() {
        let mut log = FlowLog::start(&FlowLogConfig { queue: 64, ..Default::default() }, Arc::new(NoEnrich)).unwrap();
        let tx = log.sender();
        let start = FlowEvent { cookie: 7, ..ev(1) };
        let periodic = FlowEvent { kind: RecordKind::Periodic, packets: [10, 8], bytes: [1000, 800], reported_packets: [1, 0], reported_bytes: [64, 0], ..start };
        let end = FlowEvent {
            kind: RecordKind::End,
            packets: [12, 9],
            bytes: [1200, 900],
            reported_packets: [10, 8],
            reported_bytes: [1000, 800],
            end: Some(flowtable::conntrack::EndReason::Fin),
            ..start
        };
        let denied = FlowEvent { verdict: FlowVerdict::Deny, ..ev(2) };
        for e in [start, periodic, end, denied] {
            assert!(tx.send(e));
        }
        log.stop();
        let hits = log.policy_hits();
        assert_eq!(
            hits,
            vec![
                ("cookie".to_string(), "allow", Hits { flows: 1, packets: 21, bytes: 2100 }),
                ("default".to_string(), "deny", Hits { flows: 1, packets: 1, bytes: 64 }),
            ]
        );
    }
}
