//! The symmetric proxy on real kernels (PROTOCOL.md §6.9, §15.14): a
//! transfer whose ends both end up behind NAPTs crosses sustain-proxy,
//! byte-identical.
//!
//! Topology (sustain_lab's builder; every namespace, veth and iptables
//! rule is removed when the topology is dropped, also on panic):
//!
//! ```text
//!   g1: c (sustain-server :7001), p (sustain-proxy, control :7002)
//!   g2: napt1 WAN -> home1: a (sender, connects; stays)
//!   g3: napt2 WAN -> home2: b (after its move)
//!   g4: b (receiver, listens) before its move
//! ```
//!
//! b moves from g4 (global) to home2 (behind napt2) mid-transfer: both ends
//! are now behind NAPTs (MASQUERADE, unsolicited inbound dropped), so the
//! server asks the proxy for a relay and both ends resume through it.
//!
//! Needs root (namespaces, raw sockets, iptables). Without root it prints
//! SKIPPED and passes, except under `CI=true`, where it fails.

mod common;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sustain_lab::napt::NaptProfile;
use sustain_lab::topology::{LinkConditions, NodeRole, Topology, TopologySpec};
use sustain_lab::{root_or_skip, ChildProcess};

const SIZE: usize = 48 * MIB;
const PORT: u16 = 5001;
const SERVER_PORT: u16 = 7001;
const PROXY_CONTROL_PORT: u16 = 7002;
const RELAY_PORTS: &str = "40000-40099";
/// Link rate of the hosts' uplinks: the transfer takes a few seconds, so
/// the move lands in its middle.
const RATE_KBIT: u64 = 80_000;
const TIMEOUT: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(10);

fn needs_root(test: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        sustain_lab::require_root().expect("CI runs the relay test as root");
        return true;
    }
    root_or_skip(test)
}

fn binary(name: &str) -> PathBuf {
    // The sibling binaries of sustain-host, built by cargo for this test.
    let host = sustain_host();
    Path::new(host.get_program()).with_file_name(name)
}

fn rate() -> LinkConditions {
    LinkConditions {
        rate_kbit: Some(RATE_KBIT),
        ..LinkConditions::default()
    }
}

