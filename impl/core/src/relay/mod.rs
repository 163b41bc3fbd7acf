//! The symmetric proxy's relay, sans-IO (PROTOCOL.md §3.5, §6.9, §11.5).
//!
//! Read first: PROTOCOL.md §6.9 (the relay procedure), §4.7 (tickets) and
//! §7 (sequence numbers). When both ends of a connection are behind NAPTs
//! the mobility server asks the proxy for a relay port ([`Relay::allocate`])
//! and gives each end the proxy's address, that port and a ticket for its
//! leg. Each end sends the proxy an MSYN carrying Relay-Ticket instead of
//! Migrate; the proxy checks it with the ticket's key (never with connection
//! keys, which it does not have), and once both legs have sent one it
//! answers each with an MSYN-ACK whose sequence number is the *other* end's
//! MSYN sequence number: each end's stream continues as if the other had
//! answered, and the splice needs no sequence offset at all. From then on it
//! forwards segments between the legs rewriting only addresses, ports and
//! checksums ([`rewrite_ipv4_tcp_endpoints`]): ACKs, SACK blocks, windows
//! and timestamps are the ends' own.
//!
//! One relay is a small state machine ([`RelayState`]): waiting for the
//! first leg, waiting for the second, spliced, one leg moving (a relayed end
//! sent a new MSYN: still behind a NAPT, it is answered and the splice goes
//! on; now global, it is refused with an RST and the relay released), closed
//! (FIN both ways, RST, idle, or never completed). Nothing is buffered.
//!
//! Driven like the TCP endpoint: [`Relay::handle_packet`],
//! [`Relay::handle_timeout`] when [`Relay::poll_timeout`] is due, then
//! [`Relay::poll_transmit`] and [`Relay::poll_event`] until `None`.

pub mod control;
pub mod ticket;

use core::cmp::Reverse;
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use thiserror::Error;

pub use ticket::{HostTicket, RelaySecret, SecretError, TicketId, TicketKey, TicketMacInput};

use crate::auth::{new_nonce, ReplayWindow, RequestCheck, RequestNumber};
use crate::rand::Random;
use crate::tcp::handshake;
use crate::time::{Duration, Instant};
use crate::wire::{
    emit_ipv4_tcp, parse_ipv4_tcp, rewrite_ipv4_tcp_ack, rewrite_ipv4_tcp_endpoints,
    rewrite_ipv4_tcp_seq, Ipv4Repr, MigrationOptions, MigrationScratch, OptionScratch, RelayMsyn,
    SeqNumber, TcpFlags, TcpRepr,
};
use crate::Transmit;

/// How often idle relays are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// Tunables of a relay proxy.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The proxy's (global) address: relay ports live there.
    pub addr: Ipv4Addr,
    /// First and last relay port.
    pub ports: (u16, u16),
    /// A spliced relay with no segment either way for this long is
    /// released. Longer than a host's MIG_WAIT plus its keep-alives
    /// (PROTOCOL.md §8.2: 120 s + 4 × 10 s), so a relayed end between
    /// networks keeps its relay: 300 s.
    pub idle_timeout: Duration,
    /// After FINs both ways (or an RST) the relay lingers this long for
    /// the last ACKs, then is released (10 s).
    pub close_linger: Duration,
    /// First MSYN-ACK retransmission interval (1 s, doubling, as §8.2).
    pub msyn_ack_t0: Duration,
    /// MSYN-ACK retransmissions before the proxy waits for a new MSYN (4).
    pub msyn_ack_retries: u32,
    /// Ticket MAC verifications per second, all relays together (§11.8).
    pub mac_verifications_per_second: u32,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            addr: Ipv4Addr::UNSPECIFIED,
            ports: (40000, 40999),
            idle_timeout: Duration::from_secs(300),
            close_linger: Duration::from_secs(10),
            msyn_ack_t0: Duration::from_secs(1),
            msyn_ack_retries: 4,
            mac_verifications_per_second: 10_000,
        }
    }
}

/// Where one relay stands (DESIGN.md: "The proxy splices").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayState {
    /// Allocated; no leg has sent a valid MSYN yet.
    WaitingFirst,
    /// One leg's MSYN arrived; it is answered when the other's does.
    WaitingSecond,
    /// Both legs confirmed: segments are forwarded.
    Spliced,
    /// A leg sent a new MSYN (or its first path is not yet confirmed):
    /// segments towards it are forwarded to where that MSYN came from while
    /// its MSYN-ACK is being retransmitted; its own wait for its Confirm.
    LegMoving,
    /// Released: FIN both ways, RST, idle, refused, or never completed.
    Closed,
}

/// Why a relay was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseReason {
    /// FIN seen both ways (after the linger).
    Finished,
    /// An RST crossed the relay.
    Reset,
    /// No segment for [`RelayConfig::idle_timeout`].
    Idle,
    /// Not spliced within the lifetime given at allocation.
    Expired,
    /// A relayed end came back from a global address (PROTOCOL.md §6.9).
    LegWentGlobal,
    /// [`Relay::release`] was called (the server gave up on it).
    Released,
}

/// What the relay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// [`Relay::allocate`] reserved `port` (the runtime installs its
    /// RST-guard rule).
    Allocated {
        /// The relay port.
        port: u16,
    },
    /// A leg's MSYN was accepted (first time, or after a move).
    LegAttached {
        /// The relay port.
        port: u16,
        /// Which leg: 0 for the first ticket of the pair, 1 for the second.
        leg: usize,
        /// The leg's address and port as observed (after any NAPT).
        remote: SocketAddrV4,
        /// The leg is behind a NAPT (Permit != observed source): always, since a global end is refused.
        behind_napt: bool,
    },
    /// Both legs confirmed: the relay forwards.
    Spliced {
        /// The relay port.
        port: u16,
    },
    /// A relayed end sent a valid MSYN from a global address: refused
    /// with an RST; the relay is released.
    Refused {
        /// The relay port.
        port: u16,
        /// The leg that went global (0 or 1).
        leg: usize,
    },
    /// The relay is gone and its port free again.
    Released {
        /// The relay port, free again.
        port: u16,
        /// Why it was released.
        reason: ReleaseReason,
    },
}

/// Why [`Relay::allocate`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RelayError {
    /// Every port of the relay range is in use.
    #[error("no relay port is free")]
    NoFreePort,
    /// Both legs were given the same ticket id.
    #[error("the two ticket ids must differ")]
    SameTicket,
}

