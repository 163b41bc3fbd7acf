//! IPv4 + TCP packets against byte vectors: hand-built and captured from
//! Linux, every IP-level rejection, and emit reproducing the exact bytes.

mod wire_packets {
    use std::net::Ipv4Addr;

    use sustain_core::wire::{
        emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, Ipv4Packet, Ipv4Repr, SeqNumber, TcpFlags,
        TcpPacket, TcpRepr, Timestamps, WireError,
    };

    /// Hand-built Linux-style SYN, 192.0.2.10:51234 -> 198.51.100.20:80, options
    /// MSS 1460, SACK-perm, TS (666428, 0), NOP, WS 7. IP checksum 0x3224 and
    /// TCP checksum 0x0458 computed independently; `tcpdump -vvv` reports
    /// both correct.
    const HAND_SYN: &str = "4500003c1c46400040063224c000020ac6336414c822005012345678\
                            00000000a002faf004580000020405b40402080a000a2b3c00000000\
                            01030307";

    /// Captured with tcpdump on `lo` in a private namespace (Linux 6.18): a
    /// connect from 127.0.0.1:40000 to :5001. Loopback leaves the TCP
    /// checksum partial (offload), so the field holds the value tcpdump
    /// computed and reported as the correct one; everything else is as captured.
    const LO_SYN: &str = "4500003c1139400040062b817f0000017f0000019c4013891603df55\
                          00000000a002ffd732a000000204ffd70402080a8593f2a800000000\
                          0103030a";
    const LO_SYN_ACK: &str = "4500003c0000400040063cba7f0000017f00000113899c4054150748\
                              1603df56a012ffcbc8f500000204ffd70402080afcce11798593f2a8\
                              0103030a";
    const LO_ACK: &str = "45000034113a400040062b887f0000017f0000019c4013891603df56\
                          5415074980100040f17400000101080a8593f2a8fcce1179";
    /// A 15-byte data segment ("hello, sustain!") from a second capture.
    const LO_DATA: &str = "450000436fb140004006cd017f0000017f0000019c401389b6b75d76\
                           f4c885a98018004096ad00000101080a859694affcd0b38068656c6c\
                           6f2c207375737461696e21";

    fn bytes(hex_str: &str) -> Vec<u8> {
        hex::decode(hex_str.replace(' ', "")).expect("test vector is hex")
    }

    /// Makes the IP header checksum right again after a change.
    fn fix_ip_checksum(packet: &mut [u8]) {
        Ipv4Packet::new_unchecked(packet).fill_checksum();
    }

    fn fix_tcp_checksum(packet: &mut [u8]) {
        let mut ip = Ipv4Packet::new_unchecked(packet);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        TcpPacket::new_unchecked(ip.payload_mut()).fill_checksum(src, dst);
    }

    fn ip_checksum_verifies(header: &[u8]) -> bool {
        Ipv4Packet::new_unchecked(header).verify_checksum()
    }

