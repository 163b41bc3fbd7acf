//! `sustain-host forward` on a real A - R - B namespace path: kernel TCP
//! applications on A and B talk through two forwards (A: tcp -> sustain, B:
//! sustain -> tcp) to a service on B's loopback. Byte-identical echoes over
//! 100 concurrent connections (half-close both ways), backpressure from a
//! service that does not read, and a reset on one side reaching the other.
//!
//! These run for real as root (as in CI). Without root they print why and
//! return without checking anything.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use sustain_core::rand::{Random, SplitMix64};
use sustain_lab::{root_or_skip, ChildProcess, PathLab, PathNode};

const SUSTAIN_PORT: u16 = 5001;
/// The service on B's loopback, behind B's forward.
const SERVICE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
/// A's forward: applications on A connect here.
const ENTRY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081);

struct Forwarded {
    path: PathLab,
    _b: ChildProcess,
    _a: ChildProcess,
}

/// Both forwards up and listening; `service` runs on B's loopback first.
fn forwarded(service: impl FnOnce(TcpListener) + Send + 'static) -> Forwarded {
    let path = PathLab::new().expect("building the A-R-B namespace path");
    let listener = path
        .run_in(PathNode::B, || TcpListener::bind(SERVICE))
        .unwrap()
        .expect("binding the service on B");
    path.spawn_thread_in(PathNode::B, move || service(listener))
        .unwrap();
    let mut cmd = sustain_host();
    cmd.args([
        "forward",
        "--from",
        &format!("sustain:0.0.0.0:{SUSTAIN_PORT}"),
        "--to",
        &format!("tcp:{SERVICE}"),
    ]);
    let b_events = file_in(&path, "b-forward.events.jsonl");
    let b = spawn_listener(&path, PathNode::B, cmd, &b_events);
    let mut cmd = sustain_host();
    cmd.args([
        "forward",
        "--from",
        &format!("tcp:{ENTRY}"),
        "--to",
        &format!(
            "sustain:{}",
            SocketAddrV4::new(PathLab::B_ADDR, SUSTAIN_PORT)
        ),
    ]);
    let a_events = file_in(&path, "a-forward.events.jsonl");
    let a = spawn_listener(&path, PathNode::A, cmd, &a_events);
    Forwarded { path, _b: b, _a: a }
}

/// Echoes every connection: reads to EOF, writing back what it reads, then
/// half-closes.
fn echo_service(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            let _ = stream.shutdown(Shutdown::Write);
        });
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; len];
    SplitMix64::new(seed).fill_bytes(&mut d);
    d
}

/// 100 concurrent connections through both forwards, 256 KiB each way,
/// each closed by a half-close in each direction: every echo is identical.
#[test]
fn hundred_concurrent_forwarded_connections_echo_byte_identical() {
    const CONNECTIONS: u64 = 100;
    const LEN: usize = 256 * 1024;
    if !root_or_skip("hundred_concurrent_forwarded_connections_echo_byte_identical") {
        return;
    }
    let f = forwarded(echo_service);
    let results = f
        .path
        .run_in(PathNode::A, move || {
            let clients: Vec<_> = (0..CONNECTIONS)
                .map(|i| {
                    std::thread::spawn(move || -> std::io::Result<bool> {
                        let sent = data(LEN, 100 + i);
                        let mut stream = connect_retrying(ENTRY)?;
                        let mut writer = stream.try_clone()?;
                        let expected = sent.clone();
                        let w = std::thread::spawn(move || -> std::io::Result<()> {
                            writer.write_all(&sent)?;
                            writer.shutdown(Shutdown::Write)
                        });
                        let mut echoed = Vec::with_capacity(LEN);
                        stream.read_to_end(&mut echoed)?;
                        w.join().expect("writer thread")?;
                        Ok(Sha256::digest(&echoed) == Sha256::digest(&expected)
                            && echoed.len() == LEN)
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().expect("client thread panicked"))
                .collect::<Vec<_>>()
        })
        .unwrap();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(true) => {}
            Ok(false) => panic!("connection {i}: the echo differs"),
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
}

/// A service that does not read: the client's writes block once the
/// buffers on the way are full (nothing is queued without bound), and every
/// byte arrives once the service reads.
#[test]
fn a_service_that_does_not_read_pushes_back_to_the_client() {
    const LEN: usize = 256 * 1024 * 1024;
    if !root_or_skip("a_service_that_does_not_read_pushes_back_to_the_client") {
        return;
    }
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (digest_tx, digest_rx) = mpsc::channel();
    let f = forwarded(move |listener| {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = go_rx.recv();
        let mut hasher = Sha256::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n;
                }
            }
        }
        let _ = digest_tx.send((total, hasher.finalize().to_vec()));
    });
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let sent = data(LEN, 7);
    let expected = Sha256::digest(&sent).to_vec();
    let client = f
        .path
        .spawn_thread_in(PathNode::A, move || -> std::io::Result<()> {
            let mut stream = connect_retrying(ENTRY)?;
            for chunk in sent.chunks(64 * 1024) {
                stream.write_all(chunk)?;
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            stream.shutdown(Shutdown::Write)
        })
        .unwrap();
    // Let the buffers fill, then check the client is held back.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = written.load(Ordering::Relaxed);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let stalled_at = written.load(Ordering::Relaxed);
    assert!(
        stalled_at < (LEN / 2) as u64,
        "the client wrote {stalled_at} bytes into a service that reads nothing"
    );
    go_tx.send(()).unwrap();
    client.join().expect("client thread").expect("client I/O");
    let (total, digest) = digest_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the service finished reading");
    assert_eq!(total, LEN);
    assert_eq!(digest, expected);
}

/// A client that resets its connection: the forward aborts the sustained
/// connection, and the far forward resets the service's connection.
#[test]
fn a_reset_on_one_side_resets_the_other() {
    if !root_or_skip("a_reset_on_one_side_resets_the_other") {
        return;
    }
    let (seen_tx, seen_rx) = mpsc::channel();
    let f = forwarded(move |listener| {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let outcome = loop {
            match stream.read(&mut buf) {
                Ok(0) => break "eof".to_string(),
                Ok(_) => {}
                Err(e) => break format!("{:?}", e.kind()),
            }
        };
        let _ = seen_tx.send(outcome);
    });
    f.path
        .run_in(PathNode::A, || -> std::io::Result<()> {
            let mut stream = connect_retrying(ENTRY)?;
            stream.write_all(&[7u8; 1000])?;
            std::thread::sleep(Duration::from_millis(300));
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
            drop(stream); // RST
            Ok(())
        })
        .unwrap()
        .unwrap();
    let outcome = seen_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the service saw its connection end");
    assert_eq!(
        outcome,
        format!("{:?}", ErrorKind::ConnectionReset),
        "the service's connection must be reset, not closed"
    );
}
