//! Applies a topology's link conditions to every uplink the moment it is created
//! (initial ones and those made by moves) and removes them with it.
//!
//! For the attachment of node N to network X (N's interface `X`, the gateway's end
//! `v-N`):
//! - delay, jitter and loss: two NFQUEUE delay lines in the gateway, one on
//!   `PREROUTING -i v-N` (N towards the network) and one on `POSTROUTING -o v-N` (the
//!   network towards N). The gateway forwards every packet of the attachment, and a
//!   forwarding namespace is where a delay line belongs: held in N's own stack, N's
//!   packets would stay charged to its sockets (TCP small queues) and throttle them.
//! - rate: a tbf on the egress of both veth ends (`X` in N, `v-N` in the gateway), one
//!   per direction.
//! - stripped TCP options: iptables TCPOPTSTRIP in the gateway's mangle table, on
//!   `PREROUTING -i v-N` and `POSTROUTING -o v-N`, as a firewall on that path would.
//!
//! Each delay line's random draws are seeded from the attachment and the direction, so
//! a scenario loses the same packets in every run (given the same packet arrivals).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::delay::{DelayConfig, DelayLine, DelayStats, LinkMatch};
use crate::error::Result;
use crate::lab::Lab;
use crate::shaping::{self, RateLimit};
use crate::topology::attachment::{Attachment, AttachmentHook, HookContext};
use crate::topology::spec::LinkConditions;

/// The direction of one half of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// From the node into the network.
    Up,
    /// From the network to the node.
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Delay-line counters of one direction of one attachment.
#[derive(Clone, Debug)]
pub struct LinkStats {
    /// `<node>-<network>`.
    pub label: String,
    pub direction: Direction,
    pub stats: DelayStats,
}

