//! The interop demo (`just lab` until the scenario runner exists): builds an
//! A - R - B namespace path, then moves a file between sustain-host and
//! Linux's own TCP in both directions and between two sustain-hosts, and
//! prints a table: who sent, who received, bytes, sha256 match, throughput.
//!
//! Usage: interop_demo [MiB] [loss-percent]   (defaults: 64 MiB, 0 %)

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use common::*;
use sustain_lab::{PathLab, PathLabConfig, PathNode};

const PORT: u16 = 5001;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let loss_pct: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0.0);
    sustain_lab::require_root()?;
    let path = PathLab::with_config(PathLabConfig {
        loss: (loss_pct > 0.0).then_some(loss_pct / 100.0),
        ..PathLabConfig::default()
    })?;
    println!(
        "namespace path A {} -- R -- B {}, MTU 1500, offloads off, {loss_pct} % loss at R, {mib} MiB per transfer",
        PathLab::A_ADDR,
        PathLab::B_ADDR
    );
    let src = file_in(&path, "data");
    let sha = make_file(&src, mib * MIB, 42);
    let server = SocketAddrV4::new(PathLab::B_ADDR, PORT);
    println!(
        "{:<34} {:>10} {:>8} {:>10}",
        "transfer", "bytes", "sha256", "Mbit/s"
    );
    let row = |name: &str, bytes: usize, got: &str, secs: f64| {
        println!(
            "{name:<34} {bytes:>10} {:>8} {:>10.0}",
            if got == sha { "match" } else { "DIFFERS" },
            bytes as f64 * 8.0 / secs / 1e6
        );
    };

    // sustain-host (A) sends to a Linux listener (B).
    let listener = kernel_listener(&path, PathNode::B, server);
    let rx = std::thread::spawn(move || {
        let (mut s, _) = listener.accept()?;
        drain(&mut s)
    });
    let mut cmd = sustain_host();
    cmd.args(["connect", &server.to_string(), "--send-file"])
        .arg(&src);
    let t = Instant::now();
    let host = path.spawn_in(PathNode::A, cmd)?;
    expect_success(&host, Duration::from_secs(300));
    let (bytes, got) = rx.join().expect("receiver thread")?;
    row(
        "sustain-host A -> Linux B",
        bytes,
        &got,
        t.elapsed().as_secs_f64(),
    );

    // Linux (A) sends to sustain-host listen (B).
    let dst = file_in(&path, "received");
    let mut cmd = sustain_host();
    cmd.args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let host = path.spawn_in(PathNode::B, cmd)?;
    let src2 = src.clone();
    let t = Instant::now();
    path.run_in(PathNode::A, move || -> std::io::Result<()> {
        let mut s = connect_retrying(server)?;
        pour(&mut s, &src2)?;
        drain(&mut s).map(|_| ())
    })??;
    let summary = expect_success(&host, Duration::from_secs(300));
    row(
        "Linux A -> sustain-host B",
        summary["bytes"].as_u64().unwrap_or(0) as usize,
        summary["sha256"].as_str().unwrap_or(""),
        t.elapsed().as_secs_f64(),
    );

    // sustain-host (A) sends to sustain-host (B).
    let mut listen = sustain_host();
    listen
        .args(["listen", "--bind", &server.to_string(), "--recv-file"])
        .arg(&dst);
    let receiver = spawn_listener(&path, PathNode::B, listen, &file_in(&path, "events.jsonl"));
    let mut connect = sustain_host();
    connect
        .args(["connect", &server.to_string(), "--send-file"])
        .arg(&src);
    let t = Instant::now();
    let sender = path.spawn_in(PathNode::A, connect)?;
    expect_success(&sender, Duration::from_secs(300));
    let summary = expect_success(&receiver, Duration::from_secs(60));
    row(
        "sustain-host A -> sustain-host B",
        summary["bytes"].as_u64().unwrap_or(0) as usize,
        summary["sha256"].as_str().unwrap_or(""),
        t.elapsed().as_secs_f64(),
    );
    if loss_pct > 0.0 {
        println!("router R dropped {} packets", path.loss_drops()?);
    }
    println!("(throughput includes process start-up and the sha256 of every byte on both ends)");
    Ok(())
}
