//! The simulator's models of the partial faults measured on udplb in network namespaces: a
//! UDP port dropped while its TCP port answers, Linux's per-destination ICMP rate limit, a
//! backend answering from another port, a link with a smaller MTU, and the `transitions`
//! expectation that bounds a count of health transitions in a window. Each model is shown
//! doing what the kernel or the network does, on runs small enough to reason about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use udplb_core::Instant;
use udplb_sim::hosts::{BackendHost, BackendReaction, BackendState};
use udplb_sim::network::Network;
use udplb_sim::scenario::{NetworkSpec, Scenario};
use udplb_sim::world::World;

/// One backend `b` behind the balancer, TCP health checks, `responses = 1`; one client `c`
/// sending `count` requests of `size` bytes, one every 100ms, from a new port each (so every
/// request is a new flow); `extra` appended (backend keys first: it starts inside `[[backend]]`).
fn one_backend(backend_keys: &str, size: usize, count: u32, extra: &str) -> Scenario {
    let text = format!(
        r#"name = "fault-models"
duration = "20s"

[lb.listeners.dns]
address = "10.0.0.1:53"
cluster = "pool"

[lb.clusters.pool]
responses = 1
health = {{ mode = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 3 }}
backends = [{{ id = "b", address = "10.1.0.1:53" }}]

[[backend]]
name = "b"
address = "10.1.0.1:53"
{backend_keys}

[[client]]
name = "c"
address = "192.0.2.10"
listener = "dns"
kind = "request_response"
interval = "100ms"
count = {count}
size = {size}
new_port_per_request = true
{extra}"#
    );
    Scenario::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn run(scenario: Scenario) -> World {
    let mut world = World::new(scenario, 1);
    world.run();
    assert!(world.record.violations.is_empty(), "{:?}", world.record.violations);
    world
}

fn at(seconds: f64) -> Instant {
    Instant::ZERO + Duration::from_secs_f64(seconds)
}

#[test]
fn the_icmp_bucket_lets_a_burst_through_then_one_error_per_interval_per_destination() {
    let spec =
        NetworkSpec { icmp_ratelimit: Duration::from_secs(1), icmp_burst: 6, ..NetworkSpec::default() };
    let mut network = Network::new(spec, 1);
    let lb = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 254));
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 252));
    // A refusal every 10ms for 10s, to one destination: the first 6 (the burst), then one a
    // second (the first at 1s, when a whole token has come back).
    let allowed: Vec<f64> =
        (0..1000).map(|i| f64::from(i) * 0.01).filter(|t| network.icmp_allowed(at(*t), "b", lb)).collect();
    assert_eq!(&allowed[..6], &[0.0, 0.01, 0.02, 0.03, 0.04, 0.05], "the burst: {allowed:?}");
    assert_eq!(allowed.len(), 6 + 9, "then one a second: {allowed:?}");
    for (n, t) in allowed[6..].iter().enumerate() {
        assert!((t - (n as f64 + 1.0)).abs() < 0.011, "the {n}th after the burst at {t}s");
    }
    // Another destination has a bucket of its own, full.
    assert!((0..6).all(|_| network.icmp_allowed(at(10.0), "b", other)));
    assert!(!network.icmp_allowed(at(10.0), "b", other));
    // So has another sending host.
    assert!(network.icmp_allowed(at(10.0), "b2", lb));
}

#[test]
fn without_icmp_ratelimit_only_the_per_second_limit_applies() {
    // The default: no per-destination bucket, 1000 errors a second per host, as before.
    let mut network = Network::new(NetworkSpec::default(), 1);
    let lb = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 254));
    let allowed = (0..1500).filter(|_| network.icmp_allowed(at(1.0), "b", lb)).count();
    assert_eq!(allowed, 1000);
    assert!(network.icmp_allowed(at(2.0), "b", lb));
}

#[test]
fn a_rejecting_port_under_the_icmp_rate_limit_refuses_few_of_the_requests_sent_to_it() {
    // 10 requests a second to a port that refuses them for 10s: with Linux's limit (a burst
    // of 6, then one a second) about 6 + 10 refusals reach the balancer; without it, every one.
    let refusals = |network: &str| {
        let extra = format!(
            "{network}\n[[timeline]]\nat = \"2s\"\naction = \"refuse_udp\"\nbackend = \"b\"\n\n\
             [[timeline]]\nat = \"12s\"\naction = \"restore\"\nbackend = \"b\"\n"
        );
        let world = run(one_backend("", 32, 150, &extra));
        let core = world.drivers[0].core();
        core.flows().stats().flows.closed_for(udplb_core::CloseReason::UpstreamRefused)
    };
    let limited = refusals("[network]\nicmp_ratelimit = \"1s\"\n");
    assert!((6..=6 + 11).contains(&limited), "{limited} refusals with the rate limit");
    let unlimited = refusals("");
    assert!(unlimited > 2 * limited, "{unlimited} refusals without it, {limited} with");
}

