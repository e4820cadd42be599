//! Parser tests: the text an operator writes and what comes back, typed values or errors
//! with the right field, line and column. The rendered errors are snapshot-tested in
//! `snapshots/config/`; each snapshot shows the input with line numbers, the rendered errors,
//! and a caret under the column each error points at, so a reviewer can check locations by
//! eye.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/config");

fn errors(text: &str) -> ConfigErrors {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("expected errors, parsed {config:#?}"),
        Err(errors) => errors,
    }
}

fn the_error(text: &str) -> ConfigError {
    let mut errors = errors(text).0;
    assert_eq!(errors.len(), 1, "expected exactly one error: {errors:#?}");
    errors.remove(0)
}

fn valid(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{}", errors.render("test.toml")),
    }
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("test addresses are valid")
}

fn at(line: usize, column: usize) -> Location {
    Location { line, column }
}

/// Snapshot of what `udplb check` prints for `text`, with the input and carets.
fn assert_rendered(name: &str, text: &str) {
    let errors = errors(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut report = String::new();
    for (number, line) in lines.iter().enumerate() {
        report.push_str(&format!("{:>3} | {line}\n", number + 1));
    }
    report.push_str("---\n");
    for (error, rendered) in errors.iter().zip(errors.render("udplb.toml").lines()) {
        report.push_str(rendered);
        report.push('\n');
        let Location { line, column } = error.location;
        let source = lines.get(line - 1).copied().unwrap_or("");
        report.push_str(&format!("{line:>3} | {source}\n    | {}^\n", " ".repeat(column - 1)));
    }
    insta::with_settings!({
        snapshot_path => SNAPSHOTS,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, report);
    });
}

/// Every field set, none at its default.
const FULL: &str = r#"
[process]
max_flows = 100000

[listeners.dns]
address = "0.0.0.0:53"
cluster = "dns"
affinity = "client_address"
max_flows = 50000
max_datagram_size = 4096
drain_timeout = "30s"

[listeners."syslog.v6"]
address = "[::1]:514"
cluster = "syslog"

[clusters.dns]
responses = 1
responses_mode = "per_flow"
requests = 8
idle_timeout = { front = "10s", back = "2s" }
lifetime = "1m30s"
proxy_protocol = { mode = "every", crc32c = true, unique_id = true }
backends = [
  { id = "dns-1", address = "10.0.0.1:53", weight = 3 },
  { id = "dns-2", address = "[2001:db8::2]:53", weight = 0 },
]

[clusters.syslog]
responses = 0

[[clusters.syslog.backends]]
id = "log-1"
address = "10.0.1.1:514"
"#;

