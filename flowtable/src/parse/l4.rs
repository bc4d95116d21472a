//! Transport views: TCP, UDP, SCTP (common header), ICMP / ICMPv6.
//! Each check only what the flow key needs: ports, TCP flags, ICMP type/code
//! and the echo identifier.

use super::{be16, Malformed};

/// IP protocol numbers.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite (same port layout as UDP).
    pub const UDPLITE: u8 = 136;
}

/// TCP flag bits ([`crate::FlowKey::tcp_flags`]).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Length of a TCP header without options.
pub const TCP_MIN_LEN: usize = 20;
/// Length of a UDP header.
pub const UDP_LEN: usize = 8;
/// Length of the SCTP common header.
pub const SCTP_LEN: usize = 12;
/// Length of the ICMP type/code/checksum part.
pub const ICMP_MIN_LEN: usize = 4;
/// Length of an ICMP echo header (with identifier and sequence).
pub const ICMP_ECHO_LEN: usize = 8;

/// A view of a TCP header.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    /// Wraps a buffer without checking it; accessors panic if it is too short.
    pub const fn new_unchecked(buf: T) -> Self {
        TcpHeader { buf }
    }
    /// Wraps after checking: 20 bytes and the data offset's header inside
    /// the buffer ([`Malformed::TruncatedL4`]), data offset at least 5
    /// ([`Malformed::BadTcpOffset`]).
    pub fn new_checked(buf: T) -> Result<Self, Malformed> {
        let h = TcpHeader { buf };
        let b = h.buf.as_ref();
        if b.len() < TCP_MIN_LEN {
            return Err(Malformed::TruncatedL4);
        }
        let hl = h.header_len();
        if hl < TCP_MIN_LEN {
            return Err(Malformed::BadTcpOffset);
        }
        if hl > b.len() {
            return Err(Malformed::TruncatedL4);
        }
        Ok(h)
    }
    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    /// The flag byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
}

/// A view of the port pair that starts UDP, UDP-Lite and SCTP headers.
#[derive(Debug, Clone, Copy)]
pub struct PortsHeader<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> PortsHeader<T> {
    /// Wraps after checking `min_len` bytes ([`UDP_LEN`] or [`SCTP_LEN`];
    /// shorter is [`Malformed::TruncatedL4`]).
    pub fn new_checked(buf: T, min_len: usize) -> Result<Self, Malformed> {
        if buf.as_ref().len() < min_len.max(4) {
            return Err(Malformed::TruncatedL4);
        }
        Ok(PortsHeader { buf })
    }
    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
}

/// A view of an ICMP or ICMPv6 header.
#[derive(Debug, Clone, Copy)]
pub struct IcmpHeader<T: AsRef<[u8]>> {
    buf: T,
    v6: bool,
}

impl<T: AsRef<[u8]>> IcmpHeader<T> {
    /// Wraps after checking 4 bytes, and 8 for echo request/reply
    /// ([`Malformed::TruncatedL4`]). `v6` selects ICMPv6 type numbers.
    pub fn new_checked(buf: T, v6: bool) -> Result<Self, Malformed> {
        let h = IcmpHeader { buf, v6 };
        let n = h.buf.as_ref().len();
        if n < ICMP_MIN_LEN || (h.is_echo() && n < ICMP_ECHO_LEN) {
            return Err(Malformed::TruncatedL4);
        }
        Ok(h)
    }
    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    /// True for echo request or reply (ICMP 8/0, ICMPv6 128/129).
    #[inline]
    pub fn is_echo(&self) -> bool {
        is_echo(self.v6, self.msg_type())
    }
    /// Echo identifier (echo messages only; 0 otherwise).
    #[inline]
    pub fn echo_id(&self) -> u16 {
        if self.is_echo() {
            be16(self.buf.as_ref(), 4)
        } else {
            0
        }
    }
}

/// True for an echo request or reply type of ICMP (`v6` false) or ICMPv6.
#[inline]
pub fn is_echo(v6: bool, ty: u8) -> bool {
    if v6 {
        ty == 128 || ty == 129
    } else {
        ty == 8 || ty == 0
    }
}

/// True for an echo request type.
#[inline]
pub fn is_echo_request(v6: bool, ty: u8) -> bool {
    if v6 {
        ty == 128
    } else {
        ty == 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP 40000 -> 443, SYN, data offset 10 (40-byte header with options), as captured.
    static SYN: [u8; 40] = [
        0x9c, 0x40, 0x01, 0xbb, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, //
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0x01, 0x03, 0x03, 0x07,
    ];

    #[test]
    fn tcp() {
        let t = TcpHeader::new_checked(&SYN[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.flags(), t.header_len()), (40000, 443, tcp_flags::SYN, 40));
        assert_eq!(t.seq(), 0x1234_5678);
        assert_eq!(TcpHeader::new_checked(&SYN[..39]).unwrap_err(), Malformed::TruncatedL4);
        assert_eq!(TcpHeader::new_checked(&SYN[..19]).unwrap_err(), Malformed::TruncatedL4);
        let mut bad = SYN;
        bad[12] = 0x40;
        assert_eq!(TcpHeader::new_checked(&bad[..]).unwrap_err(), Malformed::BadTcpOffset);
    }

    #[test]
    fn udp_sctp_icmp() {
        let udp = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
        let u = PortsHeader::new_checked(&udp[..], UDP_LEN).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (1234, 53));
        assert_eq!(PortsHeader::new_checked(&udp[..7], UDP_LEN).unwrap_err(), Malformed::TruncatedL4);
        assert_eq!(PortsHeader::new_checked(&udp[..], SCTP_LEN).unwrap_err(), Malformed::TruncatedL4);
        let echo = [8u8, 0, 0xf7, 0xff, 0x00, 0x2a, 0x00, 0x01];
        let i = IcmpHeader::new_checked(&echo[..], false).unwrap();
        assert_eq!((i.msg_type(), i.code(), i.is_echo(), i.echo_id()), (8, 0, true, 42));
        assert_eq!(IcmpHeader::new_checked(&echo[..7], false).unwrap_err(), Malformed::TruncatedL4);
        let unreach = [3u8, 1, 0, 0];
        let i = IcmpHeader::new_checked(&unreach[..], false).unwrap();
        assert_eq!((i.is_echo(), i.echo_id()), (false, 0));
        assert!(IcmpHeader::new_checked(&[128u8, 0, 0, 0, 0, 7, 0, 1][..], true).unwrap().is_echo());
        assert_eq!(IcmpHeader::new_checked(&[1u8, 0, 0][..], true).unwrap_err(), Malformed::TruncatedL4);
    }
}
