//! The `sustain-proxy` driver (PROTOCOL.md §6.9, §15.14): the datapath
//! (receive from a packet socket, or the raw socket as the fallback, as an
//! endpoint does; send on the raw socket) around the core's sans-IO relay ([`sustain_core::relay::Relay`])
//! and the control sessions with the mobility server.
//!
//! One task owns the relay. It loops: take every packet the raw socket
//! holds and hand it to the relay; fire the relay's timer; take bytes a
//! control session's reader task received and answer them; then send
//! everything the relay produced, install or remove the RST-guard rule of
//! every port allocated or released, and log every event, until none of
//! these makes progress. As in the host's driver, nothing here parses a
//! segment or decides anything.
//!
//! Ports are owned the way an [`crate::Endpoint`] owns its ports
//! (`ports.rs`): the whole relay range gets one RST-guard rule at start-up,
//! and a relay port, when first allocated, a kernel reservation (a bound,
//! never-listening socket, so no kernel connection takes it); it keeps both
//! until the proxy exits
//! (a released relay's ends may still send there, and a kernel RST would
//! reset them). The receiving socket's BPF filter covers the whole relay port
//! range (at most `raw_socket::MAX_FILTER_PORTS` ports).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use serde_json::{json, Value};
use sustain_core::relay::control::{split, ProxySession};
use sustain_core::relay::{Relay, RelayConfig, RelayEvent, RelaySecret, RelayStats, SecretError};
use sustain_core::time::Instant;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::gso::{self, GsoSender, GsoSent, NextHops};
use crate::netwatch::NetEvents;
use crate::os_random::OsRandom;
use crate::packet_rx::{self, LinkSource, PacketRx, RxSlots};
use crate::ports::Ports;
use crate::raw_socket::{RawSocket, RawSocketError, RecvBatch, SendBatch, MAX_FILTER_PORTS};
use crate::rst_guard::{RstGuard, RstGuardError};

/// Chunks waiting for the main task, all sessions together.
const INBOX: usize = 256;
/// Messages waiting to be written to one session.
const OUTBOX: usize = 64;
/// Bytes buffered per session before a whole message (messages are at
/// most 256 bytes; anything more is a misbehaving peer).
const MAX_SESSION_BUFFER: usize = 4096;
/// recvmmsg batches per pass before timers and control get a turn.
const RECV_BATCHES_PER_PASS: usize = 8;

/// Why the proxy could not start (each a clear message for the operator).
#[derive(Debug, Error)]
pub enum ProxyStartError {
    /// The relay secret file could not be read.
    #[error("cannot read the relay secret file {path}: {source}")]
    SecretFile {
        /// The file's path.
        path: String,
        /// The read error.
        source: io::Error,
    },
    /// The relay secret file is not 64 hex digits.
    #[error("relay secret file {path} is malformed: {source}")]
    SecretMalformed {
        /// The file's path.
        path: String,
        /// What is wrong with its contents.
        source: SecretError,
    },
    /// `--ports` is not a valid `LO-HI` range.
    #[error("--ports must be LO-HI with 1 <= LO <= HI <= 65535, got {0:?}")]
    Ports(String),
    /// `--ports` spans more ports than the raw socket's BPF filter holds.
    #[error("--ports spans {0} ports; the raw socket's filter holds at most {MAX_FILTER_PORTS}")]
    TooManyPorts(usize),
    /// The raw socket could not be opened.
    #[error(transparent)]
    RawSocket(#[from] RawSocketError),
    /// The relay port range's BPF filter could not be installed.
    #[error("installing the raw socket's port filter: {0}")]
    Filter(io::Error),
    /// The RST-guard rule for the relay port range could not be installed.
    #[error(transparent)]
    RstGuard(#[from] RstGuardError),
    /// The control listener could not be bound.
    #[error("binding the control address {addr}: {source}")]
    Control {
        /// The `--control` address.
        addr: SocketAddrV4,
        /// The bind error.
        source: io::Error,
    },
}

/// Why the running proxy stopped with an error.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// Receiving or sending on the raw socket (or the packet socket) failed.
    #[error("raw socket: {0}")]
    Socket(io::Error),
    /// Accepting a control session from the mobility server failed.
    #[error("accepting a control session: {0}")]
    Accept(io::Error),
    /// Appending to the `--events` log failed.
    #[error("writing the event log: {0}")]
    Events(io::Error),
    /// The rtnetlink listener (route changes, for the GSO sender) could
    /// not be opened.
    #[error("subscribing to rtnetlink route and link events: {0}")]
    Netlink(io::Error),
}

/// Reads `--relay-secret FILE`: 64 hex digits (32 bytes), surrounding
/// whitespace allowed.
pub fn read_secret(path: &Path) -> Result<RelaySecret, ProxyStartError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProxyStartError::SecretFile {
        path: shown.clone(),
        source,
    })?;
    RelaySecret::from_hex(&text).map_err(|source| ProxyStartError::SecretMalformed {
        path: shown,
        source,
    })
}

