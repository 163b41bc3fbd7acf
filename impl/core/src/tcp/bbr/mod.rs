//! BBRv3 congestion control (draft-ietf-ccwg-bbr).
//!
//! Read first: draft-ietf-ccwg-bbr §2 (every variable and constant named
//! below), §4.1 (delivery-rate samples: loss.rs builds them from the
//! snapshots in sent.rs), §5.2 (what runs on init, transmit, ACK, loss and
//! spurious recovery), §5.3 (the state machine), §5.5 (the path model),
//! §5.6 (pacing rate and cwnd). Section numbers are those of the editor's
//! copy at ietf-wg-ccwg/draft-ietf-ccwg-bbr 4ce5e87 (≈ -06). Linux's
//! net/ipv4/tcp_bbr.c has the same shape (model update, then state
//! machine, then control parameters, on every ACK).
//!
//! The model: BBR.max_bw, the maximum delivery rate over the last two
//! ProbeBW cycles, and BBR.min_rtt, the minimum RTT over 10 s. The
//! controller paces at a gain times the bandwidth (`pacing_rate`) and caps
//! in-flight data at a gain times the BDP (`cwnd`). Loss only bounds the
//! model when it exceeds BBR.LossThresh = 2 % of the data in flight in a
//! round (long-term bound `inflight_longterm`, when probing) or, when not
//! probing, lowers the short-term bounds once per lossy round to what was
//! actually delivered: random loss on a radio link does not halve the
//! window as Reno and CUBIC do.
//!
//! Random loss above 2 % (a 3 % radio link) would still meet BBR.LossThresh
//! in every round: each probe would cut `inflight_longterm` to 0.7 x the
//! target, the long-term bound would never rise again (its raise needs a
//! round under the threshold), and the short-term bounds, which follow
//! what was delivered, would shrink by the loss rate round after round, so
//! the delivery rate, and with it BBR.max_bw, ratchets down (measured in
//! tests/loss_sim.rs: 32 MiB over 100 Mbit/s at 30 ms RTT took up to 17 s
//! with cwnd at 0.05-0.1 BDP). So the controller learns the path's
//! background loss rate, from rounds without a queue (not probing, the
//! round's lowest RTT within max(BBR.min_rtt / 16, 1 ms) of BBR.min_rtt:
//! a drop-tail queue that drops is full), and every loss
//! threshold is BBR.LossThresh *above* it (`loss_thresh`), the background
//! capped at MAX_RANDOM_LOSS so that loss without delay (a policer) still
//! bounds the model from 7 % on. A deviation from the draft, which has no
//! such estimate (nor has Linux's BBRv3).
//!
//! Units are bytes, bytes per second and `Duration`s. Differences from
//! the draft, each said where it happens: cwnd in recovery follows the
//! draft (no packet conservation, unlike Linux); RS comes from the
//! connection's log (loss.rs) and a connection without SACK only gets
//! samples from cumulative ACKs and one loss per fast retransmit; the
//! random numbers of PickProbeWait come from a hash of the connection's
//! own counters (the controller has no random source; flows still differ).
//!
//! A loss rate needs enough packets to mean anything: with LossThresh at
//! 2 %, one loss reads as "above it" in any sample of fewer than 50
//! packets, whatever the path's loss rate. At a LAN's round trip BBR's
//! whole flight is a handful of packets (the BDP at 2 Gbit/s and 30 µs is
//! 4 segments), so each random loss looked like congestion: measured in the
//! lab at 0 ms and 3 % loss each way, `inflight_longterm` fell to 4
//! segments and stayed there, and with a 4-segment flight one lost ACK
//! left the sender silent until a probe or the RTO (a deviation, neither
//! in the draft nor in Linux's BBRv3, which has the same arithmetic). So a
//! sample's and a round's loss rate are taken over at least
//! LOSS_SAMPLE_MIN_SEGMENTS segments (`loss_rate_base`): above that size
//! nothing changes; below it a handful of losses in a small flight is not a
//! rate, while a drop-tail overflow, which loses a burst, still is.
//!
//! **Short-term bounds.** Even above the learned background, a round's
//! loss is congestion for the short-term bounds (`bw_shortterm`,
//! `inflight_shortterm`, which the draft lowers in every lossy round when
//! not probing) only if the round also had a queue (its lowest RTT above
//! BBR.min_rtt by the slack above); random loss is counted in the round
//! its loss is *detected*, and RACK detects in bursts. Measured in the lab
//! at 40 ms RTT and 3 % loss each way (i.i.d., no queue, counted at the
//! router): rounds whose detected loss was 7-24 % of their flight came
//! every few rounds, and each cut the bounds to what the round delivered,
//! so the pacing rate fell 366 -> 124 Mbit/s in 4 s between two probes
//! (16 MiB buffers, 5 s of goodput: 67-200 Mbit/s over 15 runs; 236-348
//! with this rule; Linux BBR 222-238).
//! A bottleneck that drops has a queue, so it still lowers them; a
//! policer (loss without a queue) is left to the long-term bound, set when
//! a probe's loss exceeds the threshold, and to BBR.max_bw, which follows
//! the delivery rate within two probe cycles.
//!
//! For the same reason a round's loss rate is taken over at least what was
//! in flight when the round began, not only over what the round delivered
//! (a deviation too). Rounds are counted in delivered data, and a round cut
//! short (the flight dipped, or the ACKs that end it came together) still
//! carries the loss marks of the whole flight before it: measured in the
//! lab at 40 ms and 3 % loss each way, rounds of 130-280 segments after
//! rounds of 700-800 lost 9-14 % of what they delivered, 3 % of the
//! flight, and each cut the short-term bounds (bandwidth fell from 350 to
//! 170 Mbit/s between two bandwidth probes).

mod filter;

pub(crate) use filter::{CycleMaxFilter, MaxFilter};

use super::congestion::{
    initial_window, AckSample, CongestionControl, LostSegment, SSTHRESH_INFINITE,
};
use super::undo::Prior;
use crate::time::{Duration, Instant};

