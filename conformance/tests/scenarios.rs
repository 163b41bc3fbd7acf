//! The conformance suite: every scenario in conformance/scenarios/ runs on real
//! kernels (root), meets its `[expect]` (outcome, sha256, reconnect latency budget
//! from the captures), and each capture point's transcript equals both its insta
//! snapshot (conformance/snapshots/<point>@<scenario>.toml.snap) and the transcript of
//! the golden excerpt in pcaps/<scenario>/.
//!
//! In CI (`CI` set) insta never writes snapshots. A snapshot no scenario produces is
//! rejected by insta's own check: `just test` runs the tests through
//! `cargo insta test --unreferenced=reject`. `just bless` (SUSTAIN_BLESS=1,
//! `cargo insta test --accept --unreferenced=delete`) re-records snapshots and golden
//! excerpts from one run, and removes unreferenced ones.
//! `INSTA_GLOB_FILTER=sustain-move.toml` runs one scenario.
//!
//! The mobility server's and the proxy's own links get no snapshot while their
//! transcript is empty: control sessions are left out of transcripts, so an empty one
//! there says nothing (paper-linux runs both next to Linux endpoints that never talk
//! to them). Should the transfer ever cross such a link, the point has a transcript,
//! no snapshot, and fails.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sustain_conformance::golden;
use sustain_lab::runner::{self, RunOptions};
use sustain_lab::scenario::Scenario;
use sustain_lab::transfer::{find_sustain_host, EndpointKind, Role};
use sustain_lab::{machine, netns, root_or_skip};

/// Runs per scenario before it counts as failed: a VM that stalls for a while can
/// change what goes on the wire (an MSYN retransmitted), so one rerun is allowed,
/// and the first attempt's failure is printed.
const ATTEMPTS: usize = 2;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the repository")
        .to_path_buf()
}

fn snapshot_dir() -> PathBuf {
    repo().join("conformance/snapshots")
}

fn needs_sustain_host(scenario: &Scenario) -> bool {
    [Role::Sender, Role::Receiver]
        .into_iter()
        .any(|role| scenario.transfer.kind_of(role) == EndpointKind::Sustain)
}

fn blessing() -> bool {
    std::env::var("SUSTAIN_BLESS").is_ok_and(|v| v == "1")
}

