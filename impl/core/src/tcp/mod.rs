//! TCP per RFC 9293, with RFC 6298 timers, RFC 7323 window scaling,
//! timestamps and PAWS, RFC 2018 SACK with RFC 6675 loss recovery, NewReno
//! congestion control, delayed ACKs, zero-window probing and RFC 5961
//! hardening.
//!
//! [`Endpoint`] is the sans-IO entry point: it takes whole IPv4 packets and
//! timeouts, and yields IPv4 packets and [`Event`]s. It owns listeners and
//! connections and demultiplexes segments to them.

pub mod congestion;
pub mod rtt;
pub mod sack;

mod assembler;
mod buffer;
mod connection;
mod endpoint;

pub use endpoint::{
    CloseReason, Config, ConnId, ConnInfo, Endpoint, Event, IndexSizes, ListenerId, MigWaitCause,
    MigrationFailure, Mode, State, Stats, TcpError,
};
