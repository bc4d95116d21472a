//! rte_flow on virtual ports: the probe learns that they take nothing, the
//! backend says why with a typed error, counts refusals, and nothing is
//! installed: the port runs software-only.

use offload::{Backend, FlowAction, FlowSpec, OffloadError};
use pmd::flow::RteFlowPort;
use pmd::{testing, Port, PortConf};

#[test]
fn virtual_ports_take_no_rules_and_say_so() {
    for devargs in ["net_null_flow0,no-rx=1", "net_ring_flow0"] {
        let mut p = Port::open(devargs, PortConf::default(), testing::pool()).unwrap();
        p.start().unwrap();
        let mut fp = RteFlowPort::probe(p.id());
        let caps = fp.caps().clone();
        assert!(caps.none(), "{devargs}: {caps:?}");
        assert!(!caps.template_api, "no async API without rte_flow_configure");
        let err = caps.first_error.clone().expect("the probe records why");
        assert!(matches!(err, OffloadError::Unsupported(_)), "{devargs}: {err:?}");
        let line = caps.summary(p.id());
        assert!(line.contains("software-only"), "{line}");
        let k = flowtable::FlowKey::v4(0, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 17, 1, 2);
        let e = fp.create(&FlowSpec::exact(p.id(), &k, vec![FlowAction::Drop])).unwrap_err();
        assert!(matches!(e, OffloadError::Unsupported(_)), "{e:?}");
        assert_eq!((fp.refused, fp.installed()), (1, 0));
        assert!(!fp.has_async());
        p.stop().unwrap();
    }
}
