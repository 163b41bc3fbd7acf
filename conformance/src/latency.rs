//! Reconnect latency read from captures (DESIGN.md, "Reconnect latency, defined"):
//! from the instant the last move completed (the lab's record: new address configured
//! and route up) to the first new data segment acknowledged on the new path; also the
//! time to the MSYN handshake's final ACK.
//!
//! Precisely, with every instant a capture timestamp at the receiver's uplinks:
//!
//! - *new data*: the first data segment of the transfer that arrives after the move
//!   completed and ends beyond everything the receiver had received before it (a
//!   resent duplicate is not new);
//! - *acknowledged*: the first ACK the receiver sends that covers it;
//! - *handshake final ACK*: the first segment carrying a Migrate Confirm after the
//!   move, as it arrives at the MSYN's receiver (the handshake is then complete at
//!   both ends). Through a relay (PROTOCOL.md §6.9) the MSYNs' receiver is the
//!   proxy: the last Confirm of the legs that sent a relay MSYN after the move, as
//!   the capture point seeing it last (the proxy's) shows it.
//!
//! A relayed connection's legs (a host and the proxy's relay port) are bound to
//! the connection by the normalizer, so the receiver's leg is measured like a
//! direct path.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use serde::Serialize;

use crate::transcript::{Analysis, CaptureSet};

/// Latencies of one run, in nanoseconds from the last move's completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// To the receiver's ACK of the first new data.
    pub reconnect_ns: Option<u64>,
    /// To the arrival of the first new data at the receiver.
    pub first_new_data_ns: Option<u64>,
    /// To the MSYN handshake's final ACK (sustaining mode only).
    pub handshake_ns: Option<u64>,
}

/// Reads the latencies of the transfer (the connection that carried the most data)
/// after the move that completed at `last_move_ns` (Unix nanoseconds). `points` gives
/// each node's capture points (`<node>-<network>` in a lab run), `receiver` the node
/// receiving the data.
pub fn measure(
    set: &CaptureSet,
    analysis: &Analysis,
    last_move_ns: u64,
    points: &BTreeMap<String, Vec<String>>,
    receiver: &str,
) -> Latency {
    let mut latency = Latency::default();
    let Some((conn, data_side)) = analysis.transfer_connection() else {
        return latency;
    };
    let frames_of = |node: &str| {
        let mut frames = Vec::new();
        for point in points.get(node).into_iter().flatten() {
            let Some(index) = set.capture(point) else {
                continue;
            };
            let capture = &set.captures[index];
            for (f, frame) in capture.frames.iter().enumerate() {
                if let (Some(segment), Some((c, side))) =
                    (&analysis.segments(index)[f], analysis.bound(index)[f])
                {
                    if c == conn {
                        frames.push((frame.timestamp_ns, segment, side));
                    }
                }
            }
        }
        frames.sort_by_key(|(t, _, _)| *t);
        frames
    };

    let at_receiver = frames_of(receiver);
    let after = |a: u32, b: u32| (a.wrapping_sub(b) as i32) > 0;
    let mut high_before: Option<u32> = None;
    let mut new_data: Option<(u64, u32)> = None;
    for (t, segment, side) in &at_receiver {
        if *side != data_side {
            continue;
        }
        if segment.payload_len == 0 {
            continue;
        }
        let end = analysis.relative(conn, *side, segment.seq.wrapping_add(segment.payload_len));
        if *t <= last_move_ns {
            if high_before.is_none_or(|high| after(end, high)) {
                high_before = Some(end);
            }
        } else if high_before.is_none_or(|high| after(end, high)) {
            new_data = Some((*t, end));
            break;
        }
    }
    if let Some((arrived, end)) = new_data {
        latency.first_new_data_ns = Some(arrived.saturating_sub(last_move_ns));
        latency.reconnect_ns = at_receiver
            .iter()
            .find(|(t, segment, side)| {
                *t >= arrived
                    && *side != data_side
                    && segment.has(crate::segment::ACK)
                    && !after(end, analysis.relative(conn, data_side, segment.ack))
            })
            .map(|(t, _, _)| t.saturating_sub(last_move_ns));
    }

    // The MSYN's receiver: the side that did not send the first MSYN after the move
    // (a direct one: a relay MSYN's receiver is the proxy, below).
    let mut mover = None;
    for (index, capture) in set.captures.iter().enumerate() {
        for (f, frame) in capture.frames.iter().enumerate() {
            if frame.timestamp_ns <= last_move_ns {
                continue;
            }
            if let (Some(segment), Some((c, side))) =
                (&analysis.segments(index)[f], analysis.bound(index)[f])
            {
                if c == conn && Analysis::is_msyn(segment) && !Analysis::is_relay_msyn(segment) {
                    if mover.is_none_or(|(t, _)| frame.timestamp_ns < t) {
                        mover = Some((frame.timestamp_ns, side));
                    }
                    break;
                }
            }
        }
    }
    let (relay_legs, relay_ports) = relay_legs(set, analysis, conn, last_move_ns);
    if relay_legs != [false, false] {
        latency.handshake_ns =
            relay_handshake(set, analysis, conn, last_move_ns, relay_legs, &relay_ports);
    }
    // A relay MSYN the proxy refused (the end is global again, PROTOCOL.md §6.9
    // step 7) completes no handshake: the direct one the server arranges does.
    if let (None, Some((_, mover))) = (latency.handshake_ns, mover) {
        let responder = analysis.side_name(&set.names, conn, 1 - mover);
        latency.handshake_ns = frames_of(&responder)
            .iter()
            .find(|(t, segment, side)| {
                *t > last_move_ns && *side == mover && Analysis::is_confirm(segment)
            })
            .map(|(t, _, _)| t.saturating_sub(last_move_ns));
    }
    latency
}

