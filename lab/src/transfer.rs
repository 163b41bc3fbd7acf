//! The transfer a scenario watches: a sender pushes deterministic pseudo-random bytes to
//! a receiver, which hashes what it gets.
//!
//! Two kinds of endpoints, chosen per end (a sustain-host can talk to Linux's own TCP):
//! - `linux`: kernel TCP through std::net sockets, run by the lab on threads inside the
//!   nodes' namespaces. They set `TCP_USER_TIMEOUT` to the stall timeout, so a
//!   connection whose path is gone ends with `ETIMEDOUT` as plain TCP does, rather
//!   than after the default ~15 minutes of retransmissions.
//! - `sustain`: the `sustain-host` binary, started inside the namespaces:
//!   `sustain-host listen --bind 0.0.0.0:PORT` on the accepting side, `sustain-host
//!   connect ADDR:PORT` on the other, with `--send-file` / `--recv-file` and `--events`.
//!   Its last stdout line is `{"bytes":N,"sha256":"…","seconds":S}`.
//!
//! Either way the receiver's byte count is observable while the transfer runs (moves
//! "after N bytes" use it), and each endpoint leaves a JSON-lines events file with
//! `time` (Unix seconds), `t` (seconds since it started) and `event`.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::sockopt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::apps::{self, AppEnd};
use crate::ends::{hash_file, listening_events};
pub use crate::ends::{
    unix_now, App, EndpointKind, EndpointResult, EventWriter, Initiator, Role, TransferSpec,
};
use crate::error::{IoContext, LabError, Result};
use crate::process::ChildProcess;
use crate::topology::Topology;

/// Environment variable naming the directory that holds `sustain-host` (and the other
/// sustain binaries).
pub const BIN_DIR_ENV: &str = "SUSTAIN_BIN_DIR";

const CHUNK: usize = 64 * 1024;
/// How often blocked socket calls come back to look at the cancel flag and the clock.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for `sustain-host listen` to report `listening`.
const LISTEN_WAIT: Duration = Duration::from_millis(1000);
/// How long the connecting side keeps trying to reach the accepting side.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bytes a transfer sends: xorshift64 output, little-endian, so a corrupted byte
/// cannot hide in a run of zeros and both ends can produce them without a file.
#[derive(Clone, Debug)]
pub struct TransferData {
    state: u64,
    remaining: u64,
}

