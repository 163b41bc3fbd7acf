//! `just bench` (part 3): the moves table. Reconnect latency of three systems
//! on the same topology with the same metric, measured per move:
//!
//! **new address usable** (the mover's new default route exists: the
//! kernel's acknowledgement to the lab, [`Attached::completed`], or the
//! route's rtnetlink event if that was seen earlier) -> **first new byte
//! readable** by the
//! receiving application (the first read returning bytes after the move;
//! the receiver reads continuously, so these are bytes beyond what it had
//! read before). Both instants are `Instant::now()` (CLOCK_MONOTONIC) in this
//! process: the lab moves hosts from this process and every application
//! thread runs in it too, inside its namespace.
//!
//! - **Topology**: `s` (the stationary host) on global network `home`, `m`
//!   (the mover) starting on `m1`; the lab's core router forwards between
//!   them. The one-way delay (0 or 20 ms) is a delay line on `s`'s link, so
//!   every path between `s` and `m` has it, before and after each move.
//! - **Moves**: `m` detaches (route, address, link gone), waits [`GAP`],
//!   attaches to the other of `m1`/`m2` with a new address; [`SETTLE`]
//!   between moves. The mover is always the connecting end (a mobile
//!   client); "sender moves" means the client sends, "receiver moves" that
//!   the server sends to it.
//! - **Stream**: the sender paces a counter stream (byte `i` is `i % 251`)
//!   at [`RATE_MIBPS`] MiB/s, writing what is due every millisecond (what
//!   the transport cannot take waits in the application); the receiver
//!   checks every byte. `SUSTAIN_BENCH_RATE_MIBPS=bulk` writes as fast as
//!   the transport takes instead.
//! - **Systems**: sustain (`sustain::Endpoint` in each namespace, no
//!   mobility server: both ends are global); Linux MPTCP with the in-kernel
//!   path manager, where a watcher in the mover's namespace adds the new
//!   address as a `subflow` endpoint over generic netlink the moment the
//!   rtnetlink route event arrives and removes the old one; and an
//!   application over kernel TCP that reconnects on the same route event and
//!   resumes at an offset (the protocol is in [`reconnect`]).
//! - **MPTCP's limit** (seen at 20 ms with `SUSTAIN_BENCH_TRACE`): the
//!   mover counts an RM_ADDR sent per move (MPTcpExtRmAddrTx) but the
//!   stationary end counts none received (MPTcpExtRmAddr stays 0; at 0 ms
//!   it counts every one): deleted before the new subflow can carry it, the
//!   old endpoint's RM_ADDR apparently leaves on a dead subflow. The
//!   stationary end keeps every dead subflow, and once they fill its
//!   `subflows` limit (at most 8) it rejects the next MP_JOIN
//!   (MPTcpExtMPJoinRejected) and the stream stalls for good. Deleting the
//!   old endpoint on MPTCP_EVENT_SUB_ESTABLISHED is still too early (same
//!   result); `mptcp-joined` deletes it [`RETIRE_MS`] later
//!   (`SUSTAIN_BENCH_MPTCP_RETIRE_MS`), and then every move recovers.
//!
//! Knobs: `SUSTAIN_BENCH_MOVES` (default 20), `SUSTAIN_BENCH_DELAYS`
//! (`0,20`), `SUSTAIN_BENCH_MOVERS` (`sender,receiver`),
//! `SUSTAIN_BENCH_SYSTEMS` (`sustain,mptcp,mptcp-joined,reconnect`),
//! `SUSTAIN_BENCH_RATE_MIBPS` (4, or `bulk`); `SUSTAIN_BENCH_TRACE` prints
//! each move's steps with timestamps.
//!
//! Needs root (namespaces, raw sockets, netlink); prints SKIPPED without it,
//! fails under `CI=true`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sustain::{Endpoint, EndpointConfig};
use sustain_lab::topology::{LinkConditions, Topology, TopologySpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 7400;
/// The sender's default pace, MiB/s (33.5 Mbit/s).
const RATE_MIBPS: f64 = 4.0;
/// Largest single write.
const CHUNK: usize = 64 * 1024;
/// Time without any address between detach and attach. Longer than the
/// one-way delay, so nothing sent before the move is still in flight when
/// the measurement starts.
const GAP: Duration = Duration::from_millis(100);
/// Time between a move's recovery and the next move.
const SETTLE: Duration = Duration::from_millis(300);
/// A move not recovered within this is counted as lost.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// MPTCP's generic netlink limits: the kernel's maximum for both.
const MPTCP_LIMIT: u32 = 8;
/// mptcp-joined: the old endpoint goes this long after the new subflow
/// joined (2.5 RTT at 20 ms one way; at once, its RM_ADDR is lost as well).
const RETIRE_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Sustain,
    /// The old endpoint removed the moment the new one is added.
    Mptcp,
    /// The old endpoint removed [`RETIRE_MS`] after the new subflow joined.
    MptcpJoined,
    Reconnect,
}

