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
}

/// IPv4 addresses configured on interfaces that are up, loopback excluded.
pub(crate) fn local_addresses() -> io::Result<BTreeSet<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = BTreeSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if ifa.ifa_addr.is_null() || !up || loopback {
            continue;
        }
        // SAFETY: non-null sockaddr of at least the family field.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET {
            continue;
        }
        // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        out.insert(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
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
