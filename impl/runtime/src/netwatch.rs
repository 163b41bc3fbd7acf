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

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use rtnetlink::{new_multicast_connection, MulticastGroup};

type Messages = UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Subscribed to RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE and RTNLGRP_LINK.
pub(crate) struct NetWatcher {
    messages: Messages,
}

impl NetWatcher {
    /// Opens the multicast socket in the current namespace and spawns its
    /// connection task on the current tokio runtime.
    pub(crate) fn start() -> io::Result<NetWatcher> {
        let (conn, _handle, messages) = new_multicast_connection(&[
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Link,
        ])?;
        tokio::spawn(conn);
        Ok(NetWatcher { messages })
    }

    /// Resolves when at least one event arrived, after draining every event
    /// already queued (one re-evaluation per burst).
    pub(crate) async fn changed(&mut self) -> io::Result<()> {
        match self.messages.next().await {
            Some(_) => {
                while self.messages.try_recv().is_ok() {}
                Ok(())
            }
            None => Err(io::Error::other("rtnetlink event socket closed")),
        }
    }

    /// Whether an event arrived since the last look, without waiting (and
    /// draining them all): for a driver too busy to wait on [`changed`].
    ///
    /// [`changed`]: NetWatcher::changed
    pub(crate) fn changed_now(&mut self) -> io::Result<bool> {
        use futures::channel::mpsc::TryRecvError;
        let mut any = false;
        loop {
            match self.messages.try_recv() {
                Ok(_) => any = true,
                Err(TryRecvError::Empty) => return Ok(any),
                Err(TryRecvError::Closed) => {
                    return Err(io::Error::other("rtnetlink event socket closed"))
                }
            }
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
