//! Raw IPv4 socket for TCP: we write whole IPv4 packets (IP_HDRINCL) and
//! receive every TCP packet addressed to this namespace, filtered in the
//! kernel by a classic BPF program on our local ports.
//!
//! Send and receive are batched with sendmmsg(2)/recvmmsg(2): at 2 Gbit/s
//! and 1500-byte packets one syscall per packet would be the bottleneck.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use sustain_core::wire::complete_ipv4_tcp_checksum;
use sustain_core::Transmit;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Slots in one receive or send batch.
pub(crate) const BATCH: usize = 32;
/// Bytes per slot: the largest IPv4 packet.
pub(crate) const SLOT: usize = 65536;

/// Why the raw socket could not be opened or set up.
#[derive(Debug, Error)]
pub enum RawSocketError {
    /// The process lacks CAP_NET_RAW (or CAP_NET_ADMIN for `SO_MARK`).
    #[error(
        "opening a raw IPv4 socket needs root or CAP_NET_RAW (and CAP_NET_ADMIN for SO_MARK): {0}"
    )]
    PermissionDenied(io::Error),
    /// A socket call other than the permission check failed.
    #[error("raw socket setup failed ({what}): {source}")]
    Setup {
        /// The step that failed (`socket`, a socket option, ...).
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// A raw IPPROTO_TCP socket registered with tokio.
pub(crate) struct RawSocket {
    fd: AsyncFd<OwnedFd>,
}

pub(crate) fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref::<T>(value).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl RawSocket {
    /// Opens the socket, sets IP_HDRINCL, SO_MARK = `mark`, large buffers
    /// and non-blocking mode. Must be called inside a tokio runtime.
    pub(crate) fn open(mark: u32) -> Result<RawSocket, RawSocketError> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_TCP,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => RawSocketError::PermissionDenied(e),
                _ => RawSocketError::Setup {
                    what: "socket(AF_INET, SOCK_RAW, IPPROTO_TCP)",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, &one).map_err(|source| {
            RawSocketError::Setup {
                what: "IP_HDRINCL",
                source,
            }
        })?;
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_MARK, &mark).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                RawSocketError::PermissionDenied(e)
            } else {
                RawSocketError::Setup {
                    what: "SO_MARK",
                    source: e,
                }
            }
        })?;
        // Big buffers absorb bursts while the event loop is busy. FORCE
        // variants ignore rmem_max/wmem_max (we have CAP_NET_ADMIN).
        let size: libc::c_int = 8 << 20;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt(raw, libc::SOL_SOCKET, force, &size).is_err() {
                let _ = setsockopt(raw, libc::SOL_SOCKET, plain, &size);
            }
        }
        // SAFETY: `fd` is an owned descriptor that lives exactly as long as
        // the AsyncFd (I/O safety, tokio#8587).
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| RawSocketError::Setup {
                    what: "registering with tokio",
                    source: e.into_parts().1,
                })?;
        Ok(RawSocket { fd })
    }

    /// Accept only TCP packets whose destination port is in `ports`
    /// (a classic BPF filter, so the kernel does not copy the namespace's
    /// other TCP traffic to us). An empty set accepts nothing; more than
    /// [`MAX_FILTER_PORTS`] is an error.
    pub(crate) fn set_port_filter(&self, ports: &[u16]) -> io::Result<()> {
        if ports.len() > MAX_FILTER_PORTS {
            return Err(io::Error::other(format!(
                "{} ports owned; the raw socket's filter holds at most {MAX_FILTER_PORTS}",
                ports.len()
            )));
        }
        let program = port_filter_program(ports);
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        setsockopt(
            self.fd.get_ref().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog,
        )
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        let mut guard = self.fd.writable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Non-blocking recvmmsg into `batch`; returns how many packets arrived
    /// (0 if none were waiting).
    pub(crate) fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let fd = self.fd.get_ref().as_raw_fd();
        for i in 0..BATCH {
            batch.iov[i] = libc::iovec {
                iov_base: batch.buf[i * SLOT..].as_mut_ptr().cast::<libc::c_void>(),
                iov_len: SLOT,
            };
            // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
            batch.hdr[i] = unsafe { mem::zeroed() };
            batch.hdr[i].msg_hdr.msg_iov = &raw mut batch.iov[i];
            batch.hdr[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a distinct live slot of `batch.buf`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                batch.hdr.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        batch.count = n as usize;
        Ok(batch.count)
    }

    /// Sends the queued packets of `batch` with sendmmsg; returns how many
    /// left (the rest stay queued: the socket buffer is full). When the
    /// kernel refuses the first packet (no buffer space on the device, or
    /// no route while an address goes away under a move) nothing is sent,
    /// the packets stay queued and [`SendBatch::take_refusal`] says why: the
    /// caller decides (the endpoint driver retries or hands the segments
    /// back to the core, PROTOCOL.md §7; the proxy drops, as a router does).
    pub(crate) fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let end = batch.len;
        self.send_upto(batch, end)
    }

    /// [`RawSocket::send_batch`] for the queued packets before slot `end`
    /// only (the rest leave another way, [`crate::gso`]).
    pub(crate) fn send_upto(&self, batch: &mut SendBatch, end: usize) -> io::Result<usize> {
        let fd = self.fd.get_ref().as_raw_fd();
        let pending = end.min(batch.len).saturating_sub(batch.sent);
        if pending == 0 {
            return Ok(0);
        }
        for i in batch.sent..batch.sent + pending {
            batch.complete_checksum(i);
        }
        let mut iov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: zeroed mmsghdr/sockaddr_in are valid initial values.
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        let mut addrs: [libc::sockaddr_in; BATCH] = unsafe { mem::zeroed() };
        for k in 0..pending {
            let i = batch.sent + k;
            iov[k] = libc::iovec {
                iov_base: batch.buf[i * SLOT..].as_mut_ptr().cast::<libc::c_void>(),
                iov_len: batch.sends[i].size,
            };
            addrs[k] = sockaddr(*batch.sends[i].dst.ip());
            hdr[k].msg_hdr.msg_iov = &raw mut iov[k];
            hdr[k].msg_hdr.msg_iovlen = 1;
            hdr[k].msg_hdr.msg_name = (&raw mut addrs[k]).cast::<libc::c_void>();
            hdr[k].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: headers point into `iov`, `addrs` and `batch.buf`, all live.
        let n = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), pending as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(0),
                // A device queue (or the veth peer's backlog) is full.
                Some(libc::ENOBUFS) => {
                    batch.refusal = Some(Refusal::NoBuffer);
                    return Ok(0);
                }
                // No route: the address or route just went away under a
                // move (the address watcher tells the core in a moment).
                Some(
                    libc::ENETUNREACH
                    | libc::EHOSTUNREACH
                    | libc::ENETDOWN
                    | libc::EHOSTDOWN
                    | libc::EADDRNOTAVAIL,
                ) => {
                    batch.refusal = Some(Refusal::NoRoute);
                    return Ok(0);
                }
                _ => return Err(e),
            }
        }
        batch.mark_sent(n as usize);
        Ok(n as usize)
    }
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Most ports one filter can list: the kernel takes at most 4096
/// instructions (BPF_MAXINSNS) and each port costs two.
pub(crate) const MAX_FILTER_PORTS: usize = 2000;

