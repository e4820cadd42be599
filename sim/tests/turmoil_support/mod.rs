//! A second, independent network for the scenarios: turmoil.
//!
//! [`run`] plays a scenario on turmoil's simulated network instead of the simulator's own
//! discrete-event world. The balancer host runs the same core through the same driver
//! (`udplb_core::driver`), on a [`platform::TurmoilPlatform`] whose sockets are turmoil's; clients
//! and backends run the simulator's host models on turmoil sockets. The timeline's backend
//! actions (kill, restore, refuse_udp, blackhole) open and close the backends' ports; its
//! operator actions (drain_listener, backend commands) go to the balancer. Turmoil has no
//! ICMP, so the harness synthesizes the port unreachable a closed port's kernel would send
//! (see [`icmp`]); TCP probes are real turmoil connects, refused by a closed port.
//!
//! Turmoil's network moves datagrams on a fixed tick with its own latency model, so a run's
//! trace differs from the simulator's; what must not differ is whether each expectation
//! holds. The harness refuses scenarios that use what it does not model (per-datagram loss,
//! duplication and reordering, partitions, floods, PROXY v2 checks, reloads), rather than run
//! them half-modelled.

mod balancer;
pub mod expect;
mod hosts;
mod icmp;
mod platform;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;
use udplb_core::driver::Driver;
use udplb_core::names::EventName;
use udplb_core::{Balancer, CloseReason, Health, Instant, Keys};
use udplb_sim::hosts::{BackendHost, BackendState, ClientHost};
use udplb_sim::scenario::{Action, BackendSpec, ClientModel, Expectation, Scenario};

use balancer::Shared;
use expect::{Facts, Verdict};
use icmp::IcmpStandIn;
use platform::TurmoilPlatform;

/// Turmoil's step: every host runs this long per step, and the network delivers on it.
const TICK: Duration = Duration::from_millis(1);
/// Datagrams a turmoil UDP socket queues before it drops, and connects a TCP listener holds
/// (turmoil's default, 64, is far smaller than the simulator's unbounded sockets, and turmoil
/// panics when a listener overflows: a blackholed backend never accepts its probes).
const SOCKET_QUEUE_MAX: usize = 4_096;

/// `port` on every address of the host: turmoil binds sockets on the unspecified address only
/// (a host has one address anyway).
pub fn any_address(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
}

/// What the turmoil run saw, in the simulator's terms.
#[derive(Debug, Default)]
pub struct Record {
    /// Health transitions: (time, backend name, new state).
    pub health: Vec<(Instant, String, Health)>,
    /// New flows: (time, backend name).
    pub new_flows: Vec<(Instant, String)>,
    /// Events, by their stable names, and how often they happened.
    pub events: BTreeMap<EventName, u64>,
    /// ICMP port unreachable errors the harness synthesized.
    pub icmp_synthesized: u64,
    /// Broken invariants, described (bounded).
    pub violations: Vec<String>,
}

impl Record {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    fn count(&mut self, event: EventName) {
        *self.events.entry(event).or_default() += 1;
    }
}

/// What one turmoil run showed.
#[derive(Debug)]
pub struct TurmoilRun {
    pub verdicts: Vec<Verdict>,
    /// Broken invariants (empty when the run was clean).
    pub violations: Vec<String>,
    /// The run in a few numbers, for the comparison table and the determinism test.
    pub summary: Vec<String>,
}

