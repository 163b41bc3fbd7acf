//! What the attacker sends: each kind's schedule and its forged segments.

use super::*;

/// One malformed-options case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MalformedCase {
    KindLengthOne,
    LengthPastHeader,
    UnknownExid,
    MigrateLength19,
    SynTruncatedPermit,
    MsynTruncatedMigrate,
}

impl MalformedCase {
    pub(crate) const ALL: [MalformedCase; 6] = [
        MalformedCase::KindLengthOne,
        MalformedCase::LengthPastHeader,
        MalformedCase::UnknownExid,
        MalformedCase::MigrateLength19,
        MalformedCase::SynTruncatedPermit,
        MalformedCase::MsynTruncatedMigrate,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            MalformedCase::KindLengthOne => "a-kind253-length-1",
            MalformedCase::LengthPastHeader => "b-length-past-header",
            MalformedCase::UnknownExid => "c-unknown-exid-beef",
            MalformedCase::MigrateLength19 => "d-migrate-length-19",
            MalformedCase::SynTruncatedPermit => "e-syn-truncated-permit",
            MalformedCase::MsynTruncatedMigrate => "f-msyn-truncated-migrate",
        }
    }
}

/// An unassigned ExID (RFC 6994): receivers must leave it alone.
pub(crate) const UNKNOWN_EXID: u16 = 0xBEEF;
/// MSS the forged SYNs announce.
pub(crate) const FORGED_MSS: u16 = 1460;

/// One packet to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    ForgedMsyn {
        nth: u32,
    },
    Replay,
    ForgedAddressUpdate {
        nth: u32,
    },
    BlindRst,
    Malformed(MalformedCase),
    /// Bytes for the mobility server, over the attacker's own TCP connection.
    Control(ControlStep),
    /// A relay MSYN to the proxy (`forged-ticket`).
    Ticket(TicketCase, u32),
}

/// What a `forged-ticket` packet does wrong (PROTOCOL.md §6.9 steps 2-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum TicketCase {
    /// The real ticket id, a request far ahead, a random MAC (`bad_mac`).
    ForgedMac,
    /// The real relay MSYN byte for byte, from the attacker (`replayed`).
    Replayed,
    /// An unknown ticket id (`unknown_ticket`).
    UnknownTicket,
    /// A relay port with no relay (`unknown_port`).
    OtherPort,
}

impl TicketCase {
    pub(crate) const ALL: [TicketCase; 4] = [
        TicketCase::ForgedMac,
        TicketCase::Replayed,
        TicketCase::UnknownTicket,
        TicketCase::OtherPort,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            TicketCase::ForgedMac => "forged-mac",
            TicketCase::Replayed => "replayed",
            TicketCase::UnknownTicket => "unknown-ticket",
            TicketCase::OtherPort => "other-port",
        }
    }
}

/// The relay port `forged-ticket` aims at when a port without a relay is wanted: the
/// last of the lab's relay range (the scenarios allocate one relay, the first).
pub(crate) const UNUSED_RELAY_PORT: u16 = 40999;

/// One thing `forged-report` or `replayed-report` sends the mobility server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlStep {
    /// A MoveReport of the target's side claiming it moved to the attacker's
    /// address: request far ahead, random MAC (`BadMac`).
    ForgedMoveReport { nth: u32 },
    /// A Register of the target's side with the attacker's address, a random
    /// verifier and a random MAC (`BadMac`).
    ForgedRegister,
    /// A Register of the target's side under a verifier of the attacker's own, its
    /// MAC right for that verifier: squatting the id (`Conflict`, PROTOCOL.md
    /// §11.9).
    SquattingRegister,
    /// A forged MoveReport with version 2 (`UnknownVersion`; the session goes on).
    UnknownVersion,
    /// The first 30 bytes of a forged MoveReport, then the end of the session
    /// (`truncated`, counted when the server sees it close).
    Truncated,
    /// A length field of 2, on a new session (`Garbage`; the server closes it).
    Garbage,
    /// A length field of 300, on a new session (`Oversized`; closed too).
    Oversized,
    /// Every captured message of the target's, byte for byte, in the order seen.
    Replay { round: u32 },
}

