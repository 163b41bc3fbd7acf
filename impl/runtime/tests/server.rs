//! sustain-server over loopback TCP: two hosts' control sessions, driven by
//! the core's ControlClient, register, one reports a move from a new
//! address, and the other, "behind a NAPT" (its direct address differs from
//! the loopback address the server observes) and not moving, is told over
//! its still-open session to send the MSYN to the mover's new address.
//! Garbage and unknown versions from a third session get error replies and
//! disturb nobody. No root needed: 127.0.0.0/8 is all loopback.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sustain_core::auth::{ConnectionKeys, Key};
use sustain_core::control::{ErrorCode, FrameBuffer, Incoming, Outcome};
use sustain_core::rendezvous::{ControlClient, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

struct ServerProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    local: SocketAddrV4,
    events: PathBuf,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let dir = std::env::temp_dir().join(format!("sustain-server-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let events = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&events);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sustain-server"))
            .args(["--bind", "127.0.0.1:0", "--events"])
            .arg(&events)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting sustain-server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let listening: Value = serde_json::from_str(&line).expect("a JSON listening line");
        assert_eq!(listening["event"], "listening");
        let local = listening["local"].as_str().unwrap().parse().unwrap();
        ServerProcess {
            child,
            stdout,
            local,
            events,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control session from `source` (any 127/8 address).
struct Session {
    stream: TcpStream,
    frames: FrameBuffer,
}

impl Session {
    async fn open(server: SocketAddrV4, source: &str) -> Session {
        let socket = TcpSocket::new_v4().unwrap();
        let bind: SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(bind).unwrap();
        let stream = socket.connect(server.into()).await.unwrap();
        Session {
            stream,
            frames: FrameBuffer::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next whole message, or None at end of stream.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 512];
        loop {
            if let Some(frame) = self.frames.next_frame().unwrap() {
                return Some(frame);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("a reply from the server in time")
                .unwrap();
            if n == 0 {
                return None;
            }
            self.frames.push(&buf[..n]);
        }
    }

    async fn recv_from(&mut self, client: &mut ControlClient) -> ServerMessage {
        let bytes = self.recv().await.expect("a message, not end of stream");
        client
            .handle_message(&bytes)
            .expect("an authentic, fresh message")
    }
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

#[tokio::test]
async fn napt_host_is_told_where_the_moved_peer_is_and_garbage_disturbs_nobody() {
    let server = ServerProcess::start();
    let key_a = Key(0x0123_4567_89AB_CDEF);
    let key_b = Key(0xFEDC_BA98_7654_3210);
    // A: direct 10.0.0.2 but observed as 127.0.0.1: behind a NAPT.
    let mut a = ControlClient::new(
        &ConnectionKeys {
            local: key_a,
            remote: key_b,
        },
        sa("10.0.0.2:5000"),
        sa("127.0.0.3:80"),
    )
    .unwrap();
    // B: direct 127.0.0.3, observed 127.0.0.3: global.
    let mut b = ControlClient::new(
        &ConnectionKeys {
            local: key_b,
            remote: key_a,
        },
        sa("127.0.0.3:80"),
        sa("127.0.0.1:40000"),
    )
    .unwrap();
    let mut sa_ = Session::open(server.local, "127.0.0.1").await;
    sa_.send(&a.register()).await;
    let ack = sa_.recv_from(&mut a).await;
    assert!(matches!(ack, ServerMessage::Ack(x) if x.outcome == Outcome::Registered));
    let mut sb = Session::open(server.local, "127.0.0.3").await;
    sb.send(&b.register()).await;
    assert!(matches!(sb.recv_from(&mut b).await, ServerMessage::Ack(_)));

    // Garbage from a third session: an error reply, then the server closes
    // it. An unknown version on a fourth: an error, the session stays.
    let mut bad = Session::open(server.local, "127.0.0.9").await;
    bad.send(&[1, 1, 0, 2, 0xde, 0xad, 0xbe, 0xef]).await;
    let reply = bad.recv().await.unwrap();
    match Incoming::parse(&reply).unwrap().0 {
        Incoming::Error(e) => assert_eq!(e.code, ErrorCode::Garbage),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        bad.recv().await,
        None,
        "the server closes a garbage session"
    );
    let mut odd = Session::open(server.local, "127.0.0.9").await;
    odd.send(&[7, 1, 0, 4]).await;
    match Incoming::parse(&odd.recv().await.unwrap()).unwrap().0 {
        Incoming::Error(e) => assert_eq!(e.code, ErrorCode::UnknownVersion),
        other => panic!("{other:?}"),
    }
    // A forged report for the real connection (someone else's verifier).
    let mut forger = ControlClient::new(
        &ConnectionKeys {
            local: key_b,
            remote: Key(key_a.0 ^ 1),
        },
        sa("127.0.0.9:80"),
        sa("127.0.0.1:1"),
    )
    .unwrap();
    let mut forged = forger.report_move(sa("127.0.0.9:80"));
    forged[4..13].copy_from_slice(&b.register()[4..13]); // B's id and side
    odd.send(&forged).await;
    match Incoming::parse(&odd.recv().await.unwrap()).unwrap().0 {
        Incoming::Error(e) => assert_eq!(e.code, ErrorCode::BadMac),
        other => panic!("{other:?}"),
    }

    // B moves to 127.0.0.4 and reports from a new session there.
    let mut sb2 = Session::open(server.local, "127.0.0.4").await;
    sb2.send(&b.report_move(sa("127.0.0.4:80"))).await;
    match sb2.recv_from(&mut b).await {
        ServerMessage::Ack(ack) => assert_eq!(ack.outcome, Outcome::PeerSends),
        other => panic!("{other:?}"),
    }
    // A, which did not move, hears over its original session.
    match sa_.recv_from(&mut a).await {
        ServerMessage::PeerLocation(p) => {
            assert_eq!(p.target, sa("127.0.0.4:80"));
            assert!(p.you_behind_napt && !p.peer_behind_napt);
        }
        other => panic!("{other:?}"),
    }

    // The event log tells the story.
    let mut names = Vec::new();
    for _ in 0..50 {
        names = server
            .events()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect();
        if names.iter().any(|n| n == "peer-location") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for expected in [
        "listening",
        "server-registered",
        "rejected",
        "move-reported",
        "decided",
        "peer-location",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let rejected: Vec<String> = server
        .events()
        .iter()
        .filter(|e| e["event"] == "rejected")
        .map(|e| e["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rejected, ["garbage", "unknown-version", "bad-mac"]);

    // SIGTERM: a clean exit with the counters in a `stopped` event.
    let mut server = server;
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut line = String::new();
    server.stdout.read_line(&mut line).unwrap();
    let last: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(last["event"], "stopped");
    let events = server.events();
    let stopped = events.iter().find(|e| e["event"] == "stopped").unwrap();
    assert_eq!(stopped["bad_mac"], last["stats"]["bad_mac"]);
    for (counter, value) in [
        ("registered", 2),
        ("reports", 1),
        ("notices_sent", 1),
        ("garbage", 1),
        ("unknown_version", 1),
        ("bad_mac", 1),
        ("rejected", 3),
    ] {
        assert_eq!(stopped[counter], value, "{counter} in {stopped}");
    }
}
