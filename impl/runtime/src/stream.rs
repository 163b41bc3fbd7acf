//! [`Stream`]: one sustained TCP connection as a tokio `AsyncRead` +
//! `AsyncWrite`, with its migration events.
//!
//! A stream is a handle: reads and writes lock the endpoint's shared state,
//! call the core, and wake the driver (the module docs of `driver.rs`).
//! The core's send buffer is the only queue: a write the buffer cannot take
//! is pending until acknowledged data frees space, so nothing is queued
//! without bound; `flush` waits until everything written is acknowledged.
//! `shutdown` half-closes (our FIN after the queued data);
//! reading goes on until the peer's FIN. Dropping a stream closes it
//! gracefully: the FIN goes after what was written, and what arrives
//! afterwards is discarded.

use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::mpsc::{unbounded, UnboundedReceiver};
use sustain_core::tcp::{CloseReason, ConnId, ConnInfo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ConnectionError;
use crate::shared::{Shared, State, StreamEvent};

/// The migration events of one stream from the moment [`Stream::events`]
/// was called; ends when the connection closes.
pub struct StreamEvents {
    rx: UnboundedReceiver<StreamEvent>,
}

impl StreamEvents {
    /// The next event, or `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        futures::StreamExt::next(&mut self.rx).await
    }
}

impl futures::Stream for StreamEvents {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// One sustained connection. See the module documentation.
pub struct Stream {
    shared: Arc<Shared>,
    conn: ConnId,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// The error for a connection that is closed (or gone) when the application
/// asks for more: the typed reason, or `EndpointClosed`.
fn closed_error(st: &State, conn: ConnId) -> io::Error {
    if st.stopped {
        return ConnectionError::EndpointClosed.into();
    }
    let reason = st
        .conns
        .get(&conn)
        .and_then(|s| s.closed)
        .or_else(|| st.core.close_reason(conn));
    match reason.and_then(ConnectionError::from_reason) {
        Some(e) => e.into(),
        None => io::Error::new(io::ErrorKind::NotConnected, "connection is closed"),
    }
}

impl Stream {
    /// A handle for a connection whose slot exists (`handle` set).
    pub(crate) fn new(shared: Arc<Shared>, conn: ConnId) -> Stream {
        Stream { shared, conn }
    }

    /// The core's id of this connection (as in the `--events` file).
    pub fn id(&self) -> ConnId {
        self.conn
    }

    /// A snapshot of the connection (addresses, state, RTT, windows,
    /// migration counters); `None` once the core has forgotten it.
    pub fn info(&self) -> Option<ConnInfo> {
        self.shared.lock().core.info(self.conn)
    }

    /// The current local address (changes when this end moves).
    pub fn local_addr(&self) -> Option<SocketAddrV4> {
        self.info().map(|i| i.local)
    }

    /// The current remote address (changes when the peer moves).
    pub fn peer_addr(&self) -> Option<SocketAddrV4> {
        self.info().map(|i| i.remote)
    }

    /// Migration events from now on.
    pub fn events(&self) -> StreamEvents {
        let (tx, rx) = unbounded();
        let mut st = self.shared.lock();
        let open = st.conns.get(&self.conn).is_some_and(|s| s.closed.is_none());
        if let (true, Some(slot)) = (open, st.conns.get_mut(&self.conn)) {
            slot.events.push(tx);
        }
        StreamEvents { rx }
    }

