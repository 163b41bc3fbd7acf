use thiserror::Error;

/// Why a packet could not be parsed or emitted. Parsing never panics; every
/// malformed input maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("packet truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    #[error("IPv4 header length {0} is invalid")]
    BadIpHeaderLength(usize),
    #[error("IPv4 total length {total} disagrees with the {have} bytes received")]
    BadIpTotalLength { total: usize, have: usize },
    #[error("IPv4 header checksum mismatch")]
    BadIpChecksum,
    #[error("IPv4 fragment (fragments are not reassembled)")]
    Fragment,
    #[error("IP protocol {0} is not TCP")]
    NotTcp(u8),
    #[error("TCP data offset {0} is invalid")]
    BadTcpDataOffset(usize),
    #[error("TCP checksum mismatch")]
    BadTcpChecksum,
    #[error("TCP option kind {kind} has invalid length {len}")]
    BadOptionLength { kind: u8, len: usize },
    #[error("TCP option kind {kind} is truncated")]
    TruncatedOption { kind: u8 },
    #[error("TCP options need {0} bytes, more than the 40 available")]
    OptionsTooLong(usize),
    #[error("too many options of one kind to represent")]
    TooManyOptions,
    #[error("output buffer too small: need {needed} bytes, have {have}")]
    BufferTooSmall { needed: usize, have: usize },
    #[error("payload of {0} bytes does not fit an IPv4 packet")]
    PayloadTooLarge(usize),
}
