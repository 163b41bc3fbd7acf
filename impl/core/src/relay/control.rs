//! The proxy control session (PROTOCOL.md §15.14): how the mobility server
//! asks the proxy for a relay port, sans-IO.
//!
//! The server opens a TCP session to the proxy's control address and sends
//! a Hello with a fresh nonce; the proxy answers with a Welcome carrying its
//! own nonce, MACed under the session key derived from the relay secret and
//! both nonces (proving it knows the secret). Every later message carries a
//! number (strictly increasing per direction) and a MAC under that key, so
//! nothing from another session, or from anyone without the secret, is ever
//! accepted. Framing as §15.3: version, type, length, then the body.

use core::fmt;
use core::net::SocketAddrV4;

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;
use thiserror::Error;

use super::ticket::{RelaySecret, TicketId};
use super::{Relay, RelayError, ReleaseReason};
use crate::control::RelayAssignment;
use crate::rand::Random;
use crate::time::{Duration, Instant};

/// Version byte of the proxy control session.
pub const VERSION: u8 = 1;
/// Bytes of a nonce in Hello and Welcome.
pub const NONCE_LEN: usize = 8;
/// Bytes of the truncated MAC on authenticated messages.
pub const MAC_LEN: usize = 16;
/// Label of the session-key derivation.
pub const LABEL_SESSION: &[u8] = b"sustain proxy session";
/// MAC label on the server's messages.
pub const LABEL_SERVER: &[u8] = b"sustain proxy server";
/// MAC label on the proxy's messages.
pub const LABEL_PROXY: &[u8] = b"sustain proxy relay";

/// Message types (PROTOCOL.md §15.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyMessageType {
    /// Server -> proxy: opens the session with the server's nonce.
    Hello,
    /// Proxy -> server: the proxy's nonce, proving it knows the secret.
    Welcome,
    /// Server -> proxy: asks for a relay port.
    RelayRequest,
    /// Proxy -> server: grants or refuses a relay port.
    RelayGrant,
    /// Server -> proxy: frees a relay port.
    RelayRelease,
    /// Proxy -> server: a relay is gone.
    RelayClosed,
}

impl ProxyMessageType {
    /// The type byte on the wire.
    pub fn to_wire(self) -> u8 {
        match self {
            ProxyMessageType::Hello => 0x10,
            ProxyMessageType::RelayRequest => 0x11,
            ProxyMessageType::RelayRelease => 0x12,
            ProxyMessageType::Welcome => 0x90,
            ProxyMessageType::RelayGrant => 0x91,
            ProxyMessageType::RelayClosed => 0x92,
        }
    }

    /// The type for a type byte; `None` for an unknown one.
    pub fn from_wire(b: u8) -> Option<ProxyMessageType> {
        Some(match b {
            0x10 => ProxyMessageType::Hello,
            0x11 => ProxyMessageType::RelayRequest,
            0x12 => ProxyMessageType::RelayRelease,
            0x90 => ProxyMessageType::Welcome,
            0x91 => ProxyMessageType::RelayGrant,
            0x92 => ProxyMessageType::RelayClosed,
            _ => return None,
        })
    }

    /// The exact length of a message of this type.
    pub fn message_len(self) -> usize {
        match self {
            ProxyMessageType::Hello => 4 + NONCE_LEN,
            ProxyMessageType::Welcome => 4 + 2 * NONCE_LEN + MAC_LEN,
            ProxyMessageType::RelayRequest => 4 + 4 + 4 + 4 + 2 + 2 + MAC_LEN,
            ProxyMessageType::RelayGrant
            | ProxyMessageType::RelayRelease
            | ProxyMessageType::RelayClosed => 4 + 4 + 2 + 2 + MAC_LEN,
        }
    }

    /// Sent by the server (true) or the proxy (false).
    fn sent_by_server(self) -> bool {
        self.to_wire() < 0x80
    }
}

/// The outcome in a RelayGrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantStatus {
    /// `port` is allocated for the two tickets.
    Granted,
    /// No relay port is free.
    NoFreePort,
    /// The two ticket ids were equal.
    BadTickets,
}

