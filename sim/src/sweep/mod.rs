//! `udplb-sim sweep`: every scenario, many seeds, on worker threads; a failure is reported
//! with its draw and a command that reproduces it, and can be shrunk into a ready scenario
//! file.
//!
//! Per run (one scenario, one seed): the seed draws the envelope's faults ([`draw`], swarm
//! testing), the scenario runs with them and then, unless it says `liveness = "off"`, goes
//! through the liveness phase ([`liveness`]). Every `recheck`-th run is run a second time and
//! the two runs' hashes compared (the trace, the verdicts, the violations and the record's
//! counts): a difference is a failure of its own, "nondeterministic". After each run the
//! core's counters of rare branches are added up ([`coverage`]) and the table printed at the
//! end. With `--shrink-out DIR` the first failure of each scenario is reduced ([`shrink`]) and
//! written to `DIR`.
//!
//! Runs go to `jobs` worker threads; results are printed in (seed, scenario) order, so the
//! output (but its timing line) is the same whatever the number of threads.

pub mod coverage;
pub mod draw;
pub mod liveness;
pub mod shrink;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::scenario::{Liveness, Scenario};
use crate::{RunReport, run_world};
use coverage::Coverage;
use draw::Draw;

/// What `sweep` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub path: PathBuf,
    pub seeds: u64,
    pub from: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Re-run every this many runs and compare hashes (0: never).
    pub recheck: u64,
    /// Write shrunk reproductions here.
    pub shrink_out: Option<PathBuf>,
    /// A named mutant switched on for the whole sweep.
    pub mutant: Option<String>,
}

impl Options {
    pub fn new(path: PathBuf) -> Options {
        Options { path, seeds: 100, from: 1, jobs: 2, recheck: 50, shrink_out: None, mutant: None }
    }

    /// Sets `--name value`.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), String> {
        let text = value.unwrap_or_default();
        let number = || -> Result<u64, String> {
            text.parse().map_err(|_| format!("--{name} takes a whole number, not {text:?}"))
        };
        match name {
            "seeds" => self.seeds = number()?,
            "from" => self.from = number()?,
            "jobs" => self.jobs = number()?.clamp(1, 256) as usize,
            "recheck" => self.recheck = number()?,
            "shrink-out" if value.is_some() => self.shrink_out = Some(PathBuf::from(text)),
            "mutant" if value.is_some() => self.mutant = Some(text.to_owned()),
            _ => return Err(format!("sweep takes no option --{name}")),
        }
        Ok(())
    }

    /// The command that reruns one seed of one file, as a failure prints it.
    pub fn reproduce(&self, file: &Path, seed: u64) -> String {
        let (features, mutant) = match &self.mutant {
            Some(m) => (" --features mutants", format!(" --mutant {m}")),
            None => ("", String::new()),
        };
        format!(
            "cargo run --release -p udplb-sim{features} -- sweep {} --seeds 1 --from {seed}{mutant}",
            file.display()
        )
    }
}

/// Switches the named mutant on for the whole process (`None`: every mutant off).
#[cfg(feature = "mutants")]
pub fn switch_mutant(name: Option<&str>) -> Result<(), String> {
    use udplb_core::mutants::{self, Mutant};
    let Some(name) = name else {
        mutants::set_for_process(None);
        return Ok(());
    };
    let plain = |text: &str| text.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    let found = Mutant::ALL.iter().find(|m| plain(&format!("{m:?}")) == plain(name));
    match found {
        Some(mutant) => {
            // For the whole process: the sweep runs its seeds on worker threads.
            mutants::set_for_process(Some(*mutant));
            Ok(())
        }
        None => {
            let names: Vec<String> = Mutant::ALL.iter().map(|m| format!("{m:?}")).collect();
            Err(format!("no mutant {name:?}; there are: {}", names.join(", ")))
        }
    }
}

/// Without the `mutants` feature there is nothing to switch.
#[cfg(not(feature = "mutants"))]
pub fn switch_mutant(name: Option<&str>) -> Result<(), String> {
    match name {
        None => Ok(()),
        Some(_) => Err("--mutant needs udplb-sim built with the `mutants` feature \
             (cargo run --release -p udplb-sim --features mutants -- sweep ...)"
            .into()),
    }
}

/// A scenario file as the sweep runs it.
pub struct Base {
    pub file: PathBuf,
    pub text: String,
    pub scenario: Scenario,
}

