//! The model: namespaces, workloads and their addresses, labels and named ports.
//!
//! Two file schemas are read, in YAML or TOML:
//! - the native one: `namespaces = [{name, labels}]`, `workloads = [{name, namespace,
//!   labels, addresses, mac, port, named_ports}]`, optional `host_addresses`;
//! - the policy-conformance one (`namespaces: {name: labels}`, `pods: {"ns/name":
//!   {namespace, labels, ip, containerPorts: ["name: 80/TCP"]}}`).

use crate::error::{from_toml, from_yaml, Error, Result};
use crate::labels::Labels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The label every namespace carries with its own name (as Kubernetes sets it).
pub const NS_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// IP protocol numbers used by policies.
pub mod proto {
    pub use flowtable::parse::l4::proto::{ICMP, ICMPV6, SCTP, TCP, UDP};

    /// Parses `TCP`, `udp`, `SCTP`, `icmp`, `icmpv6` or a number.
    pub fn parse(s: &str) -> Option<u8> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(TCP),
            "udp" => Some(UDP),
            "sctp" => Some(SCTP),
            "icmp" => Some(ICMP),
            "icmpv6" | "ipv6-icmp" => Some(ICMPV6),
            n => n.parse().ok(),
        }
    }

    /// The protocol's name.
    pub fn name(p: u8) -> String {
        match p {
            TCP => "TCP".into(),
            UDP => "UDP".into(),
            SCTP => "SCTP".into(),
            ICMP => "ICMP".into(),
            ICMPV6 => "ICMPv6".into(),
            n => n.to_string(),
        }
    }
}

/// A named container port: `name` -> `port`/`proto`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
pub struct NamedPort {
    /// The name policies refer to.
    pub name: String,
    /// Port number.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
}

impl NamedPort {
    /// Parses `name: 80/TCP` (conformance form) or the pair (`name`, `80/TCP`).
    pub fn parse(name: &str, spec: &str) -> std::result::Result<Self, String> {
        let spec = spec.trim();
        let (p, pr) = spec.split_once('/').unwrap_or((spec, "TCP"));
        let port: u16 = p
            .trim()
            .parse()
            .map_err(|_| format!("bad port `{p}` for named port `{name}`"))?;
        if port == 0 {
            return Err(format!("port 0 for named port `{name}`"));
        }
        let proto = proto::parse(pr.trim()).ok_or_else(|| format!("bad protocol `{pr}`"))?;
        Ok(NamedPort {
            name: name.trim().to_string(),
            port,
            proto,
        })
    }
}

/// A namespace.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels (always including `kubernetes.io/metadata.name`).
    pub labels: Labels,
}

/// A workload: a VM, container or pod behind a switch port.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Workload {
    /// Name, unique within the namespace.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: Labels,
    /// Addresses (IPv4 and/or IPv6); the first is the primary.
    pub addresses: Vec<IpAddr>,
    /// MAC address, if known.
    pub mac: Option<[u8; 6]>,
    /// The switch port it sits behind, if bound.
    pub port: Option<u16>,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
}

impl Workload {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// Resolves a named port for `proto`.
    pub fn resolve_port(&self, name: &str, proto: u8) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|n| n.name == name && n.proto == proto)
            .map(|n| n.port)
    }
}

/// Namespaces and workloads.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Model {
    /// By name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// By `namespace/name`.
    pub workloads: BTreeMap<String, Workload>,
    /// Addresses of this host (identity `host`).
    pub host_addresses: Vec<IpAddr>,
}

impl Model {
    /// Adds a namespace (its name label is set).
    pub fn add_namespace(&mut self, name: &str, mut labels: Labels) {
        labels.insert(NS_NAME_LABEL.to_string(), name.to_string());
        self.namespaces.insert(
            name.to_string(),
            Namespace {
                name: name.to_string(),
                labels,
            },
        );
    }

