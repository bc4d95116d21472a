use super::build::{arp_frame, Frag, Spec, L4};
use super::*;
use crate::key::{flags, v4_mapped};
use l4::tcp_flags::{ACK, SYN};
use proptest::prelude::*;

/// 10.0.0.1:40000 -> 10.0.0.2:443 TCP SYN, untagged, as captured (60-byte
/// minimum frame: 14 + 20 + 20 + 6 bytes of Ethernet padding).
static TCP_SYN_V4: [u8; 60] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, // eth
    0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x26, 0xcd, 10, 0, 0, 1, 10, 0, 0, 2, // ipv4
    0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // tcp
    0, 0, 0, 0, 0, 0, // padding
];

/// QinQ (0x88a8 vid 100, 0x8100 vid 200) UDP 192.168.1.1:5353 -> 192.168.1.255:5353.
static QINQ_UDP: [u8; 50] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xa8, //
    0x00, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00, // tags
    0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 168, 1, 1, 192, 168, 1, 255, //
    0x14, 0xe9, 0x14, 0xe9, 0x00, 0x08, 0x00, 0x00, // udp
];

/// IPv6 2001:db8::1 -> 2001:db8::2, hop-by-hop (PadN) then TCP 1234 -> 80 SYN|ACK.
static V6_HBH_TCP: [u8; 82] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, //
    0x60, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x40, // payload 28, next HBH
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
    0x06, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // HBH -> TCP
    0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0,
];

fn v4(a: [u8; 4]) -> Addr {
    v4_mapped(u32::from_be_bytes(a))
}

#[test]
fn captured_tcp_syn_v4() {
    let p = parse(&TCP_SYN_V4, 3, None).unwrap();
    let k = p.key;
    assert_eq!((k.src, k.dst), (v4([10, 0, 0, 1]), v4([10, 0, 0, 2])));
    assert_eq!((k.sport, k.dport, k.proto, k.tcp_flags), (40000, 443, 6, SYN));
    assert_eq!((k.in_port, k.vlan, k.flags, k.src_id, k.dst_id), (3, 0, 0, 0, 0));
    assert_eq!(p.meta.class, Class::Ipv4);
    assert_eq!((p.meta.l3, p.meta.l4), (14, 34));
    assert_eq!(p.meta.hash, flow_hash(&k, 0));
    assert!(ipv4::Ipv4Packet::new_checked(&TCP_SYN_V4[14..]).unwrap().verify_checksum());
    // The NIC's hash wins when valid.
    assert_eq!(parse(&TCP_SYN_V4, 3, Some(0xdead_beef)).unwrap().meta.hash, 0xdead_beef);
}

#[test]
fn captured_qinq_udp() {
    let p = parse(&QINQ_UDP, 0, None).unwrap();
    assert_eq!(p.key.vlan, 100, "outer tag is the key's vlan");
    assert_eq!((p.key.sport, p.key.dport, p.key.proto), (5353, 5353, 17));
    assert_eq!(p.key.dst, v4([192, 168, 1, 255]));
    assert_eq!(p.meta.l3, 22);
    // A third tag is refused; a cut tag too.
    let mut three = Spec::new(v4([1, 1, 1, 1]), v4([2, 2, 2, 2]), L4::Udp { sport: 1, dport: 2 });
    three.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    assert_eq!(parse(&three.build(), 0, None).unwrap_err(), Malformed::TooManyVlans);
    assert_eq!(parse(&QINQ_UDP[..17], 0, None).unwrap_err(), Malformed::TruncatedVlan);
}

#[test]
fn captured_v6_hop_by_hop_tcp() {
    let p = parse(&V6_HBH_TCP, 1, None).unwrap();
    let k = p.key;
    assert_eq!(p.meta.class, Class::Ipv6);
    assert_eq!(k.flags, flags::V6);
    assert_eq!((k.proto, k.sport, k.dport, k.tcp_flags), (6, 1234, 80, SYN | ACK));
    assert_eq!(k.src, 0x2001_0db8_0000_0000_0000_0000_0000_0001);
    assert_eq!(p.meta.l4, 14 + 40 + 8);
}

