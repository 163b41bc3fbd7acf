//! A NAPT (network address and port translator) for the simulator, modelled
//! on Linux iptables MASQUERADE with strict connection tracking (what the
//! lab's NAPT routers run; PROTOCOL.md §10):
//!
//! - nodes behind it use private addresses; outbound TCP leaves with the
//!   NAPT's public address and a public port of its own;
//! - every new flow (private address and port, remote address and port)
//!   gets a **fresh mapping with a new public port**; an MSYN from a new
//!   address is such a flow;
//! - only a SYN (no ACK) from inside creates a mapping; anything else from
//!   an unknown flow, and every unsolicited inbound packet, is dropped
//!   (`nf_conntrack_tcp_loose = 0`);
//! - the tracker checks the handshake and the ACK upper bound: a SYN-ACK
//!   (so an MSYN-ACK) must acknowledge exactly SYN.seq + 1, and an ACK may
//!   not exceed the highest sequence number seen from the other side
//!   (`tcp_in_window`: `before(ack, receiver->td_end + 1)`);
//! - a SYN on a flow past its handshake (an MSYN from a private address and
//!   port used before) passes as a possible reopen, and the tracking starts
//!   over only when the SYN-ACK answering it arrives, as in Linux;
//! - mappings idle longer than `idle_timeout` expire.
//!
//! - the data upper bound (`tcp_in_window` condition I, `td_maxend`): a
//!   segment with data or FIN must start at or below the other side's
//!   highest ACK + window seen, the window scaled by the shift the SYN and
//!   SYN-ACK of this flow both announced (a SYN-ACK's own window unscaled);
//!   this is what makes a resumed sender's first data after a move depend
//!   on the responder's window (PROTOCOL.md §7, §10).
//!
//! Sequence numbers are not rewritten (see `SeqShifter` in the tests for a
//! middlebox that does).
//!
//! Attach with [`InsideScope::Private`](super::InsideScope::Private) and give
//! the middlebox its public address with
//! [`Network::add_middlebox_address`](super::Network::add_middlebox_address).

use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::{BTreeMap, BTreeSet};

use super::{Direction, Middlebox};
use crate::time::{Duration, Instant};
use crate::wire::{Ipv4Packet, SeqNumber, TcpPacket, PROTOCOL_TCP};

/// Counters of what the NAPT did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NaptStats {
    /// Mappings made for new outbound flows.
    pub mappings_created: u64,
    /// Mappings removed after the idle timeout.
    pub mappings_expired: u64,
    /// Outbound packets translated (private source to public).
    pub translated_out: u64,
    /// Inbound packets translated (public destination to private).
    pub translated_in: u64,
    /// Inbound packets matching no mapping.
    pub unsolicited_dropped: u64,
    /// Outbound non-SYN packets of a flow without a mapping.
    pub no_mapping_dropped: u64,
    /// SYN-ACKs that did not acknowledge exactly SYN.seq + 1.
    pub bad_synack_dropped: u64,
    /// ACKs above what the tracker saw from the other side.
    pub ack_over_bound_dropped: u64,
    /// Segments (pure ACKs included) starting beyond the other side's
    /// ACK + window (td_maxend).
    pub seq_over_bound_dropped: u64,
    /// Other segments the tracker found invalid (non-SYN before the
    /// handshake, SYN from outside, no TCP).
    pub invalid_dropped: u64,
    /// No public port was free.
    pub ports_exhausted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackState {
    SynSent,
    SynRecv,
    Established,
}

/// One mapping with its connection tracking.
#[derive(Debug, Clone)]
struct Mapping {
    public_port: u16,
    state: TrackState,
    syn_seq: SeqNumber,
    /// Highest sequence number + length seen from inside (td_end).
    inside_end: SeqNumber,
    /// The same from outside, once its SYN-ACK passed.
    outside_end: Option<SeqNumber>,
    /// A SYN from inside on a flow past its handshake: tracking restarts
    /// only if the SYN-ACK that follows answers it (Linux's "reopen").
    reopen_syn: Option<SeqNumber>,
    /// Window scale of the latest SYN from inside, taken over when a
    /// SYN-ACK answers it.
    syn_ws: Option<u8>,
    /// Window scale of the inside SYN and of the outside SYN-ACK.
    inside_ws: Option<u8>,
    outside_ws: Option<u8>,
    /// td_maxend: the highest SEG.ACK + window seen from the other side,
    /// the bound for where data from inside (outside) may start.
    inside_maxend: Option<SeqNumber>,
    outside_maxend: Option<SeqNumber>,
    last_seen: Instant,
}

