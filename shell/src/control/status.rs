//! Read-only views of the running balancer for the control socket: what `udplb ctl show`
//! prints and what `watch` streams. Everything here reads the core (and the configuration
//! it runs, for settings the core does not expose, such as a cluster's algorithm) and
//! changes nothing.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use udplb_core::balancer::Output;

use crate::workers::{FlowAnswer, FlowQuestion, WorkerView};
use udplb_core::config::Affinity;
use udplb_core::health::{CounterView, HealthEvent, HistoryChange};
use udplb_core::{
    BackendId, Balancer, ClusterId, Config, FlowId, FlowInfo, FrontendState, Instant, ListenerId, Reload,
};

use super::protocol::{
    BackendView, ClusterView, FlowExplanation, FlowView, HistoryView, ListenerView, ReloadView, WatchEvent,
};

/// The snake_case name serde gives a configuration enum (`round_robin`, `client_address`).
fn config_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

fn millis_between(now: Instant, earlier: Instant) -> u64 {
    u64::try_from((now - earlier).as_millis()).unwrap_or(u64::MAX)
}

fn frontend_name(state: FrontendState) -> &'static str {
    state.as_str()
}

fn cluster_name(core: &Balancer, cluster: ClusterId) -> String {
    core.flows().cluster_name(cluster).map_or_else(|| cluster.to_string(), str::to_owned)
}

fn listener_name(core: &Balancer, listener: ListenerId) -> String {
    core.flows().listener(listener).map_or_else(|| listener.to_string(), |(name, _)| name.to_owned())
}

/// `cluster` and `id` of a backend; a removed backend keeps its id, its cluster may be gone.
fn backend_names(core: &Balancer, backend: BackendId) -> (String, String) {
    let cluster =
        core.flows().backend_cluster(backend).map_or_else(|| "?".to_owned(), |c| cluster_name(core, c));
    let id = core.flows().backend(backend).map_or_else(|| backend.to_string(), |(id, _)| id.to_owned());
    (cluster, id)
}

/// `totals`: every worker's counters added up (flow counts come from there).
pub(crate) fn listeners(core: &Balancer, config: &Config, totals: &WorkerView) -> Vec<ListenerView> {
    let flows = core.flows();
    flows
        .listener_ids()
        .filter_map(|id| {
            let (name, address) = flows.listener(id)?;
            let settings = config.listeners.get(name);
            let stats = totals.stats.listeners.get(id.0 as usize).map(|s| &s.flows);
            Some(ListenerView {
                name: name.to_owned(),
                address: address.to_string(),
                cluster: flows.listener_cluster(id).map_or_else(String::new, |c| cluster_name(core, c)),
                affinity: settings.map_or_else(|| "?".to_owned(), |l| config_name(&l.affinity)),
                state: core.frontend(id).map_or("unknown", frontend_name).to_owned(),
                draining: flows.is_draining(id),
                flows: stats.map_or(0, |s| s.active),
                flows_retired: stats.map_or(0, |s| s.retired),
                max_flows: settings.and_then(|l| l.max_flows),
            })
        })
        .collect()
}

pub fn clusters(core: &Balancer, config: &Config) -> Vec<ClusterView> {
    let flows = core.flows();
    flows
        .cluster_ids()
        .map(|id| {
            let name = cluster_name(core, id);
            let settings = config.clusters.get(&name);
            let backends: Vec<BackendId> = flows.cluster_backends(id).collect();
            ClusterView {
                algorithm: settings.map_or_else(|| "?".to_owned(), |c| config_name(&c.algorithm)),
                fingerprint: format!("{:016x}", flows.cluster_fingerprint(id).unwrap_or(0)),
                eligible: backends.iter().filter(|b| core.monitor().is_eligible(**b)).count(),
                backends: backends.len(),
                all_down: core.monitor().cluster_all_down(id),
                fail_open: settings.is_some_and(|c| c.fail_open),
                listeners: flows
                    .listener_ids()
                    .filter(|l| flows.listener_cluster(*l) == Some(id))
                    .map(|l| listener_name(core, l))
                    .collect(),
                name,
            }
        })
        .collect()
}

