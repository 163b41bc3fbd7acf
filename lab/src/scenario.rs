//! Scenario files: a topology, link conditions, programs, a transfer, moves and the
//! expected outcome, in TOML. The format is documented in `lab/README.md`; every
//! error names the file, the line and the field.
//!
//! ```toml
//! name = "linux-move-breaks"
//! description = "B moves mid-transfer; plain TCP cannot follow"
//!
//! [[network]]
//! name = "g1"                 # kind = "global" (default) or "private"
//!
//! [[node]]
//! name = "b"                  # role = "host" (default), "mobility-server", "proxy", "attacker"
//! network = "g1"
//!
//! [transfer]
//! kind = "linux"              # or "sustain"; sender_kind / receiver_kind per end
//! sender = "b"
//! receiver = "a"
//! bytes = "16MiB"
//!
//! [[move]]
//! host = "b"
//! to = "g3"
//! after_bytes = "4MiB"
//!
//! [expect]
//! outcome = "broken"
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::outcome::Outcome;
pub use sustain_core::units::parse_size;

use crate::apps::App;
use crate::attack::spec::{AttackSpec, CounterCheck, RawAttack, RawCount};
use crate::moves::{MoveAction, MoveSpec, Trigger};
use crate::napt::NaptProfile;
use crate::topology::{
    LinkConditions, LinkSpec, NetworkKind, NetworkSpec, NodeRole, NodeSpec, RouterSpec, SpecPath,
    TopologySpec,
};
use crate::transfer::{EndpointKind, Initiator, TransferSpec};

/// `[paper]`: what a paper observed in the experiment a scenario reproduces (see
/// the `paper` module, which sets our run beside it).
#[derive(Clone, Debug, PartialEq)]
pub struct PaperReference {
    /// Where (e.g. "sustaining paper, Fig. 7").
    pub figure: String,
    /// How long each move took there (address gone to new address usable).
    pub moves: Duration,
    /// From the moves' end to the resumed transfer there.
    pub resume: Duration,
    /// That TCP's minimum retransmission timeout (what set the resume delay).
    pub min_rto: Duration,
}

/// What must happen for the scenario to pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// `completed` (which includes a matching SHA-256) or `broken`.
    pub outcome: Outcome,
    /// Longest acceptable reconnect latency, read from the captures: from the last
    /// move's completion to the receiver's ACK of the first new data on the new path
    /// (DESIGN.md). `None`: not checked. Only a scenario with moves may have one.
    pub latency_budget: Option<Duration>,
    /// `target_counters`: the attacks' target's counters (sustain-host's `closed`
    /// event) that must hold; empty: not checked.
    pub target_counters: Vec<CounterCheck>,
    /// `server_counters`: the mobility server's counters (sustain-server's `stopped`
    /// event) that must hold; empty: not checked.
    pub server_counters: Vec<CounterCheck>,
    /// `proxy_counters`: the proxy's counters (sustain-proxy's `stopped` event)
    /// that must hold; empty: not checked.
    pub proxy_counters: Vec<CounterCheck>,
    /// `transcript = false`: the transcripts are written but not compared with
    /// golden captures or snapshots, for the reason given in `transcript_reason`
    /// (an application whose own pace decides what is in flight at a move).
    pub transcript_reason: Option<String>,
    /// `sender_error` / `receiver_error`: text the end's error must contain (a
    /// broken transfer must end each side for the right reason, e.g. its own
    /// timer, not the lab's stall timeout). `None`: not checked.
    pub sender_error: Option<String>,
    pub receiver_error: Option<String>,
}

/// A program the scenario starts in a node before the transfer, stopped at teardown.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramSpec {
    pub node: String,
    /// Program and arguments. `{bin}` (the sustain binaries' directory), `{out}` (the
    /// output directory), `{run}` (the run id) and `{addr:NODE}` (NODE's current
    /// address) are replaced when it starts.
    pub argv: Vec<String>,
    /// Waited after starting it, before the next program or the transfer.
    pub ready_after: Duration,
}