/// A mapping as tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaptMapping {
    /// The inside host's address and port.
    pub private: SocketAddrV4,
    /// The outside peer's address and port.
    pub remote: SocketAddrV4,
    /// The public address and port the NAPT maps the flow to.
    pub public: SocketAddrV4,
}

/// The TCP fields the NAPT reads, from a packet checked just enough.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Total length: the packet without link-layer padding.
    total: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: SeqNumber,
    ack: SeqNumber,
    syn: bool,
    ack_flag: bool,
    rst: bool,
    fin: bool,
    payload: usize,
    window: u16,
    wscale: Option<u8>,
}

fn parse(packet: &[u8]) -> Option<Header> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.protocol() != PROTOCOL_TCP {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    // Window scale (kind 3, length 3), as conntrack's tcp_options reads it.
    let mut wscale = None;
    let mut options = tcp.options();
    while let [kind, rest @ ..] = options {
        match kind {
            0 => break,
            1 => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if len < 2 || len > options.len() {
                    break;
                }
                if *kind == 3 && len == 3 {
                    wscale = Some(options[2].min(14));
                }
                options = &options[len..];
            }
        }
    }
    let flags = tcp.flags();
    Some(Header {
        total: usize::from(ip.total_len()),
        src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        syn: flags.syn(),
        ack_flag: flags.ack(),
        rst: flags.rst(),
        fin: flags.fin(),
        payload: tcp.payload().len(),
        window: tcp.window_len(),
        wscale,
    })
}

/// Writes new addresses and ports and recomputes both checksums.
fn rewrite(packet: &mut [u8], h: &Header, src: SocketAddrV4, dst: SocketAddrV4) {
    let mut ip = Ipv4Packet::new_unchecked(&mut packet[..h.total]);
    ip.set_src_addr(*src.ip());
    ip.set_dst_addr(*dst.ip());
    ip.fill_checksum();
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_src_port(src.port());
    tcp.set_dst_port(dst.port());
    tcp.fill_checksum(*src.ip(), *dst.ip());
}

/// Why the tracker refused a segment.
enum Refusal {
    BadSynAck,
    AckOverBound,
    SeqOverBound,
    Invalid,
}

impl Mapping {
    /// A SYN-ACK starts window tracking: scales from the SYN pair, the
    /// inside's bound from the SYN-ACK's unscaled window, the outside's
    /// at the SYN-ACK's end (Linux: td_maxend = end until an ACK).
    fn learn_synack(&mut self, h: &Header, end: SeqNumber) {
        self.inside_ws = self.syn_ws;
        self.outside_ws = h.wscale;
        self.inside_maxend = Some(h.ack + usize::from(h.window));
        self.outside_maxend = Some(end);
    }

