//! What a scenario run produced: the timeline of lab and connection events, and
//! `report.json` (scenario, outcome, bytes, SHA-256 match, move instants, measured
//! latencies), plus their text rendering for the terminal.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{IoContext, Result};
use crate::outcome::Outcome;
use crate::transcripts::TranscriptReport;
use crate::transfer::unix_now;

/// One line of the timeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEvent {
    /// Seconds since the transfer started (negative: during setup).
    pub t: f64,
    /// Unix time, seconds.
    pub time: f64,
    /// `lab`, or the endpoint that reported it (`<node>-<kind>-<role>`).
    pub source: String,
    pub event: String,
    /// Everything else the event carries.
    pub detail: Value,
}

/// Collects events from the lab and the endpoints on one clock.
#[derive(Debug)]
pub struct Timeline {
    epoch: Mutex<(Instant, f64)>,
    events: Mutex<Vec<TimelineEvent>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            epoch: Mutex::new((Instant::now(), unix_now())),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Makes now t = 0 (the transfer's start); events recorded so far keep their
    /// Unix times and get negative `t`.
    pub fn set_epoch(&self, at: Instant) {
        let now = Instant::now();
        let unix = unix_now() - now.saturating_duration_since(at).as_secs_f64();
        *self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (at, unix);
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events.iter_mut() {
            event.t = event.time - unix;
        }
    }

    /// The epoch's Unix time.
    pub fn epoch_unix(&self) -> f64 {
        self.epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
    }

    /// Seconds from the epoch to `instant`.
    pub fn t_of(&self, instant: Instant) -> f64 {
        let (epoch, _) = *self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if instant >= epoch {
            instant.duration_since(epoch).as_secs_f64()
        } else {
            -epoch.duration_since(instant).as_secs_f64()
        }
    }

    /// Unix time of `instant`.
    pub fn unix_of(&self, instant: Instant) -> f64 {
        self.epoch_unix() + self.t_of(instant)
    }

    /// Records an event that happened at `instant`.
    pub fn record_at(&self, instant: Instant, source: &str, event: &str, detail: Value) {
        let t = self.t_of(instant);
        let time = self.epoch_unix() + t;
        self.push(TimelineEvent {
            t,
            time,
            source: source.to_string(),
            event: event.to_string(),
            detail,
        });
    }

    /// Records an event happening now.
    pub fn record(&self, source: &str, event: &str, detail: Value) {
        self.record_at(Instant::now(), source, event, detail);
    }

    fn push(&self, event: TimelineEvent) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }

    /// Adds the events of a JSON-lines file with `time` (Unix seconds) and `event`
    /// fields (the `--events` format); lines without them are skipped.
    pub fn import(&self, path: &Path, source: &str) -> Result<usize> {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => {
                return Err(crate::LabError::io(
                    format!("reading {}", path.display()),
                    err,
                ))
            }
        };
        let epoch_unix = self.epoch_unix();
        let mut imported = 0;
        for line in BufReader::new(file).lines() {
            let line = line.context(|| format!("reading {}", path.display()))?;
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(time), Some(event)) = (
                object.get("time").and_then(Value::as_f64),
                object
                    .get("event")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ) else {
                continue;
            };
            object.remove("time");
            object.remove("event");
            object.remove("t");
            self.push(TimelineEvent {
                t: time - epoch_unix,
                time,
                source: source.to_string(),
                event,
                detail: Value::Object(object),
            });
            imported += 1;
        }
        Ok(imported)
    }

    /// Every event, in time order.
    pub fn events(&self) -> Vec<TimelineEvent> {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        events.sort_by(|a, b| a.time.total_cmp(&b.time));
        events
    }

    /// Writes every event as JSON lines.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for event in self.events() {
            text.push_str(&serde_json::to_string(&event).unwrap_or_default());
            text.push('\n');
        }
        fs::write(path, text).context(|| format!("writing {}", path.display()))
    }
}

/// The transfer part of a report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TransferReport {
    /// The kind of both ends, or `mixed` when they differ.
    pub kind: String,
    /// Each end's own kind: `linux` or `sustain`.
    pub sender_kind: String,
    pub receiver_kind: String,
    pub sender: String,
    pub receiver: String,
    pub bytes_expected: u64,
    pub bytes_received: u64,
    pub sha256_expected: String,
    pub sha256_received: Option<String>,
    pub sha256_match: bool,
    /// For a receiver that got fewer bytes than sent: whether they are exactly
    /// the start of the stream (`None`: not checked).
    pub prefix_intact: Option<bool>,
    /// The receiver's time from start to end.
    pub seconds: Option<f64>,
    pub sender_error: Option<String>,
    pub receiver_error: Option<String>,
}

