//! `sustain-host forward`: bridges kernel TCP and sustained connections, so
//! unmodified applications (curl, ssh, a web server) get connections that
//! survive address changes.
//!
//! - `--from tcp:LISTEN --to sustain:REMOTE`: each kernel TCP connection
//!   accepted on LISTEN becomes a sustained connection to REMOTE;
//! - `--from sustain:BIND --to tcp:SERVICE`: each sustained connection
//!   accepted on BIND is bridged to the kernel TCP service at SERVICE.
//!
//! Each pair is spliced with `copy_bidirectional`: a FIN on one side
//! becomes a FIN on the other (half-close), a full buffer on one side
//! stops reading from the other (backpressure: the only queues are the
//! two sockets' buffers and one copy buffer per direction). A side that
//! fails takes the other down with it: a kernel-side reset or error aborts
//! the sustained connection, and a sustained connection that fails (reset,
//! timed out, migration timed out) resets the kernel-side connection.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use sustain_core::tcp::Config;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

use crate::error::{ConnectionError, EndpointError, OpenError};
use crate::{Endpoint, EndpointConfig, Stream};

/// Copy buffer per direction of each forwarded connection.
const COPY_BUFFER: usize = 64 * 1024;

/// One side of a forward: `tcp:ADDR:PORT` or `sustain:ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Kernel TCP.
    Tcp(SocketAddrV4),
    /// A sustained connection.
    Sustain(SocketAddrV4),
}

impl FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Side, String> {
        let (kind, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not tcp:ADDR:PORT or sustain:ADDR:PORT"))?;
        let addr: SocketAddrV4 = addr
            .parse()
            .map_err(|_| format!("'{addr}' in '{s}' is not an IPv4 ADDR:PORT"))?;
        match kind {
            "tcp" => Ok(Side::Tcp(addr)),
            "sustain" => Ok(Side::Sustain(addr)),
            other => Err(format!(
                "'{other}' in '{s}': a side is tcp:ADDR:PORT or sustain:ADDR:PORT"
            )),
        }
    }
}

/// Which way a forward bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Accept kernel TCP on `listen`, open sustained connections to `remote`.
    TcpToSustain {
        /// The kernel TCP address to listen on.
        listen: SocketAddrV4,
        /// The sustained peer each accepted connection is forwarded to.
        remote: SocketAddrV4,
    },
    /// Accept sustained connections on `bind`, open kernel TCP to `service`.
    SustainToTcp {
        /// The address sustained connections are accepted on.
        bind: SocketAddrV4,
        /// The kernel TCP service each accepted connection is bridged to.
        service: SocketAddrV4,
    },
}

impl Direction {
    /// The direction of `--from FROM --to TO`; exactly one side is sustain.
    pub fn new(from: Side, to: Side) -> Result<Direction, String> {
        match (from, to) {
            (Side::Tcp(listen), Side::Sustain(remote)) => {
                Ok(Direction::TcpToSustain { listen, remote })
            }
            (Side::Sustain(bind), Side::Tcp(service)) => {
                Ok(Direction::SustainToTcp { bind, service })
            }
            _ => Err(
                "forward bridges kernel TCP and sustain: one side must be tcp:, \
                      the other sustain:"
                    .into(),
            ),
        }
    }
}

/// What `sustain-host forward` runs: the command line, parsed.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Which way to bridge, and the addresses.
    pub direction: Direction,
    /// The `--events` JSON-lines log, if any.
    pub events: Option<PathBuf>,
    /// TCP configuration of the sustained connections.
    pub config: Config,
    /// MSS of sustained connections this forward opens; `None`: from the route.
    pub connect_mss: Option<u16>,
    /// The mobility information server (`--server`).
    pub server: Option<SocketAddrV4>,
}

