//! Sans-IO core of sustain.
//!
//! Everything here is deterministic: time ([`time::Instant`]) and randomness
//! ([`rand::Random`]) are inputs, and there are no sockets, clocks or async
//! runtimes. The runtime crate drives it with real packets; the simulator
//! ([`sim`]) drives it with a seeded in-process network.
//!
//! - [`wire`]: IPv4 + TCP parse/emit, the TCP option walker, sequence numbers.
//! - [`Transmit`]: where a packet `poll_transmit` wrote goes.
//! - [`tcp`]: the TCP state machine (RFC 9293 and friends) and the endpoint
//!   that demultiplexes segments to connections and listeners.
//! - [`verifier`], [`control`], [`rendezvous`]: the mobility server's
//!   credentials, control protocol and decisions (PROTOCOL.md §15).
//! - [`sim`]: a deterministic network of endpoints with latency, loss,
//!   reordering and duplication.

// Safe Rust only: nothing here needs more (issue 15).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod control;
pub mod rand;
pub mod relay;
pub mod rendezvous;
pub mod sim;
pub mod tcp;
pub mod time;
mod transmit;
pub mod units;
pub mod verifier;
pub mod wire;

pub use transmit::Transmit;