fn counter_text(counter: CounterView) -> String {
    match counter {
        CounterView::Haproxy { health, rise, fall } => format!("{health}/{}", rise + fall - 1),
        CounterView::Consecutive { failures, fall, .. } if failures > 0 => format!("-{failures}/{fall}"),
        CounterView::Consecutive { passes, rise, .. } => format!("+{passes}/{rise}"),
    }
}

fn history_text(change: &HistoryChange) -> String {
    match change {
        HistoryChange::Health { from, to, code } => format!("health {from} -> {to} ({code})"),
        HistoryChange::Admin { from, to } => format!("admin {from} -> {to}"),
        HistoryChange::Restarted { from, to } => format!("restarted {from} -> {to}"),
    }
}

/// `totals`: every worker's counters added up (flow counts come from there).
pub(crate) fn backends(core: &Balancer, now: Instant, totals: &WorkerView) -> Vec<BackendView> {
    let flows = core.flows();
    flows
        .backend_ids()
        .filter_map(|id| {
            let status = core.monitor().backend(id)?;
            let (name, address) = flows.backend(id)?;
            Some(BackendView {
                cluster: cluster_name(core, status.cluster),
                id: name.to_owned(),
                address: address.to_string(),
                health: status.health.to_string(),
                admin: status.admin.to_string(),
                eligible: status.eligible,
                weight: flows.backend_weight(id).unwrap_or(0),
                flows: totals.backend_flows.get(id.0 as usize).copied().unwrap_or(0),
                counter: counter_text(status.counter),
                last_code: status.last_code.map(|code| code.to_string()),
                last_check_ms_ago: status.last_check_at.map(|at| millis_between(now, at)),
                history: status
                    .history
                    .iter()
                    .map(|entry| HistoryView {
                        ms_ago: millis_between(now, entry.at),
                        change: history_text(&entry.change),
                    })
                    .collect(),
            })
        })
        .collect()
}

fn flow_view(core: &Balancer, now: Instant, flow: &FlowInfo) -> FlowView {
    let (cluster, backend) = backend_names(core, flow.backend);
    FlowView {
        flow: flow.flow.serial(),
        worker: 0,
        listener: listener_name(core, flow.listener),
        vip: flow.local.to_string(),
        client: flow.client.to_string(),
        via: flow.via.map(|via| via.to_string()),
        cluster,
        backend,
        backend_address: core.flows().backend(flow.backend).map_or_else(String::new, |(_, a)| a.to_string()),
        age_ms: millis_between(now, flow.created),
        requests: flow.requests,
        responses: flow.responses,
        retired: flow.retired,
    }
}

/// This worker's answer (it is worker `worker`) to a question about flows: its own table
/// only; the leader puts the workers' answers together.
pub(crate) fn answer(
    core: &Balancer,
    config: &Config,
    now: Instant,
    question: &FlowQuestion,
    worker: u32,
) -> FlowAnswer {
    let mut answer = match question {
        FlowQuestion::Flows { limit } => FlowAnswer {
            flows: core.flows().flows().take(*limit).map(|flow| flow_view(core, now, &flow)).collect(),
            total: core.flows().stats().flows.active,
            ..FlowAnswer::default()
        },
        FlowQuestion::Client(client) => match flows_of_client(core, config, now, client) {
            Ok((flows, explanations)) => FlowAnswer { flows, explanations, ..FlowAnswer::default() },
            Err(error) => FlowAnswer { error: Some(error), ..FlowAnswer::default() },
        },
        // The worker closed these flows just before (see `EventLoop::answer_question`); an
        // answer computed here lists nothing.
        FlowQuestion::CloseClient(_) | FlowQuestion::CloseBackend { .. } => FlowAnswer::default(),
        // Followers acknowledge a reload as they apply it (`ToFollower::Reload`).
        FlowQuestion::Reloaded(_) => FlowAnswer::default(),
    };
    for flow in &mut answer.flows {
        flow.worker = worker;
    }
    for explanation in &mut answer.explanations {
        explanation.worker = worker;
    }
    answer
}

