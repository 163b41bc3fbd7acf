//! The scenario side: `[[attack]]` and the `[expect]` counter checks, as written
//! and as checked against the topology and the transfer.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::moves::{MoveSpec, Trigger};
use crate::topology::spec::{NetworkKind, NodeRole, Plan, SpecPath, TopologySpec};
use crate::transfer::{EndpointKind, Role, TransferSpec};

/// What an attack sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttackKind {
    ForgedMsyn,
    ReplayedMsyn,
    ForgedAddressUpdate,
    BlindRst,
    MalformedOptions,
    ForgedReport,
    ReplayedReport,
    ForgedTicket,
}

impl AttackKind {
    pub const ALL: [AttackKind; 8] = [
        AttackKind::ForgedMsyn,
        AttackKind::ReplayedMsyn,
        AttackKind::ForgedAddressUpdate,
        AttackKind::BlindRst,
        AttackKind::MalformedOptions,
        AttackKind::ForgedReport,
        AttackKind::ReplayedReport,
        AttackKind::ForgedTicket,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttackKind::ForgedMsyn => "forged-msyn",
            AttackKind::ReplayedMsyn => "replayed-msyn",
            AttackKind::ForgedAddressUpdate => "forged-address-update",
            AttackKind::BlindRst => "blind-rst",
            AttackKind::MalformedOptions => "malformed-options",
            AttackKind::ForgedReport => "forged-report",
            AttackKind::ForgedTicket => "forged-ticket",
            AttackKind::ReplayedReport => "replayed-report",
        }
    }

    /// Kinds that name the connection by the target's token (or by the connection
    /// id made of both tokens): only a migratable connection (both ends sustain) has
    /// one.
    pub fn needs_token(self) -> bool {
        matches!(
            self,
            AttackKind::ForgedMsyn
                | AttackKind::ReplayedMsyn
                | AttackKind::ForgedAddressUpdate
                | AttackKind::ForgedReport
                | AttackKind::ReplayedReport
        )
    }

    /// Kinds that talk to the mobility server over the attacker's own kernel TCP
    /// connection (PROTOCOL.md §15) instead of injecting segments at the target;
    /// they learn what they send from the control sessions on the server's uplink.
    /// Whether it is sent to the proxy's relay ports (observed on the proxy's uplink).
    pub fn aims_at_proxy(self) -> bool {
        self == AttackKind::ForgedTicket
    }

    pub fn aims_at_server(self) -> bool {
        matches!(self, AttackKind::ForgedReport | AttackKind::ReplayedReport)
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttackKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<AttackKind, String> {
        AttackKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| {
                let names: Vec<String> = AttackKind::ALL
                    .iter()
                    .map(|k| format!("{:?}", k.name()))
                    .collect();
                format!("unknown attack kind {s:?}; expected {}", names.join(", "))
            })
    }
}

/// One `[[attack]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackSpec {
    pub kind: AttackKind,
    /// The attacker node.
    pub from: String,
    /// The transfer end whose state it attacks.
    pub target: String,
    pub target_role: Role,
    /// Same semantics as a move's: time since the transfer started, or bytes the
    /// receiver has.
    pub trigger: Trigger,
}

/// The counters sustain-host reports in its `closed` event (`counters`), the names
/// `[expect] target_counters` may use.
pub const TARGET_COUNTERS: &[&str] = &[
    "packets_in",
    "packets_out",
    "malformed",
    "not_ours",
    "resets_sent",
    "resets_received",
    "challenge_acks",
    "challenge_acks_suppressed",
    "retransmitted_segments",
    "syn_backlog_drops",
    "paws_drops",
    "missing_timestamp_drops",
    "fast_retransmits",
    "timeouts",
    "sustain_malformed",
    "unknown_tokens",
    "stale_requests",
    "repeat_requests",
    "mac_failures",
    "mac_rate_limited",
    "msyns_refused",
    "msyn_acks_refused",
    "msyns_sent",
    "msyn_acks_sent",
    "msyn_acks_accepted",
    "migrations_started",
    "migrations_completed",
    "moves_accepted",
    "paths_confirmed",
    "address_updates_sent",
    "mig_wait_entries",
    "migration_timeouts",
    "old_path_drops",
];

/// The counters sustain-server logs in its `stopped` event (PROTOCOL.md §15.9 names
/// the rejection counters), the names `[expect] server_counters` may use.
pub const SERVER_COUNTERS: &[&str] = &[
    "sessions_opened",
    "sessions_refused",
    "messages",
    "registered",
    "reports",
    "unregistered",
    "repeats",
    "decisions",
    "relays_needed",
    "acks_sent",
    "notices_sent",
    "notices_undeliverable",
    "errors_sent",
    "expired",
    "garbage",
    "truncated",
    "oversized",
    "unknown_version",
    "unknown_type",
    "malformed",
    "unexpected_type",
    "bad_mac",
    "replayed",
    "unknown_connection",
    "conflicts",
    "rate_limited",
    "registry_full",
    "rejected",
];

