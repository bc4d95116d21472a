//! Connection tracking: one entry per connection for both directions,
//! per lcore (symmetric RSS or the symmetric software hash keeps both
//! directions of a flow on one lcore), owned through `&mut`.
//!
//! ```text
//! key -> symmetric hash -> two buckets of 8 signatures -> slot { connection, tag }
//! match: same protocol and VLAN, and the packet's (src, sport, dst, dport)
//!        equal to the initiator's (Orig) or swapped (Reply); ICMP echo pairs
//!        request and reply by echo identifier instead of ports.
//! ```
//!
//! Only connections the policy allowed are tracked; the pipeline lets the
//! Reply direction of a tracked connection through (stateful). Each entry
//! records the generation of the decision: after a policy change the
//! pipeline re-evaluates the initiator's key before using it (or keeps it
//! when it is established and `keep_established` is set).
//!
//! Time is always passed in (`now`: ns by default, or any tick as long as the
//! [`CtTimeouts`] use the same unit); nothing here reads a clock.
//!
//! Capacity is bounded: a new connection takes an empty way of its two
//! buckets (its primary, then its alternate: the primary flipped by the
//! hash's high half), else an expired one (`expired`), else, with
//! `evict_live`, the least recently seen of them preferring connections that
//! are not established (`evicted`), else it is refused (`full`). With one
//! bucket per connection, a table a third full had buckets of more than 8
//! and evicted live connections there for ever (`bench fwd --stateful`,
//! 100,000 flows in 262,144 slots: 1.1 % of the packets took the slow path).
//! [`Conntrack::sweep`] reclaims expired entries a few slots at a time off
//! the per-packet path.
//! A cached handle ([`CtRef`]) names a slot and its fill count (`tag`): a
//! handle to a reclaimed or reused slot is refused, never misapplied.
//!
//! Flow notes: every connection that leaves the table (expiry, eviction,
//! removal, flush) leaves a [`CtNote`] with its counters and an
//! [`EndReason`] in a fixed-size buffer that the owner drains
//! ([`Conntrack::drain_notes`]); [`Conntrack::report_step`] adds periodic
//! notes for live connections. The buffer never grows: a note it cannot take
//! is counted (`notes_lost`), and a periodic note waits for the next walk.

use crate::key::FlowKey;
use crate::parse::{flow_hash, l4};
use l4::tcp_flags::{ACK, FIN, RST, SYN};

/// Ways per bucket.
pub const WAYS: usize = 8;

/// A handle to a tracked connection (slot index + fill count of the slot).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CtRef {
    slot: u32,
    tag: u32,
}

impl CtRef {
    /// The handle as one word (the exact-match cache packs it).
    #[inline(always)]
    pub(crate) const fn to_bits(self) -> u64 {
        self.slot as u64 | (self.tag as u64) << 32
    }

    /// The handle [`CtRef::to_bits`] gave `b` for.
    #[inline(always)]
    pub(crate) const fn from_bits(b: u64) -> Self {
        CtRef { slot: b as u32, tag: (b >> 32) as u32 }
    }
}

/// Which side of a connection a packet travels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum CtDir {
    /// From the initiator.
    #[default]
    Orig,
    /// Towards the initiator.
    Reply,
}

/// Connection state. TCP walks the handshake; other protocols are
/// pseudo-connections that are `New` until the first reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CtState {
    /// TCP: SYN seen from the initiator.
    SynSent,
    /// TCP: SYN-ACK seen from the responder.
    SynRecv,
    /// TCP: handshake complete (or picked up mid-stream).
    Established,
    /// TCP: a FIN seen from one side.
    FinWait,
    /// TCP: FINs seen from both sides.
    TimeWait,
    /// TCP: reset.
    Close,
    /// UDP, ICMP echo, other protocols: no reply yet.
    New,
    /// UDP, ICMP echo, other protocols: a reply was seen.
    Replied,
}

