//! The monitor itself: its backends and clusters, their lifecycle (add, reload, remove,
//! admin changes), the output queue and the status queries. Checks, results, timeouts and
//! passive failures are in `probes.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::history::{History, HistoryChange};
use super::hysteresis::{Hysteresis, Phase};
use super::outputs::{Outputs, Protocol, Queued};
use super::schedule::{self, Jitter};
use super::{
    AdminState, BackendState, BackendStatus, CheckCode, CheckDurations, Health, HealthError, HealthEvent,
    HealthOutput, HealthStats, MonitoredBackend, ProbeKind, ProbeRequest, ProbeResult,
};
use crate::config::{ExpectMatch, HealthConfig, HealthMode};
use crate::id::{BackendId, ClusterId, ProbeId};
use crate::proxy_v2::{TlvOptions, local_header_len, write_local_header};
use crate::time::Instant;
use crate::timer::{DeadlineIndex, TimerHandle};

/// The health monitor of one process. See the [module docs](super) for how it is driven.
#[derive(Debug)]
pub struct HealthMonitor {
    pub(super) selection_key: [u8; 32],
    pub(super) backends: BTreeMap<BackendId, Monitored>,
    pub(super) clusters: BTreeMap<ClusterId, ClusterState>,
    /// Every probe the monitor is waiting for, and whose it is.
    pub(super) probes: BTreeMap<ProbeId, (BackendId, Protocol)>,
    pub(super) timers: DeadlineIndex<TimerKey>,
    pub(super) outputs: Outputs,
    /// Removed backends whose `BackendChanged` has not been polled yet: what it will say.
    pub(super) removed: BTreeMap<BackendId, View>,
    pub(super) next_probe_id: u64,
    pub(super) stats: HealthStats,
}

/// What a deadline is for. Each backend has at most one of each armed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum TimerKey {
    /// Start the next check; with `mode = "off"`, passive recovery instead.
    Schedule(BackendId),
    /// The in-flight check's timeout: whatever has not answered has failed.
    CheckTimeout(BackendId),
    /// The end of an ejection (see `outlier.rs`).
    Readmit(BackendId),
}

#[derive(Debug)]
pub(super) struct ClusterState {
    /// Seeded start of the cluster's stagger sequence.
    pub(super) phase: u64,
    /// The stagger slot the next added backend takes.
    pub(super) next_slot: u64,
    pub(super) members: BTreeSet<BackendId>,
    /// Latched: the cluster is in an all-down episode (see [`HealthMonitor::refresh_cluster`]).
    pub(super) all_down: bool,
}

/// One monitored backend.
#[derive(Debug)]
pub(super) struct Monitored {
    pub(super) spec: MonitoredBackend,
    /// The UDP probe datagram: the PPv2 LOCAL header if asked for, then the payload.
    pub(super) datagram: Vec<u8>,
    /// The expected UDP reply; `None` accepts any reply.
    pub(super) expect: Option<Vec<u8>>,
    pub(super) hysteresis: Hysteresis,
    pub(super) admin: AdminState,
    /// The next check (or, with `mode = "off"`, passive recovery). Disarmed while a check is in
    /// flight, while paused, and with `mode = "off"` at full health.
    pub(super) schedule: TimerHandle,
    pub(super) check: Option<Check>,
    pub(super) jitter: Jitter,
    /// The backend's stagger slot in its cluster, for its first-probe offset.
    pub(super) slot: u64,
    pub(super) last_code: Option<CheckCode>,
    pub(super) last_check_at: Option<Instant>,
    pub(super) history: History,
    pub(super) outlier: super::Outlier,
    /// How long its checks took, passed and failed.
    pub(super) check_durations: CheckDurations,
}

/// A check in flight: one probe, or one of each for `tcp+udp`, sharing one timeout.
#[derive(Debug)]
pub(super) struct Check {
    /// When it started: how long it took is measured to its result.
    pub(super) started: Instant,
    pub(super) timeout: TimerHandle,
    pub(super) tcp: Option<ProbeSlot>,
    pub(super) udp: Option<ProbeSlot>,
}

