use super::*;
use crate::key::flags as kf;
use core::net::Ipv4Addr;

const SEC: u64 = 1_000_000_000;

fn tcp(f: u8) -> FlowKey {
    let mut k = FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 40000, 80);
    k.tcp_flags = f;
    k
}

fn rev(k: &FlowKey, f: u8) -> FlowKey {
    let mut r = k.reversed();
    r.in_port = 2;
    r.tcp_flags = f;
    r
}

fn ct() -> Conntrack {
    Conntrack::new(CtConfig { capacity: 1024, ..Default::default() })
}

#[test]
fn tcp_handshake_teardown_both_directions_one_entry() {
    let mut t = ct();
    let syn = tcp(SYN);
    assert_eq!(t.lookup(&syn, 0, 0), None);
    let r = t.create(&syn, 0, 7, 99, 60, 0).unwrap().unwrap();
    assert_eq!(t.get(r).unwrap().state, Some(CtState::SynSent));
    assert_eq!((t.get(r).unwrap().gen, t.get(r).unwrap().cookie), (7, 99));
    let synack = rev(&syn, SYN | ACK);
    let (r2, d) = t.lookup(&synack, 0, SEC).unwrap();
    assert_eq!((r2, d), (r, CtDir::Reply));
    assert_eq!(t.update(r, CtDir::Reply, 0, SYN | ACK, 60, SEC), Some(CtState::SynRecv));
    assert_eq!(t.update(r, CtDir::Orig, 0, ACK, 60, SEC), Some(CtState::Established));
    assert_eq!(t.update(r, CtDir::Reply, 0, ACK | FIN, 60, SEC), Some(CtState::FinWait));
    assert_eq!(t.update(r, CtDir::Orig, 0, ACK | FIN, 60, SEC), Some(CtState::TimeWait));
    let c = t.get(r).unwrap();
    assert_eq!((c.packets, c.bytes), ([3, 2], [180, 120]));
    assert_eq!(c.expires, SEC + CtTimeouts::default().tcp_time_wait);
    assert_eq!(t.len(), 1);
    assert_eq!(t.counters().created, 1);
    assert_eq!(t.counters().invalid, 0);
    // A new SYN on the same tuple reuses the entry.
    assert_eq!(t.update(r, CtDir::Orig, 0, SYN, 60, 2 * SEC), Some(CtState::SynSent));
}

#[test]
fn rst_closes_and_misfits_are_counted_not_fatal() {
    let mut t = ct();
    let r = t.create(&tcp(SYN), 0, 0, 0, 60, 0).unwrap().unwrap();
    assert_eq!(t.update(r, CtDir::Reply, 0, ACK, 60, 1), Some(CtState::SynSent), "ACK before SYN-ACK");
    assert_eq!(t.counters().invalid, 1);
    assert_eq!(t.update(r, CtDir::Reply, 0, RST, 60, 2), Some(CtState::Close));
    assert_eq!(t.get(r).unwrap().expires, 2 + CtTimeouts::default().tcp_close);
    // A reset starts nothing; a mid-stream packet is picked up as established.
    assert_eq!(t.create(&tcp(RST | ACK), 0, 0, 0, 60, 0), Ok(None));
    let mut mid = tcp(ACK);
    mid.sport = 1;
    let m = t.create(&mid, 0, 0, 0, 60, 0).unwrap().unwrap();
    assert_eq!(t.get(m).unwrap().state, Some(CtState::Established));
}

#[test]
fn tcp_state_machine_table() {
    use CtState::*;
    let cases = [
        (SynSent, CtDir::Orig, SYN, SynSent, true),
        (SynSent, CtDir::Reply, SYN | ACK, SynRecv, true),
        (SynSent, CtDir::Reply, SYN, SynRecv, true), // simultaneous open
        (SynRecv, CtDir::Orig, ACK, Established, true),
        (SynRecv, CtDir::Reply, SYN | ACK, SynRecv, true),
        (Established, CtDir::Orig, ACK, Established, true),
        (Established, CtDir::Orig, SYN, Established, false),
        (Established, CtDir::Reply, FIN | ACK, FinWait, true),
        (TimeWait, CtDir::Reply, ACK, TimeWait, true),
        (Close, CtDir::Orig, SYN, SynSent, true),
        (Established, CtDir::Reply, RST, Close, true),
    ];
    for (st, dir, f, want, ok) in cases {
        let mut fin = 0;
        assert_eq!(tcp_next(st, &mut fin, dir, f), (want, ok), "{st:?} {dir:?} {f:#x}");
    }
}

