//! Captures every uplink of a topology, from the moment it is created (initial ones and
//! those made by moves) until it is taken apart: one pcap per (node, network), on the
//! node's own interface, named `<node>-<network>.pcap`. A host that comes back to a
//! network it already left gets `<node>-<network>-2.pcap`, and so on.
//!
//! Hosts, service nodes and NAPT routers' WAN sides are all uplinks, so the pair
//! `<host>-<private network>.pcap` / `<router>-<wan network>.pcap` shows a NAPT's
//! translation from both sides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::capture::{Capture, CaptureReport};
use crate::error::Result;
use crate::topology::attachment::{Attachment, AttachmentHook, HookContext};

/// An [`AttachmentHook`] capturing every uplink into one directory.
#[derive(Debug)]
pub struct CaptureSet {
    dir: PathBuf,
    state: Mutex<CaptureState>,
}

#[derive(Debug, Default)]
struct CaptureState {
    running: BTreeMap<String, Capture>,
    /// How many captures each label has had.
    uses: BTreeMap<String, u32>,
    finished: Vec<CaptureReport>,
    errors: Vec<String>,
}

impl CaptureSet {
    /// Captures go to `dir` (which must exist).
    pub fn new(dir: &Path) -> CaptureSet {
        CaptureSet {
            dir: dir.to_path_buf(),
            state: Mutex::new(CaptureState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop_one(state: &mut CaptureState, label: &str) {
        if let Some(capture) = state.running.remove(label) {
            match capture.stop() {
                Ok(report) => state.finished.push(report),
                Err(err) => state.errors.push(format!("capture of {label}: {err}")),
            }
        }
    }

    /// Stops every capture; returns the reports of all captures of the run, and the
    /// problems met (a capture that failed to stop cleanly).
    pub fn stop_all(&self) -> (Vec<CaptureReport>, Vec<String>) {
        let mut state = self.lock();
        let labels: Vec<String> = state.running.keys().cloned().collect();
        for label in labels {
            CaptureSet::stop_one(&mut state, &label);
        }
        let mut reports = state.finished.clone();
        reports.sort_by(|a, b| a.path.cmp(&b.path));
        (reports, state.errors.clone())
    }
}

impl AttachmentHook for CaptureSet {
    fn created(&self, ctx: &HookContext<'_>, attachment: &Attachment) -> Result<()> {
        let label = attachment.label();
        let mut state = self.lock();
        let uses = state.uses.entry(label.clone()).or_insert(0);
        *uses += 1;
        let file = if *uses == 1 {
            format!("{label}.pcap")
        } else {
            format!("{label}-{uses}.pcap")
        };
        let capture = Capture::start(
            ctx.lab,
            &attachment.node,
            &attachment.ifname,
            self.dir.join(file),
        )?;
        state.running.insert(label, capture);
        Ok(())
    }

    fn removing(&self, _ctx: &HookContext<'_>, attachment: &Attachment) {
        CaptureSet::stop_one(&mut self.lock(), &attachment.label());
    }

    fn shutdown(&self) {
        self.stop_all();
    }
}

impl Drop for CaptureSet {
    fn drop(&mut self) {
        // A capture's socket keeps its namespace alive: never outlive the run.
        self.stop_all();
    }
}
