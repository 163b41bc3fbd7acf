//! TCP header representation (RFC 9293 §3.1).

use core::net::Ipv4Addr;

use etherparse::err::tcp::{HeaderError, HeaderSliceError};
use etherparse::TcpHeaderSlice;

use super::checksum;
use super::options::{
    ExperimentalOption, SackBlock, TcpOption, TcpOptionIter, Timestamps, EXPERIMENTAL_HEADER_LEN,
    MAX_OPTIONS_LEN, MSS_LEN, SACK_BLOCK_LEN, SACK_PERMITTED_LEN, TIMESTAMPS_LEN, WINDOW_SCALE_LEN,
};
use super::{SeqNumber, WireError};

pub const TCP_HEADER_LEN: usize = 20;

/// TCP control bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);
    pub const NONE: TcpFlags = TcpFlags(0);

    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    pub fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    pub fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    pub fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
    pub fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl core::fmt::Debug for TcpFlags {
    /// Prints like tcpdump: `[S.]`, `[P.]`, `[F.]`, `[R]`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut s = String::new();
        for (flag, c) in [
            (Self::SYN, 'S'),
            (Self::FIN, 'F'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
        ] {
            if self.contains(flag) {
                s.push(c);
            }
        }
        if self.ack() {
            s.push('.');
        }
        write!(f, "[{s}]")
    }
}

/// Up to this many experimental (kind 253) options are kept per segment.
pub const MAX_EXPERIMENTAL_OPTIONS: usize = 4;

/// A parsed TCP segment: header fields, the options sustain understands,
/// and a borrowed payload. Unknown option kinds are skipped on parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    /// Meaningful only when `flags` contains ACK (emitted as-is regardless).
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    /// The raw 16-bit window field, before window scaling.
    pub window: u16,
    pub urgent: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// SACK blocks in wire order; unused entries are `None`.
    pub sack_blocks: [Option<SackBlock>; 4],
    pub timestamps: Option<Timestamps>,
    /// RFC 6994 options in wire order; unused entries are `None`.
    pub experimental: [Option<ExperimentalOption<'a>>; MAX_EXPERIMENTAL_OPTIONS],
    pub payload: &'a [u8],
}

impl Default for TcpRepr<'_> {
    fn default() -> Self {
        TcpRepr {
            src_port: 0,
            dst_port: 0,
            seq: SeqNumber(0),
            ack: SeqNumber(0),
            flags: TcpFlags::NONE,
            window: 0,
            urgent: 0,
            mss: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: [None; 4],
            timestamps: None,
            experimental: [None; MAX_EXPERIMENTAL_OPTIONS],
            payload: &[],
        }
    }
}

