//! PathLab on the real kernel (needs root; skipped with a reason otherwise).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    ip_netns_list, netns_identity, process_alive, sha256_hex, test_data, transfer_a_to_b,
};
use sustain_core::wire::{Ipv4Packet, TcpPacket};
use sustain_lab::{netns, root_or_skip, PathLab, PathLabConfig, PathNode, RUN_ENV};

const EIGHT_MIB: usize = 8 << 20;

fn names_with_prefix(prefix: &str) -> (Vec<String>, Vec<String>) {
    let in_run_dir: Vec<String> = netns::list()
        .expect("list /run/netns")
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let in_ip: Vec<String> = ip_netns_list()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    (in_run_dir, in_ip)
}

#[test]
fn path_lab_builds_with_three_named_namespaces_and_routes() {
    if !root_or_skip("path_lab_builds_with_three_named_namespaces_and_routes") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    let prefix = format!("sustain-{}-", lab.lab().run_id());
    let (names, ip_names) = names_with_prefix(&prefix);
    let expected: Vec<String> = ["a", "b", "r"]
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect();
    assert_eq!(names, expected);
    assert_eq!(
        ip_names.len(),
        3,
        "ip netns list shows the lab: {ip_names:?}"
    );

    // Routes as configured: connected segments plus the default routes.
    let routes_a = lab.lab().routes("a").expect("routes of A");
    assert!(
        routes_a.contains(&("0.0.0.0".parse().unwrap(), 0)),
        "{routes_a:?}"
    );
    assert!(
        routes_a.contains(&("192.0.2.0".parse().unwrap(), 24)),
        "{routes_a:?}"
    );
    let routes_r = lab.lab().routes("r").expect("routes of R");
    assert!(
        routes_r.contains(&("198.51.100.0".parse().unwrap(), 24)),
        "{routes_r:?}"
    );
    assert!(
        !routes_r.contains(&("0.0.0.0".parse().unwrap(), 0)),
        "{routes_r:?}"
    );
    assert_eq!(
        lab.lab().sysctl_read("r", "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert_eq!(
        lab.lab().sysctl_read("a", "net.ipv4.ip_forward").unwrap(),
        "0"
    );
    assert_eq!(
        lab.lab()
            .sysctl_read("a", "net.ipv4.conf.all.promote_secondaries")
            .unwrap(),
        "1"
    );
    assert_eq!(
        lab.lab()
            .sysctl_read("r", "net.ipv4.conf.r-a.rp_filter")
            .unwrap(),
        "0"
    );
    // Humans can enter the namespaces with iproute2 while the lab runs.
    let netns_r = lab.netns(PathNode::R).expect("R");
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns_r.name(),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            PathLab::R_B_IF,
        ])
        .output()
        .expect("ip netns exec");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("198.51.100.254/24"),
        "{text}"
    );
    // The veth ends exist only inside the lab namespaces.
    let in_root = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [
                PathLab::A_IF,
                PathLab::R_A_IF,
                PathLab::R_B_IF,
                PathLab::B_IF,
            ]
            .contains(&n.as_str())
        })
        .count();
    assert_eq!(in_root, 0, "no lab veth in the root namespace");
}

#[test]
fn eight_mib_cross_the_router_byte_identical() {
    if !root_or_skip("eight_mib_cross_the_router_byte_identical") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    let data = test_data(EIGHT_MIB, 0x5eed_0001);
    let received = transfer_a_to_b(&lab, &data);
    assert_eq!(received.len(), data.len());
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    assert_eq!(
        lab.loss_drops().expect("read counter"),
        0,
        "no loss configured"
    );
}

#[test]
fn eight_mib_survive_five_percent_loss_and_the_router_counts_drops() {
    if !root_or_skip("eight_mib_survive_five_percent_loss_and_the_router_counts_drops") {
        return;
    }
    let lab = PathLab::with_config(PathLabConfig {
        loss: Some(0.05),
        ..PathLabConfig::default()
    })
    .expect("build lossy path lab");
    let data = test_data(EIGHT_MIB, 0x5eed_0002);
    let received = transfer_a_to_b(&lab, &data);
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    let drops = lab.loss_drops().expect("read counter");
    assert!(drops > 0, "R dropped nothing at p = 0.05");

    // Loss can be removed again: the counter rule disappears with it.
    lab.set_loss(None).expect("remove loss");
    let listing = lab
        .lab()
        .iptables("r", &["-S", "FORWARD"])
        .expect("list FORWARD");
    assert!(!listing.contains("sustain-loss"), "{listing}");
}

