//! Raw DPDK 22.11 bindings (bindgen, generated into OUT_DIR at build time) and
//! a C shim (`shim/shim.c`) for DPDK's `static inline` functions and
//! thread-local variables, exported with a `dpdkffi_` prefix.
//!
//! Everything here is `unsafe` to call; the safe layer is the `pmd` crate.
//! Conventions of the generated code:
//! - C enums are newtypes with associated constants (PMDs return values
//!   outside the declared range, so Rust enums would be undefined behaviour).
//! - `per_lcore_*` thread-locals are not bound: use [`dpdkffi_lcore_id`] and
//!   [`dpdkffi_errno`].
//! - 64-bit flag macros (`RTE_ETH_RX_OFFLOAD_*`, `RTE_ETH_RSS_*`,
//!   `RTE_MBUF_F_*`, ...) are `u64` constants.
//! - Compiled with `ALLOW_EXPERIMENTAL_API` (rte_flow's template API).
//!
//! The shim functions cost one call each; call them per burst, never per packet.


#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    improper_ctypes,
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;
