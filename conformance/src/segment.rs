//! IPv4/TCP segments out of captured frames. Only the headers are needed: a frame cut
//! after its TCP header (a golden excerpt) decodes to the same segment, its payload
//! length taken from the IP total length.

use std::net::SocketAddrV4;

use sustain_core::wire::{Ipv4Packet, TcpPacket, PROTOCOL_TCP};

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
        let ip = Ipv4Packet::new_captured(frame.get(link.ipv4_offset(frame)?..)?).ok()?;
        if ip.protocol() != PROTOCOL_TCP || ip.frag_offset() != 0 {
            return None;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let (ip_header_len, total_len) = (ip.header_len(), usize::from(ip.total_len()));
        // The TCP header as captured, whatever the total length says (the
        // payload length is all that is taken from it).
        let tcp = TcpPacket::new_captured(ip.into_inner().get(ip_header_len..)?).ok()?;
        let payload_len = total_len.saturating_sub(ip_header_len + tcp.header_len());
        Some(Segment {
            src: SocketAddrV4::new(src, tcp.src_port()),
            dst: SocketAddrV4::new(dst, tcp.dst_port()),
            seq: tcp.seq_number().0,
            ack: tcp.ack_number().0,
            flags: tcp.flags().0,
            window: tcp.window_len(),
            // As far as captured; a header cut short shows as truncated options.
            options: tcp.options().to_vec(),
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
