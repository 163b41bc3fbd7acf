//! Robustness: hundreds of thousands of hostile inputs (random bytes and
//! mutated valid packets, many with checksums repaired so they reach the
//! TCP header and option walker) never panic, and whatever parses re-emits
//! to something that parses back identically. Seeded, so failures replay.

mod common;

mod wire_robustness {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use crate::common::repair_checksums;
    use sustain_core::rand::{Random, SplitMix64};
    use sustain_core::wire::{
        emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, ExperimentalOption, Ipv4Repr, SackBlock,
        SeqNumber, TcpFlags, TcpOption, TcpOptionIter, TcpRepr, Timestamps, WireError,
    };

    const RANDOM_INPUTS: usize = 100_000;
    const MUTATED_INPUTS: usize = 120_000;

    fn below(rng: &mut SplitMix64, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    fn chance(rng: &mut SplitMix64, percent: u64) -> bool {
        rng.next_u64() % 100 < percent
    }

    /// Walks `bytes` and checks the walker's contract: at most one item per
    /// byte, nothing after an `Err` or EOL, every `Ok` option re-emits to
    /// exactly the bytes it came from.
    fn check_walker(bytes: &[u8]) {
        let mut iter = TcpOptionIter::new(bytes);
        let mut at = 0;
        let mut items = 0;
        while let Some(item) = iter.next() {
            items += 1;
            assert!(
                items <= bytes.len(),
                "walker does not advance: {bytes:02x?}"
            );
            match item {
                Ok(option) => {
                    let len = option.buffer_len();
                    let mut out = [0u8; 256];
                    let n = option.emit(&mut out).expect("a walked option re-emits");
                    assert_eq!(n, len);
                    assert_eq!(&out[..n], &bytes[at..at + n], "{option:?}");
                    at += len;
                    if option == TcpOption::EndOfList {
                        assert_eq!(iter.next(), None);
                        break;
                    }
                }
                Err(_) => {
                    assert_eq!(iter.next(), None, "walker continues after error");
                    break;
                }
            }
        }
        assert!(at <= bytes.len());
    }

    /// Parses, and if that succeeds, emits again and parses that: the two
    /// results must be equal. Returns the error class for statistics.
    fn check_packet(packet: &[u8]) -> &'static str {
        match parse_ipv4_tcp(packet) {
            Ok((ip, tcp)) => {
                let mut out = vec![0u8; ipv4_tcp_len(&tcp)];
                let n = emit_ipv4_tcp(&ip, &tcp, &mut out)
                    .unwrap_or_else(|e| panic!("parsed segment does not re-emit: {e}: {tcp:?}"));
                assert_eq!(n, out.len());
                let (ip2, tcp2) = parse_ipv4_tcp(&out).expect("re-emitted packet parses");
                assert_eq!(ip2, ip);
                assert_eq!(tcp2, tcp);
                "ok"
            }
            Err(WireError::Truncated { .. }) => "truncated",
            Err(WireError::NotIpv4(_)) => "not ipv4",
            Err(WireError::BadIpHeaderLength(_)) => "ip header length",
            Err(WireError::BadIpTotalLength { .. }) => "ip total length",
            Err(WireError::BadIpChecksum) => "ip checksum",
            Err(WireError::Fragment) => "fragment",
            Err(WireError::NotTcp(_)) => "not tcp",
            Err(WireError::BadTcpDataOffset(_)) => "tcp data offset",
            Err(WireError::BadTcpChecksum) => "tcp checksum",
            Err(WireError::BadOptionLength { .. } | WireError::TruncatedOption { .. }) => "option",
            Err(WireError::TooManyOptions) => "too many options",
            Err(e) => panic!("parse produced an emit-side error: {e}"),
        }
    }