impl TransferData {
    pub fn new(seed: u64, len: u64) -> TransferData {
        TransferData {
            state: seed | 1,
            remaining: len,
        }
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    /// `buf.len()` must be a multiple of 8 for the stream not to depend on it.
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let len = (buf.len() as u64).min(self.remaining) as usize;
        for word in buf[..len].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            word.copy_from_slice(&self.state.to_le_bytes()[..word.len()]);
        }
        self.remaining -= len as u64;
        len
    }

    /// The SHA-256 (hex) of the whole stream.
    pub fn sha256(seed: u64, len: u64) -> String {
        let mut data = TransferData::new(seed, len);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = data.fill(&mut buf);
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hex::encode(hasher.finalize())
    }

    /// Writes the whole stream to `path`.
    pub fn write_file(seed: u64, len: u64, path: &Path) -> Result<()> {
        let mut file = File::create(path).context(|| format!("creating {}", path.display()))?;
        let mut data = TransferData::new(seed, len);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = data.fill(&mut buf);
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Both ends of a finished transfer.
#[derive(Clone, Debug)]
pub struct TransferResult {
    pub sender: EndpointResult,
    pub receiver: EndpointResult,
    pub expected_bytes: u64,
    pub expected_sha256: String,
    /// For a receiver that got fewer bytes than sent (a file transfer): whether
    /// what it got is exactly the start of the stream. A broken connection may
    /// deliver less, never different bytes. `None`: not checked.
    pub prefix_intact: Option<bool>,
}

impl TransferResult {
    /// The receiver got exactly the bytes sent.
    pub fn intact(&self) -> bool {
        self.receiver.bytes == self.expected_bytes
            && self.receiver.sha256.as_deref() == Some(self.expected_sha256.as_str())
    }
}

/// Flags and counters shared with the linux endpoint threads.
#[derive(Debug, Default)]
struct Shared {
    received: AtomicU64,
    sent: AtomicU64,
    cancel: AtomicBool,
    cancel_reason: Mutex<Option<String>>,
    cancelled_at: Mutex<Option<Instant>>,
}

/// One running end.
enum End {
    /// Kernel TCP on a lab thread.
    Linux(JoinHandle<EndpointResult>),
    /// A `sustain-host` process.
    Sustain {
        child: ChildProcess,
        events_file: PathBuf,
        /// The lab terminated it while it was still running: its error is the lab's
        /// reason, not what it printed as it went. An end that had already failed on
        /// its own keeps its own reason.
        stopped_by_lab: AtomicBool,
    },
    /// An application (curl, ssh, a session), through `sustain-host forward`
    /// or on kernel TCP.
    App(AppEnd),
}

impl End {
    fn is_finished(&self) -> bool {
        match self {
            End::Linux(handle) => handle.is_finished(),
            End::Sustain { child, .. } => matches!(child.try_wait(), Ok(Some(_)) | Err(_)),
            End::App(app) => app.is_finished(),
        }
    }

    /// Terminates a `sustain-host` that is still running (a linux end watches the
    /// shared cancel flag itself).
    fn stop(&self) {
        if let End::App(app) = self {
            app.stop();
        }
        if let End::Sustain {
            child,
            stopped_by_lab,
            ..
        } = self
        {
            if matches!(child.try_wait(), Ok(None)) {
                stopped_by_lab.store(true, Ordering::Relaxed);
                let _ = child.terminate(Duration::from_secs(2));
            }
        }
    }

    fn finish(
        self,
        spec: &TransferSpec,
        role: Role,
        started: Instant,
        cancel_reason: Option<&str>,
        recv_file: Option<&Path>,
    ) -> EndpointResult {
        let node = spec.node_of(role);
        match self {
            End::App(app) => app.finish(cancel_reason),
            End::Linux(handle) => handle.join().unwrap_or_else(|_| EndpointResult {
                node: node.to_string(),
                role,
                error: Some("endpoint thread panicked".into()),
                bytes: 0,
                sha256: None,
                seconds: 0.0,
                events_file: PathBuf::new(),
            }),
            End::Sustain {
                child,
                events_file,
                stopped_by_lab,
            } => sustain_result(
                &child,
                node,
                role,
                events_file,
                started,
                cancel_reason.filter(|_| stopped_by_lab.load(Ordering::Relaxed)),
                recv_file,
            ),
        }
    }
}

/// A transfer in progress.
pub struct RunningTransfer {
    spec: TransferSpec,
    shared: Arc<Shared>,
    sender: End,
    receiver: End,
    /// The file a `sustain` receiver writes; `None` for a `linux` receiver.
    recv_file: Option<PathBuf>,
    expected_sha256: String,
    started: Instant,
}

/// What starting one end needs.
struct Starter<'a> {
    topology: &'a Topology,
    spec: &'a TransferSpec,
    shared: &'a Arc<Shared>,
    events_dir: &'a Path,
    acceptor_address: Ipv4Addr,
    /// `sustain-host`, if an end uses it.
    program: Option<PathBuf>,
    send_file: PathBuf,
    recv_file: PathBuf,
}

