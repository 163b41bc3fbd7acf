//! Mobility-server figures (issue 10): decisions per second on one core,
//! and memory for 1 M registered connections. A plain timing loop, printed
//! as a table; run with `cargo bench -p sustain-core --bench rendezvous`.
//! Memory is measured with a counting global allocator (live heap bytes
//! before and after), so it includes the hash table's own overhead.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant as StdInstant;

use sustain_core::auth::{ConnectionKeys, Key};
use sustain_core::rand::{Random, SplitMix64};
use sustain_core::rendezvous::{
    decide, ControlClient, EndState, Output, Registry, Server, ServerConfig,
};
use sustain_core::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn config(n: usize) -> ServerConfig {
    ServerConfig {
        max_entries: n,
        max_sessions: 16,
        rate_per_source: 0,
        ttl: Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

/// `n` connections' clients: low side global, high side behind a NAPT.
fn clients(n: usize, seed: u64) -> Vec<(ControlClient, ControlClient)> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let (k1, k2) = (Key(rng.next_u64()), Key(rng.next_u64()));
            let a_addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), (i % 60000) as u16 + 1024);
            let b_addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), (i % 60000) as u16 + 1024);
            let a = ControlClient::new(
                &ConnectionKeys {
                    local: k1,
                    remote: k2,
                },
                a_addr,
                b_addr,
            );
            let b = ControlClient::new(
                &ConnectionKeys {
                    local: k2,
                    remote: k1,
                },
                b_addr,
                a_addr,
            );
            (a.unwrap(), b.unwrap())
        })
        .collect()
}

fn drain(server: &mut Server) -> usize {
    let mut n = 0;
    while let Some(out) = server.poll_output() {
        if let Output::Send { bytes, .. } = out {
            n += bytes.len();
        }
    }
    while server.poll_event().is_some() {}
    n
}

/// Registers both ends of every connection; returns the server and the
/// sessions used (one per observed address).
fn populate(clients: &mut [(ControlClient, ControlClient)]) -> (Server, u64, u64) {
    let mut server = Server::new(config(clients.len()));
    let now = Instant::from_millis(1);
    let global = server
        .open_session(now, "192.0.2.1:40000".parse().unwrap())
        .unwrap();
    let napt = server
        .open_session(now, "203.0.113.1:40000".parse().unwrap())
        .unwrap();
    for (a, b) in clients.iter_mut() {
        server.handle_message(now, global, &a.register());
        server.handle_message(now, napt, &b.register());
        drain(&mut server);
    }
    (server, global, napt)
}

fn main() {
    println!("| figure | value |");
    println!("|---|---|");

    // Pure decisions.
    let ends: Vec<[EndState; 2]> = (0..1024u32)
        .map(|i| {
            let e = |d: u32, o: u32, m: u64| EndState {
                direct: SocketAddrV4::new(Ipv4Addr::from(d), 80),
                observed: Ipv4Addr::from(o),
                moved_at: m,
            };
            [
                e(i, i ^ (i & 1), u64::from(i)),
                e(i + 7, (i + 7) ^ (i & 2), u64::from(i) + 3),
            ]
        })
        .collect();
    let rounds = 20_000;
    let t = StdInstant::now();
    for _ in 0..rounds {
        for [l, h] in &ends {
            black_box(decide([black_box(l), black_box(h)]));
        }
    }
    let per_s = (rounds * ends.len()) as f64 / t.elapsed().as_secs_f64();
    println!(
        "| `decide` (pure rule), per second | {:.1} M |",
        per_s / 1e6
    );

    // Whole MoveReports through the server: frame checks, registry lookup,
    // MAC verification, decision, Ack and PeerLocation emitted with MACs.
    let n = 100_000;
    let mut cs = clients(n, 1);
    let (mut server, _global, _napt) = populate(&mut cs);
    let reports: Vec<Vec<u8>> = cs
        .iter_mut()
        .map(|(a, _)| {
            let port = a.direct().port();
            a.report_move(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), port))
        })
        .collect();
    let now = Instant::from_millis(2);
    let moved = server
        .open_session(now, "198.51.100.1:40000".parse().unwrap())
        .unwrap();
    let t = StdInstant::now();
    for r in &reports {
        server.handle_message(now, moved, r);
        drain(&mut server);
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(server.stats().decisions, n as u64, "every report decided");
    assert_eq!(
        server.stats().notices_sent,
        n as u64,
        "every NAPTed end notified"
    );
    println!(
        "| MoveReport -> decision -> Ack + PeerLocation, per second (one core, {n} connections) | {:.0} k |",
        n as f64 / secs / 1e3
    );
    drop(server);

    // Memory for 1 M registered connections (both ends registered).
    let n = 1_000_000;
    let mut cs = clients(n, 2);
    let before = live();
    let t = StdInstant::now();
    let (mut server, _, _) = populate(&mut cs);
    let reg_secs = t.elapsed().as_secs_f64();
    let bytes = live() - before;
    assert_eq!(server.registry().len(), n);
    println!(
        "| heap for {n} registered connections | {:.0} MiB ({:.0} bytes each) |",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / n as f64
    );
    println!(
        "| Registers (2 per connection) per second while filling | {:.0} k |",
        2.0 * n as f64 / reg_secs / 1e3
    );
    // One expiry sweep over 1 M live entries (nothing expires).
    let t = StdInstant::now();
    server.handle_timeout(Instant::from_millis(2));
    server.handle_timeout(Instant::from_millis(5000));
    println!(
        "| expiry sweep over {n} entries | {:.1} ms |",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(server.registry().len(), n);
}
