//! iptables (the nft backend) inside a namespace.
//!
//! The tools run as children that `setns` into the namespace, so rules land in that
//! namespace's tables and disappear with it.

use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::names::RunId;
use crate::netns::Netns;
use crate::process;

/// iptables never needs long; a hang (a stuck lock) must not hang the lab.
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(30);

/// The comment that marks the lab's random-loss rules.
pub const LOSS_COMMENT: &str = "sustain-loss";

/// Runs `iptables -w <args>` in `netns` and returns its stdout.
pub(crate) fn iptables(netns: &Netns, run: &RunId, args: &[&str]) -> Result<String> {
    run_tool(netns, run, sustain_iptables::command(args), None)
}

/// Feeds `rules` (iptables-save format) to `iptables-restore -w` in `netns`. With
/// `noflush`, the tables named in `rules` keep their other rules.
pub(crate) fn iptables_restore(
    netns: &Netns,
    run: &RunId,
    rules: &str,
    noflush: bool,
) -> Result<()> {
    let command = sustain_iptables::restore_command(noflush);
    run_tool(netns, run, command, Some(rules.as_bytes())).map(drop)
}

/// Runs `command` in `netns` with the lab's timeout and judges its exit the
/// one way every iptables run is judged (`sustain_iptables::judge`).
fn run_tool(netns: &Netns, run: &RunId, command: Command, stdin: Option<&[u8]>) -> Result<String> {
    let line = sustain_iptables::describe(&command);
    let output = process::output(netns, run, command, stdin, IPTABLES_TIMEOUT)?;
    sustain_iptables::judge(line, &output).map_err(|source| LabError::Iptables {
        netns: netns.name().to_string(),
        source,
    })
}

fn check_probability(probability: f64) -> Result<()> {
    if probability.is_finite() && probability > 0.0 && probability <= 1.0 {
        Ok(())
    } else {
        Err(LabError::InvalidValue(format!(
            "loss probability {probability} is not in (0, 1]"
        )))
    }
}

/// Arguments appending a rule to FORWARD that drops each forwarded packet with
/// `probability`, independently, marked with `comment` so it can be found and counted.
/// With `in_iface`, only packets arriving on that interface (one direction).
pub fn random_loss_rule(
    probability: f64,
    in_iface: Option<&str>,
    comment: &str,
) -> Result<Vec<String>> {
    check_probability(probability)?;
    let mut args = vec!["-t".into(), "filter".into(), "-A".into(), "FORWARD".into()];
    if let Some(iface) = in_iface {
        args.extend(["-i".into(), iface.to_string()]);
    }
    args.extend([
        "-m".into(),
        "statistic".into(),
        "--mode".into(),
        "random".into(),
        "--probability".into(),
        format!("{probability}"),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        comment.to_string(),
        "-j".into(),
        "DROP".into(),
    ]);
    Ok(args)
}

/// Arguments appending NAPT for everything leaving through `out_iface`.
pub fn masquerade_rule(out_iface: &str) -> Vec<String> {
    [
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        out_iface,
        "-j",
        "MASQUERADE",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Sums the packet counters of the rules tagged `/* comment */` in the output of
/// `iptables -L <chain> -v -n -x`.
pub fn packets_of_commented_rules(listing: &str, comment: &str) -> Result<u64> {
    let tag = format!("/* {comment} */");
    let mut total = 0u64;
    for line in listing.lines().filter(|line| line.contains(&tag)) {
        let count = line
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| LabError::UnexpectedOutput {
                what: "iptables -L -v -x".into(),
                detail: format!("no packet counter in {line:?}"),
            })?;
        total += count;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_tagged_rules_are_summed() {
        let listing = "\
Chain FORWARD (policy ACCEPT 10 packets, 840 bytes)
    pkts      bytes target     prot opt in     out     source               destination
      17    25000 DROP       0    --  r-a    *       0.0.0.0/0            0.0.0.0/0            statistic mode random probability 0.04999999981 /* sustain-loss */
       4     5000 DROP       0    --  r-b    *       0.0.0.0/0            0.0.0.0/0            statistic mode random probability 0.04999999981 /* sustain-loss */
     900   100000 ACCEPT     0    --  *      *       0.0.0.0/0            0.0.0.0/0            /* other */
";
        assert_eq!(
            packets_of_commented_rules(listing, "sustain-loss").unwrap(),
            21
        );
        assert_eq!(packets_of_commented_rules(listing, "absent").unwrap(), 0);
    }

    #[test]
    fn loss_rule_refuses_nonsense_probabilities() {
        assert!(random_loss_rule(0.0, None, LOSS_COMMENT).is_err());
        assert!(random_loss_rule(1.5, None, LOSS_COMMENT).is_err());
        assert!(random_loss_rule(f64::NAN, None, LOSS_COMMENT).is_err());
        let args = random_loss_rule(0.05, Some("r-a"), LOSS_COMMENT).unwrap();
        assert_eq!(
            args.join(" "),
            "-t filter -A FORWARD -i r-a -m statistic --mode random --probability 0.05 \
             -m comment --comment sustain-loss -j DROP"
        );
    }
}
