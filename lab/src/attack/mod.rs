//! The attacker node of the negative scenarios: `[[attack]]` tables in a scenario, and
//! the engine that carries them out during the transfer.
//!
//! An attack comes from a node with `role = "attacker"` (on a global network, never
//! moves) and aims at one end of the transfer, its *target*. The engine learns the
//! connection's state by **observing** the target's traffic, the way an attacker who
//! can see packets but never the hosts' memory would: an AF_PACKET socket on the
//! gateway's end of the target's uplink (`Attachment::port` in
//! `Attachment::gateway_node`), opened before the transfer starts so that it sees
//! the handshake. From that it tracks the latest 4-tuple, sequence numbers,
//! acknowledgments, windows and timestamps of each direction, the target's token
//! and the first MSYN that reached the target.
//!
//! **What the attacker knows.** Tokens and sequence state, the worst case for us.
//! The token of the target's key is read from a real MSYN or Address-Update on the
//! wire when one was seen, else computed from the key the target sent in the clear in
//! its SYN or SYN-ACK. The latter makes this attacker *stronger* than an off-path one
//! (PROTOCOL.md §11.1: an off-path attacker must guess the token too); that is the
//! point: with the right token and in-window numbers, only the MAC and the request
//! number stand between the forgery and the connection. The engine never keeps a key
//! and never computes a MAC: every MAC it sends is random.
//!
//! It injects through a raw IPv4 socket (`IPPROTO_RAW`, so the header is ours) in the
//! attacker's namespace; segments are built with sustain-core's own emit (correct IP
//! and TCP checksums), malformed ones are patched afterwards and re-summed.
//!
//! | kind                    | sent                                                                 |
//! |-------------------------|----------------------------------------------------------------------|
//! | `forged-msyn`           | 3 MSYNs from the attacker's address: right token, request far ahead, random MAC, short Permit with the attacker's address |
//! | `replayed-msyn`         | the first real MSYN seen reaching the target, 3 times, IP source rewritten to the attacker's, after that move completed |
//! | `forged-address-update` | 3 in-window ACKs from the attacker's address with Address-Update (right token, request ahead, random MAC) |
//! | `blind-rst`             | 3 RSTs spoofed from the peer, inside the target's window but not at RCV.NXT (RFC 5961 §3.2) |
//! | `malformed-options`     | (a) kind 253 length 1, (b) an option running past the header, (c) unknown ExID 0xBEEF, (d) Migrate of length 19 — on in-window ACKs spoofed from the peer —, (e) a SYN from the attacker with a truncated Migrate-Permit, (f) an MSYN with a truncated Migrate |
//! | `forged-report`         | to the mobility server: 3 MoveReports of the target's side claiming it moved to the attacker (random MAC), a Register with a random verifier and MAC, a squatting Register (own verifier, its right MAC), version 2, a message cut short, garbage and oversized length fields |
//! | `replayed-report`       | to the mobility server: every control message of the target's captured so far (Register, MoveReport), byte for byte, 3 times |
//! | `forged-ticket`         | to the proxy's relay port (PROTOCOL.md §6.9, §11.5), from the attacker's address, based on the target's real relay MSYN seen on the proxy's uplink: 3 with its ticket id, a request far ahead and a random MAC (`bad_mac`), 3 of it byte for byte (`replayed`), 3 with an unknown ticket id (`unknown_ticket`), 3 to a relay port with no relay (`unknown_port`) |
//!
//! `forged-ticket`'s observer is on the **proxy's** uplink, where every relay MSYN
//! passes whichever NAPT the target is behind; `[expect] proxy_counters` judges the
//! proxy's counters (its `stopped` event).
//!
//! The last two talk to the mobility server (PROTOCOL.md §15, §11.9) over the
//! attacker's own kernel TCP connection, made in its namespace. Their observer is on
//! the **server's** uplink, where every control session passes whichever address the
//! target reports from: a [`ControlView`] reassembles each session's stream and parses
//! it with sustain-core's `control` types; the target's connection id and side come
//! from its first Register (the id is both tokens, not a secret). Every reply of the
//! server is recorded, and `[expect] server_counters` judges the server's counters
//! (its `stopped` event).
//!
//! Each packet is an `attack-<kind>` event in the timeline; report.json gets an
//! `attacks` array, and `[expect] target_counters` judges the target's own counters
//! (sustain-host's `closed` event), which show the forgery was ignored.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Map, Value};
use sustain_core::auth::{token_of, Key};
use sustain_core::control::{
    Body, ControlRepr, FrameBuffer, Header, Incoming, MoveReport, Register, UNSPECIFIED, VERSION,
};
use sustain_core::verifier::{ConnectionId, Side, Verifier, CONTROL_MAC_LEN, VERIFIER_LEN};
use sustain_core::wire::{
    emit_ipv4_tcp, ipv4_tcp_len, parse_ipv4_tcp, AddressUpdate, ExperimentalOption, Ipv4Packet,
    Ipv4Repr, Migrate, MigrateOption, MigratePermit, MigrationOptions, MigrationScratch,
    OptionScratch, RelayMsyn, RelayTicket, SeqNumber, TcpFlags, TcpPacket, TcpRepr, Timestamps,
    EXID_MIGRATE, EXID_MIGRATE_PERMIT, EXPERIMENTAL_KIND,
};

use crate::capture::{open_packet_socket, PacketSocketOptions};
use crate::error::{LabError, Result};
use crate::moves::Trigger;
use crate::netns::Netns;
use crate::scenario::Scenario;
use crate::services::SERVER_PORT;
use crate::topology::NodeRole;
use crate::topology::Topology;
use crate::transfer::{EndpointKind, Role, TransferResult};

pub mod engine;
mod forge;
pub mod judge;
mod sockets;
pub mod spec;
#[cfg(test)]
mod tests;
mod view;

pub use engine::*;
use forge::*;
pub use judge::*;
use sockets::*;
pub use spec::*;
use view::*;
