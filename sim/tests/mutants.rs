//! The scenarios can fail: each named mutant of the core (a deliberate bug behind a test-only
//! switch, `core/src/mutants.rs`) is caught by at least one scenario or test.
//!
//! This file is its own test binary with one test that switches the mutants on one at a time.
//! Where no scenario shows a mutant, its catcher is one of the core's own tests of the
//! behaviour it breaks (`core/tests/partial_faults.rs`, compiled in here as a module and
//! called as a function with the mutant on). Switches are per thread, so those tests' own
//! runs in this binary, on other threads, never see a mutant.

use std::net::SocketAddr;
use std::panic;
use std::path::Path;

use udplb_core::BackendId;
use udplb_core::config::Algorithm;
use udplb_core::mutants::{self, Mutant};
use udplb_core::select::{Candidate, Selector, identity_hash};
use udplb_sim::scenario::Scenario;

#[path = "../../core/tests/partial_faults.rs"]
mod partial_faults;

/// Whether one of the core's tests fails (panics).
fn core_test_fails(test: fn()) -> bool {
    panic::catch_unwind(test).is_err()
}

fn scenario_fails(name: &str) -> bool {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(name);
    let scenario = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    !udplb_sim::run(&scenario, &file, None).passed()
}

/// Two Maglev selectors fed the same backends in different orders agree (canonical order).
fn maglev_ignores_input_order() -> bool {
    let key = [9u8; 32];
    let candidates: Vec<Candidate> = (0..12u32)
        .map(|i| {
            let address: SocketAddr = format!("10.1.0.{}:53", i + 1).parse().unwrap();
            Candidate {
                backend: BackendId(i),
                identity: identity_hash(&key, &format!("b{i}"), address),
                weight: 1 + i % 3,
                pool: 0,
                backup: false,
                eligible: true,
                enabled: true,
                flows: 0,
            }
        })
        .collect();
    let mut reversed = candidates.clone();
    reversed.reverse();
    let mut forward = Selector::new(Algorithm::Maglev, 65_537, &key, "pool");
    let mut backward = Selector::new(Algorithm::Maglev, 65_537, &key, "pool");
    forward.update(&candidates);
    backward.update(&reversed);
    forward.fingerprint() == backward.fingerprint()
}

#[test]
fn every_named_mutant_is_caught() {
    let catchers: [(Mutant, &dyn Fn() -> bool, &str); 17] = [
        (
            Mutant::ResponsesPerFlow,
            &|| scenario_fails("pipelined_queries.toml"),
            "scenario pipelined-queries",
        ),
        (
            Mutant::TimerLostOnEarlyFire,
            &|| scenario_fails("lifetime_and_idle.toml"),
            "scenario lifetime-and-idle",
        ),
        (Mutant::IeeeCrc32, &|| scenario_fails("proxy_v2.toml"), "scenario proxy-v2-first-and-every"),
        (Mutant::MaglevUnsorted, &|| !maglev_ignores_input_order(), "Maglev input-order test"),
        (Mutant::SilenceIsHealthy, &|| scenario_fails("silent_backend.toml"), "scenario silent-backend"),
        (
            Mutant::SelectionIgnoresHealth,
            &|| scenario_fails("backend_killed_icmp.toml"),
            "scenario backend-killed-icmp",
        ),
        (
            Mutant::WriteOffKeepsFlow,
            &|| {
                core_test_fails(
                    partial_faults::a_lost_reply_is_written_off_at_the_back_deadline_and_the_client_moves_on,
                )
            },
            "core test a_lost_reply_is_written_off_at_the_back_deadline_and_the_client_moves_on",
        ),
        (
            Mutant::DuplicateRepliesKept,
            &|| scenario_fails("duplicated_replies.toml"),
            "scenario duplicated-replies",
        ),
        (
            Mutant::CopiedRequestsOwed,
            &|| core_test_fails(partial_faults::copies_the_network_made_are_not_counted),
            "core test copies_the_network_made_are_not_counted",
        ),
        (Mutant::RefusalsMoveHealth, &|| scenario_fails("udp_rejected.toml"), "scenario udp-rejected"),
        (
            Mutant::StraysNotBlamed,
            &|| scenario_fails("stray_replies_uncounted.toml"),
            "scenario stray-replies-uncounted",
        ),
        (Mutant::LateRepliesNotTakenBack, &|| scenario_fails("late_replies.toml"), "scenario late-replies"),
        (Mutant::EjectionIgnoresCap, &|| scenario_fails("ejection_cap.toml"), "scenario ejection-cap"),
        (
            Mutant::ReselectKeepsFlow,
            &|| {
                core_test_fails(
                    partial_faults::reselect_moves_a_flow_off_a_backend_that_is_out_on_its_next_datagram,
                )
            },
            "core test reselect_moves_a_flow_off_a_backend_that_is_out_on_its_next_datagram",
        ),
        (Mutant::FailOpenNeverOpens, &|| scenario_fails("fail_open.toml"), "scenario fail-open"),
        (
            Mutant::RepliesFromListenerAddress,
            &|| scenario_fails("wildcard_listener.toml"),
            "scenario wildcard-listener",
        ),
        (Mutant::QuicLbIgnored, &|| scenario_fails("quic_nat_rebinding.toml"), "scenario quic-nat-rebinding"),
    ];
    assert_eq!(catchers.len(), Mutant::ALL.len(), "every mutant has a catcher");
    mutants::set(None);
    for (mutant, caught, by) in &catchers {
        assert!(!caught(), "{by} fails even without {mutant:?}");
    }
    let mut missed = Vec::new();
    for (mutant, caught, by) in &catchers {
        mutants::set(Some(*mutant));
        if !caught() {
            missed.push(format!("{mutant:?} (expected {by} to catch it)"));
        }
        mutants::set(None);
    }
    assert!(missed.is_empty(), "mutants not caught: {missed:?}");
}
