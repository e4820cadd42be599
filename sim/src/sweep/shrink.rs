//! Shrinking: a failing seed reduced to a minimal reproduction, written as a ready scenario
//! file.
//!
//! A reproduction is the original file's text, edited as a TOML document (so its comments,
//! its layout and its `kind`/`action` tags stay as written): `seed` set to the failing seed,
//! the seed's drawn faults written into `[network]`, `[envelope]` removed, and
//! `liveness = "always"` when the sweep ran the liveness phase (so `udplb-sim run` runs it
//! too). Every candidate is that text, loaded with [`Scenario::parse`] and run as `run` would:
//! what the shrinker tests is exactly what it writes.
//!
//! The elements to remove are the fault kinds the seed drew "on" (removing one sets it to its
//! envelope's gentlest value) and the timeline entries. Delta debugging (ddmin) removes
//! ever smaller subsets of them while the run still fails the same way: at least one of the
//! checks that failed in the original run fails again (an expectation by what it states, a
//! liveness verdict, or an invariant by its text without numbers). The result is 1-minimal
//! (within a bound of 500 runs): removing any one remaining element makes that failure go
//! away. Passing expectations are then dropped from the file (they do not change
//! the run), and the file gets a comment header (the original file, seed, draw and what was
//! removed) and, at its end, the trace lines that show the failure.

use std::collections::BTreeSet;
use std::path::Path;

use toml_edit::{DocumentMut, value};

use super::draw::{Draw, FaultKind, Value};
use crate::RunReport;
use crate::scenario::Scenario;

/// At most this many candidate runs per shrink.
const MAX_RUNS: usize = 500;

/// What one failing run is to be reduced from.
pub struct Failing<'a> {
    /// The original scenario file and its text.
    pub file: &'a Path,
    pub text: &'a str,
    pub seed: u64,
    pub draw: Draw,
    /// The sweep ran the liveness phase.
    pub phase: bool,
    /// A mutant switched on for the sweep (for the header only: the caller switches it).
    pub mutant: Option<String>,
}

/// A reduced reproduction.
pub struct Shrunk {
    /// The scenario file's text, ready to write.
    pub text: String,
    /// Timeline entries kept, of how many.
    pub timeline_kept: usize,
    pub timeline_total: usize,
    /// Fault kinds still on.
    pub faults_on: Vec<FaultKind>,
    /// Candidate runs it took.
    pub runs: usize,
    /// The reduced run's failed checks, as `expected ...: got ...` lines.
    pub failures: Vec<String>,
}

/// An element delta debugging may remove.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Element {
    Fault(FaultKind),
    Timeline(usize),
}

/// The checks a run failed, as the shrinker compares them: expectations and liveness verdicts
/// by what they state, invariants by their text without the numbers (times, counts) in it.
pub fn signature(report: &RunReport) -> BTreeSet<String> {
    let mut failed: BTreeSet<String> =
        report.verdicts.iter().filter(|v| !v.passed).map(|v| format!("expected {}", v.what)).collect();
    for violation in &report.violations {
        let words: Vec<&str> = violation
            .split_whitespace()
            .filter(|word| !word.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        failed.insert(format!("invariant {}", words.join(" ")));
    }
    failed
}

/// The reproduction's text: `text` with `seed`, `draw` in `[network]`, no `[envelope]`, the
/// liveness phase on when `phase`, the timeline entries in `removed` taken out, and, with
/// `keep`, only those expectations.
pub fn render(
    text: &str,
    seed: u64,
    draw: &Draw,
    phase: bool,
    removed: &BTreeSet<usize>,
    keep: Option<&BTreeSet<usize>>,
) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    doc["seed"] = value(i64::try_from(seed).map_err(|_| format!("seed {seed} is too large to write"))?);
    doc.remove("envelope");
    if phase {
        doc["liveness"] = value("always");
    }
    if !draw.faults.is_empty() {
        for drawn in &draw.faults {
            let section = drawn.kind.section();
            if !doc.contains_key(section) {
                doc[section] = toml_edit::table();
            }
            doc[section][drawn.kind.key()] = match drawn.value {
                Value::Fraction(x) => value(x),
                Value::Time(t) => value(format!("{}ns", t.as_nanos())),
            };
        }
    }
    if let Some(timeline) = doc.get_mut("timeline").and_then(|t| t.as_array_of_tables_mut()) {
        for index in removed.iter().rev() {
            if *index < timeline.len() {
                timeline.remove(*index);
            }
        }
        if timeline.is_empty() {
            doc.remove("timeline");
        }
    }
    if let Some(keep) = keep
        && let Some(expectations) = doc.get_mut("expect").and_then(|t| t.as_array_of_tables_mut())
    {
        for index in (0..expectations.len()).rev() {
            if !keep.contains(&index) {
                expectations.remove(index);
            }
        }
    }
    Ok(doc.to_string())
}

