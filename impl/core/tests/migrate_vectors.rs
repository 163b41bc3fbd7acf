//! The test vectors of PROTOCOL.md §4.6 and §3.7, in both directions: the
//! code computes tokens, MAC messages, MACs and option bytes and must match
//! the literals printed in the document (which were cross-checked against
//! Python's hashlib/hmac), and the literals must verify (and any flipped bit
//! must not).

mod migrate_vectors {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use sustain_core::auth::{
        mac, mac_address_update, mac_msyn, mac_msyn_ack, token_of, verify, ConnectionKeys, Key,
        MacInput, RequestNumber, Token,
    };
    use sustain_core::wire::migrate::Mac;
    use sustain_core::wire::{
        AddressUpdate, Migrate, MigrateAck, MigrateConfirm, MigrateOption, MigratePermit,
        MigrationOptions, TcpOption, EXID_ADDRESS_UPDATE, EXID_MIGRATE, EXID_MIGRATE_PERMIT,
        EXID_RELAY_TICKET,
    };

    // PROTOCOL.md §4.6, "Inputs".
    const KEY_A: Key = Key(0x0123_4567_89ab_cdef);
    const KEY_B: Key = Key(0xfedc_ba98_7654_3210);
    const MOVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 51234);
    const OLD_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const NONCE: u32 = 0x5eed_1234;

    // PROTOCOL.md §4.6, "Outputs".
    const TOKEN_A: &str = "55c53f5d";
    const TOKEN_B: &str = "18f9781b";
    const MSYN_MESSAGE: &str = "7375737461696e204d53594e0018f9781b00000001c000020ac822";
    const MSYN_MAC: &str = "816173d7179a9da9";
    const MSYN_ACK_MESSAGE: &str =
        "7375737461696e204d53594e2d41434b0055c53f5d000000015eed1234c000020ac822";
    const MSYN_ACK_MAC: &str = "cd52ba2a401814f9";
    // Version 1 MSYN-ACK (fast resume): received offset 0x012345.
    const RECEIVED: u32 = 0x01_2345;
    const MSYN_ACK_V1_MESSAGE: &str =
        "7375737461696e204d53594e2d41434b0055c53f5d000000015eed1234c000020ac822012345";
    const MSYN_ACK_V1_MAC: &str = "3faf2fdd12c25ba0";
    const AU_MESSAGE: &str =
        "7375737461696e20414444524553532d5550444154450018f9781b00000002c6336407";
    const AU_MAC: &str = "f6be63c2fe112155";
    const WRAP_MESSAGE: &str = "7375737461696e204d53594e0018f9781bffffffff0a0102039c40";
    const WRAP_MAC: &str = "f9dd22ec300c7e27";

    // PROTOCOL.md §3.7: whole options (kind, length, ExID, data).
    const SYN_PERMIT_OPTION: &str = "fd125e9ac000020ac8220123456789abcdef";
    const MSYN_PERMIT_OPTION: &str = "fd0a5e9ac000020ac822";
    const MSYN_MIGRATE_OPTION: &str = "fd140a2118f9781b00000001816173d7179a9da9";
    const MSYN_ACK_MIGRATE_OPTION: &str = "fd180a2155c53f5d000000015eed1234cd52ba2a401814f9";
    const CONFIRM_OPTION: &str = "fd0c0a21000000015eed1234";
    const MSYN_ACK_V1_MIGRATE_OPTION: &str =
        "fd1b0a2155c53f5d000000015eed12340123453faf2fdd12c25ba0";
    /// Confirm with received offset 720 (0x2d0).
    const CONFIRM_V1_OPTION: &str = "fd100a21000000015eed1234000002d0";
    const AU_OPTION: &str = "fd183b4cc633640718f9781b00000002f6be63c2fe112155";

    fn mac_of(hex_str: &str) -> Mac {
        hex::decode(hex_str).unwrap().try_into().unwrap()
    }

    fn token_hex(token: Token) -> String {
        hex::encode(token.0.to_be_bytes())
    }

    /// Every single-bit flip of `tag` must fail verification.
    fn assert_flips_fail(check: impl Fn(&Mac) -> bool, tag: Mac) {
        assert!(check(&tag), "the literal itself must verify");
        for byte in 0..tag.len() {
            for bit in 0..8 {
                let mut bad = tag;
                bad[byte] ^= 1 << bit;
                assert!(!check(&bad), "flip byte {byte} bit {bit}");
            }
        }
    }

    fn msyn_input() -> MacInput {
        MacInput::Msyn {
            token: token_of(KEY_B),
            request: RequestNumber(1),
            mover: MOVER,
        }
    }

    fn msyn_ack_input() -> MacInput {
        MacInput::MsynAck {
            token: token_of(KEY_A),
            request: RequestNumber(1),
            nonce: NONCE,
            mover: MOVER,
            received: None,
        }
    }

    fn msyn_ack_v1_input() -> MacInput {
        MacInput::MsynAck {
            token: token_of(KEY_A),
            request: RequestNumber(1),
            nonce: NONCE,
            mover: MOVER,
            received: Some(RECEIVED),
        }
    }

    fn au_input() -> MacInput {
        MacInput::AddressUpdate {
            token: token_of(KEY_B),
            request: RequestNumber(2),
            old_addr: OLD_ADDR,
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(hex::encode(KEY_A.to_bytes()), "0123456789abcdef");
        assert_eq!(token_hex(token_of(KEY_A)), TOKEN_A);
        assert_eq!(token_hex(KEY_B.token()), TOKEN_B);
    }

    #[test]
    fn messages_are_byte_exact() {
        assert_eq!(hex::encode(msyn_input().message().as_bytes()), MSYN_MESSAGE);
        assert_eq!(
            hex::encode(msyn_ack_input().message().as_bytes()),
            MSYN_ACK_MESSAGE
        );
        assert_eq!(hex::encode(au_input().message().as_bytes()), AU_MESSAGE);
        assert_eq!(
            hex::encode(msyn_ack_v1_input().message().as_bytes()),
            MSYN_ACK_V1_MESSAGE
        );
    }

    #[test]
    fn msyn_mac_both_directions() {
        let computed = mac_msyn(KEY_A, KEY_B, RequestNumber(1), MOVER);
        assert_eq!(hex::encode(computed), MSYN_MAC);
        assert_eq!(mac(KEY_A, KEY_B, &msyn_input()), computed);
        // The responder B verifies what A sent (sender key A first).
        let at_b = ConnectionKeys {
            local: KEY_B,
            remote: KEY_A,
        };
        assert_flips_fail(|tag| at_b.verify(&msyn_input(), tag), mac_of(MSYN_MAC));
        // Key order matters: the same tag is not A's to receive.
        assert!(!verify(KEY_B, KEY_A, &msyn_input(), &mac_of(MSYN_MAC)));
    }

    #[test]
    fn msyn_ack_mac_both_directions() {
        let computed = mac_msyn_ack(KEY_B, KEY_A, RequestNumber(1), NONCE, MOVER, None);
        assert_eq!(hex::encode(computed), MSYN_ACK_MAC);
        let at_a = ConnectionKeys {
            local: KEY_A,
            remote: KEY_B,
        };
        assert_flips_fail(
            |tag| at_a.verify(&msyn_ack_input(), tag),
            mac_of(MSYN_ACK_MAC),
        );
        // The fast-resume form: the MAC covers the received offset, so
        // neither form's MAC verifies for the other (no downgrade, no
        // rewritten offset).
        let v1 = mac_msyn_ack(KEY_B, KEY_A, RequestNumber(1), NONCE, MOVER, Some(RECEIVED));
        assert_eq!(hex::encode(v1), MSYN_ACK_V1_MAC);
        assert_flips_fail(
            |tag| at_a.verify(&msyn_ack_v1_input(), tag),
            mac_of(MSYN_ACK_V1_MAC),
        );
        assert!(!at_a.verify(&msyn_ack_input(), &mac_of(MSYN_ACK_V1_MAC)));
        let other = MacInput::MsynAck {
            token: token_of(KEY_A),
            request: RequestNumber(1),
            nonce: NONCE,
            mover: MOVER,
            received: Some(RECEIVED + 1),
        };
        assert!(!at_a.verify(&other, &mac_of(MSYN_ACK_V1_MAC)));
    }

    #[test]
    fn address_update_mac_both_directions() {
        let computed = mac_address_update(KEY_A, KEY_B, RequestNumber(2), OLD_ADDR);
        assert_eq!(hex::encode(computed), AU_MAC);
        assert_flips_fail(|tag| verify(KEY_A, KEY_B, &au_input(), tag), mac_of(AU_MAC));
    }

    #[test]
    fn wrapped_request_number_vector() {
        let mover = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 40000);
        let input = MacInput::Msyn {
            token: token_of(KEY_B),
            request: RequestNumber(u32::MAX),
            mover,
        };
        assert_eq!(hex::encode(input.message().as_bytes()), WRAP_MESSAGE);
        assert_eq!(
            hex::encode(mac_msyn(KEY_A, KEY_B, RequestNumber(u32::MAX), mover)),
            WRAP_MAC
        );
    }

    #[test]
    fn every_covered_field_changes_the_mac() {
        let base = mac(KEY_A, KEY_B, &msyn_input());
        let variants = [
            MacInput::Msyn {
                token: Token(token_of(KEY_B).0 ^ 1),
                request: RequestNumber(1),
                mover: MOVER,
            },
            MacInput::Msyn {
                token: token_of(KEY_B),
                request: RequestNumber(2),
                mover: MOVER,
            },
            MacInput::Msyn {
                token: token_of(KEY_B),
                request: RequestNumber(1),
                mover: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 11), 51234),
            },
            MacInput::Msyn {
                token: token_of(KEY_B),
                request: RequestNumber(1),
                mover: SocketAddrV4::new(*MOVER.ip(), 51235),
            },
        ];
        for input in variants {
            assert_ne!(mac(KEY_A, KEY_B, &input), base, "{input:?}");
            assert!(!verify(KEY_A, KEY_B, &input, &base));
        }
        // Different keys, or the same fields under another label.
        assert_ne!(mac(KEY_A, Key(KEY_B.0 ^ 1), &msyn_input()), base);
        assert_ne!(mac(KEY_B, KEY_A, &msyn_input()), base);
    }

    /// The complete option as `TcpOption::emit` writes it.
    fn option_hex(option: sustain_core::wire::ExperimentalOption<'_>) -> String {
        let mut buf = [0u8; 40];
        let n = TcpOption::Experimental(option).emit(&mut buf).unwrap();
        hex::encode(&buf[..n])
    }

    #[test]
    fn option_bytes() {
        let mut scratch = Default::default();
        let syn_permit = MigratePermit {
            addr: *MOVER.ip(),
            port: MOVER.port(),
            key: Some(KEY_A.0),
        };
        assert_eq!(
            option_hex(syn_permit.to_option(&mut scratch)),
            SYN_PERMIT_OPTION
        );

        let msyn_permit = MigratePermit {
            key: None,
            ..syn_permit
        };
        assert_eq!(
            option_hex(msyn_permit.to_option(&mut scratch)),
            MSYN_PERMIT_OPTION
        );

        let msyn = MigrateOption::Msyn(Migrate {
            token: token_of(KEY_B).0,
            request: 1,
            mac: mac_of(MSYN_MAC),
        });
        assert_eq!(
            option_hex(msyn.to_option(&mut scratch)),
            MSYN_MIGRATE_OPTION
        );

        let ack = MigrateOption::MsynAck(MigrateAck {
            token: token_of(KEY_A).0,
            request: 1,
            nonce: NONCE,
            received: None,
            mac: mac_of(MSYN_ACK_MAC),
        });
        assert_eq!(
            option_hex(ack.to_option(&mut scratch)),
            MSYN_ACK_MIGRATE_OPTION
        );
        let ack_v1 = MigrateOption::MsynAck(MigrateAck {
            token: token_of(KEY_A).0,
            request: 1,
            nonce: NONCE,
            received: Some(RECEIVED),
            mac: mac_of(MSYN_ACK_V1_MAC),
        });
        assert_eq!(
            option_hex(ack_v1.to_option(&mut scratch)),
            MSYN_ACK_V1_MIGRATE_OPTION
        );

        let confirm = MigrateOption::Confirm(MigrateConfirm {
            request: 1,
            nonce: NONCE,
            received: None,
        });
        assert_eq!(option_hex(confirm.to_option(&mut scratch)), CONFIRM_OPTION);
        let confirm_v1 = MigrateOption::Confirm(MigrateConfirm {
            request: 1,
            nonce: NONCE,
            received: Some(720),
        });
        assert_eq!(
            option_hex(confirm_v1.to_option(&mut scratch)),
            CONFIRM_V1_OPTION
        );

        let au = AddressUpdate {
            old_addr: OLD_ADDR,
            token: token_of(KEY_B).0,
            request: 2,
            mac: mac_of(AU_MAC),
        };
        assert_eq!(option_hex(au.to_option(&mut scratch)), AU_OPTION);
    }

    #[test]
    fn exids_are_the_documented_hash_prefixes() {
        use sha2::{Digest, Sha256};
        for (name, exid) in [
            ("Migrate-Permit", EXID_MIGRATE_PERMIT),
            ("Migrate", EXID_MIGRATE),
            ("Address-Update", EXID_ADDRESS_UPDATE),
            ("Relay-Ticket", EXID_RELAY_TICKET),
        ] {
            let digest = Sha256::digest(format!("sustain {name}").as_bytes());
            assert_eq!(exid.to_be_bytes(), [digest[0], digest[1]], "{name}");
        }
        // None is an ExID found assigned (PROTOCOL.md §3.1), nor the first
        // 16 bits of the assigned 32-bit one.
        for taken in [0x0348u16, 0x454e, 0xe2d4, 0xf989] {
            for ours in [
                EXID_MIGRATE_PERMIT,
                EXID_MIGRATE,
                EXID_ADDRESS_UPDATE,
                EXID_RELAY_TICKET,
            ] {
                assert_ne!(ours, taken);
            }
        }
    }

    #[test]
    fn documented_options_parse_back() {
        // Parse the documented option bytes the way a receiver does.
        let mut options = Vec::new();
        for hex_str in [MSYN_MIGRATE_OPTION, MSYN_PERMIT_OPTION] {
            options.push(hex::decode(hex_str).unwrap());
        }
        let parsed: Vec<_> = options
            .iter()
            .map(|bytes| {
                match sustain_core::wire::TcpOptionIter::new(bytes)
                    .next()
                    .unwrap()
                    .unwrap()
                {
                    TcpOption::Experimental(exp) => exp,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let found = MigrationOptions::from_options(parsed).unwrap();
        let Some(MigrateOption::Msyn(migrate)) = found.migrate else {
            panic!("{found:?}")
        };
        let permit = found.permit.unwrap();
        assert_eq!(permit.direct(), MOVER);
        assert_eq!(permit.key, None);
        // B finds the connection by token and verifies with the permit's
        // direct address, never the (possibly rewritten) IP source.
        assert_eq!(migrate.token, KEY_B.token().0);
        assert!(verify(
            KEY_A,
            KEY_B,
            &MacInput::Msyn {
                token: Token(migrate.token),
                request: RequestNumber(migrate.request),
                mover: permit.direct(),
            },
            &migrate.mac
        ));
    }
}