impl System {
    const ALL: [System; 4] = [
        System::Sustain,
        System::Mptcp,
        System::MptcpJoined,
        System::Reconnect,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Sustain => "sustain",
            System::Mptcp => "mptcp",
            System::MptcpJoined => "mptcp-joined",
            System::Reconnect => "reconnect",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mover {
    Sender,
    Receiver,
}

impl Mover {
    fn name(self) -> &'static str {
        match self {
            Mover::Sender => "sender",
            Mover::Receiver => "receiver",
        }
    }
}

/// What one (delay, mover, system) cell measured.
#[derive(Debug, Default)]
struct CellResult {
    latencies: Vec<Duration>,
    moves: usize,
    /// Bytes that differed from the counter stream (must be 0).
    corrupt: u64,
    notes: Vec<String>,
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: with 20 samples p99 is the largest.
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

fn main() {
    if !sustain_lab::is_root() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "bench moves: needs root (namespaces, raw sockets, netlink) and CI=true"
        );
        eprintln!("bench moves: SKIPPED: needs root for namespaces, raw sockets and netlink");
        return;
    }
    let moves: usize = std::env::var("SUSTAIN_BENCH_MOVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let delays: Vec<u64> = env_list("SUSTAIN_BENCH_DELAYS", "0,20")
        .iter()
        .map(|d| d.parse().expect("SUSTAIN_BENCH_DELAYS: milliseconds"))
        .collect();
    let movers: Vec<Mover> = env_list("SUSTAIN_BENCH_MOVERS", "sender,receiver")
        .iter()
        .map(|m| match m.as_str() {
            "sender" => Mover::Sender,
            "receiver" => Mover::Receiver,
            other => panic!("SUSTAIN_BENCH_MOVERS: {other:?} is not sender or receiver"),
        })
        .collect();
    let systems: Vec<System> = env_list(
        "SUSTAIN_BENCH_SYSTEMS",
        "sustain,mptcp,mptcp-joined,reconnect",
    )
    .iter()
    .map(|s| {
        System::ALL
            .into_iter()
            .find(|sys| sys.name() == s)
            .unwrap_or_else(|| panic!("SUSTAIN_BENCH_SYSTEMS: unknown system {s:?}"))
    })
    .collect();

    println!(
        "moves: new default route exists -> first new byte read by the receiver; p99 by \
         nearest rank (of fewer than 100 moves: the slowest)"
    );
    println!(
        "  kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  topology: s on `home`, mover m between `m1` and `m2` (new address each time), core \
         router between; one-way delay on s's link; mover = connecting end"
    );
    println!(
        "  stream: counter stream, {}; move = detach, {} ms gap, attach; {} ms between moves; \
         {moves} moves per cell; lost after {} s",
        match rate() {
            Some(r) => format!(
                "paced at {:.1} MiB/s, what is due written every 1 ms",
                r / 1048576.0
            ),
            None => "bulk (written as fast as the transport takes it)".into(),
        },
        GAP.as_millis(),
        SETTLE.as_millis(),
        RECOVER_TIMEOUT.as_secs()
    );
    println!("  sustain: sustain::Endpoint in each namespace, default config, no mobility server");
    println!(
        "  mptcp: IPPROTO_MPTCP sockets, in-kernel path manager, limits subflows {MPTCP_LIMIT} \
         add_addr_accepted {MPTCP_LIMIT}; on the mover's rtnetlink default-route event: \
         MPTCP_PM_CMD_ADD_ADDR (new address, dev, flags subflow), then MPTCP_PM_CMD_DEL_ADDR \
         (old address; id 0 for the initial one)"
    );
    println!(
        "  mptcp-joined: the same, but the old endpoint is deleted {} ms after the first \
         MPTCP_EVENT_SUB_ESTABLISHED that follows the add (the new subflow joined)",
        retire_delay().map_or(0, |d| d.as_millis())
    );
    println!(
        "  reconnect: kernel TCP; on the mover's rtnetlink default-route event the mover opens a \
         new connection and sends the bytes it has read (8 bytes, after reading its old socket \
         to the end); the server answers with the bytes it has read; each side writes from the \
         other's count (HTTP Range / tus Upload-Offset style)"
    );

    let mut rows = Vec::new();
    for &delay in &delays {
        for &mover in &movers {
            let mut cells = Vec::new();
            for &system in &systems {
                let started = Instant::now();
                let result = run_cell(delay, mover, system, moves).unwrap_or_else(|e| CellResult {
                    moves,
                    notes: vec![format!("{e:#}")],
                    ..CellResult::default()
                });
                let mut sorted = result.latencies.clone();
                sorted.sort();
                eprintln!(
                    "  {delay:>2} ms {:<8} {:<9}: {}/{} recovered, p50 {} ms, p99 {} ms, all {:?} ({:.0} s){}",
                    mover.name(),
                    system.name(),
                    sorted.len(),
                    result.moves,
                    ms(pct(&sorted, 0.5)),
                    ms(pct(&sorted, 0.99)),
                    result
                        .latencies
                        .iter()
                        .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
                        .collect::<Vec<_>>(),
                    started.elapsed().as_secs_f64(),
                    result
                        .notes
                        .iter()
                        .map(|n| format!("; {n}"))
                        .collect::<String>()
                );
                cells.push((system, result));
            }
            rows.push((delay, mover, cells));
        }
    }

    println!();
    let mut header = "| one-way delay | mover |".to_string();
    let mut rule = "|---|---|".to_string();
    for &system in &systems {
        header += &format!(" {0} p50 ms | {0} p99 ms | {0} recovered |", system.name());
        rule += "---:|---:|---:|";
    }
    println!("{header}\n{rule}");
    let mut notes = Vec::new();
    for (delay, mover, cells) in &rows {
        let mut line = format!("| {delay} ms | {} |", mover.name());
        for (system, result) in cells {
            let mut sorted = result.latencies.clone();
            sorted.sort();
            line += &format!(
                " {} | {} | {}/{} |",
                ms(pct(&sorted, 0.5)),
                ms(pct(&sorted, 0.99)),
                sorted.len(),
                result.moves
            );
            if result.corrupt > 0 {
                notes.push(format!(
                    "{delay} ms {} {}: {} bytes differed from the stream",
                    mover.name(),
                    system.name(),
                    result.corrupt
                ));
            }
            for note in &result.notes {
                notes.push(format!(
                    "{delay} ms {} {}: {note}",
                    mover.name(),
                    system.name()
                ));
            }
        }
        println!("{line}");
    }
    for note in notes {
        println!("- {note}");
    }
}

// ---------------------------------------------------------------------------
// The measurement: the receiver's reads.

/// Shared by the receiving application and the bench: counts and checks
/// every byte read, and records the first read after [`Probe::arm`].
#[derive(Default)]
struct Probe {
    state: Mutex<ProbeState>,
    changed: Condvar,
}

#[derive(Default)]
struct ProbeState {
    total: u64,
    corrupt: u64,
    armed: bool,
    /// Reads since [`Probe::arm`]: when, and how many bytes.
    reads: Vec<(Instant, usize)>,
}

/// The most reads a move records (reads come at most every millisecond
/// when paced; a new read after the start is all a move needs).
const MAX_READS: usize = 4096;

impl Probe {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The application read `data`, the stream's next bytes.
    fn on_read(&self, data: &[u8]) {
        let now = Instant::now();
        let mut st = self.lock();
        let mut offset = st.total;
        let mut bad = 0;
        for &b in data {
            if b != pattern(offset) {
                bad += 1;
            }
            offset += 1;
        }
        st.corrupt += bad;
        st.total = offset;
        if st.armed && st.reads.len() < MAX_READS {
            if st.reads.is_empty() {
                trace("first read");
            }
            st.reads.push((now, data.len()));
            self.changed.notify_all();
        }
    }

