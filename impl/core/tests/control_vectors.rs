//! The test vectors of PROTOCOL.md §15.13, in both directions: the code
//! produces exactly the listed bytes, each listed message parses back to
//! its inputs and verifies, every single-bit flip of it fails, and every
//! hex string listed here appears in PROTOCOL.md (so the document cannot
//! drift from the code).

use core::net::SocketAddrV4;

use sustain_core::auth::{ConnectionKeys, Key};
use sustain_core::control::{
    Ack, Body, ControlRepr, ErrorCode, ErrorReply, Header, Incoming, MoveReport, Outcome,
    PeerLocation, Register, RelayAssignment, UNSPECIFIED,
};
use sustain_core::verifier::{Credentials, Side};

const KEY_A: Key = Key(0x0123_4567_89AB_CDEF);
const KEY_B: Key = Key(0xFEDC_BA98_7654_3210);

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn creds() -> Credentials {
    Credentials::derive(&ConnectionKeys {
        local: KEY_A,
        remote: KEY_B,
    })
    .unwrap()
}

/// (name, message, hex) for every authenticated type.
fn vectors() -> Vec<(&'static str, ControlRepr, &'static str)> {
    let c = creds();
    let h = |side, number| Header {
        conn: c.id,
        side,
        number,
    };
    vec![
        (
            "Register, A (low), request 1",
            ControlRepr {
                header: h(Side::Low, 1),
                body: Body::Register(Register {
                    verifier: c.verifier,
                    direct: sa("192.0.2.10:51234"),
                    peer_seen: sa("198.51.100.20:8080"),
                    last_notice: 0,
                }),
            },
            REGISTER,
        ),
        (
            "MoveReport, A (low), request 2",
            ControlRepr {
                header: h(Side::Low, 2),
                body: Body::MoveReport(MoveReport {
                    old_direct: sa("192.0.2.10:51234"),
                    old_seen: UNSPECIFIED,
                    old_peer_direct: sa("198.51.100.20:8080"),
                    old_peer_seen: sa("198.51.100.20:8080"),
                    new_direct: sa("203.0.113.5:51234"),
                }),
            },
            MOVE_REPORT,
        ),
        (
            "Unregister, A (low), request 3",
            ControlRepr {
                header: h(Side::Low, 3),
                body: Body::Unregister,
            },
            UNREGISTER,
        ),
        (
            "Ack to A, notice 1",
            ControlRepr {
                header: h(Side::Low, 1),
                body: Body::Ack(Ack {
                    request: 1,
                    outcome: Outcome::Registered,
                }),
            },
            ACK,
        ),
        (
            "PeerLocation to B (high), notice 2",
            ControlRepr {
                header: h(Side::High, 2),
                body: Body::PeerLocation(PeerLocation {
                    request: 0,
                    target: sa("203.0.113.5:51234"),
                    you_behind_napt: true,
                    peer_behind_napt: false,
                }),
            },
            PEER_LOCATION,
        ),
        (
            "RelayAssignment to A, notice 3",
            ControlRepr {
                header: h(Side::Low, 3),
                body: Body::RelayAssignment(RelayAssignment {
                    request: 2,
                    proxy: sa("198.51.100.99:40000"),
                    ticket_id: 0xDEAD_BEEF,
                    ticket_key: [0x42; 16],
                    lifetime_secs: 30,
                }),
            },
            RELAY_ASSIGNMENT,
        ),
        (
            "Ack Relayed to A, notice 4 (request 2)",
            ControlRepr {
                header: h(Side::Low, 4),
                body: Body::Ack(Ack {
                    request: 2,
                    outcome: Outcome::Relayed,
                }),
            },
            ACK_RELAYED,
        ),
    ]
}

const CONN_ID: &str = "55c53f5d18f9781b";
const VERIFIER: &str = "9822bf35a126962294dfdd498e89021d";
const REGISTER: &str = "0101004255c53f5d18f9781b0000000000019822bf35a126962294dfdd498e89021dc000020ac822c63364141f9000000000fdc7a10c6aaa07b1f1273d80c6524d16";
const MOVE_REPORT: &str = "0102004055c53f5d18f9781b000000000002c000020ac822000000000000c63364141f90c63364141f90cb007105c822f1a1c6c985e1b8ab9125ae855a6d2a9f";
const UNREGISTER: &str = "0103002255c53f5d18f9781b000000000003dc2a98e17d2a850241f473bdefb6f9fb";
const ACK: &str =
    "0181002855c53f5d18f9781b000000000001000000010100bcd6ff1feea90df1006043fd845e60de";
const PEER_LOCATION: &str =
    "0182002e55c53f5d18f9781b01000000000200000000cb007105c82201002d9506e0f354c54fb239fc8ceb25c9e5";
const RELAY_ASSIGNMENT: &str = "0183004255c53f5d18f9781b00000000000300000002c63364639c40deadbeef42424242424242424242424242424242001e172fce401f26d8b7e9720b0fbcf530e6";
const ACK_RELAYED: &str =
    "0181002855c53f5d18f9781b000000000004000000020700bf1d73c8bdc867556261abf341fb0960";
const ERROR: &str = "01ff0012080255c53f5d18f9781b00000002";

fn error_reply() -> ErrorReply {
    ErrorReply {
        code: ErrorCode::Replayed,
        offending_type: 0x02,
        conn: creds().id,
        number: 2,
    }
}

#[test]
fn credentials() {
    let c = creds();
    assert_eq!(format!("{:016x}", c.id.0), CONN_ID);
    assert_eq!(hex::encode(c.verifier.0), VERIFIER);
    let b = Credentials::derive(&ConnectionKeys {
        local: KEY_B,
        remote: KEY_A,
    })
    .unwrap();
    assert_eq!((b.id, b.verifier, b.side), (c.id, c.verifier, Side::High));
}

#[test]
fn messages_emit_exactly_the_listed_bytes() {
    let c = creds();
    for (name, repr, hex) in vectors() {
        assert_eq!(hex::encode(repr.to_vec(&c.verifier)), hex, "{name}");
    }
    assert_eq!(hex::encode(error_reply().to_vec()), ERROR);
}

#[test]
fn listed_bytes_parse_verify_and_resist_every_bit_flip() {
    let c = creds();
    for (name, repr, hex) in vectors() {
        let bytes = hex::decode(hex).unwrap();
        let (incoming, msg) = Incoming::parse(&bytes).unwrap();
        assert_eq!(incoming, Incoming::Control(repr), "{name}");
        assert!(msg.verify_mac(&c.verifier), "{name}");
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if let Ok((_, msg)) = Incoming::parse(&bad) {
                assert!(!msg.verify_mac(&c.verifier), "{name}: bit {bit}");
            }
        }
    }
    let bytes = hex::decode(ERROR).unwrap();
    assert_eq!(
        Incoming::parse(&bytes).unwrap().0,
        Incoming::Error(error_reply())
    );
}

#[test]
fn protocol_md_lists_every_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    // Hex in the document may be split into lines of at most 64 digits.
    let joined: String = doc.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let mut all = vec![CONN_ID, VERIFIER, ERROR];
    all.extend(vectors().into_iter().map(|(_, _, hex)| hex));
    for hex in all {
        let chunks: Vec<String> = hex
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert!(
            joined.contains(hex) || joined.contains(&chunks.join("\n")),
            "PROTOCOL.md §15.13 lacks {hex}"
        );
    }
}
