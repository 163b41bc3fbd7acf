//! sustain-host against Linux's own TCP and against itself, on a real
//! A - R - B namespace path (sustain_lab::PathLab), 64 MiB each way,
//! byte-identical, with 0 % and 1 % random loss at the router.
//!
//! These run for real as root (as in CI). Without root they print why and
//! return without checking anything.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use sustain_lab::{root_or_skip, PathLab, PathLabConfig, PathNode};

const PORT: u16 = 5001;
const SIZE: usize = 64 * MIB;
const TIMEOUT: Duration = Duration::from_secs(240);

fn path(loss: Option<f64>) -> PathLab {
    PathLab::with_config(PathLabConfig {
        loss,
        ..PathLabConfig::default()
    })
    .expect("building the A-R-B namespace path")
}

fn assert_loss_happened(path: &PathLab, loss: Option<f64>) {
    if loss.is_some() {
        let drops = path.loss_drops().expect("reading R's loss counter");
        assert!(
            drops > 0,
            "the router dropped nothing: the loss case tested nothing"
        );
    }
}

/// sustain-host connect (A) --send-file -> Linux listener (B).
fn sustain_sends_to_linux(loss: Option<f64>) {
    let path = path(loss);
    let src = file_in(&path, "data");
    let sha = make_file(&src, SIZE, 1);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let listener = kernel_listener(&path, PathNode::B, server);
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept()?;
        drain(&mut stream)
    });
    let mut cmd = sustain_host();
    cmd.args(["connect", &server.to_string(), "--send-file"])
        .arg(&src);
    let host = path.spawn_in(PathNode::A, cmd).unwrap();
    let summary = expect_success(&host, TIMEOUT);
    let (bytes, got) = receiver.join().unwrap().expect("kernel receiver");
    assert_eq!(bytes, SIZE);
    assert_eq!(got, sha, "Linux received different bytes");
    assert_eq!(summary["bytes"], SIZE as u64);
    assert_eq!(summary["sha256"], sha);
    assert_loss_happened(&path, loss);
}

/// Linux client (A) sends -> sustain-host listen (B) --recv-file.
fn linux_sends_to_sustain(loss: Option<f64>) {
    let path = path(loss);
    let src = file_in(&path, "data");
    let dst = file_in(&path, "received");
    let sha = make_file(&src, SIZE, 2);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let mut cmd = sustain_host();
    cmd.args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let host = path.spawn_in(PathNode::B, cmd).unwrap();
    let sent = path
        .run_in(PathNode::A, move || -> std::io::Result<()> {
            let mut stream = connect_retrying(server)?;
            pour(&mut stream, &src)?;
            // Wait for the peer's FIN so the transfer is complete end to end.
            drain(&mut stream).map(|_| ())
        })
        .unwrap();
    sent.expect("kernel sender");
    let summary = expect_success(&host, TIMEOUT);
    assert_eq!(summary["bytes"], SIZE as u64);
    assert_eq!(summary["sha256"], sha);
    assert_eq!(sha256_file(&dst), sha, "received file differs");
    assert_loss_happened(&path, loss);
}

