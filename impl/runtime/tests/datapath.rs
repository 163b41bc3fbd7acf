//! The receive datapath (issue 14): by default an endpoint receives from a
//! packet socket and drops its ports' segments in raw PREROUTING, so the
//! kernel's TCP never sees them and sends no RST; `SUSTAIN_DATAPATH=raw`
//! (and any setup failure) falls back to the raw socket and says so. Both
//! move a file byte-identically; the rules of either kind go on exit and,
//! after a SIGKILL, at the next start.
//!
//! These run for real as root (as in CI). Without root they print why and
//! return without checking anything.

mod common;

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use common::*;
use sustain_lab::{root_or_skip, PathLab, PathNode};

const PORT: u16 = 5011;
const SIZE: usize = 8 * MIB;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Tcp OutRsts of the calling thread's namespace (`/proc/net` is the
/// process's namespace, not this thread's).
fn kernel_rsts_sent() -> u64 {
    let snmp =
        std::fs::read_to_string("/proc/thread-self/net/snmp").expect("reading snmp counters");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .expect("OutRsts in /proc/net/snmp");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The `datapath` event an endpoint logged at start.
fn datapath_event(events: &Path) -> serde_json::Value {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "datapath")
        .unwrap_or_else(|| panic!("no datapath event in {}", events.display()))
}

/// What [`transfer`] saw.
struct Transferred {
    /// The `datapath` event of A (the sender) and of B.
    a: serde_json::Value,
    b: serde_json::Value,
    /// B's kernel RSTs during the transfer.
    rsts: u64,
    /// Segments A sent in GSO super-segments.
    gso: u64,
}

/// sustain-host A -> B with `env` and `args` on both hosts.
fn transfer(path: &PathLab, env: Option<(&str, &str)>, args: &[&str], seed: u64) -> Transferred {
    let src = file_in(path, "data");
    let dst = file_in(path, "received");
    let sha = make_file(&src, SIZE, seed);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let (recv_events, send_events) = (file_in(path, "b.jsonl"), file_in(path, "a.jsonl"));
    let _ = std::fs::remove_file(&send_events);
    let rsts_before = path.run_in(PathNode::B, kernel_rsts_sent).unwrap();
    let mut listen = sustain_host();
    listen
        .args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let mut connect = sustain_host();
    connect
        .args(["connect", &server.to_string(), "--send-file"])
        .arg(&src)
        .arg("--events")
        .arg(&send_events);
    listen.args(args);
    connect.args(args);
    if let Some((k, v)) = env {
        listen.env(k, v);
        connect.env(k, v);
    }
    let receiver = spawn_listener(path, PathNode::B, listen, &recv_events);
    let sender = path.spawn_in(PathNode::A, connect).unwrap();
    assert_eq!(expect_success(&sender, TIMEOUT)["sha256"], sha);
    assert_eq!(expect_success(&receiver, TIMEOUT)["sha256"], sha);
    assert_eq!(sha256_file(&dst), sha);
    let rsts = path.run_in(PathNode::B, kernel_rsts_sent).unwrap() - rsts_before;
    let closed = std::fs::read_to_string(&send_events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "closed")
        .expect("the sender's closed event");
    let gso = closed["gso_segments"].as_u64().expect("gso_segments");
    Transferred {
        a: datapath_event(&send_events),
        b: datapath_event(&recv_events),
        rsts,
        gso,
    }
}

#[test]
fn packet_socket_by_default_raw_socket_on_request() {
    if !root_or_skip("packet_socket_by_default_raw_socket_on_request") {
        return;
    }
    let path = PathLab::new().expect("building the A-R-B namespace path");

    let Transferred { a, b, rsts, gso } = transfer(&path, None, &[], 21);
    assert_eq!(
        (&a["rx"], &b["rx"]),
        (&"packet-socket".into(), &"packet-socket".into())
    );
    // The default 16 MiB window: 32 MiB of socket buffer asked for, which
    // the kernel doubles.
    assert_eq!(
        (&a["rcvbuf"], &b["rcvbuf"]),
        (&(64u64 << 20).into(), &(64u64 << 20).into())
    );
    // The kernel's TCP never saw a segment for the owned port.
    assert_eq!(rsts, 0, "B's kernel sent RSTs with the packet socket");
    // GSO by default: most of the 8 MiB left in super-segments (1448-byte
    // MSS: 5794 segments in all).
    assert!(
        gso > 2000,
        "default: only {gso} segments in GSO super-segments"
    );

    let Transferred { a, b, rsts, gso } =
        transfer(&path, Some(("SUSTAIN_DATAPATH", "raw")), &[], 22);
    assert_eq!(
        (&a["rx"], &b["rx"]),
        (&"raw-socket".into(), &"raw-socket".into())
    );
    // The fallback: the kernel answers every segment, the guard drops it.
    assert!(
        rsts > 0,
        "raw-socket receive: B's kernel sent no RST at all"
    );
    assert_eq!(gso, 0, "GSO needs the packet socket's next hops");

    let Transferred { gso, .. } = transfer(&path, Some(("SUSTAIN_GSO", "off")), &[], 23);
    assert_eq!(gso, 0, "GSO with SUSTAIN_GSO=off");

    // 64 MiB buffers: the socket buffer follows the receive window, and
    // the file still arrives whole (`transfer` checks its sha256 at both
    // ends).
    let big = ["--send-buffer", "64MiB", "--recv-buffer", "64MiB"];
    let Transferred { a, b, .. } = transfer(&path, None, &big, 24);
    assert_eq!(
        (&a["rcvbuf"], &b["rcvbuf"]),
        (&(256u64 << 20).into(), &(256u64 << 20).into())
    );

    for node in [PathNode::A, PathNode::B] {
        let rules = path.run_in(node, guard_rules).unwrap();
        assert!(
            !rules.contains("sustain-host:"),
            "guard rules left in {node:?} after the hosts exited:\n{rules}"
        );
    }
}

