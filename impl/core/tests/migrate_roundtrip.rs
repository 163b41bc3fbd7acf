//! Property tests and a seeded robustness loop for sustain's options:
//! every representable option survives emit -> walk -> parse unchanged,
//! inside whole segments too; hostile option data (100k random blobs and
//! random option sets) never panics, and whatever parses re-emits to the
//! same bytes.

mod migrate_roundtrip {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;
    use sustain_core::rand::{Random, SplitMix64};
    use sustain_core::wire::migrate::{OptionScratch, MAX_ACK_RECEIVED, MAX_DATA_LEN};
    use sustain_core::wire::{
        AddressUpdate, ExperimentalOption, Migrate, MigrateAck, MigrateConfirm, MigrateOption,
        MigratePermit, MigrationOptions, MigrationScratch, TcpFlags, TcpOption, TcpOptionIter,
        TcpRepr, Timestamps, WireError, EXID_ADDRESS_UPDATE, EXID_MIGRATE, EXID_MIGRATE_PERMIT,
        EXID_RELAY_TICKET, MAX_OPTIONS_LEN,
    };

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn permit() -> impl Strategy<Value = MigratePermit> {
        (any::<u32>(), any::<u16>(), any::<Option<u64>>()).prop_map(|(addr, port, key)| {
            MigratePermit {
                addr: Ipv4Addr::from(addr),
                port,
                key,
            }
        })
    }