#[test]
fn full_config_parses_to_the_expected_struct() {
    let expected = Config {
        process: ProcessConfig {
            max_flows: Some(100_000),
            retry_buffer_bytes: None,
            ..ProcessConfig::default()
        },
        listeners: BTreeMap::from([
            (
                "dns".to_owned(),
                ListenerConfig {
                    address: address("0.0.0.0:53"),
                    cluster: "dns".into(),
                    affinity: Affinity::ClientAddress,
                    max_flows: Some(50_000),
                    max_datagram_size: 4096,
                    drain_timeout: Some(Duration::from_secs(30)),
                    freebind: false,
                    empty_datagrams: Default::default(),
                    source_limits: None,
                    accept_proxy: None,
                },
            ),
            (
                "syslog.v6".to_owned(),
                ListenerConfig {
                    address: address("[::1]:514"),
                    cluster: "syslog".into(),
                    affinity: Affinity::ClientAddressPort,
                    max_flows: None,
                    max_datagram_size: MAX_UDP_PAYLOAD,
                    drain_timeout: None,
                    freebind: false,
                    empty_datagrams: Default::default(),
                    source_limits: None,
                    accept_proxy: None,
                },
            ),
        ]),
        clusters: BTreeMap::from([
            (
                "dns".to_owned(),
                ClusterConfig {
                    backends: vec![
                        BackendConfig {
                            id: "dns-1".into(),
                            address: address("10.0.0.1:53"),
                            weight: 3,
                            pool: 0,
                            backup: false,
                            server_id: None,
                        },
                        BackendConfig {
                            id: "dns-2".into(),
                            address: address("[2001:db8::2]:53"),
                            weight: 0,
                            pool: 0,
                            backup: false,
                            server_id: None,
                        },
                    ],
                    responses: Some(1),
                    responses_mode: ResponsesMode::PerFlow,
                    requests: Some(8),
                    idle_timeout: IdleTimeout {
                        front: Duration::from_secs(10),
                        back: Some(Duration::from_secs(2)),
                    },
                    lifetime: Some(Duration::from_secs(90)),
                    proxy_protocol: ProxyProtocolConfig {
                        mode: ProxyProtocolMode::Every,
                        crc32c: true,
                        unique_id: true,
                    },
                    ..ClusterConfig::default()
                },
            ),
            (
                "syslog".to_owned(),
                ClusterConfig {
                    backends: vec![BackendConfig {
                        id: "log-1".into(),
                        address: address("10.0.1.1:514"),
                        weight: 1,
                        pool: 0,
                        backup: false,
                        server_id: None,
                    }],
                    responses: Some(0),
                    ..ClusterConfig::default()
                },
            ),
        ]),
    };
    assert_eq!(valid(FULL), expected);
}

#[test]
fn full_config_round_trips_through_serialize() {
    let config = valid(FULL);
    let text = toml::to_string(&config).expect("a config always serializes");
    assert_eq!(valid(&text), config);
}

#[test]
fn absent_fields_take_their_defaults() {
    let config = valid(
        "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"dns\"\n\
         [clusters.dns]\nbackends = [{ id = \"a\", address = \"127.0.0.1:5301\" }]\n",
    );
    assert_eq!(
        config.process,
        ProcessConfig { max_flows: None, retry_buffer_bytes: None, ..ProcessConfig::default() }
    );
    assert_eq!(config.process.max_flows(), ProcessConfig::DEFAULT_MAX_FLOWS);
    let listener = &config.listeners["dns"];
    assert_eq!(listener.affinity, Affinity::ClientAddressPort);
    assert_eq!(listener.max_flows, None);
    assert_eq!(listener.max_datagram_size, 65_507);
    assert_eq!(listener.drain_timeout, None);
    let cluster = &config.clusters["dns"];
    assert_eq!(cluster.responses, None);
    assert_eq!(cluster.responses_mode, ResponsesMode::PerRequest);
    assert_eq!(cluster.requests, None);
    assert_eq!(cluster.idle_timeout.front, Duration::from_secs(60));
    assert_eq!(cluster.idle_back(), Duration::from_secs(30));
    let counted = valid("[clusters.dns]\nresponses = 1\n");
    assert_eq!(counted.clusters["dns"].idle_back(), Duration::from_secs(1));
    assert_eq!(cluster.lifetime, None);
    assert_eq!(cluster.proxy_protocol, ProxyProtocolConfig::default());
    assert_eq!(cluster.proxy_protocol.mode, ProxyProtocolMode::Off);
    assert_eq!(cluster.backends[0].weight, 1);
}

#[test]
fn one_idle_timeout_side_keeps_the_other_default() {
    let config = valid("[clusters.dns.idle_timeout]\nback = \"5s\"\n");
    let idle = config.clusters["dns"].idle_timeout;
    assert_eq!((idle.front, idle.back), (Duration::from_secs(60), Some(Duration::from_secs(5))));
}

#[test]
fn empty_text_is_an_empty_valid_config() {
    assert_eq!(valid(""), Config::default());
    assert_eq!(valid("# nothing yet\n"), Config::default());
}

