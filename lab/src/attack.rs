//! The attacker node of the negative scenarios: `[[attack]]` tables in a scenario, and
//! the engine that carries them out during the transfer.
//!
//! An attack comes from a node with `role = "attacker"` (on a global network, never
//! moves) and aims at one end of the transfer, its *target*. The engine learns the
//! connection's state by **observing** the target's traffic, the way an attacker who
//! can see packets but never the hosts' memory would: an AF_PACKET socket on the
//! gateway's end of the target's uplink (`Attachment::port` in
//! `Attachment::gateway_node`), opened before the transfer starts so that it sees
//! the handshake. From that it tracks the latest 4-tuple, sequence numbers,
//! acknowledgments, windows and timestamps of each direction, the target's token
//! and the first MSYN that reached the target.
//!
//! **What the attacker knows.** Tokens and sequence state, the worst case for us.
//! The token of the target's key is read from a real MSYN or Address-Update on the
//! wire when one was seen, else computed from the key the target sent in the clear in
//! its SYN or SYN-ACK. The latter makes this attacker *stronger* than an off-path one
//! (PROTOCOL.md §11.1: an off-path attacker must guess the token too); that is the
//! point: with the right token and in-window numbers, only the MAC and the request
//! number stand between the forgery and the connection. The engine never keeps a key
//! and never computes a MAC: every MAC it sends is random.
//!
//! It injects through a raw IPv4 socket (`IPPROTO_RAW`, so the header is ours) in the
//! attacker's namespace; segments are built with sustain-core's own emit (correct IP
//! and TCP checksums), malformed ones are patched afterwards and re-summed.
//!
//! | kind                    | sent                                                                 |
//! |-------------------------|----------------------------------------------------------------------|
//! | `forged-msyn`           | 3 MSYNs from the attacker's address: right token, request far ahead, random MAC, short Permit with the attacker's address |
//! | `replayed-msyn`         | the first real MSYN seen reaching the target, 3 times, IP source rewritten to the attacker's, after that move completed |
//! | `forged-address-update` | 3 in-window ACKs from the attacker's address with Address-Update (right token, request ahead, random MAC) |
//! | `blind-rst`             | 3 RSTs spoofed from the peer, inside the target's window but not at RCV.NXT (RFC 5961 §3.2) |
//! | `malformed-options`     | (a) kind 253 length 1, (b) an option running past the header, (c) unknown ExID 0xBEEF, (d) Migrate of length 19 — on in-window ACKs spoofed from the peer —, (e) a SYN from the attacker with a truncated Migrate-Permit, (f) an MSYN with a truncated Migrate |
//! | `forged-report`         | to the mobility server: 3 MoveReports of the target's side claiming it moved to the attacker (random MAC), a Register with a random verifier and MAC, a squatting Register (own verifier, its right MAC), version 2, a message cut short, garbage and oversized length fields |
//! | `replayed-report`       | to the mobility server: every control message of the target's captured so far (Register, MoveReport), byte for byte, 3 times |
//! | `forged-ticket`         | to the proxy's relay port (PROTOCOL.md §6.9, §11.5), from the attacker's address, based on the target's real relay MSYN seen on the proxy's uplink: 3 with its ticket id, a request far ahead and a random MAC (`bad_mac`), 3 of it byte for byte (`replayed`), 3 with an unknown ticket id (`unknown_ticket`), 3 to a relay port with no relay (`unknown_port`) |
//!
//! `forged-ticket`'s observer is on the **proxy's** uplink, where every relay MSYN
//! passes whichever NAPT the target is behind; `[expect] proxy_counters` judges the
//! proxy's counters (its `stopped` event).
//!
//! The last two talk to the mobility server (PROTOCOL.md §15, §11.9) over the
//! attacker's own kernel TCP connection, made in its namespace. Their observer is on
//! the **server's** uplink, where every control session passes whichever address the
//! target reports from: a [`ControlView`] reassembles each session's stream and parses
//! it with sustain-core's `control` types; the target's connection id and side come
//! from its first Register (the id is both tokens, not a secret). Every reply of the
//! server is recorded, and `[expect] server_counters` judges the server's counters
//! (its `stopped` event).
//!
//! Each packet is an `attack-<kind>` event in the timeline; report.json gets an
//! `attacks` array, and `[expect] target_counters` judges the target's own counters
//! (sustain-host's `closed` event), which show the forgery was ignored.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sustain_core::auth::{token_of, Key};
use sustain_core::control::{
    Body, ControlRepr, FrameBuffer, Header, Incoming, MoveReport, Register, UNSPECIFIED, VERSION,
};
use sustain_core::verifier::{ConnectionId, Side, Verifier, CONTROL_MAC_LEN, VERIFIER_LEN};
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, AddressUpdate, ExperimentalOption, Ipv4Repr,
    Migrate, MigrateOption, MigratePermit, MigrationOptions, MigrationScratch, OptionScratch,
    RelayMsyn, RelayTicket, SeqNumber, TcpFlags, TcpRepr, Timestamps, EXID_MIGRATE,
    EXID_MIGRATE_PERMIT, EXPERIMENTAL_KIND, IPV4_HEADER_LEN, TCP_HEADER_LEN,
};

use crate::capture::{open_packet_socket, PacketSocketOptions};
use crate::error::{cvt, LabError, Result};
use crate::moves::{MoveSpec, Trigger};
use crate::netns::Netns;
use crate::report::Timeline;
use crate::scenario::Scenario;
use crate::services::SERVER_PORT;
use crate::topology::{NetworkKind, Topology};
use crate::topology::{NodeRole, Plan, SpecPath, TopologySpec};
use crate::transfer::{EndpointKind, Role, TransferResult, TransferSpec};

// ---- the scenario side --------------------------------------------------------------

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

    fn program(self) -> &'static str {
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
    fn symbol(self) -> &'static str {
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
    kind: String,
    from: String,
    target: String,
    at_s: Option<f64>,
    at_ms: Option<f64>,
    after_bytes: Option<RawCount>,
}

/// A number or a text (sizes with units, counter expressions).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawCount {
    Number(u64),
    Text(String),
}

type Problem = (SpecPath, String);

fn problem(index: usize, field: &'static str, message: String) -> Problem {
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
                    RawCount::Text(text) => crate::scenario::parse_size(text)
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

fn duration(seconds: f64) -> std::result::Result<Duration, String> {
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

/// `[expect] server_counters`: the scenario needs a mobility server.
pub(crate) fn convert_server_counter_checks(
    raw: BTreeMap<String, RawCount>,
    topology: &TopologySpec,
) -> std::result::Result<Vec<CounterCheck>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if !topology
        .nodes
        .iter()
        .any(|node| node.role == NodeRole::MobilityServer)
    {
        return Err(
            "server_counters needs a node with role = \"mobility-server\" (whose counters?)".into(),
        );
    }
    parse_counter_checks(raw, CounterSource::Server)
}

/// `[expect] proxy_counters`: the scenario needs a proxy.
pub(crate) fn convert_proxy_counter_checks(
    raw: BTreeMap<String, RawCount>,
    topology: &TopologySpec,
) -> std::result::Result<Vec<CounterCheck>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if !topology
        .nodes
        .iter()
        .any(|node| node.role == NodeRole::Proxy)
    {
        return Err("proxy_counters needs a node with role = \"proxy\" (whose counters?)".into());
    }
    parse_counter_checks(raw, CounterSource::Proxy)
}

fn parse_counter_checks(
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

// ---- what the attacker sees -----------------------------------------------------------

/// One direction of the observed connection.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    seen: bool,
    /// Highest SEQ + LEN sent.
    seq_next: SeqNumber,
    /// Latest acknowledgment.
    ack: Option<SeqNumber>,
    /// Latest window field (unscaled).
    window: u16,
    tsval: Option<u32>,
}

impl Flow {
    fn update(&mut self, tcp: &TcpRepr) {
        let end = tcp.seq + tcp.segment_len();
        if !self.seen || end > self.seq_next {
            self.seq_next = end;
        }
        self.seen = true;
        if tcp.flags.ack() {
            self.ack = Some(tcp.ack);
            self.window = tcp.window;
        }
        if let Some(ts) = tcp.timestamps {
            self.tsval = Some(ts.tsval);
        }
    }
}

/// Where the attacker learned the target's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenSource {
    /// A real MSYN that reached the target.
    Msyn,
    /// A real Address-Update that reached the target.
    AddressUpdate,
    /// Computed from the key in the target's SYN or SYN-ACK (stronger than off-path).
    HandshakeKey,
}

impl TokenSource {
    fn name(self) -> &'static str {
        match self {
            TokenSource::Msyn => "msyn",
            TokenSource::AddressUpdate => "address-update",
            TokenSource::HandshakeKey => "handshake-key",
        }
    }
}

/// The transfer's connection as seen on the target's uplink.
#[derive(Debug)]
struct ConnectionView {
    target_addr: Ipv4Addr,
    /// The accepting end's port: one end of the connection always has it.
    port: u16,
    /// Addresses of the attacker nodes: the target sending there means a forgery
    /// took.
    attackers: Vec<Ipv4Addr>,
    target_end: Option<SocketAddrV4>,
    /// Where the target currently sends.
    peer_end: Option<SocketAddrV4>,
    from_target: Flow,
    from_peer: Flow,
    target_window_shift: Option<u8>,
    peer_window_shift: Option<u8>,
    target_syn_timestamps: bool,
    peer_syn_timestamps: bool,
    token: Option<(u32, TokenSource)>,
    /// The first MSYN that reached the target (whole IP packet) and its source.
    first_msyn: Option<(Vec<u8>, SocketAddrV4)>,
    /// Newest request number seen in an MSYN or Address-Update to the target.
    latest_request: Option<u32>,
    /// The latest relay MSYN (PROTOCOL.md §6.9) of the connection seen (whole IP
    /// packet), on the proxy's uplink.
    relay_msyn: Option<Vec<u8>>,
    /// The target sent a non-SYN segment to the first MSYN's source: that move
    /// completed (a responder sends nothing but MSYN-ACKs before confirmation).
    migration_done: bool,
    /// Segments the target sent to an attacker address, and SYN-ACKs among them.
    to_attacker: u64,
    syn_acks_to_attacker: u64,
    /// Fingerprints of the TCP segments we injected, so they do not count as the
    /// peer's.
    injected: HashSet<u64>,
    /// IPv4 packets seen, and segments of the connection among them.
    packets: u64,
    segments: u64,
}

/// A hash of a packet's TCP segment (unchanged by forwarding, unlike TTL and the IP
/// checksum).
fn segment_fingerprint(packet: &[u8]) -> Option<u64> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let segment = packet.get(header_len..total)?;
    let mut hasher = DefaultHasher::new();
    segment.hash(&mut hasher);
    Some(hasher.finish())
}

impl ConnectionView {
    fn new(target_addr: Ipv4Addr, port: u16, attackers: Vec<Ipv4Addr>) -> ConnectionView {
        ConnectionView {
            target_addr,
            port,
            attackers,
            target_end: None,
            peer_end: None,
            from_target: Flow::default(),
            from_peer: Flow::default(),
            target_window_shift: None,
            peer_window_shift: None,
            target_syn_timestamps: false,
            peer_syn_timestamps: false,
            token: None,
            first_msyn: None,
            latest_request: None,
            relay_msyn: None,
            migration_done: false,
            to_attacker: 0,
            syn_acks_to_attacker: 0,
            injected: HashSet::new(),
            packets: 0,
            segments: 0,
        }
    }

    /// Takes in one IPv4 packet seen on the uplink. Anything that is not a valid
    /// TCP segment of the transfer's connection is ignored.
    fn observe(&mut self, packet: &[u8]) {
        self.packets += 1;
        let Ok((ip, tcp)) = parse_ipv4_tcp(packet) else {
            return;
        };
        if tcp.src_port != self.port && tcp.dst_port != self.port {
            return;
        }
        if segment_fingerprint(packet).is_some_and(|fp| self.injected.contains(&fp)) {
            return;
        }
        let syn_without_migrate = |options: &MigrationOptions| {
            tcp.flags.syn() && options.migrate.is_none() && !tcp.flags.rst()
        };
        // Malformed sustain options: the segment still counts as TCP.
        let options = MigrationOptions::from_repr(&tcp).unwrap_or_default();
        // A relay MSYN, wherever its NAPT put its source (the observer of a
        // `forged-ticket` is on the proxy's uplink).
        if tcp.flags.syn()
            && !tcp.flags.ack()
            && !self.attackers.contains(&ip.src)
            && matches!(options.relay(), Some(RelayTicket::Msyn(_)))
        {
            let total = usize::from(u16::from_be_bytes([
                packet.get(2).copied().unwrap_or(0),
                packet.get(3).copied().unwrap_or(0),
            ]));
            self.relay_msyn = Some(packet.get(..total).unwrap_or(packet).to_vec());
        }
        if ip.src == self.target_addr {
            if self.attackers.contains(&ip.dst) {
                self.to_attacker += 1;
                if tcp.flags.syn() && tcp.flags.ack() {
                    self.syn_acks_to_attacker += 1;
                }
                return;
            }
            self.segments += 1;
            let remote = SocketAddrV4::new(ip.dst, tcp.dst_port);
            self.target_end = Some(SocketAddrV4::new(ip.src, tcp.src_port));
            self.peer_end = Some(remote);
            self.from_target.update(&tcp);
            if syn_without_migrate(&options) {
                self.target_window_shift = tcp.window_scale;
                self.target_syn_timestamps = tcp.timestamps.is_some();
                if let (None, Some(key)) = (self.token, options.permit.and_then(|p| p.key)) {
                    self.token = Some((token_of(Key(key)).0, TokenSource::HandshakeKey));
                }
            }
            if !tcp.flags.syn()
                && self
                    .first_msyn
                    .as_ref()
                    .is_some_and(|(_, src)| *src == remote)
            {
                self.migration_done = true;
            }
        } else if ip.dst == self.target_addr {
            if self.attackers.contains(&ip.src) {
                return;
            }
            self.segments += 1;
            self.from_peer.update(&tcp);
            let is_msyn = tcp.flags.syn() && !tcp.flags.ack() && !tcp.flags.rst();
            if let (true, Some(MigrateOption::Msyn(migrate))) = (is_msyn, options.migrate) {
                if self.first_msyn.is_none() {
                    let total = usize::from(u16::from_be_bytes([
                        packet.get(2).copied().unwrap_or(0),
                        packet.get(3).copied().unwrap_or(0),
                    ]));
                    let bytes = packet.get(..total).unwrap_or(packet).to_vec();
                    self.first_msyn = Some((bytes, SocketAddrV4::new(ip.src, tcp.src_port)));
                }
                self.token = Some((migrate.token, TokenSource::Msyn));
                self.note_request(migrate.request);
            }
            if let Some(update) = options.address_update {
                if self
                    .token
                    .is_none_or(|(_, source)| source != TokenSource::Msyn)
                {
                    self.token = Some((update.token, TokenSource::AddressUpdate));
                }
                self.note_request(update.request);
            }
            if syn_without_migrate(&options) {
                self.peer_window_shift = tcp.window_scale;
                self.peer_syn_timestamps = tcp.timestamps.is_some();
            }
        }
    }

