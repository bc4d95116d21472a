//! Pipeline fuzz target: the input is a sequence of frames (a length byte,
//! an in_port/time byte, then the frame), run through one pipeline with a
//! small stateful policy in bursts of up to 32. Nothing may panic, and every
//! packet must get exactly one fate (rx = forwarded + dropped + arp).
#![no_main]

use flowtable::act::{Fate, PacketVerdict};
use flowtable::conntrack::CtConfig;
use flowtable::emc::EmcConfig;
use flowtable::pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};
use flowtable::{Action, LinearClassifier, Match, PolicyTables, Prefix, PrefixMap, Rule, RuleId, Tier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tier = Tier::<LinearClassifier> { name: "t".into(), ..Default::default() };
    let m = Match { src_id: Some(1), ..Match::ANY };
    tier.egress.insert(Rule { id: RuleId(1), priority: 1, m, action: Action::Allow, cookie: 1 });
    let deny22 = Match { proto: Some(6), dport: flowtable::PortRange::exact(22), ..Match::ANY };
    tier.ingress.insert(Rule { id: RuleId(2), priority: 1, m: deny22, action: Action::Deny, cookie: 2 });
    let tables = PolicyTables { tiers: vec![tier], default_egress: Action::Deny, default_ingress: Action::Allow };
    let mut ids = PrefixMap::new();
    ids.insert(Prefix::v4(0x0a00_0000, 8), 1u32);
    ids.insert(Prefix::new(0x2001_0db8 << 96, 32), 1u32);
    let mut routes = PrefixMap::new();
    routes.insert(Prefix::ANY, 1u16);
    routes.insert(Prefix::v4(0xc0a8_0000, 16), 2u16);
    let mut p = Pipeline::new(PipelineConfig {
        emc: EmcConfig { entries: 16, insert_inv_prob: 2 },
        ct: CtConfig { capacity: 16, ..Default::default() },
        sample_inv: 3,
        ..Default::default()
    });

    let mut frames: Vec<(&[u8], u8)> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let (len, meta) = (usize::from(rest[0]), rest[1]);
        rest = &rest[2..];
        let n = len.min(rest.len());
        frames.push((&rest[..n], meta));
        rest = &rest[n..];
    }
    let mut now = 0u64;
    let mut gen = 0u64;
    for chunk in frames.chunks(32) {
        let pkts: Vec<RxPacket<'_>> = chunk
            .iter()
            .map(|&(f, meta)| RxPacket { frame: f, rss: (meta & 0x80 != 0).then_some(u32::from(meta)), in_port: u16::from(meta & 3) })
            .collect();
        now += u64::from(chunk[0].1) * 1_000_000_000;
        if chunk[0].1 & 0x40 != 0 {
            gen += 1;
        }
        let policy = Policy { gen, tables: &tables, identities: &ids, routes: &routes, cut_before: 0 };
        let mut out = vec![PacketVerdict::default(); pkts.len()];
        p.process(&policy, &pkts, now, &mut out);
        for v in &out {
            assert!(matches!(v.fate, Fate::Forward(1 | 2) | Fate::Drop(_) | Fate::Arp));
        }
    }
    let s = p.stats();
    assert_eq!(s.rx_packets, frames.len() as u64);
    assert_eq!(s.rx_packets, s.forwarded + s.dropped() + s.arp);
    assert!(p.conntrack().len() <= p.conntrack().capacity());
});
