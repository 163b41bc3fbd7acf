//! The endpoint driver: the one task that moves packets, time and address
//! changes between the kernel and the sans-IO core, and wakes the
//! application's handles.
//!
//! # The loop
//!
//! The state every handle shares ([`State`], behind one mutex) holds the
//! core's [`CoreEndpoint`] and a slot per connection and listener with the
//! wakers of the tasks waiting on it. One pass of the driver, under the
//! lock:
//!
//! 1. **receive**: drain the packet socket ([`crate::packet_rx`]) or, on
//!    the fallback path, the raw socket, in `recvmmsg` batches, each packet
//!    a slice of its slot, into [`CoreEndpoint::handle_packet`];
//! 2. **timers**: if [`CoreEndpoint::poll_timeout`] is due, call
//!    [`CoreEndpoint::handle_timeout`];
//! 3. **events**: drain [`CoreEndpoint::poll_event`]: wake readers, writers,
//!    acceptors and connectors, queue accepted connections, hand migration
//!    events to each stream's event channel and to the `--events` log;
//! 4. **transmit**: drain [`CoreEndpoint::poll_transmit`] into `sendmmsg`
//!    batches until the core has nothing more or the socket is full.
//!
//! A pass that made progress yields to the runtime (so the application
//! tasks it woke can run) and starts again: a timer that fired or a packet
//! that arrived can make more to send. Only a pass with no progress sleeps,
//! until the first of: the socket is readable (or writable while a batch is
//! pending), the core's next timer, an rtnetlink address/route event, or a
//! handle's command (a write, a read that opened the window, a connect, a
//! close: they call the core under the lock and then [`Shared::wake`] the
//! driver). There is no busy polling.
//!
//! Address changes: on any rtnetlink event the driver re-reads the
//! interface addresses; an address that disappeared is reported with
//! [`CoreEndpoint::address_lost`], and an address becomes usable
//! ([`CoreEndpoint::address_available`]) once the kernel's routing picks it
//! as the source towards a peer (DESIGN.md: act on address *and* route).
//!
//! The driver ends when no [`crate::Endpoint`] handle is left and every
//! connection and listener is gone, or when [`crate::Endpoint::shutdown`]
//! asks; it flushes what the core still has to send and then removes the
//! RST-guard rules.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use serde_json::json;
use sustain_core::rendezvous::ControlClient;
use sustain_core::tcp::{CloseReason, ConnId, Endpoint as CoreEndpoint, Event, Stats};
use sustain_core::time::{Duration, Instant};

use crate::events::EventLog;
use crate::gso::{self, NextHops};
use crate::mobility;
use crate::netwatch;
use crate::packet_rx::{PacketRx, RxSlots};
use crate::raw_socket::{RecvBatch, Refusal, SendBatch};
use crate::route;
use crate::shared::{ConnSlot, ControlCmd, Shared, State, StreamEvent};

/// Receive batches per pass before the driver looks at timers and sends.
const RECV_BATCHES_PER_PASS: usize = 64;
/// How long a send refused for lack of buffer space waits before it is
/// tried again (a device queue drains in well under this).
const NO_BUFFER_HOLD: Duration = Duration::from_millis(1);
/// How long sends wait after one was refused for lack of a route, unless
/// an address or route event comes first.
const NO_ROUTE_HOLD: Duration = Duration::from_millis(10);

impl State {
    pub(crate) fn new(core: CoreEndpoint, log: EventLog, addresses: BTreeSet<Ipv4Addr>) -> State {
        State {
            core,
            conns: HashMap::new(),
            listeners: HashMap::new(),
            log,
            endpoint_handles: 1,
            shutdown: false,
            stopped: false,
            lingering: Vec::new(),
            flushing: Vec::new(),
            usable: addresses.clone(),
            addresses,
            send_drops: 0,
            send_retries: 0,
            rx_drops: 0,
            tx_hold: None,
            gso_sent: gso::GsoSent::default(),
            scratch: vec![0; 64 * 1024],
        }
    }

    /// Records an `--events` line (a failing log never stops the endpoint).
    pub(crate) fn record(&mut self, now: Instant, name: &str, fields: serde_json::Value) {
        if let Err(e) = self.log.record(now, name, fields) {
            tracing::warn!("cannot write the events file: {e}");
        }
    }

