//! The topology model: global segments, NAPT routers with their private networks,
//! hosts and service nodes; planned deterministically, then built in a [`Lab`].
//!
//! ```text
//!                      core (forwards between global segments, no NAT)
//!        br-g1 192.0.2.1/24      br-g2 198.51.100.1/24      br-g3 203.0.113.1/24
//!          |          |                  |                        |
//!       c (server)  b (host)         napt1 (WAN .10)           (b after a move)
//!                                      br-home1 192.168.1.1/24
//!                                        |
//!                                      a (host, 192.168.1.10)
//! ```
//!
//! - Every **network** is a Linux bridge in its gateway's namespace: global segments in
//!   the `core` node, private networks in their NAPT router. The gateway holds the
//!   network's first address (`.1`).
//! - Every **attachment** (a node's uplink) is a veth pair: the node's end is named
//!   after the network, the gateway's end `v-<node>` is a bridge port.
//! - **Addresses** come from each network's pool in a fixed order, starting at `.10`,
//!   unless given explicitly; global segments without an explicit prefix take the
//!   documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, then /24s of
//!   the shared address space 100.64.0.0/10 (RFC 6598: never routed on the Internet,
//!   so a capture can never be mistaken for real traffic); private networks take
//!   192.168.1.0/24, 192.168.2.0/24, ...
//! - **MACs** derive from node and interface names ([`crate::names::derive_mac`]). Same spec, same
//!   order of moves: same addresses and MACs in every run, so captures line up.
//! - **Hosts** have exactly one uplink; they can move ([`Topology::detach`],
//!   [`Topology::attach`]). Service nodes (mobility server, proxy) sit on global
//!   segments and stay there. NAPT routers have a WAN attachment on a global segment
//!   and serve one private network.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::conditions::{Conditioner, LinkStats};
use crate::error::{LabError, Result};
use crate::icmp;
use crate::lab::{Lab, TeardownReport, DEFAULT_WAIT};
use crate::links;
use crate::names::validate_node_name;
use crate::napt::{self, NaptProfile};
use crate::rtnl::{self, Ipv4Route};
use crate::sysctl;

/// The node that forwards between global segments. Reserved as a node name.
pub const CORE_NODE: &str = "core";

/// Longest network or node name: interface names (`br-<network>`, `v-<node>`) must fit
/// in 15 bytes.
pub const MAX_NAME_LEN: usize = 12;

/// Pool addresses start at this offset into the prefix (`.10` of a /24); below it are
/// the gateway (`.1`) and room for explicit addresses.
pub const FIRST_POOL_OFFSET: u32 = 10;

/// Matches every LAN attachment of a NAPT router in iptables (`v-<node>` ports).
const LAN_PORTS: &str = "v-+";

/// The documentation ranges (RFC 5737), given to global segments in this order.
pub const DOCUMENTATION_PREFIXES: [Ipv4Net; 3] = [
    Ipv4Net::new_unchecked(Ipv4Addr::new(192, 0, 2, 0), 24),
    Ipv4Net::new_unchecked(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_unchecked(Ipv4Addr::new(203, 0, 113, 0), 24),
];

/// An IPv4 prefix `address/len` with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// `network/prefix_len`; fails if host bits are set or the length exceeds 32.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> std::result::Result<Ipv4Net, String> {
        if prefix_len > 32 {
            return Err(format!("prefix length {prefix_len} > 32"));
        }
        let net = Ipv4Net::new_unchecked(network, prefix_len);
        if net.network != network {
            return Err(format!(
                "{network}/{prefix_len} has host bits set (the network is {net})"
            ));
        }
        Ok(net)
    }

    const fn new_unchecked(address: Ipv4Addr, prefix_len: u8) -> Ipv4Net {
        let mask = mask(prefix_len);
        Ipv4Net {
            network: Ipv4Addr::from_bits(address.to_bits() & mask),
            prefix_len,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network.to_bits() | !mask(self.prefix_len))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        address.to_bits() & mask(self.prefix_len) == self.network.to_bits()
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The address `offset` above the network address, if it is a host address.
    pub fn host(&self, offset: u32) -> Option<Ipv4Addr> {
        let address = self.network.to_bits().checked_add(offset)?;
        let address = Ipv4Addr::from_bits(address);
        (offset > 0 && self.contains(address) && address != self.broadcast()).then_some(address)
    }

    /// The gateway address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network.to_bits() + 1)
    }
}

const fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len as u32)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (address, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/LENGTH"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        Ipv4Net::new(address, len)
    }
}

/// What a network is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkKind {
    /// A segment of the "Internet": its gateway is the core node.
    Global,
    /// The inside of a NAPT router; its gateway is that router.
    Private,
}

/// A network of the topology.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    pub kind: NetworkKind,
    /// `None`: the next free default prefix of its kind (see the module documentation).
    pub prefix: Option<Ipv4Net>,
}

/// A NAPT router: WAN uplink on a global segment, gateway of one private network.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterSpec {
    pub name: String,
    /// The global segment its WAN interface is on.
    pub wan: String,
    /// The private network it serves.
    pub lan: String,
    pub profile: NaptProfile,
    /// `None`: from the WAN segment's pool.
    pub wan_address: Option<Ipv4Addr>,
}

