//! Per-lcore data-path counters: plain `u64` fields, owned by the lcore
//! (`&mut`, no atomics). Control reads copies (`show pmd stats`) and sums
//! them with [`Stats::merge`].

use crate::act::DropReason;
use crate::parse::Malformed;

macro_rules! counters {
    ($($(#[doc = $doc:expr])+ $name:ident,)+) => {
        /// Per-lcore counters. Field names are the counter names.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        impl Stats {
            /// Counter names, in field order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            /// Counter values, in [`Stats::NAMES`] order.
            pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
                [$(self.$name),+].into_iter()
            }

            /// Adds every counter of `o` to `self` (aggregating lcores).
            pub fn merge(&mut self, o: &Stats) {
                $(self.$name += o.$name;)+
            }
        }
    };
}

counters! {
    /// Packets received (every packet handed to the pipeline).
    rx_packets,
    /// Bytes received.
    rx_bytes,
    /// ARP packets handed to the ARP responder.
    arp,
    /// Exact-match cache hits with the current generation (and a live connection).
    emc_hit,
    /// Exact-match cache misses (absent, older generation, or connection gone).
    emc_miss,
    /// Entries written into the exact-match cache.
    emc_insert,
    /// Policy evaluations (both directions through the tiers).
    cls_lookup,
    /// Conntrack lookups on the miss path that found a connection.
    ct_hit,
    /// Conntrack lookups on the miss path that found none.
    ct_miss,
    /// Connections created.
    ct_created,
    /// Cached connection handles found stale (expired, evicted, other echo id).
    ct_stale,
    /// Connections of an older generation re-evaluated and still allowed (or kept as established).
    ct_revalidated,
    /// Connections of an older generation the new policy denies (removed).
    ct_revoked,
    /// Packets forwarded.
    forwarded,
    /// Packets flagged for a flow record (LOG).
    logged,
    /// Denied flows started in the denied-flow table (each then counted there).
    denied_flows,
    /// Denied flows the full denied-flow table could not take: denied from the
    /// cache as usual, their packets not counted (one start record each).
    denied_uncounted,
    /// Flow notes (end, periodic) the full note buffer could not take.
    flow_notes_lost,
    /// Packets sampled (SAMPLE).
    sampled,
    /// Dropped: shorter than an Ethernet header.
    drop_runt,
    /// Dropped: VLAN tag cut short.
    drop_truncated_vlan,
    /// Dropped: more than two VLAN tags.
    drop_too_many_vlans,
    /// Dropped: bad ARP.
    drop_bad_arp,
    /// Dropped: IP header cut short.
    drop_truncated_ip,
    /// Dropped: IP version does not match the ethertype.
    drop_bad_version,
    /// Dropped: bad IPv4 IHL.
    drop_bad_ihl,
    /// Dropped: bad IPv4 total length.
    drop_bad_total_length,
    /// Dropped: bad IPv6 payload length.
    drop_bad_payload_length,
    /// Dropped: IPv6 extension header cut short.
    drop_truncated_ext_header,
    /// Dropped: too many IPv6 extension headers.
    drop_too_many_ext_headers,
    /// Dropped: hop-by-hop header not first.
    drop_misplaced_hop_by_hop,
    /// Dropped: L4 header cut short.
    drop_truncated_l4,
    /// Dropped: TCP data offset below 5.
    drop_bad_tcp_offset,
    /// Dropped: overlapping TCP fragment (RFC 1858).
    drop_bad_fragment,
    /// Dropped: neither IP nor ARP.
    drop_non_ip,
    /// Dropped: denied by the source's egress policy.
    drop_policy_egress,
    /// Dropped: denied by the destination's ingress policy.
    drop_policy_ingress,
    /// Dropped: no output port for the destination.
    drop_no_route,
    /// Dropped: conntrack full.
    drop_ct_full,
}

impl Stats {
    /// Counts one drop under its reason.
    #[inline]
    pub fn count_drop(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Malformed(m) => match m {
                Malformed::Runt => &mut self.drop_runt,
                Malformed::TruncatedVlan => &mut self.drop_truncated_vlan,
                Malformed::TooManyVlans => &mut self.drop_too_many_vlans,
                Malformed::BadArp => &mut self.drop_bad_arp,
                Malformed::TruncatedIp => &mut self.drop_truncated_ip,
                Malformed::BadVersion => &mut self.drop_bad_version,
                Malformed::BadIhl => &mut self.drop_bad_ihl,
                Malformed::BadTotalLength => &mut self.drop_bad_total_length,
                Malformed::BadPayloadLength => &mut self.drop_bad_payload_length,
                Malformed::TruncatedExtHeader => &mut self.drop_truncated_ext_header,
                Malformed::TooManyExtHeaders => &mut self.drop_too_many_ext_headers,
                Malformed::MisplacedHopByHop => &mut self.drop_misplaced_hop_by_hop,
                Malformed::TruncatedL4 => &mut self.drop_truncated_l4,
                Malformed::BadTcpOffset => &mut self.drop_bad_tcp_offset,
                Malformed::BadFragment => &mut self.drop_bad_fragment,
            },
            DropReason::NonIp => &mut self.drop_non_ip,
            DropReason::PolicyEgress => &mut self.drop_policy_egress,
            DropReason::PolicyIngress => &mut self.drop_policy_ingress,
            DropReason::NoRoute => &mut self.drop_no_route,
            DropReason::CtFull => &mut self.drop_ct_full,
        };
        *c += 1;
    }

    /// `(name, value)` for every counter.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::NAMES.iter().copied().zip(self.values())
    }

    /// Sum of all `drop_*` counters.
    pub fn dropped(&self) -> u64 {
        self.iter().filter(|(n, _)| n.starts_with("drop_")).map(|(_, v)| v).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_has_its_named_counter() {
        let mut reasons: Vec<DropReason> = Malformed::ALL.iter().map(|&m| DropReason::Malformed(m)).collect();
        reasons.extend([
            DropReason::NonIp,
            DropReason::PolicyEgress,
            DropReason::PolicyIngress,
            DropReason::NoRoute,
            DropReason::CtFull,
        ]);
        for r in reasons {
            let mut s = Stats::default();
            s.count_drop(r);
            let name = format!("drop_{}", r.name());
            let hit: Vec<_> = s.iter().filter(|(_, v)| *v != 0).collect();
            assert_eq!(hit, vec![(Stats::NAMES.iter().find(|n| **n == name).copied().unwrap(), 1)]);
            assert_eq!(s.dropped(), 1);
        }
        let mut a = Stats { rx_packets: 2, ..Default::default() };
        a.merge(&Stats { rx_packets: 3, emc_hit: 1, ..Default::default() });
        assert_eq!((a.rx_packets, a.emc_hit), (5, 1));
    }
}
