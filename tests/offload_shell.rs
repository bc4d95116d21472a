//! Offload through the shell: a policy switch with the software NIC model on
//! port 0 (net_pcap replaying hot flows) and none on port 1 (net_null), driven
//! by scripted `--cmdline-file` sessions over the control socket: testpmd's
//! `flow` commands go to the model on port 0 and to rte_flow (ENOTSUP) on
//! port 1; `show offload` shows hot flows offloaded (hardware hits and drops);
//! `offload off|on`, `set offload threshold` and quarantine's prefix rules.

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

/// A pcap of TCP frames 10.1.0.1 -> 10.1.0.2: 8 flows to port 80 (allowed)
/// and 4 to port 81 (denied), 64 bytes each.
fn write_pcap(path: &Path) {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    for i in 0..12u16 {
        let mut p = vec![0u8; 64];
        p[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[12..14].copy_from_slice(&[8, 0]);
        p[14] = 0x45;
        p[16..18].copy_from_slice(&50u16.to_be_bytes());
        p[22] = 64;
        p[23] = 6;
        p[26..30].copy_from_slice(&[10, 1, 0, 1]);
        p[30..34].copy_from_slice(&[10, 1, 0, 2]);
        let mut sum: u32 = (0..10).map(|k| u16::from_be_bytes([p[14 + 2 * k], p[15 + 2 * k]]) as u32).sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p[34..36].copy_from_slice(&(2000 + i).to_be_bytes());
        p[36..38].copy_from_slice(&(if i < 8 { 80u16 } else { 81 }).to_be_bytes());
        p[46] = 0x50;
        p[47] = 0x10;
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&64u32.to_le_bytes());
        f.extend_from_slice(&64u32.to_le_bytes());
        f.extend_from_slice(&p);
    }
    std::fs::write(path, f).unwrap();
}

fn start_switch(dir: &Path, prefix: &str) -> (Switch, PathBuf) {
    let pcap = dir.join("hot.pcap");
    write_pcap(&pcap);
    std::fs::write(
        dir.join("model.toml"),
        "[[namespaces]]\nname = \"t\"\n\
         [[workloads]]\nname = \"cli\"\nnamespace = \"t\"\nlabels = { app = \"cli\" }\naddresses = [\"10.1.0.1\"]\nport = 0\n\
         [[workloads]]\nname = \"srv\"\nnamespace = \"t\"\nlabels = { app = \"srv\" }\naddresses = [\"10.1.0.2\"]\nport = 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[[policy]]\nname = \"srv\"\nnamespace = \"t\"\nselector = \"app=srv\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=cli\" }]\n  ports = [\"80/tcp\"]\n",
    )
    .unwrap();
    let cfg = dir.join("switch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[eal]\nmemory_mb = 256\nfile_prefix = \"{prefix}\"\n[forwarding]\nmode = \"policy\"\n\
             [[port]]\ndevargs = \"net_pcap_os0,rx_pcap={},infinite_rx=1\"\n[[port]]\ndevargs = \"net_null_os1,no-rx=1\"\n\
             [policy]\nmodel = \"{}\"\nfiles = [\"{}\"]\noffload = \"model\"\noffload_ports = [0]\noffload_threshold = 4\n\
             [flowlog]\nfollow = \"\"\n",
            pcap.display(),
            dir.join("model.toml").display(),
            dir.join("policy.toml").display()
        ),
    )
    .unwrap();
    let sock = dir.join("ctl.sock");
    let child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).arg("--socket").arg(&sock).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the switch never opened its control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Switch { child, prefix: prefix.to_string() }, sock)
}

/// Runs `lines` as one scripted session; the output of each command.
fn session(dir: &Path, sock: &Path, lines: &[&str]) -> Vec<(String, String)> {
    let script = dir.join("cmds.txt");
    std::fs::write(&script, lines.join("\n") + "\n").unwrap();
    let out = Command::new(BIN).arg("cli").arg("--socket").arg(sock).arg("--cmdline-file").arg(&script).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut v: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("bulkhead> ") {
            v.push((cmd.to_string(), String::new()));
        } else if let Some(last) = v.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    assert_eq!(v.len(), lines.len(), "one output per command: {text}");
    v
}

