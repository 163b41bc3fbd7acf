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

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::conditions::{Conditioner, LinkStats};
use crate::error::{LabError, Result};
use crate::icmp;
use crate::lab::{Lab, TeardownReport, DEFAULT_WAIT};
use crate::links;
use crate::napt;
use crate::rtnl::{self, Ipv4Route};
use crate::sysctl;

pub mod attachment;
pub mod spec;

pub use attachment::*;
pub use spec::*;

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
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// What a hook sees of this topology for `attachment`.
    fn hook_context(&self, attachment: &Attachment) -> HookContext<'_> {
        HookContext {
            lab: &self.lab,
            conditions: self.link_conditions(&attachment.node, &attachment.network),
        }
    }

    /// How long packets that `attachment`'s node sent can still be held by
    /// the delay lines of other links: the longest delay plus jitter among
    /// them (zero when no other link delays).
    fn in_flight_drain(&self, attachment: &Attachment) -> std::time::Duration {
        self.spec
            .links
            .iter()
            .filter(|l| !(l.node == attachment.node && l.network == attachment.network))
            .map(|l| l.conditions.delay + l.conditions.jitter)
            .max()
            .unwrap_or_default()
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
    /// The link's capture and delay line stop first, under the attach lock, as the
    /// golden captures were recorded (moving the teardown after the address changed
    /// the spacing of simultaneous moves; see issue 11's notes).
    pub fn detach(&self, node: &str) -> Result<Detached> {
        let _moving = lock(&self.moving);
        self.check_host(node)?;
        let attachment = self.attachment(node).ok_or_else(|| {
            LabError::InvalidValue(format!("{node} is not attached to any network"))
        })?;
        for hook in self.hooks() {
            hook.removing(&self.hook_context(&attachment), &attachment);
        }
        let (ifname, gateway) = (attachment.ifname.clone(), attachment.gateway);
        let drain = self.in_flight_drain(&attachment);
        links::in_netns(&self.lab, node, |handle, netns| async move {
            links::delete_default_route(&handle, &netns, &ifname, gateway).await?;
            links::delete_addresses(&handle, &netns, &ifname).await?;
            // The node can send nothing more on this link; what it sent is
            // still in other links' delay lines, and the kernel drops a
            // queued packet when the bridge port it came in by goes down
            // (nfnetlink_queue's device notifier, via br_netfilter's
            // physindev). A real link that dies loses nothing already
            // forwarded: let it drain first.
            if !drain.is_zero() {
                tokio::time::sleep(drain).await;
            }
            links::delete_link(&handle, &netns, &ifname).await
        })?;
        let completed = Instant::now();
        lock(&self.state).attachments.remove(node);
        for hook in self.hooks() {
            hook.removed(&self.hook_context(&attachment), &attachment);
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
                hook.created(&self.hook_context(&attachment), &attachment)?;
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