    fn should_stop(&self) -> bool {
        self.shutdown
            || (self.endpoint_handles == 0 && self.conns.is_empty() && self.listeners.is_empty())
    }

    /// Reads and discards what a connection without a handle received, so
    /// it can finish closing.
    pub(crate) fn drain_orphan(&mut self, conn: ConnId) {
        while let Ok(n) = self.core.recv(conn, &mut self.scratch) {
            if n == 0 {
                break;
            }
        }
    }

    /// Steps 3: every core event. `ports`: ports a new connection retains;
    /// `opened`: connections that became established (for the server).
    fn dispatch_events(
        &mut self,
        now: Instant,
        packet: Option<&PacketRx>,
        ports: &mut Vec<u16>,
        opened: &mut Vec<ConnId>,
    ) -> bool {
        let mut progress = false;
        while let Some(event) = self.core.poll_event() {
            progress = true;
            match event {
                Event::Connected(conn) => {
                    opened.push(conn);
                    self.record_connected(now, conn);
                    if let Some(slot) = self.conns.get_mut(&conn) {
                        slot.connected = true;
                        slot.wake_all();
                    }
                }
                Event::Incoming { listener, conn } => {
                    let Some(l) = self.listeners.get_mut(&listener) else {
                        self.core.abort(conn);
                        continue;
                    };
                    if self.core.accept(listener) != Some(conn) {
                        tracing::warn!(?conn, "incoming connection not at the accept queue's head");
                    }
                    l.queue.push_back(conn);
                    let port = l.port;
                    if let Some(w) = l.waker.take() {
                        w.wake();
                    }
                    self.conns.insert(
                        conn,
                        ConnSlot {
                            port,
                            connected: true,
                            handle: true,
                            ..ConnSlot::default()
                        },
                    );
                    ports.push(port);
                    opened.push(conn);
                    self.record_connected(now, conn);
                }
                Event::Readable(conn) => {
                    if let Some(slot) = self.conns.get_mut(&conn) {
                        if slot.handle {
                            if let Some(w) = slot.read.take() {
                                w.wake();
                            }
                        } else {
                            self.drain_orphan(conn);
                        }
                    }
                }
                Event::Writable(conn) => {
                    if let Some(w) = self.conns.get_mut(&conn).and_then(|s| s.write.take()) {
                        w.wake();
                    }
                }
                Event::RetransmissionTimeout { conn, rto, backoff } => {
                    tracing::debug!(?conn, ?rto, backoff, "retransmission timeout");
                    self.record(
                        now,
                        "retransmission-timeout",
                        json!({"conn": conn.0, "rto_ms": rto.as_secs_f64() * 1e3, "backoff": backoff}),
                    );
                }
                Event::Closed { conn, reason } => {
                    let counters = counters_json(self.core.stats());
                    if let Some(drops) = packet.and_then(|r| r.take_drops().ok()) {
                        self.rx_drops += u64::from(drops);
                    }
                    self.record(
                        now,
                        "closed",
                        // send_drops: packets of this endpoint the kernel refused
                        // for lack of a route (mid-move), handed back to the
                        // core; send_retries: sends refused for lack of buffer
                        // space and retried. gso_*: super-segments this
                        // endpoint sent so far, and the segments in them
                        // (crate::gso). rx_drops: packets the kernel dropped
                        // because this endpoint's packet socket was full, so far.
                        json!({"conn": conn.0, "reason": reason_name(reason),
                               "send_drops": self.send_drops, "send_retries": self.send_retries,
                               "rx_drops": self.rx_drops,
                               "gso_runs": self.gso_sent.runs,
                               "gso_segments": self.gso_sent.segments, "counters": counters}),
                    );
                    if let Some(slot) = self.conns.get_mut(&conn) {
                        slot.closed = Some(reason);
                        slot.wake_all();
                        if let Some(control) = slot.control.take() {
                            let _ = control.unbounded_send(ControlCmd::Closed);
                        }
                        if !slot.handle {
                            self.forget(conn);
                        }
                    }
                }
                other => self.migration_event(now, other),
            }
        }
        progress
    }

