//! IPv4 (RFC 791 §3.1) around TCP: the [`Ipv4Packet`] view over bytes and
//! the [`Ipv4Repr`] of the fields sustain reads and writes, smoltcp style.

use core::net::{Ipv4Addr, SocketAddrV4};

use super::bytes::{read_u16, read_u32, write_u16};
use super::tcp::{Checksum, TcpPacket};
use super::{checksum, TcpRepr, WireError, MAX_OPTIONS_LEN, TCP_HEADER_LEN};

/// Length of an IPv4 header without options, in bytes (RFC 791).
pub const IPV4_HEADER_LEN: usize = 20;

/// IP protocol number of TCP (RFC 9293 §3.1: the pseudo-header's PTCL).
pub const PROTOCOL_TCP: u8 = 6;

/// Byte offsets of the IPv4 header fields (RFC 791 §3.1).
mod field {
    use core::ops::Range;

    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub(super) const VER_IHL: usize = 0;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    /// Flags (top three bits) and fragment offset (13 bits, 8-byte units).
    pub(super) const FLG_OFF: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC_ADDR: Range<usize> = 12..16;
    pub(super) const DST_ADDR: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet (or of its first bytes, [`Ipv4Packet::new_captured`]).
///
/// [`Ipv4Packet::new_checked`] is the door for untrusted bytes: after it,
/// no getter panics. The fixed-field getters and setters index the buffer
/// and panic on a view [`Ipv4Packet::new_unchecked`] made over fewer than 20
/// bytes; `payload` and `verify_checksum` never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view with no checks: for bytes this program wrote or checked.
    pub fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// A view of a whole packet: [`check_len`](Self::check_len) passed.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let packet = Ipv4Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// A view of a packet whose data a capture may have cut short (a snap
    /// length, a golden excerpt): [`check_header_len`](Self::check_header_len)
    /// passed, the total length is not checked, and `payload` is what was
    /// captured of it.
    pub fn new_captured(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let packet = Ipv4Packet::new_unchecked(buffer);
        packet.check_header_len()?;
        Ok(packet)
    }

    /// [`check_header_len`](Self::check_header_len), then
    /// [`check_total_len`](Self::check_total_len).
    pub fn check_len(&self) -> Result<(), WireError> {
        self.check_header_len()?;
        self.check_total_len()
    }

    /// The header is all there, first failure wins: at least 20 bytes
    /// (`Truncated`), version 4 (`NotIpv4`: the IHL means nothing
    /// otherwise), IHL >= 5 (`BadIpHeaderLength`, in bytes), the IHL's
    /// bytes present (`Truncated`).
    pub fn check_header_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        if have < IPV4_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: IPV4_HEADER_LEN,
                have,
            });
        }
        if self.version() != 4 {
            return Err(WireError::NotIpv4(self.version()));
        }
        let header_len = self.header_len();
        if header_len < IPV4_HEADER_LEN {
            return Err(WireError::BadIpHeaderLength(header_len));
        }
        if header_len > have {
            return Err(WireError::Truncated {
                needed: header_len,
                have,
            });
        }
        Ok(())
    }

    /// RFC 791 §3.1: Total Length counts header and data. A link layer may
    /// pad short frames (Ethernet's 60-byte minimum), so bytes after it are
    /// allowed; fewer than it claims means the packet was cut
    /// (`BadIpTotalLength`, as is a total shorter than the header). Call
    /// after [`check_header_len`](Self::check_header_len).
    pub fn check_total_len(&self) -> Result<(), WireError> {
        let total = usize::from(self.total_len());
        let have = self.buffer.as_ref().len();
        if total < self.header_len() || total > have {
            return Err(WireError::BadIpTotalLength { total, have });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length: header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_fragments(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number of the payload (6 for TCP).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field as it is on the wire.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// RFC 791 §3.1: the header checksum covers the header only, options
    /// included. False if the header is not all there.
    pub fn verify_checksum(&self) -> bool {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .is_some_and(|header| checksum::verifies(checksum::of_slice(header)))
    }

    /// The TCP checksum field a CHECKSUM_PARTIAL sender leaves for the
    /// device to complete: the pseudo-header sum (RFC 9293 §3.1) of this
    /// packet's addresses and TCP length (total minus header length),
    /// folded, not complemented.
    pub fn tcp_partial_checksum(&self) -> u16 {
        let tcp_len = self.total_len().saturating_sub(self.header_len() as u16);
        u16::from_be_bytes(checksum::partial(checksum::ipv4_pseudo_header(
            self.src_addr(),
            self.dst_addr(),
            tcp_len,
        )))
    }

    /// The bytes between the header and the total length, as far as the
    /// buffer holds them.
    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let start = self.header_len().min(len);
        start..usize::from(self.total_len()).clamp(start, len)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The data after the header up to the total length (what the buffer
    /// holds of it); never panics.
    pub fn payload(&self) -> &'a [u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4,
    /// 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the total length (header and payload, in bytes).
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets DF and clears MF and the fragment offset: an unfragmented packet.
    pub fn set_unfragmented(&mut self, dont_fragment: bool) {
        write_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            if dont_fragment { FLAG_DF } else { 0 },
        );
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol number.
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the header checksum field as given.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the header checksum (RFC 791 §3.1). Needs the
    /// whole header in the buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::of_slice(&self.buffer.as_ref()[..header_len]);
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum::finish(sum));
    }

    /// The data after the header up to the total length (what the buffer
    /// holds of it), writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or_default()
    }
}