/// What an end node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// A host with one uplink; it can move.
    Host,
    /// The mobility information server (on a global address, never moves).
    MobilityServer,
    /// The symmetric proxy (on a global address, never moves).
    Proxy,
    /// An off-path attacker of the negative scenarios (on a global address, never
    /// moves): it injects forged segments (`attack.rs`).
    Attacker,
}

impl NodeRole {
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Host => "host",
            NodeRole::MobilityServer => "mobility-server",
            NodeRole::Proxy => "proxy",
            NodeRole::Attacker => "attacker",
        }
    }

    pub fn is_service(self) -> bool {
        self != NodeRole::Host
    }
}

impl FromStr for NodeRole {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [
            NodeRole::Host,
            NodeRole::MobilityServer,
            NodeRole::Proxy,
            NodeRole::Attacker,
        ]
        .into_iter()
        .find(|role| role.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown role {s:?}; expected \"host\", \"mobility-server\", \"proxy\" or \"attacker\""
            )
        })
    }
}

/// A host or service node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub role: NodeRole,
    /// The network it starts on; `None`: starts detached (hosts only).
    pub network: Option<String>,
    /// `None`: from the network's pool.
    pub address: Option<Ipv4Addr>,
}

/// Conditions on one attachment (node, network), applied in both directions whenever
/// the node is attached to that network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkConditions {
    /// One-way delay added in each direction.
    pub delay: Duration,
    /// Each packet's delay is drawn from `delay ± jitter` (without reordering).
    pub jitter: Duration,
    /// Probability of dropping each packet, in each direction.
    pub loss: f64,
    /// Rate limit in each direction, kbit/s.
    pub rate_kbit: Option<u64>,
    /// TCP option kinds a firewall on this attachment strips, in both directions
    /// (iptables TCPOPTSTRIP in the gateway): the path of a middlebox that removes
    /// options it does not know, such as sustain's kind 253.
    pub strip_options: Vec<u8>,
}

impl LinkConditions {
    pub fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.rate_kbit.is_none()
            && self.strip_options.is_empty()
    }
}

/// Link conditions for the attachment of `node` to `network`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSpec {
    pub node: String,
    pub network: String,
    pub conditions: LinkConditions,
}

/// A whole topology, buildable with [`Topology::build`]. Lists keep their order: it
/// decides the default prefixes and addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct TopologySpec {
    pub networks: Vec<NetworkSpec>,
    pub routers: Vec<RouterSpec>,
    pub nodes: Vec<NodeSpec>,
    pub links: Vec<LinkSpec>,
    /// MTU of every link.
    pub mtu: u32,
}

impl Default for TopologySpec {
    fn default() -> Self {
        TopologySpec {
            networks: Vec::new(),
            routers: Vec::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            mtu: 1500,
        }
    }
}

/// Where in a [`TopologySpec`] (or in a scenario file's tables) a problem is:
/// `table[index].field`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecPath {
    /// `network`, `router`, `node`, `link`, or a scenario table.
    pub table: &'static str,
    pub index: Option<usize>,
    pub field: Option<&'static str>,
}

impl SpecPath {
    pub fn new(table: &'static str, index: usize, field: &'static str) -> SpecPath {
        SpecPath {
            table,
            index: Some(index),
            field: Some(field),
        }
    }
}

impl fmt::Display for SpecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table)?;
        if let Some(index) = self.index {
            write!(f, "[{index}]")?;
        }
        if let Some(field) = self.field {
            write!(f, ".{field}")?;
        }
        Ok(())
    }
}

/// A problem with a [`TopologySpec`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: SpecPath,
    pub message: String,
}

fn spec_error(
    table: &'static str,
    index: usize,
    field: &'static str,
    message: String,
) -> SpecError {
    SpecError {
        path: SpecPath::new(table, index, field),
        message,
    }
}

impl TopologySpec {
    pub fn new() -> TopologySpec {
        TopologySpec::default()
    }

    /// Adds a global segment with the next default prefix.
    pub fn global(mut self, name: &str) -> Self {
        self.networks.push(NetworkSpec {
            name: name.into(),
            kind: NetworkKind::Global,
            prefix: None,
        });
        self
    }

    /// Adds a global segment with an explicit prefix.
    pub fn global_with_prefix(mut self, name: &str, prefix: Ipv4Net) -> Self {
        self.networks.push(NetworkSpec {
            name: name.into(),
            kind: NetworkKind::Global,
            prefix: Some(prefix),
        });
        self
    }

    /// Adds a NAPT router `name` on global segment `wan`, serving a new private network
    /// `lan` (next default private prefix).
    pub fn napt(mut self, name: &str, wan: &str, lan: &str, profile: NaptProfile) -> Self {
        self.networks.push(NetworkSpec {
            name: lan.into(),
            kind: NetworkKind::Private,
            prefix: None,
        });
        self.routers.push(RouterSpec {
            name: name.into(),
            wan: wan.into(),
            lan: lan.into(),
            profile,
            wan_address: None,
        });
        self
    }