/// Parses `--ports LO-HI`.
pub fn parse_ports(text: &str) -> Result<(u16, u16), ProxyStartError> {
    let bad = || ProxyStartError::Ports(text.to_owned());
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    let count = usize::from(hi - lo) + 1;
    if count > MAX_FILTER_PORTS {
        return Err(ProxyStartError::TooManyPorts(count));
    }
    Ok((lo, hi))
}

/// What `sustain-proxy` was started with.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The proxy's global address (relay ports live there).
    pub bind: Ipv4Addr,
    /// Where the mobility server's control sessions arrive.
    pub control: SocketAddrV4,
    /// The relay port range, `LO..=HI` (`--ports`).
    pub ports: (u16, u16),
}

/// The opened resources, ready to serve: split from [`serve`] so the
/// binary can print `listening` only once everything is in place.
pub struct Proxy {
    opts: ProxyOptions,
    secret: RelaySecret,
    socket: RawSocket,
    /// Receives, as an endpoint's does ([`crate::packet_rx`]); `None`:
    /// the raw socket receives (the fallback).
    packet: Option<PacketRx>,
    /// Why the packet socket is not used, if it is not.
    fallback: Option<String>,
    ports: Ports,
    control: TcpListener,
}

impl Proxy {
    /// Opens the raw socket (filtered on the relay ports), the RST guard
    /// and the control listener. Needs CAP_NET_RAW and CAP_NET_ADMIN.
    pub async fn open(opts: ProxyOptions, secret: RelaySecret) -> Result<Proxy, ProxyStartError> {
        let socket = RawSocket::open(crate::SUSTAIN_MARK)?;
        let ports: Vec<u16> = (opts.ports.0..=opts.ports.1).collect();
        let mut guard = RstGuard::new(crate::SUSTAIN_MARK)?;
        let (packet, fallback) = match crate::endpoint::open_packet_rx(
            &mut guard,
            // Sized as an end's: one relayed connection at the ends'
            // default window fits.
            packet_rx::rcvbuf_for_window(sustain_core::tcp::Config::default().recv_buffer),
        ) {
            Ok(packet) => (Some(packet), None),
            Err(why) => (None, Some(why)),
        };
        match &packet {
            Some(packet) => {
                packet
                    .set_port_filter(&ports)
                    .map_err(ProxyStartError::Filter)?;
                socket.set_port_filter(&[])
            }
            None => socket.set_port_filter(&ports),
        }
        .map_err(ProxyStartError::Filter)?;
        let mut ports = Ports::new(guard);
        // One RST-guard rule for the whole relay range, now: allocating a
        // port is then only its kernel reservation, and the grant leaves
        // without an iptables run (milliseconds) in the way of the hosts'
        // MSYNs (the relay's reconnect latency).
        ports.guard_range(opts.ports.0, opts.ports.1)?;
        let control =
            TcpListener::bind(opts.control)
                .await
                .map_err(|source| ProxyStartError::Control {
                    addr: opts.control,
                    source,
                })?;
        Ok(Proxy {
            opts,
            secret,
            socket,
            packet,
            fallback,
            ports,
            control,
        })
    }

    /// The control address actually bound (port 0 picks one).
    pub fn control_addr(&self) -> io::Result<SocketAddr> {
        self.control.local_addr()
    }
}

/// A session reader's report (session_io).
type Inbound = crate::session_io::Inbound<u64>;

