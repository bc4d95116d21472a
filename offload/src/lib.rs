//! offload: hardware flow tables.
//!
//! Bulkhead speaks rte_flow only. This crate holds the safe, DPDK-free part:
//! [`FlowSpec`] (a rule as data, printable in testpmd `flow create` syntax),
//! the testpmd `flow` grammar ([`grammar`]), and the models and policy code that
//! decide what to put into hardware. `pmd::flow` is the only place that turns a
//! FlowSpec into rte_flow_item/rte_flow_action arrays.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod grammar;
pub mod hot;
pub mod manager;
pub mod model;
pub mod spec;

pub use backend::{Backend, Completion, HwCounters, HwRuleId, OffloadError, Op};
pub use grammar::{parse_flow, FlowCommand, FlowParseError};
pub use spec::{Attr, FlowAction, FlowSpec, Headers, Item, Masked};
pub use model::{HwVerdict, SoftNic, SoftNicConfig};
pub use hot::{HotConfig, HotDetector};
pub use manager::{Feeder, Intent, Manager, ManagerConfig, OffloadRequest, OffloadStats};
