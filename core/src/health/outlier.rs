//! Outlier ejection: the datapath's passive signals take a failing backend out of selection
//! for a while, whatever its active checks say.
//!
//! Active checks and passive signals test different things: a TCP connect to a companion port
//! says the host is up, not that its UDP service answers. When both moved one hysteresis, a
//! backend whose UDP port was dropped went Down on passive failures and Up again on the next
//! two TCP passes, every couple of seconds, for as long as the fault lasted. So with active
//! probes, passive signals do not move the hysteresis: they feed this detector, which ejects
//! (the backend stays Up, and is not eligible) for a time no probe can shorten.
//!
//! Rules, after Envoy's outlier detection:
//! - `consecutive_refusals` refusals (ICMP port or host unreachable) without a success
//!   between them eject: a refusal says the port is closed, and with the kernel's ICMP rate
//!   limit only the first few of a burst come back at all;
//! - `consecutive_failures` failures in a row eject, unless the rest of the cluster fails at
//!   least half the `failure_percent` share of its requests too (then the fault is something
//!   they share);
//! - so does a failure share of at least `failure_percent` over the last window (the current
//!   one and the one before, so between one and two `window`s), once it holds `min_requests`,
//!   if it is also at least twice the share of the rest of the cluster (when the rest has
//!   `min_requests` to compare): loss that hits every backend alike is the network's, and
//!   ejecting one backend for it would only load the others;
//! - the n-th recent ejection lasts n × `base_ejection_time`, at most `max_ejection_time`; a
//!   backend forgets one past ejection for every `base_ejection_time` it stays in;
//! - at most `max_ejected_percent` of a cluster's backends are out by ejection at once (one
//!   that is also Down or out by an operator's hand does not count; at least one may always
//!   be), and never the last eligible one: ejecting it would only hand its traffic to
//!   fail-open or drop it;
//! - paused backends, and backends not Enabled, are not judged;
//! - no passing probe shortens an ejection, with one exception: a backend whose probes took
//!   it Down and then Up again (a restarted process, a mended link) is readmitted with that
//!   Up, since the probes then saw the outage and its end themselves.
//!
//! Failures and successes arrive in the order they happened (see the flow manager's
//! `passive.rs`), and ejection changes eligibility only: it is reported through
//! `BackendChanged` like any other change, and as `Ejected` / `Readmitted` events.

use std::time::Duration;

use super::monitor::TimerKey;
use super::{AdminState, HealthEvent, HealthMonitor};
use crate::config::OutlierConfig;
use crate::id::BackendId;
use crate::outcome::PassiveFailure;
use crate::time::Instant;
use crate::timer::TimerHandle;

/// One backend's outlier state.
#[derive(Debug)]
pub(super) struct Outlier {
    /// Failures since the last success.
    consecutive: u32,
    /// Refusals (ICMP port or host unreachable) since the last success.
    refusals: u32,
    /// When the current window began.
    window_start: Option<Instant>,
    /// (answered, failed) in the current window and the one before it.
    current: (u64, u64),
    previous: (u64, u64),
    /// Recent ejections, the multiplier of the next one's length.
    recent: u32,
    /// When it was last readmitted (for forgetting past ejections).
    readmitted_at: Option<Instant>,
    /// The readmission deadline while ejected.
    pub(super) timer: TimerHandle,
    /// Ejections since it was added.
    pub(super) ejections: u64,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive: 0,
            refusals: 0,
            window_start: None,
            current: (0, 0),
            previous: (0, 0),
            recent: 0,
            readmitted_at: None,
            timer: TimerHandle::DISARMED,
            ejections: 0,
        }
    }
}

impl Outlier {
    pub(super) fn is_ejected(&self) -> bool {
        self.timer != TimerHandle::DISARMED
    }

    /// Until when it is ejected.
    pub(super) fn ejected_until(&self) -> Option<Instant> {
        self.is_ejected().then_some(self.timer.deadline)
    }

    fn roll(&mut self, now: Instant, window: Duration) {
        let start = *self.window_start.get_or_insert(now);
        if now < start + window {
            return;
        }
        self.previous = if now < start + window + window { self.current } else { (0, 0) };
        self.current = (0, 0);
        self.window_start = Some(now);
    }

