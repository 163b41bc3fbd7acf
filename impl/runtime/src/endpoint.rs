//! [`Endpoint`]: the library's front door. One per host (network namespace):
//! it owns the datapath (packet socket, raw socket, GSO sender), the guard rules, the address watcher, the clock
//! and the sans-IO core, runs the driver task, and hands out [`Stream`]s
//! and [`Listener`]s for any number of ports and connections.

use std::future::poll_fn;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use sustain_core::tcp::{Config, ConnId, Endpoint as CoreEndpoint, ListenerId, Stats};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::driver;
use crate::error::{ConnectionError, EndpointError, OpenError};
use crate::events::EventLog;
use crate::gso::GsoSender;
use crate::netwatch::{self, NetEvents};
use crate::os_random::OsRandom;
use crate::packet_rx::PacketRx;
use crate::ports::Ports;
use crate::raw_socket::RawSocket;
use crate::rst_guard::RstGuard;
use crate::shared::{ConnSlot, ListenerSlot, Shared, State};
use crate::stream::Stream;
use crate::SUSTAIN_MARK;

/// How an [`Endpoint`] behaves.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// The core's TCP and migration settings (mode, timers, buffers).
    pub tcp: Config,
    /// Append JSON-lines events (connected, closed, moves) to this file.
    pub events: Option<PathBuf>,
    /// MSS for connections this endpoint opens: `None` derives it from the
    /// route's MTU towards the peer (listeners advertise `tcp.mss`).
    pub connect_mss: Option<u16>,
    /// The mobility information server: every migratable connection
    /// registers with it, reports this end's moves, and follows its notices
    /// (`mobility.rs`). `None`: moves as without a server.
    pub server: Option<SocketAddrV4>,
}

/// A sustain endpoint. Cheap to clone; the driver runs until the last
/// clone is dropped and every connection and listener has ended, or until
/// [`Endpoint::shutdown`].
///
/// Needs root, or CAP_NET_RAW and CAP_NET_ADMIN: it receives real segments
/// from a packet socket (or a raw socket), sends them on a raw socket and a
/// packet socket, and installs one narrow iptables rule per owned port so
/// the kernel's TCP neither handles nor resets our connections
/// (`rst_guard.rs`). The rules go when the
/// endpoint stops; an application should call [`Endpoint::shutdown`] on
/// SIGINT/SIGTERM (rules of a killed process are swept by the next
/// endpoint).
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = sustain::Endpoint::new(sustain::EndpointConfig::default())?;
/// // An echo server on port 7 ...
/// let listener = endpoint.listen("0.0.0.0:7".parse()?).await?;
/// tokio::spawn(async move {
///     while let Ok(mut stream) = listener.accept().await {
///         tokio::spawn(async move {
///             let mut buf = vec![0; 4096];
///             while let Ok(n @ 1..) = stream.read(&mut buf).await {
///                 if stream.write_all(&buf[..n]).await.is_err() {
///                     break;
///                 }
///             }
///         });
///     }
/// });
/// // ... and a client that survives its address changing.
/// let mut stream = endpoint.connect("192.0.2.10:7".parse()?).await?;
/// stream.write_all(b"hello").await?;
/// let mut reply = [0; 5];
/// stream.read_exact(&mut reply).await?;
/// assert_eq!(&reply, b"hello");
/// stream.shutdown().await?;
/// endpoint.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Endpoint {
    shared: Arc<Shared>,
}

