//! Helpers shared by the lab's integration tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sustain_lab::{PathLab, PathNode};

/// Deterministic pseudo-random test data (xorshift), so a corrupted byte cannot hide
/// in a run of zeros.
pub(crate) fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Sends `data` over kernel TCP from A to B across R (std::net sockets created inside
/// the namespaces) and returns what B received.
pub(crate) fn transfer_a_to_b(lab: &PathLab, data: &[u8]) -> Vec<u8> {
    let listener = lab
        .run_in(PathNode::B, || TcpListener::bind((PathLab::B_ADDR, 0)))
        .expect("enter B")
        .expect("listen in B");
    let server_addr = listener.local_addr().expect("listener address");
    let receiver = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept in B");
        assert_eq!(peer.ip(), PathLab::A_ADDR, "B sees A's own address");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("read in B");
        received
    });
    let mut stream = lab
        .run_in(PathNode::A, move || {
            TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))
        })
        .expect("enter A")
        .expect("connect from A");
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .expect("write timeout");
    stream.write_all(data).expect("send from A");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    receiver.join().expect("receiver thread")
}

/// (device, inode) of a namespace file: equal for the same namespace.
pub(crate) fn netns_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// True if the process exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

/// `ip netns list` output (names only), to check what a human would see.
pub(crate) fn ip_netns_list() -> Vec<String> {
    let output = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    assert!(output.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

/// Parses a scenario text as the file `bad.toml`.
pub(crate) fn parse_scenario(
    text: &str,
) -> Result<sustain_lab::scenario::Scenario, sustain_lab::scenario::ScenarioError> {
    sustain_lab::scenario::Scenario::parse(text, Path::new("bad.toml"), "bad")
}

/// The line, field and message of the error a scenario text must fail with.
pub(crate) fn located(text: &str) -> (usize, String, String) {
    match parse_scenario(text).expect_err("must not load") {
        err @ sustain_lab::scenario::ScenarioError::Invalid { .. } => (
            err.line().expect("line"),
            err.field().expect("field").to_string(),
            err.to_string(),
        ),
        other => panic!("not an Invalid error: {other}"),
    }
}

/// The 1-based line of `text` containing `needle`.
pub(crate) fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .expect("needle")
        + 1
}

/// Asserts `text` fails at the line containing `needle`, on `field`, with a message
/// naming the file and containing `words`.
pub(crate) fn fails_at(text: &str, needle: &str, field: &str, words: &str) {
    let (line, got_field, message) = located(text);
    assert_eq!(
        (line, got_field.as_str()),
        (line_of(text, needle), field),
        "{message}"
    );
    assert!(message.starts_with("bad.toml:"), "{message}");
    assert!(message.contains(words), "{message}");
}
