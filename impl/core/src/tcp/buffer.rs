//! Byte ring used for the send and receive queues.
//!
//! Storage grows on demand (doubling) up to a fixed maximum, so an idle
//! connection or a half-open SYN-RECEIVED entry costs no buffer memory while
//! a bulk transfer ends up with one contiguous allocation and no per-segment
//! allocation. Logical offset 0 is the oldest byte; the receive side writes
//! out-of-order data at offsets past `len` and makes it readable later with
//! [`RingBuffer::extend_readable`].

/// Smallest allocation once a buffer is first used.
const MIN_STORAGE: usize = 4096;

#[derive(Debug)]
pub(crate) struct RingBuffer {
    storage: Vec<u8>,
    head: usize,
    len: usize,
    max: usize,
}

impl RingBuffer {
    pub(crate) fn new(max: usize) -> RingBuffer {
        RingBuffer {
            storage: Vec::new(),
            head: 0,
            len: 0,
            max,
        }
    }

    /// Bytes stored from offset 0 (readable / queued).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Room left before `len` reaches the maximum.
    pub(crate) fn free(&self) -> usize {
        self.max - self.len
    }

    /// Make sure logical offsets `[0, extent)` have storage. Growth copies the
    /// whole old storage, not only `[0, len)`, because out-of-order bytes may
    /// live beyond `len`.
    fn ensure(&mut self, extent: usize) {
        let old_cap = self.storage.len();
        if extent <= old_cap {
            return;
        }
        let extent = extent.min(self.max);
        let new_cap = extent
            .checked_next_power_of_two()
            .unwrap_or(extent)
            .max(MIN_STORAGE)
            .min(self.max)
            .max(extent);
        let mut grown = vec![0u8; new_cap];
        let tail = old_cap - self.head;
        grown[..tail].copy_from_slice(&self.storage[self.head..]);
        grown[tail..old_cap].copy_from_slice(&self.storage[..self.head]);
        self.storage = grown;
        self.head = 0;
    }

    fn phys(&self, logical: usize) -> usize {
        let cap = self.storage.len();
        let p = self.head + logical;
        if p >= cap {
            p - cap
        } else {
            p
        }
    }

    /// Appends as much of `data` as fits; returns the bytes taken.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.write_at(self.len, &data[..n]);
        self.len += n;
        n
    }

    /// Writes `data` at logical `offset` without changing `len`. The caller
    /// guarantees `offset + data.len() <= max`.
    pub(crate) fn write_at(&mut self, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        debug_assert!(offset + data.len() <= self.max);
        self.ensure(offset + data.len());
        let cap = self.storage.len();
        let start = self.phys(offset);
        let first = data.len().min(cap - start);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        let rest = data.len() - first;
        self.storage[..rest].copy_from_slice(&data[first..]);
    }

    /// Bytes previously written past `len` become part of `[0, len)`.
    pub(crate) fn extend_readable(&mut self, n: usize) {
        debug_assert!(n <= self.free());
        if n > 0 {
            self.ensure(self.len + n);
        }
        self.len += n;
    }

    /// Drops `n` bytes from the front.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.head = self.phys(n);
        self.len -= n;
    }

    /// Copies up to `out.len()` bytes from the front into `out` and
    /// consumes them.
    pub(crate) fn read_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let (a, b) = self.slices(0, n);
        out[..a.len()].copy_from_slice(a);
        out[a.len()..n].copy_from_slice(b);
        self.consume(n);
        n
    }

    /// The logical range `[offset, offset + n)` as at most two slices.
    pub(crate) fn slices(&self, offset: usize, n: usize) -> (&[u8], &[u8]) {
        if n == 0 {
            return (&[], &[]);
        }
        debug_assert!(offset + n <= self.storage.len());
        let cap = self.storage.len();
        let start = self.phys(offset);
        let first = n.min(cap - start);
        (
            &self.storage[start..start + first],
            &self.storage[..n - first],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_grows_and_keeps_out_of_order_bytes() {
        let mut r = RingBuffer::new(10_000);
        let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&data[..3000]), 3000);
        let mut out = vec![0u8; 2500];
        assert_eq!(r.read_into(&mut out), 2500);
        assert_eq!(&out[..], &data[..2500]);
        // Out-of-order bytes beyond len, then growth past the first allocation.
        r.write_at(r.len() + 500, &data[3500..6000]);
        r.write_at(r.len(), &data[3000..3500]);
        r.extend_readable(3000);
        assert_eq!(r.len(), 3500);
        let mut all = vec![0u8; 3500];
        assert_eq!(r.read_into(&mut all), 3500);
        let bad = all.iter().zip(&data[2500..6000]).position(|(a, b)| a != b);
        assert_eq!(bad, None);
        assert!(r.is_empty());
        assert_eq!(r.push(&data), 6000);
        assert_eq!(r.push(&data), 4000);
        assert_eq!(r.free(), 0);
        let (a, b) = r.slices(5990, 20);
        let joined: Vec<u8> = a.iter().chain(b).copied().collect();
        assert_eq!(&joined[..10], &data[5990..6000]);
        assert_eq!(&joined[10..], &data[..10]);
    }
}
