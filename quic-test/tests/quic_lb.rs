//! QUIC connections through the `udplb` binary across a NAT rebinding.
//!
//! Three quinn servers (server IDs 01, 02, 03) issue QUIC-LB connection IDs; udplb balances
//! them with Maglev. Twenty-four clients, each on its own UDP socket, connect through udplb and
//! learn which server holds their connection; then every client moves to a new source port
//! (`Endpoint::rebind`, what a NAT rebinding looks like from the balancer) and asks again,
//! three times.
//!
//! - With `[clusters.servers.quic_lb]`, udplb reads the server ID from the connection ID of
//!   the first datagram from the new port and sends it to the connection's server: every
//!   connection survives, on the server it had (plaintext, single-pass and four-pass
//!   configs).
//! - Without it, the new 4-tuple is hashed afresh: about two in three land on a server that
//!   has no such connection, which answers with a stateless reset (the servers share a reset
//!   key), and those connections break.
//!
//! Runs the `udplb` binary: `cargo build -p udplb` first, or run under `cargo test
//! --workspace` (see `udplb_binary`). The counts are printed (`--nocapture` shows them) and
//! recorded in docs/quic.md. Loopback only; each test is bounded by `TEST_LIMIT`, and udplb
//! is killed when its `Balancer` drops, panics included.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio::task::JoinSet;
use udplb_core::quic_lb::{Format, QuicLbConfig, ServerId};
use udplb_quic_test::{
    AskError, Balancer, QuicLbCidGenerator, TestCert, TestServer, ask, client_endpoint, connect,
    endpoint_config, free_udp_address,
};

/// Connections, each from its own client endpoint (its own socket). Without QUIC-LB each
/// breaks with probability 2/3, independently; the test wants at least a third broken,
/// which 24 connections miss about once in 5,000 runs (12 would miss once in 260).
const CONNECTIONS: usize = 24;
/// Exchanges on every connection after the rebinding.
const ROUNDS: usize = 3;
/// The servers: name, server ID.
const SERVERS: [(&str, &str); 3] = [("s1", "01"), ("s2", "02"), ("s3", "03")];
/// A handshake through udplb: the first Initial may be lost while nothing is warm; quinn
/// resends it within a second.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// One stream exchange: a loopback round trip takes well under a millisecond; a connection
/// whose datagrams reach a server that does not have it gets a stateless reset at once, so
/// this only bounds a connection that is lost some other way.
const ASK_LIMIT: Duration = Duration::from_secs(3);
/// The whole test.
const TEST_LIMIT: Duration = Duration::from_secs(50);
/// The servers' shared stateless-reset key.
const RESET_KEY: [u8; 32] = [0x42; 32];

/// What became of one connection after its client moved.
#[derive(Debug)]
enum Fate {
    /// Every exchange after the rebinding was answered by the connection's server.
    Kept,
    /// An exchange failed (in round `round`, from 1).
    Broke { round: usize, error: AskError },
    /// An exchange was answered by another server (cannot happen with QUIC: a server
    /// without the connection cannot decrypt its packets; checked all the same).
    Moved { to: String },
}

/// The counts a run prints and the assertions check.
#[derive(Debug)]
struct Outcome {
    /// Connections per server before the rebinding.
    placed: BTreeMap<String, usize>,
    /// udplb's QUIC-LB outcome for the clients' flows (`show flow`), before and after the
    /// rebinding: `routed`, or why not; `none` without `quic_lb`.
    routes: BTreeMap<(&'static str, String), usize>,
    kept: usize,
    broke: usize,
    moved: usize,
    fates: Vec<Fate>,
}

impl Outcome {
    fn summary(&self) -> String {
        let placed: Vec<String> = self.placed.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let routes = |when: &str| -> String {
            let counts: Vec<String> = self
                .routes
                .iter()
                .filter(|((w, _), _)| *w == when)
                .map(|((_, route), n)| format!("{route}: {n}"))
                .collect();
            counts.join(", ")
        };
        format!(
            "{} connections placed {{{}}}; after the rebinding {} kept their server, {} broke, {} moved; \
             udplb's QUIC-LB outcome for the first flows {{{}}}, for the flows from the new ports {{{}}}",
            self.fates.len(),
            placed.join(", "),
            self.kept,
            self.broke,
            self.moved,
            routes("before"),
            routes("after")
        )
    }

