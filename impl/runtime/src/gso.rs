//! Transmit bulk data as GSO super-segments through an AF_PACKET socket
//! (`PACKET_VNET_HDR`): a run of the core's full-sized data segments of one
//! connection leaves as one packet of up to 64 KiB, and the kernel cuts it
//! back into exactly those segments (software GSO, sequence numbers and
//! checksums per segment) on its way to the device. One system call, one
//! socket buffer, one pass through the output path per run instead of per
//! segment; the segments on the wire are the core's.
//!
//! A run is what [`run_len`] accepts: consecutive packets of one connection
//! whose IP and TCP headers are identical except for the fields GSO
//! rewrites (total length, IP id, sequence number, checksums), whose
//! sequence numbers follow on, all carrying exactly the first one's payload
//! size (the MSS of the run) but the last, with only ACK set (the last may
//! add PSH, which GSO keeps on the last segment only). Anything else (a
//! SYN, a pure ACK, a lone segment, a retransmission out of order, IP
//! options) goes out on the raw socket as before, in order.
//!
//! **Where to send it.** A packet socket bypasses routing and ARP, so it
//! needs the interface and the next hop's link-layer address. Both are
//! learned from the receiving packet socket ([`NextHops::learn`]): the peer's segments
//! to our address arrive on the interface we route back through, from the
//! next hop's address (the router, or the peer on a shared link; zeros on
//! `lo`). An entry is used only while fresh (a segment seen in the last
//! [`FRESH`]) and while the kernel still routes that address pair (asked
//! once per pair, [`NextHops::routed`]); it is forgotten on every address or
//! route change, which the process's rtnetlink listener
//! ([`NetEvents`]) reports before every send, so after a move
//! the first segments go by the raw socket (which routes and resolves, and
//! refuses while no route is left) until the peer's MSYN-ACK or ACKs arrive
//! on the new path. Only Ethernet
//! and loopback interfaces qualify (the vnet header's checksum offsets
//! count their 14-byte link header).
//!
//! Trust: a next hop is taken from any segment to us, before the core has
//! judged it, so a host on our own link that forges a segment from the
//! peer's address can draw our bulk data to its link-layer address for up
//! to [`FRESH`] (or until the peer's next segment). That is what the same
//! host can do to the kernel's own traffic with a forged ARP reply; a
//! sender off our link cannot, since its segments reach us from the
//! router's address. (Learning only from segments the core accepted would
//! close it and needs a signal from the core.)
//!
//! What the packet socket skips: the host's own netfilter OUTPUT and
//! POSTROUTING (the lab's delay lines, NAPTs and captures are on routers or
//! interfaces, which still see every segment); qdiscs are kept.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use sustain_core::wire::{Ipv4Packet, TcpPacket, PROTOCOL_TCP};
use sustain_core::Transmit;

use crate::netwatch::NetEvents;
use crate::packet_rx::LinkSource;
use crate::raw_socket::{setsockopt, RawSocket, SendBatch, BATCH};

/// How long a learned next hop stays usable without a segment from it.
pub(crate) const FRESH: Duration = Duration::from_secs(1);
/// Link-layer header length the vnet offsets count (Ethernet, and `lo`).
const LL_HLEN: u16 = 14;
/// `struct virtio_net_hdr` (legacy: host byte order).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VNET_HDR_LEN: usize = 10;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IPv4 packet.
const MAX_IP: usize = 65535;

/// The interface and next-hop address packets to one peer leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub ifindex: i32,
    pub addr: [u8; 8],
    seen: Instant,
}

/// Next hops learned from received segments, per (local, remote) address,
/// and the link-layer address of each interface we send from.
#[derive(Debug, Default)]
pub(crate) struct NextHops {
    map: HashMap<(Ipv4Addr, Ipv4Addr), Hop>,
    own: HashMap<i32, [u8; 6]>,
    /// Whether the kernel has a route from local to remote, asked once per
    /// address pair after each change ([`NextHops::routed`]).
    routes: HashMap<(Ipv4Addr, Ipv4Addr), bool>,
}

