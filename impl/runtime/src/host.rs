//! The reference host: one [`Endpoint`] on a raw socket, serving file
//! transfers. Used by the `sustain-host` binary and the lab.
//!
//! The loop is single-threaded and batch-oriented: drain every packet the
//! socket holds, let the core react, pump the applications, then send
//! everything the core wants to send in sendmmsg batches. Only when a pass
//! makes no progress does it sleep, until the socket is readable, the core's
//! next timer, or a shutdown signal.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::pin::pin;

use serde_json::json;
use sha2::{Digest, Sha256};
use sustain_core::tcp::{CloseReason, Config, ConnId, Endpoint, Event, Stats};
use sustain_core::time::Instant;
use thiserror::Error;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::netwatch::{self, NetWatcher};
use crate::os_random::OsRandom;
use crate::raw_socket::{RawSocket, RawSocketError, RecvBatch, SendBatch};
use crate::route::{self, PortReservation};
use crate::rst_guard::{RstGuard, RstGuardError};
use crate::SUSTAIN_MARK;

/// What the host does with each connection.
#[derive(Debug, Clone)]
pub enum Transfer {
    /// Send this file, then close.
    Send(PathBuf),
    /// Receive into this file until the peer closes.
    Recv(PathBuf),
}

/// Who opens the connection.
#[derive(Debug, Clone)]
pub enum Role {
    Connect {
        remote: SocketAddrV4,
        /// Local address and port; unspecified parts are chosen by the kernel's routing.
        bind: Option<SocketAddrV4>,
    },
    Listen {
        bind: SocketAddrV4,
        /// Keep accepting connections until shut down.
        keep: bool,
    },
}

#[derive(Debug, Clone)]
pub struct HostOptions {
    pub role: Role,
    pub transfer: Transfer,
    pub events: Option<PathBuf>,
    pub config: Config,
    /// Derive the MSS from the route's MTU (connect only).
    pub mss_from_route: bool,
    /// Compute the sha256 of the transferred bytes (off only for benchmarks:
    /// without SHA extensions hashing costs more CPU than the TCP itself).
    pub digest: bool,
}

/// Result of one connection's transfer: the JSON summary line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub bytes: u64,
    /// `None` when the host runs with `digest: false`.
    pub sha256: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Error)]
