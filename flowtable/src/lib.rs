//! flowtable: the per-packet heart of Bulkhead, in pure Rust (no DPDK).
//!
//! ```text
//! bytes + rss hash -> parse -> FlowKey -> exact-match cache (per lcore)
//!                                 miss -> classifier (+ conntrack) -> Verdict
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod classbench;
pub mod act;
pub mod classify;
pub mod conntrack;
pub mod emc;
#[allow(unsafe_code)]
pub mod hint;
pub mod key;
pub mod leftright;
pub mod lpm;
pub mod parse;
pub mod pipeline;
pub mod rule;
pub mod ruleset;
pub mod stats;
pub mod tables;

pub use act::{DropReason, Fate, FlowVerdict, PacketVerdict};
pub use classify::{Classifier, ClassifyError};
pub use conntrack::{Conntrack, CtConfig};
pub use emc::{Emc, EmcConfig};
pub use key::FlowKey;
pub use lpm::PrefixMap;
pub use parse::{Malformed, Parsed};
pub use pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};
pub use ruleset::{RuleSetReader, RuleSetWriter, Snapshot};
pub use rule::{Action, LinearClassifier, Match, PortRange, Prefix, Rule, RuleId, RuleLookup};
pub use stats::Stats;
pub use tables::{Decision, Direction, PolicyTables, Tier, Verdict};
