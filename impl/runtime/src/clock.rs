//! The one place the runtime reads a clock: a monotonic clock mapped onto
//! the core's [`sustain_core::time::Instant`].

use std::time::Instant as StdInstant;

use sustain_core::time::Instant;

/// Monotonic time since the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: StdInstant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            origin: StdInstant::now(),
        }
    }

    /// Time since the clock was created, with microsecond resolution.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The std instant corresponding to a core instant (for tokio timers).
    pub fn to_std(&self, t: Instant) -> StdInstant {
        self.origin + std::time::Duration::from_micros(t.total_micros())
    }

    /// Seconds since the epoch of the wall clock, for event timestamps.
    pub fn unix_seconds() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
