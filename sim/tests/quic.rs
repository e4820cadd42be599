//! The QUIC models and their expectations: a `quic` client against `quic` servers through a
//! `quic_lb` cluster keeps its connection across a NAT rebinding, and without QUIC-LB loses
//! it; the new keys and expectation kinds are checked when the file loads, so a misspelled
//! server or a `quic` server without what it needs is an error, never a count that stays zero.

use std::path::{Path, PathBuf};

use udplb_sim::scenario::Scenario;

/// Two `quic` servers behind a `quic_lb` cluster, one QUIC client that rebinds at 1s.
const VALID: &str = r#"name = "quic-small"
duration = "2s"

[lb.listeners.quic]
address = "10.0.0.1:443"
cluster = "servers"

[lb.clusters.servers]
algorithm = "maglev"
backends = [
  { id = "s1", address = "10.1.0.1:443", server_id = "01" },
  { id = "s2", address = "10.1.0.2:443", server_id = "02" },
]

[lb.clusters.servers.quic_lb]
configs = [{ id = 0, server_id_len = 1, nonce_len = 6 }]

[[backend]]
name = "s1"
address = "10.1.0.1:443"
model = "quic"
server_id = "01"
cid_config = { id = 0, server_id_len = 1, nonce_len = 6 }

[[backend]]
name = "s2"
address = "10.1.0.2:443"
model = "quic"
server_id = "02"
cid_config = { id = 0, server_id_len = 1, nonce_len = 6 }

[[client]]
name = "phone"
address = "192.0.2.10"
listener = "quic"
kind = "quic"
interval = "20ms"
count = 90

[[timeline]]
at = "1s"
action = "rebind"
client = "phone"

[[expect]]
kind = "quic_unknown_connections"
issued_by = "s1"
at_most = 0

[[expect]]
kind = "answered_per_client"
at_least = 0.98
"#;

/// Writes `text` to a file of its own and loads it.
fn load(case: &str, text: &str) -> (PathBuf, Result<Scenario, String>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{case}.toml"));
    std::fs::write(&path, text).unwrap();
    let result = Scenario::load(&path).map_err(|error| error.to_string());
    (path, result)
}

/// `VALID` with `from` (once) replaced by `to` fails to load, saying `says`.
fn refused(case: &str, from: &str, to: &str, says: &str) {
    assert_eq!(VALID.matches(from).count(), 1, "{from:?} must occur once");
    let (_, result) = load(case, &VALID.replace(from, to));
    let error = result.expect_err(case);
    assert!(error.contains(says), "{case}: {error:?} should say {says:?}");
}

#[test]
fn a_quic_connection_keeps_its_server_across_a_rebinding_with_quic_lb_and_loses_it_without() {
    let (path, result) = load("valid", VALID);
    let scenario = result.unwrap();
    let (report, world) = udplb_sim::run_world(&scenario, &path, None, false);
    assert!(report.passed(), "{:?} {:?}", report.verdicts, report.violations);
    let client = &world.clients[0];
    assert!(client.quic.as_ref().is_some_and(|quic| quic.server_cid.is_some()), "the handshake completed");
    assert!(client.answered >= 89, "{} of 90 answered", client.answered);
    let connections: usize =
        world.backends.iter().filter_map(|b| b.quic.as_ref()).map(|q| q.connections()).sum();
    assert_eq!(connections, 1, "one connection, opened once");
    assert!(report.trace.contains("quic-lb new flows: "), "{}", report.trace);

    // The same run against each seed's placement: without QUIC-LB the rebinding's new flow is
    // placed by Maglev on the new 4-tuple, so on some seeds it reaches the other server.
    let mut plain = scenario.clone();
    for cluster in plain.lb.clusters.values_mut() {
        cluster.quic_lb = None;
        for backend in &mut cluster.backends {
            backend.server_id = None;
        }
    }
    let broken = (1..=16).find_map(|seed| {
        let (report, world) = udplb_sim::run_world(&plain, &path, Some(seed), false);
        let moved = world.record.quic_unknown.len();
        (moved > 0).then_some((report, world))
    });
    let (report, world) = broken.expect("in 16 seeds, some rebinding lands on the other server");
    assert!(!report.passed(), "packets for unknown connections, and unanswered requests");
    assert_eq!(
        world.backends.iter().map(|b| b.unknown_connections).sum::<u64>(),
        world.record.quic_unknown.len() as u64
    );
    assert!(
        world.clients[0].answered < 60,
        "{} answered: the connection broke at 1s",
        world.clients[0].answered
    );
}

