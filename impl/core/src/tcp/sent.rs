//! The sender's transmission log: one record per segment in flight, from
//! SND.UNA to the highest byte sent, with when it was (re)sent and whether it
//! is SACKed, presumed lost or retransmitted.
//!
//! Read first: RFC 8985 §5.2 (the per-segment state RACK needs), RFC 6675
//! §4 SetPipe (what counts as in flight), and the delivery-rate sampling
//! of draft-cheng-iccrg-delivery-rate-estimation §3 (the snapshot every
//! record keeps for BBR). Linux keeps the same flags on its retransmission
//! queue (`TCPCB_SACKED_ACKED`, `TCPCB_LOST`, `TCPCB_SACKED_RETRANS`).
//!
//! In-flight bytes follow Linux's `tcp_packets_in_flight`: everything
//! outstanding, less what is SACKed, less what is marked lost, plus lost
//! data whose retransmission is itself still outstanding.
//!
//! Cost: a window at 40 ms and a few Gbit/s is thousands of records, and
//! the sender asks about them on every ACK and every segment it sends.
//! Counters answer the per-segment questions (in flight, waiting to be
//! resent); RACK's question, which records sent before the newest
//! delivered one are still undelivered, is answered from the transmissions
//! in the order they were made (Linux's `tsorted_sent_queue`), which the
//! walk prunes as it goes, so an ACK costs about what it delivered and
//! what is still missing, not the whole window. Scanning every record on
//! every ACK, at 40 ms and 1 % loss each way in the lab, took 12.6 % of the
//! CPU and left ACKs waiting long enough to count 4 times as many
//! retransmissions (RACK's timer is `now` when the ACK is read).

use std::collections::VecDeque;

use crate::time::Instant;
use crate::wire::SeqNumber;

/// The delivery-rate snapshot taken when a segment is sent
/// (draft-cheng-iccrg-delivery-rate-estimation §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSnapshot {
    /// Bytes delivered (acked or SACKed) when the segment was sent.
    pub delivered: u64,
    /// When `delivered` was last increased.
    pub delivered_time: Instant,
    /// Send time of the first segment of the flight this one belongs to.
    pub first_sent_time: Instant,
    /// The sender had nothing more to send (the sample may understate).
    pub app_limited: bool,
    /// C.lost when the segment was sent (draft-ietf-ccwg-bbr §4.1.2.1
    /// P.lost): bytes marked lost over the connection's life.
    pub lost: u64,
    /// C.inflight just after the segment was sent, itself included
    /// (draft-ietf-ccwg-bbr §4.1.2.1 P.tx_in_flight).
    pub tx_in_flight: usize,
}

/// One segment as it was last sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// First sequence number of the segment.
    pub start: SeqNumber,
    /// Exclusive; a FIN counts as one byte.
    pub end: SeqNumber,
    /// Time of the last (re)transmission (RFC 8985 `Segment.xmit_ts`).
    pub xmit: Instant,
    /// Ever retransmitted (RFC 8985 §6.2 step 2 ambiguity rule).
    pub retransmitted: bool,
    /// Presumed lost (by RACK, or all outstanding data after an RTO).
    pub lost: bool,
    /// A retransmission of this segment is outstanding.
    pub retrans: bool,
    /// SACKed by the receiver (RFC 2018).
    pub sacked: bool,
    /// Last sent on a path the connection has since left (PROTOCOL.md §7):
    /// its delivery says nothing about the current path.
    pub stale: bool,
    /// Delivery-rate state when it was sent (draft-cheng-iccrg-delivery-rate-estimation §3.2).
    pub rate: RateSnapshot,
}

impl Segment {
    /// Sequence space it covers, in bytes.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether RACK judges it (RFC 8985 §6.2 step 5): not delivered, and
    /// not marked lost unless resent since.
    pub(crate) fn rack_judged(&self) -> bool {
        !self.sacked && (!self.lost || self.retrans)
    }

    /// Lost and not yet resent: what the sender must retransmit.
    pub(crate) fn needs_retransmission(&self) -> bool {
        self.lost && !self.retrans && !self.sacked
    }
}

