//! TCP header representation (RFC 9293 §3.1).

use core::net::Ipv4Addr;

use super::options::{ExperimentalOption, SackBlock, Timestamps};
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
    pub fn parse(src: Ipv4Addr, dst: Ipv4Addr, segment: &'a [u8]) -> Result<TcpRepr<'a>, WireError> {
        let _ = (src, dst, segment);
        todo!("wire helper")
    }

    /// Length of the options area as emitted, padded to a multiple of 4.
    pub fn options_len(&self) -> usize {
        todo!("wire helper")
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
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> Result<usize, WireError> {
        let _ = (src, dst, buf);
        todo!("wire helper")
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