#[test]
fn dropped_udp_draws_no_icmp_and_leaves_the_tcp_port_open() {
    let scenario = one_backend("", 32, 1, "");
    let mut host = BackendHost::new(scenario.backends[0].clone());
    host.state = BackendState::DroppingUdp;
    let from = SocketAddr::from(([10, 0, 0, 254], 40_000));
    assert_eq!(host.receive(from, b"query", |_| Some(Vec::new())), BackendReaction::Dropped);
    assert_eq!(host.received, 0);
    assert_eq!(host.tcp_answer(), Some(true));
    host.restore();
    assert_eq!(host.state, BackendState::Up);
    assert!(matches!(host.receive(from, b"query", |_| Some(Vec::new())), BackendReaction::Reply { .. }));
}

#[test]
fn a_reply_from_another_port_reaches_the_core_as_a_stray_of_that_backend() {
    // `b` answers from port 5353 from 2s until it is restored at 4s: those replies match no
    // flow (the flow's backend is 10.1.0.1:53), so the core hears each as a stray reply, which
    // it attributes to `b` by its IP; the client gets none of them.
    let extra = "[[timeline]]\nat = \"2s\"\naction = \"reply_from\"\nbackend = \"b\"\nport = 5353\n\n\
                 [[timeline]]\nat = \"4s\"\naction = \"restore\"\nbackend = \"b\"\n";
    let world = run(one_backend("", 32, 60, extra));
    let stats = world.drivers[0].core().flows().stats();
    let strays = stats.backends[0].stray_replies;
    let client = &world.clients[0];
    assert_eq!(client.requests(), 60);
    assert_eq!(u64::from(client.requests() - client.answered), strays, "each stray is a lost reply");
    assert!((15..=21).contains(&strays), "about 2s of requests at 10 a second: {strays}");
}

#[test]
fn a_backend_spec_may_answer_from_another_port_for_the_whole_run() {
    let world = run(one_backend("reply_port = 5353", 32, 20, ""));
    let stats = world.drivers[0].core().flows().stats();
    assert_eq!(world.clients[0].answered, 0);
    assert_eq!(stats.backends[0].stray_replies, 20);
}

#[test]
fn past_a_smaller_link_mtu_the_first_datagram_is_lost_and_later_sends_fail_at_once() {
    // `b`'s link carries IP packets of 1280 bytes at most; requests of 1400 bytes (1428 with
    // their headers) from 1s. The first is lost on the way and draws a "fragmentation needed";
    // every later send to `b` fails at once until the path MTU entry expires (5s here), when
    // one more is lost and the entry is learned again.
    let extra = "[network]\npmtu_expires = \"5s\"\nlink = [{ host = \"b\", mtu = 1280 }]\n";
    let world = run(one_backend("", 1400, 100, extra));
    let stats = world.drivers[0].core().flows().stats();
    let client = &world.clients[0];
    assert_eq!(client.answered, 0);
    assert_eq!(world.backends[0].received, 0, "no request reached b");
    let failed = stats.backends[0].send_failures;
    // 100 requests over 10s: one lost at 0s and one at about 5s; the others failed to send.
    assert_eq!(failed, 98, "{failed} sends failed");
    assert_eq!(world.drivers[0].platform().path_mtus.len(), 1);
}

#[test]
fn datagrams_within_the_link_mtu_and_the_hosts_own_datagrams_get_through() {
    // 1252 bytes + 28 of headers = 1280: fits. The backend's replies leave over its own link
    // (its kernel fragments them) and arrive whatever their size.
    let extra = "[network]\nlink = [{ host = \"b\", mtu = 1280 }]\n";
    let world = run(one_backend("", 1252, 20, extra));
    assert_eq!(world.clients[0].answered, 20);
    let world = run(one_backend("", 1253, 20, extra));
    assert_eq!(world.clients[0].answered, 0);
}

