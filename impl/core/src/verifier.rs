//! Credentials for the mobility server (PROTOCOL.md §15.2): the connection
//! id, the side, and the per-connection verifier that both ends derive from
//! the connection keys, so the server authenticates reports and hosts
//! authenticate notices without the server ever holding the keys.
//!
//! Read first: PROTOCOL.md §4 (keys, tokens, MACs), then §15.2.
//!
//! - The **sides** of a connection are ordered by key value: the end with
//!   the numerically smaller key is [`Side::Low`]. Both ends know both keys
//!   (§4.1), so they agree on the order without knowing who opened.
//! - The **connection id** is the pair of tokens, low side's first
//!   (`token(low key) << 32 | token(high key)`): token-derived, never an
//!   address or port (DESIGN.md).
//! - The **verifier** is HMAC-SHA256 keyed with both keys over a label and
//!   the id, truncated to 16 bytes: one-way (it reveals nothing about the
//!   keys, so the server cannot move connections) and domain-separated from
//!   every MAC of §4.3.
//! - **Control MACs** are HMAC-SHA256 keyed with the verifier over a
//!   direction label and the message, truncated to 16 bytes; the labels
//!   differ per direction, so a host's message can never pass as the
//!   server's.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;
use thiserror::Error;

use crate::auth::{ConnectionKeys, Key, Token};

/// Bytes of a verifier.
pub const VERIFIER_LEN: usize = 16;
/// Bytes of the truncated HMAC-SHA256 that ends every authenticated control
/// message.
pub const CONTROL_MAC_LEN: usize = 16;
/// A truncated control-message MAC.
pub type ControlMac = [u8; CONTROL_MAC_LEN];

/// Label of the verifier derivation.
pub const LABEL_VERIFIER: &[u8] = b"sustain server verifier";
/// Label of the MAC on messages a host sends to the server.
pub const LABEL_CONTROL_HOST: &[u8] = b"sustain control host";
/// Label of the MAC on messages the server sends to a host.
pub const LABEL_CONTROL_SERVER: &[u8] = b"sustain control server";

/// Names a connection at the mobility server: the two tokens, the low
/// side's first. Not secret (tokens travel in MSYNs), only a lookup key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// The id of the connection whose ends have these tokens.
    pub fn from_tokens(low: Token, high: Token) -> ConnectionId {
        ConnectionId(u64::from(low.0) << 32 | u64::from(high.0))
    }

    /// The token of the given side's key.
    pub fn token(self, side: Side) -> Token {
        match side {
            Side::Low => Token((self.0 >> 32) as u32),
            Side::High => Token(self.0 as u32),
        }
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self})")
    }
}

impl fmt::Display for ConnectionId {
    /// `low-token:high-token` in hex, as in captures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}:{:08x}",
            self.token(Side::Low).0,
            self.token(Side::High).0
        )
    }
}

/// Which end of a connection: the one with the smaller key is `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The end with the smaller key (wire value 0).
    Low = 0,
    /// The end with the larger key (wire value 1).
    High = 1,
}

impl Side {
    /// Both sides, in wire order.
    pub const BOTH: [Side; 2] = [Side::Low, Side::High];

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Low => Side::High,
            Side::High => Side::Low,
        }
    }

    /// 0 or 1: the wire value and an array index.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The side a wire byte names; `None` for anything but 0 and 1.
    pub fn from_wire(value: u8) -> Option<Side> {
        match value {
            0 => Some(Side::Low),
            1 => Some(Side::High),
            _ => None,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Low => "low",
            Side::High => "high",
        })
    }
}

/// The per-connection secret the server learns at registration.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verifier(pub [u8; VERIFIER_LEN]);

impl Verifier {
    /// Equality in time independent of where the bytes differ.
    pub fn ct_eq(&self, other: &Verifier) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Verifier {
    /// A verifier lets its holder forge reports: never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

/// Who sent a control message; selects the MAC label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A host to the server (Register, MoveReport, Unregister).
    HostToServer,
    /// The server to a host (Ack, PeerLocation, RelayAssignment).
    ServerToHost,
}

impl Direction {
    /// The MAC label of messages sent in this direction.
    pub fn label(self) -> &'static [u8] {
        match self {
            Direction::HostToServer => LABEL_CONTROL_HOST,
            Direction::ServerToHost => LABEL_CONTROL_SERVER,
        }
    }
}

/// Why credentials cannot be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CredentialsError {
    /// Both ends picked the same key (probability 2^-64): the sides cannot
    /// be told apart, so the connection cannot use the server.
    #[error("both connection keys are equal; the sides cannot be ordered")]
    EqualKeys,
}

/// What one end of a connection uses to talk to the server about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The connection id both ends derive from the keys (PROTOCOL.md §15.2).
    pub id: ConnectionId,
    /// This end's side.
    pub side: Side,
    /// The verifier that MACs this connection's control messages (PROTOCOL.md §15.2).
    pub verifier: Verifier,
}

impl Credentials {
    /// Derives id, side and verifier from one end's keys (PROTOCOL.md
    /// §15.2). Both ends get the same id and verifier and opposite sides.
    pub fn derive(keys: &ConnectionKeys) -> Result<Credentials, CredentialsError> {
        let (low, high, side) = if keys.local.0 < keys.remote.0 {
            (keys.local, keys.remote, Side::Low)
        } else if keys.local.0 > keys.remote.0 {
            (keys.remote, keys.local, Side::High)
        } else {
            return Err(CredentialsError::EqualKeys);
        };
        let id = ConnectionId::from_tokens(low.token(), high.token());
        Ok(Credentials {
            id,
            side,
            verifier: derive_verifier(low, high, id),
        })
    }
}

