//! Checks from start to result: deadlines, probe results and replies, timeouts, passive
//! failures and passive recovery.
//!
//! A check is one probe (`tcp` or `udp`) or two (`tcp+udp`) started together under one
//! timeout. It completes when every probe has a result or the timeout fires, whichever is
//! first; whatever has not answered by then has failed with `Timeout`, because silence is
//! never healthy. The next check is timed from that completion.

use std::time::Duration;

use super::hysteresis::{Hysteresis, Phase};
use super::monitor::{Check, ProbeSlot, TimerKey, View};
use super::outputs::Protocol;
use super::schedule;
use super::{AdminState, CheckCode, HealthMonitor, PassiveFailure, ProbeFailure, ProbeResult};
use crate::config::HealthMode;
use crate::id::{BackendId, ProbeId};
use crate::time::Instant;
use crate::timer::TimerHandle;

impl HealthMonitor {
    /// Runs every deadline at or before `now`: starts due checks, fails timed-out probes,
    /// applies passive recovery. Afterwards [`poll_timeout`](Self::poll_timeout) is strictly
    /// later than `now`. Waking up early changes nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Every deadline armed from here is at least a nanosecond after `now`, so each pass
        // consumes one of the finitely many entries that were due.
        while let Some((handle, key)) = self.timers.pop_expired(now) {
            match key {
                TimerKey::Schedule(backend) => self.on_schedule(now, backend, handle),
                TimerKey::CheckTimeout(backend) => self.on_check_timeout(now, backend, handle),
                TimerKey::Readmit(backend) => self.readmit(now, backend, handle),
            }
        }
        debug_assert!(self.poll_timeout().is_none_or(|next| next > now));
        self.debug_check();
    }

    /// A probe's result. Results for probes the monitor no longer waits for (timed out, paused,
    /// restarted, removed) or never issued are ignored and counted.
    pub fn handle_probe_result(&mut self, now: Instant, probe: ProbeId, result: ProbeResult) {
        let Some(&(backend, protocol)) = self.probes.get(&probe) else {
            self.count_stray(probe);
            return;
        };
        let record = self.record_mut(backend);
        let Some(slot) = record.check.as_mut().and_then(|check| check.slot_mut(protocol)) else {
            debug_assert!(false, "{probe} is indexed but its check is gone");
            return;
        };
        if slot.result.is_some() {
            self.stats.results_duplicate += 1;
            return;
        }
        slot.result = Some(result);
        let complete =
            record.check.as_ref().is_some_and(|check| check.slots().all(|(_, s)| s.result.is_some()));
        if complete {
            self.finish_check(now, backend);
        }
        self.debug_check();
    }

    /// A UDP probe's reply. The monitor compares it with the cluster's `udp_expect` (exact or
    /// prefix; no expectation accepts any reply), so the decision stays in the core.
    pub fn handle_probe_reply(&mut self, now: Instant, probe: ProbeId, reply: &[u8]) {
        let Some(&(backend, protocol)) = self.probes.get(&probe) else {
            self.count_stray(probe);
            return;
        };
        if protocol == Protocol::Tcp {
            self.stats.replies_to_tcp_probes += 1;
            return;
        }
        let result = if self.record(backend).reply_matches(reply) {
            ProbeResult::Pass
        } else {
            ProbeResult::Fail(ProbeFailure::Mismatch)
        };
        self.handle_probe_result(now, probe, result);
    }

    /// A failure seen on the data path, never for a paused backend (it is out of service, and
    /// its state is frozen). With active probes it goes to outlier detection (`outlier.rs`);
    /// without them (or with ejection off) it counts as a failed check when the cluster's
    /// `passive_refused` / `passive_unanswered` allow it (refusals, unreachables, failed sends
    /// and stray replies under the first; replies written off under the second).
    pub fn handle_passive_failure(&mut self, now: Instant, backend: BackendId, failure: PassiveFailure) {
        let Some(record) = self.backends.get(&backend) else {
            self.stats.unknown_backend += 1;
            return;
        };
        if record.admin == AdminState::Paused {
            self.stats.passive_ignored += 1;
            return;
        }
        let refusal = matches!(failure, PassiveFailure::Refused | PassiveFailure::Unreachable);
        if self.ejects(backend)
            && !(refusal && crate::mutants::active(crate::mutants::Mutant::RefusalsMoveHealth))
        {
            self.stats.passive_counted += 1;
            self.outlier_failure(now, backend, failure);
            self.debug_check();
            return;
        }
        let config = record.config();
        let counted = match failure {
            PassiveFailure::Refused
            | PassiveFailure::Unreachable
            | PassiveFailure::SendFailed
            | PassiveFailure::StrayReply => config.passive_refused,
            PassiveFailure::Unanswered => config.passive_unanswered,
        };
        if !counted {
            self.stats.passive_ignored += 1;
            return;
        }
        self.stats.passive_counted += 1;
        let code = match failure {
            PassiveFailure::Refused
            | PassiveFailure::Unreachable
            | PassiveFailure::SendFailed
            | PassiveFailure::StrayReply => CheckCode::PassiveCon,
            PassiveFailure::Unanswered => CheckCode::PassiveTout,
        };
        let moved = self.apply_result(now, backend, false, code);
        let record = self.record_mut(backend);
        let config = record.spec.health.clone();
        if config.mode == HealthMode::Off {
            // Each failure restarts the quiet time after which the backend recovers (Down)
            // or forgets its failures (Up).
            let at = now + config.passive_recovery.max(Duration::from_nanos(1));
            self.arm_schedule(backend, at);
        } else if moved && record.check.is_none() {
            // HAProxy's `on-error fastinter`: confirm (or refute) the hint soon.
            let at = now + record.jitter.apply(config.fast_interval(), config.jitter);
            if at < record.schedule.deadline {
                self.arm_schedule(backend, at);
            }
        }
        self.debug_check();
    }

    fn count_stray(&mut self, probe: ProbeId) {
        if probe.0 < self.next_probe_id {
            self.stats.results_late += 1;
        } else {
            self.stats.results_unknown += 1;
        }
    }

    fn on_schedule(&mut self, now: Instant, backend: BackendId, handle: TimerHandle) {
        let Some(record) = self.backends.get_mut(&backend) else { return };
        debug_assert_eq!(record.schedule, handle, "schedule entries are removed eagerly");
        record.schedule = TimerHandle::DISARMED;
        if record.admin == AdminState::Paused || record.check.is_some() {
            return;
        }
        if record.probed() {
            self.start_check(now, backend);
        } else {
            self.passive_recovery(now, backend);
        }
    }

    /// `mode = "off"`: `passive_recovery` passed with no new passive failure. A Down backend
    /// comes back Up (nothing could probe it back), an Up one forgets its failures.
    fn passive_recovery(&mut self, now: Instant, backend: BackendId) {
        let record = self.record_mut(backend);
        let before = record.view();
        let config = record.spec.health.clone();
        record.hysteresis = Hysteresis::fully_up(config.model, config.rise, config.fall);
        let to = record.hysteresis.health();
        if before.health != to {
            record.last_code = Some(CheckCode::PassiveRecovery);
            self.emit_transition(now, backend, before.health, to, CheckCode::PassiveRecovery);
        }
        self.after_change(now, backend, before);
    }

    fn start_check(&mut self, now: Instant, backend: BackendId) {
        let mode = self.record(backend).config().mode;
        let timeout_at = now + schedule::probe_timeout(self.record(backend).config());
        let timeout = self.timers.insert(timeout_at, TimerKey::CheckTimeout(backend));
        let mut check = Check { started: now, timeout, tcp: None, udp: None };
        for (wanted, protocol) in [(mode.probes_tcp(), Protocol::Tcp), (mode.probes_udp(), Protocol::Udp)] {
            if !wanted {
                continue;
            }
            let id = ProbeId(self.next_probe_id);
            self.next_probe_id += 1;
            self.probes.insert(id, (backend, protocol));
            self.outputs.push_start(backend, protocol);
            self.stats.probes_started += 1;
            let slot = Some(ProbeSlot { id, result: None, announced: false });
            match protocol {
                Protocol::Tcp => check.tcp = slot,
                Protocol::Udp => check.udp = slot,
            }
        }
        self.record_mut(backend).check = Some(check);
    }

    fn on_check_timeout(&mut self, now: Instant, backend: BackendId, handle: TimerHandle) {
        let Some(check) = self.backends.get_mut(&backend).and_then(|record| record.check.as_mut()) else {
            return;
        };
        debug_assert_eq!(check.timeout, handle, "timeout entries are removed eagerly");
        check.timeout = TimerHandle::DISARMED;
        for slot in [check.tcp.as_mut(), check.udp.as_mut()].into_iter().flatten() {
            if slot.result.is_none() {
                let silence_is_healthy = crate::mutants::active(crate::mutants::Mutant::SilenceIsHealthy);
                slot.result = Some(if silence_is_healthy {
                    ProbeResult::Pass
                } else {
                    ProbeResult::Fail(ProbeFailure::Timeout)
                });
            }
        }
        self.finish_check(now, backend);
    }

    /// Every probe of the check has a result: combine them, feed the hysteresis, and schedule
    /// the next check from now with the interval of the backend's new phase.
    fn finish_check(&mut self, now: Instant, backend: BackendId) {
        let Some(check) = self.record_mut(backend).check.take() else { return };
        self.timers.remove(check.timeout);
        for (_, slot) in check.slots() {
            self.probes.remove(&slot.id);
            if let Some(ProbeResult::Fail(failure)) = slot.result {
                let counter = match failure {
                    ProbeFailure::Refused => &mut self.stats.probes_refused,
                    ProbeFailure::Timeout => &mut self.stats.probes_timed_out,
                    ProbeFailure::Mismatch => &mut self.stats.probes_mismatched,
                    ProbeFailure::Error => &mut self.stats.probes_errored,
                };
                *counter += 1;
            }
        }
        let (passed, code) = combine(&check);
        if passed {
            self.stats.checks_passed += 1;
        } else {
            self.stats.checks_failed += 1;
        }
        let record = self.record_mut(backend);
        let took = now.saturating_duration_since(check.started);
        let durations = &mut record.check_durations;
        if passed {
            durations.passed.record(took)
        } else {
            durations.failed.record(took)
        }
        record.last_check_at = Some(now);
        self.apply_result(now, backend, passed, code);
        let record = self.record_mut(backend);
        let config = record.spec.health.clone();
        let interval = schedule::interval(&config, record.hysteresis.phase());
        let at = now + record.jitter.apply(interval, config.jitter);
        self.arm_schedule(backend, at);
    }

    /// Feeds one result to the hysteresis and reports what changed. Returns whether the
    /// backend moved: a transition, or a counter now between the extremes.
    fn apply_result(&mut self, now: Instant, backend: BackendId, passed: bool, code: CheckCode) -> bool {
        let record = self.record_mut(backend);
        let before: View = record.view();
        record.last_code = Some(code);
        let transition = record.hysteresis.record(passed);
        let changing = record.hysteresis.phase() == Phase::Changing;
        if let Some((from, to)) = transition {
            self.emit_transition(now, backend, from, to, code);
        }
        self.after_change(now, backend, before);
        transition.is_some() || changing
    }
}

