//! The sustain runtime: drives the sans-IO core ([`sustain_core`]) with real
//! IPv4 packets on a raw socket, a monotonic clock and OS randomness.
//!
//! - [`raw_socket`]: raw IPv4/TCP socket with IP_HDRINCL and SO_MARK, batched
//!   receive and send, registered with tokio.
//! - [`rst_guard`]: the narrow netfilter rule that stops the kernel from
//!   resetting segments for the ports our userspace TCP owns.
//! - [`route`]: kernel route lookups (source address, path MTU).
//! - [`host`]: the reference host's event loop and file transfers.
//! - [`events`]: the JSON-lines `--events` log.
//! - [`netwatch`]: rtnetlink address/route/link events.

pub mod clock;
pub mod events;
pub mod host;
pub mod netwatch;
pub mod os_random;
pub mod raw_socket;
pub mod route;
pub mod rst_guard;
pub mod server;

/// Firewall mark our raw socket puts on every packet it sends, so the RST
/// guard can tell our RSTs from the kernel's. Arbitrary, documented value.
pub const SUSTAIN_MARK: u32 = 0x5375_7354; // "SusT"
