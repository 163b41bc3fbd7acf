//! Links, IPv4 addresses and routes through rtnetlink.
//!
//! Every function here talks to the namespace of the thread that opened the netlink
//! socket, so they are called from inside [`Netns::run`](crate::Netns::run) through
//! [`with_rtnl`], which opens the socket on that thread.

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage, State,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{IoContext, LabError, Result};

/// An IPv4 route to install in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface name; `None` lets the kernel pick it from the gateway.
    pub dev: Option<String>,
}

impl Ipv4Route {
    /// `default via <gateway>`.
    pub fn default_via(gateway: Ipv4Addr) -> Ipv4Route {
        Ipv4Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(gateway),
            dev: None,
        }
    }

    /// `<destination>/<prefix_len> via <gateway>`.
    pub fn via(destination: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Ipv4Route {
        Ipv4Route {
            destination,
            prefix_len,
            gateway: Some(gateway),
            dev: None,
        }
    }

    /// `<destination>/<prefix_len> dev <dev>` (on-link).
    pub fn on_link(destination: Ipv4Addr, prefix_len: u8, dev: &str) -> Ipv4Route {
        Ipv4Route {
            destination,
            prefix_len,
            gateway: None,
            dev: Some(dev.to_string()),
        }
    }
}

/// One end of a veth pair as it is created.
#[derive(Clone, Debug)]
pub(crate) struct VethEnd {
    pub ifname: String,
    pub mac: [u8; 6],
}

/// Runs `f` with an rtnetlink handle bound to the calling thread's namespace, on a
/// private current-thread runtime (so callers need not be async, and async callers
/// are not nested into another runtime: this always runs on a namespace thread).
pub(crate) fn with_rtnl<F, Fut, T>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context(|| "building the rtnetlink runtime".to_string())?;
    runtime.block_on(async move {
        let (connection, handle, _) =
            rtnetlink::new_connection().context(|| "opening an rtnetlink socket".to_string())?;
        let connection = tokio::spawn(connection);
        let result = f(handle).await;
        connection.abort();
        result
    })
}

fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

/// The link called `ifname`, or [`LabError::UnknownInterface`].
pub(crate) async fn link_by_name(
    handle: &Handle,
    netns: &str,
    ifname: &str,
) -> Result<LinkMessage> {
    let unknown = || LabError::UnknownInterface {
        netns: netns.to_string(),
        ifname: ifname.to_string(),
    };
    let mut links = handle.link().get().match_name(ifname.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(unknown()),
        Err(err) if errno_of(&err) == Some(libc::ENODEV) => Err(unknown()),
        Err(err) => Err(LabError::netlink(
            format!("looking up {ifname} in {netns}"),
            err,
        )),
    }
}

pub(crate) async fn link_index(handle: &Handle, netns: &str, ifname: &str) -> Result<u32> {
    Ok(link_by_name(handle, netns, ifname).await?.header.index)
}

/// Creates a veth pair whose `local` end is in the calling namespace and whose `peer`
/// end is created directly in the namespace behind `peer_netns_fd`: neither end ever
/// exists in the root namespace.
pub(crate) async fn create_veth(
    handle: &Handle,
    local: &VethEnd,
    peer: &VethEnd,
    peer_netns_fd: RawFd,
    mtu: u32,
) -> Result<()> {
    let peer_message = LinkMessageBuilder::<LinkUnspec>::default()
        .name(peer.ifname.clone())
        .address(peer.mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(peer_netns_fd)
        .build();
    let message = LinkVeth::new(&local.ifname, &peer.ifname)
        .address(local.mac.to_vec())
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
        .build();
    handle.link().add(message).execute().await.map_err(|err| {
        LabError::netlink(
            format!("creating veth {} <-> {}", local.ifname, peer.ifname),
            err,
        )
    })
}

pub(crate) async fn set_link_up(handle: &Handle, index: u32, ifname: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("setting {ifname} up"), err))
}

pub(crate) async fn set_link_down(handle: &Handle, index: u32, ifname: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("setting {ifname} down"), err))
}

pub(crate) async fn set_mtu(handle: &Handle, index: u32, ifname: &str, mtu: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("setting the MTU of {ifname} to {mtu}"), err))
}

/// The link's administrative flag and operational state.
pub(crate) fn link_state(link: &LinkMessage) -> (bool, State) {
    let admin_up = link.header.flags.contains(LinkFlags::Up);
    let oper = link
        .attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::OperState(state) => Some(*state),
            _ => None,
        })
        .unwrap_or(State::Unknown);
    (admin_up, oper)
}

/// Polls until the link is operationally up. Loopback reports `UNKNOWN` when up,
/// which counts as up for it.
pub(crate) async fn wait_oper_up(
    handle: &Handle,
    netns: &str,
    ifname: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let link = link_by_name(handle, netns, ifname).await?;
        let (admin_up, oper) = link_state(&link);
        let is_loopback = link.header.flags.contains(LinkFlags::Loopback);
        if admin_up && (oper == State::Up || (is_loopback && oper == State::Unknown)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("{ifname} in {netns} to be operationally up (now {oper:?})"),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn add_ipv4_address(
    handle: &Handle,
    index: u32,
    ifname: &str,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<()> {
    handle
        .address()
        .add(index, address.into(), prefix_len)
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("adding {address}/{prefix_len} to {ifname}"), err))
}

pub(crate) async fn add_ipv4_route(handle: &Handle, netns: &str, route: &Ipv4Route) -> Result<()> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination, route.prefix_len);
    if let Some(gateway) = route.gateway {
        builder = builder.gateway(gateway);
    } else {
        builder = builder.scope(RouteScope::Link);
    }
    if let Some(dev) = &route.dev {
        builder = builder.output_interface(link_index(handle, netns, dev).await?);
    }
    handle
        .route()
        .add(builder.build())
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("adding route {route:?} in {netns}"), err))
}

/// IPv4 routes of the main table.
pub(crate) async fn ipv4_routes(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .map_err(|err| LabError::netlink("listing IPv4 routes", err))?;
    Ok(routes
        .into_iter()
        .filter(|route| route_table(route) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .collect())
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// The destination of a route as (address, prefix length).
pub(crate) fn route_destination(route: &RouteMessage) -> (Ipv4Addr, u8) {
    let address = route
        .attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(*addr),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    (address, route.header.destination_prefix_length)
}

/// Polls until the main table holds a route for exactly `destination/prefix_len`.
pub(crate) async fn wait_route(
    handle: &Handle,
    netns: &str,
    destination: Ipv4Addr,
    prefix_len: u8,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let routes = ipv4_routes(handle).await?;
        if routes
            .iter()
            .any(|route| route_destination(route) == (destination, prefix_len))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("a route to {destination}/{prefix_len} in {netns}"),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
