//! Scenario files: loading and their error messages (file, line, field); running the
//! reference scenarios end to end and what they leave in the output directory; the
//! CLI's exit status, `up`/`down`, and `clean` after a SIGKILLed `up`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{line_of, located, parse_scenario as parse, process_alive};
use sustain_lab::moves::{MoveAction, Trigger};
use sustain_lab::names::RunId;
use sustain_lab::report::render_summary;
use sustain_lab::runner::{self, RunOptions};
use sustain_lab::scenario::{Outcome, Scenario};
use sustain_lab::transfer::{EndpointKind, Initiator, Role};
use sustain_lab::{netns, root_or_skip};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::load(&scenarios_dir().join(format!("{name}.toml"))).expect("scenario loads")
}

fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("sustain-lab-tests")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const MINIMAL: &str = r#"
name = "t"

[[network]]
name = "g1"

[[network]]
name = "g2"

[[node]]
name = "a"
network = "g1"

[[node]]
name = "b"
network = "g2"

[transfer]
sender = "b"
receiver = "a"
bytes = "1MiB"

[[move]]
host = "b"
to = "g1"
after_bytes = 1000

[expect]
outcome = "broken"
"#;

#[test]
fn the_minimal_scenario_loads_with_defaults() {
    let scenario = parse(MINIMAL).expect("loads");
    assert_eq!(scenario.name, "t");
    assert_eq!(scenario.transfer.kind, EndpointKind::Linux);
    assert_eq!(scenario.transfer.initiator, Initiator::Sender);
    assert_eq!(scenario.transfer.bytes, 1 << 20);
    assert_eq!(scenario.moves.len(), 1);
    assert_eq!(scenario.moves[0].trigger, Trigger::AfterBytes(1000));
    assert_eq!(
        scenario.moves[0].action,
        MoveAction::Move {
            network: "g1".into(),
            gap: Duration::ZERO
        }
    );
    assert_eq!(scenario.moves[0].lag, Duration::ZERO);
    assert_eq!(scenario.expect.outcome, Outcome::Broken);

    // A lag orders moves that share a trigger; a negative one is refused.
    let lagged = parse(&MINIMAL.replace("after_bytes = 1000", "after_bytes = 1000\nlag_ms = 25"))
        .expect("loads");
    assert_eq!(lagged.moves[0].lag, Duration::from_millis(25));
    let text = MINIMAL.replace("after_bytes = 1000", "after_bytes = 1000\nlag_ms = -1");
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "lag_ms"), "move[0].lag_ms")
    );
    assert!(message.contains("not a duration"), "{message}");
}

#[test]
fn a_latency_budget_needs_a_move_and_is_kept_with_one() {
    let with_budget = MINIMAL.replace(
        "outcome = \"broken\"",
        "outcome = \"broken\"\nlatency_budget_ms = 250",
    );
    let scenario = parse(&with_budget).expect("loads");
    assert_eq!(
        scenario.expect.latency_budget,
        Some(Duration::from_millis(250))
    );
    let without_move = with_budget.replace(
        "[[move]]\nhost = \"b\"\nto = \"g1\"\nafter_bytes = 1000\n",
        "",
    );
    assert_ne!(without_move, with_budget, "the move was removed");
    let (line, field, message) = located(&without_move);
    assert_eq!(
        (line, field.as_str()),
        (
            line_of(&without_move, "latency_budget_ms"),
            "expect.latency_budget_ms"
        ),
        "{message}"
    );
    assert!(message.contains("needs a [[move]]"), "{message}");
}

