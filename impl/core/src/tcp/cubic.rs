//! CUBIC congestion control (RFC 9438) with HyStart++ (RFC 9406) in slow
//! start.
//!
//! Read first: RFC 9438 §4 (window growth, the Reno-friendly region, fast
//! convergence, multiplicative decrease, spurious congestion events) and
//! Linux net/ipv4/tcp_cubic.c. Windows are kept in bytes; the cubic
//! function is evaluated in segments and seconds as the RFC writes it.

use super::congestion::{initial_window, AckSample, CongestionControl, SSTHRESH_INFINITE};
use super::hystart::{HyStart, Phase, CSS_GROWTH_DIVISOR};
use super::undo::Prior;
use crate::time::{Duration, Instant};

/// RFC 9438 §4.6: β_cubic.
const BETA: f64 = 0.7;
/// RFC 9438 §5.1: C.
const C: f64 = 0.4;

/// CUBIC state (RFC 9438 §4.1.2 variables).
#[derive(Debug, Clone)]
pub(crate) struct Cubic {
    smss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// W_max (segments): the window before the last reduction.
    w_max: f64,
    /// Fast convergence (RFC 9438 §4.7): the W_max before that.
    w_last_max: f64,
    /// K (seconds) and the epoch it belongs to.
    k: f64,
    epoch_start: Option<Instant>,
    cwnd_epoch: f64,
    /// W_est (segments), the Reno-friendly estimate (§4.3).
    w_est: f64,
    /// Fractional growth carried between ACKs (bytes).
    carry: f64,
    hystart: HyStart,
    rto_pending: bool,
    pristine: bool,
    /// (W_max, W_last_max, K) before the last reduction, for undo (§4.9).
    prior: Option<(f64, f64, f64)>,
}

impl Cubic {
    /// A CUBIC controller (RFC 9438) for sender MSS `smss` bytes, in slow start.
    pub(crate) fn new(smss: usize) -> Cubic {
        let smss = smss.max(1);
        Cubic {
            smss,
            cwnd: initial_window(smss),
            ssthresh: SSTHRESH_INFINITE,
            w_max: 0.0,
            w_last_max: 0.0,
            k: 0.0,
            epoch_start: None,
            cwnd_epoch: 0.0,
            w_est: 0.0,
            carry: 0.0,
            hystart: HyStart::new(),
            rto_pending: false,
            pristine: true,
            prior: None,
        }
    }

    fn segs(&self, bytes: usize) -> f64 {
        bytes as f64 / self.smss as f64
    }

    /// RFC 9438 §4.6-§4.7: W_max with fast convergence, ssthresh, K.
    fn reduce(&mut self) {
        self.prior = Some((self.w_max, self.w_last_max, self.k));
        let cwnd = self.segs(self.cwnd);
        // §4.7 fast convergence.
        self.w_max = if cwnd < self.w_last_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.w_last_max = cwnd;
        // §4.6: ssthresh = cwnd * β, at least 2 segments.
        self.ssthresh = ((self.cwnd as f64 * BETA) as usize).max(2 * self.smss);
        self.epoch_start = None;
        self.carry = 0.0;
    }

    /// RFC 9438 §4.2 eq. 1: W_cubic(t) in segments.
    fn w_cubic(&self, t: f64) -> f64 {
        let d = t - self.k;
        C * d * d * d + self.w_max
    }

