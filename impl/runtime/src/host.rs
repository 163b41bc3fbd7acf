//! The reference host's file transfer: one application of [`Endpoint`].
//! `connect` sends or receives a file over one stream; `listen` accepts
//! one connection (or, with `keep`, one after another, concurrently) and
//! does the same. Each finished connection yields a [`Summary`].

use std::fs::File;
use std::future::Future;
use std::io::{self, BufWriter, Read, Write};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};
use sustain_core::tcp::Config;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::driver::reason_name;
use crate::error::{ConnectionError, EndpointError, OpenError};
use crate::{Endpoint, EndpointConfig, Stream};

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
    /// Open one connection to `remote`.
    Connect {
        /// The peer to connect to.
        remote: SocketAddrV4,
        /// Local address and port; unspecified parts are chosen by the kernel's routing.
        bind: Option<SocketAddrV4>,
    },
    /// Accept connections on `bind`.
    Listen {
        /// Local address and port to listen on.
        bind: SocketAddrV4,
        /// Keep accepting connections until shut down.
        keep: bool,
    },
}

/// What `sustain-host` (without `forward`) runs: the command line, parsed.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Connect or listen.
    pub role: Role,
    /// Send or receive a file on each connection.
    pub transfer: Transfer,
    /// The `--events` JSON-lines log, if any.
    pub events: Option<PathBuf>,
    /// TCP configuration of every connection.
    pub config: Config,
    /// MSS of connections this host opens; `None`: from the route's MTU.
    pub connect_mss: Option<u16>,
    /// The mobility information server (`--server`).
    pub server: Option<SocketAddrV4>,
    /// Compute the sha256 of the transferred bytes (off only for benchmarks:
    /// without SHA extensions hashing costs more CPU than the TCP itself).
    pub digest: bool,
}

/// Result of one connection's transfer: the JSON summary line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Payload bytes sent or received.
    pub bytes: u64,
    /// `None` when the host runs with `digest: false`.
    pub sha256: Option<String>,
    /// Wall time of the transfer, from the connection's start to its end.
    pub seconds: f64,
}

/// Why the host's run failed.
#[derive(Debug, Error)]
pub enum HostError {
    /// The endpoint could not be started.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Opening the connection or listening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the file's path.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection failed: its close reason and how many bytes got through.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The shutdown signal (named) came before the transfer finished.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

const CHUNK: usize = 256 * 1024;

/// Bytes and digest of one connection's transfer so far.
struct Progress {
    started: Instant,
    bytes: u64,
    hasher: Option<Sha256>,
}

impl Progress {
    fn new(digest: bool) -> Progress {
        Progress {
            started: Instant::now(),
            bytes: 0,
            hasher: digest.then(Sha256::new),
        }
    }

    fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
    }

