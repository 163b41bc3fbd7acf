//! Property tests: any `TcpRepr` within the 40-byte option budget survives
//! emit -> parse unchanged (alone and inside IPv4); anything over it is
//! refused with `OptionsTooLong` and nothing written; option lists survive
//! emit -> walk.

mod wire_roundtrip {
    use std::net::Ipv4Addr;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use sustain_core::wire::{
        emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, ExperimentalOption, Ipv4Repr, SackBlock,
        SeqNumber, TcpFlags, TcpOption, TcpOptionIter, TcpRepr, Timestamps, WireError,
        MAX_OPTIONS_LEN,
    };

    /// Owned inputs for a `TcpRepr` (which borrows its payload and data).
    #[derive(Debug, Clone)]
    struct Segment {
        ports: (u16, u16),
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        mss: Option<u16>,
        window_scale: Option<u8>,
        sack_permitted: bool,
        timestamps: Option<(u32, u32)>,
        sack: Vec<(u32, u32)>,
        experimental: Vec<(u16, Vec<u8>)>,
        payload: Vec<u8>,
    }

    impl Segment {
        fn repr(&self) -> TcpRepr<'_> {
            let mut sack_blocks = [None; 4];
            for (slot, &(left, right)) in sack_blocks.iter_mut().zip(&self.sack) {
                *slot = Some(SackBlock {
                    left: SeqNumber(left),
                    right: SeqNumber(right),
                });
            }
            let mut experimental = [None; 4];
            for (slot, (exid, data)) in experimental.iter_mut().zip(&self.experimental) {
                *slot = Some(ExperimentalOption { exid: *exid, data });
            }
            TcpRepr {
                src_port: self.ports.0,
                dst_port: self.ports.1,
                seq: SeqNumber(self.seq),
                ack: SeqNumber(self.ack),
                flags: TcpFlags(self.flags),
                window: self.window,
                urgent: self.urgent,
                mss: self.mss,
                window_scale: self.window_scale,
                sack_permitted: self.sack_permitted,
                sack_blocks,
                timestamps: self
                    .timestamps
                    .map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                experimental,
                payload: &self.payload,
            }
        }

