//! Match-action rules: the contract between the control plane (which compiles
//! policies into [`Rule`]s) and the classifier (which finds, for a [`FlowKey`],
//! the matching rule of highest priority).
//!
//! Ordering contract, shared by every classifier implementation and by the
//! brute-force reference [`LinearClassifier`]: among the rules that match a key,
//! the one with the highest `priority` wins; on equal priority the one with the
//! lowest [`RuleId`] wins. This makes every lookup deterministic.

use crate::key::{Addr, FlowKey};

/// A rule's identity, unique within one classifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct RuleId(pub u32);

/// An address prefix over the 16-byte key address space ([`crate::key`]).
/// `len` 0 matches every address of both families. Packed to 2-byte
/// alignment, so a [`Rule`] is 88 bytes rather than 128 (read `addr` by
/// value: `&p.addr` does not compile).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[repr(C, packed(2))]
pub struct Prefix {
    /// Network address; bits past `len` are zero.
    pub addr: Addr,
    /// Prefix length in bits over the 128-bit space, 0..=128.
    pub len: u8,
}

impl Prefix {
    /// Matches everything (both families).
    pub const ANY: Prefix = Prefix { addr: 0, len: 0 };

    /// The mask of this prefix as a 128-bit value.
    #[inline]
    pub const fn mask(&self) -> Addr {
        if self.len == 0 { 0 } else { u128::MAX << (128 - self.len as u32) }
    }

    /// Builds a prefix, clearing host bits. `len` above 128 is clamped.
    pub fn new(addr: Addr, len: u8) -> Self {
        let len = len.min(128);
        let p = Prefix { addr: 0, len };
        Prefix { addr: addr & p.mask(), len }
    }

    /// An IPv4 prefix `a/len` (a host-order u32, len 0..=32): matches IPv4 only.
    pub fn v4(a: u32, len: u8) -> Self {
        Self::new(crate::key::v4_mapped(a), 96 + len.min(32))
    }

    /// True if `a` lies inside this prefix.
    #[inline]
    pub const fn contains(&self, a: Addr) -> bool {
        (a & self.mask()) == self.addr
    }
}

/// An inclusive port range. `0..=65535` is "any".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRange {
    /// Lowest port matched.
    pub lo: u16,
    /// Highest port matched.
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };
    /// One port.
    pub const fn exact(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }
    /// True if `p` lies in the range.
    #[inline]
    pub const fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
    /// True for the full range.
    pub const fn is_any(&self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::ANY
    }
}

/// What a rule matches. `None` fields are wildcards.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Match {
    /// Input port, exact.
    pub in_port: Option<u16>,
    /// Source address prefix.
    pub src: Prefix,
    /// Destination address prefix.
    pub dst: Prefix,
    /// Source port range (ICMP: type).
    pub sport: PortRange,
    /// Destination port range (ICMP: code).
    pub dport: PortRange,
    /// IP protocol, exact.
    pub proto: Option<u8>,
    /// Source security identity, exact.
    pub src_id: Option<u32>,
    /// Destination security identity, exact.
    pub dst_id: Option<u32>,
}

impl Match {
    /// Matches every packet.
    pub const ANY: Match = Match {
        in_port: None,
        src: Prefix::ANY,
        dst: Prefix::ANY,
        sport: PortRange::ANY,
        dport: PortRange::ANY,
        proto: None,
        src_id: None,
        dst_id: None,
    };

    /// True if this match accepts `k`. The reference semantics every classifier reproduces.
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.in_port.is_none_or(|p| p == k.in_port)
            && self.proto.is_none_or(|p| p == k.proto)
            && self.src_id.is_none_or(|i| i == k.src_id)
            && self.dst_id.is_none_or(|i| i == k.dst_id)
            && self.src.contains(k.src)
            && self.dst.contains(k.dst)
            && self.sport.contains(k.sport)
            && self.dport.contains(k.dport)
    }
}

