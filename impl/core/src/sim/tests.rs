use std::collections::{BTreeMap, VecDeque};

use super::*;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn at_ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

/// A minimal IPv4 packet: 20-byte header (protocol 253, checksum not
/// needed by the simulator), then `id` and zero padding up to `len` bytes.
fn packet(src: Ipv4Addr, dst: Ipv4Addr, id: u32, len: usize) -> Vec<u8> {
    let len = len.max(24);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

fn id_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[20..24].try_into().unwrap())
}

fn src_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap())
}

fn dst_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap())
}

/// Sends scheduled packets with its timer; optionally echoes every packet
/// back (source and destination swapped) after `echo_after`.
#[derive(Default)]
struct TestNode {
    echo_after: Option<Duration>,
    scheduled: BTreeMap<(Instant, u64), Vec<u8>>,
    next: u64,
    outbox: VecDeque<Vec<u8>>,
    received: Vec<(Instant, Vec<u8>)>,
}

impl TestNode {
    fn echo(after: Duration) -> TestNode {
        TestNode {
            echo_after: Some(after),
            ..TestNode::default()
        }
    }

    fn schedule(&mut self, at: Instant, packet: Vec<u8>) {
        self.scheduled.insert((at, self.next), packet);
        self.next += 1;
    }

    fn received_ids(&self) -> Vec<u32> {
        self.received.iter().map(|(_, p)| id_of(p)).collect()
    }
}

impl SimNode for TestNode {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.received.push((now, packet.to_vec()));
        if let Some(after) = self.echo_after {
            let mut reply = packet.to_vec();
            reply[12..20].rotate_left(4);
            self.schedule(now + after, reply);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.outbox.push_back(entry.remove());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.scheduled.keys().next().map(|&(at, _)| at)
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        let p = self.outbox.pop_front()?;
        buf[..p.len()].copy_from_slice(&p);
        Some(p.len())
    }
}

fn pair(seed: u64) -> (Network<TestNode>, NodeId, NodeId) {
    let mut net = Network::new(seed);
    let a = net.add_node(A, TestNode::default());
    let b = net.add_node(B, TestNode::default());
    (net, a, b)
}

/// Steps until nothing is pending (bounded, to fail rather than hang);
/// the clock stays at the last event.
fn drain(net: &mut Network<TestNode>) {
    let mut steps = 0;
    while net.step() {
        steps += 1;
        assert!(steps < 10_000_000, "network never went idle");
    }
    assert_eq!(net.packets_in_flight(), 0);
}

#[test]
fn latency_is_honoured_exactly() {
    let mut net = Network::new(1);
    let a = net.add_node(A, TestNode::default());
    let b = net.add_node(B, TestNode::echo(ms(2)));
    net.set_link(
        a,
        b,
        LinkConfig {
            latency: ms(5),
            ..LinkConfig::default()
        },
    );
    net.set_link(
        b,
        a,
        LinkConfig {
            latency: ms(7),
            ..LinkConfig::default()
        },
    );
    net.enable_capture();
    net.node_mut(a)
        .schedule(Instant::ZERO, packet(A, B, 42, 100));
    drain(&mut net);

    assert_eq!(net.node(b).received.len(), 1);
    assert_eq!(net.node(b).received[0].0, at_ms(5));
    let (t, reply) = &net.node(a).received[0];
    assert_eq!(*t, at_ms(14), "5 ms there, 2 ms think time, 7 ms back");
    assert_eq!((src_of(reply), dst_of(reply), id_of(reply)), (B, A, 42));

    let cap = net.capture();
    assert_eq!(cap.len(), 2);
    assert_eq!(
        (cap[0].time, cap[0].from, cap[0].to),
        (Instant::ZERO, a, Some(b))
    );
    assert_eq!(
        (cap[0].fate, cap[0].arrival),
        (Fate::Delivered, Some(at_ms(5)))
    );
    assert_eq!(
        (cap[1].time, cap[1].from, cap[1].to),
        (at_ms(7), b, Some(a))
    );
    assert_eq!(cap[1].arrival, Some(at_ms(14)));
    assert_eq!(cap[0].bytes, packet(A, B, 42, 100));
    assert_eq!(cap[0].translated, None);
    assert_eq!(net.stats().sent, 2);
    assert_eq!(net.stats().delivered, 2);
    assert_eq!(net.now(), at_ms(14));
}