#[derive(Debug)]
pub(super) struct ProbeSlot {
    pub(super) id: ProbeId,
    pub(super) result: Option<ProbeResult>,
    /// Whether its `StartProbe` has been polled.
    pub(super) announced: bool,
}

/// What the flow managers see of a backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct View {
    pub(super) health: Health,
    pub(super) admin: AdminState,
    /// Out by outlier ejection (see `outlier.rs`).
    pub(super) ejected: bool,
}

impl View {
    pub(super) fn eligible(self) -> bool {
        matches!(self.health, Health::Up | Health::Unknown)
            && self.admin == AdminState::Enabled
            && !self.ejected
    }
}

impl Check {
    pub(super) fn slot(&self, protocol: Protocol) -> Option<&ProbeSlot> {
        match protocol {
            Protocol::Tcp => self.tcp.as_ref(),
            Protocol::Udp => self.udp.as_ref(),
        }
    }

    pub(super) fn slot_mut(&mut self, protocol: Protocol) -> Option<&mut ProbeSlot> {
        match protocol {
            Protocol::Tcp => self.tcp.as_mut(),
            Protocol::Udp => self.udp.as_mut(),
        }
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = (Protocol, &ProbeSlot)> {
        let tcp = self.tcp.as_ref().map(|slot| (Protocol::Tcp, slot));
        let udp = self.udp.as_ref().map(|slot| (Protocol::Udp, slot));
        tcp.into_iter().chain(udp)
    }
}

impl Monitored {
    fn new(selection_key: &[u8; 32], spec: MonitoredBackend, slot: u64) -> Self {
        let stream = schedule::backend_stream(selection_key, &spec.cluster_name, &spec.id, spec.address);
        let health = &spec.health;
        Monitored {
            datagram: probe_datagram(health, spec.proxy_v2_local),
            expect: health.udp_expect_bytes(),
            hysteresis: initial_hysteresis(health),
            admin: AdminState::Enabled,
            schedule: TimerHandle::DISARMED,
            check: None,
            jitter: Jitter::new(selection_key, stream),
            slot,
            last_code: None,
            last_check_at: None,
            history: History::new(health.history),
            outlier: Default::default(),
            check_durations: CheckDurations::default(),
            spec,
        }
    }

    pub(super) fn config(&self) -> &HealthConfig {
        &self.spec.health
    }

    pub(super) fn view(&self) -> View {
        View { health: self.hysteresis.health(), admin: self.admin, ejected: self.outlier.is_ejected() }
    }

    pub(super) fn probed(&self) -> bool {
        self.config().mode != HealthMode::Off
    }

    /// Whether `reply` passes: any reply when there is no expectation; otherwise equal to it,
    /// or starting with it under `udp_expect_match = "prefix"`.
    pub(super) fn reply_matches(&self, reply: &[u8]) -> bool {
        match (&self.expect, self.config().udp_expect_match) {
            (None, _) => true,
            (Some(expect), ExpectMatch::Exact) => reply == expect.as_slice(),
            (Some(expect), ExpectMatch::Prefix) => reply.starts_with(expect),
        }
    }
}

/// Unknown when probes will resolve it; full health when nothing probes (`mode = "off"`).
fn initial_hysteresis(config: &HealthConfig) -> Hysteresis {
    match config.mode {
        HealthMode::Off => Hysteresis::fully_up(config.model, config.rise, config.fall),
        _ => Hysteresis::unknown(config.model, config.rise, config.fall),
    }
}

/// The UDP probe payload, behind a PPv2 LOCAL header (no TLVs) when the cluster speaks PPv2.
fn probe_datagram(config: &HealthConfig, proxy_v2_local: bool) -> Vec<u8> {
    let payload = config.udp_payload_bytes();
    if !proxy_v2_local {
        return payload;
    }
    let tlvs = TlvOptions::default();
    let mut datagram = vec![0; local_header_len(tlvs) + payload.len()];
    // Cannot fail: the buffer is exactly header + payload long.
    let header_len = write_local_header(&mut datagram, tlvs).unwrap_or(0);
    datagram[header_len..].copy_from_slice(&payload);
    datagram
}

impl HealthMonitor {
    /// A monitor with no backends. `selection_key` is the key every instance that must agree
    /// shares; it seeds the stagger and the jitter.
    pub fn new(selection_key: &[u8; 32]) -> Self {
        HealthMonitor {
            selection_key: *selection_key,
            backends: BTreeMap::new(),
            clusters: BTreeMap::new(),
            probes: BTreeMap::new(),
            timers: DeadlineIndex::new(),
            outputs: Outputs::default(),
            removed: BTreeMap::new(),
            next_probe_id: 1,
            stats: HealthStats::default(),
        }
    }

