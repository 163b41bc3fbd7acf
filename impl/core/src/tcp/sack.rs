//! Sender-side SACK scoreboard and the RFC 6675 loss-recovery helpers
//! (IsLost, NextSeg, SetPipe). All operations are O(number of SACKed ranges),
//! never O(segments in flight): windows hold thousands of segments.
//!
//! The scoreboard is a sorted list of disjoint, non-adjacent SACKed ranges.
//! IsLost(S) depends only on what is SACKed *above* S, so it is constant over
//! each un-SACKed hole: the hole-by-hole walk of `Scoreboard::holes`
//! evaluates it once per hole. The connection marks losses with RACK
//! (RFC 8985) and uses NextSeg rule 3 ([`Scoreboard::next_unsacked`]) only;
//! NextSeg rule 1 and SetPipe (`next_seg`, `pipe`) are kept for the tests,
//! which check the walk against a byte-by-byte model.

use crate::wire::{SackBlock, SeqNumber};

/// Most SACKed ranges remembered. A receiver reports at most 4 blocks per
/// ACK, but a hostile one could report a new disjoint range on every ACK;
/// beyond this many the highest ranges are forgotten. 1024 covers a
/// bottleneck queue overflow in slow start (hundreds of holes) while keeping
/// the O(ranges) operations cheap. Forgetting SACK
/// information is always safe (RFC 2018 §8: the sender may renege too): the
/// data is merely treated as not yet received.
pub(crate) const MAX_SACKED_RANGES: usize = 1024;

/// The ranges above SND.UNA the peer has SACKed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scoreboard {
    /// `[left, right)` ranges, ascending, disjoint and non-adjacent.
    ranges: Vec<(SeqNumber, SeqNumber)>,
}

/// One un-SACKed hole in `[snd_una, snd_nxt)` and what is SACKed above it.
#[derive(Debug, Clone, Copy)]
struct Hole {
    start: SeqNumber,
    end: SeqNumber,
    /// Discontiguous SACKed ranges above the hole.
    ranges_above: usize,
    /// SACKed bytes above the hole (IsLost's byte rule, for `next_seg`
    /// and `pipe`).
    #[cfg(test)]
    bytes_above: usize,
}

/// RFC 6675 §4 IsLost, given what is SACKed above the sequence number.
fn lost_given(ranges_above: usize, bytes_above: usize, smss: usize, dupthresh: usize) -> bool {
    ranges_above >= dupthresh || bytes_above > dupthresh.saturating_sub(1).saturating_mul(smss)
}

impl Scoreboard {
    /// An empty scoreboard.
    pub(crate) fn new() -> Scoreboard {
        Scoreboard::default()
    }

    /// Forget everything (RTO per RFC 6675 §5.1 / RFC 2018 §8, or new path).
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Apply an ACK: drop ranges at or below `snd_una`, merge `blocks`
    /// (ignoring any not inside (snd_una, snd_nxt]; RFC 2883 D-SACKs below
    /// snd_una are ignored too). Returns the bytes newly SACKed.
    ///
    /// A block is accepted when `snd_una <= left < right <= snd_nxt`; blocks
    /// reaching below `snd_una` (D-SACKs, RFC 2883 §4), past `snd_nxt`, or
    /// with `left >= right` are ignored whole.
    pub(crate) fn update(
        &mut self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        blocks: impl IntoIterator<Item = SackBlock>,
    ) -> usize {
        self.drop_acked(snd_una);
        let before = self.sacked_bytes();
        // Offsets from snd_una, so a block far outside the window cannot pass
        // the check by wrapping around the sequence space.
        let window = snd_nxt.diff(snd_una).max(0) as u32;
        for block in blocks {
            let left = block.left.0.wrapping_sub(snd_una.0);
            let right = block.right.0.wrapping_sub(snd_una.0);
            if left < right && right <= window {
                self.insert(block.left, block.right);
            }
        }
        if self.ranges.len() > MAX_SACKED_RANGES {
            self.ranges.truncate(MAX_SACKED_RANGES);
        }
        self.sacked_bytes().saturating_sub(before)
    }

    /// Whether nothing is SACKed.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the byte at `seq` is SACKed.
    #[cfg(test)]
    pub(crate) fn is_sacked(&self, seq: SeqNumber) -> bool {
        let idx = self.ranges.partition_point(|&(_, right)| right <= seq);
        self.ranges
            .get(idx)
            .is_some_and(|&(left, right)| seq.in_range(left, right))
    }

