//! Per-state tests: one `Endpoint` driven with hand-built segments (built and
//! parsed with `sustain_core::wire`), checking the exact bytes it answers
//! with. Each test quotes the rule it checks.

use std::net::{Ipv4Addr, SocketAddrV4};

use sustain_core::rand::SplitMix64;
use sustain_core::tcp::{CloseReason, Config, ConnId, Endpoint, Event, State};
use sustain_core::time::{Duration, Instant};
use sustain_core::wire::{
    complete_ipv4_tcp_checksum, emit_ipv4_tcp, parse_ipv4_tcp, Ipv4Repr, SackBlock, SeqNumber,
    TcpFlags, TcpRepr, Timestamps,
};

const OURS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

fn ours(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(OURS, port)
}
fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(PEER, port)
}

const S: TcpFlags = TcpFlags::SYN;
const A: TcpFlags = TcpFlags::ACK;
const F: TcpFlags = TcpFlags::FIN;
const R: TcpFlags = TcpFlags::RST;

/// An owned, comparable view of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seg {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
}

impl Seg {
    fn new(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: u32, flags: TcpFlags) -> Seg {
        Seg {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 65535,
            mss: None,
            ws: None,
            sack_perm: false,
            ts: None,
            sack: Vec::new(),
            payload: Vec::new(),
        }
    }

    fn parse(pkt: &[u8]) -> Seg {
        let (ip, tcp) = parse_ipv4_tcp(pkt).expect("endpoint emitted a valid packet");
        Seg {
            src: SocketAddrV4::new(ip.src, tcp.src_port),
            dst: SocketAddrV4::new(ip.dst, tcp.dst_port),
            seq: tcp.seq.0,
            ack: tcp.ack.0,
            flags: tcp.flags,
            window: tcp.window,
            mss: tcp.mss,
            ws: tcp.window_scale,
            sack_perm: tcp.sack_permitted,
            ts: tcp.timestamps.map(|t| (t.tsval, t.tsecr)),
            sack: tcp.sack_blocks().map(|b| (b.left.0, b.right.0)).collect(),
            payload: tcp.payload.to_vec(),
        }
    }

    fn packet(&self) -> Vec<u8> {
        let mut blocks = [None; 4];
        for (slot, &(l, r)) in blocks.iter_mut().zip(&self.sack) {
            *slot = Some(SackBlock {
                left: SeqNumber(l),
                right: SeqNumber(r),
            });
        }
        let tcp = TcpRepr {
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            seq: SeqNumber(self.seq),
            ack: SeqNumber(self.ack),
            flags: self.flags,
            window: self.window,
            mss: self.mss,
            window_scale: self.ws,
            sack_permitted: self.sack_perm,
            sack_blocks: blocks,
            timestamps: self.ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
            payload: &self.payload,
            ..TcpRepr::default()
        };
        let ip = Ipv4Repr::new(*self.src.ip(), *self.dst.ip());
        let mut buf = vec![0u8; 70_000];
        let n = emit_ipv4_tcp(&ip, &tcp, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn with(mut self, f: impl FnOnce(&mut Seg)) -> Seg {
        f(&mut self);
        self
    }
}

struct Harness {
    ep: Endpoint,
    now: Instant,
    buf: Vec<u8>,
}

impl Harness {
    fn new(cfg: Config) -> Harness {
        Harness {
            ep: Endpoint::new(cfg, Box::new(SplitMix64::new(42))),
            now: Instant::from_millis(1_000),
            buf: vec![0u8; 65_535],
        }
    }

    fn inject(&mut self, seg: &Seg) {
        self.ep.handle_packet(self.now, &seg.packet());
    }

    fn out(&mut self) -> Vec<Seg> {
        let mut v = Vec::new();
        while let Some(sent) = self.ep.poll_transmit(self.now, &mut self.buf) {
            let seg = Seg::parse(&self.buf[..sent.size]);
            // The driver sends where the Transmit says: the packet's own ends.
            assert_eq!((sent.src, sent.dst), (seg.src, seg.dst));
            v.push(seg);
        }
        v
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    /// Moves the clock forward by `d`, firing every timer due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.ep.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.ep.handle_timeout(self.now);
        }
        self.now = end;
    }
}

/// Options the test peer puts in its SYN / SYN-ACK.
#[derive(Clone, Copy)]
struct PeerOptions {
    mss: Option<u16>,
    ws: Option<u8>,
    sack: bool,
    ts: bool,
}

const FULL: PeerOptions = PeerOptions {
    mss: Some(1460),
    ws: Some(0),
    sack: true,
    ts: true,
};

/// A connection between the endpoint under test and a scripted peer.
struct Conn {
    h: Harness,
    id: ConnId,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    /// Next sequence number the endpoint will send (its SND.NXT).
    our_nxt: u32,
    /// Next sequence number the peer sends (the endpoint's RCV.NXT).
    peer_nxt: u32,
    peer_tsval: u32,
    /// Last TSval the endpoint sent (what the peer echoes).
    our_tsval: u32,
    ts: bool,
}

impl Conn {
    /// A segment from the peer at its current sequence numbers.
    fn seg(&mut self, flags: TcpFlags, payload: &[u8]) -> Seg {
        self.peer_tsval += 1;
        let mut s = Seg::new(self.remote, self.local, self.peer_nxt, self.our_nxt, flags);
        s.payload = payload.to_vec();
        if self.ts {
            s.ts = Some((self.peer_tsval, self.our_tsval));
        }
        s
    }

    fn send(&mut self, s: &Seg) -> Vec<Seg> {
        self.h.inject(s);
        self.out()
    }

    fn out(&mut self) -> Vec<Seg> {
        let out = self.h.out();
        for s in &out {
            if let Some((tsval, _)) = s.ts {
                self.our_tsval = tsval;
            }
        }
        out
    }

