//! IPv6 header and extension-header views.

use super::{be16, Malformed};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Extension headers walked before giving up with [`Malformed::TooManyExtHeaders`].
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers the parser walks.
pub mod next_header {
    /// Hop-by-hop options (must come first).
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (length in 4-byte units).
    pub const AH: u8 = 51;
    /// No next header.
    pub const NONE: u8 = 59;
    /// Destination options.
    pub const DST_OPTS: u8 = 60;
}

mod field {
    use core::ops::Range;
    pub const VER_TC_FL: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv6Packet { buf }
    }
    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }
    /// Checks: 40 bytes ([`Malformed::TruncatedIp`]), version 6
    /// ([`Malformed::BadVersion`]), payload length inside the buffer
    /// ([`Malformed::BadPayloadLength`]; trailing padding is ignored).
    pub fn check_len(&self) -> Result<(), Malformed> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Malformed::TruncatedIp);
        }
        if b[field::VER_TC_FL] >> 4 != 6 {
            return Err(Malformed::BadVersion);
        }
        if HEADER_LEN + self.payload_len() as usize > b.len() {
            return Err(Malformed::BadPayloadLength);
        }
        Ok(())
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// IP version (6 after a successful check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_TC_FL] >> 4
    }
    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// Payload length (everything after the fixed header).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }
    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }
    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    /// Source address as a big-endian u128.
    #[inline]
    pub fn src_addr(&self) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        u128::from_be_bytes(a)
    }
    /// Destination address as a big-endian u128.
    #[inline]
    pub fn dst_addr(&self) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        u128::from_be_bytes(a)
    }
    /// The payload (extension headers and upper layer), padding excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes version 6, traffic class 0 and the flow label.
    pub fn set_version_flow(&mut self, flow_label: u32) {
        let v = (6u32 << 28) | (flow_label & 0x000f_ffff);
        self.buf.as_mut()[0..4].copy_from_slice(&v.to_be_bytes())
    }
    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        self.buf.as_mut()[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2].copy_from_slice(&v.to_be_bytes())
    }
    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buf.as_mut()[field::NEXT_HEADER] = v
    }
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = v
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: u128) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a.to_be_bytes())
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: u128) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a.to_be_bytes())
    }
}

/// A view of a generic extension header (hop-by-hop, routing, destination
/// options: length in 8-byte units after the first 8; AH: 4-byte units after the first 8).
#[derive(Debug, Clone, Copy)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buf: T,
    ah: bool,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps and checks an extension header; `ah` selects AH length units.
    /// Too short for its own length is [`Malformed::TruncatedExtHeader`].
    pub fn new_checked(buf: T, ah: bool) -> Result<Self, Malformed> {
        let h = ExtHeader { buf, ah };
        let b = h.buf.as_ref();
        if b.len() < 8 || h.header_len() > b.len() {
            return Err(Malformed::TruncatedExtHeader);
        }
        Ok(h)
    }
    /// The next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// Length of this header in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        let l = usize::from(self.buf.as_ref()[1]);
        if self.ah {
            (l + 2) * 4
        } else {
            (l + 1) * 8
        }
    }
}

/// Length of the fragment header.
pub const FRAG_HEADER_LEN: usize = 8;

/// A view of the fragment extension header.
#[derive(Debug, Clone, Copy)]
pub struct FragHeader<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> FragHeader<T> {
    /// Wraps and checks (8 bytes, else [`Malformed::TruncatedExtHeader`]).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        if buf.as_ref().len() < FRAG_HEADER_LEN {
            return Err(Malformed::TruncatedExtHeader);
        }
        Ok(FragHeader { buf })
    }
    /// The next header (of the fragmentable part).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), 2) >> 3
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), 2) & 1 != 0
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::1 -> 2001:db8::2, next header UDP, payload length 8, hop limit 64.
    static HDR: [u8; 48] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x08, 17, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP 1234 -> 53
    ];

    #[test]
    fn fields_and_rejects() {
        let p = Ipv6Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!((p.version(), p.payload_len(), p.next_header(), p.hop_limit()), (6, 8, 17, 64));
        assert_eq!(p.src_addr(), 0x2001_0db8_0000_0000_0000_0000_0000_0001);
        assert_eq!(p.dst_addr() & 0xff, 2);
        assert_eq!(p.payload().len(), 8);
        assert_eq!(Ipv6Packet::new_checked(&HDR[..39]).unwrap_err(), Malformed::TruncatedIp);
        assert_eq!(Ipv6Packet::new_checked(&HDR[..47]).unwrap_err(), Malformed::BadPayloadLength);
        let mut v = HDR;
        v[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&v[..]).unwrap_err(), Malformed::BadVersion);
    }

    #[test]
    fn ext_and_fragment_headers() {
        let hbh = [17u8, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let h = ExtHeader::new_checked(&hbh[..], false).unwrap();
        assert_eq!((h.next_header(), h.header_len()), (17, 16));
        assert_eq!(ExtHeader::new_checked(&hbh[..15], false).unwrap_err(), Malformed::TruncatedExtHeader);
        let ah = [6u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(ExtHeader::new_checked(&ah[..], true).unwrap().header_len(), 12);
        let frag = [6u8, 0, 0x00, 0x29, 0, 0, 0, 7]; // offset 5 (40 bytes), M=1
        let f = FragHeader::new_checked(&frag[..]).unwrap();
        assert_eq!((f.next_header(), f.frag_offset(), f.more_frags(), f.ident()), (6, 5, true, 7));
        assert_eq!(FragHeader::new_checked(&frag[..7]).unwrap_err(), Malformed::TruncatedExtHeader);
    }
}