#[test]
fn minimal_example_parses() {
    let config = valid(include_str!("../../../examples/minimal.toml"));
    assert_eq!(config.listeners["dns"].address, address("127.0.0.1:5353"));
    let cluster = &config.clusters[&config.listeners["dns"].cluster];
    assert_eq!(cluster.responses, Some(1));
    let addresses: Vec<SocketAddr> = cluster.backends.iter().map(|backend| backend.address).collect();
    assert_eq!(addresses, [address("127.0.0.1:5301"), address("127.0.0.1:5302")]);
}

/// The complete example in `docs/configuration.md` is the first TOML block after the
/// "Complete example" heading; it must stay valid.
#[test]
fn documented_complete_example_parses() {
    let docs = include_str!("../../../docs/configuration.md");
    let (_, after_heading) =
        docs.split_once("## Complete example").expect("the docs have a complete example");
    let (_, block) = after_heading.split_once("```toml\n").expect("the example is a toml block");
    let (example, _) = block.split_once("```").expect("the block is closed");
    let config = valid(example);
    assert!(!config.listeners.is_empty() && !config.clusters.is_empty());
}

#[test]
fn unknown_field_at_top_level_is_rejected_with_the_expected_names() {
    let text = "[process]\nmax_flows = 10\n\n[listener.dns]\naddress = \"127.0.0.1:53\"\n";
    let error = the_error(text);
    assert_eq!(
        error.kind,
        ConfigErrorKind::UnknownField {
            field: "listener".into(),
            expected: vec!["process".into(), "listeners".into(), "clusters".into()],
        }
    );
    assert_eq!(error.path.to_string(), "listener");
    assert_eq!(error.location, at(4, 2));
    assert_rendered("unknown_field_top_level", text);
}

#[test]
fn unknown_field_in_a_listener_is_rejected() {
    let text = "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"dns\"\nidle_timeout = \"5s\"\n";
    let error = the_error(text);
    let ConfigErrorKind::UnknownField { field, expected } = &error.kind else {
        panic!("expected an unknown field, got {error:?}");
    };
    assert_eq!(field, "idle_timeout");
    assert!(expected.iter().any(|name| name == "drain_timeout"));
    assert_eq!(error.path.to_string(), "listeners.dns.idle_timeout");
    assert_eq!(error.location, at(4, 1));
    assert_rendered("unknown_field_listener", text);
}

#[test]
fn unknown_field_in_a_backend_inline_table_is_rejected() {
    let text = r#"[clusters.dns]
backends = [
  { id = "a", address = "127.0.0.1:5301" },
  { id = "b", address = "127.0.0.1:5302", wieght = 2 },
]
"#;
    let error = the_error(text);
    assert_eq!(
        error.kind,
        ConfigErrorKind::UnknownField {
            field: "wieght".into(),
            expected: vec![
                "id".into(),
                "address".into(),
                "weight".into(),
                "pool".into(),
                "backup".into(),
                "server_id".into(),
            ],
        }
    );
    assert_eq!(error.path.to_string(), "clusters.dns.backends[1].wieght");
    assert_eq!(error.location, at(4, 43));
    assert_rendered("unknown_field_backend", text);
}

#[test]
fn unknown_field_in_a_nested_table_header_points_at_the_key() {
    let text = "[clusters.dns.proxy_protocol]\nmode = \"every\"\ncrc = true\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "clusters.dns.proxy_protocol.crc");
    assert_eq!(error.location, at(3, 1));
    assert_rendered("unknown_field_proxy_protocol", text);
}

#[test]
fn wrong_type_is_rejected_at_the_value() {
    let text = "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"dns\"\nmax_flows = \"many\"\n";
    let error = the_error(text);
    assert_eq!(
        error.kind,
        ConfigErrorKind::InvalidValue(
            "expected a whole number from 0 to 4294967295, found the text \"many\"".into()
        )
    );
    assert_eq!(error.path.to_string(), "listeners.dns.max_flows");
    assert_eq!(error.location, at(4, 13));
    assert_rendered("wrong_type", text);
}