#[test]
fn v4_fragments() {
    let mut s = Spec::new(v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), L4::Tcp { sport: 5, dport: 80, flags: ACK });
    s.payload = 100;
    s.frag = Frag::First;
    let k = parse(&s.build(), 0, None).unwrap().key;
    assert_eq!((k.flags, k.sport, k.dport), (flags::FRAG_FIRST, 5, 80));
    s.frag = Frag::Later(13);
    let p = parse(&s.build(), 0, None).unwrap();
    assert_eq!((p.key.flags, p.key.sport, p.key.dport, p.key.proto, p.meta.l4), (flags::FRAG_LATER, 0, 0, 6, 0));
    // RFC 1858: a TCP fragment at offset 1 can rewrite the flags of the first.
    s.frag = Frag::Later(1);
    assert_eq!(parse(&s.build(), 0, None).unwrap_err(), Malformed::BadFragment);
    // A tiny first fragment without a full TCP header.
    s.frag = Frag::First;
    s.payload = 0;
    let mut f = s.build();
    f.truncate(14 + 20 + 8);
    f[14 + 3] = 28; // total length 28: 8 bytes of TCP
    assert_eq!(parse(&f, 0, None).unwrap_err(), Malformed::TruncatedL4);
}

#[test]
fn v6_extension_chain_and_fragments() {
    let a = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
    let b = 0x2001_0db8_0000_0000_0000_0000_0000_0002;
    let mut s = Spec::new(a, b, L4::Udp { sport: 9, dport: 53 });
    s.ipv6_ext = vec![0, 43, 60];
    let p = parse(&s.build(), 0, None).unwrap();
    assert_eq!((p.key.proto, p.key.sport, p.key.dport), (17, 9, 53));
    assert_eq!(p.meta.l4 as usize, 14 + 40 + 24);
    s.frag = Frag::Later(10);
    let k = parse(&s.build(), 0, None).unwrap().key;
    assert_eq!((k.proto, k.sport, k.flags), (17, 0, flags::V6 | flags::FRAG_LATER));
    s.frag = Frag::First;
    let k = parse(&s.build(), 0, None).unwrap().key;
    assert_eq!((k.proto, k.dport, k.flags), (17, 53, flags::V6 | flags::FRAG_FIRST));
    s.frag = Frag::None;
    s.ipv6_ext = vec![60; MAX_EXT_HEADERS];
    assert!(parse(&s.build(), 0, None).is_ok());
    s.ipv6_ext = vec![60; MAX_EXT_HEADERS + 1];
    assert_eq!(parse(&s.build(), 0, None).unwrap_err(), Malformed::TooManyExtHeaders);
    s.ipv6_ext = vec![60, 0];
    assert_eq!(parse(&s.build(), 0, None).unwrap_err(), Malformed::MisplacedHopByHop);
    // Cut inside the extension header (payload length adjusted to match).
    s.ipv6_ext = vec![43];
    let mut f = s.build();
    f.truncate(14 + 40 + 4);
    f[14 + 5] = 4;
    assert_eq!(parse(&f, 0, None).unwrap_err(), Malformed::TruncatedExtHeader);
    // No next header: proto 59, no ports, no l4.
    let mut none = Spec::new(a, b, L4::Other(59));
    none.ipv6_ext = vec![60];
    let p = parse(&none.build(), 0, None).unwrap();
    assert_eq!((p.key.proto, p.meta.l4), (59, 0));
}

#[test]
fn icmp_type_code_and_echo_id() {
    let s = Spec::new(v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), L4::Icmp { ty: 8, code: 0, id: 77 });
    let p = parse(&s.build(), 0, None).unwrap();
    assert_eq!((p.key.proto, p.key.sport, p.key.dport, p.meta.echo_id), (1, 8, 0, 77));
    // The reply hashes like the request (same echo id, swapped addresses).
    let r = Spec::new(v4([10, 0, 0, 2]), v4([10, 0, 0, 1]), L4::Icmp { ty: 0, code: 0, id: 77 });
    assert_eq!(parse(&r.build(), 0, None).unwrap().meta.hash, p.meta.hash);
    let u = Spec::new(1, 2, L4::Icmp { ty: 1, code: 4, id: 0 });
    let p = parse(&u.build(), 0, None).unwrap();
    assert_eq!((p.key.proto, p.key.sport, p.key.dport, p.meta.echo_id), (58, 1, 4, 0));
    // ICMP inside IPv6 is not ICMPv6: no header check, no ports.
    let odd = Spec::new(1, 2, L4::Other(1));
    assert_eq!(parse(&odd.build(), 0, None).unwrap().key.sport, 0);
}

