//! Minimal classic pcap (microsecond, Ethernet) reader and writer, for test
//! input/output and the benchmark's flow files. Pure Rust.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::pkt::UdpFrame;

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), cause: source }
}

/// Write `frames` to a pcap file at `path`.
///
/// # Errors
/// I/O errors with the path.
pub fn write(path: &Path, frames: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut hdr = Vec::with_capacity(24);
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&0i32.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&hdr).map_err(|e| io_err(path, e))?;
    for (i, fr) in frames.into_iter().enumerate() {
        let fr = fr.as_ref();
        let i = i as u32;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(i / 1_000_000).to_le_bytes());
        rec[4..8].copy_from_slice(&(i % 1_000_000).to_le_bytes());
        rec[8..12].copy_from_slice(&(fr.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(fr.len() as u32).to_le_bytes());
        w.write_all(&rec).map_err(|e| io_err(path, e))?;
        w.write_all(fr).map_err(|e| io_err(path, e))?;
    }
    w.flush().map_err(|e| io_err(path, e))
}

/// Read every frame of a pcap file (either byte order, micro- or nanosecond).
///
/// # Errors
/// I/O errors, or [`Error::Invalid`] for a file that is not pcap.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut buf = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(|e| io_err(path, e))?;
    if buf.len() < 24 {
        return Err(Error::Invalid(format!("{}: not a pcap file (too short)", path.display())));
    }
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(Error::Invalid(format!("{}: not a pcap file (magic {magic:#x})", path.display()))),
    };
    let rd = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= buf.len() {
        let caplen = rd(&buf[off + 8..off + 12]) as usize;
        off += 16;
        if off + caplen > buf.len() {
            return Err(Error::Invalid(format!("{}: truncated record", path.display())));
        }
        out.push(buf[off..off + caplen].to_vec());
        off += caplen;
    }
    Ok(out)
}

/// Number of records in a pcap file, without loading the packets.
///
/// # Errors
/// I/O errors, or [`Error::Invalid`] for a file that is not pcap.
pub fn count(path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut hdr = [0u8; 24];
    f.read_exact(&mut hdr).map_err(|e| io_err(path, e))?;
    let le = match u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => return Err(Error::Invalid(format!("{}: not a pcap file (magic {m:#x})", path.display()))),
    };
    let mut n = 0;
    let mut rec = [0u8; 16];
    while f.read_exact(&mut rec).is_ok() {
        let c = [rec[8], rec[9], rec[10], rec[11]];
        let caplen = if le { u32::from_le_bytes(c) } else { u32::from_be_bytes(c) };
        f.seek(SeekFrom::Current(i64::from(caplen))).map_err(|e| io_err(path, e))?;
        n += 1;
    }
    Ok(n)
}

/// The benchmark's flow `i`: a 60-byte UDP frame (64 on the wire), with the
/// address plan of `peers/gen_bench.py` (src 10.s.h, dst 172.16.k.x, mixed
/// destination ports, every 10th flow to port 9999).
pub fn bench_flow(i: u32) -> Vec<u8> {
    const PORTS: [u16; 8] = [80, 443, 22, 53, 8080, 3306, 5432, 6379];
    let s = i % 1000;
    let h = 1 + (i / 1000) % 250;
    let k = (i / 7) % 10;
    let src = (10u32 << 24) | (s << 8) | h;
    let dst = (172u32 << 24) | (16 << 16) | (k << 8) | (1 + i % 200);
    let sport = (1024 + (u64::from(i) * 7919) % 60000) as u16;
    let dport = if i % 10 == 9 { 9999 } else { PORTS[(s % 8) as usize] };
    UdpFrame {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: src.to_be_bytes(),
        dst_ip: dst.to_be_bytes(),
        sport,
        dport,
        ip_id: (i & 0xffff) as u16,
        ttl: 64,
    }
    .to_vec(60)
}

/// Write a pcap of `n` distinct bench flows ([`bench_flow`]).
///
/// # Errors
/// I/O errors with the path.
pub fn write_bench_flows(path: &Path, n: u32) -> Result<()> {
    write(path, (0..n).map(bench_flow))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_distinct_flows() {
        let dir = std::env::temp_dir().join(format!("pmd-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.pcap");
        write_bench_flows(&p, 1000).unwrap();
        let frames = read(&p).unwrap();
        assert_eq!(frames.len(), 1000);
        assert_eq!(count(&p).unwrap(), 1000);
        assert!(frames.iter().all(|f| f.len() == 60));
        let tuples: std::collections::HashSet<_> =
            frames.iter().map(|f| (f[26..34].to_vec(), f[34..38].to_vec())).collect();
        assert_eq!(tuples.len(), 1000);
        // flow 9 goes to port 9999; flow 0 to 10.0.0.1 -> 172.16.0.1:80.
        assert_eq!(&frames[9][36..38], &9999u16.to_be_bytes());
        assert_eq!(&frames[0][26..34], &[10, 0, 0, 1, 172, 16, 0, 1]);
        assert_eq!(&frames[0][36..38], &80u16.to_be_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