/// Loads `text` and runs it as `udplb-sim run` would.
pub fn run_text(text: &str, file: &Path) -> Result<RunReport, String> {
    let scenario = Scenario::parse(text).map_err(|e| format!("{}:{e}", file.display()))?;
    Ok(crate::run(&scenario, file, None))
}

/// A short description of timeline entry `index` of `text`: `#3 at 2s: kill`.
fn describe_entry(doc: &DocumentMut, index: usize) -> String {
    let entry = doc.get("timeline").and_then(|t| t.as_array_of_tables()).and_then(|t| t.get(index));
    let get = |key: &str| entry.and_then(|e| e.get(key)).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    format!("#{} at {}: {}", index + 1, get("at"), get("action"))
}

/// Reduces `failing` to a minimal reproduction that fails the same way.
pub fn shrink(failing: &Failing<'_>) -> Result<Shrunk, String> {
    let original = Scenario::parse(failing.text).map_err(|e| e.0)?;
    let timeline_total = original.timeline.len();
    let nothing = BTreeSet::new();
    let first = render(failing.text, failing.seed, &failing.draw, failing.phase, &nothing, None)?;
    let report = run_text(&first, failing.file)?;
    let target = signature(&report);
    if report.passed() || target.is_empty() {
        return Err(format!(
            "seed {} of {} does not fail when written out as a scenario file (the sweep's run and \
             the file disagree: a bug of the simulator)",
            failing.seed,
            failing.file.display()
        ));
    }
    let mut runs = 1;
    let candidate = |removed: &[Element]| -> (BTreeSet<usize>, Draw) {
        let mut draw = failing.draw.clone();
        let mut timeline = BTreeSet::new();
        for element in removed {
            match element {
                Element::Fault(kind) => draw = draw.without(*kind),
                Element::Timeline(index) => {
                    timeline.insert(*index);
                }
            }
        }
        (timeline, draw)
    };
    let fails_same_way = |removed: &[Element], runs: &mut usize| -> bool {
        *runs += 1;
        let (timeline, draw) = candidate(removed);
        let Ok(text) = render(failing.text, failing.seed, &draw, failing.phase, &timeline, None) else {
            return false;
        };
        match run_text(&text, failing.file) {
            Ok(report) => !report.passed() && !signature(&report).is_disjoint(&target),
            Err(_) => false,
        }
    };
    // ddmin over the elements still in (removing a chunk at a time).
    let mut kept: Vec<Element> =
        failing.draw.on().map(Element::Fault).chain((0..timeline_total).map(Element::Timeline)).collect();
    let mut removed: Vec<Element> = Vec::new();
    let mut chunks = 2usize;
    while !kept.is_empty() && runs < MAX_RUNS {
        let size = kept.len().div_ceil(chunks.min(kept.len()));
        let mut reduced = false;
        for start in (0..kept.len()).step_by(size) {
            let chunk: Vec<Element> = kept[start..(start + size).min(kept.len())].to_vec();
            let mut trial = removed.clone();
            trial.extend(&chunk);
            if runs < MAX_RUNS && fails_same_way(&trial, &mut runs) {
                removed = trial;
                kept.retain(|e| !chunk.contains(e));
                chunks = (chunks - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if chunks >= kept.len() {
                break;
            }
            chunks = (chunks * 2).min(kept.len());
        }
    }
    // The reduced run, its failing checks, and the expectations to keep.
    let (timeline, draw) = candidate(&removed);
    let text = render(failing.text, failing.seed, &draw, failing.phase, &timeline, None)?;
    let report = run_text(&text, failing.file)?;
    let keep: BTreeSet<usize> = report
        .verdicts
        .iter()
        .take(original.expectations.len())
        .enumerate()
        .filter(|(_, v)| !v.passed && target.contains(&format!("expected {}", v.what)))
        .map(|(index, _)| index)
        .collect();
    let body = render(failing.text, failing.seed, &draw, failing.phase, &timeline, Some(&keep))?;
    let final_report = run_text(&body, failing.file)?;
    if final_report.passed() || signature(&final_report).is_disjoint(&target) {
        return Err(
            "the reduced reproduction no longer fails once its passing expectations are dropped".into()
        );
    }
    let failures: Vec<String> = final_report
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| format!("expected {}: got {}", v.what, v.detail))
        .chain(final_report.violations.iter().map(|v| format!("invariant: {v}")))
        .collect();
    let doc: DocumentMut = failing.text.parse().map_err(|e| format!("{e}"))?;
    let removed_entries: Vec<String> = timeline.iter().map(|i| describe_entry(&doc, *i)).collect();
    let faults_off: Vec<&str> =
        failing.draw.on().filter(|k| !draw.on().any(|o| o == *k)).map(|k| k.key()).collect();
    let mut header = vec![
        "Shrunk by `udplb-sim sweep --shrink-out`: a minimal reproduction of a sweep failure.".to_owned(),
        format!("original: {}, seed {}", failing.file.display(), failing.seed),
        format!("drawn: {}", failing.draw),
    ];
    if let Some(mutant) = &failing.mutant {
        header.push(format!(
            "mutant: {mutant} (fails only with it switched on: `sweep --mutant {mutant}` in a build with \
             the `mutants` feature)"
        ));
    }
    header.push(format!(
        "removed: {} of {timeline_total} timeline entries{}",
        timeline.len(),
        if faults_off.is_empty() {
            String::new()
        } else {
            format!("; faults set to their gentlest value: {}", faults_off.join(", "))
        },
    ));
    // The removed entries, a few to a line.
    for entries in removed_entries.chunks(5) {
        header.push(format!("  {}", entries.join("; ")));
    }
    header.push(format!(
        "also removed: [envelope] (the draw is in [network]) and the expectations that held{}",
        if failing.phase { "; liveness = \"always\" runs the liveness phase in `udplb-sim run`" } else { "" }
    ));
    for failure in failures.iter().take(5) {
        header.push(format!("fails: {failure}"));
    }
    if failures.len() > 5 {
        header.push(format!("fails: ... and {} more", failures.len() - 5));
    }
    header.push(match &failing.mutant {
        None => "reproduce: udplb-sim run THIS_FILE".into(),
        Some(mutant) => {
            format!("reproduce: udplb-sim run THIS_FILE, in a process with the mutant {mutant} on")
        }
    });
    let mut out: String = header.iter().map(|line| format!("# {line}\n")).collect();
    out.push('\n');
    out.push_str(&body);
    out.push_str(
        "\n# The trace lines that show the failure (`udplb-sim run THIS_FILE --trace` prints them all):\n",
    );
    let mut names: Vec<&str> = original.backends.iter().map(|b| b.name.as_str()).collect();
    names.extend(original.clients.iter().map(|c| c.name.as_str()));
    names.extend(original.lb.clusters.values().flat_map(|c| &c.backends).map(|b| b.id.as_str()));
    for line in proof(&final_report, &names) {
        out.push_str(&format!("#{line}\n"));
    }
    // What is written must load and fail as shown.
    let written = run_text(&out, failing.file)?;
    if signature(&written) != signature(&final_report) {
        return Err("the written reproduction does not fail as its header says".into());
    }
    Ok(Shrunk {
        text: out,
        timeline_kept: timeline_total - timeline.len(),
        timeline_total,
        faults_on: draw.on().collect(),
        runs,
        failures,
    })
}

/// The trace lines that show a failure: timeline actions, liveness lines, and every line that
/// names a host (of `names`) a failed check names; at most 60 (the first 30 and the last 30),
/// then the end-of-run summary.
fn proof(report: &RunReport, names: &[&str]) -> Vec<String> {
    let split = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_')).map(str::to_owned).collect()
    };
    let failed = report.verdicts.iter().filter(|v| !v.passed).map(|v| v.what.as_str());
    let words: BTreeSet<String> = failed
        .chain(report.violations.iter().map(String::as_str))
        .flat_map(split)
        .filter(|w| names.contains(&w.as_str()))
        .collect();
    let (body, end): (Vec<&str>, Vec<&str>) =
        report.trace.lines().partition(|line| !line.trim_start().starts_with("end "));
    let chosen: Vec<&str> = body
        .into_iter()
        .filter(|line| {
            line.contains("timeline:")
                || line.contains("liveness:")
                || split(line).iter().any(|w| words.contains(w))
        })
        .collect();
    let mut lines: Vec<String> = if chosen.len() > 60 {
        let mut lines: Vec<String> = chosen[..30].iter().map(|l| l.to_string()).collect();
        lines.push(format!("{:>16} ... {} lines left out ...", "", chosen.len() - 60));
        lines.extend(chosen[chosen.len() - 30..].iter().map(|l| l.to_string()));
        lines
    } else {
        chosen.iter().map(|l| l.to_string()).collect()
    };
    lines.extend(end.iter().map(|l| l.to_string()));
    lines
}