    /// Congestion avoidance on `acked` bytes (RFC 9438 §4.2-§4.5).
    fn avoid(&mut self, now: Instant, acked: usize, rtt: Duration) {
        let cwnd = self.segs(self.cwnd);
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                // §4.2: a new epoch; K from where the window is now.
                self.epoch_start = Some(now);
                self.cwnd_epoch = cwnd;
                self.w_est = cwnd;
                self.k = if self.w_max > cwnd {
                    ((self.w_max - cwnd) / C).cbrt()
                } else {
                    0.0
                };
                if self.w_max < cwnd {
                    self.w_max = cwnd;
                }
                now
            }
        };
        let t = now.saturating_duration_since(epoch).as_secs_f64();
        let segs_acked = acked as f64 / self.smss as f64;
        // §4.3: the Reno-friendly estimate, α = 3(1-β)/(1+β) until it
        // reaches the old maximum, then 1.
        let alpha = if self.w_est >= self.w_max {
            1.0
        } else {
            3.0 * (1.0 - BETA) / (1.0 + BETA)
        };
        self.w_est += alpha * segs_acked / cwnd;
        let target = self.w_cubic(t + rtt.as_secs_f64()).clamp(cwnd, 1.5 * cwnd);
        let grow_segs = if self.w_cubic(t) < self.w_est {
            // §4.3 Reno-friendly region.
            (self.w_est - cwnd).max(0.0)
        } else {
            // §4.4-§4.5 concave / convex regions.
            (target - cwnd) / cwnd * segs_acked
        };
        self.carry += grow_segs * self.smss as f64;
        if self.carry >= 1.0 {
            let add = self.carry.floor();
            self.carry -= add;
            self.cwnd = self
                .cwnd
                .saturating_add(add as usize)
                .min(SSTHRESH_INFINITE);
        }
    }
}

impl CongestionControl for Cubic {
    #[cfg(test)]
    fn kind(&self) -> super::CongestionKind {
        super::CongestionKind::Cubic
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
        self.cwnd < self.ssthresh
    }

    fn on_ack_sample(&mut self, ack: &AckSample) {
        if ack.in_recovery || ack.acked == 0 {
            return;
        }
        self.pristine = false;
        self.rto_pending = false;
        if self.in_slow_start() {
            // RFC 9406 §4.2 with RFC 3465 L = 2; RFC 7661 §4.3: a window
            // the sender did not fill within the last round does not grow.
            let increase = if ack.cwnd_limited {
                ack.acked.min(2 * self.smss)
            } else {
                0
            };
            // RFC 9406 §4.2 "currentRTT": the unambiguous RTT of the newest
            // segment this ACK delivered (µs resolution), else the
            // connection's latest sample.
            let rtt = ack.rate.and_then(|r| r.rtt).or(ack.rtt);
            match self.hystart.on_ack(ack.snd_una, ack.snd_max, rtt) {
                Phase::SlowStart => self.cwnd += increase,
                Phase::Css => self.cwnd += increase / CSS_GROWTH_DIVISOR,
                Phase::Exit => {
                    // RFC 9406 §4.2: ssthresh = cwnd, congestion avoidance.
                    self.ssthresh = self.cwnd;
                    self.w_max = self.segs(self.cwnd);
                }
            }
            if self.cwnd > self.ssthresh {
                self.cwnd = self.ssthresh;
            }
            return;
        }
        let rtt = ack.srtt.or(ack.rtt).unwrap_or(Duration::from_millis(100));
        self.avoid(ack.now, ack.acked, rtt);
    }

    fn on_congestion_event(&mut self, _now: Instant, _flight_size: usize) {
        self.pristine = false;
        self.reduce();
        // PRR (RFC 6937) brings the window down to ssthresh.
        self.cwnd = self.ssthresh;
    }

    fn on_recovery_exit(&mut self, _flight_size: usize) {
        // RFC 6937 §3: cwnd = ssthresh at the end of recovery.
        self.cwnd = self.ssthresh;
    }

    fn on_rto(&mut self, _flight_size: usize) {
        self.pristine = false;
        // RFC 9438 §4.8: as a congestion event, then one segment; a
        // further timeout in a row keeps ssthresh (RFC 5681 §3.1).
        if !self.rto_pending {
            self.reduce();
        }
        self.rto_pending = true;
        self.cwnd = self.smss;
        self.hystart.reset();
    }

    fn on_idle_restart(&mut self) {
        self.cwnd = self.cwnd.min(initial_window(self.smss));
        self.epoch_start = None;
    }

    fn set_smss(&mut self, smss: usize) {
        let smss = smss.max(1);
        if smss == self.smss {
            return;
        }
        if self.pristine {
            *self = Cubic::new(smss);
            return;
        }
        let rescale = |b: usize| {
            ((b as u128 * smss as u128) / self.smss as u128).min(SSTHRESH_INFINITE as u128) as usize
        };
        self.cwnd = rescale(self.cwnd).max(smss);
        if self.ssthresh != SSTHRESH_INFINITE {
            self.ssthresh = rescale(self.ssthresh).max(2 * smss);
        }
        self.smss = smss;
    }

