use super::*;
use crate::conntrack::{CtConfig, CtTimeouts};
use crate::key::v4_mapped;
use crate::parse::build::{arp_frame, Spec, L4};
use crate::parse::l4::tcp_flags::{ACK, RST, SYN};
use crate::parse::Malformed;
use crate::rule::{Action, LinearClassifier, Match, PortRange, Prefix, Rule, RuleId};
use crate::tables::Tier;

const A: u32 = 0x0a00_0001;
const B: u32 = 0x0a00_0002;
const C: u32 = 0x0a00_0003;
const SEC: u64 = 1_000_000_000;

struct World {
    tables: PolicyTables<LinearClassifier>,
    ids: PrefixMap<u32>,
    routes: PrefixMap<u16>,
    gen: u64,
}

impl World {
    /// A (id 10, port 1) may open TCP/80, UDP/53 and ping to B (id 20, port 2);
    /// egress defaults to deny, ingress to allow. C (id 30, port 3) has no rule.
    fn new() -> Self {
        let mut app = Tier::<LinearClassifier> { name: "app".into(), ..Default::default() };
        let a_to_b = Match { src_id: Some(10), dst_id: Some(20), ..Match::ANY };
        let tcp80 = Match { proto: Some(6), dport: PortRange::exact(80), ..a_to_b };
        let udp53 = Match { proto: Some(17), dport: PortRange::exact(53), ..a_to_b };
        let icmp = Match { proto: Some(1), ..a_to_b };
        for (id, m, cookie) in [(1, tcp80, 101), (2, udp53, 102), (3, icmp, 103)] {
            app.egress.insert(Rule { id: RuleId(id), priority: 10, m, action: Action::Allow, cookie });
        }
        let tables = PolicyTables { tiers: vec![app], default_egress: Action::Deny, default_ingress: Action::Allow };
        let mut ids = PrefixMap::new();
        let mut routes = PrefixMap::new();
        for (ip, id, port) in [(A, 10, 1), (B, 20, 2), (C, 30, 3)] {
            ids.insert(Prefix::v4(ip, 32), id);
            routes.insert(Prefix::v4(ip, 32), port);
        }
        World { tables, ids, routes, gen: 1 }
    }
    fn policy(&self) -> Policy<'_, LinearClassifier> {
        Policy { gen: self.gen, tables: &self.tables, identities: &self.ids, routes: &self.routes, cut_before: 0 }
    }
}

fn tcp(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Spec::new(v4_mapped(src), v4_mapped(dst), L4::Tcp { sport, dport, flags }).build()
}

fn one(p: &mut Pipeline, w: &World, frame: &[u8], in_port: u16, now: u64) -> PacketVerdict {
    let mut out = [PacketVerdict::default(); 1];
    p.process(&w.policy(), &[RxPacket { frame, rss: None, in_port }], now, &mut out);
    out[0]
}

fn pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig::default())
}

#[test]
fn allowed_flow_is_decided_once_then_hits_the_cache() {
    let w = World::new();
    let mut p = pipeline();
    let v = one(&mut p, &w, &tcp(A, B, 40000, 80, SYN), 1, 0);
    assert_eq!(v, PacketVerdict { fate: Fate::Forward(2), flags: vflags::LOG, cookie: 101 });
    let s = *p.stats();
    assert_eq!((s.emc_miss, s.cls_lookup, s.ct_created, s.emc_insert), (1, 1, 1, 1));
    let v = one(&mut p, &w, &tcp(A, B, 40000, 80, ACK), 1, 1);
    assert_eq!(v, PacketVerdict { fate: Fate::Forward(2), flags: 0, cookie: 101 });
    assert_eq!((p.stats().emc_hit, p.stats().cls_lookup), (1, 1));
    // The hit path still drives the connection's state machine.
    let (_, c) = p.conntrack().iter().next().unwrap();
    assert_eq!(c.packets, [2, 0]);
}