    /// Finds a workload by `ns/name`, or by bare name when that is unique.
    pub fn find(&self, name: &str) -> Result<&Workload> {
        if let Some(w) = self.workloads.get(name) {
            return Ok(w);
        }
        let mut it = self.workloads.values().filter(|w| w.name == name);
        match (it.next(), it.next()) {
            (Some(w), None) => Ok(w),
            _ => Err(Error::UnknownWorkload(name.to_string())),
        }
    }

    /// Loads a model file (YAML or TOML by extension; YAML otherwise).
    pub fn load(path: &Path) -> Result<Model> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            file: path.into(),
            cause: e,
        })?;
        let file = path.display().to_string();
        if path.extension().is_some_and(|e| e == "toml") {
            Self::from_toml(&file, &text)
        } else {
            Self::from_yaml(&file, &text)
        }
    }

    /// Parses a YAML model (native or conformance schema).
    pub fn from_yaml(file: &str, text: &str) -> Result<Model> {
        let v: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| from_yaml(file, 0, &e))?;
        if v.get("pods").is_some() {
            let raw: ConfModel = serde_yaml::from_str(text).map_err(|e| from_yaml(file, 0, &e))?;
            raw.into_model(file)
        } else {
            let raw: NativeModel =
                serde_yaml::from_str(text).map_err(|e| from_yaml(file, 0, &e))?;
            raw.into_model(file, text)
        }
    }

    /// Parses a TOML model (native schema).
    pub fn from_toml(file: &str, text: &str) -> Result<Model> {
        let raw: NativeModel = toml::from_str(text).map_err(|e| from_toml(file, text, &e))?;
        raw.into_model(file, text)
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeModel {
    #[serde(default)]
    namespaces: Vec<NativeNs>,
    #[serde(default)]
    workloads: Vec<NativeWl>,
    #[serde(default)]
    host_addresses: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeNs {
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeWl {
    name: String,
    #[serde(default = "default_ns")]
    namespace: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    addresses: Vec<IpAddr>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    /// name -> "80/TCP"
    #[serde(default)]
    named_ports: BTreeMap<String, String>,
}

fn default_ns() -> String {
    "default".into()
}

impl NativeModel {
    fn into_model(self, file: &str, text: &str) -> Result<Model> {
        let mut m = Model {
            host_addresses: self.host_addresses,
            ..Default::default()
        };
        for ns in self.namespaces {
            if m.namespaces.contains_key(&ns.name) {
                let line = line_of(text, &ns.name);
                return Err(Error::invalid(
                    file,
                    line,
                    "namespaces.name",
                    format!("duplicate namespace `{}`", ns.name),
                ));
            }
            m.add_namespace(&ns.name, ns.labels);
        }
        let mut owners: std::collections::HashMap<IpAddr, String> = Default::default();
        for w in self.workloads {
            let wname = format!("\"{}\"", w.name);
            let line = || line_of(text, &wname);
            if !m.namespaces.contains_key(&w.namespace) {
                m.add_namespace(&w.namespace, Labels::new());
            }
            let mac = match &w.mac {
                Some(s) => Some(parse_mac(s).ok_or_else(|| {
                    Error::invalid(
                        file,
                        line_of(text, s),
                        "workloads.mac",
                        format!("bad MAC `{s}`"),
                    )
                })?),
                None => None,
            };
            let mut named_ports = Vec::new();
            for (n, spec) in &w.named_ports {
                named_ports.push(NamedPort::parse(n, spec).map_err(|e| {
                    Error::invalid(file, line_of(text, n), "workloads.named_ports", e)
                })?);
            }
            let wl = Workload {
                name: w.name,
                namespace: w.namespace,
                labels: w.labels,
                addresses: w.addresses,
                mac,
                port: w.port,
                named_ports,
            };
            if m.workloads.contains_key(&wl.key()) {
                return Err(Error::invalid(
                    file,
                    line(),
                    "workloads.name",
                    format!("duplicate workload `{}`", wl.key()),
                ));
            }
            for a in &wl.addresses {
                if let Some(o) = owners.insert(*a, wl.key()) {
                    let msg = format!("address {a} already belongs to {o}");
                    return Err(Error::invalid(file, line(), "workloads.addresses", msg));
                }
            }
            m.workloads.insert(wl.key(), wl);
        }
        Ok(m)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfModel {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    namespaces: BTreeMap<String, Labels>,
    pods: BTreeMap<String, ConfPod>,
    #[serde(default)]
    #[allow(dead_code)]
    matrix_encoding: Option<serde_yaml::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    semantics: Option<serde_yaml::Value>,
}

/// A pod in the conformance schema (also used by `create_pod`).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfPod {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub ip: Option<IpAddr>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub container_ports: Vec<ContainerPort>,
}

impl ConfPod {
    /// Builds the workload `ns/name`.
    pub(crate) fn workload(&self, ns: &str, name: &str) -> std::result::Result<Workload, String> {
        let mut named_ports = Vec::new();
        for cp in &self.container_ports {
            if let ContainerPort::Map {
                name,
                container_port,
                port,
                protocol,
            } = cp
            {
                if name.is_empty() {
                    continue; // an unnamed port cannot be referred to by name
                }
                let p = container_port
                    .or(*port)
                    .ok_or_else(|| format!("containerPort `{name}` has no port number"))?;
                let spec = format!("{p}/{}", protocol.as_deref().unwrap_or("TCP"));
                named_ports.push(NamedPort::parse(name, &spec)?);
                continue;
            }
            let ContainerPort::Text(cp) = cp else {
                continue;
            };
            let (n, spec) = cp
                .split_once(':')
                .ok_or_else(|| format!("bad containerPort `{cp}` (want `name: 80/TCP`)"))?;
            named_ports.push(NamedPort::parse(n, spec)?);
        }
        let mut addresses: Vec<IpAddr> = self.ip.into_iter().collect();
        addresses.extend(self.ips.iter().copied().filter(|a| Some(*a) != self.ip));
        Ok(Workload {
            name: name.to_string(),
            namespace: ns.to_string(),
            labels: self.labels.clone(),
            addresses,
            mac: None,
            port: None,
            named_ports,
        })
    }
}

/// A container port: `"name: 80/TCP"` or `{name, containerPort, protocol}`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ContainerPort {
    /// `"name: 80/TCP"`.
    Text(String),
    /// Kubernetes form.
    Map {
        /// Port name (unnamed ports are ignored).
        #[serde(default)]
        name: String,
        /// Port number.
        #[serde(default, rename = "containerPort")]
        container_port: Option<u16>,
        /// Port number (alternative spelling).
        #[serde(default)]
        port: Option<u16>,
        /// TCP (default), UDP, SCTP.
        #[serde(default)]
        protocol: Option<String>,
    },
}

/// Splits `ns/name` (a bare name is in `default_ns`).
pub(crate) fn split_key<'a>(key: &'a str, default_ns: Option<&'a str>) -> (&'a str, &'a str) {
    match key.split_once('/') {
        Some((ns, n)) => (ns, n),
        None => (default_ns.unwrap_or("default"), key),
    }
}

impl ConfModel {
    fn into_model(self, file: &str) -> Result<Model> {
        let mut m = Model::default();
        let mut owners: std::collections::HashMap<IpAddr, String> = Default::default();
        for (n, l) in self.namespaces {
            m.add_namespace(&n, l);
        }
        for (key, p) in self.pods {
            let (ns, name) = split_key(&key, p.namespace.as_deref());
            let ns = p.namespace.clone().unwrap_or_else(|| ns.to_string());
            if !m.namespaces.contains_key(&ns) {
                m.add_namespace(&ns, Labels::new());
            }
            let w = p
                .workload(&ns, name)
                .map_err(|e| Error::invalid(file, 0, format!("pods.{key}"), e))?;
            for a in &w.addresses {
                if let Some(o) = owners.insert(*a, w.key()) {
                    return Err(Error::invalid(
                        file,
                        0,
                        format!("pods.{key}.ip"),
                        format!("address {a} already belongs to {o}"),
                    ));
                }
            }
            m.workloads.insert(w.key(), w);
        }
        Ok(m)
    }
}
