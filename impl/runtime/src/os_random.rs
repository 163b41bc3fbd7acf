//! OS randomness for the core (ISNs, keys): getrandom(2), buffered.

use sustain_core::rand::Random;

/// Cryptographically strong randomness from the kernel, fetched in blocks.
pub(crate) struct OsRandom {
    buf: [u8; 256],
    pos: usize,
}

impl OsRandom {
    pub(crate) fn new() -> OsRandom {
        OsRandom {
            buf: [0; 256],
            pos: 256,
        }
    }
}

impl Default for OsRandom {
    fn default() -> Self {
        OsRandom::new()
    }
}

impl Random for OsRandom {
    fn next_u64(&mut self) -> u64 {
        if self.pos + 8 > self.buf.len() {
            // getrandom(2) only fails if the kernel lacks the syscall or the
            // buffer is invalid; neither can happen on a supported kernel.
            getrandom::fill(&mut self.buf).expect("getrandom(2) failed");
            self.pos = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        u64::from_le_bytes(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produces_distinct_values_across_refills() {
        let mut r = OsRandom::new();
        let values: Vec<u64> = (0..100).map(|_| r.next_u64()).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), values.len());
    }
}
