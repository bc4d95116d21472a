//! IPFIX (RFC 7011) export of flow records over UDP.
//!
//! Two templates, one per address family, with IANA information elements only,
//! so any collector (nfdump's nfcapd, for one) decodes them without
//! configuration. The verdict travels as `forwardingStatus` (RFC 7270:
//! 64 = forwarded, 128 = dropped) and `firewallEvent` (1 created, 3 denied,
//! 5 updated, 2 deleted). Templates are resent every [`TEMPLATE_EVERY`] messages
//! (UDP carries no session).
//!
//! Counters are deltas since the previous record of the flow: the start
//! record counts its first packet, periodic and end records what came since
//! (so a collector's sums are exact). The reply direction travels as RFC 5103
//! reverse elements (enterprise 29305: reversePacketDeltaCount,
//! reverseOctetDeltaCount). `flowEndReason` (RFC 5102): 1 idle timeout
//! (timeout), 2 active timeout (periodic), 3 end of flow detected (FIN, RST),
//! 4 forced end (revoked, cut, flush), 5 lack of resources (evicted).

use super::record::{FlowRecord, FlowVerdict, RecordKind};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// Template id for IPv4 records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id for IPv6 records.
pub const TEMPLATE_V6: u16 = 257;
/// Messages between template refreshes.
pub const TEMPLATE_EVERY: u32 = 16;
const MAX_MSG: usize = 1400;

/// RFC 5103's private enterprise number for reverse information elements.
pub const REVERSE_PEN: u32 = 29305;

/// (information element id, length, enterprise number or 0) of the fields after the addresses.
const COMMON: &[(u16, u16, u32)] = &[
    (152, 8, 0),           // flowStartMilliseconds
    (153, 8, 0),           // flowEndMilliseconds
    (7, 2, 0),             // sourceTransportPort
    (11, 2, 0),            // destinationTransportPort
    (4, 1, 0),             // protocolIdentifier
    (2, 8, 0),             // packetDeltaCount
    (1, 8, 0),             // octetDeltaCount
    (89, 1, 0),            // forwardingStatus
    (233, 1, 0),           // firewallEvent
    (136, 1, 0),           // flowEndReason
    (2, 8, REVERSE_PEN),   // reversePacketDeltaCount
    (1, 8, REVERSE_PEN),   // reverseOctetDeltaCount
];

fn template(id: u16, v6: bool) -> Vec<u8> {
    let (src, dst, len) = if v6 { (27u16, 28u16, 16u16) } else { (8, 12, 4) };
    let mut fields = vec![(src, len, 0), (dst, len, 0)];
    fields.extend_from_slice(COMMON);
    let mut b = Vec::new();
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (ie, l, pen) in fields {
        let ie = if pen == 0 { ie } else { ie | 0x8000 };
        b.extend_from_slice(&ie.to_be_bytes());
        b.extend_from_slice(&l.to_be_bytes());
        if pen != 0 {
            b.extend_from_slice(&pen.to_be_bytes());
        }
    }
    b
}

fn record_len(v6: bool) -> usize {
    let a = if v6 { 32 } else { 8 };
    a + COMMON.iter().map(|(_, l, _)| *l as usize).sum::<usize>()
}

fn encode_record(r: &FlowRecord, out: &mut Vec<u8>) {
    match (r.src.ip, r.dst.ip) {
        (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |a: Option<IpAddr>| match a {
                Some(IpAddr::V6(x)) => x.octets(),
                Some(IpAddr::V4(x)) => x.to_ipv6_mapped().octets(),
                None => [0; 16],
            };
            out.extend_from_slice(&v6(s));
            out.extend_from_slice(&v6(d));
        }
    }
    out.extend_from_slice(&r.start_ms.to_be_bytes());
    out.extend_from_slice(&r.last_ms.to_be_bytes());
    out.extend_from_slice(&r.src.port.to_be_bytes());
    out.extend_from_slice(&r.dst.port.to_be_bytes());
    out.push(r.proto);
    out.extend_from_slice(&r.delta.packets[0].to_be_bytes());
    out.extend_from_slice(&r.delta.bytes[0].to_be_bytes());
    let forwarded = matches!(r.verdict, FlowVerdict::Allow | FlowVerdict::AuditDeny);
    out.push(if forwarded { 64 } else { 128 });
    out.push(match (forwarded, r.kind) {
        (false, RecordKind::Start) => 3,
        (_, RecordKind::Start) => 1,
        (_, RecordKind::Periodic) => 5,
        (_, RecordKind::End) => 2,
    });
    out.push(match (r.kind, r.end_reason) {
        (RecordKind::Start, _) => 0,
        (RecordKind::Periodic, _) => 2,
        (RecordKind::End, Some("timeout")) => 1,
        (RecordKind::End, Some("fin" | "rst")) => 3,
        (RecordKind::End, Some("evicted")) => 5,
        (RecordKind::End, _) => 4,
    });
    out.extend_from_slice(&r.delta.packets[1].to_be_bytes());
    out.extend_from_slice(&r.delta.bytes[1].to_be_bytes());
}