/// Classic BPF: accept IPv4 TCP packets whose destination port is one of
/// `ports`. The raw socket hands the filter the packet from the IP header.
/// Every jump is short (each port is a compare followed by its own
/// "accept"), so the program works for any number of ports up to
/// [`MAX_FILTER_PORTS`], not just the 255 an 8-bit jump offset can skip.
fn port_filter_program(ports: &[u16]) -> Vec<libc::sock_filter> {
    filter_program(ports, false)
}

/// [`port_filter_program`] for a packet socket (`SOCK_DGRAM`, so the packet
/// also starts at the IP header): it first accepts only packets addressed
/// to this host (`PACKET_HOST`: not our own outgoing ones, which a packet
/// socket on `lo` also sees, nor another host's a bridge flooded to us) that
/// carry TCP, the two things a raw IPPROTO_TCP socket gets for free.
pub(crate) fn packet_filter_program(ports: &[u16]) -> Vec<libc::sock_filter> {
    filter_program(ports, true)
}

fn filter_program(ports: &[u16], packet_socket: bool) -> Vec<libc::sock_filter> {
    const BPF_LD: u16 = 0x00;
    const BPF_LDX: u16 = 0x01;
    const BPF_JMP: u16 = 0x05;
    const BPF_RET: u16 = 0x06;
    const BPF_W: u16 = 0x00;
    const BPF_H: u16 = 0x08;
    const BPF_B: u16 = 0x10;
    const BPF_ABS: u16 = 0x20;
    const BPF_IND: u16 = 0x40;
    const BPF_MSH: u16 = 0xa0;
    const BPF_JEQ: u16 = 0x10;
    const BPF_JSET: u16 = 0x40;
    const BPF_K: u16 = 0x00;
    const REJECT: u32 = 0;
    const ACCEPT: u32 = 0x0004_0000; // the whole packet
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let ports = &ports[..ports.len().min(MAX_FILTER_PORTS)];
    let mut p = Vec::with_capacity(2 * ports.len() + 10);
    if packet_socket {
        // The packet type, from the socket buffer's metadata.
        let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
        p.push(ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, pkttype));
        p.push(ins(
            BPF_JMP | BPF_JEQ | BPF_K,
            1,
            0,
            u32::from(libc::PACKET_HOST),
        ));
        p.push(ins(BPF_RET | BPF_K, 0, 0, REJECT));
        // IPv4 protocol field: TCP only.
        p.push(ins(BPF_LD | BPF_B | BPF_ABS, 0, 0, 9));
        p.push(ins(
            BPF_JMP | BPF_JEQ | BPF_K,
            1,
            0,
            libc::IPPROTO_TCP as u32,
        ));
        p.push(ins(BPF_RET | BPF_K, 0, 0, REJECT));
    }
    // Fragments other than the first carry no TCP header: reject them
    // (the core rejects fragments anyway).
    p.push(ins(BPF_LD | BPF_H | BPF_ABS, 0, 0, 6)); // frag field
    p.push(ins(BPF_JMP | BPF_JSET | BPF_K, 0, 1, 0x1fff));
    p.push(ins(BPF_RET | BPF_K, 0, 0, REJECT));
    // X = IP header length.
    p.push(ins(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0));
    // A = TCP destination port.
    p.push(ins(BPF_LD | BPF_H | BPF_IND, 0, 0, 2));
    for port in ports {
        // Equal: fall through to the accept; otherwise skip it.
        p.push(ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, u32::from(*port)));
        p.push(ins(BPF_RET | BPF_K, 0, 0, ACCEPT));
    }
    p.push(ins(BPF_RET | BPF_K, 0, 0, REJECT));
    p
}