/// What [`SentLog::unsend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsent {
    /// The newest record is gone: the sender rewinds SND.MAX to its start.
    Tail,
    /// The records it covered are lost and will be resent.
    MarkedLost,
    /// It covered nothing outstanding (already acknowledged or SACKed).
    Nothing,
}

/// RFC 8985 §6.2 `RACK_sent_after(t1, seq1, t2, seq2)`: whether a segment
/// sent at `t1` ending at `seq1` was sent after one sent at `t2` ending at
/// `seq2`.
pub(crate) fn sent_after(t1: Instant, seq1: SeqNumber, t2: Instant, seq2: SeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

/// One transmission: `[start, end)` left at `xmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    xmit: Instant,
    start: SeqNumber,
    end: SeqNumber,
}

/// The transmission log.
#[derive(Debug, Clone, Default)]
pub(crate) struct SentLog {
    segs: VecDeque<Segment>,
    /// Every transmission still of use to RACK, in the order they were made
    /// (Linux's `tsorted_sent_queue`): [`SentLog::rack_candidates`] walks it
    /// from the oldest and stops at the first made after the newest
    /// delivered segment, dropping on the way those none of whose records
    /// RACK still judges, so each transmission is passed over about once
    /// instead of every record being visited on every ACK.
    sends: VecDeque<Sent>,
    /// Scratch for [`SentLog::rack_candidates`].
    keep: Vec<Sent>,
    /// Bytes covered by `segs`.
    total: usize,
    sacked: usize,
    /// Lost and not SACKed.
    lost: usize,
    /// Retransmitted, outstanding, not SACKed (and, if lost, resent since).
    retrans: usize,
    /// Lost, not SACKed and not resent since
    /// ([`Segment::needs_retransmission`]): kept so that the sender's
    /// questions on every segment it sends need no walk of the log.
    pending: usize,
}