    fn record_connected(&mut self, now: Instant, conn: ConnId) {
        let info = self.core.info(conn);
        tracing::info!(?conn, "connected");
        self.record(
            now,
            "connected",
            json!({"conn": conn.0, "local": info.as_ref().map(|i| i.local.to_string()),
                   "remote": info.as_ref().map(|i| i.remote.to_string())}),
        );
    }

    /// Migration progress: to the log, and to the stream's event channel.
    fn migration_event(&mut self, now: Instant, event: Event) {
        let Some((conn, stream_event)) = StreamEvent::from_core(&event) else {
            return;
        };
        let (name, fields) = stream_event.to_json(conn);
        tracing::info!(?conn, "{name}");
        self.record(now, name, fields);
        // The server hears of this end's moves and of the peer's.
        let cmd = match &stream_event {
            StreamEvent::MigrationStarted { .. } => {
                self.core.info(conn).map(|i| ControlCmd::Moved(i.local))
            }
            StreamEvent::PeerMoved { new_remote, .. } => Some(ControlCmd::PeerMoved(*new_remote)),
            _ => None,
        };
        if let Some(slot) = self.conns.get_mut(&conn) {
            if let (Some(control), Some(cmd)) = (&slot.control, cmd) {
                let _ = control.unbounded_send(cmd);
            }
            slot.emit(stream_event);
        }
    }

    /// Wakes flush waiters whose written data is all acknowledged.
    fn wake_flushed(&mut self) {
        let (core, conns) = (&self.core, &mut self.conns);
        self.flushing.retain(|conn| {
            let Some(slot) = conns.get_mut(conn) else {
                return false;
            };
            if slot.flush.is_none() {
                return false;
            }
            if core.send_queued(*conn) == 0 {
                if let Some(w) = slot.flush.take() {
                    w.wake();
                }
                return false;
            }
            true
        });
    }

    /// The application is done with `conn`: drop its slot; its port goes
    /// once the core no longer owns it (TIME-WAIT ends).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.remove(&conn) {
            self.lingering.push(slot.port);
        }
    }

    /// Ports of forgotten connections the core let go of.
    fn released_ports(&mut self) -> Vec<u16> {
        let core = &self.core;
        let mut out = Vec::new();
        self.lingering.retain(|p| {
            if !core.owns_port(*p) {
                out.push(*p);
                false
            } else {
                true
            }
        });
        out
    }

    /// An rtnetlink event: which addresses went, which became usable.
    fn addresses_changed(&mut self, now: Instant) -> io::Result<()> {
        let current = netwatch::local_addresses()?;
        let gone: Vec<Ipv4Addr> = self.addresses.difference(&current).copied().collect();
        for addr in gone {
            tracing::info!(%addr, "address lost");
            self.record(now, "addr-lost", json!({"addr": addr.to_string()}));
            self.usable.remove(&addr);
            self.core.address_lost(now, addr);
        }
        // Usable = the source the kernel's routing picks towards a peer.
        let peers: BTreeSet<Ipv4Addr> = self
            .conns
            .keys()
            .filter_map(|c| self.core.info(*c))
            .map(|i| *i.remote.ip())
            .collect();
        for peer in peers {
            if let Ok((src, _mtu)) = route::lookup(peer) {
                if current.contains(&src) && self.usable.insert(src) {
                    tracing::info!(%src, %peer, "address usable");
                    self.record(now, "addr-new", json!({"addr": src.to_string()}));
                    self.core.address_available(now, src);
                }
            }
        }
        self.addresses = current;
        Ok(())
    }
}

/// The driver task. Returns when the endpoint stops; the error, if any, is
/// what stopped it (handles then see `EndpointClosed`).
pub(crate) async fn run(shared: Arc<Shared>) -> io::Result<()> {
    let result = drive(&shared).await;
    if let Err(e) = &result {
        tracing::error!("sustain endpoint driver failed: {e}");
    }
    finish(&shared).await;
    result
}

