//! Applying a whole configuration: at start, and on every reload.
//!
//! Identities decide what survives a reload. A listener is its (name, address, affinity): the
//! address and affinity are part of every flow key, so changing either makes a new listener.
//! A cluster is its name. A backend is its (cluster, id, address): a changed address is a new
//! backend. Whatever keeps its identity keeps its id, its flows and (in the health monitor)
//! its health; ids of removed things are never reused, so a stale handle stays unknown.
//! Everything else (weights, teardown knobs, caps, PROXY settings) is updated in place, and
//! every live flow is re-armed once, since its deadline may have moved either way.

use super::{Backend, Cluster, DrainState, FlowManager, Listener};
use crate::config::{ClusterConfig, Config, EmptyDatagrams, ValidationError};
use crate::health::{AdminState, Health};
use crate::id::{BackendId, ClusterId, ListenerId};
use crate::outcome::CloseReason;
use crate::select::{Candidate, Selector, identity_hash};
use crate::stats::ListenerStats;
use crate::time::Instant;
use crate::timer::TimerHandle;

use super::entry::Teardown;

/// What a configuration change did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub listeners_added: Vec<ListenerId>,
    pub listeners_removed: Vec<ListenerId>,
    /// Kept listeners whose cluster, caps or drain timeout changed.
    pub listeners_updated: Vec<ListenerId>,
    pub clusters_added: Vec<ClusterId>,
    pub clusters_removed: Vec<ClusterId>,
    pub backends_added: Vec<BackendId>,
    pub backends_removed: Vec<BackendId>,
    /// Backends that kept their identity (and so their flows and health).
    pub backends_kept: Vec<BackendId>,
    /// Flows closed because their backend or listener went away.
    pub flows_closed: u64,
}

impl ReloadSummary {
    /// Whether the reload changed nothing.
    pub fn is_empty(&self) -> bool {
        self.listeners_added.is_empty()
            && self.listeners_removed.is_empty()
            && self.listeners_updated.is_empty()
            && self.clusters_added.is_empty()
            && self.clusters_removed.is_empty()
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.flows_closed == 0
    }
}

