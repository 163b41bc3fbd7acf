//! Shared pieces of the runtime's real-kernel tests: test data, the
//! sustain-host binary, kernel-TCP peers and summary parsing.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sustain_core::rand::{Random, SplitMix64};
use sustain_lab::{ChildProcess, PathLab, PathNode};

pub(crate) const MIB: usize = 1 << 20;

/// Writes `len` pseudo-random bytes (seeded, so failures reproduce) to
/// `path` and returns their sha256.
pub(crate) fn make_file(path: &Path, len: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    std::fs::write(path, &data).expect("writing test data");
    hex::encode(Sha256::digest(&data))
}

pub(crate) fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).expect("reading received file"),
    ))
}

/// The sustain-host binary: `$SUSTAIN_HOST_BIN` if set (e.g. a wrapper that
/// runs it under perf), else the one cargo built for this test or benchmark,
/// else (examples) the one in the target directory above this executable.
pub(crate) fn sustain_host() -> Command {
    let exe = match (
        std::env::var_os("SUSTAIN_HOST_BIN"),
        option_env!("CARGO_BIN_EXE_sustain-host"),
    ) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("sustain-host")))
            .expect("locating sustain-host next to this executable"),
    };
    let mut cmd = Command::new(exe);
    cmd.env("RUST_LOG", "info");
    cmd
}

/// The JSON summaries a sustain-host printed (one per finished connection).
pub(crate) fn summaries(child: &ChildProcess) -> Vec<serde_json::Value> {
    child
        .read_stdout()
        .expect("reading sustain-host stdout")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// Waits for a sustain-host to exit successfully and returns its last
/// summary line; panics with its stderr otherwise.
pub(crate) fn expect_success(child: &ChildProcess, timeout: Duration) -> serde_json::Value {
    let status = child
        .wait_timeout(timeout)
        .expect("waiting for sustain-host");
    let stderr = child.read_stderr().unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        let _ = child.terminate(Duration::from_secs(1));
        panic!(
            "sustain-host {} did not finish in {timeout:?}; stderr:\n{stderr}",
            child.label()
        )
    });
    assert!(
        status.success(),
        "sustain-host {} failed ({status}); stderr:\n{stderr}",
        child.label()
    );
    let all = summaries(child);
    let last = child
        .read_stdout()
        .unwrap_or_default()
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("last stdout line {last:?} is not the JSON summary: {e}"));
    assert_eq!(Some(&summary), all.last());
    summary
}

/// A kernel TCP listener in `node`, bound before returning so a client can
/// connect at once.
pub(crate) fn kernel_listener(path: &PathLab, node: PathNode, addr: SocketAddrV4) -> TcpListener {
    path.run_in(node, move || TcpListener::bind(addr))
        .expect("entering the namespace")
        .expect("binding the kernel listener")
}

/// Reads a stream to its end, returning (bytes, sha256).
pub(crate) fn drain(stream: &mut TcpStream) -> std::io::Result<(usize, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n;
    }
}

/// Writes a whole file to a stream and half-closes it.
pub(crate) fn pour(stream: &mut TcpStream, path: &Path) -> std::io::Result<()> {
    let data = std::fs::read(path)?;
    stream.write_all(&data)?;
    stream.shutdown(std::net::Shutdown::Write)
}

pub(crate) fn file_in(path: &PathLab, name: &str) -> PathBuf {
    path.lab().run_dir().join(name)
}

/// Connects, retrying for a few seconds: a sustain listener that is still
/// starting lets the kernel answer RST.
pub(crate) fn connect_retrying(addr: SocketAddrV4) -> std::io::Result<TcpStream> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts `sustain-host listen ...` in `node` with an events file and waits
/// until it reports `listening` (its RST guard and filter are in place).
pub(crate) fn spawn_listener(
    path: &PathLab,
    node: PathNode,
    mut cmd: Command,
    events: &Path,
) -> ChildProcess {
    // The events file is appended to: start from an empty one, or an earlier
    // listener's `listening` line would be taken for this one's.
    let _ = std::fs::remove_file(events);
    cmd.arg("--events").arg(events);
    let child = path
        .spawn_in(node, cmd)
        .expect("spawning sustain-host listen");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let listening = text.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| e["event"] == "listening")
        });
        if listening {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sustain-host listen exited before listening ({status}): {}",
                child.read_stderr().unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sustain-host listen not ready after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every rule of the RST guard's two chains (OUTPUT RST drops, raw
/// PREROUTING ingress drops) in the calling thread's namespace.
pub(crate) fn guard_rules() -> String {
    ["-S OUTPUT", "-t raw -S PREROUTING"]
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.split(' ').collect();
            sustain_iptables::run(&args).expect("iptables")
        })
        .collect()
}
