//! Congestion control: the [`CongestionControl`] interface the connection
//! drives, the per-connection choice [`CongestionKind`], and NewReno
//! (RFC 5681, RFC 6582) with appropriate byte counting (RFC 3465, L =
//! 2*SMSS) and the RFC 6928 initial window. CUBIC is in `cubic.rs`, BBRv3
//! (draft-ietf-ccwg-bbr) in `bbr/`.
//!
//! The sender drives loss recovery (RACK-TLP, PRR, undo; RFC 6582 without
//! SACK); a controller only owns its window, its ssthresh and, for a
//! model-based one, its pacing rate.

use core::fmt;

use super::undo::Prior;
use crate::time::{Duration, Instant};
use crate::wire::SeqNumber;

/// Which congestion controller a connection runs (`Config::congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CongestionKind {
    /// CUBIC (RFC 9438) with HyStart++ (RFC 9406).
    Cubic,
    /// NewReno (RFC 5681, RFC 6582).
    NewReno,
    /// BBRv3 (draft-ietf-ccwg-bbr): paced at its bandwidth model, cwnd
    /// from the BDP; random loss below 2 % per round does not slow it.
    /// The default: see `Config::congestion`.
    #[default]
    Bbr,
}

impl CongestionKind {
    /// A fresh controller of this kind for sender MSS `smss`.
    pub(crate) fn build(self, smss: usize) -> Box<dyn CongestionControl> {
        match self {
            CongestionKind::NewReno => Box::new(NewReno::new(smss)),
            CongestionKind::Cubic => Box::new(super::cubic::Cubic::new(smss)),
            CongestionKind::Bbr => Box::new(super::bbr::Bbr::new(smss)),
        }
    }
}

impl fmt::Display for CongestionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CongestionKind::Cubic => "cubic",
            CongestionKind::NewReno => "newreno",
            CongestionKind::Bbr => "bbr",
        })
    }
}

impl core::str::FromStr for CongestionKind {
    type Err = UnknownCongestionKind;

    fn from_str(s: &str) -> Result<CongestionKind, UnknownCongestionKind> {
        match s.to_ascii_lowercase().as_str() {
            "cubic" => Ok(CongestionKind::Cubic),
            "newreno" | "reno" => Ok(CongestionKind::NewReno),
            "bbr" | "bbr3" | "bbrv3" => Ok(CongestionKind::Bbr),
            _ => Err(UnknownCongestionKind),
        }
    }
}

/// A name other than cubic, bbr or newreno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown congestion controller (expected cubic, bbr or newreno)")]
pub struct UnknownCongestionKind;

/// One delivery-rate sample (draft-ietf-ccwg-bbr §4.1.2.3
/// GenerateRateSample): `delivered` bytes over `interval`, taken from the
/// most recently sent of the segments an ACK newly delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// RS.delivered: bytes delivered between that segment's send and now.
    pub delivered: u64,
    /// RS.interval = max(send_elapsed, ack_elapsed); zero when the sample
    /// is unreliable (shorter than the connection's minimum RTT).
    pub interval: Duration,
    /// RS.is_app_limited: the sender was application-limited when the
    /// sampled data was sent (the sample may understate the path).
    pub app_limited: bool,
    /// RS.prior_delivered: C.delivered when the segment was sent (the
    /// packet-timed round trip it belongs to).
    pub prior_delivered: u64,
    /// RS.tx_in_flight: C.inflight just after the segment was sent.
    pub tx_in_flight: usize,
    /// RS.lost: bytes marked lost since the segment was sent.
    pub lost: u64,
    /// RS.rtt: the RTT of that segment, when it is unambiguous.
    pub rtt: Option<Duration>,
}

impl RateSample {
    /// RS.delivery_rate in bytes per second (0 without a valid interval).
    pub(crate) fn rate(&self) -> u64 {
        let us = self.interval.as_micros();
        if us == 0 {
            return 0;
        }
        (u128::from(self.delivered) * 1_000_000 / us).min(u128::from(u64::MAX)) as u64
    }
}