/// The IPv4 fields sustain reads and writes. Emitted headers carry no IP
/// options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// Identification field.
    pub ident: u16,
    /// The Don't Fragment flag.
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    /// A header from `src` to `dst` with TTL 64, identification 0 and DF set.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Repr {
        Ipv4Repr {
            src,
            dst,
            ttl: 64,
            ident: 0,
            dont_fragment: true,
        }
    }

    /// Writes a 20-byte header (no options, TOS 0) for a packet of
    /// `total_len` bytes carrying TCP, checksum included.
    fn emit_tcp_header(&self, total_len: u16, header: &mut [u8]) {
        header.fill(0);
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.set_version_and_header_len(IPV4_HEADER_LEN);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_unfragmented(self.dont_fragment);
        packet.set_ttl(self.ttl);
        packet.set_protocol(PROTOCOL_TCP);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
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
    let view = Ipv4Packet::new_unchecked(packet);
    view.check_header_len()?;
    if !view.verify_checksum() {
        return Err(WireError::BadIpChecksum);
    }
    view.check_total_len()?;
    // RFC 791 §3.2: a fragment has MF set or a non-zero offset. sustain does
    // not reassemble (it sends with DF and its segments fit the path MTU).
    if view.more_fragments() || view.frag_offset() != 0 {
        return Err(WireError::Fragment);
    }
    if view.protocol() != PROTOCOL_TCP {
        return Err(WireError::NotTcp(view.protocol()));
    }
    let (src, dst) = (view.src_addr(), view.dst_addr());
    let tcp = TcpRepr::parse(src, dst, view.payload())?;
    let ip = Ipv4Repr {
        src,
        dst,
        ttl: view.ttl(),
        ident: view.ident(),
        dont_fragment: view.dont_fragment(),
    };
    Ok((ip, tcp))
}

/// Bytes `emit_ipv4_tcp` writes for this segment.
pub fn ipv4_tcp_len(tcp: &TcpRepr<'_>) -> usize {
    IPV4_HEADER_LEN + tcp.buffer_len()
}

/// Writes a complete IPv4 packet (header with checksum, TCP with checksum)
/// to `buf`; returns its length.
///
/// Errors, with nothing written: `OptionsTooLong` as for
/// [`TcpRepr::emit`], `PayloadTooLarge` (carrying the TCP payload length) if
/// the packet would exceed 65535 bytes, `BufferTooSmall` if `buf` is short.
pub fn emit_ipv4_tcp(ip: &Ipv4Repr, tcp: &TcpRepr<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    emit_ipv4_tcp_with(ip, tcp, buf, Checksum::Full)
}

