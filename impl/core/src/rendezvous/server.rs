//! The mobility server's state machine (PROTOCOL.md §15.11), sans-IO.
//!
//! The driver (`sustain-server`) owns the sockets: for each accepted
//! control session it calls [`Server::open_session`] with the peer address
//! it observes, feeds received bytes to [`Server::handle_stream`], calls
//! [`Server::close_session`] when the session ends, and
//! [`Server::handle_timeout`] at [`Server::poll_timeout`]. After each call
//! it drains [`Server::poll_output`] (bytes to write to a session, or a
//! session to close) and [`Server::poll_event`] (for its log). Nothing
//! here reads a clock or touches a socket.
//!
//! Processing order per message, cheapest first: rate limit (per observed
//! source address), framing and header checks, type direction, parse,
//! registry lookup, MAC, replay, then the state change, the Ack and any
//! notices. Every rejection is counted in [`ServerStats`] and answered with
//! an Error; none changes any registration.

use std::collections::{HashMap, VecDeque};

use core::net::SocketAddrV4;

use thiserror::Error;

use super::proxy_link::{PendingRelay, ProxyConfig, ProxyLink};
use super::registry::{EndRecord, Entry, MemoryRegistry, Registry, RelayRecord};
use super::{decide, Decision, RateLimiter};
use crate::auth::RequestNumber;
use crate::control::{
    Ack, Body, ControlRepr, ErrorCode, ErrorReply, FrameBuffer, Header, Message, MessageType,
    MoveReport, Outcome, PeerLocation, Register,
};
use crate::rand::Random;
use crate::relay::control::{GrantStatus, ProxyControlError, ProxyReply};
use crate::relay::ReleaseReason;
use crate::time::{Duration, Instant};
use crate::verifier::{ConnectionId, Direction, Side};

/// Names one control session (one accepted TCP connection). Never reused.
pub type SessionId = u64;

/// Limits and timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// A registration expires this long after its last accepted message
    /// (hosts refresh by re-registering, PROTOCOL.md §15.5).
    pub ttl: Duration,
    /// Most connections the registry holds; a Register for a new one
    /// beyond it gets `RegistryFull`.
    pub max_entries: usize,
    /// Most open control sessions; `open_session` refuses beyond it.
    pub max_sessions: usize,
    /// Messages per second per observed source address (0: unlimited) and
    /// the burst allowed.
    pub rate_per_source: u32,
    /// The bucket's depth: messages a source may send at once.
    pub burst_per_source: u32,
    /// Most source addresses tracked by the rate limiter.
    pub max_sources: usize,
    /// How often expired registrations and idle rate buckets are swept.
    pub sweep_interval: Duration,
    /// Most events kept for [`Server::poll_event`]; older ones are dropped
    /// (counted) if the driver does not drain them.
    pub max_events: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ttl: Duration::from_secs(600),
            max_entries: 2_000_000,
            max_sessions: 262_144,
            rate_per_source: 200,
            burst_per_source: 400,
            max_sources: 65_536,
            sweep_interval: Duration::from_secs(1),
            max_events: 4096,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes (one whole message) to the session.
    Send {
        /// The session to write to.
        session: SessionId,
        /// The bytes to write.
        bytes: Vec<u8>,
    },
    /// Close the session after writing what was queued for it.
    Close {
        /// The session to close.
        session: SessionId,
    },
    /// Write these bytes (one whole message) to the proxy's control
    /// session (PROTOCOL.md §15.14).
    ProxySend {
        /// The bytes to write.
        bytes: Vec<u8>,
    },
    /// Close the proxy's control session (it misbehaved); the driver opens
    /// a new one later and calls [`Server::proxy_session_opened`].
    ProxyClose,
}

