//! `just bench` (part 2): `sustain-host forward` against sustain-host direct
//! and against Linux TCP, on the same A - R - B veth path, in the same run.
//!
//! - **Throughput**: one bulk flow A -> B, (a) sustain-host connect ->
//!   sustain-host listen (a page-cached file into /dev/null), (b) a kernel
//!   client on A writing from memory through `forward` (tcp -> sustain) on A
//!   and `forward` (sustain -> tcp) on B into a kernel sink on B's loopback
//!   that discards. Ratio (b)/(a).
//! - **Latency**: 64-byte request/response round trips at 0 ms delay, through
//!   the two forwards vs Linux TCP directly between A and B: p50 and p99, and
//!   the difference (what forward adds).
//! - **Concurrency**: 100 forwarded connections open at once, each echoing.
//!
//! Needs root (namespaces, raw sockets).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sustain_lab::{ChildProcess, PathLab, PathNode};

#[path = "../tests/common/mod.rs"]
mod common;

const DIRECT_PORT: u16 = 5301;
const SUSTAIN_PORT: u16 = 5302;
const KERNEL_PORT: u16 = 5303;
const SERVICE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100);
const ENTRY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8181);
const TIMEOUT: Duration = Duration::from_secs(300);
const ROUND_TRIPS: usize = 2000;
const CONNECTIONS: usize = 100;