/// As [`emit_ipv4_tcp`], with the TCP checksum `Full` or left `Partial` for
/// the datapath to complete ([`complete_ipv4_tcp_checksum`]); the IPv4
/// header checksum is always computed.
pub fn emit_ipv4_tcp_with(
    ip: &Ipv4Repr,
    tcp: &TcpRepr<'_>,
    buf: &mut [u8],
    checksum: Checksum,
) -> Result<usize, WireError> {
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
    tcp.emit_with(ip.src, ip.dst, segment_out, checksum)?;
    ip.emit_tcp_header(total_len, header_out);
    Ok(total)
}

/// Completes the TCP checksum of an IPv4 packet emitted with
/// [`Checksum::Partial`], as a device would: the segment is the bytes from
/// the end of the IPv4 header to the total length. A buffer that is not
/// such a packet (too short, not TCP, lengths that do not fit) is left as it
/// is and `false` returned.
pub fn complete_ipv4_tcp_checksum(packet: &mut [u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
        return false;
    };
    if ip.protocol() != PROTOCOL_TCP {
        return false;
    }
    let (start, end) = (ip.header_len(), usize::from(ip.total_len()));
    match packet.get_mut(start..end) {
        Some(segment) if segment.len() >= TCP_HEADER_LEN => {
            TcpPacket::new_unchecked(segment).complete_checksum();
            true
        }
        _ => false,
    }
}