/// Counters (PROTOCOL.md §11.5: every refusal is counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Packets handed to the relay.
    pub packets_in: u64,
    /// Packets that failed to parse, or could not be rewritten.
    pub malformed: u64,
    /// Relays allocated.
    pub allocated: u64,
    /// Relays released, for any reason.
    pub released: u64,
    /// SYNs without ACK received (MSYNs or not).
    pub msyns: u64,
    /// MSYNs to a port with no relay.
    pub unknown_port: u64,
    /// MSYNs naming a ticket that is not one of the port's two.
    pub unknown_ticket: u64,
    /// MSYNs whose MAC did not verify under the ticket's key (forged, or a
    /// ticket of another port or proxy).
    pub bad_mac: u64,
    /// Stale or repeated request numbers (replayed MSYNs).
    pub replayed: u64,
    /// MSYNs dropped by the MAC-verification budget.
    pub rate_limited: u64,
    /// SYNs to a relay port that are not relay MSYNs.
    pub not_relay_msyn: u64,
    /// Valid MSYNs from an end no longer behind a NAPT, refused with RST.
    pub refused_global: u64,
    /// MSYN-ACKs sent, first ones and retransmissions.
    pub msyn_acks_sent: u64,
    /// Legs whose path was confirmed by the echoed nonce (PROTOCOL.md §6.5).
    pub confirms: u64,
    /// Segments rewritten and forwarded to the other leg.
    pub forwarded: u64,
    /// Segments from a leg whose path is not confirmed, or towards a leg
    /// neither confirmed nor answering a fresh MSYN (§6.9), dropped.
    pub dropped_unconfirmed: u64,
    /// Segments to a relay port from neither leg's current address.
    pub stray: u64,
    /// ACKs lowered to a moved leg's path_high (§6.9, §7).
    pub acks_clamped: u64,
    /// The other end's latest pure ACK sent right after an MSYN-ACK to a
    /// leg on a new path (§6.9 "Moving again": its NAPT's window).
    pub window_acks: u64,
}

/// One leg: what the proxy knows of one end (PROTOCOL.md §6.9).
#[derive(Debug, Clone)]
struct Leg {
    /// The end's address and port as the proxy sees them (after its NAPT).
    remote: SocketAddrV4,
    /// Its direct address from the MSYN's Permit (the MAC covers it).
    direct: SocketAddrV4,
    replay: ReplayWindow,
    /// The accepted MSYN: request, SEG.SEQ (= the end's SND.UNA - 1),
    /// window scale.
    request: RequestNumber,
    msyn_seq: SeqNumber,
    wscale: Option<u8>,
    /// The MSYN-ACK due or sent and not yet confirmed.
    pending: Option<Pending>,
    confirmed: bool,
    /// When the current path was confirmed.
    confirmed_at: Option<Instant>,
    /// Highest ACK field seen from this end (in the other end's sequence
    /// space): a lower bound of its RCV.NXT.
    acked: Option<SeqNumber>,
    /// This end's RCV.NXT as its last Confirm stated it, or `acked`.
    rcv_nxt: Option<SeqNumber>,
    /// Its right edge: ACK + scaled window of its latest segment.
    right_edge: Option<SeqNumber>,
    /// The latest pure ACK from this end that was dropped because the other
    /// leg was not yet confirmed (one packet, no payload): delivered when
    /// it is (§6.9).
    saved_ack: Option<Vec<u8>>,
    /// This end's latest pure ACK without sustain options, forwarded or
    /// not: after an MSYN-ACK to the *other* leg on a new path, it follows
    /// as that path's window ACK (§6.9 "Moving again"). One small packet,
    /// its buffer reused.
    last_ack: Option<Vec<u8>>,
    /// The ACK clamp of §7, kept by the proxy for this leg's NAPT: the
    /// highest SEG.SEQ + SEG.LEN this end sent on its current path
    /// (from its MSYN.seq + 1). ACKs forwarded to it never exceed it.
    path_high: SeqNumber,
    fin: bool,
}