/// §2.5 BBR.StartupPacingGain = 4 ln 2.
const STARTUP_PACING_GAIN: f64 = 2.77;
/// §2.5 BBR.DrainPacingGain.
const DRAIN_PACING_GAIN: f64 = 0.5;
/// §2.6 BBR.DefaultCwndGain.
const DEFAULT_CWND_GAIN: f64 = 2.0;
/// §5.3.3.1 ProbeBW_DOWN pacing gain.
const PROBE_DOWN_PACING_GAIN: f64 = 0.9;
/// §5.3.3.5 ProbeBW_UP gains.
const PROBE_UP_PACING_GAIN: f64 = 1.25;
const PROBE_UP_CWND_GAIN: f64 = 2.25;
/// §2.5 BBR.PacingMarginPercent = 1.
const PACING_MARGIN: f64 = 0.99;
/// §2.8 BBR.LossThresh.
const LOSS_THRESH: f64 = 0.02;
/// A loss rate is taken over at least this many segments (module doc):
/// twice 1 / BBR.LossThresh, so that two losses alone never exceed it.
const LOSS_SAMPLE_MIN_SEGMENTS: usize = 100;
/// The background loss rate is learned up to this much (module doc).
const MAX_RANDOM_LOSS: f64 = 0.05;
/// A round whose lowest RTT exceeds BBR.min_rtt by more than
/// max(min_rtt / RANDOM_LOSS_RTT_DIVISOR, RANDOM_LOSS_RTT_SLACK) had a
/// standing queue: its loss may be congestion and is not learned.
const RANDOM_LOSS_RTT_DIVISOR: u32 = 16;
const RANDOM_LOSS_RTT_SLACK: Duration = Duration::from_millis(1);
/// The background estimate moves by this fraction of each learned round.
const RANDOM_LOSS_GAIN: f64 = 0.125;
/// §2.8 BBR.Beta.
const BETA: f64 = 0.7;
/// §2.8 BBR.Headroom.
const HEADROOM: f64 = 0.15;
/// §2.8 BBR.MinPipeCwnd, in segments.
const MIN_PIPE_SEGMENTS: usize = 4;
/// §5.3.1.2: bandwidth "still growing" threshold and plateau rounds.
const FULL_BW_THRESH: f64 = 1.25;
const FULL_BW_COUNT: u32 = 3;
/// §5.3.1.3 BBRStartupFullLossCnt.
const STARTUP_FULL_LOSS_COUNT: u32 = 6;
/// §2.12 BBR.ExtraAckedFilterLen (round trips).
const EXTRA_ACKED_FILTER_LEN: u64 = 10;
/// §2.16.1 BBR.MinRTTFilterLen.
const MIN_RTT_FILTER_LEN: Duration = Duration::from_secs(10);
/// §2.16.2 ProbeRTT parameters.
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
const PROBE_RTT_INTERVAL: Duration = Duration::from_secs(5);
/// §5.6.3: C.send_quantum bounds.
const MAX_SEND_QUANTUM: u64 = 64 * 1024;
/// §5.3.3.8 IsRenoCoexistenceProbeTime: at most 63 rounds.
const MAX_RENO_ROUNDS: u64 = 63;

const INF_BW: u64 = u64::MAX;
const INF_INFLIGHT: usize = usize::MAX;

/// §5.1.1 the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// §5.3.1: grows the sending rate quickly to find the bandwidth.
    Startup,
    /// §5.3.2: drains the queue Startup built.
    Drain,
    /// §5.3.3: ProbeBW_DOWN, drains any queue left by probing.
    ProbeBwDown,
    /// §5.3.3: ProbeBW_CRUISE, sends at the estimated bandwidth.
    ProbeBwCruise,
    /// §5.3.3: ProbeBW_REFILL, refills the pipe before probing up.
    ProbeBwRefill,
    /// §5.3.3: ProbeBW_UP, probes for more bandwidth.
    ProbeBwUp,
    /// §5.3.4: ProbeRTT, cuts in-flight data to measure the minimum RTT.
    ProbeRtt,
}

/// §2.14 BBR.ack_phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPhase {
    Init,
    Refilling,
    ProbeStarting,
    ProbeFeedback,
    ProbeStopping,
}

/// §2.3 the per-ACK rate sample, as the controller uses it.
#[derive(Debug, Clone, Copy, Default)]
struct Rs {
    delivery_rate: u64,
    delivered: u64,
    newly_acked: usize,
    is_app_limited: bool,
    tx_in_flight: usize,
    lost: u64,
    prior_delivered: u64,
    rtt: Option<Duration>,
}

/// BBRv3 state (§2).
#[derive(Debug, Clone)]
pub(crate) struct Bbr {
    smss: usize,
    initial_cwnd: usize,
    cwnd: usize,
    /// C.pacing_rate, bytes per second.
    pacing_rate: u64,
    state: State,
    pacing_gain: f64,
    cwnd_gain: f64,
    now: Instant,
    /// C.delivered and C.inflight as of the last ACK.
    delivered: u64,
    inflight: usize,
    cwnd_limited: bool,
    rs: Rs,

    // §2.7 rounds.
    round_count: u64,
    round_start: bool,
    next_round_delivered: u64,
    drain_start_round: u64,

    // §2.9.1 data rate model.
    max_bw_filter: CycleMaxFilter,
    max_bw: u64,
    bw_shortterm: u64,
    bw: u64,
    // §2.10.
    bw_latest: u64,
    inflight_latest: u64,
    loss_round_delivered: u64,
    loss_round_start: bool,
    is_loss_in_round: bool,
    /// ACKs in this round that revealed a loss (Linux's
    /// loss_events_in_round, for §5.3.1.3).
    loss_events_in_round: u32,
    lost_on_this_ack: bool,
    /// Bytes marked lost, and C.delivered, since the loss round began
    /// (the round's loss rate, for the lower bounds).
    lost_in_round: u64,
    loss_round_delivered_start: u64,
    /// C.inflight when the loss round began: what a round carries, the
    /// least a round's loss rate is taken over (module doc).
    loss_round_inflight: usize,
    /// The lowest RTT sample of the loss round so far.
    round_min_rtt: Option<Duration>,
    /// The last finished loss round had a standing queue (module doc).
    queue_in_last_round: bool,
    /// The path's background (random) loss rate, learned from rounds
    /// without a queue (module doc).
    random_loss: f64,

    // §2.9.2 data volume model.
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    extra_acked_interval_start: Instant,
    extra_acked_delivered: u64,
    extra_acked_filter: MaxFilter,
    extra_acked: u64,
    inflight_longterm: usize,
    inflight_shortterm: usize,
    max_inflight: usize,

    // §2.13 Startup.
    full_bw_reached: bool,
    full_bw_now: bool,
    full_bw: u64,
    full_bw_count: u32,

    // §2.14 ProbeBW.
    ack_phase: AckPhase,
    is_bw_probe_sample: bool,
    bw_probe_up_acked: usize,
    probe_up_acked_per_inc: usize,
    bw_probe_up_rounds: u32,
    rounds_since_probe_up: u64,
    bw_probe_wait: Duration,
    cycle_stamp: Instant,
    prev_probe_too_high: bool,
    prev_probe_precautionary: bool,

    // §2.15 undo.
    undo_state: Option<State>,
    undo_bw_shortterm: u64,
    undo_inflight_shortterm: usize,
    undo_inflight_longterm: usize,
    prior_cwnd: usize,

