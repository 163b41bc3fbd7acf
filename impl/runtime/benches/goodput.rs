//! `just bench`: goodput of sustain (each congestion controller) and of Linux
//! TCP (CUBIC and BBR, set per socket with TCP_CONGESTION) on one A - R - B
//! veth path (sustain_lab::PathLab, MTU 1500, offloads off) under a grid of
//! link conditions, printed as a markdown table of ranges over several runs.
//!
//! The grid: random loss {0, 1, 3} % each way x one-way delay {0, 20} ms x
//! rate {100 Mbit/s, unlimited}. Conditions live in the router R, so neither
//! host's stack holds the delayed packets: loss is R's FORWARD `statistic`
//! rule (both directions), delay is two NFQUEUE delay lines on R's link to A
//! (one per direction, so the RTT gains 2 x the one-way delay), and the rate
//! is a tbf on the egress of both of R's interfaces (its queue holds 100 ms
//! of the rate, then drops the tail). Each cell gets a fresh path, with
//! `tcp_no_metrics_save` on in A and B so no Linux run inherits the
//! ssthresh of an earlier one.
//!
//! What is measured: one flow A -> B. The sender writes a 1 MiB buffer from
//! memory, over and over; the receiver reads into a 1 MiB buffer and counts.
//! Goodput is the bytes the receiving application has read within a fixed
//! window (SUSTAIN_BENCH_SECS, default 5 s) from the moment it read the
//! first byte (so the handshake is excluded, slow start included), over the
//! window. Both stacks run in this process, each end on its own thread in
//! its namespace: sustain through the `sustain` library (one current-thread
//! tokio runtime per end, as sustain-host runs), Linux through blocking std
//! sockets. Within a cell every run measures every stack once, in turn, so a
//! busy moment of the machine touches all of them alike; ratios are taken
//! run by run (run i of ours over run i of Linux) and printed as ranges.
//!
//! Knobs (environment):
//! - SUSTAIN_BENCH_RUNS: runs per cell (default 3).
//! - SUSTAIN_BENCH_SECS: the measuring window in seconds (default 5).
//! - SUSTAIN_BENCH_CELLS: comma-separated cell filters; a filter is a
//!   dash-separated set of name parts that must all be in the cell's name,
//!   e.g. `loss3-delay20` or `loss1-delay0-100mbit` or `unlimited`.
//! - SUSTAIN_BENCH_STACKS: comma-separated stacks among sustain-bbr,
//!   sustain-cubic, sustain-newreno, linux-cubic, linux-bbr (default all).
//! - SUSTAIN_BENCH_BUFFER: sustain's send and receive buffer, e.g. 16MiB
//!   (default: the library's, 16 MiB), as sustain-host's `--send-buffer`
//!   and `--recv-buffer` set them. Linux's buffers autotune up to
//!   `tcp_wmem`/`tcp_rmem`'s maximum, which the header line prints.
//!
//! With the defaults the grid is 12 cells x 5 stacks x 3 runs of 5 s, about
//! 16 minutes (922 s measured). Needs root (namespaces, raw sockets).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sustain::{Endpoint, EndpointConfig};
use sustain_core::tcp::{Config, CongestionKind};
use sustain_lab::{
    set_rate_limit, DelayConfig, DelayLine, LinkMatch, PathLab, PathNode, RateLimit,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first port; every measurement uses the next one (no TIME-WAIT reuse).
const PORT_BASE: u16 = 6100;
/// Size of the sender's buffer and of the receiver's reads.
const CHUNK: usize = 1 << 20;
/// How long a measurement may wait for its connection and first byte.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One set of link conditions.
#[derive(Clone, Copy, Debug)]
struct Cell {
    /// Random loss in percent, each direction.
    loss_pct: u32,
    /// One-way delay in milliseconds.
    delay_ms: u64,
    /// Bottleneck rate in Mbit/s; `None`: only the veths and CPUs limit.
    rate_mbit: Option<u64>,
}

impl Cell {
    fn grid() -> Vec<Cell> {
        let mut cells = Vec::new();
        for loss_pct in [0, 1, 3] {
            for delay_ms in [0, 20] {
                for rate_mbit in [Some(100), None] {
                    cells.push(Cell {
                        loss_pct,
                        delay_ms,
                        rate_mbit,
                    });
                }
            }
        }
        cells
    }

    fn name(&self) -> String {
        let rate = self
            .rate_mbit
            .map_or("unlimited".to_string(), |m| format!("{m}mbit"));
        format!("loss{}-delay{}-{rate}", self.loss_pct, self.delay_ms)
    }

    /// Whether the cell matches one of `filters` (see the module doc).
    fn selected(&self, filters: &[String]) -> bool {
        let name = self.name();
        let parts: Vec<&str> = name.split('-').collect();
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f.split('-').all(|want| parts.contains(&want)))
    }

    /// Builds a fresh path with this cell's conditions; the delay lines
    /// returned must live as long as the path is used.
    fn build(&self) -> (PathLab, Vec<DelayLine>) {
        let path = PathLab::new().expect("building the A-R-B path");
        let lab = path.lab();
        for node in [PathNode::A, PathNode::B] {
            lab.sysctl_write(node.name(), "net.ipv4.tcp_no_metrics_save", "1")
                .expect("tcp_no_metrics_save");
        }
        let r = PathNode::R.name();
        if let Some(mbit) = self.rate_mbit {
            for ifname in [PathLab::R_B_IF, PathLab::R_A_IF] {
                set_rate_limit(lab, r, ifname, &RateLimit::mbit(mbit)).expect("rate limit");
            }
        }
        let mut lines = Vec::new();
        if self.delay_ms > 0 {
            let delay = DelayConfig::fixed(Duration::from_millis(self.delay_ms));
            for link in [
                LinkMatch::ingress(PathLab::R_A_IF),
                LinkMatch::egress(PathLab::R_A_IF),
            ] {
                lines.push(DelayLine::start(lab, r, link, delay.clone()).expect("delay line"));
            }
        }
        if self.loss_pct > 0 {
            path.set_loss(Some(f64::from(self.loss_pct) / 100.0))
                .expect("random loss");
        }
        (path, lines)
    }
}