/// Things worth a line in the server's event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// A Register was accepted, fresh or repeated (PROTOCOL.md §15.5).
    Registered {
        /// The connection registered.
        conn: ConnectionId,
        /// Which end registered.
        side: Side,
        /// The session's source address as the server saw it (after any NAPT).
        observed: SocketAddrV4,
        /// The end's own address and port, as it reported them.
        direct: SocketAddrV4,
        /// The reported address differs from the observed one.
        behind_napt: bool,
    },
    /// A MoveReport was accepted (PROTOCOL.md §15.6).
    MoveReported {
        /// The connection that moved.
        conn: ConnectionId,
        /// Which end moved.
        side: Side,
        /// The report's source address as the server saw it (after any NAPT).
        observed: SocketAddrV4,
        /// The end's address and port before the move, as it reported them.
        old_direct: SocketAddrV4,
        /// The end's address and port after the move, as it reported them.
        new_direct: SocketAddrV4,
        /// The new reported address differs from the observed one.
        behind_napt: bool,
    },
    /// The server decided who sends the MSYN after a move (PROTOCOL.md §15.10).
    Decided {
        /// The connection that moved.
        conn: ConnectionId,
        /// Who sends the MSYN, or that a relay is needed.
        decision: Decision,
    },
    /// A PeerLocation notice went to one end (PROTOCOL.md §15.8).
    NoticeSent {
        /// The connection it is about.
        conn: ConnectionId,
        /// The end it was sent to.
        side: Side,
        /// Where that end should send its MSYN.
        target: SocketAddrV4,
        /// The notice's message number.
        number: u32,
    },
    /// An Unregister was accepted (PROTOCOL.md §15.6).
    Unregistered {
        /// The connection unregistered.
        conn: ConnectionId,
        /// Which end unregistered.
        side: Side,
    },
    /// A message was rejected with an Error (not logged for `RateLimited`).
    Rejected {
        /// Why it was rejected.
        code: ErrorCode,
        /// Its source address as the server saw it.
        observed: SocketAddrV4,
        /// The connection id it carried (zero where the message was too short).
        conn: ConnectionId,
    },
    /// A sweep removed expired registrations.
    Expired {
        /// How many connections' registrations expired.
        count: usize,
    },
    /// The proxy's control session is established (its Welcome verified).
    ProxyUp {
        /// The proxy's control address.
        control: SocketAddrV4,
    },
    /// The proxy's control session ended; `error` if the server closed it.
    ProxyDown {
        /// The error the server closed it for; `None` if the proxy closed it.
        error: Option<ProxyControlError>,
    },
    /// A relay was asked for (PROTOCOL.md §15.14).
    RelayRequested {
        /// The connection that needs the relay.
        conn: ConnectionId,
        /// The request's message number on the proxy session.
        number: u32,
    },
    /// The proxy granted one: `proxy` is its address and the relay port.
    RelayGranted {
        /// The connection relayed.
        conn: ConnectionId,
        /// The proxy's address and the relay port.
        proxy: SocketAddrV4,
    },
    /// The proxy refused (or the session failed while asking).
    RelayRefused {
        /// The connection that asked.
        conn: ConnectionId,
        /// The proxy's status; `None` if the session failed first.
        status: Option<GrantStatus>,
    },
    /// A RelayAssignment went to one end.
    RelayAssigned {
        /// The connection relayed.
        conn: ConnectionId,
        /// The end it was sent to.
        side: Side,
        /// The proxy's address and the relay port.
        proxy: SocketAddrV4,
        /// The relay ticket's id for this leg.
        ticket: u32,
        /// The notice's message number.
        number: u32,
    },
    /// A relay is gone: the proxy reported it (`reason`), or the server
    /// released it (`None`: an end is reachable again, or unregistered).
    RelayReleased {
        /// The connection relayed.
        conn: ConnectionId,
        /// The relay port on the proxy.
        port: u16,
        /// Why the proxy released it; `None` if the server did.
        reason: Option<ReleaseReason>,
    },
}

/// Counters; every rejected message is in exactly one of the rejection
/// counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions accepted by [`Server::open_session`].
    pub sessions_opened: u64,
    /// Sessions refused by [`Server::open_session`] (beyond `max_sessions`).
    pub sessions_refused: u64,
    /// Messages taken out of a session's byte stream, accepted or not.
    pub messages: u64,
    /// Registers accepted, repeats included.
    pub registered: u64,
    /// Fresh MoveReports accepted.
    pub reports: u64,
    /// Unregisters accepted.
    pub unregistered: u64,
    /// Repeated Registers or MoveReports (same request number, same source) accepted again.
    pub repeats: u64,
    /// MSYN decisions taken after a move.
    pub decisions: u64,
    /// Decisions that need a relay (neither end can reach the other).
    pub relays_needed: u64,
    /// Acks sent.
    pub acks_sent: u64,
    /// PeerLocation notices sent.
    pub notices_sent: u64,
    /// PeerLocation or RelayAssignment notices not sent: the end has no open session.
    pub notices_undeliverable: u64,
    /// Error replies sent.
    pub errors_sent: u64,
    /// Connections whose registration ended by the TTL.
    pub expired: u64,
    /// Events dropped because the driver did not drain [`Server::poll_event`].
    pub events_dropped: u64,
    // Rejections:
    /// `Garbage`: the length field is shorter than the header.
    pub garbage: u64,
    /// `Truncated`: a message cut short.
    pub truncated: u64,
    /// `Oversized`: longer than the maximum message length.
    pub oversized: u64,
    /// `UnknownVersion`.
    pub unknown_version: u64,
    /// `UnknownType`.
    pub unknown_type: u64,
    /// `Malformed`, or a code this implementation does not know.
    pub malformed: u64,
    /// `UnexpectedType`: a server-to-host type sent to the server.
    pub unexpected_type: u64,
    /// `BadMac`: the MAC did not verify under the registered verifier.
    pub bad_mac: u64,
    /// `Replayed`: the request number is not after the last accepted one.
    pub replayed: u64,
    /// `UnknownConnection`: no registration for the connection and side.
    pub unknown_connection: u64,
    /// `Conflict`: a registration with another verifier exists.
    pub conflicts: u64,
    /// `RateLimited` (per observed source address).
    pub rate_limited: u64,
    /// `RegistryFull`.
    pub registry_full: u64,
    // The proxy (PROTOCOL.md §15.14):
    /// Proxy control sessions established.
    pub proxy_sessions: u64,
    /// Relays asked of the proxy.
    pub relays_requested: u64,
    /// Relays the proxy granted.
    pub relays_granted: u64,
    /// Relays the proxy refused, or lost with its session while asking.
    pub relays_refused: u64,
    /// RelayAssignment notices sent to the ends.
    pub relay_assignments_sent: u64,
    /// Relays released, by the proxy or by the server.
    pub relays_released: u64,
}