    fn state(&self) -> Option<State> {
        self.h.ep.state(self.id)
    }
}

/// Passive open on the endpoint: the peer sends SYN, gets SYN-ACK, sends ACK.
fn passive(cfg: Config, opts: PeerOptions) -> Conn {
    let mut h = Harness::new(cfg);
    let listener = h.ep.listen(ours(80)).unwrap();
    let mut syn = Seg::new(peer(5000), ours(80), 1000, 0, S);
    syn.mss = opts.mss;
    syn.ws = opts.ws;
    syn.sack_perm = opts.sack;
    syn.ts = opts.ts.then_some((500, 0));
    h.inject(&syn);
    let out = h.out();
    assert_eq!(out.len(), 1, "one SYN-ACK: {out:?}");
    let synack = &out[0];
    assert_eq!(synack.flags, S | A);
    let mut c = Conn {
        h,
        id: ConnId(u32::MAX),
        local: ours(80),
        remote: peer(5000),
        our_nxt: synack.seq.wrapping_add(1),
        peer_nxt: 1001,
        peer_tsval: 500,
        our_tsval: synack.ts.map_or(0, |t| t.0),
        ts: opts.ts,
    };
    let ack = c.seg(A, &[]);
    let out = c.send(&ack);
    assert!(out.is_empty(), "the handshake ACK needs no answer: {out:?}");
    let conn = c.h.ep.accept(listener).unwrap();
    assert_eq!(c.h.events(), [Event::Incoming { listener, conn }]);
    c.id = conn;
    assert_eq!(c.state(), Some(State::Established));
    c
}

fn established() -> Conn {
    passive(Config::default(), FULL)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

// ---------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------

/// RFC 9293 §3.5 (three-way handshake), §3.7.1 (MSS in SYN), RFC 7323 §2.2
/// and §3.2 (WS and TS in the SYN), RFC 2018 §2 (SACK-permitted in the SYN).
#[test]
fn active_open_handshake_bytes() {
    let mut h = Harness::new(Config::default());
    let id = h.ep.connect(h.now, ours(40000), peer(443)).unwrap();
    assert_eq!(h.ep.state(id), Some(State::SynSent));
    let out = h.out();
    assert_eq!(out.len(), 1);
    let syn = &out[0];
    assert_eq!((syn.src, syn.dst), (ours(40000), peer(443)));
    assert_eq!(syn.flags, S);
    assert_eq!(syn.ack, 0);
    assert_eq!(syn.mss, Some(1460));
    // 16 MiB receive buffer: 16777216 >> 9 = 32768 fits 16 bits, >> 8 does not.
    assert_eq!(syn.ws, Some(9));
    assert!(syn.sack_perm);
    let (tsval, tsecr) = syn.ts.expect("timestamps offered");
    assert_eq!(tsecr, 0);
    // RFC 7323 §2.2: the window in a SYN is never scaled.
    assert_eq!(syn.window, 65535);
    assert!(syn.payload.is_empty());

    let iss = syn.seq;
    let synack = Seg::new(peer(443), ours(40000), 7000, iss.wrapping_add(1), S | A).with(|s| {
        s.mss = Some(1400);
        s.ws = Some(5);
        s.sack_perm = true;
        s.ts = Some((9000, tsval));
        s.window = 20000;
    });
    h.inject(&synack);
    let out = h.out();
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = &out[0];
    assert_eq!(ack.flags, A);
    assert_eq!(ack.seq, iss.wrapping_add(1));
    assert_eq!(ack.ack, 7001);
    assert_eq!(ack.ts.unwrap().1, 9000, "TSecr echoes the peer's TSval");
    assert!(ack.mss.is_none() && ack.ws.is_none() && !ack.sack_perm);
    assert_eq!(h.ep.state(id), Some(State::Established));
    assert_eq!(h.events(), [Event::Connected(id)]);
    let info = h.ep.info(id).unwrap();
    // RFC 9293 §3.7.1: the smaller MSS, minus 12 bytes of timestamps.
    assert_eq!(info.smss, 1400 - 12);
    assert_eq!(info.window_scaling, Some((5, 9)));
    assert!(info.timestamps && info.sack);
    assert_eq!(info.snd_wnd, 20000, "SYN-ACK window is unscaled");
}

/// RFC 9293 §3.10.7.2 (LISTEN, third check: SYN -> SYN-RECEIVED, send
/// <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>); RFC 7323 §2.2/§3.2, RFC 2018 §2:
/// the SYN-ACK carries WS, TS and SACK-permitted only because the SYN did.
#[test]
fn passive_open_handshake_bytes() {
    let mut h = Harness::new(Config::default());
    let listener = h.ep.listen(ours(80)).unwrap();
    let syn = Seg::new(peer(5000), ours(80), 1000, 0, S).with(|s| {
        s.mss = Some(1200);
        s.ws = Some(3);
        s.sack_perm = true;
        s.ts = Some((777, 0));
    });
    h.inject(&syn);
    let out = h.out();
    assert_eq!(out.len(), 1);
    let sa = &out[0];
    assert_eq!(sa.flags, S | A);
    assert_eq!(sa.ack, 1001);
    assert_eq!(sa.mss, Some(1460));
    assert_eq!(sa.ws, Some(9));
    assert!(sa.sack_perm);
    assert_eq!(sa.ts.unwrap().1, 777);
    assert_eq!(sa.window, 65535);
    assert!(
        h.events().is_empty(),
        "not announced before the handshake completes"
    );
    assert_eq!(h.ep.accept(listener), None);

    let ack = Seg::new(peer(5000), ours(80), 1001, sa.seq.wrapping_add(1), A).with(|s| {
        s.ts = Some((778, sa.ts.unwrap().0));
        s.window = 1000;
    });
    h.inject(&ack);
    assert!(h.out().is_empty());
    let conn = h.ep.accept(listener).unwrap();
    assert_eq!(h.events(), [Event::Incoming { listener, conn }]);
    let info = h.ep.info(conn).unwrap();
    assert_eq!(info.state, State::Established);
    assert_eq!(info.smss, 1200 - 12);
    assert_eq!(info.snd_wnd, 1000 << 3, "windows after the SYN are scaled");
}

/// RFC 9293 §3.7.1: without an MSS option the peer's MSS is 536; RFC 7323
/// §1.3 / RFC 2018 §2: options the SYN lacked are not sent in the SYN-ACK
/// and stay off.
#[test]
fn passive_open_without_options_uses_defaults() {
    let c = passive(
        Config::default(),
        PeerOptions {
            mss: None,
            ws: None,
            sack: false,
            ts: false,
        },
    );
    let info = c.h.ep.info(c.id).unwrap();
    assert_eq!(info.smss, 536);
    assert_eq!(info.window_scaling, None);
    assert!(!info.timestamps && !info.sack);
}

/// RFC 9293 §3.5 Figure 8 (simultaneous open): SYN-SENT receiving a SYN goes
/// to SYN-RECEIVED and sends SYN,ACK with its original ISS (§3.10.7.3 fourth
/// check); the peer's SYN,ACK then completes the open.
#[test]
fn simultaneous_open() {
    let mut h = Harness::new(Config::default());
    let id = h.ep.connect(h.now, ours(40000), peer(40001)).unwrap();
    let syn = h.out().remove(0);
    let iss = syn.seq;
    let their_syn = Seg::new(peer(40001), ours(40000), 300, 0, S).with(|s| {
        s.mss = Some(1460);
        s.ws = Some(0);
        s.sack_perm = true;
        s.ts = Some((50, 0));
    });
    h.inject(&their_syn);
    assert_eq!(h.ep.state(id), Some(State::SynReceived));
    let out = h.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].flags, S | A);
    assert_eq!(out[0].seq, iss, "SYN,ACK repeats our ISS");
    assert_eq!(out[0].ack, 301);
    assert!(h.events().is_empty());

