//! Calico `projectcalico.org/v3` NetworkPolicy, GlobalNetworkPolicy and Tier,
//! translated where they map onto Bulkhead's model: the `default` tier becomes
//! the application tier, any other tier the admin tier (its policies' `order`
//! becomes the priority); actions Allow, Deny, Pass and Log; rules on
//! selectors, namespace selectors, nets (with notNets as holes), protocols and
//! ports. Fields that do not map (serviceAccounts, http, icmp, notSelector,
//! notPorts, ...) are rejected as unknown fields rather than ignored.
//! Difference kept on purpose: Bulkhead's admin tier has no implicit
//! end-of-tier deny (write an explicit `Deny` rule, as Calico users often do).

use super::bulkhead::parse_port;
use super::k8s::Cidr;
use super::{NsScope, Origin, Peer, Policy, PolicyRule, PortSpec, RuleAction, TierKind};
use crate::labels::LabelSelector;
use crate::model::proto;
use serde::{Deserialize, Deserializer};

/// A Calico selector expression, checked while parsing.
#[derive(Debug, Clone, Default)]
pub struct CalicoSel(pub LabelSelector);

impl<'de> Deserialize<'de> for CalicoSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains("||") {
            return Err(serde::de::Error::custom(format!(
                "selector `{s}`: `||` is not supported (split into rules)"
            )));
        }
        // `k in {"a", "b"}` -> `k in (a,b)`; `k not in {..}` -> notin.
        let t = s
            .replace(" not in ", " notin ")
            .replace('{', "(")
            .replace('}', ")");
        LabelSelector::parse(&t)
            .map(CalicoSel)
            .map_err(serde::de::Error::custom)
    }
}

/// A port: number, "lo:hi" range, or name.
#[derive(Debug, Clone)]
pub struct CalicoPort(pub String);

impl<'de> Deserialize<'de> for CalicoPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum P {
            N(i64),
            S(String),
        }
        Ok(CalicoPort(match P::deserialize(d)? {
            P::N(n) => n.to_string(),
            P::S(s) => s.replace(':', "-"),
        }))
    }
}

/// `source` / `destination` of a rule.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityRule {
    /// Workload selector.
    #[serde(default)]
    pub selector: Option<CalicoSel>,
    /// Namespace selector.
    #[serde(default)]
    pub namespace_selector: Option<CalicoSel>,
    /// CIDRs.
    #[serde(default)]
    pub nets: Vec<Cidr>,
    /// CIDRs excluded from `nets`.
    #[serde(default)]
    pub not_nets: Vec<Cidr>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<CalicoPort>,
}

/// A rule.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalicoRule {
    /// Allow, Deny, Pass, Log.
    pub action: String,
    /// TCP, UDP, SCTP, ICMP or a number.
    #[serde(default)]
    pub protocol: Option<serde_yaml::Value>,
    /// Source.
    #[serde(default)]
    pub source: Option<EntityRule>,
    /// Destination.
    #[serde(default)]
    pub destination: Option<EntityRule>,
}

/// `spec` of NetworkPolicy / GlobalNetworkPolicy.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalicoSpec {
    /// Tier name (`default` when absent).
    #[serde(default)]
    pub tier: Option<String>,
    /// Lower first.
    #[serde(default)]
    pub order: Option<f64>,
    /// Selected workloads.
    #[serde(default)]
    pub selector: Option<CalicoSel>,
    /// GlobalNetworkPolicy: selected namespaces.
    #[serde(default)]
    pub namespace_selector: Option<CalicoSel>,
    /// Ingress / Egress.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Vec<CalicoRule>,
    /// Egress rules.
    #[serde(default)]
    pub egress: Vec<CalicoRule>,
}

/// A Calico policy document.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalicoPolicy {
    /// `projectcalico.org/v3`.
    pub api_version: String,
    /// NetworkPolicy or GlobalNetworkPolicy.
    pub kind: String,
    /// Name (and namespace for NetworkPolicy).
    pub metadata: super::k8s::ObjectMeta,
    /// Spec.
    pub spec: CalicoSpec,
}

