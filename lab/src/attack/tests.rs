use super::*;
use sustain_core::auth::ConnectionKeys;
use sustain_core::control::ControlError;
use sustain_core::rendezvous::{ControlClient, Output, Server, ServerConfig, SessionId};
use sustain_core::time::{Duration as CoreDuration, Instant as CoreInstant};
use sustain_core::wire::WireError;

const TARGET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const MOVED_PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PORT: u16 = 5001;
const PEER_PORT: u16 = 40000;
const TARGET_KEY: u64 = 0xFEDC_BA98_7654_3210;
const PEER_KEY: u64 = 0x0123_4567_89AB_CDEF;

fn target() -> SocketAddrV4 {
    SocketAddrV4::new(TARGET, PORT)
}

fn peer() -> SocketAddrV4 {
    SocketAddrV4::new(PEER, PEER_PORT)
}

fn packet_with(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tcp: TcpRepr<'_>,
    options: MigrationOptions<'_>,
) -> Vec<u8> {
    let mut scratch = MigrationScratch::default();
    let mut tcp = tcp;
    options.attach(&mut scratch, &mut tcp).unwrap();
    emit_packet(src, dst, tcp).unwrap()
}

fn full_permit(end: SocketAddrV4, key: u64) -> MigrationOptions<'static> {
    MigrationOptions {
        permit: Some(MigratePermit {
            addr: *end.ip(),
            port: end.port(),
            key: Some(key),
        }),
        ..MigrationOptions::default()
    }
}

/// A view that saw the handshake (the peer connects to the target), a data
/// segment from the peer and the target's ACK of it.
fn established() -> ConnectionView {
    let mut view = ConnectionView::new(TARGET, PORT, vec![ATTACKER]);
    let ts = |tsval, tsecr| Some(Timestamps { tsval, tsecr });
    view.observe(&packet_with(
        peer(),
        target(),
        TcpRepr {
            seq: SeqNumber(1000),
            flags: TcpFlags::SYN,
            window: 65535,
            window_scale: Some(7),
            timestamps: ts(50, 0),
            ..TcpRepr::default()
        },
        full_permit(peer(), PEER_KEY),
    ));
    view.observe(&packet_with(
        target(),
        peer(),
        TcpRepr {
            seq: SeqNumber(5000),
            ack: SeqNumber(1001),
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window: 65535,
            window_scale: Some(7),
            timestamps: ts(900, 50),
            ..TcpRepr::default()
        },
        full_permit(target(), TARGET_KEY),
    ));
    view.observe(&packet_with(
        peer(),
        target(),
        TcpRepr {
            seq: SeqNumber(1001),
            ack: SeqNumber(5001),
            flags: TcpFlags::ACK,
            window: 256,
            timestamps: ts(60, 900),
            payload: &[7; 100],
            ..TcpRepr::default()
        },
        MigrationOptions::default(),
    ));
    view.observe(&packet_with(
        target(),
        peer(),
        TcpRepr {
            seq: SeqNumber(5001),
            ack: SeqNumber(1101),
            flags: TcpFlags::ACK,
            window: 512,
            timestamps: ts(910, 60),
            ..TcpRepr::default()
        },
        MigrationOptions::default(),
    ));
    view
}

/// The first MSYN of the peer, moved to MOVED_PEER.
fn real_msyn(request: u32) -> Vec<u8> {
    let moved = SocketAddrV4::new(MOVED_PEER, PEER_PORT);
    packet_with(
        moved,
        target(),
        TcpRepr {
            seq: SeqNumber(1100),
            flags: TcpFlags::SYN,
            window: 65535,
            window_scale: Some(7),
            ..TcpRepr::default()
        },
        MigrationOptions {
            migrate: Some(MigrateOption::Msyn(Migrate {
                token: token_of(Key(TARGET_KEY)).0,
                request,
                mac: [9; 8],
            })),
            permit: Some(MigratePermit {
                addr: MOVED_PEER,
                port: PEER_PORT,
                key: None,
            }),
            ..MigrationOptions::default()
        },
    )
}

