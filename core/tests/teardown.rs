//! Teardown: responses, requests, idle deadlines, lifetime, drain, upstream errors — one
//! test per close reason and per acceptance case.

mod common;

use std::time::Duration;

use common::{Harness, one_listener};
use udplb_core::{
    AdminCommand, BackendVerdict, ClientVerdict, CloseReason, DropReason, Event, Instant, Output,
    UpstreamError,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn responses_1_closes_a_dns_like_flow_after_the_first_reply() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"query");
    assert!(matches!(h.backend(flow, b"answer"), BackendVerdict::Return { .. }));
    assert_eq!(h.closes(), vec![(flow, CloseReason::ResponsesReached)]);
    assert!(h.core.flow(flow).is_none());
    // A late duplicate answer has nowhere to go.
    assert_eq!(h.backend(flow, b"dup"), BackendVerdict::Drop(DropReason::UnknownFlow));
    // The client's next query is a new flow.
    assert_ne!(h.forward("192.0.2.1:5000", b"query"), flow);
}

#[test]
fn eight_requests_in_flight_with_responses_1_per_request_all_get_their_replies() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"q0");
    for i in 1..8 {
        assert_eq!(h.forward("192.0.2.1:5000", format!("q{i}").as_bytes()), flow);
    }
    for i in 0..8 {
        let verdict = h.backend(flow, format!("a{i}").as_bytes());
        assert!(matches!(verdict, BackendVerdict::Return { .. }), "reply {i}: {verdict:?}");
    }
    assert_eq!(h.closes(), vec![(flow, CloseReason::ResponsesReached)]);
    assert_eq!(h.core.stats().listeners[0].backend.passed, 8);
}

#[test]
fn per_flow_counting_closes_after_n_replies_in_total() {
    let mut h = Harness::new(&one_listener(1, "responses = 2\nresponses_mode = \"per_flow\"", ""));
    let flow = h.forward("192.0.2.1:5000", b"q0");
    h.forward("192.0.2.1:5000", b"q1");
    h.forward("192.0.2.1:5000", b"q2");
    assert!(matches!(h.backend(flow, b"a0"), BackendVerdict::Return { .. }));
    assert!(matches!(h.backend(flow, b"a1"), BackendVerdict::Return { .. }));
    assert_eq!(h.closes(), vec![(flow, CloseReason::ResponsesReached)]);
    assert_eq!(h.backend(flow, b"a2"), BackendVerdict::Drop(DropReason::UnknownFlow));
}

#[test]
fn requests_1_still_returns_its_reply() {
    let mut h = Harness::new(&one_listener(1, "requests = 1\nresponses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    let info = h.core.flow(flow).unwrap();
    assert!(info.retired, "the flow retires on its one request");
    // The same client's next datagram starts a new flow, and the retired one still answers.
    let next = h.forward("192.0.2.1:5000", b"q2");
    assert_ne!(next, flow);
    assert!(matches!(h.backend(flow, b"a"), BackendVerdict::Return { .. }));
    assert_eq!(h.closes(), vec![(flow, CloseReason::ResponsesReached)]);
}

#[test]
fn requests_with_no_reply_expected_closes_as_soon_as_the_datagram_is_forwarded() {
    let mut h = Harness::new(&one_listener(1, "requests = 1\nresponses = 0", ""));
    let flow = h.forward("192.0.2.1:514", b"<13>syslog line");
    assert_eq!(h.closes(), vec![(flow, CloseReason::RequestsReached)]);
    // The confirmation said so: the shell sends, then acts on the close output.
    assert!(matches!(h.client("192.0.2.2:514", b"<13>again"), ClientVerdict::Forward { closes: true, .. }));
}

#[test]
fn front_and_back_idle_deadlines_fire_independently() {
    let cluster = "idle_timeout = { front = \"10s\", back = \"3s\" }";
    // Back: the backend never answers the client's datagram.
    let mut h = Harness::new(&one_listener(1, cluster, ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.run_until(Instant::from_millis(2_999));
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(3));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleBack)]);

    // Front: the backend answers everything, the client goes quiet.
    let mut h = Harness::new(&one_listener(1, cluster, ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.advance(secs(1));
    h.backend(flow, b"a");
    h.advance(secs(1));
    h.forward("192.0.2.1:5000", b"q");
    h.advance(secs(1));
    h.backend(flow, b"a");
    // Last client datagram at 2s: front idle due at 12s; nothing owed, so no back deadline.
    h.run_until(Instant::from_millis(11_999));
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(12));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleFront)]);
}

#[test]
fn a_client_datagram_after_a_quiet_spell_still_gets_its_back_deadline_on_time() {
    // The flow's armed entry is never later than a wait that could start: a request at 20s
    // that is never answered closes the flow at exactly 23s.
    let mut h = Harness::new(&one_listener(1, "idle_timeout = { front = \"60s\", back = \"3s\" }", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.backend(flow, b"a");
    h.run_until(Instant::from_secs(20));
    h.forward("192.0.2.1:5000", b"q");
    h.run_until(Instant::from_millis(22_999));
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(23));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleBack)]);
}