/// A counter `name: N` in `show offload` output.
fn counter(text: &str, name: &str) -> u64 {
    let at = text.find(&format!("{name}: ")).unwrap_or_else(|| panic!("no {name} in {text}"));
    text[at + name.len() + 2..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn flow_commands_show_offload_and_switches() {
    let dir = std::env::temp_dir().join(format!("bh-offload-shell-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("bhoffsh{}", std::process::id());
    let (mut sw, sock) = start_switch(&dir, &prefix);
    std::thread::sleep(Duration::from_millis(800));

    let rule = "ingress pattern eth / ipv4 src is 10.9.9.9 / tcp dst is 22 / end actions drop / end";
    let s = session(
        &dir,
        &sock,
        &[
            "show offload",
            "set offload threshold 8",
            &format!("flow validate 0 {rule}"),
            &format!("flow create 0 {rule}"),
            &format!("flow create 1 {rule}"),
            "flow create 0 ingress pattern eth / end actions represented_port ethdev_port_id 1 / end",
            "flow query 0 4242 count",
        ],
    );
    let show = &s[0].1;
    assert!(show.contains("state: on") && show.contains("ports: 0"), "{show}");
    assert!(counter(show, "installed") >= 12, "all 12 hot flows offloaded: {show}");
    assert!(counter(show, "hw drops") > 0, "the denied flows are dropped by the model: {show}");
    assert!(counter(show, "hardware hits") > counter(show, "hw drops"), "allowed flows forwarded on marks: {show}");
    assert!(s[1].1.contains("8 packets per millisecond"), "{:?}", s[1]);
    assert_eq!(s[2].1.trim(), "Flow rule validated");
    let created = s[3].1.trim();
    let id: u32 = created.strip_prefix("Flow rule #").and_then(|r| r.strip_suffix(" created")).unwrap_or_else(|| panic!("{created}")).parse().unwrap();
    assert!(s[4].1.starts_with("error:") && s[4].1.contains("port 1 (rte_flow, no offload model): not supported"), "{:?}", s[4]);
    assert!(s[5].1.starts_with("error:") && s[5].1.contains("represented_port"), "the model refuses what it cannot do: {:?}", s[5]);
    assert!(s[6].1.starts_with("error:") && s[6].1.contains("no such rule 4242"), "{:?}", s[6]);

    let s = session(
        &dir,
        &sock,
        &[
            "flow list 0",
            &format!("flow query 0 {id} count"),
            &format!("flow destroy 0 rule {id}"),
            "flow list 0",
            "offload off",
            "show offload",
            "offload on",
            "quarantine t/cli",
            "flow list 0",
            "unquarantine t/cli",
            "flow flush 0",
            "flow list 0",
        ],
    );
    let list = &s[0].1;
    assert!(list.contains(&format!("{id:<6} shell")) && list.contains("ipv4 src is 10.9.9.9"), "{list}");
    assert!(list.contains("actions mark id") && list.contains("actions drop"), "offloaded MARK and DROP rules listed: {list}");
    assert!(s[1].1.contains("hits: 0"), "nothing from 10.9.9.9: {:?}", s[1]);
    assert_eq!(s[2].1.trim(), format!("Flow rule #{id} destroyed"));
    assert!(!s[3].1.contains("10.9.9.9"), "{}", s[3].1);
    assert_eq!(s[4].1.trim(), "offload off");
    assert!(s[5].1.contains("state: off") && s[5].1.contains("rules in hardware: 0"), "off removes every offloaded rule: {}", s[5].1);
    assert!(s[7].1.contains("2 quarantine prefix rules installed"), "{:?}", s[7]);
    assert_eq!(s[8].1.matches("quarantine 10.1.0.1").count(), 2, "{}", s[8].1);
    assert!(s[9].1.contains("2 quarantine prefix rules removed"), "{:?}", s[9]);
    assert_eq!(s[10].1.trim(), "Flushed all flow rules on port 0");

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
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL runtime directory removed");
    let _ = std::fs::remove_dir_all(&dir);
}