#[test]
fn default_link_is_one_millisecond_without_impairments() {
    let cfg = LinkConfig::default();
    assert_eq!(cfg.latency, ms(1));
    assert_eq!((cfg.loss, cfg.duplicate, cfg.reorder), (0.0, 0.0, 0.0));
    assert_eq!((cfg.jitter, cfg.rate_bps), (Duration::ZERO, None));
    let (mut net, a, b) = pair(3);
    for i in 0..100 {
        net.node_mut(a)
            .schedule(at_ms(i), packet(A, B, i as u32, 60));
    }
    drain(&mut net);
    let got = &net.node(b).received;
    assert_eq!(got.len(), 100);
    for (i, (t, p)) in got.iter().enumerate() {
        assert_eq!((*t, id_of(p)), (at_ms(i as u64 + 1), i as u32));
    }
}

#[test]
fn jitter_stays_within_bounds() {
    let (mut net, a, b) = pair(11);
    net.set_link(
        a,
        b,
        LinkConfig {
            latency: ms(10),
            jitter: ms(3),
            ..LinkConfig::default()
        },
    );
    for i in 0..1000 {
        net.node_mut(a)
            .schedule(at_ms(i), packet(A, B, i as u32, 60));
    }
    drain(&mut net);
    let delays: Vec<Duration> = net
        .node(b)
        .received
        .iter()
        .map(|(t, p)| *t - at_ms(u64::from(id_of(p))))
        .collect();
    assert_eq!(delays.len(), 1000);
    assert!(
        delays.iter().all(|d| (ms(10)..=ms(13)).contains(d)),
        "{delays:?}"
    );
    let min = delays.iter().min().unwrap();
    let max = delays.iter().max().unwrap();
    assert!(*max - *min > ms(2), "jitter spread only {min:?}..{max:?}");
}

#[test]
fn loss_rate_is_within_statistical_bounds() {
    for seed in [1, 2, 3] {
        let (mut net, a, b) = pair(seed);
        net.set_link(
            a,
            b,
            LinkConfig {
                loss: 0.1,
                ..LinkConfig::default()
            },
        );
        net.enable_capture();
        for i in 0..20_000 {
            net.inject(a, packet(A, B, i, 40));
        }
        drain(&mut net);
        let stats = net.stats().clone();
        // Binomial(20000, 0.1): sigma = 42.4; allow 5 sigma.
        assert!(
            (1788..=2212).contains(&stats.lost),
            "seed {seed}: lost {}",
            stats.lost
        );
        assert_eq!(stats.lost + stats.delivered, 20_000);
        assert_eq!(net.node(b).received.len() as u64, stats.delivered);
        let lost_in_capture = net
            .capture()
            .iter()
            .filter(|c| c.fate == Fate::Lost)
            .count();
        assert_eq!(lost_in_capture as u64, stats.lost);
        assert!(net
            .capture()
            .iter()
            .all(|c| (c.fate == Fate::Lost) == c.arrival.is_none()));
    }
}

