//! `bulkhead conformance --dataplane`: every cell of every probe matrix as
//! real packets through the policy engine on DPDK.
//!
//! One EAL per process (`--no-huge --no-pci`, its own file prefix), one
//! mempool and one ring port per pod ([`pmd::RingTap`]: the harness injects
//! into the port's rx ring and drains its tx ring). Each case gets a fresh
//! [`PolicyPlane`] over its model (pods bound to ports, each with its own
//! MAC) and a fresh policy engine on one worker lcore; steps are published
//! live as new generations, exactly as the control socket would.
//!
//! A probe S -> D on port/proto is a TCP SYN, a UDP datagram or an SCTP INIT
//! from S's address (a fresh source port each, so every probe is a new
//! connection) injected on S's port. It passes when it leaves on D's port
//! with D's MAC written in. Then D's reply (SYN-ACK, UDP back, INIT-ACK) is
//! injected on D's port and must leave on S's port: the connection is
//! allowed only when both happen. A round is finished when the engine has
//! received every injected frame and accounted for each (sent or dropped).

use super::engine::{EnginePort, PolicyEngine};
use super::plane::PolicyPlane;
use control::conformance::{apply_action, run_case_with, Case, CaseResult, Cell, Replay};
use control::{Model, RuleDiff};
use flowtable::key::addr_of;
use flowtable::parse::build::{Spec, L4};
use pmd::{Eal, EalConfig, Mempool, Port, PortConf, RingTap};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a round may take before the case fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames injected per round at most (rings hold 1023).
const ROUND_MAX: usize = 512;

/// EAL, pool and the ring ports, shared by every case of a run. Field order
/// is drop order: ports (closed), their rings, the pool, EAL.
pub struct Rig {
    ports: Vec<Port>,
    taps: Vec<RingTap>,
    pool: Arc<Mempool>,
    lcore: u32,
    _eal: Eal,
}

impl Rig {
    /// Starts EAL (no hugepages, no PCI, prefix `bhconf-<pid>`) with one
    /// forwarding lcore, and a pool.
    ///
    /// # Errors
    /// EAL or pool failures.
    pub fn new() -> anyhow::Result<Rig> {
        let eal = Eal::init(&EalConfig {
            memory_mb: 192,
            file_prefix: Some(format!("bhconf-{}", std::process::id())),
            lcores: "0,1".into(),
            log_level: Some("error".into()),
            ..EalConfig::default()
        })?;
        let pool = Arc::new(Mempool::new("bhconf_pool", 8191, 256, pmd::mempool::DEFAULT_DATA_ROOM, -1)?);
        let lcore = *pmd::lcore::workers().first().ok_or_else(|| anyhow::anyhow!("EAL gave no worker lcore"))?;
        Ok(Rig { ports: Vec::new(), taps: Vec::new(), pool, lcore, _eal: eal })
    }

    /// Ensures at least `n` ring ports exist (started).
    fn grow(&mut self, n: usize) -> Result<(), String> {
        while self.ports.len() < n {
            let i = self.ports.len();
            let tap = RingTap::create(&format!("bhc{i}")).map_err(|e| format!("ring port {i}: {e}"))?;
            let conf = PortConf { rxq: 1, txq: 1, rxd: 512, txd: 512, promiscuous: false };
            let mut port = Port::open(tap.device(), conf, self.pool.clone()).map_err(|e| format!("ring port {i}: {e}"))?;
            port.start().map_err(|e| format!("ring port {i}: {e}"))?;
            self.taps.push(tap);
            self.ports.push(port);
        }
        Ok(())
    }

    fn engine_ports(&self) -> Vec<EnginePort> {
        self.ports.iter().map(|p| EnginePort { id: p.id(), mac: p.mac(), rxq: 1, txq: 1 }).collect()
    }

    /// Runs `case` through the dataplane.
    pub fn run_case(&mut self, case: &Case, model: &Model) -> CaseResult {
        run_case_with(case, model, |m| DpReplay::new(self, m))
    }
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rig({} ring ports)", self.ports.len())
    }
}