#[test]
fn errors_name_the_file_the_line_and_the_field() {
    // Unknown key (serde), in the second [[move]].
    let text = MINIMAL.replace("[expect]", "[[move]]\nhost = \"b\"\nbogus = 1\n\n[expect]");
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "bogus"), "move[1].bogus")
    );
    assert!(message.starts_with("bad.toml:"), "{message}");
    assert!(message.contains("bogus"), "{message}");

    // Wrong type (serde).
    let text = MINIMAL.replace("bytes = \"1MiB\"", "bytes = true");
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "bytes = true"), "transfer.bytes")
    );

    // A reference to a network that does not exist (topology rules).
    let text = MINIMAL.replace(
        "name = \"b\"\nnetwork = \"g2\"",
        "name = \"b\"\nnetwork = \"g9\"",
    );
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"g9\""), "node[1].network")
    );
    assert!(message.contains("no network \"g9\""), "{message}");

    // A move to nowhere (scenario rules).
    let text = MINIMAL.replace("to = \"g1\"", "to = \"g7\"");
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"g7\""), "move[0].to")
    );

    // A trigger that can never fire.
    let text = MINIMAL.replace("after_bytes = 1000", "after_bytes = \"2MiB\"");
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "2MiB"), "move[0].after_bytes")
    );
    assert!(message.contains("never fire"), "{message}");

    // An attach of a host that is attached.
    let text = MINIMAL.replace("to = \"g1\"", "action = \"attach\"\nto = \"g1\"");
    let (_, field, message) = located(&text);
    assert_eq!(field, "move[0].host");
    assert!(message.contains("detach it first"), "{message}");

    // A bad outcome, and a missing table.
    let text = MINIMAL.replace("outcome = \"broken\"", "outcome = \"fine\"");
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"fine\""), "expect.outcome")
    );
    let text = MINIMAL.replace("[expect]\noutcome = \"broken\"", "");
    let (_, field, _) = located(&text);
    assert_eq!(field, "expect");

    // A NAPT whose LAN is a global network.
    let text = MINIMAL.replace(
        "[[node]]\nname = \"a\"",
        "[[router]]\nname = \"r\"\nwan = \"g1\"\nlan = \"g2\"\n\n[[node]]\nname = \"a\"",
    );
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "lan = \"g2\""), "router[0].lan")
    );

    // A connection towards a host behind a NAPT.
    let text = MINIMAL
        .replace("[[node]]\nname = \"a\"\nnetwork = \"g1\"", "[[network]]\nname = \"home\"\nkind = \"private\"\n\n[[router]]\nname = \"r\"\nwan = \"g1\"\nlan = \"home\"\n\n[[node]]\nname = \"a\"\nnetwork = \"home\"");
    let (_, field, message) = located(&text);
    assert_eq!(field, "transfer.connect");
    assert!(message.contains("behind a NAPT"), "{message}");

    // Unreadable file.
    let err = Scenario::load(Path::new("/nonexistent/x.toml")).expect_err("no file");
    assert!(err.to_string().starts_with("/nonexistent/x.toml:"), "{err}");
}

#[test]
fn each_end_may_have_its_own_kind() {
    let scenario = parse(MINIMAL).expect("loads");
    let transfer = &scenario.transfer;
    assert_eq!(transfer.kind_of(Role::Sender), EndpointKind::Linux);
    assert_eq!(transfer.kind_of(Role::Receiver), EndpointKind::Linux);
    assert_eq!(transfer.kind_label(), "linux");

    // One end overrides `kind`; the other follows it.
    let text = MINIMAL.replace(
        "[transfer]\n",
        "[transfer]\nkind = \"sustain\"\nreceiver_kind = \"linux\"\n",
    );
    let transfer = parse(&text).expect("loads").transfer;
    assert_eq!(transfer.kind, EndpointKind::Sustain);
    assert_eq!(transfer.kind_of(Role::Sender), EndpointKind::Sustain);
    assert_eq!(transfer.kind_of(Role::Receiver), EndpointKind::Linux);
    assert_eq!(transfer.kind_label(), "mixed");

    // Both ends without `kind`, and arguments for the sustain end.
    let text = MINIMAL.replace(
        "[transfer]\n",
        "[transfer]\nsender_kind = \"linux\"\nreceiver_kind = \"sustain\"\nreceiver_args = [\"--mode\", \"continuation\"]\n",
    );
    let transfer = parse(&text).expect("loads").transfer;
    assert_eq!(transfer.kind, EndpointKind::Linux);
    assert_eq!(transfer.kind_of(Role::Sender), EndpointKind::Linux);
    assert_eq!(transfer.kind_of(Role::Receiver), EndpointKind::Sustain);
    assert_eq!(transfer.receiver_args, ["--mode", "continuation"]);

    // A changed `kind` still moves the ends that do not have their own.
    let text = MINIMAL.replace("[transfer]\n", "[transfer]\nreceiver_kind = \"linux\"\n");
    let mut spec = parse(&text).expect("loads").transfer;
    assert_eq!(spec.kind_label(), "linux");
    spec.kind = EndpointKind::Sustain;
    assert_eq!(spec.kind_of(Role::Sender), EndpointKind::Sustain);
    assert_eq!(spec.kind_of(Role::Receiver), EndpointKind::Linux);
    assert_eq!(spec.kind_label(), "mixed");
}

