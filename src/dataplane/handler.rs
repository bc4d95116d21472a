//! The policy forwarding engine on one lcore: `set fwd policy`.
//!
//! ```text
//! per burst: load the published DpState (one generation for the whole burst)
//!            Pipeline::process: parse -> exact-match cache -> identities,
//!                               routes, conntrack, tiered policy
//!            Forward(dest id) -> output of the dest's port; destination MAC
//!                                rewritten to the workload's
//!            Arp              -> answered in place for addresses the switch
//!                                knows, sent back out of the rx port
//!            IPv6 neighbour solicitation -> the same: a neighbour advertisement
//!            Drop(reason)     -> freed; counted per reason by the pipeline
//!            LOG flag         -> one flow event (first packet decided by policy)
//!            flow notes       -> periodic and end events (conntrack, denied flows)
//! when idle: Pipeline::maintain (expiry, periodic notes) -> events
//! at stop:   every connection and denied flow ends (`flush`) -> events
//! ```
//! Nothing here allocates or locks; the state guard is held for one burst.

use super::offload::Pre;
use super::state::DpState;
use crate::visibility::export::EventSender;
use crate::visibility::record::{FlowEvent, FlowVerdict as RecVerdict, RecordKind};
use flowtable::conntrack::CtNote;
use flowtable::act::{vflags, DropReason, Fate, PacketVerdict};
use flowtable::leftright::{CachedReader, Reader};
use flowtable::pipeline::{Pipeline, PipelineConfig, Policy, RxPacket};
use flowtable::stats::Stats;
use pmd::route::{RouteHandler, RxQueue, DROP};
use pmd::{Burst, BURST};

/// What the handler needs to know about the switch's ports.
#[derive(Clone, Debug)]
pub struct PortMap {
    /// Port id -> index in the route loop's outputs (`DROP` when absent).
    pub out_of_port: Vec<u8>,
    /// Port id -> the port's own MAC (source of ARP replies for addresses
    /// whose workload MAC is unknown).
    pub mac_of_port: Vec<[u8; 6]>,
}

/// Counters the handler keeps besides the pipeline's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// ARP requests answered.
    pub arp_replied: u64,
    /// IPv6 neighbour solicitations answered.
    pub nd_replied: u64,
    /// ARP packets and neighbour solicitations dropped (not a request, or
    /// for an address of no local workload).
    pub arp_dropped: u64,
    /// Forwarded to a port this lcore cannot transmit on.
    pub no_output: u64,
    /// Routed to a port whose link is down (a VM that is not connected).
    pub link_down: u64,
    /// Flow events the record queue could not take.
    pub events_lost: u64,
}

/// TSC -> wall-clock milliseconds, anchored when the handler was made.
#[derive(Clone, Copy, Debug)]
struct Clock {
    tsc_hz: u64,
    epoch_ms: u64,
    epoch_tsc: u64,
}

impl Clock {
    fn ms(&self, tsc: u64) -> u64 {
        self.epoch_ms + tsc.wrapping_sub(self.epoch_tsc) / (self.tsc_hz / 1000).max(1)
    }
}

/// Nanoseconds -> TSC ticks.
fn ticks(ns: u64, hz: u64) -> u64 {
    (u128::from(ns) * u128::from(hz) / 1_000_000_000).min(u128::from(u64::MAX)) as u64
}

/// The event of a flow note: a periodic or end record of a connection
/// (allowed, or audit-denied when an audit policy would deny it) or of a
/// denied flow.
fn note_event(n: &CtNote, denied: bool, st: &DpState, clock: &Clock) -> FlowEvent {
    let c = &n.conn;
    let (verdict, cookie) = if denied {
        (RecVerdict::Deny, c.cookie)
    } else {
        match st.observe.decide(&c.orig).denied_by().and_then(|d| d.rule) {
            Some(r) => (RecVerdict::AuditDeny, r.cookie),
            None => (RecVerdict::Allow, c.cookie),
        }
    };
    FlowEvent {
        kind: if n.end.is_some() { RecordKind::End } else { RecordKind::Periodic },
        key: c.orig,
        verdict,
        cookie,
        packets: c.packets,
        bytes: c.bytes,
        reported_packets: c.reported_packets,
        reported_bytes: c.reported_bytes,
        start_ms: clock.ms(c.created),
        last_ms: clock.ms(c.last_seen),
        end: n.end,
    }
}

/// Drains the pipeline's flow notes into events (dropped when no sink is
/// configured; counted in `lost` when the queue is full).
fn emit_notes(p: &mut Pipeline, events: Option<&EventSender>, st: &DpState, clock: &Clock, lost: &mut u64) {
    p.drain_notes(|n, denied| {
        if let Some(ev) = events {
            if !ev.send(note_event(n, denied, st, clock)) {
                *lost += 1;
            }
        }
    });
}

/// One lcore's policy engine.
#[derive(Debug)]
pub struct PolicyHandler {
    /// Revalidated every poll round (`handle` or `idle`), so a publish never
    /// waits on this lcore for longer than one burst.
    reader: CachedReader<DpState>,
    pipeline: Pipeline,
    ports: PortMap,
    events: Option<EventSender>,
    verdicts: [PacketVerdict; BURST],
    clock: Clock,
    /// Extra counters.
    pub stats: HandlerStats,
    /// The newest generation a burst was decided under, and the TSC of the
    /// first burst decided under it (publish-to-enforced latency).
    pub gen_seen: (u64, u64),
    /// The hardware-offload path (model ports), if offload is configured.
    offload: Option<super::offload::LcoreOffload>,
    /// What the model did with each packet of the burst (valid when it ran).
    pre: [Pre; BURST],
}

