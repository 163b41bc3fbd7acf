//! sustain-host: the reference host, an application of the `sustain`
//! library. `connect` and `listen` send or receive a file over sustain's
//! userspace TCP; `forward` bridges kernel TCP applications and sustained
//! connections.
//!
//! For transfers the last line on stdout is a JSON summary
//! `{"bytes":N,"sha256":"…","seconds":S}` (one per connection with
//! `listen --keep`). Exit status 0 on success; a failed transfer exits 1
//! with the reason on stderr; 130/143 on SIGINT/SIGTERM (a forward exits 0
//! on either: stopping is its normal end).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sustain::forward::{self, Direction, ForwardOptions, Side};
use sustain::host::{self, HostError, HostOptions, Role, Summary, Transfer};
use sustain_core::tcp::{Config, CongestionKind, Mode};
use sustain_core::time::Duration;

#[derive(Parser)]
#[command(
    name = "sustain-host",
    version,
    about = "sustain reference host: file transfer over sustain's userspace TCP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open a connection to ADDR:PORT.
    Connect {
        /// Remote address and port.
        remote: SocketAddrV4,
        /// Local address\[:port\] (default: the route's source address, a free port).
        #[arg(long, value_parser = parse_bind)]
        bind: Option<SocketAddrV4>,
        #[command(flatten)]
        common: Common,
    },
    /// Accept connections on --bind ADDR:PORT.
    Listen {
        /// Local address and port to listen on (0.0.0.0 for any address).
        #[arg(long)]
        bind: SocketAddrV4,
        /// Keep accepting connections until SIGINT/SIGTERM; each one gets the transfer.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Bridge kernel TCP and sustained connections: `--from tcp:ADDR:PORT
    /// --to sustain:ADDR:PORT` turns each local TCP connection into a
    /// sustained one; `--from sustain:ADDR:PORT --to tcp:ADDR:PORT` bridges
    /// each sustained connection to a local TCP service. Runs until
    /// SIGINT/SIGTERM.
    Forward {
        /// Where connections are accepted: tcp:ADDR:PORT or sustain:ADDR:PORT.
        #[arg(long, value_name = "SIDE")]
        from: Side,
        /// Where each one is bridged to: sustain:ADDR:PORT or tcp:ADDR:PORT.
        #[arg(long, value_name = "SIDE")]
        to: Side,
        #[command(flatten)]
        tcp: TcpArgs,
    },
}

#[derive(Args)]
struct Common {
    #[command(flatten)]
    transfer: TransferArgs,
    #[command(flatten)]
    tcp: TcpArgs,
    /// Skip the sha256 of the transferred bytes (the summary shows
    /// "sha256":null). For benchmarks: hashing can cost more than the TCP.
    #[arg(long)]
    no_digest: bool,
}

/// The endpoint's TCP and migration settings (every subcommand).
#[derive(Args)]
struct TcpArgs {
    /// Append JSON-lines events (connected, retransmission-timeout, closed) to PATH.
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// Maximum segment size to advertise (default: route MTU - 40 when
    /// connecting, 1460 when listening).
    #[arg(long)]
    mss: Option<u16>,
    /// Minimum retransmission timeout in milliseconds.
    #[arg(long, default_value_t = 200)]
    min_rto_ms: u64,
    /// How connections survive address changes: `sustain` (Migrate-Permit +
    /// MSYN handshake), `continuation` (ADDRESS UPDATE option, the older
    /// paper) or `plain` (ordinary TCP: a move breaks the connection).
    #[arg(long, value_enum, default_value_t = ModeArg::Sustain)]
    mode: ModeArg,
    /// How long a connection waits in MIG_WAIT for an address, the peer's
    /// MSYN or a peer location before it fails.
    #[arg(long, default_value_t = 120)]
    mig_wait_secs: u64,
    /// Keep-alive idle time (RFC 9293 §3.8.4): an idle connection with
    /// nothing outstanding probes its peer after this long. Default: off
    /// for plain connections, the MIG_WAIT time for migratable ones (a
    /// peer whose address went away may take that long to come back).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_secs: Option<u64>,
    /// Time between unanswered keep-alive probes; after 4 the connection
    /// ends ("keep-alive timed out").
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_interval_secs: u64,
    /// The paper's timing profile: 3 s minimum and initial RTO, 3 s MSYN
    /// retransmission (only to reproduce the paper's timings).
    #[arg(long)]
    paper_faithful: bool,
    /// Congestion controller of every connection: `bbr` (default: BBRv3,
    /// random loss on radio links does not slow it), `cubic` (CUBIC with
    /// HyStart++) or `newreno`.
    #[arg(long, value_name = "NAME", default_value = "bbr")]
    congestion: CongestionKind,
    /// Send buffer of every connection, e.g. 16MiB: the most unacknowledged
    /// and unsent data it holds (default 16MiB). Held only as far as the
    /// congestion window uses it.
    #[arg(long, value_name = "SIZE", value_parser = parse_buffer)]
    send_buffer: Option<usize>,
    /// Receive buffer of every connection, e.g. 16MiB: the largest window
    /// advertised (default 16MiB). The endpoint's packet socket gets a
    /// receive buffer that holds a window of segments (twice this, which
    /// the kernel doubles).
    #[arg(long, value_name = "SIZE", value_parser = parse_buffer)]
    recv_buffer: Option<usize>,
    /// The mobility information server (sustain-server) at ADDR:PORT: each
    /// migratable connection registers with it, reports this host's moves
    /// from the new address, and sends its MSYN where the server's
    /// authenticated notice says (both ends moving, NAPTs).
    #[arg(long, value_name = "ADDR:PORT")]
    server: Option<SocketAddrV4>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TransferArgs {
    /// Send this file, then close.
    #[arg(long, value_name = "PATH")]
    send_file: Option<PathBuf>,
    /// Receive into this file (with --keep: PATH.0, PATH.1, ...).
    #[arg(long, value_name = "PATH")]
    recv_file: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Sustain,
    Continuation,
    Plain,
}

/// A buffer size: at least 64 KiB (a window smaller than one unscaled
/// window), at most 1 GiB (RFC 7323 §2.3: the largest scaled window).
fn parse_buffer(s: &str) -> Result<usize, String> {
    let bytes = sustain_core::units::parse_size(s)?;
    if !(64 << 10..=1 << 30).contains(&bytes) {
        return Err(format!("{s}: a buffer must be between 64KiB and 1GiB"));
    }
    usize::try_from(bytes).map_err(|_| format!("{s} is too large"))
}

fn parse_bind(s: &str) -> Result<SocketAddrV4, String> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(a);
    }
    s.parse::<Ipv4Addr>()
        .map(|ip| SocketAddrV4::new(ip, 0))
        .map_err(|_| format!("'{s}' is neither ADDR nor ADDR:PORT"))
}