    let their_synack =
        Seg::new(peer(40001), ours(40000), 300, iss.wrapping_add(1), S | A).with(|s| {
            s.mss = Some(1460);
            s.ws = Some(0);
            s.sack_perm = true;
            s.ts = Some((51, out[0].ts.unwrap().0));
        });
    h.inject(&their_synack);
    assert_eq!(h.ep.state(id), Some(State::Established));
    assert_eq!(h.events(), [Event::Connected(id)]);
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (A, iss.wrapping_add(1), 301)
    );
}

/// RFC 9293 §3.10.7.3 first check: in SYN-SENT an ACK outside
/// (ISS, SND.NXT] gets <SEQ=SEG.ACK><CTL=RST>; second check (with RFC 5961
/// §3.2): a RST is acceptable only if it acknowledges our SYN, and then
/// "the connection was refused".
#[test]
fn rst_in_syn_sent() {
    let mut h = Harness::new(Config::default());
    let id = h.ep.connect(h.now, ours(40000), peer(443)).unwrap();
    let iss = h.out().remove(0).seq;
    // RST without ACK: dropped.
    h.inject(&Seg::new(peer(443), ours(40000), 0, 0, R));
    assert_eq!(h.ep.state(id), Some(State::SynSent));
    // RST with a wrong ACK: dropped, no reset in reply to a reset.
    h.inject(&Seg::new(
        peer(443),
        ours(40000),
        0,
        iss.wrapping_add(5),
        R | A,
    ));
    assert_eq!(h.ep.state(id), Some(State::SynSent));
    assert!(h.out().is_empty());
    // A plain ACK with a wrong ACK: reset <SEQ=SEG.ACK>.
    h.inject(&Seg::new(peer(443), ours(40000), 0, iss.wrapping_add(5), A));
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].seq), (R, iss.wrapping_add(5)));
    assert_eq!(h.ep.state(id), Some(State::SynSent));
    // The real refusal.
    h.inject(&Seg::new(
        peer(443),
        ours(40000),
        0,
        iss.wrapping_add(1),
        R | A,
    ));
    assert_eq!(h.ep.state(id), Some(State::Closed));
    assert_eq!(
        h.events(),
        [Event::Closed {
            conn: id,
            reason: CloseReason::Refused
        }]
    );
    assert!(h.out().is_empty());
    assert!(!h.ep.owns_port(40000));
}

/// RFC 9293 §3.10.7.4 fifth check, SYN-RECEIVED: "If the segment
/// acknowledgment is not acceptable, form a reset segment
/// <SEQ=SEG.ACK><CTL=RST>".
#[test]
fn syn_received_bad_ack_gets_reset() {
    let mut h = Harness::new(Config::default());
    h.ep.listen(ours(80)).unwrap();
    h.inject(&Seg::new(peer(5000), ours(80), 1000, 0, S));
    let sa = h.out().remove(0);
    h.inject(&Seg::new(
        peer(5000),
        ours(80),
        1001,
        sa.seq.wrapping_add(77),
        A,
    ));
    let out = h.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].flags, out[0].seq), (R, sa.seq.wrapping_add(77)));
}

/// RFC 6298 §5.5 (back off) with RFC 9293 §3.8.3 R1: SYN retransmissions
/// stop after `syn_retries` and the connection closes as timed out.
#[test]
fn syn_retries_exhausted_times_out() {
    let mut h = Harness::new(Config {
        syn_retries: 2,
        ..Config::default()
    });
    let start = h.now;
    let id = h.ep.connect(h.now, ours(40000), peer(443)).unwrap();
    let mut syn_times = Vec::new();
    for _ in 0..10 {
        for s in h.out() {
            assert_eq!(s.flags, S);
            syn_times.push(h.now - start);
        }
        match h.ep.poll_timeout() {
            Some(t) => {
                h.now = t;
                h.ep.handle_timeout(t);
            }
            None => break,
        }
    }
    // Initial RTO 1 s, doubled each time: SYNs at 0, 1 s, 3 s; gives up at 7 s.
    assert_eq!(
        syn_times,
        [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(3)
        ]
    );
    assert_eq!(h.now - start, Duration::from_secs(7));
    let events = h.events();
    assert_eq!(
        events.last(),
        Some(&Event::Closed {
            conn: id,
            reason: CloseReason::TimedOut
        })
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::RetransmissionTimeout { .. }))
            .count(),
        2
    );
    assert_eq!(h.ep.state(id), Some(State::Closed));
    assert_eq!(h.ep.stats().connections_timed_out, 1);
}

// ---------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------

/// RFC 9293 §3.6 / §3.10.7.4: CLOSE in ESTABLISHED -> FIN-WAIT-1; ACK of the
/// FIN -> FIN-WAIT-2 (fifth check); the peer's FIN -> TIME-WAIT (eighth
/// check), and `Closed { Normal }` is reported then, once; TIME-WAIT ends
/// after `time_wait` (§3.10.8).
#[test]
fn active_close_fin_wait_1_fin_wait_2_time_wait() {
    let mut c = passive(
        Config {
            time_wait: Duration::from_secs(10),
            ..Config::default()
        },
        FULL,
    );
    c.h.ep.close(c.id).unwrap();
    assert_eq!(c.state(), Some(State::FinWait1));
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (F | A, c.our_nxt, c.peer_nxt)
    );
    c.our_nxt += 1;
    assert_eq!(
        c.h.ep.send(c.id, b"x"),
        Err(sustain_core::tcp::TcpError::NotOpenForSend)
    );

    let ack = c.seg(A, &[]);
    assert!(c.send(&ack).is_empty());
    assert_eq!(c.state(), Some(State::FinWait2));
    // Half-closed: the peer may still send data.
    let d = c.seg(A, b"late data");
    c.peer_nxt += 9;
    c.h.inject(&d);
    c.h.advance(Duration::from_millis(100));
    let out = c.out();
    assert_eq!(out.last().unwrap().ack, c.peer_nxt);
    let fin = c.seg(F | A, &[]);
    c.peer_nxt += 1;
    let out = c.send(&fin);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].ack), (A, c.peer_nxt));
    assert_eq!(c.state(), Some(State::TimeWait));
    let events = c.h.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .collect::<Vec<_>>(),
        [&Event::Closed {
            conn: c.id,
            reason: CloseReason::Normal
        }]
    );
    let mut buf = [0u8; 64];
    assert_eq!(c.h.ep.recv(c.id, &mut buf), Ok(9));
    assert_eq!(&buf[..9], b"late data");
    assert!(c.h.ep.recv_finished(c.id));

    c.h.advance(Duration::from_millis(9_999));
    assert_eq!(c.state(), Some(State::TimeWait));
    c.h.advance(Duration::from_millis(2));
    assert_eq!(c.state(), Some(State::Closed));
    assert!(c.h.events().is_empty(), "no second Closed");
    assert_eq!(c.h.ep.connection_count(), 0);
}