    // §2.16 ProbeRTT.
    probe_rtt_min_delay: Option<Duration>,
    probe_rtt_min_stamp: Instant,
    probe_rtt_expired: bool,
    probe_rtt_done_stamp: Option<Instant>,
    probe_rtt_round_done: bool,
    /// HandleProbeRTT's MarkConnectionAppLimited, kept here: samples of
    /// data sent before this delivered count are application-limited.
    probe_rtt_app_limited_until: u64,

    idle_restart: bool,
    /// Fast recovery or RTO recovery (InLossRecovery()).
    in_loss_recovery: bool,
    has_seen_rtt: bool,
    /// Nothing has used the window yet (an SMSS change restarts it).
    pristine: bool,
}

impl Bbr {
    /// §5.2.1 OnInit().
    pub(crate) fn new(smss: usize) -> Bbr {
        let smss = smss.max(1);
        let initial_cwnd = initial_window(smss);
        let mut b = Bbr {
            smss,
            initial_cwnd,
            cwnd: initial_cwnd,
            pacing_rate: 0,
            state: State::Startup,
            pacing_gain: STARTUP_PACING_GAIN,
            cwnd_gain: DEFAULT_CWND_GAIN,
            now: Instant::ZERO,
            delivered: 0,
            inflight: 0,
            cwnd_limited: false,
            rs: Rs::default(),
            round_count: 0,
            round_start: false,
            next_round_delivered: 0,
            drain_start_round: 0,
            max_bw_filter: CycleMaxFilter::default(),
            max_bw: 0,
            bw_shortterm: INF_BW,
            bw: 0,
            bw_latest: 0,
            inflight_latest: 0,
            loss_round_delivered: 0,
            loss_round_start: false,
            is_loss_in_round: false,
            loss_events_in_round: 0,
            lost_on_this_ack: false,
            lost_in_round: 0,
            loss_round_delivered_start: 0,
            loss_round_inflight: 0,
            round_min_rtt: None,
            queue_in_last_round: false,
            random_loss: 0.0,
            min_rtt: None,
            min_rtt_stamp: Instant::ZERO,
            extra_acked_interval_start: Instant::ZERO,
            extra_acked_delivered: 0,
            extra_acked_filter: MaxFilter::new(),
            extra_acked: 0,
            inflight_longterm: INF_INFLIGHT,
            inflight_shortterm: INF_INFLIGHT,
            max_inflight: initial_cwnd,
            full_bw_reached: false,
            full_bw_now: false,
            full_bw: 0,
            full_bw_count: 0,
            ack_phase: AckPhase::Init,
            is_bw_probe_sample: false,
            bw_probe_up_acked: 0,
            probe_up_acked_per_inc: INF_INFLIGHT,
            bw_probe_up_rounds: 0,
            rounds_since_probe_up: 0,
            bw_probe_wait: Duration::ZERO,
            cycle_stamp: Instant::ZERO,
            prev_probe_too_high: false,
            prev_probe_precautionary: false,
            undo_state: None,
            undo_bw_shortterm: 0,
            undo_inflight_shortterm: 0,
            undo_inflight_longterm: 0,
            prior_cwnd: 0,
            probe_rtt_min_delay: None,
            probe_rtt_min_stamp: Instant::ZERO,
            probe_rtt_expired: false,
            probe_rtt_done_stamp: None,
            probe_rtt_round_done: false,
            probe_rtt_app_limited_until: 0,
            idle_restart: false,
            in_loss_recovery: false,
            has_seen_rtt: false,
            pristine: true,
        };
        b.init_pacing_rate(None);
        b.enter_startup();
        b
    }

    /// The state machine's state.
    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// BBR.max_bw in bytes per second.
    #[cfg(test)]
    pub(crate) fn max_bw(&self) -> u64 {
        self.max_bw
    }

    /// BBR.min_rtt.
    #[cfg(test)]
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// BBR.inflight_longterm (`None`: unset).
    #[cfg(test)]
    pub(crate) fn inflight_longterm(&self) -> Option<usize> {
        (self.inflight_longterm != INF_INFLIGHT).then_some(self.inflight_longterm)
    }

    /// BBR.full_bw_reached.
    #[cfg(test)]
    pub(crate) fn full_bw_reached(&self) -> bool {
        self.full_bw_reached
    }

    fn min_pipe_cwnd(&self) -> usize {
        MIN_PIPE_SEGMENTS * self.smss
    }