#[test]
fn udp_pseudo_connection_and_expiry() {
    let mut t = ct();
    let mut k = FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 5000, 53);
    k.src_id = 3;
    let r = t.create(&k, 0, 1, 0, 80, 0).unwrap().unwrap();
    assert_eq!(t.get(r).unwrap().state, Some(CtState::New));
    assert_eq!(t.get(r).unwrap().orig.src_id, 3);
    let (_, d) = t.lookup(&rev(&k, 0), 0, SEC).unwrap();
    assert_eq!(d, CtDir::Reply);
    assert_eq!(t.update(r, CtDir::Reply, 0, 0, 80, SEC), Some(CtState::Replied));
    let to = CtTimeouts::default().udp_replied;
    assert_eq!(t.update(r, CtDir::Orig, 0, 0, 80, SEC + to - 1), Some(CtState::Replied));
    // Past the timeout: gone, counted as expired, and the handle is dead.
    let late = 2 * SEC + 2 * to;
    assert_eq!(t.update(r, CtDir::Orig, 0, 0, 80, late), None);
    assert_eq!(t.counters().expired, 1);
    assert_eq!(t.get(r), None);
    assert_eq!(t.lookup(&k, 0, late), None);
    assert!(t.is_empty());
}

#[test]
fn lookup_reclaims_expired_and_sweep_reclaims_the_rest() {
    let mut t = ct();
    let k = FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 1, 2);
    t.create(&k, 0, 0, 0, 1, 0).unwrap().unwrap();
    assert_eq!(t.lookup(&k, 0, 31 * SEC), None);
    assert_eq!(t.counters().expired, 1);
    for p in 0..100u16 {
        let mut k2 = k;
        k2.sport = 100 + p;
        t.create(&k2, 0, 0, 0, 1, 0).unwrap().unwrap();
    }
    assert_eq!(t.len(), 100);
    assert_eq!(t.sweep(SEC, t.capacity()), 0, "nothing expired yet");
    let mut freed = 0;
    while freed < 100 {
        let n = t.sweep(31 * SEC, 64);
        assert!(n <= 64);
        freed += n;
    }
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 101);
}

#[test]
fn icmp_echo_pairs_by_identifier() {
    let mut t = ct();
    let req = FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1, 8, 0);
    let r = t.create(&req, 42, 0, 0, 98, 0).unwrap().unwrap();
    let mut rep = FlowKey::v4(2, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1), 1, 0, 0);
    assert_eq!(t.lookup(&rep, 42, 1), Some((r, CtDir::Reply)));
    assert_eq!(t.lookup(&rep, 43, 1), None, "another echo id is another pseudo-connection");
    assert_eq!(t.update(r, CtDir::Reply, 43, 0, 98, 1), None);
    assert_eq!(t.update(r, CtDir::Reply, 42, 0, 98, 1), Some(CtState::Replied));
    rep.sport = 3; // destination unreachable: not tracked
    assert!(!trackable(&rep));
    assert!(trackable(&req));
    let mut frag = req;
    frag.proto = 17;
    frag.flags |= kf::FRAG_LATER;
    assert!(!trackable(&frag));
}

#[test]
fn full_table_evicts_non_established_first_or_refuses() {
    // Capacity 8 = one bucket: every key lands in it.
    let mut t = Conntrack::new(CtConfig { capacity: 8, ..Default::default() });
    let mut refs = Vec::new();
    for p in 0..8u16 {
        let mut k = tcp(if p == 5 { SYN } else { ACK });
        k.sport = p;
        refs.push(t.create(&k, 0, 0, 0, 1, u64::from(p)).unwrap().unwrap());
    }
    assert_eq!(t.len(), 8);
    let mut k = tcp(ACK);
    k.sport = 100;
    let new = t.create(&k, 0, 0, 0, 1, 10).unwrap().unwrap();
    assert_eq!(t.counters().evicted, 1);
    assert_eq!(t.get(refs[5]), None, "the half-open connection went first");
    assert!(t.get(new).is_some());
    assert_eq!(t.len(), 8);
    let mut strict = Conntrack::new(CtConfig { capacity: 8, evict_live: false, ..Default::default() });
    for p in 0..8u16 {
        let mut k = tcp(ACK);
        k.sport = p;
        strict.create(&k, 0, 0, 0, 1, 0).unwrap().unwrap();
    }
    assert_eq!(strict.create(&k, 0, 0, 0, 1, 0), Err(()));
    assert_eq!(strict.counters().full, 1);
    // Expired entries make room without eviction.
    assert!(strict.create(&k, 0, 0, 0, 1, 7 * 3600 * SEC).unwrap().is_some());
    assert_eq!(strict.counters().expired, 1);
}

