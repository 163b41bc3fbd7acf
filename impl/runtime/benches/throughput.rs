//! `just bench`: bulk throughput of sustain-host and of Linux TCP over the
//! same A - R - B veth path (sustain_lab::PathLab, MTU 1500, offloads off on
//! every veth end), one flow each, four flows per run, several runs:
//! Linux -> Linux, sustain -> sustain, sustain -> Linux, Linux -> sustain.
//!
//! **Fair by construction** (DESIGN.md, Benchmarks): every sender reads the
//! same page-cached (written, not sparse) file in 256 KiB reads and writes
//! what it read; every receiver reads in 256 KiB reads and discards
//! (sustain-host into /dev/null, the kernel sink into nothing). sustain-host
//! runs with --no-digest, and the Linux side hashes nothing either.
//!
//! Per flow: Gbit/s (receiver's view, accept to EOF), the ratio to the same
//! run's Linux -> Linux, and CPU seconds per GiB: user + sys of everything
//! the flow ran, i.e. the sustain-host processes (getrusage of reaped
//! children, which includes the iptables runs they wait for) plus this
//! process (its kernel sender/sink threads; idle otherwise). Both counts
//! include the kernel work charged to them: softirq receive processing and
//! R's forwarding land on whichever process the CPU was running, so the
//! figure is for the whole flow, both ends and the router.
//!
//! Each run's line also says what sustain lost, from the events files: the
//! sustain sender's retransmitted segments (`rexmit`) and the segments the
//! sustain receiver's packet socket dropped for want of buffer (`drops`).
//! The path has no loss rule: a slow run with loss is a loss-recovery
//! figure, not a datapath one (the loss may be the stack's, or a veth or
//! forwarding queue's overflow, which this bench does not read). For the
//! sustain sender it also gives the segments per GSO super-segment and the
//! packets it received per MiB (ACKs, and the handshake's few): the
//! batching that per-byte CPU follows.
//!
//! `SUSTAIN_BENCH_MIB` (default 1024) sets the size, `SUSTAIN_BENCH_RUNS`
//! (default 3) the number of runs, `SUSTAIN_BENCH_FLOWS` (comma-separated
//! among sustain-sustain, sustain-linux, linux-sustain) the sustain flows
//! (Linux -> Linux always runs: the ratios are to it); ranges are min–max over the runs.
//! Needs root (namespaces, raw sockets).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use sustain_lab::{ChildProcess, PathLab, PathNode};

#[path = "../tests/common/mod.rs"]
mod common;

const PORT: u16 = 5201;
const TIMEOUT: Duration = Duration::from_secs(300);
/// Read and write size on every side (sustain-host's CHUNK).
const CHUNK: usize = 256 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(default)
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e9
}

/// User + sys seconds of this process (`RUSAGE_SELF`) or of its reaped
/// children (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &raw mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU used between `start` and `finish`, split by who used it.
struct CpuMeter {
    children: f64,
    this: f64,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            children: cpu_seconds(libc::RUSAGE_CHILDREN),
            this: cpu_seconds(libc::RUSAGE_SELF),
        }
    }

    /// (sustain-host processes, this process) seconds since `start`.
    fn finish(self) -> (f64, f64) {
        (
            cpu_seconds(libc::RUSAGE_CHILDREN) - self.children,
            cpu_seconds(libc::RUSAGE_SELF) - self.this,
        )
    }
}

/// Accepts one connection and reads it to EOF; returns (bytes, seconds
/// from accept to EOF).
fn kernel_sink(listener: TcpListener) -> std::io::Result<(u64, f64)> {
    let (mut s, _) = listener.accept()?;
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((total, start.elapsed().as_secs_f64()));
        }
        total += n as u64;
    }
}

/// Sends `data` the way sustain-host does: 256 KiB reads, each written out.
fn kernel_source(addr: SocketAddrV4, data: &Path) -> std::io::Result<()> {
    let mut s = common::connect_retrying(addr)?;
    let mut file = File::open(data)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver's FIN: everything was delivered.
    let mut sink = [0u8; 64];
    while s.read(&mut sink)? > 0 {}
    Ok(())
}

/// Writes `bytes` of a pattern (no holes) and reads them back once, so the
/// file is in the page cache for every sender.
fn make_send_file(path: &Path, bytes: u64) {
    let block: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut f = File::create(path).expect("creating the send file");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&block[..n]).expect("writing the send file");
        left -= n as u64;
    }
    f.sync_all().expect("syncing the send file");
    let mut r = File::open(path).expect("reopening the send file");
    let mut buf = vec![0u8; CHUNK];
    while r.read(&mut buf).expect("reading the send file") > 0 {}
}

/// `sustain-host listen --no-digest` in B into /dev/null, ready to accept.
fn sustain_receiver(path: &PathLab, server: SocketAddrV4) -> ChildProcess {
    let mut listen = common::sustain_host();
    listen
        .args(["listen", "--no-digest", "--bind", &server.to_string()])
        .args(["--recv-file", "/dev/null"]);
    common::spawn_listener(path, PathNode::B, listen, &receiver_events(path))
}