/// Preallocated receive batch.
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers inside only ever point into `buf`, which moves
// with the batch; they are rebuilt before every use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0; BATCH * SLOT],
            // SAFETY: zeroed iovec/mmsghdr are valid placeholder values.
            iov: vec![unsafe { mem::zeroed() }; BATCH],
            hdr: vec![unsafe { mem::zeroed() }; BATCH],
            count: 0,
        }
    }

    /// The packets received by the last `recv_batch`.
    pub(crate) fn packets(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(move |i| {
            let len = (self.hdr[i].msg_len as usize).min(SLOT);
            &self.buf[i * SLOT..i * SLOT + len]
        })
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

/// Why the kernel refused the first pending packet of a [`SendBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// ENOBUFS: a device queue is full; it drains by itself.
    NoBuffer,
    /// No route or address for the packet (a move under way).
    NoRoute,
}

/// Packets waiting to be sent, with their destinations.
pub(crate) struct SendBatch {
    buf: Vec<u8>,
    /// Where each queued packet goes and its length, as the core said.
    sends: [Transmit; BATCH],
    len: usize,
    sent: usize,
    /// Packets the kernel refused and the sender gave up on
    /// ([`SendBatch::drop_first`], [`SendBatch::discard_pending`]).
    pub dropped: u64,
    /// Set by a send the kernel refused; see [`SendBatch::take_refusal`].
    refusal: Option<Refusal>,
}

impl SendBatch {
    pub(crate) fn new() -> SendBatch {
        SendBatch {
            buf: vec![0; BATCH * SLOT],
            sends: [NOTHING; BATCH],
            len: 0,
            sent: 0,
            dropped: 0,
            refusal: None,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == BATCH
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == self.sent
    }

    /// Slots of the packets queued and not yet sent.
    pub(crate) fn pending(&self) -> std::ops::Range<usize> {
        self.sent..self.len
    }

    /// The packet in slot `i`.
    pub(crate) fn packet(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..i * SLOT + self.sends[i].size]
    }