/// RFC 9293 §3.10.7.4 eighth check, TIME-WAIT: "Remain in the TIME-WAIT
/// state. Restart the 2 MSL time-wait timeout." A retransmitted FIN is
/// acknowledged again.
#[test]
fn time_wait_reacks_retransmitted_fin_and_restarts_timer() {
    let mut c = passive(
        Config {
            time_wait: Duration::from_secs(10),
            ..Config::default()
        },
        FULL,
    );
    c.h.ep.close(c.id).unwrap();
    c.out();
    c.our_nxt += 1;
    let fin = c.seg(F | A, &[]);
    let fin_seq = c.peer_nxt;
    c.peer_nxt += 1;
    c.send(&fin);
    assert_eq!(c.state(), Some(State::TimeWait));
    c.h.advance(Duration::from_secs(6));
    let again = c.seg(F | A, &[]).with(|s| s.seq = fin_seq);
    let out = c.send(&again);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (A, c.our_nxt, c.peer_nxt)
    );
    // Restarted: still there 9 s later (15 s after entering TIME-WAIT).
    c.h.advance(Duration::from_secs(9));
    assert_eq!(c.state(), Some(State::TimeWait));
    c.h.advance(Duration::from_secs(2));
    assert_eq!(c.state(), Some(State::Closed));
}

/// RFC 9293 §3.10.7.4 eighth check: a FIN in ESTABLISHED -> CLOSE-WAIT and
/// is acknowledged; CLOSE in CLOSE-WAIT -> LAST-ACK (§3.10.4); the ACK of our
/// FIN -> CLOSED (fifth check, LAST-ACK) with `Closed { Normal }`.
#[test]
fn passive_close_close_wait_last_ack() {
    let mut c = established();
    let fin = c.seg(F | A, b"bye");
    c.peer_nxt += 4;
    let out = c.send(&fin);
    assert_eq!(out.len(), 1, "FIN is acknowledged at once");
    assert_eq!(out[0].ack, c.peer_nxt);
    assert_eq!(c.state(), Some(State::CloseWait));
    assert_eq!(c.h.events(), [Event::Readable(c.id)]);
    assert!(!c.h.ep.recv_finished(c.id));
    let mut buf = [0u8; 8];
    assert_eq!(c.h.ep.recv(c.id, &mut buf), Ok(3));
    assert!(c.h.ep.recv_finished(c.id));
    // Still allowed to send in CLOSE-WAIT.
    assert_eq!(c.h.ep.send(c.id, b"reply"), Ok(5));
    c.h.ep.close(c.id).unwrap();
    assert_eq!(c.state(), Some(State::LastAck));
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, F | A | TcpFlags::PSH);
    assert_eq!(out[0].payload, b"reply");
    c.our_nxt += 6;
    let ack = c.seg(A, &[]);
    assert!(c.send(&ack).is_empty());
    assert_eq!(c.state(), Some(State::Closed));
    assert_eq!(
        c.h.events(),
        [Event::Closed {
            conn: c.id,
            reason: CloseReason::Normal
        }]
    );
    assert_eq!(c.h.ep.connection_count(), 0);
}

/// RFC 9293 §3.6 simultaneous close: FIN-WAIT-1 receiving a FIN that does
/// not acknowledge ours -> CLOSING (eighth check); the ACK of our FIN ->
/// TIME-WAIT (fifth check, CLOSING).
#[test]
fn simultaneous_close_goes_through_closing() {
    let mut c = established();
    c.h.ep.close(c.id).unwrap();
    let fin_out = c.out().remove(0);
    assert!(fin_out.flags.fin());
    // The peer's FIN crossed ours: it acknowledges only up to our FIN.
    let their_fin = c.seg(F | A, &[]);
    c.peer_nxt += 1;
    let out = c.send(&their_fin);
    assert_eq!(c.state(), Some(State::Closing));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].ack), (A, c.peer_nxt));
    assert_eq!(
        c.h.events(),
        [Event::Readable(c.id)],
        "the FIN is readable; not closed: our FIN is not yet acknowledged"
    );
    c.our_nxt += 1;
    let ack = c.seg(A, &[]);
    c.send(&ack);
    assert_eq!(c.state(), Some(State::TimeWait));
    assert_eq!(
        c.h.events(),
        [Event::Closed {
            conn: c.id,
            reason: CloseReason::Normal
        }]
    );
}

/// RFC 9293 §3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>, and the connection is
/// reported closed once.
#[test]
fn abort_sends_rst() {
    let mut c = established();
    c.h.ep.abort(c.id);
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].seq), (R, c.our_nxt));
    assert_eq!(
        c.h.events(),
        [Event::Closed {
            conn: c.id,
            reason: CloseReason::Aborted
        }]
    );
    assert_eq!(c.state(), Some(State::Closed));
    assert_eq!(c.h.ep.stats().resets_sent, 1);
}

// ---------------------------------------------------------------------------
// RFC 5961 and PAWS
// ---------------------------------------------------------------------------

