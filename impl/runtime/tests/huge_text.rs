//! The binaries move their code onto transparent huge pages at start
//! (src/huge_text.rs): sustain-server, started on loopback, runs with its
//! code in an anonymous read-execute mapping backed by 2 MiB pages and no
//! file-backed code mapping of its own file left; with SUSTAIN_HUGE_TEXT=off
//! it keeps the file's mapping. (Every other test that starts a binary runs
//! the moved code: tests/server.rs, the lab's scenarios.) No root needed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// sustain-server on 127.0.0.1, once it says it listens.
fn start(huge_text: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sustain-server"));
    command
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .env_remove("SUSTAIN_HUGE_TEXT");
    if let Some(value) = huge_text {
        command.env("SUSTAIN_HUGE_TEXT", value);
    }
    let mut child = command.spawn().expect("starting sustain-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: Value = serde_json::from_str(&line).expect("a JSON listening line");
    assert_eq!(listening["event"], "listening");
    child
}

/// Per read-execute mapping of the process: its path ("" if anonymous) and
/// its AnonHugePages in kB.
fn code_mappings(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_header = fields.first().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if is_header {
            current = None;
            if fields
                .get(1)
                .is_some_and(|p| p.as_bytes().get(2) == Some(&b'x'))
            {
                out.push((fields.get(5).unwrap_or(&"").to_string(), 0));
                current = Some(out.len() - 1);
            }
        } else if let (Some(i), Some(&"AnonHugePages:")) = (current, fields.first()) {
            out[i].1 = fields[1].parse().unwrap();
        }
    }
    out
}

#[test]
fn the_server_runs_its_code_from_huge_pages() {
    if !sustain_lab::machine::thp_available() {
        sustain_lab::skip(
            "the_server_runs_its_code_from_huge_pages",
            "transparent huge pages are off on this machine",
        );
        return;
    }
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_sustain-server")).unwrap();
    let exe = exe.to_string_lossy().to_string();
    let mut child = start(None);
    let mappings = code_mappings(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !mappings.iter().any(|(path, _)| *path == exe),
        "the program's own code is still mapped from its file: {mappings:?}"
    );
    let huge: u64 = mappings
        .iter()
        .filter(|(path, _)| path.is_empty())
        .map(|(_, kb)| kb)
        .sum();
    assert!(
        huge >= 2048,
        "no anonymous code mapping on huge pages: {mappings:?}"
    );
}

#[test]
fn sustain_huge_text_off_keeps_the_file_mapping() {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_sustain-server")).unwrap();
    let exe = exe.to_string_lossy().to_string();
    let mut child = start(Some("off"));
    let mappings = code_mappings(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        mappings.iter().any(|(path, _)| *path == exe),
        "the program's code should stay mapped from {exe}: {mappings:?}"
    );
    assert!(
        mappings
            .iter()
            .all(|(path, kb)| !path.is_empty() || *kb == 0),
        "code on huge pages although SUSTAIN_HUGE_TEXT=off: {mappings:?}"
    );
}
