//! Tests of the decision rules, the server state machine and the client:
//! the paper's cases as a table, then the same cases through clients and
//! server with reports in either order, twice and crossing, then every kind
//! of bad input, then a seeded simulation.

use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::HashMap;

use super::*;
use crate::auth::{ConnectionKeys, Key};
use crate::control::{ErrorCode, Outcome, PeerLocation, RelayAssignment};
use crate::rand::{Random, SplitMix64};
use crate::relay::control::ProxySession;
use crate::relay::{Relay, RelayConfig, RelaySecret, RelayState, TicketId};
use crate::time::{Duration, Instant};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn end(direct: &str, observed: &str, moved_at: u64) -> EndState {
    EndState {
        direct: sa(direct),
        observed: ip(observed),
        moved_at,
    }
}

#[test]
fn decision_table() {
    use Side::{High, Low};
    let msyn = |sender, target: &str| Decision::Msyn {
        sender,
        target: sa(target),
    };
    // (case, low, high, expected)
    let rows = [
        (
            "nobody moved",
            end("192.0.2.10:1000", "192.0.2.10", 0),
            end("198.51.100.20:80", "198.51.100.20", 0),
            Decision::NoMove,
        ),
        (
            "nobody moved, both behind NAPTs",
            end("10.0.0.2:1000", "203.0.113.1", 0),
            end("10.1.0.2:80", "203.0.113.2", 0),
            Decision::NoMove,
        ),
        (
            "both global, only low moved: low sends to high",
            end("192.0.2.11:1000", "192.0.2.11", 1),
            end("198.51.100.20:80", "198.51.100.20", 0),
            msyn(Low, "198.51.100.20:80"),
        ),
        (
            "both global, low then high moved: high (later) sends",
            end("192.0.2.11:1000", "192.0.2.11", 1),
            end("198.51.100.21:80", "198.51.100.21", 2),
            msyn(High, "192.0.2.11:1000"),
        ),
        (
            "both global, high then low moved: low (later) sends",
            end("192.0.2.11:1000", "192.0.2.11", 7),
            end("198.51.100.21:80", "198.51.100.21", 3),
            msyn(Low, "198.51.100.21:80"),
        ),
        (
            "low behind NAPT did not move, high global moved: low sends",
            end("10.0.0.2:1000", "203.0.113.1", 0),
            end("198.51.100.21:80", "198.51.100.21", 1),
            msyn(Low, "198.51.100.21:80"),
        ),
        (
            "high behind NAPT did not move, low global moved: high sends",
            end("192.0.2.11:1000", "192.0.2.11", 1),
            end("10.1.0.2:80", "203.0.113.2", 0),
            msyn(High, "192.0.2.11:1000"),
        ),
        (
            "low moved NAPT to NAPT, high global: low sends",
            end("10.9.0.2:1000", "203.0.113.9", 4),
            end("198.51.100.20:80", "198.51.100.20", 0),
            msyn(Low, "198.51.100.20:80"),
        ),
        (
            "paper: high global moved first, low NAPT to NAPT later: low sends to high's new address",
            end("10.9.0.2:1000", "203.0.113.9", 2),
            end("198.51.100.21:80", "198.51.100.21", 1),
            msyn(Low, "198.51.100.21:80"),
        ),
        (
            "paper, other order: NAPTed low first, global high later: still low sends",
            end("10.9.0.2:1000", "203.0.113.9", 1),
            end("198.51.100.21:80", "198.51.100.21", 2),
            msyn(Low, "198.51.100.21:80"),
        ),
        (
            "global low moved behind a NAPT: it now sends",
            end("10.0.0.2:1000", "203.0.113.1", 5),
            end("198.51.100.20:80", "198.51.100.20", 0),
            msyn(Low, "198.51.100.20:80"),
        ),
        (
            "both behind NAPTs, one moved: relay",
            end("10.0.0.2:1000", "203.0.113.1", 1),
            end("10.1.0.2:80", "203.0.113.2", 0),
            Decision::RelayNeeded,
        ),
        (
            "both behind NAPTs, both moved: relay",
            end("10.0.0.2:1000", "203.0.113.1", 1),
            end("10.1.0.2:80", "203.0.113.2", 2),
            Decision::RelayNeeded,
        ),
        (
            "direct equal to observed on a private address counts as global",
            end("10.0.0.2:1000", "10.0.0.2", 1),
            end("10.1.0.2:80", "10.1.0.2", 2),
            msyn(High, "10.0.0.2:1000"),
        ),
    ];
    for (case, low, high, expected) in rows {
        assert_eq!(decide([&low, &high]), expected, "{case}");
        // Swapping the sides mirrors the decision.
        let swapped = match decide([&high, &low]) {
            Decision::Msyn { sender, target } => Decision::Msyn {
                sender: sender.other(),
                target,
            },
            other => other,
        };
        assert_eq!(swapped, expected, "{case} (sides swapped)");
    }
}

// ---------------------------------------------------------------------
// Clients and server, in process.

const KEY_A: Key = Key(0x0123_4567_89AB_CDEF); // low side
const KEY_B: Key = Key(0xFEDC_BA98_7654_3210); // high side

