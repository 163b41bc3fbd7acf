//! Helpers shared by the simulator tests (`mod common;` in each): the data a
//! transfer sends, its digest, and one direction of a transfer.

// Each test binary uses what it needs.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use sustain_core::rand::{Random, SplitMix64};

/// `len` pseudo-random bytes from `seed` (the same in every run).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SplitMix64::new(seed).fill_bytes(&mut v);
    v
}

/// SHA-256 of `d`, hex.
pub fn sha256(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// One direction of a transfer over one connection: what is to be written,
/// how much was, and a digest of what was read.
pub struct Stream {
    pub data: Vec<u8>,
    pub written: usize,
    pub hasher: Sha256,
    pub read: usize,
    pub closed_write: bool,
}

impl Stream {
    pub fn new(data: Vec<u8>) -> Stream {
        Stream {
            data,
            written: 0,
            hasher: Sha256::new(),
            read: 0,
            closed_write: false,
        }
    }

    /// Everything was read at the other end.
    pub fn done(&self) -> bool {
        self.read == self.data.len()
    }
}