pub enum HostError {
    #[error(transparent)]
    Socket(#[from] RawSocketError),
    #[error("cannot install the kernel-RST guard: {0}")]
    Guard(#[from] RstGuardError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

/// Per-connection application state.
struct Session {
    started: Instant,
    bytes: u64,
    hasher: Option<Sha256>,
    source: Option<File>,
    /// Bytes read from the file but not yet accepted by the endpoint.
    pending: Vec<u8>,
    pending_off: usize,
    sink: Option<BufWriter<File>>,
    close_requested: bool,
}

const CHUNK: usize = 256 * 1024;

impl Session {
    fn new(
        now: Instant,
        transfer: &Transfer,
        index: usize,
        many: bool,
        digest: bool,
    ) -> Result<Session, HostError> {
        let (source, sink) = match transfer {
            Transfer::Send(p) => (
                Some(File::open(p).map_err(io_err(format!("opening {}", p.display())))?),
                None,
            ),
            Transfer::Recv(p) => {
                // With --keep each connection gets its own file: PATH.N.
                let path = if many {
                    PathBuf::from(format!("{}.{index}", p.display()))
                } else {
                    p.clone()
                };
                let f =
                    File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
                (None, Some(BufWriter::with_capacity(CHUNK, f)))
            }
        };
        Ok(Session {
            started: now,
            bytes: 0,
            hasher: digest.then(Sha256::new),
            source,
            pending: Vec::with_capacity(CHUNK),
            pending_off: 0,
            sink,
            close_requested: false,
        })
    }

    /// Moves data between the file and the endpoint; true if anything moved.
    fn pump(&mut self, ep: &mut Endpoint, conn: ConnId, buf: &mut [u8]) -> Result<bool, HostError> {
        let mut progress = false;
        if let Some(file) = self.source.as_mut() {
            loop {
                if self.pending_off == self.pending.len() {
                    self.pending.resize(CHUNK, 0);
                    let n = file
                        .read(&mut self.pending)
                        .map_err(io_err("reading the send file"))?;
                    self.pending.truncate(n);
                    self.pending_off = 0;
                    if n == 0 {
                        break;
                    }
                }
                let accepted = ep
                    .send(conn, &self.pending[self.pending_off..])
                    .map_err(|e| HostError::Connection(e.to_string()))?;
                if accepted == 0 {
                    break;
                }
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&self.pending[self.pending_off..self.pending_off + accepted]);
                }
                self.pending_off += accepted;
                self.bytes += accepted as u64;
                progress = true;
            }
            if self.pending.is_empty() && !self.close_requested {
                self.close_requested = true;
                ep.close(conn)
                    .map_err(|e| HostError::Connection(e.to_string()))?;
                progress = true;
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            loop {
                let n = ep
                    .recv(conn, buf)
                    .map_err(|e| HostError::Connection(e.to_string()))?;
                if n == 0 {
                    break;
                }
                sink.write_all(&buf[..n])
                    .map_err(io_err("writing the receive file"))?;
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                self.bytes += n as u64;
                progress = true;
            }
            if ep.recv_finished(conn) && !self.close_requested {
                self.close_requested = true;
                sink.flush().map_err(io_err("writing the receive file"))?;
                ep.close(conn)
                    .map_err(|e| HostError::Connection(e.to_string()))?;
                progress = true;
            }
        }
        Ok(progress)
    }

    fn finish(self, now: Instant) -> Summary {
        Summary {
            bytes: self.bytes,
            sha256: self.hasher.map(|h| hex::encode(h.finalize())),
            seconds: (now - self.started).as_secs_f64(),
        }
    }
}

/// The endpoint's counters as a JSON object (the `counters` of the `closed`
/// event): what the lab's negative scenarios judge a forgery by (a refused
/// MSYN, a challenge ACK instead of a reset). Endpoint-wide: this host runs
/// one connection per transfer.
fn counters_json(stats: &Stats) -> serde_json::Value {
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

fn reason_name(r: CloseReason) -> &'static str {
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

/// Runs the host until its transfer(s) finish, a connection fails (error),
/// or `shutdown` resolves (returns `Interrupted` unless in --keep mode, where
/// a shutdown is the normal end). `on_summary` is called for each finished
/// connection.
pub async fn run(
    opts: HostOptions,
    shutdown: impl Future<Output = &'static str>,
    mut on_summary: impl FnMut(&Summary),
) -> Result<Vec<Summary>, HostError> {
    let clock = Clock::new();
    let mut events =
        EventLog::open(opts.events.as_deref()).map_err(io_err("opening the events file"))?;
    let socket = RawSocket::open(SUSTAIN_MARK)?;
    let mut guard = RstGuard::new(SUSTAIN_MARK)?;
    let mut config = opts.config.clone();

    // Reserve our local port in the kernel and work out addresses.
    let (local, remote, _reservation): (SocketAddrV4, Option<SocketAddrV4>, PortReservation) =
        match &opts.role {
            Role::Connect { remote, bind } => {
                let (src, mtu) =
                    route::lookup(*remote.ip()).map_err(io_err(format!("no route to {remote}")))?;
                let want = bind.unwrap_or(SocketAddrV4::new(src, 0));
                let ip = if want.ip().is_unspecified() {
                    src
                } else {
                    *want.ip()
                };
                // Reserve on every address (0.0.0.0) unless one was named:
                // after a move the port must still be ours on the new address.
                let reserve_ip = if want.ip().is_unspecified() {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    ip
                };
                let (port, held) = route::reserve_port(SocketAddrV4::new(reserve_ip, want.port()))
                    .map_err(io_err(format!("reserving local port {}", want.port())))?;
                if opts.mss_from_route {
                    config.mss = (mtu.saturating_sub(40)).clamp(536, 65495) as u16;
                }
                (SocketAddrV4::new(ip, port), Some(*remote), held)
            }
            Role::Listen { bind, .. } => {
                let (port, held) = route::reserve_port(*bind)
                    .map_err(io_err(format!("port {} is in use", bind.port())))?;
                (SocketAddrV4::new(*bind.ip(), port), None, held)
            }
        };
    guard.add_port(local.port())?;
    socket
        .set_port_filter(&[local.port()])
        .map_err(io_err("attaching the port filter"))?;

    let mut ep = Endpoint::new(config, Box::new(OsRandom::new()));
    let keep = matches!(opts.role, Role::Listen { keep: true, .. });
    let mut watcher =
        NetWatcher::start().map_err(io_err("subscribing to rtnetlink address events"))?;
    let mut addresses = netwatch::local_addresses().map_err(io_err("listing local addresses"))?;
    // Addresses the core may use: every address present at start, then
    // each new one once a route through it exists.
    let mut usable: BTreeSet<Ipv4Addr> = addresses.clone();
    let mut sessions: HashMap<ConnId, Session> = HashMap::new();
    let mut accepted = 0usize;
    let mut summaries = Vec::new();
    let listener = match remote {
        Some(remote) => {
            let conn = ep
                .connect(clock.now(), local, remote)
                .map_err(|e| HostError::Connection(format!("connect to {remote}: {e}")))?;
            sessions.insert(
                conn,
                Session::new(clock.now(), &opts.transfer, 0, false, opts.digest)?,
            );
            None
        }
        None => Some(
            ep.listen(local)
                .map_err(|e| HostError::Connection(format!("listen on {local}: {e}")))?,
        ),
    };
    tracing::info!(%local, ?remote, "host started");
    if listener.is_some() {
        // From here on SYNs reach our TCP, not the kernel's RST: peers
        // (and tests) can wait for this line instead of racing the start.
        let _ = events.record(
            clock.now(),
            "listening",
            json!({"local": local.to_string()}),
        );
    }

    let mut rx = RecvBatch::new();
    let mut tx = SendBatch::new();
    let mut buf = vec![0u8; CHUNK];
    let mut shutdown = pin!(shutdown);
    let mut done = false;
    let mut interrupted = None;

    while !done {
        let mut progress = false;
        // 1. Everything the socket holds.
        for _ in 0..64 {
            let n = socket.recv_batch(&mut rx).map_err(io_err("receiving"))?;
            if n == 0 {
                break;
            }
            let now = clock.now();
            tracing::trace!(packets = n, ?now, "received");
            for pkt in rx.packets() {
                ep.handle_packet(now, pkt);
            }
            progress = true;
        }
        // 2. Timers.
        let now = clock.now();
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
            progress = true;
        }
        // 3. Events.
        while let Some(event) = ep.poll_event() {
            match event {
                Event::Connected(conn) => {
                    let info = ep.info(conn);
                    tracing::info!(?conn, "connected");
                    let _ = events.record(
                        now,
                        "connected",
                        json!({"conn": conn.0, "local": info.as_ref().map(|i| i.local.to_string()),
                               "remote": info.as_ref().map(|i| i.remote.to_string())}),
                    );
                }
                Event::Incoming { listener: l, conn } => {
                    if Some(l) != listener || (!keep && accepted > 0) {
                        ep.abort(conn);
                        continue;
                    }
                    if let Some(c) = ep.accept(l) {
                        debug_assert_eq!(c, conn);
                    }
                    let info = ep.info(conn);
                    let _ = events.record(
                        now,
                        "connected",
                        json!({"conn": conn.0, "local": info.as_ref().map(|i| i.local.to_string()),
                               "remote": info.as_ref().map(|i| i.remote.to_string())}),
                    );
                    sessions.insert(
                        conn,
                        Session::new(now, &opts.transfer, accepted, keep, opts.digest)?,
                    );
                    accepted += 1;
                }
                Event::RetransmissionTimeout { conn, rto, backoff } => {
                    tracing::debug!(?conn, ?rto, backoff, "retransmission timeout");
                    let _ = events.record(
                        now,
                        "retransmission-timeout",
                        json!({"conn": conn.0, "rto_ms": rto.as_secs_f64() * 1e3, "backoff": backoff}),
                    );
                }
                Event::Closed { conn, reason } => {
                    let _ = events.record(
                        now,
                        "closed",
                        // send_drops: packets of this host the kernel refused
                        // (no buffer, or no route mid-move), counted as lost.
                        json!({"conn": conn.0, "reason": reason_name(reason), "send_drops": tx.dropped,
                               "counters": counters_json(ep.stats())}),
                    );
                    let Some(mut session) = sessions.remove(&conn) else {
                        continue;
                    };
                    // Drain what is still readable before judging the outcome.
                    let _ = session.pump(&mut ep, conn, &mut buf);
                    let complete = reason == CloseReason::Normal && session.close_requested;
                    if complete {
                        if let Some(sink) = session.sink.as_mut() {
                            sink.flush().map_err(io_err("writing the receive file"))?;
                        }
                        let summary = session.finish(now);
                        on_summary(&summary);
                        summaries.push(summary);
                    } else if keep {
                        tracing::warn!(?conn, reason = reason_name(reason), "connection failed");
                    } else {
                        return Err(HostError::Connection(format!(
                            "connection {} after {} bytes",
                            reason_name(reason),
                            session.bytes
                        )));
                    }
                    if !keep {
                        done = true;
                    }
                }
                Event::MigrationStarted { conn, mode } => {
                    let _ = events.record(
                        now,
                        "migration-started",
                        json!({"conn": conn.0, "mode": format!("{mode:?}").to_lowercase()}),
                    );
                }
                Event::MsynSent { conn, attempt } => {
                    tracing::info!(?conn, attempt, "MSYN sent");
                    let _ = events.record(
                        now,
                        "msyn-sent",
                        json!({"conn": conn.0, "attempt": attempt}),
                    );
                }
                Event::MigWait { conn, cause } => {
                    tracing::info!(?conn, ?cause, "MIG_WAIT");
                    let _ = events.record(
                        now,
                        "mig-wait",
                        json!({"conn": conn.0, "cause": format!("{cause:?}")}),
                    );
                }
                Event::Resumed { conn, stall } => {
                    tracing::info!(?conn, ?stall, "resumed");
                    let _ = events.record(
                        now,
                        "resumed",
                        json!({"conn": conn.0, "stall_ms": stall.as_secs_f64() * 1e3}),
                    );
                }
                Event::MigrationFailed { conn, reason } => {
                    tracing::warn!(?conn, ?reason, "migration failed");
                    let _ = events.record(
                        now,
                        "migration-failed",
                        json!({"conn": conn.0, "reason": format!("{reason:?}")}),
                    );
                }
                Event::PeerMoved {
                    conn,
                    new_remote,
                    behind_napt,
                } => {
                    tracing::info!(?conn, %new_remote, behind_napt, "peer moved");
                    let _ = events.record(
                        now,
                        "peer-moved",
                        json!({"conn": conn.0, "remote": new_remote.to_string(), "behind_napt": behind_napt}),
                    );
                }
                Event::Readable(_) | Event::Writable(_) => {}
            }
        }
        // 4. Applications.
        for (conn, session) in sessions.iter_mut() {
            progress |= session.pump(&mut ep, *conn, &mut buf)?;
        }
        // 5. Everything the endpoint wants to send.
        loop {
            let now = clock.now();
            while !tx.is_full() && tx.push_with(|slot| ep.poll_transmit(now, slot)) {
                progress = true;
            }
            if tx.is_empty() {
                break;
            }
            let sent = socket.send_batch(&mut tx).map_err(io_err("sending"))?;
            tracing::trace!(sent, ?now, "sent");
            if sent == 0 {
                break; // socket buffer full: wait for writability below
            }
        }
        if progress || done {
            continue;
        }
        // 6. Nothing to do: sleep until something happens.
        let deadline = ep.poll_timeout().map(|t| clock.to_std(t));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.readable() => r.map_err(io_err("waiting for packets"))?,
            r = watcher.changed() => {
                r.map_err(io_err("reading rtnetlink events"))?;
                let now = clock.now();
                let current = netwatch::local_addresses().map_err(io_err("listing local addresses"))?;
                for gone in addresses.difference(&current) {
                    tracing::info!(%gone, "address lost");
                    let _ = events.record(now, "addr-lost", json!({"addr": gone.to_string()}));
                    usable.remove(gone);
                    ep.address_lost(now, *gone);
                }
                // Usable = the source the kernel's routing picks towards a peer.
                let peers: BTreeSet<Ipv4Addr> = sessions
                    .keys()
                    .filter_map(|c| ep.info(*c))
                    .map(|i| *i.remote.ip())
                    .collect();
                for peer in peers {
                    if let Ok((src, _mtu)) = route::lookup(peer) {
                        if current.contains(&src) && usable.insert(src) {
                            tracing::info!(%src, %peer, "address usable");
                            let _ = events.record(now, "addr-new", json!({"addr": src.to_string()}));
                            ep.address_available(now, src);
                        }
                    }
                }
                addresses = current;
            }
            r = socket.writable(), if !tx.is_empty() => r.map_err(io_err("waiting to send"))?,
            _ = sleep => {}
            signal = &mut shutdown => {
                if keep {
                    tracing::info!("{signal}: stopping");
                } else {
                    // Tell the peer rather than leave it retransmitting.
                    for conn in sessions.keys() {
                        ep.abort(*conn);
                    }
                    interrupted = Some(signal);
                }
                break;
            }
        }
    }
    // Let the final ACK/FIN leave before the process (and its guard) goes.
    let now = clock.now();
    while tx.push_with(|slot| ep.poll_transmit(now, slot)) {}
    while !tx.is_empty() {
        if socket.send_batch(&mut tx).map_err(io_err("sending"))? == 0 {
            socket.writable().await.map_err(io_err("waiting to send"))?;
        }
    }
    guard.remove_all();
    match interrupted {
        Some(signal) => Err(HostError::Interrupted(signal)),
        None => Ok(summaries),
    }
}
