//! One TCP connection: the RFC 9293 state machine with RFC 6298 timers,
//! RFC 7323 window scaling / timestamps / PAWS, RFC 2018 SACK with RFC 6675
//! loss recovery (RFC 6582 NewReno without SACK), delayed ACKs, zero-window
//! probing and RFC 5961 hardening.
//!
//! The [`Endpoint`](super::Endpoint) owns connections and feeds them parsed
//! segments, timeouts and application calls; a connection reports back
//! through its event queue and the endpoint-wide [`Shared`] state (counters,
//! the challenge-ACK rate limiter, and the queue of connectionless control
//! segments such as resets).
//!
//! Send sequence space: `iss` is the SYN, data byte *k* of the stream has
//! sequence `iss + 1 + k`, and the FIN follows the last data byte. The send
//! ring holds every byte from `snd_buf_start` (= SND.UNA once the SYN is
//! acknowledged) to the end of the queued data, so the whole unacknowledged
//! window can be resent from SND.UNA at any time (RTO go-back-N today, path
//! migration later). `snd_nxt` is the next sequence to (re)send; `snd_max`
//! the highest ever sent (HighData + 1 in RFC 6675 terms). They differ only
//! after a retransmission timeout, while the sender goes back over the
//! window.

use core::net::SocketAddrV4;
use std::collections::VecDeque;

#[path = "loss.rs"]
mod loss;
#[path = "migration.rs"]
mod migration;

use self::loss::LossRecovery;
#[path = "keepalive.rs"]
mod keepalive;

#[path = "resume.rs"]
mod resume;

#[path = "refused.rs"]
mod refused;

use self::migration::Mig;
use super::assembler::Assembler;
use super::buffer::RingBuffer;
use super::congestion::CongestionControl;
use super::rtt::RttEstimator;
use super::sack::Scoreboard;
use super::types::{
    CloseReason, Config, ConnId, ConnInfo, Event, ListenerId, State, Stats, TcpError,
};
use crate::auth::{ConnectionKeys, Key};
use crate::time::{Duration, Instant};
use crate::wire::{
    emit_ipv4_tcp, emit_ipv4_tcp_with, Checksum, Ipv4Repr, MigrationOptions, MigrationScratch,
    SackBlock, SeqNumber, TcpFlags, TcpRepr, Timestamps, IPV4_HEADER_LEN, TCP_HEADER_LEN,
};
use crate::Transmit;

/// RFC 5681 §3.2 / RFC 6675 §2: three duplicate ACKs signal a loss.
const DUPTHRESH: usize = 3;
/// RFC 9293 §3.7.1 (and RFC 879): the MSS to assume when the peer sends none.
const DEFAULT_PEER_MSS: u16 = 536;
/// A peer MSS below this is treated as this (tiny MSS values are an attack
/// vector, CVE-2019-11479; Linux clamps similarly).
const MIN_PEER_MSS: u16 = 64;
/// RFC 7323 §2.3: shift counts above 14 are treated as 14.
const MAX_WINDOW_SCALE: u8 = 14;
/// NOP, NOP, kind 8, len 10, TSval, TSecr: what timestamps cost per segment.
const TIMESTAMP_OPTION_LEN: usize = 12;
/// Bound on duplicate ACKs owed between two `poll_transmit` calls.
const MAX_EXTRA_ACKS: u32 = 64;
/// The application may always queue this much (sent and unsent) in the
/// send buffer, whatever cwnd is ([`Connection::send_room`]).
const SEND_QUEUE_FLOOR: usize = 4 << 20;
/// RFC 7323 §5.5: TS.Recent older than 24 days is invalid (the peer's
/// timestamp clock may have wrapped).
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 60 * 60);

/// A segment the endpoint sends on behalf of no connection (or of one that
/// is going away): resets, mostly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlSegment {
    pub(crate) local: SocketAddrV4,
    pub(crate) remote: SocketAddrV4,
    pub(crate) seq: SeqNumber,
    pub(crate) ack: SeqNumber,
    pub(crate) flags: TcpFlags,
}

/// Resets and other control replies queued before `poll_transmit` sends
/// them. Bounded: a flood of segments cannot make the endpoint buffer an
/// unbounded number of replies.
pub(crate) const MAX_CONTROL_QUEUE: usize = 256;

/// A per-second budget: RFC 5961 §7 challenge ACKs per endpoint, and
/// PROTOCOL.md §11.8 MAC verifications per connection and per endpoint.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: u32,
    window_start: Option<Instant>,
    sent: u32,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            window_start: None,
            sent: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now - start >= Duration::from_secs(1),
        };
        if fresh {
            self.window_start = Some(now);
            self.sent = 0;
        }
        if self.sent < self.per_second {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// Endpoint-wide state a connection updates while processing.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Stats,
    pub(crate) challenge: RateLimiter,
    /// PROTOCOL.md §11.8: MAC verifications for the whole endpoint.
    pub(crate) mac_budget: RateLimiter,
    pub(crate) control: VecDeque<ControlSegment>,
}

impl Shared {
    pub(crate) fn queue_control(&mut self, seg: ControlSegment) {
        if self.control.len() < MAX_CONTROL_QUEUE {
            self.control.push_back(seg);
        } else {
            self.stats.control_dropped += 1;
        }
    }

    /// RFC 9293 §3.10.7.1 reset for a segment nobody accepts:
    /// `<SEQ=SEG.ACK><CTL=RST>` if it had ACK, else
    /// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. Never for a RST.
    pub(crate) fn reset_for(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
    ) {
        if seg.flags.rst() {
            return;
        }
        let reply = if seg.flags.ack() {
            ControlSegment {
                local,
                remote,
                seq: seg.ack,
                ack: SeqNumber(0),
                flags: TcpFlags::RST,
            }
        } else {
            ControlSegment {
                local,
                remote,
                seq: SeqNumber(0),
                ack: seg.seq + seg.segment_len(),
                flags: TcpFlags::RST | TcpFlags::ACK,
            }
        };
        self.queue_control(reply);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    None,
    /// RFC 6675 SACK-based loss recovery.
    Sack,
    /// RFC 6582 NewReno fast recovery (peer without SACK).
    NewReno,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendKind {
    /// Previously unsent data (or a FIN) at SND.NXT == snd_max.
    New,
    /// Resending at SND.NXT < snd_max after a timeout.
    GoBack,
    /// The first unacknowledged segment (fast retransmit, partial ACK).
    RetransmitUna,
    /// RFC 6675 NextSeg rule 1.
    SackRetransmit,
    /// RFC 6675 NextSeg rule 4.
    Rescue,
    /// One octet to test a zero window (RFC 9293 §3.8.6.1).
    WindowProbe,
    /// New data at SND.MAX while SND.NXT stays behind it for the go-back
    /// resend (PROTOCOL.md §9 mover step 2).
    Ahead,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    seq: SeqNumber,
    len: usize,
    fin: bool,
    kind: SendKind,
}

#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    /// Addresses are plain fields: migration retargets a live connection.
    pub(crate) local: SocketAddrV4,
    pub(crate) remote: SocketAddrV4,
    pub(crate) state: State,
    /// Set for passive opens: the listener whose backlog this counts in.
    pub(crate) listener: Option<ListenerId>,
    /// The application knows this connection's id (active open, or after
    /// `Event::Incoming`): only then are `Closed` events reported.
    pub(crate) announced: bool,
    pub(crate) close_reason: Option<CloseReason>,
    closed_reported: bool,
    cfg: Config,

    // RFC 9293 §3.3.1 send sequence variables.
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    snd_max: SeqNumber,
    snd_wnd: usize,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    max_snd_wnd: usize,
    snd_wscale: u8,
    snd_buf: RingBuffer,
    snd_buf_start: SeqNumber,
    /// Sequence number of our FIN once the application closed.
    fin_seq: Option<SeqNumber>,

    // Receive sequence variables.
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    rcv_buf: RingBuffer,
    rcv_wscale: u8,
    /// Highest right window edge advertised (RCV.NXT + RCV.WND when sent).
    rcv_adv: SeqNumber,
    /// RCV.NXT as carried by the last ACK sent (RFC 7323 Last.ACK.sent).
    rcv_acked: SeqNumber,
    assembler: Assembler,
    /// Sequence number of a FIN that arrived before the data preceding it.
    rx_fin: Option<SeqNumber>,
    fin_received: bool,
    /// Largest segment payload seen, for "every second full-sized segment".
    rcv_mss: usize,

    // Negotiated options.
    peer_mss: u16,
    ws_enabled: bool,
    ts_enabled: bool,
    sack_enabled: bool,
    ts_recent: u32,
    ts_recent_time: Instant,
    ts_offset: u32,
    /// Sender MSS for congestion control: min(ours, peer's) minus timestamps.
    smss: usize,

    // Timers.
    rtt: RttEstimator,
    rtx_deadline: Option<Instant>,
    /// R1/R2 (RFC 9293 §3.8.3): consecutive retransmissions without progress.
    retries: u32,
    persist_mode: bool,
    persist_deadline: Option<Instant>,
    persist_backoff: u32,
    probe_pending: bool,
    unanswered_probes: u32,
    delack_deadline: Option<Instant>,
    time_wait_deadline: Option<Instant>,
    /// Karn-safe RTT timing without timestamps: (end sequence, send time).
    rtt_probe: Option<(SeqNumber, Instant)>,
    last_send: Instant,

    // Congestion control and loss recovery.
    cc: Box<dyn CongestionControl>,
    /// RACK-TLP, PRR, undo and pacing (SACK connections; loss.rs).
    lr: LossRecovery,
    scoreboard: Scoreboard,
    dupacks: u32,
    recovery: Recovery,
    /// RFC 6675 RecoveryPoint / RFC 6582 "recover": HighData at entry,
    /// exclusive.
    recovery_point: SeqNumber,
    high_rxt: SeqNumber,
    rescue_done: bool,
    retransmit_una: bool,
    /// RFC 6582 window inflation and deflation during NewReno recovery.
    cwnd_adjust: isize,

    // Output flags.
    ack_now: bool,
    /// Further duplicate ACKs owed: each out-of-order segment deserves its
    /// own (RFC 5681 §4.2), even when several arrive between two
    /// `poll_transmit` calls; NewReno senders count them.
    extra_acks: u32,
    syn_pending: bool,
    ip_ident: u16,
    scratch: Vec<u8>,

    // Event edge triggers.
    readable_armed: bool,
    writable_armed: bool,
    pub(crate) events: VecDeque<Event>,

    // Per-connection counters.
    bytes_sent: u64,
    bytes_received: u64,
    retransmitted_segments: u64,
    timeouts: u64,
    fast_retransmits: u64,
    zero_window_probes: u64,

    // Migration (PROTOCOL.md §6-§9).
    /// Our key, offered in the SYN's Migrate-Permit while SYN-SENT.
    local_key: Option<Key>,
    /// Present once the connection is migratable (both keys known).
    mig: Option<Box<Mig>>,
    /// RFC 9293 §3.8.4 keep-alives.
    keepalive: keepalive::Keepalive,

    // Endpoint bookkeeping.
    pub(crate) in_ready_queue: bool,
    pub(crate) timer_registered: Option<Instant>,
    pub(crate) counted_in_backlog: bool,
}

fn window_scale_for(buffer: usize) -> u8 {
    let mut shift = 0;
    while shift < MAX_WINDOW_SCALE && (buffer >> shift) > u16::MAX as usize {
        shift += 1;
    }
    shift
}

impl Connection {
    fn new(
        id: ConnId,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: SeqNumber,
        ts_offset: u32,
        now: Instant,
    ) -> Connection {
        let peer_mss = DEFAULT_PEER_MSS.min(cfg.mss);
        let smss = peer_mss as usize;
        Connection {
            id,
            local,
            remote,
            state: State::Closed,
            listener: None,
            announced: false,
            close_reason: None,
            closed_reported: false,
            cfg: cfg.clone(),
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            max_snd_wnd: 0,
            snd_wscale: 0,
            snd_buf: RingBuffer::new(cfg.send_buffer.max(1)),
            snd_buf_start: iss + 1,
            fin_seq: None,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_buf: RingBuffer::new(cfg.recv_buffer.clamp(1, 1 << 30)),
            rcv_wscale: if cfg.window_scaling {
                window_scale_for(cfg.recv_buffer)
            } else {
                0
            },
            rcv_adv: SeqNumber(0),
            rcv_acked: SeqNumber(0),
            assembler: Assembler::new(),
            rx_fin: None,
            fin_received: false,
            rcv_mss: 0,
            peer_mss,
            ws_enabled: false,
            ts_enabled: false,
            sack_enabled: false,
            ts_recent: 0,
            ts_recent_time: now,
            ts_offset,
            smss,
            rtt: RttEstimator::new(
                cfg.initial_rto,
                cfg.min_rto,
                cfg.max_rto,
                cfg.clock_granularity,
            ),
            rtx_deadline: None,
            retries: 0,
            persist_mode: false,
            persist_deadline: None,
            persist_backoff: 0,
            probe_pending: false,
            unanswered_probes: 0,
            delack_deadline: None,
            time_wait_deadline: None,
            rtt_probe: None,
            last_send: now,
            cc: cfg.congestion.build(smss),
            lr: LossRecovery::new(),
            scoreboard: Scoreboard::new(),
            dupacks: 0,
            recovery: Recovery::None,
            recovery_point: iss,
            high_rxt: iss,
            rescue_done: false,
            retransmit_una: false,
            cwnd_adjust: 0,
            ack_now: false,
            extra_acks: 0,
            syn_pending: false,
            ip_ident: 0,
            scratch: Vec::new(),
            readable_armed: true,
            writable_armed: false,
            events: VecDeque::new(),
            bytes_sent: 0,
            bytes_received: 0,
            retransmitted_segments: 0,
            timeouts: 0,
            fast_retransmits: 0,
            zero_window_probes: 0,
            local_key: None,
            mig: None,
            keepalive: keepalive::Keepalive::new(now),
            in_ready_queue: false,
            timer_registered: None,
            counted_in_backlog: false,
        }
    }