struct Host {
    client: ControlClient,
    session: SessionId,
    /// The host's address as the server sees it (a NAPT's if behind one).
    public: Ipv4Addr,
    next_port: u16,
    got: Vec<ServerMessage>,
    rejected: Vec<ClientError>,
    last_report: Option<Vec<u8>>,
}

struct Net {
    server: Server,
    hosts: Vec<Host>,
    owner: HashMap<SessionId, usize>,
    now: Instant,
    closed: Vec<SessionId>,
    proxy: Option<TestProxy>,
}

/// The proxy end of the server's proxy link, with a real relay table.
struct TestProxy {
    session: ProxySession,
    relay: Relay,
    rng: SplitMix64,
    /// While set, what the server sends the proxy is kept, not answered.
    hold: bool,
    held: Vec<Vec<u8>>,
    /// The server closed the session (ProxyClose).
    closed: bool,
}

fn keys(i: usize) -> ConnectionKeys {
    let (local, remote) = if i == 0 {
        (KEY_A, KEY_B)
    } else {
        (KEY_B, KEY_A)
    };
    ConnectionKeys { local, remote }
}

impl Net {
    /// Host 0 (low side) at `a_direct` seen as `a_public`; host 1 (high)
    /// likewise. Each host's peer_seen is the other's public address.
    fn new(config: ServerConfig, a: (&str, &str), b: (&str, &str)) -> Net {
        let mut net = Net {
            server: Server::new(config),
            hosts: Vec::new(),
            owner: HashMap::new(),
            now: Instant::from_millis(1000),
            closed: Vec::new(),
            proxy: None,
        };
        let ends = [a, b];
        for (i, (direct, public)) in ends.iter().enumerate() {
            let peer = ends[1 - i];
            let peer_seen = SocketAddrV4::new(ip(peer.1), sa(peer.0).port());
            let client = ControlClient::new(&keys(i), sa(direct), peer_seen).unwrap();
            net.hosts.push(Host {
                client,
                session: 0,
                public: ip(public),
                next_port: 40000,
                got: Vec::new(),
                rejected: Vec::new(),
                last_report: None,
            });
            net.connect(i);
        }
        net
    }

    /// A new control session from host `i`'s current public address.
    fn connect(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        h.next_port += 1;
        let observed = SocketAddrV4::new(h.public, h.next_port);
        let session = self.server.open_session(self.now, observed).unwrap();
        self.owner.insert(session, i);
        self.hosts[i].session = session;
    }

    fn send(&mut self, i: usize, bytes: &[u8]) {
        let session = self.hosts[i].session;
        self.server.handle_stream(self.now, session, bytes);
    }

    /// Routes the server's outputs to the hosts owning the sessions, and
    /// to the proxy (whose answers go back to the server at once).
    fn deliver(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::ProxySend { bytes } => {
                    let Some(p) = self.proxy.as_mut().filter(|p| !p.closed) else {
                        continue;
                    };
                    if p.hold {
                        p.held.push(bytes);
                        continue;
                    }
                    let answer = p
                        .session
                        .handle(self.now, &bytes, &mut p.relay, &mut p.rng)
                        .expect("the proxy accepts what the server sends");
                    if let Some(answer) = answer {
                        self.server.handle_proxy_stream(self.now, &answer);
                    }
                }
                Output::ProxyClose => {
                    if let Some(p) = self.proxy.as_mut() {
                        p.closed = true;
                    }
                }
                Output::Send { session, bytes } => {
                    let Some(&i) = self.owner.get(&session) else {
                        continue;
                    };
                    if self.closed.contains(&session) {
                        continue;
                    }
                    let h = &mut self.hosts[i];
                    match h.client.handle_message(&bytes) {
                        Ok(m) => h.got.push(m),
                        Err(e) => h.rejected.push(e),
                    }
                }
                Output::Close { session } => self.closed.push(session),
            }
        }
    }

    fn register(&mut self, i: usize) {
        let bytes = self.hosts[i].client.register();
        self.send(i, &bytes);
    }

    /// Host `i` moves to `direct` (same port), seen as `public`, and
    /// reports from a new session; `deliver` decides whether answers are
    /// read before the other host acts (crossing).
    fn move_to(&mut self, i: usize, direct: &str, public: &str) {
        self.hosts[i].public = ip(public);
        self.connect(i);
        let bytes = self.hosts[i].client.report_move(sa(direct));
        self.hosts[i].last_report = Some(bytes.clone());
        self.send(i, &bytes);
    }

    fn resend_report(&mut self, i: usize) {
        let bytes = self.hosts[i].last_report.clone().unwrap();
        self.send(i, &bytes);
    }

    fn locations(&self, i: usize) -> Vec<SocketAddrV4> {
        self.hosts[i]
            .got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::PeerLocation(p) => Some(p.target),
                _ => None,
            })
            .collect()
    }

    fn outcomes(&self, i: usize) -> Vec<Outcome> {
        self.hosts[i]
            .got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Ack(a) => Some(a.outcome),
                _ => None,
            })
            .collect()
    }

    fn errors(&self, i: usize) -> Vec<ErrorCode> {
        self.hosts[i]
            .got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Error(e) => Some(e.code),
                _ => None,
            })
            .collect()
    }
}

