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
//! Two deviations, both measured in tests/loss_sim.rs on 20 ms each way,
//! 100 Mbit/s, a 256 KiB drop-tail queue (half the BDP):
//!
//! 1. The RFC compares the minimum of *all* of the round's samples so far.
//!    A round ends one RTT after its data left, so its first ACKs report
//!    the queue as it was before the growth the round is about to reveal;
//!    with an ACK clock at the bottleneck rate the round's minimum stays at
//!    its first sample and the increase is seen a whole round late. So the
//!    increase is judged on the minimum of the round's latest N_RTT_SAMPLE
//!    samples (still at least N_RTT_SAMPLE samples of this round, and still
//!    a minimum: one short sample vetoes), against the previous round's
//!    minimum. Linux covers the same case with its ACK-train heuristic,
//!    which RFC 9406 does not have.
//! 2. Slow start's queue is a burst: paced at twice cwnd/SRTT, each round
//!    sends above the bottleneck rate for half an RTT, and the queue it
//!    leaves drains between rounds. An RTT sample reports the queue one
//!    round trip after the packet joined it, while the queue keeps growing
//!    at up to the bottleneck rate; when that path's buffer overflows the
//!    newest samples carry 4.3 ms of queue, below RttThresh (5 ms), which
//!    they cross 2 ms later (207 drops). Entering CSS earlier does not
//!    help either: CSS still grows cwnd by a quarter per round for five
//!    rounds (3x), and a buffer shallower than two BDPs overflows within
//!    them (128 drops with CSS entered a round early; 297 drops with the
//!    RFC's rule on a 2.5-BDP buffer). So CSS is entered at EARLY_DIVISOR
//!    times less increase (at least MIN_EARLY_THRESH; 1.25 ms at a 40 ms
//!    RTT), and a *second* increase of as much inside CSS, above the
//!    samples that started it, confirms the queue: slow start ends at once
//!    (ssthresh = cwnd, as Linux's HyStart does on its delay signal)
//!    instead of after CSS_ROUNDS. Noise has to pass the minimum of eight
//!    samples twice; an increase that stops growing still leaves CSS as the
//!    RFC says (after CSS_ROUNDS, or back to slow start when the round's
//!    minimum falls below cssBaselineMinRtt). Measured
//!    (`trace_hystart_on_paths`): slow start now ends at 1.2 BDP with no
//!    drop on 0.5-, 2.5- and 8-BDP buffers, at 0.9-1.0 BDP with 1-2 ms of
//!    jitter, and at 1.3-1.6 BDP at 5 ms / 1 Gbit/s and 50 ms / 50 Mbit/s,
//!    where the RFC's rule dropped 738 and 279 packets.
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
pub(crate) const CSS_GROWTH_DIVISOR: usize = 4;
const CSS_ROUNDS: u32 = 5;
/// Deviation 2 (module doc): CSS is entered, and confirmed, at
/// RttThresh / EARLY_DIVISOR of increase, at least MIN_EARLY_THRESH.
const EARLY_DIVISOR: u32 = 4;
const MIN_EARLY_THRESH: Duration = Duration::from_millis(1);

/// Conservative Slow Start's state.
#[derive(Debug, Clone, Copy)]
struct Css {
    /// cssBaselineMinRtt: the round's minimum when CSS began (RFC 9406
    /// §4.2), for the spurious-increase check.
    baseline: Duration,
    /// The latest samples' minimum that started CSS (deviation 2).
    entry: Duration,
    /// Rounds completed in CSS.
    rounds: u32,
}

/// Where slow start stands after an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Standard slow start: grow by the bytes acknowledged.
    SlowStart,
    /// Conservative Slow Start: grow by a quarter.
    Css,
    /// Enter congestion avoidance now (ssthresh = cwnd).
    Exit,
}

/// HyStart++ state of one connection (RFC 9406).
#[derive(Debug, Clone, Default)]
pub(crate) struct HyStart {
    /// `windowEnd`: the round ends when SND.UNA reaches it.
    window_end: Option<SeqNumber>,
    last_round_min_rtt: Option<Duration>,
    current_round_min_rtt: Option<Duration>,
    rtt_sample_count: u32,
    /// The round's latest N_RTT_SAMPLE samples (a ring).
    recent: [Duration; N_RTT_SAMPLE as usize],
    css: Option<Css>,
    /// Slow start was left because of a delay increase (for tests).
    exits: u32,
}

impl HyStart {
    /// A fresh state, as at connection start.
    pub(crate) fn new() -> HyStart {
        HyStart::default()
    }

    /// Slow start (re)starts (after an RTO, RFC 9406 §4.3: "use
    /// HyStart++ again"), keeping nothing.
    pub(crate) fn reset(&mut self) {
        let exits = self.exits;
        *self = HyStart::default();
        self.exits = exits;
    }

    /// Times slow start ended on a delay increase.
    #[cfg(test)]
    pub(crate) fn exits(&self) -> u32 {
        self.exits
    }