#[test]
fn per_end_kinds_are_checked_with_file_line_and_field() {
    // An unknown kind (scenario rules).
    let text = MINIMAL.replace(
        "[transfer]\n",
        "[transfer]\nkind = \"sustain\"\nsender_kind = \"bsd\"\n",
    );
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"bsd\""), "transfer.sender_kind")
    );
    assert!(
        message.starts_with(&format!("bad.toml:{line}:1: transfer.sender_kind: ")),
        "{message}"
    );
    assert!(
        message.contains("unknown kind \"bsd\"; expected \"linux\" or \"sustain\""),
        "{message}"
    );

    let text = MINIMAL.replace("[transfer]\n", "[transfer]\nreceiver_kind = \"Linux\"\n");
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"Linux\""), "transfer.receiver_kind")
    );

    // A wrong type (serde).
    let text = MINIMAL.replace("[transfer]\n", "[transfer]\nreceiver_kind = 2\n");
    let (line, field, _) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (
            line_of(&text, "receiver_kind = 2"),
            "transfer.receiver_kind"
        )
    );

    // sustain-host arguments for an end that is kernel TCP.
    let text = MINIMAL.replace(
        "[transfer]\n",
        "[transfer]\nkind = \"sustain\"\nreceiver_kind = \"linux\"\nsender_args = [\"--mode\", \"continuation\"]\nreceiver_args = [\"--mode\", \"continuation\"]\n",
    );
    let (line, field, message) = located(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "receiver_args"), "transfer.receiver_args")
    );
    assert!(
        message.contains("the receiver is a linux end; only sustain-host takes extra arguments"),
        "{message}"
    );
    let text = MINIMAL.replace("[transfer]\n", "[transfer]\nsender_args = [\"-v\"]\n");
    let (_, field, message) = located(&text);
    assert_eq!(field, "transfer.sender_args");
    assert!(message.contains("the sender is a linux end"), "{message}");
}

#[test]
fn shipped_scenarios_load() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenario directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let scenario =
                Scenario::load(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            names.push(scenario.name);
        }
    }
    names.sort();
    for required in [
        "linux-baseline",
        "linux-behind-napt",
        "linux-move-breaks",
        "paper-linux",
        "linux-peer-plain",
        "linux-peer-move-breaks",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} missing: {names:?}"
        );
    }
    let paper = load("paper-linux");
    assert_eq!(paper.topology.routers.len(), 2);
    assert_eq!(paper.moves.len(), 2);
    assert_eq!(paper.expect.outcome, Outcome::Broken);
    for name in ["linux-peer-plain", "linux-peer-move-breaks"] {
        let transfer = load(name).transfer;
        assert_eq!(
            transfer.kind_of(Role::Sender),
            EndpointKind::Sustain,
            "{name}"
        );
        assert_eq!(
            transfer.kind_of(Role::Receiver),
            EndpointKind::Linux,
            "{name}"
        );
        assert_eq!(transfer.bytes, 64 << 20, "{name}");
    }
}

fn run_scenario(scenario: &Scenario, test: &str) -> (runner::RunOutput, PathBuf) {
    let out = out_dir(test);
    let output = runner::run(
        scenario,
        &RunOptions {
            out_dir: out.clone(),
            bin_dir: None,
            live: false,
            watch: false,
            golden_dir: None,
        },
    )
    .expect("run");
    let run = output.report.run.clone().expect("run id");
    let left: Vec<String> = netns::list()
        .expect("list")
        .into_iter()
        .filter(|name| name.contains(&run))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    (output, out)
}

