//! What the attacker sees: the target's connection as observed on the wire.

use super::*;

/// One direction of the observed connection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flow {
    pub(crate) seen: bool,
    /// Highest SEQ + LEN sent.
    pub(crate) seq_next: SeqNumber,
    /// Latest acknowledgment.
    pub(crate) ack: Option<SeqNumber>,
    /// Latest window field (unscaled).
    pub(crate) window: u16,
    pub(crate) tsval: Option<u32>,
}

impl Flow {
    pub(crate) fn update(&mut self, tcp: &TcpRepr<'_>) {
        let end = tcp.seq + tcp.segment_len();
        if !self.seen || end > self.seq_next {
            self.seq_next = end;
        }
        self.seen = true;
        if tcp.flags.ack() {
            self.ack = Some(tcp.ack);
            self.window = tcp.window;
        }
        if let Some(ts) = tcp.timestamps {
            self.tsval = Some(ts.tsval);
        }
    }
}

/// Where the attacker learned the target's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// A real MSYN that reached the target.
    Msyn,
    /// A real Address-Update that reached the target.
    AddressUpdate,
    /// Computed from the key in the target's SYN or SYN-ACK (stronger than off-path).
    HandshakeKey,
}

impl TokenSource {
    pub(crate) fn name(self) -> &'static str {
        match self {
            TokenSource::Msyn => "msyn",
            TokenSource::AddressUpdate => "address-update",
            TokenSource::HandshakeKey => "handshake-key",
        }
    }
}

/// The transfer's connection as seen on the target's uplink.
#[derive(Debug)]
pub(crate) struct ConnectionView {
    pub(crate) target_addr: Ipv4Addr,
    /// The accepting end's port: one end of the connection always has it.
    pub(crate) port: u16,
    /// Addresses of the attacker nodes: the target sending there means a forgery
    /// took.
    pub(crate) attackers: Vec<Ipv4Addr>,
    pub(crate) target_end: Option<SocketAddrV4>,
    /// Where the target currently sends.
    pub(crate) peer_end: Option<SocketAddrV4>,
    pub(crate) from_target: Flow,
    pub(crate) from_peer: Flow,
    pub(crate) target_window_shift: Option<u8>,
    pub(crate) peer_window_shift: Option<u8>,
    pub(crate) target_syn_timestamps: bool,
    pub(crate) peer_syn_timestamps: bool,
    pub(crate) token: Option<(u32, TokenSource)>,
    /// The first MSYN that reached the target (whole IP packet) and its source.
    pub(crate) first_msyn: Option<(Vec<u8>, SocketAddrV4)>,
    /// Newest request number seen in an MSYN or Address-Update to the target.
    pub(crate) latest_request: Option<u32>,
    /// The latest relay MSYN (PROTOCOL.md §6.9) of the connection seen (whole IP
    /// packet), on the proxy's uplink.
    pub(crate) relay_msyn: Option<Vec<u8>>,
    /// The target sent a non-SYN segment to the first MSYN's source: that move
    /// completed (a responder sends nothing but MSYN-ACKs before confirmation).
    pub(crate) migration_done: bool,
    /// Segments the target sent to an attacker address, and SYN-ACKs among them.
    pub(crate) to_attacker: u64,
    pub(crate) syn_acks_to_attacker: u64,
    /// Fingerprints of the TCP segments we injected, so they do not count as the
    /// peer's.
    pub(crate) injected: HashSet<u64>,
    /// IPv4 packets seen, and segments of the connection among them.
    pub(crate) packets: u64,
    pub(crate) segments: u64,
}

/// A hash of a packet's TCP segment (unchanged by forwarding, unlike TTL and the IP
/// checksum).
pub(crate) fn segment_fingerprint(packet: &[u8]) -> Option<u64> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let mut hasher = DefaultHasher::new();
    ip.payload().hash(&mut hasher);
    Some(hasher.finish())
}

/// A packet seen on a link, without the link layer's padding after its
/// total length.
fn unpadded(packet: &[u8]) -> Vec<u8> {
    Ipv4Packet::new_checked(packet)
        .map_or(packet, |ip| &packet[..usize::from(ip.total_len())])
        .to_vec()
}

impl ConnectionView {
    pub(crate) fn new(
        target_addr: Ipv4Addr,
        port: u16,
        attackers: Vec<Ipv4Addr>,
    ) -> ConnectionView {
        ConnectionView {
            target_addr,
            port,
            attackers,
            target_end: None,
            peer_end: None,
            from_target: Flow::default(),
            from_peer: Flow::default(),
            target_window_shift: None,
            peer_window_shift: None,
            target_syn_timestamps: false,
            peer_syn_timestamps: false,
            token: None,
            first_msyn: None,
            latest_request: None,
            relay_msyn: None,
            migration_done: false,
            to_attacker: 0,
            syn_acks_to_attacker: 0,
            injected: HashSet::new(),
            packets: 0,
            segments: 0,
        }
    }

