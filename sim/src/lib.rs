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
//! - `main.rs`: the `udplb-sim` command (run, report, sweep).
//! - `scenario.rs`: scenario files: the schema, loading with file and line, the faults a sweep
//!   draws; `scenario/expect.rs` the `[[expect]]` kinds, typed as they load.
//! - `world.rs`: the event loop: the queue of timed events, each instance's timer, the
//!   timeline, calling the drivers and the hosts and carrying out what the drivers ask for.
//! - `network.rs`: the network model: packets, partitions, MTU, loss (everywhere or on one
//!   host's link), latency, jitter, reordering, duplication, ICMP rate limits, the ECMP
//!   spreader and the run's random stream.
//! - `platform.rs`: the core's `Platform` on simulated sockets, whose sends become effects the
//!   world carries out; upstream ports placed by the core's own pool (`udplb_core::pool`, as
//!   the shell places them); the `[platform]` faults, drawn from a stream of their own.
//! - `hosts.rs`: clients and backends: what they send and how they answer what arrives.
//! - `record.rs`: what the run saw: health transitions, new flows and placements, client
//!   datagrams forwarded by backend, events by name, datagrams delivered and lost, violations.
//! - `invariants.rs`: what must hold in every run: the core's invariants, upstream accounting,
//!   no new flow to an ineligible backend, affinity, liveness, PROXY v2 headers.
//! - `check.rs`: the scenario's expectations (counts of the balancer's own events, and what
//!   users feel: shares, answers, lost requests, health flaps), the totals they are judged
//!   on, the end-of-run summary.
//! - `trace.rs`: the compact, snapshot-tested trace.
//! - `report.rs`: the HTML report.
//!
//! Imports run one way: `world.rs` uses the network, the record and the invariants, and none
//! of them uses it back. The network knows hosts only by name and drivers not at all: it
//! says when a packet arrives, and the world delivers it.

pub mod check;
pub mod hosts;
pub mod invariants;
pub mod network;
pub mod platform;
pub mod record;
pub mod report;
pub mod scenario;
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

/// Runs a scenario with its own seed, or `seed` when given.
pub fn run(scenario: &Scenario, file: &Path, seed: Option<u64>) -> RunReport {
    let seed = seed.unwrap_or(scenario.seed);
    let mut world = World::new(scenario.clone(), seed);
    world.run();
    let verdicts = check::check(&world);
    let mut trace = world.trace.render();
    for line in check::summary(&world) {
        trace.push_str(&format!("{:>16} {line}\n", "end"));
    }
    let timeline = report::Timeline::from_world(&world);
    RunReport {
        timeline,
        name: scenario.name.clone(),
        file: file.to_owned(),
        seed,
        verdicts,
        violations: world.record.violations.clone(),
        trace,
        events: world.events_run(),
        delivered: world.record.delivered,
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