/// One move in a report. Times are seconds since the transfer started.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MoveReport {
    pub host: String,
    pub action: String,
    pub trigger: String,
    pub from_network: Option<String>,
    pub from_address: Option<String>,
    pub to_network: Option<String>,
    pub to_address: Option<String>,
    pub started_s: f64,
    pub detached_s: Option<f64>,
    /// The instant the move completed (new address and default route installed, or
    /// the old link gone for a detach).
    pub completed_s: f64,
    pub completed_unix: f64,
    pub bytes_at_start: u64,
}

/// Latencies measured by the lab.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latencies {
    /// From the last move's completion to the first growth of the receiver's byte
    /// count after it (application view, sampled every 2 ms). `None`: no move, or no
    /// byte arrived after the last move.
    pub resume_after_last_move_s: Option<f64>,
    /// Reconnect latency from the captures (DESIGN.md): the last move's completion to
    /// the receiver's ACK of the first new data segment on the new path.
    pub reconnect_s: Option<f64>,
    /// The last move's completion to the first new data segment's arrival.
    pub first_new_data_s: Option<f64>,
    /// The last move's completion to the MSYN handshake's final ACK at its receiver.
    pub handshake_s: Option<f64>,
    /// The scenario's budget for the reconnect latency, if any.
    pub budget_s: Option<f64>,
}

/// Counters of one direction of a conditioned link.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LinkReport {
    pub link: String,
    pub direction: String,
    pub queued: u64,
    pub released: u64,
    pub lost: u64,
    pub overload_drops: u64,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub file: Option<String>,
    pub run: Option<String>,
    pub started_unix: f64,
    pub duration_s: f64,
    pub outcome: Outcome,
    pub expected: Outcome,
    pub passed: bool,
    /// Why it did not pass.
    pub failures: Vec<String>,
    /// The lab's own failure, when the outcome is `error`.
    pub error: Option<String>,
    pub transfer: TransferReport,
    pub moves: Vec<MoveReport>,
    pub latencies: Latencies,
    /// Transcripts of the captures and their comparison with the golden ones.
    pub transcript: TranscriptReport,
    /// Time-sequence plots written (plot.rs), relative to the output directory.
    pub plots: Vec<String>,
    /// Why the plots could not be drawn.
    pub plot_error: Option<String>,
    pub links: Vec<LinkReport>,
    /// `[[attack]]`s: what each sent (`attack/`).
    pub attacks: Vec<crate::attack::judge::AttackReport>,
    /// The attacks' target's counters and the `target_counters` checks.
    pub target_counters: Option<crate::attack::judge::CountersReport>,
    /// The mobility server's counters and the `server_counters` checks.
    pub server_counters: Option<crate::attack::judge::CountersReport>,
    /// The proxy's counters and the `proxy_counters` checks.
    pub proxy_counters: Option<crate::attack::judge::CountersReport>,
    /// Files in the output directory, relative to it.
    pub captures: Vec<String>,
    pub logs: Vec<String>,
}

impl Report {
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        fs::write(path, text + "\n").context(|| format!("writing {}", path.display()))
    }
}

/// Sizes of downloads in MiB; what an interactive session moves (a few
/// KiB) in bytes, which "0.0 MiB" would hide.
pub fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{bytes} B")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn describe_detail(detail: &Value) -> String {
    let Value::Object(map) = detail else {
        return String::new();
    };
    let parts: Vec<String> = map
        .iter()
        // sustain-host's counters (in its closed event) are in report.json; on a
        // terminal line they would drown the timeline.
        .filter(|(key, value)| !value.is_null() && key.as_str() != "counters")
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect();
    parts.join(" ")
}

/// The timeline as text, one event per line; runs of the same event from the same
/// source are folded into one line with a count.
pub fn render_timeline(events: &[TimelineEvent]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < events.len() {
        let event = &events[i];
        let mut run = 1;
        while i + run < events.len()
            && events[i + run].source == event.source
            && events[i + run].event == event.event
            && event.source != "lab"
        {
            run += 1;
        }
        let count = if run > 1 {
            format!(" (x{run}, until {:+.3}s)", events[i + run - 1].t)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:>+9.3}s  {:<22} {}{} {}\n",
            event.t,
            event.source,
            event.event,
            count,
            describe_detail(&event.detail)
        ));
        i += run;
    }
    out
}