#[test]
fn quic_names_and_keys_are_checked_when_the_file_loads() {
    refused(
        "issued_by_typo",
        "issued_by = \"s1\"",
        "issued_by = \"s9\"",
        "no `quic` [[backend]] host `s9`; there are: `s1`, `s2`",
    );
    refused("backend_typo", "issued_by = \"s1\"", "backend = \"S1\"", "no `quic` [[backend]] host `S1`");
    refused(
        "no_bound",
        "issued_by = \"s1\"\nat_most = 0\n",
        "issued_by = \"s1\"\n",
        "`quic_unknown_connections` needs `at_least`, `at_most` or both",
    );
    refused(
        "answered_per_client_bound",
        "at_least = 0.98",
        "at_least = 1.98",
        "a fraction is between 0 and 1",
    );
    // A server without what it issues IDs with, or with IDs of the wrong length.
    refused(
        "no_server_id",
        "model = \"quic\"\nserver_id = \"02\"\n",
        "model = \"quic\"\n",
        "[[backend]] `s2`: a `quic` server needs `server_id` and `cid_config`",
    );
    refused(
        "server_id_length",
        "server_id = \"02\"\ncid_config",
        "server_id = \"0202\"\ncid_config",
        "server_id 0202 is 2 octets",
    );
    let s2 = "server_id = \"02\"\ncid_config = { id = 0, server_id_len = 1, nonce_len = 6 }";
    let keyed = "server_id = \"02\"\ncid_config = { id = 0, server_id_len = 1, nonce_len = 6, key = \"00\" }";
    refused("cid_config_key", s2, keyed, "`s2`: cid_config:");
    let misspelled = "server_id = \"02\"\ncid_config = { idd = 0, server_id_len = 1, nonce_len = 6 }";
    refused("cid_config_field", s2, misspelled, "unknown field `idd`");
    // Only a `quic` server takes them.
    refused(
        "not_quic",
        "name = \"s2\"\naddress = \"10.1.0.2:443\"\nmodel = \"quic\"",
        "name = \"s2\"\naddress = \"10.1.0.2:443\"\nmodel = \"echo\"",
        "[[backend]] `s2`: `server_id` and `cid_config` are a `quic` server's",
    );
    let rotation = "\n[[timeline]]\nat = \"1s\"\naction = \"set_backend\"\nbackend = \"s2\"\n\
                    cid_config = { id = 1, server_id_len = 2, nonce_len = 6 }\n";
    let (_, result) = load("rotation_length", &format!("{VALID}{rotation}"));
    let error = result.unwrap_err();
    assert!(error.contains("timeline[1]: `s2` cid_config has server_id_len = 2"), "{error}");
    // No `quic` server at all: nothing could ever count.
    let quic = |id: &str| {
        format!(
            "model = \"quic\"\nserver_id = \"{id}\"\ncid_config = {{ id = 0, server_id_len = 1, nonce_len = 6 }}\n"
        )
    };
    let echo = VALID.replace(&quic("01"), "").replace(&quic("02"), "");
    let (_, result) = load("no_quic_server", &echo);
    let error = result.unwrap_err();
    let says = "a `quic_unknown_connections` expectation, but no [[backend]] is a `quic` server";
    assert!(error.contains(says), "{error}");
}

#[test]
fn answered_takes_an_upper_bound_too() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quic_nat_rebinding_4tuple.toml");
    let scenario = Scenario::load(&file).unwrap();
    let report = udplb_sim::run(&scenario, &file, None);
    let answered = report.verdicts.iter().find(|v| v.what.ends_with("of requests answered")).unwrap();
    assert!(answered.what.starts_with("at most "), "{}", answered.what);
    assert!(answered.passed, "{}", answered.detail);
}
