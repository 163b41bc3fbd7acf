//! Topologies built in real namespaces: addressing, reachability through the core
//! and through NAPTs, deterministic addresses and MACs, cleanup.

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use sustain_lab::conditions::Direction;
use sustain_lab::icmp::Pinger;

use sustain_lab::names::derive_mac;
use sustain_lab::napt::NaptProfile;
use sustain_lab::topology::{LinkConditions, NodeRole, Topology, TopologySpec, CORE_NODE};
use sustain_lab::{netns, root_or_skip};

/// The paper's topology: hosts A and B, server C and proxy P on global addresses, two
/// NAPT routers, and a third global segment to move to.
fn paper_spec() -> TopologySpec {
    TopologySpec::new()
        .global("g1")
        .global("g2")
        .global("g3")
        .napt("napt1", "g2", "home1", NaptProfile::Home)
        .napt("napt2", "g2", "home2", NaptProfile::Strict)
        .service("c", NodeRole::MobilityServer, "g1")
        .service("p", NodeRole::Proxy, "g1")
        .host("a", "g2")
        .host("b", "home1")
}

#[test]
fn plan_is_deterministic_and_uses_documentation_ranges() {
    let plan = paper_spec().plan().expect("plan");
    let prefixes: Vec<String> = plan
        .networks
        .iter()
        .map(|net| format!("{} {}", net.name, net.prefix))
        .collect();
    assert_eq!(
        prefixes,
        [
            "g1 192.0.2.0/24",
            "g2 198.51.100.0/24",
            "g3 203.0.113.0/24",
            "home1 192.168.1.0/24",
            "home2 192.168.2.0/24"
        ]
    );
    let addr = |node: &str| plan.initial_address(node).expect(node);
    assert_eq!(addr("napt1"), Ipv4Addr::new(198, 51, 100, 10));
    assert_eq!(addr("napt2"), Ipv4Addr::new(198, 51, 100, 11));
    assert_eq!(addr("c"), Ipv4Addr::new(192, 0, 2, 10));
    assert_eq!(addr("p"), Ipv4Addr::new(192, 0, 2, 11));
    assert_eq!(addr("a"), Ipv4Addr::new(198, 51, 100, 12));
    assert_eq!(addr("b"), Ipv4Addr::new(192, 168, 1, 10));
    assert_eq!(plan.network("home1").expect("home1").gateway_node, "napt1");
    assert_eq!(plan.network("g1").expect("g1").gateway_node, CORE_NODE);
}

#[test]
fn bad_specs_name_the_offending_field() {
    let err = TopologySpec::new()
        .global("g1")
        .host("a", "nowhere")
        .plan()
        .unwrap_err();
    assert_eq!(err.path.to_string(), "node[0].network");
    let err = TopologySpec::new()
        .global("g1")
        .napt("r", "g1", "home", NaptProfile::Home)
        .service("c", NodeRole::Proxy, "home")
        .plan()
        .unwrap_err();
    assert_eq!(err.path.to_string(), "node[0].network");
    assert!(err.message.contains("private"), "{err}");
    let err = TopologySpec::new()
        .global("g1")
        .host("core", "g1")
        .plan()
        .unwrap_err();
    assert_eq!(err.path.to_string(), "node[0].name");
}

