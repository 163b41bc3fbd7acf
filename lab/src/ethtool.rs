//! Offload switches through the legacy `SIOCETHTOOL` ioctl.
//!
//! Why: with TX checksum offload on, a veth hands the peer packets whose TCP checksum
//! is only partially computed (CHECKSUM_PARTIAL); the kernel's own stack accepts them,
//! but a raw-socket receiver reads an unfinished checksum. TSO/GSO/GRO would also hand
//! userspace TCP segments larger than the MTU. So every lab veth turns them off.
//!
//! Must be called on a thread inside the interface's namespace.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::{IoContext, LabError, Result};
use crate::names::validate_ifname;

// <linux/ethtool.h>
const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
const ETHTOOL_GTSO: u32 = 0x0000_001e;
const ETHTOOL_STSO: u32 = 0x0000_001f;
const ETHTOOL_GGSO: u32 = 0x0000_0023;
const ETHTOOL_SGSO: u32 = 0x0000_0024;
const ETHTOOL_GGRO: u32 = 0x0000_002b;
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// The offload switches the lab cares about, as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offloads {
    pub tx_checksum: bool,
    pub tso: bool,
    pub gso: bool,
    pub gro: bool,
}

impl Offloads {
    /// True when every switch is off.
    pub fn all_off(&self) -> bool {
        !(self.tx_checksum || self.tso || self.gso || self.gro)
    }
}

/// Turns TX checksumming, TSO, GSO and GRO off on `ifname`.
pub fn disable_offloads(ifname: &str) -> Result<()> {
    let socket = control_socket()?;
    // TSO before TX checksum: the kernel would drop TSO anyway once checksumming is
    // off, but explicit order keeps each request independent of the other.
    for (cmd, name) in [
        (ETHTOOL_STSO, "tso"),
        (ETHTOOL_SGSO, "gso"),
        (ETHTOOL_SGRO, "gro"),
        (ETHTOOL_STXCSUM, "tx-checksumming"),
    ] {
        ethtool_value(&socket, ifname, cmd, 0)
            .context(|| format!("turning {name} off on {ifname}"))?;
    }
    Ok(())
}

/// Reads the offload switches of `ifname` back from the kernel.
pub fn read_offloads(ifname: &str) -> Result<Offloads> {
    let socket = control_socket()?;
    let get = |cmd, name: &str| -> Result<bool> {
        ethtool_value(&socket, ifname, cmd, 0)
            .map(|value| value != 0)
            .context(|| format!("reading {name} of {ifname}"))
    };
    Ok(Offloads {
        tx_checksum: get(ETHTOOL_GTXCSUM, "tx-checksumming")?,
        tso: get(ETHTOOL_GTSO, "tso")?,
        gso: get(ETHTOOL_GGSO, "gso")?,
        gro: get(ETHTOOL_GGRO, "gro")?,
    })
}

fn control_socket() -> Result<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
    .context(|| "opening an ioctl socket".to_string())
}

/// Issues one `ethtool_value` command and returns the value the kernel wrote back.
fn ethtool_value(socket: &OwnedFd, ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    validate_ifname(ifname).map_err(|err| match err {
        LabError::InvalidName { reason, .. } => io::Error::new(io::ErrorKind::InvalidInput, reason),
        other => io::Error::other(other.to_string()),
    })?;
    let mut value = EthtoolValue { cmd, data };
    let mut request = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&raw mut value).cast(),
        },
    };
    for (dst, src) in request.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    siocethtool(socket, &mut request)?;
    Ok(value.data)
}

/// The SIOCETHTOOL ioctl. nix's ioctl macros would only generate an `unsafe fn` with
/// the same contract, so the call is made directly.
#[allow(unsafe_code)]
fn siocethtool(socket: &OwnedFd, request: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `request` is a valid ifreq whose name is NUL-terminated (validated to be
    // shorter than IFNAMSIZ, the rest zero) and whose ifru_data points at a live
    // `struct ethtool_value` (repr(C)), the layout SIOCETHTOOL expects for the
    // ETHTOOL_[GS]* value commands; both outlive the call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, request) };
    Errno::result(ret)?;
    Ok(())
}