/// A segment newly marked lost (draft-ietf-ccwg-bbr §5.2.4, the
/// HandleLostPacket(P) input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LostSegment {
    /// When the loss was detected.
    pub now: Instant,
    /// P.size in bytes.
    pub len: usize,
    /// P.tx_in_flight: C.inflight just after it was (last) sent.
    pub tx_in_flight: usize,
    /// C.lost - P.lost, this segment included.
    pub lost_since_sent: u64,
    /// P.is_app_limited.
    pub app_limited: bool,
    /// C.delivered now.
    pub delivered: u64,
    /// C.has_selective_acks.
    pub selective_acks: bool,
}

/// What one ACK told the controller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckSample {
    /// When the ACK arrived.
    pub now: Instant,
    /// Bytes newly acknowledged cumulatively.
    pub acked: usize,
    /// Bytes newly delivered (acknowledged cumulatively or SACKed).
    pub delivered: usize,
    /// The RTT measured by this ACK, if any.
    pub rtt: Option<Duration>,
    /// Smoothed RTT (RFC 6298), once sampled.
    pub srtt: Option<Duration>,
    /// Bytes in flight after this ACK.
    pub in_flight: usize,
    /// SND.UNA after this ACK.
    pub snd_una: SeqNumber,
    /// The highest sequence number sent plus one (SND.MAX).
    pub snd_max: SeqNumber,
    /// Delivery-rate sample of this ACK (draft-ietf-ccwg-bbr §4.1), if one was taken.
    pub rate: Option<RateSample>,
    /// The sender is in fast recovery (the window is PRR's).
    pub in_recovery: bool,
    /// Fast recovery, or the RTO's recovery until everything outstanding
    /// at the timeout is acknowledged.
    pub loss_recovery: bool,
    /// C.delivered: bytes delivered (acked or SACKed) over the connection's
    /// life, this ACK included.
    pub delivered_total: u64,
    /// C.is_cwnd_limited: cwnd held data back within the last round trip
    /// (RFC 7661 §4.3 "cwnd-limited"; draft-ietf-ccwg-bbr §2.2).
    pub cwnd_limited: bool,
}

/// A congestion controller, as the connection drives it.
pub(crate) trait CongestionControl: fmt::Debug + Send {
    /// Which algorithm this is.
    #[cfg(test)]
    fn kind(&self) -> CongestionKind;
    /// Congestion window in bytes.
    fn cwnd(&self) -> usize;
    /// Slow-start threshold in bytes.
    fn ssthresh(&self) -> usize;
    /// Sender MSS in bytes that the window arithmetic uses.
    fn smss(&self) -> usize;
    /// Whether in slow start (cwnd < ssthresh, RFC 5681 §3.1; BBR: Startup).
    fn in_slow_start(&self) -> bool;
    /// Every ACK (window growth outside recovery; model updates always).
    fn on_ack_sample(&mut self, ack: &AckSample);
    /// A loss was detected (fast recovery, or a TLP that repaired one):
    /// reduce ssthresh; cwnd follows it (PRR paces the way down).
    fn on_congestion_event(&mut self, now: Instant, flight_size: usize);
    /// Loss recovery ended.
    fn on_recovery_exit(&mut self, flight_size: usize);
    /// Retransmission timeout.
    fn on_rto(&mut self, flight_size: usize);
    /// Idle longer than an RTO (RFC 5681 §4.1).
    fn on_idle_restart(&mut self);
    /// The sender MSS was set or changed (RFC 9293 §3.7.1).
    fn set_smss(&mut self, smss: usize);
    /// The reduction was spurious: restore the window from before it.
    fn undo(&mut self, prior: Prior);
    /// Start over: a new path (PROTOCOL.md §7).
    fn reset(&mut self);
    /// RFC 6928 initial window for the current SMSS.
    fn initial_window(&self) -> usize {
        initial_window(self.smss())
    }
    /// Careful Resume (draft-ietf-tsvwg-careful-resume §4.3): the new path
    /// is validated and cwnd may jump to `jump`; never lowers cwnd.
    fn resume_jump(&mut self, jump: usize);
    /// Bytes per second to pace at, when the controller models the path;
    /// `None`: pace at cwnd / SRTT.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
    /// Whether PRR (RFC 6937) limits sending during recovery; a
    /// model-based controller bounds in-flight data with its own cwnd.
    fn uses_prr(&self) -> bool {
        true
    }
    /// A segment was newly marked lost (RACK, or a fast retransmit
    /// without SACK), before the ACK that revealed it is sampled.
    fn on_segment_lost(&mut self, _lost: &LostSegment) {}
    /// A data segment is about to leave with `in_flight` bytes already
    /// out; `app_limited` is C.app_limited (draft-ietf-ccwg-bbr §5.2.2).
    fn on_transmit(&mut self, _now: Instant, _in_flight: usize, _app_limited: bool) {}
}