    /// The packet in slot `i`, writable (headers patched in place).
    pub(crate) fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * SLOT..i * SLOT + self.sends[i].size]
    }

    /// Completes slot `i`'s TCP checksum if the core left it partial
    /// (`Config::partial_checksums`, set where GSO sends: the kernel
    /// completes a super-segment's checksums, the raw socket sends the
    /// bytes as they are). Once: the slot is marked complete.
    fn complete_checksum(&mut self, i: usize) {
        if self.sends[i].checksum_partial {
            complete_ipv4_tcp_checksum(self.packet_mut(i));
            self.sends[i].checksum_partial = false;
        }
    }

    /// The next `n` pending packets left (or were counted as lost).
    pub(crate) fn mark_sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.len);
        if self.sent == self.len {
            self.sent = 0;
            self.len = 0;
        }
    }

    /// Why the last send left the first pending packet queued, if the
    /// kernel refused it (and not merely a full socket buffer); cleared.
    pub(crate) fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// Gives up on the first pending packet (counted in `dropped`).
    pub(crate) fn drop_first(&mut self) {
        if !self.is_empty() {
            self.dropped += 1;
            self.mark_sent(1);
        }
    }

    /// Gives up on every pending packet, newest first, handing each to
    /// `each` (counted in `dropped`).
    pub(crate) fn discard_pending(&mut self, mut each: impl FnMut(&[u8])) {
        for i in self.pending().rev() {
            each(self.packet(i));
            self.dropped += 1;
        }
        self.sent = 0;
        self.len = 0;
    }

    /// Where the packet in slot `i` goes and where it leaves from.
    pub(crate) fn transmit(&self, i: usize) -> Transmit {
        self.sends[i]
    }

    /// Lets `fill` write one packet into the next free slot; it says where
    /// the packet goes and how long it is ([`Transmit`], from the core), or
    /// `None` if it had nothing to send.
    pub(crate) fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<Transmit>) -> bool {
        if self.is_full() {
            return false;
        }
        let slot = &mut self.buf[self.len * SLOT..(self.len + 1) * SLOT];
        match fill(slot) {
            Some(transmit) if (20..=SLOT).contains(&transmit.size) => {
                self.sends[self.len] = transmit;
                self.len += 1;
                true
            }
            _ => false,
        }
    }
}

