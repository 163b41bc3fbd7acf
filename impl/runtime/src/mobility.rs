//! The host's side of the mobility information server (DESIGN.md, "Mobility
//! information exchange through a server"; PROTOCOL.md §15): one task per
//! migratable connection that keeps a kernel TCP control session to the
//! server and moves bytes between it and the core's sans-IO
//! [`ControlClient`], which numbers, MACs and checks every message.
//!
//! - The session is bound to the connection's current local address, so
//!   the server observes the path the connection uses and can tell a NAPT
//!   (direct != observed).
//! - First on every session: a Register (the paper's pre-move exchange);
//!   again every [`REFRESH_INTERVAL`]. A session that drops is opened
//!   again with backoff and re-registers, which is how a restarted server
//!   learns its registrations back.
//! - After this end moves (the driver sees the connection start a move
//!   from a new local address), the session is re-opened **from the new
//!   address** and opened with a MoveReport (which also moves the
//!   registration to the new session); a server that does not know the
//!   connection (restarted) answers UnknownConnection and gets a Register.
//! - A PeerLocation that verifies makes the connection send its MSYN to
//!   the notified address ([`sustain_core::tcp::Endpoint::peer_location`]);
//!   an end that did not move, also one behind a NAPT, hears it on its
//!   still-open session. Errors are unauthenticated: the only reaction is
//!   to register again when the server does not know the connection.
//! - A RelayAssignment that verifies (both ends behind NAPTs, PROTOCOL.md
//!   §6.9, §15.8) makes the connection send its MSYN, with the relay
//!   ticket, to the proxy ([`sustain_core::tcp::Endpoint::relay_location`]);
//!   later moves of this end go there too. If the proxy refuses a move
//!   with an RST (this end is global again) the connection waits in
//!   MIG_WAIT while this task reports the move, and the server's
//!   PeerLocation (to the peer, or to this end) arranges a direct MSYN.
//! - When the connection closes: an Unregister, and the task ends.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use serde_json::json;
use sustain_core::control::{ErrorCode, FrameBuffer, Outcome, RelayAssignment};
use sustain_core::relay::HostTicket;
use sustain_core::rendezvous::{ControlClient, ServerMessage, REFRESH_INTERVAL};
use sustain_core::tcp::{ConnId, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::shared::{ControlCmd, Shared};

/// First wait before re-opening a failed session; doubles up to the max.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session that cannot be opened in this time counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the control task of `conn` and returns its command channel.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    conn: ConnId,
    server: SocketAddrV4,
    client: ControlClient,
) -> UnboundedSender<ControlCmd> {
    let (tx, rx) = unbounded();
    tokio::spawn(run(shared, conn, server, client, rx));
    tx
}

/// Why a session ended.
enum SessionEnd {
    /// Dropped or failed: open another from the same address.
    Lost,
    /// This end moved: open another from the new address and report.
    Moved,
    /// The connection closed: the task ends.
    Closed,
}

struct Task {
    shared: Arc<Shared>,
    conn: ConnId,
    server: SocketAddrV4,
    client: ControlClient,
    /// A move not yet reported (reported on the next session).
    pending_move: Option<SocketAddrV4>,
}