    /// A random valid packet: random header fields, a random subset of
    /// options that fits, a short payload.
    fn valid_packet(rng: &mut SplitMix64) -> Vec<u8> {
        let mut payload = vec![0u8; below(rng, 64)];
        rng.fill_bytes(&mut payload);
        let mut exp_data = [0u8; 12];
        rng.fill_bytes(&mut exp_data);
        let word = rng.next_u64();
        let block = |n: u64| SackBlock {
            left: SeqNumber(n as u32),
            right: SeqNumber((n >> 32) as u32),
        };
        let mut tcp = TcpRepr {
            src_port: word as u16,
            dst_port: (word >> 16) as u16,
            seq: SeqNumber(rng.next_u32()),
            ack: SeqNumber(rng.next_u32()),
            flags: TcpFlags(rng.next_u32() as u8),
            window: (word >> 32) as u16,
            urgent: if chance(rng, 10) {
                (word >> 48) as u16
            } else {
                0
            },
            mss: chance(rng, 50).then_some(rng.next_u32() as u16),
            window_scale: chance(rng, 50).then_some(below(rng, 16) as u8),
            sack_permitted: chance(rng, 50),
            timestamps: chance(rng, 60).then(|| Timestamps {
                tsval: rng.next_u32(),
                tsecr: rng.next_u32(),
            }),
            payload: &payload,
            ..TcpRepr::default()
        };
        for slot in tcp.sack_blocks.iter_mut().take(below(rng, 4)) {
            *slot = Some(block(rng.next_u64()));
        }
        for slot in tcp.experimental.iter_mut().take(below(rng, 3)) {
            let len = below(rng, exp_data.len() + 1);
            *slot = Some(ExperimentalOption {
                exid: rng.next_u32() as u16,
                data: &exp_data[..len],
            });
        }
        // Drop options until they fit, as a sender would.
        while tcp.options_len() > 40 {
            if tcp.experimental.iter().any(Option::is_some) {
                tcp.experimental = [None; 4];
            } else {
                tcp.sack_blocks = [None; 4];
            }
        }
        let ip = Ipv4Repr {
            src: Ipv4Addr::from(rng.next_u32()),
            dst: Ipv4Addr::from(rng.next_u32()),
            ttl: rng.next_u32() as u8,
            ident: rng.next_u32() as u16,
            dont_fragment: chance(rng, 80),
        };
        let mut packet = vec![0u8; ipv4_tcp_len(&tcp)];
        emit_ipv4_tcp(&ip, &tcp, &mut packet).expect("valid packet emits");
        packet
    }

    /// Option-area bytes biased towards almost-valid options, so the walker
    /// and parser see long runs of real kinds with lengths near the right one.
    fn option_soup(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
        const KINDS: [u8; 10] = [0, 1, 2, 3, 4, 5, 8, 253, 30, 255];
        const LENS: [u8; 10] = [1, 1, 4, 3, 2, 10, 10, 4, 2, 2];
        let mut soup = Vec::with_capacity(len);
        // Sometimes nothing but minimal experimental options, to overflow
        // the four slots a TcpRepr has for them.
        if chance(rng, 10) {
            while soup.len() < len {
                soup.extend([253, 4, rng.next_u32() as u8, rng.next_u32() as u8]);
            }
        }
        while soup.len() < len {
            let pick = below(rng, KINDS.len());
            let kind = KINDS[pick];
            soup.push(kind);
            if kind <= 1 {
                continue;
            }
            let mut opt_len = usize::from(LENS[pick]);
            if kind == 5 {
                opt_len = 2 + 8 * (1 + below(rng, 4));
            }
            if kind == 253 || kind >= 30 {
                opt_len += below(rng, 6);
            }
            if chance(rng, 8) {
                opt_len = below(rng, 12); // a wrong length now and then
            }
            soup.push(opt_len as u8);
            for _ in 2..opt_len.max(2) {
                soup.push(rng.next_u32() as u8);
            }
        }
        soup.truncate(len);
        soup
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = SplitMix64::new(0x5eed_0001);
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        let mut buf = [0u8; 128];
        for i in 0..RANDOM_INPUTS {
            let len = below(&mut rng, buf.len() + 1);
            let bytes = &mut buf[..len];
            rng.fill_bytes(bytes);
            // A third stay raw; a third look like IPv4 without options, to
            // get past the version check; a third also get TCP, no fragment
            // bits, the right total length and repaired checksums, so random
            // TCP headers and option areas reach the TCP parser.
            if i % 3 != 0 && len >= 20 {
                bytes[0] = 0x45;
            }
            if i % 3 == 2 && len >= 20 {
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                bytes[6] &= 0x40;
                bytes[7] = 0;
                bytes[9] = 6;
                repair_checksums(bytes);
            }
            *classes.entry(check_packet(bytes)).or_default() += 1;
            check_walker(bytes);
            let src = Ipv4Addr::from(rng.next_u32());
            let dst = Ipv4Addr::from(rng.next_u32());
            let _ = TcpRepr::parse(src, dst, bytes);
        }
        eprintln!("random bytes: {classes:?}");
        for (class, at_least) in [
            ("ip checksum", 10_000),
            ("not ipv4", 10_000),
            ("truncated", 1_000),
            ("tcp data offset", 1_000),
            ("option", 1_000),
            ("ok", 1_000),
        ] {
            let seen = classes.get(class).copied().unwrap_or(0);
            assert!(
                seen >= at_least,
                "{class}: {seen} < {at_least}: {classes:?}"
            );
        }
    }