fn parsed(packet: &[u8]) -> (Ipv4Repr, TcpRepr<'_>, MigrationOptions<'_>) {
    let (ip, tcp) = parse_ipv4_tcp(packet).expect("parses");
    let options = MigrationOptions::from_repr(&tcp).expect("sustain options parse");
    (ip, tcp, options)
}

#[test]
fn counter_checks_parse_compare_and_name_unknown_counters() {
    let check = CounterCheck::parse("mac_failures", ">=3").unwrap();
    assert_eq!(check.comparison, Comparison::AtLeast);
    assert!(check.holds(3) && check.holds(4) && !check.holds(2));
    assert_eq!(check.to_string(), "mac_failures >= 3");
    let check = CounterCheck::parse("stale_requests+repeat_requests", "0").unwrap();
    assert_eq!(check.counters.len(), 2);
    assert!(check.holds(0) && !check.holds(1));
    let counters: Map<String, Value> =
        serde_json::from_str(r#"{"stale_requests": 2, "repeat_requests": 1}"#).unwrap();
    assert_eq!(check.actual(&counters), Ok(3));
    let check = CounterCheck::parse("mac_failures", "<2").unwrap();
    assert!(check.holds(1) && !check.holds(2));
    assert!(check
        .actual(&counters)
        .unwrap_err()
        .contains("mac_failures"));
    assert!(CounterCheck::parse("mac_failure", "1")
        .unwrap_err()
        .contains("unknown counter \"mac_failure\""));
    assert!(CounterCheck::parse("mac_failures", ">= many").is_err());
    assert!(CounterCheck::parse("mac_failures", "-1").is_err());
}

#[test]
fn kinds_round_trip_through_their_names() {
    for kind in AttackKind::ALL {
        assert_eq!(kind.name().parse::<AttackKind>(), Ok(kind));
    }
    assert!("rst-flood"
        .parse::<AttackKind>()
        .unwrap_err()
        .contains("\"blind-rst\""));
}

#[test]
fn the_view_learns_ends_windows_timestamps_and_the_token_from_the_handshake() {
    let view = established();
    assert_eq!(view.ends(), Ok((target(), peer())));
    assert_eq!(view.from_peer.seq_next, SeqNumber(1101));
    assert_eq!(view.from_target.ack, Some(SeqNumber(1101)));
    // Both SYNs carried WS 7: the target's window is scaled.
    assert_eq!(view.target_window(), 512 << 7);
    assert!(view.timestamps());
    assert_eq!(
        view.peer_timestamps(),
        Some(Timestamps {
            tsval: 60,
            tsecr: 910
        })
    );
    assert_eq!(
        view.token(),
        Ok((token_of(Key(TARGET_KEY)).0, TokenSource::HandshakeKey))
    );
    for kind in AttackKind::ALL {
        let ready = view.not_ready_for(kind);
        // A replay needs a real MSYN; a forged ticket a real relay MSYN.
        let waits = matches!(kind, AttackKind::ReplayedMsyn | AttackKind::ForgedTicket);
        assert_eq!(ready.is_none(), !waits, "{kind}");
    }
}

#[test]
fn the_view_keeps_the_first_msyn_and_sees_the_move_complete() {
    let mut view = established();
    let msyn = real_msyn(1);
    view.observe(&msyn);
    view.observe(&real_msyn(2));
    assert_eq!(view.first_msyn.as_ref().map(|(p, _)| p.clone()), Some(msyn));
    assert_eq!(view.latest_request, Some(2));
    assert_eq!(view.token().map(|(_, s)| s), Ok(TokenSource::Msyn));
    assert_eq!(
        view.not_ready_for(AttackKind::ReplayedMsyn).as_deref(),
        Some("the real migration has not completed yet")
    );
    // The target's data (no SYN) to the new address: the path is confirmed.
    let moved = SocketAddrV4::new(MOVED_PEER, PEER_PORT);
    view.observe(&packet_with(
        target(),
        moved,
        TcpRepr {
            seq: SeqNumber(5001),
            ack: SeqNumber(1101),
            flags: TcpFlags::ACK,
            window: 512,
            timestamps: Some(Timestamps {
                tsval: 920,
                tsecr: 61,
            }),
            ..TcpRepr::default()
        },
        MigrationOptions::default(),
    ));
    assert!(view.migration_done);
    assert_eq!(view.peer_end, Some(moved));
    assert_eq!(view.not_ready_for(AttackKind::ReplayedMsyn), None);
}

#[test]
fn injected_packets_and_other_ports_do_not_count_and_replies_to_the_attacker_do() {
    let mut view = established();
    let before = (view.from_peer.seq_next, view.segments);
    let forged = forge(&view, Step::ForgedAddressUpdate { nth: 0 }, ATTACKER).unwrap();
    view.injected
        .insert(segment_fingerprint(&forged.packet).unwrap());
    view.observe(&forged.packet);
    let elsewhere = packet_with(
        SocketAddrV4::new(PEER, 1),
        SocketAddrV4::new(TARGET, 2),
        TcpRepr {
            seq: SeqNumber(1),
            flags: TcpFlags::ACK,
            payload: &[0; 10],
            ..TcpRepr::default()
        },
        MigrationOptions::default(),
    );
    view.observe(&elsewhere);
    assert_eq!((view.from_peer.seq_next, view.segments), before);
    view.observe(&packet_with(
        target(),
        SocketAddrV4::new(ATTACKER, PEER_PORT),
        TcpRepr {
            flags: TcpFlags::SYN | TcpFlags::ACK,
            ..TcpRepr::default()
        },
        MigrationOptions::default(),
    ));
    assert_eq!((view.to_attacker, view.syn_acks_to_attacker), (1, 1));
    assert_eq!(view.peer_end, Some(peer()), "a reply to x is not the peer");
}

#[test]
fn a_forged_msyn_has_the_right_token_a_fresh_request_and_the_attackers_permit() {
    let mut view = established();
    view.observe(&real_msyn(7));
    let forged = forge(&view, Step::ForgedMsyn { nth: 1 }, ATTACKER).unwrap();
    let (ip, tcp, options) = parsed(&forged.packet);
    assert_eq!((ip.src, ip.dst), (ATTACKER, TARGET));
    assert_eq!((tcp.src_port, tcp.dst_port), (PEER_PORT, PORT));
    assert_eq!(tcp.flags, TcpFlags::SYN);
    // SND.UNA - 1 of the peer, as the target acknowledged it.
    assert_eq!(tcp.seq, SeqNumber(1100));
    let Some(MigrateOption::Msyn(migrate)) = options.migrate else {
        panic!("no Migrate in MSYN form: {options:?}");
    };
    assert_eq!(migrate.token, token_of(Key(TARGET_KEY)).0);
    assert_eq!(migrate.request, 7 + 1001);
    let permit = options.permit.expect("a Permit");
    assert_eq!(
        (permit.addr, permit.port, permit.key),
        (ATTACKER, PEER_PORT, None)
    );
    assert_eq!(forged.detail["token_from"], "msyn");
}

#[test]
fn a_forged_address_update_is_an_in_window_ack_from_the_attacker() {
    let view = established();
    let forged = forge(&view, Step::ForgedAddressUpdate { nth: 0 }, ATTACKER).unwrap();
    let (ip, tcp, options) = parsed(&forged.packet);
    assert_eq!(ip.src, ATTACKER);
    assert_eq!(tcp.flags, TcpFlags::ACK);
    assert_eq!((tcp.seq, tcp.ack), (SeqNumber(1101), SeqNumber(5001)));
    assert_eq!(tcp.timestamps.map(|t| t.tsval), Some(60));
    let update = options.address_update.expect("Address-Update");
    assert_eq!(update.old_addr, PEER);
    assert_eq!(update.token, token_of(Key(TARGET_KEY)).0);
    assert_eq!(update.request, 1000);
}

#[test]
fn a_blind_rst_is_inside_the_window_but_not_at_rcv_nxt() {
    let view = established();
    let forged = forge(&view, Step::BlindRst, ATTACKER).unwrap();
    let (ip, tcp, _) = parsed(&forged.packet);
    assert_eq!((ip.src, ip.dst), (PEER, TARGET), "spoofed from the peer");
    assert_eq!(tcp.flags, TcpFlags::RST);
    let rcv_nxt = SeqNumber(1101);
    assert!(tcp.seq > rcv_nxt && tcp.seq < rcv_nxt + (512 << 7));
}

#[test]
fn a_replay_is_the_msyn_byte_for_byte_but_from_the_attacker() {
    let mut view = established();
    let original = real_msyn(1);
    view.observe(&original);
    let forged = forge(&view, Step::Replay, ATTACKER).unwrap();
    let (ip, _, options) = parsed(&forged.packet);
    assert_eq!(ip.src, ATTACKER);
    assert!(options.migrate.is_some());
    let differing: Vec<usize> = (0..original.len())
        .filter(|&i| original[i] != forged.packet[i])
        .collect();
    // IP checksum (10, 11), source (12..16), TCP checksum (36, 37).
    assert!(
        differing
            .iter()
            .all(|i| [10, 11, 12, 13, 14, 15, 36, 37].contains(i)),
        "{differing:?}"
    );
    assert_eq!(forged.packet.len(), original.len());
}

#[test]
fn malformed_cases_fail_where_they_should() {
    let view = established();
    let case = |case| {
        forge(&view, Step::Malformed(case), ATTACKER)
            .unwrap()
            .packet
    };
    // (a), (b): the TCP option walk rejects the whole segment.
    assert!(matches!(
        parse_ipv4_tcp(&case(MalformedCase::KindLengthOne)),
        Err(WireError::BadOptionLength { kind: 253, len: 1 })
    ));
    assert!(matches!(
        parse_ipv4_tcp(&case(MalformedCase::LengthPastHeader)),
        Err(WireError::TruncatedOption { kind: 253 })
    ));
    // (c): a valid foreign option, none of ours.
    let packet = case(MalformedCase::UnknownExid);
    let (_, tcp, options) = parsed(&packet);
    assert!(options.is_empty());
    assert_eq!(tcp.experimental[0].map(|o| o.exid), Some(UNKNOWN_EXID));
    // (d), (e), (f): valid TCP, malformed sustain options.
    for (malformed, syn, src) in [
        (MalformedCase::MigrateLength19, false, PEER),
        (MalformedCase::SynTruncatedPermit, true, ATTACKER),
        (MalformedCase::MsynTruncatedMigrate, true, ATTACKER),
    ] {
        let packet = case(malformed);
        let (ip, tcp) = parse_ipv4_tcp(&packet).expect("valid TCP");
        assert_eq!((tcp.flags.syn(), ip.src), (syn, src), "{malformed:?}");
        assert!(
            matches!(
                MigrationOptions::from_repr(&tcp),
                Err(WireError::BadOptionLength { kind: 253, .. })
            ),
            "{malformed:?}"
        );
    }
}

#[test]
fn checksums_are_recomputed_after_a_rewrite() {
    let mut packet = real_msyn(1);
    packet[19] ^= 0x55;
    assert!(parse_ipv4_tcp(&packet).is_err());
    refresh_checksums(&mut packet).unwrap();
    assert!(parse_ipv4_tcp(&packet).is_ok());
    assert!(refresh_checksums(&mut [0x45, 0, 0]).is_err());
    assert!(replayed_msyn(&[0x45; 8], ATTACKER).is_err());
}

#[test]
fn every_kind_sends_its_packets_in_order() {
    assert_eq!(steps_of(AttackKind::BlindRst).len(), 3);
    assert_eq!(
        steps_of(AttackKind::MalformedOptions)
            .iter()
            .map(|(_, s)| *s)
            .collect::<Vec<_>>(),
        MalformedCase::ALL.map(Step::Malformed).to_vec()
    );
    for kind in AttackKind::ALL {
        let offsets: Vec<Duration> = steps_of(kind).iter().map(|(d, _)| *d).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{kind}");
    }
}

// ---- the attacks on the mobility server ----

const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn server() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_ADDR, SERVER_PORT)
}