/// A loaded, checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it was loaded from.
    pub file: Option<PathBuf>,
    pub topology: TopologySpec,
    pub programs: Vec<ProgramSpec>,
    pub transfer: TransferSpec,
    pub moves: Vec<MoveSpec>,
    /// `[[attack]]`: forged segments from attacker nodes (`attack/`).
    pub attacks: Vec<AttackSpec>,
    /// `[[restart]]`: the mobility server killed and started again.
    pub restarts: Vec<RestartSpec>,
    /// `[paper]`: what a paper observed in the experiment this reproduces.
    pub paper: Option<PaperReference>,
    pub expect: Expectation,
}

/// `[[restart]]`: kill the mobility server (SIGKILL: nothing said to the
/// hosts) and start a new, empty one on the same address when `trigger`
/// fires (`services.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct RestartSpec {
    /// The mobility-server node.
    pub node: String,
    pub trigger: Trigger,
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `file:line:column: field: message`.
    #[error("{}:{line}:{column}: {field}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        /// Where in the file's structure, e.g. `move[1].to` (indexes count from 0).
        field: String,
        message: String,
    },
}

impl ScenarioError {
    /// The line of an `Invalid` error.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => Some(*line),
            ScenarioError::Read { .. } => None,
        }
    }

    /// The field of an `Invalid` error.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => Some(field),
            ScenarioError::Read { .. } => None,
        }
    }
}

// ---- the file format -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default, rename = "network")]
    networks: Vec<RawNetwork>,
    #[serde(default, rename = "router")]
    routers: Vec<RawRouter>,
    #[serde(default, rename = "node")]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "link")]
    links: Vec<RawLink>,
    #[serde(default, rename = "program")]
    programs: Vec<RawProgram>,
    transfer: Option<RawTransfer>,
    #[serde(default, rename = "move")]
    moves: Vec<RawMove>,
    #[serde(default, rename = "attack")]
    attacks: Vec<RawAttack>,
    #[serde(default, rename = "restart")]
    restarts: Vec<RawRestart>,
    paper: Option<RawPaper>,
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaper {
    figure: String,
    moves_s: f64,
    resume_s: f64,
    min_rto_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    node: String,
    at_s: Option<f64>,
    after_bytes: Option<RawSize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    mtu: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    kind: Option<String>,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    name: String,
    wan: String,
    lan: String,
    profile: Option<String>,
    wan_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    role: Option<String>,
    network: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    node: String,
    network: String,
    delay_ms: Option<f64>,
    jitter_ms: Option<f64>,
    loss: Option<f64>,
    rate_kbit: Option<u64>,
    strip_options: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    node: String,
    argv: Vec<String>,
    ready_after_ms: Option<u64>,
}

/// A size: a number of bytes, or a string with a unit ("16MiB", "512 KiB", "1GB").
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    kind: Option<String>,
    sender_kind: Option<String>,
    receiver_kind: Option<String>,
    sender: String,
    receiver: String,
    connect: Option<String>,
    bytes: Option<RawSize>,
    app: Option<String>,
    requests: Option<u32>,
    interval_ms: Option<u64>,
    port: Option<u16>,
    timeout_s: Option<f64>,
    stall_timeout_s: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    sender_args: Vec<String>,
    #[serde(default)]
    receiver_args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMove {
    host: String,
    action: Option<String>,
    to: Option<String>,
    gap_ms: Option<f64>,
    lag_ms: Option<f64>,
    at_s: Option<f64>,
    after_bytes: Option<RawSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    outcome: String,
    latency_budget_ms: Option<f64>,
    target_counters: Option<std::collections::BTreeMap<String, RawCount>>,
    server_counters: Option<std::collections::BTreeMap<String, RawCount>>,
    proxy_counters: Option<std::collections::BTreeMap<String, RawCount>>,
    transcript: Option<bool>,
    transcript_reason: Option<String>,
    sender_error: Option<String>,
    receiver_error: Option<String>,
}

/// Most requests of an interactive app (`ssh`, `interactive`).
pub const MAX_REQUESTS: u32 = 100_000;

