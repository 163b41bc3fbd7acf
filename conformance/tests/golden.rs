//! Without root: the committed golden excerpts (pcaps/<scenario>/) still read as the
//! committed snapshots. A change to the normalizer that alters any transcript fails
//! here, on any machine, before a lab run would.

use std::path::Path;

use sustain_conformance::golden;
use sustain_lab::scenario::Scenario;

#[test]
fn golden_excerpts_read_as_their_snapshots() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inside the repository")
        .to_path_buf();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo.join("conformance/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let mut compared = 0;
    settings.bind(|| {
        insta::glob!("../scenarios", "*.toml", |file| {
            let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
            let dir = repo.join("pcaps").join(&scenario.name);
            if !dir.is_dir() {
                // The root test fails on this in CI; here there is nothing to read.
                eprintln!("no golden captures for {} yet", scenario.name);
                return;
            }
            let transcripts = golden::transcripts_of(&dir)
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            for (point, transcript) in &transcripts {
                // As in tests/scenarios.rs: no snapshot for an empty transcript
                // on the mobility server's or the proxy's own link.
                if transcript.lines.is_empty() && scenario.is_service_point(point) {
                    continue;
                }
                insta::assert_snapshot!(point.as_str(), transcript.text());
                compared += 1;
            }
        });
    });
    assert!(compared >= 50, "only {compared} capture points compared");
}
