//! The NFQUEUE client the delay lines use: a netfilter netlink socket bound to one
//! queue in metadata-only copy mode, the messages it sends (config, verdict, batch
//! verdict) and parses (packets, acks), and the kernel's per-queue counters
//! (linux/netfilter/nfnetlink_queue.h).
//!
//! Hand-written rather than the `nfq` crate: that crate always binds in
//! `NFQNL_COPY_PACKET` mode (every packet's payload is copied to userspace), has no
//! `NFQNL_MSG_VERDICT_BATCH`, turns ENOBUFS reporting off, and links libmnl; a delay
//! line needs metadata-only copies, one batch verdict per release, and every overrun
//! counted.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

use crate::error::{LabError, Result};
use crate::sockopt::NetlinkNoEnobufs;
use crate::wakeup;

/// A netfilter netlink socket, in the namespace of the thread that opened it. Closing
/// it unbinds its queue.
#[derive(Debug)]
pub(crate) struct QueueSocket {
    fd: OwnedFd,
}

impl QueueSocket {
    /// Opens the socket with a receive buffer of `receive_buffer` bytes (past
    /// `net.core.rmem_max`) and ENOBUFS reporting on.
    pub(crate) fn open(receive_buffer: usize) -> io::Result<QueueSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        // nl_pid 0: the kernel assigns one.
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        wakeup::force_receive_buffer(&fd, receive_buffer)?;
        // Overruns must be reported as ENOBUFS (the default; made explicit because
        // libraries commonly turn it off).
        setsockopt(&fd, NetlinkNoEnobufs, &false)?;
        Ok(QueueSocket { fd })
    }

    /// Binds `queue` to the socket: metadata-only copies, GSO packets as they are (the
    /// line never looks at payload), the given maximum length. Waits for the kernel's
    /// ack; EBUSY means another socket holds the queue.
    pub(crate) fn bind_queue(&self, queue: u16, max_len: u32) -> io::Result<()> {
        let seq = 1;
        self.send(&config_message(queue, seq, max_len))?;
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(left.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            poll(&mut pfd, timeout)?;
            let Some(len) = self.recv(&mut buf)? else {
                continue;
            };
            for event in parse(buf.get(..len).unwrap_or_default()) {
                if let Event::Ack { seq: acked, errno } = event {
                    if acked == seq {
                        return match errno {
                            0 => Ok(()),
                            errno => Err(io::Error::from_raw_os_error(errno)),
                        };
                    }
                }
            }
        }
    }

    /// Sends one message to the kernel.
    pub(crate) fn send(&self, message: &[u8]) -> io::Result<()> {
        // nl_pid 0 addresses the kernel.
        sendto(
            self.fd.as_raw_fd(),
            message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        Ok(())
    }

    /// One non-blocking receive: `Ok(None)` when nothing is queued.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
        let len = match recv(self.fd.as_raw_fd(), buf, flags) {
            Ok(len) => len,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        if len > buf.len() {
            // Metadata-only messages are a few hundred bytes; a truncated one is a bug.
            return Err(io::Error::other(format!(
                "netlink message of {len} bytes truncated to {}",
                buf.len()
            )));
        }
        Ok(Some(len))
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_TIMESTAMP: u16 = 4;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_GSO: u32 = 1 << 2;

pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What one received netlink message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A queued packet: its id and, if the skb had one, its wall-clock timestamp.
    Packet {
        id: u32,
        timestamp: Option<Duration>,
    },
    /// An ack (errno 0) or error for the request with sequence number `seq`.
    Ack {
        seq: u32,
        errno: i32,
    },
    Other,
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// A netfilter-queue message: netlink header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, queue: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue (big-endian).
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
    for (attr, value) in attrs {
        let len = 4 + value.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&attr.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(align4(buf.len()), 0);
    }
    let total = buf.len() as u32;
    buf[0..4].copy_from_slice(&total.to_ne_bytes());
    buf[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    buf[6..8].copy_from_slice(&flags.to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// Bind + metadata-only copy + max length + GSO flag, acked.
pub(crate) fn config_message(queue: u16, seq: u32, max_len: u32) -> Vec<u8> {
    // struct nfqnl_msg_config_cmd { u8 command; u8 _pad; __be16 pf; }
    let cmd = [NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8];
    // struct nfqnl_msg_config_params { __be32 copy_range; u8 copy_mode; } packed
    let mut params = [0u8; 5];
    params[4] = NFQNL_COPY_META;
    let max_len = max_len.to_be_bytes();
    let flags = NFQA_CFG_F_GSO.to_be_bytes();
    message(
        NFQNL_MSG_CONFIG,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        queue,
        seq,
        &[
            (NFQA_CFG_CMD, &cmd),
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &max_len),
            (NFQA_CFG_MASK, &flags),
            (NFQA_CFG_FLAGS, &flags),
        ],
    )
}

/// A verdict on packet `id` of `queue`, or with `batch` on every packet of the
/// queue up to `id`. Not acked: the kernel answers only on error.
pub(crate) fn verdict_message(queue: u16, id: u32, verdict: u32, batch: bool, seq: u32) -> Vec<u8> {
    let mut header = [0u8; 8];
    header[0..4].copy_from_slice(&verdict.to_be_bytes());
    header[4..8].copy_from_slice(&id.to_be_bytes());
    let kind = if batch {
        NFQNL_MSG_VERDICT_BATCH
    } else {
        NFQNL_MSG_VERDICT
    };
    message(
        kind,
        libc::NLM_F_REQUEST as u16,
        queue,
        seq,
        &[(NFQA_VERDICT_HDR, &header)],
    )
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Parses every netlink message in a datagram. Malformed input ends the parse
/// (never panics); a packet message without a packet header is skipped.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(rest, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let (Some(kind), Some(seq)) = (u16_at(rest, 4), u32_at(rest, 8)) else {
            break;
        };
        let body = &rest[NLMSG_HDRLEN..len];
        events.push(parse_one(kind, seq, body));
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    events
}

fn parse_one(kind: u16, seq: u32, body: &[u8]) -> Event {
    if kind == NLMSG_ERROR {
        // struct nlmsgerr { int error; struct nlmsghdr msg; ... }
        return match body.get(0..4) {
            Some(error) => {
                let error = i32::from_ne_bytes([error[0], error[1], error[2], error[3]]);
                // The acked request's own header follows: its seq is ours.
                let acked = u32_at(body, 4 + 8).unwrap_or(seq);
                Event::Ack {
                    seq: acked,
                    errno: error.saturating_neg(),
                }
            }
            None => Event::Other,
        };
    }
    if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
        return Event::Other;
    }
    let mut attrs = body.get(NFGENMSG_LEN..).unwrap_or_default();
    let mut id = None;
    let mut timestamp = None;
    while attrs.len() >= 4 {
        let (Some(len), Some(attr)) = (u16_at(attrs, 0), u16_at(attrs, 2)) else {
            break;
        };
        let len = usize::from(len);
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match attr & NLA_TYPE_MASK {
            // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; u8 hook; }
            NFQA_PACKET_HDR => id = be_u32(value, 0),
            // struct nfqnl_msg_packet_timestamp { __aligned_be64 sec; __aligned_be64 usec; }
            NFQA_TIMESTAMP => {
                if let (Some(sec), Some(usec)) = (be_u64(value, 0), be_u64(value, 8)) {
                    timestamp = Some(Duration::from_secs(sec) + Duration::from_micros(usec));
                }
            }
            _ => {}
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    match id {
        Some(id) => Event::Packet { id, timestamp },
        None => Event::Other,
    }
}

/// The kernel's counters for one queue, from `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelCounters {
    pub(crate) queue_dropped: u64,
    pub(crate) user_dropped: u64,
}

/// Reads the counters of `queue` in the calling thread's namespace. `None` if the
/// queue is not (or no longer) bound.
pub(crate) fn read_kernel_counters(queue: u16) -> Result<Option<KernelCounters>> {
    // /proc/net follows the process's namespace; thread-self follows this thread's.
    let path = "/proc/thread-self/net/netfilter/nfnetlink_queue";
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LabError::io(format!("reading {path}"), err)),
    };
    parse_kernel_counters(&text, queue)
}

