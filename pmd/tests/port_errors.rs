//! Port errors are typed and clear, and a failed open leaves the process
//! usable.

use pmd::{testing, Error, Port, PortConf};

#[test]
fn more_queues_than_the_device_has() {
    let dir = testing::scratch("queues");
    let inp = dir.join("in.pcap");
    pmd::pcap::write(&inp, [pmd::pcap::bench_flow(0)]).unwrap();
    let conf = PortConf { rxq: 4, ..PortConf::default() };
    let e = Port::open(&format!("net_pcap_q,rx_pcap={}", inp.display()), conf, testing::pool()).unwrap_err();
    match &e {
        Error::TooManyRxQueues { want: 4, max: 1, .. } => {}
        other => panic!("unexpected error {other:?}"),
    }
    assert!(e.to_string().contains("4 rx queues requested, device max 1"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_devargs_name_the_device() {
    let e = Port::open("net_nosuchdriver0,x=1", PortConf::default(), testing::pool()).unwrap_err();
    assert!(matches!(e, Error::Probe { .. }), "{e:?}");
    assert!(e.to_string().contains("net_nosuchdriver0"), "{e}");
}

#[test]
fn missing_pcap_file_is_a_probe_error() {
    let e = Port::open("net_pcap_missing,rx_pcap=/nonexistent/x.pcap", PortConf::default(), testing::pool())
        .unwrap_err();
    assert!(matches!(e, Error::Probe { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/x.pcap"), "{e}");
}

#[test]
fn ring_port_info_and_restart() {
    let mut p = Port::open("net_ring_info", PortConf { rxd: 256, txd: 256, ..PortConf::default() }, testing::pool())
        .unwrap();
    let info = p.info().unwrap();
    assert_eq!(info.driver, "net_ring");
    assert_eq!((info.rxq, info.txq), (1, 1));
    assert!(info.max_rxq >= 1);
    p.start().unwrap();
    assert!(p.link().up);
    p.stop().unwrap();
    // reconfigure to more queues while stopped, within the device max
    let e = p.configure(PortConf { rxq: info.max_rxq + 1, ..p.conf() }).unwrap_err();
    assert!(matches!(e, Error::TooManyRxQueues { .. }));
    p.start().unwrap();
    p.close().unwrap();
    assert!(p.start().is_err(), "a closed port cannot start");
}