/// The counters sustain-proxy logs in its `stopped` event (`RelayStats`, PROTOCOL.md
/// §6.9, §11.5), the names `[expect] proxy_counters` may use.
pub const PROXY_COUNTERS: &[&str] = &[
    "packets_in",
    "malformed",
    "allocated",
    "released",
    "msyns",
    "unknown_port",
    "unknown_ticket",
    "bad_mac",
    "replayed",
    "rate_limited",
    "not_relay_msyn",
    "refused_global",
    "msyn_acks_sent",
    "confirms",
    "forwarded",
    "dropped_unconfirmed",
    "stray",
    "acks_clamped",
    "window_acks",
];

/// Whose counters a [`CounterCheck`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterSource {
    /// The attacks' target: sustain-host's `closed` event (`[expect] target_counters`).
    Target,
    /// The mobility server: sustain-server's `stopped` event (`[expect] server_counters`).
    Server,
    /// The proxy: sustain-proxy's `stopped` event (`[expect] proxy_counters`).
    Proxy,
}

impl CounterSource {
    /// The counter names it reports.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            CounterSource::Target => TARGET_COUNTERS,
            CounterSource::Server => SERVER_COUNTERS,
            CounterSource::Proxy => PROXY_COUNTERS,
        }
    }

    pub(crate) fn program(self) -> &'static str {
        match self {
            CounterSource::Target => "sustain-host",
            CounterSource::Server => "sustain-server",
            CounterSource::Proxy => "sustain-proxy",
        }
    }
}

/// How a counter is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    AtLeast,
    AtMost,
    Above,
    Below,
}

impl Comparison {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Comparison::Equal => "==",
            Comparison::AtLeast => ">=",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::Below => "<",
        }
    }
}

/// One entry of `[expect] target_counters` or `server_counters`: a counter (or the
/// sum of several, `"stale_requests+repeat_requests"`) compared with a number (`"0"`,
/// `">=1"`, `"<=3"`, `">0"`, `"<2"`, or a bare integer meaning equal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterCheck {
    pub counters: Vec<String>,
    pub comparison: Comparison,
    pub value: u64,
}

impl CounterCheck {
    /// Parses the key (counter names joined by `+`) and the expression of a check
    /// of the target's counters.
    pub fn parse(key: &str, expression: &str) -> std::result::Result<CounterCheck, String> {
        CounterCheck::parse_for(CounterSource::Target, key, expression)
    }

    /// Parses a check of `source`'s counters.
    pub fn parse_for(
        source: CounterSource,
        key: &str,
        expression: &str,
    ) -> std::result::Result<CounterCheck, String> {
        let counters: Vec<String> = key.split('+').map(|s| s.trim().to_string()).collect();
        for name in &counters {
            if !source.names().contains(&name.as_str()) {
                return Err(format!(
                    "unknown counter {name:?}; {} reports {}",
                    source.program(),
                    source.names().join(", ")
                ));
            }
        }
        let text = expression.trim();
        let (comparison, number) = [
            (">=", Comparison::AtLeast),
            ("<=", Comparison::AtMost),
            ("==", Comparison::Equal),
            (">", Comparison::Above),
            ("<", Comparison::Below),
            ("=", Comparison::Equal),
        ]
        .into_iter()
        .find_map(|(prefix, comparison)| text.strip_prefix(prefix).map(|rest| (comparison, rest)))
        .unwrap_or((Comparison::Equal, text));
        let value = number.trim().parse().map_err(|_| {
            format!("{expression:?} is not a count: use N, \">=N\", \"<=N\", \">N\" or \"<N\"")
        })?;
        Ok(CounterCheck {
            counters,
            comparison,
            value,
        })
    }

    pub fn holds(&self, actual: u64) -> bool {
        match self.comparison {
            Comparison::Equal => actual == self.value,
            Comparison::AtLeast => actual >= self.value,
            Comparison::AtMost => actual <= self.value,
            Comparison::Above => actual > self.value,
            Comparison::Below => actual < self.value,
        }
    }

    /// The (summed) value in a `counters` object; an error names a missing counter.
    pub fn actual(&self, counters: &Map<String, Value>) -> std::result::Result<u64, String> {
        self.counters.iter().try_fold(0u64, |sum, name| {
            counters
                .get(name)
                .and_then(Value::as_u64)
                .map(|value| sum.saturating_add(value))
                .ok_or_else(|| format!("no counter {name:?} was reported"))
        })
    }
}

