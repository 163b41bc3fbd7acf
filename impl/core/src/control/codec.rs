//! Big-endian field readers and writers for control messages. Both work on
//! slices whose length was checked first and never panic: a short slice
//! only yields zeros (reader) or truncates (writer), which the callers'
//! length checks rule out.

use core::net::{Ipv4Addr, SocketAddrV4};

/// Bytes of an IPv4 address and port on the wire.
pub const ADDR_LEN: usize = 6;

pub(crate) struct Writer<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(out: &'b mut [u8]) -> Writer<'b> {
        Writer { out, at: 0 }
    }
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(slot) = self.out.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn addr(&mut self, a: SocketAddrV4) {
        self.bytes(&a.ip().octets());
        self.u16(a.port());
    }
    pub(crate) fn position(&self) -> usize {
        self.at
    }
}

pub(crate) struct Reader<'b> {
    data: &'b [u8],
}

impl<'b> Reader<'b> {
    pub(crate) fn new(data: &'b [u8]) -> Reader<'b> {
        Reader { data }
    }
    pub(crate) fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.data.split_at_checked(N).unwrap_or((&[], &[]));
        self.data = rest;
        <[u8; N]>::try_from(head).unwrap_or([0; N])
    }
    pub(crate) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    pub(crate) fn addr(&mut self) -> SocketAddrV4 {
        let ip = Ipv4Addr::from(self.take::<4>());
        SocketAddrV4::new(ip, self.u16())
    }
}
