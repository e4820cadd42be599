//! A scenario that names something that does not exist fails to load, with the file, line and
//! column of the name at fault: a misspelled backend, state, reason, event, command, listener
//! or host never turns into a silently zero count or a skipped check.

use std::path::PathBuf;

use udplb_core::names::EventName;
use udplb_core::{BackendCommand, CloseReason, DropReason, Health};
use udplb_sim::scenario::{Action, EventSelector, Expectation, NoTransition, Scenario, Share};

/// Every kind of name a scenario can hold, each spelled right. Line numbers matter: the tests
/// below name the line of each value.
const VALID: &str = r#"name = "names"
duration = "10s"

[lb.listeners.game]
address = "10.0.0.1:7777"
cluster = "servers"

[lb.clusters.servers]
backends = [{ id = "s1", address = "10.1.0.1:7777" }, { id = "s2", address = "10.1.0.2:7777" }]

[[backend]]
name = "s1"
address = "10.1.0.1:7777"

[[backend]]
name = "s2"
address = "10.1.0.2:7777"

[[client]]
name = "player"
address = "192.0.2.10"
listener = "game"
kind = "request_response"
interval = "50ms"
count = 10

[[timeline]]
at = "1s"
action = "kill"
backend = "s2"

[[timeline]]
at = "2s"
action = "backend"
backend = "s1"
command = "drain"

[[timeline]]
at = "3s"
action = "partition"
from = "lb"
to = "player"

[[timeline]]
at = "4s"
action = "heal"

[[expect]]
kind = "health"
backend = "s2"
state = "down"
by = "9s"

[[expect]]
kind = "detected"
backend = "s2"
state = "down"
after = "1s"

[[expect]]
kind = "drops"
reason = "no_healthy_backend"
at_most = 0

[[expect]]
kind = "closes"
reason = "idle_front"
at_least = 0

[[expect]]
kind = "events"
event = "backend_drained"
count = 1

[[expect]]
kind = "events"
event = "transition"
count = 1

[[expect]]
kind = "share"
backend = "s1"
from = "1s"
to = "5s"
at_most = 0.9

[[expect]]
kind = "client_answered"
client = "player"
at_least = 0.5

[[expect]]
kind = "no_transition"
backend = "s1"
from = "2s"
until = "8s"
to = "up"

[[expect]]
kind = "lost"
client = "player"
at_most = 5

[[network.link]]
host = "s2"
loss = 0.1
"#;

/// Writes `text` to a file of its own and loads it.
fn load(case: &str, text: &str) -> (PathBuf, Result<Scenario, String>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scenario_names");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{case}.toml"));
    std::fs::write(&path, text).unwrap();
    let result = Scenario::load(&path).map_err(|error| error.to_string());
    (path, result)
}

/// `VALID` with `from` (which must occur exactly once) replaced by `to`: its load error names
/// the file and the line and column where `at` (which must occur once in the new text)
/// begins, and says `says`.
fn fails_at(case: &str, from: &str, to: &str, at: &str, says: &str) {
    assert_eq!(VALID.matches(from).count(), 1, "{from:?} must occur once");
    let text = VALID.replace(from, to);
    assert_eq!(text.matches(at).count(), 1, "{at:?} must occur once");
    let before = &text[..text.find(at).unwrap()];
    let line = before.lines().count() + usize::from(before.ends_with('\n') || before.is_empty());
    let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    let (path, result) = load(case, &text);
    let error = result.expect_err(case);
    let location = format!("{}:{line}:{column}: ", path.display());
    assert!(error.starts_with(&location), "{case}: {error:?} should start with {location:?}");
    assert!(error.contains(says), "{case}: {error:?} should say {says:?}");
}

#[test]
fn the_valid_file_loads_with_every_name_typed() {
    let (_, result) = load("valid", VALID);
    let scenario = result.unwrap();
    assert_eq!(scenario.clients[0].listener.as_str(), "game");
    let actions: Vec<&str> = scenario.timeline.iter().map(|entry| entry.action.name()).collect();
    assert_eq!(actions, ["kill", "backend", "partition", "heal"]);
    assert!(matches!(
        &scenario.timeline[1].action,
        Action::Backend { backend, command } if backend.as_str() == "s1" && command.0 == BackendCommand::Drain
    ));
    let typed = |index: usize| &scenario.expectations[index];
    assert!(matches!(typed(0), Expectation::Health { state: Health::Down, .. }));
    assert!(matches!(typed(1), Expectation::Detected { state, .. } if state.0 == Health::Down));
    assert!(matches!(typed(2), Expectation::Drops { reason: DropReason::NoHealthyBackend, .. }));
    assert!(matches!(typed(3), Expectation::Closes { reason: CloseReason::IdleFront, .. }));
    assert!(matches!(
        typed(4),
        Expectation::Events { event: EventSelector::Event(EventName::BackendDrained), .. }
    ));
    assert!(matches!(typed(5), Expectation::Events { event: EventSelector::Transition, .. }));
    assert!(
        matches!(typed(6), Expectation::Share(Share { backend, at_most: Some(high), at_least: None, .. })
        if backend.as_str() == "s1" && high.0 == 0.9)
    );
    assert!(
        matches!(typed(7), Expectation::ClientAnswered(udplb_sim::scenario::ClientAnswered { client, .. }) if client.as_str() == "player")
    );
    assert!(matches!(typed(8), Expectation::NoTransition(NoTransition { to: Some(Health::Up), .. })));
    assert!(
        matches!(typed(9), Expectation::Lost { client: Some(client), at_most: 5 } if client.as_str() == "player")
    );
    assert_eq!(scenario.network.links[0].host.as_str(), "s2");
}

