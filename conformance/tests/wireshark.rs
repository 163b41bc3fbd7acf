//! The Wireshark dissector (`wireshark/sustain.lua`) against this crate's own
//! decoding, frame by frame: two independent decoders of the same bytes.
//!
//! tshark runs the dissector on every golden capture (`pcaps/*/*.pcapng`) and on a
//! synthetic capture built here from PROTOCOL.md's example bytes (§3.7: the new
//! MSYN-ACK and Confirm forms with received offsets, version 0 forms, a forged MAC,
//! a wrong token and nonce, malformed lengths, an unknown ExID, Relay-Tickets; §15.13:
//! every control message). For every frame the option kinds in wire order must
//! equal [`options::decode`]'s, every sustain option's fields (ExID, length, form,
//! addresses, keys, tokens, request numbers, nonces, received offsets, MACs) must
//! equal the decoded values, and where the normalizer writes a transcript line for
//! the frame, the dissector's checks (MAC, token, nonce, replay) must equal the
//! normalizer's markers. Both sides see the same single file, so both know the same
//! keys. Nothing here is a per-frame value of a golden capture: the expectations
//! come from the captures through the crate, so re-recorded captures need no edit.
//!
//! Without tshark the tests print a SKIPPED line; with `CI` set they fail instead.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;

use sustain_conformance::capture::{capture_files, Capture};
use sustain_conformance::options::{decode, Opt};
use sustain_conformance::segment::{Segment, ACK, SYN};
use sustain_conformance::{Analysis, CaptureSet, Names};
use sustain_core::auth::{ConnectionKeys, Key};
use sustain_core::control::{Body, ControlRepr, ErrorReply, Message, MessageType};
use sustain_core::verifier::Credentials;
use sustain_core::wire::migrate::{MigrateOption, RelayTicket};
use sustain_core::wire::Ipv4Packet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("inside the repository")
        .to_path_buf()
}

fn script() -> PathBuf {
    repo().join("wireshark/sustain.lua")
}

/// tshark from `TSHARK` or `PATH`; `None` (after a SKIPPED line) when missing, a
/// failure under CI.
fn tshark_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("TSHARK")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("tshark"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        sustain_lab::skip(
            test,
            "tshark is not installed (./justw installs it; by hand: \
             DEBIAN_FRONTEND=noninteractive apt-get install -y tshark)",
        );
    }
    found
}

/// One field of tshark's PDML output.
#[derive(Clone, Debug)]
struct Field {
    name: String,
    pos: usize,
    show: String,
}

#[derive(Clone, Debug, Default)]
struct Packet {
    number: usize,
    fields: Vec<Field>,
}

impl Packet {
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields.iter().filter(move |f| f.name == name)
    }

    fn has(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }
}

