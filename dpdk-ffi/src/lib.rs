//! Raw DPDK 22.11 bindings (bindgen) and a C shim for static inline functions.
