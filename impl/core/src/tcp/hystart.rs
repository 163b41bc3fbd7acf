//! HyStart++ (RFC 9406): leave slow start when the RTT starts to grow,
//! before a drop-tail queue overflows.
//!
//! Read first: RFC 9406 §4.2-§4.3. Each round (one window of data) keeps
//! its minimum RTT; when a round's RTT exceeds the previous round's
//! minimum by a threshold (an eighth of it, clamped to 4..16 ms) the
//! sender moves to Conservative Slow Start (CSS), which grows four times
//! slower. If the RTT falls back below the baseline the increase was
//! spurious and slow start resumes; after five CSS rounds the sender
//! enters congestion avoidance. A loss in either phase ends slow start as
//! usual.
//!
//! One deviation, measured in tests/loss_sim.rs: the RFC compares the
//! minimum of *all* of the round's samples so far. A round ends one RTT
//! after its data left, so its first ACKs report the queue as it was
//! before the growth the round is about to reveal; with an ACK clock at
//! the bottleneck rate the round's minimum stays at its first sample and
//! the increase is seen a whole round late, after a queue smaller than
//! the BDP has overflowed (940 drops against 478 without HyStart++ at
//! 20 ms / 100 Mbit/s / 256 KiB). So the increase is judged on the
//! minimum of the round's latest N_RTT_SAMPLE samples (still at least
//! N_RTT_SAMPLE samples of this round, and still a minimum: one short
//! sample vetoes), against the previous round's minimum. Linux covers the
//! same case with its ACK-train heuristic, which RFC 9406 does not have.
//! The round-wide minimum is still what becomes lastRoundMinRTT and what
//! the CSS spurious-exit check uses.
//!
//! The controller calls [`HyStart::on_ack`] on every ACK while in slow
//! start and grows cwnd by what it answers (only while cwnd-limited, RFC
//! 7661 §4.3: a window the sender does not fill tells nothing).

use crate::time::Duration;
use crate::wire::SeqNumber;

/// RFC 9406 §4.3 constants.
const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
const MIN_RTT_DIVISOR: u32 = 8;
const N_RTT_SAMPLE: u32 = 8;
/// cwnd grows by acked / CSS_GROWTH_DIVISOR in CSS.
pub const CSS_GROWTH_DIVISOR: usize = 4;
const CSS_ROUNDS: u32 = 5;

/// Where slow start stands after an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    SlowStart,
    /// Conservative Slow Start: grow by a quarter.
    Css,
    /// Enter congestion avoidance now (ssthresh = cwnd).
    Exit,
}

#[derive(Debug, Clone, Default)]
pub struct HyStart {
    /// `windowEnd`: the round ends when SND.UNA reaches it.
    window_end: Option<SeqNumber>,
    last_round_min_rtt: Option<Duration>,
    current_round_min_rtt: Option<Duration>,
    rtt_sample_count: u32,
    /// The round's latest N_RTT_SAMPLE samples (a ring).
    recent: [Duration; N_RTT_SAMPLE as usize],
    /// In CSS: (cssBaselineMinRtt, rounds completed in CSS).
    css: Option<(Duration, u32)>,
    /// Slow start was left because of a delay increase (for tests).
    exits: u32,
}

impl HyStart {
    pub fn new() -> HyStart {
        HyStart::default()
    }

    /// Slow start (re)starts (after an RTO, RFC 9406 §4.3: "use
    /// HyStart++ again"), keeping nothing.
    pub fn reset(&mut self) {
        let exits = self.exits;
        *self = HyStart::default();
        self.exits = exits;
    }

    /// Times slow start ended on a delay increase.
    pub fn exits(&self) -> u32 {
        self.exits
    }

