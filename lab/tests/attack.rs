//! `[[attack]]` tables and `[expect] target_counters` / `server_counters` in scenario
//! files: what loads,
//! and the errors (file, line, field) for what does not. No root needed; running
//! the attack scenarios is the conformance suite's job (it runs every scenario file).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sustain_lab::attack::{AttackKind, Comparison};
use sustain_lab::moves::Trigger;
use sustain_lab::scenario::Scenario;
use sustain_lab::topology::NodeRole;
use sustain_lab::transfer::Role;

use common::{fails_at, located, parse_scenario as parse};

const ATTACKED: &str = r#"
name = "t"

[[network]]
name = "g1"

[[network]]
name = "g2"

[[network]]
name = "g3"

[[network]]
name = "g4"

[[node]]
name = "a"
network = "g1"

[[node]]
name = "b"
network = "g2"

[[node]]
name = "x"
role = "attacker"
network = "g3"

[transfer]
kind = "sustain"
sender = "b"
receiver = "a"
bytes = "16MiB"

[[move]]
host = "b"
to = "g4"
after_bytes = "4MiB"

[[attack]]
kind = "forged-msyn"
from = "x"
target = "a"
after_bytes = "8MiB"

[expect]
outcome = "completed"
target_counters = { mac_failures = ">=3", resets_received = 0, "stale_requests+repeat_requests" = "<1" }
"#;

#[test]
fn an_attack_loads_with_its_kind_ends_trigger_and_counter_checks() {
    let scenario = parse(ATTACKED).expect("loads");
    assert_eq!(
        scenario
            .topology
            .nodes
            .iter()
            .find(|n| n.name == "x")
            .map(|n| n.role),
        Some(NodeRole::Attacker)
    );
    assert_eq!(scenario.attacks.len(), 1);
    let attack = &scenario.attacks[0];
    assert_eq!(attack.kind, AttackKind::ForgedMsyn);
    assert_eq!((attack.from.as_str(), attack.target.as_str()), ("x", "a"));
    assert_eq!(attack.target_role, Role::Receiver);
    assert_eq!(attack.trigger, Trigger::AfterBytes(8 << 20));
    let checks: Vec<String> = scenario
        .expect
        .target_counters
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        checks,
        [
            "mac_failures >= 3",
            "resets_received == 0",
            "stale_requests+repeat_requests < 1"
        ]
    );
    assert_eq!(
        scenario.expect.target_counters[2].comparison,
        Comparison::Below
    );

    // Time triggers, in seconds or milliseconds.
    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "at_ms = 1500");
    let scenario = parse(&text).expect("loads");
    assert_eq!(
        scenario.attacks[0].trigger,
        Trigger::At(Duration::from_millis(1500))
    );
    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "at_s = 2.5");
    let scenario = parse(&text).expect("loads");
    assert_eq!(
        scenario.attacks[0].trigger,
        Trigger::At(Duration::from_millis(2500))
    );
}

#[test]
fn attack_errors_name_the_file_the_line_and_the_field() {
    let text = ATTACKED.replace("kind = \"forged-msyn\"", "kind = \"rst-flood\"");
    fails_at(&text, "rst-flood", "attack[0].kind", "unknown attack kind");

    let text = ATTACKED.replace("from = \"x\"", "from = \"b\"");
    fails_at(&text, "from = \"b\"", "attack[0].from", "b is a host");
    let text = ATTACKED.replace("from = \"x\"", "from = \"y\"");
    fails_at(&text, "from = \"y\"", "attack[0].from", "no attacker node");

    let text = ATTACKED.replace("target = \"a\"", "target = \"x\"");
    fails_at(
        &text,
        "target = \"x\"",
        "attack[0].target",
        "not an end of the transfer",
    );
    // The sender moves: the attacker could not keep watching it.
    let text = ATTACKED.replace("target = \"a\"", "target = \"b\"");
    fails_at(&text, "target = \"b\"", "attack[0].target", "b moves");

    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "after_bytes = \"17MiB\"");
    fails_at(&text, "17MiB", "attack[0].after_bytes", "never fire");
    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "after_bytes = \"8MiB\"\nat_s = 1");
    let (_, field, message) = located(&text);
    assert_eq!(field, "attack[0].after_bytes", "{message}");
    assert!(message.contains("one trigger"), "{message}");
    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "");
    fails_at(
        &text,
        "kind = \"forged-msyn\"",
        "attack[0].kind",
        "needs a trigger",
    );
    let text = ATTACKED.replace("after_bytes = \"8MiB\"", "after_bytes = 8\nbogus = 1");
    fails_at(&text, "bogus", "attack[0].bogus", "bogus");

    // A token-based forgery against a Linux end has no token to use.
    let text = ATTACKED.replace(
        "kind = \"sustain\"",
        "kind = \"sustain\"\nreceiver_kind = \"linux\"",
    );
    fails_at(
        &text,
        "kind = \"forged-msyn\"",
        "attack[0].kind",
        "both ends must be sustain",
    );
}

