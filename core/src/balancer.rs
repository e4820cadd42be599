//! The core for one worker: a health monitor and a flow manager behind one type.
//!
//! The two halves are separate so that several workers can share one monitor later: the flow
//! manager reports what the datapath saw (`PassiveFailure`), the monitor reports what it
//! concluded (`BackendChanged`), and nothing else passes between them. [`Balancer`] routes
//! those two kinds of output internally, so its caller sees only what the shell must act on:
//! upstreams to open, close or send on, probes to start, and events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::config::{Config, ValidationError};
use crate::flow::{
    self, AdminCommand, AdminError, FlowManager, Incoming, Keys, ReloadSummary, UpstreamError,
};
pub use crate::health::BackendState;
use crate::health::{
    AdminState, Health, HealthEvent, HealthMonitor, HealthOutput, MonitorInvariantViolation,
    MonitoredBackend, ProbeRequest, ProbeResult,
};
use crate::id::{BackendId, FlowId, ListenerId, ProbeId};
use crate::outcome::PassiveFailure;
use crate::time::Instant;
use std::net::SocketAddr;

mod snapshot;

/// What the caller (the shell, the simulator) acts on or shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Datapath control and flow events (never `PassiveFailure`: that goes to the monitor).
    Flow(flow::Output),
    /// Start a probe; report its outcome with [`Input::ProbeResult`] / [`Input::ProbeReply`].
    Probe(ProbeRequest),
    /// A health event: transitions, admin changes, cluster all-down and recovered.
    Health(HealthEvent),
    /// A listener's state, derived from its cluster's backends, changed.
    Frontend { listener: ListenerId, state: FrontendState },
    /// [`Role::Leader`] only: a backend's state changed; every follower must be told, with
    /// [`Input::BackendState`].
    BackendState { backend: BackendId, state: BackendState },
}

/// Every input to the core that is not a datagram, for [`Balancer::handle`].
///
/// The two datagram inputs ([`Balancer::handle_client_datagram`],
/// [`Balancer::handle_backend_datagram`]) return verdicts and stay separate; a reload
/// ([`Balancer::apply_config`]) returns what it changed. Everything else is one of these, so a
/// worker's message, a failure a platform found after the fact and a simulated operator's
/// action are all the same value, and a run can be recorded and replayed as a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The timer fired (early is harmless): run every deadline due at or before `now`.
    Timeout,
    /// An error on a flow's upstream: an ICMP refusal or unreachable, or a send that failed.
    UpstreamError { flow: FlowId, error: UpstreamError },
    /// A reply for a client of `listener` could not be sent after all (a batched send
    /// failed): it counts as dropped (`SendFailed`) instead of returned.
    ReturnFailed { listener: ListenerId, bytes: usize },
    /// The outcome of a probe (TCP, or a UDP probe's failure).
    ProbeResult { probe: ProbeId, result: ProbeResult },
    /// A UDP probe's reply; the core compares it with the expected one.
    ProbeReply { probe: ProbeId, reply: Vec<u8> },
    /// A datagram on an upstream socket from an address that matches no flow. The core
    /// attributes it: from a backend's own address it is a late reply to a flow that ended
    /// (counted as `unknown_flow`); from a backend's IP but another port, a reply sent from the
    /// wrong source (counted against that backend, and a passive failure); from anywhere else,
    /// a stranger (`unknown_flow`).
    StrayReply { from: SocketAddr, bytes: usize },
    /// [`Role::Leader`]: a passive failure another worker's datapath saw.
    PassiveFailure { backend: BackendId, failure: PassiveFailure },
    /// [`Role::Leader`]: requests another worker's datapath saw answered by `backend` (see
    /// [`flow::Output::PassiveSuccess`]).
    PassiveSuccess { backend: BackendId, answered: u32 },
    /// [`Role::Follower`]: the leader's [`Output::BackendState`].
    BackendState { backend: BackendId, state: BackendState },
    /// A listener or flow command (drain, resume, close).
    Admin(AdminCommand),
    /// An operator command for one backend.
    Backend { backend: BackendId, command: BackendCommand },
}