/// RFC 5961 §3.2: "If the RST bit is set and the sequence number does not
/// exactly match the next expected sequence value, yet is within the current
/// receive window, TCP MUST send an acknowledgment (challenge ACK)"; an exact
/// match resets.
#[test]
fn blind_rst_in_window_gets_challenge_ack_exact_rst_resets() {
    let mut c = established();
    let blind = c.seg(R, &[]).with(|s| s.seq = s.seq.wrapping_add(1000));
    let out = c.send(&blind);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (A, c.our_nxt, c.peer_nxt)
    );
    assert_eq!(c.state(), Some(State::Established));
    assert_eq!(c.h.ep.stats().challenge_acks, 1);
    assert!(c.h.events().is_empty());

    let exact = c.seg(R, &[]);
    assert!(c.send(&exact).is_empty());
    assert_eq!(c.state(), Some(State::Closed));
    assert_eq!(
        c.h.events(),
        [Event::Closed {
            conn: c.id,
            reason: CloseReason::Reset
        }]
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        c.h.ep.recv(c.id, &mut buf),
        Err(sustain_core::tcp::TcpError::Reset)
    );
}

/// RFC 9293 §3.10.7.4 first check: "If the RST bit is set and the sequence
/// number is outside the current receive window, silently drop the segment."
#[test]
fn out_of_window_rst_is_ignored() {
    let mut c = established();
    // Beyond the right edge of the default 16 MiB window, and behind it.
    for offset in [u32::MAX - 10, 17 << 20, 1 << 30] {
        let rst = c
            .seg(R | A, &[])
            .with(|s| s.seq = s.seq.wrapping_add(offset));
        assert!(c.send(&rst).is_empty());
    }
    assert_eq!(c.state(), Some(State::Established));
    assert_eq!(c.h.ep.stats().challenge_acks, 0);
}

/// RFC 5961 §4.2: a SYN in a synchronized state, "irrespective of the
/// sequence number, TCP MUST send an ACK (also referred to as challenge
/// ACK)", and the connection survives.
#[test]
fn syn_in_established_gets_challenge_ack() {
    let mut c = established();
    for seq in [c.peer_nxt, c.peer_nxt.wrapping_add(100), 12345] {
        let syn = c.seg(S, &[]).with(|s| s.seq = seq);
        let out = c.send(&syn);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].flags, out[0].seq, out[0].ack),
            (A, c.our_nxt, c.peer_nxt)
        );
    }
    assert_eq!(c.state(), Some(State::Established));
    assert_eq!(c.h.ep.stats().challenge_acks, 3);
}

/// RFC 5961 §5.2: an ACK outside [SND.UNA - MAX.SND.WND, SND.NXT] is
/// discarded and answered with an ACK; its data is not accepted.
#[test]
fn unacceptable_ack_gets_challenge_ack() {
    let mut c = established();
    let bad = c
        .seg(A, b"data")
        .with(|s| s.ack = s.ack.wrapping_add(100_000));
    let out = c.send(&bad);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].ack, c.peer_nxt,
        "data of a bad-ACK segment is dropped"
    );
    assert_eq!(c.h.ep.recv_queued(c.id), 0);
    assert_eq!(c.h.ep.stats().challenge_acks, 1);
    assert_eq!(c.state(), Some(State::Established));
}

/// RFC 5961 §7: challenge ACKs are rate-limited (here 5 per second); the
/// limit resets after a second.
#[test]
fn challenge_acks_are_rate_limited() {
    let mut c = passive(
        Config {
            challenge_ack_limit: 5,
            ..Config::default()
        },
        FULL,
    );
    let mut acks = 0;
    for i in 0..20u32 {
        let rst = c.seg(R, &[]).with(|s| s.seq = s.seq.wrapping_add(10 + i));
        acks += c.send(&rst).len();
    }
    assert_eq!(acks, 5);
    let stats = c.h.ep.stats();
    assert_eq!(
        (stats.challenge_acks, stats.challenge_acks_suppressed),
        (5, 15)
    );
    c.h.advance(Duration::from_millis(1_001));
    let rst = c.seg(R, &[]).with(|s| s.seq = s.seq.wrapping_add(10));
    assert_eq!(c.send(&rst).len(), 1);
    assert_eq!(c.state(), Some(State::Established));
}

/// RFC 7323 §5.3 R1: a segment whose TSval is older than TS.Recent is
/// dropped and acknowledged; its data is not delivered.
#[test]
fn paws_drops_old_timestamp() {
    let mut c = established();
    let good = c.seg(A | TcpFlags::PSH, b"abc");
    c.peer_nxt += 3;
    c.h.inject(&good);
    c.h.advance(Duration::from_millis(50));
    c.out();
    let old = c
        .seg(A, b"def")
        .with(|s| s.ts = Some((100, s.ts.unwrap().1)));
    let out = c.send(&old);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, c.peer_nxt, "old segment not accepted");
    assert_eq!(c.h.ep.stats().paws_drops, 1);
    assert_eq!(c.h.ep.recv_queued(c.id), 3);
    // RFC 7323 §3.2: once negotiated, a non-RST segment without TSopt is
    // dropped silently.
    let bare = c.seg(A, b"ghi").with(|s| s.ts = None);
    assert!(c.send(&bare).is_empty());
    assert_eq!(c.h.ep.recv_queued(c.id), 3);
    assert_eq!(c.h.ep.stats().missing_timestamp_drops, 1);
}

// ---------------------------------------------------------------------------
// Demultiplexing
// ---------------------------------------------------------------------------

/// Listener backlog: SYN-RECEIVED entries count; excess SYNs are dropped
/// (no SYN-ACK, no RST) and counted.
#[test]
fn syn_backlog_overflow_is_dropped_and_counted() {
    let mut h = Harness::new(Config::default());
    h.ep.listen_with_backlog(ours(80), 2).unwrap();
    for port in [5000, 5001, 5002] {
        h.inject(&Seg::new(peer(port), ours(80), 1000, 0, S));
    }
    let out = h.out();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.flags == S | A));
    assert_eq!(h.ep.stats().syn_backlog_drops, 1);
    // A retransmitted SYN of an admitted entry is answered again, not
    // counted as a new entry.
    h.inject(&Seg::new(peer(5000), ours(80), 1000, 0, S));
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].dst, out[0].flags), (peer(5000), S | A));
    assert_eq!(h.ep.stats().syn_backlog_drops, 1);
}

/// Ports nobody here owns belong to the kernel's TCP in the same namespace:
/// ignore, count, and never reset.
#[test]
fn segment_to_unowned_port_is_ignored() {
    let mut h = Harness::new(Config::default());
    h.ep.listen(ours(80)).unwrap();
    h.inject(&Seg::new(peer(5000), ours(22), 1, 0, S));
    h.inject(&Seg::new(peer(5000), ours(22), 1, 2, A));
    assert!(h.out().is_empty());
    assert_eq!(h.ep.stats().not_ours, 2);
    assert!(!h.ep.owns_port(22));
}

