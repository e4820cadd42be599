//! Admission: every outcome for a client datagram, in the order admission checks them
//! (`docs/architecture.md`, "Flow lifecycle"): `Truncated`, `Invalid`, `Draining`, `Shed`,
//! `ProxyHeaderTooLarge`, `NoHealthyBackend`.

mod common;

use common::{Harness, addr, config, one_listener};
use udplb_core::{AdminCommand, BackendId, BackendVerdict, ClientVerdict, DropReason, ListenerId};

#[test]
fn first_datagram_stages_a_flow_that_is_booked_once_its_upstream_opens() {
    let mut h = Harness::new(&one_listener(2, "", ""));
    let verdict = h.client("192.0.2.1:40000", b"query");
    let ClientVerdict::Forward { flow, prefix_len, closes, .. } = verdict else { panic!("{verdict:?}") };
    assert_eq!((prefix_len, closes), (0, false));
    assert_eq!(h.last_sent, b"query");
    assert_eq!(h.opened, vec![(flow, BackendId(0), addr("10.1.0.1:5300"))]);
    assert!(h.outputs.is_empty(), "opening is the verdict's business, not an output");
    // The next datagram from the same client rides the same flow and opens nothing.
    assert_eq!(
        h.client("192.0.2.1:40000", b"again"),
        ClientVerdict::Forward { flow, prefix_len: 0, skip: 0, closes: false }
    );
    assert_eq!(h.opened.len(), 1);
    assert!(h.outputs.is_empty());
}

#[test]
fn a_flow_whose_upstream_fails_to_open_is_never_booked() {
    let mut h = Harness::new(&one_listener(2, "", ""));
    h.fail_opens = true;
    assert_eq!(h.client("192.0.2.1:40000", b"query"), ClientVerdict::Drop(DropReason::UpstreamOpenFailed));
    assert_eq!(h.core.flows().count(), 0);
    let stats = h.core.stats();
    assert_eq!(stats.flows.active, 0);
    assert_eq!(stats.flows.closed[udplb_core::CloseReason::UpstreamOpenFailed.index()], 1);
    let client = &stats.listeners[0].client;
    assert_eq!((client.received, client.passed, client.dropped(DropReason::UpstreamOpenFailed)), (1, 0, 1));
    assert!(h.outputs.is_empty(), "nothing was opened, so nothing is closed");
}

#[test]
fn an_incoming_confirmed_after_another_input_is_refused() {
    use udplb_core::{ClientDatagram, DATAGRAM_HEADROOM};
    let mut h = Harness::new(&one_listener(2, "", ""));
    let dns = h.listener("dns");
    let stage = |h: &mut Harness, client: &str| {
        let mut buffer = vec![0u8; DATAGRAM_HEADROOM + 1];
        let datagram = ClientDatagram {
            listener: dns,
            client: addr(client),
            local: None,
            buffer: &mut buffer,
            headroom: DATAGRAM_HEADROOM,
            truncated: false,
        };
        match h.core.handle_client_datagram(h.now, datagram) {
            ClientVerdict::Open(incoming) => incoming,
            other => panic!("{other:?}"),
        }
    };
    let first = stage(&mut h, "192.0.2.1:1");
    let second = stage(&mut h, "192.0.2.2:1");
    assert_eq!(first.flow(), second.flow(), "both would take the next slot and serial");
    assert!(matches!(h.core.accept(h.now, second, b"x"), ClientVerdict::Forward { .. }));
    assert_eq!(h.core.accept(h.now, first, b"x"), ClientVerdict::Drop(DropReason::UpstreamOpenFailed));
    assert_eq!(h.core.flows().count(), 1);
    h.core.check_invariants().unwrap();
}

