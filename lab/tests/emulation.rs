//! Link emulation on the real kernel: NFQUEUE delay lines and tbf rate limits (needs
//! root; skipped with a reason otherwise).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{sha256_hex, test_data, transfer_a_to_b};
use sustain_lab::{
    clear_rate_limit, rate_limit_stats, root_or_skip, set_rate_limit, DelayConfig, DelayLine,
    LinkMatch, PathLab, PathNode, RateLimit,
};

const MS: Duration = Duration::from_millis(1);

/// One probe as B saw it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    seq: u32,
    /// Kernel receive time in B minus the send time A wrote into the payload (both
    /// CLOCK_REALTIME, one machine).
    one_way: Duration,
}

/// B's probe socket: UDP with kernel receive timestamps (SO_TIMESTAMPNS).
/// These tests measure time: run them one at a time, not against each other
/// on a 2-core machine (the test harness runs a binary's tests in parallel).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a timing measurement up to three times and passes if one attempt
/// meets its bounds. Counts, order and "never early" stay hard assertions
/// inside the attempt; only the latency bounds are retried, because this
/// 2-core VM occasionally deschedules the line's thread for tens of ms.
fn within_attempts(name: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let mut misses = Vec::new();
    for _ in 0..3 {
        match attempt() {
            Ok(()) => return,
            Err(miss) => {
                eprintln!("{name}: attempt missed its bound: {miss}");
                misses.push(miss);
            }
        }
    }
    panic!("{name}: three attempts missed: {misses:?}");
}