    fn note_request(&mut self, request: u32) {
        // RFC 1982 serial arithmetic, as the receiver compares them (PROTOCOL.md §4.5).
        let newer = self
            .latest_request
            .is_none_or(|latest| (request.wrapping_sub(latest) as i32) > 0);
        if newer {
            self.latest_request = Some(request);
        }
    }

    /// Window scaling is in force only if both SYNs carried it (RFC 7323 §2.2).
    fn target_window(&self) -> usize {
        let shift = match (self.target_window_shift, self.peer_window_shift) {
            (Some(shift), Some(_)) => shift.min(14),
            _ => 0,
        };
        usize::from(self.from_target.window) << shift
    }

    fn timestamps(&self) -> bool {
        self.target_syn_timestamps && self.peer_syn_timestamps
    }

    /// Timestamps for a segment posing as the peer's: its newest TSval (never older
    /// than the target's TS.Recent, so PAWS lets it through) and the target's newest
    /// as the echo.
    fn peer_timestamps(&self) -> Option<Timestamps> {
        self.timestamps().then(|| Timestamps {
            tsval: self.from_peer.tsval.unwrap_or(0),
            tsecr: self.from_target.tsval.unwrap_or(0),
        })
    }

    fn ends(&self) -> std::result::Result<(SocketAddrV4, SocketAddrV4), String> {
        match (self.target_end, self.peer_end, self.from_peer.seen) {
            (Some(target), Some(peer), true) => Ok((target, peer)),
            _ => Err("no traffic of the connection seen on the target's uplink yet".into()),
        }
    }

    fn token(&self) -> std::result::Result<(u32, TokenSource), String> {
        self.token
            .ok_or_else(|| "no token seen (no Migrate-Permit in the target's SYN?)".into())
    }

    /// Why `kind` cannot be sent yet, if it cannot.
    fn not_ready_for(&self, kind: AttackKind) -> Option<String> {
        if kind == AttackKind::ForgedTicket {
            return self
                .relay_msyn
                .is_none()
                .then(|| "no relay MSYN of the target's seen on the proxy's uplink yet".into());
        }
        if let Err(why) = self.ends() {
            return Some(why);
        }
        if self.from_target.ack.is_none() {
            return Some("the target has acknowledged nothing yet".into());
        }
        if kind.needs_token() {
            if let Err(why) = self.token() {
                return Some(why);
            }
        }
        match kind {
            AttackKind::ReplayedMsyn if self.first_msyn.is_none() => {
                Some("no MSYN has reached the target yet".into())
            }
            AttackKind::ReplayedMsyn if !self.migration_done => {
                Some("the real migration has not completed yet".into())
            }
            AttackKind::BlindRst if self.target_window() < 2 => {
                Some("the target's window is closed: no in-window RST exists".into())
            }
            _ => None,
        }
    }
}

/// A control message a host sent the server, as captured on the server's uplink.
#[derive(Clone, Debug)]
struct CapturedMessage {
    /// The whole message, byte for byte.
    bytes: Vec<u8>,
    repr: ControlRepr,
    /// Its session's source as the server sees it.
    from: SocketAddrV4,
}

/// One direction of one TCP connection to or from the server, reassembled in
/// sequence order into control messages.
#[derive(Debug, Default)]
struct ControlStream {
    /// The next sequence number expected; `None` until its SYN was seen.
    next: Option<SeqNumber>,
    frames: FrameBuffer,
    /// A gap (a segment beyond `next`): the rest of the stream is not read.
    lost: bool,
}

impl ControlStream {
    /// Appends what `tcp` adds to the stream in order; returns the whole
    /// messages it completes.
    fn push(&mut self, tcp: &TcpRepr) -> Vec<Vec<u8>> {
        if tcp.flags.syn() {
            *self = ControlStream {
                next: Some(tcp.seq + 1),
                ..ControlStream::default()
            };
            return Vec::new();
        }
        let Some(next) = self.next else {
            return Vec::new();
        };
        if self.lost || tcp.payload.is_empty() {
            return Vec::new();
        }
        let end = tcp.seq + tcp.payload.len();
        if tcp.seq > next {
            self.lost = true;
            return Vec::new();
        }
        if end <= next {
            return Vec::new(); // a retransmission of what we have
        }
        let skip = next - tcp.seq;
        self.frames
            .push(tcp.payload.get(skip..).unwrap_or_default());
        self.next = Some(end);
        let mut messages = Vec::new();
        while let Ok(Some(frame)) = self.frames.next_frame() {
            messages.push(frame);
        }
        messages
    }
}

/// The mobility server's control sessions as seen on the server's uplink: the
/// target's own control messages (to replay, and whose connection id and side a
/// forgery names) and the notices the server sends.
#[derive(Debug)]
struct ControlView {
    server: SocketAddrV4,
    /// The target's initial address: the direct address of its first Register.
    target_addr: Ipv4Addr,
    attackers: Vec<Ipv4Addr>,
    streams: HashMap<(SocketAddrV4, SocketAddrV4), ControlStream>,
    /// The target's connection id and side (PROTOCOL.md §15.2), from its Register.
    target_conn: Option<(ConnectionId, Side)>,
    /// Every message of the target's (connection, side), in the order seen.
    captured: Vec<CapturedMessage>,
    /// Request numbers of the target's the server acknowledged.
    acked: Vec<u32>,
    /// PeerLocations the server sent, and those naming an attacker's address.
    notices: u64,
    notices_to_attacker: u64,
    packets: u64,
    segments: u64,
}

impl ControlView {
    fn new(server: SocketAddrV4, target_addr: Ipv4Addr, attackers: Vec<Ipv4Addr>) -> ControlView {
        ControlView {
            server,
            target_addr,
            attackers,
            streams: HashMap::new(),
            target_conn: None,
            captured: Vec::new(),
            acked: Vec::new(),
            notices: 0,
            notices_to_attacker: 0,
            packets: 0,
            segments: 0,
        }
    }

    /// Takes in one IPv4 packet seen on the server's uplink. Only TCP segments of
    /// hosts' control sessions count (never the attackers' own).
    fn observe(&mut self, packet: &[u8]) {
        self.packets += 1;
        let Ok((ip, tcp)) = parse_ipv4_tcp(packet) else {
            return;
        };
        let src = SocketAddrV4::new(ip.src, tcp.src_port);
        let dst = SocketAddrV4::new(ip.dst, tcp.dst_port);
        let to_server = dst == self.server;
        let host = if to_server {
            src
        } else if src == self.server {
            dst
        } else {
            return;
        };
        if self.attackers.contains(host.ip()) {
            return;
        }
        self.segments += 1;
        let messages = self.streams.entry((src, dst)).or_default().push(&tcp);
        for bytes in messages {
            let Ok((Incoming::Control(repr), _)) = Incoming::parse(&bytes) else {
                continue;
            };
            if to_server {
                self.host_message(bytes, repr, host);
            } else {
                self.server_message(repr);
            }
        }
    }

    fn host_message(&mut self, bytes: Vec<u8>, repr: ControlRepr, from: SocketAddrV4) {
        let conn = (repr.header.conn, repr.header.side);
        if let (None, Body::Register(register)) = (self.target_conn, repr.body) {
            if *register.direct.ip() == self.target_addr {
                self.target_conn = Some(conn);
            }
        }
        if self.target_conn == Some(conn) {
            self.captured.push(CapturedMessage { bytes, repr, from });
        }
    }

    fn server_message(&mut self, repr: ControlRepr) {
        match repr.body {
            Body::PeerLocation(notice) => {
                self.notices += 1;
                if self.attackers.contains(notice.target.ip()) {
                    self.notices_to_attacker += 1;
                }
            }
            Body::Ack(ack) if self.target_conn == Some((repr.header.conn, repr.header.side)) => {
                self.acked.push(ack.request);
            }
            _ => {}
        }
    }

    /// The target's first Register.
    fn register(&self) -> Option<(&CapturedMessage, Register)> {
        self.captured.iter().find_map(|m| match m.repr.body {
            Body::Register(register) => Some((m, register)),
            _ => None,
        })
    }

    /// The newest request number of the target's seen.
    fn latest_request(&self) -> u32 {
        self.captured
            .iter()
            .map(|m| m.repr.header.number)
            .fold(0, |latest, n| {
                if (n.wrapping_sub(latest) as i32) > 0 {
                    n
                } else {
                    latest
                }
            })
    }

    /// The target's current direct address: its latest MoveReport's new one, else
    /// its Register's.
    fn target_direct(&self) -> Option<SocketAddrV4> {
        self.captured.iter().rev().find_map(|m| match m.repr.body {
            Body::MoveReport(report) => Some(report.new_direct),
            Body::Register(register) => Some(register.direct),
            _ => None,
        })
    }

    /// Why `kind` cannot be sent yet, if it cannot.
    fn not_ready_for(&self, kind: AttackKind) -> Option<String> {
        if self.target_conn.is_none() {
            return Some(format!(
                "no Register from {} seen on the server's uplink yet",
                self.target_addr
            ));
        }
        let acked_report = self.captured.iter().any(|m| {
            matches!(m.repr.body, Body::MoveReport(_)) && self.acked.contains(&m.repr.header.number)
        });
        match kind {
            AttackKind::ReplayedReport if !acked_report => {
                Some("no MoveReport of the target's acknowledged by the server yet".into())
            }
            _ => None,
        }
    }
}

// ---- what the attacker sends --------------------------------------------------------------

/// One malformed-options case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MalformedCase {
    KindLengthOne,
    LengthPastHeader,
    UnknownExid,
    MigrateLength19,
    SynTruncatedPermit,
    MsynTruncatedMigrate,
}

impl MalformedCase {
    const ALL: [MalformedCase; 6] = [
        MalformedCase::KindLengthOne,
        MalformedCase::LengthPastHeader,
        MalformedCase::UnknownExid,
        MalformedCase::MigrateLength19,
        MalformedCase::SynTruncatedPermit,
        MalformedCase::MsynTruncatedMigrate,
    ];

    fn name(self) -> &'static str {
        match self {
            MalformedCase::KindLengthOne => "a-kind253-length-1",
            MalformedCase::LengthPastHeader => "b-length-past-header",
            MalformedCase::UnknownExid => "c-unknown-exid-beef",
            MalformedCase::MigrateLength19 => "d-migrate-length-19",
            MalformedCase::SynTruncatedPermit => "e-syn-truncated-permit",
            MalformedCase::MsynTruncatedMigrate => "f-msyn-truncated-migrate",
        }
    }
}

/// An unassigned ExID (RFC 6994): receivers must leave it alone.
const UNKNOWN_EXID: u16 = 0xBEEF;
/// MSS the forged SYNs announce.
const FORGED_MSS: u16 = 1460;

/// One packet to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    ForgedMsyn {
        nth: u32,
    },
    Replay,
    ForgedAddressUpdate {
        nth: u32,
    },
    BlindRst,
    Malformed(MalformedCase),
    /// Bytes for the mobility server, over the attacker's own TCP connection.
    Control(ControlStep),
    /// A relay MSYN to the proxy (`forged-ticket`).
    Ticket(TicketCase, u32),
}

/// What a `forged-ticket` packet does wrong (PROTOCOL.md §6.9 steps 2-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum TicketCase {
    /// The real ticket id, a request far ahead, a random MAC (`bad_mac`).
    ForgedMac,
    /// The real relay MSYN byte for byte, from the attacker (`replayed`).
    Replayed,
    /// An unknown ticket id (`unknown_ticket`).
    UnknownTicket,
    /// A relay port with no relay (`unknown_port`).
    OtherPort,
}

