//! TCP per RFC 9293, with RFC 6298 timers, RFC 7323 window scaling,
//! timestamps and PAWS, RFC 2018 SACK with RACK-TLP (RFC 8985), PRR (RFC 6937) and
//! D-SACK undo (RFC 2883, RFC 3708), CUBIC / BBR / NewReno congestion
//! control with pacing, delayed ACKs, zero-window probing and RFC 5961
//! hardening.
//!
//! [`Endpoint`] is the sans-IO entry point: it takes whole IPv4 packets and
//! timeouts, and yields IPv4 packets and [`Event`]s. It owns listeners and
//! connections and demultiplexes segments to them.

pub mod handshake;

mod assembler;
mod bbr;
mod buffer;
mod congestion;
mod connection;
mod cubic;
mod endpoint;
mod hystart;
mod pacing;
mod prr;
mod rack;
mod rtt;
mod sack;
mod sent;
mod tlp;
mod types;
mod undo;

pub use congestion::{CongestionKind, UnknownCongestionKind};
pub use endpoint::Endpoint;
pub use types::{
    CloseReason, Config, ConnId, ConnInfo, Event, IndexSizes, ListenerId, MigWaitCause,
    MigrationFailure, Mode, State, Stats, TcpError,
};