const A_GLOBAL: (&str, &str) = ("192.0.2.10:5000", "192.0.2.10");
const B_GLOBAL: (&str, &str) = ("198.51.100.20:80", "198.51.100.20");
const A_NAPT1: (&str, &str) = ("10.0.0.2:5000", "203.0.113.1");
const B_NAPT2: (&str, &str) = ("10.1.0.2:80", "203.0.113.2");

fn registered(a: (&str, &str), b: (&str, &str)) -> Net {
    let mut net = Net::new(ServerConfig::default(), a, b);
    net.register(0);
    net.register(1);
    net.deliver();
    assert_eq!(net.outcomes(0), [Outcome::Registered]);
    assert_eq!(net.outcomes(1), [Outcome::Registered]);
    net
}

#[test]
fn both_global_the_later_reporter_sends_in_either_order() {
    for first in [0, 1] {
        let second = 1 - first;
        let mut net = registered(A_GLOBAL, B_GLOBAL);
        let new = ["192.0.2.11", "198.51.100.21"];
        let port = [5000, 80];
        net.move_to(
            first,
            &format!("{}:{}", new[first], port[first]),
            new[first],
        );
        net.deliver();
        // Alone so far: the reporter is the later one, towards the other's
        // (old) address.
        assert_eq!(net.outcomes(first).last(), Some(&Outcome::YouSend));
        net.move_to(
            second,
            &format!("{}:{}", new[second], port[second]),
            new[second],
        );
        net.deliver();
        assert_eq!(net.outcomes(second).last(), Some(&Outcome::YouSend));
        let target = SocketAddrV4::new(ip(new[first]), port[first]);
        assert_eq!(net.locations(second), [target], "first {first}");
        assert_eq!(net.locations(first).len(), 1, "first {first}");
    }
}

#[test]
fn crossing_reports_are_decided_in_arrival_order() {
    let mut net = registered(A_GLOBAL, B_GLOBAL);
    // Both report before either reads an answer.
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.move_to(0, "192.0.2.11:5000", "192.0.2.11");
    net.deliver();
    // B's arrived first, so A is the later reporter and sends to B's new
    // address; B was told (before A's report) to send to A's old one, and
    // the core's crossing rules (§6.6) cover the rest.
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
    assert_eq!(net.locations(1), [sa("192.0.2.10:5000")]);
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::YouSend));
}

#[test]
fn a_report_twice_changes_nothing() {
    let mut net = registered(A_GLOBAL, B_GLOBAL);
    net.move_to(0, "192.0.2.11:5000", "192.0.2.11");
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert_eq!(net.locations(1), [sa("192.0.2.11:5000")]);
    // A's report again, byte for byte (e.g. resent on a new session): a
    // Repeat, answered with an Ack, no new decision.
    net.resend_report(0);
    // A's report again with a fresh number but the same location: not a
    // new move, so B stays the later reporter.
    let again = net.hosts[0].client.report_move(sa("192.0.2.11:5000"));
    net.send(0, &again);
    net.deliver();
    assert_eq!(net.locations(0).len(), 1);
    assert_eq!(net.locations(1), [sa("192.0.2.11:5000")]);
    assert_eq!(
        net.outcomes(0),
        [
            Outcome::Registered,
            Outcome::YouSend,
            Outcome::PeerSends,
            Outcome::PeerSends
        ]
    );
    assert_eq!(net.server.stats().repeats, 1);
    assert_eq!(net.server.stats().rejected(), 0);
}

#[test]
fn a_repeat_from_another_address_is_a_replay_and_keeps_the_session() {
    // A sits behind a NAPT and never moves: its Register is its latest message.
    // Someone who captured it replays it byte for byte from elsewhere. Were that a
    // repeat, A's side would move to the replayer's session and the notice of B's
    // move below would never reach A (found by the lab's attack-replayed-report).
    let mut net = Net::new(ServerConfig::default(), A_NAPT1, B_GLOBAL);
    let register = net.hosts[0].client.register();
    net.send(0, &register);
    net.register(1);
    net.deliver();
    let replayer = net
        .server
        .open_session(net.now, sa("100.64.2.10:40000"))
        .unwrap();
    net.server.handle_stream(net.now, replayer, &register);
    net.server.close_session(replayer);
    let stats = *net.server.stats();
    assert_eq!((stats.replayed, stats.repeats), (1, 0));
    // The same bytes from A's own address (a resend) are still a repeat.
    net.send(0, &register);
    assert_eq!(net.server.stats().repeats, 1);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
    assert_eq!(net.server.stats().notices_undeliverable, 0);
}

