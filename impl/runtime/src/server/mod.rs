//! The `sustain-server` driver: kernel TCP sessions from hosts on one side,
//! the core's sans-IO mobility server ([`sustain_core::rendezvous::Server`])
//! on the other (PROTOCOL.md §15).
//!
//! One task owns the state machine. It loops: accept a session, or take
//! bytes a session's reader task received, or fire the sweep timer; hand
//! that to the core; then write every output to its session's writer task
//! and log every event, until none of these makes progress. Reader tasks
//! only read; writer tasks only write; nothing here parses a message.
//!
//! Memory is bounded: the core bounds sessions, registrations and buffered
//! bytes; readers share one bounded channel (backpressure); each writer
//! queue is bounded and a host that does not read its replies is
//! disconnected.
//!
//! With a proxy (`--proxy ADDR:PORT --relay-secret FILE`, PROTOCOL.md
//! §15.14) one more task keeps a TCP session to the proxy's control
//! address, re-opened with backoff whenever it drops; its bytes go to the
//! core like a host session's, and the core decides when to ask for a
//! relay.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde_json::{json, Value};
use sustain_core::rendezvous::{
    Output, ProxyConfig, Server, ServerConfig, ServerEvent, ServerStats, SessionId,
};
use sustain_core::time::Instant;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::os_random::OsRandom;

/// Chunks waiting for the core, all sessions together.
const INBOX: usize = 1024;
/// Messages waiting to be written to one session.
const OUTBOX: usize = 64;
/// First wait before re-opening the proxy session; doubles up to the max.
const PROXY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts to re-open the proxy session.
const PROXY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A proxy session that cannot be opened in this time counts as failed.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the running server stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Accepting a control session from a host failed.
    #[error("accepting a control session: {0}")]
    Accept(io::Error),
    /// Appending to the `--events` log failed.
    #[error("writing the event log: {0}")]
    Events(io::Error),
}

/// A session reader's report (session_io).
type Inbound = crate::session_io::Inbound<SessionId>;

struct SessionTasks {
    writer: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// From the proxy task to the main task. Each TCP session to the proxy has
/// a generation, so bytes for a session that is gone are never written to
/// the next one.
enum ProxyInbound {
    Connected(u64),
    Data(u64, Vec<u8>),
    Closed(u64),
    Unreachable(String),
}

/// From the main task to the proxy task.
enum ProxyCmd {
    Send(u64, Vec<u8>),
    Close(u64),
}

/// Runs the server on `listener` until `shutdown` completes; returns the
/// final counters. The caller has already logged `listening`.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    proxy: Option<ProxyConfig>,
    clock: Clock,
    events: &mut EventLog,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ServerStats, ServeError> {
    let mut server = Server::new(config);
    let mut sessions: HashMap<SessionId, SessionTasks> = HashMap::new();
    let (inbox_tx, mut inbox) = mpsc::channel::<Inbound>(INBOX);
    let (proxy_tx, mut proxy_inbox) = mpsc::channel::<ProxyInbound>(INBOX);
    let (proxy_cmd, proxy_cmds) = mpsc::unbounded_channel::<ProxyCmd>();
    let mut proxy_gen = 0u64;
    let proxy_task = proxy.map(|cfg| {
        let control = cfg.control;
        server.set_proxy(cfg, Box::new(OsRandom::new()));
        tokio::spawn(proxy_loop(control, proxy_tx, proxy_cmds))
    });
    let mut shutdown = std::pin::pin!(shutdown);
    server.handle_timeout(clock.now());
    loop {
        let timer = server
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(clock.to_std(t)));
        let sleep = async {
            match timer {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = accepted.map_err(ServeError::Accept)?;
                open(&mut server, &mut sessions, &inbox_tx, clock.now(), stream, peer);
            }
            Some(inbound) = inbox.recv() => match inbound {
                Inbound::Data(session, bytes) => server.handle_stream(clock.now(), session, &bytes),
                Inbound::Closed(session) => {
                    server.close_session(session);
                    sessions.remove(&session);
                }
            },
            Some(inbound) = proxy_inbox.recv() => match inbound {
                ProxyInbound::Connected(generation) => {
                    proxy_gen = generation;
                    server.proxy_session_opened(clock.now());
                }
                ProxyInbound::Data(generation, bytes) if generation == proxy_gen => {
                    server.handle_proxy_stream(clock.now(), &bytes);
                }
                ProxyInbound::Closed(generation) if generation == proxy_gen => {
                    server.proxy_session_closed(clock.now());
                }
                ProxyInbound::Data(..) | ProxyInbound::Closed(_) => {}
                ProxyInbound::Unreachable(error) => {
                    let control = server.proxy_control().map(|c| c.to_string());
                    events
                        .record(clock.now(), "proxy-unreachable", json!({"control": control, "error": error}))
                        .map_err(ServeError::Events)?;
                }
            },
            () = sleep => server.handle_timeout(clock.now()),
        }
        drain(
            &mut server,
            &mut sessions,
            &proxy_cmd,
            proxy_gen,
            clock.now(),
            events,
        )?;
    }
    for (_, tasks) in sessions.drain() {
        tasks.reader.abort();
    }
    if let Some(task) = proxy_task {
        task.abort();
    }
    Ok(*server.stats())
}