impl fmt::Display for CounterCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.counters.join("+"),
            self.comparison.symbol(),
            self.value
        )
    }
}

/// `[[attack]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAttack {
    pub(crate) kind: String,
    pub(crate) from: String,
    pub(crate) target: String,
    pub(crate) at_s: Option<f64>,
    pub(crate) at_ms: Option<f64>,
    pub(crate) after_bytes: Option<RawCount>,
}

/// A number or a text (sizes with units, counter expressions).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawCount {
    Number(u64),
    Text(String),
}

pub(crate) type Problem = (SpecPath, String);

pub(crate) fn problem(index: usize, field: &'static str, message: String) -> Problem {
    (SpecPath::new("attack", index, field), message)
}

/// Checks `[[attack]]` tables against the rest of the scenario (which is valid).
pub(crate) fn convert_attacks(
    raw: Vec<RawAttack>,
    topology: &TopologySpec,
    plan: &Plan,
    transfer: &TransferSpec,
    moves: &[MoveSpec],
) -> std::result::Result<Vec<AttackSpec>, Problem> {
    let mut attacks = Vec::new();
    for (i, attack) in raw.into_iter().enumerate() {
        let kind: AttackKind = attack.kind.parse().map_err(|m| problem(i, "kind", m))?;
        match topology.nodes.iter().find(|node| node.name == attack.from) {
            Some(node) if node.role == NodeRole::Attacker => {}
            Some(node) => {
                return Err(problem(
                    i,
                    "from",
                    format!(
                        "{} is a {}; attacks come from a node with role = \"attacker\"",
                        node.name,
                        node.role.name()
                    ),
                ))
            }
            None => {
                return Err(problem(
                    i,
                    "from",
                    format!("no attacker node {:?}", attack.from),
                ))
            }
        }
        let target_role = if attack.target == transfer.sender {
            Role::Sender
        } else if attack.target == transfer.receiver {
            Role::Receiver
        } else {
            return Err(problem(
                i,
                "target",
                format!(
                    "{:?} is not an end of the transfer ({} sends, {} receives)",
                    attack.target, transfer.sender, transfer.receiver
                ),
            ));
        };
        let starts_global = |name: &str| {
            plan.initial
                .iter()
                .find(|(node, _, _)| *node == name)
                .and_then(|(_, network, _)| plan.network(network))
                .is_some_and(|net| net.kind == NetworkKind::Global)
        };
        if kind.aims_at_server() {
            // The attacker talks to the server and watches the server's uplink; the
            // target may sit anywhere and move (its reports are what it attacks).
            match topology
                .nodes
                .iter()
                .find(|node| node.role == NodeRole::MobilityServer)
            {
                Some(server) if starts_global(&server.name) => {}
                Some(server) => {
                    return Err(problem(
                        i,
                        "kind",
                        format!(
                            "{kind} talks to the mobility server, but {} is not on a global \
                             network",
                            server.name
                        ),
                    ))
                }
                None => {
                    return Err(problem(
                        i,
                        "kind",
                        format!("{kind} needs a node with role = \"mobility-server\""),
                    ))
                }
            }
        } else if kind.aims_at_proxy() {
            // Sent to the proxy's relay port and observed on the proxy's uplink:
            // the target may be anywhere and move.
            if !topology.nodes.iter().any(|n| n.role == NodeRole::Proxy) {
                return Err(problem(
                    i,
                    "kind",
                    format!("{kind} needs a node with role = \"proxy\""),
                ));
            }
        } else if !starts_global(&attack.target) {
            return Err(problem(
                i,
                "target",
                format!(
                    "{} is not on a global network: an attacker on a global segment cannot \
                     reach it",
                    attack.target
                ),
            ));
        }
        if !kind.aims_at_server()
            && !kind.aims_at_proxy()
            && moves.iter().any(|mv| mv.host == attack.target)
        {
            return Err(problem(
                i,
                "target",
                format!(
                    "{} moves in this scenario; the attacker watches the target's uplink, \
                     so the target must stay where it is (attack the other end)",
                    attack.target
                ),
            ));
        }
        if kind.needs_token()
            && [Role::Sender, Role::Receiver]
                .iter()
                .any(|role| transfer.kind_of(*role) != EndpointKind::Sustain)
        {
            return Err(problem(
                i,
                "kind",
                format!(
                    "{kind} needs a migratable connection (a token): both ends must be sustain"
                ),
            ));
        }
        let trigger = match (attack.at_s, attack.at_ms, &attack.after_bytes) {
            (Some(s), None, None) => Trigger::At(duration(s).map_err(|m| problem(i, "at_s", m))?),
            (None, Some(ms), None) => {
                Trigger::At(duration(ms / 1e3).map_err(|m| problem(i, "at_ms", m))?)
            }
            (None, None, Some(raw)) => {
                let bytes = match raw {
                    RawCount::Number(bytes) => *bytes,
                    RawCount::Text(text) => sustain_core::units::parse_size(text)
                        .map_err(|m| problem(i, "after_bytes", m))?,
                };
                if bytes >= transfer.bytes {
                    return Err(problem(
                        i,
                        "after_bytes",
                        format!(
                            "{bytes} is not below the transfer's {} bytes: it would never fire",
                            transfer.bytes
                        ),
                    ));
                }
                Trigger::AfterBytes(bytes)
            }
            (None, None, None) => {
                return Err(problem(
                    i,
                    "kind",
                    "an attack needs a trigger: at_s, at_ms or after_bytes".into(),
                ))
            }
            _ => {
                let field = if attack.after_bytes.is_some() {
                    "after_bytes"
                } else {
                    "at_ms"
                };
                return Err(problem(
                    i,
                    field,
                    "give one trigger: at_s, at_ms or after_bytes".into(),
                ));
            }
        };
        if matches!(kind, AttackKind::ReplayedMsyn | AttackKind::ReplayedReport) {
            // An MSYN to replay comes from the other end's move; a MoveReport from
            // the target's own.
            let (mover, what) = if kind == AttackKind::ReplayedMsyn {
                (
                    transfer.node_of(target_role.peer()),
                    "a replayed MSYN needs a real one first",
                )
            } else {
                (
                    attack.target.as_str(),
                    "a replayed MoveReport needs a real one first",
                )
            };
            let moved_before = moves.iter().any(|mv| {
                mv.host == mover
                    && match (mv.trigger, trigger) {
                        (Trigger::AfterBytes(m), Trigger::AfterBytes(a)) => m < a,
                        (Trigger::At(m), Trigger::At(a)) => m < a,
                        _ => false,
                    }
            });
            if !moved_before {
                let field = if matches!(trigger, Trigger::AfterBytes(_)) {
                    "after_bytes"
                } else if attack.at_ms.is_some() {
                    "at_ms"
                } else {
                    "at_s"
                };
                return Err(problem(
                    i,
                    field,
                    format!(
                        "{what}: {mover} ({}) must move before this trigger (both triggers \
                         after_bytes, or both times)",
                        if kind == AttackKind::ReplayedMsyn {
                            "the other end"
                        } else {
                            "the target"
                        }
                    ),
                ));
            }
        }
        attacks.push(AttackSpec {
            kind,
            from: attack.from,
            target: attack.target,
            target_role,
            trigger,
        });
    }
    Ok(attacks)
}

