//! Ethernet II frame view.

use super::{be16, Malformed};

/// Length of the Ethernet header (no tags).
pub const HEADER_LEN: usize = 14;

/// Well-known ethertypes.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still sent by some switches.
    pub const QINQ_OLD: u16 = 0x9100;
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// A read (and, over a mutable buffer, write) view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        EthernetFrame { buf }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let f = Self::new_unchecked(buf);
        f.check_len()?;
        Ok(f)
    }

    /// Ensures the header is present ([`Malformed::Runt`] otherwise).
    pub fn check_len(&self) -> Result<(), Malformed> {
        if self.buf.as_ref().len() < HEADER_LEN {
            Err(Malformed::Runt)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        a
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        a
    }

    /// The ethertype (or the first tag's TPID on a tagged frame).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a)
    }
    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a)
    }
    /// Sets the ethertype.
    pub fn set_ethertype(&mut self, t: u16) {
        self.buf.as_mut()[field::ETHERTYPE..field::ETHERTYPE + 2].copy_from_slice(&t.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FRAME: [u8; 14] = [
        0x02, 0, 0, 0, 0, 0x02, // dst
        0x02, 0, 0, 0, 0, 0x01, // src
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn fields_and_runt() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert!(f.payload().is_empty());
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]).unwrap_err(), Malformed::Runt);
        let mut buf = FRAME;
        let mut m = EthernetFrame::new_unchecked(&mut buf[..]);
        m.set_ethertype(ethertype::IPV6);
        m.set_src_addr([9; 6]);
        assert_eq!(m.ethertype(), ethertype::IPV6);
        assert_eq!(m.src_addr(), [9; 6]);
    }
}
