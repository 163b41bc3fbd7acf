//! Moving hosts in real namespaces: detach, attach, move; the kernel state after each;
//! the rtnetlink events a host sees (none lost); move instants; pool order.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sustain_lab::moves::{run_script, MoveAction, MoveSpec, ScriptStop, Trigger};
use sustain_lab::napt::NaptProfile;
use sustain_lab::root_or_skip;
use sustain_lab::topology::{NodeRole, Topology, TopologySpec};

fn spec() -> TopologySpec {
    TopologySpec::new()
        .global("g1")
        .global("g2")
        .global("g3")
        .napt("napt1", "g3", "home1", NaptProfile::Home)
        .service("c", NodeRole::MobilityServer, "g1")
        .host("b", "g2")
}

const B_FIRST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

// ---- a minimal rtnetlink monitor (RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE) ----------

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

#[derive(Clone, Debug, PartialEq, Eq)]
enum NetEvent {
    NewAddr(Ipv4Addr),
    DelAddr(Ipv4Addr),
    NewDefaultRoute(Ipv4Addr),
    DelDefaultRoute(Ipv4Addr),
}

fn open_monitor() -> OwnedFd {
    // SAFETY: plain syscalls with checked results; the address is fully initialised.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        );
        assert!(fd >= 0, "netlink socket");
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
        let ret = libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        assert_eq!(ret, 0, "bind netlink");
        OwnedFd::from_raw_fd(fd)
    }
}

fn attr_ipv4(mut attrs: &[u8], wanted: &[u16]) -> Option<Ipv4Addr> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if wanted.contains(&kind) && len == 8 {
            return Some(Ipv4Addr::new(attrs[4], attrs[5], attrs[6], attrs[7]));
        }
        attrs = &attrs[(len + 3) & !3..];
    }
    None
}

/// Reads every event queued on the monitor.
fn drain(monitor: &OwnedFd) -> Vec<NetEvent> {
    let mut events = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(monitor.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return events;
        }
        let mut msg = &buf[..n as usize];
        while msg.len() >= 16 {
            let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            if len < 16 || len > msg.len() {
                break;
            }
            let body = &msg[16..len];
            match kind {
                RTM_NEWADDR | RTM_DELADDR if body.len() >= 8 => {
                    // IFA_LOCAL (2), else IFA_ADDRESS (1).
                    if let Some(addr) = attr_ipv4(&body[8..], &[2]).or(attr_ipv4(&body[8..], &[1]))
                    {
                        events.push(if kind == RTM_NEWADDR {
                            NetEvent::NewAddr(addr)
                        } else {
                            NetEvent::DelAddr(addr)
                        });
                    }
                }
                RTM_NEWROUTE | RTM_DELROUTE if body.len() >= 12 => {
                    let dst_len = body[1];
                    let table = body[4];
                    // RTA_GATEWAY (5), main table (254), default route only.
                    if dst_len == 0 && table == 254 {
                        if let Some(gateway) = attr_ipv4(&body[12..], &[5]) {
                            events.push(if kind == RTM_NEWROUTE {
                                NetEvent::NewDefaultRoute(gateway)
                            } else {
                                NetEvent::DelDefaultRoute(gateway)
                            });
                        }
                    }
                }
                _ => {}
            }
            msg = &msg[(len + 3) & !3..];
        }
    }
}

#[test]
fn a_move_replaces_address_and_route_and_every_event_is_seen() {
    if !root_or_skip("a_move_replaces_address_and_route_and_every_event_is_seen") {
        return;
    }
    let topology = Topology::build(&spec()).expect("build");
    let c = topology.address_of("c").expect("c");
    assert_eq!(topology.address_of("b"), Some(B_FIRST));
    let monitor = topology.lab().run_in("b", open_monitor).expect("enter b");

    let before = Instant::now();
    let (detached, attached) = topology
        .move_host("b", "g3", Duration::from_millis(50))
        .expect("move");
    let new = attached.attachment.address;
    // g3's pool: napt1's WAN took .10, so b gets .11.
    assert_eq!(new, Ipv4Addr::new(203, 0, 113, 11));
    assert!(before < detached.completed && detached.completed < attached.completed);
    assert!(
        attached.completed.duration_since(detached.completed) >= Duration::from_millis(50),
        "the gap lies between detach and attach"
    );

    // Kernel state: the old interface is gone, the new one has exactly the new address
    // and the default route points at g3's gateway.
    let old_if = topology.kernel_addresses("b", "g2");
    assert!(old_if.is_err(), "g2 interface still there: {old_if:?}");
    assert_eq!(
        topology.kernel_addresses("b", "g3").expect("addresses"),
        [(new, 24)]
    );
    let routes = topology.lab().routes("b").expect("routes");
    assert!(routes.contains(&(Ipv4Addr::UNSPECIFIED, 0)), "{routes:?}");
    assert!(
        !routes.contains(&(Ipv4Addr::new(198, 51, 100, 0), 24)),
        "{routes:?}"
    );

    // And it works: b reaches c from its new address.
    topology
        .ping("b", c, Duration::from_secs(2))
        .expect("b reaches c after the move");

    // Every step was announced, in order: old route and address gone, then the new
    // address, then the new default route.
    std::thread::sleep(Duration::from_millis(50));
    let events = drain(&monitor);
    let position = |wanted: &NetEvent| {
        events
            .iter()
            .position(|event| event == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} not seen in {events:?}"))
    };
    let del_route = position(&NetEvent::DelDefaultRoute(Ipv4Addr::new(198, 51, 100, 1)));
    let del_addr = position(&NetEvent::DelAddr(B_FIRST));
    let new_addr = position(&NetEvent::NewAddr(new));
    let new_route = position(&NetEvent::NewDefaultRoute(Ipv4Addr::new(203, 0, 113, 1)));
    assert!(
        del_route < del_addr && del_addr < new_addr && new_addr < new_route,
        "{events:?}"
    );
}

