//! Per-link one-way delay without netem: a userspace NFQUEUE delay line.
//!
//! The kernel this lab runs on has no `sch_netem`, but it has `xt_NFQUEUE`. A
//! [`DelayLine`] installs one iptables rule (mangle table) in a node's namespace that
//! hands the matching packets to an NFQUEUE, and a thread holding that queue's netlink
//! socket (opened inside the namespace) gives each packet its verdict once it has been
//! held for the configured delay. The packet never leaves the kernel: in
//! metadata-only copy mode the thread sees only the packet id (and the kernel's
//! timestamp when the skb carries one), so a held packet costs the line a few bytes.
//!
//! * Order: release times are kept non-decreasing in arrival order (jitter included),
//!   so the line never reorders packets, and every release is one
//!   `NFQNL_MSG_VERDICT_BATCH` ("accept everything up to id N").
//! * Waiting: `ppoll` on the netlink socket, a stop eventfd and a timerfd armed for
//!   the next release (a timerfd fires with no slack; a poll timeout has 0.1 %).
//!   No busy-wait. The thread runs SCHED_FIFO by default ([`DelayConfig::realtime`]).
//! * Overload is counted, never silent: the socket reports ENOBUFS (counted), and the
//!   kernel's own per-queue counters (queue full, netlink send failed) are read from
//!   `/proc/net/netfilter/nfnetlink_queue` inside the namespace.
//! * The rule uses `--queue-bypass`: without a listener, packets pass undelayed
//!   rather than being dropped.
//!
//! Where to attach: on a router (`FORWARD`, or `PREROUTING`/`POSTROUTING` on the
//! router's end of a host link: [`LinkMatch::Ingress`] delays host -> router,
//! [`LinkMatch::Egress`] router -> host). Never hold a host's own kernel-TCP packets in
//! its own `POSTROUTING`: a held skb stays charged to its socket, and TCP small queues
//! then allow only a couple of packets in flight per delay (measured: 2.3 Mbit/s
//! through a 20 ms line on the host's egress, 268 Mbit/s through the same line on the
//! router's ingress). [`DelayLine::start`] warns when asked to. Packets are queued before
//! conntrack confirms a new flow, so on a NAPT router two packets of a new UDP flow
//! held at once meet conntrack's clash resolution (which merges them); TCP flows, whose
//! SYN travels alone, are unaffected.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sustain_core::rand::{Random, SplitMix64};

use crate::error::{IoContext, LabError, Result};
use crate::lab::Lab;
use crate::names::{validate_ifname, RunId};
use crate::netfilter;
use crate::netns::Netns;
use crate::nfqueue::{self, QueueSocket};
use crate::wakeup::{self, StopSignal, Timer};

/// The comment on every delay-line rule (followed by `-q<queue number>`).
pub const DELAY_COMMENT: &str = "sustain-delay";

/// Which packets of a node a delay line holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMatch {
    /// Packets the node forwards (`FORWARD`), optionally only those arriving on
    /// `in_iface` and/or leaving through `out_iface`.
    Forward {
        in_iface: Option<String>,
        out_iface: Option<String>,
    },
    /// Every packet leaving through the interface (`POSTROUTING -o`): forwarded and
    /// locally generated. On a router, this is "the link's direction away from me".
    Egress(String),
    /// Every packet arriving on the interface (`PREROUTING -i`): to be forwarded or
    /// delivered locally. On a router, this is "the link's direction towards me".
    Ingress(String),
}

impl LinkMatch {
    /// `FORWARD -i in_iface -o out_iface`.
    pub fn forward(in_iface: &str, out_iface: &str) -> LinkMatch {
        LinkMatch::Forward {
            in_iface: Some(in_iface.to_string()),
            out_iface: Some(out_iface.to_string()),
        }
    }

    /// `POSTROUTING -o iface`.
    pub fn egress(iface: &str) -> LinkMatch {
        LinkMatch::Egress(iface.to_string())
    }

    /// `PREROUTING -i iface`.
    pub fn ingress(iface: &str) -> LinkMatch {
        LinkMatch::Ingress(iface.to_string())
    }

