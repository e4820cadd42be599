//! QUIC-LB routing (a cluster's `quic_lb`): a datagram that starts a flow goes to the backend
//! whose server ID its destination connection ID carries; an unroutable one is placed by the
//! cluster's algorithm on its 4-tuple; an established flow's datagrams follow the flow.

mod common;

use common::{Harness, config};
use udplb_core::config::Config;
use udplb_core::flow::QuicRoute;
use udplb_core::quic_lb::{QuicLbConfig, ServerId};
use udplb_core::{AdminState, BackendId, BackendState, FlowId, Health};

/// Four backends a..d with server IDs 0a..0d, Maglev, and `quic_lb` as given.
fn cluster(quic_lb: &str) -> Config {
    config(&format!(
        "[listeners.dns]\naddress = \"10.0.0.1:443\"\ncluster = \"h3\"\n\n\
         [clusters.h3]\nalgorithm = \"maglev\"\n\
         backends = [\n\
           {{ id = \"a\", address = \"10.1.0.1:443\", server_id = \"0a\" }},\n\
           {{ id = \"b\", address = \"10.1.0.2:443\", server_id = \"0b\" }},\n\
           {{ id = \"c\", address = \"10.1.0.3:443\", server_id = \"0c\" }},\n\
           {{ id = \"d\", address = \"10.1.0.4:443\", server_id = \"0d\" }},\n\
         ]\n{quic_lb}"
    ))
}

const PLAINTEXT: &str = "[clusters.h3.quic_lb]\nconfigs = [{ id = 0, server_id_len = 1, nonce_len = 6 }]\n";
const KEYED: &str = "[clusters.h3.quic_lb]\nconfigs = [\n\
    { id = 1, server_id_len = 1, nonce_len = 6, key = \"fdf726a9893ec05c0632d3956680baf0\" },\n\
    { id = 2, server_id_len = 1, nonce_len = 15, key = \"8f95f09245765f80256934e50c66207f\" },\n]\n";

/// A short-header packet whose destination connection ID carries `server` under `config`.
fn short_packet(config: &QuicLbConfig, server: &str, nonce_seed: u8) -> Vec<u8> {
    let nonce: Vec<u8> = (0..config.nonce_len() as u8).map(|i| i.wrapping_mul(31) ^ nonce_seed).collect();
    let cid = config.encode(&ServerId::from_hex(server).unwrap(), &nonce, nonce_seed, false).unwrap();
    let mut packet = vec![0x40];
    packet.extend_from_slice(cid.as_bytes());
    packet.extend_from_slice(b"1-RTT payload");
    packet
}

/// A client's first packet: a long header whose destination connection ID is the client's
/// own choice (`dcid`).
fn initial(dcid: &[u8]) -> Vec<u8> {
    let mut packet = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
    packet.extend_from_slice(dcid);
    packet.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
    packet.resize(1200, 0);
    packet
}

fn backend_named(h: &Harness, id: &str) -> BackendId {
    h.core.backend_id("h3", id).expect("backend exists")
}

fn backend_of(h: &Harness, flow: FlowId) -> BackendId {
    h.core.flow(flow).expect("flow is live").backend
}

fn route_of(h: &Harness, flow: FlowId) -> Option<QuicRoute> {
    h.core.flow(flow).expect("flow is live").admission.quic
}

fn plaintext_config() -> QuicLbConfig {
    QuicLbConfig::new(0, 1, 6, None).unwrap()
}

#[test]
fn a_connection_id_takes_every_new_flow_to_its_server_whatever_the_hash_says() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    let b = backend_named(&h, "b");
    // 40 client sockets: Maglev alone would spread them over all four backends.
    for port in 0..40u16 {
        let packet = short_packet(&plaintext_config(), "0b", port as u8);
        let flow = h.forward(&format!("192.0.2.{}:{}", 1 + port % 7, 40_000 + port), &packet);
        assert_eq!(backend_of(&h, flow), b, "port {port}");
        assert_eq!(route_of(&h, flow), Some(QuicRoute::Routed));
    }
    let counted = h.core.stats().listeners[0].quic_lb;
    assert_eq!(counted[QuicRoute::Routed.index()], 40);
}

#[test]
fn a_nat_rebinding_keeps_the_connection_on_its_server() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    // The handshake: the client's Initial (its own random DCID) is placed by Maglev.
    let first = h.forward("198.51.100.7:5000", &initial(&[0xe1, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]));
    assert_eq!(route_of(&h, first), Some(QuicRoute::UnknownConfig), "config bits 7: unroutable");
    let server = backend_of(&h, first);
    let server_id = ["0a", "0b", "0c", "0d"][server.0 as usize];
    // The server's connection IDs from now on; the client's datagrams from its old port
    // follow their flow.
    let packet = short_packet(&plaintext_config(), server_id, 9);
    assert_eq!(h.forward("198.51.100.7:5000", &packet), first);
    // The NAT rebinds: a new port, a new flow, the same server, for every port it may pick.
    for port in 5001..5033u16 {
        let moved = h.forward(&format!("198.51.100.7:{port}"), &packet);
        assert_ne!(moved, first);
        assert_eq!(backend_of(&h, moved), server, "rebound to port {port}");
    }
}

