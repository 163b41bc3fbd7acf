//! The symmetric proxy in the deterministic simulator (PROTOCOL.md §6.9):
//! both ends of a connection move behind NAPTs at once, the test plays the
//! mobility server (allocates a relay port, derives the tickets, calls
//! `Endpoint::relay_location` on both ends), both send the proxy node a
//! relay MSYN, and the relay splices them. Checked: both 16 MiB streams
//! byte for byte (sha256), the handshake on each leg, a relayed end moving
//! behind another NAPT (relaying resumes), a relayed end moving to a global
//! address (RST from the proxy, then a direct MSYN), and forged, replayed,
//! other-port and unknown-port tickets (no effect, counted, no state).

mod common;
use common::{random_bytes, sha256, Stream};
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use sha2::Digest;
use sustain_core::rand::SplitMix64;
use sustain_core::relay::{
    HostTicket, Relay, RelayConfig, RelayEvent, RelaySecret, RelayState, ReleaseReason, TicketId,
};
use sustain_core::sim::{
    Fate, InsideScope, LinkConfig, MiddleboxId, Napt, Network, NodeId, SimNode,
};
use sustain_core::tcp::{Config, ConnId, Endpoint, Event, MigWaitCause, State};
use sustain_core::time::{Duration, Instant};
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, Ipv4Repr, MigrationOptions, MigrationScratch, OptionScratch,
    RelayTicket, TcpFlags, TcpRepr,
};

const MIB: usize = 1 << 20;
const A_GLOBAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const A_GLOBAL_2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const B_GLOBAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const B_PORT: u16 = 443;
const PROXY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
const NAPT_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const NAPT_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const NAPT_A2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
const A_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const A_PRIVATE_2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const B_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
const SECRET: [u8; 32] = [0x5a; 32];
const TICKETS: [TicketId; 2] = [TicketId(0x1111_1111), TicketId(0x2222_2222)];

/// Hosts and the proxy in one network.
#[allow(clippy::large_enum_variant)]
enum Node {
    Host(Endpoint),
    Proxy(Relay),
}

impl Node {
    fn host(&mut self) -> &mut Endpoint {
        match self {
            Node::Host(e) => e,
            Node::Proxy(_) => panic!("not a host"),
        }
    }
    fn host_ref(&self) -> &Endpoint {
        match self {
            Node::Host(e) => e,
            Node::Proxy(_) => panic!("not a host"),
        }
    }
    fn relay(&mut self) -> &mut Relay {
        match self {
            Node::Proxy(r) => r,
            Node::Host(_) => panic!("not the proxy"),
        }
    }
    fn relay_ref(&self) -> &Relay {
        match self {
            Node::Proxy(r) => r,
            Node::Host(_) => panic!("not the proxy"),
        }
    }
}

impl SimNode for Node {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        match self {
            Node::Host(e) => e.handle_packet(now, packet),
            Node::Proxy(r) => r.handle_packet(now, packet),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Node::Host(e) => e.handle_timeout(now),
            Node::Proxy(r) => r.handle_timeout(now),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Node::Host(e) => e.poll_timeout(),
            Node::Proxy(r) => r.poll_timeout(),
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        match self {
            Node::Host(e) => e.poll_transmit(now, buf).map(|t| t.size),
            Node::Proxy(r) => r.poll_transmit(buf).map(|t| t.size),
        }
    }
}

struct Harness {
    net: Network<Node>,
    a: NodeId,
    b: NodeId,
    proxy: NodeId,
    a_conn: ConnId,
    b_conn: Option<ConnId>,
    listener: sustain_core::tcp::ListenerId,
    up: Stream,
    down: Stream,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    relay_events: Vec<RelayEvent>,
    chunk: Vec<u8>,
    port: Option<u16>,
    napts: Vec<Rc<RefCell<Napt>>>,
}