/// The [`AttachmentHook`] that applies link conditions. The topology installs it first.
#[derive(Debug, Default)]
pub(crate) struct Conditioner {
    lines: Mutex<BTreeMap<String, Vec<(Direction, DelayLine)>>>,
    /// Final counters of lines already stopped (links removed by moves).
    finished: Mutex<Vec<LinkStats>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// FNV-1a of the label and direction: a stable seed per link half.
fn seed(label: &str, direction: Direction) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in label.bytes().chain([0]).chain(direction.name().bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Conditioner {
    fn apply(&self, lab: &Lab, attachment: &Attachment, conditions: &LinkConditions) -> Result<()> {
        if let Some(kbit) = conditions.rate_kbit {
            let limit = RateLimit::bits_per_second(kbit.saturating_mul(1000));
            shaping::set_rate_limit(lab, &attachment.node, &attachment.ifname, &limit)?;
            shaping::set_rate_limit(lab, &attachment.gateway_node, &attachment.port, &limit)?;
        }
        if !conditions.strip_options.is_empty() {
            strip_options(lab, attachment, &conditions.strip_options)?;
        }
        if conditions.delay.is_zero() && conditions.jitter.is_zero() && conditions.loss == 0.0 {
            return Ok(());
        }
        let label = attachment.label();
        let mut started = Vec::new();
        for (direction, link) in [
            (Direction::Up, LinkMatch::ingress(&attachment.port)),
            (Direction::Down, LinkMatch::egress(&attachment.port)),
        ] {
            let config = DelayConfig {
                delay: conditions.delay,
                jitter: conditions.jitter,
                loss: conditions.loss,
                seed: seed(&label, direction),
                ..DelayConfig::default()
            };
            // On failure the lines started so far stop as `started` drops.
            started.push((
                direction,
                DelayLine::start(lab, &attachment.gateway_node, link, config)?,
            ));
        }
        lock(&self.lines).insert(label, started);
        Ok(())
    }

    fn stop(&self, label: &str) {
        let lines = lock(&self.lines).remove(label).unwrap_or_default();
        for (direction, line) in lines {
            match line.stop() {
                Ok(stats) => lock(&self.finished).push(LinkStats {
                    label: label.to_string(),
                    direction,
                    stats,
                }),
                Err(err) => tracing::warn!(label, %err, "stopping a delay line"),
            }
        }
    }

    /// Counters of every delay line, running or stopped.
    pub(crate) fn stats(&self) -> Vec<LinkStats> {
        let mut all = lock(&self.finished).clone();
        for (label, lines) in lock(&self.lines).iter() {
            for (direction, line) in lines {
                match line.stats() {
                    Ok(stats) => all.push(LinkStats {
                        label: label.clone(),
                        direction: *direction,
                        stats,
                    }),
                    Err(err) => tracing::warn!(label, %err, "reading delay-line counters"),
                }
            }
        }
        all
    }

    /// Stops every line (before the namespaces go: a running line keeps its
    /// namespace alive).
    pub(crate) fn stop_all(&self) {
        let labels: Vec<String> = lock(&self.lines).keys().cloned().collect();
        for label in labels {
            self.stop(&label);
        }
    }
}

/// The comment that marks the TCPOPTSTRIP rules of one attachment.
fn strip_comment(attachment: &Attachment) -> String {
    format!("{STRIP_COMMENT}-{}", attachment.label())
}

/// The comment prefix of the lab's option-stripping rules.
pub const STRIP_COMMENT: &str = "sustain-optstrip";

/// The two TCPOPTSTRIP rules (each direction) of one attachment, as iptables
/// arguments after `-A`/`-D`.
fn strip_rules(attachment: &Attachment, kinds: &[u8]) -> [Vec<String>; 2] {
    let kinds = kinds
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let comment = strip_comment(attachment);
    let rule = |chain: &str, dir: &str| {
        [
            chain,
            dir,
            &attachment.port,
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "TCPOPTSTRIP",
            "--strip-options",
            &kinds,
        ]
        .map(str::to_string)
        .to_vec()
    };
    [rule("PREROUTING", "-i"), rule("POSTROUTING", "-o")]
}

fn strip_options(lab: &Lab, attachment: &Attachment, kinds: &[u8]) -> Result<()> {
    for rule in strip_rules(attachment, kinds) {
        let mut args = vec!["-t", "mangle", "-A"];
        args.extend(rule.iter().map(String::as_str));
        lab.iptables(&attachment.gateway_node, &args)?;
    }
    Ok(())
}

/// Removes an attachment's TCPOPTSTRIP rules (the gateway namespace outlives the
/// attachment: a later one with the same port name must not inherit them).
fn unstrip_options(lab: &Lab, attachment: &Attachment, kinds: &[u8]) {
    for rule in strip_rules(attachment, kinds) {
        let mut args = vec!["-t", "mangle", "-D"];
        args.extend(rule.iter().map(String::as_str));
        if let Err(err) = lab.iptables(&attachment.gateway_node, &args) {
            tracing::warn!(label = %attachment.label(), %err, "removing TCPOPTSTRIP rules");
        }
    }
}

impl AttachmentHook for Conditioner {
    fn created(&self, ctx: &HookContext<'_>, attachment: &Attachment) -> Result<()> {
        match ctx.conditions {
            Some(conditions) if !conditions.is_none() => {
                self.apply(ctx.lab, attachment, conditions)
            }
            _ => Ok(()),
        }
    }

    // Stopped before the link goes: the lines release what they hold while the link
    // still exists (the kernel drops a vanished device's queued packets itself, and
    // late verdicts for them would fail).
    fn removing(&self, ctx: &HookContext<'_>, attachment: &Attachment) {
        self.stop(&attachment.label());
        if let Some(conditions) = ctx.conditions {
            if !conditions.strip_options.is_empty() {
                unstrip_options(ctx.lab, attachment, &conditions.strip_options);
            }
        }
    }

    fn shutdown(&self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_link_and_direction_and_are_stable() {
        assert_ne!(seed("b-g1", Direction::Up), seed("b-g1", Direction::Down));
        assert_ne!(seed("b-g1", Direction::Up), seed("a-g1", Direction::Up));
        assert_eq!(seed("b-g1", Direction::Up), seed("b-g1", Direction::Up));
    }
}
