//! Where registrations live (PROTOCOL.md §15.11). The server talks to a
//! [`Registry`]; [`MemoryRegistry`] is the default, and a shared store
//! (DESIGN.md: a Redis/Valkey cluster keyed by connection id) can implement
//! the same trait. An [`Entry`] is plain `Copy` data, so it serialises
//! trivially.

use std::collections::HashMap;

use core::net::{Ipv4Addr, SocketAddrV4};

use thiserror::Error;

use super::EndState;
use crate::relay::ticket::TicketId;
use crate::time::Instant;
use crate::verifier::{ConnectionId, Side, Verifier};

/// One end's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRecord {
    /// Direct address and port on the connection (Register, MoveReport).
    pub direct: SocketAddrV4,
    /// Source address of the message that set `direct`.
    pub observed: Ipv4Addr,
    /// The peer as this end sees it (Register).
    pub peer_seen: SocketAddrV4,
    /// Order stamp of the latest distinct move; 0 = none.
    pub moved_at: u64,
    /// Location (new direct, observed) of the latest accepted MoveReport:
    /// a fresh report of the same location is not a new move.
    pub last_move: Option<(SocketAddrV4, Ipv4Addr)>,
    /// Last request number accepted from this end (replay protection).
    pub last_request: u32,
    /// Last notice number sent to this end (Ack, PeerLocation, ...).
    pub last_notice: u32,
    /// Stamp of the decision last delivered to this end in a notice
    /// (0 = none), and that notice's number.
    pub notified_at: u64,
    /// The number of that notice.
    pub notified_seq: u32,
    /// The session this end was last heard on (0 = none). Session ids are
    /// never reused, so a closed one simply no longer resolves.
    pub session: u64,
}

impl EndRecord {
    /// What the MSYN decision needs of this end.
    pub fn state(&self) -> EndState {
        EndState {
            direct: self.direct,
            observed: self.observed,
            moved_at: self.moved_at,
        }
    }
}

/// The relay the proxy granted a connection whose ends are both behind
/// NAPTs (PROTOCOL.md §6.9, §15.14): enough to send either end its
/// RelayAssignment again (the ticket keys are derived from the relay
/// secret, never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRecord {
    /// The proxy's address and the relay port.
    pub proxy: SocketAddrV4,
    /// The legs' ticket ids, low side first.
    pub tickets: [TicketId; 2],
    /// Seconds within which the relay must be used.
    pub lifetime_secs: u16,
}

/// A connection's registration: the verifier, both ends (each registers
/// itself), its relay if it has one, and when it expires unless refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The connection's verifier; messages of both ends are MACed with it.
    pub verifier: Verifier,
    /// Both ends' registrations, indexed by [`Side::index`].
    pub ends: [Option<EndRecord>; 2],
    /// The relay the proxy granted, if any.
    pub relay: Option<RelayRecord>,
    /// When the entry expires unless refreshed.
    pub expires: Instant,
}

impl Entry {
    /// An entry with no end registered yet.
    pub fn new(verifier: Verifier, expires: Instant) -> Entry {
        Entry {
            verifier,
            ends: [None, None],
            relay: None,
            expires,
        }
    }

    /// The registration of `side`, if it registered.
    pub fn end(&self, side: Side) -> Option<&EndRecord> {
        self.ends.get(side.index()).and_then(Option::as_ref)
    }

    /// The registration of `side`, mutably.
    pub fn end_mut(&mut self, side: Side) -> Option<&mut EndRecord> {
        self.ends.get_mut(side.index()).and_then(Option::as_mut)
    }
}

/// The registry refused a new connection: it holds its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("registry full ({0} connections)")]
pub struct RegistryFull(pub usize);

/// Storage of registrations, keyed by connection id, never by address.
pub trait Registry {
    /// The entry for `conn`, if any.
    fn get(&self, conn: ConnectionId) -> Option<Entry>;
    /// Inserts or replaces. Fails only for a *new* id at capacity.
    fn insert(&mut self, conn: ConnectionId, entry: Entry) -> Result<(), RegistryFull>;
    /// Removes the entry for `conn` and returns it.
    fn remove(&mut self, conn: ConnectionId) -> Option<Entry>;
    /// Removes every entry with `expires <= now`; returns how many.
    fn expire(&mut self, now: Instant) -> usize;
    /// How many connections are registered.
    fn len(&self) -> usize;
    /// Whether no connection is registered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The default registry: a hash map with a maximum size.
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    map: HashMap<ConnectionId, Entry>,
    max_entries: usize,
}

impl MemoryRegistry {
    /// An empty registry that holds at most `max_entries` connections.
    pub fn new(max_entries: usize) -> MemoryRegistry {
        MemoryRegistry {
            map: HashMap::new(),
            max_entries,
        }
    }

    /// Pre-allocates room for `n` entries (benchmarks, known loads).
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
    }
}

impl Registry for MemoryRegistry {
    fn get(&self, conn: ConnectionId) -> Option<Entry> {
        self.map.get(&conn).copied()
    }

    fn insert(&mut self, conn: ConnectionId, entry: Entry) -> Result<(), RegistryFull> {
        if let Some(slot) = self.map.get_mut(&conn) {
            *slot = entry;
            return Ok(());
        }
        if self.map.len() >= self.max_entries {
            return Err(RegistryFull(self.max_entries));
        }
        self.map.insert(conn, entry);
        Ok(())
    }

    fn remove(&mut self, conn: ConnectionId) -> Option<Entry> {
        self.map.remove(&conn)
    }

    /// A full scan; the server calls it once per sweep interval (15 ms
    /// per million entries on the development machine, `benches/rendezvous.rs`).
    fn expire(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.expires > now);
        before - self.map.len()
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}
