//! The kernel features a lab needs, checked once per process before the first
//! topology is built, so that a missing one stops the run with its name and module.
//!
//! On a VM the kernel loads a module when a lab first asks for it. Inside a container
//! the kernel is the host's and modules load only where the host allows it, and a
//! missing feature does not always fail where it is used: a delay line's rule has
//! `--queue-bypass`, so without `nfnetlink_queue` packets would pass undelayed and a
//! scenario would miss its budgets, or pass for the wrong reason. So each feature is
//! used once, as the lab uses it, in a scratch namespace (node `probe` of a lab of
//! its own, removed with its rules like any lab's):
//!
//! | feature    | module(s)                                  | used by                 |
//! |------------|--------------------------------------------|-------------------------|
//! | AF_PACKET  | `af_packet`                                | captures ([`Capture`])  |
//! | NFQUEUE    | `nfnetlink_queue`, `xt_NFQUEUE`            | delay lines             |
//! | tbf        | `sch_tbf`                                  | rate limits             |
//! | MASQUERADE | `nf_nat`, `xt_MASQUERADE`, `nft_compat`    | NAPT routers            |
//!
//! [`Capture`]: crate::Capture

use std::fmt;
use std::io;
use std::sync::Mutex;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

use crate::delay::{self, DelayConfig};
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::shaping::{set_rate_limit, RateLimit};

/// The node of the scratch namespace the probes run in.
const PROBE_NODE: &str = "probe";

/// A kernel feature the lab relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Packet sockets: every capture.
    AfPacket,
    /// NFQUEUE: the queue (netlink side) and the iptables target.
    Nfqueue,
    /// The token bucket filter qdisc.
    Tbf,
    /// Source NAT by MASQUERADE (iptables-nft runs the target through nft_compat).
    Masquerade,
}

impl Feature {
    /// Every feature, in the order they are probed.
    pub const ALL: [Feature; 4] = [
        Feature::AfPacket,
        Feature::Nfqueue,
        Feature::Tbf,
        Feature::Masquerade,
    ];

    /// Its name as the lab's documents use it.
    pub fn name(self) -> &'static str {
        match self {
            Feature::AfPacket => "AF_PACKET",
            Feature::Nfqueue => "NFQUEUE",
            Feature::Tbf => "tbf",
            Feature::Masquerade => "MASQUERADE",
        }
    }

    /// The modules that provide it (what to `modprobe` on the host).
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Feature::AfPacket => &["af_packet"],
            Feature::Nfqueue => &["nfnetlink_queue", "xt_NFQUEUE"],
            Feature::Tbf => &["sch_tbf"],
            Feature::Masquerade => &["nf_nat", "xt_MASQUERADE", "nft_compat"],
        }
    }

    /// What in the lab needs it.
    pub fn used_by(self) -> &'static str {
        match self {
            Feature::AfPacket => "the captures (pcaps)",
            Feature::Nfqueue => "the delay lines (link delay, jitter, loss)",
            Feature::Tbf => "the rate limits",
            Feature::Masquerade => "the NAPT routers",
        }
    }

    /// Uses the feature once as the lab does, inside `lab`'s probe node.
    fn probe(self, lab: &Lab) -> Result<()> {
        match self {
            Feature::AfPacket => lab
                .run_in(PROBE_NODE, packet_socket)?
                .map_err(|err| LabError::io("socket(AF_PACKET, SOCK_RAW)", err)),
            Feature::Nfqueue => {
                lab.run_in(PROBE_NODE, || {
                    delay::bind_free_queue(&DelayConfig::default()).map(drop)
                })??;
                let rule = [
                    "-t",
                    "mangle",
                    "-A",
                    "OUTPUT",
                    "-o",
                    "lo",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "1",
                    "--queue-bypass",
                ];
                lab.iptables(PROBE_NODE, &rule).map(drop)
            }
            Feature::Tbf => set_rate_limit(lab, PROBE_NODE, "lo", &RateLimit::mbit(10)),
            Feature::Masquerade => lab.add_masquerade(PROBE_NODE, "lo"),
        }
    }
}

/// A feature whose probe failed, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub feature: Feature,
    /// The probe's error.
    pub error: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (module {}), needed by {}: {}",
            self.feature.name(),
            self.feature.modules().join(", "),
            self.feature.used_by(),
            self.error
        )
    }
}

