//! Proportional Rate Reduction (RFC 6937): how much may be sent on each
//! ACK during loss recovery.
//!
//! Read first: RFC 6937 §3 (the algorithm) and Appendix A (examples).
//! Instead of halving the window at once and then sending nothing for half
//! a round trip (RFC 6675) or bursting when pipe falls far below ssthresh,
//! PRR spreads the reduction over the recovery: while pipe > ssthresh it
//! sends ssthresh/RecoverFS bytes per byte delivered; below ssthresh the
//! slow-start reduction bound (PRR-SSRB) lets pipe grow back to ssthresh
//! by at most one SMSS more than was delivered.
//!
//! The connection calls [`Prr::start`] on entering recovery,
//! [`Prr::on_ack`] on every ACK in recovery, [`Prr::allowance`] when
//! deciding whether to send, and [`Prr::on_sent`] for every byte
//! (re)transmitted.

/// PRR state (RFC 6937 §3: RecoverFS, prr_delivered, prr_out, sndcnt).
#[derive(Debug, Clone, Default)]
pub(crate) struct Prr {
    recover_fs: usize,
    delivered: usize,
    out: usize,
    sndcnt: usize,
}

impl Prr {
    /// RFC 6937 §3 "at the beginning of recovery": RecoverFS = FlightSize
    /// (snd.nxt - snd.una), the counters zero.
    pub(crate) fn start(&mut self, flight_size: usize) {
        *self = Prr {
            recover_fs: flight_size.max(1),
            ..Prr::default()
        };
    }

    /// RFC 6937 §3 "on every ACK during recovery" with PRR-SSRB;
    /// `delivered` is DeliveredData (bytes newly acknowledged or SACKed),
    /// `pipe` the RFC 6675 pipe after this ACK.
    pub(crate) fn on_ack(&mut self, delivered: usize, pipe: usize, ssthresh: usize, smss: usize) {
        self.delivered = self.delivered.saturating_add(delivered);
        let sndcnt = if pipe > ssthresh {
            // Proportional rate reduction: CEIL(prr_delivered * ssthresh /
            // RecoverFS) - prr_out.
            let target =
                (self.delivered as u128 * ssthresh as u128).div_ceil(self.recover_fs as u128);
            (target.min(usize::MAX as u128) as usize).saturating_sub(self.out)
        } else {
            // PRR-SSRB: limit = MAX(prr_delivered - prr_out, DeliveredData) + MSS.
            let limit = self.delivered.saturating_sub(self.out).max(delivered) + smss;
            (ssthresh - pipe).min(limit)
        };
        // Linux tcp_cwnd_reduction: the fast retransmit itself always goes
        // out on entering recovery.
        self.sndcnt = if self.out == 0 {
            sndcnt.max(smss)
        } else {
            sndcnt
        };
    }

    /// Bytes that may still be sent on the current ACK.
    pub(crate) fn allowance(&self) -> usize {
        self.sndcnt
    }

    /// RFC 6937 §3 "on any data transmission or retransmission".
    pub(crate) fn on_sent(&mut self, len: usize) {
        self.out = self.out.saturating_add(len);
        self.sndcnt = self.sndcnt.saturating_sub(len);
    }

    /// Bytes sent since recovery began (RFC 6937 `prr_out`).
    #[cfg(test)]
    pub(crate) fn out(&self) -> usize {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    /// RFC 6937 Appendix A, first example: 20 segments in flight, one
    /// lost, ssthresh 10: PRR sends one segment for every other ACK.
    #[test]
    fn proportional_part_sends_half_per_delivered_segment() {
        let mut prr = Prr::default();
        prr.start(20 * MSS);
        let ssthresh = 10 * MSS;
        let mut sent = Vec::new();
        // 19 ACKs, each delivering one segment; pipe starts at 19 (one
        // lost) and falls by one per ACK, rising by what was sent.
        let mut pipe = 19 * MSS;
        for _ in 0..19 {
            pipe -= MSS;
            prr.on_ack(MSS, pipe, ssthresh, MSS);
            // The connection sends a segment while any allowance is left.
            let mut n = 0;
            while prr.allowance() > 0 {
                prr.on_sent(MSS);
                pipe += MSS;
                n += 1;
            }
            sent.push(n);
        }
        // The first ACK sends the retransmission; then one every 2 ACKs.
        assert_eq!(sent[..6], [1, 0, 1, 0, 1, 0]);
        // Over the recovery, ~half what was delivered was sent, and pipe
        // ends at ssthresh.
        assert_eq!(prr.out(), 10 * MSS);
        assert_eq!(pipe, 10 * MSS);
    }

    /// RFC 6937 §3, PRR-SSRB: after heavy loss pipe is below ssthresh and
    /// grows back by at most DeliveredData + 1 MSS per ACK.
    #[test]
    fn slow_start_reduction_bound_below_ssthresh() {
        let mut prr = Prr::default();
        prr.start(20 * MSS);
        let ssthresh = 10 * MSS;
        prr.on_ack(MSS, 2 * MSS, ssthresh, MSS);
        // limit = max(1000 - 0, 1000) + 1000 = 2000.
        assert_eq!(prr.allowance(), 2 * MSS);
        prr.on_sent(2 * MSS);
        assert_eq!(prr.allowance(), 0);
        prr.on_ack(MSS, 3 * MSS, ssthresh, MSS);
        // limit = max(2000 - 2000, 1000) + 1000.
        assert_eq!(prr.allowance(), 2 * MSS);
        // Close to ssthresh: only up to it.
        prr.on_ack(MSS, 9 * MSS + 500, ssthresh, MSS);
        assert_eq!(prr.allowance(), 500);
    }
}