impl Clone for Endpoint {
    fn clone(&self) -> Endpoint {
        self.shared.lock().endpoint_handles += 1;
        Endpoint {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.endpoint_handles = st.endpoint_handles.saturating_sub(1);
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl Endpoint {
    /// Opens the datapath (the packet socket and GSO sender where they work,
    /// the raw socket always), sweeps guard rules of dead processes,
    /// subscribes to address and route events and spawns the driver on the
    /// current tokio runtime.
    pub fn new(config: EndpointConfig) -> Result<Endpoint, EndpointError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EndpointError::NoRuntime);
        }
        let log = EventLog::open(config.events.as_deref()).map_err(EndpointError::Events)?;
        let mut log = log;
        let socket = RawSocket::open(SUSTAIN_MARK)?;
        // Nothing is owned yet: receive nothing (with the packet socket,
        // the raw socket only ever sends).
        socket
            .set_port_filter(&[])
            .map_err(|e| EndpointError::Netlink(std::io::Error::other(e)))?;
        let mut guard = RstGuard::new(SUSTAIN_MARK)?;
        let rcvbuf = crate::packet_rx::rcvbuf_for_window(config.tcp.recv_buffer);
        let packet = open_packet_rx(&mut guard, rcvbuf);
        let clock = Clock::new();
        let rx = match &packet {
            Ok(_) => "packet-socket",
            Err(_) => "raw-socket",
        };
        let gso = packet.as_ref().ok().and_then(|_| open_gso());
        let tx = if gso.is_some() {
            "raw-socket+gso"
        } else {
            "raw-socket"
        };
        let fields = match &packet {
            // rcvbuf: what the kernel granted (twice what was asked, its
            // bookkeeping included).
            Ok(p) => serde_json::json!({"rx": rx, "tx": tx, "rcvbuf": p.rcvbuf(),
                "detail": "AF_PACKET socket read with recvmmsg, raw PREROUTING drop per owned port"}),
            Err(why) => serde_json::json!({"rx": rx, "tx": tx, "fallback": why}),
        };
        if let Err(e) = log.record(clock.now(), "datapath", fields) {
            tracing::warn!("cannot write the events file: {e}");
        }
        let packet = packet.ok();
        let net = NetEvents::open().map_err(EndpointError::Netlink)?;
        let addresses = netwatch::local_addresses().map_err(EndpointError::Netlink)?;
        let mut tcp = config.tcp.clone();
        // With GSO, data segments leave the core with partial checksums: the
        // kernel completes a super-segment's per segment (gso.rs), and the raw
        // socket completes whatever it sends (raw_socket.rs).
        tcp.partial_checksums = gso.is_some();
        let core = CoreEndpoint::new(tcp, Box::new(OsRandom::new()));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(core, log, addresses)),
            wake: Notify::new(),
            socket,
            packet,
            gso,
            net,
            clock,
            ports: Mutex::new(Ports::new(guard)),
            stopped: Notify::new(),
            connect_mss: config.connect_mss,
            server: config.server,
        });
        tokio::spawn(driver::run(shared.clone()));
        Ok(Endpoint { shared })
    }

    /// Opens a connection to `remote` from the address the kernel's routing
    /// picks, on a free port.
    pub async fn connect(&self, remote: SocketAddrV4) -> Result<Stream, OpenError> {
        self.connect_from(None, remote).await
    }

    /// Opens a connection from `bind` (unspecified address: the route's
    /// source; port 0: a free port). The port is reserved on every address
    /// unless `bind` names one, so it stays ours after a move.
    pub async fn connect_from(
        &self,
        bind: Option<SocketAddrV4>,
        remote: SocketAddrV4,
    ) -> Result<Stream, OpenError> {
        let (ip, mtu) =
            driver::local_for(bind, remote).map_err(|e| OpenError::NoRoute(remote, e))?;
        let reserve_ip = match bind {
            Some(b) if !b.ip().is_unspecified() => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let want = SocketAddrV4::new(reserve_ip, bind.map_or(0, |b| b.port()));
        let port = self.open_port(want).await?;
        let local = SocketAddrV4::new(ip, port);
        let mss = self
            .shared
            .connect_mss
            .unwrap_or_else(|| (mtu.saturating_sub(40)).clamp(536, 65495) as u16);
        let conn = {
            let mut st = self.shared.lock();
            let now = self.shared.clock.now();
            match st.core.connect_with_mss(now, local, remote, mss) {
                Ok(conn) => {
                    st.conns.insert(
                        conn,
                        ConnSlot {
                            port,
                            handle: true,
                            ..ConnSlot::default()
                        },
                    );
                    conn
                }
                Err(e) => {
                    drop(st);
                    self.release_port(port);
                    return Err(e.into());
                }
            }
        };
        self.shared.wake.notify_one();
        // The stream exists from here on: dropping the future aborts via
        // the stream's Drop (a graceful close of a half-open connection).
        let stream = Stream::new(self.shared.clone(), conn);
        let opened = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.stopped {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            }
            let Some(slot) = st.conns.get_mut(&conn) else {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            };
            if let Some(reason) = slot.closed {
                return Poll::Ready(Err(
                    ConnectionError::from_reason(reason).unwrap_or(ConnectionError::Aborted)
                ));
            }
            if slot.connected {
                return Poll::Ready(Ok(()));
            }
            slot.wait_state(cx.waker());
            Poll::Pending
        })
        .await;
        opened?;
        Ok(stream)
    }

    /// Accepts connections on `local` (address 0.0.0.0: any; port 0: a
    /// free port, see [`Listener::local_addr`]).
    pub async fn listen(&self, local: SocketAddrV4) -> Result<Listener, OpenError> {
        let port = self.open_port(local).await?;
        let bound = SocketAddrV4::new(*local.ip(), port);
        let id = {
            let mut st = self.shared.lock();
            match st.core.listen(bound) {
                Ok(id) => {
                    st.listeners.insert(
                        id,
                        ListenerSlot {
                            port,
                            queue: Default::default(),
                            waker: None,
                        },
                    );
                    id
                }
                Err(e) => {
                    drop(st);
                    self.release_port(port);
                    return Err(e.into());
                }
            }
        };
        Ok(Listener {
            shared: self.shared.clone(),
            id,
            local: bound,
        })
    }

    /// Appends an application event to the `--events` log (with the
    /// same `time` and `t` stamps as the endpoint's own events).
    pub fn record_event(&self, name: &str, fields: serde_json::Value) {
        let now = self.shared.clock.now();
        self.shared.lock().record(now, name, fields);
    }

    /// The core's endpoint-wide counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().core.stats().clone()
    }

    /// Packets the kernel refused for lack of a route so far (a move under
    /// way); their data went back to the core to be sent again.
    pub fn send_drops(&self) -> u64 {
        self.shared.lock().send_drops
    }

    /// Sends the kernel refused for lack of buffer space so far, each
    /// retried after a short hold (nothing is lost).
    pub fn send_retries(&self) -> u64 {
        self.shared.lock().send_retries
    }

    /// Packets the kernel dropped so far because this endpoint's packet
    /// socket was full (0 on the raw-socket fallback): bursts of loss the
    /// connections see like any other.
    pub fn rx_drops(&self) -> u64 {
        let fresh = self
            .shared
            .packet
            .as_ref()
            .and_then(|r| r.take_drops().ok())
            .map_or(0, u64::from);
        let mut st = self.shared.lock();
        st.rx_drops += fresh;
        st.rx_drops
    }

    /// Aborts every connection (RST), stops every listener, lets the last
    /// segments leave, removes the RST-guard rules and waits for the
    /// driver to end. Streams answer `EndpointClosed` afterwards.
    pub async fn shutdown(&self) {
        let stopped = self.shared.stopped.notified();
        {
            let mut st = self.shared.lock();
            if st.stopped {
                return;
            }
            st.shutdown = true;
        }
        self.shared.wake.notify_one();
        stopped.await;
    }

    /// Reserves and guards a port off the runtime's threads (iptables),
    /// then lets it through the socket's filter.
    async fn open_port(&self, want: SocketAddrV4) -> Result<u16, OpenError> {
        let shared = self.shared.clone();
        let port = tokio::task::spawn_blocking(move || shared.lock_ports().open(want))
            .await
            .map_err(|e| OpenError::Port(want.port(), std::io::Error::other(e)))??;
        if let Err(e) = self.shared.refresh_filter() {
            self.release_port(port);
            return Err(OpenError::Filter(e));
        }
        Ok(port)
    }

    fn release_port(&self, port: u16) {
        if self.shared.lock_ports().release(port) {
            self.shared.remove_port_later(port);
        }
    }
}

