//! offload: hardware flow tables (rte_flow model), hot-flow detection, capacity management.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