impl Harness {
    fn new(bytes: usize, seed: u64) -> Harness {
        let mut net: Network<Node> = Network::new(seed);
        let a = net.add_node(
            A_GLOBAL,
            Node::Host(Endpoint::new(
                Config::default(),
                Box::new(SplitMix64::new(seed ^ 1)),
            )),
        );
        let b = net.add_node(
            B_GLOBAL,
            Node::Host(Endpoint::new(
                Config::default(),
                Box::new(SplitMix64::new(seed ^ 2)),
            )),
        );
        let relay = Relay::new(
            RelayConfig {
                addr: PROXY,
                ports: (40000, 40009),
                ..RelayConfig::default()
            },
            RelaySecret::new(SECRET),
            Box::new(SplitMix64::new(seed ^ 3)),
        );
        let proxy = net.add_node(PROXY, Node::Proxy(relay));
        let server = SocketAddrV4::new(B_GLOBAL, B_PORT);
        let listener = net.node_mut(b).host().listen(server).unwrap();
        let now = net.now();
        let a_conn = net
            .node_mut(a)
            .host()
            .connect(now, SocketAddrV4::new(A_GLOBAL, 0), server)
            .unwrap();
        Harness {
            net,
            a,
            b,
            proxy,
            a_conn,
            b_conn: None,
            listener,
            up: Stream::new(random_bytes(bytes, seed ^ 0x55)),
            down: Stream::new(random_bytes(bytes, seed ^ 0xaa)),
            a_events: Vec::new(),
            b_events: Vec::new(),
            relay_events: Vec::new(),
            chunk: vec![0; 256 * 1024],
            port: None,
            napts: Vec::new(),
        }
    }

