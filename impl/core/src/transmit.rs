//! What `poll_transmit` hands the driver besides the bytes (quinn's
//! `Transmit`, STYLE.md): plain data, so the driver sends and routes
//! without parsing what the core wrote.

use core::net::SocketAddrV4;

use crate::wire::{Ipv4Packet, TcpPacket};

/// One IPv4 packet a `poll_transmit` wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The packet's IPv4 destination and TCP port: where to send it.
    pub dst: SocketAddrV4,
    /// The packet's IPv4 source and TCP port: the local end it leaves from.
    pub src: SocketAddrV4,
    /// Its length in the buffer, IPv4 header included.
    pub size: usize,
    /// The TCP checksum is left partial (the pseudo-header sum,
    /// CHECKSUM_PARTIAL; `Config::partial_checksums`): the datapath
    /// completes it, in the kernel's GSO or with
    /// [`crate::wire::complete_ipv4_tcp_checksum`], before the packet leaves.
    pub checksum_partial: bool,
}

impl Transmit {
    /// The ends an IPv4/TCP packet's headers name, for packets the core
    /// built itself and queued as bytes (the relay's); `None` if `packet`
    /// is not one.
    pub(crate) fn of_packet(packet: &[u8]) -> Option<Transmit> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        Some(Transmit {
            dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
            src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
            size: packet.len(),
            checksum_partial: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::wire::{emit_ipv4_tcp, ipv4_tcp_len, Ipv4Repr, TcpRepr};

    #[test]
    fn a_packet_names_its_ends_and_garbage_names_none() {
        let (src, dst) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2));
        let seg = TcpRepr {
            src_port: 40000,
            dst_port: 443,
            payload: b"hello",
            ..TcpRepr::default()
        };
        let mut buf = vec![0u8; ipv4_tcp_len(&seg)];
        let size = emit_ipv4_tcp(&Ipv4Repr::new(src, dst), &seg, &mut buf).unwrap();
        assert_eq!(
            Transmit::of_packet(&buf),
            Some(Transmit {
                dst: SocketAddrV4::new(dst, 443),
                src: SocketAddrV4::new(src, 40000),
                size,
                checksum_partial: false,
            })
        );
        assert_eq!(Transmit::of_packet(&buf[..30]), None);
        assert_eq!(Transmit::of_packet(&[0x45; 40]), None);
    }
}