#[test]
fn napt_end_that_did_not_move_is_told_over_its_open_session() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert_eq!(net.outcomes(1).last(), Some(&Outcome::PeerSends));
    assert!(net.locations(1).is_empty());
    let notices: Vec<PeerLocation> = net.hosts[0]
        .got
        .iter()
        .filter_map(|m| match m {
            ServerMessage::PeerLocation(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(
        notices,
        [PeerLocation {
            request: 0,
            target: sa("198.51.100.21:80"),
            you_behind_napt: true,
            peer_behind_napt: false,
        }]
    );
    // A refresh Register after the notice does not repeat it.
    net.register(0);
    net.deliver();
    assert_eq!(net.locations(0).len(), 1);
}

#[test]
fn paper_experiment_in_either_order() {
    // B (global) moves to another global address, A moves from behind
    // NAPT 1 to behind NAPT 2; whatever the order, A ends up sending the
    // MSYN to B's new address and B is never told to send.
    for b_first in [true, false] {
        let mut net = registered(A_NAPT1, B_GLOBAL);
        let steps: [usize; 2] = if b_first { [1, 0] } else { [0, 1] };
        for i in steps {
            if i == 0 {
                net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
            } else {
                net.move_to(1, "198.51.100.21:80", "198.51.100.21");
            }
            net.deliver();
        }
        assert_eq!(
            net.locations(0).last(),
            Some(&sa("198.51.100.21:80")),
            "b_first {b_first}"
        );
        assert!(net.locations(1).is_empty(), "b_first {b_first}");
        assert_eq!(net.locations(0).len(), 2);
    }
}

#[test]
fn both_behind_napts_need_a_relay() {
    let mut net = registered(A_NAPT1, B_NAPT2);
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::RelayNeeded));
    assert!(net.locations(0).is_empty() && net.locations(1).is_empty());
    assert_eq!(net.server.stats().relays_needed, 1);
}

// ---------------------------------------------------------------------
// The proxy (PROTOCOL.md §15.14): relays for ends both behind NAPTs, with
// the proxy's real control session and relay table in process.

const PROXY_CONTROL: &str = "198.51.100.99:7002";
const SECRET: [u8; 32] = [0x42; 32];

impl Net {
    /// Configures the server's proxy and opens its session; the proxy
    /// holds `proxy_secret` (the server always `SECRET`).
    fn with_proxy(&mut self, ports: (u16, u16), proxy_secret: [u8; 32]) {
        self.server.set_proxy(
            ProxyConfig::new(sa(PROXY_CONTROL), RelaySecret::new(SECRET)),
            Box::new(SplitMix64::new(77)),
        );
        let relay = Relay::new(
            RelayConfig {
                addr: *sa(PROXY_CONTROL).ip(),
                ports,
                ..RelayConfig::default()
            },
            RelaySecret::new(proxy_secret),
            Box::new(SplitMix64::new(78)),
        );
        self.proxy = Some(TestProxy {
            session: ProxySession::new(RelaySecret::new(proxy_secret)),
            relay,
            rng: SplitMix64::new(79),
            hold: false,
            held: Vec::new(),
            closed: false,
        });
        self.server.proxy_session_opened(self.now);
        self.deliver();
    }

    fn proxy(&mut self) -> &mut TestProxy {
        self.proxy.as_mut().unwrap()
    }

    /// Answers what the held proxy messages ask, then lets them through.
    fn release_held(&mut self) {
        let p = self.proxy();
        p.hold = false;
        let held = std::mem::take(&mut p.held);
        for bytes in held {
            let p = self.proxy.as_mut().unwrap();
            if let Some(answer) = p
                .session
                .handle(self.now, &bytes, &mut p.relay, &mut p.rng)
                .unwrap()
            {
                self.server.handle_proxy_stream(self.now, &answer);
            }
        }
        self.deliver();
    }

    fn assignments(&self, i: usize) -> Vec<RelayAssignment> {
        self.hosts[i]
            .got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::RelayAssignment(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn relay_record(&self) -> Option<RelayRecord> {
        let id = self.hosts[0].client.credentials().id;
        self.server.registry().get(id).and_then(|e| e.relay)
    }

    fn server_events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

fn relayed_net() -> Net {
    let mut net = registered(A_NAPT1, B_NAPT2);
    net.with_proxy((40000, 40009), SECRET);
    assert!(net.server.proxy_established());
    net
}

#[test]
fn both_behind_napts_are_given_a_relay_then_a_global_end_is_sent_direct() {
    let mut net = relayed_net();
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::Relayed));
    let (a, b) = (net.assignments(0), net.assignments(1));
    assert_eq!((a.len(), b.len()), (1, 1));
    let port = a[0].proxy.port();
    assert_eq!(a[0].proxy, SocketAddrV4::new(ip("198.51.100.99"), port));
    assert_eq!(b[0].proxy, a[0].proxy);
    assert_ne!(a[0].ticket_id, b[0].ticket_id);
    // A's answers its report (request 2, after its Register); B's is
    // unsolicited. Each key is the one the proxy derives (§4.7).
    assert_eq!((a[0].request, b[0].request), (2, 0));
    let secret = RelaySecret::new(SECRET);
    for x in [&a[0], &b[0]] {
        assert_eq!(
            x.ticket_key,
            secret.ticket_key(port, TicketId(x.ticket_id)).0
        );
        assert_eq!(x.lifetime_secs, 30);
    }
    assert_eq!(net.proxy().relay.state(port), RelayState::WaitingFirst);
    assert!(net.locations(0).is_empty() && net.locations(1).is_empty());
    let st = *net.server.stats();
    assert_eq!(
        (
            st.relays_requested,
            st.relays_granted,
            st.relay_assignments_sent
        ),
        (1, 1, 2)
    );

    // The relayed end moves behind yet another NAPT: the relay stays (its
    // MSYN goes to the proxy with the same ticket, §6.9); only A hears, its
    // own assignment again.
    net.move_to(0, "10.8.0.2:5000", "203.0.113.8");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::Relayed));
    let again = net.assignments(0);
    assert_eq!(again.len(), 2);
    assert_eq!(
        (again[1].proxy, again[1].ticket_id),
        (a[0].proxy, a[0].ticket_id)
    );
    assert_eq!(net.assignments(1).len(), 1);
    assert_eq!(net.proxy().relay.relay_count(), 1);
    assert_eq!(net.server.stats().relays_requested, 1);

    // It moves to a global address: B (behind its NAPT) sends the MSYN
    // there (§15.10) and the relay is released at the proxy.
    net.move_to(0, "192.0.2.11:5000", "192.0.2.11");
    net.deliver();
    assert_eq!(net.locations(1), [sa("192.0.2.11:5000")]);
    assert!(!net.proxy().relay.owns_port(port));
    assert_eq!(net.relay_record(), None);
    assert_eq!(net.server.stats().relays_released, 1);
    assert_eq!(net.server.stats().rejected(), 0);
}

