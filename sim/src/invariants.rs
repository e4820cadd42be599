//! What must hold in every run, whatever its scenario expects: the core's own invariants,
//! every upstream the core believes open is open on its platform, no new flow to an ineligible
//! backend outside fail-open (nor one routed by its QUIC connection ID to a backend that is
//! Down), a client's datagrams stay on one flow while it takes them, every
//! backend is Up at the end of a run whose faults all healed in time, and the PROXY v2 headers
//! the backends received were well formed. A broken one becomes a violation in the record.

use std::net::SocketAddr;
use std::time::Duration;

use udplb_core::driver::Driver;
use udplb_core::flow::QuicRoute;
use udplb_core::{AdminState, BackendId, Balancer, FlowId, Health, Instant, ListenerId};

use crate::hosts::{BackendHost, BackendState};
use crate::network::Network;
use crate::platform::SimPlatform;
use crate::record::Record;
use crate::scenario::Scenario;

/// The core's own invariants on every instance, plus what only the simulated platform can
/// see: every upstream the core believes open is open there, and none more.
pub fn check_instances(now: Instant, drivers: &[Driver<SimPlatform>], record: &mut Record) {
    for (instance, driver) in drivers.iter().enumerate() {
        if let Err(violation) = driver.core().check_invariants() {
            record.violation(format!("{now} instance {instance}: {violation}"));
        }
        let live_flows = driver.core().flows().stats().flows.active;
        let open_upstreams = driver.platform().upstreams.len() as u64;
        if live_flows != open_upstreams {
            record.violation(format!(
                "{now} instance {instance}: {live_flows} live flows, {open_upstreams} open upstreams"
            ));
        }
    }
}

/// Flows an instance has let through in fail-open, over its listeners: a new flow to an
/// ineligible backend is allowed only in a call that raised this count.
pub fn fail_open_flows(driver: &Driver<SimPlatform>) -> u64 {
    driver.core().flows().stats().listeners.iter().map(|l| l.fail_open_flows).sum()
}

/// No new flow to an ineligible backend, outside fail-open — but a flow QUIC-LB routed by its
/// connection ID belongs to a connection its backend holds, and goes there unless the backend
/// is Down (a disabled, paused, drained or ejected backend keeps its connections).
pub fn check_new_flow(
    now: Instant,
    core: &Balancer,
    flow: FlowId,
    backend: BackendId,
    failed_open: bool,
    record: &mut Record,
) {
    let routed = core.flows().flow(flow).is_some_and(|f| f.admission.quic == Some(QuicRoute::Routed));
    let down = core.monitor().backend(backend).is_some_and(|status| status.health == Health::Down);
    if routed && down {
        let name = core.flows().backend(backend).map_or("?", |(name, _)| name);
        record.violation(format!("{now}: new flow routed by its connection ID to {name}, which is Down"));
    } else if !routed && !core.monitor().is_eligible(backend) && !failed_open {
        let name = core.flows().backend(backend).map_or("?", |(name, _)| name);
        record.violation(format!("{now}: new flow to ineligible backend {name}"));
    }
}

/// Affinity, seen from outside: a client's datagrams stay on one flow (and so one backend)
/// while that flow takes datagrams. Moving to another flow is only allowed once the previous
/// one has ended or retired (`requests` reached).
#[derive(Debug, Default)]
pub struct Affinity {
    /// Per worker, listener and client address: the last flow its datagrams rode (looked up
    /// per datagram, never iterated).
    last: hashbrown::HashMap<(usize, ListenerId, SocketAddr), FlowId>,
}

impl Affinity {
    /// Instance `instance` (whose core is `core`) forwarded a datagram from `client` on
    /// `listener` over `flow`, at `now`; the violation if the client left a flow still open.
    pub fn check(
        &mut self,
        now: Instant,
        instance: usize,
        core: &Balancer,
        listener: ListenerId,
        client: SocketAddr,
        flow: FlowId,
    ) -> Result<(), String> {
        if let Some(previous) = self.last.insert((instance, listener, client), flow)
            && previous != flow
            && let Some(info) = core.flows().flow(previous)
            && !info.retired
        {
            return Err(format!("{now}: {client} moved from {previous} (still open) to {flow}"));
        }
        Ok(())
    }
}

/// Liveness after the last heal: if the run ends with every fault removed (backends
/// answering, no partition, no loss) and long enough after the last timeline action for the
/// slowest recovery the health scheduler allows, every backend the checks can see is Up on
/// every instance.
pub fn check_liveness(
    scenario: &Scenario,
    network: &Network,
    backends: &[BackendHost],
    drivers: &[&Driver<SimPlatform>],
    record: &mut Record,
) {
    let fault_free = network.fault_free()
        && backends.iter().all(|b| b.state == BackendState::Up && !b.answers_elsewhere())
        && drivers
            .iter()
            .all(|d| d.platform().path_mtus.values().all(|(_, expires)| *expires <= d.platform().now));
    let last_action = scenario.timeline.iter().map(|t| t.at).max().unwrap_or_default();
    let settle = scenario
        .lb
        .clusters
        .values()
        .map(|c| udplb_core::health::worst_case_recovery(&c.health, Health::Down))
        .max()
        .unwrap_or_default();
    let end = scenario.duration;
    if !fault_free || settle == Duration::MAX || last_action + settle + Duration::from_secs(1) > end {
        return;
    }
    for driver in drivers {
        let core = driver.core();
        if core.role() == udplb_core::Role::Follower {
            // A follower's health is its leader's, relayed.
            continue;
        }
        for backend in core.monitor().backend_ids() {
            let status = core.monitor().backend(backend);
            let down = status.as_ref().is_some_and(|s| s.health == Health::Down);
            let enabled = status.as_ref().is_some_and(|s| s.admin == AdminState::Enabled);
            if down && enabled {
                let name = core.flows().backend(backend).map_or("?", |(n, _)| n).to_owned();
                record.violation(format!("liveness: {name} still Down at the end, after every fault healed"));
            }
        }
    }
}

/// The PROXY v2 headers the backends found wrong, every one of them.
pub fn check_proxy_headers(backends: &[BackendHost], record: &mut Record) {
    for backend in backends {
        for violation in &backend.proxy_violations {
            record.violations.push(format!("PROXY v2: {violation}"));
        }
    }
}
