//! The `sustain` library used directly (no binary): an `Endpoint` per node of
//! a real A - R - B namespace path, streams as tokio `AsyncRead` +
//! `AsyncWrite`. An echo with half-close both ways, connection info, many
//! streams on one endpoint, a refused connect's error kind, and the RST-guard
//! rules gone after `shutdown`.
//!
//! These run for real as root (as in CI). Without root they print why and
//! return without checking anything.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::guard_rules;
use sustain::{ConnectionError, Endpoint, EndpointConfig};
use sustain_lab::{root_or_skip, PathLab, PathNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 7007;

/// Runs `f` on a current-thread tokio runtime inside `node`.
fn in_node<T: Send + 'static>(
    path: &PathLab,
    node: PathNode,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    path.spawn_thread_in(node, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f())
    })
    .expect("a thread in the node")
}

#[test]
fn echo_info_many_streams_refused_and_cleanup() {
    if !root_or_skip("echo_info_many_streams_refused_and_cleanup") {
        return;
    }
    let path = PathLab::new().expect("building the A-R-B namespace path");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = in_node(&path, PathNode::B, move || {
        Box::pin(async move {
            let endpoint = Endpoint::new(EndpointConfig::default()).expect("endpoint on B");
            let listener = endpoint
                .listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
                .await
                .expect("listen");
            ready_tx.send(()).unwrap();
            let serve = async {
                loop {
                    let mut stream = listener.accept().await.expect("accept");
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = stream.shutdown().await;
                        let _ = stream.closed().await;
                    });
                }
            };
            tokio::select! {
                () = serve => {}
                _ = stop_rx => {}
            }
            drop(listener);
            endpoint.shutdown().await;
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server endpoint listens");

    let client = in_node(&path, PathNode::A, || {
        Box::pin(async {
            let endpoint = Endpoint::new(EndpointConfig::default()).expect("endpoint on A");
            let remote = SocketAddrV4::new(PathLab::B_ADDR, PORT);

            // A refused connect: nothing listens on PORT + 1.
            let refused = endpoint
                .connect(SocketAddrV4::new(PathLab::B_ADDR, PORT + 1))
                .await
                .expect_err("nothing listens there");
            let refused: std::io::Error = refused.into();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
            assert_eq!(
                ConnectionError::of(&refused),
                Some(ConnectionError::Refused)
            );

            // Ten streams at once on one endpoint, each echoing 200 KiB.
            let mut tasks = Vec::new();
            for i in 0..10u8 {
                let endpoint = endpoint.clone();
                tasks.push(tokio::spawn(async move {
                    let mut stream = endpoint.connect(remote).await.expect("connect");
                    let info = stream.info().expect("info of an open stream");
                    assert!(info.migratable, "both ends offered Migrate-Permit");
                    assert_eq!(info.remote, remote);
                    let data: Vec<u8> = (0..200 * 1024).map(|j| (j % 251) as u8 ^ i).collect();
                    let (mut reader, mut writer) = tokio::io::split(stream);
                    let sent = data.clone();
                    let write = tokio::spawn(async move {
                        writer.write_all(&sent).await.expect("write");
                        writer.shutdown().await.expect("half-close");
                        writer
                    });
                    let mut echoed = Vec::new();
                    reader.read_to_end(&mut echoed).await.expect("read to EOF");
                    let writer = write.await.unwrap();
                    stream = reader.unsplit(writer);
                    stream.closed().await.expect("a normal close");
                    echoed == data
                }));
            }
            for t in tasks {
                assert!(t.await.unwrap(), "an echo differs");
            }
            endpoint.shutdown().await;
        })
    });
    client.join().expect("the client");
    stop_tx.send(()).unwrap();
    server.join().expect("the server");
    for node in [PathNode::A, PathNode::B] {
        let rules = path.run_in(node, guard_rules).unwrap();
        assert!(
            !rules.contains(&format!("sustain-host:{}", std::process::id())),
            "RST-guard rules left in {node:?} after shutdown:\n{rules}"
        );
    }
}
