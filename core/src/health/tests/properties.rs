//! Property test: any sequence of inputs, with monotone time, never panics, keeps every
//! invariant, keeps the output queue bounded, and gives the same outputs when replayed.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::ExpectMatch;

const BACKENDS: u32 = 5;

#[derive(Clone, Debug)]
enum Op {
    /// Advance time by this many milliseconds and handle the timeout there.
    Advance(u64),
    /// Handle a timeout at the current time (an early or repeated wake-up).
    Wake,
    /// A result for the n-th most recent probe issued (modulo their number): small n are
    /// likely still in flight, large ones long abandoned.
    Result(usize, ProbeResult),
    /// A result for an id that may never have been issued.
    StrayResult(u64, ProbeResult),
    /// A UDP reply for the n-th most recent probe issued.
    Reply(usize, Vec<u8>),
    Passive(u32, PassiveFailure),
    Admin(u32, AdminState),
    Add(u32, usize),
    /// A reload with this health block; `true` also moves the backend to the other cluster.
    Update(u32, usize, bool),
    Remove(u32),
    /// Poll up to this many outputs (the caller may fall behind).
    Poll(usize),
}

/// A small variety of health blocks with short durations, so a few seconds see many checks.
fn configs() -> Vec<HealthConfig> {
    let base = HealthConfig {
        interval: Duration::from_millis(200),
        fast_interval: Some(Duration::from_millis(50)),
        down_interval: Some(Duration::from_millis(400)),
        timeout: Duration::from_millis(100),
        passive_recovery: Duration::from_millis(300),
        history: 4,
        ..HealthConfig::default()
    };
    vec![
        HealthConfig { mode: HealthMode::Tcp, jitter: 20, ..base.clone() },
        HealthConfig {
            mode: HealthMode::Udp,
            udp_payload: Some("ping".into()),
            udp_expect: Some("po".into()),
            udp_expect_match: ExpectMatch::Prefix,
            model: HysteresisModel::Consecutive,
            rise: 3,
            fall: 1,
            ..base.clone()
        },
        HealthConfig {
            mode: HealthMode::TcpAndUdp,
            udp_payload: Some("ping".into()),
            jitter: 50,
            ..base.clone()
        },
        HealthConfig { mode: HealthMode::Off, passive_unanswered: false, ..base.clone() },
        HealthConfig { mode: HealthMode::Tcp, rise: 1, fall: 1, history: 0, jitter: 0, ..base },
    ]
}

fn probe_result() -> impl Strategy<Value = ProbeResult> {
    prop_oneof![
        3 => Just(ProbeResult::Pass),
        1 => Just(ProbeResult::Fail(ProbeFailure::Refused)),
        1 => Just(ProbeResult::Fail(ProbeFailure::Timeout)),
        1 => Just(ProbeResult::Fail(ProbeFailure::Mismatch)),
        1 => Just(ProbeResult::Fail(ProbeFailure::Error)),
    ]
}

fn admin_state() -> impl Strategy<Value = AdminState> {
    prop_oneof![
        Just(AdminState::Enabled),
        Just(AdminState::Paused),
        Just(AdminState::Disabled),
        Just(AdminState::Draining),
        Just(AdminState::Removed),
    ]
}

/// Mostly the last few probes issued, sometimes any.
fn recent() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..3, 1 => any::<usize>()]
}

fn op() -> impl Strategy<Value = Op> {
    let backend = 0..BACKENDS;
    let config = 0..configs().len();
    prop_oneof![
        6 => prop_oneof![3 => 0u64..60, 1 => 0u64..600].prop_map(Op::Advance),
        1 => Just(Op::Wake),
        6 => (recent(), probe_result()).prop_map(|(n, result)| Op::Result(n, result)),
        1 => (0u64..64, probe_result()).prop_map(|(id, result)| Op::StrayResult(id, result)),
        3 => (recent(), prop::sample::select(vec![b"pong".to_vec(), b"nope".to_vec(), vec![]]))
            .prop_map(|(n, reply)| Op::Reply(n, reply)),
        2 => (backend.clone(), prop_oneof![Just(PassiveFailure::Refused), Just(PassiveFailure::Unanswered)])
            .prop_map(|(b, failure)| Op::Passive(b, failure)),
        2 => (backend.clone(), admin_state()).prop_map(|(b, state)| Op::Admin(b, state)),
        2 => (backend.clone(), config.clone()).prop_map(|(b, c)| Op::Add(b, c)),
        2 => (backend.clone(), config, any::<bool>()).prop_map(|(b, c, moved)| Op::Update(b, c, moved)),
        1 => backend.prop_map(Op::Remove),
        5 => (0usize..8).prop_map(Op::Poll),
    ]
}

