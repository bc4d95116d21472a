//! rte_flow: the only code that turns [`offload::FlowSpec`]s into
//! `rte_flow_item` / `rte_flow_action` arrays and calls the flow API.
//!
//! [`RteFlowPort`] implements [`offload::Backend`] for one port:
//! - at open it probes the port with `rte_flow_validate` on the rule shapes
//!   Bulkhead installs (exact 5-tuple DROP, exact MARK+QUEUE, prefix DROP;
//!   IPv4 and IPv6) and remembers which the port takes ([`Caps`]);
//! - where `rte_flow_info_get` and `rte_flow_configure` succeed it sets up the
//!   template API (pattern templates for the exact 5-tuple, actions templates
//!   for DROP and MARK+QUEUE, one template table) and then submits with
//!   `rte_flow_async_create/destroy`, `rte_flow_push` and `rte_flow_pull`;
//!   otherwise it uses the synchronous API;
//! - errno becomes [`offload::OffloadError`]. A port that takes nothing is
//!   reported once ([`Caps::summary`]) and counted in [`RteFlowPort::refused`].
//!
//! Note (DESIGN.md pitfalls): `rte_flow_push` on a port without flow ops
//! dereferences NULL in DPDK 22.11, so the async path is only used after
//! `rte_flow_configure` returned 0.

use core::ffi::{c_void, CStr};
use core::ptr::{self, NonNull};
use dpdk_ffi as ffi;
use offload::{Backend, Completion, FlowAction, FlowSpec, HwCounters, HwRuleId, Item, Masked, OffloadError, Op};
use std::collections::HashMap;

/// An installed rule's handle.
#[derive(Debug, Clone, Copy)]
struct Handle(NonNull<ffi::rte_flow>);

// SAFETY: an rte_flow handle is an opaque token the PMD hands out; it may be
// passed to rte_flow_destroy/query from any thread, provided calls on one port
// are serialised, which RteFlowPort's &mut self methods ensure.
unsafe impl Send for Handle {}

/// What the port takes, learned by validation at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// Exact IPv4 5-tuple with DROP.
    pub exact_drop_v4: bool,
    /// Exact IPv4 5-tuple with MARK + QUEUE.
    pub exact_mark_v4: bool,
    /// Exact IPv6 5-tuple with DROP.
    pub exact_drop_v6: bool,
    /// IPv4 prefix with DROP (quarantine, ipBlock).
    pub prefix_drop_v4: bool,
    /// The asynchronous template API is configured.
    pub template_api: bool,
    /// Why the first probe failed, if one did.
    pub first_error: Option<OffloadError>,
}

impl Caps {
    /// True when the port takes no rule shape at all (software-only).
    pub fn none(&self) -> bool {
        !(self.exact_drop_v4 || self.exact_mark_v4 || self.exact_drop_v6 || self.prefix_drop_v4)
    }
    /// One line for the log.
    pub fn summary(&self, port: u16) -> String {
        if self.none() {
            let why = self.first_error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "no rule shape validated".into());
            format!("port {port}: rte_flow offload unavailable ({why}); software-only")
        } else {
            format!(
                "port {port}: rte_flow takes exact-drop-v4={} exact-mark-v4={} exact-drop-v6={} prefix-drop-v4={} template-api={}",
                self.exact_drop_v4, self.exact_mark_v4, self.exact_drop_v6, self.prefix_drop_v4, self.template_api
            )
        }
    }
}

/// Owned storage for one rule in rte_flow's C layout. The item and action
/// arrays point into the boxes, which do not move while this lives.
struct Marshalled {
    attr: ffi::rte_flow_attr,
    items: Vec<ffi::rte_flow_item>,
    actions: Vec<ffi::rte_flow_action>,
    _store: Vec<Box<dyn std::any::Any>>,
}

fn boxed<T: 'static>(store: &mut Vec<Box<dyn std::any::Any>>, v: T) -> *const c_void {
    let b = Box::new(v);
    let p = &*b as *const T as *const c_void;
    store.push(b);
    p
}

