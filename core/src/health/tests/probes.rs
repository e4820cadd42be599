//! Checks and their results: timeouts, late and stray results, UDP reply matching, `tcp+udp`,
//! PPv2 LOCAL headers, passive failures and passive recovery.

use std::time::Duration;

use super::*;
use crate::config::ExpectMatch;
use crate::proxy_v2::{Addresses, Command, Header};

/// A backend that passed its first check (Up, full health), with the harness just after it.
fn up_backend(config: &HealthConfig) -> Harness {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, config));
    harness.drive(secs(2), |_, _| pass());
    assert_eq!(harness.status(0).health, Health::Up);
    harness
}

/// The start of the next check of backend 0, advancing silently until it comes.
fn next_start(harness: &mut Harness) -> Vec<ProbeRequest> {
    let seen = harness.starts().len();
    let at = harness.monitor.poll_timeout().unwrap();
    harness.monitor.handle_timeout(at);
    harness.now = at;
    harness.drain();
    harness.starts()[seen..].iter().map(|(_, request)| request.clone()).collect()
}

#[test]
fn a_silent_probe_fails_with_l4tout_and_its_late_result_is_ignored() {
    let mut harness = up_backend(&config(HealthMode::Tcp));
    let [request] = &next_start(&mut harness)[..] else { panic!("one TCP probe") };
    assert_eq!(request.deadline, harness.now + Duration::from_secs(1));
    harness.monitor.handle_timeout(request.deadline);
    let status = harness.status(0);
    assert_eq!(status.last_code, Some(CheckCode::L4Tout));
    assert_eq!(harness.monitor.stats().probes_timed_out, 1);
    assert!(matches!(status.counter, CounterView::Haproxy { health: 3, .. }), "silence counted as a failure");
    // The pass that arrives a moment later changes nothing.
    harness.monitor.handle_probe_result(
        request.deadline + Duration::from_millis(1),
        request.probe,
        ProbeResult::Pass,
    );
    assert_eq!(harness.status(0), status);
    assert_eq!(harness.monitor.stats().results_late, 1);
    harness.monitor.check_invariants().unwrap();
}

#[test]
fn stray_results_are_ignored_and_counted_by_kind() {
    let mut harness = up_backend(&config(HealthMode::Tcp));
    let before = harness.status(0);
    harness.monitor.handle_probe_result(harness.now, ProbeId(999), ProbeResult::Fail(ProbeFailure::Refused));
    harness.monitor.handle_probe_reply(harness.now, ProbeId(998), b"x");
    let [request] = &next_start(&mut harness)[..] else { panic!("one TCP probe") };
    harness.monitor.handle_probe_reply(harness.now, request.probe, b"a reply to a TCP probe");
    harness.monitor.handle_probe_result(harness.now, request.probe, ProbeResult::Pass);
    harness.monitor.handle_probe_result(harness.now, request.probe, ProbeResult::Pass);
    let stats = harness.monitor.stats();
    assert_eq!((stats.results_unknown, stats.replies_to_tcp_probes, stats.results_late), (2, 1, 1));
    assert_eq!(harness.status(0).health, before.health);
}

#[test]
fn udp_silence_is_l7tout_a_wrong_reply_is_l7rsp_and_prefix_matching_is_opt_in() {
    let exact = HealthConfig { udp_expect: Some("pong".into()), ..config(HealthMode::Udp) };
    let mut harness = up_backend(&exact);
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    harness.monitor.handle_timeout(request.deadline);
    assert_eq!(harness.status(0).last_code, Some(CheckCode::L7Tout));
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    harness.monitor.handle_probe_reply(harness.now, request.probe, b"pong and more");
    assert_eq!(harness.status(0).last_code, Some(CheckCode::L7Rsp));
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    harness.monitor.handle_probe_reply(harness.now, request.probe, b"pong");
    assert_eq!(harness.status(0).last_code, Some(CheckCode::L7Ok));
    assert_eq!(harness.monitor.stats().probes_mismatched, 1);

    let prefix = HealthConfig { udp_expect_match: ExpectMatch::Prefix, ..exact.clone() };
    let mut harness = up_backend(&prefix);
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    harness.monitor.handle_probe_reply(harness.now, request.probe, b"pong and more");
    assert_eq!(harness.status(0).last_code, Some(CheckCode::L7Ok));

    // No expectation: any reply passes, even an empty one; silence still fails.
    let mut harness = up_backend(&config(HealthMode::Udp));
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    assert_eq!(
        request.kind,
        ProbeKind::Udp { address: spec(0, 1, &exact).address, datagram: b"ping".to_vec() }
    );
    harness.monitor.handle_probe_reply(harness.now, request.probe, b"");
    assert_eq!(harness.status(0).last_code, Some(CheckCode::L7Ok));
}