impl ControlStep {
    /// `forged-report`'s steps, in order.
    pub(crate) const FORGED: [ControlStep; 9] = [
        ControlStep::ForgedMoveReport { nth: 0 },
        ControlStep::ForgedMoveReport { nth: 1 },
        ControlStep::ForgedMoveReport { nth: 2 },
        ControlStep::ForgedRegister,
        ControlStep::SquattingRegister,
        ControlStep::UnknownVersion,
        ControlStep::Truncated,
        ControlStep::Garbage,
        ControlStep::Oversized,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ControlStep::ForgedMoveReport { .. } => "forged-move-report",
            ControlStep::ForgedRegister => "forged-register",
            ControlStep::SquattingRegister => "squatting-register",
            ControlStep::UnknownVersion => "unknown-version",
            ControlStep::Truncated => "truncated",
            ControlStep::Garbage => "garbage",
            ControlStep::Oversized => "oversized",
            ControlStep::Replay { .. } => "replay",
        }
    }

    /// Sent on a session of its own (the server closes it after its reply).
    pub(crate) fn fresh_session(self) -> bool {
        matches!(self, ControlStep::Garbage | ControlStep::Oversized)
    }

    /// The session ends after it (the attacker closes its side).
    pub(crate) fn ends_session(self) -> bool {
        matches!(self, ControlStep::Truncated)
    }
}

/// The packets of one attack with their offsets from its trigger.
pub(crate) fn steps_of(kind: AttackKind) -> Vec<(Duration, Step)> {
    let spaced = |count: u32, every_ms: u64, step: &dyn Fn(u32) -> Step| {
        (0..count)
            .map(|n| (Duration::from_millis(u64::from(n) * every_ms), step(n)))
            .collect::<Vec<_>>()
    };
    // Transcripts bucket gaps in RTTs of at least 20 ms (+3-9rtt below 200 ms, +long
    // above): 400 ms and 100 ms apart stay well inside one bucket, so transcripts of
    // two runs agree.
    match kind {
        AttackKind::ForgedMsyn => spaced(3, 400, &|nth| Step::ForgedMsyn { nth }),
        AttackKind::ReplayedMsyn => spaced(3, 400, &|_| Step::Replay),
        AttackKind::ForgedAddressUpdate => spaced(3, 400, &|nth| Step::ForgedAddressUpdate { nth }),
        // Spaced well beyond any RTT, so each is judged against fresh state.
        AttackKind::BlindRst => spaced(3, 400, &|_| Step::BlindRst),
        AttackKind::MalformedOptions => MalformedCase::ALL
            .iter()
            .enumerate()
            .map(|(n, case)| {
                (
                    Duration::from_millis(n as u64 * 100),
                    Step::Malformed(*case),
                )
            })
            .collect(),
        // Replies come back within a millisecond: 150 ms apart, each is answered
        // before the next.
        AttackKind::ForgedReport => ControlStep::FORGED
            .iter()
            .enumerate()
            .map(|(n, step)| (Duration::from_millis(n as u64 * 150), Step::Control(*step)))
            .collect(),
        AttackKind::ReplayedReport => spaced(3, 300, &|round| {
            Step::Control(ControlStep::Replay { round })
        }),
        // 400 ms apart like the others: +long in the transcripts, and over a
        // thousand data segments between two of them at anything above 30 Mbit/s
        // (the 1000+ bucket), so neither a late wake-up nor a slower transfer on
        // a loaded machine changes the transcript.
        AttackKind::ForgedTicket => TicketCase::ALL
            .iter()
            .flat_map(|case| (0..3).map(move |nth| Step::Ticket(*case, nth)))
            .enumerate()
            .map(|(n, step)| (Duration::from_millis(n as u64 * 400), step))
            .collect(),
    }
}

/// A packet ready to send and what it carries (for the timeline and the report).
#[derive(Debug)]
pub(crate) struct Forged {
    pub(crate) packet: Vec<u8>,
    pub(crate) detail: Map<String, Value>,
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // getrandom cannot fail on a booted Linux kernel; were it to, the zeros left are
    // still valid values to forge with.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = [0u8; N];
    }
    bytes
}

pub(crate) fn random_mac() -> [u8; 8] {
    random_bytes()
}