fn report_json(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// (source address, destination port, TCP flags) of every TCP segment in a pcap file.
fn tcp_segments(path: &Path) -> Vec<(Ipv4Addr, u16, u8)> {
    let data = std::fs::read(path).expect("pcap");
    assert!(data.len() >= 24, "pcap header");
    let mut syns = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..(at + 16 + caplen).min(data.len())];
        at += 16 + caplen;
        // Ethernet, IPv4, TCP.
        if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let tcp = &frame[14 + ihl..];
        syns.push((
            Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
            tcp[13],
        ));
    }
    syns
}

/// (source address, destination port) of every TCP SYN without ACK in a pcap file.
fn syns(path: &Path) -> Vec<(Ipv4Addr, u16)> {
    tcp_segments(path)
        .into_iter()
        .filter(|(_, _, flags)| flags & 0x02 != 0 && flags & 0x10 == 0)
        .map(|(source, port, _)| (source, port))
        .collect()
}

#[test]
fn linux_baseline_completes_and_leaves_its_report_and_captures() {
    if !root_or_skip("linux_baseline_completes_and_leaves_its_report_and_captures") {
        return;
    }
    let (output, out) = run_scenario(&load("linux-baseline"), "baseline");
    let report = &output.report;
    assert_eq!(report.outcome, Outcome::Completed, "{report:#?}");
    assert!(report.passed, "{report:#?}");
    assert!(report.transfer.sha256_match);
    assert_eq!(report.transfer.bytes_received, 16 << 20);
    let json = report_json(&out);
    assert_eq!(json["outcome"], "completed");
    assert_eq!(json["transfer"]["sha256_match"], true);
    assert_eq!(
        json["transfer"]["sha256_expected"],
        json["transfer"]["sha256_received"]
    );
    for capture in ["a-g1.pcap", "b-g2.pcap"] {
        assert!(
            report.captures.iter().any(|c| c == capture),
            "{:?}",
            report.captures
        );
        let syns = syns(&out.join(capture));
        assert_eq!(
            syns,
            [(Ipv4Addr::new(198, 51, 100, 10), 5001)],
            "{capture}: the one connection"
        );
    }
    let events = std::fs::read_to_string(out.join("events.jsonl")).expect("events");
    assert!(events.contains("\"transfer-started\""));
    assert!(events.contains("\"finished\""));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn linux_move_breaks_is_reported_as_broken() {
    if !root_or_skip("linux_move_breaks_is_reported_as_broken") {
        return;
    }
    let (output, out) = run_scenario(&load("linux-move-breaks"), "move-breaks");
    let report = &output.report;
    assert_eq!(report.outcome, Outcome::Broken, "{report:#?}");
    assert!(report.passed, "the expectation is `broken`: {report:#?}");
    assert!(!report.transfer.sha256_match);
    assert!(report.transfer.bytes_received >= 4 << 20);
    assert!(report.transfer.bytes_received < 16 << 20);
    assert!(report.transfer.receiver_error.is_some(), "{report:#?}");
    assert!(report.transfer.sender_error.is_some(), "{report:#?}");
    assert_eq!(report.moves.len(), 1);
    let mv = &report.moves[0];
    assert_eq!(mv.from_address.as_deref(), Some("198.51.100.10"));
    assert_eq!(mv.to_address.as_deref(), Some("203.0.113.10"));
    assert!(mv.bytes_at_start >= 4 << 20);
    assert!(
        mv.started_s > 0.0 && mv.completed_s - mv.started_s >= 0.2,
        "gap: {mv:?}"
    );
    assert!(report.latencies.resume_after_last_move_s.is_none());
    // Both of b's uplinks were captured. The old connection never shows on the new
    // one: its source address is gone, so the kernel cannot send it anywhere.
    for capture in ["a-g1.pcap", "b-g2.pcap", "b-g3.pcap"] {
        assert!(
            report.captures.iter().any(|c| c == capture),
            "{:?}",
            report.captures
        );
    }
    let on_new_link = tcp_segments(&out.join("b-g3.pcap"));
    assert!(
        on_new_link.is_empty(),
        "TCP on b's new uplink: {on_new_link:?}"
    );
    assert!(!tcp_segments(&out.join("b-g2.pcap")).is_empty());
    // The move is in the timeline, before both ends gave up.
    let completed = output
        .timeline
        .iter()
        .find(|e| e.event == "move-completed")
        .expect("move-completed");
    let failures: Vec<_> = output
        .timeline
        .iter()
        .filter(|e| e.event == "failed")
        .collect();
    assert_eq!(failures.len(), 2, "{:?}", output.timeline);
    assert!(failures.iter().all(|f| f.t > completed.t));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn linux_behind_napt_completes_and_the_captures_show_the_translation() {
    if !root_or_skip("linux_behind_napt_completes_and_the_captures_show_the_translation") {
        return;
    }
    let (output, out) = run_scenario(&load("linux-behind-napt"), "behind-napt");
    assert_eq!(
        output.report.outcome,
        Outcome::Completed,
        "{:#?}",
        output.report
    );
    assert!(output.report.passed);
    let inside = syns(&out.join("a-home1.pcap"));
    let outside = syns(&out.join("napt1-g2.pcap"));
    let at_server = syns(&out.join("s-g1.pcap"));
    assert_eq!(inside, [(Ipv4Addr::new(192, 168, 1, 10), 5001)]);
    assert_eq!(outside, [(Ipv4Addr::new(198, 51, 100, 10), 5001)]);
    assert_eq!(at_server, outside);
    let _ = std::fs::remove_dir_all(out);
}

fn lab_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sustain-lab"));
    command.arg("--log").arg("error");
    command
}

#[test]
fn a_failed_expectation_makes_the_cli_exit_1() {
    if !root_or_skip("a_failed_expectation_makes_the_cli_exit_1") {
        return;
    }
    let out = out_dir("cli-fail");
    std::fs::create_dir_all(&out).expect("out");
    let text = std::fs::read_to_string(scenarios_dir().join("linux-baseline.toml"))
        .expect("baseline")
        .replace("outcome = \"completed\"", "outcome = \"broken\"")
        .replace("\"16MiB\"", "\"2MiB\"");
    let file = out.join("wrong-expectation.toml");
    std::fs::write(&file, text).expect("write");
    let output = lab_binary()
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(out.join("run"))
        .arg("--quiet")
        .output()
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL linux-baseline: outcome completed (expected broken)"),
        "{stdout}"
    );
    assert!(stdout.contains("timeline"), "{stdout}");
    let report = report_json(&out.join("run"));
    assert_eq!(report["passed"], false);
    assert_eq!(report["outcome"], "completed");

    // `list` names the shipped scenarios first on each line.
    let list = lab_binary()
        .arg("list")
        .arg("--scenarios")
        .arg(scenarios_dir())
        .output()
        .expect("list");
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        names.contains(&"linux-move-breaks".to_string()),
        "{names:?}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// Starts `sustain-lab up SCENARIO`; returns it and its run id once it is up.
fn start_up(scenario: &str) -> (std::process::Child, String) {
    let mut child = lab_binary()
        .arg("up")
        .arg(scenario)
        .arg("--scenarios")
        .arg(scenarios_dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = || rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    let mut saw_enter = false;
    let mut run = None;
    // Up to the end of the node table that follows "is up".
    while let Ok(line) = next() {
        saw_enter |= line.contains("ip netns exec sustain-");
        if let Some((_, rest)) = line.split_once(" is up (run ") {
            run = Some(rest.trim_end_matches(')').to_string());
        }
        if line.contains("tears it down") {
            break;
        }
    }
    match run {
        Some(run) if saw_enter => (child, run),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`sustain-lab up {scenario}` did not report its nodes (saw run {run:?})");
        }
    }
}

fn namespaces_of(run: &str) -> Vec<String> {
    netns::list()
        .expect("list")
        .into_iter()
        .filter(|name| RunId::parse_netns_name(name).is_some_and(|(id, _)| id.to_string() == run))
        .collect()
}

#[test]
fn down_tears_down_what_up_holds() {
    if !root_or_skip("down_tears_down_what_up_holds") {
        return;
    }
    let (mut child, run) = start_up("linux-baseline");
    assert_eq!(namespaces_of(&run).len(), 3, "core, a, b");
    let down = lab_binary()
        .arg("down")
        .arg("linux-baseline")
        .output()
        .expect("down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let status = child.wait().expect("up exits");
    assert_eq!(status.code(), Some(143), "SIGTERM teardown");
    assert!(namespaces_of(&run).is_empty());
}

#[test]
fn clean_after_a_sigkilled_up_leaves_nothing() {
    if !root_or_skip("clean_after_a_sigkilled_up_leaves_nothing") {
        return;
    }
    let (mut child, run) = start_up("paper-linux");
    // core, napt1, napt2, c, p, a, b.
    assert_eq!(namespaces_of(&run).len(), 7);
    let pid = child.id();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(!process_alive(pid));
    assert_eq!(
        namespaces_of(&run).len(),
        7,
        "a SIGKILLed run cannot tear down"
    );
    let clean = lab_binary().arg("clean").output().expect("clean");
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(
        namespaces_of(&run).is_empty(),
        "clean removed every namespace"
    );
    let listed = common::ip_netns_list();
    assert!(
        !listed.iter().any(|name| name.contains(&run)),
        "ip netns list: {listed:?}"
    );
    // The killed run's (empty) log directory is all that is left of it.
    let run_dir = std::env::temp_dir().join("sustain-lab").join(&run);
    let _ = std::fs::remove_dir(run_dir);
}

/// The `sustain` endpoint kind: sustain-host on both ends, behind a NAPT. Needs the
/// binary (`cargo build -p sustain`, which `just test` does first).
#[test]
fn sustain_endpoints_complete_behind_a_napt() {
    if !root_or_skip("sustain_endpoints_complete_behind_a_napt") {
        return;
    }
    if !sustain_host_or_skip("sustain_endpoints_complete_behind_a_napt") {
        return;
    }
    let mut scenario = load("linux-behind-napt");
    scenario.name = "sustain-behind-napt".into();
    scenario.transfer.kind = EndpointKind::Sustain;
    scenario.transfer.bytes = 2 << 20;
    let (output, out) = run_scenario(&scenario, "sustain-napt");
    let report = &output.report;
    assert_eq!(report.outcome, Outcome::Completed, "{report:#?}");
    assert!(report.transfer.sha256_match);
    // sustain-host's own events are in the timeline, and the server saw the NAPT.
    let connected: Vec<_> = output
        .timeline
        .iter()
        .filter(|e| e.event == "connected" && e.source == "s-sustain-sender")
        .collect();
    assert_eq!(connected.len(), 1, "{:?}", output.timeline);
    assert!(
        connected[0].detail["remote"]
            .as_str()
            .is_some_and(|remote| remote.starts_with("198.51.100.10:")),
        "{:?}",
        connected[0]
    );
    assert!(report.logs.iter().any(|log| log.ends_with(".stdout")));
    let _ = std::fs::remove_dir_all(out);
}

/// sustain-host is needed: skipped (a failure under `CI`) when it is not built.
fn sustain_host_or_skip(test: &str) -> bool {
    match sustain_lab::transfer::find_sustain_host(None) {
        Ok(_) => true,
        Err(err) => sustain_lab::skip(test, &err.to_string()),
    }
}

/// Each SYN (with or without ACK) in a pcap: its source, whether it is a SYN-ACK, and
/// the kinds of its TCP options.
fn syn_options(path: &Path) -> Vec<(Ipv4Addr, bool, Vec<u8>)> {
    let data = std::fs::read(path).expect("pcap");
    let mut found = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..(at + 16 + caplen).min(data.len())];
        at += 16 + caplen;
        if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
            continue;
        }
        let tcp = &frame[14 + usize::from(frame[14] & 0x0f) * 4..];
        let header_len = usize::from(tcp[12] >> 4) * 4;
        if tcp[13] & 0x02 == 0 || tcp.len() < header_len || header_len < 20 {
            continue;
        }
        let mut kinds = Vec::new();
        let mut options = &tcp[20..header_len];
        while let Some(&kind) = options.first() {
            match kind {
                0 => break,
                1 => options = &options[1..],
                _ => {
                    let len = usize::from(*options.get(1).unwrap_or(&0));
                    kinds.push(kind);
                    if len < 2 || len > options.len() {
                        break;
                    }
                    options = &options[len..];
                }
            }
        }
        found.push((
            Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
            tcp[13] & 0x10 != 0,
            kinds,
        ));
    }
    found
}

