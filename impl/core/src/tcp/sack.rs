//! Sender-side SACK scoreboard and the RFC 6675 loss-recovery helpers
//! (IsLost, NextSeg, SetPipe). All operations are O(number of SACKed ranges),
//! never O(segments in flight): windows hold thousands of segments.

use crate::wire::{SackBlock, SeqNumber};

/// The ranges above SND.UNA the peer has SACKed.
#[derive(Debug, Clone, Default)]
pub struct Scoreboard {
    _private: (),
}

impl Scoreboard {
    pub fn new() -> Scoreboard {
        todo!("building-blocks helper")
    }

    /// Forget everything (RTO per RFC 6675 §5.1 / RFC 2018 §8, or new path).
    pub fn clear(&mut self) {
        todo!()
    }

    /// Apply an ACK: drop ranges at or below `snd_una`, merge `blocks`
    /// (ignoring any not inside (snd_una, snd_nxt]; RFC 2883 D-SACKs below
    /// snd_una are ignored too). Returns the bytes newly SACKed.
    pub fn update(
        &mut self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        blocks: impl IntoIterator<Item = SackBlock>,
    ) -> usize {
        let _ = (snd_una, snd_nxt, blocks.into_iter());
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        todo!()
    }

    pub fn is_sacked(&self, seq: SeqNumber) -> bool {
        let _ = seq;
        todo!()
    }

    /// Total SACKed bytes above SND.UNA.
    pub fn sacked_bytes(&self) -> usize {
        todo!()
    }

    /// HighACK+… : the highest SACKed sequence number (exclusive end), if any.
    pub fn highest_sacked(&self) -> Option<SeqNumber> {
        todo!()
    }

    /// RFC 6675 §4 IsLost(seq): at least `dupthresh` discontiguous SACKed
    /// ranges above `seq`, or more than (dupthresh-1)*smss SACKed bytes above it.
    pub fn is_lost(&self, seq: SeqNumber, smss: usize, dupthresh: usize) -> bool {
        let _ = (seq, smss, dupthresh);
        todo!()
    }

    /// RFC 6675 §4 NextSeg() rules 1 and 3 for retransmissions: the first
    /// un-SACKed range at or above `high_rxt` (and at or above `snd_una`)
    /// that IsLost, limited to `smss` bytes and to the hole; `None` when
    /// nothing qualifies (the caller then sends new data, rule 2, or a
    /// rescue retransmission, rule 4).
    pub fn next_seg(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        smss: usize,
        dupthresh: usize,
    ) -> Option<(SeqNumber, usize)> {
        let _ = (snd_una, snd_nxt, high_rxt, smss, dupthresh);
        todo!()
    }

    /// RFC 6675 §4 SetPipe(): bytes in (snd_una, snd_nxt) not SACKed and not
    /// lost, plus bytes below `high_rxt` that were retransmitted.
    pub fn pipe(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        smss: usize,
        dupthresh: usize,
    ) -> usize {
        let _ = (snd_una, snd_nxt, high_rxt, smss, dupthresh);
        todo!()
    }
}
