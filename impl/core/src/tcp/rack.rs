//! RACK: time-based loss detection (RFC 8985 §6).
//!
//! Read first: RFC 8985 §6.1-§6.3; Linux net/ipv4/tcp_recovery.c keeps the
//! same per-connection state. A segment is lost when a segment sent after it
//! has been delivered and more than one RTT plus a reordering window has
//! passed since it was sent. The reordering window starts at a quarter of
//! the minimum RTT, is zero while no reordering has been seen and the
//! sender is already recovering (or three segments are SACKed), and grows
//! by a quarter min RTT per round trip in which a D-SACK reports a spurious
//! retransmission (§6.2 step 4).
//!
//! The connection calls, in this order on every ACK: [`Rack::on_delivered`]
//! for each newly acknowledged or SACKed segment, [`Rack::on_dsack`] when
//! the ACK carried a D-SACK, then [`Rack::detect_loss`]; and
//! [`Rack::detect_loss`] again when [`Rack::deadline`] (the reordering
//! timer, §6.3) passes.

use super::sent::{sent_after, Segment, SentLog};
use crate::time::{Duration, Instant};
use crate::wire::SeqNumber;

/// RFC 8985 §6.2 step 4: recoveries without D-SACK before the reordering
/// window multiplier resets.
const REO_WND_PERSIST: u32 = 16;
/// RFC 6675 DupThresh, used by §6.2 step 4.
const DUPTHRESH: usize = 3;

/// Per-connection RACK state (RFC 8985 §5.2).
#[derive(Debug, Clone)]
pub(crate) struct Rack {
    /// `RACK.xmit_ts` and `RACK.end_seq`: the most recently sent segment
    /// among those delivered.
    newest: Option<(Instant, SeqNumber)>,
    /// `RACK.rtt`: the RTT of that segment's delivery.
    rtt: Duration,
    /// `RACK.fack`: highest end sequence delivered.
    fack: Option<SeqNumber>,
    /// `RACK.min_RTT`.
    min_rtt: Option<Duration>,
    reordering_seen: bool,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    dsack_round: Option<SeqNumber>,
    /// The reordering timer (§6.3).
    deadline: Option<Instant>,
    /// Scratch: the records [`Rack::detect_loss`] judges.
    judged: Vec<usize>,
}

impl Default for Rack {
    fn default() -> Rack {
        Rack::new()
    }
}

impl Rack {
    /// RACK state of a connection that has sent nothing yet.
    pub(crate) fn new() -> Rack {
        Rack {
            newest: None,
            rtt: Duration::ZERO,
            fack: None,
            min_rtt: None,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: REO_WND_PERSIST,
            dsack_round: None,
            deadline: None,
            judged: Vec::new(),
        }
    }

    /// The reordering timer (§6.3), if armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The smallest RTT sampled so far.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Whether a segment was seen delivered out of order (RFC 8985 §6.2 step 3).
    #[cfg(test)]
    pub(crate) fn reordering_seen(&self) -> bool {
        self.reordering_seen
    }

    /// RFC 8985 §6.2 steps 2 and 3 for one newly delivered segment.
    /// `echoed` is the send time the ACK's TSecr names (ms resolution), if
    /// timestamps are on.
    pub(crate) fn on_delivered(&mut self, seg: &Segment, now: Instant, echoed: Option<Instant>) {
        let rtt = now.saturating_duration_since(seg.xmit);
        // Step 2: a retransmitted segment may have been delivered by its
        // original transmission; its RTT would be too short to trust.
        if seg.retransmitted {
            let xmit_ms = Instant::from_millis(seg.xmit.total_millis());
            if echoed.is_some_and(|e| e < xmit_ms) {
                return;
            }
            if self.min_rtt.is_some_and(|m| rtt < m) {
                return;
            }
        }
        self.rtt = rtt;
        if self.min_rtt.is_none_or(|m| rtt < m) {
            self.min_rtt = Some(rtt);
        }
        match self.newest {
            Some((t, end)) if !sent_after(seg.xmit, seg.end, t, end) => {}
            _ => self.newest = Some((seg.xmit, seg.end)),
        }
        // Step 3: delivered below the highest delivered sequence without a
        // retransmission: the network reordered.
        match self.fack {
            Some(f) if seg.end <= f => {
                if seg.end < f && !seg.retransmitted {
                    self.reordering_seen = true;
                }
            }
            _ => self.fack = Some(seg.end),
        }
    }