/// A sending stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    Sustain(CongestionKind),
    /// Linux TCP with this TCP_CONGESTION on the sending socket.
    Linux(&'static str),
}

impl Stack {
    const ALL: [Stack; 5] = [
        Stack::Sustain(CongestionKind::Bbr),
        Stack::Sustain(CongestionKind::Cubic),
        Stack::Sustain(CongestionKind::NewReno),
        Stack::Linux("cubic"),
        Stack::Linux("bbr"),
    ];

    fn name(self) -> String {
        match self {
            Stack::Sustain(kind) => format!("sustain-{kind}"),
            Stack::Linux(cc) => format!("linux-{cc}"),
        }
    }
}

/// One measurement's result.
#[derive(Clone, Debug)]
struct Measured {
    /// Bytes read by the receiving application within the window.
    bytes: u64,
    window: Duration,
    /// What the stack reported about itself (retransmissions, RTOs).
    note: String,
}

impl Measured {
    fn mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.window.as_secs_f64() / 1e6
    }
}

struct Settings {
    runs: usize,
    window: Duration,
    /// sustain's send and receive buffer (`None`: the library's default).
    buffer: Option<usize>,
    cells: Vec<Cell>,
    stacks: Vec<Stack>,
}

fn env_list(key: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Settings {
    fn from_env() -> Settings {
        let number = |key: &str, default: f64| {
            std::env::var(key).ok().map_or(default, |v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
            })
        };
        let cell_filters = env_list("SUSTAIN_BENCH_CELLS");
        let cells: Vec<Cell> = Cell::grid()
            .into_iter()
            .filter(|c| c.selected(&cell_filters))
            .collect();
        assert!(!cells.is_empty(), "SUSTAIN_BENCH_CELLS selects no cell");
        let stack_names = env_list("SUSTAIN_BENCH_STACKS");
        let stacks: Vec<Stack> = Stack::ALL
            .into_iter()
            .filter(|s| stack_names.is_empty() || stack_names.contains(&s.name()))
            .collect();
        assert!(!stacks.is_empty(), "SUSTAIN_BENCH_STACKS selects no stack");
        let buffer = std::env::var("SUSTAIN_BENCH_BUFFER")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| {
                sustain_core::units::parse_size(&v)
                    .ok()
                    .and_then(|b| usize::try_from(b).ok())
                    .unwrap_or_else(|| {
                        panic!("SUSTAIN_BENCH_BUFFER={v} is not a size (e.g. 16MiB)")
                    })
            });
        Settings {
            buffer,
            runs: number("SUSTAIN_BENCH_RUNS", 3.0).max(1.0) as usize,
            window: Duration::from_secs_f64(number("SUSTAIN_BENCH_SECS", 5.0).max(0.1)),
            cells,
            stacks,
        }
    }
}