#[test]
fn replies_of_an_allowed_connection_are_allowed_and_nothing_else() {
    let w = World::new();
    let mut p = pipeline();
    // B may not open anything to A (egress default deny)...
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 40000, ACK), 2, 0).fate, Fate::Drop(DropReason::PolicyEgress));
    // ... but once A opened a connection, B's replies pass, though a drop
    // for exactly that packet had been cached a moment before.
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, SYN), 1, 1).fate, Fate::Forward(2));
    let v = one(&mut p, &w, &tcp(B, A, 80, 40000, SYN | ACK), 2, 2);
    assert_eq!(v, PacketVerdict { fate: Fate::Forward(1), flags: 0, cookie: 101 });
    assert_eq!(p.stats().ct_hit, 1);
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 40000, ACK), 2, 3).fate, Fate::Forward(1));
    assert_eq!(p.stats().emc_hit, 1, "the reply direction is cached too");
    // Another port from B is still a new, denied connection.
    assert_eq!(one(&mut p, &w, &tcp(B, A, 81, 40000, SYN), 2, 4).fate, Fate::Drop(DropReason::PolicyEgress));
    // Port 22 from A is not allowed either.
    let v = one(&mut p, &w, &tcp(A, B, 40001, 22, SYN), 1, 5);
    assert_eq!((v.fate, v.flags), (Fate::Drop(DropReason::PolicyEgress), vflags::LOG));
    assert_eq!(p.stats().drop_policy_egress, 3);
}

#[test]
fn stateless_pipeline_decides_by_the_rules_alone() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { stateful: false, ..Default::default() });
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, SYN), 1, 0).fate, Fate::Forward(2));
    // No connection: B's reply is decided by B's egress rules (default deny).
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 40000, SYN | ACK), 2, 1).fate, Fate::Drop(DropReason::PolicyEgress));
    let v = one(&mut p, &w, &tcp(A, B, 40000, 80, ACK), 1, 2);
    assert_eq!(v, PacketVerdict { fate: Fate::Forward(2), flags: 0, cookie: 101 });
    let s = *p.stats();
    assert_eq!((s.ct_created, s.ct_hit, s.ct_miss, s.emc_hit, s.cls_lookup), (0, 0, 0, 1, 2));
    assert!(p.conntrack().is_empty());
}

#[test]
fn policy_change_reevaluates_connections_unless_kept() {
    for keep in [false, true] {
        let mut w = World::new();
        let mut p = Pipeline::new(PipelineConfig {
            ct: CtConfig { keep_established: keep, ..Default::default() },
            ..Default::default()
        });
        one(&mut p, &w, &tcp(A, B, 40000, 80, SYN), 1, 0);
        one(&mut p, &w, &tcp(B, A, 80, 40000, SYN | ACK), 2, 1);
        one(&mut p, &w, &tcp(A, B, 40000, 80, ACK), 1, 2);
        // Publish a generation without the TCP/80 rule.
        w.tables.tiers[0].egress.remove(RuleId(1));
        w.gen = 2;
        let fwd = one(&mut p, &w, &tcp(A, B, 40000, 80, ACK), 1, 3).fate;
        let reply = one(&mut p, &w, &tcp(B, A, 80, 40000, ACK), 2, 4).fate;
        if keep {
            assert_eq!((fwd, reply), (Fate::Forward(2), Fate::Forward(1)));
            assert_eq!((p.stats().ct_revalidated, p.stats().ct_revoked), (1, 0));
        } else {
            assert_eq!((fwd, reply), (Fate::Drop(DropReason::PolicyEgress), Fate::Drop(DropReason::PolicyEgress)));
            assert_eq!((p.stats().ct_revalidated, p.stats().ct_revoked), (0, 1));
            assert!(p.conntrack().is_empty());
        }
        // A half-open connection is re-evaluated even when established ones are kept.
        one(&mut p, &w, &tcp(A, B, 40002, 53, SYN), 1, 5);
    }
}

