//! Replays the committed `scenario_parse` corpus (`fuzz/corpus/scenario_parse/`) and every
//! crash reproducer ever found (`fuzz/regressions/scenario_parse/`) through the target's body,
//! on stable and without cargo-fuzz, as `core/tests/fuzz_corpus.rs` does for the core's
//! targets. The body sits behind the `fuzzing` feature; this crate's dev-dependency on itself
//! turns it on for tests.

use std::panic;
use std::path::{Path, PathBuf};

use udplb_sim::fuzzing::TARGETS;

/// The files of one directory, sorted by name; a missing directory has none.
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

#[test]
fn scenario_parse_corpus_and_regressions_replay_cleanly() {
    let (target, body) = TARGETS[0];
    assert_eq!(target, "scenario_parse");
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    // An empty corpus would make this test pass without testing anything, say after a move.
    assert!(corpus.len() >= 3, "fuzz/corpus/{target}/ has {} inputs", corpus.len());
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let mut panicked = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("a readable input");
        if panic::catch_unwind(|| body(&data)).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(panicked.is_empty(), "{target}: inputs panicked:\n{}", panicked.join("\n"));
}

#[test]
fn every_target_is_replayed_here() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["scenario_parse"]);
}

/// The body rejects what it must: a mangled scenario's error is checked, and a committed
/// scenario is accepted (so the corpus reaches past the syntax errors).
#[test]
fn the_body_sees_both_answers() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/silent_backend.toml");
    let text = std::fs::read_to_string(file).expect("a committed scenario");
    assert!(udplb_sim::scenario::Scenario::parse(&text).is_ok());
    (TARGETS[0].1)(text.as_bytes());
    let broken = text.replacen("duration", "durration", 1);
    let error = udplb_sim::scenario::Scenario::parse(&broken).expect_err("an unknown key");
    assert!(error.to_string().split(':').next().is_some_and(|line| line.parse::<usize>().is_ok()));
    (TARGETS[0].1)(broken.as_bytes());
}
