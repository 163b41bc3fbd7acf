//! Deterministic in-process network simulator.
//!
//! A [`Network`] holds sans-IO nodes ([`SimNode`]: whole IPv4 packets in and
//! out, timers as `poll_timeout`/`handle_timeout`) and moves packets between
//! them over directional links with latency, jitter, loss, duplication,
//! reordering and an optional bottleneck rate with a drop-tail queue. Time is
//! virtual and jumps from event to event. Everything is a function of the
//! seed: each directional link draws from its own [`SplitMix64`] derived from
//! the seed and the two node ids, and events are ordered by (time, sequence).
//!
//! Packets are routed by IPv4 destination address. Every node and middlebox
//! lives in an addressing *realm*: the global realm, or the inside of a
//! middlebox. A packet is first looked up in its sender's realm; if nobody
//! there owns the destination, it leaves through the realm's middlebox
//! ([`Direction::Outbound`]) into the enclosing realm, and so on. A packet
//! addressed to a middlebox's own address enters that middlebox
//! ([`Direction::Inbound`]) and is looked up again inside it. A middlebox
//! added with [`InsideScope::Public`] (a filter, a lossy box) makes its inside
//! addresses reachable from outside through it; one added with
//! [`InsideScope::Private`] (a NAPT) hides them, so outsiders can only reach
//! its own addresses, exactly like private addressing behind a real NAT.
//!
//! Middleboxes act when the packet is sent, so translation happens at the
//! sender's `now`; the link from the sending node to the receiving node then
//! applies its impairments to the (translated) packet. [`napt::Napt`] is a
//! NAPT with connection tracking, for moves behind address translation.
//!
//! A node moves like a host whose address changes: take its address away
//! ([`Network::remove_address`]), optionally put it behind another
//! middlebox ([`Network::set_uplink`]), give it a new one
//! ([`Network::add_address`]), and tell its endpoint, as the runtime's
//! address watcher would (`Endpoint::address_lost` / `address_available`).

pub mod napt;

pub use napt::{Napt, NaptMapping, NaptStats};

use core::cell::RefCell;
use core::cmp::{Ordering, Reverse};
use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use crate::rand::{Random, SplitMix64};
use crate::time::{Duration, Instant};

/// A sans-IO participant: the TCP [`crate::tcp::Endpoint`], or a test node.
pub trait SimNode {
    /// One whole IPv4 packet arrived.
    fn handle_packet(&mut self, now: Instant, packet: &[u8]);
    /// The instant returned by `poll_timeout` has been reached.
    fn handle_timeout(&mut self, now: Instant);
    /// Earliest instant `handle_timeout` must be called, if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Writes one IPv4 packet into `buf` and returns its length. The
    /// network routes it by its header, as a router does (a node may send
    /// anything, garbage included); the nodes' own `poll_transmit`s say
    /// where their packets go ([`crate::Transmit`]) for a host's driver.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize>;
    /// The host refused to send `packet`, which this node wrote (see
    /// [`Network::set_refusing`]). Ignored by default.
    fn handle_refused(&mut self, _now: Instant, _packet: &[u8]) {}
}

impl SimNode for crate::tcp::Endpoint {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        crate::tcp::Endpoint::handle_packet(self, now, packet);
    }

    fn handle_timeout(&mut self, now: Instant) {
        crate::tcp::Endpoint::handle_timeout(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        crate::tcp::Endpoint::poll_timeout(self)
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        crate::tcp::Endpoint::poll_transmit(self, now, buf).map(|t| t.size)
    }

    fn handle_refused(&mut self, now: Instant, packet: &[u8]) {
        crate::tcp::Endpoint::handle_refused(self, now, packet);
    }
}

/// The proxy's relay as a simulator node (PROTOCOL.md §6.9).
impl SimNode for crate::relay::Relay {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        crate::relay::Relay::handle_packet(self, now, packet);
    }

    fn handle_timeout(&mut self, now: Instant) {
        crate::relay::Relay::handle_timeout(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        crate::relay::Relay::poll_timeout(self)
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        crate::relay::Relay::poll_transmit(self, buf).map(|t| t.size)
    }
}