    /// Linux `tcp_in_window`, reduced to the checks PROTOCOL.md §10 relies
    /// on: the SYN-ACK acknowledges SYN.seq + 1; no ACK exceeds what the
    /// other side has sent.
    fn track(&mut self, from_inside: bool, h: &Header) -> Result<(), Refusal> {
        let len = h.payload + usize::from(h.syn) + usize::from(h.fin);
        let end = h.seq + len;
        if h.syn && !h.ack_flag {
            if !from_inside {
                return Err(Refusal::Invalid);
            }
            self.syn_ws = h.wscale;
            if self.state == TrackState::SynSent {
                // A retransmitted SYN (MSYN): the newest is answered.
                self.syn_seq = h.seq;
                self.inside_end = self.inside_end.max(end);
            } else {
                // Past the handshake a SYN is only a possible reopen; it
                // passes without touching the tracking (Linux: IGNORE).
                self.reopen_syn = Some(h.seq);
            }
            return Ok(());
        }
        if h.syn {
            // SYN-ACK: only from outside, only answering a tracked SYN.
            if from_inside {
                return Err(Refusal::Invalid);
            }
            if let Some(syn) = self.reopen_syn.filter(|&s| h.ack == s + 1) {
                // The reopen was answered: track the new handshake.
                self.reopen_syn = None;
                self.syn_seq = syn;
                self.state = TrackState::SynRecv;
                self.inside_end = syn + 1;
                self.outside_end = Some(end);
                self.learn_synack(h, end);
                return Ok(());
            }
            if h.ack != self.syn_seq + 1 {
                return Err(Refusal::BadSynAck);
            }
            if self.state != TrackState::Established {
                self.learn_synack(h, end);
            }
            if self.state != TrackState::Established {
                self.state = TrackState::SynRecv;
            }
            // A retransmitted SYN-ACK in ESTABLISHED passes unchanged.
            self.outside_end = Some(self.outside_end.map_or(end, |e| e.max(end)));
            return Ok(());
        }
        if h.rst {
            // A refusal of the SYN (RST,ACK acking SYN.seq + 1) or a reset
            // of a tracked connection passes; the tracker does not police
            // RST sequence numbers here.
            return Ok(());
        }
        let Some(outside_end) = self.outside_end else {
            return Err(Refusal::Invalid);
        };
        let other_end = if from_inside {
            outside_end
        } else {
            self.inside_end
        };
        if h.ack_flag && h.ack > other_end {
            return Err(Refusal::AckOverBound);
        }
        // Condition I: every segment, pure ACKs included, starts at or
        // below td_maxend (Linux `tcp_in_window`: `before(seq,
        // sender->td_maxend + 1)`, whatever the length; until session 13
        // this model held only data to it).
        let maxend = if from_inside {
            self.inside_maxend
        } else {
            self.outside_maxend
        };
        if maxend.is_some_and(|m| h.seq > m) {
            return Err(Refusal::SeqOverBound);
        }
        if h.ack_flag {
            // The receiver's data may now reach SEG.ACK + scaled window.
            let scaled = |ws: Option<u8>| match (self.inside_ws, self.outside_ws) {
                (Some(_), Some(_)) => usize::from(h.window) << ws.unwrap_or(0),
                _ => usize::from(h.window),
            };
            if from_inside {
                let edge = h.ack + scaled(self.inside_ws);
                self.outside_maxend = Some(self.outside_maxend.map_or(edge, |m| m.max(edge)));
            } else {
                let edge = h.ack + scaled(self.outside_ws);
                self.inside_maxend = Some(self.inside_maxend.map_or(edge, |m| m.max(edge)));
            }
        }
        if from_inside {
            self.inside_end = self.inside_end.max(end);
            if self.state == TrackState::SynRecv && h.ack_flag {
                self.state = TrackState::Established;
            }
        } else {
            self.outside_end = Some(outside_end.max(end));
        }
        Ok(())
    }
}

/// The NAPT. Deterministic: ports are handed out in order.
#[derive(Debug)]
pub struct Napt {
    public: Ipv4Addr,
    first_port: u16,
    next_port: u16,
    idle_timeout: Duration,
    flows: BTreeMap<(SocketAddrV4, SocketAddrV4), Mapping>,
    by_public: BTreeMap<(u16, SocketAddrV4), (SocketAddrV4, SocketAddrV4)>,
    used_ports: BTreeSet<u16>,
    last_sweep: Instant,
    stats: NaptStats,
}

impl Napt {
    /// A NAPT with public address `public`, ports from 20000 up, mappings
    /// expiring after 300 s idle.
    pub fn new(public: Ipv4Addr) -> Napt {
        Napt::with_ports(public, 20_000)
    }

    /// Public ports are allocated from `first_port` up (wrapping to it).
    pub fn with_ports(public: Ipv4Addr, first_port: u16) -> Napt {
        Napt {
            public,
            first_port,
            next_port: first_port,
            idle_timeout: Duration::from_secs(300),
            flows: BTreeMap::new(),
            by_public: BTreeMap::new(),
            used_ports: BTreeSet::new(),
            last_sweep: Instant::ZERO,
            stats: NaptStats::default(),
        }
    }

