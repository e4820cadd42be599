//! The udplb simulator: a deterministic, discrete-event world around the core.
//!
//! A [`scenario::Scenario`] file describes a balancer configuration (the shell's own schema),
//! clients, backends, a network, a timeline of faults and operator actions, and expectations.
//! [`run`] plays it: the balancer is the core's own [`udplb_core::driver::Driver`] on simulated
//! sockets ([`platform::SimPlatform`]), so what the simulator tests is the production path.
//! Time is virtual and jumps from event to event; every random draw comes from one ChaCha
//! stream seeded by the scenario's seed, so the same seed gives the same trace, byte for byte.
//! The core's invariants, conservation and "no leaked upstreams" are checked throughout.
//!
//! One job per file:
//!
//! - `lib.rs`: [`run`], one scenario with one seed, from world to verdicts, trace and timeline.
//! - `main.rs`: the `udplb-sim` command (run, report, sweep), its options and exit codes.
//! - `scenario.rs`: scenario files: the schema, loading with file and line, the faults a sweep
//!   draws; `scenario/expect.rs` the `[[expect]]` kinds, typed as they load;
//!   `scenario/user_config.rs` how a user's own configuration file ties to the scenario's hosts.
//! - `world.rs`: the event loop: the queue of timed events, each instance's timer, the
//!   timeline, calling the drivers and the hosts and carrying out what the drivers ask for.
//! - `network.rs`: the network model: packets, partitions, MTU, loss (everywhere or on one
//!   host's link), latency, jitter, reordering, duplication, ICMP rate limits, the ECMP
//!   spreader and the run's random stream.
//! - `platform.rs`: the core's `Platform` on simulated sockets, whose sends become effects the
//!   world carries out; upstream ports placed by the core's own pool (`udplb_core::pool`, as
//!   the shell places them); the `[platform]` faults, drawn from a stream of their own.
//! - `hosts.rs`: clients and backends: what they send and how they answer what arrives.
//! - `quic.rs`: the QUIC-like client and server those hosts are with `kind = "quic"` and
//!   `model = "quic"`: headers, connection IDs issued with QUIC-LB, connections a server has.
//! - `record.rs`: what the run saw: health transitions, new flows and placements, client
//!   datagrams forwarded by backend, events by name, datagrams delivered and lost, violations.
//! - `invariants.rs`: what must hold in every run: the core's invariants, upstream accounting,
//!   no new flow to an ineligible backend, affinity, liveness, PROXY v2 headers.
//! - `check.rs`: the scenario's expectations (counts of the balancer's own events, and what
//!   users feel: shares, answers, lost requests, health flaps), the totals they are judged
//!   on, the end-of-run summary.
//! - `trace.rs`: the compact, snapshot-tested trace.
//! - `report.rs`: the HTML report.
//! - `junit.rs`: the JUnit XML report for CI systems, and the escaping it needs.
//! - `sweep/`: `udplb-sim sweep`: swarm draws of each seed's faults, the liveness phase after a
//!   run, the determinism re-check, coverage of rare branches, shrinking a failure into a
//!   ready scenario file.
//!
//! Imports run one way: `world.rs` uses the network, the record and the invariants, and none
//! of them uses it back. The network knows hosts only by name and drivers not at all: it
//! says when a packet arrives, and the world delivers it.

pub mod check;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hosts;
pub mod invariants;
pub mod junit;
pub mod network;
pub mod platform;
pub mod quic;
pub mod record;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod trace;
pub mod world;

use std::path::{Path, PathBuf};

use check::Verdict;
use scenario::{Scenario, ScenarioError};
use world::World;