/// Why a connection left the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EndReason {
    /// Idle past its state's timeout (UDP, ICMP, other; TCP not closed).
    Timeout,
    /// TCP closed with FINs (reclaimed after FIN_WAIT / TIME_WAIT).
    Fin,
    /// TCP reset (reclaimed after CLOSE).
    Rst,
    /// Evicted to make room for a new connection.
    Evicted,
    /// A policy change denied it (re-decided under a new generation).
    Revoked,
    /// Cut: re-decided because of a quarantine or a link down, and denied.
    Cut,
    /// The table was flushed (or its lcore stopped).
    Flush,
}

impl EndReason {
    /// The name records use.
    pub const fn name(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::Revoked => "revoked",
            EndReason::Cut => "cut",
            EndReason::Flush => "flush",
        }
    }

    /// The reason an expired connection in `state` ended.
    pub fn of_expiry(state: Option<CtState>) -> Self {
        match state {
            Some(CtState::FinWait | CtState::TimeWait) => EndReason::Fin,
            Some(CtState::Close) => EndReason::Rst,
            _ => EndReason::Timeout,
        }
    }
}

impl CtState {
    /// True for states a `keep_established` policy change leaves alone.
    pub fn is_established(self) -> bool {
        matches!(self, CtState::Established | CtState::Replied)
    }
}

/// Per-state timeouts, in the unit of `now`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CtTimeouts {
    /// TCP SynSent.
    pub tcp_syn_sent: u64,
    /// TCP SynRecv.
    pub tcp_syn_recv: u64,
    /// TCP Established.
    pub tcp_established: u64,
    /// TCP FinWait.
    pub tcp_fin_wait: u64,
    /// TCP TimeWait.
    pub tcp_time_wait: u64,
    /// TCP Close (after RST).
    pub tcp_close: u64,
    /// UDP before a reply.
    pub udp_new: u64,
    /// UDP after a reply.
    pub udp_replied: u64,
    /// ICMP echo.
    pub icmp: u64,
    /// Any other protocol.
    pub other: u64,
}

impl CtTimeouts {
    /// The defaults (Linux/Cilium-like) for a clock of `hz` ticks per second:
    /// SYN 60 s, established 6 h, FIN 120 s, TIME_WAIT 120 s, RST 10 s,
    /// UDP 30 s / 180 s, ICMP 30 s, other 600 s.
    pub const fn with_hz(hz: u64) -> Self {
        CtTimeouts {
            tcp_syn_sent: 60 * hz,
            tcp_syn_recv: 60 * hz,
            tcp_established: 6 * 3600 * hz,
            tcp_fin_wait: 120 * hz,
            tcp_time_wait: 120 * hz,
            tcp_close: 10 * hz,
            udp_new: 30 * hz,
            udp_replied: 180 * hz,
            icmp: 30 * hz,
            other: 600 * hz,
        }
    }
}

impl CtTimeouts {
    /// Every timeout, mutable (to change their unit in one loop).
    pub fn all_mut(&mut self) -> [&mut u64; 10] {
        [
            &mut self.tcp_syn_sent,
            &mut self.tcp_syn_recv,
            &mut self.tcp_established,
            &mut self.tcp_fin_wait,
            &mut self.tcp_time_wait,
            &mut self.tcp_close,
            &mut self.udp_new,
            &mut self.udp_replied,
            &mut self.icmp,
            &mut self.other,
        ]
    }

    /// Every timeout.
    pub fn all(mut self) -> [u64; 10] {
        self.all_mut().map(|v| *v)
    }
}

impl Default for CtTimeouts {
    /// Nanoseconds.
    fn default() -> Self {
        Self::with_hz(1_000_000_000)
    }
}