impl ServerStats {
    /// Sum of the rejection counters.
    pub fn rejected(&self) -> u64 {
        self.garbage
            + self.truncated
            + self.oversized
            + self.unknown_version
            + self.unknown_type
            + self.malformed
            + self.unexpected_type
            + self.bad_mac
            + self.replayed
            + self.unknown_connection
            + self.conflicts
            + self.rate_limited
            + self.registry_full
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ServerError {
    /// `open_session` found `max_sessions` sessions open (the limit).
    #[error("too many control sessions ({0})")]
    TooManySessions(usize),
}

#[derive(Debug)]
struct Session {
    observed: SocketAddrV4,
    frames: FrameBuffer,
}

/// How a request number relates to the last accepted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    Repeat,
    Stale,
}

fn freshness(last: u32, number: u32) -> Freshness {
    if number == last {
        Freshness::Repeat
    } else if RequestNumber(number).is_after(RequestNumber(last)) {
        Freshness::Fresh
    } else {
        Freshness::Stale
    }
}

/// The mobility server. `R` is where registrations live.
#[derive(Debug)]
pub struct Server<R: Registry = MemoryRegistry> {
    config: ServerConfig,
    registry: R,
    sessions: HashMap<SessionId, Session>,
    next_session: SessionId,
    rate: RateLimiter,
    order: u64,
    outputs: VecDeque<Output>,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
    next_sweep: Option<Instant>,
    proxy: Option<ProxyLink>,
}

impl Server<MemoryRegistry> {
    /// A server with the in-memory registry.
    pub fn new(config: ServerConfig) -> Server<MemoryRegistry> {
        Server::with_registry(config, MemoryRegistry::new(config.max_entries))
    }
}

impl<R: Registry> Server<R> {
    /// A server with the given registry (e.g. a shared store, DESIGN.md "Scale").
    pub fn with_registry(config: ServerConfig, registry: R) -> Server<R> {
        Server {
            config,
            registry,
            sessions: HashMap::new(),
            next_session: 1,
            rate: RateLimiter::new(
                config.rate_per_source,
                config.burst_per_source,
                config.max_sources,
            ),
            order: 0,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
            next_sweep: None,
            proxy: None,
        }
    }

    /// Relays through the proxy of `cfg` when both ends are behind NAPTs
    /// (PROTOCOL.md §15.10, §15.14); `rng` mints session nonces and ticket
    /// ids. The driver then connects to `cfg.control` and calls
    /// [`proxy_session_opened`](Self::proxy_session_opened).
    pub fn set_proxy(&mut self, cfg: ProxyConfig, rng: Box<dyn Random + Send>) {
        self.proxy = Some(ProxyLink::new(cfg, rng));
    }

    /// The proxy's control address, if one is configured.
    pub fn proxy_control(&self) -> Option<SocketAddrV4> {
        self.proxy.as_ref().map(|p| p.cfg.control)
    }

    /// Whether the proxy's control session is established.
    pub fn proxy_established(&self) -> bool {
        self.proxy.as_ref().is_some_and(ProxyLink::established)
    }

    /// The driver opened a TCP session to the proxy: the Hello goes out
    /// ([`Output::ProxySend`]).
    pub fn proxy_session_opened(&mut self, _now: Instant) {
        let Some(link) = self.proxy.as_mut() else {
            return;
        };
        let hello = link.open();
        self.stats.proxy_sessions += 1;
        self.outputs.push_back(Output::ProxySend { bytes: hello });
    }

    /// The proxy's session ended (closed by the proxy, or after
    /// [`Output::ProxyClose`]): requests in flight fail and their reports
    /// are answered RelayNeeded; relays granted on it are forgotten.
    pub fn proxy_session_closed(&mut self, now: Instant) {
        self.proxy_down(now, None);
    }

    /// Bytes from the proxy's control session, in any chunking.
    pub fn handle_proxy_stream(&mut self, now: Instant, bytes: &[u8]) {
        let Some(link) = self.proxy.as_mut() else {
            return;
        };
        match link.handle_stream(bytes) {
            Ok(replies) => {
                for reply in replies {
                    self.proxy_reply(now, reply);
                }
            }
            Err(e) => {
                // PROTOCOL.md §15.14: anything that does not verify closes
                // the session.
                self.outputs.push_back(Output::ProxyClose);
                self.proxy_down(now, Some(e));
            }
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Where its registrations live.
    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// How many control sessions are open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A new control session whose peer the driver observes at `observed`
    /// (after any NAPT). Refused beyond `max_sessions`.
    pub fn open_session(
        &mut self,
        _now: Instant,
        observed: SocketAddrV4,
    ) -> Result<SessionId, ServerError> {
        if self.sessions.len() >= self.config.max_sessions {
            self.stats.sessions_refused += 1;
            return Err(ServerError::TooManySessions(self.config.max_sessions));
        }
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            id,
            Session {
                observed,
                frames: FrameBuffer::new(),
            },
        );
        self.stats.sessions_opened += 1;
        Ok(id)
    }

    /// The session ended (peer closed, error). A partial message left in
    /// it counts as truncated. Registrations stay until they expire.
    pub fn close_session(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            if s.frames.pending_len() > 0 {
                self.stats.truncated += 1;
            }
        }
    }

