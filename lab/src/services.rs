//! The programs behind node roles: a `mobility-server` node runs
//! `sustain-server`, and every sustain end of a scenario with such a node
//! gets `--server ADDR:PORT` (sustain-host and its forward alike). A
//! `proxy` node runs `sustain-proxy` (started first), and the server gets
//! `--proxy ADDR:PORT --relay-secret FILE` with a secret drawn for the run
//! (PROTOCOL.md §6.9, §15.14).
//!
//! The server is started before the transfer and stopped after it; its
//! events file joins the timeline. A scenario may kill and restart it
//! mid-transfer (`[[restart]]`): the hosts' control sessions drop, they
//! register again with the new process, and a move after that must still
//! be decided by the server.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ends::listening_events;
use crate::error::{IoContext, LabError, Result};
use crate::process::ChildProcess;
use crate::topology::{NodeRole, Topology};

/// The port sustain-server listens on in its node.
pub const SERVER_PORT: u16 = 7001;
/// The port sustain-proxy's control sessions arrive on in its node.
pub const PROXY_CONTROL_PORT: u16 = 7002;
/// The run's relay secret in its output directory (64 hex digits).
pub const RELAY_SECRET_FILE: &str = "relay.secret";
/// The proxy's relay ports.
pub const RELAY_PORTS: &str = "40000-40999";
/// Longest wait for a started server to report `listening`.
const READY_WAIT: Duration = Duration::from_secs(5);

/// A running `sustain-server`.
pub struct MobilityServer {
    node: String,
    program: PathBuf,
    address: SocketAddrV4,
    events_file: PathBuf,
    child: Option<ChildProcess>,
    /// Processes of earlier incarnations (after a restart), kept for logs.
    retired: Vec<ChildProcess>,
    /// `--proxy ADDR:PORT --relay-secret FILE` when the scenario has a proxy.
    proxy_args: Vec<String>,
}

impl MobilityServer {
    /// Starts `sustain-server` in the scenario's mobility-server node, if it
    /// has one. `sustain_host` locates the sibling binary.
    pub fn start(
        topology: &Topology,
        sustain_host: &Path,
        out_dir: &Path,
        proxy: Option<&Proxy>,
    ) -> Result<Option<MobilityServer>> {
        let Some(node) = topology
            .spec()
            .nodes
            .iter()
            .find(|n| n.role == NodeRole::MobilityServer)
        else {
            return Ok(None);
        };
        let ip = topology.address_of(&node.name).ok_or_else(|| {
            LabError::InvalidValue(format!(
                "the mobility server {} is not attached to a network",
                node.name
            ))
        })?;
        let program = sustain_host.with_file_name("sustain-server");
        if !program.is_file() {
            return Err(LabError::InvalidValue(format!(
                "{} is missing: build it (cargo build -p sustain)",
                program.display()
            )));
        }
        let mut server = MobilityServer {
            node: node.name.clone(),
            program,
            address: SocketAddrV4::new(ip, SERVER_PORT),
            events_file: out_dir.join(format!("{}-sustain-server.events.jsonl", node.name)),
            child: None,
            retired: Vec::new(),
            proxy_args: proxy.map(Proxy::server_args).unwrap_or_default(),
        };
        server.launch(topology)?;
        Ok(Some(server))
    }

    fn launch(&mut self, topology: &Topology) -> Result<()> {
        let mut command = Command::new(&self.program);
        command
            .arg("--bind")
            .arg(self.address.to_string())
            .arg("--events")
            .arg(&self.events_file)
            .args(&self.proxy_args);
        let before = listening_events(&self.events_file);
        let child = topology.lab().spawn(&self.node, command)?;
        let what = format!("sustain-server --bind {}", self.address);
        wait_ready(&child, &self.events_file, before, &self.node, &what)?;
        self.child = Some(child);
        Ok(())
    }

    /// Where hosts reach it.
    pub fn address(&self) -> SocketAddrV4 {
        self.address
    }

    /// The node it runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The arguments every sustain end gets.
    pub fn host_args(&self) -> Vec<String> {
        vec!["--server".into(), self.address.to_string()]
    }

