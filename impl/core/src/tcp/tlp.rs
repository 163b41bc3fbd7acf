//! Tail Loss Probe (RFC 8985 §7).
//!
//! Read first: RFC 8985 §7.1-§7.4. When the last segments of a flight are
//! lost no later segment is delivered, so RACK has nothing to go on and
//! only the RTO would repair them. The probe timeout (PTO, about two
//! round trips) fires first: the sender sends one segment (new data, or
//! the highest segment again) to draw an ACK whose SACK lets RACK find the
//! loss. One probe per episode in the RFC (here up to MAX_PROBES, below);
//! the episode ends when the ACK of the
//! probe arrives, and if the probe itself repaired a loss (§7.4) the
//! connection reduces its window as for a fast recovery.
//!
//! The connection calls [`Tlp::arm`] after sending new data (in SACK
//! recovery after any segment: "Recovery probe" below) and after an ACK
//! that advances SND.UNA, [`Tlp::on_timeout`] when [`Tlp::deadline`]
//! passes, [`Tlp::on_probe_sent`] and then [`Tlp::arm_again`] when a probe
//! went out ("Repeated probes"), and [`Tlp::on_ack`] on every ACK.
//!
//! **Recovery probe (a deviation).** §7.2 arms the PTO only outside fast
//! recovery, where RACK repairs losses; but RACK needs an ACK to go on.
//! A sender that is cwnd-limited in SACK recovery (PRR grants nothing
//! without ACKs) and loses the one ACK that would have covered its whole
//! flight, or the flight itself, can only wait for the RTO, and at a LAN's
//! round trip the RTO's 200 ms floor is thousands of them: in the lab at
//! 0 ms and 3 % random loss each way, BBR's flight in recovery was 4
//! segments, one lost cumulative ACK left it silent, and such timeouts
//! took a third of the transfer's time. So in SACK recovery the PTO is
//! armed after every transmission too, as QUIC's runs in every state
//! (RFC 9002 §6.2): after 2 SRTT of silence one probe (new data, or the
//! highest segment again) draws the ACK that RACK and PRR go on from.
//! Still one probe per episode; a probe in recovery does not reduce the
//! window again (§7.4.2 applies outside recovery only); not in the RTO's
//! own recovery (the backoff rules there) nor without SACK.
//!
//! **Probe content (a deviation).** §7.3 says the probe SHOULD be new
//! data when the window allows, the highest segment again otherwise. But
//! after a silence new data is one in-order segment, which a receiver may
//! hold for its delayed-ACK timer (40 ms in Linux and here, up to 500 ms
//! by RFC 9293), and §7.2 budgets that wait (WCDelAckT) only for a
//! one-segment flight. When it is the flight's last ACK that was lost,
//! the probe's ACK is that wait late: in the lab at 0 ms and 1 % loss,
//! every probe was answered 41 ms after it left, a fifth of the transfer's
//! time. A segment sent again is a duplicate, which the receiver
//! acknowledges at once (RFC 5681 §4.2, with a D-SACK by RFC 2883; Linux
//! also enters quick-ACK mode), so the probe is the highest segment
//! again; new data only when nothing sent can be sent again. It costs one
//! segment of data that may have arrived, once per episode, and the
//! D-SACK tells the sender so (§7.4.1: no reduction).
//!
//! **Repeated probes (a deviation).** §7.3 allows one probe per episode;
//! if the probe or its ACK is lost too, the RTO follows. At a LAN's round
//! trip that is a 200 ms stop for two lost packets, and at 3 % loss each
//! way it was the lab's whole difference: 9 RTOs in 5 s, every one after
//! an unanswered probe. As QUIC's PTO does (RFC 9002 §6.2.1), an
//! unanswered probe is followed by another after twice the previous PTO,
//! up to MAX_PROBES in an episode, and only while the next one would still
//! come before the RTO: later probes neither restart nor replace the RTO,
//! which stays the bound (and the R1/R2 retry count) it is. At a WAN's
//! round trip 2·PTO is past the RTO and nothing changes.

use crate::time::{Duration, Instant};
use crate::wire::SeqNumber;

/// RFC 8985 §7.2 WCDelAckT: worst-case delayed-ACK timer.
pub(crate) const WC_DEL_ACK: Duration = Duration::from_millis(200);
/// Added to 2*SRTT (Linux `tcp_schedule_loss_probe` adds
/// `TCP_TIMEOUT_MIN`, 2 ms): at a LAN's sub-millisecond SRTT a bare
/// 2*SRTT would probe what an ACK a timer tick late will still answer,
/// and a timer cannot be kept to microseconds. (It was a 10 ms floor,
/// fifty round trips at 0.2 ms RTT.)
const PTO_MARGIN: Duration = Duration::from_millis(2);
/// Probes in one episode at most (module doc, "Repeated probes").
pub(crate) const MAX_PROBES: u32 = 4;

