//! Packet capture to pcap on the real kernel (needs root; skipped with a reason
//! otherwise).

mod common;

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{sha256_hex, test_data, transfer_a_to_b};
use pcap_file::pcap::PcapReader;
use pcap_file::{DataLink, TsResolution};
use sustain_conformance::capture::LinkType;
use sustain_core::wire::{Ipv4Packet, TcpPacket, PROTOCOL_TCP};
use sustain_lab::{root_or_skip, Capture, CaptureReport, PathLab};

/// A scratch directory for one test's pcaps, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(test: &str) -> ScratchDir {
        let dir =
            std::env::temp_dir().join(format!("sustain-capture-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One TCP frame of a capture.
#[derive(Clone, Debug)]
struct TcpFrame {
    timestamp: Duration,
    frame: Vec<u8>,
    src: Ipv4Addr,
    syn: bool,
    ack: bool,
    fin: bool,
    payload_len: usize,
}

/// Reads a pcap back: checks its header, returns every record count and the TCP/IPv4
/// frames, each checked for valid IPv4 and TCP checksums.
fn read_tcp_frames(path: &Path) -> (usize, Vec<TcpFrame>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapReader::new(file).expect("pcap header");
    let header = reader.header();
    assert_eq!(header.datalink, DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    let mut records = 0;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("pcap record");
        records += 1;
        assert_eq!(
            packet.data.len(),
            packet.orig_len as usize,
            "frames are kept whole"
        );
        let Some(ip_at) = LinkType::Ethernet.ipv4_offset(&packet.data) else {
            continue;
        };
        let ip = Ipv4Packet::new_checked(&packet.data[ip_at..]).expect("IPv4 packet");
        if ip.protocol() != PROTOCOL_TCP {
            continue;
        }
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP segment");
        assert!(
            tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
            "TCP checksum of {tcp:?}"
        );
        frames.push(TcpFrame {
            timestamp: packet.timestamp,
            frame: packet.data.to_vec(),
            src: ip.src_addr(),
            syn: tcp.flags().syn(),
            ack: tcp.flags().ack(),
            fin: tcp.flags().fin(),
            payload_len: tcp.payload().len(),
        });
    }
    (records, frames)
}

fn from(frames: &[TcpFrame], src: Ipv4Addr) -> Vec<&TcpFrame> {
    frames.iter().filter(|f| f.src == src).collect()
}

#[test]
fn captures_on_both_ends_of_a_link_hold_the_same_tcp_segments() {
    if !root_or_skip("captures_on_both_ends_of_a_link_hold_the_same_tcp_segments") {
        return;
    }
    let scratch = ScratchDir::new("link");
    let path = PathLab::new().expect("build path lab");
    let capture_a = Capture::start_in(path.lab(), "a", PathLab::A_IF, Some("net-a"), &scratch.0)
        .expect("capture A");
    let capture_r =
        Capture::start_in(path.lab(), "r", PathLab::R_A_IF, None, &scratch.0).expect("capture R");
    assert_eq!(capture_a.path(), scratch.0.join("a-net-a.pcap"));
    assert_eq!(capture_r.path(), scratch.0.join("r-r-a.pcap"));

    let data = test_data(64 << 10, 0xcab);
    let received = transfer_a_to_b(&path, &data);
    assert_eq!(sha256_hex(&received), sha256_hex(&data));
    // Both sides have closed; the last ACK of the teardown follows within a round
    // trip of the veth path (microseconds).
    std::thread::sleep(Duration::from_millis(200));
    let report_a = capture_a.stop().expect("stop capture A");
    let report_r = capture_r.stop().expect("stop capture R");
    eprintln!("A: {report_a:?}\nR: {report_r:?}");

    let (records_a, frames_a) = read_tcp_frames(&report_a.path);
    let (records_r, frames_r) = read_tcp_frames(&report_r.path);
    for (report, records) in [(&report_a, records_a), (&report_r, records_r)] {
        assert_eq!(report.packets as usize, records, "{report:?}");
        assert_eq!(report.incoming + report.outgoing, report.packets);
        assert!(
            report.incoming > 0 && report.outgoing > 0,
            "both directions: {report:?}"
        );
        assert_eq!(
            (report.kernel_drops, report.truncated),
            (0, 0),
            "{report:?}"
        );
        assert_eq!(report.kernel_packets, report.packets, "{report:?}");
    }

    // The handshake, the data and both FINs are there.
    let a_to_b = from(&frames_a, PathLab::A_ADDR);
    let b_to_a = from(&frames_a, PathLab::B_ADDR);
    assert!(a_to_b.iter().any(|f| f.syn && !f.ack), "SYN");
    assert!(b_to_a.iter().any(|f| f.syn && f.ack), "SYN-ACK");
    assert!(a_to_b.iter().any(|f| f.fin), "A's FIN");
    assert!(b_to_a.iter().any(|f| f.fin), "B's FIN");
    let payload: usize = a_to_b.iter().map(|f| f.payload_len).sum();
    assert!(
        payload >= data.len(),
        "{payload} of {} data bytes",
        data.len()
    );

    // What A sent is what R received, byte for byte, and the other way round; the
    // receiving end's kernel timestamp is never before the sender's. Frames are
    // matched by content, not by position: two AF_PACKET sockets on two CPUs may
    // record back-to-back frames (an ACK and a data segment) in either order.
    for (src, sender, receiver) in [
        (PathLab::A_ADDR, &frames_a, &frames_r),
        (PathLab::B_ADDR, &frames_r, &frames_a),
    ] {
        let sent = from(sender, src);
        let mut got = from(receiver, src);
        assert_eq!(sent.len(), got.len(), "segments from {src}");
        for s in &sent {
            let at = got
                .iter()
                .position(|g| g.frame == s.frame)
                .unwrap_or_else(|| {
                    panic!("a segment from {src} changed on the wire or was not captured")
                });
            let g = got.swap_remove(at);
            assert!(g.timestamp >= s.timestamp, "received before it was sent");
            assert!(g.timestamp - s.timestamp < Duration::from_secs(1));
        }
    }

    tcpdump_reads(&report_a);
    tcpdump_reads(&report_r);
}

/// `tcpdump -r FILE -nn` reads the file and sees every record (skipped, with a
/// message, when tcpdump is not installed).
fn tcpdump_reads(report: &CaptureReport) {
    let output = match std::process::Command::new("tcpdump")
        .arg("-r")
        .arg(&report.path)
        .arg("-nn")
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            sustain_lab::skip(
                "the tcpdump check",
                "tcpdump is not installed (apt-get install -y tcpdump)",
            );
            return;
        }
        Err(err) => panic!("running tcpdump: {err}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tcpdump -r {}: {}",
        report.path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count() as u64, report.packets, "{stdout}");
    assert!(stdout.contains("Flags [S]"), "{stdout}");
    assert!(stdout.contains("Flags [S.]"), "{stdout}");
}

#[test]
fn a_capture_on_a_missing_interface_fails_and_leaves_no_file() {
    if !root_or_skip("a_capture_on_a_missing_interface_fails_and_leaves_no_file") {
        return;
    }
    let scratch = ScratchDir::new("missing");
    let path = PathLab::new().expect("build path lab");
    let err = Capture::start_in(path.lab(), "a", "nope0", None, &scratch.0)
        .expect_err("no such interface");
    eprintln!("{err}");
    assert!(!scratch.0.join("a-nope0.pcap").exists());
    assert!(Capture::start_in(path.lab(), "zz", PathLab::A_IF, None, &scratch.0).is_err());
    assert!(Capture::start_in(path.lab(), "a", PathLab::A_IF, Some("x/y"), &scratch.0).is_err());
}

#[test]
fn dropping_a_capture_flushes_a_readable_file() {
    if !root_or_skip("dropping_a_capture_flushes_a_readable_file") {
        return;
    }
    let scratch = ScratchDir::new("drop");
    let path = PathLab::new().expect("build path lab");
    let capture = Capture::start_in(path.lab(), "r", PathLab::R_B_IF, Some("net-b"), &scratch.0)
        .expect("capture");
    let file = capture.path().to_path_buf();
    path.check_connectivity(Duration::from_secs(5))
        .expect("connectivity");
    std::thread::sleep(Duration::from_millis(100));
    let so_far = capture.packets_so_far();
    drop(capture);
    let (records, frames) = read_tcp_frames(&file);
    assert!(
        records as u64 >= so_far && so_far > 0,
        "{records} / {so_far}"
    );
    assert!(frames.iter().any(|f| f.syn && !f.ack));
}

#[test]
fn a_capture_survives_its_interface_going_down_and_up() {
    if !root_or_skip("a_capture_survives_its_interface_going_down_and_up") {
        return;
    }
    let scratch = ScratchDir::new("flap");
    let path = PathLab::new().expect("build path lab");
    let capture =
        Capture::start_in(path.lab(), "a", PathLab::A_IF, None, &scratch.0).expect("capture");
    let lab = path.lab();
    lab.link_down("a", PathLab::A_IF).expect("down");
    lab.link_up("a", PathLab::A_IF).expect("up");
    lab.wait_link_up("a", PathLab::A_IF, Duration::from_secs(5))
        .expect("back up");
    // Taking the link down removed A's routes through it.
    lab.add_route("a", &sustain_lab::Ipv4Route::default_via(PathLab::R_A_ADDR))
        .expect("default route again");
    path.check_connectivity(Duration::from_secs(10))
        .expect("connectivity after the flap");
    std::thread::sleep(Duration::from_millis(100));
    let report = capture.stop().expect("stop");
    eprintln!("{report:?}");
    assert!(report.interface_down >= 1, "{report:?}");
    let (records, frames) = read_tcp_frames(&report.path);
    assert_eq!(records as u64, report.packets);
    assert!(
        frames
            .iter()
            .any(|f| f.syn && !f.ack && f.src == PathLab::A_ADDR),
        "the SYN sent after the flap was captured"
    );
}