/// Why the harness will not play a scenario (everything it does not model, joined), or `None`
/// if it models everything the scenario uses.
pub fn unsupported(scenario: &Scenario) -> Option<String> {
    let mut missing = Vec::new();
    let network = &scenario.network;
    if network.loss > 0.0 || network.duplicate > 0.0 || network.reorder > 0.0 || network.icmp_loss > 0.0 {
        missing.push("per-datagram loss, duplication or reordering".to_owned());
    }
    if !network.links.is_empty() {
        missing.push("loss on one host's link".to_owned());
    }
    if !network.icmp_ratelimit.is_zero() {
        missing.push("the per-destination ICMP rate limit".to_owned());
    }
    let mut listener_ips: Vec<IpAddr> = scenario.lb.listeners.values().map(|l| l.address.ip()).collect();
    listener_ips.sort();
    listener_ips.dedup();
    if listener_ips.len() != 1 {
        missing.push("listeners on more than one address (turmoil gives a host one)".to_owned());
    }
    let mut host_ips = listener_ips;
    for client in &scenario.clients {
        if let ClientModel::Flood { .. } = client.model {
            missing.push(format!("client {}: spoofed floods", client.name));
        }
        host_ips.push(client.address);
    }
    for backend in &scenario.backends {
        if backend.expect_proxy.is_some() {
            missing.push(format!("backend {}: PROXY v2 checks", backend.name));
        }
        if backend.reply_port.is_some() || backend.reply_address.is_some() {
            missing.push(format!("backend {}: replies from another port or address", backend.name));
        }
        if !backend.delay_jitter.is_zero() || backend.late_copy.is_some() {
            missing.push(format!("backend {}: varying delays or late copies", backend.name));
        }
        host_ips.push(backend.address.ip());
    }
    if host_ips.iter().any(IpAddr::is_ipv6) {
        missing.push("IPv6 hosts (the turmoil network here is IPv4)".to_owned());
    }
    let count = host_ips.len();
    host_ips.sort();
    host_ips.dedup();
    if host_ips.len() != count {
        missing.push("two hosts on one address".to_owned());
    }
    if scenario.ecmp.count() != 1 {
        missing.push("several balancer instances behind a spreader".to_owned());
    }
    if scenario.lb.process.workers() != 1 {
        missing.push("several workers".to_owned());
    }
    if scenario.rejected.is_some() {
        missing.push("a configuration expected refused".to_owned());
    }
    if !scenario.platform.is_empty() {
        missing.push("[platform] faults of the balancer's sockets".to_owned());
    }
    if scenario.expectations.iter().any(|e| matches!(e, Expectation::ConsistentPlacement { .. })) {
        missing.push("placement across instances".to_owned());
    }
    for expectation in &scenario.expectations {
        let kind = match expectation {
            Expectation::Share(_) => "share",
            Expectation::ClientAnswered { .. } => "client_answered",
            Expectation::AnsweredPerClient(_) => "answered_per_client",
            Expectation::QuicUnknownConnections(_) => "quic_unknown_connections",
            Expectation::NoTransition(_) => "no_transition",
            Expectation::Lost { .. } => "lost",
            Expectation::Transitions(_) => "transitions",
            Expectation::Datagrams(_) => "datagrams",
            Expectation::HealthHeld { .. } => "health_held",
            Expectation::Strays { .. } => "strays",
            Expectation::Exited { .. } => "exited",
            Expectation::Drops { direction, .. }
                if *direction != udplb_sim::scenario::DropDirection::ToBackend =>
            {
                "drops (towards clients)"
            }
            Expectation::Platform { .. } => "platform",
            _ => continue,
        };
        missing.push(format!("the `{kind}` expectation (not judged here yet)"));
    }
    for entry in &scenario.timeline {
        match &entry.action {
            Action::Kill { .. }
            | Action::Restore { .. }
            | Action::RefuseUdp { .. }
            | Action::Blackhole { .. }
            | Action::DrainListener { .. }
            | Action::Backend { .. } => {}
            other => missing.push(format!("timeline action {}", other.name())),
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// Plays `scenario` on turmoil with its own seed and judges its expectations.
pub fn run(scenario: &Scenario) -> Result<TurmoilRun, String> {
    if let Some(why) = unsupported(scenario) {
        return Err(format!("{}: the turmoil harness does not model {why}", scenario.name));
    }
    let core = Balancer::new(&scenario.lb, Keys::from_seed(scenario.seed))
        .map_err(|errors| format!("invalid [lb]: {errors:?}"))?;
    let (operator, operator_inputs) = unbounded_channel();
    let shared = Rc::new(Shared {
        driver: RefCell::new(Driver::new(core, TurmoilPlatform::default())),
        record: RefCell::new(Record::default()),
        closed: RefCell::new(Default::default()),
        operator: RefCell::new(Some(operator_inputs)),
    });
    let World { mut sim, backends, clients } = build(scenario, &shared);
    let mut timeline: Vec<_> = scenario.timeline.iter().collect();
    timeline.sort_by_key(|entry| entry.at);
    let mut timeline = timeline.into_iter().peekable();
    // A timeline action takes effect at the first step at or after its time; scenario times are
    // whole milliseconds, so that is its very time.
    let steps_max = scenario.duration.as_nanos() / TICK.as_nanos() + 1;
    for _ in 0..steps_max {
        let elapsed = sim.elapsed();
        if elapsed >= scenario.duration {
            break;
        }
        while let Some(entry) = timeline.next_if(|entry| entry.at <= elapsed) {
            match &entry.action {
                Action::Kill { backend } => set_state(&shared, &backends, backend, BackendState::Killed)?,
                Action::Restore { backend } => set_state(&shared, &backends, backend, BackendState::Up)?,
                Action::RefuseUdp { backend } => {
                    set_state(&shared, &backends, backend, BackendState::RefusingUdp)?
                }
                Action::Blackhole { backend } => {
                    set_state(&shared, &backends, backend, BackendState::Blackholed)?
                }
                action => operator.send(action.clone()).map_err(|_| "the balancer host is gone")?,
            }
        }
        sim.step().map_err(|error| format!("{}: turmoil: {error}", scenario.name))?;
    }
    // The longest a datagram takes one way here: turmoil's latency, plus the tick it may wait
    // for delivery.
    let one_way_max = scenario.network.latency + scenario.network.jitter + TICK;
    Ok(conclude(scenario, &shared, &clients, one_way_max))
}

/// The turmoil simulation of a scenario, and the handles the test keeps on its hosts.
struct World {
    sim: turmoil::Sim<'static>,
    /// Each backend's state switch and UDP address, by name.
    backends: BTreeMap<String, (watch::Sender<BackendState>, SocketAddr)>,
    clients: Vec<Rc<RefCell<ClientHost>>>,
}

/// Builds turmoil's network and registers the balancer, backend and client hosts on it.
fn build(scenario: &Scenario, shared: &Rc<Shared>) -> World {
    let network = &scenario.network;
    let mut sim = turmoil::Builder::new()
        // A fixed epoch: turmoil's default is the wall clock, which a run must not depend on.
        .epoch(std::time::SystemTime::UNIX_EPOCH)
        .simulation_duration(scenario.duration + TICK * 2)
        .tick_duration(TICK)
        .min_message_latency(network.latency)
        .max_message_latency(network.latency + network.jitter)
        .rng_seed(scenario.seed)
        .udp_capacity(SOCKET_QUEUE_MAX)
        .tcp_capacity(SOCKET_QUEUE_MAX)
        .build();

    // Every listener is on this address (`unsupported` checks it).
    let lb_ip = scenario.lb.listeners.values().map(|l| l.address.ip()).next().expect("a listener");
    // The stand-in's ICMP errors take the scenario's latency each way.
    let (one_way, icmp_per_second) = (network.latency, network.icmp_per_second);
    let balancer_shared = shared.clone();
    sim.host(lb_ip, move || {
        balancer::run(balancer_shared.clone(), IcmpStandIn::new(one_way, icmp_per_second))
    });

    let mut backends = BTreeMap::new();
    for spec in &scenario.backends {
        let host = Rc::new(RefCell::new(BackendHost::new(spec.clone())));
        let (switch, state) = watch::channel(BackendState::Up);
        let tcp_port = spec.tcp_open.then(|| companion_port(scenario, spec));
        sim.host(spec.address.ip(), move || hosts::backend(host.clone(), tcp_port, state.clone()));
        backends.insert(spec.name.clone(), (switch, spec.address));
    }
    let mut clients = Vec::new();
    for spec in &scenario.clients {
        let vip = scenario.lb.listeners[spec.listener.as_str()].address;
        let host = Rc::new(RefCell::new(ClientHost::seeded(spec.clone(), scenario.seed)));
        clients.push(host.clone());
        sim.host(spec.address, move || hosts::client(host.clone(), vip));
    }
    World { sim, backends, clients }
}

/// Puts a backend in `state`: its host opens and closes its ports, and the ICMP stand-in
/// learns whether its UDP port is closed.
fn set_state(
    shared: &Shared,
    backends: &BTreeMap<String, (watch::Sender<BackendState>, SocketAddr)>,
    backend: &str,
    state: BackendState,
) -> Result<(), String> {
    let (switch, address) = backends.get(backend).ok_or(format!("no backend {backend:?}"))?;
    switch.send_replace(state);
    // A closed UDP port is what earns a datagram an ICMP refusal; a firewall sends none.
    let mut closed = shared.closed.borrow_mut();
    if matches!(state, BackendState::Killed | BackendState::RefusingUdp) {
        closed.insert(*address);
    } else {
        closed.remove(address);
    }
    Ok(())
}

/// The end of a run: the last invariant checks, the verdicts and a summary.
fn conclude(
    scenario: &Scenario,
    shared: &Shared,
    clients: &[Rc<RefCell<ClientHost>>],
    one_way_max: Duration,
) -> TurmoilRun {
    let driver = shared.driver.borrow();
    let mut record = shared.record.borrow_mut();
    if let Err(violation) = driver.core().check_invariants() {
        record.violation(format!("end: {violation}"));
    }
    let stats = driver.core().flows().stats().clone();
    let upstreams = driver.platform().upstreams.len() as u64;
    if stats.flows.active != upstreams {
        record.violation(format!("end: {} live flows but {upstreams} upstreams", stats.flows.active));
    }
    let requests = clients.iter().fold((0, 0), |(sent, answered), client| {
        let client = client.borrow();
        (sent + u64::from(client.requests()), answered + u64::from(client.answered))
    });
    let facts = Facts { record: &record, stats: &stats, requests, one_way_max };
    let verdicts = expect::judge(scenario, &facts);
    let closes: Vec<String> = CloseReason::ALL
        .iter()
        .filter(|reason| stats.flows.closed_for(**reason) > 0)
        .map(|reason| format!("{reason} {}", stats.flows.closed_for(*reason)))
        .collect();
    let transitions: Vec<String> =
        record.health.iter().map(|(at, name, health)| format!("{name} {health} at {at}")).collect();
    let summary = vec![
        format!("requests: {} sent, {} answered", requests.0, requests.1),
        format!("flows: {} created, {} active at the end", stats.flows.created, stats.flows.active),
        format!("closed: {}", closes.join(", ")),
        format!("icmp synthesized: {}", record.icmp_synthesized),
        format!("health: {}", transitions.join(", ")),
    ];
    TurmoilRun { verdicts, violations: record.violations.clone(), summary }
}

/// The TCP port a backend's health probes connect to: its cluster's `tcp_port`, or its own.
fn companion_port(scenario: &Scenario, spec: &BackendSpec) -> u16 {
    scenario
        .lb
        .clusters
        .values()
        .find(|cluster| cluster.backends.iter().any(|b| b.id == spec.name))
        .and_then(|cluster| cluster.health.tcp_port)
        .unwrap_or(spec.address.port())
}
