//! Test helper (feature `testing`): initialise EAL once per test process with
//! `--no-huge`, no PCI, a unique file prefix and only virtual devices.
//! Ports are probed afterwards with [`crate::port::Port::open`].

use std::sync::{Arc, Mutex, OnceLock};

use crate::eal::{Eal, EalConfig};
use crate::mempool::Mempool;

static EAL: OnceLock<Mutex<Option<Eal>>> = OnceLock::new();
static POOL: OnceLock<Arc<Mempool>> = OnceLock::new();

/// Start EAL for this test process (idempotent): `--no-huge -m 256 --no-pci
/// -l 0,1`, prefix `pmdtest-<pid>`. EAL stays up until [`shutdown`] or process exit; the
/// runtime directory is removed at exit either way.
///
/// # Panics
/// If EAL cannot start (the test cannot run at all).
pub fn eal() {
    EAL.get_or_init(|| {
        let cfg = EalConfig {
            memory_mb: 256,
            file_prefix: Some(format!("pmdtest-{}", std::process::id())),
            lcores: "0,1".into(),
            log_level: Some("error".into()),
            ..EalConfig::default()
        };
        let eal = Eal::init(&cfg).expect("EAL init for tests");
        let _ = RUNTIME_DIR.set(eal.runtime_dir().map(|p| p.to_path_buf()));
        // SAFETY: registering a plain extern "C" function with no captured
        // state; it only removes a directory.
        unsafe { libc::atexit(remove_runtime_dir) };
        Mutex::new(Some(eal))
    });
}

static RUNTIME_DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

/// At process exit, remove this process's EAL runtime directory so test
/// runs leave nothing under /var/run/dpdk even when EAL was not shut down.
extern "C" fn remove_runtime_dir() {
    if let Some(Some(d)) = RUNTIME_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A shared pool of 8191 mbufs for tests.
pub fn pool() -> Arc<Mempool> {
    eal();
    POOL.get_or_init(|| {
        Arc::new(Mempool::new("pmdtest_pool", 8191, 256, crate::mempool::DEFAULT_DATA_ROOM, -1).expect("test mempool"))
    })
    .clone()
}

/// A unique scratch directory for one test.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pmdtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Clean EAL up and remove its runtime directory. Ports and mbufs must be
/// gone; the shared pool is kept alive (it is freed with EAL's memory).
pub fn shutdown() {
    if let Some(m) = EAL.get() {
        if let Ok(mut g) = m.lock() {
            drop(g.take());
        }
    }
}
