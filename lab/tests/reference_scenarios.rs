//! Every scenario file in conformance/scenarios/ runs on real kernels and
//! meets its own `[expect]`: the reference set `just lab` shows people.
//! (The conformance suite will add transcripts and golden captures on top.)

use std::path::{Path, PathBuf};

use sustain_lab::runner::{self, RunOptions};
use sustain_lab::scenario::Scenario;
use sustain_lab::transfer::{find_sustain_host, EndpointKind, Role};
use sustain_lab::{netns, root_or_skip};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("conformance/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn needs_sustain_host(scenario: &Scenario) -> bool {
    [Role::Sender, Role::Receiver]
        .into_iter()
        .any(|role| scenario.transfer.kind_of(role) == EndpointKind::Sustain)
}

#[test]
fn every_reference_scenario_meets_its_expectation() {
    if !root_or_skip("every_reference_scenario_meets_its_expectation") {
        return;
    }
    let have_host = find_sustain_host(None).is_ok();
    let in_ci = std::env::var_os("CI").is_some();
    let files = scenario_files();
    assert!(
        files.len() >= 4,
        "expected the reference scenarios, found {files:?}"
    );
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in &files {
        let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        if needs_sustain_host(&scenario) && !have_host {
            // In CI the binary is always built first (`just test`): a skip
            // there would hide the migration scenarios, so it fails instead.
            assert!(
                !in_ci,
                "sustain-host is not built; scenario {} cannot run",
                scenario.name
            );
            eprintln!(
                "SKIPPED scenario {}: sustain-host is not built (cargo build -p sustain)",
                scenario.name
            );
            continue;
        }
        let out = std::env::temp_dir().join("sustain-lab-tests").join(format!(
            "reference-{}-{}",
            scenario.name,
            std::process::id()
        ));
        let output = runner::run(
            &scenario,
            &RunOptions {
                out_dir: out.clone(),
                bin_dir: None,
                live: false,
            },
        )
        .unwrap_or_else(|e| panic!("running {}: {e}", scenario.name));
        ran += 1;
        let report = &output.report;
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
        if report.passed {
            let _ = std::fs::remove_dir_all(&out);
        } else {
            failures.push(format!(
                "{}: outcome {:?}, expected {:?}: {:?} (output kept in {})",
                scenario.name,
                report.outcome,
                report.expected,
                report.failures,
                out.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
