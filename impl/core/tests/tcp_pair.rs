//! Two endpoints wired back to back through a tiny in-test link (fixed
//! latency, seeded loss), independent of the simulator: byte-exact transfers
//! verified by sha256, plus the loss-recovery counters.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4};

use sha2::{Digest, Sha256};
use sustain_core::rand::{Random, SplitMix64};
use sustain_core::tcp::{Config, ConnId, Endpoint, Event, State};
use sustain_core::time::{Duration, Instant};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

type InFlight = (Instant, u64, usize, Vec<u8>);

struct Pair {
    eps: [Endpoint; 2],
    now: Instant,
    latency: Duration,
    loss: f64,
    rng: SplitMix64,
    /// (arrival, tie-break, destination endpoint, packet)
    in_flight: BinaryHeap<Reverse<InFlight>>,
    counter: u64,
    buf: Vec<u8>,
    delivered: u64,
    dropped: u64,
    /// Deliver everything due before polling output (like a runtime that
    /// drains its socket first): ACKs coalesce.
    batch: bool,
}

impl Pair {
    fn new(cfg: Config, latency: Duration, loss: f64, seed: u64) -> Pair {
        Pair {
            eps: [
                Endpoint::new(cfg.clone(), Box::new(SplitMix64::new(seed))),
                Endpoint::new(cfg, Box::new(SplitMix64::new(seed ^ 0xABCD))),
            ],
            now: Instant::ZERO,
            latency,
            loss,
            rng: SplitMix64::new(seed.wrapping_mul(31)),
            in_flight: BinaryHeap::new(),
            counter: 0,
            buf: vec![0u8; 65536],
            delivered: 0,
            dropped: 0,
            batch: false,
        }
    }

    fn flush(&mut self) {
        for i in 0..2 {
            while let Some(n) = self.eps[i]
                .poll_transmit(self.now, &mut self.buf)
                .map(|t| t.size)
            {
                if std::env::var_os("PAIR_TRACE").is_some() {
                    let (_, seg) = sustain_core::wire::parse_ipv4_tcp(&self.buf[..n]).unwrap();
                    eprintln!(
                        "{:?} {i}->{} {:?} seq={} ack={} win={} len={} sack={:?}",
                        self.now,
                        1 - i,
                        seg.flags,
                        seg.seq,
                        seg.ack,
                        seg.window,
                        seg.payload.len(),
                        seg.sack_blocks().collect::<Vec<_>>()
                    );
                }
                if self.loss > 0.0 && self.rng.next_f64() < self.loss {
                    self.dropped += 1;
                    continue;
                }
                self.counter += 1;
                self.in_flight.push(Reverse((
                    self.now + self.latency,
                    self.counter,
                    1 - i,
                    self.buf[..n].to_vec(),
                )));
            }
        }
    }

