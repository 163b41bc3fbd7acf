//! D-SACK detection (RFC 2883) and the undo of a window reduction that a
//! spurious retransmission caused (RFC 3708, RFC 3522 Eifel detection,
//! RFC 4015 response).
//!
//! Read first: RFC 2883 §4 (which SACK block is a D-SACK), RFC 3708 §2
//! (counting D-SACKs against retransmissions) and RFC 3522 §3 (timestamps
//! tell whether the original or the retransmission was acknowledged).
//! Linux does the same in tcp_input.c (`undo_marker`, `undo_retrans`,
//! `tcp_packet_delayed`).
//!
//! The connection calls [`Undo::start`] when it reduces the window for a
//! loss (recovery or RTO), [`Undo::on_retransmit`] for each retransmission
//! of the episode, and on each ACK [`Undo::on_dsack`] and
//! [`Undo::check`]; when `check` says the episode was spurious the
//! connection restores the window [`Undo::start`] saved.

use crate::time::Instant;
use crate::wire::{SackBlock, SeqNumber};

/// RFC 2883 §4: the first SACK block is a D-SACK when it lies below the
/// cumulative ACK, or inside the second block.
pub(crate) fn dsack_block(blocks: &[SackBlock], ack: SeqNumber) -> Option<SackBlock> {
    let first = *blocks.first()?;
    if first.left >= first.right {
        return None;
    }
    if first.right <= ack {
        return Some(first);
    }
    let second = blocks.get(1)?;
    (second.left <= first.left && first.right <= second.right).then_some(first)
}

/// The window before a reduction, to restore if it was spurious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prior {
    /// Congestion window before the reduction, in bytes.
    pub cwnd: usize,
    /// Slow-start threshold before the reduction, in bytes.
    pub ssthresh: usize,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    prior: Prior,
    /// SND.UNA when the episode began (RFC 3708 / Linux `undo_marker`).
    marker: SeqNumber,
    /// HighData when it began: D-SACKs above it are not ours.
    high: SeqNumber,
    /// Retransmissions not (yet) shown spurious by a D-SACK.
    retrans: u32,
    /// Any retransmission was sent at all.
    retransmitted: bool,
    /// The first retransmission of the episode: when it was sent and the
    /// end of the segment, if it was the oldest outstanding one (RFC 3522
    /// §2 times the retransmission of SND.UNA only).
    first_retrans: Option<(Instant, Option<SeqNumber>)>,
    /// The timestamps verdict was already taken (RFC 3522: only the
    /// first ACK of the retransmitted segment counts).
    eifel_checked: bool,
    /// The episode began with an RTO.
    rto: bool,
}

/// Why an episode was found spurious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spurious {
    /// Every retransmission was D-SACKed (RFC 3708).
    Dsack(Prior),
    /// The ACK of the first retransmitted segment echoes a timestamp older
    /// than its retransmission (RFC 3522).
    Eifel(Prior),
}

/// Undo state for the latest window reduction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Undo {
    episode: Option<Episode>,
}

impl Undo {
    /// A window reduction began: remember the window before it.
    pub(crate) fn start(
        &mut self,
        prior: Prior,
        snd_una: SeqNumber,
        snd_max: SeqNumber,
        rto: bool,
    ) {
        // A further RTO within an RTO episode keeps the original prior.
        if let Some(e) = self.episode.as_mut() {
            if rto && e.rto {
                e.eifel_checked = false;
                return;
            }
        }
        self.episode = Some(Episode {
            prior,
            marker: snd_una,
            high: snd_max,
            retrans: 0,
            retransmitted: false,
            first_retrans: None,
            eifel_checked: false,
            rto,
        });
    }

    /// A retransmission of `[start, end)` went out; `snd_una` is SND.UNA.
    pub(crate) fn on_retransmit(
        &mut self,
        now: Instant,
        start: SeqNumber,
        end: SeqNumber,
        snd_una: SeqNumber,
    ) {
        if let Some(e) = self.episode.as_mut() {
            e.retrans = e.retrans.saturating_add(1);
            e.retransmitted = true;
            e.first_retrans
                .get_or_insert((now, (start == snd_una).then_some(end)));
        }
    }

    /// RFC 3708 §2: a D-SACK for data of this episode shows one
    /// retransmission was unnecessary.
    pub(crate) fn on_dsack(&mut self, block: SackBlock) {
        if let Some(e) = self.episode.as_mut() {
            if block.left >= e.marker && block.right <= e.high && e.retrans > 0 {
                e.retrans -= 1;
            }
        }
    }

