//! `just bench` (part 5): relayed throughput against direct throughput on
//! the same topology, in the same run (issue 11's figure; goal >= 0.8x).
//!
//! The symmetric-proxy lab of `tests/relay.rs` (tests/common/relay_lab.rs),
//! with no rate limit, delay or loss on any link: a (the sender) sits behind
//! napt1 throughout; b (the receiver) starts global on g4 and, once 32 MiB
//! have arrived, moves either
//! - **relayed**: behind napt2 (home2): both ends are behind NAPTs, the
//!   server gets a relay from sustain-proxy and both ends resume through it
//!   (a -> napt1 -> p -> napt2 -> b, the proxy splicing in user space), or
//! - **direct**: to the global g5: the server has a (behind its NAPT) send
//!   the MSYN and the connection continues a -> napt1 -> b.
//!
//! Goodput is measured on the receiver's file, from 64 MiB after the move
//! (the reconnect and the restart of the congestion window are behind it)
//! to the last byte, and every run is checked byte for byte (sha256 of the
//! received file; the hosts themselves hash nothing, `--no-digest`) at the
//! end. Both variants send the same page-cached file from the same sender
//! into the same kind of file, so the ratio compares the paths, not the
//! sources. The proxy's CPU time (user + system) over the measured part is
//! reported per GiB relayed. Runs alternate between the variants.
//!
//! Knobs: `SUSTAIN_BENCH_RELAY_MIB` (default 512), `SUSTAIN_BENCH_RUNS`
//! (default 3). Needs root (namespaces, raw sockets, iptables); prints
//! SKIPPED without it, fails under `CI=true`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/relay_lab.rs"]
mod relay_lab;

use std::time::{Duration, Instant};

use common::MIB;
use relay_lab::{topology, Run};
use sustain_lab::root_or_skip;
use sustain_lab::topology::LinkConditions;

/// The receiver moves once it has this much.
const MOVE_AT: usize = 32 * MIB;
/// Measured from this many bytes after the move.
const WARMUP: usize = 64 * MIB;
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Relayed,
    Direct,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Relayed => "relayed (a -> napt1 -> proxy -> napt2 -> b)",
            Variant::Direct => "direct  (a -> napt1 -> b)",
        }
    }

    fn destination(self) -> &'static str {
        match self {
            Variant::Relayed => "home2",
            Variant::Direct => "g5",
        }
    }
}

struct Sample {
    gbps: f64,
    /// Proxy CPU seconds per GiB over the measured part.
    proxy_cpu_per_gib: f64,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of process `pid`'s live threads so far: the
/// sum of each thread's on-CPU time in nanoseconds, the first field of
/// `/proc/<pid>/task/<tid>/schedstat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

fn wait_received(run: &Run, bytes: usize) -> Instant {
    let deadline = Instant::now() + TIMEOUT;
    while run.received() < bytes {
        assert!(
            Instant::now() < deadline,
            "{} of {bytes} bytes after {TIMEOUT:?}",
            run.received()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Instant::now()
}

fn run_once(variant: Variant, size: usize, seed: u64) -> Sample {
    let run = Run::start(topology(true, LinkConditions::default()), size, seed, false);
    let registered = |r: &Run| Run::count(&r.server_events, "server-registered") >= 2;
    run.move_at(MOVE_AT, "b", variant.destination(), registered);
    let from = run.received().max(MOVE_AT) + WARMUP;
    let t0 = wait_received(&run, from);
    let bytes0 = run.received();
    let cpu0 = cpu_seconds(run.proxy.pid());
    let t1 = wait_received(&run, size);
    let cpu1 = cpu_seconds(run.proxy.pid());
    let secs = t1.duration_since(t0).as_secs_f64();
    let bytes = (size - bytes0) as f64;
    let stats = run.finish();
    let relayed = stats["forwarded"].as_u64().unwrap_or(0) > 0;
    assert_eq!(
        relayed,
        variant == Variant::Relayed,
        "the {} run went {} the proxy: {stats}",
        variant.name(),
        if relayed { "through" } else { "around" }
    );
    Sample {
        gbps: bytes * 8.0 / secs / 1e9,
        proxy_cpu_per_gib: (cpu1 - cpu0) / (bytes / (1u64 << 30) as f64),
    }
}

fn range(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let v: Vec<f64> = values.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$}–{hi:.digits$}")
}

fn main() {
    if !root_or_skip("relay bench") {
        return;
    }
    let size = env_usize("SUSTAIN_BENCH_RELAY_MIB", 512) * MIB;
    assert!(
        size > MOVE_AT + 2 * WARMUP,
        "SUSTAIN_BENCH_RELAY_MIB must exceed {} MiB",
        (MOVE_AT + 2 * WARMUP) / MIB
    );
    let runs = env_usize("SUSTAIN_BENCH_RUNS", 3).max(1);
    let mut relayed = Vec::new();
    let mut direct = Vec::new();
    for i in 0..runs {
        for variant in [Variant::Direct, Variant::Relayed] {
            let sample = run_once(variant, size, 100 + i as u64);
            eprintln!(
                "run {} {}: {:.2} Gbit/s, proxy {:.2} CPU s/GiB",
                i + 1,
                variant.name(),
                sample.gbps,
                sample.proxy_cpu_per_gib
            );
            match variant {
                Variant::Relayed => relayed.push(sample),
                Variant::Direct => direct.push(sample),
            }
        }
    }
    println!(
        "\nrelay vs direct, {} MiB, unlimited links, {runs} runs each (ranges)",
        size / MIB
    );
    println!("{:<46} {:>12} {:>18}", "path", "Gbit/s", "proxy CPU s/GiB");
    println!(
        "{:<46} {:>12} {:>18}",
        Variant::Direct.name(),
        range(direct.iter().map(|s| s.gbps), 2),
        "-"
    );
    println!(
        "{:<46} {:>12} {:>18}",
        Variant::Relayed.name(),
        range(relayed.iter().map(|s| s.gbps), 2),
        range(relayed.iter().map(|s| s.proxy_cpu_per_gib), 2)
    );
    println!(
        "relayed / direct, run by run: {}",
        range(relayed.iter().zip(&direct).map(|(r, d)| r.gbps / d.gbps), 2)
    );
}