#[test]
fn identity_move_under_a_new_generation_changes_the_verdict() {
    let mut w = World::new();
    let mut p = pipeline();
    let udp = Spec::new(v4_mapped(A), v4_mapped(C), L4::Udp { sport: 5000, dport: 53 }).build();
    assert_eq!(one(&mut p, &w, &udp, 1, 0).fate, Fate::Drop(DropReason::PolicyEgress));
    // C takes identity 20 (a label change): allowed after the new generation.
    w.ids.insert(Prefix::v4(C, 32), 20);
    assert_eq!(one(&mut p, &w, &udp, 1, 1).fate, Fate::Drop(DropReason::PolicyEgress), "same gen: cached");
    w.gen = 2;
    assert_eq!(one(&mut p, &w, &udp, 1, 2).fate, Fate::Forward(3));
    let back = Spec::new(v4_mapped(C), v4_mapped(A), L4::Udp { sport: 53, dport: 5000 }).build();
    assert_eq!(one(&mut p, &w, &back, 3, 3).fate, Fate::Forward(1));
    assert_eq!(p.conntrack().iter().next().unwrap().1.state, Some(crate::conntrack::CtState::Replied));
}

#[test]
fn icmp_echo_reply_needs_the_matching_request() {
    let w = World::new();
    let mut p = pipeline();
    let ping = |src, dst, ty, id| Spec::new(v4_mapped(src), v4_mapped(dst), L4::Icmp { ty, code: 0, id }).build();
    assert_eq!(one(&mut p, &w, &ping(A, B, 8, 7), 1, 0).fate, Fate::Forward(2));
    assert_eq!(one(&mut p, &w, &ping(B, A, 0, 7), 2, 1).fate, Fate::Forward(1));
    assert_eq!(one(&mut p, &w, &ping(B, A, 0, 8), 2, 2).fate, Fate::Drop(DropReason::PolicyEgress));
    // A second request id after the first was cached: its own pseudo-connection.
    assert_eq!(one(&mut p, &w, &ping(A, B, 8, 9), 1, 3).fate, Fate::Forward(2));
    assert_eq!(one(&mut p, &w, &ping(B, A, 0, 9), 2, 4).fate, Fate::Forward(1));
    assert_eq!(p.conntrack().len(), 2);
}

#[test]
fn expired_and_reset_connections() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig {
        ct: CtConfig { timeouts: CtTimeouts::with_hz(SEC), ..Default::default() },
        ..Default::default()
    });
    let udp = Spec::new(v4_mapped(A), v4_mapped(B), L4::Udp { sport: 5000, dport: 53 }).build();
    let back = Spec::new(v4_mapped(B), v4_mapped(A), L4::Udp { sport: 53, dport: 5000 }).build();
    one(&mut p, &w, &udp, 1, 0);
    assert_eq!(one(&mut p, &w, &back, 2, SEC).fate, Fate::Forward(1));
    // 181 s of silence: the reply direction is no longer allowed.
    assert_eq!(one(&mut p, &w, &back, 2, 182 * SEC).fate, Fate::Drop(DropReason::PolicyEgress));
    assert_eq!(p.stats().ct_stale, 1);
    assert_eq!(p.conntrack().counters().expired, 1);
    // TCP: RST closes; 10 s after the last packet the reply path ends.
    one(&mut p, &w, &tcp(A, B, 1, 80, SYN), 1, 200 * SEC);
    one(&mut p, &w, &tcp(B, A, 80, 1, RST | ACK), 2, 200 * SEC);
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 1, ACK), 2, 205 * SEC).fate, Fate::Forward(1));
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 1, ACK), 2, 216 * SEC).fate, Fate::Drop(DropReason::PolicyEgress));
}

#[test]
fn non_policy_fates_and_counters() {
    let w = World::new();
    let mut p = pipeline();
    let arp = arp_frame(1, [2, 0, 0, 0, 0, 1], A, B);
    let mut lldp = tcp(A, B, 1, 80, SYN);
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    let unrouted = tcp(A, 0x0b00_0001, 1, 80, SYN);
    let runt = [0u8; 10];
    let frames: [&[u8]; 4] = [&arp, &lldp, &unrouted, &runt];
    let pkts: Vec<RxPacket<'_>> = frames.iter().map(|f| RxPacket { frame: f, rss: None, in_port: 1 }).collect();
    let mut out = [PacketVerdict::default(); 4];
    p.process(&w.policy(), &pkts, 0, &mut out);
    let fates: Vec<Fate> = out.iter().map(|v| v.fate).collect();
    assert_eq!(
        fates,
        [
            Fate::Arp,
            Fate::Drop(DropReason::NonIp),
            Fate::Drop(DropReason::NoRoute),
            Fate::Drop(DropReason::Malformed(Malformed::Runt))
        ]
    );
    let s = p.stats();
    assert_eq!((s.rx_packets, s.arp, s.drop_non_ip, s.drop_no_route, s.drop_runt), (4, 1, 1, 1, 1));
    assert_eq!(s.dropped(), 3);
}

