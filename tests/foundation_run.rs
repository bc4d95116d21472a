//! Foundation scenarios through the real `bulkhead` binary (one process per
//! scenario, since EAL initialises once per process): real DPDK, `--no-huge`,
//! virtual devices only, a distinct --file-prefix each, and nothing left
//! under /var/run/dpdk afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bhfound-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn prefix(name: &str) -> String {
    format!("bhtest-{}-{name}", std::process::id())
}

fn runtime_dir(prefix: &str) -> PathBuf {
    Path::new("/var/run/dpdk").join(prefix)
}

fn write_cfg(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("bulkhead.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn run_to_end(cfg: &Path) -> Output {
    Command::new(BIN).args(["run", "--config"]).arg(cfg).output().unwrap()
}

fn spawn(cfg: &Path) -> Child {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(c: &Child) {
    let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn pcap_count(p: &Path) -> usize {
    // 24-byte header + (16 + 60) per 60-byte frame; partial files read as fewer.
    std::fs::metadata(p).map(|m| (m.len().saturating_sub(24) / 76) as usize).unwrap_or(0)
}

fn read_pcap(p: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(p).unwrap();
    let mut v = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let cap = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        v.push(b[off + 16..off + 16 + cap].to_vec());
        off += 16 + cap;
    }
    v
}

/// `n` distinct 60-byte UDP frames (src MAC ..01, dst MAC ..02).
fn frames(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut f = vec![0u8; 60];
            f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&46u16.to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
            f[30..34].copy_from_slice(&[172, 16, 0, 1]);
            f[34..36].copy_from_slice(&(1024 + i as u16).to_be_bytes());
            f[36..38].copy_from_slice(&80u16.to_be_bytes());
            f[38..40].copy_from_slice(&26u16.to_be_bytes());
            f
        })
        .collect()
}

fn write_pcap(p: &Path, fr: &[Vec<u8>]) {
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

/// Forward `input` through port 0 (pcap in/out on the same port) in `mode`,
/// stop with SIGTERM once all arrived; returns (output frames, stdout).
fn forward_pcap(name: &str, mode: &str, input: &[Vec<u8>]) -> (Vec<Vec<u8>>, String, u16) {
    let dir = scratch(name);
    let pre = prefix(name);
    let inp = dir.join("in.pcap");
    let out = dir.join("out.pcap");
    write_pcap(&inp, input);
    let cfg = write_cfg(
        &dir,
        &format!(
            "[eal]\nfile_prefix = \"{pre}\"\n[forwarding]\nmode = \"{mode}\"\n[[port]]\ndevargs = \"net_pcap0,rx_pcap={},tx_pcap={}\"\n",
            inp.display(),
            out.display()
        ),
    );
    let child = spawn(&cfg);
    let done = wait_until(Duration::from_secs(30), || pcap_count(&out) >= input.len());
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(done, "{mode}: only {} of {} frames came out; stderr: {}", pcap_count(&out), input.len(), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "clean exit on SIGTERM: {:?} {}", o.status, String::from_utf8_lossy(&o.stderr));
    assert!(!runtime_dir(&pre).exists(), "EAL runtime dir left behind");
    let frames = read_pcap(&out);
    let _ = std::fs::remove_dir_all(&dir);
    (frames, stdout, 0)
}

fn accumulated(stdout: &str, key: &str) -> u64 {
    let block = stdout.split("Accumulated forward statistics").nth(1).expect("forward stats printed at shutdown");
    let l = block.lines().find(|l| l.contains(key)).unwrap();
    let mut w = l.split_whitespace();
    w.position(|x| x == key).unwrap();
    w.next().unwrap().parse().unwrap()
}

#[test]
fn io_pcap_in_pcap_out_identical_bytes_and_counts() {
    let input = frames(2000);
    let (out, stdout, _) = forward_pcap("io", "io", &input);
    assert_eq!(out.len(), input.len());
    assert!(out == input, "bytes or order changed");
    assert_eq!(accumulated(&stdout, "RX-packets:"), 2000, "{stdout}");
    assert_eq!(accumulated(&stdout, "TX-packets:"), 2000, "{stdout}");
    assert_eq!(accumulated(&stdout, "TX-dropped:"), 0);
}

#[test]
fn mac_mode_rewrites_macs() {
    let input = frames(300);
    let (out, stdout, port) = forward_pcap("mac", "mac", &input);
    assert_eq!(out.len(), 300);
    assert_eq!(accumulated(&stdout, "TX-packets:"), 300);
    for (o, i) in out.iter().zip(&input) {
        assert_eq!(&o[0..6], &[2, 0, 0, 0, 0, port as u8], "dst = peer address of port {port}");
        assert_ne!(&o[6..12], &i[6..12], "src = the port's own MAC");
        assert_eq!(&o[12..], &i[12..]);
    }
}

/// Stderr of a failed run: exactly one `bulkhead: error:` line, no panic;
/// nothing left under /var/run/dpdk for `pre`.
fn assert_clean_failure(o: &Output, pre: &str, needle: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "must fail: {err}");
    assert_eq!(o.status.code(), Some(1), "exit code 1, not a crash: {:?} {err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("bulkhead: error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].contains(needle), "{:?} should mention {needle:?}", lines[0]);
    assert!(!runtime_dir(pre).exists(), "EAL runtime dir left behind for {pre}");
    lines[0].to_string()
}