/// `SUSTAIN_DATAPATH=raw` makes an endpoint receive on its raw socket even
/// where the packet socket works (comparisons, and the fallback's tests).
pub const DATAPATH_ENV: &str = "SUSTAIN_DATAPATH";

/// The receiving packet socket with ingress drops, or why the endpoint
/// falls back to raw-socket receive (said loudly: a warning, and the
/// `datapath` event). Its receive buffer is `rcvbuf` bytes
/// ([`crate::packet_rx::rcvbuf_for_window`] of the receive buffer).
pub(crate) fn open_packet_rx(guard: &mut RstGuard, rcvbuf: usize) -> Result<PacketRx, String> {
    if std::env::var(DATAPATH_ENV).is_ok_and(|v| v == "raw") {
        let why = format!("{DATAPATH_ENV}=raw");
        tracing::warn!("receiving on the raw socket (fallback datapath): {why}");
        return Err(why);
    }
    let packet = PacketRx::open(rcvbuf).and_then(|packet| {
        guard.use_ingress_drop().map(|()| packet).map_err(|e| {
            crate::packet_rx::PacketRxError::Setup {
                what: "iptables raw table (ingress drop rules)",
                source: std::io::Error::other(e),
            }
        })
    });
    match packet {
        Ok(packet) => {
            tracing::info!(
                rcvbuf = packet.rcvbuf(),
                "receiving from a packet socket (AF_PACKET, recvmmsg); owned ports are dropped \
                 in raw PREROUTING, so the kernel's TCP never sees them"
            );
            Ok(packet)
        }
        Err(e) => {
            let why = e.to_string();
            tracing::warn!("receiving on the raw socket (fallback datapath): {why}");
            Err(why)
        }
    }
}