#[test]
fn crossing_reports_share_one_relay_request() {
    let mut net = relayed_net();
    net.proxy().hold = true;
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.move_to(1, "10.7.0.2:80", "203.0.113.7");
    net.deliver();
    // Both reports wait for the proxy's answer.
    assert_eq!(net.outcomes(0), [Outcome::Registered]);
    assert_eq!(net.outcomes(1), [Outcome::Registered]);
    assert_eq!(net.proxy().held.len(), 1);
    net.release_held();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::Relayed));
    assert_eq!(net.outcomes(1).last(), Some(&Outcome::Relayed));
    let (a, b) = (net.assignments(0), net.assignments(1));
    assert_eq!((a.len(), b.len()), (1, 1));
    // Each answers its own report.
    assert_eq!((a[0].request, b[0].request), (2, 2));
    assert_eq!(net.proxy().relay.relay_count(), 1);
    assert_eq!(net.server.stats().relays_requested, 1);
}

#[test]
fn without_a_proxy_answer_the_report_is_relay_needed() {
    // Configured, never connected.
    let mut net = registered(A_NAPT1, B_NAPT2);
    net.server.set_proxy(
        ProxyConfig::new(sa(PROXY_CONTROL), RelaySecret::new(SECRET)),
        Box::new(SplitMix64::new(1)),
    );
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::RelayNeeded));
    assert_eq!(net.server.stats().relays_requested, 0);

    // No free port: the proxy refuses.
    let mut net = registered(A_NAPT1, B_NAPT2);
    net.with_proxy((40000, 40000), SECRET);
    let now = net.now;
    net.proxy()
        .relay
        .allocate(now, [TicketId(1), TicketId(2)], Duration::from_secs(30))
        .unwrap();
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::RelayNeeded));
    assert!(net.assignments(0).is_empty() && net.assignments(1).is_empty());
    assert_eq!(net.server.stats().relays_refused, 1);

    // The session drops while the request is in flight.
    let mut net = relayed_net();
    net.proxy().hold = true;
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    net.server.proxy_session_closed(net.now);
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::RelayNeeded));
    assert!(!net.server.proxy_established());

    // A proxy without the secret: its Welcome does not verify, the server
    // closes the session.
    let mut net = registered(A_NAPT1, B_NAPT2);
    net.with_proxy((40000, 40009), [0x43; 32]);
    assert!(net.proxy().closed);
    assert!(!net.server.proxy_established());
    assert!(net.server_events().contains(&ServerEvent::ProxyDown {
        error: Some(crate::relay::control::ProxyControlError::BadMac)
    }));
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::RelayNeeded));
    assert_eq!(net.proxy().relay.relay_count(), 0);
}

#[test]
fn a_relay_the_proxy_closed_is_forgotten_and_a_later_report_asks_again() {
    let mut net = relayed_net();
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    let first = net.assignments(0)[0];
    // Never spliced: the proxy expires it and says so.
    let later = net.now + Duration::from_secs(31);
    let p = net.proxy();
    p.relay.handle_timeout(later);
    let mut closed = Vec::new();
    while let Some(event) = p.relay.poll_event() {
        if let crate::relay::RelayEvent::Released { port, reason } = event {
            closed.push(p.session.closed(port, reason).unwrap());
        }
    }
    assert_eq!(closed.len(), 1);
    for bytes in closed {
        net.server.handle_proxy_stream(later, &bytes);
    }
    assert_eq!(net.relay_record(), None);
    net.now = later;
    net.move_to(0, "10.8.0.2:5000", "203.0.113.8");
    net.deliver();
    assert_eq!(net.server.stats().relays_requested, 2);
    let second = net.assignments(0)[1];
    assert_ne!(second.ticket_id, first.ticket_id);
    assert_eq!(net.assignments(1).len(), 2);
}

