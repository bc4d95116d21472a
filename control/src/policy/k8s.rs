//! Kubernetes NetworkPolicy (networking.k8s.io/v1) documents and their
//! translation to [`Policy`]. Validation happens while deserializing, so every
//! error carries the line and field path of the offending value.

use super::{
    parse_cidr, NsScope, Origin, Peer, Policy, PolicyRule, PortRef, PortSpec, RuleAction, TierKind,
};
use crate::labels::{LabelSelector, Labels};
use crate::model::proto;
use flowtable::Prefix;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A NetworkPolicy.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicy {
    /// `networking.k8s.io/v1`.
    pub api_version: String,
    /// `NetworkPolicy`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The policy.
    pub spec: NetworkPolicySpec,
    /// Ignored.
    #[serde(default)]
    pub status: Option<serde_yaml::Value>,
}

/// Object metadata (the fields a policy file may carry).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name (a DNS subdomain, as Kubernetes checks it).
    #[serde(deserialize_with = "dns_subdomain")]
    pub name: String,
    /// Namespace (default `default`; a DNS label).
    #[serde(default, deserialize_with = "dns_label")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Annotations (`bulkhead.io/audit: "true"` puts the policy in audit mode).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Server-set fields, ignored.
    #[serde(default)]
    pub uid: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub generation: Option<i64>,
    /// Ignored.
    #[serde(default)]
    pub creation_timestamp: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(default)]
    pub managed_fields: Option<serde_yaml::Value>,
}

/// A name Kubernetes takes for an object: at most 253 lowercase letters,
/// digits, `-` and `.`, alphanumeric at both ends.
fn dns_subdomain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if crate::labels::is_dns_subdomain(&s) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("bad name `{s}`: lowercase letters, digits, `-` and `.`, alphanumeric at both ends, at most 253")))
    }
}

/// A namespace name: at most 63 lowercase letters, digits and `-`,
/// alphanumeric at both ends.
fn dns_label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    // One label of a DNS subdomain.
    if s.len() <= 63 && !s.contains('.') && crate::labels::is_dns_subdomain(&s) {
        Ok(Some(s))
    } else {
        Err(serde::de::Error::custom(format!("bad namespace `{s}`: at most 63 lowercase letters, digits and `-`, alphanumeric at both ends")))
    }
}

/// `spec`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Selected pods of the policy's namespace.
    pub pod_selector: LabelSelector,
    /// Ingress and/or Egress.
    #[serde(default)]
    pub policy_types: Option<Vec<PolicyType>>,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Option<Vec<IngressRule>>,
    /// Egress rules.
    #[serde(default)]
    pub egress: Option<Vec<EgressRule>>,
}

/// A policy type.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    /// Ingress.
    Ingress,
    /// Egress.
    Egress,
}

/// An ingress rule.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// Sources (OR); absent or empty = all.
    #[serde(default)]
    pub from: Option<Vec<PolicyPeer>>,
    /// Ports (OR); absent or empty = all.
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// An egress rule.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// Destinations (OR); absent or empty = all.
    #[serde(default)]
    pub to: Option<Vec<PolicyPeer>>,
    /// Ports (OR); absent or empty = all.
    #[serde(default)]
    pub ports: Option<Vec<NetworkPolicyPort>>,
}

/// A peer: selectors (AND) or an ipBlock.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase", try_from = "RawPeer")]
pub struct PolicyPeer {
    /// Pods.
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces.
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses.
    pub ip_block: Option<IpBlock>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPeer {
    #[serde(default)]
    pod_selector: Option<LabelSelector>,
    #[serde(default)]
    namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    ip_block: Option<IpBlock>,
}

impl TryFrom<RawPeer> for PolicyPeer {
    type Error = String;
    fn try_from(r: RawPeer) -> Result<Self, String> {
        if r.ip_block.is_some() && (r.pod_selector.is_some() || r.namespace_selector.is_some()) {
            return Err(
                "ipBlock: ipBlock cannot be combined with podSelector or namespaceSelector".into(),
            );
        }
        if r.ip_block.is_none() && r.pod_selector.is_none() && r.namespace_selector.is_none() {
            return Err(
                "podSelector: a peer needs podSelector, namespaceSelector or ipBlock".into(),
            );
        }
        Ok(PolicyPeer {
            pod_selector: r.pod_selector,
            namespace_selector: r.namespace_selector,
            ip_block: r.ip_block,
        })
    }
}

/// A CIDR checked while parsing, host bits cleared (Kubernetes accepts
/// `10.0.0.1/24` as `10.0.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub Prefix);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_cidr_masked(&s)
            .map(Cidr)
            .map_err(serde::de::Error::custom)
    }
}

/// A CIDR checked while parsing, host bits must be zero (Bulkhead TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrictCidr(pub Prefix);

impl<'de> Deserialize<'de> for StrictCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s)
            .map(StrictCidr)
            .map_err(serde::de::Error::custom)
    }
}