#[test]
fn activity_keeps_a_flow_alive_without_touching_the_timer_index_per_datagram() {
    let mut h = Harness::new(&one_listener(1, "idle_timeout = { front = \"10s\", back = \"10s\" }", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    let armed = h.core.poll_timeout();
    for _ in 0..50 {
        h.advance(Duration::from_millis(100));
        h.forward("192.0.2.1:5000", b"q");
        h.backend(flow, b"a");
    }
    // 100 datagrams later the armed deadline has not moved: activity only updates the flow.
    assert_eq!(h.core.poll_timeout(), armed);
    h.run_until(Instant::from_secs(30));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleFront)]);
    // Last client datagram at 5s: closed at 15s exactly, not at the stale 10s entry.
    assert_eq!(h.core.stats().flows.closed_for(CloseReason::IdleFront), 1);
}

#[test]
fn idle_flow_closes_at_exactly_its_deadline_after_an_early_entry_fires() {
    let mut h = Harness::new(&one_listener(1, "idle_timeout = { front = \"10s\", back = \"10s\" }", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.advance(secs(1));
    h.backend(flow, b"a");
    h.advance(secs(4));
    h.forward("192.0.2.1:5000", b"q");
    h.advance(secs(1));
    h.backend(flow, b"a");
    // Front deadline is 5s + 10s = 15s.
    h.run_until(Instant::from_millis(14_999));
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(15));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleFront)]);
}