    /// Takes in one IPv4 packet seen on the uplink. Anything that is not a valid
    /// TCP segment of the transfer's connection is ignored.
    pub(crate) fn observe(&mut self, packet: &[u8]) {
        self.packets += 1;
        let Ok((ip, tcp)) = parse_ipv4_tcp(packet) else {
            return;
        };
        if tcp.src_port != self.port && tcp.dst_port != self.port {
            return;
        }
        if segment_fingerprint(packet).is_some_and(|fp| self.injected.contains(&fp)) {
            return;
        }
        let syn_without_migrate = |options: &MigrationOptions<'_>| {
            tcp.flags.syn() && options.migrate.is_none() && !tcp.flags.rst()
        };
        // Malformed sustain options: the segment still counts as TCP.
        let options = MigrationOptions::from_repr(&tcp).unwrap_or_default();
        // A relay MSYN, wherever its NAPT put its source (the observer of a
        // `forged-ticket` is on the proxy's uplink).
        if tcp.flags.syn()
            && !tcp.flags.ack()
            && !self.attackers.contains(&ip.src)
            && matches!(options.relay(), Some(RelayTicket::Msyn(_)))
        {
            self.relay_msyn = Some(unpadded(packet));
        }
        if ip.src == self.target_addr {
            if self.attackers.contains(&ip.dst) {
                self.to_attacker += 1;
                if tcp.flags.syn() && tcp.flags.ack() {
                    self.syn_acks_to_attacker += 1;
                }
                return;
            }
            self.segments += 1;
            let remote = SocketAddrV4::new(ip.dst, tcp.dst_port);
            self.target_end = Some(SocketAddrV4::new(ip.src, tcp.src_port));
            self.peer_end = Some(remote);
            self.from_target.update(&tcp);
            if syn_without_migrate(&options) {
                self.target_window_shift = tcp.window_scale;
                self.target_syn_timestamps = tcp.timestamps.is_some();
                if let (None, Some(key)) = (self.token, options.permit.and_then(|p| p.key)) {
                    self.token = Some((token_of(Key(key)).0, TokenSource::HandshakeKey));
                }
            }
            if !tcp.flags.syn()
                && self
                    .first_msyn
                    .as_ref()
                    .is_some_and(|(_, src)| *src == remote)
            {
                self.migration_done = true;
            }
        } else if ip.dst == self.target_addr {
            if self.attackers.contains(&ip.src) {
                return;
            }
            self.segments += 1;
            self.from_peer.update(&tcp);
            let is_msyn = tcp.flags.syn() && !tcp.flags.ack() && !tcp.flags.rst();
            if let (true, Some(MigrateOption::Msyn(migrate))) = (is_msyn, options.migrate) {
                if self.first_msyn.is_none() {
                    let bytes = unpadded(packet);
                    self.first_msyn = Some((bytes, SocketAddrV4::new(ip.src, tcp.src_port)));
                }
                self.token = Some((migrate.token, TokenSource::Msyn));
                self.note_request(migrate.request);
            }
            if let Some(update) = options.address_update {
                if self
                    .token
                    .is_none_or(|(_, source)| source != TokenSource::Msyn)
                {
                    self.token = Some((update.token, TokenSource::AddressUpdate));
                }
                self.note_request(update.request);
            }
            if syn_without_migrate(&options) {
                self.peer_window_shift = tcp.window_scale;
                self.peer_syn_timestamps = tcp.timestamps.is_some();
            }
        }
    }

    pub(crate) fn note_request(&mut self, request: u32) {
        // RFC 1982 serial arithmetic, as the receiver compares them (PROTOCOL.md §4.5).
        let newer = self
            .latest_request
            .is_none_or(|latest| (request.wrapping_sub(latest) as i32) > 0);
        if newer {
            self.latest_request = Some(request);
        }
    }

    /// Window scaling is in force only if both SYNs carried it (RFC 7323 §2.2).
    pub(crate) fn target_window(&self) -> usize {
        let shift = match (self.target_window_shift, self.peer_window_shift) {
            (Some(shift), Some(_)) => shift.min(14),
            _ => 0,
        };
        usize::from(self.from_target.window) << shift
    }

    pub(crate) fn timestamps(&self) -> bool {
        self.target_syn_timestamps && self.peer_syn_timestamps
    }

    /// Timestamps for a segment posing as the peer's: its newest TSval (never older
    /// than the target's TS.Recent, so PAWS lets it through) and the target's newest
    /// as the echo.
    pub(crate) fn peer_timestamps(&self) -> Option<Timestamps> {
        self.timestamps().then(|| Timestamps {
            tsval: self.from_peer.tsval.unwrap_or(0),
            tsecr: self.from_target.tsval.unwrap_or(0),
        })
    }

    pub(crate) fn ends(&self) -> std::result::Result<(SocketAddrV4, SocketAddrV4), String> {
        match (self.target_end, self.peer_end, self.from_peer.seen) {
            (Some(target), Some(peer), true) => Ok((target, peer)),
            _ => Err("no traffic of the connection seen on the target's uplink yet".into()),
        }
    }

    pub(crate) fn token(&self) -> std::result::Result<(u32, TokenSource), String> {
        self.token
            .ok_or_else(|| "no token seen (no Migrate-Permit in the target's SYN?)".into())
    }

    /// Why `kind` cannot be sent yet, if it cannot.
    pub(crate) fn not_ready_for(&self, kind: AttackKind) -> Option<String> {
        if kind == AttackKind::ForgedTicket {
            return self
                .relay_msyn
                .is_none()
                .then(|| "no relay MSYN of the target's seen on the proxy's uplink yet".into());
        }
        if let Err(why) = self.ends() {
            return Some(why);
        }
        if self.from_target.ack.is_none() {
            return Some("the target has acknowledged nothing yet".into());
        }
        if kind.needs_token() {
            if let Err(why) = self.token() {
                return Some(why);
            }
        }
        match kind {
            AttackKind::ReplayedMsyn if self.first_msyn.is_none() => {
                Some("no MSYN has reached the target yet".into())
            }
            AttackKind::ReplayedMsyn if !self.migration_done => {
                Some("the real migration has not completed yet".into())
            }
            AttackKind::BlindRst if self.target_window() < 2 => {
                Some("the target's window is closed: no in-window RST exists".into())
            }
            _ => None,
        }
    }
}