impl<'a> TcpRepr<'a> {
    /// Parses a TCP segment (header + payload, no IP header). Verifies the
    /// checksum over the IPv4 pseudo-header. Malformed options reject the
    /// whole segment (RFC 9293 §3.1: never crash on an illegal length).
    ///
    /// - A segment shorter than 20 bytes is `Truncated`; a data offset below
    ///   5 or past the end of the segment is `BadTcpDataOffset` (the value is
    ///   the data offset field, in 32-bit words).
    /// - A segment over 65535 bytes cannot be summed with the 16-bit
    ///   pseudo-header length and is `PayloadTooLarge`.
    /// - Options are walked with [`TcpOptionIter`]; any walker error rejects
    ///   the segment. Unknown kinds are skipped.
    /// - A repeated MSS, window scale, timestamps or SACK option: the first
    ///   one wins and later ones are ignored, as Linux's `tcp_parse_options`
    ///   effectively does for the values it keeps per segment.
    /// - More than [`MAX_EXPERIMENTAL_OPTIONS`] kind-253 options is
    ///   `TooManyOptions` rather than silently dropping one of ours.
    /// - The window scale shift is kept exactly as received, even above 14:
    ///   RFC 7323 §2.3 says to use 14 in that case, which is the TCP layer's
    ///   decision (it also needs to log it), not the parser's.
    pub fn parse(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &'a [u8],
    ) -> Result<TcpRepr<'a>, WireError> {
        let header = TcpHeaderSlice::from_slice(segment).map_err(|err| match err {
            HeaderSliceError::Len(len) if len.required_len == TCP_HEADER_LEN => {
                WireError::Truncated {
                    needed: len.required_len,
                    have: len.len,
                }
            }
            // RFC 9293 §3.1: the data offset counts 32-bit words of header;
            // a header longer than the segment is as invalid as one below 5.
            HeaderSliceError::Len(len) => WireError::BadTcpDataOffset(len.required_len / 4),
            HeaderSliceError::Content(HeaderError::DataOffsetTooSmall { data_offset }) => {
                WireError::BadTcpDataOffset(usize::from(data_offset))
            }
        })?;
        let tcp_len =
            u16::try_from(segment.len()).map_err(|_| WireError::PayloadTooLarge(segment.len()))?;
        // RFC 9293 §3.1: the checksum covers the pseudo-header, header and
        // data; summing all of it including the checksum field gives zero.
        let sum = checksum::ipv4_pseudo_header(src, dst, tcp_len).add_slice(segment);
        if !checksum::verifies(sum) {
            return Err(WireError::BadTcpChecksum);
        }
        let header_len = header.slice().len();
        let payload = segment.get(header_len..).unwrap_or_default();

