//! Verdicts: what the pipeline decides for a packet, and the small `Copy`
//! value the exact-match cache keeps per flow.

use crate::conntrack::{CtDir, CtRef};
use crate::parse::Malformed;

/// Why a packet was dropped. Each reason is a `drop_<name>` counter in
/// [`crate::stats::Stats`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// The parser refused the frame.
    Malformed(Malformed),
    /// Neither IP nor ARP.
    NonIp,
    /// The source's egress policy denied it.
    PolicyEgress,
    /// The destination's ingress policy denied it.
    PolicyIngress,
    /// No output port for the destination address.
    NoRoute,
    /// Conntrack had no room for a new connection (eviction disabled or impossible).
    CtFull,
}

impl DropReason {
    /// The counter name without the `drop_` prefix.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(m) => m.name(),
            DropReason::NonIp => "non_ip",
            DropReason::PolicyEgress => "policy_egress",
            DropReason::PolicyIngress => "policy_ingress",
            DropReason::NoRoute => "no_route",
            DropReason::CtFull => "ct_full",
        }
    }
}

/// What happens to a packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Fate {
    /// Transmit on this port.
    Forward(u16),
    /// Drop and count.
    Drop(DropReason),
    /// An ARP packet: hand it to the switch's ARP responder.
    Arp,
}

impl Default for Fate {
    fn default() -> Self {
        Fate::Drop(DropReason::NonIp)
    }
}

/// Per-packet flag bits of a [`PacketVerdict`].
pub mod vflags {
    /// First packet of a flow decided by policy (a new connection or a
    /// policy drop): write a flow record with the deciding rule.
    pub const LOG: u8 = 1;
    /// Selected by 1-in-N sampling for the flow log.
    pub const SAMPLE: u8 = 2;
}

/// The verdict for one packet of a burst.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PacketVerdict {
    /// Forward, drop or ARP.
    pub fate: Fate,
    /// [`vflags`] bits.
    pub flags: u8,
    /// Cookie of the deciding rule (0: a default or a non-policy reason).
    /// A drop names the denying rule; an allow names the ingress rule, or the
    /// egress rule when ingress was decided by default.
    pub cookie: u64,
}

/// What the exact-match cache keeps per flow: small and `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowVerdict {
    /// Forward or drop (never [`Fate::Arp`]: ARP is not cached).
    pub fate: Fate,
    /// The connection this flow belongs to and which side it is; the hit
    /// path updates it directly (no conntrack hash lookup). For a policy
    /// drop: its entry in the denied-flow table (counted there the same way).
    pub ct: Option<(CtRef, CtDir)>,
    /// Cookie of the deciding rule (see [`PacketVerdict::cookie`]).
    pub cookie: u64,
}
