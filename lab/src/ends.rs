//! The ends of a transfer as both the file transfer (`transfer`) and the
//! applications (`apps`) see them: the spec (kinds, roles, the app), how an
//! end ended, and its JSON-lines events file. Both build on this module and
//! on nothing of each other's spec, so the two depend one way (`transfer`
//! starts `apps`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Read size for hashing a file.
const CHUNK: usize = 64 * 1024;

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
    /// The kind of both ends, unless an end has its own.
    pub kind: EndpointKind,
    /// The sender's own kind (`sender_kind` in a scenario file); `None`: `kind`.
    pub sender_kind: Option<EndpointKind>,
    /// The receiver's own kind (`receiver_kind`); `None`: `kind`.
    pub receiver_kind: Option<EndpointKind>,
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
    /// What the ends run: a file transfer, or an application (through
    /// `sustain-host forward` on a sustain end, on kernel TCP on a linux end).
    pub app: App,
    /// Requests of an interactive app (`ssh`, `interactive`), ...
    pub requests: u32,
    /// ... one every `interval`.
    pub interval: Duration,
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

    /// The role of the end that accepts the connection.
    pub fn acceptor_role(&self) -> Role {
        match self.initiator {
            Initiator::Sender => Role::Receiver,
            Initiator::Receiver => Role::Sender,
        }
    }

    /// The node of an end.
    pub fn node_of(&self, role: Role) -> &str {
        match role {
            Role::Sender => &self.sender,
            Role::Receiver => &self.receiver,
        }
    }

    /// The kind of an end: its own, else `kind`.
    pub fn kind_of(&self, role: Role) -> EndpointKind {
        match role {
            Role::Sender => self.sender_kind,
            Role::Receiver => self.receiver_kind,
        }
        .unwrap_or(self.kind)
    }

    /// The kind of both ends if they agree, else `"mixed"`.
    pub fn kind_label(&self) -> &'static str {
        let sender = self.kind_of(Role::Sender);
        if sender == self.kind_of(Role::Receiver) {
            sender.name()
        } else {
            "mixed"
        }
    }

    /// Extra `sustain-host` arguments of an end.
    pub fn args_of(&self, role: Role) -> &[String] {
        match role {
            Role::Sender => &self.sender_args,
            Role::Receiver => &self.receiver_args,
        }
    }
}

/// What the ends of a transfer run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// The lab's own sender and receiver (sustain-host, or kernel TCP threads).
    File,
    /// python3's http.server serving the data, curl downloading it.
    Http,
    /// Debian's OpenSSH server, and an ssh client sending commands at intervals.
    Ssh,
    /// A telnet-like session: request lines at intervals, each answered.
    Interactive,
}

impl App {
    /// The `app` names of a scenario file.
    pub fn from_name(name: &str) -> std::result::Result<App, String> {
        match name {
            "file" => Ok(App::File),
            "http" => Ok(App::Http),
            "ssh" => Ok(App::Ssh),
            "interactive" => Ok(App::Interactive),
            other => Err(format!(
                "unknown app {other:?}; expected \"file\", \"http\", \"ssh\" or \"interactive\""
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            App::File => "file",
            App::Http => "http",
            App::Ssh => "ssh",
            App::Interactive => "interactive",
        }
    }

    /// An interactive session (requests at intervals) rather than a download.
    pub fn is_session(self) -> bool {
        matches!(self, App::Ssh | App::Interactive)
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
        .map_or(0.0, |d| d.as_secs_f64())
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
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
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

/// How many `listening` events a JSON-lines events file holds (a restarted
/// process appends another).
pub(crate) fn listening_events(events_file: &Path) -> usize {
    fs::read_to_string(events_file).map_or(0, |text| {
        text.lines()
            .filter(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|e| e["event"] == "listening")
            })
            .count()
    })
}

/// Bytes and SHA-256 (hex) of a file.
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, String)> {
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
