//! Loss recovery of a SACK connection: where the connection calls RACK
//! (`rack.rs`), TLP (`tlp.rs`), PRR (`prr.rs`), the undo of spurious
//! reductions (`undo.rs`), pacing (`pacing.rs`) and its congestion
//! controller, on ACK, on timer and on send.
//!
//! Read first: RFC 8985 §6-§7 (RACK-TLP), RFC 6937 (PRR), RFC 2883 §4 and
//! RFC 3708 (D-SACK and undo), RFC 6675 §4-§5 (what "pipe" is) and
//! PROTOCOL.md §7 (a new path restarts all of it).
//!
//! The sender keeps one record per segment in flight (`sent.rs`). Losses
//! are marked by RACK (by time, not by counting duplicate ACKs), and
//! after an RTO every outstanding segment is marked lost; marked segments
//! are resent lowest first before new data. A resent segment that is lost
//! again is marked again by RACK once a later segment is delivered, and
//! resent without waiting for the RTO. Without SACK the connection keeps
//! RFC 6582 NewReno (in connection.rs).

use super::{Connection, Plan, Recovery, SendKind, Shared};
use crate::tcp::congestion::{AckSample, LostSegment, RateSample};
use crate::tcp::pacing::Pacer;
use crate::tcp::prr::Prr;
use crate::tcp::rack::Rack;
use crate::tcp::sent::{RateSnapshot, Segment, SentLog};
use crate::tcp::tlp::{Tlp, TlpOutcome};
use crate::tcp::undo::{dsack_block, Prior, Spurious, Undo};
use crate::time::{Duration, Instant};
use crate::wire::{SackBlock, SeqNumber, TcpRepr};

/// Per-connection loss-recovery state (SACK connections), besides the
/// RFC 6675 variables the connection already has (RecoveryPoint, the
/// scoreboard).
#[derive(Debug, Default)]
pub(super) struct LossRecovery {
    pub(super) log: SentLog,
    pub(super) rack: Rack,
    pub(super) tlp: Tlp,
    pub(super) prr: Prr,
    pub(super) undo: Undo,
    pub(super) pacer: Pacer,
    /// The next transmission is the TLP probe and it was planned.
    probing: bool,
    /// Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation
    /// §3.1): C.delivered, C.delivered_time, C.first_sent_time.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    /// C.app_limited: the delivered count until which samples are
    /// application-limited.
    app_limited_until: u64,
    /// C.lost (draft-ietf-ccwg-bbr §2.2): bytes marked lost so far.
    lost_total: u64,
    /// cwnd held data back while SND.MAX was here; the connection is
    /// cwnd-limited until SND.UNA passes it (one round trip, RFC 7661 §4.3).
    cwnd_limited_until: Option<SeqNumber>,
    /// Receiver side: a duplicate segment arrived; the next ACK reports it
    /// first as a D-SACK (RFC 2883 §4).
    pub(super) dsack_rx: Option<SackBlock>,
}

impl LossRecovery {
    pub(super) fn new() -> LossRecovery {
        LossRecovery::default()
    }
}

impl Connection {
    /// The send time a TSecr names, on our clock (ms resolution).
    fn echoed_time(&self, seg: &TcpRepr<'_>) -> Option<Instant> {
        let ts = seg.timestamps.filter(|_| self.ts_enabled)?;
        let ms = ts.tsecr.wrapping_sub(self.ts_offset);
        // Our timestamp clock is `now` in ms truncated to 32 bits; rebuild
        // the full value near the last send.
        let now_ms = self.last_send.total_millis();
        let hi = now_ms & !0xFFFF_FFFF;
        let mut full = hi | u64::from(ms);
        if full > now_ms + (1 << 31) {
            full = full.saturating_sub(1 << 32);
        }
        Some(Instant::from_millis(full))
    }

    /// Whether the connection is recovering: fast recovery, or the
    /// RTO's recovery until everything outstanding at the timeout is
    /// acknowledged.
    fn recovering(&self) -> bool {
        self.recovery != Recovery::None || self.snd_una < self.recovery_point
    }

