//! The liveness phase: after a run's own end, every fault heals and the clients keep sending;
//! then every client must be answered and every enabled backend Up within a bound the
//! configuration gives.
//!
//! At the scenario's end (`t0`, after its own expectations were judged) the world heals
//! everything ([`World::heal_everything`]: no partition, no loss, duplication or reordering,
//! no link faults, every backend host answering as its `[[backend]]` says). `T` is the
//! slowest recovery the configuration allows: over the clusters of `[lb]` and of every
//! reload, the health scheduler's own worst case from Down to Up
//! ([`udplb_core::health::worst_case_recovery`]: a probe in flight, the down interval, `rise`
//! fast probes, each with its timeout and jitter), plus one answer bound. Outlier ejection is
//! not waited for: an ejected backend's health stays Up, and the core never ejects a
//! cluster's last eligible backend, so the others answer meanwhile. The
//! answer bound is the time a request takes to be answered on the healed network: two round
//! trips of the largest latency plus jitter, plus the slowest backend's `delay`, plus 100 ms.
//!
//! Every live client (a request-response or QUIC client with at least one backend host in its
//! listener's cluster that is not `silent`) sends on from `t0`, one request every `max(its interval,
//! 100ms)` (so a phase costs at most ten requests a second per client), until `t0 + T + W`
//! with `W = max(1s, three of its intervals)`. Two checks, each a verdict named `liveness:`:
//!
//! - health converged: at `t0 + T`, on every instance, every backend whose admin state is
//!   `enabled` is Up;
//! - every live client answered within `T`: each request sent at or after `t0 + T` got all
//!   its replies by its send time plus the answer bound (the run goes on until the last
//!   request's bound). Requests sent during the recovery itself may be lost.
//!
//! A scenario whose end state is not meant to recover (a backend that never answers probes, a
//! client that is never meant to be answered) says `liveness = "off"`.

use std::time::Duration;

use udplb_core::{AdminState, Health, Instant};

use crate::check::Verdict;
use crate::scenario::{Action, BackendModel, ClientModel, Scenario};
use crate::world::World;

/// The slowest spacing of a client's phase requests.
const SLOWEST: Duration = Duration::from_millis(100);

/// `T`: how long after the heal every backend must be Up and every request answered.
pub fn recovery_bound(scenario: &Scenario) -> Duration {
    let reloads = scenario.timeline.iter().filter_map(|entry| match &entry.action {
        Action::Reload { lb, rejected: None, .. } => Some(lb),
        _ => None,
    });
    let health = std::iter::once(&scenario.lb)
        .chain(reloads)
        .flat_map(|lb| lb.clusters.values())
        .map(|cluster| udplb_core::health::worst_case_recovery(&cluster.health, Health::Down))
        .max()
        .unwrap_or_default();
    health.saturating_add(answer_bound(scenario))
}

/// How long a request may take on the healed network: two round trips of the largest latency
/// and jitter the scenario sets, the slowest backend's delay, and 100 ms.
pub fn answer_bound(scenario: &Scenario) -> Duration {
    let networks = std::iter::once(&scenario.network).chain(scenario.timeline.iter().filter_map(|entry| {
        match &entry.action {
            Action::Network(network) => Some(network),
            _ => None,
        }
    }));
    let one_way = networks.map(|n| n.latency + n.jitter).max().unwrap_or_default();
    let delay = scenario.backends.iter().map(|b| slowest_answer(scenario, b)).max().unwrap_or_default();
    one_way * 4 + delay + Duration::from_millis(100)
}

/// The longest a backend host may take to answer: its largest delay plus its largest jitter,
/// over its `[[backend]]` and every `set_backend` of it (how a host answers is a property the
/// heal keeps, not a fault).
fn slowest_answer(scenario: &Scenario, backend: &crate::scenario::BackendSpec) -> Duration {
    let changes = scenario.timeline.iter().filter_map(|entry| match &entry.action {
        Action::SetBackend(change) if change.backend.as_str() == backend.name.as_str() => Some(change),
        _ => None,
    });
    let (mut delay, mut jitter) = (backend.delay, backend.delay_jitter);
    for change in changes {
        delay = delay.max(change.delay.map_or(Duration::ZERO, |d| d.0));
        jitter = jitter.max(change.delay_jitter.map_or(Duration::ZERO, |j| j.0));
    }
    delay + jitter
}

