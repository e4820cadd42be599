//! What a run saw: health transitions, new flows and where they went, client datagrams
//! forwarded and to which backend, events counted by name, datagrams delivered and lost,
//! broken invariants. The expectations and the report are
//! judged on this record; the trace lines for the balancer's notices are written here too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use udplb_core::balancer::Output;
use udplb_core::health::HealthEvent;
use udplb_core::names::EventName;
use udplb_core::{BackendId, Balancer, FlowId, Health, Instant};

use crate::trace::Trace;

/// What the run saw, for expectations and the trace.
#[derive(Debug, Default)]
pub struct Record {
    /// Health transitions: (time, backend name, new state).
    pub health: Vec<(Instant, String, Health)>,
    /// New flows: (time, backend name).
    pub new_flows: Vec<(Instant, Arc<str>)>,
    /// Client datagrams forwarded (a `Forward` verdict, every worker of every instance):
    /// (time, backend name of their flow, client address).
    pub forwarded: Vec<(Instant, Arc<str>, SocketAddr)>,
    /// Backend datagrams returned to clients (a `Return` verdict, every worker of every
    /// instance): (time, backend name, client address).
    pub returned: Vec<(Instant, Arc<str>, SocketAddr)>,
    /// Instances that exited after SIGTERM: (time, instance).
    pub exits: Vec<(Instant, usize)>,
    /// Client datagrams that reached an instance that had exited (nothing listens there).
    pub unserved: u64,
    /// Reloads the timeline expects refused: (timeline index, expected text, the refusal
    /// seen — `None` if it was accepted).
    pub refused_reloads: Vec<(usize, String, Option<String>)>,
    /// Events, by their stable names, and how often they happened.
    pub events: BTreeMap<EventName, u64>,
    /// Broken invariants, described (bounded).
    pub violations: Vec<String>,
    pub delivered: u64,
    pub lost: u64,
    /// Where each new flow went: (instance, client address — port 0 where flows are keyed by
    /// address alone —, backend name).
    pub placements: Vec<(usize, SocketAddr, Arc<str>)>,
    /// What the balancer's simulated kernel did: drawn `[platform]` faults and strays.
    pub platform: PlatformCounts,
    /// Packets a `quic` backend host received for a connection it does not have: (time, the
    /// host's index, the index of the host that issued the connection ID, if one did).
    pub quic_unknown: Vec<(Instant, usize, Option<usize>)>,
    /// Backend names seen so far, shared by the entries above (one allocation per name, not
    /// per datagram).
    names: Vec<Arc<str>>,
}

/// Counts of what happened on the balancer's sockets, every instance: each drawn `[platform]`
/// fault, and the datagrams that reached an upstream socket from an address with no flow on
/// it (the shell's `udplb_stray_upstream_datagrams_total`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformCounts {
    pub open_failed: u64,
    pub upstream_send_failed: u64,
    pub upstream_too_long: u64,
    pub upstream_buffer_full: u64,
    pub client_send_failed: u64,
    pub client_too_long: u64,
    pub client_buffer_full: u64,
    pub stray_datagrams: u64,
}

impl PlatformCounts {
    /// Every count with its name (the names `platform` expectations use).
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("open_failed", self.open_failed),
            ("upstream_send_failed", self.upstream_send_failed),
            ("upstream_too_long", self.upstream_too_long),
            ("upstream_buffer_full", self.upstream_buffer_full),
            ("client_send_failed", self.client_send_failed),
            ("client_too_long", self.client_too_long),
            ("client_buffer_full", self.client_buffer_full),
            ("stray_datagrams", self.stray_datagrams),
        ]
    }
}