/// Conntrack configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CtConfig {
    /// Maximum connections (rounded up to a power of two, at least [`WAYS`]).
    pub capacity: usize,
    /// Timeouts, in the unit of `now`.
    pub timeouts: CtTimeouts,
    /// On a policy change, keep established connections without re-evaluating them.
    pub keep_established: bool,
    /// When a bucket is full of live connections, evict one (else refuse the new one).
    pub evict_live: bool,
    /// Flow notes held between two drains ([`Conntrack::drain_notes`]); 0: none kept.
    pub notes: usize,
    /// Flows, not connections: only the initiator's direction matches (a
    /// packet the other way is another flow), no TCP states (every entry
    /// is `New`; its timeout is `timeouts.other`). For counting denied flows.
    pub flows_only: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            capacity: 1 << 16,
            timeouts: CtTimeouts::default(),
            keep_established: false,
            evict_live: true,
            notes: 256,
            flows_only: false,
        }
    }
}

/// Conntrack counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CtCounters {
    /// Connections created.
    pub created: u64,
    /// Live connections evicted to make room.
    pub evicted: u64,
    /// Connections reclaimed after their timeout.
    pub expired: u64,
    /// New connections refused for lack of room.
    pub full: u64,
    /// TCP packets that did not fit the state machine (passed, counted).
    pub invalid: u64,
    /// Connections removed by the caller (policy revocation, flush).
    pub removed: u64,
    /// Flow notes written into the buffer.
    pub notes: u64,
    /// End notes the full buffer could not take (counted, not written).
    pub notes_lost: u64,
}

/// One tracked connection, as the control plane sees it (a copy).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Connection {
    /// The initiator's key (identities as resolved when decided; `tcp_flags` 0).
    pub orig: FlowKey,
    /// ICMP echo identifier (0 for other protocols).
    pub echo_id: u16,
    /// State.
    pub state: Option<CtState>,
    /// Generation of the policy decision that admitted it.
    pub gen: u64,
    /// Cookie of the deciding rule.
    pub cookie: u64,
    /// Creation time.
    pub created: u64,
    /// Last packet time.
    pub last_seen: u64,
    /// Expiry time (last_seen + the state's timeout).
    pub expires: u64,
    /// Packets per direction (`[Orig, Reply]`).
    pub packets: [u64; 2],
    /// Bytes per direction (`[Orig, Reply]`).
    pub bytes: [u64; 2],
    /// Packets per direction already reported: the first packet (the start
    /// record), then the totals of the last periodic note.
    pub reported_packets: [u64; 2],
    /// Bytes per direction already reported.
    pub reported_bytes: [u64; 2],
}

/// A flow note: a connection's counters at its end, or periodically while it lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CtNote {
    /// The connection (a copy, counters as of the note).
    pub conn: Connection,
    /// Why it ended; `None` for a periodic note (still live).
    pub end: Option<EndReason>,
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
struct Bucket {
    sig: [u32; WAYS],
}

/// What every packet of a connection reads and writes: one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Hot {
    tag: u32,
    echo_id: u16,
    state: Option<CtState>,
    fin: u8,
    live: bool,
    proto: u8,
    expires: u64,
    last_seen: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
}

/// What only the miss path and the control plane read.
#[derive(Clone, Copy, Debug, Default)]
struct Cold {
    orig: FlowKey,
    gen: u64,
    cookie: u64,
    created: u64,
    /// Reported so far: packets Orig, Reply, bytes Orig, Reply.
    reported: [u64; 4],
    /// When the last note (or the creation) reported it.
    reported_at: u64,
}

/// The connection table of one lcore.
#[derive(Clone, Debug)]
pub struct Conntrack {
    cfg: CtConfig,
    buckets: Box<[Bucket]>,
    hot: Box<[Hot]>,
    cold: Box<[Cold]>,
    mask: usize,
    len: usize,
    cursor: usize,
    report_cursor: usize,
    counters: CtCounters,
    notes: Box<[CtNote]>,
    n_notes: usize,
}

#[inline]
fn is_echo(k: &FlowKey) -> bool {
    let v6 = k.flags & crate::key::flags::V6 != 0;
    let icmp = if v6 { l4::proto::ICMPV6 } else { l4::proto::ICMP };
    k.proto == icmp && k.sport <= 0xff && l4::is_echo(v6, k.sport as u8)
}

