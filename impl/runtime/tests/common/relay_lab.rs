//! The symmetric-proxy lab shared by `tests/relay.rs` and `benches/relay.rs`:
//! the two-NAPT topology, sustain-proxy, sustain-server and two sustain-hosts
//! (a sends, b listens), started and waited for through their events files.
//!
//! ```text
//!   g1: c (sustain-server :7001), p (sustain-proxy, control :7002)
//!   g2: napt1 WAN -> home1: a (sender, connects; stays)
//!   g3: napt2 WAN -> home2: b (after its move)
//!   g4: b (receiver, listens) before its move
//!   with `more`: g5 (global) and napt3 (WAN g4) -> home3
//! ```
//!
//! Every namespace, veth and iptables rule is removed when the topology is
//! dropped, also on panic.

#![allow(dead_code)] // the test and the bench use different parts

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sustain_lab::napt::NaptProfile;
use sustain_lab::topology::{LinkConditions, NodeRole, Topology, TopologySpec};
use sustain_lab::ChildProcess;

use crate::common::{expect_success, make_file, sha256_file, sustain_host};

pub(crate) const PORT: u16 = 5001;
pub(crate) const SERVER_PORT: u16 = 7001;
pub(crate) const PROXY_CONTROL_PORT: u16 = 7002;
pub(crate) const RELAY_PORTS: &str = "40000-40099";
const TIMEOUT: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(10);

fn binary(name: &str) -> PathBuf {
    // The sibling binaries of sustain-host, built by cargo for this test.
    let host = sustain_host();
    Path::new(host.get_program()).with_file_name(name)
}

/// The topology of the module doc, every host link with `conditions`.
pub(crate) fn topology(more: bool, conditions: LinkConditions) -> Topology {
    let mut spec = TopologySpec::new()
        .global("g1")
        .global("g2")
        .global("g3")
        .global("g4")
        .napt("napt1", "g2", "home1", NaptProfile::Home)
        .napt("napt2", "g3", "home2", NaptProfile::Home)
        .service("c", NodeRole::MobilityServer, "g1")
        .service("p", NodeRole::Proxy, "g1")
        .host("a", "home1")
        .host("b", "g4")
        .link("a", "home1", conditions.clone())
        .link("b", "g4", conditions.clone())
        .link("b", "home2", conditions.clone());
    if more {
        spec = spec
            .global("g5")
            .napt("napt3", "g4", "home3", NaptProfile::Home)
            .link("b", "home3", conditions.clone())
            .link("a", "g5", conditions.clone())
            .link("b", "g5", conditions);
    }
    Topology::build(&spec).expect("building the two-NAPT topology")
}

pub(crate) fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub(crate) fn has_event(path: &Path, name: &str) -> bool {
    events(path).iter().any(|e| e["event"] == name)
}

/// Waits until `path` holds event `name`; panics with the child's stderr.
pub(crate) fn wait_event(child: &ChildProcess, path: &Path, name: &str) {
    let deadline = Instant::now() + READY;
    while !has_event(path, name) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) before {name}: {}",
                child.label(),
                child.read_stderr().unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {name} event from {} in {READY:?}; stderr:\n{}",
            child.label(),
            child.read_stderr().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn last_stats(child: &ChildProcess) -> Value {
    child
        .read_stdout()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["event"] == "stopped")
        .map_or(Value::Null, |v| v["stats"].clone())
}

/// One run: the topology, the proxy, the server and both hosts, started.
pub(crate) struct Run {
    pub topo: Topology,
    pub proxy: ChildProcess,
    pub server: ChildProcess,
    pub a: ChildProcess,
    pub b: ChildProcess,
    pub p_ip: std::net::Ipv4Addr,
    pub size: usize,
    pub digest: bool,
    pub dst: PathBuf,
    pub sha: String,
    pub proxy_events: PathBuf,
    pub server_events: PathBuf,
    pub a_events: PathBuf,
    pub b_events: PathBuf,
}

