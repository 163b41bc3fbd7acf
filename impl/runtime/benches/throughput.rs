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
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sustain_lab::{PathLab, PathNode};

#[path = "../tests/common/mod.rs"]
mod common;

const PORT: u16 = 5201;

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
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
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

fn sustain_host() -> Command {
    let exe = std::env::var("SUSTAIN_HOST_BIN").unwrap_or_else(|_| {
        // benches run from target/release/deps; the binary is in target/release.
        let me = std::env::current_exe().expect("bench executable path");
        let dir = me.parent().and_then(|p| p.parent()).expect("target dir");
        dir.join("sustain-host").to_string_lossy().into_owned()
    });
    let mut c = Command::new(exe);
    c.arg("--version");
    let ok = c.output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "sustain-host binary not found: build it with `cargo build --release -p sustain` or set SUSTAIN_HOST_BIN");
    Command::new(c.get_program())
}

fn summary_seconds(stdout: &str) -> (u64, f64) {
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("bad summary line {last:?}: {e}"));
    (
        v["bytes"].as_u64().expect("bytes"),
        v["seconds"].as_f64().expect("seconds"),
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

    // 2. sustain-host -> sustain-host.
    let mut listen = sustain_host();
    listen.args([
        "listen",
        "--no-digest",
        "--bind",
        &server.to_string(),
        "--recv-file",
        "/dev/null",
    ]);
    let receiver = common::spawn_listener(
        &path,
        PathNode::B,
        listen,
        &path.lab().run_dir().join("events.jsonl"),
    );
    let mut connect = sustain_host();
    connect
        .args(["connect", "--no-digest", &server.to_string(), "--send-file"])
        .arg(&data);
    let sender = path.spawn_in(PathNode::A, connect).unwrap();
    for child in [&sender, &receiver] {
        let status = child
            .wait_timeout(Duration::from_secs(300))
            .unwrap()
            .expect("sustain-host did not finish in 300 s");
        assert!(
            status.success(),
            "sustain-host failed: {}",
            child.read_stderr().unwrap_or_default()
        );
    }
    let (got, secs) = summary_seconds(&receiver.read_stdout().unwrap());
    assert_eq!(got, bytes);
    let sustain = gbps(bytes, secs);
    println!(
        "  sustain -> sustain: {sustain:6.2} Gbit/s  ({:.2} x linux)",
        sustain / linux
    );

    // 3. sustain-host -> Linux (our sender, the kernel's receiver).
    let listener = path
        .run_in(PathNode::B, move || TcpListener::bind(server))
        .unwrap()
        .expect("kernel listener");
    let sink = std::thread::spawn(move || kernel_sink(listener));
    let mut connect = sustain_host();
    connect
        .args(["connect", "--no-digest", &server.to_string(), "--send-file"])
        .arg(&data);
    let sender = path.spawn_in(PathNode::A, connect).unwrap();
    let status = sender
        .wait_timeout(Duration::from_secs(300))
        .unwrap()
        .expect("sender timed out");
    assert!(
        status.success(),
        "{}",
        sender.read_stderr().unwrap_or_default()
    );
    let (got, secs) = sink.join().unwrap().expect("kernel sink");
    assert_eq!(got, bytes);
    let tx = gbps(bytes, secs);
    println!(
        "  sustain -> linux  : {tx:6.2} Gbit/s  ({:.2} x linux)",
        tx / linux
    );

    // 4. Linux -> sustain-host (the kernel's sender, our receiver).
    let mut listen = sustain_host();
    listen.args([
        "listen",
        "--no-digest",
        "--bind",
        &server.to_string(),
        "--recv-file",
        "/dev/null",
    ]);
    let receiver = path.spawn_in(PathNode::B, listen).unwrap();
    path.run_in(PathNode::A, move || kernel_source(server, bytes))
        .unwrap()
        .expect("kernel sender");
    let status = receiver
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("receiver timed out");
    assert!(
        status.success(),
        "{}",
        receiver.read_stderr().unwrap_or_default()
    );
    let (got, secs) = summary_seconds(&receiver.read_stdout().unwrap());
    assert_eq!(got, bytes);
    let rx = gbps(bytes, secs);
    println!(
        "  linux  -> sustain : {rx:6.2} Gbit/s  ({:.2} x linux)",
        rx / linux
    );
    println!("target: >= 2 Gbit/s for one sustain flow");
}