fn mib() -> u64 {
    std::env::var("SUSTAIN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e9
}

/// Reads every connection to EOF; the first one's (bytes, seconds) is sent
/// back; later ones are echoed (latency and concurrency runs).
fn service(listener: TcpListener, first: std::sync::mpsc::Sender<(u64, f64)>) {
    let mut first = Some(first);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        match first.take() {
            Some(report) => {
                let start = Instant::now();
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    total += n as u64;
                }
                let _ = report.send((total, start.elapsed().as_secs_f64()));
            }
            None => {
                std::thread::spawn(move || echo(stream));
            }
        }
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Round trips of 64 bytes; returns the sorted durations.
fn round_trips(addr: SocketAddrV4, count: usize) -> std::io::Result<Vec<Duration>> {
    let mut s = common::connect_retrying(addr)?;
    s.set_nodelay(true)?;
    let request = [0x42u8; 64];
    let mut reply = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for i in 0..count + 100 {
        let start = Instant::now();
        s.write_all(&request)?;
        s.read_exact(&mut reply)?;
        if i >= 100 {
            times.push(start.elapsed()); // the first 100 warm up
        }
    }
    times.sort();
    Ok(times)
}

fn pct(times: &[Duration], p: f64) -> Duration {
    times[((times.len() as f64 * p) as usize).min(times.len() - 1)]
}

fn forward(path: &PathLab, node: PathNode, from: String, to: String, name: &str) -> ChildProcess {
    let mut cmd = common::sustain_host();
    cmd.args(["forward", "--from", &from, "--to", &to]);
    let events = path.lab().run_dir().join(format!("{name}.events.jsonl"));
    common::spawn_listener(path, node, cmd, &events)
}

fn rss_kib(child: &ChildProcess) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if !sustain_lab::is_root() {
        eprintln!("bench forward: SKIPPED: needs root for namespaces and raw sockets");
        return;
    }
    let bytes = mib() << 20;
    let path = PathLab::new().expect("building the A-R-B path");
    println!(
        "sustain-host forward, A -> R -> B veth path, MTU 1500, offloads off, 0 ms delay, {} MiB",
        bytes >> 20
    );

    // (a) sustain-host direct, from a page-cached (not sparse) file.
    let data = path.lab().run_dir().join("bench-data");
    std::fs::write(&data, vec![0x5au8; bytes as usize]).expect("writing the send file");
    let _ = std::fs::read(&data); // into the page cache
    let server = SocketAddrV4::new(PathLab::B_ADDR, DIRECT_PORT);
    let mut listen = common::sustain_host();
    listen
        .args(["listen", "--no-digest", "--bind", &server.to_string()])
        .args(["--recv-file", "/dev/null"]);
    let events = path.lab().run_dir().join("direct-receiver.events.jsonl");
    let receiver = common::spawn_listener(&path, PathNode::B, listen, &events);
    let mut connect = common::sustain_host();
    connect
        .args(["connect", "--no-digest", &server.to_string(), "--send-file"])
        .arg(&data);
    let sender = path
        .spawn_in(PathNode::A, connect)
        .expect("sustain-host connect");
    common::expect_success(&sender, TIMEOUT);
    let summary = common::expect_success(&receiver, TIMEOUT);
    let direct = gbps(bytes, summary["seconds"].as_f64().unwrap_or(f64::NAN));
    println!("  throughput  sustain-host direct        : {direct:6.2} Gbit/s");

    // (b) the same through the two forwards, kernel TCP at both ends.
    let (report_tx, report_rx) = std::sync::mpsc::channel();
    let listener = path
        .run_in(PathNode::B, || TcpListener::bind(SERVICE))
        .unwrap()
        .expect("the service on B");
    path.spawn_thread_in(PathNode::B, move || service(listener, report_tx))
        .unwrap();
    let fwd_b = forward(
        &path,
        PathNode::B,
        format!("sustain:0.0.0.0:{SUSTAIN_PORT}"),
        format!("tcp:{SERVICE}"),
        "forward-b",
    );
    let fwd_a = forward(
        &path,
        PathNode::A,
        format!("tcp:{ENTRY}"),
        format!(
            "sustain:{}",
            SocketAddrV4::new(PathLab::B_ADDR, SUSTAIN_PORT)
        ),
        "forward-a",
    );
    path.run_in(PathNode::A, move || -> std::io::Result<()> {
        let mut s = common::connect_retrying(ENTRY)?;
        let buf = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        s.shutdown(Shutdown::Write)
    })
    .unwrap()
    .expect("the forwarded sender");
    let (got, secs) = report_rx
        .recv_timeout(TIMEOUT)
        .expect("the service's count");
    assert_eq!(got, bytes, "the service got every byte");
    let forwarded = gbps(bytes, secs);
    println!(
        "  throughput  through forward (A and B)  : {forwarded:6.2} Gbit/s  ({:.2} x direct)",
        forwarded / direct
    );

    // Latency: 64-byte round trips, through forward vs Linux directly.
    let kernel = SocketAddrV4::new(PathLab::B_ADDR, KERNEL_PORT);
    let listener = path
        .run_in(PathNode::B, move || TcpListener::bind(kernel))
        .unwrap()
        .expect("kernel echo on B");
    path.spawn_thread_in(PathNode::B, move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || echo(s));
        }
    })
    .unwrap();
    let linux = path
        .run_in(PathNode::A, move || round_trips(kernel, ROUND_TRIPS))
        .unwrap()
        .expect("linux round trips");
    let through = path
        .run_in(PathNode::A, move || round_trips(ENTRY, ROUND_TRIPS))
        .unwrap()
        .expect("forwarded round trips");
    for (name, t) in [("linux direct", &linux), ("through forward", &through)] {
        println!(
            "  round trip  {name:<26} : p50 {:7.1} us  p99 {:7.1} us",
            pct(t, 0.5).as_secs_f64() * 1e6,
            pct(t, 0.99).as_secs_f64() * 1e6
        );
    }
    println!(
        "  forward adds (p50)                     : {:7.1} us",
        (pct(&through, 0.5).as_secs_f64() - pct(&linux, 0.5).as_secs_f64()) * 1e6
    );

    // Concurrency: 100 forwarded connections open at once, each echoing.
    let (ok, _held) = path
        .run_in(PathNode::A, || {
            let streams: Vec<TcpStream> = (0..CONNECTIONS)
                .filter_map(|_| common::connect_retrying(ENTRY).ok())
                .collect();
            let mut ok = 0;
            for mut s in &streams {
                let mut reply = [0u8; 8];
                if s.write_all(b"sustain!").is_ok()
                    && s.read_exact(&mut reply).is_ok()
                    && &reply == b"sustain!"
                {
                    ok += 1;
                }
            }
            (ok, streams) // held open until the figures are printed
        })
        .unwrap();
    println!(
        "  concurrency {CONNECTIONS} forwarded connections open at once: {ok} echoed; \
         forward RSS A {} KiB, B {} KiB",
        rss_kib(&fwd_a),
        rss_kib(&fwd_b)
    );
}