/// Flows a close question names: their ids, and their views taken before they close.
pub(crate) struct ToClose {
    pub ids: Vec<FlowId>,
    pub views: Vec<FlowView>,
}

/// The live flows a close question names; an error for a client that is not an address.
/// `None` for a question that closes nothing.
pub(crate) fn flows_to_close(
    core: &Balancer,
    now: Instant,
    question: &FlowQuestion,
) -> Option<Result<ToClose, String>> {
    let matching: Vec<FlowInfo> = match question {
        FlowQuestion::CloseClient(client) => match ClientPattern::parse(client) {
            Ok(pattern) => core.flows().flows().filter(|flow| pattern.matches(flow.client)).collect(),
            Err(error) => return Some(Err(error)),
        },
        FlowQuestion::CloseBackend { backend, .. } => {
            core.flows().flows().filter(|flow| flow.backend == *backend).collect()
        }
        FlowQuestion::Flows { .. } | FlowQuestion::Client(_) | FlowQuestion::Reloaded(_) => return None,
    };
    let ids = matching.iter().map(|flow| flow.flow).collect();
    Some(Ok(ToClose { ids, views: matching.iter().map(|flow| flow_view(core, now, flow)).collect() }))
}

/// A client as `show flow` takes it: one socket (`ip:port`) or every socket of a host (`ip`).
enum ClientPattern {
    Socket(SocketAddr),
    Host(IpAddr),
}

impl ClientPattern {
    fn parse(text: &str) -> Result<ClientPattern, String> {
        if let Ok(socket) = text.parse::<SocketAddr>() {
            return Ok(ClientPattern::Socket(socket));
        }
        text.parse::<IpAddr>().map(ClientPattern::Host).map_err(|_| {
            format!("{text:?} is not a client address: write an IP address, with or without a port")
        })
    }

    fn matches(&self, client: SocketAddr) -> bool {
        match self {
            ClientPattern::Socket(socket) => *socket == client,
            ClientPattern::Host(ip) => *ip == client.ip(),
        }
    }
}

/// The client's live flows and why each went where it went. A scan of the flow table: fine
/// for an operator's command, never done on the datapath.
pub fn flows_of_client(
    core: &Balancer,
    config: &Config,
    now: Instant,
    client: &str,
) -> Result<(Vec<FlowView>, Vec<FlowExplanation>), String> {
    let pattern = ClientPattern::parse(client)?;
    let matching: Vec<FlowInfo> = core.flows().flows().filter(|flow| pattern.matches(flow.client)).collect();
    let views = matching.iter().map(|flow| flow_view(core, now, flow)).collect();
    let explanations = matching.iter().map(|flow| explain(core, config, now, flow)).collect();
    Ok((views, explanations))
}

/// The rule that chose a flow's backend, in words (see [`FlowExplanation::rule`]).
fn rule_text(admission: &udplb_core::Admission, key: &str) -> String {
    use udplb_core::config::Algorithm;
    use udplb_core::flow::QuicRoute;
    let algorithm = config_name(&admission.algorithm);
    let unroutable = match admission.quic {
        None => "",
        Some(QuicRoute::Routed) => {
            return "QUIC-LB: its first datagram's connection ID named this backend's server_id".to_owned();
        }
        Some(QuicRoute::NotQuic) => "QUIC-LB found no QUIC header, so ",
        Some(QuicRoute::UnknownConfig) => {
            "QUIC-LB: the connection ID's config ID is not one of the cluster's, so "
        }
        Some(QuicRoute::TooShort) => "QUIC-LB: the connection ID is too short for its config, so ",
        Some(QuicRoute::UnknownServer) => {
            "QUIC-LB: the connection ID names no backend's server_id (a client's own ID), so "
        }
        Some(QuicRoute::ServerDown) => "QUIC-LB: the connection ID names a backend that was down, so ",
    };
    let mut rule = unroutable.to_owned();
    rule.push_str(&match admission.algorithm {
        Algorithm::Hrw | Algorithm::Maglev => format!("{algorithm} on key [{key}]"),
        Algorithm::RoundRobin => format!("{algorithm} (takes turns; uses no key)"),
        Algorithm::LeastFlows => format!("{algorithm} (fewest flows for its weight; uses no key)"),
        Algorithm::Random | Algorithm::PowerOfTwo => format!("{algorithm} (weighted draws; uses no key)"),
    });
    rule.push_str(&format!(", in pool {}", admission.pool));
    if admission.backup {
        rule.push_str(" of the backups (no primary backend qualified)");
    }
    if admission.fail_open {
        rule.push_str("; in fail-open: no backend was eligible, so health was ignored");
    }
    if admission.retry {
        rule.push_str("; a re-send: another backend refused the request");
    }
    if admission.reselected {
        rule.push_str("; reselected: the client's earlier flow was on a backend that went down");
    }
    rule
}