struct Session {
    core: ProxySession,
    buffer: Vec<u8>,
    writer: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// Runs the proxy until `shutdown` completes; returns the relay's final
/// counters. The caller has logged `listening`.
pub async fn serve(
    proxy: Proxy,
    clock: Clock,
    events: &mut EventLog,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RelayStats, ProxyError> {
    let Proxy {
        opts,
        secret,
        socket,
        packet,
        fallback,
        mut ports,
        control,
    } = proxy;
    // Forwarded bulk data leaves as GSO super-segments, as an endpoint's
    // does (crate::gso): next hops are learned from the packet socket's
    // link addresses, so only with it.
    let mut out = Out {
        socket: &socket,
        gso: packet.as_ref().and_then(|_| crate::endpoint::open_gso()),
        net: NetEvents::open().map_err(ProxyError::Netlink)?,
        hops: NextHops::default(),
        sent: GsoSent::default(),
    };
    let tx_path = if out.gso.is_some() {
        "raw-socket+gso"
    } else {
        "raw-socket"
    };
    let datapath = match &fallback {
        None => json!({"rx": "packet-socket", "tx": tx_path}),
        Some(why) => json!({"rx": "raw-socket", "tx": tx_path, "fallback": why}),
    };
    events
        .record(clock.now(), "datapath", datapath)
        .map_err(ProxyError::Events)?;
    // Ports owned so far (never given up before exit, see the module doc).
    let mut owned = BTreeSet::new();
    let cfg = RelayConfig {
        addr: opts.bind,
        ports: opts.ports,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(cfg, secret.clone(), Box::new(OsRandom::new()));
    let mut rng = OsRandom::new();
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let mut next_session = 0u64;
    let (inbox_tx, mut inbox) = mpsc::channel::<Inbound>(INBOX);
    let mut rx = RecvBatch::new();
    let mut slots = Box::<RxSlots>::default();
    let mut tx = SendBatch::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // One pass: packets, timers, transmit, events.
        let mut progress = false;
        for _ in 0..RECV_BATCHES_PER_PASS {
            let now = clock.now();
            let seen = std::time::Instant::now();
            let mut failed = None;
            let mut input = |pkt: &[u8], from: Option<&LinkSource>| {
                if let (true, Some(from)) = (out.gso.is_some(), from) {
                    out.hops.learn(pkt, from, seen);
                }
                if failed.is_none() {
                    if let Err(e) = forward(&mut out, &mut relay, &mut tx, now, pkt) {
                        failed = Some(e);
                    }
                }
            };
            let n = match &packet {
                Some(packet) => packet
                    .drain(&mut slots, crate::raw_socket::BATCH, |pkt, from| {
                        input(pkt, Some(from));
                    })
                    .map_err(ProxyError::Socket)?,
                None => {
                    let n = socket.recv_batch(&mut rx).map_err(ProxyError::Socket)?;
                    rx.packets().for_each(|pkt| input(pkt, None));
                    n
                }
            };
            if let Some(e) = failed {
                return Err(ProxyError::Socket(e));
            }
            if n == 0 {
                break;
            }
            progress = true;
        }
        let now = clock.now();
        if relay.poll_timeout().is_some_and(|t| t <= now) {
            relay.handle_timeout(now);
            progress = true;
        }
        progress |= transmit(&mut out, &mut relay, &mut tx)?;
        let owner = PortOwner {
            bind: opts.bind,
            ports: &mut ports,
            owned: &mut owned,
        };
        after_events(now, &mut relay, owner, &mut sessions, events)?;
        if progress {
            tokio::task::yield_now().await;
            continue;
        }
        let deadline = relay.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(clock.to_std(d).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            r = readable(&socket, packet.as_ref()) => r.map_err(ProxyError::Socket)?,
            r = socket.writable(), if !tx.is_empty() => r.map_err(ProxyError::Socket)?,
            accepted = control.accept() => {
                let (stream, peer) = accepted.map_err(ProxyError::Accept)?;
                next_session += 1;
                open(&mut sessions, next_session, stream, &secret, &inbox_tx);
                events
                    .record(clock.now(), "control-session", json!({"peer": peer.to_string()}))
                    .map_err(ProxyError::Events)?;
            }
            Some(inbound) = inbox.recv() => {
                let now = clock.now();
                match inbound {
                    Inbound::Data(id, bytes) => {
                        let replies = control_input(now, id, &bytes, &mut sessions, &mut relay, &mut rng, events)?;
                        // A granted port is owned (RST guard) before the
                        // grant leaves: the hosts' MSYNs follow it closely.
                        let owner = PortOwner {
                            bind: opts.bind,
                            ports: &mut ports,
                            owned: &mut owned,
                        };
                        after_events(now, &mut relay, owner, &mut sessions, events)?;
                        send_replies(id, replies, &mut sessions, now, events)?;
                    }
                    Inbound::Closed(id) => {
                        if let Some(s) = sessions.remove(&id) {
                            s.reader.abort();
                        }
                    }
                }
            }
            () = sleep => {}
        }
    }
    for (_, s) in sessions.drain() {
        s.reader.abort();
    }
    tracing::info!(
        gso_runs = out.sent.runs,
        gso_segments = out.sent.segments,
        "forwarded as GSO super-segments"
    );
    let stats = relay.stats().clone();
    let _ = tokio::task::spawn_blocking(move || ports.remove_all()).await;
    Ok(stats)
}

/// Where the proxy's packets leave: GSO super-segments for runs of
/// forwarded bulk data towards a known next hop, the raw socket for the
/// rest ([`gso::send`]).
struct Out<'a> {
    socket: &'a RawSocket,
    gso: Option<GsoSender>,
    /// Route and link changes, read before every GSO send ([`gso::send`]).
    net: NetEvents,
    hops: NextHops,
    sent: GsoSent,
}

impl Out<'_> {
    /// Sends what `tx` holds, in order; how many packets left (or were
    /// given up: a packet the kernel refuses is dropped, as a router drops
    /// what it cannot queue; the ends' TCPs recover it).
    fn send(&mut self, tx: &mut SendBatch) -> io::Result<usize> {
        let n = gso::send(
            self.socket,
            self.gso.as_ref(),
            &self.net,
            tx,
            &mut self.hops,
            &mut self.sent,
        )?;
        if n == 0 && tx.take_refusal().is_some() {
            tx.drop_first();
            return Ok(1);
        }
        Ok(n)
    }
}