    /// §6.2 step 4: the ACK carried a D-SACK. Grows the reordering window
    /// once per round trip (`snd_una` reaching the `snd_nxt` of the
    /// round in which it grew).
    pub(crate) fn on_dsack(&mut self, snd_una: SeqNumber, snd_nxt: SeqNumber) {
        if self.dsack_round.is_some_and(|r| snd_una >= r) {
            self.dsack_round = None;
        }
        if self.dsack_round.is_none() {
            self.dsack_round = Some(snd_nxt);
            self.reo_wnd_mult = self.reo_wnd_mult.saturating_add(1);
            self.reo_wnd_persist = REO_WND_PERSIST;
        }
    }

    /// §6.2 step 4: a recovery ended; after 16 without D-SACK the
    /// reordering window returns to a quarter min RTT.
    pub(crate) fn on_recovery_exit(&mut self) {
        self.reo_wnd_persist = self.reo_wnd_persist.saturating_sub(1);
        if self.reo_wnd_persist == 0 {
            self.reo_wnd_mult = 1;
        }
    }

    /// §6.2 step 4 `RACK_update_reo_wnd`.
    pub(crate) fn reo_wnd(
        &self,
        recovering: bool,
        sacked_bytes: usize,
        smss: usize,
        srtt: Duration,
    ) -> Duration {
        if !self.reordering_seen && (recovering || sacked_bytes >= DUPTHRESH * smss.max(1)) {
            return Duration::ZERO;
        }
        let quarter = self.min_rtt.unwrap_or(Duration::ZERO) / 4;
        quarter.saturating_mul(self.reo_wnd_mult).min(srtt)
    }

    /// §6.2 step 5 `RACK_detect_loss` and §6.3: marks lost every segment
    /// sent before the newest delivered one whose time is up, and arms the
    /// reordering timer for the earliest one that is not yet. Returns the
    /// bytes newly marked lost.
    pub(crate) fn detect_loss(
        &mut self,
        log: &mut SentLog,
        now: Instant,
        reo_wnd: Duration,
        mut on_lost: impl FnMut(&Segment),
    ) -> usize {
        self.deadline = None;
        let Some((rack_xmit, rack_end)) = self.newest else {
            return 0;
        };
        let mut marked = 0;
        let mut wait: Option<Duration> = None;
        // What is neither delivered nor lost and waiting to be resent, and
        // was sent before the newest delivered segment, in sequence order.
        let mut judged = core::mem::take(&mut self.judged);
        log.rack_candidates(rack_xmit, rack_end, &mut judged);
        for &i in &judged {
            let Some(&seg) = log.get(i) else { break };
            let due = seg.xmit + self.rtt + reo_wnd;
            if due <= now {
                if log.mark_lost(i) {
                    on_lost(&seg);
                }
                marked += seg.len();
            } else {
                let remaining = due - now;
                wait = Some(wait.map_or(remaining, |w: Duration| w.max(remaining)));
            }
        }
        self.judged = judged;
        self.deadline = wait.map(|w| now + w);
        marked
    }

