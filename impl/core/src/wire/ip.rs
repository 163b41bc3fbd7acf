//! IPv4 (RFC 791) around TCP. etherparse provides the checked header view.

use core::net::Ipv4Addr;

use super::{TcpRepr, WireError};

pub const IPV4_HEADER_LEN: usize = 20;

/// The IPv4 fields sustain reads and writes. Emitted headers carry no IP
/// options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Repr {
        Ipv4Repr {
            src,
            dst,
            ttl: 64,
            ident: 0,
            dont_fragment: true,
        }
    }
}

/// Parses an IPv4 packet carrying TCP: checks version, header length and
/// checksum, total length (trailing bytes beyond it are ignored, fewer is an
/// error), rejects fragments and non-TCP, then parses the TCP segment.
pub fn parse_ipv4_tcp(packet: &[u8]) -> Result<(Ipv4Repr, TcpRepr<'_>), WireError> {
    let _ = packet;
    todo!("wire helper")
}

/// Bytes `emit_ipv4_tcp` writes for this segment.
pub fn ipv4_tcp_len(tcp: &TcpRepr) -> usize {
    IPV4_HEADER_LEN + tcp.buffer_len()
}

/// Writes a complete IPv4 packet (header with checksum, TCP with checksum)
/// to `buf`; returns its length.
pub fn emit_ipv4_tcp(ip: &Ipv4Repr, tcp: &TcpRepr, buf: &mut [u8]) -> Result<usize, WireError> {
    let _ = (ip, tcp, buf);
    todo!("wire helper")
}