#[test]
fn the_location_is_the_line_and_column_of_the_name() {
    // Spelled out once; the other tests compute it from the text the same way.
    let (path, result) = load("location", &VALID.replace("by = \"9s\"", "by = \"9s\"\nstate_at = 1"));
    let error = result.unwrap_err();
    assert!(error.starts_with(&format!("{}:53:1: ", path.display())), "{error}");
    let (path, result) = load("location_value", &VALID.replace("\"backend_drained\"", "\"drained\""));
    let error = result.unwrap_err();
    assert!(error.starts_with(&format!("{}:72:9: unknown event `drained`", path.display())), "{error}");
}

#[test]
fn a_misspelled_backend_in_an_expectation_is_an_error_at_its_line() {
    let from = "kind = \"health\"\nbackend = \"s2\"";
    let to = "kind = \"health\"\nbackend = \"s9\"";
    fails_at("expect_backend", from, to, "\"s9\"", "no backend `s9` in [lb]; there are: `s1`, `s2`");
}

#[test]
fn a_misspelled_backend_on_the_timeline_is_an_error_at_its_line() {
    let from = "action = \"kill\"\nbackend = \"s2\"";
    let to = "action = \"kill\"\nbackend = \"s22\"";
    fails_at("timeline_kill", from, to, "\"s22\"", "no [[backend]] host `s22`");
    let from = "backend = \"s1\"\ncommand";
    fails_at("timeline_command", from, "backend = \"S1\"\ncommand", "\"S1\"", "no backend `S1` in [lb]");
}

#[test]
fn a_misspelled_health_state_is_an_error_at_its_line() {
    fails_at(
        "health_state",
        "state = \"down\"\nby",
        "state = \"dwn\"\nby",
        "\"dwn\"",
        "unknown health state `dwn`",
    );
    let from = "state = \"down\"\nafter";
    fails_at("detected_state", from, "state = \"unknown\"\nafter", "\"unknown\"", "never `unknown`");
}

#[test]
fn a_misspelled_drop_reason_is_an_error_at_its_line() {
    let to = "\"no_healthy_backends\"";
    fails_at("drop_reason", "\"no_healthy_backend\"", to, to, "unknown drop reason `no_healthy_backends`");
}

#[test]
fn a_misspelled_close_reason_is_an_error_at_its_line() {
    let to = "\"idle_frontend\"";
    fails_at("close_reason", "\"idle_front\"", to, to, "unknown close reason `idle_frontend`");
}

#[test]
fn a_misspelled_event_is_an_error_at_its_line() {
    let says = "unknown event `backend_drain`, expected `transition` or one of `backend_up`";
    fails_at("event", "\"backend_drained\"", "\"backend_drain\"", "\"backend_drain\"", says);
    fails_at(
        "event_group",
        "\"transition\"",
        "\"transitions\"",
        "\"transitions\"",
        "unknown event `transitions`",
    );
}

#[test]
fn other_names_are_checked_too() {
    fails_at("command", "\"drain\"", "\"drian\"", "\"drian\"", "unknown backend command `drian`");
    let to = "listener = \"gmae\"";
    fails_at("client_listener", "listener = \"game\"", to, "\"gmae\"", "no listener `gmae` in [lb]");
    fails_at("partition_host", "to = \"player\"", "to = \"palyer\"", "\"palyer\"", "no host `palyer`");
    fails_at("expect_kind", "kind = \"closes\"", "kind = \"close\"", "\"close\"", "unknown variant `close`");
    let to = "action = \"heal\"\nbackend = \"s1\"\n";
    fails_at(
        "unit_action",
        "action = \"heal\"\n",
        to,
        "backend = \"s1\"\n\n[[expect]]",
        "takes no other keys",
    );
    fails_at(
        "unknown_key",
        "count = 10\n",
        "count = 10\ncolour = 1\n",
        "colour",
        "unexpected keys in table: colour",
    );
}

