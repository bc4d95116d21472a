//! The etcd datastore against a real etcd (Debian's etcd-server, started here
//! on 127.0.0.1 with free ports and a temporary data directory).

use control::datastore::agent::{self, AgentConfig};
use control::datastore::etcd::EtcdConfig;
use control::datastore::server::{self, EtcdCluster};
use control::datastore::{Datastore, EtcdStore, WorkloadRecord};
use control::identity::IdentityKey;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn etcd(name: &str, n: usize) -> Option<EtcdCluster> {
    if !server::available() {
        println!("SKIP: {} is not installed (ci/deps.sh installs etcd-server)", server::ETCD);
        return None;
    }
    let dir = std::env::temp_dir().join(format!("bh-etcd-{name}-{}", std::process::id()));
    Some(EtcdCluster::start(&dir, n).expect("etcd starts"))
}

#[test]
fn racing_hosts_never_share_an_identity_number() {
    let Some(e) = etcd("race", 1) else { return };
    let cfg = EtcdConfig::new(e.endpoints(), "/race");
    // 6 "hosts" allocate the same 20 label sets in different orders at once.
    let sets: Vec<IdentityKey> = (0..20).map(|i| IdentityKey { namespace: "ns".into(), labels: [("app".to_string(), format!("a{i}"))].into() }).collect();
    let results: Vec<Vec<(IdentityKey, u32)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|h| {
                let (cfg, sets) = (cfg.clone(), sets.clone());
                s.spawn(move || {
                    let mut st = EtcdStore::connect(cfg).unwrap();
                    let mut order = sets.clone();
                    order.rotate_left(h * 3);
                    if h % 2 == 1 {
                        order.reverse();
                    }
                    order.into_iter().map(|k| { let id = st.allocate_identity(&k).unwrap(); (k, id) }).collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut by_key: HashMap<IdentityKey, u32> = HashMap::new();
    for r in &results {
        for (k, id) in r {
            let prev = by_key.insert(k.clone(), *id);
            assert!(prev.is_none() || prev == Some(*id), "{k:?} got {prev:?} and {id}");
        }
    }
    let ids: HashSet<u32> = by_key.values().copied().collect();
    assert_eq!(ids.len(), sets.len(), "20 label sets, 20 distinct numbers: {by_key:?}");
    // And what the store says agrees with what every host was told.
    let snap = EtcdStore::connect(cfg).unwrap().snapshot().unwrap();
    let d = snap.desired("x", &Default::default()).unwrap();
    assert_eq!(d.identities, by_key);
}

#[test]
fn agent_follows_changes_rejects_bad_data_and_resumes_after_etcd_restarts() {
    let Some(mut e) = etcd("agent", 1) else { return };
    let cfg = EtcdConfig::new(e.endpoints(), "/bh");
    let mut st = EtcdStore::connect(cfg.clone()).unwrap();
    st.put_namespace("shop", &Default::default()).unwrap();
    st.put_policy("zero.toml", "[settings]\ndefault_deny = true\n").unwrap();
    let mut local = control::Model::default();
    local.add_namespace("shop", Default::default());
    local.workloads.insert(
        "shop/web".into(),
        control::Workload { name: "web".into(), namespace: "shop".into(), labels: [("app".to_string(), "web".to_string())].into(), addresses: vec!["10.1.0.1".parse().unwrap()], port: Some(1), ..Default::default() },
    );
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = logs.clone();
    let a = agent::spawn(AgentConfig { etcd: cfg.clone(), host: "h1".into(), lease_ttl: 2, local, cache: None, identity_gc: Duration::from_millis(300) }, Box::new(move |s| l2.lock().unwrap().push(s.to_string()))).unwrap();
    let next = |want: &dyn Fn(&control::datastore::Desired) -> bool| -> control::datastore::Desired {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let d = a.updates.recv_timeout(end.saturating_duration_since(Instant::now())).expect("an update in time");
            a.ack(d.revision, d.model.workloads.len());
            if want(&d) {
                return d;
            }
        }
    };
    let d = next(&|d| d.model.workloads.contains_key("shop/web"));
    assert_eq!(d.model.workloads["shop/web"].port, Some(1), "the local workload keeps its port");
    assert!(d.policies.settings.default_deny_ingress);
    let web_id = d.identities[&IdentityKey { namespace: "shop".into(), labels: [("app".to_string(), "web".to_string())].into() }];
    // A remote workload arrives through the watch.
    let db = WorkloadRecord { labels: [("app".into(), "db".into())].into(), addresses: vec!["10.2.0.1".parse().unwrap()], host: "h2".into(), mac: None };
    st.put_workload("shop/db", &db).unwrap();
    let d = next(&|d| d.model.workloads.contains_key("shop/db"));
    assert_eq!(d.model.workloads["shop/db"].port, None, "a remote workload has no local port");
    assert!(d.identities.values().any(|&i| i != web_id));
    // Malformed data is rejected, the last good state stays.
    st.put("pol/bad.toml", "[[policy]]\nname = 3\n").unwrap();
    let t = Instant::now();
    while a.status.rejected.load(std::sync::atomic::Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.status.rejected.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(a.updates.try_recv().is_err(), "nothing delivered for the bad state");
    assert!(logs.lock().unwrap().iter().any(|l| l.contains("rejected") && l.contains("pol/bad.toml")), "{:?}", logs.lock().unwrap());
    st.delete("pol/bad.toml").unwrap();
    next(&|d| d.policies.policies.is_empty());
    // The host's acknowledgement is visible to everyone.
    let rev = st.snapshot().unwrap().revision;
    st.wait_for(rev, Duration::from_secs(10)).expect("h1 acknowledges");
    // etcd goes away: one log line, the status says so; back: the watch resumes.
    e.kill(0);
    let t = Instant::now();
    while a.status.connected.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!a.status.connected.load(std::sync::atomic::Ordering::Relaxed), "the agent noticed");
    std::thread::sleep(Duration::from_millis(1500));
    let down_lines = logs.lock().unwrap().iter().filter(|l| l.contains("unreachable")).count();
    assert_eq!(down_lines, 1, "one line per state change, not per retry: {:?}", logs.lock().unwrap());
    e.restart(0).unwrap();
    let mut st = EtcdStore::connect(cfg.clone()).unwrap();
    let relabel = WorkloadRecord { labels: [("app".into(), "db2".into())].into(), ..db };
    st.put_workload("shop/db", &relabel).unwrap();
    let d = next(&|d| d.model.workloads.get("shop/db").is_some_and(|w| w.labels.get("app").map(String::as_str) == Some("db2")));
    assert!(d.model.workloads.contains_key("shop/web"), "the local workload is registered again");
    assert_eq!(a.status.disconnects.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The watch resumed after the last revision processed (no re-read from 1).
    let conn: Vec<String> = logs.lock().unwrap().iter().filter(|l| l.contains("etcd connected")).cloned().collect();
    let from: Vec<i64> = conn.iter().filter_map(|l| l.split("from revision ").nth(1)?.split(' ').next()?.parse().ok()).collect();
    assert!(from.len() == 2 && from[1] > rev && conn[1].contains("resuming after the last revision processed"), "{conn:?}, data revision before the outage {rev}");
    // The relabel left `app=db` unused: the agent's collector deletes it
    // (after a whole interval unused); `app=db2` and `app=web` stay.
    let t = Instant::now();
    while st.snapshot().unwrap().kvs.contains_key("id/key/shop:app=db") {
        assert!(t.elapsed() < Duration::from_secs(10), "app=db never collected: {:?}", logs.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = st.snapshot().unwrap();
    assert!(s.kvs.contains_key("id/key/shop:app=db2") && s.kvs.contains_key("id/key/shop:app=web"), "{:?}", s.kvs.keys().collect::<Vec<_>>());
    assert!(a.status.identities_collected.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(logs.lock().unwrap().iter().any(|l| l.contains("collected")), "{:?}", logs.lock().unwrap());
    // An operator relabels this host's workload: the record keeps the
    // host's lease (checked below: it leaves with the host).
    let web2 = WorkloadRecord { labels: [("app".into(), "web2".into())].into(), addresses: vec!["10.1.0.1".parse().unwrap()], host: "h1".into(), mac: None };
    st.put_workload("shop/web", &web2).unwrap();
    next(&|d| d.model.workloads["shop/web"].labels.get("app").map(String::as_str) == Some("web2"));
    a.stop();
    // Stopping revokes the lease: the host's workloads and ack leave the cluster.
    let s = st.snapshot().unwrap();
    assert!(!s.kvs.contains_key("wl/shop/web") && !s.kvs.contains_key("hosts/h1"), "{:?}", s.kvs.keys().collect::<Vec<_>>());
}

#[test]
fn hosts_keep_working_with_one_of_three_etcd_members_killed() {
    let Some(mut e) = etcd("three", 3) else { return };
    let cfg = EtcdConfig::new(e.endpoints(), "/bh3");
    let mut st = EtcdStore::connect(cfg.clone()).unwrap();
    st.put_namespace("shop", &Default::default()).unwrap();
    let agents: Vec<_> = ["h1", "h2"]
        .iter()
        .map(|h| agent::spawn(AgentConfig { etcd: cfg.clone(), host: h.to_string(), lease_ttl: 3, local: Default::default(), cache: None, identity_gc: Duration::ZERO }, Box::new(|l| println!("{l}"))).unwrap())
        .collect();
    // Every agent acknowledges whatever it is handed, from its own thread.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = agents
        .into_iter()
        .map(|a| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(d) = a.updates.recv_timeout(Duration::from_millis(50)) {
                        a.ack(d.revision, d.model.workloads.len());
                    }
                }
                a.stop();
            })
        })
        .collect();
    {
        let change = |st: &mut EtcdStore, i: u32| {
            let r = WorkloadRecord { labels: [("app".into(), format!("v{i}"))].into(), addresses: vec!["10.3.0.1".parse().unwrap()], host: "elsewhere".into(), mac: None };
            let rev = st.put_workload("shop/w", &r).unwrap();
            st.wait_for(rev, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"))
        };
        let t = Instant::now();
        while st.acks().unwrap().len() < 2 {
            assert!(t.elapsed() < Duration::from_secs(15), "both agents acknowledge");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(change(&mut st, 0).len(), 2);
        // Kill a member (perhaps the leader, perhaps the one an agent talks to).
        e.kill(0);
        let mut st = {
            let t = Instant::now();
            loop {
                let c = EtcdConfig::new(e.endpoints()[1..].to_vec(), "/bh3");
                match EtcdStore::connect(c) {
                    Ok(s) => break s,
                    Err(err) => assert!(t.elapsed() < Duration::from_secs(10), "{err}"),
                }
            }
        };
        for i in 1..4 {
            let t = Instant::now();
            let acks = loop {
                let r = WorkloadRecord { labels: [("app".into(), format!("v{i}"))].into(), addresses: vec!["10.3.0.1".parse().unwrap()], host: "elsewhere".into(), mac: None };
                match st.put_workload("shop/w", &r) {
                    Ok(rev) => break st.wait_for(rev, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}")),
                    // A leader election after the kill may refuse a write or two.
                    Err(err) => assert!(t.elapsed() < Duration::from_secs(10), "{err}"),
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(acks.len(), 2, "both hosts still follow with 2 of 3 members: {acks:?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn unused_identities_are_collected_and_a_used_one_never_is() {
    let Some(e) = etcd("gc", 1) else { return };
    let cfg = EtcdConfig::new(e.endpoints(), "/gc");
    let mut st = EtcdStore::connect(cfg.clone()).unwrap();
    let key = |v: &str| IdentityKey { namespace: "ns".into(), labels: [("app".to_string(), v.to_string())].into() };
    let rec = |v: &str| WorkloadRecord { labels: [("app".into(), v.into())].into(), addresses: vec!["10.4.0.1".parse().unwrap()], host: "h".into(), mac: None };
    st.put_namespace("ns", &Default::default()).unwrap();
    st.put_workload("ns/used", &rec("used")).unwrap();
    let old = st.allocate_identity(&key("old")).unwrap();
    // Grace: nothing written after the floor is collected.
    let (ids, floor) = st.collect_identities(0).unwrap();
    assert!(ids.is_empty(), "{ids:?}");
    let young = st.allocate_identity(&key("young")).unwrap();
    let (ids, _) = st.collect_identities(floor).unwrap();
    assert_eq!(ids, vec![old], "only the unused identity older than the floor");
    let s = st.snapshot().unwrap();
    assert!(!s.kvs.contains_key("id/key/ns:app=old") && !s.kvs.contains_key(&format!("id/num/{old}")), "both keys of {old} deleted");
    assert!(s.kvs.contains_key("id/key/ns:app=used") && s.kvs.contains_key("id/key/ns:app=young"));
    let (ids, _) = st.collect_identities(i64::MAX).unwrap();
    assert_eq!(ids, vec![young]);
    // Numbers are never reused.
    assert!(st.allocate_identity(&key("old")).unwrap() > young);

    // A workload relabelled again and again while two collectors run back
    // to back (each pass's grace is the previous pass, as in the agent):
    // right after each write, the identity of the labels it now has exists
    // (a collector may only take the ones it left).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let collected = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        // A failing assertion below stops the collectors too.
        let _stop = StopOnDrop(&stop);
        for _ in 0..2 {
            s.spawn(|| {
                let mut gc = EtcdStore::connect(cfg.clone()).unwrap();
                let mut floor = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (ids, rev) = gc.collect_identities(floor).unwrap();
                    floor = rev;
                    collected.fetch_add(ids.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let mut w = EtcdStore::connect(cfg.clone()).unwrap();
        for i in 0..200 {
            let v = format!("v{}", i % 7);
            w.put_workload("ns/w", &WorkloadRecord { addresses: vec!["10.4.0.2".parse().unwrap()], ..rec(&v) }).unwrap();
            let snap = w.snapshot().unwrap();
            assert!(snap.kvs.contains_key(&format!("id/key/ns:app={v}")), "write {i}: the identity of app={v} was collected while in use");
            snap.desired("x", &Default::default()).unwrap();
        }
    });
    let n = collected.load(std::sync::atomic::Ordering::Relaxed);
    println!("identities collected while racing: {n}");
    assert!(n > 0, "the collectors ran");
    let d = st.snapshot().unwrap().desired("x", &Default::default()).unwrap();
    for (k, w) in &d.model.workloads {
        let ik = IdentityKey { namespace: w.namespace.clone(), labels: w.labels.clone() };
        assert!(d.identities.contains_key(&ik), "{k} has no identity");
    }
}