    /// Active open (RFC 9293 §3.10.1): SYN-SENT, SYN queued. With
    /// `local_key` the SYN offers migration (PROTOCOL.md §6.1).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_active(
        id: ConnId,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: SeqNumber,
        ts_offset: u32,
        now: Instant,
        local_key: Option<Key>,
    ) -> Connection {
        let mut c = Connection::new(id, cfg, local, remote, iss, ts_offset, now);
        c.local_key = local_key;
        c.state = State::SynSent;
        c.announced = true;
        c.syn_pending = true;
        c
    }

    /// Passive open from a SYN that reached a listener (RFC 9293 §3.10.7.2
    /// third check): SYN-RECEIVED, SYN-ACK queued. `keys` when the SYN
    /// offered migration and we accept (our SYN-ACK then carries a Permit).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_passive(
        id: ConnId,
        cfg: &Config,
        listener: ListenerId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: SeqNumber,
        ts_offset: u32,
        now: Instant,
        syn: &TcpRepr<'_>,
        keys: Option<ConnectionKeys>,
    ) -> Connection {
        let mut c = Connection::new(id, cfg, local, remote, iss, ts_offset, now);
        c.local_key = keys.map(|k| k.local);
        c.mig = keys.map(|k| Box::new(Mig::new(k, cfg, local)));
        c.state = State::SynReceived;
        c.listener = Some(listener);
        c.counted_in_backlog = true;
        c.irs = syn.seq;
        c.rcv_nxt = syn.seq + 1;
        c.rcv_acked = c.rcv_nxt;
        c.rcv_adv = c.rcv_nxt;
        c.negotiate(now, syn);
        // The window in a SYN is never scaled (RFC 7323 §2.2).
        c.snd_wnd = syn.window as usize;
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = syn.seq;
        c.syn_pending = true;
        c
    }

    // ----------------------------------------------------------------
    // Small helpers
    // ----------------------------------------------------------------

    fn data_end(&self) -> SeqNumber {
        self.snd_buf_start + self.snd_buf.len()
    }

    fn fin_acked(&self) -> bool {
        self.fin_seq.is_some_and(|f| self.snd_una > f)
    }

    fn ts_now(&self, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    fn mss_base(&self) -> usize {
        self.peer_mss.min(self.cfg.mss) as usize
    }

    fn effective_cwnd(&self) -> usize {
        let cwnd = self.cc.cwnd() as isize + self.cwnd_adjust;
        cwnd.max(self.smss as isize) as usize
    }

    fn push_event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    fn arm_rtx(&mut self, now: Instant) {
        // While a move holds the path, its own timers replace RFC 6298's
        // (PROTOCOL.md §8.2, §9 mover step 5).
        if self.migration_holds_timers() {
            return;
        }
        self.rtx_deadline = Some(now + self.rtt.rto());
    }

    /// Peer options from its SYN (passive open, simultaneous open) or
    /// SYN-ACK (active open).
    fn negotiate(&mut self, now: Instant, syn: &TcpRepr<'_>) {
        // RFC 9293 §3.7.1: 536 when the option is absent.
        self.peer_mss = syn.mss.unwrap_or(DEFAULT_PEER_MSS).max(MIN_PEER_MSS);
        // RFC 7323 §2.2: scaling only when both SYNs carried the option.
        match syn.window_scale {
            Some(shift) if self.cfg.window_scaling => {
                self.ws_enabled = true;
                // RFC 7323 §2.3: use 14 for larger shift counts.
                self.snd_wscale = shift.min(MAX_WINDOW_SCALE);
            }
            _ => {
                self.ws_enabled = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        // RFC 7323 §3.2: timestamps only when both SYNs carried them.
        match syn.timestamps {
            Some(ts) if self.cfg.timestamps => {
                self.ts_enabled = true;
                self.ts_recent = ts.tsval;
                self.ts_recent_time = now;
            }
            _ => self.ts_enabled = false,
        }
        // RFC 2018 §2: SACK only when both sides sent SACK-permitted.
        self.sack_enabled = self.cfg.sack && syn.sack_permitted;
        // RFC 9293 §3.7.1: the smaller MSS, less the options every segment
        // carries (RFC 7323 §3.2 timestamps).
        let ts = if self.ts_enabled {
            TIMESTAMP_OPTION_LEN
        } else {
            0
        };
        self.smss = self.mss_base().saturating_sub(ts).max(1);
        self.cc.set_smss(self.smss);
    }

    // ----------------------------------------------------------------
    // Application interface
    // ----------------------------------------------------------------

    pub(crate) fn app_send(&mut self, data: &[u8]) -> Result<usize, TcpError> {
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
                if self.fin_seq.is_none() => {}
            State::Closed => return Err(closed_error(self.close_reason)),
            _ => return Err(TcpError::NotOpenForSend),
        }
        // draft-ietf-ccwg-bbr §4.1.2.4 (loss.rs).
        self.check_app_limited();
        let room = self.send_room();
        let n = self.snd_buf.push(&data[..data.len().min(room)]);
        if n < data.len() {
            self.writable_armed = true;
        }
        Ok(n)
    }

    pub(crate) fn app_recv(&mut self, buf: &mut [u8]) -> usize {
        let n = self.rcv_buf.read_into(buf);
        self.readable_armed = true;
        if n > 0 && self.is_synchronized() && !self.fin_received {
            // RFC 9293 §3.8.6.2.2 receiver SWS avoidance; RFC 1122 4.2.3.3:
            // announce a reopened window when it grew by min(RCV.BUFF/2,
            // MSS) and the peer's view of it has become small.
            let current = self.advertised_window();
            let free = self.rcv_buf.free();
            let threshold = (self.rcv_buf.max() / 2).min(self.cfg.mss as usize);
            if current <= self.rcv_buf.max() / 2
                && free >= 2 * current
                && free >= current + threshold
            {
                self.ack_now = true;
            }
        }
        n
    }

    pub(crate) fn recv_finished(&self) -> bool {
        self.fin_received && self.rcv_buf.is_empty()
    }

    pub(crate) fn unread(&self) -> usize {
        self.rcv_buf.len()
    }

    pub(crate) fn send_capacity(&self) -> usize {
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
                if self.fin_seq.is_none() =>
            {
                self.send_room()
            }
            _ => 0,
        }
    }

    /// What the application may queue now: the send buffer holds what is
    /// unacknowledged and what waits, up to `Config::send_buffer`, but
    /// only as much waiting as twice cwnd (and at least
    /// SEND_QUEUE_FLOOR in all), as Linux's tcp_sndbuf_expand sizes
    /// sk_sndbuf from cwnd: a large ceiling costs memory only on a path
    /// whose window uses it.
    pub(crate) fn send_room(&self) -> usize {
        let unacked = self.snd_max - self.snd_una;
        let want = (unacked + 2 * self.cc.cwnd()).max(SEND_QUEUE_FLOOR);
        self.snd_buf
            .free()
            .min(want.saturating_sub(self.snd_buf.len()))
    }

    pub(crate) fn send_queued(&self) -> usize {
        self.snd_buf.len()
    }

    /// RFC 9293 §3.10.4 CLOSE.
    pub(crate) fn app_close(&mut self) -> Result<(), TcpError> {
        match self.state {
            // RFC 9293 deletes the TCB on CLOSE in SYN-SENT; sustain queues
            // the FIN instead (as RFC 9293 does for SYN-RECEIVED) so that
            // connect, send, close delivers the data. `abort` cancels.
            // The FIN goes out after the queued data once established.
            State::SynSent | State::SynReceived | State::Established => {
                if self.fin_seq.is_none() {
                    self.fin_seq = Some(self.data_end());
                }
                if self.state == State::Established {
                    self.state = State::FinWait1;
                }
                Ok(())
            }
            State::CloseWait => {
                self.fin_seq = Some(self.data_end());
                self.state = State::LastAck;
                Ok(())
            }
            State::Closed => Err(closed_error(self.close_reason)),
            // Already closing: CLOSE is idempotent here.
            _ => Ok(()),
        }
    }

    /// RFC 9293 §3.10.5 ABORT: `<SEQ=SND.NXT><CTL=RST>` in SYN-RECEIVED,
    /// ESTABLISHED, FIN-WAIT-1/2 and CLOSE-WAIT; CLOSING, LAST-ACK,
    /// TIME-WAIT and SYN-SENT just delete the TCB.
    pub(crate) fn app_abort(&mut self, sh: &mut Shared) {
        if self.state == State::Closed {
            return;
        }
        // PROTOCOL.md §8.1: in MIG_SENT / MIG_WAIT there is no path to send
        // the RST on.
        let no_path = self
            .mig
            .as_ref()
            .is_some_and(|m| m.phase != migration::Phase::Normal || m.local_gone);
        if !no_path
            && matches!(
                self.state,
                State::SynReceived
                    | State::Established
                    | State::FinWait1
                    | State::FinWait2
                    | State::CloseWait
            )
        {
            sh.queue_control(ControlSegment {
                local: self.local,
                remote: self.remote,
                seq: self.snd_max,
                ack: SeqNumber(0),
                flags: TcpFlags::RST,
            });
        }
        self.enter_closed(CloseReason::Aborted);
    }

    pub(crate) fn is_synchronized(&self) -> bool {
        !matches!(
            self.state,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }

    pub(crate) fn info(&self) -> ConnInfo {
        ConnInfo {
            local: self.local,
            remote: self.remote,
            state: self.public_state(),
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            retransmitted_segments: self.retransmitted_segments,
            timeouts: self.timeouts,
            fast_retransmits: self.fast_retransmits,
            zero_window_probes: self.zero_window_probes,
            snd_wnd: self.snd_wnd,
            rcv_wnd: self.rcv_buf.free(),
            smss: self.smss,
            window_scaling: self
                .ws_enabled
                .then_some((self.snd_wscale, self.rcv_wscale)),
            timestamps: self.ts_enabled,
            sack: self.sack_enabled,
            snd_una: self.snd_una,
            snd_max: self.snd_max,
            rcv_nxt: self.rcv_nxt,
            in_recovery: self.recovery != Recovery::None,
            migratable: self.mig.is_some(),
            local_token: self.mig.as_ref().map(|m| m.keys.local_token()),
            remote_token: self.mig.as_ref().map(|m| m.keys.remote_token()),
            migrations: self.mig.as_ref().map_or(0, |m| m.moves),
            peer_moves: self.mig.as_ref().map_or(0, |m| m.peer_moves),
            msyns_sent: self.mig.as_ref().map_or(0, |m| m.msyns_sent),
            msyn_acks_sent: self.mig.as_ref().map_or(0, |m| m.msyn_acks_sent),
            forged_dropped: self.mig.as_ref().map_or(0, |m| m.forged),
            path_confirmed: !self.migration_holds_timers(),
            peer_behind_napt: self.mig.as_ref().is_some_and(|m| m.peer_behind_napt()),
        }
    }

    // ----------------------------------------------------------------
    // State changes
    // ----------------------------------------------------------------

    fn report_closed(&mut self, reason: CloseReason) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
        }
        if self.announced && !self.closed_reported {
            self.closed_reported = true;
            self.push_event(Event::Closed {
                conn: self.id,
                reason,
            });
        }
    }

    /// Enter CLOSED. Resets, timeouts and aborts flush both queues (RFC
    /// 9293 §3.10.7.4 second check: "all segment queues should be
    /// flushed"); a normal close keeps unread data readable.
    pub(crate) fn enter_closed(&mut self, reason: CloseReason) {
        self.report_closed(reason);
        self.state = State::Closed;
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.delack_deadline = None;
        self.time_wait_deadline = None;
        self.ack_now = false;
        self.syn_pending = false;
        if reason != CloseReason::Normal {
            let n = self.rcv_buf.len();
            self.rcv_buf.consume(n);
        }
        let n = self.snd_buf.len();
        self.snd_buf.consume(n);
    }

    /// Both FINs are exchanged and ours is acknowledged: the application's
    /// part is done, so `Closed { Normal }` is reported now even though the
    /// connection lingers in TIME-WAIT.
    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        // RFC 9293 §3.10.7.4 eighth: "turn off the other timers".
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.persist_mode = false;
        self.time_wait_deadline = Some(now + self.cfg.time_wait);
        self.report_closed(CloseReason::Normal);
    }

    fn establish(&mut self) {
        self.state = State::Established;
        // RFC 6298 §5.7: if the SYN (or SYN,ACK) had to be retransmitted
        // and no RTT sample exists, data transmission starts with RTO = 3 s.
        if self.retries > 0 && self.rtt.srtt().is_none() {
            self.rtt = RttEstimator::new(
                self.cfg.initial_rto.max(Duration::from_secs(3)),
                self.cfg.min_rto,
                self.cfg.max_rto,
                self.cfg.clock_granularity,
            );
        }
        self.retries = 0;
        if let Some(listener) = self.listener.filter(|_| !self.announced) {
            self.announced = true;
            self.push_event(Event::Incoming {
                listener,
                conn: self.id,
            });
        } else {
            self.push_event(Event::Connected(self.id));
        }
        // A CLOSE issued in SYN-RECEIVED takes effect now.
        if self.fin_seq.is_some() {
            self.state = State::FinWait1;
        }
    }

    // ----------------------------------------------------------------
    // Segment arrival (RFC 9293 §3.10.7)
    // ----------------------------------------------------------------

    pub(crate) fn input(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
        sh: &mut Shared,
    ) {
        // RFC 9293 §3.8.4: any segment shows the peer is alive.
        self.keepalive_heard(now);
        match self.state {
            State::Closed | State::Listen => {}
            State::SynSent => self.input_syn_sent(now, seg, options, sh),
            State::SynReceived => self.input_other(now, seg, sh),
            _ => {
                if !self.migration_input(now, seg, options, sh) {
                    self.input_other(now, seg, sh);
                }
            }
        }
    }

    /// RFC 9293 §3.10.7.3 SYN-SENT STATE.
    fn input_syn_sent(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
        sh: &mut Shared,
    ) {
        // RFC 9293 §3.10.7.3 first check the ACK bit: SEG.ACK =< ISS or
        // SEG.ACK > SND.NXT is unacceptable; reset unless it is a RST.
        if seg.flags.ack() && (seg.ack <= self.iss || seg.ack > self.snd_max) {
            if !seg.flags.rst() {
                sh.queue_control(ControlSegment {
                    local: self.local,
                    remote: self.remote,
                    seq: seg.ack,
                    ack: SeqNumber(0),
                    flags: TcpFlags::RST,
                });
            }
            return;
        }
        let ack_ok = seg.flags.ack();
        // RFC 9293 §3.10.7.3 second check the RST bit (RFC 5961 §3.2 for
        // SYN-SENT: only a RST that acknowledges our SYN resets).
        if seg.flags.rst() {
            if ack_ok {
                sh.stats.resets_received += 1;
                self.enter_closed(CloseReason::Refused);
            }
            return;
        }
        // RFC 9293 §3.10.7.3 third check security: no IP security options
        // are used, nothing to compare.
        // RFC 9293 §3.10.7.3 fourth check the SYN bit.
        if !seg.flags.syn() {
            // RFC 9293 §3.10.7.3 fifth: neither SYN nor RST: drop.
            return;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.rcv_acked = self.rcv_nxt;
        self.rcv_adv = self.rcv_nxt;
        self.negotiate(now, seg);
        self.negotiate_migration(options);
        // The window in a SYN segment is never scaled (RFC 7323 §2.2).
        self.snd_wnd = seg.window as usize;
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        if ack_ok {
            // Our SYN is acknowledged: ESTABLISHED, acknowledge theirs.
            self.snd_una = seg.ack;
            self.snd_nxt = self.snd_nxt.max(seg.ack);
            self.take_handshake_rtt_sample(now, seg);
            self.rtx_deadline = None;
            self.establish();
            self.ack_now = true;
        } else {
            // Simultaneous open: SYN-RECEIVED, send SYN,ACK with our ISS.
            self.state = State::SynReceived;
            self.syn_pending = true;
        }
        // Data or FIN on a SYN-ACK is not accepted; the peer resends it.
    }

    fn take_handshake_rtt_sample(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        if let (true, Some(ts)) = (self.ts_enabled, seg.timestamps) {
            self.rtt_sample_from_tsecr(now, ts.tsecr);
        } else if let Some((_, sent)) = self.rtt_probe.take() {
            self.rtt.on_sample(now - sent);
        }
        self.rtt_probe = None;
    }

    /// RFC 7323 §4.1 RTTM: the echoed timestamp of the segment that caused
    /// this ACK gives an unambiguous sample even for retransmissions.
    fn rtt_sample_from_tsecr(&mut self, now: Instant, tsecr: u32) {
        let elapsed = self.ts_now(now).wrapping_sub(tsecr);
        // A TSecr from the future or older than the maximum RTO is bogus.
        if (elapsed as i32) >= 0 && u64::from(elapsed) <= self.cfg.max_rto.as_millis() as u64 {
            self.rtt
                .on_sample(Duration::from_millis(u64::from(elapsed)));
        }
    }

    fn challenge_ack(&mut self, now: Instant, sh: &mut Shared) {
        // RFC 5961 §7: rate-limit challenge ACKs per endpoint.
        if sh.challenge.allow(now) {
            sh.stats.challenge_acks += 1;
            self.request_ack();
        } else {
            sh.stats.challenge_acks_suppressed += 1;
        }
    }

    /// An acknowledgment must go out now. In SYN-RECEIVED our "ACK" is the
    /// SYN,ACK itself: the peer has not acknowledged our SYN.
    fn request_ack(&mut self) {
        if self.state == State::SynReceived {
            self.syn_pending = true;
        } else {
            self.ack_now = true;
        }
    }

    fn advertised_window(&self) -> usize {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        }
    }

    /// RFC 9293 §3.10.7.4: SYN-RECEIVED and every synchronized state.
    fn input_other(&mut self, now: Instant, seg: &TcpRepr<'_>, sh: &mut Shared) {
        let rst = seg.flags.rst();

        // PROTOCOL.md §6.4 step 7: a segment from the responder after its
        // MSYN-ACK has crossed the new path's NAPT, and so has the window
        // ACK sent right behind that MSYN-ACK (a relay's first-splice
        // window ACK carries no timestamps and is dropped just below, but
        // the NAPT has seen it): the Confirm need not wait any longer.
        if !seg.flags.syn() && !rst {
            self.window_ack_passed();
        }
        // RFC 7323 §3.2: once timestamps are negotiated, a non-RST segment
        // without TSopt SHOULD be silently dropped.
        if self.ts_enabled && !rst && seg.timestamps.is_none() {
            sh.stats.missing_timestamp_drops += 1;
            return;
        }
        // RFC 9293 §3.5 Figure 8 line 6: in a simultaneous open the peer's
        // SYN,ACK repeats the SYN already received (SEG.SEQ = IRS), so the
        // first check would call it old; its ACK of our SYN completes the
        // handshake (Linux special-cases it the same way).
        if self.state == State::SynReceived
            && seg.flags.syn()
            && seg.flags.ack()
            && !rst
            && seg.seq == self.irs
            && seg.ack > self.snd_una
            && seg.ack <= self.snd_max
            && (self.listener.is_none() || self.announced)
        {
            self.syn_pending = false;
            self.establish();
            self.process_ack(now, seg, sh);
            // The window of a SYN is never scaled (RFC 7323 §2.2).
            self.snd_wnd = seg.window as usize;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            // Acknowledge their SYN,ACK: they may still be in SYN-RECEIVED.
            self.ack_now = true;
            return;
        }
        // RFC 7323 §5.3 R1 (PAWS), before the sequence check: a non-RST
        // segment whose TSval is older than TS.Recent is a stale duplicate;
        // acknowledge and drop it. §5.5: TS.Recent idle for 24 days is
        // no longer valid.
        if let (true, false, Some(ts)) = (self.ts_enabled, rst, seg.timestamps) {
            // A pure ACK at RCV.NXT that was merely overtaken by a newer
            // segment is not an old duplicate: accept it (as Linux's
            // tcp_disordered_ack does) instead of answering ACKs with ACKs.
            let disordered_ack = seg.payload.is_empty()
                && !seg.flags.syn()
                && !seg.flags.fin()
                && seg.seq == self.rcv_nxt;
            if (ts.tsval.wrapping_sub(self.ts_recent) as i32) < 0 && !disordered_ack {
                if now - self.ts_recent_time > PAWS_IDLE {
                    self.ts_recent = ts.tsval;
                    self.ts_recent_time = now;
                } else {
                    sh.stats.paws_drops += 1;
                    // RFC 2883 §4 (as Linux does): data already received
                    // is reported as a D-SACK even when PAWS drops it.
                    if !seg.payload.is_empty() && seg.seq + seg.payload.len() <= self.rcv_nxt {
                        self.note_duplicate(seg.seq, seg.seq + seg.payload.len());
                    }
                    self.request_ack();
                    return;
                }
            }
        }

        // PROTOCOL.md §7: a segment that crossed a young path raises the
        // ACK clamp. Duplicates of what we already have refresh TS.Recent
        // there (RFC 7323 §4.3 spirit: they are new transmissions), so the
        // ACKs they draw give the peer's restarted estimator true samples.
        if self.clamp_active() {
            if let (true, Some(ts)) = (self.ts_enabled, seg.timestamps) {
                if (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0
                    && seg.seq + seg.segment_len() <= self.rcv_nxt
                {
                    self.ts_recent = ts.tsval;
                    self.ts_recent_time = now;
                }
            }
            self.note_path_segment(seg);
        }

        // RFC 9293 §3.10.7.4 first check sequence number.
        let seg_len = seg.segment_len();
        let wnd = self.rcv_buf.free();
        let rcv_nxt = self.rcv_nxt;
        let in_window = |s: SeqNumber| s >= rcv_nxt && s < rcv_nxt + wnd;
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seg.seq == rcv_nxt,
            (0, _) => in_window(seg.seq),
            // Liberal like Linux: a bare FIN exactly at RCV.NXT is taken
            // with a zero window, so a full buffer cannot stall the close.
            (_, 0) => seg.payload.is_empty() && seg.flags.fin() && seg.seq == rcv_nxt,
            (len, _) => in_window(seg.seq) || in_window(seg.seq + (len - 1)),
        };
        // PROTOCOL.md §7: after a move the peer resends from its SND.UNA,
        // which may lie below our RCV.NXT. Such a segment wholly below
        // RCV.NXT (within the last window) is a duplicate: its data is
        // acknowledged and dropped, but its ACK field is processed, as
        // 4.4BSD processes duplicates; an empty one gets no reply.
        // Otherwise two rewound ends would drop each other's ACKs and
        // answer each one with another.
        let old_duplicate = !acceptable
            && !rst
            && !seg.flags.syn()
            && self.peer_catching_up()
            && seg.seq + seg_len <= rcv_nxt
            && seg.seq >= rcv_nxt - self.rcv_buf.max();
        if old_duplicate && seg_len > 0 {
            self.note_duplicate(seg.seq, seg.seq + seg.payload.len());
            self.request_ack();
        }
        if acceptable && seg.seq >= rcv_nxt {
            self.peer_caught_up();
        }
        if !acceptable && !old_duplicate {
            if rst {
                // "If the RST bit is set, ... drop the segment and return."
                return;
            }
            if seg.flags.syn() && self.state != State::SynReceived {
                // RFC 5961 §4.2: a SYN in a synchronized state gets a
                // challenge ACK "irrespective of the sequence number".
                self.challenge_ack(now, sh);
                return;
            }
            // RFC 9293 §3.10.7.4 TIME-WAIT (fifth/eighth): the only thing
            // that can arrive is a retransmission of the remote FIN:
            // acknowledge it and restart the 2 MSL timeout.
            if self.state == State::TimeWait && seg.flags.fin() && seg.seq + seg_len == rcv_nxt {
                self.time_wait_deadline = Some(now + self.cfg.time_wait);
            }
            // "<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>", then drop; RFC 2883
            // §4: report data received twice as a D-SACK.
            if !seg.payload.is_empty() && seg.seq + seg.payload.len() <= rcv_nxt {
                self.note_duplicate(seg.seq, seg.seq + seg.payload.len());
            }
            self.request_ack();
            return;
        }

        // RFC 7323 §4.3 (and §5.3 R3): remember the newest timestamp of a
        // segment that covers Last.ACK.sent.
        if let (true, Some(ts)) = (self.ts_enabled, seg.timestamps) {
            if (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0 && seg.seq <= self.rcv_acked {
                self.ts_recent = ts.tsval;
                self.ts_recent_time = now;
            }
        }

        // RFC 9293 §3.10.7.4 second check the RST bit, with RFC 5961 §3.2:
        // only a RST exactly at RCV.NXT resets; one merely in the window
        // gets a challenge ACK.
        if rst {
            if seg.seq != rcv_nxt {
                self.challenge_ack(now, sh);
                return;
            }
            sh.stats.resets_received += 1;
            match self.state {
                // "If this connection was initiated with a passive OPEN ...
                // return this connection to the LISTEN state": the listener
                // still exists, so this entry just goes away unannounced.
                State::SynReceived if self.listener.is_some() && !self.announced => {
                    self.enter_closed(CloseReason::Reset);
                }
                // Active open (simultaneous): "the connection was refused".
                State::SynReceived => self.enter_closed(CloseReason::Refused),
                // CLOSING, LAST-ACK, TIME-WAIT: "enter the CLOSED state";
                // the others: "connection reset", queues flushed.
                _ => self.enter_closed(CloseReason::Reset),
            }
            return;
        }

        // RFC 9293 §3.10.7.4 third check security: no IP security options
        // are used, nothing to compare.

        // RFC 9293 §3.10.7.4 fourth check the SYN bit.
        if seg.flags.syn() {
            if self.state == State::SynReceived && self.listener.is_some() && !self.announced {
                // "If the connection was initiated with a passive OPEN,
                // then return this connection to the LISTEN state."
                self.enter_closed(CloseReason::Reset);
                return;
            }
            // RFC 5961 §4.2: challenge ACK, drop.
            self.challenge_ack(now, sh);
            return;
        }

        // RFC 9293 §3.10.7.4 fifth check the ACK field: "if the ACK bit is
        // off, drop the segment and return".
        if !seg.flags.ack() {
            return;
        }
        // RFC 5961 §5.2 (RFC 9293 §3.10.7.4 fifth check): acceptable iff
        // SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT; otherwise send an ACK
        // (rate-limited as a challenge ACK) and drop.
        let lowest_ack = self.snd_una - self.max_snd_wnd.min(i32::MAX as usize / 2);
        if seg.ack > self.snd_max || seg.ack < lowest_ack {
            if self.state == State::SynReceived {
                // SYN-RECEIVED: "If the segment acknowledgment is not
                // acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>".
                self.send_reset_for_ack(seg, sh);
            } else {
                self.challenge_ack(now, sh);
            }
            return;
        }
        if self.state == State::SynReceived {
            // RFC 9293 §3.10.7.4 fifth, SYN-RECEIVED: "If SND.UNA < SEG.ACK
            // =< SND.NXT, then enter ESTABLISHED state and continue
            // processing with the variables SND.WND <- SEG.WND, SND.WL1 <-
            // SEG.SEQ, SND.WL2 <- SEG.ACK"; else reset.
            if seg.ack <= self.snd_una {
                self.send_reset_for_ack(seg, sh);
                return;
            }
            self.snd_wnd = (seg.window as usize) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.syn_pending = false;
            self.establish();
        }
        self.process_ack(now, seg, sh);
        match self.state {
            // RFC 9293 §3.10.7.4 fifth, FIN-WAIT-1: "if the FIN segment is
            // now acknowledged, then enter FIN-WAIT-2".
            State::FinWait1 if self.fin_acked() => self.state = State::FinWait2,
            // CLOSING: "if the ACK acknowledges our FIN, then enter the
            // TIME-WAIT state; otherwise, ignore the segment".
            State::Closing => {
                if self.fin_acked() {
                    self.enter_time_wait(now);
                }
                return;
            }
            // LAST-ACK: "if our FIN is now acknowledged, delete the TCB,
            // enter the CLOSED state, and return".
            State::LastAck => {
                if self.fin_acked() {
                    self.enter_closed(CloseReason::Normal);
                }
                return;
            }
            _ => {}
        }

        // RFC 9293 §3.10.7.4 sixth check the URG bit: urgent data is not
        // supported (RFC 6093); the urgent pointer is ignored and the data
        // delivered in line.

        // RFC 9293 §3.10.7.4 seventh process the segment text, and eighth
        // check the FIN bit.
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2 => {
                self.process_text(now, seg);
            }
            // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: a FIN has been
            // received; ignore segment text. A repeated FIN in TIME-WAIT is
            // acknowledged and restarts the 2 MSL timer.
            State::TimeWait if seg.flags.fin() => {
                self.time_wait_deadline = Some(now + self.cfg.time_wait);
                self.ack_now = true;
            }
            _ => {}
        }
    }

    fn send_reset_for_ack(&mut self, seg: &TcpRepr<'_>, sh: &mut Shared) {
        sh.queue_control(ControlSegment {
            local: self.local,
            remote: self.remote,
            seq: seg.ack,
            ack: SeqNumber(0),
            flags: TcpFlags::RST,
        });
    }

    /// RFC 9293 §3.10.7.4 fifth check, ESTABLISHED processing of an
    /// acceptable ACK, with congestion control and loss recovery.
    fn process_ack(&mut self, now: Instant, seg: &TcpRepr<'_>, sh: &mut Shared) {
        let ack = seg.ack;
        let window = (seg.window as usize) << self.snd_wscale;
        let old_window = self.snd_wnd;
        // RFC 9293 §3.8.6.1 (MUST-35): probes that are answered never close
        // the connection.
        self.unanswered_probes = 0;

        let advanced = ack > self.snd_una;
        let mut data_acked = 0;
        if advanced {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK.
            // Any segments on the retransmission queue that are thereby
            // entirely acknowledged are removed."
            let new_start = ack.min(self.data_end());
            if new_start > self.snd_buf_start {
                data_acked = new_start - self.snd_buf_start;
                self.snd_buf.consume(data_acked);
                self.snd_buf_start = new_start;
            }
            self.snd_una = ack;
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            if self.high_rxt < ack {
                self.high_rxt = ack;
            }
            self.retries = 0;
            // RTT: RFC 7323 §4.1 RTTM from any ACK advancing the left edge,
            // else the one timed segment (Karn: never a retransmitted one).
            match (self.ts_enabled, seg.timestamps) {
                (true, Some(ts)) => self.rtt_sample_from_tsecr(now, ts.tsecr),
                _ => {
                    if let Some((end, sent)) = self.rtt_probe {
                        if ack >= end {
                            self.rtt.on_sample(now - sent);
                            self.rtt_probe = None;
                        }
                    }
                }
            }
            // RFC 6298 §5.2: all data acknowledged: stop the timer; §5.3:
            // new data acknowledged: restart it.
            if self.snd_una == self.snd_max {
                self.rtx_deadline = None;
            } else if !self.persist_mode {
                self.arm_rtx(now);
            }
        }

        // RFC 6675 §5: "Upon the receipt of any ACK containing SACK
        // information, the scoreboard MUST be updated via Update()."
        let newly_sacked = if self.sack_enabled {
            self.scoreboard
                .update(self.snd_una, self.snd_max, seg.sack_blocks())
        } else {
            0
        };

        // Duplicate ACK: RFC 6675 §2 with SACK (an ACK SACKing new data),
        // else RFC 5681 §2 (same ACK, data outstanding, no data, no SYN or
        // FIN, same window).
        let dupack = if self.sack_enabled {
            newly_sacked > 0
        } else {
            !advanced
                && ack == self.snd_una
                && self.snd_max > self.snd_una
                && seg.payload.is_empty()
                && !seg.flags.fin()
                && window == old_window
        };
        if advanced {
            // RFC 6675 §5: "If the incoming ACK is a cumulative
            // acknowledgment, the TCP MUST reset DupAcks to zero."
            self.dupacks = 0;
        }

        if self.sack_enabled {
            // RACK-TLP, PRR and undo (loss.rs).
            self.on_ack_sack(now, seg, advanced, sh);
        } else {
            self.on_ack_newreno(now, advanced, dupack, data_acked, sh);
        }

        // RFC 9293 §3.10.7.4 fifth check: update the send window "If
        // SND.UNA =< SEG.ACK =< SND.NXT ... if SND.WL1 < SEG.SEQ or (SND.WL1
        // = SEG.SEQ and SND.WL2 =< SEG.ACK)".
        if ack >= self.snd_una
            && (self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack))
        {
            self.snd_wnd = window;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
        }
        // PROTOCOL.md §7: after a fast resume the peer's clamped ACKs still
        // carry its right edge.
        self.window_from_clamped_ack(seg, window);
        // PROTOCOL.md §7: careful resume of cwnd on a new path.
        if advanced && self.mig.is_some() {
            self.careful_resume_on_ack(sh);
        }

        // RFC 9293 §3.8.6.1: the window reopened, stop probing. An
        // unacknowledged probe octet is simply resent as ordinary data.
        if self.persist_mode && self.snd_wnd > 0 {
            self.persist_mode = false;
            self.persist_deadline = None;
            self.persist_backoff = 0;
            self.probe_pending = false;
            if self.snd_una < self.snd_max {
                self.snd_nxt = self.snd_una;
            }
        }

        if data_acked > 0 && self.writable_armed && self.fin_seq.is_none() && self.send_room() > 0 {
            self.writable_armed = false;
            self.push_event(Event::Writable(self.id));
        }
    }

    /// RFC 6582 NewReno loss recovery on an ACK of a connection without
    /// SACK (RFC 5681 §3.2 duplicate ACKs).
    fn on_ack_newreno(
        &mut self,
        now: Instant,
        advanced: bool,
        dupack: bool,
        data_acked: usize,
        sh: &mut Shared,
    ) {
        let ack = self.snd_una;
        match self.recovery {
            Recovery::None => {
                if advanced {
                    // RFC 5681 §3.1 slow start / congestion avoidance.
                    let sample = self.plain_ack_sample(now, data_acked);
                    self.cc.on_ack_sample(&sample);
                }
                if dupack && !self.persist_mode {
                    self.dupacks += 1;
                    // RFC 6675 §5.1 / RFC 6582 §3.2 step 2: no new recovery
                    // until the previous one (or an RTO's) RecoveryPoint is
                    // cumulatively acknowledged.
                    let may_enter = self.snd_una >= self.recovery_point;
                    // RFC 6675 §5 steps 1 and 2.
                    let lost = self.dupacks as usize >= DUPTHRESH
                        || (self.sack_enabled
                            && self.scoreboard.is_lost(self.snd_una, self.smss, DUPTHRESH));
                    if may_enter && lost && self.snd_max > self.snd_una {
                        self.enter_recovery(now, sh);
                    }
                }
            }
            Recovery::Sack => {
                // RFC 6675 §5 (A): a cumulative ACK at or beyond
                // RecoveryPoint ends recovery; (B) is the Update() above and
                // (C) runs in poll_transmit.
                if ack >= self.recovery_point {
                    self.recovery = Recovery::None;
                    self.cc.on_recovery_exit(self.snd_max - self.snd_una);
                }
            }
            Recovery::NewReno => {
                if advanced && ack >= self.recovery_point {
                    // RFC 6582 §3.2 step 3, full acknowledgment: deflate
                    // and leave fast recovery.
                    self.recovery = Recovery::None;
                    self.cwnd_adjust = 0;
                    self.cc.on_recovery_exit(self.snd_max - self.snd_una);
                } else if advanced {
                    // RFC 6582 §3.2 step 3, partial acknowledgment:
                    // retransmit the first unacknowledged segment, deflate
                    // by the amount acknowledged, add back one SMSS if at
                    // least one SMSS was acknowledged.
                    self.retransmit_una = true;
                    self.cwnd_adjust -= data_acked as isize;
                    if data_acked >= self.smss {
                        self.cwnd_adjust += self.smss as isize;
                    }
                } else if dupack {
                    // RFC 6582 §3.2 step 4 (RFC 5681 §3.2 step 4): inflate
                    // by one SMSS per additional duplicate ACK.
                    self.cwnd_adjust += self.smss as isize;
                }
            }
        }
    }

    /// RFC 6675 §5 step 4 / RFC 6582 §3.2 step 2: fast retransmit and
    /// enter loss recovery.
    fn enter_recovery(&mut self, now: Instant, sh: &mut Shared) {
        // (4.1) RecoveryPoint = HighData.
        self.recovery_point = self.snd_max;
        // (4.2) ssthresh = cwnd = FlightSize / 2 (RFC 5681 eq. 4).
        self.cc
            .on_congestion_event(now, self.snd_max - self.snd_una);
        // (4.3) retransmit the segment starting at HighACK + 1; HighRxt and
        // RescueRxt are set when it is sent.
        self.retransmit_una = true;
        self.rescue_done = false;
        self.high_rxt = self.snd_una;
        self.rtt_probe = None;
        if self.sack_enabled {
            self.recovery = Recovery::Sack;
            sh.stats.sack_recoveries += 1;
        } else {
            // RFC 6582 §3.2 step 2: cwnd = ssthresh + 3*SMSS.
            self.recovery = Recovery::NewReno;
            self.report_plain_loss(now);
            self.cwnd_adjust = (DUPTHRESH * self.smss) as isize;
            sh.stats.newreno_recoveries += 1;
        }
        self.fast_retransmits += 1;
        sh.stats.fast_retransmits += 1;
    }

    /// RFC 9293 §3.10.7.4 seventh (segment text) and eighth (FIN) steps in
    /// ESTABLISHED, FIN-WAIT-1 and FIN-WAIT-2.
    fn process_text(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let mut seq = seg.seq;
        let mut payload = seg.payload;
        let mut fin = seg.flags.fin();
        // "If a segment's contents straddle the boundary between old and
        // new, only the new parts are processed."
        if seq < self.rcv_nxt {
            let skip = self.rcv_nxt - seq;
            // RFC 2883 §4: the part received twice is reported as a D-SACK.
            let dup_end = self.rcv_nxt.min(seq + payload.len());
            self.note_duplicate(seq, dup_end);
            if skip > payload.len() {
                // Payload and FIN are both old.
                payload = &[];
                fin = false;
            } else {
                payload = &payload[skip..];
            }
            seq = self.rcv_nxt;
        }
        // Trim to what the buffer can hold (the window we could accept).
        let room = self.rcv_buf.free();
        let offset = seq - self.rcv_nxt;
        if offset + payload.len() > room {
            payload = &payload[..room.saturating_sub(offset).min(payload.len())];
            fin = false;
        }
        if payload.is_empty() && !fin {
            return;
        }
        let old_rcv_nxt = self.rcv_nxt;
        if fin && self.rx_fin.is_none() {
            self.rx_fin = Some(seq + payload.len());
        }
        if seq == self.rcv_nxt {
            let had_holes = !self.assembler.is_empty();
            if !payload.is_empty() {
                self.rcv_buf.write_at(self.rcv_buf.len(), payload);
                self.rcv_nxt += payload.len();
                self.rcv_mss = self.rcv_mss.max(payload.len()).min(self.cfg.mss as usize);
            }
            if had_holes {
                self.rcv_nxt = self.assembler.advance(self.rcv_nxt);
                // RFC 5681 §4.2: ACK at once a segment that fills a gap.
                self.ack_now = true;
            }
        } else {
            if !payload.is_empty() {
                let offset = self.rcv_buf.len() + (seq - self.rcv_nxt);
                if self.assembler.insert(seq, seq + payload.len()) {
                    self.rcv_buf.write_at(offset, payload);
                }
            }
            // RFC 5681 §4.2 (RFC 9293 §3.10.7.4 seventh): an out-of-order
            // segment gets an immediate (duplicate) ACK, with SACK blocks.
            if self.ack_now {
                self.extra_acks = (self.extra_acks + 1).min(MAX_EXTRA_ACKS);
            }
            self.ack_now = true;
        }
        let delivered = self.rcv_nxt - old_rcv_nxt;
        if delivered > 0 {
            // Owed duplicates of the old ACK would now repeat the new one
            // and look like loss to the sender.
            self.extra_acks = 0;
            self.rcv_buf.extend_readable(delivered);
            self.bytes_received += delivered as u64;
            if let Some(f) = self.rx_fin {
                if f < self.rcv_nxt {
                    // Data beyond a FIN: the FIN was bogus.
                    self.rx_fin = None;
                }
            }
        }
        // RFC 9293 §3.10.7.4 eighth check the FIN bit, once every byte
        // before it has arrived.
        if self.rx_fin == Some(self.rcv_nxt) {
            self.rx_fin = None;
            self.receive_fin(now);
        } else if delivered > 0 && !self.ack_now {
            // RFC 5681 §4.2 / RFC 9293 §3.8.6.3: delayed ACK, but at least
            // every second full-sized segment.
            match self.cfg.delayed_ack {
                None => self.ack_now = true,
                Some(delay) => {
                    if self.rcv_nxt - self.rcv_acked >= 2 * self.rcv_mss.max(1) {
                        self.ack_now = true;
                    } else if self.delack_deadline.is_none() {
                        self.delack_deadline = Some(now + delay);
                    }
                }
            }
        }
        if (delivered > 0 || self.fin_received) && self.readable_armed {
            self.readable_armed = false;
            self.push_event(Event::Readable(self.id));
        }
    }

    /// RFC 9293 §3.10.7.4 eighth check the FIN bit.
    fn receive_fin(&mut self, now: Instant) {
        // "advance RCV.NXT over the FIN, and send an acknowledgment".
        self.rcv_nxt += 1;
        self.fin_received = true;
        self.ack_now = true;
        match self.state {
            // "SYN-RECEIVED STATE, ESTABLISHED STATE: Enter the CLOSE-WAIT
            // state."
            State::SynReceived | State::Established => self.state = State::CloseWait,
            // "FIN-WAIT-1 STATE: If our FIN has been ACKed (perhaps in this
            // segment), then enter TIME-WAIT ...; otherwise, enter the
            // CLOSING state."
            State::FinWait1 => {
                if self.fin_acked() {
                    self.enter_time_wait(now);
                } else {
                    self.state = State::Closing;
                }
            }
            // "FIN-WAIT-2 STATE: Enter the TIME-WAIT state."
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    // ----------------------------------------------------------------
    // Timers
    // ----------------------------------------------------------------

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        Instant::earliest([
            self.rtx_deadline,
            self.persist_deadline,
            self.delack_deadline,
            self.time_wait_deadline,
            self.migration_deadline(),
            self.loss_deadline(),
            self.keepalive_deadline(),
        ])
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, sh: &mut Shared) {
        if self.mig.is_some() {
            self.migration_timeout(now, sh);
            if self.state == State::Closed {
                return;
            }
        }
        if self.time_wait_deadline.is_some_and(|t| now >= t) {
            // RFC 9293 §3.10.8: "If the time-wait timeout expires on a
            // connection, delete the TCB, enter the CLOSED state".
            self.enter_closed(CloseReason::Normal);
            return;
        }
        // RACK's reordering timer, the TLP probe timer, pacing (loss.rs);
        // before the RTO, which a due probe replaces (RFC 8985 §7.3).
        self.loss_timeout(now, sh);
        if self.rtx_deadline.is_some_and(|t| now >= t) {
            self.rtx_deadline = None;
            self.on_retransmission_timeout(sh);
            if self.state == State::Closed {
                return;
            }
        }
        if self.persist_deadline.is_some_and(|t| now >= t) {
            self.persist_deadline = None;
            self.on_persist_timeout(sh);
            if self.state == State::Closed {
                return;
            }
        }
        if self.delack_deadline.is_some_and(|t| now >= t) {
            self.delack_deadline = None;
            self.ack_now = true;
        }
        self.keepalive_timeout(now, sh);
    }

    /// RFC 6298 §5.4-5.6, with R1/R2 of RFC 9293 §3.8.3.
    fn on_retransmission_timeout(&mut self, sh: &mut Shared) {
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.retries >= self.cfg.syn_retries {
                    sh.stats.connections_timed_out += 1;
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                self.retries += 1;
                self.rtt.on_timeout();
                self.timeouts += 1;
                sh.stats.timeouts += 1;
                // Karn: the retransmitted SYN cannot be timed.
                self.rtt_probe = None;
                self.syn_pending = true;
            }
            _ => {
                if self.snd_una == self.snd_max {
                    return;
                }
                if self.retries >= self.cfg.data_retries {
                    sh.stats.connections_timed_out += 1;
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                self.retries += 1;
                self.timeouts += 1;
                sh.stats.timeouts += 1;
                if self.sack_enabled {
                    // Everything outstanding is resent from the log.
                    self.on_rto_sack();
                    self.push_rto_event();
                    return;
                }
                // RFC 5681 §3.1 eq. 4 and loss window.
                self.cc.on_rto(self.snd_max - self.snd_una);
                // RFC 6298 §5.5: back off.
                self.rtt.on_timeout();
                // RFC 6675 §5.1 / RFC 2018 §8: forget SACK state (the
                // receiver may have reneged), end any recovery, and do not
                // start a new one before HighData is acknowledged.
                self.scoreboard.clear();
                self.recovery = Recovery::None;
                self.cwnd_adjust = 0;
                self.dupacks = 0;
                self.retransmit_una = false;
                self.recovery_point = self.snd_max;
                self.high_rxt = self.snd_una;
                self.rtt_probe = None;
                // RFC 6298 §5.4: retransmit the earliest unacknowledged
                // segment; going back to SND.UNA resends the rest as the
                // window reopens.
                self.rewind_to_una();
            }
        }
        self.push_rto_event();
    }

    fn push_rto_event(&mut self) {
        if self.announced {
            self.push_event(Event::RetransmissionTimeout {
                conn: self.id,
                rto: self.rtt.rto(),
                backoff: self.rtt.backoff_count(),
            });
        }
    }

    /// Resend everything from SND.UNA: after a timeout, and the hook a
    /// path change will use.
    pub(crate) fn rewind_to_una(&mut self) {
        self.snd_nxt = self.snd_una;
    }

    /// RFC 9293 §3.8.6.1 zero-window probing (and the RFC 9293 §3.8.6.2.1
    /// SWS override when only a small window is offered).
    fn on_persist_timeout(&mut self, sh: &mut Shared) {
        if !self.persist_mode {
            return;
        }
        if self.unanswered_probes >= self.cfg.data_retries {
            sh.stats.connections_timed_out += 1;
            self.enter_closed(CloseReason::TimedOut);
            return;
        }
        self.unanswered_probes += 1;
        self.probe_pending = true;
        self.persist_backoff = (self.persist_backoff + 1).min(16);
    }

    fn arm_persist(&mut self, now: Instant) {
        if self.persist_deadline.is_none() && !self.migration_holds_timers() {
            let base = self.rtt.rto();
            let interval = base
                .checked_mul(1u32 << self.persist_backoff.min(16))
                .unwrap_or(self.cfg.max_rto)
                .min(self.cfg.max_rto);
            self.persist_deadline = Some(now + interval);
        }
    }

    // ----------------------------------------------------------------
    // Output
    // ----------------------------------------------------------------

    /// Writes the next segment this connection wants to send as a whole
    /// IPv4 packet into `buf`, and says where it goes: every segment of a
    /// connection leaves from `local` to `remote` (the data path and
    /// `emit_segment` build their headers from them).
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        sh: &mut Shared,
    ) -> Option<Transmit> {
        let (size, checksum) = self.poll_segment(now, buf, sh)?;
        let transmit = Transmit {
            dst: self.remote,
            src: self.local,
            size,
            checksum_partial: checksum == Checksum::Partial,
        };
        debug_assert_eq!(
            buf.get(..size)
                .and_then(Transmit::of_packet)
                .map(|t| (t.src, t.dst, t.size)),
            Some((transmit.src, transmit.dst, transmit.size)),
            "the segment's headers name other ends than the connection's"
        );
        Some(transmit)
    }

    /// The next segment written into `buf`: its length, and how its TCP
    /// checksum was left (only data segments can be partial, `send_data`).
    fn poll_segment(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        sh: &mut Shared,
    ) -> Option<(usize, Checksum)> {
        let full = |size: Option<usize>| size.map(|n| (n, Checksum::Full));
        match self.state {
            State::Closed | State::Listen => None,
            State::SynSent | State::SynReceived => {
                if self.syn_pending {
                    full(self.send_syn(now, buf, sh))
                } else {
                    None
                }
            }
            _ => {
                if let Some(answer) = self.migration_transmit(now, buf, sh) {
                    return full(answer);
                }
                let sustain = self.segment_options();
                let mut scratch = MigrationScratch::default();
                let mut hdr: TcpRepr<'_> = self.header(now, TcpFlags::ACK);
                if let Err(err) = sustain.attach(&mut scratch, &mut hdr) {
                    tracing::warn!(conn = ?self.id, %err, "cannot attach sustain options");
                }
                let options = hdr.options_len();
                let fixed = IPV4_HEADER_LEN + TCP_HEADER_LEN + options;
                let max_payload = self
                    .mss_base()
                    .saturating_sub(options)
                    .min(buf.len().saturating_sub(fixed))
                    .max(1);
                if buf.len() < fixed {
                    return None;
                }
                // Pacing (loss.rs): data waits for its release time.
                if let Some(release) = self.paced_until(now) {
                    self.lr.pacer.hold_until(release);
                } else if let Some(plan) = self.plan(now, max_payload) {
                    return self.send_data(now, buf, &hdr, plan, sh);
                }
                self.ensure_timer(now);
                if let Some(probe) = self.keepalive_probe(now) {
                    return full(self.emit(now, buf, &probe, sh));
                }
                if self.ack_now {
                    hdr.seq = self.pure_ack_seq();
                    let sent = self.emit(now, buf, &hdr, sh);
                    if sent.is_some() && self.extra_acks > 0 {
                        self.extra_acks -= 1;
                        self.ack_now = true;
                    }
                    return full(sent);
                }
                None
            }
        }
    }

    /// The sequence number of a pure ACK: inside the peer's window so it is
    /// acceptable even while a window probe is out (and, on a new path,
    /// within what a NAPT's tracker has learned from the MSYN-ACK's window,
    /// PROTOCOL.md §7).
    fn pure_ack_seq(&self) -> SeqNumber {
        let edge = self.snd_una + self.snd_wnd;
        if self.snd_max > edge {
            edge.max(self.snd_una)
        } else {
            self.snd_max
        }
    }

    /// Unacknowledged data must always be covered by the retransmission
    /// or the persist timer, whatever path left it unsent.
    fn ensure_timer(&mut self, now: Instant) {
        if self.snd_una < self.snd_max
            && self.rtx_deadline.is_none()
            && self.persist_deadline.is_none()
            && !self.probe_pending
        {
            if self.persist_mode {
                self.arm_persist(now);
            } else {
                self.arm_rtx(now);
            }
        }
    }

    /// Options every non-SYN segment carries, with the current ACK and
    /// window.
    fn header(&self, now: Instant, flags: TcpFlags) -> TcpRepr<'static> {
        // RCV.NXT, clamped on a young path, with the window counted from
        // it (PROTOCOL.md §7).
        let ack = self.ack_to_send();
        let mut hdr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: self.snd_nxt,
            ack,
            flags,
            window: self.window_field_for(self.window_field(), ack),
            ..TcpRepr::default()
        };
        if self.ts_enabled {
            hdr.timestamps = Some(Timestamps {
                tsval: self.ts_now(now),
                tsecr: self.ts_recent,
            });
        }
        if self.sack_enabled && (!self.assembler.is_empty() || self.lr.dsack_rx.is_some()) {
            // RFC 2018 §3: as many blocks as fit next to the timestamps
            // and any sustain option (PROTOCOL.md §5.5, §5.6).
            let max = self.sack_block_limit(if self.ts_enabled { 3 } else { 4 });
            let mut blocks: [Option<SackBlock>; 4] = [None; 4];
            // RFC 2883 §4: a D-SACK block goes first.
            let dsack = self.lr.dsack_rx.filter(|_| max > 0);
            let skip = usize::from(dsack.is_some());
            let mut rest: [Option<SackBlock>; 4] = [None; 4];
            self.assembler.sack_blocks(&mut rest, max - skip);
            blocks[0] = dsack;
            for (i, b) in rest.into_iter().take(4 - skip).enumerate() {
                blocks[i + skip] = b;
            }
            hdr.sack_blocks = blocks;
        }
        hdr
    }

    /// The window field (RFC 7323 §2.3 scaled). RFC 9293 §3.8.6.2.2
    /// receiver SWS avoidance: the right edge moves only when it can move
    /// by at least min(RCV.BUFF/2, MSS).
    fn window_field(&self) -> u16 {
        let free = self.rcv_buf.free();
        let current = self.advertised_window().min(free);
        let threshold = (self.rcv_buf.max() / 2).min(self.cfg.mss as usize);
        let window = if free >= current + threshold {
            free
        } else {
            current
        };
        (window >> self.rcv_wscale).min(u16::MAX as usize) as u16
    }

    /// What to send next, if anything, given the payload limit.
    fn plan(&mut self, now: Instant, max_payload: usize) -> Option<Plan> {
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        ) {
            return None;
        }
        // RFC 6675 §5 step 4.3 / RFC 6582 §3.2 steps 2 and 3: the first
        // unacknowledged segment goes first, regardless of the window.
        if self.retransmit_una {
            self.retransmit_una = false;
            if self.snd_una < self.snd_max {
                let (len, fin) =
                    self.extent(self.snd_una, max_payload.min(self.smss), self.snd_max);
                if len > 0 || fin {
                    return Some(Plan {
                        seq: self.snd_una,
                        len,
                        fin,
                        kind: SendKind::RetransmitUna,
                    });
                }
            }
        }
        if let Some((seq, len, fin)) = self.plan_new_data_first(max_payload) {
            return Some(Plan {
                seq,
                len,
                fin,
                kind: SendKind::Ahead,
            });
        }
        if self.persist_mode {
            return self.plan_probe(max_payload);
        }
        if self.sack_enabled {
            // RACK-TLP, PRR (loss.rs).
            return self.plan_sack(now, max_payload);
        }
        let flight = self.snd_nxt - self.snd_una;
        let mut cwnd = self.effective_cwnd();
        if self.recovery == Recovery::None && self.snd_nxt == self.snd_max {
            // RFC 3042 limited transmit: each of the first two duplicate
            // ACKs lets one new segment out beyond cwnd.
            cwnd += self.dupacks.min(2) as usize * self.smss;
        }
        let cwnd_room = cwnd.saturating_sub(flight);
        if cwnd_room == 0 {
            // RFC 7661 §4.3 (loss.rs).
            self.note_cwnd_limited();
        }
        self.plan_at_snd_nxt(now, max_payload, cwnd_room)
    }

    /// Data available at `seq` below `limit`, at most `max_len`, and whether
    /// our FIN directly follows it (and is below `limit`).
    fn extent(&self, seq: SeqNumber, max_len: usize, limit: SeqNumber) -> (usize, bool) {
        let data_limit = limit.min(self.data_end());
        let avail = if seq < data_limit {
            data_limit - seq
        } else {
            0
        };
        let len = avail.min(max_len);
        let end = seq + len;
        let fin = self.fin_seq == Some(end) && end < limit;
        (len, fin)
    }

    fn plan_at_snd_nxt(
        &mut self,
        now: Instant,
        max_payload: usize,
        cwnd_room: usize,
    ) -> Option<Plan> {
        let mut max_payload = max_payload;
        if self.snd_nxt < self.snd_max && !self.scoreboard.is_empty() {
            // Going back after a timeout: RFC 6675 §5.1, "a SACK TCP sender
            // SHOULD utilize all SACK information made available during the
            // loss recovery following an RTO": skip what the peer SACKed
            // since, resending only the holes.
            match self.scoreboard.next_unsacked(
                self.snd_una,
                self.snd_max,
                self.snd_nxt,
                max_payload,
            ) {
                Some((hole, len)) => {
                    self.snd_nxt = hole;
                    max_payload = len;
                }
                None => {
                    if let Some(top) = self.scoreboard.highest_sacked() {
                        if top > self.snd_nxt {
                            self.snd_nxt = top.min(self.snd_max);
                        }
                    }
                }
            }
        }
        let seq = self.snd_nxt;
        let data_end = self.data_end();
        let avail = if seq < data_end { data_end - seq } else { 0 };
        let fin_unsent = self.fin_seq.is_some_and(|f| seq <= f);
        let kind = if seq < self.snd_max {
            SendKind::GoBack
        } else {
            SendKind::New
        };
        if avail == 0 {
            if fin_unsent && (cwnd_room > 0 || seq == self.snd_una) {
                return Some(Plan {
                    seq,
                    len: 0,
                    fin: true,
                    kind,
                });
            }
            return None;
        }
        // RFC 5681 §4.1: restart from the initial window after an idle
        // period longer than the RTO.
        if kind == SendKind::New
            && self.snd_una == self.snd_max
            && now - self.last_send > self.rtt.rto()
        {
            self.cc.on_idle_restart();
        }
        let right_edge = self.snd_una + self.snd_wnd;
        let window_room = if right_edge > seq {
            right_edge - seq
        } else {
            0
        };
        let len = avail.min(max_payload).min(window_room).min(cwnd_room);
        // RFC 9293 §3.8.6.2.1 sender SWS avoidance: send a full segment, all
        // that is queued, or at least half the largest window the peer has
        // offered; otherwise wait for ACKs or the override (persist) timer.
        let sendable = len > 0
            && (len == max_payload
                || len == avail
                || (self.max_snd_wnd > 0 && len >= self.max_snd_wnd / 2));
        if !sendable {
            let window_limited = window_room < avail.min(max_payload);
            // Nothing in flight (or nothing the retransmission timer still
            // covers, after a timeout rewound SND.NXT) will bring an ACK:
            // probe the window.
            let nothing_pending = self.snd_una == self.snd_max || self.rtx_deadline.is_none();
            if window_limited && nothing_pending && self.recovery == Recovery::None {
                self.persist_mode = true;
                self.persist_backoff = 0;
                self.unanswered_probes = 0;
                self.rtx_deadline = None;
                self.arm_persist(now);
            }
            return None;
        }
        let fin = len == avail && self.fin_seq == Some(seq + len);
        Some(Plan {
            seq,
            len,
            fin,
            kind,
        })
    }

    /// While persisting: on the timer, send what the window allows, or one
    /// octet beyond a zero window (RFC 9293 §3.8.6.1).
    fn plan_probe(&mut self, max_payload: usize) -> Option<Plan> {
        if !self.probe_pending {
            return None;
        }
        self.probe_pending = false;
        let right_edge = self.snd_una + self.snd_wnd;
        let seq = self.snd_una;
        let window_room = if right_edge > seq {
            right_edge - seq
        } else {
            0
        };
        if window_room > 0 {
            // SWS override: send what fits and leave persist mode.
            let (len, fin) = self.extent(seq, max_payload.min(window_room), self.data_end() + 1);
            if len == 0 && !fin {
                return None;
            }
            self.persist_mode = false;
            self.persist_deadline = None;
            return Some(Plan {
                seq,
                len,
                fin,
                kind: if seq < self.snd_max {
                    SendKind::GoBack
                } else {
                    SendKind::New
                },
            });
        }
        let (len, _) = self.extent(seq, 1, self.data_end());
        if len == 0 {
            self.persist_mode = false;
            self.persist_deadline = None;
            return None;
        }
        Some(Plan {
            seq,
            len,
            fin: false,
            kind: SendKind::WindowProbe,
        })
    }

    fn send_data(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        hdr: &TcpRepr<'_>,
        plan: Plan,
        sh: &mut Shared,
    ) -> Option<(usize, Checksum)> {
        let offset = plan.seq - self.snd_buf_start;
        let (a, b) = self.snd_buf.slices(offset, plan.len);
        let payload: &[u8] = if b.is_empty() {
            a
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(a);
            self.scratch.extend_from_slice(b);
            &self.scratch
        };
        let mut seg = hdr.clone();
        seg.seq = plan.seq;
        seg.payload = payload;
        if plan.fin {
            seg.flags |= TcpFlags::FIN;
        }
        if plan.len > 0 && plan.seq + plan.len == self.data_end() {
            seg.flags |= TcpFlags::PSH;
        }
        let ip = Ipv4Repr {
            src: *self.local.ip(),
            dst: *self.remote.ip(),
            ttl: 64,
            ident: self.ip_ident,
            dont_fragment: true,
        };
        // Only data segments: the runs the datapath hands to GSO, which
        // completes their checksums itself (Config::partial_checksums).
        let checksum = if self.cfg.partial_checksums {
            Checksum::Partial
        } else {
            Checksum::Full
        };
        let written = match emit_ipv4_tcp_with(&ip, &seg, buf, checksum) {
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(conn = ?self.id, %err, "cannot emit segment");
                return None;
            }
        };
        let (window, ack) = (seg.window, seg.ack);
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.after_ack_sent(window, ack);
        self.last_send = now;
        let end = plan.seq + plan.len + usize::from(plan.fin);
        match plan.kind {
            SendKind::New => {
                self.bytes_sent += plan.len as u64;
                self.snd_nxt = end;
                self.snd_max = end;
                if !self.ts_enabled && self.rtt_probe.is_none() {
                    self.rtt_probe = Some((end, now));
                }
            }
            SendKind::Ahead => {
                // SND.NXT stays where the go-back resend is; it skips this
                // segment if the peer SACKs it, or the peer's ACK covers it.
                self.bytes_sent += plan.len as u64;
                self.snd_max = end;
            }
            SendKind::GoBack => {
                if end > self.snd_max {
                    self.bytes_sent += (end - self.snd_max) as u64;
                    self.snd_max = end;
                }
                self.snd_nxt = end;
                self.count_retransmission(sh);
            }
            SendKind::RetransmitUna => {
                // RFC 6675 §5 (4.3): HighRxt = the retransmitted segment's
                // highest sequence number.
                if end > self.high_rxt {
                    self.high_rxt = end;
                }
                self.count_retransmission(sh);
            }
            SendKind::SackRetransmit => {
                // RFC 6675 §5 (C.2).
                self.high_rxt = end;
                self.count_retransmission(sh);
            }
            SendKind::Rescue => {
                // RFC 6675 §4 rule 4: HighRxt is not updated.
                self.rescue_done = true;
                self.count_retransmission(sh);
            }
            SendKind::WindowProbe => {
                if end > self.snd_max {
                    self.bytes_sent += (end - self.snd_max) as u64;
                    self.snd_max = end;
                    self.snd_nxt = end;
                }
                self.zero_window_probes += 1;
                sh.stats.zero_window_probes += 1;
                self.arm_persist(now);
            }
        }
        // RFC 6298 §5.1: start the timer when sending data if it is not
        // running (the persist timer covers window probes).
        if end > plan.seq && self.rtx_deadline.is_none() && !self.persist_mode {
            self.arm_rtx(now);
        }
        self.on_segment_sent(now, &plan, end, sh);
        sh.stats.packets_out += 1;
        Some((written, checksum))
    }

    fn count_retransmission(&mut self, sh: &mut Shared) {
        // Karn's algorithm: nothing in flight may be timed now.
        self.rtt_probe = None;
        self.retransmitted_segments += 1;
        sh.stats.retransmitted_segments += 1;
    }

    /// Bookkeeping for any segment carrying our current ACK and window.
    fn after_ack_sent(&mut self, window: u16, ack: SeqNumber) {
        self.ack_now = false;
        self.lr.dsack_rx = None;
        self.delack_deadline = None;
        self.rcv_acked = ack;
        let edge = ack + ((window as usize) << self.rcv_wscale);
        if edge > self.rcv_adv {
            self.rcv_adv = edge;
        }
    }

    fn emit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seg: &TcpRepr<'_>,
        sh: &mut Shared,
    ) -> Option<usize> {
        let n = self.emit_segment(now, buf, seg, sh)?;
        if seg.flags.ack() {
            self.after_ack_sent(seg.window, seg.ack);
        }
        Some(n)
    }

    /// An MSYN or MSYN-ACK: its ACK field and SYN window are not ours to
    /// record as "last ACK sent" or advertised edge.
    fn emit_handshake(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seg: &TcpRepr<'_>,
        sh: &mut Shared,
    ) -> Option<usize> {
        self.emit_segment(now, buf, seg, sh)
    }

    /// Writes `seg` in an IPv4 packet from our address to the peer's.
    fn emit_segment(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seg: &TcpRepr<'_>,
        sh: &mut Shared,
    ) -> Option<usize> {
        let ip = Ipv4Repr {
            src: *self.local.ip(),
            dst: *self.remote.ip(),
            ttl: 64,
            ident: self.ip_ident,
            dont_fragment: true,
        };
        match emit_ipv4_tcp(&ip, seg, buf) {
            Ok(n) => {
                self.ip_ident = self.ip_ident.wrapping_add(1);
                self.last_send = now;
                sh.stats.packets_out += 1;
                Some(n)
            }
            Err(err) => {
                tracing::warn!(conn = ?self.id, flags = ?seg.flags, %err, "cannot emit segment");
                None
            }
        }
    }

    /// SYN (SYN-SENT) or SYN,ACK (SYN-RECEIVED), RFC 9293 §3.10.7.2/3.
    fn send_syn(&mut self, now: Instant, buf: &mut [u8], sh: &mut Shared) -> Option<usize> {
        let synack = self.state == State::SynReceived;
        let permit = self.syn_permit();
        let mut scratch = MigrationScratch::default();
        let mut seg = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: self.iss,
            ack: if synack { self.rcv_nxt } else { SeqNumber(0) },
            flags: if synack {
                TcpFlags::SYN | TcpFlags::ACK
            } else {
                TcpFlags::SYN
            },
            // RFC 7323 §2.2: the window of a SYN is never scaled.
            window: self.rcv_buf.free().min(u16::MAX as usize) as u16,
            mss: Some(self.cfg.mss),
            ..TcpRepr::default()
        };
        if synack {
            // RFC 7323 §1.3 / RFC 2018 §2: a SYN,ACK carries an option only
            // if the SYN it answers did.
            if self.ws_enabled {
                seg.window_scale = Some(self.rcv_wscale);
            }
            seg.sack_permitted = self.sack_enabled;
            if self.ts_enabled {
                seg.timestamps = Some(Timestamps {
                    tsval: self.ts_now(now),
                    tsecr: self.ts_recent,
                });
            }
        } else {
            if self.cfg.window_scaling {
                seg.window_scale = Some(self.rcv_wscale);
            }
            seg.sack_permitted = self.cfg.sack;
            if self.cfg.timestamps {
                seg.timestamps = Some(Timestamps {
                    tsval: self.ts_now(now),
                    tsecr: 0,
                });
            }
        }
        if let Some(permit) = permit {
            // PROTOCOL.md §6.1, §5.2: the full Permit fits next to MSS,
            // SACK-permitted, timestamps and window scale (40 bytes).
            let options = MigrationOptions {
                permit: Some(permit),
                ..MigrationOptions::default()
            };
            if let Err(err) = options.attach(&mut scratch, &mut seg) {
                tracing::warn!(conn = ?self.id, %err, "cannot attach Migrate-Permit");
            }
        }
        let n = self.emit(now, buf, &seg, sh)?;
        self.syn_pending = false;
        if self.snd_max == self.iss {
            self.snd_nxt = self.iss + 1;
            self.snd_max = self.iss + 1;
            if self.retries == 0 {
                self.rtt_probe = Some((self.iss + 1, now));
            }
        }
        if self.retries > 0 {
            self.count_retransmission(sh);
        }
        if self.rtx_deadline.is_none() {
            self.arm_rtx(now);
        }
        Some(n)
    }
}

/// The error an application call on a closed connection reports.
pub(crate) fn closed_error(reason: Option<CloseReason>) -> TcpError {
    match reason {
        Some(CloseReason::Reset | CloseReason::Refused) => TcpError::Reset,
        Some(CloseReason::TimedOut | CloseReason::KeepaliveTimedOut) => TcpError::TimedOut,
        Some(CloseReason::MigrationTimedOut) => TcpError::MigrationTimedOut,
        Some(CloseReason::AddressLost) => TcpError::AddressLost,
        Some(CloseReason::Normal) => TcpError::NotOpenForSend,
        Some(CloseReason::Aborted) | None => TcpError::NoSuchConnection,
    }
}
