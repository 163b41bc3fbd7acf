//! Bodies of what the server sends a host (PROTOCOL.md §15.7, §15.8): the
//! Ack of each accepted request, the PeerLocation notice ("you send the
//! MSYN to X") and the RelayAssignment notice ("the proxy is your peer").

use core::fmt;
use core::net::SocketAddrV4;

use super::codec::{Reader, Writer, ADDR_LEN};
use super::ControlError;

/// What the server made of an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Register accepted; nothing to decide.
    Registered,
    /// Unregister accepted; the registration is gone.
    Unregistered,
    /// The recipient sends the MSYN: a PeerLocation follows.
    YouSend,
    /// The peer was told to send the MSYN; wait for it.
    PeerSends,
    /// Both ends are behind NAPTs: only a relay can join them, and none
    /// is available (no proxy configured or reachable, or it refused).
    RelayNeeded,
    /// The peer is not registered (yet): nothing can be decided.
    Waiting,
    /// Both ends are behind NAPTs and the proxy relays them: a
    /// RelayAssignment follows (PROTOCOL.md §15.7, §15.14).
    Relayed,
}

impl Outcome {
    /// The outcome byte on the wire.
    pub fn to_wire(self) -> u8 {
        match self {
            Outcome::Registered => 1,
            Outcome::Unregistered => 2,
            Outcome::YouSend => 3,
            Outcome::PeerSends => 4,
            Outcome::RelayNeeded => 5,
            Outcome::Waiting => 6,
            Outcome::Relayed => 7,
        }
    }

    /// The outcome for an outcome byte; `BadOutcome` for an unknown one.
    pub fn from_wire(v: u8) -> Result<Outcome, ControlError> {
        Ok(match v {
            1 => Outcome::Registered,
            2 => Outcome::Unregistered,
            3 => Outcome::YouSend,
            4 => Outcome::PeerSends,
            5 => Outcome::RelayNeeded,
            6 => Outcome::Waiting,
            7 => Outcome::Relayed,
            other => return Err(ControlError::BadOutcome(other)),
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Registered => "registered",
            Outcome::Unregistered => "unregistered",
            Outcome::YouSend => "you-send",
            Outcome::PeerSends => "peer-sends",
            Outcome::RelayNeeded => "relay-needed",
            Outcome::Waiting => "waiting",
            Outcome::Relayed => "relayed",
        })
    }
}

/// Ack: the request number of the accepted request and its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The request number of the accepted request.
    pub request: u32,
    /// What the server did with it.
    pub outcome: Outcome,
}

impl Ack {
    /// Body bytes.
    pub const LEN: usize = 4 + 1 + 1;

    pub(crate) fn parse(body: &[u8]) -> Result<Ack, ControlError> {
        let mut r = Reader::new(body);
        let request = r.u32();
        let outcome = Outcome::from_wire(r.u8())?;
        let _reserved = r.u8();
        Ok(Ack { request, outcome })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u32(self.request);
        w.u8(self.outcome.to_wire());
        w.u8(0);
    }
}

/// Flag bit: the recipient is behind a NAPT (direct != observed).
const FLAG_YOU_BEHIND_NAPT: u8 = 0x01;
/// Flag bit: the peer is behind a NAPT.
const FLAG_PEER_BEHIND_NAPT: u8 = 0x02;

/// PeerLocation: send the MSYN to `target` (PROTOCOL.md §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLocation {
    /// The request that led to this decision if it was the recipient's,
    /// else 0.
    pub request: u32,
    /// Where to send the MSYN: the peer's direct address and port (PROTOCOL.md §15.10).
    pub target: SocketAddrV4,
    /// The recipient itself is behind a NAPT.
    pub you_behind_napt: bool,
    /// The peer is behind a NAPT.
    pub peer_behind_napt: bool,
}

impl PeerLocation {
    /// Body bytes.
    pub const LEN: usize = 4 + ADDR_LEN + 1 + 1;

    pub(crate) fn parse(body: &[u8]) -> PeerLocation {
        let mut r = Reader::new(body);
        let request = r.u32();
        let target = r.addr();
        let flags = r.u8();
        let _reserved = r.u8();
        PeerLocation {
            request,
            target,
            you_behind_napt: flags & FLAG_YOU_BEHIND_NAPT != 0,
            peer_behind_napt: flags & FLAG_PEER_BEHIND_NAPT != 0,
        }
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u32(self.request);
        w.addr(self.target);
        let mut flags = 0;
        if self.you_behind_napt {
            flags |= FLAG_YOU_BEHIND_NAPT;
        }
        if self.peer_behind_napt {
            flags |= FLAG_PEER_BEHIND_NAPT;
        }
        w.u8(flags);
        w.u8(0);
    }
}

/// Bytes of a relay ticket's key.
pub const TICKET_KEY_LEN: usize = 16;

/// RelayAssignment: treat `proxy` as the peer and authenticate the relay
/// MSYN with the one-time ticket (PROTOCOL.md §3.5, §11.5). Defined now;
/// the proxy issue mints and uses it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RelayAssignment {
    /// The request that led to the relay if it was the recipient's, else 0.
    pub request: u32,
    /// The proxy's address and relay port, to treat as the peer.
    pub proxy: SocketAddrV4,
    /// The ticket's id, carried in the Relay MSYN (PROTOCOL.md §3.5).
    pub ticket_id: u32,
    /// The ticket's key, for the Relay MSYN's MAC (PROTOCOL.md §4.7).
    pub ticket_key: [u8; TICKET_KEY_LEN],
    /// Seconds within which the relay must be used.
    pub lifetime_secs: u16,
}

impl fmt::Debug for RelayAssignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayAssignment")
            .field("request", &self.request)
            .field("proxy", &self.proxy)
            .field("ticket_id", &self.ticket_id)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl RelayAssignment {
    /// Body bytes.
    pub const LEN: usize = 4 + ADDR_LEN + 4 + TICKET_KEY_LEN + 2;

    pub(crate) fn parse(body: &[u8]) -> RelayAssignment {
        let mut r = Reader::new(body);
        RelayAssignment {
            request: r.u32(),
            proxy: r.addr(),
            ticket_id: r.u32(),
            ticket_key: r.take(),
            lifetime_secs: r.u16(),
        }
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u32(self.request);
        w.addr(self.proxy);
        w.u32(self.ticket_id);
        w.bytes(&self.ticket_key);
        w.u16(self.lifetime_secs);
    }
}