/// `ipBlock`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, try_from = "RawIpBlock")]
pub struct IpBlock {
    /// The block.
    pub cidr: Cidr,
    /// Holes inside it.
    pub except: Vec<Cidr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpBlock {
    cidr: Cidr,
    #[serde(default)]
    except: Option<Vec<Cidr>>,
}

impl TryFrom<RawIpBlock> for IpBlock {
    type Error = String;
    fn try_from(r: RawIpBlock) -> Result<Self, String> {
        let except = r.except.unwrap_or_default();
        for e in &except {
            let inside = e.0.len > r.cidr.0.len && r.cidr.0.contains(e.0.addr);
            if !inside {
                return Err(format!(
                    "except: {} is not strictly inside cidr {}",
                    super::show_prefix(&e.0),
                    super::show_prefix(&r.cidr.0)
                ));
            }
        }
        Ok(IpBlock {
            cidr: r.cidr,
            except,
        })
    }
}

/// A port entry.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase", try_from = "RawPort")]
pub struct NetworkPolicyPort {
    /// TCP (default), UDP or SCTP.
    pub protocol: u8,
    /// Number (with optional endPort) or name; None = every port.
    pub port: Option<PortRef>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPort {
    #[serde(default)]
    protocol: Option<K8sProtocol>,
    #[serde(default)]
    port: Option<IntOrString>,
    #[serde(default)]
    end_port: Option<i64>,
}

#[derive(Deserialize, Clone, Copy)]
enum K8sProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

fn check_port(field: &str, p: i64) -> Result<u16, String> {
    if (1..=65535).contains(&p) {
        Ok(p as u16)
    } else {
        Err(format!("{field}: port {p} out of range 1-65535"))
    }
}

/// An IANA service name as Kubernetes checks it.
pub fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl TryFrom<RawPort> for NetworkPolicyPort {
    type Error = String;
    fn try_from(r: RawPort) -> Result<Self, String> {
        let protocol = match r.protocol.unwrap_or(K8sProtocol::Tcp) {
            K8sProtocol::Tcp => proto::TCP,
            K8sProtocol::Udp => proto::UDP,
            K8sProtocol::Sctp => proto::SCTP,
        };
        let port = match (r.port, r.end_port) {
            (None, Some(_)) => return Err("endPort: endPort requires a numeric port".into()),
            (None, None) => None,
            // A quoted port is a name to Kubernetes, and a name needs a
            // letter: a quoted number is refused, as the API server refuses it.
            (Some(IntOrString::Str(s)), _) if s.parse::<i64>().is_ok() => {
                return Err(format!("port: `\"{s}\"` is a string; a port number is written unquoted"));
            }
            (Some(IntOrString::Str(s)), e) => {
                if e.is_some() {
                    return Err(format!("endPort: endPort cannot be used with named port `{s}`"));
                }
                if !valid_port_name(&s) {
                    return Err(format!("port: `{s}` is not a valid port name"));
                }
                Some(PortRef::Named(s))
            }
            (Some(IntOrString::Int(n)), e) => Some(num(n, e)?),
        };
        Ok(NetworkPolicyPort { protocol, port })
    }
}

fn num(n: i64, end: Option<i64>) -> Result<PortRef, String> {
    let p = check_port("port", n)?;
    match end {
        None => Ok(PortRef::Num(p, None)),
        Some(e) => {
            let e = check_port("endPort", e)?;
            if e < p {
                return Err(format!("endPort: endPort {e} is below port {p}"));
            }
            Ok(PortRef::Num(p, Some(e)))
        }
    }
}

/// A `List` / `NetworkPolicyList` of policies.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyList {
    /// `v1` or `networking.k8s.io/v1`.
    pub api_version: String,
    /// `List` or `NetworkPolicyList`.
    pub kind: String,
    /// Ignored.
    #[serde(default)]
    pub metadata: Option<serde_yaml::Value>,
    /// The policies.
    pub items: Vec<NetworkPolicy>,
}

fn peers(v: &Option<Vec<PolicyPeer>>) -> Option<Vec<Peer>> {
    let v = v.as_ref().filter(|v| !v.is_empty())?;
    Some(
        v.iter()
            .map(
                |p| match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
                    (Some(b), _, _) => Peer::Cidr {
                        cidr: b.cidr.0,
                        except: b.except.iter().map(|c| c.0).collect(),
                    },
                    (None, pods, None) => Peer::Pods {
                        ns: NsScope::Same,
                        pods: pods.clone().unwrap_or_default(),
                    },
                    (None, pods, Some(ns)) => Peer::Pods {
                        ns: NsScope::Select(ns.clone()),
                        pods: pods.clone().unwrap_or_default(),
                    },
                },
            )
            .collect(),
    )
}

fn ports(v: &Option<Vec<NetworkPolicyPort>>) -> Vec<PortSpec> {
    v.iter()
        .flatten()
        .map(|p| PortSpec {
            proto: Some(p.protocol),
            port: p.port.clone(),
        })
        .collect()
}

impl NetworkPolicy {
    /// Translates to the intermediate form.
    pub fn to_policy(&self, file: &str, line: usize) -> Policy {
        let s = &self.spec;
        let types: Vec<PolicyType> = match &s.policy_types {
            Some(t) if !t.is_empty() => t.clone(),
            _ => {
                let mut t = vec![PolicyType::Ingress];
                if s.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push(PolicyType::Egress);
                }
                t
            }
        };
        let rule = |peers, ports| PolicyRule {
            action: RuleAction::Allow,
            peers,
            ports,
            log: false,
        };
        let ingress = types.contains(&PolicyType::Ingress).then(|| {
            s.ingress
                .iter()
                .flatten()
                .map(|r| rule(peers(&r.from), ports(&r.ports)))
                .collect()
        });
        let egress = types.contains(&PolicyType::Egress).then(|| {
            s.egress
                .iter()
                .flatten()
                .map(|r| rule(peers(&r.to), ports(&r.ports)))
                .collect()
        });
        let audit = self
            .metadata
            .annotations
            .get("bulkhead.io/audit")
            .is_some_and(|v| v == "true");
        Policy {
            name: self.metadata.name.clone(),
            namespace: Some(
                self.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            tier: TierKind::Application,
            priority: super::DEFAULT_PRIORITY,
            audit,
            selector: s.pod_selector.clone(),
            ns_selector: None,
            ingress,
            egress,
            origin: Origin {
                file: file.to_string(),
                line,
                kind: "NetworkPolicy".into(),
            },
        }
    }
}