/// One received segment into the relay; a forwarded one goes straight
/// into a send slot.
fn forward(
    out: &mut Out<'_>,
    relay: &mut Relay,
    tx: &mut SendBatch,
    now: Instant,
    pkt: &[u8],
) -> io::Result<()> {
    if tx.is_full() {
        out.send(tx)?;
    }
    if tx.is_full() {
        // The socket is full: the relay queues the copy.
        relay.handle_packet(now, pkt);
    } else {
        tx.push_with(|slot| relay.handle_packet_into(now, pkt, slot));
    }
    Ok(())
}

async fn readable(socket: &RawSocket, packet: Option<&PacketRx>) -> io::Result<()> {
    match packet {
        Some(packet) => packet.readable().await,
        None => socket.readable().await,
    }
}

fn transmit(out: &mut Out<'_>, relay: &mut Relay, tx: &mut SendBatch) -> Result<bool, ProxyError> {
    let mut progress = false;
    loop {
        while !tx.is_full() && tx.push_with(|slot| relay.poll_transmit(slot)) {
            progress = true;
        }
        if tx.is_empty() {
            break;
        }
        if out.send(tx).map_err(ProxyError::Socket)? == 0 {
            break;
        }
    }
    Ok(progress)
}

fn open(
    sessions: &mut HashMap<u64, Session>,
    id: u64,
    stream: TcpStream,
    secret: &RelaySecret,
    inbox: &mpsc::Sender<Inbound>,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (writer, outbox) = mpsc::channel(OUTBOX);
    tokio::spawn(crate::session_io::write_loop(write, outbox));
    let reader = tokio::spawn(crate::session_io::read_loop(id, read, inbox.clone()));
    sessions.insert(
        id,
        Session {
            core: ProxySession::new(secret.clone()),
            buffer: Vec::new(),
            writer,
            reader,
        },
    );
}