#[test]
fn tcp_probes_go_to_the_companion_port() {
    let config = HealthConfig { tcp_port: Some(8053), ..config(HealthMode::Tcp) };
    let mut harness = up_backend(&config);
    let [request] = &next_start(&mut harness)[..] else { panic!("one TCP probe") };
    assert_eq!(request.kind, ProbeKind::Tcp { address: "192.0.2.1:8053".parse().unwrap() });
}

/// Runs a first `tcp+udp` check on a new backend with the given answers; returns the
/// transition it caused.
fn combined(tcp: Option<ProbeResult>, udp: Option<&[u8]>) -> (Health, CheckCode) {
    let config = HealthConfig { udp_expect: Some("pong".into()), ..config(HealthMode::TcpAndUdp) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    let requests = next_start(&mut harness);
    let [tcp_request, udp_request] = &requests[..] else { panic!("one probe of each protocol") };
    assert!(
        matches!(tcp_request.kind, ProbeKind::Tcp { .. })
            && matches!(udp_request.kind, ProbeKind::Udp { .. })
    );
    assert_eq!(tcp_request.deadline, udp_request.deadline, "one timeout for the check");
    if let Some(result) = tcp {
        harness.monitor.handle_probe_result(harness.now, tcp_request.probe, result);
    }
    if let Some(reply) = udp {
        harness.monitor.handle_probe_reply(harness.now, udp_request.probe, reply);
    }
    harness.monitor.handle_timeout(tcp_request.deadline);
    harness.drain();
    let [(_, Health::Unknown, to, code, _)] = harness.transitions()[..] else { panic!("one transition") };
    (to, code)
}

#[test]
fn a_tcp_and_udp_check_passes_only_when_both_probes_pass() {
    use ProbeFailure::*;
    let fail = |failure| Some(ProbeResult::Fail(failure));
    assert_eq!(combined(Some(ProbeResult::Pass), Some(b"pong")), (Health::Up, CheckCode::L7Ok));
    assert_eq!(combined(Some(ProbeResult::Pass), None), (Health::Down, CheckCode::L7Tout));
    assert_eq!(combined(Some(ProbeResult::Pass), Some(b"nope")), (Health::Down, CheckCode::L7Rsp));
    assert_eq!(combined(fail(Refused), Some(b"pong")), (Health::Down, CheckCode::L4Con));
    assert_eq!(combined(None, Some(b"pong")), (Health::Down, CheckCode::L4Tout));
    assert_eq!(combined(None, Some(b"nope")), (Health::Down, CheckCode::L4Tout), "the lower layer is named");
    assert_eq!(combined(fail(Error), None), (Health::Down, CheckCode::SockErr));
}

#[test]
fn a_tcp_and_udp_check_completes_as_soon_as_both_answer() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config(HealthMode::TcpAndUdp)));
    let requests = next_start(&mut harness);
    harness.monitor.handle_probe_result(harness.now, requests[0].probe, ProbeResult::Pass);
    assert!(harness.status(0).checking, "still waiting for the UDP probe");
    harness.monitor.handle_probe_reply(harness.now, requests[1].probe, b"anything");
    let status = harness.status(0);
    assert!(!status.checking);
    assert_eq!(status.next_check_at, Some(harness.now + Duration::from_secs(2)));
}

#[test]
fn udp_probes_carry_a_ppv2_local_header_when_the_cluster_sends_ppv2() {
    let mut harness = Harness::new();
    let backend = MonitoredBackend { proxy_v2_local: true, ..spec(0, 1, &config(HealthMode::Udp)) };
    harness.add(0, backend);
    let [request] = &next_start(&mut harness)[..] else { panic!("one UDP probe") };
    let ProbeKind::Udp { datagram, .. } = &request.kind else { panic!("a UDP probe") };
    let (header, header_len) = Header::parse(datagram).unwrap();
    assert_eq!((header.command, header.addresses), (Command::Local, Addresses::Unspec));
    assert!(header.tlvs.is_empty());
    assert_eq!(&datagram[header_len..], b"ping");
}

