//! Retransmission timer computation (RFC 6298).

use crate::time::Duration;

/// RFC 6298 estimator: SRTT, RTTVAR and the (backed-off) RTO.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    // Fields are the implementer's choice.
    _private: (),
}

impl RttEstimator {
    /// `initial_rto` until the first sample (RFC 6298 §2.1: 1 s), `min_rto`
    /// floor (sustain default 200 ms), `max_rto` ceiling (>= 60 s), `granularity`
    /// the clock granularity G of §2.
    pub fn new(
        initial_rto: Duration,
        min_rto: Duration,
        max_rto: Duration,
        granularity: Duration,
    ) -> RttEstimator {
        let _ = (initial_rto, min_rto, max_rto, granularity);
        todo!("building-blocks helper")
    }

    /// Feed one RTT measurement (RFC 6298 §2.2 first, §2.3 later). Also
    /// clears the exponential backoff.
    pub fn on_sample(&mut self, rtt: Duration) {
        let _ = rtt;
        todo!()
    }

    /// Current RTO including backoff, clamped to [min_rto, max_rto].
    pub fn rto(&self) -> Duration {
        todo!()
    }

    /// The retransmission timer expired: double the RTO (RFC 6298 §5.5).
    pub fn on_timeout(&mut self) {
        todo!()
    }

    /// Consecutive backoffs since the last sample.
    pub fn backoff_count(&self) -> u32 {
        todo!()
    }

    pub fn srtt(&self) -> Option<Duration> {
        todo!()
    }

    pub fn rttvar(&self) -> Option<Duration> {
        todo!()
    }

    /// Forget all samples (a new path): back to `initial_rto`.
    pub fn reset(&mut self) {
        todo!()
    }
}