impl NextHops {
    /// Records where `pkt` (an IPv4 packet addressed to us) came from.
    pub(crate) fn learn(&mut self, pkt: &[u8], from: &LinkSource, now: Instant) {
        if pkt.len() < 20
            || from.halen != 6
            || !(from.hatype == libc::ARPHRD_ETHER || from.hatype == libc::ARPHRD_LOOPBACK)
        {
            return;
        }
        // At least the fixed header: the addresses are there.
        let ip = Ipv4Packet::new_unchecked(pkt);
        self.map.insert(
            (ip.dst_addr(), ip.src_addr()),
            Hop {
                ifindex: from.ifindex,
                addr: from.addr,
                seen: now,
            },
        );
    }

    /// The fresh next hop for packets from `local` to `remote`.
    pub(crate) fn get(&self, local: Ipv4Addr, remote: Ipv4Addr, now: Instant) -> Option<Hop> {
        self.map
            .get(&(local, remote))
            .filter(|h| now.saturating_duration_since(h.seen) < FRESH)
            .copied()
    }

    pub(crate) fn forget(&mut self, local: Ipv4Addr, remote: Ipv4Addr) {
        self.map.remove(&(local, remote));
    }

    /// An address or route changed: learn everything again.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.own.clear();
        self.routes.clear();
    }

    /// Whether the kernel would route a packet from `local` to `remote`
    /// now, asked once per address pair until the next [`clear`]. A learned
    /// next hop is not enough: while a move takes the old uplink apart
    /// (route first, then address, then link), the peer's segments still
    /// arrive on it and teach the old hop again, and what GSO sent by it
    /// then would be lost with the link, where the raw socket's refusal
    /// hands it back (PROTOCOL.md §7).
    ///
    /// [`clear`]: NextHops::clear
    fn routed(&mut self, local: Ipv4Addr, remote: Ipv4Addr) -> bool {
        *self.routes.entry((local, remote)).or_insert_with(|| {
            // A connected UDP socket asks the routing table: bind fails
            // once the address is gone, connect once no route is left.
            let ok = std::net::UdpSocket::bind((local, 0))
                .and_then(|s| s.connect((remote, 9)))
                .is_ok();
            if !ok {
                tracing::debug!(%local, %remote, "no route: GSO waits for the next change");
            }
            ok
        })
    }

    /// Our own link-layer address on `ifindex` (asked once per interface).
    pub(crate) fn own_addr(&mut self, gso: &GsoSender, ifindex: i32) -> io::Result<[u8; 6]> {
        if let Some(a) = self.own.get(&ifindex) {
            return Ok(*a);
        }
        let a = gso.interface_addr(ifindex)?;
        self.own.insert(ifindex, a);
        Ok(a)
    }
}

