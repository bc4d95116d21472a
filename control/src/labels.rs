//! Labels and label selectors (Kubernetes `LabelSelector` semantics).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A label set. Ordered, so equal sets compare and hash equal.
pub type Labels = BTreeMap<String, String>;

/// A selector operator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRequirement")]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (In/NotIn only).
    pub values: Vec<String>,
}

/// A label key or value as a policy file writes it: a string scalar. A
/// YAML `true`, `1` or `null` is refused rather than turned into text, as
/// Kubernetes refuses it (quote it: `"true"`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (quote a value such as \"true\" or \"1\")")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    key: Text,
    operator: Operator,
    #[serde(default)]
    values: Option<Vec<Text>>,
}

impl TryFrom<RawRequirement> for Requirement {
    type Error = String;
    fn try_from(r: RawRequirement) -> Result<Self, String> {
        let (key, operator) = (valid_key(r.key.0)?, r.operator);
        let values = r.values.unwrap_or_default().into_iter().map(|v| valid_value(v.0)).collect::<Result<Vec<_>, _>>()?;
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Err(format!("matchExpressions key `{key}`: operator {operator:?} needs values"))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Err(format!("matchExpressions key `{key}`: operator {operator:?} takes no values"))
            }
            _ => Ok(Requirement { key, operator, values }),
        }
    }
}

impl Requirement {
    /// True if `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.operator {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

/// A Kubernetes label selector: `matchLabels` AND every `matchExpressions` entry.
/// The empty selector matches every label set.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", try_from = "RawSelector")]
pub struct LabelSelector {
    /// Exact key=value pairs.
    #[serde(default)]
    pub match_labels: Labels,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<Text, Text>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

impl TryFrom<RawSelector> for LabelSelector {
    type Error = String;
    fn try_from(r: RawSelector) -> Result<Self, String> {
        let match_labels = r.match_labels.into_iter().map(|(k, v)| Ok((valid_key(k.0)?, valid_value(v.0)?))).collect::<Result<Labels, String>>()?;
        Ok(LabelSelector { match_labels, match_expressions: r.match_expressions })
    }
}

/// A label key as Kubernetes takes it: an optional DNS-subdomain prefix
/// and `/`, then a name of 1-63 characters, alphanumeric at both ends,
/// `-`, `_` and `.` inside.
fn valid_key(k: String) -> Result<String, String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k.as_str()),
    };
    if prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && valid_value_chars(name) {
        Ok(k)
    } else {
        Err(format!("bad label key `{k}`: an optional DNS prefix and `/`, then 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends"))
    }
}

/// A DNS subdomain as Kubernetes checks one (object names, label key
/// prefixes): at most 253 characters, dot-separated labels of lowercase
/// letters, digits and `-`, alphanumeric at both ends.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') && !l.starts_with('-') && !l.ends_with('-')
        })
}

/// A label value as Kubernetes takes it: empty, or 1-63 characters,
/// alphanumeric at both ends, `-`, `_` and `.` inside.
fn valid_value(v: String) -> Result<String, String> {
    if v.is_empty() || valid_value_chars(&v) {
        Ok(v)
    } else {
        Err(format!("bad label value `{v}`: empty, or 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends"))
    }
}