    /// Its JSON-lines events (every incarnation appends).
    pub fn events_file(&self) -> &Path {
        &self.events_file
    }

    /// Kills the server (SIGKILL: a crash, nothing said to anyone) and
    /// starts a new one, empty, on the same address.
    pub fn restart(&mut self, topology: &Topology) -> Result<()> {
        if let Some(child) = self.child.take() {
            child.kill()?;
            self.retired.push(child);
        }
        self.launch(topology)
    }

    /// Stops it (SIGTERM: it logs its counters).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.terminate(Duration::from_secs(2));
            self.retired.push(child);
        }
    }
}

impl Drop for MobilityServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for a started service's `listening` event (one more than
/// `before` in its events file).
fn wait_ready(
    child: &ChildProcess,
    events_file: &Path,
    before: usize,
    node: &str,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    while listening_events(events_file) <= before {
        if let Some(status) = child.try_wait()? {
            return Err(LabError::CommandFailed {
                netns: child.netns().to_string(),
                command: what.to_owned(),
                status: status.to_string(),
                stderr: child.read_stderr().unwrap_or_default(),
            });
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("{what} in {node} to listen"),
                after: READY_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A running `sustain-proxy` (the `proxy` role).
pub struct Proxy {
    node: String,
    control: SocketAddrV4,
    secret_file: PathBuf,
    events_file: PathBuf,
    child: Option<ChildProcess>,
}

impl Proxy {
    /// Starts `sustain-proxy` in the scenario's proxy node, if it has one,
    /// with a relay secret drawn for this run (`OUT/relay.secret`).
    pub fn start(
        topology: &Topology,
        sustain_host: &Path,
        out_dir: &Path,
    ) -> Result<Option<Proxy>> {
        let Some(node) = topology
            .spec()
            .nodes
            .iter()
            .find(|n| n.role == NodeRole::Proxy)
        else {
            return Ok(None);
        };
        let ip = topology.address_of(&node.name).ok_or_else(|| {
            LabError::InvalidValue(format!(
                "the proxy {} is not attached to a network",
                node.name
            ))
        })?;
        let program = sustain_host.with_file_name("sustain-proxy");
        if !program.is_file() {
            return Err(LabError::InvalidValue(format!(
                "{} is missing: build it (cargo build -p sustain)",
                program.display()
            )));
        }
        let secret_file = out_dir.join(RELAY_SECRET_FILE);
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
            .context(|| "drawing the relay secret".into())?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&secret_file, format!("{hex}\n"))
            .context(|| format!("writing {}", secret_file.display()))?;
        let mut proxy = Proxy {
            node: node.name.clone(),
            control: SocketAddrV4::new(ip, PROXY_CONTROL_PORT),
            secret_file,
            events_file: out_dir.join(format!("{}-sustain-proxy.events.jsonl", node.name)),
            child: None,
        };
        let mut command = Command::new(&program);
        command
            .arg("--bind")
            .arg(ip.to_string())
            .arg("--control")
            .arg(proxy.control.to_string())
            .args(["--ports", RELAY_PORTS, "--relay-secret"])
            .arg(&proxy.secret_file)
            .arg("--events")
            .arg(&proxy.events_file);
        let before = listening_events(&proxy.events_file);
        let child = topology.lab().spawn(&proxy.node, command)?;
        let what = format!("sustain-proxy --bind {ip}");
        wait_ready(&child, &proxy.events_file, before, &proxy.node, &what)?;
        proxy.child = Some(child);
        Ok(Some(proxy))
    }

    /// Its control address.
    pub fn control(&self) -> SocketAddrV4 {
        self.control
    }

    /// The node it runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What sustain-server gets to use it.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--proxy".into(),
            self.control.to_string(),
            "--relay-secret".into(),
            self.secret_file.display().to_string(),
        ]
    }

    /// Its JSON-lines events (relays, refusals, final counters).
    pub fn events_file(&self) -> &Path {
        &self.events_file
    }

    /// Stops it (SIGTERM: it logs its counters).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.terminate(Duration::from_secs(2));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}