#[test]
fn a_full_bucket_overflows_into_the_alternate_before_evicting() {
    // 128 buckets; twelve connections whose primary bucket is the same: the
    // four past its 8 ways go to their alternates, and nothing is evicted.
    let mut t = Conntrack::new(CtConfig { capacity: 1024, ..Default::default() });
    let primary = |k: &FlowKey| flow_hash(k, 0) & 127;
    let want = primary(&udp(0));
    let keys: Vec<FlowKey> = (0..u16::MAX).map(udp).filter(|k| primary(k) == want).take(12).collect();
    assert_eq!(keys.len(), 12);
    let refs: Vec<CtRef> = keys.iter().map(|k| t.create(k, 0, 0, 0, 1, 0).unwrap().unwrap()).collect();
    assert_eq!((t.len(), t.counters().evicted, t.counters().full), (12, 0, 0));
    for (k, r) in keys.iter().zip(&refs) {
        assert_eq!(t.lookup(k, 0, 1), Some((*r, CtDir::Orig)));
        let mut reply = k.reversed();
        reply.in_port = 2;
        assert_eq!(t.lookup(&reply, 0, 1), Some((*r, CtDir::Reply)));
    }
    // Full, both buckets: the least recently seen of the two goes.
    let mut strict = Conntrack::new(CtConfig { capacity: 1024, evict_live: false, ..Default::default() });
    let (p, a) = (want as usize, (want as usize ^ ((flow_hash(&keys[0], 0) >> 16) as usize | 1)) & 127);
    let same: Vec<FlowKey> = (0..u16::MAX)
        .flat_map(|sport| (53..60).map(move |dport| FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, sport, dport)))
        .filter(|k| {
            let h = flow_hash(k, 0);
            h as usize & 127 == p && (h as usize ^ ((h >> 16) as usize | 1)) & 127 == a
        })
        .take(17)
        .collect();
    assert_eq!(same.len(), 17, "keys sharing both buckets");
    for k in &same[..16] {
        assert!(strict.create(k, 0, 0, 0, 1, 0).unwrap().is_some());
    }
    assert_eq!(strict.create(&same[16], 0, 0, 0, 1, 0), Err(()));
}

#[test]
fn stale_handles_are_refused_after_reuse() {
    let mut t = Conntrack::new(CtConfig { capacity: 8, ..Default::default() });
    let a = t.create(&tcp(SYN), 0, 0, 0, 1, 0).unwrap().unwrap();
    assert!(t.remove(a));
    assert!(!t.remove(a));
    let mut k = tcp(SYN);
    k.sport = 9;
    let b = t.create(&k, 0, 0, 0, 1, 0).unwrap().unwrap();
    assert_eq!(t.get(a), None);
    assert_eq!(t.update(a, CtDir::Orig, 0, ACK, 1, 1), None);
    assert!(t.restamp(b, 5, 1));
    assert!(!t.restamp(a, 5, 1));
    assert_eq!(t.iter().count(), 1);
    t.flush();
    assert!(t.is_empty());
    assert_eq!(t.counters().removed, 2);
}

fn udp(sport: u16) -> FlowKey {
    FlowKey::v4(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, sport, 53)
}

fn ends(t: &mut Conntrack) -> Vec<(Option<EndReason>, [u64; 2], [u64; 2])> {
    let mut v = Vec::new();
    t.drain_notes(|n| v.push((n.end, n.conn.packets, n.conn.bytes)));
    v
}

