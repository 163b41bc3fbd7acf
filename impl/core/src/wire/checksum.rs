//! The Internet checksum (RFC 1071) as used by IPv4 and TCP.
//!
//! The one's complement sum is byte-order independent (RFC 1071 §2(B)), so
//! we add the data as native-endian 32-bit words into a 64-bit accumulator
//! with no per-word carry handling (2^32 words would be needed to overflow
//! it) and fold once at the end. Four independent lanes let the compiler
//! vectorise the loop: this is the per-byte cost of every segment we send
//! or receive, and it must stay well above 2 Gbit/s.

use core::net::Ipv4Addr;

use super::ip::PROTOCOL_TCP;

/// A running one's complement sum, kept in native byte order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sum {
    acc: u64,
}

impl Sum {
    pub(crate) fn new() -> Sum {
        Sum { acc: 0 }
    }

    /// Adds bytes that start at an even offset of the summed data (all our
    /// callers add whole headers or a header-aligned segment).
    pub(crate) fn add_slice(self, bytes: &[u8]) -> Sum {
        let mut lanes = [0u64; 4];
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            for (lane, word) in lanes.iter_mut().zip(c.chunks_exact(4)) {
                *lane += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
            }
        }
        let mut acc = self.acc;
        for lane in lanes {
            acc = add_carry(acc, lane);
        }
        let rest = chunks.remainder();
        let mut words = rest.chunks_exact(2);
        for w in &mut words {
            acc = add_carry(acc, u64::from(u16::from_ne_bytes([w[0], w[1]])));
        }
        if let [last] = words.remainder() {
            // RFC 1071 §4.1: an odd final byte is padded with a zero byte.
            acc = add_carry(acc, u64::from(u16::from_ne_bytes([*last, 0])));
        }
        Sum { acc }
    }

    /// The 16-bit one's complement sum in native order.
    fn fold(self) -> u16 {
        let mut s = self.acc;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Sum of the IPv4 pseudo-header: source, destination, zero, PTCL and the TCP
/// length (RFC 9293 §3.1). `tcp_len` is header plus data in bytes.
pub(crate) fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: u16) -> Sum {
    let len = tcp_len.to_be_bytes();
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = PROTOCOL_TCP;
    pseudo[10..].copy_from_slice(&len);
    Sum::new().add_slice(&pseudo)
}

/// The checksum bytes to store for data whose sum is `sum` (computed with
/// the checksum field itself set to zero).
pub(crate) fn finish(sum: Sum) -> [u8; 2] {
    // The folded sum is in native order; its native bytes are the wire bytes.
    (!sum.fold()).to_ne_bytes()
}

/// True if data summed *including* its checksum field verifies: the one's
/// complement sum of correct data is all ones.
pub(crate) fn verifies(sum: Sum) -> bool {
    sum.fold() == 0xffff
}

/// Checksum over a plain byte slice, as for the IPv4 header (RFC 791 §3.1).
pub(crate) fn of_slice(bytes: &[u8]) -> Sum {
    Sum::new().add_slice(bytes)
}

/// What a CHECKSUM_PARTIAL sender leaves in the checksum field for the
/// device to complete: the sum folded but not complemented (Linux's
/// `csum_tcpudp_magic` before the final inversion), as wire bytes.
pub(crate) fn partial(sum: Sum) -> [u8; 2] {
    sum.fold().to_ne_bytes()
}

/// The Internet checksum of `bytes` as a number (RFC 1071): the value to
/// store (big-endian) when the checksum field in `bytes` is zero, and zero
/// when `bytes` include a correct checksum. For protocols the views do not
/// cover (ICMP, RFC 792).
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    u16::from_be_bytes(finish(of_slice(bytes)))
}

/// A checksum updated for changed 16-bit words without summing the data
/// again (RFC 1624 eqn. 3): HC' = ~(~HC + ~m + m') over every changed word
/// `m` (in `old`) and its new value `m'` (in `new`).
pub(crate) fn update(checksum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!checksum);
    for &o in old {
        sum += u32::from(!o);
    }
    for &n in new {
        sum += u32::from(n);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward RFC 1071 reference: big-endian 16-bit words,
    /// odd byte padded with zero, carries folded at the end.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]);
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum += (hi << 8) | lo;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn matches_reference_on_all_lengths_and_verifies() {
        use crate::rand::Random;
        let mut rng = crate::rand::SplitMix64::new(7);
        for len in 0..200usize {
            let mut data = vec![0u8; len + 2];
            rng.fill_bytes(&mut data[2..]);
            data[0] = 0;
            data[1] = 0;
            let expected = reference(&data);
            assert_eq!(finish(of_slice(&data)), expected.to_be_bytes(), "len {len}");
            // Store the checksum in the first word and the data verifies.
            data[..2].copy_from_slice(&expected.to_be_bytes());
            assert!(verifies(of_slice(&data)), "len {len}");
            // Any single-bit error is caught.
            if len > 0 {
                data[2] ^= 0x10;
                assert!(!verifies(of_slice(&data)), "len {len}");
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(of_slice(&data)), (!0xddf2u16).to_be_bytes());
        assert_eq!(partial(of_slice(&data)), 0xddf2u16.to_be_bytes());
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn incremental_update_matches_a_full_sum() {
        // RFC 1624 §3's case: a word changes; the update equals summing again.
        let mut data = [0x45u8, 0x00, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x00];
        let before = internet_checksum(&data);
        data[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        let after = update(before, &[0x1234], &[0xffff]);
        assert_eq!(after, internet_checksum(&data));
        // Stored, it verifies.
        data[6..8].copy_from_slice(&after.to_be_bytes());
        assert!(verifies(of_slice(&data)));
    }
}
