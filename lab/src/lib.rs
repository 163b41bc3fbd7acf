//! sustain-lab: Linux network-namespace lab for sustain.
//!
//! Builds topologies out of named network namespaces (iproute2-compatible, so
//! `ip netns exec` works while a lab runs), veth pairs created through rtnetlink
//! directly inside the lab namespaces, sysctls, iptables-nft rules and child
//! processes, and guarantees their removal: on drop, on panic, on SIGINT/SIGTERM,
//! and after a SIGKILL through [`clean()`].
//!
//! Link emulation without netem: [`DelayLine`] (NFQUEUE delay, jitter and loss per
//! link direction), [`set_rate_limit`] (tbf through rtnetlink); and [`Capture`]
//! (AF_PACKET to pcap, one file per interface).
//!
//! [`PathLab`] is the ready-made three-node path (host A — router R — host B) that the
//! runtime's real-kernel tests and benchmark use.
//!
//! Scenarios: [`topology`] (global segments, NAPT routers with the [`napt`] profiles,
//! hosts and service nodes, deterministic addresses and MACs, link [`conditions`]),
//! [`moves`] (detach / attach / move with completion instants), [`transfer`] (Linux
//! TCP or `sustain-host` endpoints), [`scenario`] (the TOML files of
//! `conformance/scenarios`), [`runner`] (run one: captures, timeline, `report.json`).
//! `lab/README.md` documents the file format and the CLI. [`machine`]: what touching
//! memory left idle costs on this machine (the conformance suite prints it).
//!
//! Syscalls go through `nix` (and std); `unsafe` is denied crate-wide and allowed only
//! on the few functions nix has no wrapper for, each with its SAFETY comment: the
//! child's `pre_exec` (process), binding an AF_PACKET socket (capture), the SIOCETHTOOL
//! ioctl (ethtool), pidfd_open / pidfd_send_signal (clean) and
//! pthread_setschedparam (delay); and madvise, whose nix wrapper is itself unsafe
//! (machine).

#![deny(unsafe_code)]

pub mod apps;
pub mod attack;
pub mod capture;
pub mod captures;
mod clean;
pub mod conditions;
pub mod delay;
pub mod ends;
mod error;
pub mod ethtool;
pub mod features;
pub mod icmp;
mod lab;
mod links;
pub mod machine;
pub mod moves;
pub mod names;
pub mod napt;
pub mod netfilter;
pub mod netns;
mod nfqueue;
pub mod outcome;
pub mod paper;
mod path_lab;
pub mod plot;
pub mod process;
pub mod report;
mod rtnl;
pub mod runner;
pub mod scenario;
pub mod services;
pub mod shaping;
mod sockopt;
pub mod sysctl;
pub mod topology;
pub mod transcripts;
pub mod transfer;

mod wakeup;

pub use capture::{capture_file_name, Capture, CaptureReport};
pub use clean::{clean, clean_with, CleanOptions, CleanReport, StaleProcess};
pub use delay::{DelayConfig, DelayLine, DelayStats, LinkMatch};
pub use error::{LabError, Result};
pub use ethtool::Offloads;
pub use lab::{
    is_root, require_root, root_or_skip, skip, Lab, TeardownReport, DEFAULT_WAIT, KEEP_LOGS_ENV,
    SKIP_LOG_ENV,
};
pub use names::{RunId, NETNS_PREFIX, RUN_ENV};
pub use netns::Netns;
pub use path_lab::{PathLab, PathLabConfig, PathNode};
pub use process::ChildProcess;
pub use rtnl::Ipv4Route;
pub use shaping::{clear_rate_limit, rate_limit_stats, set_rate_limit, RateLimit, ShaperStats};
