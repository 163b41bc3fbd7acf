//! rtnetlink operations the topology needs beyond [`crate::rtnl`]: taking an uplink
//! apart (route, address, link) for a move, and reading addresses and MACs back.
//!
//! Like `rtnl`, every function runs inside the namespace of the calling thread, so they
//! are called through [`in_netns`].

use std::future::Future;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::rtnl;

/// Runs async rtnetlink work inside `node`'s namespace; `f` gets the handle and the
/// namespace name (for error messages).
pub(crate) fn in_netns<F, Fut, T>(lab: &Lab, node: &str, f: F) -> Result<T>
where
    F: FnOnce(Handle, String) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    let netns = lab.netns(node)?;
    let name = netns.name().to_string();
    netns.run(move || rtnl::with_rtnl(|handle| f(handle, name)))?
}

/// Deletes the link `ifname` (a veth takes its peer with it).
pub(crate) async fn delete_link(handle: &Handle, netns: &str, ifname: &str) -> Result<()> {
    let index = rtnl::link_index(handle, netns, ifname).await?;
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(|err| LabError::netlink(format!("deleting {ifname} in {netns}"), err))
}

/// Deletes `default via gateway dev ifname` from the main table.
pub(crate) async fn delete_default_route(
    handle: &Handle,
    netns: &str,
    ifname: &str,
    gateway: Ipv4Addr,
) -> Result<()> {
    let index = rtnl::link_index(handle, netns, ifname).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle.route().del(route).execute().await.map_err(|err| {
        LabError::netlink(
            format!("deleting the default route via {gateway} in {netns}"),
            err,
        )
    })
}

/// Deletes every IPv4 address of `ifname`; returns them.
pub(crate) async fn delete_addresses(
    handle: &Handle,
    netns: &str,
    ifname: &str,
) -> Result<Vec<Ipv4Addr>> {
    let index = rtnl::link_index(handle, netns, ifname).await?;
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|err| LabError::netlink(format!("listing addresses of {ifname}"), err))?;
    let mut deleted = Vec::new();
    for message in messages {
        let Some(address) = ipv4_of(&message) else {
            continue;
        };
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(|err| LabError::netlink(format!("deleting {address} from {ifname}"), err))?;
        deleted.push(address);
    }
    Ok(deleted)
}

/// IPv4 addresses (with prefix length) of `ifname`.
pub(crate) async fn addresses(
    handle: &Handle,
    netns: &str,
    ifname: &str,
) -> Result<Vec<(Ipv4Addr, u8)>> {
    let index = rtnl::link_index(handle, netns, ifname).await?;
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|err| LabError::netlink(format!("listing addresses of {ifname}"), err))?;
    Ok(messages
        .iter()
        .filter_map(|message| Some((ipv4_of(message)?, message.header.prefix_len)))
        .collect())
}

/// The hardware address of `ifname`.
pub(crate) async fn mac(handle: &Handle, netns: &str, ifname: &str) -> Result<Vec<u8>> {
    let link = rtnl::link_by_name(handle, netns, ifname).await?;
    link.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::Address(mac) => Some(mac.clone()),
            _ => None,
        })
        .ok_or_else(|| LabError::UnexpectedOutput {
            what: format!("link {ifname} in {netns}"),
            detail: "no hardware address".into(),
        })
}

fn ipv4_of(message: &AddressMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(std::net::IpAddr::V4(addr))
        | AddressAttribute::Address(std::net::IpAddr::V4(addr)) => Some(*addr),
        _ => None,
    })
}
