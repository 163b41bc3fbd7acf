//! The wire parsers on arbitrary bytes: an IPv4/TCP packet, and each of
//! sustain's options on its own. None may panic; whatever parses must emit
//! and parse back to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, AddressUpdate, MigrateOption, MigratePermit,
    MigrationOptions, RelayTicket,
};

fuzz_target!(|data: &[u8]| {
    if let Ok((ip, tcp)) = parse_ipv4_tcp(data) {
        let _ = MigrationOptions::from_repr(&tcp);
        let mut buf = vec![0u8; ipv4_tcp_len(&tcp)];
        if let Ok(n) = emit_ipv4_tcp(&ip, &tcp, &mut buf) {
            let (ip2, tcp2) = parse_ipv4_tcp(&buf[..n]).expect("what we emit parses");
            assert_eq!((ip2.src, ip2.dst), (ip.src, ip.dst));
            assert_eq!(tcp2.seq, tcp.seq);
            assert_eq!(tcp2.payload, tcp.payload);
        }
    }
    let _ = MigratePermit::parse(data);
    let _ = MigrateOption::parse(data);
    let _ = AddressUpdate::parse(data);
    let _ = RelayTicket::parse(data);
});
