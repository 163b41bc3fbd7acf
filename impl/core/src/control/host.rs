//! Bodies of what a host sends the server (PROTOCOL.md §15.5, §15.6):
//! Register (the paper's pre-move exchange) and MoveReport (the paper's
//! migration information). Unregister has no body.

use core::net::{Ipv4Addr, SocketAddrV4};

use super::codec::{Reader, Writer, ADDR_LEN};
use crate::verifier::{Verifier, VERIFIER_LEN};

/// "Not known" in an address field.
pub const UNSPECIFIED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);

/// Register: the verifier (learned here, once), the sender's direct
/// address and port on the connection, the peer's address and port as the
/// sender sees it, and the last notice number the sender accepted (so a
/// restarted server continues above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    /// The connection's verifier, which the server learns here (PROTOCOL.md §15.2).
    pub verifier: Verifier,
    /// The sender's direct address and port on the connection.
    pub direct: SocketAddrV4,
    /// The peer's address and port as the sender sees it.
    pub peer_seen: SocketAddrV4,
    /// The last notice number the sender accepted.
    pub last_notice: u32,
}

impl Register {
    /// Body bytes.
    pub const LEN: usize = VERIFIER_LEN + 2 * ADDR_LEN + 4;

    /// Parses a body of exactly [`Self::LEN`] bytes (checked by the view).
    pub(crate) fn parse(body: &[u8]) -> Register {
        let mut r = Reader::new(body);
        Register {
            verifier: Verifier(r.take()),
            direct: r.addr(),
            peer_seen: r.addr(),
            last_notice: r.u32(),
        }
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.bytes(&self.verifier.0);
        w.addr(self.direct);
        w.addr(self.peer_seen);
        w.u32(self.last_notice);
    }
}

/// MoveReport: where both ends were before the move, before and after
/// translation, and the sender's new direct address and port. The new
/// *observed* address is the source the server sees. Unknown fields are
/// [`UNSPECIFIED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveReport {
    /// The sender's direct address and port before the move.
    pub old_direct: SocketAddrV4,
    /// The sender's address and port before the move as the peer saw it
    /// (after translation); usually unknown to the sender.
    pub old_seen: SocketAddrV4,
    /// The peer's direct address and port (from its Migrate-Permit).
    pub old_peer_direct: SocketAddrV4,
    /// The peer's address and port as the sender saw it before the move.
    pub old_peer_seen: SocketAddrV4,
    /// The sender's new direct address and port.
    pub new_direct: SocketAddrV4,
}

impl MoveReport {
    /// Body bytes.
    pub const LEN: usize = 5 * ADDR_LEN;

    pub(crate) fn parse(body: &[u8]) -> MoveReport {
        let mut r = Reader::new(body);
        MoveReport {
            old_direct: r.addr(),
            old_seen: r.addr(),
            old_peer_direct: r.addr(),
            old_peer_seen: r.addr(),
            new_direct: r.addr(),
        }
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.addr(self.old_direct);
        w.addr(self.old_seen);
        w.addr(self.old_peer_direct);
        w.addr(self.old_peer_seen);
        w.addr(self.new_direct);
    }
}