/// True when conntrack tracks packets with this key: anything but later
/// fragments (no ports) and ICMP messages other than echo.
#[inline]
pub fn trackable(k: &FlowKey) -> bool {
    if k.flags & crate::key::flags::FRAG_LATER != 0 {
        return false;
    }
    let v6 = k.flags & crate::key::flags::V6 != 0;
    let icmp = if v6 { l4::proto::ICMPV6 } else { l4::proto::ICMP };
    k.proto != icmp || is_echo(k)
}

#[inline]
fn dir_of(o: &FlowKey, conn_echo: u16, k: &FlowKey, echo_id: u16) -> Option<CtDir> {
    if o.proto != k.proto || o.vlan != k.vlan {
        return None;
    }
    if is_echo(k) {
        if conn_echo != echo_id {
            return None;
        }
        if k.src == o.src && k.dst == o.dst {
            return Some(CtDir::Orig);
        }
        return (k.src == o.dst && k.dst == o.src).then_some(CtDir::Reply);
    }
    if k.src == o.src && k.dst == o.dst && k.sport == o.sport && k.dport == o.dport {
        Some(CtDir::Orig)
    } else if k.src == o.dst && k.dst == o.src && k.sport == o.dport && k.dport == o.sport {
        Some(CtDir::Reply)
    } else {
        None
    }
}

/// The TCP state machine: the next state for a packet with `flags` in
/// `dir`, and whether the packet fit (a misfit keeps the state).
/// `fin` holds the FIN-seen bits (1 Orig, 2 Reply).
pub fn tcp_next(st: CtState, fin: &mut u8, dir: CtDir, flags: u8) -> (CtState, bool) {
    use CtState::*;
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    if flags & RST != 0 {
        return (Close, true);
    }
    let bit = if dir == CtDir::Orig { 1 } else { 2 };
    match (st, dir) {
        (SynSent, CtDir::Orig) => (SynSent, syn && !ack),
        (SynSent, CtDir::Reply) if syn => (SynRecv, true),
        (SynSent, CtDir::Reply) => (SynSent, false),
        (SynRecv, CtDir::Orig) if ack && !syn => (Established, true),
        (SynRecv, _) => (SynRecv, syn),
        (Established | FinWait, _) if flags & FIN != 0 => {
            *fin |= bit;
            (if *fin == 3 { TimeWait } else { FinWait }, true)
        }
        (Established | FinWait, _) => (st, !syn || (ack && dir == CtDir::Reply)),
        (TimeWait | Close, CtDir::Orig) if syn && !ack => {
            *fin = 0;
            (SynSent, true) // port reuse: a new handshake on the same tuple
        }
        (TimeWait | Close, _) => (st, !syn),
        (New | Replied, _) => (Established, true),
    }
}

#[inline]
fn timeout(t: &CtTimeouts, st: CtState, proto: u8) -> u64 {
    match st {
        CtState::SynSent => t.tcp_syn_sent,
        CtState::SynRecv => t.tcp_syn_recv,
        CtState::Established => t.tcp_established,
        CtState::FinWait => t.tcp_fin_wait,
        CtState::TimeWait => t.tcp_time_wait,
        CtState::Close => t.tcp_close,
        CtState::New | CtState::Replied => match proto {
            l4::proto::UDP | l4::proto::UDPLITE => {
                if st == CtState::New {
                    t.udp_new
                } else {
                    t.udp_replied
                }
            }
            l4::proto::ICMP | l4::proto::ICMPV6 => t.icmp,
            _ => t.other,
        },
    }
}

impl Conntrack {
    /// An empty table.
    pub fn new(cfg: CtConfig) -> Self {
        let n = cfg.capacity.max(WAYS).next_power_of_two();
        Conntrack {
            cfg,
            buckets: vec![Bucket::default(); n / WAYS].into_boxed_slice(),
            hot: vec![Hot::default(); n].into_boxed_slice(),
            cold: vec![Cold::default(); n].into_boxed_slice(),
            mask: n / WAYS - 1,
            len: 0,
            cursor: 0,
            report_cursor: 0,
            counters: CtCounters::default(),
            notes: vec![CtNote::default(); cfg.notes].into_boxed_slice(),
            n_notes: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CtConfig {
        &self.cfg
    }
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.hot.len()
    }
    /// Connections held (some may have expired but not yet been reclaimed).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The counters.
    pub fn counters(&self) -> CtCounters {
        self.counters
    }
    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * core::mem::size_of::<Bucket>()
            + self.hot.len() * (core::mem::size_of::<Hot>() + core::mem::size_of::<Cold>())
    }

