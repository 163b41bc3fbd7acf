//! The normalizer: a set of captures of one run becomes one transcript per capture
//! point, equal for equivalent runs and different when a handshake differs.
//!
//! A transcript has one line per segment of interest, in capture order:
//!
//! - SYN, SYN-ACK, MSYN, MSYN-ACK, RST, FIN (retransmissions too);
//! - the ACK completing a plain handshake;
//! - the first segment carrying a given sustain option content (a Confirm or an
//!   Address-Update repeated on every segment until the peer answers is one line);
//! - any segment with a malformed or unknown option;
//! - the first data segment of each side after a resume (an MSYN-ACK or an
//!   Address-Update);
//!
//! and, before each line, a count of the data segments since the previous line, per
//! direction, bucketed (`1`, `2-9`, `10-99`, `100-999`, `1000+`). Pure ACKs are not
//! shown.
//!
//! Each line:
//!
//! ```text
//! +1rtt   b:p1 > a:5001  MSYN-ACK  [S.] seq=0 ack=b.1+1 <mss 1460,nop,ws 7,migrate-ack(...)>
//! ```
//!
//! - the gap since the previous line in RTTs of the run's first handshake (at least
//!   20 ms, so that scheduling noise on an undelayed path stays `+0`): `+0` (< 0.5),
//!   `+1rtt` (< 1.5), `+2rtt` (< 2.5), `+3-9rtt` (< 10), `+long`; never absolute time.
//!   A side's first FIN shows `+close`: it leaves when the application closes (after
//!   writing everything, or after reading the peer's FIN), which is the application's
//!   timing and the transfer's speed, not the protocol's; a FIN sent again shows its
//!   gap. At the proxy's
//!   own capture point a segment it forwards (from its relay port, of a side whose
//!   segments the point saw arriving) shows `+fwd`: it leaves when the proxy gets
//!   to it, and it does not time the next line;
//! - endpoints by node name (the topology's, else `h1`, `h2`, ... in order of
//!   appearance) and port (the scenario's ports as numbers, others `p1`, `p2`, ...);
//! - tcpdump's flag letters without PSH (pushing is an implementation's choice);
//! - sequence and acknowledgment numbers relative to each side's ISN; 0 and 1 as
//!   numbers, every other value as a name of the sending side (`b.1`, `b.2`) the first
//!   time it appears, and as that name plus or minus at most 2 afterwards: values
//!   depend on how many bytes had gone when something happened, relations between
//!   them (an MSYN-ACK acks MSYN.seq + 1) do not;
//! - an RST whose sequence number is no value of its sender's stream is classified
//!   against the receiver's window: `seq=<in-window>` or `seq=<out-of-window>`;
//! - options in wire order by name; keys, MACs, tokens and nonces as `[key]`,
//!   `[mac]`, `[token]`, `[nonce]` after checking them: a MAC is verified with the
//!   keys of the run's handshake (`[mac:BAD]` when it fails, `[mac?]` when the keys
//!   were not captured), a token must be the token of the receiver's key
//!   (`[token:WRONG]`), a nonce must echo the MSYN-ACK's, a key must not be zero, and
//!   an MSYN whose request number was answered already, or that appears twice at one
//!   capture point, is marked `replay`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use sustain_core::auth::{self, Key, RequestNumber};
use sustain_core::relay::{HostTicket, RelaySecret, TicketId};
use sustain_core::tcp::handshake;
use sustain_core::wire::migrate::{MigrateOption, MigratePermit, RelayTicket};
use sustain_core::wire::SeqNumber;

use crate::capture::{capture_files, Capture, ElidedData};
use crate::error::Result;
use crate::names::Names;
use crate::options::{decode, Opt};
use crate::segment::{Segment, ACK, FIN, RST, SYN};

/// The smallest RTT unit gaps are measured in.
pub const MIN_RTT_UNIT_NS: u64 = 20_000_000;

/// The captures of one run (or one golden directory) and their names.
#[derive(Clone, Debug)]
pub struct CaptureSet {
    pub captures: Vec<Capture>,
    pub names: Names,
}

impl CaptureSet {
    /// Every pcap/pcapng in `dir`, with `dir/names.json` if there is one.
    pub fn read_dir(dir: &Path) -> Result<CaptureSet> {
        let files = capture_files(dir)?;
        CaptureSet::read_files(&files, Names::load_for_dir(dir)?)
    }

    pub fn read_files(files: &[PathBuf], names: Names) -> Result<CaptureSet> {
        let captures = files
            .iter()
            .map(|file| Capture::read(file))
            .collect::<Result<Vec<_>>>()?;
        Ok(CaptureSet { captures, names })
    }

    pub fn capture(&self, name: &str) -> Option<usize> {
        self.captures.iter().position(|c| c.name == name)
    }
}

/// One line of a transcript, with the frame it comes from (none for count lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub frame: Option<usize>,
    pub text: String,
}

/// The transcript of one capture point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub capture: String,
    pub lines: Vec<Line>,
}

impl Transcript {
    /// The text: one line each, newline-terminated; empty for a capture without TCP.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            text.push_str(&line.text);
            text.push('\n');
        }
        text
    }

    /// Frames a transcript line comes from.
    pub fn frames(&self) -> impl Iterator<Item = usize> + '_ {
        self.lines.iter().filter_map(|line| line.frame)
    }
}

