//! Measures how fast a fuzz target body runs: replays every committed corpus input of one
//! target (`fuzz/corpus/<target>/`) in a loop for a few seconds and prints executions per
//! second, with the slowest inputs. No fuzzer and no instrumentation: this is the body's own
//! cost, the ceiling of what libFuzzer can reach on that corpus.
//!
//! Run: `cargo run --release -p udplb-core --example fuzz_speed -- [TARGET] [SECONDS] [DIR]`
//! (defaults: `datagram_path`, 5 seconds, `fuzz/corpus/TARGET`; DIR may instead be a corpus
//! a fuzz run grew, or one file). `docs/fuzzing.md` records its figures.

// Wall-clock time measures the run's speed; it never reaches the body, which keeps the core's
// rules (no clock inside).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use udplb_core::fuzzing::TARGETS;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "datagram_path".to_owned());
    let seconds: f64 = args.next().map_or(5.0, |s| s.parse().expect("SECONDS is a number"));
    let Some((_, body)) = TARGETS.iter().find(|(name, _)| *name == target) else {
        let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        panic!("unknown target {target}; the targets are {names:?}");
    };
    let directory = args.next().map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(&target),
        PathBuf::from,
    );
    let paths: Vec<PathBuf> = if directory.is_file() {
        vec![directory.clone()]
    } else {
        std::fs::read_dir(&directory)
            .unwrap_or_else(|e| panic!("{}: {e}", directory.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.is_file())
            .collect()
    };
    let mut inputs: Vec<(String, Vec<u8>)> = paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a readable input"))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} has no inputs", directory.display());

    let mut per_input = vec![Duration::ZERO; inputs.len()];
    let mut executions = 0u64;
    let mut rounds = 0u64;
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    while start.elapsed() < budget {
        for ((_, data), spent) in inputs.iter().zip(&mut per_input) {
            let before = Instant::now();
            body(data);
            *spent += before.elapsed();
            executions += 1;
        }
        rounds += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{target}: {} inputs, {rounds} rounds, {executions} executions in {elapsed:.2} s: {:.0} exec/s",
        inputs.len(),
        executions as f64 / elapsed
    );
    let mut slowest: Vec<(Duration, &str, usize)> = per_input
        .iter()
        .zip(&inputs)
        .map(|(spent, (name, data))| (*spent / rounds as u32, name.as_str(), data.len()))
        .collect();
    slowest.sort_by_key(|&(mean, _, _)| std::cmp::Reverse(mean));
    println!("slowest inputs (mean time per execution):");
    for (mean, name, bytes) in slowest.iter().take(5) {
        println!("  {:>10.1} µs  {name} ({bytes} bytes)", mean.as_secs_f64() * 1e6);
    }
}
