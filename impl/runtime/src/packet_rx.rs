//! Receive through an AF_PACKET socket: the kernel hands every segment for
//! an owned port to this socket before the IP layer, and the driver reads
//! them in batches with `recvmmsg` into a few reused slots; the core gets a
//! slice of a slot.
//!
//! Together with the ingress drop rule ([`crate::rst_guard`]'s raw-table
//! `PREROUTING` rule per owned port) this keeps the kernel's TCP out of our
//! segments entirely: a packet socket sees a packet before the IP layer, the
//! rule then drops it before routing, conntrack and TCP, so the kernel
//! neither processes it nor answers it with an RST. (With the raw socket,
//! every segment went through the kernel's TCP, which answered each with an
//! RST that the OUTPUT guard rule then dropped.)
//!
//! **A queue, not a ring.** Until session 13 the socket had a TPACKET_V2
//! receive ring (PACKET_MMAP). The ring's copy happens where the packet
//! arrives, in the softirq of whichever CPU delivers it, into the next frame
//! of a ring that must hold a whole receive window (32 MiB for 16 MiB
//! windows), so every frame it writes is cold in the cache: `tpacket_rcv`
//! and `packet_lookup_frame` took 16-19 % of the sending CPU on the
//! benchmark's veth path, where the whole path's softirq work runs on the
//! sender's CPU. Without a ring the softirq only queues a clone of the
//! packet (no copy); `recvmmsg` copies it in the driver's own thread into
//! the same few slots every time, which stay in the cache, and the core's
//! checksum then reads it from there. sustain -> sustain went from 4.9-5.1
//! to 5.7-5.9 Gbit/s, alternated in one session (README, Benchmark). Wake-ups are
//! per packet as with the V2 ring (the V3 ring's block timer would hold a
//! lone segment up to a jiffy, 4 ms here). The socket's receive buffer is
//! sized for a whole window of segments ([`rcvbuf_for_window`]); the kernel
//! counts what it drops when the buffer is full ([`PacketRx::take_drops`]).
//!
//! The socket is `SOCK_DGRAM` bound to `ETH_P_IP` on every interface
//! (present and future: moves bring new ones), so a packet starts at the IP
//! header, and its classic BPF filter
//! (`raw_socket::packet_filter_program`) takes only TCP to an owned port
//! addressed to this host (`PACKET_HOST`), never our own outgoing packets
//! (which a packet socket on `lo` also sees). Each packet comes with the
//! link it arrived on (the `sockaddr_ll` name: the next hop back, for
//! [`crate::gso`]) and its checksum state (`PACKET_AUXDATA`): a packet whose
//! TCP checksum the sender left to the device (`lo`, a veth with checksum
//! offload: `TP_STATUS_CSUMNOTREADY`) has it completed before the core sees
//! it, as the kernel's TCP would accept it.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use sustain_core::wire::complete_ipv4_tcp_checksum;

use crate::raw_socket::{packet_filter_program, setsockopt, MAX_FILTER_PORTS};

/// Packets read per `recvmmsg`.
pub(crate) const RX_BATCH: usize = 32;
/// Bytes of each slot kept together with the other slots' (a full-sized
/// Ethernet frame's IP packet fits); a larger packet (`lo`'s 64 KiB MTU, a
/// GRO super-packet) continues in the slot's overflow area.
const SLOT_HEAD: usize = 2048;
/// The largest IPv4 packet.
const MAX_PACKET: usize = 65536;
/// The overflow area of each slot.
const SLOT_TAIL: usize = MAX_PACKET - SLOT_HEAD;
/// Room for one `PACKET_AUXDATA` control message (CMSG_SPACE of a
/// 20-byte `tpacket_auxdata`, 40 bytes on 64-bit Linux), with margin.
const CONTROL: usize = 64;
const _: () = assert!(
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(mem::size_of::<libc::tpacket_auxdata>() as u32) } as usize <= CONTROL
);
/// Receive buffer asked for per byte of window. The kernel charges a
/// packet's whole allocation against the buffer (`truesize`: about 2.3 KiB
/// for a 1500-byte packet on a veth, up to 4.5 KiB behind some NICs), so a
/// window of full-sized segments takes 1.6-3.2 times its size; the kernel
/// doubles what is asked for that bookkeeping, so asking twice the window
/// sets the limit at four times it (up to [`MAX_RCVBUF`]: windows over 512
/// MiB get less).
const RCVBUF_PER_WINDOW: usize = 2;
/// Fewest receive-buffer bytes asked for.
const MIN_RCVBUF: usize = 8 << 20;
/// Most: the kernel's limit for `SO_RCVBUFFORCE` is `INT_MAX / 2`.
const MAX_RCVBUF: usize = (i32::MAX / 2) as usize;

