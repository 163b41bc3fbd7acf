//! The mobility server's link to the symmetric proxy (PROTOCOL.md §15.14),
//! sans-IO: the authenticated control session ([`ServerSession`]), the
//! relay requests in flight and the relays granted, by port.
//!
//! [`super::Server`] owns one when it is configured with a proxy
//! ([`super::Server::set_proxy`]) and decides, from the rules of §15.10,
//! when to ask it for a relay; this module only keeps the session's
//! bookkeeping. The driver owns the TCP connection to the proxy's control
//! address and feeds its bytes to [`super::Server::handle_proxy_stream`].

use core::fmt;
use core::net::SocketAddrV4;
use std::collections::HashMap;

use crate::control::RelayAssignment;
use crate::rand::Random;
use crate::relay::control::{
    mint_tickets, relay_assignment, split, ProxyControlError, ProxyReply, ServerSession,
};
use crate::relay::ticket::{RelaySecret, TicketId};
use crate::verifier::{ConnectionId, Side};

use super::registry::RelayRecord;

/// Bytes buffered from the proxy before a whole message: messages are at
/// most 256 bytes, so more is a misbehaving peer.
const MAX_BUFFER: usize = 4096;

/// How the server reaches the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy's control address (`sustain-server --proxy ADDR:PORT`).
    /// Its IP address is also where the relay ports are: `sustain-proxy
    /// --bind` and `--control` name the same global address.
    pub control: SocketAddrV4,
    /// The secret shared with the proxy (`--relay-secret FILE`, §4.7).
    pub secret: RelaySecret,
    /// Seconds a relay may take to be spliced, given to the proxy in the
    /// RelayRequest and to the hosts in their RelayAssignments (30 s:
    /// enough for both ends' first MSYNs and their retransmissions).
    pub lifetime_secs: u16,
}

impl ProxyConfig {
    /// The proxy at `control` sharing `secret`, with a 30 s relay lifetime.
    pub fn new(control: SocketAddrV4, secret: RelaySecret) -> ProxyConfig {
        ProxyConfig {
            control,
            secret,
            lifetime_secs: 30,
        }
    }
}

/// A RelayRequest in flight: whose relay it is and which reports wait for
/// its outcome (their Acks are sent with the answer).
#[derive(Debug, Clone)]
pub(super) struct PendingRelay {
    pub(super) conn: ConnectionId,
    pub(super) tickets: [TicketId; 2],
    /// The stamp of the decision the relay is for.
    pub(super) stamp: u64,
    /// (side, request number) of each MoveReport waiting for its Ack.
    pub(super) waiting: Vec<(Side, u32)>,
}

pub(super) struct ProxyLink {
    pub(super) cfg: ProxyConfig,
    rng: Box<dyn Random + Send>,
    /// `None` while no TCP session is open; not established until the
    /// proxy's Welcome verified.
    session: Option<ServerSession>,
    buffer: Vec<u8>,
    pub(super) pending: HashMap<u32, PendingRelay>,
    /// Relays granted on this session, by relay port.
    pub(super) by_port: HashMap<u16, ConnectionId>,
}

impl fmt::Debug for ProxyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLink")
            .field("control", &self.cfg.control)
            .field("established", &self.established())
            .field("pending", &self.pending.len())
            .field("relays", &self.by_port.len())
            .finish_non_exhaustive()
    }
}

impl ProxyLink {
    pub(super) fn new(cfg: ProxyConfig, rng: Box<dyn Random + Send>) -> ProxyLink {
        ProxyLink {
            cfg,
            rng,
            session: None,
            buffer: Vec::new(),
            pending: HashMap::new(),
            by_port: HashMap::new(),
        }
    }

    /// Whether a session is open (established or not).
    pub(super) fn is_open(&self) -> bool {
        self.session.is_some()
    }

    pub(super) fn established(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(ServerSession::established)
    }

    /// A new TCP session to the proxy: returns the Hello to send first.
    pub(super) fn open(&mut self) -> Vec<u8> {
        let (session, hello) = ServerSession::new(self.cfg.secret.clone(), &mut *self.rng);
        self.session = Some(session);
        self.buffer.clear();
        hello
    }

    /// The session is gone: requests in flight fail (returned, so their
    /// reports get an Ack) and the relays granted on it are forgotten (a
    /// proxy that restarted has lost them; a later report asks again).
    pub(super) fn reset(&mut self) -> (Vec<PendingRelay>, Vec<(u16, ConnectionId)>) {
        self.session = None;
        self.buffer.clear();
        (
            self.pending.drain().map(|(_, p)| p).collect(),
            self.by_port.drain().collect(),
        )
    }

    /// Bytes from the proxy: every whole message, checked. An error means
    /// the session must close (PROTOCOL.md §15.14).
    pub(super) fn handle_stream(
        &mut self,
        bytes: &[u8],
    ) -> Result<Vec<ProxyReply>, ProxyControlError> {
        let session = self
            .session
            .as_mut()
            .ok_or(ProxyControlError::NotEstablished)?;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > MAX_BUFFER {
            return Err(ProxyControlError::Garbage);
        }
        let mut replies = Vec::new();
        while let Some(len) = split(&self.buffer)? {
            let message: Vec<u8> = self.buffer.drain(..len).collect();
            replies.push(session.handle(&message)?);
        }
        Ok(replies)
    }

    /// Mints two tickets and a RelayRequest for `conn`: (request number,
    /// bytes to send).
    pub(super) fn request(
        &mut self,
        conn: ConnectionId,
        stamp: u64,
        waiting: (Side, u32),
    ) -> Result<(u32, Vec<u8>), ProxyControlError> {
        let session = self
            .session
            .as_mut()
            .ok_or(ProxyControlError::NotEstablished)?;
        let tickets = mint_tickets(&mut *self.rng);
        let (number, bytes) = session.request_relay(tickets, self.cfg.lifetime_secs)?;
        self.pending.insert(
            number,
            PendingRelay {
                conn,
                tickets,
                stamp,
                waiting: vec![waiting],
            },
        );
        Ok((number, bytes))
    }

    /// A RelayRelease for `port`, if the session is up.
    pub(super) fn release(&mut self, port: u16) -> Option<Vec<u8>> {
        self.by_port.remove(&port);
        self.session.as_mut()?.release_relay(port).ok()
    }

    /// The RelayAssignment of `side`'s leg (PROTOCOL.md §15.8, §4.7).
    pub(super) fn assignment(
        &self,
        record: &RelayRecord,
        side: Side,
        request: u32,
    ) -> RelayAssignment {
        relay_assignment(
            &self.cfg.secret,
            record.proxy,
            record.tickets[side.index()],
            request,
            record.lifetime_secs,
        )
    }
}
