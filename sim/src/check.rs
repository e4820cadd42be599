//! Expectations: what a scenario says must hold, checked against what the run recorded and
//! what its drivers and clients counted; the totals those counts add up to; and the
//! end-of-run summary of them in the trace.

use udplb_core::flow::QuicRoute;
use udplb_core::{CloseReason, DropReason, Health, Instant};

use crate::scenario::{
    Answered, AnsweredPerClient, ClientAnswered, ClientModel, Datagrams, Direction, DropDirection,
    Expectation, Fraction, NoTransition, PlatformCount, QuicUnknownConnections, Share, Transitions,
};
use crate::world::World;

/// One checked expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// Checks every expectation of the scenario against a finished run.
pub fn check(world: &World) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> =
        world.scenario.expectations.iter().map(|expectation| check_one(world, expectation)).collect();
    // A reload the timeline expects refused is an expectation of its own.
    for (index, expected, seen) in &world.record.refused_reloads {
        let at = world.scenario.timeline[*index].at;
        let what = match expected.as_str() {
            "" => format!("the reload at {at:?} is refused and the running configuration kept"),
            text => format!("the reload at {at:?} is refused (`{text}`) and the running configuration kept"),
        };
        verdicts.push(Verdict {
            what,
            passed: seen.as_ref().is_some_and(|message| message.contains(expected.as_str())),
            detail: match seen {
                Some(message) => format!("refused: {}", message.lines().next().unwrap_or_default()),
                None => "accepted".into(),
            },
        });
    }
    verdicts
}

fn range_ok(value: u64, at_least: Option<u64>, at_most: Option<u64>) -> bool {
    at_least.is_none_or(|low| value >= low) && at_most.is_none_or(|high| value <= high)
}

fn range_text(at_least: Option<u64>, at_most: Option<u64>) -> String {
    match (at_least, at_most) {
        (Some(low), Some(high)) => format!("in {low}..={high}"),
        (Some(low), None) => format!(">= {low}"),
        (None, Some(high)) => format!("<= {high}"),
        (None, None) => "any".into(),
    }
}

