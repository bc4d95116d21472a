//! Parser fuzz target: any bytes, any in_port, with and without an RSS hash.
//! The parser must never panic; a successful parse must be self-consistent.
#![no_main]

use flowtable::key::flags;
use flowtable::parse::{self, Class};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rss = data.first().map(|&b| u32::from(b) * 0x0101_0101);
    for r in [None, rss] {
        if let Ok(p) = parse::parse(data, 7, r) {
            let k = p.key;
            assert_eq!(k.in_port, 7);
            assert!((p.meta.l3 as usize) <= data.len());
            assert!((p.meta.l4 as usize) <= data.len());
            if k.flags & flags::FRAG_LATER != 0 {
                assert_eq!((k.sport, k.dport, p.meta.l4), (0, 0, 0));
            }
            match p.meta.class {
                Class::Ipv4 => assert!(flowtable::key::is_v4(k.src) && k.flags & flags::V6 == 0),
                Class::Ipv6 => assert!(k.flags & flags::V6 != 0),
                Class::Arp | Class::NonIp { .. } => {}
            }
            if r.is_none() {
                assert_eq!(p.meta.hash, parse::flow_hash(&k, p.meta.echo_id));
            }
        }
    }
});
