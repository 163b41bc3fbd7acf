//! The types the TCP layer shares between its modules and with the
//! runtime: configuration, ids, states, events, errors and counters.
//! Re-exported as `sustain_core::tcp::*`; [`connection`](super::connection)
//! and [`endpoint`](super::endpoint) both depend on this module and never on
//! each other's definitions of these.

use core::net::SocketAddrV4;

use thiserror::Error;

use super::congestion::CongestionKind;
use crate::auth::Token;
use crate::time::Duration;
use crate::wire::SeqNumber;

/// RFC 9293 §3.3.2 connection states plus sustain's two migration states
/// (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a SYN.
    Listen,
    /// SYN sent, waiting for the SYN-ACK.
    SynSent,
    /// SYN received and SYN-ACK sent, waiting for its ACK.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// FIN sent, waiting for its ACK.
    FinWait1,
    /// Our FIN acknowledged, waiting for the peer's FIN.
    FinWait2,
    /// The peer's FIN received, waiting for the application to close.
    CloseWait,
    /// Both ends sent FIN; ours not yet acknowledged.
    Closing,
    /// The peer's FIN received and ours sent, waiting for its ACK.
    LastAck,
    /// Waiting 2*MSL before forgetting the connection.
    TimeWait,
    /// MIG_SENT: an MSYN is out and unanswered. The underlying RFC 9293
    /// state (one of ESTABLISHED .. LAST-ACK) resumes with the MSYN-ACK.
    MigSent,
    /// MIG_WAIT: no usable local address, or the MSYNs (or MSYN-ACKs) went
    /// unanswered. The connection is kept until the peer's MSYN, a new local
    /// address, a peer location notice, or [`Config::mig_wait`] runs out.
    MigWait,
}