/// The MAC of the pod on slot `i`.
fn slot_mac(i: usize) -> [u8; 6] {
    [0x02, 0x62, 0x68, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// One case in flight.
struct DpReplay<'r> {
    rig: &'r mut Rig,
    plane: PolicyPlane,
    engine: Option<PolicyEngine>,
    /// Pod key -> slot (index into the rig's ports). A pod keeps its slot for the case.
    slots: BTreeMap<String, usize>,
    /// Next source port (each probe opens a new connection).
    sport: u16,
    /// Frames injected since the engine started.
    injected: u64,
}

/// What one probe round sends.
struct Send {
    from: usize,
    to: usize,
    frame: Vec<u8>,
    /// Source port of the probe (the key of the round).
    sport: u16,
}

impl<'r> DpReplay<'r> {
    fn new(rig: &'r mut Rig, mut model: Model) -> Result<Self, String> {
        let mut slots = BTreeMap::new();
        for (i, (k, w)) in model.workloads.iter_mut().enumerate() {
            slots.insert(k.clone(), i);
            w.mac = Some(slot_mac(i));
        }
        rig.grow(slots.len().max(1))?;
        for (k, w) in model.workloads.iter_mut() {
            w.port = Some(rig.ports[slots[k]].id());
        }
        let plane = PolicyPlane::new(model, Default::default(), None).map_err(|e| e.to_string())?;
        let mut r = DpReplay { rig, plane, engine: None, slots, sport: 0, injected: 0 };
        r.restart()?;
        Ok(r)
    }

    /// (Re)starts the engine over every rig port: fresh caches and conntrack.
    fn restart(&mut self) -> Result<(), String> {
        if let Some(mut e) = self.engine.take() {
            e.stop();
        }
        let reader = self.plane.reader();
        let e = PolicyEngine::start(&reader, &self.rig.engine_ports(), &[self.rig.lcore], 32, Default::default(), None, None)
            .map_err(|e| format!("policy engine: {e}"))?;
        self.engine = Some(e);
        self.injected = 0;
        self.sport = 1024;
        Ok(())
    }

    /// Binds pods without a slot (created by the last action) to ports.
    fn bind_new_pods(&mut self) -> Result<(), String> {
        let model = self.plane.compiler().model();
        let mut rebind = Vec::new();
        for (k, w) in &model.workloads {
            let slot = match self.slots.get(k) {
                Some(&s) => s,
                None => {
                    let s = self.slots.len();
                    self.slots.insert(k.clone(), s);
                    s
                }
            };
            let want_port = self.rig.ports.get(slot).map(Port::id);
            if w.mac != Some(slot_mac(slot)) || want_port.is_none() || w.port != want_port {
                rebind.push((w.clone(), slot));
            }
        }
        if rebind.is_empty() {
            return Ok(());
        }
        let need = self.slots.len();
        if need > self.rig.ports.len() {
            if let Some(mut e) = self.engine.take() {
                e.stop();
            }
            self.rig.grow(need)?;
            self.restart()?;
        }
        let ids: Vec<u16> = rebind.iter().map(|(_, s)| self.rig.ports[*s].id()).collect();
        self.plane
            .change(|c| {
                let mut diffs: Vec<RuleDiff> = Vec::new();
                for ((mut w, slot), id) in rebind.into_iter().zip(ids) {
                    w.port = Some(id);
                    w.mac = Some(slot_mac(slot));
                    diffs.push(c.replace_workload(w).map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(diffs)
            })
            .map(|_| ())
    }

    /// Injects every frame on its source port, waits until the engine has
    /// accounted for all of them, and returns what each port sent.
    fn round(&mut self, sends: &[Send]) -> Result<Vec<Vec<Vec<u8>>>, String> {
        let mut by_port: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
        for s in sends {
            by_port.entry(s.from).or_default().push(&s.frame);
        }
        for (p, frames) in by_port {
            let n = self.rig.taps[p].inject(&self.rig.pool, &frames);
            if n != frames.len() {
                return Err(format!("injected {n} of {} frames on port {p}: ring or pool full", frames.len()));
            }
        }
        self.injected += sends.len() as u64;
        let t = Instant::now();
        loop {
            let snap = self.engine.as_ref().map(|e| e.snapshot()).unwrap_or_default();
            let rx: u64 = snap.iter().map(|s| s.rx).sum();
            let done: u64 = snap.iter().map(|s| s.tx + s.dropped + s.tx_dropped).sum();
            if rx >= self.injected && done >= rx {
                break;
            }
            if t.elapsed() > ROUND_TIMEOUT {
                return Err(format!("the dataplane took {} of {} frames in {ROUND_TIMEOUT:?}", rx, self.injected));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(self.rig.taps.iter().map(RingTap::drain).collect())
    }

    fn next_sport(&mut self) -> Result<u16, String> {
        if self.sport == u16::MAX {
            // Source ports used up: forget every connection and start over.
            self.restart()?;
        }
        self.sport += 1;
        Ok(self.sport)
    }

    /// The pod's slot and the address pair for a probe to `dst`.
    fn endpoints(&self, src: &str, dst: &str) -> Result<(usize, usize, IpAddr, IpAddr), String> {
        let m = self.plane.compiler().model();
        let s = m.workloads.get(src).ok_or_else(|| format!("no pod {src}"))?;
        let d = m.workloads.get(dst).ok_or_else(|| format!("no pod {dst}"))?;
        let (sa, da) = s
            .addresses
            .iter()
            .find_map(|sa| d.addresses.iter().find(|da| da.is_ipv4() == sa.is_ipv4()).map(|da| (*sa, *da)))
            .ok_or_else(|| format!("{src} and {dst} share no address family"))?;
        Ok((self.slots[src], self.slots[dst], sa, da))
    }
}

/// CRC32c (Castagnoli, reflected), as SCTP's checksum uses it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// One end of a probe: address, port and MAC.
#[derive(Clone, Copy)]
struct End {
    ip: IpAddr,
    port: u16,
    mac: [u8; 6],
}

/// A probe or reply frame from `from` to `to`. `reply` makes a SYN-ACK /
/// INIT-ACK instead of a SYN / INIT.
fn frame(proto: u8, from: End, to: End, reply: bool) -> Result<Vec<u8>, String> {
    use control::model::proto as p;
    let (src, dst, sport, dport, smac, dmac) = (from.ip, to.ip, from.port, to.port, from.mac, to.mac);
    let l4 = match proto {
        p::TCP => L4::Tcp { sport, dport, flags: if reply { 0x12 } else { 0x02 } },
        p::UDP => L4::Udp { sport, dport },
        p::SCTP => L4::Sctp { sport, dport },
        other => return Err(format!("protocol {other} cannot be probed")),
    };
    let mut spec = Spec::new(addr_of(src), addr_of(dst), l4);
    // UDP: a few bytes of payload; SCTP: one INIT / INIT-ACK chunk (20 bytes).
    spec.payload = match proto {
        p::UDP => 8,
        p::SCTP => 20,
        _ => 0,
    };
    let mut f = spec.build();
    f[0..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    if proto == p::SCTP {
        let at = flowtable::parse::parse(&f, 0, None).map_err(|e| format!("built SCTP probe does not parse: {e:?}"))?.meta.l4 as usize;
        let tag: u32 = 0x6268_0000 | u32::from(if reply { dport } else { sport });
        let peer_tag: u32 = 0x6268_0000 | u32::from(if reply { sport } else { dport });
        // Common header: the INIT carries verification tag 0, the INIT-ACK the INIT's initiate tag.
        f[at + 4..at + 8].copy_from_slice(&(if reply { peer_tag } else { 0 }).to_be_bytes());
        let c = at + 12;
        f[c] = if reply { 2 } else { 1 };
        f[c + 1] = 0;
        f[c + 2..c + 4].copy_from_slice(&20u16.to_be_bytes());
        f[c + 4..c + 8].copy_from_slice(&tag.to_be_bytes()); // initiate tag
        f[c + 8..c + 12].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
        f[c + 12..c + 14].copy_from_slice(&1u16.to_be_bytes()); // outbound streams
        f[c + 14..c + 16].copy_from_slice(&1u16.to_be_bytes()); // inbound streams
        f[c + 16..c + 20].copy_from_slice(&tag.to_be_bytes()); // initial TSN
        f[at + 8..at + 12].copy_from_slice(&[0; 4]);
        let sum = crc32c(&f[at..c + 20]);
        f[at + 8..at + 12].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(f)
}

/// The (source port, destination port, proto, addresses) a frame carries.
fn tuple(f: &[u8]) -> Option<(flowtable::key::Addr, flowtable::key::Addr, u8, u16, u16)> {
    let k = flowtable::parse::parse(f, 0, None).ok()?.key;
    Some((k.src, k.dst, k.proto, k.sport, k.dport))
}

impl Replay for DpReplay<'_> {
    fn apply(&mut self, a: &control::conformance::CaseAction) -> Result<(), String> {
        self.plane.change(|c| apply_action(c, a))?;
        self.bind_new_pods()
    }

    fn probe(&mut self, cells: &[Cell]) -> Result<Vec<bool>, String> {
        let mut out = vec![false; cells.len()];
        for (chunk_i, chunk) in cells.chunks(ROUND_MAX).enumerate() {
            let base = chunk_i * ROUND_MAX;
            // Round 1: the first packet of every cell.
            let mut sends = Vec::with_capacity(chunk.len());
            let mut meta = Vec::with_capacity(chunk.len());
            for c in chunk {
                let (s, d, sa, da) = self.endpoints(&c.src, &c.dst)?;
                let sport = self.next_sport()?;
                sends.push(Send { from: s, to: d, frame: frame(c.proto, End { ip: sa, port: sport, mac: slot_mac(s) }, End { ip: da, port: c.port, mac: slot_mac(d) }, false)?, sport });
                meta.push((sa, da));
            }
            let got = self.round(&sends)?;
            let arrived = |sends: &[Send], got: &[Vec<Vec<u8>>], i: usize, proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16| {
                let want = (addr_of(src), addr_of(dst), proto, sport, dport);
                let to = sends[i].to;
                got[to].iter().any(|f| f.len() >= 12 && f[0..6] == slot_mac(to) && tuple(f) == Some(want))
            };
            // Round 2: the reply of every cell whose first packet arrived.
            let mut replies = Vec::new();
            let mut which = Vec::new();
            for (i, c) in chunk.iter().enumerate() {
                let (sa, da) = meta[i];
                if arrived(&sends, &got, i, c.proto, sa, da, sends[i].sport, c.port) {
                    let (s, d) = (sends[i].from, sends[i].to);
                    let f = frame(
                        c.proto,
                        End { ip: da, port: c.port, mac: slot_mac(d) },
                        End { ip: sa, port: sends[i].sport, mac: slot_mac(s) },
                        true,
                    )?;
                    replies.push(Send { from: d, to: s, frame: f, sport: c.port });
                    which.push(i);
                }
            }
            if replies.is_empty() {
                continue;
            }
            let back = self.round(&replies)?;
            for (j, &i) in which.iter().enumerate() {
                let c = &chunk[i];
                let (sa, da) = meta[i];
                out[base + i] = arrived(&replies, &back, j, c.proto, da, sa, c.port, sends[i].sport);
            }
        }
        Ok(out)
    }
}

impl Drop for DpReplay<'_> {
    fn drop(&mut self) {
        if let Some(mut e) = self.engine.take() {
            e.stop();
        }
        // Nothing of this case may leak into the next: empty every ring.
        for t in &self.rig.taps {
            let _ = t.drain();
        }
    }
}

/// `bulkhead conformance --dataplane`: same output as the classifier replay.
///
/// # Errors
/// EAL, pool, model or case-file errors that stop the whole run.
pub fn run(args: &control::ConformanceArgs, out: &mut dyn std::io::Write) -> anyhow::Result<i32> {
    let mut rig = Rig::new()?;
    let code = control::commands::conformance_with(args, out, |case, model| rig.run_case(case, model))?;
    Ok(code)
}

