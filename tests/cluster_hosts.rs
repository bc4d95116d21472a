//! Two Bulkhead hosts (two `bulkhead run` processes, distinct file prefixes)
//! sharing one etcd (Debian's etcd-server, started here on 127.0.0.1 with free
//! ports and a temporary data directory). The hosts are linked by a net_memif
//! uplink (host a the server, host b the client, over a socket in the test's
//! directory); each host's workload sits behind a net_tap port whose kernel
//! side the test sends into and captures on. Everything stays in this
//! network namespace because etcd listens on its loopback. (Why not veth
//! pairs with net_af_packet: 22.11 joins every af_packet socket to a
//! PACKET_FANOUT group whose id clashes between two ports of one process, and
//! between two processes in one namespace.)

use control::datastore::etcd::EtcdConfig;
use control::datastore::server::{self, EtcdCluster};
use control::datastore::{Datastore, EtcdStore, WorkloadRecord};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

/// The tests of this file one at a time: each runs busy-polling switches
/// pinned to the same lcores, and traffic counts suffer when they overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The test's traffic: raw frames into one host's workload tap, counted on
/// the other's (python3 AF_PACKET sockets on the taps' kernel side).
/// The two workload taps, named after the test process (15 characters at
/// most) so two runs of this test on one machine do not share interfaces.
struct Taps {
    a: String,
    b: String,
}

const TRAFFIC: &str = r#"
import socket,struct,sys,time
mode,ifc,src,dst,n=sys.argv[1],sys.argv[2],sys.argv[3],sys.argv[4],int(sys.argv[5])
def ip(s): return bytes(int(x) for x in s.split('.'))
if mode=='rx':
    r=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3)); r.bind((ifc,0)); r.settimeout(0.05)
    print('ready',flush=True)
    got=set(); end=time.time()+n/1000.0
    while time.time()<end and len(got)<int(sys.argv[6]):
        try: f=r.recv(2048)
        except socket.timeout: continue
        if len(f)>=54 and f[12:14]==b'\x08\x00' and f[26:30]==ip(src) and f[30:34]==ip(dst):
            got.add(struct.unpack('!H',f[34:36])[0])
    print(len(got))
else:
    s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind((ifc,0))
    for i in range(n):
        tcp=struct.pack('!HHIIBBHHH',30000+i,80,1,0,0x50,0x02,65535,0,0)
        iph=struct.pack('!BBHHHBBH4s4s',0x45,0,40,0,0,64,6,0,ip(src),ip(dst))
        s.send(bytes.fromhex('020000000002020000000001')+b'\x08\x00'+iph+tcp)
        time.sleep(0.002)
"#;

/// A directory removed when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped when dropped (a failing assertion
/// leaves nothing running).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Taps {
    /// Sends `n` TCP SYNs src -> dst:80 into tap `tx` (2 ms apart), counting nothing.
    fn send(&self, tx: &str, src: &str, dst: &str, n: u32) {
        let ok = Command::new("python3").args(["-c", TRAFFIC, "tx", tx, src, dst, &n.to_string()]).status().unwrap().success();
        assert!(ok, "sender failed");
    }

    /// Sends `n` TCP SYNs src -> dst:80 into tap `tx` (2 ms apart) and counts
    /// those that come out of tap `rx`.
    fn traffic(&self, tx: &str, rx: &str, src: &str, dst: &str, n: u32) -> u32 {
        let ms = (n * 2 + 2500).to_string();
        let mut r = Reap(Command::new("python3").args(["-c", TRAFFIC, "rx", rx, src, dst, &ms, &n.to_string()]).stdout(Stdio::piped()).spawn().unwrap());
        let mut out = std::io::BufReader::new(r.0.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        self.send(tx, src, dst, n);
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(r.0.wait().unwrap().success());
        line.trim().parse().unwrap()
    }
    fn ab(&self, n: u32) -> u32 {
        self.traffic(&self.a, &self.b, "10.8.0.1", "10.8.0.2", n)
    }
    fn ba(&self, n: u32) -> u32 {
        self.traffic(&self.b, &self.a, "10.8.0.2", "10.8.0.1", n)
    }
}