/// Default port of the accepting end.
pub const DEFAULT_PORT: u16 = 5001;
/// Default limit on the whole transfer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time without progress after which a transfer counts as broken.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Scenario {
    /// Whether capture point `point` (`<node>-<network>`) is on the mobility
    /// server's or the proxy's own link. Control sessions are left out of
    /// transcripts, so an empty transcript there asserts nothing and gets no
    /// snapshot (should the transfer ever cross such a link, the point has a
    /// transcript and needs one).
    pub fn is_service_point(&self, point: &str) -> bool {
        self.topology.nodes.iter().any(|node| {
            matches!(node.role, NodeRole::MobilityServer | NodeRole::Proxy)
                && point
                    .strip_prefix(node.name.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    }

    /// Loads and checks `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut scenario = Scenario::parse(&text, path, &stem)?;
        scenario.file = Some(path.to_path_buf());
        Ok(scenario)
    }

    /// Parses scenario `text`; `file` is used in error messages, `default_name` when
    /// the file has no `name`.
    pub fn parse(text: &str, file: &Path, default_name: &str) -> Result<Scenario, ScenarioError> {
        let source = Source::new(text);
        let raw: RawScenario = toml::from_str(text).map_err(|err| {
            let offset = err.span().map_or(0, |span| span.start);
            let (line, column) = source.line_col(offset);
            ScenarioError::Invalid {
                file: file.to_path_buf(),
                line,
                column,
                field: source.path_at(offset),
                message: err.message().trim().to_string(),
            }
        })?;
        convert(raw, default_name).map_err(|(path, message)| {
            let (line, column) = source.locate(&path);
            ScenarioError::Invalid {
                file: file.to_path_buf(),
                line,
                column,
                field: path.to_string(),
                message,
            }
        })
    }
}

type Problem = (SpecPath, String);

fn at(table: &'static str, index: usize, field: &'static str) -> impl Fn(String) -> Problem {
    move |message| (SpecPath::new(table, index, field), message)
}

fn in_table(table: &'static str, field: &'static str) -> impl Fn(String) -> Problem {
    move |message| {
        (
            SpecPath {
                table,
                index: None,
                field: Some(field),
            },
            message,
        )
    }
}

fn parse_address(text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IPv4 address"))
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    if (0.0..1e6).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{what} {value} is not a duration"))
    }
}

/// `kind`, `sender_kind`, `receiver_kind`: "linux" or "sustain".
fn endpoint_kind(text: Option<&str>) -> Result<Option<EndpointKind>, String> {
    match text {
        None => Ok(None),
        Some("linux") => Ok(Some(EndpointKind::Linux)),
        Some("sustain") => Ok(Some(EndpointKind::Sustain)),
        Some(other) => Err(format!(
            "unknown kind {other:?}; expected \"linux\" or \"sustain\""
        )),
    }
}

fn size(raw: &RawSize) -> Result<u64, String> {
    match raw {
        RawSize::Bytes(bytes) => Ok(*bytes),
        RawSize::Text(text) => parse_size(text),
    }
}