fn moved_target() -> SocketAddrV4 {
    SocketAddrV4::new(MOVED_PEER, PORT)
}

/// A segment of a control session carrying `payload`.
fn control_segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    emit_packet(
        src,
        dst,
        TcpRepr {
            seq: SeqNumber(seq),
            flags,
            window: 65535,
            payload,
            ..TcpRepr::default()
        },
    )
    .unwrap()
}

/// One control session as the observer sees it: both SYNs, then `host_bytes`
/// in one segment (if any) and the server's replies in another.
struct SessionTap {
    host: SocketAddrV4,
    host_seq: u32,
    server_seq: u32,
}

impl SessionTap {
    fn open(view: &mut ControlView, host: SocketAddrV4) -> SessionTap {
        view.observe(&control_segment(host, server(), 100, TcpFlags::SYN, &[]));
        view.observe(&control_segment(
            server(),
            host,
            900,
            TcpFlags::SYN | TcpFlags::ACK,
            &[],
        ));
        SessionTap {
            host,
            host_seq: 101,
            server_seq: 901,
        }
    }

    fn host_sends(&mut self, view: &mut ControlView, bytes: &[u8]) {
        view.observe(&control_segment(
            self.host,
            server(),
            self.host_seq,
            TcpFlags::ACK | TcpFlags::PSH,
            bytes,
        ));
        self.host_seq += bytes.len() as u32;
    }