/// Loads every scenario file at `path`, but those that expect their `[lb]` refused: nothing of
/// theirs runs, so no seed changes them (`udplb-sim run` judges them).
pub fn load(path: &Path) -> Result<Vec<Base>, String> {
    let files = crate::scenario_files(path).map_err(|e| e.0)?;
    if files.is_empty() {
        return Err(format!("{}: no scenario files", path.display()));
    }
    let mut bases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let scenario = Scenario::parse(&text).map_err(|e| format!("{}:{e}", file.display()))?;
        if scenario.rejected.is_none() {
            bases.push(Base { file, text, scenario });
        }
    }
    Ok(bases)
}

/// One run of a sweep.
pub struct Outcome {
    pub report: RunReport,
    pub draw: Draw,
    /// The liveness phase ran.
    pub phase: bool,
    /// Per rare path ([`coverage::PATHS`]), how often this run took it.
    pub coverage: Vec<u64>,
    /// The run's hash, for the determinism re-check.
    pub hash: u64,
    /// Virtual time the run covered, the liveness phase included.
    pub simulated: Duration,
}

/// Runs `base` with `seed` as the sweep does: the seed's draw, then the liveness phase.
pub fn run_one(base: &Base, seed: u64) -> Outcome {
    let mut scenario = base.scenario.clone();
    let draw = Draw::from_seed(&scenario.envelope, seed);
    draw.apply(&mut scenario.network, &mut scenario.platform);
    scenario.seed = seed;
    let phase = scenario.liveness != Liveness::Off;
    let (report, world) = run_world(&scenario, &base.file, Some(seed), phase);
    let coverage = coverage::of_run(&world);
    let simulated = world.now() - udplb_core::Instant::ZERO;
    let mut hash = Fnv::default();
    hash.add(report.trace.as_bytes());
    for verdict in &report.verdicts {
        hash.add(format!("{}|{}|{}\n", verdict.what, verdict.passed, verdict.detail).as_bytes());
    }
    for violation in &report.violations {
        hash.add(violation.as_bytes());
    }
    let record = &world.record;
    hash.add(
        format!("{} {} {} {}", report.events, record.delivered, record.lost, record.new_flows.len())
            .as_bytes(),
    );
    hash.add(format!("{:?} {coverage:?}", record.events).as_bytes());
    Outcome { report, draw, phase, coverage, hash: hash.0, simulated }
}

