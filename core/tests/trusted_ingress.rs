//! Trusted ingress (`accept_proxy`): udplb behind another L4 balancer that sends PROXY v2.

mod common;

use std::net::SocketAddr;

use common::{Harness, addr, one_listener};
use udplb_core::proxy_v2::{Header, TlvOptions, write_proxy_header};
use udplb_core::{BackendVerdict, ClientVerdict, DropReason};

const UPSTREAM: &str = "10.9.0.5:7000";

fn behind_upstream(required: bool, cluster_extra: &str) -> Harness {
    let listener = format!("accept_proxy = {{ from = [\"10.9.0.0/16\"], required = {required} }}");
    Harness::new(&one_listener(2, cluster_extra, &listener))
}

/// A datagram as an upstream balancer sends it: a PROXY v2 header naming `client`, then
/// `payload`.
fn proxied(client: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 128];
    let vip: SocketAddr = "10.0.0.1:53".parse().unwrap();
    let len = write_proxy_header(&mut out, addr(client), vip, TlvOptions::default()).unwrap();
    out.truncate(len);
    out.extend_from_slice(payload);
    out
}

#[test]
fn the_header_names_the_client_for_the_flow_and_the_backend_and_replies_go_upstream() {
    let mut h = behind_upstream(false, "proxy_protocol = { mode = \"every\" }");
    let ClientVerdict::Forward { flow, skip, .. } =
        h.client(UPSTREAM, &proxied("203.0.113.9:4000", b"query"))
    else {
        panic!("not forwarded")
    };
    assert!(skip > 0, "the upstream's header is left out");
    let info = h.core.flow(flow).unwrap();
    assert_eq!(info.client, addr("203.0.113.9:4000"), "the flow is the header's client");
    assert_eq!(info.via, Some(addr(UPSTREAM)));
    // The backend gets udplb's own header naming the real client, then the payload alone.
    let (header, consumed) = Header::parse(&h.last_sent).unwrap();
    assert_eq!(header.proxied_endpoints().map(|(source, _)| source), Some(addr("203.0.113.9:4000")));
    assert_eq!(&h.last_sent[consumed..], b"query");
    // The reply goes back through the upstream.
    let BackendVerdict::Return { client, .. } = h.backend(flow, b"answer") else { panic!("not returned") };
    assert_eq!(client, addr(UPSTREAM));
    // Another client through the same upstream socket is another flow; the first keeps its own.
    let ClientVerdict::Forward { flow: other, .. } = h.client(UPSTREAM, &proxied("198.51.100.4:5000", b"q"))
    else {
        panic!("not forwarded")
    };
    assert_ne!(other, flow);
    let ClientVerdict::Forward { flow: again, .. } = h.client(UPSTREAM, &proxied("203.0.113.9:4000", b"q2"))
    else {
        panic!("not forwarded")
    };
    assert_eq!(again, flow, "the client's next datagram rides its flow");
    h.core.check_invariants().unwrap();
}

#[test]
fn headers_from_sources_not_trusted_are_refused_and_counted() {
    let mut h = behind_upstream(false, "");
    let verdict = h.client("192.0.2.66:9", &proxied("203.0.113.9:4000", b"spoof"));
    assert_eq!(verdict, ClientVerdict::Drop(DropReason::ProxyUntrusted), "anyone could pose as anyone");
    // Without a header, a direct client is served as itself.
    let ClientVerdict::Forward { flow, skip: 0, .. } = h.client("192.0.2.66:9", b"plain") else { panic!() };
    assert_eq!(h.core.flow(flow).unwrap().via, None);
    // A trusted upstream's header that does not decode.
    let mut broken = proxied("203.0.113.9:4000", b"x");
    broken[12] = 0x99; // version 9
    assert_eq!(h.client(UPSTREAM, &broken), ClientVerdict::Drop(DropReason::ProxyInvalid));
    let drops = &h.core.stats().listeners[0].client;
    assert_eq!((drops.dropped(DropReason::ProxyUntrusted), drops.dropped(DropReason::ProxyInvalid)), (1, 1));
}

#[test]
fn where_headers_are_required_only_trusted_upstreams_with_one_are_served() {
    let mut h = behind_upstream(true, "");
    assert_eq!(h.client(UPSTREAM, b"no header"), ClientVerdict::Drop(DropReason::ProxyMissing));
    assert_eq!(h.client("192.0.2.66:9", b"direct"), ClientVerdict::Drop(DropReason::ProxyUntrusted));
    assert!(matches!(h.client(UPSTREAM, &proxied("203.0.113.9:4000", b"ok")), ClientVerdict::Forward { .. }));
}

#[test]
fn per_source_limits_apply_to_the_client_the_header_names() {
    let listener = "accept_proxy = { from = [\"10.9.0.0/16\"] }\nsource_limits = { max_flows = 1 }";
    let mut h = Harness::new(&one_listener(1, "", listener));
    assert!(matches!(h.client(UPSTREAM, &proxied("203.0.113.9:4000", b"a")), ClientVerdict::Forward { .. }));
    // Another socket of the same client: over its limit, though the upstream is the same.
    assert_eq!(
        h.client(UPSTREAM, &proxied("203.0.113.9:4001", b"b")),
        ClientVerdict::Drop(DropReason::SourceFlows)
    );
    // Another client through the same upstream: its own budget.
    assert!(matches!(h.client(UPSTREAM, &proxied("203.0.113.10:4000", b"c")), ClientVerdict::Forward { .. }));
    h.core.check_invariants().unwrap();
}
