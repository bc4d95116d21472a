//! EAL initialisation from a typed configuration.
//!
//! The arguments are generated here, never passed around as strings. EAL can
//! be initialised once per process; [`Eal`] is the proof that it was, and its
//! `Drop` runs `rte_eal_cleanup` and removes this process's runtime directory
//! (`/var/run/dpdk/<prefix>`), so a clean exit leaves nothing behind.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{rte_errno, Error, Result};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Typed EAL configuration. See [`EalConfig::args`] for the generated argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// Memory to reserve in MB (`-m`). Without hugepages all of it is touched
    /// at start: size it to need.
    pub memory_mb: u32,
    /// Use hugepages. `false` adds `--no-huge` (IOVA as VA, 4 KiB pages).
    pub hugepages: bool,
    /// `--file-prefix`; `None` means `bulkhead-<pid>`, unique per process.
    pub file_prefix: Option<String>,
    /// lcore list: either `-l` syntax (`"0,1"`, `"0-3"`) or, when it contains
    /// `@`, `--lcores` syntax (`"0@0,1@1,2@1"`). The first lcore is the main
    /// lcore unless `main_lcore` says otherwise.
    pub lcores: String,
    /// `--main-lcore`.
    pub main_lcore: Option<u32>,
    /// PCI addresses to allow (`-a`); when empty, `--no-pci` is passed.
    pub pci_allow: Vec<String>,
    /// `--vdev` arguments given to EAL at init (ports are usually probed
    /// later with [`crate::port::probe`], which gives clearer errors).
    pub vdevs: Vec<String>,
    /// `--log-level` value, e.g. `"notice"` or `"lib.eal:debug"`.
    pub log_level: Option<String>,
    /// `--single-file-segments` (needed by virtio_user frontends).
    pub single_file_segments: bool,
    /// Extra raw arguments appended last (escape hatch for real hardware).
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        Self {
            memory_mb: 256,
            hugepages: false,
            file_prefix: None,
            lcores: "0,1".into(),
            main_lcore: None,
            pci_allow: Vec::new(),
            vdevs: Vec::new(),
            log_level: None,
            single_file_segments: false,
            extra_args: Vec::new(),
        }
    }
}

impl EalConfig {
    /// The effective file prefix (`bulkhead-<pid>` by default).
    pub fn prefix(&self) -> String {
        self.file_prefix
            .clone()
            .unwrap_or_else(|| format!("bulkhead-{}", std::process::id()))
    }

    /// The argv handed to `rte_eal_init` (argv[0] included).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["bulkhead".to_string()];
        if self.lcores.contains('@') || self.lcores.contains('(') {
            a.push(format!("--lcores={}", self.lcores));
        } else {
            a.push("-l".into());
            a.push(self.lcores.clone());
        }
        if let Some(m) = self.main_lcore {
            a.push(format!("--main-lcore={m}"));
        }
        if !self.hugepages {
            a.push("--no-huge".into());
        }
        a.push("-m".into());
        a.push(self.memory_mb.to_string());
        if self.pci_allow.is_empty() {
            a.push("--no-pci".into());
        } else {
            for p in &self.pci_allow {
                a.push("-a".into());
                a.push(p.clone());
            }
        }
        a.push(format!("--file-prefix={}", self.prefix()));
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        if let Some(l) = &self.log_level {
            a.push(format!("--log-level={l}"));
        }
        if self.single_file_segments {
            a.push("--single-file-segments".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// Proof that EAL is initialised in this process. Dropping it cleans up EAL;
/// drop every port and mempool first.
#[derive(Debug)]
pub struct Eal {
    prefix: String,
    runtime_dir: Option<PathBuf>,
    args: Vec<String>,
}

fn runtime_base() -> PathBuf {
    // Same rule as EAL: root uses /var/run/dpdk, others $XDG_RUNTIME_DIR/dpdk.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        PathBuf::from("/var/run/dpdk")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("dpdk"))
            .unwrap_or_else(|| PathBuf::from("/tmp/dpdk"))
    }
}

/// If another process holds the EAL config lock for `prefix`, its pid.
fn prefix_holder(prefix: &str) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let path = runtime_base().join(prefix).join("config");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).ok()?;
    // SAFETY: flock is plain data; an all-zero value is valid before we set
    // the fields F_GETLK reads.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    // SAFETY: the fd is open for the duration of the call and `fl` is a valid
    // flock that F_GETLK fills in.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short {
        Some(fl.l_pid)
    } else {
        None
    }
}

impl Eal {
    /// Initialise EAL from `cfg`.
    ///
    /// # Errors
    /// [`Error::EalAlreadyInit`] on a second call in the same process,
    /// [`Error::PrefixInUse`] when another primary holds the prefix,
    /// [`Error::EalInit`] when `rte_eal_init` fails.
    pub fn init(cfg: &EalConfig) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInit);
        }
        let prefix = cfg.prefix();
        if let Some(pid) = prefix_holder(&prefix) {
            return Err(Error::PrefixInUse { prefix, pid });
        }
        let args = cfg.args();
        // EAL keeps pointers into argv for the life of the process: leak them.
        let mut argv: Vec<*mut c_char> = args
            .iter()
            .map(|s| {
                CString::new(s.as_str())
                    .map_err(|_| Error::Invalid(format!("EAL argument contains NUL: {s:?}")))
                    .map(|c| c.into_raw())
            })
            .collect::<Result<_>>()?;
        argv.push(std::ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
        let argc = (argv.len() - 1) as i32;
        // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL,
        // leaked so they outlive EAL; init runs once per process (guarded by
        // INITIALISED above).
        let r = unsafe { dpdk_ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if r < 0 {
            let errno = rte_errno();
            let hint = match errno {
                libc::EALREADY => " (EAL already initialised)".to_string(),
                _ => String::new(),
            };
            // EAL may have created our runtime directory before failing.
            let dir = runtime_base().join(&prefix);
            if cfg.file_prefix.is_none() || prefix_holder(&prefix).is_none() {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(Error::EalInit { errno, hint });
        }
        // SAFETY: EAL is initialised; the returned string is static.
        let rt = unsafe { CStr::from_ptr(dpdk_ffi::rte_eal_get_runtime_dir()) };
        let runtime_dir = Some(PathBuf::from(rt.to_string_lossy().into_owned()));
        Ok(Eal { prefix, runtime_dir, args })
    }

    /// The `--file-prefix` in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// EAL's runtime directory (`/var/run/dpdk/<prefix>` for root).
    pub fn runtime_dir(&self) -> Option<&std::path::Path> {
        self.runtime_dir.as_deref()
    }

    /// The argv EAL was initialised with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// TSC ticks per second.
    pub fn tsc_hz() -> u64 {
        // SAFETY: no preconditions beyond EAL init, which an Eal proves, but
        // the call is also harmless before (returns 0).
        unsafe { dpdk_ffi::rte_get_tsc_hz() }
    }

    /// Socket id of the calling thread's lcore (0 when unknown).
    pub fn socket_id() -> i32 {
        // SAFETY: reads per-thread EAL data; no arguments.
        let s = unsafe { dpdk_ffi::rte_socket_id() };
        if s == u32::MAX {
            0
        } else {
            s as i32
        }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by this process; the owner drops ports
        // and mempools before the Eal (field order in the owning structs).
        unsafe { dpdk_ffi::rte_eal_cleanup() };
        if let Some(dir) = &self.runtime_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
