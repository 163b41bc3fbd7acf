//! The papers' experiments beside ours: a scenario's `[paper]` table records what a
//! paper observed (`figure`, how long its moves took, when the connection resumed
//! after them, its TCP's minimum RTO), [`render_comparison`] prints our timeline of
//! the same events next to it, and [`paper_profile`] turns the scenario into a run
//! with the paper's timing (`sustain-lab run NAME --profile paper`): every move
//! takes the paper's time (its gap), and the sustain ends run the paper's timer
//! profile (`--paper-faithful`: 3 s minimum RTO and MSYN interval), so the paper's
//! resume delay can be seen and explained.
//!
//! ```toml
//! [paper]
//! figure = "sustaining paper, Fig. 7"
//! moves_s = 16.0        # both moves took ~16 s
//! resume_s = 3.0        # the connection resumed ~3 s after them
//! min_rto_s = 3.0       # its TCP's minimum retransmission timeout
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::moves::MoveAction;
use crate::report::{Report, TimelineEvent};
use crate::scenario::Scenario;
use crate::transfer::{EndpointKind, Role};

pub use crate::scenario::PaperReference;

/// The scenario with the paper's timing: each move's gap is the paper's move
/// time, sustain ends get `--paper-faithful`, and the stall and total timeouts
/// leave room for the longer gaps. Golden captures do not apply to it.
pub fn paper_profile(scenario: &Scenario) -> Result<Scenario, String> {
    let reference = scenario.paper.as_ref().ok_or_else(|| {
        format!(
            "{} has no [paper] table: --profile paper needs the paper's timings",
            scenario.name
        )
    })?;
    let mut out = scenario.clone();
    for mv in &mut out.moves {
        match &mut mv.action {
            MoveAction::Move { gap, .. } | MoveAction::Renumber { gap, .. } => {
                *gap = reference.moves;
            }
            MoveAction::Detach | MoveAction::Attach { .. } => {}
        }
    }
    for role in [Role::Sender, Role::Receiver] {
        if out.transfer.kind_of(role) == EndpointKind::Sustain {
            let args = match role {
                Role::Sender => &mut out.transfer.sender_args,
                Role::Receiver => &mut out.transfer.receiver_args,
            };
            args.push("--paper-faithful".into());
        }
    }
    let slack = reference.moves + reference.resume * 4 + Duration::from_secs(10);
    out.transfer.stall_timeout = out.transfer.stall_timeout.max(slack);
    out.transfer.timeout += slack * 2;
    // The profile changes the timing, not what is being judged: the move still
    // has to complete; reconnect budgets are sustain's own and do not apply.
    out.expect.latency_budget = None;
    Ok(out)
}

/// Unix time of the first timeline event matching, after `after`.
fn first(
    timeline: &[TimelineEvent],
    after: f64,
    keep: impl Fn(&TimelineEvent) -> bool,
) -> Option<&TimelineEvent> {
    timeline.iter().find(|e| e.time >= after && keep(e))
}

fn ms(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{:.1} ms", seconds * 1e3)
    }
}

/// Our timeline of the paper's experiment beside what the paper observed.
pub fn render_comparison(
    reference: &PaperReference,
    report: &Report,
    timeline: &[TimelineEvent],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  paper     {}, beside this run:", reference.figure);
    let _ = writeln!(
        out,
        "            {:<44} {:>12} {:>12}",
        "", "paper", "this run"
    );
    let Some(last) = report
        .moves
        .iter()
        .max_by(|a, b| a.completed_unix.total_cmp(&b.completed_unix))
    else {
        let _ = writeln!(out, "            (no move happened)");
        return out;
    };
    for mv in &report.moves {
        let _ = writeln!(
            out,
            "            {:<44} {:>12} {:>12}",
            format!(
                "move of {} ({} -> {}) took",
                mv.host,
                mv.from_network.as_deref().unwrap_or("-"),
                mv.to_network.as_deref().unwrap_or("-")
            ),
            format!("~{:.0} s", reference.moves.as_secs_f64()),
            ms(mv.completed_s - mv.started_s),
        );
    }
    let end = last.completed_unix;
    let moves_started = report
        .moves
        .iter()
        .map(|m| m.completed_unix - (m.completed_s - m.started_s))
        .fold(f64::INFINITY, f64::min);
    let row = |out: &mut String, what: &str, paper: &str, event: Option<&TimelineEvent>| {
        let value = event.map_or("-".to_string(), |e| {
            let delta = e.time - end;
            let text = if delta >= 0.0 {
                format!("+{}", ms(delta))
            } else {
                format!("-{}", ms(-delta))
            };
            format!("{text} ({})", e.source.split('-').next().unwrap_or("?"))
        });
        let _ = writeln!(out, "            {what:<44} {paper:>12} {value:>12}");
    };
    let is = |name: &'static str| move |e: &TimelineEvent| e.event == name;
    row(
        &mut out,
        "first move report to the server",
        "",
        first(timeline, moves_started, is("move-reported")),
    );
    row(
        &mut out,
        "server's notice (peer-location) acted on",
        "",
        first(timeline, moves_started, |e| {
            e.event == "peer-location" && !e.source.contains("server")
        }),
    );
    row(
        &mut out,
        "MSYN after the last move",
        "",
        first(timeline, end, is("msyn-sent")),
    );
    row(
        &mut out,
        "MSYN-ACK accepted (mover resumed)",
        "",
        first(timeline, end, |e| {
            e.event == "resumed" && e.detail.get("conn").is_some_and(|c| c != &Value::Null)
        }),
    );
    let captured =
        |seconds: Option<f64>| seconds.map_or("-".to_string(), |s| format!("+{}", ms(s)));
    let _ = writeln!(
        out,
        "            {:<44} {:>12} {:>12}",
        "MSYN handshake final ACK (captures)",
        "",
        captured(report.latencies.handshake_s)
    );
    let _ = writeln!(
        out,
        "            {:<44} {:>12} {:>12}",
        "first new data acked: reconnect (captures)",
        format!("~+{:.0} s", reference.resume.as_secs_f64()),
        captured(report.latencies.reconnect_s)
    );
    let _ = writeln!(
        out,
        "            (times after the last move completed; the paper's resume delay is its \
         TCP's {:.0} s minimum RTO: `--profile paper` runs that timer profile)",
        reference.min_rto.as_secs_f64()
    );
    out
}