/// Which sides of `conn` sent a relay MSYN after the move, and where to (the
/// proxy's relay endpoint).
fn relay_legs(
    set: &CaptureSet,
    analysis: &Analysis,
    conn: usize,
    last_move_ns: u64,
) -> ([bool; 2], Vec<SocketAddrV4>) {
    let mut legs = [false, false];
    let mut ports = Vec::new();
    for (index, capture) in set.captures.iter().enumerate() {
        for (f, frame) in capture.frames.iter().enumerate() {
            if frame.timestamp_ns <= last_move_ns {
                continue;
            }
            if let (Some(segment), Some((c, side))) =
                (&analysis.segments(index)[f], analysis.bound(index)[f])
            {
                if c == conn && Analysis::is_relay_msyn(segment) {
                    legs[side] = true;
                    if !ports.contains(&segment.dst) {
                        ports.push(segment.dst);
                    }
                }
            }
        }
    }
    (legs, ports)
}

/// The relay handshakes' end: per leg that sent a relay MSYN, its first Confirm
/// to the proxy after the move as the point seeing it last (the proxy's) shows
/// it; the later leg's. (The proxy forwards Confirms too; those are not the
/// handshake's.)
fn relay_handshake(
    set: &CaptureSet,
    analysis: &Analysis,
    conn: usize,
    last_move_ns: u64,
    legs: [bool; 2],
    relay: &[SocketAddrV4],
) -> Option<u64> {
    let mut done: [Option<u64>; 2] = [None, None];
    for (index, capture) in set.captures.iter().enumerate() {
        let mut first: [Option<u64>; 2] = [None, None];
        for (f, frame) in capture.frames.iter().enumerate() {
            if frame.timestamp_ns <= last_move_ns {
                continue;
            }
            if let (Some(segment), Some((c, side))) =
                (&analysis.segments(index)[f], analysis.bound(index)[f])
            {
                if c == conn
                    && first[side].is_none()
                    && relay.contains(&segment.dst)
                    && Analysis::is_confirm(segment)
                {
                    first[side] = Some(frame.timestamp_ns);
                }
            }
        }
        for side in 0..2 {
            if let Some(t) = first[side] {
                done[side] = Some(done[side].map_or(t, |d: u64| d.max(t)));
            }
        }
    }
    let mut end = None;
    for side in 0..2 {
        if legs[side] {
            let t = done[side]?;
            end = Some(end.map_or(t, |e: u64| e.max(t)));
        }
    }
    end.map(|t| t.saturating_sub(last_move_ns))
}