fn valid_value_chars(v: &str) -> bool {
    v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

impl LabelSelector {
    /// The selector matching everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// True when it matches every label set.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// True if `labels` are selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Parses the Kubernetes string syntax: comma-separated `k=v`, `k==v`, `k!=v`,
    /// `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist).
    /// Calico's `k == "v"`, `has(k)`, `!has(k)`, `&&` and `all()` are accepted too.
    /// The empty string and `all()` select everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut sel = LabelSelector::default();
        let s = s.trim();
        if s.is_empty() || s == "all()" {
            return Ok(sel);
        }
        for term in split_terms(s)? {
            let t = term.trim();
            if t.is_empty() {
                return Err(format!("empty term in selector `{s}`"));
            }
            if let Some(rest) = t.strip_prefix("!has(").and_then(|r| r.strip_suffix(')')) {
                sel.match_expressions
                    .push(req(key(rest)?, Operator::DoesNotExist, vec![]));
            } else if let Some(rest) = t.strip_prefix("has(").and_then(|r| r.strip_suffix(')')) {
                sel.match_expressions
                    .push(req(key(rest)?, Operator::Exists, vec![]));
            } else if let Some(i) = t.find("!=") {
                sel.match_expressions.push(req(
                    key(&t[..i])?,
                    Operator::NotIn,
                    vec![value(&t[i + 2..])?],
                ));
            } else if let Some(i) = t.find("==") {
                sel.match_labels.insert(key(&t[..i])?, value(&t[i + 2..])?);
            } else if let Some(i) = t.find('=') {
                sel.match_labels.insert(key(&t[..i])?, value(&t[i + 1..])?);
            } else if let Some((k, vs)) = set_term(t, " notin ")? {
                sel.match_expressions.push(req(k, Operator::NotIn, vs));
            } else if let Some((k, vs)) = set_term(t, " in ")? {
                sel.match_expressions.push(req(k, Operator::In, vs));
            } else if let Some(k) = t.strip_prefix('!') {
                sel.match_expressions
                    .push(req(key(k)?, Operator::DoesNotExist, vec![]));
            } else {
                sel.match_expressions
                    .push(req(key(t)?, Operator::Exists, vec![]));
            }
        }
        Ok(sel)
    }
}

fn req(key: String, operator: Operator, values: Vec<String>) -> Requirement {
    Requirement {
        key,
        operator,
        values,
    }
}

fn split_terms(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    let s = s.replace("&&", ",");
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced `)` in selector `{s}`"));
        }
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced `(` in selector `{s}`"));
    }
    out.push(cur);
    Ok(out)
}

fn set_term(t: &str, op: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let Some(i) = t.find(op) else { return Ok(None) };
    let k = key(&t[..i])?;
    let rest = t[i + op.len()..].trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("`{t}`: expected a value list in parentheses"))?;
    let vs: Result<Vec<_>, _> = inner.split(',').map(value).collect();
    let vs = vs?;
    if vs.is_empty() {
        return Err(format!("`{t}`: empty value list"));
    }
    Ok(Some((k, vs)))
}

fn key(s: &str) -> Result<String, String> {
    let k = s.trim();
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && k.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("bad label key `{k}`"))
    }
}

fn value(s: &str) -> Result<String, String> {
    let v = s.trim().trim_matches(|c| c == '"' || c == '\'');
    if v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        Ok(v.to_string())
    } else {
        Err(format!("bad label value `{v}`"))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let r = if first { Ok(()) } else { f.write_str(",") };
            first = false;
            r
        };
        for (k, v) in &self.match_labels {
            sep(f)?;
            write!(f, "{k}={v}")?;
        }
        for r in &self.match_expressions {
            sep(f)?;
            match r.operator {
                Operator::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                Operator::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

/// Renders a label set as `k=v,k=v`.
pub fn labels_string(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_syntax_matches_like_kubernetes() {
        let s = LabelSelector::parse("app=web, env in (prod,staging), !legacy, tier").unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("env", "prod"), ("tier", "x")])));
        assert!(!s.matches(&l(&[("app", "web"), ("env", "dev"), ("tier", "x")])));
        assert!(!s.matches(&l(&[
            ("app", "web"),
            ("env", "prod"),
            ("tier", "x"),
            ("legacy", "1")
        ])));
        let n = LabelSelector::parse("env notin (prod)").unwrap();
        assert!(n.matches(&l(&[])));
        assert!(!n.matches(&l(&[("env", "prod")])));
        let c = LabelSelector::parse("pci == \"true\" && has(zone)").unwrap();
        assert!(c.matches(&l(&[("pci", "true"), ("zone", "a")])));
        assert!(!c.matches(&l(&[("pci", "true")])));
        assert!(LabelSelector::parse("all()").unwrap().is_empty());
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a=b,,c").is_err());
    }

    #[test]
    fn yaml_form_rejects_bad_operator_and_missing_values() {
        let ok: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: DoesNotExist}]").unwrap();
        assert!(ok.matches(&l(&[("b", "1")])));
        let e =
            serde_yaml::from_str::<LabelSelector>("matchExpressions: [{key: a, operator: Maybe}]");
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("unknown variant `Maybe`"));
        let e = serde_yaml::from_str::<LabelSelector>("matchExpressions: [{key: a, operator: In}]");
        assert!(e.unwrap_err().to_string().contains("needs values"));
    }
}
