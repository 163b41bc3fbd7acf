//! sustain-proxy: the symmetric TCP proxy (PROTOCOL.md §6.9, §15.14). When
//! both ends of a connection are behind NAPTs, the mobility server asks it
//! over an authenticated control session for a relay port; both ends send
//! it an MSYN with their relay ticket, and it splices the two legs.
//!
//! `sustain-proxy --bind ADDR --control ADDR:PORT --ports LO-HI
//! --relay-secret FILE [--events PATH]`. FILE holds the secret shared with
//! the server: 32 random bytes as 64 hex digits. A missing or malformed
//! file is a start-up error (exit 1, one line on stderr). When ready it
//! prints `{"event":"listening",...}` on stdout (and logs it with
//! `--events`); on SIGINT/SIGTERM it logs `stopped` with its counters,
//! prints them and exits 0. Needs CAP_NET_RAW and CAP_NET_ADMIN (raw
//! socket, RST guard).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use sustain::clock::Clock;
use sustain::events::EventLog;
use sustain::proxy::{parse_ports, read_secret, serve, stats_json, Proxy, ProxyOptions};

#[derive(Parser)]
#[command(name = "sustain-proxy", version, about = "sustain symmetric TCP proxy")]
struct Cli {
    /// The proxy's global address: relay ports are opened there.
    #[arg(long)]
    bind: Ipv4Addr,
    /// Address and port the mobility server's control sessions arrive on.
    #[arg(long)]
    control: SocketAddrV4,
    /// Relay port range, LO-HI (at most 2000 ports).
    #[arg(long, value_name = "LO-HI")]
    ports: String,
    /// File with the secret shared with sustain-server (64 hex digits).
    #[arg(long, value_name = "FILE")]
    relay_secret: PathBuf,
    /// Append JSON-lines events (listening, control-session,
    /// relay-allocated, leg-attached, spliced, refused, released,
    /// control-rejected, stopped) to PATH.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
}

async fn run(cli: Cli) -> Result<()> {
    // Everything the operator can get wrong is checked before any
    // privileged resource is opened.
    let secret = read_secret(&cli.relay_secret)?;
    let ports = parse_ports(&cli.ports)?;
    let clock = Clock::new();
    let mut events = EventLog::open(cli.events.as_deref()).context("opening the events file")?;
    let opts = ProxyOptions {
        bind: cli.bind,
        control: cli.control,
        ports,
    };
    let proxy = Proxy::open(opts, secret).await?;
    let control = proxy
        .control_addr()
        .context("reading the control address")?;
    let fields = json!({"bind": cli.bind.to_string(), "control": control.to_string(),
                        "ports": format!("{}-{}", ports.0, ports.1)});
    events
        .record(clock.now(), "listening", fields.clone())
        .context("writing the events file")?;
    let mut line = json!({"event": "listening"});
    if let (Some(obj), Some(extra)) = (line.as_object_mut(), fields.as_object()) {
        obj.extend(extra.clone());
    }
    sustain::app::say(&line);
    let signals =
        sustain::app::shutdown_signals().context("installing the SIGINT/SIGTERM handlers")?;
    let shutdown = async {
        signals.await;
    };
    let stats = serve(proxy, clock, &mut events, shutdown).await?;
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
    sustain::app::run_service("sustain-proxy", run(cli))
}