    /// Adds a host starting on `network`.
    pub fn host(mut self, name: &str, network: &str) -> Self {
        self.nodes.push(NodeSpec {
            name: name.into(),
            role: NodeRole::Host,
            network: Some(network.into()),
            address: None,
        });
        self
    }

    /// Adds a service node (mobility server or proxy) on a global segment.
    pub fn service(mut self, name: &str, role: NodeRole, network: &str) -> Self {
        self.nodes.push(NodeSpec {
            name: name.into(),
            role,
            network: Some(network.into()),
            address: None,
        });
        self
    }

    /// Sets the conditions of the attachment of `node` to `network`.
    pub fn link(mut self, node: &str, network: &str, conditions: LinkConditions) -> Self {
        self.links.push(LinkSpec {
            node: node.into(),
            network: network.into(),
            conditions,
        });
        self
    }

    /// Checks the spec and decides every prefix and initial address.
    pub fn plan(&self) -> std::result::Result<Plan, SpecError> {
        if !(576..=9000).contains(&self.mtu) {
            return Err(SpecError {
                path: SpecPath {
                    table: "topology",
                    index: None,
                    field: Some("mtu"),
                },
                message: format!("MTU {} is outside 576..=9000", self.mtu),
            });
        }
        let mut networks: BTreeMap<String, PlannedNetwork> = BTreeMap::new();
        let mut order = Vec::new();

        // Explicit prefixes first, so default ones can avoid them.
        let explicit: Vec<(NetworkKind, Ipv4Net)> = self
            .networks
            .iter()
            .filter_map(|net| net.prefix.map(|prefix| (net.kind, prefix)))
            .collect();
        let mut next_global = 0u32;
        let mut next_private = 1u32;
        for (index, net) in self.networks.iter().enumerate() {
            check_name(&net.name).map_err(|m| spec_error("network", index, "name", m))?;
            if net.name == "lo" {
                return Err(spec_error(
                    "network",
                    index,
                    "name",
                    "\"lo\" is reserved".into(),
                ));
            }
            if networks.contains_key(&net.name) {
                return Err(spec_error(
                    "network",
                    index,
                    "name",
                    format!("network {:?} is defined twice", net.name),
                ));
            }
            let prefix = match net.prefix {
                Some(prefix) => {
                    if !(8..=24).contains(&prefix.prefix_len()) {
                        return Err(spec_error(
                            "network",
                            index,
                            "prefix",
                            format!("prefix length of {prefix} is outside 8..=24"),
                        ));
                    }
                    prefix
                }
                None => loop {
                    let candidate = match net.kind {
                        NetworkKind::Global => {
                            let n = next_global;
                            next_global += 1;
                            default_global_prefix(n)
                        }
                        NetworkKind::Private => {
                            let n = next_private;
                            next_private += 1;
                            (n <= 255).then(|| {
                                Ipv4Net::new_unchecked(Ipv4Addr::new(192, 168, n as u8, 0), 24)
                            })
                        }
                    }
                    .ok_or_else(|| {
                        spec_error("network", index, "prefix", "no default prefix left".into())
                    })?;
                    // Global prefixes must be unique among all global ones; private
                    // ones may repeat (different NAPTs) but default ones do not.
                    if !explicit.iter().any(|(_, p)| p.overlaps(&candidate)) {
                        break candidate;
                    }
                },
            };
            if net.kind == NetworkKind::Global {
                let clash = networks.values().find(|other| {
                    other.kind == NetworkKind::Global && other.prefix.overlaps(&prefix)
                });
                if let Some(other) = clash {
                    return Err(spec_error(
                        "network",
                        index,
                        "prefix",
                        format!(
                            "{prefix} overlaps global network {:?} ({})",
                            other.name, other.prefix
                        ),
                    ));
                }
            }
            let gateway_node = match net.kind {
                NetworkKind::Global => CORE_NODE.to_string(),
                NetworkKind::Private => {
                    let routers: Vec<&RouterSpec> =
                        self.routers.iter().filter(|r| r.lan == net.name).collect();
                    match routers.as_slice() {
                        [router] => router.name.clone(),
                        [] => {
                            return Err(spec_error(
                                "network",
                                index,
                                "kind",
                                format!(
                                    "private network {:?} has no router (a router's `lan`)",
                                    net.name
                                ),
                            ))
                        }
                        _ => {
                            return Err(spec_error(
                                "network",
                                index,
                                "kind",
                                format!(
                                    "private network {:?} is the `lan` of several routers",
                                    net.name
                                ),
                            ))
                        }
                    }
                }
            };
            order.push(net.name.clone());
            networks.insert(
                net.name.clone(),
                PlannedNetwork {
                    name: net.name.clone(),
                    kind: net.kind,
                    prefix,
                    gateway: prefix.gateway(),
                    gateway_node,
                    bridge: format!("br-{}", net.name),
                },
            );
        }

        let mut node_names: BTreeSet<String> = BTreeSet::new();
        let mut pools: BTreeMap<String, Pool> = networks
            .values()
            .map(|net| (net.name.clone(), Pool::new(net.prefix)))
            .collect();
        let reserve = |network: &str,
                       address: Ipv4Addr,
                       pools: &mut BTreeMap<String, Pool>|
         -> std::result::Result<(), String> {
            let pool = pools
                .get_mut(network)
                .ok_or_else(|| format!("unknown network {network:?}"))?;
            pool.reserve(address)
        };

        for (index, router) in self.routers.iter().enumerate() {
            check_node_name(&router.name).map_err(|m| spec_error("router", index, "name", m))?;
            if !node_names.insert(router.name.clone()) {
                return Err(spec_error(
                    "router",
                    index,
                    "name",
                    format!("node {:?} is defined twice", router.name),
                ));
            }
            match networks.get(&router.wan) {
                Some(net) if net.kind == NetworkKind::Global => {}
                Some(_) => {
                    return Err(spec_error(
                        "router",
                        index,
                        "wan",
                        format!(
                            "{:?} is a private network; a WAN must be global",
                            router.wan
                        ),
                    ))
                }
                None => {
                    return Err(spec_error(
                        "router",
                        index,
                        "wan",
                        format!("no network {:?}", router.wan),
                    ))
                }
            }
            match networks.get(&router.lan) {
                Some(net) if net.kind == NetworkKind::Private => {}
                Some(_) => {
                    return Err(spec_error(
                        "router",
                        index,
                        "lan",
                        format!(
                            "{:?} is a global network; a LAN must be private",
                            router.lan
                        ),
                    ))
                }
                None => {
                    return Err(spec_error(
                        "router",
                        index,
                        "lan",
                        format!("no network {:?}", router.lan),
                    ))
                }
            }
            if let Some(address) = router.wan_address {
                reserve(&router.wan, address, &mut pools)
                    .map_err(|m| spec_error("router", index, "wan_address", m))?;
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            check_node_name(&node.name).map_err(|m| spec_error("node", index, "name", m))?;
            if !node_names.insert(node.name.clone()) {
                return Err(spec_error(
                    "node",
                    index,
                    "name",
                    format!("node {:?} is defined twice", node.name),
                ));
            }
            match (&node.network, node.role) {
                (None, NodeRole::Host) => {
                    if node.address.is_some() {
                        return Err(spec_error(
                            "node",
                            index,
                            "address",
                            "a detached host has no address".into(),
                        ));
                    }
                }
                (None, role) => {
                    return Err(spec_error(
                        "node",
                        index,
                        "network",
                        format!("a {} needs a global network", role.name()),
                    ))
                }
                (Some(network), role) => {
                    let Some(net) = networks.get(network) else {
                        return Err(spec_error(
                            "node",
                            index,
                            "network",
                            format!("no network {network:?}"),
                        ));
                    };
                    if role.is_service() && net.kind != NetworkKind::Global {
                        return Err(spec_error(
                            "node",
                            index,
                            "network",
                            format!(
                                "a {} sits on a global network; {network:?} is private",
                                role.name()
                            ),
                        ));
                    }
                    if let Some(address) = node.address {
                        reserve(network, address, &mut pools)
                            .map_err(|m| spec_error("node", index, "address", m))?;
                    }
                }
            }
        }

        // Pool addresses in declaration order: routers first, then nodes.
        let mut initial = Vec::new();
        for (index, router) in self.routers.iter().enumerate() {
            let address = match router.wan_address {
                Some(address) => address,
                None => pools
                    .get_mut(&router.wan)
                    .and_then(Pool::allocate)
                    .ok_or_else(|| {
                        spec_error(
                            "router",
                            index,
                            "wan",
                            format!("network {:?} is full", router.wan),
                        )
                    })?,
            };
            initial.push((router.name.clone(), router.wan.clone(), address));
        }
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(network) = &node.network else {
                continue;
            };
            let address = match node.address {
                Some(address) => address,
                None => pools
                    .get_mut(network)
                    .and_then(Pool::allocate)
                    .ok_or_else(|| {
                        spec_error(
                            "node",
                            index,
                            "network",
                            format!("network {network:?} is full"),
                        )
                    })?,
            };
            initial.push((node.name.clone(), network.clone(), address));
        }

        for (index, link) in self.links.iter().enumerate() {
            if !node_names.contains(&link.node) {
                return Err(spec_error(
                    "link",
                    index,
                    "node",
                    format!("no node {:?}", link.node),
                ));
            }
            if !networks.contains_key(&link.network) {
                return Err(spec_error(
                    "link",
                    index,
                    "network",
                    format!("no network {:?}", link.network),
                ));
            }
            let c = &link.conditions;
            if !(c.loss.is_finite() && (0.0..1.0).contains(&c.loss)) {
                return Err(spec_error(
                    "link",
                    index,
                    "loss",
                    format!("loss {} is not in [0, 1)", c.loss),
                ));
            }
            if c.delay > Duration::from_secs(10) {
                return Err(spec_error(
                    "link",
                    index,
                    "delay_ms",
                    "a one-way delay above 10 s is not a link".into(),
                ));
            }
            if c.jitter > Duration::from_secs(10) {
                return Err(spec_error(
                    "link",
                    index,
                    "jitter_ms",
                    "a jitter above 10 s is not a link".into(),
                ));
            }
            if let Some(&kind) = c.strip_options.iter().find(|&&k| k < 2) {
                return Err(spec_error(
                    "link",
                    index,
                    "strip_options",
                    format!("option kind {kind} (end of list, no-op) cannot be stripped"),
                ));
            }
            if c.rate_kbit == Some(0) {
                return Err(spec_error(
                    "link",
                    index,
                    "rate_kbit",
                    "a rate of 0 passes nothing".into(),
                ));
            }
            if self.links[..index]
                .iter()
                .any(|other| other.node == link.node && other.network == link.network)
            {
                return Err(spec_error(
                    "link",
                    index,
                    "network",
                    format!(
                        "conditions for {} on {} are given twice",
                        link.node, link.network
                    ),
                ));
            }
        }

        Ok(Plan {
            networks: order
                .iter()
                .filter_map(|name| networks.get(name).cloned())
                .collect(),
            initial,
            pools,
        })
    }
}