/// Why a forward stopped before its shutdown signal.
#[derive(Debug, Error)]
pub enum ForwardError {
    /// The endpoint could not be started.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Listening for sustained connections failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Binding the kernel TCP listener failed.
    #[error("listening on tcp:{0}: {1}")]
    Listen(SocketAddrV4, #[source] io::Error),
    /// The listener failed (its local address, or accepting sustained connections).
    #[error("accepting: {0}")]
    Accept(#[source] io::Error),
}

/// Counters of a forward, for its `--events` and the caller.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Connections accepted on the listening side.
    pub accepted: AtomicU64,
    /// Bridges that ended with both directions finished and the sustained close done.
    pub completed: AtomicU64,
    /// Connections whose other side could not be opened, or whose bridge failed.
    pub failed: AtomicU64,
    /// Bridges currently splicing.
    pub active: AtomicU64,
}

/// Runs the forward until `shutdown` resolves; then every sustained
/// connection is aborted and the endpoint stops.
pub async fn run(
    opts: ForwardOptions,
    shutdown: impl Future<Output = &'static str>,
) -> Result<Arc<ForwardStats>, ForwardError> {
    let endpoint = Endpoint::new(EndpointConfig {
        tcp: opts.config.clone(),
        events: opts.events.clone(),
        connect_mss: opts.connect_mss,
        server: opts.server,
    })?;
    let stats = Arc::new(ForwardStats::default());
    let result = tokio::select! {
        r = serve(&endpoint, opts.direction, stats.clone()) => r,
        signal = shutdown => {
            tracing::info!("{signal}: stopping the forward");
            Ok(())
        }
    };
    endpoint.shutdown().await;
    result.map(|()| stats)
}

async fn serve(
    endpoint: &Endpoint,
    direction: Direction,
    stats: Arc<ForwardStats>,
) -> Result<(), ForwardError> {
    match direction {
        Direction::TcpToSustain { listen, remote } => {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| ForwardError::Listen(listen, e))?;
            let local = listener.local_addr().map_err(ForwardError::Accept)?;
            endpoint.record_event(
                "listening",
                json!({"local": format!("tcp:{local}"), "to": format!("sustain:{remote}")}),
            );
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    // Out of descriptors and the like: say so and go on.
                    Err(e) => {
                        tracing::warn!("accepting a kernel TCP connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let endpoint = endpoint.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match endpoint.connect(remote).await {
                        Ok(stream) => bridge(&endpoint, tcp, peer, stream, &stats).await,
                        Err(e) => {
                            tracing::warn!(%peer, "cannot open sustain:{remote}: {e}");
                            endpoint.record_event(
                                "forward-failed",
                                json!({"peer": peer.to_string(), "error": e.to_string()}),
                            );
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            reset(tcp);
                        }
                    }
                });
            }
        }
        Direction::SustainToTcp { bind, service } => {
            let listener = endpoint.listen(bind).await?;
            endpoint.record_event(
                "listening",
                json!({"local": format!("sustain:{}", listener.local_addr()),
                       "to": format!("tcp:{service}")}),
            );
            loop {
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => return Err(ForwardError::Accept(e.into())),
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                let endpoint = endpoint.clone();
                let stats = stats.clone();
                tokio::spawn(async move {
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|| "?".into(), |p| p.to_string());
                    match TcpStream::connect(service).await {
                        Ok(tcp) => {
                            let _ = tcp.set_nodelay(true);
                            bridge(&endpoint, tcp, SocketAddr::V4(service), stream, &stats).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, "cannot reach tcp:{service}: {e}");
                            endpoint.record_event(
                                "forward-failed",
                                json!({"peer": peer, "error": format!("tcp:{service}: {e}")}),
                            );
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            stream.abort();
                        }
                    }
                });
            }
        }
    }
}

/// Splices one kernel TCP connection and one sustained connection until
/// both directions have ended.
async fn bridge(
    endpoint: &Endpoint,
    mut tcp: TcpStream,
    tcp_peer: SocketAddr,
    mut stream: Stream,
    stats: &ForwardStats,
) {
    let conn = stream.id();
    stats.active.fetch_add(1, Ordering::Relaxed);
    endpoint.record_event(
        "forward-open",
        json!({"conn": conn.0, "tcp": tcp_peer.to_string()}),
    );
    let result =
        tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, COPY_BUFFER, COPY_BUFFER)
            .await;
    stats.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok((to_sustain, to_tcp)) => {
            // Both FINs went through; let the sustained close finish.
            let closed = stream.closed().await;
            stats.completed.fetch_add(1, Ordering::Relaxed);
            endpoint.record_event(
                "forward-closed",
                json!({"conn": conn.0, "to_sustain": to_sustain, "to_tcp": to_tcp,
                       "close": closed.err().map(|e| e.to_string())}),
            );
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let sustained = ConnectionError::of(&e);
            endpoint.record_event(
                "forward-closed",
                json!({"conn": conn.0, "error": e.to_string(),
                       "side": if sustained.is_some() { "sustain" } else { "tcp" }}),
            );
            if sustained.is_some() {
                // The sustained connection failed: tell the application.
                reset(tcp);
            } else {
                // The application's side failed: tell the peer.
                stream.abort();
            }
        }
    }
}

/// Closes a kernel TCP connection with an RST: SO_LINGER with a zero
/// timeout makes close(2) reset at once (it never blocks).
fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
    drop(tcp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_and_pair() {
        let from: Side = "tcp:127.0.0.1:8080".parse().unwrap();
        let to: Side = "sustain:192.0.2.10:5001".parse().unwrap();
        assert_eq!(
            Direction::new(from, to).unwrap(),
            Direction::TcpToSustain {
                listen: "127.0.0.1:8080".parse().unwrap(),
                remote: "192.0.2.10:5001".parse().unwrap(),
            }
        );
        assert!(Direction::new(from, from).is_err());
        assert!(Direction::new(to, to).is_err());
        for bad in ["udp:1.2.3.4:5", "tcp:1.2.3.4", "sustain", "tcp:[::1]:80"] {
            assert!(bad.parse::<Side>().is_err(), "{bad}");
        }
    }
}