fn check_one(world: &World, expectation: &Expectation) -> Verdict {
    let record = &world.record;
    match expectation {
        Expectation::Health { backend, state, by } => {
            let by = Instant::ZERO + by.0;
            let state_at = record
                .health
                .iter()
                .rfind(|(at, name, _)| name == backend && *at <= by)
                .map(|(_, _, health)| *health)
                .unwrap_or(Health::Unknown);
            Verdict {
                what: format!("{backend} is {state} by {by}"),
                passed: state_at == *state,
                detail: format!("{state_at} at {by}"),
            }
        }
        Expectation::Detected { backend, state, after } => {
            let after = Instant::ZERO + after.0;
            let target = state.0;
            let bound = detection_bound(world, backend, target);
            let seen = record
                .health
                .iter()
                .find(|(at, name, health)| name == backend && *at >= after && *health == target);
            let deadline = after + bound;
            Verdict {
                what: format!(
                    "{backend} detected {state} within {bound:?} of {after} (the scheduler's worst case)"
                ),
                passed: seen.is_some_and(|(at, _, _)| *at <= deadline),
                detail: match seen {
                    Some((at, _, _)) => format!("{state} at {at}, {:?} after", *at - after),
                    None => format!("never {state} after {after}"),
                },
            }
        }
        Expectation::NoNewFlows { backend, from, to } => {
            let (from, to) = (Instant::ZERO + from.0, Instant::ZERO + to.0);
            let count = record
                .new_flows
                .iter()
                .filter(|(at, name)| **name == **backend && *at >= from && *at <= to)
                .count();
            Verdict {
                what: format!("no new flow to {backend} between {from} and {to}"),
                passed: count == 0,
                detail: format!("{count} new flows"),
            }
        }
        Expectation::NewFlowsAtLeast { backend, count } => {
            let got = record.new_flows.iter().filter(|(_, name)| **name == **backend).count() as u64;
            Verdict {
                what: format!("at least {count} new flows to {backend}"),
                passed: got >= *count,
                detail: format!("{got} new flows"),
            }
        }
        Expectation::Answered(Answered { at_least, at_most }) => {
            let (sent, answered) = answered(world);
            let fraction = if sent == 0 { 1.0 } else { answered as f64 / sent as f64 };
            Verdict {
                what: format!("{} of requests answered", fraction_bounds(*at_least, *at_most)),
                passed: within(fraction, *at_least, *at_most),
                detail: format!("{answered} of {sent} ({:.2}%)", fraction * 100.0),
            }
        }
        Expectation::AnsweredPerClient(bounds) => check_answered_per_client(world, bounds),
        Expectation::QuicUnknownConnections(unknown) => check_quic_unknown(world, unknown),
        Expectation::Drops { reason, direction, at_least, at_most } => {
            let stats = world.drivers.iter().map(|d| d.core().flows().stats());
            let count: u64 = stats
                .map(|s| match direction {
                    DropDirection::ToBackend => s.client_drops(*reason),
                    // Datagrams from backends: on a flow, or matching none (unattributed).
                    DropDirection::ToClient => s.backend_drops(*reason) + s.unattributed.dropped(*reason),
                    DropDirection::Both => {
                        s.client_drops(*reason) + s.backend_drops(*reason) + s.unattributed.dropped(*reason)
                    }
                })
                .sum();
            let whose = match direction {
                DropDirection::ToBackend => "client",
                DropDirection::ToClient => "backend",
                DropDirection::Both => "all",
            };
            Verdict {
                what: format!("{whose} drops {reason} {}", range_text(*at_least, *at_most)),
                passed: range_ok(count, *at_least, *at_most),
                detail: format!("{count}"),
            }
        }
        Expectation::Platform { count, at_least, at_most } => {
            let name = count.name();
            let value = match count {
                PlatformCount::PoolSockets => pool_sockets(world),
                _ => world.record.platform.named().iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v),
            };
            Verdict {
                what: format!("platform {name} {}", range_text(*at_least, *at_most)),
                passed: range_ok(value, *at_least, *at_most),
                detail: format!("{value}"),
            }
        }
        Expectation::Closes { reason, at_least, at_most } => {
            let count = closed_for(world, *reason);
            Verdict {
                what: format!("flows closed {reason} {}", range_text(*at_least, *at_most)),
                passed: range_ok(count, *at_least, *at_most),
                detail: format!("{count}"),
            }
        }
        Expectation::ConsistentPlacement { moved_at_least } => {
            // Per client address: the instances it was placed on, and the backends chosen.
            let mut placements: std::collections::BTreeMap<
                _,
                (std::collections::BTreeSet<usize>, std::collections::BTreeSet<&str>),
            > = std::collections::BTreeMap::new();
            for (instance, client, backend) in &record.placements {
                let entry = placements.entry(*client).or_default();
                entry.0.insert(*instance);
                entry.1.insert(&**backend);
            }
            let moved: Vec<_> = placements.values().filter(|(instances, _)| instances.len() > 1).collect();
            let disagreeing = moved.iter().filter(|(_, backends)| backends.len() > 1).count();
            Verdict {
                what: format!(
                    "clients moved between instances keep their backend (at least {moved_at_least} moved)"
                ),
                passed: disagreeing == 0 && moved.len() as u64 >= *moved_at_least,
                detail: format!("{} moved, {disagreeing} changed backend", moved.len()),
            }
        }
        Expectation::FlowsCreated { at_least, at_most } => {
            let (created, _) = flow_totals(world);
            Verdict {
                what: format!("flows created {}", range_text(*at_least, *at_most)),
                passed: range_ok(created, *at_least, *at_most),
                detail: format!("{created}"),
            }
        }
        Expectation::Events { event, count } => {
            let got: u64 =
                record.events.iter().filter(|(name, _)| event.matches(**name)).map(|(_, count)| count).sum();
            Verdict {
                what: format!("{event} happens {count} times"),
                passed: got == *count,
                detail: format!("{got}"),
            }
        }
        Expectation::Share(share) => check_share(world, share),
        Expectation::ClientAnswered(ClientAnswered { client, at_least, at_most }) => {
            let (sent, answered) = world
                .clients
                .iter()
                .find(|c| c.spec.name == *client)
                .map_or((0, 0), |c| (u64::from(c.requests()), u64::from(c.answered)));
            let fraction = (sent > 0).then(|| answered as f64 / sent as f64);
            Verdict {
                what: format!("{} of {client}'s requests answered", fraction_bounds(*at_least, *at_most)),
                // A client that sent nothing proves nothing.
                passed: fraction.is_some_and(|fraction| within(fraction, *at_least, *at_most)),
                detail: match fraction {
                    Some(fraction) => {
                        format!("{client}: {answered} of {sent} answered ({:.2}%)", fraction * 100.0)
                    }
                    None => format!("{client} sent no request"),
                },
            }
        }
        Expectation::NoTransition(NoTransition { backend, from, until, to }) => {
            let (start, end) = (Instant::ZERO + from.0, Instant::ZERO + until.0);
            let seen: Vec<String> = record
                .health
                .iter()
                .filter(|(at, name, health)| {
                    name == backend && *at >= start && *at <= end && to.is_none_or(|to| *health == to)
                })
                .map(|(at, _, health)| format!("{health} at {at}"))
                .collect();
            let into = to.map_or(String::new(), |to| format!(" to {to}"));
            Verdict {
                what: format!("no transition of {backend}{into} between {from} and {until}"),
                passed: seen.is_empty(),
                detail: match seen.len() {
                    0 => format!("{backend}: no transition{into} between {from} and {until}"),
                    1 => format!("{backend}: 1 transition{into}: {}", first_few(&seen)),
                    n => format!("{backend}: {n} transitions{into}: {}", first_few(&seen)),
                },
            }
        }
        Expectation::Transitions(transitions) => check_transitions(world, transitions),
        Expectation::Datagrams(datagrams) => check_datagrams(world, datagrams),
        Expectation::HealthHeld { backend, state, from, until } => {
            let (start, end) = (Instant::ZERO + from.0, Instant::ZERO + until.0);
            let at_start = record
                .health
                .iter()
                .rfind(|(at, name, _)| name == backend && *at <= start)
                .map(|(_, _, health)| *health)
                .unwrap_or(Health::Unknown);
            let moved: Vec<String> = record
                .health
                .iter()
                .filter(|(at, name, _)| name == backend && *at > start && *at <= end)
                .map(|(at, _, health)| format!("{health} at {at}"))
                .collect();
            Verdict {
                what: format!("{backend} stays {state} from {from} to {until}"),
                passed: at_start == *state && moved.is_empty(),
                detail: if moved.is_empty() {
                    format!("{backend}: {at_start} at {from}, no transition until {until}")
                } else {
                    format!("{backend}: {at_start} at {from}, then {}", first_few(&moved))
                },
            }
        }
        Expectation::Exited { instance, by } => {
            let exit = record.exits.iter().find(|(_, i)| i == instance).map(|(at, _)| *at);
            let by = Instant::ZERO + by.0;
            Verdict {
                what: format!("instance {instance} has exited by {by}"),
                passed: exit.is_some_and(|at| at <= by),
                detail: match exit {
                    Some(at) => format!("exited at {at}"),
                    None => "still running at the end".into(),
                },
            }
        }
        Expectation::Strays { backend, at_least, at_most } => {
            let count: u64 = world
                .drivers
                .iter()
                .map(|d| {
                    let core = d.core();
                    let flows = core.flows();
                    let id = flows
                        .backend_ids()
                        .find(|b| flows.backend(*b).map(|(n, _)| n) == Some(backend.as_str()));
                    id.and_then(|id| flows.stats().backends.get(id.0 as usize)).map_or(0, |b| b.stray_replies)
                })
                .sum();
            Verdict {
                what: format!("stray replies from {backend} {}", range_text(*at_least, *at_most)),
                passed: range_ok(count, *at_least, *at_most),
                detail: format!("{count}"),
            }
        }
        Expectation::Lost { at_most, client } => {
            let clients =
                world.clients.iter().filter(|c| client.as_ref().is_none_or(|name| c.spec.name == *name));
            let (sent, answered) = clients.fold((0, 0), |(sent, answered), c| {
                (sent + u64::from(c.requests()), answered + u64::from(c.answered))
            });
            let lost = sent - answered;
            let whose = client.as_ref().map_or("all clients".to_owned(), |name| name.to_string());
            Verdict {
                what: format!("at most {at_most} requests of {whose} never answered"),
                passed: lost <= *at_most,
                detail: format!("{whose}: {lost} of {sent} requests never got all their replies"),
            }
        }
    }
}

