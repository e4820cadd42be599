//! A refused request is not lost when another backend could answer it; refusals and
//! unanswered requests are reported to the health monitor.

mod common;

use std::time::Duration;

use common::{Harness, one_listener};
use udplb_core::proxy_v2::Header;
use udplb_core::{
    BackendId, BackendVerdict, ClientVerdict, CloseReason, Output, PassiveFailure, UpstreamError,
};

fn refuse(h: &mut Harness, flow: udplb_core::FlowId) {
    h.core.handle_upstream_error(h.now, flow, UpstreamError::Refused);
    // Drains the outputs, opening and confirming a re-send's new flow as the driver does.
    h.after_call();
}

#[test]
fn a_refused_request_is_resent_once_on_another_backend() {
    let mut h = Harness::new(&one_listener(2, "responses = 1", ""));
    let flow = h.forward("192.0.2.1:5000", b"query");
    let refused_by = h.core.flow(flow).unwrap().backend;
    h.take_outputs();
    refuse(&mut h, flow);
    let outputs = h.take_outputs();
    assert!(
        matches!(outputs[0], Output::CloseUpstream { flow: f, reason: CloseReason::UpstreamRefused, .. } if f == flow)
    );
    assert_eq!(outputs[1], Output::PassiveFailure { backend: refused_by, failure: PassiveFailure::Refused });
    let Output::Resend { incoming, datagram } = &outputs[2] else { panic!("{outputs:?}") };
    let retry = incoming.flow();
    assert_ne!(incoming.backend(), refused_by);
    assert_eq!(datagram, b"query");
    assert_eq!(outputs.len(), 3);
    assert_eq!(
        h.opened.last().map(|(flow, backend, _)| (*flow, *backend)),
        Some((retry, incoming.backend()))
    );
    assert!(h.core.flow(retry).is_some(), "booked once its upstream opened");
    let admission = h.core.flow(retry).unwrap().admission;
    assert!(admission.retry && !admission.reselected, "the re-send says so: {admission:?}");
    // The answer comes back on the retry flow, and the client's next query rides it.
    assert!(matches!(h.backend(retry, b"answer"), BackendVerdict::Return { .. }));
    let stats = h.core.stats();
    assert_eq!(stats.retries.resent, 1);
    assert_eq!(stats.listeners[0].client.received, 1, "the re-sent datagram is not counted twice");
    assert_eq!(stats.retries.bytes_kept, 0, "the slot is released once answered");
}

#[test]
fn the_clients_next_datagram_follows_the_retry_flow() {
    let mut h = Harness::new(&one_listener(3, "", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    refuse(&mut h, flow);
    let retry = h.core.flows().next().unwrap();
    assert_eq!(h.forward("192.0.2.1:5000", b"q2"), retry.flow);
}

#[test]
fn no_retry_after_a_reply_or_for_a_flow_that_was_itself_a_retry() {
    let mut h = Harness::new(&one_listener(3, "", ""));
    let answered = h.forward("192.0.2.1:5000", b"q");
    h.backend(answered, b"a");
    refuse(&mut h, answered);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::Resend { .. })));
    assert_eq!(h.core.stats().flows.active, 0);

    let first = h.forward("192.0.2.2:5000", b"q");
    refuse(&mut h, first);
    let retry = h.core.flows().next().unwrap().flow;
    h.take_outputs();
    refuse(&mut h, retry);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::Resend { .. })), "re-sent once, not twice");
    assert_eq!(h.core.stats().retries.resent, 1);
}

#[test]
fn with_a_single_backend_there_is_nowhere_to_retry() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    refuse(&mut h, flow);
    assert_eq!(h.core.stats().retries.no_other_backend, 1);
    assert_eq!(h.core.stats().flows.active, 0);
}

#[test]
fn retry_on_refused_can_be_turned_off() {
    let mut h = Harness::new(&one_listener(2, "retry_on_refused = false", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    refuse(&mut h, flow);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::Resend { .. })));
    assert_eq!(h.core.stats().retries.bytes_kept, 0);
}

#[test]
fn the_retry_budget_bounds_what_is_kept() {
    let cfg = common::config(
        r#"
        [process]
        retry_buffer_bytes = 10
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        [clusters.pool]
        backends = [{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }]
        "#,
    );
    let mut h = Harness::new(&cfg);
    let kept = h.forward("192.0.2.1:5000", b"12345678");
    let not_kept = h.forward("192.0.2.2:5000", b"12345678");
    assert_eq!(h.core.stats().retries.not_kept_over_budget, 1);
    assert_eq!(h.core.stats().retries.bytes_kept, 8);
    refuse(&mut h, not_kept);
    assert_eq!(h.core.stats().retries.resent, 0);
    refuse(&mut h, kept);
    assert_eq!(h.core.stats().retries.resent, 1);
}

#[test]
fn a_resent_datagram_carries_the_proxy_header_of_its_new_flow() {
    let mut h = Harness::new(&one_listener(2, "proxy_protocol = { mode = \"first\", unique_id = true }", ""));
    let flow = h.forward("192.0.2.1:5000", b"query");
    h.take_outputs();
    refuse(&mut h, flow);
    let Some(Output::Resend { incoming, datagram }) =
        h.outputs.iter().find(|o| matches!(o, Output::Resend { .. })).cloned()
    else {
        panic!("no resend")
    };
    let retry = incoming.flow();
    let (header, len) = Header::parse(&datagram).unwrap();
    assert_eq!(&datagram[len..], b"query");
    assert_eq!(
        header.proxied_endpoints(),
        Some((common::addr("192.0.2.1:5000"), common::addr("10.0.0.1:53")))
    );
    let unique_id = [udplb_core::Keys::from_seed(7).unique, retry.serial().to_be_bytes()].concat();
    assert_eq!(header.tlv(udplb_core::proxy_v2::TlvKind::UniqueId), Some(&unique_id[..]));
    // The retry flow's next datagram carries no header: its first one did.
    assert!(matches!(h.client("192.0.2.1:5000", b"again"), ClientVerdict::Forward { prefix_len: 0, .. }));
}

#[test]
fn unanswered_requests_are_reported_when_replies_were_owed() {
    let mut h = Harness::new(&one_listener(1, "responses = 1\nidle_timeout = { back = \"2s\" }", ""));
    let flow = h.forward("192.0.2.1:5000", b"q");
    let backend = h.core.flow(flow).unwrap().backend;
    h.run_until(h.now + Duration::from_secs(2));
    assert!(h.outputs.contains(&Output::PassiveFailure { backend, failure: PassiveFailure::Unanswered }));

    // Without a reply count nothing says a reply was owed: no report.
    let mut h = Harness::new(&one_listener(1, "idle_timeout = { back = \"2s\" }", ""));
    h.forward("192.0.2.1:5000", b"q");
    h.run_until(h.now + Duration::from_secs(2));
    assert_eq!(h.core.stats().flows.closed_for(CloseReason::IdleBack), 1);
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::PassiveFailure { .. })));
    let _ = BackendId(0);
}