impl SentLog {
    /// How many segments are recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.segs.len()
    }

    /// The records, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Segment> + '_ {
        self.segs.iter()
    }

    /// The newest record.
    pub(crate) fn last(&self) -> Option<&Segment> {
        self.segs.back()
    }

    /// Bytes SACKed above SND.UNA.
    pub(crate) fn sacked_bytes(&self) -> usize {
        self.sacked
    }

    /// Bytes presumed lost (not SACKed).
    pub(crate) fn lost_bytes(&self) -> usize {
        self.lost
    }

    /// Bytes lost and not yet retransmitted.
    pub(crate) fn pending_retransmission(&self) -> usize {
        self.pending
    }

    /// RFC 6675 §4 SetPipe, Linux `tcp_packets_in_flight`: outstanding
    /// bytes not SACKed and not lost, plus outstanding retransmissions.
    pub(crate) fn in_flight(&self) -> usize {
        (self.total + self.retrans).saturating_sub(self.sacked + self.lost)
    }

    /// A segment `[start, end)` was sent at `now`. Data at or above the
    /// last record is new; anything below it is a retransmission of the
    /// records it overlaps (split where the boundaries differ).
    pub(crate) fn on_send(
        &mut self,
        start: SeqNumber,
        end: SeqNumber,
        now: Instant,
        rate: RateSnapshot,
    ) {
        if start >= end {
            return;
        }
        self.sends.push_back(Sent {
            xmit: now,
            start,
            end,
        });
        let top = self.segs.back().map_or(start, |s| s.end);
        if start < top {
            let resent_end = end.min(top);
            self.split_at(start);
            self.split_at(resent_end);
            let first = self.index_of(start);
            for i in first..self.segs.len() {
                let seg = self.segs[i];
                if seg.start >= resent_end {
                    break;
                }
                if seg.sacked {
                    continue;
                }
                self.forget(&seg);
                let s = &mut self.segs[i];
                s.xmit = now;
                s.retransmitted = true;
                s.stale = false;
                s.rate = rate;
                s.retrans = true;
                let s = *s;
                self.remember(&s);
            }
        }
        if end > top {
            let new_start = start.max(top);
            // A gap (never expected) is treated as if it had been sent.
            let seg = Segment {
                start: new_start,
                end,
                xmit: now,
                retransmitted: false,
                lost: false,
                retrans: false,
                sacked: false,
                stale: false,
                rate,
            };
            self.total += seg.len();
            self.segs.push_back(seg);
        }
    }

    /// A cumulative ACK up to `una`: drops the records below it, calling
    /// `delivered` for each newly delivered (not previously SACKed) one.
    pub(crate) fn ack(&mut self, una: SeqNumber, mut delivered: impl FnMut(&Segment)) {
        // Transmissions wholly acknowledged are of no more use; the list is
        // otherwise pruned by RACK's walk, which a connection that never
        // needs one does not make: keep it within a few per record.
        while self.sends.front().is_some_and(|e| e.end <= una) {
            self.sends.pop_front();
        }
        if self.sends.len() > 2 * self.segs.len() + 64 {
            let segs = &self.segs;
            self.sends.retain(|e| judged_by(segs, e).next().is_some());
        }
        while let Some(&seg) = self.segs.front() {
            if seg.end <= una {
                self.segs.pop_front();
                self.forget(&seg);
                if !seg.sacked {
                    delivered(&seg);
                }
            } else {
                if seg.start < una {
                    // A partial ACK of one record.
                    let cut = una - seg.start;
                    self.forget(&seg);
                    let s = self.segs.front_mut().expect("front exists");
                    s.start = una;
                    let s = *s;
                    self.remember(&s);
                    let mut part = seg;
                    part.end = una;
                    debug_assert_eq!(part.len(), cut);
                    if !seg.sacked {
                        delivered(&part);
                    }
                }
                break;
            }
        }
    }

    /// The peer SACKed `[left, right)`: marks the records inside it,
    /// calling `delivered` for each newly SACKed one.
    pub(crate) fn sack(
        &mut self,
        left: SeqNumber,
        right: SeqNumber,
        mut delivered: impl FnMut(&Segment),
    ) {
        let (Some(first), Some(last)) = (self.segs.front(), self.segs.back()) else {
            return;
        };
        let left = left.max(first.start);
        let right = right.min(last.end);
        if left >= right {
            return;
        }
        self.split_at(left);
        self.split_at(right);
        for i in self.index_of(left)..self.segs.len() {
            let seg = self.segs[i];
            if seg.start >= right {
                break;
            }
            if seg.sacked {
                continue;
            }
            self.forget(&seg);
            self.segs[i].sacked = true;
            self.segs[i].lost = false;
            self.segs[i].retrans = false;
            let s = self.segs[i];
            self.remember(&s);
            delivered(&seg);
        }
    }

    /// Marks record `i` lost; a retransmission of it is no longer in
    /// flight. Returns whether the record was newly marked.
    pub(crate) fn mark_lost(&mut self, i: usize) -> bool {
        let seg = self.segs[i];
        if seg.sacked || (seg.lost && !seg.retrans) {
            return false;
        }
        self.forget(&seg);
        self.segs[i].lost = true;
        self.segs[i].retrans = false;
        let s = self.segs[i];
        self.remember(&s);
        true
    }

    /// The host's kernel refused the transmission of `[start, end)`
    /// (PROTOCOL.md §7, a segment the host refused). With `newest` (it was
    /// the newest data) the last record, if it is exactly that segment
    /// sent once, is removed as if never sent and `Unsent::Tail` returned;
    /// otherwise what it covers is marked lost, to be resent.
    pub(crate) fn unsend(&mut self, start: SeqNumber, end: SeqNumber, newest: bool) -> Unsent {
        if start >= end {
            return Unsent::Nothing;
        }
        if let Some(&last) = self.segs.back().filter(|_| newest) {
            if last.start == start && last.end == end && !last.retransmitted {
                self.segs.pop_back();
                self.forget(&last);
                return Unsent::Tail;
            }
        }
        self.split_at(start);
        self.split_at(end);
        let mut marked = false;
        for i in self.index_of(start)..self.segs.len() {
            if self.segs[i].start >= end {
                break;
            }
            marked |= self.mark_lost(i);
        }
        if marked {
            Unsent::MarkedLost
        } else {
            Unsent::Nothing
        }
    }

    /// Every un-SACKed record is lost (an RTO, or a new path). With
    /// `forget_sacks` (RFC 2018 §8: the receiver may have reneged) SACKed
    /// records become lost too.
    pub(crate) fn mark_all_lost(&mut self, forget_sacks: bool) {
        for s in &mut self.segs {
            if forget_sacks {
                s.sacked = false;
            }
            if !s.sacked {
                s.lost = true;
                s.retrans = false;
            }
        }
        self.recount();
    }

    /// Every record was sent on a path the connection has left.
    pub(crate) fn mark_all_stale(&mut self) {
        for s in &mut self.segs {
            s.stale = true;
        }
    }

    /// No record is lost any more (a spurious timeout was undone).
    pub(crate) fn unmark_lost(&mut self) {
        for s in &mut self.segs {
            s.lost = false;
        }
        self.recount();
        // Records RACK had stopped judging are judged again, without a new
        // transmission to find them by.
        self.rebuild_sends();
    }

    /// Indices (ascending: sequence order) of the records RACK judges on an
    /// ACK whose newest delivered segment was sent at `xmit` and ends at
    /// `end` (RFC 8985 §6.2 step 5): [`Segment::rack_judged`] and sent
    /// before it. Replaces `out`'s contents.
    pub(crate) fn rack_candidates(&mut self, xmit: Instant, end: SeqNumber, out: &mut Vec<usize>) {
        out.clear();
        let mut keep = core::mem::take(&mut self.keep);
        keep.clear();
        let mut walked = 0;
        for e in &self.sends {
            // In order of transmission: nothing after this one was sent
            // before the newest delivered segment (equal times are told
            // apart by sequence, record by record below).
            if e.xmit > xmit {
                break;
            }
            walked += 1;
            let mut judged = false;
            for (i, r) in judged_by(&self.segs, e) {
                judged = true;
                if sent_after(xmit, end, r.xmit, r.end) {
                    out.push(i);
                }
            }
            if judged {
                keep.push(*e);
            }
        }
        self.sends.drain(..walked);
        for e in keep.iter().rev() {
            self.sends.push_front(*e);
        }
        self.keep = keep;
        // Two transmissions at one instant may cover one record.
        out.sort_unstable();
        out.dedup();
    }

    /// The transmissions again from the records (each record's last), in
    /// order of transmission.
    fn rebuild_sends(&mut self) {
        let Some(base) = self.segs.front().map(|s| s.start) else {
            self.sends.clear();
            return;
        };
        self.sends.clear();
        self.sends.extend(self.segs.iter().map(|s| Sent {
            xmit: s.xmit,
            start: s.start,
            end: s.end,
        }));
        self.sends
            .make_contiguous()
            .sort_by_key(|e| (e.xmit, e.end - base));
    }

    /// Index of the first record to retransmit at or above `from` and below
    /// `below`, if any.
    pub(crate) fn next_lost(&self, from: SeqNumber, below: SeqNumber) -> Option<&Segment> {
        if self.pending == 0 {
            return None;
        }
        let i = self.index_of(from);
        self.segs
            .range(i..)
            .take_while(|s| s.start < below)
            .find(|s| s.needs_retransmission() && s.end > from)
    }

    /// The `i`-th record, oldest first.
    pub(crate) fn get(&self, i: usize) -> Option<&Segment> {
        self.segs.get(i)
    }

    /// The index of the record containing `seq` (or the first after it).
    pub(crate) fn index_of(&self, seq: SeqNumber) -> usize {
        index_in(&self.segs, seq)
    }

    fn split_at(&mut self, seq: SeqNumber) {
        let i = self.index_of(seq);
        let Some(&seg) = self.segs.get(i) else {
            return;
        };
        if seg.start < seq && seq < seg.end {
            let mut head = seg;
            head.end = seq;
            self.segs[i].start = seq;
            self.segs.insert(i, head);
        }
    }

    fn forget(&mut self, seg: &Segment) {
        let len = seg.len();
        self.total -= len;
        if seg.sacked {
            self.sacked -= len;
        }
        if seg.lost && !seg.sacked {
            self.lost -= len;
        }
        if seg.retrans && !seg.sacked {
            self.retrans -= len;
        }
        if seg.needs_retransmission() {
            self.pending -= len;
        }
    }

    fn remember(&mut self, seg: &Segment) {
        let len = seg.len();
        self.total += len;
        if seg.sacked {
            self.sacked += len;
        }
        if seg.lost && !seg.sacked {
            self.lost += len;
        }
        if seg.retrans && !seg.sacked {
            self.retrans += len;
        }
        if seg.needs_retransmission() {
            self.pending += len;
        }
    }

    fn recount(&mut self) {
        let segs = core::mem::take(&mut self.segs);
        self.total = 0;
        self.sacked = 0;
        self.lost = 0;
        self.retrans = 0;
        self.pending = 0;
        for s in &segs {
            self.remember(s);
        }
        self.segs = segs;
    }
}