async fn run(
    shared: Arc<Shared>,
    conn: ConnId,
    server: SocketAddrV4,
    client: ControlClient,
    mut cmds: UnboundedReceiver<ControlCmd>,
) {
    let mut task = Task {
        shared,
        conn,
        server,
        client,
        pending_move: None,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let from = task.pending_move.unwrap_or(task.client.direct());
        let stream = match connect_from(from, server).await {
            Ok(s) => s,
            Err(e) => {
                task.record(
                    "server-unreachable",
                    json!({"from": from.ip().to_string(), "error": e.to_string()}),
                );
                // Wait for the backoff, unless the connection moves or closes.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        cmd = cmds.next() => match task.command(cmd) {
                            Some(SessionEnd::Closed) => return,
                            Some(SessionEnd::Moved) => break,
                            _ => {}
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        match task.session(stream, &mut cmds).await {
            SessionEnd::Closed => return,
            SessionEnd::Moved | SessionEnd::Lost => {}
        }
    }
}

/// A kernel TCP connection to the server from `local`'s address.
async fn connect_from(local: SocketAddrV4, server: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(*local.ip(), 0)))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(SocketAddr::V4(server)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Task {
    fn record(&self, name: &str, mut fields: serde_json::Value) {
        if let Some(map) = fields.as_object_mut() {
            map.insert("conn".into(), json!(self.conn.0));
        }
        let now = self.shared.clock.now();
        self.shared.lock().record(now, name, fields);
    }

    /// A driver command outside a session's own handling.
    fn command(&mut self, cmd: Option<ControlCmd>) -> Option<SessionEnd> {
        match cmd {
            None | Some(ControlCmd::Closed) => Some(SessionEnd::Closed),
            Some(ControlCmd::Moved(new)) => {
                if new == self.client.direct() && self.pending_move.is_none() {
                    // A move to the peer's new location from the same
                    // address (a notice): nothing to report.
                    return None;
                }
                self.pending_move = Some(new);
                Some(SessionEnd::Moved)
            }
            Some(ControlCmd::PeerMoved(seen)) => {
                self.client.set_peer(seen, None);
                None
            }
        }
    }

    /// One control session: Register (and a pending MoveReport), then
    /// notices until it drops, this end moves, or the connection closes.
    async fn session(
        &mut self,
        mut stream: TcpStream,
        cmds: &mut UnboundedReceiver<ControlCmd>,
    ) -> SessionEnd {
        // After a move the MoveReport opens the session (it moves the
        // registration to this session and address); otherwise a Register.
        if let Some(new) = self.pending_move.take() {
            let report = self.client.report_move(new);
            if stream.write_all(&report).await.is_err() {
                // Not reported: report on the next session.
                self.pending_move = Some(new);
                return SessionEnd::Lost;
            }
            self.record(
                "move-reported",
                json!({"direct": new.to_string(), "server": self.server.to_string()}),
            );
        } else {
            let register = self.client.register();
            if stream.write_all(&register).await.is_err() {
                return SessionEnd::Lost;
            }
        }
        let mut frames = FrameBuffer::new();
        let mut buf = vec![0u8; 4096];
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        refresh.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => {
                            self.record("server-session-lost", json!({}));
                            return SessionEnd::Lost;
                        }
                        Ok(n) => n,
                    };
                    frames.push(&buf[..n]);
                    loop {
                        match frames.next_frame() {
                            Ok(Some(frame)) => {
                                if let Some(reply) = self.message(&frame) {
                                    if stream.write_all(&reply).await.is_err() {
                                        return SessionEnd::Lost;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                self.record("server-message-rejected", json!({"error": e.to_string()}));
                                return SessionEnd::Lost;
                            }
                        }
                    }
                }
                cmd = cmds.next() => match self.command(cmd) {
                    Some(SessionEnd::Closed) => {
                        let bye = self.client.unregister();
                        let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&bye)).await;
                        return SessionEnd::Closed;
                    }
                    Some(end) => return end,
                    None => {}
                },
                _ = refresh.tick() => {
                    let register = self.client.register();
                    if stream.write_all(&register).await.is_err() {
                        return SessionEnd::Lost;
                    }
                }
            }
        }
    }

    /// One message from the server; returns what to send back, if anything.
    fn message(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        match self.client.handle_message(frame) {
            Ok(ServerMessage::Ack(ack)) => {
                let name = match ack.outcome {
                    Outcome::Registered => "server-registered",
                    _ => "server-ack",
                };
                self.record(
                    name,
                    json!({"outcome": format!("{:?}", ack.outcome), "server": self.server.to_string()}),
                );
                None
            }
            Ok(ServerMessage::PeerLocation(p)) => {
                self.record(
                    "peer-location",
                    json!({"target": p.target.to_string(), "you_behind_napt": p.you_behind_napt,
                           "peer_behind_napt": p.peer_behind_napt}),
                );
                self.peer_location(p.target);
                self.client.set_peer(p.target, None);
                None
            }
            Ok(ServerMessage::RelayAssignment(r)) => {
                self.record(
                    "relay-assigned",
                    json!({"proxy": r.proxy.to_string(), "ticket": format!("{:08x}", r.ticket_id),
                           "lifetime_s": r.lifetime_secs}),
                );
                self.relay_location(&r);
                None
            }
            Ok(ServerMessage::Error(e)) => {
                self.record("server-error", json!({"code": format!("{:?}", e.code)}));
                // Unauthenticated: at most a Register again (PROTOCOL.md §15).
                (e.code == ErrorCode::UnknownConnection).then(|| self.client.register())
            }
            Err(e) => {
                self.record("server-message-rejected", json!({"error": e.to_string()}));
                None
            }
        }
    }

    /// Acts on a verified RelayAssignment (PROTOCOL.md §6.9): the MSYN, with
    /// the ticket, goes to the proxy, unless the connection already uses
    /// this relay with this ticket and is not waiting (a redundant notice,
    /// e.g. the server confirming the relay after this end's move, whose
    /// MSYN already went to the proxy).
    fn relay_location(&self, r: &RelayAssignment) {
        let ticket = HostTicket::from(r);
        let now = self.shared.clock.now();
        let mut st = self.shared.lock();
        let Some(info) = st.core.info(self.conn) else {
            return;
        };
        if info.remote == r.proxy
            && st.core.relay_ticket(self.conn) == Some(ticket)
            && info.state != State::MigWait
        {
            return;
        }
        let result = st.core.relay_location(now, self.conn, r.proxy, ticket);
        drop(st);
        if let Err(e) = result {
            self.record("relay-location-ignored", json!({"error": e.to_string()}));
        }
        self.shared.wake.notify_one();
    }

    /// Acts on a verified notice: the MSYN goes to `target`, unless the
    /// connection is already there and not waiting (a redundant notice).
    fn peer_location(&self, target: SocketAddrV4) {
        let now = self.shared.clock.now();
        let mut st = self.shared.lock();
        let Some(info) = st.core.info(self.conn) else {
            return;
        };
        if info.remote == target && info.state != State::MigWait {
            return;
        }
        let result = st.core.peer_location(now, self.conn, target);
        drop(st);
        if let Err(e) = result {
            self.record("peer-location-ignored", json!({"error": e.to_string()}));
        }
        self.shared.wake.notify_one();
    }
}
