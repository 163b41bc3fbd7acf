//! Runs a [`Scenario`]: builds its topology (with link conditions and captures), starts
//! its programs and its transfer, performs its moves at their triggers, watches the
//! receiver's progress, classifies the outcome, checks the expectation, and leaves
//! everything in the output directory:
//!
//! ```text
//! <out>/report.json          scenario, outcome, bytes, sha256 match, moves, latencies
//! <out>/events.jsonl         the merged timeline (lab + endpoints)
//! <out>/<node>-<net>.pcap    captures, one per interface
//! <out>/*.events.jsonl       each endpoint's own events
//! <out>/logs/                stdout/stderr of every process the scenario started
//! <out>/plots/               time-sequence plots (plot.rs), SVG and PNG
//! ```

use std::fs;
use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::attack::AttackEngine;
use crate::captures::CaptureSet;
use crate::error::{IoContext, LabError, Result};
use crate::moves::{run_script, MoveAction, MoveRecord, ScriptStop, Trigger};
use crate::process::ChildProcess;
use crate::report::{
    Latencies, LinkReport, MoveReport, Report, Timeline, TimelineEvent, TransferReport,
};
use crate::scenario::{Outcome, ProgramSpec, Scenario};
use crate::services::{MobilityServer, Proxy};
use crate::topology::{AttachmentHook, NodeRole, Topology};
use crate::transcripts::{analyse_run, NameRecorder, TranscriptReport, TRANSCRIPTS_DIR};
use crate::transfer::{EndpointKind, Role, RunningTransfer, TransferResult};
use sustain_conformance::names::NAMES_FILE;

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Where captures, logs, events and `report.json` go (created if needed).
    pub out_dir: PathBuf,
    /// Where `sustain-host` and the other sustain binaries are (see
    /// [`find_sustain_host`](crate::transfer::find_sustain_host)).
    pub bin_dir: Option<PathBuf>,
    /// Show a live progress line on stderr.
    pub live: bool,
    /// Print every host uplink's rate each second on stderr (`run --watch`).
    pub watch: bool,
    /// Golden captures to compare the run's transcripts with (see
    /// [`golden_dir_for`](crate::transcripts::golden_dir_for)); none: not compared.
    pub golden_dir: Option<PathBuf>,
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub report: Report,
    pub timeline: Vec<TimelineEvent>,
}

/// The receiver's byte count over time: every change, sampled every 2 ms.
#[derive(Debug, Default)]
struct Progress {
    latest: AtomicU64,
    samples: Mutex<Vec<(Instant, u64)>>,
}

impl Progress {
    /// The first change after `instant`, unless it came at or after `until`.
    fn first_growth_after(&self, instant: Instant, until: Option<Instant>) -> Option<Instant> {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        samples
            .iter()
            .find(|(at, _)| *at > instant)
            .map(|(at, _)| *at)
            .filter(|at| until.is_none_or(|until| *at < until))
    }
}

