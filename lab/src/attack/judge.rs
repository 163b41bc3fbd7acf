//! Judging: what each attack did ([`AttackReport`], filled in by the engine), the
//! counters each side reported against `[expect]`, and the report's lines. Below
//! the engine and the run's report: it depends on neither.

use super::*;

/// What one attack did, for report.json.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AttackReport {
    pub index: usize,
    pub kind: String,
    pub from: String,
    pub target: String,
    pub trigger: String,
    /// When the trigger fired (s since the transfer started) and the receiver's
    /// bytes then. `None`: it never fired.
    pub fired_s: Option<f64>,
    pub bytes_at_fire: Option<u64>,
    /// Every packet injected (or, for the kinds aimed at the mobility server, every
    /// step's messages), with what it carried.
    pub sent: Vec<Value>,
    /// Segments the target sent to the attacker's address during the whole run, and
    /// SYN-ACKs among them: anything but 0 means a forgery was answered.
    pub target_segments_to_attacker: u64,
    pub target_syn_acks_to_attacker: u64,
    /// What the observer on the target's uplink saw during the run: IPv4 packets,
    /// and segments of the transfer's connection among them.
    /// For `forged-report` and `replayed-report`, the observer sits on the mobility
    /// server's uplink: packets, and segments of hosts' control sessions.
    pub observed_packets: u64,
    pub observed_segments: u64,
    /// What the mobility server answered the attacker (`forged-report`,
    /// `replayed-report`), one line per message, e.g. `error bad-mac (type 0x02, ...)`.
    pub server_replies: Vec<Value>,
    /// PeerLocation notices naming the attacker's address that the server sent,
    /// seen on its uplink during the run (any is a failure).
    pub notices_to_attacker: u64,
    /// `peer-location` events of the transfer's ends naming the attacker's address
    /// (from their events files; any is a failure).
    pub peer_locations_to_attacker: u64,
    /// Why the attack was not (completely) carried out.
    pub error: Option<String>,
}

/// The target's counters from sustain-host's `closed` event and the checks of
/// `[expect] target_counters`; or the mobility server's from sustain-server's
/// `stopped` event and the checks of `[expect] server_counters`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CountersReport {
    pub node: String,
    pub role: String,
    /// The counters of the target's last `closed` event (or the server's last
    /// `stopped` event).
    pub counters: Option<Map<String, Value>>,
    pub checks: Vec<CounterCheckReport>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CounterCheckReport {
    pub check: String,
    pub actual: Option<u64>,
    pub passed: bool,
}

/// The JSON events of an events file, newest first.
pub(crate) fn events_newest_first(events_file: &Path) -> std::result::Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(events_file)
        .map_err(|e| format!("reading {}: {e}", events_file.display()))?;
    Ok(text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect())
}

/// The `counters` object of the last `closed` event in a sustain-host events file.
pub(crate) fn closed_counters(
    events_file: &Path,
) -> std::result::Result<Map<String, Value>, String> {
    events_newest_first(events_file)?
        .into_iter()
        .filter(|event| event.get("event").and_then(Value::as_str) == Some("closed"))
        .find_map(|event| event.get("counters").and_then(Value::as_object).cloned())
        .ok_or_else(|| format!("no closed event with counters in {}", events_file.display()))
}

/// The counters of the last `stopped` event in a sustain-server events file (they
/// are the event's own fields). After a restart they are the last process's.
pub(crate) fn stopped_counters(
    events_file: &Path,
) -> std::result::Result<Map<String, Value>, String> {
    events_newest_first(events_file)?
        .into_iter()
        .find(|event| event.get("event").and_then(Value::as_str) == Some("stopped"))
        .and_then(|event| match event {
            Value::Object(mut fields) => {
                for key in ["time", "t", "event"] {
                    fields.remove(key);
                }
                Some(fields)
            }
            _ => None,
        })
        .ok_or_else(|| format!("no stopped event in {}", events_file.display()))
}

/// Reads `counters` and judges `checks` against them.
pub(crate) fn counters_report(
    node: &str,
    role: &str,
    counters: std::result::Result<Map<String, Value>, String>,
    checks: &[CounterCheck],
) -> CountersReport {
    let (counters, error) = match counters {
        Ok(counters) => (Some(counters), None),
        Err(error) => (None, Some(error)),
    };
    let checks = checks
        .iter()
        .map(|check| {
            let actual = counters.as_ref().and_then(|c| check.actual(c).ok());
            CounterCheckReport {
                check: check.to_string(),
                actual,
                passed: actual.is_some_and(|value| check.holds(value)),
            }
        })
        .collect();
    CountersReport {
        node: node.into(),
        role: role.into(),
        counters,
        checks,
        error,
    }
}

/// The counters of the attacks' target (the first attack's) and the checks of
/// `[expect] target_counters`. `None` without attacks, or when the target is not a
/// sustain end and nothing is checked.
pub fn target_counters(scenario: &Scenario, result: &TransferResult) -> Option<CountersReport> {
    let attack = scenario.attacks.first()?;
    let role = attack.target_role;
    if scenario.transfer.kind_of(role) != EndpointKind::Sustain
        && scenario.expect.target_counters.is_empty()
    {
        return None;
    }
    let end = if role == Role::Sender {
        &result.sender
    } else {
        &result.receiver
    };
    Some(counters_report(
        &attack.target,
        role.name(),
        closed_counters(&end.events_file),
        &scenario.expect.target_counters,
    ))
}

