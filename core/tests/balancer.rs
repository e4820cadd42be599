//! The composed core: health decisions reach the datapath, datapath evidence reaches health.

mod common;

use std::time::Duration;

use common::balancer::{Answer, BalancerHarness};
use common::config;
use udplb_core::Input;
use udplb_core::balancer::Output;
use udplb_core::health::HealthEvent;
use udplb_core::{BackendCommand, Config, FrontendState, Health, Instant, UpstreamError};

fn cluster(health: &str, extra: &str) -> Config {
    config(&format!(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        {extra}
        health = {{ {health} }}
        backends = [
          {{ id = "b1", address = "10.1.0.1:53" }},
          {{ id = "b2", address = "10.1.0.2:53" }},
        ]
        "#
    ))
}

const TCP: &str = r#"mode = "tcp", interval = "1s", timeout = "500ms", rise = 2, fall = 2, jitter = 0"#;

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

#[test]
fn a_backend_refusing_probes_goes_down_and_gets_no_new_flows() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let b1 = h.backend("pool", "b1");
    let b2 = h.backend("pool", "b2");
    h.answers.insert(b1, Answer::Refuse);
    h.run_until(secs(5));
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Down);
    assert_eq!(h.core.monitor().backend(b2).unwrap().health, Health::Up);
    let downs: Vec<_> = h
        .health_events()
        .into_iter()
        .filter(|e| matches!(e, HealthEvent::Transition { backend, to: Health::Down, .. } if *backend == b1))
        .collect();
    assert_eq!(downs.len(), 1, "one transition, not one per probe");
    for port in 0..10 {
        assert_eq!(h.new_flow_backend(&format!("192.0.2.1:{}", 1000 + port)), Some(b2));
    }
}

#[test]
fn silence_is_never_healthy() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let b1 = h.backend("pool", "b1");
    h.answers.insert(b1, Answer::Silent);
    h.run_until(secs(5));
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Down);
}

#[test]
fn data_path_refusals_take_a_backend_down_without_probes_and_it_recovers_later() {
    let passive = r#"mode = "off", fall = 2, passive_recovery = "10s""#;
    let mut h = BalancerHarness::new(&cluster(passive, ""));
    let b1 = h.backend("pool", "b1");
    for port in 0..4 {
        let verdict = h.client(&format!("192.0.2.1:{}", 1000 + port), b"q");
        let flow = h.flow_of(verdict);
        if h.core.flows().flow(flow).unwrap().backend == b1 {
            h.core.handle(h.now, Input::UpstreamError { flow, error: UpstreamError::Refused }).unwrap();
        }
    }
    h.run_until(h.now);
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Down);
    assert!(!h.core.monitor().is_eligible(b1));
    h.run_until(secs(11));
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Up, "passive recovery");
}

#[test]
fn every_backend_down_raises_cluster_all_down_once_and_recovery_once() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let (b1, b2) = (h.backend("pool", "b1"), h.backend("pool", "b2"));
    h.answers.insert(b1, Answer::Refuse);
    h.answers.insert(b2, Answer::Refuse);
    h.run_until(secs(10));
    let listener = h.core.flows().listener_id("dns").unwrap();
    assert_eq!(h.core.frontend(listener), Some(FrontendState::Down));
    h.answers.insert(b2, Answer::Pass);
    h.run_until(secs(20));
    let events = h.health_events();
    let all_down = events.iter().filter(|e| matches!(e, HealthEvent::ClusterAllDown { .. })).count();
    let recovered = events.iter().filter(|e| matches!(e, HealthEvent::ClusterRecovered { .. })).count();
    assert_eq!((all_down, recovered), (1, 1));
    assert_eq!(h.core.frontend(listener), Some(FrontendState::Up));
    let frontend_changes: Vec<_> = h
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Frontend { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    // Both refuse from the start: Unknown (not reported) straight to Down, then Up.
    assert_eq!(frontend_changes, vec![FrontendState::Down, FrontendState::Up]);
}

#[test]
fn backend_commands_drain_disable_pause_and_weight() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let (b1, b2) = (h.backend("pool", "b1"), h.backend("pool", "b2"));
    h.run_until(secs(3));
    let verdict = h.client("192.0.2.1:1000", b"q");
    let flow = h.flow_of(verdict);
    let pinned = h.core.flows().flow(flow).unwrap().backend;
    let other = if pinned == b1 { b2 } else { b1 };
    h.core.handle(h.now, Input::Backend { backend: pinned, command: BackendCommand::Drain }).unwrap();
    h.run_until(h.now);
    for port in 0..6 {
        assert_eq!(h.new_flow_backend(&format!("192.0.2.2:{}", 1000 + port)), Some(other));
    }
    h.core.handle(h.now, Input::Admin(udplb_core::AdminCommand::CloseFlow(flow))).unwrap();
    h.run_until(h.now);
    assert!(h.outputs.iter().any(|o| matches!(o, Output::Flow(udplb_core::Output::Event(udplb_core::Event::BackendDrained { backend })) if *backend == pinned)));
    h.core.handle(h.now, Input::Backend { backend: pinned, command: BackendCommand::Enable }).unwrap();
    // Pause: no probes while paused.
    h.core.handle(h.now, Input::Backend { backend: other, command: BackendCommand::Pause }).unwrap();
    h.outputs.clear();
    h.run_until(h.now + Duration::from_secs(5));
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::Probe(p) if p.backend == other)));
    assert!(
        h.core.handle(h.now, Input::Backend { backend: pinned, command: BackendCommand::Resume }).is_err(),
        "not paused"
    );
    h.core.handle(h.now, Input::Backend { backend: other, command: BackendCommand::Resume }).unwrap();
    assert!(
        h.core
            .handle(h.now, Input::Backend { backend: other, command: BackendCommand::Weight(70_000) })
            .is_err()
    );
    assert_eq!(h.core.flows().backend_weight(other), Some(1), "the file's weight");
    h.core.handle(h.now, Input::Backend { backend: other, command: BackendCommand::Weight(0) }).unwrap();
    assert_eq!(h.core.flows().backend_weight(other), Some(0), "the operator's weight");
    for port in 0..4 {
        assert_eq!(
            h.new_flow_backend(&format!("192.0.2.3:{}", 1000 + port)),
            Some(pinned),
            "weight 0: no new flows"
        );
    }
}