/// Which part of a process's balancing one `Balancer` does. A process with one worker has
/// one `Whole` balancer. With several workers (threads with their own listener sockets and
/// flow tables), one is the `Leader`: its health monitor probes and decides for all, and it
/// reports every backend state change ([`Output::BackendState`]); the others are
/// `Follower`s: they never probe, take backend states from the leader
/// ([`Input::BackendState`]) and hand their passive failures to the caller
/// (`Output::Flow(flow::Output::PassiveFailure { .. })`) for the leader's
/// [`Input::PassiveFailure`]. The same configuration (and reloads in the same
/// order) gives every worker the same backend ids.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Monitor and flows of a one-worker process.
    #[default]
    Whole,
    /// Monitor for the process, and one worker's flows.
    Leader,
    /// One worker's flows; health comes from the leader.
    Follower,
}

/// A listener's state as its clients would see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FrontendState {
    /// No check result yet for any eligible backend (right after start or reload).
    Unknown,
    /// At least one eligible backend is Up.
    Up,
    /// No backend is eligible: new flows fail open or are dropped.
    Down,
}

/// An operator command for one backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendCommand {
    /// Freeze health: no probes, passive failures ignored, its health state kept as it was;
    /// it takes no new flows until resumed (existing flows continue).
    Pause,
    /// Undo `Pause`.
    Resume,
    /// Take new flows again (after `Disable` or `Drain`).
    Enable,
    /// No new flows; existing flows continue.
    Disable,
    /// No new flows; existing flows finish, then `BackendDrained` is reported.
    Drain,
    /// Set the weight until the next reload.
    Weight(u32),
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Listeners, clusters, backends and flows.
    pub flows: ReloadSummary,
    /// Kept backends whose health settings (or probe target) changed: back to Unknown.
    pub health_restarted: Vec<BackendId>,
}

/// Bound on the routing loop between the halves. Each pass can only cause the next one to do
/// less (a passive failure may change a backend's state; a state change may close flows,
/// which report nothing further), so three passes always settle; the bound is a safety net.
const MAX_ROUTING_PASSES: usize = 8;

/// The sans-io core for one worker.
#[derive(Debug)]
pub struct Balancer {
    flows: FlowManager,
    monitor: HealthMonitor,
    outputs: VecDeque<Output>,
    frontends: BTreeMap<ListenerId, FrontendState>,
    role: Role,
    /// A follower's backend states, as the leader last sent them.
    followed: BTreeMap<BackendId, BackendState>,
}

impl Balancer {
    /// Builds the core for a configuration (validated first).
    pub fn new(config: &Config, keys: Keys) -> Result<Balancer, Vec<ValidationError>> {
        Balancer::with_role(config, keys, Role::Whole)
    }

    /// Builds one worker's core for a configuration (validated first); see [`Role`].
    pub fn with_role(config: &Config, keys: Keys, role: Role) -> Result<Balancer, Vec<ValidationError>> {
        let flows = FlowManager::new(config, keys.clone())?;
        let monitor = HealthMonitor::new(&keys.selection);
        let mut balancer = Balancer {
            flows,
            monitor,
            outputs: VecDeque::new(),
            frontends: BTreeMap::new(),
            role,
            followed: BTreeMap::new(),
        };
        let everything = ReloadSummary {
            backends_added: balancer.flows.backend_ids().collect(),
            ..ReloadSummary::default()
        };
        balancer.sync_monitor(Instant::ZERO, config, &everything);
        balancer.route(Instant::ZERO);
        // The starting states are not news.
        balancer.frontends = balancer.frontend_states();
        balancer.outputs.clear();
        Ok(balancer)
    }

    // ----- inputs -----------------------------------------------------------------------