impl TicketCase {
    const ALL: [TicketCase; 4] = [
        TicketCase::ForgedMac,
        TicketCase::Replayed,
        TicketCase::UnknownTicket,
        TicketCase::OtherPort,
    ];

    fn name(self) -> &'static str {
        match self {
            TicketCase::ForgedMac => "forged-mac",
            TicketCase::Replayed => "replayed",
            TicketCase::UnknownTicket => "unknown-ticket",
            TicketCase::OtherPort => "other-port",
        }
    }
}

/// The relay port `forged-ticket` aims at when a port without a relay is wanted: the
/// last of the lab's relay range (the scenarios allocate one relay, the first).
const UNUSED_RELAY_PORT: u16 = 40999;

/// One thing `forged-report` or `replayed-report` sends the mobility server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ControlStep {
    /// A MoveReport of the target's side claiming it moved to the attacker's
    /// address: request far ahead, random MAC (`BadMac`).
    ForgedMoveReport { nth: u32 },
    /// A Register of the target's side with the attacker's address, a random
    /// verifier and a random MAC (`BadMac`).
    ForgedRegister,
    /// A Register of the target's side under a verifier of the attacker's own, its
    /// MAC right for that verifier: squatting the id (`Conflict`, PROTOCOL.md
    /// §11.9).
    SquattingRegister,
    /// A forged MoveReport with version 2 (`UnknownVersion`; the session goes on).
    UnknownVersion,
    /// The first 30 bytes of a forged MoveReport, then the end of the session
    /// (`truncated`, counted when the server sees it close).
    Truncated,
    /// A length field of 2, on a new session (`Garbage`; the server closes it).
    Garbage,
    /// A length field of 300, on a new session (`Oversized`; closed too).
    Oversized,
    /// Every captured message of the target's, byte for byte, in the order seen.
    Replay { round: u32 },
}

impl ControlStep {
    /// `forged-report`'s steps, in order.
    const FORGED: [ControlStep; 9] = [
        ControlStep::ForgedMoveReport { nth: 0 },
        ControlStep::ForgedMoveReport { nth: 1 },
        ControlStep::ForgedMoveReport { nth: 2 },
        ControlStep::ForgedRegister,
        ControlStep::SquattingRegister,
        ControlStep::UnknownVersion,
        ControlStep::Truncated,
        ControlStep::Garbage,
        ControlStep::Oversized,
    ];

    fn name(self) -> &'static str {
        match self {
            ControlStep::ForgedMoveReport { .. } => "forged-move-report",
            ControlStep::ForgedRegister => "forged-register",
            ControlStep::SquattingRegister => "squatting-register",
            ControlStep::UnknownVersion => "unknown-version",
            ControlStep::Truncated => "truncated",
            ControlStep::Garbage => "garbage",
            ControlStep::Oversized => "oversized",
            ControlStep::Replay { .. } => "replay",
        }
    }

    /// Sent on a session of its own (the server closes it after its reply).
    fn fresh_session(self) -> bool {
        matches!(self, ControlStep::Garbage | ControlStep::Oversized)
    }

    /// The session ends after it (the attacker closes its side).
    fn ends_session(self) -> bool {
        matches!(self, ControlStep::Truncated)
    }
}

/// The packets of one attack with their offsets from its trigger.
fn steps_of(kind: AttackKind) -> Vec<(Duration, Step)> {
    let spaced = |count: u32, every_ms: u64, step: &dyn Fn(u32) -> Step| {
        (0..count)
            .map(|n| (Duration::from_millis(u64::from(n) * every_ms), step(n)))
            .collect::<Vec<_>>()
    };
    // Transcripts bucket gaps in RTTs of at least 20 ms (+3-9rtt below 200 ms, +long
    // above): 400 ms and 100 ms apart stay well inside one bucket, so transcripts of
    // two runs agree.
    match kind {
        AttackKind::ForgedMsyn => spaced(3, 400, &|nth| Step::ForgedMsyn { nth }),
        AttackKind::ReplayedMsyn => spaced(3, 400, &|_| Step::Replay),
        AttackKind::ForgedAddressUpdate => spaced(3, 400, &|nth| Step::ForgedAddressUpdate { nth }),
        // Spaced well beyond any RTT, so each is judged against fresh state.
        AttackKind::BlindRst => spaced(3, 400, &|_| Step::BlindRst),
        AttackKind::MalformedOptions => MalformedCase::ALL
            .iter()
            .enumerate()
            .map(|(n, case)| {
                (
                    Duration::from_millis(n as u64 * 100),
                    Step::Malformed(*case),
                )
            })
            .collect(),
        // Replies come back within a millisecond: 150 ms apart, each is answered
        // before the next.
        AttackKind::ForgedReport => ControlStep::FORGED
            .iter()
            .enumerate()
            .map(|(n, step)| (Duration::from_millis(n as u64 * 150), Step::Control(*step)))
            .collect(),
        AttackKind::ReplayedReport => spaced(3, 300, &|round| {
            Step::Control(ControlStep::Replay { round })
        }),
        // 400 ms apart like the others: +long in the transcripts, and over a
        // thousand data segments between two of them at anything above 30 Mbit/s
        // (the 1000+ bucket), so neither a late wake-up nor a slower transfer on
        // a loaded machine changes the transcript.
        AttackKind::ForgedTicket => TicketCase::ALL
            .iter()
            .flat_map(|case| (0..3).map(move |nth| Step::Ticket(*case, nth)))
            .enumerate()
            .map(|(n, step)| (Duration::from_millis(n as u64 * 400), step))
            .collect(),
    }
}

/// A packet ready to send and what it carries (for the timeline and the report).
#[derive(Debug)]
struct Forged {
    packet: Vec<u8>,
    detail: Map<String, Value>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let rest = bytes.get_mut(filled..).unwrap_or_default();
        // SAFETY: `rest` is valid for writes of its length.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got <= 0 {
            break;
        }
        filled += usize::try_from(got).unwrap_or(0);
    }
    bytes
}

fn random_mac() -> [u8; 8] {
    random_bytes()
}

/// Emits `tcp` from `src` to `dst` as a whole IPv4 packet.
fn emit_packet(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    mut tcp: TcpRepr,
) -> std::result::Result<Vec<u8>, String> {
    tcp.src_port = src.port();
    tcp.dst_port = dst.port();
    let ip = Ipv4Repr {
        ident: u16::from_be_bytes(random_bytes()),
        ..Ipv4Repr::new(*src.ip(), *dst.ip())
    };
    let mut packet = vec![0u8; ipv4_tcp_len(&tcp)];
    let len = emit_ipv4_tcp(&ip, &tcp, &mut packet).map_err(|e| format!("emitting: {e}"))?;
    packet.truncate(len);
    Ok(packet)
}

/// The internet checksum's one's-complement sum of `bytes` (RFC 1071), added to
/// `sum`; odd lengths are padded with a zero byte.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let high = pair.first().copied().unwrap_or(0);
        let low = pair.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([high, low]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn fold(sum: u32) -> u16 {
    let mut sum = sum;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes the IPv4 header checksum and the TCP checksum (RFC 9293 §3.1
/// pseudo-header) of a packet whose bytes were changed.
fn refresh_checksums(packet: &mut [u8]) -> std::result::Result<(), String> {
    let short = || "packet too short to re-sum".to_string();
    let header_len = usize::from(packet.first().ok_or_else(short)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([
        *packet.get(2).ok_or_else(short)?,
        *packet.get(3).ok_or_else(short)?,
    ]));
    if header_len < IPV4_HEADER_LEN || total < header_len + TCP_HEADER_LEN || total > packet.len() {
        return Err(short());
    }
    packet.get_mut(10..12).ok_or_else(short)?.fill(0);
    let ip_sum = fold(sum_words(0, packet.get(..header_len).ok_or_else(short)?));
    packet
        .get_mut(10..12)
        .ok_or_else(short)?
        .copy_from_slice(&ip_sum.to_be_bytes());

    let tcp_len = total - header_len;
    packet
        .get_mut(header_len + 16..header_len + 18)
        .ok_or_else(short)?
        .fill(0);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(packet.get(12..20).ok_or_else(short)?);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&u16::try_from(tcp_len).map_err(|_| short())?.to_be_bytes());
    let sum = sum_words(
        sum_words(0, &pseudo),
        packet.get(header_len..total).ok_or_else(short)?,
    );
    packet
        .get_mut(header_len + 16..header_len + 18)
        .ok_or_else(short)?
        .copy_from_slice(&fold(sum).to_be_bytes());
    Ok(())
}

/// Sets the length byte of the kind-253 option with `exid` in `packet`'s TCP
/// options, then re-sums.
fn patch_experimental_length(
    packet: &mut [u8],
    exid: u16,
    length: u8,
) -> std::result::Result<(), String> {
    let header_len = usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4;
    let data_offset = usize::from(packet.get(header_len + 12).copied().unwrap_or(0) >> 4) * 4;
    let options = header_len + TCP_HEADER_LEN..header_len + data_offset;
    let [hi, lo] = exid.to_be_bytes();
    let at = packet
        .get(options.clone())
        .and_then(|bytes| {
            bytes.windows(4).position(|w| {
                w.first() == Some(&EXPERIMENTAL_KIND) && w.get(2..4) == Some(&[hi, lo])
            })
        })
        .ok_or_else(|| format!("no option with ExID {exid:#06x} to patch"))?;
    *packet
        .get_mut(options.start + at + 1)
        .ok_or_else(|| "option outside the packet".to_string())? = length;
    refresh_checksums(packet)
}

/// A `forged-ticket` packet from the target's real relay MSYN (PROTOCOL.md §3.5):
/// the attacker never has a ticket key, so every MAC it sends is random or replayed.
fn forge_ticket(
    view: &ConnectionView,
    case: TicketCase,
    nth: u32,
    attacker: Ipv4Addr,
) -> std::result::Result<Forged, String> {
    let original = view
        .relay_msyn
        .as_deref()
        .ok_or_else(|| "no relay MSYN seen".to_string())?;
    let (ip, tcp) = parse_ipv4_tcp(original).map_err(|e| format!("captured relay MSYN: {e}"))?;
    let options = MigrationOptions::from_repr(&tcp).map_err(|e| format!("its options: {e}"))?;
    let Some(RelayTicket::Msyn(real)) = options.relay() else {
        return Err("the captured segment is not a relay MSYN".into());
    };
    let permit = options
        .permit
        .ok_or_else(|| "the captured relay MSYN has no Permit".to_string())?;
    let packet = if case == TicketCase::Replayed {
        replayed_msyn(original, attacker)?
    } else {
        let ticket = if case == TicketCase::UnknownTicket {
            loop {
                let id = u32::from_be_bytes(random_bytes::<4>());
                if id != real.ticket {
                    break id;
                }
            }
        } else {
            real.ticket
        };
        let forged = RelayTicket::Msyn(RelayMsyn {
            ticket,
            // Far ahead, and different in every packet, so that none of them
            // is a repeat of another (only `Replayed` is a replay).
            request: real.request.wrapping_add(1000 + 10 * case as u32 + nth),
            mac: random_mac(),
        });
        let mut ticket_scratch = OptionScratch::default();
        let forged_options = MigrationOptions {
            permit: Some(permit),
            relay_ticket: Some(forged.to_option(&mut ticket_scratch).data),
            ..MigrationOptions::default()
        };
        let dst_port = if case == TicketCase::OtherPort {
            UNUSED_RELAY_PORT
        } else {
            tcp.dst_port
        };
        let mut repr = TcpRepr {
            seq: tcp.seq,
            ack: tcp.ack,
            flags: TcpFlags::SYN,
            window: tcp.window,
            mss: tcp.mss,
            window_scale: tcp.window_scale,
            ..TcpRepr::default()
        };
        let mut scratch = MigrationScratch::default();
        forged_options
            .attach(&mut scratch, &mut repr)
            .map_err(|e| format!("attaching the options: {e}"))?;
        emit_packet(
            SocketAddrV4::new(attacker, tcp.src_port),
            SocketAddrV4::new(ip.dst, dst_port),
            repr,
        )?
    };
    let (_, sent) = parse_ipv4_tcp(&packet).map_err(|e| format!("forged packet: {e}"))?;
    let sent_options = MigrationOptions::from_repr(&sent).unwrap_or_default();
    let extra = match sent_options.relay() {
        Some(RelayTicket::Msyn(m)) => json!({
            "case": case.name(),
            "ticket": format!("{:08x}", m.ticket),
            "request": m.request,
            "mac": hex::encode(m.mac),
        }),
        _ => json!({ "case": case.name() }),
    };
    Ok(Forged {
        detail: describe(&packet, extra),
        packet,
    })
}

/// The first MSYN again, from `attacker` instead of its real source: byte for byte
/// except the IP source and the two checksums.
fn replayed_msyn(original: &[u8], attacker: Ipv4Addr) -> std::result::Result<Vec<u8>, String> {
    let mut packet = original.to_vec();
    packet
        .get_mut(12..16)
        .ok_or_else(|| "captured MSYN too short".to_string())?
        .copy_from_slice(&attacker.octets());
    refresh_checksums(&mut packet)?;
    Ok(packet)
}

fn describe(packet: &[u8], extra: Value) -> Map<String, Value> {
    let mut detail = Map::new();
    if let Ok((ip, tcp)) = parse_ipv4_tcp(packet) {
        detail.insert(
            "src".into(),
            json!(SocketAddrV4::new(ip.src, tcp.src_port).to_string()),
        );
        detail.insert(
            "dst".into(),
            json!(SocketAddrV4::new(ip.dst, tcp.dst_port).to_string()),
        );
        detail.insert("flags".into(), json!(flag_names(tcp.flags)));
        detail.insert("seq".into(), json!(tcp.seq.0));
        if tcp.flags.ack() {
            detail.insert("ack".into(), json!(tcp.ack.0));
        }
    } else if packet.len() >= IPV4_HEADER_LEN {
        // Deliberately unparseable (malformed options): addresses from the header.
        let address = |at: usize| {
            packet
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| Ipv4Addr::from(b).to_string())
        };
        detail.insert("src".into(), json!(address(12)));
        detail.insert("dst".into(), json!(address(16)));
    }
    if let Value::Object(extra) = extra {
        detail.extend(extra);
    }
    detail
}

fn flag_names(flags: TcpFlags) -> String {
    [
        (TcpFlags::SYN, "S"),
        (TcpFlags::FIN, "F"),
        (TcpFlags::RST, "R"),
        (TcpFlags::PSH, "P"),
        (TcpFlags::ACK, "."),
    ]
    .iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, name)| *name)
    .collect()
}

