//! Backend lifecycle and views: eligibility, admin states, reloads, removal, cluster
//! all-down latching, history, and the bounded output queue.

use std::time::Duration;

use super::*;

fn changed(outputs: &[HealthOutput]) -> Vec<(u32, bool, Health, AdminState)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            HealthOutput::BackendChanged { backend, state } => {
                Some((backend.0, state.eligible, state.health, state.admin))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_backend_is_unknown_and_eligible_until_its_first_result() {
    let mut harness = Harness::new();
    harness.monitor.add_backend(Instant::ZERO, BackendId(0), spec(0, 1, &config(HealthMode::Tcp)));
    let outputs = harness.drain();
    assert_eq!(changed(&outputs), vec![(0, true, Health::Unknown, AdminState::Enabled)]);
    assert!(harness.monitor.is_eligible(BackendId(0)), "Unknown takes traffic: no black hole at start-up");
    harness.drive(secs(3), |_, _| fail(ProbeFailure::Refused));
    assert_eq!(changed(&harness.drain()), vec![]);
    let changes: Vec<_> = harness.log.iter().map(|(_, output)| output.clone()).collect();
    assert_eq!(changed(&changes).last(), Some(&(0, false, Health::Down, AdminState::Enabled)));
    assert!(!harness.monitor.is_eligible(BackendId(0)));
    assert!(!harness.monitor.is_eligible(BackendId(9)), "an unknown id is not eligible");
}

#[test]
fn a_paused_backend_is_not_probed_and_keeps_its_health() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    harness.drive(secs(10), |_, _| pass());
    let in_flight = harness.monitor.poll_timeout().unwrap();
    harness.monitor.handle_timeout(in_flight);
    let [HealthOutput::StartProbe(request)] = &harness.drain()[..] else { panic!("a check starts") };
    harness.monitor.set_admin(in_flight, BackendId(0), AdminState::Paused).unwrap();
    harness.monitor.handle_probe_result(in_flight, request.probe, ProbeResult::Fail(ProbeFailure::Refused));
    assert_eq!(harness.monitor.stats().results_late, 1, "the check was abandoned");
    let before = harness.starts().len();
    harness.drive(secs(100), |_, _| fail(ProbeFailure::Refused));
    assert_eq!(harness.starts().len(), before, "no probe while paused");
    let status = harness.status(0);
    assert_eq!((status.health, status.admin, status.eligible), (Health::Up, AdminState::Paused, false));
    assert_eq!(harness.monitor.poll_timeout(), None);

    harness.monitor.set_admin(secs(100), BackendId(0), AdminState::Enabled).unwrap();
    assert!(harness.monitor.is_eligible(BackendId(0)));
    harness.drive(secs(102), |_, _| pass());
    assert_eq!(harness.starts().len(), before + 1, "resuming restarts probing within one interval");
}

#[test]
fn disabled_and_draining_backends_are_probed_but_not_eligible() {
    for state in [AdminState::Disabled, AdminState::Draining] {
        let mut harness = Harness::new();
        harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
        harness.drive(secs(5), |_, _| pass());
        harness.monitor.set_admin(secs(5), BackendId(0), state).unwrap();
        let outputs = harness.drain();
        assert_eq!(changed(&outputs), vec![(0, false, Health::Up, state)]);
        let before = harness.starts().len();
        harness.drive(secs(30), |_, _| fail(ProbeFailure::Refused));
        assert!(harness.starts().len() > before + 3, "still probed");
        let status = harness.status(0);
        assert_eq!((status.health, status.eligible), (Health::Down, false), "its health stays current");
    }
}

#[test]
fn cluster_all_down_and_recovered_fire_exactly_once_per_episode_across_many_rounds() {
    let config = HealthConfig { jitter: 20, ..config(HealthMode::Tcp) };
    let mut harness = Harness::new();
    for index in 0..3u8 {
        harness.add(u32::from(index), spec(0, index, &config));
    }
    let healthy = |now: Instant, backend: BackendId| backend.0 == 1 && (secs(300)..secs(600)).contains(&now);
    harness.drive(secs(900), |now, request| match healthy(now, request.backend) {
        true => pass(),
        false => fail(ProbeFailure::Refused),
    });
    assert!(harness.starts().len() > 300, "many probe rounds");
    let cluster_events: Vec<HealthEvent> = harness
        .events()
        .into_iter()
        .filter(|event| {
            matches!(event, HealthEvent::ClusterAllDown { .. } | HealthEvent::ClusterRecovered { .. })
        })
        .collect();
    let [
        HealthEvent::ClusterAllDown { at: first_down, .. },
        HealthEvent::ClusterRecovered { at: recovered, .. },
        HealthEvent::ClusterAllDown { at: second_down, .. },
    ] = cluster_events[..]
    else {
        panic!("one event per episode boundary, got {cluster_events:?}")
    };
    assert!(first_down < secs(3) && (secs(300)..secs(304)).contains(&recovered));
    assert!((secs(600)..secs(610)).contains(&second_down));
    assert!(harness.monitor.cluster_all_down(ClusterId(0)));

    // Taking every backend out of service is an operator's decision, not a recovery.
    for backend in 0..3 {
        harness.monitor.set_admin(secs(900), BackendId(backend), AdminState::Disabled).unwrap();
    }
    harness.drain();
    assert_eq!(
        harness.events().iter().filter(|e| matches!(e, HealthEvent::ClusterRecovered { .. })).count(),
        1
    );
}

