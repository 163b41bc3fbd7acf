//! The conformance side of a run: names for the captures (`names.json`), a transcript
//! per capture point (`transcripts/<point>.txt`), the reconnect latency read from the
//! captures, and the comparison with the scenario's golden captures
//! (`pcaps/<scenario>/` in the repository).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sustain_conformance::golden;
use sustain_conformance::latency::{self, Latency};
use sustain_conformance::names::NAMES_FILE;
use sustain_conformance::{Analysis, CaptureSet, Names};

use crate::error::{IoContext, Result};
use crate::topology::attachment::{Attachment, AttachmentHook, HookContext};

/// Directory of the transcripts in a run's output directory.
pub const TRANSCRIPTS_DIR: &str = "transcripts";

/// Records every address the topology hands out (nodes, NAPT WAN sides, gateways) and
/// each node's capture points, as [`crate::captures::CaptureSet`] names them.
#[derive(Debug, Default)]
pub struct NameRecorder {
    state: Mutex<(Names, BTreeMap<String, u32>)>,
}

impl NameRecorder {
    /// The names, with `ports` shown as numbers and `control_ports` left
    /// out of transcripts.
    pub fn names(&self, ports: &[u16], control_ports: &[u16]) -> Names {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names = state.0.clone();
        names.ports.extend(ports.iter().copied());
        names.control_ports.extend(control_ports.iter().copied());
        names
    }
}

impl AttachmentHook for NameRecorder {
    fn created(&self, _ctx: &HookContext<'_>, attachment: &Attachment) -> Result<()> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (names, uses) = &mut *state;
        names.add_address(attachment.address, &attachment.node);
        names.add_address(attachment.gateway, &attachment.gateway_node);
        let label = attachment.label();
        let count = uses.entry(label.clone()).or_insert(0);
        *count += 1;
        let point = if *count == 1 {
            label
        } else {
            format!("{label}-{count}")
        };
        names
            .points
            .entry(attachment.node.clone())
            .or_default()
            .push(point);
        Ok(())
    }
}

/// The golden directory of a scenario loaded from `<repo>/conformance/scenarios/`:
/// `<repo>/pcaps/<name>`, whether or not it exists yet.
pub fn golden_dir_for(scenario_file: &Path, name: &str) -> Option<PathBuf> {
    let scenarios = scenario_file.parent()?;
    let repo = scenarios.parent()?.parent()?;
    Some(repo.join("pcaps").join(name))
}

/// What the conformance checks found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TranscriptReport {
    /// The golden directory compared with, if it exists.
    pub golden: Option<String>,
    /// Whether every capture point's transcript equals the golden one (`None`: no
    /// golden captures to compare with).
    pub matched: Option<bool>,
    /// The differences, one entry per capture point (a unified diff).
    pub differences: Vec<String>,
    /// Files written, relative to the output directory.
    pub files: Vec<String>,
    /// `transcript = false`: why the scenario's transcripts are written but not
    /// compared.
    pub not_compared: Option<String>,
}

/// Writes `names.json`, then the transcripts; measures latency; compares with the
/// golden directory if there is one.
pub fn analyse_run(
    out_dir: &Path,
    names: &Names,
    last_move_unix_ns: Option<u64>,
    receiver: &str,
    golden_dir: Option<&Path>,
) -> std::result::Result<(TranscriptReport, Option<Latency>), String> {
    names
        .save(&out_dir.join(NAMES_FILE))
        .map_err(|e| e.to_string())?;
    let set = CaptureSet::read_dir(out_dir).map_err(|e| e.to_string())?;
    let analysis = Analysis::of(&set);
    let dir = out_dir.join(TRANSCRIPTS_DIR);
    std::fs::create_dir_all(&dir)
        .context(|| format!("creating {}", dir.display()))
        .map_err(|e| e.to_string())?;
    let mut report = TranscriptReport::default();
    let transcripts = analysis.transcripts(&set);
    for (point, transcript) in &transcripts {
        let file = dir.join(format!("{point}.txt"));
        std::fs::write(&file, transcript.text())
            .context(|| format!("writing {}", file.display()))
            .map_err(|e| e.to_string())?;
        report.files.push(format!("{TRANSCRIPTS_DIR}/{point}.txt"));
    }
    let latency =
        last_move_unix_ns.map(|at| latency::measure(&set, &analysis, at, &names.points, receiver));
    if let Some(golden) = golden_dir.filter(|dir| dir.join(NAMES_FILE).is_file()) {
        report.golden = Some(golden.display().to_string());
        let expected = golden::transcripts_of(golden).map_err(|e| e.to_string())?;
        let diffs = sustain_conformance::diff::compare("golden", &expected, "run", &transcripts);
        report.matched = Some(diffs.is_empty());
        report.differences = diffs.iter().map(ToString::to_string).collect();
    }
    Ok((report, latency))
}
