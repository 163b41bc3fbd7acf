//! The conformance suite's library: captures to normalized transcripts
//! ([`transcript`]), golden excerpts ([`capture`], [`golden`]), transcript diffs
//! ([`diff`]) and reconnect latency read from captures ([`latency`]).

// Safe Rust only: nothing here needs more (issue 15).
#![forbid(unsafe_code)]

pub mod capture;
pub mod diff;
pub mod error;
pub mod golden;
pub mod latency;
pub mod names;
pub mod options;
pub mod segment;
pub mod transcript;

pub use capture::{Capture, Elision, Frame};
pub use error::{ConformanceError, Result};
pub use names::Names;
pub use transcript::{Analysis, CaptureSet, Transcript};