impl Starter<'_> {
    fn events_file(&self, role: Role) -> PathBuf {
        self.events_dir.join(format!(
            "{}-{}-{}.events.jsonl",
            self.spec.node_of(role),
            self.spec.kind_of(role).name(),
            role.name()
        ))
    }

    /// Starts the end `role`; the accepting end is listening when this returns.
    fn start(&self, role: Role) -> Result<End> {
        if self.spec.app != App::File {
            return Ok(End::App(AppEnd::start(&apps::AppContext {
                topology: self.topology,
                spec: self.spec,
                role,
                events_file: self.events_file(role),
                work_dir: self.send_file.parent().unwrap_or(Path::new("/tmp")),
                acceptor_address: self.acceptor_address,
                program: self.program.as_deref(),
                send_file: &self.send_file,
                recv_file: &self.recv_file,
            })?));
        }
        match self.spec.kind_of(role) {
            EndpointKind::Linux => self.start_linux(role),
            EndpointKind::Sustain => self.start_sustain(role),
        }
    }

    fn start_linux(&self, role: Role) -> Result<End> {
        let spec = self.spec;
        let lab = self.topology.lab();
        let node = spec.node_of(role);
        let port = spec.port;
        let connection = if role == spec.acceptor_role() {
            let listener = lab
                .run_in(node, move || -> io::Result<TcpListener> {
                    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })?
                .context(|| format!("listening on port {port} in {node}"))?;
            Connection::Accept(listener)
        } else {
            Connection::Connect(SocketAddr::from((self.acceptor_address, port)))
        };
        let endpoint = LinuxEndpoint {
            node: node.to_string(),
            role,
            bytes: spec.bytes,
            seed: spec.seed,
            stall_timeout: spec.stall_timeout,
            events_file: self.events_file(role),
            shared: Arc::clone(self.shared),
        };
        let events = EventWriter::create(&endpoint.events_file)?;
        Ok(End::Linux(lab.spawn_thread_in(node, move || {
            endpoint.run(connection, events)
        })?))
    }

    fn start_sustain(&self, role: Role) -> Result<End> {
        let spec = self.spec;
        let program = self.program.as_ref().ok_or_else(|| {
            LabError::InvalidValue("no sustain-host for a sustain endpoint".into())
        })?;
        let accepting = role == spec.acceptor_role();
        let events_file = self.events_file(role);
        let mut command = Command::new(program);
        if accepting {
            command
                .arg("listen")
                .arg("--bind")
                .arg(format!("0.0.0.0:{}", spec.port));
        } else {
            command
                .arg("connect")
                .arg(SocketAddrV4::new(self.acceptor_address, spec.port).to_string());
        }
        match role {
            Role::Sender => command.arg("--send-file").arg(&self.send_file),
            Role::Receiver => command.arg("--recv-file").arg(&self.recv_file),
        };
        command
            .arg("--events")
            .arg(&events_file)
            .args(spec.args_of(role));
        let child = self.topology.lab().spawn(spec.node_of(role), command)?;
        if accepting {
            wait_listening(&child, &events_file);
            if let Some(status) = child.try_wait()? {
                return Err(LabError::CommandFailed {
                    netns: child.netns().to_string(),
                    command: "sustain-host listen".into(),
                    status: status.to_string(),
                    stderr: child.read_stderr().unwrap_or_default(),
                });
            }
        }
        Ok(End::Sustain {
            child,
            events_file,
            stopped_by_lab: AtomicBool::new(false),
        })
    }
}

