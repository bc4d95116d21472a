//! The switch in policy mode, end to end through the binary: config with a
//! model and policies, traffic replayed by net_pcap, the shell attached over
//! the control socket. Allowed traffic leaves on the destination workload's
//! port, denied traffic is counted per reason, a live quarantine turns the
//! allowed flow into drops, and the switch stops cleanly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

struct Proc(Child, String);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.1));
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cli(sock: &Path, lines: &str, dir: &Path) -> String {
    let f = dir.join("cmds.txt");
    std::fs::write(&f, lines).unwrap();
    let out = Command::new(BIN).arg("cli").arg("--socket").arg(sock).arg("--cmdline-file").arg(&f).stdin(Stdio::null()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn drop_count(text: &str, reason: &str) -> u64 {
    text.lines()
        .filter(|l| l.trim().starts_with("drops:"))
        .flat_map(|l| l.split_whitespace().filter_map(|kv| kv.strip_prefix(&format!("{reason}="))).map(|v| v.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>())
        .sum()
}

#[test]
fn policy_mode_enforces_counts_and_quarantines_live() {
    let dir = scratch("policy-switch");
    let prefix = format!("bhpol{}", std::process::id());
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Traffic: web -> api:8080 (allowed by policy) and db -> api:8080 (denied).
    let gen = Command::new("python3")
        .arg("-c")
        .arg(
            "import struct,sys\n\
             def ip(s): return bytes(int(x) for x in s.split('.'))\n\
             def f(src,dst,sp,dp):\n\
             \x20   tcp=struct.pack('!HHIIBBHHH',sp,dp,1,0,0x50,0x02,65535,0,0)\n\
             \x20   iph=struct.pack('!BBHHHBBH4s4s',0x45,0,40,0,0,64,6,0,ip(src),ip(dst))\n\
             \x20   return bytes.fromhex('020000000001020000000002')+b'\\x08\\x00'+iph+tcp\n\
             fr=[f('10.7.0.1','10.7.0.2',40000+i,8080) for i in range(8)]+[f('10.7.0.3','10.7.0.2',41000+i,8080) for i in range(8)]\n\
             o=open(sys.argv[1],'wb'); o.write(struct.pack('<IHHiIII',0xa1b2c3d4,2,4,0,0,65535,1))\n\
             for p in fr: o.write(struct.pack('<IIII',0,0,len(p),len(p))+p)\n",
        )
        .arg(dir.join("in.pcap"))
        .status()
        .unwrap();
    assert!(gen.success());
    std::fs::write(
        dir.join("model.toml"),
        "[[namespaces]]\nname = \"prod\"\n\
         [[workloads]]\nname = \"web\"\nnamespace = \"prod\"\nlabels = { app = \"web\" }\naddresses = [\"10.7.0.1\"]\nport = 0\n\
         [[workloads]]\nname = \"api\"\nnamespace = \"prod\"\nlabels = { app = \"api\" }\naddresses = [\"10.7.0.2\"]\nmac = \"02:00:00:00:07:02\"\nport = 1\n\
         [[workloads]]\nname = \"db\"\nnamespace = \"prod\"\nlabels = { app = \"db\" }\naddresses = [\"10.7.0.3\"]\nport = 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[[policy]]\nname = \"api\"\nnamespace = \"prod\"\nselector = \"app=api\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"8080/tcp\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("switch.toml"),
        format!(
            "[eal]\nmemory_mb = 256\nfile_prefix = \"{prefix}\"\n[forwarding]\nmode = \"policy\"\n\
             [[port]]\ndevargs = \"net_pcap_ps0,rx_pcap={in},infinite_rx=1\"\n\
             [[port]]\ndevargs = \"net_null_ps1,no-rx=1\"\n\
             [policy]\nmodel = \"{model}\"\nfiles = [\"{pol}\"]\n\
             [flowlog]\njson = \"{json}\"\nfollow = \"{follow}\"\nipfix = \"{ipfix}\"\ninterval_ms = 200\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            in = dir.join("in.pcap").display(),
            model = dir.join("model.toml").display(),
            pol = dir.join("policy.toml").display(),
            json = dir.join("flows.jsonl").display(),
            follow = dir.join("flows.sock").display(),
            ipfix = collector.local_addr().unwrap(),
            metrics = metrics_addr,
        ),
    )
    .unwrap();
    let sock = dir.join("ctl.sock");
    let follower = std::thread::spawn({
        let path = dir.join("flows.sock");
        move || {
            let t = Instant::now();
            while !path.exists() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut c = Command::new(BIN).args(["flows", "--follow", "--socket"]).arg(&path).stdout(Stdio::piped()).spawn().unwrap();
            let mut out = c.stdout.take().unwrap();
            let mut buf = vec![0u8; 4096];
            let n = std::io::Read::read(&mut out, &mut buf).unwrap_or(0);
            let _ = c.kill();
            let _ = c.wait();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    });
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("switch.toml"))
        .arg("--socket")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sw = Proc(child, prefix.clone());
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "no control socket");
        assert!(sw.0.try_wait().unwrap().is_none(), "the switch exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500)); // counters are published every 1024 bursts

    let before = cli(&sock, "show config fwd\nshow policy\nshow pmd stats\nshow port stats 1\nshow flows\n", &dir);
    assert!(before.contains("flow records:") && before.contains("prod/db -> prod/api :8080/tcp"), "show flows ranks the denied pair: {before}");
    assert!(before.contains("policy packet forwarding"), "{before}");
    assert!(before.contains("hits per policy") && before.lines().any(|l| l.contains("prod/api") && l.contains("allow") && l.contains("flows")), "show policy/flows: hits per policy: {before}");
    assert!(before.contains("prod/api") && before.contains("workloads 3"), "{before}");
    assert!(counter(&before, "denied flows counted:") >= 8, "the 8 db -> api flows each counted once: {before}");
    let fwd = counter(&before, "packets forwarded:");
    let denied = drop_count(&before, "policy_ingress");
    assert!(fwd > 1000, "web -> api flows are forwarded: {before}");
    assert!(denied > 1000, "db -> api flows are denied at api's ingress: {before}");
    let ratio = fwd as f64 / denied as f64;
    assert!((0.8..1.25).contains(&ratio), "half allowed, half denied: {fwd} vs {denied}");

    let q = cli(&sock, "quarantine prod/api\nshow policy\n", &dir);
    assert!(q.contains("quarantine prod/api: generation"), "{q}");
    std::thread::sleep(Duration::from_millis(1500));
    let mid = cli(&sock, "show pmd stats\n", &dir);
    let fwd2 = counter(&mid, "packets forwarded:");
    std::thread::sleep(Duration::from_millis(1000));
    let after = cli(&sock, "show pmd stats\nunquarantine prod/api\nworkload add prod/cache ip=10.7.0.9 labels=app=cache\nshow policy\n", &dir);
    let fwd3 = counter(&after, "packets forwarded:");
    assert_eq!(fwd3, fwd2, "nothing forwarded while api is quarantined: {mid}\n{after}");
    assert!(after.contains("workloads 4"), "{after}");
    let bad = cli(&sock, "workload add nons/x ip=10.9.9.9\npolicy load /nonexistent.toml\n", &dir);
    assert!(bad.matches("error:").count() == 2, "{bad}");

    // Visibility: flow records name both sides and the deciding policy/rule.
    let json = std::fs::read_to_string(dir.join("flows.jsonl")).unwrap();
    let allow = json.lines().find(|l| l.contains("\"verdict\":\"allow\"")).unwrap_or_else(|| panic!("no allow record: {json}"));
    assert!(allow.contains("\"workload\":\"prod/web\"") && allow.contains("\"workload\":\"prod/api\""), "{allow}");
    assert!(allow.contains("\"policy\":\"prod/api\"") && allow.contains("\"rule\":\"ingress[0]\""), "{allow}");
    let deny = json.lines().find(|l| l.contains("\"verdict\":\"deny\"")).unwrap_or_else(|| panic!("no deny record: {json}"));
    assert!(deny.contains("\"workload\":\"prod/db\"") && deny.contains("\"labels\":{\"app\":\"db\"}"), "{deny}");
    assert!(deny.contains("default deny"), "isolation denies it: {deny}");
    let followed = follower.join().unwrap();
    assert!(followed.contains("\"verdict\":"), "flows --follow streamed records: {followed:?}");
    let mut d = [0u8; 2048];
    let (n, _) = collector.recv_from(&mut d).expect("an IPFIX message");
    assert!(n >= 16 && d[0..2] == [0, 10], "IPFIX version 10");
    assert_eq!(u16::from_be_bytes([d[2], d[3]]) as usize, n, "message length field");
    // Prometheus, scraped on loopback.
    let mut conn = std::net::TcpStream::connect(metrics_addr).unwrap();
    std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut conn, &mut page).unwrap();
    let drops = page.lines().find(|l| l.starts_with("bulkhead_drops_total{reason=\"policy_ingress\"}")).unwrap_or_else(|| panic!("{page}"));
    assert!(drops.split(' ').nth(1).unwrap().parse::<f64>().unwrap() > 1000.0, "{drops}");
    assert!(page.contains("bulkhead_port_rx_packets_total{port=\"0\"}"), "{page}");
    assert!(page.contains("bulkhead_cache_tier_total{lcore=") && page.contains("bulkhead_policy_rules{policy=\"prod/api\"}"), "{page}");
    // Hits per deciding policy, from the flow records (periodic every 200 ms).
    let metric = |name: &str| -> f64 {
        page.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}: {page}"))
    };
    assert!(metric("bulkhead_policy_flows_total{policy=\"prod/api\",verdict=\"allow\"}") >= 8.0, "{page}");
    assert!(metric("bulkhead_policy_packets_total{policy=\"prod/api\",verdict=\"allow\"}") > 1000.0, "allowed packets counted: {page}");
    let denied: f64 = page
        .lines()
        .filter(|l| l.starts_with("bulkhead_policy_packets_total{") && l.contains("default deny") && l.contains("verdict=\"deny\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum();
    assert!(denied > 1000.0, "denied packets counted on their denied flows: {page}");
    assert!(metric("bulkhead_policy_bytes_total{policy=\"prod/api\",verdict=\"allow\"}") > 1000.0 * 54.0, "{page}");
    assert_eq!(metric("bulkhead_flow_records_lost_total{where=\"lcore\"}"), 0.0, "{page}");

    let st = Command::new("kill").arg("-TERM").arg(sw.0.id().to_string()).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    let code = loop {
        if let Some(c) = sw.0.try_wait().unwrap() {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no clean stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