/// Impairments of one directional link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per packet (µs
    /// resolution); enough jitter reorders packets by itself.
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice (the copy has its own jitter).
    pub duplicate: f64,
    /// Probability a packet is held back an extra `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a packet held back by the reorder rule.
    pub reorder_delay: Duration,
    /// Bottleneck rate: packets are serialised one after another at this
    /// many bits per second behind a drop-tail queue of `queue_bytes`.
    pub rate_bps: Option<u64>,
    /// Bytes waiting for (or in) serialisation beyond which arrivals are
    /// dropped. Only meaningful with `rate_bps`.
    pub queue_bytes: usize,
}

impl Default for LinkConfig {
    /// 1 ms latency, no impairments, no rate limit.
    fn default() -> LinkConfig {
        LinkConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            rate_bps: None,
            queue_bytes: 256 * 1024,
        }
    }
}

/// Names a node of a [`Network`] (its index, in the order added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Names a middlebox of a [`Network`] (its index, in the order added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MiddleboxId(pub usize);

/// Which way a packet crosses a middlebox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the middlebox's inside towards the enclosing realm.
    Outbound,
    /// From outside, addressed to the middlebox (or, for
    /// [`InsideScope::Public`], to a node behind it).
    Inbound,
}

/// Whether the addresses of nodes behind a middlebox can be reached from
/// outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsideScope {
    /// Inside addresses are routable from the enclosing realm, through the
    /// middlebox (a firewall, a lossy box, a transparent rewriter).
    Public,
    /// Inside addresses exist only inside (private addressing behind a
    /// NAPT): outsiders reach inside nodes only via the middlebox's own
    /// addresses and its translation.
    Private,
}

/// A packet-rewriting hop on the path of every packet entering or leaving
/// its inside realm.
pub trait Middlebox {
    /// Inspect, and possibly rewrite, one IPv4 packet. `false` drops it.
    fn process(&mut self, now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool;
}

impl<M: Middlebox + ?Sized> Middlebox for Box<M> {
    fn process(&mut self, now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool {
        (**self).process(now, direction, packet)
    }
}

/// Lets a test keep a handle on a middlebox's state (e.g. NAPT mappings).
impl<M: Middlebox + ?Sized> Middlebox for Rc<RefCell<M>> {
    fn process(&mut self, now: Instant, direction: Direction, packet: &mut Vec<u8>) -> bool {
        self.borrow_mut().process(now, direction, packet)
    }
}

/// What happened to a transmitted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Handed to its destination.
    Delivered,
    /// Random loss on the link.
    Lost,
    /// Delivered twice.
    Duplicated,
    /// No node owned the destination (when sent, or by the time it arrived),
    /// or the bytes were not an IPv4 packet.
    Unroutable,
    /// A middlebox dropped it.
    Filtered,
    /// The bottleneck queue was full.
    QueueFull,
}

/// One packet as a node sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// When it was sent.
    pub time: Instant,
    /// The node that sent it.
    pub from: NodeId,
    /// The node it was routed to; `None` if unroutable.
    pub to: Option<NodeId>,
    /// The bytes the sender wrote.
    pub bytes: Vec<u8>,
    /// The bytes after middlebox rewriting, if a middlebox changed them.
    pub translated: Option<Vec<u8>>,
    /// What happened to it.
    pub fate: Fate,
    /// When the (first copy of the) packet was handed to `to`.
    pub arrival: Option<Instant>,
}

impl Captured {
    /// The bytes as they travelled between the middleboxes and `to`.
    pub fn delivered_bytes(&self) -> &[u8] {
        self.translated.as_deref().unwrap_or(&self.bytes)
    }
}

/// Network-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets handed to the network by nodes (or injected).
    pub sent: u64,
    /// Packets a refusing node's host refused ([`Network::set_refusing`]).
    pub refused: u64,
    /// Packet copies handed to nodes.
    pub delivered: u64,
    /// Packets lost at random on a link.
    pub lost: u64,
    /// Packets that were delivered twice.
    pub duplicated: u64,
    /// Packet copies held back by the reorder rule.
    pub reordered: u64,
    /// Packets no node owned, or that were not IPv4.
    pub unroutable: u64,
    /// Dropped by a middlebox.
    pub filtered: u64,
    /// Dropped by a full bottleneck queue.
    pub queue_drops: u64,
}