    /// Bytes received on a session, in any chunking.
    pub fn handle_stream(&mut self, now: Instant, session: SessionId, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.frames.push(data);
        loop {
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            let observed = s.observed;
            match s.frames.next_frame() {
                Ok(Some(frame)) => self.handle_message(now, session, &frame),
                Ok(None) => return,
                Err(e) => {
                    // Framing is lost: answer, then end the session.
                    self.stats.messages += 1;
                    self.reject(session, observed, e.code(), &[]);
                    return;
                }
            }
        }
    }

    /// Exactly one message received on a session.
    pub fn handle_message(&mut self, now: Instant, session: SessionId, bytes: &[u8]) {
        let Some(observed) = self.sessions.get(&session).map(|s| s.observed) else {
            return;
        };
        self.stats.messages += 1;
        self.maybe_schedule_sweep(now);
        if !self.rate.allow(now, *observed.ip()) {
            self.reject(session, observed, ErrorCode::RateLimited, bytes);
            return;
        }
        let msg = match Message::new_checked(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                self.reject(session, observed, e.code(), bytes);
                return;
            }
        };
        let repr = match msg
            .msg_type()
            .and_then(MessageType::direction)
            .filter(|d| *d == Direction::HostToServer)
        {
            None => {
                self.reject(session, observed, ErrorCode::UnexpectedType, bytes);
                return;
            }
            Some(_) => match ControlRepr::parse(&msg) {
                Ok(repr) => repr,
                Err(e) => {
                    self.reject(session, observed, e.code(), bytes);
                    return;
                }
            },
        };
        let ctx = Ctx {
            now,
            session,
            observed,
            bytes,
        };
        match repr.body {
            Body::Register(reg) => self.on_register(&ctx, &msg, repr.header, reg),
            Body::MoveReport(rep) => self.on_move_report(&ctx, &msg, repr.header, rep),
            Body::Unregister => self.on_unregister(&ctx, &msg, repr.header),
            _ => self.reject(session, observed, ErrorCode::UnexpectedType, bytes),
        }
    }