        /// Option bytes with no alignment NOPs, rounded up to a word: what
        /// the options need at the very least.
        fn packed_options_len(&self) -> usize {
            let raw = self.mss.map_or(0, |_| 4)
                + self.window_scale.map_or(0, |_| 3)
                + if self.sack_permitted { 2 } else { 0 }
                + self.timestamps.map_or(0, |_| 10)
                + if self.sack.is_empty() {
                    0
                } else {
                    2 + 8 * self.sack.len()
                }
                + self
                    .experimental
                    .iter()
                    .map(|(_, d)| 4 + d.len())
                    .sum::<usize>();
            raw.next_multiple_of(4)
        }
    }

    impl Segment {
        /// Option bytes laid out like Linux: `NOP,NOP,TS` (or `SACK-perm,TS`),
        /// `NOP,NOP,SACK-perm` without TS, `NOP,WS`, `NOP,NOP,SACK`, then
        /// experimental options, rounded up to a word.
        fn aligned_options_len(&self) -> usize {
            let raw = self.mss.map_or(0, |_| 4)
                + match (self.timestamps.is_some(), self.sack_permitted) {
                    (true, _) => 12,
                    (false, true) => 4,
                    (false, false) => 0,
                }
                + self.window_scale.map_or(0, |_| 4)
                + if self.sack.is_empty() {
                    0
                } else {
                    4 + 8 * self.sack.len()
                }
                + self
                    .experimental
                    .iter()
                    .map(|(_, d)| 4 + d.len())
                    .sum::<usize>();
            raw.next_multiple_of(4)
        }
    }

    fn segment() -> impl Strategy<Value = Segment> {
        (
            (any::<(u16, u16)>(), any::<u32>(), any::<u32>(), any::<u8>()),
            (any::<u16>(), any::<u16>()),
            (
                proptest::option::of(any::<u16>()),
                proptest::option::of(any::<u8>()),
                any::<bool>(),
                proptest::option::of(any::<(u32, u32)>()),
            ),
            vec(any::<(u32, u32)>(), 0..=4),
            vec((any::<u16>(), vec(any::<u8>(), 0..=14)), 0..=4),
            vec(any::<u8>(), 0..=300),
        )
            .prop_map(
                |(
                    (ports, seq, ack, flags),
                    (window, urgent),
                    (mss, window_scale, sack_permitted, timestamps),
                    sack,
                    experimental,
                    payload,
                )| Segment {
                    ports,
                    seq,
                    ack,
                    flags,
                    window,
                    urgent,
                    mss,
                    window_scale,
                    sack_permitted,
                    timestamps,
                    sack,
                    experimental,
                    payload,
                },
            )
    }

    fn ip_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(|(src, dst, ttl, ident, dont_fragment)| Ipv4Repr {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                ttl,
                ident,
                dont_fragment,
            })
    }

    /// Offset (within the options area) of each option of `kind`.
    fn offsets_of(options: &[u8], kind: u8) -> Vec<usize> {
        let mut at = 0;
        let mut found = Vec::new();
        for option in TcpOptionIter::new(options) {
            let option = option.expect("emitted options walk cleanly");
            if option.kind() == kind {
                found.push(at);
            }
            at += option.buffer_len();
        }
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn tcp_emit_parse_round_trip(seg in segment(), ip in ip_repr()) {
            let repr = seg.repr();
            let fits = seg.packed_options_len() <= MAX_OPTIONS_LEN;
            let mut buf = vec![0xeeu8; 20 + 60 + seg.payload.len() + 8];
            if !fits {
                prop_assert_eq!(repr.options_len(), seg.packed_options_len());
                prop_assert_eq!(
                    repr.emit(ip.src, ip.dst, &mut buf),
                    Err(WireError::OptionsTooLong(seg.packed_options_len()))
                );
                prop_assert_eq!(
                    emit_ipv4_tcp(&ip, &repr, &mut buf),
                    Err(WireError::OptionsTooLong(seg.packed_options_len()))
                );
                prop_assert!(buf.iter().all(|&b| b == 0xee), "nothing written");
                return Ok(());
            }

            // Linux's aligned layout when it fits, else the packed one.
            let aligned = seg.aligned_options_len() <= MAX_OPTIONS_LEN;
            let options_len = repr.options_len();
            let expected_len = if aligned {
                seg.aligned_options_len()
            } else {
                seg.packed_options_len()
            };
            prop_assert_eq!(options_len, expected_len);

            let n = repr.emit(ip.src, ip.dst, &mut buf).unwrap();
            prop_assert_eq!(n, repr.buffer_len());
            prop_assert_eq!(usize::from(buf[12] >> 4) * 4, 20 + options_len);
            prop_assert!(buf[n..].iter().all(|&b| b == 0xee), "wrote past the end");
            let parsed = TcpRepr::parse(ip.src, ip.dst, &buf[..n]).unwrap();
            prop_assert_eq!(&parsed, &repr);

            // In the aligned layout the timestamp and SACK values start on a
            // 4-byte boundary (their kind byte at 2 mod 4), as with Linux.
            let options = &buf[20..20 + options_len];
            if aligned {
                for kind in [8u8, 5] {
                    for at in offsets_of(options, kind) {
                        prop_assert_eq!(at % 4, 2, "kind {} at {}", kind, at);
                    }
                }
            }

            // The same inside IPv4.
            let mut packet = vec![0u8; ipv4_tcp_len(&repr)];
            let m = emit_ipv4_tcp(&ip, &repr, &mut packet).unwrap();
            prop_assert_eq!(m, packet.len());
            prop_assert_eq!(&packet[20..], &buf[..n]);
            let (ip2, tcp2) = parse_ipv4_tcp(&packet).unwrap();
            prop_assert_eq!(ip2, ip);
            prop_assert_eq!(tcp2, repr);
        }

        #[test]
        fn option_list_emit_walk_round_trip(kinds in vec(0u8..9, 0..12), values in vec(any::<u32>(), 12), data in vec(any::<u8>(), 0..12)) {
            // Build a list of well-formed options from the drawn selectors.
            let mut options = Vec::new();
            for (kind, value) in kinds.iter().zip(&values) {
                let option = match kind {
                    0 => TcpOption::NoOperation,
                    1 => TcpOption::MaxSegmentSize(*value as u16),
                    2 => TcpOption::WindowScale(*value as u8),
                    3 => TcpOption::SackPermitted,
                    4 => TcpOption::Timestamps(Timestamps { tsval: *value, tsecr: !*value }),
                    5 => {
                        let mut blocks = [None; 4];
                        for (i, slot) in blocks.iter_mut().take(1 + (*value as usize % 4)).enumerate() {
                            *slot = Some(SackBlock {
                                left: SeqNumber(value.wrapping_add(i as u32)),
                                right: SeqNumber(value.wrapping_mul(3)),
                            });
                        }
                        TcpOption::Sack(blocks)
                    }
                    6 => TcpOption::Experimental(ExperimentalOption {
                        exid: *value as u16,
                        data: &data[..(*value as usize) % (data.len() + 1)],
                    }),
                    // Kinds nobody assigned to us: 6, 7, 9..=252 except 253.
                    7 => TcpOption::Unknown {
                        kind: [6u8, 7, 9, 30, 34, 252, 254, 255][*value as usize % 8],
                        data: &data[..(*value as usize) % (data.len() + 1)],
                    },
                    _ => TcpOption::EndOfList,
                };
                options.push(option);
                if option == TcpOption::EndOfList {
                    break;
                }
            }
            let mut wire = Vec::new();
            for option in &options {
                let mut buf = [0u8; 64];
                let n = option.emit(&mut buf).unwrap();
                prop_assert_eq!(n, option.buffer_len());
                wire.extend_from_slice(&buf[..n]);
            }
            // Trailing garbage after EOL is never read.
            if options.last() == Some(&TcpOption::EndOfList) {
                wire.extend([2, 0, 0xff]);
            }
            let walked: Vec<TcpOption<'_>> = TcpOptionIter::new(&wire).map(Result::unwrap).collect();
            prop_assert_eq!(walked, options);
        }
    }
}
