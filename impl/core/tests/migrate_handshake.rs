//! PROTOCOL.md §4.5 and §6 as executable steps, at the byte level and
//! without the TCP state machine, driving the real handshake module
//! (`sustain_core::tcp::handshake`, which `Connection` and the relay use):
//! an MSYN built by the mover crosses a NAPT
//! that rewrites its address, port and sequence numbers, and the responder
//! still finds the connection by token, authenticates it with the direct
//! address from Migrate-Permit, detects the NAPT, and answers with an
//! MSYN-ACK whose nonce the mover's confirming ACK echoes. Forged, replayed,
//! reflected and misdirected MSYNs are refused.

mod migrate_handshake {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddrV4};

    use sustain_core::auth::{
        new_nonce, ConnectionKeys, Key, ReplayWindow, RequestCounter, RequestNumber, Token,
    };
    use sustain_core::rand::SplitMix64;
    use sustain_core::tcp::handshake::{self, Accepted, MsynVerdict};
    use sustain_core::wire::{
        emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, Ipv4Repr, Migrate, MigrateAck, MigrateOption,
        MigratePermit, MigrationOptions, MigrationScratch, SeqNumber, TcpFlags, TcpRepr,
        Timestamps,
    };

    const MOVER_PRIVATE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 40000);
    const NAPT_PUBLIC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 61001);
    const RESPONDER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 443);
    /// The NAPT also shifts sequence numbers (some middleboxes randomise ISNs).
    const SEQ_SHIFT: u32 = 0x4000_0000;
    /// The responder's RCV.NXT - SEG.ACK in its MSYN-ACK (§7 fast resume).
    const RESPONDER_RECEIVED: u32 = 0x00_1234;

    fn packet(src: SocketAddrV4, dst: SocketAddrV4, tcp: &TcpRepr<'_>) -> Vec<u8> {
        let ip = Ipv4Repr::new(*src.ip(), *dst.ip());
        let mut buf = vec![0u8; ipv4_tcp_len(tcp)];
        emit_ipv4_tcp(&ip, tcp, &mut buf).unwrap();
        buf
    }

    /// Outbound NAPT: rewrite source address, port and sequence number.
    fn napt_out(pkt: &[u8]) -> Vec<u8> {
        let (ip, tcp) = parse_ipv4_tcp(pkt).unwrap();
        let tcp = TcpRepr {
            src_port: NAPT_PUBLIC.port(),
            seq: SeqNumber(tcp.seq.0.wrapping_add(SEQ_SHIFT)),
            ..tcp
        };
        packet(NAPT_PUBLIC, SocketAddrV4::new(ip.dst, tcp.dst_port), &tcp)
    }

    /// Inbound NAPT: undo it (destination and acknowledgment number).
    fn napt_in(pkt: &[u8]) -> Vec<u8> {
        let (ip, tcp) = parse_ipv4_tcp(pkt).unwrap();
        let tcp = TcpRepr {
            dst_port: MOVER_PRIVATE.port(),
            ack: SeqNumber(tcp.ack.0.wrapping_sub(SEQ_SHIFT)),
            ..tcp
        };
        packet(SocketAddrV4::new(ip.src, tcp.src_port), MOVER_PRIVATE, &tcp)
    }

    /// What the responder keeps per migratable connection.
    struct Conn {
        keys: ConnectionKeys,
        replay: ReplayWindow,
        remote: SocketAddrV4,
        behind_napt: bool,
        /// The direct address of the accepted MSYN's Permit.
        direct: SocketAddrV4,
        pending: Option<(RequestNumber, u32)>,
    }

    #[derive(Debug, PartialEq)]
    enum Refused {
        NotMsyn,
        UnknownToken,
        Stale,
        BadMac,
        /// A duplicate of the pending MSYN: the MSYN-ACK is due again.
        AnswerAgain,
    }

    struct Responder {
        by_token: HashMap<Token, Conn>,
        rng: SplitMix64,
    }

    impl Responder {
        /// PROTOCOL.md §6.3 steps 1-9, without the rate limit (4) and the
        /// sequence sanity check (7), which belong to the TCP layer.
        fn on_msyn(&mut self, pkt: &[u8]) -> Result<Vec<u8>, Refused> {
            let (ip, tcp) = parse_ipv4_tcp(pkt).unwrap();
            let options = MigrationOptions::from_repr(&tcp).unwrap();
            let (migrate, permit) =
                handshake::classify_msyn(&tcp, &options).ok_or(Refused::NotMsyn)?;
            let conn = self
                .by_token
                .get_mut(&Token(migrate.token))
                .ok_or(Refused::UnknownToken)?;
            let source = SocketAddrV4::new(ip.src, tcp.src_port);
            let accepted = conn.pending.map(|(request, _)| Accepted {
                request,
                direct: conn.direct,
            });
            match handshake::check_msyn(
                &conn.keys,
                &conn.replay,
                accepted,
                source == conn.remote,
                &migrate,
                &permit,
            ) {
                MsynVerdict::Accept => {}
                MsynVerdict::BadMac => return Err(Refused::BadMac),
                MsynVerdict::AnswerAgain => return Err(Refused::AnswerAgain),
                MsynVerdict::Stale | MsynVerdict::Repeat => return Err(Refused::Stale),
            }
            let request = RequestNumber(migrate.request);
            conn.replay.accept(request);
            conn.remote = source;
            conn.direct = permit.direct();
            conn.behind_napt = permit.direct() != source;
            let nonce = new_nonce(&mut self.rng);
            conn.pending = Some((request, nonce));
            // §7 fast resume: RCV.NXT relative to this segment's own ACK
            // field (a constant here: the test has no receive stream).
            let options = MigrationOptions {
                migrate: Some(handshake::msyn_ack_option(
                    &conn.keys,
                    request,
                    nonce,
                    permit.direct(),
                    RESPONDER_RECEIVED,
                )),
                ..MigrationOptions::default()
            };
            // §7: the SYN sits on the byte before SND.UNA, and the ACK is
            // exactly MSYN.seq + 1.
            let mut repr = handshake::msyn_ack_header(
                RESPONDER.port(),
                source.port(),
                SeqNumber(900_001),
                tcp.seq + 1,
                65535,
                Some(7),
                Some(Timestamps {
                    tsval: 77,
                    tsecr: 0,
                }),
            );
            let mut scratch = MigrationScratch::default();
            options.attach(&mut scratch, &mut repr).unwrap();
            Ok(packet(RESPONDER, source, &repr))
        }

        /// The path is confirmed by an ACK echoing the pending nonce.
        fn on_confirm(&mut self, token: Token, pkt: &[u8]) -> bool {
            let (ip, tcp) = parse_ipv4_tcp(pkt).unwrap();
            let conn = self.by_token.get_mut(&token).unwrap();
            let options = MigrationOptions::from_repr(&tcp).unwrap();
            let from_path = SocketAddrV4::new(ip.src, tcp.src_port) == conn.remote;
            let Some((request, nonce)) = conn.pending else {
                return false;
            };
            if from_path && handshake::confirm_matches(&options, request, nonce).is_some() {
                conn.pending = None;
                true
            } else {
                false
            }
        }
    }

    struct Mover {
        keys: ConnectionKeys,
        requests: RequestCounter,
        snd_una: SeqNumber,
    }

    impl Mover {
        fn msyn(&mut self) -> (RequestNumber, Vec<u8>) {
            let request = self.requests.take();
            let options = handshake::msyn_options(&self.keys, request, MOVER_PRIVATE);
            let mut repr = handshake::msyn_header(
                MOVER_PRIVATE.port(),
                RESPONDER.port(),
                self.snd_una,
                65535,
                1400,
                Some(7),
            );
            let mut scratch = MigrationScratch::default();
            options.attach(&mut scratch, &mut repr).unwrap();
            (request, packet(MOVER_PRIVATE, RESPONDER, &repr))
        }

        /// Checks an MSYN-ACK and returns the confirming ACK.
        fn on_msyn_ack(&self, request: RequestNumber, pkt: &[u8]) -> Option<Vec<u8>> {
            let (_, tcp) = parse_ipv4_tcp(pkt).unwrap();
            let options = MigrationOptions::from_repr(&tcp).ok()?;
            let Some(MigrateOption::MsynAck(ack)) = options.migrate else {
                return None;
            };
            let valid = tcp.flags == TcpFlags::SYN | TcpFlags::ACK
                && ack.request == request.0
                && tcp.ack == self.snd_una
                && ack.received == Some(RESPONDER_RECEIVED)
                && handshake::verify_msyn_ack(&self.keys, &ack, MOVER_PRIVATE);
            if !valid {
                return None;
            }
            let confirm = MigrationOptions {
                migrate: Some(handshake::confirm_option(
                    RequestNumber(ack.request),
                    ack.nonce,
                    0,
                )),
                ..MigrationOptions::default()
            };
            let mut repr = TcpRepr {
                src_port: MOVER_PRIVATE.port(),
                dst_port: RESPONDER.port(),
                seq: self.snd_una,
                ack: tcp.seq + 1,
                flags: TcpFlags::ACK,
                window: 1000,
                timestamps: Some(Timestamps {
                    tsval: 5,
                    tsecr: 77,
                }),
                ..TcpRepr::default()
            };
            let mut scratch = MigrationScratch::default();
            confirm.attach(&mut scratch, &mut repr).unwrap();
            Some(packet(MOVER_PRIVATE, RESPONDER, &repr))
        }
    }

    fn setup() -> (Mover, Responder, Token) {
        let mut rng = SplitMix64::new(11);
        let mover_key = Key::generate(&mut rng);
        let responder_key = Key::generate(&mut rng);
        let mover = Mover {
            keys: ConnectionKeys {
                local: mover_key,
                remote: responder_key,
            },
            requests: RequestCounter::new(),
            snd_una: SeqNumber(123_457),
        };
        let mut by_token = HashMap::new();
        by_token.insert(
            responder_key.token(),
            Conn {
                keys: ConnectionKeys {
                    local: responder_key,
                    remote: mover_key,
                },
                replay: ReplayWindow::new(),
                remote: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000),
                behind_napt: false,
                direct: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000),
                pending: None,
            },
        );
        let responder = Responder { by_token, rng };
        (mover, responder, responder_key.token())
    }

    #[test]
    fn msyn_handshake_through_a_rewriting_napt() {
        let (mut mover, mut responder, token) = setup();
        let (request, msyn) = mover.msyn();
        let syn_ack = responder.on_msyn(&napt_out(&msyn)).unwrap();
        let conn = &responder.by_token[&token];
        assert_eq!(conn.remote, NAPT_PUBLIC, "moved to the translated source");
        assert!(conn.behind_napt, "direct address differs from the source");

        // The MSYN-ACK acks exactly the (translated) MSYN.seq + 1, which the
        // NAPT maps back to the mover's SND.UNA.
        let back = napt_in(&syn_ack);
        let (_, tcp) = parse_ipv4_tcp(&back).unwrap();
        assert_eq!(tcp.ack, mover.snd_una);
        assert_eq!(tcp.seq + 1, SeqNumber(900_001));

        let confirm = mover.on_msyn_ack(request, &back).expect("valid MSYN-ACK");
        assert!(responder.on_confirm(token, &napt_out(&confirm)));
    }

    #[test]
    fn without_napt_the_responder_sees_no_translation() {
        let (mut mover, mut responder, token) = setup();
        let (_, msyn) = mover.msyn();
        responder.on_msyn(&msyn).unwrap();
        assert_eq!(responder.by_token[&token].remote, MOVER_PRIVATE);
        assert!(!responder.by_token[&token].behind_napt);
    }

    #[test]
    fn replayed_msyn_is_refused() {
        let (mut mover, mut responder, _) = setup();
        let (_, first) = mover.msyn();
        let (_, second) = mover.msyn();
        responder.on_msyn(&napt_out(&second)).unwrap();
        // The earlier transmission arriving late, and the same one again.
        assert_eq!(responder.on_msyn(&napt_out(&first)), Err(Refused::Stale));
        // §4.5 Repeat: a network duplicate from the same path with the same
        // Permit gets the pending MSYN-ACK again; from anywhere else
        // (an attacker replaying it) it is dropped.
        assert_eq!(
            responder.on_msyn(&napt_out(&second)),
            Err(Refused::AnswerAgain)
        );
        assert_eq!(responder.on_msyn(&second), Err(Refused::Stale));
    }

    #[test]
    fn forged_msyns_are_refused() {
        let (mut mover, mut responder, token) = setup();
        let (_, msyn) = mover.msyn();
        let (ip, tcp) = parse_ipv4_tcp(&msyn).unwrap();
        let options = MigrationOptions::from_repr(&tcp).unwrap();
        let Some(MigrateOption::Msyn(genuine)) = options.migrate else {
            panic!()
        };
        let resend = |migrate: Migrate, permit: MigratePermit| {
            let options = MigrationOptions {
                migrate: Some(MigrateOption::Msyn(migrate)),
                permit: Some(permit),
                ..MigrationOptions::default()
            };
            let mut repr = TcpRepr {
                experimental: [None; 4],
                ..tcp.clone()
            };
            let mut scratch = MigrationScratch::default();
            options.attach(&mut scratch, &mut repr).unwrap();
            packet(SocketAddrV4::new(ip.src, tcp.src_port), RESPONDER, &repr)
        };
        let permit = options.permit.unwrap();
        let mut bad_mac = genuine;
        bad_mac.mac[7] ^= 1;
        assert_eq!(
            responder.on_msyn(&resend(bad_mac, permit)),
            Err(Refused::BadMac)
        );
        // Claiming another direct address breaks the MAC too.
        let lie = MigratePermit {
            port: permit.port + 1,
            ..permit
        };
        assert_eq!(
            responder.on_msyn(&resend(genuine, lie)),
            Err(Refused::BadMac)
        );
        let mut wrong_token = genuine;
        wrong_token.token ^= 0x8000_0000;
        assert_eq!(
            responder.on_msyn(&resend(wrong_token, permit)),
            Err(Refused::UnknownToken)
        );
        // None of this moved the connection or used up a request number.
        assert_eq!(
            responder.by_token[&token].replay.last_accepted(),
            RequestNumber(0)
        );
        assert!(responder.on_msyn(&msyn).is_ok());
    }

    #[test]
    fn stale_or_foreign_msyn_ack_is_refused_and_confirm_needs_the_nonce() {
        let (mut mover, mut responder, token) = setup();
        let (first, msyn1) = mover.msyn();
        let (second, msyn2) = mover.msyn();
        let ack1 = napt_in(&responder.on_msyn(&napt_out(&msyn1)).unwrap());
        // The mover has moved on to request 2: the answer to 1 is not it.
        assert!(mover.on_msyn_ack(second, &ack1).is_none());
        assert!(mover.on_msyn_ack(first, &ack1).is_some());
        let ack2 = napt_in(&responder.on_msyn(&napt_out(&msyn2)).unwrap());
        let confirm2 = mover.on_msyn_ack(second, &ack2).unwrap();
        // A confirmation for the superseded request does not confirm.
        let confirm1 = mover.on_msyn_ack(first, &ack1).unwrap();
        assert!(!responder.on_confirm(token, &napt_out(&confirm1)));
        assert!(responder.on_confirm(token, &napt_out(&confirm2)));
    }

    #[test]
    fn reflected_msyn_does_not_verify_as_msyn_ack() {
        // An attacker bounces the mover's own MSYN back to it as an
        // "MSYN-ACK": different label, reversed key order.
        let (mut mover, _, _) = setup();
        let (request, msyn) = mover.msyn();
        let (_, tcp) = parse_ipv4_tcp(&msyn).unwrap();
        let Some(MigrateOption::Msyn(m)) = MigrationOptions::from_repr(&tcp).unwrap().migrate
        else {
            panic!()
        };
        let forged = MigrationOptions {
            migrate: Some(MigrateOption::MsynAck(MigrateAck {
                token: mover.keys.local_token().0,
                request: m.request,
                nonce: 0,
                received: Some(0),
                mac: m.mac,
            })),
            ..MigrationOptions::default()
        };
        let mut repr = TcpRepr {
            src_port: RESPONDER.port(),
            dst_port: MOVER_PRIVATE.port(),
            seq: SeqNumber(1),
            ack: mover.snd_una,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            ..TcpRepr::default()
        };
        let mut scratch = MigrationScratch::default();
        forged.attach(&mut scratch, &mut repr).unwrap();
        let pkt = packet(RESPONDER, MOVER_PRIVATE, &repr);
        assert!(mover.on_msyn_ack(request, &pkt).is_none());
    }
}