#[test]
fn sctp_and_ip_options() {
    let mut s = Spec::new(v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), L4::Sctp { sport: 36412, dport: 38412 });
    s.ipv4_option_words = 3;
    let p = parse(&s.build(), 0, None).unwrap();
    assert_eq!((p.key.proto, p.key.sport, p.key.dport, p.meta.l4), (132, 36412, 38412, 14 + 32));
}

#[test]
fn arp_and_non_ip_classes() {
    let f = arp_frame(1, [2, 0, 0, 0, 0, 1], 0x0a00_0001, 0x0a00_0002);
    let p = parse(&f, 4, None).unwrap();
    assert_eq!(p.meta.class, Class::Arp);
    assert_eq!((p.key.src, p.key.dst, p.key.sport), (v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), 1));
    assert_eq!(parse(&f[..30], 4, None).unwrap_err(), Malformed::BadArp);
    let mut lldp = TCP_SYN_V4;
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(parse(&lldp, 0, None).unwrap().meta.class, Class::NonIp { ethertype: 0x88cc });
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let frames: [&[u8]; 3] = [&TCP_SYN_V4[..54], &QINQ_UDP, &V6_HBH_TCP];
    for f in frames {
        assert!(parse(f, 0, None).is_ok());
        for n in 0..f.len() {
            assert!(parse(&f[..n], 0, None).is_err(), "prefix {n} of a {}-byte frame parsed", f.len());
        }
    }
    assert_eq!(parse(&[], 0, None).unwrap_err(), Malformed::Runt);
}

#[test]
fn hash_is_symmetric() {
    let a = Spec::new(v4([10, 0, 0, 1]), v4([10, 0, 0, 2]), L4::Tcp { sport: 1000, dport: 80, flags: SYN });
    let b = Spec::new(v4([10, 0, 0, 2]), v4([10, 0, 0, 1]), L4::Tcp { sport: 80, dport: 1000, flags: ACK });
    let c = Spec::new(v4([10, 0, 0, 2]), v4([10, 0, 0, 1]), L4::Tcp { sport: 1000, dport: 80, flags: ACK });
    let h = |s: &Spec| parse(&s.build(), 0, None).unwrap().meta.hash;
    assert_eq!(h(&a), h(&b));
    assert_ne!(h(&a), h(&c));
}

#[test]
fn malformed_names_are_unique_and_indexed() {
    for (i, m) in Malformed::ALL.iter().enumerate() {
        assert_eq!(*m as usize, i);
        assert!(Malformed::ALL[..i].iter().all(|o| o.name() != m.name()));
    }
}

fn arb_addr(v6: bool) -> BoxedStrategy<Addr> {
    if v6 {
        any::<u128>().prop_filter("not mapped", |a| !crate::key::is_v4(*a)).boxed()
    } else {
        any::<u32>().prop_map(v4_mapped).boxed()
    }
}

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(sport, dport, flags)| L4::Tcp { sport, dport, flags }),
        (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Udp { sport, dport }),
        (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Sctp { sport, dport }),
        (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(ty, code, id)| L4::Icmp { ty, code, id }),
        prop::sample::select(vec![47u8, 50, 89, 103]).prop_map(L4::Other),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    any::<bool>().prop_flat_map(|v6| {
        (
            arb_addr(v6),
            arb_addr(v6),
            arb_l4(),
            prop::collection::vec((prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]), 0u16..4096), 0..=2),
            prop_oneof![Just(Frag::None), Just(Frag::First), (2u16..8000).prop_map(Frag::Later)],
            0u8..=10,
            prop::collection::vec(prop::sample::select(vec![43u8, 60]), 0..4),
            0usize..64,
        )
            .prop_map(move |(src, dst, l4, vlans, frag, opt, ext, payload)| {
                let mut ipv6_ext = ext;
                if v6 && opt % 2 == 1 {
                    ipv6_ext.insert(0, 0); // hop-by-hop first
                }
                Spec { vlans, src, dst, l4, frag, ipv4_option_words: if v6 { 0 } else { opt }, ipv6_ext, payload }
            })
    })
}