const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// Runs `scenario`. A scenario that cannot be run (the lab fails) still produces a
/// report, with outcome `error`; only an unusable output directory is an `Err`.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunOutput> {
    fs::create_dir_all(&options.out_dir)
        .context(|| format!("creating {}", options.out_dir.display()))?;
    // A reused --out directory must not mix runs: endpoints append to their
    // events files and captures are per stay, so remove everything a
    // previous run wrote there (only our own file kinds).
    if let Ok(entries) = fs::read_dir(&options.out_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name == "report.json"
                || name == NAMES_FILE
                || name.ends_with("events.jsonl")
                || name.ends_with(".pcap");
            if ours {
                let _ = fs::remove_file(entry.path());
            } else if name == "logs" || name == TRANSCRIPTS_DIR {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let timeline = Timeline::new();
    let started = Instant::now();
    let started_unix = timeline.epoch_unix();
    let mut report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        file: scenario.file.as_ref().map(|f| f.display().to_string()),
        run: None,
        started_unix,
        duration_s: 0.0,
        outcome: Outcome::Error,
        expected: scenario.expect.outcome,
        passed: false,
        failures: Vec::new(),
        error: None,
        transfer: TransferReport::default(),
        moves: Vec::new(),
        latencies: Latencies {
            budget_s: scenario.expect.latency_budget.map(|b| b.as_secs_f64()),
            ..Latencies::default()
        },
        transcript: TranscriptReport::default(),
        links: Vec::new(),
        attacks: Vec::new(),
        target_counters: None,
        server_counters: None,
        proxy_counters: None,
        captures: Vec::new(),
        logs: Vec::new(),
        plots: Vec::new(),
        plot_error: None,
    };
    let names = Arc::new(NameRecorder::default());
    if let Err(err) = execute(scenario, options, &timeline, &mut report, &names) {
        timeline.record("lab", "error", json!({ "error": err.to_string() }));
        report.outcome = Outcome::Error;
        report.error = Some(err.to_string());
    }
    if report.outcome != Outcome::Error {
        conformance(scenario, options, &timeline, &mut report, &names);
    }
    report.duration_s = started.elapsed().as_secs_f64();
    judge(scenario, &mut report);
    timeline.record(
        "lab",
        "finished",
        json!({"outcome": report.outcome.name(), "passed": report.passed}),
    );
    timeline.write_jsonl(&options.out_dir.join("events.jsonl"))?;
    if report.outcome != Outcome::Error {
        // From the captures and the timeline just written.
        match crate::plot::plot_run(&options.out_dir) {
            Ok(files) => report.plots = files,
            Err(err) => report.plot_error = Some(err.to_string()),
        }
    }
    report.write(&options.out_dir.join("report.json"))?;
    Ok(RunOutput {
        report,
        timeline: timeline.events(),
    })
}

/// Transcripts, capture-based latency and the golden comparison of a finished run.
fn conformance(
    scenario: &Scenario,
    options: &RunOptions,
    timeline: &Timeline,
    report: &mut Report,
    names: &NameRecorder,
) {
    let last_move_ns = report
        .moves
        .last()
        .map(|m| (m.completed_unix * 1e9).round() as u64);
    let mut names = names.names(&[scenario.transfer.port], &control_ports(scenario));
    // PROTOCOL.md §4.7: with the run's relay secret the normalizer verifies
    // Relay-Ticket MACs.
    if has_role(scenario, NodeRole::Proxy) {
        let file = options.out_dir.join(crate::services::RELAY_SECRET_FILE);
        names.relay_secret = std::fs::read_to_string(file)
            .ok()
            .map(|text| text.trim().to_string());
    }
    match analyse_run(
        &options.out_dir,
        &names,
        last_move_ns,
        &scenario.transfer.receiver,
        // `transcript = false`: written, not compared (the scenario says why).
        options
            .golden_dir
            .as_deref()
            .filter(|_| scenario.expect.transcript_reason.is_none()),
    ) {
        Ok((transcript, latency)) => {
            report.transcript = TranscriptReport {
                not_compared: scenario.expect.transcript_reason.clone(),
                ..transcript
            };
            if let Some(latency) = latency {
                let s = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e9);
                report.latencies.reconnect_s = s(latency.reconnect_ns);
                report.latencies.first_new_data_s = s(latency.first_new_data_ns);
                report.latencies.handshake_s = s(latency.handshake_ns);
            }
        }
        Err(error) => {
            timeline.record("lab", "transcript-error", json!({ "error": error }));
            report
                .failures
                .push(format!("reading the captures failed: {error}"));
        }
    }
}

/// `run --watch`: each host uplink's rate, from the kernel's interface counters in the
/// node (`ip -s -j link`), once a second.
#[derive(Default)]
struct LinkWatch {
    /// Per attachment label: (when, tx bytes, rx bytes) at the last sample.
    last: std::collections::BTreeMap<String, (Instant, u64, u64)>,
    next: Option<Instant>,
}

impl LinkWatch {
    fn counters(netns: &str, ifname: &str) -> Option<(u64, u64)> {
        let output = Command::new("ip")
            .args(["-n", netns, "-s", "-j", "link", "show", "dev", ifname])
            .output()
            .ok()?;
        let links: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let stats = &links.get(0)?["stats64"];
        Some((
            stats["tx"]["bytes"].as_u64()?,
            stats["rx"]["bytes"].as_u64()?,
        ))
    }

