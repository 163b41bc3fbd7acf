//! TCP options (RFC 9293 §3.1, RFC 7323, RFC 2018, RFC 6994) and a walker
//! that survives any byte sequence: unknown kinds, NOP/EOL, bad lengths.

use super::{SeqNumber, WireError};

/// Maximum bytes of options in a TCP header (data offset 15 words - 5).
pub const MAX_OPTIONS_LEN: usize = 40;
/// RFC 6994 shared experimental option kind used by sustain (kind 253).
pub const EXPERIMENTAL_KIND: u8 = 253;

/// Option kind: End of Option List (RFC 9293 §3.2).
pub const KIND_EOL: u8 = 0;
/// Option kind: No-Operation (RFC 9293 §3.2).
pub const KIND_NOP: u8 = 1;
/// Option kind: Maximum Segment Size (RFC 9293 §3.2).
pub const KIND_MSS: u8 = 2;
/// Option kind: Window Scale (RFC 7323 §2).
pub const KIND_WINDOW_SCALE: u8 = 3;
/// Option kind: SACK-Permitted (RFC 2018 §2).
pub const KIND_SACK_PERMITTED: u8 = 4;
/// Option kind: SACK (RFC 2018 §3).
pub const KIND_SACK: u8 = 5;
/// Option kind: Timestamps (RFC 7323 §3).
pub const KIND_TIMESTAMPS: u8 = 8;

/// RFC 7323 timestamps option values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    /// The sender's timestamp value (TSval).
    pub tsval: u32,
    /// The timestamp echoed from the peer (TSecr).
    pub tsecr: u32,
}

/// One SACK block (RFC 2018): bytes `[left, right)` were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlock {
    /// First sequence number of the block.
    pub left: SeqNumber,
    /// Sequence number just after the block.
    pub right: SeqNumber,
}

/// An RFC 6994 experimental option: kind 253, 16-bit ExID, then data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExperimentalOption<'a> {
    /// The 16-bit experiment identifier (RFC 6994 §3).
    pub exid: u16,
    /// The data after the ExID.
    pub data: &'a [u8],
}

/// One decoded option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: ends the options.
    EndOfList,
    /// Kind 1: padding.
    NoOperation,
    /// Kind 2: the sender's MSS in bytes.
    MaxSegmentSize(u16),
    /// Kind 3: the window scale shift count.
    WindowScale(u8),
    /// Kind 4: SACK may be used.
    SackPermitted,
    /// 1..=4 blocks; unused entries are `None`.
    Sack([Option<SackBlock>; 4]),
    /// Kind 8: timestamp values.
    Timestamps(Timestamps),
    /// Kind 253: an RFC 6994 experimental option.
    Experimental(ExperimentalOption<'a>),
    /// A kind we do not interpret, with its data (after kind and length).
    Unknown {
        /// The option kind.
        kind: u8,
        /// Its data, after kind and length.
        data: &'a [u8],
    },
}

/// Wire length of the MSS option (RFC 9293 §3.2).
pub const MSS_LEN: usize = 4;
/// Wire length of the window scale option (RFC 7323 §2.2).
pub const WINDOW_SCALE_LEN: usize = 3;
/// Wire length of the SACK-permitted option (RFC 2018 §2).
pub const SACK_PERMITTED_LEN: usize = 2;
/// Wire length of the timestamps option (RFC 7323 §3.2).
pub const TIMESTAMPS_LEN: usize = 10;
/// Bytes per SACK block (RFC 2018 §3).
pub const SACK_BLOCK_LEN: usize = 8;
/// Most SACK blocks one option can carry in 40 bytes (RFC 2018 §3).
pub const MAX_SACK_BLOCKS: usize = 4;
/// Kind, length and ExID of an RFC 6994 experimental option.
pub const EXPERIMENTAL_HEADER_LEN: usize = 4;

/// Walks the options area of a TCP header. Yields each option in order and
/// stops after EOL or at the end. A malformed option (length < 2, running
/// past the end, wrong fixed length for a known kind) yields one `Err` and
/// then the iterator is exhausted.
///
/// Errors: a kind byte with no length byte after it, or a length that runs
/// past the end of the area, is [`WireError::TruncatedOption`]; a length
/// below 2, or one that is wrong for a known kind, is
/// [`WireError::BadOptionLength`] (RFC 9293 §3.1: an illegal option length
/// must not crash the receiver; RFC 9293 §3.2 MUST-7 says to be prepared for
/// it, and the caller drops such a segment).
pub struct TcpOptionIter<'a> {
    bytes: &'a [u8],
    done: bool,
}

