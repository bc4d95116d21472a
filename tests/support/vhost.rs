//! Shared by the vhost-user tests: the switch as a child process driven over
//! its control socket, dpdk-testpmd virtio_user frontends driven through their
//! prompt, and pcap files. Every child is killed and its DPDK runtime
//! directory removed on drop.
#![allow(dead_code)] // each test file uses its own part

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

/// Tests that run several busy-polling DPDK processes take turns.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// The switch (`bulkhead run`), its control socket and its stdout log.
pub struct Switch {
    pub child: Child,
    pub prefix: String,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Switch {
    /// Starts `bulkhead run` with `body` (TOML, without [eal]) in `dir`.
    pub fn start(dir: &Path, prefix: &str, body: &str) -> Switch {
        let cfg = dir.join("switch.toml");
        std::fs::write(
            &cfg,
            format!(
                "[eal]\nmemory_mb = 256\nfile_prefix = \"{prefix}\"\nlcores = \"0,1\"\n[metrics]\nlisten = \"\"\n{}{body}",
                if body.contains("[flowlog]") { "" } else { "[flowlog]\nfollow = \"\"\n" }
            ),
        )
        .unwrap();
        let sock = dir.join("ctl.sock");
        let log = dir.join("switch.log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(&sock)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.join("switch.err")).unwrap()))
            .spawn()
            .unwrap();
        let mut sw = Switch { child, prefix: prefix.into(), sock, log, dir: dir.to_path_buf() };
        let up = wait_until(Duration::from_secs(60), || sw.sock.exists() || sw.exited());
        assert!(up && !sw.exited(), "the switch did not start: {}", std::fs::read_to_string(dir.join("switch.err")).unwrap_or_default());
        sw
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Runs shell lines over the control socket; the output.
    pub fn cli(&self, lines: &str) -> String {
        let f = self.dir.join("cmds.txt");
        std::fs::write(&f, lines).unwrap();
        let out = Command::new(BIN).arg("cli").arg("--socket").arg(&self.sock).arg("--cmdline-file").arg(&f).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `show vhost` row of `port`, split into words.
    pub fn vhost_row(&self, port: u16) -> Vec<String> {
        let out = self.cli("show vhost\n");
        out.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|w| w.first().map(String::as_str) == Some(&port.to_string()) && w.get(1).is_some_and(|d| d.contains("vhost")))
            .unwrap_or_else(|| panic!("no show vhost row for port {port}: {out}"))
    }

    /// (state, ups, downs) of a VM port.
    pub fn vhost_state(&self, port: u16) -> (String, u64, u64) {
        let w = self.vhost_row(port);
        (w[4].clone(), w[7].parse().unwrap(), w[8].parse().unwrap())
    }

    /// mbufs in use in the switch's pool.
    pub fn mbufs_in_use(&self) -> u64 {
        let out = self.cli("show vhost\n");
        out.lines().find_map(|l| l.strip_prefix("mbufs in use: ")).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap()
    }

    /// A counter of `show port stats N` (`RX-packets:`, `TX-packets:`, `RX-bytes:`...).
    pub fn port_counter(&self, port: u16, key: &str) -> u64 {
        let out = self.cli(&format!("show port stats {port}\n"));
        field(&out, key).unwrap_or_else(|| panic!("no {key} in {out}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait, and check the exit status and that EAL cleaned up.
    pub fn stop(mut self) {
        // SAFETY-free: kill(1) by pid.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let ok = wait_until(Duration::from_secs(30), || self.exited());
        assert!(ok, "the switch did not stop on SIGTERM");
        let st = self.child.wait().unwrap();
        assert!(st.success(), "switch exit {st}: {}", std::fs::read_to_string(self.dir.join("switch.err")).unwrap_or_default());
        assert!(!Path::new("/var/run/dpdk").join(&self.prefix).exists(), "runtime dir left behind");
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// The first number after `key` in `text`.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        w.position(|x| x == key)?;
        w.next()?.parse().ok()
    })
}

/// A dpdk-testpmd virtio_user frontend.
pub struct Frontend {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub prefix: String,
    pub log: PathBuf,
}

impl Frontend {
    /// `testpmd -i` with `vdevs`; EAL as the issue says for virtio_user
    /// frontends: --no-huge -m 512 --single-file-segments, own prefix.
    pub fn start(dir: &Path, prefix: &str, vdevs: &[String], app_args: &[&str]) -> Frontend {
        let log = dir.join(format!("{prefix}.log"));
        let mut args: Vec<String> =
            vec!["--no-huge".into(), "-m".into(), "512".into(), "--no-pci".into(), "--single-file-segments".into(), format!("--file-prefix={prefix}"), "-l".into(), "0,1".into(), "--log-level=error".into()];
        args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
        // --no-flush-rx: `start` would otherwise drain (and lose) finite pcap input.
        args.extend(["--".into(), "-i".into(), "--total-num-mbufs=4096".into(), "--no-flush-rx".into()]);
        args.extend(app_args.iter().map(|s| s.to_string()));
        let logf = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("dpdk-testpmd")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("dpdk-testpmd (apt-get install dpdk)");
        let stdin = child.stdin.take();
        let mut f = Frontend { child, stdin, prefix: prefix.into(), log };
        let ok = wait_until(Duration::from_secs(60), || f.text().contains("testpmd>") || matches!(f.child.try_wait(), Ok(Some(_))));
        assert!(ok && f.text().contains("testpmd>"), "testpmd {prefix} did not start: {}", f.text());
        f
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cmd(&mut self, c: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{c}").unwrap();
        s.flush().unwrap();
    }

    /// `quit` and wait for the exit (pcap files are flushed on close).
    pub fn quit(mut self) {
        self.cmd("quit");
        let ok = wait_until(Duration::from_secs(30), || matches!(self.child.try_wait(), Ok(Some(_))));
        assert!(ok, "testpmd {} did not quit: {}", self.prefix, self.text());
    }

    /// SIGKILL: the VM "crashes".
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

pub fn read_pcap(p: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(p).unwrap_or_default();
    let mut v = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let cap = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        if off + 16 + cap > b.len() {
            break;
        }
        v.push(b[off + 16..off + 16 + cap].to_vec());
        off += 16 + cap;
    }
    v
}

pub fn write_pcap(p: &Path, fr: &[Vec<u8>]) {
    let mut b = Vec::new();
    for v in [0xa1b2_c3d4u32.to_le_bytes().to_vec(), vec![2, 0, 4, 0], vec![0; 8], 65535u32.to_le_bytes().to_vec(), 1u32.to_le_bytes().to_vec()] {
        b.extend(v);
    }
    for (i, f) in fr.iter().enumerate() {
        b.extend((i as u32).to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend((f.len() as u32).to_le_bytes());
        b.extend((f.len() as u32).to_le_bytes());
        b.extend(f);
    }
    std::fs::write(p, b).unwrap();
}

/// `n` distinct UDP frames of 60..=315 bytes whose payload carries `tag`
/// and the index, so a lost, duplicated, reordered or corrupted byte shows.
pub fn frames(n: u32, tag: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = 60 + (i as usize * 37) % 256;
            let mut f = vec![0u8; len];
            f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&[10, tag, (i >> 8) as u8, i as u8]);
            f[30..34].copy_from_slice(&[172, 16, 0, 1]);
            f[34..36].copy_from_slice(&(1024 + i as u16).to_be_bytes());
            f[36..38].copy_from_slice(&80u16.to_be_bytes());
            f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
            for (k, b) in f[42..].iter_mut().enumerate() {
                *b = (i as usize * 7 + k) as u8 ^ tag;
            }
            f
        })
        .collect()
}