impl RunningTransfer {
    /// Starts both endpoints, each of its own kind: the accepting one first, then the
    /// connecting one towards the acceptor's current address. `events_dir` receives
    /// the events files; `work_dir` the data files of `sustain` endpoints.
    pub fn start(
        topology: &Topology,
        spec: &TransferSpec,
        events_dir: &Path,
        work_dir: &Path,
        bin_dir: Option<&Path>,
    ) -> Result<RunningTransfer> {
        let acceptor_address = topology.address_of(spec.acceptor()).ok_or_else(|| {
            LabError::InvalidValue(format!(
                "the accepting end {} is not attached to a network",
                spec.acceptor()
            ))
        })?;
        let expected_sha256 = if spec.app.is_session() {
            hex::encode(Sha256::digest(spec.app.expected_output(spec.requests)))
        } else {
            TransferData::sha256(spec.seed, spec.bytes)
        };
        let shared = Arc::new(Shared::default());
        let is_sustain = |role| spec.kind_of(role) == EndpointKind::Sustain;
        let program = if is_sustain(Role::Sender) || is_sustain(Role::Receiver) {
            Some(find_sustain_host(bin_dir)?)
        } else {
            None
        };
        let starter = Starter {
            topology,
            spec,
            shared: &shared,
            events_dir,
            acceptor_address,
            program,
            send_file: work_dir.join("send.bin"),
            recv_file: work_dir.join("recv.bin"),
        };
        if is_sustain(Role::Sender) || spec.app == App::Http {
            TransferData::write_file(spec.seed, spec.bytes, &starter.send_file)?;
        }
        let started = Instant::now();
        let acceptor_role = spec.acceptor_role();
        let acceptor = starter.start(acceptor_role)?;
        let connector = match starter.start(acceptor_role.peer()) {
            Ok(end) => end,
            Err(err) => {
                // Not left waiting for a connection that will not come.
                shared.cancel.store(true, Ordering::Relaxed);
                acceptor.stop();
                return Err(err);
            }
        };
        let (sender, receiver) = match acceptor_role {
            Role::Sender => (acceptor, connector),
            Role::Receiver => (connector, acceptor),
        };
        let recv_file =
            (is_sustain(Role::Receiver) && spec.app == App::File).then_some(starter.recv_file);
        Ok(RunningTransfer {
            spec: spec.clone(),
            shared,
            sender,
            receiver,
            recv_file,
            expected_sha256,
            started,
        })
    }

    pub fn spec(&self) -> &TransferSpec {
        &self.spec
    }

    /// When the endpoints were started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the lab first asked the endpoints to stop, if it did. What the receiver
    /// reports after that (a sustain-host flushing its file as it exits) is not
    /// progress of the transfer.
    pub fn cancelled_at(&self) -> Option<Instant> {
        *self
            .shared
            .cancelled_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes the receiver has received so far.
    pub fn received(&self) -> u64 {
        if let End::App(app) = &self.receiver {
            return app.received();
        }
        match &self.recv_file {
            Some(recv_file) => fs::metadata(recv_file).map_or(0, |m| m.len()),
            None => self.shared.received.load(Ordering::Relaxed),
        }
    }

    /// True when both endpoints have ended.
    pub fn is_finished(&self) -> bool {
        self.sender.is_finished() && self.receiver.is_finished()
    }

    /// True while a `sustain-host` end is still running. sustain-host has no stall
    /// timeout of its own (a linux end does), so the lab's is its limit.
    pub fn sustain_end_running(&self) -> bool {
        [&self.sender, &self.receiver]
            .into_iter()
            .any(|end| match end {
                End::Sustain { .. } => !end.is_finished(),
                End::App(app) => app.sustain_running(),
                End::Linux(_) => false,
            })
    }

    /// Asks both endpoints to stop (the transfer timed out or stalled): linux
    /// endpoints give up within [`POLL`], sustain-host processes still running get
    /// SIGTERM.
    pub fn cancel(&self, reason: &str) {
        {
            let mut slot = self
                .shared
                .cancel_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.get_or_insert_with(|| reason.to_string());
            let mut at = self
                .shared
                .cancelled_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            at.get_or_insert_with(Instant::now);
        }
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.sender.stop();
        self.receiver.stop();
    }

    /// Waits for both endpoints and collects their results.
    pub fn finish(self) -> TransferResult {
        let cancel_reason = self
            .shared
            .cancel_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let recv_file = self.recv_file.as_deref();
        let sender = self.sender.finish(
            &self.spec,
            Role::Sender,
            self.started,
            cancel_reason.as_deref(),
            None,
        );
        let receiver = self.receiver.finish(
            &self.spec,
            Role::Receiver,
            self.started,
            cancel_reason.as_deref(),
            recv_file,
        );
        // The stream is generated, so the hash of its first N bytes is the hash
        // of TransferData(seed, N).
        let prefix_intact = match (&receiver.sha256, recv_file) {
            (Some(sha), Some(_)) if receiver.bytes < self.spec.bytes => {
                Some(*sha == TransferData::sha256(self.spec.seed, receiver.bytes))
            }
            _ => None,
        };
        TransferResult {
            sender,
            receiver,
            expected_bytes: self.spec.bytes,
            expected_sha256: self.expected_sha256,
            prefix_intact,
        }
    }
}

/// The directory of the sustain binaries: `explicit`, `$SUSTAIN_BIN_DIR`, or this
/// executable's directory.
pub fn bin_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(BIN_DIR_ENV).map(PathBuf::from))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
        })
        .unwrap_or_default()
}

