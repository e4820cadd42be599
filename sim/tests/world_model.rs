//! The simulated world models what ships: workers behind the kernel's SO_REUSEPORT hash with
//! leader/follower health, per-instance configurations, TCP probes through the network,
//! SIGTERM and listener resume, backends that change how they answer, senders that keep their
//! ports, empty datagrams, and configurations expected refused. Each test shows a feature at
//! work and, where it is a check, that the check can fail.

use std::path::Path;

use udplb_sim::check::Verdict;
use udplb_sim::scenario::Scenario;
use udplb_sim::world::World;

fn load(relative: &str) -> (Scenario, std::path::PathBuf) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    (Scenario::load(&file).unwrap_or_else(|e| panic!("{e}")), file)
}

/// Two echoing backends behind round robin; tests append what they need.
const BASE: &str = r#"name = "world"
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
"#;

fn scenario(extra: &str) -> Scenario {
    let text = format!("{BASE}\n{extra}");
    Scenario::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn verdicts(extra: &str) -> Vec<Verdict> {
    let scenario = scenario(extra);
    let report = udplb_sim::run(&scenario, Path::new("world.toml"), None);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    report.verdicts
}

#[test]
fn the_kernel_spreads_client_sockets_over_every_worker_and_followers_follow_the_leader() {
    let scenario = scenario("[lb.process]\nworkers = 3\n");
    let mut world = World::new(scenario, 7);
    world.run();
    assert!(world.record.violations.is_empty(), "{:?}", world.record.violations);
    assert_eq!(world.drivers.len(), 3);
    let roles: Vec<_> = world.drivers.iter().map(|d| d.core().role()).collect();
    assert_eq!(roles, [udplb_core::Role::Leader, udplb_core::Role::Follower, udplb_core::Role::Follower]);
    for (worker, driver) in world.drivers.iter().enumerate() {
        let created = driver.core().flows().stats().flows.created;
        // 400 sockets over 3 workers: each gets a fair part.
        assert!((80..=190).contains(&created), "worker {worker} opened {created} flows");
        // Followers know every backend Up from the leader, without probing themselves.
        for backend in driver.core().monitor().backend_ids() {
            assert!(driver.core().monitor().is_eligible(backend), "worker {worker} {backend:?}");
        }
    }
}

#[test]
fn steering_keeps_a_host_keyed_by_address_on_one_worker_and_the_kernel_hash_would_not() {
    let (scenario, file) = load("../scenarios/workers_client_address.toml");
    let report = udplb_sim::run(&scenario, &file, None);
    assert!(report.passed(), "{:?} {:?}", report.violations, report.verdicts);
    // The kernel's own 4-tuple hash (no steering program) spreads one host's sockets over the
    // workers, each with its own flow table: the affinity invariant catches the split.
    let mut unsteered = scenario.clone();
    unsteered.platform.reuseport = udplb_sim::scenario::Reuseport::Kernel;
    let report = udplb_sim::run(&unsteered, &file, None);
    assert!(
        report.violations.iter().any(|v| v.contains("affinity: client host 192.0.2.")),
        "the affinity invariant should catch the split: {:?}",
        report.violations
    );
    // With one worker there is nothing to steer.
    let mut one = unsteered.clone();
    one.lb.process.workers = None;
    let report = udplb_sim::run(&one, &file, None);
    assert!(report.passed(), "{:?} {:?}", report.violations, report.verdicts);
}

#[test]
fn instances_with_opposite_backend_orders_agree_but_another_algorithm_is_caught() {
    let (scenario, file) = load("../scenarios/ecmp_backend_order.toml");
    assert!(udplb_sim::run(&scenario, &file, None).passed());
    let mut other = scenario.clone();
    let lb = other.ecmp.instance_specs[1].lb.as_mut().expect("instance 1 has its own [lb]");
    lb.clusters.get_mut("servers").expect("cluster").algorithm = udplb_core::config::Algorithm::Hrw;
    let report = udplb_sim::run(&other, &file, None);
    assert!(!report.passed());
    assert!(report.violations.iter().any(|v| v.contains("instance 1 worker 0")), "{:?}", report.violations);
}

#[test]
fn tcp_probes_cross_the_network_so_a_lossy_link_takes_a_backend_down() {
    let extra = r#"
[[network.link]]
host = "b2"
loss = 1.0
direction = "in"

[[expect]]
kind = "health_held"
backend = "b2"
state = "down"
from = "1s"
until = "6s"
"#;
    let v = verdicts(extra);
    assert!(v[0].passed, "{v:?}");
    // The answer's way back counts too: a link that loses only what b2 sends.
    let v = verdicts(&extra.replace("\"in\"", "\"out\""));
    assert!(v[0].passed, "{v:?}");
    // A lossless link keeps it Up: the check fails.
    let v = verdicts(&extra.replace("loss = 1.0", "loss = 0.0"));
    assert!(!v[0].passed, "{v:?}");
}

#[test]
fn the_new_oracles_hold_and_fail() {
    let extra = r#"
[[expect]]
kind = "datagrams"
direction = "to_backend"
client = "stub"
at_least = 400
at_most = 400

[[expect]]
kind = "datagrams"
direction = "to_client"
backend = "b1"
at_least = 180
at_most = 220

[[expect]]
kind = "datagrams"
direction = "to_client"
backend = "b1"
at_most = 10

[[expect]]
kind = "client_answered"
client = "stub"
at_most = 0.5

[[expect]]
kind = "health_held"
backend = "b1"
state = "up"
from = "1s"
until = "6s"

[[expect]]
kind = "health_held"
backend = "b1"
state = "down"
from = "1s"
until = "6s"

[[expect]]
kind = "strays"
backend = "b1"
at_most = 0

[[expect]]
kind = "strays"
backend = "b1"
at_least = 1
"#;
    let v = verdicts(extra);
    let passed: Vec<bool> = v.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [true, true, false, false, true, false, true, false], "{v:#?}");
}