#[test]
fn duplication_delivers_copies() {
    let (mut net, a, b) = pair(5);
    net.set_link(
        a,
        b,
        LinkConfig {
            duplicate: 1.0,
            ..LinkConfig::default()
        },
    );
    net.enable_capture();
    for i in 0..10 {
        net.inject(a, packet(A, B, i, 40));
    }
    drain(&mut net);
    let ids = net.node(b).received_ids();
    assert_eq!(ids.len(), 20);
    for i in 0..10 {
        assert_eq!(ids.iter().filter(|&&x| x == i).count(), 2, "id {i}");
    }
    assert_eq!(net.stats().duplicated, 10);
    assert_eq!(net.stats().delivered, 20);
    assert!(net.capture().iter().all(|c| c.fate == Fate::Duplicated));

    let (mut net, a, b) = pair(6);
    net.set_link(
        a,
        b,
        LinkConfig {
            duplicate: 0.25,
            ..LinkConfig::default()
        },
    );
    for i in 0..20_000 {
        net.inject(a, packet(A, B, i, 40));
    }
    drain(&mut net);
    let dup = net.stats().duplicated;
    // sigma = 61.2; allow 5 sigma around 5000.
    assert!((4694..=5306).contains(&dup), "duplicated {dup}");
    assert_eq!(net.node(b).received.len() as u64, 20_000 + dup);
}

#[test]
fn reordering_actually_reorders() {
    let (mut net, a, b) = pair(9);
    net.set_link(
        a,
        b,
        LinkConfig {
            latency: ms(10),
            reorder: 0.2,
            reorder_delay: ms(5),
            ..LinkConfig::default()
        },
    );
    for i in 0..2000 {
        net.node_mut(a)
            .schedule(at_ms(i), packet(A, B, i as u32, 60));
    }
    drain(&mut net);
    let received = &net.node(b).received;
    assert_eq!(received.len(), 2000, "reordering loses nothing");
    let held: Vec<u32> = received
        .iter()
        .filter(|(t, p)| *t - at_ms(u64::from(id_of(p))) == ms(15))
        .map(|(_, p)| id_of(p))
        .collect();
    let on_time = received
        .iter()
        .filter(|(t, p)| *t - at_ms(u64::from(id_of(p))) == ms(10))
        .count();
    assert_eq!(held.len() + on_time, 2000, "every delay is 10 or 15 ms");
    assert_eq!(held.len() as u64, net.stats().reordered);
    // sigma = 17.9 around 400.
    assert!(
        (310..=490).contains(&held.len()),
        "held back {}",
        held.len()
    );
    let ids = net.node(b).received_ids();
    let inversions = ids.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions >= held.len() / 2, "{inversions} inversions");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..2000).collect::<Vec<u32>>());
}

#[test]
fn rate_limit_spaces_packets_by_serialisation_time() {
    let (mut net, a, b) = pair(1);
    // 8 Mbit/s: one byte per microsecond.
    net.set_link(
        a,
        b,
        LinkConfig {
            rate_bps: Some(8_000_000),
            ..LinkConfig::default()
        },
    );
    for i in 0..3 {
        net.inject(a, packet(A, B, i, 1000));
    }
    net.inject(a, packet(A, B, 3, 500));
    drain(&mut net);
    let times: Vec<Instant> = net.node(b).received.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        [at_ms(2), at_ms(3), at_ms(4), Instant::from_micros(4_500),]
    );
    assert_eq!(net.node(b).received_ids(), [0, 1, 2, 3]);

    // 1 Mbit/s: a 1250-byte packet takes 10 ms.
    let (mut net, a, b) = pair(1);
    net.set_link(
        a,
        b,
        LinkConfig {
            rate_bps: Some(1_000_000),
            ..LinkConfig::default()
        },
    );
    net.inject(a, packet(A, B, 0, 1250));
    net.inject(a, packet(A, B, 1, 1250));
    drain(&mut net);
    let times: Vec<Instant> = net.node(b).received.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [at_ms(11), at_ms(21)]);
}

#[test]
fn bottleneck_queue_drops_tail_and_drains() {
    let (mut net, a, b) = pair(1);
    net.set_link(
        a,
        b,
        LinkConfig {
            rate_bps: Some(8_000_000),
            queue_bytes: 2000,
            ..LinkConfig::default()
        },
    );
    net.enable_capture();
    for i in 0..3 {
        net.inject(a, packet(A, B, i, 1000));
    }
    assert_eq!(net.stats().queue_drops, 1);
    assert_eq!(net.capture()[2].fate, Fate::QueueFull);
    // After 1 ms one packet has been serialised: room for one more, which
    // starts when the second finishes (2 ms) and arrives at 2+1+1 ms.
    net.advance(ms(1));
    net.inject(a, packet(A, B, 3, 1000));
    net.inject(a, packet(A, B, 4, 1000));
    assert_eq!(net.stats().queue_drops, 2);
    drain(&mut net);
    let got: Vec<(Instant, u32)> = net
        .node(b)
        .received
        .iter()
        .map(|(t, p)| (*t, id_of(p)))
        .collect();
    assert_eq!(got, [(at_ms(2), 0), (at_ms(3), 1), (at_ms(4), 3)]);
}