    /// Advances to the next delivery or timer; false when nothing is left.
    fn step(&mut self) -> bool {
        self.flush();
        let next_packet = self.in_flight.peek().map(|Reverse((t, ..))| *t);
        let next_timer = self.eps.iter().filter_map(Endpoint::poll_timeout).min();
        let next = match (next_packet, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return false,
        };
        self.now = self.now.max(next);
        while let Some(Reverse((t, ..))) = self.in_flight.peek() {
            if *t > self.now {
                break;
            }
            let Reverse((_, _, to, pkt)) = self.in_flight.pop().unwrap();
            self.eps[to].handle_packet(self.now, &pkt);
            self.delivered += 1;
            if !self.batch {
                self.flush();
            }
        }
        for ep in &mut self.eps {
            if ep.poll_timeout().is_some_and(|t| t <= self.now) {
                ep.handle_timeout(self.now);
            }
        }
        self.flush();
        true
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

struct Transfer {
    client: ConnId,
    server: Option<ConnId>,
    sent: usize,
    received: Vec<u8>,
    closed: [bool; 2],
}

/// Client (endpoint 0) sends `data` to the server (endpoint 1), closes, and
/// the server closes after reading everything.
fn transfer(pair: &mut Pair, data: &[u8], deadline: Instant) -> Transfer {
    let server_addr = SocketAddrV4::new(B, 80);
    let listener = pair.eps[1].listen(server_addr).unwrap();
    let client = pair.eps[0]
        .connect(pair.now, SocketAddrV4::new(A, 40000), server_addr)
        .unwrap();
    let mut t = Transfer {
        client,
        server: None,
        sent: 0,
        received: Vec::new(),
        closed: [false, false],
    };
    let mut chunk = vec![0u8; 256 * 1024];
    let mut client_closed = false;
    let mut server_closed = false;
    while pair.now < deadline && !(t.closed[0] && t.closed[1]) {
        if t.sent < data.len() {
            if let Ok(n) = pair.eps[0].send(client, &data[t.sent..]) {
                t.sent += n;
            }
        } else if !client_closed {
            pair.eps[0].close(client).unwrap();
            client_closed = true;
        }
        if t.server.is_none() {
            t.server = pair.eps[1].accept(listener);
        }
        if let Some(s) = t.server {
            loop {
                let n = pair.eps[1].recv(s, &mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                t.received.extend_from_slice(&chunk[..n]);
            }
            if pair.eps[1].recv_finished(s) && !server_closed {
                pair.eps[1].close(s).unwrap();
                server_closed = true;
            }
        }
        for (i, ep) in pair.eps.iter_mut().enumerate() {
            while let Some(ev) = ep.poll_event() {
                if let Event::Closed { .. } = ev {
                    t.closed[i] = true;
                }
            }
        }
        if !pair.step() {
            break;
        }
    }
    t
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

#[test]
fn clean_link_transfer_is_byte_exact_without_retransmissions() {
    let data = pattern(4 << 20, 1);
    let mut pair = Pair::new(Config::default(), Duration::from_millis(1), 0.0, 1);
    let t = transfer(&mut pair, &data, Instant::from_millis(60_000));
    eprintln!("{:?}\n{:?}", pair.eps[0], pair.eps[1]);
    assert_eq!(t.received.len(), data.len());
    assert_eq!(sha(&t.received), sha(&data));
    assert_eq!(t.closed, [true, true]);
    assert_eq!(pair.eps[0].stats().retransmitted_segments, 0);
    assert_eq!(pair.eps[1].stats().retransmitted_segments, 0);
    // The client is in TIME-WAIT (it closed first), the server is gone.
    assert_eq!(pair.eps[0].state(t.client), Some(State::TimeWait));
    assert_eq!(pair.eps[1].state(t.server.unwrap()), Some(State::Closed));
}

#[test]
fn lossy_link_transfer_is_byte_exact_and_uses_sack_recovery() {
    let data = pattern(2 << 20, 2);
    let mut pair = Pair::new(Config::default(), Duration::from_millis(5), 0.01, 2);
    let t = transfer(&mut pair, &data, Instant::from_millis(600_000));
    assert_eq!(sha(&t.received), sha(&data));
    let stats = pair.eps[0].stats();
    eprintln!(
        "{stats:?} {:?} at {:?}",
        pair.eps[0].info(t.client),
        pair.now
    );
    assert!(stats.retransmitted_segments > 0);
    assert!(stats.sack_recoveries > 0, "{stats:?}");
}

#[test]
fn lossy_link_without_sack_uses_newreno() {
    let cfg = Config {
        sack: false,
        ..Config::default()
    };
    let data = pattern(1 << 20, 3);
    let mut pair = Pair::new(cfg, Duration::from_millis(5), 0.01, 3);
    let t = transfer(&mut pair, &data, Instant::from_millis(600_000));
    assert_eq!(sha(&t.received), sha(&data));
    let stats = pair.eps[0].stats();
    eprintln!(
        "{stats:?} {:?} at {:?}",
        pair.eps[0].info(t.client),
        pair.now
    );
    assert!(stats.newreno_recoveries > 0, "{stats:?}");
    assert_eq!(stats.sack_recoveries, 0);
}

/// A runtime that drains its socket before polling output coalesces ACKs
/// (stretch ACKs) and duplicate ACKs; transfers must still be exact and
/// loss still repaired by fast recovery, with and without SACK.
#[test]
fn batched_delivery_still_recovers() {
    for sack in [true, false] {
        let cfg = Config {
            sack,
            ..Config::default()
        };
        let data = pattern(2 << 20, 4);
        let mut pair = Pair::new(cfg, Duration::from_millis(5), 0.01, 4);
        pair.batch = true;
        let t = transfer(&mut pair, &data, Instant::from_millis(600_000));
        assert_eq!(sha(&t.received), sha(&data), "sack={sack}");
        let stats = pair.eps[0].stats();
        assert!(stats.fast_retransmits > 0, "sack={sack}: {stats:?}");
        assert!(
            stats.timeouts * 4 <= stats.fast_retransmits,
            "sack={sack}: {stats:?}"
        );
    }
}