fn peers(e: &Option<EntityRule>, what: &str) -> Result<Option<Vec<Peer>>, String> {
    let Some(e) = e else { return Ok(None) };
    let mut v = Vec::new();
    if e.selector.is_some() || e.namespace_selector.is_some() {
        if !e.nets.is_empty() {
            return Err(format!(
                "{what}: selector and nets together are not supported"
            ));
        }
        v.push(Peer::Pods {
            ns: match &e.namespace_selector {
                Some(s) => NsScope::Select(s.0.clone()),
                None => NsScope::Same,
            },
            pods: e.selector.clone().unwrap_or_default().0,
        });
    }
    for n in &e.nets {
        let except = e
            .not_nets
            .iter()
            .filter(|x| x.0.len > n.0.len && n.0.contains(x.0.addr))
            .map(|x| x.0)
            .collect();
        v.push(Peer::Cidr { cidr: n.0, except });
    }
    if e.nets.is_empty() && !e.not_nets.is_empty() {
        return Err(format!("{what}: notNets without nets is not supported"));
    }
    Ok((!v.is_empty()).then_some(v))
}

fn rule(r: &CalicoRule, ingress: bool) -> Result<PolicyRule, String> {
    let action = match r.action.as_str() {
        "Allow" | "allow" => RuleAction::Allow,
        "Deny" | "deny" => RuleAction::Deny,
        "Pass" | "pass" => RuleAction::Pass,
        "Log" | "log" => RuleAction::Log,
        a => return Err(format!("action: unknown action `{a}`")),
    };
    let pr = match &r.protocol {
        None => None,
        Some(serde_yaml::Value::Number(n)) => Some(
            n.as_u64()
                .filter(|n| *n < 256)
                .ok_or("protocol: out of range")? as u8,
        ),
        Some(serde_yaml::Value::String(s)) => {
            Some(proto::parse(s).ok_or_else(|| format!("protocol: unknown `{s}`"))?)
        }
        Some(_) => return Err("protocol: expected a name or number".into()),
    };
    let (local, remote) = if ingress {
        (&r.destination, &r.source)
    } else {
        (&r.source, &r.destination)
    };
    if let Some(l) = local {
        if l.selector.is_some() || l.namespace_selector.is_some() || !l.nets.is_empty() {
            return Err(format!(
                "{}: selectors/nets on the local side are not supported",
                if ingress { "destination" } else { "source" }
            ));
        }
    }
    let port_side = if ingress { local } else { remote };
    let mut ports = Vec::new();
    for p in port_side.iter().flat_map(|e| e.ports.iter()) {
        let mut spec = parse_port(&p.0).map_err(|e| format!("ports: {e}"))?;
        spec.proto = Some(pr.unwrap_or(proto::TCP));
        ports.push(spec);
    }
    if ports.is_empty() {
        if let Some(pr) = pr {
            ports.push(PortSpec {
                proto: Some(pr),
                port: None,
            });
        }
    }
    Ok(PolicyRule {
        action,
        peers: peers(remote, if ingress { "source" } else { "destination" })?,
        ports,
        log: false,
    })
}

impl CalicoPolicy {
    /// Translates to the intermediate form.
    pub fn to_policy(&self, file: &str, line: usize) -> Result<Policy, String> {
        let s = &self.spec;
        let global = self.kind == "GlobalNetworkPolicy";
        let tier = match s.tier.as_deref() {
            None | Some("default") => TierKind::Application,
            Some(_) => TierKind::Admin,
        };
        let (mut ing, mut eg) = (!s.ingress.is_empty(), !s.egress.is_empty());
        if let Some(t) = &s.types {
            ing = t.iter().any(|x| x == "Ingress");
            eg = t.iter().any(|x| x == "Egress");
        } else if !ing && !eg {
            ing = true;
        }
        let ingress = if ing {
            Some(
                s.ingress
                    .iter()
                    .map(|r| rule(r, true))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        let egress = if eg {
            Some(
                s.egress
                    .iter()
                    .map(|r| rule(r, false))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        if !global && s.namespace_selector.is_some() {
            return Err("namespaceSelector: only for GlobalNetworkPolicy".into());
        }
        Ok(Policy {
            name: self.metadata.name.clone(),
            namespace: if global {
                None
            } else {
                Some(
                    self.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                )
            },
            tier,
            priority: s
                .order
                .map(|o| o.clamp(0.0, 65535.0).round() as u16)
                .unwrap_or(super::DEFAULT_PRIORITY),
            audit: self
                .metadata
                .annotations
                .get("bulkhead.io/audit")
                .is_some_and(|v| v == "true"),
            selector: s.selector.clone().unwrap_or_default().0,
            ns_selector: s.namespace_selector.clone().map(|x| x.0),
            ingress,
            egress,
            origin: Origin {
                file: file.to_string(),
                line,
                kind: self.kind.clone(),
            },
        })
    }
}
