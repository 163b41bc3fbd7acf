//! The local ports an [`crate::Endpoint`] owns, and what owning one takes
//! in the kernel:
//!
//! - a bound, never-listening kernel TCP socket (a [`PortReservation`]), so
//!   the kernel's own connections cannot take the port;
//! - one guard rule ([`RstGuard`]): an ingress drop (packet socket) or an
//!   RST drop (raw socket), so the kernel does not reset the segments our
//!   userspace TCP receives on it;
//! - an entry in the receiving socket's BPF filter (packet socket, or the
//!   raw socket on the fallback path), so we receive them at all.
//!
//! A port is counted: a listener holds one reference, every connection on
//! the port holds one; the last release removes all three. Installing a
//! rule runs iptables (milliseconds), so callers do it off the driver task.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use crate::error::OpenError;
use crate::route::{self, PortReservation};
use crate::rst_guard::RstGuard;

struct Entry {
    refs: usize,
    _reservation: PortReservation,
}

/// The owned ports, their reservations and guard rules.
pub(crate) struct Ports {
    guard: RstGuard,
    entries: BTreeMap<u16, Entry>,
}

impl Ports {
    /// Guards every port in `lo..=hi` with one rule now, so owning one of
    /// them later is only its kernel reservation. Blocking (iptables).
    pub(crate) fn guard_range(
        &mut self,
        lo: u16,
        hi: u16,
    ) -> Result<(), crate::rst_guard::RstGuardError> {
        self.guard.add_range(lo, hi)
    }

    pub(crate) fn new(guard: RstGuard) -> Ports {
        Ports {
            guard,
            entries: BTreeMap::new(),
        }
    }

    /// Reserves `local` (port 0: the kernel picks one), guards it and takes
    /// the first reference. Blocking (iptables).
    pub(crate) fn open(&mut self, local: SocketAddrV4) -> Result<u16, OpenError> {
        let (port, reservation) =
            route::reserve_port(local).map_err(|e| OpenError::Port(local.port(), e))?;
        // A port inside a range guarded as a whole (the proxy's relay
        // ports) needs no rule of its own, and no iptables run.
        if !self.guard.covers(port) {
            self.guard
                .add_port(port)
                .map_err(|e| OpenError::Guard(port, e))?;
        }
        self.entries.insert(
            port,
            Entry {
                refs: 1,
                _reservation: reservation,
            },
        );
        Ok(port)
    }

    /// One more user of an owned port (a connection accepted on a
    /// listener's port). False if the port is not owned.
    pub(crate) fn retain(&mut self, port: u16) -> bool {
        match self.entries.get_mut(&port) {
            Some(e) => {
                e.refs += 1;
                true
            }
            None => false,
        }
    }

    /// Drops one reference; true when it was the last and the port must
    /// be given up ([`Ports::remove`], blocking).
    pub(crate) fn release(&mut self, port: u16) -> bool {
        match self.entries.get_mut(&port) {
            Some(e) if e.refs > 1 => {
                e.refs -= 1;
                false
            }
            Some(e) => {
                e.refs = 0;
                true
            }
            None => false,
        }
    }

    /// Gives up a port whose last reference was released: its rule, then
    /// its reservation. Blocking (iptables). A port retained again in the
    /// meantime is kept.
    pub(crate) fn remove(&mut self, port: u16) {
        if self.entries.get(&port).is_some_and(|e| e.refs == 0) {
            self.guard.remove_port(port);
            self.entries.remove(&port);
        }
    }

    /// Gives up every port and rule (the endpoint stopped). Blocking.
    pub(crate) fn remove_all(&mut self) {
        self.guard.remove_all();
        self.entries.clear();
    }

    /// The ports the receiving socket's filter must let through.
    pub(crate) fn filter(&self) -> Vec<u16> {
        self.entries
            .iter()
            .filter(|(_, e)| e.refs > 0)
            .map(|(p, _)| *p)
            .collect()
    }
}
