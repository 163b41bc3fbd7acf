//! Unit tests of the control wire format: round trips of every type,
//! exact lengths, every truncation and every single-byte corruption parse
//! to an error or to a message whose MAC fails, never a panic.

use core::net::SocketAddrV4;

use super::*;
use crate::auth::{ConnectionKeys, Key};
use crate::verifier::{Credentials, Side, Verifier};

fn creds() -> Credentials {
    Credentials::derive(&ConnectionKeys {
        local: Key(0x0123_4567_89AB_CDEF),
        remote: Key(0xFEDC_BA98_7654_3210),
    })
    .unwrap()
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

pub(crate) fn samples(c: &Credentials) -> Vec<ControlRepr> {
    let header = |number| Header {
        conn: c.id,
        side: c.side,
        number,
    };
    vec![
        ControlRepr {
            header: header(1),
            body: Body::Register(Register {
                verifier: c.verifier,
                direct: sa("192.0.2.10:51234"),
                peer_seen: sa("198.51.100.20:8080"),
                last_notice: 0,
            }),
        },
        ControlRepr {
            header: header(2),
            body: Body::MoveReport(MoveReport {
                old_direct: sa("192.0.2.10:51234"),
                old_seen: UNSPECIFIED,
                old_peer_direct: sa("198.51.100.20:8080"),
                old_peer_seen: sa("198.51.100.20:8080"),
                new_direct: sa("203.0.113.5:51234"),
            }),
        },
        ControlRepr {
            header: header(3),
            body: Body::Unregister,
        },
        ControlRepr {
            header: header(1),
            body: Body::Ack(Ack {
                request: 2,
                outcome: Outcome::PeerSends,
            }),
        },
        ControlRepr {
            header: header(2),
            body: Body::PeerLocation(PeerLocation {
                request: 0,
                target: sa("198.51.100.77:8080"),
                you_behind_napt: true,
                peer_behind_napt: false,
            }),
        },
        ControlRepr {
            header: header(3),
            body: Body::RelayAssignment(RelayAssignment {
                request: 2,
                proxy: sa("198.51.100.99:40000"),
                ticket_id: 0xDEAD_BEEF,
                ticket_key: [0x42; TICKET_KEY_LEN],
                lifetime_secs: 30,
            }),
        },
    ]
}

#[test]
fn every_type_round_trips_with_its_exact_length() {
    let c = creds();
    for repr in samples(&c) {
        let bytes = repr.to_vec(&c.verifier);
        assert_eq!(bytes.len(), repr.msg_type().message_len());
        assert_eq!(bytes.len(), repr.buffer_len());
        let (incoming, msg) = Incoming::parse(&bytes).unwrap();
        assert_eq!(incoming, Incoming::Control(repr), "{repr}");
        assert!(msg.verify_mac(&c.verifier));
        assert!(!msg.verify_mac(&Verifier([0; 16])));
        // Too small a buffer writes nothing and says so.
        let mut short = vec![0; bytes.len() - 1];
        assert!(matches!(
            repr.emit(&c.verifier, &mut short),
            Err(ControlError::BufferTooSmall { .. })
        ));
    }
    let lens: Vec<usize> = MessageType::ALL.iter().map(|t| t.message_len()).collect();
    assert_eq!(lens, [66, 64, 34, 40, 46, 66, 18]);
}

#[test]
fn error_reply_round_trips() {
    let e = ErrorReply {
        code: ErrorCode::Replayed,
        offending_type: 0x02,
        conn: creds().id,
        number: 7,
    };
    let bytes = e.to_vec();
    assert_eq!(bytes.len(), 18);
    let (incoming, msg) = Incoming::parse(&bytes).unwrap();
    assert_eq!(incoming, Incoming::Error(e));
    assert!(!msg.verify_mac(&creds().verifier));
    for v in 0..=255u8 {
        assert_eq!(ErrorCode::from_wire(v).to_wire(), v);
    }
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    let c = creds();
    for repr in samples(&c) {
        let bytes = repr.to_vec(&c.verifier);
        for cut in 0..bytes.len() {
            let err = Message::new_checked(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ControlError::Truncated { .. }),
                "{repr} cut {cut}: {err}"
            );
            assert_eq!(err.code(), ErrorCode::Truncated);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Message::new_checked(&longer[..]),
            Err(ControlError::TrailingBytes { .. })
        ));
    }
}

