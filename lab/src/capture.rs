//! Packet capture to pcap: an AF_PACKET socket bound to one interface inside a node's
//! namespace, kernel timestamps (SO_TIMESTAMPNS, nanoseconds), both directions, full
//! frames.
//!
//! The socket is created with protocol 0, which receives nothing, and only then bound
//! to the interface with `ETH_P_ALL`: no packet of another interface can slip in
//! between socket() and bind(). [`Capture::start`] returns once the socket is bound,
//! so everything sent afterwards is captured. Outgoing frames are seen where the
//! kernel hands them to the driver (after the qdisc), incoming ones as the driver
//! delivers them; a delay line or rate limit on the same node therefore shows up in
//! the timestamps.
//!
//! Files are classic pcap, linktype Ethernet, nanosecond timestamps, named
//! `<node>-<network-or-ifname>.pcap` ([`capture_file_name`]).

use std::cell::RefCell;
use std::fs::File;
use std::io::IoSliceMut;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::net::if_::if_nametoindex;
use nix::sys::socket::{
    getsockopt, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, LinkAddr,
    MsgFlags, SockFlag, SockType,
};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::error::{IoContext, LabError, Result};
use crate::lab::Lab;
use crate::names::{validate_ifname, validate_node_name};
use crate::sockopt::PacketStatistics;
use crate::wakeup::{self, StopSignal};

/// Largest frame kept whole (the file's snaplen). Lab interfaces have offloads off, so
/// frames are at most MTU + 14 bytes; a GSO super-frame on another interface would be
/// cut here and recorded with its real length.
pub const SNAPLEN: usize = 262_144;

/// How long written packets may sit in the file buffer while the link is idle.
const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// The file name of the capture of `node` on `network` (a network name, or the
/// interface name when there is none): `<node>-<network>.pcap`.
pub fn capture_file_name(node: &str, network: &str) -> String {
    format!("{node}-{network}.pcap")
}

/// What a capture recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureReport {
    /// The pcap file.
    pub path: PathBuf,
    /// Frames written to the file.
    pub packets: u64,
    /// Of those, frames the interface received and frames it sent.
    pub incoming: u64,
    pub outgoing: u64,
    /// Bytes on the wire (original frame lengths).
    pub bytes: u64,
    /// Frames longer than [`SNAPLEN`], written cut.
    pub truncated: u64,
    /// The kernel's count of frames that reached the socket (PACKET_STATISTICS),
    /// including the dropped ones.
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the socket's buffer was full: missing from
    /// the file.
    pub kernel_drops: u64,
    /// Times the interface went down while captured (capture resumes when it comes
    /// back up).
    pub interface_down: u64,
}

/// A running capture of one interface. Dropping it stops it (flushing the file).
///
/// Stop captures before tearing the lab down: the socket keeps the namespace (and its
/// interfaces) alive while it runs.
#[derive(Debug)]
pub struct Capture {
    node: String,
    ifname: String,
    path: PathBuf,
    stop: Arc<StopSignal>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<CaptureReport>>>,
}

impl Capture {
    /// Starts capturing `ifname` in `node` into `<dir>/<node>-<network>.pcap`
    /// (`network` defaults to the interface name). Returns once the socket is bound.
    pub fn start_in(
        lab: &Lab,
        node: &str,
        ifname: &str,
        network: Option<&str>,
        dir: &Path,
    ) -> Result<Capture> {
        validate_node_name(node)?;
        let label = network.unwrap_or(ifname);
        if label.is_empty() || label.contains(['/', '\0']) {
            return Err(LabError::InvalidName {
                name: label.to_string(),
                reason: "a capture label is a file-name part",
            });
        }
        Capture::start(lab, node, ifname, dir.join(capture_file_name(node, label)))
    }