/// An empty slot's entry.
const NOTHING: Transmit = Transmit {
    dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    size: 0,
    checksum_partial: false,
};

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the subset of classic BPF our filter uses, to check the
    /// jump offsets without a kernel.
    fn run(program: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        run_typed(program, pkt, libc::PACKET_HOST)
    }

    /// `run` for a packet whose socket-buffer packet type is `pkttype`.
    fn run_typed(program: &[libc::sock_filter], pkt: &[u8], pkttype: u8) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| u32::from(pkt.get(i).copied().unwrap_or(0));
        loop {
            let ins = program[pc];
            pc += 1;
            match ins.code {
                0x20 if ins.k == (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32 => {
                    a = u32::from(pkttype);
                }
                0x30 => a = byte(ins.k as usize),
                0x28 => a = byte(ins.k as usize) << 8 | byte(ins.k as usize + 1),
                0x48 => {
                    a = byte(x as usize + ins.k as usize) << 8
                        | byte(x as usize + ins.k as usize + 1);
                }
                0xb1 => x = 4 * (byte(ins.k as usize) & 0xf),
                0x45 => pc += if a & ins.k != 0 { ins.jt } else { ins.jf } as usize,
                0x15 => pc += if a == ins.k { ins.jt } else { ins.jf } as usize,
                0x06 => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn packet(dst_port: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = libc::IPPROTO_TCP as u8;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[22..24].copy_from_slice(&dst_port.to_be_bytes());
        p
    }

    #[test]
    fn a_queued_packet_goes_where_its_transmit_says() {
        let mut batch = SendBatch::new();
        let to = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 443);
        let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000);
        // The bytes name no address at all: the batch never reads them.
        assert!(batch.push_with(|slot| {
            slot[..40].fill(0);
            Some(Transmit {
                dst: to,
                src: from,
                size: 40,
                checksum_partial: false,
            })
        }));
        assert_eq!(batch.transmit(0).dst, to);
        assert_eq!(batch.transmit(0).src, from);
        assert_eq!(batch.packet(0).len(), 40);
        // Nothing to send, or a length no IPv4 packet has: nothing queued.
        assert!(!batch.push_with(|_| None));
        assert!(!batch.push_with(|_| Some(Transmit {
            size: 19,
            ..NOTHING
        })));
        assert_eq!(batch.pending(), 0..1);
    }

    #[test]
    fn port_filter_accepts_only_listed_ports() {
        let prog = port_filter_program(&[80, 5001, 443]);
        for port in [80, 5001, 443] {
            assert_ne!(run(&prog, &packet(port, 0)), 0, "port {port}");
        }
        for port in [81, 0, 65535] {
            assert_eq!(run(&prog, &packet(port, 0)), 0, "port {port}");
        }
        // Non-first fragment of a packet to a listed port is rejected.
        assert_eq!(run(&prog, &packet(80, 0x0010)), 0);
        assert_eq!(run(&port_filter_program(&[]), &packet(80, 0)), 0);
    }

    #[test]
    fn port_filter_scales_past_eight_bit_jumps() {
        let ports: Vec<u16> = (10_000..10_000 + 1500).collect();
        let prog = port_filter_program(&ports);
        assert!(prog.len() <= 4096);
        for port in [10_000, 10_255, 10_256, 11_499] {
            assert_ne!(run(&prog, &packet(port, 0)), 0, "port {port}");
        }
        assert_eq!(run(&prog, &packet(11_500, 0)), 0);
        assert_eq!(run(&prog, &packet(9_999, 0)), 0);
    }

    #[test]
    fn packet_filter_takes_only_tcp_to_this_host() {
        let prog = packet_filter_program(&[5001]);
        assert_ne!(run(&prog, &packet(5001, 0)), 0);
        assert_eq!(run(&prog, &packet(5002, 0)), 0);
        // Our own packets leaving (a packet socket on lo sees them too),
        // and another host's.
        for pkttype in [
            libc::PACKET_OUTGOING,
            libc::PACKET_OTHERHOST,
            libc::PACKET_BROADCAST,
        ] {
            assert_eq!(run_typed(&prog, &packet(5001, 0), pkttype), 0, "{pkttype}");
        }
        let mut udp = packet(5001, 0);
        udp[9] = libc::IPPROTO_UDP as u8;
        assert_eq!(run(&prog, &udp), 0);
        assert_eq!(run(&prog, &packet(5001, 0x0010)), 0);
        let many: Vec<u16> = (10_000..10_000 + MAX_FILTER_PORTS as u16).collect();
        assert!(packet_filter_program(&many).len() <= 4096);
    }

    /// A slot the core left with a partial checksum (`Config::partial_checksums`)
    /// is completed before the raw socket sends it, once: completing it again
    /// would not give a checksum.
    #[test]
    fn a_partial_checksum_is_completed_once_before_the_raw_socket_sends() {
        use sustain_core::wire::{emit_ipv4_tcp_with, parse_ipv4_tcp, Checksum, Ipv4Repr, TcpRepr};
        let (from, to) = (
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 443),
        );
        let payload = [7u8; 1001];
        let seg = TcpRepr {
            src_port: from.port(),
            dst_port: to.port(),
            payload: &payload,
            ..TcpRepr::default()
        };
        let mut batch = SendBatch::new();
        assert!(batch.push_with(|slot| {
            let size = emit_ipv4_tcp_with(
                &Ipv4Repr::new(*from.ip(), *to.ip()),
                &seg,
                slot,
                Checksum::Partial,
            )
            .ok()?;
            Some(Transmit {
                dst: to,
                src: from,
                size,
                checksum_partial: true,
            })
        }));
        assert!(
            parse_ipv4_tcp(batch.packet(0)).is_err(),
            "partial as queued"
        );
        batch.complete_checksum(0);
        assert!(parse_ipv4_tcp(batch.packet(0)).is_ok(), "complete");
        assert!(!batch.transmit(0).checksum_partial);
        let once = batch.packet(0).to_vec();
        batch.complete_checksum(0);
        assert_eq!(batch.packet(0), &once[..]);
    }
}