#[test]
fn header_errors_are_classified() {
    let c = creds();
    let good = samples(&c)[0].to_vec(&c.verifier);
    let mut bad = good.clone();
    bad[0] = 2;
    assert_eq!(
        Message::new_checked(&bad[..]).unwrap_err(),
        ControlError::UnknownVersion(2)
    );
    let mut bad = good.clone();
    bad[1] = 0x44;
    assert_eq!(
        Message::new_checked(&bad[..]).unwrap_err(),
        ControlError::UnknownType(0x44)
    );
    let mut bad = good.clone();
    bad[1] = MessageType::Unregister.to_wire();
    assert_eq!(
        Message::new_checked(&bad[..]).unwrap_err(),
        ControlError::BadLength {
            msg_type: 0x03,
            len: 66
        }
    );
    let mut bad = good.clone();
    bad[2..4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        Message::new_checked(&bad[..]).unwrap_err(),
        ControlError::Garbage(3)
    );
    let mut bad = good.clone();
    bad[2..4].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(
        Message::new_checked(&bad[..]).unwrap_err(),
        ControlError::Oversized(1000)
    );
    let mut bad = good.clone();
    bad[12] = 2;
    let msg = Message::new_checked(&bad[..]).unwrap();
    assert_eq!(ControlRepr::parse(&msg), Err(ControlError::BadSide(2)));
    let mut ack = samples(&c)[3].to_vec(&c.verifier);
    ack[22] = 99;
    let msg = Message::new_checked(&ack[..]).unwrap();
    assert_eq!(ControlRepr::parse(&msg), Err(ControlError::BadOutcome(99)));
}

#[test]
fn every_single_byte_corruption_is_caught() {
    let c = creds();
    for repr in samples(&c) {
        let bytes = repr.to_vec(&c.verifier);
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                // Either it no longer parses, or its MAC fails.
                if let Ok((Incoming::Control(_), msg)) = Incoming::parse(&bad) {
                    assert!(
                        !msg.verify_mac(&c.verifier),
                        "{repr}: byte {at} ^ {flip:#x}"
                    );
                }
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    use crate::rand::{Random, SplitMix64};
    let mut rng = SplitMix64::new(10);
    let c = creds();
    for _ in 0..20_000 {
        let len = (rng.next_u32() % 80) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if len >= 4 && rng.next_u32() & 1 == 0 {
            // Make the header plausible so the deeper checks run too.
            bytes[0] = VERSION;
            bytes[1] = MessageType::ALL[(rng.next_u32() % 7) as usize].to_wire();
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        if let Ok((Incoming::Control(_), msg)) = Incoming::parse(&bytes) {
            assert!(!msg.verify_mac(&c.verifier));
        }
        let mut fb = FrameBuffer::new();
        fb.push(&bytes);
        while let Ok(Some(frame)) = fb.next_frame() {
            let _ = Incoming::parse(&frame);
        }
    }
}

#[test]
fn a_host_message_does_not_verify_as_a_server_message() {
    // Register and RelayAssignment have the same length: relabelled, a
    // host's Register parses as a RelayAssignment, but the MAC label of
    // the other direction makes it fail.
    let c = creds();
    let mut bytes = samples(&c)[0].to_vec(&c.verifier);
    assert_eq!(bytes.len(), MessageType::RelayAssignment.message_len());
    bytes[1] = MessageType::RelayAssignment.to_wire();
    let (incoming, msg) = Incoming::parse(&bytes).unwrap();
    assert!(matches!(
        incoming,
        Incoming::Control(ControlRepr {
            body: Body::RelayAssignment(_),
            ..
        })
    ));
    assert!(!msg.verify_mac(&c.verifier));
    // Nor does it verify as a message of the other side.
    let mut other = samples(&c)[1].to_vec(&c.verifier);
    other[12] ^= 1;
    let (_, msg) = Incoming::parse(&other).unwrap();
    assert!(!msg.verify_mac(&c.verifier));
    let _ = Side::High;
}

#[test]
fn display_is_one_line() {
    let c = creds();
    let lines: Vec<String> = samples(&c).iter().map(ToString::to_string).collect();
    assert_eq!(
        lines[1],
        "move-report 55c53f5d:18f9781b low #2 192.0.2.10:51234 -> 203.0.113.5:51234 \
         (seen 0.0.0.0:0, peer 198.51.100.20:8080 seen 198.51.100.20:8080)"
    );
    assert!(lines.iter().all(|l| !l.contains('\n')));
}