/// Middlebox hops one packet may cross before it is declared unroutable;
/// stops routing loops between misconfigured middleboxes.
const MAX_HOPS: usize = 16;

/// A node whose timer fires this many times at one instant without time
/// moving is livelocked; the simulator panics instead of hanging the test.
const MAX_TIMEOUTS_AT_ONE_INSTANT: u32 = 100_000;

/// Big enough for any IPv4 packet.
const MAX_PACKET: usize = 65_535;

type Realm = Option<MiddleboxId>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Node(NodeId),
    Middlebox(MiddleboxId),
}

struct NodeSlot<N> {
    node: N,
    addresses: BTreeSet<Ipv4Addr>,
    uplink: Realm,
    /// The host refuses every send (its route is gone, its address not yet).
    refusing: bool,
}

struct MiddleboxSlot {
    middlebox: Box<dyn Middlebox>,
    addresses: BTreeSet<Ipv4Addr>,
    uplink: Realm,
    scope: InsideScope,
}

/// Per directional link: its own random stream and the bottleneck's state.
struct LinkState {
    rng: SplitMix64,
    /// When the bottleneck finishes serialising what it has accepted (ns).
    busy_until_ns: u64,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: NodeId,
    packet: Vec<u8>,
    capture: Option<usize>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &InFlight) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &InFlight) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &InFlight) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The IPv4 destination address, if `packet` looks like an IPv4 header.
fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some(Ipv4Addr::from(dst))
}

/// SplitMix64's output function, to give every link an independent stream.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

type CaptureFilter = Box<dyn Fn(&[u8]) -> bool>;

/// A seeded discrete-event network of [`SimNode`]s.
pub struct Network<N: SimNode> {
    seed: u64,
    now: Instant,
    nodes: Vec<NodeSlot<N>>,
    middleboxes: Vec<MiddleboxSlot>,
    routes: BTreeMap<(Realm, Ipv4Addr), Owner>,
    default_link: LinkConfig,
    link_configs: BTreeMap<(NodeId, NodeId), LinkConfig>,
    link_states: BTreeMap<(NodeId, NodeId), LinkState>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    capture: Option<Vec<Captured>>,
    /// Which packets (as the sender wrote them) the capture records.
    capture_filter: Option<CaptureFilter>,
    stats: NetStats,
    scratch: Vec<u8>,
    /// Livelock detection: (instant, node, timeouts fired there).
    timeout_streak: (Instant, NodeId, u32),
}

