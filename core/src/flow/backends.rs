//! The health view: what the health monitor says about each backend, and what the flow
//! manager does about it.
//!
//! The flow manager never judges health itself. It takes `handle_backend_state` inputs (the
//! composed `Balancer` routes them from the monitor's `BackendChanged` outputs; with several
//! workers, the shell does) and keeps, per backend: whether it may take new flows, its health
//! and admin state, and its live flow count. A backend that goes Down keeps its flows unless
//! its cluster says `on_backend_down = "close"`; a draining backend takes no new flows and is
//! reported drained when its last flow ends.

use super::{AdminError, Event, FlowManager, Output, TimerKey};
use crate::config::OnBackendDown;
use crate::health::{AdminState, BackendState, Health};
use crate::id::{BackendId, ClusterId, ListenerId};
use crate::outcome::CloseReason;
use crate::time::Instant;
use crate::timer::TimerHandle;

impl FlowManager {
    /// Health-view input: the monitor's latest word on `backend`. `eligible` says whether it
    /// may take new flows (health Up or Unknown, and admin Enabled). Unknown backends are
    /// ignored (a report may race with a reload that removed the backend).
    pub fn handle_backend_state(&mut self, now: Instant, backend: BackendId, new: BackendState) {
        let BackendState { eligible, health, admin } = new;
        self.observe(now);
        let Some(state) = self.backends.get_mut(backend.0 as usize).filter(|b| !b.removed) else {
            return;
        };
        let went_down = health == Health::Down && state.health != Health::Down;
        let started_draining = admin == AdminState::Draining && state.admin != AdminState::Draining;
        state.health = health;
        state.admin = admin;
        if admin != AdminState::Draining {
            state.drained_reported = false;
        }
        let cluster_id = state.cluster;
        let cluster = &mut self.clusters[cluster_id.0 as usize];
        if let Some(candidate) = cluster.candidates.iter_mut().find(|c| c.backend == backend) {
            candidate.eligible = eligible;
            candidate.enabled = admin == AdminState::Enabled;
        }
        cluster.selector.update(&cluster.candidates);
        if went_down && cluster.on_backend_down == OnBackendDown::Close {
            let pinned: Vec<u32> =
                self.table.iter().filter(|(_, flow)| flow.backend == backend).map(|(slot, _)| slot).collect();
            for slot in pinned {
                self.close_flow(slot, CloseReason::BackendDown);
            }
        }
        if admin != AdminState::Draining {
            let state = &mut self.backends[backend.0 as usize];
            self.timers.remove(std::mem::replace(&mut state.drain_timer, TimerHandle::DISARMED));
        }
        if started_draining {
            self.report_backend_drained_if_empty(backend);
            let state = &self.backends[backend.0 as usize];
            if let Some(timeout) = self.clusters[cluster_id.0 as usize].backend_drain_timeout
                && state.flows > 0
            {
                let handle = self.timers.insert(now + timeout, TimerKey::BackendDrain(backend));
                self.backends[backend.0 as usize].drain_timer = handle;
            }
        }
        self.debug_check();
    }

    /// A draining backend's `backend_drain_timeout` ran out: its flows left close
    /// (`Drained`), and it is reported drained.
    pub(super) fn backend_drain_deadline_reached(&mut self, backend: BackendId) {
        self.backends[backend.0 as usize].drain_timer = TimerHandle::DISARMED;
        // A scan of the table, once per drain, as for a listener's.
        let remaining: Vec<u32> =
            self.table.iter().filter(|(_, flow)| flow.backend == backend).map(|(slot, _)| slot).collect();
        for slot in remaining {
            self.close_flow(slot, CloseReason::Drained);
        }
    }

    /// Books a flow opening on `backend`.
    pub(super) fn backend_flow_opened(&mut self, backend: BackendId) {
        self.backends[backend.0 as usize].flows += 1;
        self.mirror_flow_count(backend);
    }

    /// Books a flow ending on `backend`; a draining backend's last flow reports it drained.
    pub(super) fn backend_flow_closed(&mut self, backend: BackendId) {
        self.backends[backend.0 as usize].flows -= 1;
        self.mirror_flow_count(backend);
        self.report_backend_drained_if_empty(backend);
    }

    /// Copies a live backend's flow count into its candidate (a removed backend has none).
    fn mirror_flow_count(&mut self, backend: BackendId) {
        let state = &self.backends[backend.0 as usize];
        if !state.removed
            && let Some(candidate) =
                self.clusters[state.cluster.0 as usize].candidates.get_mut(state.candidate)
        {
            candidate.flows = state.flows;
        }
    }