impl<'a> TcpOptionIter<'a> {
    /// Iterates over `bytes`, the options area of a TCP header.
    pub fn new(bytes: &'a [u8]) -> TcpOptionIter<'a> {
        TcpOptionIter { bytes, done: false }
    }

    fn fail(&mut self, err: WireError) -> Option<Result<TcpOption<'a>, WireError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some((&kind, rest)) = self.bytes.split_first() else {
            self.done = true;
            return None;
        };
        match kind {
            // RFC 9293 §3.1: End of Option List; what follows is padding.
            KIND_EOL => {
                self.done = true;
                return Some(Ok(TcpOption::EndOfList));
            }
            KIND_NOP => {
                self.bytes = rest;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        // RFC 9293 §3.1: every other kind is kind, length (counting kind and
        // length), data.
        let Some(&len) = rest.first() else {
            return self.fail(WireError::TruncatedOption { kind });
        };
        let len = usize::from(len);
        if len < 2 {
            return self.fail(WireError::BadOptionLength { kind, len });
        }
        let Some((option, remaining)) = self.bytes.split_at_checked(len) else {
            return self.fail(WireError::TruncatedOption { kind });
        };
        let data = option.get(2..).unwrap_or_default();
        let bad_len = WireError::BadOptionLength { kind, len };
        let parsed = match kind {
            // RFC 9293 §3.2: MSS is exactly 4 bytes.
            KIND_MSS => match *data {
                [hi, lo] => TcpOption::MaxSegmentSize(u16::from_be_bytes([hi, lo])),
                _ => return self.fail(bad_len),
            },
            // RFC 7323 §2.2: window scale is exactly 3 bytes.
            KIND_WINDOW_SCALE => match *data {
                [shift] => TcpOption::WindowScale(shift),
                _ => return self.fail(bad_len),
            },
            // RFC 2018 §2: SACK-permitted is exactly 2 bytes.
            KIND_SACK_PERMITTED => match *data {
                [] => TcpOption::SackPermitted,
                _ => return self.fail(bad_len),
            },
            // RFC 2018 §3: 2 + 8n bytes; n is 1..=4 in 40 option bytes.
            KIND_SACK => {
                let count = data.len() / SACK_BLOCK_LEN;
                if data.len() % SACK_BLOCK_LEN != 0 || !(1..=MAX_SACK_BLOCKS).contains(&count) {
                    return self.fail(bad_len);
                }
                let mut blocks = [None; MAX_SACK_BLOCKS];
                for (slot, block) in blocks.iter_mut().zip(data.chunks_exact(SACK_BLOCK_LEN)) {
                    *slot = Some(SackBlock {
                        left: SeqNumber(read_u32(block, 0)),
                        right: SeqNumber(read_u32(block, 4)),
                    });
                }
                TcpOption::Sack(blocks)
            }
            // RFC 7323 §3.2: timestamps are exactly 10 bytes.
            KIND_TIMESTAMPS => {
                if data.len() != TIMESTAMPS_LEN - 2 {
                    return self.fail(bad_len);
                }
                TcpOption::Timestamps(Timestamps {
                    tsval: read_u32(data, 0),
                    tsecr: read_u32(data, 4),
                })
            }
            // RFC 6994 §3: kind 253 carries a 16-bit ExID after the length.
            EXPERIMENTAL_KIND => match *data {
                [hi, lo, ref payload @ ..] => TcpOption::Experimental(ExperimentalOption {
                    exid: u16::from_be_bytes([hi, lo]),
                    data: payload,
                }),
                _ => return self.fail(bad_len),
            },
            _ => TcpOption::Unknown { kind, data },
        };
        self.bytes = remaining;
        Some(Ok(parsed))
    }
}

impl core::iter::FusedIterator for TcpOptionIter<'_> {}

/// Big-endian u32 at `at`; 0 if out of range (callers check lengths first,
/// this only keeps the walker free of panicking indexing).
fn read_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

impl TcpOption<'_> {
    /// Bytes this option occupies on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => MSS_LEN,
            TcpOption::WindowScale(_) => WINDOW_SCALE_LEN,
            TcpOption::SackPermitted => SACK_PERMITTED_LEN,
            TcpOption::Sack(blocks) => 2 + SACK_BLOCK_LEN * blocks.iter().flatten().count(),
            TcpOption::Timestamps(_) => TIMESTAMPS_LEN,
            TcpOption::Experimental(exp) => EXPERIMENTAL_HEADER_LEN + exp.data.len(),
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// The kind byte this option is written with.
    pub fn kind(&self) -> u8 {
        match self {
            TcpOption::EndOfList => KIND_EOL,
            TcpOption::NoOperation => KIND_NOP,
            TcpOption::MaxSegmentSize(_) => KIND_MSS,
            TcpOption::WindowScale(_) => KIND_WINDOW_SCALE,
            TcpOption::SackPermitted => KIND_SACK_PERMITTED,
            TcpOption::Sack(_) => KIND_SACK,
            TcpOption::Timestamps(_) => KIND_TIMESTAMPS,
            TcpOption::Experimental(_) => EXPERIMENTAL_KIND,
            TcpOption::Unknown { kind, .. } => *kind,
        }
    }