/// `sustain-host`: in `bin_dir`, in `$SUSTAIN_BIN_DIR`, next to this executable, or
/// one directory up (test binaries live in `target/<profile>/deps`).
pub fn find_sustain_host(bin_dir: Option<&Path>) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = bin_dir {
        candidates.push(dir.join("sustain-host"));
    }
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        candidates.push(PathBuf::from(dir).join("sustain-host"));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("sustain-host"));
            if let Some(up) = dir.parent() {
                candidates.push(up.join("sustain-host"));
            }
        }
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            LabError::InvalidValue(format!(
                "sustain-host not found (looked at {}); build it with `cargo build -p sustain` \
                 or point --bin-dir / ${BIN_DIR_ENV} at it",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Waits until a `sustain-host listen` is ready: its events file has a `listening`
/// event (written once its RST guard and filter are up), it exited, or
/// [`LISTEN_WAIT`] passed (a sustain-host without that event: then the wait is the
/// grace it gets).
fn wait_listening(acceptor: &ChildProcess, events_file: &Path) {
    let deadline = Instant::now() + LISTEN_WAIT;
    while Instant::now() < deadline {
        let listening = listening_events(events_file) > 0;
        if listening || !matches!(acceptor.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sustain_result(
    child: &ChildProcess,
    node: &str,
    role: Role,
    events_file: PathBuf,
    started: Instant,
    cancel_reason: Option<&str>,
    recv_file: Option<&Path>,
) -> EndpointResult {
    let status = match child.wait_timeout(Duration::from_secs(10)) {
        Ok(Some(status)) => Some(status),
        _ => child.terminate(Duration::from_secs(2)).ok(),
    };
    let seconds = started.elapsed().as_secs_f64();
    let stdout = child.read_stdout().unwrap_or_default();
    let summary: Option<Value> = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str(line).ok());
    let stderr = child.read_stderr().unwrap_or_default();
    let error = match &status {
        Some(status) if status.success() => None,
        Some(status) => Some(
            cancel_reason
                .map(|reason| format!("stopped by the lab: {reason}"))
                .or_else(|| {
                    stderr
                        .lines()
                        .rev()
                        .find(|line| !line.trim().is_empty())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("sustain-host exited with {status}")),
        ),
        None => Some("sustain-host did not exit".into()),
    };
    let summary_bytes = summary
        .as_ref()
        .and_then(|s| s.get("bytes"))
        .and_then(Value::as_u64);
    let (bytes, sha256) = match recv_file {
        // The receiver's file is what arrived, whatever the summary says.
        Some(path) => match hash_file(path) {
            Ok((bytes, sha)) => (bytes, Some(sha)),
            Err(_) => (0, None),
        },
        None => (summary_bytes.unwrap_or(0), None),
    };
    EndpointResult {
        node: node.to_string(),
        role,
        error,
        bytes,
        sha256,
        seconds: summary
            .as_ref()
            .and_then(|s| s.get("seconds"))
            .and_then(Value::as_f64)
            .unwrap_or(seconds),
        events_file,
    }
}

enum Connection {
    Accept(TcpListener),
    Connect(SocketAddr),
}

struct LinuxEndpoint {
    node: String,
    role: Role,
    bytes: u64,
    seed: u64,
    stall_timeout: Duration,
    events_file: PathBuf,
    shared: Arc<Shared>,
}

/// Why a linux endpoint stopped early.
struct Stop(String);

impl LinuxEndpoint {
    fn run(self, connection: Connection, events: EventWriter) -> EndpointResult {
        let started = Instant::now();
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let outcome = self.exchange(connection, &events, &mut hasher, &mut bytes);
        let seconds = started.elapsed().as_secs_f64();
        let sha256 = (self.role == Role::Receiver).then(|| hex::encode(hasher.finalize()));
        let error = match outcome {
            Ok(()) => {
                events.record(
                    "finished",
                    json!({"bytes": bytes, "sha256": sha256, "seconds": seconds}),
                );
                None
            }
            Err(Stop(error)) => {
                events.record("failed", json!({"bytes": bytes, "error": error}));
                Some(error)
            }
        };
        EndpointResult {
            node: self.node,
            role: self.role,
            error,
            bytes,
            sha256,
            seconds,
            events_file: self.events_file,
        }
    }

    fn cancelled(&self) -> Option<Stop> {
        if !self.shared.cancel.load(Ordering::Relaxed) {
            return None;
        }
        let reason = self
            .shared
            .cancel_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "cancelled".into());
        Some(Stop(format!("stopped by the lab: {reason}")))
    }

    fn connect(&self, connection: Connection, events: &EventWriter) -> Result<TcpStream, Stop> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        match connection {
            Connection::Accept(listener) => {
                events.record(
                    "listening",
                    json!({"local": listener.local_addr().ok().map(|a| a.to_string())}),
                );
                loop {
                    if let Some(stop) = self.cancelled() {
                        return Err(stop);
                    }
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream
                                .set_nonblocking(false)
                                .map_err(|e| Stop(format!("accepted socket: {e}")))?;
                            return Ok(stream);
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                return Err(Stop(format!(
                                    "no connection within {}s",
                                    CONNECT_TIMEOUT.as_secs()
                                )));
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(err) => return Err(Stop(format!("accept: {err}"))),
                    }
                }
            }
            Connection::Connect(target) => loop {
                if let Some(stop) = self.cancelled() {
                    return Err(stop);
                }
                match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                    Ok(stream) => return Ok(stream),
                    Err(err) if Instant::now() < deadline => {
                        tracing::debug!(%err, %target, "connect failed; retrying");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(err) => return Err(Stop(format!("connect to {target}: {err}"))),
                }
            },
        }
    }

    fn exchange(
        &self,
        connection: Connection,
        events: &EventWriter,
        hasher: &mut Sha256,
        bytes: &mut u64,
    ) -> Result<(), Stop> {
        let mut stream = self.connect(connection, events)?;
        events.record(
            "connected",
            json!({
                "local": stream.local_addr().ok().map(|a| a.to_string()),
                "remote": stream.peer_addr().ok().map(|a| a.to_string()),
            }),
        );
        let setup = |stream: &TcpStream| -> io::Result<()> {
            stream.set_read_timeout(Some(POLL))?;
            stream.set_write_timeout(Some(POLL))?;
            set_user_timeout(stream, self.stall_timeout)
        };
        setup(&stream).map_err(|e| Stop(format!("socket options: {e}")))?;
        match self.role {
            Role::Sender => self.send(&mut stream, bytes),
            Role::Receiver => self.receive(&mut stream, hasher, bytes),
        }
    }

    fn stalled(&self, since: Instant, doing: &str) -> Option<Stop> {
        (since.elapsed() >= self.stall_timeout).then(|| {
            Stop(format!(
                "stalled: {doing} made no progress for {:.1}s",
                self.stall_timeout.as_secs_f64()
            ))
        })
    }

    fn send(&self, stream: &mut TcpStream, sent: &mut u64) -> Result<(), Stop> {
        let mut data = TransferData::new(self.seed, self.bytes);
        let mut buf = vec![0u8; CHUNK];
        let (mut start, mut end) = (0usize, 0usize);
        let mut progress = Instant::now();
        loop {
            if start == end {
                end = data.fill(&mut buf);
                start = 0;
                if end == 0 {
                    break;
                }
            }
            if let Some(stop) = self.cancelled() {
                return Err(stop);
            }
            match stream.write(&buf[start..end]) {
                Ok(0) => return Err(Stop("send: connection closed".into())),
                Ok(n) => {
                    start += n;
                    *sent += n as u64;
                    self.shared.sent.fetch_add(n as u64, Ordering::Relaxed);
                    progress = Instant::now();
                }
                Err(err) if is_timeout(&err) => {
                    if let Some(stop) = self.stalled(progress, "sending") {
                        return Err(stop);
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(Stop(format!("send: {err}"))),
            }
        }
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| Stop(format!("shutdown: {e}")))?;
        // Done when the receiver closes after reading everything: that proves delivery.
        let mut scratch = [0u8; 256];
        let progress = Instant::now();
        loop {
            if let Some(stop) = self.cancelled() {
                return Err(stop);
            }
            match stream.read(&mut scratch) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if is_timeout(&err) => {
                    if let Some(stop) = self.stalled(progress, "waiting for the receiver to close")
                    {
                        return Err(stop);
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(Stop(format!("waiting for the receiver to close: {err}"))),
            }
        }
    }

    fn receive(
        &self,
        stream: &mut TcpStream,
        hasher: &mut Sha256,
        received: &mut u64,
    ) -> Result<(), Stop> {
        let mut buf = vec![0u8; CHUNK];
        let mut progress = Instant::now();
        loop {
            if let Some(stop) = self.cancelled() {
                return Err(stop);
            }
            match stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    *received += n as u64;
                    self.shared.received.fetch_add(n as u64, Ordering::Relaxed);
                    progress = Instant::now();
                }
                Err(err) if is_timeout(&err) => {
                    if let Some(stop) = self.stalled(progress, "receiving") {
                        return Err(stop);
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(Stop(format!("receive: {err}"))),
            }
        }
    }
}

fn is_timeout(err: &io::Error) -> bool {
    // SO_RCVTIMEO/SO_SNDTIMEO expiry is EAGAIN; ETIMEDOUT from TCP_USER_TIMEOUT is a
    // dead connection, not a poll tick.
    err.kind() == ErrorKind::WouldBlock
}

/// `TCP_USER_TIMEOUT`: how long transmitted data may stay unacknowledged before the
/// kernel gives up on the connection with ETIMEDOUT.
fn set_user_timeout(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    nix::sys::socket::setsockopt(stream, sockopt::TcpUserTimeout, &millis)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_stream_is_the_prefix_of_a_longer_one() {
        // The prefix check of a broken transfer relies on it.
        let mut long = vec![0u8; 4096];
        TransferData::new(7, 4096).fill(&mut long);
        for n in [0u64, 1, 7, 8, 13, 1000, 4095] {
            let mut hasher = Sha256::new();
            hasher.update(&long[..n as usize]);
            assert_eq!(
                TransferData::sha256(7, n),
                hex::encode(hasher.finalize()),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn data_stream_does_not_depend_on_chunking_and_hashes_consistently() {
        let mut whole = vec![0u8; 1000];
        let n = TransferData::new(7, 1000).fill(&mut whole);
        assert_eq!(n, 1000);
        let mut pieces = Vec::new();
        let mut data = TransferData::new(7, 1000);
        let mut buf = [0u8; 64];
        loop {
            let n = data.fill(&mut buf);
            if n == 0 {
                break;
            }
            pieces.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole, pieces);
        assert_eq!(
            TransferData::sha256(7, 1000),
            hex::encode(Sha256::digest(&whole))
        );
        assert_ne!(TransferData::sha256(8, 1000), TransferData::sha256(7, 1000));
    }
}