#[test]
fn a_link_mtu_set_and_cleared_on_the_timeline() {
    // The MTU fault from 2s to 4s: the first big request after 2s is lost, the ones after it
    // fail to send; after 4s the link carries them again, but the balancer's host still
    // remembers the path MTU (10 minutes, Linux's default): sends to `b` keep failing.
    let extra = "[[timeline]]\nat = \"2s\"\naction = \"network\"\nlink = [{ host = \"b\", mtu = 1280 }]\n\n\
                 [[timeline]]\nat = \"4s\"\naction = \"network\"\n";
    let world = run(one_backend("", 1400, 60, extra));
    let answered = world.clients[0].answered;
    assert_eq!(answered, 20, "only the requests before 2s are answered");
    let stats = world.drivers[0].core().flows().stats();
    assert_eq!(stats.backends[0].send_failures, 39);
}

const TRANSITIONS_BASE: &str = r#"
[[timeline]]
at = "2s"
action = "kill"
backend = "b"

[[timeline]]
at = "8s"
action = "restore"
backend = "b"
"#;

#[test]
fn the_transitions_expectation_counts_health_transitions_in_a_window() {
    // b goes Down once after 2s (TCP refused) and Up once after 8s.
    let expect = |keys: &str| format!("{TRANSITIONS_BASE}\n[[expect]]\nkind = \"transitions\"\n{keys}\n");
    let cases = [
        ("from = \"1s\"\nuntil = \"20s\"\nto = \"down\"\nat_most = 1", true),
        ("from = \"1s\"\nuntil = \"20s\"\nto = \"down\"\nat_most = 0", false),
        ("backend = \"b\"\nfrom = \"1s\"\nuntil = \"20s\"\nat_least = 2\nat_most = 2", true),
        ("from = \"1s\"\nuntil = \"7s\"\nto = \"up\"\nat_most = 0", true),
        ("from = \"8s\"\nuntil = \"20s\"\nto = \"up\"\nat_least = 1", true),
        ("from = \"8s\"\nuntil = \"20s\"\nto = \"down\"\nat_least = 1", false),
    ];
    for (keys, passes) in cases {
        let scenario = one_backend("", 32, 150, &expect(keys));
        let report = udplb_sim::run(&scenario, Path::new("transitions.toml"), None);
        assert_eq!(report.verdicts[0].passed, passes, "{keys}: {:?}", report.verdicts[0]);
    }
}

#[test]
fn a_transitions_expectation_needs_a_bound_and_an_ordered_window() {
    let parse = |keys: &str| {
        let extra = format!("[[expect]]\nkind = \"transitions\"\n{keys}\n");
        let text = format!("{}\n{extra}", include_str!("../../scenarios/fail_open.toml"));
        Scenario::parse(&text).map(|_| ()).map_err(|e| e.0)
    };
    assert!(parse("from = \"1s\"\nuntil = \"2s\"").unwrap_err().contains("needs `at_least`, `at_most`"));
    assert!(parse("from = \"3s\"\nuntil = \"2s\"\nat_most = 1").unwrap_err().contains("no later than"));
    assert!(
        parse("backend = \"nope\"\nfrom = \"1s\"\nuntil = \"2s\"\nat_most = 1").unwrap_err().contains("nope")
    );
    assert!(parse("from = \"1s\"\nuntil = \"2s\"\nat_most = 1").is_ok());
}

#[test]
fn a_link_loses_in_one_direction_only_when_told() {
    // b's link loses every datagram sent to it (`in`): nothing is answered. Losing only what
    // it sends (`out`) loses the replies: nothing is answered either, but b received them all.
    let world = run(one_backend(
        "",
        32,
        20,
        "[network]\nlink = [{ host = \"b\", loss = 1.0, direction = \"in\" }]\n",
    ));
    assert_eq!((world.clients[0].answered, world.backends[0].received), (0, 0));
    let world = run(one_backend(
        "",
        32,
        20,
        "[network]\nlink = [{ host = \"b\", loss = 1.0, direction = \"out\" }]\n",
    ));
    assert_eq!(world.clients[0].answered, 0);
    assert_eq!(world.backends[0].received, 20);
    // The client's own link, `out`, does not touch b's traffic from the balancer.
    let world = run(one_backend(
        "",
        32,
        20,
        "[network]\nlink = [{ host = \"lb\", loss = 0.0, direction = \"out\" }]\n",
    ));
    assert_eq!(world.clients[0].answered, 20);
}
