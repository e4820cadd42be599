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

/// Like a listener's drain: with `backend_drain_timeout`, the flows a draining backend still
/// has when it runs out close as `Drained`, and the backend is reported drained. A backend
/// enabled again before then keeps its flows.
#[test]
fn a_draining_backend_closes_its_flows_left_at_backend_drain_timeout() {
    let timeouts = "backend_drain_timeout = \"2s\"\nidle_timeout = { front = \"60s\", back = \"60s\" }";
    let mut h = Harness::new(&one_listener(2, timeouts, ""));
    let flows: Vec<_> = (1..=6).map(|port| h.forward(&format!("192.0.2.1:{port}"), b"q")).collect();
    let backend = h.core.flow(flows[0]).unwrap().backend;
    let on_it: Vec<_> =
        flows.iter().copied().filter(|f| h.core.flow(*f).unwrap().backend == backend).collect();
    h.core.handle_backend_state(h.now, backend, draining_up());
    h.take_outputs();
    // A client of the draining backend keeps sending: its flow would live for ever.
    for _ in 0..3 {
        h.run_until(h.now + std::time::Duration::from_millis(600));
        h.forward("192.0.2.1:1", b"still here");
    }
    assert!(h.closes().is_empty(), "nothing closes before the deadline");
    h.run_until(h.now + std::time::Duration::from_millis(300));
    let mut closed = h.closes();
    closed.sort_by_key(|(flow, _)| flow.serial());
    assert_eq!(closed, on_it.iter().map(|f| (*f, CloseReason::Drained)).collect::<Vec<_>>());
    assert!(h.outputs.contains(&Output::Event(Event::BackendDrained { backend })));
    assert_eq!(h.core.backend_flows(backend), 0);
    assert!(flows.iter().filter(|f| !on_it.contains(f)).all(|f| h.core.flow(*f).is_some()), "others stay");
    h.core.check_invariants().unwrap();

    // Enabled again before the deadline: the drain and its deadline are off.
    let mut h = Harness::new(&one_listener(2, timeouts, ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.core.handle_backend_state(h.now, backend, draining_up());
    h.run_until(h.now + std::time::Duration::from_secs(1));
    h.core.handle_backend_state(
        h.now,
        backend,
        BackendState { eligible: true, health: Health::Up, admin: AdminState::Enabled },
    );
    h.run_until(h.now + std::time::Duration::from_secs(5));
    assert!(h.core.flow(flow).is_some(), "kept: the drain was cancelled");
    h.core.check_invariants().unwrap();
}

/// Found by `datagram_path`: a reload that removes a draining backend's whole cluster must
/// take the drain's deadline with it.
#[test]
fn a_reload_removing_a_draining_backends_cluster_cancels_its_deadline() {
    let timeouts = "backend_drain_timeout = \"2s\"\nidle_timeout = { front = \"60s\", back = \"60s\" }";
    let mut h = Harness::new(&one_listener(2, timeouts, ""));
    let flow = h.forward("192.0.2.1:1", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.core.handle_backend_state(h.now, backend, draining_up());
    let other = common::config(
        "[listeners.dns]\naddress = \"10.0.0.1:53\"\ncluster = \"other\"\n\
         [clusters.other]\nbackends = [{ id = \"c1\", address = \"10.2.0.1:53\" }]\n",
    );
    h.core.apply_config(h.now, &other).unwrap();
    h.core.check_invariants().unwrap();
    h.run_until(h.now + std::time::Duration::from_secs(3));
    h.core.check_invariants().unwrap();
}