/// Bounds on a fraction, in words: `at least 99.00%`, `at most 80.00%`, `between .. and ..`.
fn fraction_bounds(at_least: Option<Fraction>, at_most: Option<Fraction>) -> String {
    match (at_least, at_most) {
        (Some(low), Some(high)) => format!("between {:.2}% and {:.2}%", low.0 * 100.0, high.0 * 100.0),
        (Some(low), None) => format!("at least {:.2}%", low.0 * 100.0),
        (None, Some(high)) => format!("at most {:.2}%", high.0 * 100.0),
        (None, None) => "any share".into(),
    }
}

/// Whether a fraction is within its bounds.
fn within(fraction: f64, at_least: Option<Fraction>, at_most: Option<Fraction>) -> bool {
    at_least.is_none_or(|Fraction(low)| fraction >= low)
        && at_most.is_none_or(|Fraction(high)| fraction <= high)
}

/// Every client that expects replies has its answered fraction within the bounds; one that
/// sent nothing fails it (it proves nothing). The detail names the clients outside, or the
/// lowest and highest fractions.
fn check_answered_per_client(world: &World, bounds: &AnsweredPerClient) -> Verdict {
    let AnsweredPerClient { at_least, at_most } = *bounds;
    let mut outside = Vec::new();
    let mut lowest: Option<(f64, &str)> = None;
    let mut highest: Option<(f64, &str)> = None;
    let mut counted = 0;
    for client in world.clients.iter().filter(|c| !matches!(c.spec.model, ClientModel::Flood { .. })) {
        counted += 1;
        let (sent, answered) = (client.requests(), client.answered);
        let name = client.spec.name.as_str();
        if sent == 0 {
            outside.push(format!("{name} sent no request"));
            continue;
        }
        let fraction = f64::from(answered) / f64::from(sent);
        if !within(fraction, at_least, at_most) {
            outside.push(format!("{name}: {answered} of {sent} ({:.2}%)", fraction * 100.0));
        }
        if lowest.is_none_or(|(low, _)| fraction < low) {
            lowest = Some((fraction, name));
        }
        if highest.is_none_or(|(high, _)| fraction > high) {
            highest = Some((fraction, name));
        }
    }
    let range = match (lowest, highest) {
        (Some((low, low_name)), Some((high, high_name))) => format!(
            "{counted} clients, lowest {:.2}% ({low_name}), highest {:.2}% ({high_name})",
            low * 100.0,
            high * 100.0
        ),
        _ => format!("{counted} clients"),
    };
    Verdict {
        what: format!("{} of each client's requests answered", fraction_bounds(at_least, at_most)),
        passed: counted > 0 && outside.is_empty(),
        detail: match outside.len() {
            0 => range,
            n => format!("{n} outside: {}", first_few(&outside)),
        },
    }
}