fn attr(line: &str, key: &str) -> Option<String> {
    let pattern = format!(" {key}=\"");
    let start = line.find(&pattern)? + pattern.len();
    let end = start + line[start..].find('"')?;
    Some(unescape(&line[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Runs tshark with the dissector on `file`; its PDML, packet by packet. HOME points
/// at a scratch directory so that a user's own preferences or an installed copy of
/// the plugin (`just wireshark`) cannot change what is tested.
fn run_tshark(tshark: &Path, file: &Path, extra: &[&str]) -> Vec<Packet> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let home = std::env::temp_dir().join(format!(
        "sustain-wireshark-home-{}-{run}",
        std::process::id()
    ));
    std::fs::create_dir_all(&home).expect("scratch HOME");
    let output = Command::new(tshark)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .arg("-n")
        .arg("-X")
        .arg(format!("lua_script:{}", script().display()))
        .args(extra)
        .arg("-r")
        .arg(file)
        .args(["-T", "pdml"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tshark.display()));
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tshark failed on {}: {stderr}",
        file.display()
    );
    assert!(
        !stderr.contains("Lua") && !stdout.contains("Lua Error"),
        "the dissector raised a Lua error on {}:\n{stderr}\n{}",
        file.display(),
        stdout
            .lines()
            .filter(|l| l.contains("Lua Error"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut packets = Vec::new();
    let mut current: Option<Packet> = None;
    for line in stdout.lines() {
        let line = line.trim_start();
        if line.starts_with("<packet>") {
            current = Some(Packet::default());
        } else if line.starts_with("</packet>") {
            packets.extend(current.take());
        } else if line.starts_with("<field ") || line.starts_with("<proto ") {
            let (Some(packet), Some(name)) = (current.as_mut(), attr(line, "name")) else {
                continue;
            };
            let pos = attr(line, "pos").and_then(|p| p.parse().ok()).unwrap_or(0);
            let show = attr(line, "show").unwrap_or_default();
            if name == "frame.number" {
                packet.number = show.parse().unwrap_or(0);
            }
            packet.fields.push(Field { name, pos, show });
        }
    }
    packets
}

/// One sustain option as the dissector showed it: the fields inside its bytes
/// (generated ones sit at its first byte).
#[derive(Debug)]
struct Shown {
    pos: usize,
    fields: Vec<Field>,
}

impl Shown {
    fn values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.name == name)
            .map(|f| f.show.clone())
            .collect()
    }
}

fn shown_options(packet: &Packet) -> Vec<Shown> {
    let mut out = Vec::new();
    for kind in packet.all("sustain.kind") {
        let len = packet
            .all("sustain.len")
            .find(|f| f.pos == kind.pos + 1)
            .and_then(|f| f.show.parse::<usize>().ok())
            .unwrap_or(1);
        let fields = packet
            .fields
            .iter()
            .filter(|f| {
                f.name.starts_with("sustain.") && (kind.pos..kind.pos + len).contains(&f.pos)
            })
            .cloned()
            .collect();
        out.push(Shown {
            pos: kind.pos,
            fields,
        });
    }
    out.sort_by_key(|s| s.pos);
    out
}

/// The kinds tshark shows, in wire order, up to the first End of Option List.
fn shown_kinds(packet: &Packet) -> Vec<u8> {
    let mut kinds: Vec<(usize, u8)> = packet
        .fields
        .iter()
        .filter(|f| f.name == "tcp.option_kind" || f.name == "sustain.kind")
        .filter_map(|f| Some((f.pos, f.show.parse().ok()?)))
        .collect();
    kinds.sort_unstable();
    let mut out = Vec::new();
    for (_, kind) in kinds {
        out.push(kind);
        if kind == 0 {
            break;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn plain(show: &str) -> String {
    show.replace(':', "").to_lowercase()
}

/// The kind of each option the crate decoded, up to a malformed one; and whether the
/// walk ended on a malformed one.
fn decoded_kinds(opts: &[Opt]) -> (Vec<u8>, bool) {
    let mut kinds = Vec::new();
    for opt in opts {
        kinds.push(match opt {
            Opt::Eol => 0,
            Opt::Nop => 1,
            Opt::Mss(_) => 2,
            Opt::WindowScale(_) => 3,
            Opt::SackPermitted => 4,
            Opt::Sack(_) => 5,
            Opt::Timestamps { .. } => 8,
            Opt::Unknown { kind, .. } => *kind,
            Opt::Malformed(_) => return (kinds, true),
            _ => 253,
        });
    }
    (kinds, false)
}

/// What the dissector must show for one sustain option, from the crate's decoding.
struct Expected {
    exid: u16,
    len: usize,
    form: &'static str,
    fields: Vec<(&'static str, String)>,
    malformed: bool,
}

fn expected(opt: &Opt, segment: &Segment) -> Option<Expected> {
    let token = |t: u32| format!("0x{t:08x}");
    let nonce = token;
    Some(match opt {
        Opt::Permit(p) => {
            let mut fields = vec![
                ("sustain.permit.addr", p.addr.to_string()),
                ("sustain.permit.port", p.port.to_string()),
                (
                    "sustain.permit.natted",
                    if p.direct() == segment.src { "0" } else { "1" }.to_string(),
                ),
            ];
            if let Some(key) = p.key {
                fields.push(("sustain.permit.key", format!("{key:016x}")));
                fields.push(("sustain.permit.key_token", token(Key(key).token().0)));
            }
            Expected {
                exid: 0x5e9a,
                len: if p.key.is_some() { 18 } else { 10 },
                form: if p.key.is_some() {
                    "permit-full"
                } else {
                    "permit-short"
                },
                fields,
                malformed: false,
            }
        }
        Opt::Migrate(MigrateOption::Msyn(m)) => Expected {
            exid: 0x0a21,
            len: 20,
            form: "msyn",
            fields: vec![
                ("sustain.migrate.token", token(m.token)),
                ("sustain.migrate.request", m.request.to_string()),
                ("sustain.migrate.mac", hex(&m.mac)),
            ],
            malformed: false,
        },
        Opt::Migrate(MigrateOption::MsynAck(m)) => {
            let mut fields = vec![
                ("sustain.migrate.token", token(m.token)),
                ("sustain.migrate.request", m.request.to_string()),
                ("sustain.migrate.nonce", nonce(m.nonce)),
                ("sustain.migrate.mac", hex(&m.mac)),
            ];
            if let Some(received) = m.received {
                fields.push(("sustain.migrate.received", received.to_string()));
            }
            Expected {
                exid: 0x0a21,
                len: if m.received.is_some() { 27 } else { 24 },
                form: if m.received.is_some() {
                    "msyn-ack"
                } else {
                    "msyn-ack-v0"
                },
                fields,
                malformed: false,
            }
        }
        Opt::Migrate(MigrateOption::Confirm(m)) => {
            let mut fields = vec![
                ("sustain.migrate.request", m.request.to_string()),
                ("sustain.migrate.nonce", nonce(m.nonce)),
            ];
            if let Some(received) = m.received {
                fields.push(("sustain.migrate.received", received.to_string()));
            }
            Expected {
                exid: 0x0a21,
                len: if m.received.is_some() { 16 } else { 12 },
                form: if m.received.is_some() {
                    "confirm"
                } else {
                    "confirm-v0"
                },
                fields,
                malformed: false,
            }
        }
        Opt::AddressUpdate(u) => Expected {
            exid: 0x3b4c,
            len: 24,
            form: "address-update",
            fields: vec![
                ("sustain.address_update.old_addr", u.old_addr.to_string()),
                ("sustain.address_update.token", token(u.token)),
                ("sustain.address_update.request", u.request.to_string()),
                ("sustain.address_update.mac", hex(&u.mac)),
            ],
            malformed: false,
        },
        Opt::RelayTicket(RelayTicket::Msyn(m)) => Expected {
            exid: 0xab48,
            len: 20,
            form: "relay-msyn",
            fields: vec![
                ("sustain.relay_ticket.id", token(m.ticket)),
                ("sustain.relay_ticket.request", m.request.to_string()),
                ("sustain.relay_ticket.mac", hex(&m.mac)),
            ],
            malformed: false,
        },
        Opt::RelayTicket(RelayTicket::MsynAck(a)) => Expected {
            exid: 0xab48,
            len: 27,
            form: "relay-msyn-ack",
            fields: vec![
                ("sustain.relay_ticket.id", token(a.ticket)),
                ("sustain.relay_ticket.request", a.request.to_string()),
                ("sustain.relay_ticket.nonce", nonce(a.nonce)),
                ("sustain.relay_ticket.received", a.received.to_string()),
                ("sustain.relay_ticket.mac", hex(&a.mac)),
            ],
            malformed: false,
        },
        Opt::BadLength { name, len } => Expected {
            exid: match *name {
                "permit" => 0x5e9a,
                "migrate" => 0x0a21,
                "address-update" => 0x3b4c,
                "relay-ticket" => 0xab48,
                other => panic!("unexpected malformed option name {other}"),
            },
            len: *len,
            form: "malformed",
            fields: Vec::new(),
            malformed: true,
        },
        _ => return None,
    })
}

/// The option texts of a transcript line (`<a,b(c d),...>`), split at top-level commas.
fn option_texts(line: &str) -> Vec<String> {
    let Some(start) = line.rfind(" <") else {
        return Vec::new();
    };
    if !line.ends_with('>') {
        return Vec::new();
    }
    let inner = &line[start + 2..line.len() - 1];
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in inner.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out
}

fn is_sustain_text(text: &str) -> bool {
    [
        "permit(",
        "migrate(",
        "migrate-ack(",
        "migrate-confirm(",
        "address-update(",
        "relay-ticket(",
        "relay-ticket-ack(",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// The normalizer's verdicts in one option text, as the dissector's field values.
fn verdicts(text: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (marker, field, value) in [
        ("mac=[mac]", "sustain.mac_status", "ok"),
        ("mac=[mac:BAD]", "sustain.mac_status", "BAD"),
        ("mac=[mac?]", "sustain.mac_status", "unknown"),
        ("token=[token]", "sustain.token_status", "ok"),
        ("token=[token:WRONG]", "sustain.token_status", "WRONG"),
        ("token=[token?]", "sustain.token_status", "unknown"),
    ] {
        if text.contains(marker) {
            out.push((field, value));
        }
    }
    if text.starts_with("migrate-confirm(") {
        for (marker, value) in [
            ("nonce=[nonce]", "ok"),
            ("nonce=[nonce:WRONG]", "WRONG"),
            ("nonce=[nonce?]", "unknown"),
        ] {
            if text.contains(marker) {
                out.push(("sustain.nonce_status", value));
            }
        }
    }
    if text.starts_with("migrate(") && !text.contains("MALFORMED") {
        let replay = text.contains(" replay");
        out.push(("sustain.replay", if replay { "1" } else { "0" }));
    }
    out
}

/// What one capture's comparison covered.
#[derive(Debug, Default)]
struct Tally {
    frames: usize,
    options: usize,
    /// (field, value) of every check compared with the normalizer's.
    checks: Vec<(&'static str, &'static str)>,
}

impl Tally {
    fn count(&self, field: &str, value: &str) -> usize {
        self.checks
            .iter()
            .filter(|(f, v)| *f == field && *v == value)
            .count()
    }
}

/// Compares tshark's view of `file` with the crate's, frame by frame; mismatches are
/// pushed to `errors`.
fn compare_file(tshark: &Path, file: &Path, extra: &[&str], errors: &mut Vec<String>) -> Tally {
    let capture = Capture::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let set = CaptureSet {
        captures: vec![capture],
        names: Names::default(),
    };
    // The normalizer on this one file: it knows exactly the keys the dissector sees.
    let analysis = Analysis::of(&set);
    let transcript = analysis.transcript(&set, 0);
    let capture = &set.captures[0];
    let packets = run_tshark(tshark, file, extra);
    let name = format!(
        "{}{}",
        file.display(),
        extra.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    let mut tally = Tally::default();
    if packets.len() != capture.frames.len() {
        errors.push(format!(
            "{name}: tshark shows {} frames, the crate reads {}",
            packets.len(),
            capture.frames.len()
        ));
        return tally;
    }
    for (index, (frame, packet)) in capture.frames.iter().zip(&packets).enumerate() {
        let at = format!("{name} frame {}", index + 1);
        if packet.number != index + 1 {
            errors.push(format!("{at}: tshark numbered it {}", packet.number));
        }
        let Some(segment) = Segment::decode(capture.link, &frame.data) else {
            continue;
        };
        tally.frames += 1;
        let opts = decode(&segment.options);

        // Option kinds in wire order.
        let (kinds, broken) = decoded_kinds(&opts);
        let shown = shown_kinds(packet);
        if broken {
            if !shown.starts_with(&kinds) {
                errors.push(format!(
                    "{at}: kinds {shown:?}, crate {kinds:?} then a malformed option"
                ));
            }
            // Wireshark's TCP dissector reports a broken option list itself.
            let reported = packet.has("tcp.option.len.invalid")
                || packet.has("_ws.malformed")
                || packet
                    .all("_ws.expert.group")
                    .any(|f| f.show == "117440512");
            if !reported {
                errors.push(format!("{at}: broken option list without an expert info"));
            }
        } else if shown != kinds {
            errors.push(format!("{at}: kinds {shown:?}, crate {kinds:?}"));
        }

        // Every sustain option, field by field.
        let wanted: Vec<Expected> = opts.iter().filter_map(|o| expected(o, &segment)).collect();
        let mut options = shown_options(packet);
        if broken && options.len() > wanted.len() {
            // Options after a broken one: Wireshark reads on, a receiver does not.
            options.truncate(wanted.len());
        }
        if options.len() != wanted.len() {
            errors.push(format!(
                "{at}: {} sustain options shown, crate decodes {}",
                options.len(),
                wanted.len()
            ));
            continue;
        }
        for (want, got) in wanted.iter().zip(&options) {
            tally.options += 1;
            let mut check = |field: &str, value: String| {
                let values = got.values(field);
                if !values.iter().any(|v| plain(v) == plain(&value)) {
                    errors.push(format!("{at}: {field} = {values:?}, crate {value}"));
                }
            };
            check("sustain.exid", format!("0x{:04x}", want.exid));
            check("sustain.len", want.len.to_string());
            check("sustain.form", want.form.to_string());
            for (field, value) in &want.fields {
                check(field, value.clone());
            }
            let malformed = !got.values("sustain.malformed").is_empty();
            if malformed != want.malformed {
                errors.push(format!(
                    "{at}: option at {} malformed={malformed}, crate {}",
                    got.pos, want.malformed
                ));
            }
        }

        // Checks, where the normalizer writes a line for the frame.
        let Some(line) = transcript.lines.iter().find(|l| l.frame == Some(index)) else {
            continue;
        };
        let texts: Vec<String> = option_texts(&line.text)
            .into_iter()
            .filter(|t| is_sustain_text(t))
            .collect();
        if texts.len() != options.len() {
            errors.push(format!(
                "{at}: transcript line has {} sustain options, tshark {}: {}",
                texts.len(),
                options.len(),
                line.text
            ));
            continue;
        }
        for (text, got) in texts.iter().zip(&options) {
            for (field, value) in verdicts(text) {
                let values = got.values(field);
                if values != [value] {
                    errors.push(format!(
                        "{at}: {field} = {values:?}, normalizer {value} ({text})"
                    ));
                }
                tally.checks.push((field, value));
            }
        }
    }
    tally
}

#[test]
fn dissector_agrees_with_the_normalizer_on_every_golden_capture() {
    let Some(tshark) =
        tshark_or_skip("dissector_agrees_with_the_normalizer_on_every_golden_capture")
    else {
        return;
    };
    let mut errors = Vec::new();
    let mut total = Tally::default();
    let mut files = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("pcaps"))
        .expect("pcaps/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        for file in capture_files(&dir).expect("capture files") {
            // Two passes (`-2`): the first has no protocol tree, as in Wireshark's first
            // pass, so the dissector must follow connections from the frames' bytes.
            let tally = compare_file(&tshark, &file, &["-2"], &mut errors);
            files += 1;
            total.frames += tally.frames;
            total.options += tally.options;
            total.checks.extend(tally.checks);
        }
    }
    eprintln!(
        "compared {files} captures: {} TCP frames, {} sustain options, {} checks \
         (MAC ok {}, MAC BAD {}, MAC unknown {}, token ok {}, nonce ok {}, replays {})",
        total.frames,
        total.options,
        total.checks.len(),
        total.count("sustain.mac_status", "ok"),
        total.count("sustain.mac_status", "BAD"),
        total.count("sustain.mac_status", "unknown"),
        total.count("sustain.token_status", "ok"),
        total.count("sustain.nonce_status", "ok"),
        total.count("sustain.replay", "1"),
    );
    assert!(
        errors.is_empty(),
        "{} disagreements between tshark and the crate, first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(files > 0, "no golden captures in pcaps/");
    // The golden captures hold moves and forgeries: both verdicts must have been
    // compared, or the comparison proved nothing about MACs.
    assert!(
        total.count("sustain.mac_status", "ok") > 0 && total.count("sustain.mac_status", "BAD") > 0,
        "no verified and no forged MAC compared"
    );
}

// ---------------------------------------------------------------------------
// A synthetic capture from PROTOCOL.md's example bytes
// ---------------------------------------------------------------------------

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// An Ethernet/IPv4/TCP frame; options padded with End of Option List.
fn tcp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let tcp_len = 20 + opts.len();
    let total = u16::try_from(20 + tcp_len + payload.len()).expect("frame size");
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend(src.ip().octets());
    ip.extend(dst.ip().octets());
    Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    frame.extend(ip);
    frame.extend(src.port().to_be_bytes());
    frame.extend(dst.port().to_be_bytes());
    frame.extend(seq.to_be_bytes());
    frame.extend(ack.to_be_bytes());
    frame.push(((tcp_len / 4) as u8) << 4);
    frame.push(flags);
    frame.extend([0xff, 0xff, 0, 0, 0, 0]);
    frame.extend(opts);
    frame.extend(payload);
    frame
}

/// A classic pcap file (Ethernet, microseconds), one millisecond between frames.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        let len = u32::try_from(frame.len()).expect("frame size");
        out.extend(1_700_000_000u32.to_le_bytes());
        out.extend((u32::try_from(i).expect("few frames") * 1000).to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(frame);
    }
    std::fs::write(path, out).expect("writing the synthetic capture");
}

fn sa(text: &str) -> SocketAddrV4 {
    text.parse().expect("socket address")
}

// PROTOCOL.md §3.7 and §4.6: key_A = 0123456789abcdef moving from 192.0.2.10:51234,
// key_B = fedcba9876543210 (B here at 198.51.100.20:5001, the lab's port).
const PERMIT_A_SYN: &str = "fd125e9ac000020ac8220123456789abcdef";
const PERMIT_B_SYNACK: &str = "fd125e9ac63364141389fedcba9876543210";
const PERMIT_A_MSYN: &str = "fd0a5e9ac000020ac822";
const MIGRATE_MSYN_R1: &str = "fd140a2118f9781b00000001816173d7179a9da9";
const MSYN_ACK_V0: &str = "fd180a2155c53f5d000000015eed1234cd52ba2a401814f9";
const CONFIRM_V0: &str = "fd0c0a21000000015eed1234";
const MSYN_ACK_V1: &str = "fd1b0a2155c53f5d000000015eed12340123453faf2fdd12c25ba0";
const CONFIRM_V1: &str = "fd100a21000000015eed1234000002d0";
const ADDRESS_UPDATE_R2: &str = "fd183b4cc633640718f9781b00000002f6be63c2fe112155";

// PROTOCOL.md §15.13.
const CTL_REGISTER: &str = "0101004255c53f5d18f9781b0000000000019822bf35a126962294dfdd498e89
    021dc000020ac822c63364141f9000000000fdc7a10c6aaa07b1f1273d80c6524d16";
const CTL_MOVE_REPORT: &str = "0102004055c53f5d18f9781b000000000002c000020ac822000000000000c633
    64141f90c63364141f90cb007105c822f1a1c6c985e1b8ab9125ae855a6d2a9f";
const CTL_ACK: &str = "0181002855c53f5d18f9781b000000000001000000010100bcd6ff1feea90df1
    006043fd845e60de";
const CTL_PEER_LOCATION: &str = "0182002e55c53f5d18f9781b01000000000200000000cb007105c82201002d95
    06e0f354c54fb239fc8ceb25c9e5";
const CTL_RELAY_ASSIGNMENT: &str =
    "0183004255c53f5d18f9781b00000000000300000002c63364639c40deadbeef
    42424242424242424242424242424242001e172fce401f26d8b7e9720b0fbcf5
    30e6";
const CTL_UNREGISTER: &str = "0103002255c53f5d18f9781b000000000003dc2a98e17d2a850241f473bdefb6f9fb";
const CTL_ERROR_REPLAYED: &str = "01ff0012080255c53f5d18f9781b00000002";

fn flip_last(hex_text: &str) -> Vec<u8> {
    let mut bytes = unhex(hex_text);
    *bytes.last_mut().expect("bytes") ^= 1;
    bytes
}

/// Options: concatenated option byte strings.
fn opts(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The synthetic capture and the control messages it carries (host's and server's).
fn synthetic_capture(path: &Path) -> Vec<Vec<u8>> {
    let a = sa("192.0.2.10:51234");
    let b = sa("198.51.100.20:5001");
    let a_new = sa("203.0.113.5:51234");
    let a_update = sa("203.0.113.9:51234");
    let forger = sa("198.51.100.66:40000");
    let host = sa("192.0.2.10:40001");
    let server = sa("192.0.2.99:7001");
    let mss = unhex("020405b4");
    let (isn_a, isn_b) = (1000u32, 5000u32);
    let mut frames = vec![
        tcp_frame(
            a,
            b,
            isn_a,
            0,
            SYN,
            &opts(&[&mss, &unhex(PERMIT_A_SYN)]),
            &[],
        ),
        tcp_frame(
            b,
            a,
            isn_b,
            isn_a + 1,
            SYN | ACK,
            &opts(&[&mss, &unhex(PERMIT_B_SYNACK)]),
            &[],
        ),
        tcp_frame(a, b, isn_a + 1, isn_b + 1, ACK, &[], &[]),
        // Transfer data on the lab's port: claimed as opaque data, not guessed.
        tcp_frame(
            a,
            b,
            isn_a + 1,
            isn_b + 1,
            ACK,
            &[],
            &[0x80, 1, 0, 2, 0, 0, 0, 1, b'x'],
        ),
        // The move: MSYN r=1, MSYN-ACK with received offset, Confirm with offset.
        tcp_frame(
            a_new,
            b,
            isn_a + 100,
            0,
            SYN,
            &opts(&[&mss, &unhex(MIGRATE_MSYN_R1), &unhex(PERMIT_A_MSYN)]),
            &[],
        ),
        tcp_frame(
            b,
            a_new,
            isn_b + 50,
            isn_a + 101,
            SYN | ACK,
            &unhex(MSYN_ACK_V1),
            &[],
        ),
        tcp_frame(
            a_new,
            b,
            isn_a + 101,
            isn_b + 51,
            ACK,
            &unhex(CONFIRM_V1),
            &[0; 4],
        ),
        // Version 0 forms (still accepted).
        tcp_frame(
            b,
            a_new,
            isn_b + 50,
            isn_a + 101,
            SYN | ACK,
            &unhex(MSYN_ACK_V0),
            &[],
        ),
        tcp_frame(
            a_new,
            b,
            isn_a + 105,
            isn_b + 51,
            ACK,
            &unhex(CONFIRM_V0),
            &[0; 4],
        ),
        // The MSYN again with one MAC bit flipped: a replay, and forged.
        tcp_frame(
            forger,
            b,
            isn_a + 100,
            0,
            SYN,
            &opts(&[&flip_last(MIGRATE_MSYN_R1), &unhex(PERMIT_A_MSYN)]),
            &[],
        ),
        // An MSYN naming a token nobody has: nothing to check it with.
        tcp_frame(
            forger,
            b,
            7,
            0,
            SYN,
            &opts(&[
                &unhex("fd140a21deadbeef000000090001020304050607"),
                &unhex(PERMIT_A_MSYN),
            ]),
            &[],
        ),
        // An MSYN-ACK with a wrong token and a Confirm with a wrong nonce.
        tcp_frame(
            b,
            a_new,
            isn_b + 50,
            isn_a + 101,
            SYN | ACK,
            &unhex("fd1b0a2155c53f5e000000015eed12340123453faf2fdd12c25ba0"),
            &[],
        ),
        tcp_frame(
            a_new,
            b,
            isn_a + 109,
            isn_b + 51,
            ACK,
            &unhex("fd100a21000000015eed1235000002d0"),
            &[],
        ),
        // Continuation mode: Address-Update r=2 from a new address, then a forged one.
        tcp_frame(
            a_update,
            b,
            isn_a + 120,
            isn_b + 51,
            ACK,
            &unhex(ADDRESS_UPDATE_R2),
            &[0; 8],
        ),
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &flip_last(ADDRESS_UPDATE_R2),
            &[],
        ),
        // Malformed and foreign options.
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &opts(&[&unhex("fd130a21"), &[0; 15]]),
            &[],
        ),
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &unhex("fd08beefdeadbeef"),
            &[],
        ),
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &unhex("fd10ab48deadbeef0102030405060708"),
            &[],
        ),
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &unhex("fd0cab480102030405060708"),
            &[],
        ),
        // PROTOCOL.md §3.7: both Relay-Ticket forms (misplaced on an ACK).
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &unhex("fd14ab48deadbeef0000000249cdd0beea2f39e1"),
            &[],
        ),
        tcp_frame(
            a_update,
            b,
            isn_a + 128,
            isn_b + 51,
            ACK,
            &opts(&[
                &unhex("fd1bab48deadbeef000000025eed1234012345dad7f1e1010edf92"),
                &[0],
            ]),
            &[],
        ),
        tcp_frame(
            a,
            b,
            1,
            0,
            SYN,
            &opts(&[&mss, &unhex("fd095e9a0000000000")]),
            &[],
        ),
    ];
    // The mobility server's control session (PROTOCOL.md §15.13), two messages in
    // the first segment.
    let host_msgs = [
        unhex(CTL_REGISTER),
        unhex(CTL_MOVE_REPORT),
        unhex(CTL_UNREGISTER),
        flip_last(CTL_UNREGISTER),
    ];
    let server_msgs = [
        unhex(CTL_ACK),
        unhex(CTL_PEER_LOCATION),
        unhex(CTL_RELAY_ASSIGNMENT),
        unhex(CTL_ERROR_REPLAYED),
    ];
    let (isn_h, isn_s) = (20_000u32, 30_000u32);
    frames.push(tcp_frame(host, server, isn_h, 0, SYN, &mss, &[]));
    frames.push(tcp_frame(
        server,
        host,
        isn_s,
        isn_h + 1,
        SYN | ACK,
        &mss,
        &[],
    ));
    let mut h_seq = isn_h + 1;
    let mut s_seq = isn_s + 1;
    let first: Vec<u8> = [host_msgs[0].clone(), host_msgs[1].clone()].concat();
    frames.push(tcp_frame(host, server, h_seq, s_seq, ACK, &[], &first));
    h_seq += first.len() as u32;
    for msg in &server_msgs {
        frames.push(tcp_frame(server, host, s_seq, h_seq, ACK, &[], msg));
        s_seq += msg.len() as u32;
    }
    // The Unregister split over two segments (reassembled), then the forged one.
    for part in [&host_msgs[2][..10], &host_msgs[2][10..], &host_msgs[3][..]] {
        frames.push(tcp_frame(host, server, h_seq, s_seq, ACK, &[], part));
        h_seq += part.len() as u32;
    }
    write_pcap(path, &frames);
    host_msgs.iter().chain(&server_msgs).cloned().collect()
}

#[test]
fn dissector_decodes_every_form_and_control_message_like_the_crate() {
    let Some(tshark) =
        tshark_or_skip("dissector_decodes_every_form_and_control_message_like_the_crate")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sustain-wireshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let file = dir.join("vectors.pcap");
    let messages = synthetic_capture(&file);

    // Options: the same comparison as for the golden captures...
    let mut errors = Vec::new();
    // One pass (a protocol tree throughout) and two (`-2`: none in the first).
    compare_file(&tshark, &file, &["-2"], &mut errors);
    let tally = compare_file(&tshark, &file, &[], &mut errors);
    assert!(
        errors.is_empty(),
        "disagreements on the synthetic capture:\n{}",
        errors.join("\n")
    );
    // ...which must have covered every verdict, so that agreement means something:
    // the normalizer verifies PROTOCOL.md's vectors (ok), catches the flipped bits
    // (BAD), the wrong token and nonce, and the replay.
    for (field, value, at_least) in [
        ("sustain.mac_status", "ok", 4),
        ("sustain.mac_status", "BAD", 2),
        ("sustain.mac_status", "unknown", 1),
        ("sustain.token_status", "ok", 4),
        ("sustain.token_status", "WRONG", 1),
        ("sustain.token_status", "unknown", 1),
        ("sustain.nonce_status", "ok", 2),
        ("sustain.nonce_status", "WRONG", 1),
        ("sustain.replay", "1", 1),
    ] {
        assert!(
            tally.count(field, value) >= at_least,
            "{field} = {value} compared {} times, expected at least {at_least}: {:?}",
            tally.count(field, value),
            tally.checks
        );
    }

    // Control messages: tshark's fields against the crate's parser, and its MAC
    // verdicts against the crate's verification under the credentials of the keys.
    let packets = run_tshark(&tshark, &file, &[]);
    let mut shown: Vec<(usize, Vec<Field>)> = Vec::new();
    for packet in &packets {
        // Each message is a `sustainctl` protocol item; its fields follow it.
        let mut current: Option<Vec<Field>> = None;
        for field in &packet.fields {
            if field.name == "sustainctl" {
                if let Some(done) = current.take() {
                    shown.push((packet.number, done));
                }
                current = Some(Vec::new());
            } else if field.name.starts_with("sustainctl.") {
                if let Some(fields) = current.as_mut() {
                    fields.push(field.clone());
                }
            }
        }
        if let Some(done) = current {
            shown.push((packet.number, done));
        }
    }
    assert_eq!(
        shown.len(),
        messages.len(),
        "control messages shown: {shown:?}"
    );
    let creds = Credentials::derive(&ConnectionKeys {
        local: Key(0x0123_4567_89ab_cdef),
        remote: Key(0xfedc_ba98_7654_3210),
    })
    .expect("distinct keys");
    // tshark shows them in capture order: host's first segment, server's, host's rest.
    let order = [0usize, 1, 4, 5, 6, 7, 2, 3];
    for (i, &m) in order.iter().enumerate() {
        let bytes = &messages[m];
        let (frame, fields) = &shown[i];
        let value = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|f| f.name == name)
                .map(|f| plain(&f.show))
                .collect()
        };
        let at = format!("frame {frame}, message {m}");
        let msg = Message::new_checked(&bytes[..]).expect("vector is a whole message");
        assert_eq!(
            value("sustainctl.type"),
            [format!("0x{:02x}", msg.raw_type())],
            "{at}"
        );
        assert_eq!(
            value("sustainctl.length"),
            [msg.length().to_string()],
            "{at}"
        );
        if msg.msg_type() == Some(MessageType::Error) {
            let reply = ErrorReply::parse(&msg).expect("error vector");
            assert_eq!(
                value("sustainctl.error.code"),
                [reply.code.to_wire().to_string()],
                "{at}"
            );
            assert_eq!(
                value("sustainctl.error.type"),
                [format!("0x{:02x}", reply.offending_type)],
                "{at}"
            );
            assert_eq!(
                value("sustainctl.error.id"),
                [format!("0x{:016x}", reply.conn.0)],
                "{at}"
            );
            assert_eq!(
                value("sustainctl.error.number"),
                [reply.number.to_string()],
                "{at}"
            );
            continue;
        }
        let repr = ControlRepr::parse(&msg).expect("vector parses");
        assert_eq!(
            value("sustainctl.id"),
            [format!("0x{:016x}", repr.header.conn.0)],
            "{at}"
        );
        assert_eq!(
            value("sustainctl.side"),
            [msg.side_raw().to_string()],
            "{at}"
        );
        assert_eq!(
            value("sustainctl.number"),
            [repr.header.number.to_string()],
            "{at}"
        );
        assert_eq!(value("sustainctl.mac"), [hex(&msg.mac())], "{at}");
        let verdict = if msg.verify_mac(&creds.verifier) {
            "ok"
        } else {
            "bad"
        };
        assert_eq!(value("sustainctl.mac_status"), [verdict], "{at}");
        let addr = |a: SocketAddrV4| (a.ip().to_string(), a.port().to_string());
        let pair = |prefix: &str, a: SocketAddrV4| {
            let (ip, port) = addr(a);
            assert_eq!(
                value(&format!("sustainctl.{prefix}.addr")),
                [ip],
                "{at} {prefix}"
            );
            assert_eq!(
                value(&format!("sustainctl.{prefix}.port")),
                [port],
                "{at} {prefix}"
            );
        };
        match repr.body {
            Body::Register(r) => {
                assert_eq!(value("sustainctl.verifier"), [hex(&r.verifier.0)], "{at}");
                pair("direct", r.direct);
                pair("peer_seen", r.peer_seen);
                assert_eq!(
                    value("sustainctl.last_notice"),
                    [r.last_notice.to_string()],
                    "{at}"
                );
            }
            Body::MoveReport(r) => {
                pair("old_direct", r.old_direct);
                pair("old_seen", r.old_seen);
                pair("peer_direct", r.old_peer_direct);
                pair("peer_seen", r.old_peer_seen);
                pair("new_direct", r.new_direct);
            }
            Body::Unregister => {}
            Body::Ack(r) => {
                assert_eq!(
                    value("sustainctl.ack.request"),
                    [r.request.to_string()],
                    "{at}"
                );
                assert_eq!(
                    value("sustainctl.ack.outcome"),
                    [msg.body()[4].to_string()],
                    "{at}"
                );
            }
            Body::PeerLocation(r) => {
                assert_eq!(value("sustainctl.cause"), [r.request.to_string()], "{at}");
                pair("target", r.target);
                let flags = u8::from(r.you_behind_napt) | u8::from(r.peer_behind_napt) << 1;
                assert_eq!(
                    value("sustainctl.flags"),
                    [format!("0x{flags:02x}")],
                    "{at}"
                );
            }
            Body::RelayAssignment(r) => {
                assert_eq!(value("sustainctl.cause"), [r.request.to_string()], "{at}");
                pair("proxy", r.proxy);
                assert_eq!(
                    value("sustainctl.ticket.id"),
                    [format!("0x{:08x}", r.ticket_id)],
                    "{at}"
                );
                assert_eq!(value("sustainctl.ticket.key"), [hex(&r.ticket_key)], "{at}");
                assert_eq!(
                    value("sustainctl.ticket.lifetime"),
                    [r.lifetime_secs.to_string()],
                    "{at}"
                );
            }
        }
    }

    // The transfer port's payload is claimed as opaque data (never Thrift).
    let data_frame = &packets[3];
    assert!(data_frame.has("sustaindata"), "transfer data not claimed");
    assert!(
        !packets.iter().any(|p| p.has("thrift")),
        "Thrift guessed in the synthetic capture"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