/// Emits `tcp` from `src` to `dst` as a whole IPv4 packet.
pub(crate) fn emit_packet(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    mut tcp: TcpRepr<'_>,
) -> std::result::Result<Vec<u8>, String> {
    tcp.src_port = src.port();
    tcp.dst_port = dst.port();
    let ip = Ipv4Repr {
        ident: u16::from_be_bytes(random_bytes()),
        ..Ipv4Repr::new(*src.ip(), *dst.ip())
    };
    let mut packet = vec![0u8; ipv4_tcp_len(&tcp)];
    let len = emit_ipv4_tcp(&ip, &tcp, &mut packet).map_err(|e| format!("emitting: {e}"))?;
    packet.truncate(len);
    Ok(packet)
}

/// Recomputes the IPv4 header checksum and the TCP checksum (RFC 9293 §3.1
/// pseudo-header) of a packet whose bytes were changed; nothing changes if it
/// is not a whole IPv4/TCP packet.
pub(crate) fn refresh_checksums(packet: &mut [u8]) -> std::result::Result<(), String> {
    let short = |_| "packet too short to re-sum".to_string();
    let mut ip = Ipv4Packet::new_checked(packet).map_err(short)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    TcpPacket::new_checked(ip.payload_mut())
        .map_err(short)?
        .fill_checksum(src, dst);
    ip.fill_checksum();
    Ok(())
}

/// Sets the length byte of the kind-253 option with `exid` in `packet`'s TCP
/// options, then re-sums.
pub(crate) fn patch_experimental_length(
    packet: &mut [u8],
    exid: u16,
    length: u8,
) -> std::result::Result<(), String> {
    let [hi, lo] = exid.to_be_bytes();
    let mut ip = Ipv4Packet::new_checked(&mut *packet).ok();
    let mut tcp = ip
        .as_mut()
        .and_then(|ip| TcpPacket::new_checked(ip.payload_mut()).ok());
    let options = tcp.as_mut().map(TcpPacket::options_mut).unwrap_or_default();
    let at = options
        .windows(4)
        .position(|w| w[0] == EXPERIMENTAL_KIND && w[2..4] == [hi, lo])
        .ok_or_else(|| format!("no option with ExID {exid:#06x} to patch"))?;
    options[at + 1] = length;
    refresh_checksums(packet)
}

/// A `forged-ticket` packet from the target's real relay MSYN (PROTOCOL.md §3.5):
/// the attacker never has a ticket key, so every MAC it sends is random or replayed.
pub(crate) fn forge_ticket(
    view: &ConnectionView,
    case: TicketCase,
    nth: u32,
    attacker: Ipv4Addr,
) -> std::result::Result<Forged, String> {
    let original = view
        .relay_msyn
        .as_deref()
        .ok_or_else(|| "no relay MSYN seen".to_string())?;
    let (ip, tcp) = parse_ipv4_tcp(original).map_err(|e| format!("captured relay MSYN: {e}"))?;
    let options = MigrationOptions::from_repr(&tcp).map_err(|e| format!("its options: {e}"))?;
    let Some(RelayTicket::Msyn(real)) = options.relay() else {
        return Err("the captured segment is not a relay MSYN".into());
    };
    let permit = options
        .permit
        .ok_or_else(|| "the captured relay MSYN has no Permit".to_string())?;
    let packet = if case == TicketCase::Replayed {
        replayed_msyn(original, attacker)?
    } else {
        let ticket = if case == TicketCase::UnknownTicket {
            loop {
                let id = u32::from_be_bytes(random_bytes::<4>());
                if id != real.ticket {
                    break id;
                }
            }
        } else {
            real.ticket
        };
        let forged = RelayTicket::Msyn(RelayMsyn {
            ticket,
            // Far ahead, and different in every packet, so that none of them
            // is a repeat of another (only `Replayed` is a replay).
            request: real.request.wrapping_add(1000 + 10 * case as u32 + nth),
            mac: random_mac(),
        });
        let mut ticket_scratch = OptionScratch::default();
        let forged_options = MigrationOptions {
            permit: Some(permit),
            relay_ticket: Some(forged.to_option(&mut ticket_scratch).data),
            ..MigrationOptions::default()
        };
        let dst_port = if case == TicketCase::OtherPort {
            UNUSED_RELAY_PORT
        } else {
            tcp.dst_port
        };
        let mut repr = TcpRepr {
            seq: tcp.seq,
            ack: tcp.ack,
            flags: TcpFlags::SYN,
            window: tcp.window,
            mss: tcp.mss,
            window_scale: tcp.window_scale,
            ..TcpRepr::default()
        };
        let mut scratch = MigrationScratch::default();
        forged_options
            .attach(&mut scratch, &mut repr)
            .map_err(|e| format!("attaching the options: {e}"))?;
        emit_packet(
            SocketAddrV4::new(attacker, tcp.src_port),
            SocketAddrV4::new(ip.dst, dst_port),
            repr,
        )?
    };
    let (_, sent) = parse_ipv4_tcp(&packet).map_err(|e| format!("forged packet: {e}"))?;
    let sent_options = MigrationOptions::from_repr(&sent).unwrap_or_default();
    let extra = match sent_options.relay() {
        Some(RelayTicket::Msyn(m)) => json!({
            "case": case.name(),
            "ticket": format!("{:08x}", m.ticket),
            "request": m.request,
            "mac": hex::encode(m.mac),
        }),
        _ => json!({ "case": case.name() }),
    };
    Ok(Forged {
        detail: describe(&packet, extra),
        packet,
    })
}

