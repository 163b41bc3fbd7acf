//! The two tasks of one kernel-TCP control session, shared by sustain-server
//! (hosts' sessions) and sustain-proxy (the server's session): a reader that
//! hands each chunk, then the close, to the service's one main task, and a
//! writer that sends queued messages and shuts the connection down when the
//! main task drops the queue. The protocol logic stays in the sans-IO core.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Bytes read per chunk.
pub(crate) const READ_CHUNK: usize = 4096;

/// What a session's reader reports to the main task.
pub(crate) enum Inbound<Id> {
    Data(Id, Vec<u8>),
    Closed(Id),
}

/// Reads until EOF or an error, then reports the close.
pub(crate) async fn read_loop<Id: Copy>(
    id: Id,
    mut read: OwnedReadHalf,
    inbox: mpsc::Sender<Inbound<Id>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default().to_vec();
                if inbox.send(Inbound::Data(id, chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = inbox.send(Inbound::Closed(id)).await;
}

/// Writes queued messages; when the queue's sender is dropped (the core
/// closed the session), flushes and shuts the connection down.
pub(crate) async fn write_loop(mut write: OwnedWriteHalf, mut outbox: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = outbox.recv().await {
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