pub(crate) fn duration(seconds: f64) -> std::result::Result<Duration, String> {
    if (0.0..1e6).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!("{seconds} s is not a time"))
    }
}

/// `[expect] target_counters`, checked against the attacks (which must share one
/// sustain target).
pub(crate) fn convert_counter_checks(
    raw: BTreeMap<String, RawCount>,
    attacks: &[AttackSpec],
    transfer: &TransferSpec,
) -> std::result::Result<Vec<CounterCheck>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let Some(first) = attacks.first() else {
        return Err("target_counters needs at least one [[attack]] (it names their target)".into());
    };
    if let Some(other) = attacks.iter().find(|a| a.target != first.target) {
        return Err(format!(
            "target_counters needs one target; the attacks aim at {} and {}",
            first.target, other.target
        ));
    }
    if transfer.kind_of(first.target_role) != EndpointKind::Sustain {
        return Err(format!(
            "{} is a {} end; only sustain-host reports counters",
            first.target,
            transfer.kind_of(first.target_role).name()
        ));
    }
    parse_counter_checks(raw, CounterSource::Target)
}

/// `[expect] server_counters` or `proxy_counters` (`table`): the scenario needs
/// a node with `role`, whose counters `source` reads.
pub(crate) fn convert_service_counter_checks(
    raw: BTreeMap<String, RawCount>,
    topology: &TopologySpec,
    table: &str,
    role: NodeRole,
    source: CounterSource,
) -> std::result::Result<Vec<CounterCheck>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if !topology.nodes.iter().any(|node| node.role == role) {
        return Err(format!(
            "{table} needs a node with role = \"{}\" (whose counters?)",
            role.name()
        ));
    }
    parse_counter_checks(raw, source)
}

pub(crate) fn parse_counter_checks(
    raw: BTreeMap<String, RawCount>,
    source: CounterSource,
) -> std::result::Result<Vec<CounterCheck>, String> {
    raw.into_iter()
        .map(|(key, value)| match value {
            RawCount::Number(n) => CounterCheck::parse_for(source, &key, &n.to_string()),
            RawCount::Text(text) => CounterCheck::parse_for(source, &key, &text),
        })
        .collect()
}