/// The first MSYN again, from `attacker` instead of its real source: byte for byte
/// except the IP source and the two checksums.
pub(crate) fn replayed_msyn(
    original: &[u8],
    attacker: Ipv4Addr,
) -> std::result::Result<Vec<u8>, String> {
    let mut packet = original.to_vec();
    packet
        .get_mut(12..16)
        .ok_or_else(|| "captured MSYN too short".to_string())?
        .copy_from_slice(&attacker.octets());
    refresh_checksums(&mut packet)?;
    Ok(packet)
}

pub(crate) fn describe(packet: &[u8], extra: Value) -> Map<String, Value> {
    let mut detail = Map::new();
    if let Ok((ip, tcp)) = parse_ipv4_tcp(packet) {
        detail.insert(
            "src".into(),
            json!(SocketAddrV4::new(ip.src, tcp.src_port).to_string()),
        );
        detail.insert(
            "dst".into(),
            json!(SocketAddrV4::new(ip.dst, tcp.dst_port).to_string()),
        );
        detail.insert("flags".into(), json!(flag_names(tcp.flags)));
        detail.insert("seq".into(), json!(tcp.seq.0));
        if tcp.flags.ack() {
            detail.insert("ack".into(), json!(tcp.ack.0));
        }
    } else if let Ok(ip) = Ipv4Packet::new_checked(packet) {
        // Deliberately unparseable (malformed options): addresses from the header.
        detail.insert("src".into(), json!(ip.src_addr().to_string()));
        detail.insert("dst".into(), json!(ip.dst_addr().to_string()));
    }
    if let Value::Object(extra) = extra {
        detail.extend(extra);
    }
    detail
}

pub(crate) fn flag_names(flags: TcpFlags) -> String {
    [
        (TcpFlags::SYN, "S"),
        (TcpFlags::FIN, "F"),
        (TcpFlags::RST, "R"),
        (TcpFlags::PSH, "P"),
        (TcpFlags::ACK, "."),
    ]
    .iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, name)| *name)
    .collect()
}

