//! Careful Resume of the congestion window on a new path (PROTOCOL.md §7),
//! after draft-ietf-tsvwg-careful-resume: a child module of `connection`.
//!
//! Read first: PROTOCOL.md §7 "Congestion window on the new path",
//! draft-ietf-tsvwg-careful-resume §4 (Reconnaissance, Unvalidated,
//! Validating phases), RFC 5681 §3.1.
//!
//! A move restarts congestion control at the initial window (the
//! Reconnaissance phase: nothing is known about the new path). The old
//! path's cwnd and smoothed RTT are remembered. When the first data sent
//! on the new path is acknowledged without loss or timeout, and the new
//! path's RTT is within [old/2, 10 x old] (the draft's confirmation that
//! the saved capacity may apply), cwnd jumps to half the old path's cwnd
//! (the draft's jump_cwnd). Any loss or RTO before that abandons the jump
//! and the connection carries on in slow start; a loss after it is handled
//! by the ordinary response (RFC 5681/6675: half the flight).

use super::{Connection, Recovery, Shared};
use crate::time::Duration;
use crate::wire::SeqNumber;

/// What the old path knew, kept until the new one confirms or refutes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct CarefulResume {
    saved_cwnd: usize,
    saved_srtt: Duration,
    /// Acknowledgements above this cover data sent on the new path.
    mark: Option<SeqNumber>,
    /// Retransmission timeouts at the restart: one more abandons the jump.
    timeouts: u64,
}

impl Connection {
    /// The path restarts: remember the old path's window and RTT.
    pub(super) fn careful_resume_saved(&self) -> Option<CarefulResume> {
        let saved_srtt = self.rtt.srtt()?;
        let saved_cwnd = self.cc.cwnd();
        (saved_cwnd > self.cc.initial_window()).then_some(CarefulResume {
            saved_cwnd,
            saved_srtt,
            mark: None,
            timeouts: self.timeouts,
        })
    }

    /// The new path resumed sending: data from SND.UNA on is new-path data.
    pub(super) fn careful_resume_start(resume: &mut Option<CarefulResume>, snd_una: SeqNumber) {
        if let Some(r) = resume.as_mut() {
            r.mark = Some(snd_una);
        }
    }

    /// After an ACK was processed: jump once the new path is validated.
    pub(super) fn careful_resume_on_ack(&mut self, sh: &mut Shared) {
        let Some(r) = self.mig.as_ref().and_then(|m| m.careful_resume()) else {
            return;
        };
        let abandon = self.recovery != Recovery::None || self.timeouts != r.timeouts;
        let Some(mark) = r.mark else {
            if abandon {
                self.set_careful_resume(None);
            }
            return;
        };
        if abandon {
            self.set_careful_resume(None);
            return;
        }
        if self.snd_una <= mark {
            return;
        }
        self.set_careful_resume(None);
        let Some(srtt) = self.rtt.srtt() else {
            return;
        };
        // draft-ietf-tsvwg-careful-resume §4.2: the saved state applies only
        // to a path whose RTT is comparable.
        if srtt < r.saved_srtt / 2 || srtt > r.saved_srtt * 10 {
            return;
        }
        let jump = r.saved_cwnd / 2;
        if jump > self.cc.cwnd() {
            self.cc.resume_jump(jump);
            sh.stats.careful_resume_jumps += 1;
            tracing::debug!(conn = ?self.id, jump, ?srtt, "careful resume: jump");
        }
    }
}
