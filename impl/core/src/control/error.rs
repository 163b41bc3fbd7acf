//! Why a control message could not be parsed or emitted, and the error
//! codes the server answers with (PROTOCOL.md §15.4, §15.9).

use core::fmt;

use thiserror::Error;

/// A parse or emit failure. Parsing never panics; every malformed input
/// maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ControlError {
    /// Fewer bytes than the header or the length field needs.
    #[error("control message truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The length field is shorter than the header: framing is lost.
    #[error("control message length field {0} is shorter than the header")]
    Garbage(usize),
    /// The length field exceeds [`super::MAX_MESSAGE_LEN`].
    #[error("control message of {0} bytes exceeds the maximum")]
    Oversized(usize),
    /// More bytes were given than the length field declares.
    #[error("control message declares {declared} bytes but {have} were given")]
    TrailingBytes {
        /// The length field.
        declared: usize,
        /// Bytes given.
        have: usize,
    },
    /// A version byte this implementation does not speak.
    #[error("unknown control protocol version {0}")]
    UnknownVersion(u8),
    /// A type byte this implementation does not know.
    #[error("unknown control message type {0:#04x}")]
    UnknownType(u8),
    /// A known type with a length it cannot have.
    #[error("control message type {msg_type:#04x} cannot be {len} bytes long")]
    BadLength {
        /// The type byte.
        msg_type: u8,
        /// The length field.
        len: usize,
    },
    /// A side byte other than the two sides (PROTOCOL.md §15.2).
    #[error("invalid side {0}")]
    BadSide(u8),
    /// An Ack outcome byte this implementation does not know.
    #[error("invalid outcome {0}")]
    BadOutcome(u8),
    /// The buffer given to an emit is too small.
    #[error("output buffer too small: need {needed} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the emit needs.
        needed: usize,
        /// Bytes the buffer has.
        have: usize,
    },
}

impl ControlError {
    /// The code the server answers a message failing this way with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::Truncated { .. } => ErrorCode::Truncated,
            ControlError::Garbage(_) => ErrorCode::Garbage,
            ControlError::Oversized(_) => ErrorCode::Oversized,
            ControlError::UnknownVersion(_) => ErrorCode::UnknownVersion,
            ControlError::UnknownType(_) => ErrorCode::UnknownType,
            ControlError::TrailingBytes { .. }
            | ControlError::BadLength { .. }
            | ControlError::BadSide(_)
            | ControlError::BadOutcome(_)
            | ControlError::BufferTooSmall { .. } => ErrorCode::Malformed,
        }
    }
}

/// The code in an Error message (PROTOCOL.md §15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The length field is shorter than the header: framing is lost and
    /// the server closes the session after this reply.
    Garbage,
    /// A known type whose fields do not parse (wrong length, bad side).
    Malformed,
    /// Fewer bytes than the length field says (a message cut short).
    Truncated,
    /// Longer than [`super::MAX_MESSAGE_LEN`]; the session is closed.
    Oversized,
    /// A version the server does not speak.
    UnknownVersion,
    /// A type the server does not know.
    UnknownType,
    /// The MAC did not verify under the registered verifier.
    BadMac,
    /// The request number is not after the last accepted one.
    Replayed,
    /// No registration for this connection and side: register (again).
    UnknownConnection,
    /// A registration with a different verifier exists for this id.
    Conflict,
    /// Too many messages from this source address.
    RateLimited,
    /// The registry is full; try later.
    RegistryFull,
    /// A server-to-host type sent to the server.
    UnexpectedType,
    /// A code this implementation does not know.
    Other(u8),
}

impl ErrorCode {
    /// The code byte on the wire.
    pub fn to_wire(self) -> u8 {
        match self {
            ErrorCode::Garbage => 1,
            ErrorCode::Malformed => 2,
            ErrorCode::Truncated => 3,
            ErrorCode::Oversized => 4,
            ErrorCode::UnknownVersion => 5,
            ErrorCode::UnknownType => 6,
            ErrorCode::BadMac => 7,
            ErrorCode::Replayed => 8,
            ErrorCode::UnknownConnection => 9,
            ErrorCode::Conflict => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::RegistryFull => 12,
            ErrorCode::UnexpectedType => 13,
            ErrorCode::Other(v) => v,
        }
    }

    /// The code for a code byte; unknown ones are kept as `Other`.
    pub fn from_wire(v: u8) -> ErrorCode {
        match v {
            1 => ErrorCode::Garbage,
            2 => ErrorCode::Malformed,
            3 => ErrorCode::Truncated,
            4 => ErrorCode::Oversized,
            5 => ErrorCode::UnknownVersion,
            6 => ErrorCode::UnknownType,
            7 => ErrorCode::BadMac,
            8 => ErrorCode::Replayed,
            9 => ErrorCode::UnknownConnection,
            10 => ErrorCode::Conflict,
            11 => ErrorCode::RateLimited,
            12 => ErrorCode::RegistryFull,
            13 => ErrorCode::UnexpectedType,
            other => ErrorCode::Other(other),
        }
    }

    /// Whether the server closes the session after sending this code
    /// (the byte stream can no longer be split into messages).
    pub fn closes_session(self) -> bool {
        matches!(self, ErrorCode::Garbage | ErrorCode::Oversized)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Garbage => f.write_str("garbage"),
            ErrorCode::Malformed => f.write_str("malformed"),
            ErrorCode::Truncated => f.write_str("truncated"),
            ErrorCode::Oversized => f.write_str("oversized"),
            ErrorCode::UnknownVersion => f.write_str("unknown-version"),
            ErrorCode::UnknownType => f.write_str("unknown-type"),
            ErrorCode::BadMac => f.write_str("bad-mac"),
            ErrorCode::Replayed => f.write_str("replayed"),
            ErrorCode::UnknownConnection => f.write_str("unknown-connection"),
            ErrorCode::Conflict => f.write_str("conflict"),
            ErrorCode::RateLimited => f.write_str("rate-limited"),
            ErrorCode::RegistryFull => f.write_str("registry-full"),
            ErrorCode::UnexpectedType => f.write_str("unexpected-type"),
            ErrorCode::Other(v) => write!(f, "code-{v}"),
        }
    }
}
