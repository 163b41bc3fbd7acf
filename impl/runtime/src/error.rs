//! The library's typed errors, one small enum per operation, and their
//! mapping onto [`std::io::Error`] at the stream boundary.

use std::io;

use sustain_core::tcp::{CloseReason, TcpError};
use thiserror::Error;

pub use crate::raw_socket::RawSocketError;
pub use crate::rst_guard::RstGuardError;

/// Why a connection ended other than normally: the typed reason behind
/// the `io::Error` a [`crate::Stream`] returns
/// (`err.get_ref().and_then(|e| e.downcast_ref::<ConnectionError>())`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConnectionError {
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// Retransmissions (or keepalive probes) went unanswered.
    #[error("connection timed out")]
    TimedOut,
    /// The peer refused the connection (RST to our SYN).
    #[error("connection refused")]
    Refused,
    /// This end aborted the connection.
    #[error("connection aborted")]
    Aborted,
    /// A move did not complete: MIG_WAIT expired, or an Address-Update was
    /// never answered.
    #[error("migration timed out")]
    MigrationTimedOut,
    /// The local address went away under a connection that cannot move.
    #[error("local address lost (plain TCP cannot move)")]
    AddressLost,
    /// The peer answered no keep-alive probe: it is gone (RFC 9293 §3.8.4).
    #[error("peer gone (keep-alive probes unanswered)")]
    KeepaliveTimedOut,
    /// The endpoint's driver stopped (shut down, or failed).
    #[error("the endpoint was shut down")]
    EndpointClosed,
}

impl ConnectionError {
    /// The error for a close reason; `None` for a normal close.
    pub fn from_reason(reason: CloseReason) -> Option<ConnectionError> {
        Some(match reason {
            CloseReason::Normal => return None,
            CloseReason::Reset => ConnectionError::Reset,
            CloseReason::TimedOut => ConnectionError::TimedOut,
            CloseReason::Aborted => ConnectionError::Aborted,
            CloseReason::Refused => ConnectionError::Refused,
            CloseReason::MigrationTimedOut => ConnectionError::MigrationTimedOut,
            CloseReason::AddressLost => ConnectionError::AddressLost,
            CloseReason::KeepaliveTimedOut => ConnectionError::KeepaliveTimedOut,
        })
    }

    /// The core's close reason behind this error (`None`: the endpoint
    /// stopped).
    pub fn close_reason(self) -> Option<CloseReason> {
        Some(match self {
            ConnectionError::Reset => CloseReason::Reset,
            ConnectionError::TimedOut => CloseReason::TimedOut,
            ConnectionError::Refused => CloseReason::Refused,
            ConnectionError::Aborted => CloseReason::Aborted,
            ConnectionError::MigrationTimedOut => CloseReason::MigrationTimedOut,
            ConnectionError::AddressLost => CloseReason::AddressLost,
            ConnectionError::KeepaliveTimedOut => CloseReason::KeepaliveTimedOut,
            ConnectionError::EndpointClosed => return None,
        })
    }

    /// The typed reason inside an `io::Error` a stream (or a connect, as
    /// an [`OpenError`]) returned.
    pub fn of(e: &io::Error) -> Option<ConnectionError> {
        let inner = e.get_ref()?;
        if let Some(c) = inner.downcast_ref::<ConnectionError>() {
            return Some(*c);
        }
        match inner.downcast_ref::<OpenError>() {
            Some(OpenError::Connection(c)) => Some(*c),
            _ => None,
        }
    }

    /// The `io::ErrorKind` applications match on.
    pub fn kind(self) -> io::ErrorKind {
        match self {
            ConnectionError::Reset => io::ErrorKind::ConnectionReset,
            ConnectionError::TimedOut
            | ConnectionError::MigrationTimedOut
            | ConnectionError::KeepaliveTimedOut => io::ErrorKind::TimedOut,
            ConnectionError::Refused => io::ErrorKind::ConnectionRefused,
            ConnectionError::Aborted | ConnectionError::EndpointClosed => {
                io::ErrorKind::ConnectionAborted
            }
            ConnectionError::AddressLost => io::ErrorKind::AddrNotAvailable,
        }
    }

