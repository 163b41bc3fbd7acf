//! sustain-server: the mobility information server (PROTOCOL.md §15).
//! Hosts keep a control session to it over kernel TCP; it detects NAPTs,
//! pairs the reports of a connection's two ends and tells the right end
//! where to send its MSYN.
//!
//! When ready it prints `{"event":"listening","local":"ADDR:PORT"}` on
//! stdout (and logs it with `--events`); on SIGINT/SIGTERM it logs a
//! `stopped` event with its counters, prints them on stdout and exits 0.
//!
//! With `--proxy ADDR:PORT --relay-secret FILE` it relays connections whose
//! ends are both behind NAPTs through `sustain-proxy` (PROTOCOL.md §6.9,
//! §15.14): FILE holds the secret the two share (64 hex digits); a missing
//! or malformed file is a start-up error (exit 1, one line on stderr).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use sustain::clock::Clock;
use sustain::events::EventLog;
use sustain::proxy::read_secret;
use sustain::server::{serve, stats_json};
use sustain_core::rendezvous::{ProxyConfig, ServerConfig};
use sustain_core::time::Duration;

#[derive(Parser)]
#[command(
    name = "sustain-server",
    version,
    about = "sustain mobility information server"
)]
struct Cli {
    /// Address and port to accept control sessions on.
    #[arg(long)]
    bind: SocketAddrV4,
    /// Append JSON-lines events (listening, server-registered,
    /// move-reported, decided, peer-location, rejected, stopped) to PATH.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// Seconds a registration lives without a refresh.
    #[arg(long, default_value_t = 600)]
    ttl_secs: u64,
    /// Messages per second allowed per source address (0: unlimited).
    #[arg(long, default_value_t = 200)]
    rate_per_source: u32,
    /// Most registered connections.
    #[arg(long, default_value_t = 2_000_000)]
    max_entries: usize,
    /// The symmetric proxy's control address (sustain-proxy --control);
    /// its IP address is also where the relay ports are.
    #[arg(long, value_name = "ADDR:PORT", requires = "relay_secret")]
    proxy: Option<SocketAddrV4>,
    /// File with the secret shared with sustain-proxy (64 hex digits).
    #[arg(long, value_name = "FILE", requires = "proxy")]
    relay_secret: Option<PathBuf>,
}

async fn run(cli: Cli) -> Result<()> {
    let proxy = match (cli.proxy, &cli.relay_secret) {
        (Some(control), Some(file)) => Some(ProxyConfig::new(control, read_secret(file)?)),
        _ => None,
    };
    let clock = Clock::new();
    let mut events = EventLog::open(cli.events.as_deref()).context("opening the events file")?;
    let config = ServerConfig {
        ttl: Duration::from_secs(cli.ttl_secs),
        rate_per_source: cli.rate_per_source,
        burst_per_source: cli.rate_per_source.saturating_mul(2),
        max_entries: cli.max_entries,
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(cli.bind)
        .await
        .with_context(|| format!("binding {}", cli.bind))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let fields = json!({"local": local.to_string(),
                        "proxy": cli.proxy.map(|p| p.to_string())});
    events
        .record(clock.now(), "listening", fields.clone())
        .context("writing the events file")?;
    println!(
        "{}",
        json!({"event": "listening", "local": local.to_string()})
    );
    let signals =
        sustain::app::shutdown_signals().context("installing the SIGINT/SIGTERM handlers")?;
    let shutdown = async {
        signals.await;
    };
    let stats = serve(listener, config, proxy, clock, &mut events, shutdown).await?;
    let stats = stats_json(&stats);
    events
        .record(clock.now(), "stopped", stats.clone())
        .context("writing the events file")?;
    sustain::app::say(&json!({"event": "stopped", "stats": stats}));
    Ok(())
}

fn main() -> ExitCode {
    sustain::app::init_logging();
    let cli = Cli::parse();
    sustain::app::run_service("sustain-server", run(cli))
}