impl Record {
    /// Notes a broken invariant (the first 20 are kept).
    /// `name`, shared.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.iter().find(|known| ***known == *name) {
            return known.clone();
        }
        let shared: Arc<str> = name.into();
        self.names.push(shared.clone());
        shared
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    /// Instance `instance` (whose core is `core`) opened the upstream of `flow`, a new flow to
    /// `backend`, at `now`.
    /// `by_address`: its listener keys flows by client address alone (`client_address`
    /// affinity), so its placement is the client host's, whatever the port.
    pub fn flow_opened(
        &mut self,
        now: Instant,
        instance: usize,
        core: &Balancer,
        flow: FlowId,
        backend: BackendId,
        by_address: bool,
    ) {
        let name = self.name(core.flows().backend(backend).map_or("?", |(name, _)| name));
        if let Some(client) = core.flows().flow(flow).map(|f| f.client) {
            let key = if by_address { SocketAddr::new(client.ip(), 0) } else { client };
            self.placements.push((instance, key, name.clone()));
        }
        self.new_flows.push((now, name));
    }

    /// A worker (whose core is `core`) forwarded a datagram of `client` to `backend` at `now`.
    pub fn forwarded(&mut self, now: Instant, core: &Balancer, backend: BackendId, client: SocketAddr) {
        let name = self.name(core.flows().backend(backend).map_or("?", |(name, _)| name));
        self.forwarded.push((now, name, client));
    }

    /// A worker (whose core is `core`) returned a datagram of `backend` to `client` at `now`.
    pub fn returned(&mut self, now: Instant, core: &Balancer, backend: BackendId, client: SocketAddr) {
        let name = self.name(core.flows().backend(backend).map_or("?", |(name, _)| name));
        self.returned.push((now, name, client));
    }

    /// Something a worker (whose core is `core`) reported at `now`: a trace line and a count
    /// by name for what the trace follows (`traced`: with several instances and workers, each
    /// reports its own view, and the trace follows the first instance's leader), and health
    /// transitions kept.
    pub fn notice(
        &mut self,
        trace: &mut Trace,
        now: Instant,
        traced: bool,
        core: &Balancer,
        output: &Output,
    ) {
        match output {
            _ if !traced => {}
            Output::Health(HealthEvent::Transition { backend, from, to, code, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                trace.line(now, format!("health: {name} {from} -> {to} ({code})"));
                self.health.push((now, name, *to));
            }
            Output::Health(HealthEvent::ClusterAllDown { cluster, .. }) => {
                let name = core.flows().cluster_name(*cluster).unwrap_or("?").to_owned();
                trace.line(now, format!("cluster {name}: all down"));
            }
            Output::Health(HealthEvent::ClusterRecovered { cluster, .. }) => {
                let name = core.flows().cluster_name(*cluster).unwrap_or("?").to_owned();
                trace.line(now, format!("cluster {name}: recovered"));
            }
            Output::Health(HealthEvent::Ejected { backend, until, at, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                trace.line(now, format!("health: {name} ejected for {:?}", *until - *at));
            }
            Output::Health(HealthEvent::Readmitted { backend, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                trace.line(now, format!("health: {name} readmitted"));
            }
            Output::Health(HealthEvent::AdminChanged { backend, from, to, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                trace.line(now, format!("admin: {name} {from} -> {to}"));
            }
            Output::Flow(udplb_core::Output::Event(event)) => {
                let flows = core.flows();
                let listener = |id| flows.listener(id).map_or("?", |(name, _)| name);
                let subject = match event {
                    udplb_core::Event::ListenerDraining { listener: id, flows_remaining } => {
                        format!("{}, {flows_remaining} flows remaining", listener(*id))
                    }
                    udplb_core::Event::ListenerDrained { listener: id }
                    | udplb_core::Event::ListenerResumed { listener: id } => listener(*id).to_owned(),
                    udplb_core::Event::BackendDrained { backend } => {
                        flows.backend(*backend).map_or("?", |(name, _)| name).to_owned()
                    }
                    udplb_core::Event::BackendFault { backend, failure, count } => {
                        let name = flows.backend(*backend).map_or("?", |(name, _)| name);
                        format!("{name} {failure} x{count}")
                    }
                };
                trace.line(now, format!("flow event: {} {subject}", event.name()));
            }
            Output::Frontend { listener, state } => {
                let name = core.flows().listener(*listener).map_or("?", |(name, _)| name).to_owned();
                trace.line(now, format!("listener {name}: {state}"));
            }
            _ => {}
        }
        // Every event the trace follows is counted by its stable name.
        if traced && let Some(event) = output.event_name() {
            *self.events.entry(event).or_default() += 1;
        }
    }
}