#[test]
fn negative_number_is_rejected() {
    let text = "[clusters.dns]\nresponses = -1\n";
    let error = the_error(text);
    assert!(matches!(error.kind, ConfigErrorKind::InvalidValue(_)), "{error:?}");
    assert_eq!(error.location, at(2, 13));
    assert_rendered("negative_number", text);
}

#[test]
fn bad_duration_is_rejected_with_the_parser_message() {
    let text = "[clusters.dns]\nidle_timeout.front = \"30 sec\"\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "clusters.dns.idle_timeout.front");
    assert_eq!(error.location, at(2, 22));
    let ConfigErrorKind::InvalidValue(message) = &error.kind else { panic!("{error:?}") };
    assert!(message.contains("invalid duration"), "{message}");
    assert_rendered("bad_duration", text);
}

#[test]
fn duration_without_quotes_is_rejected() {
    let text = "[clusters.dns]\nlifetime = 30\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "clusters.dns.lifetime");
    assert_eq!(error.location, at(2, 12));
    assert_rendered("duration_without_quotes", text);
}

#[test]
fn host_name_where_an_address_belongs_is_rejected() {
    let text = "[listeners.dns]\ncluster = \"dns\"\naddress = \"localhost:53\"\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "listeners.dns.address");
    assert_eq!(error.location, at(3, 11));
    assert_rendered("bad_socket_address", text);
}

#[test]
fn address_without_a_port_is_rejected() {
    let text = "[[clusters.dns.backends]]\nid = \"a\"\naddress = \"10.0.0.1\"\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "clusters.dns.backends[0].address");
    assert_eq!(error.location, at(3, 11));
}

#[test]
fn unknown_choice_lists_the_accepted_values() {
    let text = "[clusters.dns]\nresponses_mode = \"per_reply\"\n";
    let error = the_error(text);
    assert_eq!(
        error.kind,
        ConfigErrorKind::UnknownVariant {
            variant: "per_reply".into(),
            expected: vec!["per_request".into(), "per_flow".into()],
        }
    );
    assert_eq!(error.location, at(2, 18));
    assert_rendered("unknown_choice", text);
}

#[test]
fn missing_required_field_names_it_and_points_at_the_table() {
    let text = "[process]\n\n[listeners.dns]\naddress = \"127.0.0.1:53\"\n";
    let error = the_error(text);
    assert_eq!(error.kind, ConfigErrorKind::MissingField { field: "cluster".into() });
    assert_eq!(error.path.to_string(), "listeners.dns.cluster");
    assert_eq!(error.location, at(3, 1));
    assert_rendered("missing_field", text);
}

#[test]
fn missing_field_in_an_inline_backend_points_at_its_brace() {
    let text = "[clusters.dns]\nbackends = [{ id = \"a\" }]\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "clusters.dns.backends[0].address");
    assert_eq!(error.location, at(2, 13));
}

#[test]
fn duplicate_key_is_a_syntax_error_at_the_second_key() {
    let text = "[clusters.dns]\nresponses = 1\nrequests = 4\nresponses = 2\n";
    let error = the_error(text);
    assert_eq!(error.kind, ConfigErrorKind::Syntax("duplicate key `responses`".into()));
    assert!(error.path.is_root());
    assert_eq!(error.location, at(4, 1));
    assert_rendered("duplicate_key", text);
}

#[test]
fn duplicate_table_is_a_syntax_error() {
    let text = "[clusters.dns]\nresponses = 1\n\n[clusters.dns]\nrequests = 4\n";
    let error = the_error(text);
    assert!(matches!(error.kind, ConfigErrorKind::Syntax(_)), "{error:?}");
    assert_eq!(error.location.line, 4);
    assert_rendered("duplicate_table", text);
}