/// Builds the packet of `step` from what the view knows. `attacker` is the
/// attacker's own address.
fn forge(
    view: &ConnectionView,
    step: Step,
    attacker: Ipv4Addr,
) -> std::result::Result<Forged, String> {
    if let Step::Ticket(case, nth) = step {
        // Built from the relay MSYN alone: the proxy's observer sees no `ends`.
        return forge_ticket(view, case, nth, attacker);
    }
    let (target, peer) = view.ends()?;
    let target_ack = view
        .from_target
        .ack
        .ok_or_else(|| "the target has acknowledged nothing yet".to_string())?;
    // The attacker poses as the peer having moved to the attacker's address.
    let attacker_end = SocketAddrV4::new(attacker, peer.port());
    // In-window from the target's view: the peer's next byte, acknowledging what the
    // peer last acknowledged.
    let spoofed_ack = |options: [Option<ExperimentalOption<'static>>; 4]| TcpRepr {
        seq: view.from_peer.seq_next,
        ack: view.from_peer.ack.unwrap_or(SeqNumber(0)),
        flags: TcpFlags::ACK,
        window: view.from_peer.window,
        timestamps: view.peer_timestamps(),
        experimental: options,
        ..TcpRepr::default()
    };
    let msyn_base = || TcpRepr {
        // PROTOCOL.md §7: an MSYN's sequence number is the mover's SND.UNA - 1,
        // which the target's latest ACK tells.
        seq: target_ack - 1,
        flags: TcpFlags::SYN,
        window: u16::MAX,
        mss: Some(FORGED_MSS),
        window_scale: view.peer_window_shift,
        ..TcpRepr::default()
    };
    let forged = match step {
        Step::ForgedMsyn { nth } | Step::ForgedAddressUpdate { nth } => {
            let (token, token_from) = view.token()?;
            // Far ahead of anything real, yet "after" in serial arithmetic.
            let request = view.latest_request.unwrap_or(0).wrapping_add(1000 + nth);
            let mac = random_mac();
            let extra = json!({
                "token": format!("{token:08x}"),
                "token_from": token_from.name(),
                "request": request,
                "mac": hex::encode(mac),
            });
            let mut scratch = MigrationScratch::default();
            if matches!(step, Step::ForgedMsyn { .. }) {
                let options = MigrationOptions {
                    migrate: Some(MigrateOption::Msyn(Migrate {
                        token,
                        request,
                        mac,
                    })),
                    permit: Some(MigratePermit {
                        addr: attacker,
                        port: attacker_end.port(),
                        key: None,
                    }),
                    ..MigrationOptions::default()
                };
                let mut tcp = msyn_base();
                options
                    .attach(&mut scratch, &mut tcp)
                    .map_err(|e| e.to_string())?;
                let packet = emit_packet(attacker_end, target, tcp)?;
                Forged {
                    detail: describe(&packet, extra),
                    packet,
                }
            } else {
                let options = MigrationOptions {
                    address_update: Some(AddressUpdate {
                        old_addr: *peer.ip(),
                        token,
                        request,
                        mac,
                    }),
                    ..MigrationOptions::default()
                };
                let mut tcp = spoofed_ack([None; 4]);
                options
                    .attach(&mut scratch, &mut tcp)
                    .map_err(|e| e.to_string())?;
                let packet = emit_packet(attacker_end, target, tcp)?;
                Forged {
                    detail: describe(&packet, extra),
                    packet,
                }
            }
        }
        Step::Replay => {
            let (original, source) = view
                .first_msyn
                .as_ref()
                .ok_or_else(|| "no MSYN seen".to_string())?;
            let packet = replayed_msyn(original, attacker)?;
            let request =
                parse_ipv4_tcp(original).ok().and_then(
                    |(_, tcp)| match MigrationOptions::from_repr(&tcp).ok()?.migrate? {
                        MigrateOption::Msyn(m) => Some(m.request),
                        _ => None,
                    },
                );
            Forged {
                detail: describe(
                    &packet,
                    json!({"replay_of": source.to_string(), "request": request}),
                ),
                packet,
            }
        }
        Step::BlindRst => {
            // RFC 5961 §3.2: inside [RCV.NXT, RCV.NXT + RCV.WND) but not RCV.NXT. The
            // target's latest ACK is its RCV.NXT as of then (it only grows, by less
            // than a window), so half its window on lands inside and past it.
            let window = view.target_window();
            let offset = (window / 2).max(1);
            let tcp = TcpRepr {
                seq: target_ack + offset,
                flags: TcpFlags::RST,
                ..TcpRepr::default()
            };
            let packet = emit_packet(peer, target, tcp)?;
            Forged {
                detail: describe(
                    &packet,
                    json!({"target_ack": target_ack.0, "target_window": window, "offset": offset}),
                ),
                packet,
            }
        }
        Step::Malformed(case) => forge_malformed(view, case, attacker_end, target, peer)?,
        Step::Control(step) => return Err(format!("{} goes to the server", step.name())),
        Step::Ticket(case, nth) => forge_ticket(view, case, nth, attacker)?,
    };
    Ok(forged)
}

fn forge_malformed(
    view: &ConnectionView,
    case: MalformedCase,
    attacker_end: SocketAddrV4,
    target: SocketAddrV4,
    peer: SocketAddrV4,
) -> std::result::Result<Forged, String> {
    let option = |exid: u16, data: &'static [u8]| Some(ExperimentalOption { exid, data });
    let spoofed_ack = |first: Option<ExperimentalOption<'static>>| TcpRepr {
        seq: view.from_peer.seq_next,
        ack: view.from_peer.ack.unwrap_or(SeqNumber(0)),
        flags: TcpFlags::ACK,
        window: view.from_peer.window,
        timestamps: view.peer_timestamps(),
        experimental: [first, None, None, None],
        ..TcpRepr::default()
    };
    let syn = |options: [Option<ExperimentalOption<'static>>; 4], seq: SeqNumber| TcpRepr {
        seq,
        flags: TcpFlags::SYN,
        window: u16::MAX,
        mss: Some(FORGED_MSS),
        experimental: options,
        ..TcpRepr::default()
    };
    const ZEROS: &[u8] = &[0; 20];
    let packet = match case {
        MalformedCase::KindLengthOne => {
            let mut packet = emit_packet(peer, target, spoofed_ack(option(UNKNOWN_EXID, &[])))?;
            patch_experimental_length(&mut packet, UNKNOWN_EXID, 1)?;
            packet
        }
        MalformedCase::LengthPastHeader => {
            let mut packet =
                emit_packet(peer, target, spoofed_ack(option(UNKNOWN_EXID, &ZEROS[..4])))?;
            // 40 from an option that starts after the first 20 header bytes of
            // options or more runs past the 60-byte maximum header, and in any case
            // past this one.
            patch_experimental_length(&mut packet, UNKNOWN_EXID, 40)?;
            packet
        }
        MalformedCase::UnknownExid => emit_packet(
            peer,
            target,
            spoofed_ack(option(UNKNOWN_EXID, &[0xde, 0xad, 0xbe, 0xef])),
        )?,
        // Migrate's forms are 12, 20 and 24 bytes long.
        MalformedCase::MigrateLength19 => emit_packet(
            peer,
            target,
            spoofed_ack(option(EXID_MIGRATE, &ZEROS[..15])),
        )?,
        // A full Permit is 18 bytes, a short one 10: 9 is neither.
        MalformedCase::SynTruncatedPermit => emit_packet(
            attacker_end,
            target,
            syn(
                [option(EXID_MIGRATE_PERMIT, &ZEROS[..5]), None, None, None],
                SeqNumber(u32::from_be_bytes(random_bytes())),
            ),
        )?,
        // An MSYN's Migrate is 20 bytes: 14 is a cut one, next to a valid short Permit.
        MalformedCase::MsynTruncatedMigrate => {
            let permit = MigratePermit {
                addr: *attacker_end.ip(),
                port: attacker_end.port(),
                key: None,
            };
            let mut permit_data = [0u8; MigratePermit::SHORT_LEN];
            permit
                .emit(&mut permit_data)
                .map_err(|e| format!("emitting a Permit: {e}"))?;
            let target_ack = view.from_target.ack.unwrap_or(SeqNumber(1));
            let tcp = TcpRepr {
                experimental: [
                    option(EXID_MIGRATE, &ZEROS[..10]),
                    Some(ExperimentalOption {
                        exid: EXID_MIGRATE_PERMIT,
                        data: &permit_data,
                    }),
                    None,
                    None,
                ],
                ..syn([None; 4], target_ack - 1)
            };
            emit_packet(attacker_end, target, tcp)?
        }
    };
    Ok(Forged {
        detail: describe(&packet, json!({"case": case.name()})),
        packet,
    })
}

/// Messages for the mobility server, ready to write, and what they carry.
#[derive(Debug)]
struct ForgedControl {
    /// Written in order, each whole.
    messages: Vec<Vec<u8>>,
    detail: Map<String, Value>,
}

/// Replaces a message's MAC (its last 16 bytes) with random bytes.
fn randomize_mac(message: &mut [u8]) {
    let len = message.len();
    if let Some(mac) = message.get_mut(len.saturating_sub(CONTROL_MAC_LEN)..) {
        mac.copy_from_slice(&random_bytes::<CONTROL_MAC_LEN>()[..mac.len()]);
    }
}

/// One line per message: `move-report 55c53f5d:18f9781b high #1001 ...`, or what
/// could be read of a malformed one.
fn describe_control(bytes: &[u8]) -> String {
    match Incoming::parse(bytes) {
        Ok((Incoming::Control(repr), _)) => repr.to_string(),
        Ok((Incoming::Error(error), _)) => format!(
            "error {} (type {:#04x}, conn {}, #{})",
            error.code, error.offending_type, error.conn, error.number
        ),
        Err(e) => format!("{} bytes: {e}", bytes.len()),
    }
}

/// Builds what `step` sends the server from what the control view captured.
/// `attacker` is the attacker's own address.
fn forge_control(
    view: &ControlView,
    step: ControlStep,
    attacker: Ipv4Addr,
) -> std::result::Result<ForgedControl, String> {
    let (conn, side) = view
        .target_conn
        .ok_or_else(|| "no Register of the target's seen".to_string())?;
    let (_, register) = view
        .register()
        .ok_or_else(|| "no Register of the target's seen".to_string())?;
    let direct = view.target_direct().unwrap_or(register.direct);
    // The attacker claims the target now sits at its address, on the same port.
    let claimed = SocketAddrV4::new(attacker, direct.port());
    let request = view.latest_request().wrapping_add(1000);
    let header = |number: u32| Header { conn, side, number };
    let move_report = |number: u32| {
        let mut bytes = ControlRepr {
            header: header(number),
            body: Body::MoveReport(MoveReport {
                old_direct: direct,
                old_seen: UNSPECIFIED,
                old_peer_direct: UNSPECIFIED,
                old_peer_seen: register.peer_seen,
                new_direct: claimed,
            }),
        }
        // Any verifier: the MAC is replaced below.
        .to_vec(&Verifier([0; VERIFIER_LEN]));
        randomize_mac(&mut bytes);
        bytes
    };
    let register_with = |verifier: Verifier, number: u32| {
        ControlRepr {
            header: header(number),
            body: Body::Register(Register {
                verifier,
                direct: claimed,
                peer_seen: register.peer_seen,
                last_notice: 0,
            }),
        }
        .to_vec(&verifier)
    };
    let messages: Vec<Vec<u8>> = match step {
        ControlStep::ForgedMoveReport { nth } => vec![move_report(request.wrapping_add(nth))],
        ControlStep::ForgedRegister => {
            let mut bytes = register_with(Verifier(random_bytes()), request.wrapping_add(10));
            randomize_mac(&mut bytes);
            vec![bytes]
        }
        ControlStep::SquattingRegister => {
            vec![register_with(
                Verifier(random_bytes()),
                request.wrapping_add(11),
            )]
        }
        ControlStep::UnknownVersion => {
            let mut bytes = move_report(request.wrapping_add(12));
            if let Some(version) = bytes.first_mut() {
                *version = VERSION + 1;
            }
            vec![bytes]
        }
        ControlStep::Truncated => {
            let mut bytes = move_report(request.wrapping_add(13));
            bytes.truncate(30);
            vec![bytes]
        }
        // Version, type, length: all a receiver can rely on (PROTOCOL.md §15.3).
        ControlStep::Garbage => vec![vec![VERSION, 0x02, 0x00, 0x02, 0xde, 0xad, 0xbe, 0xef]],
        ControlStep::Oversized => {
            let mut bytes = vec![VERSION, 0x02, 0x01, 0x2c];
            bytes.resize(64, 0);
            vec![bytes]
        }
        ControlStep::Replay { .. } => view.captured.iter().map(|m| m.bytes.clone()).collect(),
    };
    if messages.is_empty() {
        return Err("nothing of the target's captured to replay".into());
    }
    let mut detail = Map::new();
    detail.insert("step".into(), json!(step.name()));
    detail.insert("server".into(), json!(view.server.to_string()));
    detail.insert("conn".into(), json!(conn.to_string()));
    detail.insert("side".into(), json!(side.to_string()));
    detail.insert(
        "messages".into(),
        json!(messages
            .iter()
            .map(|m| describe_control(m))
            .collect::<Vec<_>>()),
    );
    if let ControlStep::Replay { round } = step {
        detail.insert("round".into(), json!(round));
        detail.insert(
            "replay_of".into(),
            json!(view
                .captured
                .iter()
                .map(|m| m.from.to_string())
                .collect::<Vec<_>>()),
        );
    } else if !step.fresh_session() {
        detail.insert("claimed".into(), json!(claimed.to_string()));
    }
    Ok(ForgedControl { messages, detail })
}