    /// Starts capturing `ifname` in `node` into the pcap file `path` (created or
    /// truncated). Returns once the socket is bound to the interface.
    pub fn start(lab: &Lab, node: &str, ifname: &str, path: impl Into<PathBuf>) -> Result<Capture> {
        validate_ifname(ifname)?;
        let path = path.into();
        let netns = lab.netns(node)?;
        let file = File::create(&path).context(|| format!("creating {}", path.display()))?;
        let stop = Arc::new(StopSignal::new().context(|| "creating an eventfd".to_string())?);
        let written = Arc::new(AtomicU64::new(0));
        let (bound_tx, bound_rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let written = Arc::clone(&written);
            let ifname = ifname.to_string();
            let path = path.clone();
            netns.spawn_thread(move || -> io::Result<CaptureReport> {
                let socket = match open_packet_socket(
                    &ifname,
                    PacketSocketOptions {
                        nonblocking: false,
                        timestamps: true,
                    },
                ) {
                    Ok(socket) => {
                        let _ = bound_tx.send(Ok(()));
                        socket
                    }
                    Err(err) => {
                        let kind = err.kind();
                        let _ = bound_tx.send(Err(err));
                        return Err(io::Error::new(kind, "capture socket not bound"));
                    }
                };
                run_capture(&socket, file, path, &stop, &written)
            })?
        };
        let bound = bound_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("capture thread died")));
        if let Err(err) = bound {
            let _ = thread.join();
            let _ = std::fs::remove_file(&path);
            return Err(LabError::io(format!("capturing {ifname} in {node}"), err));
        }
        tracing::info!(node, ifname, path = %path.display(), "capture started");
        Ok(Capture {
            node: node.to_string(),
            ifname: ifname.to_string(),
            path,
            stop,
            written,
            thread: Some(thread),
        })
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The captured node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The captured interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Frames written so far (some may still be in the file buffer).
    pub fn packets_so_far(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops the capture: reads what is still queued on the socket, flushes the file,
    /// and reports the counts.
    pub fn stop(mut self) -> Result<CaptureReport> {
        self.finish()
    }

    fn finish(&mut self) -> Result<CaptureReport> {
        self.stop.raise();
        let Some(thread) = self.thread.take() else {
            return Err(LabError::InvalidValue("capture already stopped".into()));
        };
        let report = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("capture thread panicked")))
            .context(|| format!("capturing {} in {}", self.ifname, self.node))?;
        tracing::info!(
            node = self.node,
            ifname = self.ifname,
            ?report,
            "capture stopped"
        );
        if report.kernel_drops > 0 {
            tracing::warn!(
                node = self.node,
                ifname = self.ifname,
                drops = report.kernel_drops,
                "the kernel dropped frames the capture could not keep up with"
            );
        }
        Ok(report)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(err) = self.finish() {
                tracing::warn!(node = self.node, ifname = self.ifname, %err, "stopping capture");
            }
        }
    }
}

/// How [`open_packet_socket`] sets up its socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PacketSocketOptions {
    /// `SOCK_NONBLOCK`.
    pub nonblocking: bool,
    /// Kernel receive timestamps in nanoseconds (`SO_TIMESTAMPNS`).
    pub timestamps: bool,
}

/// An AF_PACKET socket on `ifname` (in the calling thread's namespace) receiving the
/// frames of both directions, with a large receive buffer. Created with protocol 0,
/// which receives nothing, and only then bound with `ETH_P_ALL` (the kernel hands
/// outgoing frames only to all-protocol taps), so no frame of another interface slips
/// in between socket() and bind(). Captures and the attack observer use it.
pub(crate) fn open_packet_socket(
    ifname: &str,
    options: PacketSocketOptions,
) -> io::Result<OwnedFd> {
    if ifname.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL in interface name",
        ));
    }
    let ifindex = if_nametoindex(ifname)?;
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if options.nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    // Protocol 0 (None): the socket receives nothing until bound below.
    let socket = socket(AddressFamily::Packet, SockType::Raw, flags, None)?;
    if options.timestamps {
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
    }
    // Transfers run at hundreds of Mbit/s; readers fall behind now and then.
    wakeup::force_receive_buffer(&socket, 32 << 20)?;
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    bind_packet(&socket, &addr)?;
    Ok(socket)
}

/// bind(2) with a `sockaddr_ll`: nix can receive one (`LinkAddr`) but offers no safe
/// way to build one.
#[allow(unsafe_code)]
fn bind_packet(socket: &OwnedFd, addr: &libc::sockaddr_ll) -> io::Result<()> {
    // SAFETY: `addr` points to a fully initialised sockaddr_ll that outlives the call,
    // and the length passed is exactly its size; bind only reads it.
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref::<libc::sockaddr_ll>(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    Errno::result(ret)?;
    Ok(())
}

/// One received frame.
struct Frame {
    /// Bytes kept in the buffer (at most its size).
    kept: usize,
    /// The frame's real length.
    len: usize,
    outgoing: bool,
    timestamp: Duration,
}

/// Non-blocking receive of one frame with its timestamp; `Ok(None)` when none is
/// queued. `control` is room for the timestamp's control message
/// (`cmsg_space!(libc::timespec)`).
fn receive_frame(fd: RawFd, buf: &mut [u8], control: &mut [u8]) -> io::Result<Option<Frame>> {
    let capacity = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
    let msg = match recvmsg::<LinkAddr>(fd, &mut iov, Some(control), flags) {
        Ok(msg) => msg,
        Err(Errno::EAGAIN) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    // With MSG_TRUNC, the frame's real length even when the buffer was smaller.
    let len = msg.bytes;
    let mut timestamp = None;
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
            timestamp = Some(Duration::new(
                u64::try_from(ts.tv_sec()).unwrap_or(0),
                u32::try_from(ts.tv_nsec()).unwrap_or(0),
            ));
        }
    }
    let outgoing = msg
        .address
        .is_some_and(|from| from.pkttype() == libc::PACKET_OUTGOING);
    // Without a kernel timestamp (never expected), the read time is the best there is.
    let timestamp = timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    });
    Ok(Some(Frame {
        kept: len.min(capacity),
        len,
        outgoing,
        timestamp,
    }))
}