async fn drive(shared: &Arc<Shared>) -> io::Result<()> {
    let mut rx = Receive::new(shared);
    let mut tx = SendBatch::new();
    let mut hops = NextHops::default();
    loop {
        // A busy driver never reaches the select below, so look for address
        // and route changes on every pass too: the connections learn of a
        // lost address while a transfer runs, not after it. (GSO's next hops
        // are guarded closer still: the GSO sender reads the same listener
        // before every send, gso.rs, and leaves what it read marked here.)
        if shared.net.take_changed()? {
            net_changed(shared, &mut hops)?;
        }
        let (progress, deadline) = {
            let mut st = shared.lock();
            if st.should_stop() {
                if st.shutdown {
                    // Tell the peers rather than leave them retransmitting;
                    // connections already closed (TIME-WAIT) are left alone.
                    let open: Vec<ConnId> = st
                        .conns
                        .iter()
                        .filter(|(_, s)| s.closed.is_none())
                        .map(|(c, _)| *c)
                        .collect();
                    for conn in open {
                        st.core.abort(conn);
                    }
                }
                return Ok(());
            }
            let progress = pass(shared, &mut st, &mut rx, &mut tx, &mut hops)?;
            let deadline = match (st.core.poll_timeout(), st.tx_hold) {
                (Some(t), Some(h)) => Some(t.min(h)),
                (t, h) => t.or(h),
            };
            (progress, deadline)
        };
        if progress {
            // Let the tasks this pass woke run before the next pass.
            tokio::task::yield_now().await;
            continue;
        }
        let holding = shared.lock().tx_hold.is_some();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(shared.clock.to_std(d).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = shared.readable() => r?,
            r = shared.socket.writable(), if !tx.is_empty() && !holding => r?,
            () = shared.wake.notified() => {}
            r = shared.net.changed() => {
                r?;
                net_changed(shared, &mut hops)?;
            }
            () = sleep => {}
        }
    }
}

/// An address, route or link changed.
fn net_changed(shared: &Shared, hops: &mut NextHops) -> io::Result<()> {
    let now = shared.clock.now();
    // Routes may have changed: next hops are learned again, and a send
    // refused for lack of a route may go now.
    hops.clear();
    let mut st = shared.lock();
    st.tx_hold = None;
    st.addresses_changed(now)
}

/// The driver's receive state for whichever path receives.
enum Receive {
    Packet(Box<RxSlots>),
    Raw(RecvBatch),
}

impl Receive {
    fn new(shared: &Shared) -> Receive {
        match shared.packet {
            Some(_) => Receive::Packet(Box::default()),
            None => Receive::Raw(RecvBatch::new()),
        }
    }
}

/// Packets handed to the core per look at the clock (a raw-socket
/// batch's size).
const RECV_PER_BATCH: usize = crate::raw_socket::BATCH;

/// Step 1: everything the packet or raw socket holds, up to
/// `RECV_BATCHES_PER_PASS` batches.
fn receive(
    shared: &Shared,
    st: &mut State,
    rx: &mut Receive,
    hops: &mut NextHops,
) -> io::Result<bool> {
    let mut progress = false;
    let learn = shared.gso.is_some();
    for _ in 0..RECV_BATCHES_PER_PASS {
        let now = shared.clock.now();
        let n = match (rx as &mut Receive, &shared.packet) {
            (Receive::Packet(slots), Some(packet)) => {
                let seen = std::time::Instant::now();
                packet.drain(slots, RECV_PER_BATCH, |pkt, from| {
                    if learn {
                        hops.learn(pkt, from, seen);
                    }
                    st.core.handle_packet(now, pkt);
                })?
            }
            (Receive::Raw(batch), _) => {
                let n = shared.socket.recv_batch(batch)?;
                for pkt in batch.packets() {
                    st.core.handle_packet(now, pkt);
                }
                n
            }
            (Receive::Packet(_), None) => 0,
        };
        if n == 0 {
            break;
        }
        progress = true;
    }
    Ok(progress)
}

