//! Names of runs, namespaces and interfaces, and the MAC addresses derived from them.
//!
//! A namespace is named `sustain-<run-id>-<node>` and a run id is `<pid>-<4 hex digits>`,
//! so `clean` can tell from the name alone which process owned a namespace and whether
//! that process is still alive.

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

use crate::error::{LabError, Result};

/// Every namespace this crate creates for a lab starts with this.
pub const NETNS_PREFIX: &str = "sustain-";

/// Environment variable set on every process the lab starts, holding the run id;
/// `clean` uses it to recognise our processes inside stale namespaces.
pub const RUN_ENV: &str = "SUSTAIN_LAB_RUN";

/// Linux `IFNAMSIZ` minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Longest node name we accept; keeps namespace names readable.
pub const MAX_NODE_LEN: usize = 32;

/// Identifies one lab run: the owning process id plus a per-process unique suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunId {
    pid: u32,
    suffix: u16,
}

impl RunId {
    /// A run id unique among all live runs: the pid separates processes and the suffix
    /// (random start, then counting) separates labs within one process.
    pub fn generate() -> RunId {
        static NEXT: OnceLock<AtomicU16> = OnceLock::new();
        let next = NEXT.get_or_init(|| AtomicU16::new(random_u16()));
        RunId {
            pid: std::process::id(),
            suffix: next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Process that owns the run.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Parses the run id out of a namespace name `sustain-<pid>-<hex4>-<node>`,
    /// returning the run id and the node name.
    pub fn parse_netns_name(netns: &str) -> Option<(RunId, &str)> {
        let rest = netns.strip_prefix(NETNS_PREFIX)?;
        let mut parts = rest.splitn(3, '-');
        let pid = parts.next()?;
        let suffix = parts.next()?;
        let node = parts.next()?;
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || suffix.len() != 4 {
            return None;
        }
        let pid = pid.parse().ok()?;
        let suffix = u16::from_str_radix(suffix, 16).ok()?;
        if node.is_empty() {
            return None;
        }
        Some((RunId { pid, suffix }, node))
    }

    /// The namespace name of `node` in this run.
    pub fn netns_name(&self, node: &str) -> String {
        format!("{NETNS_PREFIX}{self}-{node}")
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:04x}", self.pid, self.suffix)
    }
}

fn random_u16() -> u16 {
    let mut buf = [0u8; 2];
    if getrandom::fill(&mut buf).is_ok() {
        u16::from_ne_bytes(buf)
    } else {
        // getrandom cannot fail for 2 bytes on a booted kernel; the time is a fine
        // fallback because uniqueness within the process comes from counting.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16)
    }
}

/// Node names become part of namespace names: lower-case letters, digits and `-`,
/// starting with a letter.
pub fn validate_node_name(node: &str) -> Result<()> {
    let invalid = |reason| {
        Err(LabError::InvalidName {
            name: node.to_string(),
            reason,
        })
    };
    if node.is_empty() || node.len() > MAX_NODE_LEN {
        return invalid("node names are 1 to 32 characters");
    }
    if !node.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("node names start with a lower-case letter");
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("node names use only a-z, 0-9 and '-'");
    }
    Ok(())
}

/// Namespace names end up as file names under /run/netns.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(LabError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return invalid("namespace names are 1 to 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return invalid("namespace names do not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return invalid("namespace names use only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Interface names must fit `IFNAMSIZ` and be acceptable to `dev_valid_name`.
pub fn validate_ifname(ifname: &str) -> Result<()> {
    let invalid = |reason| {
        Err(LabError::InvalidName {
            name: ifname.to_string(),
            reason,
        })
    };
    if ifname.is_empty() || ifname.len() > MAX_IFNAME_LEN {
        return invalid("interface names are 1 to 15 bytes (IFNAMSIZ)");
    }
    if ifname == "." || ifname == ".." {
        return invalid("'.' and '..' are not interface names");
    }
    if !ifname
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
    {
        return invalid("interface names have no spaces, '/' or ':'");
    }
    Ok(())
}

/// A locally administered unicast MAC derived from the node and interface names, so
/// captures of the same topology show the same addresses in every run.
pub fn derive_mac(node: &str, ifname: &str) -> [u8; 6] {
    // FNV-1a 64: stable across Rust versions, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0u8]).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = hash.to_be_bytes();
    // 0x02: locally administered (bit 1 set), unicast (bit 0 clear).
    [0x02, h[0], h[1], h[2], h[3], h[4] ^ h[5] ^ h[6] ^ h[7]]
}

/// Formats a MAC the way `ip link` prints it.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_name_round_trips_through_parse() {
        let run = RunId {
            pid: 4242,
            suffix: 0x0abc,
        };
        let name = run.netns_name("router-1");
        assert_eq!(name, "sustain-4242-0abc-router-1");
        let (parsed, node) = RunId::parse_netns_name(&name).expect("parses");
        assert_eq!(parsed, run);
        assert_eq!(node, "router-1");
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "othertest-1",
            "sustain-",
            "sustain-devtest",
            "sustain-12-zzzz-a",
            "sustain-12-abc-a",
            "sustain-x1-abcd-a",
            "sustain-12-abcd-",
        ] {
            assert!(RunId::parse_netns_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn generated_run_ids_differ_within_a_process() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert_ne!(a, b);
        assert_eq!(a.pid(), std::process::id());
    }

    #[test]
    fn macs_are_deterministic_local_unicast_and_distinct() {
        let a = derive_mac("a", "a-r");
        assert_eq!(a, derive_mac("a", "a-r"));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_ne!(a, derive_mac("r", "r-a"));
        assert_ne!(derive_mac("ab", "c"), derive_mac("a", "bc"));
    }

    #[test]
    fn interface_names_are_limited_to_ifnamsiz() {
        assert!(validate_ifname("fifteen-chars-x").is_ok());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("").is_err());
    }

    #[test]
    fn node_names_are_restricted() {
        assert!(validate_node_name("r1").is_ok());
        assert!(validate_node_name("napt-a").is_ok());
        assert!(validate_node_name("R").is_err());
        assert!(validate_node_name("1r").is_err());
        assert!(validate_node_name("a_b").is_err());
    }
}
