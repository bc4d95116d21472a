//! Loading policy files: every file of a load parses and validates, or the
//! whole load fails with the first error (file, line, field) and nothing applies.

use super::{bulkhead, calico, k8s, Policy, Settings};
use crate::error::{from_toml, from_yaml, Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The result of a load: policies and settings.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// Policies in file order.
    pub policies: Vec<Policy>,
    /// Settings (the last file that sets a switch wins).
    pub settings: Settings,
}

/// Loads `paths` all or nothing.
pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> Result<PolicySet> {
    let mut texts = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let t = std::fs::read_to_string(p).map_err(|e| Error::Io {
            file: p.into(),
            cause: e,
        })?;
        texts.push((p.display().to_string(), t));
    }
    load_texts(&texts)
}

/// Parses (name, text) documents as one set, all or nothing (a name ending
/// in `.toml` is TOML, anything else YAML); errors name the document.
pub fn load_texts(texts: &[(String, String)]) -> Result<PolicySet> {
    let mut set = PolicySet::default();
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for (file, text) in texts {
        let one = parse_into(file, text, &mut set.settings)?;
        for p in one {
            if let Some((f, l)) = seen.get(&p.key()) {
                return Err(Error::invalid(
                    file,
                    p.origin.line,
                    "metadata.name",
                    format!(
                        "duplicate policy name `{}` (first defined at {f}:{l})",
                        p.key()
                    ),
                ));
            }
            seen.insert(p.key(), (file.clone(), p.origin.line));
            set.policies.push(p);
        }
    }
    Ok(set)
}

/// Parses one file's text (TOML when `file` ends in `.toml`, YAML otherwise).
pub fn parse_text(file: &str, text: &str) -> Result<PolicySet> {
    let mut set = PolicySet::default();
    let pols = parse_into(file, text, &mut set.settings)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for p in pols {
        if let Some(l) = seen.get(&p.key()) {
            return Err(Error::invalid(
                file,
                p.origin.line,
                "metadata.name",
                format!(
                    "duplicate policy name `{}` (first defined at line {l})",
                    p.key()
                ),
            ));
        }
        seen.insert(p.key(), p.origin.line);
        set.policies.push(p);
    }
    Ok(set)
}

fn parse_into(file: &str, text: &str, settings: &mut Settings) -> Result<Vec<Policy>> {
    if file.ends_with(".toml") {
        parse_toml(file, text, settings)
    } else {
        parse_yaml(file, text)
    }
}

/// Line (1-based) of the first line at or after `from` (0-based) that contains `needle`.
fn find_line(text: &str, from: usize, needle: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

fn parse_toml(file: &str, text: &str, settings: &mut Settings) -> Result<Vec<Policy>> {
    let f: bulkhead::File = toml::from_str(text).map_err(|e| from_toml(file, text, &e))?;
    if let Some(s) = &f.settings {
        let line = find_line(text, 0, "quarantine_label").unwrap_or(0);
        s.apply(settings)
            .map_err(|e| split_err(file, line, "settings", &e))?;
    }
    let mut out = Vec::new();
    let mut from = 0;
    for p in &f.policy {
        let line = find_line(text, from, &format!("\"{}\"", p.name)).unwrap_or(0);
        from = line;
        out.push(
            p.to_policy(file, line)
                .map_err(|e| split_err(file, line, &format!("policy.{}", p.name), &e))?,
        );
    }
    Ok(out)
}

fn split_err(file: &str, line: usize, prefix: &str, e: &str) -> Error {
    match e.split_once(": ") {
        Some((f, m)) if f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Error::invalid(file, line, format!("{prefix}.{f}"), m)
        }
        _ => Error::invalid(file, line, prefix, e),
    }
}

/// Splits a YAML stream into documents: (0-based start line, text).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("---") && l[3..].trim().is_empty() || l == "..." {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 1;
            continue;
        }
        cur.push_str(l);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs
}

fn parse_yaml(file: &str, text: &str) -> Result<Vec<Policy>> {
    let mut out = Vec::new();
    for (start, doc) in documents(text) {
        let v: serde_yaml::Value =
            serde_yaml::from_str(&doc).map_err(|e| from_yaml(file, start, &e))?;
        if v.is_null() {
            continue;
        }
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let api = v
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let doc_line = start
            + doc
                .lines()
                .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .unwrap_or(0)
            + 1;
        match (api.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let np: k8s::NetworkPolicy =
                    serde_yaml::from_str(&doc).map_err(|e| from_yaml(file, start, &e))?;
                let line = find_line(text, start, &format!("name: {}", np.metadata.name))
                    .unwrap_or(doc_line);
                out.push(np.to_policy(file, line));
            }
            (_, "List") | (_, "NetworkPolicyList") => {
                let l: k8s::PolicyList =
                    serde_yaml::from_str(&doc).map_err(|e| from_yaml(file, start, &e))?;
                let mut from = start;
                for np in &l.items {
                    if np.api_version != "networking.k8s.io/v1" || np.kind != "NetworkPolicy" {
                        return Err(unsupported(file, doc_line, &np.kind, &np.api_version));
                    }
                    let line = find_line(text, from, &format!("name: {}", np.metadata.name))
                        .unwrap_or(doc_line);
                    from = line;
                    out.push(np.to_policy(file, line));
                }
            }
            ("projectcalico.org/v3", "NetworkPolicy")
            | ("projectcalico.org/v3", "GlobalNetworkPolicy") => {
                let cp: calico::CalicoPolicy =
                    serde_yaml::from_str(&doc).map_err(|e| from_yaml(file, start, &e))?;
                let line = find_line(text, start, &format!("name: {}", cp.metadata.name))
                    .unwrap_or(doc_line);
                out.push(
                    cp.to_policy(file, line)
                        .map_err(|e| split_err(file, line, "spec", &e))?,
                );
            }
            ("projectcalico.org/v3", "Tier") => {
                // Tiers need no declaration here: `default` is the application tier,
                // every other tier the admin tier.
            }
            ("", _) | (_, "") => {
                return Err(Error::invalid(
                    file,
                    doc_line,
                    "kind",
                    "document has no apiVersion/kind",
                ));
            }
            (a, k) => return Err(unsupported(file, doc_line, k, a)),
        }
    }
    Ok(out)
}

fn unsupported(file: &str, line: usize, kind: &str, api: &str) -> Error {
    let hint = if api.starts_with("cilium.io") {
        "Cilium policies are not translated; write deny, entities and cluster-wide policies in Bulkhead TOML (docs/policy-format.md)"
    } else {
        "supported: networking.k8s.io/v1 NetworkPolicy, List/NetworkPolicyList, projectcalico.org/v3 NetworkPolicy/GlobalNetworkPolicy/Tier, Bulkhead TOML"
    };
    Error::Unsupported {
        file: file.to_string(),
        line,
        kind: kind.to_string(),
        api: api.to_string(),
        hint: hint.to_string(),
    }
}