/// One pass of the loop (module docs, steps 1-4). True if anything moved.
fn pass(
    shared: &Arc<Shared>,
    st: &mut State,
    rx: &mut Receive,
    tx: &mut SendBatch,
    hops: &mut NextHops,
) -> io::Result<bool> {
    // 1. Everything the packet or raw socket holds.
    let mut progress = receive(shared, st, rx, hops)?;
    // 2. Timers.
    let now = shared.clock.now();
    if st.core.poll_timeout().is_some_and(|t| t <= now) {
        st.core.handle_timeout(now);
        progress = true;
    }
    // 3. Events.
    let (mut retained, mut opened) = (Vec::new(), Vec::new());
    progress |= st.dispatch_events(now, shared.packet.as_ref(), &mut retained, &mut opened);
    if let Some(server) = shared.server {
        for conn in opened {
            start_control(shared, st, conn, server);
        }
    }
    if !retained.is_empty() {
        let mut ports = shared.lock_ports();
        for port in retained {
            ports.retain(port);
        }
    }
    if !st.flushing.is_empty() {
        st.wake_flushed();
    }
    let released = st.released_ports();
    release_ports(shared, released);
    // 4. Everything the core wants to send, unless a refusal holds it.
    if st.tx_hold.is_some_and(|until| now < until) {
        return Ok(progress);
    }
    st.tx_hold = None;
    progress |= transmit(shared, st, tx, hops)?;
    Ok(progress)
}

/// Registers a migratable connection with the mobility server: its control
/// task ([`crate::mobility`]). Plain connections have nothing to report.
fn start_control(shared: &Arc<Shared>, st: &mut State, conn: ConnId, server: SocketAddrV4) {
    let Some(info) = st.core.info(conn).filter(|i| i.migratable) else {
        return;
    };
    let Some(keys) = st.core.connection_keys(conn) else {
        return;
    };
    match ControlClient::new(&keys, info.local, info.remote) {
        Ok(client) => {
            let control = mobility::spawn(shared.clone(), conn, server, client);
            if let Some(slot) = st.conns.get_mut(&conn) {
                slot.control = Some(control);
            }
        }
        Err(e) => tracing::warn!(?conn, "cannot register with the mobility server: {e}"),
    }
}

fn release_ports(shared: &Arc<Shared>, ports: Vec<u16>) {
    for port in ports {
        let last = shared.lock_ports().release(port);
        if last {
            shared.remove_port_later(port);
        }
    }
}

/// Step 4: drain the core into sendmmsg batches until it has nothing more
/// or the socket is full.
fn transmit(
    shared: &Shared,
    st: &mut State,
    tx: &mut SendBatch,
    hops: &mut NextHops,
) -> io::Result<bool> {
    let mut progress = false;
    loop {
        let now = shared.clock.now();
        while !tx.is_full() && tx.push_with(|slot| st.core.poll_transmit(now, slot)) {
            progress = true;
        }
        if tx.is_empty() {
            break;
        }
        let sent = gso::send(
            &shared.socket,
            shared.gso.as_ref(),
            &shared.net,
            tx,
            hops,
            &mut st.gso_sent,
        )?;
        if sent == 0 {
            match tx.take_refusal() {
                // The socket buffer is full: the loop waits for writability.
                None => {}
                // A device queue is full: it drains by itself; try again
                // shortly (there is no readiness to wait for).
                Some(Refusal::NoBuffer) => {
                    st.send_retries += 1;
                    st.tx_hold = Some(now + NO_BUFFER_HOLD);
                }
                // No route (a move under way): the segments never left, so
                // the core takes them back (PROTOCOL.md §7, a segment the
                // host refused) instead of counting them lost on the path,
                // and nothing is sent until the route or address event, or
                // NO_ROUTE_HOLD, whichever comes first.
                Some(Refusal::NoRoute) => {
                    let core = &mut st.core;
                    tx.discard_pending(|packet| core.handle_refused(now, packet));
                    st.tx_hold = Some(now + NO_ROUTE_HOLD);
                    progress = true;
                }
            }
            break;
        }
    }
    st.send_drops = tx.dropped;
    Ok(progress)
}

/// After the loop: let the final segments (FIN, ACK, RSTs of a shutdown)
/// leave, wake every handle, give up every port and its guard rule.
async fn finish(shared: &Arc<Shared>) {
    let mut tx = SendBatch::new();
    {
        let mut st = shared.lock();
        // No next hops known here: everything on the raw socket.
        let _ = transmit(shared, &mut st, &mut tx, &mut NextHops::default());
    }
    for _ in 0..100 {
        if tx.is_empty() {
            break;
        }
        if shared.socket.send_batch(&mut tx).unwrap_or(1) == 0 {
            if tx.take_refusal() == Some(Refusal::NoRoute) {
                tx.discard_pending(|_| {});
                break;
            }
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(10),
                shared.socket.writable(),
            )
            .await;
        }
    }
    {
        let mut st = shared.lock();
        st.stopped = true;
        for slot in st.conns.values_mut() {
            slot.wake_all();
            slot.events.clear();
        }
        for l in st.listeners.values_mut() {
            if let Some(w) = l.waker.take() {
                w.wake();
            }
        }
    }
    let shared2 = shared.clone();
    let _ = tokio::task::spawn_blocking(move || shared2.lock_ports().remove_all()).await;
    shared.stopped.notify_waiters();
}