    /// RFC 8985 §6.2, RFC 6937, RFC 3708 on one acceptable ACK of a SACK
    /// connection. `data_acked` is what the cumulative ACK freed from the
    /// send buffer; SND.UNA is already advanced.
    pub(super) fn on_ack_sack(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
        advanced: bool,
        sh: &mut Shared,
    ) {
        let echoed = self.echoed_time(seg);
        // draft-ietf-ccwg-bbr §4.1.2.4: at the start of ACK processing.
        self.check_app_limited();
        let mut blocks = [SackBlock {
            left: SeqNumber(0),
            right: SeqNumber(0),
        }; 4];
        let mut n = 0;
        for b in seg.sack_blocks().take(4) {
            blocks[n] = b;
            n += 1;
        }
        let blocks = &blocks[..n];
        let dsack = dsack_block(blocks, seg.ack);

        // RFC 8985 §6.2 step 2-3 for every newly delivered segment, and the
        // delivery-rate sample's newest segment.
        let lr = &mut self.lr;
        let mut delivered = 0usize;
        let mut acked = 0usize;
        let mut newest: Option<Segment> = None;
        let mut on_delivered = |s: &Segment, rack: &mut Rack| {
            if s.stale {
                // Sent on the old path (PROTOCOL.md §7): neither an RTT
                // nor a delivery of this one.
                return;
            }
            rack.on_delivered(s, now, echoed);
            delivered += s.len();
            if newest.is_none_or(|p| s.rate.delivered >= p.rate.delivered) {
                newest = Some(*s);
            }
        };
        lr.log.ack(self.snd_una, |s| {
            if !s.stale {
                acked += s.len();
            }
            on_delivered(s, &mut lr.rack);
        });
        for (i, b) in blocks.iter().enumerate() {
            if i == 0 && dsack.is_some() {
                continue;
            }
            if self.snd_una <= b.left && b.left < b.right && b.right <= self.snd_max {
                lr.log
                    .sack(b.left, b.right, |s| on_delivered(s, &mut lr.rack));
            }
        }

        if let Some(d) = dsack {
            sh.stats.dsacks_received += 1;
            self.lr.rack.on_dsack(self.snd_una, self.snd_max);
            self.lr.undo.on_dsack(d);
        }
        // RFC 3708 / RFC 3522: the reduction was for nothing.
        if let Some(spurious) = self.lr.undo.check(seg.ack, echoed) {
            self.undo_reduction(spurious, sh);
        }
        // RFC 8985 §7.4: the probe's verdict.
        let probe_dsacked = dsack.is_some_and(|d| {
            self.lr
                .log
                .last()
                .is_none_or(|last| d.right >= last.end || d.right <= self.snd_una)
        });
        if self.lr.tlp.on_ack(seg.ack, probe_dsacked) == TlpOutcome::Repaired
            && self.recovery == Recovery::None
        {
            // §7.4.2: the probe repaired a loss: react as to one.
            sh.stats.tlp_repairs += 1;
            let flight = self.snd_max - self.snd_una;
            self.cc.on_congestion_event(now, flight);
        }

        // RFC 8985 §6.2 step 4-5: mark losses by time (the controller
        // hears of each, draft-ietf-ccwg-bbr §5.2.4).
        self.rack_detect_loss(now);
        // draft-ietf-ccwg-bbr §4.1.2.3, after loss marking as Linux's
        // tcp_rate_gen: RS.lost covers what this ACK revealed.
        let rate = self.rate_sample(now, delivered, newest);

        // RFC 6675 §5 (A) / RFC 6937: leave, continue or enter recovery.
        let in_flight = self.lr.log.in_flight();
        match self.recovery {
            Recovery::Sack if seg.ack >= self.recovery_point => {
                self.recovery = Recovery::None;
                self.cc.on_recovery_exit(self.snd_max - self.snd_una);
                self.lr.rack.on_recovery_exit();
            }
            Recovery::Sack => {
                let ssthresh = self.cc.ssthresh();
                self.lr
                    .prr
                    .on_ack(delivered, in_flight, ssthresh, self.smss);
            }
            _ => {
                if self.lr.log.lost_bytes() > 0 && self.snd_una >= self.recovery_point {
                    self.enter_sack_recovery(now, delivered, sh);
                }
            }
        }

        let sample = AckSample {
            now,
            acked,
            delivered,
            rtt: if advanced { self.rtt.latest() } else { None },
            srtt: self.rtt.srtt(),
            in_flight: self.lr.log.in_flight(),
            snd_una: self.snd_una,
            snd_max: self.snd_max,
            rate,
            in_recovery: self.recovery != Recovery::None,
            loss_recovery: self.recovering(),
            delivered_total: self.lr.delivered,
            cwnd_limited: self.cwnd_limited(),
        };
        self.cc.on_ack_sample(&sample);

        // RFC 8985 §7.2: re-arm the PTO on an ACK that advances SND.UNA.
        if advanced {
            self.arm_tlp(now);
        }
    }