/// Packets `quic` servers received for connections they do not have, of one receiver and/or
/// one issuer, against their bounds.
fn check_quic_unknown(world: &World, unknown: &QuicUnknownConnections) -> Verdict {
    let QuicUnknownConnections { backend, issued_by, at_least, at_most } = unknown;
    let index_of = |name: &str| world.backends.iter().position(|b| b.spec.name == name);
    let receiver = backend.as_ref().map(|name| index_of(name));
    let issuer = issued_by.as_ref().map(|name| index_of(name));
    let count = world
        .record
        .quic_unknown
        .iter()
        .filter(|(_, received_by, issued)| {
            receiver.is_none_or(|r| r == Some(*received_by))
                && issuer.is_none_or(|i| i.is_some() && i == *issued)
        })
        .count() as u64;
    let mut whose = Vec::new();
    if let Some(backend) = backend {
        whose.push(format!(" received by {backend}"));
    }
    if let Some(issued_by) = issued_by {
        whose.push(format!(" for connection IDs {issued_by} issued"));
    }
    Verdict {
        what: format!(
            "packets for unknown QUIC connections{} {}",
            whose.join(","),
            range_text(*at_least, *at_most)
        ),
        passed: range_ok(count, *at_least, *at_most),
        detail: format!("{count}"),
    }
}