#[test]
fn every_way_out_of_the_table_leaves_an_end_note_with_both_directions() {
    let mut t = ct();
    let to = CtTimeouts::default();
    // FIN teardown, reclaimed by the sweep after TIME_WAIT.
    let syn = tcp(SYN);
    let r = t.create(&syn, 0, 1, 9, 60, 0).unwrap().unwrap();
    t.update(r, CtDir::Reply, 0, SYN | ACK, 60, 1);
    t.update(r, CtDir::Orig, 0, ACK, 54, 2);
    t.update(r, CtDir::Orig, 0, ACK, 1000, 3);
    t.update(r, CtDir::Reply, 0, FIN | ACK, 54, 4);
    t.update(r, CtDir::Orig, 0, FIN | ACK, 54, 5);
    t.update(r, CtDir::Reply, 0, ACK, 54, 6);
    assert!(ends(&mut t).is_empty(), "nothing ends while it lives");
    assert_eq!(t.sweep(6 + to.tcp_time_wait, 1024), 1);
    assert_eq!(ends(&mut t), vec![(Some(EndReason::Fin), [4, 3], [1168, 168])]);
    // RST: reclaimed by a lookup after CLOSE's timeout.
    let mut k = tcp(SYN);
    k.sport = 2;
    let r = t.create(&k, 0, 1, 9, 60, 0).unwrap().unwrap();
    t.update(r, CtDir::Reply, 0, RST, 40, 1);
    assert_eq!(t.lookup(&k, 0, 1 + to.tcp_close), None);
    assert_eq!(ends(&mut t), vec![(Some(EndReason::Rst), [1, 1], [60, 40])]);
    // UDP idle: reclaimed by a late packet's update.
    let r = t.create(&udp(1), 0, 1, 9, 100, 0).unwrap().unwrap();
    assert_eq!(t.update(r, CtDir::Reply, 0, 0, 200, 1), Some(CtState::Replied));
    assert_eq!(t.update(r, CtDir::Orig, 0, 0, 100, 1 + to.udp_replied), None);
    assert_eq!(ends(&mut t), vec![(Some(EndReason::Timeout), [1, 1], [100, 200])]);
    // Removal says why; flush says flush.
    let r = t.create(&udp(2), 0, 1, 9, 100, 0).unwrap().unwrap();
    assert!(t.remove_as(r, EndReason::Cut));
    let r = t.create(&udp(3), 0, 1, 9, 100, 0).unwrap().unwrap();
    assert!(t.remove(r));
    t.create(&udp(4), 0, 1, 9, 100, 0).unwrap().unwrap();
    t.flush();
    let got: Vec<_> = ends(&mut t).into_iter().map(|e| e.0).collect();
    assert_eq!(got, vec![Some(EndReason::Cut), Some(EndReason::Revoked), Some(EndReason::Flush)]);
    assert_eq!(t.counters().notes_lost, 0);
}

#[test]
fn eviction_leaves_an_end_note_and_a_full_buffer_counts_what_it_lost() {
    let mut t = Conntrack::new(CtConfig { capacity: 8, notes: 2, ..Default::default() });
    for p in 0..8 {
        t.create(&udp(p), 0, 0, 0, 1, 0).unwrap().unwrap();
    }
    t.create(&udp(100), 0, 0, 0, 1, 1).unwrap().unwrap();
    assert_eq!(t.notes().len(), 1);
    assert_eq!(t.notes()[0].end, Some(EndReason::Evicted));
    t.flush(); // 8 connections, room for one more note
    assert_eq!(t.notes().len(), 2);
    assert_eq!(t.counters().notes_lost, 7);
    let mut n = 0;
    t.drain_notes(|_| n += 1);
    assert_eq!((n, t.notes().len()), (2, 0));
    // flush_with hands over every one, whatever the buffer's size.
    for p in 0..5 {
        t.create(&udp(p), 0, 0, 0, 1, 0).unwrap().unwrap();
    }
    let mut seen = 0;
    t.flush_with(|c| {
        assert_eq!(c.end, Some(EndReason::Flush));
        seen += 1;
    });
    assert_eq!(seen, 5);
    assert_eq!(t.counters().notes_lost, 7, "nothing more lost");
}

