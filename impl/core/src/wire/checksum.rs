//! The Internet checksum (RFC 1071) as used by IPv4 and TCP.
//!
//! The summing is etherparse's `Sum16BitWords`: it adds 8 bytes at a time
//! into a 64-bit accumulator with end-around carry, in native byte order
//! (the one's complement sum is byte-order independent, RFC 1071 §2(B)), so
//! the result is converted to network order only once at the end.

use core::net::Ipv4Addr;

use etherparse::checksum::Sum16BitWords;

/// IP protocol number of TCP (RFC 9293 §3.1, pseudo-header PTCL field).
const PROTOCOL_TCP: u8 = 6;

/// Sum of the IPv4 pseudo-header: source, destination, zero, PTCL and the TCP
/// length (RFC 9293 §3.1). `tcp_len` is header plus data in bytes.
pub(crate) fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: u16) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_4bytes(src.octets())
        .add_4bytes(dst.octets())
        .add_2bytes([0, PROTOCOL_TCP])
        .add_2bytes(tcp_len.to_be_bytes())
}

/// The checksum value to store (big-endian) for data whose sum is `sum`
/// (computed with the checksum field itself set to zero).
pub(crate) fn finish(sum: Sum16BitWords) -> [u8; 2] {
    // `ones_complement` works in native byte order; `to_be` turns the value
    // back into the number whose big-endian bytes go on the wire.
    sum.ones_complement().to_be().to_be_bytes()
}

/// True if data summed *including* its checksum field verifies: the one's
/// complement sum of correct data is all ones, so its complement is zero.
pub(crate) fn verifies(sum: Sum16BitWords) -> bool {
    sum.ones_complement() == 0
}

/// Checksum over a plain byte slice, as for the IPv4 header (RFC 791 §3.1).
pub(crate) fn of_slice(bytes: &[u8]) -> Sum16BitWords {
    Sum16BitWords::new().add_slice(bytes)
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
        let mut rng = crate::rand::SplitMix64::new(7);
        use crate::rand::Random;
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
    }
}