    /// Sweeps expired registrations and idle rate buckets when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(due) if now >= due => {
                let count = self.registry.expire(now);
                if count > 0 {
                    self.stats.expired += count as u64;
                    self.event(ServerEvent::Expired { count });
                }
                self.rate.sweep(now);
                self.next_sweep = Some(now + self.config.sweep_interval);
            }
            Some(_) => {}
            None => self.next_sweep = Some(now + self.config.sweep_interval),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// What the driver must do next, oldest first; `None` when nothing is due.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event for the log, oldest first.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn maybe_schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_interval);
        }
    }

    fn event(&mut self, event: ServerEvent) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Counts a rejection, answers it with an Error carrying what could be
    /// read of the offending message, and closes the session if framing is
    /// lost.
    fn reject(
        &mut self,
        session: SessionId,
        observed: SocketAddrV4,
        code: ErrorCode,
        bytes: &[u8],
    ) {
        let counter = match code {
            ErrorCode::Garbage => &mut self.stats.garbage,
            ErrorCode::Truncated => &mut self.stats.truncated,
            ErrorCode::Oversized => &mut self.stats.oversized,
            ErrorCode::UnknownVersion => &mut self.stats.unknown_version,
            ErrorCode::UnknownType => &mut self.stats.unknown_type,
            ErrorCode::UnexpectedType => &mut self.stats.unexpected_type,
            ErrorCode::BadMac => &mut self.stats.bad_mac,
            ErrorCode::Replayed => &mut self.stats.replayed,
            ErrorCode::UnknownConnection => &mut self.stats.unknown_connection,
            ErrorCode::Conflict => &mut self.stats.conflicts,
            ErrorCode::RateLimited => &mut self.stats.rate_limited,
            ErrorCode::RegistryFull => &mut self.stats.registry_full,
            ErrorCode::Malformed | ErrorCode::Other(_) => &mut self.stats.malformed,
        };
        *counter += 1;
        // Getters of an unchecked view read zeros where bytes are missing.
        let view = Message::new_unchecked(bytes);
        let reply = ErrorReply {
            code,
            offending_type: view.raw_type(),
            conn: view.conn(),
            number: view.number(),
        };
        // A flood is counted, not logged line by line.
        if code != ErrorCode::RateLimited {
            self.event(ServerEvent::Rejected {
                code,
                observed,
                conn: reply.conn,
            });
        }
        self.stats.errors_sent += 1;
        self.outputs.push_back(Output::Send {
            session,
            bytes: reply.to_vec(),
        });
        if code.closes_session() {
            self.sessions.remove(&session);
            self.outputs.push_back(Output::Close { session });
        }
    }

    fn on_register(&mut self, ctx: &Ctx<'_>, msg: &Message<&[u8]>, h: Header, reg: Register) {
        // The Register carries its verifier: the MAC proves only that the
        // sender holds it (integrity), the comparison below that it is the
        // one registered first (PROTOCOL.md §15.5, §11.9).
        if !msg.verify_mac(&reg.verifier) {
            self.reject(ctx.session, ctx.observed, ErrorCode::BadMac, ctx.bytes);
            return;
        }
        let existing = self.registry.get(h.conn);
        let mut entry = match existing {
            Some(e) if !e.verifier.ct_eq(&reg.verifier) => {
                self.reject(ctx.session, ctx.observed, ErrorCode::Conflict, ctx.bytes);
                return;
            }
            Some(e) => e,
            None => Entry::new(reg.verifier, ctx.now),
        };
        let fresh_record = EndRecord {
            direct: reg.direct,
            observed: *ctx.observed.ip(),
            peer_seen: reg.peer_seen,
            moved_at: 0,
            last_move: None,
            last_request: h.number,
            last_notice: reg.last_notice,
            notified_at: 0,
            notified_seq: 0,
            session: ctx.session,
        };
        let slot = &mut entry.ends[h.side.index()];
        match slot {
            None => *slot = Some(fresh_record),
            Some(rec) => match freshness(rec.last_request, h.number) {
                Freshness::Stale => {
                    self.reject(ctx.session, ctx.observed, ErrorCode::Replayed, ctx.bytes);
                    return;
                }
                // A repeat moves the side's session (notices go there), so it
                // must come from where the side was last observed: from anywhere
                // else it is a replay of captured bytes (PROTOCOL.md §11.9).
                Freshness::Repeat if *ctx.observed.ip() != rec.observed => {
                    self.reject(ctx.session, ctx.observed, ErrorCode::Replayed, ctx.bytes);
                    return;
                }
                Freshness::Repeat => {
                    self.stats.repeats += 1;
                    rec.session = ctx.session;
                }
                Freshness::Fresh => {
                    rec.direct = reg.direct;
                    rec.observed = *ctx.observed.ip();
                    rec.peer_seen = reg.peer_seen;
                    rec.last_request = h.number;
                    rec.session = ctx.session;
                    if RequestNumber(reg.last_notice).is_after(RequestNumber(rec.last_notice)) {
                        rec.last_notice = reg.last_notice;
                    }
                }
            },
        }
        entry.expires = ctx.now + self.config.ttl;
        if let Err(_full) = self.registry.insert(h.conn, entry) {
            self.reject(
                ctx.session,
                ctx.observed,
                ErrorCode::RegistryFull,
                ctx.bytes,
            );
            return;
        }
        self.stats.registered += 1;
        self.event(ServerEvent::Registered {
            conn: h.conn,
            side: h.side,
            observed: ctx.observed,
            direct: reg.direct,
            behind_napt: *reg.direct.ip() != *ctx.observed.ip(),
        });
        self.ack(&mut entry, h, Outcome::Registered);
        // A notice this end never accepted (its session died, or the server
        // sent it before the end re-registered) is delivered again: a
        // PeerLocation, or the RelayAssignment of a relay in place.
        if let Some((decision, stamp)) = self.current_decision(&entry) {
            let host_has_it = |r: &EndRecord| {
                r.notified_at == stamp
                    && (reg.last_notice == r.notified_seq
                        || RequestNumber(reg.last_notice).is_after(RequestNumber(r.notified_seq)))
            };
            let missing = !entry.end(h.side).is_some_and(host_has_it);
            match (decision, entry.relay) {
                (Decision::Msyn { sender, target }, _) if sender == h.side && missing => {
                    self.notify(&mut entry, h.conn, sender, target, stamp, 0);
                }
                (Decision::RelayNeeded, Some(record)) if missing => {
                    self.assign(&mut entry, h.conn, h.side, &record, stamp, 0);
                }
                _ => {}
            }
        }
        let _ = self.registry.insert(h.conn, entry);
    }

    fn on_move_report(&mut self, ctx: &Ctx<'_>, msg: &Message<&[u8]>, h: Header, rep: MoveReport) {
        let Some(mut entry) = self
            .registry
            .get(h.conn)
            .filter(|e| e.end(h.side).is_some())
        else {
            self.reject(
                ctx.session,
                ctx.observed,
                ErrorCode::UnknownConnection,
                ctx.bytes,
            );
            return;
        };
        if !msg.verify_mac(&entry.verifier) {
            self.reject(ctx.session, ctx.observed, ErrorCode::BadMac, ctx.bytes);
            return;
        }
        let Some(rec) = entry.end_mut(h.side) else {
            return;
        };
        match freshness(rec.last_request, h.number) {
            Freshness::Stale => {
                self.reject(ctx.session, ctx.observed, ErrorCode::Replayed, ctx.bytes);
                return;
            }
            // As for Register: a repeat from elsewhere is a replay.
            Freshness::Repeat if *ctx.observed.ip() != rec.observed => {
                self.reject(ctx.session, ctx.observed, ErrorCode::Replayed, ctx.bytes);
                return;
            }
            Freshness::Repeat => {
                self.stats.repeats += 1;
                rec.session = ctx.session;
            }
            Freshness::Fresh => {
                let location = (rep.new_direct, *ctx.observed.ip());
                if rec.last_move != Some(location) {
                    // A distinct move: it is now the latest (DESIGN: the
                    // later reporter sends when both are global).
                    self.order += 1;
                    rec.moved_at = self.order;
                    rec.last_move = Some(location);
                }
                rec.direct = rep.new_direct;
                rec.observed = *ctx.observed.ip();
                rec.last_request = h.number;
                rec.session = ctx.session;
                self.stats.reports += 1;
            }
        }
        entry.expires = ctx.now + self.config.ttl;
        self.event(ServerEvent::MoveReported {
            conn: h.conn,
            side: h.side,
            observed: ctx.observed,
            old_direct: rep.old_direct,
            new_direct: rep.new_direct,
            behind_napt: *rep.new_direct.ip() != *ctx.observed.ip(),
        });
        let outcome = match self.current_decision(&entry) {
            None => Outcome::Waiting,
            Some((decision, stamp)) => {
                self.stats.decisions += 1;
                self.event(ServerEvent::Decided {
                    conn: h.conn,
                    decision,
                });
                match decision {
                    Decision::NoMove => Outcome::Waiting,
                    Decision::RelayNeeded => {
                        self.stats.relays_needed += 1;
                        self.relay_needed(&mut entry, h, stamp);
                        let _ = self.registry.insert(h.conn, entry);
                        return;
                    }
                    Decision::Msyn { sender, target } => {
                        // An end is reachable again: the relay, if any, is
                        // no longer needed (PROTOCOL.md §6.9 "Moving
                        // again", §15.14).
                        if let Some(record) = entry.relay.take() {
                            self.release_relay(h.conn, record.proxy.port());
                        }
                        // Ack first, so the reporter reads the outcome
                        // before the notice it announces.
                        let outcome = if sender == h.side {
                            Outcome::YouSend
                        } else {
                            Outcome::PeerSends
                        };
                        self.ack(&mut entry, h, outcome);
                        let already = entry.end(sender).is_some_and(|r| r.notified_at == stamp);
                        if !already {
                            let request = if sender == h.side { h.number } else { 0 };
                            self.notify(&mut entry, h.conn, sender, target, stamp, request);
                        }
                        let _ = self.registry.insert(h.conn, entry);
                        return;
                    }
                }
            }
        };
        self.ack(&mut entry, h, outcome);
        let _ = self.registry.insert(h.conn, entry);
    }

    fn on_unregister(&mut self, ctx: &Ctx<'_>, msg: &Message<&[u8]>, h: Header) {
        let Some(mut entry) = self
            .registry
            .get(h.conn)
            .filter(|e| e.end(h.side).is_some())
        else {
            self.reject(
                ctx.session,
                ctx.observed,
                ErrorCode::UnknownConnection,
                ctx.bytes,
            );
            return;
        };
        if !msg.verify_mac(&entry.verifier) {
            self.reject(ctx.session, ctx.observed, ErrorCode::BadMac, ctx.bytes);
            return;
        }
        let last = entry.end(h.side).map_or(0, |r| r.last_request);
        if freshness(last, h.number) != Freshness::Fresh {
            self.reject(ctx.session, ctx.observed, ErrorCode::Replayed, ctx.bytes);
            return;
        }
        if let Some(rec) = entry.end_mut(h.side) {
            rec.session = ctx.session;
        }
        self.ack(&mut entry, h, Outcome::Unregistered);
        if let Some(slot) = entry.ends.get_mut(h.side.index()) {
            *slot = None;
        }
        if entry.ends.iter().all(Option::is_none) {
            if let Some(record) = entry.relay {
                self.release_relay(h.conn, record.proxy.port());
            }
            self.registry.remove(h.conn);
        } else {
            let _ = self.registry.insert(h.conn, entry);
        }
        self.stats.unregistered += 1;
        self.event(ServerEvent::Unregistered {
            conn: h.conn,
            side: h.side,
        });
    }

    /// The decision for an entry with both ends registered, and its stamp
    /// (the latest move's order), or `None` if an end is missing.
    fn current_decision(&self, entry: &Entry) -> Option<(Decision, u64)> {
        let low = entry.end(Side::Low)?.state();
        let high = entry.end(Side::High)?.state();
        Some((decide([&low, &high]), low.moved_at.max(high.moved_at)))
    }

    /// Sends `body` to the end `side` on its current session, with the next
    /// notice number. False if that session is gone.
    fn send_to(
        &mut self,
        entry: &mut Entry,
        conn: ConnectionId,
        side: Side,
        body: Body,
    ) -> Option<u32> {
        let verifier = entry.verifier;
        let rec = entry.end_mut(side)?;
        if !self.sessions.contains_key(&rec.session) {
            return None;
        }
        rec.last_notice = rec.last_notice.wrapping_add(1);
        let repr = ControlRepr {
            header: Header {
                conn,
                side,
                number: rec.last_notice,
            },
            body,
        };
        self.outputs.push_back(Output::Send {
            session: rec.session,
            bytes: repr.to_vec(&verifier),
        });
        Some(rec.last_notice)
    }

    fn ack(&mut self, entry: &mut Entry, h: Header, outcome: Outcome) {
        let body = Body::Ack(Ack {
            request: h.number,
            outcome,
        });
        if self.send_to(entry, h.conn, h.side, body).is_some() {
            self.stats.acks_sent += 1;
        }
    }

    fn notify(
        &mut self,
        entry: &mut Entry,
        conn: ConnectionId,
        side: Side,
        target: SocketAddrV4,
        stamp: u64,
        request: u32,
    ) {
        let napt = |s: Side| entry.end(s).is_some_and(|r| r.state().behind_napt());
        let body = Body::PeerLocation(PeerLocation {
            request,
            target,
            you_behind_napt: napt(side),
            peer_behind_napt: napt(side.other()),
        });
        match self.send_to(entry, conn, side, body) {
            Some(number) => {
                if let Some(rec) = entry.end_mut(side) {
                    rec.notified_at = stamp;
                    rec.notified_seq = number;
                }
                self.stats.notices_sent += 1;
                self.event(ServerEvent::NoticeSent {
                    conn,
                    side,
                    target,
                    number,
                });
            }
            None => self.stats.notices_undeliverable += 1,
        }
    }
}