/// `sustain-host connect --no-digest` in A sending `data`.
fn sustain_sender(path: &PathLab, server: SocketAddrV4, data: &Path) -> ChildProcess {
    let mut connect = common::sustain_host();
    let events = sender_events(path);
    let _ = std::fs::remove_file(&events);
    connect
        .args(["connect", "--no-digest", &server.to_string(), "--send-file"])
        .arg(data)
        .arg("--events")
        .arg(events);
    path.spawn_in(PathNode::A, connect)
        .expect("spawning sustain-host connect")
}

fn receiver_events(path: &PathLab) -> std::path::PathBuf {
    path.lab().run_dir().join("receiver-events.jsonl")
}

fn sender_events(path: &PathLab) -> std::path::PathBuf {
    path.lab().run_dir().join("sender-events.jsonl")
}

/// A number from the `closed` event of an events file (`key` in it, or in
/// its `counters`), if the file has one.
fn closed_field(events: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(events).ok()?;
    let closed = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "closed")?;
    closed[key]
        .as_u64()
        .or_else(|| closed["counters"][key].as_u64())
}

/// Seconds seen by a sustain-host receiver, from its summary line.
fn receiver_seconds(receiver: &ChildProcess, bytes: u64) -> f64 {
    let summary = common::expect_success(receiver, TIMEOUT);
    assert_eq!(summary["bytes"].as_u64(), Some(bytes), "{summary}");
    summary["seconds"].as_f64().expect("seconds in the summary")
}

fn kernel_listener(path: &PathLab, server: SocketAddrV4) -> TcpListener {
    path.run_in(PathNode::B, move || TcpListener::bind(server))
        .unwrap()
        .expect("kernel listener")
}

#[derive(Clone, Copy, PartialEq)]
enum Flow {
    LinuxLinux,
    SustainSustain,
    SustainLinux,
    LinuxSustain,
}

impl Flow {
    const ALL: [Flow; 4] = [
        Flow::LinuxLinux,
        Flow::SustainSustain,
        Flow::SustainLinux,
        Flow::LinuxSustain,
    ];

    /// The name `SUSTAIN_BENCH_FLOWS` selects it by.
    fn key(self) -> &'static str {
        match self {
            Flow::LinuxLinux => "linux-linux",
            Flow::SustainSustain => "sustain-sustain",
            Flow::SustainLinux => "sustain-linux",
            Flow::LinuxSustain => "linux-sustain",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flow::LinuxLinux => "linux   -> linux  ",
            Flow::SustainSustain => "sustain -> sustain",
            Flow::SustainLinux => "sustain -> linux  ",
            Flow::LinuxSustain => "linux   -> sustain",
        }
    }
}

/// One flow's figures.
#[derive(Clone, Copy)]
struct Sample {
    gbps: f64,
    /// CPU seconds per GiB: sustain-host processes, this process.
    cpu_sustain: f64,
    cpu_this: f64,
    /// The sustain sender's retransmitted segments, if sustain sent.
    rexmit: Option<u64>,
    /// The sustain sender's segments per GSO super-segment, and the
    /// packets it received (ACKs) per MiB sent.
    batching: Option<(f64, f64)>,
    /// Segments the sustain receiver's packet socket dropped, if sustain
    /// received.
    drops: Option<u64>,
}

