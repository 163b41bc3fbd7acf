//! [`PathLab`]: host A — router R — host B, the topology of the runtime's real-kernel
//! tests and benchmark.
//!
//! ```text
//!   A                       R                          B
//!  a-r 192.0.2.1/24 ── r-a 192.0.2.254/24
//!                          r-b 198.51.100.254/24 ── b-r 198.51.100.1/24
//! ```
//!
//! A and B have default routes via R; R forwards. Offloads are off on all four veth
//! ends. Optional random loss drops packets R forwards, in both directions.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{IoContext, LabError, Result};
use crate::lab::{Lab, TeardownReport, DEFAULT_WAIT};
use crate::netns::Netns;
use crate::process::ChildProcess;
use crate::rtnl::Ipv4Route;

/// The three nodes of a [`PathLab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathNode {
    /// Host A, 192.0.2.1.
    A,
    /// The router.
    R,
    /// Host B, 198.51.100.1.
    B,
}

impl PathNode {
    /// The node's name in the [`Lab`] (and the last part of its namespace name).
    pub fn name(self) -> &'static str {
        match self {
            PathNode::A => "a",
            PathNode::R => "r",
            PathNode::B => "b",
        }
    }
}

/// Knobs of a [`PathLab`].
#[derive(Clone, Debug, PartialEq)]
pub struct PathLabConfig {
    /// MTU of all four veth ends.
    pub mtu: u32,
    /// Probability with which R drops each packet it forwards (both directions),
    /// installed after the readiness check. `None`: no loss.
    pub loss: Option<f64>,
}

impl Default for PathLabConfig {
    fn default() -> Self {
        PathLabConfig {
            mtu: 1500,
            loss: None,
        }
    }
}

/// A ready A — R — B path. Dropping it tears everything down.
#[derive(Debug)]
pub struct PathLab {
    lab: Lab,
    config: PathLabConfig,
}

impl PathLab {
    /// Host A's address.
    pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// R's address on A's segment (A's gateway).
    pub const R_A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
    /// R's address on B's segment (B's gateway).
    pub const R_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
    /// Host B's address.
    pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    /// Prefix length of both segments.
    pub const PREFIX_LEN: u8 = 24;
    /// A's interface (towards R).
    pub const A_IF: &'static str = "a-r";
    /// R's interface towards A.
    pub const R_A_IF: &'static str = "r-a";
    /// R's interface towards B.
    pub const R_B_IF: &'static str = "r-b";
    /// B's interface (towards R).
    pub const B_IF: &'static str = "b-r";

    /// Builds the path with MTU 1500 and no loss.
    pub fn new() -> Result<PathLab> {
        PathLab::with_config(PathLabConfig::default())
    }

    /// Builds the path and returns once it is ready: all links operationally up, all
    /// routes present, and a TCP connection from A to B across R has exchanged data
    /// (which also resolves ARP on both segments).
    pub fn with_config(config: PathLabConfig) -> Result<PathLab> {
        if let Some(p) = config.loss {
            // Refuse a bad probability before building anything.
            crate::netfilter::random_loss_rule(p, None, crate::netfilter::LOSS_COMMENT)?;
        }
        let lab = Lab::new()?;
        let (a, r, b) = (PathNode::A.name(), PathNode::R.name(), PathNode::B.name());
        for node in [a, r, b] {
            lab.add_node(node)?;
        }
        lab.make_router(r)?;
        lab.add_veth((a, Self::A_IF), (r, Self::R_A_IF), config.mtu)?;
        lab.add_veth((b, Self::B_IF), (r, Self::R_B_IF), config.mtu)?;

        let ends = [
            (a, Self::A_IF, Self::A_ADDR),
            (r, Self::R_A_IF, Self::R_A_ADDR),
            (r, Self::R_B_IF, Self::R_B_ADDR),
            (b, Self::B_IF, Self::B_ADDR),
        ];
        for (node, ifname, address) in ends {
            lab.add_address(node, ifname, address, Self::PREFIX_LEN)?;
            lab.link_up(node, ifname)?;
        }
        for (node, ifname, address) in ends {
            lab.wait_link_up(node, ifname, DEFAULT_WAIT)?;
            lab.wait_route(
                node,
                network(address, Self::PREFIX_LEN),
                Self::PREFIX_LEN,
                DEFAULT_WAIT,
            )?;
        }
        lab.add_route(a, &Ipv4Route::default_via(Self::R_A_ADDR))?;
        lab.add_route(b, &Ipv4Route::default_via(Self::R_B_ADDR))?;
        lab.wait_route(a, Ipv4Addr::UNSPECIFIED, 0, DEFAULT_WAIT)?;
        lab.wait_route(b, Ipv4Addr::UNSPECIFIED, 0, DEFAULT_WAIT)?;

        let path = PathLab { lab, config };
        path.check_connectivity(DEFAULT_WAIT)?;
        if let Some(p) = path.config.loss {
            path.set_loss(Some(p))?;
        }
        tracing::info!(run = %path.lab.run_id(), config = ?path.config, "path lab ready");
        Ok(path)
    }

