//! A listener on a wildcard address (`0.0.0.0`, `[::]`) serves every address of its host:
//! each address a client sends to is a VIP of its own. The flow is keyed by it, the PROXY
//! header names it, and replies leave from it — a client with a connected socket drops a
//! reply from any other address.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Harness, addr, config};
use udplb_core::proxy_v2::Header;
use udplb_core::{BackendVerdict, UpstreamError};

fn wildcard(address: &str, cluster_extra: &str) -> Harness {
    Harness::new(&config(&format!(
        "[listeners.dns]\naddress = \"{address}\"\ncluster = \"pool\"\n\n[clusters.pool]\n{cluster_extra}\n\
         backends = [{{ id = \"b1\", address = \"10.1.0.1:5300\" }}, {{ id = \"b2\", address = \"10.1.0.2:5300\" }}]\n"
    )))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The destination the last forwarded datagram's PROXY header names.
fn proxied_destination(h: &Harness) -> SocketAddr {
    let (header, _) = Header::parse(&h.last_sent).expect("a PROXY header");
    let (_, destination) = header.proxied_endpoints().expect("addresses");
    SocketAddr::new(destination.ip().to_canonical(), destination.port())
}

#[test]
fn each_address_of_a_wildcard_listener_is_its_own_vip() {
    let mut h = wildcard("0.0.0.0:53", "proxy_protocol = { mode = \"first\" }");
    let dns = h.listener("dns");
    h.local = Some(ip("127.0.0.2"));
    let to_two = h.forward("192.0.2.1:4000", b"q");
    assert_eq!(proxied_destination(&h), addr("127.0.0.2:53"), "the header names the address used");
    h.local = Some(ip("127.0.0.3"));
    let to_three = h.forward("192.0.2.1:4000", b"q");
    assert_eq!(proxied_destination(&h), addr("127.0.0.3:53"));
    assert_ne!(to_two, to_three, "one client socket, two addresses: two flows");
    assert_eq!(h.core.flow(to_two).unwrap().local, addr("127.0.0.2:53"));
    assert_eq!(h.core.flow(to_three).unwrap().local, addr("127.0.0.3:53"));
    // Each flow's replies leave from the address its client sent to.
    let client = addr("192.0.2.1:4000");
    assert_eq!(
        h.backend(to_three, b"r"),
        BackendVerdict::Return { listener: dns, client, local: addr("127.0.0.3:53") }
    );
    assert_eq!(
        h.backend(to_two, b"r"),
        BackendVerdict::Return { listener: dns, client, local: addr("127.0.0.2:53") }
    );
    // The client's next datagram to 127.0.0.2 rides its flow there.
    h.local = Some(ip("127.0.0.2"));
    assert_eq!(h.forward("192.0.2.1:4000", b"q"), to_two);
}

#[test]
fn a_dual_stack_wildcard_listener_keeps_each_family_apart_and_names_the_address_used() {
    let mut h = wildcard("[::]:443", "proxy_protocol = { mode = \"every\" }");
    h.local = Some(ip("::1"));
    let v6 = h.forward("[2001:db8::7]:5000", b"q");
    assert_eq!(proxied_destination(&h), addr("[::1]:443"));
    // An IPv4 client on the dual-stack socket: both addresses IPv4-mapped, as the kernel
    // reports them; the header names them as IPv4.
    h.local = Some(ip("::ffff:127.0.0.2"));
    let v4 = h.forward("[::ffff:192.0.2.1]:5000", b"q");
    assert_eq!(proxied_destination(&h), addr("127.0.0.2:443"));
    assert_ne!(v6, v4);
    let BackendVerdict::Return { local, .. } = h.backend(v4, b"r") else { panic!("returned") };
    assert_eq!(local.ip().to_canonical(), ip("127.0.0.2"));
}

#[test]
fn a_listener_on_one_address_ignores_what_the_platform_says_about_the_destination() {
    let mut h = Harness::new(&common::one_listener(1, "proxy_protocol = { mode = \"first\" }", ""));
    h.local = Some(ip("10.9.9.9"));
    let flow = h.forward("192.0.2.1:4000", b"q");
    assert_eq!(proxied_destination(&h), addr("10.0.0.1:53"));
    h.local = None;
    assert_eq!(h.forward("192.0.2.1:4000", b"q"), flow, "one flow, whatever the platform said");
    assert_eq!(h.core.flow(flow).unwrap().local, addr("10.0.0.1:53"));
}

#[test]
fn a_wildcard_listener_whose_platform_cannot_tell_keeps_the_wildcard() {
    let mut h = wildcard("0.0.0.0:53", "");
    let flow = h.forward("192.0.2.1:4000", b"q");
    assert_eq!(h.core.flow(flow).unwrap().local, addr("0.0.0.0:53"));
}

#[test]
fn a_request_resent_after_a_refusal_keeps_the_address_its_client_used() {
    let mut h = wildcard("0.0.0.0:53", "responses = 1\nproxy_protocol = { mode = \"first\" }");
    h.local = Some(ip("127.0.0.3"));
    let flow = h.forward("192.0.2.1:4000", b"q");
    h.take_outputs();
    h.core.handle_upstream_error(h.now, flow, UpstreamError::Refused);
    h.after_call();
    let outputs = h.take_outputs();
    let Some(udplb_core::Output::Resend { incoming, datagram }) =
        outputs.iter().find(|o| matches!(o, udplb_core::Output::Resend { .. }))
    else {
        panic!("re-sent: {outputs:?}")
    };
    assert_eq!(incoming.local(), addr("127.0.0.3:53"));
    h.last_sent = datagram.clone();
    assert_eq!(proxied_destination(&h), addr("127.0.0.3:53"));
    let retry = incoming.flow();
    let BackendVerdict::Return { local, .. } = h.backend(retry, b"r") else { panic!("returned") };
    assert_eq!(local, addr("127.0.0.3:53"));
}