#[test]
fn the_status_accessors_list_live_clusters() {
    let h = BalancerHarness::new(&cluster(TCP, ""));
    let clusters: Vec<_> = h.core.flows().cluster_ids().collect();
    assert_eq!(clusters.len(), 1);
    assert_eq!(h.core.flows().cluster_name(clusters[0]), Some("pool"));
}

#[test]
fn reload_keeps_health_unless_the_health_settings_change() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let b1 = h.backend("pool", "b1");
    h.answers.insert(b1, Answer::Refuse);
    h.run_until(secs(5));
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Down);
    // Same health settings, another teardown knob: b1 stays Down.
    let reload = h.core.apply_config(h.now, &cluster(TCP, "responses = 1")).unwrap();
    assert!(reload.health_restarted.is_empty());
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Down);
    // Changed health settings: every backend restarts in Unknown.
    let faster = r#"mode = "tcp", interval = "500ms", timeout = "250ms", rise = 2, fall = 2, jitter = 0"#;
    let reload = h.core.apply_config(h.now, &cluster(faster, "responses = 1")).unwrap();
    assert_eq!(reload.health_restarted.len(), 2);
    assert_eq!(h.core.monitor().backend(b1).unwrap().health, Health::Unknown);
    h.run_until(h.now);
    h.core.check_invariants().unwrap();
}

#[test]
fn when_every_backend_is_down_fail_open_still_routes_and_counts() {
    let mut h = BalancerHarness::new(&cluster(TCP, ""));
    let (b1, b2) = (h.backend("pool", "b1"), h.backend("pool", "b2"));
    h.answers.insert(b1, Answer::Refuse);
    h.answers.insert(b2, Answer::Refuse);
    h.run_until(secs(10));
    assert!(h.new_flow_backend("192.0.2.1:1000").is_some());
    assert_eq!(h.core.flows().stats().listeners[0].fail_open_flows, 1);

    let mut closed = BalancerHarness::new(&cluster(TCP, "fail_open = false"));
    closed.answers.insert(b1, Answer::Refuse);
    closed.answers.insert(b2, Answer::Refuse);
    closed.run_until(secs(10));
    assert_eq!(closed.new_flow_backend("192.0.2.1:1000"), None);
}

#[test]
fn a_lost_reply_pins_a_client_only_until_its_next_datagram() {
    // One socket sending every 200 ms, responses = 1 (a flow per query, closed by its reply);
    // its backend answers in 2 ms but loses the reply to the second query, whose flow stays
    // open, owing it. At the back deadline (1 s) the write-off would come four
    // datagrams too late: a lossy backend would keep the client for a second of its traffic,
    // and gain traffic for losing replies. Written off when the client sends again, the next
    // query is a new flow, selected afresh.
    let config = common::config(
        "[listeners.dns]\naddress = \"10.0.0.1:53\"\ncluster = \"c\"\n\
         [clusters.c]\nresponses = 1\nbackends = [{ id = \"b1\", address = \"10.1.0.1:53\" }, \
         { id = \"b2\", address = \"10.1.0.2:53\" }]\n",
    );
    let mut h = BalancerHarness::new(&config);
    let ms = std::time::Duration::from_millis;
    // Both backends answer in 2 ms (what udplb learns of their reply times).
    for client in ["192.0.2.8:1", "192.0.2.9:1"] {
        let warm = h.client(client, b"warm");
        let warm = h.flow_of(warm);
        h.run_until(h.now + ms(2));
        let _ = h.core.handle_backend_datagram(h.now, warm, b"up", false);
    }
    let first = h.client("192.0.2.1:5000", b"q1");
    let first = h.flow_of(first);
    h.run_until(h.now + ms(2));
    let reply = h.core.handle_backend_datagram(h.now, first, b"r1", false);
    assert!(matches!(reply, udplb_core::BackendVerdict::Return { .. }));
    h.run_until(h.now + ms(198));
    let lost = h.client("192.0.2.1:5000", b"q2");
    let lost = h.flow_of(lost);
    h.run_until(h.now + ms(200));
    let next = h.client("192.0.2.1:5000", b"q3");
    let next = h.flow_of(next);
    assert_ne!(next, lost, "the overdue reply was written off: a new flow");
    let written_off: u64 = h.core.flows().stats().backends.iter().map(|b| b.replies_written_off).sum();
    assert_eq!(written_off, 1);
    assert!(h.core.flows().flow(lost).is_some_and(|f| f.retired), "the old flow waits for a late reply");
    h.core.check_invariants().unwrap();
}