    /// The underlying lab, for anything not wrapped here (sysctls, iptables, links).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The configuration it was built with (loss as built, not as later changed).
    pub fn config(&self) -> &PathLabConfig {
        &self.config
    }

    /// The namespace of `node` (for `ip netns exec`, or `setns` by fd).
    pub fn netns(&self, node: PathNode) -> Result<Arc<Netns>> {
        self.lab.netns(node.name())
    }

    /// Starts `command` inside `node`; stdout/stderr go to files in the run directory.
    /// Stopped at teardown if still running.
    pub fn spawn_in(&self, node: PathNode, command: Command) -> Result<ChildProcess> {
        self.lab.spawn(node.name(), command)
    }

    /// Runs `f` on a thread inside `node` and returns its result. Sockets `f` creates
    /// stay in that namespace and can be returned and used from any thread.
    pub fn run_in<F, R>(&self, node: PathNode, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.lab.run_in(node.name(), f)
    }

    /// Starts `f` on a background thread inside `node`.
    pub fn spawn_thread_in<F, R>(&self, node: PathNode, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.lab.spawn_thread_in(node.name(), f)
    }

    /// Replaces R's random loss: `Some(p)` drops each forwarded packet with
    /// probability `p` (both directions), `None` removes the loss.
    pub fn set_loss(&self, probability: Option<f64>) -> Result<()> {
        let r = PathNode::R.name();
        self.lab.clear_random_loss(r)?;
        if let Some(p) = probability {
            self.lab.add_random_loss(r, p, None)?;
        }
        Ok(())
    }

    /// Packets R's loss rule has dropped since it was installed.
    pub fn loss_drops(&self) -> Result<u64> {
        self.lab.random_loss_drops(PathNode::R.name())
    }

    /// Connects from A to B over TCP and exchanges a few bytes both ways, retrying
    /// until `timeout`.
    pub fn check_connectivity(&self, timeout: Duration) -> Result<()> {
        let listener = self.run_in(PathNode::B, || {
            TcpListener::bind((Self::B_ADDR, 0)).and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
        })?;
        let listener = listener.context(|| format!("listening on {} in B", Self::B_ADDR))?;
        let server_addr = listener
            .local_addr()
            .context(|| "reading the listener's address".to_string())?;
        let deadline = Instant::now() + timeout;

        let server = std::thread::spawn(move || -> std::io::Result<()> {
            loop {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false)?;
                        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut buf = [0u8; 4];
                        stream.read_exact(&mut buf)?;
                        return stream.write_all(b"pong");
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err(err);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(err) => return Err(err),
                }
            }
        });

        let client = self.run_in(PathNode::A, move || ping_pong(server_addr, deadline))?;
        let server = server
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("check server panicked")));
        match (client, server) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(err), _) | (_, Err(err)) => Err(LabError::Timeout {
                what: format!(
                    "TCP from A ({}) to B ({server_addr}) across R: {err}",
                    Self::A_ADDR
                ),
                after: timeout,
            }),
        }
    }

    /// Stops processes and deletes the namespaces now (also done on drop).
    pub fn teardown(&self) -> TeardownReport {
        self.lab.teardown()
    }
}

fn ping_pong(server: SocketAddr, deadline: Instant) -> std::io::Result<()> {
    let mut last_error = None;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&server, Duration::from_millis(500)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.write_all(b"ping")?;
                let mut reply = [0u8; 4];
                stream.read_exact(&mut reply)?;
                if &reply != b"pong" {
                    return Err(std::io::Error::other("wrong reply"));
                }
                return Ok(());
            }
            Err(err) => {
                last_error = Some(err);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no attempt before the deadline")))
}

/// The network address of `address/prefix_len`.
fn network(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(address) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_masks_host_bits() {
        assert_eq!(network(PathLab::B_ADDR, 24), Ipv4Addr::new(198, 51, 100, 0));
        assert_eq!(network(PathLab::A_ADDR, 0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(network(PathLab::A_ADDR, 32), PathLab::A_ADDR);
    }
}