    fn migrate() -> impl Strategy<Value = MigrateOption> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<[u8; 8]>()).prop_map(|(token, request, mac)| {
                MigrateOption::Msyn(Migrate {
                    token,
                    request,
                    mac,
                })
            }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(0..=MAX_ACK_RECEIVED),
                any::<[u8; 8]>()
            )
                .prop_map(|(token, request, nonce, received, mac)| {
                    MigrateOption::MsynAck(MigrateAck {
                        token,
                        request,
                        nonce,
                        received,
                        mac,
                    })
                }),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(request, nonce, received)| MigrateOption::Confirm(
                    MigrateConfirm {
                        request,
                        nonce,
                        received
                    }
                )),
        ]
    }

    fn address_update() -> impl Strategy<Value = AddressUpdate> {
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<[u8; 8]>()).prop_map(
            |(old, token, request, mac)| AddressUpdate {
                old_addr: Ipv4Addr::from(old),
                token,
                request,
                mac,
            },
        )
    }

    /// Emits `option` as a whole TCP option and walks it back.
    fn walk_back(option: ExperimentalOption<'_>) -> (u16, Vec<u8>) {
        let mut buf = [0u8; 64];
        let n = TcpOption::Experimental(option).emit(&mut buf).unwrap();
        assert_eq!(usize::from(buf[1]), n, "length byte");
        let mut iter = TcpOptionIter::new(&buf[..n]);
        match iter.next() {
            Some(Ok(TcpOption::Experimental(exp))) => (exp.exid, exp.data.to_vec()),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn permit_round_trips(p in permit()) {
            let mut scratch = OptionScratch::default();
            let (exid, data) = walk_back(p.to_option(&mut scratch));
            prop_assert_eq!(exid, EXID_MIGRATE_PERMIT);
            prop_assert_eq!(data.len(), p.buffer_len());
            prop_assert_eq!(MigratePermit::parse(&data), Ok(p));
        }

        #[test]
        fn migrate_round_trips(m in migrate()) {
            let mut scratch = OptionScratch::default();
            let (exid, data) = walk_back(m.to_option(&mut scratch));
            prop_assert_eq!(exid, EXID_MIGRATE);
            prop_assert_eq!(data.len(), m.buffer_len());
            prop_assert_eq!(MigrateOption::parse(&data), Ok(m));
        }

        #[test]
        fn address_update_round_trips(a in address_update()) {
            let mut scratch = OptionScratch::default();
            let (exid, data) = walk_back(a.to_option(&mut scratch));
            prop_assert_eq!(exid, EXID_ADDRESS_UPDATE);
            prop_assert_eq!(AddressUpdate::parse(&data), Ok(a));
        }

        /// Any combination in a segment: fits and round-trips through
        /// emit/parse/from_repr, or is refused with OptionsTooLong.
        #[test]
        fn options_round_trip_in_segments(
            p in proptest::option::of(permit()),
            m in proptest::option::of(migrate()),
            a in proptest::option::of(address_update()),
            ticket in proptest::option::of(prop_oneof![
                proptest::collection::vec(any::<u8>(), 16..=16),
                proptest::collection::vec(any::<u8>(), 23..=23),
            ]),
            ts in any::<Option<(u32, u32)>>(),
            ws in proptest::option::of(0u8..=14),
            mss in any::<Option<u16>>(),
            syn in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let options = MigrationOptions {
                permit: p,
                migrate: m,
                address_update: a,
                relay_ticket: ticket.as_deref(),
            };
            let base = TcpRepr {
                src_port: 51234,
                dst_port: 443,
                flags: if syn { TcpFlags::SYN } else { TcpFlags::ACK },
                timestamps: ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                window_scale: ws,
                mss,
                payload: &payload,
                ..TcpRepr::default()
            };
            let mut scratch = MigrationScratch::default();
            let mut repr = base;
            options.attach(&mut scratch, &mut repr).unwrap();
            let mut buf = vec![0u8; 200];
            match repr.emit(SRC, DST, &mut buf) {
                Ok(n) => {
                    prop_assert!(repr.options_len() <= MAX_OPTIONS_LEN);
                    let parsed = TcpRepr::parse(SRC, DST, &buf[..n]).unwrap();
                    prop_assert_eq!(&parsed, &repr);
                    prop_assert_eq!(MigrationOptions::from_repr(&parsed), Ok(options));
                }
                Err(err) => {
                    prop_assert!(repr.options_len() > MAX_OPTIONS_LEN);
                    prop_assert_eq!(err, WireError::OptionsTooLong(repr.options_len()));
                }
            }
        }
    }

    const OUR_EXIDS: [u16; 4] = [
        EXID_MIGRATE_PERMIT,
        EXID_MIGRATE,
        EXID_ADDRESS_UPDATE,
        EXID_RELAY_TICKET,
    ];
    const RANDOM_BLOBS: usize = 100_000;

    fn below(rng: &mut SplitMix64, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    fn random_blob(rng: &mut SplitMix64) -> Vec<u8> {
        // Lengths up to the most an option can carry (40 - 4), weighted so
        // the valid lengths 6, 8, 14, 16, 20 are hit often.
        let len = if rng.next_u64() & 1 == 0 {
            [6usize, 8, 14, 16, 20][below(rng, 5)]
        } else {
            below(rng, MAX_OPTIONS_LEN - 4 + 1)
        };
        let mut blob = vec![0u8; len];
        rng.fill_bytes(&mut blob);
        blob
    }

    /// Every parser on every blob: no panic, errors only of the documented
    /// kind, and anything accepted re-emits to exactly the input.
    #[test]
    fn random_option_data_never_panics() {
        let mut rng = SplitMix64::new(0x5eed_0001);
        let mut accepted = [0usize; 3];
        for _ in 0..RANDOM_BLOBS {
            let blob = random_blob(&mut rng);
            let bad_len = Err(WireError::BadOptionLength {
                kind: 253,
                len: 4 + blob.len(),
            });
            let mut out = [0u8; MAX_DATA_LEN];

            match MigratePermit::parse(&blob) {
                Ok(p) => {
                    accepted[0] += 1;
                    let n = p.emit(&mut out).unwrap();
                    assert_eq!(&out[..n], &blob[..]);
                }
                Err(e) => assert_eq!(Err::<(), _>(e), bad_len),
            }
            match MigrateOption::parse(&blob) {
                Ok(m) => {
                    accepted[1] += 1;
                    let n = m.emit(&mut out).unwrap();
                    assert_eq!(&out[..n], &blob[..]);
                }
                Err(e) => assert_eq!(Err::<(), _>(e), bad_len),
            }
            match AddressUpdate::parse(&blob) {
                Ok(a) => {
                    accepted[2] += 1;
                    let n = a.emit(&mut out).unwrap();
                    assert_eq!(&out[..n], &blob[..]);
                }
                Err(e) => assert_eq!(Err::<(), _>(e), bad_len),
            }
        }
        // The loop really exercised the accepting paths of every parser.
        assert!(accepted.iter().all(|&n| n > 10_000), "{accepted:?}");
    }

    /// Random sets of up to four experimental options, ours and others,
    /// duplicates included: `from_options` never panics, and a success
    /// means each of our ExIDs appeared at most once with a valid length.
    #[test]
    fn random_option_sets_never_panic() {
        let mut rng = SplitMix64::new(0x5eed_0002);
        let mut outcomes = [0usize; 3]; // ok, too many, bad length
        for _ in 0..RANDOM_BLOBS / 4 {
            let count = below(&mut rng, 5);
            let blobs: Vec<(u16, Vec<u8>)> = (0..count)
                .map(|_| {
                    let exid = if rng.next_u64() & 3 == 0 {
                        rng.next_u32() as u16
                    } else {
                        OUR_EXIDS[below(&mut rng, 4)]
                    };
                    let mut blob = random_blob(&mut rng);
                    if exid == EXID_RELAY_TICKET {
                        // Relay-Ticket's forms are 16 and 23 bytes (other
                        // lengths: `wire::migrate` unit tests).
                        blob.resize(16 + 7 * below(&mut rng, 2), 0xab);
                    }
                    (exid, blob)
                })
                .collect();
            let options = blobs
                .iter()
                .map(|(exid, data)| ExperimentalOption { exid: *exid, data });
            match MigrationOptions::from_options(options) {
                Ok(found) => {
                    outcomes[0] += 1;
                    for exid in OUR_EXIDS {
                        let n = blobs.iter().filter(|(e, _)| *e == exid).count();
                        assert!(n <= 1, "{exid:04x} appeared {n} times");
                    }
                    let ours = blobs.iter().filter(|(e, _)| OUR_EXIDS.contains(e)).count();
                    let present = usize::from(found.permit.is_some())
                        + usize::from(found.migrate.is_some())
                        + usize::from(found.address_update.is_some())
                        + usize::from(found.relay_ticket.is_some());
                    assert_eq!(present, ours);
                }
                Err(WireError::TooManyOptions) => outcomes[1] += 1,
                Err(WireError::BadOptionLength { kind: 253, .. }) => outcomes[2] += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(outcomes.iter().all(|&n| n > 1000), "{outcomes:?}");
    }
}