    /// A deterministic stand-in for a random draw (see the module doc).
    fn draw(&self) -> u64 {
        let mut z = self
            .delivered
            .wrapping_add(self.round_count.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(self.now.total_micros());
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    // ---------------------------------------------------------------
    // §5.6.2 pacing rate
    // ---------------------------------------------------------------

    /// InitPacingRate(): StartupPacingGain * InitialCwnd / (SRTT or 1 ms).
    fn init_pacing_rate(&mut self, srtt: Option<Duration>) {
        let us = srtt.map_or(1000, |d| d.as_micros().max(1));
        let nominal = self.initial_cwnd as u128 * 1_000_000 / us;
        self.pacing_rate = (STARTUP_PACING_GAIN * nominal as f64) as u64;
    }

    /// SetPacingRateWithGain(): only raised until the pipe is full.
    fn set_pacing_rate_with_gain(&mut self, gain: f64) {
        let rate = (gain * self.bw as f64 * PACING_MARGIN) as u64;
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// §5.6.3 SetSendQuantum(): 1 ms at the pacing rate, 2 SMSS..64 KiB.
    fn send_quantum(&self) -> usize {
        (self.pacing_rate / 1000).clamp(
            2 * self.smss as u64,
            MAX_SEND_QUANTUM.max(2 * self.smss as u64),
        ) as usize
    }

    // ---------------------------------------------------------------
    // §5.6.4 volumes
    // ---------------------------------------------------------------

    /// BDPMultiple(bw, gain) (§5.6.4.2).
    fn bdp_multiple(&self, bw: u64, gain: f64) -> usize {
        let Some(min_rtt) = self.min_rtt else {
            return self.initial_cwnd;
        };
        let bdp = u128::from(bw) * min_rtt.as_micros() / 1_000_000;
        (gain * bdp as f64).min(INF_INFLIGHT as f64 / 4.0) as usize
    }

    /// BBR.bdp = BBR.bw * BBR.min_rtt.
    fn bdp(&self) -> usize {
        self.bdp_multiple(self.bw, 1.0)
    }

    /// QuantizationBudget() with §5.5.8.1 BBR.offload_budget = 3 quanta.
    fn quantization_budget(&self, inflight_cap: usize) -> usize {
        let offload_budget = 3 * self.send_quantum();
        let mut cap = inflight_cap.max(offload_budget).max(self.min_pipe_cwnd());
        if self.state == State::ProbeBwUp {
            cap += 2 * self.smss;
        }
        cap
    }

    /// Inflight(bw, gain).
    fn inflight(&self, bw: u64, gain: f64) -> usize {
        self.quantization_budget(self.bdp_multiple(bw, gain))
    }

    /// UpdateMaxInflight().
    fn update_max_inflight(&mut self) {
        let cap = self
            .bdp_multiple(self.bw, self.cwnd_gain)
            .saturating_add(self.extra_acked as usize);
        self.max_inflight = self.quantization_budget(cap);
    }

    /// TargetInflight(): the BDP unless congestion cut cwnd.
    fn target_inflight(&self) -> usize {
        self.bdp().min(self.cwnd)
    }

    /// InflightWithHeadroom() (§5.3.3.9).
    fn inflight_with_headroom(&self) -> usize {
        if self.inflight_longterm == INF_INFLIGHT {
            return INF_INFLIGHT;
        }
        let headroom = ((HEADROOM * self.inflight_longterm as f64) as usize).max(self.smss);
        self.inflight_longterm
            .saturating_sub(headroom)
            .max(self.min_pipe_cwnd())
    }

    /// §5.6.4.4 SaveCwnd().
    fn save_cwnd(&mut self) {
        if !self.in_loss_recovery && self.state != State::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
    }

    /// §5.6.4.4 RestoreCwnd().
    fn restore_cwnd(&mut self) {
        self.cwnd = self.cwnd.max(self.prior_cwnd);
    }

    /// §5.6.4.5 ProbeRTTCwnd().
    fn probe_rtt_cwnd(&self) -> usize {
        self.bdp_multiple(self.bw, PROBE_RTT_CWND_GAIN)
            .max(self.min_pipe_cwnd())
    }

    /// §5.6.4.6 SetCwnd(), then §5.6.4.5 and §5.6.4.7 bounds.
    fn set_cwnd(&mut self) {
        self.update_max_inflight();
        let acked = self.rs.newly_acked;
        if self.full_bw_reached {
            self.cwnd = (self.cwnd + acked).min(self.max_inflight);
        } else if self.cwnd < self.max_inflight || self.delivered < self.initial_cwnd as u64 {
            self.cwnd += acked;
        }
        self.cwnd = self.cwnd.max(self.min_pipe_cwnd());
        // BoundCwndForProbeRTT().
        if self.state == State::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
        self.bound_cwnd_for_model();
    }

    /// §5.6.4.7 BoundCwndForModel().
    fn bound_cwnd_for_model(&mut self) {
        let mut cap = INF_INFLIGHT;
        if self.is_in_probe_bw_state() && self.state != State::ProbeBwCruise {
            cap = self.inflight_longterm;
        } else if matches!(self.state, State::ProbeRtt | State::ProbeBwCruise) {
            cap = self.inflight_with_headroom();
        }
        cap = cap.min(self.inflight_shortterm).max(self.min_pipe_cwnd());
        self.cwnd = self.cwnd.min(cap);
    }

    // ---------------------------------------------------------------
    // §5.3 state machine
    // ---------------------------------------------------------------

    /// §5.3.1 EnterStartup().
    fn enter_startup(&mut self) {
        self.state = State::Startup;
        self.pacing_gain = STARTUP_PACING_GAIN;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    /// §5.3.1 CheckStartupDone().
    fn check_startup_done(&mut self) {
        self.check_startup_high_loss();
        if self.state == State::Startup && self.full_bw_reached {
            self.enter_drain();
        }
    }

    /// §5.3.1.2 ResetFullBW().
    fn reset_full_bw(&mut self) {
        self.full_bw = 0;
        self.full_bw_count = 0;
        self.full_bw_now = false;
    }

    /// §5.3.1.2 CheckFullBWReached().
    fn check_full_bw_reached(&mut self) {
        if self.full_bw_now || !self.round_start || self.rs.is_app_limited {
            return;
        }
        if self.rs.delivery_rate as f64 >= self.full_bw as f64 * FULL_BW_THRESH {
            self.reset_full_bw();
            self.full_bw = self.rs.delivery_rate;
            return;
        }
        self.full_bw_count += 1;
        self.full_bw_now = self.full_bw_count >= FULL_BW_COUNT;
        if self.full_bw_now {
            self.full_bw_reached = true;
        }
    }

    /// §5.3.1.3: leave Startup when, in fast recovery, a round lost more
    /// than BBR.LossThresh of the data in flight in at least
    /// BBRStartupFullLossCnt discontiguous ranges (any loss without SACK).
    /// The ranges are counted as Linux does, one per ACK revealing a loss.
    /// Deviation (module doc): the background loss is not known yet in
    /// Startup, so loss counts only with a queue in the round, or above
    /// what the background may reach.
    fn check_startup_high_loss(&mut self) {
        if self.full_bw_reached {
            return;
        }
        if self.lost_on_this_ack {
            self.loss_events_in_round = self.loss_events_in_round.saturating_add(1);
        }
        if self.loss_round_start
            && self.in_loss_recovery
            && self.loss_events_in_round >= STARTUP_FULL_LOSS_COUNT
            && self.is_inflight_too_high(self.rs.lost, self.rs.tx_in_flight, true)
            && (self.queue_in_last_round
                || self.rs.lost as f64
                    > (LOSS_THRESH + MAX_RANDOM_LOSS) * self.rs.tx_in_flight as f64)
        {
            self.undo_state = Some(State::Startup);
            self.full_bw_reached = true;
            self.inflight_longterm = self.bdp().max(self.inflight_latest as usize);
        }
        if self.loss_round_start {
            self.loss_events_in_round = 0;
        }
    }

    /// §5.3.2 EnterDrain().
    fn enter_drain(&mut self) {
        self.state = State::Drain;
        self.pacing_gain = DRAIN_PACING_GAIN;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
        self.drain_start_round = self.round_count;
    }

    /// §5.3.2 CheckDrainDone().
    fn check_drain_done(&mut self) {
        if self.state == State::Drain
            && (self.inflight <= self.inflight(self.bw, 1.0)
                || self.round_count > self.drain_start_round + 3)
        {
            self.enter_probe_bw();
        }
    }

    /// §5.3.3.9 EnterProbeBW().
    fn enter_probe_bw(&mut self) {
        self.cwnd_gain = DEFAULT_CWND_GAIN;
        self.start_probe_bw_down();
    }

    fn is_in_probe_bw_state(&self) -> bool {
        matches!(
            self.state,
            State::ProbeBwDown | State::ProbeBwCruise | State::ProbeBwRefill | State::ProbeBwUp
        )
    }

    /// §5.3.3.9 IsProbingBW().
    fn is_probing_bw(&self) -> bool {
        matches!(
            self.state,
            State::Startup | State::ProbeBwRefill | State::ProbeBwUp
        )
    }

    /// §5.5.1 StartRound().
    fn start_round(&mut self) {
        self.next_round_delivered = self.delivered;
    }

    /// §5.3.3.9 StartProbeBW_DOWN().
    fn start_probe_bw_down(&mut self) {
        self.reset_congestion_signals();
        self.probe_up_acked_per_inc = INF_INFLIGHT;
        self.pick_probe_wait();
        self.cycle_stamp = self.now;
        self.ack_phase = AckPhase::ProbeStopping;
        self.start_round();
        self.state = State::ProbeBwDown;
        // §5.6.1 table: DOWN paces at 0.90, cwnd gain 2.
        self.pacing_gain = PROBE_DOWN_PACING_GAIN;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    /// §5.3.3.9 StartProbeBW_CRUISE().
    fn start_probe_bw_cruise(&mut self) {
        self.state = State::ProbeBwCruise;
        self.pacing_gain = 1.0;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    /// §5.3.3.9 StartProbeBW_REFILL().
    fn start_probe_bw_refill(&mut self) {
        self.reset_short_term_model();
        self.bw_probe_up_rounds = 0;
        self.bw_probe_up_acked = 0;
        self.prev_probe_precautionary = false;
        self.ack_phase = AckPhase::Refilling;
        self.start_round();
        self.state = State::ProbeBwRefill;
        self.pacing_gain = 1.0;
        self.cwnd_gain = DEFAULT_CWND_GAIN;
    }

    /// §5.3.3.9 StartProbeBW_UP().
    fn start_probe_bw_up(&mut self) {
        self.ack_phase = AckPhase::ProbeStarting;
        self.start_round();
        self.reset_full_bw();
        self.full_bw = self.rs.delivery_rate;
        self.state = State::ProbeBwUp;
        self.pacing_gain = PROBE_UP_PACING_GAIN;
        self.cwnd_gain = PROBE_UP_CWND_GAIN;
        self.raise_inflight_longterm_slope();
    }

    /// §5.3.3.9 UpdateProbeBWCyclePhase().
    fn update_probe_bw_cycle_phase(&mut self) {
        if !self.full_bw_reached {
            return;
        }
        if self.adapt_long_term_model() {
            return;
        }
        let state = self.state;
        match state {
            State::ProbeBwDown => {
                if self.is_time_to_probe_bw() {
                    return;
                }
                if self.is_time_to_cruise() {
                    self.start_probe_bw_cruise();
                }
            }
            State::ProbeBwCruise => {
                self.is_time_to_probe_bw();
            }
            // After one round of REFILL, start UP.
            State::ProbeBwRefill if self.round_start => {
                self.is_bw_probe_sample = true;
                self.start_probe_bw_up();
            }
            State::ProbeBwUp if self.is_time_to_go_down() => {
                self.prev_probe_too_high = false;
                self.start_probe_bw_down();
            }
            _ => {}
        }
    }

    /// IsTimeToCruise().
    fn is_time_to_cruise(&self) -> bool {
        self.inflight <= self.inflight_with_headroom()
            && self.inflight <= self.inflight(self.max_bw, 1.0)
    }

    /// IsTimeToGoDown().
    fn is_time_to_go_down(&mut self) -> bool {
        // Precautionary Bandwidth Probing: Deceleration (§5.3.3.6).
        if self.prev_probe_too_high && self.inflight >= self.inflight_longterm {
            self.prev_probe_precautionary = true;
            return true;
        }
        if self.cwnd_limited && self.cwnd >= self.inflight_longterm {
            // bw is limited by BBR.inflight_longterm.
            self.reset_full_bw();
            self.full_bw = self.rs.delivery_rate;
        } else if self.full_bw_now {
            return true;
        }
        false
    }

    /// §5.3.3.8 IsTimeToProbeBW().
    fn is_time_to_probe_bw(&mut self) -> bool {
        let elapsed = self.now.saturating_duration_since(self.cycle_stamp) > self.bw_probe_wait;
        if elapsed || self.is_reno_coexistence_probe_time() {
            self.start_probe_bw_refill();
            return true;
        }
        false
    }

    /// §5.3.3.8 PickProbeWait(): 0 or 1 round, 2..3 s.
    fn pick_probe_wait(&mut self) {
        let r = self.draw();
        self.rounds_since_probe_up = r & 1;
        self.bw_probe_wait = Duration::from_secs(2) + Duration::from_micros((r >> 1) % 1_000_000);
    }

    /// §5.3.3.8 IsRenoCoexistenceProbeTime().
    fn is_reno_coexistence_probe_time(&self) -> bool {
        let reno_rounds = (self.target_inflight() / self.smss) as u64;
        self.rounds_since_probe_up >= reno_rounds.min(MAX_RENO_ROUNDS)
    }

    /// RaiseInflightLongtermSlope().
    fn raise_inflight_longterm_slope(&mut self) {
        let growth_this_round = 1usize << self.bw_probe_up_rounds;
        self.bw_probe_up_rounds = (self.bw_probe_up_rounds + 1).min(30);
        self.probe_up_acked_per_inc = (self.cwnd / growth_this_round).max(self.smss);
    }

    /// ProbeInflightLongtermUpward().
    fn probe_inflight_longterm_upward(&mut self) {
        if !self.cwnd_limited || self.cwnd < self.inflight_longterm {
            return;
        }
        self.bw_probe_up_acked += self.rs.newly_acked;
        if self.bw_probe_up_acked >= self.probe_up_acked_per_inc {
            let delta = self.bw_probe_up_acked / self.probe_up_acked_per_inc;
            self.bw_probe_up_acked -= delta * self.probe_up_acked_per_inc;
            self.inflight_longterm = self.inflight_longterm.saturating_add(delta * self.smss);
        }
        if self.round_start {
            self.raise_inflight_longterm_slope();
        }
    }

    /// AdaptLongTermModel(): true if it decided a state transition.
    fn adapt_long_term_model(&mut self) -> bool {
        if self.ack_phase == AckPhase::ProbeStarting && self.round_start {
            // Starting to get bw probing samples.
            self.ack_phase = AckPhase::ProbeFeedback;
        }
        if self.ack_phase == AckPhase::ProbeStopping && self.round_start {
            // End of samples from the bw probing phase.
            self.is_bw_probe_sample = false;
            self.ack_phase = AckPhase::Init;
            if self.is_in_probe_bw_state() && !self.rs.is_app_limited {
                // §5.5.6 AdvanceMaxBwFilter().
                self.max_bw_filter.advance();
            }
            // Precautionary Bandwidth Probing: Acceleration (§5.3.3.6).
            if self.is_in_probe_bw_state()
                && self.prev_probe_precautionary
                && !self.prev_probe_too_high
            {
                self.start_probe_bw_refill();
                return true;
            }
        }
        if !self.is_inflight_too_high(self.rs.lost, self.rs.tx_in_flight, true) {
            // Loss rate is safe: adjust upper bounds upward.
            if self.inflight_longterm == INF_INFLIGHT {
                return false;
            }
            if self.rs.tx_in_flight > self.inflight_longterm {
                self.inflight_longterm = self.rs.tx_in_flight;
            }
            if self.state == State::ProbeBwUp {
                self.probe_inflight_longterm_upward();
            }
        }
        false
    }

    /// §5.5.10.2 IsInflightTooHigh().
    /// Deviation (module doc): over at least LOSS_SAMPLE_MIN_SEGMENTS.
    fn is_inflight_too_high(&self, lost: u64, tx_in_flight: usize, selective_acks: bool) -> bool {
        lost as f64 > self.loss_rate_base(tx_in_flight as u64) * self.loss_thresh()
            || (lost > 0 && !selective_acks)
    }

    /// The amount a loss rate is taken over for `sent` bytes (module doc).
    fn loss_rate_base(&self, sent: u64) -> f64 {
        sent.max((LOSS_SAMPLE_MIN_SEGMENTS * self.smss) as u64) as f64
    }

    /// BBR.LossThresh above the path's background loss (module doc).
    fn loss_thresh(&self) -> f64 {
        LOSS_THRESH + self.random_loss
    }

    /// Learns the background loss rate from a finished loss round that
    /// lost `rate` of its data (module doc).
    fn learn_random_loss(&mut self, rate: f64) {
        let (Some(round_min), Some(min_rtt)) = (self.round_min_rtt.take(), self.min_rtt) else {
            self.queue_in_last_round = false;
            return;
        };
        let slack = (min_rtt / RANDOM_LOSS_RTT_DIVISOR).max(RANDOM_LOSS_RTT_SLACK);
        self.queue_in_last_round = round_min > min_rtt + slack;
        if self.is_probing_bw() || self.state == State::Startup || self.queue_in_last_round {
            return;
        }
        let learned = self.random_loss + RANDOM_LOSS_GAIN * (rate - self.random_loss);
        self.random_loss = learned.clamp(0.0, MAX_RANDOM_LOSS);
    }

    /// §5.5.10.2 HandleInflightTooHigh().
    fn handle_inflight_too_high(&mut self, tx_in_flight: usize, app_limited: bool) {
        self.prev_probe_too_high = true;
        self.is_bw_probe_sample = false;
        if !app_limited {
            let floor = (self.target_inflight() as f64 * BETA) as usize;
            self.inflight_longterm = tx_in_flight.max(floor);
        }
        if self.state == State::ProbeBwUp {
            self.undo_state = Some(State::ProbeBwUp);
            self.start_probe_bw_down();
        }
    }

    /// §5.5.10.2 NoteLoss().
    fn note_loss(&mut self) {
        if !self.is_loss_in_round {
            self.loss_round_delivered = self.delivered;
            self.save_state_upon_loss();
        }
        self.is_loss_in_round = true;
    }

    /// §5.5.11.1 SaveStateUponLoss().
    fn save_state_upon_loss(&mut self) {
        self.save_cwnd();
        self.undo_state = None;
        self.undo_bw_shortterm = self.bw_shortterm;
        self.undo_inflight_shortterm = self.inflight_shortterm;
        self.undo_inflight_longterm = self.inflight_longterm;
    }

    // ---------------------------------------------------------------
    // §5.5 model updates on an ACK
    // ---------------------------------------------------------------

    /// §5.5.10.3 UpdateLatestDeliverySignals().
    fn update_latest_delivery_signals(&mut self) {
        self.loss_round_start = false;
        self.bw_latest = self.bw_latest.max(self.rs.delivery_rate);
        self.inflight_latest = self.inflight_latest.max(self.rs.delivered);
        if self.rs.prior_delivered >= self.loss_round_delivered {
            self.loss_round_delivered = self.delivered;
            self.loss_round_start = true;
        }
    }

    /// §5.5.10.3 AdvanceLatestDeliverySignals().
    fn advance_latest_delivery_signals(&mut self) {
        if self.loss_round_start {
            self.bw_latest = self.rs.delivery_rate;
            self.inflight_latest = self.rs.delivered;
        }
    }

    /// §5.5.10.3 ResetCongestionSignals().
    fn reset_congestion_signals(&mut self) {
        self.is_loss_in_round = false;
        self.bw_latest = 0;
        self.inflight_latest = 0;
    }

    /// §5.5.10.3 ResetShortTermModel().
    fn reset_short_term_model(&mut self) {
        self.bw_shortterm = INF_BW;
        self.inflight_shortterm = INF_INFLIGHT;
    }

    /// §5.5.10.3 UpdateCongestionSignals().
    fn update_congestion_signals(&mut self) {
        self.update_max_bw();
        if let Some(rtt) = self.rs.rtt {
            self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        if !self.loss_round_start {
            return;
        }
        // AdaptLowerBoundsFromCongestion(): once per round, and only
        // when not probing. Deviation: only when the round's loss rate
        // exceeds BBR.LossThresh (above the background loss, module doc),
        // the tolerance the draft already applies to probing (§5.5.10.2),
        // and the round had a queue. The draft lowers the short-term model on
        // any loss in a round; on a radio link with 1 % random loss every
        // round has one, and the bounds, which follow what was delivered
        // (97-99 % of what was sent), ratchet the rate down round after
        // round until the next REFILL (measured in tests/loss_sim.rs).
        let round_delivered = self
            .delivered
            .saturating_sub(self.loss_round_delivered_start);
        let round_lost = core::mem::take(&mut self.lost_in_round);
        self.loss_round_delivered_start = self.delivered;
        // Deviation (module doc): a round's loss rate is taken over what
        // the round carried, at least what was in flight when it began
        // (learned so), and judged over at least LOSS_SAMPLE_MIN_SEGMENTS.
        let round_sent = (round_delivered + round_lost).max(self.loss_round_inflight as u64);
        self.loss_round_inflight = self.inflight;
        let loss_rate = if round_sent > 0 {
            round_lost as f64 / round_sent as f64
        } else {
            0.0
        };
        let lossy = round_lost as f64 > self.loss_rate_base(round_sent) * self.loss_thresh();
        self.learn_random_loss(loss_rate);
        // Deviation (module doc, "Short-term bounds"): a lossy round
        // lowers them only if it also had a queue.
        if !self.is_probing_bw() && self.is_loss_in_round && lossy && self.queue_in_last_round {
            // InitLowerBounds().
            if self.bw_shortterm == INF_BW {
                self.bw_shortterm = self.max_bw;
            }
            if self.inflight_shortterm == INF_INFLIGHT {
                self.inflight_shortterm = self.cwnd;
            }
            // LossLowerBounds().
            self.bw_shortterm = self.bw_latest.max((BETA * self.bw_shortterm as f64) as u64);
            self.inflight_shortterm = (self.inflight_latest as usize)
                .max((BETA * self.inflight_shortterm as f64) as usize);
        }
        self.is_loss_in_round = false;
    }

    /// §5.5.1 UpdateRound() and §5.5.5 UpdateMaxBw().
    fn update_max_bw(&mut self) {
        if self.rs.prior_delivered >= self.next_round_delivered {
            self.start_round();
            self.round_count += 1;
            self.rounds_since_probe_up += 1;
            self.round_start = true;
        } else {
            self.round_start = false;
        }
        let rate = self.rs.delivery_rate;
        if rate > 0 && (rate >= self.max_bw || !self.rs.is_app_limited) {
            self.max_bw = self.max_bw_filter.update(rate);
        }
    }

    /// §5.5.10.3 BoundBWForModel().
    fn bound_bw_for_model(&mut self) {
        self.bw = self.max_bw.min(self.bw_shortterm);
    }

    /// §5.5.9 UpdateACKAggregation().
    fn update_ack_aggregation(&mut self) {
        let interval = self
            .now
            .saturating_duration_since(self.extra_acked_interval_start);
        let mut expected = (u128::from(self.bw) * interval.as_micros() / 1_000_000) as u64;
        // Reset the interval if the ACK rate is below the expected rate.
        if self.extra_acked_delivered <= expected {
            self.extra_acked_delivered = 0;
            self.extra_acked_interval_start = self.now;
            expected = 0;
        }
        self.extra_acked_delivered += self.rs.newly_acked as u64;
        let extra = self
            .extra_acked_delivered
            .saturating_sub(expected)
            .min(self.cwnd as u64);
        let window = if self.full_bw_reached {
            EXTRA_ACKED_FILTER_LEN
        } else {
            // In Startup, just remember 1 round.
            1
        };
        self.extra_acked = self
            .extra_acked_filter
            .update(window, self.round_count, extra);
    }

    /// §5.3.4.3 UpdateMinRTT().
    fn update_min_rtt(&mut self) {
        self.probe_rtt_expired = self.now > self.probe_rtt_min_stamp + PROBE_RTT_INTERVAL;
        if let Some(rtt) = self.rs.rtt {
            if self.probe_rtt_min_delay.is_none_or(|d| rtt < d) || self.probe_rtt_expired {
                self.probe_rtt_min_delay = Some(rtt);
                self.probe_rtt_min_stamp = self.now;
            }
        }
        let min_rtt_expired = self.now > self.min_rtt_stamp + MIN_RTT_FILTER_LEN;
        if let Some(d) = self.probe_rtt_min_delay {
            if self.min_rtt.is_none_or(|m| d < m) || min_rtt_expired {
                self.min_rtt = Some(d);
                self.min_rtt_stamp = self.probe_rtt_min_stamp;
            }
        }
    }

    /// §5.3.4.3 CheckProbeRTT().
    fn check_probe_rtt(&mut self) {
        if self.state != State::ProbeRtt && self.probe_rtt_expired && !self.idle_restart {
            // EnterProbeRTT().
            self.state = State::ProbeRtt;
            self.pacing_gain = 1.0;
            self.cwnd_gain = PROBE_RTT_CWND_GAIN;
            self.save_cwnd();
            self.probe_rtt_done_stamp = None;
            self.ack_phase = AckPhase::ProbeStopping;
            self.start_round();
        }
        if self.state == State::ProbeRtt {
            self.handle_probe_rtt();
        }
        if self.rs.delivered > 0 {
            self.idle_restart = false;
        }
    }

    /// §5.3.4.3 HandleProbeRTT().
    fn handle_probe_rtt(&mut self) {
        // Ignore low rate samples during ProbeRTT.
        self.probe_rtt_app_limited_until = (self.delivered + self.inflight as u64).max(1);
        if self.probe_rtt_done_stamp.is_none() && self.inflight <= self.probe_rtt_cwnd() {
            // At least ProbeRTTDuration and one round.
            self.probe_rtt_done_stamp = Some(self.now + PROBE_RTT_DURATION);
            self.probe_rtt_round_done = false;
            self.start_round();
        } else if self.probe_rtt_done_stamp.is_some() {
            if self.round_start {
                self.probe_rtt_round_done = true;
            }
            if self.probe_rtt_round_done {
                self.check_probe_rtt_done();
            }
        }
    }

    /// §5.3.4.3 CheckProbeRTTDone().
    fn check_probe_rtt_done(&mut self) {
        if self.probe_rtt_done_stamp.is_some_and(|t| self.now > t) {
            // Schedule the next ProbeRTT.
            self.probe_rtt_min_stamp = self.now;
            self.restore_cwnd();
            self.exit_probe_rtt();
        }
    }

    /// §5.3.4.4 ExitProbeRTT().
    fn exit_probe_rtt(&mut self) {
        self.reset_short_term_model();
        if self.full_bw_reached {
            self.start_probe_bw_down();
            self.start_probe_bw_cruise();
        } else {
            self.enter_startup();
        }
    }

    /// §5.2.3 UpdateOnACK() for an ACK that delivered data.
    fn update_on_ack(&mut self) {
        // UpdateModelAndState().
        self.update_latest_delivery_signals();
        self.update_congestion_signals();
        self.update_ack_aggregation();
        self.check_full_bw_reached();
        self.check_startup_done();
        self.check_drain_done();
        self.update_probe_bw_cycle_phase();
        self.update_min_rtt();
        self.check_probe_rtt();
        self.advance_latest_delivery_signals();
        self.bound_bw_for_model();
        // UpdateControlParameters().
        self.set_pacing_rate_with_gain(self.pacing_gain);
        self.set_cwnd();
    }
}

impl CongestionControl for Bbr {
    #[cfg(test)]
    fn kind(&self) -> super::CongestionKind {
        super::CongestionKind::Bbr
    }

    fn cwnd(&self) -> usize {
        self.cwnd
    }

    /// BBR has no ssthresh; reported as "infinite" until the pipe is
    /// full, then as cwnd (what Linux's ss shows for BBR).
    fn ssthresh(&self) -> usize {
        if self.full_bw_reached {
            self.cwnd
        } else {
            SSTHRESH_INFINITE
        }
    }

    fn smss(&self) -> usize {
        self.smss
    }

    fn in_slow_start(&self) -> bool {
        self.state == State::Startup
    }

    fn on_ack_sample(&mut self, ack: &AckSample) {
        self.now = ack.now;
        self.inflight = ack.in_flight;
        self.delivered = ack.delivered_total;
        self.cwnd_limited = ack.cwnd_limited;
        if !self.has_seen_rtt {
            if let Some(srtt) = ack.srtt {
                // As Linux: the first RTT sample re-derives the initial
                // pacing rate (§5.6.2 InitPacingRate with C.srtt).
                self.has_seen_rtt = true;
                if self.max_bw == 0 {
                    self.init_pacing_rate(Some(srtt));
                }
            }
        }
        // §5.6.4.4: leaving recovery (fast or RTO) restores cwnd; the
        // model bounds it again below.
        if self.in_loss_recovery && !ack.loss_recovery {
            self.in_loss_recovery = false;
            self.restore_cwnd();
        } else if !self.in_loss_recovery && ack.loss_recovery {
            self.save_cwnd();
            self.in_loss_recovery = true;
        }
        let lost_on_this_ack = core::mem::take(&mut self.lost_on_this_ack);
        let Some(rate) = ack.rate.filter(|_| ack.delivered > 0) else {
            self.bound_cwnd_for_model();
            return;
        };
        self.pristine = false;
        self.lost_on_this_ack = lost_on_this_ack;
        self.rs = Rs {
            delivery_rate: rate.rate(),
            delivered: rate.delivered,
            newly_acked: ack.delivered,
            is_app_limited: rate.app_limited
                || rate.prior_delivered < self.probe_rtt_app_limited_until,
            tx_in_flight: rate.tx_in_flight,
            lost: rate.lost,
            prior_delivered: rate.prior_delivered,
            rtt: rate.rtt,
        };
        self.update_on_ack();
        self.lost_on_this_ack = false;
    }

    /// Fast recovery starts (or a TLP repaired a loss): §5.6.4.4
    /// OnEnterFastRecovery(). cwnd is not cut; the model is.
    fn on_congestion_event(&mut self, _now: Instant, _flight_size: usize) {
        self.pristine = false;
        self.save_cwnd();
        self.save_state_upon_loss();
        self.in_loss_recovery = true;
    }

    fn on_recovery_exit(&mut self, _flight_size: usize) {
        self.in_loss_recovery = false;
        self.restore_cwnd();
        self.bound_cwnd_for_model();
    }

    /// §5.6.4.4 OnEnterRTO(): cwnd = C.inflight + 1 segment; everything
    /// outstanding is presumed lost, so that is one segment.
    fn on_rto(&mut self, _flight_size: usize) {
        self.pristine = false;
        if !self.in_loss_recovery {
            self.save_cwnd();
        }
        self.save_state_upon_loss();
        self.note_loss();
        self.in_loss_recovery = true;
        self.cwnd = self.smss;
    }

    /// §5.4.2: BBR does not restart from the initial window after idle;
    /// `on_transmit` paces the restart at BBR.bw instead.
    fn on_idle_restart(&mut self) {}

    fn set_smss(&mut self, smss: usize) {
        let smss = smss.max(1);
        if smss == self.smss {
            return;
        }
        if self.pristine {
            *self = Bbr::new(smss);
            return;
        }
        let rescale = |b: usize| -> usize {
            if b == INF_INFLIGHT {
                b
            } else {
                ((b as u128 * smss as u128) / self.smss as u128).min(INF_INFLIGHT as u128 - 1)
                    as usize
            }
        };
        self.cwnd = rescale(self.cwnd).max(MIN_PIPE_SEGMENTS * smss);
        self.prior_cwnd = rescale(self.prior_cwnd);
        self.initial_cwnd = initial_window(smss);
        self.smss = smss;
    }

    /// §5.5.11.2 HandleSpuriousLossDetection().
    fn undo(&mut self, _prior: Prior) {
        self.restore_cwnd();
        self.in_loss_recovery = false;
        self.is_loss_in_round = false;
        self.reset_full_bw();
        self.bw_shortterm = self.bw_shortterm.max(self.undo_bw_shortterm);
        self.inflight_shortterm = self.inflight_shortterm.max(self.undo_inflight_shortterm);
        self.inflight_longterm = self.inflight_longterm.max(self.undo_inflight_longterm);
        match self.undo_state {
            Some(State::Startup) if self.state != State::Startup => {
                self.full_bw_reached = false;
                if self.state != State::ProbeRtt {
                    self.enter_startup();
                }
            }
            Some(State::ProbeBwUp)
                if self.state != State::ProbeBwUp && self.state != State::ProbeRtt =>
            {
                self.start_probe_bw_refill();
            }
            _ => {}
        }
        self.undo_state = None;
    }

    /// A new path: everything the model knew is about the old one
    /// (PROTOCOL.md §7).
    fn reset(&mut self) {
        *self = Bbr::new(self.smss);
    }

    /// Careful Resume (draft-ietf-tsvwg-careful-resume §4.3) for a
    /// model-based controller: cwnd may jump to `jump`, and the pacing
    /// rate to `jump` per BBR.min_rtt of the new path, so the jump is
    /// paced over a round trip rather than sent at once. Startup goes on
    /// and measures the path as usual; the model is not seeded.
    fn resume_jump(&mut self, jump: usize) {
        self.pristine = false;
        self.cwnd = self.cwnd.max(jump);
        if let Some(min_rtt) = self.min_rtt {
            let us = min_rtt.as_micros().max(1);
            let rate = (jump as u128 * 1_000_000 / us).min(u128::from(u64::MAX)) as u64;
            self.pacing_rate = self.pacing_rate.max(rate);
        }
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some(self.pacing_rate.max(1))
    }

    fn uses_prr(&self) -> bool {
        false
    }

    /// §5.2.4 HandleLostPacket(P) (§5.5.10.2).
    fn on_segment_lost(&mut self, lost: &LostSegment) {
        self.pristine = false;
        self.now = self.now.max(lost.now);
        self.delivered = self.delivered.max(lost.delivered);
        self.lost_on_this_ack = true;
        self.lost_in_round += lost.len as u64;
        self.note_loss();
        if !self.is_bw_probe_sample {
            // Not a segment sent while probing bandwidth.
            return;
        }
        if self.is_inflight_too_high(lost.lost_since_sent, lost.tx_in_flight, lost.selective_acks) {
            // InflightAtLoss(P): where inside P did the loss rate cross
            // BBR.LossThresh?
            let size = lost.len as f64;
            let inflight_prev = lost.tx_in_flight as f64 - size;
            let lost_prev = lost.lost_since_sent as f64 - size;
            let thresh = self.loss_thresh();
            let lost_prefix = (thresh * inflight_prev - lost_prev) / (1.0 - thresh);
            let at_loss = (inflight_prev + lost_prefix).max(0.0) as usize;
            self.handle_inflight_too_high(at_loss, lost.app_limited);
        }
    }

    /// §5.4.1 HandleRestartFromIdle().
    fn on_transmit(&mut self, now: Instant, in_flight: usize, app_limited: bool) {
        self.now = self.now.max(now);
        if in_flight == 0 && app_limited {
            self.idle_restart = true;
            self.extra_acked_interval_start = self.now;
            if self.is_in_probe_bw_state() {
                self.set_pacing_rate_with_gain(1.0);
            } else if self.state == State::ProbeRtt {
                self.check_probe_rtt_done();
            }
        }
    }
}

#[cfg(test)]
mod tests;