impl<N: SimNode> Network<N> {
    /// An empty network; every random draw (loss, jitter, duplication) derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Network {
            seed,
            now: Instant::ZERO,
            nodes: Vec::new(),
            middleboxes: Vec::new(),
            routes: BTreeMap::new(),
            default_link: LinkConfig::default(),
            link_configs: BTreeMap::new(),
            link_states: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            capture: None,
            capture_filter: None,
            stats: NetStats::default(),
            scratch: vec![0; MAX_PACKET],
            timeout_streak: (Instant::ZERO, NodeId(usize::MAX), 0),
        }
    }

    /// Adds a node owning `addr` in the global realm.
    ///
    /// Panics if another node or middlebox already owns `addr` there.
    pub fn add_node(&mut self, addr: Ipv4Addr, node: N) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(NodeSlot {
            node,
            addresses: BTreeSet::from([addr]),
            uplink: None,
            refusing: false,
        });
        self.rebuild_routes();
        id
    }

    /// Gives the node another address in its realm. Panics on a conflict.
    pub fn add_address(&mut self, id: NodeId, addr: Ipv4Addr) {
        if self.nodes[id.0].addresses.insert(addr) {
            self.rebuild_routes();
        }
    }

    /// Takes an address away. Packets to it become unroutable; those already
    /// in flight to this node are dropped when they arrive, even if another
    /// node has taken the address meanwhile.
    pub fn remove_address(&mut self, id: NodeId, addr: Ipv4Addr) {
        if self.nodes[id.0].addresses.remove(&addr) {
            self.rebuild_routes();
        }
    }

    /// Replaces all of the node's addresses. Panics on a conflict.
    pub fn set_addresses(&mut self, id: NodeId, addrs: &[Ipv4Addr]) {
        self.nodes[id.0].addresses = addrs.iter().copied().collect();
        self.rebuild_routes();
    }

    /// The node's addresses, ascending.
    pub fn addresses(&self, id: NodeId) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.nodes[id.0].addresses.iter().copied()
    }

    /// Puts the node behind `middlebox` (its addresses move into the
    /// middlebox's inside realm), or back in the global realm with `None`.
    /// Panics on an address conflict in the new realm.
    /// Models a host whose route is gone while its address (and so its
    /// endpoint's view) is not yet: every packet the node writes is handed
    /// back with [`SimNode::handle_refused`] instead of sent, one per
    /// network event, as the runtime's driver does on ENETUNREACH.
    pub fn set_refusing(&mut self, id: NodeId, refusing: bool) {
        self.nodes[id.0].refusing = refusing;
    }

    /// Puts node `id` behind `middlebox` (`None`: in the global realm).
    pub fn set_uplink(&mut self, id: NodeId, middlebox: Option<MiddleboxId>) {
        self.nodes[id.0].uplink = middlebox;
        self.rebuild_routes();
    }

    /// The middlebox node `id` sits behind, if any.
    pub fn uplink(&self, id: NodeId) -> Option<MiddleboxId> {
        self.nodes[id.0].uplink
    }

    /// Adds a middlebox in the global realm with no addresses of its own.
    /// Attach nodes behind it with [`Network::set_uplink`].
    pub fn add_middlebox(
        &mut self,
        middlebox: impl Middlebox + 'static,
        scope: InsideScope,
    ) -> MiddleboxId {
        let id = MiddleboxId(self.middleboxes.len());
        self.middleboxes.push(MiddleboxSlot {
            middlebox: Box::new(middlebox),
            addresses: BTreeSet::new(),
            uplink: None,
            scope,
        });
        id
    }

    /// Gives the middlebox an address of its own in its enclosing realm (a
    /// NAPT's public address). Panics on a conflict.
    pub fn add_middlebox_address(&mut self, id: MiddleboxId, addr: Ipv4Addr) {
        if self.middleboxes[id.0].addresses.insert(addr) {
            self.rebuild_routes();
        }
    }

    /// Takes an address added by [`Network::add_middlebox_address`] away from the middlebox.
    pub fn remove_middlebox_address(&mut self, id: MiddleboxId, addr: Ipv4Addr) {
        if self.middleboxes[id.0].addresses.remove(&addr) {
            self.rebuild_routes();
        }
    }

    /// Nests a middlebox behind another (carrier-grade NAT behind home NAT).
    /// Panics if that would create a cycle or an address conflict.
    pub fn set_middlebox_uplink(&mut self, id: MiddleboxId, uplink: Option<MiddleboxId>) {
        let mut realm = uplink;
        while let Some(m) = realm {
            assert!(m != id, "middlebox uplink cycle through {id:?}");
            realm = self.middleboxes[m.0].uplink;
        }
        self.middleboxes[id.0].uplink = uplink;
        self.rebuild_routes();
    }

    /// The middlebox `id`.
    pub fn middlebox(&self, id: MiddleboxId) -> &dyn Middlebox {
        &*self.middleboxes[id.0].middlebox
    }

    /// The middlebox `id`, mutably.
    pub fn middlebox_mut(&mut self, id: MiddleboxId) -> &mut dyn Middlebox {
        &mut *self.middleboxes[id.0].middlebox
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &N {
        &self.nodes[id.0].node
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut N {
        &mut self.nodes[id.0].node
    }

    /// How many nodes the network has.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The configuration of every link without its own [`Network::set_link`].
    pub fn set_default_link(&mut self, cfg: LinkConfig) {
        self.default_link = cfg;
    }

    /// Configures the directional link `from -> to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, cfg: LinkConfig) {
        self.link_configs.insert((from, to), cfg);
    }

    /// Configures both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: NodeId, b: NodeId, cfg: LinkConfig) {
        self.link_configs.insert((a, b), cfg.clone());
        self.link_configs.insert((b, a), cfg);
    }

    /// The configuration of the directional link `from -> to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.link_configs
            .get(&(from, to))
            .unwrap_or(&self.default_link)
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed the network was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records every packet sent from now on.
    pub fn enable_capture(&mut self) {
        if self.capture.is_none() {
            self.capture = Some(Vec::new());
        }
    }

    /// Records only packets for which `keep` (given the bytes the sender
    /// wrote) is true: long transfers keep just their handshakes.
    pub fn set_capture_filter(&mut self, keep: impl Fn(&[u8]) -> bool + 'static) {
        self.capture_filter = Some(Box::new(keep));
    }

    /// The packets recorded so far (empty unless capture is enabled).
    pub fn capture(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or(&[])
    }

    /// Takes the capture so far, leaving capture enabled and empty.
    pub fn take_capture(&mut self) -> Vec<Captured> {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Network-wide counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Packet copies on the wire.
    pub fn packets_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `packet` into the network now, as if `from` had transmitted it
    /// (for hostile or hand-made packets in tests).
    pub fn inject(&mut self, from: NodeId, packet: Vec<u8>) {
        self.transmit(from, packet);
    }

    /// Hands every node's pending output to the network now, without
    /// advancing time (`step` starts with the same). Lets a driver see the
    /// events a transmission produces at the instant it happens.
    pub fn flush(&mut self) {
        self.flush_transmits();
    }

    /// Drains every node's `poll_transmit` into the network, then advances
    /// time to the next event (packet arrival or node timeout) and processes
    /// it. Returns `false` if nothing is pending. Arrivals are processed
    /// before timeouts due at the same instant, lower node ids first.
    pub fn step(&mut self) -> bool {
        self.flush_transmits();
        let Some((at, event)) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(at);
        match event {
            Next::Arrival => {
                if let Some(Reverse(flight)) = self.in_flight.pop() {
                    self.deliver(flight);
                }
            }
            Next::Timeout(id) => self.fire_timeout(id),
        }
        true
    }

    /// Steps until `done` returns true (checked before the first step and
    /// after each one) or the next event would be after `deadline`. Returns
    /// whether `done` held. When it gives up, the clock is moved to
    /// `deadline` (nothing happens in between).
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            self.flush_transmits();
            match self.next_event() {
                Some((at, _)) if at <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return false;
                }
            }
        }
    }

    /// Processes every event up to `now + duration`, then sets the clock
    /// there.
    pub fn advance(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(deadline, |_| false);
    }

    fn next_event(&self) -> Option<(Instant, Next)> {
        let arrival = self.in_flight.peek().map(|Reverse(f)| f.at);
        let timeout = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.node.poll_timeout().map(|t| (t, NodeId(i))))
            .min();
        match (arrival, timeout) {
            (None, None) => None,
            (Some(a), Some((t, id))) if t < a => Some((t, Next::Timeout(id))),
            (None, Some((t, id))) => Some((t, Next::Timeout(id))),
            (Some(a), _) => Some((a, Next::Arrival)),
        }
        .map(|(at, next)| (at.max(self.now), next))
    }

    fn flush_transmits(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].refusing {
                // One refusal per flush: a host's driver holds its sends
                // after a refusal until something changes (the next event).
                let slot = &mut self.nodes[i];
                if let Some(len) = slot.node.poll_transmit(self.now, &mut self.scratch) {
                    let len = len.min(self.scratch.len());
                    slot.node.handle_refused(self.now, &self.scratch[..len]);
                    self.stats.refused += 1;
                }
                continue;
            }
            while let Some(len) = self.nodes[i]
                .node
                .poll_transmit(self.now, &mut self.scratch)
            {
                let packet = self.scratch[..len.min(self.scratch.len())].to_vec();
                self.transmit(NodeId(i), packet);
            }
        }
    }

    fn fire_timeout(&mut self, id: NodeId) {
        let (at, node, count) = self.timeout_streak;
        let count = if at == self.now && node == id {
            count + 1
        } else {
            1
        };
        assert!(
            count < MAX_TIMEOUTS_AT_ONE_INSTANT,
            "node {id:?} asked for a timeout at {} {count} times without time advancing",
            self.now
        );
        self.timeout_streak = (self.now, id, count);
        self.nodes[id.0].node.handle_timeout(self.now);
    }

    fn deliver(&mut self, flight: InFlight) {
        let InFlight {
            to,
            packet,
            capture,
            ..
        } = flight;
        // The destination may have lost the address while the packet flew.
        let still_owned = ipv4_destination(&packet).is_some_and(|dst| {
            self.routes.get(&(self.nodes[to.0].uplink, dst)) == Some(&Owner::Node(to))
        });
        let record = capture.and_then(|i| self.capture.as_mut()?.get_mut(i));
        if !still_owned {
            tracing::trace!(?to, "sim: destination address gone on arrival");
            self.stats.unroutable += 1;
            if let Some(record) = record {
                record.fate = Fate::Unroutable;
            }
            return;
        }
        if let Some(record) = record {
            record.arrival.get_or_insert(self.now);
        }
        self.stats.delivered += 1;
        self.nodes[to.0].node.handle_packet(self.now, &packet);
    }

    /// Routes one packet from `from` through any middleboxes to a node.
    /// Returns the receiver, or why there is none.
    fn route(&mut self, from: NodeId, packet: &mut Vec<u8>) -> Result<NodeId, Fate> {
        let mut realm = self.nodes[from.0].uplink;
        for _ in 0..MAX_HOPS {
            let dst = ipv4_destination(packet).ok_or(Fate::Unroutable)?;
            match self.routes.get(&(realm, dst)) {
                Some(&Owner::Node(id)) => return Ok(id),
                Some(&Owner::Middlebox(m)) => {
                    let slot = &mut self.middleboxes[m.0];
                    if !slot.middlebox.process(self.now, Direction::Inbound, packet) {
                        return Err(Fate::Filtered);
                    }
                    realm = Some(m);
                }
                None => {
                    let Some(m) = realm else {
                        return Err(Fate::Unroutable);
                    };
                    let slot = &mut self.middleboxes[m.0];
                    if !slot
                        .middlebox
                        .process(self.now, Direction::Outbound, packet)
                    {
                        return Err(Fate::Filtered);
                    }
                    realm = slot.uplink;
                }
            }
        }
        Err(Fate::Unroutable)
    }

    fn transmit(&mut self, from: NodeId, packet: Vec<u8>) {
        self.stats.sent += 1;
        // Keep the sender's bytes only when capturing: bulk transfers push
        // tens of thousands of packets through here.
        let wanted = self
            .capture_filter
            .as_ref()
            .is_none_or(|keep| keep(&packet));
        let original = (self.capture.is_some() && wanted).then(|| packet.clone());
        let mut routed = packet;
        let (to, fate, arrivals) = match self.route(from, &mut routed) {
            Err(fate) => (None, fate, [None, None]),
            Ok(to) => {
                let (fate, arrivals) = self.impair(from, to, routed.len());
                (Some(to), fate, arrivals)
            }
        };
        match fate {
            Fate::Lost => self.stats.lost += 1,
            Fate::Duplicated => self.stats.duplicated += 1,
            Fate::Unroutable => self.stats.unroutable += 1,
            Fate::Filtered => self.stats.filtered += 1,
            Fate::QueueFull => self.stats.queue_drops += 1,
            Fate::Delivered => {}
        }
        tracing::trace!(?from, ?to, ?fate, len = routed.len(), now = %self.now, "sim: transmit");
        let capture = match (self.capture.as_mut(), original) {
            (Some(records), Some(original)) => {
                records.push(Captured {
                    time: self.now,
                    from,
                    to,
                    translated: (routed != original).then(|| routed.clone()),
                    bytes: original,
                    fate,
                    arrival: None,
                });
                Some(records.len() - 1)
            }
            _ => None,
        };
        let Some(to) = to else {
            return;
        };
        let copies = arrivals.iter().flatten().count();
        for (i, &at) in arrivals.iter().flatten().enumerate() {
            let packet = if i + 1 == copies {
                core::mem::take(&mut routed)
            } else {
                routed.clone()
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at,
                seq,
                to,
                packet,
                capture,
            }));
        }
    }

    /// Applies the link's impairments to a packet of `len` bytes sent now:
    /// its fate and the arrival instant of each copy.
    fn impair(&mut self, from: NodeId, to: NodeId, len: usize) -> (Fate, [Option<Instant>; 2]) {
        let cfg = self
            .link_configs
            .get(&(from, to))
            .unwrap_or(&self.default_link)
            .clone();
        let seed = self.seed;
        let link = self.link_states.entry((from, to)).or_insert_with(|| {
            let id_mix = ((from.0 as u64) << 32) ^ (to.0 as u64);
            LinkState {
                rng: SplitMix64::new(mix(seed ^ mix(id_mix.wrapping_add(0x9E37_79B9_7F4A_7C15)))),
                busy_until_ns: 0,
            }
        });
        // Always the same draws per packet, so changing one probability does
        // not shift every other random decision on the link.
        let loss_draw = link.rng.next_f64();
        let duplicate_draw = link.rng.next_f64();
        let copies: [(f64, u64); 2] = core::array::from_fn(|_| {
            let reorder = link.rng.next_f64();
            let jitter = link.rng.next_u64();
            (reorder, jitter)
        });

        let now_ns = self.now.total_micros().saturating_mul(1000);
        let mut depart_ns = now_ns;
        if let Some(rate) = cfg.rate_bps.filter(|&r| r > 0) {
            let backlog_ns = link.busy_until_ns.saturating_sub(now_ns);
            let backlog_bytes =
                (u128::from(backlog_ns) * u128::from(rate) / 8_000_000_000) as usize;
            if backlog_bytes.saturating_add(len) > cfg.queue_bytes {
                return (Fate::QueueFull, [None, None]);
            }
            let serialise_ns = (len as u128 * 8 * 1_000_000_000 / u128::from(rate)) as u64;
            depart_ns = link.busy_until_ns.max(now_ns).saturating_add(serialise_ns);
            link.busy_until_ns = depart_ns;
        }
        if loss_draw < cfg.loss {
            return (Fate::Lost, [None, None]);
        }
        let count = if duplicate_draw < cfg.duplicate { 2 } else { 1 };
        let jitter_us = cfg.jitter.as_micros() as u64;
        let mut arrivals = [None, None];
        for (slot, &(reorder_draw, jitter_draw)) in arrivals.iter_mut().zip(&copies[..count]) {
            let mut delay_ns = nanos(cfg.latency);
            if jitter_us > 0 {
                delay_ns = delay_ns.saturating_add(jitter_draw % (jitter_us + 1) * 1000);
            }
            if reorder_draw < cfg.reorder {
                self.stats.reordered += 1;
                delay_ns = delay_ns.saturating_add(nanos(cfg.reorder_delay));
            }
            // Round up: a packet never arrives before physics allows.
            let arrival_us = depart_ns.saturating_add(delay_ns).div_ceil(1000);
            *slot = Some(Instant::from_micros(arrival_us));
        }
        let fate = if count == 2 {
            Fate::Duplicated
        } else {
            Fate::Delivered
        };
        (fate, arrivals)
    }

    /// Recomputes the routing table from node and middlebox addresses.
    fn rebuild_routes(&mut self) {
        let mut routes = BTreeMap::new();
        let mut claim = |realm: Realm, addr: Ipv4Addr, owner: Owner| {
            if let Some(previous) = routes.insert((realm, addr), owner) {
                assert!(
                    previous == owner,
                    "address {addr} in realm {realm:?} claimed by {previous:?} and {owner:?}"
                );
            }
        };
        for (i, slot) in self.middleboxes.iter().enumerate() {
            for &addr in &slot.addresses {
                claim(slot.uplink, addr, Owner::Middlebox(MiddleboxId(i)));
            }
        }
        for (i, slot) in self.nodes.iter().enumerate() {
            for &addr in &slot.addresses {
                claim(slot.uplink, addr, Owner::Node(NodeId(i)));
                // Through public-scope middleboxes the address is also
                // reachable from the enclosing realms.
                let mut realm = slot.uplink;
                while let Some(m) = realm {
                    let mb = &self.middleboxes[m.0];
                    if mb.scope == InsideScope::Private {
                        break;
                    }
                    claim(mb.uplink, addr, Owner::Middlebox(m));
                    realm = mb.uplink;
                }
            }
        }
        self.routes = routes;
    }
}

#[derive(Clone, Copy, Debug)]
enum Next {
    Arrival,
    Timeout(NodeId),
}

#[cfg(test)]
mod tests;