#[test]
fn long_bursts_are_chunked_and_sampling_counts() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { sample_inv: 10, ..Default::default() });
    let frames: Vec<Vec<u8>> = (0..100u16).map(|i| tcp(A, B, 1000 + i % 7, 80, ACK)).collect();
    let pkts: Vec<RxPacket<'_>> = frames.iter().map(|f| RxPacket { frame: f, rss: Some(0x1234), in_port: 1 }).collect();
    let mut out = vec![PacketVerdict::default(); 100];
    p.process(&w.policy(), &pkts, 0, &mut out);
    assert!(out.iter().all(|v| v.fate == Fate::Forward(2)));
    let s = p.stats();
    assert_eq!((s.forwarded, s.sampled, s.ct_created), (100, 10, 7));
    assert_eq!(out.iter().filter(|v| v.flags & vflags::SAMPLE != 0).count(), 10);
    assert_eq!(s.emc_hit + s.emc_miss, 100);
    // The first burst is all misses (looked up before any insert): its
    // 7 new flows are decided once each, the other 25 packets find their
    // connection. Every later burst hits.
    assert_eq!((s.emc_miss, s.cls_lookup, s.ct_hit), (32, 7, 25));
}

#[test]
fn conntrack_full_drops_new_connections_when_eviction_is_off() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig {
        ct: CtConfig { capacity: 8, evict_live: false, ..Default::default() },
        ..Default::default()
    });
    let fates: Vec<Fate> = (0..9u16).map(|i| one(&mut p, &w, &tcp(A, B, 1000 + i, 80, SYN), 1, 0).fate).collect();
    assert!(fates[..8].iter().all(|f| *f == Fate::Forward(2)));
    assert_eq!(fates[8], Fate::Drop(DropReason::CtFull));
    assert_eq!(p.stats().drop_ct_full, 1);
    assert_eq!(p.conntrack().counters().full, 1);
}

#[test]
fn a_reply_in_the_same_burst_as_its_connection_is_not_dropped_from_the_cache() {
    let w = World::new();
    let mut p = pipeline();
    let reply = tcp(B, A, 80, 40000, SYN | ACK);
    assert_eq!(one(&mut p, &w, &reply, 2, 0).fate, Fate::Drop(DropReason::PolicyEgress));
    let syn = tcp(A, B, 40000, 80, SYN);
    let pkts = [RxPacket { frame: &syn, rss: None, in_port: 1 }, RxPacket { frame: &reply, rss: None, in_port: 2 }];
    let mut out = [PacketVerdict::default(); 2];
    p.process(&w.policy(), &pkts, 1, &mut out);
    assert_eq!((out[0].fate, out[1].fate), (Fate::Forward(2), Fate::Forward(1)));
}

#[test]
fn symmetric_rss_hash_indexes_the_cache() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { symmetric_rss: true, ..Default::default() });
    let run = |p: &mut Pipeline, f: &[u8], in_port, now| {
        let mut out = [PacketVerdict::default(); 1];
        p.process(&w.policy(), &[RxPacket { frame: f, rss: Some(0x5a5a_0007), in_port }], now, &mut out);
        out[0].fate
    };
    // The NIC's (symmetric) hash is the same both ways: the reply-drop purge finds it.
    assert_eq!(run(&mut p, &tcp(B, A, 80, 40000, ACK), 2, 0), Fate::Drop(DropReason::PolicyEgress));
    assert_eq!(run(&mut p, &tcp(A, B, 40000, 80, SYN), 1, 1), Fate::Forward(2));
    assert_eq!(run(&mut p, &tcp(B, A, 80, 40000, SYN | ACK), 2, 2), Fate::Forward(1));
    assert_eq!(run(&mut p, &tcp(A, B, 40000, 80, ACK), 1, 3), Fate::Forward(2));
    assert_eq!(p.stats().emc_hit, 1);
}