/// The n-th default prefix of a global segment.
fn default_global_prefix(n: u32) -> Option<Ipv4Net> {
    if let Some(prefix) = DOCUMENTATION_PREFIXES.get(n as usize) {
        return Some(*prefix);
    }
    // 100.64.0.0/10 holds 2^14 /24s.
    let k = n - DOCUMENTATION_PREFIXES.len() as u32;
    (k < (1 << 14)).then(|| Ipv4Net::new_unchecked(Ipv4Addr::from_bits(0x6440_0000 + (k << 8)), 24))
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    validate_node_name(name).map_err(|err| err.to_string())?;
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{name:?} is longer than {MAX_NAME_LEN} characters (interface names derive from it)"
        ));
    }
    Ok(())
}

fn check_node_name(name: &str) -> std::result::Result<(), String> {
    check_name(name)?;
    if name == CORE_NODE {
        return Err(format!("{CORE_NODE:?} is reserved for the core router"));
    }
    Ok(())
}

/// A network with its prefix and gateway decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedNetwork {
    pub name: String,
    pub kind: NetworkKind,
    pub prefix: Ipv4Net,
    /// The gateway's address on it (the prefix's first host address).
    pub gateway: Ipv4Addr,
    /// The node holding the network's bridge: `core` or the NAPT router.
    pub gateway_node: String,
    /// The bridge's name in the gateway node.
    pub bridge: String,
}