fn convert(raw: RawScenario, default_name: &str) -> Result<Scenario, Problem> {
    let name = raw.name.unwrap_or_else(|| default_name.to_string());
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err((
            SpecPath {
                table: "scenario",
                index: None,
                field: Some("name"),
            },
            format!("{name:?}: scenario names are one word"),
        ));
    }

    let mut topology = TopologySpec {
        mtu: raw.topology.mtu.unwrap_or(1500),
        ..TopologySpec::default()
    };
    for (i, net) in raw.networks.into_iter().enumerate() {
        let kind = match net.kind.as_deref() {
            None | Some("global") => NetworkKind::Global,
            Some("private") => NetworkKind::Private,
            Some(other) => {
                return Err(at("network", i, "kind")(format!(
                    "unknown kind {other:?}; expected \"global\" or \"private\""
                )))
            }
        };
        let prefix = net
            .prefix
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(at("network", i, "prefix"))?;
        topology.networks.push(NetworkSpec {
            name: net.name,
            kind,
            prefix,
        });
    }
    for (i, router) in raw.routers.into_iter().enumerate() {
        let profile = match router.profile.as_deref() {
            None => NaptProfile::Home,
            Some(text) => text.parse().map_err(at("router", i, "profile"))?,
        };
        let wan_address = router
            .wan_address
            .as_deref()
            .map(parse_address)
            .transpose()
            .map_err(at("router", i, "wan_address"))?;
        topology.routers.push(RouterSpec {
            name: router.name,
            wan: router.wan,
            lan: router.lan,
            profile,
            wan_address,
        });
    }
    for (i, node) in raw.nodes.into_iter().enumerate() {
        let role = match node.role.as_deref() {
            None => NodeRole::Host,
            Some(text) => text.parse().map_err(at("node", i, "role"))?,
        };
        let address = node
            .address
            .as_deref()
            .map(parse_address)
            .transpose()
            .map_err(at("node", i, "address"))?;
        topology.nodes.push(NodeSpec {
            name: node.name,
            role,
            network: node.network,
            address,
        });
    }
    for (i, link) in raw.links.into_iter().enumerate() {
        let delay = seconds(link.delay_ms.unwrap_or(0.0) / 1e3, "delay")
            .map_err(at("link", i, "delay_ms"))?;
        topology.links.push(LinkSpec {
            node: link.node,
            network: link.network,
            conditions: LinkConditions {
                delay,
                jitter: seconds(link.jitter_ms.unwrap_or(0.0) / 1e3, "jitter").map_err(at(
                    "link",
                    i,
                    "jitter_ms",
                ))?,
                loss: link.loss.unwrap_or(0.0),
                rate_kbit: link.rate_kbit,
                strip_options: link.strip_options.unwrap_or_default(),
            },
        });
    }
    // Every topology rule (names, references, prefixes, addresses) in one place.
    let plan = topology.plan().map_err(|err| (err.path, err.message))?;
    let node_index = |name: &str| topology.nodes.iter().position(|node| node.name == name);
    let is_node = |name: &str| {
        node_index(name).is_some() || topology.routers.iter().any(|router| router.name == name)
    };

    let mut programs = Vec::new();
    for (i, program) in raw.programs.into_iter().enumerate() {
        if !is_node(&program.node) {
            return Err(at("program", i, "node")(format!(
                "no node {:?}",
                program.node
            )));
        }
        if program.argv.is_empty() {
            return Err(at("program", i, "argv")(
                "argv names at least the program".into(),
            ));
        }
        programs.push(ProgramSpec {
            node: program.node,
            argv: program.argv,
            ready_after: Duration::from_millis(program.ready_after_ms.unwrap_or(0)),
        });
    }

    let Some(transfer) = raw.transfer else {
        return Err((
            SpecPath {
                table: "transfer",
                index: None,
                field: None,
            },
            "a scenario needs a [transfer] table".into(),
        ));
    };
    let kind = endpoint_kind(transfer.kind.as_deref())
        .map_err(in_table("transfer", "kind"))?
        .unwrap_or(EndpointKind::Linux);
    let sender_kind = endpoint_kind(transfer.sender_kind.as_deref())
        .map_err(in_table("transfer", "sender_kind"))?;
    let receiver_kind = endpoint_kind(transfer.receiver_kind.as_deref())
        .map_err(in_table("transfer", "receiver_kind"))?;
    // Arguments for a kernel-TCP end would be dropped without a word.
    for (field, args, end_kind, end) in [
        (
            "sender_args",
            &transfer.sender_args,
            sender_kind.unwrap_or(kind),
            "sender",
        ),
        (
            "receiver_args",
            &transfer.receiver_args,
            receiver_kind.unwrap_or(kind),
            "receiver",
        ),
    ] {
        if !args.is_empty() && end_kind != EndpointKind::Sustain {
            return Err(in_table("transfer", field)(format!(
                "the {end} is a {} end; only sustain-host takes extra arguments",
                end_kind.name()
            )));
        }
    }
    let initiator = match transfer.connect.as_deref() {
        None | Some("sender") => Initiator::Sender,
        Some("receiver") => Initiator::Receiver,
        Some(other) => {
            return Err(in_table("transfer", "connect")(format!(
                "{other:?}: the end that connects is \"sender\" or \"receiver\""
            )))
        }
    };
    for (field, node) in [
        ("sender", &transfer.sender),
        ("receiver", &transfer.receiver),
    ] {
        if node_index(node).is_none() {
            return Err(in_table("transfer", field)(format!(
                "no host or service node {node:?}"
            )));
        }
    }
    if transfer.sender == transfer.receiver {
        return Err(in_table("transfer", "receiver")(
            "sender and receiver are the same node".into(),
        ));
    }
    let app = match transfer.app.as_deref() {
        None => App::File,
        Some(name) => App::from_name(name).map_err(in_table("transfer", "app"))?,
    };
    let requests = transfer.requests.unwrap_or(0);
    let interval = Duration::from_millis(transfer.interval_ms.unwrap_or(0));
    // A file or HTTP download moves `bytes`; an interactive session moves
    // what its requests draw, which the lab computes.
    let bytes = if app.is_session() {
        if transfer.bytes.is_some() {
            return Err(in_table("transfer", "bytes")(format!(
                "app = {:?} moves what its requests draw; give requests and interval_ms, \
                 not bytes",
                app.name()
            )));
        }
        if requests == 0 {
            return Err(in_table("transfer", "requests")(format!(
                "app = {:?} needs requests (at least 1) and interval_ms",
                app.name()
            )));
        }
        // The expected output is computed when the file loads: a huge count
        // must be an error, not an allocation that takes the lab down.
        if requests > MAX_REQUESTS {
            return Err(in_table("transfer", "requests")(format!(
                "{requests} requests; an interactive session has at most {MAX_REQUESTS}"
            )));
        }
        app.expected_output(requests).len() as u64
    } else {
        if transfer.requests.is_some() || transfer.interval_ms.is_some() {
            return Err(in_table("transfer", "requests")(format!(
                "requests and interval_ms belong to interactive apps, not app = {:?}",
                app.name()
            )));
        }
        let raw = transfer.bytes.as_ref().ok_or_else(|| {
            in_table("transfer", "bytes")(format!("app = {:?} needs bytes", app.name()))
        })?;
        size(raw).map_err(in_table("transfer", "bytes"))?
    };
    if bytes == 0 {
        return Err(in_table("transfer", "bytes")(
            "a transfer moves at least one byte".into(),
        ));
    }
    let transfer = TransferSpec {
        kind,
        sender_kind,
        receiver_kind,
        sender: transfer.sender,
        receiver: transfer.receiver,
        initiator,
        bytes,
        port: transfer.port.unwrap_or(DEFAULT_PORT),
        timeout: transfer
            .timeout_s
            .map(|s| seconds(s, "timeout"))
            .transpose()
            .map_err(in_table("transfer", "timeout_s"))?
            .unwrap_or(DEFAULT_TIMEOUT),
        stall_timeout: transfer
            .stall_timeout_s
            .map(|s| seconds(s, "stall timeout"))
            .transpose()
            .map_err(in_table("transfer", "stall_timeout_s"))?
            .unwrap_or(DEFAULT_STALL_TIMEOUT),
        seed: transfer.seed.unwrap_or(1),
        sender_args: transfer.sender_args,
        receiver_args: transfer.receiver_args,
        app,
        requests,
        interval,
    };
    if transfer.port == 0 {
        return Err(in_table("transfer", "port")(
            "port 0 cannot be connected to".into(),
        ));
    }
    if transfer.stall_timeout < Duration::from_millis(500) {
        return Err(in_table("transfer", "stall_timeout_s")(
            "a stall timeout under 0.5 s breaks healthy transfers".into(),
        ));
    }

    // Where every node is, as the script moves them.
    let mut location: std::collections::BTreeMap<String, Option<String>> = plan
        .initial
        .iter()
        .map(|(node, network, _)| (node.clone(), Some(network.clone())))
        .collect();
    let network_kind = |name: &str| plan.network(name).map(|net| net.kind);
    {
        let acceptor = transfer.acceptor();
        let connector = transfer.connector();
        let where_acceptor = location.get(acceptor).cloned().flatten();
        let where_connector = location.get(connector).cloned().flatten();
        let (Some(acceptor_net), Some(connector_net)) = (where_acceptor, where_connector) else {
            return Err(in_table("transfer", "connect")(format!(
                "both ends must be attached when the transfer starts ({acceptor} accepts, \
                 {connector} connects)"
            )));
        };
        if network_kind(&acceptor_net) != Some(NetworkKind::Global) && acceptor_net != connector_net
        {
            return Err(in_table("transfer", "connect")(format!(
                "{connector} cannot reach {acceptor} behind a NAPT (on {acceptor_net}); let the \
                 end behind the NAPT connect (connect = \"sender\" or \"receiver\")"
            )));
        }
    }

    let mut moves = Vec::new();
    for (i, mv) in raw.moves.into_iter().enumerate() {
        let here = at("move", i, "host");
        match node_index(&mv.host).map(|n| topology.nodes[n].role) {
            Some(NodeRole::Host) => {}
            Some(role) => {
                return Err(here(format!(
                    "{} has the role {}; only hosts move",
                    mv.host,
                    role.name()
                )))
            }
            None => return Err(here(format!("no host {:?}", mv.host))),
        }
        let trigger = match (mv.at_s, &mv.after_bytes) {
            (Some(s), None) => Trigger::At(seconds(s, "time").map_err(at("move", i, "at_s"))?),
            (None, Some(raw)) => {
                let bytes_at = size(raw).map_err(at("move", i, "after_bytes"))?;
                if bytes_at >= transfer.bytes {
                    return Err(at("move", i, "after_bytes")(format!(
                        "{bytes_at} is not below the transfer's {} bytes: it would never fire",
                        transfer.bytes
                    )));
                }
                Trigger::AfterBytes(bytes_at)
            }
            (Some(_), Some(_)) => {
                return Err(at("move", i, "after_bytes")(
                    "give either at_s or after_bytes, not both".into(),
                ))
            }
            (None, None) => {
                return Err(at("move", i, "host")(
                    "a move needs a trigger: at_s or after_bytes".into(),
                ))
            }
        };
        let current = location.get(&mv.host).cloned().flatten();
        let destination = |to: &Option<String>| -> Result<String, Problem> {
            let to = to
                .clone()
                .ok_or_else(|| at("move", i, "action")("this action needs `to`".into()))?;
            if plan.network(&to).is_none() {
                return Err(at("move", i, "to")(format!("no network {to:?}")));
            }
            Ok(to)
        };
        let gap = mv
            .gap_ms
            .map(|ms| seconds(ms / 1e3, "gap"))
            .transpose()
            .map_err(at("move", i, "gap_ms"))?;
        let action = match mv.action.as_deref().unwrap_or("move") {
            "detach" => {
                if mv.to.is_some() {
                    return Err(at("move", i, "to")("a detach goes nowhere".into()));
                }
                if current.is_none() {
                    return Err(here(format!("{} is already detached here", mv.host)));
                }
                MoveAction::Detach
            }
            "attach" => {
                if current.is_some() {
                    return Err(here(format!(
                        "{} is attached to {} here; detach it first or use a move",
                        mv.host,
                        current.as_deref().unwrap_or_default()
                    )));
                }
                MoveAction::Attach {
                    network: destination(&mv.to)?,
                }
            }
            "move" => {
                let network = destination(&mv.to)?;
                match &current {
                    None => {
                        return Err(here(format!(
                            "{} is detached here; use action = \"attach\"",
                            mv.host
                        )))
                    }
                    Some(current) if *current == network => {
                        return Err(at("move", i, "to")(format!(
                            "{} is already on {network}; a move goes to another network",
                            mv.host
                        )))
                    }
                    Some(_) => {}
                }
                MoveAction::Move {
                    network,
                    gap: gap.unwrap_or(Duration::ZERO),
                }
            }
            "renumber" => {
                if mv.to.is_some() {
                    return Err(at("move", i, "to")(
                        "a renumber stays on the host's network; it takes no `to`".into(),
                    ));
                }
                let Some(network) = current.clone() else {
                    return Err(here(format!(
                        "{} is detached here; use action = \"attach\"",
                        mv.host
                    )));
                };
                MoveAction::Renumber {
                    network,
                    gap: gap.unwrap_or(Duration::ZERO),
                }
            }
            other => {
                return Err(at("move", i, "action")(format!(
                    "unknown action {other:?}; expected \"move\", \"renumber\", \"detach\" or \"attach\""
                )))
            }
        };
        if gap.is_some()
            && !matches!(
                action,
                MoveAction::Move { .. } | MoveAction::Renumber { .. }
            )
        {
            return Err(at("move", i, "gap_ms")(
                "only a move or a renumber has a gap".into(),
            ));
        }
        let lag = mv
            .lag_ms
            .map(|ms| seconds(ms / 1e3, "lag"))
            .transpose()
            .map_err(at("move", i, "lag_ms"))?
            .unwrap_or_default();
        location.insert(mv.host.clone(), action.destination().map(str::to_string));
        moves.push(MoveSpec {
            host: mv.host,
            action,
            trigger,
            lag,
        });
    }

    let attacks =
        crate::attack::spec::convert_attacks(raw.attacks, &topology, &plan, &transfer, &moves)?;

    let mut restarts = Vec::new();
    for (i, restart) in raw.restarts.into_iter().enumerate() {
        match node_index(&restart.node).map(|n| topology.nodes[n].role) {
            Some(NodeRole::MobilityServer) => {}
            Some(role) => {
                return Err(at("restart", i, "node")(format!(
                    "{} has the role {}; only the mobility server restarts",
                    restart.node,
                    role.name()
                )))
            }
            None => {
                return Err(at("restart", i, "node")(format!(
                    "no node {:?}",
                    restart.node
                )))
            }
        }
        let trigger = match (restart.at_s, &restart.after_bytes) {
            (Some(s), None) => Trigger::At(seconds(s, "time").map_err(at("restart", i, "at_s"))?),
            (None, Some(raw)) => {
                let bytes_at = size(raw).map_err(at("restart", i, "after_bytes"))?;
                if bytes_at >= transfer.bytes {
                    return Err(at("restart", i, "after_bytes")(format!(
                        "{bytes_at} is not below the transfer's {} bytes: it would never fire",
                        transfer.bytes
                    )));
                }
                Trigger::AfterBytes(bytes_at)
            }
            _ => {
                return Err(at("restart", i, "node")(
                    "a restart needs exactly one trigger: at_s or after_bytes".into(),
                ))
            }
        };
        restarts.push(RestartSpec {
            node: restart.node,
            trigger,
        });
    }

    let paper = match raw.paper {
        None => None,
        Some(p) => Some(PaperReference {
            figure: p.figure,
            moves: seconds(p.moves_s, "time").map_err(in_table("paper", "moves_s"))?,
            resume: seconds(p.resume_s, "time").map_err(in_table("paper", "resume_s"))?,
            min_rto: seconds(p.min_rto_s, "time").map_err(in_table("paper", "min_rto_s"))?,
        }),
    };

    let Some(expect) = raw.expect else {
        return Err((
            SpecPath {
                table: "expect",
                index: None,
                field: None,
            },
            "a scenario needs an [expect] table".into(),
        ));
    };
    let outcome = match expect.outcome.as_str() {
        "completed" => Outcome::Completed,
        "broken" => Outcome::Broken,
        other => {
            return Err(in_table("expect", "outcome")(format!(
                "unknown outcome {other:?}; expected \"completed\" or \"broken\""
            )))
        }
    };
    let latency_budget = expect
        .latency_budget_ms
        .map(|ms| seconds(ms / 1e3, "latency budget"))
        .transpose()
        .map_err(in_table("expect", "latency_budget_ms"))?;
    if latency_budget.is_some() && moves.is_empty() {
        // Reconnect latency is measured from the last move: without one the budget
        // would be silently ignored.
        return Err(in_table("expect", "latency_budget_ms")(
            "a latency budget needs a [[move]]: reconnect latency is measured from the last move"
                .into(),
        ));
    }
    let target_counters = crate::attack::spec::convert_counter_checks(
        expect.target_counters.unwrap_or_default(),
        &attacks,
        &transfer,
    )
    .map_err(in_table("expect", "target_counters"))?;
    let server_counters = crate::attack::spec::convert_service_counter_checks(
        expect.server_counters.unwrap_or_default(),
        &topology,
        "server_counters",
        NodeRole::MobilityServer,
        crate::attack::spec::CounterSource::Server,
    )
    .map_err(in_table("expect", "server_counters"))?;
    let proxy_counters = crate::attack::spec::convert_service_counter_checks(
        expect.proxy_counters.unwrap_or_default(),
        &topology,
        "proxy_counters",
        NodeRole::Proxy,
        crate::attack::spec::CounterSource::Proxy,
    )
    .map_err(in_table("expect", "proxy_counters"))?;

    let transcript_reason =
        match (expect.transcript, expect.transcript_reason) {
            (None | Some(true), None) => None,
            (Some(false), Some(reason)) if !reason.trim().is_empty() => Some(reason),
            (Some(false), _) => return Err(in_table("expect", "transcript_reason")(
                "transcript = false needs a transcript_reason: why this scenario's transcripts \
                 cannot be compared"
                    .into(),
            )),
            (_, Some(_)) => {
                return Err(in_table("expect", "transcript_reason")(
                    "a transcript_reason goes with transcript = false".into(),
                ))
            }
        };

    Ok(Scenario {
        name,
        description: raw.description.unwrap_or_default(),
        file: None,
        topology,
        programs,
        transfer,
        moves,
        attacks,
        restarts,
        paper,
        expect: Expectation {
            outcome,
            latency_budget,
            target_counters,
            server_counters,
            proxy_counters,
            transcript_reason,
            sender_error: expect.sender_error,
            receiver_error: expect.receiver_error,
        },
    })
}

