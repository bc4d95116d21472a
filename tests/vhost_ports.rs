//! VM ports end to end, no hugepages: dpdk-testpmd virtio_user frontends
//! stand in for VMs on two `net_vhost` ports of a running switch (io mode).
//!
//!   A (sender)   net_pcap rx_pcap per queue --io--> virtio_user --vhost-user--> port 0
//!   switch       port 0 queue q  --io-->  port 1 queue q
//!   B (receiver) port 1 --vhost-user--> virtio_user --io--> net_pcap tx_pcap per queue
//!
//! Each case first floods from a frontend A that is then killed (SIGKILL, as a
//! crashing VM): the switch must see the link go down, keep no mbuf, and serve
//! a restarted A on the same port. Then the restarted A sends known frames and
//! B's capture must hold exactly them, byte for byte, per queue and in order,
//! while the switch's port counters agree on packets and bytes. Both socket
//! modes are covered (Bulkhead server and Bulkhead client) with 1 and 2 queues.

#[path = "support/vhost.rs"]
mod support;

use std::path::Path;
use std::time::Duration;
use support::*;

const FLOOD_TAG: u8 = 0xee;
const TAG: u8 = 0x5a;
/// Frames per queue: fewer than the rings hold (queue_size=1024), so a
/// frontend or the switch being descheduled for a while loses nothing.
const N: u32 = 400;

fn virtio(sock: &Path, queues: u16, frontend_is_server: bool) -> String {
    format!("virtio_user0,path={},queues={queues},queue_size=1024{}", sock.display(), if frontend_is_server { ",server=1" } else { "" })
}

fn pcaps(dir: &Path, what: &str, key: &str, q: u16) -> String {
    (0..q).map(|i| format!("{key}={}", dir.join(format!("{what}{i}.pcap")).display())).collect::<Vec<_>>().join(",")
}