#[test]
fn names_in_the_user_level_expectations_are_checked() {
    let says = "no backend `s3` in [lb]; there are: `s1`, `s2`";
    fails_at(
        "share_backend",
        "backend = \"s1\"\nfrom = \"1s\"",
        "backend = \"s3\"\nfrom = \"1s\"",
        "\"s3\"",
        says,
    );
    let from = "backend = \"s1\"\nfrom = \"2s\"";
    fails_at(
        "no_transition_backend",
        from,
        "backend = \"sl\"\nfrom = \"2s\"",
        "\"sl\"",
        "no backend `sl` in [lb]",
    );
    let says = "no [[client]] `plyer`; there are: `player`";
    let from = "client = \"player\"\nat_least";
    fails_at("client_answered_client", from, "client = \"plyer\"\nat_least", "\"plyer\"", says);
    let from = "client = \"player\"\nat_most";
    fails_at("lost_client", from, "client = \"plyer\"\nat_most", "\"plyer\"", says);
    fails_at("no_transition_state", "to = \"up\"", "to = \"upp\"", "\"upp\"", "unknown health state `upp`");
    fails_at(
        "link_host",
        "host = \"s2\"",
        "host = \"s9\"",
        "\"s9\"",
        "no host `s9`; there are: `lb`, `s1`, `s2`, `player`",
    );
}

#[test]
fn fractions_and_windows_in_the_user_level_expectations_are_checked() {
    let says = "a fraction is between 0 and 1 (both included), not 1.5";
    fails_at("share_fraction", "at_most = 0.9", "at_most = 1.5", "1.5", says);
    fails_at("answered_fraction", "at_least = 0.5", "at_least = -0.5", "-0.5", "not -0.5");
    fails_at("link_fraction", "loss = 0.1", "loss = 2.5", "2.5", "not 2.5");
    // What is wrong with a table as a whole is reported at its header.
    let share = "[[expect]]\nkind = \"share\"\nbackend = \"s1\"\nfrom = \"1s\"\nto = \"5s\"\nat_most = 0.9\n";
    let header = "[[expect]] # this one";
    let unbounded = share.replace("at_most = 0.9\n", "").replace("[[expect]]", header);
    fails_at("share_bounds", share, &unbounded, header, "`share` needs `at_least`, `at_most` or both");
    let backwards = share.replace("\"1s\"", "\"6s\"").replace("[[expect]]", header);
    fails_at("share_window", share, &backwards, header, "`share` needs `from` (6s) before `to` (5s)");
    let crossed =
        share.replace("at_most = 0.9\n", "at_most = 0.9\nat_least = 0.95\n").replace("[[expect]]", header);
    fails_at("share_crossed", share, &crossed, header, "`at_least` 0.95 is above `at_most` 0.9");
    let no_transition = "kind = \"no_transition\"\nbackend = \"s1\"\nfrom = \"2s\"";
    let backwards = no_transition.replace("\"2s\"", "\"9s\"");
    fails_at(
        "no_transition_window",
        &format!("[[expect]]\n{no_transition}"),
        &format!("{header}\n{backwards}"),
        header,
        "`no_transition` needs `from` (9s) no later than `until` (8s)",
    );
}

#[test]
fn a_flood_client_expects_no_replies_so_no_expectation_may_count_them() {
    let from = "client = \"player\"\nat_least = 0.5\n";
    let to = "client = \"swarm\"\nat_least = 0.5\n\n[[client]]\nname = \"swarm\"\naddress = \"198.18.0.1\"\n\
              listener = \"game\"\nkind = \"flood\"\ninterval = \"10ms\"\ncount = 5\nsources = 3\n";
    fails_at(
        "flood_client",
        from,
        to,
        "\"swarm\"\nat_least",
        "client `swarm` is a flood: it expects no replies",
    );
}

#[test]
fn a_client_of_a_wildcard_listener_names_the_address_it_sends_to() {
    // A wildcard listener serves every address of the host: which one the client uses is
    // the scenario's to say (each is a VIP of its own).
    let says = "client `player` talks to listener `game` on 0.0.0.0:7777, a wildcard address: say which of \
                the balancer's addresses it sends to";
    fails_at("wildcard_without_to", "10.0.0.1:7777", "0.0.0.0:7777", "\"game\"", says);
    let text = VALID
        .replace("10.0.0.1:7777", "0.0.0.0:7777")
        .replace("listener = \"game\"", "listener = \"game\"\nto = \"10.0.0.9\"");
    let (_, result) = load("wildcard_with_to", &text);
    assert_eq!(result.unwrap().clients[0].to, Some("10.0.0.9".parse().unwrap()));
    // On a listener bound to one address `to` can only be a mistake; on an IPv4 wildcard an
    // IPv6 address cannot be reached.
    let text = VALID.replace("listener = \"game\"", "listener = \"game\"\nto = \"10.0.0.9\"");
    let (_, result) = load("to_on_a_bound_listener", &text);
    let error = result.unwrap_err();
    assert!(error.contains("`to` is for listeners on a wildcard address"), "{error}");
    let text = VALID
        .replace("10.0.0.1:7777", "0.0.0.0:7777")
        .replace("listener = \"game\"", "listener = \"game\"\nto = \"2001:db8::9\"");
    let (_, result) = load("ipv6_to_on_ipv4_wildcard", &text);
    let error = result.unwrap_err();
    assert!(error.contains("takes IPv4 only"), "{error}");
}