fn udp(src: u32, dst: u32, sport: u16, dport: u16) -> Vec<u8> {
    Spec::new(v4_mapped(src), v4_mapped(dst), L4::Udp { sport, dport }).build()
}

/// A note as (denied, end reason, packets, bytes).
type NoteSeen = (bool, Option<EndReason>, [u64; 2], [u64; 2]);

/// Every pending note.
fn notes(p: &mut Pipeline) -> Vec<NoteSeen> {
    let mut v = Vec::new();
    p.drain_notes(|n, denied| v.push((denied, n.end, n.conn.packets, n.conn.bytes)));
    v
}

#[test]
fn denied_flows_are_counted_on_the_cache_hit_path_and_end_when_idle() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { denied_idle: 5 * SEC, ..Default::default() });
    let f = udp(A, C, 5000, 9999); // A -> C: egress default deny
    let v = one(&mut p, &w, &f, 1, 0);
    assert_eq!((v.fate, v.flags), (Fate::Drop(DropReason::PolicyEgress), vflags::LOG));
    for t in 1..5 {
        let v = one(&mut p, &w, &f, 1, t * SEC);
        assert_eq!((v.fate, v.flags), (Fate::Drop(DropReason::PolicyEgress), 0), "one start record per denied flow");
    }
    let s = *p.stats();
    assert_eq!((s.emc_hit, s.cls_lookup, s.denied_flows), (4, 1, 1), "counted on the hit path, decided once");
    let len = f.len() as u64;
    let (_, c) = p.denied().iter().next().unwrap();
    assert_eq!((c.packets, c.bytes), ([5, 0], [5 * len, 0]));
    assert!(notes(&mut p).is_empty());
    // Idle past its timeout: the sweep ends it with its counts.
    p.maintain(10 * SEC);
    for _ in 0..p.denied().capacity() {
        p.maintain(10 * SEC);
    }
    assert_eq!(notes(&mut p), vec![(true, Some(EndReason::Timeout), [5, 0], [5 * len, 0])]);
    // The cached drop now names a flow that ended: decided again, a new start.
    let v = one(&mut p, &w, &f, 1, 11 * SEC);
    assert_eq!((v.fate, v.flags), (Fate::Drop(DropReason::PolicyEgress), vflags::LOG));
    // Without a denied-flow table every slow-path decision logs, as before.
    let mut p = Pipeline::new(PipelineConfig { denied_flows: 0, emc: crate::emc::EmcConfig { entries: 64, insert_inv_prob: u32::MAX }, ..Default::default() });
    for t in 0..3 {
        assert_eq!(one(&mut p, &w, &f, 1, t).flags, vflags::LOG);
    }
    assert!(p.denied().is_empty());
}

#[test]
fn revoked_and_cut_connections_end_with_their_reason_and_counts() {
    for cut in [false, true] {
        let mut w = World::new();
        let mut p = pipeline();
        let (syn, synack, ack) = (tcp(A, B, 40000, 80, SYN), tcp(B, A, 80, 40000, SYN | ACK), tcp(A, B, 40000, 80, ACK));
        one(&mut p, &w, &syn, 1, 0);
        one(&mut p, &w, &synack, 2, 1);
        one(&mut p, &w, &ack, 1, 2);
        assert!(notes(&mut p).is_empty());
        w.tables.tiers[0].egress.remove(RuleId(1));
        w.gen = 2;
        let mut pol = w.policy();
        if cut {
            pol.cut_before = 2;
        }
        let mut out = [PacketVerdict::default(); 1];
        p.process(&pol, &[RxPacket { frame: &ack, rss: None, in_port: 1 }], 3, &mut out);
        assert_eq!(out[0].fate, Fate::Drop(DropReason::PolicyEgress));
        let why = if cut { EndReason::Cut } else { EndReason::Revoked };
        let (s, a) = (syn.len() as u64, synack.len() as u64);
        let got = notes(&mut p);
        assert_eq!(got[0], (false, Some(why), [2, 1], [s + ack.len() as u64, a]), "{got:?}");
    }
}