/// A checked spec with every prefix and initial address decided.
#[derive(Clone, Debug)]
pub struct Plan {
    /// In spec order.
    pub networks: Vec<PlannedNetwork>,
    /// (node, network, address) of every initial attachment: router WANs, then nodes.
    pub initial: Vec<(String, String, Ipv4Addr)>,
    pools: BTreeMap<String, Pool>,
}

impl Plan {
    pub fn network(&self, name: &str) -> Option<&PlannedNetwork> {
        self.networks.iter().find(|net| net.name == name)
    }

    /// The initial address of `node`.
    pub fn initial_address(&self, node: &str) -> Option<Ipv4Addr> {
        self.initial
            .iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, _, address)| *address)
    }
}

/// Hands out a network's addresses in order, never twice.
#[derive(Clone, Debug)]
struct Pool {
    prefix: Ipv4Net,
    next_offset: u32,
    taken: BTreeSet<Ipv4Addr>,
}

impl Pool {
    fn new(prefix: Ipv4Net) -> Pool {
        Pool {
            prefix,
            next_offset: FIRST_POOL_OFFSET,
            taken: BTreeSet::from([prefix.gateway()]),
        }
    }

    fn reserve(&mut self, address: Ipv4Addr) -> std::result::Result<(), String> {
        let prefix = self.prefix;
        if !prefix.contains(address) || address == prefix.network() || address == prefix.broadcast()
        {
            return Err(format!("{address} is not a host address of {prefix}"));
        }
        if address == prefix.gateway() {
            return Err(format!("{address} is the gateway of {prefix}"));
        }
        if !self.taken.insert(address) {
            return Err(format!("{address} is used twice"));
        }
        Ok(())
    }

    fn allocate(&mut self) -> Option<Ipv4Addr> {
        loop {
            let address = self.prefix.host(self.next_offset)?;
            self.next_offset += 1;
            if self.taken.insert(address) {
                return Some(address);
            }
        }
    }
}

/// A node's uplink as it exists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub node: String,
    pub network: String,
    /// The node's interface (named after the network).
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The node holding the network's bridge.
    pub gateway_node: String,
    /// The gateway's end of the veth (a port of the network's bridge).
    pub port: String,
}

impl Attachment {
    /// `<node>-<network>`: the name of this attachment's capture and log files.
    pub fn label(&self) -> String {
        format!("{}-{}", self.node, self.network)
    }
}

/// Told about every uplink the topology creates or removes (initial ones and moves):
/// captures and link emulation hook in here.
pub trait AttachmentHook: Send + Sync {
    /// The veth exists in both namespaces, is down and has no address yet.
    fn created(&self, topology: &Topology, attachment: &Attachment) -> Result<()>;
    /// The veth is about to be taken apart (a detach); it still carries traffic.
    fn removing(&self, _topology: &Topology, _attachment: &Attachment) {}
    /// The veth is gone.
    fn removed(&self, _topology: &Topology, _attachment: &Attachment) {}
    /// The topology is being torn down: stop everything that holds a namespace open
    /// (sockets, threads inside it).
    fn shutdown(&self) {}
}