    /// Total SACKed bytes above SND.UNA.
    pub(crate) fn sacked_bytes(&self) -> usize {
        self.ranges.iter().map(|&(left, right)| right - left).sum()
    }

    /// HighACK+… : the highest SACKed sequence number (exclusive end), if any.
    pub(crate) fn highest_sacked(&self) -> Option<SeqNumber> {
        self.ranges.last().map(|&(_, right)| right)
    }

    /// The SACKed ranges, ascending (for logs and tests).
    #[cfg(test)]
    pub(crate) fn blocks(&self) -> impl Iterator<Item = SackBlock> + '_ {
        self.ranges
            .iter()
            .map(|&(left, right)| SackBlock { left, right })
    }

    /// Number of disjoint SACKed ranges held.
    #[cfg(test)]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// RFC 6675 §4 IsLost(seq): at least `dupthresh` discontiguous SACKed
    /// ranges above `seq`, or more than (dupthresh-1)*smss SACKed bytes above it.
    pub(crate) fn is_lost(&self, seq: SeqNumber, smss: usize, dupthresh: usize) -> bool {
        let first_above = seq + 1;
        let mut ranges_above = 0;
        let mut bytes_above = 0;
        // Ascending order means every lower range is also not above `seq`
        // once one is not.
        for &(left, right) in self.ranges.iter().rev() {
            if right <= first_above {
                break;
            }
            ranges_above += 1;
            bytes_above += right - left.max(first_above);
        }
        lost_given(ranges_above, bytes_above, smss, dupthresh)
    }

    /// RFC 6675 §4 NextSeg() rules 1 and 3 for retransmissions: the first
    /// un-SACKed range at or above `high_rxt` (and at or above `snd_una`)
    /// that IsLost, limited to `smss` bytes and to the hole; `None` when
    /// nothing qualifies (the caller then sends new data, rule 2, or a
    /// rescue retransmission, rule 4).
    ///
    /// `high_rxt` is exclusive: the first byte not yet retransmitted in this
    /// recovery episode. Only holes below the highest SACKed byte qualify
    /// (RFC 6675 §4 rule 1.b). [`Scoreboard::next_unsacked`] is rule 3.
    #[cfg(test)]
    pub(crate) fn next_seg(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        smss: usize,
        dupthresh: usize,
    ) -> Option<(SeqNumber, usize)> {
        let from = snd_una.max(high_rxt);
        self.holes(snd_una, snd_nxt).find_map(|hole| {
            // RFC 6675 §4 NextSeg rule 1.a (above HighRxt), 1.b (below the
            // highest SACK), 1.c (IsLost).
            let qualifies = hole.ranges_above > 0
                && lost_given(hole.ranges_above, hole.bytes_above, smss, dupthresh);
            Self::clip_to(hole, from, smss).filter(|_| qualifies)
        })
    }

    /// RFC 6675 §4 NextSeg() rule 3: the first un-SACKed byte at or above
    /// `high_rxt` (and `snd_una`) below the highest SACKed byte, whether or
    /// not IsLost holds, limited to `smss` bytes and to its hole. The caller
    /// uses it only when rules 1 and 2 produced nothing.
    pub(crate) fn next_unsacked(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        smss: usize,
    ) -> Option<(SeqNumber, usize)> {
        let from = snd_una.max(high_rxt);
        self.holes(snd_una, snd_nxt)
            .filter(|hole| hole.ranges_above > 0)
            .find_map(|hole| Self::clip_to(hole, from, smss))
    }

    /// RFC 6675 §4 SetPipe(): bytes in (snd_una, snd_nxt) not SACKed and not
    /// lost, plus bytes below `high_rxt` that were retransmitted.
    #[cfg(test)]
    pub(crate) fn pipe(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        smss: usize,
        dupthresh: usize,
    ) -> usize {
        let mut pipe = 0;
        for hole in self.holes(snd_una, snd_nxt) {
            // RFC 6675 §4 SetPipe (a): not lost, so still in the network.
            if !lost_given(hole.ranges_above, hole.bytes_above, smss, dupthresh) {
                pipe += hole.end - hole.start;
            }
            // RFC 6675 §4 SetPipe (b): retransmitted (S1 <= HighRxt, with
            // `high_rxt` exclusive), so the retransmission is in the network.
            if high_rxt > hole.start {
                pipe += high_rxt.min(hole.end) - hole.start;
            }
        }
        pipe
    }

    /// The part of `hole` at or above `from`, at most `smss` bytes.
    fn clip_to(hole: Hole, from: SeqNumber, smss: usize) -> Option<(SeqNumber, usize)> {
        let start = hole.start.max(from);
        (start < hole.end).then(|| (start, (hole.end - start).min(smss.max(1))))
    }

    /// Un-SACKed holes of `[snd_una, snd_nxt)`, ascending, each with the
    /// SACKed ranges and bytes above it.
    fn holes(&self, snd_una: SeqNumber, snd_nxt: SeqNumber) -> impl Iterator<Item = Hole> + '_ {
        // Ranges at or below snd_una (possible when the caller's snd_una is
        // newer than the last update) are not above any hole.
        let first = self.ranges.partition_point(|&(_, right)| right <= snd_una);
        let live = &self.ranges[first..];
        let mut ranges_above = live.len();
        #[cfg(test)]
        let mut bytes_above: usize = live
            .iter()
            .map(|&(left, right)| right - left.max(snd_una))
            .sum();
        let mut cursor = snd_una;
        let mut next = 0;
        let mut done = snd_una >= snd_nxt;
        core::iter::from_fn(move || {
            while !done {
                let Some(&(left, right)) = live.get(next) else {
                    // The hole above the highest SACKed byte.
                    done = true;
                    return (cursor < snd_nxt).then_some(Hole {
                        start: cursor,
                        end: snd_nxt,
                        ranges_above: 0,
                        #[cfg(test)]
                        bytes_above: 0,
                    });
                };
                next += 1;
                let left = left.max(snd_una);
                let hole = Hole {
                    start: cursor,
                    end: left.min(snd_nxt),
                    ranges_above,
                    #[cfg(test)]
                    bytes_above,
                };
                ranges_above -= 1;
                #[cfg(test)]
                {
                    bytes_above -= right - left;
                }
                cursor = right;
                if cursor >= snd_nxt {
                    done = true;
                }
                if hole.start < hole.end {
                    return Some(hole);
                }
            }
            None
        })
    }

    /// Drop everything cumulatively acknowledged.
    fn drop_acked(&mut self, snd_una: SeqNumber) {
        let first = self.ranges.partition_point(|&(_, right)| right <= snd_una);
        self.ranges.drain(..first);
        if let Some(range) = self.ranges.first_mut() {
            range.0 = range.0.max(snd_una);
        }
    }

    /// Merge `[left, right)` into the sorted list, joining overlapping and
    /// adjacent ranges.
    fn insert(&mut self, left: SeqNumber, right: SeqNumber) {
        let start = self.ranges.partition_point(|&(_, r)| r < left);
        let mut end = start;
        let (mut left, mut right) = (left, right);
        while let Some(&(l, r)) = self.ranges.get(end) {
            if l > right {
                break;
            }
            left = left.min(l);
            right = right.max(r);
            end += 1;
        }
        self.ranges.splice(start..end, [(left, right)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::{Random, SplitMix64};

    const SMSS: usize = 1000;
    const DUPTHRESH: usize = 3;

    fn s(v: u32) -> SeqNumber {
        SeqNumber(v)
    }

    fn b(left: u32, right: u32) -> SackBlock {
        SackBlock {
            left: SeqNumber(left),
            right: SeqNumber(right),
        }
    }

    fn ranges(sb: &Scoreboard) -> Vec<(u32, u32)> {
        sb.blocks().map(|b| (b.left.0, b.right.0)).collect()
    }

    /// Ten 1000-byte segments 1000..11000 in flight.
    fn board(blocks: &[SackBlock]) -> Scoreboard {
        let mut sb = Scoreboard::new();
        sb.update(s(1000), s(11_000), blocks.iter().copied());
        sb
    }

    #[test]
    fn rfc6675_loss_by_sacked_bytes() {
        // Segment 1000..2000 is lost; the following segments are SACKed one
        // by one, as the three duplicate ACKs of RFC 6675 §5 report them.
        let mut sb = Scoreboard::new();
        assert_eq!(sb.update(s(1000), s(11_000), [b(2000, 3000)]), 1000);
        assert!(!sb.is_lost(s(1000), SMSS, DUPTHRESH));
        assert_eq!(sb.update(s(1000), s(11_000), [b(2000, 4000)]), 1000);
        // 2000 bytes is not *more than* (3-1)*1000.
        assert!(!sb.is_lost(s(1000), SMSS, DUPTHRESH));
        assert_eq!(sb.update(s(1000), s(11_000), [b(2000, 5000)]), 1000);
        assert!(sb.is_lost(s(1000), SMSS, DUPTHRESH));
        assert!(sb.is_lost(s(1999), SMSS, DUPTHRESH));
        // Inside the SACKed range fewer bytes lie above.
        assert!(!sb.is_lost(s(3000), SMSS, DUPTHRESH));
        assert!(!sb.is_lost(s(6000), SMSS, DUPTHRESH));
        assert_eq!(ranges(&sb), [(2000, 5000)]);
        assert_eq!(sb.sacked_bytes(), 3000);
        assert_eq!(sb.highest_sacked(), Some(s(5000)));
    }

    #[test]
    fn rfc6675_loss_by_discontiguous_ranges() {
        // Three 100-byte ranges: only 300 bytes, but three discontiguous
        // SACKed sequences above 1000.
        let sb = board(&[b(3000, 3100), b(5000, 5100), b(7000, 7100)]);
        assert!(sb.is_lost(s(1000), SMSS, DUPTHRESH));
        assert!(sb.is_lost(s(2999), SMSS, DUPTHRESH));
        // Above 3100 only two ranges, 200 bytes.
        assert!(!sb.is_lost(s(4000), SMSS, DUPTHRESH));
        // Two full segments, two ranges: neither criterion holds.
        let sb = board(&[b(3000, 4000), b(5000, 6000)]);
        assert!(!sb.is_lost(s(1000), SMSS, DUPTHRESH));
        // A lower dupthresh changes the verdict: 2000 > 1*1000.
        assert!(sb.is_lost(s(1000), SMSS, 2));
    }

    #[test]
    fn pipe_without_and_with_retransmissions() {
        // SACKed 2000..5000: hole 1000..2000 is lost, 5000..11000 is not.
        let sb = board(&[b(2000, 5000)]);
        assert_eq!(sb.pipe(s(1000), s(11_000), s(1000), SMSS, DUPTHRESH), 6000);
        // 1000..2000 retransmitted: it counts once more (SetPipe (b)).
        assert_eq!(sb.pipe(s(1000), s(11_000), s(2000), SMSS, DUPTHRESH), 7000);
        // A stale HighRxt below snd_una counts nothing.
        assert_eq!(sb.pipe(s(1000), s(11_000), s(500), SMSS, DUPTHRESH), 6000);
        // Retransmitted bytes that were not lost count twice, SACKed never.
        assert_eq!(sb.pipe(s(1000), s(11_000), s(6000), SMSS, DUPTHRESH), 8000);
        // Nothing SACKed: everything is in flight.
        let empty = Scoreboard::new();
        assert_eq!(
            empty.pipe(s(1000), s(11_000), s(1000), SMSS, DUPTHRESH),
            10_000
        );
        assert_eq!(empty.pipe(s(1000), s(1000), s(1000), SMSS, DUPTHRESH), 0);
    }

    #[test]
    fn pipe_and_next_seg_over_several_holes() {
        // Holes: 1000..2000 (4 ranges above: lost), 3000..4000 (3 above:
        // lost), 5000..6000 (2 ranges, 2000 bytes: not lost), 7000..8000
        // (1 above), 9000..11000 (top hole, nothing above).
        let sb = board(&[b(2000, 3000), b(4000, 5000), b(6000, 7000), b(8000, 9000)]);
        assert_eq!(sb.pipe(s(1000), s(11_000), s(1000), SMSS, DUPTHRESH), 4000);
        assert_eq!(sb.pipe(s(1000), s(11_000), s(3500), SMSS, DUPTHRESH), 5500);
        let next = |high_rxt, smss| sb.next_seg(s(1000), s(11_000), s(high_rxt), smss, DUPTHRESH);
        assert_eq!(next(1000, SMSS), Some((s(1000), 1000)));
        assert_eq!(next(1000, 400), Some((s(1000), 400)));
        // Limited by the hole, not by SMSS.
        assert_eq!(next(1500, SMSS), Some((s(1500), 500)));
        assert_eq!(next(2000, SMSS), Some((s(3000), 1000)));
        assert_eq!(next(3700, SMSS), Some((s(3700), 300)));
        // 5000..6000 and 7000..8000 are not lost, 9000.. is above every SACK.
        assert_eq!(next(4000, SMSS), None);
        // Rule 3 ignores IsLost but still stops at the highest SACK.
        let rule3 = |high_rxt| sb.next_unsacked(s(1000), s(11_000), s(high_rxt), SMSS);
        assert_eq!(rule3(4000), Some((s(5000), 1000)));
        assert_eq!(rule3(7200), Some((s(7200), 800)));
        assert_eq!(rule3(8000), None);
    }

    #[test]
    fn next_seg_limits_to_smss_in_a_large_hole() {
        let sb = board(&[b(5000, 8000)]);
        let next = |high_rxt| sb.next_seg(s(1000), s(11_000), s(high_rxt), SMSS, DUPTHRESH);
        assert_eq!(next(1000), Some((s(1000), 1000)));
        assert_eq!(next(4000), Some((s(4000), 1000)));
        assert_eq!(next(4800), Some((s(4800), 200)));
        assert_eq!(next(5000), None);
        // snd_una above high_rxt wins.
        assert_eq!(
            sb.next_seg(s(2500), s(11_000), s(1000), SMSS, DUPTHRESH),
            Some((s(2500), 1000))
        );
    }

    #[test]
    fn blocks_merge_when_overlapping_or_adjacent() {
        let mut sb = Scoreboard::new();
        assert_eq!(
            sb.update(s(0), s(10_000), [b(3000, 4000), b(1000, 2000)]),
            2000
        );
        assert_eq!(ranges(&sb), [(1000, 2000), (3000, 4000)]);
        // Adjacent on both sides: one range.
        assert_eq!(sb.update(s(0), s(10_000), [b(2000, 3000)]), 1000);
        assert_eq!(ranges(&sb), [(1000, 4000)]);
        // Already known: nothing new.
        assert_eq!(sb.update(s(0), s(10_000), [b(1500, 3500)]), 0);
        // Overlapping several ranges at once.
        sb.update(s(0), s(10_000), [b(5000, 6000), b(7000, 8000)]);
        assert_eq!(sb.update(s(0), s(10_000), [b(3500, 7500)]), 2000);
        assert_eq!(ranges(&sb), [(1000, 8000)]);
        assert!(sb.is_sacked(s(1000)));
        assert!(sb.is_sacked(s(7999)));
        assert!(!sb.is_sacked(s(8000)));
        assert!(!sb.is_sacked(s(999)));
    }

    #[test]
    fn cumulative_ack_drops_and_trims_ranges() {
        let mut sb = board(&[b(2000, 3000), b(4000, 6000)]);
        assert_eq!(sb.update(s(3000), s(11_000), []), 0);
        assert_eq!(ranges(&sb), [(4000, 6000)]);
        // An ACK into the middle of a SACKed range (a receiver that reneged
        // and re-received) trims it.
        sb.update(s(5000), s(11_000), []);
        assert_eq!(ranges(&sb), [(5000, 6000)]);
        sb.update(s(6000), s(11_000), []);
        assert!(sb.is_empty());
        assert_eq!(sb.highest_sacked(), None);
        assert_eq!(sb.sacked_bytes(), 0);
    }

    #[test]
    fn dsack_out_of_window_and_malformed_blocks_are_ignored() {
        let mut sb = Scoreboard::new();
        let newly = sb.update(
            s(5000),
            s(9000),
            [
                b(1000, 2000),               // RFC 2883 D-SACK below snd_una
                b(4000, 6000),               // straddles snd_una
                b(8000, 9500),               // past snd_nxt
                b(7000, 7000),               // empty
                b(7500, 6500),               // reversed
                b(5000, 5500),               // fine: starts at snd_una
                b(8500, 9000),               // fine: ends at snd_nxt
                b(0x8000_1388, 0x8000_1400), // half the sequence space away
            ],
        );
        assert_eq!(newly, 1000);
        assert_eq!(ranges(&sb), [(5000, 5500), (8500, 9000)]);
        // A block that wraps past snd_nxt back to a small offset: its left
        // edge is far above the window even though `right` compares low.
        let mut sb = Scoreboard::new();
        let una = 1000u32;
        let nxt = 1100u32;
        let left = una.wrapping_add(0x7FFF_FFFF);
        let right = nxt.wrapping_sub(0x7FFF_FFFF);
        assert!(SeqNumber(left) < SeqNumber(right));
        assert_eq!(sb.update(s(una), s(nxt), [b(left, right)]), 0);
        assert!(sb.is_empty());
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let una = s(u32::MAX - 1500);
        let nxt = una + 6000;
        let mut sb = Scoreboard::new();
        let l = una + 1000;
        let r = una + 4000; // crosses zero
        assert_eq!(sb.update(una, nxt, [SackBlock { left: l, right: r }]), 3000);
        assert!(sb.is_sacked(SeqNumber(0)));
        assert!(sb.is_lost(una, SMSS, DUPTHRESH));
        assert_eq!(
            sb.next_seg(una, nxt, una, SMSS, DUPTHRESH),
            Some((una, 1000))
        );
        assert_eq!(sb.pipe(una, nxt, una, SMSS, DUPTHRESH), 2000);
        sb.update(una + 2000, nxt, []);
        assert_eq!(sb.sacked_bytes(), 2000);
        assert_eq!(sb.highest_sacked(), Some(r));
    }

    #[test]
    fn range_count_is_capped_keeping_the_lowest() {
        let mut sb = Scoreboard::new();
        let n = MAX_SACKED_RANGES as u32 + 36;
        let snd_nxt = s(10_000 + (n + 10) * 200);
        for i in 0..n {
            let left = 10_000 + i * 200;
            sb.update(s(1000), snd_nxt, [b(left, left + 100)]);
        }
        assert_eq!(sb.range_count(), MAX_SACKED_RANGES);
        assert_eq!(sb.blocks().next(), Some(b(10_000, 10_100)));
        let top = 10_000 + (MAX_SACKED_RANGES as u32 - 1) * 200;
        assert_eq!(sb.highest_sacked(), Some(s(top + 100)));
        // A block above all of them is accepted and then forgotten.
        let above = 10_000 + (n + 5) * 200;
        assert_eq!(sb.update(s(1000), snd_nxt, [b(above, above + 100)]), 0);
        assert_eq!(sb.range_count(), MAX_SACKED_RANGES);
        sb.clear();
        assert!(sb.is_empty());
    }

    /// Per-byte reference model of the same semantics.
    struct Naive {
        base: u32,
        /// sacked[i] is byte base+i.
        sacked: Vec<bool>,
    }

    impl Naive {
        fn off(&self, seq: SeqNumber) -> usize {
            seq.0.wrapping_sub(self.base) as usize
        }

        fn update(&mut self, una: SeqNumber, nxt: SeqNumber, blocks: &[SackBlock]) -> usize {
            for i in 0..self.off(una).min(self.sacked.len()) {
                self.sacked[i] = false;
            }
            let before = self.sacked.iter().filter(|&&x| x).count();
            for blk in blocks {
                let (l, r) = (self.off(blk.left), self.off(blk.right));
                if self.off(una) <= l && l < r && r <= self.off(nxt) {
                    for x in &mut self.sacked[l..r] {
                        *x = true;
                    }
                }
            }
            self.sacked.iter().filter(|&&x| x).count() - before
        }

        fn is_lost(&self, off: usize, smss: usize, dupthresh: usize) -> bool {
            let mut bytes = 0;
            let mut runs = 0;
            for i in off + 1..self.sacked.len() {
                if self.sacked[i] {
                    bytes += 1;
                    if i == off + 1 || !self.sacked[i - 1] {
                        runs += 1;
                    }
                }
            }
            runs >= dupthresh || bytes > (dupthresh.saturating_sub(1)) * smss
        }

        fn highest(&self) -> Option<usize> {
            self.sacked.iter().rposition(|&x| x).map(|i| i + 1)
        }

        fn pipe(&self, una: usize, nxt: usize, high_rxt: usize, smss: usize, dt: usize) -> usize {
            (una..nxt)
                .filter(|&i| !self.sacked[i])
                .map(|i| usize::from(!self.is_lost(i, smss, dt)) + usize::from(i < high_rxt))
                .sum()
        }

        fn next_seg(
            &self,
            una: usize,
            nxt: usize,
            high_rxt: usize,
            smss: usize,
            dt: usize,
            need_lost: bool,
        ) -> Option<(usize, usize)> {
            let highest = self.highest()?;
            let start = (una.max(high_rxt)..nxt.min(highest))
                .find(|&i| !self.sacked[i] && (!need_lost || self.is_lost(i, smss, dt)))?;
            let len = (start..nxt)
                .take_while(|&i| !self.sacked[i])
                .count()
                .min(smss.max(1));
            Some((start, len))
        }
    }

    #[test]
    fn matches_a_per_byte_reference_on_random_scoreboards() {
        let mut rng = SplitMix64::new(0x5ac6);
        for case in 0..3000 {
            // Some cases sit across the sequence-number wrap.
            let base = if case % 3 == 0 {
                u32::MAX - (rng.next_u32() % 100)
            } else {
                rng.next_u32()
            };
            let window = 1 + (rng.next_u64() % 100) as usize;
            let smss = 1 + (rng.next_u64() % 12) as usize;
            let dupthresh = (rng.next_u64() % 5) as usize;
            let mut naive = Naive {
                base,
                sacked: vec![false; window + 1],
            };
            let mut sb = Scoreboard::new();
            let mut una = 0usize;
            let nxt = window;
            let seq = |off: usize| SeqNumber(base.wrapping_add(off as u32));
            for _round in 0..6 {
                if rng.next_f64() < 1.0 / 3.0 {
                    una = (una + (rng.next_u64() % 10) as usize).min(nxt);
                }
                let blocks: Vec<SackBlock> = (0..rng.next_u64() % 5)
                    .map(|_| {
                        // Edges a little outside the window exercise the checks.
                        let l = (rng.next_u64() % (window as u64 + 6)) as i64 - 3;
                        let len = (rng.next_u64() % 12) as i64 - 1;
                        SackBlock {
                            left: SeqNumber(base.wrapping_add(l as u32)),
                            right: SeqNumber(base.wrapping_add((l + len) as u32)),
                        }
                    })
                    .collect();
                let got = sb.update(seq(una), seq(nxt), blocks.iter().copied());
                let want = naive.update(seq(una), seq(nxt), &blocks);
                assert_eq!(got, want, "case {case}: newly sacked for {blocks:?}");
                assert_eq!(
                    sb.sacked_bytes(),
                    naive.sacked.iter().filter(|&&x| x).count()
                );
                assert_eq!(sb.highest_sacked(), naive.highest().map(seq), "case {case}");
                for off in una..nxt {
                    assert_eq!(
                        sb.is_sacked(seq(off)),
                        naive.sacked[off],
                        "case {case} off {off}"
                    );
                    assert_eq!(
                        sb.is_lost(seq(off), smss, dupthresh),
                        naive.is_lost(off, smss, dupthresh),
                        "case {case}: is_lost({off}) ranges {:?}",
                        ranges(&sb)
                    );
                }
                for high_rxt in [0, una, una + 1, una + 3, usize::midpoint(una, nxt), nxt] {
                    let high = seq(high_rxt);
                    assert_eq!(
                        sb.pipe(seq(una), seq(nxt), high, smss, dupthresh),
                        naive.pipe(una, nxt, high_rxt, smss, dupthresh),
                        "case {case}: pipe high_rxt {high_rxt} ranges {:?}",
                        ranges(&sb)
                    );
                    let to_off = |r: Option<(SeqNumber, usize)>| {
                        r.map(|(s, len)| (s.0.wrapping_sub(base) as usize, len))
                    };
                    assert_eq!(
                        to_off(sb.next_seg(seq(una), seq(nxt), high, smss, dupthresh)),
                        naive.next_seg(una, nxt, high_rxt, smss, dupthresh, true),
                        "case {case}: next_seg high_rxt {high_rxt} ranges {:?}",
                        ranges(&sb)
                    );
                    assert_eq!(
                        to_off(sb.next_unsacked(seq(una), seq(nxt), high, smss)),
                        naive.next_seg(una, nxt, high_rxt, smss, dupthresh, false),
                        "case {case}: next_unsacked high_rxt {high_rxt}"
                    );
                }
            }
        }
    }
}
