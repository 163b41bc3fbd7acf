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
/// First, while the program has one thread, its code moves onto huge pages
/// (huge_text.rs; `SUSTAIN_HUGE_TEXT=off` leaves it).
pub fn runtime(program: &str) -> Option<tokio::runtime::Runtime> {
    match crate::huge_text::move_code_to_huge_pages() {
        Ok(crate::huge_text::HugeText::Moved { len, .. }) => {
            tracing::info!(
                program,
                kib = len >> 10,
                "code moved onto memory advised for huge pages"
            );
        }
        Ok(crate::huge_text::HugeText::Skipped(why)) => {
            tracing::info!(program, why, "code left on 4 KiB pages");
        }
        Err(e) => tracing::warn!(program, "code left on 4 KiB pages: {e}"),
    }
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

/// Installs the SIGINT and SIGTERM handlers now (so a signal arriving from
/// here on is not lost) and returns a future that ends with the first of
/// them, naming it.
pub fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// One JSON line on stdout. A closed stdout (the starter stopped reading)
/// must not kill the program, so write errors are ignored.
pub fn say(line: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a service binary's `main` future on [`runtime`]: exit status 0, or 1
/// with `program: error` (and its causes) on stderr.
pub fn run_service<E: std::fmt::Debug + std::fmt::Display>(
    program: &str,
    main: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let Some(runtime) = runtime(program) else {
        return std::process::ExitCode::FAILURE;
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
