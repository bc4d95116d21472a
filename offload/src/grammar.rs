//! testpmd's `flow` command grammar, parsed into [`FlowCommand`]s.
//!
//! ```text
//! flow validate|create PORT [group N] [priority N] [ingress] [egress] [transfer]
//!      pattern ITEM [FIELD OP VALUE]... / ... / end
//!      actions ACTION [ARGS] / ... / end
//! flow destroy PORT rule ID [rule ID]...
//! flow flush PORT
//! flow list PORT
//! flow query PORT ID count
//! ```
//! Items: `eth` (dst, src, type), `vlan` (tci), `ipv4` and `ipv6` (src, dst, proto),
//! `tcp`, `udp`, `sctp` (src, dst), `icmp` (type, code). Field operators: `is V`
//! (exact), `spec V` and `mask M`, `prefix LEN` (after a spec). Actions: `drop`,
//! `mark id N`, `queue index N`, `rss queues N... end`, `count`, `jump group N`,
//! `represented_port ethdev_port_id N`. Numbers are decimal or 0x-hex.
//!
//! The parser never panics on any input (it is fuzzed); errors name the token.

use crate::spec::{Attr, FlowAction, FlowSpec, Item, Masked};
use core::net::{Ipv4Addr, Ipv6Addr};

/// A parsed `flow` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowCommand {
    /// `flow validate ...`
    Validate(FlowSpec),
    /// `flow create ...`
    Create(FlowSpec),
    /// `flow destroy PORT rule ID...`
    Destroy {
        /// Port.
        port: u16,
        /// Rule ids.
        rules: Vec<u32>,
    },
    /// `flow flush PORT`
    Flush(u16),
    /// `flow list PORT`
    List(u16),
    /// `flow query PORT ID count`
    Query {
        /// Port.
        port: u16,
        /// Rule id.
        rule: u32,
    },
}

/// Why a `flow` line did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("flow: {msg} (at token {pos}: {tok:?})")]
pub struct FlowParseError {
    /// What was wrong.
    pub msg: String,
    /// 0-based token index.
    pub pos: usize,
    /// The token ("" at end of line).
    pub tok: String,
}

struct P<'a> {
    t: Vec<&'a str>,
    i: usize,
}

type R<T> = Result<T, FlowParseError>;

impl<'a> P<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(FlowParseError { msg: msg.into(), pos: self.i, tok: self.t.get(self.i).unwrap_or(&"").to_string() })
    }
    fn peek(&self) -> Option<&'a str> {
        self.t.get(self.i).copied()
    }
    fn next(&mut self, what: &str) -> R<&'a str> {
        match self.peek() {
            Some(t) => {
                self.i += 1;
                Ok(t)
            }
            None => self.err(format!("expected {what}, found end of line")),
        }
    }
    fn expect(&mut self, w: &str) -> R<()> {
        let t = self.next(w)?;
        if t == w {
            Ok(())
        } else {
            self.i -= 1;
            self.err(format!("expected \"{w}\""))
        }
    }
    fn num<T: TryFrom<u128>>(&mut self, what: &str) -> R<T> {
        let t = self.next(what)?;
        let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u128::from_str_radix(h, 16).ok()
        } else {
            t.parse::<u128>().ok()
        };
        match v.and_then(|v| T::try_from(v).ok()) {
            Some(v) => Ok(v),
            None => {
                self.i -= 1;
                self.err(format!("expected {what} (a number in range)"))
            }
        }
    }
}