fn is_v6(r: &FlowRecord) -> bool {
    !matches!((r.src.ip, r.dst.ip), (Some(IpAddr::V4(_)), Some(IpAddr::V4(_))))
}

/// Builds IPFIX messages from records.
#[derive(Debug)]
pub struct Encoder {
    /// Observation domain id.
    pub domain: u32,
    seq: u32,
    msgs: u32,
}

impl Encoder {
    /// A new encoder.
    pub fn new(domain: u32) -> Self {
        Self { domain, seq: 0, msgs: 0 }
    }

    /// Encodes `records` into messages of at most 1400 bytes: each holds one
    /// data set (one address family), preceded by the template set when due.
    pub fn encode(&mut self, records: &[FlowRecord], now_s: u32) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        for fam in [false, true] {
            let recs: Vec<&FlowRecord> = records.iter().filter(|r| is_v6(r) == fam).collect();
            let mut i = 0;
            while i < recs.len() {
                let mut m = vec![0u8; 16];
                if self.msgs.is_multiple_of(TEMPLATE_EVERY) {
                    let mut set = template(TEMPLATE_V4, false);
                    set.extend_from_slice(&template(TEMPLATE_V6, true));
                    m.extend_from_slice(&2u16.to_be_bytes());
                    m.extend_from_slice(&((set.len() + 4) as u16).to_be_bytes());
                    m.extend_from_slice(&set);
                }
                let room = (MAX_MSG - m.len() - 4) / record_len(fam);
                let chunk = &recs[i..recs.len().min(i + room.max(1))];
                let id = if fam { TEMPLATE_V6 } else { TEMPLATE_V4 };
                m.extend_from_slice(&id.to_be_bytes());
                m.extend_from_slice(&((chunk.len() * record_len(fam) + 4) as u16).to_be_bytes());
                for r in chunk {
                    encode_record(r, &mut m);
                }
                m[0..2].copy_from_slice(&10u16.to_be_bytes());
                let len = m.len() as u16;
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m[4..8].copy_from_slice(&now_s.to_be_bytes());
                m[8..12].copy_from_slice(&self.seq.to_be_bytes());
                m[12..16].copy_from_slice(&self.domain.to_be_bytes());
                self.seq = self.seq.wrapping_add(chunk.len() as u32);
                self.msgs += 1;
                msgs.push(m);
                i += chunk.len();
            }
        }
        msgs
    }
}

/// Sends records to a collector over UDP.
#[derive(Debug)]
pub struct IpfixExporter {
    sock: UdpSocket,
    enc: Encoder,
}

impl IpfixExporter {
    /// Connects (UDP) to `collector`.
    pub fn new(collector: SocketAddr, domain: u32) -> io::Result<Self> {
        let bind: SocketAddr = if collector.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(collector)?;
        Ok(Self { sock, enc: Encoder::new(domain) })
    }

