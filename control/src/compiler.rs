//! The compiler: policies + model -> flowtable rules on identities, protocols,
//! port ranges and CIDRs, per tier and direction, kept up to date incrementally.
//!
//! Layout of the tables ([`Tables`]): `enforce` decides packets; `observe` holds
//! audit-mode policies and `log` rules and only ever feeds flow logs. Each has
//! the tiers of [`TierKind::ALL`] in order.
//!
//! Rule priorities encode, most significant first: the policy priority (lower
//! value first), the rule's position in its policy (earlier first), and the
//! action (deny, then pass, then allow). So within a tier the first matching rule
//! of the first policy wins, and between policies of equal priority a deny beats
//! an allow at the same rule position. Isolation (a workload selected by an
//! application-tier policy for a direction denies what that tier does not allow)
//! is a priority-0 deny per selected identity; quarantine is a top-tier deny.
//!
//! Incrementality: each policy keeps the set of rules it produced (by content)
//! and the identities it references. A change recomputes only the policies it
//! can touch (found through a label index) and emits the difference as a
//! [`RuleDiff`], applied to the tables at once. Moving a workload (new address)
//! changes only the IP -> identity map, unless a policy resolves a named port of
//! that workload (such rules are per address when workloads of one identity
//! disagree on the port number).

use crate::error::{Error, Result};
use crate::identity::{self, IdentityAllocator, IdentityKey};
use crate::labels::{LabelSelector, Labels};
use crate::model::{Model, Workload, NS_NAME_LABEL};
use crate::policy::{
    subtract, Entity, NsScope, Peer, Policy, PolicyRule, PolicySet, PortRef, RuleAction, Settings,
    TierKind,
};
use flowtable::key::addr_of;
use flowtable::{
    Action, Classifier, Direction, FlowKey, LinearClassifier, Match, PolicyTables, PortRange,
    Prefix, PrefixMap, Rule, RuleId, RuleLookup, Tier, Verdict,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// A rule table the compiler can maintain: lookup plus insert and remove by id.
pub trait RuleTable: RuleLookup + Default {
    /// Adds a rule (ids are unique; the compiler never reuses a live one).
    fn insert_rule(&mut self, r: Rule);
    /// Removes a rule by id.
    fn remove_rule(&mut self, id: RuleId);
}

impl RuleTable for Classifier {
    fn insert_rule(&mut self, r: Rule) {
        // Ids come from the compiler's counter and are never live twice.
        let _ = self.insert(r);
    }
    fn remove_rule(&mut self, id: RuleId) {
        self.remove(id);
    }
}

impl RuleTable for LinearClassifier {
    fn insert_rule(&mut self, r: Rule) {
        self.insert(r);
    }
    fn remove_rule(&mut self, id: RuleId) {
        self.remove(id);
    }
}

/// Which table a rule lives in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TableRef {
    /// In the observe (audit/log) tables rather than the enforcing ones.
    pub observe: bool,
    /// Tier index ([`TierKind::index`]).
    pub tier: u8,
    /// Direction.
    pub dir: Direction,
}

/// Rule inserts and deletes produced by one change, already applied to the tables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleDiff {
    /// Rules added.
    pub inserts: Vec<(TableRef, Rule)>,
    /// Rules removed.
    pub deletes: Vec<(TableRef, RuleId)>,
}

impl RuleDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.deletes.is_empty()
    }
}

/// The enforcing and the observing tables.
#[derive(Clone, Debug)]
pub struct Tables<C> {
    /// Decide packets.
    pub enforce: PolicyTables<C>,
    /// Audit-mode policies and log rules: evaluated for flow logs only.
    pub observe: PolicyTables<C>,
}

impl<C: RuleTable> Tables<C> {
    fn new(s: &Settings) -> Self {
        let mk = || PolicyTables {
            tiers: TierKind::ALL
                .iter()
                .map(|t| Tier {
                    name: t.name().to_string(),
                    egress: C::default(),
                    ingress: C::default(),
                })
                .collect(),
            default_egress: if s.default_deny_egress {
                Action::Deny
            } else {
                Action::Allow
            },
            default_ingress: if s.default_deny_ingress {
                Action::Deny
            } else {
                Action::Allow
            },
        };
        let mut observe = mk();
        observe.default_egress = Action::Allow;
        observe.default_ingress = Action::Allow;
        Tables {
            enforce: mk(),
            observe,
        }
    }

    fn table_mut(&mut self, t: TableRef) -> &mut C {
        let pt = if t.observe {
            &mut self.observe
        } else {
            &mut self.enforce
        };
        pt.tiers[t.tier as usize].table_mut(t.dir)
    }
}

/// The `cookie` carried by every compiled rule: which policy and rule made it.
pub mod cookie {
    /// The policy index of isolation (tier default deny) rules.
    pub const ISOLATION: u32 = u32::MAX;
    /// The policy index of quarantine rules.
    pub const QUARANTINE: u32 = u32::MAX - 1;
    /// Flag: log flows this rule decides.
    pub const LOG: u8 = 1;
    /// Flag: the rule belongs to an audit-mode policy.
    pub const AUDIT: u8 = 2;

    /// Packs a cookie.
    pub fn make(policy: u32, ingress: bool, rule: u16, flags: u8) -> u64 {
        (policy as u64) << 32
            | (ingress as u64) << 31
            | ((rule as u64) & 0x7fff) << 16
            | flags as u64
    }
    /// The policy index.
    pub fn policy(c: u64) -> u32 {
        (c >> 32) as u32
    }
    /// True for an ingress rule.
    pub fn ingress(c: u64) -> bool {
        c >> 31 & 1 == 1
    }
    /// The rule's index within its policy direction.
    pub fn rule(c: u64) -> u16 {
        (c >> 16 & 0x7fff) as u16
    }
    /// Flags.
    pub fn flags(c: u64) -> u8 {
        c as u8
    }
}

/// Where a compiled rule came from, for explain, reach and flow records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOrigin {
    /// Policy key (`ns/name` or `name`), or `<isolation>` / `<quarantine>`.
    pub policy: String,
    /// Direction.
    pub ingress: bool,
    /// Rule index in that direction of the policy.
    pub rule: u16,
    /// Tier name.
    pub tier: &'static str,
    /// Log flag.
    pub log: bool,
}

impl std::fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = if self.ingress { "ingress" } else { "egress" };
        match self.policy.as_str() {
            "<isolation>" => write!(f, "tier {} default deny ({d} isolation)", self.tier),
            "<quarantine>" => write!(f, "quarantine"),
            p => write!(f, "policy {p} {d} rule {} (tier {})", self.rule, self.tier),
        }
    }
}

type Sig = (TableRef, Match, Action, u32, u64);