    /// Starts monitoring a backend, Enabled, in Unknown (Up with `mode = "off"`). Its first
    /// check is staggered within `[0, interval)` of `now`. Queues a `BackendChanged` with its
    /// initial state. Adding an id that is already monitored is a reload
    /// ([`update_backend`](Self::update_backend)).
    pub fn add_backend(&mut self, now: Instant, backend: BackendId, spec: MonitoredBackend) {
        if self.backends.contains_key(&backend) {
            self.update_backend(now, backend, spec);
            return;
        }
        let cluster = spec.cluster;
        let slot = self.join_cluster(cluster, backend, &spec.cluster_name);
        self.backends.insert(backend, Monitored::new(&self.selection_key, spec, slot));
        // A `BackendChanged` still queued for an earlier removal of this id now reports this one.
        self.removed.remove(&backend);
        self.start_probing(now, backend);
        self.outputs.push_changed(backend);
        self.refresh_cluster(now, cluster);
        self.debug_check();
    }

    /// A reload. The backend keeps its state (health, counters, admin, history) unless its
    /// probe settings changed (the health block, its address, its cluster, or whether probes
    /// carry a PPv2 header), in which case it restarts in Unknown (Up with `mode = "off"`) with
    /// its counters reset and a history note, as a changed check would otherwise be judged by
    /// results of the old one. Returns whether it restarted (an unknown id is added, and counts
    /// as restarted).
    pub fn update_backend(&mut self, now: Instant, backend: BackendId, spec: MonitoredBackend) -> bool {
        let Some(record) = self.backends.get_mut(&backend) else {
            self.add_backend(now, backend, spec);
            return true;
        };
        let old = &record.spec;
        let restart = old.cluster != spec.cluster
            || old.address != spec.address
            || old.proxy_v2_local != spec.proxy_v2_local
            || *old.health != *spec.health;
        if !restart {
            record.spec = spec;
            return false;
        }
        let before = record.view();
        let old_cluster = record.spec.cluster;
        self.stop_probing(backend);
        // A restart judges the backend afresh under its new settings: an ejection under the
        // old ones (which may have turned ejection off) ends with them.
        self.cancel_ejection(backend);
        self.record_mut(backend).outlier = Default::default();
        if old_cluster != spec.cluster {
            self.leave_cluster(old_cluster, backend);
            let slot = self.join_cluster(spec.cluster, backend, &spec.cluster_name);
            self.record_mut(backend).slot = slot;
        }
        let record = self.record_mut(backend);
        record.datagram = probe_datagram(&spec.health, spec.proxy_v2_local);
        record.expect = spec.health.udp_expect_bytes();
        record.hysteresis = initial_hysteresis(&spec.health);
        record.history.set_capacity(spec.health.history);
        record.spec = spec;
        let to = record.hysteresis.health();
        record.history.push(now, HistoryChange::Restarted { from: before.health, to });
        if before.health != to {
            // The history already has the restart note, which names both states.
            self.transition_event(now, backend, before.health, to, CheckCode::Init);
        }
        self.start_probing(now, backend);
        self.after_change(now, backend, before);
        let new_cluster = self.record(backend).spec.cluster;
        if old_cluster != new_cluster {
            // Both memberships changed even if the backend's own view did not.
            self.refresh_cluster(now, old_cluster);
            self.refresh_cluster(now, new_cluster);
        }
        self.debug_check();
        true
    }

