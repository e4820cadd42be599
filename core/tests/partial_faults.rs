//! The flow semantics a lossy or misbehaving backend meets: owed replies written off, no
//! pinning, late replies taken back, copies not counted, reselection, faults attributed.
//!
//! The `pub` tests are also the catchers of named mutants (`sim/tests/mutants.rs` compiles this
//! file in and calls them with a mutant switched on).

mod common;

use std::time::Duration;

use common::{Harness, addr, one_listener};
use udplb_core::{BackendVerdict, CloseReason, DropReason, Output, PassiveFailure};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn failures(h: &Harness) -> Vec<PassiveFailure> {
    h.outputs
        .iter()
        .filter_map(|o| match o {
            Output::PassiveFailure { failure, .. } => Some(*failure),
            _ => None,
        })
        .collect()
}

#[test]
pub fn a_lost_reply_is_written_off_at_the_back_deadline_and_the_client_moves_on() {
    let mut h = Harness::new(&one_listener(2, "responses = 1", ""));
    // Both backends answer in 2 ms (what udplb learns of their reply times).
    for client in ["192.0.2.8:1", "192.0.2.9:1"] {
        let flow = h.forward(client, b"warm");
        h.advance(ms(2));
        h.backend(flow, b"up");
    }
    // A client that sends every 250 ms; its backend answers in 2 ms, but loses the reply to
    // the second request.
    let first = h.forward("192.0.2.1:5000", b"q1");
    h.advance(ms(2));
    h.backend(first, b"r1");
    h.advance(ms(248));
    let lost = h.forward("192.0.2.1:5000", b"q2");
    h.advance(ms(250));
    let pinned = h.forward("192.0.2.1:5000", b"q3");
    assert_eq!(pinned, lost, "still owing, the flow keeps the client until the deadline");
    h.advance(ms(2));
    h.backend(pinned, b"r3");
    h.take_outputs();
    // One second after the wait began the reply to q2 is overdue: written off.
    h.run_until(h.now + ms(900));
    assert_eq!(failures(&h), [PassiveFailure::Unanswered]);
    let stats = h.core.stats().backends.iter().map(|b| b.replies_written_off).sum::<u64>();
    assert_eq!(stats, 1);
    assert!(h.core.flow(lost).unwrap().retired, "retired, so the next request is selected afresh");
    let next = h.forward("192.0.2.1:5000", b"q4");
    assert_ne!(next, lost);
    // The retired flow waits `back` more for anything late, then closes.
    h.run_until(h.now + ms(1_100));
    assert!(h.closes().contains(&(lost, CloseReason::IdleBack)));
    h.core.check_invariants().unwrap();
}

#[test]
pub fn a_late_reply_takes_its_write_off_back_and_reaches_the_client() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.run_until(h.now + ms(1_001));
    assert_eq!(failures(&h), [PassiveFailure::Unanswered]);
    assert!(matches!(h.backend(flow, b"r1"), BackendVerdict::Return { .. }), "late, but returned");
    let backend = h.core.stats().backends.iter().map(|b| b.replies_taken_back).sum::<u64>();
    assert_eq!(backend, 1);
    assert!(h.closes().contains(&(flow, CloseReason::ResponsesReached)));
}

#[test]
fn queries_in_flight_on_a_busy_socket_are_never_written_off() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    // A query every 2 ms, each answered 10 ms later: always five in flight, for 3 s.
    let mut flows = Vec::new();
    for i in 0..1_500u32 {
        flows.push(h.forward("192.0.2.1:5000", format!("q{i}").as_bytes()));
        if i >= 5 {
            let reply = format!("r{}", i - 5);
            assert!(matches!(
                h.backend(flows[(i - 5) as usize], reply.as_bytes()),
                BackendVerdict::Return { .. }
            ));
        }
        h.run_until(h.now + ms(2));
    }
    assert!(failures(&h).is_empty(), "{:?}", failures(&h));
    assert_eq!(flows.iter().collect::<std::collections::BTreeSet<_>>().len(), 1, "one flow throughout");
}

#[test]
pub fn copies_the_network_made_are_not_counted() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.forward("192.0.2.1:5000", b"q2");
    h.advance(ms(5));
    h.backend(flow, b"r1");
    assert_eq!(h.backend(flow, b"r1"), BackendVerdict::Drop(DropReason::DuplicateReply));
    assert!(h.core.flow(flow).is_some(), "the copy did not settle q2");
    h.backend(flow, b"r2");
    assert!(h.closes().contains(&(flow, CloseReason::ResponsesReached)));
    // A copied request is forwarded but owed nothing.
    let flow = h.forward("192.0.2.2:5000", b"q");
    h.forward("192.0.2.2:5000", b"q");
    h.advance(ms(3));
    h.backend(flow, b"r");
    assert!(h.closes().contains(&(flow, CloseReason::ResponsesReached)));
    // The same bytes a second later are a new request, owed a new reply.
    h.advance(ms(1_000));
    let flow = h.forward("192.0.2.3:5000", b"ping");
    h.advance(ms(2));
    h.backend(flow, b"pong");
    h.advance(ms(500));
    let again = h.forward("192.0.2.3:5000", b"ping");
    h.advance(ms(2));
    assert!(matches!(h.backend(again, b"pong"), BackendVerdict::Return { .. }));
}

