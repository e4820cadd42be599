//! When checks run: intervals per state, stagger, jitter, determinism, and the worst-case
//! detection and recovery bounds against simulated runs.

use std::time::Duration;

use super::*;

/// Gaps between consecutive check starts of backend 0, for a scripted list of results
/// answered at once (so each check completes the instant it starts).
fn gaps_for(config: &HealthConfig, script: &[Option<ProbeFailure>]) -> Vec<Duration> {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, config));
    let mut answers = script.iter();
    harness.drive(secs(600), |_, _| match answers.next()? {
        None => pass(),
        Some(failure) => fail(*failure),
    });
    let starts: Vec<Instant> = harness.starts().iter().map(|(at, _)| *at).collect();
    starts.windows(2).map(|pair| pair[1] - pair[0]).take(script.len()).collect()
}

#[test]
fn intervals_follow_the_state_fully_up_fully_down_and_in_between() {
    const F: Option<ProbeFailure> = Some(ProbeFailure::Refused);
    let (inter, fast, down) = (Duration::from_secs(2), Duration::from_millis(500), Duration::from_secs(5));
    // Unknown →P Up(full) →P full →F 3 →F 2 →F Down(0) →P 1 →P Up(full) → (silence)
    let haproxy = gaps_for(&config(HealthMode::Tcp), &[None, None, F, F, F, None, None]);
    assert_eq!(haproxy, vec![inter, inter, fast, fast, down, fast, inter]);
    // Unknown →F Down(0): fully down at once.
    assert_eq!(gaps_for(&config(HealthMode::Tcp), &[F])[0], down);

    let consecutive = HealthConfig { model: HysteresisModel::Consecutive, ..config(HealthMode::Tcp) };
    // Unknown →P Up →F streak 1 →P reset →F →F →F Down →P streak 1 →P Up
    let gaps = gaps_for(&consecutive, &[None, F, None, F, F, F, None, None]);
    assert_eq!(gaps, vec![inter, fast, inter, fast, fast, down, fast, inter]);
}

#[test]
fn the_next_check_is_timed_from_the_completion_of_the_previous_one() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    harness.drive(secs(30), |_, _| Some((Duration::from_millis(300), Answer::Result(ProbeResult::Pass))));
    let starts: Vec<Instant> = harness.starts().iter().map(|(at, _)| *at).collect();
    assert!(starts.len() > 5);
    assert!(starts.windows(2).all(|pair| pair[1] - pair[0] == Duration::from_millis(2300)));
    // And a silent backend: each check ends at its timeout, then the interval runs.
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    harness.silence(secs(60));
    let starts: Vec<Instant> = harness.starts().iter().map(|(at, _)| *at).collect();
    let gaps: Vec<Duration> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(gaps[0], Duration::from_secs(6), "Unknown → Down on the first timeout: 1 s + down 5 s");
    assert!(gaps.iter().all(|gap| *gap == Duration::from_secs(6)));
}

#[test]
fn first_checks_are_staggered_within_the_interval_and_distinct() {
    let mut harness = Harness::new();
    let config = config(HealthMode::Tcp);
    for index in 0..8u8 {
        harness.add(u32::from(index), spec(0, index, &config));
        harness.add(100 + u32::from(index), spec(1, index, &config));
    }
    harness.silence(millis(1999));
    let mut first: Vec<(u32, Instant)> = Vec::new();
    for (at, request) in harness.starts() {
        if !first.iter().any(|(backend, _)| *backend == request.backend.0) {
            first.push((request.backend.0, at));
        }
    }
    assert_eq!(first.len(), 16, "every backend's first check falls within the first interval");
    for cluster in [0..8, 100..108] {
        let mut times: Vec<Instant> =
            first.iter().filter(|(backend, _)| cluster.contains(backend)).map(|(_, at)| *at).collect();
        times.sort();
        times.dedup();
        assert_eq!(times.len(), 8, "distinct offsets within a cluster");
        let gaps = times.windows(2).map(|pair| pair[1] - pair[0]);
        assert!(gaps.max().unwrap() < Duration::from_millis(500), "spread, not bunched");
    }
}