/// The check's verdict and code. One probe: its own code. `tcp+udp`: passes only if both
/// pass (`L7OK`); otherwise the TCP probe's code if it failed, else the UDP probe's, naming
/// the lowest layer that failed as HAProxy does.
fn combine(check: &Check) -> (bool, CheckCode) {
    let tcp = check.tcp.as_ref().and_then(|slot| slot.result);
    let udp = check.udp.as_ref().and_then(|slot| slot.result);
    match (tcp, udp) {
        (Some(ProbeResult::Fail(failure)), _) => (false, failure_code(Protocol::Tcp, failure)),
        (_, Some(ProbeResult::Fail(failure))) => (false, failure_code(Protocol::Udp, failure)),
        (Some(ProbeResult::Pass), None) => (true, CheckCode::L4Ok),
        (_, Some(ProbeResult::Pass)) => (true, CheckCode::L7Ok),
        // A check always has at least one probe, and completes only with every result in.
        (None, None) => (false, CheckCode::SockErr),
    }
}

/// HAProxy's codes: a refusal is a layer-4 connection problem whichever the probe (TCP RST or
/// ICMP unreachable); silence is a timeout at the probe's layer; a wrong reply is `L7RSP`.
fn failure_code(protocol: Protocol, failure: ProbeFailure) -> CheckCode {
    match (protocol, failure) {
        (_, ProbeFailure::Refused) => CheckCode::L4Con,
        (Protocol::Tcp, ProbeFailure::Timeout) => CheckCode::L4Tout,
        (Protocol::Udp, ProbeFailure::Timeout) => CheckCode::L7Tout,
        (_, ProbeFailure::Mismatch) => CheckCode::L7Rsp,
        (_, ProbeFailure::Error) => CheckCode::SockErr,
    }
}
