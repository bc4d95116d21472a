//! The policy plane: the control thread's side of the switch. It owns the
//! compiler (policies + model -> rules, incrementally) and the left-right
//! writer of the dataplane state. Every change (policy load or delete,
//! workload add, move, relabel, delete, quarantine) becomes one rule diff plus
//! the address entries it touched, staged and published as ONE new generation.

use super::names::Names;
use super::state::{Dest, DpOp, DpState};
use control::{Compiler, Model, PolicySet, RuleDiff, Workload};
use flowtable::key::addr_of;
use flowtable::leftright::{Absorb, Reader, Writer};
use flowtable::{Classifier, Prefix};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What one change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The new generation.
    pub gen: u64,
    /// Rules inserted.
    pub inserts: usize,
    /// Rules removed.
    pub deletes: usize,
    /// Address entries (identity or destination) changed.
    pub addresses: usize,
    /// Compile time.
    pub compile: Duration,
    /// Stage + publish time (includes waiting for readers of the old copy).
    pub publish: Duration,
    /// TSC just before the swap (publish-to-enforced latency starts here).
    pub swap_tsc: u64,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {}: +{} -{} rules, {} address entries (compile {:.1} us, publish {:.1} us)",
            self.gen,
            self.inserts,
            self.deletes,
            self.addresses,
            self.compile.as_secs_f64() * 1e6,
            self.publish.as_secs_f64() * 1e6
        )
    }
}

fn host(a: IpAddr) -> Prefix {
    Prefix::new(addr_of(a), 128)
}

/// The control thread's policy plane.
#[derive(Debug)]
pub struct PolicyPlane {
    compiler: Compiler<Classifier>,
    writer: Writer<DpState>,
    /// Address -> workload key (for destinations), kept current by every
    /// workload operation.
    by_addr: HashMap<IpAddr, String>,
    /// Workload and rule names for flow records.
    names: Names,
}

impl PolicyPlane {
    /// Compiles `set` over `model` and publishes generation 0.
    ///
    /// # Errors
    /// Compile errors.
    pub fn new(model: Model, set: PolicySet, uplink: Option<Dest>) -> control::Result<Self> {
        let compiler: Compiler<Classifier> = Compiler::with_policies(model, set)?;
        let t = compiler.tables();
        let mut st = DpState::new(t.enforce.clone(), t.observe.clone());
        st.ipmap = compiler.ipmap().clone();
        let mut by_addr = HashMap::new();
        let mut ops = Vec::new();
        if let Some(u) = uplink {
            ops.push(DpOp::SetDest(Prefix::ANY, u));
        }
        for (key, w) in &compiler.model().workloads {
            for a in &w.addresses {
                by_addr.insert(*a, key.clone());
                if let Some(d) = dest_of(w) {
                    ops.push(DpOp::SetDest(host(*a), d));
                }
            }
        }
        for op in &ops {
            st.absorb(op).map_err(|e| control::Error::BadArg { arg: "workloads".into(), msg: e.to_string() })?;
        }
        let names = Names::default();
        for (a, key) in &by_addr {
            let w = &compiler.model().workloads[key];
            names.set_address(*a, Some((key.clone(), w.labels.clone())));
        }
        for pt in [&compiler.tables().enforce, &compiler.tables().observe] {
            for t in &pt.tiers {
                for r in t.egress.iter().chain(t.ingress.iter()) {
                    names.set_rule(r.cookie, &compiler.origin(r));
                }
            }
        }
        Ok(Self { compiler, writer: Writer::new(st), by_addr, names })
    }

    /// A reader for an lcore.
    pub fn reader(&self) -> Reader<DpState> {
        self.writer.reader()
    }

    /// The compiler (for explain, show policy, flow-record names).
    pub fn compiler(&self) -> &Compiler<Classifier> {
        &self.compiler
    }

    /// Names for flow records (shared with the exporter thread).
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// The generation last published.
    pub fn gen(&self) -> u64 {
        self.writer.gen()
    }

    /// Stages `diff` and the address entries of `touched`, then publishes.
    fn commit(&mut self, diff: RuleDiff, touched: &[IpAddr], t0: Instant) -> Published {
        self.commit_with(vec![diff], touched, t0, false)
    }