fn eth_addr(m: u64) -> ffi::rte_ether_addr {
    let b = m.to_be_bytes();
    ffi::rte_ether_addr { addr_bytes: [b[2], b[3], b[4], b[5], b[6], b[7]] }
}

fn be16(m: Masked<u16>) -> (u16, u16) {
    (m.spec.to_be(), m.mask.to_be())
}

fn marshal(spec: &FlowSpec) -> Marshalled {
    use ffi::rte_flow_action_type as A;
    use ffi::rte_flow_item_type as T;
    let mut store: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut attr = ffi::rte_flow_attr { group: spec.attr.group, priority: spec.attr.priority, ..Default::default() };
    attr.set_ingress(spec.attr.ingress as u32);
    attr.set_egress(spec.attr.egress as u32);
    attr.set_transfer(spec.attr.transfer as u32);
    let mut items = Vec::with_capacity(spec.pattern.len() + 1);
    for it in &spec.pattern {
        let (ty, s, m) = match *it {
            Item::Eth { dst, src, ty } => {
                let mut s = ffi::rte_flow_item_eth::default();
                let mut m = ffi::rte_flow_item_eth::default();
                s.__bindgen_anon_1.hdr = ffi::rte_ether_hdr {
                    dst_addr: eth_addr(dst.spec),
                    src_addr: eth_addr(src.spec),
                    ether_type: ty.spec.to_be(),
                };
                m.__bindgen_anon_1.hdr = ffi::rte_ether_hdr {
                    dst_addr: eth_addr(dst.mask),
                    src_addr: eth_addr(src.mask),
                    ether_type: ty.mask.to_be(),
                };
                (T::RTE_FLOW_ITEM_TYPE_ETH, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Vlan { tci } => {
                let mut s = ffi::rte_flow_item_vlan::default();
                let mut m = ffi::rte_flow_item_vlan::default();
                s.__bindgen_anon_1.hdr = ffi::rte_vlan_hdr { vlan_tci: tci.spec.to_be(), eth_proto: 0 };
                m.__bindgen_anon_1.hdr = ffi::rte_vlan_hdr { vlan_tci: tci.mask.to_be(), eth_proto: 0 };
                (T::RTE_FLOW_ITEM_TYPE_VLAN, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Ipv4 { src, dst, proto } => {
                let mut s = ffi::rte_flow_item_ipv4::default();
                let mut m = ffi::rte_flow_item_ipv4::default();
                s.hdr.src_addr = src.spec.to_be();
                s.hdr.dst_addr = dst.spec.to_be();
                s.hdr.next_proto_id = proto.spec;
                m.hdr.src_addr = src.mask.to_be();
                m.hdr.dst_addr = dst.mask.to_be();
                m.hdr.next_proto_id = proto.mask;
                (T::RTE_FLOW_ITEM_TYPE_IPV4, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Ipv6 { src, dst, proto } => {
                let mut s = ffi::rte_flow_item_ipv6::default();
                let mut m = ffi::rte_flow_item_ipv6::default();
                s.hdr.src_addr = src.spec.to_be_bytes();
                s.hdr.dst_addr = dst.spec.to_be_bytes();
                s.hdr.proto = proto.spec;
                m.hdr.src_addr = src.mask.to_be_bytes();
                m.hdr.dst_addr = dst.mask.to_be_bytes();
                m.hdr.proto = proto.mask;
                (T::RTE_FLOW_ITEM_TYPE_IPV6, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Tcp { src, dst } => {
                let (mut s, mut m) = (ffi::rte_flow_item_tcp::default(), ffi::rte_flow_item_tcp::default());
                (s.hdr.src_port, m.hdr.src_port) = be16(src);
                (s.hdr.dst_port, m.hdr.dst_port) = be16(dst);
                (T::RTE_FLOW_ITEM_TYPE_TCP, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Udp { src, dst } => {
                let (mut s, mut m) = (ffi::rte_flow_item_udp::default(), ffi::rte_flow_item_udp::default());
                (s.hdr.src_port, m.hdr.src_port) = be16(src);
                (s.hdr.dst_port, m.hdr.dst_port) = be16(dst);
                (T::RTE_FLOW_ITEM_TYPE_UDP, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Sctp { src, dst } => {
                let (mut s, mut m) = (ffi::rte_flow_item_sctp::default(), ffi::rte_flow_item_sctp::default());
                (s.hdr.src_port, m.hdr.src_port) = be16(src);
                (s.hdr.dst_port, m.hdr.dst_port) = be16(dst);
                (T::RTE_FLOW_ITEM_TYPE_SCTP, boxed(&mut store, s), boxed(&mut store, m))
            }
            Item::Icmp { ty, code } => {
                let (mut s, mut m) = (ffi::rte_flow_item_icmp::default(), ffi::rte_flow_item_icmp::default());
                s.hdr.icmp_type = ty.spec;
                s.hdr.icmp_code = code.spec;
                m.hdr.icmp_type = ty.mask;
                m.hdr.icmp_code = code.mask;
                (T::RTE_FLOW_ITEM_TYPE_ICMP, boxed(&mut store, s), boxed(&mut store, m))
            }
        };
        items.push(ffi::rte_flow_item { type_: ty, spec: s, last: ptr::null(), mask: m });
    }
    items.push(ffi::rte_flow_item { type_: T::RTE_FLOW_ITEM_TYPE_END, ..Default::default() });
    let mut actions = Vec::with_capacity(spec.actions.len() + 1);
    for a in &spec.actions {
        let (ty, conf) = match a {
            FlowAction::Drop => (A::RTE_FLOW_ACTION_TYPE_DROP, ptr::null()),
            FlowAction::Count => (A::RTE_FLOW_ACTION_TYPE_COUNT, ptr::null()),
            FlowAction::Mark(id) => (A::RTE_FLOW_ACTION_TYPE_MARK, boxed(&mut store, ffi::rte_flow_action_mark { id: *id })),
            FlowAction::Queue(q) => (A::RTE_FLOW_ACTION_TYPE_QUEUE, boxed(&mut store, ffi::rte_flow_action_queue { index: *q })),
            FlowAction::Jump(g) => (A::RTE_FLOW_ACTION_TYPE_JUMP, boxed(&mut store, ffi::rte_flow_action_jump { group: *g })),
            FlowAction::RepresentedPort(p) => (
                A::RTE_FLOW_ACTION_TYPE_REPRESENTED_PORT,
                boxed(&mut store, ffi::rte_flow_action_ethdev { port_id: *p }),
            ),
            FlowAction::Rss(qs) => {
                let queues: Box<[u16]> = qs.clone().into_boxed_slice();
                let conf = ffi::rte_flow_action_rss { queue_num: queues.len() as u32, queue: queues.as_ptr(), ..Default::default() };
                store.push(Box::new(queues));
                (A::RTE_FLOW_ACTION_TYPE_RSS, boxed(&mut store, conf))
            }
        };
        actions.push(ffi::rte_flow_action { type_: ty, conf });
    }
    actions.push(ffi::rte_flow_action { type_: A::RTE_FLOW_ACTION_TYPE_END, conf: ptr::null() });
    Marshalled { attr, items, actions, _store: store }
}

fn flow_error(op: &'static str, errno: i32, e: &ffi::rte_flow_error) -> OffloadError {
    let msg = if e.message.is_null() {
        String::from("no message")
    } else {
        // SAFETY: when set, rte_flow_error.message points at a NUL-terminated
        // string owned by the PMD (static in practice), valid at least until
        // the next flow call on this port; we copy it at once.
        unsafe { CStr::from_ptr(e.message) }.to_string_lossy().into_owned()
    };
    OffloadError::from_errno(op, errno, &msg)
}

/// Template-API state of a configured port.
#[derive(Debug)]
struct Templates {
    table: NonNull<ffi::rte_flow_template_table>,
    /// Pattern template index per L4 protocol: 0 = tcp, 1 = udp.
    queue: u32,
}

// SAFETY: like Handle: opaque PMD objects used only through &mut self.
unsafe impl Send for Templates {}

/// One port's rte_flow backend.
#[derive(Debug)]
pub struct RteFlowPort {
    port: u16,
    caps: Caps,
    rules: HashMap<HwRuleId, Handle>,
    next: u32,
    tmpl: Option<Templates>,
    /// In-flight async operations: user tag -> (our id, is_create).
    inflight: HashMap<u64, (HwRuleId, bool)>,
    /// Rules the port refused (any reason), for `show offload`.
    pub refused: u64,
}

impl RteFlowPort {
    /// Probes `port` and returns its backend. Never fails: a port that takes
    /// nothing yields a backend whose [`Caps::none`] is true.
    pub fn probe(port: u16) -> Self {
        let mut me = RteFlowPort { port, caps: Caps::default(), rules: HashMap::new(), next: 0, tmpl: None, inflight: HashMap::new(), refused: 0 };
        let k4 = flowtable::FlowKey::v4(0, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 1024, 80);
        let k6 = flowtable::FlowKey::new(0, 0x2001_0db8 << 96 | 1, 0x2001_0db8 << 96 | 2, 17, 1024, 53);
        let shapes = [
            FlowSpec::exact(port, &k4, vec![FlowAction::Drop]),
            FlowSpec::exact(port, &k4, vec![FlowAction::Mark(1), FlowAction::Queue(0)]),
            FlowSpec::exact(port, &k6, vec![FlowAction::Drop]),
            FlowSpec::prefix(port, flowtable::key::v4_mapped(0x0a00_0000), 104, true, vec![FlowAction::Drop]),
        ];
        let mut ok = [false; 4];
        for (i, s) in shapes.iter().enumerate() {
            match me.validate(s) {
                Ok(()) => ok[i] = true,
                Err(e) => {
                    if me.caps.first_error.is_none() {
                        me.caps.first_error = Some(e);
                    }
                }
            }
        }
        me.caps.exact_drop_v4 = ok[0];
        me.caps.exact_mark_v4 = ok[1];
        me.caps.exact_drop_v6 = ok[2];
        me.caps.prefix_drop_v4 = ok[3];
        if ok[0] || ok[1] {
            me.tmpl = me.configure_templates();
            me.caps.template_api = me.tmpl.is_some();
        }
        me
    }

    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the port takes.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Sets up the template API; None where the port lacks it.
    fn configure_templates(&mut self) -> Option<Templates> {
        use ffi::rte_flow_action_type as A;
        let mut err = ffi::rte_flow_error::default();
        let mut pinfo = ffi::rte_flow_port_info::default();
        let mut qinfo = ffi::rte_flow_queue_info::default();
        // SAFETY: out-pointers to owned, zeroed structs; the port id is valid (probed).
        if unsafe { ffi::rte_flow_info_get(self.port, &mut pinfo, &mut qinfo, &mut err) } != 0 {
            return None;
        }
        let pattr = ffi::rte_flow_port_attr::default();
        let qattr = ffi::rte_flow_queue_attr { size: qinfo.max_size.clamp(1, 1024) };
        let mut qptr: *const ffi::rte_flow_queue_attr = &qattr;
        // SAFETY: one queue attribute, pointed to by a live local; DPDK copies it.
        if unsafe { ffi::rte_flow_configure(self.port, &pattr, 1, &mut qptr, &mut err) } != 0 {
            return None;
        }
        // Pattern templates: eth / ipv4 (src, dst full) / tcp|udp (ports full).
        let k = flowtable::FlowKey::v4(0, [255, 255, 255, 255].into(), [255, 255, 255, 255].into(), 6, 0xffff, 0xffff);
        let mut pts = Vec::new();
        for proto in [6u8, 17] {
            let mut kk = k;
            kk.proto = proto;
            let m = marshal(&FlowSpec::exact(self.port, &kk, vec![FlowAction::Drop]));
            let mut pa = ffi::rte_flow_pattern_template_attr::default();
            pa.set_ingress(1);
            // SAFETY: `m.items` is an END-terminated array whose spec/mask
            // pointers live in `m`, alive across the call; DPDK copies them.
            let p = unsafe { ffi::rte_flow_pattern_template_create(self.port, &pa, m.items.as_ptr(), &mut err) };
            pts.push(NonNull::new(p)?);
        }
        // Actions templates: DROP; MARK + QUEUE (values per rule).
        let mut ats = Vec::new();
        for acts in [vec![A::RTE_FLOW_ACTION_TYPE_DROP], vec![A::RTE_FLOW_ACTION_TYPE_MARK, A::RTE_FLOW_ACTION_TYPE_QUEUE]] {
            let mut list: Vec<ffi::rte_flow_action> =
                acts.iter().map(|t| ffi::rte_flow_action { type_: *t, conf: ptr::null() }).collect();
            list.push(ffi::rte_flow_action { type_: A::RTE_FLOW_ACTION_TYPE_END, conf: ptr::null() });
            let mut aa = ffi::rte_flow_actions_template_attr::default();
            aa.set_ingress(1);
            // SAFETY: END-terminated action arrays with null confs (values come per rule); used as masks too.
            let a = unsafe { ffi::rte_flow_actions_template_create(self.port, &aa, list.as_ptr(), list.as_ptr(), &mut err) };
            ats.push(NonNull::new(a)?);
        }
        let mut ta = ffi::rte_flow_template_table_attr { nb_flows: 65536, ..Default::default() };
        ta.flow_attr.set_ingress(1);
        let mut pp: Vec<*mut ffi::rte_flow_pattern_template> = pts.iter().map(|p| p.as_ptr()).collect();
        let mut aa: Vec<*mut ffi::rte_flow_actions_template> = ats.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: arrays of templates created above on this port; lengths match.
        let t = unsafe {
            ffi::rte_flow_template_table_create(self.port, &ta, pp.as_mut_ptr(), pp.len() as u8, aa.as_mut_ptr(), aa.len() as u8, &mut err)
        };
        Some(Templates { table: NonNull::new(t)?, queue: 0 })
    }

    fn supported_for_async(spec: &FlowSpec) -> Option<(u8, u8)> {
        let pt = match spec.pattern.get(2) {
            Some(Item::Tcp { .. }) => 0,
            Some(Item::Udp { .. }) => 1,
            _ => return None,
        };
        if !matches!(spec.pattern.get(1), Some(Item::Ipv4 { src, dst, .. }) if src.mask == u32::MAX && dst.mask == u32::MAX) {
            return None;
        }
        let at = match spec.actions.as_slice() {
            [FlowAction::Drop] => 0,
            [FlowAction::Mark(_), FlowAction::Queue(_)] => 1,
            _ => return None,
        };
        Some((pt, at))
    }
}

impl Backend for RteFlowPort {
    fn name(&self) -> String {
        format!("rte_flow port {}", self.port)
    }

    fn validate(&mut self, spec: &FlowSpec) -> Result<(), OffloadError> {
        let m = marshal(spec);
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: `m` owns the attribute and END-terminated arrays and every
        // spec/mask/conf they point to, alive across the call.
        let r = unsafe { ffi::rte_flow_validate(self.port, &m.attr, m.items.as_ptr(), m.actions.as_ptr(), &mut err) };
        if r == 0 { Ok(()) } else { Err(flow_error("rte_flow_validate", -r, &err)) }
    }

    fn create(&mut self, spec: &FlowSpec) -> Result<HwRuleId, OffloadError> {
        let m = marshal(spec);
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: as in validate.
        let f = unsafe { ffi::rte_flow_create(self.port, &m.attr, m.items.as_ptr(), m.actions.as_ptr(), &mut err) };
        match NonNull::new(f) {
            Some(h) => {
                let id = HwRuleId(self.next);
                self.next = self.next.wrapping_add(1);
                self.rules.insert(id, Handle(h));
                Ok(id)
            }
            None => {
                self.refused += 1;
                // SAFETY: reads this thread's rte_errno through the shim.
                let errno = unsafe { ffi::dpdkffi_errno() };
                Err(flow_error("rte_flow_create", errno, &err))
            }
        }
    }

    fn destroy(&mut self, id: HwRuleId) -> Result<(), OffloadError> {
        let h = self.rules.remove(&id).ok_or(OffloadError::NoSuchRule(id.0))?;
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: `h` was returned by rte_flow_create on this port and is
        // destroyed once (removed from the map first).
        let r = unsafe { ffi::rte_flow_destroy(self.port, h.0.as_ptr(), &mut err) };
        if r == 0 { Ok(()) } else { Err(flow_error("rte_flow_destroy", -r, &err)) }
    }

    fn query(&mut self, id: HwRuleId) -> Result<HwCounters, OffloadError> {
        let h = *self.rules.get(&id).ok_or(OffloadError::NoSuchRule(id.0))?;
        let action = ffi::rte_flow_action { type_: ffi::rte_flow_action_type::RTE_FLOW_ACTION_TYPE_COUNT, conf: ptr::null() };
        let mut data = ffi::rte_flow_query_count::default();
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: live handle of this port; `data` is the COUNT query's out type.
        let r = unsafe {
            ffi::rte_flow_query(self.port, h.0.as_ptr(), &action, &mut data as *mut _ as *mut c_void, &mut err)
        };
        if r == 0 { Ok(HwCounters { hits: data.hits, bytes: data.bytes }) } else { Err(flow_error("rte_flow_query", -r, &err)) }
    }

    fn flush(&mut self) -> Result<(), OffloadError> {
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: plain call on a probed port.
        let r = unsafe { ffi::rte_flow_flush(self.port, &mut err) };
        self.rules.clear();
        if r == 0 { Ok(()) } else { Err(flow_error("rte_flow_flush", -r, &err)) }
    }

    fn has_async(&self) -> bool {
        self.tmpl.is_some()
    }

    fn submit(&mut self, ops: &[Op], done: &mut Vec<Completion>) -> Result<usize, OffloadError> {
        let Some(t) = &self.tmpl else {
            // No template API: the synchronous path.
            for op in ops {
                let c = match op {
                    Op::Create { user, spec } => Completion { user: *user, result: self.create(spec) },
                    Op::Destroy { user, id } => Completion { user: *user, result: self.destroy(*id).map(|_| *id) },
                };
                done.push(c);
            }
            return Ok(ops.len());
        };
        let (table, queue) = (t.table, t.queue);
        let mut err = ffi::rte_flow_error::default();
        let mut attr = ffi::rte_flow_op_attr::default();
        attr.set_postpone(1);
        let mut n = 0;
        for op in ops {
            match op {
                Op::Create { user, spec } => {
                    let Some((pt, at)) = Self::supported_for_async(spec) else {
                        done.push(Completion { user: *user, result: self.create(spec) });
                        n += 1;
                        continue;
                    };
                    let m = marshal(spec);
                    // SAFETY: the table and templates were created on this port
                    // after rte_flow_configure returned 0; `m` keeps the arrays
                    // alive across the call (the PMD copies what it needs on
                    // enqueue); user_data is an integer tag, never dereferenced.
                    let f = unsafe {
                        ffi::rte_flow_async_create(self.port, queue, &attr, table.as_ptr(), m.items.as_ptr(), pt, m.actions.as_ptr(), at, *user as usize as *mut c_void, &mut err)
                    };
                    let Some(h) = NonNull::new(f) else {
                        if n == 0 {
                            return Err(OffloadError::Busy);
                        }
                        break;
                    };
                    let id = HwRuleId(self.next);
                    self.next = self.next.wrapping_add(1);
                    self.rules.insert(id, Handle(h));
                    self.inflight.insert(*user, (id, true));
                }
                Op::Destroy { user, id } => {
                    let Some(h) = self.rules.remove(id) else {
                        done.push(Completion { user: *user, result: Err(OffloadError::NoSuchRule(id.0)) });
                        n += 1;
                        continue;
                    };
                    // SAFETY: a live handle of this port, destroyed once.
                    let r = unsafe { ffi::rte_flow_async_destroy(self.port, queue, &attr, h.0.as_ptr(), *user as usize as *mut c_void, &mut err) };
                    if r != 0 {
                        self.rules.insert(*id, h);
                        if n == 0 {
                            return Err(flow_error("rte_flow_async_destroy", -r, &err));
                        }
                        break;
                    }
                    self.inflight.insert(*user, (*id, false));
                }
            }
            n += 1;
        }
        // SAFETY: async API in use only after configure succeeded (see module docs).
        let r = unsafe { ffi::rte_flow_push(self.port, queue, &mut err) };
        if r != 0 {
            return Err(flow_error("rte_flow_push", -r, &err));
        }
        Ok(n)
    }

    fn poll(&mut self, done: &mut Vec<Completion>) -> usize {
        let Some(t) = &self.tmpl else { return 0 };
        let queue = t.queue;
        let mut res = [ffi::rte_flow_op_result::default(); 64];
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: `res` has room for 64 results; async API configured.
        let n = unsafe { ffi::rte_flow_pull(self.port, queue, res.as_mut_ptr(), res.len() as u16, &mut err) };
        if n <= 0 {
            return 0;
        }
        for r in &res[..n as usize] {
            let user = r.user_data as usize as u64;
            let Some((id, create)) = self.inflight.remove(&user) else { continue };
            let ok = r.status == ffi::rte_flow_op_status::RTE_FLOW_OP_SUCCESS;
            let result = if ok {
                Ok(id)
            } else {
                if create {
                    self.rules.remove(&id);
                    self.refused += 1;
                }
                Err(OffloadError::Errno { op: if create { "rte_flow_async_create" } else { "rte_flow_async_destroy" }, errno: 0 })
            };
            done.push(Completion { user, result });
        }
        n as usize
    }

    fn installed(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshals_items_in_network_order() {
        let k = flowtable::FlowKey::v4(0, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 1024, 80);
        let m = marshal(&FlowSpec::exact(3, &k, vec![FlowAction::Mark(7), FlowAction::Queue(1)]));
        assert_eq!(m.items.len(), 4, "eth, ipv4, tcp, end");
        assert_eq!(m.items[3].type_, ffi::rte_flow_item_type::RTE_FLOW_ITEM_TYPE_END);
        // SAFETY: the spec pointer of item 1 was boxed as rte_flow_item_ipv4 by marshal.
        let ip = unsafe { &*(m.items[1].spec as *const ffi::rte_flow_item_ipv4) };
        let src = ip.hdr.src_addr;
        assert_eq!(src, u32::from_be_bytes([10, 0, 0, 1]).to_be());
        // SAFETY: as above, rte_flow_item_tcp.
        let tcp = unsafe { &*(m.items[2].spec as *const ffi::rte_flow_item_tcp) };
        let dport = tcp.hdr.dst_port;
        assert_eq!(u16::from_be(dport), 80);
        assert_eq!(m.actions[0].type_, ffi::rte_flow_action_type::RTE_FLOW_ACTION_TYPE_MARK);
        // SAFETY: boxed as rte_flow_action_mark.
        assert_eq!(unsafe { &*(m.actions[0].conf as *const ffi::rte_flow_action_mark) }.id, 7);
        assert_eq!(m.actions[2].type_, ffi::rte_flow_action_type::RTE_FLOW_ACTION_TYPE_END);
        assert_eq!(m.attr.ingress(), 1);
    }
}
