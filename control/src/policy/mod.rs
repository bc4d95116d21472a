//! Policies: one intermediate form that Kubernetes NetworkPolicy YAML and
//! Bulkhead TOML both translate into, and the loader that reads files all or
//! nothing.

pub mod bulkhead;
pub mod calico;
pub mod k8s;
pub mod load;

use crate::labels::LabelSelector;
use flowtable::Prefix;

use std::fmt;

pub use load::{load_files, parse_text, PolicySet};

/// The tier a policy is evaluated in. Tiers are evaluated in this order; the
/// first tier whose rule allows or denies decides, `pass` or no match goes on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum TierKind {
    /// Built in: cuts off workloads carrying the quarantine label.
    Quarantine,
    /// Admin guardrails: first match wins; no match falls through.
    Admin,
    /// Application policies (all Kubernetes NetworkPolicies): a workload selected
    /// by a policy of this tier for a direction is isolated in that direction.
    Application,
    /// Cluster defaults evaluated last: first match wins; no match falls through
    /// to the global default.
    Baseline,
}

impl TierKind {
    /// All tiers, in evaluation order (index = tier index in the tables).
    pub const ALL: [TierKind; 4] = [
        TierKind::Quarantine,
        TierKind::Admin,
        TierKind::Application,
        TierKind::Baseline,
    ];

    /// Index in the tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            TierKind::Quarantine => "quarantine",
            TierKind::Admin => "admin",
            TierKind::Application => "application",
            TierKind::Baseline => "baseline",
        }
    }

    /// Parses a tier name (Calico's `default` is the application tier).
    pub fn parse(s: &str) -> Option<TierKind> {
        match s {
            "admin" | "security" | "platform" => Some(TierKind::Admin),
            "application" | "app" | "default" => Some(TierKind::Application),
            "baseline" => Some(TierKind::Baseline),
            _ => None,
        }
    }
}

/// What a policy rule does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RuleAction {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
    /// Hand the decision to the next tier.
    Pass,
    /// Log and go on (never decides).
    Log,
}

/// Which namespaces a pod peer spans.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum NsScope {
    /// The policy's own namespace (every namespace for a cluster-wide policy).
    Same,
    /// Namespaces matching the selector (empty = all).
    Select(LabelSelector),
}

/// Reserved peers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Entity {
    /// Everything outside the model.
    World,
    /// This host.
    Host,
    /// Every workload.
    Cluster,
    /// Anything.
    All,
}

/// One peer of a rule.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Peer {
    /// Workloads by namespace and labels (AND).
    Pods {
        /// Namespaces.
        ns: NsScope,
        /// Workload labels.
        pods: LabelSelector,
    },
    /// Addresses in `cidr` but in none of `except`.
    Cidr {
        /// The block.
        cidr: Prefix,
        /// Holes.
        except: Vec<Prefix>,
    },
    /// A reserved peer.
    Entity(Entity),
}

/// A port reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum PortRef {
    /// A number (with an optional range end).
    Num(u16, Option<u16>),
    /// A named container port of the destination workload.
    Named(String),
}

/// One port entry: protocol (None = any) and port (None = all ports).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PortSpec {
    /// IP protocol.
    pub proto: Option<u8>,
    /// Port.
    pub port: Option<PortRef>,
}

/// One rule of a policy, for one direction.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PolicyRule {
    /// Action.
    pub action: RuleAction,
    /// Peers (OR); `None` = any peer.
    pub peers: Option<Vec<Peer>>,
    /// Ports (OR); empty = every port and protocol.
    pub ports: Vec<PortSpec>,
    /// Log flows this rule decides.
    pub log: bool,
}

/// Where a policy came from.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Origin {
    /// File.
    pub file: String,
    /// Line of the policy's name.
    pub line: usize,
    /// Source kind (`NetworkPolicy`, `bulkhead`, ...).
    pub kind: String,
}

/// A policy in the intermediate form.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Policy {
    /// Name, unique within its namespace (or cluster-wide).
    pub name: String,
    /// Namespace; `None` for cluster-wide policies.
    pub namespace: Option<String>,
    /// Tier.
    pub tier: TierKind,
    /// Lower evaluates first within the tier (0..=65535, default 1000).
    pub priority: u16,
    /// Evaluate and log only; never enforce.
    pub audit: bool,
    /// Selected workloads.
    pub selector: LabelSelector,
    /// Cluster-wide policies: namespaces whose workloads are selected (None = all).
    pub ns_selector: Option<LabelSelector>,
    /// Ingress rules; `None` when the policy does not govern ingress.
    pub ingress: Option<Vec<PolicyRule>>,
    /// Egress rules; `None` when the policy does not govern egress.
    pub egress: Option<Vec<PolicyRule>>,
    /// Where it came from.
    pub origin: Origin,
}

/// Default policy priority.
pub const DEFAULT_PRIORITY: u16 = 1000;

impl Policy {
    /// `namespace/name`, or `name` for cluster-wide policies.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// True if any rule uses a named port.
    pub fn uses_named_ports(&self) -> bool {
        self.rules().any(|(_, r)| {
            r.ports
                .iter()
                .any(|p| matches!(p.port, Some(PortRef::Named(_))))
        })
    }