/// What [`Topology::attach`] did and when it finished.
#[derive(Clone, Debug)]
pub struct Attached {
    pub attachment: Attachment,
    /// When the default route through the new uplink was installed (the kernel
    /// acknowledged it): the host can use its new address from here on.
    pub completed: Instant,
}

/// What [`Topology::detach`] removed and when it finished.
#[derive(Clone, Debug)]
pub struct Detached {
    pub attachment: Attachment,
    /// When the link was gone.
    pub completed: Instant,
}

#[derive(Debug, Default)]
struct TopologyState {
    attachments: BTreeMap<String, Attachment>,
    pools: BTreeMap<String, Pool>,
}

/// A built topology. Dropping it tears the lab down.
pub struct Topology {
    lab: Lab,
    spec: TopologySpec,
    networks: Vec<PlannedNetwork>,
    state: Mutex<TopologyState>,
    hooks: Mutex<Vec<Arc<dyn AttachmentHook>>>,
    conditioner: Arc<Conditioner>,
    /// Serializes attach/detach so that pool order (and so addresses) follows call order.
    moving: Mutex<()>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("run", self.lab.run_id())
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn invalid(err: SpecError) -> LabError {
    LabError::InvalidValue(err.to_string())
}

impl Topology {
    /// Builds `spec` in a new lab and returns once every node can reach every other
    /// node it should (see [`check_connectivity`](Topology::check_connectivity)).
    pub fn build(spec: &TopologySpec) -> Result<Topology> {
        Topology::build_with_hooks(spec, Vec::new())
    }

    /// [`build`](Topology::build), with hooks told about every uplink from the first.
    pub fn build_with_hooks(
        spec: &TopologySpec,
        hooks: Vec<Arc<dyn AttachmentHook>>,
    ) -> Result<Topology> {
        let plan = spec.plan().map_err(invalid)?;
        // A missing kernel feature stops here with its name and module, not later
        // as a hang or a silently undelayed link (in containers especially).
        crate::features::check()?;
        let lab = Lab::new()?;
        let conditioner = Arc::new(Conditioner::default());
        let mut all_hooks: Vec<Arc<dyn AttachmentHook>> = vec![conditioner.clone()];
        all_hooks.extend(hooks);
        let topology = Topology {
            lab,
            spec: spec.clone(),
            networks: plan.networks.clone(),
            state: Mutex::new(TopologyState {
                attachments: BTreeMap::new(),
                pools: plan.pools.clone(),
            }),
            hooks: Mutex::new(all_hooks),
            conditioner,
            moving: Mutex::new(()),
        };
        topology.construct(&plan)?;
        topology.check_connectivity(DEFAULT_WAIT)?;
        tracing::info!(run = %topology.lab.run_id(), "topology ready");
        Ok(topology)
    }

    fn construct(&self, plan: &Plan) -> Result<()> {
        let lab = &self.lab;
        lab.add_node(CORE_NODE)?;
        lab.make_router(CORE_NODE)?;
        for router in &self.spec.routers {
            lab.add_node(&router.name)?;
            lab.make_router(&router.name)?;
        }
        for node in &self.spec.nodes {
            lab.add_node(&node.name)?;
        }
        for gateway in
            std::iter::once(CORE_NODE).chain(self.spec.routers.iter().map(|r| r.name.as_str()))
        {
            // Two nodes of one network talk through the gateway (proxy ARP): it must
            // not tell them to go direct, which they cannot.
            lab.run_in(gateway, || -> Result<()> {
                sysctl::write("net.ipv4.conf.all.send_redirects", "0")?;
                sysctl::write("net.ipv4.conf.default.send_redirects", "0")
            })??;
        }
        for (node, network, address) in &plan.initial {
            self.attach_with(node, network, *address)?;
        }
        for router in &self.spec.routers {
            // The router's only non-LAN interface is its WAN uplink (named after the WAN
            // network); every LAN attachment is a `v-<node>` port.
            napt::install(lab, &router.name, router.profile, &router.wan, LAN_PORTS)?;
        }
        Ok(())
    }

    /// The underlying lab (namespaces, processes, iptables, sysctls).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// Every network with its prefix and gateway, in spec order.
    pub fn networks(&self) -> &[PlannedNetwork] {
        &self.networks
    }

    pub fn network(&self, name: &str) -> Option<&PlannedNetwork> {
        self.networks.iter().find(|net| net.name == name)
    }

    /// The spec of end node `name` (host or service).
    pub fn node_spec(&self, name: &str) -> Option<&NodeSpec> {
        self.spec.nodes.iter().find(|node| node.name == name)
    }

    /// The namespace name of `node` (for `ip netns exec`).
    pub fn netns_name(&self, node: &str) -> String {
        self.lab.run_id().netns_name(node)
    }

    /// The current uplink of `node` (host, service or router WAN).
    pub fn attachment(&self, node: &str) -> Option<Attachment> {
        lock(&self.state).attachments.get(node).cloned()
    }