/// Everything learned from the whole set before any transcript is written: which
/// flows belong to which connection and side, ISNs, keys, window scales, the MSYNs'
/// direct addresses and the MSYN-ACKs' nonces, the handshake RTT, and replays.
#[derive(Debug, Default)]
pub struct Analysis {
    conns: Vec<Conn>,
    /// (src, dst) -> (connection, side sending on this flow).
    flows: HashMap<(SocketAddrV4, SocketAddrV4), (usize, usize)>,
    /// Per capture, per frame: the decoded segment.
    segments: Vec<Vec<Option<Segment>>>,
    /// Per capture, per frame: the connection and side each segment was bound to.
    bound: Vec<Vec<Option<(usize, usize)>>>,
    /// (capture, frame) of MSYNs that are replays.
    replays: HashSet<(usize, usize)>,
    /// (capture, connection, sender, request) of every MSYN seen, for replays.
    msyns_seen: HashSet<(usize, usize, usize, u32)>,
    /// Token -> (connection, side whose key it is): the first owner wins.
    tokens: HashMap<u32, (usize, usize)>,
    /// Initiator ISN -> connection: the first connection with it wins.
    initiators: HashMap<u32, usize>,
    /// Relay ticket id -> (connection, side whose leg it names), PROTOCOL.md
    /// §6.9: the first relay MSYN with the id wins.
    relay_tickets: HashMap<u32, (usize, usize)>,
    /// Ticket ids the proxy answered with a relay MSYN-ACK: the ids it knows.
    answered_tickets: HashSet<u32>,
    /// The proxy's relay endpoints (where relay MSYNs went).
    relay_endpoints: HashSet<SocketAddrV4>,
    /// Per (connection, side): the highest relative sequence end sent, as
    /// seen anywhere; what a relay MSYN's sequence and ACK fields are matched
    /// against.
    high: HashMap<(usize, usize), u32>,
    /// Symbolic names of addresses the names file does not know.
    hosts: HashMap<Ipv4Addr, String>,
    /// The first handshake's RTT.
    rtt_ns: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct Side {
    label: Option<String>,
    isn: Option<u32>,
    key: Option<u64>,
    window_scale: Option<u8>,
}

#[derive(Clone, Debug, Default)]
struct Conn {
    sides: [Side; 2],
    /// Mover's direct address per (mover side, MSYN request number), for the
    /// MSYN-ACK's MAC. Each side numbers its own MSYNs: when both ends move,
    /// both send a request 1.
    msyn_direct: HashMap<(usize, u32), SocketAddrV4>,
    /// Nonce per answered (mover side, request number).
    nonces: HashMap<(usize, u32), u32>,
    /// (Mover side, request number)s an MSYN-ACK has answered, and when it
    /// was first seen.
    answered: HashMap<(usize, u32), u64>,
    /// Per capture: SYN instant, then whether the SYN-ACK was seen.
    handshake: HashMap<usize, (u64, bool)>,
    rtt_ns: Option<u64>,
}

fn permit_of(opts: &[Opt]) -> Option<MigratePermit> {
    opts.iter().find_map(|opt| match opt {
        Opt::Permit(permit) => Some(*permit),
        _ => None,
    })
}

fn migrate_of(opts: &[Opt]) -> Option<MigrateOption> {
    opts.iter().find_map(|opt| match opt {
        Opt::Migrate(migrate) => Some(*migrate),
        _ => None,
    })
}

fn relay_of(opts: &[Opt]) -> Option<RelayTicket> {
    opts.iter().find_map(|opt| match opt {
        Opt::RelayTicket(ticket) => Some(*ticket),
        _ => None,
    })
}

fn window_scale_of(opts: &[Opt]) -> Option<u8> {
    opts.iter().find_map(|opt| match opt {
        Opt::WindowScale(shift) => Some(*shift),
        _ => None,
    })
}

impl Analysis {
    /// Learns from every capture of the set, in time order across capture points.
    pub fn of(set: &CaptureSet) -> Analysis {
        let mut analysis = Analysis {
            segments: set
                .captures
                .iter()
                .map(|capture| {
                    capture
                        .frames
                        .iter()
                        .map(|frame| {
                            Segment::decode(capture.link, &frame.data).filter(|s| {
                                let control = &set.names.control_ports;
                                !control.contains(&s.src.port()) && !control.contains(&s.dst.port())
                            })
                        })
                        .collect()
                })
                .collect(),
            ..Analysis::default()
        };
        analysis.bound = analysis
            .segments
            .iter()
            .map(|frames| vec![None; frames.len()])
            .collect();
        let mut order: Vec<(u64, usize, usize)> = Vec::new();
        for (c, capture) in set.captures.iter().enumerate() {
            for (f, frame) in capture.frames.iter().enumerate() {
                if analysis.segments[c][f].is_some() {
                    order.push((frame.timestamp_ns, c, f));
                }
            }
        }
        order.sort_unstable();
        for (t, c, f) in order {
            let Some(segment) = analysis.segments[c][f].clone() else {
                continue;
            };
            analysis.name_host(&set.names, *segment.src.ip());
            analysis.name_host(&set.names, *segment.dst.ip());
            // A golden excerpt left data out before this frame: how far each
            // flow's data reached still counts (a relay MSYN is matched to
            // its connection by it, relay_owner).
            if let Some(elision) = &set.captures[c].frames[f].elided {
                for data in &elision.data {
                    analysis.note_high(data.src, data.dst, data.end);
                }
            }
            let opts = decode(&segment.options);
            let bound = analysis.learn(t, c, f, &segment, &opts);
            analysis.bound[c][f] = bound;
        }
        analysis.rtt_ns = analysis.conns.iter().find_map(|conn| conn.rtt_ns);
        analysis
    }

    fn name_host(&mut self, names: &Names, address: Ipv4Addr) {
        if names.name_of(address).is_none() && !self.hosts.contains_key(&address) {
            let name = format!("h{}", self.hosts.len() + 1);
            self.hosts.insert(address, name);
        }
    }

    /// The name shown for an address.
    pub fn host_name(&self, names: &Names, address: Ipv4Addr) -> String {
        names
            .name_of(address)
            .map(str::to_string)
            .or_else(|| self.hosts.get(&address).cloned())
            .unwrap_or_else(|| address.to_string())
    }

    /// Raises the highest sequence number a bound flow's data reached.
    fn note_high(&mut self, src: SocketAddrV4, dst: SocketAddrV4, end: u32) {
        let Some(&(conn, side)) = self.flows.get(&(src, dst)) else {
            return;
        };
        if self.conns[conn].sides[side].isn.is_none() {
            return;
        }
        let end = self.relative(conn, side, end);
        let high = self.high.entry((conn, side)).or_insert(end);
        if (end.wrapping_sub(*high) as i32) > 0 {
            *high = end;
        }
    }

    fn bind(&mut self, segment: &Segment, conn: usize, side: usize) {
        self.flows.insert((segment.src, segment.dst), (conn, side));
        self.flows
            .insert((segment.dst, segment.src), (conn, 1 - side));
    }

    fn new_conn(&mut self) -> usize {
        self.conns.push(Conn::default());
        self.conns.len() - 1
    }

    /// Sets a side's ISN unless it has one; the initiator's is indexed.
    fn set_isn(&mut self, conn: usize, side: usize, isn: u32) {
        let slot = &mut self.conns[conn].sides[side].isn;
        if slot.is_none() {
            *slot = Some(isn);
            if side == 0 {
                self.initiators.entry(isn).or_insert(conn);
            }
        }
    }

    /// Sets a side's key unless it has one, and indexes its token.
    fn set_key(&mut self, conn: usize, side: usize, key: Option<u64>) {
        let slot = &mut self.conns[conn].sides[side].key;
        if let (None, Some(key)) = (*slot, key) {
            *slot = Some(key);
            self.tokens
                .entry(Key(key).token().0)
                .or_insert((conn, side));
        }
    }

    /// The side's label: the node of its direct address (Permit) or of the address it
    /// was first seen with (the earliest capture of a SYN is at its sender).
    fn label_side(&mut self, conn: usize, side: usize, segment: &Segment, opts: &[Opt]) {
        if self.conns[conn].sides[side].label.is_some() {
            return;
        }
        let address = permit_of(opts).map_or(*segment.src.ip(), |p| p.addr);
        self.conns[conn].sides[side].label = Some(address.to_string());
    }

