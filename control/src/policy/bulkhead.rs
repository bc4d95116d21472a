//! Bulkhead's TOML policy format: a superset of NetworkPolicy with explicit
//! deny, log and pass, tiers and priorities, cluster-wide policies, audit mode,
//! and global settings (zero trust, quarantine label). See docs/policy-format.md.

use super::k8s::{valid_port_name, StrictCidr as Cidr};
use super::{
    Entity, NsScope, Origin, Peer, Policy, PolicyRule, PortRef, PortSpec, RuleAction, Settings,
    TierKind,
};
use crate::labels::LabelSelector;
use crate::model::proto;
use serde::{Deserialize, Deserializer};

/// A policy file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Global switches.
    #[serde(default)]
    pub settings: Option<FileSettings>,
    /// Policies.
    #[serde(default)]
    pub policy: Vec<TomlPolicy>,
}

/// `[settings]`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Zero trust: deny both directions when no tier decides.
    #[serde(default)]
    pub default_deny: Option<bool>,
    /// Deny ingress when no tier decides.
    #[serde(default)]
    pub default_deny_ingress: Option<bool>,
    /// Deny egress when no tier decides.
    #[serde(default)]
    pub default_deny_egress: Option<bool>,
    /// `key=value` label that quarantines a workload.
    #[serde(default)]
    pub quarantine_label: Option<String>,
}

impl FileSettings {
    /// Applies these settings over `s`.
    pub fn apply(&self, s: &mut Settings) -> Result<(), String> {
        if let Some(d) = self.default_deny {
            s.default_deny_ingress = d;
            s.default_deny_egress = d;
        }
        if let Some(d) = self.default_deny_ingress {
            s.default_deny_ingress = d;
        }
        if let Some(d) = self.default_deny_egress {
            s.default_deny_egress = d;
        }
        if let Some(q) = &self.quarantine_label {
            let (k, v) = q.split_once('=').unwrap_or((q.as_str(), "true"));
            if k.trim().is_empty() {
                return Err(format!("quarantine_label: bad label `{q}`"));
            }
            s.quarantine_key = k.trim().to_string();
            s.quarantine_value = v.trim().to_string();
        }
        Ok(())
    }
}

/// A label selector in string form (`app=web,env in (prod)`), checked while parsing.
#[derive(Debug, Clone, Default)]
pub struct Sel(pub LabelSelector);

impl<'de> Deserialize<'de> for Sel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LabelSelector::parse(&s)
            .map(Sel)
            .map_err(serde::de::Error::custom)
    }
}

/// A tier name, checked while parsing.
#[derive(Debug, Clone, Copy)]
pub struct TierName(pub TierKind);

impl<'de> Deserialize<'de> for TierName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TierKind::parse(&s).map(TierName).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown tier `{s}` (admin, application, baseline)"))
        })
    }
}

/// A port entry in string form: `80`, `80/tcp`, `8000-8080/udp`, `http`, `http/tcp`, `udp`.
#[derive(Debug, Clone)]
pub struct PortStr(pub PortSpec);

/// Parses a port entry (see [`PortStr`]).
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    let s = s.trim();
    let (p, pr) = match s.split_once('/') {
        Some((p, pr)) => (p, Some(pr)),
        None => (s, None),
    };
    let pr_num = match pr {
        Some(pr) => Some(proto::parse(pr).ok_or_else(|| format!("bad protocol `{pr}` in `{s}`"))?),
        None => None,
    };
    if pr.is_none() && !p.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        if let Some(n) = proto::parse(p) {
            return Ok(PortSpec {
                proto: Some(n),
                port: None,
            });
        }
        if p == "any" {
            return Ok(PortSpec {
                proto: None,
                port: None,
            });
        }
    }
    let num = |t: &str| -> Result<u16, String> {
        let n: i64 = t
            .trim()
            .parse()
            .map_err(|_| format!("bad port `{t}` in `{s}`"))?;
        if (1..=65535).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("port {n} out of range 1-65535"))
        }
    };
    let port = if p
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
        && p.chars().next().is_some_and(|c| c.is_ascii_digit())
    {
        match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!("port range end {b} is below start {a}"));
                }
                PortRef::Num(a, Some(b))
            }
            None => PortRef::Num(num(p)?, None),
        }
    } else if valid_port_name(p) {
        PortRef::Named(p.to_string())
    } else if p.contains('-')
        && p.split('-')
            .all(|x| x.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(format!("named port `{p}` cannot be a range"));
    } else {
        return Err(format!("bad port `{p}`"));
    };
    Ok(PortSpec {
        proto: Some(pr_num.unwrap_or(proto::TCP)),
        port: Some(port),
    })
}

impl<'de> Deserialize<'de> for PortStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_port(&s)
            .map(PortStr)
            .map_err(serde::de::Error::custom)
    }
}

/// A peer: `selector` and/or `namespaces` (AND), or `cidr` (+ `except`), or `entity`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TomlPeer {
    /// Workload labels.
    #[serde(default)]
    pub selector: Option<Sel>,
    /// Namespace labels (`""` = all namespaces); absent = the policy's namespace.
    #[serde(default)]
    pub namespaces: Option<Sel>,
    /// Address block.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    /// Holes in `cidr`.
    #[serde(default)]
    pub except: Vec<Cidr>,
    /// `world`, `host`, `cluster` or `all`.
    #[serde(default)]
    pub entity: Option<String>,
}