fn probe_receiver(lab: &PathLab) -> UdpSocket {
    lab.run_in(PathNode::B, || {
        let socket = UdpSocket::bind((PathLab::B_ADDR, 0))?;
        let on: libc::c_int = 1;
        // SAFETY: valid option value of the right size.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    })
    .expect("enter B")
    .expect("probe socket in B")
}

fn realtime() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Receives one datagram with its SCM_TIMESTAMPNS.
fn recv_timestamped(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Duration)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg describes valid buffers.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control messages the kernel just wrote into `control`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg points into `control`, as CMSG_FIRSTHDR/NXTHDR guarantee.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS payload is a struct timespec.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let stamp = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            return Ok((len as usize, stamp));
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    Err(std::io::Error::other("no SCM_TIMESTAMPNS on the datagram"))
}

/// Sends `count` probes from A to B, `interval` apart, each carrying its sequence
/// number and CLOCK_REALTIME send time; returns what B received, in arrival order.
fn send_probes(lab: &PathLab, count: u32, interval: Duration) -> Vec<Probe> {
    let receiver = probe_receiver(lab);
    let target: SocketAddr = receiver.local_addr().expect("receiver address");
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let collector = std::thread::spawn(move || {
        let mut probes = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((len, received_at)) = recv_timestamped(&receiver, &mut buf) {
            assert_eq!(len, 16, "probe size");
            let seq = u32::from_be_bytes(buf[0..4].try_into().unwrap());
            let sent_ns = u64::from_be_bytes(buf[8..16].try_into().unwrap());
            let sent_at = Duration::from_nanos(sent_ns);
            let one_way = received_at
                .checked_sub(sent_at)
                .expect("received before it was sent");
            probes.push(Probe { seq, one_way });
            if probes.len() == count as usize {
                break;
            }
        }
        probes
    });
    let sender = lab
        .run_in(PathNode::A, || UdpSocket::bind((PathLab::A_ADDR, 0)))
        .expect("enter A")
        .expect("probe socket in A");
    sender.connect(target).expect("connect probe socket");
    let start = Instant::now();
    for seq in 0..count {
        // Probes leave on a fixed grid, not `interval` after the previous one ended.
        let next = start + interval * seq;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut payload = [0u8; 16];
        payload[0..4].copy_from_slice(&seq.to_be_bytes());
        let sent = u64::try_from(realtime().as_nanos()).expect("ns fit u64");
        payload[8..16].copy_from_slice(&sent.to_be_bytes());
        sender.send(&payload).expect("send probe");
    }
    collector.join().expect("collector thread")
}

/// (median, p90, p99, max) of signed errors in microseconds.
fn percentiles(mut errors_us: Vec<i64>) -> (i64, i64, i64, i64) {
    errors_us.sort_unstable();
    let at = |q: f64| errors_us[((errors_us.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), at(0.99), *errors_us.last().unwrap())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap()
}

#[test]
fn a_20ms_delay_line_is_accurate_to_half_a_millisecond() {
    let _serial = serial();
    if !root_or_skip("a_20ms_delay_line_is_accurate_to_half_a_millisecond") {
        return;
    }
    let path = PathLab::new().expect("build path lab");

    // The path's own one-way latency, for the record.
    let baseline = send_probes(&path, 50, 2 * MS);
    assert_eq!(baseline.len(), 50, "no loss without a delay line");
    let (base_median, _, base_p99, _) =
        percentiles(baseline.iter().map(|p| micros(p.one_way)).collect());

    within_attempts("20 ms delay line accuracy", || {
        let delay = 20 * MS;
        let line = DelayLine::start(
            path.lab(),
            "r",
            LinkMatch::forward(PathLab::R_A_IF, PathLab::R_B_IF),
            DelayConfig::fixed(delay),
        )
        .expect("start delay line");
        let probes = send_probes(&path, 200, 5 * MS);
        let stats = line.stop().expect("stop delay line");

        assert_eq!(probes.len(), 200, "every probe arrived: {stats:?}");
        let seqs: Vec<u32> = probes.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "in order");
        assert_eq!(stats.queued, 200, "{stats:?}");
        assert_eq!(stats.released, 200, "{stats:?}");
        assert_eq!(
            (stats.lost, stats.enobufs, stats.overload_drops()),
            (0, 0, 0)
        );
        assert_eq!(stats.held, 0, "stop released everything");

        let errors: Vec<i64> = probes
            .iter()
            .map(|p| micros(p.one_way) - micros(delay))
            .collect();
        let min = *errors.iter().min().unwrap();
        let mut worst: Vec<(i64, u32)> = errors
            .iter()
            .copied()
            .zip(probes.iter().map(|p| p.seq))
            .collect();
        worst.sort_unstable();
        eprintln!("worst (error us, seq): {:?}", &worst[worst.len() - 5..]);
        let (median, p90, p99, max) = percentiles(errors);
        eprintln!(
            "delay line 20 ms, 200 probes: one-way error median {median} us, p90 {p90} us, \
             p99 {p99} us, max {max} us, min {min} us (path without the line: median \
             {base_median} us, p99 {base_p99} us; line's release lateness mean {:?}, max {:?})",
            stats.mean_release_lateness(),
            stats.release_lateness_max,
        );
        assert!(min >= 0, "a probe arrived {min} us early");
        // The target is the median. The far tail is the host's scheduling, not
        // the line: this 2-core VM has shown single wake-up delays of 12-26 ms
        // (p99) while p90 stays near 0.1 ms, so p99 and max are only printed;
        // p90 catches a line that is late as a rule.
        if median > 500 {
            return Err(format!("median error {median} us > 0.5 ms"));
        }
        if p90 > 5_000 {
            return Err(format!("p90 error {p90} us > 5 ms"));
        }
        Ok(())
    });
}

#[test]
fn ingress_and_egress_lines_add_up_in_series() {
    let _serial = serial();
    if !root_or_skip("ingress_and_egress_lines_add_up_in_series") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    // A -> B meets R's ingress line on r-a (PREROUTING), then its egress line on r-b
    // (POSTROUTING): 4 + 6 ms.
    within_attempts("ingress + egress lines", || {
        let ingress = DelayLine::start(
            path.lab(),
            "r",
            LinkMatch::ingress(PathLab::R_A_IF),
            DelayConfig::fixed(4 * MS),
        )
        .expect("ingress line");
        let egress = DelayLine::start(
            path.lab(),
            "r",
            LinkMatch::egress(PathLab::R_B_IF),
            DelayConfig::fixed(6 * MS),
        )
        .expect("egress line");
        assert_ne!(ingress.queue_num(), egress.queue_num());
        let probes = send_probes(&path, 100, 3 * MS);
        let ingress_stats = ingress.stop().expect("stop ingress");
        let egress_stats = egress.stop().expect("stop egress");
        assert_eq!(probes.len(), 100);
        assert_eq!(ingress_stats.released, 100, "{ingress_stats:?}");
        assert_eq!(egress_stats.released, 100, "{egress_stats:?}");
        let errors: Vec<i64> = probes
            .iter()
            .map(|p| micros(p.one_way) - micros(10 * MS))
            .collect();
        assert!(errors.iter().all(|&e| e >= 0), "early probe: {errors:?}");
        let (median, p90, p99, max) = percentiles(errors);
        eprintln!("ingress 4 ms + egress 6 ms: error median {median} us, p90 {p90} us, p99 {p99} us, max {max} us");
        if median > 1_000 {
            return Err(format!("median error {median} us"));
        }
        Ok(())
    });
}

#[test]
fn loss_and_jitter_account_for_every_probe_and_keep_order() {
    let _serial = serial();
    if !root_or_skip("loss_and_jitter_account_for_every_probe_and_keep_order") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    let config = DelayConfig {
        delay: 10 * MS,
        jitter: 4 * MS,
        loss: 0.2,
        seed: 7,
        ..DelayConfig::default()
    };
    within_attempts("loss and jitter", || {
        let line = DelayLine::start(
            path.lab(),
            "r",
            LinkMatch::forward(PathLab::R_A_IF, PathLab::R_B_IF),
            config.clone(),
        )
        .expect("start delay line");
        let probes = send_probes(&path, 300, 2 * MS);
        let stats = line.stop().expect("stop delay line");

        assert_eq!(stats.queued, 300, "{stats:?}");
        assert_eq!(stats.lost + stats.released, 300, "{stats:?}");
        assert!((30..=90).contains(&stats.lost), "p = 0.2 of 300: {stats:?}");
        assert_eq!(
            probes.len() as u64,
            stats.released,
            "B got exactly the released probes"
        );
        assert!(
            probes.windows(2).all(|w| w[0].seq < w[1].seq),
            "jitter reordered probes"
        );
        let delays: Vec<i64> = probes.iter().map(|p| micros(p.one_way)).collect();
        let (min, max) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
        eprintln!(
            "10 ms +- 4 ms, 20 % loss: {} of 300 arrived, one-way {min}..{max} us",
            probes.len()
        );
        assert!(min >= 6_000, "below delay - jitter: {min} us");
        // Upper bound on the 95th percentile, not the maximum: a single late
        // wake-up of the line's thread on a loaded 2-core VM is scheduling, not
        // jitter (see the accuracy test).
        let mut sorted = delays.clone();
        sorted.sort_unstable();
        let p95 = sorted[(sorted.len() - 1) * 95 / 100];
        if p95 > 14_000 + 2_000 {
            return Err(format!(
                "far above delay + jitter: p95 {p95} us (max {max} us)"
            ));
        }
        assert!(max - min >= 4_000, "no visible jitter: {min}..{max} us");
        Ok(())
    });
}

#[test]
fn bulk_tcp_through_20ms_each_way_is_byte_identical() {
    let _serial = serial();
    if !root_or_skip("bulk_tcp_through_20ms_each_way_is_byte_identical") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    let forward = DelayLine::start(
        path.lab(),
        "r",
        LinkMatch::forward(PathLab::R_A_IF, PathLab::R_B_IF),
        DelayConfig::fixed(20 * MS),
    )
    .expect("A->B line");
    let backward = DelayLine::start(
        path.lab(),
        "r",
        LinkMatch::forward(PathLab::R_B_IF, PathLab::R_A_IF),
        DelayConfig::fixed(20 * MS),
    )
    .expect("B->A line");
    let data = test_data(8 << 20, 0xde1a);
    let start = Instant::now();
    let received = transfer_a_to_b(&path, &data);
    let elapsed = start.elapsed();
    let forward_stats = forward.stop().expect("stop A->B");
    let backward_stats = backward.stop().expect("stop B->A");

    assert_eq!(received.len(), data.len());
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    eprintln!(
        "8 MiB through 20 ms each way in {elapsed:?} ({:.1} Mbit/s); A->B line {forward_stats:?}; \
         B->A line {backward_stats:?}",
        (data.len() * 8) as f64 / elapsed.as_secs_f64() / 1e6
    );
    // Handshake plus the transfer: at least a few round trips of 40 ms.
    assert!(elapsed >= 80 * MS, "{elapsed:?}: the delay was not applied");
    for stats in [&forward_stats, &backward_stats] {
        assert_eq!(stats.released, stats.queued, "{stats:?}");
        assert_eq!((stats.enobufs, stats.overload_drops()), (0, 0), "{stats:?}");
    }
    assert!(
        forward_stats.queued >= (data.len() / 1448) as u64,
        "every data segment went through the line: {forward_stats:?}"
    );
}

#[test]
fn stopping_a_line_removes_its_rule_and_unbinds_its_queue() {
    let _serial = serial();
    if !root_or_skip("stopping_a_line_removes_its_rule_and_unbinds_its_queue") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    let line = DelayLine::start(
        path.lab(),
        "r",
        LinkMatch::forward(PathLab::R_A_IF, PathLab::R_B_IF),
        DelayConfig::fixed(5 * MS),
    )
    .expect("start delay line");
    let queue = line.queue_num();
    let tag = format!("sustain-delay-q{queue}");
    let bound_queues = || {
        path.run_in(PathNode::R, || {
            std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.split_whitespace().next()?.parse::<u16>().ok())
                .collect::<Vec<u16>>()
        })
        .expect("enter R")
    };
    let rules = path
        .lab()
        .iptables("r", &["-t", "mangle", "-S", "FORWARD"])
        .expect("list mangle FORWARD");
    assert!(rules.contains(&tag), "{rules}");
    assert!(
        rules.contains(&format!("--queue-num {queue} --queue-bypass")),
        "{rules}"
    );
    assert_eq!(bound_queues(), vec![queue]);
    path.check_connectivity(Duration::from_secs(5))
        .expect("traffic flows through the line");
    let stats = line.stop().expect("stop");
    assert!(
        stats.queued > 0 && stats.released == stats.queued,
        "{stats:?}"
    );

    let rules = path
        .lab()
        .iptables("r", &["-t", "mangle", "-S", "FORWARD"])
        .expect("list mangle FORWARD");
    assert!(!rules.contains("sustain-delay"), "{rules}");
    assert!(bound_queues().is_empty(), "queue still bound");
    path.check_connectivity(Duration::from_secs(5))
        .expect("traffic flows after the line is gone");
}