    fn report_backend_drained_if_empty(&mut self, backend: BackendId) {
        let state = &mut self.backends[backend.0 as usize];
        if state.admin == AdminState::Draining
            && state.flows == 0
            && !state.drained_reported
            && !state.removed
        {
            state.drained_reported = true;
            self.timers.remove(std::mem::replace(&mut state.drain_timer, TimerHandle::DISARMED));
            self.outputs.push_back(Output::Event(Event::BackendDrained { backend }));
        }
    }

    /// Live flows pinned to `backend`.
    pub fn backend_flows(&self, backend: BackendId) -> u64 {
        self.backends.get(backend.0 as usize).map_or(0, |b| b.flows)
    }
}

impl FlowManager {
    /// Operator command: a backend's weight until the next reload (which restores the file's).
    pub fn set_backend_weight(
        &mut self,
        now: Instant,
        backend: BackendId,
        weight: u32,
    ) -> Result<(), AdminError> {
        self.observe(now);
        if weight > crate::config::MAX_WEIGHT {
            return Err(AdminError::WeightTooLarge(weight));
        }
        let state = self.backends.get(backend.0 as usize).filter(|b| !b.removed);
        let cluster = state.ok_or(AdminError::UnknownBackend(backend))?.cluster;
        let cluster = &mut self.clusters[cluster.0 as usize];
        if let Some(candidate) = cluster.candidates.iter_mut().find(|c| c.backend == backend) {
            candidate.weight = weight;
        }
        cluster.selector.update(&cluster.candidates);
        self.debug_check();
        Ok(())
    }

    /// Live backends, in id order.
    pub fn backend_ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.backends.iter().enumerate().filter(|(_, b)| !b.removed).map(|(i, _)| BackendId(i as u32))
    }

    /// Live listeners, in id order.
    pub fn listener_ids(&self) -> impl Iterator<Item = ListenerId> + '_ {
        self.listeners.iter().enumerate().filter(|(_, l)| !l.removed).map(|(i, _)| ListenerId(i as u32))
    }

    /// Live clusters, in id order.
    pub fn cluster_ids(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.clusters.iter().enumerate().filter(|(_, c)| !c.removed).map(|(i, _)| ClusterId(i as u32))
    }

    /// A live backend's weight as selection uses it now: the file's, or the one an operator
    /// set since the last reload.
    pub fn backend_weight(&self, backend: BackendId) -> Option<u32> {
        let cluster = self.backend_cluster(backend)?;
        self.clusters[cluster.0 as usize].candidates.iter().find(|c| c.backend == backend).map(|c| c.weight)
    }

    /// The cluster a live listener routes new flows to.
    pub fn listener_cluster(&self, listener: ListenerId) -> Option<ClusterId> {
        self.listeners.get(listener.0 as usize).filter(|l| !l.removed).map(|l| l.cluster)
    }

    /// A live cluster's name.
    pub fn cluster_name(&self, cluster: ClusterId) -> Option<&str> {
        self.clusters.get(cluster.0 as usize).filter(|c| !c.removed).map(|c| c.name.as_str())
    }

    /// A live cluster's backends, in canonical (id) order.
    pub fn cluster_backends(&self, cluster: ClusterId) -> impl Iterator<Item = BackendId> + '_ {
        self.clusters
            .get(cluster.0 as usize)
            .filter(|c| !c.removed)
            .into_iter()
            .flat_map(|c| c.candidates.iter().map(|candidate| candidate.backend))
    }

    /// A live cluster's selection fingerprint: instances with the same selection key and the
    /// same backends in the same states publish the same value (`udplb ctl show clusters`).
    pub fn cluster_fingerprint(&self, cluster: ClusterId) -> Option<u64> {
        self.clusters.get(cluster.0 as usize).filter(|c| !c.removed).map(|c| c.selector.fingerprint())
    }

    /// The cluster of a live backend.
    pub fn backend_cluster(&self, backend: BackendId) -> Option<ClusterId> {
        self.backends.get(backend.0 as usize).filter(|b| !b.removed).map(|b| b.cluster)
    }

    /// Whether the flow manager would give a live backend new flows (its health view).
    pub fn backend_eligible(&self, backend: BackendId) -> Option<bool> {
        let cluster = self.backend_cluster(backend)?;
        self.clusters[cluster.0 as usize].candidates.iter().find(|c| c.backend == backend).map(|c| c.eligible)
    }
}
