//! What an endpoint's handles ([`crate::endpoint`], [`crate::stream`]), its
//! driver ([`crate::driver`]) and its connections' control tasks
//! ([`crate::mobility`]) share: the state behind one mutex, and the messages
//! the driver hands the streams and the control tasks. Everything above
//! depends on this module and it on none of them, so the runtime's modules
//! depend one way.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use futures::channel::mpsc::UnboundedSender;
use serde_json::json;
use sustain_core::tcp::{
    CloseReason, ConnId, Endpoint as CoreEndpoint, Event, ListenerId, MigWaitCause,
    MigrationFailure, Mode,
};
use sustain_core::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::gso::{self, GsoSender};
use crate::netwatch::NetEvents;
use crate::packet_rx::PacketRx;
use crate::ports::Ports;
use crate::raw_socket::RawSocket;

/// What every handle and the driver share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the driver after a handle changed the core.
    pub(crate) wake: Notify,
    /// Sends, and receives unless `packet` does.
    pub(crate) socket: RawSocket,
    /// The receiving packet socket ([`crate::packet_rx`]); `None`: the raw
    /// socket receives (the fallback).
    pub(crate) packet: Option<PacketRx>,
    /// Sends runs of bulk segments as GSO super-segments ([`crate::gso`]);
    /// only with the packet socket, which tells it the next hops.
    pub(crate) gso: Option<GsoSender>,
    /// Address, route and link changes ([`crate::netwatch`]): the driver's
    /// and the GSO sender's one listener.
    pub(crate) net: NetEvents,
    pub(crate) clock: Clock,
    /// The owned ports; separate from `state` because installing a guard
    /// rule blocks (iptables) and must not hold up the driver.
    pub(crate) ports: Mutex<Ports>,
    /// Notified when the driver has ended.
    pub(crate) stopped: Notify,
    /// `EndpointConfig::connect_mss`.
    pub(crate) connect_mss: Option<u16>,
    /// `EndpointConfig::server`: the mobility information server.
    pub(crate) server: Option<SocketAddrV4>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another handle leaves the state as consistent as the
        // core keeps it; carry on rather than poison every handle.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn lock_ports(&self) -> MutexGuard<'_, Ports> {
        self.ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Points the receiving socket's filter at the owned ports.
    pub(crate) fn refresh_filter(&self) -> io::Result<()> {
        let ports = self.lock_ports().filter();
        self.set_filter(&ports)
    }

    pub(crate) fn set_filter(&self, ports: &[u16]) -> io::Result<()> {
        match &self.packet {
            Some(packet) => packet.set_port_filter(ports),
            None => self.socket.set_port_filter(ports),
        }
    }

    /// Waits until a packet may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match &self.packet {
            Some(packet) => packet.readable().await,
            None => self.socket.readable().await,
        }
    }

    /// Gives up `port` (after its last release) off the driver task.
    pub(crate) fn remove_port_later(self: &Arc<Self>, port: u16) {
        let shared = self.clone();
        let _ = self.refresh_filter_without(port);
        tokio::task::spawn_blocking(move || {
            shared.lock_ports().remove(port);
        });
    }

    pub(crate) fn refresh_filter_without(&self, port: u16) -> io::Result<()> {
        let ports: Vec<u16> = self
            .lock_ports()
            .filter()
            .into_iter()
            .filter(|p| *p != port)
            .collect();
        self.set_filter(&ports)
    }
}

/// Per connection: who waits for what.
#[derive(Default)]
pub(crate) struct ConnSlot {
    pub(crate) port: u16,
    pub(crate) connected: bool,
    pub(crate) closed: Option<CloseReason>,
    /// A `Stream` (or a pending connect) exists for it.
    pub(crate) handle: bool,
    /// The application's FIN is queued.
    pub(crate) fin_queued: bool,
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
    /// A task waiting for everything written to be acknowledged (flush).
    pub(crate) flush: Option<Waker>,
    /// Tasks waiting for the connection to open or to close.
    pub(crate) state_waiters: Vec<Waker>,
    pub(crate) events: Vec<UnboundedSender<StreamEvent>>,
    /// The connection's mobility-server task, once it is migratable.
    pub(crate) control: Option<UnboundedSender<ControlCmd>>,
}

