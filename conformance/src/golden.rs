//! Golden captures: the excerpts of a blessed run under `pcaps/<scenario>/`, one
//! `<capture point>.pcapng` each plus the run's `names.json`, and the check that a
//! fresh run's transcripts equal the golden ones.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::capture::{capture_files, Capture, ElidedData, Elision};
use crate::diff::{compare, PointDiff};
use crate::error::{io_error, ConformanceError, Result};
use crate::names::NAMES_FILE;
use crate::transcript::{Analysis, CaptureSet, Transcript};

/// Frames kept before and after each frame a transcript line comes from: enough for
/// Wireshark to show what led to a handshake and what followed.
pub const CONTEXT_FRAMES: usize = 3;

/// Which frames of capture `index` a golden excerpt keeps: those of transcript lines
/// with their context, the first frame of every flow (so that anything learned from a
/// first appearance is learned from the excerpt too), and the last frame (which
/// carries the record of what was left out at the end).
pub fn excerpt_mask(analysis: &Analysis, transcript: &Transcript, index: usize) -> Vec<bool> {
    let segments = analysis.segments(index);
    let mut keep = vec![false; segments.len()];
    for frame in transcript.frames() {
        let from = frame.saturating_sub(CONTEXT_FRAMES);
        let to = (frame + CONTEXT_FRAMES).min(segments.len().saturating_sub(1));
        for slot in keep.iter_mut().take(to + 1).skip(from) {
            *slot = true;
        }
    }
    if let Some(last) = keep.last_mut() {
        *last = true;
    }
    let mut flows = HashSet::new();
    for (frame, segment) in segments.iter().enumerate() {
        if let Some(segment) = segment {
            if flows.insert((segment.src, segment.dst)) {
                keep[frame] = true;
            }
        }
    }
    keep
}

/// The elision record of the frames left out just before each kept frame.
fn elisions(
    capture: &Capture,
    analysis: &Analysis,
    index: usize,
    keep: &[bool],
) -> Vec<Option<Elision>> {
    let segments = analysis.segments(index);
    let mut out = vec![None; keep.len()];
    let mut pending = Elision::default();
    for (frame, kept) in keep.iter().enumerate() {
        // A frame of an excerpt carries the record of what the source left out before
        // it: that goes into this record too, after the frames left out now. Counts
        // come from files: saturate rather than overflow on a crafted one.
        if let Some(earlier) = &capture.frames[frame].elided {
            pending.frames = pending.frames.saturating_add(earlier.frames);
            for data in &earlier.data {
                add_data(&mut pending, data.src, data.dst, data.segments, data.end);
            }
        }
        if *kept {
            if pending != Elision::default() {
                out[frame] = Some(std::mem::take(&mut pending));
            }
            continue;
        }
        pending.frames = pending.frames.saturating_add(1);
        if let Some(segment) = &segments[frame] {
            if segment.payload_len > 0 {
                let end = segment.seq.wrapping_add(segment.seq_len());
                add_data(&mut pending, segment.src, segment.dst, 1, end);
            }
        }
    }
    out
}

fn add_data(
    elision: &mut Elision,
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    segments: u64,
    end: u32,
) {
    match elision
        .data
        .iter_mut()
        .find(|d| d.src == src && d.dst == dst)
    {
        Some(data) => {
            data.segments = data.segments.saturating_add(segments);
            if (end.wrapping_sub(data.end) as i32) > 0 {
                data.end = end;
            }
        }
        None => elision.data.push(ElidedData {
            src,
            dst,
            segments,
            end,
        }),
    }
}

/// Writes the golden excerpts of the run in `run_dir` to `golden_dir` (replacing what
/// was there), then reads them back and checks they give the run's transcripts.
pub fn bless(run_dir: &Path, golden_dir: &Path) -> Result<BTreeMap<String, Transcript>> {
    let set = CaptureSet::read_dir(run_dir)?;
    let analysis = Analysis::of(&set);
    std::fs::create_dir_all(golden_dir).map_err(io_error(golden_dir))?;
    for old in capture_files(golden_dir)? {
        std::fs::remove_file(&old).map_err(io_error(&old))?;
    }
    let transcripts = analysis.transcripts(&set);
    for (index, capture) in set.captures.iter().enumerate() {
        let transcript = &transcripts[&capture.name];
        let keep = excerpt_mask(&analysis, transcript, index);
        let records = elisions(capture, &analysis, index, &keep);
        let path = golden_dir.join(format!("{}.pcapng", capture.name));
        capture.write_excerpt(&path, &keep, &|frame| records[frame].clone())?;
    }
    set.names.save(&golden_dir.join(NAMES_FILE))?;
    let golden = transcripts_of(golden_dir)?;
    let diffs = compare("run", &transcripts, "excerpt", &golden);
    if !diffs.is_empty() {
        return Err(ConformanceError::Write {
            path: golden_dir.to_path_buf(),
            reason: format!(
                "the excerpts do not give the run's transcripts:\n{}",
                diffs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        });
    }
    Ok(transcripts)
}

/// The transcripts of every capture in a directory (a run or a golden directory).
pub fn transcripts_of(dir: &Path) -> Result<BTreeMap<String, Transcript>> {
    let set = CaptureSet::read_dir(dir)?;
    Ok(Analysis::of(&set).transcripts(&set))
}

/// Compares a run's transcripts with a golden directory's; empty when they match.
pub fn check(run_dir: &Path, golden_dir: &Path) -> Result<Vec<PointDiff>> {
    let golden = transcripts_of(golden_dir)?;
    let fresh = transcripts_of(run_dir)?;
    Ok(compare("golden", &golden, "run", &fresh))
}
