//! Flow records: what every flow did, with both sides' workloads and the
//! policy and rule that decided it.
//!
//! The lcore emits compact [`FlowEvent`]s (key, verdict, counters, the rule's
//! cookie) into a bounded queue; the exporter thread enriches them into
//! [`FlowRecord`]s through an [`Enricher`] (the control plane's view of
//! workloads and policies) and writes them to every sink. A record that a full
//! queue or a slow sink could not take is counted in `lost`, never dropped
//! silently.
//!
//! A flow's life in records:
//! - `start`: its first packet, decided by policy (allowed connections and
//!   denied flows alike; packets 1).
//! - `periodic`: a live flow with new packets, every `[flowlog] interval_ms`
//!   (default 60 s), counters so far.
//! - `end`: the flow left the lcore's tables, with `end_reason`: `fin`
//!   (TCP FINs, once FIN_WAIT / TIME_WAIT expired), `rst` (reset, once CLOSE
//!   expired), `timeout` (idle), `evicted` (room for another), `revoked` (a
//!   policy change denies it), `cut` (quarantine or link down), `flush` (the
//!   lcore stopped).
//!
//! Counters are totals so far per direction: `packets` / `bytes` from the
//! source (the initiator) to the destination, `reply_packets` / `reply_bytes`
//! back. Allowed connections are counted by conntrack (both directions);
//! denied flows by a bounded per-lcore table of denied flows (one direction:
//! the other way is another flow). IPFIX carries the deltas since the
//! previous record of the flow (`packetDeltaCount`, `octetDeltaCount` and
//! RFC 5103's reverse elements), so a collector's sums are exact.

use flowtable::conntrack::EndReason;
use flowtable::key::ip_of;
use flowtable::FlowKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where in a flow's life a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// First packet seen.
    Start,
    /// Still active: counters so far (every export interval, when it saw packets).
    Periodic,
    /// Ended (FIN, RST, timeout, eviction, policy change, cut, flush): final counters.
    End,
}

/// The verdict a flow got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowVerdict {
    /// Forwarded.
    Allow,
    /// Dropped by policy.
    Deny,
    /// An audit-mode policy would have denied it; forwarded.
    AuditDeny,
    /// Dropped for another reason (unknown destination, malformed, ...).
    Drop,
}

/// What the lcore reports (no allocation, `Copy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// Start, periodic or end.
    pub kind: RecordKind,
    /// The flow.
    pub key: FlowKey,
    /// Its verdict.
    pub verdict: FlowVerdict,
    /// Cookie of the deciding rule (0 = a default decided).
    pub cookie: u64,
    /// Packets so far: `[from the initiator, back to it]`.
    pub packets: [u64; 2],
    /// Bytes so far, likewise.
    pub bytes: [u64; 2],
    /// Packets earlier records of this flow reported (start: none).
    pub reported_packets: [u64; 2],
    /// Bytes earlier records of this flow reported.
    pub reported_bytes: [u64; 2],
    /// First packet, ms since the Unix epoch.
    pub start_ms: u64,
    /// Last packet, ms since the Unix epoch.
    pub last_ms: u64,
    /// Why it ended (end records only).
    pub end: Option<EndReason>,
}

/// One side of a flow, as the control plane knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Address.
    pub ip: Option<IpAddr>,
    /// Port (ICMP: type / code).
    pub port: u16,
    /// `namespace/name` of the workload, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Its labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its security identity.
    pub identity: u32,
}

/// A complete flow record, as sinks write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// Start, periodic or end.
    pub kind: RecordKind,
    /// First packet, ms since the epoch.
    pub start_ms: u64,
    /// Last packet, ms since the epoch.
    pub last_ms: u64,
    /// IP protocol number.
    pub proto: u8,
    /// Source side.
    pub src: Endpoint,
    /// Destination side.
    pub dst: Endpoint,
    /// Verdict.
    pub verdict: FlowVerdict,
    /// Deciding policy (`namespace/name`), or `default`.
    pub policy: String,
    /// Deciding rule within the policy (e.g. `ingress[0]`), or the default's name.
    pub rule: String,
    /// Packets from the source (the initiator) to the destination, so far.
    pub packets: u64,
    /// Bytes from the source to the destination, so far.
    pub bytes: u64,
    /// Packets back from the destination, so far (denied flows: 0, the
    /// other way is another flow).
    pub reply_packets: u64,
    /// Bytes back from the destination, so far.
    pub reply_bytes: u64,
    /// Why the flow ended (end records only): fin, rst, timeout, evicted,
    /// revoked, cut, flush.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<&'static str>,
    /// What this record adds to the earlier ones of its flow: packets and
    /// bytes per direction `[forward, reply]` (IPFIX delta counts; not in JSON).
    #[serde(skip)]
    pub delta: Delta,
}