// ---------------------------------------------------------------- Linux TCP

/// A kernel socket in A connected to `server` with `congestion` set before
/// the SYN; returns the stream and the algorithm the kernel reports for it.
fn linux_connect(server: SocketAddrV4, congestion: &str) -> std::io::Result<(TcpStream, String)> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_tcp_congestion(congestion.as_bytes())?;
        match socket.connect_timeout(&SockAddr::from(server), Duration::from_secs(10)) {
            Ok(()) => {
                let name = socket.tcp_congestion()?;
                let name = String::from_utf8_lossy(&name)
                    .trim_end_matches('\0')
                    .to_string();
                return Ok((socket.into(), name));
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Accepts one connection (waiting up to START_TIMEOUT) and counts what it
/// reads within `window` of the first byte.
fn linux_sink(listener: TcpListener, window: Duration) -> std::io::Result<u64> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    let mut buf = vec![0u8; CHUNK];
    stream.set_read_timeout(Some(START_TIMEOUT))?;
    let first = stream.read(&mut buf)?;
    let end = Instant::now() + window;
    let mut bytes = first as u64;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            // A read that returns after the window's end is not counted.
            Ok(n) if Instant::now() <= end => bytes += n as u64,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(bytes)
}

fn measure_linux(
    path: &PathLab,
    congestion: &'static str,
    port: u16,
    window: Duration,
) -> Result<Measured, String> {
    let server = SocketAddrV4::new(PathLab::B_ADDR, port);
    let listener = path
        .run_in(PathNode::B, move || TcpListener::bind(server))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("kernel listener: {e}"))?;
    let sink = std::thread::spawn(move || linux_sink(listener, window));
    let (stream, in_effect) = path
        .run_in(PathNode::A, move || linux_connect(server, congestion))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("kernel connect: {e}"))?;
    if in_effect != congestion {
        return Err(format!(
            "asked for {congestion}, the socket runs {in_effect}"
        ));
    }
    let stopper = stream.try_clone().map_err(|e| e.to_string())?;
    let source = std::thread::spawn(move || {
        let mut stream = stream;
        let buf = vec![0x5au8; CHUNK];
        // Ends when the receiver resets or `stopper` shuts the socket down.
        while stream.write_all(&buf).is_ok() {}
    });
    let got = sink.join().map_err(|_| "kernel sink panicked".to_string());
    let _ = stopper.shutdown(Shutdown::Both);
    let _ = source.join();
    let bytes = got?.map_err(|e| format!("kernel sink: {e}"))?;
    Ok(Measured {
        bytes,
        window,
        note: format!("TCP_CONGESTION={in_effect}"),
    })
}

// ------------------------------------------------------------------ sustain

/// Runs `f` on a current-thread tokio runtime on a thread inside `node`.
fn in_node<T: Send + 'static, F>(
    path: &PathLab,
    node: PathNode,
    f: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T>,
{
    path.spawn_thread_in(node, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f())
    })
    .expect("a thread in the node")
}