// ---- locations in the source ------------------------------------------------------

/// The text of a scenario file, for turning byte offsets into lines and fields, and
/// fields into lines.
struct Source<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

/// A table header line: `[name]` or `[[name]]`.
#[derive(Clone, Debug, PartialEq)]
struct Header {
    name: String,
    array: bool,
}

fn header_of(line: &str) -> Option<Header> {
    let line = line.trim();
    let line = line.split('#').next().unwrap_or(line).trim();
    if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        return Some(Header {
            name: inner.trim().to_string(),
            array: true,
        });
    }
    line.strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .map(|inner| Header {
            name: inner.trim().to_string(),
            array: false,
        })
}

fn key_of(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with('[') {
        return None;
    }
    let key = trimmed.split('=').next()?.trim();
    (!key.is_empty() && trimmed.contains('=')).then(|| key.trim_matches('"'))
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Source<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { text, line_starts }
    }

    fn lines(&self) -> impl Iterator<Item = &'a str> {
        self.text.split('\n')
    }

    /// 1-based line and column of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(0, |s| s.chars().count());
        (line + 1, column + 1)
    }

    /// The field at a byte offset, as `table[index].key`.
    fn path_at(&self, offset: usize) -> String {
        let (line_no, _) = self.line_col(offset);
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        let mut current: Option<(String, Option<usize>)> = None;
        let mut key = None;
        for (i, line) in self.lines().enumerate() {
            if i + 1 > line_no {
                break;
            }
            if let Some(header) = header_of(line) {
                let index = header.array.then(|| {
                    let count = counts.entry(header.name.clone()).or_insert(0);
                    *count += 1;
                    *count - 1
                });
                current = Some((header.name, index));
                key = None;
            } else if i + 1 == line_no {
                key = key_of(line).map(str::to_string);
            }
        }
        let mut path = match current {
            Some((name, Some(index))) => format!("{name}[{index}]"),
            Some((name, None)) => name,
            None => String::new(),
        };
        if let Some(key) = key {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
        }
        if path.is_empty() {
            "(top level)".into()
        } else {
            path
        }
    }

    /// Line and column of a field; the table's header line if the field is not
    /// written out, line 1 if the table is not there either.
    fn locate(&self, path: &SpecPath) -> (usize, usize) {
        // `scenario` stands for the top level, before any table header.
        let top_level = path.table == "scenario";
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        let mut inside = top_level;
        let mut header_line = None;
        for (i, line) in self.lines().enumerate() {
            if let Some(header) = header_of(line) {
                if top_level {
                    break;
                }
                let index = header.array.then(|| {
                    let count = counts.entry(header.name.clone()).or_insert(0);
                    *count += 1;
                    *count - 1
                });
                inside = header.name == path.table && index == path.index;
                if inside {
                    header_line = Some(i + 1);
                }
                continue;
            }
            if inside {
                if let (Some(field), Some(key)) = (path.field, key_of(line)) {
                    if key == field {
                        let column = line.len() - line.trim_start().len() + 1;
                        return (i + 1, column);
                    }
                }
            }
        }
        (header_line.unwrap_or(1), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("16 furlongs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn offsets_map_to_fields_and_fields_to_lines() {
        let text = "name = \"x\"\n\n[[move]]\nhost = \"b\"\n\n[[move]]\nhost = \"b\"\n  at_s = 3\n\n[expect]\noutcome = \"broken\"\n";
        let source = Source::new(text);
        let offset = text.find("at_s").unwrap();
        assert_eq!(source.line_col(offset), (8, 3));
        assert_eq!(source.path_at(offset), "move[1].at_s");
        assert_eq!(source.locate(&SpecPath::new("move", 1, "at_s")), (8, 3));
        assert_eq!(source.locate(&SpecPath::new("move", 1, "to")), (6, 1));
        assert_eq!(
            source.locate(&SpecPath {
                table: "expect",
                index: None,
                field: Some("outcome")
            }),
            (11, 1)
        );
        assert_eq!(source.path_at(0), "name");
    }
}
