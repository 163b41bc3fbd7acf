//! Socket options nix does not define, declared with nix's own `sockopt_impl!` so
//! they are used through `nix::sys::socket::{getsockopt, setsockopt}` like the rest.

use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// `NETLINK_NO_ENOBUFS`: when true, the kernel stops reporting receive-buffer
    /// overruns as ENOBUFS (the lab keeps it false: overload is counted, never silent).
    NetlinkNoEnobufs,
    SetOnly,
    libc::SOL_NETLINK,
    libc::NETLINK_NO_ENOBUFS,
    bool
);

sockopt_impl!(
    /// `PACKET_STATISTICS` of an AF_PACKET socket: frames that reached it and frames
    /// dropped. Reading resets the kernel's counters.
    PacketStatistics,
    GetOnly,
    libc::SOL_PACKET,
    libc::PACKET_STATISTICS,
    libc::tpacket_stats
);