/// RFC 5681 §3.1: "the initial value of ssthresh SHOULD be set arbitrarily
/// high". Half the address space keeps every sum below overflow.
pub(crate) const SSTHRESH_INFINITE: usize = usize::MAX / 2;

/// NewReno window state.
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    smss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// RFC 3465 §2.1 bytes_acked, congestion avoidance only.
    bytes_acked: usize,
    /// An RTO happened and no new data has been acknowledged since: a
    /// further RTO must hold ssthresh constant (RFC 5681 §3.1, after eq. 4).
    rto_pending: bool,
    /// Nothing has touched the window since `new`/`reset`, so an SMSS
    /// change may recompute the initial window from scratch.
    pristine: bool,
}

impl NewReno {
    /// `smss` is the sender MSS; cwnd starts at the RFC 6928 initial window
    /// min(10*SMSS, max(2*SMSS, 14600)); ssthresh starts "arbitrarily high".
    pub(crate) fn new(smss: usize) -> NewReno {
        let smss = smss.max(1);
        NewReno {
            smss,
            cwnd: initial_window(smss),
            ssthresh: SSTHRESH_INFINITE,
            bytes_acked: 0,
            rto_pending: false,
            pristine: true,
        }
    }

    /// Whether in slow start: cwnd < ssthresh (RFC 5681 §3.1).
    pub(crate) fn in_slow_start(&self) -> bool {
        // RFC 5681 §3.1: slow start while cwnd < ssthresh; at equality the
        // sender may use either, and congestion avoidance is the cautious one.
        self.cwnd < self.ssthresh
    }