/// RFC 9293 §3.10.7.1 (CLOSED): for a port we own but no connection, "If
/// the ACK bit is off, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"; "If the
/// ACK bit is on, <SEQ=SEG.ACK><CTL=RST>"; a RST is discarded.
#[test]
fn owned_port_without_connection_gets_rst() {
    let mut h = Harness::new(Config::default());
    h.ep.connect(h.now, ours(40000), peer(443)).unwrap();
    h.out();
    assert!(h.ep.owns_port(40000));
    let stranger = peer(9999);
    h.inject(
        &Seg::new(stranger, ours(40000), 500, 0, TcpFlags::PSH)
            .with(|s| s.payload = b"hello".to_vec()),
    );
    h.inject(&Seg::new(stranger, ours(40000), 500, 777, A));
    h.inject(&Seg::new(stranger, ours(40000), 500, 777, R | A));
    let out = h.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (out[0].dst, out[0].flags, out[0].seq, out[0].ack),
        (stranger, R | A, 0, 505)
    );
    assert_eq!((out[1].dst, out[1].flags, out[1].seq), (stranger, R, 777));
    assert_eq!(h.ep.stats().resets_sent, 2);
    assert_eq!(h.ep.stats().not_ours, 0);
}

/// RFC 9293 §3.10.7.2 LISTEN: "first check for an RST ... should be
/// ignored"; "second check for an ACK ... <SEQ=SEG.ACK><CTL=RST>".
#[test]
fn listener_resets_acks_and_ignores_rsts() {
    let mut h = Harness::new(Config::default());
    h.ep.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80))
        .unwrap();
    h.inject(&Seg::new(peer(5000), ours(80), 10, 20, R | A));
    h.inject(&Seg::new(peer(5000), ours(80), 10, 20, A));
    h.inject(&Seg::new(peer(5000), ours(80), 10, 0, F));
    let out = h.out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].src, out[0].flags, out[0].seq), (ours(80), R, 20));
}

/// Parse errors are counted and dropped, never answered.
#[test]
fn malformed_packets_are_counted() {
    let mut h = Harness::new(Config::default());
    h.ep.listen(ours(80)).unwrap();
    let mut pkt = Seg::new(peer(5000), ours(80), 1000, 0, S).packet();
    let last = pkt.len() - 1;
    pkt[last] ^= 0xFF; // breaks the TCP checksum
    h.ep.handle_packet(h.now, &pkt);
    h.ep.handle_packet(h.now, &pkt[..10]);
    h.ep.handle_packet(h.now, &[]);
    assert!(h.out().is_empty());
    assert_eq!(h.ep.stats().malformed, 3);
}

// ---------------------------------------------------------------------------
// Data transfer mechanics
// ---------------------------------------------------------------------------

/// RFC 9293 §3.8.6.3 / RFC 5681 §4.2: delay the ACK (here 40 ms) but ACK at
/// least every second full-sized segment.
#[test]
fn delayed_ack_timer_and_every_second_segment() {
    let mut c = established();
    let d = data(1448);
    let s1 = c.seg(A, &d);
    c.peer_nxt += 1448;
    assert!(c.send(&s1).is_empty(), "first segment: ACK delayed");
    assert_eq!(
        c.h.ep.poll_timeout(),
        Some(c.h.now + Duration::from_millis(40))
    );
    c.h.advance(Duration::from_millis(39));
    assert!(c.out().is_empty());
    c.h.advance(Duration::from_millis(1));
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, c.peer_nxt);

    let s2 = c.seg(A, &d);
    c.peer_nxt += 1448;
    assert!(c.send(&s2).is_empty());
    let s3 = c.seg(A, &d);
    c.peer_nxt += 1448;
    let out = c.send(&s3);
    assert_eq!(
        out.len(),
        1,
        "second full-sized segment is acknowledged at once"
    );
    assert_eq!(out[0].ack, c.peer_nxt);
}

/// RFC 5681 §4.2: out-of-order data is acknowledged immediately, and RFC
/// 2018 §4: the first SACK block reports the most recent segment, then the
/// most recently reported ones. Filling the gap is acknowledged immediately.
#[test]
fn out_of_order_data_gets_immediate_sack() {
    let mut c = established();
    let base = c.peer_nxt;
    let d = data(100);
    let seg_at = |c: &mut Conn, offset: u32| {
        let s = c.seg(A, &d).with(|s| s.seq = base.wrapping_add(offset));
        c.send(&s)
    };
    let out = seg_at(&mut c, 200);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, base);
    assert_eq!(out[0].sack, [(base + 200, base + 300)]);
    let out = seg_at(&mut c, 400);
    assert_eq!(
        out[0].sack,
        [(base + 400, base + 500), (base + 200, base + 300)]
    );
    let out = seg_at(&mut c, 600);
    assert_eq!(
        out[0].sack,
        [
            (base + 600, base + 700),
            (base + 400, base + 500),
            (base + 200, base + 300)
        ]
    );
    let out = seg_at(&mut c, 300);
    assert_eq!(
        out[0].sack,
        [(base + 200, base + 500), (base + 600, base + 700)],
        "merged block first"
    );
    // The gap-filling segment is acknowledged at once.
    let out = seg_at(&mut c, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, base + 100);
    let out = seg_at(&mut c, 100);
    assert_eq!(out[0].ack, base + 500);
    assert_eq!(out[0].sack, [(base + 600, base + 700)]);
    let mut buf = vec![0u8; 1000];
    assert_eq!(c.h.ep.recv(c.id, &mut buf), Ok(500));
}

/// RFC 9293 §3.8.6.1: with a zero send window the sender probes with one
/// octet on the persist timer, backing off; a window update resumes
/// transmission from SND.UNA.
#[test]
fn zero_window_probe_and_window_update() {
    let mut c = established();
    // The peer closes its window.
    let zero = c.seg(A, &[]).with(|s| s.window = 0);
    c.send(&zero);
    assert_eq!(c.h.ep.send(c.id, &data(5000)), Ok(5000));
    assert!(c.out().is_empty(), "nothing fits a zero window");
    let t0 = c.h.now;
    let first = c.h.ep.poll_timeout().unwrap();
    c.h.advance(first - t0);
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].seq, out[0].payload.len()),
        (c.our_nxt, 1),
        "one-octet probe"
    );
    // Still zero: the probe is not accepted; the next probe waits twice as long.
    let still = c.seg(A, &[]).with(|s| s.window = 0);
    c.send(&still);
    let t1 = c.h.now;
    let second = c.h.ep.poll_timeout().unwrap();
    assert_eq!(second - t1, (first - t0) * 2);
    c.h.advance(second - t1);
    let out = c.out();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].seq, out[0].payload.len()), (c.our_nxt, 1));
    assert_eq!(c.h.ep.stats().zero_window_probes, 2);
    assert_eq!(
        c.h.ep.stats().timeouts,
        0,
        "probing is not a retransmission timeout"
    );
    // The window opens: data flows from SND.UNA (the probe octet included).
    let open = c.seg(A, &[]).with(|s| s.window = 3000);
    let out = c.send(&open);
    // Two full segments; RFC 9293 §3.8.6.2.1 (sender SWS avoidance) holds
    // back the 104-byte remainder of the window.
    let sizes: Vec<_> = out.iter().map(|s| (s.seq, s.payload.len())).collect();
    assert_eq!(
        sizes,
        [(c.our_nxt, 1448), (c.our_nxt.wrapping_add(1448), 1448)]
    );
    assert_eq!(out[0].payload[..], data(5000)[..out[0].payload.len()]);
}