/// sustain-host connect (A) --recv-file <- Linux server (B) sends.
fn linux_serves_sustain(loss: Option<f64>) {
    let path = path(loss);
    let src = file_in(&path, "data");
    let dst = file_in(&path, "received");
    let sha = make_file(&src, SIZE, 3);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let listener = kernel_listener(&path, PathNode::B, server);
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        pour(&mut stream, &src)?;
        drain(&mut stream).map(|_| ())
    });
    let mut cmd = sustain_host();
    cmd.args(["connect", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let host = path.spawn_in(PathNode::A, cmd).unwrap();
    let summary = expect_success(&host, TIMEOUT);
    sender.join().unwrap().expect("kernel sender");
    assert_eq!(summary["sha256"], sha);
    assert_eq!(sha256_file(&dst), sha);
    assert_loss_happened(&path, loss);
}

/// Linux client (A) receives <- sustain-host listen (B) --send-file.
fn sustain_serves_linux(loss: Option<f64>) {
    let path = path(loss);
    let src = file_in(&path, "data");
    let sha = make_file(&src, SIZE, 4);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let mut cmd = sustain_host();
    cmd.args(["listen", "--bind", &server.to_string(), "--send-file"])
        .arg(&src);
    let host = path.spawn_in(PathNode::B, cmd).unwrap();
    let got = path
        .run_in(PathNode::A, move || {
            connect_retrying(server).and_then(|mut s| drain(&mut s))
        })
        .unwrap()
        .expect("kernel receiver");
    let summary = expect_success(&host, TIMEOUT);
    assert_eq!(got, (SIZE, sha.clone()));
    assert_eq!(summary["sha256"], sha);
    assert_loss_happened(&path, loss);
}

/// sustain-host connect (A) --send-file -> sustain-host listen (B).
fn sustain_to_sustain(loss: Option<f64>) {
    let path = path(loss);
    let src = file_in(&path, "data");
    let dst = file_in(&path, "received");
    let sha = make_file(&src, SIZE, 5);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let mut listen = sustain_host();
    listen
        .args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    // A SYN arriving before the listener's RST guard is in place would be
    // refused by B's kernel: wait until it reports `listening`.
    let receiver = spawn_listener(&path, PathNode::B, listen, &file_in(&path, "events.jsonl"));
    let mut connect = sustain_host();
    connect
        .args(["connect", &server.to_string(), "--send-file"])
        .arg(&src);
    let sender = path.spawn_in(PathNode::A, connect).unwrap();
    let sent = expect_success(&sender, TIMEOUT);
    let received = expect_success(&receiver, TIMEOUT);
    assert_eq!(sent["sha256"], sha);
    assert_eq!(received["sha256"], sha);
    assert_eq!(received["bytes"], SIZE as u64);
    assert_eq!(sha256_file(&dst), sha);
    assert_loss_happened(&path, loss);
}

macro_rules! interop_tests {
    ($($name:ident: $body:ident($loss:expr);)*) => {$(
        #[test]
        fn $name() {
            if !root_or_skip(stringify!($name)) {
                return;
            }
            $body($loss);
        }
    )*};
}

interop_tests! {
    sustain_sends_to_linux_clean: sustain_sends_to_linux(None);
    sustain_sends_to_linux_1pct_loss: sustain_sends_to_linux(Some(0.01));
    linux_sends_to_sustain_clean: linux_sends_to_sustain(None);
    linux_sends_to_sustain_1pct_loss: linux_sends_to_sustain(Some(0.01));
    linux_serves_sustain_clean: linux_serves_sustain(None);
    linux_serves_sustain_1pct_loss: linux_serves_sustain(Some(0.01));
    sustain_serves_linux_clean: sustain_serves_linux(None);
    sustain_serves_linux_1pct_loss: sustain_serves_linux(Some(0.01));
    sustain_to_sustain_clean: sustain_to_sustain(None);
    sustain_to_sustain_1pct_loss: sustain_to_sustain(Some(0.01));
}

/// One `listen --keep` serves 100 concurrent Linux connections.
#[test]
fn hundred_linux_connections_to_one_keep_listener() {
    const CONNECTIONS: usize = 100;
    if !root_or_skip("hundred_linux_connections_to_one_keep_listener") {
        return;
    }
    let path = path(None);
    let src = file_in(&path, "data");
    let sha = make_file(&src, 256 * 1024, 6);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    let mut cmd = sustain_host();
    cmd.args([
        "listen",
        "--keep",
        "--bind",
        &server.to_string(),
        "--send-file",
    ])
    .arg(&src);
    let host = path.spawn_in(PathNode::B, cmd).unwrap();
    let results = path
        .run_in(PathNode::A, move || {
            // Threads inherit the namespace of the thread that creates them.
            let clients: Vec<_> = (0..CONNECTIONS)
                .map(|_| {
                    std::thread::spawn(move || {
                        connect_retrying(server).and_then(|mut s| drain(&mut s))
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
        let (bytes, got) = r.as_ref().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(
            (*bytes, got.as_str()),
            (256 * 1024, sha.as_str()),
            "client {i}"
        );
    }
    // All 100 are done from the clients' view; the host may still be
    // finishing its side of the last closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while summaries(&host).len() < CONNECTIONS && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = host.terminate(Duration::from_secs(5)).unwrap();
    assert!(
        status.success(),
        "listen --keep exits 0 on SIGTERM: {status}; {}",
        host.read_stderr().unwrap_or_default()
    );
    let sums = summaries(&host);
    assert_eq!(sums.len(), CONNECTIONS, "one summary per connection");
    assert!(sums.iter().all(|s| s["sha256"] == sha));
}