    /// A line of rates when a second has passed since the last one.
    fn sample(&mut self, topology: &Topology, elapsed: Duration) -> Option<String> {
        let now = Instant::now();
        if self.next.is_some_and(|next| now < next) {
            return None;
        }
        self.next = Some(now + Duration::from_secs(1));
        let mbit = |bytes: u64, secs: f64| bytes as f64 * 8.0 / secs.max(1e-3) / 1e6;
        let mut parts = Vec::new();
        for attachment in topology.attachments() {
            let label = attachment.label();
            let netns = topology.netns_name(&attachment.node);
            let Some((tx, rx)) = Self::counters(&netns, &attachment.ifname) else {
                continue;
            };
            if let Some((at, last_tx, last_rx)) = self.last.get(&label) {
                let secs = now.duration_since(*at).as_secs_f64();
                parts.push(format!(
                    "{label} up {:.1} down {:.1}",
                    mbit(tx.saturating_sub(*last_tx), secs),
                    mbit(rx.saturating_sub(*last_rx), secs)
                ));
            }
            self.last.insert(label, (now, tx, rx));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "  watch {:>7.1}s  {} (Mbit/s)",
                elapsed.as_secs_f64(),
                parts.join(" | ")
            )
        })
    }
}

/// Sets `passed` and `failures` from the outcome and the expectation.
fn judge(scenario: &Scenario, report: &mut Report) {
    let expect = &scenario.expect;
    let mut failures = std::mem::take(&mut report.failures);
    if report.outcome != expect.outcome {
        failures.push(format!(
            "expected outcome {}, got {}",
            expect.outcome, report.outcome
        ));
    }
    if let (Some(budget), Outcome::Completed) = (expect.latency_budget, report.outcome) {
        if !scenario.moves.is_empty() {
            match report.latencies.reconnect_s {
                Some(latency) if latency <= budget.as_secs_f64() => {}
                Some(latency) => failures.push(format!(
                    "reconnect latency {:.2} ms (captures: last move completed -> first new \
                     data acked) is over the budget of {:.0} ms",
                    latency * 1e3,
                    budget.as_secs_f64() * 1e3
                )),
                None => failures
                    .push("the captures show no new data acknowledged after the last move".into()),
            }
        }
    }
    for (role, wanted, end) in [
        (
            "sender",
            &expect.sender_error,
            &report.transfer.sender_error,
        ),
        (
            "receiver",
            &expect.receiver_error,
            &report.transfer.receiver_error,
        ),
    ] {
        let Some(wanted) = wanted else { continue };
        match end {
            Some(error) if error.contains(wanted.as_str()) => {}
            Some(error) => failures.push(format!(
                "the {role}'s error should contain {wanted:?}, it was {error:?}"
            )),
            None => failures.push(format!(
                "the {role} should have ended with an error containing {wanted:?}, it ended cleanly"
            )),
        }
    }
    if report.transcript.matched == Some(false) {
        let points: Vec<&str> = report
            .transcript
            .differences
            .iter()
            .filter_map(|d| d.lines().next())
            .collect();
        failures.push(format!(
            "the transcripts differ from the golden captures ({})",
            points.join("; ")
        ));
    }
    failures.extend(crate::attack::failures(
        &report.attacks,
        report.target_counters.as_ref(),
        report.server_counters.as_ref(),
        report.proxy_counters.as_ref(),
    ));
    report.passed = failures.is_empty();
    report.failures = failures;
}

/// How the transfer ended, from what both ends saw.
pub fn classify(result: &TransferResult) -> Outcome {
    let clean = result.sender.error.is_none() && result.receiver.error.is_none();
    let all_bytes = result.receiver.bytes >= result.expected_bytes;
    if result.intact() && clean {
        Outcome::Completed
    } else if (all_bytes && !result.intact())
        || (clean && !result.intact())
        || result.prefix_intact == Some(false)
    {
        // Wrong bytes, a clean end without the right bytes, or a break that
        // delivered something other than the start of the stream.
        Outcome::Corrupted
    } else {
        Outcome::Broken
    }
}