fn impaired_run(seed: u64) -> (Vec<Captured>, NetStats) {
    let mut net = Network::new(seed);
    let a = net.add_node(A, TestNode::default());
    net.add_node(B, TestNode::echo(ms(1)));
    net.set_default_link(LinkConfig {
        latency: ms(4),
        jitter: ms(3),
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        reorder_delay: ms(6),
        rate_bps: Some(10_000_000),
        queue_bytes: 20_000,
    });
    net.enable_capture();
    for i in 0..300 {
        net.node_mut(a)
            .schedule(Instant::from_micros(i * 300), packet(A, B, i as u32, 1200));
    }
    drain(&mut net);
    (net.capture().to_vec(), net.stats().clone())
}

#[test]
fn same_seed_gives_an_identical_capture() {
    let (first, first_stats) = impaired_run(7);
    let (second, second_stats) = impaired_run(7);
    assert_eq!(first, second);
    assert_eq!(first_stats, second_stats);
    // The run exercised every impairment.
    for fate in [
        Fate::Delivered,
        Fate::Lost,
        Fate::Duplicated,
        Fate::QueueFull,
    ] {
        assert!(first.iter().any(|c| c.fate == fate), "no {fate:?}");
    }
    assert!(first_stats.reordered > 0);
    let (other, _) = impaired_run(8);
    assert_ne!(first, other);
}

#[test]
fn unroutable_and_garbage_packets_are_counted_not_panicked_on() {
    let (mut net, a, b) = pair(1);
    net.enable_capture();
    net.inject(a, packet(A, Ipv4Addr::new(10, 9, 9, 9), 0, 40));
    net.inject(a, vec![]);
    net.inject(a, vec![0x45, 0, 0]);
    let mut v6 = packet(A, B, 0, 40);
    v6[0] = 0x60;
    net.inject(a, v6);
    net.inject(a, packet(A, B, 1, 40));
    drain(&mut net);
    assert_eq!(net.stats().unroutable, 4);
    assert_eq!(net.stats().delivered, 1);
    assert_eq!(net.node(b).received_ids(), [1]);
    let fates: Vec<(Fate, Option<NodeId>)> = net.capture().iter().map(|c| (c.fate, c.to)).collect();
    assert_eq!(
        fates,
        [
            (Fate::Unroutable, None),
            (Fate::Unroutable, None),
            (Fate::Unroutable, None),
            (Fate::Unroutable, None),
            (Fate::Delivered, Some(b)),
        ]
    );
}

#[test]
fn a_moved_address_makes_in_flight_packets_unroutable() {
    let (mut net, a, b) = pair(1);
    net.set_default_link(LinkConfig {
        latency: ms(10),
        ..LinkConfig::default()
    });
    net.enable_capture();
    net.inject(a, packet(A, B, 0, 40));
    net.advance(ms(5));
    let b_new = Ipv4Addr::new(10, 0, 1, 2);
    net.set_addresses(b, &[b_new]);
    assert_eq!(net.addresses(b).collect::<Vec<_>>(), [b_new]);
    net.advance(ms(10));
    assert!(net.node(b).received.is_empty());
    assert_eq!(net.stats().unroutable, 1);
    assert_eq!(net.capture()[0].fate, Fate::Unroutable);
    assert_eq!(net.capture()[0].arrival, None);
    net.inject(a, packet(A, B, 1, 40));
    net.inject(a, packet(A, b_new, 2, 40));
    drain(&mut net);
    assert_eq!(net.node(b).received_ids(), [2]);
    assert_eq!(net.stats().unroutable, 2);
    // Several addresses, then one removed.
    net.add_address(b, B);
    net.inject(a, packet(A, B, 3, 40));
    net.inject(a, packet(A, b_new, 4, 40));
    drain(&mut net);
    net.remove_address(b, b_new);
    net.inject(a, packet(A, b_new, 5, 40));
    drain(&mut net);
    assert_eq!(net.node(b).received_ids(), [2, 3, 4]);
    assert_eq!(net.stats().unroutable, 3);
}