    /// RFC 9406 §4.2 on one ACK in slow start.
    pub(crate) fn on_ack(
        &mut self,
        snd_una: SeqNumber,
        snd_max: SeqNumber,
        rtt: Option<Duration>,
    ) -> Phase {
        if self.window_end.is_none_or(|end| snd_una >= end) {
            // A new round.
            if let Some(css) = self.css.as_mut() {
                css.rounds += 1;
                if css.rounds >= CSS_ROUNDS {
                    return self.exit();
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
        let (Some(round_min), Some(last)) = (self.current_round_min_rtt, self.last_round_min_rtt)
        else {
            return self.phase();
        };
        if self.rtt_sample_count < N_RTT_SAMPLE {
            return self.phase();
        }
        // RFC 9406 §4.2 RttThresh = max(MIN_RTT_THRESH,
        // min(lastRoundMinRTT / MIN_RTT_DIVISOR, MAX_RTT_THRESH)), scaled
        // down and judged on the latest samples (module doc).
        let thresh = (last / MIN_RTT_DIVISOR).clamp(MIN_RTT_THRESH, MAX_RTT_THRESH);
        let early = (thresh / EARLY_DIVISOR).max(MIN_EARLY_THRESH);
        let recent = self.recent.iter().copied().min().unwrap_or_default();
        match self.css {
            None if recent >= last + early => {
                self.css = Some(Css {
                    baseline: round_min,
                    entry: recent,
                    rounds: 0,
                });
            }
            // Deviation 2: the delay grew again inside CSS; the queue is
            // real and still growing.
            Some(css) if recent >= css.entry + early => return self.exit(),
            // RFC 9406 §4.2: currentRoundMinRTT < cssBaselineMinRtt, the
            // increase was spurious: back to slow start.
            Some(css) if round_min < css.baseline => self.css = None,
            _ => {}
        }
        self.phase()
    }

    fn phase(&self) -> Phase {
        if self.css.is_some() {
            Phase::Css
        } else {
            Phase::SlowStart
        }
    }

    /// Slow start ends on the delay signal: congestion avoidance.
    fn exit(&mut self) -> Phase {
        self.css = None;
        self.exits += 1;
        self.window_end = None;
        Phase::Exit
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
    fn a_delay_increase_that_stops_growing_leaves_css_after_its_rounds() {
        let mut h = HyStart::new();
        for k in 0..2 {
            assert!(round(&mut h, k * 100, k * 100 + 100, ms(40))
                .iter()
                .all(|p| *p == Phase::SlowStart));
        }
        // RttThresh = 40 ms / 8 = 5 ms; CSS starts at a quarter of it,
        // 1.25 ms above the last round's minimum: 1.2 ms is not enough,
        // 1.3 ms is.
        let high = ms(42) + Duration::from_micros(500);
        assert!(round(&mut h, 200, 300, ms(41) + Duration::from_micros(200))
            .iter()
            .all(|p| *p == Phase::SlowStart));
        let r = round(&mut h, 300, 400, high);
        assert_eq!(r[6], Phase::SlowStart, "needs 8 samples");
        assert_eq!(r[7], Phase::Css);
        // The RTT stays where it went: five CSS rounds, then congestion
        // avoidance (RFC 9406 §4.2).
        for k in 0..4 {
            let s = 400 + k * 100;
            assert!(round(&mut h, s, s + 100, high)
                .iter()
                .all(|p| *p == Phase::Css));
        }
        assert_eq!(
            h.on_ack(SeqNumber(800), SeqNumber(900), Some(high)),
            Phase::Exit
        );
        assert_eq!(h.exits(), 1);
    }

    #[test]
    fn a_delay_that_keeps_growing_in_css_ends_slow_start_at_once() {
        let mut h = HyStart::new();
        round(&mut h, 0, 100, ms(40));
        assert_eq!(*round(&mut h, 100, 200, ms(42)).last().unwrap(), Phase::Css);
        // 1.25 ms above the samples that started CSS, in the same round.
        let phases: Vec<Phase> = (0..8)
            .map(|i| h.on_ack(SeqNumber(150 + i), SeqNumber(200), Some(ms(44))))
            .collect();
        assert_eq!(phases[6], Phase::Css, "the minimum of 8 samples decides");
        assert_eq!(phases[7], Phase::Exit);
        assert_eq!(h.exits(), 1);
    }

    #[test]
    fn a_spurious_increase_returns_to_slow_start() {
        let mut h = HyStart::new();
        round(&mut h, 0, 100, ms(40));
        assert_eq!(*round(&mut h, 100, 200, ms(42)).last().unwrap(), Phase::Css);
        // The next round's minimum is below the one CSS started with.
        assert_eq!(
            *round(&mut h, 200, 300, ms(41)).last().unwrap(),
            Phase::SlowStart
        );
        assert_eq!(h.exits(), 0);
    }
}