/// Where the TCP header of an IPv4/TCP packet starts, once the IPv4 header
/// (its IHL, at least 20 bytes) and the TCP header up to its checksum are
/// all there: what the in-place rewrites below may touch. Never panics.
fn tcp_header_offset(packet: &[u8]) -> Result<usize, WireError> {
    let first = *packet.get(field::VER_IHL).ok_or(WireError::Truncated {
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
    let needed = ihl + TCP_CHECKSUM_END;
    if packet.len() < needed {
        return Err(WireError::Truncated {
            needed,
            have: packet.len(),
        });
    }
    let protocol = Ipv4Packet::new_unchecked(packet).protocol();
    if protocol != PROTOCOL_TCP {
        return Err(WireError::NotTcp(protocol));
    }
    Ok(ihl)
}

/// The TCP header up to its checksum: what the rewrites below touch.
const TCP_CHECKSUM_END: usize = 18;

/// The two 16-bit words of an address, as the checksum sums them.
fn addr_words(addr: Ipv4Addr) -> [u16; 2] {
    let [a, b, c, d] = addr.octets();
    [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])]
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
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> Result<(), WireError> {
    let ihl = tcp_header_offset(packet)?;
    let (header, segment) = packet.split_at_mut(ihl);
    // Both views reach only the fields `tcp_header_offset` found present.
    let mut ip = Ipv4Packet::new_unchecked(header);
    let mut tcp = TcpPacket::new_unchecked(segment);
    let [s0, s1] = addr_words(ip.src_addr());
    let [d0, d1] = addr_words(ip.dst_addr());
    let old = [s0, s1, d0, d1, tcp.src_port(), tcp.dst_port()];
    let [s0, s1] = addr_words(*src.ip());
    let [d0, d1] = addr_words(*dst.ip());
    let new = [s0, s1, d0, d1, src.port(), dst.port()];
    ip.set_src_addr(*src.ip());
    ip.set_dst_addr(*dst.ip());
    ip.set_checksum(checksum::update(ip.checksum(), &old[..4], &new[..4]));
    tcp.set_src_port(src.port());
    tcp.set_dst_port(dst.port());
    // RFC 9293 §3.1: the TCP checksum covers the addresses (pseudo-header).
    tcp.set_checksum(checksum::update(tcp.checksum(), &old, &new));
    Ok(())
}

/// Rewrites the ACK field and window of an IPv4/TCP packet in place and
/// updates the TCP checksum incrementally (RFC 1624): the relay's ACK
/// clamp towards a leg that has just moved (PROTOCOL.md §6.9). Same checks
/// and errors as [`rewrite_ipv4_tcp_endpoints`].
pub fn rewrite_ipv4_tcp_ack(packet: &mut [u8], ack: u32, window: u16) -> Result<(), WireError> {
    let ihl = tcp_header_offset(packet)?;
    let mut tcp = TcpPacket::new_unchecked(&mut packet[ihl..]);
    let word = |n: u32| [(n >> 16) as u16, n as u16];
    let [a0, a1] = word(tcp.ack_number().0);
    let old = [a0, a1, tcp.window_len()];
    let [a0, a1] = word(ack);
    let new = [a0, a1, window];
    tcp.set_ack_number(super::SeqNumber(ack));
    tcp.set_window_len(window);
    tcp.set_checksum(checksum::update(tcp.checksum(), &old, &new));
    Ok(())
}

/// Rewrites the sequence number of an IPv4/TCP packet in place and updates
/// the TCP checksum incrementally (RFC 1624): the relay's window ACK after
/// an MSYN-ACK to a leg that moved again goes at the MSYN-ACK's end
/// (PROTOCOL.md §6.9, §10). Same checks and errors as
/// [`rewrite_ipv4_tcp_endpoints`].
pub fn rewrite_ipv4_tcp_seq(packet: &mut [u8], seq: u32) -> Result<(), WireError> {
    let ihl = tcp_header_offset(packet)?;
    let mut tcp = TcpPacket::new_unchecked(&mut packet[ihl..]);
    let word = |n: u32| [(n >> 16) as u16, n as u16];
    let old = word(tcp.seq_number().0);
    let new = word(seq);
    tcp.set_seq_number(super::SeqNumber(seq));
    tcp.set_checksum(checksum::update(tcp.checksum(), &old, &new));
    Ok(())
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn a_rewritten_sequence_number_keeps_the_checksum_valid() {
        let (src, dst) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2));
        let seg = TcpRepr {
            src_port: 5001,
            dst_port: 40000,
            seq: super::super::SeqNumber(0xfffe_0001),
            ack: super::super::SeqNumber(7),
            flags: crate::wire::TcpFlags::ACK,
            window: 512,
            ..TcpRepr::default()
        };
        let mut buf = vec![0u8; crate::wire::ipv4_tcp_len(&seg)];
        let n = emit_ipv4_tcp(&Ipv4Repr::new(src, dst), &seg, &mut buf).unwrap();
        let packet = &mut buf[..n];
        rewrite_ipv4_tcp_seq(packet, 0x0001_ffff).unwrap();
        let ip = Ipv4Packet::new_checked(&*packet).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(tcp.seq_number().0, 0x0001_ffff);
        assert!(tcp.verify_checksum(src, dst));
        assert_eq!(tcp.ack_number().0, 7);
        let mut short = [0x45u8; 37];
        assert!(rewrite_ipv4_tcp_seq(&mut short, 1).is_err());
    }

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

#[cfg(test)]
mod view_tests {
    use super::*;
    use crate::wire::{SeqNumber, TcpFlags};

    /// A Linux-style SYN 192.0.2.10:51234 -> 198.51.100.20:80 (MSS, SACK-perm,
    /// TS, NOP, WS); IP checksum 0x3224 and TCP checksum 0x0458, both
    /// reported correct by `tcpdump -vvv` (the vector of tests/wire_packets.rs).
    const HAND_SYN: &str = "4500003c1c46400040063224c000020ac6336414c822005012345678\
                            00000000a002faf004580000020405b40402080a000a2b3c00000000\
                            01030307";
    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

    fn syn() -> Vec<u8> {
        hex::decode(HAND_SYN).unwrap()
    }