    fn learn(
        &mut self,
        t: u64,
        capture: usize,
        frame: usize,
        segment: &Segment,
        opts: &[Opt],
    ) -> Option<(usize, usize)> {
        let migrate = migrate_of(opts);
        let permit = permit_of(opts);
        let syn = segment.has(SYN);
        let ack = segment.has(ACK);
        let relay = relay_of(opts).filter(|_| syn && migrate.is_none());
        let bound = match relay {
            Some(RelayTicket::Msyn(m)) if !ack => {
                Some(self.learn_relay_msyn(t, capture, frame, segment, permit, m.ticket, m.request))
            }
            Some(RelayTicket::MsynAck(a)) if ack => {
                Some(self.learn_relay_msyn_ack(t, segment, a.ticket, a.request, a.nonce))
            }
            _ => self.learn_tcp(t, capture, frame, segment, opts, migrate, permit),
        };
        if let Some((conn, side)) = bound {
            if segment.has(ACK) {
                self.set_isn(conn, 1 - side, segment.ack.wrapping_sub(1));
            }
            self.set_isn(conn, side, segment.seq.wrapping_sub(u32::from(!syn)));
            if segment.seq_len() > 0 && !segment.has(RST) {
                let end = self.relative(conn, side, segment.seq.wrapping_add(segment.seq_len()));
                let high = self.high.entry((conn, side)).or_insert(end);
                if (end.wrapping_sub(*high) as i32) > 0 {
                    *high = end;
                }
            }
        }
        bound
    }

    /// PROTOCOL.md §6.9: a relay MSYN to the proxy. Its ticket id names the
    /// leg once a relay MSYN with it was bound; the first one is found by its
    /// sequence numbers (the splice keeps them: SEG.SEQ + 1 is the mover's
    /// SND.UNA, the ACK field its RCV.NXT), else it is a connection of its own.
    #[allow(clippy::too_many_arguments)]
    fn learn_relay_msyn(
        &mut self,
        t: u64,
        capture: usize,
        frame: usize,
        segment: &Segment,
        permit: Option<MigratePermit>,
        ticket: u32,
        request: u32,
    ) -> (usize, usize) {
        self.relay_endpoints.insert(segment.dst);
        let (conn, sender) = match self.relay_tickets.get(&ticket).copied() {
            Some(found) => found,
            None => {
                let found = self
                    .relay_owner(segment.seq.wrapping_add(1), segment.ack)
                    .unwrap_or_else(|| (self.new_conn(), 0));
                self.relay_tickets.insert(ticket, found);
                found
            }
        };
        if let Some(permit) = permit {
            self.conns[conn]
                .msyn_direct
                .entry((sender, request))
                .or_insert(permit.direct());
        }
        let seen_here = !self.msyns_seen.insert((capture, conn, sender, request));
        let answered_before = self.conns[conn]
            .answered
            .get(&(sender, request))
            .is_some_and(|&at| at < t);
        if seen_here || answered_before {
            self.replays.insert((capture, frame));
        }
        self.bind(segment, conn, sender);
        (conn, sender)
    }

    /// The proxy's MSYN-ACK: its ticket id is the receiving leg's.
    fn learn_relay_msyn_ack(
        &mut self,
        t: u64,
        segment: &Segment,
        ticket: u32,
        request: u32,
        nonce: u32,
    ) -> (usize, usize) {
        let (conn, mover) = match self.relay_tickets.get(&ticket).copied() {
            Some(found) => found,
            None => match self.flows.get(&(segment.dst, segment.src)) {
                Some(&found) => found,
                None => (self.new_conn(), 1),
            },
        };
        self.answered_tickets.insert(ticket);
        let data = &mut self.conns[conn];
        data.nonces.entry((mover, request)).or_insert(nonce);
        data.answered.entry((mover, request)).or_insert(t);
        self.bind(segment, conn, 1 - mover);
        (conn, 1 - mover)
    }

    /// The (connection, side) whose stream a relay MSYN continues: SND.UNA
    /// inside what the side sent (from its ISN up to the highest end the
    /// captures show, at most 1 GiB back from it), RCV.NXT (unless zeroed)
    /// inside what the other side sent; the closest wins. Either may also lie
    /// up to 16 MiB *ahead* of what the captures show sent: a golden excerpt
    /// keeps only how far each point's left-out data reached, and the point
    /// that saw the last of it may come later in time.
    ///
    /// Both values must lie in a stream's span, not merely within a distance
    /// of its end: the sum of the two distances is the same for both sides of
    /// a connection whenever neither value is ahead (the ISNs cancel out), so
    /// a distance alone let the other side tie, and the first side won ties.
    /// An MSYN copied from an old one (attack-forged-ticket) is judged against
    /// streams that have grown since, so whether the other side fitted
    /// depended on the moment it was sent.
    fn relay_owner(&self, una: u32, rcv_nxt: u32) -> Option<(usize, usize)> {
        const AHEAD: u32 = 16 << 20;
        const BACK: u32 = 1 << 30;
        let behind = |high: u32, value: u32| {
            let d = high.wrapping_sub(value);
            if d <= high.min(BACK) {
                Some(u64::from(d))
            } else {
                let ahead = value.wrapping_sub(high);
                (ahead <= AHEAD).then_some(u64::from(ahead))
            }
        };
        let mut best: Option<(u64, (usize, usize))> = None;
        for conn in 0..self.conns.len() {
            for side in 0..2 {
                let (Some(&mine), Some(&theirs)) = (
                    self.high.get(&(conn, side)),
                    self.high.get(&(conn, 1 - side)),
                ) else {
                    continue;
                };
                let Some(d) = behind(mine, self.relative(conn, side, una)) else {
                    continue;
                };
                let e = if rcv_nxt == 0 {
                    Some(0)
                } else {
                    behind(theirs, self.relative(conn, 1 - side, rcv_nxt))
                };
                let Some(e) = e else {
                    continue;
                };
                if best.is_none_or(|(b, _)| d + e < b) {
                    best = Some((d + e, (conn, side)));
                }
            }
        }
        best.map(|(_, found)| found)
    }