    /// Every current uplink.
    pub fn attachments(&self) -> Vec<Attachment> {
        lock(&self.state).attachments.values().cloned().collect()
    }

    /// The current address of `node`, if attached.
    pub fn address_of(&self, node: &str) -> Option<Ipv4Addr> {
        self.attachment(node).map(|attachment| attachment.address)
    }

    /// Registers a hook for uplinks created or removed from now on.
    pub fn add_hook(&self, hook: Arc<dyn AttachmentHook>) {
        lock(&self.hooks).push(hook);
    }

    fn hooks(&self) -> Vec<Arc<dyn AttachmentHook>> {
        lock(&self.hooks).clone()
    }

    /// The conditions configured for `node` on `network`.
    pub fn link_conditions(&self, node: &str, network: &str) -> Option<&LinkConditions> {
        self.spec
            .links
            .iter()
            .find(|link| link.node == node && link.network == network)
            .map(|link| &link.conditions)
    }

    /// Attaches host `node` to `network` with the next address of its pool: a veth to
    /// the network's gateway, address, link up, default route via the gateway. Returns when the kernel has acknowledged the route.
    pub fn attach(&self, node: &str, network: &str) -> Result<Attached> {
        let _moving = lock(&self.moving);
        self.check_host(node)?;
        if let Some(current) = self.attachment(node) {
            return Err(LabError::InvalidValue(format!(
                "{node} is attached to {}; hosts have one uplink (detach first)",
                current.network
            )));
        }
        let address = {
            let mut state = lock(&self.state);
            let pool = state
                .pools
                .get_mut(network)
                .ok_or_else(|| LabError::InvalidValue(format!("no network {network:?}")))?;
            pool.allocate().ok_or_else(|| {
                LabError::InvalidValue(format!("network {network:?} has no free address"))
            })?
        };
        self.attach_with(node, network, address)
    }

    /// Removes host `node`'s uplink: its default route, then its address, then the
    /// link (in that order, so an address watcher sees each step as its own event).
    pub fn detach(&self, node: &str) -> Result<Detached> {
        let _moving = lock(&self.moving);
        self.check_host(node)?;
        let attachment = self.attachment(node).ok_or_else(|| {
            LabError::InvalidValue(format!("{node} is not attached to any network"))
        })?;
        for hook in self.hooks() {
            hook.removing(self, &attachment);
        }
        let (ifname, gateway) = (attachment.ifname.clone(), attachment.gateway);
        links::in_netns(&self.lab, node, |handle, netns| async move {
            links::delete_default_route(&handle, &netns, &ifname, gateway).await?;
            links::delete_addresses(&handle, &netns, &ifname).await?;
            links::delete_link(&handle, &netns, &ifname).await
        })?;
        let completed = Instant::now();
        lock(&self.state).attachments.remove(node);
        for hook in self.hooks() {
            hook.removed(self, &attachment);
        }
        tracing::info!(node, network = attachment.network, address = %attachment.address, "detached");
        Ok(Detached {
            attachment,
            completed,
        })
    }

    fn check_host(&self, node: &str) -> Result<()> {
        match self.node_spec(node) {
            Some(spec) if spec.role == NodeRole::Host => Ok(()),
            Some(spec) => Err(LabError::InvalidValue(format!(
                "{node} is a {}; only hosts move",
                spec.role.name()
            ))),
            None => Err(LabError::UnknownNode(node.to_string())),
        }
    }

