//! The transfer a scenario watches: a sender pushes deterministic pseudo-random bytes to
//! a receiver, which hashes what it gets.
//!
//! Two kinds of endpoints:
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

/// Which implementation runs the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    /// Kernel TCP, on lab threads.
    Linux,
    /// The `sustain-host` binary.
    Sustain,
}

impl EndpointKind {
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Linux => "linux",
            EndpointKind::Sustain => "sustain",
        }
    }
}

/// Which end opens the connection (the other one accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    Sender,
    Receiver,
}

/// The transfer of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferSpec {
    pub kind: EndpointKind,
    pub sender: String,
    pub receiver: String,
    pub initiator: Initiator,
    pub bytes: u64,
    /// The accepting side's port.
    pub port: u16,
    /// The whole transfer may take at most this long.
    pub timeout: Duration,
    /// No progress for this long ends the transfer as broken.
    pub stall_timeout: Duration,
    /// Seed of the data.
    pub seed: u64,
    /// Extra arguments for `sustain-host` on each side.
    pub sender_args: Vec<String>,
    pub receiver_args: Vec<String>,
}

impl TransferSpec {
    /// The end that accepts the connection.
    pub fn acceptor(&self) -> &str {
        match self.initiator {
            Initiator::Sender => &self.receiver,
            Initiator::Receiver => &self.sender,
        }
    }

    /// The end that opens the connection.
    pub fn connector(&self) -> &str {
        match self.initiator {
            Initiator::Sender => &self.sender,
            Initiator::Receiver => &self.receiver,
        }
    }
}

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

/// Appends JSON lines `{"time":…,"t":…,"event":…, …}` to a file, the format of
/// `sustain-host --events`.
#[derive(Debug)]
pub struct EventWriter {
    file: Mutex<File>,
    started: Instant,
}

/// Seconds since the Unix epoch, as a float.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    pub fn create(path: &Path) -> Result<EventWriter> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .context(|| format!("creating {}", path.display()))?;
        Ok(EventWriter {
            file: Mutex::new(file),
            started: Instant::now(),
        })
    }

    /// Appends one event; `fields` (an object) is merged into it.
    pub fn record(&self, event: &str, fields: Value) {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), json!(unix_now()));
        object.insert("t".into(), json!(self.started.elapsed().as_secs_f64()));
        object.insert("event".into(), json!(event));
        if let Value::Object(extra) = fields {
            object.extend(extra);
        }
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::warn!(%err, "could not write an event");
        }
    }
}

/// Which side of the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sender,
    Receiver,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// How one endpoint ended.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointResult {
    pub node: String,
    pub role: Role,
    /// Why it failed; `None` if it finished its part cleanly.
    pub error: Option<String>,
    /// Bytes sent (sender) or received (receiver).
    pub bytes: u64,
    /// SHA-256 of the received bytes (receiver).
    pub sha256: Option<String>,
    /// From start to end of its part.
    pub seconds: f64,
    /// Its JSON-lines events.
    pub events_file: PathBuf,
}