    fn server_sends(&mut self, view: &mut ControlView, bytes: &[u8]) {
        view.observe(&control_segment(
            server(),
            self.host,
            self.server_seq,
            TcpFlags::ACK | TcpFlags::PSH,
            bytes,
        ));
        self.server_seq += bytes.len() as u32;
    }
}

/// The core's server with the target and its peer registered, the target moved
/// and reported it, and the observer's view of all that; also the bytes the
/// target sent (Register, MoveReport).
struct ControlWorld {
    server: Server,
    view: ControlView,
    target: ControlClient,
    sent: Vec<Vec<u8>>,
    now: CoreInstant,
}

impl ControlWorld {
    fn new() -> ControlWorld {
        let mut world = ControlWorld {
            server: Server::new(ServerConfig::default()),
            view: ControlView::new(server(), TARGET, vec![ATTACKER]),
            target: ControlClient::new(
                &ConnectionKeys {
                    local: Key(TARGET_KEY),
                    remote: Key(PEER_KEY),
                },
                target(),
                peer(),
            )
            .unwrap(),
            sent: Vec::new(),
            now: CoreInstant::ZERO,
        };
        let mut peer_client = ControlClient::new(
            &ConnectionKeys {
                local: Key(PEER_KEY),
                remote: Key(TARGET_KEY),
            },
            peer(),
            target(),
        )
        .unwrap();
        let peer_session = SocketAddrV4::new(PEER, 41000);
        let register = peer_client.register();
        world.exchange(peer_session, &register);
        let register = world.target.register();
        world.exchange(SocketAddrV4::new(TARGET, 42000), &register);
        world.sent.push(register);
        world
    }