/// The header fields of an IPv4 TCP segment a run is judged by.
#[derive(Debug, Clone, Copy)]
struct Seg {
    thl: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// Parses a segment we may coalesce: IPv4 without options, TCP, not a
/// fragment, total length = packet length.
fn seg(p: &[u8]) -> Option<Seg> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.header_len() != 20
        || ip.protocol() != PROTOCOL_TCP
        || ip.more_fragments()
        || ip.frag_offset() != 0
        || usize::from(ip.total_len()) != p.len()
    {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(Seg {
        thl: tcp.header_len(),
        payload: tcp.payload().len(),
        seq: tcp.seq_number().0,
        flags: tcp.flags().0,
    })
}

/// Whether `next` continues a run that starts with `first` and ends so far
/// with `prev` (module docs).
fn continues(first: &[u8], f: &Seg, prev: &Seg, next: &[u8]) -> bool {
    let Some(n) = seg(next) else {
        return false;
    };
    let t = 20 + f.thl;
    n.thl == f.thl
        && prev.payload == f.payload
        && prev.flags == TCP_ACK
        && (n.flags == TCP_ACK || n.flags == TCP_ACK | TCP_PSH)
        && n.payload > 0
        && n.payload <= f.payload
        && n.seq == prev.seq.wrapping_add(prev.payload as u32)
        // IP: all but total length, id and checksum.
        && first[0..2] == next[0..2]
        && first[6..10] == next[6..10]
        && first[12..20] == next[12..20]
        // TCP: ports, ack, offset, window, urgent pointer and options.
        && first[20..24] == next[20..24]
        && first[28..33] == next[28..33]
        && first[34..36] == next[34..36]
        && first[38..t] == next[38..t]
}

/// How many of `pkts`, from the first, form one GSO run (1: no run).
pub(crate) fn run_len(pkts: &[&[u8]]) -> usize {
    let Some(first) = pkts.first() else {
        return 0;
    };
    let Some(f) = seg(first) else {
        return 1;
    };
    if f.flags != TCP_ACK || f.payload == 0 {
        return 1;
    }
    let mut prev = f;
    let mut total = first.len();
    let mut n = 1;
    for next in &pkts[1..] {
        if !continues(first, &f, &prev, next) {
            break;
        }
        let s = seg(next).expect("continues parsed it");
        if total + s.payload > MAX_IP {
            break;
        }
        total += s.payload;
        prev = s;
        n += 1;
        if s.flags & TCP_PSH != 0 {
            break;
        }
    }
    n
}

/// Rewrites `first` as the head of a super-segment carrying `payload`
/// bytes of TCP payload in all: total length, IP checksum, and the TCP
/// checksum field as the pseudo-header sum the kernel completes per
/// segment (CHECKSUM_PARTIAL). Returns what it overwrote, for
/// [`restore_head`].
fn patch_head(first: &mut [u8], thl: usize, payload: usize) -> [u8; 6] {
    let saved = [
        first[2], first[3], first[10], first[11], first[36], first[37],
    ];
    let mut ip = Ipv4Packet::new_unchecked(&mut *first);
    ip.set_total_len((20 + thl + payload) as u16);
    ip.fill_checksum();
    let partial = ip.tcp_partial_checksum();
    TcpPacket::new_unchecked(&mut first[20..]).set_checksum(partial);
    saved
}

fn restore_head(first: &mut [u8], saved: [u8; 6]) {
    first[2..4].copy_from_slice(&saved[0..2]);
    first[10..12].copy_from_slice(&saved[2..4]);
    first[36..38].copy_from_slice(&saved[4..6]);
}

/// The packet socket that sends super-segments: `SOCK_RAW` (the kernel
/// takes a vnet header only there), so we write the Ethernet header. It
/// never receives (protocol 0, never bound).
pub(crate) struct GsoSender {
    fd: OwnedFd,
}

impl GsoSender {
    pub(crate) fn open(mark: u32) -> io::Result<GsoSender> {
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)?;
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_MARK, &mark)?;
        let size: libc::c_int = 8 << 20;
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &size).is_err() {
            let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &size);
        }
        Ok(GsoSender { fd })
    }

    /// The link-layer address of interface `ifindex` (in the namespace
    /// this socket was made in).
    fn interface_addr(&self, ifindex: i32) -> io::Result<[u8; 6]> {
        // SAFETY: a zeroed ifreq is valid; the kernel fills the name.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        req.ifr_ifru.ifru_ifindex = ifindex;
        // SAFETY: SIOCGIFNAME reads the index and writes the name into
        // `req`, which we own.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFNAME, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR reads the name and writes the address.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        Ok(std::array::from_fn(|i| data[i] as u8))
    }

    /// Sends slots `start..start + count` of `batch` (a run, [`run_len`])
    /// as one super-segment from `own` (our address on the hop's link) to
    /// `hop`: the first packet whole, then the payload of each other one,
    /// gathered straight from the slots.
    pub(crate) fn send_run(
        &self,
        batch: &mut SendBatch,
        start: usize,
        count: usize,
        hop: &Hop,
        own: [u8; 6],
    ) -> io::Result<()> {
        debug_assert!((2..=BATCH).contains(&count));
        let f = seg(batch.packet(start)).ok_or_else(|| io::Error::other("not a segment"))?;
        let head = 20 + f.thl;
        let payload: usize = (start..start + count)
            .map(|i| batch.packet(i).len() - head)
            .sum();
        let saved = patch_head(batch.packet_mut(start), f.thl, payload);
        let mut vnet = [0u8; VNET_HDR_LEN];
        vnet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        vnet[1] = VIRTIO_NET_HDR_GSO_TCPV4;
        vnet[2..4].copy_from_slice(&(LL_HLEN + head as u16).to_ne_bytes());
        vnet[4..6].copy_from_slice(&(f.payload as u16).to_ne_bytes());
        vnet[6..8].copy_from_slice(&(LL_HLEN + 20).to_ne_bytes());
        vnet[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let mut eth = [0u8; LL_HLEN as usize];
        eth[0..6].copy_from_slice(&hop.addr[..6]);
        eth[6..12].copy_from_slice(&own);
        eth[12..14].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH + 2];
        iov[0] = libc::iovec {
            iov_base: vnet.as_mut_ptr().cast::<libc::c_void>(),
            iov_len: VNET_HDR_LEN,
        };
        iov[1] = libc::iovec {
            iov_base: eth.as_mut_ptr().cast::<libc::c_void>(),
            iov_len: eth.len(),
        };
        for k in 0..count {
            let p = batch.packet(start + k);
            let part = if k == 0 { p } else { &p[head..] };
            iov[k + 2] = libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            };
        }
        // SAFETY: zeroed sockaddr_ll/msghdr are valid; fields set below.
        let mut to: libc::sockaddr_ll = unsafe { mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = hop.ifindex;
        to.sll_halen = 6;
        to.sll_addr = hop.addr;
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut to).cast::<libc::c_void>();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count + 2;
        // SAFETY: `msg` points at `to`, `iov` and, through it, at `vnet`,
        // `eth` and the batch's slots, all live and unmoved for the call (the
        // kernel copies them before returning); the iovecs are only read.
        let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &raw const msg, libc::MSG_DONTWAIT) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // Not sent: the packets go out as they were, another way.
            restore_head(batch.packet_mut(start), saved);
            return Err(e);
        }
        Ok(())
    }
}