    /// Binding of a segment that is not a relay handshake.
    #[allow(clippy::too_many_arguments)]
    fn learn_tcp(
        &mut self,
        t: u64,
        capture: usize,
        frame: usize,
        segment: &Segment,
        opts: &[Opt],
        migrate: Option<MigrateOption>,
        permit: Option<MigratePermit>,
    ) -> Option<(usize, usize)> {
        let syn = segment.has(SYN);
        let ack = segment.has(ACK);
        let bound =
            match (syn, ack, migrate) {
                (true, false, Some(MigrateOption::Msyn(m))) => {
                    // PROTOCOL.md §3.3: the token names the connection at the MSYN's receiver.
                    let (conn, sender) = match self.tokens.get(&m.token).copied() {
                        Some((conn, receiver)) => (conn, 1 - receiver),
                        None => (self.new_conn(), 0),
                    };
                    if let Some(permit) = permit {
                        self.conns[conn]
                            .msyn_direct
                            .entry((sender, m.request))
                            .or_insert(permit.direct());
                    }
                    // A copy of an MSYN at a point that saw it already, or anywhere after it
                    // was answered, is not the network forwarding it.
                    let seen_here = !self.msyns_seen.insert((capture, conn, sender, m.request));
                    let answered_before = self.conns[conn]
                        .answered
                        .get(&(sender, m.request))
                        .is_some_and(|&at| at < t);
                    if seen_here || answered_before {
                        self.replays.insert((capture, frame));
                    }
                    self.bind(segment, conn, sender);
                    Some((conn, sender))
                }
                (true, true, Some(MigrateOption::MsynAck(m))) => {
                    let (conn, mover) = match self.tokens.get(&m.token).copied() {
                        Some(found) => found,
                        None => match self.flows.get(&(segment.dst, segment.src)) {
                            Some(&found) => found,
                            None => (self.new_conn(), 1),
                        },
                    };
                    let data = &mut self.conns[conn];
                    data.nonces.entry((mover, m.request)).or_insert(m.nonce);
                    data.answered.entry((mover, m.request)).or_insert(t);
                    self.bind(segment, conn, 1 - mover);
                    Some((conn, 1 - mover))
                }
                (true, false, _) => {
                    // A plain SYN: the same ISN is the same connection at every capture point
                    // (a NAPT rewrites addresses and ports, not sequence numbers).
                    let known = self.flows.get(&(segment.src, segment.dst)).copied().filter(
                        |&(conn, side)| {
                            side == 0 && self.conns[conn].sides[0].isn == Some(segment.seq)
                        },
                    );
                    let (conn, side) = known
                        .or_else(|| self.initiators.get(&segment.seq).map(|&conn| (conn, 0)))
                        .unwrap_or_else(|| {
                            let conn = self.new_conn();
                            self.set_isn(conn, 0, segment.seq);
                            (conn, 0)
                        });
                    self.set_key(conn, 0, permit.and_then(|p| p.key));
                    let data = &mut self.conns[conn];
                    if data.sides[0].window_scale.is_none() {
                        data.sides[0].window_scale = window_scale_of(opts);
                    }
                    data.handshake.entry(capture).or_insert((t, false));
                    self.label_side(conn, side, segment, opts);
                    self.bind(segment, conn, side);
                    Some((conn, side))
                }
                (true, true, _) => {
                    let initiator_isn = segment.ack.wrapping_sub(1);
                    let conn = self
                        .flows
                        .get(&(segment.dst, segment.src))
                        .map(|&(conn, _)| conn)
                        .filter(|&conn| self.conns[conn].sides[0].isn == Some(initiator_isn))
                        .or_else(|| self.initiators.get(&initiator_isn).copied());
                    let conn = conn.unwrap_or_else(|| {
                        let conn = self.new_conn();
                        self.set_isn(conn, 0, initiator_isn);
                        conn
                    });
                    self.set_isn(conn, 1, segment.seq);
                    self.set_key(conn, 1, permit.and_then(|p| p.key));
                    let data = &mut self.conns[conn];
                    let responder = &mut data.sides[1];
                    if responder.window_scale.is_none() {
                        responder.window_scale = window_scale_of(opts);
                    }
                    if let Some(entry) = data.handshake.get_mut(&capture) {
                        entry.1 = true;
                    }
                    self.label_side(conn, 1, segment, opts);
                    self.bind(segment, conn, 1);
                    Some((conn, 1))
                }
                _ => {
                    let mut bound = self.flows.get(&(segment.src, segment.dst)).copied();
                    if bound.is_none() {
                        // PROTOCOL.md §9: an Address-Update finds its connection by token.
                        let update = opts.iter().find_map(|opt| match opt {
                            Opt::AddressUpdate(update) => Some(*update),
                            _ => None,
                        });
                        if let Some(update) = update {
                            bound = self
                                .tokens
                                .get(&update.token)
                                .map(|&(conn, receiver)| (conn, 1 - receiver));
                        }
                        if let Some((conn, side)) = bound {
                            self.bind(segment, conn, side);
                        }
                    }
                    if bound.is_none() {
                        // Mid-stream with no handshake anywhere in the set: a connection of
                        // its own, sequence numbers relative to the first ones seen.
                        let conn = self.new_conn();
                        self.set_isn(conn, 0, segment.seq.wrapping_sub(1));
                        if segment.has(ACK) {
                            self.set_isn(conn, 1, segment.ack.wrapping_sub(1));
                        }
                        self.label_side(conn, 0, segment, opts);
                        self.bind(segment, conn, 0);
                        bound = Some((conn, 0));
                    }
                    if let Some((conn, 0)) = bound {
                        // The handshake-completing ACK at a point that saw SYN and SYN-ACK.
                        let data = &mut self.conns[conn];
                        if let Some(&(syn_at, true)) = data.handshake.get(&capture) {
                            if data.rtt_ns.is_none() && segment.has(ACK) {
                                data.rtt_ns = Some(t.saturating_sub(syn_at));
                            }
                        }
                    }
                    bound
                }
            };
        bound
    }

    /// The transcript of capture `index` of `set` (the set this analysis was made of).
    pub fn transcript(&self, set: &CaptureSet, index: usize) -> Transcript {
        let capture = &set.captures[index];
        let mut writer = Writer::new(self, &set.names);
        for (f, frame) in capture.frames.iter().enumerate() {
            if let Some(elision) = &frame.elided {
                for data in &elision.data {
                    writer.elided(data);
                }
            }
            let (Some(segment), Some((conn, side))) =
                (&self.segments[index][f], self.bound[index][f])
            else {
                continue;
            };
            writer.segment(frame.timestamp_ns, index, f, segment, conn, side);
        }
        writer.flush_counts();
        Transcript {
            capture: capture.name.clone(),
            lines: writer.lines,
        }
    }

    /// Transcripts of every capture of the set, by capture point.
    pub fn transcripts(&self, set: &CaptureSet) -> BTreeMap<String, Transcript> {
        (0..set.captures.len())
            .map(|i| {
                let transcript = self.transcript(set, i);
                (transcript.capture.clone(), transcript)
            })
            .collect()
    }

    /// The connection and side each frame of a capture was bound to.
    pub fn bound(&self, capture: usize) -> &[Option<(usize, usize)>] {
        &self.bound[capture]
    }

    pub fn segments(&self, capture: usize) -> &[Option<Segment>] {
        &self.segments[capture]
    }

    /// The relative sequence number of `seq` sent by `side` of `conn`.
    pub fn relative(&self, conn: usize, side: usize, seq: u32) -> u32 {
        seq.wrapping_sub(self.conns[conn].sides[side].isn.unwrap_or(0))
    }

    /// The run's first handshake RTT, if a capture point saw a whole handshake.
    pub fn rtt_ns(&self) -> Option<u64> {
        self.rtt_ns
    }