#[test]
fn new_flows_are_spread_round_robin_over_backends_in_id_order() {
    let mut h = Harness::new(&one_listener(3, "", ""));
    let backends: Vec<_> = (0..6)
        .map(|port| {
            let flow = h.forward(&format!("192.0.2.1:{}", 40000 + port), b"x");
            h.core.flow(flow).unwrap().backend.0
        })
        .collect();
    assert_eq!(backends, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn truncated_and_oversized_datagrams_drop_as_truncated() {
    let mut h = Harness::new(&one_listener(1, "", "max_datagram_size = 4"));
    let dns = h.listener("dns");
    assert_eq!(h.client_on(dns, "192.0.2.1:1", b"ok", true), ClientVerdict::Drop(DropReason::Truncated));
    assert_eq!(h.client("192.0.2.1:1", b"12345"), ClientVerdict::Drop(DropReason::Truncated));
    assert_eq!(
        h.client("192.0.2.1:1", b"1234"),
        ClientVerdict::Forward {
            flow: h.core.flows().next().unwrap().flow,
            prefix_len: 0,
            skip: 0,
            closes: false
        }
    );
    let stats = &h.core.stats().listeners[0].client;
    assert_eq!((stats.received, stats.passed, stats.dropped(DropReason::Truncated)), (3, 1, 2));
}

#[test]
fn an_empty_datagram_is_forwarded_like_any_other() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:1", b"");
    assert_eq!(h.core.flow(flow).unwrap().requests, 1, "it counts as a request");
    assert!(matches!(h.backend(flow, b""), BackendVerdict::Return { .. }), "and an empty reply returns");
    assert_eq!(h.core.stats().listeners[0].client.dropped(DropReason::Empty), 0);
}

#[test]
fn a_listener_set_to_drop_empty_datagrams_counts_them_and_allocates_nothing() {
    let mut h = Harness::new(&one_listener(1, "", "empty_datagrams = \"drop\""));
    assert_eq!(h.client("192.0.2.1:1", b""), ClientVerdict::Drop(DropReason::Empty));
    assert_eq!(h.core.stats().flows.created, 0);
    assert_eq!(h.core.stats().listeners[0].client.dropped(DropReason::Empty), 1);
    assert!(h.outputs.is_empty());
    // A datagram with a payload still passes.
    h.forward("192.0.2.1:1", b"x");
}

#[test]
fn unknown_listener_and_missing_headroom_are_typed_drops() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    assert_eq!(
        h.client_on(ListenerId(9), "192.0.2.1:1", b"x", false),
        ClientVerdict::Drop(DropReason::UnknownListener)
    );
    assert_eq!(h.core.stats().unattributed.dropped(DropReason::UnknownListener), 1);
    let mut buffer = [0u8; 4];
    let verdict = h.core.handle_client_datagram(
        h.now,
        udplb_core::ClientDatagram {
            listener: h.listener("dns"),
            client: addr("192.0.2.1:1"),
            local: None,
            buffer: &mut buffer,
            headroom: 8,
            truncated: false,
        },
    );
    assert_eq!(verdict, ClientVerdict::Drop(DropReason::InsufficientHeadroom));
    h.core.check_invariants().unwrap();
}

#[test]
fn draining_listener_refuses_new_flows_but_serves_existing_ones() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:1", b"x");
    h.admin(AdminCommand::DrainListener(h.listener("dns")));
    assert_eq!(h.client("192.0.2.2:1", b"x"), ClientVerdict::Drop(DropReason::Draining));
    assert!(matches!(h.client("192.0.2.1:1", b"y"), ClientVerdict::Forward { flow: f, .. } if f == flow));
}

#[test]
fn shedding_at_max_flows_keeps_established_flows_working() {
    let cfg = config(
        r#"
        [process]
        max_flows = 2
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        backends = [{ id = "b1", address = "10.1.0.1:53" }]
        "#,
    );
    let mut h = Harness::new(&cfg);
    let first = h.forward("192.0.2.1:1", b"x");
    let second = h.forward("192.0.2.2:1", b"x");
    for _ in 0..100 {
        assert_eq!(h.client("198.51.100.9:7", b"flood"), ClientVerdict::Drop(DropReason::Shed));
    }
    assert!(matches!(h.client("192.0.2.1:1", b"x"), ClientVerdict::Forward { flow, .. } if flow == first));
    assert!(matches!(h.backend(second, b"reply"), udplb_core::BackendVerdict::Return { .. }));
    assert_eq!(h.core.stats().client_drops(DropReason::Shed), 100);
    assert_eq!(h.core.stats().flows.active, 2);
}