impl FlowManager {
    /// Replaces the configuration. An invalid configuration changes nothing and returns its
    /// errors. Listeners, clusters and backends that keep their identity keep their ids and
    /// flows; flows of removed backends close (`BackendRemoved`), flows of removed listeners
    /// close (`ListenerRemoved`).
    pub fn apply_config(
        &mut self,
        now: Instant,
        config: &Config,
    ) -> Result<ReloadSummary, Vec<ValidationError>> {
        config.validate()?;
        let now = self.observe(now);
        let mut summary = ReloadSummary::default();
        self.max_flows = config.process.max_flows();
        self.flows_at_cap_change = self.stats.flows.active;
        self.retry_slots.set_limit(u64::from(config.process.retry_buffer_bytes()));

        for (name, cluster) in &config.clusters {
            self.apply_cluster(name, cluster, &mut summary);
        }
        for index in 0..self.clusters.len() {
            let cluster = &mut self.clusters[index];
            if !cluster.removed && !config.clusters.contains_key(&cluster.name) {
                cluster.removed = true;
                for candidate in std::mem::take(&mut cluster.candidates) {
                    let backend = &mut self.backends[candidate.backend.0 as usize];
                    backend.removed = true;
                    // A drain's deadline goes with it (its flows close as BackendRemoved).
                    self.timers.remove(std::mem::replace(&mut backend.drain_timer, TimerHandle::DISARMED));
                    summary.backends_removed.push(candidate.backend);
                }
                summary.clusters_removed.push(ClusterId(index as u32));
            }
        }

        // Listeners whose source table was rebuilt: their flows are counted into it below.
        let mut rebuilt_sources: Vec<usize> = Vec::new();
        for (name, listener) in &config.listeners {
            let cluster = self.cluster_named(&listener.cluster);
            let existing = self.listeners.iter().position(|l| {
                !l.removed
                    && l.name == *name
                    && l.address == listener.address
                    && l.affinity == listener.affinity
            });
            let max_flows = listener.max_flows.unwrap_or(self.max_flows).min(self.max_flows);
            match existing {
                Some(index) => {
                    let kept = &mut self.listeners[index];
                    let settings = |l: &Listener| {
                        (l.cluster, l.max_flows, l.max_datagram_size, l.drops_empty, l.drain_timeout)
                    };
                    let before = settings(kept);
                    kept.cluster = cluster;
                    kept.max_flows = max_flows;
                    kept.max_datagram_size = listener.max_datagram_size as usize;
                    kept.drops_empty = listener.empty_datagrams == EmptyDatagrams::Drop;
                    kept.drain_timeout = listener.drain_timeout;
                    let proxy_changed = kept.accept_proxy != listener.accept_proxy;
                    kept.accept_proxy = listener.accept_proxy.clone();
                    let keeps_sources = match (&kept.sources, &listener.source_limits) {
                        (Some(table), Some(limits)) => table.built_for(limits, max_flows),
                        (None, None) => true,
                        _ => false,
                    };
                    if !keeps_sources {
                        kept.sources = listener.source_limits.map(|limits| {
                            super::sources::SourceTable::new(limits, max_flows, self.source_key)
                        });
                        rebuilt_sources.push(index);
                    }
                    kept.flows_at_cap_change = self.stats.listeners[index].flows.active;
                    if before != settings(kept) || rebuilt_sources.last() == Some(&index) || proxy_changed {
                        summary.listeners_updated.push(ListenerId(index as u32));
                    }
                }
                None => {
                    // A listener with this name but another address or affinity is replaced.
                    self.remove_listener_named(name, &mut summary);
                    summary.listeners_added.push(ListenerId(self.listeners.len() as u32));
                    self.listeners.push(Listener {
                        name: name.clone(),
                        address: listener.address,
                        cluster,
                        affinity: listener.affinity,
                        max_flows,
                        max_datagram_size: listener.max_datagram_size as usize,
                        drops_empty: listener.empty_datagrams == EmptyDatagrams::Drop,
                        sources: listener.source_limits.map(|limits| {
                            super::sources::SourceTable::new(limits, max_flows, self.source_key)
                        }),
                        accept_proxy: listener.accept_proxy.clone(),
                        drain_timeout: listener.drain_timeout,
                        drain: DrainState::Active,
                        removed: false,
                        flows_at_cap_change: 0,
                    });
                    self.stats.listeners.push(ListenerStats::default());
                }
            }
        }
        for index in rebuilt_sources {
            let clients: Vec<std::net::IpAddr> = self
                .table
                .iter()
                .filter(|(_, flow)| flow.listener.0 as usize == index)
                .map(|(_, flow)| flow.client.ip())
                .collect();
            if let Some(sources) = &mut self.listeners[index].sources {
                for ip in clients {
                    sources.opened(now, ip);
                }
            }
        }
        let gone: Vec<String> = self
            .listeners
            .iter()
            .filter(|l| !l.removed && !config.listeners.contains_key(&l.name))
            .map(|l| l.name.clone())
            .collect();
        for name in gone {
            self.remove_listener_named(&name, &mut summary);
        }

        self.settle_flows_after_reload(now, &mut summary);
        self.debug_check();
        Ok(summary)
    }

    fn cluster_named(&self, name: &str) -> ClusterId {
        // validate() guarantees every listener's cluster exists.
        let index = self.clusters.iter().position(|c| !c.removed && c.name == name).unwrap_or(0);
        ClusterId(index as u32)
    }