/// The `share` a backend carried of the client datagrams forwarded in a window.
fn check_share(world: &World, share: &Share) -> Verdict {
    let Share { backend, from, to, at_least, at_most } = share;
    let (start, end) = (Instant::ZERO + from.0, Instant::ZERO + to.0);
    let (total, carried) = world
        .record
        .forwarded
        .iter()
        .filter(|(at, _, _)| *at >= start && *at <= end)
        .fold((0u64, 0u64), |(total, carried), (_, name, _)| {
            (total + 1, carried + u64::from(**name == **backend))
        });
    let fraction = (total > 0).then(|| carried as f64 / total as f64);
    let bounds = match (at_least, at_most) {
        (Some(low), Some(high)) => format!("between {low} and {high}"),
        (Some(low), None) => format!("at least {low}"),
        (None, Some(high)) => format!("at most {high}"),
        (None, None) => "any".into(),
    };
    let within = |fraction: f64| {
        at_least.is_none_or(|Fraction(low)| fraction >= low)
            && at_most.is_none_or(|Fraction(high)| fraction <= high)
    };
    Verdict {
        what: format!("{backend} carries {bounds} of the requests forwarded between {from} and {to}"),
        // Nothing forwarded proves nothing.
        passed: fraction.is_some_and(within),
        detail: match fraction {
            Some(fraction) => format!(
                "{backend} carried {:.2}% ({carried} of {total}) between {from} and {to}",
                fraction * 100.0
            ),
            None => format!("no client datagram forwarded between {from} and {to}"),
        },
    }
}

/// Datagrams one way, of a backend and/or a client, in a window, against their bounds.
fn check_datagrams(world: &World, datagrams: &Datagrams) -> Verdict {
    let Datagrams { direction, backend, client, from, until, at_least, at_most } = datagrams;
    let start = from.map_or(Instant::ZERO, |t| Instant::ZERO + t.0);
    let end = until.map_or(Instant::ZERO + world.scenario.duration, |t| Instant::ZERO + t.0);
    let client_ip = client
        .as_ref()
        .and_then(|name| world.clients.iter().find(|c| c.spec.name == *name))
        .map(|c| c.spec.address);
    let list = match direction {
        Direction::ToBackend => &world.record.forwarded,
        Direction::ToClient => &world.record.returned,
    };
    let count = list
        .iter()
        .filter(|(at, name, address)| {
            *at >= start
                && *at <= end
                && backend.as_ref().is_none_or(|b| **name == **b)
                && client_ip.is_none_or(|ip| address.ip() == ip)
        })
        .count() as u64;
    let mut whose = Vec::new();
    if let Some(client) = client {
        whose.push(format!("of {client}"));
    }
    if let Some(backend) = backend {
        whose.push(match direction {
            Direction::ToBackend => format!("to {backend}"),
            Direction::ToClient => format!("from {backend}"),
        });
    }
    let what = match direction {
        Direction::ToBackend => "forwarded",
        Direction::ToClient => "returned",
    };
    let window = match (from, until) {
        (None, None) => String::new(),
        _ => format!(" between {start} and {end}"),
    };
    Verdict {
        what: format!("datagrams {what} {}{window} {}", whose.join(" "), range_text(*at_least, *at_most)),
        passed: range_ok(count, *at_least, *at_most),
        detail: format!("{count}"),
    }
}