    fn forget(&mut self) {
        self.consecutive = 0;
        self.refusals = 0;
        self.current = (0, 0);
        self.previous = (0, 0);
        self.window_start = None;
    }

    /// (answered, failed) over the window as it stands at `now`, without rolling it.
    fn counts_at(&self, now: Instant, window: Duration) -> (u64, u64) {
        let Some(start) = self.window_start else { return (0, 0) };
        let (current, previous) = if now < start + window {
            (self.current, self.previous)
        } else if now < start + window + window {
            ((0, 0), self.current)
        } else {
            ((0, 0), (0, 0))
        };
        (current.0 + previous.0, current.1 + previous.1)
    }

    /// Whether the rules say eject, given the rest of the cluster's (answered, failed) over
    /// the same window.
    fn failing(&self, config: &OutlierConfig, now: Instant, others: (u64, u64)) -> bool {
        let (answered, failed) = self.counts_at(now, config.window);
        let total = answered + failed;
        let enough = |total: u64| total >= u64::from(config.min_requests.max(1));
        let others_total = others.0 + others.1;
        // The rest of the cluster fails too (at least half the `failure_percent` share): the
        // network, or something all share, is at fault, not this backend.
        let others_failing = config.failure_percent > 0
            && enough(others_total)
            && others.1 * 200 >= u64::from(config.failure_percent) * others_total;
        let by_streak = config.consecutive_failures > 0
            && self.consecutive >= config.consecutive_failures
            && !others_failing;
        let by_refusals = config.consecutive_refusals > 0 && self.refusals >= config.consecutive_refusals;
        let by_share = config.failure_percent > 0
            && enough(total)
            && failed * 100 >= u64::from(config.failure_percent) * total
            // Loss that hits every backend alike is the network's: the share must also be at
            // least twice the rest of the cluster's, when the rest has enough to compare.
            && (!enough(others_total) || failed * others_total >= 2 * others.1 * total);
        by_streak || by_share || by_refusals
    }
}

impl HealthMonitor {
    /// Whether passive signals for this backend go to outlier detection (rather than to the
    /// hysteresis): the cluster has active probes and has not turned ejection off.
    pub(super) fn ejects(&self, backend: BackendId) -> bool {
        let config = self.record(backend).config();
        config.outlier.enabled && config.mode != crate::config::HealthMode::Off
    }

    /// `answered` requests of `backend` got all their replies.
    pub fn handle_passive_success(&mut self, now: Instant, backend: BackendId, answered: u32) {
        let Some(record) = self.backends.get_mut(&backend) else {
            self.stats.unknown_backend += 1;
            return;
        };
        let window = record.config().outlier.window;
        let outlier = &mut record.outlier;
        outlier.roll(now, window);
        outlier.consecutive = 0;
        outlier.refusals = 0;
        outlier.current.0 += u64::from(answered);
        self.stats.passive_answered += u64::from(answered);
    }

    /// A passive failure, for outlier detection (see [`HealthMonitor::ejects`]).
    pub(super) fn outlier_failure(&mut self, now: Instant, backend: BackendId, failure: PassiveFailure) {
        let record = self.record_mut(backend);
        let config = record.config().outlier.clone();
        let judged = record.admin == AdminState::Enabled && !record.outlier.is_ejected();
        let cluster = record.spec.cluster;
        let outlier = &mut record.outlier;
        outlier.roll(now, config.window);
        outlier.consecutive = outlier.consecutive.saturating_add(1);
        if matches!(failure, PassiveFailure::Refused | PassiveFailure::Unreachable) {
            outlier.refusals = outlier.refusals.saturating_add(1);
        }
        outlier.current.1 += 1;
        if !judged {
            return;
        }
        let others = self.clusters.get(&cluster).map_or((0, 0), |state| {
            state.members.iter().filter(|b| **b != backend).fold((0, 0), |(answered, failed), b| {
                let (a, f) = self.record(*b).outlier.counts_at(now, config.window);
                (answered + a, failed + f)
            })
        });
        if self.record(backend).outlier.failing(&config, now, others) {
            self.eject(now, backend, &config);
        }
    }

