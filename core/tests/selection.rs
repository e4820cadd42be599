//! Selection through the flow manager: fail-open, priority pools, and two instances agreeing.

mod common;

use common::{Harness, config};
use udplb_core::{ClientVerdict, Config, DropReason};

fn cluster(algorithm: &str, extra: &str, backends: &str) -> Config {
    config(&format!(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        algorithm = "{algorithm}"
        {extra}
        backends = [{backends}]
        "#
    ))
}

const THREE: &str = r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }, { id = "b3", address = "10.1.0.3:53" }"#;

#[test]
fn with_nothing_eligible_fail_open_routes_and_counts_each_decision() {
    let mut h = Harness::new(&cluster("round_robin", "", THREE));
    for id in ["b1", "b2", "b3"] {
        let backend = h.core.backend_id("pool", id).unwrap();
        h.set_eligible(backend, false);
    }
    for port in 0..5 {
        let verdict = h.client(&format!("192.0.2.1:{}", 1000 + port), b"q");
        assert!(matches!(verdict, ClientVerdict::Forward { .. }), "{verdict:?}");
    }
    assert_eq!(h.core.stats().listeners[0].fail_open_flows, 5);

    let mut closed = Harness::new(&cluster("round_robin", "fail_open = false", THREE));
    for id in ["b1", "b2", "b3"] {
        let backend = closed.core.backend_id("pool", id).unwrap();
        closed.set_eligible(backend, false);
    }
    assert_eq!(closed.client("192.0.2.1:1000", b"q"), ClientVerdict::Drop(DropReason::NoHealthyBackend));
}

#[test]
fn the_first_pool_with_an_eligible_backend_wins_and_backups_come_last() {
    let backends = r#"
        { id = "primary", address = "10.1.0.1:53" },
        { id = "second", address = "10.1.0.2:53", pool = 1 },
        { id = "spare", address = "10.1.0.3:53", backup = true }"#;
    let mut h = Harness::new(&cluster("round_robin", "", backends));
    let [primary, second, spare] =
        ["primary", "second", "spare"].map(|id| h.core.backend_id("pool", id).unwrap());
    let backend_of_new_flow = |h: &mut Harness, port: u16| {
        let flow = h.forward(&format!("192.0.2.9:{port}"), b"q");
        h.core.flow(flow).unwrap().backend
    };
    assert_eq!(backend_of_new_flow(&mut h, 1), primary);
    h.set_eligible(primary, false);
    assert_eq!(backend_of_new_flow(&mut h, 2), second);
    h.set_eligible(second, false);
    assert_eq!(backend_of_new_flow(&mut h, 3), spare);
    h.set_eligible(primary, true);
    assert_eq!(backend_of_new_flow(&mut h, 4), primary);
}

#[test]
fn least_flows_sees_live_flow_counts() {
    let mut h = Harness::new(&cluster("least_flows", "", THREE));
    let first: Vec<_> = (0..3).map(|i| h.forward(&format!("192.0.2.1:{}", 1000 + i), b"q")).collect();
    let backends: std::collections::BTreeSet<_> =
        first.iter().map(|f| h.core.flow(*f).unwrap().backend).collect();
    assert_eq!(backends.len(), 3, "one flow each");
    h.admin(udplb_core::AdminCommand::CloseFlow(first[1]));
    let next = h.forward("192.0.2.1:2000", b"q");
    assert_eq!(h.core.flow(next).unwrap().backend, udplb_core::BackendId(1), "the backend whose flow closed");
}