#[test]
fn a_backend_answering_from_another_port_is_counted_as_strays() {
    let extra = r#"
[[timeline]]
at = "1s"
action = "set_backend"
backend = "b2"
reply_port = 5353

[[expect]]
kind = "strays"
backend = "b2"
at_least = 5

[[expect]]
kind = "exited"
by = "6s"
"#;
    let v = verdicts(extra);
    assert!(v[0].passed, "{v:?}");
    // No SIGTERM: the instance never exits.
    assert!(!v[1].passed, "{v:?}");
}

#[test]
fn a_reload_expected_refused_must_be_invalid_and_its_reason_must_match() {
    let reload = |requests: &str, rejected: &str| {
        format!(
            "[[timeline]]\nat = \"1s\"\naction = \"reload\"\nrejected = \"{rejected}\"\n\
             [timeline.lb.listeners.dns]\naddress = \"10.0.0.1:53\"\ncluster = \"pool\"\n\
             [timeline.lb.clusters.pool]\n{requests}\nbackends = [{{ id = \"b1\", address = \"10.1.0.1:53\" }}]\n"
        )
    };
    let text = |extra: String| format!("{BASE}\n{extra}");
    assert!(Scenario::parse(&text(reload("requests = 1", "requests"))).is_ok());
    let valid = Scenario::parse(&text(reload("responses = 1", ""))).unwrap_err();
    assert!(valid.0.contains("expected to be rejected, but it is valid"), "{valid}");
    let other = Scenario::parse(&text(reload("requests = 1", "weight"))).unwrap_err();
    assert!(other.0.contains("is rejected, but not with `weight`"), "{other}");
}

#[test]
fn the_detailed_trace_follows_every_flow_and_probe_and_is_off_by_default() {
    let scenario = scenario("");
    let plain = udplb_sim::run(&scenario, Path::new("w.toml"), None);
    let detailed = udplb_sim::run_traced(&scenario, Path::new("w.toml"), None, true);
    assert!(!plain.trace.contains("opened on instance"));
    assert_eq!(detailed.trace.matches("opened on instance 0 worker 0").count(), 400);
    assert!(detailed.trace.contains("closed: responses_reached"));
    assert!(detailed.trace.contains(": tcp 10.1.0.2:53"));
    assert!(detailed.trace.contains(": Pass"));
    assert_eq!(plain.verdicts, detailed.verdicts);
}