#[test]
#[should_panic(expected = "claimed by")]
fn two_owners_of_one_address_are_rejected() {
    let (mut net, a, _b) = pair(1);
    net.add_address(a, B);
}

#[test]
fn run_until_stops_when_done_or_at_the_deadline() {
    let mut net = Network::new(1);
    let a = net.add_node(A, TestNode::default());
    net.add_node(B, TestNode::echo(Duration::ZERO));
    net.node_mut(a).schedule(at_ms(10), packet(A, B, 0, 40));
    assert!(net.run_until(at_ms(100), |n| !n.node(a).received.is_empty()));
    assert_eq!(net.now(), at_ms(12));
    // Nothing left to happen: the clock moves to the deadline.
    assert!(!net.run_until(at_ms(200), |_| false));
    assert_eq!(net.now(), at_ms(200));
    assert!(!net.step());
    // An event after the deadline is not processed.
    net.node_mut(a).schedule(at_ms(500), packet(A, B, 1, 40));
    assert!(!net.run_until(at_ms(300), |_| false));
    assert_eq!(net.now(), at_ms(300));
    assert_eq!(net.stats().sent, 2);
    assert!(net.step(), "the timer at 500 ms fires");
    assert_eq!(net.now(), at_ms(500));
}

/// Drops every third packet it sees, in either direction.
#[derive(Default)]
struct EveryThird {
    seen: Vec<(Direction, u32)>,
}

