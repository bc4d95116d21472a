//! Policy tables: how compiled rules are evaluated for one packet.
//!
//! A connection from A to B needs both A's egress policy and B's ingress policy
//! to allow it (Kubernetes NetworkPolicy semantics). Each direction is decided
//! through an ordered list of tiers (quarantine, admin, application, ...):
//!
//! ```text
//! for tier in tiers (first to last):
//!     r = tier.<direction>.lookup(key)
//!     Allow | Deny -> that is the verdict of this direction
//!     Pass | None  -> go on with the next tier
//! no tier decided  -> the direction's default (allow, or deny under zero trust)
//! ```
//!
//! Isolation ("a pod selected by some ingress policy denies what no policy
//! allows") is compiled by the control plane into low-priority deny rules of
//! the tier, so it needs no special case here.

use crate::key::FlowKey;
use crate::rule::{Action, Rule, RuleLookup};

/// The direction a rule table applies to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Evaluated for the source workload.
    Egress,
    /// Evaluated for the destination workload.
    Ingress,
}

/// One tier: a rule table per direction.
#[derive(Clone, Debug, Default)]
pub struct Tier<C> {
    /// Name shown in explain output and flow records.
    pub name: String,
    /// Egress rules (decided at the source).
    pub egress: C,
    /// Ingress rules (decided at the destination).
    pub ingress: C,
}

impl<C> Tier<C> {
    /// The table for a direction.
    pub fn table(&self, d: Direction) -> &C {
        match d {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }
    /// The table for a direction, mutable.
    pub fn table_mut(&mut self, d: Direction) -> &mut C {
        match d {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }
}

/// The verdict of one direction and what decided it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decision {
    /// Allow or Deny (never Pass).
    pub action: Action,
    /// The deciding rule, or `None` when the default applied.
    pub rule: Option<Rule>,
    /// Index of the deciding tier (`tiers.len()` for the default).
    pub tier: usize,
}

/// Both directions' decisions for one packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Verdict {
    /// The source's egress decision.
    pub egress: Decision,
    /// The destination's ingress decision.
    pub ingress: Decision,
}

impl Verdict {
    /// True when both directions allow.
    pub fn allowed(&self) -> bool {
        self.egress.action == Action::Allow && self.ingress.action == Action::Allow
    }
    /// The decision that denied (egress first), if any.
    pub fn denied_by(&self) -> Option<&Decision> {
        [&self.egress, &self.ingress].into_iter().find(|d| d.action != Action::Allow)
    }
}

/// Ordered tiers plus per-direction defaults.
#[derive(Clone, Debug)]
pub struct PolicyTables<C> {
    /// Evaluated first to last.
    pub tiers: Vec<Tier<C>>,
    /// Verdict when no tier decides egress.
    pub default_egress: Action,
    /// Verdict when no tier decides ingress.
    pub default_ingress: Action,
}

impl<C> Default for PolicyTables<C> {
    fn default() -> Self {
        Self { tiers: Vec::new(), default_egress: Action::Allow, default_ingress: Action::Allow }
    }
}

impl<C: RuleLookup> PolicyTables<C> {
    /// Decides one direction for `k` (the key as seen on the wire: src -> dst).
    #[inline]
    pub fn decide_dir(&self, d: Direction, k: &FlowKey) -> Decision {
        for (i, t) in self.tiers.iter().enumerate() {
            if let Some(r) = t.table(d).lookup(k) {
                match r.action {
                    Action::Allow | Action::Deny => {
                        return Decision { action: r.action, rule: Some(*r), tier: i };
                    }
                    Action::Pass => continue,
                }
            }
        }
        let action = match d {
            Direction::Egress => self.default_egress,
            Direction::Ingress => self.default_ingress,
        };
        Decision { action, rule: None, tier: self.tiers.len() }
    }

    /// Decides both directions for `k`.
    #[inline]
    pub fn decide(&self, k: &FlowKey) -> Verdict {
        Verdict { egress: self.decide_dir(Direction::Egress, k), ingress: self.decide_dir(Direction::Ingress, k) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{LinearClassifier, Match, RuleId};
    use core::net::Ipv4Addr;

    fn rule(id: u32, prio: u32, m: Match, action: Action) -> Rule {
        Rule { id: RuleId(id), priority: prio, m, action, cookie: 0 }
    }

    #[test]
    fn pass_hands_over_and_both_directions_must_allow() {
        let mut admin = Tier::<LinearClassifier> { name: "admin".into(), ..Default::default() };
        let mut app = Tier::<LinearClassifier> { name: "app".into(), ..Default::default() };
        let web = Match { src_id: Some(7), ..Match::ANY };
        admin.egress.insert(rule(1, 10, web, Action::Pass));
        admin.egress.insert(rule(2, 1, Match::ANY, Action::Deny));
        app.egress.insert(rule(3, 5, web, Action::Allow));
        app.ingress.insert(rule(4, 5, Match { dst_id: Some(8), ..Match::ANY }, Action::Deny));
        let t = PolicyTables { tiers: vec![admin, app], ..Default::default() };
        let mut k = FlowKey::v4(0, Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), 6, 1, 80);
        k.src_id = 7;
        k.dst_id = 9;
        let v = t.decide(&k);
        assert!(v.allowed());
        assert_eq!(v.egress.rule.unwrap().id, RuleId(3));
        assert_eq!(v.egress.tier, 1);
        assert_eq!(v.ingress.rule, None);
        k.dst_id = 8;
        let v = t.decide(&k);
        assert!(!v.allowed());
        assert_eq!(v.denied_by().unwrap().rule.unwrap().id, RuleId(4));
        k.src_id = 1;
        assert_eq!(t.decide_dir(Direction::Egress, &k).rule.unwrap().id, RuleId(2));
    }
}