/// Counts a record adds to the earlier records of its flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Packets `[forward, reply]`.
    pub packets: [u64; 2],
    /// Bytes `[forward, reply]`.
    pub bytes: [u64; 2],
}

/// The control plane's view, used to enrich events into records.
pub trait Enricher {
    /// Workload name and labels behind an address (None when unknown).
    fn workload(&self, ip: IpAddr) -> Option<(String, BTreeMap<String, String>)>;
    /// Policy and rule names behind a rule cookie (cookie 0: the default).
    fn rule(&self, cookie: u64) -> (String, String);
}

/// An enricher that knows nothing: addresses and cookies only.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEnrich;

#[cfg(test)]
impl Enricher for NoEnrich {
    fn workload(&self, _: IpAddr) -> Option<(String, BTreeMap<String, String>)> {
        None
    }
    fn rule(&self, cookie: u64) -> (String, String) {
        if cookie == 0 { ("default".into(), "default".into()) } else { ("cookie".into(), format!("{cookie:#x}")) }
    }
}

impl FlowRecord {
    /// Enriches an event.
    pub fn from_event(e: &FlowEvent, en: &dyn Enricher) -> Self {
        let side = |a, port, identity| {
            let ip = ip_of(a);
            let (workload, labels) = match en.workload(ip) {
                Some((w, l)) => (Some(w), l),
                None => (None, BTreeMap::new()),
            };
            Endpoint { ip: Some(ip), port, workload, labels, identity }
        };
        let (policy, rule) = en.rule(e.cookie);
        FlowRecord {
            kind: e.kind,
            start_ms: e.start_ms,
            last_ms: e.last_ms,
            proto: e.key.proto,
            src: side(e.key.src, e.key.sport, e.key.src_id),
            dst: side(e.key.dst, e.key.dport, e.key.dst_id),
            verdict: e.verdict,
            policy,
            rule,
            packets: e.packets[0],
            bytes: e.bytes[0],
            reply_packets: e.packets[1],
            reply_bytes: e.bytes[1],
            end_reason: e.end.map(EndReason::name),
            delta: Delta {
                packets: [0, 1].map(|d| e.packets[d].saturating_sub(e.reported_packets[d])),
                bytes: [0, 1].map(|d| e.bytes[d].saturating_sub(e.reported_bytes[d])),
            },
        }
    }

    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    struct Names;
    impl Enricher for Names {
        fn workload(&self, ip: IpAddr) -> Option<(String, BTreeMap<String, String>)> {
            (ip == IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
                .then(|| ("prod/web-1".to_string(), BTreeMap::from([("app".to_string(), "web".to_string())])))
        }
        fn rule(&self, cookie: u64) -> (String, String) {
            (format!("p{}", cookie >> 32), format!("ingress[{}]", cookie & 0xffff))
        }
    }

    #[test]
    fn record_names_both_sides_and_the_rule() {
        let mut key = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 40000, 443);
        key.src_id = 7;
        let e = FlowEvent {
            kind: RecordKind::Start,
            key,
            verdict: FlowVerdict::Deny,
            cookie: (3 << 32) | 1,
            packets: [1, 0],
            bytes: [60, 0],
            reported_packets: [0; 2],
            reported_bytes: [0; 2],
            start_ms: 5,
            last_ms: 5,
            end: None,
        };
        let r = FlowRecord::from_event(&e, &Names);
        let j = r.to_json();
        assert!(j.contains(r#""workload":"prod/web-1""#), "{j}");
        assert!(j.contains(r#""labels":{"app":"web"}"#), "{j}");
        assert!(j.contains(r#""verdict":"deny""#) && j.contains(r#""policy":"p3""#) && j.contains(r#""rule":"ingress[1]""#), "{j}");
        assert!(j.contains(r#""ip":"10.0.0.2","port":443"#), "{j}");
        assert!(!j.contains(r#""ip":"10.0.0.2","port":443,"workload""#), "unknown side has no workload: {j}");
        assert!(j.contains(r#""packets":1,"bytes":60,"reply_packets":0,"reply_bytes":0}"#) && !j.contains("end_reason"), "{j}");
        assert_eq!(r.delta, Delta { packets: [1, 0], bytes: [60, 0] });
        // An end record: totals both ways, the reason, and what it adds.
        let end = FlowEvent {
            kind: RecordKind::End,
            packets: [5, 4],
            bytes: [700, 2000],
            reported_packets: [3, 2],
            reported_bytes: [500, 1000],
            end: Some(EndReason::Fin),
            ..e
        };
        let r = FlowRecord::from_event(&end, &Names);
        let j = r.to_json();
        assert!(j.contains(r#""kind":"end""#) && j.contains(r#""packets":5,"bytes":700,"reply_packets":4,"reply_bytes":2000,"end_reason":"fin""#), "{j}");
        assert_eq!(r.delta, Delta { packets: [2, 2], bytes: [200, 1000] });
    }
}
