//! Topologies built in real namespaces: addressing, reachability through the core
//! and through NAPTs, deterministic addresses and MACs, cleanup.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use sustain_lab::names::derive_mac;
use sustain_lab::napt::NaptProfile;
use sustain_lab::topology::{NodeRole, Topology, TopologySpec, CORE_NODE};
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