    fn validate(&self) -> Result<()> {
        match self {
            LinkMatch::Forward {
                in_iface,
                out_iface,
            } => {
                for iface in [in_iface, out_iface].into_iter().flatten() {
                    validate_ifname(iface)?;
                }
                Ok(())
            }
            LinkMatch::Egress(iface) | LinkMatch::Ingress(iface) => validate_ifname(iface),
        }
    }

    /// The iptables arguments of the rule, for `action` `-A` or `-D`.
    fn rule(&self, action: &str, queue: u16) -> Vec<String> {
        let mut args: Vec<String> = vec!["-t".into(), "mangle".into(), action.into()];
        match self {
            LinkMatch::Forward {
                in_iface,
                out_iface,
            } => {
                args.push("FORWARD".into());
                if let Some(iface) = in_iface {
                    args.extend(["-i".into(), iface.clone()]);
                }
                if let Some(iface) = out_iface {
                    args.extend(["-o".into(), iface.clone()]);
                }
            }
            LinkMatch::Egress(iface) => {
                args.extend(["POSTROUTING".into(), "-o".into(), iface.clone()]);
            }
            LinkMatch::Ingress(iface) => {
                args.extend(["PREROUTING".into(), "-i".into(), iface.clone()]);
            }
        }
        args.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            format!("{DELAY_COMMENT}-q{queue}"),
            "-j".into(),
            "NFQUEUE".into(),
            "--queue-num".into(),
            queue.to_string(),
            "--queue-bypass".into(),
        ]);
        args
    }
}

impl fmt::Display for LinkMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkMatch::Forward {
                in_iface,
                out_iface,
            } => write!(
                f,
                "forward {} -> {}",
                in_iface.as_deref().unwrap_or("*"),
                out_iface.as_deref().unwrap_or("*")
            ),
            LinkMatch::Egress(iface) => write!(f, "egress {iface}"),
            LinkMatch::Ingress(iface) => write!(f, "ingress {iface}"),
        }
    }
}

