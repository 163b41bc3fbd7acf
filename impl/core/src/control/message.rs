//! The checked view over one control message (PROTOCOL.md §15.3): the
//! version/type/length header every version keeps, the authenticated
//! prefix (connection id, side, number) and the trailing MAC.

use core::fmt;

use super::error::ControlError;
use super::{HEADER_LEN, MAX_MESSAGE_LEN, VERSION};
use crate::verifier::{
    control_mac, verify_control_mac, ConnectionId, ControlMac, Direction, Verifier, CONTROL_MAC_LEN,
};

/// Field offsets (PROTOCOL.md §15.3).
pub(crate) mod field {
    use core::ops::Range;

    pub(crate) const VERSION: usize = 0;
    pub(crate) const TYPE: usize = 1;
    pub(crate) const LENGTH: Range<usize> = 2..4;
    // Authenticated messages only:
    pub(crate) const CONN: Range<usize> = 4..12;
    pub(crate) const SIDE: usize = 12;
    pub(crate) const RESERVED: usize = 13;
    pub(crate) const NUMBER: Range<usize> = 14..18;
    pub(crate) const BODY: usize = 18;
}

/// Bytes before the body of an authenticated message.
pub const PREFIX_LEN: usize = field::BODY;

/// The message types of version 1. The top bit is set on what the server
/// sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Host -> server `0x01`: register one end of a connection (PROTOCOL.md §15.5).
    Register,
    /// Host -> server `0x02`: one end moved (PROTOCOL.md §15.6).
    MoveReport,
    /// Host -> server `0x03`: forget one end (PROTOCOL.md §15.6).
    Unregister,
    /// Server -> host `0x81`: the answer to a request (PROTOCOL.md §15.7).
    Ack,
    /// Server -> host `0x82`: where to send an MSYN (PROTOCOL.md §15.8).
    PeerLocation,
    /// Server -> host `0x83`: move through a relay (PROTOCOL.md §15.8).
    RelayAssignment,
    /// Server -> host `0xFF`: why a message was rejected (PROTOCOL.md §15.9).
    Error,
}

impl MessageType {
    /// Every type of version 1.
    pub const ALL: [MessageType; 7] = [
        MessageType::Register,
        MessageType::MoveReport,
        MessageType::Unregister,
        MessageType::Ack,
        MessageType::PeerLocation,
        MessageType::RelayAssignment,
        MessageType::Error,
    ];

    /// The type byte on the wire.
    pub fn to_wire(self) -> u8 {
        match self {
            MessageType::Register => 0x01,
            MessageType::MoveReport => 0x02,
            MessageType::Unregister => 0x03,
            MessageType::Ack => 0x81,
            MessageType::PeerLocation => 0x82,
            MessageType::RelayAssignment => 0x83,
            MessageType::Error => 0xFF,
        }
    }

    /// The type for a type byte; `None` for an unknown one.
    pub fn from_wire(v: u8) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.to_wire() == v)
    }

    /// Who sends this type; `None` for Error, which carries no MAC.
    pub fn direction(self) -> Option<Direction> {
        match self {
            MessageType::Register | MessageType::MoveReport | MessageType::Unregister => {
                Some(Direction::HostToServer)
            }
            MessageType::Ack | MessageType::PeerLocation | MessageType::RelayAssignment => {
                Some(Direction::ServerToHost)
            }
            MessageType::Error => None,
        }
    }

    /// Body bytes (between the prefix and the MAC; for Error, after the
    /// header) in version 1. Every type has exactly one length.
    pub fn body_len(self) -> usize {
        match self {
            MessageType::Register => super::Register::LEN,
            MessageType::MoveReport => super::MoveReport::LEN,
            MessageType::Unregister => 0,
            MessageType::Ack => super::Ack::LEN,
            MessageType::PeerLocation => super::PeerLocation::LEN,
            MessageType::RelayAssignment => super::RelayAssignment::LEN,
            MessageType::Error => super::ErrorReply::LEN,
        }
    }

    /// The whole message's length in version 1.
    pub fn message_len(self) -> usize {
        match self.direction() {
            Some(_) => PREFIX_LEN + self.body_len() + CONTROL_MAC_LEN,
            None => HEADER_LEN + self.body_len(),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageType::Register => "register",
            MessageType::MoveReport => "move-report",
            MessageType::Unregister => "unregister",
            MessageType::Ack => "ack",
            MessageType::PeerLocation => "peer-location",
            MessageType::RelayAssignment => "relay-assignment",
            MessageType::Error => "error",
        })
    }
}