/// What an ACK told about the current probe (RFC 8985 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlpOutcome {
    /// Nothing to conclude (no probe out, or its ACK has not come).
    Pending,
    /// The probe's ACK came and nothing was lost, or the probe was new
    /// data (RACK handles any loss it uncovers).
    Done,
    /// A D-SACK shows the probe duplicated delivered data: no loss.
    Spurious,
    /// The probe repaired a tail loss: react as to a fast recovery.
    Repaired,
}

/// TLP state (RFC 8985 §7.1: `TLP.end_seq`, `TLP.is_retrans`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tlp {
    deadline: Option<Instant>,
    /// The PTO fired: the next transmission is the probe.
    pending: bool,
    /// `(TLP.end_seq, TLP.is_retrans)` while a probe is unanswered.
    episode: Option<(SeqNumber, bool)>,
    /// Probes sent in this episode.
    probes: u32,
    /// The PTO the episode's last probe was armed with.
    pto: Duration,
}

impl Tlp {
    /// Forget everything (a new path, an RTO).
    pub(crate) fn reset(&mut self) {
        *self = Tlp::default();
    }

    /// When the probe timeout fires, if armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Disarms the probe timeout and forgets a pending probe.
    pub(crate) fn cancel(&mut self) {
        self.deadline = None;
        self.pending = false;
    }

    /// No probe may be sent while the previous one is unanswered
    /// (RFC 8985 §7.3: at most one per episode).
    pub(crate) fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// RFC 8985 §7.2 `TLP_calc_PTO`: PTO = 2*SRTT (1 s before any
    /// sample), plus WCDelAckT when only one segment is in flight, and
    /// "If Now() + PTO > TCP_RTO_expiration(): PTO = TCP_RTO_expiration()
    /// - Now()": the probe replaces an RTO that would come first.
    pub(crate) fn arm(
        &mut self,
        now: Instant,
        srtt: Option<Duration>,
        one_segment: bool,
        rto_at: Option<Instant>,
    ) {
        if self.episode.is_some() {
            return;
        }
        let mut pto = match srtt {
            Some(srtt) => srtt * 2 + PTO_MARGIN,
            None => Duration::from_secs(1),
        };
        if one_segment {
            pto += WC_DEL_ACK;
        }
        // §7.2: never after the RTO. At a probe's expiry the connection
        // sends the probe and restarts the RTO behind it (§7.3) instead of
        // collapsing cwnd to one segment, which at a LAN's RTT costs the
        // minimum RTO many times over.
        let at = now + pto;
        self.pto = pto;
        self.deadline = Some(match rto_at {
            Some(rto) if rto < at => rto.max(now),
            _ => at,
        });
    }

    /// After a probe went out: the next one of the episode at twice the
    /// last PTO, if that comes before `rto_at` and the episode has probes
    /// left (module doc, "Repeated probes").
    pub(crate) fn arm_again(&mut self, now: Instant, rto_at: Option<Instant>) {
        if self.episode.is_none() || self.probes >= MAX_PROBES {
            return;
        }
        let pto = self.pto * 2;
        let at = now + pto;
        if rto_at.is_some_and(|rto| at < rto) {
            self.pto = pto;
            self.deadline = Some(at);
        }
    }