// ---- sockets ------------------------------------------------------------------------------

/// The observer's tap on `ifname` (in the calling thread's namespace): both
/// directions, non-blocking.
fn open_observer(ifname: &str) -> io::Result<OwnedFd> {
    open_packet_socket(
        ifname,
        PacketSocketOptions {
            nonblocking: true,
            timestamps: false,
        },
    )
}

/// A raw IPv4 socket whose packets carry our own IP header (`IPPROTO_RAW` implies
/// `IP_HDRINCL`), in the calling thread's namespace.
fn open_injector() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    })?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_packet(fd: RawFd, packet: &[u8]) -> io::Result<()> {
    let destination = packet
        .get(16..20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too short"))?;
    // SAFETY: zeroed sockaddr_in is valid; family and address are set below.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes(destination);
    // SAFETY: packet and addr are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long the attacker waits for its TCP connection to the server.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// The attacker's own kernel TCP connection to the mobility server, opened in the
/// attacker's namespace; replies are read without blocking.
struct ControlSession {
    stream: TcpStream,
    frames: FrameBuffer,
    /// The server closed it (or reading failed).
    closed: bool,
}

impl ControlSession {
    fn open(netns: &Netns, server: SocketAddrV4) -> io::Result<ControlSession> {
        let stream = netns
            .run(|| TcpStream::connect_timeout(&server.into(), CONNECT_WAIT))
            .map_err(|e| io::Error::other(e.to_string()))??;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(ControlSession {
            stream,
            frames: FrameBuffer::new(),
            closed: false,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        let deadline = Instant::now() + CONNECT_WAIT;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the attacker's side (the server then sees the session close).
    fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Whole messages the server sent since the last call.
    fn replies(&mut self) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1024];
        while !self.closed {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.frames.push(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        let mut messages = Vec::new();
        while let Ok(Some(frame)) = self.frames.next_frame() {
            messages.push(frame);
        }
        messages
    }
}

/// Reads every queued frame of an observer socket and hands its IPv4 packets to
/// `observe`.
fn read_frames(fd: RawFd, buf: &mut [u8], mut observe: impl FnMut(&[u8])) {
    // Bounded, so a flood cannot keep the triggers from being checked.
    for _ in 0..4096 {
        // SAFETY: buf is valid for writes of its length.
        let len = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let Ok(len) = usize::try_from(len) else {
            break; // EAGAIN, or the interface went away with its host
        };
        let frame = buf.get(..len).unwrap_or_default();
        // Ethernet II: 14 bytes, ethertype last.
        if let (Some([0x08, 0x00]), Some(packet)) = (frame.get(12..14), frame.get(14..)) {
            observe(packet);
        }
    }
}

// ---- the engine ---------------------------------------------------------------------------

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

struct Watcher {
    target: String,
    socket: OwnedFd,
    view: ConnectionView,
}

/// The observer of the mobility server's uplink, for the attacks on `target`'s
/// control messages.
struct ControlWatcher {
    target: String,
    socket: OwnedFd,
    view: ControlView,
}

struct Injector {
    node: String,
    address: Ipv4Addr,
    socket: OwnedFd,
    /// The attacker's namespace, where its TCP connections to the server are made.
    netns: Arc<Netns>,
}

/// How long the last replies of the server are waited for after an attack's last
/// step.
const REPLY_WAIT: Duration = Duration::from_millis(500);

/// How long an attack waits, after its trigger, for the state it needs (a token,
/// a completed migration) before it is given up.
const READY_WAIT: Duration = Duration::from_secs(10);

/// The attacks of a scenario: observers on the targets' uplinks (and on the mobility
/// server's), raw sockets in the attackers' namespaces.
pub struct AttackEngine {
    attacks: Vec<AttackSpec>,
    watchers: Vec<Watcher>,
    controls: Vec<ControlWatcher>,
    injectors: Vec<Injector>,
    buf: Vec<u8>,
}

impl fmt::Debug for AttackEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttackEngine")
            .field("attacks", &self.attacks)
            .finish_non_exhaustive()
    }
}

impl AttackEngine {
    /// Opens the observers and raw sockets of `scenario`'s attacks (`None` if it has
    /// none). Call before the transfer starts: the observers must see the handshake.
    pub fn start(topology: &Topology, scenario: &Scenario) -> Result<Option<AttackEngine>> {
        if scenario.attacks.is_empty() {
            return Ok(None);
        }
        let lab = topology.lab();
        let mut injectors: Vec<Injector> = Vec::new();
        for attack in &scenario.attacks {
            if injectors.iter().any(|i| i.node == attack.from) {
                continue;
            }
            let attachment = topology.attachment(&attack.from).ok_or_else(|| {
                LabError::InvalidValue(format!("attacker {} is not attached", attack.from))
            })?;
            // The attacker spoofs the peer's source, which arrives on the attacker's
            // port of the gateway while the route to that source points elsewhere:
            // reverse-path filtering (strict or loose: the effective value is the
            // maximum of `all` and the interface's) would drop it. Routers already
            // run with it off (Lab::make_router); this keeps the attack independent
            // of that. The targets need nothing: a spoofed packet reaches a host on
            // its only interface, which is also its route back.
            lab.run_in(&attachment.gateway_node, || -> Result<()> {
                crate::sysctl::write("net.ipv4.conf.all.rp_filter", "0")?;
                crate::sysctl::write(&format!("net.ipv4.conf.{}.rp_filter", attachment.port), "0")
            })??;
            let socket = lab
                .run_in(&attack.from, open_injector)?
                .map_err(|e| LabError::io(format!("raw socket in {}", attack.from), e))?;
            injectors.push(Injector {
                node: attack.from.clone(),
                address: attachment.address,
                socket,
                netns: lab.netns(&attack.from)?,
            });
        }
        let attackers: Vec<Ipv4Addr> = injectors.iter().map(|i| i.address).collect();
        let mut watchers: Vec<Watcher> = Vec::new();
        for attack in &scenario.attacks {
            if attack.kind.aims_at_server() || watchers.iter().any(|w| w.target == attack.target) {
                continue;
            }
            // `forged-ticket`: every relay MSYN crosses the proxy's uplink, behind
            // whichever NAPT the target is; the target's own uplink changes.
            let observed = if attack.kind.aims_at_proxy() {
                topology
                    .spec()
                    .nodes
                    .iter()
                    .find(|node| node.role == NodeRole::Proxy)
                    .map(|node| node.name.clone())
                    .ok_or_else(|| {
                        LabError::InvalidValue(format!("{} needs a proxy", attack.kind))
                    })?
            } else {
                attack.target.clone()
            };
            let attachment = topology
                .attachment(&observed)
                .ok_or_else(|| LabError::InvalidValue(format!("{observed} is not attached")))?;
            let port = attachment.port.clone();
            let socket = lab
                .run_in(&attachment.gateway_node, || open_observer(&port))?
                .map_err(|e| {
                    LabError::io(
                        format!(
                            "observing {} in {}",
                            attachment.port, attachment.gateway_node
                        ),
                        e,
                    )
                })?;
            watchers.push(Watcher {
                target: attack.target.clone(),
                socket,
                view: ConnectionView::new(
                    attachment.address,
                    scenario.transfer.port,
                    attackers.clone(),
                ),
            });
        }
        let mut controls: Vec<ControlWatcher> = Vec::new();
        for attack in &scenario.attacks {
            if !attack.kind.aims_at_server() || controls.iter().any(|c| c.target == attack.target) {
                continue;
            }
            let server = topology
                .spec()
                .nodes
                .iter()
                .find(|node| node.role == NodeRole::MobilityServer)
                .and_then(|node| topology.attachment(&node.name))
                .ok_or_else(|| {
                    LabError::InvalidValue(format!(
                        "{} needs an attached mobility server",
                        attack.kind
                    ))
                })?;
            let target = topology.attachment(&attack.target).ok_or_else(|| {
                LabError::InvalidValue(format!("target {} is not attached", attack.target))
            })?;
            // Every control session crosses the server's uplink, whichever address
            // the target reports from; the target's own uplink changes when it moves.
            let port = server.port.clone();
            let socket = lab
                .run_in(&server.gateway_node, || open_observer(&port))?
                .map_err(|e| {
                    LabError::io(
                        format!("observing {} in {}", server.port, server.gateway_node),
                        e,
                    )
                })?;
            controls.push(ControlWatcher {
                target: attack.target.clone(),
                socket,
                view: ControlView::new(
                    SocketAddrV4::new(server.address, SERVER_PORT),
                    target.address,
                    attackers.clone(),
                ),
            });
        }
        Ok(Some(AttackEngine {
            attacks: scenario.attacks.clone(),
            watchers,
            controls,
            injectors,
            buf: vec![0u8; 1 << 16],
        }))
    }

    /// Reads every queued frame into the views, waiting up to `timeout` for the first.
    fn observe(&mut self, timeout: Duration) {
        let mut pollfds: Vec<libc::pollfd> = self
            .watchers
            .iter()
            .map(|w| w.socket.as_raw_fd())
            .chain(self.controls.iter().map(|c| c.socket.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: pollfds is a valid array of its length.
        let ready =
            unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, millis) };
        if ready <= 0 {
            return;
        }
        for watcher in &mut self.watchers {
            read_frames(watcher.socket.as_raw_fd(), &mut self.buf, |packet| {
                watcher.view.observe(packet)
            });
        }
        for control in &mut self.controls {
            read_frames(control.socket.as_raw_fd(), &mut self.buf, |packet| {
                control.view.observe(packet)
            });
        }
    }

    /// Observes until `deadline`, or until `cancel` is set (then false).
    fn observe_until(&mut self, deadline: Instant, cancel: &AtomicBool) -> bool {
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            self.observe((deadline - now).min(Duration::from_millis(2)));
        }
    }

    fn watcher(&self, target: &str) -> Option<&Watcher> {
        self.watchers.iter().find(|w| w.target == target)
    }

    fn control(&self, target: &str) -> Option<&ControlWatcher> {
        self.controls.iter().find(|c| c.target == target)
    }

    /// Why `spec` cannot be carried out yet, if it cannot.
    fn not_ready_for(&self, spec: &AttackSpec) -> Option<String> {
        if spec.kind.aims_at_server() {
            self.control(&spec.target)
                .map_or(Some("no observer of the server's uplink".into()), |c| {
                    c.view.not_ready_for(spec.kind)
                })
        } else {
            self.watcher(&spec.target)
                .map_or(Some("no observer".into()), |w| {
                    w.view.not_ready_for(spec.kind)
                })
        }
    }

    /// Carries out a `forged-report` or `replayed-report` (its trigger fired and
    /// what it needs was observed): each step over the attacker's own TCP
    /// connection to the mobility server, reading the server's replies meanwhile.
    fn run_control_attack(
        &mut self,
        index: usize,
        spec: &AttackSpec,
        injector: usize,
        cancel: &AtomicBool,
        timeline: &Timeline,
        report: &mut AttackReport,
    ) {
        let source = format!("{}-attacker", spec.from);
        let (attacker, netns) = {
            let injector = &self.injectors[injector];
            (injector.address, injector.netns.clone())
        };
        let mut session: Option<ControlSession> = None;
        let record_replies = |session: &mut Option<ControlSession>, report: &mut AttackReport| {
            let Some(open) = session.as_mut() else {
                return;
            };
            for reply in open.replies() {
                let detail = json!({
                    "attack": index,
                    "target": spec.target,
                    "reply": describe_control(&reply),
                });
                timeline.record(&source, "attack-reply", detail.clone());
                report.server_replies.push(detail);
            }
        };
        let started = Instant::now();
        for (offset, step) in steps_of(spec.kind) {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    report.error = Some("the transfer ended before every message was sent".into());
                    return;
                }
                let now = Instant::now();
                record_replies(&mut session, report);
                if now >= started + offset {
                    break;
                }
                self.observe((started + offset - now).min(Duration::from_millis(2)));
            }
            let Step::Control(step) = step else {
                continue;
            };
            let Some(control) = self.control(&spec.target) else {
                report.error = Some("no observer of the server's uplink".into());
                return;
            };
            let forged = match forge_control(&control.view, step, attacker) {
                Ok(forged) => forged,
                Err(why) => {
                    report.error = Some(format!("not sent: {why}"));
                    continue;
                }
            };
            let server = control.view.server;
            if step.fresh_session() || session.as_ref().is_some_and(|s| s.closed) {
                session = None;
            }
            let mut detail = forged.detail;
            detail.insert("attack".into(), json!(index));
            detail.insert("target".into(), json!(spec.target));
            if session.is_none() {
                match ControlSession::open(&netns, server) {
                    Ok(opened) => session = Some(opened),
                    Err(err) => {
                        detail.insert("send_error".into(), json!(err.to_string()));
                        report.error = Some(format!("connecting to the server: {err}"));
                    }
                }
            }
            if let Some(open) = session.as_mut() {
                for message in &forged.messages {
                    if let Err(err) = open.send(message) {
                        detail.insert("send_error".into(), json!(err.to_string()));
                        report.error = Some(format!("sending to the server: {err}"));
                        break;
                    }
                }
                if step.ends_session() {
                    open.finish();
                }
            }
            timeline.record(
                &source,
                &format!("attack-{}", spec.kind),
                Value::Object(detail.clone()),
            );
            report.sent.push(Value::Object(detail));
            tracing::info!(attack = index, kind = %spec.kind, step = step.name(), "sent to the server");
        }
        let until = Instant::now() + REPLY_WAIT;
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            self.observe(Duration::from_millis(2));
            record_replies(&mut session, report);
        }
        record_replies(&mut session, report);
    }

    /// Carries out every attack in order, each once its trigger fires, counting time
    /// from `epoch` and bytes with `received`, until `cancel` is set (the transfer is
    /// over); keeps observing until then. Every packet sent is an `attack-<kind>`
    /// event of `timeline`.
    pub fn run(
        mut self,
        epoch: Instant,
        received: &(dyn Fn() -> u64 + Sync),
        cancel: &AtomicBool,
        timeline: &Timeline,
    ) -> Vec<AttackReport> {
        let mut reports: Vec<AttackReport> = self
            .attacks
            .iter()
            .enumerate()
            .map(|(index, spec)| AttackReport {
                index,
                kind: spec.kind.name().into(),
                from: spec.from.clone(),
                target: spec.target.clone(),
                trigger: spec.trigger.to_string(),
                fired_s: None,
                bytes_at_fire: None,
                sent: Vec::new(),
                target_segments_to_attacker: 0,
                target_syn_acks_to_attacker: 0,
                observed_packets: 0,
                observed_segments: 0,
                server_replies: Vec::new(),
                notices_to_attacker: 0,
                peer_locations_to_attacker: 0,
                error: None,
            })
            .collect();
        let attacks = self.attacks.clone();
        'attacks: for (index, spec) in attacks.iter().enumerate() {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    for report in reports.iter_mut().skip(index) {
                        report.error = Some("the transfer ended before the trigger".into());
                    }
                    break 'attacks;
                }
                let fired = match spec.trigger {
                    Trigger::At(at) => epoch.elapsed() >= at,
                    Trigger::AfterBytes(bytes) => received() >= bytes,
                };
                if fired {
                    break;
                }
                self.observe(Duration::from_millis(1));
            }
            let fired = Instant::now();
            let report = &mut reports[index];
            report.fired_s = Some(timeline.t_of(fired));
            report.bytes_at_fire = Some(received());
            let Some(injector_index) = self.injectors.iter().position(|i| i.node == spec.from)
            else {
                report.error = Some(format!("no raw socket for {}", spec.from));
                continue;
            };
            let attacker = self.injectors[injector_index].address;
            // Wait for what the attack needs to know.
            let ready_by = fired + READY_WAIT;
            while let Some(why) = self.not_ready_for(spec) {
                if Instant::now() >= ready_by || cancel.load(Ordering::Relaxed) {
                    reports[index].error = Some(format!("not sent: {why}"));
                    continue 'attacks;
                }
                self.observe(Duration::from_millis(1));
            }
            if spec.kind.aims_at_server() {
                self.run_control_attack(
                    index,
                    spec,
                    injector_index,
                    cancel,
                    timeline,
                    &mut reports[index],
                );
                continue;
            }
            let started = Instant::now();
            let mut previous: Option<(Instant, Duration)> = None;
            for (offset, step) in steps_of(spec.kind) {
                // Never closer than the schedule's own gap: a thread that woke late
                // (a loaded machine) does not catch up by sending two packets at
                // once, which would change what the transcripts see between them.
                let due = previous.map_or(started + offset, |(at, before)| {
                    (started + offset).max(at + offset.saturating_sub(before))
                });
                if !self.observe_until(due, cancel) {
                    reports[index].error =
                        Some("the transfer ended before every packet was sent".into());
                    continue 'attacks;
                }
                previous = Some((Instant::now(), offset));
                let Some(watcher) = self.watcher(&spec.target) else {
                    continue 'attacks;
                };
                let forged = match forge(&watcher.view, step, attacker) {
                    Ok(forged) => forged,
                    Err(why) => {
                        reports[index].error = Some(format!("not sent: {why}"));
                        continue;
                    }
                };
                // Registered before sending: the observers must not take our packet
                // for the peer's.
                if let Some(fp) = segment_fingerprint(&forged.packet) {
                    for watcher in &mut self.watchers {
                        watcher.view.injected.insert(fp);
                    }
                }
                let mut detail = forged.detail;
                detail.insert("attack".into(), json!(index));
                detail.insert("target".into(), json!(spec.target));
                let fd = self.injectors[injector_index].socket.as_raw_fd();
                if let Err(err) = send_packet(fd, &forged.packet) {
                    detail.insert("send_error".into(), json!(err.to_string()));
                    reports[index].error = Some(format!("sending: {err}"));
                }
                timeline.record(
                    &format!("{}-attacker", spec.from),
                    &format!("attack-{}", spec.kind),
                    Value::Object(detail.clone()),
                );
                reports[index].sent.push(Value::Object(detail));
                tracing::info!(attack = index, kind = %spec.kind, "injected");
            }
        }
        // Replies to a forgery may come late: watch until the transfer is over.
        while !cancel.load(Ordering::Relaxed) {
            self.observe(Duration::from_millis(5));
        }
        self.observe(Duration::ZERO);
        for report in &mut reports {
            let aims_at_server = self
                .attacks
                .get(report.index)
                .is_some_and(|spec| spec.kind.aims_at_server());
            if aims_at_server {
                if let Some(control) = self.control(&report.target) {
                    report.notices_to_attacker = control.view.notices_to_attacker;
                    report.observed_packets = control.view.packets;
                    report.observed_segments = control.view.segments;
                }
                continue;
            }
            let Some(watcher) = self.watcher(&report.target) else {
                continue;
            };
            report.target_segments_to_attacker = watcher.view.to_attacker;
            report.target_syn_acks_to_attacker = watcher.view.syn_acks_to_attacker;
            report.observed_packets = watcher.view.packets;
            report.observed_segments = watcher.view.segments;
        }
        reports
    }
}

