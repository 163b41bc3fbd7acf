//! Time as an input. The core never reads a clock: callers pass `now`.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch chosen by the
/// driver (the runtime uses a monotonic clock; the simulator starts at zero).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            micros: millis * 1000,
        }
    }

    /// Microseconds since the epoch.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// Whole milliseconds since the epoch.
    pub const fn total_millis(self) -> u64 {
        self.micros / 1000
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }

    /// The earliest of some deadlines (`None`: no deadline), or `None`.
    /// Plain comparisons: timers are asked after every segment in and out,
    /// and the iterator chain this replaced (`flatten().min()` over an
    /// array of `Option`s) took 4.5 % of the sustain-host processes'
    /// samples in `just bench`'s throughput flows; this one does not show.
    pub fn earliest<const N: usize>(deadlines: [Option<Instant>; N]) -> Option<Instant> {
        let mut first: Option<Instant> = None;
        for d in deadlines {
            first = match (first, d) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (None, d) => d,
                (a, None) => a,
            };
        }
        first
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_add(rhs.as_micros() as u64),
        }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_sub(rhs.as_micros() as u64),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero: durations are never negative.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_round_trips() {
        let t = Instant::from_millis(1500);
        assert_eq!((t + Duration::from_millis(500)).total_millis(), 2000);
        assert_eq!(t - Instant::from_millis(2000), Duration::ZERO);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(format!("{t:?}"), "1.500000s");
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let (a, b) = (Instant::from_millis(5), Instant::from_millis(3));
        assert_eq!(
            Instant::earliest([None, Some(a), None, Some(b), None]),
            Some(b)
        );
        assert_eq!(Instant::earliest([Some(b), Some(a)]), Some(b));
        assert_eq!(Instant::earliest([Some(a)]), Some(a));
        assert_eq!(Instant::earliest::<3>([None; 3]), None);
        assert_eq!(Instant::earliest::<0>([]), None);
    }
}