/// RFC 8985 §7 with the probe-content deviation (tlp.rs): a flight of
/// several segments goes unanswered; before the RTO the tail loss probe
/// goes out, and it is the highest segment again, not the new data that
/// waits, so that a receiver which had it all (only the last ACK was lost)
/// answers at once instead of after its delayed-ACK timer.
#[test]
fn tail_loss_probe_resends_the_highest_segment() {
    let mut c = established();
    let t0 = c.h.now;
    c.h.ep.send(c.id, &data(100_000)).unwrap();
    let mut sent: Vec<Seg> = Vec::new();
    let probe = loop {
        let mut out = c.out();
        if let Some(i) = out.iter().position(|s| sent.iter().any(|p| p.seq == s.seq)) {
            break out.swap_remove(i);
        }
        sent.extend(out);
        let t = c.h.ep.poll_timeout().expect("a timer is armed");
        c.h.advance(t - c.h.now);
    };
    assert!(
        sent.len() >= 2,
        "a flight of several segments: {}",
        sent.len()
    );
    let last = sent
        .iter()
        .max_by_key(|s| s.seq.wrapping_sub(c.our_nxt))
        .unwrap();
    assert_eq!(
        (probe.seq, &probe.payload[..]),
        (last.seq, &last.payload[..])
    );
    assert!(c.h.now - t0 < Duration::from_millis(200), "before the RTO");
    assert_eq!(c.h.ep.stats().tlp_probes, 1);
    assert_eq!(c.h.ep.stats().timeouts, 0);
}

/// RFC 6298 §5.4-5.6: on expiry retransmit the earliest unacknowledged
/// segment and double the RTO; RFC 9293 §3.8.3 R2: give up after
/// `data_retries` with `Closed { TimedOut }`.
#[test]
fn data_retries_exhausted_times_out() {
    let mut c = passive(
        Config {
            data_retries: 3,
            ..Config::default()
        },
        FULL,
    );
    c.h.ep.send(c.id, b"hello").unwrap();
    let first = c.out();
    assert_eq!(first.len(), 1);
    let mut gaps = Vec::new();
    let mut last = c.h.now;
    while let Some(t) = c.h.ep.poll_timeout() {
        c.h.advance(t - c.h.now);
        for s in c.out() {
            assert_eq!((s.seq, &s.payload[..]), (c.our_nxt, &b"hello"[..]));
            gaps.push(c.h.now - last);
            last = c.h.now;
        }
        if c.state() == Some(State::Closed) {
            break;
        }
    }
    // The handshake gave an RTT sample: the RTO is the 200 ms floor. One
    // segment in flight: the PTO (2 SRTT + 2 ms + WCDelAckT) is later than
    // the RTO, and RFC 8985 §7.2 caps it at the RTO's expiry, so the
    // first resend is the tail loss probe, which restarts the RTO
    // (§7.3); then the RTO fires `data_retries` times, doubled each time.
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    assert_eq!(gaps[0], Duration::from_millis(200));
    assert_eq!(gaps[1], gaps[0]);
    assert_eq!(gaps[2], gaps[1] * 2);
    assert_eq!(gaps[3], gaps[2] * 2);
    let events = c.h.events();
    assert_eq!(
        events.last(),
        Some(&Event::Closed {
            conn: c.id,
            reason: CloseReason::TimedOut
        })
    );
    assert_eq!(c.h.ep.stats().timeouts, 3);
    assert_eq!(c.h.ep.stats().tlp_probes, 1);
}

/// RFC 6298 §5.7: "If the timer expires awaiting the ACK of a SYN segment
/// and the TCP implementation is using an RTO less than 3 seconds, the RTO
/// MUST be re-initialized to 3 seconds when data transmission begins" (here
/// without timestamps, so the handshake yields no RTT sample).
#[test]
fn retransmitted_syn_means_three_second_rto_for_data() {
    let mut h = Harness::new(Config {
        timestamps: false,
        ..Config::default()
    });
    let id = h.ep.connect(h.now, ours(40000), peer(443)).unwrap();
    let iss = h.out().remove(0).seq;
    h.advance(Duration::from_millis(1_000));
    assert_eq!(
        h.out().len(),
        1,
        "SYN retransmitted after the initial 1 s RTO"
    );
    h.inject(
        &Seg::new(peer(443), ours(40000), 7000, iss.wrapping_add(1), S | A)
            .with(|s| s.mss = Some(1460)),
    );
    h.out();
    assert_eq!(h.ep.state(id), Some(State::Established));
    h.ep.send(id, b"data").unwrap();
    assert_eq!(h.out().len(), 1);
    let sent = h.now;
    let resent = loop {
        let t = h.ep.poll_timeout().expect("retransmission timer runs");
        h.advance(t - h.now);
        if !h.out().is_empty() {
            break h.now;
        }
    };
    assert_eq!(resent - sent, Duration::from_secs(3));
}