    fn pump_one(
        ep: &mut Endpoint,
        conn: ConnId,
        tx: &mut Stream,
        rx: &mut Stream,
        chunk: &mut [u8],
    ) {
        while tx.written < tx.data.len() {
            match ep.send(conn, &tx.data[tx.written..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => tx.written += n,
            }
        }
        while let Ok(n) = ep.recv(conn, chunk) {
            if n == 0 {
                break;
            }
            rx.hasher.update(&chunk[..n]);
            rx.read += n;
        }
    }

    fn pump(&mut self) {
        self.net.flush();
        let (a, b, a_conn) = (self.a, self.b, self.a_conn);
        Self::pump_one(
            self.net.node_mut(a).host(),
            a_conn,
            &mut self.up,
            &mut self.down,
            &mut self.chunk,
        );
        if self.b_conn.is_none() {
            self.b_conn = self.net.node_mut(b).host().accept(self.listener);
        }
        if let Some(conn) = self.b_conn {
            Self::pump_one(
                self.net.node_mut(b).host(),
                conn,
                &mut self.down,
                &mut self.up,
                &mut self.chunk,
            );
        }
        while let Some(e) = self.net.node_mut(a).host().poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.net.node_mut(b).host().poll_event() {
            self.b_events.push(e);
        }
        let proxy = self.proxy;
        while let Some(e) = self.net.node_mut(proxy).relay().poll_event() {
            self.relay_events.push(e);
        }
    }

    fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Harness) -> bool) -> bool {
        loop {
            self.pump();
            if done(self) {
                return true;
            }
            let mut stepped = false;
            let progressed = self.net.run_until(deadline, |_| {
                let first = !stepped;
                stepped = true;
                !first
            });
            if !progressed {
                self.pump();
                return done(self);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let deadline = self.net.now() + d;
        self.run_until(deadline, |_| false);
    }

    fn now(&self) -> Instant {
        self.net.now()
    }

    fn transfer(&mut self, bytes: usize) {
        let (up, down) = (self.up.read, self.down.read);
        let deadline = self.now() + Duration::from_secs(600);
        let ok = self.run_until(deadline, |h| {
            h.up.read >= (up + bytes).min(h.up.data.len())
                && h.down.read >= (down + bytes).min(h.down.data.len())
        });
        assert!(
            ok,
            "transfer stalled: up {} down {}",
            self.up.read, self.down.read
        );
    }

    fn b_conn(&self) -> ConnId {
        self.b_conn.expect("accepted")
    }

    fn relay(&self) -> &Relay {
        self.net.node(self.proxy).relay_ref()
    }

    fn host(&self, id: NodeId) -> &Endpoint {
        self.net.node(id).host_ref()
    }

    /// A node leaves its address and gets `new` behind `napt` (None: global).
    fn move_node(&mut self, node: NodeId, old: Ipv4Addr, new: Ipv4Addr, napt: Option<MiddleboxId>) {
        self.net.remove_address(node, old);
        let now = self.now();
        self.net.node_mut(node).host().address_lost(now, old);
        self.net.set_uplink(node, napt);
        self.net.add_address(node, new);
        self.net.node_mut(node).host().address_available(now, new);
        self.pump();
    }

    fn add_napt(&mut self, public: Ipv4Addr) -> MiddleboxId {
        let napt = Rc::new(RefCell::new(Napt::new(public)));
        let id = self.net.add_middlebox(napt.clone(), InsideScope::Private);
        self.net.add_middlebox_address(id, public);
        self.napts.push(napt);
        id
    }

    /// Segments the NAPTs dropped for the tracker's ACK and data bounds
    /// (PROTOCOL.md §10): what the relay's clamp and saved ACK prevent.
    fn bound_drops(&self) -> u64 {
        self.napts
            .iter()
            .map(|n| {
                let s = n.borrow().stats().clone();
                s.ack_over_bound_dropped + s.seq_over_bound_dropped
            })
            .sum()
    }

    /// The test plays the mobility server of PROTOCOL.md §15.14: a relay
    /// port for the two tickets, the keys derived from the shared secret,
    /// a RelayAssignment to each end.
    fn assign_relay(&mut self) -> u16 {
        let now = self.now();
        let port = self
            .net
            .node_mut(self.proxy)
            .relay()
            .allocate(now, TICKETS, Duration::from_secs(30))
            .unwrap();
        let secret = RelaySecret::new(SECRET);
        let proxy = SocketAddrV4::new(PROXY, port);
        for (node, conn, leg) in [(self.a, self.a_conn, 0), (self.b, self.b_conn(), 1)] {
            let ticket = HostTicket {
                ticket: TICKETS[leg],
                key: secret.ticket_key(port, TICKETS[leg]),
            };
            self.net
                .node_mut(node)
                .host()
                .relay_location(now, conn, proxy, ticket)
                .unwrap();
        }
        self.port = Some(port);
        self.pump();
        port
    }

    /// Both ends behind NAPTs, relayed and spliced.
    fn relayed(bytes: usize, seed: u64) -> (Harness, MiddleboxId, MiddleboxId) {
        let mut h = Harness::new(bytes, seed);
        let deadline = h.now() + Duration::from_secs(10);
        assert!(h.run_until(deadline, |h| h.b_conn.is_some()));
        h.transfer(MIB);
        let napt_a = h.add_napt(NAPT_A);
        let napt_b = h.add_napt(NAPT_B);
        // Both move at once; their MSYNs to each other's old addresses go
        // nowhere (MIG_SENT).
        h.move_node(h.a, A_GLOBAL, A_PRIVATE, Some(napt_a));
        h.move_node(h.b, B_GLOBAL, B_PRIVATE, Some(napt_b));
        h.run_for(Duration::from_millis(50));
        let port = h.assign_relay();
        let deadline = h.now() + Duration::from_secs(10);
        assert!(
            h.run_until(deadline, |h| h.relay().state(port) == RelayState::Spliced),
            "not spliced: {:?} {:?}",
            h.relay().state(port),
            h.relay().stats()
        );
        (h, napt_a, napt_b)
    }

    fn finish(&mut self) {
        let deadline = self.now() + Duration::from_secs(100);
        let ok = self.run_until(deadline, |h| {
            h.up.read == h.up.data.len() && h.down.read == h.down.data.len()
        });
        if !ok {
            eprintln!("A {:?}", self.host(self.a).info(self.a_conn));
            eprintln!("B {:?}", self.host(self.b).info(self.b_conn()));
            eprintln!("relay {:?} {:?}", self.relay().stats(), self.relay_events);
            let f = |v: &Vec<Event>| -> Vec<Event> {
                v.iter()
                    .filter(|e| !matches!(e, Event::Readable(_) | Event::Writable(_)))
                    .cloned()
                    .collect()
            };
            eprintln!("A events {:?}", f(&self.a_events));
            eprintln!("B events {:?}", f(&self.b_events));
        }
        assert!(ok, "stalled: up {} down {}", self.up.read, self.down.read);
        assert_eq!(
            sha256(&self.up.data),
            hex::encode(self.up.hasher.clone().finalize())
        );
        assert_eq!(
            sha256(&self.down.data),
            hex::encode(self.down.hasher.clone().finalize())
        );
    }
}

#[test]
fn both_behind_napts_are_spliced_and_16_mib_cross_each_way() {
    let (mut h, _, _) = Harness::relayed(16 * MIB, 7);
    let port = h.port.unwrap();
    let stats = h.relay().stats().clone();
    assert_eq!(stats.msyn_acks_sent, 2, "{stats:?}");
    assert_eq!(stats.confirms, 2);
    assert_eq!(
        stats.bad_mac + stats.unknown_ticket + stats.replayed + stats.unknown_port,
        0
    );
    assert!(h.relay_events.contains(&RelayEvent::Spliced { port }));
    // §6.9 fast resume: each end skipped what the other already had, as
    // the other's relay MSYN told the proxy.
    for node in [h.a, h.b] {
        assert!(h.host(node).stats().resume_skipped_bytes > 0);
    }
    h.finish();
    // §10: the trackers on both legs never dropped an ACK or data segment.
    assert_eq!(h.bound_drops(), 0);
    // Both ends resumed through the proxy, never directly.
    for (node, conn) in [(h.a, h.a_conn), (h.b, h.b_conn())] {
        let info = h.host(node).info(conn).unwrap();
        assert_eq!(info.remote, SocketAddrV4::new(PROXY, port));
        assert_eq!(info.state, State::Established);
        let leg = usize::from(node == h.b);
        assert_eq!(
            h.host(node).relay_ticket(conn).map(|t| t.ticket),
            Some(TICKETS[leg])
        );
    }
    assert!(h.relay().stats().forwarded > 2 * 16 * MIB as u64 / 1460 / 2);
}

/// PROTOCOL.md §6.9 "The first splice": the legs' RTTs differ (A 16 ms,
/// B 24 ms), so A's Confirm reaches the proxy long before B's. A's NAPT
/// passes A's Confirm at its resume point (the window ACK after the
/// MSYN-ACK opened it), but A sends no data before B's leg is open: the
/// MSYN-ACK's window ends at B's RCV.NXT, and only B's first ACK through
/// the relay opens it. Nothing is sent into a NAPT that would drop it, no
/// MSYN-ACK is retransmitted, and neither end waits for a retransmission
/// timeout. A's Confirm, forwarded to B's answered leg, is sent again once
/// B confirms, so B learns A's window even if B had nothing to send.
#[test]
fn first_splice_holds_data_until_both_legs_are_open_and_needs_no_timeout() {
    let mut h = Harness::new(8 * MIB, 23);
    let link = |ms| LinkConfig {
        latency: Duration::from_millis(ms),
        rate_bps: Some(50_000_000),
        queue_bytes: 16 * 1024,
        ..LinkConfig::default()
    };
    h.net.set_default_link(link(1));
    let (a, b, proxy) = (h.a, h.b, h.proxy);
    h.net.set_link_both(a, proxy, link(8));
    h.net.set_link_both(b, proxy, link(12));
    let deadline = h.now() + Duration::from_secs(10);
    assert!(h.run_until(deadline, |h| h.b_conn.is_some()));
    h.transfer(MIB);
    let napt_a = h.add_napt(NAPT_A);
    let napt_b = h.add_napt(NAPT_B);
    h.move_node(a, A_GLOBAL, A_PRIVATE, Some(napt_a));
    h.move_node(b, B_GLOBAL, B_PRIVATE, Some(napt_b));
    h.run_for(Duration::from_millis(50));
    let timeouts = |h: &Harness| [h.host(a).stats().timeouts, h.host(b).stats().timeouts];
    let before = timeouts(&h);
    // Everything the proxy sends or receives.
    h.net.set_capture_filter(|p| {
        p.len() > 20 && (p[12..16] == PROXY.octets() || p[16..20] == PROXY.octets())
    });
    h.net.enable_capture();
    let port = h.assign_relay();
    let deadline = h.now() + Duration::from_secs(10);
    assert!(h.run_until(deadline, |h| h.relay().stats().confirms == 1));
    let first = h.now();
    assert!(h.run_until(deadline, |h| h.relay().stats().confirms == 2));
    let second = h.now();
    assert_eq!(h.relay().state(port), RelayState::Spliced);
    h.run_for(Duration::from_millis(100));
    let captured: Vec<_> = h
        .net
        .capture()
        .iter()
        .filter_map(|c| {
            let (ip, seg) = sustain_core::wire::parse_ipv4_tcp(&c.bytes).ok()?;
            Some((c.time, ip.src, ip.dst, seg.payload.len(), c.fate))
        })
        .collect();
    // No data crossed the proxy before B's leg was confirmed.
    let early: Vec<_> = captured
        .iter()
        .filter(|(t, _, _, len, _)| *t < second && *len > 0)
        .collect();
    assert!(early.is_empty(), "data before both Confirms: {early:?}");
    // A's Confirm went to B's answered leg between the two Confirms, and
    // again (the same pure ACK) once B confirmed.
    let acks_to_b = |from: Instant, to: Instant| {
        captured
            .iter()
            .filter(|(t, src, dst, len, _)| {
                *t >= from && *t < to && *src == PROXY && *dst == NAPT_B && *len == 0
            })
            .count()
    };
    assert_eq!(acks_to_b(first, second), 1, "{captured:?}");
    assert!(acks_to_b(second, h.now()) >= 1, "{captured:?}");
    // Then data flows both ways, all of it delivered through the NAPTs.
    let data: Vec<_> = captured
        .iter()
        .filter(|(t, src, _, len, _)| *t >= second && *src == PROXY && *len > 0)
        .collect();
    assert!(data.len() >= 2, "{captured:?}");
    assert!(data.iter().all(|c| c.4 == Fate::Delivered), "{data:?}");
    h.finish();
    let stats = h.relay().stats().clone();
    assert_eq!(
        stats.msyn_acks_sent, 2,
        "no MSYN-ACK retransmitted: {stats:?}"
    );
    assert_eq!(stats.window_acks, 2, "{stats:?}");
    assert_eq!(timeouts(&h), before, "a retransmission timeout");
}

#[test]
fn relayed_end_moves_behind_another_napt_and_the_relay_resumes() {
    let (mut h, _, _) = Harness::relayed(16 * MIB, 11);
    let port = h.port.unwrap();
    h.transfer(2 * MIB);
    let napt_a2 = h.add_napt(NAPT_A2);
    h.move_node(h.a, A_PRIVATE, A_PRIVATE_2, Some(napt_a2));
    let deadline = h.now() + Duration::from_secs(20);
    assert!(h.run_until(deadline, |h| h
        .relay_events
        .iter()
        .filter(|e| matches!(e, RelayEvent::Spliced { .. }))
        .count()
        == 2));
    h.finish();
    // B did not move and acked what A had sent over its old path: the
    // proxy clamped those ACKs for A's new NAPT, which dropped none.
    assert!(h.relay().stats().acks_clamped > 0);
    assert_eq!(h.bound_drops(), 0);
    // §6.9 "Moving again": B's latest pure ACK followed the MSYN-ACK to A's
    // new leg, so A's new NAPT knew B's window before A's Confirm.
    assert!(h.relay().stats().window_acks >= 1);
    let attached: Vec<&RelayEvent> = h
        .relay_events
        .iter()
        .filter(|e| matches!(e, RelayEvent::LegAttached { leg: 0, .. }))
        .collect();
    assert_eq!(attached.len(), 2, "{attached:?}");
    match attached[1] {
        RelayEvent::LegAttached { remote, .. } => assert_eq!(*remote.ip(), NAPT_A2),
        _ => unreachable!(),
    }
    assert_eq!(h.relay().state(port), RelayState::Spliced);
    assert_eq!(h.relay().stats().refused_global, 0);
}

#[test]
fn relayed_end_moving_to_a_global_address_is_refused_then_moves_directly() {
    let (mut h, _, _) = Harness::relayed(8 * MIB, 13);
    let port = h.port.unwrap();
    h.transfer(MIB);
    h.move_node(h.a, A_PRIVATE, A_GLOBAL_2, None);
    let deadline = h.now() + Duration::from_secs(5);
    assert!(
        h.run_until(deadline, |h| h.a_events.iter().any(|e| matches!(
            e,
            Event::MigWait {
                cause: MigWaitCause::Refused,
                ..
            }
        )))
    );
    assert_eq!(h.relay().stats().refused_global, 1);
    assert!(h.relay_events.contains(&RelayEvent::Released {
        port,
        reason: ReleaseReason::LegWentGlobal
    }));
    assert!(!h.relay().owns_port(port));
    // The server's decision (§15.10): A is global, B behind a NAPT: B
    // sends a direct MSYN to A's new address.
    let a_local = h.host(h.a).info(h.a_conn).unwrap().local;
    let now = h.now();
    let b_conn = h.b_conn();
    let b = h.b;
    h.net
        .node_mut(b)
        .host()
        .peer_location(now, b_conn, SocketAddrV4::new(A_GLOBAL_2, a_local.port()))
        .unwrap();
    h.finish();
    assert_eq!(h.host(h.a).relay_ticket(h.a_conn), None);
    assert_eq!(h.host(h.b).relay_ticket(b_conn), None);
    let b_remote = h.host(h.b).info(b_conn).unwrap().remote;
    assert_eq!(b_remote, SocketAddrV4::new(A_GLOBAL_2, a_local.port()));
}

/// A relay MSYN from `from` to the proxy with the given ticket fields.
fn relay_msyn(from: SocketAddrV4, port: u16, ticket: RelayTicket, seq: u32) -> Vec<u8> {
    let mut t = OptionScratch::default();
    let options = MigrationOptions {
        permit: Some(sustain_core::tcp::handshake::short_permit(
            SocketAddrV4::new(A_PRIVATE, 5555),
        )),
        relay_ticket: Some(ticket.to_option(&mut t).data),
        ..MigrationOptions::default()
    };
    let mut repr = TcpRepr {
        src_port: from.port(),
        dst_port: port,
        seq: sustain_core::wire::SeqNumber(seq),
        flags: TcpFlags::SYN,
        window: 65535,
        mss: Some(1460),
        window_scale: Some(7),
        ..TcpRepr::default()
    };
    let mut scratch = MigrationScratch::default();
    options.attach(&mut scratch, &mut repr).unwrap();
    let mut buf = vec![0u8; ipv4_tcp_len(&repr)];
    emit_ipv4_tcp(&Ipv4Repr::new(*from.ip(), PROXY), &repr, &mut buf).unwrap();
    buf
}

#[test]
fn forged_replayed_and_misdirected_tickets_change_nothing_and_are_counted() {
    let (mut h, _, _) = Harness::relayed(4 * MIB, 17);
    let port = h.port.unwrap();
    h.transfer(MIB);
    let attacker = h.net.add_node(
        ATTACKER,
        Node::Host(Endpoint::new(
            Config::default(),
            Box::new(SplitMix64::new(99)),
        )),
    );
    let from = SocketAddrV4::new(ATTACKER, 6666);
    let secret = RelaySecret::new(SECRET);
    let before = h.relay().stats().clone();
    let relays = h.relay().relay_count();
    let genuine_key = secret.ticket_key(port, TICKETS[0]);
    let mac_with = |key: &sustain_core::relay::TicketKey, request: u32| {
        sustain_core::tcp::handshake::relay_msyn_option(
            &HostTicket {
                ticket: TICKETS[0],
                key: *key,
            },
            sustain_core::auth::RequestNumber(request),
            SocketAddrV4::new(A_PRIVATE, 5555),
            sustain_core::wire::SeqNumber(0),
        )
    };
    // 1. Forged: a random MAC on a real ticket id.
    let forged = match mac_with(&genuine_key, 1000) {
        RelayTicket::Msyn(mut m) => {
            m.mac = [0x13; 8];
            RelayTicket::Msyn(m)
        }
        other => other,
    };
    h.net.inject(attacker, relay_msyn(from, port, forged, 1));
    // 2. A ticket for another port: keyed for port + 1.
    let other_port = secret.ticket_key(port + 1, TICKETS[0]);
    h.net.inject(
        attacker,
        relay_msyn(from, port, mac_with(&other_port, 1001), 1),
    );
    // 3. An unknown ticket id.
    let unknown = match mac_with(&genuine_key, 1002) {
        RelayTicket::Msyn(mut m) => {
            m.ticket = 0x3333_3333;
            RelayTicket::Msyn(m)
        }
        other => other,
    };
    h.net.inject(attacker, relay_msyn(from, port, unknown, 1));
    // 4. A replay: a genuine MSYN with an old request number (A's first
    //    relay MSYN was request 2 or more: 1 went to B's old address).
    h.net.inject(
        attacker,
        relay_msyn(from, port, mac_with(&genuine_key, 1), 1),
    );
    // 5. A flood to a port with no relay.
    for i in 0..1000 {
        h.net.inject(
            attacker,
            relay_msyn(from, port + 5, mac_with(&genuine_key, 2000 + i), i),
        );
    }
    h.transfer(MIB);
    let after = h.relay().stats().clone();
    assert_eq!(after.bad_mac - before.bad_mac, 2, "{after:?}");
    assert_eq!(after.unknown_ticket - before.unknown_ticket, 1);
    assert_eq!(after.replayed - before.replayed, 1);
    assert_eq!(after.unknown_port - before.unknown_port, 1000);
    assert_eq!(
        after.msyn_acks_sent, before.msyn_acks_sent,
        "nothing answered"
    );
    assert_eq!(h.relay().relay_count(), relays, "no state");
    assert_eq!(h.relay().state(port), RelayState::Spliced);
    h.finish();
}

#[test]
fn relays_are_released_on_fin_and_when_never_spliced() {
    let (mut h, _, _) = Harness::relayed(MIB, 19);
    let port = h.port.unwrap();
    h.finish();
    let (a, b, a_conn, b_conn) = (h.a, h.b, h.a_conn, h.b_conn());
    h.net.node_mut(a).host().close(a_conn).unwrap();
    h.net.node_mut(b).host().close(b_conn).unwrap();
    h.run_for(Duration::from_secs(15));
    assert!(h.relay_events.contains(&RelayEvent::Released {
        port,
        reason: ReleaseReason::Finished
    }));
    assert!(!h.relay().owns_port(port));
    assert_eq!(h.relay().relay_count(), 0);

    // A relay nobody uses, and one only one leg reaches, expire after
    // their lifetime; the ports are reused.
    let now = h.now();
    let proxy = h.proxy;
    let relay = h.net.node_mut(proxy).relay();
    let p1 = relay
        .allocate(now, [TicketId(7), TicketId(8)], Duration::from_secs(5))
        .unwrap();
    assert_eq!(relay.state(p1), RelayState::WaitingFirst);
    h.run_for(Duration::from_secs(6));
    assert!(h.relay_events.contains(&RelayEvent::Released {
        port: p1,
        reason: ReleaseReason::Expired
    }));
    assert_eq!(h.relay().relay_count(), 0);
    let now = h.now();
    let same = h.net.node_mut(proxy).relay().allocate(
        now,
        [TicketId(7), TicketId(7)],
        Duration::from_secs(5),
    );
    assert_eq!(same, Err(sustain_core::relay::RelayError::SameTicket));
}
