//! The user-level expectations (`share`, `client_answered`, `no_transition`, `lost`) judge
//! what clients and backends felt. Each is shown passing on a run where it holds and failing
//! on a run where it does not, so none can pass for want of anything to look at; each
//! verdict's detail carries the figure it was judged on.

use std::path::Path;

use udplb_sim::check::Verdict;
use udplb_sim::scenario::Scenario;

/// Two echoing backends behind round robin, TCP health checks, and two clients that stop at
/// 4s: `stub` opens a flow per request, `session` keeps one socket. Tests append their
/// expectations and faults.
const BASE: &str = r#"name = "oracles"
duration = "6s"

[lb.listeners.dns]
address = "10.0.0.1:53"
cluster = "pool"

[lb.clusters.pool]
responses = 1
health = { mode = "tcp", interval = "200ms", timeout = "100ms", rise = 2, fall = 2 }
backends = [{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }]

[[backend]]
name = "b1"
address = "10.1.0.1:53"

[[backend]]
name = "b2"
address = "10.1.0.2:53"

[[client]]
name = "stub"
address = "192.0.2.10"
listener = "dns"
kind = "request_response"
interval = "10ms"
count = 400
new_port_per_request = true

[[client]]
name = "session"
address = "192.0.2.11"
listener = "dns"
kind = "request_response"
interval = "20ms"
count = 200
"#;

/// Runs `BASE` with `extra` appended; the verdicts, in the order of the expectations.
fn verdicts(extra: &str) -> Vec<Verdict> {
    let text = format!("{BASE}\n{extra}");
    let scenario = Scenario::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let report = udplb_sim::run(&scenario, Path::new("oracles.toml"), None);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.verdicts.len(), scenario.expectations.len());
    report.verdicts
}

fn holds(verdict: &Verdict) {
    assert!(verdict.passed, "should hold: {verdict:?}");
}

fn fails(verdict: &Verdict) {
    assert!(!verdict.passed, "should fail: {verdict:?}");
}

const SHARE: &str = r#"
[[expect]]
kind = "share"
backend = "b1"
from = "1s"
to = "3s"
at_least = 0.4
at_most = 0.6

[[expect]]
kind = "share"
backend = "b2"
from = "1s"
to = "3s"
at_least = 0.4
"#;

#[test]
fn share_holds_while_round_robin_splits_and_fails_when_one_backend_takes_everything() {
    let healthy = verdicts(SHARE);
    holds(&healthy[0]);
    holds(&healthy[1]);
    assert!(healthy[0].detail.starts_with("b1 carried "), "{}", healthy[0].detail);
    assert!(healthy[0].detail.ends_with(" between 1s and 3s"), "{}", healthy[0].detail);

    // b2 dies at 500ms and is seen Down before 1s: b1 carries (nearly) everything after.
    let killed =
        verdicts(&format!("{SHARE}\n[[timeline]]\nat = \"500ms\"\naction = \"kill\"\nbackend = \"b2\"\n"));
    fails(&killed[0]);
    fails(&killed[1]);
    // The figure that failed it: b1's share, then the counts it came from.
    let detail = &killed[0].detail;
    let percent: f64 = detail["b1 carried ".len()..].split('%').next().unwrap().parse().unwrap();
    assert!(percent > 90.0, "{detail}");
    assert!(detail.contains(" of "), "{detail}");
}

#[test]
fn share_fails_when_nothing_was_forwarded_in_its_window() {
    // The clients stop at 4s: between 5s and 6s nothing is forwarded, and nothing proves
    // nothing, whatever the bounds.
    let extra = r#"
[[expect]]
kind = "share"
backend = "b1"
from = "5s"
to = "6s"
at_least = 0.0
"#;
    let verdict = &verdicts(extra)[0];
    fails(verdict);
    assert_eq!(verdict.detail, "no client datagram forwarded between 5s and 6s");
}

const SESSION_ANSWERED: &str = r#"
[[expect]]
kind = "client_answered"
client = "session"
at_least = 1.0

[[expect]]
kind = "client_answered"
client = "stub"
at_least = 1.0
"#;

