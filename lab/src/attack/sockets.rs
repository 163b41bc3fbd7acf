//! The engine's sockets: observers on the targets' uplinks and the injector.

use super::*;

/// The observer's tap on `ifname` (in the calling thread's namespace): both
/// directions, non-blocking.
pub(crate) fn open_observer(ifname: &str) -> io::Result<OwnedFd> {
    open_packet_socket(
        ifname,
        PacketSocketOptions {
            nonblocking: true,
            timestamps: false,
        },
    )
}

/// A raw IPv4 socket whose packets carry our own IP header (`IPPROTO_RAW` implies
/// `IP_HDRINCL`), in the calling thread's namespace.
pub(crate) fn open_injector() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    })?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn send_packet(fd: RawFd, packet: &[u8]) -> io::Result<()> {
    let destination = packet
        .get(16..20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too short"))?;
    // SAFETY: zeroed sockaddr_in is valid; family and address are set below.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes(destination);
    // SAFETY: packet and addr are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long the attacker waits for its TCP connection to the server.
pub(crate) const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// The attacker's own kernel TCP connection to the mobility server, opened in the
/// attacker's namespace; replies are read without blocking.
pub(crate) struct ControlSession {
    pub(crate) stream: TcpStream,
    pub(crate) frames: FrameBuffer,
    /// The server closed it (or reading failed).
    pub(crate) closed: bool,
}

impl ControlSession {
    pub(crate) fn open(netns: &Netns, server: SocketAddrV4) -> io::Result<ControlSession> {
        let stream = netns
            .run(|| TcpStream::connect_timeout(&server.into(), CONNECT_WAIT))
            .map_err(|e| io::Error::other(e.to_string()))??;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(ControlSession {
            stream,
            frames: FrameBuffer::new(),
            closed: false,
        })
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        let deadline = Instant::now() + CONNECT_WAIT;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the attacker's side (the server then sees the session close).
    pub(crate) fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Whole messages the server sent since the last call.
    pub(crate) fn replies(&mut self) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1024];
        while !self.closed {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.frames.push(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        let mut messages = Vec::new();
        while let Ok(Some(frame)) = self.frames.next_frame() {
            messages.push(frame);
        }
        messages
    }
}

/// Reads every queued frame of an observer socket and hands its IPv4 packets to
/// `observe`.
pub(crate) fn read_frames(fd: RawFd, buf: &mut [u8], mut observe: impl FnMut(&[u8])) {
    // Bounded, so a flood cannot keep the triggers from being checked.
    for _ in 0..4096 {
        // SAFETY: buf is valid for writes of its length.
        let len = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let Ok(len) = usize::try_from(len) else {
            break; // EAGAIN, or the interface went away with its host
        };
        let frame = buf.get(..len).unwrap_or_default();
        // Ethernet II: 14 bytes, ethertype last.
        if let (Some([0x08, 0x00]), Some(packet)) = (frame.get(12..14), frame.get(14..)) {
            observe(packet);
        }
    }
}