/// A control message a host sent the server, as captured on the server's uplink.
#[derive(Clone, Debug)]
pub(crate) struct CapturedMessage {
    /// The whole message, byte for byte.
    pub(crate) bytes: Vec<u8>,
    pub(crate) repr: ControlRepr,
    /// Its session's source as the server sees it.
    pub(crate) from: SocketAddrV4,
}

/// One direction of one TCP connection to or from the server, reassembled in
/// sequence order into control messages.
#[derive(Debug, Default)]
pub(crate) struct ControlStream {
    /// The next sequence number expected; `None` until its SYN was seen.
    pub(crate) next: Option<SeqNumber>,
    pub(crate) frames: FrameBuffer,
    /// A gap (a segment beyond `next`): the rest of the stream is not read.
    pub(crate) lost: bool,
}

impl ControlStream {
    /// Appends what `tcp` adds to the stream in order; returns the whole
    /// messages it completes.
    pub(crate) fn push(&mut self, tcp: &TcpRepr<'_>) -> Vec<Vec<u8>> {
        if tcp.flags.syn() {
            *self = ControlStream {
                next: Some(tcp.seq + 1),
                ..ControlStream::default()
            };
            return Vec::new();
        }
        let Some(next) = self.next else {
            return Vec::new();
        };
        if self.lost || tcp.payload.is_empty() {
            return Vec::new();
        }
        let end = tcp.seq + tcp.payload.len();
        if tcp.seq > next {
            self.lost = true;
            return Vec::new();
        }
        if end <= next {
            return Vec::new(); // a retransmission of what we have
        }
        let skip = next - tcp.seq;
        self.frames
            .push(tcp.payload.get(skip..).unwrap_or_default());
        self.next = Some(end);
        let mut messages = Vec::new();
        while let Ok(Some(frame)) = self.frames.next_frame() {
            messages.push(frame);
        }
        messages
    }
}

/// The mobility server's control sessions as seen on the server's uplink: the
/// target's own control messages (to replay, and whose connection id and side a
/// forgery names) and the notices the server sends.
#[derive(Debug)]
pub(crate) struct ControlView {
    pub(crate) server: SocketAddrV4,
    /// The target's initial address: the direct address of its first Register.
    pub(crate) target_addr: Ipv4Addr,
    pub(crate) attackers: Vec<Ipv4Addr>,
    pub(crate) streams: HashMap<(SocketAddrV4, SocketAddrV4), ControlStream>,
    /// The target's connection id and side (PROTOCOL.md §15.2), from its Register.
    pub(crate) target_conn: Option<(ConnectionId, Side)>,
    /// Every message of the target's (connection, side), in the order seen.
    pub(crate) captured: Vec<CapturedMessage>,
    /// Request numbers of the target's the server acknowledged.
    pub(crate) acked: Vec<u32>,
    /// PeerLocations the server sent, and those naming an attacker's address.
    pub(crate) notices: u64,
    pub(crate) notices_to_attacker: u64,
    pub(crate) packets: u64,
    pub(crate) segments: u64,
}