/// The endpoint's counters as a JSON object (the `counters` of the `closed`
/// event): what the lab's negative scenarios judge a forgery by.
pub(crate) fn counters_json(stats: &Stats) -> serde_json::Value {
    let Stats {
        packets_in,
        packets_out,
        malformed,
        not_ours,
        resets_sent,
        challenge_acks,
        retransmitted_segments,
        challenge_acks_suppressed,
        syn_backlog_drops,
        resets_received,
        paws_drops,
        missing_timestamp_drops,
        fast_retransmits,
        timeouts,
        sustain_malformed,
        unknown_tokens,
        stale_requests,
        repeat_requests,
        mac_failures,
        mac_rate_limited,
        msyns_refused,
        msyn_acks_refused,
        msyns_sent,
        msyn_acks_sent,
        msyn_acks_accepted,
        migrations_started,
        migrations_completed,
        moves_accepted,
        paths_confirmed,
        address_updates_sent,
        mig_wait_entries,
        migration_timeouts,
        old_path_drops,
        ..
    } = stats;
    json!({
        "packets_in": packets_in,
        "packets_out": packets_out,
        "malformed": malformed,
        "not_ours": not_ours,
        "resets_sent": resets_sent,
        "resets_received": resets_received,
        "challenge_acks": challenge_acks,
        "challenge_acks_suppressed": challenge_acks_suppressed,
        "retransmitted_segments": retransmitted_segments,
        "syn_backlog_drops": syn_backlog_drops,
        "paws_drops": paws_drops,
        "missing_timestamp_drops": missing_timestamp_drops,
        "fast_retransmits": fast_retransmits,
        "timeouts": timeouts,
        "sustain_malformed": sustain_malformed,
        "unknown_tokens": unknown_tokens,
        "stale_requests": stale_requests,
        "repeat_requests": repeat_requests,
        "mac_failures": mac_failures,
        "mac_rate_limited": mac_rate_limited,
        "msyns_refused": msyns_refused,
        "msyn_acks_refused": msyn_acks_refused,
        "msyns_sent": msyns_sent,
        "msyn_acks_sent": msyn_acks_sent,
        "msyn_acks_accepted": msyn_acks_accepted,
        "migrations_started": migrations_started,
        "migrations_completed": migrations_completed,
        "moves_accepted": moves_accepted,
        "paths_confirmed": paths_confirmed,
        "address_updates_sent": address_updates_sent,
        "mig_wait_entries": mig_wait_entries,
        "migration_timeouts": migration_timeouts,
        "old_path_drops": old_path_drops,
    })
}

/// The close reason as the events file and error messages name it.
pub(crate) fn reason_name(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Normal => "normal",
        CloseReason::Reset => "reset by peer",
        CloseReason::TimedOut => "timed out",
        CloseReason::Aborted => "aborted",
        CloseReason::Refused => "refused",
        CloseReason::MigrationTimedOut => "migration timed out",
        CloseReason::AddressLost => "local address lost (plain TCP cannot move)",
        CloseReason::KeepaliveTimedOut => "peer gone (keep-alive probes unanswered)",
    }
}

/// The local address a connect uses towards `remote` and the MSS its route
/// allows: the route's source unless `bind` names one.
pub(crate) fn local_for(
    bind: Option<SocketAddrV4>,
    remote: SocketAddrV4,
) -> io::Result<(Ipv4Addr, u32)> {
    let (src, mtu) = route::lookup(*remote.ip())?;
    let ip = match bind {
        Some(b) if !b.ip().is_unspecified() => *b.ip(),
        _ => src,
    };
    Ok((ip, mtu))
}
