//! PROTOCOL.md §5, the option-space budgets: every row is built as a real
//! `TcpRepr`, emitted by the crate's emitter (its NOP alignment and packed
//! fallback included), and checked for the documented options length and,
//! for the handshake segments, the exact option bytes. Each emitted segment
//! must parse back to the same sustain options.

mod migrate_budget {
    use std::net::Ipv4Addr;

    use sustain_core::wire::{
        AddressUpdate, Migrate, MigrateAck, MigrateConfirm, MigrateOption, MigratePermit,
        MigrationOptions, MigrationScratch, OptionScratch, RelayMsyn, RelayMsynAck, RelayTicket,
        SackBlock, SeqNumber, TcpFlags, TcpRepr, Timestamps, WireError,
    };

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
    const MAC: [u8; 8] = [0x81, 0x61, 0x73, 0xd7, 0x17, 0x9a, 0x9d, 0xa9];
    const TS: Timestamps = Timestamps {
        tsval: 0x0000_0100,
        tsecr: 0x0000_0200,
    };

    fn permit(key: Option<u64>) -> MigratePermit {
        MigratePermit {
            addr: SRC,
            port: 51234,
            key,
        }
    }

    fn block(n: u32) -> Option<SackBlock> {
        Some(SackBlock {
            left: SeqNumber(n),
            right: SeqNumber(n + 100),
        })
    }

    /// Attaches `options` to `base`, emits, checks the options length, parses
    /// the segment back and checks the sustain options survived. Returns the
    /// options area.
    fn check(base: TcpRepr<'_>, options: MigrationOptions<'_>, options_len: usize) -> Vec<u8> {
        let mut scratch = MigrationScratch::default();
        let mut repr = base;
        options.attach(&mut scratch, &mut repr).unwrap();
        assert_eq!(repr.options_len(), options_len, "{repr:?}");
        let mut buf = vec![0u8; repr.buffer_len()];
        let n = repr.emit(SRC, DST, &mut buf).unwrap();
        let parsed = TcpRepr::parse(SRC, DST, &buf[..n]).unwrap();
        assert_eq!(parsed, repr);
        assert_eq!(MigrationOptions::from_repr(&parsed), Ok(options));
        buf[20..20 + options_len].to_vec()
    }