// ---- judging ------------------------------------------------------------------------------

/// The JSON events of an events file, newest first.
fn events_newest_first(events_file: &Path) -> std::result::Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(events_file)
        .map_err(|e| format!("reading {}: {e}", events_file.display()))?;
    Ok(text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect())
}

/// The `counters` object of the last `closed` event in a sustain-host events file.
fn closed_counters(events_file: &Path) -> std::result::Result<Map<String, Value>, String> {
    events_newest_first(events_file)?
        .into_iter()
        .filter(|event| event.get("event").and_then(Value::as_str) == Some("closed"))
        .find_map(|event| event.get("counters").and_then(Value::as_object).cloned())
        .ok_or_else(|| format!("no closed event with counters in {}", events_file.display()))
}

/// The counters of the last `stopped` event in a sustain-server events file (they
/// are the event's own fields). After a restart they are the last process's.
fn stopped_counters(events_file: &Path) -> std::result::Result<Map<String, Value>, String> {
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
fn counters_report(
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

#[cfg(test)]
mod tests {
    use super::*;
    use sustain_core::auth::ConnectionKeys;
    use sustain_core::control::ControlError;
    use sustain_core::rendezvous::{ControlClient, Output, Server, ServerConfig, SessionId};
    use sustain_core::time::{Duration as CoreDuration, Instant as CoreInstant};
    use sustain_core::wire::WireError;

    const TARGET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const MOVED_PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
    const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const PORT: u16 = 5001;
    const PEER_PORT: u16 = 40000;
    const TARGET_KEY: u64 = 0xFEDC_BA98_7654_3210;
    const PEER_KEY: u64 = 0x0123_4567_89AB_CDEF;

    fn target() -> SocketAddrV4 {
        SocketAddrV4::new(TARGET, PORT)
    }

    fn peer() -> SocketAddrV4 {
        SocketAddrV4::new(PEER, PEER_PORT)
    }

    fn packet_with(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        tcp: TcpRepr,
        options: MigrationOptions,
    ) -> Vec<u8> {
        let mut scratch = MigrationScratch::default();
        let mut tcp = tcp;
        options.attach(&mut scratch, &mut tcp).unwrap();
        emit_packet(src, dst, tcp).unwrap()
    }

    fn full_permit(end: SocketAddrV4, key: u64) -> MigrationOptions<'static> {
        MigrationOptions {
            permit: Some(MigratePermit {
                addr: *end.ip(),
                port: end.port(),
                key: Some(key),
            }),
            ..MigrationOptions::default()
        }
    }

    /// A view that saw the handshake (the peer connects to the target), a data
    /// segment from the peer and the target's ACK of it.
    fn established() -> ConnectionView {
        let mut view = ConnectionView::new(TARGET, PORT, vec![ATTACKER]);
        let ts = |tsval, tsecr| Some(Timestamps { tsval, tsecr });
        view.observe(&packet_with(
            peer(),
            target(),
            TcpRepr {
                seq: SeqNumber(1000),
                flags: TcpFlags::SYN,
                window: 65535,
                window_scale: Some(7),
                timestamps: ts(50, 0),
                ..TcpRepr::default()
            },
            full_permit(peer(), PEER_KEY),
        ));
        view.observe(&packet_with(
            target(),
            peer(),
            TcpRepr {
                seq: SeqNumber(5000),
                ack: SeqNumber(1001),
                flags: TcpFlags::SYN | TcpFlags::ACK,
                window: 65535,
                window_scale: Some(7),
                timestamps: ts(900, 50),
                ..TcpRepr::default()
            },
            full_permit(target(), TARGET_KEY),
        ));
        view.observe(&packet_with(
            peer(),
            target(),
            TcpRepr {
                seq: SeqNumber(1001),
                ack: SeqNumber(5001),
                flags: TcpFlags::ACK,
                window: 256,
                timestamps: ts(60, 900),
                payload: &[7; 100],
                ..TcpRepr::default()
            },
            MigrationOptions::default(),
        ));
        view.observe(&packet_with(
            target(),
            peer(),
            TcpRepr {
                seq: SeqNumber(5001),
                ack: SeqNumber(1101),
                flags: TcpFlags::ACK,
                window: 512,
                timestamps: ts(910, 60),
                ..TcpRepr::default()
            },
            MigrationOptions::default(),
        ));
        view
    }

    /// The first MSYN of the peer, moved to MOVED_PEER.
    fn real_msyn(request: u32) -> Vec<u8> {
        let moved = SocketAddrV4::new(MOVED_PEER, PEER_PORT);
        packet_with(
            moved,
            target(),
            TcpRepr {
                seq: SeqNumber(1100),
                flags: TcpFlags::SYN,
                window: 65535,
                window_scale: Some(7),
                ..TcpRepr::default()
            },
            MigrationOptions {
                migrate: Some(MigrateOption::Msyn(Migrate {
                    token: token_of(Key(TARGET_KEY)).0,
                    request,
                    mac: [9; 8],
                })),
                permit: Some(MigratePermit {
                    addr: MOVED_PEER,
                    port: PEER_PORT,
                    key: None,
                }),
                ..MigrationOptions::default()
            },
        )
    }

    fn parsed(packet: &[u8]) -> (Ipv4Repr, TcpRepr<'_>, MigrationOptions<'_>) {
        let (ip, tcp) = parse_ipv4_tcp(packet).expect("parses");
        let options = MigrationOptions::from_repr(&tcp).expect("sustain options parse");
        (ip, tcp, options)
    }

    #[test]
    fn counter_checks_parse_compare_and_name_unknown_counters() {
        let check = CounterCheck::parse("mac_failures", ">=3").unwrap();
        assert_eq!(check.comparison, Comparison::AtLeast);
        assert!(check.holds(3) && check.holds(4) && !check.holds(2));
        assert_eq!(check.to_string(), "mac_failures >= 3");
        let check = CounterCheck::parse("stale_requests+repeat_requests", "0").unwrap();
        assert_eq!(check.counters.len(), 2);
        assert!(check.holds(0) && !check.holds(1));
        let counters: Map<String, Value> =
            serde_json::from_str(r#"{"stale_requests": 2, "repeat_requests": 1}"#).unwrap();
        assert_eq!(check.actual(&counters), Ok(3));
        let check = CounterCheck::parse("mac_failures", "<2").unwrap();
        assert!(check.holds(1) && !check.holds(2));
        assert!(check
            .actual(&counters)
            .unwrap_err()
            .contains("mac_failures"));
        assert!(CounterCheck::parse("mac_failure", "1")
            .unwrap_err()
            .contains("unknown counter \"mac_failure\""));
        assert!(CounterCheck::parse("mac_failures", ">= many").is_err());
        assert!(CounterCheck::parse("mac_failures", "-1").is_err());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in AttackKind::ALL {
            assert_eq!(kind.name().parse::<AttackKind>(), Ok(kind));
        }
        assert!("rst-flood"
            .parse::<AttackKind>()
            .unwrap_err()
            .contains("\"blind-rst\""));
    }

    #[test]
    fn the_view_learns_ends_windows_timestamps_and_the_token_from_the_handshake() {
        let view = established();
        assert_eq!(view.ends(), Ok((target(), peer())));
        assert_eq!(view.from_peer.seq_next, SeqNumber(1101));
        assert_eq!(view.from_target.ack, Some(SeqNumber(1101)));
        // Both SYNs carried WS 7: the target's window is scaled.
        assert_eq!(view.target_window(), 512 << 7);
        assert!(view.timestamps());
        assert_eq!(
            view.peer_timestamps(),
            Some(Timestamps {
                tsval: 60,
                tsecr: 910
            })
        );
        assert_eq!(
            view.token(),
            Ok((token_of(Key(TARGET_KEY)).0, TokenSource::HandshakeKey))
        );
        for kind in AttackKind::ALL {
            let ready = view.not_ready_for(kind);
            // A replay needs a real MSYN; a forged ticket a real relay MSYN.
            let waits = matches!(kind, AttackKind::ReplayedMsyn | AttackKind::ForgedTicket);
            assert_eq!(ready.is_none(), !waits, "{kind}");
        }
    }

    #[test]
    fn the_view_keeps_the_first_msyn_and_sees_the_move_complete() {
        let mut view = established();
        let msyn = real_msyn(1);
        view.observe(&msyn);
        view.observe(&real_msyn(2));
        assert_eq!(view.first_msyn.as_ref().map(|(p, _)| p.clone()), Some(msyn));
        assert_eq!(view.latest_request, Some(2));
        assert_eq!(view.token().map(|(_, s)| s), Ok(TokenSource::Msyn));
        assert_eq!(
            view.not_ready_for(AttackKind::ReplayedMsyn).as_deref(),
            Some("the real migration has not completed yet")
        );
        // The target's data (no SYN) to the new address: the path is confirmed.
        let moved = SocketAddrV4::new(MOVED_PEER, PEER_PORT);
        view.observe(&packet_with(
            target(),
            moved,
            TcpRepr {
                seq: SeqNumber(5001),
                ack: SeqNumber(1101),
                flags: TcpFlags::ACK,
                window: 512,
                timestamps: Some(Timestamps {
                    tsval: 920,
                    tsecr: 61,
                }),
                ..TcpRepr::default()
            },
            MigrationOptions::default(),
        ));
        assert!(view.migration_done);
        assert_eq!(view.peer_end, Some(moved));
        assert_eq!(view.not_ready_for(AttackKind::ReplayedMsyn), None);
    }

    #[test]
    fn injected_packets_and_other_ports_do_not_count_and_replies_to_the_attacker_do() {
        let mut view = established();
        let before = (view.from_peer.seq_next, view.segments);
        let forged = forge(&view, Step::ForgedAddressUpdate { nth: 0 }, ATTACKER).unwrap();
        view.injected
            .insert(segment_fingerprint(&forged.packet).unwrap());
        view.observe(&forged.packet);
        let elsewhere = packet_with(
            SocketAddrV4::new(PEER, 1),
            SocketAddrV4::new(TARGET, 2),
            TcpRepr {
                seq: SeqNumber(1),
                flags: TcpFlags::ACK,
                payload: &[0; 10],
                ..TcpRepr::default()
            },
            MigrationOptions::default(),
        );
        view.observe(&elsewhere);
        assert_eq!((view.from_peer.seq_next, view.segments), before);
        view.observe(&packet_with(
            target(),
            SocketAddrV4::new(ATTACKER, PEER_PORT),
            TcpRepr {
                flags: TcpFlags::SYN | TcpFlags::ACK,
                ..TcpRepr::default()
            },
            MigrationOptions::default(),
        ));
        assert_eq!((view.to_attacker, view.syn_acks_to_attacker), (1, 1));
        assert_eq!(view.peer_end, Some(peer()), "a reply to x is not the peer");
    }

    #[test]
    fn a_forged_msyn_has_the_right_token_a_fresh_request_and_the_attackers_permit() {
        let mut view = established();
        view.observe(&real_msyn(7));
        let forged = forge(&view, Step::ForgedMsyn { nth: 1 }, ATTACKER).unwrap();
        let (ip, tcp, options) = parsed(&forged.packet);
        assert_eq!((ip.src, ip.dst), (ATTACKER, TARGET));
        assert_eq!((tcp.src_port, tcp.dst_port), (PEER_PORT, PORT));
        assert_eq!(tcp.flags, TcpFlags::SYN);
        // SND.UNA - 1 of the peer, as the target acknowledged it.
        assert_eq!(tcp.seq, SeqNumber(1100));
        let Some(MigrateOption::Msyn(migrate)) = options.migrate else {
            panic!("no Migrate in MSYN form: {options:?}");
        };
        assert_eq!(migrate.token, token_of(Key(TARGET_KEY)).0);
        assert_eq!(migrate.request, 7 + 1001);
        let permit = options.permit.expect("a Permit");
        assert_eq!(
            (permit.addr, permit.port, permit.key),
            (ATTACKER, PEER_PORT, None)
        );
        assert_eq!(forged.detail["token_from"], "msyn");
    }

    #[test]
    fn a_forged_address_update_is_an_in_window_ack_from_the_attacker() {
        let view = established();
        let forged = forge(&view, Step::ForgedAddressUpdate { nth: 0 }, ATTACKER).unwrap();
        let (ip, tcp, options) = parsed(&forged.packet);
        assert_eq!(ip.src, ATTACKER);
        assert_eq!(tcp.flags, TcpFlags::ACK);
        assert_eq!((tcp.seq, tcp.ack), (SeqNumber(1101), SeqNumber(5001)));
        assert_eq!(tcp.timestamps.map(|t| t.tsval), Some(60));
        let update = options.address_update.expect("Address-Update");
        assert_eq!(update.old_addr, PEER);
        assert_eq!(update.token, token_of(Key(TARGET_KEY)).0);
        assert_eq!(update.request, 1000);
    }

    #[test]
    fn a_blind_rst_is_inside_the_window_but_not_at_rcv_nxt() {
        let view = established();
        let forged = forge(&view, Step::BlindRst, ATTACKER).unwrap();
        let (ip, tcp, _) = parsed(&forged.packet);
        assert_eq!((ip.src, ip.dst), (PEER, TARGET), "spoofed from the peer");
        assert_eq!(tcp.flags, TcpFlags::RST);
        let rcv_nxt = SeqNumber(1101);
        assert!(tcp.seq > rcv_nxt && tcp.seq < rcv_nxt + (512 << 7));
    }

    #[test]
    fn a_replay_is_the_msyn_byte_for_byte_but_from_the_attacker() {
        let mut view = established();
        let original = real_msyn(1);
        view.observe(&original);
        let forged = forge(&view, Step::Replay, ATTACKER).unwrap();
        let (ip, _, options) = parsed(&forged.packet);
        assert_eq!(ip.src, ATTACKER);
        assert!(options.migrate.is_some());
        let differing: Vec<usize> = (0..original.len())
            .filter(|&i| original[i] != forged.packet[i])
            .collect();
        // IP checksum (10, 11), source (12..16), TCP checksum (36, 37).
        assert!(
            differing
                .iter()
                .all(|i| [10, 11, 12, 13, 14, 15, 36, 37].contains(i)),
            "{differing:?}"
        );
        assert_eq!(forged.packet.len(), original.len());
    }

    #[test]
    fn malformed_cases_fail_where_they_should() {
        let view = established();
        let case = |case| {
            forge(&view, Step::Malformed(case), ATTACKER)
                .unwrap()
                .packet
        };
        // (a), (b): the TCP option walk rejects the whole segment.
        assert!(matches!(
            parse_ipv4_tcp(&case(MalformedCase::KindLengthOne)),
            Err(WireError::BadOptionLength { kind: 253, len: 1 })
        ));
        assert!(matches!(
            parse_ipv4_tcp(&case(MalformedCase::LengthPastHeader)),
            Err(WireError::TruncatedOption { kind: 253 })
        ));
        // (c): a valid foreign option, none of ours.
        let packet = case(MalformedCase::UnknownExid);
        let (_, tcp, options) = parsed(&packet);
        assert!(options.is_empty());
        assert_eq!(tcp.experimental[0].map(|o| o.exid), Some(UNKNOWN_EXID));
        // (d), (e), (f): valid TCP, malformed sustain options.
        for (malformed, syn, src) in [
            (MalformedCase::MigrateLength19, false, PEER),
            (MalformedCase::SynTruncatedPermit, true, ATTACKER),
            (MalformedCase::MsynTruncatedMigrate, true, ATTACKER),
        ] {
            let packet = case(malformed);
            let (ip, tcp) = parse_ipv4_tcp(&packet).expect("valid TCP");
            assert_eq!((tcp.flags.syn(), ip.src), (syn, src), "{malformed:?}");
            assert!(
                matches!(
                    MigrationOptions::from_repr(&tcp),
                    Err(WireError::BadOptionLength { kind: 253, .. })
                ),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn checksums_are_recomputed_after_a_rewrite() {
        let mut packet = real_msyn(1);
        packet[19] ^= 0x55;
        assert!(parse_ipv4_tcp(&packet).is_err());
        refresh_checksums(&mut packet).unwrap();
        assert!(parse_ipv4_tcp(&packet).is_ok());
        assert!(refresh_checksums(&mut [0x45, 0, 0]).is_err());
        assert!(replayed_msyn(&[0x45; 8], ATTACKER).is_err());
    }

    #[test]
    fn every_kind_sends_its_packets_in_order() {
        assert_eq!(steps_of(AttackKind::BlindRst).len(), 3);
        assert_eq!(
            steps_of(AttackKind::MalformedOptions)
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>(),
            MalformedCase::ALL.map(Step::Malformed).to_vec()
        );
        for kind in AttackKind::ALL {
            let offsets: Vec<Duration> = steps_of(kind).iter().map(|(d, _)| *d).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{kind}");
        }
    }

    // ---- the attacks on the mobility server ----

    const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

    fn server() -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_ADDR, SERVER_PORT)
    }

    fn moved_target() -> SocketAddrV4 {
        SocketAddrV4::new(MOVED_PEER, PORT)
    }

    /// A segment of a control session carrying `payload`.
    fn control_segment(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        seq: u32,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Vec<u8> {
        emit_packet(
            src,
            dst,
            TcpRepr {
                seq: SeqNumber(seq),
                flags,
                window: 65535,
                payload,
                ..TcpRepr::default()
            },
        )
        .unwrap()
    }

    /// One control session as the observer sees it: both SYNs, then `host_bytes`
    /// in one segment (if any) and the server's replies in another.
    struct SessionTap {
        host: SocketAddrV4,
        host_seq: u32,
        server_seq: u32,
    }

    impl SessionTap {
        fn open(view: &mut ControlView, host: SocketAddrV4) -> SessionTap {
            view.observe(&control_segment(host, server(), 100, TcpFlags::SYN, &[]));
            view.observe(&control_segment(
                server(),
                host,
                900,
                TcpFlags::SYN | TcpFlags::ACK,
                &[],
            ));
            SessionTap {
                host,
                host_seq: 101,
                server_seq: 901,
            }
        }

        fn host_sends(&mut self, view: &mut ControlView, bytes: &[u8]) {
            view.observe(&control_segment(
                self.host,
                server(),
                self.host_seq,
                TcpFlags::ACK | TcpFlags::PSH,
                bytes,
            ));
            self.host_seq += bytes.len() as u32;
        }

        fn server_sends(&mut self, view: &mut ControlView, bytes: &[u8]) {
            view.observe(&control_segment(
                server(),
                self.host,
                self.server_seq,
                TcpFlags::ACK | TcpFlags::PSH,
                bytes,
            ));
            self.server_seq += bytes.len() as u32;
        }
    }

    /// The core's server with the target and its peer registered, the target moved
    /// and reported it, and the observer's view of all that; also the bytes the
    /// target sent (Register, MoveReport).
    struct ControlWorld {
        server: Server,
        view: ControlView,
        target: ControlClient,
        sent: Vec<Vec<u8>>,
        now: CoreInstant,
    }

    impl ControlWorld {
        fn new() -> ControlWorld {
            let mut world = ControlWorld {
                server: Server::new(ServerConfig::default()),
                view: ControlView::new(server(), TARGET, vec![ATTACKER]),
                target: ControlClient::new(
                    &ConnectionKeys {
                        local: Key(TARGET_KEY),
                        remote: Key(PEER_KEY),
                    },
                    target(),
                    peer(),
                )
                .unwrap(),
                sent: Vec::new(),
                now: CoreInstant::ZERO,
            };
            let mut peer_client = ControlClient::new(
                &ConnectionKeys {
                    local: Key(PEER_KEY),
                    remote: Key(TARGET_KEY),
                },
                peer(),
                target(),
            )
            .unwrap();
            let peer_session = SocketAddrV4::new(PEER, 41000);
            let register = peer_client.register();
            world.exchange(peer_session, &register);
            let register = world.target.register();
            world.exchange(SocketAddrV4::new(TARGET, 42000), &register);
            world.sent.push(register);
            world
        }

        /// A new session from `host` sending `bytes`; the server's replies on it go
        /// back through the observer too. Returns them.
        fn exchange(&mut self, host: SocketAddrV4, bytes: &[u8]) -> Vec<Vec<u8>> {
            self.now += CoreDuration::from_millis(10);
            let session = self.server.open_session(self.now, host).unwrap();
            let mut tap = SessionTap::open(&mut self.view, host);
            tap.host_sends(&mut self.view, bytes);
            self.server.handle_stream(self.now, session, bytes);
            let mut replies = Vec::new();
            while let Some(output) = self.server.poll_output() {
                if let Output::Send { session: to, bytes } = output {
                    if to == session {
                        tap.server_sends(&mut self.view, &bytes);
                        replies.push(bytes);
                    } else {
                        // A notice to the other end: the observer sees it too.
                        let other = SocketAddrV4::new(PEER, 41000);
                        let mut tap = SessionTap::open(&mut self.view, other);
                        tap.server_sends(&mut self.view, &bytes);
                    }
                }
            }
            replies
        }

        fn move_target(&mut self) {
            let report = self.target.report_move(moved_target());
            self.exchange(SocketAddrV4::new(MOVED_PEER, 43000), &report);
            self.sent.push(report);
        }

        /// Sends what `step` forges on an attacker session (a new one when `fresh`)
        /// and returns the server's error codes in reply.
        fn attack(&mut self, step: ControlStep, session: &mut Option<SessionId>) -> Vec<String> {
            let forged = forge_control(&self.view, step, ATTACKER).expect("forges");
            self.now += CoreDuration::from_millis(150);
            if step.fresh_session() {
                *session = None;
            }
            let id = *session.get_or_insert_with(|| {
                self.server
                    .open_session(self.now, SocketAddrV4::new(ATTACKER, 50000))
                    .unwrap()
            });
            for message in &forged.messages {
                self.server.handle_stream(self.now, id, message);
            }
            if step.ends_session() {
                self.server.close_session(id);
                *session = None;
            }
            let mut replies = Vec::new();
            while let Some(output) = self.server.poll_output() {
                if let Output::Send { bytes, .. } = output {
                    replies.push(describe_control(&bytes));
                }
            }
            replies
        }
    }

    #[test]
    fn the_control_view_captures_the_targets_messages_and_the_servers_answers() {
        let mut world = ControlWorld::new();
        let creds = *world.target.credentials();
        assert_eq!(world.view.target_conn, Some((creds.id, creds.side)));
        assert!(world.view.not_ready_for(AttackKind::ForgedReport).is_none());
        assert_eq!(
            world
                .view
                .not_ready_for(AttackKind::ReplayedReport)
                .as_deref(),
            Some("no MoveReport of the target's acknowledged by the server yet")
        );
        world.move_target();
        // Register and MoveReport, byte for byte, with their sources.
        let captured: Vec<&[u8]> = world.view.captured.iter().map(|m| &m.bytes[..]).collect();
        assert_eq!(
            captured,
            world.sent.iter().map(|b| &b[..]).collect::<Vec<_>>()
        );
        assert_eq!(
            world
                .view
                .captured
                .iter()
                .map(|m| m.from)
                .collect::<Vec<_>>(),
            [
                SocketAddrV4::new(TARGET, 42000),
                SocketAddrV4::new(MOVED_PEER, 43000)
            ]
        );
        assert_eq!(world.view.acked, [1, 2]);
        assert_eq!(world.view.latest_request(), 2);
        assert_eq!(world.view.target_direct(), Some(moved_target()));
        assert!(world
            .view
            .not_ready_for(AttackKind::ReplayedReport)
            .is_none());
        // Both ends global: the mover reported last and is told where its peer is.
        assert_eq!((world.view.notices, world.view.notices_to_attacker), (1, 0));

        // The attacker's own session is not the target's, whatever it carries.
        let before = world.view.captured.len();
        let mut tap = SessionTap::open(&mut world.view, SocketAddrV4::new(ATTACKER, 50000));
        tap.host_sends(&mut world.view, &world.sent[0].clone());
        assert_eq!(world.view.captured.len(), before);
    }

    #[test]
    fn control_streams_are_reassembled_in_order_and_stop_at_a_gap() {
        let message = {
            let mut client = ControlClient::new(
                &ConnectionKeys {
                    local: Key(TARGET_KEY),
                    remote: Key(PEER_KEY),
                },
                target(),
                peer(),
            )
            .unwrap();
            client.register()
        };
        let segment = |seq: u32, payload: &[u8]| {
            let packet = control_segment(target(), server(), seq, TcpFlags::ACK, payload);
            parse_ipv4_tcp(&packet).unwrap().1.payload.to_vec()
        };
        let tcp = |seq: u32, flags: TcpFlags, payload: &'static [u8]| TcpRepr {
            seq: SeqNumber(seq),
            flags,
            payload,
            ..TcpRepr::default()
        };
        let leak = |bytes: Vec<u8>| -> &'static [u8] { Box::leak(bytes.into_boxed_slice()) };
        let (first, rest) = message.split_at(20);
        let (first, rest) = (leak(segment(1, first)), leak(segment(21, rest)));

        let mut stream = ControlStream::default();
        assert!(
            stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty(),
            "no SYN seen"
        );
        stream.push(&tcp(0, TcpFlags::SYN, &[]));
        assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
        // A retransmission of the first part, then the rest overlapping it by 5.
        assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
        let overlapping = leak(message[15..].to_vec());
        assert_eq!(
            stream.push(&tcp(16, TcpFlags::ACK, overlapping)),
            vec![message.clone()]
        );

        let mut stream = ControlStream::default();
        stream.push(&tcp(0, TcpFlags::SYN, &[]));
        assert!(stream.push(&tcp(21, TcpFlags::ACK, rest)).is_empty());
        assert!(stream.lost);
        assert!(stream.push(&tcp(1, TcpFlags::ACK, first)).is_empty());
    }

    #[test]
    fn every_forged_report_is_rejected_for_what_it_is() {
        let mut world = ControlWorld::new();
        let mut session = None;
        let mut replies = Vec::new();
        for step in ControlStep::FORGED {
            let forged = forge_control(&world.view, step, ATTACKER).unwrap();
            if step != ControlStep::Garbage && step != ControlStep::Oversized {
                assert_eq!(forged.detail["claimed"], "203.0.113.10:5001", "{step:?}");
            }
            replies.push(world.attack(step, &mut session));
        }
        let first = |r: &Vec<String>| r.first().cloned().unwrap_or_default();
        let codes: Vec<String> = replies
            .iter()
            .map(|r| first(r).split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            codes,
            [
                "error bad-mac",
                "error bad-mac",
                "error bad-mac",
                "error bad-mac",
                "error conflict",
                "error unknown-version",
                "", // truncated: counted when the session closes, not answered
                "error garbage",
                "error oversized",
            ]
        );
        let stats = world.server.stats();
        assert_eq!(
            (
                stats.bad_mac,
                stats.conflicts,
                stats.unknown_version,
                stats.truncated,
                stats.garbage,
                stats.oversized,
                stats.rejected()
            ),
            (4, 1, 1, 1, 1, 1, 9)
        );
        // Nothing was accepted: the target's registration is as it was.
        assert_eq!(
            (stats.reports, stats.decisions, stats.notices_sent),
            (0, 0, 0)
        );
        // A real move afterwards is decided as if nothing had happened.
        world.move_target();
        let stats = world.server.stats();
        assert_eq!((stats.reports, stats.notices_sent), (1, 1));
        assert_eq!(world.view.notices_to_attacker, 0);
    }

    #[test]
    fn forged_messages_claim_the_attackers_address_and_never_verify() {
        let world = ControlWorld::new();
        let verifier = world.target.credentials().verifier;
        let parsed = |step| {
            let forged = forge_control(&world.view, step, ATTACKER).unwrap();
            let bytes = forged.messages[0].clone();
            let (incoming, message) = Incoming::parse(&bytes).expect("parses");
            let Incoming::Control(repr) = incoming else {
                panic!("not a control message")
            };
            (repr, message.verify_mac(&verifier))
        };
        let (repr, verifies) = parsed(ControlStep::ForgedMoveReport { nth: 2 });
        assert!(!verifies);
        assert_eq!(repr.header.number, 1 + 1000 + 2);
        let Body::MoveReport(report) = repr.body else {
            panic!("{repr}")
        };
        assert_eq!(
            (report.old_direct, report.new_direct),
            (target(), SocketAddrV4::new(ATTACKER, PORT))
        );
        for step in [ControlStep::ForgedRegister, ControlStep::SquattingRegister] {
            let bytes = forge_control(&world.view, step, ATTACKER).unwrap().messages[0].clone();
            let (Incoming::Control(repr), message) = Incoming::parse(&bytes).unwrap() else {
                panic!("not a control message")
            };
            assert!(!message.verify_mac(&verifier), "{step:?}");
            let Body::Register(register) = repr.body else {
                panic!("{repr}")
            };
            assert_eq!(register.direct, SocketAddrV4::new(ATTACKER, PORT));
            assert!(!register.verifier.ct_eq(&verifier));
            // The squatter's MAC is right for its own verifier, the forger's is not.
            assert_eq!(
                message.verify_mac(&register.verifier),
                step == ControlStep::SquattingRegister
            );
        }
        let bytes = |step| forge_control(&world.view, step, ATTACKER).unwrap().messages[0].clone();
        assert!(matches!(
            Incoming::parse(&bytes(ControlStep::UnknownVersion)),
            Err(ControlError::UnknownVersion(2))
        ));
        assert!(matches!(
            Incoming::parse(&bytes(ControlStep::Truncated)),
            Err(ControlError::Truncated {
                needed: 64,
                have: 30
            })
        ));
        let mut frames = FrameBuffer::new();
        frames.push(&bytes(ControlStep::Garbage));
        assert_eq!(frames.next_frame(), Err(ControlError::Garbage(2)));
        let mut frames = FrameBuffer::new();
        frames.push(&bytes(ControlStep::Oversized));
        assert_eq!(frames.next_frame(), Err(ControlError::Oversized(300)));
    }

    #[test]
    fn replayed_reports_are_the_targets_bytes_and_change_nothing() {
        let mut world = ControlWorld::new();
        world.move_target();
        let forged =
            forge_control(&world.view, ControlStep::Replay { round: 0 }, ATTACKER).unwrap();
        assert_eq!(forged.messages, world.sent, "byte for byte");
        assert_eq!(
            forged.detail["replay_of"],
            json!(["192.0.2.10:42000", "100.64.0.10:43000"])
        );
        let before = *world.server.stats();
        let mut session = None;
        for round in 0..3 {
            let replies = world.attack(ControlStep::Replay { round }, &mut session);
            // The Register is stale; the MoveReport is the target's latest, but a
            // repeat from another address than the target's is a replay too
            // (PROTOCOL.md §11.9).
            assert_eq!(replies.len(), 2, "{replies:?}");
            assert!(
                replies[0].starts_with("error replayed (type 0x01"),
                "{replies:?}"
            );
            assert!(
                replies[1].starts_with("error replayed (type 0x02"),
                "{replies:?}"
            );
        }
        let stats = world.server.stats();
        assert_eq!((stats.replayed, stats.repeats), (6, 0));
        assert_eq!(
            (stats.reports, stats.notices_sent),
            (before.reports, before.notices_sent),
            "no new report, no new notice"
        );
    }

    #[test]
    fn server_counter_checks_use_the_servers_names_and_its_stopped_event() {
        let check =
            CounterCheck::parse_for(CounterSource::Server, "bad_mac+conflicts", ">=4").unwrap();
        assert_eq!(check.to_string(), "bad_mac+conflicts >= 4");
        assert!(
            CounterCheck::parse_for(CounterSource::Server, "mac_failures", "0")
                .unwrap_err()
                .contains("sustain-server reports")
        );
        assert!(CounterCheck::parse("bad_mac", "0")
            .unwrap_err()
            .contains("sustain-host reports"));

        let dir = std::env::temp_dir().join(format!("attack-stopped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c-sustain-server.events.jsonl");
        std::fs::write(
            &file,
            "{\"t\":0.1,\"event\":\"listening\",\"local\":\"192.0.2.10:7001\"}\n\
             {\"t\":1.0,\"event\":\"stopped\",\"bad_mac\":9,\"conflicts\":9}\n\
             {\"t\":2.0,\"event\":\"listening\",\"local\":\"192.0.2.10:7001\"}\n\
             {\"time\":5.0,\"t\":3.0,\"event\":\"stopped\",\"bad_mac\":3,\"conflicts\":1}\n",
        )
        .unwrap();
        let counters = stopped_counters(&file).unwrap();
        assert_eq!(
            counters,
            serde_json::from_str::<Map<String, Value>>(r#"{"bad_mac":3,"conflicts":1}"#).unwrap(),
            "the last stopped event, without time, t and event"
        );
        assert_eq!(check.actual(&counters), Ok(4));
        let report = counters_report("c", "mobility-server", Ok(counters), &[check]);
        assert!(report.checks[0].passed);
        std::fs::write(&file, "{\"event\":\"listening\"}\n").unwrap();
        assert!(stopped_counters(&file)
            .unwrap_err()
            .contains("no stopped event"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