struct Host {
    child: Child,
    prefix: String,
    dir: PathBuf,
    metrics: std::net::SocketAddr,
}

impl Host {
    fn start(dir: &Path, name: &str, up: &str, wl: &str, addr: &str, endpoints: &[String]) -> Host {
        let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let cluster = format!("etcd = [{}]\nprefix = \"/it/\"\nhost = \"{name}\"\nlease_ttl = 3\n", eps.join(", "));
        Host::start_with(dir, name, up, wl, addr, &cluster)
    }
    /// A host whose `[cluster]` section is `cluster`.
    fn start_with(dir: &Path, name: &str, up: &str, wl: &str, addr: &str, cluster: &str) -> Host {
        std::fs::create_dir_all(dir).unwrap();
        let prefix = format!("bh8-{name}-{}", std::process::id());
        std::fs::write(
            dir.join("model.toml"),
            format!("[[namespaces]]\nname = \"shop\"\n[[workloads]]\nname = \"web-{name}\"\nnamespace = \"shop\"\nlabels = {{ app = \"web\" }}\naddresses = [\"{addr}\"]\nport = 1\n"),
        )
        .unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        std::fs::write(
            dir.join("switch.toml"),
            format!(
                "[eal]\nmemory_mb = 256\nfile_prefix = \"{prefix}\"\nlcores = \"0,1\"\n[forwarding]\nmode = \"policy\"\n\
                 [[port]]\ndevargs = \"{up}\"\n[[port]]\ndevargs = \"net_tap_{name},iface={wl}\"\n\
                 [policy]\nmodel = \"{model}\"\nuplink = 0\n[metrics]\nlisten = \"{metrics}\"\n[flowlog]\nfollow = \"\"\n\
                 [cluster]\n{cluster}",
                model = dir.join("model.toml").display(),
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.join("switch.toml"))
            .arg("--socket")
            .arg(dir.join("ctl.sock"))
            .stdout(Stdio::from(std::fs::File::create(dir.join("out.log")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.join("err.log")).unwrap()))
            .spawn()
            .unwrap();
        Host { child, prefix, dir: dir.to_path_buf(), metrics }
    }
    /// Runs shell commands over the host's control socket; their output.
    fn cli(&self, lines: &str) -> String {
        let f = self.dir.join("cmds.txt");
        std::fs::write(&f, lines).unwrap();
        let o = Command::new(BIN).arg("cli").arg("--socket").arg(self.dir.join("ctl.sock")).arg("--cmdline-file").arg(&f).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }
    /// Packets this host's policy engine dropped on egress (every lcore).
    fn egress_denied(&self) -> u64 {
        let text = self.cli("show pmd stats\n");
        let n: u64 = text.split_whitespace().filter_map(|w| w.strip_prefix("policy_egress=")).map(|v| v.parse::<u64>().unwrap()).sum();
        assert!(text.contains("pmd thread lcore"), "{text}");
        n
    }
    /// The `bulkhead_datastore_*` lines of the Prometheus page.
    fn datastore_metrics(&self) -> String {
        let mut conn = std::net::TcpStream::connect(self.metrics).unwrap();
        std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut page = String::new();
        std::io::Read::read_to_string(&mut conn, &mut page).unwrap();
        page.lines().filter(|l| l.starts_with("bulkhead_datastore_")).collect::<Vec<_>>().join("\n")
    }
    /// The published policy generation (`show policy`).
    fn generation(&self) -> u64 {
        let text = self.cli("show policy\n");
        let g = text.split_whitespace().skip_while(|w| *w != "generation").nth(1);
        g.and_then(|g| g.parse().ok()).unwrap_or_else(|| panic!("{text}"))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default() + &std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
    }
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "host exit {st}: {}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("host did not stop: {}", self.log());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

const POLICY: &str = "[settings]\ndefault_deny = true\n\
[[policy]]\nname = \"web\"\nnamespace = \"shop\"\nselector = \"app=web\"\n\
  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"80/tcp\"]\n\
  [[policy.egress]]\n  to = [{ selector = \"app=web\" }]\n  ports = [\"80/tcp\"]\n";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn two_hosts_enforce_labels_from_etcd_and_survive_an_etcd_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !server::available() {
        println!("SKIP: {} is not installed (ci/deps.sh installs etcd-server)", server::ETCD);
        return;
    }
    let root = std::env::temp_dir().join(format!("bh-cluster-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Declared first, dropped last: the directory goes even when an
    // assertion fails (after the hosts and etcd are stopped).
    let _root = RemoveOnDrop(root.clone());
    let mut etcd = EtcdCluster::start(&root.join("etcd"), 1).unwrap();
    let cfg = EtcdConfig::new(etcd.endpoints(), "/it/");
    let mut st = EtcdStore::connect(cfg.clone()).unwrap();
    st.put_policy("web.toml", POLICY).unwrap();
    // No namespaces: etcd listens on this namespace's loopback. The uplink is
    // a memif link between the two processes; the workloads sit behind taps.
    let ns = Taps { a: format!("bh8a{}", std::process::id()), b: format!("bh8b{}", std::process::id()) };
    let sock = root.join("memif.sock");
    let up = |role: &str, id: u8| format!("net_memif{id},role={role},id=0,socket={},socket-abstract=no", sock.display());
    let a = Host::start(&root.join("a"), "a", &up("server", 0), &ns.a, "10.8.0.1", &etcd.endpoints());
    std::thread::sleep(Duration::from_millis(500));
    let b = Host::start(&root.join("b"), "b", &up("client", 0), &ns.b, "10.8.0.2", &etcd.endpoints());
    // Both hosts registered and enforce the same revision.
    let t = Instant::now();
    loop {
        let acks = st.acks().unwrap();
        let rev = st.snapshot().unwrap().revision;
        if acks.len() == 2 && acks.values().all(|a| a.as_ref().is_ok_and(|a| a.revision >= rev)) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "hosts did not come up: {acks:?}\nA: {}\nB: {}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in [&ns.a, &ns.b] {
        assert!(Command::new("ip").args(["link", "set", t, "up"]).status().unwrap().success());
    }
    let status = Command::new(BIN).args(["cluster", "status", "--prefix", "/it/", "--etcd", &etcd.endpoints().join(",")]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    println!("{text}");
    assert!(status.status.success() && text.lines().filter(|l| l.contains("in sync")).count() == 2, "{text}");

    // The cross-host flow is allowed by label, both ways.
    let n = 50;
    let ab = ns.ab(n);
    let ba = ns.ba(n);
    println!("allowed: a->b {ab}/{n}, b->a {ba}/{n}");
    assert!(ab >= n * 8 / 10 && ba >= n * 8 / 10, "a->b {ab}, b->a {ba}\nA: {}\nB: {}", a.log(), b.log());

    // Change-to-enforced across hosts: a label of web-b written to etcd until
    // both hosts acknowledge the revision (the label keeps app=web).
    let rec = |labels: &[(&str, &str)]| WorkloadRecord { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), addresses: vec!["10.8.0.2".parse().unwrap()], host: "b".into(), mac: None };
    let mut lat = Vec::new();
    for i in 0..30 {
        let r = rec(&[("app", "web"), ("ver", if i % 2 == 0 { "2" } else { "1" })]);
        // The identity first (a new label set's number), then the timed change.
        st.allocate_identity(&control::identity::IdentityKey { namespace: "shop".into(), labels: r.labels.clone() }).unwrap();
        let t = Instant::now();
        let rev = st.put_workload("shop/web-b", &r).unwrap();
        st.wait_for(rev, Duration::from_secs(10)).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
    println!("change-to-enforced across 2 hosts (etcd put -> both acks), 30 changes: p50 {p50:.1} ms, p99 {p99:.1} ms (goal <= 50 ms)");

    // A label change written to etcd denies the flow on both hosts.
    let rev = st.put_workload("shop/web-b", &rec(&[("app", "db")])).unwrap();
    st.wait_for(rev, Duration::from_secs(10)).unwrap();
    let ab = ns.ab(n);
    let ba = ns.ba(n);
    println!("after relabel: a->b {ab}/{n} (host a's egress decides), b->a {ba}/{n} (host b's egress decides)");
    assert_eq!((ab, ba), (0, 0));
    let rev = st.put_workload("shop/web-b", &rec(&[("app", "web")])).unwrap();
    st.wait_for(rev, Duration::from_secs(10)).unwrap();
    assert!(ns.ab(n) >= n * 8 / 10, "allowed again");

    // etcd dies: both hosts keep enforcing the last state.
    let gen = a.generation();
    let m = a.datastore_metrics();
    assert!(m.contains("bulkhead_datastore_connected 1") && m.contains("bulkhead_datastore_disconnects_total 0"), "{m}");
    etcd.kill(0);
    let t = Instant::now();
    while !(a.log().contains("etcd unreachable") && b.log().contains("etcd unreachable")) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("etcd unreachable") && b.log().contains("etcd unreachable"), "A: {}\nB: {}", a.log(), b.log());
    let ab = ns.ab(n);
    println!("etcd down: a->b {ab}/{n} still allowed");
    assert!(ab >= n * 8 / 10, "A: {}\nB: {}", a.log(), b.log());
    // An address the last state does not know stays unknown: denied by host
    // a's egress under default deny while etcd is away.
    let before = a.egress_denied();
    ns.send(&ns.a, "10.8.0.1", "10.8.0.9", n);
    let denied = a.egress_denied() - before;
    println!("etcd down: a->10.8.0.9 (unknown) {denied} denied at host a's egress");
    assert!(denied >= u64::from(n), "{denied} of {n} denied");
    let show = a.cli("show cluster\n");
    println!("{show}");
    assert!(show.contains("unreachable, enforcing revision") && show.contains("disconnects 1,"), "{show}");
    let m = a.datastore_metrics();
    println!("{m}");
    assert!(m.contains("bulkhead_datastore_connected 0") && m.contains("bulkhead_datastore_disconnects_total 1"), "{m}");
    // Back: the hosts resume from their last revision and catch up; with
    // nothing changed meanwhile nothing is republished (same generation, so
    // established flows are not even re-evaluated).
    etcd.restart(0).unwrap();
    let t = Instant::now();
    while !a.datastore_metrics().contains("bulkhead_datastore_connected 1") {
        assert!(t.elapsed() < Duration::from_secs(20), "A: {}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("etcd back: host a connected again {:.0} ms after etcd answered", t.elapsed().as_secs_f64() * 1e3);
    assert_eq!(a.generation(), gen, "reconnecting republished an unchanged state\nA: {}", a.log());
    let mut st = EtcdStore::connect(cfg).unwrap();
    let t = Instant::now();
    let rev = loop {
        match st.put_workload("shop/web-b", &rec(&[("app", "db")])) {
            Ok(r) => break r,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(20), "{e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let acks = st.wait_for(rev, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", a.log(), b.log()));
    assert_eq!(acks.len(), 2);
    println!("etcd back: a change written then enforced by both hosts in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let ab = ns.ab(n);
    println!("after the change made while etcd was coming back: a->b {ab}/{n}");
    assert_eq!(ab, 0, "the change made while catching up is enforced (a re-registering host must not overwrite it)\nA: {}\nB: {}", a.log(), b.log());
    assert_eq!(a.log().matches("etcd unreachable").count(), 1, "one line per state change: {}", a.log());

    // policy apply --wait returns once both hosts enforce the new document;
    // with a host that lags (a stale acknowledgement) it times out naming it.
    let pol = root.join("extra.toml");
    std::fs::write(&pol, "[[policy]]\nname = \"extra\"\nnamespace = \"shop\"\nselector = \"app=web\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"8080/tcp\"]\n").unwrap();
    let eps = etcd.endpoints().join(",");
    let apply = |extra: &[&str]| Command::new(BIN).args(["policy", "apply", "--prefix", "/it/", "--etcd", &eps]).args(extra).arg(&pol).output().unwrap();
    let o = apply(&["--wait", "--timeout", "10"]);
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    assert!(o.status.success() && text.contains("enforced by 2 host(s)"), "{text}{}", String::from_utf8_lossy(&o.stderr));
    st.put("hosts/ghost", "{\"revision\":1,\"workloads\":0,\"at_ms\":0}").unwrap();
    let o = apply(&["--wait", "--timeout", "0.5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("ghost (at revision 1)") && !err.contains("a (at"), "{err}");
    st.delete("hosts/ghost").unwrap();
    // With no live host under the prefix, --wait does not report success.
    let o = Command::new(BIN).args(["policy", "apply", "--prefix", "/nobody/", "--etcd", &eps, "--wait", "--timeout", "1"]).arg(&pol).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no live host"), "{err}");
    // A malformed document is refused before anything is written.
    std::fs::write(&pol, "[[policy]]\nname = 7\n").unwrap();
    let o = apply(&[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("extra.toml"), "{}", String::from_utf8_lossy(&o.stderr));

    // Host b dies (SIGKILL): its lease expires, its workload and its
    // acknowledgement leave etcd, and host a denies its address (unknown
    // under default deny); restarted, b registers again and is allowed.
    let rev = st.put_workload("shop/web-b", &rec(&[("app", "web")])).unwrap();
    st.wait_for(rev, Duration::from_secs(10)).unwrap();
    let show = a.cli("show cluster\n");
    assert!(show.contains("etcd http://127.0.0.1") && show.contains(" connected,") && show.lines().filter(|l| l.contains("in sync")).count() == 2, "{show}");
    let t = Instant::now();
    drop(b); // SIGKILL, reaped, its DPDK runtime directory removed
    let gone_rev = loop {
        let s = st.snapshot().unwrap();
        if !s.kvs.contains_key("wl/shop/web-b") && !s.kvs.contains_key("hosts/b") {
            break s.revision;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "host b's lease did not expire: {:?}", s.kvs.keys().collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(50));
    };
    let expired = t.elapsed();
    let acks = st.wait_for(gone_rev, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\nA: {}", a.log()));
    println!("host b killed: its workload and ack expired after {:.1} s (lease_ttl 3 s); host a enforces revision {gone_rev} {:.1} s after the kill", expired.as_secs_f64(), t.elapsed().as_secs_f64());
    assert_eq!(acks.keys().collect::<Vec<_>>(), ["a"]);
    let before = a.egress_denied();
    ns.send(&ns.a, "10.8.0.1", "10.8.0.2", n);
    let denied = a.egress_denied() - before;
    println!("b dead: a->b {denied}/{n} denied at host a's egress");
    assert!(denied >= u64::from(n), "{denied} of {n} denied\nA: {}", a.log());
    let b = Host::start(&root.join("b"), "b", &up("client", 0), &ns.b, "10.8.0.2", &etcd.endpoints());
    let t = Instant::now();
    loop {
        let s = st.snapshot().unwrap();
        let acks = s.acks();
        if acks.len() == 2 && acks.values().all(|x| x.as_ref().is_ok_and(|x| x.revision >= s.revision)) && s.kvs.contains_key("wl/shop/web-b") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "b did not come back: {acks:?}\nB: {}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let w = &st.snapshot().unwrap().workloads().unwrap()["shop/web-b"];
    assert_eq!((w.host.as_str(), w.labels.get("app").map(String::as_str)), ("b", Some("web")), "registered again from b's model");
    assert!(Command::new("ip").args(["link", "set", &ns.b, "up"]).status().unwrap().success());
    let ab = ns.ab(n);
    println!("b restarted: registered again after {:.1} s, a->b {ab}/{n} allowed", t.elapsed().as_secs_f64());
    assert!(ab >= n * 8 / 10, "A: {}\nB: {}", a.log(), b.log());

    a.stop();
    b.stop();
    for p in [format!("bh8-a-{}", std::process::id()), format!("bh8-b-{}", std::process::id())] {
        assert!(!Path::new("/var/run/dpdk").join(p).exists(), "runtime dir left behind");
    }
    drop(etcd);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn embedded_state_file_is_enforced_and_reloaded_on_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::env::temp_dir().join(format!("bh-cluster-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let _root = RemoveOnDrop(root.clone());
    let state = root.join("state.json");
    let pol = root.join("web.toml");
    std::fs::write(&pol, POLICY).unwrap();
    let o = Command::new(BIN).args(["policy", "apply", "--state"]).arg(&state).arg(&pol).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let up = format!("net_memif9,role=server,id=0,socket={},socket-abstract=no", root.join("memif.sock").display());
    let cluster = format!("state_file = \"{}\"\nhost = \"s\"\n", state.display());
    let show = |h: &Host| {
        let t = Instant::now();
        loop {
            let out = h.cli("show cluster\nshow policy\n");
            if out.contains("embedded state file") {
                return out;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{out}\n{}", h.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let h = Host::start_with(&root.join("s"), "s", &up, &format!("bh8s{}", std::process::id()), "10.8.0.5", &cluster);
    let first = show(&h);
    println!("{first}");
    // The policy from the file and this host's workload, written into the
    // file at start (with its identity), are enforced.
    assert!(first.contains("policies 1 ") && first.contains("workloads 1 ") && first.contains("defaults: egress Deny"), "{first}");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("wl/shop/web-s") && text.contains("id/key/shop:app=web"), "{text}");
    h.stop();
    // Restarted: the same file, the same revision, nothing written again.
    let h = Host::start_with(&root.join("s"), "s", &up, &format!("bh8s{}", std::process::id()), "10.8.0.5", &cluster);
    let again = show(&h);
    let rev = |s: &str| s.split("revision ").nth(1).and_then(|r| r.split(' ').next()).map(str::to_string);
    assert_eq!(rev(&again), rev(&first), "{again}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), text, "reloaded, not rewritten");
    // Followed while running: a policy applied to the file is enforced
    // without a restart; a malformed state is refused and the last good one
    // stays.
    let extra = root.join("extra.toml");
    std::fs::write(&extra, "[[policy]]\nname = \"extra\"\nnamespace = \"shop\"\nselector = \"app=web\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"8080/tcp\"]\n").unwrap();
    // --wait returns once the running switch acknowledges the revision
    // (beside the file).
    let o = Command::new(BIN).args(["policy", "apply", "--wait", "--timeout", "10", "--state"]).arg(&state).arg(&extra).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("enforced by 1 host(s)") && out.contains(": s"), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let until = |want: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        loop {
            let out = h.cli("show cluster\nshow policy\n");
            if want(&out) {
                return out;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{out}\n{}", h.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let live = until(&|o| o.contains("policies 2 "));
    let good = rev(&live).unwrap();
    assert!(good.parse::<i64>().unwrap() > rev(&first).unwrap().parse::<i64>().unwrap(), "{live}");
    let mut bad: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    bad["kvs"]["pol/bad.toml"] = "[[policy]]\nname = 3\n".into();
    bad["revision"] = (good.parse::<i64>().unwrap() + 1).into();
    std::fs::write(root.join("tmp.json"), bad.to_string()).unwrap();
    std::fs::rename(root.join("tmp.json"), &state).unwrap();
    let refused = until(&|o| o.contains("last error"));
    println!("{refused}");
    assert!(refused.contains("pol/bad.toml") && refused.contains(&format!("still enforcing revision {good}")) && refused.contains("policies 2 "), "{refused}");
    assert_eq!(rev(&refused).as_deref(), Some(good.as_str()));
    // The switch's acknowledgement says it lags, and why; apply refuses to
    // write onto a stored state that does not load, naming the document.
    let o = Command::new(BIN).args(["cluster", "status", "--state"]).arg(&state).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && out.lines().any(|l| l.starts_with("s ") && l.contains(&good) && l.ends_with("behind")), "{out}");
    let o = Command::new(BIN).args(["policy", "apply", "--wait", "--timeout", "1", "--state"]).arg(&state).arg(&pol).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("refused, nothing written") && err.contains("pol/bad.toml"), "{err}");
    h.stop();
    let o = Command::new(BIN).args(["cluster", "status", "--state"]).arg(&state).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("data revision {}", good.parse::<i64>().unwrap() + 1)), "the file's revision: {out}");
    assert!(out.contains("(no live host)"), "a stopped switch's acknowledgement is not live: {out}");
}

#[test]
fn two_hosts_keep_working_with_one_of_three_etcd_members_killed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !server::available() {
        println!("SKIP: {} is not installed (ci/deps.sh installs etcd-server)", server::ETCD);
        return;
    }
    let root = std::env::temp_dir().join(format!("bh-cluster-three-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let _root = RemoveOnDrop(root.clone());
    let mut etcd = EtcdCluster::start(&root.join("etcd"), 3).unwrap();
    let mut st = EtcdStore::connect(EtcdConfig::new(etcd.endpoints(), "/it/")).unwrap();
    st.put_policy("web.toml", POLICY).unwrap();
    let ns = Taps { a: format!("bh8c{}", std::process::id()), b: format!("bh8d{}", std::process::id()) };
    let sock = root.join("memif.sock");
    let up = |role: &str| format!("net_memif7,role={role},id=0,socket={},socket-abstract=no", sock.display());
    // Both agents start on member 0, the one killed below.
    let a = Host::start(&root.join("a"), "a", &up("server"), &ns.a, "10.8.0.1", &etcd.endpoints());
    std::thread::sleep(Duration::from_millis(500));
    let b = Host::start(&root.join("b"), "b", &up("client"), &ns.b, "10.8.0.2", &etcd.endpoints());
    let t = Instant::now();
    loop {
        let s = st.snapshot().unwrap();
        let acks = s.acks();
        if acks.len() == 2 && acks.values().all(|x| x.as_ref().is_ok_and(|x| x.revision >= s.revision)) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "hosts did not come up: {acks:?}\nA: {}\nB: {}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in [&ns.a, &ns.b] {
        assert!(Command::new("ip").args(["link", "set", t, "up"]).status().unwrap().success());
    }
    let n = 30;
    assert!(ns.ab(n) >= n * 8 / 10, "allowed before the kill\nA: {}\nB: {}", a.log(), b.log());
    etcd.kill(0);
    let mut st = EtcdStore::connect(EtcdConfig::new(etcd.endpoints()[1..].to_vec(), "/it/")).unwrap();
    let rec = |app: &str| WorkloadRecord { labels: [("app".to_string(), app.to_string())].into(), addresses: vec!["10.8.0.2".parse().unwrap()], host: "b".into(), mac: None };
    let change = |st: &mut EtcdStore, app: &str| {
        let t = Instant::now();
        let rev = loop {
            match st.put_workload("shop/web-b", &rec(app)) {
                Ok(r) => break r,
                // A leader election after the kill may refuse a write or two.
                Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "{e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let acks = st.wait_for(rev, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\nA: {}\nB: {}", a.log(), b.log()));
        assert_eq!(acks.len(), 2, "{acks:?}");
        t.elapsed()
    };
    let took = change(&mut st, "db");
    let (ab, ba) = (ns.ab(n), ns.ba(n));
    println!("member 0 of 3 killed: relabel enforced by both hosts {:.0} ms after the write began; a->b {ab}/{n}, b->a {ba}/{n}", took.as_secs_f64() * 1e3);
    assert_eq!((ab, ba), (0, 0), "denied on both hosts\nA: {}\nB: {}", a.log(), b.log());
    let took = change(&mut st, "web");
    let ab = ns.ab(n);
    println!("relabelled back: both hosts in {:.0} ms; a->b {ab}/{n}", took.as_secs_f64() * 1e3);
    assert!(ab >= n * 8 / 10, "allowed again\nA: {}\nB: {}", a.log(), b.log());
    assert!(a.log().contains("etcd unreachable") && b.log().contains("etcd unreachable"), "both agents left the killed member");
    a.stop();
    b.stop();
}
