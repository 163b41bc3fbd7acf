//! Address and route changes, from rtnetlink events (never polling).
//!
//! The watcher only says *that* something changed (an IPv4 address, an IPv4
//! route or a link); the host then re-reads the interface addresses and asks
//! the kernel's routing which source address it would use towards each peer.
//! An address counts as usable only once a route through it exists: acting
//! on RTM_NEWADDR alone would send the MSYN before the route is there
//! (DESIGN.md, "Address changes").

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The process's one rtnetlink listener: a non-blocking socket subscribed to
/// RTMGRP_LINK, RTMGRP_IPV4_IFADDR and RTMGRP_IPV4_ROUTE. Its messages are
/// never parsed: any of them means "look again". Two readers share it:
///
/// * the GSO sender ([`crate::gso::send`]) reads it without waiting before
///   every send, so a next hop is forgotten at the first event even while a
///   bulk sender never lets the driver idle;
/// * the driver ([`crate::driver`]) waits on it when idle and looks on every
///   pass, then re-reads the addresses and routes.
///
/// What one reader drains it leaves marked ([`NetEvents::take_changed`]), so
/// the other still learns of it.
pub(crate) struct NetEvents {
    fd: AsyncFd<OwnedFd>,
    /// Events were read since the driver last looked.
    unseen: AtomicBool,
}

impl NetEvents {
    /// Opens and binds the socket in the current namespace. Needs a tokio
    /// runtime (the driver waits on it).
    pub(crate) fn open() -> io::Result<NetEvents> {
        use nix::sys::socket::{
            self, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
        };
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        let groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        // SAFETY: `fd` is an owned descriptor that lives exactly as long as
        // the AsyncFd (I/O safety, tokio#8587).
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(NetEvents {
            fd,
            unseen: AtomicBool::new(false),
        })
    }

    /// Reads every queued message without waiting; whether there was any.
    /// An overrun (ENOBUFS: events were lost) counts as one.
    fn drain(&self) -> io::Result<bool> {
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            match recv(
                self.fd.get_ref().as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(_) | Err(Errno::ENOBUFS) => any = true,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if any {
            self.unseen.store(true, Ordering::Relaxed);
        }
        Ok(any)
    }

    /// For a sender: whether anything changed since this reader's last look
    /// (the driver still sees it at its next [`take_changed`]). A socket that
    /// cannot be read counts as a change: no next hop is trusted.
    ///
    /// [`take_changed`]: NetEvents::take_changed
    pub(crate) fn tripped(&self) -> bool {
        self.drain().unwrap_or_else(|e| {
            tracing::debug!("reading rtnetlink events: {e}");
            self.unseen.store(true, Ordering::Relaxed);
            true
        })
    }

    /// For the driver: whether anything changed since its last look,
    /// without waiting (whoever read it).
    pub(crate) fn take_changed(&self) -> io::Result<bool> {
        let read = self.drain()?;
        Ok(self.unseen.swap(false, Ordering::Relaxed) || read)
    }

    /// For the driver: resolves once something changed since its last look.
    pub(crate) async fn changed(&self) -> io::Result<()> {
        loop {
            if self.take_changed()? {
                return Ok(());
            }
            let mut guard = self.fd.readable().await?;
            if self.take_changed()? {
                return Ok(());
            }
            // Read to EAGAIN under the guard: clear readiness (tokio keeps
            // it if an event came in since the guard was taken).
            guard.clear_ready();
        }
    }
}

/// IPv4 addresses configured on interfaces that are up, loopback excluded.
pub(crate) fn local_addresses() -> io::Result<BTreeSet<Ipv4Addr>> {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs
        .filter(|ifa| {
            ifa.flags.contains(InterfaceFlags::IFF_UP)
                && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|ifa| {
            ifa.address?
                .as_sockaddr_in()
                .map(nix::sys::socket::SockaddrIn::ip)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_excludes_loopback() {
        let addrs = local_addresses().unwrap();
        assert!(!addrs.contains(&Ipv4Addr::LOCALHOST));
    }
}
