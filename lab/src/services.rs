//! The programs behind node roles: a `mobility-server` node runs
//! `sustain-server`, and every sustain end of a scenario with such a node
//! gets `--server ADDR:PORT` (sustain-host and its forward alike).
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

use crate::error::{LabError, Result};
use crate::process::ChildProcess;
use crate::topology::{NodeRole, Topology};
use crate::transfer::listening_events;

/// The port sustain-server listens on in its node.
pub const SERVER_PORT: u16 = 7001;
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
}

impl MobilityServer {
    /// Starts `sustain-server` in the scenario's mobility-server node, if it
    /// has one. `sustain_host` locates the sibling binary.
    pub fn start(
        topology: &Topology,
        sustain_host: &Path,
        out_dir: &Path,
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
            .arg(&self.events_file);
        let before = listening_events(&self.events_file);
        let child = topology.lab().spawn(&self.node, command)?;
        let deadline = Instant::now() + READY_WAIT;
        while listening_events(&self.events_file) <= before {
            if let Some(status) = child.try_wait()? {
                return Err(LabError::CommandFailed {
                    netns: child.netns().to_string(),
                    command: format!("sustain-server --bind {}", self.address),
                    status: status.to_string(),
                    stderr: child.read_stderr().unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("sustain-server in {} to listen", self.node),
                    after: READY_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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