impl ControlView {
    pub(crate) fn new(
        server: SocketAddrV4,
        target_addr: Ipv4Addr,
        attackers: Vec<Ipv4Addr>,
    ) -> ControlView {
        ControlView {
            server,
            target_addr,
            attackers,
            streams: HashMap::new(),
            target_conn: None,
            captured: Vec::new(),
            acked: Vec::new(),
            notices: 0,
            notices_to_attacker: 0,
            packets: 0,
            segments: 0,
        }
    }

    /// Takes in one IPv4 packet seen on the server's uplink. Only TCP segments of
    /// hosts' control sessions count (never the attackers' own).
    pub(crate) fn observe(&mut self, packet: &[u8]) {
        self.packets += 1;
        let Ok((ip, tcp)) = parse_ipv4_tcp(packet) else {
            return;
        };
        let src = SocketAddrV4::new(ip.src, tcp.src_port);
        let dst = SocketAddrV4::new(ip.dst, tcp.dst_port);
        let to_server = dst == self.server;
        let host = if to_server {
            src
        } else if src == self.server {
            dst
        } else {
            return;
        };
        if self.attackers.contains(host.ip()) {
            return;
        }
        self.segments += 1;
        let messages = self.streams.entry((src, dst)).or_default().push(&tcp);
        for bytes in messages {
            let Ok((Incoming::Control(repr), _)) = Incoming::parse(&bytes) else {
                continue;
            };
            if to_server {
                self.host_message(bytes, repr, host);
            } else {
                self.server_message(repr);
            }
        }
    }

    pub(crate) fn host_message(&mut self, bytes: Vec<u8>, repr: ControlRepr, from: SocketAddrV4) {
        let conn = (repr.header.conn, repr.header.side);
        if let (None, Body::Register(register)) = (self.target_conn, repr.body) {
            if *register.direct.ip() == self.target_addr {
                self.target_conn = Some(conn);
            }
        }
        if self.target_conn == Some(conn) {
            self.captured.push(CapturedMessage { bytes, repr, from });
        }
    }

    pub(crate) fn server_message(&mut self, repr: ControlRepr) {
        match repr.body {
            Body::PeerLocation(notice) => {
                self.notices += 1;
                if self.attackers.contains(notice.target.ip()) {
                    self.notices_to_attacker += 1;
                }
            }
            Body::Ack(ack) if self.target_conn == Some((repr.header.conn, repr.header.side)) => {
                self.acked.push(ack.request);
            }
            _ => {}
        }
    }

    /// The target's first Register.
    pub(crate) fn register(&self) -> Option<(&CapturedMessage, Register)> {
        self.captured.iter().find_map(|m| match m.repr.body {
            Body::Register(register) => Some((m, register)),
            _ => None,
        })
    }

    /// The newest request number of the target's seen.
    pub(crate) fn latest_request(&self) -> u32 {
        self.captured
            .iter()
            .map(|m| m.repr.header.number)
            .fold(0, |latest, n| {
                if (n.wrapping_sub(latest) as i32) > 0 {
                    n
                } else {
                    latest
                }
            })
    }

    /// The target's current direct address: its latest MoveReport's new one, else
    /// its Register's.
    pub(crate) fn target_direct(&self) -> Option<SocketAddrV4> {
        self.captured.iter().rev().find_map(|m| match m.repr.body {
            Body::MoveReport(report) => Some(report.new_direct),
            Body::Register(register) => Some(register.direct),
            _ => None,
        })
    }

    /// Why `kind` cannot be sent yet, if it cannot.
    pub(crate) fn not_ready_for(&self, kind: AttackKind) -> Option<String> {
        if self.target_conn.is_none() {
            return Some(format!(
                "no Register from {} seen on the server's uplink yet",
                self.target_addr
            ));
        }
        let acked_report = self.captured.iter().any(|m| {
            matches!(m.repr.body, Body::MoveReport(_)) && self.acked.contains(&m.repr.header.number)
        });
        match kind {
            AttackKind::ReplayedReport if !acked_report => {
                Some("no MoveReport of the target's acknowledged by the server yet".into())
            }
            _ => None,
        }
    }
}