    /// Stops monitoring a backend. Its pending probes' results will be ignored; an
    /// `AdminChanged` event and a `BackendChanged` say it is `Removed`.
    pub fn remove_backend(&mut self, now: Instant, backend: BackendId) {
        if !self.backends.contains_key(&backend) {
            self.stats.unknown_backend += 1;
            return;
        }
        self.stop_probing(backend);
        self.cancel_ejection(backend);
        let Some(record) = self.backends.remove(&backend) else { return };
        let cluster = record.spec.cluster;
        self.leave_cluster(cluster, backend);
        self.outputs.push_event(HealthEvent::AdminChanged {
            cluster,
            backend,
            from: record.admin,
            to: AdminState::Removed,
            at: now,
        });
        let view = View { health: record.hysteresis.health(), admin: AdminState::Removed, ejected: false };
        self.removed.insert(backend, view);
        self.outputs.push_changed(backend);
        self.refresh_cluster(now, cluster);
        self.debug_check();
    }

    /// Changes a backend's admin state. Pausing stops its probes (a result still in flight is
    /// ignored); leaving Paused restarts them, staggered as at start-up. `Removed` is
    /// [`remove_backend`](Self::remove_backend). Setting the current state does nothing.
    pub fn set_admin(
        &mut self,
        now: Instant,
        backend: BackendId,
        state: AdminState,
    ) -> Result<(), HealthError> {
        let Some(record) = self.backends.get_mut(&backend) else {
            return Err(HealthError::UnknownBackend(backend));
        };
        if state == AdminState::Removed {
            self.remove_backend(now, backend);
            return Ok(());
        }
        let before = record.view();
        if before.admin == state {
            return Ok(());
        }
        record.admin = state;
        record.history.push(now, HistoryChange::Admin { from: before.admin, to: state });
        let cluster = record.spec.cluster;
        self.outputs.push_event(HealthEvent::AdminChanged {
            cluster,
            backend,
            from: before.admin,
            to: state,
            at: now,
        });
        if state == AdminState::Paused {
            self.stop_probing(backend);
        } else if before.admin == AdminState::Paused {
            self.start_probing(now, backend);
        }
        self.after_change(now, backend, before);
        self.debug_check();
        Ok(())
    }

    /// The next deadline. Re-arm the timer from it after **every** call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next output, or `None` when there is none. Drain it after every call.
    pub fn poll_output(&mut self) -> Option<HealthOutput> {
        // Each pass removes one entry, so the loop ends within the queue's length.
        loop {
            match self.outputs.pop()? {
                Queued::Event(event) => return Some(HealthOutput::Event(event)),
                Queued::Changed(backend) => {
                    let view = match self.backends.get(&backend) {
                        Some(record) => record.view(),
                        None => match self.removed.remove(&backend) {
                            Some(view) => view,
                            None => continue,
                        },
                    };
                    let state =
                        BackendState { eligible: view.eligible(), health: view.health, admin: view.admin };
                    return Some(HealthOutput::BackendChanged { backend, state });
                }
                Queued::Start(backend, protocol) => {
                    if let Some(request) = self.announce(backend, protocol) {
                        return Some(HealthOutput::StartProbe(request));
                    }
                }
            }
        }
    }

