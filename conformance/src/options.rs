//! TCP options of a captured segment, decoded by name. Any byte sequence decodes: a
//! malformed option becomes a `Malformed` item (and ends the list, as it ends the
//! walk at a receiver), our ExIDs with a length none of their forms has become
//! `BadLength`, other ExIDs and kinds stay unknown with their length.

use sustain_core::wire::migrate::{
    AddressUpdate, MigrateOption, MigratePermit, RelayTicket, EXID_ADDRESS_UPDATE, EXID_MIGRATE,
    EXID_MIGRATE_PERMIT, EXID_RELAY_TICKET,
};
use sustain_core::wire::{TcpOption, TcpOptionIter};

/// One option as a transcript shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opt {
    Eol,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// The number of SACK blocks (their edges depend on what was lost).
    Sack(usize),
    /// Whether TSecr is zero (as in a SYN); the values themselves are clocks.
    Timestamps {
        ecr_zero: bool,
    },
    Permit(MigratePermit),
    Migrate(MigrateOption),
    AddressUpdate(AddressUpdate),
    /// Relay-Ticket in its MSYN or MSYN-ACK form (PROTOCOL.md §3.5).
    RelayTicket(RelayTicket),
    /// One of our ExIDs with a length none of its forms has (PROTOCOL.md §3.6 rule 2).
    BadLength {
        name: &'static str,
        len: usize,
    },
    /// An RFC 6994 option with an ExID that is not ours.
    Experimental {
        exid: u16,
        len: usize,
    },
    /// A kind nobody here interprets.
    Unknown {
        kind: u8,
        len: usize,
    },
    /// The walker's error (bad length, truncated); nothing after it is decoded.
    Malformed(String),
}

impl Opt {
    /// Whether this is one of sustain's options (any form, well-formed or not).
    pub fn is_sustain(&self) -> bool {
        matches!(
            self,
            Opt::Permit(_)
                | Opt::Migrate(_)
                | Opt::AddressUpdate(_)
                | Opt::RelayTicket(_)
                | Opt::BadLength { .. }
        )
    }

    /// Whether a transcript must show the segment for this option alone: ours, or
    /// anything malformed or unknown.
    pub fn is_notable(&self) -> bool {
        self.is_sustain()
            || matches!(
                self,
                Opt::Experimental { .. } | Opt::Unknown { .. } | Opt::Malformed(_)
            )
    }
}

/// Decodes an options area.
pub fn decode(bytes: &[u8]) -> Vec<Opt> {
    let mut out = Vec::new();
    for item in TcpOptionIter::new(bytes) {
        let option = match item {
            Ok(option) => option,
            Err(err) => {
                out.push(Opt::Malformed(err.to_string()));
                break;
            }
        };
        out.push(match option {
            TcpOption::EndOfList => Opt::Eol,
            TcpOption::NoOperation => Opt::Nop,
            TcpOption::MaxSegmentSize(mss) => Opt::Mss(mss),
            TcpOption::WindowScale(shift) => Opt::WindowScale(shift),
            TcpOption::SackPermitted => Opt::SackPermitted,
            TcpOption::Sack(blocks) => Opt::Sack(blocks.iter().flatten().count()),
            TcpOption::Timestamps(ts) => Opt::Timestamps {
                ecr_zero: ts.tsecr == 0,
            },
            TcpOption::Experimental(exp) => experimental(exp.exid, exp.data),
            TcpOption::Unknown { kind, data } => Opt::Unknown {
                kind,
                len: data.len() + 2,
            },
        });
    }
    out
}

fn experimental(exid: u16, data: &[u8]) -> Opt {
    // The whole option's length byte: kind, length, ExID, data.
    let len = data.len() + 4;
    match exid {
        EXID_MIGRATE_PERMIT => MigratePermit::parse(data).map_or(
            Opt::BadLength {
                name: "permit",
                len,
            },
            Opt::Permit,
        ),
        EXID_MIGRATE => MigrateOption::parse(data).map_or(
            Opt::BadLength {
                name: "migrate",
                len,
            },
            Opt::Migrate,
        ),
        EXID_ADDRESS_UPDATE => AddressUpdate::parse(data).map_or(
            Opt::BadLength {
                name: "address-update",
                len,
            },
            Opt::AddressUpdate,
        ),
        EXID_RELAY_TICKET => RelayTicket::parse(data).map_or(
            Opt::BadLength {
                name: "relay-ticket",
                len,
            },
            Opt::RelayTicket,
        ),
        _ => Opt::Experimental { exid, len },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn protocol_example_options_decode_by_name() {
        // PROTOCOL.md §3.7: A's Permit in its SYN, then A's Migrate in MSYN r=1.
        let mut bytes = hex("fd125e9ac000020ac8220123456789abcdef");
        bytes.extend(hex("fd140a2118f9781b00000001816173d7179a9da9"));
        let opts = decode(&bytes);
        assert_eq!(opts.len(), 2);
        match &opts[0] {
            Opt::Permit(permit) => {
                assert_eq!(permit.addr.to_string(), "192.0.2.10");
                assert_eq!(permit.port, 51234);
                assert_eq!(permit.key, Some(0x0123_4567_89ab_cdef));
            }
            other => panic!("{other:?}"),
        }
        match &opts[1] {
            Opt::Migrate(MigrateOption::Msyn(m)) => {
                assert_eq!(m.token, 0x18f9_781b);
                assert_eq!(m.request, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_foreign_options_are_named_not_dropped() {
        // kind 253 with length 1: the walk stops there.
        assert!(matches!(
            decode(&[1, 253, 1, 0, 0])[..],
            [Opt::Nop, Opt::Malformed(_)]
        ));
        // A length running past the end.
        assert!(matches!(decode(&[2, 4, 5])[..], [Opt::Malformed(_)]));
        // Unknown ExID with a valid length.
        assert_eq!(
            decode(&[253, 6, 0xbe, 0xef, 1, 2]),
            vec![Opt::Experimental {
                exid: 0xbeef,
                len: 6
            }]
        );
        // Migrate with a length none of its forms has (19).
        let mut bad = vec![253, 19, 0x0a, 0x21];
        bad.extend([0; 15]);
        assert_eq!(
            decode(&bad),
            vec![Opt::BadLength {
                name: "migrate",
                len: 19
            }]
        );
        // Relay-Ticket: 20 and 27 are its forms (PROTOCOL.md §3.7), the
        // provisional 16 is not.
        assert!(matches!(
            decode(&hex("fd14ab48deadbeef0000000249cdd0beea2f39e1"))[..],
            [Opt::RelayTicket(RelayTicket::Msyn(m))] if m.ticket == 0xdead_beef && m.request == 2
        ));
        assert!(matches!(
            decode(&hex("fd1bab48deadbeef000000025eed1234012345dad7f1e1010edf92"))[..],
            [Opt::RelayTicket(RelayTicket::MsynAck(a))]
                if a.nonce == 0x5eed_1234 && a.received == 0x012345
        ));
        assert_eq!(
            decode(&hex("fd10ab48deadbeef0102030405060708")),
            vec![Opt::BadLength {
                name: "relay-ticket",
                len: 16
            }]
        );
        assert_eq!(
            decode(&[99, 4, 0, 0]),
            vec![Opt::Unknown { kind: 99, len: 4 }]
        );
    }
}
