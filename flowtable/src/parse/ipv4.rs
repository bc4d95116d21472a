//! IPv4 header view (options skipped through IHL, fragments exposed).

use super::{be16, Malformed};

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view of an IPv4 packet (header, options and payload).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Checks, in order: 20 bytes present ([`Malformed::TruncatedIp`]), version 4
    /// ([`Malformed::BadVersion`]), IHL at least 5 and the header (with options)
    /// inside the buffer ([`Malformed::BadIhl`]), total length covering the
    /// header and inside the buffer ([`Malformed::BadTotalLength`]; a longer
    /// buffer is Ethernet padding and is ignored by [`payload`](Self::payload)).
    pub fn check_len(&self) -> Result<(), Malformed> {
        let b = self.buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Malformed::TruncatedIp);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed::BadVersion);
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(Malformed::BadIhl);
        }
        let tl = self.total_len() as usize;
        if tl < hl || tl > b.len() {
            return Err(Malformed::BadTotalLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// IP version (4 after a successful check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// Type of service / DSCP+ECN byte.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field::TOS]
    }
    /// Total length (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::LENGTH)
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }
    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), field::FLG_OFF) & 0x1fff
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    /// Payload protocol number.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }
    /// Header checksum as on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Source address, host order.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        let b = &self.buf.as_ref()[field::SRC];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// Destination address, host order.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        let b = &self.buf.as_ref()[field::DST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// The option bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    /// The payload: from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len() as usize]
    }
    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.buf.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes version 4 and the header length (bytes, a multiple of 4).
    pub fn set_header_len(&mut self, len: usize) {
        self.buf.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }
    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        self.buf.as_mut()[field::LENGTH..field::LENGTH + 2].copy_from_slice(&v.to_be_bytes())
    }
    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        self.buf.as_mut()[field::IDENT..field::IDENT + 2].copy_from_slice(&v.to_be_bytes())
    }
    /// Sets the flags (DF, MF) and fragment offset (8-byte units).
    pub fn set_frag(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (u16::from(df) << 14) | (u16::from(mf) << 13) | (offset & 0x1fff);
        self.buf.as_mut()[field::FLG_OFF..field::FLG_OFF + 2].copy_from_slice(&v.to_be_bytes())
    }
    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[field::TTL] = v
    }
    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buf.as_mut()[field::PROTOCOL] = v
    }
    /// Sets the source address (host order).
    pub fn set_src_addr(&mut self, a: u32) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a.to_be_bytes())
    }
    /// Sets the destination address (host order).
    pub fn set_dst_addr(&mut self, a: u32) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a.to_be_bytes())
    }
    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum(&b[..hl]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// The Internet checksum (ones' complement of the ones' complement sum).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1 -> 10.0.0.2 TCP, IHL 5, total length 40, as captured (checksum valid).
    static HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2,
    ];

    fn with_payload() -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..20].copy_from_slice(&HDR);
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn fields() {
        let b = with_payload();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!((p.ttl(), p.protocol()), (64, 6));
        assert_eq!((p.src_addr(), p.dst_addr()), (0x0a00_0001, 0x0a00_0002));
        assert_eq!(p.payload().len(), 20);
        assert!(p.options().is_empty());
        assert!(p.verify_checksum());
    }

    #[test]
    fn rejects_each_malformation() {
        let b = with_payload();
        assert_eq!(Ipv4Packet::new_checked(&b[..19]).unwrap_err(), Malformed::TruncatedIp);
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), Malformed::BadVersion);
        v[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), Malformed::BadIhl);
        v[0] = 0x4f; // 60-byte header in a 40-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), Malformed::BadIhl);
        let mut t = b;
        t[3] = 19; // total length below the header
        assert_eq!(Ipv4Packet::new_checked(&t[..]).unwrap_err(), Malformed::BadTotalLength);
        t[3] = 41; // past the buffer
        assert_eq!(Ipv4Packet::new_checked(&t[..]).unwrap_err(), Malformed::BadTotalLength);
        // Ethernet padding past the total length is fine and not part of the payload.
        let mut padded = [0u8; 46];
        padded[..40].copy_from_slice(&b);
        assert_eq!(Ipv4Packet::new_checked(&padded[..]).unwrap().payload().len(), 20);
    }
}
