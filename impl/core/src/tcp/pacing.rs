//! Pacing: when the next data segment may leave.
//!
//! Read first: Linux net/ipv4/tcp_output.c (`tcp_pacing_check`,
//! `tcp_tso_autosize`) and draft-ietf-ccwg-bbr §4.6.2 (pacing rate). The
//! connection asks for a rate (the controller's model, or cwnd/SRTT
//! scaled as Linux does) and sends only when the release time has come;
//! `poll_timeout` includes that time, so the driver just follows it.
//!
//! To stay cheap at high rates the pacer releases a quantum at a time: a
//! sender that has been waiting may send max(2 segments, 1 ms of the
//! rate) back to back (at most 64 KiB, Linux's TSO ceiling) before the
//! schedule holds it again.

use crate::time::{Duration, Instant};

/// Most bytes released back to back (Linux GSO/TSO maximum).
const MAX_QUANTUM: u64 = 64 * 1024;
/// A quantum is at least this long at the current rate.
const QUANTUM_TIME: Duration = Duration::from_millis(1);

/// The pacing schedule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pacer {
    /// Earliest time the next segment may leave, in ns since the epoch.
    release_ns: Option<u64>,
    /// Data is waiting for `release_ns`: the connection wants a timer.
    wake: Option<Instant>,
}

fn ns(t: Instant) -> u64 {
    t.total_micros().saturating_mul(1000)
}

impl Pacer {
    /// A segment of `len` bytes left at `now`, paced at `rate` bytes per
    /// second (`None`: unpaced).
    pub(crate) fn on_send(&mut self, now: Instant, len: usize, rate: Option<u64>, smss: usize) {
        let Some(rate) = rate.filter(|&r| r > 0) else {
            self.release_ns = None;
            return;
        };
        let quantum = (2 * smss as u64)
            .max(rate.saturating_mul(QUANTUM_TIME.as_micros() as u64) / 1_000_000)
            .min(MAX_QUANTUM);
        // Credit for time spent idle, at most one quantum.
        let credit_ns = quantum.saturating_mul(1_000_000_000) / rate;
        let now_ns = ns(now);
        let base = self
            .release_ns
            .unwrap_or(0)
            .max(now_ns.saturating_sub(credit_ns));
        let cost = (len as u64).saturating_mul(1_000_000_000) / rate;
        self.release_ns = Some(base.saturating_add(cost));
    }

    /// When the next segment may leave (µs resolution, rounded up).
    pub(crate) fn release_time(&self) -> Option<Instant> {
        self.release_ns
            .map(|t| Instant::from_micros(t.div_ceil(1000)))
    }

    /// Data is held until `t`: report it as a timer.
    pub(crate) fn hold_until(&mut self, t: Instant) {
        self.wake = Some(t);
    }

    /// The timer [`Self::hold_until`] armed, if any.
    pub(crate) fn wakeup(&self) -> Option<Instant> {
        self.wake
    }

    /// The timer fired at `now`: disarms it if it was due.
    pub(crate) fn on_wakeup(&mut self, now: Instant) {
        if self.wake.is_some_and(|t| now >= t) {
            self.wake = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_segments_at_the_rate_after_a_quantum() {
        let mut p = Pacer::default();
        // 12.5 MB/s (100 Mbit/s): 1 ms = 12_500 bytes, above 2 segments.
        let rate = Some(12_500_000);
        let t0 = Instant::from_millis(100);
        let mut sent = 0;
        // Idle sender: about one quantum goes out back to back at t0.
        while p.release_time().is_none_or(|r| r <= t0) {
            p.on_send(t0, 1250, rate, 1250);
            sent += 1;
        }
        assert_eq!(
            sent, 11,
            "one quantum (10 segments) plus the one crossing it"
        );
        // Then one segment per 100 µs.
        let r = p.release_time().unwrap();
        p.on_send(r, 1250, rate, 1250);
        assert_eq!(p.release_time().unwrap() - r, Duration::from_micros(100));
        // Unpaced: no schedule.
        p.on_send(r, 1250, None, 1250);
        assert_eq!(p.release_time(), None);
    }

    #[test]
    fn small_rates_release_two_segments() {
        let mut p = Pacer::default();
        let t0 = Instant::from_millis(500);
        // 100 kB/s: 1 ms is 100 bytes, so the quantum is 2 segments.
        p.on_send(t0, 1000, Some(100_000), 1000);
        p.on_send(t0, 1000, Some(100_000), 1000);
        assert_eq!(p.release_time(), Some(t0));
        p.on_send(t0, 1000, Some(100_000), 1000);
        assert_eq!(p.release_time(), Some(t0 + Duration::from_millis(10)));
    }
}