/// The socket receive buffer for a `window` of full-sized segments (the
/// largest window the endpoint advertises), within bounds. A buffer smaller
/// than the window drops the tail of every burst that arrives while the
/// driver is busy (as a too-small ring did: 733-1942 drops per 64 MiB with
/// 16 MiB windows and a 4096-frame ring).
pub(crate) fn rcvbuf_for_window(window: usize) -> usize {
    window
        .saturating_mul(RCVBUF_PER_WINDOW)
        .clamp(MIN_RCVBUF, MAX_RCVBUF)
}

#[derive(Debug, Error)]
pub(crate) enum PacketRxError {
    #[error("opening a packet socket needs root or CAP_NET_RAW: {0}")]
    PermissionDenied(io::Error),
    #[error("packet socket setup failed ({what}): {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> PacketRxError {
    move |source| PacketRxError::Setup { what, source }
}

/// The receiving packet socket, registered with tokio.
pub(crate) struct PacketRx {
    fd: AsyncFd<OwnedFd>,
    /// The receive buffer the kernel granted, in bytes.
    rcvbuf: usize,
}

/// The link a received packet came from: its interface and the sender's
/// link-layer address (for us: the next hop back towards the packet's
/// source, [`crate::gso`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkSource {
    pub ifindex: i32,
    /// ARPHRD_* of the interface.
    pub hatype: u16,
    pub halen: u8,
    pub addr: [u8; 8],
}

/// The driver's receive slots: [`RX_BATCH`] packets per `recvmmsg`, each
/// read into its slot's head and, past [`SLOT_HEAD`] bytes, its overflow
/// area; the heads lie together so that the bytes the kernel writes and the
/// core reads stay in the cache from one batch to the next.
pub(crate) struct RxSlots {
    heads: Vec<u8>,
    tails: Vec<u8>,
    /// A packet longer than a head, made whole.
    whole: Vec<u8>,
    iov: Vec<[libc::iovec; 2]>,
    hdr: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_ll>,
    control: Vec<[u64; CONTROL / 8]>,
    /// Packets passed over: longer than a slot (`MSG_TRUNC`, a BIG TCP
    /// GRO packet over 64 KiB) or with their control message cut
    /// (`MSG_CTRUNC`, so their checksum state is unknown).
    skipped: u64,
}

// SAFETY: the raw pointers inside only ever point into the slots' own
// vectors, whose heap storage does not move with the struct; they are
// rebuilt before every use.
unsafe impl Send for RxSlots {}

impl RxSlots {
    pub(crate) fn new() -> RxSlots {
        RxSlots {
            heads: vec![0; RX_BATCH * SLOT_HEAD],
            tails: vec![0; RX_BATCH * SLOT_TAIL],
            whole: vec![0; MAX_PACKET],
            // SAFETY (all three): zeroed iovec, mmsghdr and sockaddr_ll are
            // valid placeholder values (null pointers, zero lengths).
            iov: vec![unsafe { mem::zeroed() }; RX_BATCH],
            hdr: vec![unsafe { mem::zeroed() }; RX_BATCH],
            names: vec![unsafe { mem::zeroed() }; RX_BATCH],
            control: vec![[0; CONTROL / 8]; RX_BATCH],
            skipped: 0,
        }
    }

    /// Points the first `n` headers at their slots, names and control
    /// buffers. Every pointer is taken from its vector's base pointer, once
    /// per call, so arming one header never invalidates another's.
    fn arm(&mut self, n: usize) {
        debug_assert!(n <= RX_BATCH);
        let heads = self.heads.as_mut_ptr();
        let tails = self.tails.as_mut_ptr();
        let iov = self.iov.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        for i in 0..n {
            // SAFETY: `i < n <= RX_BATCH`, the length of every vector here
            // in its own units (slot heads, overflows, iovec pairs, names,
            // control buffers), so every offset stays inside its vector.
            unsafe {
                *iov.add(i) = [
                    libc::iovec {
                        iov_base: heads.add(i * SLOT_HEAD).cast::<libc::c_void>(),
                        iov_len: SLOT_HEAD,
                    },
                    libc::iovec {
                        iov_base: tails.add(i * SLOT_TAIL).cast::<libc::c_void>(),
                        iov_len: SLOT_TAIL,
                    },
                ];
                // A zeroed mmsghdr is a valid "no name, no control" header;
                // the fields we use are set below.
                self.hdr[i] = mem::zeroed();
                let h = &mut self.hdr[i].msg_hdr;
                h.msg_iov = iov.add(i).cast::<libc::iovec>();
                h.msg_iovlen = 2;
                h.msg_name = names.add(i).cast::<libc::c_void>();
                h.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_control = control.add(i).cast::<libc::c_void>();
                h.msg_controllen = CONTROL;
            }
        }
    }

