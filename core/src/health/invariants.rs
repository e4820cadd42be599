//! Invariants of the health monitor, checked in full by [`HealthMonitor::check_invariants`]
//! (O(backends + probes + timers)); tests, the simulator and the fuzzers call it.

use std::collections::BTreeSet;

use super::monitor::TimerKey;
use super::{AdminState, HealthMonitor, MonitorInvariantViolation};

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(MonitorInvariantViolation(format!($($message)+)));
        }
    };
}

impl HealthMonitor {
    /// Checks every invariant; returns the first one broken.
    ///
    /// - every backend belongs to its cluster and every cluster member is monitored;
    /// - hysteresis counters are within bounds and agree with the health state;
    /// - a probed backend that is not paused has exactly one of: a scheduled check, or a
    ///   check in flight with an armed timeout; a paused one has neither; with `mode = "off"`
    ///   there is never a check, and the recovery deadline is armed exactly when the backend is
    ///   not at full health (and not paused);
    /// - every in-flight probe is indexed under its backend and protocol, and every indexed
    ///   probe is in flight; probe ids are below the next id to be issued;
    /// - every armed deadline belongs to a live backend and is the one it holds;
    /// - each cluster's all-down latch agrees with its backends' eligibility;
    /// - the output queue is within its bound and agrees with its bookkeeping; each removed
    ///   backend awaiting its `BackendChanged` has one queued;
    /// - histories are bounded.
    pub fn check_invariants(&self) -> Result<(), MonitorInvariantViolation> {
        for (backend, record) in &self.backends {
            let cluster = self.clusters.get(&record.spec.cluster);
            ensure!(
                cluster.is_some_and(|state| state.members.contains(backend)),
                "{backend} is not a member of its {}",
                record.spec.cluster
            );
            record.hysteresis.check().map_err(|e| MonitorInvariantViolation(format!("{backend}: {e}")))?;
            record.history.check().map_err(|e| MonitorInvariantViolation(format!("{backend}: {e}")))?;
            let scheduled = self.timers.contains(record.schedule);
            let paused = record.admin == AdminState::Paused;
            ensure!(record.admin != AdminState::Removed, "{backend} is monitored but Removed");
            if let Some(check) = &record.check {
                ensure!(
                    record.probed() && !paused,
                    "{backend} has a check in flight while paused or unprobed"
                );
                ensure!(
                    self.timers.contains(check.timeout),
                    "{backend} has a check without an armed timeout"
                );
                ensure!(!scheduled, "{backend} has both a check in flight and a scheduled one");
                ensure!(check.slots().next().is_some(), "{backend} has a check without probes");
                for (protocol, slot) in check.slots() {
                    ensure!(
                        self.probes.get(&slot.id) == Some(&(*backend, protocol)),
                        "{} of {backend} is in flight but not indexed",
                        slot.id
                    );
                    ensure!(slot.id.0 < self.next_probe_id, "{} was never issued", slot.id);
                }
            } else if paused {
                ensure!(!scheduled, "paused {backend} has a deadline");
            } else if record.probed() {
                ensure!(scheduled, "{backend} is probed but has no check scheduled or in flight");
            } else {
                let at_full_health = record.hysteresis.phase() == super::hysteresis::Phase::FullyUp;
                ensure!(
                    scheduled != at_full_health,
                    "{backend} (mode off) has recovery armed = {scheduled} at full health = {at_full_health}"
                );
            }
        }
        for (probe, (backend, protocol)) in &self.probes {
            let slot =
                self.backends.get(backend).and_then(|r| r.check.as_ref()).and_then(|c| c.slot(*protocol));
            ensure!(
                slot.is_some_and(|slot| slot.id == *probe),
                "{probe} is indexed for {backend} but not in flight"
            );
        }
        let mut timed = BTreeSet::new();
        for (handle, key) in self.timers.iter() {
            let (backend, held) = match key {
                TimerKey::Schedule(backend) => (backend, self.backends.get(&backend).map(|r| r.schedule)),
                TimerKey::CheckTimeout(backend) => {
                    (backend, self.backends.get(&backend).and_then(|r| r.check.as_ref()).map(|c| c.timeout))
                }
                TimerKey::Readmit(backend) => (backend, self.backends.get(&backend).map(|r| r.outlier.timer)),
            };
            ensure!(
                held == Some(handle),
                "a deadline at {} names {backend}, which does not hold it",
                handle.deadline
            );
            let kind = match key {
                TimerKey::Schedule(_) => 0,
                TimerKey::CheckTimeout(_) => 1,
                TimerKey::Readmit(_) => 2,
            };
            timed.insert((backend, kind));
        }
        ensure!(timed.len() == self.timers.len(), "a backend holds two deadlines of one kind");
        self.check_clusters()?;
        self.outputs.check().map_err(MonitorInvariantViolation)?;
        for backend in self.removed.keys() {
            ensure!(!self.backends.contains_key(backend), "{backend} is both removed and monitored");
            ensure!(self.outputs.change_pending(*backend), "removed {backend} has no BackendChanged queued");
        }
        Ok(())
    }

    fn check_clusters(&self) -> Result<(), MonitorInvariantViolation> {
        for (cluster, state) in &self.clusters {
            ensure!(!state.members.is_empty(), "{cluster} is kept with no members");
            let (mut enabled, mut eligible) = (0usize, 0usize);
            for member in &state.members {
                let view = self.backends.get(member).map(|r| r.view());
                ensure!(view.is_some(), "{cluster} has a member that is not monitored");
                if let Some(view) = view {
                    enabled += usize::from(view.admin == AdminState::Enabled);
                    eligible += usize::from(view.eligible());
                }
            }
            if state.all_down {
                ensure!(eligible == 0, "{cluster} is latched all-down with {eligible} eligible backends");
            } else {
                ensure!(
                    enabled == 0 || eligible > 0,
                    "{cluster} has enabled backends, none eligible, and no all-down latch"
                );
            }
        }
        Ok(())
    }
}