    fn eject(&mut self, now: Instant, backend: BackendId, config: &OutlierConfig) {
        let cluster = self.record(backend).spec.cluster;
        let members: Vec<BackendId> =
            self.clusters.get(&cluster).map(|c| c.members.iter().copied().collect()).unwrap_or_default();
        // Ejections that keep a backend out that would otherwise be in: one that is also Down
        // or taken out by an operator costs no capacity.
        let ejected = members
            .iter()
            .filter(|b| {
                let record = self.record(**b);
                let view = record.view();
                view.ejected && view.health != super::Health::Down && view.admin == AdminState::Enabled
            })
            .count();
        let percent = if crate::mutants::active(crate::mutants::Mutant::EjectionIgnoresCap) {
            100
        } else {
            config.max_ejected_percent
        };
        let allowed = (members.len() * percent as usize / 100).max(1);
        let others_eligible =
            members.iter().filter(|b| **b != backend).any(|b| self.record(*b).view().eligible());
        if ejected >= allowed || !others_eligible {
            self.stats.ejections_refused += 1;
            // Judged again on its next failure, from a clean slate.
            self.record_mut(backend).outlier.forget();
            return;
        }
        let before = self.record(backend).view();
        let record = self.record_mut(backend);
        let outlier = &mut record.outlier;
        if let Some(at) = outlier.readmitted_at {
            let quiet = (now - at).as_nanos() / config.base_ejection_time.as_nanos().max(1);
            outlier.recent = outlier.recent.saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX));
        }
        outlier.recent = outlier.recent.saturating_add(1);
        let length = config.base_ejection_time.saturating_mul(outlier.recent).min(config.max_ejection_time);
        let until = now + length.max(Duration::from_nanos(1));
        outlier.forget();
        outlier.ejections += 1;
        let handle = self.timers.insert(until, TimerKey::Readmit(backend));
        self.record_mut(backend).outlier.timer = handle;
        self.stats.ejections += 1;
        self.outputs.push_event(HealthEvent::Ejected { cluster, backend, until, at: now });
        self.after_change(now, backend, before);
    }

    /// The ejection ran out: the backend is eligible again (if its health and admin state
    /// allow), and is judged afresh.
    pub(super) fn readmit(&mut self, now: Instant, backend: BackendId, handle: TimerHandle) {
        let Some(record) = self.backends.get_mut(&backend) else { return };
        debug_assert_eq!(record.outlier.timer, handle, "readmission entries are removed eagerly");
        let before = record.view();
        record.outlier.timer = TimerHandle::DISARMED;
        record.outlier.readmitted_at = Some(now);
        record.outlier.forget();
        let cluster = record.spec.cluster;
        self.outputs.push_event(HealthEvent::Readmitted { cluster, backend, at: now });
        self.after_change(now, backend, before);
    }

    /// Ends an ejection early: the backend's active checks took it Down and then Up again, so
    /// they saw the outage and its end themselves.
    pub(super) fn end_ejection(&mut self, now: Instant, backend: BackendId) {
        let Some(record) = self.backends.get_mut(&backend) else { return };
        if !record.outlier.is_ejected() {
            return;
        }
        let handle = std::mem::replace(&mut record.outlier.timer, TimerHandle::DISARMED);
        self.timers.remove(handle);
        record.outlier.readmitted_at = Some(now);
        record.outlier.forget();
        let cluster = record.spec.cluster;
        self.outputs.push_event(HealthEvent::Readmitted { cluster, backend, at: now });
    }

    /// Cancels a pending readmission (the backend is being removed).
    pub(super) fn cancel_ejection(&mut self, backend: BackendId) {
        if let Some(record) = self.backends.get_mut(&backend) {
            let handle = std::mem::replace(&mut record.outlier.timer, TimerHandle::DISARMED);
            self.timers.remove(handle);
        }
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(Outlier {
    consecutive,
    refusals,
    window_start,
    current,
    previous,
    recent,
    readmitted_at,
    timer,
    ejections
});