/// Frames the IPv4 fast path takes (untagged, no options, not fragmented,
/// TCP or UDP) and near misses (a tag, an option word, a fragment, SCTP),
/// half of the time; else any frame.
fn arb_fast_or_any() -> impl Strategy<Value = Spec> {
    let l4 = prop_oneof![
        4 => any::<(u16, u16, u8)>().prop_map(|(sport, dport, flags)| L4::Tcp { sport, dport, flags }),
        4 => any::<(u16, u16)>().prop_map(|(sport, dport)| L4::Udp { sport, dport }),
        1 => any::<(u16, u16)>().prop_map(|(sport, dport)| L4::Sctp { sport, dport }),
    ];
    let frag = prop_oneof![6 => Just(Frag::None), 1 => Just(Frag::First), 1 => (1u16..8000).prop_map(Frag::Later)];
    let fast = (arb_addr(false), arb_addr(false), l4, frag, prop::bool::weighted(0.1), prop::bool::weighted(0.1), 0usize..64).prop_map(
        |(src, dst, l4, frag, tag, opt, payload)| Spec {
            payload,
            frag,
            vlans: if tag { vec![(0x8100, 7)] } else { Vec::new() },
            ipv4_option_words: u8::from(opt),
            ..Spec::new(src, dst, l4)
        },
    );
    prop_oneof![fast, arb_spec()]
}

#[test]
fn same_fast_fields_sees_every_byte_the_fast_path_reads() {
    // Changing any byte the fast path reads makes the frames differ; the
    // bytes it ignores do not (the proptest checks that the parse agrees).
    let (a, b) = (v4_mapped(0x0a00_0001), v4_mapped(0x0a00_0002));
    let frames = [
        Spec { payload: 20, ..Spec::new(a, b, L4::Tcp { sport: 1, dport: 2, flags: ACK }) }.build(),
        Spec { payload: 20, ..Spec::new(a, b, L4::Udp { sport: 1, dport: 2 }) }.build(),
    ];
    for (f, tcp) in frames.iter().zip([true, false]) {
        let read: Vec<usize> = [12, 13, 14, 16, 17, 20, 21, 23].into_iter().chain(26..38).chain(if tcp { 46..48 } else { 0..0 }).collect();
        for i in 12..48 {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert_eq!(same_fast_fields(f, &g), !read.contains(&i) && i != 15, "byte {i} (tcp {tcp})");
        }
        assert!(same_fast_fields(f, f));
        assert!(!same_fast_fields(&f[..47], &f[..47]), "under 48 bytes: never");
    }
}

#[test]
fn the_fast_path_takes_plain_tcp_and_udp_over_ipv4_only() {
    let (a, b) = (v4_mapped(0x0a00_0001), v4_mapped(0x0a00_0002));
    let (mut k, mut m) = (FlowKey::default(), Meta::default());
    for l4 in [L4::Tcp { sport: 1, dport: 2, flags: SYN }, L4::Udp { sport: 1, dport: 2 }] {
        assert!(parse_fast(&Spec::new(a, b, l4).build(), 1, None, &mut k, &mut m), "{l4:?}");
    }
    let tagged = Spec { vlans: vec![(0x8100, 5)], ..Spec::new(a, b, L4::Udp { sport: 1, dport: 2 }) };
    let options = Spec { ipv4_option_words: 1, ..Spec::new(a, b, L4::Udp { sport: 1, dport: 2 }) };
    let fragment = Spec { frag: Frag::First, ..Spec::new(a, b, L4::Udp { sport: 1, dport: 2 }) };
    let sctp = Spec::new(a, b, L4::Sctp { sport: 1, dport: 2 });
    for s in [tagged, options, fragment, sctp] {
        assert!(!parse_fast(&s.build(), 1, None, &mut k, &mut m), "{s:?}");
    }
}