#[test]
fn scenarios_conform() {
    if !root_or_skip("scenarios_conform") {
        return;
    }
    let in_ci = std::env::var_os("CI").is_some();
    let bless = blessing();
    assert!(
        !(bless && in_ci),
        "SUSTAIN_BLESS is set in CI: golden captures are blessed on purpose, never in CI"
    );
    let have_host = find_sustain_host(None).is_ok();
    let mut failures: Vec<String> = Vec::new();
    // The machine's state, before and after: what a reconnect budget missed
    // by can be read against it (lab/src/machine.rs). Written to the stderr
    // handle, which the harness does not capture, so a passing run shows it too.
    let machine = |when: &str| {
        let touch = machine::idle_touch(Duration::from_secs(1));
        let _ = writeln!(std::io::stderr(), "machine {when} the scenarios: {touch}");
    };
    machine("before");

    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshot_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::glob!("../scenarios", "*.toml", |file| {
            let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
            if needs_sustain_host(&scenario) && !have_host {
                // In CI the binary is always built first (`just test`): a skip
                // there would hide the migration scenarios, so it fails instead.
                sustain_lab::skip(
                    &format!("scenario {}", scenario.name),
                    "sustain-host is not built (cargo build -p sustain)",
                );
                return;
            }
            let golden_dir = repo().join("pcaps").join(&scenario.name);
            let out = std::env::temp_dir()
                .join("sustain-conformance")
                .join(format!("{}-{}", scenario.name, std::process::id()));
            let mut last = None;
            for attempt in 1..=ATTEMPTS {
                let output = runner::run(
                    &scenario,
                    &RunOptions {
                        out_dir: out.clone(),
                        bin_dir: None,
                        live: false,
                        watch: false,
                        golden_dir: (!bless).then(|| golden_dir.clone()),
                    },
                )
                .unwrap_or_else(|e| panic!("running {}: {e}", scenario.name));
                let report = output.report;
                if let Some(run) = &report.run {
                    let left: Vec<String> = netns::list()
                        .expect("listing namespaces")
                        .into_iter()
                        .filter(|n| n.contains(run.as_str()))
                        .collect();
                    assert!(
                        left.is_empty(),
                        "{}: namespaces left behind: {left:?}",
                        scenario.name
                    );
                }
                let passed = report.passed;
                if !passed {
                    eprintln!(
                        "scenario {} attempt {attempt}/{ATTEMPTS} failed: {}\n{}",
                        scenario.name,
                        report.failures.join("; "),
                        report.transcript.differences.join("\n")
                    );
                }
                last = Some(report);
                if passed {
                    break;
                }
            }
            let report = last.expect("at least one attempt");
            let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3));
            eprintln!(
                "scenario {}: {} (expected {}), reconnect {} (budget {}), handshake {}, transcript {}",
                report.scenario,
                report.outcome,
                report.expected,
                ms(report.latencies.reconnect_s),
                ms(report.latencies.budget_s),
                ms(report.latencies.handshake_s),
                match report.transcript.matched {
                    Some(true) => "matches",
                    Some(false) => "DIFFERS",
                    None => "not compared",
                }
            );
            if !report.passed {
                failures.push(format!(
                    "{}: outcome {:?} (expected {:?}), reconnect {:?} s (budget {:?} s): {} \
                     (output kept in {})",
                    scenario.name,
                    report.outcome,
                    report.expected,
                    report.latencies.reconnect_s,
                    report.latencies.budget_s,
                    report.failures.join("; "),
                    out.display()
                ));
            }
            // Issue 16: every scenario's time-sequence plots are drawn and not empty
            // (one SVG and one PNG per capture point that saw the transfer).
            let plots: Vec<std::path::PathBuf> =
                report.plots.iter().map(|p| out.join(p)).collect();
            let empty: Vec<&std::path::PathBuf> = plots
                .iter()
                .filter(|p| std::fs::metadata(p).map_or(true, |m| m.len() < 1000))
                .collect();
            if let Some(error) = &report.plot_error {
                failures.push(format!("{}: plots not drawn: {error}", scenario.name));
            } else if plots.is_empty() || !empty.is_empty() {
                failures.push(format!(
                    "{}: plots missing or empty: {} written, empty or missing: {empty:?}",
                    scenario.name,
                    plots.len()
                ));
            }
            if !in_ci && report.transcript.matched.is_none() && !bless {
                eprintln!(
                    "scenario {}: no golden captures in {} (`just bless {}` records them)",
                    scenario.name,
                    golden_dir.display(),
                    scenario.name
                );
            }
            if let Some(reason) = &scenario.expect.transcript_reason {
                eprintln!(
                    "scenario {}: transcripts not compared (transcript = false): {reason}",
                    scenario.name
                );
                if report.passed {
                    let _ = std::fs::remove_dir_all(&out);
                }
                return;
            }
            if in_ci && report.transcript.matched.is_none() {
                failures.push(format!(
                    "{}: no golden captures in {}",
                    scenario.name,
                    golden_dir.display()
                ));
            }
            if bless && report.passed {
                golden::bless(&out, &golden_dir)
                    .unwrap_or_else(|e| panic!("blessing {}: {e}", scenario.name));
            }

            let transcripts = golden::transcripts_of(&out)
                .unwrap_or_else(|e| panic!("reading the captures of {}: {e}", scenario.name));
            for (point, transcript) in &transcripts {
                if transcript.lines.is_empty() && scenario.is_service_point(point) {
                    continue;
                }
                insta::assert_snapshot!(point.as_str(), transcript.text());
            }
            if report.passed {
                let _ = std::fs::remove_dir_all(&out);
            }
        });
    });

    // Golden directories of scenarios that no longer exist: only when every scenario
    // ran. (Unreferenced snapshots are insta's check: `cargo insta test
    // --unreferenced=reject`.)
    let filtered = std::env::var_os("INSTA_GLOB_FILTER").is_some();
    if !filtered && failures.is_empty() {
        let names: BTreeSet<String> = std::fs::read_dir(repo().join("conformance/scenarios"))
            .expect("the scenario directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|x| x == "toml"))
            .filter_map(|path| Scenario::load(&path).ok().map(|s| s.name))
            .collect();
        let mut stale = Vec::new();
        if let Ok(entries) = std::fs::read_dir(repo().join("pcaps")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && !names.contains(&name) {
                    stale.push(path);
                }
            }
        }
        if bless {
            for path in &stale {
                std::fs::remove_dir_all(path).expect("removing stale golden captures");
            }
        } else {
            assert!(
                stale.is_empty(),
                "golden captures of no scenario (remove them, or `just bless`): {stale:?}"
            );
        }
    }
    machine("after");
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
