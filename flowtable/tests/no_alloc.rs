//! The data path does not allocate: a counting global allocator watches
//! 10,000 bursts of 32 packets through `Pipeline::process` after a warm-up,
//! over a traffic mix that takes every path (cache hits and misses, new
//! connections and their replies, policy drops, ICMP echo, IPv6, ARP,
//! non-IP, malformed, no route, generation changes, conntrack eviction),
//! with the flow notes (end, periodic, denied flows) drained after every
//! burst and a final flush through `flush_with`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flowtable::act::PacketVerdict;
use flowtable::conntrack::CtConfig;
use flowtable::emc::EmcConfig;
use flowtable::key::{addr_of, v4_mapped};
use flowtable::parse::build::{arp_frame, Spec, L4};
use flowtable::pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};
use flowtable::{Action, Classifier, LinearClassifier, Match, PolicyTables, PortRange, Prefix, PrefixMap, Rule, RuleId, RuleLookup, Tier};

struct Counting;

thread_local! {
    /// Counting is per thread: the harness runs tests on parallel threads.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if ARMED.try_with(|a| a.get()).unwrap_or(false) {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
}

/// Allocations made by `f` on this thread.
fn count(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCS.with(|c| c.get())
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; counting touches only an atomic
// const-initialised thread locals (which do not allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's (forwarded unchanged).
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const A: u32 = 0x0a00_0001;
const B: u32 = 0x0a00_0002;

fn tables<C: Default>(mut insert: impl FnMut(&mut C, Rule)) -> PolicyTables<C> {
    let mut t = Tier::<C> { name: "app".into(), ..Default::default() };
    let m = Match { src_id: Some(10), dst_id: Some(20), ..Match::ANY };
    insert(&mut t.egress, Rule { id: RuleId(1), priority: 10, m: Match { proto: Some(6), dport: PortRange { lo: 20, hi: 80 }, ..m }, action: Action::Allow, cookie: 1 });
    insert(&mut t.egress, Rule { id: RuleId(2), priority: 10, m: Match { proto: Some(1), ..m }, action: Action::Allow, cookie: 2 });
    insert(&mut t.egress, Rule { id: RuleId(3), priority: 10, m: Match { proto: Some(17), src_id: Some(30), dst_id: Some(40), ..Match::ANY }, action: Action::Allow, cookie: 3 });
    insert(&mut t.ingress, Rule { id: RuleId(4), priority: 5, m: Match { proto: Some(6), dport: PortRange::exact(22), ..Match::ANY }, action: Action::Deny, cookie: 4 });
    PolicyTables { tiers: vec![t], default_egress: Action::Deny, default_ingress: Action::Allow }
}

/// 32 * 16 frames: bursts cycle through them; TCP source ports move on every
/// round so new connections keep being created (and evicted).
fn traffic(round: u16) -> Vec<Vec<u8>> {
    let v6a = addr_of("2001:db8::a".parse().unwrap());
    let v6b = addr_of("2001:db8::b".parse().unwrap());
    let mut f = Vec::new();
    for i in 0..(32 * 16u16) {
        let sp = 1024 + (i.wrapping_mul(7) ^ round.wrapping_mul(131)) % 20000;
        let frame = match i % 16 {
            0..=5 => Spec::new(v4_mapped(A), v4_mapped(B), L4::Tcp { sport: sp % 64 + 1024, dport: 80, flags: 0x10 }).build(),
            6 => Spec::new(v4_mapped(A), v4_mapped(B), L4::Tcp { sport: sp, dport: 80, flags: 0x02 }).build(),
            7 => Spec::new(v4_mapped(B), v4_mapped(A), L4::Tcp { sport: 80, dport: sp, flags: 0x12 }).build(),
            8 => Spec::new(v4_mapped(B), v4_mapped(A), L4::Tcp { sport: 80, dport: sp % 64 + 1024, flags: 0x10 }).build(),
            9 => Spec::new(v4_mapped(A), v4_mapped(B), L4::Tcp { sport: sp, dport: 22, flags: 0x02 }).build(),
            10 => Spec::new(v4_mapped(A), v4_mapped(B), L4::Icmp { ty: 8, code: 0, id: sp % 8 }).build(),
            11 => Spec::new(v4_mapped(B), v4_mapped(A), L4::Icmp { ty: 0, code: 0, id: sp % 8 }).build(),
            12 => Spec::new(v6a, v6b, L4::Udp { sport: sp, dport: 53 }).build(),
            13 => arp_frame(1, [2, 0, 0, 0, 0, 1], A, B),
            14 => Spec::new(v4_mapped(A), v4_mapped(0x0b00_0001), L4::Udp { sport: sp, dport: 53 }).build(),
            _ => {
                let mut t = Spec::new(v4_mapped(A), v4_mapped(B), L4::Tcp { sport: sp, dport: 80, flags: 0x10 }).build();
                t.truncate(40 + (usize::from(i) % 20)); // malformed
                t
            }
        };
        f.push(frame);
    }
    f
}

/// Notes seen: (end notes of connections, periodic notes, denied-flow notes).
#[derive(Default, Debug)]
struct Notes {
    ended: u64,
    periodic: u64,
    denied: u64,
}

fn run<C: RuleLookup>(t: &PolicyTables<C>) -> (u64, flowtable::stats::Stats, Notes) {
    let mut ids = PrefixMap::new();
    let mut routes = PrefixMap::new();
    ids.insert(Prefix::v4(A, 32), 10u32);
    ids.insert(Prefix::v4(B, 32), 20);
    ids.insert(Prefix::new(addr_of("2001:db8::a".parse().unwrap()), 128), 30);
    ids.insert(Prefix::new(addr_of("2001:db8::b".parse().unwrap()), 128), 40);
    routes.insert(Prefix::v4(0x0a00_0000, 8), 1u16);
    routes.insert(Prefix::new(addr_of("2001:db8::".parse().unwrap()), 32), 2);
    // Small tables so eviction and replacement paths run too.
    let mut p = Pipeline::new(PipelineConfig {
        emc: EmcConfig { entries: 1024, insert_inv_prob: 1 },
        ct: CtConfig { capacity: 2048, ..Default::default() },
        sample_inv: 64,
        report_interval: 200_000_000,
        denied_flows: 256,
        denied_idle: 1_000_000_000,
        ..Default::default()
    });
    let mut notes = Notes::default();
    let rounds: Vec<Vec<Vec<u8>>> = (0..8).map(traffic).collect();
    let bursts: Vec<Vec<RxPacket<'_>>> = rounds
        .iter()
        .flat_map(|r| r.chunks(32))
        .map(|c| c.iter().enumerate().map(|(i, f)| RxPacket { frame: f, rss: (i % 3 == 0).then_some(i as u32 * 0x9e37), in_port: 1 }).collect())
        .collect();
    let mut out = [PacketVerdict::default(); 32];
    let mut now = 0u64;
    let mut step = |p: &mut Pipeline, n: usize| {
        let gen = (n / 1000) as u64; // a new generation every 1000 bursts
        let policy = Policy { gen, tables: t, identities: &ids, routes: &routes, cut_before: 0 };
        now += 50_000_000; // 50 ms per burst: connections expire along the way
        p.process(&policy, &bursts[n % bursts.len()], now, &mut out);
        p.maintain(now + 1);
    };
    let mut tally = |n: &flowtable::conntrack::CtNote, denied: bool| {
        if denied {
            notes.denied += 1;
        } else if n.end.is_some() {
            notes.ended += 1;
        } else {
            notes.periodic += 1;
        }
    };
    for n in 0..bursts.len() {
        step(&mut p, n);
        p.drain_notes(&mut tally);
    }
    let allocs = count(|| {
        for n in 0..10_000 {
            step(&mut p, n);
            p.drain_notes(&mut tally);
        }
        p.flush_with(&mut tally);
    });
    (allocs, *p.stats(), notes)
}

#[test]
fn ten_thousand_bursts_allocate_nothing() {
    for fast in [false, true] {
        let (allocs, s, notes) = if fast {
            run(&tables::<Classifier>(|c, r| c.insert(r).unwrap()))
        } else {
            run(&tables::<LinearClassifier>(|c, r| assert!(c.insert(r))))
        };
        assert_eq!(allocs, 0, "allocations on the data path (classifier fast = {fast})");
        // The mix really took every path.
        assert!(s.emc_hit > 0 && s.emc_miss > 0 && s.cls_lookup > 0, "{s:?}");
        assert!(s.ct_created > 0 && s.ct_hit > 0 && s.ct_revalidated + s.ct_revoked > 0, "{s:?}");
        assert!(s.drop_policy_egress > 0 && s.drop_policy_ingress > 0 && s.drop_no_route > 0, "{s:?}");
        assert!(s.arp > 0 && s.sampled > 0 && s.dropped() > s.drop_policy_egress, "{s:?}");
        assert!(notes.ended > 0 && notes.periodic > 0 && notes.denied > 0 && s.denied_flows > 0, "{notes:?} {s:?}");
        assert_eq!(s.flow_notes_lost, 0, "drained every burst: nothing lost");
    }
}

#[test]
fn the_counter_sees_allocations() {
    let n = count(|| {
        let v: Vec<u64> = Vec::with_capacity(std::hint::black_box(16));
        std::hint::black_box(&v);
    });
    assert_eq!(n, 1);
}