    /// How many of the flows from the clients' new ports udplb routed by connection ID.
    fn routed_after(&self) -> usize {
        self.routes.get(&("after", "routed".to_owned())).copied().unwrap_or(0)
    }
}

/// The QUIC-LB config the servers issue connection IDs with, and its TOML for udplb.
struct Scheme {
    config: QuicLbConfig,
    toml: String,
}

impl Scheme {
    fn new(config_id: u8, nonce_len: u8, key: Option<[u8; 16]>) -> Scheme {
        let config = QuicLbConfig::new(config_id, 1, nonce_len, key).expect("a valid QUIC-LB config");
        let key_text = match key {
            Some(key) => {
                let hex: String = key.iter().map(|octet| format!("{octet:02x}")).collect();
                format!(", key = \"{hex}\"")
            }
            None => String::new(),
        };
        let toml = format!(
            "[clusters.servers.quic_lb]\nconfigs = [{{ id = {config_id}, server_id_len = 1, nonce_len = {nonce_len}{key_text} }}]\n"
        );
        Scheme { config, toml }
    }
}

/// udplb's listeners and clusters: one listener in front of the three servers, Maglev, and
/// the QUIC-LB table when `route_on_cids`. The backends carry their server IDs only then:
/// without `quic_lb` they would have no effect.
fn balancer_body(listen: SocketAddr, servers: &[TestServer], scheme: &Scheme, route_on_cids: bool) -> String {
    let backends: Vec<String> = servers
        .iter()
        .zip(SERVERS)
        .map(|(server, (name, server_id))| {
            let server_id =
                if route_on_cids { format!(", server_id = \"{server_id}\"") } else { String::new() };
            format!("  {{ id = \"{name}\", address = \"{}\"{server_id} }},\n", server.address)
        })
        .collect();
    let quic_lb = if route_on_cids { scheme.toml.as_str() } else { "" };
    format!(
        "[listeners.quic]\naddress = \"{listen}\"\ncluster = \"servers\"\n\n\
         [clusters.servers]\nalgorithm = \"maglev\"\nbackends = [\n{}]\n{quic_lb}",
        backends.concat()
    )
}

/// Starts the servers and udplb, connects, rebinds every client and asks again.
async fn rebinding_run(scheme: &Scheme, route_on_cids: bool) -> Outcome {
    let cert = TestCert::new();
    let servers: Vec<TestServer> = SERVERS
        .iter()
        .enumerate()
        .map(|(index, (name, server_id))| {
            let server_id = ServerId::from_hex(server_id).unwrap();
            // Each server counts its nonces from its own start (any would do: the server IDs differ).
            let cids = QuicLbCidGenerator::new(scheme.config.clone(), server_id, index as u64 * 1_000_000)
                .expect("a generator for the server ID");
            TestServer::start(name, &cert, endpoint_config(Some(cids), &RESET_KEY)).expect("start a server")
        })
        .collect();
    let listen = free_udp_address();
    let body = balancer_body(listen, &servers, scheme, route_on_cids);
    let balancer = Balancer::start(&body);

    // Connect every client, each from its own socket, and see where it landed.
    let endpoints: Vec<Endpoint> =
        (0..CONNECTIONS).map(|_| client_endpoint(&cert).expect("a client endpoint")).collect();
    let mut connecting = JoinSet::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let endpoint = endpoint.clone();
        connecting.spawn(async move { (index, connect(&endpoint, listen, CONNECT_LIMIT).await) });
    }
    let mut connections: Vec<Option<Connection>> = vec![None; CONNECTIONS];
    while let Some(joined) = connecting.join_next().await {
        let (index, result) = joined.expect("a connect task");
        match result {
            Ok(connection) => connections[index] = Some(connection),
            Err(error) => panic!("connection {index} failed: {error}\nudplb's log:\n{}", balancer.log_text()),
        }
    }
    let connections: Vec<Connection> = connections.into_iter().map(Option::unwrap).collect();

    let mut first = Vec::new();
    for (index, connection) in connections.iter().enumerate() {
        match ask(connection, &format!("hello {index}"), ASK_LIMIT).await {
            Ok(server) => first.push(server),
            Err(error) => panic!("connection {index}'s first exchange failed: {error}"),
        }
    }
    let mut placed = BTreeMap::new();
    for server in &first {
        *placed.entry(server.clone()).or_insert(0) += 1;
    }

    // The NAT rebinding: every client now sends from a new port.
    let old_addresses: Vec<SocketAddr> = endpoints.iter().map(|e| e.local_addr().unwrap()).collect();
    for endpoint in &endpoints {
        let before = endpoint.local_addr().unwrap();
        endpoint.rebind(UdpSocket::bind("127.0.0.1:0").expect("a new client socket")).expect("rebind");
        assert_ne!(endpoint.local_addr().unwrap(), before, "the rebinding changed the client's port");
    }

    let mut asking = JoinSet::new();
    for (index, connection) in connections.iter().enumerate() {
        let (connection, expected) = (connection.clone(), first[index].clone());
        asking.spawn(async move {
            for round in 1..=ROUNDS {
                match ask(&connection, &format!("round {round} of {index}"), ASK_LIMIT).await {
                    Ok(server) if server == expected => {}
                    Ok(server) => return (index, Fate::Moved { to: server }),
                    Err(error) => return (index, Fate::Broke { round, error }),
                }
            }
            (index, Fate::Kept)
        });
    }
    let mut fates: Vec<Option<Fate>> = (0..CONNECTIONS).map(|_| None).collect();
    while let Some(joined) = asking.join_next().await {
        let (index, fate) = joined.expect("an exchange task");
        fates[index] = Some(fate);
    }
    let fates: Vec<Fate> = fates.into_iter().map(Option::unwrap).collect();