fn run_flow(flow: Flow, path: &PathLab, server: SocketAddrV4, data: &Path, bytes: u64) -> Sample {
    let meter = CpuMeter::start();
    let secs = match flow {
        Flow::LinuxLinux => {
            let sink = std::thread::spawn({
                let l = kernel_listener(path, server);
                move || kernel_sink(l)
            });
            let d = data.to_path_buf();
            path.run_in(PathNode::A, move || kernel_source(server, &d))
                .unwrap()
                .expect("kernel sender");
            let (got, secs) = sink.join().unwrap().expect("kernel sink");
            assert_eq!(got, bytes);
            secs
        }
        Flow::SustainSustain => {
            let receiver = sustain_receiver(path, server);
            let sender = sustain_sender(path, server, data);
            common::expect_success(&sender, TIMEOUT);
            receiver_seconds(&receiver, bytes)
        }
        Flow::SustainLinux => {
            let sink = std::thread::spawn({
                let l = kernel_listener(path, server);
                move || kernel_sink(l)
            });
            let sender = sustain_sender(path, server, data);
            common::expect_success(&sender, TIMEOUT);
            let (got, secs) = sink.join().unwrap().expect("kernel sink");
            assert_eq!(got, bytes);
            secs
        }
        Flow::LinuxSustain => {
            let receiver = sustain_receiver(path, server);
            let d = data.to_path_buf();
            path.run_in(PathNode::A, move || kernel_source(server, &d))
                .unwrap()
                .expect("kernel sender");
            receiver_seconds(&receiver, bytes)
        }
    };
    let (sustain, this) = meter.finish();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let sent = matches!(flow, Flow::SustainSustain | Flow::SustainLinux);
    let received = matches!(flow, Flow::SustainSustain | Flow::LinuxSustain);
    Sample {
        gbps: gbps(bytes, secs),
        cpu_sustain: sustain / gib,
        cpu_this: this / gib,
        rexmit: sent
            .then(|| closed_field(&sender_events(path), "retransmitted_segments"))
            .flatten(),
        drops: received
            .then(|| closed_field(&receiver_events(path), "rx_drops"))
            .flatten(),
        batching: sent
            .then(|| {
                let events = sender_events(path);
                let runs = closed_field(&events, "gso_runs")?;
                let segments = closed_field(&events, "gso_segments")?;
                let acks = closed_field(&events, "packets_in")?;
                Some((
                    segments as f64 / runs.max(1) as f64,
                    acks as f64 / (bytes >> 20).max(1) as f64,
                ))
            })
            .flatten(),
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    if !sustain_lab::is_root() {
        eprintln!("bench throughput: SKIPPED: needs root for namespaces and raw sockets");
        return;
    }
    let bytes = env_u64("SUSTAIN_BENCH_MIB", 1024) << 20;
    let runs = env_u64("SUSTAIN_BENCH_RUNS", 3).max(1) as usize;
    let flows: Vec<Flow> = match std::env::var("SUSTAIN_BENCH_FLOWS") {
        Err(_) => Flow::ALL.to_vec(),
        Ok(list) => {
            let wanted: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect();
            for w in &wanted {
                assert!(
                    Flow::ALL.iter().any(|f| f.key() == *w),
                    "SUSTAIN_BENCH_FLOWS: no flow {w:?} (linux-linux, sustain-sustain, \
                     sustain-linux, linux-sustain)"
                );
            }
            Flow::ALL
                .into_iter()
                .filter(|f| *f == Flow::LinuxLinux || wanted.contains(&f.key()))
                .collect()
        }
    };
    let path = PathLab::new().expect("building the A-R-B path");
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let data = path.lab().run_dir().join("bench-data");
    make_send_file(&data, bytes);
    println!(
        "bulk throughput, one flow, {} MiB, A -> R -> B veth path, MTU 1500, offloads off; \
         every sender reads the same page-cached file, every receiver discards; {runs} runs",
        bytes >> 20
    );
    // samples[run][flow]
    let mut samples: Vec<Vec<Sample>> = Vec::new();
    for run in 0..runs {
        let load = load_average();
        let mut row = Vec::new();
        for &flow in &flows {
            let s = run_flow(flow, &path, server, &data, bytes);
            row.push(s);
        }
        let linux = row[0].gbps;
        print!("  run {}: load {load}:", run + 1);
        for (flow, s) in flows.iter().zip(&row) {
            print!(
                " {} {:.2} ({:.2}x, {:.2} s/GiB",
                flow.name().split_whitespace().collect::<String>(),
                s.gbps,
                s.gbps / linux,
                s.cpu_sustain + s.cpu_this
            );
            if let Some(n) = s.rexmit {
                print!(", rexmit {n}");
            }
            if let Some(n) = s.drops {
                print!(", drops {n}");
            }
            if let Some((per_run, acks)) = s.batching {
                print!(", {per_run:.1} segments/GSO run, {acks:.0} ACKs/MiB");
            }
            print!(");");
        }
        println!();
        samples.push(row);
    }
    println!(
        "  {:<18}  {:>13}  {:>11}  {:>13}  {:>25}",
        "flow", "Gbit/s", "x linux", "CPU s/GiB", "of which sustain / bench"
    );
    for (i, flow) in flows.iter().enumerate() {
        let (g0, g1) = range(samples.iter().map(|r| r[i].gbps));
        let (x0, x1) = range(samples.iter().map(|r| r[i].gbps / r[0].gbps));
        let (c0, c1) = range(samples.iter().map(|r| r[i].cpu_sustain + r[i].cpu_this));
        let (s0, s1) = range(samples.iter().map(|r| r[i].cpu_sustain));
        let (t0, t1) = range(samples.iter().map(|r| r[i].cpu_this));
        println!(
            "  {:<18}  {g0:5.2} – {g1:5.2}  {x0:4.2} – {x1:4.2}  {c0:5.2} – {c1:5.2}  \
             {s0:4.2}–{s1:4.2} / {t0:4.2}–{t1:4.2}",
            flow.name()
        );
    }
    println!(
        "goals (issue 14): sustain -> sustain >= 0.8x and >= 5 Gbit/s; mixed flows >= 0.9x; \
         CPU per GiB <= 1.5x linux's"
    );
    drop(path);
}