#[test]
fn an_assignment_for_a_dead_session_is_delivered_on_reregistration() {
    let mut net = relayed_net();
    let old = net.hosts[1].session;
    net.server.close_session(old);
    net.move_to(0, "10.9.0.2:5000", "203.0.113.9");
    net.deliver();
    assert!(net.assignments(1).is_empty());
    assert_eq!(net.server.stats().notices_undeliverable, 1);
    net.connect(1);
    net.register(1);
    net.deliver();
    let b = net.assignments(1);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].proxy, net.assignments(0)[0].proxy);
    // Registering again once it has it sends nothing more.
    net.register(1);
    net.deliver();
    assert_eq!(net.assignments(1).len(), 1);
}

#[test]
fn peer_not_registered_waits_then_is_told_when_it_registers() {
    let mut net = Net::new(ServerConfig::default(), A_NAPT1, B_GLOBAL);
    net.register(1);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert_eq!(net.outcomes(1).last(), Some(&Outcome::Waiting));
    net.register(0);
    net.deliver();
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
}

#[test]
fn a_notice_for_a_dead_session_is_delivered_on_reregistration() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    let old = net.hosts[0].session;
    net.server.close_session(old);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert!(net.locations(0).is_empty());
    assert_eq!(net.server.stats().notices_undeliverable, 1);
    net.connect(0);
    net.register(0);
    net.deliver();
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
}

#[test]
fn restarted_server_is_repopulated_and_notice_numbers_continue() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    let before = net.hosts[0].client.last_notice();
    assert!(before >= 2);
    // Restart: empty registry, no sessions.
    net.server = Server::new(ServerConfig::default());
    net.owner.clear();
    // A report to the new server is unknown: the host re-registers.
    net.connect(1);
    net.move_to(1, "198.51.100.22:80", "198.51.100.22");
    net.deliver();
    assert_eq!(net.errors(1), [ErrorCode::UnknownConnection]);
    net.connect(0);
    net.register(0);
    net.register(1);
    net.move_to(1, "198.51.100.22:80", "198.51.100.22");
    net.deliver();
    // The notice after the restart is numbered above what A accepted.
    assert_eq!(net.locations(0).last(), Some(&sa("198.51.100.22:80")));
    assert!(
        net.hosts[0].rejected.is_empty(),
        "{:?}",
        net.hosts[0].rejected
    );
    assert!(net.hosts[0].client.last_notice() > before);
}

#[test]
fn unregister_and_ttl_remove_registrations() {
    let mut net = registered(A_GLOBAL, B_GLOBAL);
    let unreg = net.hosts[0].client.unregister();
    net.send(0, &unreg);
    net.deliver();
    assert_eq!(net.outcomes(0).last(), Some(&Outcome::Unregistered));
    assert_eq!(net.server.registry().len(), 1);
    let unreg = net.hosts[1].client.unregister();
    net.send(1, &unreg);
    net.deliver();
    assert_eq!(net.server.registry().len(), 0);

    let mut net = registered(A_GLOBAL, B_GLOBAL);
    let ttl = net.server.config().ttl;
    net.server.handle_timeout(net.now);
    net.now += ttl - Duration::from_secs(5);
    net.server.handle_timeout(net.now);
    assert_eq!(net.server.registry().len(), 1);
    net.now += Duration::from_secs(10);
    net.server.handle_timeout(net.now);
    assert_eq!(net.server.registry().len(), 0);
    assert_eq!(net.server.stats().expired, 1);
    net.move_to(0, "192.0.2.11:5000", "192.0.2.11");
    net.deliver();
    assert_eq!(net.errors(0), [ErrorCode::UnknownConnection]);
}

// ---------------------------------------------------------------------
// Bad input.

#[test]
fn forged_and_replayed_reports_change_nothing_and_are_counted() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    let before = net
        .server
        .registry()
        .get(net.hosts[0].client.credentials().id);
    // Forged: right id and side, MAC under a guessed verifier.
    let mut forger = net.hosts[1].client.clone();
    let forged = {
        use crate::control::{Body, ControlRepr, Header, MoveReport, UNSPECIFIED};
        let c = forger.credentials();
        ControlRepr {
            header: Header {
                conn: c.id,
                side: c.side,
                number: 99,
            },
            body: Body::MoveReport(MoveReport {
                old_direct: UNSPECIFIED,
                old_seen: UNSPECIFIED,
                old_peer_direct: UNSPECIFIED,
                old_peer_seen: UNSPECIFIED,
                new_direct: sa("6.6.6.6:80"),
            }),
        }
        .to_vec(&crate::verifier::Verifier([0x66; 16]))
    };
    net.send(1, &forged);
    // A genuine report, then its replay after a newer request.
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    let first = net.hosts[1].last_report.clone().unwrap();
    net.register(1);
    net.send(1, &first);
    // And the genuine host's messages replayed on the attacker's own
    // session from elsewhere do not verify as anything new either.
    let _ = forger.register();
    net.deliver();
    assert_eq!(net.server.stats().bad_mac, 1);
    assert_eq!(net.server.stats().replayed, 1);
    assert_eq!(net.errors(1), [ErrorCode::BadMac, ErrorCode::Replayed]);
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
    assert!(before.is_some());
}