/// Bulk data leaves as GSO super-segments (`gso.rs`) unless
/// `SUSTAIN_GSO=off`, which sends every segment on the raw socket. GSO was
/// opt-in while, with it, whole flights went unanswered under random loss
/// until the RTO and the lab's move scenarios missed budgets. The first
/// was one lost ACK per small flight with no probe that could repair it
/// (the core's `tcp/tlp.rs`), not GSO. The second was GSO's: a busy
/// driver looked for route changes only when idle, and the peer's segments
/// on the old uplink taught its next hop again while a move took the link
/// apart, so data went out by a link about to go; now the GSO sender reads
/// the process's rtnetlink listener before every send and a next hop is used only
/// while the kernel routes its address pair (`gso.rs`).
pub const GSO_ENV: &str = "SUSTAIN_GSO";

/// The GSO sender ([`crate::gso`]), unless turned off or unavailable.
pub(crate) fn open_gso() -> Option<GsoSender> {
    if std::env::var(GSO_ENV).is_ok_and(|v| v == "off") {
        tracing::info!("every segment leaves on the raw socket ({GSO_ENV}=off)");
        return None;
    }
    match GsoSender::open(SUSTAIN_MARK) {
        Ok(g) => {
            tracing::info!("bulk data leaves as GSO super-segments (AF_PACKET, PACKET_VNET_HDR)");
            Some(g)
        }
        Err(e) => {
            tracing::warn!("no GSO sender ({e}): every segment leaves on the raw socket");
            None
        }
    }
}

/// Accepts connections on one local address. Dropping it stops listening;
/// connections already accepted go on.
pub struct Listener {
    shared: Arc<Shared>,
    id: ListenerId,
    local: SocketAddrV4,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// The address listened on, with the port actually bound.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The next established connection.
    pub async fn accept(&self) -> Result<Stream, ConnectionError> {
        let conn: ConnId = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.stopped {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            }
            let Some(slot) = st.listeners.get_mut(&self.id) else {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            };
            match slot.queue.pop_front() {
                Some(conn) => Poll::Ready(Ok(conn)),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        Ok(Stream::new(self.shared.clone(), conn))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.core.unlisten(self.id);
        let Some(slot) = st.listeners.remove(&self.id) else {
            return;
        };
        // Accepted but never taken: close them as a dropped stream would.
        for conn in slot.queue {
            if let Some(c) = st.conns.get_mut(&conn) {
                c.handle = false;
            }
            st.core.abort(conn);
        }
        drop(st);
        if self.shared.lock_ports().release(slot.port) {
            self.shared.remove_port_later(slot.port);
        }
        self.shared.wake.notify_one();
    }
}