/// The topology of the module doc; with `more`, also napt3 (WAN g4,
/// home3) and a global g5 for the later moves.
fn topology(more: bool) -> Topology {
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
        .link("a", "home1", rate())
        .link("b", "g4", rate())
        .link("b", "home2", rate());
    if more {
        spec = spec
            .global("g5")
            .napt("napt3", "g4", "home3", NaptProfile::Home)
            .link("b", "home3", rate())
            .link("a", "g5", rate());
    }
    Topology::build(&spec).expect("building the two-NAPT topology")
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn has_event(path: &Path, name: &str) -> bool {
    events(path).iter().any(|e| e["event"] == name)
}

/// Waits until `path` holds event `name`; panics with the child's stderr.
fn wait_event(child: &ChildProcess, path: &Path, name: &str) {
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

fn last_stats(child: &ChildProcess) -> Value {
    child
        .read_stdout()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["event"] == "stopped")
        .map(|v| v["stats"].clone())
        .unwrap_or(Value::Null)
}

/// One run: the topology, the proxy, the server and both hosts, started.
struct Run {
    topo: Topology,
    proxy: ChildProcess,
    server: ChildProcess,
    a: ChildProcess,
    b: ChildProcess,
    p_ip: std::net::Ipv4Addr,
    dst: PathBuf,
    sha: String,
    proxy_events: PathBuf,
    server_events: PathBuf,
    a_events: PathBuf,
    b_events: PathBuf,
}

impl Run {
    fn start(more: bool, seed: u64) -> Run {
        let topo = topology(more);
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
        let sha = make_file(&src, SIZE, seed);
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
        let b = lab.spawn("b", cmd).unwrap();
        wait_event(&b, &b_events, "listening");
        let a_events = dir.join("a.events.jsonl");
        let mut cmd = sustain_host();
        cmd.args(["connect", &SocketAddrV4::new(b_ip, PORT).to_string()])
            .arg("--send-file")
            .arg(&src)
            .args(["--server", &server_addr.to_string(), "--events"])
            .arg(&a_events);
        let a = lab.spawn("a", cmd).unwrap();
        Run {
            topo,
            proxy,
            server,
            a,
            b,
            p_ip,
            dst,
            sha,
            proxy_events,
            server_events,
            a_events,
            b_events,
        }
    }

    fn received(&self) -> usize {
        std::fs::metadata(&self.dst).map_or(0, |m| m.len() as usize)
    }

    /// Waits until b has `bytes` and `ready` holds, then moves `host`.
    fn move_at(&self, bytes: usize, host: &str, to: &str, ready: impl Fn(&Run) -> bool) {
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
        assert!(self.received() < SIZE, "the transfer ended before the move");
    }

    /// Both hosts finish, byte-identical; then the services stop. Returns
    /// the proxy's final counters.
    fn finish(&self) -> Value {
        let a_summary = expect_success(&self.a, TIMEOUT);
        let b_summary = expect_success(&self.b, TIMEOUT);
        assert_eq!(a_summary["sha256"], self.sha);
        assert_eq!(b_summary["sha256"], self.sha);
        assert_eq!(sha256_file(&self.dst), self.sha, "received file differs");
        let _ = self.server.terminate(Duration::from_secs(2));
        let _ = self.proxy.terminate(Duration::from_secs(2));
        last_stats(&self.proxy)
    }

    fn count(path: &Path, name: &str) -> usize {
        events(path).iter().filter(|e| e["event"] == name).count()
    }

    /// Both ends were given the relay.
    fn assert_both_assigned(&self) {
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

fn registered(run: &Run) -> bool {
    Run::count(&run.server_events, "server-registered") >= 2
}

#[test]
fn both_ends_behind_napts_are_relayed_byte_identical() {
    if !needs_root("both_ends_behind_napts_are_relayed_byte_identical") {
        return;
    }
    let run = Run::start(false, 11);
    // Mid-transfer, once both ends registered, b moves behind napt2.
    run.move_at(SIZE / 6, "b", "home2", registered);
    let stats = run.finish();
    run.assert_both_assigned();
    assert!(stats["forwarded"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(stats["confirms"], 2, "{stats}");
    for refused in ["unknown_ticket", "bad_mac", "replayed", "refused_global"] {
        assert_eq!(stats[refused], 0, "{refused}: {stats}");
    }
}

#[test]
fn relayed_end_moves_behind_another_napt_then_to_a_global_address() {
    if !needs_root("relayed_end_moves_behind_another_napt_then_to_a_global_address") {
        return;
    }
    let run = Run::start(true, 12);
    run.move_at(SIZE / 8, "b", "home2", registered);
    // Relayed: b moves behind napt3; its MSYN goes to the proxy with the
    // same ticket and the relay resumes (PROTOCOL.md §6.9 "Moving again").
    run.move_at(SIZE * 3 / 8, "b", "home3", |r| {
        Run::count(&r.proxy_events, "spliced") >= 1
    });
    // Relayed again: a moves to a global address; the proxy refuses its
    // MSYN with an RST, the server has b (behind napt3) send a direct MSYN.
    run.move_at(SIZE * 5 / 8, "a", "g5", |r| {
        Run::count(&r.proxy_events, "leg-attached") >= 3
            && Run::count(&r.proxy_events, "spliced") >= 2
    });
    let stats = run.finish();
    run.assert_both_assigned();
    let pevs = events(&run.proxy_events);
    assert_eq!(Run::count(&run.proxy_events, "refused"), 1, "{pevs:?}");
    assert!(
        pevs.iter()
            .any(|e| e["event"] == "released" && e["reason"] == "LegWentGlobal"),
        "{pevs:?}"
    );
    assert_eq!(stats["refused_global"], 1, "{stats}");
    assert_eq!(
        stats["allocated"], 1,
        "one relay for both NAPT moves: {stats}"
    );
    for refused in ["unknown_ticket", "bad_mac", "replayed"] {
        assert_eq!(stats[refused], 0, "{refused}: {stats}");
    }
    // The direct MSYN: b was told where a is.
    let bevs = events(&run.b_events);
    assert!(
        bevs.iter().any(|e| e["event"] == "peer-location"),
        "{bevs:?}"
    );
}