        let mut repr = TcpRepr {
            src_port: header.source_port(),
            dst_port: header.destination_port(),
            seq: SeqNumber(header.sequence_number()),
            ack: SeqNumber(header.acknowledgment_number()),
            flags: flags_of(&header),
            window: header.window_size(),
            urgent: header.urgent_pointer(),
            payload,
            ..TcpRepr::default()
        };
        let mut experimental_count = 0;
        // `options()` borrows the view; the slice keeps the segment's lifetime.
        let options = header.slice().get(TCP_HEADER_LEN..).unwrap_or_default();
        for option in TcpOptionIter::new(options) {
            match option? {
                TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => {
                    repr.mss.get_or_insert(mss);
                }
                TcpOption::WindowScale(shift) => {
                    repr.window_scale.get_or_insert(shift);
                }
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::Timestamps(ts) => {
                    repr.timestamps.get_or_insert(ts);
                }
                TcpOption::Sack(blocks) => {
                    if repr.sack_blocks.iter().all(Option::is_none) {
                        repr.sack_blocks = blocks;
                    }
                }
                TcpOption::Experimental(exp) => {
                    let slot = repr
                        .experimental
                        .get_mut(experimental_count)
                        .ok_or(WireError::TooManyOptions)?;
                    *slot = Some(exp);
                    experimental_count += 1;
                }
            }
        }
        Ok(repr)
    }

    /// Length of the options area as emitted, padded to a multiple of 4.
    ///
    /// If the options need more than [`MAX_OPTIONS_LEN`] bytes even without
    /// alignment padding, this is that (padded) need, larger than 40, and
    /// `emit` fails with `OptionsTooLong` of the same value.
    pub fn options_len(&self) -> usize {
        match self.option_layout() {
            Ok(layout) => layout.padded_len,
            Err(needed) => needed,
        }
    }

    /// Header length (20 + options) in bytes.
    pub fn header_len(&self) -> usize {
        TCP_HEADER_LEN + self.options_len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes header, options and payload to `buf` with a correct checksum.
    /// Errors if the options exceed 40 bytes or `buf` is too short.
    ///
    /// Options go in a fixed order: MSS, SACK-permitted, timestamps, window
    /// scale, SACK blocks, experimental options (in `experimental` order,
    /// `None` entries skipped; likewise `sack_blocks`). Like Linux's
    /// `tcp_options_write`, NOPs keep timestamps and SACK blocks 4-byte
    /// aligned (`SACK-perm,TS` or `NOP,NOP,TS`; `NOP,NOP,SACK-perm`;
    /// `NOP,WS`; `NOP,NOP,SACK`). If that padding alone would push the
    /// options past 40 bytes, the same options are written back to back
    /// without NOPs instead, so everything that fits at all is sent. The
    /// area is then padded to a multiple of 4 with zero (EOL) bytes.
    /// Nothing is written on error: options that do not fit are
    /// `OptionsTooLong`, a segment over 65535 bytes is `PayloadTooLarge`, a
    /// short `buf` is `BufferTooSmall`.
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> Result<usize, WireError> {
        let layout = self.option_layout().map_err(WireError::OptionsTooLong)?;
        let header_len = TCP_HEADER_LEN + layout.padded_len;
        let total = header_len + self.payload.len();
        // RFC 9293 §3.1: the pseudo-header carries the TCP length in 16 bits.
        let tcp_len =
            u16::try_from(total).map_err(|_| WireError::PayloadTooLarge(self.payload.len()))?;
        let have = buf.len();
        let Some(out) = buf.get_mut(..total) else {
            return Err(WireError::BufferTooSmall {
                needed: total,
                have,
            });
        };
        let (header, rest) = out.split_at_mut(TCP_HEADER_LEN);
        let (options, payload) = rest.split_at_mut(layout.padded_len);

        let [sp0, sp1] = self.src_port.to_be_bytes();
        let [dp0, dp1] = self.dst_port.to_be_bytes();
        let [s0, s1, s2, s3] = self.seq.0.to_be_bytes();
        let [a0, a1, a2, a3] = self.ack.0.to_be_bytes();
        let [w0, w1] = self.window.to_be_bytes();
        let [u0, u1] = self.urgent.to_be_bytes();
        // Data offset in 32-bit words: 5..=15 because options are <= 40.
        let data_offset = (header_len / 4) as u8;
        header.copy_from_slice(&[
            sp0,
            sp1,
            dp0,
            dp1,
            s0,
            s1,
            s2,
            s3,
            a0,
            a1,
            a2,
            a3,
            data_offset << 4,
            self.flags.0,
            w0,
            w1,
            0, // checksum, filled in below
            0,
            u0,
            u1,
        ]);
        self.write_options(layout.aligned, options)?;
        payload.copy_from_slice(self.payload);

        let sum = checksum::ipv4_pseudo_header(src, dst, tcp_len).add_slice(out);
        if let Some(field) = out.get_mut(16..18) {
            field.copy_from_slice(&checksum::finish(sum));
        }
        Ok(total)
    }

    /// Decides how the options are laid out. `Err` carries the bytes needed
    /// (padded) when even the unaligned layout exceeds 40.
    fn option_layout(&self) -> Result<OptionLayout, usize> {
        let sack_count = self.sack_blocks.iter().flatten().count();
        let sack_len = if sack_count > 0 {
            2 + SACK_BLOCK_LEN * sack_count
        } else {
            0
        };
        let experimental_len: usize = self
            .experimental_options()
            .map(|exp| EXPERIMENTAL_HEADER_LEN + exp.data.len())
            .sum();
        let mss_len = if self.mss.is_some() { MSS_LEN } else { 0 };

        let packed = mss_len
            + if self.sack_permitted {
                SACK_PERMITTED_LEN
            } else {
                0
            }
            + if self.timestamps.is_some() {
                TIMESTAMPS_LEN
            } else {
                0
            }
            + if self.window_scale.is_some() {
                WINDOW_SCALE_LEN
            } else {
                0
            }
            + sack_len
            + experimental_len;
        let aligned = mss_len
            + match (self.timestamps.is_some(), self.sack_permitted) {
                // SACK-permitted fills the two bytes before the timestamps.
                (true, _) => 2 + TIMESTAMPS_LEN,
                (false, true) => 2 + SACK_PERMITTED_LEN,
                (false, false) => 0,
            }
            + if self.window_scale.is_some() {
                1 + WINDOW_SCALE_LEN
            } else {
                0
            }
            + if sack_count > 0 { 2 + sack_len } else { 0 }
            + experimental_len;

        let aligned = pad_to_word(aligned);
        let packed = pad_to_word(packed);
        if aligned <= MAX_OPTIONS_LEN {
            Ok(OptionLayout {
                aligned: true,
                padded_len: aligned,
            })
        } else if packed <= MAX_OPTIONS_LEN {
            Ok(OptionLayout {
                aligned: false,
                padded_len: packed,
            })
        } else {
            Err(packed)
        }
    }

    /// Writes the options into `out`, which is exactly the padded length
    /// `option_layout` chose.
    fn write_options(&self, aligned: bool, out: &mut [u8]) -> Result<(), WireError> {
        let mut at = 0;
        let mut put = |option: TcpOption| -> Result<(), WireError> {
            at += option.emit(out.get_mut(at..).unwrap_or_default())?;
            Ok(())
        };
        let nop = TcpOption::NoOperation;
        if let Some(mss) = self.mss {
            put(TcpOption::MaxSegmentSize(mss))?;
        }
        if aligned {
            match (self.timestamps, self.sack_permitted) {
                (Some(ts), true) => {
                    put(TcpOption::SackPermitted)?;
                    put(TcpOption::Timestamps(ts))?;
                }
                (Some(ts), false) => {
                    put(nop)?;
                    put(nop)?;
                    put(TcpOption::Timestamps(ts))?;
                }
                (None, true) => {
                    put(nop)?;
                    put(nop)?;
                    put(TcpOption::SackPermitted)?;
                }
                (None, false) => {}
            }
        } else {
            if self.sack_permitted {
                put(TcpOption::SackPermitted)?;
            }
            if let Some(ts) = self.timestamps {
                put(TcpOption::Timestamps(ts))?;
            }
        }
        if let Some(shift) = self.window_scale {
            if aligned {
                put(nop)?;
            }
            put(TcpOption::WindowScale(shift))?;
        }
        if self.sack_blocks.iter().any(Option::is_some) {
            if aligned {
                put(nop)?;
                put(nop)?;
            }
            put(TcpOption::Sack(self.sack_blocks))?;
        }
        for exp in self.experimental_options() {
            put(TcpOption::Experimental(exp))?;
        }
        // RFC 9293 §3.1: the header is padded with zeros; a zero is EOL.
        if let Some(padding) = out.get_mut(at..) {
            padding.fill(0);
        }
        Ok(())
    }

    /// Sequence space this segment occupies: payload + SYN + FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + self.flags.syn() as usize + self.flags.fin() as usize
    }

    pub fn sack_blocks(&self) -> impl Iterator<Item = SackBlock> + '_ {
        self.sack_blocks.iter().flatten().copied()
    }

    pub fn experimental_options(&self) -> impl Iterator<Item = ExperimentalOption<'a>> + '_ {
        self.experimental.iter().flatten().copied()
    }
}

/// How `TcpRepr::emit` lays out the options area.
#[derive(Debug, Clone, Copy)]
struct OptionLayout {
    /// NOP-aligned like Linux, or packed because alignment would not fit.
    aligned: bool,
    /// Bytes of options including the final padding; a multiple of 4.
    padded_len: usize,
}

fn pad_to_word(len: usize) -> usize {
    len.next_multiple_of(4)
}

/// The control bits of byte 13 (RFC 9293 §3.1; ECE and CWR from RFC 3168).
fn flags_of(header: &TcpHeaderSlice<'_>) -> TcpFlags {
    [
        (header.fin(), TcpFlags::FIN),
        (header.syn(), TcpFlags::SYN),
        (header.rst(), TcpFlags::RST),
        (header.psh(), TcpFlags::PSH),
        (header.ack(), TcpFlags::ACK),
        (header.urg(), TcpFlags::URG),
        (header.ece(), TcpFlags::ECE),
        (header.cwr(), TcpFlags::CWR),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .fold(TcpFlags::NONE, |acc, (_, flag)| acc | flag)
}
