//! PLACEHOLDER SIGNATURES: the state-machine helper replaces this file
//! (and may split it into connection.rs, endpoint.rs, buffers, ...), keeping
//! every public item below with the same meaning.

use core::net::SocketAddrV4;

use thiserror::Error;

use crate::rand::Random;
use crate::time::{Duration, Instant};

/// RFC 9293 §3.3.2 connection states. (Migration adds MIG_SENT/MIG_WAIT later.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

/// Tunables. Defaults are sustain's choices; each field says why.
#[derive(Debug, Clone)]
pub struct Config {
    /// MSS we advertise (MTU - 40). 1460 for Ethernet.
    pub mss: u16,
    /// RFC 6298 §2.4 says 1 s; sustain defaults to 200 ms like Linux.
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub initial_rto: Duration,
    pub clock_granularity: Duration,
    pub send_buffer: usize,
    pub recv_buffer: usize,
    pub window_scaling: bool,
    pub timestamps: bool,
    pub sack: bool,
    /// Delayed-ACK timer (RFC 9293 §3.8.6.3: < 0.5 s); `None` acks every segment.
    pub delayed_ack: Option<Duration>,
    /// TIME-WAIT duration (2*MSL).
    pub time_wait: Duration,
    /// SYN retransmissions before giving up.
    pub syn_retries: u32,
    /// Data retransmissions (R2, RFC 9293 §3.8.3) before giving up.
    pub data_retries: u32,
    pub syn_backlog: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1460,
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            initial_rto: Duration::from_secs(1),
            clock_granularity: Duration::from_millis(1),
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            window_scaling: true,
            timestamps: true,
            sack: true,
            delayed_ack: Some(Duration::from_millis(40)),
            time_wait: Duration::from_secs(60),
            syn_retries: 6,
            data_retries: 15,
            syn_backlog: 128,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs exchanged and acknowledged.
    Normal,
    /// The peer sent an acceptable RST.
    Reset,
    /// SYN or data retransmissions exhausted.
    TimedOut,
    /// The application aborted.
    Aborted,
    /// A SYN was refused (RST in SYN-SENT).
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Active open completed (SYN-SENT -> ESTABLISHED).
    Connected(ConnId),
    /// A passive open completed and the connection is ready to `accept`.
    Incoming { listener: ListenerId, conn: ConnId },
    /// New in-order data (or FIN) can be read.
    Readable(ConnId),
    /// Send-buffer space became available.
    Writable(ConnId),
    /// The retransmission timer fired.
    RetransmissionTimeout { conn: ConnId, rto: Duration, backoff: u32 },
    /// The connection reached CLOSED (or TIME-WAIT counts as closed for the
    /// application: emitted once, when the application's part is done).
    Closed { conn: ConnId, reason: CloseReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TcpError {
    #[error("no such connection")]
    NoSuchConnection,
    #[error("address in use")]
    AddrInUse,
    #[error("connection is not open for sending")]
    NotOpenForSend,
    #[error("connection reset by peer")]
    Reset,
    #[error("connection timed out")]
    TimedOut,
}

/// A snapshot for logs, tests and the `--events` file.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: State,
    pub srtt: Option<Duration>,
    pub rto: Duration,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmitted_segments: u64,
    pub timeouts: u64,
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets that failed to parse (checksum, truncation, bad options).
    pub malformed: u64,
    /// Segments for ports we do not own, ignored.
    pub not_ours: u64,
    pub resets_sent: u64,
    pub challenge_acks: u64,
    pub retransmitted_segments: u64,
}

pub struct Endpoint {
    _private: (),
}

impl Endpoint {
    pub fn new(config: Config, rng: Box<dyn Random + Send>) -> Endpoint {
        let _ = (config, rng);
        todo!("state-machine helper")
    }
    /// Passive open on `local` (0.0.0.0 matches any local address).
    pub fn listen(&mut self, local: SocketAddrV4) -> Result<ListenerId, TcpError> {
        let _ = local;
        todo!()
    }
    pub fn accept(&mut self, listener: ListenerId) -> Option<ConnId> {
        let _ = listener;
        todo!()
    }
    /// Active open; the SYN goes out on the next `poll_transmit`.
    pub fn connect(&mut self, now: Instant, local: SocketAddrV4, remote: SocketAddrV4) -> Result<ConnId, TcpError> {
        let _ = (now, local, remote);
        todo!()
    }
    /// Queue bytes; returns how many fit in the send buffer.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TcpError> {
        let _ = (conn, data);
        todo!()
    }
    /// Read in-order bytes; `Ok(0)` when none are available.
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        let _ = (conn, buf);
        todo!()
    }
    /// The peer's FIN has been received and every byte before it read.
    pub fn recv_finished(&self, conn: ConnId) -> bool {
        let _ = conn;
        todo!()
    }
    /// Free space in the send buffer.
    pub fn send_capacity(&self, conn: ConnId) -> usize {
        let _ = conn;
        todo!()
    }
    /// Bytes queued but not yet acknowledged.
    pub fn send_queued(&self, conn: ConnId) -> usize {
        let _ = conn;
        todo!()
    }
    /// Graceful close: FIN after the queued data.
    pub fn close(&mut self, conn: ConnId) -> Result<(), TcpError> {
        let _ = conn;
        todo!()
    }
    /// Abort with RST.
    pub fn abort(&mut self, conn: ConnId) {
        let _ = conn;
        todo!()
    }
    pub fn state(&self, conn: ConnId) -> Option<State> {
        let _ = conn;
        todo!()
    }
    pub fn info(&self, conn: ConnId) -> Option<ConnInfo> {
        let _ = conn;
        todo!()
    }
    /// Local ports owned by listeners and connections (the runtime filters on them).
    pub fn owns_port(&self, port: u16) -> bool {
        let _ = port;
        todo!()
    }
    pub fn stats(&self) -> &Stats {
        todo!()
    }
    /// One whole IPv4 packet from the network.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let _ = (now, packet);
        todo!()
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// Earliest instant `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Writes the next IPv4 packet to send into `buf` (>= 65535 bytes is
    /// always enough) and returns its length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let _ = (now, buf);
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }
}