/// Super-segments sent so far, and the segments in them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GsoSent {
    pub runs: u64,
    pub segments: u64,
}

/// Sends what `tx` holds, in order: each run of bulk segments
/// ([`run_len`]) towards a fresh next hop as one GSO super-segment,
/// everything else (and a run the packet socket refuses) on the raw
/// socket. Returns how many packets left; fewer than were queued when the
/// raw socket is full.
/// Without a GSO sender, simply the raw socket's batch send.
///
/// `net` is read first, without waiting: the driver learns of an event only
/// between its passes, and a busy sender may send megabytes by a learned
/// next hop in that time.
pub(crate) fn send(
    socket: &RawSocket,
    gso: Option<&GsoSender>,
    net: &NetEvents,
    tx: &mut SendBatch,
    hops: &mut NextHops,
    count: &mut GsoSent,
) -> io::Result<usize> {
    let Some(gso) = gso else {
        return socket.send_batch(tx);
    };
    if net.tripped() {
        // An address, route or link changed: no next hop is trusted until
        // the peer's segments teach it again and the kernel routes its pair.
        hops.clear();
    }
    let now = Instant::now();
    let mut sent = 0;
    while !tx.is_empty() {
        let pending = tx.pending();
        // The first run with a next hop, at or after the first pending slot.
        let mut at = pending.start;
        let mut found = None;
        while at < pending.end {
            let n = run_at(tx, at, pending.end);
            if n >= 2 {
                if let Some(hop) = hop_for(tx.transmit(at), hops, now) {
                    found = Some((n, hop));
                    break;
                }
            }
            at += n;
        }
        // Everything before it on the raw socket.
        if at > pending.start {
            let n = socket.send_upto(tx, at)?;
            sent += n;
            if n < at - pending.start {
                return Ok(sent);
            }
        }
        let Some((n, hop)) = found else {
            continue;
        };
        let own = hops.own_addr(gso, hop.ifindex);
        match own.and_then(|own| gso.send_run(tx, at, n, &hop, own)) {
            Ok(()) => {
                tx.mark_sent(n);
                sent += n;
                count.runs += 1;
                count.segments += n as u64;
            }
            Err(e) => {
                if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) {
                    // The interface went (a move) or refuses: route again.
                    tracing::debug!("GSO send to ifindex {} failed: {e}", hop.ifindex);
                    let sent = tx.transmit(at);
                    hops.forget(*sent.src.ip(), *sent.dst.ip());
                }
                let m = socket.send_upto(tx, at + n)?;
                sent += m;
                if m < n {
                    return Ok(sent);
                }
            }
        }
    }
    Ok(sent)
}