/// What to do with a packet whose best match is this rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it.
    #[default]
    Deny,
    /// Stop evaluating this tier; the next tier decides (Calico `Pass`).
    Pass,
}

/// A match-action rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Rule {
    /// Identity, unique within one classifier; breaks priority ties (lower wins).
    pub id: RuleId,
    /// Higher wins.
    pub priority: u32,
    /// What the rule matches.
    pub m: Match,
    /// What it does.
    pub action: Action,
    /// Opaque to flowtable: the control plane's reference to the policy and rule
    /// that produced this entry (for explain, flow records and audit mode).
    pub cookie: u64,
}

impl Rule {
    /// True if `self` beats `other` when both match (higher priority, then lower id).
    #[inline]
    pub fn beats(&self, other: &Rule) -> bool {
        (self.priority, core::cmp::Reverse(self.id)) > (other.priority, core::cmp::Reverse(other.id))
    }
}

/// The brute-force reference classifier: a list scanned in full on each lookup.
/// Every fast classifier is tested against it; it also serves tiny rule sets.
#[derive(Clone, Debug, Default)]
pub struct LinearClassifier {
    rules: Vec<Rule>,
}

impl LinearClassifier {
    /// An empty classifier.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a rule. Returns false (and changes nothing) if its id is taken.
    pub fn insert(&mut self, rule: Rule) -> bool {
        if self.rules.iter().any(|r| r.id == rule.id) {
            return false;
        }
        self.rules.push(rule);
        true
    }
    /// Removes the rule with this id, returning it.
    pub fn remove(&mut self, id: RuleId) -> Option<Rule> {
        let i = self.rules.iter().position(|r| r.id == id)?;
        Some(self.rules.swap_remove(i))
    }
    /// The best matching rule, per the ordering contract of this module.
    pub fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            if r.m.matches(k) && best.is_none_or(|b| r.beats(b)) {
                best = Some(r);
            }
        }
        best
    }
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    /// All rules, in no particular order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}


/// What every classifier offers the pipeline and the control plane: the best
/// matching rule for a key, per the ordering contract of this module.
pub trait RuleLookup {
    /// The best matching rule, or `None`.
    fn lookup(&self, k: &FlowKey) -> Option<&Rule>;
}

impl RuleLookup for LinearClassifier {
    fn lookup(&self, k: &FlowKey) -> Option<&Rule> {
        LinearClassifier::lookup(self, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn v4_prefix_never_matches_v6() {
        let p = Prefix::v4(0, 0);
        assert!(p.contains(crate::key::v4_mapped(0x0a000001)));
        assert!(!p.contains(1)); // ::1
        assert!(Prefix::ANY.contains(1));
    }

    #[test]
    fn a_rule_is_88_bytes() {
        // Prefixes are packed to 2-byte alignment (an aligned u128 made a
        // prefix 32 bytes and a rule 128): classifiers store every rule
        // whole, so this is most of their bytes per rule.
        assert_eq!(core::mem::size_of::<Prefix>(), 18);
        assert_eq!(core::mem::size_of::<Rule>(), 88);
    }

    #[test]
    fn priority_then_lowest_id_wins() {
        let k = FlowKey::v4(0, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 1000, 80);
        let mut c = LinearClassifier::new();
        assert!(c.insert(Rule { id: RuleId(5), priority: 10, m: Match::ANY, action: Action::Allow, cookie: 0 }));
        assert!(c.insert(Rule { id: RuleId(3), priority: 10, m: Match::ANY, action: Action::Deny, cookie: 0 }));
        assert!(!c.insert(Rule { id: RuleId(3), ..Default::default() }));
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(3));
        let m = Match { dport: PortRange::exact(80), ..Match::ANY };
        assert!(c.insert(Rule { id: RuleId(9), priority: 11, m, action: Action::Allow, cookie: 0 }));
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(9));
        assert_eq!(c.remove(RuleId(9)).unwrap().priority, 11);
        assert_eq!(c.lookup(&k).unwrap().id, RuleId(3));
    }
}
