//! Helpers shared by the simulator tests (`mod common;` in each): the data a
//! transfer sends, its digest, and one direction of a transfer.

// Each test binary uses what it needs.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};
use sustain_core::rand::{Random, SplitMix64};
use sustain_core::sim::{LinkConfig, Network, NodeId};
use sustain_core::tcp::{Config, Endpoint};

/// The client's address in the two-endpoint simulations.
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's address in the two-endpoint simulations.
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A network of two endpoints with `config`, CLIENT and SERVER, on `link`,
/// each with its own random stream derived from `seed`.
pub(crate) fn client_and_server(
    seed: u64,
    link: &LinkConfig,
    config: &Config,
) -> (Network<Endpoint>, NodeId, NodeId) {
    let mut net: Network<Endpoint> = Network::new(seed);
    net.set_default_link(link.clone());
    let client = net.add_node(
        CLIENT,
        Endpoint::new(config.clone(), Box::new(SplitMix64::new(seed ^ 1))),
    );
    let server = net.add_node(
        SERVER,
        Endpoint::new(config.clone(), Box::new(SplitMix64::new(seed ^ 2))),
    );
    (net, client, server)
}

/// `len` pseudo-random bytes from `seed` (the same in every run).
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SplitMix64::new(seed).fill_bytes(&mut v);
    v
}

/// SHA-256 of `d`, hex.
pub(crate) fn sha256(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// One direction of a transfer over one connection: what is to be written,
/// how much was, and a digest of what was read.
pub(crate) struct Stream {
    pub(crate) data: Vec<u8>,
    pub(crate) written: usize,
    pub(crate) hasher: Sha256,
    pub(crate) read: usize,
    pub(crate) closed_write: bool,
}

impl Stream {
    pub(crate) fn new(data: Vec<u8>) -> Stream {
        Stream {
            data,
            written: 0,
            hasher: Sha256::new(),
            read: 0,
            closed_write: false,
        }
    }

    /// Everything was read at the other end.
    pub(crate) fn done(&self) -> bool {
        self.read == self.data.len()
    }
}

/// Makes the IPv4 header checksum and the TCP checksum right again, as far
/// as the header fields locate them (IHL, total length clamped to the
/// bytes there), so a mutated packet gets past both checks and reaches the
/// parser's other ones. Leaves packets too short for that alone.
pub(crate) fn repair_checksums(packet: &mut [u8]) {
    use sustain_core::wire::{Ipv4Packet, TcpPacket, IPV4_HEADER_LEN};
    let len = packet.len();
    if len < IPV4_HEADER_LEN {
        return;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
    let ihl = ip.header_len();
    if ihl < IPV4_HEADER_LEN || ihl > len {
        return;
    }
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let total = usize::from(ip.total_len()).min(len);
    // The TCP checksum field ends 18 bytes into the segment.
    if total >= ihl + 18 {
        TcpPacket::new_unchecked(&mut packet[ihl..total]).fill_checksum(src, dst);
    }
}
