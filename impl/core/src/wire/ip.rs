//! IPv4 (RFC 791) around TCP. etherparse provides the checked header view.

use core::net::Ipv4Addr;

use etherparse::err::ipv4::{HeaderError, HeaderSliceError};
use etherparse::{IpNumber, Ipv4Header, Ipv4HeaderSlice};

use super::{checksum, TcpRepr, WireError, MAX_OPTIONS_LEN, TCP_HEADER_LEN};

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
///
/// Checks in this order, first failure wins: at least 20 bytes
/// (`Truncated`), version 4 (`NotIpv4`), IHL >= 5 (`BadIpHeaderLength`, in
/// bytes: IHL * 4), the whole header present (`Truncated`), header checksum
/// (`BadIpChecksum`), header length <= total length <= bytes given
/// (`BadIpTotalLength`), not a fragment (`Fragment`), protocol 6 (`NotTcp`),
/// then [`TcpRepr::parse`] on the bytes between header and total length.
/// IP options are skipped, not interpreted.
pub fn parse_ipv4_tcp(packet: &[u8]) -> Result<(Ipv4Repr, TcpRepr<'_>), WireError> {
    let header = Ipv4HeaderSlice::from_slice(packet).map_err(|err| match err {
        HeaderSliceError::Len(len) => WireError::Truncated {
            needed: len.required_len,
            have: len.len,
        },
        HeaderSliceError::Content(HeaderError::UnexpectedVersion { version_number }) => {
            WireError::NotIpv4(version_number)
        }
        HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { ihl }) => {
            WireError::BadIpHeaderLength(usize::from(ihl) * 4)
        }
    })?;
    let header_len = header.slice().len();
    // RFC 791 §3.1: the checksum covers the header only, options included.
    if !checksum::verifies(checksum::of_slice(header.slice())) {
        return Err(WireError::BadIpChecksum);
    }
    let total = usize::from(header.total_len());
    // RFC 791 §3.1: Total Length counts header and data. A link layer may
    // pad short frames (Ethernet's 60-byte minimum), so extra bytes after it
    // are dropped; fewer bytes than it claims means the packet was cut.
    if total < header_len || total > packet.len() {
        return Err(WireError::BadIpTotalLength {
            total,
            have: packet.len(),
        });
    }
    // RFC 791 §3.2: a fragment has MF set or a non-zero offset. sustain does
    // not reassemble (it sends with DF and its segments fit the path MTU).
    if header.more_fragments() || header.fragments_offset().value() != 0 {
        return Err(WireError::Fragment);
    }
    let protocol = header.protocol();
    if protocol != IpNumber::TCP {
        return Err(WireError::NotTcp(protocol.0));
    }
    let segment = packet.get(header_len..total).unwrap_or_default();
    let src = header.source_addr();
    let dst = header.destination_addr();
    let tcp = TcpRepr::parse(src, dst, segment)?;
    let ip = Ipv4Repr {
        src,
        dst,
        ttl: header.ttl(),
        ident: header.identification(),
        dont_fragment: header.dont_fragment(),
    };
    Ok((ip, tcp))
}

/// Bytes `emit_ipv4_tcp` writes for this segment.
pub fn ipv4_tcp_len(tcp: &TcpRepr) -> usize {
    IPV4_HEADER_LEN + tcp.buffer_len()
}

/// Writes a complete IPv4 packet (header with checksum, TCP with checksum)
/// to `buf`; returns its length.
///
/// Errors, with nothing written: `OptionsTooLong` as for
/// [`TcpRepr::emit`], `PayloadTooLarge` (carrying the TCP payload length) if
/// the packet would exceed 65535 bytes, `BufferTooSmall` if `buf` is short.
pub fn emit_ipv4_tcp(ip: &Ipv4Repr, tcp: &TcpRepr, buf: &mut [u8]) -> Result<usize, WireError> {
    let options_len = tcp.options_len();
    if options_len > MAX_OPTIONS_LEN {
        return Err(WireError::OptionsTooLong(options_len));
    }
    let total = IPV4_HEADER_LEN + TCP_HEADER_LEN + options_len + tcp.payload.len();
    // RFC 791 §3.1: Total Length is 16 bits.
    let Ok(total_len) = u16::try_from(total) else {
        return Err(WireError::PayloadTooLarge(tcp.payload.len()));
    };
    let have = buf.len();
    let Some(out) = buf.get_mut(..total) else {
        return Err(WireError::BufferTooSmall {
            needed: total,
            have,
        });
    };
    let (header_out, segment_out) = out.split_at_mut(IPV4_HEADER_LEN);
    tcp.emit(ip.src, ip.dst, segment_out)?;

    let mut header = Ipv4Header {
        total_len,
        identification: ip.ident,
        dont_fragment: ip.dont_fragment,
        more_fragments: false,
        time_to_live: ip.ttl,
        protocol: IpNumber::TCP,
        source: ip.src.octets(),
        destination: ip.dst.octets(),
        ..Ipv4Header::default()
    };
    header.header_checksum = header.calc_header_checksum();
    // No IP options, so `to_bytes` is exactly the 20-byte header.
    header_out.copy_from_slice(&header.to_bytes());
    Ok(total)
}

