use std::path::PathBuf;

/// What can go wrong reading captures, names and golden directories.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file: {reason}")]
    NotACapture { path: PathBuf, reason: String },
    #[error(
        "{path}: link type {linktype} is not supported (Ethernet, Linux cooked or raw IPv4 are)"
    )]
    UnsupportedLinkType { path: PathBuf, linktype: String },
    #[error("{path}: frame {index}: {reason}")]
    BadFrame {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadNames { path: PathBuf, reason: String },
    #[error("{path}: writing the excerpt: {reason}")]
    Write { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ConformanceError>;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ConformanceError {
    let path = path.to_path_buf();
    move |source| ConformanceError::Io { path, source }
}
