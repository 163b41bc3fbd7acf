//! Congestion control: NewReno (RFC 5681, RFC 6582), with appropriate byte
//! counting (RFC 3465, L = 2*SMSS) and the RFC 6928 initial window.
//! The sender drives loss recovery (RFC 6675 with SACK, RFC 6582 without);
//! this type only owns cwnd and ssthresh.

/// NewReno window state.
#[derive(Debug, Clone)]
pub struct NewReno {
    _private: (),
}

impl NewReno {
    /// `smss` is the sender MSS; cwnd starts at the RFC 6928 initial window
    /// min(10*SMSS, max(2*SMSS, 14600)); ssthresh starts "arbitrarily high".
    pub fn new(smss: usize) -> NewReno {
        let _ = smss;
        todo!("building-blocks helper")
    }

    pub fn cwnd(&self) -> usize {
        todo!()
    }

    pub fn ssthresh(&self) -> usize {
        todo!()
    }

    pub fn in_slow_start(&self) -> bool {
        todo!()
    }

    /// New data was cumulatively acknowledged outside recovery
    /// (RFC 5681 §3.1: slow start with ABC, else congestion avoidance).
    pub fn on_ack(&mut self, newly_acked: usize) {
        let _ = newly_acked;
        todo!()
    }

    /// Loss detected by dupacks/SACK: ssthresh = max(FlightSize/2, 2*SMSS),
    /// cwnd = ssthresh (RFC 5681 eq. 4, RFC 6675 §5 step 4.2).
    pub fn on_loss(&mut self, flight_size: usize) {
        let _ = flight_size;
        todo!()
    }

    /// Leaving fast recovery after a full ACK (RFC 6582 §3.2 step 3):
    /// cwnd = min(ssthresh, max(flight_size, SMSS) + SMSS).
    pub fn on_recovery_exit(&mut self, flight_size: usize) {
        let _ = flight_size;
        todo!()
    }

    /// Retransmission timeout: ssthresh = max(FlightSize/2, 2*SMSS), cwnd =
    /// loss window of 1 SMSS (RFC 5681 §3.1).
    pub fn on_rto(&mut self, flight_size: usize) {
        let _ = flight_size;
        todo!()
    }

    /// Idle longer than an RTO: cwnd = min(cwnd, IW) (RFC 5681 §4.1).
    pub fn on_idle_restart(&mut self) {
        todo!()
    }

    /// Start over on a new path: cwnd = IW, ssthresh high (DESIGN.md: a new
    /// path restarts congestion control).
    pub fn reset(&mut self) {
        todo!()
    }

    /// The effective SMSS changed (e.g. timestamps negotiated, MSS option).
    pub fn set_smss(&mut self, smss: usize) {
        let _ = smss;
        todo!()
    }
}