/// Builds the packet of `step` from what the view knows. `attacker` is the
/// attacker's own address.
pub(crate) fn forge(
    view: &ConnectionView,
    step: Step,
    attacker: Ipv4Addr,
) -> std::result::Result<Forged, String> {
    if let Step::Ticket(case, nth) = step {
        // Built from the relay MSYN alone: the proxy's observer sees no `ends`.
        return forge_ticket(view, case, nth, attacker);
    }
    let (target, peer) = view.ends()?;
    let target_ack = view
        .from_target
        .ack
        .ok_or_else(|| "the target has acknowledged nothing yet".to_string())?;
    // The attacker poses as the peer having moved to the attacker's address.
    let attacker_end = SocketAddrV4::new(attacker, peer.port());
    // In-window from the target's view: the peer's next byte, acknowledging what the
    // peer last acknowledged.
    let spoofed_ack = |options: [Option<ExperimentalOption<'static>>; 4]| TcpRepr {
        seq: view.from_peer.seq_next,
        ack: view.from_peer.ack.unwrap_or(SeqNumber(0)),
        flags: TcpFlags::ACK,
        window: view.from_peer.window,
        timestamps: view.peer_timestamps(),
        experimental: options,
        ..TcpRepr::default()
    };
    let msyn_base = || TcpRepr {
        // PROTOCOL.md §7: an MSYN's sequence number is the mover's SND.UNA - 1,
        // which the target's latest ACK tells.
        seq: target_ack - 1,
        flags: TcpFlags::SYN,
        window: u16::MAX,
        mss: Some(FORGED_MSS),
        window_scale: view.peer_window_shift,
        ..TcpRepr::default()
    };
    let forged = match step {
        Step::ForgedMsyn { nth } | Step::ForgedAddressUpdate { nth } => {
            let (token, token_from) = view.token()?;
            // Far ahead of anything real, yet "after" in serial arithmetic.
            let request = view.latest_request.unwrap_or(0).wrapping_add(1000 + nth);
            let mac = random_mac();
            let extra = json!({
                "token": format!("{token:08x}"),
                "token_from": token_from.name(),
                "request": request,
                "mac": hex::encode(mac),
            });
            let mut scratch = MigrationScratch::default();
            if matches!(step, Step::ForgedMsyn { .. }) {
                let options = MigrationOptions {
                    migrate: Some(MigrateOption::Msyn(Migrate {
                        token,
                        request,
                        mac,
                    })),
                    permit: Some(MigratePermit {
                        addr: attacker,
                        port: attacker_end.port(),
                        key: None,
                    }),
                    ..MigrationOptions::default()
                };
                let mut tcp = msyn_base();
                options
                    .attach(&mut scratch, &mut tcp)
                    .map_err(|e| e.to_string())?;
                let packet = emit_packet(attacker_end, target, tcp)?;
                Forged {
                    detail: describe(&packet, extra),
                    packet,
                }
            } else {
                let options = MigrationOptions {
                    address_update: Some(AddressUpdate {
                        old_addr: *peer.ip(),
                        token,
                        request,
                        mac,
                    }),
                    ..MigrationOptions::default()
                };
                let mut tcp = spoofed_ack([None; 4]);
                options
                    .attach(&mut scratch, &mut tcp)
                    .map_err(|e| e.to_string())?;
                let packet = emit_packet(attacker_end, target, tcp)?;
                Forged {
                    detail: describe(&packet, extra),
                    packet,
                }
            }
        }
        Step::Replay => {
            let (original, source) = view
                .first_msyn
                .as_ref()
                .ok_or_else(|| "no MSYN seen".to_string())?;
            let packet = replayed_msyn(original, attacker)?;
            let request =
                parse_ipv4_tcp(original).ok().and_then(
                    |(_, tcp)| match MigrationOptions::from_repr(&tcp).ok()?.migrate? {
                        MigrateOption::Msyn(m) => Some(m.request),
                        _ => None,
                    },
                );
            Forged {
                detail: describe(
                    &packet,
                    json!({"replay_of": source.to_string(), "request": request}),
                ),
                packet,
            }
        }
        Step::BlindRst => {
            // RFC 5961 §3.2: inside [RCV.NXT, RCV.NXT + RCV.WND) but not RCV.NXT. The
            // target's latest ACK is its RCV.NXT as of then (it only grows, by less
            // than a window), so half its window on lands inside and past it.
            let window = view.target_window();
            let offset = (window / 2).max(1);
            let tcp = TcpRepr {
                seq: target_ack + offset,
                flags: TcpFlags::RST,
                ..TcpRepr::default()
            };
            let packet = emit_packet(peer, target, tcp)?;
            Forged {
                detail: describe(
                    &packet,
                    json!({"target_ack": target_ack.0, "target_window": window, "offset": offset}),
                ),
                packet,
            }
        }
        Step::Malformed(case) => forge_malformed(view, case, attacker_end, target, peer)?,
        Step::Control(step) => return Err(format!("{} goes to the server", step.name())),
        Step::Ticket(case, nth) => forge_ticket(view, case, nth, attacker)?,
    };
    Ok(forged)
}