#[test]
fn offloads_are_off_on_all_four_veth_ends() {
    if !root_or_skip("offloads_are_off_on_all_four_veth_ends") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    for (node, ifname) in [
        ("a", PathLab::A_IF),
        ("r", PathLab::R_A_IF),
        ("r", PathLab::R_B_IF),
        ("b", PathLab::B_IF),
    ] {
        let offloads = lab.lab().offloads(node, ifname).expect("read offloads");
        assert!(offloads.all_off(), "{node}/{ifname}: {offloads:?}");
    }
}

#[test]
fn mtu_is_configurable_and_macs_are_deterministic() {
    if !root_or_skip("mtu_is_configurable_and_macs_are_deterministic") {
        return;
    }
    let lab = PathLab::with_config(PathLabConfig {
        mtu: 1280,
        ..PathLabConfig::default()
    })
    .expect("build path lab");
    let netns_a = lab.netns(PathNode::A).expect("A");
    let output = Command::new("ip")
        .args(["-n", netns_a.name(), "-o", "link", "show", PathLab::A_IF])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("mtu 1280"), "{text}");
    let mac = sustain_lab::names::format_mac(&sustain_lab::names::derive_mac("a", PathLab::A_IF));
    assert!(text.contains(&mac), "expected {mac} in {text}");
    let data = test_data(1 << 20, 7);
    assert_eq!(sha256_hex(&transfer_a_to_b(&lab, &data)), sha256_hex(&data));
}

#[test]
fn two_labs_at_once_do_not_collide() {
    if !root_or_skip("two_labs_at_once_do_not_collide") {
        return;
    }
    let builders: Vec<_> = (0..2).map(|_| std::thread::spawn(PathLab::new)).collect();
    let labs: Vec<PathLab> = builders
        .into_iter()
        .map(|b| b.join().expect("builder thread").expect("build path lab"))
        .collect();
    assert_ne!(labs[0].lab().run_id(), labs[1].lab().run_id());
    let ns0 = labs[0].netns(PathNode::B).unwrap();
    let ns1 = labs[1].netns(PathNode::B).unwrap();
    assert_ne!(ns0.name(), ns1.name());
    assert_ne!(netns_identity(ns0.path()), netns_identity(ns1.path()));

    // Same addresses in both, used at the same time.
    std::thread::scope(|scope| {
        let transfers: Vec<_> = labs
            .iter()
            .enumerate()
            .map(|(i, lab)| {
                scope.spawn(move || {
                    let data = test_data(2 << 20, 100 + i as u64);
                    let received = transfer_a_to_b(lab, &data);
                    (sha256_hex(&data), sha256_hex(&received))
                })
            })
            .collect();
        for transfer in transfers {
            let (sent, received) = transfer.join().expect("transfer thread");
            assert_eq!(sent, received);
        }
    });

    // Tearing one down leaves the other working.
    let mut labs = labs;
    let second = labs.pop().expect("second lab");
    drop(labs);
    let data = test_data(1 << 20, 300);
    assert_eq!(
        sha256_hex(&transfer_a_to_b(&second, &data)),
        sha256_hex(&data)
    );
}

#[test]
fn drop_removes_every_namespace_of_the_run_and_kills_children() {
    if !root_or_skip("drop_removes_every_namespace_of_the_run_and_kills_children") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    let prefix = format!("sustain-{}-", lab.lab().run_id());
    let netns_b = lab.netns(PathNode::B).expect("B");
    let b_identity = netns_identity(netns_b.path()).expect("B identity");
    drop(netns_b);

    let mut command = Command::new("sleep");
    command.arg("1000");
    let child = lab
        .spawn_in(PathNode::B, command)
        .expect("spawn sleep in B");
    let pid = child.pid();
    assert!(process_alive(pid));
    assert_eq!(
        netns_identity(std::path::Path::new(&format!("/proc/{pid}/ns/net"))),
        Some(b_identity),
        "sleep runs inside B"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let marker = format!("{RUN_ENV}={}", lab.lab().run_id());
    assert!(
        environ.split(|&b| b == 0).any(|v| v == marker.as_bytes()),
        "run marker set"
    );
    assert!(child
        .wait_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());

    drop(lab);

    assert!(!process_alive(pid), "sleep {pid} survived teardown");
    let status = child.try_wait().expect("status").expect("reaped");
    assert!(
        sustain_lab::ChildProcess::was_signalled(&status, libc::SIGTERM),
        "stopped by SIGTERM: {status:?}"
    );
    let (names, ip_names) = names_with_prefix(&prefix);
    assert!(names.is_empty(), "left in /run/netns: {names:?}");
    assert!(ip_names.is_empty(), "left in ip netns list: {ip_names:?}");
}

#[test]
fn teardown_runs_when_a_test_panics() {
    if !root_or_skip("teardown_runs_when_a_test_panics") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let lab = PathLab::new().expect("build path lab");
        tx.send((
            format!("sustain-{}-", lab.lab().run_id()),
            lab.lab().run_dir().to_path_buf(),
        ))
        .unwrap();
        panic!("simulated test failure with a live lab");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (prefix, run_dir) = rx.recv().expect("prefix");
    let (names, ip_names) = names_with_prefix(&prefix);
    assert!(
        names.is_empty() && ip_names.is_empty(),
        "{names:?} {ip_names:?}"
    );
    // The logs of a failed run are kept for diagnosis.
    assert!(run_dir.is_dir(), "{} kept", run_dir.display());
    std::fs::remove_dir_all(&run_dir).expect("remove kept logs");
}

#[test]
fn a_process_exits_by_itself_and_its_output_is_kept() {
    if !root_or_skip("a_process_exits_by_itself_and_its_output_is_kept") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward; echo oops >&2; exit 3",
    ]);
    let child = lab.spawn_in(PathNode::R, command).expect("spawn sh in R");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("exits");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        child.read_stdout().unwrap(),
        "1\n",
        "R forwards: sh saw R's sysctl"
    );
    assert_eq!(child.read_stderr().unwrap(), "oops\n");
    assert!(child.stdout_path().starts_with(lab.lab().run_dir()));
}

