//! ARP (Ethernet / IPv4 only) view. The pipeline reports ARP as its own
//! packet class; the switch's ARP responder reads it through this view.

use super::{be16, Malformed};

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        ArpPacket { buf }
    }
    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }
    /// Ensures 28 bytes of Ethernet (htype 1, hlen 6) / IPv4 (ptype 0x0800,
    /// plen 4) ARP; anything else is [`Malformed::BadArp`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        let b = self.buf.as_ref();
        if b.len() < LEN
            || be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Malformed::BadArp);
        }
        Ok(())
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// Operation (1 request, 2 reply).
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), field::OPER)
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::SHA]);
        a
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::THA]);
        a
    }
    /// Sender protocol (IPv4) address, host order.
    #[inline]
    pub fn sender_ip(&self) -> u32 {
        let b = &self.buf.as_ref()[field::SPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// Target protocol (IPv4) address, host order.
    #[inline]
    pub fn target_ip(&self) -> u32 {
        let b = &self.buf.as_ref()[field::TPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes a complete Ethernet/IPv4 ARP packet into the first 28 bytes.
    pub fn fill(&mut self, op: u16, sha: [u8; 6], spa: u32, tha: [u8; 6], tpa: u32) {
        let b = self.buf.as_mut();
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER..field::OPER + 2].copy_from_slice(&op.to_be_bytes());
        b[field::SHA].copy_from_slice(&sha);
        b[field::SPA].copy_from_slice(&spa.to_be_bytes());
        b[field::THA].copy_from_slice(&tha);
        b[field::TPA].copy_from_slice(&tpa.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// who-has 10.0.0.2 tell 10.0.0.1 (as captured, without the Ethernet header).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    #[test]
    fn request_fields_and_rejects() {
        let a = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(a.target_mac(), [0; 6]);
        assert_eq!(a.sender_ip(), 0x0a00_0001);
        assert_eq!(a.target_ip(), 0x0a00_0002);
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(), Malformed::BadArp);
        let mut bad = REQUEST;
        bad[5] = 16; // plen of IPv6
        assert_eq!(ArpPacket::new_checked(&bad[..]).unwrap_err(), Malformed::BadArp);
        let mut b = [0u8; 28];
        ArpPacket::new_unchecked(&mut b[..]).fill(OP_REQUEST, [2, 0, 0, 0, 0, 1], 0x0a00_0001, [0; 6], 0x0a00_0002);
        assert_eq!(b, REQUEST);
    }
}
