//! The configurations in `examples/` stay valid, and every key they use stays documented.
//!
//! The examples are what operators copy, so a schema change that breaks one, or a key that
//! `docs/configuration.md` forgets, must fail `cargo test` rather than a deployment.

use std::path::{Path, PathBuf};

use udplb_core::Config;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("core/ lives in the repository")
}

/// Every `examples/*.toml`, sorted by name, with its text.
fn examples() -> Vec<(PathBuf, String)> {
    let directory = repository().join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path, text)
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("a file").to_string_lossy().into_owned()
}

#[test]
fn the_examples_the_documentation_names_exist() {
    let names: Vec<String> = examples().iter().map(|(path, _)| file_name(path)).collect();
    for expected in ["dns.toml", "minimal.toml", "quic.toml", "syslog.toml"] {
        assert!(
            names.iter().any(|name| name == expected),
            "examples/{expected} is missing (found {names:?})"
        );
    }
}

#[test]
fn every_example_parses_and_validates() {
    for (path, text) in examples() {
        let name = format!("examples/{}", file_name(&path));
        if let Err(errors) = Config::from_toml_str(&text) {
            panic!("{name} is not a valid configuration:\n{}", errors.render(&name));
        }
    }
}

#[test]
fn every_example_sets_up_at_least_one_listener_with_backends() {
    for (path, text) in examples() {
        let config = Config::from_toml_str(&text).expect("checked by every_example_parses_and_validates");
        assert!(!config.listeners.is_empty(), "examples/{} has no listener", file_name(&path));
        for (name, listener) in &config.listeners {
            let cluster = &config.clusters[&listener.cluster];
            assert!(
                !cluster.backends.is_empty(),
                "examples/{}: listener {name} has no backends",
                file_name(&path)
            );
        }
    }
}

/// The keys of a TOML table, recursively, as written in the file; the names that the operator
/// chooses (the tables under `listeners` and `clusters`) are walked through but not collected.
fn keys_of(table: &toml::Table, chosen_names: bool, keys: &mut Vec<String>) {
    for (key, value) in table {
        if !chosen_names {
            keys.push(key.clone());
        }
        let names_below = matches!(key.as_str(), "listeners" | "clusters") && !chosen_names;
        match value {
            toml::Value::Table(inner) => keys_of(inner, names_below, keys),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        keys_of(inner, false, keys);
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_key_of_every_example_is_documented() {
    let reference_path = repository().join("docs/configuration.md");
    let reference = std::fs::read_to_string(&reference_path).expect("docs/configuration.md");
    let mut undocumented = Vec::new();
    for (path, text) in examples() {
        let table: toml::Table =
            toml::from_str(&text).expect("checked by every_example_parses_and_validates");
        let mut keys = Vec::new();
        keys_of(&table, false, &mut keys);
        for key in keys {
            // The reference writes every key as inline code, `key`, and sections as `[key]`.
            if !reference.contains(&format!("`{key}`")) && !reference.contains(&format!("`[{key}")) {
                undocumented.push(format!("examples/{}: `{key}`", file_name(&path)));
            }
        }
    }
    assert!(undocumented.is_empty(), "keys missing from docs/configuration.md:\n{}", undocumented.join("\n"));
}

#[test]
fn the_dns_health_probe_is_a_dns_query_and_expects_its_answer() {
    // The DNS example's probe is written in hex with a byte-by-byte comment; check the bytes
    // say what the comment says: one question, for the root, type NS, class IN, and an
    // expectation that is the query's ID followed by a response flag byte.
    let text = std::fs::read_to_string(repository().join("examples/dns.toml")).expect("examples/dns.toml");
    let config = Config::from_toml_str(&text).expect("valid");
    let health = &config.clusters["dns"].health;
    let query = health.udp_payload_bytes();
    assert_eq!(query.len(), 17, "12-byte header, 1-byte root name, 2-byte type, 2-byte class");
    assert_eq!(&query[4..6], &[0, 1], "QDCOUNT 1");
    assert_eq!(&query[6..12], &[0; 6], "no answer, authority or additional records");
    assert_eq!(&query[12..], &[0, 0, 2, 0, 1], "the root, NS, IN");
    assert_eq!(query[2] & 0x80, 0, "the probe is a query (QR = 0)");
    let expected = health.udp_expect_bytes().expect("an expectation");
    assert_eq!(&expected[..2], &query[..2], "the reply carries the query's ID");
    assert_eq!(expected[2], 0x80 | query[2], "the reply is a response (QR = 1) with the query's other flags");
}