impl Run {
    /// Starts the proxy, the server and both hosts on `topo` (from [`topology`]);
    /// a sends `size` seeded random bytes to b. Without `digest` the hosts hash
    /// nothing (`--no-digest`, a benchmark's choice); [`Run::finish`] still
    /// compares the received file.
    pub(crate) fn start(topo: Topology, size: usize, seed: u64, digest: bool) -> Run {
        let lab = topo.lab();
        let dir = lab.run_dir().to_path_buf();
        let c_ip = topo.address_of("c").unwrap();
        let p_ip = topo.address_of("p").unwrap();
        let b_ip = topo.address_of("b").unwrap();

        let secret = dir.join("relay.secret");
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        std::fs::write(&secret, format!("{}\n", hex::encode(bytes))).unwrap();

        // The proxy, then the server (which connects to it).
        let proxy_events = dir.join("p.events.jsonl");
        let control = SocketAddrV4::new(p_ip, PROXY_CONTROL_PORT);
        let mut cmd = Command::new(binary("sustain-proxy"));
        cmd.arg("--bind")
            .arg(p_ip.to_string())
            .arg("--control")
            .arg(control.to_string())
            .args(["--ports", RELAY_PORTS, "--relay-secret"])
            .arg(&secret)
            .arg("--events")
            .arg(&proxy_events)
            .env("RUST_LOG", "info");
        let proxy = lab.spawn("p", cmd).unwrap();
        wait_event(&proxy, &proxy_events, "listening");

        let server_events = dir.join("c.events.jsonl");
        let server_addr = SocketAddrV4::new(c_ip, SERVER_PORT);
        let mut cmd = Command::new(binary("sustain-server"));
        cmd.arg("--bind")
            .arg(server_addr.to_string())
            .arg("--proxy")
            .arg(control.to_string())
            .arg("--relay-secret")
            .arg(&secret)
            .arg("--events")
            .arg(&server_events)
            .env("RUST_LOG", "info");
        let server = lab.spawn("c", cmd).unwrap();
        wait_event(&server, &server_events, "proxy-up");

        // b receives, a sends.
        let src = dir.join("data");
        let dst = dir.join("received");
        let sha = make_file(&src, size, seed);
        let b_events = dir.join("b.events.jsonl");
        let mut cmd = sustain_host();
        cmd.args([
            "listen",
            "--bind",
            &format!("0.0.0.0:{PORT}"),
            "--recv-file",
        ])
        .arg(&dst)
        .args(["--server", &server_addr.to_string(), "--events"])
        .arg(&b_events);
        if !digest {
            cmd.arg("--no-digest");
        }
        let b = lab.spawn("b", cmd).unwrap();
        wait_event(&b, &b_events, "listening");
        let a_events = dir.join("a.events.jsonl");
        let mut cmd = sustain_host();
        cmd.args(["connect", &SocketAddrV4::new(b_ip, PORT).to_string()])
            .arg("--send-file")
            .arg(&src)
            .args(["--server", &server_addr.to_string(), "--events"])
            .arg(&a_events);
        if !digest {
            cmd.arg("--no-digest");
        }
        let a = lab.spawn("a", cmd).unwrap();
        Run {
            topo,
            proxy,
            server,
            a,
            b,
            p_ip,
            size,
            digest,
            dst,
            sha,
            proxy_events,
            server_events,
            a_events,
            b_events,
        }
    }

    pub(crate) fn received(&self) -> usize {
        std::fs::metadata(&self.dst).map_or(0, |m| m.len() as usize)
    }

    /// Waits until b has `bytes` and `ready` holds, then moves `host`.
    pub(crate) fn move_at(&self, bytes: usize, host: &str, to: &str, ready: impl Fn(&Run) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.received() < bytes || !ready(self) {
            assert!(
                Instant::now() < deadline,
                "before moving {host} to {to}: {} bytes received; a:\n{}\nb:\n{}",
                self.received(),
                self.a.read_stderr().unwrap_or_default(),
                self.b.read_stderr().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.topo
            .move_host(host, to, Duration::from_millis(200))
            .unwrap_or_else(|e| panic!("moving {host} to {to}: {e}"));
        assert!(
            self.received() < self.size,
            "the transfer ended before the move"
        );
    }

    /// Both hosts finish, byte-identical; then the services stop. Returns
    /// the proxy's final counters.
    pub(crate) fn finish(&self) -> Value {
        let a_summary = expect_success(&self.a, TIMEOUT);
        let b_summary = expect_success(&self.b, TIMEOUT);
        if self.digest {
            assert_eq!(a_summary["sha256"], self.sha);
            assert_eq!(b_summary["sha256"], self.sha);
        }
        assert_eq!(sha256_file(&self.dst), self.sha, "received file differs");
        let _ = self.server.terminate(Duration::from_secs(2));
        let _ = self.proxy.terminate(Duration::from_secs(2));
        last_stats(&self.proxy)
    }

    pub(crate) fn count(path: &Path, name: &str) -> usize {
        events(path).iter().filter(|e| e["event"] == name).count()
    }

    /// Both ends were given the relay.
    pub(crate) fn assert_both_assigned(&self) {
        for (host, path) in [("a", &self.a_events), ("b", &self.b_events)] {
            let evs = events(path);
            let assigned = evs
                .iter()
                .find(|e| e["event"] == "relay-assigned")
                .unwrap_or_else(|| panic!("{host} got no RelayAssignment: {evs:?}"));
            let proxy = assigned["proxy"].as_str().unwrap_or_default();
            assert!(proxy.starts_with(&format!("{}:", self.p_ip)), "{proxy}");
        }
        let sevs = events(&self.server_events);
        assert!(
            sevs.iter().any(|e| e["event"] == "relay-granted"),
            "{sevs:?}"
        );
        let pevs = events(&self.proxy_events);
        assert!(pevs.iter().any(|e| e["event"] == "spliced"), "{pevs:?}");
    }
}
