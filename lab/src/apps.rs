//! Unmodified applications as the ends of a scenario's transfer (`app` in
//! `[transfer]`): an HTTP download with curl, an interactive ssh session,
//! and a telnet-like request/response session (the continuation paper's
//! check).
//!
//! On a `sustain` end the application speaks kernel TCP to a local
//! `sustain-host forward` in its node, which carries the connection over
//! sustain: the serving node runs `forward --from sustain:0.0.0.0:PORT --to
//! tcp:127.0.0.1:APP_PORT`, the client node `forward --from
//! tcp:127.0.0.1:LOCAL_PORT --to sustain:SERVER:PORT`. On a `linux` end the
//! application talks kernel TCP across the lab directly.
//!
//! The sender is the serving side (it sends the download, answers the
//! requests); the receiver is the client, whose received bytes the lab
//! watches (curl's output file, or the session's output) and judges
//! against what the server sent (the download's sha256, or the output a
//! run without any move gives, computed here).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

pub use crate::ends::App;
use crate::ends::{
    hash_file, listening_events, EndpointKind, EndpointResult, EventWriter, Role, TransferSpec,
};
use crate::error::{IoContext, LabError, Result};
use crate::process::ChildProcess;
use crate::topology::Topology;

/// The application port on a serving node's loopback (behind its forward).
const APP_PORT: u16 = 8080;
/// The port a client node's forward listens on (its loopback).
const LOCAL_PORT: u16 = 8081;
/// Longest wait for a server or a forward to accept connections.
const READY_WAIT: Duration = Duration::from_secs(10);
/// Bytes of each interactive request's payload.
const PAYLOAD: usize = 96;

impl App {
    /// Request `i` (from 1) of a session, as written to the connection.
    fn request(self, i: u32) -> String {
        match self {
            App::Ssh => format!("echo \"step {i} $(({i}*{i}))\"\n"),
            _ => {
                let mut payload = String::with_capacity(PAYLOAD);
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(i);
                while payload.len() < PAYLOAD {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    payload.push_str(&format!("{x:016x}"));
                }
                payload.truncate(PAYLOAD);
                format!("request {i} {payload}\n")
            }
        }
    }

    /// The answer to request line `line` (without its newline): what the
    /// interactive server sends, and what a session must read.
    fn answer(line: &str) -> Option<String> {
        let i: u32 = line
            .strip_prefix("request ")?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        Some(format!(
            "reply {i} {}\n",
            hex::encode(Sha256::digest(line.as_bytes()))
        ))
    }

    /// The expected reply to request `i`.
    fn reply(self, i: u32) -> String {
        match self {
            App::Ssh => format!("step {i} {}\n", u64::from(i) * u64::from(i)),
            _ => {
                let request = self.request(i);
                App::answer(request.trim_end()).unwrap_or_default()
            }
        }
    }

    /// What a session of `requests` requests reads when nothing goes wrong
    /// (a run without any move).
    pub fn expected_output(self, requests: u32) -> Vec<u8> {
        (1..=requests)
            .flat_map(|i| self.reply(i).into_bytes())
            .collect()
    }
}

/// What starting an application end needs (from the transfer's starter).
pub(crate) struct AppContext<'a> {
    pub topology: &'a Topology,
    pub spec: &'a TransferSpec,
    pub role: Role,
    pub events_file: PathBuf,
    /// Where the data and per-run files live (the run directory).
    pub work_dir: &'a Path,
    /// The serving end's address at the start.
    pub acceptor_address: Ipv4Addr,
    /// `sustain-host`, for sustain ends.
    pub program: Option<&'a Path>,
    /// The data an HTTP server serves.
    pub send_file: &'a Path,
    /// Where curl writes.
    pub recv_file: &'a Path,
}

/// A running application end.
pub struct AppEnd {
    node: String,
    role: Role,
    kind: EndpointKind,
    /// Supporting processes (forward, server), stopped at the end.
    services: Vec<ChildProcess>,
    /// The client process whose exit ends this end (curl).
    main: Option<ChildProcess>,
    /// A lab thread running the session (client) or the interactive server.
    thread: Option<JoinHandle<SessionResult>>,
    /// Bytes received (client) or served (server) so far.
    progress: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    events_file: PathBuf,
    recv_file: Option<PathBuf>,
    started: Instant,
}