// The proxy (PROTOCOL.md §15.14): relays for ends that are both behind
// NAPTs.
impl<R: Registry> Server<R> {
    /// The decision is RelayNeeded after `h`'s report (PROTOCOL.md §15.10,
    /// last row). A relay in place is kept: a relayed end that moved behind
    /// another NAPT sends its MSYN to the proxy with the same ticket (§6.9
    /// "Moving again"), so the reporter only gets its assignment again (it
    /// may have lost it). Otherwise the proxy is asked for one and the
    /// report's Ack waits for its answer; with no proxy session the Ack says
    /// RelayNeeded, as without a proxy.
    fn relay_needed(&mut self, entry: &mut Entry, h: Header, stamp: u64) {
        if let Some(record) = entry.relay {
            self.ack(entry, h, Outcome::Relayed);
            self.assign(entry, h.conn, h.side, &record, stamp, h.number);
            return;
        }
        let Some(link) = self.proxy.as_mut().filter(|l| l.established()) else {
            self.ack(entry, h, Outcome::RelayNeeded);
            return;
        };
        if let Some(p) = link.pending.values_mut().find(|p| p.conn == h.conn) {
            // Already asked (the other end's report, or a repeat): this Ack
            // waits for the same answer.
            p.stamp = stamp;
            if !p.waiting.contains(&(h.side, h.number)) {
                p.waiting.push((h.side, h.number));
            }
            return;
        }
        match link.request(h.conn, stamp, (h.side, h.number)) {
            Ok((number, bytes)) => {
                self.outputs.push_back(Output::ProxySend { bytes });
                self.stats.relays_requested += 1;
                self.event(ServerEvent::RelayRequested {
                    conn: h.conn,
                    number,
                });
            }
            Err(_) => self.ack(entry, h, Outcome::RelayNeeded),
        }
    }

