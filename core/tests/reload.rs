//! Reload: identities survive, removed things close their flows, an invalid configuration
//! changes nothing.

mod common;

use std::time::Duration;

use common::{Harness, config};
use udplb_core::{BackendVerdict, ClientVerdict, CloseReason, Config, DropReason, Instant};

fn two_backends(extra_backend: &str, cluster_extra: &str) -> Config {
    config(&format!(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        {cluster_extra}
        backends = [
          {{ id = "b1", address = "10.1.0.1:53" }},
          {{ id = "b2", address = "10.1.0.2:53" }},
          {extra_backend}
        ]
        "#
    ))
}

fn reload(h: &mut Harness, config: &Config) -> udplb_core::ReloadSummary {
    let summary = h.core.apply_config(h.now, config).expect("valid reload");
    while let Some(output) = h.core.poll_output() {
        h.outputs.push(output);
    }
    h.core.check_invariants().unwrap();
    summary
}

#[test]
fn adding_a_backend_keeps_every_existing_flow_and_its_backend() {
    let mut h = Harness::new(&two_backends("", ""));
    let flows: Vec<_> = (0..4).map(|i| h.forward(&format!("192.0.2.{i}:1000"), b"q")).collect();
    let before: Vec<_> = flows.iter().map(|f| h.core.flow(*f).unwrap().backend).collect();
    let b1 = h.core.backend_id("pool", "b1").unwrap();
    let summary = reload(&mut h, &two_backends(r#"{ id = "b3", address = "10.1.0.3:53" },"#, ""));
    assert_eq!(summary.backends_added.len(), 1);
    assert_eq!(summary.backends_kept.len(), 2);
    assert_eq!(summary.flows_closed, 0);
    assert!(h.closes().is_empty());
    let after: Vec<_> = flows.iter().map(|f| h.core.flow(*f).unwrap().backend).collect();
    assert_eq!(before, after);
    assert_eq!(h.core.backend_id("pool", "b1"), Some(b1), "a kept backend keeps its id");
    // New flows now reach the new backend too.
    let b3 = h.core.backend_id("pool", "b3").unwrap();
    let reached_b3 = (10..16).any(|i| {
        let flow = h.forward(&format!("192.0.2.{i}:1000"), b"q");
        h.core.flow(flow).unwrap().backend == b3
    });
    assert!(reached_b3);
}

#[test]
fn removing_a_backend_closes_only_its_flows() {
    let mut h = Harness::new(&two_backends(r#"{ id = "b3", address = "10.1.0.3:53" },"#, ""));
    let flows: Vec<_> = (0..6).map(|i| h.forward(&format!("192.0.2.{i}:1000"), b"q")).collect();
    let b3 = h.core.backend_id("pool", "b3").unwrap();
    let on_b3: Vec<_> = flows.iter().copied().filter(|f| h.core.flow(*f).unwrap().backend == b3).collect();
    assert_eq!(on_b3.len(), 2);
    h.take_outputs();
    let summary = reload(&mut h, &two_backends("", ""));
    assert_eq!(summary.backends_removed, vec![b3]);
    assert_eq!(summary.flows_closed, 2);
    let closed: Vec<_> = h.closes();
    assert_eq!(closed, on_b3.iter().map(|f| (*f, CloseReason::BackendRemoved)).collect::<Vec<_>>());
    assert_eq!(h.backend(on_b3[0], b"late"), BackendVerdict::Drop(DropReason::UnknownFlow));
    for flow in flows.iter().filter(|f| !on_b3.contains(f)) {
        assert!(matches!(h.backend(*flow, b"a"), BackendVerdict::Return { .. }));
    }
    assert_eq!(h.core.backend_id("pool", "b3"), None);
}

#[test]
fn a_changed_address_is_a_new_backend() {
    let mut h = Harness::new(&two_backends("", ""));
    let flow = h.forward("192.0.2.1:1000", b"q");
    let old = h.core.flow(flow).unwrap().backend;
    let moved = config(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        backends = [{ id = "b1", address = "10.9.9.9:53" }, { id = "b2", address = "10.1.0.2:53" }]
        "#,
    );
    let summary = reload(&mut h, &moved);
    assert_eq!(summary.backends_removed, vec![old]);
    assert_eq!(summary.backends_added.len(), 1);
    assert_eq!(h.closes(), vec![(flow, CloseReason::BackendRemoved)]);
    assert_ne!(h.core.backend_id("pool", "b1"), Some(old));
}

#[test]
fn an_invalid_configuration_changes_nothing() {
    let mut h = Harness::new(&two_backends("", ""));
    let flow = h.forward("192.0.2.1:1000", b"q");
    let stats = h.core.stats().clone();
    let mut broken = two_backends("", "");
    broken.listeners.get_mut("dns").unwrap().cluster = "nope".into();
    assert!(h.core.apply_config(h.now, &broken).is_err());
    assert_eq!(h.core.poll_output(), None);
    assert_eq!(h.core.stats(), &stats);
    assert!(h.core.flow(flow).is_some());
    assert!(matches!(h.client("192.0.2.2:1000", b"q"), ClientVerdict::Forward { .. }));
}

#[test]
fn listeners_appear_and_removed_ones_close_their_flows() {
    let mut h = Harness::new(&two_backends("", ""));
    let dns = h.listener("dns");
    let flow = h.forward("192.0.2.1:1000", b"q");
    let replaced = config(
        r#"
        [listeners.dns2]
        address = "10.0.0.2:53"
        cluster = "pool"
        [clusters.pool]
        backends = [{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }]
        "#,
    );
    let summary = reload(&mut h, &replaced);
    assert_eq!(summary.listeners_removed, vec![dns]);
    assert_eq!(summary.listeners_added.len(), 1);
    assert_eq!(h.closes(), vec![(flow, CloseReason::ListenerRemoved)]);
    assert_eq!(
        h.client_on(dns, "192.0.2.1:1000", b"q", false),
        ClientVerdict::Drop(DropReason::UnknownListener)
    );
    let dns2 = h.listener("dns2");
    assert!(matches!(h.client_on(dns2, "192.0.2.1:1000", b"q", false), ClientVerdict::Forward { .. }));
}

#[test]
fn changing_a_listener_address_replaces_it() {
    let mut h = Harness::new(&two_backends("", ""));
    let old = h.listener("dns");
    let flow = h.forward("192.0.2.1:1000", b"q");
    let mut moved = two_backends("", "");
    moved.listeners.get_mut("dns").unwrap().address = "10.0.0.9:53".parse().unwrap();
    let summary = reload(&mut h, &moved);
    assert_eq!(summary.listeners_removed, vec![old]);
    assert_ne!(h.listener("dns"), old);
    assert_eq!(h.closes(), vec![(flow, CloseReason::ListenerRemoved)]);
}

#[test]
fn shorter_idle_timeouts_apply_to_existing_flows_at_their_new_deadline() {
    let mut h = Harness::new(&two_backends("", "idle_timeout = { front = \"60s\", back = \"60s\" }"));
    let flow = h.forward("192.0.2.1:1000", b"q");
    h.backend(flow, b"a");
    h.advance(Duration::from_secs(5));
    reload(&mut h, &two_backends("", "idle_timeout = { front = \"8s\", back = \"60s\" }"));
    assert!(h.core.flow(flow).is_some());
    h.run_until(Instant::from_millis(7_999));
    assert!(h.closes().is_empty());
    h.run_until(Instant::from_secs(8));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleFront)]);
}

#[test]
fn a_flow_already_past_its_new_deadline_closes_during_the_reload() {
    let mut h = Harness::new(&two_backends("", "idle_timeout = { front = \"60s\", back = \"60s\" }"));
    let flow = h.forward("192.0.2.1:1000", b"q");
    h.backend(flow, b"a");
    h.advance(Duration::from_secs(20));
    reload(&mut h, &two_backends("", "idle_timeout = { front = \"10s\", back = \"60s\" }"));
    assert_eq!(h.closes(), vec![(flow, CloseReason::IdleFront)]);
}

#[test]
fn reloading_the_same_configuration_changes_nothing() {
    let cfg = two_backends("", "");
    let mut h = Harness::new(&cfg);
    h.forward("192.0.2.1:1000", b"q");
    let summary = reload(&mut h, &cfg);
    assert!(summary.is_empty(), "{summary:?}");
    assert!(h.closes().is_empty());
}

#[test]
fn lowering_max_flows_sheds_new_flows_and_keeps_existing_ones() {
    let mut h = Harness::new(&two_backends("", ""));
    let flows: Vec<_> = (0..3).map(|i| h.forward(&format!("192.0.2.{i}:1000"), b"q")).collect();
    let mut capped = two_backends("", "");
    capped.process.max_flows = Some(2);
    reload(&mut h, &capped);
    assert!(h.closes().is_empty(), "a lower cap closes nothing");
    assert_eq!(h.client("192.0.2.9:1000", b"q"), ClientVerdict::Drop(DropReason::Shed));
    assert!(matches!(h.backend(flows[0], b"a"), BackendVerdict::Return { .. }));
    h.core.handle_admin(h.now, udplb_core::AdminCommand::CloseFlow(flows[0])).unwrap();
    h.core.handle_admin(h.now, udplb_core::AdminCommand::CloseFlow(flows[1])).unwrap();
    assert!(matches!(h.client("192.0.2.9:1000", b"q"), ClientVerdict::Forward { .. }));
}

#[test]
fn raising_responses_on_reload_makes_existing_flows_wait_for_their_replies() {
    let mut h = Harness::new(&two_backends("", "idle_timeout = { front = \"60s\", back = \"5s\" }"));
    let flow = h.forward("192.0.2.1:1000", b"q");
    h.backend(flow, b"a");
    h.forward("192.0.2.1:1000", b"q2");
    reload(&mut h, &two_backends("", "responses = 1\nidle_timeout = { front = \"60s\", back = \"5s\" }"));
    // Two requests, one reply: one more is owed, and the answer closes the flow.
    assert!(h.core.flow(flow).is_some());
    h.backend(flow, b"a2");
    assert_eq!(h.closes(), vec![(flow, CloseReason::ResponsesReached)]);
}

#[test]
fn a_late_reply_after_a_reload_to_responses_zero_closes_the_flow_it_retired() {
    // Found by the property test: a flow retired by a write-off waits for its late reply; a
    // reload meanwhile says no reply is owed at all (`responses = 0`). When the late reply
    // comes and takes the write-off back, the retired flow owes nothing and waits for
    // nothing: it must close then, not sit in the table past its deadline.
    let timeouts = "idle_timeout = { front = \"60s\", back = \"1s\" }";
    let mut h = Harness::new(&two_backends("", &format!("responses = 1\n{timeouts}")));
    let flow = h.forward("192.0.2.1:1000", b"q");
    h.run_until(h.now + Duration::from_millis(1_001));
    assert!(h.core.flow(flow).is_some_and(|f| f.retired), "written off and retired");
    reload(&mut h, &two_backends("", &format!("responses = 0\n{timeouts}")));
    h.take_outputs();
    assert!(matches!(h.backend(flow, b"late"), BackendVerdict::Return { .. }), "late, but returned");
    h.core.check_invariants().unwrap();
    assert_eq!(h.closes(), vec![(flow, CloseReason::RequestsReached)]);
}
