//! The parsed form of an authenticated control message: the prefix
//! ([`Header`]) and a typed [`Body`]. Emitting computes the MAC.

use core::fmt;

use super::codec::Writer;
use super::message::{Message, MessageType, PREFIX_LEN};
use super::{Ack, ControlError, MoveReport, PeerLocation, Register, RelayAssignment, VERSION};
use crate::verifier::{ConnectionId, Side, Verifier, CONTROL_MAC_LEN};

/// The authenticated prefix: which connection, which side of it, and the
/// request number (host to server) or notice number (server to host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The connection the message is about.
    pub conn: ConnectionId,
    /// The sender's side for host messages, the recipient's for server
    /// messages: always the host's own side.
    pub side: Side,
    /// The request number (host to server) or notice number (server to host).
    pub number: u32,
}

/// The type-specific part of an authenticated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Register (PROTOCOL.md §15.5).
    Register(Register),
    /// MoveReport (PROTOCOL.md §15.6).
    MoveReport(MoveReport),
    /// Unregister: no body (PROTOCOL.md §15.6).
    Unregister,
    /// Ack (PROTOCOL.md §15.7).
    Ack(Ack),
    /// PeerLocation (PROTOCOL.md §15.8).
    PeerLocation(PeerLocation),
    /// RelayAssignment (PROTOCOL.md §15.8).
    RelayAssignment(RelayAssignment),
}

impl Body {
    /// The message type this body has.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Body::Register(_) => MessageType::Register,
            Body::MoveReport(_) => MessageType::MoveReport,
            Body::Unregister => MessageType::Unregister,
            Body::Ack(_) => MessageType::Ack,
            Body::PeerLocation(_) => MessageType::PeerLocation,
            Body::RelayAssignment(_) => MessageType::RelayAssignment,
        }
    }
}

/// An authenticated control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr {
    /// The authenticated prefix.
    pub header: Header,
    /// The type-specific part.
    pub body: Body,
}

impl ControlRepr {
    /// Parses a checked message. Does **not** verify the MAC: the verifier
    /// comes from the registry (server) or the credentials (client); call
    /// [`Message::verify_mac`] before acting.
    pub fn parse<T: AsRef<[u8]>>(msg: &Message<T>) -> Result<ControlRepr, ControlError> {
        let raw = msg.raw_type();
        let msg_type = msg.msg_type().ok_or(ControlError::UnknownType(raw))?;
        let len = msg.body().len();
        if msg_type.direction().is_none() || len != msg_type.body_len() {
            return Err(ControlError::BadLength {
                msg_type: raw,
                len: usize::from(msg.length()),
            });
        }
        let side = Side::from_wire(msg.side_raw()).ok_or(ControlError::BadSide(msg.side_raw()))?;
        let header = Header {
            conn: msg.conn(),
            side,
            number: msg.number(),
        };
        let b = msg.body();
        let body = match msg_type {
            MessageType::Register => Body::Register(Register::parse(b)),
            MessageType::MoveReport => Body::MoveReport(MoveReport::parse(b)),
            MessageType::Unregister => Body::Unregister,
            MessageType::Ack => Body::Ack(Ack::parse(b)?),
            MessageType::PeerLocation => Body::PeerLocation(PeerLocation::parse(b)),
            MessageType::RelayAssignment => Body::RelayAssignment(RelayAssignment::parse(b)),
            MessageType::Error => return Err(ControlError::UnknownType(raw)),
        };
        Ok(ControlRepr { header, body })
    }

    /// The message type.
    pub fn msg_type(&self) -> MessageType {
        self.body.msg_type()
    }

    /// Bytes of the whole message: prefix, body and MAC.
    pub fn buffer_len(&self) -> usize {
        PREFIX_LEN + self.msg_type().body_len() + CONTROL_MAC_LEN
    }

    /// Writes the message and its MAC under `verifier`; returns its length.
    pub fn emit(&self, verifier: &Verifier, buf: &mut [u8]) -> Result<usize, ControlError> {
        let len = self.buffer_len();
        let have = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(ControlError::BufferTooSmall { needed: len, have })?;
        let mut w = Writer::new(out);
        w.u8(VERSION);
        w.u8(self.msg_type().to_wire());
        w.u16(len as u16);
        w.u64(self.header.conn.0);
        w.u8(self.header.side.index() as u8);
        w.u8(0);
        w.u32(self.header.number);
        match &self.body {
            Body::Register(b) => b.emit(&mut w),
            Body::MoveReport(b) => b.emit(&mut w),
            Body::Unregister => {}
            Body::Ack(b) => b.emit(&mut w),
            Body::PeerLocation(b) => b.emit(&mut w),
            Body::RelayAssignment(b) => b.emit(&mut w),
        }
        debug_assert_eq!(w.position() + CONTROL_MAC_LEN, len);
        let mut msg = Message::new_unchecked(out);
        msg.fill_mac(verifier);
        Ok(len)
    }

    /// The message as a fresh vector.
    pub fn to_vec(&self, verifier: &Verifier) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        let _ = self.emit(verifier, &mut out);
        out
    }
}

impl fmt::Display for ControlRepr {
    /// One line: `register 55c53f5d:18f9781b low #1 direct 192.0.2.10:51234 ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        write!(f, "{} {} {} #{}", self.msg_type(), h.conn, h.side, h.number)?;
        match &self.body {
            Body::Register(r) => write!(
                f,
                " direct {} peer-seen {} last-notice {}",
                r.direct, r.peer_seen, r.last_notice
            ),
            Body::MoveReport(m) => write!(
                f,
                " {} -> {} (seen {}, peer {} seen {})",
                m.old_direct, m.new_direct, m.old_seen, m.old_peer_direct, m.old_peer_seen
            ),
            Body::Unregister => Ok(()),
            Body::Ack(a) => write!(f, " request {} {}", a.request, a.outcome),
            Body::PeerLocation(p) => write!(
                f,
                " request {} target {}{}{}",
                p.request,
                p.target,
                if p.you_behind_napt { " you-napt" } else { "" },
                if p.peer_behind_napt { " peer-napt" } else { "" }
            ),
            Body::RelayAssignment(r) => write!(
                f,
                " request {} proxy {} ticket {:08x} lifetime {}s",
                r.request, r.proxy, r.ticket_id, r.lifetime_secs
            ),
        }
    }
}