#[test]
fn listener_max_flows_is_its_own_cap_under_the_process_cap() {
    let mut h = Harness::new(&one_listener(1, "", "max_flows = 1"));
    h.forward("192.0.2.1:1", b"x");
    assert_eq!(h.client("192.0.2.2:1", b"x"), ClientVerdict::Drop(DropReason::Shed));
}

#[test]
fn no_eligible_backend_drops_as_no_healthy_backend() {
    let mut h = Harness::new(&one_listener(2, "fail_open = false", ""));
    h.set_eligible(BackendId(0), false);
    h.set_eligible(BackendId(1), false);
    assert_eq!(h.client("192.0.2.1:1", b"x"), ClientVerdict::Drop(DropReason::NoHealthyBackend));
    h.set_eligible(BackendId(1), true);
    let flow = h.forward("192.0.2.1:1", b"x");
    assert_eq!(h.core.flow(flow).unwrap().backend, BackendId(1));
    // A cluster with no backends at all is valid configuration, and drops the same way.
    let mut empty = Harness::new(&one_listener(0, "", ""));
    assert_eq!(empty.client("192.0.2.1:1", b"x"), ClientVerdict::Drop(DropReason::NoHealthyBackend));
}

#[test]
fn admission_checks_run_in_order_draining_before_shed_before_backend() {
    let mut h = Harness::new(&one_listener(0, "", "max_flows = 1"));
    // No backend and draining: draining wins.
    h.admin(AdminCommand::DrainListener(h.listener("dns")));
    assert_eq!(h.client("192.0.2.1:1", b"x"), ClientVerdict::Drop(DropReason::Draining));
    // Truncation is checked before anything else.
    let dns = h.listener("dns");
    assert_eq!(h.client_on(dns, "192.0.2.1:1", b"", true), ClientVerdict::Drop(DropReason::Truncated));
}

#[test]
fn flow_key_includes_the_vip_address() {
    let cfg = config(
        r#"
        [listeners.a]
        address = "10.0.0.1:53"
        cluster = "pool"
        [listeners.b]
        address = "10.0.0.2:53"
        cluster = "pool"
        [clusters.pool]
        backends = [{ id = "b1", address = "10.1.0.1:53" }]
        "#,
    );
    let mut h = Harness::new(&cfg);
    let (a, b) = (h.listener("a"), h.listener("b"));
    let ClientVerdict::Forward { flow: on_a, .. } = h.client_on(a, "192.0.2.1:1", b"x", false) else {
        panic!()
    };
    let ClientVerdict::Forward { flow: on_b, .. } = h.client_on(b, "192.0.2.1:1", b"x", false) else {
        panic!()
    };
    assert_ne!(on_a, on_b);
    assert_eq!(h.core.stats().flows.active, 2);
}

#[test]
fn affinity_without_port_shares_one_flow_and_replies_follow_the_latest_port() {
    let mut h = Harness::new(&one_listener(2, "", "affinity = \"client_address\""));
    let flow = h.forward("192.0.2.1:1000", b"x");
    assert_eq!(h.forward("192.0.2.1:2000", b"x"), flow);
    assert_eq!(
        h.backend(flow, b"reply"),
        udplb_core::BackendVerdict::Return {
            listener: h.listener("dns"),
            client: addr("192.0.2.1:2000"),
            local: addr("10.0.0.1:53")
        }
    );
    // With the default affinity, each client port is its own flow.
    let mut per_port = Harness::new(&one_listener(2, "", ""));
    assert_ne!(per_port.forward("192.0.2.1:1000", b"x"), per_port.forward("192.0.2.1:2000", b"x"));
}

#[test]
fn ipv4_mapped_client_is_the_same_flow_as_the_plain_ipv4_client() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:1000", b"x");
    assert_eq!(h.forward("[::ffff:192.0.2.1]:1000", b"x"), flow);
}