    /// Sends `side` its RelayAssignment for `record` (PROTOCOL.md §15.8).
    fn assign(
        &mut self,
        entry: &mut Entry,
        conn: ConnectionId,
        side: Side,
        record: &RelayRecord,
        stamp: u64,
        request: u32,
    ) {
        let Some(link) = self.proxy.as_ref() else {
            return;
        };
        let assignment = link.assignment(record, side, request);
        match self.send_to(entry, conn, side, Body::RelayAssignment(assignment)) {
            Some(number) => {
                if let Some(rec) = entry.end_mut(side) {
                    rec.notified_at = stamp;
                    rec.notified_seq = number;
                }
                self.stats.relay_assignments_sent += 1;
                self.event(ServerEvent::RelayAssigned {
                    conn,
                    side,
                    proxy: record.proxy,
                    ticket: assignment.ticket_id,
                    number,
                });
            }
            None => self.stats.notices_undeliverable += 1,
        }
    }

    /// Tells the proxy to free `port` (the server no longer needs it).
    fn release_relay(&mut self, conn: ConnectionId, port: u16) {
        let Some(link) = self.proxy.as_mut() else {
            return;
        };
        if let Some(bytes) = link.release(port) {
            self.outputs.push_back(Output::ProxySend { bytes });
        }
        self.stats.relays_released += 1;
        self.event(ServerEvent::RelayReleased {
            conn,
            port,
            reason: None,
        });
    }

