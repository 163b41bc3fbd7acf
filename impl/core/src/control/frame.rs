//! Splitting a control session's byte stream into messages (PROTOCOL.md
//! §15.3): the length field sits at the same place in every version, so a
//! receiver can always find the next message, and a message longer than
//! [`MAX_MESSAGE_LEN`] or shorter than the header ends the session.

use super::{ControlError, HEADER_LEN, MAX_MESSAGE_LEN};

/// Collects stream bytes and hands out whole messages. Holds at most
/// `MAX_MESSAGE_LEN - 1` bytes between calls once drained.
#[derive(Debug, Default, Clone)]
pub struct FrameBuffer {
    pending: Vec<u8>,
    broken: bool,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// Appends received bytes; call [`next_frame`](Self::next_frame) until
    /// it returns `Ok(None)` after each push. Bytes after a framing error
    /// are discarded.
    pub fn push(&mut self, data: &[u8]) {
        if !self.broken {
            self.pending.extend_from_slice(data);
        }
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the
    /// framing error that makes the rest of the stream unreadable
    /// (`Garbage`, `Oversized`); after an error it returns `Ok(None)`.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ControlError> {
        if self.broken || self.pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let declared = usize::from(u16::from_be_bytes([
            self.pending.get(2).copied().unwrap_or(0),
            self.pending.get(3).copied().unwrap_or(0),
        ]));
        if declared < HEADER_LEN {
            self.break_stream();
            return Err(ControlError::Garbage(declared));
        }
        if declared > MAX_MESSAGE_LEN {
            self.break_stream();
            return Err(ControlError::Oversized(declared));
        }
        if self.pending.len() < declared {
            return Ok(None);
        }
        let rest = self.pending.split_off(declared);
        Ok(Some(core::mem::replace(&mut self.pending, rest)))
    }

    /// Bytes of an incomplete message still waiting (a non-zero value at
    /// the end of a stream means the last message was truncated).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Framing is lost (a length field below the header or above the maximum): the session must close.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn break_stream(&mut self) {
        self.broken = true;
        self.pending = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_byte_by_byte_and_in_bulk() {
        let mut stream = Vec::new();
        for len in [4usize, 18, 66, 256] {
            let mut m = vec![1, 0x7F, 0, 0];
            m.resize(len, 0xAB);
            m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            stream.extend_from_slice(&m);
        }
        for chunk in [1usize, 3, 7, 1000] {
            let mut fb = FrameBuffer::new();
            let mut lens = Vec::new();
            for piece in stream.chunks(chunk) {
                fb.push(piece);
                while let Some(frame) = fb.next_frame().unwrap() {
                    lens.push(frame.len());
                }
                assert!(fb.pending_len() < MAX_MESSAGE_LEN);
            }
            assert_eq!(lens, [4, 18, 66, 256], "chunk {chunk}");
            assert_eq!(fb.pending_len(), 0);
        }
    }

    #[test]
    fn garbage_and_oversized_break_the_stream() {
        let mut fb = FrameBuffer::new();
        fb.push(&[1, 1, 0, 3, 9, 9, 9]);
        assert_eq!(fb.next_frame(), Err(ControlError::Garbage(3)));
        assert_eq!(fb.next_frame(), Ok(None));
        fb.push(&[1, 1, 0, 10]);
        assert_eq!(fb.next_frame(), Ok(None));
        assert!(fb.is_broken());
        let mut fb = FrameBuffer::new();
        fb.push(&[1, 1, 1, 1]);
        assert_eq!(fb.next_frame(), Err(ControlError::Oversized(257)));
        assert_eq!(fb.pending_len(), 0);
    }
}