    /// Leaves a note for slot `i`; false (and `notes_lost` counted for an
    /// end note) when the buffer is full.
    fn note(&mut self, i: usize, end: Option<EndReason>) -> bool {
        if self.n_notes == self.notes.len() {
            if end.is_some() {
                self.counters.notes_lost += 1;
            }
            return false;
        }
        self.notes[self.n_notes] = CtNote { conn: self.connection(i), end };
        self.n_notes += 1;
        self.counters.notes += 1;
        true
    }

    /// Takes slot `i` out of the table, leaving an end note.
    fn free(&mut self, i: usize, why: EndReason) {
        self.note(i, Some(why));
        self.buckets[i / WAYS].sig[i % WAYS] = 0;
        self.hot[i].live = false;
        self.len -= 1;
    }

    /// Takes an expired slot out (counted as `expired`).
    fn expire(&mut self, i: usize) {
        self.free(i, EndReason::of_expiry(self.hot[i].state));
        self.counters.expired += 1;
    }

    /// The notes written since the last drain, oldest first.
    pub fn notes(&self) -> &[CtNote] {
        &self.notes[..self.n_notes]
    }

    /// Hands every pending note to `f`, oldest first, and empties the buffer.
    pub fn drain_notes(&mut self, mut f: impl FnMut(&CtNote)) {
        for n in &self.notes[..self.n_notes] {
            f(n);
        }
        self.n_notes = 0;
    }

    /// Walks the next `budget` slots (round robin, its own cursor) and
    /// leaves a periodic note for every live connection that was not
    /// reported for `interval` and saw packets since. Stops early when the
    /// note buffer is full (the rest wait for a later walk: nothing lost).
    /// Returns the notes written.
    pub fn report_step(&mut self, now: u64, interval: u64, budget: usize) -> usize {
        let n = self.hot.len();
        let mut wrote = 0;
        for _ in 0..budget.min(n) {
            let i = self.report_cursor;
            if self.buckets[i / WAYS].sig[i % WAYS] != 0
                && now < self.hot[i].expires
                && now.saturating_sub(self.cold[i].reported_at) >= interval
            {
                let before = self.n_notes;
                if !self.report(i, now) {
                    break;
                }
                wrote += self.n_notes - before;
            }
            self.report_cursor = (i + 1) & (n - 1);
        }
        wrote
    }

    /// Hints the cache to load the line [`Conntrack::update`] touches for
    /// `r` (issued for a whole burst before updating it, so the misses of
    /// large tables overlap). No effect on the table.
    #[inline]
    pub fn prefetch(&self, r: CtRef) {
        if let Some(h) = self.hot.get(r.slot as usize) {
            crate::hint::prefetch(h);
        }
    }

    fn slot_of(&self, r: CtRef) -> Option<usize> {
        let i = r.slot as usize;
        let h = self.hot.get(i)?;
        (h.live && h.tag == r.tag).then_some(i)
    }

    fn connection(&self, i: usize) -> Connection {
        let (h, c) = (&self.hot[i], &self.cold[i]);
        Connection {
            orig: c.orig,
            echo_id: h.echo_id,
            state: h.state,
            gen: c.gen,
            cookie: c.cookie,
            created: c.created,
            last_seen: h.last_seen,
            expires: h.expires,
            packets: h.packets,
            bytes: h.bytes,
            reported_packets: [c.reported[0], c.reported[1]],
            reported_bytes: [c.reported[2], c.reported[3]],
        }
    }

