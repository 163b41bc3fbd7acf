//! The engine's sockets: observers on the targets' uplinks and the injector.

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};

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
    let socket = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )?;
    Ok(socket)
}

pub(crate) fn send_packet(fd: RawFd, packet: &[u8]) -> io::Result<()> {
    let destination = packet
        .get(16..20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too short"))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::from(destination), 0));
    sendto(fd, packet, &addr, MsgFlags::empty())?;
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
        let Ok(len) = recv(fd, buf, MsgFlags::MSG_DONTWAIT) else {
            break; // EAGAIN, or the interface went away with its host
        };
        let frame = buf.get(..len).unwrap_or_default();
        // Ethernet II: 14 bytes, ethertype last.
        if let (Some([0x08, 0x00]), Some(packet)) = (frame.get(12..14), frame.get(14..)) {
            observe(packet);
        }
    }
}
