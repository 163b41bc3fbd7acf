//! sustain-host's argument errors: a keep-alive of 0 seconds (a probe storm, or
//! a connection that can never idle) and a buffer that is not a size between
//! 64 KiB and 1 GiB are refused in one clear line, exit 2, before anything is
//! opened.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sustain-host"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zero_second_keepalives_are_refused() {
    for flag in ["--keepalive-secs", "--keepalive-interval-secs"] {
        let (code, err) = run(&[
            "listen",
            "--bind",
            "127.0.0.1:5001",
            flag,
            "0",
            "--recv-file",
            "/dev/null",
        ]);
        assert_eq!(code, Some(2), "{flag}: {err}");
        assert!(
            err.contains(flag) && err.contains("0 is not in 1.."),
            "{flag}: {err}"
        );
    }
}

#[test]
fn buffers_must_be_sizes_between_64_kib_and_1_gib() {
    for (flag, value, says) in [
        ("--recv-buffer", "16 parsecs", "unknown unit"),
        ("--send-buffer", "lots", "is not a size"),
        ("--recv-buffer", "1000", "between 64KiB and 1GiB"),
        ("--send-buffer", "2GiB", "between 64KiB and 1GiB"),
    ] {
        let (code, err) = run(&[
            "listen",
            "--bind",
            "127.0.0.1:5001",
            flag,
            value,
            "--recv-file",
            "/dev/null",
        ]);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
}