async fn sustain_sink(
    endpoint: &Endpoint,
    local: SocketAddrV4,
    ready: std::sync::mpsc::Sender<()>,
    window: Duration,
) -> Result<u64, String> {
    let listener = endpoint
        .listen(local)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let _ = ready.send(());
    let mut stream = tokio::time::timeout(START_TIMEOUT, listener.accept())
        .await
        .map_err(|_| "no connection".to_string())?
        .map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    let first = tokio::time::timeout(START_TIMEOUT, stream.read(&mut buf))
        .await
        .map_err(|_| "no first byte".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let end = tokio::time::Instant::now() + window;
    let mut bytes = first as u64;
    while let Ok(read) = tokio::time::timeout_at(end, stream.read(&mut buf)).await {
        match read.map_err(|e| format!("read: {e}"))? {
            0 => break,
            n => bytes += n as u64,
        }
    }
    stream.abort();
    Ok(bytes)
}

fn measure_sustain(
    path: &PathLab,
    kind: CongestionKind,
    port: u16,
    window: Duration,
    buffer: Option<usize>,
) -> Result<Measured, String> {
    let server = SocketAddrV4::new(PathLab::B_ADDR, port);
    let defaults = Config::default();
    let config = EndpointConfig {
        tcp: Config {
            congestion: kind,
            send_buffer: buffer.unwrap_or(defaults.send_buffer),
            recv_buffer: buffer.unwrap_or(defaults.recv_buffer),
            ..defaults
        },
        ..EndpointConfig::default()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver_config = config.clone();
    let receiver = in_node(path, PathNode::B, move || async move {
        let endpoint = Endpoint::new(receiver_config).map_err(|e| format!("endpoint: {e}"))?;
        let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let got = sustain_sink(&endpoint, local, ready_tx, window).await;
        let drops = endpoint.rx_drops();
        endpoint.shutdown().await;
        got.map(|bytes| (bytes, drops))
    });
    if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
        return Err(receiver
            .join()
            .map_err(|_| "receiver panicked".to_string())?
            .err()
            .unwrap_or_else(|| "receiver never listened".to_string()));
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sender = in_node(path, PathNode::A, move || async move {
        let endpoint = Endpoint::new(config).map_err(|e| format!("endpoint: {e}"))?;
        let sent = async {
            let mut stream = endpoint
                .connect(server)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let buf = vec![0x5au8; CHUNK];
            tokio::select! {
                _ = stop_rx => {}
                () = async { while stream.write_all(&buf).await.is_ok() {} } => {}
            }
            stream.abort();
            Ok::<(), String>(())
        }
        .await;
        let stats = endpoint.stats();
        let drops = endpoint.rx_drops();
        endpoint.shutdown().await;
        sent.map(|()| (stats, drops))
    });
    let got = receiver.join().map_err(|_| "receiver panicked".to_string());
    let _ = stop_tx.send(());
    let (stats, sender_drops) = sender.join().map_err(|_| "sender panicked".to_string())??;
    let (bytes, receiver_drops) = got??;
    // Rx drops: segments the kernel dropped because an end's packet socket
    // was full (ACKs at the sender, data at the receiver): loss the path's
    // loss rule did not cause.
    let note = format!(
        "{} retransmitted, {} RTOs, {} D-SACKs, {} undos, {} TLPs, rx drops {sender_drops} at the sender, {receiver_drops} at the receiver",
        stats.retransmitted_segments, stats.timeouts, stats.dsacks_received, stats.spurious_undos, stats.tlp_probes
    );
    Ok(Measured {
        bytes,
        window,
        note,
    })
}

fn measure(
    path: &PathLab,
    stack: Stack,
    port: u16,
    window: Duration,
    buffer: Option<usize>,
) -> Result<Measured, String> {
    match stack {
        Stack::Sustain(kind) => measure_sustain(path, kind, port, window, buffer),
        Stack::Linux(cc) => measure_linux(path, cc, port, window),
    }
}

// ------------------------------------------------------------------- report

/// Results of one cell: per stack, one entry per run (`None`: it failed).
struct CellResult {
    cell: Cell,
    runs: Vec<(Stack, Vec<Option<f64>>)>,
}

impl CellResult {
    fn of(&self, stack: Stack) -> Option<&[Option<f64>]> {
        self.runs
            .iter()
            .find(|(s, _)| *s == stack)
            .map(|(_, r)| r.as_slice())
    }
}

fn fmt_rate(mbps: f64) -> String {
    if mbps >= 100.0 {
        format!("{mbps:.0}")
    } else if mbps >= 10.0 {
        format!("{mbps:.1}")
    } else {
        format!("{mbps:.2}")
    }
}

/// "min–max" of the values, "fail" for a failed run among them.
fn range(values: impl IntoIterator<Item = Option<f64>>, fmt: fn(f64) -> String) -> String {
    let values: Vec<Option<f64>> = values.into_iter().collect();
    if values.is_empty() {
        return "–".into();
    }
    let ok: Vec<f64> = values.iter().flatten().copied().collect();
    let failed = values.len() - ok.len();
    if ok.is_empty() {
        return "fail".into();
    }
    let min = ok.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ok.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = if fmt(min) == fmt(max) {
        fmt(min)
    } else {
        format!("{}–{}", fmt(min), fmt(max))
    };
    if failed > 0 {
        s.push_str(&format!(" ({failed} fail)"));
    }
    s
}

/// Run-by-run ratios of `ours` over `theirs`, as a range.
fn ratio(result: &CellResult, ours: Stack, theirs: Stack) -> String {
    let (Some(a), Some(b)) = (result.of(ours), result.of(theirs)) else {
        return "–".into();
    };
    range(
        a.iter().zip(b).map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        }),
        |r| format!("{r:.2}"),
    )
}

