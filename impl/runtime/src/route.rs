//! Route lookups through the kernel, without sending anything: connect(2)
//! on a UDP socket makes the kernel pick the source address and path MTU.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// The source address and MTU the kernel would use towards `dst`.
pub(crate) fn lookup(dst: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(SocketAddrV4::new(dst, 9))?;
    let src = match sock.local_addr()? {
        std::net::SocketAddr::V4(a) => *a.ip(),
        std::net::SocketAddr::V6(_) => {
            return Err(io::Error::other("kernel chose an IPv6 source"));
        }
    };
    let mtu = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::IpMtu)
        .map_err(io::Error::from)?;
    Ok((src, u32::try_from(mtu).unwrap_or(0)))
}

/// Picks a free local port by letting the kernel allocate one to a TCP
/// socket that we keep bound (never listening) for as long as we use the
/// port: the kernel's own connections then cannot take it, and since the
/// socket does not listen the kernel never completes a handshake on it.
pub(crate) fn reserve_port(local: SocketAddrV4) -> io::Result<(u16, PortReservation)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&local.into())?;
    let port = socket
        .local_addr()?
        .as_socket_ipv4()
        .map_or(0, |a| a.port());
    Ok((port, PortReservation { _socket: socket }))
}

/// Keeps a port reserved in the kernel while alive.
pub(crate) struct PortReservation {
    _socket: socket2::Socket,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_lookup_and_reservation() {
        let (src, mtu) = lookup(Ipv4Addr::LOCALHOST).expect("route to loopback");
        assert_eq!(src, Ipv4Addr::LOCALHOST);
        assert!(mtu >= 1280, "loopback mtu {mtu}");
        let (port, _held) = reserve_port(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert_ne!(port, 0);
        // While held, the same port cannot be bound again.
        assert!(reserve_port(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_err());
    }
}