#[test]
fn syntax_error_has_no_field_and_the_parser_location() {
    let text = "[listeners.dns]\naddress = \"127.0.0.1:53\ncluster = \"dns\"\n";
    let error = the_error(text);
    assert!(matches!(error.kind, ConfigErrorKind::Syntax(_)), "{error:?}");
    assert!(error.path.is_root());
    assert_eq!(error.location.line, 2);
    assert_rendered("syntax_error", text);
}

#[test]
fn unquoted_string_is_a_syntax_error() {
    let text = "[listeners.dns]\naddress = 127.0.0.1:53\n";
    let error = the_error(text);
    assert!(matches!(error.kind, ConfigErrorKind::Syntax(_)), "{error:?}");
    assert_eq!(error.location.line, 2);
    assert_rendered("unquoted_string", text);
}

#[test]
fn every_validation_error_is_reported_sorted_by_location() {
    let text = r#"[process]
max_flows = 0

[listeners.dns]
address = "127.0.0.1:0"
cluster = "dnss"
max_datagram_size = 70000

[listeners."bad name"]
address = "127.0.0.1:5353"
cluster = "dns"

[clusters.dns]
requests = 0
lifetime = "0s"
idle_timeout = { front = "0s", back = "1s" }
proxy_protocol = { crc32c = true }
backends = [
  { id = "a", address = "127.0.0.1:5301" },
  { id = "a", address = "127.0.0.1:5301", weight = 100000 },
  { id = "c/1", address = "0.0.0.0:0" },
]
"#;
    let errors = errors(text);
    assert!(errors.iter().all(|error| matches!(error.kind, ConfigErrorKind::Invalid(_))));
    let locations: Vec<Location> = errors.iter().map(|error| error.location).collect();
    let mut sorted = locations.clone();
    sorted.sort();
    assert_eq!(locations, sorted);
    // Spot checks, counted by hand.
    let find =
        |path: &str| errors.iter().find(|error| error.path.to_string() == path).map(|error| error.location);
    assert_eq!(find("process.max_flows"), Some(at(2, 13)));
    assert_eq!(find("listeners.dns.cluster"), Some(at(6, 11)));
    assert_eq!(find("listeners.\"bad name\""), Some(at(9, 12)));
    assert_eq!(find("clusters.dns.idle_timeout.front"), Some(at(16, 26)));
    assert_eq!(find("clusters.dns.proxy_protocol.crc32c"), Some(at(17, 29)));
    assert_eq!(find("clusters.dns.backends[1].weight"), Some(at(20, 52)));
    assert_eq!(find("clusters.dns.backends[2].id"), Some(at(21, 10)));
    assert_eq!(errors.len(), 15, "{}", errors.render("t"));
    assert_rendered("many_validation_errors", text);
}

#[test]
fn error_display_and_render_formats() {
    let text = "[listeners.dns]\naddress = \"127.0.0.1:0\"\ncluster = \"dns\"\n[clusters.dns]\n";
    let errors = errors(text);
    assert_eq!(
        errors.0[0].to_string(),
        "line 2, column 11: field `listeners.dns.address`: port 0 would bind a port chosen by \
         the system, which clients cannot know; give a port"
    );
    assert_eq!(
        errors.render("/etc/udplb.toml"),
        "/etc/udplb.toml:2:11: field `listeners.dns.address`: port 0 would bind a port chosen \
         by the system, which clients cannot know; give a port"
    );
    let syntax = the_error("a = ");
    assert_eq!(syntax.to_string(), format!("line 1, column 5: {}", syntax.kind));
}

#[test]
fn deeply_nested_text_is_rejected_without_exhausting_the_stack() {
    let arrays = format!("a = {}", "[".repeat(100_000));
    assert!(matches!(the_error(&arrays).kind, ConfigErrorKind::Syntax(_)));
    let tables = format!("a = {}", "{ b = ".repeat(100_000));
    assert!(matches!(the_error(&tables).kind, ConfigErrorKind::Syntax(_)));
    let dotted = format!("{}x = 1", "a.".repeat(100_000));
    assert!(errors(&dotted).len() == 1);
}

