//! IPv4/TCP segments out of captured frames. Only the headers are needed: a frame cut
//! after its TCP header (a golden excerpt) decodes to the same segment, its payload
//! length taken from the IP total length.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::capture::LinkType;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The TCP header of one captured segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The options area, exactly as on the wire (as far as it was captured).
    pub options: Vec<u8>,
    pub payload_len: u32,
}

impl Segment {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload_len + u32::from(self.has(SYN)) + u32::from(self.has(FIN))
    }

    /// Decodes the IPv4/TCP headers of a frame; `None` for anything else (ARP, ICMP,
    /// IP fragments after the first, frames too short for their headers).
    pub fn decode(link: LinkType, frame: &[u8]) -> Option<Segment> {
        let ip_at = link.ipv4_offset(frame)?;
        let ip = frame.get(ip_at..)?;
        let version_ihl = *ip.first()?;
        if version_ihl >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(version_ihl & 0x0f) * 4;
        if ihl < 20 || *ip.get(9)? != 6 {
            return None;
        }
        let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
        if fragment & 0x1fff != 0 {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        let src = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
        let dst = Ipv4Addr::new(*ip.get(16)?, *ip.get(17)?, *ip.get(18)?, *ip.get(19)?);
        let tcp = ip.get(ihl..)?;
        let header = tcp.get(..20)?;
        let word = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let data_offset = usize::from(header[12] >> 4) * 4;
        if data_offset < 20 {
            return None;
        }
        // Options as far as captured; a header cut short shows as truncated options.
        let options = tcp
            .get(20..data_offset.min(tcp.len()))
            .unwrap_or_default()
            .to_vec();
        let payload_len = total_len.saturating_sub(ihl + data_offset);
        Some(Segment {
            src: SocketAddrV4::new(src, u16::from_be_bytes([header[0], header[1]])),
            dst: SocketAddrV4::new(dst, u16::from_be_bytes([header[2], header[3]])),
            seq: word(4),
            ack: word(8),
            flags: header[13],
            window: u16::from_be_bytes([header[14], header[15]]),
            options,
            payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
        })
    }

    /// tcpdump's flag letters, without PSH (whether a sender pushes is an
    /// implementation's choice and varies with timing, so transcripts leave it out).
    pub fn flag_letters(&self) -> String {
        let mut text = String::new();
        for (flag, letter) in [
            (SYN, 'S'),
            (FIN, 'F'),
            (RST, 'R'),
            (URG, 'U'),
            (ECE, 'E'),
            (CWR, 'W'),
            (ACK, '.'),
        ] {
            if self.has(flag) {
                text.push(letter);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(total_len_extra: usize) -> Vec<u8> {
        let mut frame = vec![0u8; 14];
        frame[12] = 0x08;
        let tcp_len = 24; // 20 + MSS option
        let total = 20 + tcp_len + total_len_extra;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend([192, 0, 2, 10, 198, 51, 100, 10]);
        frame.extend(ip);
        let mut tcp = vec![0x13, 0x89, 0x9c, 0x41];
        tcp.extend(1000u32.to_be_bytes());
        tcp.extend(2000u32.to_be_bytes());
        tcp.extend([6 << 4, SYN | ACK, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend([2, 4, 0x05, 0xb4]);
        frame.extend(tcp);
        frame
    }

    #[test]
    fn decodes_headers_and_takes_payload_length_from_the_ip_header() {
        // 100 bytes of payload that were not captured (an excerpt's cut frame).
        let segment = Segment::decode(LinkType::Ethernet, &frame(100)).unwrap();
        assert_eq!(segment.src, "192.0.2.10:5001".parse().unwrap());
        assert_eq!(segment.dst, "198.51.100.10:40001".parse().unwrap());
        assert_eq!((segment.seq, segment.ack), (1000, 2000));
        assert_eq!(segment.flag_letters(), "S.");
        assert_eq!(segment.options, vec![2, 4, 0x05, 0xb4]);
        assert_eq!(segment.payload_len, 100);
        assert_eq!(segment.seq_len(), 101);
    }

    #[test]
    fn short_or_foreign_frames_are_not_segments() {
        let whole = frame(0);
        for cut in 0..whole.len() - 4 {
            // Never panics; too short for the fixed header means no segment.
            let decoded = Segment::decode(LinkType::Ethernet, &whole[..cut]);
            if cut < 14 + 20 + 20 {
                assert!(decoded.is_none(), "cut at {cut}");
            }
        }
        let mut arp = whole.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(Segment::decode(LinkType::Ethernet, &arp).is_none());
    }
}