    /// New data was cumulatively acknowledged outside recovery
    /// (RFC 5681 §3.1: slow start with ABC, else congestion avoidance).
    pub(crate) fn on_ack(&mut self, newly_acked: usize) {
        if newly_acked == 0 {
            return;
        }
        self.pristine = false;
        self.rto_pending = false;
        let mut remaining = newly_acked;
        if self.in_slow_start() {
            // RFC 3465 §2.2: cwnd += min(N, L*SMSS) with L = 2.
            let increase = remaining.min(2 * self.smss);
            // Stop at ssthresh; bytes past it are counted by congestion
            // avoidance below so that one ACK never overshoots twice.
            let room = self.ssthresh - self.cwnd;
            if increase < room {
                self.cwnd += increase;
                return;
            }
            self.cwnd = self.ssthresh;
            remaining = increase - room;
            if remaining == 0 {
                return;
            }
        }
        // RFC 3465 §2.1 / RFC 5681 §3.1 eq. 3 alternative: once a whole
        // cwnd of bytes has been acknowledged, grow by one SMSS.
        self.bytes_acked = self.bytes_acked.saturating_add(remaining);
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.smss).min(SSTHRESH_INFINITE);
        }
    }

    /// Loss detected by dupacks/SACK: ssthresh = max(FlightSize/2, 2*SMSS),
    /// cwnd = ssthresh (RFC 5681 eq. 4, RFC 6675 §5 step 4.2).
    pub(crate) fn on_loss(&mut self, flight_size: usize) {
        self.pristine = false;
        self.ssthresh = self.halved(flight_size);
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }

    /// Leaving fast recovery after a full ACK (RFC 6582 §3.2 step 3):
    /// cwnd = min(ssthresh, max(flight_size, SMSS) + SMSS).
    pub(crate) fn on_recovery_exit(&mut self, flight_size: usize) {
        self.pristine = false;
        // RFC 6582 §3.2 step 3, option (1): the "full reduction" variant
        // that avoids a burst when little data is outstanding.
        self.cwnd = self
            .ssthresh
            .min(flight_size.max(self.smss).saturating_add(self.smss));
        self.bytes_acked = 0;
    }

    /// Retransmission timeout: ssthresh = max(FlightSize/2, 2*SMSS), cwnd =
    /// loss window of 1 SMSS (RFC 5681 §3.1).
    ///
    /// RFC 5681 §3.1 (after eq. 4): when the segment the timer fired for had
    /// already been retransmitted by the timer, ssthresh is held constant.
    /// This type tracks that itself: a second `on_rto` without any `on_ack`
    /// in between leaves ssthresh alone.
    pub(crate) fn on_rto(&mut self, flight_size: usize) {
        self.pristine = false;
        if !self.rto_pending {
            self.ssthresh = self.halved(flight_size);
        }
        self.rto_pending = true;
        // RFC 5681 §3.1: LW = 1 full-sized segment.
        self.cwnd = self.smss;
        // RFC 3465 §2.1: bytes_acked is reset on a retransmission timeout.
        self.bytes_acked = 0;
    }

    /// Idle longer than an RTO: cwnd = min(cwnd, IW) (RFC 5681 §4.1).
    pub(crate) fn on_idle_restart(&mut self) {
        // RFC 5681 §4.1: RW = min(IW, cwnd).
        self.cwnd = self.cwnd.min(initial_window(self.smss));
        self.bytes_acked = 0;
    }

    /// Careful Resume (draft-ietf-tsvwg-careful-resume §4.3): once a new
    /// path is validated, cwnd may jump to `jump` (half the old path's
    /// window). Never lowers cwnd; ssthresh is left alone.
    pub(crate) fn resume_jump(&mut self, jump: usize) {
        self.pristine = false;
        self.cwnd = self.cwnd.max(jump).min(SSTHRESH_INFINITE);
        self.bytes_acked = 0;
    }

    /// Start over on a new path: cwnd = IW, ssthresh high (DESIGN.md: a new
    /// path restarts congestion control).
    pub(crate) fn reset(&mut self) {
        *self = NewReno::new(self.smss);
    }

    /// The effective SMSS changed (e.g. timestamps negotiated, MSS option).
    ///
    /// Before the window has been used this recomputes the RFC 6928 initial
    /// window for the new SMSS. Afterwards cwnd and ssthresh keep their size
    /// in segments (cwnd at least 1 SMSS, a reduced ssthresh at least
    /// 2 SMSS), as they would in a segment-counting TCP.
    pub(crate) fn set_smss(&mut self, smss: usize) {
        let smss = smss.max(1);
        if smss == self.smss {
            return;
        }
        if self.pristine {
            self.smss = smss;
            self.cwnd = initial_window(smss);
            return;
        }
        let rescale = |bytes: usize| -> usize {
            ((bytes as u128 * smss as u128) / self.smss as u128).min(SSTHRESH_INFINITE as u128)
                as usize
        };
        self.cwnd = rescale(self.cwnd).max(smss);
        self.bytes_acked = rescale(self.bytes_acked);
        if self.ssthresh != SSTHRESH_INFINITE {
            self.ssthresh = rescale(self.ssthresh).max(2 * smss);
        }
        self.smss = smss;
    }

    /// RFC 5681 eq. 4: max(FlightSize / 2, 2*SMSS).
    fn halved(&self, flight_size: usize) -> usize {
        (flight_size / 2).max(2 * self.smss)
    }
}

impl CongestionControl for NewReno {
    #[cfg(test)]
    fn kind(&self) -> CongestionKind {
        CongestionKind::NewReno
    }

