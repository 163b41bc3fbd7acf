//! The host's side of the control protocol, sans-IO (PROTOCOL.md §15.12):
//! one [`ControlClient`] per migratable connection. It derives the
//! credentials from the connection keys, numbers and MACs what the host
//! sends, and turns what the server sends into a [`ServerMessage`] only if
//! it is for this connection and side, its MAC verifies and its number is
//! fresh.
//!
//! The driver owns the TCP session to the server (bound to the
//! connection's current local address, so the server observes the path
//! the connection uses) and a [`crate::control::FrameBuffer`] to split what
//! it reads.

use core::net::SocketAddrV4;

use thiserror::Error;

use crate::auth::{ConnectionKeys, ReplayWindow, RequestCheck, RequestCounter, RequestNumber};
use crate::control::{
    Ack, Body, ControlError, ControlRepr, ErrorReply, Header, Incoming, MoveReport, PeerLocation,
    Register, RelayAssignment, UNSPECIFIED,
};
use crate::time::Duration;
use crate::verifier::{Credentials, CredentialsError, Direction};

/// How often a host re-sends its Register on an idle session: a third of
/// the server's default TTL (PROTOCOL.md §15.5).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(200);

/// What the server said, once verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMessage {
    /// A request was accepted (authenticated, fresh).
    Ack(Ack),
    /// Send the MSYN to `target` (authenticated, fresh): call
    /// `Endpoint::peer_location(now, conn, target)`.
    PeerLocation(PeerLocation),
    /// Use the proxy as the peer (authenticated, fresh; the proxy issue).
    RelayAssignment(RelayAssignment),
    /// An Error: **unauthenticated**, so only ever a hint. The one safe
    /// reaction is to re-register on `UnknownConnection` (a forged one
    /// costs a Register); nothing in it may move a connection.
    Error(ErrorReply),
}

/// Why a received message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The connection's credentials could not be derived (both keys equal).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The message does not parse.
    #[error("malformed control message: {0}")]
    Malformed(#[from] ControlError),
    /// The message names another connection or side.
    #[error("message for another connection or side")]
    WrongConnection,
    /// A host-to-server type, which a host does not accept.
    #[error("message type a host does not accept")]
    UnexpectedType,
    /// The MAC does not verify under the connection's verifier.
    #[error("control message MAC does not verify")]
    BadMac,
    /// The notice number is not after the last one accepted.
    #[error("replayed control message")]
    Replayed,
}

/// Rejections, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Authenticated messages accepted.
    pub accepted: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Messages for another connection or side.
    pub wrong_connection: u64,
    /// Messages of a type a host does not accept.
    pub unexpected_type: u64,
    /// Messages whose MAC did not verify.
    pub bad_mac: u64,
    /// Replayed messages.
    pub replayed: u64,
    /// Error messages received (unauthenticated, PROTOCOL.md §15.9).
    pub errors: u64,
}

/// One connection's control-protocol state at a host.
#[derive(Debug, Clone)]
pub struct ControlClient {
    creds: Credentials,
    requests: RequestCounter,
    notices: ReplayWindow,
    direct: SocketAddrV4,
    peer_seen: SocketAddrV4,
    peer_direct: SocketAddrV4,
    stats: ClientStats,
}

impl ControlClient {
    /// For a migratable connection with `keys` (`Endpoint::connection_keys`),
    /// whose local (direct) address is `direct` and whose remote is
    /// `peer_seen`. Fails only if both keys are equal (2^-64).
    pub fn new(
        keys: &ConnectionKeys,
        direct: SocketAddrV4,
        peer_seen: SocketAddrV4,
    ) -> Result<ControlClient, ClientError> {
        Ok(ControlClient {
            creds: Credentials::derive(keys)?,
            requests: RequestCounter::new(),
            notices: ReplayWindow::new(),
            direct,
            peer_seen,
            peer_direct: UNSPECIFIED,
            stats: ClientStats::default(),
        })
    }

    /// This connection's credentials (connection id, side, verifier).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Its counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The direct address the client last registered or reported.
    pub fn direct(&self) -> SocketAddrV4 {
        self.direct
    }

