//! Wire formats, smoltcp style: a view over bytes ([`Ipv4Packet`],
//! [`TcpPacket`]: `new_checked` is the door for untrusted bytes, checksums
//! are methods of the views) plus parsed `Repr`s with `parse` / `emit` /
//! `buffer_len`. Untrusted input is length-checked and never panics. One
//! Internet checksum (RFC 1071) serves everything: the views' and
//! [`internet_checksum`] for other protocols.

mod bytes;
mod checksum;
mod error;
pub mod ip;
pub mod migrate;
pub mod options;
pub mod seq;
pub mod tcp;

pub use checksum::internet_checksum;
pub use error::WireError;
pub use ip::{
    complete_ipv4_tcp_checksum, emit_ipv4_tcp, emit_ipv4_tcp_with, ipv4_tcp_len, parse_ipv4_tcp,
    rewrite_ipv4_tcp_ack, rewrite_ipv4_tcp_endpoints, rewrite_ipv4_tcp_seq, Ipv4Packet, Ipv4Repr,
    IPV4_HEADER_LEN, PROTOCOL_TCP,
};
pub use migrate::{
    AddressUpdate, Migrate, MigrateAck, MigrateConfirm, MigrateOption, MigratePermit,
    MigrationOptions, MigrationScratch, OptionScratch, RelayMsyn, RelayMsynAck, RelayTicket,
    EXID_ADDRESS_UPDATE, EXID_MIGRATE, EXID_MIGRATE_PERMIT, EXID_RELAY_TICKET, MAX_ACK_RECEIVED,
};
pub use options::{
    ExperimentalOption, SackBlock, TcpOption, TcpOptionIter, Timestamps, EXPERIMENTAL_KIND,
    MAX_OPTIONS_LEN,
};
pub use seq::SeqNumber;
pub use tcp::{Checksum, TcpFlags, TcpPacket, TcpRepr, MAX_EXPERIMENTAL_OPTIONS, TCP_HEADER_LEN};
