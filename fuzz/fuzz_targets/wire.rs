//! The wire parsers on arbitrary bytes: an IPv4/TCP packet, and each of
//! sustain's options on its own. None may panic; whatever parses must emit
//! and parse back to the same thing.
//!
//! Random bytes almost never carry a valid IPv4 header checksum, so the
//! packet is parsed twice: as it came (the checksum checks themselves), and
//! with both checksums made valid, so that mutations reach the TCP header,
//! option and Migrate-Permit parsers behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, AddressUpdate, Ipv4Packet, MigrateOption,
    MigratePermit, MigrationOptions, RelayTicket, TcpPacket, TCP_HEADER_LEN,
};

/// Parses `packet`; what parses must emit and parse back the same.
fn round_trip(packet: &[u8]) {
    if let Ok((ip, tcp)) = parse_ipv4_tcp(packet) {
        let _ = MigrationOptions::from_repr(&tcp);
        let mut buf = vec![0u8; ipv4_tcp_len(&tcp)];
        if let Ok(n) = emit_ipv4_tcp(&ip, &tcp, &mut buf) {
            let (ip2, tcp2) = parse_ipv4_tcp(&buf[..n]).expect("what we emit parses");
            assert_eq!((ip2.src, ip2.dst), (ip.src, ip.dst));
            assert_eq!(tcp2.seq, tcp.seq);
            assert_eq!(tcp2.payload, tcp.payload);
        }
    }
}

/// `data` with its IPv4 header checksum and its TCP checksum (over what the
/// total length holds) filled in, if the IPv4 lengths are whole.
fn with_valid_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = data.to_vec();
    let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let segment = ip.payload_mut();
    // The checksum field needs the fixed header; a bad data offset is left
    // for the parser to find.
    if segment.len() >= TCP_HEADER_LEN {
        TcpPacket::new_unchecked(segment).fill_checksum(src, dst);
    }
    ip.fill_checksum();
    Some(bytes)
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    if let Some(fixed) = with_valid_checksums(data) {
        round_trip(&fixed);
    }
    let _ = MigratePermit::parse(data);
    let _ = MigrateOption::parse(data);
    let _ = AddressUpdate::parse(data);
    let _ = RelayTicket::parse(data);
});