/// Parses one `flow ...` line.
pub fn parse_flow(line: &str) -> Result<FlowCommand, FlowParseError> {
    let mut p = P { t: line.split_whitespace().collect(), i: 0 };
    p.expect("flow")?;
    let verb = p.next("a flow verb (validate create destroy flush list query)")?;
    let port: u16 = p.num("a port id")?;
    let cmd = match verb {
        "validate" | "create" => {
            let spec = parse_rule(&mut p, port)?;
            if verb == "create" { FlowCommand::Create(spec) } else { FlowCommand::Validate(spec) }
        }
        "destroy" => {
            let mut rules = Vec::new();
            while p.peek().is_some() {
                p.expect("rule")?;
                rules.push(p.num("a rule id")?);
            }
            if rules.is_empty() {
                return p.err("expected \"rule ID\"");
            }
            FlowCommand::Destroy { port, rules }
        }
        "flush" => FlowCommand::Flush(port),
        "list" => FlowCommand::List(port),
        "query" => {
            let rule = p.num("a rule id")?;
            p.expect("count")?;
            FlowCommand::Query { port, rule }
        }
        _ => {
            p.i = 1;
            return p.err("unknown flow verb (validate create destroy flush list query)");
        }
    };
    if p.peek().is_some() {
        return p.err("unexpected trailing token");
    }
    Ok(cmd)
}

fn parse_rule(p: &mut P<'_>, port: u16) -> R<FlowSpec> {
    let mut attr = Attr::default();
    loop {
        match p.next("attributes or \"pattern\"")? {
            "group" => attr.group = p.num("a group")?,
            "priority" => attr.priority = p.num("a priority")?,
            "ingress" => attr.ingress = true,
            "egress" => attr.egress = true,
            "transfer" => attr.transfer = true,
            "pattern" => break,
            _ => {
                p.i -= 1;
                return p.err("expected group, priority, ingress, egress, transfer or pattern");
            }
        }
    }
    if !(attr.ingress || attr.egress || attr.transfer) {
        p.i -= 1;
        return p.err("a rule needs ingress, egress or transfer");
    }
    let mut pattern = Vec::new();
    loop {
        let name = p.next("an item or \"end\"")?;
        if name == "end" {
            break;
        }
        pattern.push(parse_item(p, name)?);
    }
    p.expect("actions")?;
    let mut actions = Vec::new();
    loop {
        let name = p.next("an action or \"end\"")?;
        if name == "end" {
            break;
        }
        actions.push(parse_action(p, name)?);
        p.expect("/")?;
    }
    if actions.is_empty() {
        return p.err("a rule needs at least one action");
    }
    Ok(FlowSpec { port, attr, pattern, actions })
}