    /// The error a core call answered with, for a connection that is gone.
    pub(crate) fn from_tcp(e: TcpError) -> ConnectionError {
        match e {
            TcpError::Reset => ConnectionError::Reset,
            TcpError::TimedOut => ConnectionError::TimedOut,
            TcpError::MigrationTimedOut => ConnectionError::MigrationTimedOut,
            TcpError::AddressLost => ConnectionError::AddressLost,
            TcpError::NoSuchConnection
            | TcpError::AddrInUse
            | TcpError::NotOpenForSend
            | TcpError::NotMigratable => ConnectionError::Aborted,
        }
    }
}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Errors of [`crate::Endpoint::new`].
#[derive(Debug, Error)]
pub enum EndpointError {
    /// The raw socket could not be opened (needs CAP_NET_RAW, CAP_NET_ADMIN).
    #[error(transparent)]
    Socket(#[from] RawSocketError),
    /// The kernel-RST guard could not be set up.
    #[error("cannot set up the kernel-RST guard: {0}")]
    Guard(#[from] RstGuardError),
    /// The rtnetlink address/route watcher could not start.
    #[error("subscribing to rtnetlink address and route events: {0}")]
    Netlink(#[source] io::Error),
    /// The `--events` file could not be opened.
    #[error("opening the events file: {0}")]
    Events(#[source] io::Error),
    /// `Endpoint::new` was called outside a tokio runtime.
    #[error("sustain::Endpoint must be created inside a tokio runtime")]
    NoRuntime,
}

/// Errors of [`crate::Endpoint::connect`] and [`crate::Endpoint::listen`].
#[derive(Debug, Error)]
pub enum OpenError {
    /// The kernel has no route towards the remote address.
    #[error("no route to {0}: {1}")]
    NoRoute(std::net::SocketAddrV4, #[source] io::Error),
    /// The local port could not be reserved (in use, or not ours to bind).
    #[error("cannot reserve local port {0}: {1}")]
    Port(u16, #[source] io::Error),
    /// The RST-guard rule for the port could not be installed.
    #[error("cannot guard local port {0} against kernel RSTs: {1}")]
    Guard(u16, #[source] RstGuardError),
    /// The port filter on the raw socket could not be updated.
    #[error("updating the raw socket's port filter: {0}")]
    Filter(#[source] io::Error),
    /// The core refused (address in use).
    #[error("{0}")]
    Tcp(#[from] TcpError),
    /// The connection failed while opening.
    #[error("connect: {0}")]
    Connection(#[from] ConnectionError),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let kind = match &e {
            OpenError::NoRoute(..) => io::ErrorKind::HostUnreachable,
            OpenError::Port(_, source) | OpenError::Filter(source) => source.kind(),
            OpenError::Guard(..) => io::ErrorKind::PermissionDenied,
            OpenError::Tcp(TcpError::AddrInUse) => io::ErrorKind::AddrInUse,
            OpenError::Tcp(_) => io::ErrorKind::Other,
            OpenError::Connection(c) => c.kind(),
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_abnormal_close_maps_to_a_kind_and_keeps_its_reason() {
        for (reason, kind) in [
            (CloseReason::Reset, io::ErrorKind::ConnectionReset),
            (CloseReason::TimedOut, io::ErrorKind::TimedOut),
            (CloseReason::Refused, io::ErrorKind::ConnectionRefused),
            (CloseReason::Aborted, io::ErrorKind::ConnectionAborted),
            (CloseReason::MigrationTimedOut, io::ErrorKind::TimedOut),
            (CloseReason::AddressLost, io::ErrorKind::AddrNotAvailable),
            (CloseReason::KeepaliveTimedOut, io::ErrorKind::TimedOut),
        ] {
            let typed = ConnectionError::from_reason(reason).unwrap();
            let err: io::Error = typed.into();
            assert_eq!(err.kind(), kind, "{reason:?}");
            let back = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<ConnectionError>())
                .copied();
            assert_eq!(back, Some(typed));
        }
        assert_eq!(ConnectionError::from_reason(CloseReason::Normal), None);
        assert_eq!(
            ConnectionError::MigrationTimedOut.to_string(),
            "migration timed out"
        );
    }
}
