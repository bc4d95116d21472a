//! The dataplane state the lcores read, one immutable generation at a time:
//! the compiled policy tables, the IP -> identity map and the forwarding table
//! (IP -> output port and MAC). The control thread changes it only through
//! [`DpOp`]s published by a left-right writer, so a burst sees one consistent
//! generation and a generation number that cache entries are stamped with.

use control::TableRef;
use flowtable::leftright::Absorb;
use flowtable::{Classifier, PolicyTables, Prefix, PrefixMap, Rule, RuleId};

/// Where traffic to an address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Address -> destination (workload ports); a miss goes to the uplink.
    pub fib: PrefixMap<Dest>,
    /// Where traffic to addresses of no local workload goes (None: dropped).
    pub uplink: Option<Dest>,
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
    /// Set the uplink.
    SetUplink(Option<Dest>),
    /// Set the enforcing tables' defaults (egress, ingress): zero trust or not.
    SetDefaults(flowtable::Action, flowtable::Action),
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
}

impl DpState {
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
                self.fib.insert(*p, *d);
                Ok(())
            }
            DpOp::ClearDest(p) => {
                self.fib.remove(*p);
                Ok(())
            }
            DpOp::SetUplink(u) => {
                self.uplink = *u;
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
