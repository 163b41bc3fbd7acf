//! The kernel answers segments for ports no kernel socket owns with RST.
//! Our TCP lives in userspace, so every segment it receives would also draw
//! a kernel RST. The guard installs one narrow rule per port we own:
//!
//! ```text
//! iptables -I OUTPUT -p tcp --sport PORT --tcp-flags RST RST \
//!          -m mark ! --mark SUSTAIN_MARK -m comment --comment sustain-host:PID -j DROP
//! ```
//!
//! Our own RSTs carry SO_MARK = SUSTAIN_MARK and pass. Rules are removed on
//! drop (normal exit, error, SIGINT/SIGTERM handled by the binary); rules left
//! by a SIGKILLed process are swept at the next start (their pid is dead).

use std::io;
use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RstGuardError {
    #[error("iptables is not installed (apt-get install iptables): {0}")]
    NotInstalled(io::Error),
    #[error("iptables {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Owns the RST-suppression rules of this process.
pub struct RstGuard {
    mark: u32,
    tag: String,
    ports: Vec<u16>,
    /// Port ranges with one rule each (`--sport LO:HI`): the proxy's relay
    /// ports, guarded once at start-up.
    ranges: Vec<(u16, u16)>,
}

fn iptables(args: &[String]) -> Result<String, RstGuardError> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(RstGuardError::NotInstalled)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RstGuardError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn rule_spec(port: u16, mark: u32, tag: &str) -> Vec<String> {
    rule_spec_for(&port.to_string(), mark, tag)
}

fn rule_spec_for(sport: &str, mark: u32, tag: &str) -> Vec<String> {
    [
        "-p",
        "tcp",
        "--sport",
        sport,
        "--tcp-flags",
        "RST",
        "RST",
        "-m",
        "mark",
        "!",
        "--mark",
        &format!("{mark:#x}"),
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl RstGuard {
    /// A guard with no ports yet; sweeps rules left by dead sustain-host
    /// processes first.
    pub fn new(mark: u32) -> Result<RstGuard, RstGuardError> {
        sweep_stale()?;
        Ok(RstGuard {
            mark,
            tag: format!("sustain-host:{}", std::process::id()),
            ports: Vec::new(),
            ranges: Vec::new(),
        })
    }

    /// Suppress kernel RSTs from every port in `lo..=hi` with one rule
    /// (one iptables run, however many ports).
    pub fn add_range(&mut self, lo: u16, hi: u16) -> Result<(), RstGuardError> {
        if self.ranges.contains(&(lo, hi)) {
            return Ok(());
        }
        let mut args = vec!["-I".to_string(), "OUTPUT".to_string()];
        args.extend(rule_spec_for(&format!("{lo}:{hi}"), self.mark, &self.tag));
        iptables(&args)?;
        self.ranges.push((lo, hi));
        Ok(())
    }

    /// Whether a range rule covers `port`.
    pub fn covers(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// Suppress kernel RSTs from `port`.
    pub fn add_port(&mut self, port: u16) -> Result<(), RstGuardError> {
        if self.ports.contains(&port) {
            return Ok(());
        }
        let mut args = vec!["-I".to_string(), "OUTPUT".to_string()];
        args.extend(rule_spec(port, self.mark, &self.tag));
        iptables(&args)?;
        self.ports.push(port);
        Ok(())
    }

    /// Stop suppressing kernel RSTs from `port` (the port was given up).
    pub fn remove_port(&mut self, port: u16) {
        let Some(i) = self.ports.iter().position(|p| *p == port) else {
            return;
        };
        self.ports.swap_remove(i);
        let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
        args.extend(rule_spec(port, self.mark, &self.tag));
        if let Err(e) = iptables(&args) {
            tracing::warn!("could not remove RST guard rule for port {port}: {e}");
        }
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Remove every rule this guard installed (also done on drop).
    pub fn remove_all(&mut self) {
        for port in std::mem::take(&mut self.ports) {
            let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
            args.extend(rule_spec(port, self.mark, &self.tag));
            if let Err(e) = iptables(&args) {
                tracing::warn!("could not remove RST guard rule for port {port}: {e}");
            }
        }
        for (lo, hi) in std::mem::take(&mut self.ranges) {
            let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
            args.extend(rule_spec_for(&format!("{lo}:{hi}"), self.mark, &self.tag));
            if let Err(e) = iptables(&args) {
                tracing::warn!("could not remove RST guard rule for ports {lo}-{hi}: {e}");
            }
        }
    }
}

impl Drop for RstGuard {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Delete `sustain-host:PID` rules whose process no longer exists.
fn sweep_stale() -> Result<(), RstGuardError> {
    let listing = iptables(&["-S".into(), "OUTPUT".into()])?;
    for line in listing.lines() {
        let Some(pid) = line
            .split("--comment ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|c| c.trim_matches('"'))
            .and_then(|c| c.strip_prefix("sustain-host:"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `-S` prints "-A OUTPUT <spec>": the same spec deletes the rule.
        let Some(spec) = line.strip_prefix("-A OUTPUT ") else {
            continue;
        };
        let mut args = vec!["-D".to_string(), "OUTPUT".to_string()];
        args.extend(split_rule(spec));
        match iptables(&args) {
            Ok(_) => tracing::info!("removed stale RST guard rule of dead pid {pid}"),
            Err(e) => tracing::warn!("could not remove stale rule of pid {pid}: {e}"),
        }
    }
    Ok(())
}

/// Splits an `iptables -S` rule into words, honouring double quotes.
fn split_rule(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rule_honours_quotes() {
        let w = split_rule(r#"-p tcp -m comment --comment "a b" -j DROP"#);
        assert_eq!(
            w,
            [
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "a b",
                "-j",
                "DROP"
            ]
        );
    }

    #[test]
    fn rule_spec_is_narrow() {
        let spec = rule_spec(5001, 0x53757354, "sustain-host:7").join(" ");
        assert_eq!(
            spec,
            "-p tcp --sport 5001 --tcp-flags RST RST -m mark ! --mark 0x53757354 \
             -m comment --comment sustain-host:7 -j DROP"
        );
    }
}