fn print_table(results: &[CellResult], stacks: &[Stack]) {
    let default = Stack::Sustain(CongestionKind::default());
    let mut header = String::from("| loss each way | one-way delay | rate |");
    let mut rule = String::from("|---|---|---|");
    for s in stacks {
        header.push_str(&format!(" {} |", s.name()));
        rule.push_str("---:|");
    }
    header.push_str(&format!(
        " cubic / linux-cubic | bbr / linux-bbr | default ({}) / linux-cubic |",
        CongestionKind::default()
    ));
    rule.push_str("---:|---:|---:|");
    println!("{header}\n{rule}");
    for r in results {
        let c = r.cell;
        let mut row = format!(
            "| {} % | {} ms | {} |",
            c.loss_pct,
            c.delay_ms,
            c.rate_mbit
                .map_or("unlimited".to_string(), |m| format!("{m} Mbit/s"))
        );
        for s in stacks {
            let cell = r
                .of(*s)
                .map_or("–".to_string(), |v| range(v.iter().copied(), fmt_rate));
            row.push_str(&format!(" {cell} |"));
        }
        row.push_str(&format!(
            " {} | {} | {} |",
            ratio(
                r,
                Stack::Sustain(CongestionKind::Cubic),
                Stack::Linux("cubic")
            ),
            ratio(r, Stack::Sustain(CongestionKind::Bbr), Stack::Linux("bbr")),
            ratio(r, default, Stack::Linux("cubic")),
        ));
        println!("{row}");
    }
}

/// The last (maximum) field of /proc/sys/net/ipv4/`name`, or "?".
fn sysctl_max(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|v| v.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn main() {
    if !sustain_lab::is_root() {
        eprintln!("bench goodput: SKIPPED: needs root for namespaces and raw sockets");
        return;
    }
    let settings = Settings::from_env();
    let window = settings.window;
    println!(
        "goodput, one flow A -> B over A - R - B veths (MTU 1500, offloads off): Mbit/s the \
         receiving application read within {:.1} s of its first byte (handshake excluded, slow \
         start included), sender writing from memory; {} run(s) per cell, ranges min–max; \
         ratios run by run. Loss each way at R, delay on R's link to A (RTT = 2 x one-way), \
         rate as a tbf on both of R's egresses with a 100 ms queue. Linux sets TCP_CONGESTION \
         per socket (this machine's default: {}). Buffers: sustain's send and receive {}; \
         Linux's autotune up to tcp_wmem {} / tcp_rmem {} bytes.",
        window.as_secs_f64(),
        settings.runs,
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .unwrap_or_default()
            .trim(),
        settings.buffer.map_or_else(
            || format!("{} bytes (the default)", Config::default().recv_buffer),
            |b| format!("{b} bytes (SUSTAIN_BENCH_BUFFER)"),
        ),
        sysctl_max("tcp_wmem"),
        sysctl_max("tcp_rmem"),
    );
    let started = Instant::now();
    let mut port = PORT_BASE;
    let mut results = Vec::new();
    for cell in &settings.cells {
        let (path, lines) = cell.build();
        let mut result = CellResult {
            cell: *cell,
            runs: settings.stacks.iter().map(|s| (*s, Vec::new())).collect(),
        };
        for run in 0..settings.runs {
            for (stack, runs) in &mut result.runs {
                port = port.wrapping_add(1).max(PORT_BASE);
                let got = measure(&path, *stack, port, window, settings.buffer);
                match &got {
                    Ok(m) => eprintln!(
                        "  {} run {} {:<16} {:>9} Mbit/s  ({})",
                        cell.name(),
                        run + 1,
                        stack.name(),
                        fmt_rate(m.mbps()),
                        m.note
                    ),
                    Err(e) => eprintln!(
                        "  {} run {} {:<16} FAILED: {e}",
                        cell.name(),
                        run + 1,
                        stack.name()
                    ),
                }
                runs.push(got.ok().map(|m| m.mbps()));
            }
        }
        for line in &lines {
            if let Ok(stats) = line.stats() {
                if stats.overload_drops() > 0 {
                    eprintln!(
                        "  {}: the delay line {} dropped {} packets from overload",
                        cell.name(),
                        line.link(),
                        stats.overload_drops()
                    );
                }
            }
        }
        drop(lines);
        drop(path);
        results.push(result);
    }
    println!();
    print_table(&results, &settings.stacks);
    println!(
        "\n({} cell(s) in {:.0} s)",
        results.len(),
        started.elapsed().as_secs_f64()
    );
}