    /// Sets how long a mapping lives without traffic.
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle_timeout = idle;
    }

    /// The NAPT's public address.
    pub fn public_addr(&self) -> Ipv4Addr {
        self.public
    }

    /// Its counters.
    pub fn stats(&self) -> &NaptStats {
        &self.stats
    }

    /// Live mappings, in (private, remote) order.
    pub fn mappings(&self) -> Vec<NaptMapping> {
        self.flows
            .iter()
            .map(|(&(private, remote), m)| NaptMapping {
                private,
                remote,
                public: SocketAddrV4::new(self.public, m.public_port),
            })
            .collect()
    }

    fn allocate_port(&mut self) -> Option<u16> {
        let span = u32::from(u16::MAX - self.first_port) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                self.first_port
            } else {
                port + 1
            };
            if !self.used_ports.contains(&port) {
                self.used_ports.insert(port);
                return Some(port);
            }
        }
        None
    }

    fn remove(&mut self, key: (SocketAddrV4, SocketAddrV4)) {
        if let Some(m) = self.flows.remove(&key) {
            self.by_public.remove(&(m.public_port, key.1));
            self.used_ports.remove(&m.public_port);
        }
    }

    /// Drops mappings idle longer than the timeout (at most once a second).
    fn sweep(&mut self, now: Instant) {
        if now - self.last_sweep < Duration::from_secs(1) && self.last_sweep != Instant::ZERO {
            return;
        }
        self.last_sweep = now;
        let idle = self.idle_timeout;
        let expired: Vec<_> = self
            .flows
            .iter()
            .filter(|(_, m)| now - m.last_seen > idle)
            .map(|(&k, _)| k)
            .collect();
        for key in expired {
            self.stats.mappings_expired += 1;
            self.remove(key);
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> bool {
        match refusal {
            Refusal::BadSynAck => self.stats.bad_synack_dropped += 1,
            Refusal::AckOverBound => self.stats.ack_over_bound_dropped += 1,
            Refusal::SeqOverBound => self.stats.seq_over_bound_dropped += 1,
            Refusal::Invalid => self.stats.invalid_dropped += 1,
        }
        false
    }

    fn outbound(&mut self, now: Instant, packet: &mut [u8], h: &Header) -> bool {
        let key = (h.src, h.dst);
        if !self.flows.contains_key(&key) {
            if !h.syn || h.ack_flag {
                self.stats.no_mapping_dropped += 1;
                return false;
            }
            let Some(port) = self.allocate_port() else {
                self.stats.ports_exhausted += 1;
                return false;
            };
            self.flows.insert(
                key,
                Mapping {
                    public_port: port,
                    state: TrackState::SynSent,
                    syn_seq: h.seq,
                    inside_end: h.seq,
                    outside_end: None,
                    reopen_syn: None,
                    syn_ws: None,
                    inside_ws: None,
                    outside_ws: None,
                    inside_maxend: None,
                    outside_maxend: None,
                    last_seen: now,
                },
            );
            self.by_public.insert((port, h.dst), key);
            self.stats.mappings_created += 1;
        }
        let Some(mapping) = self.flows.get_mut(&key) else {
            return false;
        };
        if let Err(refusal) = mapping.track(true, h) {
            return self.refuse(refusal);
        }
        mapping.last_seen = now;
        let public = SocketAddrV4::new(self.public, mapping.public_port);
        rewrite(packet, h, public, h.dst);
        self.stats.translated_out += 1;
        true
    }

    fn inbound(&mut self, now: Instant, packet: &mut [u8], h: &Header) -> bool {
        let Some(&key) = (*h.dst.ip() == self.public)
            .then(|| self.by_public.get(&(h.dst.port(), h.src)))
            .flatten()
        else {
            self.stats.unsolicited_dropped += 1;
            return false;
        };
        let Some(mapping) = self.flows.get_mut(&key) else {
            self.stats.unsolicited_dropped += 1;
            return false;
        };
        if let Err(refusal) = mapping.track(false, h) {
            return self.refuse(refusal);
        }
        mapping.last_seen = now;
        rewrite(packet, h, h.src, key.0);
        self.stats.translated_in += 1;
        true
    }
}

impl Middlebox for Napt {
    fn process(&mut self, now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool {
        self.sweep(now);
        let Some(h) = parse(packet) else {
            self.stats.invalid_dropped += 1;
            return false;
        };
        match direction {
            Direction::Outbound => self.outbound(now, packet, &h),
            Direction::Inbound => self.inbound(now, packet, &h),
        }
    }
}