    // How udplb placed each client's flows, from the old port and from the new one.
    let mut routes = BTreeMap::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let (before, after) = (old_addresses[index], endpoint.local_addr().unwrap());
        for (when, client) in [("before", before), ("after", after)] {
            let (backend, route) = flow_placement(&balancer, client);
            if when == "after" && route == "routed" {
                assert_eq!(backend, first[index], "a routed flow goes to the connection's server");
            }
            *routes.entry((when, route)).or_insert(0) += 1;
        }
    }
    for connection in &connections {
        connection.close(0u32.into(), b"done");
    }
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"done");
    }
    drop(balancer);
    drop(servers);

    let count = |wanted: fn(&Fate) -> bool| fates.iter().filter(|fate| wanted(fate)).count();
    Outcome {
        placed,
        routes,
        kept: count(|f| matches!(f, Fate::Kept)),
        broke: count(|f| matches!(f, Fate::Broke { .. })),
        moved: count(|f| matches!(f, Fate::Moved { .. })),
        fates,
    }
}

/// The backend of `client`'s one live flow and its QUIC-LB outcome (`routed`, why it was
/// not, or `none` in a cluster without `quic_lb`), from `udplb ctl --json show flow`.
fn flow_placement(balancer: &Balancer, client: SocketAddr) -> (String, String) {
    let answer = balancer
        .ctl(&["--json", "show", "flow", &client.to_string()])
        .unwrap_or_else(|error| panic!("ctl show flow {client}: {error}"));
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("ctl --json prints JSON");
    let backend = answer["flows"][0]["backend"].as_str();
    let backend = backend.unwrap_or_else(|| panic!("no flow of {client}: {answer}")).to_owned();
    let route = answer["explanations"][0]["quic_lb"].as_str().unwrap_or("none").to_owned();
    (backend, route)
}

/// Runs `run` under `TEST_LIMIT`.
async fn bounded(run: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(TEST_LIMIT, run).await.expect("the test ran over its time limit")
}

/// With QUIC-LB routing, every connection keeps its server across the rebinding.
async fn every_connection_survives(scheme: Scheme, what: &str) {
    let outcome = bounded(rebinding_run(&scheme, true)).await;
    eprintln!("QUIC-LB routing, {what}: {}", outcome.summary());
    assert_eq!(outcome.kept, CONNECTIONS, "every connection kept its server: {:#?}", outcome.fates);
    assert_eq!(outcome.routed_after(), CONNECTIONS, "every new flow was routed by its connection ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quic_lb_plaintext_every_connection_survives_a_nat_rebinding() {
    let scheme = Scheme::new(0, 8, None);
    assert_eq!(scheme.config.format(), Format::Plaintext);
    every_connection_survives(scheme, "plaintext (config 0, server ID 1 octet, nonce 8)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quic_lb_single_pass_every_connection_survives_a_nat_rebinding() {
    let scheme = Scheme::new(1, 15, Some(*b"udplb quic-lb k1"));
    assert_eq!(scheme.config.format(), Format::SinglePass);
    every_connection_survives(scheme, "single-pass AES (config 1, server ID 1 octet, nonce 15)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quic_lb_four_pass_every_connection_survives_a_nat_rebinding() {
    let scheme = Scheme::new(2, 8, Some(*b"udplb quic-lb k2"));
    assert_eq!(scheme.config.format(), Format::FourPass);
    every_connection_survives(scheme, "four-pass (config 2, server ID 1 octet, nonce 8)").await;
}

/// Without QUIC-LB routing (4-tuple affinity only), a rebinding re-hashes every connection:
/// with three servers about two in three land elsewhere and break. The servers are the same
/// as above (QUIC-LB connection IDs and all): only udplb's configuration differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quic_lb_most_connections_break_on_a_nat_rebinding() {
    let scheme = Scheme::new(0, 8, None);
    let outcome = bounded(rebinding_run(&scheme, false)).await;
    eprintln!("4-tuple only: {}", outcome.summary());
    for (index, fate) in outcome.fates.iter().enumerate() {
        match fate {
            Fate::Broke { round, error } => eprintln!("  connection {index} broke in round {round}: {error}"),
            Fate::Moved { to } => eprintln!("  connection {index} was answered by {to}"),
            Fate::Kept => {}
        }
    }
    assert_eq!(outcome.routed_after(), 0, "nothing is routed by connection ID without quic_lb");
    assert_eq!(outcome.moved, 0, "no connection can move to another server: {:#?}", outcome.fates);
    assert!(
        outcome.broke >= CONNECTIONS / 3,
        "at least a third of the connections broke (expected about two thirds): {}",
        outcome.summary()
    );
}