fn explain(core: &Balancer, config: &Config, now: Instant, flow: &FlowInfo) -> FlowExplanation {
    let flows = core.flows();
    let listener = flows.listener(flow.listener).map_or("?", |(name, _)| name);
    let affinity = config.listeners.get(listener).map_or(Affinity::default(), |l| l.affinity);
    let client = match affinity {
        Affinity::ClientAddressPort => flow.client.to_string(),
        Affinity::ClientAddress => flow.client.ip().to_string(),
    };
    // The address the client used: on a wildcard listener, part of the key.
    let vip = flow.local;
    // The cluster that chose the backend is the backend's own: a reload may have pointed the
    // listener at another cluster since, and the flow stays where it was placed.
    let cluster = flows.backend_cluster(flow.backend);
    let cluster_settings =
        cluster.and_then(|c| flows.cluster_name(c)).and_then(|name| config.clusters.get(name));
    let status = core.monitor().backend(flow.backend);
    let admission = flow.admission;
    let key = format!("vip {vip} + client {client}");
    let algorithm = config_name(&admission.algorithm);
    let algorithm_now = cluster_settings.map(|c| config_name(&c.algorithm)).filter(|now| *now != algorithm);
    let age = std::time::Duration::from_millis(millis_between(now, flow.created));
    let admitted = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    FlowExplanation {
        flow: flow.flow.serial(),
        worker: 0,
        rule: rule_text(&admission, &key),
        algorithm,
        affinity: config_name(&affinity),
        key,
        admitted_at: crate::system::iso8601_utc(admitted),
        pool: admission.pool,
        backup: admission.backup,
        fail_open: admission.fail_open,
        retry: admission.retry,
        reselected: admission.reselected,
        quic_lb: admission.quic.map(|route| route.as_str().to_owned()),
        fingerprint_at_admission: format!("{:08x}", admission.fingerprint_high),
        algorithm_now,
        fingerprint: format!("{:016x}", cluster.and_then(|c| flows.cluster_fingerprint(c)).unwrap_or(0)),
        backend_health_now: status.as_ref().map_or_else(|| "?".to_owned(), |s| s.health.to_string()),
        backend_admin_now: status.as_ref().map_or_else(|| "?".to_owned(), |s| s.admin.to_string()),
        backend_eligible_now: status.is_some_and(|s| s.eligible),
    }
}

/// What a reload did, by name.
pub fn reload_view(core: &Balancer, reload: &Reload, warnings: Vec<String>) -> ReloadView {
    let listeners = |ids: &[ListenerId]| ids.iter().map(|id| listener_name(core, *id)).collect();
    let clusters = |ids: &[ClusterId]| ids.iter().map(|id| cluster_name(core, *id)).collect();
    let backends = |ids: &[BackendId]| {
        ids.iter()
            .map(|id| match backend_names(core, *id) {
                (cluster, backend) if cluster != "?" => format!("{cluster}/{backend}"),
                (_, backend) => backend,
            })
            .collect()
    };
    let summary = &reload.flows;
    ReloadView {
        listeners_added: listeners(&summary.listeners_added),
        listeners_removed: listeners(&summary.listeners_removed),
        listeners_updated: listeners(&summary.listeners_updated),
        clusters_added: clusters(&summary.clusters_added),
        clusters_removed: clusters(&summary.clusters_removed),
        backends_added: backends(&summary.backends_added),
        backends_removed: backends(&summary.backends_removed),
        health_restarted: backends(&reload.health_restarted),
        flows_closed: summary.flows_closed,
        warnings,
    }
}

