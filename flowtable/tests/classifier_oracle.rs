//! The classifier against the brute-force reference (`LinearClassifier`):
//! every ClassBench set with its trace, and random rule sets (IPv4 and IPv6,
//! port ranges, protocols, in_port, identities), before and after random
//! insert/delete sequences. A trace's last column is never used.

use std::path::{Path, PathBuf};

use flowtable::classbench::{self, Rng};
use flowtable::classify::BURST;
use flowtable::key::v4_mapped;
use flowtable::{Action, Classifier, FlowKey, LinearClassifier, Match, PortRange, Prefix, Rule, RuleId};
use proptest::prelude::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/classbench").join(name)
}

fn data_dir_present() -> bool {
    let d = data("");
    let ok = d.is_dir();
    if !ok {
        eprintln!("skipping: {} not found", d.display());
    }
    ok
}

/// Checks single and batch lookups of every key against the reference.
fn check_keys(cls: &Classifier, lin: &LinearClassifier, keys: &[FlowKey]) {
    let mut out = [None; BURST];
    for chunk in keys.chunks(BURST) {
        let mut b = [FlowKey::default(); BURST];
        b[..chunk.len()].copy_from_slice(chunk);
        // Live lanes: every other lane of the chunk for odd chunks, all otherwise.
        let all = if chunk.len() == BURST { u32::MAX } else { (1u32 << chunk.len()) - 1 };
        let live = if chunk[0].sport % 2 == 1 { all & 0x5555_5555 } else { all };
        let miss = cls.lookup_batch(&b, live, &mut out);
        for (i, k) in chunk.iter().enumerate() {
            let want = lin.lookup(k);
            assert_eq!(cls.lookup(k), want, "key {k:?}");
            if live >> i & 1 == 1 {
                assert_eq!(out[i], want, "batch lane {i} key {k:?}");
                assert_eq!(miss >> i & 1 == 1, want.is_none());
            }
        }
        assert_eq!(miss & !live, 0);
    }
}

/// Loads a set, checks its trace (or `sample` of its lines), then deletes a
/// random third of the rules, re-inserts half of them and checks again.
fn check_set(rules: &str, trace: Option<&str>, sample: usize) {
    if !data_dir_present() {
        return;
    }
    let rs = classbench::parse_rules(&data(rules)).unwrap();
    let mut keys = match trace {
        Some(t) => classbench::parse_trace(&data(t)).unwrap(),
        None => classbench::synth_trace(&rs, 2, 11),
    };
    let mut rng = Rng::new(rs.len() as u64);
    if keys.len() > sample {
        keys = (0..sample).map(|_| keys[rng.below(keys.len() as u64) as usize]).collect();
    }
    let cls = classbench::build(&rs);
    let mut lin = LinearClassifier::new();
    for r in &rs {
        assert!(lin.insert(*r));
    }
    check_keys(&cls, &lin, &keys);

    let mut cls = cls;
    let mut gone = Vec::new();
    for _ in 0..rs.len() / 3 {
        let id = RuleId(rng.below(rs.len() as u64) as u32);
        let a = cls.remove(id);
        assert_eq!(a, lin.remove(id));
        if let Some(r) = a {
            gone.push(r);
        }
    }
    for r in gone.iter().step_by(2) {
        cls.insert(*r).unwrap();
        lin.insert(*r);
    }
    assert_eq!(cls.len(), lin.len());
    check_keys(&cls, &lin, &keys);
}

#[test]
fn acl1_1k() {
    check_set("acl1_1k", Some("acl1_1k_trace"), usize::MAX);
}

#[test]
fn fw1_1k() {
    check_set("fw1_1k", Some("fw1_1k_trace"), usize::MAX);
}

#[test]
fn ipc1_1k() {
    check_set("ipc1_1k", Some("ipc1_1k_trace"), usize::MAX);
}

// The 10k sets: a sample of each trace in the normal run (the reference scan
// costs rules x keys), the whole trace with --ignored.
#[test]
fn acl1_10k_sampled() {
    check_set("acl1_10k", Some("acl1_10k_trace.gen"), 3000);
}

#[test]
fn fw1_10k_sampled() {
    check_set("fw1_10k", Some("fw1_10k_trace"), 3000);
}

#[test]
fn ipc1_10k_sampled() {
    check_set("ipc1_10k", Some("ipc1_10k_trace"), 3000);
}

#[test]
#[ignore = "slow: whole 10k traces and the 50k sets against the linear scan"]
fn large_sets_full() {
    check_set("acl1_10k", Some("acl1_10k_trace.gen"), usize::MAX);
    check_set("fw1_10k", Some("fw1_10k_trace"), usize::MAX);
    check_set("ipc1_10k", Some("ipc1_10k_trace"), usize::MAX);
    check_set("acl1_100k", None, 30_000);
    check_set("fw1_100k", None, 30_000);
}

#[test]
fn fifty_k_sets_sampled() {
    check_set("acl1_100k", None, 400);
    check_set("fw1_100k", None, 400);
}

// ---- random rule sets ----

/// Small value pools so that random rules and keys overlap often.
const V4: [u32; 4] = [0x0a00_0000, 0x0a01_0000, 0x0a01_0200, 0xc0a8_0101];
const V6: [u128; 3] = [0x2001_0db8u128 << 96, 0x2001_0db8_0001u128 << 80, 0xfe80u128 << 112];
const PORTS: [u16; 5] = [0, 22, 80, 443, 8080];