impl Middlebox for EveryThird {
    fn process(&mut self, _now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool {
        self.seen.push((direction, id_of(packet)));
        // Every third packet (the 3rd, 6th, ...) is dropped.
        let position_in_triple = self.seen.len() % 3;
        position_in_triple > 0
    }
}

#[test]
fn middlebox_on_an_uplink_sees_both_directions() {
    let (mut net, a, b) = pair(1);
    let filter = Rc::new(RefCell::new(EveryThird::default()));
    let m = net.add_middlebox(filter.clone(), InsideScope::Public);
    net.set_uplink(a, Some(m));
    assert_eq!(net.uplink(a), Some(m));
    net.enable_capture();
    for i in 0..9 {
        net.inject(a, packet(A, B, i, 40));
    }
    drain(&mut net);
    assert_eq!(net.node(b).received_ids(), [0, 1, 3, 4, 6, 7]);
    assert_eq!(net.stats().filtered, 3);
    let filtered: Vec<u32> = net
        .capture()
        .iter()
        .filter(|c| c.fate == Fate::Filtered)
        .map(|c| id_of(&c.bytes))
        .collect();
    assert_eq!(filtered, [2, 5, 8]);
    // Inbound: B reaches A's address through the middlebox.
    for i in 100..103 {
        net.inject(b, packet(B, A, i, 40));
    }
    drain(&mut net);
    assert_eq!(net.node(a).received_ids(), [100, 101]);
    let seen = filter.borrow().seen.clone();
    assert_eq!(seen.len(), 12);
    assert!(seen[..9].iter().all(|&(d, _)| d == Direction::Outbound));
    assert_eq!(
        seen[9..],
        [
            (Direction::Inbound, 100),
            (Direction::Inbound, 101),
            (Direction::Inbound, 102)
        ]
    );
    // Detached again: nothing is filtered.
    net.set_uplink(a, None);
    for i in 0..3 {
        net.inject(a, packet(A, B, 200 + i, 40));
    }
    drain(&mut net);
    assert_eq!(net.stats().filtered, 4);
    assert_eq!(filter.borrow().seen.len(), 12);
}

/// One-to-one NAT: rewrites the inside address to the public one and back
/// (IPv4 header checksum is ignored by the simulator).
struct StaticNat {
    inside: Ipv4Addr,
    public: Ipv4Addr,
}

impl Middlebox for StaticNat {
    fn process(&mut self, _now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool {
        match direction {
            Direction::Outbound if src_of(packet) == self.inside => {
                packet[12..16].copy_from_slice(&self.public.octets());
                true
            }
            Direction::Inbound if dst_of(packet) == self.public => {
                packet[16..20].copy_from_slice(&self.inside.octets());
                true
            }
            _ => false,
        }
    }
}

#[test]
fn private_realm_behind_a_nat_is_reachable_only_through_it() {
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const PRIVATE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
    const PUBLIC1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const PUBLIC2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    let mut net = Network::new(1);
    let server = net.add_node(SERVER, TestNode::echo(Duration::ZERO));
    // Two hosts with the same private address behind two NATs.
    let host1 = net.add_node(Ipv4Addr::new(172, 16, 0, 1), TestNode::default());
    let host2 = net.add_node(Ipv4Addr::new(172, 16, 0, 2), TestNode::default());
    for (host, public) in [(host1, PUBLIC1), (host2, PUBLIC2)] {
        let nat = net.add_middlebox(
            StaticNat {
                inside: PRIVATE,
                public,
            },
            InsideScope::Private,
        );
        net.add_middlebox_address(nat, public);
        net.set_uplink(host, Some(nat));
        net.set_addresses(host, &[PRIVATE]);
    }
    net.enable_capture();
    net.inject(host1, packet(PRIVATE, SERVER, 1, 40));
    net.inject(host2, packet(PRIVATE, SERVER, 2, 40));
    drain(&mut net);

    let at_server: Vec<(Ipv4Addr, u32)> = net
        .node(server)
        .received
        .iter()
        .map(|(_, p)| (src_of(p), id_of(p)))
        .collect();
    assert_eq!(at_server, [(PUBLIC1, 1), (PUBLIC2, 2)]);
    for (host, id) in [(host1, 1), (host2, 2)] {
        let got = &net.node(host).received;
        assert_eq!(got.len(), 1);
        assert_eq!(
            (src_of(&got[0].1), dst_of(&got[0].1), id_of(&got[0].1)),
            (SERVER, PRIVATE, id)
        );
    }
    let cap = net.capture();
    assert_eq!(cap.len(), 4);
    assert_eq!(src_of(cap[0].delivered_bytes()), PUBLIC1);
    assert_eq!(src_of(&cap[0].bytes), PRIVATE);
    let reply = cap
        .iter()
        .find(|c| c.from == server && c.to == Some(host2))
        .unwrap();
    assert_eq!(dst_of(&reply.bytes), PUBLIC2);
    assert_eq!(dst_of(reply.translated.as_ref().unwrap()), PRIVATE);

    // The private address does not exist outside, and the NAT refuses what
    // it has no mapping for.
    net.inject(server, packet(SERVER, PRIVATE, 3, 40));
    net.inject(host1, packet(Ipv4Addr::new(192, 168, 0, 9), SERVER, 4, 40));
    drain(&mut net);
    assert_eq!(net.stats().unroutable, 1);
    assert_eq!(net.stats().filtered, 1);
    assert_eq!(net.node(server).received.len(), 2);
}

/// Asks for a timeout in the past forever.
struct Stuck;

impl SimNode for Stuck {
    fn handle_packet(&mut self, _now: Instant, _packet: &[u8]) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::ZERO)
    }
    fn poll_transmit(&mut self, _now: Instant, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

#[test]
#[should_panic(expected = "without time advancing")]
fn a_livelocked_timer_panics_instead_of_hanging() {
    let mut net = Network::new(1);
    net.add_node(A, Stuck);
    net.run_until(at_ms(1), |_| false);
}