fn execute(
    scenario: &Scenario,
    options: &RunOptions,
    timeline: &Timeline,
    report: &mut Report,
    names: &Arc<NameRecorder>,
) -> Result<()> {
    let live = options.live && std::io::stderr().is_terminal();
    let status = |text: &str| {
        if live {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        }
    };
    status(&format!("{}: building the topology", scenario.name));
    let captures = Arc::new(CaptureSet::new(&options.out_dir));
    let hooks: Vec<Arc<dyn AttachmentHook>> = vec![captures.clone(), names.clone()];
    let topology = Topology::build_with_hooks(&scenario.topology, hooks)?;
    report.run = Some(topology.lab().run_id().to_string());
    let mut addresses = serde_json::Map::new();
    for attachment in topology.attachments() {
        addresses.insert(
            attachment.label(),
            json!(format!("{}/{}", attachment.address, attachment.prefix_len)),
        );
    }
    timeline.record(
        "lab",
        "topology-ready",
        json!({"run": topology.lab().run_id().to_string(), "addresses": addresses}),
    );

    let mut programs = Vec::new();
    for program in &scenario.programs {
        status(&format!("{}: starting {}", scenario.name, program.argv[0]));
        let (child, _) = start_program(
            &topology,
            program,
            options.bin_dir.as_deref(),
            &options.out_dir,
        )?;
        timeline.record(
            "lab",
            "program-started",
            json!({"node": program.node, "pid": child.pid(), "label": child.label()}),
        );
        programs.push(child);
        std::thread::sleep(program.ready_after);
    }

    // Role services: the proxy, the mobility server (told where the proxy
    // is), and `--server` for every sustain end.
    let mut spec = scenario.transfer.clone();
    let mut proxy = if has_role(scenario, NodeRole::Proxy) {
        let sustain_host = crate::transfer::find_sustain_host(Some(&crate::transfer::bin_dir(
            options.bin_dir.as_deref(),
        )))?;
        Proxy::start(&topology, &sustain_host, &options.out_dir)?
    } else {
        None
    };
    if let Some(proxy) = &proxy {
        timeline.record(
            "lab",
            "proxy-started",
            json!({"node": proxy.node(), "control": proxy.control().to_string()}),
        );
    }
    let server = if has_role(scenario, NodeRole::MobilityServer) {
        let sustain_host = crate::transfer::find_sustain_host(Some(&crate::transfer::bin_dir(
            options.bin_dir.as_deref(),
        )))?;
        MobilityServer::start(&topology, &sustain_host, &options.out_dir, proxy.as_ref())?
    } else {
        None
    };
    if let Some(server) = &server {
        timeline.record(
            "lab",
            "server-started",
            json!({"node": server.node(), "address": server.address().to_string()}),
        );
        for role in [Role::Sender, Role::Receiver] {
            if spec.kind_of(role) == EndpointKind::Sustain {
                let args = match role {
                    Role::Sender => &mut spec.sender_args,
                    Role::Receiver => &mut spec.receiver_args,
                };
                args.extend(server.host_args());
            }
        }
    }
    let spec = &spec;
    let server = Mutex::new(server);

    // Before the transfer: the attacker's observers must see the handshake.
    let attack_engine = AttackEngine::start(&topology, scenario)?;
    status(&format!("{}: starting the transfer", scenario.name));
    let transfer = RunningTransfer::start(
        &topology,
        spec,
        &options.out_dir,
        topology.lab().run_dir(),
        options.bin_dir.as_deref(),
    )?;
    timeline.set_epoch(transfer.started());
    timeline.record_at(
        transfer.started(),
        "lab",
        "transfer-started",
        json!({
            "kind": spec.kind_label(),
            "sender_kind": spec.kind_of(Role::Sender).name(),
            "receiver_kind": spec.kind_of(Role::Receiver).name(),
            "sender": spec.sender,
            "receiver": spec.receiver,
            "bytes": spec.bytes,
        }),
    );

    let progress = Progress::default();
    let records: Mutex<Vec<MoveRecord>> = Mutex::new(Vec::new());
    let mut attacks = Vec::new();
    let transfer_over = AtomicBool::new(false);
    let script_stop = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut last = 0u64;
            loop {
                let now = transfer.received();
                if now != last {
                    last = now;
                    progress.latest.store(now, Ordering::Relaxed);
                    progress
                        .samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((Instant::now(), now));
                }
                if transfer_over.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        let mover = scope.spawn(|| {
            run_script(
                &topology,
                &scenario.moves,
                transfer.started(),
                &|| progress.latest.load(Ordering::Relaxed),
                &transfer_over,
                |record| {
                    record_move(timeline, record);
                    records
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(record.clone());
                },
            )
        });

        // `[[restart]]`: the mobility server killed and started again.
        let restarter = (!scenario.restarts.is_empty()).then(|| {
            scope.spawn(|| {
                for restart in &scenario.restarts {
                    loop {
                        if transfer_over.load(Ordering::Relaxed) {
                            return;
                        }
                        let fired = match restart.trigger {
                            Trigger::At(at) => transfer.started().elapsed() >= at,
                            Trigger::AfterBytes(bytes) => {
                                progress.latest.load(Ordering::Relaxed) >= bytes
                            }
                        };
                        if fired {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let mut server = server
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let Some(server) = server.as_mut() else {
                        return;
                    };
                    timeline.record("lab", "server-killed", json!({"node": restart.node}));
                    match server.restart(&topology) {
                        Ok(()) => timeline.record(
                            "lab",
                            "server-restarted",
                            json!({"node": restart.node, "address": server.address().to_string()}),
                        ),
                        Err(err) => timeline.record(
                            "lab",
                            "server-restart-failed",
                            json!({"node": restart.node, "error": err.to_string()}),
                        ),
                    }
                }
            })
        });

        let attacker = attack_engine.map(|engine| {
            scope.spawn(|| {
                engine.run(
                    transfer.started(),
                    &|| progress.latest.load(Ordering::Relaxed),
                    &transfer_over,
                    timeline,
                )
            })
        });

        let mut last_change = (Instant::now(), 0u64);
        let mut watch = options.watch.then(LinkWatch::default);
        loop {
            if transfer.is_finished() {
                break;
            }
            if let Some(watch) = watch.as_mut() {
                if let Some(line) = watch.sample(&topology, transfer.started().elapsed()) {
                    if live {
                        eprint!("\r\x1b[2K");
                    }
                    eprintln!("{line}");
                }
            }
            let elapsed = transfer.started().elapsed();
            let received = progress.latest.load(Ordering::Relaxed);
            if received != last_change.1 {
                last_change = (Instant::now(), received);
            }
            if elapsed >= spec.timeout {
                transfer.cancel(&format!(
                    "the transfer did not finish within {:.0}s",
                    spec.timeout.as_secs_f64()
                ));
            } else if transfer.sustain_end_running()
                && last_change.0.elapsed() >= spec.stall_timeout
            {
                // sustain-host has no stall timeout of its own (MIG_WAIT may be long
                // by design); the scenario's is the limit. A linux end has its own,
                // and one that failed by itself keeps its reason.
                transfer.cancel(&format!(
                    "no data arrived for {:.1}s",
                    spec.stall_timeout.as_secs_f64()
                ));
            }
            let done = records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            status(&progress_line(
                &scenario.name,
                elapsed,
                received,
                spec.bytes,
                done,
                scenario.moves.len(),
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        transfer_over.store(true, Ordering::Relaxed);
        let stop = mover.join();
        let _ = sampler.join();
        if let Some(attacker) = attacker {
            attacks = attacker.join().unwrap_or_default();
        }
        if let Some(restarter) = restarter {
            let _ = restarter.join();
        }
        stop
    });
    let mut server = server
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if live {
        eprintln!();
    }
    let cancelled_at = transfer.cancelled_at();
    let result = transfer.finish();
    let records = records
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match script_stop {
        Ok(ScriptStop::Done) => {}
        Ok(ScriptStop::Cancelled { index }) => timeline.record(
            "lab",
            "moves-not-run",
            json!({"from_index": index, "reason": "the transfer ended first"}),
        ),
        Ok(ScriptStop::Failed { index, error }) => {
            return Err(LabError::InvalidValue(format!(
                "move {index} failed: {error}"
            )));
        }
        Err(_) => return Err(LabError::InvalidValue("the move thread panicked".into())),
    }

    for end in [&result.sender, &result.receiver] {
        let source = format!(
            "{}-{}-{}",
            end.node,
            spec.kind_of(end.role).name(),
            end.role.name()
        );
        timeline.import(&end.events_file, &source)?;
        if let Some(file) = end.events_file.file_name() {
            report.logs.push(file.to_string_lossy().into_owned());
        }
    }
    report.outcome = classify(&result);
    report.target_counters = crate::attack::target_counters(scenario, &result);
    crate::attack::count_peer_locations_to_attackers(&mut attacks, scenario, &result);
    report.attacks = attacks;
    report.transfer = TransferReport {
        kind: spec.kind_label().into(),
        sender_kind: spec.kind_of(Role::Sender).name().into(),
        receiver_kind: spec.kind_of(Role::Receiver).name().into(),
        sender: spec.sender.clone(),
        receiver: spec.receiver.clone(),
        bytes_expected: result.expected_bytes,
        bytes_received: result.receiver.bytes,
        sha256_expected: result.expected_sha256.clone(),
        sha256_received: result.receiver.sha256.clone(),
        sha256_match: result.intact(),
        prefix_intact: result.prefix_intact,
        seconds: Some(result.receiver.seconds),
        sender_error: result.sender.error.clone(),
        receiver_error: result.receiver.error.clone(),
    };
    report.moves = records
        .iter()
        .map(|record| move_report(timeline, record))
        .collect();
    report.latencies.resume_after_last_move_s = records.last().and_then(|last| {
        progress
            .first_growth_after(last.completed, cancelled_at)
            .map(|at| at.duration_since(last.completed).as_secs_f64())
    });
    report.links = topology
        .link_stats()
        .into_iter()
        .map(|link| LinkReport {
            overload_drops: link.stats.overload_drops(),
            link: link.label,
            direction: link.direction.name().into(),
            queued: link.stats.queued,
            released: link.stats.released,
            lost: link.stats.lost,
        })
        .collect();

    let (capture_reports, capture_errors) = captures.stop_all();
    for capture in &capture_reports {
        if let Some(name) = capture.path.file_name() {
            report.captures.push(name.to_string_lossy().into_owned());
        }
        if capture.kernel_drops > 0 {
            timeline.record(
                "lab",
                "capture-incomplete",
                json!({"file": capture.path.display().to_string(), "kernel_drops": capture.kernel_drops}),
            );
        }
    }
    for error in capture_errors {
        timeline.record("lab", "capture-error", json!({ "error": error }));
    }

    // Programs first, so their logs are complete when copied.
    for program in &programs {
        let _ = program.terminate(Duration::from_secs(2));
    }
    if let Some(server) = server.as_mut() {
        server.stop();
        let source = format!("{}-sustain-server", server.node());
        timeline.import(server.events_file(), &source)?;
        report.server_counters = crate::attack::server_counters(scenario, server.events_file());
        if let Some(file) = server.events_file().file_name() {
            report.logs.push(file.to_string_lossy().into_owned());
        }
    }
    if let Some(proxy) = proxy.as_mut() {
        proxy.stop();
        let source = format!("{}-sustain-proxy", proxy.node());
        timeline.import(proxy.events_file(), &source)?;
        report.proxy_counters = crate::attack::proxy_counters(scenario, proxy.events_file());
        if let Some(file) = proxy.events_file().file_name() {
            report.logs.push(file.to_string_lossy().into_owned());
        }
    }
    report.logs.extend(copy_logs(
        topology.lab().run_dir(),
        &options.out_dir.join("logs"),
    )?);
    let teardown = topology.teardown();
    for error in &teardown.errors {
        timeline.record("lab", "teardown-error", json!({ "error": error }));
    }
    Ok(())
}

/// Ports of the scenario's control sessions (left out of transcripts).
fn control_ports(scenario: &Scenario) -> Vec<u16> {
    let mut ports = Vec::new();
    if has_role(scenario, NodeRole::MobilityServer) {
        ports.push(crate::services::SERVER_PORT);
    }
    if has_role(scenario, NodeRole::Proxy) {
        ports.push(crate::services::PROXY_CONTROL_PORT);
    }
    ports
}

fn has_role(scenario: &Scenario, role: NodeRole) -> bool {
    scenario.topology.nodes.iter().any(|n| n.role == role)
}

fn record_move(timeline: &Timeline, record: &MoveRecord) {
    let address = |place: &Option<(String, Ipv4Addr)>| {
        place
            .as_ref()
            .map_or_else(|| "detached".into(), |(net, addr)| format!("{net} {addr}"))
    };
    timeline.record_at(
        record.started,
        "lab",
        &format!("{}-started", record.action.name()),
        json!({"host": record.host, "trigger": record.trigger.to_string(), "bytes": record.bytes_at_start}),
    );
    if let (Some(detached), MoveAction::Move { .. } | MoveAction::Renumber { .. }) =
        (record.detached, &record.action)
    {
        timeline.record_at(
            detached,
            "lab",
            "detached",
            json!({"host": record.host, "from": address(&record.from)}),
        );
    }
    timeline.record_at(
        record.completed,
        "lab",
        &format!("{}-completed", record.action.name()),
        json!({"host": record.host, "from": address(&record.from), "to": address(&record.to)}),
    );
}

fn move_report(timeline: &Timeline, record: &MoveRecord) -> MoveReport {
    MoveReport {
        host: record.host.clone(),
        action: record.action.name().into(),
        trigger: record.trigger.to_string(),
        from_network: record.from.as_ref().map(|(net, _)| net.clone()),
        from_address: record.from.as_ref().map(|(_, addr)| addr.to_string()),
        to_network: record.to.as_ref().map(|(net, _)| net.clone()),
        to_address: record.to.as_ref().map(|(_, addr)| addr.to_string()),
        started_s: timeline.t_of(record.started),
        detached_s: record.detached.map(|d| timeline.t_of(d)),
        completed_s: timeline.t_of(record.completed),
        completed_unix: timeline.unix_of(record.completed),
        bytes_at_start: record.bytes_at_start,
    }
}

fn progress_line(
    name: &str,
    elapsed: Duration,
    received: u64,
    total: u64,
    moves_done: usize,
    moves: usize,
) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        received as f64 * 8.0 / seconds / 1e6
    } else {
        0.0
    };
    format!(
        "{name}: [{seconds:6.1}s] {:7.1}/{:.1} MiB  {rate:7.1} Mbit/s avg  moves {moves_done}/{moves}",
        received as f64 / (1u64 << 20) as f64,
        total as f64 / (1u64 << 20) as f64,
    )
}

/// Replaces `{bin}`, `{out}`, `{run}` and `{addr:NODE}` in a program argument.
pub fn substitute(
    text: &str,
    bin_dir: &Path,
    out_dir: &Path,
    run: &str,
    address_of: &dyn Fn(&str) -> Option<Ipv4Addr>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
        let key = &after[..close];
        let value = match key {
            "bin" => bin_dir.display().to_string(),
            "out" => out_dir.display().to_string(),
            "run" => run.to_string(),
            _ => match key.strip_prefix("addr:") {
                Some(node) => address_of(node)
                    .ok_or_else(|| format!("{node} has no address (in {text:?})"))?
                    .to_string(),
                None => return Err(format!("unknown placeholder {{{key}}} in {text:?}")),
            },
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Starts a scenario's `[[program]]` in its node: its argv with `{bin}` (the
/// binaries' directory, [`crate::transfer::bin_dir`]), `{out}`, `{run}` and node
/// addresses substituted. Returns the child and the argv it ran.
pub fn start_program(
    topology: &Topology,
    program: &ProgramSpec,
    bin_dir: Option<&Path>,
    out_dir: &Path,
) -> Result<(ChildProcess, Vec<String>)> {
    let bin = crate::transfer::bin_dir(bin_dir);
    let run = topology.lab().run_id().to_string();
    let address_of = |node: &str| topology.address_of(node);
    let argv: Vec<String> = program
        .argv
        .iter()
        .map(|arg| substitute(arg, &bin, out_dir, &run, &address_of))
        .collect::<std::result::Result<_, _>>()
        .map_err(LabError::InvalidValue)?;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    let child = topology.lab().spawn(&program.node, command)?;
    Ok((child, argv))
}

/// Copies process logs (not the transfer's data files) from the run directory.
fn copy_logs(run_dir: &Path, logs_dir: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    let Ok(entries) = fs::read_dir(run_dir) else {
        return Ok(copied);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".stdout") || name.ends_with(".stderr")) {
            continue;
        }
        fs::create_dir_all(logs_dir).context(|| format!("creating {}", logs_dir.display()))?;
        fs::copy(entry.path(), logs_dir.join(&name))
            .context(|| format!("copying {name} to {}", logs_dir.display()))?;
        copied.push(format!("logs/{name}"));
    }
    copied.sort();
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::EndpointResult;

    fn end(role: Role, error: Option<&str>, bytes: u64, sha: Option<&str>) -> EndpointResult {
        EndpointResult {
            node: "x".into(),
            role,
            error: error.map(str::to_string),
            bytes,
            sha256: sha.map(str::to_string),
            seconds: 1.0,
            events_file: PathBuf::new(),
        }
    }

    fn result(sender: EndpointResult, receiver: EndpointResult) -> TransferResult {
        TransferResult {
            sender,
            receiver,
            expected_bytes: 100,
            expected_sha256: "good".into(),
            prefix_intact: None,
        }
    }

    #[test]
    fn outcomes_follow_what_both_ends_saw() {
        let ok = result(
            end(Role::Sender, None, 100, None),
            end(Role::Receiver, None, 100, Some("good")),
        );
        assert_eq!(classify(&ok), Outcome::Completed);
        let broken = result(
            end(Role::Sender, Some("send: Connection timed out"), 60, None),
            end(Role::Receiver, Some("stalled"), 40, Some("partial")),
        );
        assert_eq!(classify(&broken), Outcome::Broken);
        let broken_with_wrong_prefix = TransferResult {
            prefix_intact: Some(false),
            ..broken.clone()
        };
        assert_eq!(classify(&broken_with_wrong_prefix), Outcome::Corrupted);
        let broken_with_right_prefix = TransferResult {
            prefix_intact: Some(true),
            ..broken
        };
        assert_eq!(classify(&broken_with_right_prefix), Outcome::Broken);
        let corrupted = result(
            end(Role::Sender, None, 100, None),
            end(Role::Receiver, None, 100, Some("bad")),
        );
        assert_eq!(classify(&corrupted), Outcome::Corrupted);
        let truncated = result(
            end(Role::Sender, None, 100, None),
            end(Role::Receiver, None, 50, Some("partial")),
        );
        assert_eq!(classify(&truncated), Outcome::Corrupted);
        let intact_but_sender_failed = result(
            end(
                Role::Sender,
                Some("waiting for the receiver to close: reset"),
                100,
                None,
            ),
            end(Role::Receiver, None, 100, Some("good")),
        );
        assert_eq!(classify(&intact_but_sender_failed), Outcome::Broken);
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_refused() {
        let address_of = |node: &str| (node == "c").then_some(Ipv4Addr::new(192, 0, 2, 10));
        let text = substitute(
            "{bin}/sustain-server --bind {addr:c}:7000 --log {out}/s.log --run {run}",
            Path::new("/b"),
            Path::new("/o"),
            "1-abcd",
            &address_of,
        )
        .unwrap();
        assert_eq!(
            text,
            "/b/sustain-server --bind 192.0.2.10:7000 --log /o/s.log --run 1-abcd"
        );
        assert!(substitute(
            "{addr:z}",
            Path::new("/b"),
            Path::new("/o"),
            "r",
            &address_of
        )
        .is_err());
        assert!(substitute("{nope}", Path::new("/b"), Path::new("/o"), "r", &address_of).is_err());
        assert!(substitute("{bin", Path::new("/b"), Path::new("/o"), "r", &address_of).is_err());
    }
}