impl State {
    /// The state's name as RFC 9293 §3.3.2 and PROTOCOL.md §8 write it.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
            State::MigSent => "MIG_SENT",
            State::MigWait => "MIG_WAIT",
        }
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How this endpoint behaves towards migration (DESIGN.md: `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Negotiate with Migrate-Permit; move with the MSYN handshake (the
    /// newer paper, PROTOCOL.md §6).
    #[default]
    Sustain,
    /// Negotiate with Migrate-Permit; move by putting an authenticated
    /// Address-Update on segments from the new address (the older paper,
    /// PROTOCOL.md §9).
    Continuation,
    /// Plain TCP: no sustain options are sent or understood, exactly like a
    /// legacy stack. Connections end with `AddressLost` when their address
    /// goes away.
    Plain,
}

/// Why a connection entered MIG_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigWaitCause {
    /// The runtime reported the connection's local address gone.
    AddressLost,
    /// N MSYN retransmissions went unanswered.
    MsynUnanswered,
    /// The peer (or a proxy) refused the MSYN with an RST (PROTOCOL.md §6.8).
    Refused,
    /// As responder: N MSYN-ACK retransmissions were never confirmed.
    ConfirmMissing,
}

/// Why a move failed and took the connection with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationFailure {
    /// MIG_WAIT lasted [`Config::mig_wait`] without resumption.
    MigWaitExpired,
    /// Continuation mode: no segment came back to the new address after
    /// [`Config::address_update_retries`] retransmissions.
    AddressUpdateUnanswered,
    /// The address went away under a connection that cannot move (plain
    /// TCP peer, `Mode::Plain`, or still in the opening handshake).
    NotMigratable,
}

/// Tunables. Defaults are sustain's choices; each field says why.
#[derive(Debug, Clone)]
pub struct Config {
    /// MSS we advertise (MTU - 40). 1460 for Ethernet.
    pub mss: u16,
    /// RFC 6298 §2.4 says 1 s; sustain defaults to 200 ms like Linux.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout (RFC 6298 §2.5: at least 60 s).
    pub max_rto: Duration,
    /// RTO before the first RTT sample (RFC 6298 §2.1: 1 s).
    pub initial_rto: Duration,
    /// Clock granularity G in the RTO formula (RFC 6298 §2.3).
    pub clock_granularity: Duration,
    /// Send buffer in bytes: the most unacknowledged plus unsent data held.
    /// The application may fill it only as far as the congestion window
    /// needs (unacknowledged data plus twice cwnd waiting, at least 4 MiB),
    /// so a larger one costs memory only on paths that use it. Storage
    /// grows as data is queued.
    pub send_buffer: usize,
    /// Receive buffer; also the largest window advertised (at most 1 GiB).
    /// Storage grows as data arrives that the application has not read or
    /// that is out of order. Default 16 MiB (window scale 9), as both
    /// buffers: on a 40 ms path with 3 % loss, where holes keep data above
    /// them for several round trips, 16 MiB moved 391-481 Mbit/s in the lab
    /// against Linux BBR's 225-233 in the same run, where 4 MiB moved
    /// 143-162 (3 runs each; README, "Benchmark"). Linux's own receive
    /// buffer autotunes up to `tcp_rmem`'s maximum, 32 MiB on that machine.
    pub recv_buffer: usize,
    /// Offer RFC 7323 window scaling.
    pub window_scaling: bool,
    /// Offer RFC 7323 timestamps.
    pub timestamps: bool,
    /// Offer RFC 2018 SACK.
    pub sack: bool,
    /// Delayed-ACK timer (RFC 9293 §3.8.6.3: < 0.5 s); `None` acks every segment.
    pub delayed_ack: Option<Duration>,
    /// TIME-WAIT duration (2*MSL).
    pub time_wait: Duration,
    /// SYN retransmissions before giving up.
    pub syn_retries: u32,
    /// Data retransmissions (R2, RFC 9293 §3.8.3) before giving up; also
    /// the limit of consecutive unanswered zero-window probes.
    pub data_retries: u32,
    /// Default listener backlog: SYN-RECEIVED entries plus established
    /// connections not yet accepted.
    pub syn_backlog: usize,
    /// RFC 5961 §7: challenge ACKs per second for the whole endpoint
    /// (Linux historically used 1000 per second).
    pub challenge_ack_limit: u32,
    /// Sustain, continuation or plain TCP (default sustain).
    pub mode: Mode,
    /// Ceiling of the first MSYN, MSYN-ACK and Address-Update
    /// retransmission interval T0 = min(ceiling, RTO before the move)
    /// (PROTOCOL.md §8.2): 1 s; 3 s in the paper-faithful profile.
    pub mig_t0_ceiling: Duration,
    /// N: MSYN (and MSYN-ACK) retransmissions before MIG_WAIT (4: five
    /// MSYNs in all).
    pub msyn_retries: u32,
    /// W: how long MIG_WAIT keeps a connection (120 s: a laptop lid or a
    /// tunnel).
    pub mig_wait: Duration,
    /// Address-Update retransmissions before the connection is dropped
    /// (4: with T0 = 1 s the connection goes 31 s after the move).
    pub address_update_retries: u32,
    /// PROTOCOL.md §11.8: MAC verifications per second per connection...
    pub mac_verifications_per_connection: u32,
    /// ...and for the whole endpoint; beyond either, MSYNs and
    /// Address-Updates are dropped unverified.
    pub mac_verifications_per_endpoint: u32,
    /// The congestion controller of each new connection (default BBR).
    ///
    /// Chosen from the simulated issue-12 grid (tests/loss_sim.rs,
    /// `compare_controllers_on_the_issue_12_grid`, 32 MiB): without loss
    /// BBR finishes within 4 % of CUBIC on every path (0.73 s vs 0.70 s at
    /// 20 ms one way unlimited, 3.09 s vs 3.05 s at 100 Mbit/s); with random
    /// loss on a long path CUBIC and NewReno halve their window on every
    /// loss and BBR does not: at 20 ms one way and 1 % loss each way
    /// 1.1-3.2 s against CUBIC's 67 s, at 3 % 1.5-4.2 s against 134-139 s;
    /// at 30 ms RTT and 1 % (the lab path) 0.82-0.87 s against CUBIC's
    /// 50 s (Linux in the lab: BBR 0.94 s, CUBIC 62 s). No cell has BBR
    /// below 0.9x CUBIC. The price: BBR's Startup overshoots a drop-tail
    /// queue shallower than the BDP (360 drops at 20 ms / 100 Mbit/s /
    /// 256 KiB, where HyStart++ leaves slow start without one) and it
    /// takes a larger share than CUBIC of a bottleneck it shares with
    /// CUBIC flows (BBRv3's known coexistence trade-off). CUBIC stays one
    /// setting away.
    pub congestion: CongestionKind,
    /// Pace data at the controller's rate (cwnd / SRTT when it has no
    /// model of its own); the driver follows `poll_timeout` (default on).
    pub pacing: bool,
    /// Data segments leave with the TCP checksum partial (the pseudo-header
    /// sum, CHECKSUM_PARTIAL) and [`crate::Transmit::checksum_partial`] set,
    /// for a datapath that completes it anyway: the kernel's software GSO
    /// computes every segment's checksum of a super-segment itself, so a
    /// full one computed here is thrown away. The datapath must complete
    /// every such packet it sends another way
    /// ([`crate::wire::complete_ipv4_tcp_checksum`]). Off by default: every
    /// packet leaves `poll_transmit` ready for the wire. `sustain::Endpoint`
    /// sets it itself, on where it sends with GSO.
    pub partial_checksums: bool,
    /// RFC 9293 §3.8.4 keep-alive idle time for every connection; `None`
    /// (the default, MUST-25) leaves plain connections without them.
    pub keepalive_idle: Option<Duration>,
    /// Migratable connections probe an idle peer after `mig_wait` even
    /// when `keepalive_idle` is `None` (PROTOCOL.md §8.2): a peer that
    /// vanished is detected within W + probes x interval. Default on.
    pub mig_keepalive: bool,
    /// Between keep-alive probes (10 s).
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is closed with
    /// `KeepaliveTimedOut` (4).
    pub keepalive_probes: u32,
}

impl Config {
    /// The profile that reproduces the papers' timings (DESIGN.md): a 3 s
    /// minimum (and initial) RTO and a 3 s ceiling for T0. Everything else
    /// is the default.
    pub fn paper_faithful() -> Config {
        Config {
            min_rto: Duration::from_secs(3),
            initial_rto: Duration::from_secs(3),
            mig_t0_ceiling: Duration::from_secs(3),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1460,
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            initial_rto: Duration::from_secs(1),
            clock_granularity: Duration::from_millis(1),
            send_buffer: 16 << 20,
            recv_buffer: 16 << 20,
            window_scaling: true,
            timestamps: true,
            sack: true,
            delayed_ack: Some(Duration::from_millis(40)),
            time_wait: Duration::from_secs(60),
            syn_retries: 6,
            data_retries: 15,
            syn_backlog: 128,
            challenge_ack_limit: 1000,
            mode: Mode::Sustain,
            mig_t0_ceiling: Duration::from_secs(1),
            msyn_retries: 4,
            mig_wait: Duration::from_secs(120),
            address_update_retries: 4,
            mac_verifications_per_connection: 20,
            mac_verifications_per_endpoint: 10_000,
            congestion: CongestionKind::default(),
            pacing: true,
            partial_checksums: false,
            keepalive_idle: None,
            mig_keepalive: true,
            keepalive_interval: Duration::from_secs(10),
            keepalive_probes: 4,
        }
    }
}

/// Names one connection of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// Names one listener of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u32);

/// Why a connection closed.
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
    /// A move did not complete: MIG_WAIT expired, or (continuation mode)
    /// the Address-Update was never answered.
    MigrationTimedOut,
    /// The local address went away under a connection that cannot move
    /// (plain TCP, or still opening).
    AddressLost,
    /// Keep-alive probes went unanswered (RFC 9293 §3.8.4): the peer is
    /// gone (e.g. it moved onto a path that strips sustain's options).
    KeepaliveTimedOut,
}

/// What happened on an endpoint, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Active open completed (SYN-SENT -> ESTABLISHED).
    Connected(ConnId),
    /// A passive open completed and the connection is ready to `accept`.
    Incoming {
        /// The listener that accepted it.
        listener: ListenerId,
        /// The new connection.
        conn: ConnId,
    },
    /// New in-order data (or FIN) can be read.
    Readable(ConnId),
    /// Send-buffer space became available.
    Writable(ConnId),
    /// The retransmission timer fired.
    RetransmissionTimeout {
        /// The connection.
        conn: ConnId,
        /// The RTO now in force (after backoff).
        rto: Duration,
        /// Consecutive RTO backoffs since the last RTT sample.
        backoff: u32,
    },
    /// The connection reached CLOSED (or TIME-WAIT counts as closed for the
    /// application: emitted once, when the application's part is done).
    /// See the module documentation for exactly when.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why it closed.
        reason: CloseReason,
    },
    /// This end started a move (new local address, explicit `migrate`, or
    /// a peer location notice): `mode` is `Sustain` (MSYN) or
    /// `Continuation` (Address-Update).
    MigrationStarted {
        /// The connection moving.
        conn: ConnId,
        /// How it moves.
        mode: Mode,
    },
    /// An MSYN left; `attempt` counts from 1 within the current move.
    MsynSent {
        /// The connection moving.
        conn: ConnId,
        /// 1 for the first MSYN of this move, then each retransmission.
        attempt: u32,
    },
    /// The connection entered MIG_WAIT (or, for `AddressLost`, holds there
    /// until an address appears).
    MigWait {
        /// The connection waiting.
        conn: ConnId,
        /// Why it waits.
        cause: MigWaitCause,
    },
    /// A stalled connection is sending again: this end's move completed
    /// (MSYN-ACK accepted, Address-Update answered) or, after being in
    /// MIG_SENT / MIG_WAIT itself, it accepted and confirmed the peer's
    /// MSYN. `stall` runs from the address loss (or the start of the move
    /// when no loss was reported) to now.
    Resumed {
        /// The connection sending again.
        conn: ConnId,
        /// How long it was stalled.
        stall: Duration,
    },
    /// A move failed and the connection is closing; `Closed` follows.
    MigrationFailed {
        /// The connection that failed to move.
        conn: ConnId,
        /// Why the move failed.
        reason: MigrationFailure,
    },
    /// The peer moved: an authenticated MSYN or Address-Update retargeted
    /// the connection to `new_remote` (as observed, after any NAPT).
    /// `behind_napt`: the peer's Migrate-Permit named another address.
    PeerMoved {
        /// The connection retargeted.
        conn: ConnId,
        /// The peer's new address and port, as observed.
        new_remote: SocketAddrV4,
        /// The Migrate-Permit named an address other than `new_remote`.
        behind_napt: bool,
    },
}

/// Why an endpoint operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TcpError {
    /// The connection id names no connection.
    #[error("no such connection")]
    NoSuchConnection,
    /// The local address and port are taken.
    #[error("address in use")]
    AddrInUse,
    /// This end already sent its FIN (or is closing): nothing more can be sent.
    #[error("connection is not open for sending")]
    NotOpenForSend,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// Retransmissions were exhausted.
    #[error("connection timed out")]
    TimedOut,
    /// A move did not complete in time.
    #[error("connection lost: a move did not complete in time")]
    MigrationTimedOut,
    /// The local address went away and the connection cannot move.
    #[error("connection lost: its local address went away and it cannot move")]
    AddressLost,
    /// The connection cannot move (plain TCP peer, plain mode, or not established).
    #[error("connection cannot move (plain TCP peer, plain mode, or not established)")]
    NotMigratable,
}

/// A snapshot for logs, tests and the `--events` file.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Local address and port.
    pub local: SocketAddrV4,
    /// Remote address and port (as observed, after any NAPT).
    pub remote: SocketAddrV4,
    /// Current state.
    pub state: State,
    /// Smoothed RTT (RFC 6298), once sampled.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Congestion window in bytes.
    pub cwnd: usize,
    /// Slow-start threshold in bytes.
    pub ssthresh: usize,
    /// Payload bytes sent for the first time.
    pub bytes_sent: u64,
    /// Payload bytes delivered in order to the receive buffer.
    pub bytes_received: u64,
    /// Segments retransmitted (timeouts, fast retransmits, probes).
    pub retransmitted_segments: u64,
    /// Retransmission timeouts (SYN and data).
    pub timeouts: u64,
    /// Entries into fast retransmit / loss recovery.
    pub fast_retransmits: u64,
    /// Zero-window probes sent (RFC 9293 §3.8.6.1).
    pub zero_window_probes: u64,
    /// Peer's current window (scaled).
    pub snd_wnd: usize,
    /// Free receive-buffer space.
    pub rcv_wnd: usize,
    /// Sender MSS used for congestion control.
    pub smss: usize,
    /// (peer's shift, our shift) when RFC 7323 window scaling is on.
    pub window_scaling: Option<(u8, u8)>,
    /// RFC 7323 timestamps negotiated.
    pub timestamps: bool,
    /// RFC 2018 SACK negotiated.
    pub sack: bool,
    /// SND.UNA, the highest sequence number sent plus one, and RCV.NXT.
    pub snd_una: SeqNumber,
    /// The highest sequence number sent plus one (SND.MAX).
    pub snd_max: SeqNumber,
    /// The next sequence number expected from the peer (RCV.NXT).
    pub rcv_nxt: SeqNumber,
    /// In RFC 6675 / RFC 6582 loss recovery.
    pub in_recovery: bool,
    /// Both SYNs carried a full Migrate-Permit (PROTOCOL.md §6.1).
    pub migratable: bool,
    /// Token of our key (names this connection in the peer's options) and
    /// of the peer's key, once migratable.
    pub local_token: Option<Token>,
    /// The token of the peer's key, once migratable.
    pub remote_token: Option<Token>,
    /// Moves this end made that completed.
    pub migrations: u64,
    /// Moves of the peer this end accepted.
    pub peer_moves: u64,
    /// MSYNs sent (PROTOCOL.md §6.2).
    pub msyns_sent: u64,
    /// MSYN-ACKs sent (PROTOCOL.md §6.3).
    pub msyn_acks_sent: u64,
    /// Forged or replayed MSYNs / Address-Updates naming this connection
    /// that were dropped (bad MAC, stale or misplaced request number).
    pub forged_dropped: u64,
    /// As responder: the current path has been confirmed (PROTOCOL.md §6.5).
    pub path_confirmed: bool,
    /// The peer's last MSYN came through a NAPT (Permit != observed source).
    pub peer_behind_napt: bool,
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Packets handed to the endpoint.
    pub packets_in: u64,
    /// Packets the endpoint emitted.
    pub packets_out: u64,
    /// Packets that failed to parse (checksum, truncation, bad options).
    pub malformed: u64,
    /// Segments for ports we do not own, ignored.
    pub not_ours: u64,
    /// RSTs sent.
    pub resets_sent: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Segments retransmitted.
    pub retransmitted_segments: u64,
    /// Challenge ACKs not sent because of the RFC 5961 §7 rate limit.
    pub challenge_acks_suppressed: u64,
    /// SYNs dropped because the listener's backlog was full.
    pub syn_backlog_drops: u64,
    /// Acceptable RSTs that closed a connection.
    pub resets_received: u64,
    /// Segments dropped by PAWS (RFC 7323 §5).
    pub paws_drops: u64,
    /// Segments dropped for lacking timestamps once negotiated (RFC 7323 §3.2).
    pub missing_timestamp_drops: u64,
    /// Loss recoveries entered (fast retransmits).
    pub fast_retransmits: u64,
    /// Of which RFC 6675 SACK-based.
    pub sack_recoveries: u64,
    /// Of which RFC 6582 NewReno.
    pub newreno_recoveries: u64,
    /// Retransmission-timer expirations.
    pub timeouts: u64,
    /// RFC 8985 §7 tail loss probes sent.
    pub tlp_probes: u64,
    /// Probes that repaired a tail loss (RFC 8985 §7.4).
    pub tlp_repairs: u64,
    /// ACKs carrying a D-SACK (RFC 2883).
    pub dsacks_received: u64,
    /// Window reductions undone as spurious (RFC 3708, RFC 3522).
    pub spurious_undos: u64,
    /// Zero-window probes sent (RFC 9293 §3.8.6.1).
    pub zero_window_probes: u64,
    /// Connections closed with `CloseReason::TimedOut` (R1/R2 exhausted).
    pub connections_timed_out: u64,
    /// Control segments (resets) dropped because too many were queued.
    pub control_dropped: u64,

    // Migration (PROTOCOL.md §13.4).
    /// Segments with malformed sustain options (PROTOCOL.md §3.6 rule 3).
    pub sustain_malformed: u64,
    /// MSYNs / Address-Updates naming no connection of ours.
    pub unknown_tokens: u64,
    /// MSYNs / Address-Updates with a stale (replayed) request number.
    pub stale_requests: u64,
    /// Repeats of an accepted request that were dropped (not answered).
    pub repeat_requests: u64,
    /// MSYNs / Address-Updates / MSYN-ACKs whose MAC did not verify.
    pub mac_failures: u64,
    /// MSYNs / Address-Updates dropped by the MAC-verification rate limit.
    pub mac_rate_limited: u64,
    /// MSYNs refused for other reasons (state, sequence sanity, 4-tuple
    /// clash, not migratable, malformed Migrate on a SYN).
    pub msyns_refused: u64,
    /// MSYN-ACKs dropped (wrong request, ACK, MAC or sequence).
    pub msyn_acks_refused: u64,
    /// MSYNs sent (PROTOCOL.md §6.2).
    pub msyns_sent: u64,
    /// MSYN-ACKs sent (PROTOCOL.md §6.3).
    pub msyn_acks_sent: u64,
    /// MSYN-ACKs accepted (this end's move completed, or a repeat answered).
    pub msyn_acks_accepted: u64,
    /// Moves started by this end (MSYN or Address-Update).
    pub migrations_started: u64,
    /// Moves of this end that completed.
    pub migrations_completed: u64,
    /// Peer moves accepted (valid MSYN or Address-Update).
    pub moves_accepted: u64,
    /// Responder: new paths confirmed by the mover's nonce echo.
    pub paths_confirmed: u64,
    /// Address-Update moves started by this end.
    pub address_updates_sent: u64,
    /// Entries into MIG_WAIT.
    pub mig_wait_entries: u64,
    /// Connections closed with `MigrationTimedOut`.
    pub migration_timeouts: u64,
    /// Connections closed with `AddressLost`.
    pub address_lost_closes: u64,
    /// Connections closed with `KeepaliveTimedOut`.
    pub keepalive_timeouts: u64,
    /// Segments on the 4-tuple a connection moved away from, dropped
    /// without a reset.
    pub old_path_drops: u64,
    /// Fast resume (PROTOCOL.md §7): bytes the peer's received offset in an
    /// MSYN-ACK or Confirm showed it already had, not sent again.
    pub resume_skipped_bytes: u64,
    /// Careful resume (PROTOCOL.md §7): congestion-window jumps to half the
    /// old path's window after the new path was validated.
    pub careful_resume_jumps: u64,
    /// Data segments the host's kernel refused to send and the connection
    /// took back (PROTOCOL.md §7, a segment the host refused).
    pub refused_segments: u64,
}

/// Sizes of the endpoint's lookup tables, for tests that check nothing
/// accumulates across moves (DESIGN.md: every move recovers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSizes {
    /// Connections in the table.
    pub connections: usize,
    /// (local, remote) -> connection.
    pub four_tuples: usize,
    /// The 4-tuple each connection last moved away from (at most one each).
    pub previous_paths: usize,
    /// Token -> connection.
    pub tokens: usize,
    /// Local ports in use by connections.
    pub ports: usize,
}

#[cfg(test)]
mod state_name_tests {
    use super::State;

    #[test]
    fn states_print_their_rfc_names() {
        assert_eq!(State::SynSent.to_string(), "SYN-SENT");
        assert_eq!(State::FinWait2.to_string(), "FIN-WAIT-2");
        assert_eq!(State::TimeWait.to_string(), "TIME-WAIT");
        assert_eq!(State::MigSent.to_string(), "MIG_SENT");
        assert_eq!(State::MigWait.to_string(), "MIG_WAIT");
    }
}