/// True if the TCP checksum of an IPv4 packet (as a raw socket returns it) verifies.
fn tcp_checksum_ok(packet: &[u8]) -> bool {
    Ipv4Packet::new_checked(packet).is_ok_and(|ip| {
        TcpPacket::new_checked(ip.payload())
            .is_ok_and(|tcp| tcp.verify_checksum(ip.src_addr(), ip.dst_addr()))
    })
}

#[test]
fn raw_socket_in_b_reads_complete_tcp_checksums_from_a() {
    use std::os::fd::{FromRawFd, OwnedFd};
    if !root_or_skip("raw_socket_in_b_reads_complete_tcp_checksums_from_a") {
        return;
    }
    let lab = PathLab::new().expect("build path lab");
    // The runtime's situation: a raw TCP socket inside B reading what A sends.
    let raw = lab
        .run_in(PathNode::B, || {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_TCP,
                )
            };
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // Room for every segment of the transfer: a full buffer would drop some.
            let size: libc::c_int = 32 << 20;
            // SAFETY: valid option value of the right size.
            let set = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const size).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(
                set,
                0,
                "SO_RCVBUFFORCE: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fresh descriptor.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .expect("enter B");
    let data = test_data(256 << 10, 9);
    let received = transfer_a_to_b(&lab, &data);
    assert_eq!(sha256_hex(&received), sha256_hex(&data));

    let mut checked_with_payload = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&raw),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        let packet = &buf[..n as usize];
        if packet[12..16] != PathLab::A_ADDR.octets() {
            continue;
        }
        assert!(
            tcp_checksum_ok(packet),
            "unfinished TCP checksum from A (offload left on?)"
        );
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let tcp_header_len = usize::from(packet[header_len + 12] >> 4) * 4;
        if n as usize > header_len + tcp_header_len {
            checked_with_payload += 1;
            assert!(
                n as usize <= 1500,
                "segment of {n} bytes: larger than the MTU (GRO/GSO left on?)"
            );
        }
    }
    // Every data segment of the transfer was seen and verified.
    let minimum = data.len().div_ceil(1460);
    assert!(
        checked_with_payload >= minimum,
        "saw only {checked_with_payload} of at least {minimum} data segments"
    );
}

#[test]
fn path_lab_is_usable_from_inside_a_tokio_runtime() {
    if !root_or_skip("path_lab_is_usable_from_inside_a_tokio_runtime") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Building (which drives rtnetlink on its own runtimes, on namespace threads)
        // must not trip tokio's "runtime within a runtime" check.
        let lab = PathLab::new().expect("build path lab inside a runtime");
        let listener = lab
            .run_in(PathNode::B, || {
                let listener = std::net::TcpListener::bind((PathLab::B_ADDR, 0))?;
                listener.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(listener)
            })
            .expect("enter B")
            .expect("listen");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().unwrap();
        let client = lab
            .run_in(PathNode::A, move || {
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(stream)
            })
            .expect("enter A")
            .expect("connect");
        let mut client = tokio::net::TcpStream::from_std(client).expect("tokio stream");
        let (mut server, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer.ip(), PathLab::A_ADDR);
        client.write_all(b"across R").await.unwrap();
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"across R");
    });
}
