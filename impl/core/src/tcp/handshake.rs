//! The MSYN handshake as pure functions (PROTOCOL.md §6.3-§6.5, §7, and the
//! relay form of §3.5 / §6.9): what an MSYN, an MSYN-ACK and a Confirm look
//! like, and how each is checked, with no connection, clock or socket.
//!
//! Read first: PROTOCOL.md §6 (procedure), §7 (sequence numbers), §4.3 and
//! §4.7 (MACs). Two users: a connection's migration code
//! (`tcp/migration.rs`), which keeps the state (request counter, replay
//! window, pending nonce) and calls these at each step, and the proxy's
//! relay (`crate::relay`), which answers relay MSYNs with the ticket's key
//! instead of connection keys. Everything sent is built here, so both put
//! the same bytes on the wire.
//!
//! Public on purpose: others check handshakes with these same functions.
//! The conformance normalizer verifies captured relay MSYNs and MSYN-ACKs
//! (`verify_relay_msyn`, `verify_relay_msyn_ack`), and the integration
//! tests (`migrate_handshake`, `relay_sim`) drive and forge handshakes.

use core::net::SocketAddrV4;

use crate::auth::{ConnectionKeys, MacInput, ReplayWindow, RequestCheck, RequestNumber};
use crate::relay::ticket::{HostTicket, TicketKey, TicketMacInput};
use crate::wire::{
    Migrate, MigrateAck, MigrateConfirm, MigrateOption, MigratePermit, MigrationOptions, RelayMsyn,
    RelayMsynAck, RelayTicket, SeqNumber, TcpFlags, TcpRepr, Timestamps, MAX_ACK_RECEIVED,
};

// --------------------------------------------------------------------
// Segments (PROTOCOL.md §7)
// --------------------------------------------------------------------

/// The MSYN's header without sustain options: SYN only, seq = SND.UNA - 1
/// (the SYN occupies the byte before SND.UNA, §7), ACK field 0, the window
/// unscaled (RFC 7323 §2.2), MSS, and WS with the original shift if window
/// scaling was negotiated (§5.3).
pub fn msyn_header(
    src_port: u16,
    dst_port: u16,
    snd_una: SeqNumber,
    window: u16,
    mss: u16,
    window_scale: Option<u8>,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port,
        dst_port,
        seq: snd_una - 1,
        ack: SeqNumber(0),
        flags: TcpFlags::SYN,
        window,
        mss: Some(mss),
        window_scale,
        ..TcpRepr::default()
    }
}

/// The MSYN-ACK's header without sustain options: SYN|ACK, seq =
/// `responder_una` - 1, ack = MSYN.seq + 1 **exactly** (`msyn_next`, §7,
/// §10), the window unscaled, WS and TS (TSecr = 0) if negotiated (§5.4).
pub fn msyn_ack_header(
    src_port: u16,
    dst_port: u16,
    responder_una: SeqNumber,
    msyn_next: SeqNumber,
    window: u16,
    window_scale: Option<u8>,
    timestamps: Option<Timestamps>,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port,
        dst_port,
        seq: responder_una - 1,
        ack: msyn_next,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window,
        window_scale,
        timestamps,
        ..TcpRepr::default()
    }
}

/// §6.3 step 7 and §6.4 step 5: the SYN of an MSYN or MSYN-ACK sits on the
/// byte before the sender's SND.UNA, which we must have received and which
/// can be at most a window behind our RCV.NXT:
/// RCV.NXT - MAX.RCV.WND <= SEG.SEQ + 1 <= RCV.NXT.
pub fn syn_seq_plausible(syn_seq: SeqNumber, rcv_nxt: SeqNumber, max_window: usize) -> bool {
    let una = syn_seq + 1;
    una <= rcv_nxt && una >= rcv_nxt - max_window
}

/// The received offset of an MSYN-ACK (§3.3, §7): RCV.NXT minus the
/// segment's own ACK field, saturated at 2^24 - 1 (which only makes the
/// mover resend more).
pub fn msyn_ack_received(rcv_nxt: SeqNumber, ack: SeqNumber) -> u32 {
    ((rcv_nxt - ack) as u32).min(MAX_ACK_RECEIVED)
}

// --------------------------------------------------------------------
// MSYN between the ends (Migrate)
// --------------------------------------------------------------------

/// §6.3 step 1: the Migrate (MSYN form) and Permit of an MSYN, if `seg` is
/// one: SYN without ACK, RST or FIN, both options present.
pub fn classify_msyn(
    seg: &TcpRepr<'_>,
    options: &MigrationOptions<'_>,
) -> Option<(Migrate, MigratePermit)> {
    let flags = seg.flags;
    if !flags.syn() || flags.ack() || flags.rst() || flags.fin() {
        return None;
    }
    match (options.migrate, options.permit) {
        (Some(MigrateOption::Msyn(m)), Some(p)) => Some((m, p)),
        _ => None,
    }
}

