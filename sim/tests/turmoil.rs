//! The turmoil cross-check: scenarios played on turmoil's network, with the balancer host
//! running the same core through the same driver, reach the same verdicts as on the
//! simulator's own network. Traces differ (turmoil has its own latency model and moves
//! datagrams on a fixed tick); whether each expectation holds must not.
//!
//! `cargo test -p udplb-sim --test turmoil -- --nocapture` prints each comparison table;
//! `-- --ignored` also plays every other scenario the harness models.

mod turmoil_support;

use std::path::{Path, PathBuf};

use udplb_sim::scenario::Scenario;

fn scenario_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file)
}

/// Plays one scenario on both engines. `Ok` holds the comparison table when both pass every
/// expectation, with the same verdict for each, and neither run broke an invariant; `Err`
/// holds the table and what went wrong.
fn compare(path: &Path) -> Result<String, String> {
    let scenario = Scenario::load(path).map_err(|error| error.to_string())?;
    let ours = udplb_sim::run(&scenario, path, None);
    let theirs = turmoil_support::run(&scenario)?;
    if ours.verdicts.len() != theirs.verdicts.len() {
        return Err(format!("{}: not one verdict per expectation on both engines", scenario.name));
    }
    let mut table = format!("{} ({})\n", scenario.name, path.display());
    let mut disagreements = Vec::new();
    let mark = |passed: bool| if passed { "pass" } else { "FAIL" };
    for (sim, turmoil) in ours.verdicts.iter().zip(&theirs.verdicts) {
        table.push_str(&format!(
            "  {}\n    sim {} ({}), turmoil {} ({})\n",
            sim.what,
            mark(sim.passed),
            sim.detail,
            mark(turmoil.passed),
            turmoil.detail
        ));
        if sim.passed != turmoil.passed || !sim.passed {
            disagreements.push(sim.what.clone());
        }
    }
    for line in &theirs.summary {
        table.push_str(&format!("  turmoil {line}\n"));
    }
    if !ours.violations.is_empty() {
        return Err(format!("{table}the simulator's run broke invariants: {:?}", ours.violations));
    }
    if !theirs.violations.is_empty() {
        return Err(format!("{table}the turmoil run broke invariants: {:?}", theirs.violations));
    }
    if !disagreements.is_empty() {
        return Err(format!("{table}verdicts differ or fail: {disagreements:?}"));
    }
    Ok(table)
}

fn both_engines_agree(file: &str) {
    match compare(&scenario_path(file)) {
        Ok(table) => println!("{table}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn dns_responses_1_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("dns_responses_1.toml");
}

#[test]
fn pipelined_queries_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("pipelined_queries.toml");
}

#[test]
fn requests_cap_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("requests_cap.toml");
}

#[test]
fn listener_drain_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("listener_drain.toml");
}

/// A killed backend: the ICMP stand-in refuses its datagrams, turmoil refuses its TCP probes.
#[test]
fn backend_killed_icmp_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("backend_killed_icmp.toml");
}

/// UDP probes only: the ICMP stand-in's refusals of probes take the backend down.
#[test]
fn udp_probe_icmp_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("udp_probe_icmp.toml");
}

/// UDP refused while TCP accepts: only the UDP probes' refusals tell.
#[test]
fn tcp_up_udp_refused_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("tcp_up_udp_refused.toml");
}

/// A firewall: no refusal at all, so the probes must time out.
#[test]
fn silent_backend_reaches_the_same_verdicts_on_turmoil() {
    both_engines_agree("silent_backend.toml");
}

/// Every scenario the harness models, the ones above included (about twice as long).
#[test]
#[ignore = "slow: run with --ignored"]
fn every_scenario_turmoil_models_reaches_the_same_verdicts() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut failures = Vec::new();
    for path in udplb_sim::scenario_files(&directory).unwrap() {
        let scenario = Scenario::load(&path).unwrap();
        if let Some(missing) = turmoil_support::unsupported(&scenario) {
            println!("{}: not modelled: {missing}\n", scenario.name);
            continue;
        }
        match compare(&path) {
            Ok(table) => println!("{table}"),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_turmoil_run_is_a_function_of_its_seed() {
    let scenario = Scenario::load(&scenario_path("udp_probe_icmp.toml")).unwrap();
    let first = turmoil_support::run(&scenario).unwrap();
    let second = turmoil_support::run(&scenario).unwrap();
    assert_eq!(first.summary, second.summary);
    assert_eq!(first.verdicts, second.verdicts);
}

#[test]
fn the_harness_refuses_scenarios_that_use_what_it_does_not_model() {
    // Playing them half-modelled would make an agreement mean nothing.
    for (file, missing) in [
        ("lossy_network.toml", "loss"),
        ("proxy_v2.toml", "PROXY v2"),
        ("flood_shed.toml", "flood"),
        ("partition_heal.toml", "timeline action partition"),
        ("reload_membership.toml", "timeline action reload"),
        ("ecmp_rehash.toml", "several balancer instances"),
        ("nat_rebinding.toml", "timeline action rebind"),
    ] {
        let scenario = Scenario::load(&scenario_path(file)).unwrap();
        let why = turmoil_support::unsupported(&scenario).unwrap_or_else(|| panic!("{file} is not refused"));
        assert!(why.contains(missing), "{file}: {why}");
    }
}