    fn apply_cluster(&mut self, name: &str, config: &ClusterConfig, summary: &mut ReloadSummary) {
        let index = match self.clusters.iter().position(|c| !c.removed && c.name == name) {
            Some(index) => index,
            None => {
                summary.clusters_added.push(ClusterId(self.clusters.len() as u32));
                self.clusters.push(Cluster {
                    name: name.to_owned(),
                    algorithm: config.algorithm,
                    maglev_table_size: config.maglev_table_size,
                    candidates: Vec::new(),
                    selector: Selector::new(
                        config.algorithm,
                        config.maglev_table_size,
                        &self.selection_key,
                        name,
                    ),
                    teardown: Teardown::from_config(config),
                    proxy_protocol: config.proxy_protocol,
                    retry_on_refused: config.retry_on_refused,
                    on_backend_down: config.on_backend_down(),
                    fail_open: config.fail_open,
                    backend_drain_timeout: config.backend_drain_timeout,
                    amplification: config.amplification,
                    quic_lb: None,
                    cap_started: false,
                    removed: false,
                });
                self.clusters.len() - 1
            }
        };
        let cluster_id = ClusterId(index as u32);
        let previous = std::mem::take(&mut self.clusters[index].candidates);
        let mut members: Vec<_> = config.backends.iter().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let mut candidates = Vec::with_capacity(members.len());
        for member in members {
            let kept = previous.iter().find(|c| {
                let backend = &self.backends[c.backend.0 as usize];
                backend.name == member.id && backend.address == member.address
            });
            let candidate = match kept {
                Some(old) => {
                    summary.backends_kept.push(old.backend);
                    Candidate { weight: member.weight, pool: member.pool, backup: member.backup, ..*old }
                }
                None => {
                    let id = BackendId(self.backends.len() as u32);
                    self.backends.push(Backend {
                        name: member.id.clone(),
                        address: member.address,
                        cluster: cluster_id,
                        removed: false,
                        // New backends are Unknown, which is eligible: see the health module.
                        health: Health::Unknown,
                        admin: AdminState::Enabled,
                        flows: 0,
                        candidate: 0,
                        drained_reported: false,
                        drain_timer: TimerHandle::DISARMED,
                        passive: Default::default(),
                        reply_time: Default::default(),
                    });
                    self.stats.backends.push(crate::stats::BackendStats::default());
                    summary.backends_added.push(id);
                    Candidate {
                        backend: id,
                        identity: identity_hash(&self.selection_key, &member.id, member.address),
                        weight: member.weight,
                        pool: member.pool,
                        backup: member.backup,
                        eligible: true,
                        enabled: true,
                        flows: 0,
                    }
                }
            };
            candidates.push(candidate);
        }
        for old in &previous {
            if !candidates.iter().any(|c| c.backend == old.backend) {
                let backend = &mut self.backends[old.backend.0 as usize];
                backend.removed = true;
                self.timers.remove(std::mem::replace(&mut backend.drain_timer, TimerHandle::DISARMED));
                summary.backends_removed.push(old.backend);
            }
        }
        for (position, candidate) in candidates.iter().enumerate() {
            self.backends[candidate.backend.0 as usize].candidate = position;
        }
        let cluster = &mut self.clusters[index];
        if cluster.algorithm != config.algorithm || cluster.maglev_table_size != config.maglev_table_size {
            cluster.selector =
                Selector::new(config.algorithm, config.maglev_table_size, &self.selection_key, name);
            cluster.algorithm = config.algorithm;
            cluster.maglev_table_size = config.maglev_table_size;
        }
        // Rebuilds tables only if the routable set or weights changed.
        cluster.selector.update(&candidates);
        cluster.candidates = candidates;
        cluster.teardown = Teardown::from_config(config);
        cluster.proxy_protocol = config.proxy_protocol;
        cluster.retry_on_refused = config.retry_on_refused;
        cluster.on_backend_down = config.on_backend_down();
        cluster.fail_open = config.fail_open;
        cluster.backend_drain_timeout = config.backend_drain_timeout;
        // A cap that starts now gives the cluster's flows its allowance to start from, as if
        // they had just begun (settle_flows_after_reload); one that stays keeps their budgets.
        cluster.cap_started = cluster.amplification.is_none() && config.amplification.is_some();
        cluster.amplification = config.amplification;
        let backends = &self.backends;
        let candidates = &cluster.candidates;
        cluster.quic_lb = super::quic::QuicRouting::from_config(config, |id| {
            candidates.iter().map(|c| c.backend).find(|backend| backends[backend.0 as usize].name == id)
        });
    }