fn arb_prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        Just(Prefix::ANY),
        (0..4usize, 0u8..=32).prop_map(|(i, l)| Prefix::v4(V4[i], l)),
        (0..3usize, 0u8..=128).prop_map(|(i, l)| Prefix::new(V6[i], l)),
    ]
}

fn arb_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        Just(PortRange::ANY),
        (0..5usize).prop_map(|i| PortRange::exact(PORTS[i])),
        (0..5usize, 0u16..1000).prop_map(|(i, w)| PortRange { lo: PORTS[i], hi: PORTS[i].saturating_add(w) }),
    ]
}

fn arb_match() -> impl Strategy<Value = Match> {
    (
        prop::option::weighted(0.2, 0u16..3),
        arb_prefix(),
        arb_prefix(),
        arb_range(),
        arb_range(),
        prop::option::of(prop_oneof![Just(6u8), Just(17u8), Just(1u8)]),
        prop::option::weighted(0.2, 1u32..4),
        prop::option::weighted(0.2, 1u32..4),
    )
        .prop_map(|(in_port, src, dst, sport, dport, proto, src_id, dst_id)| Match {
            in_port,
            src,
            dst,
            sport,
            dport,
            proto,
            src_id,
            dst_id,
        })
}

fn arb_rules(n: usize) -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec((arb_match(), 0u32..8, 0u32..200), 0..n).prop_map(|v| {
        v.into_iter()
            .map(|(m, priority, id)| Rule { id: RuleId(id), priority, m, action: Action::Allow, cookie: 0 })
            .collect()
    })
}

fn arb_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        (0..4usize, any::<u16>()).prop_map(|(i, low)| v4_mapped(V4[i] | (low as u32 & 0x1ff))),
        (0..3usize, any::<u16>()).prop_map(|(i, low)| V6[i] | low as u128),
        any::<u32>().prop_map(v4_mapped),
    ]
}

fn arb_keys(n: usize) -> impl Strategy<Value = Vec<FlowKey>> {
    let port = prop_oneof![(0..5usize).prop_map(|i| PORTS[i]), any::<u16>()];
    prop::collection::vec(
        (
            0u16..3,
            arb_addr(),
            arb_addr(),
            prop_oneof![Just(6u8), Just(17u8), Just(1u8)],
            port.clone(),
            port,
            0u32..4,
            0u32..4,
        ),
        1..n,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(in_port, s, d, proto, sp, dp, si, di)| {
                let mut k = FlowKey::new(in_port, s, d, proto, sp, dp);
                k.src_id = si;
                k.dst_id = di;
                k
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_sets_equal_linear_before_and_after_updates(
        rules in arb_rules(120),
        keys in arb_keys(200),
        ops in prop::collection::vec((any::<bool>(), 0usize..1000), 0..150),
        compile_first in any::<bool>(),
        compile_at in prop::option::of(0usize..150),
    ) {
        let mut cls = Classifier::new();
        let mut lin = LinearClassifier::new();
        for r in &rules {
            let ok = lin.insert(*r);
            prop_assert_eq!(cls.insert(*r).is_ok(), ok);
        }
        prop_assert_eq!(cls.len(), lin.len());
        check_keys(&cls, &lin, &keys);
        if compile_first {
            cls.compile();
            prop_assert_eq!(cls.len(), lin.len());
            check_keys(&cls, &lin, &keys);
        }
        // Random deletes of present ids and re-inserts of any generated rule
        // (tombstones, revivals and delta entries over a compiled core), with
        // a compile somewhere among them.
        for (n, &(ins, i)) in ops.iter().enumerate() {
            if rules.is_empty() { break; }
            if compile_at == Some(n) {
                cls.compile();
            }
            let r = rules[i % rules.len()];
            if ins {
                prop_assert_eq!(cls.insert(r).is_ok(), lin.insert(r));
            } else {
                prop_assert_eq!(cls.remove(r.id), lin.remove(r.id));
            }
        }
        prop_assert_eq!(cls.len(), lin.len());
        check_keys(&cls, &lin, &keys);
        for r in lin.rules() {
            prop_assert_eq!(cls.get(r.id), Some(r));
        }
        prop_assert_eq!(cls.iter().count(), lin.len());
        prop_assert!(cls.drift() <= cls.delta_len());
    }

    /// A core compiled from a snapshot and installed after more changes:
    /// changed and new rules stay in the delta, deleted ones stay gone.
    #[test]
    fn core_installed_after_changes_equals_linear(
        rules in arb_rules(120),
        keys in arb_keys(200),
        ops in prop::collection::vec((any::<bool>(), 0usize..1000, 0u32..8), 0..100),
    ) {
        let mut cls = Classifier::new();
        let mut lin = LinearClassifier::new();
        for r in &rules {
            let ok = lin.insert(*r);
            prop_assert_eq!(cls.insert(*r).is_ok(), ok);
        }
        let core = std::sync::Arc::new(flowtable::classify::Compiled::build(cls.compile_input()));
        for &(ins, i, prio) in &ops {
            if rules.is_empty() { break; }
            // Re-inserts may come back with another priority: same id, changed rule.
            let r = Rule { priority: prio, ..rules[i % rules.len()] };
            if ins {
                prop_assert_eq!(cls.insert(r).is_ok(), lin.insert(r));
            } else {
                prop_assert_eq!(cls.remove(r.id), lin.remove(r.id));
            }
        }
        cls.install(core);
        prop_assert_eq!(cls.len(), lin.len());
        check_keys(&cls, &lin, &keys);
        for r in lin.rules() {
            prop_assert_eq!(cls.get(r.id), Some(r));
        }
    }
}
