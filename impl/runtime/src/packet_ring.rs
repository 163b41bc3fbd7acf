//! Receive through an AF_PACKET ring (PACKET_MMAP): the kernel copies each
//! segment for an owned port once, into a frame of a ring shared with us,
//! and the driver hands the core a slice of that frame; no `recvmmsg` copy,
//! one system call per sleep rather than per batch.
//!
//! Together with the ingress drop rule ([`crate::rst_guard`]'s raw-table
//! `PREROUTING` rule per owned port) this keeps the kernel's TCP out of our
//! segments entirely: a packet socket sees a packet before the IP layer, the
//! rule then drops it before routing, conntrack and TCP, so the kernel
//! neither processes it nor answers it with an RST. (With the raw socket,
//! every segment went through the kernel's TCP, which answered each with an
//! RST that the OUTPUT guard rule then dropped.)
//!
//! **TPACKET_V2, not V3.** A V3 ring hands over whole blocks, and only when
//! a block is full or its retire timer fires; the timer's resolution is a
//! jiffy (4 ms at HZ=250, this kernel), so at low rates (handshakes, MSYNs,
//! the ACK of the first data after a move) every segment would wait up to
//! 4 ms, more than the lab's reconnect-latency slack (limit + 5 ms). V2
//! wakes the reader per packet, as the raw socket did (libpcap makes the
//! same choice for its immediate mode). Frames are [`FRAME_SIZE`] bytes: a
//! larger packet (GRO on, or `lo`'s 64 KiB MTU) still arrives whole, through
//! `PACKET_COPY_THRESH`: its frame is marked `TP_STATUS_COPY` and the whole
//! packet waits on the socket's ordinary queue, read with `recv`. A packet
//! whose TCP checksum the sender left to the device (`lo`, a veth with
//! checksum offload: `TP_STATUS_CSUMNOTREADY`) has it completed before the
//! core sees it, as the kernel's TCP would accept it.
//!
//! The socket is `SOCK_DGRAM` bound to `ETH_P_IP` on every interface
//! (present and future: moves bring new ones), so frames start at the IP
//! header and its classic BPF filter
//! (`raw_socket::packet_filter_program`) takes only TCP to an owned
//! port addressed to this host (`PACKET_HOST`), never our own outgoing
//! packets (which a packet socket on `lo` also sees).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use sustain_core::wire::complete_ipv4_tcp_checksum;

use crate::raw_socket::{packet_filter_program, setsockopt, MAX_FILTER_PORTS};

/// Bytes per frame: the TPACKET_V2 header, padding, then an IP packet of up
/// to ~1950 bytes (MTU 1500 with room to spare).
pub(crate) const FRAME_SIZE: usize = 2048;
/// Frames per block (a block is physically contiguous kernel memory).
const FRAMES_PER_BLOCK: usize = 64;
/// Fewest blocks: 64 x 64 frames = 4096 packets, 8 MiB, the raw socket's
/// old receive buffer.
const MIN_BLOCKS: usize = 64;
/// Most blocks: 1024 x 64 frames = 65536 packets, 128 MiB of kernel memory.
const MAX_BLOCKS: usize = 1024;
/// Window bytes per frame: a full-sized segment carries 1448 bytes, so a
/// whole window of them fits with 40 % to spare for the peer's bursts and
/// the segments of other connections.
const WINDOW_PER_FRAME: usize = 1024;

/// Frames for a ring that must hold `window` bytes of full-sized segments
/// (the largest window the endpoint advertises): one frame per KiB, in
/// whole blocks, between 4096 and 65536. A ring smaller than the window
/// drops the tail of every burst that arrives while the driver is busy:
/// 733-1942 drops per 64 MiB with 16 MiB windows and 4096 frames.
pub(crate) fn frames_for_window(window: usize) -> usize {
    let blocks = window
        .div_ceil(WINDOW_PER_FRAME * FRAMES_PER_BLOCK)
        .clamp(MIN_BLOCKS, MAX_BLOCKS);
    blocks * FRAMES_PER_BLOCK
}

#[derive(Debug, Error)]
pub(crate) enum PacketRingError {
    #[error("opening a packet socket needs root or CAP_NET_RAW: {0}")]
    PermissionDenied(io::Error),
    #[error("packet ring setup failed ({what}): {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> PacketRingError {
    move |source| PacketRingError::Setup { what, source }
}