    /// The `tp_status` of packet `i`'s `PACKET_AUXDATA`, 0 without one.
    fn status(&self, i: usize) -> u32 {
        let h = &self.hdr[i].msg_hdr;
        let total = h.msg_controllen.min(CONTROL);
        if total < mem::size_of::<libc::cmsghdr>() {
            return 0;
        }
        let base = self.control[i].as_ptr() as usize;
        // SAFETY: the kernel wrote `msg_controllen` bytes of control
        // messages (at most CONTROL, our buffer's size, which is 8-aligned)
        // into `control[i]`; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers
        // that start inside that length, and a message is read only if its
        // whole length (`cmsg_len`) also ends inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let len = (*c).cmsg_len as usize;
                let data_len = len.saturating_sub(libc::CMSG_LEN(0) as usize);
                if c as usize + len > base + total {
                    break;
                }
                if (*c).cmsg_level == libc::SOL_PACKET
                    && (*c).cmsg_type == libc::PACKET_AUXDATA
                    && data_len >= mem::size_of::<libc::tpacket_auxdata>()
                {
                    let aux = libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>();
                    return std::ptr::read_unaligned(aux).tp_status;
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        0
    }

    /// Packet `i` of `len` bytes as one slice: its head, or (longer than a
    /// head) head and overflow copied together.
    fn packet(&mut self, i: usize, len: usize) -> &mut [u8] {
        let len = len.min(MAX_PACKET);
        if len <= SLOT_HEAD {
            return &mut self.heads[i * SLOT_HEAD..i * SLOT_HEAD + len];
        }
        self.whole[..SLOT_HEAD].copy_from_slice(&self.heads[i * SLOT_HEAD..(i + 1) * SLOT_HEAD]);
        self.whole[SLOT_HEAD..len]
            .copy_from_slice(&self.tails[i * SLOT_TAIL..i * SLOT_TAIL + len - SLOT_HEAD]);
        &mut self.whole[..len]
    }
}

impl Default for RxSlots {
    fn default() -> Self {
        RxSlots::new()
    }
}

impl PacketRx {
    /// Opens the socket with a receive buffer of `rcvbuf` bytes
    /// ([`rcvbuf_for_window`]). It receives nothing until
    /// [`PacketRx::set_port_filter`] names ports. Must be called inside a
    /// tokio runtime.
    pub(crate) fn open(rcvbuf: usize) -> Result<PacketRx, PacketRxError> {
        // Protocol 0: no packet is queued before the filter is in place;
        // `bind` below names ETH_P_IP.
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => PacketRxError::PermissionDenied(e),
                _ => PacketRxError::Setup {
                    what: "socket(AF_PACKET, SOCK_DGRAM)",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Accept nothing yet.
        set_filter(raw, &[])?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX / 2);
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        }
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)
            .map_err(setup("PACKET_AUXDATA"))?;
        // Our own packets never come back (the filter checks too; this
        // saves the kernel the clone). Older kernels lack it: not needed.
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        // SAFETY: zeroed sockaddr_ll is valid; the fields we need are set.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        // Every interface, present and future.
        addr.sll_ifindex = 0;
        // SAFETY: `addr` is a valid sockaddr_ll of the length we pass.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(PacketRxError::Setup {
                what: "bind to ETH_P_IP",
                source: io::Error::last_os_error(),
            });
        }
        let granted = granted_rcvbuf(&fd);
        if granted < rcvbuf.saturating_mul(2).min(MAX_RCVBUF) {
            // SO_RCVBUFFORCE needs CAP_NET_ADMIN in the initial user
            // namespace (a rootless container lacks it); SO_RCVBUF is capped
            // by net.core.rmem_max. A window's burst then overflows it.
            tracing::warn!(
                asked = rcvbuf,
                granted,
                "the packet socket's receive buffer is smaller than asked: bursts of a \
                 full window will be dropped (raise net.core.rmem_max, or run with \
                 CAP_NET_ADMIN in the initial namespace)"
            );
        }
        // SAFETY: `fd` is an owned descriptor that lives exactly as long as
        // the AsyncFd (I/O safety, tokio#8587).
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| {
                PacketRxError::Setup {
                    what: "registering with tokio",
                    source: e.into_parts().1,
                }
            })?;
        Ok(PacketRx {
            fd,
            rcvbuf: granted,
        })
    }

    /// The receive buffer the kernel granted, in bytes.
    pub(crate) fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// Packets the kernel dropped because the receive buffer was full,
    /// since the last call (PACKET_STATISTICS; reading resets the kernel's
    /// counters). A full buffer loses a burst of segments at once, which
    /// the connection sees as loss.
    pub(crate) fn take_drops(&self) -> io::Result<u32> {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` is a live tpacket_stats and `len` holds its size;
        // the kernel writes at most `len` bytes into it.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if rc == 0 {
            Ok(stats.tp_drops)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Accept only TCP segments to one of `ports` addressed to this host.
    pub(crate) fn set_port_filter(&self, ports: &[u16]) -> io::Result<()> {
        set_filter(self.fd.get_ref().as_raw_fd(), ports).map_err(io::Error::other)
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Reads what is waiting, at most `max` packets (and one batch), into
    /// `slots` and hands `f` each in arrival order, as a slice of its slot,
    /// with the link it came from; returns how many (0: none waiting).
    pub(crate) fn drain(
        &self,
        slots: &mut RxSlots,
        max: usize,
        mut f: impl FnMut(&[u8], &LinkSource),
    ) -> io::Result<usize> {
        let want = max.min(RX_BATCH);
        slots.arm(want);
        // SAFETY: each of the first `want` headers points at its own live
        // slot head and overflow, name and control buffer (armed above),
        // which the kernel fills within the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.get_ref().as_raw_fd(),
                slots.hdr.as_mut_ptr(),
                want as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            if slots.hdr[i].msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                slots.skipped += 1;
                tracing::warn!(
                    len = slots.hdr[i].msg_len,
                    flags = slots.hdr[i].msg_hdr.msg_flags,
                    skipped = slots.skipped,
                    "a received packet did not fit its slot or control buffer; passed over"
                );
                continue;
            }
            let status = slots.status(i);
            let ll = slots.names[i];
            let source = LinkSource {
                ifindex: ll.sll_ifindex,
                hatype: ll.sll_hatype,
                halen: ll.sll_halen,
                addr: ll.sll_addr,
            };
            let len = slots.hdr[i].msg_len as usize;
            let pkt = slots.packet(i, len);
            if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                // A local sender over `lo`, or a veth with checksum offload
                // on, left the TCP checksum to the device (CHECKSUM_PARTIAL:
                // the pseudo-header sum).
                complete_ipv4_tcp_checksum(pkt);
            }
            f(pkt, &source);
        }
        Ok(n)
    }
}

/// What `SO_RCVBUF` reads back (the kernel doubles what was asked for its
/// bookkeeping); 0 if it cannot be read.
fn granted_rcvbuf(fd: &OwnedFd) -> usize {
    nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::RcvBuf).unwrap_or(0)
}

fn set_filter(fd: libc::c_int, ports: &[u16]) -> Result<(), PacketRxError> {
    if ports.len() > MAX_FILTER_PORTS {
        return Err(PacketRxError::Setup {
            what: "port filter",
            source: io::Error::other(format!(
                "{} ports owned; the filter holds at most {MAX_FILTER_PORTS}",
                ports.len()
            )),
        });
    }
    let program = packet_filter_program(ports);
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
        .map_err(setup("SO_ATTACH_FILTER"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_buffer_holds_a_window_of_segments_within_bounds() {
        // The 16 MiB default window: 32 MiB asked (64 MiB granted).
        assert_eq!(rcvbuf_for_window(16 << 20), 32 << 20);
        assert_eq!(rcvbuf_for_window(0), MIN_RCVBUF);
        // A huge window does not ask for more than the kernel can grant.
        assert_eq!(rcvbuf_for_window(usize::MAX), MAX_RCVBUF);
        // Every window's full-sized segments fit at 4.5 KiB each in what
        // the kernel grants (twice what is asked).
        for window in [64 << 10, 4 << 20, 16 << 20, 64 << 20] {
            assert!(2 * rcvbuf_for_window(window) >= window.div_ceil(1448) * 4608);
        }
    }

    #[test]
    fn a_long_packet_is_made_whole_from_head_and_overflow() {
        let mut slots = RxSlots::new();
        let len = SLOT_HEAD + 1000;
        let i = 3;
        for (k, b) in slots.heads[i * SLOT_HEAD..(i + 1) * SLOT_HEAD]
            .iter_mut()
            .enumerate()
        {
            *b = k as u8;
        }
        for (k, b) in slots.tails[i * SLOT_TAIL..i * SLOT_TAIL + 1000]
            .iter_mut()
            .enumerate()
        {
            *b = (SLOT_HEAD + k) as u8;
        }
        let pkt = slots.packet(i, len).to_vec();
        assert_eq!(pkt.len(), len);
        assert!(pkt.iter().enumerate().all(|(k, b)| *b == k as u8));
        // A short one is its head, in place.
        assert_eq!(slots.packet(i, 100), &pkt[..100]);
    }
}