    fn proxy_reply(&mut self, now: Instant, reply: ProxyReply) {
        match reply {
            ProxyReply::Established => {
                if let Some(control) = self.proxy_control() {
                    self.event(ServerEvent::ProxyUp { control });
                }
            }
            ProxyReply::Grant {
                number,
                port,
                status,
            } => self.on_grant(now, number, port, status),
            ProxyReply::Closed { port, reason } => {
                let Some(conn) = self
                    .proxy
                    .as_mut()
                    .and_then(|link| link.by_port.remove(&port))
                else {
                    return;
                };
                if let Some(mut entry) = self.registry.get(conn) {
                    if entry.relay.is_some_and(|r| r.proxy.port() == port) {
                        entry.relay = None;
                        let _ = self.registry.insert(conn, entry);
                    }
                }
                self.stats.relays_released += 1;
                self.event(ServerEvent::RelayReleased {
                    conn,
                    port,
                    reason: Some(reason),
                });
            }
        }
    }

    /// The proxy's answer to a RelayRequest: on a grant, both ends get
    /// their RelayAssignment and the waiting reports their Ack (Relayed);
    /// otherwise the reports are answered RelayNeeded.
    fn on_grant(&mut self, _now: Instant, number: u32, port: u16, status: GrantStatus) {
        let Some(link) = self.proxy.as_mut() else {
            return;
        };
        let Some(pending) = link.pending.remove(&number) else {
            return;
        };
        let proxy = SocketAddrV4::new(*link.cfg.control.ip(), port);
        let lifetime_secs = link.cfg.lifetime_secs;
        let entry = self.registry.get(pending.conn);
        // Still wanted: registered, both behind NAPTs, no relay granted
        // in the meantime.
        let wanted = entry.as_ref().is_some_and(|e| {
            e.relay.is_none()
                && self
                    .current_decision(e)
                    .is_some_and(|(d, _)| d == Decision::RelayNeeded)
        });
        match (status, entry) {
            (GrantStatus::Granted, Some(mut entry)) if wanted => {
                let record = RelayRecord {
                    proxy,
                    tickets: pending.tickets,
                    lifetime_secs,
                };
                if let Some(link) = self.proxy.as_mut() {
                    link.by_port.insert(port, pending.conn);
                }
                entry.relay = Some(record);
                self.stats.relays_granted += 1;
                self.event(ServerEvent::RelayGranted {
                    conn: pending.conn,
                    proxy,
                });
                self.answer_waiting(&mut entry, &pending, Outcome::Relayed);
                for side in [Side::Low, Side::High] {
                    let request = pending
                        .waiting
                        .iter()
                        .rev()
                        .find(|(s, _)| *s == side)
                        .map_or(0, |w| w.1);
                    self.assign(
                        &mut entry,
                        pending.conn,
                        side,
                        &record,
                        pending.stamp,
                        request,
                    );
                }
                let _ = self.registry.insert(pending.conn, entry);
            }
            (GrantStatus::Granted, entry) => {
                // No longer wanted: give the port back at once.
                self.release_relay(pending.conn, port);
                if let Some(mut entry) = entry {
                    self.answer_waiting(&mut entry, &pending, Outcome::RelayNeeded);
                    let _ = self.registry.insert(pending.conn, entry);
                }
            }
            (status, entry) => {
                self.stats.relays_refused += 1;
                self.event(ServerEvent::RelayRefused {
                    conn: pending.conn,
                    status: Some(status),
                });
                if let Some(mut entry) = entry {
                    self.answer_waiting(&mut entry, &pending, Outcome::RelayNeeded);
                    let _ = self.registry.insert(pending.conn, entry);
                }
            }
        }
    }

    fn answer_waiting(&mut self, entry: &mut Entry, pending: &PendingRelay, outcome: Outcome) {
        for &(side, number) in &pending.waiting {
            let h = Header {
                conn: pending.conn,
                side,
                number,
            };
            self.ack(entry, h, outcome);
        }
    }

    fn proxy_down(&mut self, _now: Instant, error: Option<ProxyControlError>) {
        // Once per session: the driver reports the end of a session the
        // server already closed.
        let Some(link) = self.proxy.as_mut().filter(|l| l.is_open()) else {
            return;
        };
        let (pending, granted) = link.reset();
        self.event(ServerEvent::ProxyDown { error });
        for p in pending {
            self.stats.relays_refused += 1;
            self.event(ServerEvent::RelayRefused {
                conn: p.conn,
                status: None,
            });
            if let Some(mut entry) = self.registry.get(p.conn) {
                self.answer_waiting(&mut entry, &p, Outcome::RelayNeeded);
                let _ = self.registry.insert(p.conn, entry);
            }
        }
        for (port, conn) in granted {
            if let Some(mut entry) = self.registry.get(conn) {
                if entry.relay.is_some_and(|r| r.proxy.port() == port) {
                    entry.relay = None;
                    let _ = self.registry.insert(conn, entry);
                }
            }
        }
    }
}

/// Where the message being handled came from.
struct Ctx<'b> {
    now: Instant,
    session: SessionId,
    observed: SocketAddrV4,
    bytes: &'b [u8],
}