    /// See [`FlowManager::handle_client_datagram`].
    pub fn handle_client_datagram(
        &mut self,
        now: Instant,
        datagram: flow::ClientDatagram<'_>,
    ) -> flow::ClientVerdict {
        // An overdue reply of the client's flow is written off first, and its passive failures
        // reach the monitor before the datagram picks a new flow's backend.
        if self.flows.write_off_overdue(now, datagram.listener, datagram.local, datagram.client) {
            self.route(now);
        }
        let verdict = self.flows.handle_client_datagram(now, datagram);
        self.route(now);
        verdict
    }

    /// See [`FlowManager::handle_backend_datagram`].
    pub fn handle_backend_datagram(
        &mut self,
        now: Instant,
        flow: crate::id::FlowId,
        payload: &[u8],
        truncated: bool,
    ) -> flow::BackendVerdict {
        let verdict = self.flows.handle_backend_datagram(now, flow, payload, truncated);
        self.route(now);
        verdict
    }

    /// See [`FlowManager::accept`].
    pub fn accept(&mut self, now: Instant, incoming: Incoming, datagram: &[u8]) -> flow::ClientVerdict {
        let verdict = self.flows.accept(now, incoming, datagram);
        self.route(now);
        verdict
    }

    /// See [`FlowManager::refuse`].
    pub fn refuse(&mut self, now: Instant, incoming: Incoming) {
        self.flows.refuse(now, incoming);
        self.route(now);
    }