/// Applies `OP VALUE` to a masked field. `full` is the all-ones mask; `bits` its width.
fn field_op<T: Copy>(
    p: &mut P<'_>,
    m: &mut Masked<T>,
    full: T,
    bits: u32,
    val: &dyn Fn(&mut P<'_>) -> R<T>,
    prefix_mask: &dyn Fn(u32) -> T,
) -> R<()> {
    match p.next("is, spec, mask or prefix")? {
        "is" => {
            m.spec = val(p)?;
            m.mask = full;
        }
        "spec" => {
            m.spec = val(p)?;
            // testpmd: a spec without a mask uses the item's default (full) mask.
            m.mask = full;
        }
        "mask" => m.mask = val(p)?,
        "prefix" => {
            let len: u32 = p.num("a prefix length")?;
            if len > bits {
                p.i -= 1;
                return p.err(format!("prefix longer than {bits} bits"));
            }
            m.mask = prefix_mask(len);
        }
        "last" => {
            p.i -= 1;
            return p.err("\"last\" (ranges) is not supported");
        }
        _ => {
            p.i -= 1;
            return p.err("expected is, spec, mask or prefix");
        }
    }
    Ok(())
}

fn parse_item(p: &mut P<'_>, name: &str) -> R<Item> {
    let any16 = Masked::<u16>::any();
    let mut item = match name {
        "eth" => Item::Eth { dst: Masked::any(), src: Masked::any(), ty: any16 },
        "vlan" => Item::Vlan { tci: any16 },
        "ipv4" => Item::Ipv4 { src: Masked::any(), dst: Masked::any(), proto: Masked::any() },
        "ipv6" => Item::Ipv6 { src: Masked::any(), dst: Masked::any(), proto: Masked::any() },
        "tcp" => Item::Tcp { src: any16, dst: any16 },
        "udp" => Item::Udp { src: any16, dst: any16 },
        "sctp" => Item::Sctp { src: any16, dst: any16 },
        "icmp" => Item::Icmp { ty: Masked::any(), code: Masked::any() },
        _ => {
            p.i -= 1;
            return p.err("unknown item (eth vlan ipv4 ipv6 tcp udp sctp icmp)");
        }
    };
    let mac = |p: &mut P<'_>| -> R<u64> {
        let t = p.next("a MAC address")?;
        let parts: Vec<&str> = t.split(':').collect();
        let mut v = 0u64;
        if parts.len() != 6 {
            p.i -= 1;
            return p.err("expected a MAC address like 02:00:00:00:00:01");
        }
        for x in parts {
            match u8::from_str_radix(x, 16) {
                Ok(b) if x.len() <= 2 => v = (v << 8) | b as u64,
                _ => {
                    p.i -= 1;
                    return p.err("expected a MAC address like 02:00:00:00:00:01");
                }
            }
        }
        Ok(v)
    };
    let ip4 = |p: &mut P<'_>| -> R<u32> {
        let t = p.next("an IPv4 address")?;
        match t.parse::<Ipv4Addr>() {
            Ok(a) => Ok(a.into()),
            Err(_) => {
                p.i -= 1;
                p.err("expected an IPv4 address")
            }
        }
    };
    let ip6 = |p: &mut P<'_>| -> R<u128> {
        let t = p.next("an IPv6 address")?;
        match t.parse::<Ipv6Addr>() {
            Ok(a) => Ok(a.into()),
            Err(_) => {
                p.i -= 1;
                p.err("expected an IPv6 address")
            }
        }
    };
    let n8 = |p: &mut P<'_>| p.num::<u8>("a number 0..=255");
    let n16 = |p: &mut P<'_>| p.num::<u16>("a number 0..=65535");
    let m48 = |l: u32| if l == 0 { 0 } else { (u64::MAX << (48 - l)) & 0xffff_ffff_ffff };
    let m32 = |l: u32| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    let m128 = |l: u32| if l == 0 { 0 } else { u128::MAX << (128 - l) };
    let m16 = |l: u32| if l == 0 { 0 } else { u16::MAX << (16 - l) };
    let m8 = |l: u32| if l == 0 { 0 } else { u8::MAX << (8 - l) };
    loop {
        let f = p.next("a field or \"/\"")?;
        if f == "/" {
            return Ok(item);
        }
        let ok = match (&mut item, f) {
            (Item::Eth { dst, .. }, "dst") => field_op(p, dst, 0xffff_ffff_ffff, 48, &mac, &m48),
            (Item::Eth { src, .. }, "src") => field_op(p, src, 0xffff_ffff_ffff, 48, &mac, &m48),
            (Item::Eth { ty, .. }, "type") => field_op(p, ty, u16::MAX, 16, &n16, &m16),
            (Item::Vlan { tci }, "tci") => field_op(p, tci, u16::MAX, 16, &n16, &m16),
            (Item::Ipv4 { src, .. }, "src") => field_op(p, src, u32::MAX, 32, &ip4, &m32),
            (Item::Ipv4 { dst, .. }, "dst") => field_op(p, dst, u32::MAX, 32, &ip4, &m32),
            (Item::Ipv4 { proto, .. }, "proto") => field_op(p, proto, u8::MAX, 8, &n8, &m8),
            (Item::Ipv6 { src, .. }, "src") => field_op(p, src, u128::MAX, 128, &ip6, &m128),
            (Item::Ipv6 { dst, .. }, "dst") => field_op(p, dst, u128::MAX, 128, &ip6, &m128),
            (Item::Ipv6 { proto, .. }, "proto") => field_op(p, proto, u8::MAX, 8, &n8, &m8),
            (Item::Tcp { src, .. } | Item::Udp { src, .. } | Item::Sctp { src, .. }, "src") => {
                field_op(p, src, u16::MAX, 16, &n16, &m16)
            }
            (Item::Tcp { dst, .. } | Item::Udp { dst, .. } | Item::Sctp { dst, .. }, "dst") => {
                field_op(p, dst, u16::MAX, 16, &n16, &m16)
            }
            (Item::Icmp { ty, .. }, "type") => field_op(p, ty, u8::MAX, 8, &n8, &m8),
            (Item::Icmp { code, .. }, "code") => field_op(p, code, u8::MAX, 8, &n8, &m8),
            _ => {
                p.i -= 1;
                p.err(format!("unknown field for {name}, or missing \"/\""))
            }
        };
        ok?;
    }
}

