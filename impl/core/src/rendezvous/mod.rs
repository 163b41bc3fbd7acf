//! The mobility server's logic, sans-IO (PROTOCOL.md §15, DESIGN.md
//! "Mobility information exchange through a server").
//!
//! Read first: PROTOCOL.md §15.10 (the decision rules), then §15.11 (the
//! server's processing order) and §11.9 (threat model).
//!
//! - [`decide`]: the pure function that says who sends the MSYN, from the
//!   two ends' direct and observed addresses and the order of their moves.
//! - [`server`]: the state machine `sustain-server` drives:
//!   `handle_stream` / `handle_message(now, session, bytes)`,
//!   `handle_timeout(now)`, `poll_output()`, `poll_event()`.
//! - [`registry`]: where registrations live ([`Registry`] trait, in-memory
//!   [`MemoryRegistry`] by default).
//! - [`rate`]: per-source token buckets.
//! - [`proxy_link`]: the server's control session with the symmetric
//!   proxy (§15.14): relay requests in flight and relays granted.
//! - [`client`]: the host's side, [`ControlClient`]: builds Register,
//!   MoveReport and Unregister for one connection and accepts only notices
//!   that verify and are fresh.

pub mod client;
pub mod proxy_link;
pub mod rate;
pub mod registry;
pub mod server;

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

pub use client::{ClientError, ClientStats, ControlClient, ServerMessage, REFRESH_INTERVAL};
pub use proxy_link::ProxyConfig;
pub use rate::RateLimiter;
pub use registry::{EndRecord, Entry, MemoryRegistry, Registry, RegistryFull, RelayRecord};
pub use server::{Output, Server, ServerConfig, ServerError, ServerEvent, ServerStats, SessionId};

use crate::verifier::Side;

/// What the server knows of one end when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndState {
    /// The end's direct (pre-NAPT) address and port on the connection.
    pub direct: SocketAddrV4,
    /// The source address its latest location-setting message came from.
    pub observed: Ipv4Addr,
    /// The server's order stamp of its latest reported move; 0 = it never
    /// reported one. Stamps are unique and increase.
    pub moved_at: u64,
}

impl EndState {
    /// NAPT detection (the sustaining paper): direct != observed address.
    /// Ports are not compared: the control session and the connection are
    /// different flows, which a NAPT maps to different ports anyway.
    pub fn behind_napt(&self) -> bool {
        *self.direct.ip() != self.observed
    }
}

/// Who sends the MSYN, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Neither end reported a move: nothing to do.
    NoMove,
    /// `sender` sends the MSYN to `target`, the other end's direct address
    /// (global, since that end is not behind a NAPT).
    Msyn {
        /// The end that sends the MSYN.
        sender: Side,
        /// Where it sends it.
        target: SocketAddrV4,
    },
    /// Both ends are behind NAPTs: neither can reach the other.
    RelayNeeded,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::NoMove => f.write_str("no-move"),
            Decision::Msyn { sender, target } => write!(f, "{sender} sends MSYN to {target}"),
            Decision::RelayNeeded => f.write_str("relay-needed"),
        }
    }
}

/// The paper's rules (PROTOCOL.md §15.10), given both ends indexed by
/// [`Side`]:
///
/// - no end moved: [`Decision::NoMove`];
/// - both global: the end that reported **later** sends, to the other's
///   direct address;
/// - exactly one behind a NAPT: **that one** sends, to the other's direct
///   address, whether or not it moved itself (a NAPT lets connections out,
///   not in);
/// - both behind NAPTs: [`Decision::RelayNeeded`].
pub fn decide(ends: [&EndState; 2]) -> Decision {
    let [low, high] = ends;
    if low.moved_at == 0 && high.moved_at == 0 {
        return Decision::NoMove;
    }
    let sender = match (low.behind_napt(), high.behind_napt()) {
        // Stamps are unique; equal (impossible) ones fall to Low.
        (false, false) if high.moved_at > low.moved_at => Side::High,
        (false, false) => Side::Low,
        (true, false) => Side::Low,
        (false, true) => Side::High,
        (true, true) => return Decision::RelayNeeded,
    };
    let target = match sender {
        Side::Low => high.direct,
        Side::High => low.direct,
    };
    Decision::Msyn { sender, target }
}

#[cfg(test)]
mod tests;