/// Lines of a TOML-like document, mixing valid and invalid keys, values and headers, so that
/// the property tests reach deserialization and validation and not only the syntax check.
fn toml_like_line() -> impl Strategy<Value = String> {
    let headers = prop::sample::select(vec![
        "[process]",
        "[listeners.dns]",
        "[listeners.\"a b\"]",
        "[clusters.dns]",
        "[clusters.dns.idle_timeout]",
        "[clusters.dns.proxy_protocol]",
        "[[clusters.dns.backends]]",
        "[[clusters.other.backends]]",
        "[clusters]",
        "[[listeners]]",
    ]);
    let keys = prop::sample::select(vec![
        "address",
        "cluster",
        "affinity",
        "max_flows",
        "max_datagram_size",
        "drain_timeout",
        "backends",
        "responses",
        "responses_mode",
        "requests",
        "idle_timeout",
        "lifetime",
        "proxy_protocol",
        "mode",
        "crc32c",
        "unique_id",
        "id",
        "weight",
        "front",
        "back",
        "idle_timeout.front",
        "bogus",
        "listeners.x.address",
    ]);
    let values = prop::sample::select(vec![
        "\"127.0.0.1:53\"",
        "\"[::1]:0\"",
        "\"dns\"",
        "\"\"",
        "0",
        "1",
        "-1",
        "65536",
        "4294967296",
        "\"30s\"",
        "\"0s\"",
        "\"1m\"",
        "\"x\"",
        "true",
        "false",
        "1.5",
        "1979-05-27",
        "[]",
        "{}",
        "[{ id = \"a\", address = \"127.0.0.1:1\" }]",
        "{ front = \"0s\" }",
        "\"every\"",
        "\"client_address\"",
        "[1, \"a\"]",
    ]);
    // Mostly well-formed lines: a random line is almost always a syntax error, which would
    // end every document before the schema is reached.
    prop_oneof![
        8 => headers.prop_map(str::to_owned),
        32 => (keys, values).prop_map(|(key, value)| format!("{key} = {value}")),
        1 => "\\PC{0,12}",
    ]
}

/// Checks what must hold for any error: a location inside the text (or just past its last
/// line) and a message that renders.
fn assert_well_formed(text: &str, errors: &ConfigErrors) {
    assert!(!errors.is_empty());
    let line_count = text.split('\n').count();
    for error in errors {
        assert!(error.location.line >= 1 && error.location.line <= line_count, "{error:?}");
        assert!(error.location.column >= 1, "{error:?}");
        assert!(!error.kind.to_string().is_empty());
        if let ConfigErrorKind::Invalid(validation) = &error.kind {
            assert_eq!(error.path, validation.path());
        }
    }
    assert_eq!(errors.render("f").lines().count(), errors.len());
}

