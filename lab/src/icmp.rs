//! ICMP echo on a raw socket (`ping` is not installed everywhere, and the lab wants
//! the round-trip times as numbers).
//!
//! A [`Pinger`] is opened on a thread inside a namespace and keeps sending from there
//! whichever thread uses it afterwards.

use std::io;
use std::io::IoSliceMut;
use std::net::Ipv4Addr;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};

use sustain_core::wire::{internet_checksum, Ipv4Packet};

use crate::error::{IoContext, Result};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const PAYLOAD: &[u8; 16] = b"sustain-lab-ping";

/// A raw ICMP socket that sends echo requests and matches their replies.
#[derive(Debug)]
pub struct Pinger {
    socket: OwnedFd,
    identifier: u16,
    sequence: AtomicU16,
}

/// What [`Pinger::series`] saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingStats {
    pub sent: u32,
    /// Round-trip times of the answered echoes, in order.
    pub rtts: Vec<Duration>,
}

impl PingStats {
    pub fn received(&self) -> u32 {
        self.rtts.len() as u32
    }

    /// Fraction of echoes (or their replies) lost.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - f64::from(self.received()) / f64::from(self.sent)
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    /// The median round-trip time.
    pub fn median_rtt(&self) -> Option<Duration> {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied()
    }
}

impl Pinger {
    /// Opens the socket in the calling thread's namespace.
    pub fn open() -> Result<Pinger> {
        let socket = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        )
        .map_err(io::Error::from)
        .context(|| "opening a raw ICMP socket".to_string())?;
        // Raw ICMP sockets see every ICMP packet of the namespace: a per-socket
        // identifier tells our replies apart (clock bits differ between pingers).
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16);
        let identifier = (std::process::id() as u16) ^ clock ^ next_salt();
        Ok(Pinger {
            socket,
            identifier,
            sequence: AtomicU16::new(0),
        })
    }

    /// Sends one echo request to `to` and waits up to `timeout` for its reply.
    /// `None`: no reply in time.
    pub fn echo(&self, to: Ipv4Addr, timeout: Duration) -> Result<Option<Duration>> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let request = echo_request(self.identifier, sequence);
        let sent = Instant::now();
        self.send(to, &request)
            .context(|| format!("sending an ICMP echo to {to}"))?;
        let deadline = sent + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some((len, from)) = self
                .recv(&mut buf, left)
                .context(|| "receiving ICMP".to_string())?
            else {
                return Ok(None);
            };
            if from == to && is_reply_to(&buf[..len], self.identifier, sequence) {
                return Ok(Some(sent.elapsed()));
            }
        }
    }

    /// Sends `count` echoes to `to`, one every `interval`, each waiting up to `timeout`
    /// for its reply (a late reply is counted as lost).
    pub fn series(
        &self,
        to: Ipv4Addr,
        count: u32,
        interval: Duration,
        timeout: Duration,
    ) -> Result<PingStats> {
        let mut stats = PingStats::default();
        for _ in 0..count {
            let started = Instant::now();
            stats.sent += 1;
            if let Some(rtt) = self.echo(to, timeout)? {
                stats.rtts.push(rtt);
            }
            let spent = started.elapsed();
            if spent < interval {
                std::thread::sleep(interval - spent);
            }
        }
        Ok(stats)
    }

    fn send(&self, to: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        let address = SockaddrIn::from(SocketAddrV4::new(to, 0));
        sendto(self.socket.as_raw_fd(), packet, &address, MsgFlags::empty())?;
        Ok(())
    }

    /// One datagram (IP header included) and its source, or `None` after `timeout`.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<(usize, Ipv4Addr)>> {
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout.max(Duration::from_millis(1)))
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(err) => return Err(err.into()),
        }
        // recvfrom in nix takes no flags; recvmsg does (MSG_DONTWAIT).
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrIn>(
            self.socket.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let from = msg.address.map_or(Ipv4Addr::UNSPECIFIED, |from| from.ip());
        Ok(Some((msg.bytes, from)))
    }
}

fn next_salt() -> u16 {
    static SALT: AtomicU16 = AtomicU16::new(0x5a5a);
    SALT.fetch_add(0x9e37, Ordering::Relaxed)
}

/// An ICMP echo request (RFC 792) with our payload.
fn echo_request(identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![ICMP_ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// True if `datagram` (IPv4 header + ICMP) is the echo reply to (identifier, sequence).
fn is_reply_to(datagram: &[u8], identifier: u16, sequence: u16) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(datagram) else {
        return false;
    };
    let icmp = ip.payload();
    if icmp.len() < 8 || icmp[0] != ICMP_ECHO_REPLY || icmp[1] != 0 {
        return false;
    }
    u16::from_be_bytes([icmp[4], icmp[5]]) == identifier
        && u16::from_be_bytes([icmp[6], icmp[7]]) == sequence
        && internet_checksum(icmp) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_to_zero_and_a_matching_reply_is_recognised() {
        let request = echo_request(0x1234, 7);
        assert_eq!(internet_checksum(&request), 0);
        let mut reply = request.clone();
        reply[0] = ICMP_ECHO_REPLY;
        reply[2] = 0;
        reply[3] = 0;
        let checksum = internet_checksum(&reply);
        reply[2..4].copy_from_slice(&checksum.to_be_bytes());
        let mut datagram = vec![0x45u8, 0];
        datagram.extend_from_slice(&(20 + reply.len() as u16).to_be_bytes());
        datagram.extend_from_slice(&[0u8; 16]);
        datagram.extend_from_slice(&reply);
        assert!(is_reply_to(&datagram, 0x1234, 7));
        assert!(!is_reply_to(&datagram, 0x1234, 8));
        assert!(!is_reply_to(&datagram, 0x4321, 7));
        datagram[30] ^= 1;
        assert!(!is_reply_to(&datagram, 0x1234, 7), "bad checksum");
        assert!(!is_reply_to(&datagram[..22], 0x1234, 7), "truncated");
        assert!(!is_reply_to(&[], 0x1234, 7));
    }
}