/// A rule.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TomlRule {
    /// `allow` (default), `deny`, `pass` or `log`.
    #[serde(default)]
    pub action: Option<String>,
    /// Sources (ingress).
    #[serde(default)]
    pub from: Option<Vec<TomlPeer>>,
    /// Destinations (egress).
    #[serde(default)]
    pub to: Option<Vec<TomlPeer>>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<PortStr>,
    /// Log flows this rule decides.
    #[serde(default)]
    pub log: bool,
}

/// A policy.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TomlPolicy {
    /// Name.
    pub name: String,
    /// Namespace; absent = cluster-wide.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Tier (default `application`).
    #[serde(default)]
    pub tier: Option<TierName>,
    /// Lower evaluates first (default 1000).
    #[serde(default)]
    pub priority: Option<u16>,
    /// Evaluate and log only.
    #[serde(default)]
    pub audit: bool,
    /// Selected workloads (default: all).
    #[serde(default)]
    pub selector: Option<Sel>,
    /// Cluster-wide: namespaces whose workloads are selected.
    #[serde(default)]
    pub namespaces: Option<Sel>,
    /// `ingress`, `egress` (default: the directions that have rules).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Vec<TomlRule>,
    /// Egress rules.
    #[serde(default)]
    pub egress: Vec<TomlRule>,
}

fn peer(p: &TomlPeer, what: &str) -> Result<Peer, String> {
    let n = [
        p.selector.is_some() || p.namespaces.is_some(),
        p.cidr.is_some(),
        p.entity.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if n != 1 {
        return Err(format!(
            "{what}: a peer has exactly one of selector/namespaces, cidr, entity"
        ));
    }
    if let Some(c) = &p.cidr {
        for e in &p.except {
            if !(e.0.len > c.0.len && c.0.contains(e.0.addr)) {
                return Err(format!(
                    "except: {} is not inside {}",
                    super::show_prefix(&e.0),
                    super::show_prefix(&c.0)
                ));
            }
        }
        return Ok(Peer::Cidr {
            cidr: c.0,
            except: p.except.iter().map(|e| e.0).collect(),
        });
    }
    if !p.except.is_empty() {
        return Err("except: only with cidr".into());
    }
    if let Some(e) = &p.entity {
        let e = match e.as_str() {
            "world" => Entity::World,
            "host" => Entity::Host,
            "cluster" => Entity::Cluster,
            "all" => Entity::All,
            x => {
                return Err(format!(
                    "entity: unknown entity `{x}` (world, host, cluster, all)"
                ))
            }
        };
        return Ok(Peer::Entity(e));
    }
    Ok(Peer::Pods {
        ns: match &p.namespaces {
            Some(s) => NsScope::Select(s.0.clone()),
            None => NsScope::Same,
        },
        pods: p.selector.clone().unwrap_or_default().0,
    })
}

fn rule(r: &TomlRule, ingress: bool) -> Result<PolicyRule, String> {
    let action = match r.action.as_deref().unwrap_or("allow") {
        "allow" => RuleAction::Allow,
        "deny" => RuleAction::Deny,
        "pass" => RuleAction::Pass,
        "log" => RuleAction::Log,
        x => {
            return Err(format!(
                "action: unknown action `{x}` (allow, deny, pass, log)"
            ))
        }
    };
    let (peers, wrong, field) = if ingress {
        (&r.from, &r.to, "to")
    } else {
        (&r.to, &r.from, "from")
    };
    if wrong.is_some() {
        return Err(format!(
            "{field}: not allowed in an {} rule",
            if ingress { "ingress" } else { "egress" }
        ));
    }
    let peers = match peers {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(
            v.iter()
                .map(|p| peer(p, if ingress { "from" } else { "to" }))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(PolicyRule {
        action,
        peers,
        ports: r.ports.iter().map(|p| p.0.clone()).collect(),
        log: r.log,
    })
}

impl TomlPolicy {
    /// Translates to the intermediate form.
    pub fn to_policy(&self, file: &str, line: usize) -> Result<Policy, String> {
        let (mut ing, mut eg) = (!self.ingress.is_empty(), !self.egress.is_empty());
        if let Some(t) = &self.types {
            ing = false;
            eg = false;
            for x in t {
                match x.to_ascii_lowercase().as_str() {
                    "ingress" => ing = true,
                    "egress" => eg = true,
                    _ => return Err(format!("types: unknown type `{x}` (ingress, egress)")),
                }
            }
        }
        if self.namespace.is_some() && self.namespaces.is_some() {
            return Err("namespaces: only for cluster-wide policies (without namespace)".into());
        }
        let ingress = if ing {
            Some(
                self.ingress
                    .iter()
                    .map(|r| rule(r, true))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        let egress = if eg {
            Some(
                self.egress
                    .iter()
                    .map(|r| rule(r, false))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        Ok(Policy {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            tier: self.tier.map(|t| t.0).unwrap_or(TierKind::Application),
            priority: self.priority.unwrap_or(super::DEFAULT_PRIORITY),
            audit: self.audit,
            selector: self.selector.clone().unwrap_or_default().0,
            ns_selector: self.namespaces.clone().map(|s| s.0),
            ingress,
            egress,
            origin: Origin {
                file: file.to_string(),
                line,
                kind: "bulkhead".into(),
            },
        })
    }
}