/// `leftmost 16 bytes of HMAC-SHA256(low key || high key,
/// "sustain server verifier" || 0x00 || id)`, PROTOCOL.md §15.2.
pub fn derive_verifier(low: Key, high: Key, id: ConnectionId) -> Verifier {
    let mut key = [0u8; 16];
    let (first, second) = key.split_at_mut(8);
    first.copy_from_slice(&low.to_bytes());
    second.copy_from_slice(&high.to_bytes());
    let full = hmac_keyed(&key)
        .chain_update(LABEL_VERIFIER)
        .chain_update([0u8])
        .chain_update(id.0.to_be_bytes())
        .finalize()
        .into_bytes();
    Verifier(
        full.first_chunk::<VERIFIER_LEN>()
            .copied()
            .unwrap_or_default(),
    )
}

/// HMAC-SHA256 with a key of at most 64 bytes (zero-padded to the block,
/// RFC 2104 §2), so construction cannot fail.
fn hmac_keyed(key: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    let n = key.len().min(block.len());
    if let (Some(dst), Some(src)) = (block.get_mut(..n), key.get(..n)) {
        dst.copy_from_slice(src);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

fn control_hmac(verifier: &Verifier, direction: Direction, message: &[u8]) -> Hmac<Sha256> {
    hmac_keyed(&verifier.0)
        .chain_update(direction.label())
        .chain_update([0u8])
        .chain_update(message)
}

/// The MAC of a control message: leftmost 16 bytes of HMAC-SHA256(verifier,
/// label || 0x00 || message), where `message` is every byte before the MAC.
pub fn control_mac(verifier: &Verifier, direction: Direction, message: &[u8]) -> ControlMac {
    let full = control_hmac(verifier, direction, message)
        .finalize()
        .into_bytes();
    full.first_chunk::<CONTROL_MAC_LEN>()
        .copied()
        .unwrap_or_default()
}

/// Constant-time check of a received control MAC.
pub fn verify_control_mac(
    verifier: &Verifier,
    direction: Direction,
    message: &[u8],
    mac: &ControlMac,
) -> bool {
    control_hmac(verifier, direction, message)
        .verify_truncated_left(mac)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ConnectionKeys, ConnectionKeys) {
        let a = Key(0x0123_4567_89AB_CDEF);
        let b = Key(0xFEDC_BA98_7654_3210);
        (
            ConnectionKeys {
                local: a,
                remote: b,
            },
            ConnectionKeys {
                local: b,
                remote: a,
            },
        )
    }

    #[test]
    fn both_ends_derive_the_same_id_and_verifier_and_opposite_sides() {
        let (a, b) = pair();
        let ca = Credentials::derive(&a).unwrap();
        let cb = Credentials::derive(&b).unwrap();
        assert_eq!(ca.id, cb.id);
        assert!(ca.verifier.ct_eq(&cb.verifier));
        assert_eq!(ca.side, Side::Low);
        assert_eq!(cb.side, Side::High);
        assert_eq!(ca.id.token(Side::Low), a.local.token());
        assert_eq!(ca.id.token(Side::High), b.local.token());
        assert_eq!(ca.id.to_string(), "55c53f5d:18f9781b");
    }

    #[test]
    fn equal_keys_are_refused() {
        let keys = ConnectionKeys {
            local: Key(7),
            remote: Key(7),
        };
        assert_eq!(Credentials::derive(&keys), Err(CredentialsError::EqualKeys));
    }

    #[test]
    fn verifier_depends_on_both_keys() {
        let (a, _) = pair();
        let base = Credentials::derive(&a).unwrap().verifier;
        let other = Credentials::derive(&ConnectionKeys {
            local: a.local,
            remote: Key(a.remote.0 ^ 1),
        })
        .unwrap()
        .verifier;
        assert!(!base.ct_eq(&other));
        // Not a MAC of §4.3 under the same key: different label, different bytes.
        assert_ne!(
            &base.0[..8],
            &crate::auth::mac_msyn(
                a.local,
                a.remote,
                crate::auth::RequestNumber(0),
                "0.0.0.0:0".parse().unwrap()
            )[..]
        );
    }

    #[test]
    fn control_macs_are_direction_bound() {
        let (a, _) = pair();
        let v = Credentials::derive(&a).unwrap().verifier;
        let msg = b"some control message";
        let mac = control_mac(&v, Direction::HostToServer, msg);
        assert!(verify_control_mac(&v, Direction::HostToServer, msg, &mac));
        assert!(!verify_control_mac(&v, Direction::ServerToHost, msg, &mac));
        assert!(!verify_control_mac(
            &v,
            Direction::HostToServer,
            b"some control messagf",
            &mac
        ));
        let mut flipped = mac;
        flipped[15] ^= 0x80;
        assert!(!verify_control_mac(
            &v,
            Direction::HostToServer,
            msg,
            &flipped
        ));
    }

    #[test]
    fn debug_hides_the_verifier() {
        let (a, _) = pair();
        let v = Credentials::derive(&a).unwrap().verifier;
        assert_eq!(format!("{v:?}"), "Verifier(..)");
    }
}
