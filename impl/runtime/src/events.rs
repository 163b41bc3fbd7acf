//! The `--events` file: one JSON object per line, appended, each with a
//! wall-clock `time` (Unix seconds, float) and the monotonic `t` since the
//! host started, so the lab can line events up with captures.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Map, Value};
use sustain_core::time::Instant;

use crate::clock::Clock;

/// The `--events` log: appends one JSON object per event to a file, or
/// discards events when no file was given.
pub struct EventLog {
    file: Option<File>,
}

impl EventLog {
    /// An event log appending to `path`, or a no-op log for `None`.
    pub fn open(path: Option<&Path>) -> io::Result<EventLog> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(EventLog { file })
    }

    /// Appends `{"time":…,"t":…,"event":name, …fields}`.
    pub fn record(&mut self, now: Instant, name: &str, fields: Value) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut obj = Map::new();
        obj.insert("time".into(), json!(Clock::unix_seconds()));
        obj.insert("t".into(), json!(now.total_micros() as f64 / 1e6));
        obj.insert("event".into(), json!(name));
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let mut line = serde_json::to_vec(&Value::Object(obj))?;
        line.push(b'\n');
        // One write per line so concurrent readers never see half a line.
        file.write_all(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_json_object_per_line() {
        let dir = std::env::temp_dir().join(format!("sustain-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut log = EventLog::open(Some(&path)).unwrap();
        log.record(Instant::from_millis(1500), "connected", json!({"conn": 1}))
            .unwrap();
        log.record(
            Instant::from_millis(2000),
            "closed",
            json!({"reason": "normal"}),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "connected");
        assert_eq!(lines[0]["conn"], 1);
        assert_eq!(lines[0]["t"], 1.5);
        assert_eq!(lines[1]["reason"], "normal");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