/// Strategy for any configuration the types can hold, valid or not (for round trips).
fn any_config() -> impl Strategy<Value = Config> {
    let address = (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port));
    let duration = any::<u64>().prop_map(Duration::from_nanos);
    let backend = ("\\PC{0,8}", address.clone(), any::<u32>()).prop_map(|(id, address, weight)| {
        BackendConfig { id, address, weight, pool: 0, backup: false, server_id: None }
    });
    let cluster = (
        prop::collection::vec(backend, 0..3),
        (any::<Option<u32>>(), any::<bool>(), any::<Option<u32>>()),
        (duration.clone(), duration.clone(), prop::option::of(duration.clone())),
        (0..3u8, any::<bool>(), any::<bool>()),
    )
        .prop_map(|(backends, counts, times, proxy)| ClusterConfig {
            backends,
            responses: counts.0,
            responses_mode: if counts.1 { ResponsesMode::PerFlow } else { ResponsesMode::PerRequest },
            requests: counts.2,
            idle_timeout: IdleTimeout { front: times.0, back: Some(times.1) },
            lifetime: times.2,
            proxy_protocol: ProxyProtocolConfig {
                mode: match proxy.0 {
                    0 => ProxyProtocolMode::Off,
                    1 => ProxyProtocolMode::First,
                    _ => ProxyProtocolMode::Every,
                },
                crc32c: proxy.1,
                unique_id: proxy.2,
            },
            ..ClusterConfig::default()
        });
    let listener =
        (address, "\\PC{0,8}", any::<bool>(), any::<Option<u32>>(), any::<u32>(), prop::option::of(duration))
            .prop_map(|(address, cluster, by_address, max_flows, max_datagram_size, drain_timeout)| {
                ListenerConfig {
                    address,
                    cluster,
                    affinity: if by_address { Affinity::ClientAddress } else { Affinity::ClientAddressPort },
                    max_flows,
                    max_datagram_size,
                    drain_timeout,
                    freebind: false,
                    empty_datagrams: Default::default(),
                    source_limits: None,
                    accept_proxy: None,
                }
            });
    (
        any::<Option<u32>>(),
        prop::collection::btree_map("\\PC{0,8}", listener, 0..3),
        prop::collection::btree_map("\\PC{0,8}", cluster, 0..3),
    )
        .prop_map(|(max_flows, listeners, clusters)| Config {
            process: ProcessConfig { max_flows, retry_buffer_bytes: None, ..ProcessConfig::default() },
            listeners,
            clusters,
        })
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_every_error_is_located(text in "\\PC*") {
        if let Err(errors) = Config::from_toml_str(&text) {
            assert_well_formed(&text, &errors);
        }
    }

    #[test]
    fn toml_like_text_never_panics_and_every_error_is_located(
        lines in prop::collection::vec(toml_like_line(), 0..16)
    ) {
        let text = lines.join("\n");
        if let Err(errors) = Config::from_toml_str(&text) {
            assert_well_formed(&text, &errors);
        }
    }

    /// Serialized configurations are well-formed TOML with random values, so they reach
    /// validation; each error must point at the line that holds its key.
    #[test]
    fn validation_errors_of_any_config_point_at_their_key(config in any_config()) {
        let text = toml::to_string(&config).expect("a config always serializes");
        if let Err(errors) = Config::from_toml_str(&text) {
            assert_well_formed(&text, &errors);
            let lines: Vec<&str> = text.lines().collect();
            for error in &errors {
                prop_assert!(matches!(error.kind, ConfigErrorKind::Invalid(_)), "{:?}", error);
                let line = lines[error.location.line - 1];
                let is_name_error = matches!(
                    error.kind,
                    ConfigErrorKind::Invalid(
                        ValidationError::InvalidListenerName { .. } | ValidationError::InvalidClusterName { .. }
                    )
                );
                if is_name_error {
                    prop_assert!(line.starts_with('['), "{} at {:?}", error, line);
                } else if let Some(key) = error.path.last_key() {
                    prop_assert!(line.contains(key), "{} at {:?}", error, line);
                }
            }
        }
    }

    #[test]
    fn any_config_round_trips_through_serialize(config in any_config()) {
        let text = toml::to_string(&config).expect("a config always serializes");
        // Through `deserialize` rather than `from_toml_str`: most generated configs are
        // invalid, and what is tested here is the schema, not the rules.
        prop_assert_eq!(parse::deserialize(&text), Ok(config));
    }
}