/// The summary block printed after the timeline.
pub fn render_summary(report: &Report) -> String {
    let mut out = String::new();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    out.push_str(&format!(
        "{verdict} {}: outcome {} (expected {}) in {:.1}s\n",
        report.scenario, report.outcome, report.expected, report.duration_s
    ));
    let transfer = &report.transfer;
    if !transfer.kind.is_empty() {
        let ends = if transfer.sender_kind == transfer.receiver_kind {
            format!(
                "{} {} -> {}",
                transfer.kind, transfer.sender, transfer.receiver
            )
        } else {
            format!(
                "{} {} -> {} {}",
                transfer.sender_kind, transfer.sender, transfer.receiver_kind, transfer.receiver
            )
        };
        out.push_str(&format!(
            "  transfer  {ends}: {} of {} received, sha256 {}\n",
            mib(transfer.bytes_received),
            mib(transfer.bytes_expected),
            match (transfer.sha256_match, transfer.prefix_intact) {
                (true, _) => "matches",
                (false, Some(true)) => "of the start of the stream matches (a prefix, intact)",
                (false, Some(false)) => "does not match, not even as a prefix",
                (false, None) => "does not match",
            }
        ));
        for (end, kind, error) in [
            ("sender", &transfer.sender_kind, &transfer.sender_error),
            (
                "receiver",
                &transfer.receiver_kind,
                &transfer.receiver_error,
            ),
        ] {
            if let Some(error) = error {
                out.push_str(&format!("  {end:<9} ({kind}) {error}\n"));
            }
        }
    }
    for mv in &report.moves {
        let from = match (&mv.from_network, &mv.from_address) {
            (Some(net), Some(addr)) => format!("{net} {addr}"),
            _ => "detached".into(),
        };
        let to = match (&mv.to_network, &mv.to_address) {
            (Some(net), Some(addr)) => format!("{net} {addr}"),
            _ => "detached".into(),
        };
        out.push_str(&format!(
            "  move      {} {}: {from} -> {to}, {}, completed at {:+.3}s\n",
            mv.host, mv.action, mv.trigger, mv.completed_s
        ));
    }
    let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.2} ms", s * 1e3));
    let latencies = &report.latencies;
    if !report.moves.is_empty() {
        let budget = latencies
            .budget_s
            .map(|b| format!(" (budget {:.0} ms)", b * 1e3))
            .unwrap_or_default();
        out.push_str(&format!(
            "  latency   from the captures: new data acked {}{budget}, arrived {}, MSYN handshake final ACK {}\n",
            ms(latencies.reconnect_s),
            ms(latencies.first_new_data_s),
            ms(latencies.handshake_s),
        ));
        out.push_str(&format!(
            "  latency   application view: receiver's file grew {} after the last move\n",
            ms(latencies.resume_after_last_move_s)
        ));
    }
    match (report.transcript.matched, &report.transcript.golden) {
        (Some(true), Some(golden)) => out.push_str(&format!(
            "  transcript matches the golden captures in {golden}\n"
        )),
        (Some(false), Some(golden)) => {
            out.push_str(&format!(
                "  transcript DIFFERS from the golden captures in {golden}:\n"
            ));
            for difference in &report.transcript.differences {
                for line in difference.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        _ => match &report.transcript.not_compared {
            Some(reason) => {
                out.push_str(&format!("  transcript written, not compared: {reason}\n"));
            }
            None => out.push_str("  transcript no golden captures to compare with\n"),
        },
    }
    match (&report.plot_error, report.plots.first()) {
        (Some(error), _) => out.push_str(&format!("  plots     not drawn: {error}\n")),
        (None, Some(first)) => out.push_str(&format!(
            "  plots     {} files in plots/: one per capture point (e.g. {first}), \
             one close-up per move (<point>-move<N>), SVG and PNG\n",
            report.plots.len()
        )),
        (None, None) => {}
    }
    for link in &report.links {
        out.push_str(&format!(
            "  link      {} {}: {} packets, {} lost, {} overload drops\n",
            link.link, link.direction, link.queued, link.lost, link.overload_drops
        ));
    }
    out.push_str(&crate::attack::judge::render(
        &report.attacks,
        report.target_counters.as_ref(),
        report.server_counters.as_ref(),
        report.proxy_counters.as_ref(),
    ));
    if let Some(error) = &report.error {
        out.push_str(&format!("  error     {error}\n"));
    }
    for failure in &report.failures {
        out.push_str(&format!("  failed    {failure}\n"));
    }
    out
}

/// Makes `Value::Object` from key/value pairs.
pub fn detail(pairs: &[(&str, Value)]) -> Value {
    let mut map = Map::new();
    for (key, value) in pairs {
        map.insert((*key).to_string(), value.clone());
    }
    Value::Object(map)
}
