//! Per-source limits: one host (or one subnet) cannot hold the table or flood new flows.

mod common;

use std::time::Duration;

use common::{Harness, one_listener};
use udplb_core::{ClientVerdict, DropReason, ListenerId};

const LIMITS: &str =
    "source_limits = { prefix_v4 = 24, new_flows_per_second = 20, burst = 10, max_flows = 50 }";

fn limited(process_cap: u32) -> Harness {
    let mut config = one_listener(2, "idle_timeout = { front = \"30s\", back = \"30s\" }", LIMITS);
    config.process.max_flows = Some(process_cap);
    Harness::new(&config)
}

#[test]
fn a_flooding_subnet_is_held_to_its_rate_and_share_while_others_are_served() {
    let mut h = limited(200);
    let (mut flood_admitted, mut flood_refused) = (0, 0);
    let mut served = 0;
    // 10 seconds: 200 new flows a second from 198.51.100.0/24 (many hosts, a new port each),
    // and one new client a second from elsewhere.
    for tick in 0..2_000u32 {
        let host = tick % 250 + 1;
        match h.client(&format!("198.51.100.{host}:{}", 1024 + tick % 60_000), b"flood") {
            ClientVerdict::Forward { .. } => flood_admitted += 1,
            ClientVerdict::Drop(DropReason::SourceRate | DropReason::SourceFlows) => flood_refused += 1,
            other => panic!("tick {tick}: {other:?}"),
        }
        if tick % 200 == 0 {
            let client = format!("192.0.{}.1:5000", tick / 200 + 1);
            served += usize::from(matches!(h.client(&client, b"hello"), ClientVerdict::Forward { .. }));
        }
        h.advance(Duration::from_millis(5));
    }
    assert_eq!(served, 10, "every new client from elsewhere was served");
    assert!(flood_admitted <= 50, "the subnet never held more than its 50 flows: {flood_admitted}");
    assert!(flood_refused >= 1_950, "{flood_refused}");
    let drops = &h.core.stats().listeners[0].client;
    assert_eq!(drops.dropped(DropReason::SourceRate) + drops.dropped(DropReason::SourceFlows), flood_refused);
    assert_eq!(drops.dropped(DropReason::Shed), 0, "the table never filled");
    assert_eq!(h.core.listener_sources(ListenerId(0)).map(|(tracked, _)| tracked), Some(11));
    h.core.check_invariants().unwrap();
}

#[test]
fn a_source_gets_its_flows_back_as_they_close() {
    let limits = "source_limits = { max_flows = 2 }";
    let mut h = Harness::new(&one_listener(1, "responses = 1", limits));
    let first = h.forward("192.0.2.1:1", b"q");
    h.forward("192.0.2.1:2", b"q");
    assert_eq!(h.client("192.0.2.1:3", b"q"), ClientVerdict::Drop(DropReason::SourceFlows));
    assert!(matches!(h.client("192.0.2.2:3", b"q"), ClientVerdict::Forward { .. }), "another host");
    h.backend(first, b"a"); // responses = 1: the flow closes.
    assert!(matches!(h.client("192.0.2.1:3", b"q"), ClientVerdict::Forward { .. }));
    h.core.check_invariants().unwrap();
}

#[test]
fn limits_added_by_a_reload_count_the_flows_already_there() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    for port in 1..=3 {
        h.forward(&format!("192.0.2.1:{port}"), b"q");
    }
    h.core.apply_config(h.now, &one_listener(1, "", "source_limits = { max_flows = 3 }")).unwrap();
    h.core.check_invariants().unwrap();
    assert_eq!(h.client("192.0.2.1:4", b"q"), ClientVerdict::Drop(DropReason::SourceFlows), "3 already");
    // Removed again: no limit.
    h.core.apply_config(h.now, &one_listener(1, "", "")).unwrap();
    assert!(matches!(h.client("192.0.2.1:4", b"q"), ClientVerdict::Forward { .. }));
    h.core.check_invariants().unwrap();
}
