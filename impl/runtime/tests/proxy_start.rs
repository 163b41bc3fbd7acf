//! sustain-proxy's start-up errors: a missing or malformed relay secret
//! file and a bad port range are reported in one clear line and exit 1,
//! before any privileged resource (raw socket, iptables) is touched.

use std::process::Command;

fn run(secret: &std::path::Path, ports: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sustain-proxy"))
        .args([
            "--bind",
            "192.0.2.1",
            "--control",
            "127.0.0.1:0",
            "--ports",
            ports,
        ])
        .arg("--relay-secret")
        .arg(secret)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_or_malformed_secret_and_bad_ports_are_clear_start_up_errors() {
    let dir = std::env::temp_dir().join(format!("sustain-proxy-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-secret");
    let (ok, err) = run(&missing, "40000-40009");
    assert!(!ok);
    assert!(
        err.contains("cannot read the relay secret file") && err.contains("no-such-secret"),
        "{err}"
    );

    let malformed = dir.join("malformed");
    std::fs::write(&malformed, "not hex at all\n").unwrap();
    let (ok, err) = run(&malformed, "40000-40009");
    assert!(!ok);
    assert!(
        err.contains("is malformed") && err.contains("64 hex digits"),
        "{err}"
    );

    let zero = dir.join("zero");
    std::fs::write(&zero, "0".repeat(64)).unwrap();
    let (ok, err) = run(&zero, "40000-40009");
    assert!(!ok);
    assert!(err.contains("all zeros"), "{err}");

    let good = dir.join("good");
    std::fs::write(&good, format!("{}\n", "5a".repeat(32))).unwrap();
    let (ok, err) = run(&good, "40009-40000");
    assert!(!ok);
    assert!(err.contains("--ports must be LO-HI"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