    /// Finds the connection of `key` (with its ICMP `echo_id`); an expired
    /// one is reclaimed and not returned.
    pub fn lookup(&mut self, key: &FlowKey, echo_id: u16, now: u64) -> Option<(CtRef, CtDir)> {
        let h = flow_hash(key, echo_id);
        let sig = h | 1;
        for b in self.buckets_of(h) {
            for w in 0..WAYS {
                if self.buckets[b].sig[w] != sig {
                    continue;
                }
                let i = b * WAYS + w;
                if let Some(d) = dir_of(&self.cold[i].orig, self.hot[i].echo_id, key, echo_id) {
                    if d == CtDir::Reply && self.cfg.flows_only {
                        continue;
                    }
                    if now >= self.hot[i].expires {
                        self.expire(i);
                        return None;
                    }
                    return Some((CtRef { slot: i as u32, tag: self.hot[i].tag }, d));
                }
            }
        }
        None
    }

    /// The buckets a connection of hash `h` may sit in: its primary and its
    /// alternate, as the cache picks them.
    fn buckets_of(&self, h: u32) -> impl Iterator<Item = usize> {
        crate::emc::both_buckets(h, self.mask)
    }

    /// Starts tracking a connection whose first packet (the initiator's) is
    /// `key`, admitted by a decision of generation `gen` (rule `cookie`).
    /// A TCP reset starts nothing (`Ok(None)`). A TCP packet other than SYN is
    /// picked up mid-stream as established (Linux's loose mode). Does not
    /// check for an existing entry: call [`lookup`](Self::lookup) first.
    /// `Err(())` when there is no room (counted as `full`).
    #[allow(clippy::result_unit_err)]
    pub fn create(
        &mut self,
        key: &FlowKey,
        echo_id: u16,
        gen: u64,
        cookie: u64,
        len: u32,
        now: u64,
    ) -> Result<Option<CtRef>, ()> {
        let tcp = key.proto == l4::proto::TCP;
        let f = key.tcp_flags;
        let mut fin = 0;
        let state = if !tcp || self.cfg.flows_only {
            CtState::New
        } else if f & RST != 0 {
            return Ok(None);
        } else if f & SYN != 0 && f & ACK == 0 {
            CtState::SynSent
        } else if f & FIN != 0 {
            fin = 1;
            CtState::FinWait
        } else {
            CtState::Established
        };
        let h = flow_hash(key, echo_id);
        let Some(i) = self.pick_slot(h, now) else {
            self.counters.full += 1;
            return Err(());
        };
        self.buckets[i / WAYS].sig[i % WAYS] = h | 1;
        self.len += 1;
        self.counters.created += 1;
        let mut orig = *key;
        orig.tcp_flags = 0;
        let expires = now.saturating_add(timeout(&self.cfg.timeouts, state, key.proto));
        let tag = self.hot[i].tag.wrapping_add(1);
        self.hot[i] = Hot {
            tag,
            echo_id,
            state: Some(state),
            fin,
            live: true,
            // Flows only: no protocol's state machine or timeouts (0 is no L4 protocol).
            proto: if self.cfg.flows_only { 0 } else { key.proto },
            expires,
            last_seen: now,
            packets: [1, 0],
            bytes: [u64::from(len), 0],
        };
        self.cold[i] = Cold { orig, gen, cookie, created: now, reported: [1, 0, u64::from(len), 0], reported_at: now };
        Ok(Some(CtRef { slot: i as u32, tag }))
    }

    /// A slot for a new connection of hash `h`: an empty way of its two
    /// buckets, else an expired one, else (`evict_live`) the least recently
    /// seen of the two buckets' connections, preferring ones not
    /// established.
    fn pick_slot(&mut self, h: u32, now: u64) -> Option<usize> {
        let slots = || self.buckets_of(h).flat_map(|b| b * WAYS..(b + 1) * WAYS);
        if let Some(i) = slots().find(|&i| self.buckets[i / WAYS].sig[i % WAYS] == 0) {
            return Some(i);
        }
        if let Some(i) = slots().find(|&i| now >= self.hot[i].expires) {
            self.expire(i);
            return Some(i);
        }
        if !self.cfg.evict_live {
            return None;
        }
        let i = slots().min_by_key(|&i| {
            let h = &self.hot[i];
            (h.state == Some(CtState::Established), h.last_seen)
        })?;
        self.free(i, EndReason::Evicted);
        self.counters.evicted += 1;
        Some(i)
    }