#[test]
pub fn reselect_moves_a_flow_off_a_backend_that_is_out_on_its_next_datagram() {
    let mut h = Harness::new(&one_listener(2, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.forward("192.0.2.1:5000", b"q2");
    let backend = h.core.flow(flow).unwrap().backend;
    h.set_eligible(backend, false);
    assert!(h.core.flow(flow).is_some(), "nothing is cut while the client is quiet");
    let moved = h.forward("192.0.2.1:5000", b"q3");
    assert_ne!(moved, flow);
    assert_ne!(h.core.flow(moved).unwrap().backend, backend);
    assert!(h.closes().contains(&(flow, CloseReason::Reselected)));
    assert_eq!(h.core.stats().backends[backend.0 as usize].flows_reselected, 1);
    assert!(h.core.flow(moved).unwrap().admission.reselected, "the new flow says why it exists");
    assert!(!h.core.flow(moved).unwrap().admission.retry);
    // Sessions (no reply count) keep their backend by default.
    let mut h = Harness::new(&one_listener(2, "", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    let backend = h.core.flow(flow).unwrap().backend;
    h.set_eligible(backend, false);
    assert_eq!(h.forward("192.0.2.1:5000", b"q2"), flow);
}

#[test]
pub fn a_reply_from_another_port_is_blamed_on_the_backend_with_that_address() {
    let mut h = Harness::new(&one_listener(2, "responses = 1", ""));
    h.core.handle_stray_reply(h.now, addr("10.1.0.2:5353"), 10);
    h.after_call();
    assert_eq!(h.core.stats().backends[1].stray_replies, 1);
    assert_eq!(failures(&h), [PassiveFailure::StrayReply]);
    assert!(
        h.outputs
            .iter()
            .any(|o| matches!(o, Output::Event(udplb_core::Event::BackendFault { count: 1, .. })))
    );
    // A late reply from the backend's own address, and a stranger, are nobody's fault.
    h.take_outputs();
    h.core.handle_stray_reply(h.now, addr("10.1.0.2:5300"), 10);
    h.core.handle_stray_reply(h.now, addr("203.0.113.9:53"), 10);
    h.after_call();
    assert!(failures(&h).is_empty());
    assert_eq!(h.core.stats().unattributed.dropped(DropReason::UnknownFlow), 2);
    // More strays within 10 s: one event, then the count with the next.
    for _ in 0..5 {
        h.core.handle_stray_reply(h.now, addr("10.1.0.2:5353"), 10);
    }
    h.advance(Duration::from_secs(10));
    h.core.handle_stray_reply(h.now, addr("10.1.0.2:5353"), 10);
    h.after_call();
    let counts: Vec<u64> = h
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(udplb_core::Event::BackendFault { count, .. }) => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [6]);
}

#[test]
fn a_reload_keeps_a_flow_retired_by_a_write_off_waiting_for_its_late_reply() {
    let config = one_listener(1, "responses = 1", "");
    let mut h = Harness::new(&config);
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.run_until(h.now + ms(1_001));
    assert!(h.core.flow(flow).unwrap().retired);
    h.core.apply_config(h.now, &config).unwrap();
    h.after_call();
    assert!(h.core.flow(flow).is_some(), "still waiting for the late reply");
    assert!(matches!(h.backend(flow, b"r1"), BackendVerdict::Return { .. }));
    h.core.check_invariants().unwrap();
}

#[test]
fn per_flow_a_copied_request_settles_nothing_and_a_copy_answered_differently_settles_the_copy() {
    // Per flow: the copy changes nothing owed, so the flow still waits for its one reply.
    let mut h =
        Harness::new(&one_listener(1, "responses = 1\nresponses_mode = \"per_flow\"\nrequests = 2", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    h.forward("192.0.2.1:5000", b"q");
    assert!(h.core.flow(flow).is_some(), "the reply is still owed");
    h.advance(ms(2));
    assert!(matches!(h.backend(flow, b"r"), BackendVerdict::Return { .. }));
    // Per request: the copy is owed nothing, so the first answer completes the flow, and an
    // answer to the copy (in other bytes) is a surplus for a flow that has ended.
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"a");
    h.forward("192.0.2.1:5000", b"a");
    h.advance(ms(2));
    assert!(matches!(h.backend(flow, b"ra"), BackendVerdict::Return { .. }));
    assert!(h.closes().contains(&(flow, CloseReason::ResponsesReached)));
    assert_eq!(h.backend(flow, b"ra, in another order"), BackendVerdict::Drop(DropReason::UnknownFlow));
    assert_ne!(h.forward("192.0.2.1:5000", b"c"), flow);
    h.core.check_invariants().unwrap();
}
