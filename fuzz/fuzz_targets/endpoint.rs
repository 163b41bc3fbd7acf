//! A live connection under arbitrary input. Two endpoints (sustain mode,
//! so Migrate-Permit is negotiated and both hold keys) complete a handshake
//! and exchange data; then the fuzz input is a script of steps, each one of:
//! a segment built from fuzzed header fields and fuzzed sustain option data
//! (valid checksums, aimed at the live 4-tuple or its moved forms, so it
//! reaches the connection's state machine), a packet of raw bytes, the loss
//! or gain of an address (MIG_WAIT, MIG_SENT), time passing, and delivery
//! of what each end sent. Nothing may panic, in any state.
//!
//! Every input starts from the same world, rebuilt from fixed seeds (about
//! 30 us of the run's ~75 us per input). Cloning a prototype instead would
//! need `Clone` on the endpoint's connections and on its boxed `Random` and
//! `CongestionControl` trait objects, which a plain derive cannot give.
#![no_main]

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use sustain_core::rand::SplitMix64;
use sustain_core::tcp::{Config, ConnId, Endpoint, ListenerId};
use sustain_core::time::{Duration, Instant};
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, ExperimentalOption, Ipv4Repr, SackBlock, SeqNumber, TcpFlags,
    TcpRepr, Timestamps, EXID_ADDRESS_UPDATE, EXID_MIGRATE, EXID_MIGRATE_PERMIT, EXID_RELAY_TICKET,
};

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const A2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 5001;
/// Room for the largest packet an endpoint can hand out.
const MAX_PACKET: usize = 65536;

thread_local! {
    /// One packet buffer for the whole run, lent to every input: zeroing a
    /// fresh 64 KiB buffer for each delivery cost more than the endpoints'
    /// own work.
    static PACKET: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_PACKET]);
}

/// Reads the fuzz input a field at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8()).min(max).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

struct World {
    a: Endpoint,
    b: Endpoint,
    listener: ListenerId,
    /// B's accepted connections, read to keep their windows open.
    accepted: Vec<ConnId>,
    now: Instant,
    conn: ConnId,
    client: SocketAddrV4,
}

impl World {
    /// Two endpoints with an established, migratable connection that has
    /// carried data: the same state for every input (fixed seeds, time
    /// zero).
    fn new(buf: &mut [u8]) -> Option<World> {
        let mut a = Endpoint::new(Config::default(), Box::new(SplitMix64::new(1)));
        let mut b = Endpoint::new(Config::default(), Box::new(SplitMix64::new(2)));
        let now = Instant::ZERO;
        let listener = b.listen(SocketAddrV4::new(B, PORT)).ok()?;
        let conn = a
            .connect(now, SocketAddrV4::new(A, 40000), SocketAddrV4::new(B, PORT))
            .ok()?;
        let mut w = World {
            a,
            b,
            listener,
            accepted: Vec::new(),
            now,
            conn,
            client: SocketAddrV4::new(A, 40000),
        };
        for _ in 0..8 {
            w.deliver(buf);
        }
        let _ = w.a.send(w.conn, &[0x55; 3000]);
        for _ in 0..8 {
            w.deliver(buf);
        }
        Some(w)
    }

    /// Everything each end has to send, to the other.
    fn deliver(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(n) = self.a.poll_transmit(self.now, buf).map(|t| t.size) {
                self.b.handle_packet(self.now, &buf[..n]);
                moved = true;
            }
            while let Some(n) = self.b.poll_transmit(self.now, buf).map(|t| t.size) {
                self.a.handle_packet(self.now, &buf[..n]);
                moved = true;
            }
            while self.a.poll_event().is_some() {}
            while let Some(_event) = self.b.poll_event() {}
            while let Some(id) = self.b.accept(self.listener) {
                self.accepted.push(id);
            }
            let mut sink = [0u8; 4096];
            for &id in &self.accepted {
                while let Ok(n) = self.b.recv(id, &mut sink) {
                    if n == 0 {
                        break;
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }
}

fuzz_target!(|data: &[u8]| {
    PACKET.with_borrow_mut(|buf| run(data, buf));
});

fn run(data: &[u8], buf: &mut [u8]) {
    let Some(mut w) = World::new(buf) else { return };
    let mut input = Input(data);
    let mut steps = 0;
    while !input.done() && steps < 64 {
        steps += 1;
        match input.u8() % 6 {
            0 | 1 => {
                // A segment to B from the client's address (or its moved
                // one), with fuzzed fields and sustain options.
                let src_ip = if input.u8() & 1 == 0 { A } else { A2 };
                let src = SocketAddrV4::new(src_ip, w.client.port());
                let exids = [
                    EXID_MIGRATE_PERMIT,
                    EXID_MIGRATE,
                    EXID_ADDRESS_UPDATE,
                    EXID_RELAY_TICKET,
                ];
                let flags = TcpFlags(input.u8());
                let seq = SeqNumber(input.u32());
                let ack = SeqNumber(input.u32());
                let window = input.u16();
                let timestamps = (input.u8() & 1 == 1).then(|| Timestamps {
                    tsval: input.u32(),
                    tsecr: input.u32(),
                });
                let sack = (input.u8() & 1 == 1).then(|| SackBlock {
                    left: SeqNumber(input.u32()),
                    right: SeqNumber(input.u32()),
                });
                let exid = exids[usize::from(input.u8() % 4)];
                let option = input.bytes(30);
                let payload = input.bytes(64);
                let mut repr = TcpRepr {
                    src_port: src.port(),
                    dst_port: PORT,
                    seq,
                    ack,
                    flags,
                    window,
                    timestamps,
                    payload,
                    ..TcpRepr::default()
                };
                repr.sack_blocks[0] = sack;
                repr.experimental[0] = Some(ExperimentalOption { exid, data: option });
                let len = ipv4_tcp_len(&repr);
                let ip = Ipv4Repr::new(*src.ip(), B);
                if let Ok(n) = emit_ipv4_tcp(&ip, &repr, &mut buf[..len]) {
                    w.b.handle_packet(w.now, &buf[..n]);
                }
            }
            2 => {
                // Raw bytes to either end.
                let to_a = input.u8() & 1 == 1;
                let raw = input.bytes(255);
                if to_a {
                    w.a.handle_packet(w.now, raw);
                } else {
                    w.b.handle_packet(w.now, raw);
                }
            }
            3 => match input.u8() % 3 {
                0 => w.a.address_lost(w.now, A),
                1 => w.a.address_available(w.now, A2),
                _ => w.a.address_available(w.now, A),
            },
            4 => {
                let ms = u64::from(input.u16());
                w.advance(ms);
            }
            _ => {
                let _ = w.a.send(w.conn, &[0xAA; 1000]);
                w.deliver(buf);
            }
        }
    }
    w.deliver(buf);
}
