//! Invariants of the flow manager.
//!
//! The cheap ones (O(listeners)) run after every public call in debug builds. The full
//! [`FlowManager::check_invariants`] walks every flow and timer (O(flows)); tests, the
//! simulator and the fuzzers call it at regular steps.

use std::collections::BTreeSet;

use super::{DrainState, FlowManager, TimerKey};
use crate::timer::TimerHandle;

/// A broken invariant: a bug in the core, described for a human.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolation(pub String);

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(InvariantViolation(format!($($message)+)));
        }
    };
}

impl FlowManager {
    /// Checks every invariant; returns the first one broken.
    ///
    /// - flows created − closed = active, per listener and in total, and the table agrees;
    /// - every indexed flow is live and not retired; every live non-retired flow is indexed;
    /// - every live flow has exactly one armed timer, never later than its real deadline;
    /// - no timer entry names a dead flow or a listener that is not draining;
    /// - flow caps hold; every listener's datagrams are conserved (received = passed + drops);
    /// - after `handle_timeout(now)`, nothing is due at or before `now`.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_counters()?;
        ensure!(
            self.table.len() as u64 == self.stats.flows.active,
            "table holds {} flows, stats say {} active",
            self.table.len(),
            self.stats.flows.active
        );
        let mut retired = 0u64;
        let mut retry_bytes = 0u64;
        let mut per_listener = vec![0u64; self.listeners.len()];
        let mut per_backend = vec![0u64; self.backends.len()];
        for (slot, flow) in self.table.iter() {
            per_listener[flow.listener.0 as usize] += 1;
            per_backend[flow.backend.0 as usize] += 1;
            retired += u64::from(flow.retired);
            retry_bytes += flow.retry.capacity() as u64;
            ensure!(
                flow.retry.is_empty() || flow.responses == 0,
                "flow #{} keeps a datagram for a retry after a reply",
                flow.serial
            );
            ensure!(
                self.timers.contains(flow.timer),
                "flow #{} (slot {slot}) has no armed timer",
                flow.serial
            );
            let teardown = self.teardown_of(flow);
            let (deadline, reason) = teardown.deadline(flow);
            ensure!(
                flow.timer.deadline <= deadline,
                "flow #{} armed at {} but due at {} ({reason}): its timer would fire late",
                flow.serial,
                flow.timer.deadline,
                deadline
            );
            if teardown.owes_replies(flow) == Some(true) {
                ensure!(flow.is_awaiting(), "flow #{} owes replies but is not waiting for them", flow.serial);
            }
        }
        ensure!(
            retry_bytes == self.retry_slots.bytes_kept() && retry_bytes == self.stats.retries.bytes_kept,
            "retry slots hold {retry_bytes} bytes, the budget says {}",
            self.retry_slots.bytes_kept()
        );
        ensure!(
            retired == self.stats.flows.retired,
            "{retired} retired flows, stats say {}",
            self.stats.flows.retired
        );
        for (index, count) in per_backend.iter().enumerate() {
            let backend = &self.backends[index];
            ensure!(
                *count == backend.flows,
                "backend {index} has {count} flows, its count says {}",
                backend.flows
            );
            if !backend.removed {
                let candidate = self.clusters[backend.cluster.0 as usize].candidates.get(backend.candidate);
                ensure!(
                    candidate.is_some_and(|c| c.backend.0 as usize == index && c.flows == backend.flows),
                    "backend {index}'s candidate does not mirror it"
                );
            }
        }
        for (index, count) in per_listener.iter().enumerate() {
            let stats = &self.stats.listeners[index].flows;
            ensure!(*count == stats.active, "listener {index} has {count} flows, stats say {}", stats.active);
        }
        let mut indexed = BTreeSet::new();
        for slot in self.table.indexed_slots() {
            ensure!(self.table.is_occupied(slot), "index points at vacant slot {slot}");
            ensure!(!self.table.get(slot).retired, "retired flow in slot {slot} is still indexed");
            ensure!(indexed.insert(slot), "slot {slot} is indexed twice");
        }
        ensure!(
            self.table.indexed_len() as u64 == self.stats.flows.active - self.stats.flows.retired,
            "{} indexed flows, expected {} live non-retired",
            self.table.indexed_len(),
            self.stats.flows.active - self.stats.flows.retired
        );
        let mut flow_timers = 0usize;
        for (handle, key) in self.timers.iter() {
            match key {
                TimerKey::Flow { slot } => {
                    ensure!(
                        self.table.is_occupied(slot),
                        "timer at {} names vacant slot {slot}",
                        handle.deadline
                    );
                    ensure!(self.table.get(slot).timer == handle, "slot {slot} has a second timer entry");
                    flow_timers += 1;
                }
                TimerKey::ListenerDrain(listener) => {
                    let state = self.listeners.get(listener.0 as usize).map(|l| l.drain);
                    ensure!(
                        matches!(state, Some(DrainState::Draining { timer: Some(h), drained: false }) if h == handle),
                        "drain timer for {listener} that is not draining with it"
                    );
                }
                TimerKey::BackendDrain(backend) => {
                    let state = self.backends.get(backend.0 as usize);
                    ensure!(
                        state.is_some_and(|b| b.admin == crate::health::AdminState::Draining
                            && !b.removed
                            && b.flows > 0
                            && b.drain_timer == handle),
                        "drain timer for {backend} that is not draining with flows left and it"
                    );
                }
            }
        }
        ensure!(flow_timers == self.table.len(), "{flow_timers} flow timers for {} flows", self.table.len());
        for (index, listener) in self.listeners.iter().enumerate() {
            let Some(sources) = &listener.sources else { continue };
            ensure!(sources.consistent(), "listener {}'s source table and its index disagree", listener.name);
            let mut counted = std::collections::BTreeMap::new();
            for (_, flow) in self.table.iter().filter(|(_, flow)| flow.listener.0 as usize == index) {
                *counted.entry(sources.prefix_of(flow.client.ip())).or_insert(0u32) += 1;
            }
            let mut tracked = 0;
            for (prefix, flows) in sources.flow_counts() {
                ensure!(
                    counted.get(&prefix).copied().unwrap_or(0) == flows,
                    "listener {}: a source counts {flows} flows, the table holds {:?}",
                    listener.name,
                    counted.get(&prefix)
                );
                tracked += usize::from(flows > 0);
            }
            ensure!(
                tracked == counted.len(),
                "listener {}: a source with flows is not tracked",
                listener.name
            );
        }
        let drain_timers = self
            .listeners
            .iter()
            .filter(|l| matches!(l.drain, DrainState::Draining { timer: Some(_), .. }))
            .count();
        let backend_drain_timers =
            self.backends.iter().filter(|b| b.drain_timer != TimerHandle::DISARMED).count();
        ensure!(
            self.timers.len() == flow_timers + drain_timers + backend_drain_timers,
            "{} timer entries for {flow_timers} flows, {drain_timers} listener drains and {backend_drain_timers} backend drains",
            self.timers.len()
        );
        Ok(())
    }

    /// The O(listeners) checks: counters and caps.
    fn check_counters(&self) -> Result<(), InvariantViolation> {
        let flows = &self.stats.flows;
        ensure!(
            flows.created == flows.closed_total() + flows.active,
            "created {} != closed {} + active {}",
            flows.created,
            flows.closed_total(),
            flows.active
        );
        ensure!(flows.retired <= flows.active, "more retired flows than live ones");
        if let (Some(handled), Some(next)) = (self.timeouts_handled_until, self.timers.next_deadline()) {
            ensure!(next > handled, "deadline {next} is due but timeouts were handled up to {handled}");
        }
        ensure!(
            flows.active <= u64::from(self.max_flows).max(self.flows_at_cap_change),
            "{} flows over the cap {}",
            flows.active,
            self.max_flows
        );
        for (index, stats) in self.stats.listeners.iter().enumerate() {
            let listener = &self.listeners[index];
            ensure!(
                stats.flows.created == stats.flows.closed_total() + stats.flows.active,
                "listener {}: created != closed + active",
                listener.name
            );
            ensure!(
                stats.flows.active <= u64::from(listener.max_flows).max(listener.flows_at_cap_change),
                "listener {}: {} flows over its cap {}",
                listener.name,
                stats.flows.active,
                listener.max_flows
            );
            ensure!(
                stats.client.is_conserved(),
                "listener {}: client datagrams not conserved",
                listener.name
            );
            ensure!(
                stats.backend.is_conserved(),
                "listener {}: backend datagrams not conserved",
                listener.name
            );
        }
        ensure!(self.stats.unattributed.is_conserved(), "unattributed datagrams not conserved");
        Ok(())
    }

    /// Cheap checks after every public call, in debug builds only.
    ///
    /// Not in cargo-fuzz builds (`cfg(fuzzing)`, which cargo-fuzz sets and nothing else
    /// does): there every target that drives the flow manager (`datagram_path`) runs
    /// [`Self::check_invariants`], a superset of these checks, after every step, and these
    /// counter sums under comparison tracing were the largest single cost of a fuzz
    /// execution (`docs/fuzzing.md`, "Speed of `datagram_path`"). Debug test builds, the
    /// simulator and the corpus replay keep them.
    pub(super) fn debug_check(&self) {
        if cfg!(debug_assertions) && !cfg!(fuzzing) {
            if let Err(violation) = self.check_counters() {
                panic!("{violation}");
            }
            debug_assert!(self.table.indexed_len() <= self.table.len());
        }
    }
}