#[test]
fn dropping_a_line_cleans_up_too() {
    let _serial = serial();
    if !root_or_skip("dropping_a_line_cleans_up_too") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    let line = DelayLine::start(
        path.lab(),
        "r",
        LinkMatch::egress(PathLab::R_B_IF),
        DelayConfig::fixed(MS),
    )
    .expect("start delay line");
    drop(line);
    let rules = path
        .lab()
        .iptables("r", &["-t", "mangle", "-S"])
        .expect("list mangle");
    assert!(!rules.contains("sustain-delay"), "{rules}");
    assert!(DelayLine::start(
        path.lab(),
        "nope",
        LinkMatch::egress(PathLab::R_B_IF),
        DelayConfig::fixed(MS)
    )
    .is_err());
}

#[test]
fn a_20_mbit_rate_limit_holds_tcp_to_20_mbit() {
    let _serial = serial();
    if !root_or_skip("a_20_mbit_rate_limit_holds_tcp_to_20_mbit") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    let limit = RateLimit::mbit(20);
    set_rate_limit(path.lab(), "r", PathLab::R_B_IF, &limit).expect("set rate limit");
    let before = rate_limit_stats(path.lab(), "r", PathLab::R_B_IF)
        .expect("read stats")
        .expect("tbf installed");
    assert_eq!(before.bytes, 0, "{before:?}");

    let data = test_data(4 << 20, 0x5a9e);
    let start = Instant::now();
    let received = transfer_a_to_b(&path, &data);
    let elapsed = start.elapsed();
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    let stats = rate_limit_stats(path.lab(), "r", PathLab::R_B_IF)
        .expect("read stats")
        .expect("tbf still installed");
    let mbit = (data.len() * 8) as f64 / elapsed.as_secs_f64() / 1e6;
    eprintln!("4 MiB through a 20 Mbit/s tbf: {elapsed:?}, goodput {mbit:.2} Mbit/s; {stats:?}");
    assert!(
        (17.0..=23.0).contains(&mbit),
        "goodput {mbit:.2} Mbit/s is not within 15 % of 20 Mbit/s"
    );
    assert!(stats.bytes >= data.len() as u64, "{stats:?}");
    assert!(stats.overlimits > 0, "the bucket never ran dry: {stats:?}");

    clear_rate_limit(path.lab(), "r", PathLab::R_B_IF).expect("clear");
    assert_eq!(
        rate_limit_stats(path.lab(), "r", PathLab::R_B_IF).expect("read stats"),
        None
    );
    clear_rate_limit(path.lab(), "r", PathLab::R_B_IF).expect("clearing twice is fine");
    let start = Instant::now();
    let received = transfer_a_to_b(&path, &data);
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    assert!(
        start.elapsed() < elapsed / 2,
        "still limited after clearing: {:?}",
        start.elapsed()
    );
}

