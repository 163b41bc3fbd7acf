//! `sustain_lab::skip`: a test that cannot run here is recorded and visible, and
//! under `CI` it fails instead. One test in its own binary: it sets environment
//! variables, which no other test may see change.

use std::panic;

#[test]
fn a_skip_is_recorded_and_fails_under_ci() {
    let log = std::env::temp_dir().join(format!("sustain-skip-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    std::env::set_var(sustain_lab::SKIP_LOG_ENV, &log);

    std::env::remove_var("CI");
    assert!(!sustain_lab::skip("first", "no tool"));
    std::env::set_var("CI", "false");
    assert!(!sustain_lab::skip("second", "no root"));
    assert_eq!(
        std::fs::read_to_string(&log).expect("the skip log"),
        "first: no tool\nsecond: no root\n"
    );

    std::env::set_var("CI", "true");
    let failed = panic::catch_unwind(|| sustain_lab::skip("third", "no tool"));
    let message = failed.expect_err("a skip under CI fails");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("third cannot run: no tool"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&log)
            .expect("the skip log")
            .lines()
            .count(),
        2,
        "a failed skip is not a skip"
    );
    std::env::remove_var("CI");
    let _ = std::fs::remove_file(&log);
}
