//! The hardware interface every offload target implements: rte_flow's verbs
//! (validate, create, destroy, query, flush) plus rte_flow's asynchronous
//! queue model (submit a batch of operations, push, poll completions).

use crate::spec::FlowSpec;

/// A rule handle returned by a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HwRuleId(pub u32);

/// Why the hardware refused, mapped from rte_flow's errno values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// ENOSYS / ENOTSUP: the port cannot do this (pattern, action or flow API at all).
    #[error("not supported by the port: {0}")]
    Unsupported(String),
    /// ENOMEM / ENOSPC: the table is full.
    #[error("hardware table full")]
    NoResources,
    /// EEXIST: a colliding rule is installed.
    #[error("a colliding rule exists")]
    Exists,
    /// EINVAL: the rule is malformed for this port.
    #[error("invalid rule: {0}")]
    Invalid(String),
    /// EBUSY: retry later.
    #[error("device busy")]
    Busy,
    /// ENOENT: no such rule.
    #[error("no such rule {0}")]
    NoSuchRule(u32),
    /// Any other errno.
    #[error("{op} failed: errno {errno}")]
    Errno {
        /// The operation.
        op: &'static str,
        /// The (positive) errno.
        errno: i32,
    },
}

impl OffloadError {
    /// Maps a positive errno from rte_flow to the typed error.
    pub fn from_errno(op: &'static str, errno: i32, msg: &str) -> Self {
        match errno {
            libc_errno::ENOSYS | libc_errno::ENOTSUP => OffloadError::Unsupported(msg.to_string()),
            libc_errno::ENOMEM | libc_errno::ENOSPC => OffloadError::NoResources,
            libc_errno::EEXIST => OffloadError::Exists,
            libc_errno::EINVAL => OffloadError::Invalid(msg.to_string()),
            libc_errno::EBUSY | libc_errno::EAGAIN => OffloadError::Busy,
            _ => OffloadError::Errno { op, errno },
        }
    }
    /// True when a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OffloadError::Busy | OffloadError::NoResources)
    }
}

/// Linux errno values (this crate is DPDK- and libc-free).
pub mod libc_errno {
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Busy.
    pub const EBUSY: i32 = 16;
    /// Exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space.
    pub const ENOSPC: i32 = 28;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Not supported.
    pub const ENOTSUP: i32 = 95;
}

/// Hit counters of one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwCounters {
    /// Packets that hit.
    pub hits: u64,
    /// Bytes that hit.
    pub bytes: u64,
}

/// One asynchronous operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Install a rule.
    Create {
        /// Caller's tag, returned in the completion.
        user: u64,
        /// The rule.
        spec: FlowSpec,
    },
    /// Remove a rule.
    Destroy {
        /// Caller's tag.
        user: u64,
        /// The rule.
        id: HwRuleId,
    },
}

/// The result of one asynchronous operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The tag given in [`Op`].
    pub user: u64,
    /// The new rule's handle (create) or the destroyed one (destroy), or why it failed.
    pub result: Result<HwRuleId, OffloadError>,
}

/// An offload target: a real port's rte_flow, or the software NIC model.
pub trait Backend {
    /// A short name for logs (`rte_flow port 0`, `softnic`).
    fn name(&self) -> String;
    /// Would the port take this rule? Installs nothing.
    fn validate(&mut self, spec: &FlowSpec) -> Result<(), OffloadError>;
    /// Installs one rule synchronously.
    fn create(&mut self, spec: &FlowSpec) -> Result<HwRuleId, OffloadError>;
    /// Removes one rule synchronously.
    fn destroy(&mut self, id: HwRuleId) -> Result<(), OffloadError>;
    /// Reads a rule's counters.
    fn query(&mut self, id: HwRuleId) -> Result<HwCounters, OffloadError>;
    /// Removes every rule.
    fn flush(&mut self) -> Result<(), OffloadError>;
    /// True when the backend has an asynchronous queue ([`Backend::submit`]).
    fn has_async(&self) -> bool {
        false
    }
    /// Enqueues a batch and pushes it to the device. Returns how many ops were accepted.
    /// The default runs them synchronously and completes them at once.
    fn submit(&mut self, ops: &[Op], done: &mut Vec<Completion>) -> Result<usize, OffloadError> {
        for op in ops {
            let c = match op {
                Op::Create { user, spec } => Completion { user: *user, result: self.create(spec) },
                Op::Destroy { user, id } => Completion { user: *user, result: self.destroy(*id).map(|_| *id) },
            };
            done.push(c);
        }
        Ok(ops.len())
    }
    /// Collects completions of earlier submits into `done`. Returns how many.
    fn poll(&mut self, _done: &mut Vec<Completion>) -> usize {
        0
    }
    /// Number of rules installed.
    fn installed(&self) -> usize;
}