/// Whether an output is something `watch` streams (see [`watch_event`]); checked before an
/// output is queued, so flow openings and closings never fill the queue.
pub fn is_watch_event(output: &Output) -> bool {
    matches!(output, Output::Health(_) | Output::Frontend { .. } | Output::Flow(udplb_core::Output::Event(_)))
}

/// The `watch` line for an output, or `None` for outputs that are not events (upstreams,
/// probes) or too frequent to stream (every flow opening and closing).
pub fn watch_event(core: &Balancer, output: &Output, now: Instant) -> Option<WatchEvent> {
    let uptime_ms = |at: Instant| at.as_nanos() / 1_000_000;
    let event = match output {
        Output::Health(HealthEvent::Transition { backend, from, to, code, at, .. }) => {
            let (cluster, backend) = backend_names(core, *backend);
            WatchEvent::BackendHealth {
                cluster,
                backend,
                from: from.to_string(),
                to: to.to_string(),
                code: code.to_string(),
                uptime_ms: uptime_ms(*at),
            }
        }
        Output::Health(HealthEvent::AdminChanged { cluster, backend, from, to, at }) => {
            WatchEvent::BackendAdmin {
                cluster: cluster_name(core, *cluster),
                backend: backend_names(core, *backend).1,
                from: from.to_string(),
                to: to.to_string(),
                uptime_ms: uptime_ms(*at),
            }
        }
        Output::Health(HealthEvent::Ejected { cluster, backend, until, at }) => WatchEvent::BackendEjected {
            cluster: cluster_name(core, *cluster),
            backend: backend_names(core, *backend).1,
            for_ms: uptime_ms(*until) - uptime_ms(*at),
            uptime_ms: uptime_ms(*at),
        },
        Output::Health(HealthEvent::Readmitted { cluster, backend, at }) => WatchEvent::BackendReadmitted {
            cluster: cluster_name(core, *cluster),
            backend: backend_names(core, *backend).1,
            uptime_ms: uptime_ms(*at),
        },
        Output::Health(HealthEvent::ClusterAllDown { cluster, at }) => {
            WatchEvent::ClusterAllDown { cluster: cluster_name(core, *cluster), uptime_ms: uptime_ms(*at) }
        }
        Output::Health(HealthEvent::ClusterRecovered { cluster, at }) => {
            WatchEvent::ClusterRecovered { cluster: cluster_name(core, *cluster), uptime_ms: uptime_ms(*at) }
        }
        Output::Frontend { listener, state } => WatchEvent::ListenerState {
            listener: listener_name(core, *listener),
            state: frontend_name(*state).to_owned(),
            uptime_ms: uptime_ms(now),
        },
        Output::Flow(udplb_core::Output::Event(event)) => flow_event(core, event, uptime_ms(now)),
        _ => return None,
    };
    Some(event)
}

fn flow_event(core: &Balancer, event: &udplb_core::Event, uptime_ms: u64) -> WatchEvent {
    use udplb_core::Event;
    match event {
        Event::ListenerDraining { listener, flows_remaining } => WatchEvent::ListenerDraining {
            listener: listener_name(core, *listener),
            flows_remaining: *flows_remaining,
            uptime_ms,
        },
        Event::ListenerDrained { listener } => {
            WatchEvent::ListenerDrained { listener: listener_name(core, *listener), uptime_ms }
        }
        Event::ListenerResumed { listener } => {
            WatchEvent::ListenerResumed { listener: listener_name(core, *listener), uptime_ms }
        }
        Event::BackendDrained { backend } => {
            let (cluster, backend) = backend_names(core, *backend);
            WatchEvent::BackendDrained { cluster, backend, uptime_ms }
        }
        Event::BackendFault { backend, failure, count } => {
            let (cluster, backend) = backend_names(core, *backend);
            WatchEvent::BackendFault {
                cluster,
                backend,
                fault: failure.to_string(),
                count: *count,
                uptime_ms,
            }
        }
    }
}