/// Health transitions counted in a window, against their bounds.
fn check_transitions(world: &World, transitions: &Transitions) -> Verdict {
    let Transitions { backend, to, from, until, at_least, at_most } = transitions;
    let (start, end) = (Instant::ZERO + from.0, Instant::ZERO + until.0);
    let seen: Vec<String> = world
        .record
        .health
        .iter()
        .filter(|(at, name, health)| {
            *at >= start
                && *at <= end
                && backend.as_ref().is_none_or(|backend| name == backend)
                && to.is_none_or(|to| *health == to)
        })
        .map(|(at, name, health)| format!("{name} {health} at {at}"))
        .collect();
    let whose = backend.as_ref().map_or("any backend".to_owned(), |name| name.to_string());
    let into = to.map_or(String::new(), |to| format!(" to {to}"));
    let count = seen.len() as u64;
    Verdict {
        what: format!(
            "transitions of {whose}{into} between {from} and {until} {}",
            range_text(*at_least, *at_most)
        ),
        passed: range_ok(count, *at_least, *at_most),
        detail: match count {
            0 => format!("{whose}: no transition{into} between {from} and {until}"),
            _ => format!("{whose}: {count} transitions{into}: {}", first_few(&seen)),
        },
    }
}

/// The first few of a list, and how many more there are.
fn first_few(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

/// The longest time the health checker may take to see `backend` reach `target`, from its own
/// rules, plus the network's share: each probe and its answer cross the network (latency,
/// jitter, reordering).
fn detection_bound(world: &World, backend: &str, target: Health) -> std::time::Duration {
    let scenario = &world.scenario;
    let health = scenario
        .lb
        .clusters
        .values()
        .find(|cluster| cluster.backends.iter().any(|b| b.id == backend))
        .map(|cluster| cluster.health.clone())
        .unwrap_or_default();
    let network = &scenario.network;
    let one_way = network.latency + network.jitter + network.reorder_delay;
    let probes = u32::max(health.rise, health.fall) + 1;
    let scheduler = match target {
        Health::Down => udplb_core::health::worst_case_detection(&health, Health::Up),
        _ => udplb_core::health::worst_case_recovery(&health, Health::Down),
    };
    scheduler + one_way * 2 * probes
}

/// The end-of-run summary appended to the trace: what the run did, in numbers.
pub fn summary(world: &World) -> Vec<String> {
    let (sent, answered) = answered(world);
    let (created, active) = flow_totals(world);
    let mut lines = vec![format!("requests: {sent} sent, {answered} answered")];
    lines.push(format!("flows: {created} created, {active} active at the end"));
    let closes: Vec<String> = CloseReason::ALL
        .iter()
        .filter(|r| closed_for(world, **r) > 0)
        .map(|r| format!("{r} {}", closed_for(world, *r)))
        .collect();
    if !closes.is_empty() {
        lines.push(format!("closed: {}", closes.join(", ")));
    }
    let dropped: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| drops(world, **r) > 0)
        .map(|r| format!("{r} {}", drops(world, *r)))
        .collect();
    if !dropped.is_empty() {
        lines.push(format!("drops: {}", dropped.join(", ")));
    }
    if resent(world) > 0 {
        lines.push(format!("retries: {} re-sent", resent(world)));
    }
    if world.record.unserved > 0 {
        lines.push(format!(
            "unserved: {} client datagrams reached an instance that had exited",
            world.record.unserved
        ));
    }
    // Drawn platform faults, when the scenario has any (strays alone do not make the line:
    // they are the core's to count, and existing traces stay as they were).
    let platform = world.record.platform;
    if !world.scenario.platform.is_empty() {
        let counts: Vec<String> =
            platform.named().iter().filter(|(_, v)| *v > 0).map(|(n, v)| format!("{n} {v}")).collect();
        let counts = if counts.is_empty() { "none".to_owned() } else { counts.join(", ") };
        lines.push(format!("platform faults: {counts}"));
    }
    lines.extend(quic_summary(world));
    if !world.scenario.platform.is_empty() || platform.stray_datagrams > 0 {
        let sockets = pool_sockets(world);
        lines.push(format!("upstream pool: {sockets} sockets, {} stray datagrams", platform.stray_datagrams));
    }
    lines
}