#[test]
fn unroutable_connection_ids_fall_back_to_the_hash_and_say_why() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    let config = plaintext_config();
    // A server ID no backend has (0x7f), e.g. a client's random bytes under config 0.
    let unknown = h.forward("192.0.2.1:1000", &short_packet(&config, "7f", 1));
    assert_eq!(route_of(&h, unknown), Some(QuicRoute::UnknownServer));
    // Config ID 3: not one of the cluster's.
    let other = QuicLbConfig::new(3, 1, 6, None).unwrap();
    let rotated = h.forward("192.0.2.1:1001", &short_packet(&other, "0a", 1));
    assert_eq!(route_of(&h, rotated), Some(QuicRoute::UnknownConfig));
    // A short header that ends inside the connection ID.
    let short = h.forward("192.0.2.1:1002", &[0x00, 0x0a, 1, 2]);
    assert_eq!(route_of(&h, short), Some(QuicRoute::TooShort));
    // Not QUIC at all: an empty datagram.
    let empty = h.forward("192.0.2.1:1003", &[]);
    assert_eq!(route_of(&h, empty), Some(QuicRoute::NotQuic));
    // Each was placed (nothing dropped), and counted by outcome.
    let counted = h.core.stats().listeners[0].quic_lb;
    for route in [QuicRoute::UnknownServer, QuicRoute::UnknownConfig, QuicRoute::TooShort, QuicRoute::NotQuic]
    {
        assert_eq!(counted[route.index()], 1, "{route:?}");
    }
    assert_eq!(counted[QuicRoute::Routed.index()], 0);
}

#[test]
fn a_down_server_is_unroutable_but_an_operators_drain_keeps_its_connections() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    let c = backend_named(&h, "c");
    let packet = short_packet(&plaintext_config(), "0c", 4);
    // Drained, disabled or weight 0: no new connections, but its own connections still
    // reach it (their connection IDs name it).
    let draining = BackendState { eligible: false, health: Health::Up, admin: AdminState::Draining };
    h.core.handle_backend_state(h.now, c, draining);
    h.after_call();
    let drained = h.forward("192.0.2.9:7000", &packet);
    assert_eq!(backend_of(&h, drained), c);
    assert_eq!(route_of(&h, drained), Some(QuicRoute::Routed));
    // Down: no connection lives there any more; the hash places the flow elsewhere.
    h.set_eligible(c, false);
    for port in 7001..7020u16 {
        let flow = h.forward(&format!("192.0.2.9:{port}"), &packet);
        assert_ne!(backend_of(&h, flow), c);
        assert_eq!(route_of(&h, flow), Some(QuicRoute::ServerDown));
    }
}

#[test]
fn established_flows_follow_their_4_tuple_not_their_connection_id() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    let flow = h.forward("192.0.2.3:3000", &short_packet(&plaintext_config(), "0a", 1));
    let a = backend_named(&h, "a");
    assert_eq!(backend_of(&h, flow), a);
    // The same socket then names another server: it stays on its flow.
    assert_eq!(h.forward("192.0.2.3:3000", &short_packet(&plaintext_config(), "0d", 2)), flow);
    assert_eq!(backend_of(&h, flow), a);
}

#[test]
fn encrypted_connection_ids_route_in_both_ciphers() {
    let mut h = Harness::new(&cluster(KEYED));
    let four_pass = QuicLbConfig::new(1, 1, 6, Some(hex16("fdf726a9893ec05c0632d3956680baf0"))).unwrap();
    let single_pass = QuicLbConfig::new(2, 1, 15, Some(hex16("8f95f09245765f80256934e50c66207f"))).unwrap();
    for (port, (config, server)) in
        [(&four_pass, "0a"), (&four_pass, "0d"), (&single_pass, "0b"), (&single_pass, "0c")]
            .into_iter()
            .enumerate()
    {
        let flow = h.forward(&format!("192.0.2.4:{}", 100 + port), &short_packet(config, server, port as u8));
        let expected =
            ["a", "b", "c", "d"][usize::from(ServerId::from_hex(server).unwrap().as_bytes()[0] - 0x0a)];
        assert_eq!(
            backend_of(&h, flow),
            backend_named(&h, expected),
            "{server} under config {}",
            config.config_id()
        );
        assert_eq!(route_of(&h, flow), Some(QuicRoute::Routed));
    }
}