#[test]
fn client_accepts_only_verified_fresh_notices_for_itself() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    // Capture what the server sends A before A reads it.
    let mut to_a = Vec::new();
    while let Some(out) = net.server.poll_output() {
        if let Output::Send { session, bytes } = out {
            if net.owner[&session] == 0 {
                to_a.push(bytes);
            }
        }
    }
    let notice = to_a.last().unwrap().clone();
    let mut a = net.hosts[0].client.clone();
    assert!(matches!(
        a.handle_message(&notice),
        Ok(ServerMessage::PeerLocation(_))
    ));
    // Replayed.
    assert_eq!(a.handle_message(&notice), Err(ClientError::Replayed));
    // Addressed to the other side (B would reject it).
    let mut b = net.hosts[1].client.clone();
    assert_eq!(b.handle_message(&notice), Err(ClientError::WrongConnection));
    // Tampered target.
    let mut a2 = net.hosts[0].client.clone();
    let mut bad = notice.clone();
    bad[25] ^= 1;
    assert_eq!(a2.handle_message(&bad), Err(ClientError::BadMac));
    // A host message reflected back to a host.
    let reg = a2.register();
    assert_eq!(a2.handle_message(&reg), Err(ClientError::UnexpectedType));
    assert_eq!(a2.stats().bad_mac, 1);
}

#[test]
fn conflicting_verifier_is_refused() {
    use crate::control::{Body, ControlRepr, Header, Register};
    let mut net = registered(A_GLOBAL, B_GLOBAL);
    let c = *net.hosts[0].client.credentials();
    let squat = crate::verifier::Verifier([9; 16]);
    let bytes = ControlRepr {
        header: Header {
            conn: c.id,
            side: c.side,
            number: 1000,
        },
        body: Body::Register(Register {
            verifier: squat,
            direct: sa("6.6.6.6:1"),
            peer_seen: sa("6.6.6.6:2"),
            last_notice: 0,
        }),
    }
    .to_vec(&squat);
    net.send(0, &bytes);
    net.deliver();
    assert_eq!(net.errors(0), [ErrorCode::Conflict]);
    let entry = net.server.registry().get(c.id).unwrap();
    assert_eq!(entry.end(Side::Low).unwrap().direct, sa("192.0.2.10:5000"));
}