/// Closing a listener resets its half-open and unaccepted connections and
/// frees the port; new SYNs then get RFC 9293 §3.10.7.1 treatment (the port
/// is no longer ours: ignored).
#[test]
fn unlisten_resets_pending_connections() {
    let mut h = Harness::new(Config::default());
    let l = h.ep.listen(ours(80)).unwrap();
    h.inject(&Seg::new(peer(5000), ours(80), 1000, 0, S));
    let sa = h.out().remove(0);
    h.inject(&Seg::new(peer(5001), ours(80), 3000, 0, S));
    h.out();
    // The first one completes but is never accepted.
    h.inject(&Seg::new(
        peer(5000),
        ours(80),
        1001,
        sa.seq.wrapping_add(1),
        A,
    ));
    assert!(matches!(h.events()[..], [Event::Incoming { .. }]));
    h.ep.unlisten(l);
    let out = h.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|s| s.flags == R));
    let mut dsts: Vec<_> = out.iter().map(|s| s.dst).collect();
    dsts.sort();
    assert_eq!(dsts, [peer(5000), peer(5001)]);
    assert!(!h.ep.owns_port(80));
    assert_eq!(h.ep.connection_count(), 0);
    h.inject(&Seg::new(peer(5002), ours(80), 1, 0, S));
    assert!(h.out().is_empty());
    assert_eq!(h.ep.stats().not_ours, 1);
}

// ---------------------------------------------------------------------------
// Segments the host refused
// ---------------------------------------------------------------------------

/// PROTOCOL.md §7 (a segment the host refused): data the host's kernel
/// refused to send never left, so the newest is taken back as if never
/// sent (SND.MAX rewinds) and goes out again as new data, not as a
/// retransmission; a refused retransmission is resent. Nothing about the
/// path changes: no loss recovery, no RTO.
#[test]
fn refused_segments_are_taken_back_and_sent_again() {
    let mut c = established();
    let d = data(3 * 1448);
    assert_eq!(c.h.ep.send(c.id, &d).unwrap(), d.len());
    let first = c.out();
    let data_segs: Vec<&Seg> = first.iter().filter(|s| !s.payload.is_empty()).collect();
    assert_eq!(data_segs.len(), 3, "{first:?}");
    let base = data_segs[0].seq;
    // The last two were refused (handed back newest first).
    c.h.ep.handle_refused(c.h.now, &data_segs[2].packet());
    c.h.ep.handle_refused(c.h.now, &data_segs[1].packet());
    assert_eq!(c.h.ep.stats().refused_segments, 2);
    assert_eq!(
        c.h.ep.info(c.id).unwrap().snd_max.0,
        base.wrapping_add(1448)
    );
    // A pure ACK refused is nothing to take back.
    let pure_ack = Seg::new(c.local, c.remote, data_segs[0].seq, c.peer_nxt, A);
    c.h.ep.handle_refused(c.h.now, &pure_ack.packet());
    assert_eq!(c.h.ep.stats().refused_segments, 2);

    let again = c.out();
    let resent: Vec<(u32, &[u8])> = again
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| (s.seq, &s.payload[..]))
        .collect();
    assert_eq!(
        resent,
        [
            (base.wrapping_add(1448), &d[1448..2896]),
            (base.wrapping_add(2896), &d[2896..]),
        ]
    );
    let stats = c.h.ep.stats();
    assert_eq!(stats.retransmitted_segments, 0, "new data, not resends");

    // A retransmission refused: after the RTO resends the first segment,
    // its refusal leaves it to be resent, not counted as delivered.
    c.h.advance(Duration::from_millis(1_100));
    let rto = c.out();
    let rtx = rto
        .iter()
        .find(|s| s.seq == base && !s.payload.is_empty())
        .expect("the RTO resends the first segment")
        .clone();
    c.h.ep.handle_refused(c.h.now, &rtx.packet());
    assert_eq!(c.h.ep.stats().refused_segments, 3);
    assert_eq!(
        c.h.ep.info(c.id).unwrap().snd_max.0,
        base.wrapping_add(3 * 1448),
        "a retransmission does not rewind SND.MAX"
    );
    let again = c.out();
    assert!(
        again
            .iter()
            .any(|s| s.seq == base && s.payload == d[..1448]),
        "the refused retransmission goes out again: {again:?}"
    );
    // The peer acknowledges everything: nothing is outstanding.
    c.our_nxt = base.wrapping_add(3 * 1448);
    let ack = c.seg(A, &[]);
    c.send(&ack);
    let info = c.h.ep.info(c.id).unwrap();
    assert_eq!(info.snd_una, info.snd_max);
}

/// A send buffer larger than 4 MiB is filled only as far as cwnd needs:
/// a bulk writer on a new connection queues 4 MiB of a 16 MiB buffer.
#[test]
fn the_send_queue_grows_with_cwnd_not_to_the_buffer_at_once() {
    let mut c = passive(
        Config {
            send_buffer: 16 << 20,
            ..Config::default()
        },
        FULL,
    );
    let big = data(32 << 20);
    assert_eq!(c.h.ep.send(c.id, &big), Ok(4 << 20));
    assert_eq!(c.h.ep.send(c.id, &big), Ok(0));
}

/// `Config::partial_checksums`: data segments leave with the pseudo-header
/// sum in the checksum field and `Transmit::checksum_partial` set, for the
/// datapath to complete (the kernel's GSO, or
/// `wire::complete_ipv4_tcp_checksum`); everything else, a pure ACK here,
/// leaves complete. Completed, a data segment is the one a full emit writes.
#[test]
fn partial_checksums_only_on_data_and_completed_they_verify() {
    let cfg = Config {
        partial_checksums: true,
        ..Config::default()
    };
    let mut c = passive(cfg, FULL);
    assert_eq!(c.h.ep.send(c.id, &data(3000)), Ok(3000));
    let mut data_segments = 0;
    while let Some(sent) = c.h.ep.poll_transmit(c.h.now, &mut c.h.buf) {
        let packet = &mut c.h.buf[..sent.size];
        assert!(sent.checksum_partial, "a data segment");
        assert!(
            parse_ipv4_tcp(packet).is_err(),
            "a partial checksum does not verify as it is"
        );
        assert!(complete_ipv4_tcp_checksum(packet));
        let (_, tcp) = parse_ipv4_tcp(packet).expect("verifies once completed");
        assert!(!tcp.payload.is_empty());
        data_segments += 1;
    }
    assert_eq!(data_segments, 3, "3000 bytes in 1448-byte segments");
    // The peer acknowledges it all and sends data: the (delayed) pure ACK
    // for it is complete.
    let acked = c.our_nxt.wrapping_add(3000);
    let seg = c.seg(A, &data(100)).with(|s| s.ack = acked);
    c.h.inject(&seg);
    c.h.advance(Duration::from_millis(50));
    let sent =
        c.h.ep
            .poll_transmit(c.h.now, &mut c.h.buf)
            .expect("an ACK of the peer's data");
    assert!(!sent.checksum_partial);
    let (_, tcp) = parse_ipv4_tcp(&c.h.buf[..sent.size]).expect("a complete checksum");
    assert!(tcp.payload.is_empty());
}
