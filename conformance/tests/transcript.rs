//! The normalizer on synthetic captures (no root): a move with an MSYN handshake
//! written as pcap, then checked line by line. Equivalent runs (other ISNs, ports,
//! keys, instants) give identical transcripts; a changed handshake, a forged MAC or a
//! replayed MSYN changes them; a golden excerpt gives the same transcript as the
//! capture it was cut from; reconnect latency is read from the capture.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use sustain_conformance::diff::unified;
use sustain_conformance::golden;
use sustain_conformance::latency;
use sustain_conformance::{Analysis, CaptureSet, Names};
use sustain_core::auth::{self, Key, RequestNumber};

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B_OLD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const B_NEW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
const PORT: u16 = 5001;
const MS: u64 = 1_000_000;

/// What differs between equivalent runs, and the deliberate changes.
#[derive(Clone)]
struct Run {
    isn_b: u32,
    isn_a: u32,
    port_b: u16,
    key_b: u64,
    key_a: u64,
    start_ns: u64,
    /// One-way delay between the ends.
    delay_ns: u64,
    /// Data segments before and after the move.
    before: u32,
    after: u32,
    /// An extra NOP in the MSYN's options.
    extra_nop: bool,
    /// The MSYN's MAC with one bit flipped.
    bad_mac: bool,
    /// The MSYN sent again, from the attacker, after the handshake.
    replay: bool,
}

impl Run {
    fn base() -> Run {
        Run {
            isn_b: 1_000_000,
            isn_a: 7_000_000,
            port_b: 40_001,
            key_b: 0x0123_4567_89ab_cdef,
            key_a: 0xfedc_ba98_7654_3210,
            start_ns: 1_700_000_000 * 1_000_000_000,
            delay_ns: 20 * MS,
            before: 1500,
            after: 3000,
            extra_nop: false,
            bad_mac: false,
            replay: false,
        }
    }

    fn equivalent() -> Run {
        Run {
            isn_b: 4_294_000_000, // wraps during the transfer
            isn_a: 12,
            port_b: 51_999,
            key_b: 0x1111_2222_3333_4444,
            key_a: 0x5555_6666_7777_8888,
            start_ns: 1_800_000_000 * 1_000_000_000 + 123_456,
            delay_ns: 21 * MS,
            before: 1600,
            after: 2500,
            ..Run::base()
        }
    }
}

fn permit(addr: Ipv4Addr, port: u16, key: Option<u64>) -> Vec<u8> {
    let mut option = vec![253, if key.is_some() { 18 } else { 10 }, 0x5e, 0x9a];
    option.extend(addr.octets());
    option.extend(port.to_be_bytes());
    if let Some(key) = key {
        option.extend(key.to_be_bytes());
    }
    option
}