/// The index in `segs` of the record containing `seq` (or the first after it).
fn index_in(segs: &VecDeque<Segment>, seq: SeqNumber) -> usize {
    segs.partition_point(|s| s.end <= seq)
}

/// The records transmission `e` was the last transmission of that RACK
/// still judges, with their indices (a record resent since is judged by
/// its newer transmission).
fn judged_by<'a>(
    segs: &'a VecDeque<Segment>,
    e: &'a Sent,
) -> impl Iterator<Item = (usize, &'a Segment)> + 'a {
    let first = index_in(segs, e.start);
    segs.range(first..)
        .take_while(|r| r.start < e.end)
        .enumerate()
        .filter(|(_, r)| r.xmit == e.xmit && r.rack_judged())
        .map(move |(k, r)| (first + k, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u32) -> SeqNumber {
        SeqNumber(v)
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn snap() -> RateSnapshot {
        RateSnapshot {
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent_time: Instant::ZERO,
            app_limited: false,
            lost: 0,
            tx_in_flight: 0,
        }
    }

    fn log_of_ten() -> SentLog {
        let mut log = SentLog::default();
        for i in 0..10u32 {
            log.on_send(
                s(1000 + i * 1000),
                s(2000 + i * 1000),
                t(u64::from(i)),
                snap(),
            );
        }
        log
    }

    #[test]
    fn new_sends_append_and_count_in_flight() {
        let log = log_of_ten();
        assert_eq!(log.len(), 10);
        assert_eq!(log.in_flight(), 10_000);
        assert_eq!(log.sacked_bytes(), 0);
    }

    #[test]
    fn sack_lost_and_retransmit_follow_setpipe() {
        let mut log = log_of_ten();
        let mut newly = 0;
        log.sack(s(3000), s(6000), |seg| newly += seg.len());
        assert_eq!(newly, 3000);
        assert_eq!(log.in_flight(), 7000);
        log.mark_lost(0);
        log.mark_lost(1);
        assert_eq!(log.in_flight(), 5000);
        assert_eq!(
            log.next_lost(s(0), s(11_000)).map(|x| x.start),
            Some(s(1000))
        );
        // Retransmitting the first lost record puts it back in flight.
        log.on_send(s(1000), s(2000), t(50), snap());
        assert_eq!(log.in_flight(), 6000);
        assert_eq!(
            log.next_lost(s(0), s(11_000)).map(|x| x.start),
            Some(s(2000))
        );
        // The retransmission is lost again: out of flight, to resend.
        log.mark_lost(0);
        assert_eq!(log.in_flight(), 5000);
        assert_eq!(
            log.next_lost(s(0), s(11_000)).map(|x| x.start),
            Some(s(1000))
        );
        // A cumulative ACK past everything SACKed.
        let mut acked = Vec::new();
        log.ack(s(6000), |seg| acked.push(seg.start.0));
        assert_eq!(acked, [1000, 2000]);
        assert_eq!(log.in_flight(), 5000);
        assert_eq!(log.sacked_bytes(), 0);
        assert_eq!(log.lost_bytes(), 0);
    }

    #[test]
    fn misaligned_retransmissions_and_sacks_split_records() {
        let mut log = log_of_ten();
        log.mark_all_lost(false);
        assert_eq!(log.in_flight(), 0);
        // Resend 1500..2500 (straddling two records).
        log.on_send(s(1500), s(2500), t(20), snap());
        assert_eq!(log.in_flight(), 1000);
        assert_eq!(log.len(), 12);
        log.sack(s(1700), s(2200), |_| {});
        assert_eq!(log.sacked_bytes(), 500);
        assert_eq!(log.in_flight(), 500);
        // The ACK covers 100 bytes of the outstanding retransmission.
        log.ack(s(1600), |_| {});
        assert_eq!(log.iter().next().unwrap().start, s(1600));
        assert_eq!(log.in_flight(), 400);
        // Sending past the top appends the new part only.
        log.on_send(s(10_500), s(11_500), t(30), snap());
        assert_eq!(log.last().unwrap().start, s(11_000));
        assert_eq!(log.in_flight(), 1400, "500 resent, 500 new");
    }

    #[test]
    fn unsend_removes_the_newest_record_and_marks_older_ones_lost() {
        let mut log = log_of_ten();
        // The newest segment never left: as if never sent.
        assert_eq!(log.unsend(s(10_000), s(11_000), true), Unsent::Tail);
        assert_eq!((log.len(), log.in_flight()), (9, 9000));
        assert_eq!(log.last().unwrap().end, s(10_000));
        // A record in the middle (a retransmission refused): lost, resent.
        log.mark_lost(2);
        log.on_send(s(3000), s(4000), t(40), snap());
        assert_eq!(log.in_flight(), 9000);
        assert_eq!(log.unsend(s(3000), s(4000), false), Unsent::MarkedLost);
        assert_eq!(log.in_flight(), 8000);
        assert_eq!(
            log.next_lost(s(0), s(11_000)).map(|x| x.start),
            Some(s(3000))
        );
        // A retransmitted newest record is not unsent: it was sent before.
        log.mark_lost(8);
        log.on_send(s(9000), s(10_000), t(50), snap());
        assert_eq!(log.unsend(s(9000), s(10_000), true), Unsent::MarkedLost);
        assert_eq!(log.len(), 9);
        // What is SACKed, or below every record, is nothing to undo.
        log.sack(s(5000), s(6000), |_| {});
        assert_eq!(log.unsend(s(5000), s(6000), false), Unsent::Nothing);
        assert_eq!(log.unsend(s(0), s(500), false), Unsent::Nothing);
        assert_eq!(log.unsend(s(7000), s(7000), true), Unsent::Nothing);
    }

    #[test]
    fn mark_all_lost_can_forget_sacks() {
        let mut log = log_of_ten();
        log.sack(s(2000), s(4000), |_| {});
        log.mark_all_lost(false);
        assert_eq!((log.sacked_bytes(), log.lost_bytes()), (2000, 8000));
        log.mark_all_lost(true);
        assert_eq!((log.sacked_bytes(), log.lost_bytes()), (0, 10_000));
        log.unmark_lost();
        assert_eq!(log.in_flight(), 10_000);
    }

    /// What RACK judged before the walk: every record, in sequence order.
    fn judged_by_full_scan(log: &SentLog, xmit: Instant, end: SeqNumber) -> Vec<usize> {
        (0..log.segs.len())
            .filter(|&i| {
                let r = &log.segs[i];
                r.rack_judged() && sent_after(xmit, end, r.xmit, r.end)
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// New data of this many MSS, `dt` ms later.
        Send(u8, u8),
        /// Resend the n-th record (mod the log's length), `dt` ms later.
        Resend(u16, u8),
        /// SACK records i..i+n (mod the log's length).
        Sack(u16, u8),
        /// Cumulative ACK of the first n records.
        Ack(u8),
        MarkLost(u16),
        MarkAllLost(bool),
        UnmarkLost,
        /// The newest record (`true`) or its second half was refused by
        /// the host.
        Unsend(bool),
        /// RACK's walk for the segment at record i (mod length).
        Walk(u16),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u8..4, 0u8..3).prop_map(|(n, dt)| Op::Send(n, dt)),
            2 => (any::<u16>(), 0u8..3).prop_map(|(i, dt)| Op::Resend(i, dt)),
            3 => (any::<u16>(), 1u8..6).prop_map(|(i, n)| Op::Sack(i, n)),
            1 => (0u8..4).prop_map(Op::Ack),
            1 => any::<u16>().prop_map(Op::MarkLost),
            1 => any::<bool>().prop_map(Op::MarkAllLost),
            1 => Just(Op::UnmarkLost),
            1 => any::<bool>().prop_map(Op::Unsend),
            4 => any::<u16>().prop_map(Op::Walk),
        ]
    }

    proptest::proptest! {
        /// RACK's walk over the transmissions finds exactly the records a
        /// scan of the whole log finds, whatever happened to the log.
        #[test]
        fn rack_walk_finds_what_a_full_scan_finds(
            ops in proptest::collection::vec(op(), 1..200),
            base in proptest::prelude::any::<u32>(),
        ) {
            const MSS: u32 = 1000;
            let mut log = SentLog::default();
            let mut top = s(base);
            let mut now = 0u64;
            let mut out = Vec::new();
            for op in ops {
                let len = log.segs.len();
                match op {
                    Op::Send(n, dt) => {
                        now += u64::from(dt);
                        let end = top + (u32::from(n) * MSS) as usize;
                        log.on_send(top, end, t(now), snap());
                        top = end;
                    }
                    Op::Resend(i, dt) if len > 0 => {
                        now += u64::from(dt);
                        let r = log.segs[usize::from(i) % len];
                        log.on_send(r.start, r.end, t(now), snap());
                    }
                    Op::Sack(i, n) if len > 0 => {
                        let a = usize::from(i) % len;
                        let b = (a + usize::from(n)).min(len) - 1;
                        let (l, r) = (log.segs[a].start, log.segs[b].end);
                        log.sack(l, r, |_| {});
                    }
                    Op::Ack(n) if len > 0 => {
                        let k = usize::from(n).min(len - 1);
                        let una = log.segs[k].start;
                        log.ack(una, |_| {});
                    }
                    Op::MarkLost(i) if len > 0 => {
                        log.mark_lost(usize::from(i) % len);
                    }
                    Op::MarkAllLost(forget) => log.mark_all_lost(forget),
                    Op::UnmarkLost => log.unmark_lost(),
                    Op::Unsend(whole) if len > 0 => {
                        // The newest record (or its second half) refused.
                        let last = log.segs[len - 1];
                        let start = if whole || last.len() < 2 {
                            last.start
                        } else {
                            last.start + last.len() / 2
                        };
                        if log.unsend(start, last.end, true) == Unsent::Tail {
                            top = last.start;
                        }
                    }
                    Op::Walk(_) if len == 0 => {}
                    Op::Walk(i) => {
                        let pending: usize = log
                            .segs
                            .iter()
                            .filter(|r| r.needs_retransmission())
                            .map(Segment::len)
                            .sum();
                        proptest::prop_assert_eq!(log.pending_retransmission(), pending);
                        let r = log.segs[usize::from(i) % len];
                        let expected = judged_by_full_scan(&log, r.xmit, r.end);
                        log.rack_candidates(r.xmit, r.end, &mut out);
                        proptest::prop_assert_eq!(&out, &expected);
                        // And at a later time than anything sent.
                        let expected = judged_by_full_scan(&log, t(now + 1), top);
                        log.rack_candidates(t(now + 1), top, &mut out);
                        proptest::prop_assert_eq!(&out, &expected);
                    }
                    _ => {}
                }
            }
        }
    }
}
