//! Connection migration on one connection (PROTOCOL.md §6-§9): the MSYN
//! handshake of the sustaining protocol (MIG_SENT / MIG_WAIT on the mover,
//! the unconfirmed path on the responder), the Address-Update of
//! continuation mode, the path restart and the ACK clamp of §7.
//!
//! A child module of `connection`, so it works on the connection's own
//! fields. The RFC 9293 state stays in `Connection::state` (the "S" of
//! MIG_SENT(S)); the migration phase lives here next to it, and
//! `public_state` reports MIG_SENT / MIG_WAIT over it.

use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::VecDeque;

use super::{
    Connection, ControlSegment, RateLimiter, Recovery, Shared, DEFAULT_PEER_MSS, MIN_PEER_MSS,
    TIMESTAMP_OPTION_LEN,
};
use crate::auth::{
    new_nonce, ConnectionKeys, Key, MacInput, ReplayWindow, RequestCheck, RequestCounter,
    RequestNumber, Token,
};
use crate::rand::Random;
use crate::relay::ticket::HostTicket;
use crate::tcp::handshake::{self, Accepted, MsynVerdict};
use crate::tcp::types::{
    CloseReason, Config, Event, MigWaitCause, MigrationFailure, Mode, State, TcpError,
};
use crate::time::{Duration, Instant};
use crate::wire::{
    AddressUpdate, Migrate, MigrateOption, MigratePermit, MigrationOptions, MigrationScratch,
    OptionScratch, RelayMsynAck, RelayTicket, SeqNumber, TcpFlags, TcpRepr, Timestamps,
};

/// MSYN send times kept for RTT samples (N + 1 = 5 per move normally).
const SENT_TIMES: usize = 8;

/// Where the mover side of a move stands (PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The RFC 9293 state S, sending normally.
    Normal,
    /// MIG_SENT(S): MSYN out, waiting for the MSYN-ACK.
    Sent,
    /// MIG_WAIT(S): waiting for the peer's MSYN, an address or a notice.
    Wait,
}

/// The responder's unconfirmed new path (PROTOCOL.md §6.5).
#[derive(Debug, Clone, Copy)]
struct Pending {
    request: RequestNumber,
    nonce: u32,
    /// The mover's direct address from the MSYN's Permit (the MAC covers it).
    direct: SocketAddrV4,
    /// MSYN.seq + 1: the MSYN-ACK acknowledges exactly this.
    ack: SeqNumber,
    attempts: u32,
    interval: Duration,
    deadline: Instant,
    send_now: bool,
    /// A pure ACK with the scaled window is due right after the MSYN-ACK
    /// (PROTOCOL.md §7, §10 td_maxend).
    window_ack: bool,
    first_sent: Option<Instant>,
    retransmitted: bool,
}

/// The mover's Address-Update in continuation mode (PROTOCOL.md §9).
#[derive(Debug, Clone, Copy)]
struct Updating {
    option: AddressUpdate,
    attempts: u32,
    interval: Duration,
    deadline: Instant,
}

/// Per-connection migration state; exists only for migratable connections.
#[derive(Debug)]
pub(super) struct Mig {
    pub(super) keys: ConnectionKeys,
    /// `keys.local_token()`, kept: the connection table looks it up after
    /// every packet, and each computation is a SHA-256.
    local_token: Token,
    requests: RequestCounter,
    replay: ReplayWindow,
    pub(super) phase: Phase,
    /// T in MIG_SENT, W in MIG_WAIT.
    deadline: Option<Instant>,
    interval: Duration,
    /// n: MSYN retransmissions of the current move.
    attempts: u32,
    /// T0 of the current episode: min(ceiling, RTO before the move),
    /// fixed when the connection stopped sending normally.
    t0: Option<Duration>,
    msyn_pending: bool,
    /// First request number of the current move (PROTOCOL.md §6.4 step 2).
    move_first: RequestNumber,
    /// Each MSYN transmission: request, send time, and the MSYN.seq + 1
    /// its MSYN-ACK must acknowledge (SND.UNA then; a fast resume may have
    /// advanced SND.UNA since).
    sent_times: VecDeque<(RequestNumber, Instant, SeqNumber)>,
    /// The direct address and port our MSYNs of this move carried.
    sent_direct: SocketAddrV4,
    /// The local address went away and no new one has been given.
    pub(super) local_gone: bool,
    stalled_since: Option<Instant>,
    /// (request, nonce) to echo in a Confirm on what we send (§6.4 step 7).
    confirm: Option<(RequestNumber, u32)>,
    /// The first Confirm after an accepted MSYN-ACK goes at once as a pure
    /// ACK (§6.4 step 7), ahead of any data pacing holds back.
    confirm_now: bool,
    /// The accepted MSYN-ACK's ACK field (MSYN.seq + 1): what the responder
    /// acknowledges before it has our Confirm. Only a segment acknowledging
    /// beyond it, or carrying data, shows the Confirm arrived.
    confirm_floor: Option<SeqNumber>,
    /// The MSYN-ACK declared the responder's RCV.NXT (fast resume): SND.UNA
    /// is exactly where the responder expects us.
    confirm_exact: bool,
    /// The accepted MSYN-ACK's right edge (SEG.ACK + its unscaled SYN
    /// window): all a NAPT on the new path has learned of the responder's
    /// window until the responder's window ACK passes it (§10, td_maxend).
    synack_edge: Option<SeqNumber>,
    pending: Option<Pending>,
    /// ACK clamp of §7: the highest SEG.SEQ + SEG.LEN seen on the new
    /// path, kept until it covers RCV.NXT with nothing from before the move
    /// left in the reassembly queue.
    path_high: Option<SeqNumber>,
    /// Since the last path restart the peer has been resending from its
    /// SND.UNA and has not yet caught up with our RCV.NXT (§7).
    catching_up: bool,
    /// Continuation mode (PROTOCOL.md §9 mover step 2): the first segment
    /// from the new address carries data the peer never had, not the
    /// go-back resend from SND.UNA.
    new_data_first: bool,
    /// Careful resume (§7): the old path's window until the new path
    /// confirms or refutes it.
    resume: Option<super::resume::CarefulResume>,
    /// Fast resume (§7): SND.UNA before the peer's received offset
    /// advanced it. The peer's ACKs on the new path stay clamped at or
    /// above it until they catch up; their right edge still counts.
    skip_base: Option<SeqNumber>,
    peer_behind_napt: bool,
    /// The peer is a relay (PROTOCOL.md §6.9): MSYNs to it carry this
    /// ticket instead of Migrate, and its MSYN-ACK is checked with the
    /// ticket's key. Cleared by a direct notice or a direct MSYN.
    relay: Option<HostTicket>,
    updating: Option<Updating>,
    /// Our address as the peer last confirmed it (Address-Update's "old").
    confirmed_local: Ipv4Addr,
    mac_limit: RateLimiter,
    // Counters for ConnInfo.
    pub(super) moves: u64,
    pub(super) peer_moves: u64,
    pub(super) msyns_sent: u64,
    pub(super) msyn_acks_sent: u64,
    pub(super) forged: u64,
}