fn syn_options(addr: Ipv4Addr, port: u16, key: u64) -> Vec<u8> {
    let mut options = vec![
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    options.extend(permit(addr, port, Some(key)));
    options
}

fn ts() -> Vec<u8> {
    vec![1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]
}

fn pad(mut options: Vec<u8>) -> Vec<u8> {
    while !options.len().is_multiple_of(4) {
        options.push(0);
    }
    options
}

/// An Ethernet frame with IPv4 and TCP headers and `payload` zero bytes.
fn frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: usize,
) -> Vec<u8> {
    let options = pad(options.to_vec());
    let tcp_len = 20 + options.len();
    let total = 20 + tcp_len + payload;
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend([
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    frame.extend(src.ip().octets());
    frame.extend(dst.ip().octets());
    frame.extend(src.port().to_be_bytes());
    frame.extend(dst.port().to_be_bytes());
    frame.extend(seq.to_be_bytes());
    frame.extend(ack.to_be_bytes());
    frame.extend([((tcp_len / 4) as u8) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    frame.extend(options);
    frame.extend(std::iter::repeat_n(0u8, payload));
    frame
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

/// The capture at `a`'s uplink of a transfer b -> a with one move of b.
fn capture_at_a(run: &Run) -> Vec<(u64, Vec<u8>)> {
    let a = SocketAddrV4::new(A, PORT);
    let b = SocketAddrV4::new(B_OLD, run.port_b);
    let b_new = SocketAddrV4::new(B_NEW, run.port_b);
    let mss = 1448u32;
    let mut t = run.start_ns;
    let rtt = 2 * run.delay_ns;
    let mut out = Vec::new();
    let (ib, ia) = (run.isn_b, run.isn_a);
    out.push((
        t,
        frame(
            b,
            a,
            ib,
            0,
            SYN,
            &syn_options(B_OLD, run.port_b, run.key_b),
            0,
        ),
    ));
    t += 50_000;
    out.push((
        t,
        frame(
            a,
            b,
            ia,
            ib.wrapping_add(1),
            SYN | ACK,
            &syn_options(A, PORT, run.key_a),
            0,
        ),
    ));
    t += rtt;
    let mut next = ib.wrapping_add(1);
    out.push((
        t,
        frame(b, a, next, ia.wrapping_add(1), ACK, &ts(), mss as usize),
    ));
    next = next.wrapping_add(mss);
    for i in 1..run.before {
        t += 10_000;
        out.push((
            t,
            frame(b, a, next, ia.wrapping_add(1), ACK, &ts(), mss as usize),
        ));
        next = next.wrapping_add(mss);
        if i % 2 == 0 {
            out.push((t, frame(a, b, ia.wrapping_add(1), next, ACK, &ts(), 0)));
        }
    }
    // b moves: 500 ms without b, then the MSYN; b never saw the last 20 ACKs.
    let una = next.wrapping_sub(20 * mss);
    t += 500 * MS;
    let request = RequestNumber(1);
    let mut mac = auth::mac_msyn(Key(run.key_b), Key(run.key_a), request, b_new);
    if run.bad_mac {
        mac[0] ^= 1;
    }
    let mut msyn = vec![2, 4, 0x05, 0xb4];
    if run.extra_nop {
        msyn.push(1);
    }
    msyn.extend([1, 3, 3, 7, 253, 20, 0x0a, 0x21]);
    msyn.extend(Key(run.key_a).token().0.to_be_bytes());
    msyn.extend(request.0.to_be_bytes());
    msyn.extend(mac);
    msyn.extend(permit(B_NEW, run.port_b, None));
    let msyn_seq = una.wrapping_sub(1);
    let msyn_frame = frame(b_new, a, msyn_seq, 0, SYN, &msyn, 0);
    out.push((t, msyn_frame.clone()));
    t += 40_000;
    let nonce = 0x5eed_1234;
    // The version 0 form (no received offset, PROTOCOL.md §3.3), still accepted.
    let ack_mac = auth::mac_msyn_ack(Key(run.key_a), Key(run.key_b), request, nonce, b_new, None);
    let mut msyn_ack = vec![
        1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7, 253, 24, 0x0a, 0x21,
    ];
    msyn_ack.extend(Key(run.key_b).token().0.to_be_bytes());
    msyn_ack.extend(request.0.to_be_bytes());
    msyn_ack.extend(u32::to_be_bytes(nonce));
    msyn_ack.extend(ack_mac);
    out.push((t, frame(a, b_new, ia, una, SYN | ACK, &msyn_ack, 0)));
    t += rtt;
    let mut confirm = ts();
    confirm.extend([253, 12, 0x0a, 0x21]);
    confirm.extend(request.0.to_be_bytes());
    confirm.extend(u32::to_be_bytes(nonce));
    // The resend from SND.UNA: the first 20 are duplicates, all carry Confirm until
    // a's first ACK arrives.
    let mut next = una;
    for i in 0..run.after {
        let options = if i < 10 { confirm.clone() } else { ts() };
        out.push((
            t,
            frame(
                b_new,
                a,
                next,
                ia.wrapping_add(1),
                ACK,
                &options,
                mss as usize,
            ),
        ));
        next = next.wrapping_add(mss);
        t += 10_000;
        if i % 2 == 1 {
            out.push((t, frame(a, b_new, ia.wrapping_add(1), next, ACK, &ts(), 0)));
        }
    }
    if run.replay {
        t += 100 * MS;
        let mut replayed = msyn_frame.clone();
        replayed[26..30].copy_from_slice(&ATTACKER.octets());
        out.push((t, replayed));
    }
    t += 300 * MS;
    out.push((
        t,
        frame(b_new, a, next, ia.wrapping_add(1), FIN | ACK, &ts(), 0),
    ));
    // The FIN again (its retransmission timer): this one shows its gap.
    t += 300 * MS;
    out.push((
        t,
        frame(b_new, a, next, ia.wrapping_add(1), FIN | ACK, &ts(), 0),
    ));
    let a_fin = frame(
        a,
        b_new,
        ia.wrapping_add(1),
        next.wrapping_add(1),
        FIN | ACK,
        &ts(),
        0,
    );
    t += 30_000;
    out.push((t, a_fin.clone()));
    // a's FIN again: a retransmission shows its gap whichever side sends it.
    t += 300 * MS;
    out.push((t, a_fin));
    out
}

fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    for (t, data) in frames {
        writer
            .write_packet(&PcapPacket::new(
                Duration::from_nanos(*t),
                data.len() as u32,
                data,
            ))
            .unwrap();
    }
}

fn names() -> Names {
    let mut names = Names::default();
    names.add_address(A, "a");
    names.add_address(B_OLD, "b");
    names.add_address(B_NEW, "b");
    names.add_address(ATTACKER, "x");
    names.ports.insert(PORT);
    names.points.insert("a".into(), vec!["a-g1".into()]);
    names
}

fn dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("sustain-conformance-unit")
        .join(format!("{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the run as a lab output directory and returns its transcripts.
fn transcripts(run: &Run, label: &str) -> (PathBuf, BTreeMap<String, String>) {
    let dir = dir(label);
    write_pcap(&dir.join("a-g1.pcap"), &capture_at_a(run));
    names().save(&dir.join("names.json")).unwrap();
    let texts = golden::transcripts_of(&dir)
        .unwrap()
        .into_iter()
        .map(|(point, t)| (point, t.text()))
        .collect();
    (dir, texts)
}

const EXPECTED: &str = "\
0       b:p1 > a:5001  SYN      [S] seq=0 <mss 1460,sackOK,ts ecr=0,nop,ws 7,permit(b:p1 key=[key]),eol>
+0      a:5001 > b:p1  SYN-ACK  [S.] seq=0 ack=1 <mss 1460,sackOK,ts ecr=0,nop,ws 7,permit(a:5001 key=[key]),eol>
+1rtt   b:p1 > a:5001  DATA     [.] seq=1 ack=1 data <nop,nop,ts>
        .. 1000+ data b:p1 > a:5001
+long   b:p1 > a:5001  MSYN     [S] seq=b.1 <mss 1460,nop,ws 7,migrate(token=[token] req=1 mac=[mac]),permit(b:p1),eol>
+0      a:5001 > b:p1  MSYN-ACK [S.] seq=0 ack=b.1+1 <nop,nop,ts ecr=0,nop,ws 7,migrate-ack(token=[token] req=1 nonce=[nonce] mac=[mac])>
+1rtt   b:p1 > a:5001  DATA     [.] seq=b.1+1 ack=1 data <nop,nop,ts,migrate-confirm(req=1 nonce=[nonce])>
        .. 1000+ data b:p1 > a:5001
+close  b:p1 > a:5001  FIN      [F.] seq=b.2 ack=1 <nop,nop,ts>
+3-9rtt b:p1 > a:5001  FIN      [F.] seq=b.2 ack=1 <nop,nop,ts>
+close  a:5001 > b:p1  FIN      [F.] seq=1 ack=b.2+1 <nop,nop,ts>
+3-9rtt a:5001 > b:p1  FIN      [F.] seq=1 ack=b.2+1 <nop,nop,ts>
";

#[test]
fn a_move_reads_as_the_expected_transcript() {
    let (_, texts) = transcripts(&Run::base(), "base");
    let text = &texts["a-g1"];
    assert_eq!(
        text,
        EXPECTED,
        "{}",
        unified("expected", EXPECTED, "got", text).unwrap_or_default()
    );
}

#[test]
fn equivalent_runs_give_identical_transcripts() {
    let (_, base) = transcripts(&Run::base(), "eq-base");
    let (_, other) = transcripts(&Run::equivalent(), "eq-other");
    assert_eq!(
        base["a-g1"],
        other["a-g1"],
        "{}",
        unified("base", &base["a-g1"], "equivalent", &other["a-g1"]).unwrap_or_default()
    );
}

#[test]
fn an_extra_option_byte_in_the_msyn_changes_the_transcript_with_a_readable_diff() {
    let (_, base) = transcripts(&Run::base(), "nop-base");
    let changed = Run {
        extra_nop: true,
        ..Run::base()
    };
    let (_, other) = transcripts(&changed, "nop-changed");
    let diff = unified("golden/a-g1", &base["a-g1"], "run/a-g1", &other["a-g1"])
        .expect("an extra NOP must change the transcript");
    assert!(
        diff.contains("-+long   b:p1 > a:5001  MSYN     [S] seq=b.1 <mss 1460,nop,ws 7,")
            && diff.contains("+long   b:p1 > a:5001  MSYN     [S] seq=b.1 <mss 1460,nop,nop,ws 7,"),
        "{diff}"
    );
    // Only the MSYN line changed.
    let changed_lines = diff
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .count();
    assert_eq!(changed_lines, 2, "{diff}");
}

#[test]
fn a_forged_mac_and_a_replayed_msyn_are_marked() {
    let (_, forged) = transcripts(
        &Run {
            bad_mac: true,
            ..Run::base()
        },
        "forged",
    );
    assert!(
        forged["a-g1"].contains(
            "MSYN     [S] seq=b.1 <mss 1460,nop,ws 7,migrate(token=[token] req=1 mac=[mac:BAD])"
        ),
        "{}",
        forged["a-g1"]
    );
    let (_, replayed) = transcripts(
        &Run {
            replay: true,
            ..Run::base()
        },
        "replayed",
    );
    let replay_lines: Vec<&str> = replayed["a-g1"]
        .lines()
        .filter(|l| l.contains("MSYN "))
        .collect();
    assert_eq!(replay_lines.len(), 2, "{}", replayed["a-g1"]);
    assert!(!replay_lines[0].contains("replay"), "{}", replay_lines[0]);
    assert!(
        replay_lines[1].starts_with("+3-9rtt x:p1 > a:5001  MSYN ")
            && replay_lines[1].contains("migrate(token=[token] req=1 replay mac=[mac])"),
        "{}",
        replay_lines[1]
    );
}

#[test]
fn a_golden_excerpt_gives_the_same_transcript_and_is_small() {
    let (run_dir, texts) = transcripts(&Run::base(), "excerpt-run");
    let golden_dir = dir("excerpt-golden");
    golden::bless(&run_dir, &golden_dir).unwrap();
    let golden = golden::transcripts_of(&golden_dir).unwrap();
    assert_eq!(golden["a-g1"].text(), texts["a-g1"]);
    assert!(golden::check(&run_dir, &golden_dir).unwrap().is_empty());
    let full = std::fs::metadata(run_dir.join("a-g1.pcap")).unwrap().len();
    let excerpt = std::fs::metadata(golden_dir.join("a-g1.pcapng"))
        .unwrap()
        .len();
    assert!(excerpt * 20 < full, "excerpt {excerpt} bytes of {full}");
    // And a changed run no longer matches the golden excerpt.
    let (changed_dir, _) = transcripts(
        &Run {
            extra_nop: true,
            ..Run::base()
        },
        "excerpt-changed",
    );
    let diffs = golden::check(&changed_dir, &golden_dir).unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(
        diffs[0].to_string().contains("nop,nop,ws 7"),
        "{}",
        diffs[0]
    );
}

#[test]
fn reconnect_latency_is_read_from_the_capture() {
    let run = Run::base();
    let (dir, _) = transcripts(&run, "latency");
    let set = CaptureSet::read_dir(&dir).unwrap();
    let analysis = Analysis::of(&set);
    // The last data segment before the move, then the move's completion 300 ms later.
    let frames = capture_at_a(&run);
    let msyn_at = frames
        .iter()
        .find(|(_, f)| f[47] == SYN && f[26..30] == B_NEW.octets())
        .map(|(t, _)| *t)
        .unwrap();
    let moved = msyn_at - 200 * MS;
    let measured = latency::measure(&set, &analysis, moved, &names().points, "a");
    // The handshake's final ACK (the first Confirm) arrives 40 us + 1 RTT after the MSYN.
    assert_eq!(
        measured.handshake_ns,
        Some(200 * MS + 40_000 + 2 * run.delay_ns)
    );
    // The first 20 resent segments are duplicates: the 21st is new, and a's ACK
    // covering it follows the 22nd, 20 us after it (a acknowledges every second one).
    let first_new = 200 * MS + 40_000 + 2 * run.delay_ns + 20 * 10_000;
    assert_eq!(measured.first_new_data_ns, Some(first_new));
    assert_eq!(measured.reconnect_ns, Some(first_new + 20_000));
}

/// Captures are untrusted input (`sustain-lab pcap-diff` reads anyone's): random and
/// mutated frames, and golden comments with absurd counts, must never panic.
#[test]
fn hostile_frames_and_elision_comments_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let real = capture_at_a(&Run {
        before: 40,
        after: 40,
        ..Run::base()
    });
    let mut frames = Vec::new();
    for round in 0..4000u64 {
        let (t, mut data) = real[(next() as usize) % real.len()].clone();
        match round % 4 {
            // Flip a few bytes anywhere (headers, lengths, options).
            0 | 1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % data.len();
                    data[at] = next() as u8;
                }
            }
            // Cut it short.
            2 => data.truncate((next() as usize) % data.len()),
            // Pure noise.
            _ => data = (0..next() % 120).map(|_| next() as u8).collect(),
        }
        frames.push((t + round, data));
    }
    let dir = dir("hostile");
    write_pcap(&dir.join("a-g1.pcap"), &frames);
    names().save(&dir.join("names.json")).unwrap();
    let set = CaptureSet::read_dir(&dir).unwrap();
    let analysis = Analysis::of(&set);
    let transcripts = analysis.transcripts(&set);
    assert_eq!(transcripts.len(), 1);
    latency::measure(&set, &analysis, frames[2000].0, &names().points, "a");
    // An excerpt of it, then one whose comments claim u64::MAX elided segments.
    let golden_dir = dir.join("golden");
    golden::bless(&dir, &golden_dir).unwrap();
    let excerpt = std::fs::read(golden_dir.join("a-g1.pcapng")).unwrap();
    // Byte offsets, searched in the bytes: a lossy string's offsets shift at
    // every invalid UTF-8 sequence before the comment (packet bytes).
    let tag = b"sustain-elided: ";
    let comment_at = excerpt
        .windows(tag.len())
        .position(|w| w == tag)
        .expect("an elision comment");
    let digits = excerpt[comment_at + 16..]
        .iter()
        .position(|&b| b == b' ')
        .expect("a count");
    assert!(digits <= 20);
    let mut crafted = excerpt.clone();
    // Same length, so the block stays valid: the count becomes all nines.
    for byte in &mut crafted[comment_at + 16..comment_at + 16 + digits] {
        *byte = b'9';
    }
    std::fs::write(golden_dir.join("a-g1.pcapng"), &crafted).unwrap();
    let again = golden::transcripts_of(&golden_dir).unwrap();
    assert_eq!(again.len(), 1);
    let third = dir.join("golden-of-golden");
    golden::bless(&golden_dir, &third).unwrap();
}