    /// Whether a segment carries a Migrate Confirm.
    pub fn is_confirm(segment: &Segment) -> bool {
        matches!(
            migrate_of(&decode(&segment.options)),
            Some(MigrateOption::Confirm(_))
        )
    }

    /// Whether a segment is an MSYN (a SYN with Migrate in MSYN form, or a
    /// relay MSYN: Relay-Ticket in MSYN form, PROTOCOL.md §6.9).
    pub fn is_msyn(segment: &Segment) -> bool {
        if !segment.has(SYN) || segment.has(ACK) {
            return false;
        }
        let opts = decode(&segment.options);
        match migrate_of(&opts) {
            Some(migrate) => matches!(migrate, MigrateOption::Msyn(_)),
            None => matches!(relay_of(&opts), Some(RelayTicket::Msyn(_))),
        }
    }

    /// Whether a segment is a relay MSYN (PROTOCOL.md §6.9).
    pub fn is_relay_msyn(segment: &Segment) -> bool {
        Self::is_msyn(segment)
            && matches!(
                relay_of(&decode(&segment.options)),
                Some(RelayTicket::Msyn(_))
            )
    }

    /// The connection that carried the most payload, and the side that sent it.
    pub fn transfer_connection(&self) -> Option<(usize, usize)> {
        let mut bytes: HashMap<(usize, usize), u64> = HashMap::new();
        for (segments, bound) in self.segments.iter().zip(&self.bound) {
            for (segment, bound) in segments.iter().zip(bound) {
                if let (Some(segment), Some(bound)) = (segment, bound) {
                    *bytes.entry(*bound).or_default() += u64::from(segment.payload_len);
                }
            }
        }
        bytes
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(side, n)| (*n, std::cmp::Reverse(*side)))
            .map(|(side, _)| side)
    }

    /// The node name of a side of a connection.
    pub fn side_name(&self, names: &Names, conn: usize, side: usize) -> String {
        match self.conns[conn].sides[side]
            .label
            .as_deref()
            .and_then(|l| l.parse::<Ipv4Addr>().ok())
        {
            Some(address) => self.host_name(names, address),
            None => if side == 0 { "i" } else { "r" }.to_string(),
        }
    }
}

/// The bucket a count of data segments is shown as.
pub fn count_bucket(count: u64) -> &'static str {
    match count {
        0 => "0",
        1 => "1",
        2..=9 => "2-9",
        10..=99 => "10-99",
        100..=999 => "100-999",
        _ => "1000+",
    }
}

/// The bucket a gap is shown as, in units of `rtt_ns`.
pub fn gap_bucket(gap_ns: u64, rtt_ns: u64) -> &'static str {
    let units = gap_ns as f64 / rtt_ns.max(1) as f64;
    if units < 0.5 {
        "+0"
    } else if units < 1.5 {
        "+1rtt"
    } else if units < 2.5 {
        "+2rtt"
    } else if units < 10.0 {
        "+3-9rtt"
    } else {
        "+long"
    }
}

/// Per transcript state: symbolic names, counters, what awaits a line.
struct Writer<'a> {
    analysis: &'a Analysis,
    names: &'a Names,
    rtt_ns: u64,
    lines: Vec<Line>,
    last_line_ns: Option<u64>,
    ports: HashMap<u16, String>,
    /// Per (conn, side): named relative values.
    values: HashMap<(usize, usize), Vec<(u32, String)>>,
    /// Data segments since the last line, per (src, dst), in order of appearance.
    counts: Vec<((SocketAddrV4, SocketAddrV4), u64)>,
    /// Per (conn, side): highest relative sequence number sent, and last window.
    sent_end: HashMap<(usize, usize), u32>,
    /// Per (connection, side): where its data resumes after a fast resume,
    /// as the peer declared it (PROTOCOL.md §7).
    resume_points: HashMap<(usize, usize), u32>,
    window: HashMap<(usize, usize), u16>,
    /// Per conn: the initiator's handshake ACK is awaited.
    awaiting_handshake_ack: HashSet<usize>,
    /// Per (conn, side): the first data segment after a resume is awaited.
    awaiting_first_data: HashSet<(usize, usize)>,
    /// The connection and side of each flow as of the latest frame seen.
    flows: HashMap<(SocketAddrV4, SocketAddrV4), (usize, usize)>,
    /// (conn, side) that sent a FIN.
    fin_sent: HashSet<(usize, usize)>,
    /// Sustain option texts already shown, per (conn, side).
    shown_options: HashSet<(usize, usize, String)>,
    /// The run's relay secret, when the names carry it.
    relay_secret: Option<RelaySecret>,
    /// (conn, side)s whose segments this point saw going *to* a relay
    /// endpoint: it is the proxy's, and the proxy's forwarded copies of
    /// that side's data are not counted again (they leave in batches, so
    /// how many follow a line varies from run to run).
    relay_inbound: HashSet<(usize, usize)>,
}