    /// A new session from `host` sending `bytes`; the server's replies on it go
    /// back through the observer too. Returns them.
    fn exchange(&mut self, host: SocketAddrV4, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.now += CoreDuration::from_millis(10);
        let session = self.server.open_session(self.now, host).unwrap();
        let mut tap = SessionTap::open(&mut self.view, host);
        tap.host_sends(&mut self.view, bytes);
        self.server.handle_stream(self.now, session, bytes);
        let mut replies = Vec::new();
        while let Some(output) = self.server.poll_output() {
            if let Output::Send { session: to, bytes } = output {
                if to == session {
                    tap.server_sends(&mut self.view, &bytes);
                    replies.push(bytes);
                } else {
                    // A notice to the other end: the observer sees it too.
                    let other = SocketAddrV4::new(PEER, 41000);
                    let mut tap = SessionTap::open(&mut self.view, other);
                    tap.server_sends(&mut self.view, &bytes);
                }
            }
        }
        replies
    }

    fn move_target(&mut self) {
        let report = self.target.report_move(moved_target());
        self.exchange(SocketAddrV4::new(MOVED_PEER, 43000), &report);
        self.sent.push(report);
    }

    /// Sends what `step` forges on an attacker session (a new one when `fresh`)
    /// and returns the server's error codes in reply.
    fn attack(&mut self, step: ControlStep, session: &mut Option<SessionId>) -> Vec<String> {
        let forged = forge_control(&self.view, step, ATTACKER).expect("forges");
        self.now += CoreDuration::from_millis(150);
        if step.fresh_session() {
            *session = None;
        }
        let id = *session.get_or_insert_with(|| {
            self.server
                .open_session(self.now, SocketAddrV4::new(ATTACKER, 50000))
                .unwrap()
        });
        for message in &forged.messages {
            self.server.handle_stream(self.now, id, message);
        }
        if step.ends_session() {
            self.server.close_session(id);
            *session = None;
        }
        let mut replies = Vec::new();
        while let Some(output) = self.server.poll_output() {
            if let Output::Send { bytes, .. } = output {
                replies.push(describe_control(&bytes));
            }
        }
        replies
    }
}