#[test]
fn every_scheduled_interval_is_within_the_jitter_bounds() {
    let config = HealthConfig { jitter: 20, ..config(HealthMode::Tcp) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    harness.drive(secs(1000), |_, _| pass());
    let starts: Vec<Instant> = harness.starts().iter().map(|(at, _)| *at).collect();
    let mut gaps: Vec<Duration> = starts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(gaps.len() > 300);
    let (low, high) = (Duration::from_millis(1600), Duration::from_millis(2400));
    assert!(gaps.iter().all(|gap| (low..=high).contains(gap)), "every interval within ±20%");
    assert!(gaps.iter().any(|gap| *gap < Duration::from_millis(1650)), "the low end is reached");
    assert!(gaps.iter().any(|gap| *gap > Duration::from_millis(2350)), "the high end is reached");
    gaps.sort();
    gaps.dedup();
    assert!(gaps.len() > 250, "intervals vary");
}

/// Runs one backend through `script` with the same key twice, and with another key once.
fn run_with_key(key: &[u8; 32]) -> Vec<(Instant, HealthOutput)> {
    let config = HealthConfig { jitter: 30, ..config(HealthMode::TcpAndUdp) };
    let mut harness = Harness::with_key(key);
    for index in 0..4u8 {
        harness.add(u32::from(index), spec(0, index, &config));
    }
    // A deterministic but irregular world: answers depend on the probe id.
    harness.drive(secs(120), |_, request| match request.probe.0 % 7 {
        0 => None,
        1 => fail(ProbeFailure::Refused),
        n => Some((Duration::from_millis(n * 37), Answer::Reply(b"pong".to_vec()))),
    });
    harness.monitor.set_admin(harness.now, BackendId(2), AdminState::Paused).unwrap();
    harness.monitor.handle_passive_failure(harness.now, BackendId(1), PassiveFailure::Refused);
    harness.drive(secs(200), |_, request| (request.probe.0 % 3 == 0).then(pass).flatten());
    harness.log
}

#[test]
fn the_same_key_and_inputs_give_an_identical_output_sequence() {
    let first = run_with_key(&KEY);
    assert!(first.len() > 100);
    assert_eq!(first, run_with_key(&KEY));
    assert_ne!(first, run_with_key(&[43; 32]), "another key, another schedule");
}

#[test]
fn handle_timeout_moves_the_deadline_strictly_later_and_early_wakeups_change_nothing() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    let first = harness.monitor.poll_timeout().unwrap();
    for early in [Instant::ZERO, Instant::from_nanos(first.as_nanos() - 1)] {
        harness.monitor.handle_timeout(early);
        assert!(harness.drain().is_empty());
        assert_eq!(harness.monitor.poll_timeout(), Some(first));
    }
    harness.monitor.handle_timeout(first);
    assert!(matches!(harness.drain()[..], [HealthOutput::StartProbe(_)]));
    assert!(harness.monitor.poll_timeout().unwrap() > first);
    // Late wake-ups too: everything due runs, and the next deadline is still in the future.
    let late = secs(100);
    harness.monitor.handle_timeout(late);
    assert!(harness.monitor.poll_timeout().unwrap() > late);
    harness.monitor.check_invariants().unwrap();
}

#[test]
fn a_passive_failure_pulls_the_next_check_in_to_the_fast_interval() {
    let config = HealthConfig { interval: Duration::from_secs(30), ..without_ejection(HealthMode::Tcp) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    harness.drive(secs(40), |_, _| pass());
    let far = harness.status(0).next_check_at.unwrap();
    assert!(far > secs(41));
    harness.monitor.handle_passive_failure(secs(40), BackendId(0), PassiveFailure::Refused);
    assert_eq!(harness.status(0).next_check_at, Some(secs(40) + Duration::from_millis(500)));
    // A failure that moves nothing (already fully down) does not speed probing up.
    harness.drive(secs(80), |_, _| fail(ProbeFailure::Refused));
    let next = harness.status(0).next_check_at.unwrap();
    harness.monitor.handle_passive_failure(secs(80), BackendId(0), PassiveFailure::Refused);
    assert_eq!(harness.status(0).next_check_at, Some(next));
}

/// Fails (or heals) a backend just after one of its check starts, with replies to earlier
/// checks arriving as late as they can, and returns how long the transition took.
fn simulated_transition(config: &HealthConfig, healthy_first: bool, change_after_start: usize) -> Duration {
    let late = |now: Instant, request: &ProbeRequest| request.deadline - now - Duration::from_nanos(1);
    let answer = |healthy: bool, delay: Duration| match healthy {
        true => Some((delay, Answer::Result(ProbeResult::Pass))),
        false => None,
    };
    // A first run finds the start times; the runs agree up to the change, as the schedule is
    // a function of the key and the inputs.
    let mut probe_run = Harness::new();
    probe_run.add(0, spec(0, 1, config));
    probe_run.drive(secs(300), |now, request| answer(healthy_first, late(now, request)));
    let changed_at = probe_run.starts()[change_after_start].0 + Duration::from_nanos(1);

    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, config));
    let target = if healthy_first { Health::Down } else { Health::Up };
    harness.drive(secs(600), |now, request| {
        let healthy = if now < changed_at { healthy_first } else { !healthy_first };
        answer(healthy, late(now, request))
    });
    let (.., at) =
        *harness.transitions().iter().find(|(.., to, _, at)| *to == target && *at >= changed_at).unwrap();
    at - changed_at
}

#[test]
fn worst_case_detection_and_recovery_bound_simulated_runs_and_are_nearly_reached() {
    for (jitter, fall, rise, model) in [
        (10, 3, 2, HysteresisModel::Haproxy),
        (50, 1, 1, HysteresisModel::Consecutive),
        (0, 5, 4, HysteresisModel::Haproxy),
    ] {
        let config = HealthConfig { jitter, fall, rise, model, ..config(HealthMode::Udp) };
        let detection = worst_case_detection(&config, Health::Up);
        let recovery = worst_case_recovery(&config, Health::Down);
        // The least the same worst case can take, with every jitter draw at its minimum.
        let floor = |steady: Duration, steps: u32| {
            let timeout = config.timeout;
            timeout
                + min_jittered(steady, jitter)
                + timeout
                + (min_jittered(config.fast_interval(), jitter) + timeout) * (steps - 1)
                - Duration::from_nanos(u64::from(steps) + 1) // replies a nanosecond before their deadline
        };
        for start in 3..12 {
            let took = simulated_transition(&config, true, start);
            assert!(took <= detection, "detection took {took:?}, bound {detection:?}");
            assert!(took >= floor(config.interval, fall), "a near-worst case: {took:?}");
            let took = simulated_transition(&config, false, start);
            assert!(took <= recovery, "recovery took {took:?}, bound {recovery:?}");
            assert!(took >= floor(config.down_interval(), rise), "a near-worst case: {took:?}");
        }
    }
}