impl<'a> Writer<'a> {
    fn new(analysis: &'a Analysis, names: &'a Names) -> Writer<'a> {
        Writer {
            analysis,
            names,
            rtt_ns: analysis.rtt_ns.unwrap_or(0).max(MIN_RTT_UNIT_NS),
            lines: Vec::new(),
            last_line_ns: None,
            ports: HashMap::new(),
            values: HashMap::new(),
            counts: Vec::new(),
            sent_end: HashMap::new(),
            resume_points: HashMap::new(),
            window: HashMap::new(),
            awaiting_handshake_ack: HashSet::new(),
            awaiting_first_data: HashSet::new(),
            shown_options: HashSet::new(),
            fin_sent: HashSet::new(),
            flows: HashMap::new(),
            relay_inbound: HashSet::new(),
            relay_secret: names
                .relay_secret
                .as_deref()
                .and_then(|hex| RelaySecret::from_hex(hex).ok()),
        }
    }

    fn port(&mut self, port: u16) -> String {
        if self.names.ports.contains(&port) {
            return port.to_string();
        }
        let next = self.ports.len() + 1;
        self.ports
            .entry(port)
            .or_insert_with(|| format!("p{next}"))
            .clone()
    }

    fn endpoint(&mut self, address: SocketAddrV4) -> String {
        let host = self.analysis.host_name(self.names, *address.ip());
        format!("{host}:{}", self.port(address.port()))
    }

    fn side_label(&self, conn: usize, side: usize) -> String {
        self.analysis.side_name(self.names, conn, side)
    }

    /// A relative value of `side`'s sequence space, symbolically.
    fn value(&mut self, conn: usize, side: usize, relative: u32) -> String {
        if relative <= 1 {
            return relative.to_string();
        }
        let label = self.side_label(conn, side);
        if self.resume_points.get(&(conn, side)) == Some(&relative) {
            return format!("{label}.rcvd");
        }
        let named = self.values.entry((conn, side)).or_default();
        for (value, name) in named.iter() {
            let diff = relative.wrapping_sub(*value) as i32;
            if diff == 0 {
                return name.clone();
            }
            if (-2..=2).contains(&diff) {
                return format!("{name}{diff:+}");
            }
        }
        let name = format!("{label}.{}", named.len() + 1);
        named.push((relative, name.clone()));
        name
    }

    fn elided(&mut self, data: &ElidedData) {
        if data.segments == 0 {
            return;
        }
        // The binding of the flow's latest frame seen here, not the analysis' final one:
        // a tuple reused by a later connection must not take this one's data. Bindings
        // change only on frames an excerpt keeps (SYNs, MSYNs, a flow's first frame).
        let bound = self.flows.get(&(data.src, data.dst)).copied();
        // The proxy's forwarded copies are not counted at its own point, as
        // when the capture is read whole (`is_forwarded_copy`).
        let forwarded = bound.is_some_and(|(conn, side)| {
            self.analysis.relay_endpoints.contains(&data.src)
                && self.relay_inbound.contains(&(conn, side))
        });
        if !forwarded {
            self.count((data.src, data.dst), data.segments);
        }
        if let Some((conn, side)) = bound {
            let end = self.analysis.relative(conn, side, data.end);
            self.advance(conn, side, end);
        }
    }

    fn count(&mut self, flow: (SocketAddrV4, SocketAddrV4), n: u64) {
        match self.counts.iter_mut().find(|(f, _)| *f == flow) {
            Some((_, count)) => *count = count.saturating_add(n),
            None => self.counts.push((flow, n)),
        }
    }

    fn advance(&mut self, conn: usize, side: usize, end: u32) {
        let entry = self.sent_end.entry((conn, side)).or_insert(end);
        if (end.wrapping_sub(*entry) as i32) > 0 {
            *entry = end;
        }
    }

    /// Moves the model of what `side` has sent past `segment`, if it occupies sequence
    /// space: an RST does not (and a forged one must not move the model), nor does a
    /// pure ACK. A golden excerpt records the end of the data it leaves out, so the
    /// model is the same whether it is read from the capture or from an excerpt.
    fn advance_by(&mut self, conn: usize, side: usize, segment: &Segment, relative: u32) {
        if segment.seq_len() > 0 && !segment.has(RST) {
            self.advance(conn, side, relative.wrapping_add(segment.seq_len()));
        }
    }

    fn flush_counts(&mut self) {
        for (flow, count) in std::mem::take(&mut self.counts) {
            let src = self.endpoint(flow.0);
            let dst = self.endpoint(flow.1);
            self.lines.push(Line {
                frame: None,
                text: format!("        .. {} data {src} > {dst}", count_bucket(count)),
            });
        }
    }

    fn segment(
        &mut self,
        t: u64,
        capture: usize,
        frame: usize,
        segment: &Segment,
        conn: usize,
        side: usize,
    ) {
        self.flows.insert((segment.src, segment.dst), (conn, side));
        self.flows
            .insert((segment.dst, segment.src), (conn, 1 - side));
        let opts = decode(&segment.options);
        let relative = self.analysis.relative(conn, side, segment.seq);
        let is_data = segment.payload_len > 0;
        let migrate = migrate_of(&opts);
        let relay = relay_of(&opts).filter(|_| segment.has(SYN) && migrate.is_none());
        let resumed = matches!(migrate, Some(MigrateOption::MsynAck(_)))
            || matches!(relay, Some(RelayTicket::MsynAck(_)))
            || opts.iter().any(|o| matches!(o, Opt::AddressUpdate(_)));

        let mut reason = segment.has(SYN) || segment.has(RST) || segment.has(FIN);
        if self.awaiting_handshake_ack.contains(&conn) && side == 0 && segment.has(ACK) {
            self.awaiting_handshake_ack.remove(&conn);
            reason = true;
        }
        let rendered: Vec<(bool, String)> = opts
            .iter()
            .map(|opt| {
                let text = self.option(opt, &opts, segment, conn, side, (capture, frame));
                (opt.is_notable(), text)
            })
            .collect();
        let options_text = join(rendered.iter().map(|(_, text)| text));
        let notable_text = join(rendered.iter().filter(|(n, _)| *n).map(|(_, text)| text));
        if !notable_text.is_empty() && !segment.has(SYN) {
            // A repeated option content (Confirm, Address-Update until answered) is one line.
            if self.shown_options.insert((conn, side, notable_text)) {
                reason = true;
            }
        }
        if is_data && self.awaiting_first_data.remove(&(conn, side)) {
            reason = true;
        }
        if self.analysis.relay_endpoints.contains(&segment.dst) {
            self.relay_inbound.insert((conn, side));
        }
        if !reason {
            if is_data && !self.is_forwarded_copy(segment, conn, side) {
                self.count((segment.src, segment.dst), 1);
            }
            self.window.insert((conn, side), segment.window);
            self.advance_by(conn, side, segment, relative);
            return;
        }

        self.flush_counts();
        // A side's first FIN leaves when the application closes: after it wrote
        // everything (its gap is how long the transfer took, the path's and the
        // machine's speed) or once it read the peer's FIN. That timing is the
        // application's, not the protocol's, and is not shown; a FIN sent again (a
        // retransmission) shows its gap.
        let closes = segment.has(FIN) && !self.fin_sent.contains(&(conn, side));
        // At the proxy's point, a segment it forwards left when the proxy got
        // to it after the original came in: its gap is the proxy's scheduling,
        // not the protocol's (PROTOCOL.md §6.9), and it does not time the next.
        let forwarded =
            self.is_forwarded_copy(segment, conn, side) && !segment.has(SYN) && !segment.has(RST);
        let gap = match self.last_line_ns {
            None => "0".to_string(),
            Some(_) if forwarded => "+fwd".to_string(),
            Some(_) if closes => "+close".to_string(),
            Some(last) => gap_bucket(t.saturating_sub(last), self.rtt_ns).to_string(),
        };
        if segment.has(FIN) {
            self.fin_sent.insert((conn, side));
        }
        if !forwarded {
            self.last_line_ns = Some(t);
        }
        let src = self.endpoint(segment.src);
        let dst = self.endpoint(segment.dst);
        let kind = kind_of(segment, migrate.is_some() || relay.is_some());
        let seq = if segment.has(RST) && !self.is_known_value(conn, side, relative) {
            self.window_class(conn, side, relative)
        } else {
            self.value(conn, side, relative)
        };
        let mut text = format!(
            "{gap:<8}{src} > {dst}  {kind:<9}[{}] seq={seq}",
            segment.flag_letters()
        );
        if segment.has(ACK) {
            let ack = self.analysis.relative(conn, 1 - side, segment.ack);
            let ack = self.value(conn, 1 - side, ack);
            text.push_str(&format!(" ack={ack}"));
        }
        if is_data {
            text.push_str(" data");
        }
        if !opts.is_empty() {
            text.push_str(&format!(" <{options_text}>"));
        }
        self.lines.push(Line {
            frame: Some(frame),
            text,
        });
        // PROTOCOL.md §7 fast resume: an MSYN-ACK or Confirm declares the
        // sender's RCV.NXT as an offset from its ACK field. The peer's data
        // resumes exactly there; where that is depends on what was in flight at
        // the move, so the point gets a name of its own (`b.rcvd`) that does
        // not count among the side's named values.
        let received = match (migrate, relay) {
            (Some(MigrateOption::MsynAck(m)), _) => m.received,
            (Some(MigrateOption::Confirm(m)), _) => m.received,
            // PROTOCOL.md §3.5: 0 when the proxy does not know it.
            (None, Some(RelayTicket::MsynAck(a))) => Some(a.received).filter(|&r| r > 0),
            _ => None,
        };
        if let (Some(offset), true) = (received, segment.has(ACK)) {
            let ack = self.analysis.relative(conn, 1 - side, segment.ack);
            self.resume_points
                .insert((conn, 1 - side), ack.wrapping_add(offset));
        }

        if segment.has(SYN) && segment.has(ACK) && migrate.is_none() {
            self.awaiting_handshake_ack.insert(conn);
        }
        // A forged MSYN-ACK or Address-Update resumes nothing.
        if resumed && !options_text.contains("[mac:BAD]") {
            self.awaiting_first_data.insert((conn, 0));
            self.awaiting_first_data.insert((conn, 1));
            if is_data {
                self.awaiting_first_data.remove(&(conn, side));
            }
        }
        self.window.insert((conn, side), segment.window);
        self.advance_by(conn, side, segment, relative);
    }

    /// A data segment the proxy forwards, at the proxy's capture point
    /// (which showed the original arriving).
    fn is_forwarded_copy(&self, segment: &Segment, conn: usize, side: usize) -> bool {
        self.analysis.relay_endpoints.contains(&segment.src)
            && self.relay_inbound.contains(&(conn, side))
    }

    fn is_known_value(&self, conn: usize, side: usize, relative: u32) -> bool {
        relative <= 1
            || self.sent_end.get(&(conn, side)) == Some(&relative)
            || self.values.get(&(conn, side)).is_some_and(|named| {
                named
                    .iter()
                    .any(|(v, _)| (-2..=2).contains(&(relative.wrapping_sub(*v) as i32)))
            })
    }

    /// RFC 5961 §3: where an RST's sequence number lies in its receiver's window.
    fn window_class(&self, conn: usize, side: usize, relative: u32) -> String {
        let next = self.sent_end.get(&(conn, side)).copied().unwrap_or(0);
        let peer = 1 - side;
        let scale = self.analysis.conns[conn].sides[peer]
            .window_scale
            .unwrap_or(0)
            .min(14);
        let window =
            u32::from(self.window.get(&(conn, peer)).copied().unwrap_or(u16::MAX)) << scale;
        let ahead = relative.wrapping_sub(next);
        if ahead < window.max(1) {
            "<in-window>".into()
        } else {
            "<out-of-window>".into()
        }
    }

    fn key_of(&self, conn: usize, side: usize) -> Option<Key> {
        self.analysis.conns[conn].sides[side].key.map(Key)
    }

    fn token(&self, conn: usize, receiver: usize, token: u32) -> &'static str {
        match self.key_of(conn, receiver) {
            Some(key) if key.token().0 == token => "[token]",
            Some(_) => "[token:WRONG]",
            None => "[token?]",
        }
    }

    /// A relay ticket id must name the leg it is used on (PROTOCOL.md §6.9):
    /// the sender's in a relay MSYN, the receiver's in the proxy's MSYN-ACK; and
    /// the proxy must know it: `[ticket?]` for an id it never answered.
    fn ticket(&self, ticket: u32, leg: (usize, usize)) -> &'static str {
        if !self.analysis.answered_tickets.contains(&ticket) {
            return "[ticket?]";
        }
        match self.analysis.relay_tickets.get(&ticket) {
            Some(&owner) if owner == leg => "[ticket]",
            Some(_) => "[ticket:WRONG]",
            None => "[ticket?]",
        }
    }

    fn mac(verified: Option<bool>) -> &'static str {
        match verified {
            Some(true) => "[mac]",
            Some(false) => "[mac:BAD]",
            None => "[mac?]",
        }
    }

    fn option(
        &mut self,
        opt: &Opt,
        all: &[Opt],
        segment: &Segment,
        conn: usize,
        side: usize,
        at: (usize, usize),
    ) -> String {
        let peer = 1 - side;
        match opt {
            Opt::Eol => "eol".into(),
            Opt::Nop => "nop".into(),
            Opt::Mss(mss) => format!("mss {mss}"),
            Opt::WindowScale(shift) => format!("ws {shift}"),
            Opt::SackPermitted => "sackOK".into(),
            Opt::Sack(blocks) => format!("sack {blocks}"),
            Opt::Timestamps { ecr_zero: true } => "ts ecr=0".into(),
            Opt::Timestamps { ecr_zero: false } => "ts".into(),
            Opt::Permit(permit) => {
                let direct = self.endpoint(permit.direct());
                let observed = if permit.direct() == segment.src {
                    ""
                } else {
                    " natted"
                };
                match permit.key {
                    Some(0) => format!("permit({direct}{observed} key=[key:ZERO])"),
                    Some(_) => format!("permit({direct}{observed} key=[key])"),
                    None => format!("permit({direct}{observed})"),
                }
            }
            Opt::Migrate(MigrateOption::Msyn(m)) => {
                let verified = match (
                    self.key_of(conn, side),
                    self.key_of(conn, peer),
                    permit_of(all),
                ) {
                    (Some(mover), Some(responder), Some(permit)) => Some(auth::verify(
                        mover,
                        responder,
                        &auth::MacInput::Msyn {
                            token: responder.token(),
                            request: RequestNumber(m.request),
                            mover: permit.direct(),
                        },
                        &m.mac,
                    )),
                    _ => None,
                };
                let replay = if self.analysis.replays.contains(&at) {
                    " replay"
                } else {
                    ""
                };
                format!(
                    "migrate(token={} req={}{replay} mac={})",
                    self.token(conn, peer, m.token),
                    m.request,
                    Self::mac(verified)
                )
            }
            Opt::Migrate(MigrateOption::MsynAck(m)) => {
                let direct = self.analysis.conns[conn]
                    .msyn_direct
                    .get(&(peer, m.request))
                    .copied();
                let verified = match (self.key_of(conn, side), self.key_of(conn, peer), direct) {
                    (Some(responder), Some(mover), Some(direct)) => Some(auth::verify(
                        responder,
                        mover,
                        &auth::MacInput::MsynAck {
                            token: mover.token(),
                            request: RequestNumber(m.request),
                            nonce: m.nonce,
                            mover: direct,
                            received: m.received,
                        },
                        &m.mac,
                    )),
                    _ => None,
                };
                // PROTOCOL.md §7 fast resume: the offset's value depends on
                // what was in flight, so only its presence is shown.
                format!(
                    "migrate-ack(token={} req={} nonce=[nonce]{} mac={})",
                    self.token(conn, peer, m.token),
                    m.request,
                    if m.received.is_some() { " rcvd" } else { "" },
                    Self::mac(verified)
                )
            }
            Opt::Migrate(MigrateOption::Confirm(m)) => {
                let nonce = match self.analysis.conns[conn].nonces.get(&(side, m.request)) {
                    Some(&n) if n == m.nonce => "[nonce]",
                    Some(_) => "[nonce:WRONG]",
                    None => "[nonce?]",
                };
                let rcvd = if m.received.is_some() { " rcvd" } else { "" };
                format!("migrate-confirm(req={} nonce={nonce}{rcvd})", m.request)
            }
            Opt::AddressUpdate(update) => {
                let verified = match (self.key_of(conn, side), self.key_of(conn, peer)) {
                    (Some(mover), Some(receiver)) => Some(auth::verify(
                        mover,
                        receiver,
                        &auth::MacInput::AddressUpdate {
                            token: receiver.token(),
                            request: RequestNumber(update.request),
                            old_addr: update.old_addr,
                        },
                        &update.mac,
                    )),
                    _ => None,
                };
                let old = self.analysis.host_name(self.names, update.old_addr);
                format!(
                    "address-update(old={old} token={} req={} mac={})",
                    self.token(conn, peer, update.token),
                    update.request,
                    Self::mac(verified)
                )
            }
            Opt::RelayTicket(RelayTicket::Msyn(m)) => {
                // PROTOCOL.md §4.7: the key is the relay port's (the MSYN's
                // destination) and the ticket's; the MAC covers the Permit's
                // direct address and the MSYN's ACK field (the mover's RCV.NXT).
                let verified = match (&self.relay_secret, permit_of(all)) {
                    (Some(secret), Some(permit)) => Some(handshake::verify_relay_msyn(
                        &secret.ticket_key(segment.dst.port(), TicketId(m.ticket)),
                        m,
                        &permit,
                        SeqNumber(segment.ack),
                    )),
                    _ => None,
                };
                let replay = if self.analysis.replays.contains(&at) {
                    " replay"
                } else {
                    ""
                };
                format!(
                    "relay-ticket(ticket={} req={}{replay} mac={})",
                    self.ticket(m.ticket, (conn, side)),
                    m.request,
                    Self::mac(verified)
                )
            }
            Opt::RelayTicket(RelayTicket::MsynAck(a)) => {
                let direct = self.analysis.conns[conn]
                    .msyn_direct
                    .get(&(peer, a.request))
                    .copied();
                let verified = match (&self.relay_secret, direct) {
                    (Some(secret), Some(direct)) => Some(handshake::verify_relay_msyn_ack(
                        &HostTicket {
                            ticket: TicketId(a.ticket),
                            key: secret.ticket_key(segment.src.port(), TicketId(a.ticket)),
                        },
                        a,
                        direct,
                    )),
                    _ => None,
                };
                format!(
                    "relay-ticket-ack(ticket={} req={} nonce=[nonce]{} mac={})",
                    self.ticket(a.ticket, (conn, peer)),
                    a.request,
                    if a.received > 0 { " rcvd" } else { "" },
                    Self::mac(verified)
                )
            }
            Opt::BadLength { name, len } => format!("{name}(MALFORMED len={len})"),
            Opt::Experimental { exid, len } => format!("exp(exid=0x{exid:04x} len={len})"),
            Opt::Unknown { kind, len } => format!("opt(kind={kind} len={len})"),
            Opt::Malformed(reason) => format!("MALFORMED({reason})"),
        }
    }
}

