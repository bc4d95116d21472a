//! control: workloads, labels, identities, policies and their compiler.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