    /// Waits until the connection has closed: `Ok` after a normal close
    /// (both FINs exchanged), the reason otherwise.
    pub async fn closed(&self) -> Result<(), ConnectionError> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.stopped {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            }
            let Some(slot) = st.conns.get_mut(&self.conn) else {
                return Poll::Ready(Err(ConnectionError::EndpointClosed));
            };
            match slot.closed {
                Some(CloseReason::Normal) => Poll::Ready(Ok(())),
                Some(r) => Poll::Ready(Err(
                    ConnectionError::from_reason(r).unwrap_or(ConnectionError::Aborted)
                )),
                None => {
                    slot.wait_state(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Ends the connection at once with an RST.
    pub fn abort(&self) {
        self.shared.lock().core.abort(self.conn);
        self.shared.wake.notify_one();
    }

    /// Moves the connection to another local address now (the runtime does
    /// this by itself when addresses change).
    pub fn migrate(&self, new_local: Ipv4Addr) -> Result<(), ConnectionError> {
        let mut st = self.shared.lock();
        let now = self.shared.clock.now();
        let r = st
            .core
            .migrate(now, self.conn, new_local)
            .map_err(ConnectionError::from_tcp);
        drop(st);
        self.shared.wake.notify_one();
        r
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match st.core.recv(this.conn, buf.initialize_unfilled()) {
            Ok(0) => {
                if st.core.recv_finished(this.conn) {
                    return Poll::Ready(Ok(())); // the peer's FIN: end of stream
                }
                if st.stopped {
                    return Poll::Ready(Err(ConnectionError::EndpointClosed.into()));
                }
                match st.conns.get_mut(&this.conn) {
                    Some(slot) if slot.closed.is_none() => {
                        slot.read = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    Some(slot) if slot.closed == Some(CloseReason::Normal) => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(closed_error(&st, this.conn))),
                }
            }
            Ok(n) => {
                buf.advance(n);
                drop(st);
                // Reading opened the window: a window update may be due.
                this.shared.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            Err(_) => Poll::Ready(Err(closed_error(&st, this.conn))),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut st = this.shared.lock();
        if st.stopped {
            return Poll::Ready(Err(ConnectionError::EndpointClosed.into()));
        }
        match st.core.send(this.conn, buf) {
            Ok(0) => match st.conns.get_mut(&this.conn) {
                Some(slot) if slot.closed.is_none() => {
                    slot.write = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(Err(closed_error(&st, this.conn))),
            },
            Ok(n) => {
                drop(st);
                this.shared.wake.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(closed_error(&st, this.conn))),
        }
    }

    /// Ready once everything written so far has been acknowledged by the
    /// peer (it reached its destination, not just the send buffer). A
    /// copy loop that flushes before `shutdown` (tokio's `copy`,
    /// `copy_bidirectional`) thus sends its FIN on its own segment after
    /// the data, never racing the application's last bytes.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if st.core.send_queued(this.conn) == 0 {
            return Poll::Ready(Ok(()));
        }
        if st.stopped {
            return Poll::Ready(Err(ConnectionError::EndpointClosed.into()));
        }
        match st.conns.get_mut(&this.conn) {
            Some(slot) if slot.closed.is_none() => {
                slot.flush = Some(cx.waker().clone());
                if !st.flushing.contains(&this.conn) {
                    st.flushing.push(this.conn);
                }
                Poll::Pending
            }
            _ => Poll::Ready(Err(closed_error(&st, this.conn))),
        }
    }

    /// Half-close: our FIN goes after the queued data; reading continues.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if st.stopped {
            return Poll::Ready(Err(ConnectionError::EndpointClosed.into()));
        }
        let queued = st.conns.get(&this.conn).is_some_and(|s| s.fin_queued);
        if !queued {
            if st.core.close(this.conn).is_err() {
                return Poll::Ready(Err(closed_error(&st, this.conn)));
            }
            if let Some(slot) = st.conns.get_mut(&this.conn) {
                slot.fin_queued = true;
            }
            drop(st);
            this.shared.wake.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let Some(slot) = st.conns.get_mut(&self.conn) else {
            return;
        };
        slot.handle = false;
        slot.events.clear();
        let (closed, fin_queued) = (slot.closed.is_some(), slot.fin_queued);
        if closed {
            st.forget(self.conn);
        } else if !slot.connected {
            // A connect given up before it completed.
            st.core.abort(self.conn);
        } else {
            if !fin_queued {
                let _ = st.core.close(self.conn);
            }
            // Nobody reads any more: discard what came (and, in the
            // driver, what comes).
            st.drain_orphan(self.conn);
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}