impl Mig {
    pub(super) fn new(keys: ConnectionKeys, cfg: &Config, local: SocketAddrV4) -> Mig {
        Mig {
            keys,
            local_token: keys.local_token(),
            requests: RequestCounter::new(),
            replay: ReplayWindow::new(),
            phase: Phase::Normal,
            deadline: None,
            interval: Duration::ZERO,
            attempts: 0,
            t0: None,
            msyn_pending: false,
            move_first: RequestNumber::FIRST,
            sent_times: VecDeque::with_capacity(SENT_TIMES),
            sent_direct: local,
            local_gone: false,
            stalled_since: None,
            confirm: None,
            confirm_now: false,
            confirm_floor: None,
            confirm_exact: false,
            synack_edge: None,
            pending: None,
            path_high: None,
            catching_up: false,
            new_data_first: false,
            skip_base: None,
            resume: None,
            peer_behind_napt: false,
            relay: None,
            updating: None,
            confirmed_local: *local.ip(),
            mac_limit: RateLimiter::new(cfg.mac_verifications_per_connection),
            moves: 0,
            peer_moves: 0,
            msyns_sent: 0,
            msyn_acks_sent: 0,
            forged: 0,
        }
    }

    /// `r` was sent during the current move (PROTOCOL.md §6.4 step 2).
    fn in_current_move(&self, r: RequestNumber) -> bool {
        let last = self.requests.last();
        let span = last.0.wrapping_sub(self.move_first.0);
        let offset = r.0.wrapping_sub(self.move_first.0);
        self.msyns_sent > 0 && offset <= span && span < 1 << 31
    }

    pub(super) fn careful_resume(&self) -> Option<super::resume::CarefulResume> {
        self.resume
    }

    pub(super) fn peer_behind_napt(&self) -> bool {
        self.peer_behind_napt
    }

    /// Migration is holding the ordinary timers and output: no path, a
    /// path not yet confirmed, or an Address-Update under way.
    pub(super) fn holds_timers(&self) -> bool {
        self.phase != Phase::Normal
            || self.local_gone
            || self.pending.is_some()
            || self.updating.is_some()
    }
}

impl Connection {
    // ----------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------

    /// The token under which the endpoint must find this connection: our
    /// key's, from the SYN we sent (still negotiating) or once migratable.
    pub(crate) fn indexed_token(&self) -> Option<Token> {
        if self.state == State::Closed {
            return None;
        }
        match &self.mig {
            Some(m) => Some(m.local_token),
            None if self.state == State::SynSent => self.local_key.map(Key::token),
            None => None,
        }
    }

    pub(crate) fn keys(&self) -> Option<ConnectionKeys> {
        self.mig.as_ref().map(|m| m.keys)
    }

    /// RFC 9293 state, or MIG_SENT / MIG_WAIT over it.
    pub(crate) fn public_state(&self) -> State {
        match (self.state, self.mig.as_ref().map(|m| m.phase)) {
            (State::Closed, _) => State::Closed,
            (_, Some(Phase::Sent)) => State::MigSent,
            (_, Some(Phase::Wait)) => State::MigWait,
            (state, _) => state,
        }
    }

    /// Moves to the next usable local address the runtime reports.
    pub(crate) fn waiting_for_address(&self) -> bool {
        self.state != State::Closed
            && self
                .mig
                .as_ref()
                .is_some_and(|m| m.local_gone || m.phase == Phase::Wait)
    }

    pub(super) fn migration_holds_timers(&self) -> bool {
        self.mig.as_ref().is_some_and(|m| m.holds_timers())
    }

    /// The ACK field to send: RCV.NXT, or the §7 clamp on a young path.
    pub(super) fn ack_to_send(&self) -> SeqNumber {
        match self.mig.as_ref().and_then(|m| m.path_high) {
            Some(high) if high < self.rcv_nxt => high,
            _ => self.rcv_nxt,
        }
    }

    /// How many SACK blocks fit next to what migration adds (PROTOCOL.md
    /// §5.5, §5.6, §7).
    pub(super) fn sack_block_limit(&self, max: usize) -> usize {
        let Some(m) = self.mig.as_ref() else {
            return max;
        };
        if m.path_high.is_some() {
            // §7: no block may reach above path_high, and every block lies
            // above RCV.NXT > path_high.
            0
        } else if m.updating.is_some() {
            // §5.6: Address-Update (24) leaves no room next to timestamps.
            if self.ts_enabled {
                0
            } else {
                1
            }
        } else if m.confirm.is_some() {
            // §5.5: Confirm (16) leaves room for one block next to TS.
            max.min(1)
        } else {
            max
        }
    }

    /// PROTOCOL.md §9 mover step 2: once after a continuation move, the
    /// segment at SND.MAX (data the peer cannot have: nothing from SND.MAX
    /// on was ever sent), if the send window has room for it. Its ACK can
    /// come half a round trip after the move, where the go-back resend
    /// from SND.UNA (data the peer most likely has: only its ACKs were
    /// lost with the old address) could show new data only after one and
    /// a half. `None` leaves the go-back resend to go first.
    pub(super) fn plan_new_data_first(
        &mut self,
        max_payload: usize,
    ) -> Option<(SeqNumber, usize, bool)> {
        let m = self.mig.as_mut()?;
        if !std::mem::take(&mut m.new_data_first) || self.snd_nxt == self.snd_max {
            return None;
        }
        let right_edge = self.snd_una + self.snd_wnd;
        if right_edge <= self.snd_max {
            return None;
        }
        let room = right_edge - self.snd_max;
        let (len, fin) = self.extent(
            self.snd_max,
            max_payload.min(self.smss).min(room),
            right_edge + 1,
        );
        (len > 0 || fin).then_some((self.snd_max, len, fin))
    }

    /// After a move, until the peer's resent stream reaches our RCV.NXT.
    pub(super) fn peer_catching_up(&self) -> bool {
        self.mig.as_ref().is_some_and(|m| m.catching_up)
    }

    pub(super) fn peer_caught_up(&mut self) {
        if let Some(m) = self.mig.as_mut() {
            m.catching_up = false;
        }
    }