/// The MSYN the responder has accepted and not yet seen confirmed (§6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The request number of that MSYN.
    pub request: RequestNumber,
    /// The mover's direct address from that MSYN's Permit.
    pub direct: SocketAddrV4,
}

/// The outcome of §6.3 steps 5-6 for one MSYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsynVerdict {
    /// Fresh and authentic: accept it (step 8).
    Accept,
    /// A network duplicate of the MSYN whose path is still unconfirmed,
    /// from the same source with the same Permit: send the pending
    /// MSYN-ACK again (same nonce), change nothing.
    AnswerAgain,
    /// Any other repeat of the last accepted request: drop.
    Repeat,
    /// An older request: drop.
    Stale,
    /// The MAC did not verify: drop.
    BadMac,
}

/// §6.3 steps 5 (replay) and 6 (MAC with K = key_remote || key_local over
/// "sustain MSYN", our token, r, the Permit's direct address). `pending`
/// is the MSYN accepted last, while its path is unconfirmed;
/// `from_current_remote` whether this one came from the address and port
/// that MSYN came from. Changes nothing: the caller accepts `r` in its
/// [`ReplayWindow`] on [`MsynVerdict::Accept`].
pub fn check_msyn(
    keys: &ConnectionKeys,
    replay: &ReplayWindow,
    pending: Option<Accepted>,
    from_current_remote: bool,
    migrate: &Migrate,
    permit: &MigratePermit,
) -> MsynVerdict {
    let request = RequestNumber(migrate.request);
    match replay.check(request) {
        RequestCheck::Fresh => {}
        RequestCheck::Repeat => {
            return match pending {
                Some(p)
                    if p.request == request
                        && from_current_remote
                        && p.direct == permit.direct() =>
                {
                    MsynVerdict::AnswerAgain
                }
                _ => MsynVerdict::Repeat,
            };
        }
        RequestCheck::Stale => return MsynVerdict::Stale,
    }
    let input = MacInput::Msyn {
        token: keys.local_token(),
        request,
        mover: permit.direct(),
    };
    if keys.verify(&input, &migrate.mac) {
        MsynVerdict::Accept
    } else {
        MsynVerdict::BadMac
    }
}

/// §6.2 step 3: the options of an MSYN with request `request` from direct
/// address `direct`: Migrate{token(key_remote), r, MAC} and a short Permit.
pub fn msyn_options(
    keys: &ConnectionKeys,
    request: RequestNumber,
    direct: SocketAddrV4,
) -> MigrationOptions<'static> {
    let token = keys.remote_token();
    let mac = keys.sign(&MacInput::Msyn {
        token,
        request,
        mover: direct,
    });
    MigrationOptions {
        migrate: Some(MigrateOption::Msyn(Migrate {
            token: token.0,
            request: request.0,
            mac,
        })),
        permit: Some(short_permit(direct)),
        ..MigrationOptions::default()
    }
}

/// The short Migrate-Permit of an MSYN (§3.2): direct address and port.
pub fn short_permit(direct: SocketAddrV4) -> MigratePermit {
    MigratePermit {
        addr: *direct.ip(),
        port: direct.port(),
        key: None,
    }
}

/// §6.3 step 9: the responder's Migrate in MSYN-ACK form, MAC with
/// K = key_local || key_remote over ("sustain MSYN-ACK", token(key_remote),
/// r, nonce, the mover's direct address, received).
pub fn msyn_ack_option(
    keys: &ConnectionKeys,
    request: RequestNumber,
    nonce: u32,
    mover_direct: SocketAddrV4,
    received: u32,
) -> MigrateOption {
    let token = keys.remote_token();
    let received = Some(received.min(MAX_ACK_RECEIVED));
    let mac = keys.sign(&MacInput::MsynAck {
        token,
        request,
        nonce,
        mover: mover_direct,
        received,
    });
    MigrateOption::MsynAck(MigrateAck {
        token: token.0,
        request: request.0,
        nonce,
        received,
        mac,
    })
}

/// §6.4 steps 1 and 4: the MSYN-ACK names our token and its MAC verifies
/// with K = key_remote || key_local over the direct address our MSYN
/// carried (`mover_direct`). Either version of the form (§3.3).
pub fn verify_msyn_ack(
    keys: &ConnectionKeys,
    ack: &MigrateAck,
    mover_direct: SocketAddrV4,
) -> bool {
    if ack.token != keys.local_token().0 {
        return false;
    }
    let input = MacInput::MsynAck {
        token: keys.local_token(),
        request: RequestNumber(ack.request),
        nonce: ack.nonce,
        mover: mover_direct,
        received: ack.received,
    };
    keys.verify(&input, &ack.mac)
}

