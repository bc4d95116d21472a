//! The dataplane state the lcores read, one immutable generation at a time:
//! the compiled policy tables, the IP -> identity map and the forwarding table
//! (IP -> output port and MAC). The control thread changes it only through
//! [`DpOp`]s published by a left-right writer, so a burst sees one consistent
//! generation and a generation number that cache entries are stamped with.

use control::TableRef;
use flowtable::leftright::Absorb;
use flowtable::{Classifier, PolicyTables, Prefix, PrefixMap, Rule, RuleId};
use std::collections::HashMap;

/// Where traffic to an address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Output port id.
    pub port: u16,
    /// Destination MAC written into forwarded frames (the workload's own);
    /// None leaves the frame's destination MAC as it came.
    pub mac: Option<[u8; 6]>,
}

/// One generation of dataplane state.
#[derive(Clone, Debug)]
pub struct DpState {
    /// Tables that decide packets.
    pub enforce: PolicyTables<Classifier>,
    /// Audit-mode and log rules: evaluated for flow records only.
    pub observe: PolicyTables<Classifier>,
    /// Address -> security identity.
    pub ipmap: PrefixMap<u32>,
    /// Address -> destination id (an index into [`DpState::dests`]): the
    /// pipeline's routes. Local workloads have host entries; the uplink, when
    /// set, is the default route (::/0).
    pub routes: PrefixMap<u16>,
    /// Destinations by id. Ids are interned per distinct destination and
    /// allocated deterministically, so both left-right copies agree.
    pub dests: Vec<Dest>,
    dest_ids: HashMap<Dest, u16>,
    dest_refs: Vec<u32>,
    free_ids: Vec<u16>,
    /// Connections decided before this generation are re-evaluated even when
    /// established connections are kept (set by quarantine).
    pub cut_before: u64,
    /// Ports whose link is down (bit = port id; ports >= 64 are never marked):
    /// traffic routed to them is dropped and counted instead of sent into a
    /// VM that is not there.
    pub links_down: u64,
}

/// One change to the state.
#[derive(Clone, Debug, PartialEq)]
pub enum DpOp {
    /// Insert a rule into a table.
    Insert(TableRef, Rule),
    /// Remove a rule from a table.
    Remove(TableRef, RuleId),
    /// Set an address's identity.
    SetIdentity(Prefix, u32),
    /// Forget an address's identity.
    ClearIdentity(Prefix),
    /// Set an address's destination.
    SetDest(Prefix, Dest),
    /// Forget an address's destination.
    ClearDest(Prefix),
    /// (The uplink is the destination of `Prefix::ANY`.)
    /// Set the enforcing tables' defaults (egress, ingress): zero trust or not.
    SetDefaults(flowtable::Action, flowtable::Action),
    /// Re-evaluate every connection decided before this generation, even
    /// established ones that `keep_established` would keep.
    CutBefore(u64),
    /// A port's link went up (true) or down (false).
    SetLink(u16, bool),
}

/// Why an op was refused (the control plane and the state disagree: a bug).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DpError {
    /// The rule id is taken in that table.
    #[error("rule {0:?} already in the table")]
    Duplicate(RuleId),
    /// No such rule in that table.
    #[error("rule {0:?} not in the table")]
    Missing(RuleId),
    /// More distinct destinations than a route can name.
    #[error("too many distinct destinations")]
    TooManyDests,
}

impl DpState {
    /// An empty state: empty tables (all tiers, allow defaults), no addresses.
    pub fn new(enforce: PolicyTables<Classifier>, observe: PolicyTables<Classifier>) -> Self {
        DpState {
            enforce,
            observe,
            ipmap: PrefixMap::new(),
            routes: PrefixMap::new(),
            dests: Vec::new(),
            dest_ids: HashMap::new(),
            dest_refs: Vec::new(),
            free_ids: Vec::new(),
            cut_before: 0,
            links_down: 0,
        }
    }

    /// True when `port`'s link is marked down.
    #[inline]
    pub fn link_down(&self, port: u16) -> bool {
        port < 64 && self.links_down & (1u64 << port) != 0
    }

    /// The destination for an address (longest prefix), if any.
    #[cfg(test)]
    pub fn dest(&self, a: flowtable::key::Addr) -> Option<Dest> {
        self.routes.lookup(a).map(|(_, id)| self.dests[*id as usize])
    }

    fn intern(&mut self, d: Dest) -> Result<u16, DpError> {
        if let Some(&id) = self.dest_ids.get(&d) {
            self.dest_refs[id as usize] += 1;
            return Ok(id);
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                let id = u16::try_from(self.dests.len()).map_err(|_| DpError::TooManyDests)?;
                self.dests.push(d);
                self.dest_refs.push(0);
                id
            }
        };
        self.dests[id as usize] = d;
        self.dest_refs[id as usize] = 1;
        self.dest_ids.insert(d, id);
        Ok(id)
    }

    fn release(&mut self, id: u16) {
        let r = &mut self.dest_refs[id as usize];
        *r -= 1;
        if *r == 0 {
            self.dest_ids.remove(&self.dests[id as usize]);
            self.free_ids.push(id);
        }
    }

    fn table_mut(&mut self, t: TableRef) -> &mut Classifier {
        let pt = if t.observe { &mut self.observe } else { &mut self.enforce };
        pt.tiers[t.tier as usize].table_mut(t.dir)
    }
}

impl Absorb for DpState {
    type Op = DpOp;
    type Error = DpError;

    fn absorb(&mut self, op: &DpOp) -> Result<(), DpError> {
        match op {
            DpOp::Insert(t, r) => self.table_mut(*t).insert(*r).map_err(|_| DpError::Duplicate(r.id)),
            DpOp::Remove(t, id) => self.table_mut(*t).remove(*id).map(|_| ()).ok_or(DpError::Missing(*id)),
            DpOp::SetIdentity(p, id) => {
                self.ipmap.insert(*p, *id);
                Ok(())
            }
            DpOp::ClearIdentity(p) => {
                self.ipmap.remove(*p);
                Ok(())
            }
            DpOp::SetDest(p, d) => {
                let id = self.intern(*d)?;
                if let Some(old) = self.routes.insert(*p, id) {
                    self.release(old);
                }
                Ok(())
            }
            DpOp::ClearDest(p) => {
                if let Some(old) = self.routes.remove(*p) {
                    self.release(old);
                }
                Ok(())
            }
            DpOp::CutBefore(g) => {
                self.cut_before = *g;
                Ok(())
            }
            DpOp::SetLink(port, up) => {
                if *port < 64 {
                    if *up {
                        self.links_down &= !(1u64 << port);
                    } else {
                        self.links_down |= 1u64 << port;
                    }
                }
                Ok(())
            }
            DpOp::SetDefaults(e, i) => {
                self.enforce.default_egress = *e;
                self.enforce.default_ingress = *i;
                Ok(())
            }
        }
    }
}