    /// As `commit`; `cut` makes the new generation cut live connections even
    /// where established ones are kept (quarantine).
    /// Diffs are staged in order (each one's deletes, then its inserts).
    fn commit_with(&mut self, diffs: Vec<RuleDiff>, touched: &[IpAddr], t0: Instant, cut: bool) -> Published {
        let compile = t0.elapsed();
        let t1 = Instant::now();
        let (mut inserts, mut deletes) = (0, 0);
        for diff in diffs {
            inserts += diff.inserts.len();
            deletes += diff.deletes.len();
            for (t, id) in diff.deletes {
                self.writer.apply(DpOp::Remove(t, id)).expect("compiler and dataplane tables agree");
            }
            for (t, r) in diff.inserts {
                self.names.set_rule(r.cookie, &self.compiler.origin(&r));
                self.writer.apply(DpOp::Insert(t, r)).expect("compiler and dataplane tables agree");
            }
        }
        let mut addresses = 0;
        for &a in touched {
            let p = host(a);
            let want = self.compiler.ipmap().get(p).copied();
            if self.writer.staged().ipmap.get(p).copied() != want {
                let op = match want {
                    Some(id) => DpOp::SetIdentity(p, id),
                    None => DpOp::ClearIdentity(p),
                };
                self.writer.apply(op).expect("address ops never fail");
                addresses += 1;
            }
            let wl = self.by_addr.get(&a).and_then(|k| self.compiler.model().workloads.get(k)).filter(|w| w.addresses.contains(&a));
            self.names.set_address(a, wl.map(|w| (w.key(), w.labels.clone())));
            let want = wl.and_then(dest_of);
            let have = self.writer.staged().routes.get(p).map(|id| self.writer.staged().dests[*id as usize]);
            if have != want {
                let op = match want {
                    Some(d) => DpOp::SetDest(p, d),
                    None => DpOp::ClearDest(p),
                };
                self.writer.apply(op).expect("address ops never fail");
                addresses += 1;
            }
        }
        let e = &self.compiler.tables().enforce;
        let s = &self.writer.staged().enforce;
        if (e.default_egress, e.default_ingress) != (s.default_egress, s.default_ingress) {
            let op = DpOp::SetDefaults(e.default_egress, e.default_ingress);
            self.writer.apply(op).expect("defaults never fail");
        }
        if cut {
            let next = self.writer.gen() + 1;
            self.writer.apply(DpOp::CutBefore(next)).expect("never fails");
        }
        let swap_tsc = pmd::lcore::rdtsc();
        let gen = self.writer.publish();
        Published { gen, inserts, deletes, addresses, compile, publish: t1.elapsed(), swap_tsc }
    }