    /// The backend's full status, for `ctl show backends`.
    pub fn backend(&self, backend: BackendId) -> Option<BackendStatus> {
        let record = self.backends.get(&backend)?;
        let view = record.view();
        Some(BackendStatus {
            cluster: record.spec.cluster,
            health: view.health,
            admin: view.admin,
            eligible: view.eligible(),
            counter: record.hysteresis.view(),
            last_code: record.last_code,
            last_check_at: record.last_check_at,
            next_check_at: self.timers.contains(record.schedule).then_some(record.schedule.deadline),
            checking: record.check.is_some(),
            history: record.history.to_vec(),
            ejected_until: record.outlier.ejected_until(),
            ejections: record.outlier.ejections,
            check_durations: record.check_durations.clone(),
        })
    }

    /// Whether new flows may go to the backend: health Up or Unknown, and admin Enabled.
    /// `false` for a backend that is not monitored.
    pub fn is_eligible(&self, backend: BackendId) -> bool {
        self.backends.get(&backend).is_some_and(|record| record.view().eligible())
    }

    /// The monitored backends, in id order.
    pub fn backend_ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.backends.keys().copied()
    }

    /// The counters.
    pub fn stats(&self) -> HealthStats {
        HealthStats { events_dropped: self.outputs.events_dropped(), ..self.stats.clone() }
    }

    /// Whether the cluster is in an all-down episode.
    pub fn cluster_all_down(&self, cluster: ClusterId) -> bool {
        self.clusters.get(&cluster).is_some_and(|state| state.all_down)
    }

    pub(super) fn record(&self, backend: BackendId) -> &Monitored {
        &self.backends[&backend]
    }

    pub(super) fn record_mut(&mut self, backend: BackendId) -> &mut Monitored {
        self.backends.get_mut(&backend).expect("callers pass a monitored backend")
    }

    fn join_cluster(&mut self, cluster: ClusterId, backend: BackendId, name: &str) -> u64 {
        let key = &self.selection_key;
        let state = self.clusters.entry(cluster).or_insert_with(|| ClusterState {
            phase: schedule::cluster_phase(key, name),
            next_slot: 0,
            members: BTreeSet::new(),
            all_down: false,
        });
        state.members.insert(backend);
        state.next_slot += 1;
        state.next_slot - 1
    }

    /// An emptied cluster is forgotten, all-down latch included: with no backend there is no
    /// episode to end, so no `ClusterRecovered` follows.
    fn leave_cluster(&mut self, cluster: ClusterId, backend: BackendId) {
        if let Some(state) = self.clusters.get_mut(&cluster) {
            state.members.remove(&backend);
            if state.members.is_empty() {
                self.clusters.remove(&cluster);
            }
        }
    }

    /// Arms the first deadline of a backend that is (again) not paused: the first check at its
    /// stagger offset, or with `mode = "off"` the passive recovery if it is not at full health.
    pub(super) fn start_probing(&mut self, now: Instant, backend: BackendId) {
        let record = self.record(backend);
        if record.admin == AdminState::Paused {
            return;
        }
        let delay = if record.probed() {
            let cluster = &self.clusters[&record.spec.cluster];
            let interval = schedule::interval(record.config(), Phase::FullyUp);
            schedule::stagger(interval, cluster.phase, record.slot)
        } else if record.hysteresis.phase() != Phase::FullyUp {
            record.config().passive_recovery.max(Duration::from_nanos(1))
        } else {
            return;
        };
        self.arm_schedule(backend, now + delay);
    }

    /// (Re-)arms the backend's schedule deadline.
    pub(super) fn arm_schedule(&mut self, backend: BackendId, at: Instant) {
        let handle = self.record(backend).schedule;
        self.timers.remove(handle);
        let handle = self.timers.insert(at, TimerKey::Schedule(backend));
        self.record_mut(backend).schedule = handle;
    }

    /// Disarms every deadline of the backend and abandons its check: results for its probes
    /// will be counted as late and ignored.
    pub(super) fn stop_probing(&mut self, backend: BackendId) {
        let record = self.backends.get_mut(&backend).expect("callers pass a monitored backend");
        self.timers.remove(std::mem::replace(&mut record.schedule, TimerHandle::DISARMED));
        if let Some(check) = record.check.take() {
            self.timers.remove(check.timeout);
            for (_, slot) in check.slots() {
                self.probes.remove(&slot.id);
            }
        }
    }