/// Keeps one TCP session to the proxy's control address: connects (with
/// backoff after a failure), reports it, moves bytes both ways until it
/// drops or the main task closes it, and starts again.
async fn proxy_loop(
    control: SocketAddrV4,
    inbox: mpsc::Sender<ProxyInbound>,
    mut cmds: mpsc::UnboundedReceiver<ProxyCmd>,
) {
    let mut backoff = PROXY_BACKOFF_MIN;
    let mut generation = 0u64;
    loop {
        let connected =
            tokio::time::timeout(PROXY_CONNECT_TIMEOUT, TcpStream::connect(control)).await;
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let _ = inbox.send(ProxyInbound::Unreachable(e.to_string())).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PROXY_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                let _ = inbox
                    .send(ProxyInbound::Unreachable("connect timed out".into()))
                    .await;
                backoff = (backoff * 2).min(PROXY_BACKOFF_MAX);
                continue;
            }
        };
        backoff = PROXY_BACKOFF_MIN;
        generation += 1;
        let _ = stream.set_nodelay(true);
        if inbox
            .send(ProxyInbound::Connected(generation))
            .await
            .is_err()
        {
            return;
        }
        let mut buf = vec![0u8; crate::session_io::READ_CHUNK];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = buf.get(..n).unwrap_or_default().to_vec();
                        if inbox.send(ProxyInbound::Data(generation, chunk)).await.is_err() {
                            return;
                        }
                    }
                },
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(ProxyCmd::Send(g, bytes)) if g == generation => {
                        if stream.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Some(ProxyCmd::Close(g)) if g == generation => break,
                    Some(_) => {} // for an earlier session
                },
            }
        }
        if inbox.send(ProxyInbound::Closed(generation)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

fn open(
    server: &mut Server,
    sessions: &mut HashMap<SessionId, SessionTasks>,
    inbox: &mpsc::Sender<Inbound>,
    now: Instant,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // The control protocol is IPv4 only, like the rest of sustain.
    let SocketAddr::V4(observed) = peer else {
        return;
    };
    let Ok(session) = server.open_session(now, observed) else {
        return; // counted in sessions_refused; dropping the stream closes it
    };
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (writer, outbox) = mpsc::channel(OUTBOX);
    tokio::spawn(crate::session_io::write_loop(write, outbox));
    let reader = tokio::spawn(crate::session_io::read_loop(session, read, inbox.clone()));
    sessions.insert(session, SessionTasks { writer, reader });
}

fn drain(
    server: &mut Server,
    sessions: &mut HashMap<SessionId, SessionTasks>,
    proxy: &mpsc::UnboundedSender<ProxyCmd>,
    proxy_gen: u64,
    now: Instant,
    events: &mut EventLog,
) -> Result<(), ServeError> {
    while let Some(output) = server.poll_output() {
        match output {
            Output::Send { session, bytes } => {
                let slow = sessions
                    .get(&session)
                    .is_some_and(|t| t.writer.try_send(bytes).is_err());
                if slow {
                    // A host that does not read its replies loses its session.
                    server.close_session(session);
                    if let Some(t) = sessions.remove(&session) {
                        t.reader.abort();
                    }
                }
            }
            Output::Close { session } => {
                // Dropping the writer's sender flushes and shuts down.
                if let Some(t) = sessions.remove(&session) {
                    t.reader.abort();
                }
            }
            Output::ProxySend { bytes } => {
                let _ = proxy.send(ProxyCmd::Send(proxy_gen, bytes));
            }
            Output::ProxyClose => {
                let _ = proxy.send(ProxyCmd::Close(proxy_gen));
            }
        }
    }
    while let Some(event) = server.poll_event() {
        let (name, fields) = event_json(&event);
        events
            .record(now, name, fields)
            .map_err(ServeError::Events)?;
    }
    Ok(())
}

fn addr(a: SocketAddrV4) -> String {
    a.to_string()
}

/// The event log line of a server event (names as in PROTOCOL.md §15).
pub fn event_json(event: &ServerEvent) -> (&'static str, Value) {
    match *event {
        ServerEvent::Registered {
            conn,
            side,
            observed,
            direct,
            behind_napt,
        } => (
            "server-registered",
            json!({"conn": conn.to_string(), "side": side.to_string(),
                   "observed": addr(observed), "direct": addr(direct), "behind_napt": behind_napt}),
        ),
        ServerEvent::MoveReported {
            conn,
            side,
            observed,
            old_direct,
            new_direct,
            behind_napt,
        } => (
            "move-reported",
            json!({"conn": conn.to_string(), "side": side.to_string(), "observed": addr(observed),
                   "old_direct": addr(old_direct), "new_direct": addr(new_direct),
                   "behind_napt": behind_napt}),
        ),
        ServerEvent::Decided { conn, decision } => (
            "decided",
            json!({"conn": conn.to_string(), "decision": decision.to_string()}),
        ),
        ServerEvent::NoticeSent {
            conn,
            side,
            target,
            number,
        } => (
            "peer-location",
            json!({"conn": conn.to_string(), "side": side.to_string(),
                   "target": addr(target), "number": number}),
        ),
        ServerEvent::Unregistered { conn, side } => (
            "unregistered",
            json!({"conn": conn.to_string(), "side": side.to_string()}),
        ),
        ServerEvent::Rejected {
            code,
            observed,
            conn,
        } => (
            "rejected",
            json!({"code": code.to_string(), "observed": addr(observed), "conn": conn.to_string()}),
        ),
        ServerEvent::Expired { count } => ("expired", json!({ "count": count })),
        ServerEvent::ProxyUp { control } => ("proxy-up", json!({"control": addr(control)})),
        ServerEvent::ProxyDown { error } => {
            ("proxy-down", json!({"error": error.map(|e| e.to_string())}))
        }
        ServerEvent::RelayRequested { conn, number } => (
            "relay-requested",
            json!({"conn": conn.to_string(), "number": number}),
        ),
        ServerEvent::RelayGranted { conn, proxy } => (
            "relay-granted",
            json!({"conn": conn.to_string(), "proxy": addr(proxy)}),
        ),
        ServerEvent::RelayRefused { conn, status } => (
            "relay-refused",
            json!({"conn": conn.to_string(), "status": status.map(|s| format!("{s:?}"))}),
        ),
        ServerEvent::RelayAssigned {
            conn,
            side,
            proxy,
            ticket,
            number,
        } => (
            "relay-assigned",
            json!({"conn": conn.to_string(), "side": side.to_string(), "proxy": addr(proxy),
                   "ticket": format!("{ticket:08x}"), "number": number}),
        ),
        ServerEvent::RelayReleased { conn, port, reason } => (
            "relay-released",
            json!({"conn": conn.to_string(), "port": port,
                   "reason": reason.map_or_else(|| "server".to_owned(), |r| format!("{r:?}"))}),
        ),
    }
}

/// The counters as JSON, for the `stopped` event and the final stdout line.
pub fn stats_json(s: &ServerStats) -> Value {
    json!({
        "sessions_opened": s.sessions_opened, "sessions_refused": s.sessions_refused,
        "messages": s.messages, "registered": s.registered, "reports": s.reports,
        "unregistered": s.unregistered, "repeats": s.repeats, "decisions": s.decisions,
        "relays_needed": s.relays_needed, "acks_sent": s.acks_sent,
        "notices_sent": s.notices_sent, "notices_undeliverable": s.notices_undeliverable,
        "errors_sent": s.errors_sent, "expired": s.expired,
        "garbage": s.garbage, "truncated": s.truncated, "oversized": s.oversized,
        "unknown_version": s.unknown_version, "unknown_type": s.unknown_type,
        "malformed": s.malformed, "unexpected_type": s.unexpected_type, "bad_mac": s.bad_mac,
        "replayed": s.replayed, "unknown_connection": s.unknown_connection,
        "conflicts": s.conflicts, "rate_limited": s.rate_limited,
        "registry_full": s.registry_full, "rejected": s.rejected(),
        "proxy_sessions": s.proxy_sessions, "relays_requested": s.relays_requested,
        "relays_granted": s.relays_granted, "relays_refused": s.relays_refused,
        "relay_assignments_sent": s.relay_assignments_sent,
        "relays_released": s.relays_released,
    })
}