#[test]
fn rules_of_a_killed_host_are_swept() {
    if !root_or_skip("rules_of_a_killed_host_are_swept") {
        return;
    }
    let path = PathLab::new().expect("building the A-R-B namespace path");
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let mut listen = sustain_host();
    listen.args([
        "listen",
        "--bind",
        &server.to_string(),
        "--recv-file",
        "/dev/null",
    ]);
    let events = file_in(&path, "killed.jsonl");
    let victim = spawn_listener(&path, PathNode::B, listen, &events);
    let tag = format!("sustain-host:{}", victim.pid());
    let rules = path.run_in(PathNode::B, guard_rules).unwrap();
    let ingress = rules
        .lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no rule of {tag}:\n{rules}"));
    assert!(
        ingress.starts_with("-A PREROUTING") && ingress.contains("--dport 5011"),
        "{ingress}"
    );
    victim.kill().unwrap();
    assert!(path
        .run_in(PathNode::B, guard_rules)
        .unwrap()
        .contains(&tag));

    // The next host in the namespace sweeps the dead pid's rule.
    let mut next = sustain_host();
    next.args([
        "listen",
        "--bind",
        &SocketAddrV4::new(PathLab::B_ADDR, PORT + 1).to_string(),
        "--recv-file",
        "/dev/null",
    ]);
    let next = spawn_listener(&path, PathNode::B, next, &file_in(&path, "next.jsonl"));
    let rules = path.run_in(PathNode::B, guard_rules).unwrap();
    assert!(!rules.contains(&tag), "stale rule of {tag} kept:\n{rules}");
    next.terminate(Duration::from_secs(5)).unwrap();
    let rules = path.run_in(PathNode::B, guard_rules).unwrap();
    assert!(!rules.contains("sustain-host:"), "rules left:\n{rules}");
}

/// Over `lo` a sender's checksum is left to the device (CHECKSUM_PARTIAL)
/// and its GSO super-segments pass whole (64 KiB, past a slot's head): the
/// receiver completes the checksum, reads the large packet whole, and the
/// file arrives intact, from sustain-host and from Linux.
#[test]
fn loopback_gso_and_partial_checksums() {
    if !root_or_skip("loopback_gso_and_partial_checksums") {
        return;
    }
    let path = PathLab::new().expect("building the A-R-B namespace path");
    let server = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, PORT);
    let src = file_in(&path, "data");
    let sha = make_file(&src, SIZE, 31);

    // sustain-host -> sustain-host, both in B.
    let dst = file_in(&path, "received");
    let mut listen = sustain_host();
    listen
        .args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let receiver = spawn_listener(&path, PathNode::B, listen, &file_in(&path, "b.jsonl"));
    let events = file_in(&path, "a.jsonl");
    let mut connect = sustain_host();
    connect
        .args(["connect", &server.to_string(), "--send-file"])
        .arg(&src)
        .arg("--events")
        .arg(&events);
    let sender = path.spawn_in(PathNode::B, connect).unwrap();
    assert_eq!(expect_success(&sender, TIMEOUT)["sha256"], sha);
    assert_eq!(expect_success(&receiver, TIMEOUT)["sha256"], sha);
    assert_eq!(sha256_file(&dst), sha);
    let gso = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "closed")
        .and_then(|e| e["gso_segments"].as_u64())
        .expect("the sender's closed event");
    assert!(gso > 2000, "only {gso} segments in GSO super-segments");
    // Every super-segment was taken whole (none failed its checksum and
    // had to be resent).
    let malformed = std::fs::read_to_string(file_in(&path, "b.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "closed")
        .and_then(|e| e["counters"]["malformed"].as_u64())
        .expect("the receiver's closed event");
    assert_eq!(malformed, 0, "packets the receiving core refused");

    // Linux (TSO, partial checksums) -> sustain-host, both in B.
    let mut listen = sustain_host();
    listen
        .args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let receiver = spawn_listener(&path, PathNode::B, listen, &file_in(&path, "c.jsonl"));
    path.run_in(PathNode::B, || {
        let mut s = connect_retrying(server)?;
        pour(&mut s, &src)?;
        // Until the receiver's FIN: everything was delivered.
        std::io::copy(&mut s, &mut std::io::sink())
    })
    .unwrap()
    .expect("the kernel sender");
    assert_eq!(expect_success(&receiver, TIMEOUT)["sha256"], sha);
    assert_eq!(sha256_file(&dst), sha);
}