#[test]
fn periodic_notes_report_active_connections_once_per_interval() {
    let mut t = ct();
    let r = t.create(&udp(1), 0, 0, 0, 100, 0).unwrap().unwrap();
    let quiet = t.create(&udp(2), 0, 0, 0, 100, 0).unwrap().unwrap();
    let cap = t.capacity();
    assert_eq!(t.report_step(SEC / 2, SEC, cap), 0, "not yet an interval");
    t.update(r, CtDir::Reply, 0, 0, 300, SEC / 2);
    assert_eq!(t.report_step(SEC, SEC, cap), 1, "only the one with new packets");
    let n = t.notes()[0];
    assert_eq!((n.end, n.conn.packets, n.conn.bytes), (None, [1, 1], [100, 300]));
    assert_eq!((n.conn.reported_packets, n.conn.reported_bytes), ([1, 0], [100, 0]), "what the start record said");
    assert_eq!(t.get(r).unwrap().reported_packets, [1, 1], "now reported up to here");
    assert_eq!(t.report_step(SEC + SEC / 2, SEC, cap), 0, "already reported in this interval");
    t.update(r, CtDir::Orig, 0, 0, 100, 2 * SEC);
    assert_eq!(t.report_step(2 * SEC + 1, SEC, cap), 1);
    assert_eq!(t.get(quiet).unwrap().reported_packets, [1, 0], "never reported: nothing new");
    // A full buffer defers periodic notes (nothing lost).
    let mut small = Conntrack::new(CtConfig { capacity: 64, notes: 1, ..Default::default() });
    for p in 0..3 {
        let r = small.create(&udp(p), 0, 0, 0, 1, 0).unwrap().unwrap();
        small.update(r, CtDir::Orig, 0, 0, 1, 1);
    }
    assert_eq!(small.report_step(SEC, SEC, 64), 1);
    small.drain_notes(|_| {});
    assert_eq!(small.report_step(SEC, SEC, 64), 1);
    small.drain_notes(|_| {});
    assert_eq!(small.report_step(SEC, SEC, 64), 1);
    assert_eq!(small.counters().notes_lost, 0);
}

#[test]
fn flows_only_tables_count_one_direction_without_states() {
    let mut t = Conntrack::new(CtConfig { capacity: 64, flows_only: true, ..Default::default() });
    let syn = tcp(SYN);
    let r = t.create(&syn, 0, 0, 0, 60, 0).unwrap().unwrap();
    assert_eq!(t.get(r).unwrap().state, Some(CtState::New));
    assert_eq!(t.lookup(&rev(&syn, SYN | ACK), 0, 1), None, "the other way is another flow");
    assert_eq!(t.lookup(&tcp(ACK), 0, 1).map(|x| x.1), Some(CtDir::Orig));
    assert_eq!(t.update(r, CtDir::Orig, 0, RST, 60, 2), Some(CtState::New), "no TCP states");
    assert_eq!(t.create(&tcp(RST), 0, 0, 0, 60, 0).map(|r| r.is_some()), Ok(true), "a reset counts too");
    assert_eq!(t.get(r).unwrap().expires, 2 + CtTimeouts::default().other);
    assert_eq!(t.counters().invalid, 0);
}

#[test]
fn repeat_accounts_a_train_only_where_the_state_holds() {
    let mut t = ct();
    let r = t.create(&tcp(SYN), 0, 0, 0, 60, 0).unwrap().unwrap();
    assert!(!t.repeat(r, CtDir::Orig, SYN, 3, 180), "SYN_SENT: each SYN goes through the state machine");
    t.update(r, CtDir::Reply, 0, SYN | ACK, 60, 1);
    t.update(r, CtDir::Orig, 0, ACK, 60, 2);
    for flags in [SYN, FIN | ACK, RST] {
        assert!(!t.repeat(r, CtDir::Orig, flags, 3, 180), "established, flags {flags:#x}");
    }
    assert_eq!(t.get(r).unwrap().packets, [2, 1], "refused: nothing counted");
    // Established ACKs: as many updates.
    let mut u = ct();
    let s = u.create(&tcp(SYN), 0, 0, 0, 60, 0).unwrap().unwrap();
    u.update(s, CtDir::Reply, 0, SYN | ACK, 60, 1);
    u.update(s, CtDir::Orig, 0, ACK, 60, 2);
    t.update(r, CtDir::Orig, 0, ACK, 100, 3);
    assert!(t.repeat(r, CtDir::Orig, ACK, 2, 300));
    for len in [100, 120, 180] {
        u.update(s, CtDir::Orig, 0, ACK, len, 3);
    }
    let (a, b) = (t.get(r).unwrap(), u.get(s).unwrap());
    assert_eq!((a.state, a.packets, a.bytes, a.last_seen, a.expires), (b.state, b.packets, b.bytes, b.last_seen, b.expires));
    // A pseudo-connection, once updated, in either direction.
    let q = t.create(&udp(53), 0, 0, 0, 60, 0).unwrap().unwrap();
    assert_eq!(t.update(q, CtDir::Reply, 0, 0, 60, 1), Some(CtState::Replied));
    assert!(t.repeat(q, CtDir::Reply, 0, 4, 240));
    assert_eq!((t.get(q).unwrap().packets, t.get(q).unwrap().state), ([1, 5], Some(CtState::Replied)));
    // A stale handle: nothing.
    assert!(t.remove(q));
    assert!(!t.repeat(q, CtDir::Orig, 0, 1, 60));
}