    /// Records a health transition in the history and as an event.
    pub(super) fn emit_transition(
        &mut self,
        now: Instant,
        backend: BackendId,
        from: Health,
        to: Health,
        code: CheckCode,
    ) {
        self.record_mut(backend).history.push(now, HistoryChange::Health { from, to, code });
        self.transition_event(now, backend, from, to, code);
        if from == Health::Down && to == Health::Up {
            // The probes saw it fail and then recover: a restart, a mended link. An ejection
            // from the same outage ends with it (see `outlier.rs`).
            self.end_ejection(now, backend);
        }
    }

    /// Counts a health transition and queues its event (the caller keeps the history).
    fn transition_event(
        &mut self,
        now: Instant,
        backend: BackendId,
        from: Health,
        to: Health,
        code: CheckCode,
    ) {
        self.stats.transitions += 1;
        let cluster = self.record(backend).spec.cluster;
        self.outputs.push_event(HealthEvent::Transition { cluster, backend, from, to, code, at: now });
    }

    /// After anything that may have changed what the flow managers see: queue a
    /// `BackendChanged` and re-evaluate the cluster's all-down latch.
    pub(super) fn after_change(&mut self, now: Instant, backend: BackendId, before: View) {
        let record = self.record(backend);
        if record.view() != before {
            let cluster = record.spec.cluster;
            self.outputs.push_changed(backend);
            self.refresh_cluster(now, cluster);
        }
    }

    /// The all-down latch: it sets, with one `ClusterAllDown`, when the cluster has at least
    /// one Enabled backend and no eligible one; it clears, with one `ClusterRecovered`, when a
    /// backend is eligible again. A cluster whose backends are all administratively out of
    /// service (paused, disabled, draining) leaves the latch as it is: that is an operator's
    /// decision, not a health episode starting or ending.
    pub(super) fn refresh_cluster(&mut self, now: Instant, cluster: ClusterId) {
        let Some(state) = self.clusters.get(&cluster) else { return };
        let (mut enabled, mut eligible) = (0usize, 0usize);
        for backend in &state.members {
            let view = self.backends[backend].view();
            enabled += usize::from(view.admin == AdminState::Enabled);
            eligible += usize::from(view.eligible());
        }
        let all_down = state.all_down;
        let event = if all_down && eligible > 0 {
            HealthEvent::ClusterRecovered { cluster, at: now }
        } else if !all_down && enabled > 0 && eligible == 0 {
            HealthEvent::ClusterAllDown { cluster, at: now }
        } else {
            return;
        };
        if let Some(state) = self.clusters.get_mut(&cluster) {
            state.all_down = !all_down;
        }
        self.outputs.push_event(event);
    }

    /// Fills in a queued `StartProbe` from the live check, if its probe still waits.
    fn announce(&mut self, backend: BackendId, protocol: Protocol) -> Option<ProbeRequest> {
        let record = self.backends.get_mut(&backend)?;
        let address = record.spec.address;
        let tcp_port = record.spec.health.tcp_port.unwrap_or(address.port());
        let check = record.check.as_mut()?;
        let deadline = check.timeout.deadline;
        let slot = check.slot_mut(protocol)?;
        if slot.announced || slot.result.is_some() {
            return None;
        }
        slot.announced = true;
        let kind = match protocol {
            Protocol::Tcp => ProbeKind::Tcp { address: std::net::SocketAddr::new(address.ip(), tcp_port) },
            Protocol::Udp => ProbeKind::Udp { address, datagram: record.datagram.clone() },
        };
        Some(ProbeRequest { probe: slot.id, backend, kind, deadline })
    }

    /// The O(1) checks, after every public call in debug builds.
    pub(super) fn debug_check(&self) {
        debug_assert!(self.outputs.len() <= self.outputs.bound(), "output queue over its bound");
    }
}