/// Where the TCP header of an IPv4/TCP packet starts, once the IPv4 header
/// (its IHL, at least 20 bytes) and the TCP header up to its checksum are
/// all there: what the in-place rewrites below may touch. Never panics.
fn tcp_header_offset(packet: &[u8]) -> Result<usize, WireError> {
    let first = *packet.first().ok_or(WireError::Truncated {
        needed: IPV4_HEADER_LEN,
        have: 0,
    })?;
    if first >> 4 != 4 {
        return Err(WireError::NotIpv4(first >> 4));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(WireError::BadIpHeaderLength(ihl));
    }
    let needed = ihl + 18;
    if packet.len() < needed {
        return Err(WireError::Truncated {
            needed,
            have: packet.len(),
        });
    }
    if packet[9] != 6 {
        return Err(WireError::NotTcp(packet[9]));
    }
    Ok(ihl)
}

/// Rewrites the addresses and ports of an IPv4/TCP packet in place and
/// updates both checksums incrementally (RFC 1624 eqn. 3): what a NAPT or
/// the relay's splice does (PROTOCOL.md §6.9). Nothing else changes: TTL,
/// sequence numbers, options and payload stay as they are.
///
/// Length-checked, never panics: `Truncated` if the IPv4 header (its IHL)
/// or the TCP ports and checksum are not all there, `NotIpv4` / `NotTcp`
/// for other packets. The caller has parsed the packet already
/// ([`parse_ipv4_tcp`]), so its checksums verified before the update.
pub fn rewrite_ipv4_tcp_endpoints(
    packet: &mut [u8],
    src: core::net::SocketAddrV4,
    dst: core::net::SocketAddrV4,
) -> Result<(), WireError> {
    let ihl = tcp_header_offset(packet)?;
    let word = |p: &[u8], at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let old_addrs: [u16; 4] = [
        word(packet, 12),
        word(packet, 14),
        word(packet, 16),
        word(packet, 18),
    ];
    let old_ports: [u16; 2] = [word(packet, ihl), word(packet, ihl + 2)];
    let s = src.ip().octets();
    let d = dst.ip().octets();
    let new_addrs: [u16; 4] = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
    ];
    let new_ports = [src.port(), dst.port()];
    packet[12..16].copy_from_slice(&s);
    packet[16..20].copy_from_slice(&d);
    packet[ihl..ihl + 2].copy_from_slice(&src.port().to_be_bytes());
    packet[ihl + 2..ihl + 4].copy_from_slice(&dst.port().to_be_bytes());
    let ip_sum = incremental(word(packet, 10), &old_addrs, &new_addrs);
    packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let old_tcp = [
        old_addrs[0],
        old_addrs[1],
        old_addrs[2],
        old_addrs[3],
        old_ports[0],
        old_ports[1],
    ];
    let new_tcp = [
        new_addrs[0],
        new_addrs[1],
        new_addrs[2],
        new_addrs[3],
        new_ports[0],
        new_ports[1],
    ];
    let tcp_sum = incremental(word(packet, ihl + 16), &old_tcp, &new_tcp);
    packet[ihl + 16..ihl + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    Ok(())
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') over every changed word.
fn incremental(checksum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!checksum);
    for &o in old {
        sum += u32::from(!o);
    }
    for &n in new {
        sum += u32::from(n);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the ACK field and window of an IPv4/TCP packet in place and
/// updates the TCP checksum incrementally (RFC 1624): the relay's ACK
/// clamp towards a leg that has just moved (PROTOCOL.md §6.9). Same checks
/// and errors as [`rewrite_ipv4_tcp_endpoints`].
pub fn rewrite_ipv4_tcp_ack(packet: &mut [u8], ack: u32, window: u16) -> Result<(), WireError> {
    let ihl = tcp_header_offset(packet)?;
    let t = ihl;
    let word = |p: &[u8], at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let old = [
        word(packet, t + 8),
        word(packet, t + 10),
        word(packet, t + 14),
    ];
    let a = ack.to_be_bytes();
    let new = [
        u16::from_be_bytes([a[0], a[1]]),
        u16::from_be_bytes([a[2], a[3]]),
        window,
    ];
    packet[t + 8..t + 12].copy_from_slice(&a);
    packet[t + 14..t + 16].copy_from_slice(&window.to_be_bytes());
    let sum = incremental(word(packet, t + 16), &old, &new);
    packet[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn rewrites_refuse_short_bad_and_non_tcp_packets_without_panicking() {
        let ep = core::net::SocketAddrV4::new(core::net::Ipv4Addr::LOCALHOST, 1);
        let mut empty: [u8; 0] = [];
        assert!(matches!(
            rewrite_ipv4_tcp_endpoints(&mut empty, ep, ep),
            Err(WireError::Truncated { .. })
        ));
        // IHL 4 (16 bytes) would put the TCP header inside the IPv4 header.
        let mut bad_ihl = [0x44u8; 40];
        assert_eq!(
            rewrite_ipv4_tcp_ack(&mut bad_ihl, 1, 1),
            Err(WireError::BadIpHeaderLength(16))
        );
        let mut short = [0x45u8; 37];
        assert!(matches!(
            rewrite_ipv4_tcp_ack(&mut short, 1, 1),
            Err(WireError::Truncated { needed: 38, .. })
        ));
        let mut udp = [0u8; 40];
        udp[0] = 0x45;
        udp[9] = 17;
        assert_eq!(
            rewrite_ipv4_tcp_endpoints(&mut udp, ep, ep),
            Err(WireError::NotTcp(17))
        );
    }
}
