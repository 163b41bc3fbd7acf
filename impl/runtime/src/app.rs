//! What every sustain binary does at start: logs to stderr (`RUST_LOG`,
//! default `warn`) and a current-thread tokio runtime.

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A current-thread tokio runtime, or `None` after saying why on stderr.
pub fn runtime(program: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{program}: cannot start the runtime: {e}");
            None
        }
    }
}