    /// The last notice number accepted (sent in Register so a restarted
    /// server continues above it).
    pub fn last_notice(&self) -> u32 {
        self.notices.last_accepted().0
    }

    /// The peer's direct address (from its Migrate-Permit) and where this
    /// end now sees it; MoveReports carry them. Call after the peer moved
    /// (a PeerLocation acted on, or the core's `PeerMoved` event).
    pub fn set_peer(&mut self, peer_seen: SocketAddrV4, peer_direct: Option<SocketAddrV4>) {
        self.peer_seen = peer_seen;
        if let Some(direct) = peer_direct {
            self.peer_direct = direct;
        }
    }

    fn message(&mut self, body: Body) -> Vec<u8> {
        let header = Header {
            conn: self.creds.id,
            side: self.creds.side,
            number: self.requests.take().0,
        };
        ControlRepr { header, body }.to_vec(&self.creds.verifier)
    }

    /// A Register with the current addresses: send it first on every new
    /// session and again every refresh interval (PROTOCOL.md §15.5).
    pub fn register(&mut self) -> Vec<u8> {
        let body = Body::Register(Register {
            verifier: self.creds.verifier,
            direct: self.direct,
            peer_seen: self.peer_seen,
            last_notice: self.last_notice(),
        });
        self.message(body)
    }

    /// A MoveReport for a move of this end to `new_direct` (its new local
    /// address and the connection's port), sent from the new address. The
    /// old addresses are the ones last registered or reported.
    pub fn report_move(&mut self, new_direct: SocketAddrV4) -> Vec<u8> {
        let report = MoveReport {
            old_direct: self.direct,
            old_seen: UNSPECIFIED,
            old_peer_direct: self.peer_direct,
            old_peer_seen: self.peer_seen,
            new_direct,
        };
        self.direct = new_direct;
        self.message(Body::MoveReport(report))
    }

    /// An Unregister, when the connection closes.
    pub fn unregister(&mut self) -> Vec<u8> {
        self.message(Body::Unregister)
    }

    /// Checks one message from the server. Authenticated types are returned
    /// only if they name this connection and side, verify, and carry a
    /// notice number after the last accepted one.
    pub fn handle_message(&mut self, bytes: &[u8]) -> Result<ServerMessage, ClientError> {
        let result = self.check(bytes);
        match &result {
            Ok(ServerMessage::Error(_)) => self.stats.errors += 1,
            Ok(_) => self.stats.accepted += 1,
            Err(ClientError::Malformed(_) | ClientError::Credentials(_)) => {
                self.stats.malformed += 1;
            }
            Err(ClientError::WrongConnection) => self.stats.wrong_connection += 1,
            Err(ClientError::UnexpectedType) => self.stats.unexpected_type += 1,
            Err(ClientError::BadMac) => self.stats.bad_mac += 1,
            Err(ClientError::Replayed) => self.stats.replayed += 1,
        }
        result
    }

    fn check(&mut self, bytes: &[u8]) -> Result<ServerMessage, ClientError> {
        let (incoming, msg) = Incoming::parse(bytes)?;
        let repr = match incoming {
            Incoming::Error(e) => return Ok(ServerMessage::Error(e)),
            Incoming::Control(repr) => repr,
        };
        if repr.msg_type().direction() != Some(Direction::ServerToHost) {
            return Err(ClientError::UnexpectedType);
        }
        if repr.header.conn != self.creds.id || repr.header.side != self.creds.side {
            return Err(ClientError::WrongConnection);
        }
        if !msg.verify_mac(&self.creds.verifier) {
            return Err(ClientError::BadMac);
        }
        if self.notices.check(RequestNumber(repr.header.number)) != RequestCheck::Fresh {
            return Err(ClientError::Replayed);
        }
        self.notices.accept(RequestNumber(repr.header.number));
        Ok(match repr.body {
            Body::Ack(a) => ServerMessage::Ack(a),
            Body::PeerLocation(p) => ServerMessage::PeerLocation(p),
            Body::RelayAssignment(r) => ServerMessage::RelayAssignment(r),
            Body::Register(_) | Body::MoveReport(_) | Body::Unregister => {
                return Err(ClientError::UnexpectedType)
            }
        })
    }
}
