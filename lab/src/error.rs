//! The lab's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces, veths and netfilter need CAP_SYS_ADMIN/CAP_NET_ADMIN.
    #[error("the lab needs root (effective uid is {euid})")]
    NotRoot { euid: u32 },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("no node {0:?} in this lab")]
    UnknownNode(String),

    #[error("node {0:?} already exists in this lab")]
    DuplicateNode(String),

    #[error("interface {ifname:?} not found in namespace {netns}")]
    UnknownInterface { netns: String, ifname: String },

    #[error("`{command}` in namespace {netns} failed ({status}): {stderr}")]
    CommandFailed {
        netns: String,
        command: String,
        status: String,
        stderr: String,
    },

    #[error("in namespace {netns}: {source}")]
    Iptables {
        netns: String,
        source: sustain_iptables::IptablesError,
    },

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },

    #[error("invalid value: {0}")]
    InvalidValue(String),

    #[error("the lab was already torn down")]
    TornDown,

    #[error("unexpected output from {what}: {detail}")]
    UnexpectedOutput { what: String, detail: String },

    #[error("namespace file {0} already exists")]
    NamespaceExists(PathBuf),

    #[error("plotting: {0}")]
    Plot(String),

    /// A kernel feature the lab uses is not there (see the `features` module): one line
    /// per feature with its module, then what to do.
    #[error("the kernel lacks what the lab needs:{0}")]
    MissingFeatures(String),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        LabError::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Attaches a description of what was being done to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LabError::io(context(), source))
    }
}