    /// Accounts one packet of `len` bytes in `dir` with `tcp_flags` at `now`
    /// on the connection of a cached handle, and returns the new state.
    /// `None` when the handle is stale (slot reclaimed or reused), the echo
    /// identifier differs, or the connection has just expired (reclaimed).
    /// Touches one cache line.
    #[inline]
    pub fn update(&mut self, r: CtRef, dir: CtDir, echo_id: u16, tcp_flags: u8, len: u32, now: u64) -> Option<CtState> {
        let i = self.slot_of(r)?;
        let h = &mut self.hot[i];
        if h.echo_id != echo_id {
            return None;
        }
        if now >= h.expires {
            self.expire(i);
            return None;
        }
        let d = dir as usize;
        h.packets[d] += 1;
        h.bytes[d] += u64::from(len);
        h.last_seen = now;
        let st = h.state.unwrap_or(CtState::New);
        if h.proto == l4::proto::TCP && st == CtState::Established && tcp_flags & (SYN | FIN | RST) == 0 {
            // The common case, straight through: no state machine, and the
            // timeout known (callgrind: 45 -> 42 instructions a call).
            h.expires = now.saturating_add(self.cfg.timeouts.tcp_established);
            return Some(st);
        }
        let next = if h.proto == l4::proto::TCP {
            let (n, ok) = tcp_next(st, &mut h.fin, dir, tcp_flags);
            if !ok {
                self.counters.invalid += 1;
            }
            n
        } else if dir == CtDir::Reply {
            CtState::Replied
        } else {
            st
        };
        h.state = Some(next);
        h.expires = now.saturating_add(timeout(&self.cfg.timeouts, next, h.proto));
        Some(next)
    }

    /// Accounts `packets` more packets totalling `bytes` in `dir` with
    /// `tcp_flags`, each one the same to the state machine as the one
    /// [`update`](Self::update) just accounted at the same `now`, when that
    /// leaves the state as it is (TCP established without SYN, FIN or RST;
    /// any state of a pseudo-connection once updated): the same as as many
    /// further updates, without the work. False, with nothing done,
    /// otherwise (the caller updates packet by packet).
    #[inline]
    pub fn repeat(&mut self, r: CtRef, dir: CtDir, tcp_flags: u8, packets: u64, bytes: u64) -> bool {
        let Some(i) = self.slot_of(r) else { return false };
        let h = &mut self.hot[i];
        let steady = h.proto != l4::proto::TCP || (h.state == Some(CtState::Established) && tcp_flags & (SYN | FIN | RST) == 0);
        if steady {
            let d = dir as usize;
            h.packets[d] += packets;
            h.bytes[d] += bytes;
        }
        steady
    }

    /// A copy of the connection of a handle, if the handle is current.
    pub fn get(&self, r: CtRef) -> Option<Connection> {
        self.slot_of(r).map(|i| self.connection(i))
    }

    /// The generation a connection was last decided under (cheaper than [`get`](Self::get)).
    #[inline]
    pub fn gen_of(&self, r: CtRef) -> Option<u64> {
        self.slot_of(r).map(|i| self.cold[i].gen)
    }

    /// Records that the connection was re-decided (still allowed) under `gen`.
    pub fn restamp(&mut self, r: CtRef, gen: u64, cookie: u64) -> bool {
        match self.slot_of(r) {
            Some(i) => {
                self.cold[i].gen = gen;
                self.cold[i].cookie = cookie;
                true
            }
            None => false,
        }
    }

    /// Stops tracking a connection (counted as `removed`; its end note says
    /// [`EndReason::Revoked`]).
    pub fn remove(&mut self, r: CtRef) -> bool {
        self.remove_as(r, EndReason::Revoked)
    }