#[test]
fn a_cluster_with_no_enabled_backend_is_not_all_down() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    harness.monitor.set_admin(Instant::ZERO, BackendId(0), AdminState::Disabled).unwrap();
    harness.drive(secs(60), |_, _| fail(ProbeFailure::Refused));
    assert!(!harness.events().iter().any(|event| matches!(event, HealthEvent::ClusterAllDown { .. })));
    harness.monitor.set_admin(secs(60), BackendId(0), AdminState::Enabled).unwrap();
    harness.drain();
    assert!(
        matches!(harness.events().last(), Some(HealthEvent::ClusterAllDown { .. })),
        "enabling a Down one is"
    );
}

#[test]
fn history_is_bounded_and_records_health_and_admin_changes() {
    let config = HealthConfig { history: 3, ..config(HealthMode::Tcp) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    harness.drive(secs(10), |_, _| fail(ProbeFailure::Refused));
    harness.monitor.set_admin(secs(10), BackendId(0), AdminState::Paused).unwrap();
    harness.monitor.set_admin(secs(11), BackendId(0), AdminState::Enabled).unwrap();
    harness.drive(secs(30), |_, _| pass());
    for _ in 0..20 {
        let at = harness.now + Duration::from_secs(10);
        harness.drive(at, |_, _| fail(ProbeFailure::Refused));
        let at = harness.now + Duration::from_secs(10);
        harness.drive(at, |_, _| pass());
    }
    let history = harness.status(0).history;
    assert_eq!(history.len(), 3, "bounded by `history`");
    let HistoryChange::Health { from: Health::Down, to: Health::Up, code: CheckCode::L4Ok } =
        history[2].change
    else {
        panic!("the newest entry is last: {history:?}")
    };
    assert!(history.windows(2).all(|pair| pair[0].at <= pair[1].at));

    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    harness.drive(secs(3), |_, _| fail(ProbeFailure::Refused));
    harness.monitor.set_admin(secs(3), BackendId(0), AdminState::Draining).unwrap();
    let changes: Vec<HistoryChange> =
        harness.status(0).history.into_iter().map(|entry| entry.change).collect();
    assert_eq!(
        changes,
        vec![
            HistoryChange::Health { from: Health::Unknown, to: Health::Down, code: CheckCode::L4Con },
            HistoryChange::Admin { from: AdminState::Enabled, to: AdminState::Draining },
        ]
    );
}

#[test]
fn a_reload_keeps_state_when_probe_settings_are_unchanged_and_restarts_otherwise() {
    let config = config(HealthMode::Tcp);
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    harness.drive(secs(10), |_, _| pass());
    harness.monitor.set_admin(secs(10), BackendId(0), AdminState::Draining).unwrap();
    let before = harness.status(0);
    let renamed = MonitoredBackend { id: "renamed".into(), ..spec(0, 1, &config) };
    assert!(!harness.monitor.update_backend(secs(10), BackendId(0), renamed));
    assert_eq!(harness.status(0), before, "same settings: nothing changes");
    harness.drain();

    let in_flight = harness.monitor.poll_timeout().unwrap();
    harness.monitor.handle_timeout(in_flight);
    let [HealthOutput::StartProbe(request)] = &harness.drain()[..] else { panic!("a check starts") };
    let stricter = HealthConfig { rise: 3, ..config.clone() };
    assert!(harness.monitor.update_backend(in_flight, BackendId(0), spec(0, 1, &stricter)));
    let status = harness.status(0);
    assert_eq!((status.health, status.admin), (Health::Unknown, AdminState::Draining), "admin state is kept");
    assert!(matches!(status.counter, CounterView::Haproxy { health: 2, rise: 3, .. }), "counters reset");
    assert_eq!(
        status.history.last().unwrap().change,
        HistoryChange::Restarted { from: Health::Up, to: Health::Unknown }
    );
    harness.monitor.handle_probe_result(in_flight, request.probe, ProbeResult::Pass);
    assert_eq!(harness.monitor.stats().results_late, 1, "the old check's result is ignored");
    harness.drain();
    assert_eq!(
        harness.transitions().last().unwrap(),
        &(0, Health::Up, Health::Unknown, CheckCode::Init, in_flight)
    );

    // Switching probes off restarts at full health, with nothing left to wait for.
    assert!(harness.monitor.update_backend(
        in_flight,
        BackendId(0),
        spec(0, 1, &super::config(HealthMode::Off))
    ));
    assert_eq!(harness.status(0).health, Health::Up);
    assert_eq!(harness.monitor.poll_timeout(), None);
    harness.monitor.check_invariants().unwrap();
}

#[test]
fn removing_a_backend_reports_it_removed_and_ignores_its_probes() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::Tcp)));
    harness.add(1, spec(0, 2, &config(HealthMode::Tcp)));
    let at = harness.monitor.poll_timeout().unwrap();
    harness.monitor.handle_timeout(at);
    let [HealthOutput::StartProbe(request)] = &harness.drain()[..] else { panic!("a check starts") };
    let removed = request.backend;
    harness.monitor.remove_backend(at, removed);
    let outputs = harness.drain();
    assert_eq!(changed(&outputs), vec![(removed.0, false, Health::Unknown, AdminState::Removed)]);
    assert!(outputs.iter().any(|output| matches!(
        output,
        HealthOutput::Event(HealthEvent::AdminChanged { to: AdminState::Removed, .. })
    )));
    harness.monitor.handle_probe_result(at, request.probe, ProbeResult::Pass);
    harness.monitor.handle_passive_failure(at, removed, PassiveFailure::Refused);
    let stats = harness.monitor.stats();
    assert_eq!((stats.results_late, stats.unknown_backend), (1, 1));
    assert_eq!(harness.monitor.backend(removed), None);
    assert_eq!(
        harness.monitor.set_admin(at, removed, AdminState::Enabled),
        Err(HealthError::UnknownBackend(removed))
    );
    let other = BackendId(1 - removed.0);
    harness.monitor.set_admin(at, other, AdminState::Removed).unwrap();
    assert_eq!(harness.monitor.backend_ids().count(), 0);
    assert_eq!(harness.monitor.poll_timeout(), None);
    harness.monitor.check_invariants().unwrap();
}

