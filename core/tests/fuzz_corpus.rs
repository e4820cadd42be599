//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every crash reproducer
//! ever found (`fuzz/regressions/<target>/`) through the fuzz target bodies, on stable and
//! without cargo-fuzz, so a bug the fuzzer found once stays fixed.
//!
//! The bodies sit behind the `fuzzing` feature; this crate's dev-dependency on itself turns
//! it on for tests, so a plain `cargo test --workspace` runs this file.

use std::panic;
use std::path::{Path, PathBuf};

use udplb_core::fuzzing::TARGETS;

/// The files of one directory, sorted by name so every run replays in the same order. A
/// missing directory has none (a target may have no regressions yet).
fn inputs(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| {
            path.is_file() && !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs every corpus and regression input of `target`, then fails naming each input that
/// panicked (each panic's message is printed as it happens).
fn replay(target: &str) {
    let (_, body) = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target");
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    // An empty corpus would make this test pass without testing anything, say after a move.
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no inputs");
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let mut panicked = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("a readable input");
        if panic::catch_unwind(|| body(&data)).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{target}: {} of {} inputs panicked:\n{}",
        panicked.len(),
        corpus.len() + regressions.len(),
        panicked.join("\n")
    );
}

#[test]
fn datagram_path_corpus_and_regressions_replay_cleanly() {
    replay("datagram_path");
}

#[test]
fn proxy_v2_decode_corpus_and_regressions_replay_cleanly() {
    replay("proxy_v2_decode");
}

#[test]
fn proxy_v2_roundtrip_corpus_and_regressions_replay_cleanly() {
    replay("proxy_v2_roundtrip");
}

#[test]
fn config_parse_corpus_and_regressions_replay_cleanly() {
    replay("config_parse");
}

#[test]
fn quic_lb_decode_corpus_and_regressions_replay_cleanly() {
    replay("quic_lb_decode");
}

#[test]
fn snapshot_decode_corpus_and_regressions_replay_cleanly() {
    replay("snapshot_decode");
}

#[test]
fn every_target_is_replayed_here() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "datagram_path",
            "proxy_v2_decode",
            "proxy_v2_roundtrip",
            "config_parse",
            "quic_lb_decode",
            "snapshot_decode"
        ]
    );
}