#[test]
fn the_control_view_captures_the_targets_messages_and_the_servers_answers() {
    let mut world = ControlWorld::new();
    let creds = *world.target.credentials();
    assert_eq!(world.view.target_conn, Some((creds.id, creds.side)));
    assert!(world.view.not_ready_for(AttackKind::ForgedReport).is_none());
    assert_eq!(
        world
            .view
            .not_ready_for(AttackKind::ReplayedReport)
            .as_deref(),
        Some("no MoveReport of the target's acknowledged by the server yet")
    );
    world.move_target();
    // Register and MoveReport, byte for byte, with their sources.
    let captured: Vec<&[u8]> = world.view.captured.iter().map(|m| &m.bytes[..]).collect();
    assert_eq!(
        captured,
        world.sent.iter().map(|b| &b[..]).collect::<Vec<_>>()
    );
    assert_eq!(
        world
            .view
            .captured
            .iter()
            .map(|m| m.from)
            .collect::<Vec<_>>(),
        [
            SocketAddrV4::new(TARGET, 42000),
            SocketAddrV4::new(MOVED_PEER, 43000)
        ]
    );
    assert_eq!(world.view.acked, [1, 2]);
    assert_eq!(world.view.latest_request(), 2);
    assert_eq!(world.view.target_direct(), Some(moved_target()));
    assert!(world
        .view
        .not_ready_for(AttackKind::ReplayedReport)
        .is_none());
    // Both ends global: the mover reported last and is told where its peer is.
    assert_eq!((world.view.notices, world.view.notices_to_attacker), (1, 0));

    // The attacker's own session is not the target's, whatever it carries.
    let before = world.view.captured.len();
    let mut tap = SessionTap::open(&mut world.view, SocketAddrV4::new(ATTACKER, 50000));
    tap.host_sends(&mut world.view, &world.sent[0].clone());
    assert_eq!(world.view.captured.len(), before);
}

#[test]
fn control_streams_are_reassembled_in_order_and_stop_at_a_gap() {
    let message = {
        let mut client = ControlClient::new(
            &ConnectionKeys {
                local: Key(TARGET_KEY),
                remote: Key(PEER_KEY),
            },
            target(),
            peer(),
        )
        .unwrap();
        client.register()
    };
    let segment = |seq: u32, payload: &[u8]| {
        let packet = control_segment(target(), server(), seq, TcpFlags::ACK, payload);
        parse_ipv4_tcp(&packet).unwrap().1.payload.to_vec()
    };
    let tcp = |seq: u32, flags: TcpFlags, payload: &'static [u8]| TcpRepr {
        seq: SeqNumber(seq),
        flags,
        payload,
        ..TcpRepr::default()
    };
    let leak = |bytes: Vec<u8>| -> &'static [u8] { Box::leak(bytes.into_boxed_slice()) };
    let (first, rest) = message.split_at(20);
    let (first, rest) = (leak(segment(1, first)), leak(segment(21, rest)));

    let mut stream = ControlStream::default();
    assert!(
        stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty(),
        "no SYN seen"
    );
    stream.push(&tcp(0, TcpFlags::SYN, &[]));
    assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
    // A retransmission of the first part, then the rest overlapping it by 5.
    assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
    let overlapping = leak(message[15..].to_vec());
    assert_eq!(
        stream.push(&tcp(16, TcpFlags::ACK, overlapping)),
        vec![message.clone()]
    );

    let mut stream = ControlStream::default();
    stream.push(&tcp(0, TcpFlags::SYN, &[]));
    assert!(stream.push(&tcp(21, TcpFlags::ACK, rest)).is_empty());
    assert!(stream.lost);
    assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
}

