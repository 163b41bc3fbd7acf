//! Big-endian ("network byte order", RFC 791 Appendix B) fields, for the
//! views. They index: a view's checks guarantee the bytes are there.

use core::ops::Range;

pub(super) fn read_u16(data: &[u8], at: Range<usize>) -> u16 {
    u16::from_be_bytes([data[at.start], data[at.start + 1]])
}

pub(super) fn read_u32(data: &[u8], at: Range<usize>) -> u32 {
    let at = at.start;
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

pub(super) fn write_u16(data: &mut [u8], at: Range<usize>, value: u16) {
    data[at].copy_from_slice(&value.to_be_bytes());
}