    /// The resumed stream starts beyond what was read: a hole.
    fn on_hole(&self, bytes: u64) {
        self.lock().corrupt += bytes;
    }

    fn total(&self) -> u64 {
        self.lock().total
    }

    fn corrupt(&self) -> u64 {
        self.lock().corrupt
    }

    /// From now on, record every read.
    fn arm(&self) {
        let mut st = self.lock();
        st.armed = true;
        st.reads.clear();
    }

    /// Waits for the first read at or after `start()` (asked again after
    /// each read: the start may be known only later), up to `timeout`.
    /// Returns it, and the bytes read since [`Probe::arm`] but before it.
    fn wait_read_since(
        &self,
        start: impl Fn() -> Instant,
        timeout: Duration,
    ) -> (Option<Instant>, usize) {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let start = start();
            let early: usize = st
                .reads
                .iter()
                .take_while(|(at, _)| *at < start)
                .map(|(_, n)| n)
                .sum();
            if let Some(&(at, _)) = st.reads.iter().find(|(at, _)| *at >= start) {
                st.armed = false;
                return (Some(at), early);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.armed = false;
                return (None, early);
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn wait_total(&self, bytes: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.total() >= bytes {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// With `SUSTAIN_BENCH_TRACE` set: a timestamped line on stderr (route
/// events, reconnects, first reads), to see where a slow move spent its time.
fn trace(what: &str) {
    if std::env::var_os("SUSTAIN_BENCH_TRACE").is_some() {
        let e = EPOCH.get_or_init(Instant::now);
        eprintln!("{:10.3} ms {what}", e.elapsed().as_secs_f64() * 1e3);
    }
}

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn fill(buf: &mut [u8], offset: u64) {
    let mut v = (offset % 251) as u8;
    for b in buf {
        *b = v;
        v = if v == 250 { 0 } else { v + 1 };
    }
}

/// The paced producer: how many bytes are due by now.
struct Pacer {
    start: Instant,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer {
            start: Instant::now(),
        }
    }

    fn due(&self) -> u64 {
        match rate() {
            Some(rate) => (self.start.elapsed().as_secs_f64() * rate) as u64,
            None => u64::MAX,
        }
    }
}

/// The sender's pace in bytes/s (`SUSTAIN_BENCH_RATE_MIBPS`); `None`: bulk.
fn rate() -> Option<f64> {
    static RATE: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *RATE.get_or_init(|| match std::env::var("SUSTAIN_BENCH_RATE_MIBPS") {
        Ok(v) if v == "bulk" => None,
        Ok(v) => Some(
            v.parse::<f64>()
                .expect("SUSTAIN_BENCH_RATE_MIBPS: MiB/s or \"bulk\"")
                * 1048576.0,
        ),
        Err(_) => Some(RATE_MIBPS * 1048576.0),
    })
}

// ---------------------------------------------------------------------------
// One cell.

fn run_cell(
    delay_ms: u64,
    mover: Mover,
    system: System,
    moves: usize,
) -> anyhow::Result<CellResult> {
    let mut spec = TopologySpec::new()
        .global("home")
        .global("m1")
        .global("m2")
        .host("s", "home")
        .host("m", "m1");
    if delay_ms > 0 {
        spec = spec.link(
            "s",
            "home",
            LinkConditions {
                delay: Duration::from_millis(delay_ms),
                ..LinkConditions::default()
            },
        );
    }
    let topo = Topology::build(&spec).context("building the topology")?;
    let server = SocketAddrV4::new(topo.address_of("s").context("s's address")?, PORT);
    let mover_addr = topo.address_of("m").context("m's address")?;
    let probe = Arc::new(Probe::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Every thread of this cell ends within 100 ms of `stop`, also when
    // starting one of them fails.
    let _stop_guard = StopOnDrop(stop.clone());
    let routes = Arc::new(Mutex::new(None::<Instant>));
    let observer = {
        let (routes, stop) = (routes.clone(), stop.clone());
        let watcher = topo.lab().run_in("m", RouteWatcher::open)??;
        topo.lab().spawn_thread_in("m", move || {
            watcher.run(&stop, |_| {
                let now = Instant::now();
                routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(now);
            });
        })?
    };
    let threads = match system {
        System::Sustain => start_sustain(&topo, server, mover, &probe, &stop)?,
        System::Mptcp | System::MptcpJoined | System::Reconnect => {
            start_kernel(&topo, server, mover_addr, mover, system, &probe, &stop)?
        }
    };
    let result = measure(&topo, &probe, &routes, moves);
    stop.store(true, Ordering::Relaxed);
    for t in threads.into_iter().chain([observer]) {
        let _ = t.join();
    }
    let mut result = result?;
    result.corrupt = probe.corrupt();
    // The delay line is a thread of this process: say when it was late or
    // overloaded (the machine is shared), as that moves the figures.
    for line in topo.link_stats() {
        let st = &line.stats;
        let dropped = st.enobufs + st.kernel_queue_dropped + st.kernel_user_dropped;
        if dropped > 0 || st.release_lateness_max > Duration::from_millis(5) {
            result.notes.push(format!(
                "delay line {} {}: {dropped} packets dropped by overload, releases late by \
                 {:.2} ms on average, {:.1} ms at worst",
                line.label,
                line.direction.name(),
                st.mean_release_lateness().as_secs_f64() * 1e3,
                st.release_lateness_max.as_secs_f64() * 1e3
            ));
        }
    }
    Ok(result)
}

/// mptcp-joined: how long after the new subflow joined the old endpoint is
/// deleted (`SUSTAIN_BENCH_MPTCP_RETIRE_MS`, default [`RETIRE_MS`]).
fn retire_delay() -> Option<Duration> {
    let ms = std::env::var("SUSTAIN_BENCH_MPTCP_RETIRE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RETIRE_MS);
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Performs the moves. Each move's clock starts when its new default route
/// existed: the kernel's acknowledgement to the lab ([`Attached::completed`])
/// or, if earlier, the route event seen by an observer in the mover's
/// namespace (`routes`): the event is sent before the acknowledgement, and
/// at 0 ms a reconnect can finish before the lab's thread runs again.
fn measure(
    topo: &Topology,
    probe: &Probe,
    routes: &Mutex<Option<Instant>>,
    moves: usize,
) -> anyhow::Result<CellResult> {
    if !probe.wait_total(256 * 1024, Duration::from_secs(15)) {
        bail!("the stream did not start");
    }
    std::thread::sleep(SETTLE);
    let mut result = CellResult {
        moves,
        ..CellResult::default()
    };
    let mut lost_in_a_row = 0;
    for i in 0..moves {
        let to = if i % 2 == 0 { "m2" } else { "m1" };
        topo.detach("m").context("detach")?;
        std::thread::sleep(GAP);
        *routes.lock().unwrap_or_else(PoisonError::into_inner) = None;
        probe.arm();
        let attached = topo.attach("m", to).context("attach")?;
        trace(&format!(
            "attach returned, completed {:?} ago",
            attached.completed.elapsed()
        ));
        let start = || {
            let seen = *routes.lock().unwrap_or_else(PoisonError::into_inner);
            seen.map_or(attached.completed, |seen| seen.min(attached.completed))
        };
        let (first_read, early) = probe.wait_read_since(start, RECOVER_TIMEOUT);
        if early > 0 {
            result.notes.push(format!(
                "move {i}: {early} bytes read after the gap but before the route was seen \
                 (held from before the move, or the route seen late); measured from the first \
                 read after it"
            ));
        }
        let start = start();
        match first_read {
            Some(at) => {
                result.latencies.push(at - start);
                lost_in_a_row = 0;
            }
            None => {
                trace(&format!("move {i} lost\n{}", diagnose(topo)));
                lost_in_a_row += 1;
                if lost_in_a_row == 3 {
                    result.notes.push(format!(
                        "stopped after move {i}: three moves in a row not recovered"
                    ));
                    break;
                }
            }
        }
        std::thread::sleep(SETTLE);
    }
    trace(&format!("after the moves\n{}", diagnose(topo)));
    Ok(result)
}

/// With `SUSTAIN_BENCH_TRACE`: what the kernel has in both hosts (MPTCP
/// endpoints and limits, sockets, MPTCP counters).
fn diagnose(topo: &Topology) -> String {
    if std::env::var_os("SUSTAIN_BENCH_TRACE").is_none() {
        return String::new();
    }
    let mut out = String::new();
    for node in ["m", "s"] {
        for cmd in [
            "ip mptcp endpoint show",
            "ip mptcp limits show",
            "ss -tinM",
            "nstat -az MPTcp*",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            let output = std::process::Command::new("ip")
                .args(["netns", "exec", &topo.netns_name(node)])
                .args(&args)
                .output();
            out += &format!("--- {node}: {cmd}\n");
            if let Ok(o) = output {
                out += &String::from_utf8_lossy(&o.stdout);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// sustain.

fn start_sustain(
    topo: &Topology,
    server: SocketAddrV4,
    mover: Mover,
    probe: &Arc<Probe>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server_sends = mover == Mover::Receiver;
    let (p, s) = (probe.clone(), stop.clone());
    let server_thread = topo.lab().spawn_thread_in("s", move || {
        runtime().block_on(async move {
            let endpoint = Endpoint::new(EndpointConfig::default()).expect("endpoint on s");
            let listener = endpoint
                .listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
                .await
                .expect("listen on s");
            let _ = ready_tx.send(());
            let work = async {
                let Ok(stream) = listener.accept().await else {
                    return;
                };
                sustain_pump(stream, server_sends, &p).await;
            };
            tokio::select! {
                () = work => {}
                () = stopped(&s) => {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.shutdown()).await;
        });
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the sustain listener on s")?;
    let (p, s) = (probe.clone(), stop.clone());
    let client_thread = topo.lab().spawn_thread_in("m", move || {
        runtime().block_on(async move {
            let endpoint = Endpoint::new(EndpointConfig::default()).expect("endpoint on m");
            let work = async {
                let stream = endpoint.connect(server).await.expect("connect from m");
                sustain_pump(stream, !server_sends, &p).await;
            };
            tokio::select! {
                () = work => {}
                () = stopped(&s) => {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.shutdown()).await;
        });
    })?;
    Ok(vec![server_thread, client_thread])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the paced stream, or reads it into the probe.
async fn sustain_pump(mut stream: sustain::Stream, sends: bool, probe: &Probe) {
    let mut buf = vec![0u8; CHUNK];
    if sends {
        let pacer = Pacer::new();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = pacer.due();
            while due > sent {
                let n = ((due - sent) as usize).min(CHUNK);
                fill(&mut buf[..n], sent);
                match stream.write(&buf[..n]).await {
                    Ok(k) => sent += k as u64,
                    Err(_) => return,
                }
            }
        }
    } else {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => probe.on_read(&buf[..n]),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Kernel sockets: Linux MPTCP and the reconnecting application.

const IPPROTO_MPTCP: i32 = 262;

fn kernel_socket(system: System) -> std::io::Result<socket2::Socket> {
    let protocol = match system {
        System::Mptcp | System::MptcpJoined => Some(socket2::Protocol::from(IPPROTO_MPTCP)),
        _ => Some(socket2::Protocol::TCP),
    };
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, protocol)
}

fn start_kernel(
    topo: &Topology,
    server: SocketAddrV4,
    mover_addr: Ipv4Addr,
    mover: Mover,
    system: System,
    probe: &Arc<Probe>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let resumable = system == System::Reconnect;
    let mptcp = matches!(system, System::Mptcp | System::MptcpJoined);
    if mptcp {
        for node in ["s", "m"] {
            topo.lab().run_in(node, || -> std::io::Result<()> {
                let mut pm = mptcp_pm::PathManager::open()?;
                pm.set_limits(MPTCP_LIMIT, MPTCP_LIMIT)
            })??;
        }
    }
    let server_sends = mover == Mover::Receiver;
    let listener = topo
        .lab()
        .run_in("s", move || -> std::io::Result<TcpListener> {
            let sock = kernel_socket(system)?;
            sock.set_reuse_address(true)?;
            sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())?;
            sock.listen(16)?;
            Ok(sock.into())
        })??;
    let mut threads = Vec::new();

    // The server: an acceptor hands each connection (with its resume
    // offset) to the data thread and wakes it.
    let (conn_tx, conn_rx) = mpsc::channel::<(TcpStream, u64)>();
    let (wake_server, wake_server_rx) = UnixStream::pair()?;
    let s = stop.clone();
    threads.push(topo.lab().spawn_thread_in("s", move || {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let mut first = true;
        while !s.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    trace("accepted");
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_nodelay(true);
                    let offset = if resumable {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut header = [0u8; 8];
                        if conn.read_exact(&mut header).is_err() {
                            continue;
                        }
                        u64::from_be_bytes(header)
                    } else if first {
                        0
                    } else {
                        continue; // MPTCP: one connection
                    };
                    first = false;
                    let _ = conn.set_nonblocking(true);
                    if conn_tx.send((conn, offset)).is_err() {
                        return;
                    }
                    let _ = (&wake_server).write(&[1]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })?);
    let (p, s) = (probe.clone(), stop.clone());
    threads.push(topo.lab().spawn_thread_in("s", move || {
        let Ok((mut conn, _)) = conn_rx.recv_timeout(Duration::from_secs(10)) else {
            return;
        };
        if resumable && reconnect::answer(&mut conn, 0).is_err() {
            return;
        }
        let mut pump = Pump::new(conn, server_sends, &p);
        pump.run(&s, &wake_server_rx, |pump| {
            drain_wake(&wake_server_rx);
            let mut last = None;
            while let Ok(next) = conn_rx.try_recv() {
                last = Some(next);
            }
            if let Some((mut conn, offset)) = last {
                // Switch first: a receiving server drains its old socket.
                if !pump.sends && !pump.broken {
                    pump.read_available();
                }
                let read = p.total();
                if reconnect::answer(&mut conn, read).is_ok() {
                    pump.switch(conn, if pump.sends { offset } else { read });
                }
            }
        });
    })?);

    // The mover: the client, and the watcher of its routes.
    let (wake_client, wake_client_rx) = UnixStream::pair()?;
    // mptcp-joined: endpoints to delete once a new subflow is established.
    let retiring = Arc::new(Mutex::new(Vec::<(u8, Ipv4Addr)>::new()));
    if system == System::MptcpJoined {
        let (s, retiring) = (stop.clone(), retiring.clone());
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        threads.push(topo.lab().spawn_thread_in("m", move || {
            let opened = mptcp_pm::PathManager::open().and_then(|pm| {
                let events = mptcp_pm::Events::open()?;
                Ok((pm, events))
            });
            let (mut pm, events) = match opened {
                Ok(both) => both,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            events.run(&s, |event| {
                if event != mptcp_pm::EVENT_SUB_ESTABLISHED {
                    return;
                }
                trace("mptcp: subflow established");
                if let Some(delay) = retire_delay() {
                    std::thread::sleep(delay);
                }
                for (id, addr) in std::mem::take(&mut *lock(&retiring)) {
                    if let Err(e) = pm.delete_endpoint(id, addr) {
                        eprintln!("mptcp: deleting endpoint {addr}: {e}");
                    }
                }
            });
        })?);
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the MPTCP event listener")??;
    }
    let s = stop.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
    threads.push(topo.lab().spawn_thread_in("m", move || {
        let watcher = match RouteWatcher::open() {
            Ok(w) => w,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut pm = if mptcp {
            match mptcp_pm::PathManager::open() {
                Ok(pm) => Some(pm),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            }
        } else {
            None
        };
        let _ = ready_tx.send(Ok(()));
        let mut old = (0u8, mover_addr);
        let mut next_id = 1u8;
        watcher.run(&s, |oif| match pm.as_mut() {
            None => {
                let _ = (&wake_client).write(&[1]);
            }
            Some(pm) => {
                let Ok(local) = source_address(server) else {
                    return;
                };
                let id = next_id;
                next_id = if next_id == 255 { 1 } else { next_id + 1 };
                if system == System::MptcpJoined {
                    // Before the add: at 0 ms the join can complete first.
                    lock(&retiring).push(old);
                }
                if let Err(e) = pm.add_endpoint(id, local, oif) {
                    eprintln!("mptcp: adding endpoint {local}: {e}");
                }
                if system == System::Mptcp {
                    if let Err(e) = pm.delete_endpoint(old.0, old.1) {
                        eprintln!("mptcp: deleting endpoint {}: {e}", old.1);
                    }
                }
                old = (id, local);
            }
        });
    })?);
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the route watcher")??;
    let (p, s) = (probe.clone(), stop.clone());
    threads.push(topo.lab().spawn_thread_in("m", move || {
        let conn = match connect(system, server) {
            Ok(mut conn) => {
                if resumable && reconnect::exchange(&mut conn, 0).is_err() {
                    return;
                }
                conn
            }
            Err(e) => {
                eprintln!("connect from m: {e}");
                return;
            }
        };
        let _ = conn.set_nonblocking(true);
        let mut pump = Pump::new(conn, !server_sends, &p);
        pump.run(&s, &wake_client_rx, |pump| {
            drain_wake(&wake_client_rx);
            if resumable {
                reconnect::resume(pump, system, server);
            }
        });
    })?);
    Ok(threads)
}

fn drain_wake(wake: &UnixStream) {
    let _ = wake.set_nonblocking(true);
    let mut buf = [0u8; 64];
    while matches!((&*wake).read(&mut buf), Ok(1..)) {}
}

/// Connects, retrying for a while (the route may be seconds old only).
fn connect(system: System, server: SocketAddrV4) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let attempt = kernel_socket(system).and_then(|sock| {
            sock.set_tcp_nodelay(true)?;
            sock.connect_timeout(&server.into(), Duration::from_secs(2))?;
            Ok(TcpStream::from(sock))
        });
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e),
        }
    }
}

/// The source address the kernel picks towards `peer` now.
fn source_address(peer: SocketAddrV4) -> std::io::Result<Ipv4Addr> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    udp.connect(peer)?;
    match udp.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        other => Err(std::io::Error::other(format!("{other} is not IPv4"))),
    }
}

/// One end of a kernel-socket stream: the paced sender or the reader, on a
/// nonblocking socket, polling it together with a wake-up socket.
struct Pump<'a> {
    conn: TcpStream,
    /// The socket failed: wait for a new one.
    broken: bool,
    sends: bool,
    probe: &'a Probe,
    pacer: Pacer,
    /// Sender: stream offset of the next byte to write.
    sent: u64,
    /// Receiver: bytes of the current socket the probe already has.
    skip: u64,
    buf: Vec<u8>,
}

impl<'a> Pump<'a> {
    fn new(conn: TcpStream, sends: bool, probe: &'a Probe) -> Pump<'a> {
        let _ = conn.set_nonblocking(true);
        Pump {
            conn,
            broken: false,
            sends,
            probe,
            pacer: Pacer::new(),
            sent: 0,
            skip: 0,
            buf: vec![0u8; CHUNK],
        }
    }

    fn run(&mut self, stop: &AtomicBool, wake: &UnixStream, mut on_wake: impl FnMut(&mut Self)) {
        while !stop.load(Ordering::Relaxed) {
            let want = if self.broken {
                0
            } else if self.sends {
                if self.pacer.due() > self.sent {
                    libc::POLLOUT
                } else {
                    0
                }
            } else {
                libc::POLLIN
            };
            let mut fds = [
                libc::pollfd {
                    fd: self.conn.as_raw_fd(),
                    events: want,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if self.sends { 1 } else { 50 };
            // SAFETY: two valid pollfds owned by this frame.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 {
                continue;
            }
            if fds[1].revents != 0 {
                on_wake(self);
                continue;
            }
            if want != 0 && fds[0].revents != 0 {
                if self.sends {
                    self.write_due();
                } else {
                    self.read_available();
                }
            }
        }
    }

    fn write_due(&mut self) {
        let due = self.pacer.due();
        while due > self.sent {
            let n = ((due - self.sent) as usize).min(CHUNK);
            fill(&mut self.buf[..n], self.sent);
            match self.conn.write(&self.buf[..n]) {
                Ok(k) => self.sent += k as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// Reads what the socket has now; `false` once it has nothing more.
    fn read_available(&mut self) {
        loop {
            match self.conn.read(&mut self.buf) {
                Ok(0) => {
                    self.broken = true;
                    return;
                }
                Ok(n) => {
                    let skip = (self.skip as usize).min(n);
                    self.skip -= skip as u64;
                    if n > skip {
                        self.probe.on_read(&self.buf[skip..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// Continues on `conn`, whose stream starts at `offset`: a sender
    /// writes from there, a receiver drains the old socket first and skips
    /// what it already has.
    fn switch(&mut self, conn: TcpStream, offset: u64) {
        if self.sends {
            self.sent = offset;
        } else {
            if !self.broken {
                self.read_available();
            }
            let total = self.probe.total();
            if offset > total {
                self.probe.on_hole(offset - total);
            }
            self.skip = total.saturating_sub(offset);
        }
        let _ = conn.set_nonblocking(true);
        self.conn = conn;
        self.broken = false;
    }
}

/// The reconnecting application's protocol (kernel TCP, client = mover),
/// the two offsets of resumable transfers on the web (an HTTP `Range`
/// request for downloads, tus's `Upload-Offset` for uploads):
///
/// - Right after each handshake the client sends an 8-byte big-endian
///   offset: the bytes it has read (after reading its old socket to the
///   end). The server resumes writing there.
/// - The server answers with the bytes it has read (after reading its old
///   socket to the end). A sending client waits for it and writes from there.
///
/// So a moving receiver gets new data 2 RTT after the route (handshake,
/// offset, data) and a moving sender 2.5 RTT (handshake, offset, the
/// server's offset, data). Nothing already delivered is sent again.
mod reconnect {
    use super::*;

    /// Client side of the exchange on a fresh connection: sends `read`,
    /// returns the server's read count.
    pub(super) fn exchange(conn: &mut TcpStream, read: u64) -> std::io::Result<u64> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        conn.write_all(&read.to_be_bytes())?;
        let mut reply = [0u8; 8];
        conn.read_exact(&mut reply)?;
        conn.set_read_timeout(None)?;
        Ok(u64::from_be_bytes(reply))
    }

    /// Server side: answers with what the server has read (the old socket
    /// drained first, by [`Pump::switch`]).
    pub(super) fn answer(conn: &mut TcpStream, read: u64) -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.write_all(&read.to_be_bytes())
    }

    pub(super) fn resume(pump: &mut Pump<'_>, system: System, server: SocketAddrV4) {
        if !pump.sends && !pump.broken {
            pump.read_available();
        }
        let read = pump.probe.total();
        trace(&format!("reconnecting, read {read}"));
        let mut conn = match connect(system, server) {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("reconnect: {e}");
                return;
            }
        };
        trace("connected");
        let server_read = match exchange(&mut conn, read) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("reconnect: the offset exchange: {e}");
                return;
            }
        };
        trace(&format!("server has read {server_read}"));
        pump.switch(conn, if pump.sends { server_read } else { read });
    }
}

// ---------------------------------------------------------------------------
// rtnetlink: the mover's default-route events.

/// A NETLINK_ROUTE socket subscribed to IPv4 route events, created in the
/// namespace of the thread that opens it.
struct RouteWatcher {
    fd: OwnedFd,
}

const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RT_TABLE_MAIN: u8 = 254;
const RTA_OIF: u16 = 4;

fn netlink_socket(protocol: i32, groups: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; bind reads it.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = groups;
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast::<libc::c_void>(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// (type, flags, payload) of each netlink message in `buf`.
fn netlink_messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push((ty, &buf[at + 16..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// (type, payload) of each attribute in `buf`.
fn attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = u16::from_ne_bytes(buf[at..at + 2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[at + 2..at + 4].try_into().unwrap()) & 0x3fff;
        if len < 4 || at + len > buf.len() {
            break;
        }
        out.push((ty, &buf[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

impl RouteWatcher {
    fn open() -> std::io::Result<RouteWatcher> {
        Ok(RouteWatcher {
            fd: netlink_socket(libc::NETLINK_ROUTE, RTMGRP_IPV4_ROUTE)?,
        })
    }

    /// Calls `on_default_route(output interface)` for each new IPv4
    /// default route in the main table, until `stop`.
    fn run(&self, stop: &AtomicBool, mut on_default_route: impl FnMut(u32)) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = recv(&self.fd, &mut buf) else {
                continue;
            };
            for (ty, payload) in netlink_messages(&buf[..n]) {
                // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
                // scope, type, flags (u32).
                if ty != libc::RTM_NEWROUTE || payload.len() < 12 {
                    continue;
                }
                let (dst_len, table) = (payload[1], payload[4]);
                if payload[0] != libc::AF_INET as u8 || dst_len != 0 || table != RT_TABLE_MAIN {
                    continue;
                }
                let oif = attributes(&payload[12..])
                    .into_iter()
                    .find(|(t, v)| *t == RTA_OIF && v.len() == 4)
                    .map_or(0, |(_, v)| u32::from_ne_bytes(v.try_into().unwrap()));
                trace("route event");
                on_default_route(oif);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MPTCP's in-kernel path manager over generic netlink
// (include/uapi/linux/mptcp_pm.h), as `ip mptcp endpoint` drives it.

mod mptcp_pm {
    use super::*;

    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
    const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
    const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
    const SOL_NETLINK: i32 = 270;
    const NETLINK_ADD_MEMBERSHIP: i32 = 1;
    /// enum mptcp_event_type: a subflow joined (MP_JOIN completed).
    pub(super) const EVENT_SUB_ESTABLISHED: u8 = 10;
    const MPTCP_PM_VERSION: u8 = 1;
    const CMD_ADD_ADDR: u8 = 1;
    const CMD_DEL_ADDR: u8 = 2;
    const CMD_SET_LIMITS: u8 = 5;
    const ATTR_ADDR: u16 = 1;
    const ATTR_RCV_ADD_ADDRS: u16 = 2;
    const ATTR_SUBFLOWS: u16 = 3;
    const ADDR_ATTR_FAMILY: u16 = 1;
    const ADDR_ATTR_ID: u16 = 2;
    const ADDR_ATTR_ADDR4: u16 = 3;
    const ADDR_ATTR_FLAGS: u16 = 6;
    const ADDR_ATTR_IF_IDX: u16 = 7;
    const FLAG_SUBFLOW: u32 = 1 << 1;
    const NLA_F_NESTED: u16 = 1 << 15;

    pub(super) struct PathManager {
        fd: OwnedFd,
        family: u16,
        /// The `mptcp_pm_events` multicast group.
        events_group: Option<u32>,
        seq: u32,
    }

    /// A generic netlink socket subscribed to the MPTCP events of this
    /// thread's namespace.
    pub(super) struct Events {
        fd: OwnedFd,
    }

    impl Events {
        pub(super) fn open() -> std::io::Result<Events> {
            let group = PathManager::open()?
                .events_group
                .ok_or_else(|| std::io::Error::other("no mptcp_pm_events group"))?;
            let fd = netlink_socket(libc::NETLINK_GENERIC, 0)?;
            // SAFETY: NETLINK_ADD_MEMBERSHIP takes a u32 group id.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    NETLINK_ADD_MEMBERSHIP,
                    (&raw const group).cast::<libc::c_void>(),
                    4,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Events { fd })
        }

        /// Calls `on_event(event type)` for each MPTCP event, until `stop`.
        pub(super) fn run(&self, stop: &AtomicBool, mut on_event: impl FnMut(u8)) {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = recv(&self.fd, &mut buf) else {
                    continue;
                };
                for (_, payload) in netlink_messages(&buf[..n]) {
                    if let Some(&cmd) = payload.first() {
                        on_event(cmd);
                    }
                }
            }
        }
    }

    fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
    }

    fn address(id: u8, addr: Ipv4Addr, flags: u32, ifindex: Option<u32>) -> Vec<u8> {
        let mut inner = Vec::new();
        attr(
            &mut inner,
            ADDR_ATTR_FAMILY,
            &(libc::AF_INET as u16).to_ne_bytes(),
        );
        attr(&mut inner, ADDR_ATTR_ID, &[id]);
        attr(&mut inner, ADDR_ATTR_ADDR4, &addr.octets());
        if flags != 0 {
            attr(&mut inner, ADDR_ATTR_FLAGS, &flags.to_ne_bytes());
        }
        if let Some(index) = ifindex {
            attr(&mut inner, ADDR_ATTR_IF_IDX, &(index as i32).to_ne_bytes());
        }
        let mut out = Vec::new();
        attr(&mut out, ATTR_ADDR | NLA_F_NESTED, &inner);
        out
    }

    impl PathManager {
        /// Opens a generic netlink socket in this thread's namespace and
        /// resolves the `mptcp_pm` family.
        pub(super) fn open() -> std::io::Result<PathManager> {
            let mut pm = PathManager {
                fd: netlink_socket(libc::NETLINK_GENERIC, 0)?,
                family: GENL_ID_CTRL,
                events_group: None,
                seq: 0,
            };
            let mut attrs = Vec::new();
            attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, b"mptcp_pm\0");
            let reply = pm.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, &attrs)?;
            let attrs = reply
                .as_deref()
                .and_then(|payload| payload.get(4..))
                .map(attributes)
                .unwrap_or_default();
            pm.family = attrs
                .iter()
                .find(|(t, v)| *t == CTRL_ATTR_FAMILY_ID && v.len() == 2)
                .map(|(_, v)| u16::from_ne_bytes((*v).try_into().unwrap()))
                .ok_or_else(|| std::io::Error::other("no mptcp_pm generic netlink family"))?;
            pm.events_group = attrs
                .iter()
                .filter(|(t, _)| *t == CTRL_ATTR_MCAST_GROUPS)
                .flat_map(|(_, groups)| attributes(groups))
                .find_map(|(_, group)| {
                    let fields = attributes(group);
                    let name = fields
                        .iter()
                        .find(|(t, _)| *t == CTRL_ATTR_MCAST_GRP_NAME)?
                        .1;
                    let id = fields.iter().find(|(t, _)| *t == CTRL_ATTR_MCAST_GRP_ID)?.1;
                    if name != b"mptcp_pm_events\0" {
                        return None;
                    }
                    Some(u32::from_ne_bytes(id.try_into().ok()?))
                });
            Ok(pm)
        }

        pub(super) fn set_limits(
            &mut self,
            subflows: u32,
            add_addr_accepted: u32,
        ) -> std::io::Result<()> {
            let mut attrs = Vec::new();
            attr(
                &mut attrs,
                ATTR_RCV_ADD_ADDRS,
                &add_addr_accepted.to_ne_bytes(),
            );
            attr(&mut attrs, ATTR_SUBFLOWS, &subflows.to_ne_bytes());
            self.request(self.family, CMD_SET_LIMITS, MPTCP_PM_VERSION, &attrs)
                .map(drop)
        }

        /// `ip mptcp endpoint add ADDR id ID dev IF subflow`.
        pub(super) fn add_endpoint(
            &mut self,
            id: u8,
            addr: Ipv4Addr,
            ifindex: u32,
        ) -> std::io::Result<()> {
            let attrs = address(id, addr, FLAG_SUBFLOW, Some(ifindex));
            self.request(self.family, CMD_ADD_ADDR, MPTCP_PM_VERSION, &attrs)
                .map(drop)
        }

        /// `ip mptcp endpoint delete id ID addr ADDR` (id 0: the initial
        /// subflow's address).
        pub(super) fn delete_endpoint(&mut self, id: u8, addr: Ipv4Addr) -> std::io::Result<()> {
            let attrs = address(id, addr, 0, None);
            self.request(self.family, CMD_DEL_ADDR, MPTCP_PM_VERSION, &attrs)
                .map(drop)
        }

        /// Sends one request with NLM_F_ACK; returns the first reply's
        /// payload (generic header included), if any, once the ACK came.
        fn request(
            &mut self,
            ty: u16,
            cmd: u8,
            version: u8,
            attrs: &[u8],
        ) -> std::io::Result<Option<Vec<u8>>> {
            self.seq += 1;
            let len = 16 + 4 + attrs.len();
            let mut msg = Vec::with_capacity(len);
            msg.extend_from_slice(&(len as u32).to_ne_bytes());
            msg.extend_from_slice(&ty.to_ne_bytes());
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
            msg.extend_from_slice(&flags.to_ne_bytes());
            msg.extend_from_slice(&self.seq.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            msg.extend_from_slice(&[cmd, version, 0, 0]);
            msg.extend_from_slice(attrs);
            // SAFETY: msg is valid for reads of its length.
            let n = unsafe {
                libc::send(
                    self.fd.as_fd().as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut reply = None;
            let mut buf = vec![0u8; 16 * 1024];
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let n = match recv(&self.fd, &mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                for (ty, payload) in netlink_messages(&buf[..n]) {
                    if ty == libc::NLMSG_ERROR as u16 {
                        let code = i32::from_ne_bytes(payload[..4].try_into().unwrap());
                        if code != 0 {
                            return Err(std::io::Error::from_raw_os_error(-code));
                        }
                        return Ok(reply);
                    }
                    reply.get_or_insert_with(|| payload.to_vec());
                }
            }
            Err(std::io::Error::new(ErrorKind::TimedOut, "no netlink ACK"))
        }
    }
}
