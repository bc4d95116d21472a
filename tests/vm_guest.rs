//! A real VM on a VM port: QEMU (TCG, no hugepages: memfd shared memory)
//! boots the tiny guest tests/vm/build-guest.sh makes (Debian's kernel, a
//! busybox initramfs) with a vhost-user virtio-net on port 0 of a switch in
//! policy mode; a dpdk-testpmd virtio_user peer in `icmpecho` mode sits on
//! port 1. Both are labelled workloads; the peer (app=server) admits ingress
//! only from app=client. The guest pings the peer and sends it one UDP
//! datagram per round, printing BH-PING i ok|fail on its serial console.
//!
//!   labelled app=client  -> pings answered, UDP allowed (flow records say allow)
//!   `workload label vm app=other` over the control socket -> pings fail, UDP
//!                           and ICMP denied (policy drops counted, deny records)
//!   labelled back        -> pings answered again
//!   QEMU killed          -> the switch sees the VM's link go down
//!
//! Without QEMU the test prints why and returns (ci/deps.sh installs it, so
//! on our machines it runs). The guest is built once per target directory
//! (CARGO_TARGET_TMPDIR/vm-guest) and reused.

#[path = "support/vhost.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const GUEST_MAC: &str = "52:54:00:00:00:02";
const PEER_MAC: &str = "02:00:00:00:00:01";

struct Qemu(Child);
impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn guest() -> Result<PathBuf, String> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-guest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/build-guest.sh");
    let o = Command::new("bash").arg(&script).arg(&out).output().map_err(|e| format!("build-guest.sh: {e}"))?;
    if !o.status.success() {
        return Err(format!("build-guest.sh failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

/// Lines of the console log starting with `BH-PING`, as (round, ok).
fn pings(console: &Path) -> Vec<(u32, bool)> {
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let r = l.trim().strip_prefix("BH-PING ")?;
            let (i, s) = r.split_once(' ')?;
            Some((i.parse().ok()?, s.trim() == "ok"))
        })
        .collect()
}

fn counts_after(console: &Path, from: usize) -> (usize, usize) {
    let p = pings(console);
    let tail = &p[from.min(p.len())..];
    (tail.iter().filter(|x| x.1).count(), tail.iter().filter(|x| !x.1).count())
}

fn records(path: &Path, proto: u8, verdict: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"proto\":{proto},")) && l.contains(&format!("\"verdict\":\"{verdict}\"")) && l.contains("\"ip\":\"10.0.0.2\""))
        .count()
}