    /// Sends `records`; returns how many messages went out.
    pub fn export(&mut self, records: &[FlowRecord]) -> io::Result<usize> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        let msgs = self.enc.encode(records, now);
        for m in &msgs {
            self.sock.send(m)?;
        }
        Ok(msgs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visibility::record::{Delta, Endpoint};

    fn rec(src: &str, dst: &str, verdict: FlowVerdict) -> FlowRecord {
        let ep = |ip: &str, port| Endpoint { ip: Some(ip.parse().unwrap()), port, ..Default::default() };
        FlowRecord {
            kind: RecordKind::Start,
            start_ms: 1_700_000_000_000,
            last_ms: 1_700_000_000_500,
            proto: 6,
            src: ep(src, 40000),
            dst: ep(dst, 443),
            verdict,
            policy: "p".into(),
            rule: "r".into(),
            packets: 3,
            bytes: 180,
            reply_packets: 0,
            reply_bytes: 0,
            end_reason: None,
            delta: Delta { packets: [3, 0], bytes: [180, 0] },
        }
    }

    #[test]
    fn messages_are_well_formed_and_split_at_1400_bytes() {
        let mut e = Encoder::new(7);
        let mut rs: Vec<FlowRecord> = (0..100).map(|i| rec(&format!("10.0.0.{i}"), "10.0.1.1", FlowVerdict::Allow)).collect();
        rs.push(rec("2001:db8::1", "2001:db8::2", FlowVerdict::Deny));
        let msgs = e.encode(&rs, 42);
        assert!(msgs.len() >= 3, "{} messages", msgs.len());
        let mut data_records = 0;
        let mut seq_expected = 0u32;
        for (k, m) in msgs.iter().enumerate() {
            assert!(m.len() <= 1400);
            assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
            assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
            assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), seq_expected);
            assert_eq!(u32::from_be_bytes(m[12..16].try_into().unwrap()), 7);
            // walk the sets
            let mut off = 16;
            let mut in_msg = 0;
            while off < m.len() {
                let id = u16::from_be_bytes([m[off], m[off + 1]]);
                let len = u16::from_be_bytes([m[off + 2], m[off + 3]]) as usize;
                assert!(len >= 4 && off + len <= m.len());
                if id == 2 {
                    assert_eq!(k, 0, "templates only in the first message here");
                } else {
                    let rl = record_len(id == TEMPLATE_V6);
                    assert_eq!((len - 4) % rl, 0);
                    in_msg += ((len - 4) / rl) as u32;
                }
                off += len;
            }
            seq_expected += in_msg;
            data_records += in_msg;
        }
        assert_eq!(data_records, 101);
        // the v6 record is dropped-flagged
        let last = msgs.last().unwrap();
        assert_eq!(u16::from_be_bytes([last[16], last[17]]), TEMPLATE_V6);
        let fwd_status_at = 16 + 4 + 32 + 8 + 8 + 2 + 2 + 1 + 8 + 8;
        assert_eq!(last[fwd_status_at], 128);
        // The template names the reverse counters as RFC 5103 enterprise elements.
        let t = template(TEMPLATE_V4, false);
        assert_eq!(u16::from_be_bytes([t[2], t[3]]) as usize, 2 + COMMON.len());
        assert_eq!(&t[t.len() - 16..], &[0x80, 2, 0, 8, 0, 0, 0x72, 0x79, 0x80, 1, 0, 8, 0, 0, 0x72, 0x79]);
        // An end record: deltas both ways, end reason.
        let mut end = rec("10.0.0.1", "10.0.0.2", FlowVerdict::Allow);
        end.kind = RecordKind::End;
        end.end_reason = Some("fin");
        end.delta = Delta { packets: [4, 5], bytes: [400, 5000] };
        let mut b = Vec::new();
        encode_record(&end, &mut b);
        assert_eq!(b.len(), record_len(false));
        let at = 8 + 8 + 8 + 2 + 2 + 1;
        assert_eq!(u64::from_be_bytes(b[at..at + 8].try_into().unwrap()), 4);
        assert_eq!(u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()), 400);
        assert_eq!((b[at + 16], b[at + 17], b[at + 18]), (64, 2, 3), "forwarded, deleted, end of flow detected");
        assert_eq!(u64::from_be_bytes(b[at + 19..at + 27].try_into().unwrap()), 5);
        assert_eq!(u64::from_be_bytes(b[at + 27..at + 35].try_into().unwrap()), 5000);
    }
}

/// nfdump's nfcapd on loopback, for tests: started on a free port, stopped
/// cleanly; `stop` returns what it printed (`-E`: every record it decoded).
#[cfg(test)]
pub(crate) mod nfcapd {
    use std::io::Read;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running nfcapd.
    pub(crate) struct Nfcapd {
        child: Child,
        dir: PathBuf,
        /// Where it listens.
        pub(crate) addr: SocketAddr,
    }