#[test]
fn two_instances_with_the_same_key_agree_on_every_client_under_consistent_hashing() {
    for algorithm in ["maglev", "hrw"] {
        let config = cluster(algorithm, "", THREE);
        // Different table keys (per process), same selection key.
        let mut a = Harness::with_seed(&config, 1);
        let mut b = Harness::with_seed(&config, 1);
        for i in 0..200u16 {
            let client = format!("198.51.100.{}:{}", i % 250, 2000 + i);
            let on_a = a.forward(&client, b"q");
            let on_b = b.forward(&client, b"q");
            let (name_a, _) = a.core.backend(a.core.flow(on_a).unwrap().backend).unwrap();
            let (name_b, _) = b.core.backend(b.core.flow(on_b).unwrap().backend).unwrap();
            assert_eq!(name_a, name_b, "{algorithm}: {client}");
        }
    }
}

#[test]
fn source_ip_affinity_keeps_a_client_host_on_one_backend_across_flows() {
    let with = |affinity: &str| {
        config(&format!(
            r#"
            [listeners.dns]
            address = "10.0.0.1:53"
            cluster = "pool"
            affinity = "{affinity}"
            [clusters.pool]
            algorithm = "maglev"
            responses = 1
            backends = [{THREE}]
            "#
        ))
    };
    // responses = 1: each query is its own flow; the next one is placed afresh.
    let backends_seen = |config: &Config| {
        let mut h = Harness::new(config);
        let mut seen = std::collections::BTreeSet::new();
        for port in 0..30u16 {
            let flow = h.forward(&format!("192.0.2.7:{}", 3000 + port), b"q");
            seen.insert(h.core.flow(flow).unwrap().backend);
            h.backend(flow, b"a");
        }
        seen.len()
    };
    assert_eq!(backends_seen(&with("client_address")), 1, "source-IP stickiness");
    assert!(backends_seen(&with("client_address_port")) > 1, "ports spread the host's flows");
}

#[test]
fn instances_with_the_same_key_publish_the_same_fingerprint_and_it_tracks_health() {
    let config = cluster("maglev", "", THREE);
    let mut a = Harness::with_seed(&config, 5);
    let b = Harness::with_seed(&config, 5);
    let other_key = Harness::with_seed(&config, 6);
    let pool = a.core.listener_cluster(a.listener("dns")).unwrap();
    let fingerprint = |h: &Harness| h.core.cluster_fingerprint(pool).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), fingerprint(&other_key));
    let before = fingerprint(&a);
    let b2 = a.core.backend_id("pool", "b2").unwrap();
    a.set_eligible(b2, false);
    assert_ne!(fingerprint(&a), before, "the table changed");
    a.set_eligible(b2, true);
    assert_eq!(fingerprint(&a), before, "and changed back");
}

/// What a flow records of its admission: the rule that chose, whatever a reload or the
/// backends' health do afterwards.
#[test]
fn a_flow_records_how_its_backend_was_chosen() {
    use udplb_core::config::Algorithm;
    let text = |algorithm: &str| format!("algorithm = \"{algorithm}\"\nfail_open = true\n",);
    let mut h = common::Harness::new(&common::one_listener(2, &text("maglev"), ""));
    let flow = h.forward("192.0.2.1:1000", b"q");
    let fingerprint = h.core.cluster_fingerprint(udplb_core::ClusterId(0)).unwrap();
    let admission = h.core.flow(flow).unwrap().admission;
    assert_eq!(admission.algorithm, Algorithm::Maglev);
    assert_eq!(admission.fingerprint_high, (fingerprint >> 32) as u32);
    assert!(!admission.fail_open && !admission.retry && !admission.reselected && !admission.backup);
    // Both backends down: a new client is placed by fail-open, and says so.
    for backend in [h.core.backend_id("pool", "b1").unwrap(), h.core.backend_id("pool", "b2").unwrap()] {
        h.set_eligible(backend, false);
    }
    let open = h.forward("192.0.2.2:1000", b"q");
    assert!(h.core.flow(open).unwrap().admission.fail_open);
    // A reload to round robin: the first flow keeps its record.
    h.core.apply_config(h.now, &common::one_listener(2, &text("round_robin"), "")).unwrap();
    assert_eq!(h.core.flow(flow).unwrap().admission.algorithm, Algorithm::Maglev);
}