/// Backend `b` starts in cluster `b % 2`; reloads may move it to the other one.
fn backend_spec(backend: u32, config: &HealthConfig) -> MonitoredBackend {
    spec(backend % 2, backend as u8 + 1, config)
}

/// Runs the ops, checking invariants after each; returns every output polled.
fn run(ops: &[Op]) -> Result<Vec<(Instant, HealthOutput)>, TestCaseError> {
    let configs = configs();
    let mut monitor = HealthMonitor::new(&KEY);
    let mut now = Instant::ZERO;
    let mut issued: Vec<ProbeId> = Vec::new();
    let mut log = Vec::new();
    let mut poll = |monitor: &mut HealthMonitor, limit: usize, now: Instant, issued: &mut Vec<ProbeId>| {
        for output in std::iter::from_fn(|| monitor.poll_output()).take(limit) {
            if let HealthOutput::StartProbe(request) = &output {
                issued.push(request.probe);
            }
            log.push((now, output));
        }
    };
    let nth = |issued: &[ProbeId], n: usize| match issued.len() {
        0 => ProbeId(1),
        len => issued[len - 1 - n % len],
    };
    for op in ops {
        match op {
            Op::Advance(millis) => {
                now = now + Duration::from_millis(*millis);
                monitor.handle_timeout(now);
                prop_assert!(monitor.poll_timeout().is_none_or(|next| next > now));
            }
            Op::Wake => {
                monitor.handle_timeout(now);
                prop_assert!(monitor.poll_timeout().is_none_or(|next| next > now));
            }
            Op::Result(n, result) => monitor.handle_probe_result(now, nth(&issued, *n), *result),
            Op::StrayResult(id, result) => monitor.handle_probe_result(now, ProbeId(*id), *result),
            Op::Reply(n, reply) => monitor.handle_probe_reply(now, nth(&issued, *n), reply),
            Op::Passive(backend, failure) => {
                monitor.handle_passive_failure(now, BackendId(*backend), *failure)
            }
            Op::Admin(backend, state) => {
                let known = monitor.backend(BackendId(*backend)).is_some();
                prop_assert_eq!(monitor.set_admin(now, BackendId(*backend), *state).is_ok(), known);
            }
            Op::Add(backend, config) => {
                monitor.add_backend(now, BackendId(*backend), backend_spec(*backend, &configs[*config]))
            }
            Op::Update(backend, config, moved) => {
                let spec = MonitoredBackend {
                    cluster: ClusterId((backend + u32::from(*moved)) % 2),
                    ..backend_spec(*backend, &configs[*config])
                };
                monitor.update_backend(now, BackendId(*backend), spec);
            }
            Op::Remove(backend) => monitor.remove_backend(now, BackendId(*backend)),
            Op::Poll(limit) => poll(&mut monitor, *limit, now, &mut issued),
        }
        if let Err(violation) = monitor.check_invariants() {
            return Err(TestCaseError::fail(format!("after {op:?}: {violation}")));
        }
        for backend in 0..BACKENDS {
            let status = monitor.backend(BackendId(backend));
            let eligible = status.as_ref().is_some_and(|status| {
                matches!(status.health, Health::Up | Health::Unknown)
                    && status.admin == AdminState::Enabled
                    && status.ejected_until.is_none()
            });
            prop_assert_eq!(monitor.is_eligible(BackendId(backend)), eligible);
        }
    }
    poll(&mut monitor, usize::MAX, now, &mut issued);
    prop_assert!(monitor.poll_output().is_none());
    monitor.check_invariants().map_err(|violation| TestCaseError::fail(violation.to_string()))?;
    Ok(log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_input_sequence_keeps_the_invariants_and_replays_identically(
        ops in prop::collection::vec(op(), 1..200)
    ) {
        let first = run(&ops)?;
        prop_assert_eq!(first, run(&ops)?);
    }
}
