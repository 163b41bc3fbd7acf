//! The symmetric proxy on real kernels (PROTOCOL.md §6.9, §15.14): a
//! transfer whose ends both end up behind NAPTs crosses sustain-proxy,
//! byte-identical.
//!
//! Topology (sustain_lab's builder; every namespace, veth and iptables
//! rule is removed when the topology is dropped, also on panic):
//!
//! ```text
//!   g1: c (sustain-server :7001), p (sustain-proxy, control :7002)
//!   g2: napt1 WAN -> home1: a (sender, connects; stays)
//!   g3: napt2 WAN -> home2: b (after its move)
//!   g4: b (receiver, listens) before its move
//! ```
//!
//! b moves from g4 (global) to home2 (behind napt2) mid-transfer: both ends
//! are now behind NAPTs (MASQUERADE, unsolicited inbound dropped), so the
//! server asks the proxy for a relay and both ends resume through it.
//!
//! Needs root (namespaces, raw sockets, iptables). Without root it prints
//! SKIPPED and passes, except under `CI=true`, where it fails.

mod common;

#[path = "common/relay_lab.rs"]
mod relay_lab;

use common::MIB;
use relay_lab::{topology, Run};
use sustain_lab::root_or_skip;
use sustain_lab::topology::LinkConditions;

const SIZE: usize = 48 * MIB;
/// Link rate of the hosts' uplinks: the transfer takes a few seconds, so
/// the move lands in its middle.
const RATE_KBIT: u64 = 80_000;

fn rate() -> LinkConditions {
    LinkConditions {
        rate_kbit: Some(RATE_KBIT),
        ..LinkConditions::default()
    }
}

fn registered(run: &Run) -> bool {
    Run::count(&run.server_events, "server-registered") >= 2
}

#[test]
fn both_ends_behind_napts_are_relayed_byte_identical() {
    if !root_or_skip("both_ends_behind_napts_are_relayed_byte_identical") {
        return;
    }
    let run = Run::start(topology(false, rate()), SIZE, 11, true);
    // Mid-transfer, once both ends registered, b moves behind napt2.
    run.move_at(SIZE / 6, "b", "home2", registered);
    let stats = run.finish();
    run.assert_both_assigned();
    assert!(stats["forwarded"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(stats["confirms"], 2, "{stats}");
    for refused in ["unknown_ticket", "bad_mac", "replayed", "refused_global"] {
        assert_eq!(stats[refused], 0, "{refused}: {stats}");
    }
}

#[test]
fn relayed_end_moves_behind_another_napt_then_to_a_global_address() {
    if !root_or_skip("relayed_end_moves_behind_another_napt_then_to_a_global_address") {
        return;
    }
    let run = Run::start(topology(true, rate()), SIZE, 12, true);
    run.move_at(SIZE / 8, "b", "home2", registered);
    // Relayed: b moves behind napt3; its MSYN goes to the proxy with the
    // same ticket and the relay resumes (PROTOCOL.md §6.9 "Moving again").
    run.move_at(SIZE * 3 / 8, "b", "home3", |r| {
        Run::count(&r.proxy_events, "spliced") >= 1
    });
    // Relayed again: a moves to a global address; the proxy refuses its
    // MSYN with an RST, the server has b (behind napt3) send a direct MSYN.
    run.move_at(SIZE * 5 / 8, "a", "g5", |r| {
        Run::count(&r.proxy_events, "leg-attached") >= 3
            && Run::count(&r.proxy_events, "spliced") >= 2
    });
    let stats = run.finish();
    run.assert_both_assigned();
    let pevs = relay_lab::events(&run.proxy_events);
    assert_eq!(Run::count(&run.proxy_events, "refused"), 1, "{pevs:?}");
    assert!(
        pevs.iter()
            .any(|e| e["event"] == "released" && e["reason"] == "LegWentGlobal"),
        "{pevs:?}"
    );
    assert_eq!(stats["refused_global"], 1, "{stats}");
    assert_eq!(
        stats["allocated"], 1,
        "one relay for both NAPT moves: {stats}"
    );
    for refused in ["unknown_ticket", "bad_mac", "replayed"] {
        assert_eq!(stats[refused], 0, "{refused}: {stats}");
    }
    // The direct MSYN: b was told where a is.
    let bevs = relay_lab::events(&run.b_events);
    assert!(
        bevs.iter().any(|e| e["event"] == "peer-location"),
        "{bevs:?}"
    );
}