/// Whether a client of `listener` can be answered at all: some backend host of its cluster
/// (in `[lb]`) is not `silent`. A client of silent backends only is not a live client.
fn answerable(scenario: &Scenario, listener: &str) -> bool {
    let Some(cluster) =
        scenario.lb.listeners.get(listener).and_then(|l| scenario.lb.clusters.get(&l.cluster))
    else {
        return false;
    };
    cluster.backends.iter().any(|backend| {
        scenario
            .backends
            .iter()
            .any(|host| host.address == backend.address && host.model != BackendModel::Silent)
    })
}

/// Runs the phase on a world whose run just ended; returns its verdicts.
pub fn phase(world: &mut World) -> Vec<Verdict> {
    let t0 = world.now();
    let recovery = recovery_bound(&world.scenario);
    let answer = answer_bound(&world.scenario);
    world.trace.line(t0, format!("liveness: phase starts, T = {recovery:?}"));
    world.heal_everything();
    // Per client: (index, first request checked, one past the last request, last send).
    let mut checked = Vec::new();
    for index in 0..world.clients.len() {
        let (ClientModel::RequestResponse { interval, .. } | ClientModel::Quic { interval, .. }) =
            world.clients[index].spec.model
        else {
            continue;
        };
        if !answerable(&world.scenario, world.clients[index].spec.listener.as_str()) {
            continue;
        }
        let every = interval.max(SLOWEST).max(Duration::from_nanos(1));
        let window = Duration::from_secs(1).max(every * 3);
        let count = ((recovery + window).as_nanos() / every.as_nanos()) as u32 + 1;
        let first = world.send_more(index, t0, count, every);
        let skipped = recovery.as_nanos().div_ceil(every.as_nanos()) as u32;
        let last_send = t0 + every * (count - 1);
        checked.push((index, first + skipped, first + count, last_send));
    }
    let mut verdicts = Vec::new();
    let converged = t0 + recovery;
    world.advance_to(converged);
    verdicts.extend(health_converged(world, converged));
    let end = checked.iter().map(|c| c.3).max().unwrap_or(converged).max(converged) + answer;
    world.advance_to(end);
    for (index, from, to, _) in checked {
        let client = &world.clients[index];
        let unanswered: Vec<u32> = client.pending.range(from..to).map(|(number, _)| *number).collect();
        verdicts.push(Verdict {
            what: format!(
                "liveness: every request {} sent from {} on (T = {recovery:?} after the heal at {t0}) answered",
                client.spec.name, converged
            ),
            passed: unanswered.is_empty(),
            detail: match unanswered.first() {
                None => format!("{} of {} answered", to - from, to - from),
                Some(first) => format!("{} of {} unanswered, the first #{first}", unanswered.len(), to - from),
            },
        });
    }
    world.trace.line(end, "liveness: phase ends".into());
    verdicts
}

/// Every enabled backend is Up on every instance at `at`: one verdict per backend.
fn health_converged(world: &World, at: Instant) -> Vec<Verdict> {
    // By name: the instances where it is enabled but not Up.
    let mut backends: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    // Each running instance's leader decides health; its followers only take its verdicts, so
    // for them what counts is that the backend is eligible.
    for (instance, running) in world.instances.iter().enumerate() {
        if running.stopped {
            continue;
        }
        for worker in running.first..running.first + running.workers {
            let core = world.drivers[worker].core();
            for backend in core.monitor().backend_ids() {
                let Some(status) = core.monitor().backend(backend) else { continue };
                if status.admin != AdminState::Enabled {
                    continue;
                }
                let name = core.flows().backend(backend).map_or("?", |(n, _)| n).to_owned();
                let lagging = backends.entry(name).or_default();
                if worker == running.first && status.health != Health::Up {
                    lagging.push(format!("{} on instance {instance}", status.health));
                } else if worker != running.first && !core.monitor().is_eligible(backend) {
                    let follower = worker - running.first;
                    lagging.push(format!("not eligible on instance {instance} worker {follower}"));
                }
            }
        }
    }
    backends
        .into_iter()
        .map(|(name, lagging)| Verdict {
            what: format!("liveness: {name} Up on every instance by {at}"),
            passed: lagging.is_empty(),
            detail: if lagging.is_empty() { "Up".into() } else { lagging.join(", ") },
        })
        .collect()
}