#[test]
fn paper_topology_builds_and_pings_end_to_end() {
    if !root_or_skip("paper_topology_builds_and_pings_end_to_end") {
        return;
    }
    let topology = Topology::build(&paper_spec()).expect("build");
    let run = topology.lab().run_id().clone();

    // Addresses in the kernel are the planned ones, MACs are derived from names.
    let b = topology.attachment("b").expect("b attached");
    assert_eq!(b.address, Ipv4Addr::new(192, 168, 1, 10));
    assert_eq!(
        topology.kernel_addresses("b", "home1").expect("addresses"),
        [(Ipv4Addr::new(192, 168, 1, 10), 24)]
    );
    assert_eq!(b.gateway, Ipv4Addr::new(192, 168, 1, 1));
    assert_eq!(
        topology.kernel_mac("b", "home1").expect("mac"),
        derive_mac("b", "home1")
    );
    assert_eq!(
        topology.kernel_mac("napt1", "v-b").expect("mac"),
        derive_mac("napt1", "v-b")
    );
    // Offloads are off on both ends of every uplink.
    for attachment in topology.attachments() {
        let node_end = topology
            .lab()
            .offloads(&attachment.node, &attachment.ifname)
            .expect("offloads");
        assert!(node_end.all_off(), "{attachment:?}: {node_end:?}");
        let gateway_end = topology
            .lab()
            .offloads(&attachment.gateway_node, &attachment.port)
            .expect("offloads");
        assert!(gateway_end.all_off(), "{attachment:?}: {gateway_end:?}");
    }

    // B behind napt1 reaches the server, the proxy and A; A reaches C and P; C and P
    // (one network, through the core by proxy ARP) reach each other.
    let c = topology.address_of("c").expect("c");
    let p = topology.address_of("p").expect("p");
    let a = topology.address_of("a").expect("a");
    for (from, to) in [("b", c), ("b", a), ("a", c), ("c", a), ("c", p), ("p", c)] {
        let rtt = topology
            .ping(from, to, Duration::from_secs(2))
            .expect("echo reply");
        assert!(rtt < Duration::from_secs(1), "{from} -> {to}: {rtt:?}");
    }
    // Nobody outside reaches B's private address.
    let err = topology
        .ping("a", b.address, Duration::from_millis(300))
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");

    let namespaces: Vec<String> = netns::list()
        .expect("list")
        .into_iter()
        .filter(|name| name.contains(&run.to_string()))
        .collect();
    assert_eq!(namespaces.len(), 7, "{namespaces:?}");
    drop(topology);
    let left: Vec<String> = netns::list()
        .expect("list")
        .into_iter()
        .filter(|name| name.contains(&run.to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Link conditions follow the attachment: delay and loss on b's uplink to g2 (applied
/// in the core, both directions), a rate limit on a's uplink.
#[test]
fn link_delay_loss_and_rate_are_measured_within_tolerance() {
    if !root_or_skip("link_delay_loss_and_rate_are_measured_within_tolerance") {
        return;
    }
    let spec = TopologySpec::new()
        .global("g1")
        .global("g2")
        .global("g3")
        .host("a", "g1")
        .host("b", "g2")
        .link(
            "b",
            "g2",
            LinkConditions {
                delay: Duration::from_millis(20),
                ..LinkConditions::default()
            },
        )
        .link(
            "b",
            "g3",
            LinkConditions {
                loss: 0.2,
                ..LinkConditions::default()
            },
        )
        .link(
            "a",
            "g1",
            LinkConditions {
                rate_kbit: Some(20_000),
                ..LinkConditions::default()
            },
        );
    let topology = Topology::build(&spec).expect("build");
    let a = topology.address_of("a").expect("a");

    // 20 ms each way on b's link: an echo round trip takes 40 ms plus veth time.
    let pinger = topology
        .lab()
        .run_in("b", Pinger::open)
        .expect("enter b")
        .expect("pinger");
    let stats = pinger
        .series(a, 20, Duration::from_millis(10), Duration::from_secs(1))
        .expect("pings");
    assert_eq!(stats.received(), 20, "no loss configured on g2: {stats:?}");
    let min = stats.min_rtt().expect("rtt");
    let median = stats.median_rtt().expect("rtt");
    assert!(
        min >= Duration::from_millis(40) && median < Duration::from_millis(45),
        "min {min:?}, median {median:?}"
    );

    // 20 Mbit/s on a's link: a TCP download by a takes at least the wire time of its
    // bytes, and not much more.
    let bytes = 4 << 20;
    let b = topology.address_of("b").expect("b");
    let listener = topology
        .lab()
        .run_in("b", || std::net::TcpListener::bind((b, 0)))
        .expect("enter b")
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let sender = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.write_all(&vec![7u8; bytes]).expect("send");
    });
    let started = std::time::Instant::now();
    let received = topology
        .lab()
        .run_in("a", move || -> std::io::Result<usize> {
            let mut stream = std::net::TcpStream::connect((b, port))?;
            let mut data = Vec::new();
            stream.read_to_end(&mut data)?;
            Ok(data.len())
        })
        .expect("enter a")
        .expect("download");
    let seconds = started.elapsed().as_secs_f64();
    sender.join().expect("sender");
    assert_eq!(received, bytes);
    let mbit = bytes as f64 * 8.0 / seconds / 1e6;
    // Goodput through 20 Mbit/s of Ethernet frames is about 19 Mbit/s; slow start
    // over b's 40 ms round trip costs some more.
    assert!((8.0..=20.5).contains(&mbit), "{mbit:.1} Mbit/s");

    // Moved to g3, b's link loses 20 % each way and has no delay; every lost echo is
    // accounted for by the delay lines' counters.
    topology
        .move_host("b", "g3", Duration::ZERO)
        .expect("move to g3");
    let pinger = topology
        .lab()
        .run_in("b", Pinger::open)
        .expect("enter b")
        .expect("pinger");
    let sent = 300;
    let stats = pinger
        .series(a, sent, Duration::ZERO, Duration::from_millis(30))
        .expect("pings");
    let lost = sent - stats.received();
    // Both directions lose 20 %: an echo survives with probability 0.64.
    let loss = stats.loss();
    assert!((0.26..=0.46).contains(&loss), "echo loss {loss}");
    let g3 = topology
        .link_stats()
        .into_iter()
        .filter(|link| link.label == "b-g3")
        .collect::<Vec<_>>();
    assert_eq!(g3.len(), 2, "{g3:?}");
    let dropped: u64 = g3.iter().map(|link| link.stats.lost).sum();
    assert_eq!(
        dropped,
        u64::from(lost),
        "every missing echo was dropped by the line"
    );
    let up = g3
        .iter()
        .find(|link| link.direction == Direction::Up)
        .expect("up");
    assert_eq!(
        up.stats.queued,
        u64::from(sent),
        "every request entered the up line"
    );
    // The g2 lines stopped with the move and kept their counters.
    assert!(topology
        .link_stats()
        .iter()
        .any(|link| link.label == "b-g2" && link.stats.released >= 20));
}