/// At most this many frames are read per wake-up before checking for stop.
const RECEIVE_BATCH: usize = 1024;

/// How often a capture reads its socket.
const READ_PERIOD: Duration = Duration::from_millis(10);

fn run_capture(
    socket: &OwnedFd,
    file: File,
    path: PathBuf,
    stop: &StopSignal,
    written: &AtomicU64,
) -> io::Result<CaptureReport> {
    let fd = socket.as_raw_fd();
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: SNAPLEN as u32,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::native(),
    };
    let file = SharedFile(Rc::new(RefCell::new(BufWriter::with_capacity(
        1 << 20,
        file,
    ))));
    let mut writer = PcapWriter::with_header(file.clone(), header).map_err(pcap_error)?;
    let mut report = CaptureReport {
        path,
        ..CaptureReport::default()
    };
    let mut buf = vec![0u8; SNAPLEN];
    let mut control = nix::cmsg_space!(libc::timespec);
    let mut unflushed_since: Option<Instant> = None;
    let mut stopping = false;
    let mut got = 0;
    loop {
        // Not woken per frame: a frame's timestamp is the kernel's, so reading it
        // later changes nothing in the file, and a capture thread woken for every
        // frame of a handshake competes for the CPUs with the very processes whose
        // latency the lab measures. The socket's buffer holds far more than
        // READ_PERIOD of any lab link; a full batch is read again at once.
        let timeout = if got >= RECEIVE_BATCH {
            Duration::ZERO
        } else {
            READ_PERIOD
        };
        let [stop_raised] = wakeup::wait_readable([stop.fd()], Some(timeout))?;
        stopping |= stop_raised;
        got = 0;
        // When stopping, read until the socket is empty: everything the kernel queued
        // before the stop is in the file.
        while got < RECEIVE_BATCH || stopping {
            let frame = match receive_frame(fd, &mut buf, &mut control) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // The interface went down (a host leaving a network): the kernel
                // reports it once and resumes delivery when it comes back up. A
                // deleted interface simply delivers nothing more.
                Err(err) if err.raw_os_error() == Some(libc::ENETDOWN) => {
                    report.interface_down += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            got += 1;
            let data = buf.get(..frame.kept).unwrap_or_default();
            let orig_len = u32::try_from(frame.len).unwrap_or(u32::MAX);
            writer
                .write_packet(&PcapPacket::new(frame.timestamp, orig_len, data))
                .map_err(pcap_error)?;
            report.packets += 1;
            report.bytes += frame.len as u64;
            if frame.outgoing {
                report.outgoing += 1;
            } else {
                report.incoming += 1;
            }
            if frame.kept < frame.len {
                report.truncated += 1;
            }
        }
        if got > 0 {
            written.store(report.packets, Ordering::Relaxed);
            unflushed_since.get_or_insert_with(Instant::now);
        }
        if stopping {
            break;
        }
        if unflushed_since.is_some_and(|since| since.elapsed() >= IDLE_FLUSH) {
            file.0.borrow_mut().flush()?;
            unflushed_since = None;
        }
    }
    let (kernel_packets, kernel_drops) = packet_statistics(socket)?;
    report.kernel_packets = kernel_packets;
    report.kernel_drops = kernel_drops;
    drop(writer);
    // Flushed, not synced: the file is read back on this machine (the page
    // cache has it), and an fsync of a capture of tens of MB held a move's
    // detach for hundreds of ms while the transfer went on.
    file.0.borrow_mut().flush()?;
    Ok(report)
}

/// The capture file, shared between the pcap writer and the loop that flushes it when
/// the link goes idle (pcap-file's writer does not lend out its inner writer).
#[derive(Clone)]
struct SharedFile(Rc<RefCell<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// PACKET_STATISTICS: (frames that reached the socket, frames dropped). Reading
/// resets the kernel's counters, so this is read once, at the end.
fn packet_statistics(socket: &OwnedFd) -> io::Result<(u64, u64)> {
    let stats = getsockopt(socket, PacketStatistics)?;
    Ok((u64::from(stats.tp_packets), u64::from(stats.tp_drops)))
}

fn pcap_error(err: pcap_file::PcapError) -> io::Error {
    match err {
        pcap_file::PcapError::IoError(err) => err,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_node_dash_network() {
        assert_eq!(capture_file_name("r1", "global-a"), "r1-global-a.pcap");
        assert_eq!(capture_file_name("a", "a-r"), "a-a-r.pcap");
    }
}
