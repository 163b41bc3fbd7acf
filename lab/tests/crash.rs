//! Cleanup when a run cannot tear down by itself: SIGKILL (then `clean`), SIGINT and
//! SIGTERM. Each test runs a lab in a child process (this test binary, re-executed to
//! run one of the ignored `helper_*` functions) so that the crash is a real one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ip_netns_list, process_alive};
use sustain_lab::{clean, netns, root_or_skip, Lab, Netns, PathLab, PathNode};

const HELPER_ENV: &str = "SUSTAIN_LAB_TEST_HELPER";

/// What a helper reported before waiting to be killed.
struct HelperRun {
    child: Child,
    namespaces: Vec<String>,
    sleeper_pid: u32,
    run_dir: std::path::PathBuf,
}

fn start_helper(helper: &str) -> HelperRun {
    let exe = std::env::current_exe().expect("test executable");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            helper,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, helper)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start helper");
    let stdout = child.stdout.take().expect("helper stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut namespaces = Vec::new();
    let mut sleeper_pid = None;
    let mut run_dir = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("helper reports READY");
        // libtest prints `test <name> ... ` without a newline before the test runs,
        // so a report may start mid-line.
        if let Some((_, name)) = line.split_once("NETNS ") {
            namespaces.push(name.to_string());
        } else if let Some((_, pid)) = line.split_once("SLEEPER ") {
            sleeper_pid = Some(pid.parse().expect("pid"));
        } else if let Some((_, dir)) = line.split_once("RUNDIR ") {
            run_dir = Some(dir.into());
        } else if line.ends_with("READY") {
            break;
        }
    }
    HelperRun {
        child,
        namespaces,
        sleeper_pid: sleeper_pid.expect("helper reported its sleeper"),
        run_dir: run_dir.expect("helper reported its run directory"),
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait helper") {
            return status;
        }
        assert!(Instant::now() < deadline, "helper did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run by `crash_leftovers_are_cleaned` in a child process: a lab with a process in
/// it, forgotten (never torn down), then the process is SIGKILLed.
#[test]
#[ignore = "helper: runs in a child process of crash_leftovers_are_cleaned"]
fn helper_crashed_run() {
    if std::env::var(HELPER_ENV).as_deref() != Ok("helper_crashed_run") {
        eprintln!("helper_crashed_run only runs under crash_leftovers_are_cleaned");
        return;
    }
    let lab = Lab::new().expect("lab");
    let netns = lab.add_node("crashed").expect("node");
    let mut sleep = Command::new("sleep");
    sleep.arg("1000");
    let sleeper = lab.spawn("crashed", sleep).expect("sleep");
    println!("NETNS {}", netns.name());
    println!("SLEEPER {}", sleeper.pid());
    println!("RUNDIR {}", lab.run_dir().display());
    println!("READY");
    std::mem::forget(netns);
    std::mem::forget(lab);
    std::thread::sleep(Duration::from_secs(120));
}

/// Run by the signal tests in a child process: a full PathLab with a process in B,
/// waiting for a signal.
#[test]
#[ignore = "helper: runs in a child process of the signal tests"]
fn helper_signalled_run() {
    if std::env::var(HELPER_ENV).as_deref() != Ok("helper_signalled_run") {
        eprintln!("helper_signalled_run only runs under the signal tests");
        return;
    }
    let lab = PathLab::new().expect("path lab");
    for node in [PathNode::A, PathNode::R, PathNode::B] {
        println!("NETNS {}", lab.netns(node).expect("netns").name());
    }
    let mut sleep = Command::new("sleep");
    sleep.arg("1000");
    let sleeper = lab.spawn_in(PathNode::B, sleep).expect("sleep");
    println!("SLEEPER {}", sleeper.pid());
    println!("RUNDIR {}", lab.lab().run_dir().display());
    println!("READY");
    std::thread::sleep(Duration::from_secs(120));
    drop(lab);
}

#[test]
fn crash_leftovers_are_cleaned_and_nothing_else() {
    if !root_or_skip("crash_leftovers_are_cleaned_and_nothing_else") {
        return;
    }
    let mut crashed = start_helper("helper_crashed_run");
    crashed.child.kill().expect("SIGKILL the helper");
    wait_child(&mut crashed.child, Duration::from_secs(10));
    let stale = crashed.namespaces[0].clone();
    assert!(
        netns::list().unwrap().contains(&stale),
        "crash left {stale}"
    );
    assert!(
        process_alive(crashed.sleeper_pid),
        "crash left its sleeper running"
    );

    // Things clean must not touch: a namespace without our prefix, and the
    // namespace of a run that is alive (this process).
    let foreign =
        Netns::create(&format!("othertest-{}", std::process::id())).expect("foreign netns");
    let live = Lab::new().expect("live lab");
    let live_netns = live.add_node("live").expect("live node");

    let report = clean().expect("clean");

    assert!(report.removed.contains(&stale), "{report:?}");
    assert!(!netns::list().unwrap().contains(&stale));
    assert!(!ip_netns_list().contains(&stale));
    assert!(
        report
            .killed
            .iter()
            .any(|p| p.pid == crashed.sleeper_pid && p.netns == stale),
        "{report:?}"
    );
    assert!(
        !process_alive(crashed.sleeper_pid),
        "sleeper survived clean"
    );

    let names = netns::list().unwrap();
    assert!(
        names.contains(&foreign.name().to_string()),
        "foreign namespace kept"
    );
    assert!(
        names.contains(&live_netns.name().to_string()),
        "live run kept"
    );
    assert!(report
        .skipped_live
        .iter()
        .any(|(name, pid)| name == live_netns.name() && *pid == std::process::id()));
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    drop(live_netns);
    drop(live);
    let foreign_name = foreign.name().to_string();
    drop(foreign);
    assert!(!netns::list().unwrap().contains(&foreign_name));
    // A crashed run's logs stay for diagnosis; clean does not touch them.
    assert!(crashed.run_dir.is_dir());
    std::fs::remove_dir_all(&crashed.run_dir).expect("remove the crashed run's logs");
}

fn signal_tears_down(signal: libc::c_int, expected_code: i32) {
    // Killed (SIGKILL) if an assertion fails before the signal, so no helper lingers.
    struct KillOnUnwind(u32);
    impl Drop for KillOnUnwind {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // SAFETY: our own child; at worst it already exited and is unreaped.
                unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
    let mut run = start_helper("helper_signalled_run");
    let _guard = KillOnUnwind(run.child.id());
    assert_eq!(run.namespaces.len(), 3);
    let names = netns::list().unwrap();
    for name in &run.namespaces {
        assert!(names.contains(name), "{name} exists while the helper runs");
    }
    // SAFETY: signalling our own unreaped child.
    assert_eq!(
        unsafe { libc::kill(run.child.id() as libc::pid_t, signal) },
        0
    );
    let status = wait_child(&mut run.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(expected_code), "{status:?}");
    let names = netns::list().unwrap();
    let ip_names = ip_netns_list();
    for name in &run.namespaces {
        assert!(!names.contains(name), "{name} left in /run/netns");
        assert!(!ip_names.contains(name), "{name} left in ip netns list");
    }
    assert!(
        !process_alive(run.sleeper_pid),
        "sleeper survived the signal"
    );
}

#[test]
fn sigint_tears_down_and_exits_130() {
    if !root_or_skip("sigint_tears_down_and_exits_130") {
        return;
    }
    signal_tears_down(libc::SIGINT, 130);
}

#[test]
fn sigterm_tears_down_and_exits_143() {
    if !root_or_skip("sigterm_tears_down_and_exits_143") {
        return;
    }
    signal_tears_down(libc::SIGTERM, 143);
}