    /// The reordering timer fired (or is being cancelled).
    pub(crate) fn clear_deadline(&mut self) {
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::sent::RateSnapshot;

    fn s(v: u32) -> SeqNumber {
        SeqNumber(v)
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    fn snap() -> RateSnapshot {
        RateSnapshot {
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent_time: Instant::ZERO,
            app_limited: false,
            lost: 0,
            tx_in_flight: 0,
        }
    }

    /// Five 1000-byte segments sent 1 ms apart from t = 0; RTT 100 ms.
    fn setup() -> (Rack, SentLog) {
        let mut log = SentLog::default();
        for i in 0..5u32 {
            log.on_send(s(i * 1000), s(i * 1000 + 1000), ms(u64::from(i)), snap());
        }
        (Rack::new(), log)
    }

    fn deliver_sack(rack: &mut Rack, log: &mut SentLog, l: u32, r: u32, now: Instant) {
        let mut delivered = Vec::new();
        log.sack(s(l), s(r), |seg| delivered.push(*seg));
        for seg in delivered {
            rack.on_delivered(&seg, now, None);
        }
    }

    #[test]
    fn a_segment_sent_before_a_delivered_one_is_lost_after_rtt_plus_window() {
        let (mut rack, mut log) = setup();
        // Segment 2 (sent at 2 ms) SACKed at 102 ms: RTT 100 ms.
        deliver_sack(&mut rack, &mut log, 2000, 3000, ms(102));
        let wnd = rack.reo_wnd(false, log.sacked_bytes(), 1000, Duration::from_millis(100));
        assert_eq!(wnd, Duration::from_millis(25), "min RTT / 4");
        // Segments 0 and 1 are due at 125 and 126 ms: not yet.
        assert_eq!(rack.detect_loss(&mut log, ms(102), wnd, |_| {}), 0);
        assert_eq!(rack.deadline(), Some(ms(126)));
        // The reordering timer fires at 126 ms: both are lost.
        assert_eq!(rack.detect_loss(&mut log, ms(126), wnd, |_| {}), 2000);
        assert_eq!(log.lost_bytes(), 2000);
        // Segments 3 and 4 were sent after the delivered one: not lost.
        assert!(log.iter().skip(3).all(|x| !x.lost));
        assert_eq!(rack.deadline(), None);
    }

    #[test]
    fn zero_window_once_recovering_without_reordering() {
        let (mut rack, mut log) = setup();
        deliver_sack(&mut rack, &mut log, 2000, 3000, ms(102));
        let wnd = rack.reo_wnd(true, log.sacked_bytes(), 1000, Duration::from_millis(100));
        assert_eq!(wnd, Duration::ZERO);
        // Due at 100 and 101 ms: lost at once.
        assert_eq!(rack.detect_loss(&mut log, ms(102), wnd, |_| {}), 2000);
    }

    #[test]
    fn a_lost_retransmission_is_detected_by_time() {
        let (mut rack, mut log) = setup();
        deliver_sack(&mut rack, &mut log, 1000, 5000, ms(104));
        assert_eq!(
            rack.detect_loss(&mut log, ms(104), Duration::ZERO, |_| {}),
            1000
        );
        // Retransmit segment 0 at 104 ms, then send new data at 110 ms.
        log.on_send(s(0), s(1000), ms(104), snap());
        log.on_send(s(5000), s(6000), ms(110), snap());
        assert_eq!(log.in_flight(), 2000);
        // The new segment is SACKed at 210 ms; the retransmission never
        // arrives: it was sent before the delivered segment and is overdue.
        deliver_sack(&mut rack, &mut log, 5000, 6000, ms(210));
        assert_eq!(
            rack.detect_loss(&mut log, ms(210), Duration::ZERO, |_| {}),
            1000
        );
        assert_eq!(log.next_lost(s(0), s(6000)).map(|x| x.start), Some(s(0)));
    }

    #[test]
    fn reordering_and_dsack_widen_the_window() {
        let (mut rack, mut log) = setup();
        deliver_sack(&mut rack, &mut log, 3000, 4000, ms(103));
        // Segment 1 arrives late, never retransmitted: reordering.
        deliver_sack(&mut rack, &mut log, 1000, 2000, ms(110));
        assert!(rack.reordering_seen());
        let srtt = Duration::from_millis(100);
        // Reordering seen: no zero window even in recovery.
        assert_eq!(
            rack.reo_wnd(true, 3000, 1000, srtt),
            Duration::from_millis(25)
        );
        rack.on_dsack(s(0), s(5000));
        assert_eq!(rack.reo_wnd(true, 0, 1000, srtt), Duration::from_millis(50));
        // A second D-SACK in the same round does not grow it again.
        rack.on_dsack(s(1000), s(5000));
        assert_eq!(rack.reo_wnd(true, 0, 1000, srtt), Duration::from_millis(50));
        rack.on_dsack(s(5000), s(9000));
        assert_eq!(rack.reo_wnd(true, 0, 1000, srtt), Duration::from_millis(75));
        // Capped at SRTT.
        assert_eq!(
            rack.reo_wnd(true, 0, 1000, Duration::from_millis(60)),
            Duration::from_millis(60)
        );
        for _ in 0..16 {
            rack.on_recovery_exit();
        }
        assert_eq!(rack.reo_wnd(true, 0, 1000, srtt), Duration::from_millis(25));
    }

    #[test]
    fn an_ambiguous_retransmission_does_not_move_rack() {
        let (mut rack, mut log) = setup();
        deliver_sack(&mut rack, &mut log, 1000, 2000, ms(101));
        log.mark_lost(0);
        log.on_send(s(0), s(1000), ms(120), snap());
        let mut delivered = Vec::new();
        log.ack(s(1000), |seg| delivered.push(*seg));
        // The ACK echoes the original transmission (sent at 0 ms).
        rack.on_delivered(&delivered[0], ms(121), Some(ms(0)));
        assert_eq!(rack.newest, Some((ms(1), s(2000))));
    }
}
