//! Symbolic names for what a capture shows: the topology's node names for addresses,
//! and the ports that are part of a scenario (the transfer's port) shown as numbers.
//! The lab writes a run's names to `names.json` next to its captures.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io_error, ConformanceError, Result};

/// The file the lab writes next to a run's captures, and keeps in a golden directory.
pub const NAMES_FILE: &str = "names.json";

/// Addresses to node names, and the ports shown as numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Address (dotted quad) to the name of the node that has (or had) it.
    pub addresses: BTreeMap<String, String>,
    /// Ports shown as numbers: fixed by the scenario, so equal in every run. Every
    /// other port is shown symbolically (`p1`, `p2`, ... in order of appearance).
    pub ports: BTreeSet<u16>,
    /// Each node's capture points (capture file names without extension).
    #[serde(default)]
    pub points: BTreeMap<String, Vec<String>>,
    /// Ports of control sessions (the mobility server's): kernel TCP between a
    /// host and the server, left out of transcripts. They are not what a
    /// transcript is about (the sustained connection's handshakes), and their
    /// segments interleave with it differently in every run.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub control_ports: BTreeSet<u16>,
    /// The run's relay secret (64 hex digits, PROTOCOL.md §4.7), when it has a
    /// proxy: Relay-Ticket MACs are then verified like Migrate's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_secret: Option<String>,
}

impl Names {
    pub fn add_address(&mut self, address: Ipv4Addr, name: &str) {
        self.addresses.insert(address.to_string(), name.to_string());
    }

    pub fn name_of(&self, address: Ipv4Addr) -> Option<&str> {
        self.addresses.get(&address.to_string()).map(String::as_str)
    }

    pub fn load(path: &Path) -> Result<Names> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let names: Names = serde_json::from_str(&text).map_err(|e| ConformanceError::BadNames {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        for address in names.addresses.keys() {
            address
                .parse::<Ipv4Addr>()
                .map_err(|_| ConformanceError::BadNames {
                    path: path.to_path_buf(),
                    reason: format!("{address:?} is not an IPv4 address"),
                })?;
        }
        Ok(names)
    }

    /// The names file in `dir`, or no names (every address then gets a symbolic name).
    pub fn load_for_dir(dir: &Path) -> Result<Names> {
        let path = dir.join(NAMES_FILE);
        if path.exists() {
            Names::load(&path)
        } else {
            Ok(Names::default())
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ConformanceError::BadNames {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(io_error(path))
    }
}
