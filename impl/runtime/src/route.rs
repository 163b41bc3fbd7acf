//! Route lookups through the kernel, without sending anything: connect(2)
//! on a UDP socket makes the kernel pick the source address and path MTU.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

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
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `mtu`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&raw mut mtu).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((src, mtu as u32))
}

/// Picks a free local port by letting the kernel allocate one to a TCP
/// socket that we keep bound (never listening) for as long as we use the
/// port: the kernel's own connections then cannot take it, and since the
/// socket does not listen the kernel never completes a handshake on it.
pub(crate) fn reserve_port(local: SocketAddrV4) -> io::Result<(u16, PortReservation)> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: local.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(local.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: addr is a valid sockaddr_in of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes.
    let rc =
        unsafe { libc::getsockname(fd, (&raw mut out).cast::<libc::sockaddr>(), &raw mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((u16::from_be(out.sin_port), PortReservation { _fd: owned }))
}

/// Keeps a port reserved in the kernel while alive.
pub(crate) struct PortReservation {
    _fd: std::os::fd::OwnedFd,
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
