//! Network sysctls through /proc/sys.
//!
//! /proc/sys/net resolves against the network namespace of the thread that opens the
//! file, so these must run on a thread inside the namespace.

use std::fs;
use std::path::PathBuf;

use crate::error::{IoContext, LabError, Result};

/// Path of a dotted sysctl key (`net.ipv4.ip_forward`) under /proc/sys.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    let valid = key.starts_with("net.")
        && key
            .split('.')
            .all(|part| !part.is_empty() && part != ".." && !part.contains('/'));
    if !valid {
        return Err(LabError::InvalidValue(format!(
            "{key:?} is not a net.* sysctl key"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Writes a `net.*` sysctl in the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    fs::write(&path, value).context(|| format!("writing {value:?} to {}", path.display()))
}

/// Reads a `net.*` sysctl in the calling thread's namespace (trailing newline removed).
pub fn read(key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    let value = fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
    Ok(value.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_paths_and_escapes_are_refused() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/all/rp_filter")
        );
        assert!(sysctl_path("kernel.panic").is_err());
        assert!(sysctl_path("net..ipv4").is_err());
        assert!(sysctl_path("net.ipv4/../../x").is_err());
    }
}