    fn finish(self) -> Summary {
        Summary {
            bytes: self.bytes,
            sha256: self.hasher.map(|h| hex::encode(h.finalize())),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// The error of a stream operation, naming the close reason as the
    /// events file does, and how far the transfer got.
    fn failed(&self, e: io::Error) -> HostError {
        match ConnectionError::of(&e) {
            Some(c) => HostError::Connection(format!(
                "connection {} after {} bytes",
                c.close_reason()
                    .map_or("ended: endpoint stopped", reason_name),
                self.bytes
            )),
            None => HostError::Connection(format!("{e} after {} bytes", self.bytes)),
        }
    }
}

/// One connection's transfer, to the end of both directions and the
/// connection's normal close.
async fn transfer(
    mut stream: Stream,
    what: &Transfer,
    index: usize,
    many: bool,
    mut progress: Progress,
) -> Result<Summary, HostError> {
    let mut buf = vec![0u8; CHUNK];
    match what {
        Transfer::Send(path) => {
            let mut file =
                File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(io_err("reading the send file"))?;
                if n == 0 {
                    break;
                }
                stream
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| progress.failed(e))?;
                progress.add(&buf[..n]);
            }
            stream.shutdown().await.map_err(|e| progress.failed(e))?;
            // The peer closes once it has everything; anything it sends is
            // not part of the transfer.
            while stream
                .read(&mut buf)
                .await
                .map_err(|e| progress.failed(e))?
                > 0
            {}
        }
        Transfer::Recv(path) => {
            // With --keep each connection gets its own file: PATH.N.
            let path = if many {
                PathBuf::from(format!("{}.{index}", path.display()))
            } else {
                path.clone()
            };
            let file =
                File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
            let mut sink = BufWriter::with_capacity(CHUNK, file);
            loop {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| progress.failed(e))?;
                if n == 0 {
                    break;
                }
                sink.write_all(&buf[..n])
                    .map_err(io_err("writing the receive file"))?;
                progress.add(&buf[..n]);
            }
            sink.flush().map_err(io_err("writing the receive file"))?;
            stream.shutdown().await.map_err(|e| progress.failed(e))?;
        }
    }
    stream
        .closed()
        .await
        .map_err(|e| progress.failed(e.into()))?;
    Ok(progress.finish())
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
    let endpoint = Endpoint::new(EndpointConfig {
        tcp: opts.config.clone(),
        events: opts.events.clone(),
        connect_mss: opts.connect_mss,
        server: opts.server,
    })?;
    let work = serve(&endpoint, &opts, &mut on_summary);
    let result = tokio::select! {
        r = work => r,
        signal = shutdown => {
            if matches!(opts.role, Role::Listen { keep: true, .. }) {
                tracing::info!("{signal}: stopping");
                Ok(Vec::new())
            } else {
                Err(HostError::Interrupted(signal))
            }
        }
    };
    endpoint.shutdown().await;
    result
}

async fn serve(
    endpoint: &Endpoint,
    opts: &HostOptions,
    on_summary: &mut impl FnMut(&Summary),
) -> Result<Vec<Summary>, HostError> {
    match &opts.role {
        Role::Connect { remote, bind } => {
            let progress = Progress::new(opts.digest);
            let stream = endpoint.connect_from(*bind, *remote).await?;
            tracing::info!(local = ?stream.local_addr(), %remote, "host started");
            let summary = transfer(stream, &opts.transfer, 0, false, progress).await?;
            on_summary(&summary);
            Ok(vec![summary])
        }
        Role::Listen { bind, keep: false } => {
            let listener = endpoint.listen(*bind).await?;
            // From here on SYNs reach our TCP, not the kernel's RST: peers
            // (and tests) can wait for this line instead of racing the start.
            endpoint.record_event(
                "listening",
                json!({"local": listener.local_addr().to_string()}),
            );
            let stream = listener
                .accept()
                .await
                .map_err(|e| HostError::Connection(e.to_string()))?;
            drop(listener); // one transfer: later SYNs are refused
            let summary =
                transfer(stream, &opts.transfer, 0, false, Progress::new(opts.digest)).await?;
            on_summary(&summary);
            Ok(vec![summary])
        }
        Role::Listen { bind, keep: true } => {
            let listener = endpoint.listen(*bind).await?;
            endpoint.record_event(
                "listening",
                json!({"local": listener.local_addr().to_string()}),
            );
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            let mut summaries = Vec::new();
            let mut index = 0usize;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let stream = accepted.map_err(|e| HostError::Connection(e.to_string()))?;
                        let what = opts.transfer.clone();
                        let progress = Progress::new(opts.digest);
                        let done = done_tx.clone();
                        let conn = stream.id();
                        tokio::spawn(async move {
                            let r = transfer(stream, &what, index, true, progress).await;
                            let _ = done.send((conn, r));
                        });
                        index += 1;
                    }
                    Some((conn, r)) = done_rx.recv() => match r {
                        Ok(summary) => {
                            on_summary(&summary);
                            summaries.push(summary);
                        }
                        Err(e) => tracing::warn!(?conn, "connection failed: {e}"),
                    },
                }
            }
        }
    }
}