    /// draft-ietf-ccwg-bbr §4.1.2.3 UpdateRateSample / GenerateRateSample
    /// for the segments an ACK newly delivered (`newest` is the most
    /// recently sent of them).
    fn rate_sample(
        &mut self,
        now: Instant,
        delivered: usize,
        newest: Option<Segment>,
    ) -> Option<RateSample> {
        let min_rtt = self.lr.rack.min_rtt();
        let lr = &mut self.lr;
        if delivered > 0 {
            lr.delivered += delivered as u64;
            lr.delivered_time = now;
        }
        // "Clear app-limited field if bubble is ACKed and gone."
        if lr.app_limited_until > 0 && lr.delivered > lr.app_limited_until {
            lr.app_limited_until = 0;
        }
        let p = newest.filter(|_| delivered > 0)?;
        lr.first_sent_time = p.xmit;
        let send_elapsed = p.xmit.saturating_duration_since(p.rate.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(p.rate.delivered_time);
        let mut interval = send_elapsed.max(ack_elapsed);
        // "if RS.interval < C.min_rtt: no reliable rate sample".
        if min_rtt.is_some_and(|m| interval < m) {
            interval = Duration::ZERO;
        }
        Some(RateSample {
            delivered: lr.delivered.saturating_sub(p.rate.delivered),
            interval,
            app_limited: p.rate.app_limited,
            prior_delivered: p.rate.delivered,
            tx_in_flight: p.rate.tx_in_flight,
            lost: lr.lost_total.saturating_sub(p.rate.lost),
            // §4.2: RS.rtt = Now() - P.send_time, unambiguous only for a
            // segment sent once.
            rtt: (!p.retransmitted).then(|| now.saturating_duration_since(p.xmit)),
        })
    }

    /// draft-ietf-ccwg-bbr §4.1.2.4 CheckIfApplicationLimited: nothing
    /// unsent, cwnd not full and no loss waiting for a resend marks the
    /// connection application-limited until what is in flight is
    /// delivered. Called on application writes and at ACK processing.
    pub(super) fn check_app_limited(&mut self) {
        let unsent = self.snd_max < self.data_end() || self.snd_nxt < self.snd_max;
        let in_flight = self.lr.log.in_flight();
        if !unsent && in_flight < self.cc.cwnd() && self.lr.log.pending_retransmission() == 0 {
            let lr = &mut self.lr;
            lr.app_limited_until = (lr.delivered + in_flight as u64).max(1);
        }
    }

    /// cwnd held data back within the last round trip.
    fn cwnd_limited(&self) -> bool {
        self.lr
            .cwnd_limited_until
            .is_some_and(|mark| self.snd_una <= mark)
    }

    /// Sending found cwnd full with data waiting (RFC 7661 §4.3).
    pub(super) fn note_cwnd_limited(&mut self) {
        let unsent = self.snd_nxt < self.data_end() || self.lr.log.pending_retransmission() > 0;
        if unsent {
            self.lr.cwnd_limited_until = Some(self.snd_max);
        }
    }

    /// RFC 8985 §6.2 step 4-5 (and §6.3 when the reordering timer fires).
    fn rack_detect_loss(&mut self, now: Instant) -> usize {
        let srtt = self.rtt.srtt().unwrap_or(Duration::from_secs(1));
        let reo_wnd = self.lr.rack.reo_wnd(
            self.recovering(),
            self.lr.log.sacked_bytes(),
            self.smss,
            srtt,
        );
        let lr = &mut self.lr;
        let cc = &mut self.cc;
        let (delivered, lost_total) = (&lr.delivered, &mut lr.lost_total);
        let marked = lr.rack.detect_loss(&mut lr.log, now, reo_wnd, |seg| {
            *lost_total += seg.len() as u64;
            cc.on_segment_lost(&LostSegment {
                now,
                len: seg.len(),
                tx_in_flight: seg.rate.tx_in_flight,
                lost_since_sent: lost_total.saturating_sub(seg.rate.lost),
                app_limited: seg.rate.app_limited,
                delivered: *delivered,
                selective_acks: true,
            });
        });
        if self.migration_holds_timers() {
            self.lr.rack.clear_deadline();
        }
        marked
    }

    /// RFC 6675 §5 step 4 with RFC 6937 (PRR) instead of the immediate
    /// halving, entered when RACK marked a loss.
    fn enter_sack_recovery(&mut self, now: Instant, delivered: usize, sh: &mut Shared) {
        let prior = Prior {
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
        };
        let flight = self.snd_max - self.snd_una;
        self.lr.undo.start(prior, self.snd_una, self.snd_max, false);
        // (4.1) RecoveryPoint = HighData.
        self.recovery_point = self.snd_max;
        // (4.2) ssthresh per the controller; PRR paces cwnd down to it.
        self.cc.on_congestion_event(now, flight);
        self.lr.prr.start(flight);
        let in_flight = self.lr.log.in_flight();
        let ssthresh = self.cc.ssthresh();
        self.lr
            .prr
            .on_ack(delivered, in_flight, ssthresh, self.smss);
        self.recovery = Recovery::Sack;
        self.rtt_probe = None;
        // RFC 8985 §7.2: no tail probe for the flight before recovery;
        // recovery's own transmissions arm the recovery probe (tlp.rs).
        self.lr.tlp.cancel();
        sh.stats.sack_recoveries += 1;
        self.fast_retransmits += 1;
        sh.stats.fast_retransmits += 1;
    }

    /// RFC 3708 §5 / RFC 4015: restore the window from before the
    /// reduction, and stop treating its segments as lost.
    fn undo_reduction(&mut self, spurious: Spurious, sh: &mut Shared) {
        let (Spurious::Dsack(prior) | Spurious::Eifel(prior)) = spurious;
        tracing::debug!(conn = ?self.id, ?spurious, "undoing a spurious window reduction");
        self.cc.undo(prior);
        self.lr.log.unmark_lost();
        if self.recovery == Recovery::Sack {
            self.recovery = Recovery::None;
            self.lr.rack.on_recovery_exit();
        }
        self.recovery_point = self.snd_una;
        sh.stats.spurious_undos += 1;
    }

    /// RFC 6298 §5.4-5.7 for a SACK connection (the caller counted the
    /// timeout): every outstanding segment is presumed lost and resent
    /// from the log, lowest first, as cwnd (one SMSS) opens.
    pub(super) fn on_rto_sack(&mut self) {
        let prior = Prior {
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
        };
        self.lr.undo.start(prior, self.snd_una, self.snd_max, true);
        self.cc.on_rto(self.snd_max - self.snd_una);
        self.rtt.on_timeout();
        // RFC 2018 §8 / RFC 6675 §5.1: the receiver may have reneged. The
        // first timeout keeps what was SACKed (as Linux does); a second one
        // in a row forgets it.
        let forget = self.retries > 1;
        if forget {
            self.scoreboard.clear();
        }
        let before = self.lr.log.lost_bytes();
        self.lr.log.mark_all_lost(forget);
        let newly = self.lr.log.lost_bytes().saturating_sub(before);
        self.lr.lost_total += newly as u64;
        self.lr.tlp.reset();
        self.lr.rack.clear_deadline();
        self.recovery = Recovery::None;
        self.cwnd_adjust = 0;
        self.dupacks = 0;
        self.retransmit_una = false;
        self.recovery_point = self.snd_max;
        self.high_rxt = self.snd_una;
        self.rtt_probe = None;
    }

    /// What to send next on a SACK connection (after the persist check):
    /// the TLP probe, then RACK-lost segments, then new data, within cwnd
    /// (PRR's allowance in recovery).
    pub(super) fn plan_sack(&mut self, now: Instant, max_payload: usize) -> Option<Plan> {
        let limit = max_payload.min(self.smss).max(1);
        self.lr.probing = false;
        if self.lr.tlp.probe_due() {
            // RFC 8985 §7.3 sends new data if the window allows, else the
            // highest segment again; not limited by cwnd. Deviation
            // (module doc of tlp.rs, "Probe content"): the highest
            // segment again first, new data only if there is none.
            if let Some(last) = self.lr.log.last().copied() {
                let start = if last.len() > limit {
                    last.end - limit
                } else {
                    last.start
                };
                let (len, fin) = self.extent(start, last.end - start, last.end);
                if len > 0 || fin {
                    self.lr.probing = true;
                    return Some(Plan {
                        seq: start,
                        len,
                        fin,
                        kind: SendKind::Rescue,
                    });
                }
            }
            if self.snd_nxt == self.snd_max {
                if let Some(plan) = self.plan_at_snd_nxt(now, max_payload, max_payload) {
                    self.lr.probing = true;
                    return Some(plan);
                }
            }
            self.lr.tlp.cancel();
        }
        let room = if self.recovery == Recovery::Sack && self.cc.uses_prr() {
            self.lr.prr.allowance()
        } else {
            self.effective_cwnd()
                .saturating_sub(self.lr.log.in_flight())
        };
        if room == 0 {
            self.note_cwnd_limited();
            return None;
        }
        // RACK-lost segments first, lowest first (RFC 6675 NextSeg rule 1
        // with RACK's marks, RFC 8985 §6.2).
        if let Some(lost) = self.lr.log.next_lost(self.snd_una, self.snd_nxt).copied() {
            let (len, fin) = self.extent(lost.start, lost.len().min(limit), lost.end);
            if len > 0 || fin {
                return Some(Plan {
                    seq: lost.start,
                    len,
                    fin,
                    kind: SendKind::SackRetransmit,
                });
            }
        }
        self.plan_at_snd_nxt(now, max_payload, room)
    }

    /// Bookkeeping after a data segment `[plan.seq, end)` went out.
    pub(super) fn on_segment_sent(
        &mut self,
        now: Instant,
        plan: &Plan,
        end: SeqNumber,
        sh: &mut Shared,
    ) {
        if end <= plan.seq {
            return;
        }
        // draft-ietf-ccwg-bbr §5.2.2: the controller sees each transmit
        // first (restart from idle).
        let in_flight = self.lr.log.in_flight();
        self.cc
            .on_transmit(now, in_flight, self.lr.app_limited_until > 0);
        let lr = &mut self.lr;
        if in_flight == 0 {
            // §4.1.2.2: a new flight starts the send-elapsed interval.
            lr.first_sent_time = now;
            lr.delivered_time = now;
        }
        let len = end - plan.seq;
        let snapshot = RateSnapshot {
            delivered: lr.delivered,
            delivered_time: lr.delivered_time,
            first_sent_time: lr.first_sent_time,
            app_limited: lr.app_limited_until > 0,
            lost: lr.lost_total,
            tx_in_flight: in_flight + len,
        };
        lr.log.on_send(plan.seq, end, now, snapshot);
        if !self.sack_enabled {
            // Without SACK the log only feeds delivery-rate samples
            // (draft-ietf-ccwg-bbr §4.1.3.5.1) and pacing.
            let rate = self.pacing_rate();
            self.lr.pacer.on_send(now, len, rate, self.smss);
            return;
        }
        let retransmission = !matches!(
            plan.kind,
            SendKind::New | SendKind::WindowProbe | SendKind::Ahead
        );
        if self.recovery == Recovery::Sack {
            self.lr.prr.on_sent(len);
        }
        if self.lr.probing {
            self.lr.probing = false;
            let first = !self.lr.tlp.in_episode();
            self.lr.tlp.on_probe_sent(self.snd_max, retransmission);
            sh.stats.tlp_probes += 1;
            if first {
                // RFC 8985 §7.3: the RTO covers the probe.
                self.rtx_deadline = None;
                self.arm_rtx(now);
            }
            // Deviation (tlp.rs, "Repeated probes"): the next one, backed
            // off, if it would come before the RTO.
            self.lr.tlp.arm_again(now, self.rtx_deadline);
        } else {
            if retransmission {
                self.lr.undo.on_retransmit(now, plan.seq, end, self.snd_una);
            }
            // RFC 8985 §7.2 arms the PTO after new data; in SACK recovery
            // after any transmission too (the recovery probe, `arm_tlp`).
            if plan.kind == SendKind::New || self.recovery == Recovery::Sack {
                self.arm_tlp(now);
            }
        }
        let rate = self.pacing_rate();
        self.lr.pacer.on_send(now, len, rate, self.smss);
    }

    /// RFC 8985 §7.2: (re)arm the PTO while data is outstanding and the
    /// connection is not recovering from a timeout.
    ///
    /// Deviation (module doc of `tlp.rs`, "Recovery probe"): in SACK
    /// recovery too, where §7.2 arms none.
    fn arm_tlp(&mut self, now: Instant) {
        let timeout_recovery = self.recovery == Recovery::None && self.recovering();
        if !self.sack_enabled
            || timeout_recovery
            || self.recovery == Recovery::NewReno
            || self.snd_una == self.snd_max
            || self.persist_mode
            || self.migration_holds_timers()
            || self.rtt.backoff_count() > 0
        {
            self.lr.tlp.cancel();
            return;
        }
        let one_segment = self.snd_max - self.snd_una <= self.smss;
        self.lr
            .tlp
            .arm(now, self.rtt.srtt(), one_segment, self.rtx_deadline);
    }

    /// The pacing rate in bytes per second: the controller's model, else
    /// cwnd / SRTT times 2 in slow start and 1.2 after (Linux
    /// `tcp_update_pacing_rate`).
    pub(super) fn pacing_rate(&self) -> Option<u64> {
        if !self.cfg.pacing {
            return None;
        }
        if let Some(rate) = self.cc.pacing_rate() {
            return Some(rate);
        }
        let srtt = self.rtt.srtt()?;
        let us = srtt.as_micros().max(1);
        let cwnd = self.cc.cwnd().max(self.lr.log.in_flight()) as u128;
        let (num, den) = if self.cc.in_slow_start() {
            (2, 1)
        } else {
            (12, 10)
        };
        Some((cwnd * 1_000_000 * num / den / us).min(u128::from(u64::MAX)) as u64)
    }

    /// Whether pacing holds data back now; with `Some(t)` the caller asks
    /// to be woken at `t`.
    pub(super) fn paced_until(&self, now: Instant) -> Option<Instant> {
        if !self.cfg.pacing {
            return None;
        }
        self.lr.pacer.release_time().filter(|&t| t > now)
    }

    /// The earliest loss-recovery timer: RACK's reordering timer, the
    /// PTO, or the pacing release when something waits for it.
    pub(super) fn loss_deadline(&self) -> Option<Instant> {
        Instant::earliest([
            self.lr.rack.deadline(),
            self.lr.tlp.deadline(),
            self.lr.pacer.wakeup(),
        ])
    }

    /// The loss-recovery timers at `now` (RFC 8985 §6.3, §7.3).
    pub(super) fn loss_timeout(&mut self, now: Instant, sh: &mut Shared) {
        self.lr.pacer.on_wakeup(now);
        if self.lr.rack.deadline().is_some_and(|t| now >= t) {
            self.lr.rack.clear_deadline();
            self.rack_detect_loss(now);
            if self.recovery == Recovery::None
                && self.lr.log.lost_bytes() > 0
                && self.snd_una >= self.recovery_point
            {
                self.enter_sack_recovery(now, 0, sh);
            }
        }
        if self.lr.tlp.deadline().is_some_and(|t| now >= t) && self.lr.tlp.on_timeout(now) {
            // RFC 8985 §7.3: the probe goes out now and the RTO is
            // restarted behind it.
            self.rtx_deadline = None;
            self.arm_rtx(now);
        }
    }

    /// PROTOCOL.md §7 "Path restart": congestion control, RACK, TLP, PRR,
    /// undo and pacing start over; everything outstanding is presumed
    /// lost on the old path (the go-back resend covers it).
    pub(super) fn restart_congestion(&mut self) {
        self.cc.reset();
        let log = core::mem::take(&mut self.lr.log);
        // C.delivered and C.lost count over the connection's life
        // (draft-ietf-ccwg-bbr §2.2): the log's snapshots refer to them.
        let (delivered, delivered_time, lost) = (
            self.lr.delivered,
            self.lr.delivered_time,
            self.lr.lost_total,
        );
        self.lr = LossRecovery::new();
        self.lr.log = log;
        self.lr.delivered = delivered;
        self.lr.delivered_time = delivered_time;
        self.lr.lost_total = lost;
        self.lr.log.mark_all_lost(true);
        self.lr.log.mark_all_stale();
    }

    /// The controller's view of an ACK on a connection without SACK: the
    /// log gives a delivery-rate sample from the cumulative ACK alone
    /// (draft-ietf-ccwg-bbr §4.1.3.5.1; duplicate ACKs are not counted).
    pub(super) fn plain_ack_sample(&mut self, now: Instant, acked: usize) -> AckSample {
        self.check_app_limited();
        let mut delivered = 0usize;
        let mut newest: Option<Segment> = None;
        self.lr.log.ack(self.snd_una, |s| {
            if s.stale {
                return;
            }
            delivered += s.len();
            if newest.is_none_or(|p| s.rate.delivered >= p.rate.delivered) {
                newest = Some(*s);
            }
        });
        let rate = self.rate_sample(now, delivered, newest);
        AckSample {
            now,
            acked,
            delivered: acked,
            rtt: self.rtt.latest(),
            srtt: self.rtt.srtt(),
            in_flight: self.snd_max - self.snd_una,
            snd_una: self.snd_una,
            snd_max: self.snd_max,
            rate,
            in_recovery: self.recovery != Recovery::None,
            loss_recovery: self.recovering(),
            delivered_total: self.lr.delivered,
            cwnd_limited: self.cwnd_limited(),
        }
    }

    /// A fast retransmit without SACK: the segment at SND.UNA is the one
    /// loss the sender knows of; the controller hears of it as of a
    /// RACK-marked one (draft-ietf-ccwg-bbr §5.5.10.2, C.has_selective_acks
    /// false).
    pub(super) fn report_plain_loss(&mut self, now: Instant) {
        let Some(seg) = self.lr.log.iter().next().copied() else {
            return;
        };
        let lr = &mut self.lr;
        lr.lost_total += seg.len() as u64;
        self.cc.on_segment_lost(&LostSegment {
            now,
            len: seg.len(),
            tx_in_flight: seg.rate.tx_in_flight,
            lost_since_sent: lr.lost_total.saturating_sub(seg.rate.lost),
            app_limited: seg.rate.app_limited,
            delivered: lr.delivered,
            selective_acks: false,
        });
    }

    /// Receiver side (RFC 2883 §4): `[left, right)` arrived again; the
    /// next ACK reports it as a D-SACK.
    pub(super) fn note_duplicate(&mut self, left: SeqNumber, right: SeqNumber) {
        if self.sack_enabled && left < right {
            self.lr.dsack_rx = Some(SackBlock { left, right });
        }
    }
}