    #[test]
    fn random_option_areas_walk_safely() {
        let mut rng = SplitMix64::new(0x5eed_0002);
        let mut errors = 0;
        let mut buf = [0u8; 40];
        for i in 0..RANDOM_INPUTS {
            let len = below(&mut rng, 41);
            if i % 2 == 0 {
                rng.fill_bytes(&mut buf[..len]);
                check_walker(&buf[..len]);
            } else {
                let soup = option_soup(&mut rng, len);
                check_walker(&soup);
                errors += usize::from(TcpOptionIter::new(&soup).any(|o| o.is_err()));
            }
        }
        assert!(
            errors > 1_000 && errors < RANDOM_INPUTS / 2 - 1_000,
            "{errors}"
        );
    }

    #[test]
    fn mutated_valid_packets_never_panic_and_reemit() {
        let mut rng = SplitMix64::new(0x5eed_0003);
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..MUTATED_INPUTS {
            let mut packet = valid_packet(&mut rng);
            assert_eq!(check_packet(&packet), "ok", "valid packet must parse");
            match i % 6 {
                // A few bit flips, checksums left as they are.
                0 => {
                    for _ in 0..1 + below(&mut rng, 3) {
                        let bit = below(&mut rng, packet.len() * 8);
                        packet[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                // Bit flips in the headers, checksums repaired: the flips
                // reach length fields, flags, data offset and options.
                1 => {
                    let ihl = 20;
                    let header_end = ihl + usize::from(packet[ihl + 12] >> 4) * 4;
                    for _ in 0..1 + below(&mut rng, 3) {
                        let bit = below(&mut rng, header_end * 8);
                        packet[bit / 8] ^= 1 << (bit % 8);
                    }
                    repair_checksums(&mut packet);
                }
                // Truncated anywhere.
                2 => {
                    let keep = below(&mut rng, packet.len());
                    packet.truncate(keep);
                }
                // Random trailing bytes (link padding): must still parse.
                3 => {
                    let extra = 1 + below(&mut rng, 16);
                    for _ in 0..extra {
                        packet.push(rng.next_u32() as u8);
                    }
                }
                // Options replaced by random bytes of a random data offset.
                4 | 5 => {
                    let old_header = usize::from(packet[32] >> 4) * 4;
                    let payload = packet.split_off(20 + old_header);
                    packet.truncate(40);
                    let options_len = 4 * below(&mut rng, 11);
                    let options = if i % 6 == 4 {
                        let mut random = vec![0u8; options_len];
                        rng.fill_bytes(&mut random);
                        random
                    } else {
                        option_soup(&mut rng, options_len)
                    };
                    packet.extend(options);
                    packet.extend(payload);
                    packet[32] = (((20 + options_len) / 4) as u8) << 4 | (packet[32] & 0x0f);
                    let total = packet.len() as u16;
                    packet[2..4].copy_from_slice(&total.to_be_bytes());
                    repair_checksums(&mut packet);
                }
                _ => unreachable!(),
            }
            let class = check_packet(&packet);
            *classes.entry(class).or_default() += 1;
            if packet.len() > 40 {
                let header_end = (20 + usize::from(packet[32] >> 4) * 4).min(packet.len());
                check_walker(packet.get(40..header_end).unwrap_or_default());
            }
        }
        eprintln!("mutated packets: {classes:?}");
        // The harness must actually reach each layer, or it proves nothing.
        for (class, at_least) in [
            ("ok", 20_000),
            ("option", 5_000),
            ("tcp checksum", 5_000),
            ("ip checksum", 5_000),
            ("ip total length", 5_000),
            ("tcp data offset", 100),
            ("fragment", 500),
            ("not tcp", 500),
            ("too many options", 100),
        ] {
            let seen = classes.get(class).copied().unwrap_or(0);
            assert!(
                seen >= at_least,
                "{class}: {seen} < {at_least}: {classes:?}"
            );
        }
    }
}
