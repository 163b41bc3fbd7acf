//! Windowed max filters for the BBR path model.
//!
//! Read first: draft-ietf-ccwg-bbr §5.5.3-§5.5.6 (BBR.max_bw over two
//! ProbeBW cycles) and §5.5.9 (BBR.extra_acked over 10 round trips), and
//! Kathleen Nichols' windowed min/max estimator as the draft's
//! KN_FILTER reference describes it: keep the best, second-best and
//! third-best samples of the window, each younger than the one before,
//! so that when the best ages out the next one is ready.

/// A running maximum over a sliding window of `window` time units
/// (virtual time: round trips), keeping three candidate samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MaxFilter {
    /// (time, value), best first; later entries are younger.
    s: [(u64, u64); 3],
}

impl MaxFilter {
    /// An empty filter.
    pub(crate) fn new() -> MaxFilter {
        MaxFilter::default()
    }

    /// Forget everything but `(t, v)`.
    pub(crate) fn reset(&mut self, t: u64, v: u64) {
        self.s = [(t, v); 3];
    }

    /// Adds the sample `v` taken at time `t`; returns the new maximum.
    pub(crate) fn update(&mut self, window: u64, t: u64, v: u64) -> u64 {
        let sample = (t, v);
        // A new best, or nothing in the window is recent enough: restart.
        if v >= self.s[0].1 || t.saturating_sub(self.s[2].0) > window {
            self.reset(t, v);
            return v;
        }
        if v >= self.s[1].1 {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if v >= self.s[2].1 {
            self.s[2] = sample;
        }
        // Age the candidates: the best expires after `window`; keep the
        // second and third spread over the window's quarters and halves so
        // they are distinct when it does.
        let age = t.saturating_sub(self.s[0].0);
        if age > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = sample;
            if t.saturating_sub(self.s[0].0) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = sample;
            }
        } else if self.s[1].0 == self.s[0].0 && age > window / 4 {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if self.s[2].0 == self.s[1].0 && age > window / 2 {
            self.s[2] = sample;
        }
        self.s[0].1
    }
}

/// draft-ietf-ccwg-bbr §5.5.6: the BBR.max_bw filter's window is two
/// ProbeBW cycles (BBR.MaxBwFilterLen = 2), so one slot per cycle is
/// enough: the current cycle's maximum and the previous one's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CycleMaxFilter {
    current: u64,
    previous: u64,
}

impl CycleMaxFilter {
    /// The maximum of the current and the previous cycle.
    pub(crate) fn get(&self) -> u64 {
        self.current.max(self.previous)
    }

    /// Takes a sample into the current cycle; returns the filtered maximum.
    pub(crate) fn update(&mut self, v: u64) -> u64 {
        self.current = self.current.max(v);
        self.get()
    }

    /// AdvanceMaxBwFilter(): BBR.cycle_count++.
    pub(crate) fn advance(&mut self) {
        self.previous = self.current;
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_filter_keeps_the_best_until_it_ages_out() {
        let mut f = MaxFilter::new();
        assert_eq!(f.update(10, 0, 100), 100);
        assert_eq!(f.update(10, 3, 50), 100);
        assert_eq!(f.update(10, 6, 70), 100);
        assert_eq!(f.update(10, 10, 20), 100);
        // t = 11: the best (t = 0) is older than the window; the best
        // younger candidate takes over.
        assert_eq!(f.update(10, 11, 10), 70);
        // A larger sample replaces everything.
        assert_eq!(f.update(10, 12, 500), 500);
        // A long silence forgets it all.
        assert_eq!(f.update(10, 40, 5), 5);
    }

    #[test]
    fn max_filter_with_a_window_of_one_round() {
        let mut f = MaxFilter::new();
        f.update(1, 5, 300);
        assert_eq!(f.update(1, 6, 100), 300);
        assert_eq!(f.update(1, 7, 50), 100);
        assert_eq!(f.update(1, 9, 40), 40);
    }

    #[test]
    fn cycle_filter_spans_two_cycles() {
        let mut f = CycleMaxFilter::default();
        f.update(10);
        f.update(30);
        f.advance();
        assert_eq!(f.update(20), 30, "the previous cycle still counts");
        f.advance();
        assert_eq!(f.get(), 20, "two cycles ago is forgotten");
        f.advance();
        assert_eq!(f.get(), 0);
    }
}
