//! sustain: TCP connections that survive IP address changes, as a library.
//!
//! [`Endpoint`] is to [`sustain_core`] what quinn's `Endpoint` is to
//! quinn-proto: it owns the datapath (a packet socket to receive, a raw IPv4
//! socket and GSO super-segments to send), the clock, the
//! address watcher and the kernel-RST guard, runs one driver task around
//! the sans-IO core (`driver` documents the loop), and hands out
//! [`Stream`]s (tokio `AsyncRead` + `AsyncWrite`) and [`Listener`]s for
//! any number of ports and connections. The `sustain-host` binary (file
//! transfer and `forward`) is an application of it.
//!
//! - [`endpoint`]: `Endpoint`, `EndpointConfig`, `Listener`.
//! - [`stream`]: `Stream` and its migration events.
//! - [`error`]: typed errors and their `io::ErrorKind`s.
//! - [`events`]: the JSON-lines `--events` log; [`clock`]: the monotonic clock.
//! - [`host`], [`forward`]: the applications `sustain-host` runs;
//!   [`server`]: `sustain-server`; [`proxy`]: `sustain-proxy`; [`app`]: what
//!   the three binaries share; [`huge_text`]: their code on huge pages.
//!
//! Private modules (`cargo doc --document-private-items` shows them):
//! - `driver`: the driver loop.
//! - `packet_rx`, `gso`, `raw_socket`, `rst_guard`, `route`, `netwatch`: the kernel
//!   facilities the driver uses.
//! - `mobility`: each migratable connection's session with the mobility
//!   information server.

#![warn(missing_docs)]
// Unsafe code lives only in the three datapath modules that talk to the
// kernel where no crate serves (the receiving packet socket's recvmmsg and
// control messages, the raw socket's sendmmsg/recvmmsg and BPF filter,
// GSO's packet socket), plus the one
// registration of the rtnetlink listener with tokio (netwatch.rs), and the
// binaries' move of their code onto huge pages (huge_text.rs): each block has
// its SAFETY comment.
#![deny(unsafe_code)]

pub mod app;
pub mod clock;
pub(crate) mod driver;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod forward;
#[allow(unsafe_code)]
pub(crate) mod gso;
pub mod host;
#[allow(unsafe_code)]
pub mod huge_text;
pub(crate) mod mobility;
pub(crate) mod netwatch;
pub(crate) mod os_random;
#[allow(unsafe_code)]
pub(crate) mod packet_rx;
mod ports;
pub mod proxy;
#[allow(unsafe_code)]
pub(crate) mod raw_socket;
pub(crate) mod route;
pub(crate) mod rst_guard;
pub mod server;
mod session_io;
pub(crate) mod shared;
pub mod stream;

pub use endpoint::{Endpoint, EndpointConfig, Listener};
pub use error::{ConnectionError, EndpointError, OpenError};
pub use shared::StreamEvent;
pub use stream::{Stream, StreamEvents};
pub use sustain_core::tcp::{
    CloseReason, Config, ConnId, ConnInfo, MigWaitCause, MigrationFailure, Mode, State, Stats,
};

/// Firewall mark our raw socket puts on every packet it sends, so the RST
/// guard can tell our RSTs from the kernel's. Arbitrary, documented value.
pub const SUSTAIN_MARK: u32 = 0x5375_7354; // "SusT"
