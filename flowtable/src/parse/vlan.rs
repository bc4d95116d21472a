//! 802.1Q / 802.1ad (QinQ) tag view: the 4 bytes after a VLAN TPID
//! (TCI + the encapsulated ethertype).

use super::{be16, Malformed};

/// Length of one tag as it follows the TPID (TCI 2 + ethertype 2).
pub const TAG_LEN: usize = 4;

/// At most this many stacked tags are parsed (QinQ); more is malformed.
pub const MAX_TAGS: usize = 2;

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
}

/// True for the TPIDs that introduce a VLAN tag (0x8100, 0x88a8, 0x9100).
#[inline]
pub fn is_tpid(t: u16) -> bool {
    use super::ethernet::ethertype::*;
    t == VLAN || t == QINQ || t == QINQ_OLD
}

/// A view of one VLAN tag.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        VlanTag { buf }
    }
    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let t = Self::new_unchecked(buf);
        t.check_len()?;
        Ok(t)
    }
    /// Ensures the 4 tag bytes are present ([`Malformed::TruncatedVlan`]).
    pub fn check_len(&self) -> Result<(), Malformed> {
        if self.buf.as_ref().len() < TAG_LEN {
            Err(Malformed::TruncatedVlan)
        } else {
            Ok(())
        }
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// VLAN id (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        be16(self.buf.as_ref(), field::TCI) & 0x0fff
    }
    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (be16(self.buf.as_ref(), field::TCI) >> 13) as u8
    }
    /// The encapsulated ethertype (another TPID for QinQ).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), field::ETHERTYPE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets PCP (upper 3 bits) and VLAN id (lower 12 bits); DEI cleared.
    pub fn set_tci(&mut self, pcp: u8, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (vid & 0x0fff);
        self.buf.as_mut()[field::TCI..field::TCI + 2].copy_from_slice(&tci.to_be_bytes())
    }
    /// Sets the encapsulated ethertype.
    pub fn set_ethertype(&mut self, t: u16) {
        self.buf.as_mut()[field::ETHERTYPE..field::ETHERTYPE + 2].copy_from_slice(&t.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_fields() {
        static TAG: [u8; 4] = [0xa0, 0x64, 0x08, 0x00]; // pcp 5, vid 100, IPv4
        let t = VlanTag::new_checked(&TAG[..]).unwrap();
        assert_eq!((t.pcp(), t.vid(), t.ethertype()), (5, 100, 0x0800));
        assert_eq!(VlanTag::new_checked(&TAG[..3]).unwrap_err(), Malformed::TruncatedVlan);
        let mut b = [0u8; 4];
        let mut m = VlanTag::new_unchecked(&mut b[..]);
        m.set_tci(5, 100);
        m.set_ethertype(0x0800);
        assert_eq!(b, TAG);
        assert!(is_tpid(0x88a8) && is_tpid(0x8100) && !is_tpid(0x0800));
    }
}