#[test]
fn a_replay_needs_a_move_of_the_other_end_before_it() {
    let replay = ATTACKED.replace("kind = \"forged-msyn\"", "kind = \"replayed-msyn\"");
    parse(&replay).expect("the sender moves after 4 MiB, the replay comes after 8 MiB");

    let text = replay.replace("after_bytes = \"4MiB\"", "after_bytes = \"12MiB\"");
    fails_at(
        &text,
        "\"8MiB\"",
        "attack[0].after_bytes",
        "b (the other end) must move before this trigger",
    );
    // Triggers of different kinds cannot be ordered.
    let text = replay.replace("after_bytes = \"4MiB\"", "at_s = 0.5");
    fails_at(&text, "\"8MiB\"", "attack[0].after_bytes", "must move");
    // No move at all.
    let text = replay.replace(
        "[[move]]\nhost = \"b\"\nto = \"g4\"\nafter_bytes = \"4MiB\"\n",
        "",
    );
    fails_at(&text, "\"8MiB\"", "attack[0].after_bytes", "must move");
}

#[test]
fn counter_checks_are_validated() {
    let text = ATTACKED.replace("mac_failures = \">=3\"", "mac_failure = \">=3\"");
    fails_at(
        &text,
        "target_counters",
        "expect.target_counters",
        "unknown counter \"mac_failure\"",
    );
    let text = ATTACKED.replace("\">=3\"", "\"lots\"");
    fails_at(
        &text,
        "target_counters",
        "expect.target_counters",
        "not a count",
    );

    // Without an attack there is no target.
    let no_attack = ATTACKED.replace(
        "[[attack]]\nkind = \"forged-msyn\"\nfrom = \"x\"\ntarget = \"a\"\nafter_bytes = \"8MiB\"\n",
        "",
    );
    fails_at(
        &no_attack,
        "target_counters",
        "expect.target_counters",
        "needs at least one [[attack]]",
    );

    // Two targets: whose counters?
    let two = ATTACKED.replace(
        "[expect]",
        "[[attack]]\nkind = \"blind-rst\"\nfrom = \"x\"\ntarget = \"b\"\nat_s = 1\n\n[expect]",
    );
    let two = two.replace(
        "[[move]]\nhost = \"b\"\nto = \"g4\"\nafter_bytes = \"4MiB\"\n",
        "",
    );
    fails_at(
        &two,
        "target_counters",
        "expect.target_counters",
        "needs one target",
    );

    // A Linux target reports no counters.
    let linux = ATTACKED
        .replace("kind = \"forged-msyn\"", "kind = \"blind-rst\"")
        .replace(
            "kind = \"sustain\"",
            "kind = \"sustain\"\nreceiver_kind = \"linux\"",
        );
    fails_at(
        &linux,
        "target_counters",
        "expect.target_counters",
        "only sustain-host reports counters",
    );
}

#[test]
fn attackers_sit_on_global_networks_and_never_move() {
    let text = ATTACKED.replace(
        "[[node]]\nname = \"x\"\nrole = \"attacker\"\nnetwork = \"g3\"",
        "[[network]]\nname = \"home\"\nkind = \"private\"\n\n[[router]]\nname = \"r\"\nwan = \"g3\"\nlan = \"home\"\n\n[[node]]\nname = \"x\"\nrole = \"attacker\"\nnetwork = \"home\"",
    );
    let (_, field, message) = located(&text);
    assert_eq!(field, "node[2].network", "{message}");
    assert!(
        message.contains("attacker sits on a global network"),
        "{message}"
    );

    let text = ATTACKED.replace(
        "[[attack]]",
        "[[move]]\nhost = \"x\"\nto = \"g4\"\nafter_bytes = 5\n\n[[attack]]",
    );
    let (_, field, message) = located(&text);
    assert_eq!(field, "move[1].host", "{message}");
    assert!(
        message.contains("x has the role attacker; only hosts move"),
        "{message}"
    );
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/scenarios")
}

#[test]
fn shipped_attack_scenarios_load_with_their_checks() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenario directory") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("attack-") {
            continue;
        }
        let scenario = Scenario::load(&path).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(scenario.attacks.len(), 1, "{name}");
        assert_eq!(
            format!("attack-{}", scenario.attacks[0].kind),
            name,
            "one attack, named after the file"
        );
        assert!(
            scenario
                .expect
                .target_counters
                .iter()
                .any(|c| c.to_string().starts_with("resets_received")
                    || c.to_string().starts_with("moves_accepted")),
            "{name}: the counters show the connection unharmed"
        );
        if scenario.attacks[0].kind.aims_at_server() {
            assert!(
                !scenario.expect.server_counters.is_empty(),
                "{name}: the server's counters show every forgery rejected"
            );
        }
        kinds.push(scenario.attacks[0].kind);
    }
    kinds.sort();
    assert_eq!(kinds, AttackKind::ALL.to_vec());
}