fn join<'s>(texts: impl Iterator<Item = &'s String>) -> String {
    texts.map(String::as_str).collect::<Vec<_>>().join(",")
}

fn kind_of(segment: &Segment, migrate: bool) -> &'static str {
    if segment.has(RST) {
        "RST"
    } else if segment.has(SYN) && segment.has(ACK) {
        if migrate {
            "MSYN-ACK"
        } else {
            "SYN-ACK"
        }
    } else if segment.has(SYN) {
        if migrate {
            "MSYN"
        } else {
            "SYN"
        }
    } else if segment.has(FIN) {
        "FIN"
    } else if segment.payload_len > 0 {
        "DATA"
    } else {
        "ACK"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sustain_core::rand::{Random, SplitMix64};

    const MIB: u32 = 1 << 20;

    /// One connection as the proxy scenarios have it: b (side 0) opened it
    /// and sent 200 MiB; a (side 1) accepted and sent nothing but its SYN.
    fn relayed(isn_b: u32, isn_a: u32) -> Analysis {
        let mut analysis = Analysis::default();
        let conn = analysis.new_conn();
        analysis.set_isn(conn, 0, isn_b);
        analysis.set_isn(conn, 1, isn_a);
        analysis.high.insert((conn, 0), 200 * MIB);
        analysis.high.insert((conn, 1), 1);
        analysis
    }

    /// a's relay MSYN, as the attacker of attack-forged-ticket copies it into
    /// MSYNs with an unknown ticket: SND.UNA is a's ISN + 1, RCV.NXT where b's
    /// data had reached when a moved (50 MiB), while b has gone on to 200 MiB.
    fn owner_of_copied_msyn(isn_b: u32, isn_a: u32) -> Option<(usize, usize)> {
        relayed(isn_b, isn_a).relay_owner(isn_a.wrapping_add(1), isn_b.wrapping_add(50 * MIB))
    }

    #[test]
    fn a_relay_msyn_is_bound_to_the_side_whose_stream_it_continues() {
        // ISNs where a's SND.UNA reads as 100 MiB into b's stream and the
        // RCV.NXT as 50 MiB before a's ISN: under the old rule (anything up
        // to 1 GiB behind what a side sent) both sides fitted equally well
        // and the first, b, won: attack-forged-ticket's `seq=b.2`.
        let isn_a = 0x8000_0000;
        let isn_b = isn_a + 1 - 100 * MIB;
        assert_eq!(owner_of_copied_msyn(isn_b, isn_a), Some((0, 1)));
        // Any other pair of ISNs: b's side would need a's SND.UNA inside
        // the 200 MiB b sent and the RCV.NXT inside what a sent.
        let mut random = SplitMix64::new(11);
        for _ in 0..10_000 {
            let (isn_b, isn_a) = (random.next_u32(), random.next_u32());
            assert_eq!(
                owner_of_copied_msyn(isn_b, isn_a),
                Some((0, 1)),
                "ISNs b {isn_b:#x}, a {isn_a:#x}"
            );
        }
    }

    #[test]
    fn a_relay_msyn_of_no_stream_binds_to_none() {
        // Sequence numbers unrelated to either side: a connection of its own.
        let analysis = relayed(0x1000_0000, 0x2000_0000);
        assert_eq!(analysis.relay_owner(0x9000_0000, 0xa000_0000), None);
    }
}