#[test]
fn detach_attach_and_return_follow_the_pools() {
    if !root_or_skip("detach_attach_and_return_follow_the_pools") {
        return;
    }
    let topology = Topology::build(&spec()).expect("build");
    let detached = topology.detach("b").expect("detach");
    assert_eq!(detached.attachment.address, B_FIRST);
    assert_eq!(topology.address_of("b"), None);
    let routes = topology.lab().routes("b").expect("routes");
    assert!(
        routes.is_empty(),
        "a detached host has no routes: {routes:?}"
    );
    assert!(topology.detach("b").is_err(), "detaching twice");

    // Behind the NAPT: the private pool's first address.
    let attached = topology.attach("b", "home1").expect("attach");
    assert_eq!(attached.attachment.address, Ipv4Addr::new(192, 168, 1, 10));
    assert!(topology.attach("b", "g1").is_err(), "a host has one uplink");
    let c = topology.address_of("c").expect("c");
    topology
        .ping("b", c, Duration::from_secs(2))
        .expect("b reaches c through the NAPT");

    // Back to g2: a new address, never the one it had (a peer's stale state must not
    // match the returning host by accident).
    let (_, back) = topology
        .move_host("b", "g2", Duration::ZERO)
        .expect("move back");
    assert_eq!(back.attachment.address, Ipv4Addr::new(198, 51, 100, 11));
    assert!(
        topology.move_host("b", "g2", Duration::ZERO).is_err(),
        "same network"
    );
    assert!(topology.detach("c").is_err(), "service nodes do not move");
}

#[test]
fn a_script_runs_moves_at_their_triggers() {
    if !root_or_skip("a_script_runs_moves_at_their_triggers") {
        return;
    }
    let topology = Topology::build(&spec()).expect("build");
    let moves = [
        MoveSpec {
            host: "b".into(),
            action: MoveAction::Detach,
            trigger: Trigger::At(Duration::from_millis(100)),
            lag: Duration::ZERO,
        },
        MoveSpec {
            host: "b".into(),
            action: MoveAction::Attach {
                network: "g1".into(),
            },
            trigger: Trigger::AfterBytes(1000),
            // Starts 50 ms after its trigger fired.
            lag: Duration::from_millis(50),
        },
    ];
    // A fake byte counter that passes 1000 at 300 ms.
    let epoch = Instant::now();
    let received = move || (epoch.elapsed().as_millis() as u64) * 10 / 3;
    let cancel = AtomicBool::new(false);
    let mut records = Vec::new();
    let stop = run_script(&topology, &moves, epoch, &received, &cancel, |record| {
        records.push(record.clone());
    });
    assert!(matches!(stop, ScriptStop::Done), "{stop:?}");
    assert_eq!(records.len(), 2);
    let detach = &records[0];
    assert!(detach.started.duration_since(epoch) >= Duration::from_millis(100));
    assert_eq!(detach.from, Some(("g2".into(), B_FIRST)));
    assert_eq!(detach.to, None);
    let attach = &records[1];
    assert!(attach.bytes_at_start >= 1000);
    assert!(attach.started.duration_since(epoch) >= Duration::from_millis(350));
    assert_eq!(attach.from, None);
    assert_eq!(attach.to, Some(("g1".into(), Ipv4Addr::new(192, 0, 2, 11))));
    assert!(attach.completed > attach.started);

    // A cancelled script stops waiting.
    let cancel = AtomicBool::new(true);
    let never = [MoveSpec {
        host: "b".into(),
        action: MoveAction::Detach,
        trigger: Trigger::At(Duration::from_secs(3600)),
        lag: Duration::ZERO,
    }];
    let stop = run_script(&topology, &never, Instant::now(), &|| 0, &cancel, |_| {});
    assert!(
        matches!(stop, ScriptStop::Cancelled { index: 0 }),
        "{stop:?}"
    );
}