/// The mapped ring. Unmapped on drop (before the socket closes).
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through
// the frame protocol (status word handed back and forth with atomics).
unsafe impl Send for Mapping {}
// SAFETY: as above; only the driver task reads frames (via `&mut Cursor`).
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing
        // borrows the frames past `PacketRing::drain`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast::<libc::c_void>(), self.len);
        }
    }
}

/// A TPACKET_V2 receive ring registered with tokio.
pub(crate) struct PacketRing {
    // Field order: the mapping goes before the socket closes.
    map: Mapping,
    fd: AsyncFd<OwnedFd>,
    /// Frames in the ring ([`frames_for_window`]).
    frames: usize,
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

/// Offset of the `sockaddr_ll` in a TPACKET_V2 frame:
/// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const LL_OFFSET: usize = (mem::size_of::<libc::tpacket2_hdr>() + 15) & !15;

/// Where the driver is in the ring (the next frame to look at).
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    next: usize,
}

impl PacketRing {
    /// Opens the socket and a ring of `frames` frames (a multiple of a
    /// block's, from [`frames_for_window`]). It receives nothing until
    /// [`PacketRing::set_port_filter`] names ports. Must be called inside a
    /// tokio runtime.
    pub(crate) fn open(frames: usize) -> Result<PacketRing, PacketRingError> {
        debug_assert!(frames >= FRAMES_PER_BLOCK && frames.is_multiple_of(FRAMES_PER_BLOCK));
        // Protocol 0: no packet is queued before the filter and the ring
        // are in place; `bind` below names ETH_P_IP.
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
                Some(libc::EPERM | libc::EACCES) => PacketRingError::PermissionDenied(e),
                _ => PacketRingError::Setup {
                    what: "socket(AF_PACKET, SOCK_DGRAM)",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(setup("PACKET_VERSION TPACKET_V2"))?;
        // Accept nothing yet.
        set_filter(raw, &[])?;
        // Any packet larger than a frame: also queued whole (TP_STATUS_COPY).
        let thresh: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &thresh)
            .map_err(setup("PACKET_COPY_THRESH"))?;
        let size: libc::c_int = 8 << 20;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &size);
        }
        // Our own packets never come back (the filter checks too; this
        // saves the kernel the clone). Older kernels lack it: not needed.
        let one: libc::c_int = 1;
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        let req = libc::tpacket_req {
            tp_block_size: (FRAME_SIZE * FRAMES_PER_BLOCK) as u32,
            tp_block_nr: (frames / FRAMES_PER_BLOCK) as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: frames as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(setup("PACKET_RX_RING"))?;
        let len = FRAME_SIZE * frames;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(PacketRingError::Setup {
                what: "mmap of the ring",
                source: io::Error::last_os_error(),
            });
        }
        let map = Mapping {
            base: NonNull::new(base.cast::<u8>()).expect("mmap returned null"),
            len,
        };
        // SAFETY: zeroed sockaddr_ll is valid; the fields we need are set.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = 0; // every interface, present and future
                              // SAFETY: `addr` is a valid sockaddr_ll of the length we pass.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(PacketRingError::Setup {
                what: "bind to ETH_P_IP",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is an owned descriptor that lives exactly as long as
        // the AsyncFd (I/O safety, tokio#8587).
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| {
                PacketRingError::Setup {
                    what: "registering with tokio",
                    source: e.into_parts().1,
                }
            })?;
        Ok(PacketRing { map, fd, frames })
    }

    /// Accept only TCP segments to one of `ports` addressed to this host.
    /// Frames the kernel dropped because the ring was full, since the last
    /// call (PACKET_STATISTICS; reading resets the kernel's counters). A
    /// full ring loses a burst of segments at once, which the connection
    /// sees as loss.
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

    pub(crate) fn set_port_filter(&self, ports: &[u16]) -> io::Result<()> {
        set_filter(self.fd.get_ref().as_raw_fd(), ports).map_err(io::Error::other)
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// The status word of frame `i`.
    fn status(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < self.frames);
        // SAFETY: frame `i` lies inside the mapping and starts with the
        // u32 tp_status (tpacket2_hdr), 4-aligned (frames are 2 KiB
        // aligned in a page-aligned map); the kernel and we only touch it
        // atomically.
        unsafe { &*(self.map.base.as_ptr().add(i * FRAME_SIZE) as *const AtomicU32) }
    }

    /// Hands `f` every packet waiting in the ring, at most `max`, in
    /// arrival order, each as a slice of its frame (or of `scratch` for a
    /// packet too large for a frame, then without its link source); returns
    /// how many. Frames go back to the kernel as soon as `f` returns.
    pub(crate) fn drain(
        &self,
        cursor: &mut Cursor,
        max: usize,
        scratch: &mut [u8],
        mut f: impl FnMut(&[u8], Option<&LinkSource>),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let i = cursor.next;
            let status = self.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: TP_STATUS_USER: the kernel has finished writing the
            // frame and will not touch it until we store TP_STATUS_KERNEL;
            // the header lies at the frame's start.
            let hdr = unsafe {
                &*(self.map.base.as_ptr().add(i * FRAME_SIZE) as *const libc::tpacket2_hdr)
            };
            if status & libc::TP_STATUS_COPY != 0 {
                // Too large for a frame: the whole packet is next on the
                // socket's queue.
                // SAFETY: `scratch` is a live writable buffer of its length.
                let got = unsafe {
                    libc::recv(
                        self.fd.get_ref().as_raw_fd(),
                        scratch.as_mut_ptr().cast::<libc::c_void>(),
                        scratch.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if got > 0 {
                    let pkt = &mut scratch[..got as usize];
                    if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                        // A local sender over `lo`, or a veth with checksum offload
                        // on, left the TCP checksum to the device
                        // (CHECKSUM_PARTIAL: the pseudo-header sum).
                        complete_ipv4_tcp_checksum(pkt);
                    }
                    f(pkt, None);
                }
            } else {
                let net = hdr.tp_net as usize;
                let len = hdr.tp_snaplen as usize;
                if net + len <= FRAME_SIZE {
                    // SAFETY: the packet lies inside frame `i` (checked
                    // above), which is ours, writable, until we hand it
                    // back below; nothing else refers to it meanwhile.
                    let pkt = unsafe {
                        std::slice::from_raw_parts_mut(
                            self.map.base.as_ptr().add(i * FRAME_SIZE + net),
                            len,
                        )
                    };
                    if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                        // As above.
                        complete_ipv4_tcp_checksum(pkt);
                    }
                    // SAFETY: the kernel writes a sockaddr_ll at LL_OFFSET of
                    // every frame (TPACKET_V2 layout), inside frame `i`.
                    let ll = unsafe {
                        &*(self.map.base.as_ptr().add(i * FRAME_SIZE + LL_OFFSET)
                            as *const libc::sockaddr_ll)
                    };
                    let source = LinkSource {
                        ifindex: ll.sll_ifindex,
                        hatype: ll.sll_hatype,
                        halen: ll.sll_halen,
                        addr: ll.sll_addr,
                    };
                    f(pkt, Some(&source));
                }
            }
            self.status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            cursor.next = (i + 1) % self.frames;
            n += 1;
        }
        n
    }
}

fn set_filter(fd: libc::c_int, ports: &[u16]) -> Result<(), PacketRingError> {
    if ports.len() > MAX_FILTER_PORTS {
        return Err(PacketRingError::Setup {
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
    fn the_ring_holds_the_window_in_whole_blocks_within_bounds() {
        // A 4 MiB window (the default until session 12): 4096 frames.
        assert_eq!(frames_for_window(4 << 20), 4096);
        assert_eq!(frames_for_window(0), 4096);
        // 16 MiB: one frame per KiB, 16384 frames (32 MiB of ring).
        assert_eq!(frames_for_window(16 << 20), 16384);
        // Rounded up to a whole block.
        assert_eq!(frames_for_window((16 << 20) + 1), 16384 + FRAMES_PER_BLOCK);
        // A 1 GiB window does not ask for 2 GiB of kernel memory.
        assert_eq!(frames_for_window(1 << 30), MAX_BLOCKS * FRAMES_PER_BLOCK);
        // Every window's full-sized segments fit up to the cap.
        for window in [4 << 20, 8 << 20, 16 << 20, 64 << 20] {
            assert!(frames_for_window(window) * 1448 >= window);
        }
    }
}