/// Bytes from a control session: frame, hand each message to the session's
/// state machine, return the answers. Any refusal closes the session
/// (PROTOCOL.md §15.14) and is logged.
fn control_input(
    now: Instant,
    id: u64,
    bytes: &[u8],
    sessions: &mut HashMap<u64, Session>,
    relay: &mut Relay,
    rng: &mut OsRandom,
    events: &mut EventLog,
) -> Result<Vec<Vec<u8>>, ProxyError> {
    let mut replies = Vec::new();
    let Some(s) = sessions.get_mut(&id) else {
        return Ok(replies);
    };
    s.buffer.extend_from_slice(bytes);
    let mut failure = None;
    if s.buffer.len() > MAX_SESSION_BUFFER {
        failure = Some("oversized".to_owned());
    }
    while failure.is_none() {
        match split(&s.buffer) {
            Ok(None) => break,
            Ok(Some(len)) => {
                let message: Vec<u8> = s.buffer.drain(..len).collect();
                match s.core.handle(now, &message, relay, rng) {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => {}
                    Err(e) => failure = Some(e.to_string()),
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
    }
    if let Some(reason) = failure {
        if let Some(s) = sessions.remove(&id) {
            s.reader.abort();
        }
        events
            .record(now, "control-rejected", json!({ "reason": reason }))
            .map_err(ProxyError::Events)?;
    }
    Ok(replies)
}

/// Writes a session's answers; a session that does not read them is
/// closed.
fn send_replies(
    id: u64,
    replies: Vec<Vec<u8>>,
    sessions: &mut HashMap<u64, Session>,
    now: Instant,
    events: &mut EventLog,
) -> Result<(), ProxyError> {
    let Some(s) = sessions.get_mut(&id) else {
        return Ok(());
    };
    if replies.into_iter().any(|r| s.writer.try_send(r).is_err()) {
        if let Some(s) = sessions.remove(&id) {
            s.reader.abort();
        }
        events
            .record(now, "control-rejected", json!({ "reason": "slow reader" }))
            .map_err(ProxyError::Events)?;
    }
    Ok(())
}

/// The proxy's owned relay ports.
struct PortOwner<'a> {
    bind: Ipv4Addr,
    ports: &'a mut Ports,
    owned: &'a mut BTreeSet<u16>,
}

/// Relay events: a port is owned (reservation, RST guard) when first
/// allocated, every event is logged, releases are reported on the control
/// sessions.
fn after_events(
    now: Instant,
    relay: &mut Relay,
    owner: PortOwner<'_>,
    sessions: &mut HashMap<u64, Session>,
    events: &mut EventLog,
) -> Result<(), ProxyError> {
    while let Some(event) = relay.poll_event() {
        // The reservation must be in place before the first MSYN, which
        // needs a round trip to the hosts (RelayAssignment) first; the
        // range's RST-guard rule is (`Proxy::open`). Once per port for the
        // proxy's life.
        if let RelayEvent::Allocated { port } = event {
            if !owner.owned.contains(&port) {
                match owner.ports.open(SocketAddrV4::new(owner.bind, port)) {
                    Ok(_) => {
                        owner.owned.insert(port);
                    }
                    Err(e) => {
                        tracing::warn!("owning relay port {port}: {e}; releasing it");
                        relay.release(port);
                    }
                }
            }
        }
        // A released port keeps its rule until the proxy exits: the end
        // that did not move keeps sending there until the server moves it
        // (§6.9 step 7), and a kernel RST would carry SEQ = its own ACK,
        // exactly its RCV.NXT, and reset the connection (RFC 5961 lets an
        // exact RST through).
        if let RelayEvent::Released { port, reason } = event {
            for s in sessions.values_mut() {
                if let Some(bytes) = s.core.closed(port, reason) {
                    let _ = s.writer.try_send(bytes);
                }
            }
        }
        let (name, fields) = event_json(&event);
        events
            .record(now, name, fields)
            .map_err(ProxyError::Events)?;
    }
    Ok(())
}

/// The event log line of a relay event.
pub fn event_json(event: &RelayEvent) -> (&'static str, Value) {
    match event {
        RelayEvent::LegAttached {
            port,
            leg,
            remote,
            behind_napt,
        } => (
            "leg-attached",
            json!({"port": port, "leg": leg, "remote": remote.to_string(),
                   "behind_napt": behind_napt}),
        ),
        RelayEvent::Allocated { port } => ("relay-allocated", json!({ "port": port })),
        RelayEvent::Spliced { port } => ("spliced", json!({ "port": port })),
        RelayEvent::Refused { port, leg } => ("refused", json!({"port": port, "leg": leg})),
        RelayEvent::Released { port, reason } => (
            "released",
            json!({"port": port, "reason": format!("{reason:?}")}),
        ),
    }
}

/// The relay's counters as JSON (the `stopped` event).
pub fn stats_json(s: &RelayStats) -> Value {
    json!({
        "packets_in": s.packets_in, "malformed": s.malformed, "allocated": s.allocated,
        "released": s.released, "msyns": s.msyns, "unknown_port": s.unknown_port,
        "unknown_ticket": s.unknown_ticket, "bad_mac": s.bad_mac, "replayed": s.replayed,
        "rate_limited": s.rate_limited, "not_relay_msyn": s.not_relay_msyn,
        "refused_global": s.refused_global, "msyn_acks_sent": s.msyn_acks_sent,
        "confirms": s.confirms, "forwarded": s.forwarded,
        "dropped_unconfirmed": s.dropped_unconfirmed, "stray": s.stray,
        "acks_clamped": s.acks_clamped,
        "window_acks": s.window_acks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_secrets_give_clear_errors() {
        assert_eq!(parse_ports("40000-40999").unwrap(), (40000, 40999));
        for bad in ["", "40000", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(
                matches!(parse_ports(bad), Err(ProxyStartError::Ports(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_ports("1-5000"),
            Err(ProxyStartError::TooManyPorts(5000))
        ));
        let dir = std::env::temp_dir().join(format!("sustain-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let err = read_secret(&missing).unwrap_err();
        assert!(matches!(err, ProxyStartError::SecretFile { .. }));
        assert!(err.to_string().contains("missing"), "{err}");
        let short = dir.join("short");
        std::fs::write(&short, "abcd\n").unwrap();
        let err = read_secret(&short).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(read_secret(&good).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