    /// Sustain options for the next non-SYN segment.
    pub(super) fn segment_options(&self) -> MigrationOptions<'static> {
        let mut options = MigrationOptions::default();
        if let Some(m) = &self.mig {
            if let Some((request, nonce)) = m.confirm {
                // §3.3, §7: our RCV.NXT relative to this segment's own
                // ACK field (the clamped one, if the clamp holds).
                let received = self.rcv_nxt - self.ack_to_send();
                options.migrate = Some(handshake::confirm_option(request, nonce, received as u32));
            }
            if let Some(u) = &m.updating {
                options.address_update = Some(u.option);
            }
        }
        options
    }

    /// The Migrate-Permit of our SYN or SYN-ACK (PROTOCOL.md §6.1).
    pub(super) fn syn_permit(&self) -> Option<MigratePermit> {
        let key = match self.state {
            State::SynSent => self.local_key?,
            State::SynReceived => self.mig.as_ref()?.keys.local,
            _ => return None,
        };
        Some(MigratePermit {
            addr: *self.local.ip(),
            port: self.local.port(),
            key: Some(key.0),
        })
    }

    /// The peer's SYN or SYN-ACK arrived in SYN-SENT: migratable iff both
    /// carried a full Permit (PROTOCOL.md §6.1).
    pub(super) fn negotiate_migration(&mut self, options: &MigrationOptions<'_>) {
        match (self.local_key, options.permit.and_then(|p| p.key)) {
            (Some(local), Some(remote)) => {
                let keys = ConnectionKeys {
                    local,
                    remote: crate::auth::Key(remote),
                };
                self.mig = Some(Box::new(Mig::new(keys, &self.cfg, self.local)));
            }
            _ => {
                self.local_key = None;
                self.mig = None;
            }
        }
    }

    // ----------------------------------------------------------------
    // Runtime inputs
    // ----------------------------------------------------------------

    /// The local address of this connection went away.
    pub(crate) fn on_address_lost(&mut self, now: Instant, sh: &mut Shared) {
        match self.state {
            State::Closed | State::Listen => {}
            // Nothing left to linger for: the FIN exchange is complete and
            // retransmitted FINs can no longer reach us.
            State::TimeWait => self.enter_closed(CloseReason::Normal),
            State::SynSent | State::SynReceived => self.fail_not_migratable(sh),
            _ if self.mig.is_none() => self.fail_not_migratable(sh),
            _ => {
                let Some(m) = self.mig.as_mut() else {
                    return;
                };
                m.local_gone = true;
                m.stalled_since.get_or_insert(now);
                m.pending = None;
                m.updating = None;
                m.confirm = None;
                m.msyn_pending = false;
                if m.t0.is_none() {
                    m.t0 = Some(self.rtt.rto().min(self.cfg.mig_t0_ceiling));
                }
                // PROTOCOL.md §8.1: MIG_SENT, every local address gone: stop
                // T, start W. Already waiting: W keeps running.
                if m.phase != Phase::Wait {
                    self.enter_mig_wait(now, MigWaitCause::AddressLost, sh);
                } else {
                    self.push_event(Event::MigWait {
                        conn: self.id,
                        cause: MigWaitCause::AddressLost,
                    });
                }
                self.stop_ordinary_timers();
            }
        }
    }

    /// PROTOCOL.md §6.1 / DESIGN.md: a connection that cannot move ends
    /// with a clear error when its address goes. No RST: there is no
    /// address to send it from.
    fn fail_not_migratable(&mut self, sh: &mut Shared) {
        sh.stats.address_lost_closes += 1;
        self.fail_migration(MigrationFailure::NotMigratable, CloseReason::AddressLost);
    }

    /// Ends the connection because a move failed: the event first, so the
    /// application learns why before it sees the connection closed.
    fn fail_migration(&mut self, reason: MigrationFailure, close: CloseReason) {
        self.push_event(Event::MigrationFailed {
            conn: self.id,
            reason,
        });
        self.enter_closed(close);
    }

    /// Starts a move (PROTOCOL.md §6.2 / §9): to `new_local` (a new address
    /// of ours, same port) and/or `new_remote` (a peer location notice).
    /// Sustaining mode and every notice use the MSYN handshake;
    /// continuation mode uses Address-Update.
    pub(crate) fn start_move(
        &mut self,
        now: Instant,
        new_local: Option<SocketAddrV4>,
        new_remote: Option<SocketAddrV4>,
        sh: &mut Shared,
    ) -> Result<(), TcpError> {
        match self.state {
            State::Closed => return Err(super::closed_error(self.close_reason)),
            State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck => {}
            // PROTOCOL.md §8.1: no move in TIME-WAIT, SYN-SENT, SYN-RECEIVED.
            _ => return Err(TcpError::NotMigratable),
        }
        let ceiling = self.cfg.mig_t0_ceiling;
        let rto_before = self.rtt.rto();
        let use_msyn = self.cfg.mode != Mode::Continuation || new_remote.is_some();
        let Some(m) = self.mig.as_mut() else {
            return Err(TcpError::NotMigratable);
        };
        // T0 = min(1 s, RTO before the move), fixed for the episode: later
        // triggers in MIG_* would otherwise see the restarted RTO.
        let t0 = *m.t0.get_or_insert(rto_before.min(ceiling));
        m.stalled_since.get_or_insert(now);
        if let Some(local) = new_local {
            self.local = local;
            m.local_gone = false;
        }
        if let Some(remote) = new_remote {
            self.remote = remote;
        }
        m.pending = None;
        m.confirm = None;
        m.path_high = None;
        m.updating = None;
        if m.local_gone {
            // A notice while we have no address: remember where the peer
            // is; the MSYN goes when an address appears.
            return Ok(());
        }
        sh.stats.migrations_started += 1;
        if use_msyn {
            m.phase = Phase::Sent;
            m.move_first = m.requests.last().next();
            m.sent_times.clear();
            m.attempts = 0;
            m.interval = t0;
            m.deadline = Some(now + t0);
            m.msyn_pending = true;
        } else {
            // PROTOCOL.md §9 mover steps 1-3.
            m.phase = Phase::Normal;
            m.deadline = None;
            m.msyn_pending = false;
            let request = m.requests.take();
            let old_addr = m.confirmed_local;
            let token = m.keys.remote_token();
            let mac = m.keys.sign(&MacInput::AddressUpdate {
                token,
                request,
                old_addr,
            });
            m.updating = Some(Updating {
                option: AddressUpdate {
                    old_addr,
                    token: token.0,
                    request: request.0,
                    mac,
                },
                attempts: 0,
                interval: t0,
                deadline: now + t0,
            });
            sh.stats.address_updates_sent += 1;
        }
        let mode = if use_msyn {
            Mode::Sustain
        } else {
            Mode::Continuation
        };
        self.push_event(Event::MigrationStarted {
            conn: self.id,
            mode,
        });
        self.restart_path(now);
        if !use_msyn {
            // §9 mover step 2: new data first, the announcement if there
            // is no data.
            if let Some(m) = self.mig.as_mut() {
                m.new_data_first = true;
            }
            self.ack_now = true;
        }
        Ok(())
    }

    /// PROTOCOL.md §6.7: a mobility-server notice of the peer's location.
    pub(crate) fn on_peer_location(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
        sh: &mut Shared,
    ) -> Result<(), TcpError> {
        if self.mig.is_none() {
            return match self.state {
                State::Closed => Err(super::closed_error(self.close_reason)),
                _ => Err(TcpError::NotMigratable),
            };
        }
        match self.state {
            // Ignored in these states (§6.7 table).
            State::TimeWait | State::SynSent | State::SynReceived | State::Closed => Ok(()),
            _ => {
                // A direct location: the peer is no longer behind a relay.
                if let Some(m) = self.mig.as_mut() {
                    m.relay = None;
                }
                self.start_move(now, None, Some(remote), sh)
            }
        }
    }

    /// PROTOCOL.md §6.9: a RelayAssignment: the proxy at `proxy` is the
    /// peer from now on; MSYNs go there with `ticket` in place of Migrate.
    /// Otherwise exactly a peer location notice (§6.7).
    pub(crate) fn on_relay_location(
        &mut self,
        now: Instant,
        proxy: SocketAddrV4,
        ticket: HostTicket,
        sh: &mut Shared,
    ) -> Result<(), TcpError> {
        if self.mig.is_none() {
            return match self.state {
                State::Closed => Err(super::closed_error(self.close_reason)),
                _ => Err(TcpError::NotMigratable),
            };
        }
        match self.state {
            State::TimeWait | State::SynSent | State::SynReceived | State::Closed => Ok(()),
            _ => {
                if let Some(m) = self.mig.as_mut() {
                    m.relay = Some(ticket);
                }
                self.start_move(now, None, Some(proxy), sh)
            }
        }
    }

    /// The relay ticket in use, if the peer is a proxy.
    pub(crate) fn relay_ticket(&self) -> Option<HostTicket> {
        self.mig.as_ref().and_then(|m| m.relay)
    }

    // ----------------------------------------------------------------
    // Path restart (PROTOCOL.md §7)
    // ----------------------------------------------------------------

    /// A new path: RTT estimation and congestion control start over, and
    /// everything unacknowledged is sent again from SND.UNA.
    fn restart_path(&mut self, now: Instant) {
        // §7 careful resume: what the old path knew, before forgetting it
        // (a restart during a restart keeps the first path's figures).
        let saved = self.careful_resume_saved();
        if let Some(m) = self.mig.as_mut() {
            if saved.is_some() || m.resume.is_none() {
                m.resume = saved;
            }
        }
        // RFC 6298 §2.1: RTO back to its initial value until a sample.
        self.rtt.reset();
        // RFC 5681 §3.1: initial window, ssthresh arbitrarily high; RACK,
        // TLP, PRR, undo and pacing start over too.
        self.restart_congestion();
        self.scoreboard.clear();
        self.recovery = Recovery::None;
        self.dupacks = 0;
        self.cwnd_adjust = 0;
        self.retransmit_una = false;
        self.rescue_done = false;
        // As after an RTO (RFC 6675 §5.1): no loss recovery before what was
        // outstanding at the move is acknowledged; the go-back resend and
        // the RTO cover losses until then.
        self.recovery_point = self.snd_max;
        self.high_rxt = self.snd_una;
        self.rtt_probe = None;
        self.rewind_to_una();
        self.stop_ordinary_timers();
        self.retries = 0;
        self.extra_acks = 0;
        self.last_send = now;
        if let Some(m) = self.mig.as_mut() {
            m.catching_up = true;
            m.skip_base = None;
            m.new_data_first = false;
        }
    }

    fn stop_ordinary_timers(&mut self) {
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.persist_mode = false;
        self.persist_backoff = 0;
        self.probe_pending = false;
        self.unanswered_probes = 0;
        self.delack_deadline = None;
    }

    fn enter_mig_wait(&mut self, now: Instant, cause: MigWaitCause, sh: &mut Shared) {
        let wait = self.cfg.mig_wait;
        if let Some(m) = self.mig.as_mut() {
            m.phase = Phase::Wait;
            m.deadline = Some(now + wait);
            m.msyn_pending = false;
            m.pending = None;
            m.confirm = None;
            m.stalled_since.get_or_insert(now);
        }
        sh.stats.mig_wait_entries += 1;
        self.stop_ordinary_timers();
        self.push_event(Event::MigWait {
            conn: self.id,
            cause,
        });
    }

    pub(super) fn set_careful_resume(&mut self, resume: Option<super::resume::CarefulResume>) {
        if let Some(m) = self.mig.as_mut() {
            m.resume = resume;
        }
    }

    fn path_resumed(&mut self, now: Instant) {
        let snd_una = self.snd_una;
        if let Some(m) = self.mig.as_mut() {
            Connection::careful_resume_start(&mut m.resume, snd_una);
        }
        if let Some(since) = self.mig.as_mut().and_then(|m| m.stalled_since.take()) {
            self.push_event(Event::Resumed {
                conn: self.id,
                stall: now - since,
            });
        }
        if let Some(m) = self.mig.as_mut() {
            m.t0 = None;
        }
    }

    // ----------------------------------------------------------------
    // Fast resume (PROTOCOL.md §7)
    // ----------------------------------------------------------------

    /// The peer's received offset says it has everything below `received`:
    /// SND.UNA advances there as a cumulative ACK would (send buffer, FIN,
    /// state), but without an RTT sample or congestion-window growth: the
    /// bytes crossed the old path. Bounded by SND.MAX (RFC 5961 §5.2: no
    /// acknowledgement of what was never sent).
    pub(super) fn accept_peer_received(
        &mut self,
        now: Instant,
        received: SeqNumber,
        sh: &mut Shared,
    ) {
        let received = received.min(self.snd_max);
        if received <= self.snd_una {
            return;
        }
        let base = self.snd_una;
        let new_start = received.min(self.data_end());
        if new_start > self.snd_buf_start {
            let consumed = new_start - self.snd_buf_start;
            self.snd_buf.consume(consumed);
            self.snd_buf_start = new_start;
        }
        sh.stats.resume_skipped_bytes += (received - base) as u64;
        self.snd_una = received;
        self.snd_nxt = self.snd_nxt.max(received);
        self.high_rxt = self.high_rxt.max(received);
        self.retries = 0;
        if let Some(m) = self.mig.as_mut() {
            m.skip_base.get_or_insert(base);
        }
        tracing::debug!(conn = ?self.id, skipped = received - base, "fast resume");
        // RFC 9293 §3.10.7.4 fifth check, as for an ACK of our FIN.
        match self.state {
            State::FinWait1 if self.fin_acked() => self.state = State::FinWait2,
            State::Closing if self.fin_acked() => self.enter_time_wait(now),
            State::LastAck if self.fin_acked() => self.enter_closed(CloseReason::Normal),
            _ => {}
        }
        if self.writable_armed && self.fin_seq.is_none() && self.send_room() > 0 {
            self.writable_armed = false;
            self.push_event(Event::Writable(self.id));
        }
    }

    /// After a fast resume the peer's ACKs on the new path stay below our
    /// SND.UNA until the clamp of §7 ends on its side; their window counts
    /// from their ACK field, so their right edge SEG.ACK + SEG.WND is the
    /// window (RFC 9293 §3.8.6: the right edge never moves left). Called
    /// from the ACK processing after the RFC 9293 window update.
    pub(super) fn window_from_clamped_ack(&mut self, seg: &TcpRepr<'_>, window: usize) {
        let Some(base) = self.mig.as_ref().and_then(|m| m.skip_base) else {
            return;
        };
        if seg.ack >= self.snd_una {
            // The peer caught up: the ordinary rule applies from now on.
            if let Some(m) = self.mig.as_mut() {
                m.skip_base = None;
            }
            return;
        }
        if seg.ack < base || seg.seq < self.snd_wl1 {
            return;
        }
        let edge = seg.ack + window;
        if edge > self.snd_una + self.snd_wnd {
            self.snd_wnd = edge - self.snd_una;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
        }
    }

    /// The window field for a segment acking `ack`: while the clamp of §7
    /// holds the ACK field lies below RCV.NXT and the window counts from
    /// it, so the right edge the peer and any tracker (§10, td_maxend)
    /// learn is RCV.NXT + the window.
    pub(super) fn window_field_for(&self, field: u16, ack: SeqNumber) -> u16 {
        if ack >= self.rcv_nxt {
            return field;
        }
        let bytes = ((field as usize) << self.rcv_wscale) + (self.rcv_nxt - ack);
        (bytes >> self.rcv_wscale).min(u16::MAX as usize) as u16
    }

    // ----------------------------------------------------------------
    // Responder: MSYN (PROTOCOL.md §6.3)
    // ----------------------------------------------------------------

    /// An MSYN naming this connection's token (steps 1-2 done by the
    /// endpoint). Every failure is a silent, counted drop.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_msyn(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
        migrate: &Migrate,
        permit: &MigratePermit,
        rng: &mut dyn Random,
        sh: &mut Shared,
    ) {
        // Step 3. SYN-RECEIVED (§6.3 step 8 special case) is not supported
        // yet (PROTOCOL.md §13.6): that rare connection times out instead.
        let state_ok = matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait
        );
        let rto_before = self.rtt.rto();
        let ceiling = self.cfg.mig_t0_ceiling;
        let Some(m) = self.mig.as_mut().filter(|_| state_ok) else {
            sh.stats.msyns_refused += 1;
            return;
        };
        // Step 4 (§11.8): the per-connection and endpoint MAC budgets.
        if !m.mac_limit.allow(now) || !sh.mac_budget.allow(now) {
            sh.stats.mac_rate_limited += 1;
            return;
        }
        // Steps 5 (replay) and 6 (MAC over the Permit's direct address,
        // K = remote || local).
        let request = RequestNumber(migrate.request);
        let accepted = m.pending.map(|p| Accepted {
            request: p.request,
            direct: p.direct,
        });
        match handshake::check_msyn(
            &m.keys,
            &m.replay,
            accepted,
            remote == self.remote,
            migrate,
            permit,
        ) {
            MsynVerdict::Accept => {}
            MsynVerdict::AnswerAgain => {
                // A network duplicate of the accepted MSYN: answer it with
                // the same MSYN-ACK while the path is unconfirmed.
                if let Some(p) = m.pending.as_mut() {
                    p.send_now = true;
                }
                return;
            }
            MsynVerdict::Repeat => {
                sh.stats.repeat_requests += 1;
                m.forged += 1;
                return;
            }
            MsynVerdict::Stale => {
                sh.stats.stale_requests += 1;
                m.forged += 1;
                return;
            }
            MsynVerdict::BadMac => {
                sh.stats.mac_failures += 1;
                m.forged += 1;
                return;
            }
        }
        // Step 7: RCV.NXT - MAX.RCV.WND <= MSYN.seq + 1 <= RCV.NXT.
        let mover_una = seg.seq + 1;
        if !handshake::syn_seq_plausible(seg.seq, self.rcv_nxt, self.rcv_buf.max()) {
            sh.stats.msyns_refused += 1;
            return;
        }
        // Step 8: accept.
        m.replay.accept(request);
        let t0 = *m.t0.get_or_insert(rto_before.min(ceiling));
        m.phase = Phase::Normal;
        m.deadline = None;
        m.msyn_pending = false;
        m.updating = None;
        m.local_gone = false;
        m.confirm = None;
        m.peer_behind_napt = permit.direct() != remote;
        m.confirmed_local = *local.ip();
        // The peer reached us directly: no relay in between any more.
        m.relay = None;
        m.pending = Some(Pending {
            request,
            nonce: new_nonce(rng),
            direct: permit.direct(),
            ack: mover_una,
            attempts: 0,
            interval: t0,
            deadline: now + t0,
            send_now: true,
            window_ack: false,
            first_sent: None,
            retransmitted: false,
        });
        m.path_high = (mover_una < self.rcv_nxt || !self.assembler.is_empty()).then_some(mover_una);
        m.peer_moves += 1;
        let behind_napt = m.peer_behind_napt;
        sh.stats.moves_accepted += 1;
        self.local = local;
        self.remote = remote;
        // Send MSS := min(MSYN's MSS, own limit) for the new path.
        self.peer_mss = seg.mss.unwrap_or(DEFAULT_PEER_MSS).max(MIN_PEER_MSS);
        self.recompute_smss();
        self.restart_path(now);
        // The MSYN's window is a SYN window, never scaled (RFC 7323 §2.2).
        self.snd_wnd = seg.window as usize;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = self.snd_una;
        self.push_event(Event::PeerMoved {
            conn: self.id,
            new_remote: remote,
            behind_napt,
        });
        tracing::debug!(conn = ?self.id, %remote, behind_napt, r = request.0, "MSYN accepted");
    }

    fn recompute_smss(&mut self) {
        let ts = if self.ts_enabled {
            TIMESTAMP_OPTION_LEN
        } else {
            0
        };
        self.smss = self.mss_base().saturating_sub(ts).max(1);
    }

    // ----------------------------------------------------------------
    // Mover: MSYN-ACK (PROTOCOL.md §6.4) and RST (§6.8)
    // ----------------------------------------------------------------

    /// Segments migration handles before RFC 9293 processing in a
    /// synchronized state. Returns true if the segment was consumed.
    pub(super) fn migration_input(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
        sh: &mut Shared,
    ) -> bool {
        // The Confirm answering an MSYN-ACK has not left yet (it goes with
        // the next ACK we send).
        let confirm_unsent = self.ack_now;
        let Some(m) = self.mig.as_mut() else {
            return false;
        };
        let flags = seg.flags;
        if flags.rst() {
            return match m.phase {
                // §6.8: a refusal must ack exactly MSYN.seq + 1.
                Phase::Sent => {
                    if flags.ack() && seg.ack == self.snd_una {
                        sh.stats.resets_received += 1;
                        self.enter_mig_wait(now, MigWaitCause::Refused, sh);
                    }
                    true
                }
                // §6.8: no MSYN is outstanding in MIG_WAIT.
                Phase::Wait => true,
                Phase::Normal => false,
            };
        }
        if flags.syn() && flags.ack() {
            if let Some(MigrateOption::MsynAck(ack)) = options.migrate {
                self.on_msyn_ack(now, seg, &ack, sh);
                return true;
            }
            if let (Some(RelayTicket::MsynAck(ack)), Some(_)) = (options.relay(), m.relay) {
                self.on_relay_msyn_ack(now, seg, &ack, sh);
                return true;
            }
            if m.phase == Phase::Sent {
                // §10: a SYN-ACK without Migrate answers an option-stripped
                // MSYN as a connection request: free the listener's
                // half-open entry with <SEQ=SEG.ACK><CTL=RST>.
                sh.queue_control(ControlSegment {
                    local: self.local,
                    remote: self.remote,
                    seq: seg.ack,
                    ack: SeqNumber(0),
                    flags: TcpFlags::RST,
                });
                sh.stats.msyn_acks_refused += 1;
                return true;
            }
            return false;
        }
        if !flags.syn() {
            // §6.4 step 7: anything but an MSYN-ACK from the responder ends
            // the Confirm echo, once the Confirm has been sent: a segment
            // the responder sent right behind its MSYN-ACK (the window ACK
            // of §7) can arrive in the same receive batch, before we answer.
            // Only what the responder sent after it had the Confirm counts:
            // data, or an ACK beyond MSYN.seq + 1 (its window ACK and
            // retransmitted MSYN-ACKs do not), so the echo ends the same way
            // whatever order the two arrive in.
            let after_confirm = !seg.payload.is_empty()
                || (flags.ack() && m.confirm_floor.is_some_and(|floor| seg.ack > floor));
            if !confirm_unsent && after_confirm {
                m.confirm = None;
            }
            // §6.5: the mover's Confirm.
            let confirmed = m.pending.and_then(|p| {
                handshake::confirm_matches(options, p.request, p.nonce).map(|r| (p, r))
            });
            if let Some((p, received)) = confirmed {
                {
                    m.pending = None;
                    sh.stats.paths_confirmed += 1;
                    // §7 fast resume: the mover already has everything
                    // below SEG.ACK + received (the nonce binds the offset
                    // to the MSYN-ACK's receiver).
                    if let (Some(received), true) = (received, flags.ack()) {
                        self.accept_peer_received(now, seg.ack + received as usize, sh);
                    }
                    // §7: the Confirm's TSecr echoes the MSYN-ACK's TSval:
                    // the first RTT sample of the new path.
                    match (self.ts_enabled, seg.timestamps) {
                        (true, Some(ts)) => self.rtt_sample_from_tsecr(now, ts.tsecr),
                        _ => {
                            if let (false, Some(sent)) = (p.retransmitted, p.first_sent) {
                                self.rtt.on_sample(now - sent);
                            }
                        }
                    }
                    tracing::debug!(conn = ?self.id, "path confirmed");
                    self.path_resumed(now);
                }
            }
            // §9 mover step 4: any segment from the peer at the new address
            // confirms an Address-Update (the peer sends there only after
            // accepting it; even a duplicate the sequence check rejects).
            if let Some(m) = self.mig.as_mut() {
                if m.updating.is_some() && m.phase == Phase::Normal {
                    m.updating = None;
                    m.confirmed_local = *self.local.ip();
                    m.moves += 1;
                    sh.stats.migrations_completed += 1;
                    self.path_resumed(now);
                }
            }
        }
        false
    }

    fn on_msyn_ack(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        ack: &crate::wire::MigrateAck,
        sh: &mut Shared,
    ) {
        // Steps 2-3, then 1 and 4: our token; MAC, K = remote || local,
        // over our Permit's address.
        let request = RequestNumber(ack.request);
        if !self.msyn_ack_matches(seg, request, sh) {
            return;
        }
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        if !handshake::verify_msyn_ack(&m.keys, ack, m.sent_direct) {
            if ack.token == m.local_token.0 {
                sh.stats.mac_failures += 1;
                m.forged += 1;
            } else {
                sh.stats.msyn_acks_refused += 1;
            }
            return;
        }
        self.msyn_ack_verified(now, seg, request, ack.nonce, ack.received, sh);
    }

    /// PROTOCOL.md §6.9: the proxy's MSYN-ACK, authenticated with our
    /// relay ticket instead of the connection keys; then as §6.4.
    fn on_relay_msyn_ack(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        ack: &RelayMsynAck,
        sh: &mut Shared,
    ) {
        let request = RequestNumber(ack.request);
        if !self.msyn_ack_matches(seg, request, sh) {
            return;
        }
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        let Some(ticket) = m.relay else {
            return;
        };
        if !handshake::verify_relay_msyn_ack(&ticket, ack, m.sent_direct) {
            sh.stats.mac_failures += 1;
            m.forged += 1;
            return;
        }
        self.msyn_ack_verified(now, seg, request, ack.nonce, Some(ack.received), sh);
    }

    /// §6.4 steps 2-3: `request` was sent during the current move and the
    /// ACK field is MSYN.seq + 1 of that transmission (SND.UNA when it
    /// was sent). Counts a refusal.
    fn msyn_ack_matches(
        &mut self,
        seg: &TcpRepr<'_>,
        request: RequestNumber,
        sh: &mut Shared,
    ) -> bool {
        let snd_una = self.snd_una;
        let Some(m) = self.mig.as_ref() else {
            return false;
        };
        let msyn_una = m
            .sent_times
            .iter()
            .find(|(r, ..)| *r == request)
            .map_or(snd_una, |&(.., una)| una);
        let ok = m.in_current_move(request) && seg.ack == msyn_una;
        if !ok {
            sh.stats.msyn_acks_refused += 1;
        }
        ok
    }

    /// §6.4 steps 5-8 once the MSYN-ACK (direct or relay) is authentic.
    fn msyn_ack_verified(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        request: RequestNumber,
        nonce: u32,
        received: Option<u32>,
        sh: &mut Shared,
    ) {
        let rcv_nxt = self.rcv_nxt;
        let max_window = self.rcv_buf.max();
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        // Step 5: sequence sanity.
        let responder_una = seg.seq + 1;
        if !handshake::syn_seq_plausible(seg.seq, rcv_nxt, max_window) {
            sh.stats.msyn_acks_refused += 1;
            return;
        }
        sh.stats.msyn_acks_accepted += 1;
        m.confirm = Some((request, nonce));
        m.confirm_now = true;
        m.confirm_floor = Some(seg.ack);
        m.confirm_exact = received.is_some();
        self.ack_now = true;
        if m.phase != Phase::Sent {
            // Step 8: a repeat (lost Confirm) or the answer to an MSYN that
            // crossed the peer's: re-confirm, change nothing else.
            return;
        }
        // Step 6.
        let sent = m
            .sent_times
            .iter()
            .find(|(r, ..)| *r == request)
            .map(|&(_, at, _)| at);
        m.phase = Phase::Normal;
        m.deadline = None;
        m.msyn_pending = false;
        m.confirmed_local = *self.local.ip();
        m.path_high =
            (responder_una < rcv_nxt || !self.assembler.is_empty()).then_some(responder_una);
        m.moves += 1;
        sh.stats.migrations_completed += 1;
        // The request number names the transmission: no Karn ambiguity.
        if let Some(sent) = sent {
            self.rtt.on_sample(now - sent);
        }
        if let (true, Some(ts)) = (self.ts_enabled, seg.timestamps) {
            // The MAC authenticates the MSYN-ACK; it is exempt from PAWS.
            self.ts_recent = ts.tsval;
            self.ts_recent_time = now;
        }
        // §7 fast resume: the responder already has everything below
        // SEG.ACK + received; the MAC vouches for the offset.
        if let Some(received) = received {
            self.accept_peer_received(now, seg.ack + received as usize, sh);
        }
        // The MSYN-ACK's window is a SYN window, never scaled, and counts
        // from its ACK field: keep its right edge.
        let right_edge = seg.ack + seg.window as usize;
        if let Some(m) = self.mig.as_mut() {
            m.synack_edge = Some(right_edge);
        }
        self.snd_wnd = if right_edge > self.snd_una {
            right_edge - self.snd_una
        } else {
            0
        };
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.rewind_to_una();
        tracing::debug!(conn = ?self.id, r = request.0, "MSYN-ACK accepted");
        self.path_resumed(now);
    }

    /// §7: raise path_high with a segment that crossed the new path.
    ///
    /// The clamp ends only when path_high covers RCV.NXT *and* the
    /// reassembly queue is empty: out-of-order data that arrived on the old
    /// path before the move would otherwise carry RCV.NXT past what the new
    /// path's NAPT has seen as soon as a resent segment fills the hole.
    pub(super) fn note_path_segment(&mut self, seg: &TcpRepr<'_>) {
        let rcv_nxt = self.rcv_nxt;
        let max_window = self.rcv_buf.max();
        let nothing_queued = self.assembler.is_empty();
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        let Some(high) = m.path_high else {
            return;
        };
        // §10: a tracker learns td_end only from segments that occupy
        // sequence space; an empty ACK's SEG.SEQ tells it nothing.
        if seg.segment_len() == 0 {
            return;
        }
        let end = seg.seq + seg.segment_len();
        let plausible = seg.seq >= rcv_nxt - max_window && end <= rcv_nxt + max_window;
        let high = if end > high && plausible { end } else { high };
        m.path_high = (high < rcv_nxt || !nothing_queued).then_some(high);
    }

    /// Whether the path was moved and the peer's resent data is still
    /// catching up with RCV.NXT.
    pub(super) fn clamp_active(&self) -> bool {
        self.mig.as_ref().is_some_and(|m| m.path_high.is_some())
    }

    // ----------------------------------------------------------------
    // Receiver: Address-Update (PROTOCOL.md §9)
    // ----------------------------------------------------------------

    /// A segment from an unknown 4-tuple whose Address-Update names us.
    pub(crate) fn on_address_update(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr<'_>,
        options: &MigrationOptions<'_>,
        sh: &mut Shared,
    ) {
        let Some(update) = options.address_update else {
            return;
        };
        let state_ok = matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait
        );
        let Some(m) = self.mig.as_mut().filter(|_| state_ok) else {
            sh.stats.msyns_refused += 1;
            return;
        };
        if !m.mac_limit.allow(now) || !sh.mac_budget.allow(now) {
            sh.stats.mac_rate_limited += 1;
            return;
        }
        // Step 2: only a fresh request moves a connection.
        let request = RequestNumber(update.request);
        match m.replay.check(request) {
            RequestCheck::Fresh => {}
            RequestCheck::Repeat => {
                sh.stats.repeat_requests += 1;
                m.forged += 1;
                return;
            }
            RequestCheck::Stale => {
                sh.stats.stale_requests += 1;
                m.forged += 1;
                return;
            }
        }
        // Step 3: MAC, K = remote || local.
        let input = MacInput::AddressUpdate {
            token: m.keys.local_token(),
            request,
            old_addr: update.old_addr,
        };
        if !m.keys.verify(&input, &update.mac) {
            sh.stats.mac_failures += 1;
            m.forged += 1;
            return;
        }
        // Step 4: logged, not refused.
        if update.old_addr != *self.remote.ip() {
            tracing::debug!(conn = ?self.id, old = %update.old_addr, current = %self.remote,
                "Address-Update names another old address");
        }
        // Step 5: accept.
        m.replay.accept(request);
        m.phase = Phase::Normal;
        m.deadline = None;
        m.msyn_pending = false;
        m.pending = None;
        m.confirm = None;
        m.local_gone = false;
        m.path_high = None;
        m.peer_behind_napt = false;
        m.confirmed_local = *local.ip();
        m.peer_moves += 1;
        sh.stats.moves_accepted += 1;
        self.local = local;
        self.remote = remote;
        self.restart_path(now);
        // The reply to the new address is the confirmation.
        self.ack_now = true;
        self.push_event(Event::PeerMoved {
            conn: self.id,
            new_remote: remote,
            behind_napt: false,
        });
        self.path_resumed(now);
        // Then process the segment normally; on the matching 4-tuple its
        // Address-Update is ignored.
        self.input(now, seg, options, sh);
    }

    // ----------------------------------------------------------------
    // Timers
    // ----------------------------------------------------------------

    pub(super) fn migration_deadline(&self) -> Option<Instant> {
        let m = self.mig.as_ref()?;
        Instant::earliest([
            m.deadline,
            m.pending.map(|p| p.deadline),
            m.updating.map(|u| u.deadline),
        ])
    }

    /// Runs the migration timers due at `now`.
    pub(super) fn migration_timeout(&mut self, now: Instant, sh: &mut Shared) {
        let retries = self.cfg.msyn_retries;
        let au_retries = self.cfg.address_update_retries;
        let max_rto = self.cfg.max_rto;
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        if m.deadline.is_some_and(|t| now >= t) {
            m.deadline = None;
            let phase = m.phase;
            match phase {
                Phase::Sent if m.attempts < retries => {
                    // §8.1: r += 1, resend, n++, T := min(2T, max RTO).
                    m.attempts += 1;
                    m.interval = (m.interval * 2).min(max_rto);
                    m.deadline = Some(now + m.interval);
                    m.msyn_pending = true;
                }
                Phase::Sent => self.enter_mig_wait(now, MigWaitCause::MsynUnanswered, sh),
                Phase::Wait => {
                    // §8.1: W expires: error MigrationTimedOut.
                    sh.stats.migration_timeouts += 1;
                    self.fail_migration(
                        MigrationFailure::MigWaitExpired,
                        CloseReason::MigrationTimedOut,
                    );
                    return;
                }
                Phase::Normal => {}
            }
        }
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        if let Some(p) = m.pending.as_mut().filter(|p| now >= p.deadline) {
            if p.attempts < retries {
                // §6.5: resend the MSYN-ACK unchanged but for TSval.
                p.attempts += 1;
                p.interval = (p.interval * 2).min(max_rto);
                p.deadline = now + p.interval;
                p.send_now = true;
                p.retransmitted = true;
            } else {
                // §6.5: the peer is not reachable where its MSYN came from.
                m.pending = None;
                self.enter_mig_wait(now, MigWaitCause::ConfirmMissing, sh);
            }
        }
        let Some(m) = self.mig.as_mut() else {
            return;
        };
        if let Some(u) = m.updating.as_mut().filter(|u| now >= u.deadline) {
            if u.attempts < au_retries {
                // §9 mover step 5: resend the first unacknowledged segment
                // (or the announcement) with the option.
                u.attempts += 1;
                u.interval = (u.interval * 2).min(max_rto);
                u.deadline = now + u.interval;
                if self.snd_una < self.snd_max {
                    self.retransmit_una = true;
                } else {
                    self.ack_now = true;
                }
            } else {
                // §9: still unanswered: drop the connection, no RST.
                m.updating = None;
                sh.stats.migration_timeouts += 1;
                self.fail_migration(
                    MigrationFailure::AddressUpdateUnanswered,
                    CloseReason::MigrationTimedOut,
                );
            }
        }
    }

    // ----------------------------------------------------------------
    // Output
    // ----------------------------------------------------------------

    /// What migration sends or blocks in a synchronized state: `Some(x)`
    /// is the answer to `poll_transmit` (a handshake segment or nothing),
    /// `None` lets ordinary output run.
    pub(super) fn migration_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        sh: &mut Shared,
    ) -> Option<Option<usize>> {
        let m = self.mig.as_ref()?;
        match m.phase {
            Phase::Sent if m.msyn_pending && !m.local_gone => {
                return Some(self.send_msyn(now, buf, sh));
            }
            Phase::Sent | Phase::Wait => return Some(None),
            Phase::Normal => {}
        }
        if m.local_gone {
            return Some(None);
        }
        if m.confirm_now && m.pending.is_none() && m.confirm.is_some() {
            // §6.4 step 7: after a fast resume the Confirm sits at SND.UNA,
            // the responder's RCV.NXT. Beyond the MSYN-ACK's right edge a
            // NAPT on the new path (Linux conntrack: `before(seq,
            // td_maxend + 1)`, pure ACKs included) drops it until the
            // responder's window ACK (§6.3 step 9) has passed: so it waits
            // for that ACK (or any segment behind the MSYN-ACK,
            // `window_ack_passed`). Any segment we could send meanwhile
            // would sit there too.
            if m.confirm_exact
                && self.snd_wnd == 0
                && m.synack_edge.is_some_and(|edge| self.snd_una > edge)
            {
                return Some(None);
            }
            // §6.4 step 7: the Confirm leaves now, on its own: the responder
            // confirms the path a pacing interval sooner, and the Confirm is
            // one segment whether or not data is ready.
            return Some(self.send_confirm(now, buf, sh));
        }
        if let Some(p) = m.pending {
            // §6.3 step 10: nothing but the MSYN-ACK until confirmed...
            if p.send_now {
                return Some(self.send_msyn_ack(now, buf, p, sh));
            }
            // §7, §10: a SYN window cannot reach our right edge, and a NAPT
            // on the new path would drop the mover's resumed data beyond
            // MSYN.seq + 1 + that window (td_maxend). One pure ACK with the
            // scaled window, acking MSYN.seq + 1, lets it through.
            if p.window_ack {
                return Some(self.send_window_ack(now, buf, sh));
            }
            // ...except, when MSYNs crossed (§6.6), the Confirm answering
            // the MSYN-ACK to our own MSYN: it carries the nonce the peer
            // waits for.
            if m.confirm.is_some() && self.ack_now {
                return Some(self.send_confirm(now, buf, sh));
            }
            return Some(None);
        }
        None
    }

    /// A non-SYN segment from the peer arrived: whatever the responder
    /// sent right behind its MSYN-ACK has passed the new path's NAPT
    /// (§6.4 step 7), so the Confirm no longer waits for the window.
    pub(super) fn window_ack_passed(&mut self) {
        if let Some(m) = self.mig.as_mut() {
            m.synack_edge = None;
        }
    }

    /// The responder's pure ACK right after an MSYN-ACK (§7): the ACK
    /// clamp's ACK field with the scaled window counted from it.
    fn send_window_ack(&mut self, now: Instant, buf: &mut [u8], sh: &mut Shared) -> Option<usize> {
        if let Some(p) = self.mig.as_mut().and_then(|m| m.pending.as_mut()) {
            p.window_ack = false;
        }
        let mut seg: TcpRepr<'_> = self.header(now, TcpFlags::ACK);
        // §10: right behind the MSYN-ACK (seq = SND.UNA - 1), all a NAPT on
        // the new path allows from us is seq <= SND.UNA (Linux conntrack:
        // td_maxend is the SYN-ACK's end until the mover's first ACK);
        // SND.MAX, with our data in flight, or the mover's SYN window
        // counted from SND.UNA would be over that bound and dropped.
        seg.seq = self.snd_una;
        self.emit(now, buf, &seg, sh)
    }

    /// A pure ACK carrying Confirm (§6.4 steps 7 and 8).
    fn send_confirm(&mut self, now: Instant, buf: &mut [u8], sh: &mut Shared) -> Option<usize> {
        let exact = self.mig.as_ref().is_some_and(|m| m.confirm_exact);
        if let Some(m) = self.mig.as_mut() {
            m.confirm_now = false;
        }
        let options = self.segment_options();
        let mut scratch = MigrationScratch::default();
        let mut seg: TcpRepr<'_> = self.header(now, TcpFlags::ACK);
        // §7: after a fast resume SND.UNA is the responder's declared RCV.NXT,
        // the one value it accepts exactly; otherwise the pure-ACK rule.
        seg.seq = if exact {
            self.snd_una
        } else {
            self.pure_ack_seq()
        };
        options.attach(&mut scratch, &mut seg).ok()?;
        self.emit(now, buf, &seg, sh)
    }

    /// An MSYN (PROTOCOL.md §6.2 step 3, §5.3, §7); to a relay, with the
    /// Relay-Ticket in place of Migrate (§6.9).
    fn send_msyn(&mut self, now: Instant, buf: &mut [u8], sh: &mut Shared) -> Option<usize> {
        let direct = self.local;
        let snd_una = self.snd_una;
        let window = self.rcv_buf.free().min(u16::MAX as usize) as u16;
        let window_scale = self.ws_enabled.then_some(self.rcv_wscale);
        let m = self.mig.as_mut()?;
        let request = m.requests.take();
        let mut ticket_scratch = OptionScratch::default();
        let options = match m.relay {
            Some(ticket) => MigrationOptions {
                permit: Some(handshake::short_permit(direct)),
                relay_ticket: Some(
                    handshake::relay_msyn_option(&ticket, request, direct, self.rcv_nxt)
                        .to_option(&mut ticket_scratch)
                        .data,
                ),
                ..MigrationOptions::default()
            },
            None => handshake::msyn_options(&m.keys, request, direct),
        };
        m.msyn_pending = false;
        m.sent_direct = direct;
        if m.sent_times.len() == SENT_TIMES {
            m.sent_times.pop_front();
        }
        m.sent_times.push_back((request, now, snd_una));
        m.msyns_sent += 1;
        let attempt = m.attempts + 1;
        let mut scratch = MigrationScratch::default();
        let mut seg = handshake::msyn_header(
            self.local.port(),
            self.remote.port(),
            snd_una,
            window,
            self.cfg.mss,
            window_scale,
        );
        if options.relay_ticket.is_some() {
            // §6.9: a relay MSYN carries RCV.NXT in its ACK field (the ACK
            // bit stays clear), so the proxy can tell the other end where
            // to resume; the MAC covers it.
            seg.ack = self.rcv_nxt;
        }
        options.attach(&mut scratch, &mut seg).ok()?;
        let n = self.emit_handshake(now, buf, &seg, sh)?;
        sh.stats.msyns_sent += 1;
        self.push_event(Event::MsynSent {
            conn: self.id,
            attempt,
        });
        tracing::debug!(conn = ?self.id, r = request.0, attempt, "MSYN sent");
        Some(n)
    }

    /// An MSYN-ACK (PROTOCOL.md §6.3 step 9, §5.4).
    fn send_msyn_ack(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        pending: Pending,
        sh: &mut Shared,
    ) -> Option<usize> {
        // §7 fast resume: RCV.NXT relative to the MSYN-ACK's own ACK field
        // (exactly MSYN.seq + 1), and the window counted from that field
        // too, so the right edge is ours (§10: td_maxend).
        let received = self.rcv_nxt - pending.ack;
        let right = received + self.rcv_buf.free();
        let window = right.min(u16::MAX as usize) as u16;
        let window_scale = self.ws_enabled.then_some(self.rcv_wscale);
        let timestamps = self.ts_enabled.then(|| Timestamps {
            tsval: self.ts_now(now),
            tsecr: 0,
        });
        let m = self.mig.as_mut()?;
        let options = MigrationOptions {
            migrate: Some(handshake::msyn_ack_option(
                &m.keys,
                pending.request,
                pending.nonce,
                pending.direct,
                handshake::msyn_ack_received(self.rcv_nxt, pending.ack),
            )),
            ..MigrationOptions::default()
        };
        let window_ack = window_scale.is_some() && right > u16::MAX as usize;
        if let Some(p) = m.pending.as_mut() {
            p.send_now = false;
            p.window_ack = window_ack;
            p.first_sent.get_or_insert(now);
        }
        m.msyn_acks_sent += 1;
        let mut scratch = MigrationScratch::default();
        let mut seg = handshake::msyn_ack_header(
            self.local.port(),
            self.remote.port(),
            self.snd_una,
            pending.ack,
            window,
            window_scale,
            timestamps,
        );
        options.attach(&mut scratch, &mut seg).ok()?;
        let n = self.emit_handshake(now, buf, &seg, sh)?;
        sh.stats.msyn_acks_sent += 1;
        Some(n)
    }
}