    /// Marks the live listener called `name` removed and cancels its drain timer. Its flows
    /// are closed by `settle_flows_after_reload`.
    fn remove_listener_named(&mut self, name: &str, summary: &mut ReloadSummary) {
        if let Some(index) = self.listeners.iter().position(|l| !l.removed && l.name == name) {
            let listener = &mut self.listeners[index];
            listener.removed = true;
            if let DrainState::Draining { timer: Some(handle), .. } = listener.drain {
                self.timers.remove(handle);
            }
            listener.drain = DrainState::Active;
            summary.listeners_removed.push(ListenerId(index as u32));
        }
    }

    /// Re-applies the (possibly changed) teardown rules to a kept flow: a reply count now met
    /// or a request count now reached ends or retires it, and its wait for a reply is
    /// re-derived (a flow that now owes replies gets a full `back` from now). Returns the
    /// reason to close it now, if any.
    fn rejudge_flow(&mut self, now: Instant, slot: u32) -> Option<CloseReason> {
        let teardown = self.teardown_of(self.table.get(slot)).clone();
        let flow = self.table.get(slot);
        // Retired by a write-off: it waits for late replies until its own deadline.
        if flow.awaits_late_replies() {
            let (deadline, reason) = teardown.deadline(flow);
            return (deadline <= now).then_some(reason);
        }
        if teardown.responses_reached(flow) {
            return Some(CloseReason::ResponsesReached);
        }
        let owes = teardown.owes_replies(flow);
        if !flow.retired && teardown.requests_reached(flow) {
            self.retire_flow(slot);
        }
        let flow = self.table.get_mut(slot);
        if flow.retired && owes == Some(false) {
            return Some(CloseReason::RequestsReached);
        }
        match owes {
            Some(true) if !flow.is_awaiting() => {
                flow.awaiting_since = now;
                let owed = teardown.owed_now(flow);
                flow.recent().floor = owed;
            }
            Some(false) => flow.awaiting_since = Instant::MAX,
            _ => {}
        }
        let (deadline, reason) = teardown.deadline(flow);
        (deadline <= now).then_some(reason)
    }

    /// One pass over the table: close flows whose backend or listener is gone, and re-arm the
    /// rest at their (possibly changed) deadlines, closing any that are already due.
    fn settle_flows_after_reload(&mut self, now: Instant, summary: &mut ReloadSummary) {
        let slots: Vec<u32> = self.table.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let flow = self.table.get(slot);
            let close = if self.backends[flow.backend.0 as usize].removed {
                Some(CloseReason::BackendRemoved)
            } else if self.listeners[flow.listener.0 as usize].removed {
                Some(CloseReason::ListenerRemoved)
            } else {
                self.rejudge_flow(now, slot)
            };
            if close.is_none() {
                let cluster =
                    &self.clusters[self.backends[self.table.get(slot).backend.0 as usize].cluster.0 as usize];
                if let (true, Some(cap)) = (cluster.cap_started, cluster.amplification) {
                    self.table.get_mut(slot).return_credit = cap.allowance_bytes;
                }
            }
            match close {
                Some(reason) => {
                    if matches!(reason, CloseReason::BackendRemoved | CloseReason::ListenerRemoved) {
                        summary.flows_closed += 1;
                    }
                    self.close_flow(slot, reason);
                }
                None => self.rearm_flow(now, slot),
            }
        }
    }
}
