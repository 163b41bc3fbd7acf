//! Retransmission timer computation (RFC 6298).

use crate::time::Duration;

/// RFC 6298 §2: K = 4.
const K: u32 = 4;

/// RFC 6298 estimator: SRTT, RTTVAR and the (backed-off) RTO.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    initial_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    granularity: Duration,
    /// `(SRTT, RTTVAR)` once the first sample has arrived.
    estimate: Option<(Duration, Duration)>,
    /// The most recent sample.
    latest: Option<Duration>,
    backoff: u32,
}

impl RttEstimator {
    /// `initial_rto` until the first sample (RFC 6298 §2.1: 1 s), `min_rto`
    /// floor (sustain default 200 ms), `max_rto` ceiling (>= 60 s), `granularity`
    /// the clock granularity G of §2.
    pub(crate) fn new(
        initial_rto: Duration,
        min_rto: Duration,
        max_rto: Duration,
        granularity: Duration,
    ) -> RttEstimator {
        RttEstimator {
            initial_rto,
            min_rto,
            // A ceiling below the floor would make `clamp` panic; the floor wins.
            max_rto: max_rto.max(min_rto),
            granularity,
            estimate: None,
            latest: None,
            backoff: 0,
        }
    }

    /// Feed one RTT measurement (RFC 6298 §2.2 first, §2.3 later). Also
    /// clears the exponential backoff.
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
        self.latest = Some(rtt);
        // Saturating arithmetic throughout: the sample may come from a
        // timestamp echo the peer controls, and must never panic.
        self.estimate = Some(match self.estimate {
            // RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2.
            None => (rtt, rtt / 2),
            // RFC 6298 §2.3, beta = 1/4 then alpha = 1/8, RTTVAR first
            // because it uses the old SRTT.
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(rtt);
                let rttvar = (rttvar.saturating_mul(3) / 4).saturating_add(deviation / 4);
                let srtt = (srtt.saturating_mul(7) / 8).saturating_add(rtt / 8);
                (srtt, rttvar)
            }
        });
        // RFC 6298 §5.7 note / Karn: a fresh sample recomputes RTO from the
        // estimate, which discards the backed-off value.
        self.backoff = 0;
    }

    /// Current RTO including backoff, clamped to [min_rto, max_rto].
    pub(crate) fn rto(&self) -> Duration {
        let base = match self.estimate {
            None => self.initial_rto,
            // RFC 6298 §2.2/§2.3: RTO <- SRTT + max(G, K*RTTVAR).
            Some((srtt, rttvar)) => {
                srtt.saturating_add(self.granularity.max(rttvar.saturating_mul(K)))
            }
        };
        // RFC 6298 §2.4 (floor, sustain's min_rto) and §2.5 (ceiling).
        let base = base.clamp(self.min_rto, self.max_rto);
        // RFC 6298 §5.5: each expiry doubles the RTO, up to the ceiling.
        let factor = 1u32.checked_shl(self.backoff).unwrap_or(u32::MAX);
        base.saturating_mul(factor).min(self.max_rto)
    }

    /// The retransmission timer expired: double the RTO (RFC 6298 §5.5).
    pub(crate) fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Consecutive backoffs since the last sample.
    pub(crate) fn backoff_count(&self) -> u32 {
        self.backoff
    }

    /// The most recent sample, if any since the last reset.
    pub(crate) fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// Smoothed RTT (RFC 6298 SRTT), once sampled.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.estimate.map(|(srtt, _)| srtt)
    }

    /// RTT variation (RFC 6298 RTTVAR), once sampled.
    #[cfg(test)]
    pub(crate) fn rttvar(&self) -> Option<Duration> {
        self.estimate.map(|(_, rttvar)| rttvar)
    }

    /// Forget all samples (a new path): back to `initial_rto`.
    pub(crate) fn reset(&mut self) {
        self.estimate = None;
        self.latest = None;
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    /// RFC 6298 §2.4 floor of 1 s would hide the arithmetic; use a small one.
    fn estimator() -> RttEstimator {
        RttEstimator::new(ms(1000), ms(10), ms(60_000), ms(1))
    }

    #[test]
    fn initial_rto_before_any_sample() {
        let e = estimator();
        assert_eq!(e.rto(), ms(1000));
        assert_eq!(e.srtt(), None);
        assert_eq!(e.rttvar(), None);
        assert_eq!(e.backoff_count(), 0);
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut e = estimator();
        e.on_sample(ms(100));
        // RFC 6298 §2.2: SRTT = 100, RTTVAR = 50, RTO = 100 + 4*50 = 300.
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), Some(ms(50)));
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn subsequent_samples_follow_alpha_and_beta() {
        let mut e = estimator();
        e.on_sample(ms(100));
        e.on_sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 37.5 + 25 = 62.5
        // SRTT = 7/8*100 + 1/8*200 = 87.5 + 25 = 112.5
        // RTO = 112.5 + 4*62.5 = 362.5
        assert_eq!(e.rttvar(), Some(us(62_500)));
        assert_eq!(e.srtt(), Some(us(112_500)));
        assert_eq!(e.rto(), us(362_500));
        e.on_sample(ms(100));
        // RTTVAR = 3/4*62.5 + 1/4*12.5 = 46.875 + 3.125 = 50
        // SRTT = 7/8*112.5 + 100/8 = 98.4375 + 12.5 = 110.9375
        assert_eq!(e.rttvar(), Some(us(50_000)));
        assert_eq!(e.srtt(), Some(us(110_937) + Duration::from_nanos(500)));
        assert_eq!(e.rto(), us(310_937) + Duration::from_nanos(500));
    }

    #[test]
    fn granularity_dominates_a_tiny_variance() {
        let mut e = RttEstimator::new(ms(1000), ms(1), ms(60_000), ms(10));
        // Constant samples drive RTTVAR towards zero; K*RTTVAR < G.
        for _ in 0..40 {
            e.on_sample(ms(50));
        }
        let rttvar = e.rttvar().unwrap();
        assert!(rttvar * K < ms(10), "rttvar {rttvar:?}");
        assert_eq!(e.srtt(), Some(ms(50)));
        assert_eq!(e.rto(), ms(60));
    }

    #[test]
    fn rto_is_clamped_to_floor_and_ceiling() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000), ms(1));
        e.on_sample(ms(10));
        // 10 + 4*5 = 30 ms, raised to the 200 ms floor.
        assert_eq!(e.rto(), ms(200));
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000), ms(1));
        e.on_sample(ms(30_000));
        // 30 + 4*15 = 90 s, cut to the 60 s ceiling.
        assert_eq!(e.rto(), ms(60_000));
        // The initial RTO is clamped too.
        let e = RttEstimator::new(ms(100), ms(200), ms(60_000), ms(1));
        assert_eq!(e.rto(), ms(200));
    }

    #[test]
    fn timeouts_double_up_to_the_ceiling_and_a_sample_clears_backoff() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000), ms(1));
        let expected = [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000];
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(e.backoff_count(), i as u32);
            assert_eq!(e.rto(), ms(want), "after {i} timeouts");
            e.on_timeout();
        }
        // Far past any shift width: still the ceiling, no overflow.
        for _ in 0..100 {
            e.on_timeout();
        }
        assert_eq!(e.backoff_count(), 108);
        assert_eq!(e.rto(), ms(60_000));
        e.on_sample(ms(100));
        assert_eq!(e.backoff_count(), 0);
        assert_eq!(e.rto(), ms(300));
        e.on_timeout();
        assert_eq!(e.rto(), ms(600));
    }

    #[test]
    fn reset_forgets_samples_and_backoff() {
        let mut e = estimator();
        e.on_sample(ms(100));
        e.on_timeout();
        e.reset();
        assert_eq!(e.srtt(), None);
        assert_eq!(e.rttvar(), None);
        assert_eq!(e.backoff_count(), 0);
        assert_eq!(e.rto(), ms(1000));
        // The next sample is a first sample again.
        e.on_sample(ms(40));
        assert_eq!(e.srtt(), Some(ms(40)));
        assert_eq!(e.rttvar(), Some(ms(20)));
    }

    #[test]
    fn absurd_samples_saturate_instead_of_panicking() {
        let mut e = estimator();
        e.on_sample(Duration::MAX);
        e.on_sample(Duration::MAX);
        e.on_sample(Duration::ZERO);
        assert_eq!(e.rto(), ms(60_000));
    }
}