/// The error a run stops with: every missing feature, one a line, and what to do.
pub fn missing_error(missing: &[Missing], in_container: bool) -> LabError {
    let mut text = String::new();
    for item in missing {
        text.push_str("\n  ");
        text.push_str(&item.to_string());
    }
    let mut modules: Vec<&str> = Vec::new();
    for module in missing.iter().flat_map(|item| item.feature.modules()) {
        if !modules.contains(module) {
            modules.push(module);
        }
    }
    text.push_str(&format!(
        "\n{} `modprobe -a {}` (or use a kernel built with them)",
        if in_container {
            "this runs in a container, which cannot load modules: on the host, run"
        } else {
            "load them:"
        },
        modules.join(" ")
    ));
    LabError::MissingFeatures(text)
}

/// Whether this process runs in a container (podman's or docker's marker file).
pub fn in_container() -> bool {
    std::path::Path::new("/run/.containerenv").exists()
        || std::path::Path::new("/.dockerenv").exists()
}

/// Probes every feature, once per process (later calls repeat the first answer).
/// `Err(LabError::MissingFeatures)` names each missing feature and its modules.
pub fn check() -> Result<()> {
    static ANSWER: Mutex<Option<Vec<Missing>>> = Mutex::new(None);
    let mut answer = ANSWER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if answer.is_none() {
        *answer = Some(probe_all()?);
    }
    match answer.as_deref() {
        Some([]) | None => Ok(()),
        Some(missing) => Err(missing_error(missing, in_container())),
    }
}

/// Tries every feature in a scratch namespace; returns the ones that failed.
pub fn probe_all() -> Result<Vec<Missing>> {
    let lab = Lab::new()?;
    lab.add_node(PROBE_NODE)?;
    let mut missing = Vec::new();
    for feature in Feature::ALL {
        if let Err(err) = feature.probe(&lab) {
            tracing::warn!(feature = feature.name(), %err, "kernel feature missing");
            missing.push(Missing {
                feature,
                error: err.to_string(),
            });
        }
    }
    let report = lab.teardown();
    if !report.errors.is_empty() {
        tracing::warn!(errors = ?report.errors, "tearing down the feature probe");
    }
    Ok(missing)
}

/// Opens (and closes) a packet socket in the calling thread's namespace.
fn packet_socket() -> io::Result<()> {
    let socket = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )?;
    drop(socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_each_missing_feature_its_modules_and_the_fix() {
        let missing = [
            Missing {
                feature: Feature::Nfqueue,
                error: "binding NFQUEUE 1: Operation not supported (os error 95)".into(),
            },
            Missing {
                feature: Feature::Tbf,
                error: "adding tbf to lo in sustain-1-ab-probe: No such file or directory".into(),
            },
        ];
        assert_eq!(
            missing_error(&missing, true).to_string(),
            "the kernel lacks what the lab needs:\n  \
             NFQUEUE (module nfnetlink_queue, xt_NFQUEUE), needed by the delay lines (link \
             delay, jitter, loss): binding NFQUEUE 1: Operation not supported (os error 95)\n  \
             tbf (module sch_tbf), needed by the rate limits: adding tbf to lo in \
             sustain-1-ab-probe: No such file or directory\n\
             this runs in a container, which cannot load modules: on the host, run \
             `modprobe -a nfnetlink_queue xt_NFQUEUE sch_tbf` (or use a kernel built with them)"
        );
        assert!(missing_error(&missing[..1], false).to_string().ends_with(
            "\nload them: `modprobe -a nfnetlink_queue xt_NFQUEUE` (or use a kernel built with them)"
        ));
    }

    #[test]
    fn every_module_is_named_once() {
        let missing: Vec<Missing> = Feature::ALL
            .into_iter()
            .chain(Feature::ALL)
            .map(|feature| Missing {
                feature,
                error: "x".into(),
            })
            .collect();
        let text = missing_error(&missing, false).to_string();
        assert!(text.ends_with(
            "`modprobe -a af_packet nfnetlink_queue xt_NFQUEUE sch_tbf nf_nat xt_MASQUERADE \
             nft_compat` (or use a kernel built with them)"
        ));
    }
}