#[test]
fn events_beyond_the_cap_are_dropped_and_counted_but_changes_and_starts_are_not() {
    let mut monitor = HealthMonitor::new(&KEY);
    monitor.add_backend(Instant::ZERO, BackendId(0), spec(0, 1, &config(HealthMode::Tcp)));
    for _ in 0..5000 {
        monitor.set_admin(Instant::ZERO, BackendId(0), AdminState::Disabled).unwrap();
        monitor.set_admin(Instant::ZERO, BackendId(0), AdminState::Enabled).unwrap();
    }
    monitor.handle_timeout(secs(2));
    monitor.check_invariants().unwrap();
    let outputs: Vec<HealthOutput> = std::iter::from_fn(|| monitor.poll_output()).collect();
    let events = outputs.iter().filter(|output| matches!(output, HealthOutput::Event(_))).count();
    assert_eq!(events, MAX_QUEUED_EVENTS);
    assert_eq!(monitor.stats().events_dropped, 10_000 - MAX_QUEUED_EVENTS as u64);
    assert_eq!(
        changed(&outputs),
        vec![(0, true, Health::Unknown, AdminState::Enabled)],
        "one, with the latest state"
    );
    assert_eq!(outputs.iter().filter(|output| matches!(output, HealthOutput::StartProbe(_))).count(), 1);
}

#[test]
fn a_start_queued_for_an_abandoned_check_announces_the_live_one_or_nothing() {
    let mut monitor = HealthMonitor::new(&KEY);
    monitor.add_backend(Instant::ZERO, BackendId(0), spec(0, 1, &config(HealthMode::Tcp)));
    let starts = |monitor: &mut HealthMonitor| -> Vec<ProbeId> {
        std::iter::from_fn(|| monitor.poll_output())
            .filter_map(|output| match output {
                HealthOutput::StartProbe(request) => Some(request.probe),
                _ => None,
            })
            .collect()
    };
    let fire = |monitor: &mut HealthMonitor, times: usize| {
        for _ in 0..times {
            let at = monitor.poll_timeout().unwrap();
            monitor.handle_timeout(at);
        }
    };
    // Not drained: five checks start and time out; the one queued entry finds none live.
    fire(&mut monitor, 10);
    assert_eq!(starts(&mut monitor), vec![]);
    fire(&mut monitor, 1);
    assert_eq!(starts(&mut monitor), vec![ProbeId(6)], "the live check is announced");
    // Its timeout, another check and its timeout, then a fourth check, live when paused.
    fire(&mut monitor, 4);
    assert!(monitor.backend(BackendId(0)).unwrap().checking);
    monitor.set_admin(Instant::from_secs(100), BackendId(0), AdminState::Paused).unwrap();
    assert_eq!(starts(&mut monitor), vec![], "pausing abandoned it");
    monitor.check_invariants().unwrap();
}
