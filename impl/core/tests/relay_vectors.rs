//! The relay test vectors of PROTOCOL.md §4.7 and §3.7, in both directions:
//! the code computes every listed value, the listed MACs verify and no
//! single-bit flip of them does, and every hex string listed here appears
//! in PROTOCOL.md.

use std::net::{Ipv4Addr, SocketAddrV4};

use sustain_core::relay::{RelaySecret, TicketId, TicketMacInput};
use sustain_core::wire::{OptionScratch, RelayMsyn, RelayMsynAck, RelayTicket};

const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const PORT: u16 = 40000;
const TICKET: TicketId = TicketId(0xdead_beef);
const MOVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 51234);
const REQUEST: u32 = 2;
const NONCE: u32 = 0x5eed_1234;
const RECEIVED: u32 = 0x01_2345;
/// The mover's RCV.NXT, in the relay MSYN's ACK field.
const RCV_NXT: u32 = 0x1234_5678;

const TICKET_KEY: &str = "786cd21991c97afc4c258f12d305da9e";
const MSYN_M: &str = "7375737461696e2052454c41592d4d53594e00deadbeef000000020a000002c82212345678";
const MSYN_MAC: &str = "49cdd0beea2f39e1";
const ACK_M: &str =
    "7375737461696e2052454c41592d4d53594e2d41434b00deadbeef000000025eed12340a000002c822012345";
const ACK_MAC: &str = "dad7f1e1010edf92";
const MSYN_OPTION: &str = "fd14ab48deadbeef0000000249cdd0beea2f39e1";
const ACK_OPTION: &str = "fd1bab48deadbeef000000025eed1234012345dad7f1e1010edf92";

fn secret() -> RelaySecret {
    RelaySecret::from_hex(SECRET).unwrap()
}

fn msyn_input() -> TicketMacInput {
    TicketMacInput::Msyn {
        ticket: TICKET,
        request: REQUEST,
        mover: MOVER,
        rcv_nxt: RCV_NXT,
    }
}

fn ack_input() -> TicketMacInput {
    TicketMacInput::MsynAck {
        ticket: TICKET,
        request: REQUEST,
        nonce: NONCE,
        mover: MOVER,
        received: RECEIVED,
    }
}

fn mac(hex_mac: &str) -> [u8; 8] {
    hex::decode(hex_mac).unwrap().try_into().unwrap()
}

fn option_hex(t: RelayTicket) -> String {
    let mut scratch = OptionScratch::default();
    let o = t.to_option(&mut scratch);
    let mut v = vec![253, 4 + o.data.len() as u8];
    v.extend_from_slice(&o.exid.to_be_bytes());
    v.extend_from_slice(o.data);
    hex::encode(v)
}

#[test]
fn computed_values_equal_the_listing() {
    let key = secret().ticket_key(PORT, TICKET);
    let computed = [
        ("TICKET_KEY", hex::encode(key.0)),
        ("MSYN_M", hex::encode(msyn_input().message())),
        ("MSYN_MAC", hex::encode(key.sign(&msyn_input()))),
        ("ACK_M", hex::encode(ack_input().message())),
        ("ACK_MAC", hex::encode(key.sign(&ack_input()))),
        (
            "MSYN_OPTION",
            option_hex(RelayTicket::Msyn(RelayMsyn {
                ticket: TICKET.0,
                request: REQUEST,
                mac: key.sign(&msyn_input()),
            })),
        ),
        (
            "ACK_OPTION",
            option_hex(RelayTicket::MsynAck(RelayMsynAck {
                ticket: TICKET.0,
                request: REQUEST,
                nonce: NONCE,
                received: RECEIVED,
                mac: key.sign(&ack_input()),
            })),
        ),
    ];
    for (name, value) in &computed {
        println!("{name} {value}");
    }
    let listed = [
        TICKET_KEY,
        MSYN_M,
        MSYN_MAC,
        ACK_M,
        ACK_MAC,
        MSYN_OPTION,
        ACK_OPTION,
    ];
    for ((name, value), literal) in computed.iter().zip(listed) {
        assert_eq!(value, literal, "{name}");
    }
}

#[test]
fn listed_macs_verify_and_no_bit_flip_does() {
    let key = secret().ticket_key(PORT, TICKET);
    for (input, listed) in [(msyn_input(), MSYN_MAC), (ack_input(), ACK_MAC)] {
        let m = mac(listed);
        assert!(key.verify(&input, &m));
        for bit in 0..64 {
            let mut flipped = m;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify(&input, &flipped), "bit {bit}");
        }
        // The neighbouring port's key does not verify it (§11.5: a ticket
        // is bound to its port).
        assert!(!secret().ticket_key(PORT + 1, TICKET).verify(&input, &m));
    }
    // The option bytes parse back to the same fields.
    let bytes = hex::decode(ACK_OPTION).unwrap();
    match RelayTicket::parse(&bytes[4..]).unwrap() {
        RelayTicket::MsynAck(a) => {
            assert_eq!(
                (a.ticket, a.request, a.nonce, a.received),
                (TICKET.0, REQUEST, NONCE, RECEIVED)
            );
            assert_eq!(a.mac, mac(ACK_MAC));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn protocol_md_lists_every_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for hex in [
        SECRET,
        TICKET_KEY,
        MSYN_M,
        MSYN_MAC,
        ACK_M,
        ACK_MAC,
        MSYN_OPTION,
        ACK_OPTION,
    ] {
        assert!(doc.contains(hex), "PROTOCOL.md §4.7 lacks {hex}");
    }
}