/// The determinism re-check: runs `base` with `seed` again; `Err` describes a difference from
/// the first run's hash `first`.
pub fn recheck(base: &Base, seed: u64, first: u64) -> Result<(), String> {
    let again = run_one(base, seed).hash;
    if again == first {
        Ok(())
    } else {
        Err(format!("nondeterministic: the run hashed {first:016x}, its re-run {again:016x}"))
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What a worker sends back for one run.
struct Done {
    passed: bool,
    /// The failure report's lines (empty when it passed).
    lines: Vec<String>,
    coverage: Vec<u64>,
    events: u64,
    delivered: u64,
    simulated: Duration,
    draw: Draw,
    phase: bool,
}

fn do_job(bases: &[Base], options: &Options, job: u64) -> Done {
    let base = &bases[(job % bases.len() as u64) as usize];
    let seed = options.from + job / bases.len() as u64;
    let outcome = run_one(base, seed);
    let mut lines = Vec::new();
    let report = &outcome.report;
    for verdict in report.verdicts.iter().filter(|v| !v.passed) {
        lines.push(format!("    expected {}: got {}", verdict.what, verdict.detail));
    }
    for violation in &report.violations {
        lines.push(format!("    invariant: {violation}"));
    }
    if options.recheck > 0
        && (job + 1) % options.recheck == 0
        && let Err(difference) = recheck(base, seed, outcome.hash)
    {
        lines.push(format!("    {difference}"));
    }
    let passed = lines.is_empty();
    if !passed {
        lines.insert(0, format!("FAILED {} seed {seed}", report.name));
        lines.insert(1, format!("    drawn: {}", outcome.draw));
        lines.push(format!("    reproduce: {}", options.reproduce(&base.file, seed)));
    }
    Done {
        passed,
        lines,
        coverage: outcome.coverage,
        events: report.events,
        delivered: report.delivered,
        simulated: outcome.simulated,
        draw: outcome.draw,
        phase: outcome.phase,
    }
}

/// A sweep's totals.
#[derive(Debug, Default)]
pub struct Totals {
    pub runs: u64,
    pub failures: u64,
    pub events: u64,
    pub delivered: u64,
    pub simulated: Duration,
    pub coverage: Coverage,
    /// Shrunk reproductions written.
    pub shrunk: Vec<PathBuf>,
}

/// Runs a sweep, printing failures (in seed order), shrink results and the coverage table to
/// `out`, progress to stderr. `Err` is a usage error (no files, a file that does not load, an
/// unknown mutant).
pub fn sweep(options: &Options, out: &mut dyn Write) -> Result<Totals, String> {
    let bases = load(&options.path)?;
    switch_mutant(options.mutant.as_deref())?;
    let total = bases.len() as u64 * options.seeds;
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel::<(u64, Done)>();
    let mut totals = Totals { coverage: Coverage::new(), ..Totals::default() };
    let started = std::time::Instant::now();
    // The first failure of each scenario: (seed, draw, phase), for shrinking.
    let mut first_failures: BTreeMap<usize, (u64, Draw, bool)> = BTreeMap::new();
    std::thread::scope(|scope| {
        for _ in 0..options.jobs {
            let sender = sender.clone();
            let (bases, next) = (&bases, &next);
            scope.spawn(move || {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if job >= total || sender.send((job, do_job(bases, options, job))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
        let mut printed = 0u64;
        for (job, done) in receiver {
            waiting.insert(job, done);
            while let Some(done) = waiting.remove(&printed) {
                let job = printed;
                printed += 1;
                totals.runs += 1;
                totals.events += done.events;
                totals.delivered += done.delivered;
                totals.simulated += done.simulated;
                totals.coverage.add(&done.coverage);
                if !done.passed {
                    totals.failures += 1;
                    for line in &done.lines {
                        let _ = writeln!(out, "{line}");
                    }
                    let index = (job % bases.len() as u64) as usize;
                    let seed = options.from + job / bases.len() as u64;
                    first_failures.entry(index).or_insert((seed, done.draw, done.phase));
                }
                if printed % (total / 10).max(1) == 0 {
                    eprintln!(
                        "  {printed}/{total} runs, {} failed, {:.1}s",
                        totals.failures,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    });
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    if let Some(dir) = &options.shrink_out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (index, (seed, draw, phase)) in first_failures {
            let base = &bases[index];
            let failing = shrink::Failing {
                file: &base.file,
                text: &base.text,
                seed,
                draw,
                phase,
                mutant: options.mutant.clone(),
            };
            match shrink::shrink(&failing) {
                Ok(shrunk) => {
                    let stem = base.file.file_stem().map_or("scenario".into(), |s| s.to_string_lossy());
                    let path = dir.join(format!("{stem}-seed{seed}.toml"));
                    std::fs::write(&path, &shrunk.text).map_err(|e| format!("{}: {e}", path.display()))?;
                    let _ = writeln!(
                        out,
                        "shrunk {} seed {seed} in {} runs: {} of {} timeline entries kept, faults on: {}\n    \
                         wrote {}; reproduce: cargo run --release -p udplb-sim -- run {}{}",
                        base.file.display(),
                        shrunk.runs,
                        shrunk.timeline_kept,
                        shrunk.timeline_total,
                        if shrunk.faults_on.is_empty() {
                            "none".to_owned()
                        } else {
                            shrunk.faults_on.iter().map(|k| k.key()).collect::<Vec<_>>().join(", ")
                        },
                        path.display(),
                        path.display(),
                        match &options.mutant {
                            Some(mutant) => format!(" (it fails only with the mutant {mutant} on)"),
                            None => String::new(),
                        },
                    );
                    totals.shrunk.push(path);
                }
                Err(error) => {
                    let _ = writeln!(out, "could not shrink {} seed {seed}: {error}", base.file.display());
                }
            }
        }
    }
    let _ = write!(out, "{}", totals.coverage.table());
    let simulated = totals.simulated.as_secs_f64();
    let _ = writeln!(
        out,
        "{total} runs ({} scenarios x {} seeds, {} jobs), {} failed, {seconds:.1}s wall, {:.1} runs/s, \
         {} events, {} datagrams delivered ({:.0} per second), {simulated:.0} simulated seconds \
         ({:.0} per wall second)",
        bases.len(),
        options.seeds,
        options.jobs,
        totals.failures,
        total as f64 / seconds,
        totals.events,
        totals.delivered,
        totals.delivered as f64 / seconds,
        simulated / seconds,
    );
    switch_mutant(None)?;
    Ok(totals)
}
