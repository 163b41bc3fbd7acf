//! `just bench`: bulk throughput of sustain-host and of Linux TCP over the
//! same A - R - B veth path (sustain_lab::PathLab, MTU 1500, offloads off on
//! every veth end), in the same run, one flow each, printed as Gbit/s and as
//! a ratio to Linux.
//!
//! sustain-host runs with --no-digest (no sha256 of the stream: without SHA
//! extensions hashing would cost more CPU than the TCP) and the Linux side
//! neither hashes nor touches files, so both measure the stacks.
//! Needs root (namespaces, raw sockets).

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use sustain_lab::{ChildProcess, PathLab, PathNode};

#[path = "../tests/common/mod.rs"]
mod common;

const PORT: u16 = 5201;
const TIMEOUT: Duration = Duration::from_secs(300);

fn bytes_to_send() -> u64 {
    std::env::var("SUSTAIN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024)
        << 20
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e9
}

/// Accepts one connection and reads it to EOF; returns (bytes, seconds from
/// the first byte's arrival... measured from accept to EOF).
fn kernel_sink(listener: TcpListener) -> std::io::Result<(u64, f64)> {
    let (mut s, _) = listener.accept()?;
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((total, start.elapsed().as_secs_f64()));
        }
        total += n as u64;
    }
}

fn kernel_source(addr: SocketAddrV4, bytes: u64) -> std::io::Result<()> {
    let mut s = common::connect_retrying(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver's FIN: everything was delivered.
    let mut sink = [0u8; 64];
    while s.read(&mut sink)? > 0 {}
    Ok(())
}

/// `sustain-host listen --no-digest` in B into /dev/null, ready to accept.
fn sustain_receiver(path: &PathLab, server: SocketAddrV4) -> ChildProcess {
    let mut listen = common::sustain_host();
    listen
        .args(["listen", "--no-digest", "--bind", &server.to_string()])
        .args(["--recv-file", "/dev/null"]);
    let events = path.lab().run_dir().join("receiver-events.jsonl");
    common::spawn_listener(path, PathNode::B, listen, &events)
}

/// `sustain-host connect --no-digest` in A sending `data`.
fn sustain_sender(path: &PathLab, server: SocketAddrV4, data: &Path) -> ChildProcess {
    let mut connect = common::sustain_host();
    connect
        .args(["connect", "--no-digest", &server.to_string(), "--send-file"])
        .arg(data);
    path.spawn_in(PathNode::A, connect)
        .expect("spawning sustain-host connect")
}

/// Gbit/s seen by a sustain-host receiver, from its summary line.
fn receiver_gbps(receiver: &ChildProcess, bytes: u64) -> f64 {
    let summary = common::expect_success(receiver, TIMEOUT);
    assert_eq!(summary["bytes"].as_u64(), Some(bytes), "{summary}");
    gbps(
        bytes,
        summary["seconds"].as_f64().expect("seconds in the summary"),
    )
}

fn main() {
    if !sustain_lab::is_root() {
        eprintln!("bench throughput: SKIPPED: needs root for namespaces and raw sockets");
        return;
    }
    let bytes = bytes_to_send();
    let path = PathLab::new().expect("building the A-R-B path");
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let data = path.lab().run_dir().join("bench-data");
    std::fs::File::create(&data)
        .and_then(|f| f.set_len(bytes))
        .expect("creating the sparse send file");
    println!(
        "bulk throughput, one flow, {} MiB, A -> R -> B veth path, MTU 1500, offloads off",
        bytes >> 20
    );

    // 1. Linux TCP -> Linux TCP.
    let listener = path
        .run_in(PathNode::B, move || TcpListener::bind(server))
        .unwrap()
        .expect("kernel listener");
    let sink = std::thread::spawn(move || kernel_sink(listener));
    path.run_in(PathNode::A, move || kernel_source(server, bytes))
        .unwrap()
        .expect("kernel sender");
    let (got, secs) = sink.join().unwrap().expect("kernel sink");
    assert_eq!(got, bytes);
    let linux = gbps(bytes, secs);
    println!("  linux  -> linux  : {linux:6.2} Gbit/s");

    let ratio = |name: &str, rate: f64| {
        println!("  {name}: {rate:6.2} Gbit/s  ({:.2} x linux)", rate / linux);
    };

    // 2. sustain-host -> sustain-host.
    let receiver = sustain_receiver(&path, server);
    let sender = sustain_sender(&path, server, &data);
    common::expect_success(&sender, TIMEOUT);
    ratio("sustain -> sustain", receiver_gbps(&receiver, bytes));

    // 3. sustain-host -> Linux (our sender, the kernel's receiver).
    let listener = path
        .run_in(PathNode::B, move || TcpListener::bind(server))
        .unwrap()
        .expect("kernel listener");
    let sink = std::thread::spawn(move || kernel_sink(listener));
    let sender = sustain_sender(&path, server, &data);
    common::expect_success(&sender, TIMEOUT);
    let (got, secs) = sink.join().unwrap().expect("kernel sink");
    assert_eq!(got, bytes);
    ratio("sustain -> linux  ", gbps(bytes, secs));

    // 4. Linux -> sustain-host (the kernel's sender, our receiver).
    let receiver = sustain_receiver(&path, server);
    path.run_in(PathNode::A, move || kernel_source(server, bytes))
        .unwrap()
        .expect("kernel sender");
    ratio("linux  -> sustain ", receiver_gbps(&receiver, bytes));
    println!("target: >= 2 Gbit/s for one sustain flow");
}