fn parse_action(p: &mut P<'_>, name: &str) -> R<FlowAction> {
    Ok(match name {
        "drop" => FlowAction::Drop,
        "count" => FlowAction::Count,
        "mark" => {
            p.expect("id")?;
            FlowAction::Mark(p.num("a mark id")?)
        }
        "queue" => {
            p.expect("index")?;
            FlowAction::Queue(p.num("a queue index")?)
        }
        "jump" => {
            p.expect("group")?;
            FlowAction::Jump(p.num("a group")?)
        }
        "represented_port" => {
            p.expect("ethdev_port_id")?;
            FlowAction::RepresentedPort(p.num("a port id")?)
        }
        "rss" => {
            p.expect("queues")?;
            let mut qs = Vec::new();
            loop {
                if p.peek() == Some("end") {
                    p.i += 1;
                    break;
                }
                qs.push(p.num("a queue index or \"end\"")?);
            }
            FlowAction::Rss(qs)
        }
        _ => {
            p.i -= 1;
            return p.err("unknown action (drop mark queue rss count jump represented_port)");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtable::FlowKey;
    use proptest::prelude::*;

    #[test]
    fn parses_the_testpmd_example() {
        let c = parse_flow(
            "flow create 0 ingress pattern eth / ipv4 dst spec 10.0.0.0 dst mask 255.0.0.0 / tcp dst is 443 / end actions drop / end",
        )
        .unwrap();
        let FlowCommand::Create(s) = c else { panic!("{c:?}") };
        assert_eq!(s.port, 0);
        assert!(s.attr.ingress);
        assert_eq!(s.pattern[1], Item::Ipv4 { src: Masked::any(), dst: Masked { spec: 0x0a00_0000, mask: 0xff00_0000 }, proto: Masked::any() });
        assert_eq!(s.pattern[2], Item::Tcp { src: Masked::any(), dst: Masked::is(443) });
        assert_eq!(s.actions, vec![FlowAction::Drop]);
        assert_eq!(
            s.to_string(),
            "flow create 0 ingress pattern eth / ipv4 dst spec 10.0.0.0 dst mask 255.0.0.0 / tcp dst is 443 / end actions drop / end"
        );
    }

    #[test]
    fn other_verbs_and_errors() {
        assert_eq!(parse_flow("flow destroy 1 rule 3 rule 4").unwrap(), FlowCommand::Destroy { port: 1, rules: vec![3, 4] });
        assert_eq!(parse_flow("flow flush 0").unwrap(), FlowCommand::Flush(0));
        assert_eq!(parse_flow("flow list 2").unwrap(), FlowCommand::List(2));
        assert_eq!(parse_flow("flow query 0 7 count").unwrap(), FlowCommand::Query { port: 0, rule: 7 });
        let e = parse_flow("flow create 0 ingress pattern eth / ipv4 dst is 300.1.1.1 / end actions drop / end").unwrap_err();
        assert!(e.msg.contains("IPv4"), "{e}");
        assert_eq!(e.tok, "300.1.1.1");
        let e = parse_flow("flow create 0 pattern eth / end actions drop / end").unwrap_err();
        assert!(e.msg.contains("ingress"), "{e}");
        let e = parse_flow("flow create 0 ingress pattern eth / end actions / end").unwrap_err();
        assert!(e.msg.contains("action"), "{e}");
        assert!(parse_flow("flow create 0 ingress pattern ipv4 src prefix 40 / end actions drop / end").is_err());
        assert!(parse_flow("flow create 0 ingress pattern tcp dst is 70000 / end actions drop / end").is_err());
        assert!(parse_flow("flow bogus 0").is_err());
        assert!(parse_flow("flow create 0 ingress pattern eth / end actions drop / end extra").is_err());
    }

    #[test]
    fn prefix_and_rss_and_mark() {
        let c = parse_flow(
            "flow create 3 group 1 priority 2 ingress pattern eth type is 0x0800 / ipv4 src spec 192.168.0.0 src prefix 16 / udp / end actions mark id 42 / rss queues 0 1 end / count / end",
        )
        .unwrap();
        let FlowCommand::Create(s) = c else { panic!() };
        assert_eq!((s.attr.group, s.attr.priority), (1, 2));
        assert_eq!(s.pattern[1], Item::Ipv4 { src: Masked { spec: 0xc0a8_0000, mask: 0xffff_0000 }, dst: Masked::any(), proto: Masked::any() });
        assert_eq!(s.actions, vec![FlowAction::Mark(42), FlowAction::Rss(vec![0, 1]), FlowAction::Count]);
        // printed form parses back to the same rule
        let again = parse_flow(&s.to_string()).unwrap();
        assert_eq!(again, FlowCommand::Create(s));
    }

    fn arb_masked16() -> impl Strategy<Value = Masked<u16>> {
        prop_oneof![Just(Masked::any()), any::<u16>().prop_map(Masked::is), (any::<u16>(), 1u32..=16).prop_map(|(v, l)| {
            let m = u16::MAX << (16 - l);
            Masked { spec: v & m, mask: m }
        })]
    }

    proptest! {
        #[test]
        fn printer_and_parser_round_trip(
            src in any::<u32>(), sl in 0u32..=32, dport in arb_masked16(), sport in arb_masked16(),
            proto in prop_oneof![Just(6u8), Just(17), Just(132)], mark in any::<u32>(), v6 in any::<bool>(),
            a6 in any::<u128>(), drop in any::<bool>()
        ) {
            let l3 = if v6 {
                Item::Ipv6 { src: Masked::any(), dst: Masked::is(a6), proto: Masked::any() }
            } else {
                let m = if sl == 0 { 0 } else { u32::MAX << (32 - sl) };
                Item::Ipv4 { src: Masked { spec: src & m, mask: m }, dst: Masked::any(), proto: Masked::any() }
            };
            let l4 = match proto { 6 => Item::Tcp { src: sport, dst: dport }, 17 => Item::Udp { src: sport, dst: dport }, _ => Item::Sctp { src: sport, dst: dport } };
            let actions = if drop { vec![FlowAction::Drop] } else { vec![FlowAction::Mark(mark), FlowAction::Queue(0)] };
            let s = FlowSpec { port: 0, attr: Attr { ingress: true, ..Default::default() }, pattern: vec![l3, l4], actions };
            prop_assert_eq!(parse_flow(&s.to_string()).unwrap(), FlowCommand::Create(s));
        }

        #[test]
        fn never_panics(line in "flow [a-z0-9 ./:]{0,80}") {
            let _ = parse_flow(&line);
        }
    }

    #[test]
    fn exact_rule_matches_only_its_flow() {
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 1234, 80);
        let s = FlowSpec::exact(0, &k, vec![FlowAction::Drop]);
        let h = crate::spec::Headers { eth_type: 0x0800, key: k, ..Default::default() };
        assert!(s.matches(&h));
        let mut other = h;
        other.key.dport = 81;
        assert!(!s.matches(&other));
        let printed = s.to_string();
        assert_eq!(printed, "flow create 0 ingress pattern eth / ipv4 src is 10.0.0.1 dst is 10.0.0.2 / tcp src is 1234 dst is 80 / end actions drop / end");
    }
}