#[test]
fn every_forged_report_is_rejected_for_what_it_is() {
    let mut world = ControlWorld::new();
    let mut session = None;
    let mut replies = Vec::new();
    for step in ControlStep::FORGED {
        let forged = forge_control(&world.view, step, ATTACKER).unwrap();
        if step != ControlStep::Garbage && step != ControlStep::Oversized {
            assert_eq!(forged.detail["claimed"], "203.0.113.10:5001", "{step:?}");
        }
        replies.push(world.attack(step, &mut session));
    }
    let first = |r: &Vec<String>| r.first().cloned().unwrap_or_default();
    let codes: Vec<String> = replies
        .iter()
        .map(|r| first(r).split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        codes,
        [
            "error bad-mac",
            "error bad-mac",
            "error bad-mac",
            "error bad-mac",
            "error conflict",
            "error unknown-version",
            "", // truncated: counted when the session closes, not answered
            "error garbage",
            "error oversized",
        ]
    );
    let stats = world.server.stats();
    assert_eq!(
        (
            stats.bad_mac,
            stats.conflicts,
            stats.unknown_version,
            stats.truncated,
            stats.garbage,
            stats.oversized,
            stats.rejected()
        ),
        (4, 1, 1, 1, 1, 1, 9)
    );
    // Nothing was accepted: the target's registration is as it was.
    assert_eq!(
        (stats.reports, stats.decisions, stats.notices_sent),
        (0, 0, 0)
    );
    // A real move afterwards is decided as if nothing had happened.
    world.move_target();
    let stats = world.server.stats();
    assert_eq!((stats.reports, stats.notices_sent), (1, 1));
    assert_eq!(world.view.notices_to_attacker, 0);
}

#[test]
fn forged_messages_claim_the_attackers_address_and_never_verify() {
    let world = ControlWorld::new();
    let verifier = world.target.credentials().verifier;
    let parsed = |step| {
        let forged = forge_control(&world.view, step, ATTACKER).unwrap();
        let bytes = forged.messages[0].clone();
        let (incoming, message) = Incoming::parse(&bytes).expect("parses");
        let Incoming::Control(repr) = incoming else {
            panic!("not a control message")
        };
        (repr, message.verify_mac(&verifier))
    };
    let (repr, verifies) = parsed(ControlStep::ForgedMoveReport { nth: 2 });
    assert!(!verifies);
    assert_eq!(repr.header.number, 1 + 1000 + 2);
    let Body::MoveReport(report) = repr.body else {
        panic!("{repr}")
    };
    assert_eq!(
        (report.old_direct, report.new_direct),
        (target(), SocketAddrV4::new(ATTACKER, PORT))
    );
    for step in [ControlStep::ForgedRegister, ControlStep::SquattingRegister] {
        let bytes = forge_control(&world.view, step, ATTACKER).unwrap().messages[0].clone();
        let (Incoming::Control(repr), message) = Incoming::parse(&bytes).unwrap() else {
            panic!("not a control message")
        };
        assert!(!message.verify_mac(&verifier), "{step:?}");
        let Body::Register(register) = repr.body else {
            panic!("{repr}")
        };
        assert_eq!(register.direct, SocketAddrV4::new(ATTACKER, PORT));
        assert!(!register.verifier.ct_eq(&verifier));
        // The squatter's MAC is right for its own verifier, the forger's is not.
        assert_eq!(
            message.verify_mac(&register.verifier),
            step == ControlStep::SquattingRegister
        );
    }
    let bytes = |step| forge_control(&world.view, step, ATTACKER).unwrap().messages[0].clone();
    assert!(matches!(
        Incoming::parse(&bytes(ControlStep::UnknownVersion)),
        Err(ControlError::UnknownVersion(2))
    ));
    assert!(matches!(
        Incoming::parse(&bytes(ControlStep::Truncated)),
        Err(ControlError::Truncated {
            needed: 64,
            have: 30
        })
    ));
    let mut frames = FrameBuffer::new();
    frames.push(&bytes(ControlStep::Garbage));
    assert_eq!(frames.next_frame(), Err(ControlError::Garbage(2)));
    let mut frames = FrameBuffer::new();
    frames.push(&bytes(ControlStep::Oversized));
    assert_eq!(frames.next_frame(), Err(ControlError::Oversized(300)));
}

