//! Attachments (a node's uplink) and the hooks told about each one: the seam between
//! the live topology and what rides on its links (captures, link conditions, names).
//! A hook sees the lab and the link's conditions, not the topology itself, so the
//! hooks' modules do not depend on the topology that calls them.

use std::net::Ipv4Addr;
use std::time::Instant;

use super::spec::LinkConditions;
use crate::error::Result;
use crate::lab::Lab;

/// What a hook may use when it is told about an attachment.
pub struct HookContext<'a> {
    /// The lab the topology lives in (namespaces, processes, iptables).
    pub lab: &'a Lab,
    /// The conditions of the attachment's link (its `[[link]]`), if it has any.
    pub conditions: Option<&'a LinkConditions>,
}

/// A node's uplink as it exists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub node: String,
    pub network: String,
    /// The node's interface (named after the network).
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The node holding the network's bridge.
    pub gateway_node: String,
    /// The gateway's end of the veth (a port of the network's bridge).
    pub port: String,
}

impl Attachment {
    /// `<node>-<network>`: the name of this attachment's capture and log files.
    pub fn label(&self) -> String {
        format!("{}-{}", self.node, self.network)
    }
}

/// Told about every uplink the topology creates or removes (initial ones and moves):
/// captures and link emulation hook in here.
pub trait AttachmentHook: Send + Sync {
    /// The veth exists in both namespaces, is down and has no address yet.
    fn created(&self, ctx: &HookContext<'_>, attachment: &Attachment) -> Result<()>;
    /// The veth is about to be taken apart (a detach); it still carries traffic.
    fn removing(&self, _ctx: &HookContext<'_>, _attachment: &Attachment) {}
    /// The veth is gone.
    fn removed(&self, _ctx: &HookContext<'_>, _attachment: &Attachment) {}
    /// The topology is being torn down: stop everything that holds a namespace open
    /// (sockets, threads inside it).
    fn shutdown(&self) {}
}

/// What [`Topology::attach`] did and when it finished.
#[derive(Clone, Debug)]
pub struct Attached {
    pub attachment: Attachment,
    /// When the default route through the new uplink was installed (the kernel
    /// acknowledged it): the host can use its new address from here on.
    pub completed: Instant,
}

/// What [`Topology::detach`] removed and when it finished.
#[derive(Clone, Debug)]
pub struct Detached {
    pub attachment: Attachment,
    /// When the link was gone.
    pub completed: Instant,
}