    fn cwnd(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    fn smss(&self) -> usize {
        self.smss
    }

    fn in_slow_start(&self) -> bool {
        NewReno::in_slow_start(self)
    }

    fn on_ack_sample(&mut self, ack: &AckSample) {
        if !ack.in_recovery {
            self.on_ack(ack.acked);
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, flight_size: usize) {
        self.on_loss(flight_size);
    }

    fn on_recovery_exit(&mut self, flight_size: usize) {
        NewReno::on_recovery_exit(self, flight_size);
    }

    fn on_rto(&mut self, flight_size: usize) {
        NewReno::on_rto(self, flight_size);
    }

    fn on_idle_restart(&mut self) {
        NewReno::on_idle_restart(self);
    }

    fn set_smss(&mut self, smss: usize) {
        NewReno::set_smss(self, smss);
    }

    fn undo(&mut self, prior: Prior) {
        // RFC 3708 §5 / Linux tcp_undo_cwnd_reduction.
        self.cwnd = self.cwnd.max(prior.cwnd);
        self.ssthresh = self.ssthresh.max(prior.ssthresh);
        self.rto_pending = false;
    }

    fn reset(&mut self) {
        NewReno::reset(self);
    }

    fn resume_jump(&mut self, jump: usize) {
        NewReno::resume_jump(self, jump);
    }
}

/// RFC 6928 §2: min(10*MSS, max(2*MSS, 14600)).
pub(crate) fn initial_window(smss: usize) -> usize {
    (10 * smss).min((2 * smss).max(14_600))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMSS: usize = 1000;

    #[test]
    fn initial_window_follows_rfc6928() {
        // 10*1460 = 14600 vs max(2920, 14600) = 14600.
        assert_eq!(NewReno::new(1460).cwnd(), 14_600);
        // 10*1000 = 10000 < 14600.
        assert_eq!(NewReno::new(1000).cwnd(), 10_000);
        // 10*4000 = 40000 vs max(8000, 14600) = 14600.
        assert_eq!(NewReno::new(4000).cwnd(), 14_600);
        // 10*9000 = 90000 vs max(18000, 14600) = 18000.
        assert_eq!(NewReno::new(9000).cwnd(), 18_000);
        let cc = NewReno::new(1460);
        assert!(cc.in_slow_start());
        assert!(cc.ssthresh() > 1 << 40);
    }

    #[test]
    fn slow_start_uses_abc_with_l_of_two_smss() {
        let mut cc = NewReno::new(SMSS);
        // One ACK covering 5 segments grows by at most L = 2*SMSS.
        cc.on_ack(5 * SMSS);
        assert_eq!(cc.cwnd(), 12_000);
        // A small ACK grows by what it acknowledges.
        cc.on_ack(300);
        assert_eq!(cc.cwnd(), 12_300);
        // An ACK for one segment grows by one SMSS.
        cc.on_ack(SMSS);
        assert_eq!(cc.cwnd(), 13_300);
        cc.on_ack(0);
        assert_eq!(cc.cwnd(), 13_300);
    }

    #[test]
    fn congestion_avoidance_grows_one_smss_per_window_of_bytes() {
        let mut cc = NewReno::new(SMSS);
        cc.on_loss(20_000); // ssthresh = cwnd = 10_000
        assert_eq!(cc.cwnd(), 10_000);
        assert!(!cc.in_slow_start());
        for _ in 0..9 {
            cc.on_ack(SMSS);
        }
        assert_eq!(cc.cwnd(), 10_000, "9000 of 10000 bytes acked");
        cc.on_ack(SMSS);
        assert_eq!(cc.cwnd(), 11_000, "a full window acked");
        // The counter kept the remainder (0) and now needs 11000 bytes.
        cc.on_ack(10_500);
        assert_eq!(cc.cwnd(), 11_000);
        cc.on_ack(600);
        assert_eq!(cc.cwnd(), 12_000);
    }

    #[test]
    fn slow_start_stops_at_ssthresh_and_carries_the_rest() {
        let mut cc = NewReno::new(SMSS);
        cc.on_rto(9_000); // ssthresh 4500, cwnd 1000
        assert_eq!((cc.cwnd(), cc.ssthresh()), (1_000, 4_500));
        cc.on_ack(SMSS);
        cc.on_ack(SMSS);
        cc.on_ack(SMSS);
        assert_eq!(cc.cwnd(), 4_000);
        // +2000 would overshoot: stop at 4500, 1500 go to bytes_acked.
        cc.on_ack(2 * SMSS);
        assert_eq!(cc.cwnd(), 4_500);
        assert!(!cc.in_slow_start());
        cc.on_ack(2_999);
        assert_eq!(cc.cwnd(), 4_500);
        cc.on_ack(1);
        assert_eq!(cc.cwnd(), 5_500);
    }

    #[test]
    fn loss_halves_flight_size_with_a_two_segment_floor() {
        let mut cc = NewReno::new(SMSS);
        cc.on_loss(30_000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (15_000, 15_000));
        cc.on_loss(3_000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (2_000, 2_000));
    }

    #[test]
    fn recovery_exit_follows_rfc6582() {
        let mut cc = NewReno::new(SMSS);
        cc.on_loss(40_000); // ssthresh 20_000
                            // Plenty in flight: cwnd = ssthresh.
        cc.on_recovery_exit(30_000);
        assert_eq!(cc.cwnd(), 20_000);
        // Little in flight: flight + SMSS.
        cc.on_recovery_exit(5_000);
        assert_eq!(cc.cwnd(), 6_000);
        // Nothing in flight: max(0, SMSS) + SMSS.
        cc.on_recovery_exit(0);
        assert_eq!(cc.cwnd(), 2_000);
        assert_eq!(cc.ssthresh(), 20_000);
    }

    #[test]
    fn rto_sets_loss_window_and_repeated_rto_holds_ssthresh() {
        let mut cc = NewReno::new(SMSS);
        cc.on_rto(40_000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (1_000, 20_000));
        // The retransmission is lost too: FlightSize is now tiny, but
        // ssthresh must not collapse (RFC 5681 §3.1).
        cc.on_rto(1_000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (1_000, 20_000));
        // New data acknowledged ends that episode; the next RTO halves again.
        cc.on_ack(SMSS);
        assert_eq!(cc.cwnd(), 2_000);
        cc.on_rto(8_000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (1_000, 4_000));
        cc.on_rto(1_000);
        assert_eq!(cc.ssthresh(), 4_000);
        cc.on_ack(SMSS);
        cc.on_rto(1_000);
        assert_eq!(cc.ssthresh(), 2_000, "floor of 2*SMSS");
    }

    #[test]
    fn idle_restart_caps_at_initial_window() {
        let mut cc = NewReno::new(SMSS);
        for _ in 0..20 {
            cc.on_ack(2 * SMSS);
        }
        assert_eq!(cc.cwnd(), 50_000);
        cc.on_idle_restart();
        assert_eq!(cc.cwnd(), 10_000);
        // A window already below IW is left alone.
        cc.on_rto(20_000);
        cc.on_idle_restart();
        assert_eq!(cc.cwnd(), 1_000);
        assert_eq!(cc.ssthresh(), 10_000);
    }

    #[test]
    fn reset_returns_to_initial_state() {
        let mut cc = NewReno::new(SMSS);
        cc.on_loss(50_000);
        cc.on_ack(SMSS);
        cc.reset();
        assert_eq!(cc.cwnd(), 10_000);
        assert!(cc.in_slow_start());
        assert!(cc.ssthresh() > 1 << 40);
        // The RTO bookkeeping was forgotten too: a first RTO halves.
        cc.on_rto(1_000);
        cc.reset();
        cc.on_rto(30_000);
        assert_eq!(cc.ssthresh(), 15_000);
    }

    #[test]
    fn set_smss_recomputes_iw_when_pristine_and_rescales_otherwise() {
        let mut cc = NewReno::new(536);
        assert_eq!(cc.cwnd(), 5_360);
        cc.set_smss(1448);
        assert_eq!(cc.smss(), 1448);
        assert_eq!(cc.cwnd(), 14_480);
        // After a loss: ssthresh 10 segments of 1448, cwnd 10 segments.
        cc.on_loss(20 * 1448);
        assert_eq!(cc.cwnd(), 14_480);
        cc.set_smss(1000);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (10_000, 10_000));
        // The loss window stays one segment.
        cc.on_rto(2_000);
        cc.set_smss(1460);
        assert_eq!(cc.cwnd(), 1_460);
        assert_eq!(cc.ssthresh(), 2_920, "two segments stay two segments");
        // The untouched "infinite" ssthresh stays infinite.
        let mut cc = NewReno::new(1000);
        cc.on_ack(1000);
        cc.set_smss(500);
        assert_eq!(cc.cwnd(), 5_500);
        assert!(cc.ssthresh() > 1 << 40);
    }
}