#[test]
fn periodic_notes_come_from_maintain_without_traffic() {
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { report_interval: SEC, ..Default::default() });
    let q = udp(A, B, 5353, 53);
    one(&mut p, &w, &q, 1, 0);
    one(&mut p, &w, &udp(B, A, 53, 5353), 2, SEC / 2);
    for _ in 0..p.conntrack().capacity() {
        p.maintain(2 * SEC);
    }
    let l = q.len() as u64;
    assert_eq!(notes(&mut p), vec![(false, None, [1, 1], [l, l])]);
    // Its end, after the UDP timeout, carries the same totals.
    let end = 2 * SEC + CtTimeouts::default().udp_replied;
    for _ in 0..p.conntrack().capacity() {
        p.maintain(end);
    }
    assert_eq!(notes(&mut p), vec![(false, Some(EndReason::Timeout), [1, 1], [l, l])]);
}

#[test]
fn more_denied_flows_than_their_table_holds_are_decided_and_logged_once() {
    // Twelve denied flows replayed against an 8-slot denied-flow table: the
    // ones that find no slot stay denied from the cache, uncounted, instead of
    // evicting each other into the slow path (and a new start record) forever.
    let w = World::new();
    let mut p = Pipeline::new(PipelineConfig { denied_flows: 8, ..Default::default() });
    let flows: Vec<Vec<u8>> = (0..12).map(|i| udp(A, C, 5000 + i, 9999)).collect();
    let mut logged = 0;
    for round in 0..5u64 {
        for (i, f) in flows.iter().enumerate() {
            let v = one(&mut p, &w, f, 1, round * SEC + i as u64);
            assert_eq!(v.fate, Fate::Drop(DropReason::PolicyEgress));
            logged += u32::from(v.flags & vflags::LOG != 0);
        }
    }
    let s = *p.stats();
    assert_eq!((logged, s.cls_lookup), (12, 12), "each flow decided and logged once");
    assert_eq!(s.emc_hit, 48);
    assert_eq!(p.denied().len(), 8, "the table keeps the flows it took");
    assert_eq!((s.denied_flows, s.denied_uncounted), (8, 4));
}

#[test]
fn sweeps_are_paced_by_the_sweep_period() {
    // 64 slots, 16 per sweep: four sweeps walk the table. With a period of
    // 400 a sweep is due every 100; 30 UDP connections expire at 1000.
    let w = World::new();
    let timeouts = CtTimeouts { udp_new: 1000, ..CtTimeouts::with_hz(SEC) };
    let cfg = |period| PipelineConfig {
        ct: CtConfig { capacity: 64, timeouts, ..Default::default() },
        sweep_period: period,
        denied_flows: 0,
        ..Default::default()
    };
    let (mut paced, mut eager) = (Pipeline::new(cfg(400)), Pipeline::new(cfg(0)));
    for p in [&mut paced, &mut eager] {
        for i in 0..30 {
            one(p, &w, &udp(A, B, 6000 + i, 53), 1, 0);
        }
    }
    let live = paced.conntrack().len();
    assert!(live > 16, "{live} connections");
    assert_eq!(eager.conntrack().len(), live);
    // A hundred calls at the same instant: one sweep when paced, a walk of
    // the whole table (many times over) when not.
    for _ in 0..100 {
        paced.maintain(1000);
        eager.maintain(1000);
    }
    assert_eq!(eager.conntrack().len(), 0);
    let left = paced.conntrack().len();
    assert!(left >= live - 16 && left > 0, "one sweep of 16 slots: {left} of {live} left");
    // Each later due time sweeps the next 16 slots: all gone one walk later.
    for k in 1..=3 {
        let before = paced.conntrack().len();
        paced.maintain(1000 + 100 * k - 1);
        assert_eq!(paced.conntrack().len(), before, "nothing is due before 1000 + {}", 100 * k);
        paced.maintain(1000 + 100 * k);
    }
    assert_eq!(paced.conntrack().len(), 0, "one walk after the timeout every connection is gone");
    assert_eq!(paced.conntrack().counters().expired, live as u64);
}

#[test]
fn bursts_with_runs_of_one_connection_count_like_packet_by_packet() {
    runs_count_like_packet_by_packet(true);
}

#[test]
fn stateless_bursts_with_runs_count_like_packet_by_packet() {
    runs_count_like_packet_by_packet(false);
}

