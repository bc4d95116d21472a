//! The shell drives a running switch over its control socket: a scripted
//! `--cmdline-file` session runs every shell command and the test checks each
//! one's effect in the output, then stops the switch with SIGTERM and checks
//! that nothing is left behind (socket, /var/run/dpdk/<prefix>).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

struct Switch {
    child: Child,
    prefix: String,
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_switch(dir: &Path, prefix: &str) -> (Switch, PathBuf) {
    let cfg = dir.join("switch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[eal]\nmemory_mb = 256\nfile_prefix = \"{prefix}\"\n[forwarding]\nmode = \"io\"\n\
             [[port]]\ndevargs = \"net_null0\"\n[[port]]\ndevargs = \"net_null1\"\n"
        ),
    )
    .unwrap();
    let sock = dir.join("ctl.sock");
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the switch never opened its control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Switch { child, prefix: prefix.to_string() }, sock)
}

/// The output of each command, split at the echoed prompt lines.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some(cmd) = line.strip_prefix("bulkhead> ") {
            v.push((cmd.to_string(), String::new()));
        } else if let Some(last) = v.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    v
}

fn find<'a>(s: &'a [(String, String)], cmd: &str, nth: usize) -> &'a str {
    s.iter().filter(|(c, _)| c == cmd).nth(nth).map(|(_, o)| o.as_str()).unwrap_or_else(|| panic!("no output for {cmd:?}"))
}

#[test]
fn scripted_session_drives_every_command() {
    let dir = scratch("shell");
    let prefix = format!("bhshell{}", std::process::id());
    let (mut sw, sock) = start_switch(&dir, &prefix);
    let script = dir.join("cmds.txt");
    std::fs::write(
        &script,
        "help\n\
         show config fwd\n\
         set fwd macswap\n\
         show config fwd\n\
         set burst 16\n\
         show config rxtx\n\
         set nbcore 1\n\
         show config cores\n\
         stop\n\
         port stop all\n\
         port config all rxd 512\n\
         port config all rxq 2\n\
         port config all txq 2\n\
         port start all\n\
         show port info 0\n\
         clear port stats all\n\
         show port stats 0\n\
         show port xstats 1\n\
         start\n\
         show fwd stats all\n\
         clear fwd stats all\n\
         set fwd warp9\n\
         port config all rxq 2\n\
         frobnicate\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("cli").arg("--socket").arg(&sock).arg("--cmdline-file").arg(&script).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let s = sections(&text);
    assert!(find(&s, "help", 0).contains("port config all rxq <n>"), "{text}");
    assert!(find(&s, "show config fwd", 0).starts_with("io packet forwarding"), "{text}");
    assert_eq!(find(&s, "set fwd macswap", 0).trim(), "Set macswap packet forwarding mode");
    assert!(find(&s, "show config fwd", 1).starts_with("macswap packet forwarding"), "{text}");
    assert!(find(&s, "show config rxtx", 0).contains("packets/burst=16"), "{text}");
    assert!(find(&s, "show config cores", 0).contains('1'), "{text}");
    let stop = find(&s, "stop", 0);
    assert!(stop.contains("Accumulated forward statistics") && stop.contains("(macswap)"), "{text}");
    let info = find(&s, "show port info 0", 0);
    assert!(info.contains("Current number of RX queues: 2") && info.contains("Current number of TX queues: 2"), "{info}");
    assert!(info.contains("RX descriptors: 512"), "{info}");
    let stats = find(&s, "show port stats 0", 0);
    assert!(stats.contains("RX-packets: 0 "), "stats were cleared and forwarding is stopped: {stats}");
    assert!(find(&s, "show port xstats 1", 0).contains("NIC extended statistics for port 1"), "{text}");
    assert!(find(&s, "start", 0).contains("macswap packet forwarding"), "{text}");
    assert!(find(&s, "show fwd stats all", 0).contains("RX-packets"), "{text}");
    assert!(find(&s, "set fwd warp9", 0).contains("expected one of"), "{text}");
    assert!(find(&s, "port config all rxq 2", 1).starts_with("error:"), "queue change while ports run is refused: {text}");
    assert!(find(&s, "frobnicate", 0).contains("unknown word"), "{text}");
    assert_eq!(out.status.code(), Some(1), "failed lines make a non-zero exit");

    // SIGTERM: clean shutdown, nothing left behind.
    let st = Command::new("kill").arg("-TERM").arg(sw.child.id().to_string()).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    let code = loop {
        if let Some(c) = sw.child.try_wait().unwrap() {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "switch did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit {code:?}");
    assert!(!sock.exists(), "control socket removed");
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL runtime directory removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_without_a_switch_or_config_says_so() {
    let out = Command::new(BIN).args(["cli", "--socket", "/nonexistent/bh.sock"]).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no switch is listening on /nonexistent/bh.sock"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}