#[test]
fn a_reload_routes_an_added_servers_ids_and_forgets_a_removed_ones() {
    let mut h = Harness::new(&cluster(PLAINTEXT));
    let packet_e = short_packet(&plaintext_config(), "0e", 1);
    let before = h.forward("192.0.2.5:1000", &packet_e);
    assert_eq!(route_of(&h, before), Some(QuicRoute::UnknownServer));
    // e joins; d leaves.
    let reloaded = config(
        "[listeners.dns]\naddress = \"10.0.0.1:443\"\ncluster = \"h3\"\n\n\
         [clusters.h3]\nalgorithm = \"maglev\"\n\
         backends = [\n\
           { id = \"a\", address = \"10.1.0.1:443\", server_id = \"0a\" },\n\
           { id = \"b\", address = \"10.1.0.2:443\", server_id = \"0b\" },\n\
           { id = \"c\", address = \"10.1.0.3:443\", server_id = \"0c\" },\n\
           { id = \"e\", address = \"10.1.0.5:443\", server_id = \"0e\" },\n\
         ]\n\
         [clusters.h3.quic_lb]\nconfigs = [{ id = 0, server_id_len = 1, nonce_len = 6 }]\n",
    );
    h.core.apply_config(h.now, &reloaded).expect("reload applies");
    h.after_call();
    let e = backend_named(&h, "e");
    let after = h.forward("192.0.2.5:1001", &packet_e);
    assert_eq!(backend_of(&h, after), e);
    assert_eq!(route_of(&h, after), Some(QuicRoute::Routed));
    let gone = h.forward("192.0.2.5:1002", &short_packet(&plaintext_config(), "0d", 1));
    assert_eq!(route_of(&h, gone), Some(QuicRoute::UnknownServer));
}

#[test]
fn without_quic_lb_nothing_is_decoded_or_counted() {
    let mut h = Harness::new(&cluster(""));
    let flow = h.forward("192.0.2.6:1000", &short_packet(&plaintext_config(), "0b", 1));
    assert_eq!(route_of(&h, flow), None);
    assert_eq!(h.core.stats().listeners[0].quic_lb, [0; QuicRoute::COUNT]);
}

fn hex16(text: &str) -> [u8; 16] {
    let bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap()).collect();
    bytes.try_into().unwrap()
}

/// Every mistake in a `quic_lb` table and its server IDs is reported at once, each at its
/// field and line, in words that say what to write instead.
#[test]
fn quic_lb_mistakes_are_reported_at_their_fields() {
    let text = "[listeners.dns]\naddress = \"10.0.0.1:443\"\ncluster = \"h3\"\n\n\
        [clusters.h3]\n\
        backends = [\n\
          { id = \"a\", address = \"10.1.0.1:443\", server_id = \"0a\" },\n\
          { id = \"b\", address = \"10.1.0.2:443\" },\n\
          { id = \"c\", address = \"10.1.0.3:443\", server_id = \"0A\" },\n\
          { id = \"d\", address = \"10.1.0.4:443\", server_id = \"0a0b\" },\n\
          { id = \"e\", address = \"10.1.0.5:443\", server_id = \"zz\" },\n\
        ]\n\
        [clusters.h3.quic_lb]\n\
        configs = [\n\
          { id = 7, server_id_len = 1, nonce_len = 6 },\n\
          { id = 1, server_id_len = 2, nonce_len = 18 },\n\
          { id = 1, server_id_len = 1, nonce_len = 3, key = \"00112233\" },\n\
        ]\n";
    let rendered = Config::from_toml_str(text).expect_err("invalid").render("quic.toml");
    for expected in [
        "clusters.h3.quic_lb.configs[0].id",
        "config IDs are 0 to 6",
        "clusters.h3.quic_lb.configs[1].server_id_len",
        "must be of one length",
        "clusters.h3.quic_lb.configs[2].id",
        "already the id of quic_lb.configs[1]",
        "clusters.h3.quic_lb.configs[2].nonce_len",
        "a nonce is 4 to 18 octets",
        "clusters.h3.quic_lb.configs[2].key",
        "16 octets, 32 hex digits",
        "clusters.h3.backends[1].server_id",
        "is missing",
        "clusters.h3.backends[2].server_id",
        "already the server_id of backend \"a\"",
        "clusters.h3.backends[3].server_id",
        "is 2 octets; quic_lb.configs says server_id_len = 1",
        "clusters.h3.backends[4].server_id",
        "is not hex",
    ] {
        assert!(rendered.contains(expected), "missing {expected:?} in:\n{rendered}");
    }
    // A connection ID over 20 octets.
    let long = text.replace(
        "{ id = 7, server_id_len = 1, nonce_len = 6 }",
        "{ id = 0, server_id_len = 2, nonce_len = 18 }",
    );
    let rendered = Config::from_toml_str(&long).expect_err("invalid").render("quic.toml");
    assert!(rendered.contains("server_id_len + nonce_len = 20 is over 19"), "{rendered}");
}
