//! The health view in the flow manager: Down backends, draining backends.

mod common;

use common::{Harness, one_listener};
use udplb_core::{
    AdminState, BackendState, BackendVerdict, ClientVerdict, CloseReason, Event, Health, Output,
};

/// Draining by the operator, healthy: no new flows, existing ones continue.
fn draining_up() -> BackendState {
    BackendState { eligible: false, health: Health::Up, admin: AdminState::Draining }
}

#[test]
fn a_backend_going_down_keeps_its_flows_by_default_but_takes_no_new_ones() {
    let mut h = Harness::new(&one_listener(2, "", ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.set_eligible(backend, false);
    assert!(h.core.flow(flow).is_some());
    assert!(matches!(h.backend(flow, b"a"), BackendVerdict::Return { .. }));
    for port in 2..8 {
        let other = h.forward(&format!("192.0.2.1:{port}"), b"q");
        assert_ne!(h.core.flow(other).unwrap().backend, backend);
    }
}

#[test]
fn on_backend_down_close_ends_its_flows_so_clients_move() {
    let mut h = Harness::new(&one_listener(2, "on_backend_down = \"close\"", ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.take_outputs();
    h.set_eligible(backend, false);
    assert_eq!(h.closes(), vec![(flow, CloseReason::BackendDown)]);
    let next = h.forward("192.0.2.1:1", b"q");
    assert_ne!(h.core.flow(next).unwrap().backend, backend);
}

#[test]
fn a_draining_backend_finishes_its_flows_then_reports_drained_once() {
    let mut h = Harness::new(&one_listener(2, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.core.handle_backend_state(h.now, backend, draining_up());
    assert_eq!(h.core.poll_output(), None, "one flow left: not drained yet");
    for port in 2..6 {
        let other = h.forward(&format!("192.0.2.1:{port}"), b"q");
        assert_ne!(h.core.flow(other).unwrap().backend, backend, "no new flows on a draining backend");
    }
    h.take_outputs();
    h.backend(flow, b"a");
    let drained: Vec<_> =
        h.outputs.iter().filter(|o| matches!(o, Output::Event(Event::BackendDrained { .. }))).collect();
    assert_eq!(drained, vec![&Output::Event(Event::BackendDrained { backend })]);
    assert_eq!(h.core.backend_flows(backend), 0);
    // Already drained: a repeated report changes nothing.
    h.take_outputs();
    h.core.handle_backend_state(h.now, backend, draining_up());
    assert_eq!(h.core.poll_output(), None);
}

#[test]
fn draining_a_backend_without_flows_reports_drained_at_once() {
    let mut h = Harness::new(&one_listener(2, "", ""));
    let backend = h.core.backend_id("pool", "b2").unwrap();
    h.core.handle_backend_state(h.now, backend, draining_up());
    assert_eq!(h.core.poll_output(), Some(Output::Event(Event::BackendDrained { backend })));
    assert!(matches!(h.client("192.0.2.1:1", b"q"), ClientVerdict::Forward { .. }));
}
