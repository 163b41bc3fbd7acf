//! The Error message (PROTOCOL.md §15.9): unauthenticated, because the
//! server must be able to answer bytes it cannot attribute to anyone.

use core::fmt;

use super::codec::{Reader, Writer};
use super::message::{Message, MessageType};
use super::{ControlError, ErrorCode, HEADER_LEN, VERSION};
use crate::verifier::ConnectionId;

/// Error: a code, and what the server could read of the offending message
/// (its type byte, connection id and number; zeros where unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReply {
    /// Why the message was rejected.
    pub code: ErrorCode,
    /// The offending message's type byte.
    pub offending_type: u8,
    /// The offending message's connection id.
    pub conn: ConnectionId,
    /// The offending message's number.
    pub number: u32,
}

impl ErrorReply {
    /// Body bytes.
    pub const LEN: usize = 1 + 1 + 8 + 4;

    /// Parses a checked Error message.
    pub fn parse<T: AsRef<[u8]>>(msg: &Message<T>) -> Result<ErrorReply, ControlError> {
        if msg.msg_type() != Some(MessageType::Error) {
            return Err(ControlError::UnknownType(msg.raw_type()));
        }
        let mut r = Reader::new(msg.body());
        Ok(ErrorReply {
            code: ErrorCode::from_wire(r.u8()),
            offending_type: r.u8(),
            conn: ConnectionId(r.u64()),
            number: r.u32(),
        })
    }

    /// Bytes of the whole message: header and body.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + Self::LEN
    }

    /// Writes the message into `buf`; returns its length, or `BufferTooSmall`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, ControlError> {
        let len = self.buffer_len();
        let have = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(ControlError::BufferTooSmall { needed: len, have })?;
        let mut w = Writer::new(out);
        w.u8(VERSION);
        w.u8(MessageType::Error.to_wire());
        w.u16(len as u16);
        w.u8(self.code.to_wire());
        w.u8(self.offending_type);
        w.u64(self.conn.0);
        w.u32(self.number);
        debug_assert_eq!(w.position(), len);
        Ok(len)
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        let _ = self.emit(&mut out);
        out
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error {} (type {:#04x}, conn {}, number {})",
            self.code, self.offending_type, self.conn, self.number
        )
    }
}