#[test]
fn qemu_guest_on_a_vm_port_policy_allows_denies_and_flips_live() {
    let _g = serial();
    if Command::new("qemu-system-x86_64").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        println!("SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86; ci/deps.sh does)");
        return;
    }
    let g = match guest() {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: cannot build the guest: {e}");
            return;
        }
    };
    let dir = scratch("vm");
    let pid = std::process::id();
    let (vm_sock, peer_sock) = (dir.join("vm.sock"), dir.join("peer.sock"));
    let model = dir.join("model.toml");
    std::fs::write(
        &model,
        format!(
            "[[namespaces]]\nname = \"lab\"\n\
             [[workloads]]\nname = \"vm\"\nnamespace = \"lab\"\nlabels = {{ app = \"client\" }}\naddresses = [\"10.0.0.2\"]\nmac = \"{GUEST_MAC}\"\nport = 0\n\
             [[workloads]]\nname = \"peer\"\nnamespace = \"lab\"\nlabels = {{ app = \"server\" }}\naddresses = [\"10.0.0.1\"]\nmac = \"{PEER_MAC}\"\nport = 1\n"
        ),
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[[policy]]\nname = \"server\"\nnamespace = \"lab\"\nselector = \"app=server\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=client\" }]\n").unwrap();
    let flows = dir.join("flows.jsonl");
    let sw = Switch::start(
        &dir,
        &format!("bh-vm-{pid}"),
        &format!(
            "[forwarding]\nmode = \"policy\"\n[[port]]\ndevargs = \"net_vhost0,iface={}\"\n[[port]]\ndevargs = \"net_vhost1,iface={}\"\n\
             [policy]\nmodel = \"{}\"\nfiles = [\"{}\"]\n[flowlog]\nfollow = \"\"\njson = \"{}\"\n",
            vm_sock.display(),
            peer_sock.display(),
            model.display(),
            policy.display(),
            flows.display()
        ),
    );
    // The peer: answers ARP and ICMP echo, counts (and drops) the UDP.
    let mut peer = Frontend::start(&dir, &format!("bh-vm-peer-{pid}"), &[format!("virtio_user0,path={},mac={PEER_MAC}", peer_sock.display())], &["--forward-mode=icmpecho"]);
    peer.cmd("start");

    let console = dir.join("console.log");
    let qemu = Command::new("qemu-system-x86_64")
        .args(["-machine", "pc,accel=tcg,memory-backend=mem", "-m", "256", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-display", "none"])
        .arg("-kernel")
        .arg(g.join("vmlinuz"))
        .arg("-initrd")
        .arg(g.join("initramfs.gz"))
        .args(["-append", "console=ttyS0 quiet panic=-1 bh.ip=10.0.0.2/24 bh.peer=10.0.0.1 bh.count=300 bh.udp=5000"])
        .arg("-chardev")
        .arg(format!("socket,id=c0,path={}", vm_sock.display()))
        .args(["-netdev", "type=vhost-user,id=n0,chardev=c0"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC},vectors=0")])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(dir.join("qemu.log")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.join("qemu.err")).unwrap()))
        .spawn()
        .expect("qemu-system-x86_64");
    let qemu = Qemu(qemu);
    let con = || std::fs::read_to_string(&console).unwrap_or_default();
    let booted = wait_until(Duration::from_secs(120), || con().contains("BH-NET up"));
    assert!(booted, "the guest did not boot: {}\n{}", con(), std::fs::read_to_string(dir.join("qemu.err")).unwrap_or_default());
    let (state, ups, _) = sw.vhost_state(0);
    assert_eq!((state.as_str(), ups), ("connected", 1), "{}", sw.cli("show vhost\n"));
    assert!(sw.cli("show port info 0\n").contains("vhost-user workloads: lab/vm"));

    // Allowed: the pings come back, the UDP goes through.
    let allowed = wait_until(Duration::from_secs(60), || counts_after(&console, 0).0 >= 3);
    assert!(allowed, "no ping answered while policy allows: {}\n{}", con(), sw.cli("show pmd stats\n"));
    assert!(wait_until(Duration::from_secs(10), || records(&flows, 17, "allow") >= 1), "no UDP allow record");
    assert!(wait_until(Duration::from_secs(10), || records(&flows, 1, "allow") >= 1), "no ICMP allow record");
    let tx_peer = sw.port_counter(1, "TX-packets:");

    // A label change over the control socket flips it to deny, live.
    let out = sw.cli("workload label lab/vm app=other\n");
    assert!(out.contains("workload label lab/vm"), "{out}");
    let mark = pings(&console).len();
    let denied = wait_until(Duration::from_secs(60), || counts_after(&console, mark + 1).1 >= 3);
    assert!(denied, "pings still answered after the label change: {}", con());
    let stats = sw.cli("show pmd stats\n");
    assert!(stats.contains("policy_ingress="), "no policy drops counted: {stats}");
    let deny_records = wait_until(Duration::from_secs(10), || records(&flows, 17, "deny") >= 1 && records(&flows, 1, "deny") >= 1);
    assert!(deny_records, "no deny records for UDP and ICMP");
    // Only the first round after the change may straddle it.
    let (ok_after, _) = counts_after(&console, mark + 1);
    assert_eq!(ok_after, 0, "a ping was answered under deny: {}", con());
    let tx_mid = sw.port_counter(1, "TX-packets:");

    // And back.
    sw.cli("workload label lab/vm app=client\n");
    let mark2 = pings(&console).len();
    let again = wait_until(Duration::from_secs(60), || counts_after(&console, mark2 + 1).0 >= 2);
    assert!(again, "pings not answered after labelling back: {}", con());
    assert!(sw.port_counter(1, "TX-packets:") > tx_mid && tx_mid >= tx_peer);

    // The VM goes away: the switch sees its link go down.
    drop(qemu);
    let down = wait_until(Duration::from_secs(15), || sw.vhost_state(0).2 >= 1);
    assert!(down, "{}", sw.cli("show vhost\n"));
    // (The first "link down" is from start-up, before QEMU connected.)
    let downs = || sw.log_text().matches("port 0 (net_vhost0): vhost-user link down, published generation").count();
    assert!(wait_until(Duration::from_secs(5), || downs() >= 2), "{}", sw.log_text());
    peer.cmd("stop");
    peer.quit();
    sw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