impl GrantStatus {
    fn to_wire(self) -> u8 {
        match self {
            GrantStatus::Granted => 0,
            GrantStatus::NoFreePort => 1,
            GrantStatus::BadTickets => 2,
        }
    }
    fn from_wire(b: u8) -> Option<GrantStatus> {
        Some(match b {
            0 => GrantStatus::Granted,
            1 => GrantStatus::NoFreePort,
            2 => GrantStatus::BadTickets,
            _ => return None,
        })
    }
}

fn reason_to_wire(r: ReleaseReason) -> u8 {
    match r {
        ReleaseReason::Finished => 1,
        ReleaseReason::Reset => 2,
        ReleaseReason::Idle => 3,
        ReleaseReason::Expired => 4,
        ReleaseReason::LegWentGlobal => 5,
        ReleaseReason::Released => 6,
    }
}

fn reason_from_wire(b: u8) -> Option<ReleaseReason> {
    Some(match b {
        1 => ReleaseReason::Finished,
        2 => ReleaseReason::Reset,
        3 => ReleaseReason::Idle,
        4 => ReleaseReason::Expired,
        5 => ReleaseReason::LegWentGlobal,
        6 => ReleaseReason::Released,
        _ => return None,
    })
}

/// One message of the proxy control session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMessage {
    /// Server -> proxy, first: the server's nonce. Not authenticated.
    Hello {
        /// The server's fresh nonce.
        server_nonce: [u8; NONCE_LEN],
    },
    /// Proxy -> server: both nonces, MACed under the new session key.
    Welcome {
        /// The nonce of the Hello it answers.
        server_nonce: [u8; NONCE_LEN],
        /// The proxy's fresh nonce.
        proxy_nonce: [u8; NONCE_LEN],
    },
    /// Server -> proxy: a relay port for these two tickets (low side
    /// first), to be spliced within `lifetime_secs`.
    RelayRequest {
        /// The server's message number.
        number: u32,
        /// The tickets of the two legs, low side first.
        tickets: [TicketId; 2],
        /// Seconds within which both legs must splice.
        lifetime_secs: u16,
    },
    /// Proxy -> server: the answer to request `number`.
    RelayGrant {
        /// The proxy's message number.
        number: u32,
        /// The relay port granted (meaningful when `status` grants).
        port: u16,
        /// Whether the relay was granted, and why not.
        status: GrantStatus,
    },
    /// Server -> proxy: free `port` now.
    RelayRelease {
        /// The server's message number.
        number: u32,
        /// The relay port to free.
        port: u16,
    },
    /// Proxy -> server: the relay on `port` is gone (its own `number`).
    RelayClosed {
        /// The proxy's message number.
        number: u32,
        /// The relay port that was freed.
        port: u16,
        /// Why it was freed.
        reason: ReleaseReason,
    },
}

impl ProxyMessage {
    /// The message's type.
    pub fn message_type(&self) -> ProxyMessageType {
        match self {
            ProxyMessage::Hello { .. } => ProxyMessageType::Hello,
            ProxyMessage::Welcome { .. } => ProxyMessageType::Welcome,
            ProxyMessage::RelayRequest { .. } => ProxyMessageType::RelayRequest,
            ProxyMessage::RelayGrant { .. } => ProxyMessageType::RelayGrant,
            ProxyMessage::RelayRelease { .. } => ProxyMessageType::RelayRelease,
            ProxyMessage::RelayClosed { .. } => ProxyMessageType::RelayClosed,
        }
    }

    fn number(&self) -> Option<u32> {
        match *self {
            ProxyMessage::RelayRequest { number, .. }
            | ProxyMessage::RelayGrant { number, .. }
            | ProxyMessage::RelayRelease { number, .. }
            | ProxyMessage::RelayClosed { number, .. } => Some(number),
            _ => None,
        }
    }