    impl Nfcapd {
        pub(crate) fn start(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("bh-nfcapd-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("nfcapd")
                .args(["-E", "-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
                .arg(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("nfcapd (Debian package nfdump; ci/deps.sh installs it)");
            std::thread::sleep(Duration::from_millis(500));
            Nfcapd { child, dir, addr: format!("127.0.0.1:{port}").parse().unwrap() }
        }

        /// Stops it (SIGTERM: its stdout is a pipe, block-buffered) and returns its output.
        pub(crate) fn stop(mut self) -> String {
            std::thread::sleep(Duration::from_millis(1500));
            let st = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
            assert!(st.success());
            let t = Instant::now();
            while self.child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            let mut text = String::new();
            self.child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
            let _ = std::fs::remove_dir_all(&self.dir);
            text
        }
    }

    /// The value of `name` in one decoded record ("" when absent).
    pub(crate) fn field(rec: &str, name: &str) -> String {
        rec.lines().find(|l| l.trim_start().starts_with(name)).and_then(|l| l.split('=').nth(1)).map(|v| v.trim().to_string()).unwrap_or_default()
    }

    /// The decoded records.
    pub(crate) fn records(text: &str) -> Vec<&str> {
        text.split("Flow Record:").skip(1).collect()
    }
}

#[cfg(test)]
mod collector_tests {
    use super::nfcapd::{field, records, Nfcapd};
    use super::*;
    use crate::visibility::record::{Delta, Endpoint};

    /// Records sent by the exporter arrive at nfdump's nfcapd on loopback and
    /// decode there (nfcapd -E prints every record it decodes).
    #[test]
    fn nfcapd_decodes_our_records() {
        let nf = Nfcapd::start("unit");
        let mut x = IpfixExporter::new(nf.addr, 7).unwrap();
        let ep = |ip: &str, port| Endpoint { ip: Some(ip.parse().unwrap()), port, ..Default::default() };
        let r = FlowRecord {
            kind: RecordKind::Start,
            start_ms: 1_764_000_000_000,
            last_ms: 1_764_000_000_100,
            proto: 6,
            src: ep("10.9.8.7", 40123),
            dst: ep("10.9.8.6", 5432),
            verdict: FlowVerdict::Deny,
            policy: "p".into(),
            rule: "r".into(),
            packets: 3,
            bytes: 180,
            reply_packets: 0,
            reply_bytes: 0,
            end_reason: None,
            delta: Delta { packets: [3, 0], bytes: [180, 0] },
        };
        let mut r6 = r.clone();
        r6.src = ep("2001:db8::7", 40124);
        r6.dst = ep("2001:db8::6", 443);
        // The end record of an allowed connection: what came since its last record, both ways.
        let mut end = r.clone();
        end.kind = RecordKind::End;
        end.verdict = FlowVerdict::Allow;
        end.src = ep("10.9.8.5", 40125);
        end.dst = ep("10.9.8.4", 8443);
        end.end_reason = Some("fin");
        end.delta = Delta { packets: [77, 55], bytes: [77_777, 5_555] };
        assert!(x.export(&[r, r6, end]).unwrap() >= 1);
        let text = nf.stop();
        for want in ["10.9.8.7", "10.9.8.6", "40123", "5432", "2001:db8::7", "443"] {
            assert!(text.contains(want), "nfcapd did not decode {want}: {text}");
        }
        // The end record: both directions' deltas (RFC 5103 reverse elements
        // are nfdump's "out" counters) and the end reason.
        let end = records(&text).into_iter().find(|r| field(r, "src addr") == "10.9.8.5").unwrap_or_else(|| panic!("no end record: {text}"));
        assert_eq!(field(end, "in packets"), "77", "{end}");
        assert_eq!(field(end, "in bytes"), "77777", "{end}");
        assert_eq!(field(end, "out packets"), "55", "{end}");
        assert_eq!(field(end, "out bytes"), "5555", "{end}");
        assert!(field(end, "end reason").contains("end of Flow detected"), "{end}");
    }
}