    /// True if any selector depends on namespace labels.
    pub fn uses_ns_labels(&self) -> bool {
        self.ns_selector.is_some()
            || self.rules().any(|(_, r)| {
                r.peers.iter().flatten().any(|p| {
                    matches!(
                        p,
                        Peer::Pods {
                            ns: NsScope::Select(_),
                            ..
                        }
                    )
                })
            })
    }

    /// All rules with their direction (true = ingress).
    pub fn rules(&self) -> impl Iterator<Item = (bool, &PolicyRule)> + '_ {
        self.ingress
            .iter()
            .flatten()
            .map(|r| (true, r))
            .chain(self.egress.iter().flatten().map(|r| (false, r)))
    }
}

/// Global switches.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Settings {
    /// Deny ingress that no tier decides (zero trust).
    pub default_deny_ingress: bool,
    /// Deny egress that no tier decides (zero trust).
    pub default_deny_egress: bool,
    /// The quarantine label key.
    pub quarantine_key: String,
    /// The quarantine label value.
    pub quarantine_value: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_deny_ingress: false,
            default_deny_egress: false,
            quarantine_key: "bulkhead.io/quarantine".into(),
            quarantine_value: "true".into(),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pr = self
            .proto
            .map(crate::model::proto::name)
            .unwrap_or_else(|| "any".into());
        match &self.port {
            None => write!(f, "{pr}"),
            Some(PortRef::Num(p, None)) => write!(f, "{p}/{pr}"),
            Some(PortRef::Num(p, Some(e))) => write!(f, "{p}-{e}/{pr}"),
            Some(PortRef::Named(n)) => write!(f, "{n}/{pr}"),
        }
    }
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/64`, or a bare address) into a key prefix.
/// Host bits must be zero, as Kubernetes requires.
pub fn parse_cidr(s: &str) -> Result<Prefix, String> {
    let p = parse_cidr_masked(s)?;
    let ip: std::net::IpAddr = s
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| format!("bad CIDR `{s}`"))?;
    if p.addr != flowtable::key::addr_of(ip) {
        return Err(format!(
            "bad CIDR `{s}`: host bits set (network is {})",
            show_prefix(&p)
        ));
    }
    Ok(p)
}

/// Parses a CIDR, clearing host bits as Kubernetes (Go's `net.ParseCIDR`) does.
pub fn parse_cidr_masked(s: &str) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("bad CIDR `{s}`: bad address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match l {
        Some(l) => l
            .trim()
            .parse()
            .ok()
            .filter(|&n: &u8| n <= max)
            .ok_or_else(|| format!("bad CIDR `{s}`: prefix length"))?,
        None => max,
    };
    let p = match ip {
        std::net::IpAddr::V4(v4) => Prefix::v4(u32::from(v4), len),
        std::net::IpAddr::V6(_) => Prefix::new(flowtable::key::addr_of(ip), len),
    };
    Ok(p)
}

/// Renders a key prefix as a CIDR.
pub fn show_prefix(p: &Prefix) -> String {
    if p.len == 0 {
        return "any".into();
    }
    let ip = flowtable::key::ip_of(p.addr);
    if flowtable::key::is_v4(p.addr) && p.len >= 96 {
        format!("{ip}/{}", p.len - 96)
    } else {
        format!("{ip}/{}", p.len)
    }
}

/// `cidr` minus every `except`, as a minimal list of prefixes.
pub fn subtract(cidr: Prefix, except: &[Prefix]) -> Vec<Prefix> {
    let mut out = vec![cidr];
    for e in except {
        let mut next = Vec::new();
        for p in out {
            if e.len <= p.len && e.contains(p.addr) {
                continue; // p lies inside the hole
            }
            if e.len > p.len && p.contains(e.addr) {
                // Split p down towards e, keeping the siblings.
                let mut cur = p;
                while cur.len < e.len {
                    let l = cur.len + 1;
                    let bit = 1u128 << (128 - l as u32);
                    let lo = Prefix::new(cur.addr, l);
                    let hi = Prefix::new(cur.addr | bit, l);
                    let (towards, other) = if hi.contains(e.addr) {
                        (hi, lo)
                    } else {
                        (lo, hi)
                    };
                    next.push(other);
                    cur = towards;
                }
            } else {
                next.push(p);
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_carves_holes_exactly() {
        let c = parse_cidr("10.0.0.0/24").unwrap();
        let e = parse_cidr("10.0.0.128/25").unwrap();
        let e2 = parse_cidr("10.0.0.5/32").unwrap();
        let parts = subtract(c, &[e, e2]);
        for a in 0u32..256 {
            let addr = flowtable::key::v4_mapped(0x0a00_0000 | a);
            let inside = parts.iter().any(|p| p.contains(addr));
            assert_eq!(inside, a < 128 && a != 5, "address .{a}");
        }
        assert!(parse_cidr("10.0.0.1/24").unwrap_err().contains("host bits"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert_eq!(show_prefix(&parse_cidr("fd00::/64").unwrap()), "fd00::/64");
    }
}