/// Lines read `queue_num portid queue_total copy_mode copy_range queue_dropped
/// queue_user_dropped id_sequence 1`.
fn parse_kernel_counters(text: &str, queue: u16) -> Result<Option<KernelCounters>> {
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().and_then(|f| f.parse::<u16>().ok()) != Some(queue) {
            continue;
        }
        let number = |index: usize| {
            fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(|| LabError::UnexpectedOutput {
                    what: "/proc/net/netfilter/nfnetlink_queue".into(),
                    detail: format!("no field {index} in {line:?}"),
                })
        };
        return Ok(Some(KernelCounters {
            queue_dropped: number(5)?,
            user_dropped: number(6)?,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(id: u32, timestamp: Option<(u64, u64)>, seq: u32) -> Vec<u8> {
        let mut header = id.to_be_bytes().to_vec();
        header.extend_from_slice(&0x0800u16.to_be_bytes());
        header.push(2);
        let mut stamp = Vec::new();
        let mut attrs: Vec<(u16, &[u8])> = vec![(NFQA_PACKET_HDR, &header)];
        if let Some((sec, usec)) = timestamp {
            stamp.extend_from_slice(&sec.to_be_bytes());
            stamp.extend_from_slice(&usec.to_be_bytes());
            attrs.push((NFQA_TIMESTAMP, &stamp));
        }
        message(NFQNL_MSG_PACKET, 0, 7, seq, &attrs)
    }

    #[test]
    fn config_message_has_the_kernel_layout() {
        let message = config_message(0x0102, 9, 16384);
        // header(16) + nfgenmsg(4) + cmd(8) + params(12) + maxlen(8) + mask(8) + flags(8)
        assert_eq!(message.len(), 64);
        assert_eq!(u32_at(&message, 0), Some(64));
        assert_eq!(u16_at(&message, 4), Some(0x0302));
        assert_eq!(
            u16_at(&message, 6),
            Some((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16)
        );
        assert_eq!(u32_at(&message, 8), Some(9));
        assert_eq!(&message[16..20], &[0, 0, 0x01, 0x02]);
        assert_eq!(&message[20..28], &[8, 0, 1, 0, 1, 0, 0, 2]);
        // params: len 9, padded to 12, copy_range 0, copy_mode META
        assert_eq!(&message[28..40], &[9, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&message[40..48], &[8, 0, 3, 0, 0, 0, 0x40, 0]);
    }

    #[test]
    fn batch_verdict_names_the_last_id_and_the_queue() {
        let message = verdict_message(42, 0xdead_beef, NF_ACCEPT, true, 3);
        assert_eq!(message.len(), 32);
        assert_eq!(u16_at(&message, 4), Some(0x0303));
        assert_eq!(&message[18..20], &42u16.to_be_bytes());
        assert_eq!(&message[20..24], &[12, 0, 2, 0]);
        assert_eq!(&message[24..28], &1u32.to_be_bytes());
        assert_eq!(&message[28..32], &0xdead_beefu32.to_be_bytes());
        let single = verdict_message(42, 5, NF_DROP, false, 4);
        assert_eq!(u16_at(&single, 4), Some(0x0301));
    }

    #[test]
    fn packets_acks_and_errors_are_parsed() {
        let mut datagram = packet(77, Some((1_700_000_000, 250_000)), 0);
        datagram.extend(packet(78, None, 0));
        let mut error = vec![0u8; 16];
        error[0..4].copy_from_slice(&36u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error.extend_from_slice(&(-libc::EBUSY).to_ne_bytes());
        let mut original = vec![0u8; 16];
        original[8..12].copy_from_slice(&5u32.to_ne_bytes());
        error.extend(original);
        datagram.extend(error);
        assert_eq!(
            parse(&datagram),
            vec![
                Event::Packet {
                    id: 77,
                    timestamp: Some(
                        Duration::from_secs(1_700_000_000) + Duration::from_millis(250)
                    ),
                },
                Event::Packet {
                    id: 78,
                    timestamp: None
                },
                Event::Ack {
                    seq: 5,
                    errno: libc::EBUSY
                },
            ]
        );
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let datagram = packet(77, Some((1, 2)), 0);
        for cut in 0..datagram.len() {
            let _ = parse(&datagram[..cut]);
        }
        let mut bad_attr = datagram.clone();
        bad_attr[20] = 0xff; // attribute length past the end
        assert_eq!(parse(&bad_attr), vec![Event::Other]);
        let mut bad_len = datagram;
        bad_len[0] = 3; // message length below the header
        assert!(parse(&bad_len).is_empty());
    }

    #[test]
    fn an_ack_without_error_names_the_request_and_errno_zero() {
        let mut ack = vec![0u8; 16];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&0i32.to_ne_bytes());
        let mut original = vec![0u8; 16];
        original[8..12].copy_from_slice(&1u32.to_ne_bytes());
        ack.extend(original);
        assert_eq!(parse(&ack), vec![Event::Ack { seq: 1, errno: 0 }]);
        // An error message too short to carry its errno is not an ack.
        let mut short = vec![0u8; 16];
        short[0..4].copy_from_slice(&16u32.to_ne_bytes());
        short[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse(&short), vec![Event::Other]);
    }

    #[test]
    fn messages_of_other_subsystems_and_unknown_attributes_are_skipped() {
        // A packet message of another nfnetlink subsystem (conntrack, 1).
        let mut other = packet(9, None, 0);
        other[5] = 1;
        assert_eq!(parse(&other), vec![Event::Other]);
        // An unknown attribute before the packet header does not hide the id; the
        // nested-attribute flag bits are masked off the type.
        let header = [0, 0, 0, 42, 0x08, 0x00, 2];
        let message = message(
            NFQNL_MSG_PACKET,
            0,
            7,
            0,
            &[(0x77, &[1, 2, 3]), (NFQA_PACKET_HDR | 0x8000, &header)],
        );
        assert_eq!(
            parse(&message),
            vec![Event::Packet {
                id: 42,
                timestamp: None
            }]
        );
    }

    #[test]
    fn messages_are_padded_to_four_bytes_and_concatenate() {
        let one = verdict_message(1, 10, NF_ACCEPT, false, 1);
        assert_eq!(one.len() % 4, 0);
        let config = config_message(1, 2, 100);
        assert_eq!(config.len() % 4, 0);
        let mut both = packet(1, None, 0);
        both.extend(packet(2, None, 0));
        let ids: Vec<u32> = parse(&both)
            .into_iter()
            .filter_map(|event| match event {
                Event::Packet { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn kernel_counters_are_read_for_the_right_queue() {
        let text = "    1  12345     0 1    0     0     0       10  1\n\
                    \x20   7  23456     3 1    0    17     4      999  1\n";
        assert_eq!(
            parse_kernel_counters(text, 7).unwrap(),
            Some(KernelCounters {
                queue_dropped: 17,
                user_dropped: 4
            })
        );
        assert_eq!(parse_kernel_counters(text, 2).unwrap(), None);
        assert!(parse_kernel_counters("7 1 2\n", 7).is_err());
    }
}