    fn hand_syn_reprs() -> (Ipv4Repr, TcpRepr<'static>) {
        let ip = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 10),
            dst: Ipv4Addr::new(198, 51, 100, 20),
            ttl: 64,
            ident: 0x1c46,
            dont_fragment: true,
        };
        let tcp = TcpRepr {
            src_port: 51234,
            dst_port: 80,
            seq: SeqNumber(0x1234_5678),
            flags: TcpFlags::SYN,
            window: 64240,
            mss: Some(1460),
            sack_permitted: true,
            timestamps: Some(Timestamps {
                tsval: 666_428,
                tsecr: 0,
            }),
            window_scale: Some(7),
            ..TcpRepr::default()
        };
        (ip, tcp)
    }

    #[test]
    fn hand_built_syn_parses_and_reemits_identically() {
        let packet = bytes(HAND_SYN);
        assert!(ip_checksum_verifies(&packet), "vector's IP checksum");
        let (ip, tcp) = parse_ipv4_tcp(&packet).unwrap();
        assert_eq!((ip, tcp.clone()), hand_syn_reprs());

        let mut out = [0u8; 100];
        assert_eq!(ipv4_tcp_len(&tcp), 60);
        let n = emit_ipv4_tcp(&ip, &tcp, &mut out).unwrap();
        assert_eq!(&out[..n], &packet[..]);
    }

    #[test]
    fn linux_loopback_handshake_and_data_parse() {
        let lo = Ipv4Addr::LOCALHOST;
        let syn = bytes(LO_SYN);
        let (ip, tcp) = parse_ipv4_tcp(&syn).unwrap();
        assert_eq!(
            ip,
            Ipv4Repr {
                src: lo,
                dst: lo,
                ttl: 64,
                ident: 0x1139,
                dont_fragment: true
            }
        );
        assert_eq!((tcp.src_port, tcp.dst_port), (40000, 5001));
        assert_eq!(tcp.seq, SeqNumber(369_352_533));
        assert_eq!(tcp.flags, TcpFlags::SYN);
        assert_eq!(tcp.window, 65495);
        assert_eq!(tcp.mss, Some(65495));
        assert!(tcp.sack_permitted);
        assert_eq!(
            tcp.timestamps,
            Some(Timestamps {
                tsval: 2_241_065_640,
                tsecr: 0
            })
        );
        assert_eq!(tcp.window_scale, Some(10));
        // Linux and sustain lay out these options the same way.
        let mut out = [0u8; 60];
        let n = emit_ipv4_tcp(&ip, &tcp, &mut out).unwrap();
        assert_eq!(&out[..n], &syn[..]);

        let syn_ack = bytes(LO_SYN_ACK);
        let (ip, tcp) = parse_ipv4_tcp(&syn_ack).unwrap();
        assert_eq!(ip.ident, 0);
        assert_eq!(tcp.flags, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(tcp.ack, SeqNumber(369_352_534));
        assert_eq!(tcp.timestamps.unwrap().tsecr, 2_241_065_640);
        let n = emit_ipv4_tcp(&ip, &tcp, &mut out).unwrap();
        assert_eq!(&out[..n], &syn_ack[..]);

        let ack = bytes(LO_ACK);
        let (ip, tcp) = parse_ipv4_tcp(&ack).unwrap();
        assert_eq!(tcp.flags, TcpFlags::ACK);
        assert_eq!(tcp.window, 64);
        assert_eq!(tcp.mss, None);
        assert_eq!(tcp.timestamps.unwrap().tsecr, 4_241_363_321);
        let n = emit_ipv4_tcp(&ip, &tcp, &mut out).unwrap();
        assert_eq!(&out[..n], &ack[..]);

        let data = bytes(LO_DATA);
        let (ip, tcp) = parse_ipv4_tcp(&data).unwrap();
        assert_eq!(tcp.flags, TcpFlags::PSH | TcpFlags::ACK);
        assert_eq!(tcp.payload, b"hello, sustain!");
        assert_eq!(tcp.segment_len(), 15);
        let mut out = [0u8; 80];
        let n = emit_ipv4_tcp(&ip, &tcp, &mut out).unwrap();
        assert_eq!(&out[..n], &data[..]);
    }

    #[test]
    fn bad_ip_checksum() {
        let mut packet = bytes(HAND_SYN);
        packet[8] = 63; // TTL changed without updating the checksum
        assert_eq!(parse_ipv4_tcp(&packet), Err(WireError::BadIpChecksum));
        fix_ip_checksum(&mut packet);
        assert_eq!(parse_ipv4_tcp(&packet).unwrap().0.ttl, 63);
    }

    #[test]
    fn bad_tcp_checksum() {
        let mut packet = bytes(LO_DATA);
        *packet.last_mut().unwrap() ^= 1;
        assert_eq!(parse_ipv4_tcp(&packet), Err(WireError::BadTcpChecksum));
        // The pseudo-header counts: same segment, different source address.
        let mut packet = bytes(HAND_SYN);
        packet[15] = 11;
        fix_ip_checksum(&mut packet);
        assert_eq!(parse_ipv4_tcp(&packet), Err(WireError::BadTcpChecksum));
    }

    #[test]
    fn truncated_packets() {
        let packet = bytes(HAND_SYN);
        for len in 0..20 {
            assert_eq!(
                parse_ipv4_tcp(&packet[..len]),
                Err(WireError::Truncated {
                    needed: 20,
                    have: len
                }),
                "len {len}"
            );
        }
        // Cut anywhere after the IP header: the total length no longer fits.
        for len in 20..packet.len() {
            assert_eq!(
                parse_ipv4_tcp(&packet[..len]),
                Err(WireError::BadIpTotalLength {
                    total: 60,
                    have: len
                }),
                "len {len}"
            );
        }
        // IHL 6 announces 24 header bytes; only 22 present.
        let mut short = packet[..22].to_vec();
        short[0] = 0x46;
        assert_eq!(
            parse_ipv4_tcp(&short),
            Err(WireError::Truncated {
                needed: 24,
                have: 22
            })
        );
    }

    #[test]
    fn version_and_header_length() {
        let mut packet = bytes(HAND_SYN);
        packet[0] = 0x65;
        assert_eq!(parse_ipv4_tcp(&packet), Err(WireError::NotIpv4(6)));
        for ihl in 0..5u8 {
            packet[0] = 0x40 | ihl;
            assert_eq!(
                parse_ipv4_tcp(&packet),
                Err(WireError::BadIpHeaderLength(usize::from(ihl) * 4))
            );
        }
    }

    #[test]
    fn total_length_shorter_or_longer_than_the_buffer() {
        let packet = bytes(HAND_SYN);
        // Ethernet pads short frames: trailing bytes after Total Length are ignored.
        let mut padded = packet.clone();
        padded.extend([0u8; 6]);
        assert_eq!(
            parse_ipv4_tcp(&padded).unwrap(),
            parse_ipv4_tcp(&packet).unwrap()
        );
        let (_, tcp) = parse_ipv4_tcp(&padded).unwrap();
        assert!(tcp.payload.is_empty(), "padding must not become payload");

        // Total Length larger than what arrived.
        let mut long = packet.clone();
        long[2..4].copy_from_slice(&61u16.to_be_bytes());
        fix_ip_checksum(&mut long);
        assert_eq!(
            parse_ipv4_tcp(&long),
            Err(WireError::BadIpTotalLength {
                total: 61,
                have: 60
            })
        );
        // Total Length smaller than the IP header itself.
        let mut tiny = packet.clone();
        tiny[2..4].copy_from_slice(&19u16.to_be_bytes());
        fix_ip_checksum(&mut tiny);
        assert_eq!(
            parse_ipv4_tcp(&tiny),
            Err(WireError::BadIpTotalLength {
                total: 19,
                have: 60
            })
        );
        // Total Length cutting into the TCP header: TCP sees a short segment.
        let mut cut = packet.clone();
        cut[2..4].copy_from_slice(&30u16.to_be_bytes());
        fix_ip_checksum(&mut cut);
        assert_eq!(
            parse_ipv4_tcp(&cut),
            Err(WireError::Truncated {
                needed: 20,
                have: 10
            })
        );
    }

    #[test]
    fn fragments_are_rejected() {
        let packet = bytes(HAND_SYN);
        // MF set.
        let mut more = packet.clone();
        more[6] = 0x20;
        fix_ip_checksum(&mut more);
        assert_eq!(parse_ipv4_tcp(&more), Err(WireError::Fragment));
        // Non-zero offset (last fragment: MF clear), DF or not.
        for flags in [0x00u8, 0x40] {
            let mut last = packet.clone();
            last[6] = flags;
            last[7] = 0x01;
            fix_ip_checksum(&mut last);
            assert_eq!(parse_ipv4_tcp(&last), Err(WireError::Fragment));
        }
        // DF alone is not a fragment, and clearing it is reported.
        let mut no_df = packet.clone();
        no_df[6] = 0;
        fix_ip_checksum(&mut no_df);
        assert!(!parse_ipv4_tcp(&no_df).unwrap().0.dont_fragment);
    }

    #[test]
    fn non_tcp_is_rejected() {
        // The IPv4 header example from Wikipedia ("IPv4 header checksum"):
        // UDP, checksum b861, total length 0x73.
        let mut packet = bytes("45000073000040004011b861c0a80001c0a800c7");
        assert!(ip_checksum_verifies(&packet));
        packet.resize(0x73, 0);
        assert_eq!(parse_ipv4_tcp(&packet), Err(WireError::NotTcp(17)));
    }

    #[test]
    fn ip_options_are_skipped() {
        let syn = bytes(HAND_SYN);
        // IHL 6 with a 4-byte option area (NOP, NOP, NOP, EOL) before TCP.
        let mut packet = syn[..20].to_vec();
        packet[0] = 0x46;
        packet[2..4].copy_from_slice(&64u16.to_be_bytes());
        packet.extend([1, 1, 1, 0]);
        packet.extend(&syn[20..]);
        fix_ip_checksum(&mut packet);
        let (ip, tcp) = parse_ipv4_tcp(&packet).unwrap();
        assert_eq!((ip, tcp), hand_syn_reprs());
        // fix_tcp_checksum agrees the segment was already right.
        let mut again = packet.clone();
        fix_tcp_checksum(&mut again);
        assert_eq!(again, packet);
    }

    #[test]
    fn emit_rejects_oversized_and_short_buffers() {
        let (ip, tcp) = hand_syn_reprs();
        let mut buf = [0xeeu8; 59];
        assert_eq!(
            emit_ipv4_tcp(&ip, &tcp, &mut buf),
            Err(WireError::BufferTooSmall {
                needed: 60,
                have: 59
            })
        );
        assert!(buf.iter().all(|&b| b == 0xee), "nothing written");

        // 20 IP + 40 TCP + payload: 65535 fits, 65536 does not.
        let payload = vec![0x5au8; 65535 - 60 + 1];
        let mut big = vec![0u8; 70_000];
        let too_big = TcpRepr {
            payload: &payload,
            ..tcp.clone()
        };
        assert_eq!(
            emit_ipv4_tcp(&ip, &too_big, &mut big),
            Err(WireError::PayloadTooLarge(payload.len()))
        );
        let largest = TcpRepr {
            payload: &payload[1..],
            ..tcp.clone()
        };
        let n = emit_ipv4_tcp(&ip, &largest, &mut big).unwrap();
        assert_eq!(n, 65535);
        let (ip2, tcp2) = parse_ipv4_tcp(&big[..n]).unwrap();
        assert_eq!((ip2, tcp2), (ip, largest));
    }

    #[test]
    fn emitted_header_fields() {
        let ip = Ipv4Repr {
            src: Ipv4Addr::new(203, 0, 113, 1),
            dst: Ipv4Addr::new(203, 0, 113, 2),
            ttl: 7,
            ident: 0xbeef,
            dont_fragment: false,
        };
        let tcp = TcpRepr {
            src_port: 1,
            dst_port: 2,
            flags: TcpFlags::RST,
            ..TcpRepr::default()
        };
        let mut out = [0u8; 40];
        assert_eq!(emit_ipv4_tcp(&ip, &tcp, &mut out), Ok(40));
        // Version/IHL, TOS, total length, ident, no flags, TTL, protocol.
        assert_eq!(&out[..10], &bytes("45000028beef00000706")[..]);
        assert!(ip_checksum_verifies(&out), "IP checksum verifies");
        assert_eq!(&out[12..20], &bytes("cb007101cb007102")[..]);
        let mut fixed = out;
        fix_tcp_checksum(&mut fixed);
        assert_eq!(fixed, out, "TCP checksum matches the reference");
    }
}