#[test]
fn client_answered_holds_on_a_clean_network_and_fails_for_the_client_whose_link_loses() {
    let clean = verdicts(SESSION_ANSWERED);
    holds(&clean[0]);
    holds(&clean[1]);
    assert_eq!(clean[0].detail, "session: 200 of 200 answered (100.00%)");

    // Loss on session's own link: session loses answers, stub does not.
    let lossy = verdicts(&format!("{SESSION_ANSWERED}\n[[network.link]]\nhost = \"session\"\nloss = 0.1\n"));
    fails(&lossy[0]);
    holds(&lossy[1]);
    assert!(lossy[0].detail.starts_with("session: "), "{}", lossy[0].detail);
    assert!(lossy[0].detail.contains(" of 200 answered ("), "{}", lossy[0].detail);
}

#[test]
fn client_answered_fails_for_a_client_that_sent_nothing() {
    // A client that starts after the run ends sends nothing: no evidence, no pass.
    let extra = r#"
[[expect]]
kind = "client_answered"
client = "late"
at_least = 0.0

[[client]]
name = "late"
address = "192.0.2.12"
listener = "dns"
kind = "request_response"
start = "10s"
interval = "10ms"
count = 5
"#;
    let verdict = &verdicts(extra)[0];
    fails(verdict);
    assert_eq!(verdict.detail, "late sent no request");
}

const NO_TRANSITION: &str = r#"
[[expect]]
kind = "no_transition"
backend = "b2"
from = "1s"
until = "6s"
to = "down"

[[expect]]
kind = "no_transition"
backend = "b2"
from = "1s"
until = "6s"

[[expect]]
kind = "no_transition"
backend = "b2"
from = "1s"
until = "6s"
to = "up"
"#;

#[test]
fn no_transition_holds_while_a_backend_stays_up_and_fails_when_it_goes_down() {
    // b2 comes up in the first half second and stays up.
    let steady = verdicts(NO_TRANSITION);
    steady.iter().for_each(holds);
    assert_eq!(steady[0].detail, "b2: no transition to down between 1s and 6s");

    let killed = verdicts(&format!(
        "{NO_TRANSITION}\n[[timeline]]\nat = \"2s\"\naction = \"kill\"\nbackend = \"b2\"\n"
    ));
    fails(&killed[0]);
    fails(&killed[1]);
    // It never comes back up: a transition to another state than `to` does not count.
    holds(&killed[2]);
    assert!(killed[0].detail.starts_with("b2: 1 transition to down: down at 2."), "{}", killed[0].detail);
}

const LOST: &str = r#"
[[expect]]
kind = "lost"
at_most = 0

[[expect]]
kind = "lost"
client = "stub"
at_most = 0

[[expect]]
kind = "lost"
client = "session"
at_most = 0
"#;

#[test]
fn lost_holds_when_every_request_is_answered_and_fails_when_some_are_not() {
    let clean = verdicts(LOST);
    clean.iter().for_each(holds);
    assert_eq!(clean[0].detail, "all clients: 0 of 600 requests never got all their replies");

    // Loss on session's link only: session's requests go missing, stub's do not.
    let lossy = verdicts(&format!("{LOST}\n[[network.link]]\nhost = \"session\"\nloss = 0.1\n"));
    fails(&lossy[0]);
    holds(&lossy[1]);
    fails(&lossy[2]);
    assert!(lossy[2].detail.starts_with("session: "), "{}", lossy[2].detail);
    assert!(lossy[2].detail.ends_with(" of 200 requests never got all their replies"), "{}", lossy[2].detail);
}

#[test]
fn a_link_fault_hits_only_that_host_and_a_network_action_without_it_ends_it() {
    // b2's link loses everything until 2s, TCP probes included: its probes time out, so it
    // goes Down within a few probe intervals, and round robin sends it new flows only until
    // then. Clients that only start after the link is mended lose nothing.
    let extra = r#"
[[network.link]]
host = "b2"
loss = 1.0

[[timeline]]
at = "2s"
action = "network"

[[client]]
name = "after"
address = "192.0.2.12"
listener = "dns"
kind = "request_response"
start = "2500ms"
interval = "10ms"
count = 100
new_port_per_request = true

[[expect]]
kind = "client_answered"
client = "after"
at_least = 1.0

[[expect]]
kind = "client_answered"
client = "stub"
at_least = 1.0

[[expect]]
kind = "client_answered"
client = "stub"
at_least = 0.95

[[expect]]
kind = "health_held"
backend = "b2"
state = "down"
from = "1s"
until = "2s"
"#;
    let verdicts = verdicts(extra);
    holds(&verdicts[0]);
    // Before b2's probes timed out, stub's flows to it lost their requests.
    fails(&verdicts[1]);
    holds(&verdicts[2]);
    holds(&verdicts[3]);
}
