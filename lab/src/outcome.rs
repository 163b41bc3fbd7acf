//! How a transfer ended: what a scenario expects and what a run reports (below both).

use std::fmt;

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every byte arrived, the SHA-256 matches, both ends finished cleanly.
    Completed,
    /// The connection failed (reset, timed out, stalled) before every byte arrived.
    Broken,
    /// The connection ended cleanly but the bytes are not the ones sent.
    Corrupted,
    /// The lab could not run the scenario.
    Error,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Broken => "broken",
            Outcome::Corrupted => "corrupted",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
