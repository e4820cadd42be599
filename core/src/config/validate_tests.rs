//! Tests of the validation rules, one or more per rule.
use std::time::Duration;

use super::*;
use crate::config::ConfigErrorKind;

/// The validation errors of `text`, which must parse. Goes through `from_toml_str` so that
/// every test also checks that the errors survive location lookup.
fn invalid(text: &str) -> Vec<ValidationError> {
    let errors = match Config::from_toml_str(text) {
        Ok(config) => panic!("expected validation errors, got {config:#?}"),
        Err(errors) => errors,
    };
    errors
        .into_iter()
        .map(|error| match error.kind {
            ConfigErrorKind::Invalid(validation) => {
                assert_eq!(error.path, validation.path());
                validation
            }
            other => panic!("expected a validation error, got {other:?}"),
        })
        .collect()
}

fn valid(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

/// A valid configuration with `extra` appended to the listener table `dns` and `cluster`
/// to the cluster table `dns`, before its backends.
fn with(listener: &str, cluster: &str) -> String {
    format!(
        "[listeners.dns]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n{listener}\n\
         [clusters.dns]\n{cluster}\nbackends = [\n  {{ id = \"a\", address = \"127.0.0.1:5301\" }},\n\
         ]\n"
    )
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("test addresses are valid")
}

#[test]
fn base_configuration_is_valid() {
    valid(&with("", ""));
}

#[test]
fn listener_cluster_must_name_an_existing_cluster() {
    let text = with("", "").replace("cluster = \"dns\"", "cluster = \"dnss\"");
    assert_eq!(
        invalid(&text),
        [ValidationError::UnknownCluster {
            listener: "dns".into(),
            cluster: "dnss".into(),
            known: vec!["dns".into()],
        }]
    );
}

#[test]
fn listener_addresses_must_be_unique_across_listeners() {
    let text = format!(
        "{}[listeners.b]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n\
         [listeners.c]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n",
        with("", "")
    );
    // In name order `b` comes first, so `c` and `dns` are reported against it, in the
    // order they appear in the file.
    assert_eq!(
        invalid(&text),
        [
            ValidationError::DuplicateListenerAddress {
                listener: "dns".into(),
                address: address("127.0.0.1:5353"),
                first_listener: "b".into(),
            },
            ValidationError::DuplicateListenerAddress {
                listener: "c".into(),
                address: address("127.0.0.1:5353"),
                first_listener: "b".into(),
            },
        ]
    );
}

#[test]
fn same_port_on_different_addresses_is_allowed() {
    valid(&format!("{}[listeners.b]\naddress = \"[::1]:5353\"\ncluster = \"dns\"\n", with("", "")));
}

#[test]
fn listener_port_zero_is_rejected() {
    let text = with("", "").replace("127.0.0.1:5353", "127.0.0.1:0");
    assert_eq!(invalid(&text), [ValidationError::ListenerPortZero { listener: "dns".into() }]);
}

#[test]
fn backend_port_zero_is_rejected() {
    let text = with("", "").replace("127.0.0.1:5301", "127.0.0.1:0");
    assert_eq!(invalid(&text), [ValidationError::BackendPortZero { cluster: "dns".into(), index: 0 }]);
}

#[test]
fn backend_unspecified_address_is_rejected() {
    let text = with("", "").replace("127.0.0.1:5301", "[::]:5301");
    assert_eq!(
        invalid(&text),
        [ValidationError::BackendAddressUnspecified {
            cluster: "dns".into(),
            index: 0,
            ip: "::".parse().expect("valid"),
        }]
    );
}

#[test]
fn names_follow_the_character_and_length_rules() {
    assert_eq!(check_name("dns-1.eu_west"), Ok(()));
    assert_eq!(check_name(&"a".repeat(MAX_NAME_BYTES)), Ok(()));
    assert_eq!(check_name(""), Err(NameProblem::Empty));
    assert_eq!(check_name("dns 1"), Err(NameProblem::InvalidCharacter { character: ' ' }));
    assert_eq!(check_name("dné"), Err(NameProblem::InvalidCharacter { character: 'é' }));
    assert_eq!(check_name("a/b"), Err(NameProblem::InvalidCharacter { character: '/' }));
    assert_eq!(
        check_name(&"a".repeat(MAX_NAME_BYTES + 1)),
        Err(NameProblem::TooLong { length: MAX_NAME_BYTES + 1 })
    );
}

#[test]
fn listener_names_are_checked() {
    let text = with("", "").replace("[listeners.dns]", "[listeners.\"dns v2\"]");
    assert_eq!(
        invalid(&text),
        [ValidationError::InvalidListenerName {
            listener: "dns v2".into(),
            problem: NameProblem::InvalidCharacter { character: ' ' },
        }]
    );
}

#[test]
fn cluster_names_are_checked() {
    let long = "c".repeat(65);
    let text = with("", "")
        .replace("[clusters.dns]", &format!("[clusters.{long}]"))
        .replace("cluster = \"dns\"", &format!("cluster = \"{long}\""));
    assert_eq!(
        invalid(&text),
        [ValidationError::InvalidClusterName { cluster: long, problem: NameProblem::TooLong { length: 65 } }]
    );
}

#[test]
fn backend_ids_are_checked() {
    let text = with("", "").replace("id = \"a\"", "id = \"\"");
    assert_eq!(
        invalid(&text),
        [ValidationError::InvalidBackendId {
            cluster: "dns".into(),
            index: 0,
            id: String::new(),
            problem: NameProblem::Empty,
        }]
    );
}

#[test]
fn backend_ids_must_be_unique_within_a_cluster() {
    let text = with("", "").replace(
        "},\n]",
        "},\n  { id = \"b\", address = \"127.0.0.1:5302\" },\n  { id = \"a\", address = \"127.0.0.1:5303\" },\n]",
    );
    assert_eq!(
        invalid(&text),
        [ValidationError::DuplicateBackendId {
            cluster: "dns".into(),
            index: 2,
            id: "a".into(),
            first_index: 0,
        }]
    );
}

#[test]
fn backend_addresses_must_be_unique_within_a_cluster() {
    let text = with("", "").replace("},\n]", "},\n  { id = \"b\", address = \"127.0.0.1:5301\" },\n]");
    assert_eq!(
        invalid(&text),
        [ValidationError::DuplicateBackendAddress {
            cluster: "dns".into(),
            index: 1,
            address: address("127.0.0.1:5301"),
            first_index: 0,
        }]
    );
}

#[test]
fn the_same_backend_id_and_address_may_serve_two_clusters() {
    valid(&format!(
        "{}[clusters.other]\nbackends = [{{ id = \"a\", address = \"127.0.0.1:5301\" }}]\n",
        with("", "")
    ));
}

#[test]
fn weight_is_at_most_65535_and_zero_is_allowed() {
    let text = with("", "").replace("\" }", "\", weight = 65535 }");
    valid(&text);
    let text = with("", "").replace("\" }", "\", weight = 0 }");
    assert_eq!(valid(&text).clusters["dns"].backends[0].weight, 0);
    let text = with("", "").replace("\" }", "\", weight = 65536 }");
    assert_eq!(
        invalid(&text),
        [ValidationError::WeightTooLarge { cluster: "dns".into(), index: 0, weight: 65536 }]
    );
}

#[test]
fn max_datagram_size_is_between_1_and_65507() {
    valid(&with("max_datagram_size = 1", ""));
    valid(&with("max_datagram_size = 65507", ""));
    for size in [0, 65508] {
        assert_eq!(
            invalid(&with(&format!("max_datagram_size = {size}"), "")),
            [ValidationError::MaxDatagramSizeOutOfRange { listener: "dns".into(), size }]
        );
    }
}

#[test]
fn listener_max_flows_is_at_least_one_when_set() {
    valid(&with("max_flows = 1", ""));
    valid(&with(&format!("max_flows = {MAX_FLOWS_LIMIT}"), ""));
    for max_flows in [0, MAX_FLOWS_LIMIT + 1] {
        assert_eq!(
            invalid(&with(&format!("max_flows = {max_flows}"), "")),
            [ValidationError::ListenerMaxFlowsOutOfRange { listener: "dns".into(), max_flows }]
        );
    }
}

#[test]
fn process_max_flows_is_at_least_one_when_set() {
    valid(&format!("[process]\nmax_flows = 1\n{}", with("", "")));
    for max_flows in [0, MAX_FLOWS_LIMIT + 1] {
        let text = format!("[process]\nmax_flows = {max_flows}\n{}", with("", ""));
        assert_eq!(invalid(&text), [ValidationError::ProcessMaxFlowsOutOfRange { max_flows }]);
    }
}

#[test]
fn metrics_addr_needs_a_port_and_control_socket_a_usable_path() {
    let config = valid(&format!(
        "[process]\nmetrics_addr = \"127.0.0.1:9100\"\ncontrol_socket = \"/run/udplb/control.sock\"\n{}",
        with("", "")
    ));
    assert_eq!(config.process.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(
        config.process.control_socket.as_deref(),
        Some(std::path::Path::new("/run/udplb/control.sock"))
    );
    let absent = valid(&with("", ""));
    assert_eq!((absent.process.metrics_addr, absent.process.control_socket), (None, None));
    let text = format!("[process]\nmetrics_addr = \"127.0.0.1:0\"\ncontrol_socket = \"\"\n{}", with("", ""));
    assert_eq!(invalid(&text), [ValidationError::MetricsPortZero, ValidationError::ControlSocketEmpty]);
    let long = format!("/{}", "s".repeat(MAX_CONTROL_SOCKET_PATH_BYTES));
    let text = format!("[process]\ncontrol_socket = \"{long}\"\n{}", with("", ""));
    assert_eq!(invalid(&text), [ValidationError::ControlSocketTooLong { length: long.len() }]);
}

#[test]
fn requests_is_at_least_one_when_set_and_zero_responses_is_valid() {
    let config = valid(&with("", "requests = 1\nresponses = 0"));
    assert_eq!(config.clusters["dns"].requests, Some(1));
    assert_eq!(config.clusters["dns"].responses, Some(0));
    assert_eq!(invalid(&with("", "requests = 0")), [ValidationError::RequestsZero { cluster: "dns".into() }]);
}

#[test]
fn requests_without_responses_is_refused_in_an_operators_words() {
    let refused = invalid(&with("", "requests = 1"));
    assert_eq!(refused, [ValidationError::RequestsWithoutResponses { cluster: "dns".into(), requests: 1 }]);
    let message = refused[0].to_string();
    assert!(message.contains("needs `responses`") && message.contains("0 for one-way"), "{message}");
}

#[test]
fn on_backend_down_defaults_by_kind_of_traffic_and_outlier_settings_are_checked() {
    use crate::config::OnBackendDown;
    assert_eq!(valid(&with("", "responses = 1")).clusters["dns"].on_backend_down(), OnBackendDown::Reselect);
    assert_eq!(valid(&with("", "")).clusters["dns"].on_backend_down(), OnBackendDown::Keep);
    let explicit = valid(&with("", "responses = 1\non_backend_down = \"keep\""));
    assert_eq!(explicit.clusters["dns"].on_backend_down(), OnBackendDown::Keep);
    let text = with(
        "",
        "health = { outlier = { failure_percent = 101, base_ejection_time = \"1m\", max_ejection_time = \"10s\" } }",
    );
    let problems: Vec<String> = invalid(&text).iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("101%"), "{problems:?}");
    assert!(problems[1].contains("max_ejection_time"), "{problems:?}");
}

#[test]
fn idle_timeouts_must_be_longer_than_zero() {
    let config = valid(&with("", "idle_timeout = { front = \"1ns\", back = \"1ns\" }"));
    assert_eq!(config.clusters["dns"].idle_timeout.front, Duration::from_nanos(1));
    assert_eq!(
        invalid(&with("", "idle_timeout = { front = \"0s\", back = \"0ms\" }")),
        [
            ValidationError::IdleTimeoutZero { cluster: "dns".into(), side: IdleSide::Front },
            ValidationError::IdleTimeoutZero { cluster: "dns".into(), side: IdleSide::Back },
        ]
    );
}

#[test]
fn lifetime_must_be_longer_than_zero_when_set() {
    valid(&with("", "lifetime = \"1s\""));
    assert_eq!(
        invalid(&with("", "lifetime = \"0s\"")),
        [ValidationError::LifetimeZero { cluster: "dns".into() }]
    );
}

#[test]
fn proxy_protocol_options_need_a_mode_other_than_off() {
    valid(&with("", "proxy_protocol = { mode = \"first\", crc32c = true, unique_id = true }"));
    valid(&with("", "proxy_protocol = { mode = \"off\", crc32c = false }"));
    assert_eq!(
        invalid(&with("", "proxy_protocol = { crc32c = true, unique_id = true }")),
        [
            ValidationError::ProxyProtocolOptionWhileOff {
                cluster: "dns".into(),
                option: ProxyProtocolOption::Crc32c,
            },
            ValidationError::ProxyProtocolOptionWhileOff {
                cluster: "dns".into(),
                option: ProxyProtocolOption::UniqueId,
            },
        ]
    );
}

#[test]
fn drain_timeout_of_zero_is_valid() {
    let config = valid(&with("drain_timeout = \"0s\"", ""));
    assert_eq!(config.listeners["dns"].drain_timeout, Some(Duration::ZERO));
}

#[test]
fn cluster_without_backends_is_valid() {
    let config =
        valid("[listeners.dns]\naddress = \"127.0.0.1:5353\"\ncluster = \"empty\"\n[clusters.empty]\n");
    assert!(config.clusters["empty"].backends.is_empty());
}

#[test]
fn every_violation_is_reported_not_just_the_first() {
    let config = Config {
        process: ProcessConfig { max_flows: Some(0), retry_buffer_bytes: None, ..ProcessConfig::default() },
        listeners: BTreeMap::from([(
            "bad name".to_owned(),
            ListenerConfig {
                address: address("127.0.0.1:0"),
                cluster: "missing".into(),
                affinity: Default::default(),
                max_flows: Some(0),
                max_datagram_size: 0,
                drain_timeout: None,
                freebind: false,
                empty_datagrams: Default::default(),
                source_limits: None,
                accept_proxy: None,
            },
        )]),
        clusters: BTreeMap::new(),
    };
    let errors = config.validate().expect_err("every field above is invalid");
    let paths: Vec<String> = errors.iter().map(|error| error.path().to_string()).collect();
    assert_eq!(
        paths,
        [
            "process.max_flows",
            "listeners.\"bad name\"",
            "listeners.\"bad name\".cluster",
            "listeners.\"bad name\".address",
            "listeners.\"bad name\".max_datagram_size",
            "listeners.\"bad name\".max_flows",
        ]
    );
}