    #[test]
    fn reads_a_known_packet_and_verifies_its_checksums() {
        let bytes = syn();
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 60));
        assert_eq!((ip.ident(), ip.ttl(), ip.protocol()), (0x1c46, 64, 6));
        assert!(ip.dont_fragment() && !ip.more_fragments());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SRC, DST));
        assert_eq!(ip.checksum(), 0x3224);
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload(), &bytes[20..]);
        // Pseudo-header c000+020a+c633+6414+0006+0028 (TCP length 40), folded.
        assert_eq!(ip.tcp_partial_checksum(), 0xec80);

        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (51234, 80));
        assert_eq!((tcp.seq_number().0, tcp.ack_number().0), (0x1234_5678, 0));
        assert_eq!((tcp.header_len(), tcp.flags()), (40, TcpFlags::SYN));
        assert_eq!((tcp.window_len(), tcp.urgent_at()), (64240, 0));
        assert_eq!(tcp.checksum(), 0x0458);
        assert_eq!(tcp.options(), &bytes[40..60]);
        assert!(tcp.payload().is_empty());
        assert!(tcp.verify_checksum(SRC, DST));
        assert!(!tcp.verify_checksum(SRC, Ipv4Addr::new(198, 51, 100, 21)));
    }

    #[test]
    fn fill_checksum_writes_the_known_values() {
        let good = syn();
        let mut bytes = good.clone();
        bytes[10..12].fill(0xaa);
        bytes[36..38].fill(0x55);
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        tcp.fill_checksum(SRC, DST);
        assert_eq!(bytes, good);
    }

    /// A partial checksum completed as a device would gives the bytes a full
    /// emit gives, for even and odd payloads (RFC 1071 §4.1's padding byte),
    /// and the same partial field the GSO path writes for its own length.
    #[test]
    fn a_partial_checksum_completed_equals_the_full_one() {
        for len in [0usize, 1, 2, 7, 1447, 1448] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let seg = TcpRepr {
                src_port: 40000,
                dst_port: 443,
                seq: SeqNumber(0x0102_0304),
                ack: SeqNumber(0xa0b0_c0d0),
                flags: TcpFlags::ACK | TcpFlags::PSH,
                window: 501,
                timestamps: Some(crate::wire::Timestamps { tsval: 9, tsecr: 8 }),
                payload: &payload,
                ..TcpRepr::default()
            };
            let ip = Ipv4Repr::new(SRC, DST);
            let mut full = vec![0u8; ipv4_tcp_len(&seg)];
            let mut partial = full.clone();
            emit_ipv4_tcp(&ip, &seg, &mut full).unwrap();
            emit_ipv4_tcp_with(&ip, &seg, &mut partial, Checksum::Partial).unwrap();
            assert_ne!(
                full, partial,
                "len {len}: the field differs before completion"
            );
            let view = Ipv4Packet::new_checked(&partial[..]).unwrap();
            assert_eq!(
                TcpPacket::new_checked(view.payload()).unwrap().checksum(),
                view.tcp_partial_checksum(),
                "len {len}"
            );
            assert!(complete_ipv4_tcp_checksum(&mut partial));
            assert_eq!(full, partial, "len {len}");
        }
        // Not an IPv4/TCP packet: left as it is.
        let mut garbage = vec![0x45u8, 0, 0, 10];
        assert!(!complete_ipv4_tcp_checksum(&mut garbage));
        let mut udp = syn();
        udp[9] = 17;
        let before = udp.clone();
        assert!(!complete_ipv4_tcp_checksum(&mut udp));
        assert_eq!(udp, before);
    }

    #[test]
    fn setters_write_the_fields_the_getters_read() {
        let mut bytes = syn();
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_ttl(7);
        ip.set_ident(0xbeef);
        ip.set_unfragmented(false);
        ip.set_src_addr(DST);
        ip.set_dst_addr(SRC);
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        tcp.set_ack_number(SeqNumber(0xdead_beef));
        tcp.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        tcp.set_window_len(1);
        tcp.set_urgent_at(2);
        tcp.fill_checksum(DST, SRC);
        // Ident, no flags, TTL, protocol.
        assert_eq!(bytes[4..10], hex::decode("beef00000706").unwrap());
        let (ip, tcp) = parse_ipv4_tcp(&bytes).unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, ip.dont_fragment),
            (DST, SRC, 7, false)
        );
        assert_eq!(
            (tcp.ack.0, tcp.flags, tcp.window),
            (0xdead_beef, TcpFlags::SYN | TcpFlags::ACK, 1)
        );
        assert_eq!(tcp.urgent, 2);
    }

    #[test]
    fn new_checked_refuses_truncated_and_garbled_headers() {
        let bytes = syn();
        for len in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]),
                Err(WireError::Truncated {
                    needed: 20,
                    have: len
                })
            );
            assert_eq!(
                TcpPacket::new_checked(&bytes[20..20 + len]),
                Err(WireError::Truncated {
                    needed: 20,
                    have: len
                })
            );
        }
        // Cut after the IP header: Total Length no longer fits, but a capture
        // may hold it.
        for len in 20..60 {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]),
                Err(WireError::BadIpTotalLength {
                    total: 60,
                    have: len
                })
            );
            let captured = Ipv4Packet::new_captured(&bytes[..len]).unwrap();
            assert_eq!(captured.payload(), &bytes[20..len]);
        }
        let garbled = |at: usize, value: u8| {
            let mut b = bytes.clone();
            b[at] = value;
            b
        };
        assert_eq!(
            Ipv4Packet::new_checked(&garbled(0, 0x65)[..]),
            Err(WireError::NotIpv4(6))
        );
        assert_eq!(
            Ipv4Packet::new_captured(&garbled(0, 0x44)[..]),
            Err(WireError::BadIpHeaderLength(16))
        );
        assert_eq!(
            Ipv4Packet::new_checked(&garbled(0, 0x4f)[..40]),
            Err(WireError::Truncated {
                needed: 60,
                have: 40
            })
        );
        assert_eq!(
            Ipv4Packet::new_checked(&garbled(3, 19)[..]),
            Err(WireError::BadIpTotalLength {
                total: 19,
                have: 60
            })
        );
        // Data offset 4 (below the fixed header), and 10 with 39 bytes.
        assert_eq!(
            TcpPacket::new_checked(&garbled(32, 0x40)[20..]),
            Err(WireError::BadTcpDataOffset(4))
        );
        assert_eq!(
            TcpPacket::new_captured(&garbled(32, 0x40)[20..]),
            Err(WireError::BadTcpDataOffset(4))
        );
        assert_eq!(
            TcpPacket::new_checked(&bytes[20..59]),
            Err(WireError::BadTcpDataOffset(10))
        );
        // A capture cut inside the options keeps what it has of them.
        let cut = TcpPacket::new_captured(&bytes[20..50]).unwrap();
        assert_eq!((cut.options(), cut.payload()), (&bytes[40..50], &[][..]));
    }

    /// Whatever a checked constructor accepts, no getter panics on.
    #[test]
    fn checked_views_never_panic_on_garbled_bytes() {
        let bytes = syn();
        let read = |b: &[u8]| {
            for ip in [Ipv4Packet::new_checked(b), Ipv4Packet::new_captured(b)]
                .into_iter()
                .flatten()
            {
                let _ = (ip.total_len(), ip.ident(), ip.frag_offset(), ip.src_addr());
                let _ = (ip.verify_checksum(), ip.tcp_partial_checksum());
                for tcp in [
                    TcpPacket::new_checked(ip.payload()),
                    TcpPacket::new_captured(ip.payload()),
                ]
                .into_iter()
                .flatten()
                {
                    let _ = (tcp.seq_number(), tcp.flags(), tcp.urgent_at());
                    let _ = (tcp.options(), tcp.payload(), tcp.verify_checksum(SRC, DST));
                }
            }
        };
        for at in [0, 2, 3, 32] {
            for value in 0..=255u8 {
                let mut b = bytes.clone();
                b[at] = value;
                for len in 0..=b.len() {
                    read(&b[..len]);
                }
            }
        }
    }
}