fn case(name: &str, queues: u16, port0_server: bool) {
    let _g = serial();
    let dir = scratch(name);
    let pid = std::process::id();
    let (s0, s1) = (dir.join("vm0.sock"), dir.join("vm1.sock"));
    let mode = |server: bool| if server { "" } else { ",client=1" };
    let model = dir.join("model.toml");
    std::fs::write(&model, "[[namespaces]]\nname = \"lab\"\n").unwrap();
    let sw = Switch::start(
        &dir,
        &format!("bh-{name}-{pid}"),
        &format!(
            "[forwarding]\nmode = \"io\"\n[[port]]\ndevargs = \"net_vhost0,iface={},queues={queues}{}\"\n[[port]]\ndevargs = \"net_vhost1,iface={},queues={queues}{}\"\n[policy]\nmodel = \"{}\"\n",
            s0.display(),
            mode(port0_server),
            s1.display(),
            mode(!port0_server),
            model.display()
        ),
    );
    let info = sw.cli("show port info 0\nshow port info 1\n");
    let m0 = if port0_server { "server" } else { "client" };
    let m1 = if port0_server { "client" } else { "server" };
    assert!(info.contains(&format!("vhost-user socket: {} ({m0} mode)", s0.display())), "{info}");
    assert!(info.contains(&format!("vhost-user socket: {} ({m1} mode)", s1.display())), "{info}");
    assert!(info.contains(&format!("vhost-user queues: {queues}")), "{info}");
    assert!(info.contains("vhost-user connection: listening") && info.contains("vhost-user connection: reconnecting"), "{info}");
    // A workload bound to a VM port by its device name.
    let out = sw.cli(&format!("workload add lab/vm1 ip=10.9.0.{queues} labels=app=vm port=net_vhost1\nworkload add lab/vm2 ip=10.9.1.1 port=net_vhost7\n"));
    assert!(out.contains("workload add lab/vm1:"), "{out}");
    assert!(out.contains("no port named \"net_vhost7\""), "{out}");
    assert!(sw.vhost_row(1).last().is_some_and(|w| w == "lab/vm1"), "{:?}", sw.vhost_row(1));
    assert!(sw.cli("show port info 1\n").contains("vhost-user workloads: lab/vm1"));

    // Inputs: per queue, a flood (replayed for ever) and the checked frames.
    let empty = dir.join("empty.pcap");
    write_pcap(&empty, &[]);
    let mut want = Vec::new();
    for q in 0..queues {
        write_pcap(&dir.join(format!("flood{q}.pcap")), &frames(64, FLOOD_TAG ^ q as u8));
        let f = frames(N, TAG.wrapping_add(q as u8));
        write_pcap(&dir.join(format!("in{q}.pcap")), &f);
        want.push(f);
    }
    let qargs = [format!("--rxq={queues}"), format!("--txq={queues}")];
    let app = |fwd: &'static str| -> Vec<String> { vec![qargs[0].clone(), qargs[1].clone(), format!("--forward-mode={fwd}")] };

    // B, the receiver, on port 1 (its frontend owns the socket when port 1 is
    // a client). net_pcap needs one rx source per queue: the empty capture.
    let bvdevs = [
        virtio(&s1, queues, port0_server),
        format!("net_pcap0,{},{}", (0..queues).map(|_| format!("rx_pcap={}", empty.display())).collect::<Vec<_>>().join(","), pcaps(&dir, "out", "tx_pcap", queues)),
    ];
    let aargs = app("io");
    let aref: Vec<&str> = aargs.iter().map(String::as_str).collect();
    let mut b = Frontend::start(&dir, &format!("bh-{name}-b-{pid}"), &bvdevs, &aref);
    b.cmd("start");

    // A0 floods and is killed mid-stream.
    let a0vdevs = [virtio(&s0, queues, !port0_server), format!("net_pcap0,{},infinite_rx=1,{}", pcaps(&dir, "flood", "rx_pcap", queues), pcaps(&dir, "a0back", "tx_pcap", queues))];
    let baseline = sw.mbufs_in_use();
    let mut a0 = Frontend::start(&dir, &format!("bh-{name}-a0-{pid}"), &a0vdevs, &aref);
    let both = wait_until(Duration::from_secs(30), || sw.vhost_state(0).0 == "connected" && sw.vhost_state(1).0 == "connected");
    assert!(both, "frontends did not connect: {}", sw.cli("show vhost\n"));
    let row = sw.vhost_row(0);
    let features = u64::from_str_radix(row[6].trim_start_matches("0x"), 16).unwrap();
    assert!(features & (1 << 32) != 0, "VERSION_1 negotiated: {row:?}");
    assert_eq!(features & (1 << 22) != 0, queues > 1, "MQ negotiated only with more than one queue: {row:?}");
    let vrings = sw.cli("show port info 0\n");
    assert!(vrings.contains(&format!("{} vrings", 2 * queues)), "{vrings}");
    a0.cmd("start");
    let flowing = wait_until(Duration::from_secs(30), || sw.port_counter(0, "RX-packets:") > 2000);
    assert!(flowing, "no flood through port 0: {}", sw.cli("show port stats all\n"));
    a0.kill();
    let gone = wait_until(Duration::from_secs(15), || {
        let (st, _, downs) = sw.vhost_state(0);
        st != "connected" && downs >= 1
    });
    assert!(gone, "the switch did not see the frontend go: {}", sw.cli("show vhost\n"));
    assert!(wait_until(Duration::from_secs(10), || sw.mbufs_in_use() <= baseline), "mbufs held after the frontend died: {} > {baseline}", sw.mbufs_in_use());
    assert!(sw.log_text().contains("port 0 (net_vhost0): vhost-user link down"), "{}", sw.log_text());

    // A, restarted on the same socket, sends the checked frames.
    let rx0 = sw.port_counter(0, "RX-packets:");
    let rxb0 = sw.port_counter(0, "RX-bytes:");
    let tx1 = sw.port_counter(1, "TX-packets:");
    let avdevs = [virtio(&s0, queues, !port0_server), format!("net_pcap0,{},{}", pcaps(&dir, "in", "rx_pcap", queues), pcaps(&dir, "aback", "tx_pcap", queues))];
    if !port0_server {
        // A killed frontend that owned the socket (QEMU server=on) leaves the
        // file; whoever restarts the VM removes it, as a VM manager does.
        let _ = std::fs::remove_file(&s0);
    }
    let mut a = Frontend::start(&dir, &format!("bh-{name}-a-{pid}"), &avdevs, &aref);
    let back = wait_until(Duration::from_secs(30), || sw.vhost_state(0).0 == "connected");
    assert!(back, "the restarted frontend did not connect: {}", sw.cli("show vhost\n"));
    let (_, ups, downs) = sw.vhost_state(0);
    assert!(ups >= 2 && downs >= 1, "link events: {ups} up, {downs} down");
    a.cmd("start");
    let total = u64::from(N) * u64::from(queues);
    let bytes: u64 = want.iter().flatten().map(|f| f.len() as u64).sum();
    let done = wait_until(Duration::from_secs(60), || sw.port_counter(1, "TX-packets:") - tx1 >= total);
    assert!(done, "not all frames forwarded: {}", sw.cli("show port stats all\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sw.port_counter(0, "RX-packets:") - rx0, total, "packets into port 0");
    assert_eq!(sw.port_counter(0, "RX-bytes:") - rxb0, bytes, "bytes into port 0");
    assert_eq!(sw.port_counter(1, "TX-packets:") - tx1, total, "packets out of port 1");
    a.cmd("stop");
    b.cmd("stop");
    a.quit();
    b.quit();
    for (q, w) in want.iter().enumerate() {
        let got: Vec<Vec<u8>> = read_pcap(&dir.join(format!("out{q}.pcap"))).into_iter().filter(|f| f.len() > 26 && f[27] == TAG.wrapping_add(q as u8)).collect();
        assert_eq!(got.len(), w.len(), "queue {q}: frames received by B");
        for (i, (g, e)) in got.iter().zip(w).enumerate() {
            assert_eq!(g, e, "queue {q} frame {i} differs");
        }
    }
    assert!(wait_until(Duration::from_secs(10), || sw.mbufs_in_use() <= baseline), "mbufs held at the end: {}", sw.mbufs_in_use());
    // The vhost counters (the switch's own, next to the PMD's) clear too.
    sw.cli("clear port stats all\n");
    for (port, field) in [(0, "RX-packets:"), (0, "RX-bytes:"), (1, "TX-packets:")] {
        assert_eq!(sw.port_counter(port, field), 0, "port {port} {field} after clear: {}", sw.cli("show port stats all\n"));
    }
    sw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vhost_server_and_client_one_queue_frontend_restart() {
    case("vh1q", 1, true);
}

#[test]
fn vhost_client_and_server_two_queues_frontend_restart() {
    case("vh2q", 2, false);
}

/// A 2-queue port whose VM set up one queue pair: the switch polls only the
/// vrings the frontend enabled (the vhost library logs an error for each call
/// on a vring that does not exist), and the one queue carries every frame.
#[test]
fn vhost_two_queue_ports_serve_one_queue_frontends() {
    let _g = serial();
    let dir = scratch("vh2on1");
    let pid = std::process::id();
    let (s0, s1) = (dir.join("vm0.sock"), dir.join("vm1.sock"));
    let model = dir.join("model.toml");
    std::fs::write(&model, "[[namespaces]]\nname = \"lab\"\n").unwrap();
    let sw = Switch::start(
        &dir,
        &format!("bh-vh2on1-{pid}"),
        &format!(
            "[forwarding]\nmode = \"io\"\n[[port]]\ndevargs = \"net_vhost0,iface={},queues=2\"\n[[port]]\ndevargs = \"net_vhost1,iface={},queues=2\"\n[policy]\nmodel = \"{}\"\n",
            s0.display(),
            s1.display(),
            model.display()
        ),
    );
    let empty = dir.join("empty.pcap");
    write_pcap(&empty, &[]);
    let want = frames(N, TAG);
    write_pcap(&dir.join("in0.pcap"), &want);
    let args = ["--rxq=1", "--txq=1", "--forward-mode=io"];
    let mut b = Frontend::start(&dir, &format!("bh-vh2on1-b-{pid}"), &[virtio(&s1, 1, false), format!("net_pcap0,rx_pcap={},tx_pcap={}", empty.display(), dir.join("out0.pcap").display())], &args);
    b.cmd("start");
    let mut a = Frontend::start(&dir, &format!("bh-vh2on1-a-{pid}"), &[virtio(&s0, 1, false), format!("net_pcap0,rx_pcap={},tx_pcap={}", dir.join("in0.pcap").display(), dir.join("aback0.pcap").display())], &args);
    let both = wait_until(Duration::from_secs(30), || sw.vhost_state(0).0 == "connected" && sw.vhost_state(1).0 == "connected");
    assert!(both, "frontends did not connect: {}", sw.cli("show vhost\n"));
    let info = sw.cli("show port info 0\n");
    assert!(info.contains("vhost-user queues: 2") && info.contains("(vid") && info.contains("2 vrings"), "{info}");
    a.cmd("start");
    let done = wait_until(Duration::from_secs(60), || sw.port_counter(1, "TX-packets:") >= u64::from(N));
    assert!(done, "not all frames forwarded: {}", sw.cli("show port stats all\n"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sw.port_counter(0, "RX-packets:"), u64::from(N));
    assert_eq!(sw.port_counter(1, "TX-packets:"), u64::from(N));
    a.cmd("stop");
    b.cmd("stop");
    a.quit();
    b.quit();
    let got: Vec<Vec<u8>> = read_pcap(&dir.join("out0.pcap")).into_iter().filter(|f| f.len() > 27 && f[27] == TAG).collect();
    assert_eq!(got, want, "frames received by B");
    // DPDK logs to the switch's stderr.
    let log = sw.log_text() + &std::fs::read_to_string(dir.join("switch.err")).unwrap_or_default();
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("invalid virtqueue")).take(3).collect();
    assert!(bad.is_empty(), "the switch polled a vring that does not exist:\n{}", bad.join("\n"));
    sw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
