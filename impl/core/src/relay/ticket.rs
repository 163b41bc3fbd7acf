//! Relay tickets (PROTOCOL.md §3.5, §4.7, §11.5): the shared relay secret
//! of the mobility server and the proxy, the per-leg ticket key derived from
//! it, and the MACs of the relay MSYN and the proxy's MSYN-ACK.
//!
//! The proxy never sees connection keys: a relay handshake is authenticated
//! with the ticket's key only. The key is derived from the secret, the relay
//! port and the ticket id, so the proxy checks a ticket without any state of
//! its own beyond "this port is allocated and these are its two ids", and a
//! ticket for another port (or another proxy) fails its MAC.

use core::fmt;
use core::net::SocketAddrV4;

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;
use thiserror::Error;

use crate::control::TICKET_KEY_LEN;
use crate::wire::migrate::{Mac, MAC_LEN};
use crate::wire::MAX_ACK_RECEIVED;

/// Bytes of the relay secret (`--relay-secret FILE`: 64 hex digits).
pub const SECRET_LEN: usize = 32;
/// Label of the ticket-key derivation.
pub const LABEL_TICKET_KEY: &[u8] = b"sustain relay ticket";
/// Label of the MAC in a relay MSYN's Relay-Ticket.
pub const LABEL_RELAY_MSYN: &[u8] = b"sustain RELAY-MSYN";
/// Label of the MAC in the proxy's MSYN-ACK.
pub const LABEL_RELAY_MSYN_ACK: &[u8] = b"sustain RELAY-MSYN-ACK";

/// Why a relay secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    /// Not exactly 64 hex digits (surrounding whitespace allowed).
    #[error("relay secret must be 64 hex digits (32 bytes), found {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("relay secret contains a non-hex character at position {0}")]
    NotHex(usize),
    /// All 32 bytes are zero: certainly not a random secret.
    #[error("relay secret is all zeros")]
    AllZero,
}

/// The secret the mobility server and the proxy share. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySecret([u8; SECRET_LEN]);

impl fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelaySecret(..)")
    }
}

impl RelaySecret {
    /// A secret from its 32 bytes.
    pub fn new(bytes: [u8; SECRET_LEN]) -> RelaySecret {
        RelaySecret(bytes)
    }

    /// Parses the contents of a secret file: 64 hex digits, optionally
    /// surrounded by whitespace (a trailing newline).
    pub fn from_hex(text: &str) -> Result<RelaySecret, SecretError> {
        let text = text.trim();
        if text.len() != 2 * SECRET_LEN {
            return Err(SecretError::Length(text.chars().count()));
        }
        let mut bytes = [0u8; SECRET_LEN];
        let digits = text.as_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            let hi = hex_value(digits[2 * i]).ok_or(SecretError::NotHex(2 * i))?;
            let lo = hex_value(digits[2 * i + 1]).ok_or(SecretError::NotHex(2 * i + 1))?;
            *byte = hi << 4 | lo;
        }
        if bytes == [0; SECRET_LEN] {
            return Err(SecretError::AllZero);
        }
        Ok(RelaySecret(bytes))
    }

    /// HMAC-SHA256 keyed with the secret (the proxy control session's
    /// key derivation, §15.14).
    pub(crate) fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// The key of ticket `ticket` for the relay on `port` (PROTOCOL.md
    /// §4.7): leftmost 16 bytes of HMAC-SHA256(secret, "sustain relay
    /// ticket" || 0x00 || port (2) || ticket id (4)).
    pub fn ticket_key(&self, port: u16, ticket: TicketId) -> TicketKey {
        let mut h = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        h.update(LABEL_TICKET_KEY);
        h.update(&[0]);
        h.update(&port.to_be_bytes());
        h.update(&ticket.0.to_be_bytes());
        let full = h.finalize().into_bytes();
        TicketKey(
            full.first_chunk::<TICKET_KEY_LEN>()
                .copied()
                .unwrap_or_default(),
        )
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A ticket id, minted at random by the mobility server, one per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(pub u32);

/// A ticket's 16-byte HMAC key. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TicketKey(pub [u8; TICKET_KEY_LEN]);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// What a relay MAC covers (PROTOCOL.md §4.7). As for Migrate (§4.3), no
/// address or port a NAPT rewrites and no sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketMacInput {
    /// The mover's relay MSYN: ticket id, request number, the mover's
    /// direct address and port from the MSYN's Migrate-Permit, and the
    /// mover's RCV.NXT as the MSYN's ACK field carries it (§6.9).
    Msyn {
        /// The leg's ticket id.
        ticket: TicketId,
        /// The mover's request number.
        request: u32,
        /// The mover's direct address and port, from the MSYN's Migrate-Permit.
        mover: SocketAddrV4,
        /// The mover's RCV.NXT, as the MSYN's ACK field carries it.
        rcv_nxt: u32,
    },
    /// The proxy's MSYN-ACK: ticket id, request answered, nonce, the
    /// mover's direct address and port from that MSYN, and the received
    /// offset as carried (24 bits).
    MsynAck {
        /// The leg's ticket id.
        ticket: TicketId,
        /// The request number answered.
        request: u32,
        /// The proxy's nonce.
        nonce: u32,
        /// The mover's direct address and port, from that MSYN.
        mover: SocketAddrV4,
        /// The received offset as carried (24 bits).
        received: u32,
    },
}