impl PolicyHandler {
    /// A handler reading `reader`, with a fresh cache and conntrack. The
    /// times in `cfg` (conntrack timeouts, report interval, denied-flow idle
    /// timeout) are in nanoseconds; `tsc_hz` is the clock they become.
    pub fn new(reader: Reader<DpState>, mut cfg: PipelineConfig, ports: PortMap, events: Option<EventSender>, tsc_hz: u64) -> Self {
        // Paced by the configured times (still nanoseconds here).
        cfg.pace_sweeps();
        let other = [&mut cfg.report_interval, &mut cfg.denied_idle, &mut cfg.sweep_period];
        for v in cfg.ct.timeouts.all_mut().into_iter().chain(other) {
            *v = ticks(*v, tsc_hz);
        }
        let epoch_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        PolicyHandler {
            reader: reader.cached(),
            pipeline: Pipeline::new(cfg),
            ports,
            events,
            verdicts: [PacketVerdict::default(); BURST],
            clock: Clock { tsc_hz: tsc_hz.max(1), epoch_ms, epoch_tsc: pmd::lcore::rdtsc() },
            stats: HandlerStats::default(),
            gen_seen: (0, 0),
            offload: None,
            pre: [Pre::Soft(None); BURST],
        }
    }

    /// Puts the offload path (the model ports this lcore polls) in front of
    /// software.
    pub fn set_offload(&mut self, o: super::offload::LcoreOffload) {
        self.offload = Some(o);
    }

    /// The pipeline's counters.
    pub fn pipeline_stats(&self) -> &Stats {
        self.pipeline.stats()
    }