#[test]
fn lifetime_closes_a_busy_flow() {
    let mut h = Harness::new(&one_listener(1, "lifetime = \"5s\"", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    for _ in 0..9 {
        h.advance(Duration::from_millis(500));
        h.forward("192.0.2.1:5000", b"q");
        h.backend(flow, b"a");
    }
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(5));
    assert_eq!(h.closes(), vec![(flow, CloseReason::LifetimeReached)]);
}

#[test]
fn an_early_wake_up_changes_nothing() {
    let mut h = Harness::new(&one_listener(2, "idle_timeout = { front = \"10s\", back = \"4s\" }", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.backend(flow, b"a");
    let deadline = h.core.poll_timeout().unwrap();
    let stats = h.core.stats().clone();
    h.take_outputs();
    // Wake up many times before the deadline (a timer wheel rounding down, a spurious wake).
    for step in 1..10u64 {
        h.advance_to(Instant::from_nanos(deadline.as_nanos() * step / 10));
        assert_eq!(h.core.poll_timeout(), Some(deadline));
    }
    assert!(h.outputs.is_empty());
    assert_eq!(h.core.stats(), &stats);
    assert!(h.core.flow(flow).is_some());
}

#[test]
fn after_handle_timeout_the_next_deadline_is_strictly_later() {
    let mut h = Harness::new(&one_listener(1, "idle_timeout = { front = \"2s\", back = \"1s\" }", ""));
    for port in 0..50 {
        h.advance(Duration::from_millis(37));
        h.forward(&format!("192.0.2.1:{}", 1000 + port), b"q");
    }
    for step in 0..200 {
        h.advance(Duration::from_millis(13));
        if let Some(next) = h.core.poll_timeout() {
            assert!(next > h.now, "step {step}: next deadline {next} is not after now {}", h.now);
        }
    }
}

#[test]
fn drain_without_deadline_waits_for_flows_to_end_by_their_own_teardown() {
    let mut h = Harness::new(&one_listener(1, "responses = 1\nidle_timeout = { back = \"1m\" }", ""));
    let dns = h.listener("dns");
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.take_outputs();
    h.admin(AdminCommand::DrainListener(dns));
    assert_eq!(
        h.take_outputs(),
        vec![Output::Event(Event::ListenerDraining { listener: dns, flows_remaining: 1 })]
    );
    h.run_until(Instant::from_secs(25));
    assert_eq!(h.core.listener_flows(dns), 1, "no drain deadline: the flow lives on");
    h.backend(flow, b"a");
    assert_eq!(
        h.take_outputs()[1..],
        [Output::Event(Event::ListenerDrained { listener: dns })],
        "closing the last flow reports the listener drained"
    );
}

#[test]
fn drain_with_deadline_closes_the_remaining_flows_as_drained() {
    let mut h = Harness::new(&one_listener(1, "", "drain_timeout = \"5s\""));
    let dns = h.listener("dns");
    let a = h.forward("192.0.2.1:5000", b"q");
    let b = h.forward("192.0.2.2:5000", b"q");
    h.advance(secs(1));
    h.admin(AdminCommand::DrainListener(dns));
    h.run_until(Instant::from_millis(5_999));
    assert_eq!(h.core.listener_flows(dns), 2);
    h.take_outputs();
    h.run_until(Instant::from_secs(6));
    assert_eq!(h.closes(), vec![(a, CloseReason::Drained), (b, CloseReason::Drained)]);
    assert_eq!(h.outputs.last(), Some(&Output::Event(Event::ListenerDrained { listener: dns })));
    assert_eq!(h.client("192.0.2.3:1", b"q"), ClientVerdict::Drop(DropReason::Draining));
    // Resuming takes new flows again.
    h.admin(AdminCommand::ResumeListener(dns));
    h.forward("192.0.2.3:1", b"q");
}

#[test]
fn draining_an_empty_listener_reports_drained_at_once() {
    let mut h = Harness::new(&one_listener(1, "", "drain_timeout = \"5s\""));
    let dns = h.listener("dns");
    h.admin(AdminCommand::DrainListener(dns));
    assert_eq!(h.take_outputs().last(), Some(&Output::Event(Event::ListenerDrained { listener: dns })));
    assert_eq!(h.core.poll_timeout(), None, "no drain timer left behind");
}

#[test]
fn upstream_refused_and_unreachable_close_the_flow_with_their_reason() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let refused = h.forward("192.0.2.1:1", b"q");
    let unreachable = h.forward("192.0.2.2:1", b"q");
    h.core.handle_upstream_error(h.now, refused, UpstreamError::Refused);
    h.core.handle_upstream_error(h.now, unreachable, UpstreamError::Unreachable);
    while let Some(output) = h.core.poll_output() {
        h.outputs.push(output);
    }
    assert_eq!(
        h.closes(),
        vec![(refused, CloseReason::UpstreamRefused), (unreachable, CloseReason::UpstreamUnreachable)]
    );
    // An error for a flow that already ended is ignored.
    h.core.handle_upstream_error(h.now, refused, UpstreamError::Refused);
    h.core.check_invariants().unwrap();
}

#[test]
fn send_and_open_failures_move_datagrams_from_passed_to_dropped() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    h.core.handle_upstream_error(h.now, flow, UpstreamError::SendFailed);
    h.take_outputs();
    h.fail_opens = true;
    assert_eq!(h.client("192.0.2.2:1", b"q"), ClientVerdict::Drop(DropReason::UpstreamOpenFailed));
    h.fail_opens = false;
    assert!(h.closes().is_empty(), "nothing was opened, so nothing is closed");
    // The failed send is the backend's: counted against it, and a passive failure.
    let backend = h.core.flow(flow).unwrap().backend;
    assert_eq!(h.core.stats().backends[backend.0 as usize].send_failures, 1);
    assert!(h.outputs.iter().any(|o| matches!(
        o,
        Output::PassiveFailure { backend: b, failure: udplb_core::PassiveFailure::SendFailed } if *b == backend
    )));
    h.backend(flow, b"a");
    h.core.handle_return_failed(h.now, h.listener("dns"), 1);
    h.core.check_invariants().unwrap();
    let stats = h.core.stats();
    let client = &stats.listeners[0].client;
    assert_eq!((client.received, client.passed), (2, 0));
    assert_eq!(client.dropped(DropReason::SendFailed), 1);
    assert_eq!(client.dropped(DropReason::UpstreamOpenFailed), 1);
    assert_eq!(stats.listeners[0].backend.dropped(DropReason::SendFailed), 1);
    assert_eq!(stats.flows.closed_for(CloseReason::UpstreamOpenFailed), 1);
}

#[test]
fn operator_close_and_close_all_report_aborted_and_shutdown() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let a = h.forward("192.0.2.1:1", b"q");
    let b = h.forward("192.0.2.2:1", b"q");
    h.admin(AdminCommand::CloseFlow(a));
    h.admin(AdminCommand::CloseAll);
    assert_eq!(h.closes(), vec![(a, CloseReason::Aborted), (b, CloseReason::Shutdown)]);
    assert!(h.core.handle_admin(h.now, AdminCommand::CloseFlow(a)).is_err());
}

#[test]
fn nat_return_sends_from_the_flows_listener_to_the_flows_client() {
    let mut h = Harness::new(&one_listener(2, "", ""));
    let a = h.forward("192.0.2.1:1111", b"q");
    let b = h.forward("[2001:db8::7]:2222", b"q");
    let dns = h.listener("dns");
    let local = common::addr("10.0.0.1:53");
    assert_eq!(
        h.backend(b, b"r"),
        BackendVerdict::Return { listener: dns, client: common::addr("[2001:db8::7]:2222"), local }
    );
    assert_eq!(
        h.backend(a, b"r"),
        BackendVerdict::Return { listener: dns, client: common::addr("192.0.2.1:1111"), local }
    );
}

#[test]
fn oversized_backend_datagram_is_dropped_as_truncated_and_counted_once() {
    let mut h = Harness::new(&one_listener(1, "", "max_datagram_size = 8"));
    let flow = h.forward("192.0.2.1:1", b"q");
    assert_eq!(h.backend(flow, b"123456789"), BackendVerdict::Drop(DropReason::Truncated));
    assert_eq!(
        h.core.handle_backend_datagram(h.now, flow, b"x", true),
        BackendVerdict::Drop(DropReason::Truncated)
    );
    let backend = &h.core.stats().listeners[0].backend;
    assert_eq!((backend.received, backend.passed, backend.dropped(DropReason::Truncated)), (2, 0, 2));
}