/// What one run of one scenario showed.
#[derive(Debug)]
pub struct RunReport {
    pub name: String,
    pub file: PathBuf,
    pub seed: u64,
    pub verdicts: Vec<Verdict>,
    /// Broken invariants (empty when the run was clean).
    pub violations: Vec<String>,
    /// The compact trace, with the end-of-run summary.
    pub trace: String,
    /// Events the engine handled and datagrams it delivered.
    pub events: u64,
    pub delivered: u64,
    /// What happened over time, for the HTML report.
    pub timeline: report::Timeline,
}

impl RunReport {
    /// Every expectation held and no invariant broke.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

/// Runs a scenario with its own seed, or `seed` when given (with the liveness phase when the
/// scenario says `liveness = "always"`).
pub fn run(scenario: &Scenario, file: &Path, seed: Option<u64>) -> RunReport {
    run_traced(scenario, file, seed, false)
}

/// [`run`], with `detailed`: the trace follows every flow (opened, on which instance and
/// worker, to which backend; closed, why) and every probe, and is not cut short.
pub fn run_traced(scenario: &Scenario, file: &Path, seed: Option<u64>, detailed: bool) -> RunReport {
    if let Some(expected) = &scenario.rejected {
        return refused_config(scenario, file, seed.unwrap_or(scenario.seed), expected);
    }
    let phase = scenario.liveness == scenario::Liveness::Always;
    run_world_with(scenario, file, seed, phase, detailed).0
}

/// [`run`], with the liveness phase after the scenario's end when `phase` (its verdicts come
/// after the scenario's own, which are judged at the end, before the phase), and the finished
/// world. A scenario whose `[lb]` is expected refused has no world: see [`run`].
pub fn run_world(scenario: &Scenario, file: &Path, seed: Option<u64>, phase: bool) -> (RunReport, World) {
    run_world_with(scenario, file, seed, phase, false)
}

fn run_world_with(
    scenario: &Scenario,
    file: &Path,
    seed: Option<u64>,
    phase: bool,
    detailed: bool,
) -> (RunReport, World) {
    let seed = seed.unwrap_or(scenario.seed);
    let mut world = World::new(scenario.clone(), seed);
    if detailed {
        world.detailed = true;
        world.trace = trace::Trace::with_limit(trace::DETAILED_MAX_LINES);
        world.trace.line(udplb_core::Instant::ZERO, format!("start: {}", scenario.name));
    }
    world.run();
    let mut verdicts = check::check(&world);
    if phase {
        verdicts.extend(sweep::liveness::phase(&mut world));
    }
    let mut trace = world.trace.render();
    for line in check::summary(&world) {
        trace.push_str(&format!("{:>16} {line}\n", "end"));
    }
    let timeline = report::Timeline::from_world(&world);
    let report = RunReport {
        timeline,
        name: scenario.name.clone(),
        file: file.to_owned(),
        seed,
        verdicts,
        violations: world.record.violations.clone(),
        trace,
        events: world.events_run(),
        delivered: world.record.delivered,
    };
    (report, world)
}

/// A scenario whose `[lb]` must be refused: loading it checked that validation refuses it
/// with the expected text; the report says so, and how.
fn refused_config(scenario: &Scenario, file: &Path, seed: u64, expected: &str) -> RunReport {
    let refusal = match scenario.lb.validate() {
        Ok(()) => None,
        Err(errors) => Some(udplb_core::config::render_errors(&errors)),
    };
    let passed = refusal.as_ref().is_some_and(|message| message.contains(expected));
    let detail = refusal.clone().unwrap_or_else(|| "accepted".into());
    let verdict = Verdict { what: format!("[lb] is refused (`{expected}`)"), passed, detail: detail.clone() };
    RunReport {
        timeline: report::Timeline::default(),
        name: scenario.name.clone(),
        file: file.to_owned(),
        seed,
        verdicts: vec![verdict],
        violations: Vec::new(),
        trace: format!("{:>16} refused: {detail}\n", "start"),
        events: 0,
        delivered: 0,
    }
}

/// The scenario files at `path`: the file itself, or every `*.toml` in the directory, sorted.
pub fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}