/// Both ends of a finished transfer.
#[derive(Clone, Debug)]
pub struct TransferResult {
    pub sender: EndpointResult,
    pub receiver: EndpointResult,
    pub expected_bytes: u64,
    pub expected_sha256: String,
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

enum Running {
    Linux {
        sender: JoinHandle<EndpointResult>,
        receiver: JoinHandle<EndpointResult>,
    },
    Sustain {
        sender: ChildProcess,
        receiver: ChildProcess,
        recv_file: PathBuf,
        sender_events: PathBuf,
        receiver_events: PathBuf,
        started: Instant,
    },
}

/// A transfer in progress.
pub struct RunningTransfer {
    spec: TransferSpec,
    shared: Arc<Shared>,
    running: Running,
    expected_sha256: String,
    started: Instant,
}

impl RunningTransfer {
    /// Starts both endpoints: the accepting one first, then the connecting one towards
    /// the acceptor's current address. `events_dir` receives the events files;
    /// `work_dir` the data files of `sustain` endpoints.
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
        let expected_sha256 = TransferData::sha256(spec.seed, spec.bytes);
        let shared = Arc::new(Shared::default());
        let events = |role: Role| {
            let node = match role {
                Role::Sender => &spec.sender,
                Role::Receiver => &spec.receiver,
            };
            events_dir.join(format!(
                "{node}-{}-{}.events.jsonl",
                spec.kind.name(),
                role.name()
            ))
        };
        let started = Instant::now();
        let running = match spec.kind {
            EndpointKind::Linux => start_linux(topology, spec, acceptor_address, &shared, &events)?,
            EndpointKind::Sustain => {
                let program = find_sustain_host(bin_dir)?;
                let send_file = work_dir.join("send.bin");
                let recv_file = work_dir.join("recv.bin");
                TransferData::write_file(spec.seed, spec.bytes, &send_file)?;
                let side = |role: Role| -> Command {
                    let (node, file_flag, file, extra) = match role {
                        Role::Sender => {
                            (&spec.sender, "--send-file", &send_file, &spec.sender_args)
                        }
                        Role::Receiver => (
                            &spec.receiver,
                            "--recv-file",
                            &recv_file,
                            &spec.receiver_args,
                        ),
                    };
                    let mut command = Command::new(&program);
                    if node == spec.acceptor() {
                        command
                            .arg("listen")
                            .arg("--bind")
                            .arg(format!("0.0.0.0:{}", spec.port));
                    } else {
                        command
                            .arg("connect")
                            .arg(SocketAddrV4::new(acceptor_address, spec.port).to_string());
                    }
                    command
                        .arg(file_flag)
                        .arg(file)
                        .arg("--events")
                        .arg(events(role))
                        .args(extra);
                    command
                };
                let (acceptor_role, connector_role) = match spec.initiator {
                    Initiator::Sender => (Role::Receiver, Role::Sender),
                    Initiator::Receiver => (Role::Sender, Role::Receiver),
                };
                let node_of = |role| match role {
                    Role::Sender => spec.sender.as_str(),
                    Role::Receiver => spec.receiver.as_str(),
                };
                let lab = topology.lab();
                let acceptor = lab.spawn(node_of(acceptor_role), side(acceptor_role))?;
                wait_listening(&acceptor, &events(acceptor_role));
                if let Some(status) = acceptor.try_wait()? {
                    return Err(LabError::CommandFailed {
                        netns: acceptor.netns().to_string(),
                        command: "sustain-host listen".into(),
                        status: status.to_string(),
                        stderr: acceptor.read_stderr().unwrap_or_default(),
                    });
                }
                let connector = lab.spawn(node_of(connector_role), side(connector_role))?;
                let (sender, receiver) = match acceptor_role {
                    Role::Sender => (acceptor, connector),
                    Role::Receiver => (connector, acceptor),
                };
                Running::Sustain {
                    sender,
                    receiver,
                    recv_file,
                    sender_events: events(Role::Sender),
                    receiver_events: events(Role::Receiver),
                    started,
                }
            }
        };
        Ok(RunningTransfer {
            spec: spec.clone(),
            shared,
            running,
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
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes the receiver has received so far.
    pub fn received(&self) -> u64 {
        match &self.running {
            Running::Linux { .. } => self.shared.received.load(Ordering::Relaxed),
            Running::Sustain { recv_file, .. } => {
                fs::metadata(recv_file).map(|m| m.len()).unwrap_or(0)
            }
        }
    }

    /// True when both endpoints have ended.
    pub fn is_finished(&self) -> bool {
        match &self.running {
            Running::Linux { sender, receiver } => sender.is_finished() && receiver.is_finished(),
            Running::Sustain {
                sender, receiver, ..
            } => {
                matches!(sender.try_wait(), Ok(Some(_)) | Err(_))
                    && matches!(receiver.try_wait(), Ok(Some(_)) | Err(_))
            }
        }
    }

    /// Asks both endpoints to stop (the transfer timed out or stalled): linux
    /// endpoints give up within [`POLL`], sustain-host processes get SIGTERM.
    pub fn cancel(&self, reason: &str) {
        {
            let mut slot = self
                .shared
                .cancel_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| reason.to_string());
            let mut at = self
                .shared
                .cancelled_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            at.get_or_insert_with(Instant::now);
        }
        self.shared.cancel.store(true, Ordering::Relaxed);
        if let Running::Sustain {
            sender, receiver, ..
        } = &self.running
        {
            for child in [sender, receiver] {
                let _ = child.terminate(Duration::from_secs(2));
            }
        }
    }

    /// Waits for both endpoints and collects their results.
    pub fn finish(self) -> TransferResult {
        let cancel_reason = self
            .shared
            .cancel_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (sender, receiver) = match self.running {
            Running::Linux { sender, receiver } => {
                let join = |handle: JoinHandle<EndpointResult>, node: &str, role: Role| {
                    handle.join().unwrap_or_else(|_| EndpointResult {
                        node: node.to_string(),
                        role,
                        error: Some("endpoint thread panicked".into()),
                        bytes: 0,
                        sha256: None,
                        seconds: 0.0,
                        events_file: PathBuf::new(),
                    })
                };
                (
                    join(sender, &self.spec.sender, Role::Sender),
                    join(receiver, &self.spec.receiver, Role::Receiver),
                )
            }
            Running::Sustain {
                sender,
                receiver,
                recv_file,
                sender_events,
                receiver_events,
                started,
            } => {
                let sender = sustain_result(
                    &sender,
                    &self.spec.sender,
                    Role::Sender,
                    sender_events,
                    started,
                    cancel_reason.as_deref(),
                    None,
                );
                let receiver = sustain_result(
                    &receiver,
                    &self.spec.receiver,
                    Role::Receiver,
                    receiver_events,
                    started,
                    cancel_reason.as_deref(),
                    Some(&recv_file),
                );
                (sender, receiver)
            }
        };
        TransferResult {
            sender,
            receiver,
            expected_bytes: self.spec.bytes,
            expected_sha256: self.expected_sha256,
        }
    }
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
        let listening = fs::read_to_string(events_file).is_ok_and(|text| {
            text.lines().any(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|event| event["event"] == "listening")
            })
        });
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

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

fn start_linux(
    topology: &Topology,
    spec: &TransferSpec,
    acceptor_address: Ipv4Addr,
    shared: &Arc<Shared>,
    events: &dyn Fn(Role) -> PathBuf,
) -> Result<Running> {
    let lab = topology.lab();
    let port = spec.port;
    let listener = lab
        .run_in(spec.acceptor(), move || -> io::Result<TcpListener> {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?
        .context(|| format!("listening on port {port} in {}", spec.acceptor()))?;
    let mut listener = Some(listener);
    let target = SocketAddr::from((acceptor_address, port));
    let mut handles: Vec<(Role, JoinHandle<EndpointResult>)> = Vec::new();
    for role in [Role::Sender, Role::Receiver] {
        let node = match role {
            Role::Sender => spec.sender.clone(),
            Role::Receiver => spec.receiver.clone(),
        };
        let connection = if node == spec.acceptor() {
            Connection::Accept(listener.take().ok_or_else(|| {
                LabError::InvalidValue("sender and receiver are the same node".into())
            })?)
        } else {
            Connection::Connect(target)
        };
        let endpoint = LinuxEndpoint {
            node: node.clone(),
            role,
            bytes: spec.bytes,
            seed: spec.seed,
            stall_timeout: spec.stall_timeout,
            events_file: events(role),
            shared: Arc::clone(shared),
        };
        let events = EventWriter::create(&endpoint.events_file)?;
        handles.push((
            role,
            lab.spawn_thread_in(&node, move || endpoint.run(connection, events))?,
        ));
    }
    let mut sender = None;
    let mut receiver = None;
    for (role, handle) in handles {
        match role {
            Role::Sender => sender = Some(handle),
            Role::Receiver => receiver = Some(handle),
        }
    }
    match (sender, receiver) {
        (Some(sender), Some(receiver)) => Ok(Running::Linux { sender, receiver }),
        _ => Err(LabError::InvalidValue("missing endpoint".into())),
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
            .unwrap_or_else(|p| p.into_inner())
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
    let millis = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: a valid socket and a c_uint option value of the right size.
    let ret = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