#[test]
fn replayed_reports_are_the_targets_bytes_and_change_nothing() {
    let mut world = ControlWorld::new();
    world.move_target();
    let forged = forge_control(&world.view, ControlStep::Replay { round: 0 }, ATTACKER).unwrap();
    assert_eq!(forged.messages, world.sent, "byte for byte");
    assert_eq!(
        forged.detail["replay_of"],
        json!(["192.0.2.10:42000", "100.64.0.10:43000"])
    );
    let before = *world.server.stats();
    let mut session = None;
    for round in 0..3 {
        let replies = world.attack(ControlStep::Replay { round }, &mut session);
        // The Register is stale; the MoveReport is the target's latest, but a
        // repeat from another address than the target's is a replay too
        // (PROTOCOL.md §11.9).
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert!(
            replies[0].starts_with("error replayed (type 0x01"),
            "{replies:?}"
        );
        assert!(
            replies[1].starts_with("error replayed (type 0x02"),
            "{replies:?}"
        );
    }
    let stats = world.server.stats();
    assert_eq!((stats.replayed, stats.repeats), (6, 0));
    assert_eq!(
        (stats.reports, stats.notices_sent),
        (before.reports, before.notices_sent),
        "no new report, no new notice"
    );
}

#[test]
fn server_counter_checks_use_the_servers_names_and_its_stopped_event() {
    let check = CounterCheck::parse_for(CounterSource::Server, "bad_mac+conflicts", ">=4").unwrap();
    assert_eq!(check.to_string(), "bad_mac+conflicts >= 4");
    assert!(
        CounterCheck::parse_for(CounterSource::Server, "mac_failures", "0")
            .unwrap_err()
            .contains("sustain-server reports")
    );
    assert!(CounterCheck::parse("bad_mac", "0")
        .unwrap_err()
        .contains("sustain-host reports"));

    let dir = std::env::temp_dir().join(format!("attack-stopped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c-sustain-server.events.jsonl");
    std::fs::write(
        &file,
        "{\"t\":0.1,\"event\":\"listening\",\"local\":\"192.0.2.10:7001\"}\n\
         {\"t\":1.0,\"event\":\"stopped\",\"bad_mac\":9,\"conflicts\":9}\n\
         {\"t\":2.0,\"event\":\"listening\",\"local\":\"192.0.2.10:7001\"}\n\
         {\"time\":5.0,\"t\":3.0,\"event\":\"stopped\",\"bad_mac\":3,\"conflicts\":1}\n",
    )
    .unwrap();
    let counters = stopped_counters(&file).unwrap();
    assert_eq!(
        counters,
        serde_json::from_str::<Map<String, Value>>(r#"{"bad_mac":3,"conflicts":1}"#).unwrap(),
        "the last stopped event, without time, t and event"
    );
    assert_eq!(check.actual(&counters), Ok(4));
    let report = counters_report("c", "mobility-server", Ok(counters), &[check]);
    assert!(report.checks[0].passed);
    std::fs::write(&file, "{\"event\":\"listening\"}\n").unwrap();
    assert!(stopped_counters(&file)
        .unwrap_err()
        .contains("no stopped event"));
    let _ = std::fs::remove_dir_all(&dir);
}
