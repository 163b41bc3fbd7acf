//! TCP keep-alives (RFC 9293 §3.8.4), a child module of `connection`.
//!
//! Read first: RFC 9293 §3.8.4 (MAY-5..MAY-8, MUST-24..MUST-26) and
//! PROTOCOL.md §8.2 (the keepalive row).
//!
//! Off for plain connections unless `Config::keepalive_idle` is set
//! (MUST-25: off by default). A migratable connection keeps an eye on its
//! peer with an idle time of `Config::mig_wait` (`Config::mig_keepalive`):
//! a peer whose address went away holds its end for W in MIG_WAIT, so no
//! probe goes before the peer could have come back, and an end with
//! nothing to send learns within W + probes x interval that the peer is
//! gone (e.g. behind a path that strips sustain's options).
//!
//! A probe is `<SEQ=SND.NXT-1><ACK=RCV.NXT><CTL=ACK>` with no data
//! (MAY-7: no garbage octet); any segment from the peer counts as an
//! answer (MUST-26: one unanswered probe is not a dead peer).

use super::{Connection, Shared};
use crate::tcp::types::{CloseReason, State};
use crate::time::{Duration, Instant};
use crate::wire::TcpFlags;

/// Per-connection keep-alive state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keepalive {
    /// When the last segment from the peer arrived.
    last_heard: Instant,
    /// Probes sent since then.
    probes: u32,
    /// A probe is due at the next `poll_transmit`.
    pub(super) probe_pending: bool,
}

impl Keepalive {
    pub(super) fn new(now: Instant) -> Keepalive {
        Keepalive {
            last_heard: now,
            probes: 0,
            probe_pending: false,
        }
    }
}

impl Connection {
    /// The idle time before the first probe, if keep-alives are on for
    /// this connection.
    fn keepalive_idle(&self) -> Option<Duration> {
        match (self.cfg.keepalive_idle, self.mig.is_some()) {
            (Some(idle), _) => Some(idle),
            (None, true) if self.cfg.mig_keepalive => Some(self.cfg.mig_wait),
            _ => None,
        }
    }

    /// MUST-24..: probe only an idle synchronized connection with nothing
    /// outstanding (otherwise the retransmission timer watches the peer),
    /// and never while a move holds the timers (W bounds that, §8.2).
    fn keepalive_applies(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait2
        ) && self.snd_una == self.snd_max
            && !self.migration_holds_timers()
    }

    /// Any segment from the peer: it is alive.
    pub(super) fn keepalive_heard(&mut self, now: Instant) {
        self.keepalive.last_heard = now;
        self.keepalive.probes = 0;
        self.keepalive.probe_pending = false;
    }

    /// When the next probe (or the verdict) is due.
    pub(super) fn keepalive_deadline(&self) -> Option<Instant> {
        let idle = self.keepalive_idle()?;
        if !self.keepalive_applies() || self.keepalive.probe_pending {
            return None;
        }
        let interval = self.cfg.keepalive_interval;
        Some(self.keepalive.last_heard + idle + interval * self.keepalive.probes)
    }

    /// Sends the next probe, or closes the connection once
    /// `keepalive_probes` went unanswered.
    pub(super) fn keepalive_timeout(&mut self, now: Instant, sh: &mut Shared) {
        if self.keepalive_deadline().is_none_or(|t| now < t) {
            return;
        }
        if self.keepalive.probes >= self.cfg.keepalive_probes {
            sh.stats.keepalive_timeouts += 1;
            tracing::debug!(conn = ?self.id, probes = self.keepalive.probes, "keep-alive timed out");
            self.enter_closed(CloseReason::KeepaliveTimedOut);
            return;
        }
        self.keepalive.probes += 1;
        self.keepalive.probe_pending = true;
    }

    /// The probe segment, if one is due (RFC 9293 §3.8.4).
    pub(super) fn keepalive_probe(
        &mut self,
        now: Instant,
    ) -> Option<crate::wire::TcpRepr<'static>> {
        if !self.keepalive.probe_pending {
            return None;
        }
        self.keepalive.probe_pending = false;
        let mut seg = self.header(now, TcpFlags::ACK);
        seg.seq = self.snd_nxt - 1;
        Some(seg)
    }
}