/// How a lab-thread end went.
#[derive(Debug, Default)]
struct SessionResult {
    output: Vec<u8>,
    error: Option<String>,
}

impl AppEnd {
    /// Starts `ctx.role`'s end of the application; a serving end accepts
    /// connections when this returns.
    pub(crate) fn start(ctx: &AppContext<'_>) -> Result<AppEnd> {
        let spec = ctx.spec;
        let node = spec.node_of(ctx.role).to_string();
        let kind = spec.kind_of(ctx.role);
        let serving = ctx.role == Role::Sender;
        let mut end = AppEnd {
            node: node.clone(),
            role: ctx.role,
            kind,
            services: Vec::new(),
            main: None,
            thread: None,
            progress: Arc::new(AtomicU64::new(0)),
            cancel: Arc::new(AtomicBool::new(false)),
            events_file: ctx.events_file.clone(),
            recv_file: None,
            started: Instant::now(),
        };
        // The application's own address: behind the forward on loopback,
        // or the lab port itself on a linux end.
        let app_addr = match (serving, kind) {
            (true, EndpointKind::Sustain) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, APP_PORT),
            (true, EndpointKind::Linux) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, spec.port),
            (false, EndpointKind::Sustain) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, LOCAL_PORT),
            (false, EndpointKind::Linux) => SocketAddrV4::new(ctx.acceptor_address, spec.port),
        };
        if kind == EndpointKind::Linux {
            // The forward writes the events of a sustain end; a linux end gets
            // the lab's own, so every end has its file.
            EventWriter::create(&ctx.events_file)?.record(
                "app-started",
                json!({"app": spec.app.name(), "role": ctx.role.name(), "addr": app_addr.to_string()}),
            );
        }
        if serving {
            end.start_server(ctx, app_addr)?;
            if kind == EndpointKind::Sustain {
                end.start_forward(
                    ctx,
                    format!("sustain:0.0.0.0:{}", spec.port),
                    format!("tcp:{app_addr}"),
                )?;
            }
        } else {
            if kind == EndpointKind::Sustain {
                end.start_forward(
                    ctx,
                    format!("tcp:{app_addr}"),
                    format!(
                        "sustain:{}",
                        SocketAddrV4::new(ctx.acceptor_address, spec.port)
                    ),
                )?;
            }
            end.start_client(ctx, app_addr)?;
        }
        Ok(end)
    }

    /// `sustain-host forward --from FROM --to TO` in this end's node, up and
    /// listening when this returns.
    fn start_forward(&mut self, ctx: &AppContext<'_>, from: String, to: String) -> Result<()> {
        let program = ctx.program.ok_or_else(|| {
            LabError::InvalidValue("no sustain-host for a sustain endpoint".into())
        })?;
        let mut command = Command::new(program);
        command
            .arg("forward")
            .arg("--from")
            .arg(&from)
            .arg("--to")
            .arg(&to)
            .arg("--events")
            .arg(&ctx.events_file)
            .args(ctx.spec.args_of(ctx.role));
        let child = ctx.topology.lab().spawn(&self.node, command)?;
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if listening_events(&ctx.events_file) > 0 {
                break;
            }
            if let Some(status) = child.try_wait()? {
                return Err(LabError::CommandFailed {
                    netns: child.netns().to_string(),
                    command: format!("sustain-host forward --from {from} --to {to}"),
                    status: status.to_string(),
                    stderr: child.read_stderr().unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("sustain-host forward in {} to listen", self.node),
                    after: READY_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.services.push(child);
        Ok(())
    }

    fn start_server(&mut self, ctx: &AppContext<'_>, addr: SocketAddrV4) -> Result<()> {
        let lab = ctx.topology.lab();
        match ctx.spec.app {
            App::Http => {
                let dir = ctx.send_file.parent().unwrap_or(Path::new("/"));
                let mut command = Command::new(tool("python3", "python3")?);
                command
                    .args(["-m", "http.server", &addr.port().to_string(), "--bind"])
                    .arg(addr.ip().to_string())
                    .arg("--directory")
                    .arg(dir);
                self.services.push(lab.spawn(&self.node, command)?);
            }
            App::Ssh => {
                let sshd = tool("sshd", "openssh-server")?;
                let keys = SshKeys::generate(ctx.work_dir)?;
                // sshd insists on its privilege-separation directory.
                fs::create_dir_all("/run/sshd").context(|| "creating /run/sshd".to_string())?;
                let mut command = Command::new(sshd);
                command.args(["-D", "-e", "-f", "/dev/null"]);
                for option in [
                    format!("Port={}", addr.port()),
                    format!("ListenAddress={}", addr.ip()),
                    format!("HostKey={}", keys.host_key.display()),
                    format!("AuthorizedKeysFile={}", keys.authorized.display()),
                    "PermitRootLogin=prohibit-password".into(),
                    "PasswordAuthentication=no".into(),
                    "KbdInteractiveAuthentication=no".into(),
                    "UsePAM=no".into(),
                    "StrictModes=no".into(),
                    "PidFile=none".into(),
                ] {
                    command.arg("-o").arg(option);
                }
                self.services.push(lab.spawn(&self.node, command)?);
            }
            App::Interactive => {
                let listener = lab
                    .run_in(&self.node, move || -> io::Result<TcpListener> {
                        let listener = TcpListener::bind(addr)?;
                        listener.set_nonblocking(true)?;
                        Ok(listener)
                    })?
                    .context(|| format!("listening on {addr}"))?;
                let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
                self.thread = Some(lab.spawn_thread_in(&self.node, move || {
                    serve_interactive(listener, &progress, &cancel)
                })?);
                return Ok(());
            }
            App::File => unreachable!("file transfers are not applications"),
        }
        // Ready once the application accepts connections.
        let probe = SocketAddrV4::new(
            if addr.ip().is_unspecified() {
                Ipv4Addr::LOCALHOST
            } else {
                *addr.ip()
            },
            addr.port(),
        );
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let up = lab.run_in(&self.node, move || {
                TcpStream::connect_timeout(&SocketAddr::V4(probe), Duration::from_millis(200))
                    .is_ok()
            })?;
            if up {
                return Ok(());
            }
            for service in &self.services {
                if let Some(status) = service.try_wait()? {
                    return Err(LabError::CommandFailed {
                        netns: service.netns().to_string(),
                        command: format!("{} server", ctx.spec.app.name()),
                        status: status.to_string(),
                        stderr: service.read_stderr().unwrap_or_default(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "the {} server in {} to listen",
                        ctx.spec.app.name(),
                        self.node
                    ),
                    after: READY_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_client(&mut self, ctx: &AppContext<'_>, addr: SocketAddrV4) -> Result<()> {
        let lab = ctx.topology.lab();
        let spec = ctx.spec;
        match spec.app {
            App::Http => {
                let name = ctx
                    .send_file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut command = Command::new(tool("curl", "curl")?);
                command
                    .args(["--silent", "--show-error", "--fail", "--no-progress-meter"])
                    // curl reads until the server closes instead of closing as
                    // soon as Content-Length bytes arrived: the server's FIN
                    // always comes first, so the transcript's end is the same
                    // in every run. The length is still checked: the received
                    // file must equal the sent one byte for byte.
                    .arg("--ignore-content-length")
                    .arg("--max-time")
                    .arg(spec.timeout.as_secs().to_string())
                    .arg("--output")
                    .arg(ctx.recv_file)
                    .arg(format!("http://{addr}/{name}"));
                self.recv_file = Some(ctx.recv_file.to_path_buf());
                self.main = Some(lab.spawn(&self.node, command)?);
            }
            App::Ssh => {
                let ssh = tool("ssh", "openssh-client")?;
                let key = SshKeys::client_key(ctx.work_dir);
                let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
                let (requests, interval, stall) =
                    (spec.requests, spec.interval, spec.stall_timeout);
                self.thread = Some(lab.spawn_thread_in(&self.node, move || {
                    ssh_session(
                        &ssh, &key, addr, requests, interval, stall, &progress, &cancel,
                    )
                })?);
            }
            App::Interactive => {
                let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
                let (requests, interval, stall) =
                    (spec.requests, spec.interval, spec.stall_timeout);
                self.thread = Some(lab.spawn_thread_in(&self.node, move || {
                    interactive_session(addr, requests, interval, stall, &progress, &cancel)
                })?);
            }
            App::File => unreachable!("file transfers are not applications"),
        }
        Ok(())
    }

    /// Bytes received (client) or served (server) so far.
    pub fn received(&self) -> u64 {
        match &self.recv_file {
            Some(path) => fs::metadata(path).map_or(0, |m| m.len()),
            None => self.progress.load(Ordering::Relaxed),
        }
    }

    /// A serving end runs until the client is done; a client end until its
    /// process or session ends.
    pub fn is_finished(&self) -> bool {
        if self.role == Role::Sender {
            return true;
        }
        if let Some(main) = &self.main {
            return matches!(main.try_wait(), Ok(Some(_)) | Err(_));
        }
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// A sustain end whose client is still running (the lab's stall timeout
    /// is its limit).
    pub fn sustain_running(&self) -> bool {
        self.kind == EndpointKind::Sustain && !self.is_finished()
    }

    /// Asks the end to stop now (cancelled transfer).
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(main) = &self.main {
            if matches!(main.try_wait(), Ok(None)) {
                let _ = main.terminate(Duration::from_secs(2));
            }
        }
    }

    /// Waits for the client (or stops the server) and reports.
    pub fn finish(self, cancel_reason: Option<&str>) -> EndpointResult {
        let mut error = None;
        let mut output = None;
        if let Some(main) = &self.main {
            let status = match main.wait_timeout(Duration::from_secs(10)) {
                Ok(Some(status)) => Some(status),
                _ => main.terminate(Duration::from_secs(2)).ok(),
            };
            error = match status {
                Some(s) if s.success() => None,
                Some(s) => Some(
                    cancel_reason
                        .map(|r| format!("stopped by the lab: {r}"))
                        .or_else(|| {
                            main.read_stderr()
                                .ok()
                                .and_then(|e| {
                                    e.lines()
                                        .rev()
                                        .find(|l| !l.trim().is_empty())
                                        .map(str::to_string)
                                })
                                .map(|line| format!("{line} ({s})"))
                        })
                        .unwrap_or_else(|| format!("client exited with {s}")),
                ),
                None => Some("client did not exit".into()),
            };
        }
        if self.role == Role::Sender {
            self.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(thread) = self.thread {
            match thread.join() {
                Ok(result) => {
                    error = result.error.map(|e| match cancel_reason {
                        Some(r) => format!("stopped by the lab: {r} ({e})"),
                        None => e,
                    });
                    output = Some(result.output);
                }
                Err(_) => error = Some("session thread panicked".into()),
            }
        }
        // Services that died before the lab stopped them failed the end.
        for service in &self.services {
            if let Ok(Some(status)) = service.try_wait() {
                if !status.success() && error.is_none() {
                    error = Some(format!(
                        "{} exited with {status}: {}",
                        service.label(),
                        service
                            .read_stderr()
                            .unwrap_or_default()
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or_default()
                    ));
                }
            } else {
                let _ = service.terminate(Duration::from_secs(2));
            }
        }
        // A session that broke on a sustain end: say what the forward saw.
        if let (Some(e), EndpointKind::Sustain) = (error.as_mut(), self.kind) {
            if let Some(reason) = sustain_failure(&self.events_file) {
                e.push_str(&format!("; sustain-host forward: connection {reason}"));
            }
        }
        let (bytes, sha256) = match (&self.recv_file, &output) {
            (Some(path), _) => match hash_file(path) {
                Ok((bytes, sha)) => (bytes, Some(sha)),
                Err(_) => (0, None),
            },
            (None, Some(out)) if self.role == Role::Receiver => {
                (out.len() as u64, Some(hex::encode(Sha256::digest(out))))
            }
            _ => (self.progress.load(Ordering::Relaxed), None),
        };
        EndpointResult {
            node: self.node,
            role: self.role,
            error,
            bytes,
            sha256,
            seconds: self.started.elapsed().as_secs_f64(),
            events_file: self.events_file,
        }
    }
}

/// The reason of the first abnormal `closed` event in a sustain-host
/// events file.
fn sustain_failure(events_file: &Path) -> Option<String> {
    let text = fs::read_to_string(events_file).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|e| e["event"] == "closed" && e["reason"] != "normal")
        .and_then(|e| e["reason"].as_str().map(str::to_string))
}

/// The absolute path of `program`, or an error naming the Debian package
/// that provides it (`./justw` installs them).
fn tool(program: &str, package: &str) -> Result<PathBuf> {
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(LabError::InvalidValue(format!(
        "{program} is not installed: this scenario needs Debian's {package} \
         (apt-get install {package}; ./justw installs it)"
    )))
}

/// A throwaway host key and client key per run.
struct SshKeys {
    host_key: PathBuf,
    authorized: PathBuf,
}

impl SshKeys {
    fn client_key(dir: &Path) -> PathBuf {
        dir.join("ssh_client_ed25519")
    }

    fn generate(dir: &Path) -> Result<SshKeys> {
        let keygen = tool("ssh-keygen", "openssh-client")?;
        let host_key = dir.join("ssh_host_ed25519");
        let client = SshKeys::client_key(dir);
        for (path, comment) in [
            (&host_key, "sustain-lab host"),
            (&client, "sustain-lab client"),
        ] {
            let _ = fs::remove_file(path);
            let out = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path)
                .output()
                .context(|| "running ssh-keygen".to_string())?;
            if !out.status.success() {
                return Err(LabError::InvalidValue(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let authorized = dir.join("ssh_authorized_keys");
        fs::copy(client.with_extension("pub"), &authorized)
            .context(|| "writing the authorized keys".to_string())?;
        Ok(SshKeys {
            host_key,
            authorized,
        })
    }
}

/// Lines read from `reader` on a thread of their own, so the session can
/// wait for each with a stall timeout whatever the reader is (a socket, a
/// pipe). Ends with `None` at end of stream; errors end it too.
fn line_reader(reader: impl Read + Send + 'static) -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(line)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// Sends `requests` requests of `app`, one every `interval`, each after the
/// previous one's answer; returns what was read.
#[allow(clippy::too_many_arguments)]
fn run_requests(
    app: App,
    writer: &mut dyn Write,
    lines: &mpsc::Receiver<io::Result<String>>,
    requests: u32,
    interval: Duration,
    stall: Duration,
    progress: &AtomicU64,
    cancel: &AtomicBool,
) -> SessionResult {
    let mut output = Vec::new();
    for i in 1..=requests {
        if cancel.load(Ordering::Relaxed) {
            return SessionResult {
                output,
                error: Some(format!("cancelled before request {i}")),
            };
        }
        if let Err(e) = writer
            .write_all(app.request(i).as_bytes())
            .and_then(|()| writer.flush())
        {
            return SessionResult {
                output,
                error: Some(format!("request {i}: {e}")),
            };
        }
        let line = match lines.recv_timeout(stall) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                return SessionResult {
                    output,
                    error: Some(format!("reply {i}: {e}")),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return SessionResult {
                    output,
                    error: Some(format!(
                        "reply {i}: none within {:.1}s",
                        stall.as_secs_f64()
                    )),
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return SessionResult {
                    output,
                    error: Some(format!("reply {i}: the connection ended")),
                }
            }
        };
        output.extend_from_slice(line.as_bytes());
        progress.fetch_add(line.len() as u64, Ordering::Relaxed);
        std::thread::sleep(interval);
    }
    SessionResult {
        output,
        error: None,
    }
}

/// The client of the telnet-like session.
fn interactive_session(
    addr: SocketAddrV4,
    requests: u32,
    interval: Duration,
    stall: Duration,
    progress: &AtomicU64,
    cancel: &AtomicBool,
) -> SessionResult {
    let stream = match TcpStream::connect_timeout(&SocketAddr::V4(addr), READY_WAIT) {
        Ok(s) => s,
        Err(e) => {
            return SessionResult {
                output: Vec::new(),
                error: Some(format!("connect to {addr}: {e}")),
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            return SessionResult {
                output: Vec::new(),
                error: Some(format!("cloning the socket: {e}")),
            }
        }
    };
    let lines = line_reader(reader);
    let mut writer = &stream;
    let mut result = run_requests(
        App::Interactive,
        &mut writer,
        &lines,
        requests,
        interval,
        stall,
        progress,
        cancel,
    );
    if result.error.is_none() {
        // Close our half and wait for the server's: a clean end of session.
        let _ = stream.shutdown(Shutdown::Write);
        match lines.recv_timeout(stall) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Ok(Ok(extra)) => {
                result.error = Some(format!("unexpected line after the session: {extra:?}"));
            }
            Ok(Err(e)) => result.error = Some(format!("closing: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                result.error = Some("the server did not close the session".into());
            }
        }
    }
    result
}

/// The server of the telnet-like session: answers each request line of
/// one connection until the client closes.
fn serve_interactive(
    listener: TcpListener,
    served: &AtomicU64,
    cancel: &AtomicBool,
) -> SessionResult {
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if cancel.load(Ordering::Relaxed) {
                    return SessionResult::default();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return SessionResult {
                    output: Vec::new(),
                    error: Some(format!("accept: {e}")),
                }
            }
        }
    };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => {
                let answer = App::answer(line.trim_end()).unwrap_or_else(|| "error\n".into());
                if let Err(e) = writer.write_all(answer.as_bytes()) {
                    return SessionResult {
                        output: Vec::new(),
                        error: Some(format!("answering: {e}")),
                    };
                }
                served.fetch_add(answer.len() as u64, Ordering::Relaxed);
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
            }
            Err(e) => {
                return SessionResult {
                    output: Vec::new(),
                    error: Some(format!("reading requests: {e}")),
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    SessionResult::default()
}

/// An ssh client session: `sh` on the server, commands on its stdin one
/// every `interval`, output read line by line.
#[allow(clippy::too_many_arguments)]
fn ssh_session(
    ssh: &Path,
    key: &Path,
    addr: SocketAddrV4,
    requests: u32,
    interval: Duration,
    stall: Duration,
    progress: &AtomicU64,
    cancel: &AtomicBool,
) -> SessionResult {
    let spawned = Command::new(ssh)
        .arg("-T")
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("root@{}", addr.ip()))
        .arg("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return SessionResult {
                output: Vec::new(),
                error: Some(format!("starting ssh: {e}")),
            }
        }
    };
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        return SessionResult {
            output: Vec::new(),
            error: Some("ssh without pipes".into()),
        };
    };
    let lines = line_reader(stdout);
    let mut result = run_requests(
        App::Ssh,
        &mut stdin,
        &lines,
        requests,
        interval,
        stall,
        progress,
        cancel,
    );
    drop(stdin); // end of the session: the remote sh exits
    let deadline = Instant::now() + stall;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors);
    if result.error.is_none() && !status.is_some_and(|s| s.success()) {
        result.error = Some(format!(
            "ssh exited with {}: {}",
            status.map_or("no status".into(), |s| s.to_string()),
            errors.trim()
        ));
    } else if let Some(e) = result.error.as_mut() {
        if !errors.trim().is_empty() {
            e.push_str(&format!(" (ssh: {})", errors.trim()));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_have_deterministic_requests_and_answers() {
        let request = App::Interactive.request(7);
        assert!(request.starts_with("request 7 "));
        assert_eq!(request.len(), "request 7 ".len() + PAYLOAD + 1);
        assert_eq!(request, App::Interactive.request(7));
        assert_ne!(request, App::Interactive.request(8));
        let answer = App::answer(request.trim_end()).unwrap();
        assert!(answer.starts_with("reply 7 ") && answer.ends_with('\n'));
        assert_eq!(answer, App::Interactive.reply(7));
        assert_eq!(App::answer("garbage"), None);
        assert_eq!(App::Ssh.reply(12), "step 12 144\n");
        assert_eq!(App::Ssh.request(3), "echo \"step 3 $((3*3))\"\n");
        let expected = App::Ssh.expected_output(3);
        assert_eq!(expected, b"step 1 1\nstep 2 4\nstep 3 9\n");
        for name in ["file", "http", "ssh", "interactive"] {
            assert_eq!(App::from_name(name).unwrap().name(), name);
        }
        assert!(App::from_name("telnet").is_err());
    }
}