impl TicketMacInput {
    /// `label || 0x00 || fields`, every field big-endian.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(48);
        match *self {
            TicketMacInput::Msyn {
                ticket,
                request,
                mover,
                rcv_nxt,
            } => {
                m.extend_from_slice(LABEL_RELAY_MSYN);
                m.push(0);
                m.extend_from_slice(&ticket.0.to_be_bytes());
                m.extend_from_slice(&request.to_be_bytes());
                m.extend_from_slice(&mover.ip().octets());
                m.extend_from_slice(&mover.port().to_be_bytes());
                m.extend_from_slice(&rcv_nxt.to_be_bytes());
            }
            TicketMacInput::MsynAck {
                ticket,
                request,
                nonce,
                mover,
                received,
            } => {
                m.extend_from_slice(LABEL_RELAY_MSYN_ACK);
                m.push(0);
                m.extend_from_slice(&ticket.0.to_be_bytes());
                m.extend_from_slice(&request.to_be_bytes());
                m.extend_from_slice(&nonce.to_be_bytes());
                m.extend_from_slice(&mover.ip().octets());
                m.extend_from_slice(&mover.port().to_be_bytes());
                m.extend_from_slice(&received.min(MAX_ACK_RECEIVED).to_be_bytes()[1..]);
            }
        }
        m
    }
}

impl TicketKey {
    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Leftmost 8 bytes of HMAC-SHA256(ticket key, message).
    pub fn sign(&self, input: &TicketMacInput) -> Mac {
        let full = self
            .hmac()
            .chain_update(input.message())
            .finalize()
            .into_bytes();
        full.first_chunk::<MAC_LEN>().copied().unwrap_or_default()
    }

    /// Constant-time check of a truncated MAC.
    pub fn verify(&self, input: &TicketMacInput, mac: &Mac) -> bool {
        self.hmac()
            .chain_update(input.message())
            .verify_truncated_left(mac)
            .is_ok()
    }
}

/// What a host holds for one relayed connection: the ticket id and key of
/// its leg, from the RelayAssignment (PROTOCOL.md §15.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTicket {
    /// The leg's ticket id.
    pub ticket: TicketId,
    /// The leg's ticket key.
    pub key: TicketKey,
}

impl From<&crate::control::RelayAssignment> for HostTicket {
    fn from(a: &crate::control::RelayAssignment) -> HostTicket {
        HostTicket {
            ticket: TicketId(a.ticket_id),
            key: TicketKey(a.ticket_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn secret_file_parsing() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        assert!(RelaySecret::from_hex(hex).is_ok());
        assert_eq!(RelaySecret::from_hex("abcd"), Err(SecretError::Length(4)));
        let bad = hex.replace('A', "g");
        assert!(matches!(
            RelaySecret::from_hex(&bad),
            Err(SecretError::NotHex(_))
        ));
        assert_eq!(
            RelaySecret::from_hex(&"0".repeat(64)),
            Err(SecretError::AllZero)
        );
        assert_eq!(
            format!("{:?}", RelaySecret::new([7; 32])),
            "RelaySecret(..)"
        );
    }

    #[test]
    fn keys_depend_on_port_and_id_and_macs_on_everything() {
        let secret = RelaySecret::new([0x42; 32]);
        let k = secret.ticket_key(40000, TicketId(1));
        assert_ne!(k, secret.ticket_key(40001, TicketId(1)));
        assert_ne!(k, secret.ticket_key(40000, TicketId(2)));
        assert_ne!(
            k,
            RelaySecret::new([0x43; 32]).ticket_key(40000, TicketId(1))
        );
        let mover = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000);
        let input = TicketMacInput::Msyn {
            ticket: TicketId(1),
            request: 7,
            mover,
            rcv_nxt: 0x1234_5678,
        };
        let mac = k.sign(&input);
        assert!(k.verify(&input, &mac));
        // The same fields under the MSYN-ACK label never verify (no
        // reflection of the mover's MSYN as the proxy's answer).
        let reflected = TicketMacInput::MsynAck {
            ticket: TicketId(1),
            request: 7,
            nonce: 0,
            mover,
            received: 0,
        };
        assert!(!k.verify(&reflected, &mac));
        let mut flipped = mac;
        flipped[0] ^= 1;
        assert!(!k.verify(&input, &flipped));
    }
}