/// What a delay line does to each packet.
#[derive(Clone, Debug, PartialEq)]
pub struct DelayConfig {
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter` (never below
    /// zero), then raised if needed so it leaves no earlier than the packet before it:
    /// jitter never reorders.
    pub jitter: Duration,
    /// Probability in `[0, 1]` with which the line drops a packet (on arrival).
    pub loss: f64,
    /// Seed of the line's jitter and loss draws (the same seed and arrivals give the
    /// same decisions).
    pub seed: u64,
    /// The kernel queue's maximum length, in packets. The default holds a
    /// 1 Gbit/s x 50 ms bandwidth-delay product of full-size packets (~4200) plus
    /// their ACKs with room to spare.
    pub queue_max_len: u32,
    /// The netlink socket's receive buffer (`SO_RCVBUFFORCE`), in bytes.
    pub receive_buffer: usize,
    /// Run the line's thread with real-time priority (SCHED_FIFO), so releases are
    /// not late by however long a busy machine makes a normal thread wait for a CPU.
    /// The thread only ever blocks on its fds and does bounded work per wake-up.
    /// Falls back to normal priority, with a warning, where that is not allowed.
    pub realtime: bool,
}

impl DelayConfig {
    /// A fixed delay: no jitter, no loss.
    pub fn fixed(delay: Duration) -> DelayConfig {
        DelayConfig {
            delay,
            ..DelayConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.loss.is_finite() && (0.0..=1.0).contains(&self.loss)) {
            return Err(LabError::InvalidValue(format!(
                "delay-line loss probability {} is not in [0, 1]",
                self.loss
            )));
        }
        if self.queue_max_len == 0 {
            return Err(LabError::InvalidValue(
                "delay-line queue length must be positive".into(),
            ));
        }
        if self.delay > MAX_DELAY || self.jitter > MAX_DELAY {
            return Err(LabError::InvalidValue(format!(
                "delay {:?} / jitter {:?} above the line's limit of {MAX_DELAY:?}",
                self.delay, self.jitter
            )));
        }
        Ok(())
    }
}

impl Default for DelayConfig {
    fn default() -> Self {
        DelayConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            seed: 0x5eed_de1a_u64,
            queue_max_len: 16384,
            receive_buffer: 32 << 20,
            realtime: true,
        }
    }
}

/// Delays and jitter above this are refused: a held packet pins kernel memory.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// What a delay line has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelayStats {
    /// Packets the kernel handed to the line.
    pub queued: u64,
    /// Packets released (accepted) after their delay.
    pub released: u64,
    /// Packets the line's own random loss dropped.
    pub lost: u64,
    /// Packets held right now.
    pub held: u64,
    /// Most packets held at once.
    pub max_held: u64,
    /// ENOBUFS errors on the netlink socket: the socket buffer overflowed and the
    /// kernel dropped packets (their number is in `kernel_user_dropped`).
    pub enobufs: u64,
    /// Netlink errors the kernel returned for verdicts or other requests.
    pub netlink_errors: u64,
    /// How late releases were, summed (for the mean) and at worst.
    pub release_lateness_total: Duration,
    pub release_lateness_max: Duration,
    /// The kernel's count of packets dropped because the queue was full.
    pub kernel_queue_dropped: u64,
    /// The kernel's count of packets dropped because it could not send them to the
    /// socket (buffer full).
    pub kernel_user_dropped: u64,
}

impl DelayStats {
    /// Mean lateness of a release past its due time.
    pub fn mean_release_lateness(&self) -> Duration {
        match u32::try_from(self.released) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.release_lateness_total / n,
            Err(_) => Duration::from_nanos(
                u64::try_from(self.release_lateness_total.as_nanos() / u128::from(self.released))
                    .unwrap_or(u64::MAX),
            ),
        }
    }

    /// Packets lost to overload anywhere (kernel queue full, socket full).
    pub fn overload_drops(&self) -> u64 {
        self.kernel_queue_dropped + self.kernel_user_dropped
    }
}

/// A running delay line: one iptables rule plus the thread that holds its packets.
///
/// Dropping it stops it (see [`DelayLine::stop`]). Stop it before tearing the lab
/// down: its socket keeps the namespace alive while it runs.
#[derive(Debug)]
pub struct DelayLine {
    node: String,
    link: LinkMatch,
    queue: u16,
    netns: Arc<Netns>,
    run: RunId,
    stop: Arc<StopSignal>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<io::Result<()>>>,
    rule_installed: bool,
}

impl DelayLine {
    /// Starts a delay line in `node` for the packets `link` selects. Returns once the
    /// queue is bound and the rule installed: every matching packet sent afterwards is
    /// delayed.
    pub fn start(lab: &Lab, node: &str, link: LinkMatch, config: DelayConfig) -> Result<DelayLine> {
        link.validate()?;
        config.validate()?;
        let netns = lab.netns(node)?;
        let stop = Arc::new(StopSignal::new().context(|| "creating an eventfd".to_string())?);
        let counters = Arc::new(Counters::default());

        if let LinkMatch::Egress(iface) = &link {
            let forwarding = netns.run(|| crate::sysctl::read("net.ipv4.ip_forward"))??;
            if forwarding.trim() == "0" {
                tracing::warn!(
                    node,
                    iface,
                    "delay line on a host's own egress: its TCP will be throttled to a few \
                     packets per delay (TCP small queues); attach it to the router's \
                     ingress instead"
                );
            }
        }
        let (queue, socket) = netns.run(|| bind_free_queue(&config))??;
        let thread = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            let schedule = Schedule::new(&config);
            let realtime = config.realtime;
            netns.spawn_thread(move || {
                run_line(socket, queue, realtime, &stop, schedule, &counters)
            })?
        };
        let mut line = DelayLine {
            node: node.to_string(),
            link,
            queue,
            netns,
            run: lab.run_id().clone(),
            stop,
            counters,
            thread: Some(thread),
            rule_installed: false,
        };
        let args = line.link.rule("-A", queue);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netfilter::iptables(&line.netns, &line.run, &args)?;
        line.rule_installed = true;
        tracing::info!(
            node,
            link = %line.link,
            queue,
            delay = ?config.delay,
            jitter = ?config.jitter,
            loss = config.loss,
            "delay line started"
        );
        Ok(line)
    }

    /// The node the line runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The packets it holds.
    pub fn link(&self) -> &LinkMatch {
        &self.link
    }

    /// Its NFQUEUE number (unique within the process).
    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// Counters so far, including the kernel's drop counters for the queue.
    pub fn stats(&self) -> Result<DelayStats> {
        let mut stats = self.counters.snapshot();
        let queue = self.queue;
        if let Some(kernel) = self
            .netns
            .run(move || nfqueue::read_kernel_counters(queue))??
        {
            stats.kernel_queue_dropped = kernel.queue_dropped;
            stats.kernel_user_dropped = kernel.user_dropped;
        }
        Ok(stats)
    }

    /// Stops the line: removes the rule (new packets pass undelayed), releases the
    /// packets still held at their due times, closes the queue and returns the final
    /// counters.
    pub fn stop(mut self) -> Result<DelayStats> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<DelayStats> {
        let mut first_error = None;
        if self.rule_installed {
            self.rule_installed = false;
            let args = self.link.rule("-D", self.queue);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(err) = netfilter::iptables(&self.netns, &self.run, &args) {
                first_error = Some(err);
            }
        }
        self.stop.raise();
        if let Some(thread) = self.thread.take() {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("delay-line thread panicked")));
            if let Err(err) = outcome {
                first_error.get_or_insert(LabError::io(
                    format!("delay line on queue {} in {}", self.queue, self.node),
                    err,
                ));
            }
        }
        let stats = self.counters.snapshot();
        tracing::info!(node = self.node, link = %self.link, queue = self.queue, ?stats, "delay line stopped");
        match first_error {
            Some(err) => Err(err),
            None => Ok(stats),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if self.thread.is_some() || self.rule_installed {
            if let Err(err) = self.shutdown() {
                tracing::warn!(node = self.node, queue = self.queue, %err, "stopping delay line");
            }
        }
    }
}

/// Live counters shared between the line's thread and its handle.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    held: AtomicU64,
    max_held: AtomicU64,
    enobufs: AtomicU64,
    netlink_errors: AtomicU64,
    lateness_total_ns: AtomicU64,
    lateness_max_ns: AtomicU64,
    kernel_queue_dropped: AtomicU64,
    kernel_user_dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DelayStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DelayStats {
            queued: get(&self.queued),
            released: get(&self.released),
            lost: get(&self.lost),
            held: get(&self.held),
            max_held: get(&self.max_held),
            enobufs: get(&self.enobufs),
            netlink_errors: get(&self.netlink_errors),
            release_lateness_total: Duration::from_nanos(get(&self.lateness_total_ns)),
            release_lateness_max: Duration::from_nanos(get(&self.lateness_max_ns)),
            kernel_queue_dropped: get(&self.kernel_queue_dropped),
            kernel_user_dropped: get(&self.kernel_user_dropped),
        }
    }
}

/// Queue numbers handed out by this process; NFQUEUE numbers are per namespace, so
/// process-wide uniqueness is more than enough.
static NEXT_QUEUE: AtomicU16 = AtomicU16::new(1);

/// Opens a netfilter netlink socket in the calling thread's namespace and binds it to
/// the first free queue number.
pub(crate) fn bind_free_queue(config: &DelayConfig) -> Result<(u16, QueueSocket)> {
    let socket = QueueSocket::open(config.receive_buffer)
        .context(|| "opening a netfilter netlink socket".to_string())?;
    for _ in 0..64 {
        let queue = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
        match socket.bind_queue(queue, config.queue_max_len) {
            Ok(()) => return Ok((queue, socket)),
            // Someone else in this namespace holds that number.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {}
            Err(err) => return Err(LabError::io(format!("binding NFQUEUE {queue}"), err)),
        }
    }
    Err(LabError::InvalidValue(
        "no free NFQUEUE number after 64 attempts".into(),
    ))
}

/// At most this many messages are read before due packets are released, so a burst of
/// arrivals cannot make releases late.
const RECEIVE_BATCH: usize = 256;

/// The real-time priority of delay-line threads when [`DelayConfig::realtime`] is on:
/// above every normal thread, well below the kernel's own real-time threads.
const REALTIME_PRIORITY: libc::c_int = 10;

/// The delay line's thread: receive, hold, release, until stopped and drained.
fn run_line(
    socket: QueueSocket,
    queue: u16,
    realtime: bool,
    stop: &StopSignal,
    mut schedule: Schedule,
    counters: &Counters,
) -> io::Result<()> {
    if realtime {
        if let Err(err) = make_realtime() {
            tracing::warn!(%err, "delay line runs without real-time priority: expect late releases under load");
        }
    }
    // Releases are timed by a timerfd (no slack); the rest of the thread's waits
    // need no precision.
    let timer = Timer::new()?;
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    let mut stopping = false;
    let mut seq: u32 = 100;
    let mut armed_for: Option<Instant> = None;
    loop {
        let next_due = held.front().map(|first| first.due);
        if next_due != armed_for {
            timer.set(next_due.map(|due| due.saturating_duration_since(Instant::now())))?;
            armed_for = next_due;
        }
        let [data, stop_raised, _] =
            wakeup::wait_readable([socket.fd(), stop.fd(), timer.fd()], None)?;
        stopping |= stop_raised;
        let mut received = 0;
        if data || stopping {
            received = receive(
                &socket,
                queue,
                &mut buf,
                &mut schedule,
                &mut held,
                counters,
                &mut seq,
            )?;
        }
        release_due(&socket, queue, &mut held, counters, &mut seq)?;
        if stopping && held.is_empty() && received == 0 {
            break;
        }
    }
    match nfqueue::read_kernel_counters(queue) {
        Ok(Some(kernel)) => {
            counters
                .kernel_queue_dropped
                .store(kernel.queue_dropped, Ordering::Relaxed);
            counters
                .kernel_user_dropped
                .store(kernel.user_dropped, Ordering::Relaxed);
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(queue, %err, "reading the kernel's queue counters"),
    }
    // Closing the socket unbinds the queue.
    drop(socket);
    Ok(())
}

/// Puts the calling thread in SCHED_FIFO: a delay line wakes for microseconds at a
/// time, but a normal thread on a busy machine can wait milliseconds for a CPU.
fn make_realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // nix has no wrapper for pthread_setschedparam (nor sched_setscheduler).
    // SAFETY: `param` is a valid sched_param that outlives the call, which only reads
    // it; pthread_self() is always a valid handle for the calling thread.
    #[allow(unsafe_code)]
    let ret = unsafe {
        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &raw const param)
    };
    match ret {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A packet the line holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: u32,
    due: Instant,
}

/// Reads up to [`RECEIVE_BATCH`] messages; returns how many packets arrived.
fn receive(
    socket: &QueueSocket,
    queue: u16,
    buf: &mut [u8],
    schedule: &mut Schedule,
    held: &mut VecDeque<Held>,
    counters: &Counters,
    seq: &mut u32,
) -> io::Result<usize> {
    let mut packets = 0;
    for _ in 0..RECEIVE_BATCH {
        let len = match socket.recv(buf) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                counters.enobufs.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "delay line: netlink socket overrun (ENOBUFS); packets were dropped"
                );
                continue;
            }
            Err(err) => return Err(err),
        };
        let now = Instant::now();
        let wall_now = SystemTime::now();
        for event in nfqueue::parse(buf.get(..len).unwrap_or_default()) {
            match event {
                nfqueue::Event::Packet { id, timestamp } => {
                    packets += 1;
                    counters.queued.fetch_add(1, Ordering::Relaxed);
                    let arrival = arrival_time(now, wall_now, timestamp);
                    match schedule.admit(arrival) {
                        Fate::Drop => {
                            counters.lost.fetch_add(1, Ordering::Relaxed);
                            *seq = seq.wrapping_add(1);
                            socket.send(&nfqueue::verdict_message(
                                queue,
                                id,
                                nfqueue::NF_DROP,
                                false,
                                *seq,
                            ))?;
                        }
                        Fate::Release(due) => {
                            held.push_back(Held { id, due });
                            let count = held.len() as u64;
                            counters.held.store(count, Ordering::Relaxed);
                            counters.max_held.fetch_max(count, Ordering::Relaxed);
                        }
                    }
                }
                nfqueue::Event::Ack { errno, .. } if errno != 0 => {
                    counters.netlink_errors.fetch_add(1, Ordering::Relaxed);
                    if errno == libc::ENOENT {
                        // A verdict for a packet the kernel no longer holds: its
                        // device went away with a move, and nf_queue dropped the
                        // vanished device's packets itself. Expected during moves.
                        tracing::debug!(errno, "delay line: verdict for a dropped packet");
                    } else {
                        tracing::warn!(errno, "delay line: netlink error from the kernel");
                    }
                }
                nfqueue::Event::Ack { .. } | nfqueue::Event::Other => {}
            }
        }
    }
    Ok(packets)
}

/// When the packet reached the hook: the kernel's timestamp if the skb carried one
/// (converted to the monotonic clock), else the moment it was read. Forwarded packets
/// have their timestamp cleared by the kernel, so on routers it is the read time, a
/// few microseconds after the hook when the thread was waiting.
fn arrival_time(now: Instant, wall_now: SystemTime, timestamp: Option<Duration>) -> Instant {
    let Some(stamp) = timestamp else {
        return now;
    };
    let Ok(wall) = wall_now.duration_since(UNIX_EPOCH) else {
        return now;
    };
    match wall.checked_sub(stamp) {
        Some(age) if age < Duration::from_secs(1) => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

/// Releases every held packet that is due, with one batch verdict.
fn release_due(
    socket: &QueueSocket,
    queue: u16,
    held: &mut VecDeque<Held>,
    counters: &Counters,
    seq: &mut u32,
) -> io::Result<()> {
    let now = Instant::now();
    let mut last = None;
    let mut count = 0u64;
    while let Some(first) = held.front().copied() {
        if first.due > now {
            break;
        }
        held.pop_front();
        let late = now.saturating_duration_since(first.due);
        let late_ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        counters
            .lateness_total_ns
            .fetch_add(late_ns, Ordering::Relaxed);
        counters
            .lateness_max_ns
            .fetch_max(late_ns, Ordering::Relaxed);
        last = Some(first.id);
        count += 1;
    }
    if let Some(id) = last {
        // Releases are FIFO and lost packets already had their verdict, so "everything
        // up to `id`" is exactly the packets just popped.
        *seq = seq.wrapping_add(1);
        socket.send(&nfqueue::verdict_message(
            queue,
            id,
            nfqueue::NF_ACCEPT,
            true,
            *seq,
        ))?;
        counters.released.fetch_add(count, Ordering::Relaxed);
        counters.held.store(held.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// What happens to an arriving packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Drop,
    Release(Instant),
}

/// The line's per-packet decisions: loss, jittered delay, FIFO order.
#[derive(Debug)]
struct Schedule {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    rng: SplitMix64,
    last_release: Option<Instant>,
}

impl Schedule {
    fn new(config: &DelayConfig) -> Schedule {
        Schedule {
            delay: config.delay,
            jitter: config.jitter,
            loss: config.loss,
            rng: SplitMix64::new(config.seed),
            last_release: None,
        }
    }

    fn admit(&mut self, arrival: Instant) -> Fate {
        if self.loss > 0.0 && self.rng.next_f64() < self.loss {
            return Fate::Drop;
        }
        let mut due = arrival + self.delay;
        if !self.jitter.is_zero() {
            // Uniform in [-jitter, +jitter].
            let offset = self.jitter.mul_f64(self.rng.next_f64() * 2.0);
            due = (due + offset)
                .checked_sub(self.jitter)
                .unwrap_or(arrival)
                .max(arrival);
        }
        if let Some(last) = self.last_release {
            due = due.max(last);
        }
        self.last_release = Some(due);
        Fate::Release(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_chain_interfaces_and_queue() {
        let rule = LinkMatch::forward("r-a", "r-b").rule("-A", 7).join(" ");
        assert_eq!(
            rule,
            "-t mangle -A FORWARD -i r-a -o r-b -m comment --comment sustain-delay-q7 \
             -j NFQUEUE --queue-num 7 --queue-bypass"
        );
        assert!(LinkMatch::egress("r-a")
            .rule("-D", 1)
            .join(" ")
            .starts_with("-t mangle -D POSTROUTING -o r-a "));
        assert!(LinkMatch::ingress("r-b")
            .rule("-A", 1)
            .join(" ")
            .starts_with("-t mangle -A PREROUTING -i r-b "));
        let any_in = LinkMatch::Forward {
            in_iface: None,
            out_iface: Some("x".into()),
        };
        assert!(any_in
            .rule("-A", 1)
            .join(" ")
            .starts_with("-t mangle -A FORWARD -o x -m"));
        assert!(LinkMatch::egress("much-too-long-name").validate().is_err());
    }

    #[test]
    fn fixed_delay_releases_each_packet_delay_after_arrival() {
        let mut schedule = Schedule::new(&DelayConfig::fixed(Duration::from_millis(20)));
        let t0 = Instant::now();
        for step in [0u64, 1, 5, 5, 300] {
            let arrival = t0 + Duration::from_micros(step);
            assert_eq!(
                schedule.admit(arrival),
                Fate::Release(arrival + Duration::from_millis(20))
            );
        }
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        let config = DelayConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            ..DelayConfig::default()
        };
        let mut schedule = Schedule::new(&config);
        let t0 = Instant::now();
        let mut previous = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..10_000u64 {
            let arrival = t0 + Duration::from_micros(100 * i);
            let Fate::Release(due) = schedule.admit(arrival) else {
                panic!("no loss configured");
            };
            assert!(
                due >= previous,
                "packet {i} released before its predecessor"
            );
            previous = due;
            let delay = due - arrival;
            // FIFO can only push a release later, up to the previous packet's maximum.
            assert!(delay >= Duration::from_millis(15), "{delay:?}");
            assert!(delay <= Duration::from_millis(25), "{delay:?}");
            spread = (spread.0.min(delay), spread.1.max(delay));
        }
        assert!(spread.0 < Duration::from_millis(16) && spread.1 > Duration::from_millis(24));
    }

    #[test]
    fn loss_drops_the_configured_fraction() {
        let config = DelayConfig {
            loss: 0.1,
            seed: 42,
            ..DelayConfig::default()
        };
        let mut schedule = Schedule::new(&config);
        let now = Instant::now();
        let dropped = (0..100_000)
            .filter(|_| schedule.admit(now) == Fate::Drop)
            .count();
        assert!((9_500..10_500).contains(&dropped), "{dropped}");
    }

    #[test]
    fn invalid_configs_are_refused() {
        for config in [
            DelayConfig {
                loss: 1.5,
                ..DelayConfig::default()
            },
            DelayConfig {
                loss: f64::NAN,
                ..DelayConfig::default()
            },
            DelayConfig {
                queue_max_len: 0,
                ..DelayConfig::default()
            },
            DelayConfig::fixed(Duration::from_secs(60)),
        ] {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(DelayConfig::fixed(Duration::from_millis(20))
            .validate()
            .is_ok());
    }

    #[test]
    fn a_kernel_timestamp_moves_the_arrival_back() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let stamp = Duration::from_secs(1_000) - Duration::from_micros(300);
        assert_eq!(
            arrival_time(now, wall, Some(stamp)),
            now - Duration::from_micros(300)
        );
        // A timestamp from the future or the distant past is ignored.
        assert_eq!(
            arrival_time(now, wall, Some(Duration::from_secs(1_001))),
            now
        );
        assert_eq!(arrival_time(now, wall, Some(Duration::from_secs(5))), now);
        assert_eq!(arrival_time(now, wall, None), now);
    }
}