/// What QUIC did, when the scenario has `quic` servers or a `quic_lb` cluster (and only
/// then: other traces stay as they were): the connections each server opened and the packets
/// for connections they did not have; how QUIC-LB placed new flows, every instance.
fn quic_summary(world: &World) -> Vec<String> {
    let mut lines = Vec::new();
    let servers: Vec<String> = world
        .backends
        .iter()
        .filter_map(|b| b.quic.as_ref().map(|server| format!("{} {}", b.spec.name, server.connections())))
        .collect();
    if !servers.is_empty() {
        let unknown = world.record.quic_unknown.len();
        lines.push(format!(
            "quic: connections opened {}; {unknown} packets for unknown connections",
            servers.join(", ")
        ));
    }
    let quic_lb = world.instances.iter().any(|i| i.lb.clusters.values().any(|c| c.quic_lb.is_some()))
        || world.scenario.timeline.iter().any(|entry| {
            matches!(&entry.action, crate::scenario::Action::Reload { lb, .. }
                if lb.clusters.values().any(|c| c.quic_lb.is_some()))
        });
    if quic_lb {
        let mut routes = [0u64; QuicRoute::COUNT];
        for driver in &world.drivers {
            for listener in &driver.core().flows().stats().listeners {
                for (total, count) in routes.iter_mut().zip(listener.quic_lb) {
                    *total += count;
                }
            }
        }
        let counts: Vec<String> = QuicRoute::ALL
            .iter()
            .filter(|route| routes[route.index()] > 0)
            .map(|route| format!("{} {}", route.as_str(), routes[route.index()]))
            .collect();
        let counts = if counts.is_empty() { "none".to_owned() } else { counts.join(", ") };
        lines.push(format!("quic-lb new flows: {counts}"));
    }
    lines
}

/// Upstream pool sockets opened over the run, every instance.
pub fn pool_sockets(world: &World) -> u64 {
    world.drivers.iter().map(|d| d.platform().pool_sockets() as u64).sum()
}

/// Client datagrams dropped for `reason`, over every instance.
pub fn client_drops(world: &World, reason: DropReason) -> u64 {
    world.drivers.iter().map(|d| d.core().flows().stats().client_drops(reason)).sum()
}

/// Datagrams dropped for `reason` in either direction, over every instance.
pub fn drops(world: &World, reason: DropReason) -> u64 {
    let stats = world.drivers.iter().map(|d| d.core().flows().stats());
    stats.map(|s| s.client_drops(reason) + s.backend_drops(reason)).sum()
}

/// Flows closed for `reason`, over every instance.
pub fn closed_for(world: &World, reason: CloseReason) -> u64 {
    world.drivers.iter().map(|d| d.core().flows().stats().flows.closed_for(reason)).sum()
}

/// Flows created and flows still alive, over every instance.
pub fn flow_totals(world: &World) -> (u64, u64) {
    let flows = world.drivers.iter().map(|d| &d.core().flows().stats().flows);
    flows.fold((0, 0), |(created, active), f| (created + f.created, active + f.active))
}

/// Requests re-sent after a refusal, over every instance.
pub fn resent(world: &World) -> u64 {
    world.drivers.iter().map(|d| d.core().flows().stats().retries.resent).sum()
}

/// Requests sent and answered over every client.
pub fn answered(world: &World) -> (u64, u64) {
    world.clients.iter().fold((0, 0), |(sent, answered), c| {
        (sent + u64::from(c.requests()), answered + u64::from(c.answered))
    })
}
