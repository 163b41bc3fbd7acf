use thiserror::Error;

/// Why a packet could not be parsed or emitted. Parsing never panics; every
/// malformed input maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// The packet is shorter than its headers need.
    #[error("packet truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the headers need.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The IP version field is not 4.
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    /// The header length from the IHL, in bytes, is below 20.
    #[error("IPv4 header length {0} is invalid")]
    BadIpHeaderLength(usize),
    /// The total length field is below the header length or beyond the bytes received.
    #[error("IPv4 total length {total} disagrees with the {have} bytes received")]
    BadIpTotalLength {
        /// The total length field.
        total: usize,
        /// Bytes received.
        have: usize,
    },
    /// The IPv4 header checksum does not verify.
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    /// MF set or a fragment offset: sustain does not reassemble.
    #[error("IPv4 fragment (fragments are not reassembled)")]
    Fragment,
    /// The IP protocol field is not 6 (TCP).
    #[error("IP protocol {0} is not TCP")]
    NotTcp(u8),
    /// The data offset (in 32-bit words) is below 5 or past the end of the segment.
    #[error("TCP data offset {0} is invalid")]
    BadTcpDataOffset(usize),
    /// The TCP checksum (with the pseudo-header) does not verify.
    #[error("TCP checksum mismatch")]
    BadTcpChecksum,
    /// An option length below 2, or wrong for a known kind.
    #[error("TCP option kind {kind} has invalid length {len}")]
    BadOptionLength {
        /// The option kind.
        kind: u8,
        /// Its length byte.
        len: usize,
    },
    /// An option runs past the end of the options area.
    #[error("TCP option kind {kind} is truncated")]
    TruncatedOption {
        /// The option kind.
        kind: u8,
    },
    /// The options to emit need more than 40 bytes.
    #[error("TCP options need {0} bytes, more than the 40 available")]
    OptionsTooLong(usize),
    /// More options of one kind than the repr has room for.
    #[error("too many options of one kind to represent")]
    TooManyOptions,
    /// The buffer given to an emit is too small.
    #[error("output buffer too small: need {needed} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the emit needs.
        needed: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// The packet would exceed 65535 bytes (carries the TCP payload length).
    #[error("payload of {0} bytes does not fit an IPv4 packet")]
    PayloadTooLarge(usize),
}