/// How many packets from slot `at` (before `end`) form one GSO run.
fn run_at(tx: &SendBatch, at: usize, end: usize) -> usize {
    let mut pkts: [&[u8]; BATCH] = [&[]; BATCH];
    let count = end - at;
    for (k, p) in pkts.iter_mut().take(count).enumerate() {
        *p = tx.packet(at + k);
    }
    run_len(&pkts[..count]).max(1)
}

/// The fresh next hop for a packet we send, if the kernel still routes it.
fn hop_for(sent: Transmit, hops: &mut NextHops, now: Instant) -> Option<Hop> {
    let (local, remote) = (*sent.src.ip(), *sent.dst.ip());
    let hop = hops.get(local, remote, now)?;
    hops.routed(local, remote).then_some(hop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment 192.0.2.1:1000 -> 198.51.100.1:80 with a
    /// timestamp option and `payload` bytes.
    fn segment(seq: u32, flags: u8, payload: usize) -> Vec<u8> {
        let thl = 32;
        let mut p = vec![0u8; 20 + thl + payload];
        let len = p.len() as u16;
        p[0] = 0x45;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[192, 0, 2, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 1]);
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = ((thl / 4) as u8) << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        for (i, b) in p[52..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        p
    }

    fn run(pkts: &[Vec<u8>]) -> usize {
        let refs: Vec<&[u8]> = pkts.iter().map(Vec::as_slice).collect();
        run_len(&refs)
    }

    #[test]
    fn a_train_of_full_segments_is_one_run() {
        let mss = 1448;
        let train: Vec<Vec<u8>> = (0..5)
            .map(|i| segment(1000 + i * mss as u32, TCP_ACK, mss))
            .collect();
        assert_eq!(run(&train), 5);
        // A short last one with PSH ends the run, and is in it.
        let mut t = train.clone();
        t.push(segment(1000 + 5 * mss as u32, TCP_ACK | TCP_PSH, 100));
        t.push(segment(1000 + 5 * mss as u32 + 100, TCP_ACK, mss));
        assert_eq!(run(&t), 6);
    }

    #[test]
    fn what_gso_would_not_reproduce_breaks_the_run() {
        let mss = 1000;
        let base = |i: u32| segment(1 + i * mss as u32, TCP_ACK, mss);
        // A gap in sequence numbers (a retransmission between).
        assert_eq!(run(&[base(0), base(2)]), 1);
        // A short segment in the middle.
        let mut t = vec![base(0), segment(1 + mss as u32, TCP_ACK, 10), base(2)];
        assert_eq!(run(&t), 2);
        // Another timestamp, window, ack, port or flag.
        for (at, value) in [(47usize, 4u8), (35, 1), (31, 8), (21, 1), (33, 0x11)] {
            t = vec![base(0), base(1)];
            t[1][at] = value;
            assert_eq!(run(&t), 1, "byte {at}");
        }
        // A pure ACK, a SYN, IP options or another destination.
        assert_eq!(run(&[segment(1, TCP_ACK, 0), base(0)]), 1);
        assert_eq!(run(&[segment(1, 0x02, mss), base(1)]), 1);
        let mut t = vec![base(0), base(1)];
        t[1][19] = 2;
        assert_eq!(run(&t), 1);
        // Never past 64 KiB.
        let mss = 1448;
        let big: Vec<Vec<u8>> = (0..60)
            .map(|i| segment(1 + i * mss as u32, TCP_ACK, mss))
            .collect();
        let n = run(&big);
        assert!(n * mss + 52 <= MAX_IP && (n + 1) * mss + 52 > MAX_IP, "{n}");
    }

    #[test]
    fn head_patch_gives_the_pseudo_header_sum_and_restores() {
        let mut p = segment(1, TCP_ACK, 100);
        let orig = p.clone();
        let saved = patch_head(&mut p, 32, 300);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 352);
        assert!(
            Ipv4Packet::new_unchecked(&p).verify_checksum(),
            "IP checksum valid"
        );
        // Pseudo header: 192.0.2.1, 198.51.100.1, protocol 6, TCP length
        // 332 (32 + 300): c000+0201+c633+6401+0006+014c, folded.
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), 0xed88);
        restore_head(&mut p, saved);
        assert_eq!(p, orig);
    }

    /// A pure ACK from `src` to `dst`.
    fn addressed(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = segment(1, TCP_ACK, 0);
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    /// Where a received frame came from.
    fn link(ifindex: i32, hatype: u16, addr: [u8; 8]) -> LinkSource {
        LinkSource {
            ifindex,
            hatype,
            halen: 6,
            addr,
        }
    }

    #[test]
    fn next_hops_are_learned_per_address_pair_and_expire() {
        let mut hops = NextHops::default();
        let now = Instant::now();
        let from = link(3, libc::ARPHRD_ETHER, [2, 0, 0, 0, 0, 1, 0, 0]);
        // A segment from 198.51.100.1 to us at 192.0.2.1.
        let p = addressed([198, 51, 100, 1], [192, 0, 2, 1]);
        hops.learn(&p, &from, now);
        let (local, remote) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(hops.get(local, remote, now).map(|h| h.ifindex), Some(3));
        assert_eq!(hops.get(remote, local, now), None);
        assert_eq!(hops.get(local, remote, now + FRESH), None);
        let tunnel = LinkSource {
            hatype: 65534,
            ..from
        };
        let mut other = NextHops::default();
        other.learn(&p, &tunnel, now);
        assert_eq!(other.get(local, remote, now), None);
    }

    #[test]
    fn a_next_hop_is_used_only_while_the_kernel_routes_its_pair() {
        let mut hops = NextHops::default();
        let now = Instant::now();
        let lo = link(1, libc::ARPHRD_LOOPBACK, [0; 8]);
        let sent = |local: Ipv4Addr, remote: Ipv4Addr| Transmit {
            src: std::net::SocketAddrV4::new(local, 1000),
            dst: std::net::SocketAddrV4::new(remote, 80),
            size: 40,
            checksum_partial: false,
        };
        let host = Ipv4Addr::LOCALHOST;
        hops.learn(&addressed([127, 0, 0, 1], [127, 0, 0, 1]), &lo, now);
        assert!(hop_for(sent(host, host), &mut hops, now).is_some());
        // A segment to an address this host does not have (a move took it):
        // learned, never used.
        let gone = Ipv4Addr::new(192, 0, 2, 254);
        hops.learn(&addressed([127, 0, 0, 1], [192, 0, 2, 254]), &lo, now);
        assert!(hops.get(gone, host, now).is_some());
        assert!(hop_for(sent(gone, host), &mut hops, now).is_none());
        hops.clear();
        assert!(hop_for(sent(host, host), &mut hops, now).is_none());
    }
}
