//! The sans-IO TCP endpoint: listeners, the connection table, demultiplexing,
//! timers and the transmit schedule.
//!
//! # Driving an endpoint
//!
//! Feed every received IPv4 packet to [`Endpoint::handle_packet`], call
//! [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] is due, and
//! after either (and after application calls) drain
//! [`Endpoint::poll_transmit`] until it returns `None` and
//! [`Endpoint::poll_event`] until it returns `None`.
//!
//! # Connection lifecycle and events
//!
//! - An active open ([`Endpoint::connect`]) reports [`Event::Connected`] on
//!   reaching ESTABLISHED. A passive open is invisible to the application
//!   until the handshake completes; then [`Event::Incoming`] is reported and
//!   the id is queued for [`Endpoint::accept`]. Queued-but-unaccepted
//!   connections count against the listener's backlog together with
//!   SYN-RECEIVED entries, so applications must call `accept`.
//! - [`Event::Closed`] is reported **exactly once** for every connection the
//!   application knows (active opens, and passive ones after `Incoming`):
//!   - `Normal` when both FINs have been exchanged and ours acknowledged: on
//!     entering TIME-WAIT (from FIN-WAIT-1, FIN-WAIT-2 or CLOSING) or on
//!     LAST-ACK -> CLOSED. The connection then lingers in TIME-WAIT for
//!     [`Config::time_wait`] (still answering a retransmitted FIN) without
//!     another event;
//!   - `Reset` on an acceptable RST (RFC 5961: exactly at RCV.NXT),
//!     `Refused` on a RST in SYN-SENT (or in SYN-RECEIVED after a
//!     simultaneous open), `TimedOut` when SYN or data retransmissions (or
//!     unanswered zero-window probes) are exhausted, `Aborted` after
//!     [`Endpoint::abort`]. (`close` in SYN-SENT queues the FIN behind the
//!     data instead of deleting the connection as RFC 9293 would.)
//! - After a normal close, data the application has not read stays
//!   readable; the connection's slot is freed once it is CLOSED and drained.
//!   After that, calls on the id answer as for a closed connection (a
//!   bounded memory of recently closed ids); ids are generation-tagged and
//!   never alias a newer connection.
//! - Migration (PROTOCOL.md §6-§9): with [`Mode::Sustain`] (the default)
//!   or [`Mode::Continuation`] every SYN and SYN-ACK offers a
//!   Migrate-Permit; a connection whose peer answered in kind is
//!   *migratable* ([`ConnInfo::migratable`]), any other is plain TCP. The
//!   runtime reports addresses with [`Endpoint::address_lost`] and
//!   [`Endpoint::address_available`] (address and route up), and mobility
//!   server notices with [`Endpoint::peer_location`]. A migratable
//!   connection whose address goes holds in MIG_WAIT and moves to the next
//!   address given (MSYN handshake, or Address-Update in continuation mode);
//!   the events `MigWait`, `MigrationStarted`, `MsynSent`, `Resumed`,
//!   `PeerMoved` and `MigrationFailed` report progress, and a connection
//!   that cannot move, or whose move times out, closes with
//!   [`CloseReason::AddressLost`] or [`CloseReason::MigrationTimedOut`].
//!   MSYNs and Address-Updates are matched by token, never by address or
//!   port.
//! - [`Event::Readable`] and [`Event::Writable`] are edge-triggered:
//!   `Readable` fires when data (or the FIN) arrives and no `Readable` is
//!   outstanding since the last `recv` call; `Writable` fires when
//!   acknowledged data frees send-buffer space after a `send` that did not
//!   take everything. Read until `recv` returns 0, write until `send` is
//!   short.

use core::cmp::Reverse;
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::{BinaryHeap, HashMap, VecDeque};

use super::connection::{closed_error, Connection, ControlSegment, RateLimiter, Shared};
use super::types::{
    CloseReason, Config, ConnId, ConnInfo, Event, IndexSizes, ListenerId, Mode, State, Stats,
    TcpError,
};
use crate::auth::{ConnectionKeys, Key, Token};
use crate::rand::Random;
use crate::relay::ticket::HostTicket;
use crate::time::Instant;
use crate::wire::{
    emit_ipv4_tcp, parse_ipv4_tcp, Ipv4Repr, MigrateOption, MigrationOptions, SeqNumber, TcpRepr,
};
use crate::Transmit;

/// Ids carry the slot index in the low bits and a generation above, so a
/// stale id never reaches a newer connection in the same slot.
const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GENERATION_MASK: u32 = (1 << (32 - INDEX_BITS)) - 1;
/// Closed ids remembered so later calls on them answer sensibly.
const TOMBSTONES: usize = 4096;

type FourTuple = (SocketAddrV4, SocketAddrV4);