pub(crate) fn forge_malformed(
    view: &ConnectionView,
    case: MalformedCase,
    attacker_end: SocketAddrV4,
    target: SocketAddrV4,
    peer: SocketAddrV4,
) -> std::result::Result<Forged, String> {
    const ZEROS: &[u8] = &[0; 20];
    let option = |exid: u16, data: &'static [u8]| Some(ExperimentalOption { exid, data });
    let spoofed_ack = |first: Option<ExperimentalOption<'static>>| TcpRepr {
        seq: view.from_peer.seq_next,
        ack: view.from_peer.ack.unwrap_or(SeqNumber(0)),
        flags: TcpFlags::ACK,
        window: view.from_peer.window,
        timestamps: view.peer_timestamps(),
        experimental: [first, None, None, None],
        ..TcpRepr::default()
    };
    let syn = |options: [Option<ExperimentalOption<'static>>; 4], seq: SeqNumber| TcpRepr {
        seq,
        flags: TcpFlags::SYN,
        window: u16::MAX,
        mss: Some(FORGED_MSS),
        experimental: options,
        ..TcpRepr::default()
    };
    let packet = match case {
        MalformedCase::KindLengthOne => {
            let mut packet = emit_packet(peer, target, spoofed_ack(option(UNKNOWN_EXID, &[])))?;
            patch_experimental_length(&mut packet, UNKNOWN_EXID, 1)?;
            packet
        }
        MalformedCase::LengthPastHeader => {
            let mut packet =
                emit_packet(peer, target, spoofed_ack(option(UNKNOWN_EXID, &ZEROS[..4])))?;
            // 40 from an option that starts after the first 20 header bytes of
            // options or more runs past the 60-byte maximum header, and in any case
            // past this one.
            patch_experimental_length(&mut packet, UNKNOWN_EXID, 40)?;
            packet
        }
        MalformedCase::UnknownExid => emit_packet(
            peer,
            target,
            spoofed_ack(option(UNKNOWN_EXID, &[0xde, 0xad, 0xbe, 0xef])),
        )?,
        // Migrate's forms are 12, 20 and 24 bytes long.
        MalformedCase::MigrateLength19 => emit_packet(
            peer,
            target,
            spoofed_ack(option(EXID_MIGRATE, &ZEROS[..15])),
        )?,
        // A full Permit is 18 bytes, a short one 10: 9 is neither.
        MalformedCase::SynTruncatedPermit => emit_packet(
            attacker_end,
            target,
            syn(
                [option(EXID_MIGRATE_PERMIT, &ZEROS[..5]), None, None, None],
                SeqNumber(u32::from_be_bytes(random_bytes())),
            ),
        )?,
        // An MSYN's Migrate is 20 bytes: 14 is a cut one, next to a valid short Permit.
        MalformedCase::MsynTruncatedMigrate => {
            let permit = MigratePermit {
                addr: *attacker_end.ip(),
                port: attacker_end.port(),
                key: None,
            };
            let mut permit_data = [0u8; MigratePermit::SHORT_LEN];
            permit
                .emit(&mut permit_data)
                .map_err(|e| format!("emitting a Permit: {e}"))?;
            let target_ack = view.from_target.ack.unwrap_or(SeqNumber(1));
            let tcp = TcpRepr {
                experimental: [
                    option(EXID_MIGRATE, &ZEROS[..10]),
                    Some(ExperimentalOption {
                        exid: EXID_MIGRATE_PERMIT,
                        data: &permit_data,
                    }),
                    None,
                    None,
                ],
                ..syn([None; 4], target_ack - 1)
            };
            emit_packet(attacker_end, target, tcp)?
        }
    };
    Ok(Forged {
        detail: describe(&packet, json!({"case": case.name()})),
        packet,
    })
}

/// Messages for the mobility server, ready to write, and what they carry.
#[derive(Debug)]
pub(crate) struct ForgedControl {
    /// Written in order, each whole.
    pub(crate) messages: Vec<Vec<u8>>,
    pub(crate) detail: Map<String, Value>,
}

/// Replaces a message's MAC (its last 16 bytes) with random bytes.
pub(crate) fn randomize_mac(message: &mut [u8]) {
    let len = message.len();
    if let Some(mac) = message.get_mut(len.saturating_sub(CONTROL_MAC_LEN)..) {
        mac.copy_from_slice(&random_bytes::<CONTROL_MAC_LEN>()[..mac.len()]);
    }
}