#[test]
fn an_overflowing_queue_is_counted_packet_for_packet() {
    let _serial = serial();
    if !root_or_skip("an_overflowing_queue_is_counted_packet_for_packet") {
        return;
    }
    let path = PathLab::new().expect("build path lab");
    // 16 places and a 50 ms hold: a burst of 300 probes cannot fit.
    let config = DelayConfig {
        queue_max_len: 16,
        ..DelayConfig::fixed(50 * MS)
    };
    let line = DelayLine::start(
        path.lab(),
        "r",
        LinkMatch::forward(PathLab::R_A_IF, PathLab::R_B_IF),
        config,
    )
    .expect("start delay line");
    let probes = send_probes(&path, 300, Duration::ZERO);
    let stats = line.stop().expect("stop delay line");
    eprintln!(
        "burst of 300 into a 16-packet line: {} arrived; {stats:?}",
        probes.len()
    );
    assert!(stats.kernel_queue_dropped > 0, "{stats:?}");
    assert!(stats.max_held <= 16, "{stats:?}");
    // Every probe is accounted for: delivered, or counted as dropped by the kernel.
    assert_eq!(stats.queued + stats.overload_drops(), 300, "{stats:?}");
    assert_eq!(stats.released, stats.queued, "{stats:?}");
    assert_eq!(probes.len() as u64, stats.released, "{stats:?}");
}