    fn attach_with(&self, node: &str, network: &str, address: Ipv4Addr) -> Result<Attached> {
        let net = self
            .network(network)
            .ok_or_else(|| LabError::InvalidValue(format!("no network {network:?}")))?
            .clone();
        let attachment = Attachment {
            node: node.to_string(),
            network: net.name.clone(),
            ifname: net.name.clone(),
            address,
            prefix_len: net.prefix.prefix_len(),
            gateway: net.gateway,
            gateway_node: net.gateway_node.clone(),
            port: format!("v-{node}"),
        };
        self.lab.add_veth(
            (node, &attachment.ifname),
            (&net.gateway_node, &attachment.port),
            self.spec.mtu,
        )?;
        let created = (|| -> Result<()> {
            let port = attachment.port.clone();
            self.lab.run_in(&net.gateway_node, || -> Result<()> {
                sysctl::write(&format!("net.ipv4.conf.{port}.proxy_arp"), "1")?;
                // Linux delays each proxy-ARP answer by a random time up to
                // proxy_delay (0.8 s by default): the first packet between two
                // hosts of a segment (a NAPT's first packet to a host that just
                // moved there) would wait for it. A real segment answers ARP at
                // once.
                sysctl::write(&format!("net.ipv4.neigh.{port}.proxy_delay"), "0")?;
                sysctl::write(&format!("net.ipv4.conf.{port}.send_redirects"), "0")
            })??;
            let gateway = net.gateway;
            links::in_netns(&self.lab, &net.gateway_node, |handle, netns| async move {
                let index = rtnl::link_index(&handle, &netns, &port).await?;
                rtnl::add_ipv4_address(&handle, index, &port, gateway, 32).await?;
                rtnl::set_link_up(&handle, index, &port).await?;
                rtnl::add_ipv4_route(&handle, &netns, &Ipv4Route::on_link(address, 32, &port)).await
            })?;
            for hook in self.hooks() {
                hook.created(self, &attachment)?;
            }
            Ok(())
        })();
        if let Err(err) = created {
            let ifname = attachment.ifname.clone();
            let _ = links::in_netns(&self.lab, node, |handle, netns| async move {
                links::delete_link(&handle, &netns, &ifname).await
            });
            return Err(err);
        }
        let (ifname, prefix_len, gateway) = (
            attachment.ifname.clone(),
            attachment.prefix_len,
            attachment.gateway,
        );
        // Link first, on both ends, then address and route: a host must not
        // see a usable address (and send) while either end of the veth is
        // still coming up. The gateway's end only gets its qdisc once the
        // kernel's link watcher has seen the carrier (up to a second later);
        // until then it silently drops what it sends, such as the first ARP
        // reply, which costs the host a 1 s ARP retry.
        let up_ifname = ifname.clone();
        links::in_netns(&self.lab, node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, &up_ifname).await?;
            rtnl::set_link_up(&handle, index, &up_ifname).await?;
            rtnl::wait_oper_up(&handle, &netns, &up_ifname, DEFAULT_WAIT).await
        })?;
        let port = attachment.port.clone();
        links::in_netns(&self.lab, &net.gateway_node, |handle, netns| async move {
            rtnl::wait_oper_up(&handle, &netns, &port, DEFAULT_WAIT).await
        })?;
        let completed = links::in_netns(&self.lab, node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, &ifname).await?;
            rtnl::add_ipv4_address(&handle, index, &ifname, address, prefix_len).await?;
            let route = Ipv4Route {
                dev: Some(ifname.clone()),
                ..Ipv4Route::default_via(gateway)
            };
            rtnl::add_ipv4_route(&handle, &netns, &route).await?;
            Ok(Instant::now())
        })?;
        lock(&self.state)
            .attachments
            .insert(node.to_string(), attachment.clone());
        tracing::info!(node, network, %address, "attached");
        Ok(Attached {
            attachment,
            completed,
        })
    }

    /// The IPv4 addresses the kernel has on `ifname` in `node`.
    pub fn kernel_addresses(&self, node: &str, ifname: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
        let ifname = ifname.to_string();
        links::in_netns(&self.lab, node, |handle, netns| async move {
            links::addresses(&handle, &netns, &ifname).await
        })
    }

    /// The hardware address the kernel has for `ifname` in `node`.
    pub fn kernel_mac(&self, node: &str, ifname: &str) -> Result<Vec<u8>> {
        let ifname = ifname.to_string();
        links::in_netns(&self.lab, node, |handle, netns| async move {
            links::mac(&handle, &netns, &ifname).await
        })
    }

    /// Sends one ICMP echo from `from` to `to`, retrying every 100 ms until a reply
    /// arrives or `timeout` passes; returns the round-trip time of the answered echo.
    pub fn ping(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<Duration> {
        let pinger = self.lab.run_in(from, icmp::Pinger::open)??;
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if let Some(rtt) = pinger.echo(to, wait)? {
                return Ok(rtt);
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("an ICMP echo reply from {to} to {from}"),
                    after: timeout,
                });
            }
        }
    }

    /// Pairs (from, to address) that must reach each other: every end node to every
    /// end node on a global network, and to every other end node on its own private
    /// network.
    pub fn reachability_pairs(&self) -> Vec<(String, String, Ipv4Addr)> {
        let attachments = self.attachments();
        let ends: Vec<&Attachment> = attachments
            .iter()
            .filter(|a| self.node_spec(&a.node).is_some())
            .collect();
        let mut pairs = Vec::new();
        for from in &ends {
            for to in &ends {
                if from.node == to.node {
                    continue;
                }
                let to_global = self
                    .network(&to.network)
                    .is_some_and(|net| net.kind == NetworkKind::Global);
                if to_global || to.network == from.network {
                    pairs.push((from.node.clone(), to.node.clone(), to.address));
                }
            }
        }
        pairs
    }

    /// Pings along every [`reachability_pair`](Topology::reachability_pairs), and
    /// from every attached node to its gateway.
    pub fn check_connectivity(&self, timeout: Duration) -> Result<()> {
        for attachment in self.attachments() {
            self.ping(&attachment.node, attachment.gateway, timeout)?;
        }
        for (from, _, address) in self.reachability_pairs() {
            self.ping(&from, address, timeout)?;
        }
        Ok(())
    }

    /// Counters of every delay line (link delay, jitter, loss), per attachment and
    /// direction, including those of links already removed by moves.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        self.conditioner.stats()
    }

    /// Stops the link emulation and processes and deletes every namespace now (also
    /// done on drop).
    pub fn teardown(&self) -> TeardownReport {
        self.shutdown_hooks();
        self.lab.teardown()
    }

    fn shutdown_hooks(&self) {
        for hook in self.hooks() {
            hook.shutdown();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Delay lines and captures hold sockets in their namespaces: stop them before
        // the lab (dropped right after this) deletes the namespaces.
        self.shutdown_hooks();
    }
}