    /// Writes the option at the start of `buf` and returns the bytes written.
    /// `buf` must hold at least `buffer_len()` bytes.
    ///
    /// Refuses (with `BadOptionLength`) what the walker could not read back
    /// as the same option: a length over 255, a SACK option with no blocks,
    /// and `Unknown` with kind 0 or 1, which have no length byte. `Unknown`
    /// with a known kind is written as given, so tests can build malformed
    /// options on purpose. `Sack` writes its `Some` blocks in order.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let kind = self.kind();
        let Some(out) = buf.get_mut(..len) else {
            return Err(WireError::BufferTooSmall {
                needed: len,
                have: buf.len(),
            });
        };
        let Ok(len_byte) = u8::try_from(len) else {
            return Err(WireError::BadOptionLength { kind, len });
        };
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => out.copy_from_slice(&[kind]),
            TcpOption::MaxSegmentSize(mss) => {
                let [hi, lo] = mss.to_be_bytes();
                out.copy_from_slice(&[kind, len_byte, hi, lo]);
            }
            TcpOption::WindowScale(shift) => out.copy_from_slice(&[kind, len_byte, *shift]),
            TcpOption::SackPermitted => out.copy_from_slice(&[kind, len_byte]),
            TcpOption::Sack(blocks) => {
                if len == 2 {
                    return Err(WireError::BadOptionLength { kind, len });
                }
                let (head, body) = out.split_at_mut(2);
                head.copy_from_slice(&[kind, len_byte]);
                for (chunk, block) in body
                    .chunks_exact_mut(SACK_BLOCK_LEN)
                    .zip(blocks.iter().flatten())
                {
                    let (left, right) = chunk.split_at_mut(4);
                    left.copy_from_slice(&block.left.0.to_be_bytes());
                    right.copy_from_slice(&block.right.0.to_be_bytes());
                }
            }
            TcpOption::Timestamps(ts) => {
                let (head, body) = out.split_at_mut(2);
                head.copy_from_slice(&[kind, len_byte]);
                let (tsval, tsecr) = body.split_at_mut(4);
                tsval.copy_from_slice(&ts.tsval.to_be_bytes());
                tsecr.copy_from_slice(&ts.tsecr.to_be_bytes());
            }
            TcpOption::Experimental(exp) => {
                let (head, body) = out.split_at_mut(EXPERIMENTAL_HEADER_LEN);
                let [hi, lo] = exp.exid.to_be_bytes();
                head.copy_from_slice(&[kind, len_byte, hi, lo]);
                body.copy_from_slice(exp.data);
            }
            TcpOption::Unknown { data, .. } => {
                if kind == KIND_EOL || kind == KIND_NOP {
                    return Err(WireError::BadOptionLength { kind, len });
                }
                let (head, body) = out.split_at_mut(2);
                head.copy_from_slice(&[kind, len_byte]);
                body.copy_from_slice(data);
            }
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(bytes: &[u8]) -> Vec<Result<TcpOption<'_>, WireError>> {
        TcpOptionIter::new(bytes).collect()
    }

    fn emitted(option: TcpOption<'_>) -> Vec<u8> {
        let mut buf = [0xeeu8; 64];
        let n = option.emit(&mut buf).expect("emit");
        assert_eq!(n, option.buffer_len(), "{option:?}");
        buf[..n].to_vec()
    }

    /// Emits `option`, checks the exact bytes, and walks them back.
    fn assert_wire(option: TcpOption<'_>, wire: &[u8]) {
        assert_eq!(emitted(option), wire, "{option:?}");
        assert_eq!(walk(wire), vec![Ok(option)], "{option:?}");
    }

    const TS: Timestamps = Timestamps {
        tsval: 0x000a_2b3c,
        tsecr: 0,
    };

    #[test]
    fn linux_syn_options() {
        // A Linux SYN: MSS 1460, SACK-permitted, timestamps, NOP, WS 7.
        let bytes = hex::decode("020405b40402080a000a2b3c0000000001030307").unwrap();
        assert_eq!(
            walk(&bytes),
            vec![
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps(TS)),
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
        // Emitting the same options in order reproduces the bytes.
        let mut out = Vec::new();
        for option in TcpOptionIter::new(&bytes) {
            out.extend(emitted(option.unwrap()));
        }
        assert_eq!(out, bytes);
    }

    #[test]
    fn each_kind_round_trips_byte_exact() {
        assert_wire(TcpOption::NoOperation, &[1]);
        assert_wire(TcpOption::MaxSegmentSize(1460), &[2, 4, 0x05, 0xb4]);
        assert_wire(TcpOption::MaxSegmentSize(0xffff), &[2, 4, 0xff, 0xff]);
        assert_wire(TcpOption::WindowScale(7), &[3, 3, 7]);
        // Kept as parsed even above the RFC 7323 limit of 14.
        assert_wire(TcpOption::WindowScale(255), &[3, 3, 255]);
        assert_wire(TcpOption::SackPermitted, &[4, 2]);
        assert_wire(
            TcpOption::Timestamps(Timestamps {
                tsval: 0x0102_0304,
                tsecr: 0xa0b0_c0d0,
            }),
            &[8, 10, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0],
        );
        assert_wire(
            TcpOption::Experimental(ExperimentalOption {
                exid: 0x1234,
                data: &[0xab, 0xcd],
            }),
            &[253, 6, 0x12, 0x34, 0xab, 0xcd],
        );
        assert_wire(
            TcpOption::Experimental(ExperimentalOption {
                exid: 0xbeef,
                data: &[],
            }),
            &[253, 4, 0xbe, 0xef],
        );
        assert_wire(
            TcpOption::Unknown {
                kind: 30,
                data: &[9, 8, 7],
            },
            &[30, 5, 9, 8, 7],
        );
        assert_wire(
            TcpOption::Unknown {
                kind: 254,
                data: &[],
            },
            &[254, 2],
        );
        // EOL is emitted as one byte and ends the walk.
        assert_eq!(emitted(TcpOption::EndOfList), [0]);
        assert_eq!(walk(&[0]), vec![Ok(TcpOption::EndOfList)]);
    }

    #[test]
    fn sack_one_to_four_blocks() {
        let block = |l: u32, r: u32| SackBlock {
            left: SeqNumber(l),
            right: SeqNumber(r),
        };
        let all = [
            block(0x0000_0001, 0x0000_0101),
            block(0xffff_fff0, 0x0000_0010),
            block(0x1111_1111, 0x2222_2222),
            block(0x8000_0000, 0x8000_0400),
        ];
        for n in 1..=4 {
            let mut blocks = [None; 4];
            for (slot, b) in blocks.iter_mut().zip(&all[..n]) {
                *slot = Some(*b);
            }
            let mut wire = vec![5, (2 + 8 * n) as u8];
            for b in &all[..n] {
                wire.extend(b.left.0.to_be_bytes());
                wire.extend(b.right.0.to_be_bytes());
            }
            assert_wire(TcpOption::Sack(blocks), &wire);
        }
    }

    #[test]
    fn sack_emit_skips_empty_slots_and_rejects_no_blocks() {
        let b = SackBlock {
            left: SeqNumber(10),
            right: SeqNumber(20),
        };
        let option = TcpOption::Sack([None, Some(b), None, None]);
        assert_eq!(emitted(option), [5, 10, 0, 0, 0, 10, 0, 0, 0, 20]);
        let mut buf = [0u8; 8];
        assert_eq!(
            TcpOption::Sack([None; 4]).emit(&mut buf),
            Err(WireError::BadOptionLength { kind: 5, len: 2 })
        );
    }

    #[test]
    fn length_below_two_is_bad_length_and_stops() {
        for len in [0u8, 1] {
            let bytes = [1, 2, len, 0x05, 0xb4, 1, 1];
            assert_eq!(
                walk(&bytes),
                vec![
                    Ok(TcpOption::NoOperation),
                    Err(WireError::BadOptionLength {
                        kind: 2,
                        len: usize::from(len)
                    }),
                ]
            );
        }
        // Same for kinds we do not know: a zero length must not loop forever.
        assert_eq!(
            walk(&[99, 0, 99, 0]),
            vec![Err(WireError::BadOptionLength { kind: 99, len: 0 })]
        );
    }

    #[test]
    fn length_past_the_end_is_truncated() {
        assert_eq!(
            walk(&[2, 4, 0x05]),
            vec![Err(WireError::TruncatedOption { kind: 2 })]
        );
        assert_eq!(
            walk(&[1, 8, 10, 0, 0, 0, 0, 0, 0, 0]),
            vec![
                Ok(TcpOption::NoOperation),
                Err(WireError::TruncatedOption { kind: 8 })
            ]
        );
        assert_eq!(
            walk(&[77, 255, 1, 2, 3]),
            vec![Err(WireError::TruncatedOption { kind: 77 })]
        );
    }

    #[test]
    fn kind_without_length_byte_is_truncated() {
        for kind in [2u8, 3, 4, 5, 8, 253, 200] {
            assert_eq!(
                walk(&[1, 1, 1, kind]),
                vec![
                    Ok(TcpOption::NoOperation),
                    Ok(TcpOption::NoOperation),
                    Ok(TcpOption::NoOperation),
                    Err(WireError::TruncatedOption { kind }),
                ],
                "kind {kind}"
            );
        }
    }

    #[test]
    fn wrong_fixed_lengths_are_rejected() {
        let cases: &[(u8, &[u8])] = &[
            (2, &[2, 3, 5]),                          // MSS 3
            (2, &[2, 5, 5, 0xb4, 0]),                 // MSS 5
            (3, &[3, 2]),                             // WS 2
            (3, &[3, 4, 7, 0]),                       // WS 4
            (4, &[4, 3, 0]),                          // SACK-perm 3
            (8, &[8, 8, 0, 0, 0, 0, 0, 0]),           // TS 8
            (8, &[8, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // TS 11
            (5, &[5, 2]),                             // SACK, no block
            (5, &[5, 9, 0, 0, 0, 0, 0, 0, 0]),        // SACK 2+7
            (5, &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // SACK 2+9
            (253, &[253, 2]),                         // no ExID
            (253, &[253, 3, 0x12]),                   // half an ExID
        ];
        for &(kind, bytes) in cases {
            let len = usize::from(bytes[1]);
            assert_eq!(
                walk(bytes),
                vec![Err(WireError::BadOptionLength { kind, len })],
                "{bytes:02x?}"
            );
        }
        // Five SACK blocks (len 42) cannot be valid even with room for them.
        let mut five = vec![5, 42];
        five.extend([0u8; 40]);
        assert_eq!(
            walk(&five),
            vec![Err(WireError::BadOptionLength { kind: 5, len: 42 })]
        );
    }

    #[test]
    fn unknown_kinds_are_yielded_and_skipped() {
        let bytes = [30, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xb4, 254, 2, 3, 3, 7];
        assert_eq!(
            walk(&bytes),
            vec![
                Ok(TcpOption::Unknown {
                    kind: 30,
                    data: &[0xaa, 0xbb]
                }),
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::Unknown {
                    kind: 254,
                    data: &[]
                }),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
    }

    #[test]
    fn eol_in_the_middle_ends_the_walk() {
        // Bytes after EOL are padding, even if they would not parse.
        let bytes = [2, 4, 0x05, 0xb4, 0, 2, 0, 0xff];
        assert_eq!(
            walk(&bytes),
            vec![
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::EndOfList)
            ]
        );
        let mut iter = TcpOptionIter::new(&bytes);
        assert_eq!(iter.by_ref().count(), 2);
        assert_eq!(iter.next(), None);
    }

    #[test]
    fn experimental_option_with_exid() {
        // RFC 6994: kind 253, length, ExID, data.
        let bytes = [1, 253, 8, 0x53, 0x55, 1, 2, 3, 4, 0];
        assert_eq!(
            walk(&bytes),
            vec![
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::Experimental(ExperimentalOption {
                    exid: 0x5355,
                    data: &[1, 2, 3, 4],
                })),
                Ok(TcpOption::EndOfList),
            ]
        );
    }

    #[test]
    fn empty_area_yields_nothing() {
        assert_eq!(walk(&[]), vec![]);
    }

    #[test]
    fn emit_refuses_what_cannot_be_read_back() {
        let mut small = [0u8; 3];
        assert_eq!(
            TcpOption::MaxSegmentSize(1).emit(&mut small),
            Err(WireError::BufferTooSmall { needed: 4, have: 3 })
        );
        assert_eq!(small, [0; 3], "nothing written on error");
        let mut buf = [0u8; 300];
        let long = [0u8; 254];
        assert_eq!(
            TcpOption::Unknown {
                kind: 9,
                data: &long
            }
            .emit(&mut buf),
            Err(WireError::BadOptionLength { kind: 9, len: 256 })
        );
        assert_eq!(
            TcpOption::Unknown {
                kind: 9,
                data: &long[..253]
            }
            .emit(&mut buf),
            Ok(255)
        );
        assert_eq!(
            TcpOption::Unknown { kind: 1, data: &[] }.emit(&mut buf),
            Err(WireError::BadOptionLength { kind: 1, len: 2 })
        );
    }
}