    /// Stops tracking a connection (counted as `removed`), saying why in its end note.
    pub fn remove_as(&mut self, r: CtRef, why: EndReason) -> bool {
        match self.slot_of(r) {
            Some(i) => {
                self.free(i, why);
                self.counters.removed += 1;
                true
            }
            None => false,
        }
    }

    /// Reclaims expired connections among the next `budget` slots (round
    /// robin, whole buckets: rounded up to a multiple of [`WAYS`]), returning
    /// how many. Call it often with a small budget.
    pub fn sweep(&mut self, now: u64, budget: usize) -> usize {
        self.sweep_report(now, budget, 0)
    }

    /// [`sweep`](Self::sweep) and, in the same walk (one read of each slot),
    /// a periodic note for every live connection not reported for
    /// `interval` that saw packets since (`interval` 0: none). A full note
    /// buffer defers the periodic note to a later walk (nothing lost).
    /// Returns the connections reclaimed.
    pub fn sweep_report(&mut self, now: u64, budget: usize, interval: u64) -> usize {
        let n = self.hot.len();
        let mut freed = 0;
        // Whole buckets (the cursor stays bucket-aligned): the bucket's
        // signature line is read before any slot's own line, and a bucket with
        // no live slot is passed over at once. A table is mostly empty slots:
        // slot by slot, after every burst, it cost ~5 cycles per packet (vhost
        // bench, perf) before a single connection was looked at.
        for _ in 0..budget.min(n).div_ceil(WAYS) {
            let b = self.cursor / WAYS;
            self.cursor = (self.cursor + WAYS) & (n - 1);
            let sig = self.buckets[b].sig;
            if sig == [0; WAYS] {
                continue;
            }
            for (w, s) in sig.iter().enumerate() {
                if *s == 0 {
                    continue;
                }
                let i = b * WAYS + w;
                if now >= self.hot[i].expires {
                    self.expire(i);
                    freed += 1;
                } else if interval != 0 && now.saturating_sub(self.cold[i].reported_at) >= interval {
                    self.report(i, now);
                }
            }
        }
        freed
    }

    /// A periodic note for live slot `i` if it saw packets since its last
    /// report; false when the buffer had no room (it stays due).
    fn report(&mut self, i: usize, now: u64) -> bool {
        let h = &self.hot[i];
        let counts = [h.packets[0], h.packets[1], h.bytes[0], h.bytes[1]];
        if counts != self.cold[i].reported {
            if !self.note(i, None) {
                return false;
            }
            self.cold[i].reported = counts;
        }
        self.cold[i].reported_at = now;
        true
    }

    /// Forgets every connection (counted as `removed`). End notes go to the
    /// buffer as far as it has room (the rest are counted lost): use
    /// [`flush_with`](Self::flush_with) to see every one.
    pub fn flush(&mut self) {
        for i in 0..self.hot.len() {
            if self.hot[i].live {
                self.note(i, Some(EndReason::Flush));
            }
        }
        self.clear();
    }

    /// Forgets every connection (counted as `removed`), handing `f` the
    /// pending notes and then an end note ([`EndReason::Flush`]) per connection.
    pub fn flush_with(&mut self, mut f: impl FnMut(&CtNote)) {
        self.drain_notes(&mut f);
        for i in 0..self.hot.len() {
            if self.hot[i].live {
                f(&CtNote { conn: self.connection(i), end: Some(EndReason::Flush) });
                self.counters.notes += 1;
            }
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.counters.removed += self.len as u64;
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.hot.iter_mut().for_each(|h| h.live = false);
        self.len = 0;
    }

    /// Every connection held, with its handle (copies).
    pub fn iter(&self) -> impl Iterator<Item = (CtRef, Connection)> + '_ {
        (0..self.hot.len())
            .filter(|&i| self.hot[i].live)
            .map(|i| (CtRef { slot: i as u32, tag: self.hot[i].tag }, self.connection(i)))
    }
}

#[cfg(test)]
mod tests;
