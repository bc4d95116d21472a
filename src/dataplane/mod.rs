//! The policy switch's dataplane glue: the state lcores read ([`state`]) and
//! the control thread's policy plane that publishes it ([`plane`]).

pub mod conformance;
pub mod engine;
pub mod handler;
pub mod latency;
pub mod names;
pub mod offload;
pub mod offload_bench;
pub mod plane;
pub mod state;