    /// RFC 9406 §4.2 on one ACK in slow start.
    pub fn on_ack(
        &mut self,
        snd_una: SeqNumber,
        snd_max: SeqNumber,
        rtt: Option<Duration>,
    ) -> Phase {
        if self.window_end.is_none_or(|end| snd_una >= end) {
            // A new round.
            if let Some((_, rounds)) = self.css.as_mut() {
                *rounds += 1;
                if *rounds >= CSS_ROUNDS {
                    self.css = None;
                    self.exits += 1;
                    self.window_end = None;
                    return Phase::Exit;
                }
            }
            self.last_round_min_rtt = self.current_round_min_rtt.or(self.last_round_min_rtt);
            self.current_round_min_rtt = None;
            self.rtt_sample_count = 0;
            self.window_end = Some(snd_max);
        }
        if let Some(rtt) = rtt {
            self.current_round_min_rtt =
                Some(self.current_round_min_rtt.map_or(rtt, |m| m.min(rtt)));
            self.recent[(self.rtt_sample_count % N_RTT_SAMPLE) as usize] = rtt;
            self.rtt_sample_count += 1;
        }
        let enough = self.rtt_sample_count >= N_RTT_SAMPLE;
        match (
            self.css,
            self.current_round_min_rtt,
            self.last_round_min_rtt,
        ) {
            (None, Some(_), Some(last)) if enough => {
                // RFC 9406 §4.2 RttThresh = max(MIN_RTT_THRESH,
                // min(lastRoundMinRTT / MIN_RTT_DIVISOR, MAX_RTT_THRESH)),
                // on the latest samples of the round (module doc).
                let thresh = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
                let recent = self.recent.iter().copied().min().unwrap_or_default();
                if recent >= last + thresh {
                    self.css = Some((recent, 0));
                }
            }
            (Some((baseline, _)), Some(_), _)
                if enough && self.recent.iter().copied().min().unwrap_or_default() < baseline =>
            {
                // The delay increase was spurious: back to slow start.
                self.css = None;
            }
            _ => {}
        }
        if self.css.is_some() {
            Phase::Css
        } else {
            Phase::SlowStart
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Feeds one round of `n` ACKs with RTT `rtt`, the round ending at
    /// `end` (SND.UNA reaches the previous end first).
    fn round(h: &mut HyStart, start: u32, end: u32, rtt: Duration) -> Vec<Phase> {
        (0..10)
            .map(|i| h.on_ack(SeqNumber(start + i), SeqNumber(end), Some(rtt)))
            .collect()
    }

    #[test]
    fn delay_increase_enters_css_then_congestion_avoidance() {
        let mut h = HyStart::new();
        assert!(round(&mut h, 0, 100, ms(40))
            .iter()
            .all(|p| *p == Phase::SlowStart));
        assert!(round(&mut h, 100, 200, ms(40))
            .iter()
            .all(|p| *p == Phase::SlowStart));
        // 40 ms / 8 = 5 ms threshold: 44 ms is not enough, 45 ms is.
        assert!(round(&mut h, 200, 300, ms(44))
            .iter()
            .all(|p| *p == Phase::SlowStart));
        let r = round(&mut h, 300, 400, ms(50));
        assert_eq!(r[6], Phase::SlowStart, "needs 8 samples");
        assert_eq!(r[7], Phase::Css);
        for k in 0..4 {
            let s = 400 + k * 100;
            assert!(round(&mut h, s, s + 100, ms(50))
                .iter()
                .all(|p| *p == Phase::Css));
        }
        assert_eq!(
            h.on_ack(SeqNumber(800), SeqNumber(900), Some(ms(50))),
            Phase::Exit
        );
        assert_eq!(h.exits(), 1);
    }

    #[test]
    fn a_spurious_increase_returns_to_slow_start() {
        let mut h = HyStart::new();
        round(&mut h, 0, 100, ms(40));
        assert_eq!(*round(&mut h, 100, 200, ms(60)).last().unwrap(), Phase::Css);
        assert_eq!(
            *round(&mut h, 200, 300, ms(41)).last().unwrap(),
            Phase::SlowStart
        );
    }
}