impl TcpArgs {
    fn config(&self) -> Config {
        let mut config = if self.paper_faithful {
            Config::paper_faithful()
        } else {
            Config {
                min_rto: Duration::from_millis(self.min_rto_ms),
                ..Config::default()
            }
        };
        config.mode = match self.mode {
            ModeArg::Sustain => Mode::Sustain,
            ModeArg::Continuation => Mode::Continuation,
            ModeArg::Plain => Mode::Plain,
        };
        config.mig_wait = Duration::from_secs(self.mig_wait_secs);
        config.keepalive_idle = self.keepalive_secs.map(Duration::from_secs);
        config.keepalive_interval = Duration::from_secs(self.keepalive_interval_secs);
        config.congestion = self.congestion;
        if let Some(mss) = self.mss {
            config.mss = mss;
        }
        if let Some(bytes) = self.send_buffer {
            config.send_buffer = bytes;
        }
        if let Some(bytes) = self.recv_buffer {
            config.recv_buffer = bytes;
        }
        config
    }
}

fn options(role: Role, common: Common) -> HostOptions {
    let transfer = match (common.transfer.send_file, common.transfer.recv_file) {
        (Some(p), _) => Transfer::Send(p),
        (None, Some(p)) => Transfer::Recv(p),
        (None, None) => unreachable!("clap requires one of --send-file/--recv-file"),
    };
    HostOptions {
        role,
        transfer,
        config: common.tcp.config(),
        connect_mss: common.tcp.mss,
        server: common.tcp.server,
        events: common.tcp.events,
        digest: !common.no_digest,
    }
}

fn print_summary(s: &Summary) {
    // serde_json never fails on this plain struct.
    println!("{}", serde_json::to_string(s).unwrap_or_default());
}

fn main() -> ExitCode {
    sustain::app::init_logging();
    let cli = Cli::parse();
    let Some(runtime) = sustain::app::runtime("sustain-host") else {
        return ExitCode::FAILURE;
    };
    let shutdown = async {
        match sustain::app::shutdown_signals() {
            Ok(signals) => signals.await,
            Err(e) => {
                eprintln!("sustain-host: {e:#}");
                std::future::pending().await
            }
        }
    };
    let opts = match cli.command {
        Command::Connect {
            remote,
            bind,
            common,
        } => options(Role::Connect { remote, bind }, common),
        Command::Listen { bind, keep, common } => options(Role::Listen { bind, keep }, common),
        Command::Forward { from, to, tcp } => {
            let direction = match Direction::new(from, to) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("sustain-host forward: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = ForwardOptions {
                direction,
                config: tcp.config(),
                connect_mss: tcp.mss,
                server: tcp.server,
                events: tcp.events,
            };
            return match runtime.block_on(forward::run(opts, shutdown)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sustain-host forward: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let result = runtime.block_on(host::run(opts, shutdown, print_summary));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(HostError::Interrupted(sig)) => {
            eprintln!("sustain-host: interrupted by {sig}");
            ExitCode::from(if sig == "SIGINT" { 130 } else { 143 })
        }
        Err(e) => {
            eprintln!("sustain-host: {e}");
            ExitCode::FAILURE
        }
    }
}
