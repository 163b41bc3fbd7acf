//! Segments the host's kernel refused to send (PROTOCOL.md §7, "A segment
//! the host refused"): no route while an address goes away under a move,
//! a full device queue that did not drain. Such a segment never left the
//! host, so it is not a loss on the path: the newest data is taken back as
//! if never sent (SND.MAX rewinds, as Linux's `tcp_write_xmit` leaves an
//! skb unsent when `tcp_transmit_skb` fails), and a refused retransmission
//! is marked lost again, to be resent first. No congestion response: the
//! path said nothing.
//!
//! Why it matters: a refused segment counted as sent leaves a hole at the
//! receiver that only the go-back resend after a move fills, so no new
//! data counts until the hole is refilled (the continuation mode's first
//! segment from the new address, §9 mover step 2, is then the hole itself).

use super::{Connection, Shared};
use crate::tcp::sent::Unsent;
use crate::time::Instant;
use crate::wire::SeqNumber;

impl Connection {
    /// The segment `[seq, seq + len (+ FIN))` this connection produced was
    /// refused by the host before it left. Returns whether anything was
    /// taken back (the connection then has it to send again).
    pub(crate) fn on_refused(
        &mut self,
        _now: Instant,
        seq: SeqNumber,
        len: usize,
        fin: bool,
        sh: &mut Shared,
    ) -> bool {
        let end = seq + len + usize::from(fin);
        // A pure ACK or a window update: the next segment repeats it. (SYNs,
        // MSYNs and RSTs never reach here: their own timers repeat them.)
        if end <= seq || end <= self.snd_una {
            return false;
        }
        sh.stats.refused_segments += 1;
        let seq = seq.max(self.snd_una);
        // Only the newest data, never a FIN: the FIN's state change stays.
        let newest = end == self.snd_max && !fin;
        if self.lr.log.unsend(seq, end, newest) == Unsent::Tail {
            self.bytes_sent = self.bytes_sent.saturating_sub((end - seq) as u64);
            self.snd_max = seq;
            if self.snd_nxt > seq {
                self.snd_nxt = seq;
            }
            if self.rtt_probe.is_some_and(|(probe_end, _)| probe_end > seq) {
                self.rtt_probe = None;
            }
            if self.snd_una == self.snd_max {
                // Nothing outstanding: no timer until it is sent again.
                self.rtx_deadline = None;
                self.lr.tlp.cancel();
            }
        } else if !self.sack_enabled && seq < self.snd_nxt {
            // Without SACK nothing resends a marked record: go back to it.
            self.snd_nxt = seq;
        }
        true
    }
}