    /// Any sequence of compiler changes (`f` returns their rule diffs in the
    /// order it made them), published as one generation; every workload
    /// address before and after is re-checked. Used to replay conformance
    /// cases (namespace labels, pod re-creation, ...). When `f` fails,
    /// nothing is published and the compiler may be ahead of the dataplane:
    /// the caller must drop the plane.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn change<E>(&mut self, f: impl FnOnce(&mut Compiler<Classifier>) -> Result<Vec<RuleDiff>, E>) -> Result<Published, E> {
        let t0 = Instant::now();
        let diffs = f(&mut self.compiler)?;
        let mut touched: Vec<IpAddr> = self.by_addr.keys().copied().collect();
        self.by_addr.clear();
        for (key, w) in &self.compiler.model().workloads {
            for a in &w.addresses {
                self.by_addr.insert(*a, key.clone());
                touched.push(*a);
            }
        }
        touched.sort();
        touched.dedup();
        Ok(self.commit_with(diffs, &touched, t0, false))
    }

    /// The addresses of a workload named `ns/name` or by a unique bare name.
    fn addresses_of(&self, key: &str) -> Vec<IpAddr> {
        self.compiler.model().find(key).map(|w| w.addresses.clone()).unwrap_or_default()
    }

    /// `policy load FILE...`: adds or replaces the policies in the files (all
    /// or nothing: a file that does not validate changes nothing).
    ///
    /// # Errors
    /// Parse and validation errors, naming file, line and field.
    pub fn load_policies(&mut self, files: &[PathBuf]) -> control::Result<Published> {
        let t0 = Instant::now();
        let set = control::commands::load_policies(files)?;
        let mut diff = RuleDiff::default();
        for p in set.policies {
            let d = self.compiler.set_policy(p)?;
            diff.inserts.extend(d.inserts);
            diff.deletes.extend(d.deletes);
        }
        Ok(self.commit(diff, &[], t0))
    }

    /// `policy delete NAME`.
    ///
    /// # Errors
    /// An unknown policy.
    pub fn delete_policy(&mut self, key: &str) -> control::Result<Published> {
        if self.compiler.policy(key).is_none() {
            return Err(control::Error::BadArg { arg: key.to_string(), msg: format!("no policy {key:?} (keys are namespace/name or name)") });
        }
        let t0 = Instant::now();
        let diff = self.compiler.remove_policy(key)?;
        Ok(self.commit(diff, &[], t0))
    }

    /// `workload add`.
    ///
    /// # Errors
    /// A duplicate or invalid workload.
    pub fn add_workload(&mut self, w: Workload) -> control::Result<Published> {
        let t0 = Instant::now();
        let (addrs, key) = (w.addresses.clone(), w.key());
        let diff = self.compiler.add_workload(w)?;
        for a in &addrs {
            self.by_addr.insert(*a, key.clone());
        }
        Ok(self.commit(diff, &addrs, t0))
    }

    /// Makes the plane enforce `d` (a checked cluster state from the
    /// datastore agent): namespaces, workloads and policies that differ are
    /// changed, everything else is left alone, and the whole change is ONE
    /// new generation (none when nothing differs, so a resync after a
    /// datastore outage leaves live connections untouched). Identities are
    /// pinned to the cluster's numbers first.
    ///
    /// # Errors
    /// Compile errors (the agent has compiled `d` once already, so these
    /// mean a bug); the plane may then hold part of the change.
    pub fn apply_desired(&mut self, d: control::datastore::Desired) -> control::Result<Option<Published>> {
        let t0 = Instant::now();
        self.compiler.pin_identities(d.identities);
        let mut diff = RuleDiff::default();
        let mut touched: Vec<IpAddr> = Vec::new();
        let merge = |diff: &mut RuleDiff, x: RuleDiff| {
            diff.inserts.extend(x.inserts);
            diff.deletes.extend(x.deletes);
        };
        for (name, ns) in &d.model.namespaces {
            if self.compiler.model().namespaces.get(name).map(|n| &n.labels) != Some(&ns.labels) {
                let x = self.compiler.add_namespace(name, ns.labels.clone())?;
                merge(&mut diff, x);
            }
        }
        let gone: Vec<String> = self.compiler.model().workloads.keys().filter(|k| !d.model.workloads.contains_key(*k)).cloned().collect();
        for k in gone {
            let addrs = self.addresses_of(&k);
            let x = self.compiler.remove_workload(&k)?;
            merge(&mut diff, x);
            for a in &addrs {
                self.by_addr.remove(a);
            }
            touched.extend(addrs);
        }
        for (k, w) in &d.model.workloads {
            let old = self.compiler.model().workloads.get(k).cloned();
            let id_moved = self.compiler.identities().differs_from_pin(&control::identity::IdentityKey { namespace: w.namespace.clone(), labels: w.labels.clone() });
            if old.as_ref() == Some(w) && !id_moved {
                continue;
            }
            if let Some(o) = &old {
                for a in &o.addresses {
                    self.by_addr.remove(a);
                }
                touched.extend(o.addresses.iter().copied());
            }
            let x = if id_moved && old.is_some() {
                let x = self.compiler.remove_workload(k)?;
                merge(&mut diff, x);
                self.compiler.add_workload(w.clone())?
            } else {
                self.compiler.replace_workload(w.clone())?
            };
            merge(&mut diff, x);
            for a in &w.addresses {
                self.by_addr.insert(*a, k.clone());
            }
            touched.extend(w.addresses.iter().copied());
        }
        let gone_ns: Vec<String> = self.compiler.model().namespaces.keys().filter(|n| !d.model.namespaces.contains_key(*n)).cloned().collect();
        for n in gone_ns {
            let x = self.compiler.remove_namespace(&n)?;
            merge(&mut diff, x);
        }
        let x = self.compiler.replace_policies(d.policies)?;
        merge(&mut diff, x);
        let defaults_changed = {
            let e = &self.compiler.tables().enforce;
            let s = &self.writer.staged().enforce;
            (e.default_egress, e.default_ingress) != (s.default_egress, s.default_ingress)
        };
        if diff.is_empty() && touched.is_empty() && !defaults_changed {
            return Ok(None);
        }
        touched.sort();
        touched.dedup();
        Ok(Some(self.commit(diff, &touched, t0)))
    }

    /// `workload del`.
    ///
    /// # Errors
    /// An unknown workload.
    pub fn remove_workload(&mut self, key: &str) -> control::Result<Published> {
        let t0 = Instant::now();
        let addrs = self.addresses_of(key);
        let diff = self.compiler.remove_workload(key)?;
        for a in &addrs {
            self.by_addr.remove(a);
        }
        Ok(self.commit(diff, &addrs, t0))
    }

    /// `workload move`: new addresses (policy follows: one map entry each).
    ///
    /// # Errors
    /// An unknown workload or a taken address.
    pub fn move_workload(&mut self, key: &str, addrs: Vec<IpAddr>) -> control::Result<Published> {
        let t0 = Instant::now();
        let mut touched = self.addresses_of(key);
        let diff = self.compiler.move_workload(key, addrs.clone())?;
        for a in &touched {
            self.by_addr.remove(a);
        }
        let key = self.compiler.model().find(key)?.key();
        for a in &addrs {
            self.by_addr.insert(*a, key.clone());
        }
        touched.extend(addrs);
        Ok(self.commit(diff, &touched, t0))
    }

    /// `workload label`: replaces the workload's labels.
    ///
    /// # Errors
    /// An unknown workload.
    pub fn label_workload(&mut self, key: &str, labels: BTreeMap<String, String>) -> control::Result<Published> {
        let t0 = Instant::now();
        let addrs = self.addresses_of(key);
        let diff = self.compiler.set_workload_labels(key, labels)?;
        Ok(self.commit(diff, &addrs, t0))
    }

    /// A port's link went down or came back (a VM's vhost-user connection).
    /// Down: traffic routed to the port is dropped (counted as `link_down`)
    /// and every connection decided before is re-decided, so the VM's flows
    /// do not outlive its link. Up: traffic resumes at the next burst.
    pub fn set_port_link(&mut self, port: u16, up: bool) -> Published {
        let t0 = Instant::now();
        self.writer.apply(DpOp::SetLink(port, up)).expect("link ops never fail");
        self.commit_with(vec![RuleDiff::default()], &[], t0, !up)
    }

    /// True when the published state marks `port`'s link down.
    pub fn port_link_down(&self, port: u16) -> bool {
        self.writer.staged().link_down(port)
    }

    /// `quarantine W` / `unquarantine W`: sets or clears the quarantine label.
    ///
    /// # Errors
    /// An unknown workload.
    pub fn quarantine(&mut self, key: &str, on: bool) -> control::Result<Published> {
        let w = self.compiler.model().find(key)?;
        let mut labels = w.labels.clone();
        let s = self.compiler.settings();
        if on {
            labels.insert(s.quarantine_key.clone(), s.quarantine_value.clone());
        } else {
            labels.remove(&s.quarantine_key);
        }
        let key = w.key();
        let t0 = Instant::now();
        let addrs = self.addresses_of(&key);
        let diff = self.compiler.set_workload_labels(&key, labels)?;
        Ok(self.commit_with(vec![diff], &addrs, t0, on))
    }
}