impl Leg {
    /// Whether a segment from `src` may be forwarded towards this leg
    /// (PROTOCOL.md §6.9 "Forwarding"). Yes if this leg's path is
    /// confirmed. Also yes, before its Confirm, if its current remote is
    /// where a fresh MSYN proving this leg's ticket came from, the proxy is
    /// still answering that MSYN, and `src` confirmed its own path after
    /// this leg's MSYN-ACK left: `src`'s segments are then replies to the
    /// same round and reach this leg's NAPT after its Confirm went out
    /// (§10: before that the tracker drops data beyond the MSYN-ACK). A
    /// spoofed source cannot make a valid MSYN (the ticket key is secret
    /// and per leg) and a replayed one is refused (§4.5), so nothing goes
    /// anywhere the ticket's holder did not ask for.
    fn reachable_from(&self, src: &Leg) -> bool {
        if self.confirmed {
            return true;
        }
        self.pending.is_some_and(|p| {
            p.deadline.is_some()
                && p.answered
                    .zip(src.confirmed_at)
                    .is_some_and(|(answered, confirmed)| confirmed >= answered)
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    nonce: u32,
    attempts: u32,
    interval: Duration,
    /// `None` while waiting for the other leg's MSYN.
    deadline: Option<Instant>,
    /// When this MSYN was first answered.
    answered: Option<Instant>,
    send_now: bool,
}

/// One relay: a port, its two tickets and legs.
#[derive(Debug)]
struct Entry {
    tickets: [TicketId; 2],
    keys: [TicketKey; 2],
    legs: [Option<Leg>; 2],
    /// Until splicing: the lifetime given at allocation.
    expires: Option<Instant>,
    last_activity: Instant,
    /// Set once the relay is finishing (FIN both ways, RST).
    closing: Option<(Instant, ReleaseReason)>,
}

impl Entry {
    fn state(&self) -> RelayState {
        match (&self.legs[0], &self.legs[1]) {
            (None, None) => RelayState::WaitingFirst,
            (Some(_), None) | (None, Some(_)) => RelayState::WaitingSecond,
            (Some(a), Some(b)) if a.confirmed && b.confirmed => RelayState::Spliced,
            _ => RelayState::LegMoving,
        }
    }
}

/// Per-second budget of MAC verifications (PROTOCOL.md §11.8).
#[derive(Debug)]
struct Budget {
    per_second: u32,
    window: Option<Instant>,
    used: u32,
}

impl Budget {
    fn allow(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now - w >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.used = 0;
        }
        self.used += 1;
        self.used <= self.per_second
    }
}

/// The proxy's relay table (sans-IO).
pub struct Relay {
    cfg: RelayConfig,
    secret: RelaySecret,
    rng: Box<dyn Random + Send>,
    entries: BTreeMap<u16, Entry>,
    /// Lazy deadlines (stale ones are harmless): see `handle_timeout`.
    timers: BinaryHeap<Reverse<(Instant, u16)>>,
    next_sweep: Instant,
    next_port: u16,
    budget: Budget,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<RelayEvent>,
    stats: RelayStats,
}

impl core::fmt::Debug for Relay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Relay")
            .field("relays", &self.entries.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay configured by `cfg` that derives ticket keys from `secret` (PROTOCOL.md §4.7).
    pub fn new(cfg: RelayConfig, secret: RelaySecret, rng: Box<dyn Random + Send>) -> Relay {
        let budget = Budget {
            per_second: cfg.mac_verifications_per_second,
            window: None,
            used: 0,
        };
        Relay {
            next_port: cfg.ports.0,
            cfg,
            secret,
            rng,
            entries: BTreeMap::new(),
            timers: BinaryHeap::new(),
            next_sweep: Instant::ZERO,
            budget,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: RelayStats::default(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Its counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Relays in the table.
    pub fn relay_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether `port` is an allocated relay port.
    pub fn owns_port(&self, port: u16) -> bool {
        self.entries.contains_key(&port)
    }

    /// The state of the relay on `port` (`Closed` if there is none).
    pub fn state(&self, port: u16) -> RelayState {
        self.entries
            .get(&port)
            .map_or(RelayState::Closed, Entry::state)
    }

    /// The server's request (PROTOCOL.md §15.14): a relay port for the two
    /// legs' ticket ids (low side first), to be spliced within `lifetime`.
    /// The server derives the ticket keys itself
    /// ([`RelaySecret::ticket_key`] with the port returned) and sends each
    /// end its RelayAssignment.
    pub fn allocate(
        &mut self,
        now: Instant,
        tickets: [TicketId; 2],
        lifetime: Duration,
    ) -> Result<u16, RelayError> {
        if tickets[0] == tickets[1] {
            return Err(RelayError::SameTicket);
        }
        let (lo, hi) = self.cfg.ports;
        let count = u32::from(hi.saturating_sub(lo)) + 1;
        let mut port = None;
        for i in 0..count {
            let candidate = lo + ((u32::from(self.next_port - lo) + i) % count) as u16;
            if !self.entries.contains_key(&candidate) {
                port = Some(candidate);
                break;
            }
        }
        let port = port.ok_or(RelayError::NoFreePort)?;
        self.next_port = if port == hi { lo } else { port + 1 };
        let keys = [
            self.secret.ticket_key(port, tickets[0]),
            self.secret.ticket_key(port, tickets[1]),
        ];
        self.timers.push(Reverse((now + lifetime, port)));
        self.entries.insert(
            port,
            Entry {
                tickets,
                keys,
                legs: [None, None],
                expires: Some(now + lifetime),
                last_activity: now,
                closing: None,
            },
        );
        self.stats.allocated += 1;
        self.events.push_back(RelayEvent::Allocated { port });
        Ok(port)
    }

    /// Frees a relay port now.
    pub fn release(&mut self, port: u16) {
        self.remove(port, ReleaseReason::Released);
    }

    fn remove(&mut self, port: u16, reason: ReleaseReason) {
        if self.entries.remove(&port).is_some() {
            self.stats.released += 1;
            self.events.push_back(RelayEvent::Released { port, reason });
        }
    }

    /// One IPv4 packet addressed to the proxy.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.input(now, packet, None);
    }

    /// As [`handle_packet`](Self::handle_packet), but a segment to forward
    /// is written, rewritten, straight into `out` (a send slot of at least
    /// the packet's length) and its length returned: the datapath's copy
    /// without an allocation. Handshake answers still come from
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_packet_into(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let n = self.input(now, packet, Some(&mut *out))?;
        Transmit::of_packet(out.get(..n)?)
    }

    fn input(&mut self, now: Instant, packet: &[u8], out: Option<&mut [u8]>) -> Option<usize> {
        self.stats.packets_in += 1;
        let Ok((ip, seg)) = parse_ipv4_tcp(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        if ip.dst != self.cfg.addr {
            self.stats.stray += 1;
            return None;
        }
        let port = seg.dst_port;
        let from = SocketAddrV4::new(ip.src, seg.src_port);
        let options = MigrationOptions::from_repr(&seg).unwrap_or_default();
        let flags = seg.flags;
        if flags.syn() && !flags.ack() {
            self.stats.msyns += 1;
            // PROTOCOL.md §6.9 step 1: a relay MSYN or nothing.
            let Some((msyn, permit)) = handshake::classify_relay_msyn(&seg, &options) else {
                self.stats.not_relay_msyn += 1;
                return None;
            };
            self.on_msyn(now, port, from, &seg, &msyn, permit.direct());
            return None;
        }
        let Some(entry) = self.entries.get_mut(&port) else {
            self.stats.unknown_port += 1;
            return None;
        };
        let Some(i) = (0..2).find(|&i| entry.legs[i].as_ref().is_some_and(|l| l.remote == from))
        else {
            // A leg's old address after it moved, or anybody else: never
            // answered (an RST could reach the moved end's old peer).
            self.stats.stray += 1;
            return None;
        };
        let j = 1 - i;
        entry.last_activity = now;
        let mut became_spliced = false;
        {
            let leg = entry.legs[i].as_mut()?;
            // §6.5 at the proxy: the Confirm echoing the pending nonce.
            if let Some(p) = leg.pending {
                if let Some(received) = handshake::confirm_matches(&options, leg.request, p.nonce) {
                    leg.pending = None;
                    leg.confirmed = true;
                    leg.confirmed_at = Some(now);
                    self.stats.confirms += 1;
                    if let (Some(r), true) = (received, flags.ack()) {
                        leg.rcv_nxt = Some(max_seq(leg.rcv_nxt, seg.ack + r as usize));
                    }
                    became_spliced = true;
                }
            }
            if flags.ack() {
                leg.acked = Some(max_seq(leg.acked, seg.ack));
                leg.rcv_nxt = Some(max_seq(leg.rcv_nxt, seg.ack));
                let window = usize::from(seg.window) << leg.wscale.unwrap_or(0);
                leg.right_edge = Some(max_seq(leg.right_edge, seg.ack + window));
            }
            if flags.fin() {
                leg.fin = true;
            }
            let len = seg.segment_len();
            if len > 0 {
                let end = seg.seq + len;
                // A plausible advance only (within 1 GiB, RFC 7323's
                // largest window), so garbage cannot open the clamp.
                if end > leg.path_high && end - leg.path_high <= 1 << 30 {
                    leg.path_high = end;
                }
            }
        }
        if became_spliced && entry.state() == RelayState::Spliced {
            entry.expires = None;
            self.events.push_back(RelayEvent::Spliced { port });
        }
        if became_spliced {
            // §6.9: the other end's latest pure ACK, dropped while this leg
            // was unconfirmed, carries its window (and, for a fresh splice,
            // opens td_maxend on this leg's NAPT): deliver it now.
            let saved = entry.legs[j].as_mut().and_then(|l| l.saved_ack.take());
            if let (Some(saved), Some(src), Some(dst)) = (saved, &entry.legs[j], &entry.legs[i]) {
                if src.confirmed && dst.confirmed {
                    if let Ok((_, s)) = parse_ipv4_tcp(&saved) {
                        let (ack, window) = (s.ack, s.window);
                        if let Some((bytes, clamped)) =
                            splice_copy(self.cfg.addr, port, src, dst, &saved, Some(ack), window)
                        {
                            self.out.push_back(bytes);
                            self.stats.forwarded += 1;
                            self.stats.acks_clamped += u64::from(clamped);
                        }
                    }
                }
            }
        }
        let pure_ack =
            seg.payload.is_empty() && flags.ack() && !flags.syn() && !flags.fin() && !flags.rst();
        if pure_ack && options.migrate.is_none() && options.address_update.is_none() {
            if let Some(leg) = entry.legs[i].as_mut().filter(|l| l.confirmed) {
                keep(&mut leg.last_ack, packet);
            }
        }
        let (Some(src_leg), Some(dst_leg)) = (&entry.legs[i], &entry.legs[j]) else {
            self.stats.dropped_unconfirmed += 1;
            return None;
        };
        // PROTOCOL.md §6.9 "Forwarding": from a confirmed leg only, and
        // towards a leg that is confirmed or whose fresh MSYN, authenticated
        // with its ticket, came from the address it is sent to and is still
        // being answered (its MSYN-ACK timer runs). Waiting for that leg's
        // Confirm as well would drop what the faster end sends after its
        // own Confirm and cost it a retransmission timeout.
        if !src_leg.confirmed || !dst_leg.reachable_from(src_leg) {
            self.stats.dropped_unconfirmed += 1;
            if pure_ack && src_leg.confirmed {
                if let Some(leg) = entry.legs[i].as_mut() {
                    keep(&mut leg.saved_ack, packet);
                }
            }
            return None;
        }
        // A pure ACK forwarded to a leg that is answered but not confirmed
        // may meet that leg's NAPT before the leg's Confirm has left it,
        // and be dropped there (§10); it is kept, as one dropped here
        // would be, and sent again when that leg confirms (§6.9 "The
        // first splice": the other end learns this end's window from it).
        let resend_on_confirm = pure_ack && !dst_leg.confirmed;
        let ack = flags.ack().then_some(seg.ack);
        let addr = self.cfg.addr;
        let written = match out {
            Some(out) => splice_into(addr, port, src_leg, dst_leg, packet, ack, seg.window, out)
                .map(|(n, clamped)| (Some(n), clamped)),
            None => splice_copy(addr, port, src_leg, dst_leg, packet, ack, seg.window).map(
                |(bytes, clamped)| {
                    self.out.push_back(bytes);
                    (None, clamped)
                },
            ),
        };
        let Some((written, clamped)) = written else {
            self.stats.malformed += 1;
            return None;
        };
        self.stats.acks_clamped += u64::from(clamped);
        self.stats.forwarded += 1;
        if resend_on_confirm {
            if let Some(leg) = entry.legs[i].as_mut() {
                keep(&mut leg.saved_ack, packet);
            }
        }
        if flags.rst() {
            entry.closing = Some((now, ReleaseReason::Reset));
            self.timers.push(Reverse((now, port)));
        } else if entry.legs.iter().flatten().all(|l| l.fin) && entry.closing.is_none() {
            entry.closing = Some((now + self.cfg.close_linger, ReleaseReason::Finished));
            self.timers
                .push(Reverse((now + self.cfg.close_linger, port)));
        }
        written
    }

    /// PROTOCOL.md §6.9 steps 2-7 for one relay MSYN. Every refusal before
    /// the MAC verified is a counted drop that creates no state.
    fn on_msyn(
        &mut self,
        now: Instant,
        port: u16,
        from: SocketAddrV4,
        seg: &TcpRepr<'_>,
        msyn: &RelayMsyn,
        direct: SocketAddrV4,
    ) {
        let Some(entry) = self.entries.get_mut(&port) else {
            self.stats.unknown_port += 1;
            return;
        };
        let Some(i) = entry.tickets.iter().position(|t| t.0 == msyn.ticket) else {
            self.stats.unknown_ticket += 1;
            return;
        };
        if !self.budget.allow(now) {
            self.stats.rate_limited += 1;
            return;
        }
        let request = RequestNumber(msyn.request);
        if let Some(leg) = &mut entry.legs[i] {
            match leg.replay.check(request) {
                RequestCheck::Fresh => {}
                RequestCheck::Repeat => {
                    // A network duplicate of the MSYN being answered.
                    if let Some(p) = leg.pending.as_mut() {
                        if leg.remote == from && leg.direct == direct && p.deadline.is_some() {
                            p.send_now = true;
                            return;
                        }
                    }
                    self.stats.replayed += 1;
                    return;
                }
                RequestCheck::Stale => {
                    self.stats.replayed += 1;
                    return;
                }
            }
        }
        if !handshake::verify_relay_msyn(
            &entry.keys[i],
            msyn,
            &handshake::short_permit(direct),
            seg.ack,
        ) {
            self.stats.bad_mac += 1;
            return;
        }
        // §6.9 step 6: an end outside any NAPT needs no relay: refuse with
        // <SEQ=0><ACK=MSYN.seq+1><CTL=RST,ACK> (§6.8), release the relay.
        if direct == from {
            self.stats.refused_global += 1;
            let rst = TcpRepr {
                src_port: port,
                dst_port: from.port(),
                seq: SeqNumber(0),
                ack: seg.seq + 1,
                flags: TcpFlags::RST | TcpFlags::ACK,
                ..TcpRepr::default()
            };
            self.emit(self.cfg.addr, from, &rst);
            self.events.push_back(RelayEvent::Refused { port, leg: i });
            self.remove(port, ReleaseReason::LegWentGlobal);
            return;
        }
        // Accept.
        let nonce = new_nonce(&mut *self.rng);
        let previous = entry.legs[i].take();
        let mut replay = previous
            .as_ref()
            .map(|l| l.replay.clone())
            .unwrap_or_default();
        replay.accept(request);
        let leg = Leg {
            remote: from,
            direct,
            replay,
            request,
            msyn_seq: seg.seq,
            wscale: seg.window_scale,
            pending: Some(Pending {
                nonce,
                attempts: 0,
                interval: self.cfg.msyn_ack_t0,
                deadline: None,
                answered: None,
                send_now: false,
            }),
            confirmed: false,
            confirmed_at: None,
            acked: previous.as_ref().and_then(|l| l.acked),
            // §6.9: the MSYN's ACK field is the end's RCV.NXT (the MAC
            // covers it): the other end resumes from there.
            rcv_nxt: Some(max_seq(previous.as_ref().and_then(|l| l.rcv_nxt), seg.ack)),
            right_edge: previous.as_ref().and_then(|l| l.right_edge),
            path_high: seg.seq + 1,
            saved_ack: None,
            last_ack: previous.as_ref().and_then(|l| l.last_ack.clone()),
            fin: previous.as_ref().is_some_and(|l| l.fin),
        };
        entry.legs[i] = Some(leg);
        entry.last_activity = now;
        self.events.push_back(RelayEvent::LegAttached {
            port,
            leg: i,
            remote: from,
            behind_napt: true,
        });
        // Answer every leg whose MSYN waits, once both are known.
        if entry.legs.iter().all(Option::is_some) {
            for k in 0..2 {
                if let Some(p) = entry.legs[k].as_mut().and_then(|l| l.pending.as_mut()) {
                    if k == i || p.deadline.is_none() {
                        p.send_now = true;
                        p.deadline = Some(now + p.interval);
                        p.answered.get_or_insert(now);
                        self.timers.push(Reverse((now + p.interval, port)));
                    }
                }
            }
        }
        // The leg that waited first: the order on the wire then follows
        // the MSYNs' order, not the tickets' (which side is "low" differs
        // from connection to connection).
        self.send_due(port, 1 - i);
    }

    /// Sends the MSYN-ACKs that are due on `port`, leg `first` first.
    fn send_due(&mut self, port: u16, first: usize) {
        let Some(entry) = self.entries.get_mut(&port) else {
            return;
        };
        let mut packets = Vec::new();
        for i in [first, 1 - first] {
            let due = entry.legs[i]
                .as_ref()
                .and_then(|l| l.pending)
                .is_some_and(|p| p.send_now);
            if !due {
                continue;
            }
            if let Some(p) = entry.legs[i].as_mut().and_then(|l| l.pending.as_mut()) {
                p.send_now = false;
            }
            let Some(seg) = msyn_ack_for(entry, i, self.cfg.addr, port) else {
                continue;
            };
            packets.push((seg, true));
            let first_splice = entry.legs[1 - i]
                .as_ref()
                .is_some_and(|o| o.right_edge.is_none());
            if first_splice {
                if let Some(seg) = first_splice_window_ack(entry, i, self.cfg.addr, port) {
                    packets.push((seg, false));
                }
                continue;
            }
            // §6.9 "Moving again", as a responder's window ACK (§7): the
            // MSYN-ACK's SYN window (at most 65535, unscaled) is all the
            // leg's new NAPT knows of the other end's window, and it drops
            // whatever the mover sends beyond it (§10, td_maxend), its
            // Confirm first when the received offset is larger. The other
            // end's latest pure ACK, clamped to the mover's MSYN.seq + 1
            // with the right edge kept and its seq at the MSYN-ACK's end,
            // tells that NAPT (and the mover) the real window.
            if let (Some(other), Some(leg)) = (&entry.legs[1 - i], &entry.legs[i]) {
                if let (true, Some(bytes)) = (other.confirmed, &other.last_ack) {
                    if let Ok((_, s)) = parse_ipv4_tcp(bytes) {
                        let (ack, window) = (s.ack, s.window);
                        if let Some((mut copy, _)) =
                            splice_copy(self.cfg.addr, port, other, leg, bytes, Some(ack), window)
                        {
                            // §10: until the mover's first ACK passes its
                            // new NAPT, nothing in the other end's name may
                            // start beyond the MSYN-ACK's end (Linux
                            // conntrack's td_maxend is the SYN-ACK's end);
                            // the other end's own pure ACK sits at its
                            // SND.MAX, beyond it while its data is in flight.
                            if rewrite_ipv4_tcp_seq(&mut copy, other_una(leg, other).0).is_ok() {
                                packets.push((copy, false));
                            }
                        }
                    }
                }
            }
        }
        for (p, msyn_ack) in packets {
            self.out.push_back(p);
            if msyn_ack {
                self.stats.msyn_acks_sent += 1;
            } else {
                self.stats.window_acks += 1;
            }
        }
    }

    fn emit(&mut self, src: Ipv4Addr, dst: SocketAddrV4, seg: &TcpRepr<'_>) {
        let mut buf = vec![0u8; crate::wire::ipv4_tcp_len(seg)];
        if let Ok(n) = emit_ipv4_tcp(&Ipv4Repr::new(src, *dst.ip()), seg, &mut buf) {
            buf.truncate(n);
            self.out.push_back(buf);
        }
    }

    /// Runs what is due at `now`: MSYN-ACK retransmissions, lingering and expired relays.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Due deadlines (MSYN-ACK retransmissions, linger, lifetime) come
        // from the timer heap; idle relays are found by a sweep once a
        // second, so neither call is linear in the relays on every packet.
        let mut ports = Vec::new();
        while let Some(&Reverse((t, port))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            ports.push(port);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            ports.extend(self.entries.keys().copied());
        }
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let Some(entry) = self.entries.get_mut(&port) else {
                continue;
            };
            if let Some((at, reason)) = entry.closing {
                if now >= at {
                    self.remove(port, reason);
                    continue;
                }
            }
            if entry.expires.is_some_and(|e| now >= e) {
                self.remove(port, ReleaseReason::Expired);
                continue;
            }
            if now >= entry.last_activity + self.cfg.idle_timeout {
                self.remove(port, ReleaseReason::Idle);
                continue;
            }
            let retries = self.cfg.msyn_ack_retries;
            let max = Duration::from_secs(60);
            for leg in entry.legs.iter_mut().flatten() {
                let Some(p) = leg.pending.as_mut() else {
                    continue;
                };
                if p.deadline.is_some_and(|d| now >= d) {
                    if p.attempts < retries {
                        p.attempts += 1;
                        p.interval = (p.interval * 2).min(max);
                        p.deadline = Some(now + p.interval);
                        self.timers.push(Reverse((now + p.interval, port)));
                        p.send_now = true;
                    } else {
                        // The end is not reachable where its MSYN came
                        // from; its next MSYN starts over.
                        p.deadline = None;
                    }
                }
            }
            self.send_due(port, 0);
        }
    }

    /// Earliest instant [`handle_timeout`](Self::handle_timeout) is due
    /// (may be early; calling it then is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heap = self.timers.peek().map(|Reverse((t, _))| *t);
        let sweep = (!self.entries.is_empty()).then_some(self.next_sweep);
        match (heap, sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes the next packet to send into `buf`; says where it goes.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        // Only packets the relay built or rewrote are queued, so their
        // headers name their ends. One that does not fit `buf` is not sent
        // cut short, and does not end the polling for those behind it.
        while let Some(packet) = self.out.pop_front() {
            let Some(to) = buf.get_mut(..packet.len()) else {
                self.stats.malformed += 1;
                continue;
            };
            to.copy_from_slice(&packet);
            if let Some(sent) = Transmit::of_packet(to) {
                return Some(sent);
            }
            self.stats.malformed += 1;
        }
        None
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }
}

/// A copy of `packet` (from leg `src`) for leg `dst`: addresses, ports and
/// checksums rewritten, and an ACK above `dst`'s path_high clamped
/// (§6.9, §7: the end that did not move does not know the other moved and
/// acks what reached it over the old path, and the NAPT on the new path
/// drops an ACK above what it saw from its inside; the window widens by as
/// much, so the right edge stays the sender's). `None` if the packet is
/// too short to rewrite. The flag says whether the ACK was clamped.
fn splice_copy(
    addr: Ipv4Addr,
    port: u16,
    src: &Leg,
    dst: &Leg,
    packet: &[u8],
    ack: Option<SeqNumber>,
    window: u16,
) -> Option<(Vec<u8>, bool)> {
    let mut bytes = vec![0u8; packet.len()];
    let (n, clamped) = splice_into(addr, port, src, dst, packet, ack, window, &mut bytes)?;
    bytes.truncate(n);
    Some((bytes, clamped))
}

/// [`splice_copy`] into a caller's buffer; `None` if it is too short.
#[allow(clippy::too_many_arguments)]
fn splice_into(
    addr: Ipv4Addr,
    port: u16,
    src: &Leg,
    dst: &Leg,
    packet: &[u8],
    ack: Option<SeqNumber>,
    window: u16,
    out: &mut [u8],
) -> Option<(usize, bool)> {
    let n = packet.len();
    let bytes = out.get_mut(..n)?;
    bytes.copy_from_slice(packet);
    rewrite_ipv4_tcp_endpoints(bytes, SocketAddrV4::new(addr, port), dst.remote).ok()?;
    let Some(ack) = ack.filter(|&a| a > dst.path_high) else {
        return Some((n, false));
    };
    let excess = ack - dst.path_high;
    let shift = src.wscale.unwrap_or(0);
    let window = ((usize::from(window) << shift) + excess) >> shift;
    let window = window.min(usize::from(u16::MAX)) as u16;
    rewrite_ipv4_tcp_ack(bytes, dst.path_high.0, window).ok()?;
    Some((n, true))
}

/// The other end's position in leg `leg`'s receive space (§6.9 step 9):
/// its MSYN.seq + 1 (its SND.UNA), or the highest ACK this end has sent
/// through the relay since, whichever is later.
fn other_una(leg: &Leg, other: &Leg) -> SeqNumber {
    max_seq(leg.acked, other.msyn_seq + 1)
}

/// The other end's RCV.NXT as last known, counted from leg `leg`'s
/// MSYN.seq + 1: a plausible one only (past it, at most 1 GiB, the largest
/// window); otherwise 0 and the mover resends from its SND.UNA.
fn received_offset(leg: &Leg, other: &Leg) -> u32 {
    let ack = leg.msyn_seq + 1;
    match other.rcv_nxt {
        Some(r) if r > ack && r - ack <= 1 << 30 => (r - ack) as u32,
        _ => 0,
    }
}

/// The window ACK after a first splice's MSYN-ACK to leg `i` (PROTOCOL.md
/// §6.9 "The first splice"), in the other end's name: SEQ = the
/// MSYN-ACK's seq + 1, ACK = leg i's MSYN.seq + 1, the window (scaled
/// with the other end's shift, rounded up) reaching the other end's
/// RCV.NXT and no further, no options. Leg i's NAPT learns from it that
/// the mover's Confirm at its resume point lies inside the window: a SYN
/// window (at most 65535, unscaled) cannot say so when the received
/// offset is larger, and the NAPT would drop the Confirm (§10,
/// td_maxend). It carries no timestamps, so the end itself drops it
/// (RFC 7323 §3.2): it is for the NAPT.
fn first_splice_window_ack(entry: &Entry, i: usize, addr: Ipv4Addr, port: u16) -> Option<Vec<u8>> {
    let leg = entry.legs[i].as_ref()?;
    let other = entry.legs[1 - i].as_ref()?;
    // RFC 7323 §2.2: scaling holds on this path only if both the MSYN and
    // the MSYN-ACK carried WS (the tracker learns it the same way, §10).
    let shift = match (leg.wscale, other.wscale) {
        (Some(_), Some(s)) => s.min(14),
        _ => 0,
    };
    let received = u64::from(received_offset(leg, other));
    let window = received.div_ceil(1 << shift).min(u64::from(u16::MAX)) as u16;
    let seg = TcpRepr {
        src_port: port,
        dst_port: leg.remote.port(),
        seq: other_una(leg, other),
        ack: leg.msyn_seq + 1,
        flags: TcpFlags::ACK,
        window,
        ..TcpRepr::default()
    };
    let mut buf = vec![0u8; crate::wire::ipv4_tcp_len(&seg)];
    let n = emit_ipv4_tcp(&Ipv4Repr::new(addr, *leg.remote.ip()), &seg, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Keeps `packet` in `slot` (one small packet per leg, §6.9), reusing the
/// slot's buffer.
fn keep(slot: &mut Option<Vec<u8>>, packet: &[u8]) {
    match slot {
        Some(bytes) => {
            bytes.clear();
            bytes.extend_from_slice(packet);
        }
        None => *slot = Some(packet.to_vec()),
    }
}

fn max_seq(a: Option<SeqNumber>, b: SeqNumber) -> SeqNumber {
    match a {
        Some(a) if a > b => a,
        _ => b,
    }
}

/// The proxy's MSYN-ACK to leg `i` (PROTOCOL.md §6.9 step 8): a pure
/// function of the relay entry.
///
/// - seq + 1 = the other end's position in leg i's receive space: its
///   MSYN.seq + 1 (its SND.UNA), or the highest ACK end i has sent since,
///   whichever is later; both are at most end i's RCV.NXT, so end i's
///   sanity check (§6.4 step 5) passes and its stream from the other end
///   continues without any offset;
/// - ack = leg i's MSYN.seq + 1 exactly (§7, §10);
/// - received = the other end's RCV.NXT as last known (its Confirm, its
///   ACKs) minus that ACK field, or 0;
/// - window: the other end's right edge counted from the ACK field, or,
///   at a first splice (no ACK of the other end seen yet), its RCV.NXT
///   (§6.9 "The first splice"); at most 65535 and unscaled; WS = the
///   other end's shift (its MSYN's), so leg i's NAPT scales the other
///   end's forwarded windows right;
/// - no timestamps: the proxy has no clock of the other end's, and the
///   mover keeps its TS.Recent (§7: the MSYN-ACK is exempt from PAWS).
fn msyn_ack_for(entry: &Entry, i: usize, addr: Ipv4Addr, port: u16) -> Option<Vec<u8>> {
    let leg = entry.legs[i].as_ref()?;
    let other = entry.legs[1 - i].as_ref()?;
    let pending = leg.pending?;
    let ack = leg.msyn_seq + 1;
    let other_una = other_una(leg, other);
    let received = received_offset(leg, other);
    let right = match other.right_edge.filter(|&e| e > ack) {
        Some(edge) => edge - ack,
        // §6.9 "The first splice": no ACK of the other end has crossed
        // the relay, and its leg's NAPT drops what reaches it before the
        // other end's Confirm has left through it (§10). The window ends
        // at the other end's RCV.NXT: the mover may resume, not send.
        None => received as usize,
    };
    let window = right.min(usize::from(u16::MAX)) as u16;
    let option = handshake::relay_msyn_ack_option(
        &entry.keys[i],
        entry.tickets[i].0,
        leg.request.0,
        pending.nonce,
        leg.direct,
        received,
    );
    let mut ticket_scratch = OptionScratch::default();
    let options = MigrationOptions {
        relay_ticket: Some(option.to_option(&mut ticket_scratch).data),
        ..MigrationOptions::default()
    };
    let mut seg = handshake::msyn_ack_header(
        port,
        leg.remote.port(),
        other_una,
        ack,
        window,
        other.wscale,
        None,
    );
    let mut scratch = MigrationScratch::default();
    options.attach(&mut scratch, &mut seg).ok()?;
    let mut buf = vec![0u8; crate::wire::ipv4_tcp_len(&seg)];
    let n = emit_ipv4_tcp(&Ipv4Repr::new(addr, *leg.remote.ip()), &seg, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::SplitMix64;
    use crate::wire::{ipv4_tcp_len, RelayTicket, TcpFlags, TcpRepr};

    const PROXY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);

    fn msyn(secret: &RelaySecret, port: u16, ticket: TicketId, from: SocketAddrV4) -> Vec<u8> {
        let direct = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), from.port());
        let host = HostTicket {
            ticket,
            key: secret.ticket_key(port, ticket),
        };
        let rcv_nxt = SeqNumber(5000);
        let option = handshake::relay_msyn_option(&host, RequestNumber(1), direct, rcv_nxt);
        let mut t = OptionScratch::default();
        let options = MigrationOptions {
            permit: Some(handshake::short_permit(direct)),
            relay_ticket: Some(option.to_option(&mut t).data),
            ..MigrationOptions::default()
        };
        let mut seg =
            handshake::msyn_header(from.port(), port, SeqNumber(1000), 65535, 1460, Some(7));
        seg.ack = rcv_nxt;
        let mut scratch = MigrationScratch::default();
        options.attach(&mut scratch, &mut seg).unwrap();
        let mut buf = vec![0u8; ipv4_tcp_len(&seg)];
        emit_ipv4_tcp(&Ipv4Repr::new(*from.ip(), PROXY), &seg, &mut buf).unwrap();
        buf
    }

    fn packet(src: SocketAddrV4, dst: SocketAddrV4, seg: &TcpRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; ipv4_tcp_len(seg)];
        emit_ipv4_tcp(&Ipv4Repr::new(*src.ip(), *dst.ip()), seg, &mut buf).unwrap();
        buf
    }

    /// Splices one relay by hand: both MSYNs, both MSYN-ACKs checked,
    /// both Confirms. Returns the relay, its port and the legs' sources.
    fn spliced() -> (Relay, u16, [SocketAddrV4; 2]) {
        let secret = RelaySecret::new([3; 32]);
        let mut relay = Relay::new(
            RelayConfig {
                addr: PROXY,
                ports: (20000, 20001),
                ..RelayConfig::default()
            },
            secret.clone(),
            Box::new(SplitMix64::new(4)),
        );
        let now = Instant::ZERO;
        let tickets = [TicketId(1), TicketId(2)];
        let port = relay
            .allocate(now, tickets, Duration::from_secs(30))
            .unwrap();
        let legs = [
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 30000),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 30001),
        ];
        for (ticket, from) in tickets.iter().zip(legs) {
            relay.handle_packet(now, &msyn(&secret, port, *ticket, from));
        }
        let mut buf = vec![0u8; 1500];
        let mut confirms = Vec::new();
        let mut window_acks = Vec::new();
        while let Some(sent) = relay.poll_transmit(&mut buf) {
            let (ip, seg) = parse_ipv4_tcp(&buf[..sent.size]).unwrap();
            let options = MigrationOptions::from_repr(&seg).unwrap();
            let to = SocketAddrV4::new(ip.dst, seg.dst_port);
            let Some(RelayTicket::MsynAck(a)) = options.relay() else {
                // §6.9 "The first splice": the window ACK after each
                // MSYN-ACK, in the other end's name: SEQ = the MSYN-ACK's
                // + 1, ACK = this end's MSYN.seq + 1, the window (shift 7,
                // rounded up) reaching the other end's RCV.NXT (5000).
                assert_eq!(seg.flags, TcpFlags::ACK);
                assert_eq!((seg.seq, seg.ack), (SeqNumber(1000), SeqNumber(1000)));
                assert_eq!(seg.window, 4000u16.div_ceil(128));
                assert!(seg.payload.is_empty() && seg.timestamps.is_none());
                window_acks.push(to);
                continue;
            };
            // The MSYN-ACK's own window ends there too.
            assert_eq!(seg.window, 4000);
            let leg = usize::from(to == legs[1]);
            let key = secret.ticket_key(port, tickets[leg]);
            let host = HostTicket {
                ticket: tickets[leg],
                key,
            };
            let direct = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), to.port());
            assert!(handshake::verify_relay_msyn_ack(&host, &a, direct));
            // §6.9: seq + 1 is the other end's SND.UNA (both MSYNs sit at
            // 999), ack this end's, received the other's RCV.NXT (5000)
            // - ack.
            assert_eq!((seg.seq + 1, seg.ack), (SeqNumber(1000), SeqNumber(1000)));
            assert_eq!(a.received, 5000 - 1000);
            let confirm = MigrationOptions {
                migrate: Some(handshake::confirm_option(
                    RequestNumber(a.request),
                    a.nonce,
                    0,
                )),
                ..MigrationOptions::default()
            };
            let mut seg = TcpRepr {
                src_port: to.port(),
                dst_port: port,
                seq: SeqNumber(1000),
                ack: SeqNumber(1000),
                flags: TcpFlags::ACK,
                window: 500,
                ..TcpRepr::default()
            };
            let mut scratch = MigrationScratch::default();
            confirm.attach(&mut scratch, &mut seg).unwrap();
            confirms.push(packet(to, SocketAddrV4::new(PROXY, port), &seg));
        }
        window_acks.sort();
        assert_eq!(window_acks, legs, "one window ACK per leg");
        assert_eq!(relay.stats().window_acks, 2);
        for c in confirms {
            relay.handle_packet(now, &c);
        }
        assert_eq!(relay.state(port), RelayState::Spliced);
        while relay.poll_transmit(&mut buf).is_some() {}
        (relay, port, legs)
    }

    #[test]
    fn a_packet_too_long_for_the_buffer_is_counted_not_cut_and_the_rest_still_leaves() {
        let (mut relay, port, legs) = spliced();
        let ack = |window| {
            let seg = TcpRepr {
                src_port: legs[0].port(),
                dst_port: port,
                seq: SeqNumber(1000),
                ack: SeqNumber(1000),
                flags: TcpFlags::ACK,
                window,
                payload: if window == 1 { &[7u8; 200] } else { &[] },
                ..TcpRepr::default()
            };
            packet(legs[0], SocketAddrV4::new(PROXY, port), &seg)
        };
        // A 240-byte data segment, then a 40-byte pure ACK, both forwarded.
        relay.handle_packet(Instant::ZERO, &ack(1));
        relay.handle_packet(Instant::ZERO, &ack(2));
        let before = relay.stats().malformed;
        let mut small = [0u8; 100];
        let sent = relay.poll_transmit(&mut small).expect("the ACK behind it");
        assert_eq!((sent.size, sent.dst), (40, legs[1]));
        assert_eq!(relay.stats().malformed, before + 1);
        assert!(relay.poll_transmit(&mut small).is_none());
    }

    #[test]
    fn forwarding_rewrites_only_addresses_ports_and_checksums() {
        let (mut relay, port, legs) = spliced();
        let payload = [0x5au8; 1000];
        let seg = TcpRepr {
            src_port: legs[0].port(),
            dst_port: port,
            seq: SeqNumber(1000),
            ack: SeqNumber(1000),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 700,
            payload: &payload,
            ..TcpRepr::default()
        };
        let pkt = packet(legs[0], SocketAddrV4::new(PROXY, port), &seg);
        let mut out = vec![0u8; 2000];
        let sent = relay
            .handle_packet_into(Instant::ZERO, &pkt, &mut out)
            .unwrap();
        assert_eq!(
            (sent.src, sent.dst),
            (SocketAddrV4::new(PROXY, port), legs[1])
        );
        let n = sent.size;
        let (ip, fwd) = parse_ipv4_tcp(&out[..n]).expect("checksums verify");
        assert_eq!((ip.src, ip.dst), (PROXY, *legs[1].ip()));
        assert_eq!((fwd.src_port, fwd.dst_port), (port, legs[1].port()));
        assert_eq!(
            (fwd.seq, fwd.ack, fwd.window),
            (seg.seq, seg.ack, seg.window)
        );
        assert_eq!(fwd.payload, &payload[..]);
        // The queued path produces the same bytes.
        relay.handle_packet(Instant::ZERO, &pkt);
        let mut queued = vec![0u8; 2000];
        assert_eq!(relay.poll_transmit(&mut queued), Some(sent));
        assert_eq!(&queued[..n], &out[..n]);
        // An ACK above what leg 0 sent on its path is clamped for its NAPT,
        // the window widened by as much (shift 7): the right edge stays.
        let ack_seg = TcpRepr {
            src_port: legs[1].port(),
            dst_port: port,
            seq: SeqNumber(1000),
            ack: SeqNumber(1000 + 1000 + 640),
            flags: TcpFlags::ACK,
            window: 10,
            ..TcpRepr::default()
        };
        let pkt = packet(legs[1], SocketAddrV4::new(PROXY, port), &ack_seg);
        let n = relay
            .handle_packet_into(Instant::ZERO, &pkt, &mut out)
            .unwrap()
            .size;
        let (_, fwd) = parse_ipv4_tcp(&out[..n]).expect("checksums verify");
        assert_eq!(fwd.ack, SeqNumber(2000));
        assert_eq!(fwd.window, 15);
        assert_eq!(relay.stats().acks_clamped, 1);
        // From anyone else: dropped, counted, never answered.
        let stranger = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 1);
        let pkt = packet(stranger, SocketAddrV4::new(PROXY, port), &ack_seg);
        assert_eq!(
            relay.handle_packet_into(Instant::ZERO, &pkt, &mut out),
            None
        );
        assert_eq!(relay.stats().stray, 1);
        assert!(relay.poll_transmit(&mut out).is_none());
    }

    /// The figure: one proxy holds 10 000 relays with both legs
    /// attached; what each costs in the table.
    #[test]
    fn ten_thousand_relays_with_both_legs() {
        let secret = RelaySecret::new([3; 32]);
        let mut relay = Relay::new(
            RelayConfig {
                addr: PROXY,
                ports: (20000, 29999),
                mac_verifications_per_second: 1_000_000,
                ..RelayConfig::default()
            },
            secret.clone(),
            Box::new(SplitMix64::new(4)),
        );
        let now = Instant::ZERO;
        for n in 0..10_000u32 {
            let tickets = [TicketId(2 * n + 1), TicketId(2 * n + 2)];
            let port = relay
                .allocate(now, tickets, Duration::from_secs(30))
                .unwrap();
            for (leg, ticket) in tickets.iter().enumerate() {
                let from = SocketAddrV4::new(
                    Ipv4Addr::from(0xc633_0000 + 2 * n + leg as u32),
                    30000 + leg as u16,
                );
                relay.handle_packet(now, &msyn(&secret, port, *ticket, from));
            }
        }
        assert_eq!(relay.relay_count(), 10_000);
        assert_eq!(relay.stats().msyn_acks_sent, 20_000);
        assert_eq!(relay.stats().window_acks, 20_000);
        assert_eq!(
            relay.allocate(
                now,
                [TicketId(0), TicketId(u32::MAX)],
                Duration::from_secs(1)
            ),
            Err(RelayError::NoFreePort)
        );
        let mut buf = vec![0u8; 1500];
        let mut n = 0;
        while relay.poll_transmit(&mut buf).is_some() {
            n += 1;
        }
        assert_eq!(n, 40_000, "an MSYN-ACK and a window ACK per leg");
        // Table cost per relay, both legs inline (the BTreeMap node
        // overhead and a saved ACK, at most one small packet per leg, come
        // on top).
        let per_relay = core::mem::size_of::<Entry>();
        eprintln!("bytes per relay (entry with both legs): {per_relay}");
        assert!(per_relay < 1024, "{per_relay}");
    }
}