/// The live connection `id` names, if its slot still holds that generation.
/// A free function over the slot table (not a method) so that callers can
/// hold it alongside `&mut self.shared`.
fn live_conn(slots: &mut [Slot], id: ConnId) -> Option<&mut Connection> {
    let slot = slots.get_mut((id.0 & INDEX_MASK) as usize)?;
    if slot.generation != id.0 >> INDEX_BITS {
        return None;
    }
    slot.conn.as_deref_mut()
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Box<Connection>>,
    /// In the 4-tuple index and port table (false once CLOSED).
    indexed: bool,
    /// The (local, remote) under which the connection is indexed; compared
    /// with the connection's addresses after every call, because a move
    /// retargets them.
    key: FourTuple,
    /// The 4-tuple the connection last moved away from, if any.
    previous: Option<FourTuple>,
    /// The token under which the connection is in the token table.
    token: Option<Token>,
}

#[derive(Debug)]
struct Listener {
    local: SocketAddrV4,
    backlog: usize,
    syn_received: usize,
    accept_queue: VecDeque<ConnId>,
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    reason: CloseReason,
    recv_finished: bool,
}

/// The sans-IO TCP endpoint: see the module documentation for how to drive it.
pub struct Endpoint {
    config: Config,
    rng: Box<dyn Random + Send>,
    /// The connection table: a slab addressed by `ConnId`.
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// (local, remote) -> connection.
    index: HashMap<FourTuple, ConnId>,
    /// The 4-tuple each connection last left (one per connection at most):
    /// late segments there are dropped instead of answered with a reset
    /// that could reach the peer.
    previous_paths: HashMap<FourTuple, ConnId>,
    /// Token of our key -> connection (PROTOCOL.md §4.2): MSYNs and
    /// Address-Updates are matched here, never by address or port.
    tokens: HashMap<Token, ConnId>,
    conn_ports: HashMap<u16, u32>,
    listeners: Vec<Option<Listener>>,
    listener_index: HashMap<SocketAddrV4, ListenerId>,
    listener_ports: HashMap<u16, u32>,
    tombstones: HashMap<ConnId, Tombstone>,
    tombstone_order: VecDeque<ConnId>,
    /// Connections that may have something to send, round-robin.
    ready: VecDeque<ConnId>,
    /// Lazy timer queue: each connection keeps its earliest registered
    /// deadline; later deadlines are re-registered when that one fires.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    due: Vec<(Instant, ConnId)>,
    events: VecDeque<Event>,
    shared: Shared,
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.index.len())
            .field("listeners", &self.listener_index.len())
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no listener or connection; `rng` is its only source of randomness (ISNs, timestamp offsets, ports, keys).
    pub fn new(config: Config, rng: Box<dyn Random + Send>) -> Endpoint {
        let shared = Shared {
            stats: Stats::default(),
            challenge: RateLimiter::new(config.challenge_ack_limit),
            mac_budget: RateLimiter::new(config.mac_verifications_per_endpoint),
            control: VecDeque::new(),
        };
        Endpoint {
            config,
            rng,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::new(),
            previous_paths: HashMap::new(),
            tokens: HashMap::new(),
            conn_ports: HashMap::new(),
            listeners: Vec::new(),
            listener_index: HashMap::new(),
            listener_ports: HashMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            due: Vec::new(),
            events: VecDeque::new(),
            shared,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Passive open on `local` (0.0.0.0 matches any local address).
    pub fn listen(&mut self, local: SocketAddrV4) -> Result<ListenerId, TcpError> {
        self.listen_with_backlog(local, self.config.syn_backlog)
    }

    /// Passive open with its own backlog (SYN-RECEIVED entries plus
    /// established connections not yet accepted).
    pub fn listen_with_backlog(
        &mut self,
        local: SocketAddrV4,
        backlog: usize,
    ) -> Result<ListenerId, TcpError> {
        if self.listener_index.contains_key(&local) {
            return Err(TcpError::AddrInUse);
        }
        let id = ListenerId(self.listeners.len() as u32);
        self.listeners.push(Some(Listener {
            local,
            backlog,
            syn_received: 0,
            accept_queue: VecDeque::new(),
        }));
        self.listener_index.insert(local, id);
        *self.listener_ports.entry(local.port()).or_insert(0) += 1;
        Ok(id)
    }

    /// Stops listening. Connections not yet accepted (including half-open
    /// ones) are reset; accepted ones are unaffected.
    pub fn unlisten(&mut self, listener: ListenerId) {
        let Some(slot) = self.listeners.get_mut(listener.0 as usize) else {
            return;
        };
        if let Some(l) = slot.take() {
            self.listener_index.remove(&l.local);
            release_port(&mut self.listener_ports, l.local.port());
            // Half-open and unaccepted connections belonged to the
            // listener: reset them rather than announce them to nobody.
            let mut orphans: Vec<ConnId> = l.accept_queue.into_iter().collect();
            orphans.extend(self.slots.iter().filter_map(|slot| {
                let c = slot.conn.as_deref()?;
                (c.listener == Some(listener) && c.state == State::SynReceived).then_some(c.id)
            }));
            for conn in orphans {
                self.abort(conn);
            }
        }
    }

    /// The next connection established on `listener` and not yet accepted.
    pub fn accept(&mut self, listener: ListenerId) -> Option<ConnId> {
        self.listeners
            .get_mut(listener.0 as usize)?
            .as_mut()?
            .accept_queue
            .pop_front()
    }

    /// Active open; the SYN goes out on the next `poll_transmit`. Port 0 in
    /// `local` picks a free ephemeral port.
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<ConnId, TcpError> {
        self.connect_with_mss(now, local, remote, self.config.mss)
    }

    /// [`Endpoint::connect`] advertising `mss` instead of [`Config::mss`]
    /// (the runtime derives it from the route's MTU towards `remote`).
    pub fn connect_with_mss(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        mss: u16,
    ) -> Result<ConnId, TcpError> {
        let local = if local.port() == 0 {
            SocketAddrV4::new(*local.ip(), self.ephemeral_port()?)
        } else {
            local
        };
        if self.index.contains_key(&(local, remote)) {
            return Err(TcpError::AddrInUse);
        }
        let (idx, id) = self.alloc_slot().ok_or(TcpError::AddrInUse)?;
        let iss = SeqNumber(self.rng.next_u32());
        let ts_offset = self.rng.next_u32();
        // PROTOCOL.md §6.1: a migrating end offers a Permit with a key whose
        // token no other connection here uses (§4.2). Without one (the
        // draws ran out) the connection is plain TCP.
        let key = match self.config.mode {
            Mode::Plain => None,
            Mode::Sustain | Mode::Continuation => self.unique_key(),
        };
        let config = Config {
            mss,
            ..self.config.clone()
        };
        let conn = Connection::new_active(id, &config, local, remote, iss, ts_offset, now, key);
        self.install(idx, id, conn);
        self.after_conn(id);
        Ok(id)
    }

    /// Queue bytes; returns how many fit in the send buffer.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return Err(self.gone_error(conn));
        };
        let n = c.app_send(data)?;
        if n > 0 {
            self.after_conn(conn);
        }
        Ok(n)
    }

    /// Read in-order bytes; `Ok(0)` when none are available.
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return match self.tombstones.get(&conn) {
                Some(t) if t.reason == CloseReason::Normal => Ok(0),
                Some(t) => Err(closed_error(Some(t.reason))),
                None => Err(TcpError::NoSuchConnection),
            };
        };
        if c.state == State::Closed && c.unread() == 0 {
            let reason = c.close_reason;
            return match reason {
                Some(CloseReason::Normal) => Ok(0),
                other => Err(closed_error(other)),
            };
        }
        let n = c.app_recv(buf);
        self.after_conn(conn);
        Ok(n)
    }

    /// The peer's FIN has been received and every byte before it read.
    pub fn recv_finished(&self, conn: ConnId) -> bool {
        match self.conn(conn) {
            Some(c) => c.recv_finished(),
            None => self.tombstones.get(&conn).is_some_and(|t| t.recv_finished),
        }
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, Connection::send_capacity)
    }

    /// Bytes queued but not yet acknowledged.
    pub fn send_queued(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, Connection::send_queued)
    }

    /// Bytes received in order and not yet read.
    pub fn recv_queued(&self, conn: ConnId) -> usize {
        self.conn(conn).map_or(0, Connection::unread)
    }

    /// Graceful close: FIN after the queued data.
    pub fn close(&mut self, conn: ConnId) -> Result<(), TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return match self.tombstones.get(&conn) {
                Some(t) if t.reason == CloseReason::Normal => Ok(()),
                _ => Err(self.gone_error(conn)),
            };
        };
        let result = c.app_close();
        self.after_conn(conn);
        result
    }

    /// Abort with RST (none in MIG_SENT / MIG_WAIT: there is no path).
    pub fn abort(&mut self, conn: ConnId) {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return;
        };
        c.app_abort(&mut self.shared);
        self.after_conn(conn);
    }

    /// RFC 9293 state, or MIG_SENT / MIG_WAIT while a move is under way.
    pub fn state(&self, conn: ConnId) -> Option<State> {
        match self.conn(conn) {
            Some(c) => Some(c.public_state()),
            None => self.tombstones.get(&conn).map(|_| State::Closed),
        }
    }

    /// Why a connection closed, once it has.
    pub fn close_reason(&self, conn: ConnId) -> Option<CloseReason> {
        match self.conn(conn) {
            Some(c) => c.close_reason,
            None => self.tombstones.get(&conn).map(|t| t.reason),
        }
    }

    /// A snapshot of connection `conn`, if it exists.
    pub fn info(&self, conn: ConnId) -> Option<ConnInfo> {
        self.conn(conn).map(Connection::info)
    }

    /// Local ports owned by listeners and connections (the runtime filters on them).
    pub fn owns_port(&self, port: u16) -> bool {
        self.listener_ports.contains_key(&port) || self.conn_ports.contains_key(&port)
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections in the table (including TIME-WAIT and closed ones with
    /// unread data).
    pub fn connection_count(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.is_some()).count()
    }

    /// One whole IPv4 packet from the network.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.shared.stats.packets_in += 1;
        let (ip, seg) = match parse_ipv4_tcp(packet) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.shared.stats.malformed += 1;
                tracing::trace!(%err, "malformed packet dropped");
                return;
            }
        };
        let local = SocketAddrV4::new(ip.dst, seg.dst_port);
        let remote = SocketAddrV4::new(ip.src, seg.src_port);
        // PROTOCOL.md §3.6: sustain options are read unless this endpoint is
        // plain TCP, which ignores them like any legacy stack.
        let options = if self.config.mode == Mode::Plain {
            MigrationOptions::default()
        } else {
            match MigrationOptions::from_repr(&seg) {
                Ok(options) => options,
                Err(err) => {
                    // PROTOCOL.md §3.6 rule 3: a SYN with malformed sustain
                    // options is dropped; anything else is plain TCP.
                    self.shared.stats.sustain_malformed += 1;
                    tracing::debug!(%err, %remote, "malformed sustain options");
                    if seg.flags.syn() {
                        return;
                    }
                    MigrationOptions::default()
                }
            }
        };
        let flags = seg.flags;
        // PROTOCOL.md §3.6 / §13.2: a SYN carrying Migrate is an MSYN or
        // nothing; it goes to the token table, never to a listener.
        if flags.syn() && !flags.ack() && options.migrate.is_some() {
            self.msyn_input(now, local, remote, &seg, &options);
            return;
        }
        if let Some(&id) = self.index.get(&(local, remote)) {
            if let Some(c) = live_conn(&mut self.slots, id) {
                c.input(now, &seg, &options, &mut self.shared);
                self.after_conn(id);
                return;
            }
        }
        // PROTOCOL.md §9 receiver step 1: an Address-Update from an unknown
        // 4-tuple goes to the token table before any reset.
        if options.address_update.is_some() && !flags.syn() && !flags.rst() {
            self.address_update_input(now, local, remote, &seg, &options);
            return;
        }
        // Segments with a Migrate option from an unknown 4-tuple (a late
        // MSYN-ACK, a Confirm for a path given up) and segments on the path
        // a connection has just left are dropped: a reset there could be
        // taken by the peer as one for the moved connection.
        if options.migrate.is_some()
            || (!flags.syn() && self.previous_paths.contains_key(&(local, remote)))
        {
            self.shared.stats.old_path_drops += 1;
            return;
        }
        if let Some(listener) = self.listener_for(local) {
            self.listener_input(now, listener, local, remote, &seg, &options);
            return;
        }
        if self.owns_port(seg.dst_port) {
            // RFC 9293 §3.10.7.1: no TCB for this segment: reset (unless it
            // is a RST).
            self.shared.reset_for(local, remote, &seg);
            return;
        }
        // The kernel's own TCP shares the namespace: not ours, not a reset.
        self.shared.stats.not_ours += 1;
    }

    /// A packet [`Endpoint::poll_transmit`] produced that the host's
    /// kernel refused to send (no route while an address goes, a device
    /// queue that stays full): PROTOCOL.md §7, a segment the host refused.
    /// The connection takes its data back instead of counting it as sent
    /// and lost on the path. Pass refused packets newest first when several
    /// were refused together, so each is the newest one left.
    pub fn handle_refused(&mut self, now: Instant, packet: &[u8]) {
        let Ok((ip, seg)) = parse_ipv4_tcp(packet) else {
            return;
        };
        if seg.flags.syn() || seg.flags.rst() {
            return;
        }
        let local = SocketAddrV4::new(ip.src, seg.src_port);
        let remote = SocketAddrV4::new(ip.dst, seg.dst_port);
        let Some(&id) = self.index.get(&(local, remote)) else {
            return;
        };
        let Some(c) = live_conn(&mut self.slots, id) else {
            return;
        };
        let fin = seg.flags.fin();
        if c.on_refused(now, seg.seq, seg.payload.len(), fin, &mut self.shared) {
            self.after_conn(id);
        }
    }

    /// Runs every timer of every connection that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = core::mem::take(&mut self.due);
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            due.push((t, id));
        }
        for (t, id) in due.drain(..) {
            let Some(c) = live_conn(&mut self.slots, id) else {
                continue;
            };
            if c.timer_registered != Some(t) {
                continue;
            }
            c.timer_registered = None;
            c.handle_timeout(now, &mut self.shared);
            self.after_conn(id);
        }
        self.due = due;
    }

    /// Earliest instant `handle_timeout` must be called. May be earlier
    /// than strictly needed (a deadline that moved later); calling
    /// `handle_timeout` then is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Writes the next IPv4 packet to send into `buf` (>= 65535 bytes is
    /// always enough) and says where it goes and how long it is.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(ctl) = self.shared.control.pop_front() {
            if let Some(size) = emit_control(&ctl, buf) {
                self.shared.stats.packets_out += 1;
                if ctl.flags.rst() {
                    self.shared.stats.resets_sent += 1;
                }
                return Some(Transmit {
                    dst: ctl.remote,
                    src: ctl.local,
                    size,
                    checksum_partial: false,
                });
            }
        }
        while let Some(id) = self.ready.pop_front() {
            let Some(c) = live_conn(&mut self.slots, id) else {
                continue;
            };
            let sent = c.poll_transmit(now, buf, &mut self.shared);
            if sent.is_some() {
                self.ready.push_back(id);
            } else {
                c.in_ready_queue = false;
            }
            register_timer(&mut self.timers, c, id);
            if sent.is_some() {
                return sent;
            }
        }
        None
    }

    /// The next event for the application, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----------------------------------------------------------------
    // Migration (PROTOCOL.md §6, §8, §9): what the runtime's address
    // watcher and the mobility-server client call.
    // ----------------------------------------------------------------

    /// The runtime saw `addr` disappear (or lose its route). Connections
    /// sending from it stop: migratable ones hold in MIG_WAIT (sending
    /// nothing, timers stopped) until [`address_available`] gives them a new
    /// address, the peer's MSYN arrives, or [`Config::mig_wait`] runs out;
    /// the rest (plain TCP, `Mode::Plain`, still opening) close at once with
    /// [`CloseReason::AddressLost`] after [`Event::MigrationFailed`].
    ///
    /// [`address_available`]: Endpoint::address_available
    pub fn address_lost(&mut self, now: Instant, addr: Ipv4Addr) {
        for id in self.connections_where(|c| *c.local.ip() == addr) {
            if let Some(c) = live_conn(&mut self.slots, id) {
                c.on_address_lost(now, &mut self.shared);
                self.after_conn(id);
            }
        }
    }

    /// The runtime saw a usable address appear (address *and* route,
    /// DESIGN.md). Every connection waiting for an address (its own went
    /// away, or it sits in MIG_WAIT) moves there: sustaining mode sends an
    /// MSYN (MIG_SENT), continuation mode starts Address-Update. Connections
    /// whose address still works are left alone.
    pub fn address_available(&mut self, now: Instant, addr: Ipv4Addr) {
        for id in self.connections_where(Connection::waiting_for_address) {
            let Some(c) = live_conn(&mut self.slots, id) else {
                continue;
            };
            let new_local = SocketAddrV4::new(addr, c.local.port());
            if self
                .index
                .get(&(new_local, c.remote))
                .is_some_and(|&o| o != id)
            {
                tracing::warn!(?id, %new_local, "cannot move: 4-tuple taken");
                continue;
            }
            if let Err(err) = c.start_move(now, Some(new_local), None, &mut self.shared) {
                tracing::debug!(?id, %err, "not moved");
            }
            self.after_conn(id);
        }
    }

    /// Moves one connection to local address `new_local` (same port) now,
    /// whether or not its old address still works.
    pub fn migrate(
        &mut self,
        now: Instant,
        conn: ConnId,
        new_local: Ipv4Addr,
    ) -> Result<(), TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return Err(self.gone_error(conn));
        };
        let new_local = SocketAddrV4::new(new_local, c.local.port());
        if self
            .index
            .get(&(new_local, c.remote))
            .is_some_and(|&o| o != conn)
        {
            return Err(TcpError::AddrInUse);
        }
        let result = c.start_move(now, Some(new_local), None, &mut self.shared);
        self.after_conn(conn);
        result
    }

    /// A mobility-server notice (PROTOCOL.md §6.7): the peer is now
    /// reachable at `new_remote` (its new address, or a relay). In a
    /// synchronized state, MIG_SENT or MIG_WAIT the connection sends an MSYN
    /// there (MIG_SENT); elsewhere the notice is ignored (`Ok`, nothing
    /// done). The server names connections by token:
    /// [`connection_for_token`](Endpoint::connection_for_token).
    pub fn peer_location(
        &mut self,
        now: Instant,
        conn: ConnId,
        new_remote: SocketAddrV4,
    ) -> Result<(), TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return Err(self.gone_error(conn));
        };
        if self
            .index
            .get(&(c.local, new_remote))
            .is_some_and(|&o| o != conn)
        {
            return Err(TcpError::AddrInUse);
        }
        let result = c.on_peer_location(now, new_remote, &mut self.shared);
        self.after_conn(conn);
        result
    }

    /// A RelayAssignment from the mobility server (PROTOCOL.md §6.9,
    /// §15.8), after [`ControlClient`](crate::rendezvous::ControlClient)
    /// authenticated it: both ends are behind NAPTs and the proxy at
    /// `proxy` (address and relay port) stands in for the peer. The
    /// connection sends its MSYNs there, carrying `ticket`'s Relay-Ticket
    /// instead of Migrate, and accepts only an MSYN-ACK proving the
    /// ticket's key; later moves of this end go to the proxy with the same
    /// ticket until a direct notice ([`peer_location`](Self::peer_location))
    /// or a direct MSYN from the peer ends the relay. If the proxy refuses
    /// a later move with an RST (this end is no longer behind a NAPT) the
    /// connection enters MIG_WAIT with
    /// [`MigWaitCause::Refused`](crate::tcp::MigWaitCause::Refused) and the
    /// runtime reports the move to the server again. States and errors as for `peer_location`.
    pub fn relay_location(
        &mut self,
        now: Instant,
        conn: ConnId,
        proxy: SocketAddrV4,
        ticket: HostTicket,
    ) -> Result<(), TcpError> {
        let Some(c) = live_conn(&mut self.slots, conn) else {
            return Err(self.gone_error(conn));
        };
        if self
            .index
            .get(&(c.local, proxy))
            .is_some_and(|&o| o != conn)
        {
            return Err(TcpError::AddrInUse);
        }
        let result = c.on_relay_location(now, proxy, ticket, &mut self.shared);
        self.after_conn(conn);
        result
    }

    /// The relay ticket a connection uses, while its peer is a proxy.
    pub fn relay_ticket(&self, conn: ConnId) -> Option<HostTicket> {
        self.conn(conn)?.relay_ticket()
    }

    /// The connection whose key has this token (the token the peer puts in
    /// its MSYNs; [`ConnInfo::local_token`]).
    pub fn connection_for_token(&self, token: Token) -> Option<ConnId> {
        let id = *self.tokens.get(&token)?;
        self.conn(id).filter(|c| c.keys().is_some()).map(|c| c.id)
    }

    /// Both keys of a migratable connection: what the runtime needs to
    /// authenticate its reports to the mobility server (DESIGN.md).
    pub fn connection_keys(&self, conn: ConnId) -> Option<ConnectionKeys> {
        self.conn(conn)?.keys()
    }

    /// Sizes of the lookup tables (see [`IndexSizes`]).
    pub fn index_sizes(&self) -> IndexSizes {
        IndexSizes {
            connections: self.connection_count(),
            four_tuples: self.index.len(),
            previous_paths: self.previous_paths.len(),
            tokens: self.tokens.len(),
            ports: self.conn_ports.len(),
        }
    }

    // ----------------------------------------------------------------

    fn connections_where(&self, mut keep: impl FnMut(&Connection) -> bool) -> Vec<ConnId> {
        self.slots
            .iter()
            .filter(|slot| slot.indexed)
            .filter_map(|slot| slot.conn.as_deref())
            .filter(|c| keep(c))
            .map(|c| c.id)
            .collect()
    }

    /// PROTOCOL.md §6.3 steps 1-2 (classification and token lookup); the
    /// connection does the rest.
    fn msyn_input(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
    ) {
        let (Some(MigrateOption::Msyn(migrate)), Some(permit)) = (options.migrate, options.permit)
        else {
            self.shared.stats.msyns_refused += 1;
            return;
        };
        if seg.flags.rst() || seg.flags.fin() {
            self.shared.stats.msyns_refused += 1;
            return;
        }
        let Some(id) = self.connection_for_token(Token(migrate.token)) else {
            // PROTOCOL.md §11.4: the same silent drop as a bad MAC.
            self.shared.stats.unknown_tokens += 1;
            return;
        };
        if self.index.get(&(local, remote)).is_some_and(|&o| o != id) {
            self.shared.stats.msyns_refused += 1;
            return;
        }
        let Some(c) = live_conn(&mut self.slots, id) else {
            return;
        };
        c.on_msyn(
            now,
            local,
            remote,
            seg,
            &migrate,
            &permit,
            &mut *self.rng,
            &mut self.shared,
        );
        self.after_conn(id);
    }

    /// PROTOCOL.md §9 receiver: an Address-Update from a 4-tuple no
    /// connection has.
    fn address_update_input(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
    ) {
        let Some(update) = options.address_update else {
            return;
        };
        let Some(id) = self.connection_for_token(Token(update.token)) else {
            self.shared.stats.unknown_tokens += 1;
            return;
        };
        let Some(c) = live_conn(&mut self.slots, id) else {
            return;
        };
        c.on_address_update(now, local, remote, seg, options, &mut self.shared);
        self.after_conn(id);
    }

    /// Brings the 4-tuple, port and token tables in line with the
    /// connection's current addresses and key after anything touched it
    /// (a move retargets a live connection).
    fn sync_indexes(&mut self, idx: usize, id: ConnId) {
        let slot = &mut self.slots[idx];
        let Some(c) = slot.conn.as_deref() else {
            return;
        };
        if !slot.indexed {
            return;
        }
        let key = (c.local, c.remote);
        if key != slot.key {
            let old = slot.key;
            if self.index.get(&old) == Some(&id) {
                self.index.remove(&old);
            }
            if let Some(previous) = slot.previous.take() {
                if self.previous_paths.get(&previous) == Some(&id) {
                    self.previous_paths.remove(&previous);
                }
            }
            if !self.index.contains_key(&old) {
                self.previous_paths.insert(old, id);
                slot.previous = Some(old);
            }
            // Whoever left `key` before does not keep it as a dead path.
            self.previous_paths.remove(&key);
            if self.index.insert(key, id).is_some_and(|o| o != id) {
                tracing::warn!(?id, ?key, "moved onto a 4-tuple another connection had");
            }
            if old.0.port() != key.0.port() {
                release_port(&mut self.conn_ports, old.0.port());
                *self.conn_ports.entry(key.0.port()).or_insert(0) += 1;
            }
            slot.key = key;
        }
        let token = c.indexed_token();
        if token != slot.token {
            if let Some(old) = slot.token {
                if self.tokens.get(&old) == Some(&id) {
                    self.tokens.remove(&old);
                }
            }
            if let Some(token) = token {
                self.tokens.insert(token, id);
            }
            slot.token = token;
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Connection> {
        let idx = self.slot_index(id)?;
        self.slots[idx].conn.as_deref()
    }

    fn slot_index(&self, id: ConnId) -> Option<usize> {
        let idx = (id.0 & INDEX_MASK) as usize;
        let slot = self.slots.get(idx)?;
        (slot.generation == id.0 >> INDEX_BITS && slot.conn.is_some()).then_some(idx)
    }

    fn gone_error(&self, id: ConnId) -> TcpError {
        match self.tombstones.get(&id) {
            Some(t) => closed_error(Some(t.reason)),
            None => TcpError::NoSuchConnection,
        }
    }

    fn alloc_slot(&mut self) -> Option<(usize, ConnId)> {
        let idx = match self.free_slots.pop() {
            Some(idx) => idx as usize,
            None => {
                if self.slots.len() > INDEX_MASK as usize {
                    return None;
                }
                let unspecified = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                    indexed: false,
                    key: (unspecified, unspecified),
                    previous: None,
                    token: None,
                });
                self.slots.len() - 1
            }
        };
        let id = ConnId((self.slots[idx].generation << INDEX_BITS) | idx as u32);
        Some((idx, id))
    }

    fn install(&mut self, idx: usize, id: ConnId, conn: Connection) {
        let key = (conn.local, conn.remote);
        self.index.insert(key, id);
        *self.conn_ports.entry(conn.local.port()).or_insert(0) += 1;
        let token = conn.indexed_token();
        if let Some(token) = token {
            self.tokens.insert(token, id);
        }
        let slot = &mut self.slots[idx];
        slot.conn = Some(Box::new(conn));
        slot.indexed = true;
        slot.key = key;
        slot.previous = None;
        slot.token = token;
    }

    /// A key whose token no connection here uses (PROTOCOL.md §4.2).
    fn unique_key(&mut self) -> Option<Key> {
        let tokens = &self.tokens;
        Key::generate_unique(&mut *self.rng, |t| tokens.contains_key(&t))
    }

    fn ephemeral_port(&mut self) -> Result<u16, TcpError> {
        const FIRST: u16 = 49152;
        const COUNT: u32 = 65536 - FIRST as u32;
        let start = (self.rng.next_u32() % COUNT) as u16;
        for i in 0..COUNT as u16 {
            let port = FIRST + (start.wrapping_add(i) % COUNT as u16);
            if !self.owns_port(port) {
                return Ok(port);
            }
        }
        Err(TcpError::AddrInUse)
    }

    fn listener_for(&self, local: SocketAddrV4) -> Option<ListenerId> {
        self.listener_index
            .get(&local)
            .or_else(|| {
                self.listener_index
                    .get(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port()))
            })
            .copied()
    }

    /// RFC 9293 §3.10.7.2 LISTEN STATE.
    fn listener_input(
        &mut self,
        now: Instant,
        listener: ListenerId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
    ) {
        // RFC 9293 §3.10.7.2 first check for an RST: ignore it.
        if seg.flags.rst() {
            return;
        }
        // RFC 9293 §3.10.7.2 second check for an ACK: <SEQ=SEG.ACK><CTL=RST>.
        if seg.flags.ack() {
            self.shared.reset_for(local, remote, seg);
            return;
        }
        // RFC 9293 §3.10.7.2 fourth other text or control: drop.
        if !seg.flags.syn() {
            return;
        }
        // RFC 9293 §3.10.7.2 third check for a SYN, within the backlog.
        let Some(Some(l)) = self.listeners.get(listener.0 as usize) else {
            return;
        };
        if l.syn_received + l.accept_queue.len() >= l.backlog {
            self.shared.stats.syn_backlog_drops += 1;
            return;
        }
        let Some((idx, id)) = self.alloc_slot() else {
            self.shared.stats.syn_backlog_drops += 1;
            return;
        };
        let iss = SeqNumber(self.rng.next_u32());
        let ts_offset = self.rng.next_u32();
        // PROTOCOL.md §6.1: answer a full Permit with ours, never a SYN
        // without one (or with the short, keyless form, §3.6).
        let keys = match (self.config.mode, options.permit.and_then(|p| p.key)) {
            (Mode::Sustain | Mode::Continuation, Some(remote_key)) => {
                self.unique_key().map(|local| ConnectionKeys {
                    local,
                    remote: Key(remote_key),
                })
            }
            _ => None,
        };
        let conn = Connection::new_passive(
            id,
            &self.config,
            listener,
            local,
            remote,
            iss,
            ts_offset,
            now,
            seg,
            keys,
        );
        self.install(idx, id, conn);
        if let Some(Some(l)) = self.listeners.get_mut(listener.0 as usize) {
            l.syn_received += 1;
        }
        self.after_conn(id);
    }

    /// After anything touched a connection: forward its events, keep the
    /// backlog count, retire it if CLOSED, and schedule output and timers.
    fn after_conn(&mut self, id: ConnId) {
        let Some(idx) = self.slot_index(id) else {
            return;
        };
        self.sync_indexes(idx, id);
        let slot = &mut self.slots[idx];
        let c = slot.conn.as_mut().expect("slot_index checks");
        while let Some(event) = c.events.pop_front() {
            if let Event::Incoming { listener, conn } = event {
                if let Some(Some(l)) = self.listeners.get_mut(listener.0 as usize) {
                    l.accept_queue.push_back(conn);
                }
            }
            self.events.push_back(event);
        }
        if c.counted_in_backlog && c.state != State::SynReceived {
            c.counted_in_backlog = false;
            if let Some(Some(l)) = c
                .listener
                .and_then(|l| self.listeners.get_mut(l.0 as usize))
            {
                l.syn_received = l.syn_received.saturating_sub(1);
            }
        }
        if c.state == State::Closed {
            if slot.indexed {
                slot.indexed = false;
                if self.index.get(&slot.key) == Some(&id) {
                    self.index.remove(&slot.key);
                }
                if let Some(previous) = slot.previous.take() {
                    if self.previous_paths.get(&previous) == Some(&id) {
                        self.previous_paths.remove(&previous);
                    }
                }
                if let Some(token) = slot.token.take() {
                    if self.tokens.get(&token) == Some(&id) {
                        self.tokens.remove(&token);
                    }
                }
                release_port(&mut self.conn_ports, slot.key.0.port());
            }
            // A normal close keeps unread data readable until drained.
            if c.unread() == 0 || !c.announced {
                let tomb = Tombstone {
                    reason: c.close_reason.unwrap_or(CloseReason::Aborted),
                    recv_finished: c.recv_finished(),
                };
                let announced = c.announced;
                slot.conn = None;
                slot.generation = (slot.generation + 1) & GENERATION_MASK;
                self.free_slots.push(idx as u32);
                if announced {
                    self.remember_closed(id, tomb);
                }
            }
            return;
        }
        if !c.in_ready_queue {
            c.in_ready_queue = true;
            self.ready.push_back(id);
        }
        register_timer(&mut self.timers, c, id);
    }

    fn remember_closed(&mut self, id: ConnId, tomb: Tombstone) {
        if self.tombstone_order.len() >= TOMBSTONES {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
        self.tombstones.insert(id, tomb);
        self.tombstone_order.push_back(id);
    }
}

fn register_timer(
    timers: &mut BinaryHeap<Reverse<(Instant, ConnId)>>,
    c: &mut Connection,
    id: ConnId,
) {
    if let Some(deadline) = c.poll_timeout() {
        if c.timer_registered.is_none_or(|r| deadline < r) {
            timers.push(Reverse((deadline, id)));
            c.timer_registered = Some(deadline);
        }
    }
}

fn release_port(ports: &mut HashMap<u16, u32>, port: u16) {
    if let Some(count) = ports.get_mut(&port) {
        *count -= 1;
        if *count == 0 {
            ports.remove(&port);
        }
    }
}

fn emit_control(ctl: &ControlSegment, buf: &mut [u8]) -> Option<usize> {
    let seg = TcpRepr {
        src_port: ctl.local.port(),
        dst_port: ctl.remote.port(),
        seq: ctl.seq,
        ack: ctl.ack,
        flags: ctl.flags,
        window: 0,
        ..TcpRepr::default()
    };
    let ip = Ipv4Repr::new(*ctl.local.ip(), *ctl.remote.ip());
    emit_ipv4_tcp(&ip, &seg, buf).ok()
}
