//! NAPT routers in real namespaces: outbound connections leave with the router's WAN
//! address; unsolicited inbound traffic is dropped (and counted); the `strict` profile
//! turns a mid-stream TCP segment from "unsolicited" into "INVALID".

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use sustain_core::wire::TcpPacket;
use sustain_lab::napt::{self, NaptCounters, NaptProfile};
use sustain_lab::root_or_skip;
use sustain_lab::topology::{Topology, TopologySpec};

const WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const INSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

fn spec(profile: NaptProfile) -> TopologySpec {
    TopologySpec::new()
        .global("g1")
        .global("g2")
        .napt("r", "g2", "home1", profile)
        .host("s", "g1")
        .host("a", "home1")
}

/// Sends one bare TCP ACK (no connection behind it) from the calling thread's
/// namespace, through a raw socket (the kernel adds the IP header).
fn send_bare_ack(src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16) {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
    tcp[12] = 5 << 4; // data offset
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    TcpPacket::new_unchecked(&mut tcp[..]).fill_checksum(src, dst);
    // SAFETY: plain syscalls with checked results; buffers valid for their lengths.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
        assert!(fd >= 0, "raw TCP socket");
        let socket = OwnedFd::from_raw_fd(fd);
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            socket.as_raw_fd(),
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(sent, 20, "send the ACK");
    }
}

/// A connection from inside to the global host: the global host sees the WAN address.
fn outbound_is_translated(topology: &Topology) {
    let s = topology.address_of("s").expect("s");
    let listener = topology
        .lab()
        .run_in("s", || TcpListener::bind((s, 0)))
        .expect("enter s")
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).expect("read");
        stream.write_all(b"world").expect("write");
        (peer, buf)
    });
    let mut stream = topology
        .lab()
        .run_in("a", move || {
            TcpStream::connect_timeout(&SocketAddr::from((s, port)), Duration::from_secs(5))
        })
        .expect("enter a")
        .expect("connect from inside");
    assert_eq!(stream.local_addr().expect("local").ip(), INSIDE);
    stream.write_all(b"hello").expect("write");
    let mut reply = [0u8; 5];
    stream
        .read_exact(&mut reply)
        .expect("reply through the NAPT");
    assert_eq!(&reply, b"world");
    let (peer, got) = server.join().expect("server");
    assert_eq!(&got, b"hello");
    assert_eq!(
        peer.ip(),
        WAN,
        "the global host sees the NAPT's WAN address"
    );
}

/// Unsolicited connections and echoes to the WAN address die silently, counted.
fn unsolicited_inbound_is_dropped(topology: &Topology) {
    let before = napt::counters(topology.lab(), "r").expect("counters");
    let attempt = topology
        .lab()
        .run_in("s", || {
            TcpStream::connect_timeout(&SocketAddr::from((WAN, 22)), Duration::from_millis(500))
        })
        .expect("enter s");
    match attempt {
        Err(err) => assert_eq!(
            err.kind(),
            ErrorKind::TimedOut,
            "dropped, not refused: {err}"
        ),
        Ok(_) => panic!("an unsolicited connection got through the NAPT"),
    }
    assert!(
        topology.ping("s", WAN, Duration::from_millis(300)).is_err(),
        "the NAPT answered an unsolicited echo"
    );
    let after = napt::counters(topology.lab(), "r").expect("counters");
    assert!(
        after.unsolicited >= before.unsolicited + 2,
        "SYN and echo counted: {before:?} -> {after:?}"
    );
}

/// A bare ACK from outside to a port with no mapping; returns how the counters moved.
fn bare_ack_counters(topology: &Topology) -> NaptCounters {
    let s = topology.address_of("s").expect("s");
    let before = napt::counters(topology.lab(), "r").expect("counters");
    topology
        .lab()
        .run_in("s", move || send_bare_ack(s, WAN, 40001))
        .expect("enter s");
    std::thread::sleep(Duration::from_millis(100));
    let after = napt::counters(topology.lab(), "r").expect("counters");
    NaptCounters {
        invalid: after.invalid - before.invalid,
        unsolicited: after.unsolicited - before.unsolicited,
    }
}

#[test]
fn home_napt_translates_outbound_and_drops_unsolicited_inbound() {
    if !root_or_skip("home_napt_translates_outbound_and_drops_unsolicited_inbound") {
        return;
    }
    let topology = Topology::build(&spec(NaptProfile::Home)).expect("build");
    assert_eq!(
        topology
            .lab()
            .sysctl_read("r", "net.netfilter.nf_conntrack_tcp_loose")
            .expect("sysctl"),
        "1"
    );
    outbound_is_translated(&topology);
    unsolicited_inbound_is_dropped(&topology);
    // Loose conntrack picks the ACK up as a NEW connection: dropped as unsolicited.
    assert_eq!(
        bare_ack_counters(&topology),
        NaptCounters {
            invalid: 0,
            unsolicited: 1
        }
    );
}

#[test]
fn strict_napt_drops_a_mid_stream_segment_as_invalid() {
    if !root_or_skip("strict_napt_drops_a_mid_stream_segment_as_invalid") {
        return;
    }
    let topology = Topology::build(&spec(NaptProfile::Strict)).expect("build");
    assert_eq!(
        topology
            .lab()
            .sysctl_read("r", "net.netfilter.nf_conntrack_tcp_loose")
            .expect("sysctl"),
        "0"
    );
    outbound_is_translated(&topology);
    unsolicited_inbound_is_dropped(&topology);
    // No mid-stream pickup: the ACK matches nothing and is INVALID.
    assert_eq!(
        bare_ack_counters(&topology),
        NaptCounters {
            invalid: 1,
            unsolicited: 0
        }
    );
}