#[test]
fn every_schema_error_of_a_file_is_reported_at_once() {
    // An unknown key, a wrong type in an inline table, a listener without its cluster, a
    // backend's wrong type: four mistakes, four lines, in the order of the file.
    let text = r#"[listeners.dns]
address = "127.0.0.1:53"
cluster = "dns"
adress = "127.0.0.2:53"

[listeners.other]
address = "127.0.0.1:54"

[clusters.dns]
responses = "1"
idle_timeout = { front = "30s", back = 5 }
backends = [{ id = "a", address = "10.0.0.1:53", weight = "heavy" }]
"#;
    let errors = errors(text);
    let found: Vec<(String, Location)> =
        errors.iter().map(|error| (error.path.to_string(), error.location)).collect();
    assert_eq!(
        found,
        vec![
            ("listeners.dns.adress".to_owned(), at(4, 10)),
            ("listeners.other.cluster".to_owned(), at(6, 1)),
            ("clusters.dns.responses".to_owned(), at(10, 13)),
            ("clusters.dns.idle_timeout.back".to_owned(), at(11, 40)),
            ("clusters.dns.backends[0].weight".to_owned(), at(12, 59)),
        ],
        "{}",
        errors.render("udplb.toml")
    );
    assert_rendered("several_schema_errors", text);
}

#[test]
fn a_required_key_that_is_itself_wrong_ends_the_search_without_inventing_errors() {
    // `address` is wrong and required: taking it out would make it "missing", which is not
    // what the operator wrote, so the search stops there and reports the real error once.
    let text = "[listeners.dns]\naddress = 53\ncluster = \"dns\"\n";
    let error = the_error(text);
    assert_eq!(error.path.to_string(), "listeners.dns.address");
    assert!(matches!(error.kind, ConfigErrorKind::InvalidValue(_)), "{error:?}");
}

#[test]
fn risky_settings_are_warned_about_with_their_field() {
    let text = r#"[process]
max_flows = 1000
metrics_addr = "0.0.0.0:9153"
stop_timeout = "45s"

[listeners.quiet]
address = "127.0.0.1:53"
cluster = "dns"
max_flows = 5000

[listeners.slow]
address = "127.0.0.1:54"
cluster = "dns"
drain_timeout = "1m"

[clusters.dns]
responses = 1
health = { mode = "tcp", tcp_port = 53 }
backends = [{ id = "a", address = "10.0.0.1:53" }]

[clusters.oneway]
responses = 0
health = { mode = "tcp", tcp_port = 514 }
backends = [{ id = "a", address = "10.0.0.2:514" }]
"#;
    let config = valid(text);
    let rendered = render_warnings(text, "udplb.toml", &config.warnings());
    insta::with_settings!({
        snapshot_path => SNAPSHOTS,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("warnings", rendered);
    });
    // The one-way cluster's TCP health is all it can have: no warning.
    assert!(!rendered.contains("clusters.oneway"), "{rendered}");
    // A careful file has none.
    let careful = "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"dns\"\ndrain_timeout = \"5s\"\n\
                   [clusters.dns]\nresponses = 1\nbackends = [{ id = \"a\", address = \"10.0.0.1:53\" }]\n";
    assert_eq!(valid(careful).warnings(), vec![]);
}

#[test]
fn trusted_upstreams_are_addresses_or_prefixes() {
    let text = "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"dns\"\n\
                accept_proxy = { from = [\"10.1.0.0/24\", \"192.0.2.7\", \"fd00:1::/64\"], required = true }\n\
                [clusters.dns]\nbackends = [{ id = \"a\", address = \"10.0.0.1:53\" }]\n";
    let accept = valid(text).listeners["dns"].accept_proxy.clone().expect("set");
    assert!(accept.required);
    for (ip, trusted) in [
        ("10.1.0.200", true),
        ("10.1.1.1", false),
        ("192.0.2.7", true),
        ("192.0.2.8", false),
        ("::ffff:10.1.0.9", true),
        ("fd00:1::abcd", true),
        ("fd00:2::1", false),
    ] {
        assert_eq!(accept.trusts(ip.parse().unwrap()), trusted, "{ip}");
    }
    let bad = text.replace("\"10.1.0.0/24\"", "\"10.1.0.0/33\"");
    let error = the_error(&bad);
    assert_eq!(error.path.to_string(), "listeners.dns.accept_proxy.from[0]");
    assert!(error.to_string().contains("the length must be between 0 and 32"), "{error}");
}