/// The mobility server's counters (its last `stopped` event in `events_file`) and
/// the checks of `[expect] server_counters`. `None` without a mobility server.
pub fn server_counters(scenario: &Scenario, events_file: &Path) -> Option<CountersReport> {
    let node = scenario
        .topology
        .nodes
        .iter()
        .find(|node| node.role == NodeRole::MobilityServer)?;
    Some(counters_report(
        &node.name,
        node.role.name(),
        stopped_counters(events_file),
        &scenario.expect.server_counters,
    ))
}

/// The proxy's counters (its last `stopped` event in `events_file`) and the checks
/// of `[expect] proxy_counters`. `None` without a proxy.
pub fn proxy_counters(scenario: &Scenario, events_file: &Path) -> Option<CountersReport> {
    let node = scenario
        .topology
        .nodes
        .iter()
        .find(|node| node.role == NodeRole::Proxy)?;
    Some(counters_report(
        &node.name,
        node.role.name(),
        stopped_counters(events_file),
        &scenario.expect.proxy_counters,
    ))
}

/// Counts, for each attack, the `peer-location` events of the transfer's ends whose
/// target is its attacker's address: a notice that would send an MSYN there.
pub fn count_peer_locations_to_attackers(
    attacks: &mut [AttackReport],
    scenario: &Scenario,
    result: &TransferResult,
) {
    let Ok(plan) = scenario.topology.plan() else {
        return;
    };
    let targets: Vec<Ipv4Addr> = [&result.sender, &result.receiver]
        .iter()
        .flat_map(|end| events_newest_first(&end.events_file).unwrap_or_default())
        .filter(|event| event.get("event").and_then(Value::as_str) == Some("peer-location"))
        .filter_map(|event| {
            event
                .get("target")
                .and_then(Value::as_str)
                .and_then(|target| target.parse::<SocketAddrV4>().ok())
                .map(|target| *target.ip())
        })
        .collect();
    for attack in attacks {
        // Attackers never move: their address is the initial one.
        let Some(address) = plan.initial_address(&attack.from) else {
            continue;
        };
        attack.peer_locations_to_attacker =
            targets.iter().filter(|target| **target == address).count() as u64;
    }
}

/// Why the attacks part of a run fails: an attack not carried out, a reply to the
/// attacker, a notice naming the attacker, a counter check (of the target or the
/// mobility server) that does not hold.
pub fn failures(
    attacks: &[AttackReport],
    counters: Option<&CountersReport>,
    server: Option<&CountersReport>,
    proxy: Option<&CountersReport>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for attack in attacks {
        if let Some(error) = &attack.error {
            failures.push(format!("attack[{}] {}: {error}", attack.index, attack.kind));
        }
        if attack.notices_to_attacker > 0 {
            failures.push(format!(
                "the mobility server sent {} peer-location notices naming {}'s address",
                attack.notices_to_attacker, attack.from
            ));
        }
        if attack.peer_locations_to_attacker > 0 {
            failures.push(format!(
                "the ends logged {} peer-location events naming {}'s address",
                attack.peer_locations_to_attacker, attack.from
            ));
        }
    }
    // Every attack of a target shares the count: report it once per target.
    let mut reported = HashSet::new();
    for attack in attacks {
        if attack.target_segments_to_attacker > 0 && reported.insert(&attack.target) {
            failures.push(format!(
                "{} sent {} segments ({} SYN-ACKs) to the attacker's address",
                attack.target,
                attack.target_segments_to_attacker,
                attack.target_syn_acks_to_attacker
            ));
        }
    }
    for counters in [counters, server, proxy].into_iter().flatten() {
        for check in counters.checks.iter().filter(|c| !c.passed) {
            match (check.actual, &counters.error) {
                (Some(actual), _) => failures.push(format!(
                    "{}'s counter {} does not hold: it is {actual}",
                    counters.node, check.check
                )),
                (None, Some(error)) => failures.push(format!(
                    "{}'s counter {} cannot be checked: {error}",
                    counters.node, check.check
                )),
                (None, None) => failures.push(format!(
                    "{}'s counter {} cannot be checked: a counter is missing",
                    counters.node, check.check
                )),
            }
        }
    }
    failures
}

/// Summary lines for the attacks, the target's counters and the server's.
pub fn render(
    attacks: &[AttackReport],
    counters: Option<&CountersReport>,
    server: Option<&CountersReport>,
    proxy: Option<&CountersReport>,
) -> String {
    let mut out = String::new();
    for attack in attacks {
        let fired = attack
            .fired_s
            .map_or("never fired".to_string(), |t| format!("fired at {t:+.3}s"));
        out.push_str(&format!(
            "  attack    {} {} -> {}: {}, {} {}, target replied to the attacker {} times{}{}\n",
            attack.kind,
            attack.from,
            attack.target,
            fired,
            attack.sent.len(),
            if attack
                .kind
                .parse::<AttackKind>()
                .is_ok_and(AttackKind::aims_at_server)
            {
                "steps"
            } else {
                "packets"
            },
            attack.target_segments_to_attacker,
            if attack.server_replies.is_empty() {
                String::new()
            } else {
                format!(", {} server replies", attack.server_replies.len())
            },
            attack
                .error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for counters in [counters, server, proxy].into_iter().flatten() {
        let checks: Vec<String> = counters
            .checks
            .iter()
            .map(|c| {
                let actual = c.actual.map_or("?".to_string(), |a| a.to_string());
                format!(
                    "{} [{actual}]{}",
                    c.check,
                    if c.passed { "" } else { " FAILED" }
                )
            })
            .collect();
        if !checks.is_empty() {
            out.push_str(&format!(
                "  counters  {} ({}): {}\n",
                counters.node,
                counters.role,
                checks.join(", ")
            ));
        }
    }
    out
}