proptest! {
    #[test]
    fn build_parse_round_trip(s in arb_spec(), in_port in any::<u16>()) {
        let f = s.build();
        let p = parse(&f, in_port, None).unwrap();
        let k = p.key;
        prop_assert_eq!(k.in_port, in_port);
        prop_assert_eq!((k.src, k.dst), (s.src, s.dst));
        prop_assert_eq!(k.vlan, s.vlans.first().map_or(0, |v| v.1));
        prop_assert_eq!(k.proto, s.proto());
        prop_assert_eq!(k.flags & flags::V6 != 0, !s.is_v4());
        prop_assert_eq!(k.flags & flags::FRAG_FIRST != 0, s.frag == Frag::First);
        prop_assert_eq!(k.flags & flags::FRAG_LATER != 0, matches!(s.frag, Frag::Later(_)));
        let (sp, dp, tf, echo) = match (s.frag, s.l4) {
            (Frag::Later(_), _) => (0, 0, 0, 0),
            (_, L4::Tcp { sport, dport, flags }) => (sport, dport, flags, 0),
            (_, L4::Udp { sport, dport }) | (_, L4::Sctp { sport, dport }) => (sport, dport, 0, 0),
            (_, L4::Icmp { ty, code, id }) => {
                (u16::from(ty), u16::from(code), 0, if l4::is_echo(!s.is_v4(), ty) { id } else { 0 })
            }
            (_, L4::Other(_)) => (0, 0, 0, 0),
        };
        prop_assert_eq!((k.sport, k.dport, k.tcp_flags, p.meta.echo_id), (sp, dp, tf, echo));
        prop_assert_eq!(p.meta.hash, flow_hash(&k, p.meta.echo_id));
        // The reverse-direction key hashes alike.
        let mut r = k.reversed();
        r.tcp_flags = 0;
        if !matches!(s.l4, L4::Icmp { .. }) {
            prop_assert_eq!(flow_hash(&r, 0), flow_hash(&k, 0));
        }
    }

    #[test]
    fn fast_path_agrees_with_the_general_parser(s in arb_fast_or_any(), at in any::<prop::sample::Index>(), v in any::<u8>(), cut in any::<prop::sample::Index>(), tl in 0u16..80, rss in any::<Option<u32>>()) {
        // Well-formed frames, one with another IPv4 total length (bytes 16-17
        // of an untagged frame), one with a byte changed, and truncated ones:
        // wherever parse_into answers, the general parser answers the same.
        let mut f = s.build();
        let n = f.len();
        let mut short = f.clone();
        short[16..18].copy_from_slice(&tl.to_be_bytes());
        for frame in [f.clone(), short, { f[at.index(n)] = v; f.clone() }, f[..cut.index(n + 1)].to_vec()] {
            let (mut a, mut b) = (FlowKey::default(), FlowKey::default());
            let ra = parse_into(&frame, 3, rss, &mut a);
            let rb = parse_general(&frame, 3, rss, &mut b);
            prop_assert_eq!(ra, rb);
            if ra.is_ok() {
                prop_assert_eq!(a, b);
            }
            // The pipeline's form says the same.
            let (mut c, mut m) = (FlowKey::default(), Meta::default());
            let rc = parse_into_meta(&frame, 3, rss, &mut c, &mut m).map(|()| m);
            prop_assert_eq!(rc, rb);
            if rc.is_ok() {
                prop_assert_eq!(c, b);
            }
        }
    }

    #[test]
    fn frames_with_the_same_fast_fields_parse_alike(
        s in arb_fast_or_any(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), prop::bool::weighted(0.7)), 1..6),
        tl in prop::option::weighted(0.2, 0u16..80),
        rss in any::<Option<u32>>(),
    ) {
        // Frame b is frame a with a few bytes changed: mostly bytes the fast
        // path ignores (IPv4 ID, TTL, checksum, TCP sequence numbers,
        // payload), sometimes any header byte; sometimes another total length.
        let a = s.build();
        let mut b = a.clone();
        let ignored: Vec<usize> = [18, 19, 22, 24, 25].into_iter().chain(38..46).chain(48..a.len()).filter(|&i| i < a.len()).collect();
        for (at, v, skip) in edits {
            let i = if skip { ignored[at.index(ignored.len())] } else { 12 + at.index(a.len().min(48) - 12) };
            b[i] = v;
        }
        if let Some(tl) = tl {
            b[16..18].copy_from_slice(&tl.to_be_bytes());
        }
        let (mut ka, mut ma) = (FlowKey::default(), Meta::default());
        if parse_fast(&a, 3, rss, &mut ka, &mut ma) && same_fast_fields(&a, &b) {
            // What the pipeline reuses for b is what b parses to.
            let mut kb = FlowKey::default();
            let mb = parse_into(&b, 3, rss, &mut kb);
            prop_assert_eq!(mb, Ok(ma));
            prop_assert_eq!(kb, ka);
        }
        // Symmetric, and false for frames of different lengths.
        prop_assert_eq!(same_fast_fields(&a, &b), same_fast_fields(&b, &a));
        prop_assert!(!same_fast_fields(&a, &a[..a.len() - 1]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&b, 0, None);
    }

    #[test]
    fn mutated_frames_never_panic(s in arb_spec(), at in any::<prop::sample::Index>(), v in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut f = s.build();
        let i = at.index(f.len());
        f[i] = v;
        let n = cut.index(f.len() + 1);
        let _ = parse(&f[..n], 0, None);
    }
}