/// One line per message: `move-report 55c53f5d:18f9781b high #1001 ...`, or what
/// could be read of a malformed one.
pub(crate) fn describe_control(bytes: &[u8]) -> String {
    match Incoming::parse(bytes) {
        Ok((Incoming::Control(repr), _)) => repr.to_string(),
        Ok((Incoming::Error(error), _)) => format!(
            "error {} (type {:#04x}, conn {}, #{})",
            error.code, error.offending_type, error.conn, error.number
        ),
        Err(e) => format!("{} bytes: {e}", bytes.len()),
    }
}

/// Builds what `step` sends the server from what the control view captured.
/// `attacker` is the attacker's own address.
pub(crate) fn forge_control(
    view: &ControlView,
    step: ControlStep,
    attacker: Ipv4Addr,
) -> std::result::Result<ForgedControl, String> {
    let (conn, side) = view
        .target_conn
        .ok_or_else(|| "no Register of the target's seen".to_string())?;
    let (_, register) = view
        .register()
        .ok_or_else(|| "no Register of the target's seen".to_string())?;
    let direct = view.target_direct().unwrap_or(register.direct);
    // The attacker claims the target now sits at its address, on the same port.
    let claimed = SocketAddrV4::new(attacker, direct.port());
    let request = view.latest_request().wrapping_add(1000);
    let header = |number: u32| Header { conn, side, number };
    let move_report = |number: u32| {
        let mut bytes = ControlRepr {
            header: header(number),
            body: Body::MoveReport(MoveReport {
                old_direct: direct,
                old_seen: UNSPECIFIED,
                old_peer_direct: UNSPECIFIED,
                old_peer_seen: register.peer_seen,
                new_direct: claimed,
            }),
        }
        // Any verifier: the MAC is replaced below.
        .to_vec(&Verifier([0; VERIFIER_LEN]));
        randomize_mac(&mut bytes);
        bytes
    };
    let register_with = |verifier: Verifier, number: u32| {
        ControlRepr {
            header: header(number),
            body: Body::Register(Register {
                verifier,
                direct: claimed,
                peer_seen: register.peer_seen,
                last_notice: 0,
            }),
        }
        .to_vec(&verifier)
    };
    let messages: Vec<Vec<u8>> = match step {
        ControlStep::ForgedMoveReport { nth } => vec![move_report(request.wrapping_add(nth))],
        ControlStep::ForgedRegister => {
            let mut bytes = register_with(Verifier(random_bytes()), request.wrapping_add(10));
            randomize_mac(&mut bytes);
            vec![bytes]
        }
        ControlStep::SquattingRegister => {
            vec![register_with(
                Verifier(random_bytes()),
                request.wrapping_add(11),
            )]
        }
        ControlStep::UnknownVersion => {
            let mut bytes = move_report(request.wrapping_add(12));
            if let Some(version) = bytes.first_mut() {
                *version = VERSION + 1;
            }
            vec![bytes]
        }
        ControlStep::Truncated => {
            let mut bytes = move_report(request.wrapping_add(13));
            bytes.truncate(30);
            vec![bytes]
        }
        // Version, type, length: all a receiver can rely on (PROTOCOL.md §15.3).
        ControlStep::Garbage => vec![vec![VERSION, 0x02, 0x00, 0x02, 0xde, 0xad, 0xbe, 0xef]],
        ControlStep::Oversized => {
            let mut bytes = vec![VERSION, 0x02, 0x01, 0x2c];
            bytes.resize(64, 0);
            vec![bytes]
        }
        ControlStep::Replay { .. } => view.captured.iter().map(|m| m.bytes.clone()).collect(),
    };
    if messages.is_empty() {
        return Err("nothing of the target's captured to replay".into());
    }
    let mut detail = Map::new();
    detail.insert("step".into(), json!(step.name()));
    detail.insert("server".into(), json!(view.server.to_string()));
    detail.insert("conn".into(), json!(conn.to_string()));
    detail.insert("side".into(), json!(side.to_string()));
    detail.insert(
        "messages".into(),
        json!(messages
            .iter()
            .map(|m| describe_control(m))
            .collect::<Vec<_>>()),
    );
    if let ControlStep::Replay { round } = step {
        detail.insert("round".into(), json!(round));
        detail.insert(
            "replay_of".into(),
            json!(view
                .captured
                .iter()
                .map(|m| m.from.to_string())
                .collect::<Vec<_>>()),
        );
    } else if !step.fresh_session() {
        detail.insert("claimed".into(), json!(claimed.to_string()));
    }
    Ok(ForgedControl { messages, detail })
}
