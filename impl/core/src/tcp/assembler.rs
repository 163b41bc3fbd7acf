//! Out-of-order receive ranges, and the SACK blocks that describe them.
//!
//! The bytes themselves live in the receive ring at their final offsets; this
//! only records which sequence ranges above RCV.NXT are present. Ranges are
//! kept sorted and disjoint (adjacent ones merge), and each carries the time
//! it was last extended so SACK blocks can be reported most recent first
//! (RFC 2018 §4).

use crate::wire::{SackBlock, SeqNumber};

/// Bounding the number of holes bounds the per-segment cost (a hostile
/// sender could otherwise make every other byte a hole); a segment that
/// would create more ranges is dropped and the sender retransmits it later.
/// A drop-tail queue overflowing at the end of slow start loses every other
/// segment of a window, so a 4 MiB window needs well over a thousand.
pub(crate) const MAX_RANGES: usize = 2048;

#[derive(Debug, Clone, Copy)]
struct Range {
    start: SeqNumber,
    end: SeqNumber,
    stamp: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Assembler {
    ranges: Vec<Range>,
    clock: u64,
}

impl Assembler {
    pub(crate) fn new() -> Assembler {
        Assembler::default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Records `[start, end)`. Returns false (and records nothing) when the
    /// range would exceed [`MAX_RANGES`].
    pub(crate) fn insert(&mut self, start: SeqNumber, end: SeqNumber) -> bool {
        if start >= end {
            return true;
        }
        self.clock += 1;
        // First range that ends at or after `start` (could merge).
        let first = self.ranges.partition_point(|r| r.end < start);
        // One past the last range that starts at or before `end` (could merge).
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].start <= end {
            last += 1;
        }
        if first == last {
            if self.ranges.len() >= MAX_RANGES {
                return false;
            }
            self.ranges.insert(
                first,
                Range {
                    start,
                    end,
                    stamp: self.clock,
                },
            );
            return true;
        }
        let merged = Range {
            start: start.min(self.ranges[first].start),
            end: end.max(self.ranges[last - 1].end),
            stamp: self.clock,
        };
        self.ranges[first] = merged;
        self.ranges.drain(first + 1..last);
        true
    }

    /// RCV.NXT moved to `rcv_nxt`: removes ranges it reached and returns the
    /// new RCV.NXT extended over any range that is now contiguous.
    pub(crate) fn advance(&mut self, mut rcv_nxt: SeqNumber) -> SeqNumber {
        let mut n = 0;
        for r in &self.ranges {
            if r.start > rcv_nxt {
                break;
            }
            rcv_nxt = rcv_nxt.max(r.end);
            n += 1;
        }
        self.ranges.drain(..n);
        rcv_nxt
    }

    /// Fills `out` with up to `max` blocks, the most recently extended range
    /// first (RFC 2018 §4: the first block reports the newest segment; the
    /// rest repeat recent blocks). Returns how many were written.
    pub(crate) fn sack_blocks(&self, out: &mut [Option<SackBlock>; 4], max: usize) -> usize {
        *out = [None; 4];
        let max = max.min(4);
        // One pass keeping the `max` newest, newest first (stamps are
        // unique).
        let mut top: [Option<&Range>; 4] = [None; 4];
        for r in &self.ranges {
            let mut candidate = Some(r);
            for slot in top.iter_mut().take(max) {
                match (*slot, candidate) {
                    (None, _) => {
                        *slot = candidate;
                        break;
                    }
                    (Some(held), Some(c)) if c.stamp > held.stamp => {
                        *slot = Some(c);
                        candidate = Some(held);
                    }
                    _ => {}
                }
            }
        }
        let mut written = 0;
        for r in top.iter().take(max).flatten() {
            out[written] = Some(SackBlock {
                left: r.start,
                right: r.end,
            });
            written += 1;
        }
        written
    }

    #[cfg(test)]
    fn spans(&self) -> Vec<(u32, u32)> {
        self.ranges.iter().map(|r| (r.start.0, r.end.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn merges_and_advances() {
        let mut a = Assembler::new();
        assert!(a.insert(s(200), s(300)));
        assert!(a.insert(s(400), s(500)));
        assert!(a.insert(s(300), s(350)));
        assert_eq!(a.spans(), vec![(200, 350), (400, 500)]);
        assert!(a.insert(s(340), s(420)));
        assert_eq!(a.spans(), vec![(200, 500)]);
        assert_eq!(a.advance(s(100)), s(100));
        assert_eq!(a.advance(s(200)), s(500));
        assert!(a.is_empty());
    }

    #[test]
    fn sack_blocks_pick_the_newest_of_many() {
        let mut a = Assembler::new();
        // Insert out of order so recency differs from position.
        for i in [5u32, 1, 9, 3, 7, 0, 8, 2, 6, 4] {
            assert!(a.insert(s(i * 100 + 1000), s(i * 100 + 1050)));
        }
        let mut out = [None; 4];
        assert_eq!(a.sack_blocks(&mut out, 4), 4);
        let lefts: Vec<u32> = out.iter().flatten().map(|b| b.left.0).collect();
        assert_eq!(lefts, [1400, 1600, 1200, 1800]);
        assert_eq!(a.sack_blocks(&mut out, 2), 2);
        assert_eq!(out[0].unwrap().left.0, 1400);
        assert_eq!(out[1].unwrap().left.0, 1600);
        assert!(out[2].is_none());
    }

    #[test]
    fn sack_blocks_most_recent_first_across_wrap() {
        let mut a = Assembler::new();
        let base = s(u32::MAX - 1000);
        a.insert(base + 2000, base + 3000);
        a.insert(base + 4000, base + 5000);
        a.insert(base + 6000, base + 7000);
        a.insert(base + 2000, base + 2500); // touches the oldest: now newest
        let mut out = [None; 4];
        assert_eq!(a.sack_blocks(&mut out, 3), 3);
        assert_eq!(out[0].unwrap().left, base + 2000);
        assert_eq!(out[1].unwrap().left, base + 6000);
        assert_eq!(out[2].unwrap().left, base + 4000);
        assert!(out[3].is_none());
    }

    #[test]
    fn refuses_more_than_max_ranges() {
        let mut a = Assembler::new();
        for i in 0..MAX_RANGES as u32 {
            assert!(a.insert(s(i * 100 + 10), s(i * 100 + 20)));
        }
        assert!(!a.insert(s(10_000_000), s(10_000_010)));
        // Extending an existing range is still fine.
        assert!(a.insert(s(15), s(30)));
    }
}
