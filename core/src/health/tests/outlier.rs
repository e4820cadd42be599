//! Outlier ejection: passive signals take a backend out for a time no probe shortens.

use std::time::Duration;

use super::*;
use crate::config::OutlierConfig;

/// Three backends of one cluster, all Up on TCP checks that always pass.
fn three_up(outlier: OutlierConfig) -> Harness {
    let config = HealthConfig { outlier, ..config(HealthMode::Tcp) };
    let mut harness = Harness::new();
    for index in 0..3 {
        harness.add(u32::from(index), spec(0, index + 1, &config));
    }
    harness.drive(secs(5), |_, _| pass());
    for index in 0..3 {
        assert_eq!(harness.status(index).health, Health::Up);
    }
    harness
}

fn fail_at(harness: &mut Harness, at: Instant, backend: u32, times: u32) {
    for _ in 0..times {
        harness.monitor.handle_passive_failure(at, BackendId(backend), PassiveFailure::Unanswered);
    }
    harness.drain();
}

fn ejections(harness: &Harness) -> Vec<(u32, Instant, Instant)> {
    harness
        .events()
        .into_iter()
        .filter_map(|event| match event {
            HealthEvent::Ejected { backend, until, at, .. } => Some((backend.0, at, until)),
            _ => None,
        })
        .collect()
}

#[test]
fn consecutive_failures_eject_and_passing_probes_do_not_readmit_before_the_time_is_up() {
    let mut harness = three_up(OutlierConfig::default());
    fail_at(&mut harness, secs(5), 1, 4);
    assert!(harness.monitor.is_eligible(BackendId(1)), "four in a row is not five");
    fail_at(&mut harness, secs(5), 1, 1);
    assert!(!harness.monitor.is_eligible(BackendId(1)));
    assert_eq!(ejections(&harness), vec![(1, secs(5), secs(15))]);
    let status = harness.status(1);
    assert_eq!((status.health, status.ejected_until, status.ejections), (Health::Up, Some(secs(15)), 1));
    // TCP checks keep passing; none readmits it, and its health never moves.
    harness.drive(secs(14), |_, _| pass());
    assert!(!harness.monitor.is_eligible(BackendId(1)));
    harness.drive(secs(15), |_, _| pass());
    assert!(harness.monitor.is_eligible(BackendId(1)));
    assert!(harness.transitions().iter().all(|t| t.4 <= secs(5)), "no transition after start-up");
    // Failing again soon after: the second ejection lasts twice as long.
    fail_at(&mut harness, secs(16), 1, 5);
    assert_eq!(ejections(&harness).last(), Some(&(1, secs(16), secs(36))));
}

#[test]
fn a_success_breaks_the_streak_and_past_ejections_are_forgotten_with_time() {
    let mut harness = three_up(OutlierConfig { failure_percent: 0, ..OutlierConfig::default() });
    for second in 5..15 {
        fail_at(&mut harness, secs(second), 0, 4);
        harness.monitor.handle_passive_success(secs(second), BackendId(0), 1);
    }
    assert!(ejections(&harness).is_empty(), "never five in a row");
    fail_at(&mut harness, secs(20), 0, 5);
    harness.drive(secs(30), |_, _| pass());
    // Readmitted at 30 s; 25 s later (more than two base times) the count has decayed to 0.
    fail_at(&mut harness, secs(55), 0, 5);
    assert_eq!(ejections(&harness), vec![(0, secs(20), secs(30)), (0, secs(55), secs(65))]);
}

#[test]
fn a_failure_share_over_the_window_ejects_once_there_are_enough_requests() {
    let outlier = OutlierConfig { consecutive_failures: 0, ..OutlierConfig::default() };
    let mut harness = three_up(outlier);
    // 30 % of requests fail, spread out so there is never a streak: 7 answered, 3 failed.
    for tenth in 0..10u64 {
        let at = secs(5) + Duration::from_millis(100 * tenth);
        harness.monitor.handle_passive_success(at, BackendId(2), 7);
        fail_at(&mut harness, at, 2, 3);
    }
    let ejected = ejections(&harness);
    assert_eq!(ejected.len(), 1, "ejected once, at {ejected:?}");
    // Not before `min_requests` (20) were seen: the second tenth brings 20.
    assert_eq!(ejected[0].1, secs(5) + Duration::from_millis(100));
    // A backend failing 10 % of the time stays.
    let mut harness = three_up(OutlierConfig { consecutive_failures: 0, ..OutlierConfig::default() });
    for second in 5..20 {
        harness.monitor.handle_passive_success(secs(second), BackendId(2), 9);
        fail_at(&mut harness, secs(second), 2, 1);
    }
    assert!(ejections(&harness).is_empty());
}

#[test]
fn the_ejected_share_is_capped_and_the_last_eligible_backend_is_never_ejected() {
    let mut harness = three_up(OutlierConfig::default());
    fail_at(&mut harness, secs(5), 0, 5);
    // 50 % of three is one: the second is refused.
    fail_at(&mut harness, secs(5), 1, 5);
    assert_eq!(ejections(&harness).len(), 1);
    assert_eq!(harness.monitor.stats().ejections_refused, 1);
    let mut harness = three_up(OutlierConfig { max_ejected_percent: 100, ..OutlierConfig::default() });
    fail_at(&mut harness, secs(5), 0, 5);
    fail_at(&mut harness, secs(5), 1, 5);
    fail_at(&mut harness, secs(5), 2, 5);
    assert_eq!(ejections(&harness).len(), 2, "the last eligible backend stays");
    assert!(harness.monitor.is_eligible(BackendId(2)));
}

#[test]
fn without_probes_or_with_ejection_off_passive_failures_move_the_hysteresis_instead() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &without_ejection(HealthMode::Tcp)));
    harness.add(1, spec(0, 2, &without_ejection(HealthMode::Tcp)));
    harness.drive(secs(5), |_, _| pass());
    fail_at(&mut harness, secs(5), 0, 5);
    assert!(ejections(&harness).is_empty());
    assert_eq!(harness.status(0).health, Health::Down);
}

#[test]
fn removing_an_ejected_backend_cancels_its_readmission() {
    let mut harness = three_up(OutlierConfig::default());
    fail_at(&mut harness, secs(5), 0, 5);
    harness.monitor.remove_backend(secs(6), BackendId(0));
    harness.drain();
    harness.monitor.check_invariants().unwrap();
    harness.drive(secs(30), |_, _| pass());
    assert!(!harness.events().iter().any(|e| matches!(e, HealthEvent::Readmitted { .. })));
}