/// §6.4 step 7: the mover's Confirm echoing (r, nonce), with its received
/// offset RCV.NXT - SEG.ACK of the segment that carries it.
pub fn confirm_option(request: RequestNumber, nonce: u32, received: u32) -> MigrateOption {
    MigrateOption::Confirm(MigrateConfirm {
        request: request.0,
        nonce,
        received: Some(received),
    })
}

/// §6.5: whether `options` carry a Confirm for the pending (r, nonce); if
/// so, its received offset (`None` in the version 0 form).
pub fn confirm_matches(
    options: &MigrationOptions<'_>,
    request: RequestNumber,
    nonce: u32,
) -> Option<Option<u32>> {
    match options.migrate {
        Some(MigrateOption::Confirm(c)) if c.request == request.0 && c.nonce == nonce => {
            Some(c.received)
        }
        _ => None,
    }
}

// --------------------------------------------------------------------
// Relay MSYN (PROTOCOL.md §3.5, §6.9): the same handshake with the proxy,
// authenticated by the ticket's key.
// --------------------------------------------------------------------

/// A relay MSYN's Relay-Ticket (MSYN form) and Permit, if `seg` is one.
pub fn classify_relay_msyn(
    seg: &TcpRepr<'_>,
    options: &MigrationOptions<'_>,
) -> Option<(RelayMsyn, MigratePermit)> {
    let flags = seg.flags;
    if !flags.syn() || flags.ack() || flags.rst() || flags.fin() || options.migrate.is_some() {
        return None;
    }
    match (options.relay(), options.permit) {
        (Some(RelayTicket::Msyn(m)), Some(p)) => Some((m, p)),
        _ => None,
    }
}

/// The mover's Relay-Ticket for an MSYN to the proxy (it replaces Migrate;
/// the short Permit goes next to it). `rcv_nxt` is the mover's RCV.NXT,
/// which the relay MSYN carries in its ACK field (ACK bit clear, §6.9) and
/// the MAC covers.
pub fn relay_msyn_option(
    ticket: &HostTicket,
    request: RequestNumber,
    direct: SocketAddrV4,
    rcv_nxt: SeqNumber,
) -> RelayTicket {
    let mac = ticket.key.sign(&TicketMacInput::Msyn {
        ticket: ticket.ticket,
        request: request.0,
        mover: direct,
        rcv_nxt: rcv_nxt.0,
    });
    RelayTicket::Msyn(RelayMsyn {
        ticket: ticket.ticket.0,
        request: request.0,
        mac,
    })
}

/// The proxy's check of a relay MSYN's MAC under the ticket's key;
/// `rcv_nxt` is the MSYN's ACK field.
pub fn verify_relay_msyn(
    key: &TicketKey,
    msyn: &RelayMsyn,
    permit: &MigratePermit,
    rcv_nxt: SeqNumber,
) -> bool {
    let input = TicketMacInput::Msyn {
        ticket: crate::relay::ticket::TicketId(msyn.ticket),
        request: msyn.request,
        mover: permit.direct(),
        rcv_nxt: rcv_nxt.0,
    };
    key.verify(&input, &msyn.mac)
}

/// The proxy's Relay-Ticket for its MSYN-ACK: proves knowledge of the
/// ticket key, carries the nonce to echo and the received offset.
pub fn relay_msyn_ack_option(
    key: &TicketKey,
    ticket: u32,
    request: u32,
    nonce: u32,
    mover_direct: SocketAddrV4,
    received: u32,
) -> RelayTicket {
    let received = received.min(MAX_ACK_RECEIVED);
    let mac = key.sign(&TicketMacInput::MsynAck {
        ticket: crate::relay::ticket::TicketId(ticket),
        request,
        nonce,
        mover: mover_direct,
        received,
    });
    RelayTicket::MsynAck(RelayMsynAck {
        ticket,
        request,
        nonce,
        received,
        mac,
    })
}

/// The mover's check of the proxy's MSYN-ACK: our ticket, and the MAC
/// under its key over the direct address our MSYN carried.
pub fn verify_relay_msyn_ack(
    ticket: &HostTicket,
    ack: &RelayMsynAck,
    mover_direct: SocketAddrV4,
) -> bool {
    if ack.ticket != ticket.ticket.0 {
        return false;
    }
    let input = TicketMacInput::MsynAck {
        ticket: ticket.ticket,
        request: ack.request,
        nonce: ack.nonce,
        mover: mover_direct,
        received: ack.received,
    };
    ticket.key.verify(&input, &ack.mac)
}