    /// The message's bytes; authenticated types end with the MAC under
    /// `key` (the Welcome's too). Hello ignores `key`.
    pub fn emit(&self, key: &SessionKey) -> Vec<u8> {
        let t = self.message_type();
        let len = t.message_len();
        let mut m = Vec::with_capacity(len);
        m.push(VERSION);
        m.push(t.to_wire());
        m.extend_from_slice(&(len as u16).to_be_bytes());
        match *self {
            ProxyMessage::Hello { server_nonce } => {
                m.extend_from_slice(&server_nonce);
                return m;
            }
            ProxyMessage::Welcome {
                server_nonce,
                proxy_nonce,
            } => {
                m.extend_from_slice(&server_nonce);
                m.extend_from_slice(&proxy_nonce);
            }
            ProxyMessage::RelayRequest {
                number,
                tickets,
                lifetime_secs,
            } => {
                m.extend_from_slice(&number.to_be_bytes());
                m.extend_from_slice(&tickets[0].0.to_be_bytes());
                m.extend_from_slice(&tickets[1].0.to_be_bytes());
                m.extend_from_slice(&lifetime_secs.to_be_bytes());
                m.extend_from_slice(&[0, 0]);
            }
            ProxyMessage::RelayGrant {
                number,
                port,
                status,
            } => {
                m.extend_from_slice(&number.to_be_bytes());
                m.extend_from_slice(&port.to_be_bytes());
                m.push(status.to_wire());
                m.push(0);
            }
            ProxyMessage::RelayRelease { number, port } => {
                m.extend_from_slice(&number.to_be_bytes());
                m.extend_from_slice(&port.to_be_bytes());
                m.extend_from_slice(&[0, 0]);
            }
            ProxyMessage::RelayClosed {
                number,
                port,
                reason,
            } => {
                m.extend_from_slice(&number.to_be_bytes());
                m.extend_from_slice(&port.to_be_bytes());
                m.push(reason_to_wire(reason));
                m.push(0);
            }
        }
        let mac = key.mac(label_of(t), &m);
        m.extend_from_slice(&mac);
        m
    }

    /// Parses one whole message (as [`split`] framed it). The MAC of an
    /// authenticated type is checked under `key`; a Welcome needs the key
    /// its nonces derive, so the server uses [`ServerSession`].
    pub fn parse(
        bytes: &[u8],
        key: Option<&SessionKey>,
    ) -> Result<ProxyMessage, ProxyControlError> {
        let (&version, rest) = bytes.split_first().ok_or(ProxyControlError::Truncated)?;
        if version != VERSION {
            return Err(ProxyControlError::UnknownVersion(version));
        }
        let &ty = rest.first().ok_or(ProxyControlError::Truncated)?;
        let t = ProxyMessageType::from_wire(ty).ok_or(ProxyControlError::UnknownType(ty))?;
        if bytes.len() != t.message_len() {
            return Err(ProxyControlError::Malformed);
        }
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if declared != bytes.len() {
            return Err(ProxyControlError::Malformed);
        }
        let body = &bytes[4..];
        let nonce = |at: usize| -> [u8; NONCE_LEN] {
            body[at..at + NONCE_LEN].try_into().unwrap_or_default()
        };
        let u32_at =
            |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap_or_default());
        let u16_at = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
        if t == ProxyMessageType::Hello {
            return Ok(ProxyMessage::Hello {
                server_nonce: nonce(0),
            });
        }
        let key = key.ok_or(ProxyControlError::NotEstablished)?;
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        if !key.verify(label_of(t), signed, mac) {
            return Err(ProxyControlError::BadMac);
        }
        Ok(match t {
            ProxyMessageType::Hello => unreachable!("handled above"),
            ProxyMessageType::Welcome => ProxyMessage::Welcome {
                server_nonce: nonce(0),
                proxy_nonce: nonce(NONCE_LEN),
            },
            ProxyMessageType::RelayRequest => ProxyMessage::RelayRequest {
                number: u32_at(0),
                tickets: [TicketId(u32_at(4)), TicketId(u32_at(8))],
                lifetime_secs: u16_at(12),
            },
            ProxyMessageType::RelayGrant => ProxyMessage::RelayGrant {
                number: u32_at(0),
                port: u16_at(4),
                status: GrantStatus::from_wire(body[6]).ok_or(ProxyControlError::Malformed)?,
            },
            ProxyMessageType::RelayRelease => ProxyMessage::RelayRelease {
                number: u32_at(0),
                port: u16_at(4),
            },
            ProxyMessageType::RelayClosed => ProxyMessage::RelayClosed {
                number: u32_at(0),
                port: u16_at(4),
                reason: reason_from_wire(body[6]).ok_or(ProxyControlError::Malformed)?,
            },
        })
    }
}

