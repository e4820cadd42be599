//! Restart with handover (issue 15): the timeline action `handover` replaces every worker's
//! core with one restored from its snapshot, its sockets kept. For every scenario, a run with
//! a handover at a third and at two thirds of its duration must trace exactly what the run
//! without it traces (the action's own line aside), and record the same.

use std::path::Path;

use udplb_sim::scenario::{Action, Scenario, TimelineEntry};
use udplb_sim::trace::{DETAILED_MAX_LINES, Trace};
use udplb_sim::world::World;

fn run(scenario: Scenario) -> (Vec<String>, String) {
    let mut world = World::new(scenario.clone(), scenario.seed);
    // Every flow and probe traced, so that a flow moved or a probe shifted shows.
    world.detailed = true;
    world.trace = Trace::with_limit(DETAILED_MAX_LINES);
    world.run();
    let lines = world
        .trace
        .render()
        .lines()
        .filter(|line| !line.is_empty() && !line.ends_with("timeline: restart with handover"))
        .map(str::to_owned)
        .collect();
    (lines, format!("{:?}", world.record))
}

#[test]
fn a_handover_changes_nothing_in_any_scenario() {
    let files =
        udplb_sim::scenario_files(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").as_path())
            .expect("scenarios directory");
    let (mut same, mut refused, mut compared) = (Vec::new(), Vec::new(), 0);
    for file in &files {
        let scenario = Scenario::load(file).expect("scenario loads");
        if scenario.rejected.is_some() {
            continue;
        }
        let baseline = run(scenario.clone());
        let mut handed = scenario.clone();
        for third in [1, 2] {
            let at = scenario.duration * third / 3;
            handed.timeline.push(TimelineEntry { at, action: Action::Handover { instance: None } });
        }
        let (lines, record) = run(handed);
        if lines.iter().any(|line| line.contains("handover refused")) {
            // A reload that removed a backend, cluster or listener before the handover:
            // snapshots do not carry removed ids yet (docs/architecture.md, "Snapshots").
            let refusal = lines.iter().find(|line| line.contains("handover refused")).unwrap();
            assert!(refusal.contains("configuration builds"), "{}: {refusal}", file.display());
            refused.push(file.display().to_string());
            continue;
        }
        if let Some(index) =
            (0..lines.len().max(baseline.0.len())).find(|&i| lines.get(i) != baseline.0.get(i))
        {
            panic!(
                "{}: the trace differs at line {index}:\n without {:?}\n with    {:?}",
                file.display(),
                baseline.0.get(index),
                lines.get(index)
            );
        }
        assert_eq!(record, baseline.1, "{}: the record differs", file.display());
        compared += lines.len();
        same.push(file.display().to_string());
    }
    eprintln!(
        "identical with a handover: {} scenarios, {compared} trace lines; refused (removed ids): {refused:?}",
        same.len()
    );
    assert!(same.len() >= 20, "only {} scenarios compared", same.len());
}