/// RFC 6994 shared experimental option kind: Migrate-Permit and the other sustain
/// options.
const EXPERIMENTAL_OPTION: u8 = 253;

#[test]
fn linux_peer_plain_completes_as_plain_tcp() {
    let test = "linux_peer_plain_completes_as_plain_tcp";
    if !root_or_skip(test) || !sustain_host_or_skip(test) {
        return;
    }
    let (output, out) = run_scenario(&load("linux-peer-plain"), "linux-peer-plain");
    let report = &output.report;
    assert_eq!(report.outcome, Outcome::Completed, "{report:#?}");
    assert!(report.passed, "{report:#?}");
    assert!(report.transfer.sha256_match);
    assert_eq!(report.transfer.bytes_received, 64 << 20);
    let json = report_json(&out);
    assert_eq!(json["transfer"]["kind"], "mixed");
    assert_eq!(json["transfer"]["sender_kind"], "sustain");
    assert_eq!(json["transfer"]["receiver_kind"], "linux");
    // Each end's events are in the timeline under its own kind.
    let started = output
        .timeline
        .iter()
        .find(|e| e.event == "transfer-started")
        .expect("transfer-started");
    assert_eq!(started.detail["sender_kind"], "sustain");
    assert_eq!(started.detail["receiver_kind"], "linux");
    for (source, event) in [
        ("b-sustain-sender", "connected"),
        ("a-linux-receiver", "connected"),
        ("a-linux-receiver", "finished"),
    ] {
        assert!(
            output
                .timeline
                .iter()
                .any(|e| e.source == source && e.event == event),
            "{source} {event}: {:?}",
            output.timeline
        );
    }
    // sustain-host offered Migrate-Permit; Linux's SYN-ACK ignored it: plain TCP.
    let syns = syn_options(&out.join("b-g2.pcap"));
    let offered: Vec<_> = syns.iter().filter(|(_, ack, _)| !ack).collect();
    let answered: Vec<_> = syns.iter().filter(|(_, ack, _)| *ack).collect();
    assert_eq!(offered.len(), 1, "{syns:?}");
    assert_eq!(offered[0].0, Ipv4Addr::new(198, 51, 100, 10));
    assert!(offered[0].2.contains(&EXPERIMENTAL_OPTION), "{syns:?}");
    assert!(!answered.is_empty(), "{syns:?}");
    assert!(
        answered
            .iter()
            .all(|(source, _, kinds)| *source == Ipv4Addr::new(192, 0, 2, 10)
                && !kinds.contains(&EXPERIMENTAL_OPTION)),
        "{syns:?}"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn linux_peer_move_breaks_and_the_sustain_end_fails_cleanly() {
    let test = "linux_peer_move_breaks_and_the_sustain_end_fails_cleanly";
    if !root_or_skip(test) || !sustain_host_or_skip(test) {
        return;
    }
    let (output, out) = run_scenario(&load("linux-peer-move-breaks"), "linux-peer-move");
    let report = &output.report;
    assert_eq!(report.outcome, Outcome::Broken, "{report:#?}");
    assert!(report.passed, "the expectation is `broken`: {report:#?}");
    assert_eq!(report.transfer.sender_kind, "sustain");
    assert_eq!(report.transfer.receiver_kind, "linux");
    assert!(!report.transfer.sha256_match);
    assert!(report.transfer.bytes_received >= 16 << 20, "{report:#?}");
    assert!(report.transfer.bytes_received < 64 << 20, "{report:#?}");
    assert_eq!(report.moves.len(), 1);
    assert_eq!(report.moves[0].to_address.as_deref(), Some("203.0.113.10"));
    // sustain-host ended by itself, with its reason: the local address of a plain-TCP
    // connection is gone. Not stopped by the lab.
    let sender_error = report.transfer.sender_error.as_deref().unwrap_or_default();
    assert!(
        sender_error.contains("local address lost (plain TCP cannot move)"),
        "{report:#?}"
    );
    assert!(
        !sender_error.contains("stopped by the lab"),
        "{sender_error}"
    );
    assert!(report.transfer.receiver_error.is_some(), "{report:#?}");
    assert!(
        render_summary(report).contains(&format!("sender    (sustain) {sender_error}")),
        "{}",
        render_summary(report)
    );
    // In the timeline: the address went, then the sustain end closed the connection
    // with that reason, after the move started.
    let move_started = output
        .timeline
        .iter()
        .find(|e| e.event == "move-started")
        .expect("move-started");
    let closed = output
        .timeline
        .iter()
        .find(|e| e.source == "b-sustain-sender" && e.event == "closed")
        .expect("the sustain end's closed event");
    assert!(
        closed.detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("local address lost")),
        "{closed:?}"
    );
    assert!(closed.t > move_started.t, "{closed:?} {move_started:?}");
    assert!(output
        .timeline
        .iter()
        .any(|e| e.source == "b-sustain-sender" && e.event == "addr-lost"));
    assert!(output
        .timeline
        .iter()
        .any(|e| e.source == "a-linux-receiver" && e.event == "failed"));
    let _ = std::fs::remove_dir_all(out);
}

/// The four (acceptor kind, connector kind) pairs, with either end accepting: each
/// end starts as its own kind and the transfer completes.
#[test]
fn every_pair_of_endpoint_kinds_completes() {
    use EndpointKind::{Linux, Sustain};
    let test = "every_pair_of_endpoint_kinds_completes";
    if !root_or_skip(test) || !sustain_host_or_skip(test) {
        return;
    }
    // (sender kind, receiver kind, who connects)
    for (sender, receiver, initiator) in [
        (Linux, Sustain, Initiator::Sender), // sustain accepts, linux connects
        (Sustain, Linux, Initiator::Sender), // linux accepts, sustain connects
        (Sustain, Linux, Initiator::Receiver), // sustain accepts, linux connects
        (Linux, Sustain, Initiator::Receiver), // linux accepts, sustain connects
        (Sustain, Sustain, Initiator::Receiver),
    ] {
        let mut scenario = load("linux-baseline");
        let label = format!(
            "{}-{}-by-{}",
            sender.name(),
            receiver.name(),
            match initiator {
                Initiator::Sender => "sender",
                Initiator::Receiver => "receiver",
            }
        );
        scenario.name = format!("pair-{label}");
        scenario.transfer.bytes = 2 << 20;
        scenario.transfer.sender_kind = Some(sender);
        scenario.transfer.receiver_kind = Some(receiver);
        scenario.transfer.initiator = initiator;
        let (output, out) = run_scenario(&scenario, &format!("pair-{label}"));
        let report = &output.report;
        assert_eq!(report.outcome, Outcome::Completed, "{label}: {report:#?}");
        assert!(report.transfer.sha256_match, "{label}");
        assert_eq!(report.transfer.sender_kind, sender.name(), "{label}");
        assert_eq!(report.transfer.receiver_kind, receiver.name(), "{label}");
        for (node, kind, role) in [("b", sender, "sender"), ("a", receiver, "receiver")] {
            let file = format!("{node}-{}-{role}.events.jsonl", kind.name());
            assert!(out.join(&file).is_file(), "{label}: {file}");
        }
        // The connection was opened by the connecting end, towards the acceptor's port.
        let connector = match initiator {
            Initiator::Sender => Ipv4Addr::new(198, 51, 100, 10),
            Initiator::Receiver => Ipv4Addr::new(192, 0, 2, 10),
        };
        assert_eq!(syns(&out.join("b-g2.pcap")), [(connector, 5001)], "{label}");
        let _ = std::fs::remove_dir_all(out);
    }
}

/// An interactive session's expected output is computed at load time: a huge
/// request count is an error naming the field, not an allocation.
#[test]
fn a_huge_request_count_is_refused() {
    let text = include_str!("../../conformance/scenarios/paper-continuation.toml")
        .replace("requests = 40", "requests = 4000000000");
    let (_, field, message) = located(&text);
    assert_eq!(field, "transfer.requests", "{message}");
    assert!(message.contains("at most 100000"), "{message}");
}