fn label_of(t: ProxyMessageType) -> &'static [u8] {
    if t.sent_by_server() {
        LABEL_SERVER
    } else {
        LABEL_PROXY
    }
}

/// Splits the next whole message off the front of a session's byte
/// stream: `Ok(None)` if more bytes are needed, `Err(Garbage)` if the
/// length field is impossible (the session must close).
pub fn split(buf: &[u8]) -> Result<Option<usize>, ProxyControlError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if !(4..=256).contains(&len) {
        return Err(ProxyControlError::Garbage);
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Why a proxy control message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProxyControlError {
    /// The message is shorter than its length field says.
    #[error("truncated message")]
    Truncated,
    /// The length field is impossible: framing is lost.
    #[error("impossible length: the session cannot be framed any more")]
    Garbage,
    /// A version byte other than [`VERSION`].
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// A type byte this implementation does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A known type whose body does not parse.
    #[error("malformed message")]
    Malformed,
    /// An authenticated message before the Hello/Welcome exchange.
    #[error("message before the session was established")]
    NotEstablished,
    /// The MAC does not verify under the session key.
    #[error("MAC does not verify")]
    BadMac,
    /// The message number is not above the last one accepted.
    #[error("message number not above the last one")]
    Replayed,
    /// A type this side must not receive, or not at this point.
    #[error("message type not expected from this side or at this point")]
    Unexpected,
}

/// The key of one control session. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// HMAC-SHA256(relay secret, "sustain proxy session" || 0x00 ||
    /// server nonce || proxy nonce).
    pub fn derive(
        secret: &RelaySecret,
        server_nonce: &[u8; NONCE_LEN],
        proxy_nonce: &[u8; NONCE_LEN],
    ) -> SessionKey {
        let mut h = secret.hmac();
        h.update(LABEL_SESSION);
        h.update(&[0]);
        h.update(server_nonce);
        h.update(proxy_nonce);
        SessionKey(h.finalize().into_bytes().into())
    }

    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    fn mac(&self, label: &[u8], signed: &[u8]) -> [u8; MAC_LEN] {
        let full = self
            .hmac()
            .chain_update(label)
            .chain_update([0])
            .chain_update(signed)
            .finalize()
            .into_bytes();
        full.first_chunk::<MAC_LEN>().copied().unwrap_or_default()
    }

    fn verify(&self, label: &[u8], signed: &[u8], mac: &[u8]) -> bool {
        self.hmac()
            .chain_update(label)
            .chain_update([0])
            .chain_update(signed)
            .verify_truncated_left(mac)
            .is_ok()
    }
}

fn random_nonce(rng: &mut dyn Random) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut n);
    n
}

/// The proxy's end of one control session: answers the Hello, then serves
/// RelayRequest and RelayRelease on the [`Relay`] and reports closed
/// relays.
#[derive(Debug)]
pub struct ProxySession {
    secret: RelaySecret,
    key: Option<SessionKey>,
    last_in: u32,
    next_out: u32,
}

impl ProxySession {
    /// A session that waits for the server's Hello.
    pub fn new(secret: RelaySecret) -> ProxySession {
        ProxySession {
            secret,
            key: None,
            last_in: 0,
            next_out: 1,
        }
    }

    /// The Hello/Welcome exchange is done and the session key known.
    pub fn established(&self) -> bool {
        self.key.is_some()
    }