#[test]
fn garbage_gets_an_error_and_does_not_disturb_the_other_host() {
    let mut net = registered(A_NAPT1, B_GLOBAL);
    let cases: [(&[u8], ErrorCode, bool); 6] = [
        (&[1, 1, 0, 2, 0xde, 0xad], ErrorCode::Garbage, true),
        (&[1, 1, 0xff, 0xff], ErrorCode::Oversized, true),
        (&[9, 1, 0, 4], ErrorCode::UnknownVersion, false),
        (&[1, 0x55, 0, 4], ErrorCode::UnknownType, false),
        (&[1, 0x01, 0, 5, 0], ErrorCode::Malformed, false),
        (
            &[
                1, 0x81, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            ErrorCode::UnexpectedType,
            false,
        ),
    ];
    for (bytes, code, closes) in cases {
        // Each from a fresh attacker session.
        let observed = sa("6.6.6.6:1");
        let s = net.server.open_session(net.now, observed).unwrap();
        net.server.handle_stream(net.now, s, bytes);
        let mut replies = Vec::new();
        let mut closed = false;
        while let Some(out) = net.server.poll_output() {
            match out {
                Output::Send { bytes, .. } => replies.push(bytes),
                Output::Close { .. } => closed = true,
                Output::ProxySend { .. } | Output::ProxyClose => panic!("no proxy here"),
            }
        }
        assert_eq!(replies.len(), 1, "{code}");
        let (incoming, _) = crate::control::Incoming::parse(&replies[0]).unwrap();
        match incoming {
            crate::control::Incoming::Error(e) => assert_eq!(e.code, code),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed, closes, "{code}");
        assert_eq!(net.server.sessions() == 2, closes, "{code}");
        net.server.close_session(s);
    }
    // A message cut short by the end of its session counts as truncated.
    let s = net.server.open_session(net.now, sa("6.6.6.6:2")).unwrap();
    net.server.handle_stream(net.now, s, &[1, 2, 0, 64, 0, 0]);
    net.server.close_session(s);
    let stats = *net.server.stats();
    assert_eq!(
        (
            stats.garbage,
            stats.oversized,
            stats.unknown_version,
            stats.unknown_type
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (stats.malformed, stats.unexpected_type, stats.truncated),
        (1, 1, 1)
    );
    // The genuine hosts carry on.
    net.move_to(1, "198.51.100.21:80", "198.51.100.21");
    net.deliver();
    assert_eq!(net.locations(0), [sa("198.51.100.21:80")]);
    assert!(net.errors(0).is_empty() && net.errors(1).is_empty());
}

#[test]
fn one_flooding_source_is_rate_limited_alone() {
    let config = ServerConfig {
        rate_per_source: 10,
        burst_per_source: 20,
        ..ServerConfig::default()
    };
    let mut net = Net::new(config, A_GLOBAL, B_GLOBAL);
    let s = net.server.open_session(net.now, sa("6.6.6.6:1")).unwrap();
    for _ in 0..100 {
        net.server.handle_stream(net.now, s, &[9, 1, 0, 4]);
    }
    assert_eq!(net.server.stats().rate_limited, 80);
    assert_eq!(net.server.stats().unknown_version, 20);
    while net.server.poll_output().is_some() {}
    net.register(0);
    net.register(1);
    net.deliver();
    assert_eq!(net.outcomes(0), [Outcome::Registered]);
}

#[test]
fn memory_is_bounded_under_a_flood() {
    let config = ServerConfig {
        max_entries: 10,
        max_sessions: 5,
        rate_per_source: 0,
        ..ServerConfig::default()
    };
    let mut server = Server::new(config);
    let mut rng = SplitMix64::new(3);
    let mut sessions = Vec::new();
    for i in 0..8 {
        match server.open_session(
            Instant::ZERO,
            SocketAddrV4::new(Ipv4Addr::new(6, 6, 6, i), 1),
        ) {
            Ok(s) => sessions.push(s),
            Err(ServerError::TooManySessions(5)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sessions.len(), 5);
    assert_eq!(server.stats().sessions_refused, 3);
    for n in 0..50u64 {
        let keys = ConnectionKeys {
            local: Key(rng.next_u64()),
            remote: Key(rng.next_u64()),
        };
        let mut c = ControlClient::new(&keys, sa("6.6.6.6:1"), sa("7.7.7.7:1")).unwrap();
        server.handle_stream(Instant::ZERO, sessions[(n % 5) as usize], &c.register());
    }
    assert_eq!(server.registry().len(), 10);
    assert_eq!(server.stats().registry_full, 40);
    // Output is bounded by what is drained: one reply per message.
    let mut n = 0;
    while server.poll_output().is_some() {
        n += 1;
    }
    assert_eq!(n, 50);
}

// ---------------------------------------------------------------------
// Seeded simulation: random topologies, orders, duplicates.

#[test]
#[allow(clippy::manual_is_multiple_of)] // MSRV 1.85
fn seeded_simulation_matches_the_rules() {
    for seed in 0..400u64 {
        let mut rng = SplitMix64::new(seed);
        let napt = [rng.next_u32() & 1 == 1, rng.next_u32() & 1 == 1];
        let moves = match rng.next_u32() % 3 {
            0 => [true, false],
            1 => [false, true],
            _ => [true, true],
        };
        let place = |i: usize, behind: bool, gen: u8| -> (String, String) {
            let port = if i == 0 { 5000 } else { 80 };
            if behind {
                (
                    format!("10.{i}.{gen}.2:{port}"),
                    format!("203.0.113.{}", 10 * i as u8 + gen + 1),
                )
            } else {
                let g = format!("{}.0.2.{}", 192 + i as u8 * 6, gen + 10);
                (format!("{g}:{port}"), g)
            }
        };
        // Where each end starts; a mover may also change NAPT status.
        let start: Vec<(String, String)> = (0..2).map(|i| place(i, napt[i], 0)).collect();
        let mut net = Net::new(
            ServerConfig::default(),
            (&start[0].0, &start[0].1),
            (&start[1].0, &start[1].1),
        );
        net.register(0);
        net.register(1);
        net.deliver();
        let mut order: Vec<usize> = (0..2).filter(|&i| moves[i]).collect();
        if rng.next_u32() & 1 == 1 {
            order.reverse();
        }
        let mut fin = start.clone();
        let mut fin_napt = napt;
        for &i in &order {
            let behind = if rng.next_u32() % 4 == 0 {
                !napt[i]
            } else {
                napt[i]
            };
            let (d, p) = place(i, behind, 1);
            net.move_to(i, &d, &p);
            fin[i] = (d, p);
            fin_napt[i] = behind;
            if rng.next_u32() & 1 == 1 {
                net.deliver(); // else crossing: answers read later
            }
            if rng.next_u32() % 3 == 0 {
                net.resend_report(i);
            }
        }
        net.deliver();
        let all: Vec<(usize, SocketAddrV4)> = {
            let mut v = Vec::new();
            for i in 0..2 {
                for t in net.locations(i) {
                    v.push((i, t));
                }
            }
            v
        };
        let ctx =
            format!("seed {seed} napt {napt:?} moves {moves:?} order {order:?} final {fin_napt:?}");
        assert_eq!(net.server.stats().rejected(), 0, "{ctx}");
        let expected_sender = match (fin_napt[0], fin_napt[1]) {
            (true, true) => None,
            (true, false) => Some(0),
            (false, true) => Some(1),
            (false, false) => order.last().copied(),
        };
        match expected_sender {
            None => {
                let relay = (0..2).any(|i| net.outcomes(i).contains(&Outcome::RelayNeeded));
                assert!(relay, "{ctx}");
            }
            Some(s) => {
                let target = sa(&fin[1 - s].0);
                assert_eq!(net.locations(s).last(), Some(&target), "{ctx} {all:?}");
            }
        }
        for h in &net.hosts {
            assert!(h.rejected.is_empty(), "{ctx}: {:?}", h.rejected);
        }
    }
}
