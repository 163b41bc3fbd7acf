//! The mobility-server control protocol (PROTOCOL.md §15): versioned,
//! length-prefixed binary messages between hosts and `sustain-server`,
//! carried over an ordinary TCP session.
//!
//! Read first: PROTOCOL.md §15 (layouts, test vectors), §15.2 and
//! [`crate::verifier`] (who can compute which MAC), §11.9 (threat model).
//!
//! Two layers, as everywhere in the core (smoltcp style): the checked view
//! [`Message`] over the bytes of one message (`new_checked` is the only
//! door for untrusted bytes) and the parsed [`ControlRepr`] (authenticated
//! types) or [`ErrorReply`] (the one unauthenticated type), each with
//! `parse`, `emit` and `buffer_len`. [`FrameBuffer`] splits a session's byte
//! stream into messages.
//!
//! - [`message`]: header, prefix and MAC layout, [`MessageType`].
//! - [`host`]: Register and MoveReport bodies.
//! - [`reply`]: Ack, PeerLocation and RelayAssignment bodies.
//! - [`error_reply`]: the Error message; [`error`]: parse errors and codes.
//! - [`repr`]: [`ControlRepr`] = [`Header`] + [`Body`].
//! - [`frame`]: stream framing.

mod codec;
pub mod error;
pub mod error_reply;
pub mod frame;
pub mod host;
pub mod message;
pub mod reply;
pub mod repr;

pub use codec::ADDR_LEN;
pub use error::{ControlError, ErrorCode};
pub use error_reply::ErrorReply;
pub use frame::FrameBuffer;
pub use host::{MoveReport, Register, UNSPECIFIED};
pub use message::{Message, MessageType, PREFIX_LEN};
pub use reply::{Ack, Outcome, PeerLocation, RelayAssignment, TICKET_KEY_LEN};
pub use repr::{Body, ControlRepr, Header};

/// The protocol version this code speaks (PROTOCOL.md §15.3).
pub const VERSION: u8 = 1;
/// Version, type and length: the part every version keeps.
pub const HEADER_LEN: usize = 4;
/// The longest message a receiver accepts; longer ones end the session.
pub const MAX_MESSAGE_LEN: usize = 256;

/// What one message on a session is, once framed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// An authenticated message (its MAC not yet checked).
    Control(ControlRepr),
    /// An Error message (unauthenticated, PROTOCOL.md §15.9).
    Error(ErrorReply),
}

impl Incoming {
    /// Checks and parses one message (MAC *not* verified; see
    /// [`ControlRepr::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<(Incoming, Message<&[u8]>), ControlError> {
        let msg = Message::new_checked(bytes)?;
        let incoming = if msg.msg_type() == Some(MessageType::Error) {
            Incoming::Error(ErrorReply::parse(&msg)?)
        } else {
            Incoming::Control(ControlRepr::parse(&msg)?)
        };
        Ok((incoming, msg))
    }
}

#[cfg(test)]
mod tests;