    /// One whole message from the server. Returns the bytes to send back
    /// (none for a release). An error means the session must close.
    pub fn handle(
        &mut self,
        now: Instant,
        bytes: &[u8],
        relay: &mut Relay,
        rng: &mut dyn Random,
    ) -> Result<Option<Vec<u8>>, ProxyControlError> {
        let msg = ProxyMessage::parse(bytes, self.key.as_ref())?;
        if !msg.message_type().sent_by_server() {
            return Err(ProxyControlError::Unexpected);
        }
        if let ProxyMessage::Hello { server_nonce } = msg {
            if self.key.is_some() {
                return Err(ProxyControlError::Unexpected);
            }
            let proxy_nonce = random_nonce(rng);
            let key = SessionKey::derive(&self.secret, &server_nonce, &proxy_nonce);
            let welcome = ProxyMessage::Welcome {
                server_nonce,
                proxy_nonce,
            }
            .emit(&key);
            self.key = Some(key);
            return Ok(Some(welcome));
        }
        let number = msg.number().unwrap_or(0);
        if number <= self.last_in {
            return Err(ProxyControlError::Replayed);
        }
        self.last_in = number;
        match msg {
            ProxyMessage::RelayRequest {
                number,
                tickets,
                lifetime_secs,
            } => {
                let lifetime = Duration::from_secs(u64::from(lifetime_secs.max(1)));
                let (port, status) = match relay.allocate(now, tickets, lifetime) {
                    Ok(port) => (port, GrantStatus::Granted),
                    Err(RelayError::NoFreePort) => (0, GrantStatus::NoFreePort),
                    Err(RelayError::SameTicket) => (0, GrantStatus::BadTickets),
                };
                let key = self.key.as_ref().ok_or(ProxyControlError::NotEstablished)?;
                Ok(Some(
                    ProxyMessage::RelayGrant {
                        number,
                        port,
                        status,
                    }
                    .emit(key),
                ))
            }
            ProxyMessage::RelayRelease { port, .. } => {
                relay.release(port);
                Ok(None)
            }
            _ => Err(ProxyControlError::Unexpected),
        }
    }

    /// A RelayClosed notice for the server, once established.
    pub fn closed(&mut self, port: u16, reason: ReleaseReason) -> Option<Vec<u8>> {
        let key = self.key.as_ref()?;
        let number = self.next_out;
        self.next_out += 1;
        Some(
            ProxyMessage::RelayClosed {
                number,
                port,
                reason,
            }
            .emit(key),
        )
    }
}

/// The mobility server's end of the control session with the proxy.
#[derive(Debug)]
pub struct ServerSession {
    secret: RelaySecret,
    server_nonce: [u8; NONCE_LEN],
    key: Option<SessionKey>,
    next_out: u32,
    last_in: u32,
}

/// What the server learns from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyReply {
    /// The session is established (the proxy proved the secret).
    Established,
    /// The answer to RelayRequest `number`.
    Grant {
        /// The RelayRequest's number.
        number: u32,
        /// The relay port granted (meaningful when `status` grants).
        port: u16,
        /// Whether the relay was granted, and why not.
        status: GrantStatus,
    },
    /// A relay is gone.
    Closed {
        /// The relay port that was freed.
        port: u16,
        /// Why it was freed.
        reason: ReleaseReason,
    },
}

impl ServerSession {
    /// A new session and its Hello, to send first.
    pub fn new(secret: RelaySecret, rng: &mut dyn Random) -> (ServerSession, Vec<u8>) {
        let server_nonce = random_nonce(rng);
        let hello = ProxyMessage::Hello { server_nonce }.emit(&SessionKey([0; 32]));
        (
            ServerSession {
                secret,
                server_nonce,
                key: None,
                next_out: 1,
                last_in: 0,
            },
            hello,
        )
    }

    /// The Welcome verified and the session key is known.
    pub fn established(&self) -> bool {
        self.key.is_some()
    }

    /// One whole message from the proxy. An error means the session must
    /// close.
    pub fn handle(&mut self, bytes: &[u8]) -> Result<ProxyReply, ProxyControlError> {
        if self.key.is_none() {
            // The Welcome: derive the key from both nonces, then verify.
            if bytes.get(1).copied() != Some(ProxyMessageType::Welcome.to_wire())
                || bytes.len() != ProxyMessageType::Welcome.message_len()
            {
                return Err(ProxyControlError::Unexpected);
            }
            let proxy_nonce: [u8; NONCE_LEN] = bytes[4 + NONCE_LEN..4 + 2 * NONCE_LEN]
                .try_into()
                .map_err(|_| ProxyControlError::Malformed)?;
            let key = SessionKey::derive(&self.secret, &self.server_nonce, &proxy_nonce);
            match ProxyMessage::parse(bytes, Some(&key))? {
                ProxyMessage::Welcome { server_nonce, .. } if server_nonce == self.server_nonce => {
                    self.key = Some(key);
                    return Ok(ProxyReply::Established);
                }
                _ => return Err(ProxyControlError::BadMac),
            }
        }
        let msg = ProxyMessage::parse(bytes, self.key.as_ref())?;
        if msg.message_type().sent_by_server() {
            return Err(ProxyControlError::Unexpected);
        }
        match msg {
            ProxyMessage::RelayGrant {
                number,
                port,
                status,
            } => Ok(ProxyReply::Grant {
                number,
                port,
                status,
            }),
            ProxyMessage::RelayClosed {
                number,
                port,
                reason,
            } => {
                if number <= self.last_in {
                    return Err(ProxyControlError::Replayed);
                }
                self.last_in = number;
                Ok(ProxyReply::Closed { port, reason })
            }
            _ => Err(ProxyControlError::Unexpected),
        }
    }

