//! The kernel feature probe on the kernel the tests run on (root): every feature
//! the lab uses is there (the lab's other tests depend on them), the probe leaves no
//! namespace behind, and `check` answers the same twice.

use sustain_lab::features::{self, Feature};
use sustain_lab::{netns, root_or_skip, NETNS_PREFIX};

/// This process's lab namespaces (names start with `sustain-<pid>-`).
fn own_namespaces() -> Vec<String> {
    let own = format!("{NETNS_PREFIX}{}-", std::process::id());
    netns::list()
        .expect("listing namespaces")
        .into_iter()
        .filter(|name| name.starts_with(&own))
        .collect()
}

#[test]
fn every_feature_the_lab_uses_is_there_and_the_probe_cleans_up() {
    if !root_or_skip("every_feature_the_lab_uses_is_there_and_the_probe_cleans_up") {
        return;
    }
    let missing = features::probe_all().expect("probing");
    assert!(
        missing.is_empty(),
        "{}",
        features::missing_error(&missing, features::in_container())
    );
    assert_eq!(own_namespaces(), Vec::<String>::new());
    features::check().expect("first check");
    features::check().expect("second check (cached)");
    assert_eq!(Feature::ALL.len(), 4);
}
