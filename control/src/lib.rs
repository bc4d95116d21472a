//! control: workloads, labels, identities, policies and their compiler.
//!
//! ```text
//! model (namespaces, workloads) --> identities (label set -> number) --> IP -> identity map
//! policy files (k8s YAML, TOML) --> Policy (one form) --> Compiler --> RuleDiff --> PolicyTables
//!                                                           |--> explain / reach / conformance
//! ```
//! Everything here is pure Rust; the dataplane consumes [`compiler::Tables`] and
//! the IP -> identity map, and reads rule cookies back through [`Compiler::origin`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod commands;
pub mod compiler;
pub mod conformance;
pub mod datastore;
pub mod error;
pub mod identity;
pub mod labels;
pub mod model;
pub mod policy;

pub use commands::{CheckArgs, ConformanceArgs, ExplainArgs, ReachArgs};
pub use compiler::{Compiler, RuleDiff, RuleTable, TableRef, Tables};
pub use error::{Error, Result};
pub use labels::{LabelSelector, Labels};
pub use model::{Model, Namespace, Workload};
pub use policy::{Policy, PolicySet, Settings, TierKind};