#[test]
fn passive_failures_feed_the_hysteresis_unless_the_cluster_or_a_pause_says_otherwise() {
    let config = HealthConfig { passive_unanswered: false, ..without_ejection(HealthMode::Tcp) };
    let mut harness = up_backend(&config);
    let backend = BackendId(0);
    harness.monitor.handle_passive_failure(harness.now, backend, PassiveFailure::Unanswered);
    assert!(matches!(harness.status(0).counter, CounterView::Haproxy { health: 4, .. }), "not counted");
    for _ in 0..3 {
        harness.monitor.handle_passive_failure(harness.now, backend, PassiveFailure::Refused);
    }
    harness.drain();
    let (_, from, to, code, _) = *harness.transitions().last().unwrap();
    assert_eq!((from, to, code), (Health::Up, Health::Down, CheckCode::PassiveCon));
    assert!(!harness.monitor.is_eligible(backend));

    let mut harness = up_backend(&config);
    harness.monitor.set_admin(harness.now, backend, AdminState::Paused).unwrap();
    for _ in 0..5 {
        harness.monitor.handle_passive_failure(harness.now, backend, PassiveFailure::Refused);
    }
    assert_eq!(harness.status(0).health, Health::Up, "a paused backend's state is frozen");
    harness.monitor.handle_passive_failure(harness.now, BackendId(7), PassiveFailure::Refused);
    let stats = harness.monitor.stats();
    assert_eq!((stats.passive_counted, stats.passive_ignored, stats.unknown_backend), (0, 5, 1));
}

#[test]
fn passive_recovery_brings_a_backend_back_up_in_mode_off() {
    let config = HealthConfig { passive_recovery: Duration::from_secs(30), ..config(HealthMode::Off) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    assert_eq!(harness.status(0).health, Health::Up, "nothing probes: starts at full health");
    assert_eq!(harness.monitor.poll_timeout(), None);
    let backend = BackendId(0);
    for second in [10, 11, 12] {
        harness.monitor.handle_passive_failure(secs(second), backend, PassiveFailure::Refused);
    }
    assert_eq!(harness.status(0).health, Health::Down);
    // Still failing while down: the wait restarts from the last failure.
    harness.monitor.handle_passive_failure(secs(20), backend, PassiveFailure::Unanswered);
    harness.silence(secs(49));
    assert_eq!(harness.status(0).health, Health::Down);
    harness.silence(secs(50));
    assert_eq!(harness.status(0).health, Health::Up);
    assert!(harness.monitor.is_eligible(backend));
    assert_eq!(
        harness.transitions(),
        vec![
            (0, Health::Up, Health::Down, CheckCode::PassiveCon, secs(12)),
            (0, Health::Down, Health::Up, CheckCode::PassiveRecovery, secs(50))
        ]
    );
    assert!(harness.starts().is_empty(), "mode off never probes");
    assert_eq!(harness.monitor.poll_timeout(), None, "back at full health, nothing to wait for");
}

#[test]
fn mode_off_forgets_isolated_passive_failures() {
    let config = HealthConfig { passive_recovery: Duration::from_secs(30), ..config(HealthMode::Off) };
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &config));
    for start in [0, 100, 200, 300] {
        harness.monitor.handle_passive_failure(secs(start + 1), BackendId(0), PassiveFailure::Refused);
        harness.monitor.handle_passive_failure(secs(start + 2), BackendId(0), PassiveFailure::Refused);
        harness.silence(secs(start + 99));
        assert!(matches!(harness.status(0).counter, CounterView::Haproxy { health: 4, .. }));
    }
    assert!(harness.transitions().is_empty(), "two failures at a time never reach fall = 3");
}

#[test]
fn unknown_resolves_on_the_first_passive_failure_when_probes_would_have() {
    let mut harness = Harness::new();
    harness.add(0, spec(0, 1, &without_ejection(HealthMode::Tcp)));
    harness.monitor.handle_passive_failure(Instant::ZERO, BackendId(0), PassiveFailure::Refused);
    harness.drain();
    assert_eq!(
        harness.transitions(),
        vec![(0, Health::Unknown, Health::Down, CheckCode::PassiveCon, Instant::ZERO)]
    );
}