/// The target b moves and reports it to the mobility server c; the attacker talks
/// to c.
const REPORTED: &str = r#"
name = "t"

[[network]]
name = "g1"

[[network]]
name = "g2"

[[network]]
name = "g3"

[[network]]
name = "g4"

[[network]]
name = "g5"

[[node]]
name = "c"
role = "mobility-server"
network = "g1"

[[node]]
name = "a"
network = "g2"

[[node]]
name = "b"
network = "g3"

[[node]]
name = "x"
role = "attacker"
network = "g5"

[transfer]
kind = "sustain"
sender = "b"
receiver = "a"
bytes = "64MiB"

[[move]]
host = "b"
to = "g4"
after_bytes = "16MiB"

[[attack]]
kind = "replayed-report"
from = "x"
target = "b"
after_bytes = "32MiB"

[expect]
outcome = "completed"
server_counters = { replayed = ">=1", "bad_mac+conflicts" = 0, notices_sent = 1 }
"#;

#[test]
fn attacks_on_the_server_may_target_a_moving_end_and_check_the_servers_counters() {
    let scenario = parse(REPORTED).expect("loads");
    let attack = &scenario.attacks[0];
    assert_eq!(attack.kind, AttackKind::ReplayedReport);
    assert!(attack.kind.aims_at_server());
    assert_eq!(attack.target_role, Role::Sender);
    let checks: Vec<String> = scenario
        .expect
        .server_counters
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        checks,
        [
            "bad_mac+conflicts == 0",
            "notices_sent == 1",
            "replayed >= 1"
        ]
    );
    let text = REPORTED.replace("\"replayed-report\"", "\"forged-report\"");
    let scenario = parse(&text).expect("a forgery needs no move");
    assert_eq!(scenario.attacks[0].kind, AttackKind::ForgedReport);
    let text = text.replace(
        "[[move]]\nhost = \"b\"\nto = \"g4\"\nafter_bytes = \"16MiB\"\n",
        "",
    );
    parse(&text).expect("nor a move at all");
}

#[test]
fn attacks_on_the_server_need_a_server_and_a_replay_needs_the_targets_move() {
    // The replayed MoveReport is the target's own: b must move first.
    let text = REPORTED.replace("after_bytes = \"16MiB\"", "after_bytes = \"40MiB\"");
    fails_at(
        &text,
        "\"32MiB\"",
        "attack[0].after_bytes",
        "a replayed MoveReport needs a real one first: b (the target) must move",
    );
    // Moving the other end is no help.
    let text = REPORTED.replace("host = \"b\"\nto = \"g4\"", "host = \"a\"\nto = \"g4\"");
    fails_at(
        &text,
        "\"32MiB\"",
        "attack[0].after_bytes",
        "b (the target)",
    );

    let no_server = REPORTED
        .replace(
            "[[node]]\nname = \"c\"\nrole = \"mobility-server\"\nnetwork = \"g1\"\n",
            "",
        )
        .replace(
            "server_counters = { replayed = \">=1\", \"bad_mac+conflicts\" = 0, notices_sent = 1 }",
            "",
        );
    fails_at(
        &no_server,
        "kind = \"replayed-report\"",
        "attack[0].kind",
        "needs a node with role = \"mobility-server\"",
    );
    // Only migratable connections register.
    let linux = REPORTED.replace(
        "kind = \"sustain\"",
        "kind = \"sustain\"\nreceiver_kind = \"linux\"",
    );
    fails_at(
        &linux,
        "kind = \"replayed-report\"",
        "attack[0].kind",
        "both ends must be sustain",
    );
}

#[test]
fn server_counter_checks_are_validated() {
    let text = REPORTED.replace("replayed = \">=1\"", "mac_failures = \">=1\"");
    fails_at(
        &text,
        "server_counters",
        "expect.server_counters",
        "unknown counter \"mac_failures\"; sustain-server reports",
    );
    let text = REPORTED.replace("notices_sent = 1", "notices_sent = \"few\"");
    fails_at(
        &text,
        "server_counters",
        "expect.server_counters",
        "not a count",
    );
    // Without a mobility server there are no server counters (and no attack on it).
    let text = REPORTED
        .replace(
            "[[node]]\nname = \"c\"\nrole = \"mobility-server\"\nnetwork = \"g1\"\n",
            "",
        )
        .replace(
            "[[attack]]\nkind = \"replayed-report\"\nfrom = \"x\"\ntarget = \"b\"\nafter_bytes = \"32MiB\"\n",
            "",
        );
    fails_at(
        &text,
        "server_counters",
        "expect.server_counters",
        "needs a node with role = \"mobility-server\"",
    );
}
