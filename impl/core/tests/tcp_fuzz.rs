//! Hostile input: random bytes, and valid-looking segments with mutated
//! fields and options (checksums recomputed so they reach the state
//! machine), fed to an endpoint with a listener and an established
//! connection that has data in flight. The endpoint must never panic, and
//! the established connection must survive every segment that fails the
//! RFC 5961 checks (here: everything except a RST exactly at RCV.NXT, which
//! the generator never produces).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::repair_checksums;
use proptest::prelude::*;
use sustain_core::rand::{Random, SplitMix64};
use sustain_core::tcp::{Config, ConnId, Endpoint, State};
use sustain_core::time::{Duration, Instant};
use sustain_core::wire::{
    emit_ipv4_tcp, parse_ipv4_tcp, Ipv4Repr, SackBlock, SeqNumber, TcpFlags, TcpRepr, Timestamps,
};

const OURS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const OUR_PORT: u16 = 80;
const PEER_PORT: u16 = 5000;

struct Target {
    ep: Endpoint,
    conn: ConnId,
    now: Instant,
    buf: Vec<u8>,
    peer_tsval: u32,
}

fn emit(src: SocketAddrV4, dst: SocketAddrV4, tcp: &TcpRepr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = emit_ipv4_tcp(&Ipv4Repr::new(*src.ip(), *dst.ip()), tcp, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn drain(ep: &mut Endpoint, now: Instant, buf: &mut [u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(n) = ep.poll_transmit(now, buf).map(|t| t.size) {
        out.push(buf[..n].to_vec());
    }
    while ep.poll_event().is_some() {}
    out
}

/// Listener on :80 and an established connection from the peer, with 64 KiB
/// of our data queued (so ACK, SACK and recovery code runs).
fn target() -> Target {
    let mut ep = Endpoint::new(
        Config {
            syn_backlog: 16,
            ..Config::default()
        },
        Box::new(SplitMix64::new(99)),
    );
    let listener = ep.listen(SocketAddrV4::new(OURS, OUR_PORT)).unwrap();
    let now = Instant::from_millis(10);
    let mut buf = vec![0u8; 65_535];
    let ours = SocketAddrV4::new(OURS, OUR_PORT);
    let peer = SocketAddrV4::new(PEER, PEER_PORT);
    let syn = TcpRepr {
        src_port: PEER_PORT,
        dst_port: OUR_PORT,
        seq: SeqNumber(1000),
        flags: TcpFlags::SYN,
        window: 65535,
        mss: Some(1460),
        window_scale: Some(2),
        sack_permitted: true,
        timestamps: Some(Timestamps { tsval: 1, tsecr: 0 }),
        ..TcpRepr::default()
    };
    ep.handle_packet(now, &emit(peer, ours, &syn));
    let out = drain(&mut ep, now, &mut buf);
    let (_, synack) = parse_ipv4_tcp(&out[0]).unwrap();
    let ack = TcpRepr {
        src_port: PEER_PORT,
        dst_port: OUR_PORT,
        seq: SeqNumber(1001),
        ack: synack.seq + 1,
        flags: TcpFlags::ACK,
        window: 65535,
        timestamps: Some(Timestamps {
            tsval: 2,
            tsecr: synack.timestamps.unwrap().tsval,
        }),
        ..TcpRepr::default()
    };
    ep.handle_packet(now, &emit(peer, ours, &ack));
    let conn = ep.accept(listener).unwrap();
    assert_eq!(ep.state(conn), Some(State::Established));
    let queued = ep.send(conn, &vec![0x5A; 64 * 1024]).unwrap();
    assert_eq!(queued, 64 * 1024);
    drain(&mut ep, now, &mut buf);
    Target {
        ep,
        conn,
        now,
        buf,
        peer_tsval: 2,
    }
}

// `is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn one_in(rng: &mut SplitMix64, n: u32) -> bool {
    rng.next_u32() % n == 0
}

/// A random sequence number: usually near `around`, sometimes anywhere.
fn near(rng: &mut SplitMix64, around: SeqNumber, spread: u32) -> SeqNumber {
    if one_in(rng, 4) {
        SeqNumber(rng.next_u32())
    } else {
        let off = rng.next_u32() % (2 * spread + 1);
        SeqNumber(around.0.wrapping_add(off).wrapping_sub(spread))
    }
}

/// One hostile packet; never a RST exactly at RCV.NXT for the established
/// connection.
fn hostile(rng: &mut SplitMix64, t: &mut Target) -> Vec<u8> {
    let info = t.ep.info(t.conn).expect("connection still exists");
    let kind = rng.next_u32() % 10;
    if kind == 0 {
        // Raw random bytes.
        let len = (rng.next_u32() % 120) as usize;
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        if len > 0 && one_in(rng, 2) {
            v[0] = 0x45;
        }
        return v;
    }
    let ours = SocketAddrV4::new(OURS, OUR_PORT);
    // Mostly the established 4-tuple; sometimes new peers (listener path)
    // or other ports (not ours).
    let (src, dst) = match rng.next_u32() % 8 {
        0 => (
            SocketAddrV4::new(PEER, 1 + (rng.next_u32() % 60000) as u16),
            ours,
        ),
        1 => (
            SocketAddrV4::new(PEER, PEER_PORT),
            SocketAddrV4::new(OURS, (rng.next_u32() % 65536) as u16),
        ),
        _ => (SocketAddrV4::new(PEER, PEER_PORT), ours),
    };
    let mut flags = TcpFlags((rng.next_u32() & 0xFF) as u8);
    if one_in(rng, 3) {
        flags = TcpFlags::ACK;
    }
    let mut seq = near(rng, info.rcv_nxt, 70_000);
    // The generator never forges the one RST RFC 5961 accepts.
    if flags.rst() && seq == info.rcv_nxt {
        seq += 1;
    }
    let ack = near(rng, info.snd_una, 70_000);
    let mut blocks = [None; 4];
    for b in blocks.iter_mut().take((rng.next_u32() % 5) as usize) {
        let left = near(rng, info.snd_una, 70_000);
        let len = (rng.next_u32() % 5000) as usize;
        *b = Some(SackBlock {
            left,
            right: left + len,
        });
    }
    t.peer_tsval = t.peer_tsval.wrapping_add(1);
    let tsval = if one_in(rng, 8) {
        rng.next_u32()
    } else {
        t.peer_tsval
    };
    let payload_len = match rng.next_u32() % 4 {
        0 => 0,
        1 => (rng.next_u32() % 64) as usize,
        _ => (rng.next_u32() % 1500) as usize,
    };
    let mut payload = vec![0u8; payload_len];
    rng.fill_bytes(&mut payload);
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags,
        window: (rng.next_u32() & 0xFFFF) as u16,
        urgent: (rng.next_u32() & 0xFFFF) as u16,
        mss: one_in(rng, 6).then(|| (rng.next_u32() & 0xFFFF) as u16),
        window_scale: one_in(rng, 6).then(|| (rng.next_u32() & 0xFF) as u8),
        sack_permitted: one_in(rng, 6),
        sack_blocks: if one_in(rng, 2) { blocks } else { [None; 4] },
        timestamps: (!one_in(rng, 10)).then_some(Timestamps {
            tsval,
            tsecr: rng.next_u32(),
        }),
        payload: &payload,
        ..TcpRepr::default()
    };
    let mut tcp = tcp;
    if tcp.options_len() > 40 {
        tcp.sack_blocks = [None; 4];
    }
    let mut pkt = emit(src, dst, &tcp);
    // Byte-level mutation of headers and options, checksums recomputed.
    if one_in(rng, 4) {
        let original = pkt.clone();
        let flips = 1 + rng.next_u32() % 4;
        let header_end = (20 + tcp.header_len()).min(pkt.len());
        for _ in 0..flips {
            let i = (rng.next_u32() as usize) % header_end;
            pkt[i] ^= 1 << (rng.next_u32() % 8);
        }
        repair_checksums(&mut pkt);
        // A flipped RST bit or sequence number could forge the exact RST.
        if let Ok((ip, m)) = parse_ipv4_tcp(&pkt) {
            let to_conn = ip.src == PEER
                && ip.dst == OURS
                && m.src_port == PEER_PORT
                && m.dst_port == OUR_PORT;
            if to_conn && m.flags.rst() && m.seq == info.rcv_nxt {
                pkt = original;
            }
        }
    }
    if one_in(rng, 50) {
        let cut = (rng.next_u32() as usize) % pkt.len();
        pkt.truncate(cut);
    }
    pkt
}

#[test]
fn hundred_thousand_hostile_packets() {
    let mut t = target();
    let mut rng = SplitMix64::new(0x5EED);
    let mut out_packets = 0usize;
    for i in 0..100_000u32 {
        let pkt = hostile(&mut rng, &mut t);
        let before = t.ep.info(t.conn).unwrap();
        t.ep.handle_packet(t.now, &pkt);
        let mut buf = std::mem::take(&mut t.buf);
        out_packets += drain(&mut t.ep, t.now, &mut buf).len();
        t.buf = buf;
        t.now += Duration::from_micros(200);
        if t.ep.poll_timeout().is_some_and(|d| d <= t.now) {
            t.ep.handle_timeout(t.now);
        }
        let state = t.ep.state(t.conn);
        assert!(
            state.is_some_and(|s| s != State::Closed),
            "packet {i} tore the connection down (state {state:?}, RCV.NXT was {:?}): {}",
            before.rcv_nxt,
            hex::encode(&pkt)
        );
        // Keep data flowing so the sender side has something to recover.
        let _ = t.ep.send(t.conn, &[0xA5; 4096]);
        let mut sink = [0u8; 8192];
        let _ = t.ep.recv(t.conn, &mut sink);
    }
    let stats = t.ep.stats().clone();
    eprintln!("{stats:?}; {out_packets} packets out");
    // The generator reached the interesting paths.
    assert!(stats.malformed > 1_000, "{stats:?}");
    assert!(stats.challenge_acks > 100, "{stats:?}");
    assert!(stats.not_ours > 100, "{stats:?}");
    assert!(stats.resets_sent > 100, "{stats:?}");
    assert!(stats.paws_drops > 100, "{stats:?}");
}

/// The same endpoint survives arbitrary byte strings (shrinkable by
/// proptest).
fn raw_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        // IPv4 + TCP shaped: version/IHL 0x45, protocol 6, fixed checksums.
        proptest::collection::vec(any::<u8>(), 40..120).prop_map(|mut v| {
            v[0] = 0x45;
            v[9] = 6;
            let len = v.len() as u16;
            v[2..4].copy_from_slice(&len.to_be_bytes());
            v[6] = 0x40;
            v[7] = 0;
            repair_checksums(&mut v);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bytes_never_panic(packets in proptest::collection::vec(raw_packet(), 1..16)) {
        let mut t = target();
        for p in &packets {
            t.ep.handle_packet(t.now, p);
            let mut buf = std::mem::take(&mut t.buf);
            drain(&mut t.ep, t.now, &mut buf);
            t.buf = buf;
        }
        prop_assert!(t.ep.state(t.conn).is_some_and(|s| s != State::Closed));
    }
}