    /// On each ACK: `ack` is SEG.ACK, `echoed` the send time its TSecr
    /// names (ms resolution). Ends the episode and returns the window to
    /// restore when it was spurious.
    pub(crate) fn check(&mut self, ack: SeqNumber, echoed: Option<Instant>) -> Option<Spurious> {
        let e = self.episode.as_mut()?;
        if !e.retransmitted {
            return None;
        }
        if let Some((first, Some(end))) = e.first_retrans.filter(|_| !e.eifel_checked) {
            if ack >= end {
                e.eifel_checked = true;
                // RFC 3522 §3: the first ACK of the retransmitted segment
                // echoes the original transmission.
                if echoed.is_some_and(|echo| echo < Instant::from_millis(first.total_millis())) {
                    let prior = e.prior;
                    self.episode = None;
                    return Some(Spurious::Eifel(prior));
                }
            }
        }
        if e.retrans == 0 {
            let prior = e.prior;
            self.episode = None;
            return Some(Spurious::Dsack(prior));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(l: u32, r: u32) -> SackBlock {
        SackBlock {
            left: SeqNumber(l),
            right: SeqNumber(r),
        }
    }

    #[test]
    fn rfc2883_dsack_forms() {
        // §4.1 example 1: below the cumulative ACK.
        assert_eq!(
            dsack_block(&[b(3000, 3500)], SeqNumber(4000)),
            Some(b(3000, 3500))
        );
        // §4.1 example 3: inside the second block.
        assert_eq!(
            dsack_block(&[b(5000, 5500), b(4500, 6000)], SeqNumber(4000)),
            Some(b(5000, 5500))
        );
        // Ordinary SACK blocks.
        assert_eq!(
            dsack_block(&[b(5000, 5500), b(6000, 7000)], SeqNumber(4000)),
            None
        );
        assert_eq!(dsack_block(&[b(5000, 5500)], SeqNumber(4000)), None);
        assert_eq!(dsack_block(&[], SeqNumber(4000)), None);
    }

    #[test]
    fn every_retransmission_dsacked_is_spurious() {
        let prior = Prior {
            cwnd: 20_000,
            ssthresh: 30_000,
        };
        let mut undo = Undo::default();
        undo.start(prior, SeqNumber(1000), SeqNumber(21_000), false);
        undo.on_retransmit(
            Instant::from_millis(100),
            SeqNumber(1000),
            SeqNumber(2000),
            SeqNumber(1000),
        );
        undo.on_retransmit(
            Instant::from_millis(101),
            SeqNumber(2000),
            SeqNumber(3000),
            SeqNumber(1000),
        );
        undo.on_dsack(b(1000, 2000));
        assert_eq!(undo.check(SeqNumber(1000), None), None);
        // Outside the episode: ignored.
        undo.on_dsack(b(30_000, 31_000));
        assert_eq!(undo.check(SeqNumber(1000), None), None);
        undo.on_dsack(b(2000, 3000));
        assert_eq!(
            undo.check(SeqNumber(1000), None),
            Some(Spurious::Dsack(prior))
        );
        assert_eq!(undo.check(SeqNumber(1000), None), None);
    }

    #[test]
    fn eifel_detects_an_ack_of_the_original() {
        let prior = Prior {
            cwnd: 20_000,
            ssthresh: 30_000,
        };
        let mut undo = Undo::default();
        undo.start(prior, SeqNumber(1000), SeqNumber(21_000), true);
        undo.on_retransmit(
            Instant::from_millis(300),
            SeqNumber(1000),
            SeqNumber(2000),
            SeqNumber(1000),
        );
        // The ACK echoes 250 ms: the original (sent before the RTO) arrived.
        assert_eq!(
            undo.check(SeqNumber(2000), Some(Instant::from_millis(250))),
            Some(Spurious::Eifel(prior))
        );
        // Echoing the retransmission: a real loss.
        undo.start(prior, SeqNumber(1000), SeqNumber(21_000), true);
        undo.on_retransmit(
            Instant::from_millis(300),
            SeqNumber(1000),
            SeqNumber(2000),
            SeqNumber(1000),
        );
        assert_eq!(
            undo.check(SeqNumber(2000), Some(Instant::from_millis(300))),
            None
        );
        assert_eq!(
            undo.check(SeqNumber(3000), Some(Instant::from_millis(250))),
            None
        );
    }
}