#[derive(Clone, Debug)]
struct PolicyState {
    policy: Policy,
    idx: u32,
    rules: HashMap<Sig, RuleId>,
    isolates: Vec<(TableRef, u32)>,
    refs: HashSet<u32>,
    named: bool,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum IndexKey {
    Label(String, String),
    NsLabel(String, String, String),
    /// A namespace-selector peer: first namespace label, first pod label.
    NsSel(String, String, String, String),
    /// A namespace-selector peer without pod labels: first namespace label.
    NsSelOnly(String, String),
    Ns(String),
    General,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Remote {
    Any,
    Id(u32),
    Net(Prefix),
}

#[derive(Default)]
struct Gen {
    rules: Vec<(TableRef, Match, Action, u32, u64)>,
    isolates: Vec<(TableRef, u32)>,
    refs: HashSet<u32>,
    named_global: bool,
}

/// The compiler and its state: model, identities, IP -> identity map, policies, tables.
#[derive(Debug)]
pub struct Compiler<C = Classifier> {
    model: Model,
    settings: Settings,
    ids: IdentityAllocator,
    ipmap: PrefixMap<u32>,
    wl_id: HashMap<String, u32>,
    addr_owner: HashMap<IpAddr, String>,
    id_wls: HashMap<u32, BTreeSet<String>>,
    by_ns: HashMap<String, BTreeSet<u32>>,
    by_label: HashMap<(String, String), BTreeSet<u32>>,
    by_ns_label: HashMap<(String, String, String), BTreeSet<u32>>,
    policies: HashMap<String, PolicyState>,
    names: Vec<Option<String>>,
    pindex: HashMap<IndexKey, HashSet<String>>,
    id_refs: HashMap<u32, HashSet<String>>,
    named_global: HashSet<String>,
    ns_label_policies: HashSet<String>,
    iso: HashMap<(TableRef, u32), (usize, RuleId)>,
    quarantine: HashMap<u32, [RuleId; 2]>,
    tables: Tables<C>,
    next_rule: u32,
    /// (policy, new identity) pairs waiting for [`Self::extend_for_identity`].
    focus: Vec<(String, u32)>,
}

/// Priority of rule `idx` of a policy with priority `prio`.
pub fn rule_priority(prio: u16, idx: usize, a: Action) -> u32 {
    let rank = match a {
        Action::Deny => 3,
        Action::Pass => 2,
        Action::Allow => 1,
    };
    ((0xFFFF - prio as u32) << 16) | ((0x3FFF - idx.min(0x3FFF) as u32) << 2) | rank
}

fn host_prefix(a: IpAddr) -> Prefix {
    Prefix::new(addr_of(a), 128)
}

impl<C: RuleTable> Compiler<C> {
    /// A compiler over `model` with no policies.
    pub fn new(model: Model, settings: Settings) -> Result<Self> {
        let mut c = Compiler {
            model: Model::default(),
            tables: Tables::new(&settings),
            settings,
            ids: IdentityAllocator::default(),
            ipmap: PrefixMap::new(),
            wl_id: HashMap::new(),
            addr_owner: HashMap::new(),
            id_wls: HashMap::new(),
            by_ns: HashMap::new(),
            by_label: HashMap::new(),
            by_ns_label: HashMap::new(),
            policies: HashMap::new(),
            names: Vec::new(),
            pindex: HashMap::new(),
            id_refs: HashMap::new(),
            named_global: HashSet::new(),
            ns_label_policies: HashSet::new(),
            iso: HashMap::new(),
            quarantine: HashMap::new(),
            next_rule: 1,
            focus: Vec::new(),
        };
        c.ipmap.insert(Prefix::ANY, identity::WORLD);
        for a in &model.host_addresses {
            c.ipmap.insert(host_prefix(*a), identity::HOST);
        }
        c.model.host_addresses = model.host_addresses.clone();
        c.model.namespaces = model.namespaces.clone();
        let mut diff = RuleDiff::default();
        let mut touched = HashSet::new();
        for w in model.workloads.into_values() {
            c.check_workload(&w)
                .map_err(|e| Error::invalid("<model>", 0, w.key(), e))?;
            c.attach(w, &mut diff, &mut touched)?;
        }
        Ok(c)
    }

    /// Fixes identity numbers chosen cluster-wide (see
    /// [`IdentityAllocator::pin`]): workloads attached from now on get them.
    pub fn pin_identities(&mut self, keys: impl IntoIterator<Item = (IdentityKey, u32)>) {
        self.ids.pin(keys);
    }

    /// A compiler over `model` with `set` applied, identities pinned first.
    pub fn with_pinned(model: Model, set: PolicySet, pins: impl IntoIterator<Item = (IdentityKey, u32)>) -> Result<Self> {
        let base = Model { namespaces: model.namespaces.clone(), host_addresses: model.host_addresses.clone(), ..Model::default() };
        let mut c = Self::new(base, set.settings.clone())?;
        c.ids.pin(pins);
        let mut diff = RuleDiff::default();
        let mut touched = HashSet::new();
        for w in model.workloads.into_values() {
            c.check_workload(&w).map_err(|e| Error::invalid("<model>", 0, w.key(), e))?;
            c.attach(w, &mut diff, &mut touched)?;
        }
        c.replace_policies(set)?;
        Ok(c)
    }

    /// A compiler over `model` with `set` applied.
    pub fn with_policies(model: Model, set: PolicySet) -> Result<Self> {
        let mut c = Self::new(model, set.settings.clone())?;
        c.replace_policies(set)?;
        Ok(c)
    }

    /// The model as it is now.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// The compiled tables.
    pub fn tables(&self) -> &Tables<C> {
        &self.tables
    }
    /// The IP -> identity map.
    pub fn ipmap(&self) -> &PrefixMap<u32> {
        &self.ipmap
    }
    /// The identity allocator.
    pub fn identities(&self) -> &IdentityAllocator {
        &self.ids
    }
    /// A workload's identity.
    pub fn workload_identity(&self, key: &str) -> Option<u32> {
        self.wl_id.get(key).copied()
    }
    /// A policy by key.
    pub fn policy(&self, key: &str) -> Option<&Policy> {
        self.policies.get(key).map(|s| &s.policy)
    }
    /// All policies, sorted by key.
    pub fn policies(&self) -> Vec<&Policy> {
        let mut v: Vec<&Policy> = self.policies.values().map(|s| &s.policy).collect();
        v.sort_by_key(|p| p.key());
        v
    }
    /// Rules a policy produced now (enforce and observe).
    pub fn policy_rule_count(&self, key: &str) -> usize {
        self.policies.get(key).map(|s| s.rules.len()).unwrap_or(0)
    }
    /// Total rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.policies.values().map(|s| s.rules.len()).sum::<usize>()
            + self.iso.len()
            + 2 * self.quarantine.len()
    }

    /// The identity of an address (longest prefix; world when outside the model).
    pub fn identity_of(&self, a: IpAddr) -> u32 {
        self.ipmap
            .lookup(addr_of(a))
            .map(|(_, v)| *v)
            .unwrap_or(identity::WORLD)
    }

    /// A flow key with both identities resolved.
    pub fn flow_key(&self, src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> FlowKey {
        let mut k = FlowKey::new(0, addr_of(src), addr_of(dst), proto, sport, dport);
        k.src_id = self.identity_of(src);
        k.dst_id = self.identity_of(dst);
        k
    }

    /// The enforced verdict for a key.
    pub fn decide(&self, k: &FlowKey) -> Verdict {
        self.tables.enforce.decide(k)
    }

    /// What the audit policies and log rules say about a key.
    pub fn observe(&self, k: &FlowKey) -> Verdict {
        self.tables.observe.decide(k)
    }

    /// Where a compiled rule came from.
    pub fn origin(&self, r: &Rule) -> RuleOrigin {
        let pi = cookie::policy(r.cookie);
        let policy = match pi {
            cookie::ISOLATION => "<isolation>".to_string(),
            cookie::QUARANTINE => "<quarantine>".to_string(),
            i => self
                .names
                .get(i as usize)
                .cloned()
                .flatten()
                .unwrap_or_else(|| format!("<policy #{i}>")),
        };
        let tier = match pi {
            cookie::QUARANTINE => "quarantine",
            cookie::ISOLATION => "application",
            _ => self
                .policies
                .get(&policy)
                .map(|s| s.policy.tier.name())
                .unwrap_or("?"),
        };
        RuleOrigin {
            policy,
            ingress: cookie::ingress(r.cookie),
            rule: cookie::rule(r.cookie),
            tier,
            log: cookie::flags(r.cookie) & cookie::LOG != 0,
        }
    }

    /// Policies (keys) whose selector selects the identity for a direction.
    pub fn selecting_policies(&self, id: u32, ingress: bool) -> Vec<String> {
        let Some(k) = self.ids.key(id) else {
            return vec![];
        };
        let mut v: Vec<String> = self
            .policies
            .values()
            .filter(|s| {
                if ingress {
                    s.policy.ingress.is_some()
                } else {
                    s.policy.egress.is_some()
                }
            })
            .filter(|s| self.target_matches(&s.policy, k))
            .map(|s| s.policy.key())
            .collect();
        v.sort();
        v
    }

    // ---- policies ----

    /// Adds or replaces one policy.
    pub fn set_policy(&mut self, p: Policy) -> Result<RuleDiff> {
        let mut diff = RuleDiff::default();
        let key = p.key();
        // A policy may precede its namespace: it selects nothing until the namespace exists.
        if let Some(old) = self.policies.get(&key) {
            let old = old.policy.clone();
            self.unindex_policy(&key, &old);
            self.policies.get_mut(&key).expect("present").policy = p.clone();
        } else {
            let idx = self.names.len() as u32;
            self.names.push(Some(key.clone()));
            self.policies.insert(
                key.clone(),
                PolicyState {
                    policy: p.clone(),
                    idx,
                    rules: HashMap::new(),
                    isolates: Vec::new(),
                    refs: HashSet::new(),
                    named: false,
                },
            );
        }
        self.index_policy(&key, &p);
        self.recompute(&key, &mut diff);
        Ok(diff)
    }

    /// Removes a policy; unknown keys change nothing.
    pub fn remove_policy(&mut self, key: &str) -> Result<RuleDiff> {
        let mut diff = RuleDiff::default();
        let Some(st) = self.policies.get(key) else {
            return Ok(diff);
        };
        let (p, idx) = (st.policy.clone(), st.idx);
        self.unindex_policy(key, &p);
        // Withdraw everything the policy produced, then forget it.
        self.recompute_with(key, &mut diff, true);
        self.policies.remove(key);
        self.names[idx as usize] = None;
        Ok(diff)
    }

    /// Replaces every policy and the settings with `set` (one diff).
    pub fn replace_policies(&mut self, set: PolicySet) -> Result<RuleDiff> {
        let mut diff = RuleDiff::default();
        if set.settings != self.settings {
            self.settings = set.settings.clone();
            let (de, di) = (
                self.settings.default_deny_egress,
                self.settings.default_deny_ingress,
            );
            self.tables.enforce.default_egress = if de { Action::Deny } else { Action::Allow };
            self.tables.enforce.default_ingress = if di { Action::Deny } else { Action::Allow };
            let ids: Vec<u32> = self.ids.iter().map(|(i, _)| i).collect();
            for id in ids {
                self.update_quarantine(id, &mut diff);
            }
        }
        let new: HashSet<String> = set.policies.iter().map(|p| p.key()).collect();
        let old: Vec<String> = self
            .policies
            .keys()
            .filter(|k| !new.contains(*k))
            .cloned()
            .collect();
        for k in old {
            let d = self.remove_policy(&k)?;
            merge(&mut diff, d);
        }
        for p in set.policies {
            if self.policies.get(&p.key()).is_some_and(|s| s.policy == p) {
                continue;
            }
            let d = self.set_policy(p)?;
            merge(&mut diff, d);
        }
        Ok(diff)
    }

    /// Loads policy files and replaces every policy with them, all or nothing:
    /// on any error (file, line, field) nothing changes.
    pub fn reload<P: AsRef<std::path::Path>>(&mut self, files: &[P]) -> Result<RuleDiff> {
        let set = crate::policy::load_files(files)?;
        self.replace_policies(set)
    }

    // ---- workloads and namespaces ----

    /// Adds a workload.
    pub fn add_workload(&mut self, w: Workload) -> Result<RuleDiff> {
        if self.model.workloads.contains_key(&w.key()) {
            return Err(Error::BadArg {
                arg: w.key(),
                msg: "workload exists".into(),
            });
        }
        if !self.model.namespaces.contains_key(&w.namespace) {
            return Err(Error::UnknownNamespace(w.namespace.clone()));
        }
        self.check_workload(&w).map_err(|e| Error::BadArg {
            arg: w.key(),
            msg: e,
        })?;
        let mut diff = RuleDiff::default();
        let mut touched = HashSet::new();
        self.attach(w, &mut diff, &mut touched)?;
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Removes a workload.
    pub fn remove_workload(&mut self, key: &str) -> Result<RuleDiff> {
        let key = self.model.find(key)?.key();
        let mut diff = RuleDiff::default();
        let mut touched = HashSet::new();
        self.detach(&key, &mut diff, &mut touched);
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Replaces a workload's labels (it moves to the identity of the new label set).
    pub fn set_workload_labels(&mut self, key: &str, labels: Labels) -> Result<RuleDiff> {
        let mut w = self.model.find(key)?.clone();
        w.labels = labels;
        self.replace_workload(w)
    }

    /// Re-addresses a workload: changes only IP -> identity entries (and the
    /// rules of policies that resolve its named ports per address).
    pub fn move_workload(&mut self, key: &str, addresses: Vec<IpAddr>) -> Result<RuleDiff> {
        let mut w = self.model.find(key)?.clone();
        w.addresses = addresses;
        self.check_workload(&w).map_err(|e| Error::BadArg {
            arg: w.key(),
            msg: e,
        })?;
        let k = w.key();
        let id = self.wl_id[&k];
        let old = std::mem::replace(
            self.model.workloads.get_mut(&k).expect("present"),
            w.clone(),
        );
        for a in &old.addresses {
            if self.ipmap.get(host_prefix(*a)) == Some(&id) {
                self.ipmap.remove(host_prefix(*a));
            }
            if self.addr_owner.get(a).is_some_and(|o| *o == k) {
                self.addr_owner.remove(a);
            }
        }
        for a in &w.addresses {
            self.ipmap.insert(host_prefix(*a), id);
            self.addr_owner.insert(*a, k.clone());
        }
        let mut diff = RuleDiff::default();
        let mut touched: HashSet<String> = self.named_global.iter().cloned().collect();
        self.named_refs(id, &mut touched);
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Replaces a workload (labels, addresses, ports) in one step.
    pub fn replace_workload(&mut self, w: Workload) -> Result<RuleDiff> {
        let key = w.key();
        if !self.model.workloads.contains_key(&key) {
            return self.add_workload(w);
        }
        self.check_workload(&w).map_err(|e| Error::BadArg {
            arg: key.clone(),
            msg: e,
        })?;
        let mut diff = RuleDiff::default();
        let mut touched = HashSet::new();
        self.detach(&key, &mut diff, &mut touched);
        self.attach(w, &mut diff, &mut touched)?;
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Adds a namespace (no-op on labels if it exists: use [`Self::set_namespace_labels`]).
    pub fn add_namespace(&mut self, name: &str, labels: Labels) -> Result<RuleDiff> {
        if self.model.namespaces.contains_key(name) {
            return self.set_namespace_labels(name, labels);
        }
        self.model.add_namespace(name, labels);
        let mut diff = RuleDiff::default();
        let touched = self.ns_label_policies.clone();
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Replaces a namespace's labels (its name label stays).
    pub fn set_namespace_labels(&mut self, name: &str, labels: Labels) -> Result<RuleDiff> {
        if !self.model.namespaces.contains_key(name) {
            return Err(Error::UnknownNamespace(name.to_string()));
        }
        self.model.add_namespace(name, labels);
        let mut diff = RuleDiff::default();
        let touched = self.ns_label_policies.clone();
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    /// Deletes a namespace with its workloads and policies.
    pub fn remove_namespace(&mut self, name: &str) -> Result<RuleDiff> {
        if !self.model.namespaces.contains_key(name) {
            return Err(Error::UnknownNamespace(name.to_string()));
        }
        let mut diff = RuleDiff::default();
        let pols: Vec<String> = self
            .policies
            .values()
            .filter(|s| s.policy.namespace.as_deref() == Some(name))
            .map(|s| s.policy.key())
            .collect();
        for p in pols {
            let d = self.remove_policy(&p)?;
            merge(&mut diff, d);
        }
        let wls: Vec<String> = self
            .model
            .workloads
            .values()
            .filter(|w| w.namespace == name)
            .map(|w| w.key())
            .collect();
        let mut touched = HashSet::new();
        for w in wls {
            self.detach(&w, &mut diff, &mut touched);
        }
        self.model.namespaces.remove(name);
        touched.extend(self.ns_label_policies.iter().cloned());
        self.recompute_all(touched, &mut diff);
        Ok(diff)
    }

    // ---- internals ----

    /// Namespace exists and no address belongs to another workload (O(addresses)).
    fn check_workload(&self, w: &Workload) -> std::result::Result<(), String> {
        if w.name.is_empty() {
            return Err("empty workload name".into());
        }
        if !self.model.namespaces.contains_key(&w.namespace) {
            return Err(format!("namespace `{}` does not exist", w.namespace));
        }
        let key = w.key();
        for a in &w.addresses {
            if let Some(o) = self.addr_owner.get(a).filter(|o| **o != key) {
                return Err(format!("address {a} already belongs to {o}"));
            }
        }
        Ok(())
    }

    fn attach(
        &mut self,
        w: Workload,
        diff: &mut RuleDiff,
        touched: &mut HashSet<String>,
    ) -> Result<()> {
        let key = w.key();
        let ik = IdentityKey {
            namespace: w.namespace.clone(),
            labels: w.labels.clone(),
        };
        let (id, new) = self.ids.acquire(&ik).ok_or(Error::IdentitiesExhausted)?;
        self.wl_id.insert(key.clone(), id);
        self.id_wls.entry(id).or_default().insert(key.clone());
        for a in &w.addresses {
            self.ipmap.insert(host_prefix(*a), id);
            self.addr_owner.insert(*a, key.clone());
        }
        let named = !w.named_ports.is_empty();
        self.model.workloads.insert(key, w);
        if new {
            self.by_ns
                .entry(ik.namespace.clone())
                .or_default()
                .insert(id);
            for (k, v) in &ik.labels {
                self.by_label
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .insert(id);
                self.by_ns_label
                    .entry((ik.namespace.clone(), k.clone(), v.clone()))
                    .or_default()
                    .insert(id);
            }
            let mut cands = HashSet::new();
            self.candidates(&ik, &mut cands);
            self.focus.extend(cands.into_iter().map(|k| (k, id)));
            self.update_quarantine(id, diff);
        } else {
            self.named_refs(id, touched);
        }
        if named {
            touched.extend(self.named_global.iter().cloned());
        }
        Ok(())
    }

    fn detach(&mut self, key: &str, diff: &mut RuleDiff, touched: &mut HashSet<String>) {
        let Some(id) = self.wl_id.remove(key) else {
            return;
        };
        let Some(w) = self.model.workloads.remove(key) else {
            return;
        };
        if let Some(s) = self.id_wls.get_mut(&id) {
            s.remove(key);
            if s.is_empty() {
                self.id_wls.remove(&id);
            }
        }
        for a in &w.addresses {
            if self.ipmap.get(host_prefix(*a)) == Some(&id) {
                self.ipmap.remove(host_prefix(*a));
            }
            if self.addr_owner.get(a).is_some_and(|o| o == key) {
                self.addr_owner.remove(a);
            }
        }
        if self.ids.release(id) {
            let ik = IdentityKey {
                namespace: w.namespace.clone(),
                labels: w.labels.clone(),
            };
            if let Some(s) = self.by_ns.get_mut(&ik.namespace) {
                s.remove(&id);
            }
            for (k, v) in &ik.labels {
                if let Some(s) = self.by_label.get_mut(&(k.clone(), v.clone())) {
                    s.remove(&id);
                    if s.is_empty() {
                        self.by_label.remove(&(k.clone(), v.clone()));
                    }
                }
                let nk = (ik.namespace.clone(), k.clone(), v.clone());
                if let Some(s) = self.by_ns_label.get_mut(&nk) {
                    s.remove(&id);
                    if s.is_empty() {
                        self.by_ns_label.remove(&nk);
                    }
                }
            }
            if let Some(r) = self.id_refs.get(&id) {
                touched.extend(r.iter().cloned());
            }
            if let Some([e, i]) = self.quarantine.remove(&id) {
                self.del(
                    TableRef {
                        observe: false,
                        tier: 0,
                        dir: Direction::Egress,
                    },
                    e,
                    diff,
                );
                self.del(
                    TableRef {
                        observe: false,
                        tier: 0,
                        dir: Direction::Ingress,
                    },
                    i,
                    diff,
                );
            }
        } else {
            self.named_refs(id, touched);
        }
        if !w.named_ports.is_empty() {
            touched.extend(self.named_global.iter().cloned());
        }
    }

    fn named_refs(&self, id: u32, touched: &mut HashSet<String>) {
        if let Some(r) = self.id_refs.get(&id) {
            touched.extend(
                r.iter()
                    .filter(|k| self.policies.get(*k).is_some_and(|s| s.named))
                    .cloned(),
            );
        }
    }

    fn update_quarantine(&mut self, id: u32, diff: &mut RuleDiff) {
        let q = self.ids.key(id).is_some_and(|k| {
            k.labels.get(&self.settings.quarantine_key) == Some(&self.settings.quarantine_value)
        });
        let te = TableRef {
            observe: false,
            tier: 0,
            dir: Direction::Egress,
        };
        let ti = TableRef {
            observe: false,
            tier: 0,
            dir: Direction::Ingress,
        };
        match (q, self.quarantine.get(&id).copied()) {
            (true, None) => {
                let c = cookie::make(cookie::QUARANTINE, false, 0, cookie::LOG);
                let e = self.ins(
                    te,
                    Match {
                        src_id: Some(id),
                        ..Match::ANY
                    },
                    Action::Deny,
                    u32::MAX,
                    c,
                    diff,
                );
                let c = cookie::make(cookie::QUARANTINE, true, 0, cookie::LOG);
                let i = self.ins(
                    ti,
                    Match {
                        dst_id: Some(id),
                        ..Match::ANY
                    },
                    Action::Deny,
                    u32::MAX,
                    c,
                    diff,
                );
                self.quarantine.insert(id, [e, i]);
            }
            (false, Some([e, i])) => {
                self.del(te, e, diff);
                self.del(ti, i, diff);
                self.quarantine.remove(&id);
            }
            _ => {}
        }
    }

    fn ins(
        &mut self,
        t: TableRef,
        m: Match,
        action: Action,
        priority: u32,
        cookie: u64,
        diff: &mut RuleDiff,
    ) -> RuleId {
        let id = RuleId(self.next_rule);
        self.next_rule += 1;
        let r = Rule {
            id,
            priority,
            m,
            action,
            cookie,
        };
        self.tables.table_mut(t).insert_rule(r);
        diff.inserts.push((t, r));
        id
    }

    fn del(&mut self, t: TableRef, id: RuleId, diff: &mut RuleDiff) {
        self.tables.table_mut(t).remove_rule(id);
        diff.deletes.push((t, id));
    }

    fn index_keys(p: &Policy) -> Vec<IndexKey> {
        let sel_key =
            |s: &LabelSelector, ns: Option<&String>| match (s.match_labels.iter().next(), ns) {
                (Some((k, v)), Some(ns)) => IndexKey::NsLabel(ns.clone(), k.clone(), v.clone()),
                (Some((k, v)), None) => IndexKey::Label(k.clone(), v.clone()),
                (None, Some(ns)) => IndexKey::Ns(ns.clone()),
                (None, None) => IndexKey::General,
            };
        let mut keys = vec![sel_key(&p.selector, p.namespace.as_ref())];
        for (_, r) in p.rules() {
            for peer in r.peers.iter().flatten() {
                match peer {
                    Peer::Pods {
                        ns: NsScope::Same,
                        pods,
                    } => keys.push(sel_key(pods, p.namespace.as_ref())),
                    Peer::Pods {
                        ns: NsScope::Select(nsel),
                        pods,
                    } => keys.push(
                        match (
                            nsel.match_labels.iter().next(),
                            pods.match_labels.iter().next(),
                        ) {
                            (Some((nk, nv)), Some((k, v))) => {
                                IndexKey::NsSel(nk.clone(), nv.clone(), k.clone(), v.clone())
                            }
                            (Some((nk, nv)), None) => IndexKey::NsSelOnly(nk.clone(), nv.clone()),
                            (None, _) => sel_key(pods, None),
                        },
                    ),
                    Peer::Entity(Entity::Cluster) => keys.push(IndexKey::General),
                    _ => {}
                }
            }
        }
        keys.sort_by_key(|k| format!("{k:?}"));
        keys.dedup();
        keys
    }

    fn index_policy(&mut self, key: &str, p: &Policy) {
        for k in Self::index_keys(p) {
            self.pindex.entry(k).or_default().insert(key.to_string());
        }
        if p.uses_ns_labels() {
            self.ns_label_policies.insert(key.to_string());
        }
    }

    fn unindex_policy(&mut self, key: &str, p: &Policy) {
        for k in Self::index_keys(p) {
            if let Some(s) = self.pindex.get_mut(&k) {
                s.remove(key);
                if s.is_empty() {
                    self.pindex.remove(&k);
                }
            }
        }
        self.ns_label_policies.remove(key);
        self.named_global.remove(key);
    }

    /// Policies that a new identity could change.
    fn candidates(&self, ik: &IdentityKey, out: &mut HashSet<String>) {
        let mut consider = |set: Option<&HashSet<String>>| {
            for k in set.into_iter().flatten() {
                if out.contains(k) {
                    continue;
                }
                if let Some(s) = self.policies.get(k) {
                    if self.mentions(&s.policy, ik) {
                        out.insert(k.clone());
                    }
                }
            }
        };
        consider(self.pindex.get(&IndexKey::General));
        consider(self.pindex.get(&IndexKey::Ns(ik.namespace.clone())));
        for (k, v) in &ik.labels {
            consider(self.pindex.get(&IndexKey::Label(k.clone(), v.clone())));
            consider(self.pindex.get(&IndexKey::NsLabel(
                ik.namespace.clone(),
                k.clone(),
                v.clone(),
            )));
        }
        if let Some(nl) = self.ns_labels(&ik.namespace) {
            for (nk, nv) in nl {
                consider(
                    self.pindex
                        .get(&IndexKey::NsSelOnly(nk.clone(), nv.clone())),
                );
                for (k, v) in &ik.labels {
                    consider(self.pindex.get(&IndexKey::NsSel(
                        nk.clone(),
                        nv.clone(),
                        k.clone(),
                        v.clone(),
                    )));
                }
            }
        }
    }

    fn ns_labels(&self, ns: &str) -> Option<&Labels> {
        self.model.namespaces.get(ns).map(|n| &n.labels)
    }

    fn target_matches(&self, p: &Policy, ik: &IdentityKey) -> bool {
        let ns_ok = match (&p.namespace, &p.ns_selector) {
            (Some(ns), _) => *ns == ik.namespace,
            (None, None) => true,
            (None, Some(sel)) => self
                .ns_labels(&ik.namespace)
                .is_some_and(|l| sel.matches(l)),
        };
        ns_ok && p.selector.matches(&ik.labels)
    }

    fn peer_matches(&self, p: &Policy, peer: &Peer, ik: &IdentityKey) -> bool {
        match peer {
            Peer::Pods {
                ns: NsScope::Same,
                pods,
            } => {
                p.namespace.as_ref().is_none_or(|ns| *ns == ik.namespace)
                    && pods.matches(&ik.labels)
            }
            Peer::Pods {
                ns: NsScope::Select(sel),
                pods,
            } => {
                self.ns_labels(&ik.namespace)
                    .is_some_and(|l| sel.matches(l))
                    && pods.matches(&ik.labels)
            }
            Peer::Entity(Entity::Cluster) => true,
            _ => false,
        }
    }

    fn mentions(&self, p: &Policy, ik: &IdentityKey) -> bool {
        self.target_matches(p, ik)
            || p.rules().any(|(_, r)| {
                r.peers
                    .iter()
                    .flatten()
                    .any(|x| self.peer_matches(p, x, ik))
            })
    }

    /// Identities among `cands` (or all) satisfying `f`.
    fn select(
        &self,
        sel: &LabelSelector,
        ns: Option<&str>,
        f: impl Fn(&IdentityKey) -> bool,
    ) -> Vec<u32> {
        let empty = BTreeSet::new();
        let cands: Box<dyn Iterator<Item = u32> + '_> = match (sel.match_labels.iter().next(), ns) {
            (Some(_), Some(ns)) => {
                let best = sel
                    .match_labels
                    .iter()
                    .map(|(k, v)| {
                        self.by_ns_label
                            .get(&(ns.to_string(), k.clone(), v.clone()))
                    })
                    .min_by_key(|s| s.map_or(0, |s| s.len()))
                    .flatten();
                Box::new(best.unwrap_or(&empty).iter().copied())
            }
            (Some(_), None) => {
                let best = sel
                    .match_labels
                    .iter()
                    .map(|(k, v)| self.by_label.get(&(k.clone(), v.clone())))
                    .min_by_key(|s| s.map_or(0, |s| s.len()))
                    .flatten();
                Box::new(best.unwrap_or(&empty).iter().copied())
            }
            (None, Some(ns)) => Box::new(self.by_ns.get(ns).unwrap_or(&empty).iter().copied()),
            (None, None) => Box::new(self.ids.iter().map(|(i, _)| i)),
        };
        let mut v: Vec<u32> = cands.filter(|i| self.ids.key(*i).is_some_and(&f)).collect();
        v.sort_unstable();
        v
    }

    fn targets(&self, p: &Policy) -> Vec<u32> {
        self.select(&p.selector, p.namespace.as_deref(), |ik| {
            self.target_matches(p, ik)
        })
    }

    fn remotes(&self, p: &Policy, peer: &Peer, out: &mut Vec<Remote>) {
        match peer {
            Peer::Pods { ns, pods } => {
                let scope = match ns {
                    NsScope::Same => p.namespace.as_deref(),
                    NsScope::Select(_) => None,
                };
                out.extend(
                    self.select(pods, scope, |ik| self.peer_matches(p, peer, ik))
                        .into_iter()
                        .map(Remote::Id),
                );
            }
            Peer::Cidr { cidr, except } => {
                out.extend(subtract(*cidr, except).into_iter().map(Remote::Net))
            }
            Peer::Entity(Entity::World) => out.push(Remote::Id(identity::WORLD)),
            Peer::Entity(Entity::Host) => out.push(Remote::Id(identity::HOST)),
            Peer::Entity(Entity::Cluster) => {
                out.extend(self.ids.iter().map(|(i, _)| Remote::Id(i)))
            }
            Peer::Entity(Entity::All) => out.push(Remote::Any),
        }
    }

    /// (port, per-address exceptions) that workloads of identity `id` give a named port.
    /// Returns the common port if all agree, else per-address ports.
    fn resolve_named(
        &self,
        id: u32,
        name: &str,
        proto: u8,
    ) -> Result<Option<u16>, Vec<(IpAddr, u16)>> {
        let Some(wls) = self.id_wls.get(&id) else {
            return Ok(None);
        };
        let mut ports = Vec::new();
        for k in wls {
            if let Some(w) = self.model.workloads.get(k) {
                ports.push((w, w.resolve_port(name, proto)));
            }
        }
        let first = ports.first().map(|(_, p)| *p);
        if ports.iter().all(|(_, p)| Some(*p) == first) {
            return Ok(first.flatten());
        }
        let mut per = Vec::new();
        for (w, p) in ports {
            if let Some(p) = p {
                per.extend(w.addresses.iter().map(|a| (*a, p)));
            }
        }
        Err(per)
    }

    /// All rules of a policy, or with `focus`, only those involving that (new) identity.
    fn generate(&self, st: &PolicyState, focus: Option<u32>) -> Gen {
        let p = &st.policy;
        let mut g = Gen::default();
        let targets = self.targets(p);
        g.refs.extend(
            targets
                .iter()
                .copied()
                .filter(|t| focus.is_none_or(|f| f == *t)),
        );
        let tier = p.tier.index() as u8;
        for (ingress, rules) in [(true, &p.ingress), (false, &p.egress)] {
            let Some(rules) = rules else { continue };
            let dir = if ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            if p.tier == TierKind::Application {
                for t in targets.iter().filter(|t| focus.is_none_or(|f| f == **t)) {
                    g.isolates.push((
                        TableRef {
                            observe: p.audit,
                            tier,
                            dir,
                        },
                        *t,
                    ));
                }
            }
            for (ri, r) in rules.iter().enumerate() {
                self.gen_rule(
                    p, st.idx, ingress, dir, tier, ri, r, &targets, focus, &mut g,
                );
            }
        }
        g
    }

    #[allow(clippy::too_many_arguments)]
    fn gen_rule(
        &self,
        p: &Policy,
        pidx: u32,
        ingress: bool,
        dir: Direction,
        tier: u8,
        ri: usize,
        r: &PolicyRule,
        all_targets: &[u32],
        focus: Option<u32>,
        g: &mut Gen,
    ) {
        let observe = p.audit || r.action == RuleAction::Log;
        let action = match r.action {
            RuleAction::Allow | RuleAction::Log => Action::Allow,
            RuleAction::Deny => Action::Deny,
            RuleAction::Pass => Action::Pass,
        };
        let flags = if r.log || r.action == RuleAction::Log {
            cookie::LOG
        } else {
            0
        } | if p.audit { cookie::AUDIT } else { 0 };
        let prio = rule_priority(p.priority, ri, action);
        let ck = cookie::make(pidx, ingress, ri.min(0x7fff) as u16, flags);
        let table = TableRef { observe, tier, dir };
        let all_remotes = || {
            let mut remotes = Vec::new();
            match &r.peers {
                None => remotes.push(Remote::Any),
                Some(peers) => {
                    for peer in peers {
                        self.remotes(p, peer, &mut remotes);
                    }
                }
            }
            remotes.sort_unstable_by_key(|r| format!("{r:?}"));
            remotes.dedup();
            remotes
        };
        // Full: every target x every remote. Focused on a new identity i: i as a
        // target x every remote, plus every target x i as a remote.
        let passes: Vec<(Vec<u32>, Vec<Remote>)> = match focus {
            None => vec![(all_targets.to_vec(), all_remotes())],
            Some(i) => {
                let mut v = Vec::new();
                if all_targets.contains(&i) {
                    v.push((vec![i], all_remotes()));
                }
                let hit = self.ids.key(i).is_some_and(|ik| {
                    r.peers
                        .iter()
                        .flatten()
                        .any(|peer| self.peer_matches(p, peer, ik))
                });
                if hit {
                    v.push((all_targets.to_vec(), vec![Remote::Id(i)]));
                }
                v
            }
        };
        for (targets, remotes) in passes {
            self.emit_rules(
                p, ingress, table, action, prio, ck, r, &targets, &remotes, g,
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_rules(
        &self,
        _p: &Policy,
        ingress: bool,
        table: TableRef,
        action: Action,
        prio: u32,
        ck: u64,
        r: &PolicyRule,
        targets: &[u32],
        remotes: &[Remote],
        g: &mut Gen,
    ) {
        for rm in remotes {
            if let Remote::Id(i) = rm {
                g.refs.insert(*i);
            }
        }
        let mk = |local: u32,
                  rm: &Remote,
                  proto: Option<u8>,
                  dport: PortRange,
                  dst_addr: Option<IpAddr>| {
            let mut m = Match {
                proto,
                dport,
                ..Match::ANY
            };
            if ingress {
                m.dst_id = Some(local);
                match rm {
                    Remote::Any => {}
                    Remote::Id(i) => m.src_id = Some(*i),
                    Remote::Net(n) => m.src = *n,
                }
            } else {
                m.src_id = Some(local);
                match rm {
                    Remote::Any => {}
                    Remote::Id(i) => m.dst_id = Some(*i),
                    Remote::Net(n) => m.dst = *n,
                }
            }
            if let Some(a) = dst_addr {
                m.dst = host_prefix(a);
            }
            m
        };
        let any_port = [crate::policy::PortSpec {
            proto: None,
            port: None,
        }];
        let ports: &[crate::policy::PortSpec] = if r.ports.is_empty() {
            &any_port
        } else {
            &r.ports
        };
        for ps in ports {
            let range = match &ps.port {
                None => Some(PortRange::ANY),
                Some(PortRef::Num(a, e)) => Some(PortRange {
                    lo: *a,
                    hi: e.unwrap_or(*a),
                }),
                Some(PortRef::Named(_)) => None,
            };
            if let Some(range) = range {
                for t in targets {
                    for rm in remotes {
                        g.rules
                            .push((table, mk(*t, rm, ps.proto, range, None), action, prio, ck));
                    }
                }
                continue;
            }
            let Some(PortRef::Named(name)) = &ps.port else {
                continue;
            };
            let proto = ps.proto.unwrap_or(crate::model::proto::TCP);
            let emit_for_dst = |local: u32, rm: &Remote, dst_id: u32, g: &mut Gen| match self
                .resolve_named(dst_id, name, proto)
            {
                Ok(Some(port)) => g.rules.push((
                    table,
                    mk(local, rm, Some(proto), PortRange::exact(port), None),
                    action,
                    prio,
                    ck,
                )),
                Ok(None) => {}
                Err(per) => {
                    for (a, port) in per {
                        g.rules.push((
                            table,
                            mk(local, rm, Some(proto), PortRange::exact(port), Some(a)),
                            action,
                            prio,
                            ck,
                        ));
                    }
                }
            };
            if ingress {
                for t in targets {
                    for rm in remotes {
                        emit_for_dst(*t, rm, *t, g);
                    }
                }
            } else {
                for t in targets {
                    for rm in remotes {
                        match rm {
                            Remote::Id(d) => emit_for_dst(*t, rm, *d, g),
                            Remote::Any => {
                                g.named_global = true;
                                let all: Vec<u32> = self.id_wls.keys().copied().collect();
                                for d in all {
                                    emit_for_dst(*t, &Remote::Id(d), d, g);
                                }
                            }
                            Remote::Net(n) => {
                                g.named_global = true;
                                for w in self.model.workloads.values() {
                                    let Some(port) = w.resolve_port(name, proto) else {
                                        continue;
                                    };
                                    for a in &w.addresses {
                                        if n.contains(addr_of(*a)) {
                                            let m = mk(
                                                *t,
                                                &Remote::Any,
                                                Some(proto),
                                                PortRange::exact(port),
                                                Some(*a),
                                            );
                                            g.rules.push((table, m, action, prio, ck));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn recompute_all(&mut self, touched: HashSet<String>, diff: &mut RuleDiff) {
        let mut v: Vec<String> = touched.iter().cloned().collect();
        v.sort();
        for k in v {
            if self.policies.contains_key(&k) {
                self.recompute(&k, diff);
            }
        }
        // New identities: only their own rules, for policies not fully recomputed.
        let mut focus = std::mem::take(&mut self.focus);
        focus.sort();
        for (k, id) in focus {
            if !touched.contains(&k) && self.ids.key(id).is_some() {
                self.extend_for_identity(&k, id, diff);
            }
        }
    }

    /// Adds the rules a new identity brings to a policy (no full recompute).
    fn extend_for_identity(&mut self, key: &str, id: u32, diff: &mut RuleDiff) {
        let Some(st) = self.policies.get(key) else {
            return;
        };
        let egress_named = st.policy.egress.iter().flatten().any(|r| {
            r.ports
                .iter()
                .any(|p| matches!(p.port, Some(PortRef::Named(_))))
        });
        if egress_named || self.named_global.contains(key) {
            return self.recompute(key, diff);
        }
        let g = self.generate(st, Some(id));
        let mut st = self.policies.remove(key).expect("present");
        let mut added: Vec<Sig> = g
            .rules
            .into_iter()
            .filter(|s| !st.rules.contains_key(s))
            .collect();
        added.sort_by_key(|s| (s.3, s.4, format!("{:?}", s.1)));
        added.dedup();
        for s in added {
            let rid = self.ins(s.0, s.1, s.2, s.3, s.4, diff);
            st.rules.insert(s, rid);
        }
        for x in g.isolates {
            if !st.isolates.contains(&x) {
                self.iso_inc(x, diff);
                st.isolates.push(x);
            }
        }
        for i in g.refs {
            if st.refs.insert(i) {
                self.id_refs.entry(i).or_default().insert(key.to_string());
            }
        }
        self.policies.insert(key.to_string(), st);
    }

    fn recompute(&mut self, key: &str, diff: &mut RuleDiff) {
        self.recompute_with(key, diff, false)
    }

    fn recompute_with(&mut self, key: &str, diff: &mut RuleDiff, withdraw: bool) {
        let Some(st) = self.policies.get(key) else {
            return;
        };
        let g = if withdraw {
            Gen::default()
        } else {
            self.generate(st, None)
        };
        let named = st.policy.uses_named_ports();
        let mut st = self.policies.remove(key).expect("present");
        st.named = named;
        // Rules: keep what is unchanged, delete what went, insert what came.
        let new: HashSet<Sig> = g.rules.into_iter().collect();
        let gone: Vec<Sig> = st
            .rules
            .keys()
            .filter(|s| !new.contains(*s))
            .cloned()
            .collect();
        for s in gone {
            if let Some(id) = st.rules.remove(&s) {
                self.del(s.0, id, diff);
            }
        }
        let mut added: Vec<Sig> = new
            .into_iter()
            .filter(|s| !st.rules.contains_key(s))
            .collect();
        added.sort_by_key(|s| (s.3, s.4, format!("{:?}", s.1)));
        for s in added {
            let id = self.ins(s.0, s.1, s.2, s.3, s.4, diff);
            st.rules.insert(s, id);
        }
        // Isolation reference counts.
        let old_iso: HashSet<(TableRef, u32)> = st.isolates.iter().copied().collect();
        let new_iso: HashSet<(TableRef, u32)> = g.isolates.iter().copied().collect();
        for x in old_iso.difference(&new_iso) {
            self.iso_dec(*x, diff);
        }
        for x in new_iso.difference(&old_iso) {
            self.iso_inc(*x, diff);
        }
        st.isolates = new_iso.into_iter().collect();
        // Identity references.
        for i in st.refs.difference(&g.refs) {
            if let Some(s) = self.id_refs.get_mut(i) {
                s.remove(key);
                if s.is_empty() {
                    self.id_refs.remove(i);
                }
            }
        }
        for i in g.refs.difference(&st.refs) {
            self.id_refs.entry(*i).or_default().insert(key.to_string());
        }
        st.refs = g.refs;
        if g.named_global {
            self.named_global.insert(key.to_string());
        } else {
            self.named_global.remove(key);
        }
        self.policies.insert(key.to_string(), st);
    }

    fn iso_inc(&mut self, x: (TableRef, u32), diff: &mut RuleDiff) {
        if let Some(e) = self.iso.get_mut(&x) {
            e.0 += 1;
            return;
        }
        let (t, id) = x;
        let ingress = t.dir == Direction::Ingress;
        let m = if ingress {
            Match {
                dst_id: Some(id),
                ..Match::ANY
            }
        } else {
            Match {
                src_id: Some(id),
                ..Match::ANY
            }
        };
        let c = cookie::make(
            cookie::ISOLATION,
            ingress,
            0,
            if t.observe { cookie::AUDIT } else { 0 },
        );
        let rid = self.ins(t, m, Action::Deny, 0, c, diff);
        self.iso.insert(x, (1, rid));
    }

    fn iso_dec(&mut self, x: (TableRef, u32), diff: &mut RuleDiff) {
        let Some(e) = self.iso.get_mut(&x) else {
            return;
        };
        e.0 -= 1;
        if e.0 == 0 {
            let rid = e.1;
            self.iso.remove(&x);
            self.del(x.0, rid, diff);
        }
    }
}

fn merge(into: &mut RuleDiff, d: RuleDiff) {
    into.inserts.extend(d.inserts);
    into.deletes.extend(d.deletes);
}

/// The namespace name label (re-exported for command code).
pub const NAMESPACE_LABEL: &str = NS_NAME_LABEL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trips() {
        let c = cookie::make(12345, true, 77, cookie::LOG | cookie::AUDIT);
        assert_eq!(
            (
                cookie::policy(c),
                cookie::ingress(c),
                cookie::rule(c),
                cookie::flags(c)
            ),
            (12345, true, 77, cookie::LOG | cookie::AUDIT)
        );
        let c = cookie::make(cookie::ISOLATION, false, 0, 0);
        assert_eq!(
            (cookie::policy(c), cookie::ingress(c)),
            (cookie::ISOLATION, false)
        );
    }

    #[test]
    fn priority_orders_policy_then_rule_then_action() {
        // Lower policy priority first, whatever the rule position.
        assert!(rule_priority(10, 500, Action::Allow) > rule_priority(11, 0, Action::Deny));
        // Earlier rule of a policy first, whatever the action.
        assert!(rule_priority(10, 0, Action::Allow) > rule_priority(10, 1, Action::Deny));
        // Same position: deny, then pass, then allow.
        assert!(rule_priority(10, 3, Action::Deny) > rule_priority(10, 3, Action::Pass));
        assert!(rule_priority(10, 3, Action::Pass) > rule_priority(10, 3, Action::Allow));
        // Every policy rule beats the isolation deny (priority 0).
        assert!(rule_priority(u16::MAX, usize::MAX, Action::Allow) > 0);
    }
}
