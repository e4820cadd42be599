//! Every scenario in `scenarios/` runs, meets its expectations, breaks no invariant, and
//! produces the trace recorded in `snapshots/scenarios/` (review changes with `cargo insta
//! review`; CI sets `CI=true`, so a changed trace fails there). The same seed gives the same
//! trace, byte for byte.

use std::path::{Path, PathBuf};

use udplb_sim::scenario::Scenario;

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = udplb_sim::scenario_files(&dir).expect("scenarios/ is readable");
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    files
}

#[test]
fn every_scenario_meets_its_expectations_and_matches_its_trace_snapshot() {
    let mut failures = Vec::new();
    for file in scenarios() {
        let scenario = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let report = udplb_sim::run(&scenario, &file, None);
        if !report.passed() {
            failures.push(format!("{}: {:?} {:?}", report.name, report.verdicts, report.violations));
        }
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/scenarios"),
            prepend_module_to_snapshot => false,
            description => scenario.description.trim(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(report.name.clone(), report.trace);
        });
    }
    assert!(failures.is_empty(), "scenarios failed:\n{}", failures.join("\n"));
}

#[test]
fn the_same_seed_gives_the_same_trace_byte_for_byte() {
    for file in scenarios() {
        let scenario = Scenario::load(&file).unwrap();
        let first = udplb_sim::run(&scenario, &file, Some(7));
        let second = udplb_sim::run(&scenario, &file, Some(7));
        assert_eq!(first.trace, second.trace, "{}", file.display());
        assert_eq!(first.events, second.events);
    }
}

#[test]
fn the_report_has_a_timeline_for_every_scenario() {
    let mut reports = Vec::new();
    for file in scenarios() {
        let scenario = Scenario::load(&file).unwrap();
        reports.push(udplb_sim::run(&scenario, &file, None));
    }
    let page = udplb_sim::report::html(&reports);
    for report in &reports {
        assert!(page.contains(&format!("id=\"{}\"", report.name)), "{} has a section", report.name);
    }
    assert_eq!(page.matches("<svg").count(), reports.len());
    // A killed backend's Down band is drawn.
    assert!(page.contains("#f87171"));
}

#[test]
fn round_robin_instances_disagree_after_a_rehash_so_the_placement_check_can_fail() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/ecmp_rehash.toml");
    let mut scenario = Scenario::load(&file).unwrap();
    for cluster in scenario.lb.clusters.values_mut() {
        cluster.algorithm = udplb_core::config::Algorithm::RoundRobin;
    }
    let report = udplb_sim::run(&scenario, &file, None);
    let placement = report.verdicts.iter().find(|v| v.what.contains("keep their backend")).unwrap();
    assert!(!placement.passed, "round robin cannot agree across instances: {}", placement.detail);
}

#[test]
fn with_per_port_affinity_a_nat_rebinding_opens_a_new_flow() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nat_rebinding.toml");
    let mut scenario = Scenario::load(&file).unwrap();
    for listener in scenario.lb.listeners.values_mut() {
        listener.affinity = udplb_core::config::Affinity::ClientAddressPort;
    }
    let report = udplb_sim::run(&scenario, &file, None);
    let created = report.verdicts.iter().find(|v| v.what.starts_with("flows created")).unwrap();
    assert!(!created.passed, "a new port is a new flow under per-port affinity: {}", created.detail);
}
