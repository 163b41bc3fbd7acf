//! TCP options (RFC 9293 §3.1, RFC 7323, RFC 2018, RFC 6994) and a walker
//! that survives any byte sequence: unknown kinds, NOP/EOL, bad lengths.

use super::{SeqNumber, WireError};

/// Maximum bytes of options in a TCP header (data offset 15 words - 5).
pub const MAX_OPTIONS_LEN: usize = 40;
/// RFC 6994 shared experimental option kind used by sustain (kind 253).
pub const EXPERIMENTAL_KIND: u8 = 253;

pub const KIND_EOL: u8 = 0;
pub const KIND_NOP: u8 = 1;
pub const KIND_MSS: u8 = 2;
pub const KIND_WINDOW_SCALE: u8 = 3;
pub const KIND_SACK_PERMITTED: u8 = 4;
pub const KIND_SACK: u8 = 5;
pub const KIND_TIMESTAMPS: u8 = 8;

/// RFC 7323 timestamps option values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// One SACK block (RFC 2018): bytes `[left, right)` were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlock {
    pub left: SeqNumber,
    pub right: SeqNumber,
}

/// An RFC 6994 experimental option: kind 253, 16-bit ExID, then data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExperimentalOption<'a> {
    pub exid: u16,
    pub data: &'a [u8],
}

/// One decoded option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOperation,
    MaxSegmentSize(u16),
    WindowScale(u8),
    SackPermitted,
    /// 1..=4 blocks; unused entries are `None`.
    Sack([Option<SackBlock>; 4]),
    Timestamps(Timestamps),
    Experimental(ExperimentalOption<'a>),
    /// A kind we do not interpret, with its data (after kind and length).
    Unknown { kind: u8, data: &'a [u8] },
}

/// Walks the options area of a TCP header. Yields each option in order and
/// stops after EOL or at the end. A malformed option (length < 2, running
/// past the end, wrong fixed length for a known kind) yields one `Err` and
/// then the iterator is exhausted.
pub struct TcpOptionIter<'a> {
    bytes: &'a [u8],
    done: bool,
}

impl<'a> TcpOptionIter<'a> {
    pub fn new(bytes: &'a [u8]) -> TcpOptionIter<'a> {
        TcpOptionIter { bytes, done: false }
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let _ = (&self.bytes, self.done);
        todo!("wire helper")
    }
}

impl TcpOption<'_> {
    /// Bytes this option occupies on the wire.
    pub fn buffer_len(&self) -> usize {
        todo!("wire helper")
    }

    /// Writes the option at the start of `buf` and returns the bytes written.
    /// `buf` must hold at least `buffer_len()` bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let _ = buf;
        todo!("wire helper")
    }
}