    /// A RelayRequest: returns its number (the Grant echoes it) and bytes.
    pub fn request_relay(
        &mut self,
        tickets: [TicketId; 2],
        lifetime_secs: u16,
    ) -> Result<(u32, Vec<u8>), ProxyControlError> {
        let key = self.key.as_ref().ok_or(ProxyControlError::NotEstablished)?;
        let number = self.next_out;
        self.next_out += 1;
        Ok((
            number,
            ProxyMessage::RelayRequest {
                number,
                tickets,
                lifetime_secs,
            }
            .emit(key),
        ))
    }

    /// A RelayRelease for `port`.
    pub fn release_relay(&mut self, port: u16) -> Result<Vec<u8>, ProxyControlError> {
        let key = self.key.as_ref().ok_or(ProxyControlError::NotEstablished)?;
        let number = self.next_out;
        self.next_out += 1;
        Ok(ProxyMessage::RelayRelease { number, port }.emit(key))
    }
}

/// The server's tickets for a new relay: two distinct random ids, the low
/// side's first (PROTOCOL.md §4.7, §15.14).
pub fn mint_tickets(rng: &mut dyn Random) -> [TicketId; 2] {
    let low = TicketId(rng.next_u32());
    let mut high = TicketId(rng.next_u32());
    while high == low {
        high = TicketId(rng.next_u32());
    }
    [low, high]
}

