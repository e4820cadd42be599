//! QUIC connections through an upgrade of the `udplb` binary.
//!
//! Three quinn servers behind udplb with `round_robin` (no QUIC-LB: the balancer's flow table
//! is all that keeps a connection on its server). Twenty-four clients connect, each on its own
//! UDP socket, and learn which server holds their connection; then udplb is upgraded, and every
//! client asks again, three times.
//!
//! - `udplb run --takeover`: the new process has the old one's flows, so every connection's
//!   next datagrams go to the server that has it, and every connection survives.
//! - A plain restart (the control): the new process places each client afresh, round robin;
//!   about two in three land on a server that has no such connection, which answers with a
//!   stateless reset (the servers share a reset key), and those connections break.
//!
//! Runs the `udplb` binary (see `udplb_binary`). Loopback only; each test is bounded by
//! `TEST_LIMIT`, and udplb is killed when its `Balancer` drops, panics included.

use std::collections::BTreeMap;
use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio::task::JoinSet;
use udplb_quic_test::{
    Balancer, TestCert, TestServer, ask, client_endpoint, connect, endpoint_config, free_udp_address,
};

/// Connections, each from its own client endpoint. After a plain restart each breaks with
/// probability about 2/3; the control wants at least a third broken.
const CONNECTIONS: usize = 24;
/// Exchanges on every connection after the upgrade.
const ROUNDS: usize = 3;
const SERVERS: [&str; 3] = ["s1", "s2", "s3"];
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const ASK_LIMIT: Duration = Duration::from_secs(3);
const TEST_LIMIT: Duration = Duration::from_secs(50);
const RESET_KEY: [u8; 32] = [0x42; 32];

/// How the connections fared after the upgrade.
#[derive(Debug, Default)]
struct Outcome {
    placed: BTreeMap<String, usize>,
    kept: usize,
    broke: usize,
    moved: usize,
    errors: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Upgrade {
    Takeover,
    PlainRestart,
}

async fn upgrade_run(upgrade: Upgrade) -> Outcome {
    let cert = TestCert::new();
    let servers: Vec<TestServer> = SERVERS
        .iter()
        .map(|name| {
            TestServer::start(name, &cert, endpoint_config(None, &RESET_KEY)).expect("start a server")
        })
        .collect();
    let listen = free_udp_address();
    let backends: Vec<String> = servers
        .iter()
        .zip(SERVERS)
        .map(|(server, name)| format!("  {{ id = \"{name}\", address = \"{}\" }},\n", server.address))
        .collect();
    let body = format!(
        "[listeners.quic]\naddress = \"{listen}\"\ncluster = \"servers\"\n\n\
         [clusters.servers]\nalgorithm = \"round_robin\"\nidle_timeout = {{ front = \"60s\", back = \"60s\" }}\n\
         backends = [\n{}]\n",
        backends.concat()
    );
    let mut balancer = Balancer::start(&body);

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
    let mut outcome = Outcome::default();
    for server in &first {
        *outcome.placed.entry(server.clone()).or_insert(0) += 1;
    }

    let upgraded = match upgrade {
        Upgrade::Takeover => balancer.take_over(false),
        Upgrade::PlainRestart => balancer.restart_plainly(),
    };
    if let Err(error) = upgraded {
        panic!("the upgrade failed: {error}");
    }

    let mut asking = JoinSet::new();
    for (index, connection) in connections.iter().enumerate() {
        let (connection, expected) = (connection.clone(), first[index].clone());
        asking.spawn(async move {
            for round in 1..=ROUNDS {
                match ask(&connection, &format!("round {round} of {index}"), ASK_LIMIT).await {
                    Ok(server) if server == expected => {}
                    Ok(server) => return Err((true, format!("connection {index} moved to {server}"))),
                    Err(error) => return Err((false, format!("connection {index}, round {round}: {error}"))),
                }
            }
            Ok(())
        });
    }
    while let Some(joined) = asking.join_next().await {
        match joined.expect("an exchange task") {
            Ok(()) => outcome.kept += 1,
            Err((moved, error)) => {
                if moved {
                    outcome.moved += 1;
                } else {
                    outcome.broke += 1;
                }
                outcome.errors.push(error);
            }
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
    outcome
}

async fn bounded(run: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(TEST_LIMIT, run).await.expect("the test ran over its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quic_connection_survives_a_takeover() {
    let outcome = bounded(upgrade_run(Upgrade::Takeover)).await;
    eprintln!(
        "takeover: placed {:?}; kept {}, broke {}, moved {}",
        outcome.placed, outcome.kept, outcome.broke, outcome.moved
    );
    assert_eq!(outcome.kept, CONNECTIONS, "every connection kept its server: {:#?}", outcome.errors);
}

/// The control: without the handover, the same run breaks connections, so the test above
/// would see a broken handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_restart_breaks_quic_connections() {
    let outcome = bounded(upgrade_run(Upgrade::PlainRestart)).await;
    eprintln!(
        "plain restart: placed {:?}; kept {}, broke {}, moved {}",
        outcome.placed, outcome.kept, outcome.broke, outcome.moved
    );
    assert!(
        outcome.broke + outcome.moved >= CONNECTIONS / 3,
        "a plain restart kept {} of {CONNECTIONS} connections: the harness would not see a broken handover",
        outcome.kept
    );
}