    /// The PTO passed: the next transmission is a probe (§7.3).
    pub(crate) fn on_timeout(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.pending = self.episode.is_none() || self.probes < MAX_PROBES;
        }
        self.pending
    }

    /// Whether the next transmission should be the probe.
    pub(crate) fn probe_due(&self) -> bool {
        self.pending
    }

    /// §7.3: the probe went out; `end_seq` is SND.NXT after it. A repeated
    /// probe keeps the episode: its end is the highest, and it counts as
    /// a retransmission only if every probe was one.
    pub(crate) fn on_probe_sent(&mut self, end_seq: SeqNumber, is_retrans: bool) {
        self.pending = false;
        self.probes += 1;
        self.episode = Some(match self.episode {
            Some((end, retrans)) => (end.max(end_seq), retrans && is_retrans),
            None => (end_seq, is_retrans),
        });
    }

    /// The probe was answered: a repeated probe still armed is not needed.
    fn end_episode(&mut self) {
        self.episode = None;
        self.probes = 0;
        self.deadline = None;
    }

    /// §7.4 on every ACK: `ack` is SEG.ACK, `dsack_probe` whether it
    /// carried a D-SACK for the probe's data.
    pub(crate) fn on_ack(&mut self, ack: SeqNumber, dsack_probe: bool) -> TlpOutcome {
        let Some((end_seq, is_retrans)) = self.episode else {
            return TlpOutcome::Pending;
        };
        if is_retrans && dsack_probe {
            self.end_episode();
            return TlpOutcome::Spurious;
        }
        if ack >= end_seq {
            self.end_episode();
            // §7.4.2: an ACK covering a retransmitted probe without a
            // D-SACK means the original was lost and the probe repaired it.
            if is_retrans {
                return TlpOutcome::Repaired;
            }
            return TlpOutcome::Done;
        }
        TlpOutcome::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn pto_is_two_srtt_plus_margin_plus_delack_for_one_segment_capped_at_the_rto() {
        let mut tlp = Tlp::default();
        let srtt = Some(Duration::from_millis(30));
        tlp.arm(ms(0), srtt, false, Some(ms(230)));
        assert_eq!(tlp.deadline(), Some(ms(62)));
        tlp.arm(ms(0), srtt, true, Some(ms(300)));
        assert_eq!(tlp.deadline(), Some(ms(262)));
        tlp.arm(ms(0), srtt, true, Some(ms(230)));
        assert_eq!(tlp.deadline(), Some(ms(230)), "capped at the RTO");
        tlp.arm(ms(0), None, false, None);
        assert_eq!(tlp.deadline(), Some(ms(1000)));
        // 0.2 ms SRTT (a LAN): 2*SRTT plus the 2 ms margin.
        tlp.arm(
            ms(0),
            Some(Duration::from_micros(200)),
            false,
            Some(ms(200)),
        );
        assert_eq!(tlp.deadline(), Some(Instant::from_micros(2400)));
    }

    #[test]
    fn one_probe_per_episode_and_its_outcomes() {
        let mut tlp = Tlp::default();
        tlp.arm(ms(0), Some(Duration::from_millis(30)), false, None);
        assert!(!tlp.on_timeout(ms(61)));
        assert!(tlp.on_timeout(ms(62)));
        tlp.on_probe_sent(SeqNumber(5000), true);
        assert!(!tlp.probe_due());
        // No second PTO while the probe is unanswered.
        tlp.arm(ms(61), Some(Duration::from_millis(30)), false, None);
        assert_eq!(tlp.deadline(), None);
        assert_eq!(tlp.on_ack(SeqNumber(3000), false), TlpOutcome::Pending);
        assert_eq!(tlp.on_ack(SeqNumber(5000), false), TlpOutcome::Repaired);
        assert!(!tlp.in_episode());
        // A probe that duplicated delivered data.
        tlp.arm(ms(100), Some(Duration::from_millis(30)), false, None);
        assert!(tlp.on_timeout(ms(162)));
        tlp.on_probe_sent(SeqNumber(9000), true);
        assert_eq!(tlp.on_ack(SeqNumber(9000), true), TlpOutcome::Spurious);
        // A probe of new data.
        tlp.arm(ms(200), Some(Duration::from_millis(30)), false, None);
        assert!(tlp.on_timeout(ms(262)));
        tlp.on_probe_sent(SeqNumber(10_000), false);
        assert_eq!(tlp.on_ack(SeqNumber(10_000), false), TlpOutcome::Done);
    }

    #[test]
    fn unanswered_probes_repeat_backed_off_before_the_rto_only() {
        let srtt = Some(Duration::from_millis(1));
        let mut tlp = Tlp::default();
        // PTO = 2 SRTT + 2 ms = 4 ms; the RTO expires at 200 ms.
        let rto = Some(ms(200));
        tlp.arm(ms(0), srtt, false, rto);
        let mut sent = Vec::new();
        while let Some(d) = tlp.deadline() {
            assert!(tlp.on_timeout(d));
            tlp.on_probe_sent(SeqNumber(5000), true);
            sent.push(d);
            tlp.arm_again(d, rto);
        }
        // 4 ms, then 8, 16 and 32 ms later: MAX_PROBES, all before the RTO.
        assert_eq!(sent, [ms(4), ms(12), ms(28), ms(60)]);
        assert_eq!(tlp.on_ack(SeqNumber(5000), false), TlpOutcome::Repaired);
        assert_eq!(tlp.deadline(), None, "the answer disarms the next probe");
        // A WAN's PTO: twice it is past the RTO, so one probe only.
        let mut wan = Tlp::default();
        let rto = Some(ms(300));
        wan.arm(ms(0), Some(Duration::from_millis(60)), false, rto);
        assert!(wan.on_timeout(ms(122)));
        wan.on_probe_sent(SeqNumber(5000), false);
        wan.arm_again(ms(122), rto);
        assert_eq!(wan.deadline(), None);
    }
}
