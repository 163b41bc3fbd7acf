//! Differences between transcripts, as unified diffs.

use std::collections::BTreeMap;

use similar::TextDiff;

use crate::transcript::Transcript;

/// A unified diff of two texts (3 lines of context), or `None` when they are equal.
pub fn unified(old_label: &str, old: &str, new_label: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    Some(
        TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(old_label, new_label)
            .to_string(),
    )
}

/// How one capture point of two sets compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointDiff {
    /// Only the expected set has this capture point.
    Missing(String),
    /// Only the actual set has it.
    Unexpected(String),
    /// Both have it, with different transcripts: the unified diff.
    Differs(String, String),
}

impl std::fmt::Display for PointDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointDiff::Missing(point) => write!(f, "capture point {point}: missing from the run"),
            PointDiff::Unexpected(point) => {
                write!(f, "capture point {point}: not in the expected set")
            }
            PointDiff::Differs(point, diff) => {
                write!(f, "capture point {point}: transcripts differ\n{diff}")
            }
        }
    }
}

/// Compares two sets of transcripts by capture point.
pub fn compare(
    expected_label: &str,
    expected: &BTreeMap<String, Transcript>,
    actual_label: &str,
    actual: &BTreeMap<String, Transcript>,
) -> Vec<PointDiff> {
    let mut diffs = Vec::new();
    for (point, want) in expected {
        match actual.get(point) {
            None => diffs.push(PointDiff::Missing(point.clone())),
            Some(got) => {
                if let Some(diff) = unified(
                    &format!("{expected_label}/{point}"),
                    &want.text(),
                    &format!("{actual_label}/{point}"),
                    &got.text(),
                ) {
                    diffs.push(PointDiff::Differs(point.clone(), diff));
                }
            }
        }
    }
    for point in actual.keys() {
        if !expected.contains_key(point) {
            diffs.push(PointDiff::Unexpected(point.clone()));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff_and_a_changed_line_shows_both_sides() {
        assert_eq!(unified("a", "x\ny\n", "b", "x\ny\n"), None);
        let diff = unified("golden", "x\ny\nz\n", "fresh", "x\nY\nz\n").unwrap();
        assert!(diff.contains("--- golden"), "{diff}");
        assert!(diff.contains("+++ fresh"), "{diff}");
        assert!(diff.contains("-y\n") && diff.contains("+Y\n"), "{diff}");
    }
}