#[test]
fn unknown_config_key() {
    let dir = scratch("badkey");
    let pre = prefix("badkey");
    let cfg = write_cfg(&dir, &format!("[eal]\nfile_prefix = \"{pre}\"\n\n[forwarding]\nburts = 32\n"));
    let line = assert_clean_failure(&run_to_end(&cfg), &pre, "forwarding.burts");
    assert!(line.contains(&format!("{}:5:", cfg.display())), "file and line: {line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_devargs() {
    let dir = scratch("baddev");
    let pre = prefix("baddev");
    let cfg = write_cfg(&dir, &format!("[eal]\nfile_prefix = \"{pre}\"\n[[port]]\ndevargs = \"net_nosuchpmd0,x=1\"\n"));
    assert_clean_failure(&run_to_end(&cfg), &pre, "net_nosuchpmd0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn more_queues_than_the_device_has() {
    let dir = scratch("queues");
    let pre = prefix("queues");
    let inp = dir.join("in.pcap");
    write_pcap(&inp, &frames(4));
    let cfg = write_cfg(
        &dir,
        &format!("[eal]\nfile_prefix = \"{pre}\"\n[forwarding]\nrxq = 4\n[[port]]\ndevargs = \"net_pcap0,rx_pcap={}\"\n", inp.display()),
    );
    assert_clean_failure(&run_to_end(&cfg), &pre, "4 rx queues requested, device max 1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_pcap_file() {
    let dir = scratch("nopcap");
    let pre = prefix("nopcap");
    let missing = dir.join("missing.pcap");
    let cfg = write_cfg(&dir, &format!("[eal]\nfile_prefix = \"{pre}\"\n[[port]]\ndevargs = \"net_pcap0,rx_pcap={}\"\n", missing.display()));
    let line = assert_clean_failure(&run_to_end(&cfg), &pre, "does not exist");
    assert!(line.contains("missing.pcap") && line.contains("port[0].devargs"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn second_instance_with_same_prefix() {
    let dir = scratch("dup");
    let pre = prefix("dup");
    let cfg = write_cfg(
        &dir,
        &format!("[eal]\nfile_prefix = \"{pre}\"\n[[port]]\ndevargs = \"net_null0,no-rx=1\"\n[[port]]\ndevargs = \"net_null1,no-rx=1\"\n"),
    );
    let first = spawn(&cfg);
    assert!(wait_until(Duration::from_secs(30), || runtime_dir(&pre).join("mp_socket").exists()), "first instance up");
    std::thread::sleep(Duration::from_millis(300));
    let o = run_to_end(&cfg);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("bulkhead: error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&format!("file prefix '{pre}' is in use")), "{err}");
    assert!(runtime_dir(&pre).exists(), "the second instance must not remove the first one's files");
    sigterm(&first);
    let o1 = first.wait_with_output().unwrap();
    assert!(o1.status.success(), "first instance exits cleanly: {}", String::from_utf8_lossy(&o1.stderr));
    assert!(!runtime_dir(&pre).exists(), "nothing left after the first instance stops");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_default_prints_a_config_that_runs() {
    let o = Command::new(BIN).args(["config", "default"]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("[forwarding]") && text.contains("mode = \"io\""));
    // The printed default forwards net_null traffic; run it briefly.
    let dir = scratch("default");
    let pre = prefix("default");
    let cfg = write_cfg(&dir, &text.replace("file_prefix = \"\"", &format!("file_prefix = \"{pre}\"")));
    let child = spawn(&cfg);
    assert!(wait_until(Duration::from_secs(30), || runtime_dir(&pre).join("mp_socket").exists()));
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(accumulated(&stdout, "TX-packets:") > 0, "net_null traffic was forwarded: {stdout}");
    assert!(!runtime_dir(&pre).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