fn dest_of(w: &Workload) -> Option<Dest> {
    Some(Dest { port: w.port?, mac: w.mac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtable::FlowKey;
    use std::path::Path;

    fn ex(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies").join(p)
    }

    fn plane() -> PolicyPlane {
        let model = Model::load(&ex("model.toml")).unwrap();
        let set = control::commands::load_policies(&[ex("three-tier.toml")]).unwrap();
        PolicyPlane::new(model, set, Some(Dest { port: 0, mac: Some([2, 0, 0, 0, 0, 0xfe]) })).unwrap()
    }

    /// Decides src -> dst:port/tcp the way an lcore does: identities from the
    /// published IP map, then the published tables.
    fn allowed(r: &Reader<DpState>, src: &str, dst: &str, port: u16) -> bool {
        let s = r.load();
        let (a, b): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let mut k = FlowKey::new(0, addr_of(a), addr_of(b), 6, 40000, port);
        k.src_id = s.ipmap.lookup(k.src).map_or(0, |(_, v)| *v);
        k.dst_id = s.ipmap.lookup(k.dst).map_or(0, |(_, v)| *v);
        s.enforce.decide(&k).allowed()
    }

    #[test]
    fn published_state_enforces_the_policies_and_follows_changes() {
        let mut p = plane();
        let r = p.reader();
        assert!(allowed(&r, "10.0.1.10", "10.0.1.20", 8080), "web -> api on http-api");
        assert!(!allowed(&r, "10.0.1.10", "10.0.1.30", 5432), "web -> db denied");
        assert!(allowed(&r, "10.0.1.20", "10.0.1.30", 5432), "api -> db");
        // forwarding table: workloads with a port and MAC; the rest go to the uplink
        let s = r.load();
        assert_eq!(s.dest(addr_of("10.0.1.10".parse().unwrap())).map(|d| d.port), Some(1));
        assert_eq!(s.dest(addr_of("192.0.2.1".parse().unwrap())).map(|d| d.port), Some(0), "the uplink is the default route");
        drop(s);

        // quarantine api-1: its live flows are denied at the new generation
        let g0 = p.gen();
        let pb = p.quarantine("shop/api-1", true).unwrap();
        assert_eq!(pb.gen, g0 + 1);
        assert!(pb.inserts > 0);
        assert_eq!(r.load().gen(), pb.gen);
        assert!(!allowed(&r, "10.0.1.10", "10.0.1.20", 8080));
        assert!(!allowed(&r, "10.0.1.20", "10.0.1.30", 5432));
        p.quarantine("shop/api-1", false).unwrap();
        assert!(allowed(&r, "10.0.1.20", "10.0.1.30", 5432));

        // the api moves: policy follows it with address entries only, no rule
        let pb = p.move_workload("shop/api-1", vec!["10.0.9.20".parse().unwrap()]).unwrap();
        assert_eq!((pb.inserts, pb.deletes), (0, 0), "a move touches no rule: {pb}");
        assert!(pb.addresses >= 2, "{pb}");
        assert!(allowed(&r, "10.0.1.10", "10.0.9.20", 8080));
        assert!(!allowed(&r, "10.0.1.10", "10.0.1.20", 8080), "the old address is unknown now (zero trust)");
        let s = r.load();
        assert_eq!(s.dest(addr_of("10.0.9.20".parse().unwrap())).map(|d| d.port), Some(3));
        assert_eq!(s.dest(addr_of("10.0.1.20".parse().unwrap())).map(|d| d.port), Some(0), "the old address now goes to the uplink");
        drop(s);

        // relabel web-1 as a db client it is not allowed to be: web policy no longer selects it
        let mut labels = p.compiler().model().workloads["shop/web-1"].labels.clone();
        labels.insert("app".into(), "intruder".into());
        p.label_workload("shop/web-1", labels).unwrap();
        assert!(!allowed(&r, "10.0.1.10", "10.0.9.20", 8080));

        // deleting a policy and an unknown one
        assert!(p.delete_policy("no/such").is_err());
        p.delete_policy("shop/db").unwrap();
        assert!(!allowed(&r, "10.0.9.20", "10.0.1.30", 5432), "zero trust: nothing allows db ingress now");
    }

    #[test]
    fn a_vm_link_going_down_marks_its_port_and_cuts_connections() {
        let mut p = plane();
        let r = p.reader();
        let g0 = p.gen();
        let pb = p.set_port_link(3, false);
        assert_eq!(pb.gen, g0 + 1);
        let s = r.load();
        assert!(s.link_down(3) && !s.link_down(0));
        assert_eq!(s.cut_before, pb.gen, "connections decided before the link went down are re-decided");
        drop(s);
        assert!(p.port_link_down(3));
        let pb = p.set_port_link(3, true);
        assert!(!r.load().link_down(3), "traffic resumes at generation {}", pb.gen);
        assert!(!p.port_link_down(3));
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;
    use flowtable::act::{DropReason, Fate, PacketVerdict};
    use flowtable::key::v4_mapped;
    use flowtable::parse::build::{Spec, L4};
    use flowtable::pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};

    fn ex(p: &str) -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies").join(p)
    }

    const WEB: u32 = 0x0a00_010a; // 10.0.1.10
    const API: u32 = 0x0a00_0114; // 10.0.1.20

    fn tcp(src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        Spec::new(v4_mapped(src), v4_mapped(dst), L4::Tcp { sport, dport, flags }).build()
    }

    /// One burst through the pipeline against the currently published state,
    /// exactly as an lcore does it (one state load per burst).
    fn burst(pl: &mut Pipeline, r: &Reader<DpState>, frames: &[Vec<u8>], now: u64) -> Vec<Fate> {
        let s = r.load();
        let policy = Policy { gen: s.gen(), tables: &s.enforce, identities: &s.ipmap, routes: &s.routes, cut_before: s.cut_before };
        let pkts: Vec<RxPacket<'_>> = frames.iter().map(|f| RxPacket { frame: f, rss: None, in_port: 0 }).collect();
        let mut out = vec![PacketVerdict::default(); frames.len()];
        pl.process(&policy, &pkts, now, &mut out);
        out.into_iter().map(|v| v.fate).collect()
    }

    #[test]
    fn quarantine_cuts_an_established_connection_at_the_next_burst() {
        let model = Model::load(&ex("model.toml")).unwrap();
        let set = control::commands::load_policies(&[ex("three-tier.toml")]).unwrap();
        let mut p = PolicyPlane::new(model, set, None).unwrap();
        let r = p.reader();
        let mut pl = Pipeline::new(PipelineConfig::default());
        let hs = [tcp(WEB, API, 40000, 8080, 0x02), tcp(API, WEB, 8080, 40000, 0x12), tcp(WEB, API, 40000, 8080, 0x10)];
        let fates = burst(&mut pl, &r, &hs, 1);
        assert!(fates.iter().all(|f| matches!(f, Fate::Forward(_))), "handshake allowed: {fates:?}");
        let data = [tcp(WEB, API, 40000, 8080, 0x18), tcp(API, WEB, 8080, 40000, 0x18)];
        assert!(burst(&mut pl, &r, &data, 2).iter().all(|f| matches!(f, Fate::Forward(_))));
        assert!(pl.stats().emc_hit > 0, "the established flow is served from the cache");

        p.quarantine("shop/api-1", true).unwrap();
        let fates = burst(&mut pl, &r, &data, 3);
        assert!(
            fates.iter().all(|f| matches!(f, Fate::Drop(DropReason::PolicyEgress | DropReason::PolicyIngress))),
            "the first burst after publish drops both directions: {fates:?}"
        );
        p.quarantine("shop/api-1", false).unwrap();
        assert!(burst(&mut pl, &r, &hs, 4).iter().all(|f| matches!(f, Fate::Forward(_))), "a new connection is allowed again");
    }

    #[test]
    fn keep_established_option_keeps_live_connections_across_a_change() {
        let model = Model::load(&ex("model.toml")).unwrap();
        let set = control::commands::load_policies(&[ex("three-tier.toml")]).unwrap();
        let mut p = PolicyPlane::new(model, set, None).unwrap();
        let r = p.reader();
        let mut cfg = PipelineConfig::default();
        cfg.ct.keep_established = true;
        let mut pl = Pipeline::new(cfg);
        let hs = [tcp(WEB, API, 40001, 8080, 0x02), tcp(API, WEB, 8080, 40001, 0x12), tcp(WEB, API, 40001, 8080, 0x10)];
        assert!(burst(&mut pl, &r, &hs, 1).iter().all(|f| matches!(f, Fate::Forward(_))));
        p.delete_policy("shop/web").unwrap(); // web loses its egress allow
        let data = [tcp(WEB, API, 40001, 8080, 0x18)];
        assert!(matches!(burst(&mut pl, &r, &data, 2)[0], Fate::Forward(_)), "established connection kept");
        let new = [tcp(WEB, API, 40002, 8080, 0x02)];
        assert!(matches!(burst(&mut pl, &r, &new, 3)[0], Fate::Drop(_)), "a new one is denied");
        // ... but a quarantine cuts it all the same.
        p.quarantine("shop/web-1", true).unwrap();
        assert!(matches!(burst(&mut pl, &r, &data, 4)[0], Fate::Drop(_)), "quarantine cuts kept connections too");
    }
}