impl ConnSlot {
    pub(crate) fn wake_all(&mut self) {
        if let Some(w) = self.read.take() {
            w.wake();
        }
        if let Some(w) = self.write.take() {
            w.wake();
        }
        if let Some(w) = self.flush.take() {
            w.wake();
        }
        for w in self.state_waiters.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn wait_state(&mut self, waker: &Waker) {
        if !self.state_waiters.iter().any(|w| w.will_wake(waker)) {
            self.state_waiters.push(waker.clone());
        }
    }

    pub(crate) fn emit(&mut self, event: StreamEvent) {
        self.events
            .retain(|tx| tx.unbounded_send(event.clone()).is_ok());
    }
}

/// Per listener: the accepted connections not yet taken and the acceptor.
pub(crate) struct ListenerSlot {
    pub(crate) port: u16,
    pub(crate) queue: VecDeque<ConnId>,
    pub(crate) waker: Option<Waker>,
}

/// Everything behind the shared mutex.
pub(crate) struct State {
    pub(crate) core: CoreEndpoint,
    pub(crate) conns: HashMap<ConnId, ConnSlot>,
    pub(crate) listeners: HashMap<ListenerId, ListenerSlot>,
    pub(crate) log: EventLog,
    /// Live `Endpoint` handles.
    pub(crate) endpoint_handles: usize,
    /// `Endpoint::shutdown` was called: abort everything and stop.
    pub(crate) shutdown: bool,
    /// The driver has ended; handles answer `EndpointClosed`.
    pub(crate) stopped: bool,
    /// Ports of connections that are gone for the application but that the
    /// core still owns (TIME-WAIT); released once it no longer does.
    pub(crate) lingering: Vec<u16>,
    /// Addresses present at the last look, and those usable (routed).
    pub(crate) addresses: BTreeSet<Ipv4Addr>,
    pub(crate) usable: BTreeSet<Ipv4Addr>,
    /// Connections with a flush waiter, checked after every pass.
    pub(crate) flushing: Vec<ConnId>,
    /// Packets the kernel refused for lack of a route, handed back to the
    /// core (PROTOCOL.md §7, a segment the host refused).
    pub(crate) send_drops: u64,
    /// Sends the kernel refused for lack of buffer space, retried later.
    pub(crate) send_retries: u64,
    /// Packets the kernel dropped because the packet socket's receive
    /// buffer was full.
    pub(crate) rx_drops: u64,
    /// After a refusal, no send before this instant (unless an address or
    /// route event comes first): the refusal repeats until something
    /// changes, and retrying at once would spin.
    pub(crate) tx_hold: Option<Instant>,
    /// GSO super-segments sent, and the segments they carried.
    pub(crate) gso_sent: gso::GsoSent,
    pub(crate) scratch: Vec<u8>,
}

/// Migration progress of one connection (the core's events, per stream).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// This end started a move: MSYN (`Mode::Sustain`) or Address-Update
    /// (`Mode::Continuation`).
    MigrationStarted {
        /// How the move is made.
        mode: Mode,
    },
    /// An MSYN left; `attempt` counts from 1 within the move.
    MsynSent {
        /// 1 for the first MSYN of the move, then 2, 3, ...
        attempt: u32,
    },
    /// The connection holds in MIG_WAIT.
    MigWait {
        /// What the connection waits for.
        cause: MigWaitCause,
    },
    /// Data flows again; `stall` since the address loss or the move's start.
    Resumed {
        /// How long data did not flow.
        stall: Duration,
    },
    /// The move failed; the connection closes.
    MigrationFailed {
        /// Why it failed.
        reason: MigrationFailure,
    },
    /// The peer moved to `new_remote` (as seen here, after any NAPT).
    PeerMoved {
        /// The peer's new address and port.
        new_remote: SocketAddrV4,
        /// The source seen differs from the direct address the peer announced (a NAPT rewrote it).
        behind_napt: bool,
    },
}

impl StreamEvent {
    /// The stream event of a core migration event, with its connection.
    pub(crate) fn from_core(event: &Event) -> Option<(ConnId, StreamEvent)> {
        Some(match *event {
            Event::MigrationStarted { conn, mode } => {
                (conn, StreamEvent::MigrationStarted { mode })
            }
            Event::MsynSent { conn, attempt } => (conn, StreamEvent::MsynSent { attempt }),
            Event::MigWait { conn, cause } => (conn, StreamEvent::MigWait { cause }),
            Event::Resumed { conn, stall } => (conn, StreamEvent::Resumed { stall }),
            Event::MigrationFailed { conn, reason } => {
                (conn, StreamEvent::MigrationFailed { reason })
            }
            Event::PeerMoved {
                conn,
                new_remote,
                behind_napt,
            } => (
                conn,
                StreamEvent::PeerMoved {
                    new_remote,
                    behind_napt,
                },
            ),
            _ => return None,
        })
    }

    /// The `--events` line: its name and fields (stable names the lab reads).
    pub fn to_json(&self, conn: ConnId) -> (&'static str, serde_json::Value) {
        match self {
            StreamEvent::MigrationStarted { mode } => (
                "migration-started",
                json!({"conn": conn.0, "mode": format!("{mode:?}").to_lowercase()}),
            ),
            StreamEvent::MsynSent { attempt } => {
                ("msyn-sent", json!({"conn": conn.0, "attempt": attempt}))
            }
            StreamEvent::MigWait { cause } => (
                "mig-wait",
                json!({"conn": conn.0, "cause": format!("{cause:?}")}),
            ),
            StreamEvent::Resumed { stall } => (
                "resumed",
                json!({"conn": conn.0, "stall_ms": stall.as_secs_f64() * 1e3}),
            ),
            StreamEvent::MigrationFailed { reason } => (
                "migration-failed",
                json!({"conn": conn.0, "reason": format!("{reason:?}")}),
            ),
            StreamEvent::PeerMoved {
                new_remote,
                behind_napt,
            } => (
                "peer-moved",
                json!({"conn": conn.0, "remote": new_remote.to_string(), "behind_napt": behind_napt}),
            ),
        }
    }
}

/// What the driver tells a connection's control task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ControlCmd {
    /// The connection started a move with this local address.
    Moved(SocketAddrV4),
    /// The peer moved; the connection now sees it here.
    PeerMoved(SocketAddrV4),
    /// The connection closed.
    Closed,
}