    fn syn_base(flags: TcpFlags) -> TcpRepr<'static> {
        TcpRepr {
            flags,
            mss: Some(1460),
            sack_permitted: true,
            timestamps: Some(TS),
            window_scale: Some(7),
            ..TcpRepr::default()
        }
    }

    #[test]
    fn syn_and_syn_ack_carry_the_full_permit() {
        for flags in [TcpFlags::SYN, TcpFlags::SYN | TcpFlags::ACK] {
            let options = MigrationOptions {
                permit: Some(permit(Some(0x0123_4567_89ab_cdef))),
                ..MigrationOptions::default()
            };
            let area = check(syn_base(flags), options, 40);
            // MSS, SACK-perm, TS, NOP, WS (Linux order), Permit, 2 x EOL.
            assert_eq!(
                hex::encode(area),
                "020405b40402080a000001000000020001030307\
                 fd125e9ac000020ac8220123456789abcdef0000"
            );
        }
    }

    #[test]
    fn msyn() {
        let options = MigrationOptions {
            migrate: Some(MigrateOption::Msyn(Migrate {
                token: 0x18f9_781b,
                request: 1,
                mac: MAC,
            })),
            permit: Some(permit(None)),
            ..MigrationOptions::default()
        };
        let base = TcpRepr {
            flags: TcpFlags::SYN,
            mss: Some(1460),
            window_scale: Some(7),
            ..TcpRepr::default()
        };
        let area = check(base.clone(), options, 40);
        assert_eq!(
            hex::encode(area),
            "020405b401030307fd140a2118f9781b00000001816173d7179a9da9\
             fd0a5e9ac000020ac8220000"
        );
        // Connection negotiated no window scaling: 36.
        let no_ws = TcpRepr {
            window_scale: None,
            ..base.clone()
        };
        check(no_ws, options, 36);
        // Why an MSYN carries no timestamps: with them it does not fit.
        let with_ts = TcpRepr {
            timestamps: Some(TS),
            ..base
        };
        let mut scratch = MigrationScratch::default();
        let mut repr = with_ts;
        options.attach(&mut scratch, &mut repr).unwrap();
        let mut buf = [0u8; 128];
        // Aligned 4+12+4+20+10 = 50; packed 4+10+3+20+10 = 47 -> 48.
        assert_eq!(
            repr.emit(SRC, DST, &mut buf),
            Err(WireError::OptionsTooLong(48))
        );
    }

    #[test]
    fn msyn_ack() {
        let options = MigrationOptions {
            migrate: Some(MigrateOption::MsynAck(MigrateAck {
                token: 0x55c5_3f5d,
                request: 1,
                nonce: 0x5eed_1234,
                received: Some(0x01_2345),
                mac: MAC,
            })),
            ..MigrationOptions::default()
        };
        let base = TcpRepr {
            flags: TcpFlags::SYN | TcpFlags::ACK,
            timestamps: Some(Timestamps {
                tsval: 0x100,
                tsecr: 0,
            }),
            window_scale: Some(7),
            ..TcpRepr::default()
        };
        // PROTOCOL.md §5.4: TS 12 + NOP,WS 4 + Migrate 27 = 43 aligned;
        // packed TS 10 + WS 3 + 27 = 40 exactly.
        let area = check(base.clone(), options, 40);
        assert_eq!(
            hex::encode(area),
            "080a0000010000000000030307\
             fd1b0a2155c53f5d000000015eed1234012345816173d7179a9da9"
        );
        let no_ts = TcpRepr {
            timestamps: None,
            ..base.clone()
        };
        check(no_ts, options, 32);
        let neither = TcpRepr {
            timestamps: None,
            window_scale: None,
            ..base.clone()
        };
        check(neither, options, 28);
        // No room left for MSS next to TS + WS: 4 + 40 = 44 packed.
        let with_mss = TcpRepr {
            mss: Some(1460),
            ..base
        };
        assert_eq!(with_mss.options_len(), 20);
        let mut scratch = MigrationScratch::default();
        let mut repr = with_mss;
        options.attach(&mut scratch, &mut repr).unwrap();
        assert_eq!(repr.options_len(), 44);
    }

    #[test]
    fn final_ack_and_confirming_data() {
        let options = MigrationOptions {
            migrate: Some(MigrateOption::Confirm(MigrateConfirm {
                request: 1,
                nonce: 0x5eed_1234,
                received: Some(0x2d0),
            })),
            ..MigrationOptions::default()
        };
        let ack = TcpRepr {
            flags: TcpFlags::ACK,
            timestamps: Some(TS),
            ..TcpRepr::default()
        };
        let area = check(ack.clone(), options, 28);
        assert_eq!(
            hex::encode(area),
            "0101080a0000010000000200fd100a21000000015eed1234000002d0"
        );
        // Data carrying the confirmation still has room for one SACK block
        // (12 + 12 + 16 = 40); two do not fit even packed (10 + 18 + 16).
        let payload = [0u8; 100];
        let one = TcpRepr {
            sack_blocks: [block(1000), None, None, None],
            payload: &payload,
            ..ack.clone()
        };
        check(one, options, 40);
        let two = TcpRepr {
            sack_blocks: [block(1000), block(3000), None, None],
            payload: &payload,
            ..ack
        };
        let mut scratch = MigrationScratch::default();
        let mut repr = two;
        options.attach(&mut scratch, &mut repr).unwrap();
        assert_eq!(repr.options_len(), 44);
    }

    #[test]
    fn continuation_mode_data() {
        let options = MigrationOptions {
            address_update: Some(AddressUpdate {
                old_addr: Ipv4Addr::new(198, 51, 100, 7),
                token: 0x18f9_781b,
                request: 2,
                mac: MAC,
            }),
            ..MigrationOptions::default()
        };
        let payload = [0u8; 1000];
        let data = TcpRepr {
            flags: TcpFlags::ACK | TcpFlags::PSH,
            timestamps: Some(TS),
            payload: &payload,
            ..TcpRepr::default()
        };
        check(data.clone(), options, 36);
        // A pure ACK announcing the move is the same size.
        let announce = TcpRepr {
            payload: &[],
            flags: TcpFlags::ACK,
            ..data.clone()
        };
        check(announce, options, 36);
        // With timestamps, not even one SACK block fits: 10 + 10 + 24 = 44.
        let with_sack = TcpRepr {
            sack_blocks: [block(1), None, None, None],
            ..data.clone()
        };
        let mut scratch = MigrationScratch::default();
        let mut repr = with_sack;
        options.attach(&mut scratch, &mut repr).unwrap();
        assert_eq!(repr.options_len(), 44);
        // Without timestamps, one block fits (NOP,NOP,SACK 12 + 24 = 36).
        let no_ts_one = TcpRepr {
            timestamps: None,
            sack_blocks: [block(1), None, None, None],
            ..data
        };
        check(no_ts_one, options, 36);
    }

    #[test]
    fn relay_msyn_and_msyn_ack() {
        // PROTOCOL.md §5.7: MSS 4 + NOP,WS 4 + Relay-Ticket 20 + Permit 10
        // = 38, padded 40; Relay-Ticket replaces Migrate.
        let mut scratch = OptionScratch::default();
        let ticket = RelayTicket::Msyn(RelayMsyn {
            ticket: 0xdead_beef,
            request: 1,
            mac: MAC,
        });
        let options = MigrationOptions {
            permit: Some(permit(None)),
            relay_ticket: Some(ticket.to_option(&mut scratch).data),
            ..MigrationOptions::default()
        };
        let base = TcpRepr {
            flags: TcpFlags::SYN,
            mss: Some(1460),
            window_scale: Some(7),
            ..TcpRepr::default()
        };
        let area = check(base.clone(), options, 40);
        assert_eq!(&area[8..12], &[253, 10, 0x5e, 0x9a]);
        assert_eq!(&area[18..22], &[253, 20, 0xab, 0x48]);
        // Migrate and Relay-Ticket together do not fit (20 + 20 + 18 > 40).
        let migrate = MigrateOption::Msyn(Migrate {
            token: 1,
            request: 1,
            mac: MAC,
        });
        let both = MigrationOptions {
            migrate: Some(migrate),
            ..options
        };
        let mut scratch2 = MigrationScratch::default();
        let mut repr = base;
        both.attach(&mut scratch2, &mut repr).unwrap();
        let mut buf = vec![0u8; 120];
        assert!(matches!(
            repr.emit(SRC, DST, &mut buf),
            Err(WireError::OptionsTooLong(_))
        ));

        // The proxy's MSYN-ACK: WS 3 + Relay-Ticket 27 = 30, padded 32 (no
        // timestamps, §6.9; no MSS, as §5.4).
        let mut scratch = OptionScratch::default();
        let ack = RelayTicket::MsynAck(RelayMsynAck {
            ticket: 0xdead_beef,
            request: 1,
            nonce: 0x5eed_1234,
            received: 0x01_2345,
            mac: MAC,
        });
        let options = MigrationOptions {
            relay_ticket: Some(ack.to_option(&mut scratch).data),
            ..MigrationOptions::default()
        };
        let base = TcpRepr {
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window_scale: Some(7),
            ..TcpRepr::default()
        };
        check(base, options, 32);
    }

    #[test]
    fn plain_segments_for_reference() {
        // What the budgets are measured against: a Linux-style SYN is 20,
        // a data segment with TS 12, with TS and 3 SACK blocks 40.
        assert_eq!(syn_base(TcpFlags::SYN).options_len(), 20);
        let data = TcpRepr {
            flags: TcpFlags::ACK,
            timestamps: Some(TS),
            ..TcpRepr::default()
        };
        assert_eq!(data.options_len(), 12);
        let sack3 = TcpRepr {
            sack_blocks: [block(1), block(300), block(600), None],
            ..data
        };
        assert_eq!(sack3.options_len(), 40);
    }
}