    fn undo(&mut self, prior: Prior) {
        // RFC 9438 §4.9: restore the state from before the event.
        self.cwnd = self.cwnd.max(prior.cwnd);
        self.ssthresh = self.ssthresh.max(prior.ssthresh);
        if let Some((w_max, w_last_max, k)) = self.prior.take() {
            self.w_max = w_max;
            self.w_last_max = w_last_max;
            self.k = k;
        }
        self.epoch_start = None;
        self.rto_pending = false;
    }

    fn reset(&mut self) {
        *self = Cubic::new(self.smss);
    }

    fn resume_jump(&mut self, jump: usize) {
        // A new congestion-avoidance epoch starts from the jumped window
        // (RFC 9438 §4.2: K from where the window is now).
        self.cwnd = self.cwnd.max(jump).min(SSTHRESH_INFINITE);
        self.epoch_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SeqNumber;

    const SMSS: usize = 1000;

    fn ack(now_ms: u64, acked: usize) -> AckSample {
        AckSample {
            now: Instant::from_millis(now_ms),
            acked,
            delivered: acked,
            rtt: Some(Duration::from_millis(100)),
            srtt: Some(Duration::from_millis(100)),
            in_flight: 0,
            snd_una: SeqNumber(0),
            snd_max: SeqNumber(0),
            rate: None,
            in_recovery: false,
            loss_recovery: false,
            delivered_total: 0,
            cwnd_limited: true,
        }
    }

    #[test]
    fn reduction_is_beta_and_growth_returns_to_w_max_after_k() {
        let mut cc = Cubic::new(SMSS);
        cc.cwnd = 100 * SMSS;
        cc.ssthresh = 100 * SMSS;
        cc.on_congestion_event(Instant::ZERO, 100 * SMSS);
        assert_eq!(cc.cwnd(), 70 * SMSS);
        assert_eq!(cc.ssthresh(), 70 * SMSS);
        // K = cbrt(100 * 0.3 / 0.4) = cbrt(75) ≈ 4.22 s.
        let k = (75f64).cbrt();
        // Feed a full window of ACKs every 100 ms for K seconds.
        let mut t = 0;
        while (t as f64) < k * 1000.0 {
            let w = cc.cwnd();
            for _ in 0..w / SMSS {
                cc.on_ack_sample(&ack(t, SMSS));
            }
            t += 100;
        }
        let w = cc.cwnd() as f64 / SMSS as f64;
        assert!((97.0..=103.0).contains(&w), "cwnd {w} segments after K");
        // Past K the convex region grows beyond W_max.
        for _ in 0..20 {
            let w = cc.cwnd();
            for _ in 0..w / SMSS {
                cc.on_ack_sample(&ack(t, SMSS));
            }
            t += 100;
        }
        assert!(cc.cwnd() > 105 * SMSS, "{}", cc.cwnd());
    }

    #[test]
    fn fast_convergence_and_undo() {
        let mut cc = Cubic::new(SMSS);
        cc.cwnd = 100 * SMSS;
        cc.on_congestion_event(Instant::ZERO, 0);
        assert_eq!(cc.w_max, 100.0);
        // A second loss below the old maximum: W_max = 70 * 1.7 / 2.
        cc.on_congestion_event(Instant::ZERO, 0);
        assert!((cc.w_max - 59.5).abs() < 1e-9);
        assert_eq!(cc.cwnd(), 49 * SMSS);
        cc.undo(Prior {
            cwnd: 70 * SMSS,
            ssthresh: 70 * SMSS,
        });
        assert_eq!((cc.cwnd(), cc.ssthresh()), (70 * SMSS, 70 * SMSS));
        assert_eq!(cc.w_max, 100.0);
    }

    #[test]
    fn rto_goes_to_one_segment_and_holds_ssthresh_when_repeated() {
        let mut cc = Cubic::new(SMSS);
        cc.cwnd = 40 * SMSS;
        cc.on_rto(0);
        assert_eq!((cc.cwnd(), cc.ssthresh()), (SMSS, 28 * SMSS));
        cc.on_rto(0);
        assert_eq!(cc.ssthresh(), 28 * SMSS);
        assert!(cc.in_slow_start());
    }
}
