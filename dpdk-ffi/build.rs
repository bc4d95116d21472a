//! Build script: finds DPDK >= 22.11 with pkg-config, runs bindgen over
//! `wrapper.h` into OUT_DIR and compiles the C shim for DPDK's static inline
//! functions. A missing DPDK or libclang fails with one line naming the
//! Debian packages to install.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const INSTALL_HINT: &str = "apt-get install dpdk-dev libdpdk-dev libclang-dev pkg-config";
const MIN_VERSION: &str = "22.11";

/// Print one error line and stop the build.
fn fail(what: &str) -> ! {
    eprintln!("error: dpdk-ffi: {what}; install it with: {INSTALL_HINT}");
    std::process::exit(1);
}

/// The raw `pkg-config --cflags libdpdk` flags. The pkg-config crate drops
/// `-include rte_config.h` and `-march=...`, which the DPDK headers need.
fn raw_cflags() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|_| fail("pkg-config not found"));
    if !out.status.success() {
        fail("DPDK (libdpdk >= 22.11) not found by pkg-config");
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Pair `-include FILE` into one argument each for clang and cc.
    let mut flags = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(f) = words.next() {
                flags.push(format!("-include{f}"));
            }
        } else {
            flags.push(w.to_string());
        }
    }
    flags
}

/// Forces the 64-bit flag macros (RTE_BIT64 based) to u64.
#[derive(Debug)]
struct Flags64;

impl bindgen::callbacks::ParseCallbacks for Flags64 {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        const U64_PREFIXES: &[&str] = &[
            "RTE_ETH_RX_OFFLOAD_",
            "RTE_ETH_TX_OFFLOAD_",
            "RTE_ETH_RSS_",
            "RTE_MBUF_F_",
            "RTE_ETH_LINK_SPEED_",
            "RTE_ETH_DEV_CAPA_",
            "RTE_VHOST_USER_",
        ];
        if U64_PREFIXES.iter().any(|p| name.starts_with(p)) {
            Some(bindgen::callbacks::IntKind::U64)
        } else {
            None
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .cargo_metadata(true)
        .probe("libdpdk")
        .unwrap_or_else(|e| match e {
            pkg_config::Error::Command { .. } => fail("pkg-config not found"),
            _ => fail("DPDK (libdpdk >= 22.11) not found by pkg-config"),
        });
    // The vhost PMD's own API (rte_eth_vhost_get_vid_from_port_id) lives in
    // the driver library, which pkg-config does not list (EAL loads drivers as
    // plugins). Linking it is the same file EAL's plugin loader opens, so the
    // driver is registered once.
    println!("cargo:rustc-link-lib=dylib=rte_net_vhost");
    // Likewise rte_eth_from_rings (ring ports for in-process harnesses) is
    // the ring PMD's own API.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    let cflags = raw_cflags();
    println!("cargo:version={}", lib.version);
    println!("cargo:cflags={}", cflags.join(" "));

    // libclang is loaded at run time by bindgen: probe it first so a missing
    // library is one clear line, not a panic backtrace.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let clang_ok = std::panic::catch_unwind(bindgen::clang_version).is_ok();
    std::panic::set_hook(prev);
    if !clang_ok {
        fail("libclang not found (bindgen needs it)");
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(cflags.iter())
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .clang_arg("-I.")
        .clang_macro_fallback()
        .parse_callbacks(Box::new(Flags64))
        .allowlist_function("dpdkffi_.*")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_lcore_.*")
        .allowlist_function("rte_get_(main|next)_lcore")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("rte_delay_us_block")
        .allowlist_function("rte_socket_(id|count)")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_dev_(probe|remove)")
        .allowlist_function("rte_vdev_(init|uninit)")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_ring_(create|free|lookup|count|free_count)")
        .allowlist_function("rte_flow_.*")
        .allowlist_function("rte_vhost_.*")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_flow_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_ether_hdr")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MBUF_.*")
        .allowlist_var("RTE_PKTMBUF_.*")
        .allowlist_var("RTE_MAX_.*")
        .allowlist_var("RTE_MEMPOOL_.*")
        .allowlist_var("RTE_RING_.*")
        .allowlist_var("RTE_VHOST_.*")
        .allowlist_var("RTE_ETHER_.*")
        .allowlist_var("RTE_FLOW_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("LCORE_ID_ANY")
        .allowlist_var("rte_eth_fp_ops")
        .blocklist_item("per_lcore_.*")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .no_debug("rte_flow_item_gtp_psc")
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on the DPDK headers ({e})")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs to OUT_DIR");

    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(3).define("ALLOW_EXPERIMENTAL_API", None);
    for f in &cflags {
        build.flag(f);
    }
    build.warnings(true).compile("dpdkffi_shim");
}