/// A view over the bytes of exactly one control message.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps without checking; getters then return zeros for missing bytes
    /// rather than panicking. Use only on bytes this code emitted.
    pub fn new_unchecked(buffer: T) -> Message<T> {
        Message { buffer }
    }

    /// The only door for untrusted bytes: `buffer` must be exactly one
    /// well-formed version-1 message of a known type (PROTOCOL.md §15.3).
    pub fn new_checked(buffer: T) -> Result<Message<T>, ControlError> {
        let msg = Message::new_unchecked(buffer);
        msg.check_len()?;
        Ok(msg)
    }

    /// The checks of [`new_checked`](Self::new_checked), cheapest first:
    /// header present, length field sane, exactly that many bytes, version,
    /// type, the type's length.
    pub fn check_len(&self) -> Result<(), ControlError> {
        let have = self.buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(ControlError::Truncated {
                needed: HEADER_LEN,
                have,
            });
        }
        let declared = usize::from(self.length());
        if declared < HEADER_LEN {
            return Err(ControlError::Garbage(declared));
        }
        if declared > MAX_MESSAGE_LEN {
            return Err(ControlError::Oversized(declared));
        }
        if have < declared {
            return Err(ControlError::Truncated {
                needed: declared,
                have,
            });
        }
        if have > declared {
            return Err(ControlError::TrailingBytes { declared, have });
        }
        if self.version() != VERSION {
            return Err(ControlError::UnknownVersion(self.version()));
        }
        let raw_type = self.raw_type();
        let msg_type =
            MessageType::from_wire(raw_type).ok_or(ControlError::UnknownType(raw_type))?;
        if declared != msg_type.message_len() {
            return Err(ControlError::BadLength {
                msg_type: raw_type,
                len: declared,
            });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes().get(at).copied().unwrap_or(0)
    }

    /// The version byte (zero where the message is too short).
    pub fn version(&self) -> u8 {
        self.byte(field::VERSION)
    }

    /// The type byte as on the wire (zero where the message is too short).
    pub fn raw_type(&self) -> u8 {
        self.byte(field::TYPE)
    }

    /// The type, if known (always, after `new_checked`).
    pub fn msg_type(&self) -> Option<MessageType> {
        MessageType::from_wire(self.raw_type())
    }

    /// The length field: the whole message in bytes.
    pub fn length(&self) -> u16 {
        let b = self.bytes().get(field::LENGTH).unwrap_or_default();
        u16::from_be_bytes(<[u8; 2]>::try_from(b).unwrap_or([0; 2]))
    }

    /// Whether the type carries the authenticated prefix and a MAC.
    pub fn is_authenticated(&self) -> bool {
        self.msg_type().and_then(MessageType::direction).is_some()
    }

    /// The connection id (zero where the message is too short).
    pub fn conn(&self) -> ConnectionId {
        let b = self.bytes().get(field::CONN).unwrap_or_default();
        ConnectionId(u64::from_be_bytes(<[u8; 8]>::try_from(b).unwrap_or([0; 8])))
    }

    /// The side byte as on the wire.
    pub fn side_raw(&self) -> u8 {
        self.byte(field::SIDE)
    }

    /// The reserved byte (sent as zero).
    pub fn reserved(&self) -> u8 {
        self.byte(field::RESERVED)
    }

    /// The request number (host to server) or the notice number (server to
    /// host).
    pub fn number(&self) -> u32 {
        let b = self.bytes().get(field::NUMBER).unwrap_or_default();
        u32::from_be_bytes(<[u8; 4]>::try_from(b).unwrap_or([0; 4]))
    }

    fn mac_start(&self) -> usize {
        usize::from(self.length()).saturating_sub(CONTROL_MAC_LEN)
    }

    /// The type-specific bytes: between prefix and MAC for authenticated
    /// types, after the header for Error.
    pub fn body(&self) -> &[u8] {
        let range = if self.is_authenticated() {
            field::BODY..self.mac_start()
        } else {
            HEADER_LEN..usize::from(self.length())
        };
        self.bytes().get(range).unwrap_or_default()
    }

    /// Every byte the MAC covers (all before it).
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes().get(..self.mac_start()).unwrap_or_default()
    }

    /// The trailing MAC (zero where the message is too short).
    pub fn mac(&self) -> ControlMac {
        let start = self.mac_start();
        let b = self
            .bytes()
            .get(start..start + CONTROL_MAC_LEN)
            .unwrap_or_default();
        ControlMac::try_from(b).unwrap_or_default()
    }

    /// Constant-time check of the MAC under `verifier`, with the label of
    /// the type's direction. False for Error and unknown types.
    pub fn verify_mac(&self, verifier: &Verifier) -> bool {
        match self.msg_type().and_then(MessageType::direction) {
            Some(direction) => {
                verify_control_mac(verifier, direction, self.signed_bytes(), &self.mac())
            }
            None => false,
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    fn put(&mut self, range: core::ops::Range<usize>, value: &[u8]) {
        if let Some(slot) = self.buffer.as_mut().get_mut(range) {
            slot.copy_from_slice(value);
        }
    }

    /// Sets the version byte.
    pub fn set_version(&mut self, v: u8) {
        self.put(field::VERSION..field::VERSION + 1, &[v]);
    }

    /// Sets the type byte.
    pub fn set_type(&mut self, t: u8) {
        self.put(field::TYPE..field::TYPE + 1, &[t]);
    }

    /// Sets the length field (the whole message in bytes).
    pub fn set_length(&mut self, len: u16) {
        self.put(field::LENGTH, &len.to_be_bytes());
    }

    /// Sets the connection id.
    pub fn set_conn(&mut self, conn: ConnectionId) {
        self.put(field::CONN, &conn.0.to_be_bytes());
    }

    /// Sets the side byte.
    pub fn set_side_raw(&mut self, side: u8) {
        self.put(field::SIDE..field::SIDE + 1, &[side]);
    }

    /// Sets the reserved byte.
    pub fn set_reserved(&mut self, v: u8) {
        self.put(field::RESERVED..field::RESERVED + 1, &[v]);
    }

    /// Sets the request or notice number.
    pub fn set_number(&mut self, n: u32) {
        self.put(field::NUMBER, &n.to_be_bytes());
    }

    /// The type-specific bytes, to fill in (see [`Self::body`]).
    pub fn body_mut(&mut self) -> &mut [u8] {
        let range = if self.is_authenticated() {
            field::BODY..self.mac_start()
        } else {
            HEADER_LEN..usize::from(self.length())
        };
        self.buffer.as_mut().get_mut(range).unwrap_or_default()
    }

    /// Computes the MAC over everything before it and writes it (no-op for
    /// Error and unknown types).
    pub fn fill_mac(&mut self, verifier: &Verifier) {
        let Some(direction) = self.msg_type().and_then(MessageType::direction) else {
            return;
        };
        let mac = control_mac(verifier, direction, self.signed_bytes());
        let start = self.mac_start();
        self.put(start..start + CONTROL_MAC_LEN, &mac);
    }
}