    /// The pipeline (cache and conntrack sizes for `show pmd stats`).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Ends every connection and denied flow (reason `flush`) and sends
    /// their end events: called when the lcore stops. Off the data path, so a
    /// full queue is waited for a little (up to ~100 ms per event) before an
    /// event is counted lost.
    pub fn finish(&mut self) {
        let st = self.reader.load();
        let (events, clock, lost) = (self.events.as_ref(), self.clock, &mut self.stats.events_lost);
        self.pipeline.flush_with(|n, denied| {
            let Some(ev) = events else { return };
            let e = note_event(n, denied, st, &clock);
            for _ in 0..1000 {
                if ev.try_send(e) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            if !ev.send(e) {
                *lost += 1;
            }
        });
    }
}

/// ARP over Ethernet, untagged: offsets of the fields we touch.
mod arp {
    pub const ETH_DST: core::ops::Range<usize> = 0..6;
    pub const ETH_SRC: core::ops::Range<usize> = 6..12;
    pub const OP: core::ops::Range<usize> = 20..22;
    pub const SHA: core::ops::Range<usize> = 22..28;
    pub const SPA: core::ops::Range<usize> = 28..32;
    pub const THA: core::ops::Range<usize> = 32..38;
    pub const TPA: core::ops::Range<usize> = 38..42;
    pub const LEN: usize = 42;
}

/// Turns an ARP request for an address the switch routes to a local workload
/// into the reply, in place. Returns false (leave it to be dropped) otherwise.
fn answer_arp(f: &mut [u8], st: &DpState, ports: &PortMap) -> bool {
    if f.len() < arp::LEN || f[12..14] != [0x08, 0x06] || f[arp::OP] != [0, 1] {
        return false;
    }
    let tpa = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
    let addr = flowtable::key::v4_mapped(tpa);
    // Only addresses of local workloads (host routes), never the uplink default.
    let Some((p, id)) = st.routes.lookup(addr) else { return false };
    if p.len != 128 {
        return false;
    }
    let d = st.dests[*id as usize];
    let Some(mac) = d.mac.or_else(|| ports.mac_of_port.get(d.port as usize).copied()) else { return false };
    let requester_mac: [u8; 6] = f[arp::SHA].try_into().expect("6 bytes");
    let requester_ip: [u8; 4] = f[arp::SPA].try_into().expect("4 bytes");
    let target_ip: [u8; 4] = f[arp::TPA].try_into().expect("4 bytes");
    f[arp::ETH_DST].copy_from_slice(&requester_mac);
    f[arp::ETH_SRC].copy_from_slice(&mac);
    f[arp::OP].copy_from_slice(&[0, 2]);
    f[arp::SHA].copy_from_slice(&mac);
    f[arp::SPA].copy_from_slice(&target_ip);
    f[arp::THA].copy_from_slice(&requester_mac);
    f[arp::TPA].copy_from_slice(&requester_ip);
    true
}

/// IPv6 neighbour discovery (RFC 4861) over untagged Ethernet: offsets.
mod nd {
    pub const IP: usize = 14;
    pub const ICMP: usize = 54;
    pub const TARGET: core::ops::Range<usize> = 62..78;
    pub const OPT: usize = 78;
    /// Ethernet + IPv6 + NA (24) + target link-layer address option (8).
    pub const NA_LEN: usize = 86;
}

/// [`pack_mac`] of a destination that keeps the frame's MAC.
const NO_MAC: u64 = u64::MAX;

/// A destination MAC as an integer (bytes in little-endian order), or
/// [`NO_MAC`] for none.
#[inline(always)]
fn pack_mac(mac: Option<[u8; 6]>) -> u64 {
    mac.map_or(NO_MAC, |m| {
        let mut b = [0u8; 8];
        b[..6].copy_from_slice(&m);
        u64::from_le_bytes(b)
    })
}

/// Writes a [`pack_mac`] MAC as packet `i`'s destination ([`NO_MAC`]: none,
/// the frame is not touched).
#[inline(always)]
fn set_dst_mac(burst: &mut Burst, i: usize, mac: u64) {
    if mac != NO_MAC {
        burst.data_mut(i)[0..6].copy_from_slice(&mac.to_le_bytes()[..6]);
    }
}

/// True for an untagged ICMPv6 neighbour solicitation.
#[inline]
fn is_ns(f: &[u8]) -> bool {
    f.len() >= nd::OPT && f[12..14] == [0x86, 0xdd] && f[nd::IP + 6] == 58 && f[nd::ICMP] == 135
}

fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

/// Turns a neighbour solicitation for an address the switch routes to a
/// local workload into the advertisement (solicited, override, with the
/// target link-layer address option), in place. Returns false to drop it.
fn answer_ns(f: &mut [u8], st: &DpState, ports: &PortMap) -> bool {
    if f.len() < nd::NA_LEN || !is_ns(f) {
        return false;
    }
    let target: [u8; 16] = f[nd::TARGET].try_into().expect("16 bytes");
    let Some((p, id)) = st.routes.lookup(u128::from_be_bytes(target)) else { return false };
    if p.len != 128 {
        return false;
    }
    let d = st.dests[*id as usize];
    let Some(mac) = d.mac.or_else(|| ports.mac_of_port.get(d.port as usize).copied()) else { return false };
    let requester_mac: [u8; 6] = f[6..12].try_into().expect("6 bytes");
    let src: [u8; 16] = f[nd::IP + 8..nd::IP + 24].try_into().expect("16 bytes");
    // Unspecified source (duplicate address detection): answer all-nodes.
    let dst = if src == [0; 16] { [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] } else { src };
    f[0..6].copy_from_slice(&requester_mac);
    f[6..12].copy_from_slice(&mac);
    f[nd::IP + 4..nd::IP + 6].copy_from_slice(&32u16.to_be_bytes());
    f[nd::IP + 7] = 255;
    f[nd::IP + 8..nd::IP + 24].copy_from_slice(&target);
    f[nd::IP + 24..nd::IP + 40].copy_from_slice(&dst);
    let i = nd::ICMP;
    f[i] = 136;
    f[i + 1] = 0;
    f[i + 2..i + 4].copy_from_slice(&[0, 0]);
    f[i + 4..i + 8].copy_from_slice(&[0x60, 0, 0, 0]); // solicited + override
    f[nd::OPT] = 2;
    f[nd::OPT + 1] = 1;
    f[nd::OPT + 2..nd::OPT + 8].copy_from_slice(&mac);
    let mut sum = csum_add(0, &f[nd::IP + 8..nd::IP + 40]);
    sum += 32 + 58;
    sum = csum_add(sum, &f[i..nd::NA_LEN]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[i + 2..i + 4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

impl RouteHandler for PolicyHandler {
    /// No packets this round: expiry and periodic reports go on, so flows
    /// end on time without traffic.
    fn idle(&mut self) {
        // Let go of an old generation even when no packet comes.
        let st = self.reader.load();
        self.pipeline.maintain(pmd::lcore::rdtsc());
        if self.pipeline.pending_notes() != 0 {
            emit_notes(&mut self.pipeline, self.events.as_ref(), st, &self.clock, &mut self.stats.events_lost);
        }
    }

    // Inlined into the route loop (left to itself, the compiler stopped
    // inlining it once the pipeline grew: +3 cycles/pkt in `bench fwd` at 1k flows).
    #[inline(always)]
    fn handle(&mut self, rx: RxQueue, burst: &mut Burst, dest: &mut [u8; BURST], now: u64) {
        let n = burst.len();
        let st = self.reader.load();
        let gen = st.gen();
        let policy = Policy { gen, tables: &st.enforce, identities: &st.ipmap, routes: &st.routes, cut_before: st.cut_before };
        if gen != self.gen_seen.0 {
            // Its own read: `now` may precede the publish (publish-to-
            // enforced latency is measured from this).
            self.gen_seen = (gen, pmd::lcore::rdtsc());
        }
        // Hardware first (model ports): DROP rules free packets before
        // software; a current mark carries the verdict; the rest is software's.
        let pre = &mut self.pre;
        let mut off = false;
        if let Some(o) = self.offload.as_mut() {
            if o.has_model(rx.port) && o.begin_burst() {
                let t0 = pmd::lcore::rdtsc();
                for (i, p) in pre.iter_mut().enumerate().take(n) {
                    *p = o.rx(burst.data(i), rx.port, gen);
                }
                // What the simulated NIC cost this core (hardware would not).
                o.add_model_cycles(pmd::lcore::rdtsc().wrapping_sub(t0));
                off = true;
            }
        }
        // Software decides the packets hardware did not: compacted, in order
        // (`soft[i]`: packet i's verdict slot). The pipeline reads the frames
        // straight from the mbufs: no array of packets is built per burst.
        let mut soft = [0u8; BURST];
        let in_port = rx.port;
        if off {
            let mut idx = [0u8; BURST];
            let mut m = 0;
            for (i, (p, slot)) in self.pre[..n].iter().zip(&mut soft).enumerate() {
                if matches!(p, Pre::Soft(_)) {
                    idx[m] = i as u8;
                    *slot = m as u8;
                    m += 1;
                }
            }
            if m > 0 {
                let frames = &*burst;
                let pkt = |j: usize| RxPacket { frame: frames.data(idx[j] as usize), rss: None, in_port };
                self.pipeline.process_burst(&policy, m, pkt, now, &mut self.verdicts[..m]);
            }
        } else {
            let frames = &*burst;
            let pkt = |i: usize| RxPacket { frame: frames.data(i), rss: None, in_port };
            self.pipeline.process_burst(&policy, n, pkt, now, &mut self.verdicts[..n]);
        }
        if self.pipeline.pending_notes() != 0 {
            emit_notes(&mut self.pipeline, self.events.as_ref(), st, &self.clock, &mut self.stats.events_lost);
        }
        // The last destination that forwarded: a burst is often one flow, or
        // a few, to one workload (dests entry, output, MAC looked up once).
        // Plain integers, so they stay in registers: as an Option holding a
        // MAC array it went through the stack, a store-to-load chain from one
        // packet to the next (perf: ~9 % of a policy lcore's own cycles).
        let (mut last_id, mut last_out, mut last_mac) = (u32::MAX, DROP, NO_MAC);
        // Lanes that follow the one before in a train of cache hits: its
        // verdict without LOG, an IPv4 TCP/UDP frame (no ARP, no neighbour
        // solicitation). Forwarded like it, they need only their MAC (one
        // flow, alternating builds: ~4 cycles a packet less than the walk
        // below).
        // With offload the verdicts are compacted: not used. The lane
        // before's destination is kept in a register (`prev`): read back
        // from `dest`, each follower waited on the store of the one before
        // (perf: ~18 % of a policy lcore's own cycles at one flow).
        let followers = if off { 0 } else { self.pipeline.followers() };
        let mut prev = DROP;
        let mut i = 0;
        while i < n {
            let run = if prev != DROP { (followers >> i).trailing_ones() as usize } else { 0 };
            if run != 0 {
                if last_mac != NO_MAC {
                    for j in i..i + run {
                        set_dst_mac(burst, j, last_mac);
                    }
                }
                dest[i..i + run].fill(prev);
                i += run;
                continue;
            }
            let d = 'one: {
                let v = match if off { self.pre[i] } else { Pre::Soft(None) } {
                    Pre::Soft(h) => {
                        let v = self.verdicts[if off { soft[i] as usize } else { i }];
                        if off {
                            if let (Some(h), Some(o)) = (h, self.offload.as_mut()) {
                                o.observe(&h, rx.port, rx.queue, v.fate, gen, now);
                            }
                        }
                        v
                    }
                    Pre::Dropped => break 'one DROP,
                    Pre::Forward(id) => PacketVerdict { fate: Fate::Forward(id), flags: 0, cookie: 0 },
                };
                if is_ns(burst.data(i)) {
                    // Neighbour discovery is the switch's to answer, like ARP.
                    break 'one if answer_ns(burst.data_mut(i), st, &self.ports) {
                        self.stats.nd_replied += 1;
                        self.ports.out_of_port.get(rx.port as usize).copied().unwrap_or(DROP)
                    } else {
                        self.stats.arp_dropped += 1;
                        DROP
                    };
                }
                let d = match v.fate {
                    Fate::Forward(id) => 'fwd: {
                        if u32::from(id) != last_id {
                            let d = st.dests[id as usize];
                            match self.ports.out_of_port.get(d.port as usize) {
                                _ if st.link_down(d.port) => {
                                    self.stats.link_down += 1;
                                    break 'fwd DROP;
                                }
                                Some(&o) if o != DROP => (last_id, last_out, last_mac) = (u32::from(id), o, pack_mac(d.mac)),
                                _ => {
                                    self.stats.no_output += 1;
                                    break 'fwd DROP;
                                }
                            }
                        }
                        set_dst_mac(burst, i, last_mac);
                        last_out
                    }
                    Fate::Arp => {
                        if answer_arp(burst.data_mut(i), st, &self.ports) {
                            self.stats.arp_replied += 1;
                            self.ports.out_of_port.get(rx.port as usize).copied().unwrap_or(DROP)
                        } else {
                            self.stats.arp_dropped += 1;
                            DROP
                        }
                    }
                    Fate::Drop(_) => DROP,
                };
                if v.flags & vflags::LOG != 0 {
                    if let Some(ev) = &self.events {
                        let f = burst.data(i);
                        if let Ok(p) = flowtable::parse::parse(f, rx.port, None) {
                            let mut key = p.key;
                            key.src_id = st.ipmap.lookup(key.src).map_or(0, |(_, v)| *v);
                            key.dst_id = st.ipmap.lookup(key.dst).map_or(0, |(_, v)| *v);
                            let mut cookie = v.cookie;
                            let verdict = match v.fate {
                                Fate::Forward(_) => {
                                    // Audit-mode policies live in the observe tables: they
                                    // never change the verdict, only what the record says.
                                    let seen = st.observe.decide(&key);
                                    match seen.denied_by().and_then(|d| d.rule) {
                                        Some(r) => {
                                            cookie = r.cookie;
                                            RecVerdict::AuditDeny
                                        }
                                        None => RecVerdict::Allow,
                                    }
                                }
                                Fate::Drop(DropReason::PolicyEgress | DropReason::PolicyIngress) => RecVerdict::Deny,
                                _ => RecVerdict::Drop,
                            };
                            let ms = self.clock.ms(now);
                            let e = FlowEvent {
                                kind: RecordKind::Start,
                                key,
                                verdict,
                                cookie,
                                packets: [1, 0],
                                bytes: [f.len() as u64, 0],
                                reported_packets: [0; 2],
                                reported_bytes: [0; 2],
                                start_ms: ms,
                                last_ms: ms,
                                end: None,
                            };
                            if !ev.send(e) {
                                self.stats.events_lost += 1;
                            }
                        }
                    }
                }
                d
            };
            dest[i] = d;
            prev = d;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::plane::PolicyPlane;
    use crate::dataplane::state::Dest;
    use flowtable::key::v4_mapped;
    use flowtable::parse::build::{arp_frame, Spec, L4};
    use pmd::route::{Claim, Output, RouteStats};
    use pmd::{testing, Port, PortConf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A TCP SYN addressed to the switch's MAC (any other than a workload's,
    /// so that the rewrite shows).
    fn tcp(src: u32, dst: u32, dport: u16) -> Vec<u8> {
        let mut f = Spec::new(v4_mapped(src), v4_mapped(dst), L4::Tcp { sport: 40000, dport, flags: 0x02 }).build();
        f[0..6].copy_from_slice(&[2, 0xee, 0, 0, 0, 0xee]);
        f
    }

    /// A neighbour solicitation from fd00::1 (02:aa:..:01) for fd00::2, with
    /// the source link-layer address option (86 bytes, as hosts send it).
    fn ns_frame() -> Vec<u8> {
        let mut f = vec![0u8; 86];
        f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0xaa, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&32u16.to_be_bytes());
        f[20] = 58;
        f[21] = 255;
        let src: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: std::net::Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        f[54] = 135;
        let target: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        f[62..78].copy_from_slice(&target.octets());
        f[78] = 1;
        f[79] = 1;
        f[80..86].copy_from_slice(&[2, 0xaa, 0, 0, 0, 1]);
        f
    }

    /// RFC 4443 checksum over the pseudo-header and the ICMPv6 message: 0 when valid.
    fn icmp6_residue(f: &[u8]) -> u16 {
        let len = u16::from_be_bytes([f[18], f[19]]) as u32;
        let mut sum = csum_add(0, &f[22..54]) + len + 58;
        sum = csum_add(sum, &f[54..54 + len as usize]);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    const WEB: u32 = 0x0a01_0001;
    const API: u32 = 0x0a01_0002;
    const DB: u32 = 0x0a01_0003;

    /// Frames through real DPDK ports: allowed flows leave on their
    /// workload's port with its MAC, denied ones are dropped and counted,
    /// ARP for a workload is answered, the uplink takes the rest.
    #[test]
    fn policy_engine_forwards_drops_and_answers_arp_over_dpdk_ports() {
        let dir = testing::scratch("policy-engine");
        let mut frames = vec![
            tcp(WEB, API, 8080),                                  // allowed -> api's port
            tcp(WEB, API, 8080),                                  // the same flow again: rewritten alike
            tcp(WEB, DB, 5432),                                   // denied: db takes api only
            tcp(API, DB, 5432),                                   // allowed -> db's port
            arp_frame(1, [2, 0xaa, 0, 0, 0, 1], WEB, API),        // answered out of port 0
            tcp(WEB, 0xc000_0207, 443),                           // to the uplink
            tcp(DB, API, 8080),                                   // denied: api takes web only
            ns_frame(),                                           // who has fd00::2? answered out of port 0
        ];
        // api answers web's SYN (out of port 0, web's), then web's ACKs: the
        // connection is established and, in the second burst, its packets are
        // a train of cache hits (the handler's shortcut for followers).
        const TRAIN: usize = 40;
        let segment = |src, dst, sport, dport, flags| {
            let mut f = Spec::new(v4_mapped(src), v4_mapped(dst), L4::Tcp { sport, dport, flags }).build();
            f[0..6].copy_from_slice(&[2, 0xee, 0, 0, 0, 0xee]);
            f
        };
        frames.push(segment(API, WEB, 8080, 40000, 0x12));
        frames.extend(std::iter::repeat_n(segment(WEB, API, 40000, 8080, 0x10), TRAIN));
        let inp = dir.join("in.pcap");
        pmd::pcap::write(&inp, &frames).unwrap();
        let (o0, o1) = (dir.join("out0.pcap"), dir.join("out1.pcap"));
        let conf = PortConf { rxd: 256, txd: 256, ..PortConf::default() };
        let pool = testing::pool();
        let mut p0 = Port::open(&format!("net_pcap_pe0,rx_pcap={},tx_pcap={}", inp.display(), o0.display()), conf, pool.clone()).unwrap();
        let mut p1 = Port::open(&format!("net_pcap_pe1,tx_pcap={}", o1.display()), conf, pool).unwrap();
        p0.start().unwrap();
        p1.start().unwrap();
        let (id0, id1) = (p0.id(), p1.id());
        std::fs::write(
            dir.join("model.toml"),
            format!(
                "[[namespaces]]\nname = \"prod\"\n\
                 [[workloads]]\nname = \"web\"\nnamespace = \"prod\"\nlabels = {{ app = \"web\" }}\naddresses = [\"10.1.0.1\"]\nport = {id0}\n\
                 [[workloads]]\nname = \"api\"\nnamespace = \"prod\"\nlabels = {{ app = \"api\" }}\naddresses = [\"10.1.0.2\", \"fd00::2\"]\nmac = \"02:00:00:00:00:02\"\nport = {id1}\n\
                 [[workloads]]\nname = \"db\"\nnamespace = \"prod\"\nlabels = {{ app = \"db\" }}\naddresses = [\"10.1.0.3\"]\nmac = \"02:00:00:00:00:03\"\nport = {id1}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("policy.toml"),
            "[[policy]]\nname = \"api\"\nnamespace = \"prod\"\nselector = \"app=api\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"8080/tcp\"]\n\
             [[policy]]\nname = \"db\"\nnamespace = \"prod\"\nselector = \"app=db\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=api\" }]\n  ports = [\"5432/tcp\"]\n\
             [[policy]]\nname = \"audit-api\"\nnamespace = \"prod\"\naudit = true\nselector = \"app=api\"\n  [[policy.ingress]]\n  action = \"deny\"\n  from = [{ selector = \"app=web\" }]\n",
        )
        .unwrap();
        let model = control::Model::load(&dir.join("model.toml")).unwrap();
        let set = control::commands::load_policies(&[dir.join("policy.toml")]).unwrap();
        let uplink_mac = [2, 0, 0, 0, 0, 0xfe];
        let plane = PolicyPlane::new(model, set, Some(Dest { port: id0, mac: Some(uplink_mac) })).unwrap();
        let mut out_of_port = vec![DROP; 64];
        out_of_port[id0 as usize] = 0;
        out_of_port[id1 as usize] = 1;
        let mut mac_of_port = vec![[0u8; 6]; 64];
        mac_of_port[id0 as usize] = p0.mac();
        let ports = PortMap { out_of_port, mac_of_port };
        let fl = crate::visibility::export::FlowLogConfig { json: Some(dir.join("flows.jsonl")), queue: 1024, ..Default::default() };
        let mut log = crate::visibility::export::FlowLog::start(&fl, std::sync::Arc::new(plane.names())).unwrap();
        let mut h = PolicyHandler::new(plane.reader(), PipelineConfig::default(), ports, Some(log.sender()), pmd::Eal::tsc_hz());
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::new(RouteStats::default());
        let (s2, st2) = (stop.clone(), st.clone());
        let t = std::thread::spawn(move || {
            let rxqs = [RxQueue { port: id0, queue: 0 }];
            let outs = [Output { port: id0, queue: 0 }, Output { port: id1, queue: 0 }];
            let claim = Claim::new(&rxqs, &outs).unwrap();
            pmd::route::run(&claim, &mut h, 32, &s2, &st2);
            h
        });
        let t0 = Instant::now();
        while st.rx_packets.load(Ordering::Relaxed) < frames.len() as u64 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::SeqCst);
        let h = t.join().unwrap();
        p0.stop().unwrap();
        p1.stop().unwrap();
        drop((p0, p1)); // close: flush the pcaps
        assert_eq!(st.rx_packets.load(Ordering::Relaxed), frames.len() as u64);
        assert_eq!(st.dropped.load(Ordering::Relaxed), 2);
        let ps = h.pipeline_stats();
        assert_eq!(ps.drop_policy_ingress, 2, "{ps:?}");
        assert!(ps.emc_hit >= 15, "the second burst's train hit the cache: {ps:?}");
        assert_eq!(h.stats.arp_replied, 1);
        assert_eq!(h.stats.nd_replied, 1);

        let out1 = pmd::pcap::read(&o1).unwrap();
        assert_eq!(out1.len(), 3 + TRAIN, "api and db flows leave on their port");
        for f in &out1[..2] {
            assert_eq!(f[0..6], [2, 0, 0, 0, 0, 2], "destination MAC rewritten to api's");
            assert_eq!(f[6..], frames[0][6..], "the rest of the frame unchanged");
        }
        for f in &out1[3..] {
            assert_eq!(f[0..6], [2, 0, 0, 0, 0, 2], "the train's MACs rewritten too");
            assert_eq!(f[6..], frames[frames.len() - 1][6..]);
        }
        assert_eq!(out1[2][0..6], [2, 0, 0, 0, 0, 3]);
        let out0 = pmd::pcap::read(&o0).unwrap();
        assert_eq!(out0.len(), 4, "the ARP reply, the uplink flow, the neighbour advertisement, api's SYN-ACK");
        let na = &out0[2];
        assert_eq!(na[54], 136, "a neighbour advertisement");
        assert_eq!(&na[0..6], &[2, 0xaa, 0, 0, 0, 1], "to the solicitor");
        assert_eq!(&na[6..12], &[2, 0, 0, 0, 0, 2], "from api's MAC");
        assert_eq!(&na[22..38], &"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets(), "from the target address");
        assert_eq!(&na[38..54], &"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!((na[78], na[79]), (2, 1), "target link-layer address option");
        assert_eq!(&na[80..86], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(icmp6_residue(na), 0, "valid ICMPv6 checksum");
        let reply = &out0[0];
        assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
        assert_eq!(&reply[22..28], &[2, 0, 0, 0, 0, 2], "with api's MAC");
        assert_eq!(&reply[28..32], &API.to_be_bytes());
        assert_eq!(&reply[0..6], &[2, 0xaa, 0, 0, 0, 1], "to the requester");
        assert_eq!(out0[1][0..6], uplink_mac);
        // Flow records: the audit-mode policy would deny web -> api (forwarded
        // all the same, above); the enforced denies name their rule.
        log.stop();
        let json = std::fs::read_to_string(dir.join("flows.jsonl")).unwrap();
        let web_api = json.lines().find(|l| l.contains("\"ip\":\"10.1.0.2\",\"port\":8080") && l.contains("\"workload\":\"prod/web\"")).unwrap_or_else(|| panic!("{json}"));
        assert!(web_api.contains("\"verdict\":\"audit-deny\"") && web_api.contains("\"policy\":\"prod/audit-api\""), "{web_api}");
        let api_db = json.lines().find(|l| l.contains("\"port\":5432") && l.contains("\"workload\":\"prod/api\"")).unwrap();
        assert!(api_db.contains("\"verdict\":\"allow\"") && api_db.contains("\"policy\":\"prod/db\""), "{api_db}");
        assert_eq!(json.lines().filter(|l| l.contains("\"verdict\":\"deny\"")).count(), 2, "{json}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A flow's whole life in records, through real DPDK ring ports, the
    /// policy engine and the exporter (JSON lines, and IPFIX to nfdump's
    /// nfcapd): TCP ended by FINs and by a reset, UDP with periodic records
    /// then its timeout, a denied flow counted and ended, a connection cut by
    /// a quarantine; counts of both directions; hits per policy.
    #[test]
    fn flow_records_follow_flows_to_their_end_over_ring_ports() {
        use crate::visibility::ipfix::nfcapd::{field, records, Nfcapd};
        use flowtable::parse::l4::tcp_flags::{ACK, FIN, PSH, RST, SYN};
        use pmd::RingTap;
        const MS: u64 = 1_000_000;
        let dir = testing::scratch("flow-records");
        let pool = testing::pool();
        let conf = PortConf { rxq: 1, txq: 1, rxd: 256, txd: 256, promiscuous: false };
        let taps = [RingTap::create("bhfr0").unwrap(), RingTap::create("bhfr1").unwrap()];
        let mut ports: Vec<Port> = taps.iter().map(|t| Port::open(t.device(), conf, pool.clone()).unwrap()).collect();
        for p in &mut ports {
            p.start().unwrap();
        }
        let (id0, id1) = (ports[0].id(), ports[1].id());
        std::fs::write(
            dir.join("model.toml"),
            format!(
                "[[namespaces]]\nname = \"prod\"\n\
                 [[workloads]]\nname = \"web\"\nnamespace = \"prod\"\nlabels = {{ app = \"web\" }}\naddresses = [\"10.1.0.1\"]\nport = {id0}\n\
                 [[workloads]]\nname = \"api\"\nnamespace = \"prod\"\nlabels = {{ app = \"api\" }}\naddresses = [\"10.1.0.2\"]\nmac = \"02:00:00:00:00:02\"\nport = {id1}\n\
                 [[workloads]]\nname = \"db\"\nnamespace = \"prod\"\nlabels = {{ app = \"db\" }}\naddresses = [\"10.1.0.3\"]\nport = {id0}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("policy.toml"),
            "[[policy]]\nname = \"api\"\nnamespace = \"prod\"\nselector = \"app=api\"\n  [[policy.ingress]]\n  from = [{ selector = \"app=web\" }]\n  ports = [\"8080/tcp\", \"5353/udp\"]\n",
        )
        .unwrap();
        let model = control::Model::load(&dir.join("model.toml")).unwrap();
        let set = control::commands::load_policies(&[dir.join("policy.toml")]).unwrap();
        let mut plane = PolicyPlane::new(model, set, None).unwrap();
        let max = usize::from(id0.max(id1)) + 1;
        let mut out_of_port = vec![DROP; max];
        out_of_port[id0 as usize] = 0;
        out_of_port[id1 as usize] = 1;
        let map = PortMap { out_of_port, mac_of_port: vec![[2, 0, 0, 0, 0, 0xee]; max] };
        let nf = Nfcapd::start("dataplane");
        let fl = crate::visibility::export::FlowLogConfig { json: Some(dir.join("flows.jsonl")), ipfix: Some(nf.addr), queue: 1024, ..Default::default() };
        let mut log = crate::visibility::export::FlowLog::start(&fl, Arc::new(plane.names())).unwrap();
        // Short timeouts and a 100 ms export interval (nanoseconds here).
        let mut cfg = PipelineConfig { report_interval: 100 * MS, denied_flows: 256, denied_idle: 400 * MS, ..Default::default() };
        cfg.ct.capacity = 1024;
        let t = &mut cfg.ct.timeouts;
        (t.tcp_fin_wait, t.tcp_time_wait, t.tcp_close, t.udp_new, t.udp_replied) = (300 * MS, 300 * MS, 300 * MS, 400 * MS, 400 * MS);
        let mut h = PolicyHandler::new(plane.reader(), cfg, map, Some(log.sender()), pmd::Eal::tsc_hz());
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::new(RouteStats::default());
        let (s2, st2) = (stop.clone(), st.clone());
        let th = std::thread::spawn(move || {
            let rxqs = [RxQueue { port: id0, queue: 0 }, RxQueue { port: id1, queue: 0 }];
            let outs = [Output { port: id0, queue: 0 }, Output { port: id1, queue: 0 }];
            let claim = Claim::new(&rxqs, &outs).unwrap();
            pmd::route::run(&claim, &mut h, 32, &s2, &st2);
            h.finish();
            h
        });
        // One frame at a time, in order: each is taken by the lcore before the next.
        let mut sent = 0u64;
        let mut send = |tap: usize, f: &[u8]| {
            assert_eq!(taps[tap].inject(&pool, &[f]), 1);
            sent += 1;
            let t0 = Instant::now();
            while st.rx_packets.load(Ordering::Relaxed) < sent {
                assert!(t0.elapsed() < Duration::from_secs(10), "frame {sent} not received");
                std::thread::yield_now();
            }
            f.len() as u64
        };
        let tcpf = |src: u32, dst: u32, sport: u16, dport: u16, flags: u8, payload: usize| {
            let mut s = Spec::new(v4_mapped(src), v4_mapped(dst), L4::Tcp { sport, dport, flags });
            s.payload = payload;
            s.build()
        };
        let udpf = |src: u32, dst: u32, sport: u16, dport: u16| Spec::new(v4_mapped(src), v4_mapped(dst), L4::Udp { sport, dport }).build();
        // web:40001 -> api:8080, closed with FINs: 5 packets out, 3 back.
        let (mut fin_o, mut fin_r) = (0, 0);
        fin_o += send(0, &tcpf(WEB, API, 40001, 8080, SYN, 0));
        fin_r += send(1, &tcpf(API, WEB, 8080, 40001, SYN | ACK, 0));
        fin_o += send(0, &tcpf(WEB, API, 40001, 8080, ACK, 0));
        fin_o += send(0, &tcpf(WEB, API, 40001, 8080, ACK | PSH, 100));
        fin_r += send(1, &tcpf(API, WEB, 8080, 40001, ACK | PSH, 200));
        fin_o += send(0, &tcpf(WEB, API, 40001, 8080, FIN | ACK, 0));
        fin_r += send(1, &tcpf(API, WEB, 8080, 40001, FIN | ACK, 0));
        fin_o += send(0, &tcpf(WEB, API, 40001, 8080, ACK, 0));
        // web:40002 -> api:8080, reset by api.
        let rst_o = send(0, &tcpf(WEB, API, 40002, 8080, SYN, 0));
        let rst_r = send(1, &tcpf(API, WEB, 8080, 40002, RST | ACK, 0));
        // db:6000 -> api:8080, denied (api takes web only), three tries.
        let mut den = 0;
        for _ in 0..3 {
            den += send(0, &tcpf(DB, API, 6000, 8080, SYN, 0));
        }
        // web:5000 -> api:5353 over ~500 ms: 8 datagrams, 4 answers.
        let (mut udp_o, mut udp_r) = (0, 0);
        for i in 0..8 {
            udp_o += send(0, &udpf(WEB, API, 5000, 5353));
            if i % 2 == 0 {
                udp_r += send(1, &udpf(API, WEB, 5353, 5000));
            }
            std::thread::sleep(Duration::from_millis(60));
        }
        // Wait for the end records so far (timeouts above: a second at
        // most), so that the denied flow the quarantine starts below is
        // still idle-young (400 ms) when the lcore stops and flushes it.
        let json_path = dir.join("flows.jsonl");
        let recs = |kind: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(&json_path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|r| r["kind"] == kind)
                .collect()
        };
        let by_port = |v: &[serde_json::Value], sport: u16| -> Vec<serde_json::Value> { v.iter().filter(|r| r["src"]["port"] == sport).cloned().collect() };
        let wait_ends = |ports: &[u16]| {
            let t0 = Instant::now();
            while ports.iter().any(|&p| by_port(&recs("end"), p).is_empty()) {
                assert!(t0.elapsed() < Duration::from_secs(20), "end records missing: {:?}", recs("end"));
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_ends(&[40001, 40002, 6000, 5000]);
        // web:40003 -> api:8080 established, then api is quarantined.
        let q_o = send(0, &tcpf(WEB, API, 40003, 8080, SYN, 0)) + send(0, &tcpf(WEB, API, 40003, 8080, ACK, 0));
        let q_r = send(1, &tcpf(API, WEB, 8080, 40003, SYN | ACK, 0));
        plane.quarantine("prod/api", true).unwrap();
        send(0, &tcpf(WEB, API, 40003, 8080, ACK | PSH, 50));
        wait_ends(&[40003]);
        stop.store(true, Ordering::SeqCst);
        let h = th.join().unwrap();
        log.stop();
        for p in &mut ports {
            p.stop().unwrap();
        }
        drop(ports);
        drop(taps);
        let ipfix = nf.stop();

        let (ends, starts, periodic) = (recs("end"), recs("start"), recs("periodic"));
        let one = |v: &[serde_json::Value], sport: u16| -> serde_json::Value {
            let m = by_port(v, sport);
            assert_eq!(m.len(), 1, "one record for :{sport}: {m:?}");
            m[0].clone()
        };
        let counts = |r: &serde_json::Value| (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap(), r["reply_packets"].as_u64().unwrap(), r["reply_bytes"].as_u64().unwrap());
        let fin = one(&ends, 40001);
        assert_eq!((fin["end_reason"].as_str(), fin["verdict"].as_str(), fin["policy"].as_str()), (Some("fin"), Some("allow"), Some("prod/api")), "{fin}");
        assert_eq!(counts(&fin), (5, fin_o, 3, fin_r), "{fin}");
        assert_eq!(fin["src"]["workload"], "prod/web");
        let rst = one(&ends, 40002);
        assert_eq!((rst["end_reason"].as_str(), counts(&rst)), (Some("rst"), (1, rst_o, 1, rst_r)), "{rst}");
        let udp = one(&ends, 5000);
        assert_eq!((udp["end_reason"].as_str(), counts(&udp)), (Some("timeout"), (8, udp_o, 4, udp_r)), "{udp}");
        let udp_p = by_port(&periodic, 5000);
        assert!(!udp_p.is_empty(), "periodic records while it lived: {periodic:?}");
        assert!(udp_p.windows(2).all(|w| w[0]["packets"].as_u64() <= w[1]["packets"].as_u64()), "counters grow: {udp_p:?}");
        assert!(udp_p[0]["packets"].as_u64().unwrap() < 8, "the first while it sent: {udp_p:?}");
        let den_s = one(&starts, 6000);
        assert_eq!(den_s["verdict"], "deny", "{den_s}");
        let den_e = one(&ends, 6000);
        assert_eq!((den_e["verdict"].as_str(), den_e["end_reason"].as_str(), counts(&den_e)), (Some("deny"), Some("timeout"), (3, den, 0, 0)), "{den_e}");
        let q = by_port(&ends, 40003);
        assert_eq!(q.len(), 2, "{q:?}");
        let cut = &q[0];
        assert_eq!((cut["end_reason"].as_str(), cut["verdict"].as_str(), counts(cut)), (Some("cut"), Some("allow"), (2, q_o, 1, q_r)), "{cut}");
        // The packet after the cut starts a denied flow, named by the
        // quarantine; it ends when the lcore stops (flush).
        let after = by_port(&starts, 40003).into_iter().find(|r| r["verdict"] == "deny").unwrap_or_else(|| panic!("{starts:?}"));
        assert_eq!(after["policy"], "quarantine", "{after}");
        assert_eq!((q[1]["end_reason"].as_str(), q[1]["verdict"].as_str(), q[1]["packets"].as_u64()), (Some("flush"), Some("deny"), Some(1)), "{q:?}");
        assert_eq!(h.stats.events_lost, 0);

        // Hits per policy: the four allowed connections, every packet both ways.
        let hits = log.policy_hits();
        let allow = hits.iter().find(|(p, v, _)| p == "prod/api" && *v == "allow").unwrap_or_else(|| panic!("{hits:?}")).2;
        assert_eq!(allow.flows, 4, "{hits:?}");
        assert_eq!(allow.packets, 8 + 2 + 12 + 3, "{hits:?}");
        assert_eq!(allow.bytes, fin_o + fin_r + rst_o + rst_r + udp_o + udp_r + q_o + q_r, "{hits:?}");

        // IPFIX: the deltas of a flow's records add up to its totals, both ways.
        let sum = |sport: &str, f: &str| -> u64 {
            records(&ipfix).into_iter().filter(|r| field(r, "src port") == sport).map(|r| field(r, f).parse::<u64>().unwrap_or(0)).sum()
        };
        assert_eq!((sum("40001", "in packets"), sum("40001", "out packets")), (5, 3), "{ipfix}");
        assert_eq!((sum("40001", "in bytes"), sum("40001", "out bytes")), (fin_o, fin_r), "{ipfix}");
        assert_eq!((sum("5000", "in packets"), sum("5000", "out packets")), (8, 4), "{ipfix}");
        assert_eq!(sum("6000", "in packets"), 3, "{ipfix}");
        let fin_end = records(&ipfix).into_iter().find(|r| field(r, "src port") == "40001" && field(r, "end reason").contains("end of Flow")).unwrap_or_else(|| panic!("{ipfix}"));
        assert!(!fin_end.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
