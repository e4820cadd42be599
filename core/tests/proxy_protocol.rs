//! PROXY protocol v2 on the datapath: which datagrams carry the header, what it says, and
//! the size limit.

mod common;

use common::{Harness, addr, one_listener};
use udplb_core::proxy_v2::{Addresses, Command, Header, TlvKind, Transport};
use udplb_core::{ClientVerdict, DropReason, Keys};

fn decode(bytes: &[u8]) -> (Header, Vec<u8>) {
    let (header, len) = Header::parse(bytes).expect("the core's header decodes");
    (header, bytes[len..].to_vec())
}

#[test]
fn first_mode_puts_the_header_on_the_first_datagram_of_each_flow_only() {
    let mut h = Harness::new(&one_listener(
        1,
        "proxy_protocol = { mode = \"first\", crc32c = true, unique_id = true }",
        "",
    ));
    let ClientVerdict::Forward { flow, prefix_len, .. } = h.client("192.0.2.1:4000", b"hello") else {
        panic!()
    };
    assert!(prefix_len > 0);
    let (header, payload) = decode(&h.last_sent);
    assert_eq!(payload, b"hello");
    assert_eq!(header.command, Command::Proxy);
    assert_eq!(header.transport, Transport::Dgram);
    assert_eq!(header.proxied_endpoints(), Some((addr("192.0.2.1:4000"), addr("10.0.0.1:53"))));
    assert!(header.checksum().is_some(), "CRC32C TLV present and verified by the decoder");
    // UNIQUE_ID: the worker's prefix (an input: `Keys::unique`), then the flow's serial.
    let expected = [Keys::from_seed(7).unique, flow.serial().to_be_bytes()].concat();
    assert_eq!(header.tlv(TlvKind::UniqueId), Some(&expected[..]));

    assert!(matches!(h.client("192.0.2.1:4000", b"second"), ClientVerdict::Forward { prefix_len: 0, .. }));
    assert_eq!(h.last_sent, b"second");
    // Another client's flow starts with its own header.
    assert!(
        matches!(h.client("192.0.2.2:4000", b"x"), ClientVerdict::Forward { prefix_len, .. } if prefix_len > 0)
    );
}

#[test]
fn every_mode_puts_the_header_on_every_datagram() {
    let mut h = Harness::new(&one_listener(1, "proxy_protocol = { mode = \"every\" }", ""));
    for i in 0..5u8 {
        let ClientVerdict::Forward { prefix_len, .. } = h.client("192.0.2.1:4000", &[i; 3]) else { panic!() };
        assert_eq!(prefix_len, 28, "16-byte fixed part + 12-byte IPv4 address block");
        let (header, payload) = decode(&h.last_sent);
        assert_eq!(payload, [i; 3]);
        assert_eq!(header.proxied_endpoints(), Some((addr("192.0.2.1:4000"), addr("10.0.0.1:53"))));
        assert!(header.tlvs.is_empty());
    }
}

#[test]
fn a_flow_that_closes_and_reopens_starts_with_a_header_again() {
    let mut h = Harness::new(&one_listener(1, "responses = 1\nproxy_protocol = { mode = \"first\" }", ""));
    let flow = h.forward("192.0.2.1:4000", b"q1");
    h.backend(flow, b"a1");
    assert!(matches!(h.client("192.0.2.1:4000", b"q2"), ClientVerdict::Forward { prefix_len: 28, .. }));
}

#[test]
fn an_ipv6_client_of_an_ipv4_vip_is_sent_as_ipv6_with_the_vip_mapped() {
    let mut h = Harness::new(&one_listener(1, "proxy_protocol = { mode = \"every\" }", ""));
    h.forward("[2001:db8::5]:4000", b"q");
    let (header, _) = decode(&h.last_sent);
    let Addresses::Ipv6 { source, destination } = header.addresses else { panic!("{:?}", header.addresses) };
    assert_eq!(source.to_string(), "[2001:db8::5]:4000");
    assert_eq!(destination.to_string(), "[::ffff:10.0.0.1]:53");
}

#[test]
fn a_header_that_would_exceed_max_datagram_size_is_a_typed_drop() {
    let proxy = "proxy_protocol = { mode = \"first\" }";
    let mut h = Harness::new(&one_listener(1, proxy, "max_datagram_size = 40"));
    // 13 + 28 = 41 > 40: no flow is created.
    assert_eq!(h.client("192.0.2.1:4000", &[0; 13]), ClientVerdict::Drop(DropReason::ProxyHeaderTooLarge));
    assert_eq!(h.core.stats().flows.created, 0);
    // 12 + 28 = 40 fits; later datagrams of the flow carry no header and may use all 40 bytes.
    h.forward("192.0.2.1:4000", &[0; 12]);
    assert!(matches!(h.client("192.0.2.1:4000", &[0; 40]), ClientVerdict::Forward { prefix_len: 0, .. }));

    let mut every =
        Harness::new(&one_listener(1, "proxy_protocol = { mode = \"every\" }", "max_datagram_size = 40"));
    let flow = every.forward("192.0.2.1:4000", &[0; 12]);
    assert_eq!(
        every.client("192.0.2.1:4000", &[0; 13]),
        ClientVerdict::Drop(DropReason::ProxyHeaderTooLarge)
    );
    assert!(every.core.flow(flow).is_some(), "the flow survives a dropped datagram");
    assert_eq!(every.core.stats().client_drops(DropReason::ProxyHeaderTooLarge), 1);
}

/// Two workers (or two processes) number their flows alike, from 1: their UNIQUE_IDs differ
/// by the prefix each is given, and a flow's ID is the same on every datagram it carries.
#[test]
fn unique_ids_of_two_workers_differ_though_their_serials_are_the_same() {
    let config = one_listener(1, "proxy_protocol = { mode = \"every\", unique_id = true }", "");
    let mut ids = Vec::new();
    for seed in [7, 8] {
        let mut h = common::Harness::with_seed(&config, seed);
        let ClientVerdict::Forward { flow, .. } = h.client("192.0.2.1:4000", b"hello") else { panic!() };
        assert_eq!(flow.serial(), 1);
        let first = decode(&h.last_sent).0.tlv(TlvKind::UniqueId).unwrap().to_vec();
        h.client("192.0.2.1:4000", b"again");
        assert_eq!(decode(&h.last_sent).0.tlv(TlvKind::UniqueId).unwrap(), &first[..], "same flow, same ID");
        ids.push(first);
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[0][8..], ids[1][8..], "the serials are equal; the prefixes tell the flows apart");
}
