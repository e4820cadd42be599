//! The shrinker on a seeded bug: with the core's `SelectionIgnoresHealth` mutant on, a
//! scenario of 25 timeline entries, of which only one matters, shrinks to at most 10 (in fact
//! one) in a scenario file that loads and fails the same way.
//!
//! The sweep runs seeds on worker threads, so the mutant is switched on for the whole process:
//! this is a test binary of its own with one test.

use std::path::Path;

use udplb_core::mutants::{self, Mutant};
use udplb_sim::scenario::Scenario;
use udplb_sim::sweep::{self, Options, shrink};

#[test]
fn a_seeded_bug_shrinks_to_a_few_timeline_entries() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shrink_seeded_bug.toml");
    let original = Scenario::load(&file).unwrap();
    assert!(original.timeline.len() >= 20, "many timeline entries to shrink");
    mutants::set(None);
    assert!(udplb_sim::run(&original, &file, None).passed(), "it passes without the mutant");

    let dir = std::env::temp_dir().join(format!("udplb-sweep-mutant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = Options::new(file.clone());
    options.seeds = 2;
    options.shrink_out = Some(dir.clone());
    // For the whole process: the sweep runs its seeds on worker threads.
    mutants::set_for_process(Some(Mutant::SelectionIgnoresHealth));
    let mut out = Vec::new();
    let totals = sweep::sweep(&options, &mut out).unwrap();
    let output = String::from_utf8(out).unwrap();
    assert_eq!(totals.failures, 2, "the mutant fails every seed:\n{output}");
    assert_eq!(totals.shrunk.len(), 1, "{output}");

    let shrunk = Scenario::load(&totals.shrunk[0]).unwrap();
    assert!(shrunk.timeline.len() <= 10, "{} timeline entries left", shrunk.timeline.len());
    assert!(!shrunk.timeline.is_empty(), "the kill is what the bug needs");
    let text = std::fs::read_to_string(&totals.shrunk[0]).unwrap();
    let failed = udplb_sim::run(&shrunk, &totals.shrunk[0], None);
    assert!(!failed.passed(), "the reproduction fails with the mutant on:\n{text}");
    // The same way: the original run's failure and the reproduction's share a check.
    let base = &sweep::load(&file).unwrap()[0];
    let first = sweep::run_one(base, 1);
    assert!(
        !shrink::signature(&first.report).is_disjoint(&shrink::signature(&failed)),
        "same failure: {:?} vs {:?}",
        shrink::signature(&first.report),
        shrink::signature(&failed)
    );
    assert!(text.contains("# original: ") && text.contains("seed 1"), "{text}");
    assert!(text.contains("timeline: kill b1"), "the trace lines that prove it:\n{text}");
    mutants::set_for_process(None);
    assert!(udplb_sim::run(&shrunk, &totals.shrunk[0], None).passed(), "and passes without it");
    let _ = std::fs::remove_dir_all(&dir);
}
