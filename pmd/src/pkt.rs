//! Building test frames: Ethernet + IPv4 + UDP, used by the generating
//! engines (txonly, flowgen), the pcap generator and tests. Pure Rust.

/// Ethernet + IPv4 + UDP header bytes.
pub const UDP_HDRS: usize = 14 + 20 + 8;

/// RFC 1071 Internet checksum of `data`.
pub fn inet_csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = it.remainder() {
        s += u32::from(*b) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Fields of a UDP test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source IPv4.
    pub src_ip: [u8; 4],
    /// Destination IPv4.
    pub dst_ip: [u8; 4],
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
    /// IPv4 identification.
    pub ip_id: u16,
    /// TTL.
    pub ttl: u8,
}

impl UdpFrame {
    /// Write the frame into `buf` (whose length is the frame length, at least
    /// [`UDP_HDRS`]; the payload is zeroed). IPv4 checksum set, UDP checksum 0.
    ///
    /// # Panics
    /// If `buf` is shorter than [`UDP_HDRS`].
    pub fn write(&self, buf: &mut [u8]) {
        assert!(buf.len() >= UDP_HDRS);
        let len = buf.len();
        buf.fill(0);
        buf[0..6].copy_from_slice(&self.dst_mac);
        buf[6..12].copy_from_slice(&self.src_mac);
        buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut buf[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&self.src_ip);
        ip[16..20].copy_from_slice(&self.dst_ip);
        let c = inet_csum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut buf[34..42];
        udp[0..2].copy_from_slice(&self.sport.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dport.to_be_bytes());
        udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    }

    /// The frame as a new vector of `len` bytes.
    pub fn to_vec(&self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len.max(UDP_HDRS)];
        self.write(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_verifies_to_zero() {
        let f = UdpFrame {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: [10, 0, 0, 1],
            dst_ip: [172, 16, 0, 1],
            sport: 1024,
            dport: 80,
            ip_id: 7,
            ttl: 64,
        }
        .to_vec(60);
        assert_eq!(f.len(), 60);
        assert_eq!(inet_csum(&f[14..34]), 0);
        assert_eq!(&f[12..14], &[8, 0]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
    }
}
