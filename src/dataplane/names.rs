//! Names for flow records: which workload an address belongs to and which
//! policy rule a cookie stands for. The policy plane (control thread) keeps
//! it current on every change; the flow-record exporter thread reads it. It
//! is never touched by an lcore, so a read-write lock is fine here.

use crate::visibility::record::Enricher;
use control::compiler::RuleOrigin;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Inner {
    by_ip: HashMap<IpAddr, (String, BTreeMap<String, String>)>,
    rules: HashMap<u64, (String, String)>,
}

/// The shared index. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<RwLock<Inner>>);

impl Names {
    /// Records (or forgets, with `None`) the workload behind an address.
    pub fn set_address(&self, a: IpAddr, w: Option<(String, BTreeMap<String, String>)>) {
        let mut g = self.0.write().unwrap_or_else(|e| e.into_inner());
        match w {
            Some(v) => {
                g.by_ip.insert(a, v);
            }
            None => {
                g.by_ip.remove(&a);
            }
        }
    }

    /// Records what a rule cookie stands for. Cookies of removed rules are
    /// kept: records written later about earlier decisions still resolve.
    pub fn set_rule(&self, cookie: u64, o: &RuleOrigin) {
        let dir = if o.ingress { "ingress" } else { "egress" };
        let (policy, rule) = match o.policy.as_str() {
            "<quarantine>" => ("quarantine".to_string(), "quarantine".to_string()),
            "<isolation>" => (format!("tier {} default deny", o.tier), format!("{dir} isolation")),
            p => (p.to_string(), format!("{dir}[{}]", o.rule)),
        };
        self.0.write().unwrap_or_else(|e| e.into_inner()).rules.insert(cookie, (policy, rule));
    }
}

impl Enricher for Names {
    fn workload(&self, ip: IpAddr) -> Option<(String, BTreeMap<String, String>)> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).by_ip.get(&ip).cloned()
    }
    fn rule(&self, cookie: u64) -> (String, String) {
        if cookie == 0 {
            return ("default".into(), "default".into());
        }
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rules
            .get(&cookie)
            .cloned()
            .unwrap_or_else(|| ("unknown".into(), format!("cookie {cookie:#x}")))
    }
}