/// The RelayAssignment body (PROTOCOL.md §15.8) the server sends one end
/// once the proxy granted `proxy` (its address and the relay port):
/// the end's ticket id and the key derived from the shared secret.
pub fn relay_assignment(
    secret: &RelaySecret,
    proxy: SocketAddrV4,
    ticket: TicketId,
    request: u32,
    lifetime_secs: u16,
) -> RelayAssignment {
    RelayAssignment {
        request,
        proxy,
        ticket_id: ticket.0,
        ticket_key: secret.ticket_key(proxy.port(), ticket).0,
        lifetime_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::SplitMix64;
    use crate::relay::{RelayConfig, RelayState};
    use core::net::Ipv4Addr;

    fn relay() -> Relay {
        Relay::new(
            RelayConfig {
                addr: Ipv4Addr::new(203, 0, 113, 100),
                ports: (40000, 40001),
                ..RelayConfig::default()
            },
            RelaySecret::new([7; 32]),
            Box::new(SplitMix64::new(1)),
        )
    }

    #[test]
    fn session_allocates_and_releases() {
        let mut rng = SplitMix64::new(5);
        let mut relay = relay();
        let now = Instant::ZERO;
        let (mut server, hello) = ServerSession::new(RelaySecret::new([7; 32]), &mut rng);
        let mut proxy = ProxySession::new(RelaySecret::new([7; 32]));
        let welcome = proxy
            .handle(now, &hello, &mut relay, &mut rng)
            .unwrap()
            .unwrap();
        assert_eq!(server.handle(&welcome), Ok(ProxyReply::Established));
        let (n, req) = server
            .request_relay([TicketId(1), TicketId(2)], 30)
            .unwrap();
        let grant = proxy
            .handle(now, &req, &mut relay, &mut rng)
            .unwrap()
            .unwrap();
        let Ok(ProxyReply::Grant {
            number,
            port,
            status: GrantStatus::Granted,
        }) = server.handle(&grant)
        else {
            panic!()
        };
        assert_eq!(number, n);
        assert_eq!(relay.state(port), RelayState::WaitingFirst);
        // A replay of the same request in the session is refused.
        assert_eq!(
            proxy.handle(now, &req, &mut relay, &mut rng),
            Err(ProxyControlError::Replayed)
        );
        let rel = server.release_relay(port).unwrap();
        assert_eq!(proxy.handle(now, &rel, &mut relay, &mut rng), Ok(None));
        assert!(!relay.owns_port(port));
        let closed = proxy.closed(port, ReleaseReason::Released).unwrap();
        assert_eq!(
            server.handle(&closed),
            Ok(ProxyReply::Closed {
                port,
                reason: ReleaseReason::Released
            })
        );
    }

    #[test]
    fn wrong_secret_and_other_sessions_are_refused() {
        let mut rng = SplitMix64::new(6);
        let mut relay = relay();
        let now = Instant::ZERO;
        // A server with another secret cannot verify the proxy's Welcome.
        let (mut server, hello) = ServerSession::new(RelaySecret::new([8; 32]), &mut rng);
        let mut proxy = ProxySession::new(RelaySecret::new([7; 32]));
        let welcome = proxy
            .handle(now, &hello, &mut relay, &mut rng)
            .unwrap()
            .unwrap();
        assert_eq!(server.handle(&welcome), Err(ProxyControlError::BadMac));
        // A request from one session is refused by another session.
        let (mut s1, h1) = ServerSession::new(RelaySecret::new([7; 32]), &mut rng);
        let mut p1 = ProxySession::new(RelaySecret::new([7; 32]));
        let w1 = p1.handle(now, &h1, &mut relay, &mut rng).unwrap().unwrap();
        s1.handle(&w1).unwrap();
        let (_, req) = s1.request_relay([TicketId(1), TicketId(2)], 30).unwrap();
        let (_, h2) = ServerSession::new(RelaySecret::new([7; 32]), &mut rng);
        let mut p2 = ProxySession::new(RelaySecret::new([7; 32]));
        p2.handle(now, &h2, &mut relay, &mut rng).unwrap();
        assert_eq!(
            p2.handle(now, &req, &mut relay, &mut rng),
            Err(ProxyControlError::BadMac)
        );
        // Before the Hello nothing but a Hello is accepted.
        let mut p3 = ProxySession::new(RelaySecret::new([7; 32]));
        assert_eq!(
            p3.handle(now, &req, &mut relay, &mut rng),
            Err(ProxyControlError::NotEstablished)
        );
        assert_eq!(relay.relay_count(), 0);
        // Every single-byte corruption of a request is refused.
        for i in 0..req.len() {
            let mut bad = req.clone();
            bad[i] ^= 0x01;
            let mut p = ProxySession::new(RelaySecret::new([7; 32]));
            p.key = p1.key.clone();
            assert!(
                p.handle(now, &bad, &mut relay, &mut rng).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(relay.relay_count(), 0);
    }

    #[test]
    fn minted_tickets_differ_and_assignments_carry_the_derived_key() {
        let mut rng = SplitMix64::new(9);
        let [low, high] = mint_tickets(&mut rng);
        assert_ne!(low, high);
        let secret = RelaySecret::new([7; 32]);
        let proxy = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 100), 40001);
        let a = relay_assignment(&secret, proxy, low, 4, 30);
        assert_eq!(a.ticket_key, secret.ticket_key(40001, low).0);
        assert_eq!(
            (a.request, a.proxy, a.ticket_id, a.lifetime_secs),
            (4, proxy, low.0, 30)
        );
        let host = crate::relay::HostTicket::from(&a);
        assert_eq!(host.key, secret.ticket_key(40001, low));
    }

    #[test]
    fn framing() {
        assert_eq!(split(&[1, 0x10, 0]), Ok(None));
        assert_eq!(split(&[1, 0x10, 0, 12, 0]), Ok(None));
        assert_eq!(
            split(&[1, 0x10, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
            Ok(Some(12))
        );
        assert_eq!(split(&[1, 0x10, 0, 3]), Err(ProxyControlError::Garbage));
        assert_eq!(
            ProxyMessage::parse(&[2, 0x10, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0], None),
            Err(ProxyControlError::UnknownVersion(2))
        );
        assert_eq!(
            ProxyMessage::parse(&[1, 0x10, 0, 11, 0, 0, 0, 0, 0, 0, 0], None),
            Err(ProxyControlError::Malformed)
        );
    }
}
