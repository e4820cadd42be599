//! Judges a turmoil run by a scenario's expectations, with the same rules as the simulator's
//! `check` module, written again against the turmoil run's record: a cross-check should not
//! share the code it checks.

use std::time::Duration;

use udplb_core::{Health, Instant, Stats};
use udplb_sim::scenario::{Expectation, Scenario};

use super::Record;

/// One judged expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// What the expectations are judged on.
pub struct Facts<'a> {
    pub record: &'a Record,
    pub stats: &'a Stats,
    /// Requests sent and answered over every client.
    pub requests: (u64, u64),
    /// The longest a datagram takes one way on turmoil's network (its latency model plus the
    /// tick it waits for delivery).
    pub one_way_max: Duration,
}

pub fn judge(scenario: &Scenario, facts: &Facts) -> Vec<Verdict> {
    scenario.expectations.iter().map(|expectation| judge_one(scenario, facts, expectation)).collect()
}

fn within(value: u64, at_least: Option<u64>, at_most: Option<u64>) -> bool {
    at_least.is_none_or(|low| value >= low) && at_most.is_none_or(|high| value <= high)
}

fn judge_one(scenario: &Scenario, facts: &Facts, expectation: &Expectation) -> Verdict {
    let record = facts.record;
    match expectation {
        Expectation::Health { backend, state, by } => {
            let by = Instant::ZERO + by.0;
            let health = record
                .health
                .iter()
                .rfind(|(at, name, _)| name == backend && *at <= by)
                .map_or(Health::Unknown, |(_, _, health)| *health);
            Verdict {
                what: format!("{backend} is {state} by {by}"),
                passed: health == *state,
                detail: health.to_string(),
            }
        }
        Expectation::Detected { backend, state, after } => {
            let after = Instant::ZERO + after.0;
            let target = state.0;
            let bound = detection_bound(scenario, backend, target, facts.one_way_max);
            let seen = record
                .health
                .iter()
                .find(|(at, name, health)| name == backend && *at >= after && *health == target);
            Verdict {
                what: format!("{backend} detected {state} within {bound:?} of {after}"),
                passed: seen.is_some_and(|(at, _, _)| *at <= after + bound),
                detail: match seen {
                    Some((at, _, _)) => format!("{state} {:?} after", *at - after),
                    None => format!("never {state}"),
                },
            }
        }
        Expectation::NoNewFlows { backend, from, to } => {
            let (from, to) = (Instant::ZERO + from.0, Instant::ZERO + to.0);
            let count = record
                .new_flows
                .iter()
                .filter(|(at, name)| name == backend && *at >= from && *at <= to)
                .count();
            Verdict {
                what: format!("no new flow to {backend} between {from} and {to}"),
                passed: count == 0,
                detail: format!("{count} new flows"),
            }
        }
        Expectation::NewFlowsAtLeast { backend, count } => {
            let got = record.new_flows.iter().filter(|(_, name)| name == backend).count() as u64;
            Verdict {
                what: format!("at least {count} new flows to {backend}"),
                passed: got >= *count,
                detail: format!("{got} new flows"),
            }
        }
        Expectation::Answered(udplb_sim::scenario::Answered { at_least, at_most }) => {
            let (sent, answered) = facts.requests;
            let fraction = if sent == 0 { 1.0 } else { answered as f64 / sent as f64 };
            let low = at_least.map_or(0.0, |f| f.0);
            let high = at_most.map_or(1.0, |f| f.0);
            let what = match at_most {
                None => format!("at least {:.2}% answered", low * 100.0),
                Some(_) => format!("between {:.2}% and {:.2}% answered", low * 100.0, high * 100.0),
            };
            Verdict {
                what,
                passed: fraction >= low && fraction <= high,
                detail: format!("{answered} of {sent}"),
            }
        }
        Expectation::Drops { reason, at_least, at_most, .. } => {
            let count = facts.stats.client_drops(*reason);
            Verdict {
                what: format!("client drops {reason} in {at_least:?}..={at_most:?}"),
                passed: within(count, *at_least, *at_most),
                detail: count.to_string(),
            }
        }
        Expectation::Closes { reason, at_least, at_most } => {
            let count = facts.stats.flows.closed_for(*reason);
            Verdict {
                what: format!("flows closed {reason} in {at_least:?}..={at_most:?}"),
                passed: within(count, *at_least, *at_most),
                detail: count.to_string(),
            }
        }
        Expectation::FlowsCreated { at_least, at_most } => {
            let created = facts.stats.flows.created;
            Verdict {
                what: format!("flows created in {at_least:?}..={at_most:?}"),
                passed: within(created, *at_least, *at_most),
                detail: created.to_string(),
            }
        }
        Expectation::ConsistentPlacement { .. } => Verdict {
            what: "placement across instances".into(),
            passed: false,
            detail: "one balancer instance here: `unsupported` refuses such scenarios".into(),
        },
        Expectation::Share(_)
        | Expectation::ClientAnswered { .. }
        | Expectation::AnsweredPerClient(_)
        | Expectation::QuicUnknownConnections(_)
        | Expectation::NoTransition(_)
        | Expectation::Transitions(_)
        | Expectation::Lost { .. }
        | Expectation::Datagrams(_)
        | Expectation::HealthHeld { .. }
        | Expectation::Strays { .. }
        | Expectation::Platform { .. }
        | Expectation::Exited { .. } => Verdict {
            what: "a user-level expectation".into(),
            passed: false,
            detail: "not judged here yet: `unsupported` refuses such scenarios".into(),
        },
        Expectation::Events { event, count } => {
            let got: u64 =
                record.events.iter().filter(|(name, _)| event.matches(**name)).map(|(_, count)| count).sum();
            Verdict {
                what: format!("{event} happens {count} times"),
                passed: got == *count,
                detail: got.to_string(),
            }
        }
    }
}

/// The health scheduler's own worst case for `backend` to reach `target`, plus a round trip
/// on turmoil's network for every probe the hysteresis may need (and one more).
fn detection_bound(scenario: &Scenario, backend: &str, target: Health, one_way_max: Duration) -> Duration {
    let health = scenario
        .lb
        .clusters
        .values()
        .find(|cluster| cluster.backends.iter().any(|b| b.id == backend))
        .map(|cluster| cluster.health.clone())
        .unwrap_or_default();
    let probes = u32::max(health.rise, health.fall) + 1;
    let scheduler = match target {
        Health::Down => udplb_core::health::worst_case_detection(&health, Health::Up),
        _ => udplb_core::health::worst_case_recovery(&health, Health::Down),
    };
    scheduler + one_way_max * 2 * probes
}