    /// Every other input. Only operator commands can be refused; the rest return `Ok`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), AdminError> {
        let result = match input {
            Input::Timeout => {
                self.flows.handle_timeout(now);
                // A follower's monitor has no deadlines: it never probes.
                if self.role != Role::Follower {
                    self.monitor.handle_timeout(now);
                }
                Ok(())
            }
            // Refusals also reach the health monitor (as passive failures, through `route`).
            Input::UpstreamError { flow, error } => {
                self.flows.handle_upstream_error(now, flow, error);
                Ok(())
            }
            Input::ReturnFailed { listener, bytes } => {
                self.flows.handle_return_failed(now, listener, bytes);
                Ok(())
            }
            Input::ProbeResult { probe, result } => {
                self.monitor.handle_probe_result(now, probe, result);
                Ok(())
            }
            Input::ProbeReply { probe, reply } => {
                self.monitor.handle_probe_reply(now, probe, &reply);
                Ok(())
            }
            Input::StrayReply { from, bytes } => {
                self.flows.handle_stray_reply(now, from, bytes);
                Ok(())
            }
            Input::PassiveFailure { backend, failure } => {
                if self.role != Role::Follower {
                    self.monitor.handle_passive_failure(now, backend, failure);
                }
                Ok(())
            }
            Input::PassiveSuccess { backend, answered } => {
                if self.role != Role::Follower {
                    self.monitor.handle_passive_success(now, backend, answered);
                }
                Ok(())
            }
            Input::BackendState { backend, state } => {
                self.follow(now, backend, state);
                Ok(())
            }
            Input::Admin(command) => self.flows.handle_admin(now, command),
            Input::Backend { backend, command } => self.backend_command(now, backend, command),
        };
        self.route(now);
        result
    }

    /// [`Role::Follower`]: applies the leader's state for a backend. Unknown backends (a state
    /// sent before this worker applied the reload that added them) are ignored.
    fn follow(&mut self, now: Instant, backend: BackendId, state: BackendState) {
        if self.role == Role::Follower
            && state.admin != AdminState::Removed
            && self.flows.backend(backend).is_some()
        {
            self.flows.handle_backend_state(now, backend, state);
            self.followed.insert(backend, state);
        }
    }

    /// This balancer's part (see [`Role`]).
    pub fn role(&self) -> Role {
        self.role
    }

    fn backend_command(
        &mut self,
        now: Instant,
        backend: BackendId,
        command: BackendCommand,
    ) -> Result<(), AdminError> {
        let unknown = |_| AdminError::UnknownBackend(backend);
        let admin = self
            .monitor
            .backend(backend)
            .map(|status| status.admin)
            .ok_or(AdminError::UnknownBackend(backend))?;
        match command {
            BackendCommand::Weight(weight) => self.flows.set_backend_weight(now, backend, weight),
            BackendCommand::Resume if admin != AdminState::Paused => {
                Err(AdminError::NotPaused { backend, state: admin })
            }
            BackendCommand::Pause => {
                self.monitor.set_admin(now, backend, AdminState::Paused).map_err(unknown)
            }
            BackendCommand::Resume | BackendCommand::Enable => {
                self.monitor.set_admin(now, backend, AdminState::Enabled).map_err(unknown)
            }
            BackendCommand::Disable => {
                self.monitor.set_admin(now, backend, AdminState::Disabled).map_err(unknown)
            }
            BackendCommand::Drain => {
                self.monitor.set_admin(now, backend, AdminState::Draining).map_err(unknown)
            }
        }
    }

    /// Replaces the configuration. Invalid: nothing changes. Backends that keep their
    /// identity keep their flows, and their health unless their health settings changed.
    pub fn apply_config(&mut self, now: Instant, config: &Config) -> Result<Reload, Vec<ValidationError>> {
        let summary = self.flows.apply_config(now, config)?;
        let health_restarted = self.sync_monitor(now, config, &summary);
        self.route(now);
        Ok(Reload { flows: summary, health_restarted })
    }

    // ----- outputs ----------------------------------------------------------------------

    /// The next output, or `None`. Drain after every call, once its verdict is acted on.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline of either half.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let monitor = if self.role == Role::Follower { None } else { self.monitor.poll_timeout() };
        match (self.flows.poll_timeout(), monitor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The datapath half (flows, counters).
    pub fn flows(&self) -> &FlowManager {
        &self.flows
    }

    /// The health half (backend states, history).
    pub fn monitor(&self) -> &HealthMonitor {
        &self.monitor
    }

    /// A listener's current state.
    pub fn frontend(&self, listener: ListenerId) -> Option<FrontendState> {
        self.frontends.get(&listener).copied()
    }

    /// Both halves' invariants, and that they agree on every backend's eligibility.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.flows.check_invariants().map_err(|e| e.to_string())?;
        self.monitor.check_invariants().map_err(|e: MonitorInvariantViolation| e.to_string())?;
        if self.role == Role::Follower {
            // Its monitor only registers backends; eligibility is the leader's.
            return Ok(());
        }
        for backend in self.monitor.backend_ids() {
            let monitor = self.monitor.is_eligible(backend);
            if let Some(flows) = self.flows.backend_eligible(backend)
                && flows != monitor
            {
                return Err(format!(
                    "{backend}: the monitor says eligible = {monitor}, the flow manager {flows}"
                ));
            }
        }
        Ok(())
    }

    // ----- internals --------------------------------------------------------------------

    /// Tells the monitor about added, removed and kept backends. Returns the kept backends
    /// whose health restarted.
    fn sync_monitor(&mut self, now: Instant, config: &Config, summary: &ReloadSummary) -> Vec<BackendId> {
        for backend in &summary.backends_removed {
            self.monitor.remove_backend(now, *backend);
        }
        let mut restarted = Vec::new();
        let mut health_by_cluster = BTreeMap::new();
        for backend in summary.backends_added.iter().chain(&summary.backends_kept) {
            let Some(spec) = self.monitored(config, *backend, &mut health_by_cluster) else { continue };
            if summary.backends_added.contains(backend) {
                self.monitor.add_backend(now, *backend, spec);
            } else if self.monitor.update_backend(now, *backend, spec) {
                restarted.push(*backend);
            }
        }
        restarted
    }

    fn monitored(
        &self,
        config: &Config,
        backend: BackendId,
        health_by_cluster: &mut BTreeMap<String, Arc<crate::config::HealthConfig>>,
    ) -> Option<MonitoredBackend> {
        let cluster = self.flows.backend_cluster(backend)?;
        let cluster_name = self.flows.cluster_name(cluster)?.to_owned();
        let (id, address) = self.flows.backend(backend)?;
        let cluster_config = config.clusters.get(&cluster_name)?;
        let health = health_by_cluster
            .entry(cluster_name.clone())
            .or_insert_with(|| Arc::new(cluster_config.health.clone()))
            .clone();
        Some(MonitoredBackend {
            cluster,
            cluster_name,
            id: id.to_owned(),
            address,
            health,
            proxy_v2_local: cluster_config.proxy_protocol.mode != crate::config::ProxyProtocolMode::Off,
        })
    }

    /// Moves outputs between the halves until both are drained; queues the rest for the
    /// caller.
    fn route(&mut self, now: Instant) {
        let mut backends_changed = false;
        for _ in 0..MAX_ROUTING_PASSES {
            let mut moved = false;
            while let Some(output) = self.flows.poll_output() {
                moved = true;
                match output {
                    flow::Output::PassiveFailure { backend, failure } if self.role != Role::Follower => {
                        self.monitor.handle_passive_failure(now, backend, failure)
                    }
                    flow::Output::PassiveSuccess { backend, answered } if self.role != Role::Follower => {
                        self.monitor.handle_passive_success(now, backend, answered)
                    }
                    other => self.outputs.push_back(Output::Flow(other)),
                }
            }
            while let Some(output) = self.monitor.poll_output() {
                moved = true;
                match output {
                    HealthOutput::BackendChanged { backend, state } => {
                        backends_changed = true;
                        if self.role == Role::Leader {
                            self.outputs.push_back(Output::BackendState { backend, state });
                        }
                        // A follower's own monitor only registers backends (Unknown, as the
                        // leader's start them); a state the leader sent for a kept one wins.
                        let removed = state.admin == AdminState::Removed;
                        let state = match self.followed.get(&backend) {
                            Some(followed) if self.role == Role::Follower && !removed => *followed,
                            _ => state,
                        };
                        if !removed {
                            self.flows.handle_backend_state(now, backend, state);
                        } else {
                            self.followed.remove(&backend);
                        }
                    }
                    HealthOutput::StartProbe(_) if self.role == Role::Follower => {}
                    HealthOutput::StartProbe(probe) => self.outputs.push_back(Output::Probe(probe)),
                    HealthOutput::Event(event) => self.outputs.push_back(Output::Health(event)),
                }
            }
            if !moved {
                break;
            }
        }
        // A follower's monitor does not know the health: listener states are the leader's.
        if backends_changed && self.role != Role::Follower {
            self.update_frontends();
        }
    }

    fn update_frontends(&mut self) {
        let current = self.frontend_states();
        for (listener, state) in &current {
            if self.frontends.get(listener) != Some(state) {
                self.outputs.push_back(Output::Frontend { listener: *listener, state: *state });
            }
        }
        self.frontends = current;
    }

    fn frontend_states(&self) -> BTreeMap<ListenerId, FrontendState> {
        let mut states = BTreeMap::new();
        for listener in self.flows.listener_ids() {
            let Some(cluster) = self.flows.listener_cluster(listener) else { continue };
            let mut state = FrontendState::Down;
            for backend in self.flows.cluster_backends(cluster) {
                if !self.monitor.is_eligible(backend) {
                    continue;
                }
                match self.monitor.backend(backend).map(|status| status.health) {
                    Some(Health::Up) => {
                        state = FrontendState::Up;
                        break;
                    }
                    Some(Health::Unknown) => state = FrontendState::Unknown,
                    _ => {}
                }
            }
            states.insert(listener, state);
        }
        states
    }
}