fn runs_count_like_packet_by_packet(stateful: bool) {
    // Three TCP connections through their lives (stray RST, handshake, data
    // both ways, FIN or RST, then again on the same ports), two UDP flows and
    // denied traffic, interleaved in runs of 1-9 packets. Pipeline `bursty`
    // takes 32 at a time, `single` one at a time at the same clock: verdicts
    // and every connection's state, times and counters agree. Repeats of a
    // frame differ in bytes the parser ignores.
    use crate::parse::l4::tcp_flags::FIN;
    let w = World::new();
    // A connection's script: (frame, in_port) per phase; the data phase repeats.
    let script = |s: u16| -> Vec<(Vec<u8>, u16)> {
        vec![
            (tcp(A, B, s, 80, SYN), 1),
            (tcp(B, A, 80, s, SYN | ACK), 2),
            (tcp(A, B, s, 80, ACK), 1),
            (tcp(B, A, 80, s, ACK), 2),
            (tcp(A, B, s, 80, FIN | ACK), 1),
            (tcp(B, A, 80, s, FIN | ACK), 2),
            (tcp(A, B, s, 80, ACK), 1),
        ]
    };
    let mut scripts: Vec<Vec<(Vec<u8>, u16)>> = [40000, 40001, 40002].into_iter().map(script).collect();
    for s in [5000, 5001] {
        scripts.push(vec![(udp(A, B, s, 53), 1), (udp(B, A, 53, s), 2)]);
    }
    scripts.push(vec![(tcp(C, B, 1234, 80, SYN), 3)]);
    let rst: Vec<(Vec<u8>, u16)> = [40000, 40001, 40002].into_iter().map(|s| (tcp(A, B, s, 80, RST), 1)).collect();
    let mut rng = crate::classbench::Rng::new(0x9e37_79b9);
    let mut next = move || rng.next_u64() as u32;
    let mut phase = vec![0usize; scripts.len()];
    let mut seq: Vec<(Vec<u8>, u16)> = Vec::new();
    while seq.len() < 4000 {
        let c = next() as usize % scripts.len();
        let len = scripts[c].len();
        let (f, port) = if c < 3 && phase[c] == 2 && next() % 12 == 0 {
            phase[c] = 0; // reset mid-connection; the next run opens it again
            (&rst[c].0, rst[c].1)
        } else if c < 3 && phase[c] == 0 && next() % 6 == 0 {
            // A stray RST before the handshake: forwarded, starts nothing.
            (&rst[c].0, rst[c].1)
        } else if c < 3 && phase[c] == 3 && next() % 10 == 0 {
            // A SYN again once established: invalid, counted per packet
            // (in trains too).
            (&scripts[c][0].0, scripts[c][0].1)
        } else if c < 3 && phase[c] == 1 && next() % 4 == 0 {
            // An ACK before the SYN-ACK: invalid, counted per packet.
            (&scripts[c][2].0, scripts[c][2].1)
        } else {
            let p = phase[c];
            // TCP: handshake in order, then data both ways for a while, then
            // the FIN exchange and again; UDP: the request first, then both ways.
            phase[c] = match (c < 3, p) {
                (true, 2 | 3) if next() % 6 != 0 => 2 + next() as usize % 2,
                (true, 2 | 3) => 4, // FIN after data of either side
                (true, _) => (p + 1) % len,
                (false, _) => next() as usize % len,
            };
            (&scripts[c][p].0, scripts[c][p].1)
        };
        for r in 0..1 + next() % 9 {
            // Each copy with its own IPv4 ID, TTL and checksum: a train to
            // the parser, which reuses the first one's key.
            let mut g = f.clone();
            g[18..20].copy_from_slice(&(r as u16).to_be_bytes());
            g[22] = 64 - r as u8;
            g[24] ^= r as u8;
            seq.push((g, port));
        }
    }
    let cfg = PipelineConfig { stateful, ..Default::default() };
    let (mut bursty, mut single) = (Pipeline::new(cfg), Pipeline::new(cfg));
    let mut fates = (Vec::new(), Vec::new());
    let mut followed = 0;
    for (c, chunk) in seq.chunks(32).enumerate() {
        let now = c as u64 * SEC / 10;
        let pkts: Vec<RxPacket<'_>> = chunk.iter().map(|(frame, in_port)| RxPacket { frame, rss: None, in_port: *in_port }).collect();
        let mut out = vec![PacketVerdict::default(); pkts.len()];
        bursty.process(&w.policy(), &pkts, now, &mut out);
        // What `followers` promises: the lane before's verdict without LOG,
        // and its fast-path fields (IPv4 TCP/UDP, same 5-tuple, same in_port).
        let mut f = bursty.followers();
        followed += f.count_ones();
        while f != 0 {
            let i = f.trailing_zeros() as usize;
            f &= f - 1;
            let (v, u) = (out[i], out[i - 1]);
            assert!(v.fate == u.fate && v.cookie == u.cookie && v.flags & vflags::LOG == 0, "lane {i}: {v:?} after {u:?}");
            let (k, l) = (crate::parse::parse(pkts[i].frame, 0, None).unwrap().key, crate::parse::parse(pkts[i - 1].frame, 0, None).unwrap().key);
            assert!(matches!(k.proto, 6 | 17) && crate::emc::same_flow(&k, &l) && pkts[i].in_port == pkts[i - 1].in_port);
        }
        fates.0.extend(out.iter().map(|v| v.fate));
        for (frame, in_port) in chunk {
            fates.1.push(one(&mut single, &w, frame, *in_port, now).fate);
        }
    }
    assert_eq!(fates.0, fates.1);
    assert!(followed > 200, "trains of hits are reported as followers ({followed})");
    assert!(fates.0.iter().any(|f| matches!(f, Fate::Forward(_))) && fates.0.contains(&Fate::Drop(DropReason::PolicyEgress)));
    let conns = |t: &Conntrack| {
        let mut v: Vec<_> = t.iter().map(|(_, c)| (c.orig, c.state, c.last_seen, c.expires, c.packets, c.bytes)).collect();
        v.sort_by_key(|c| (c.0.sport, c.0.dport, c.0.proto));
        v
    };
    let (a, b) = (conns(bursty.conntrack()), conns(single.conntrack()));
    assert!(a.len() >= if stateful { 4 } else { 0 }, "{a:?}");
    assert_eq!(a, b);
    // The denied flows (C -> B; stateless, the replies too), counted in
    // trains too.
    let (a, b) = (conns(bursty.denied()), conns(single.denied()));
    assert!(a.len() == if stateful { 1 } else { 6 } && a.iter().all(|c| c.4[0] > 100), "{a:?}");
    assert_eq!(a, b);
    let (sa, sb) = (bursty.stats(), single.stats());
    assert_eq!((sa.forwarded, sa.ct_created, sa.ct_stale), (sb.forwarded, sb.ct_created, sb.ct_stale));
    assert_eq!((sa.drop_policy_egress, sa.rx_packets, sa.rx_bytes), (sb.drop_policy_egress, sb.rx_packets, sb.rx_bytes));
    let (ca, cb) = (bursty.conntrack().counters(), single.conntrack().counters());
    assert_eq!(ca.invalid > 0, stateful);
    assert_eq!(ca.invalid, cb.invalid);
}

#[test]
fn a_reset_before_the_connection_does_not_keep_it_untracked() {
    // A stray RST is allowed but starts no connection; the SYN after it on
    // the same ports must (its replies pass), one packet at a time too.
    let w = World::new();
    let mut p = pipeline();
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, RST), 1, 0).fate, Fate::Forward(2));
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, RST), 1, 1).fate, Fate::Forward(2));
    assert_eq!(p.stats().ct_created, 0);
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, SYN), 1, 2).fate, Fate::Forward(2));
    assert_eq!(p.stats().ct_created, 1, "the SYN opened a connection");
    assert_eq!(one(&mut p, &w, &tcp(B, A, 80, 40000, SYN | ACK), 2, 3).fate, Fate::Forward(1), "its reply passes");
    assert_eq!(one(&mut p, &w, &tcp(A, B, 40000, 80, ACK), 1, 4).fate, Fate::Forward(2));
    assert_eq!(p.stats().emc_hit, 1, "the connection's packets are cached again");
}
