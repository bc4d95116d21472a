//! Verdicts: what the pipeline decides for a packet, and the small `Copy`
//! value the exact-match cache keeps per flow.

use crate::conntrack::{CtDir, CtRef};
use crate::emc::CacheValue;
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

impl DropReason {
    /// Every reason as its own number below 0x200 (the cache packs it).
    #[inline(always)]
    const fn code(self) -> u16 {
        match self {
            DropReason::Malformed(m) => m as u16,
            DropReason::NonIp => 0x100,
            DropReason::PolicyEgress => 0x101,
            DropReason::PolicyIngress => 0x102,
            DropReason::NoRoute => 0x103,
            DropReason::CtFull => 0x104,
        }
    }

    /// The reason of [`DropReason::code`] `c` (`NonIp` for a number no
    /// reason has).
    #[inline(always)]
    fn from_code(c: u16) -> Self {
        match c {
            0x101 => DropReason::PolicyEgress,
            0x102 => DropReason::PolicyIngress,
            0x103 => DropReason::NoRoute,
            0x104 => DropReason::CtFull,
            c if c < 0x100 => Malformed::ALL.get(usize::from(c)).map_or(DropReason::NonIp, |&m| DropReason::Malformed(m)),
            _ => DropReason::NonIp,
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

/// What the exact-match cache keeps per flow: small and `Copy`, and packed
/// into 18.5 bytes of a cache line there ([`CacheValue`]).
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

/// The 20 bits: the port (forward) or the [`DropReason::code`] (drop) in
/// bits 0..16, the fate's kind in 16..18, a connection in bit 18 and its
/// direction in bit 19. The 128: the connection handle, then the cookie.
impl CacheValue for FlowVerdict {
    #[inline(always)]
    fn pack(&self) -> (u32, u128) {
        let fate = match self.fate {
            Fate::Forward(p) => u32::from(p),
            Fate::Drop(r) => 1 << 16 | u32::from(r.code()),
            Fate::Arp => 2 << 16,
        };
        let (ct, handle) = match self.ct {
            Some((r, dir)) => (1 << 18 | u32::from(dir == CtDir::Reply) << 19, r.to_bits()),
            None => (0, 0),
        };
        (fate | ct, u128::from(handle) | u128::from(self.cookie) << 64)
    }

    #[inline(always)]
    fn unpack(lo: u32, hi: u128) -> Self {
        let fate = match lo >> 16 & 3 {
            0 => Fate::Forward(lo as u16),
            1 => Fate::Drop(DropReason::from_code(lo as u16)),
            _ => Fate::Arp,
        };
        let dir = if lo & 1 << 19 != 0 { CtDir::Reply } else { CtDir::Orig };
        let ct = (lo & 1 << 18 != 0).then(|| (CtRef::from_bits(hi as u64), dir));
        FlowVerdict { fate, ct, cookie: (hi >> 64) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_codes_that_read_back() {
        let mut all: Vec<DropReason> = Malformed::ALL.iter().map(|&m| DropReason::Malformed(m)).collect();
        all.extend([
            DropReason::NonIp,
            DropReason::PolicyEgress,
            DropReason::PolicyIngress,
            DropReason::NoRoute,
            DropReason::CtFull,
        ]);
        let mut codes: Vec<u16> = all.iter().map(|r| r.code()).collect();
        for (r, &c) in all.iter().zip(&codes) {
            assert_eq!(DropReason::from_code(c), *r, "{r:?}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
    }

    #[test]
    fn flow_verdicts_pack_and_unpack_alike() {
        let refs = [CtRef::from_bits(0), CtRef::from_bits(7 | 3 << 32), CtRef::from_bits(u64::MAX)];
        let fates = [
            Fate::Forward(0),
            Fate::Forward(u16::MAX),
            Fate::Drop(DropReason::PolicyIngress),
            Fate::Drop(DropReason::Malformed(Malformed::BadFragment)),
            Fate::Drop(DropReason::CtFull),
            Fate::Arp,
        ];
        for fate in fates {
            for ct in [None, Some((refs[1], CtDir::Orig)), Some((refs[0], CtDir::Reply)), Some((refs[2], CtDir::Reply))] {
                for cookie in [0, 0x8000_0001_0002_0003, u64::MAX] {
                    let v = FlowVerdict { fate, ct, cookie };
                    let (lo, hi) = v.pack();
                    assert_eq!(lo >> 20, 0, "20 bits");
                    assert_eq!(FlowVerdict::unpack(lo, hi), v);
                }
            }
        }
    }
}
