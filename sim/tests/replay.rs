//! Any run can be recorded as a list of timestamped inputs and replayed: every scenario is run
//! with each balancer instance's driver keeping a journal, and each journal is replayed into a
//! fresh core built the same way. The replay must observe the same verdicts and outputs, in
//! the same order — the determinism the simulator, the fuzzers and a future hand-over of a
//! running balancer all rest on.

use std::path::Path;

use udplb_core::driver::{Observed, Recorded, replay};
use udplb_sim::scenario::Scenario;
use udplb_sim::world::World;

fn recorded_world(file: &Path) -> (Scenario, World) {
    let scenario = Scenario::load(file).expect("scenario loads");
    let mut world = World::new(scenario.clone(), scenario.seed);
    for driver in &mut world.drivers {
        driver.record();
    }
    world.run();
    (scenario, world)
}

#[test]
fn every_scenario_replays_into_a_fresh_core_with_identical_outputs() {
    let files =
        udplb_sim::scenario_files(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").as_path())
            .expect("scenarios directory");
    assert!(files.len() >= 20, "found only {} scenarios", files.len());
    let (mut outputs, mut forwards) = (0, 0);
    for file in &files {
        if Scenario::load(file).expect("scenario loads").rejected.is_some() {
            // A configuration expected refused: nothing runs.
            continue;
        }
        let (scenario, world) = recorded_world(file);
        let mut compared = 0;
        for (instance, driver) in world.drivers.iter().enumerate() {
            let journal = driver.journal().expect("recording was on");
            compared += journal.observed.len();
            outputs += journal.observed.iter().filter(|o| matches!(o, Observed::Output(_))).count();
            forwards += journal
                .observed
                .iter()
                .filter(|o| matches!(o, Observed::Client(udplb_core::ClientVerdict::Forward { .. })))
                .count();
            let replayed = replay(World::balancer(&scenario, scenario.seed, instance), journal);
            if let Some(index) = (0..journal.observed.len().max(replayed.observed.len()))
                .find(|&i| journal.observed.get(i) != replayed.observed.get(i))
            {
                panic!(
                    "{} instance {instance}: replay differs at output {index} of {}:\n recorded {:?}\n replayed {:?}",
                    file.display(),
                    journal.observed.len(),
                    journal.observed.get(index),
                    replayed.observed.get(index)
                );
            }
            assert_eq!(replayed.inputs, journal.inputs, "the replay is fed exactly the recorded inputs");
        }
        assert!(compared > 0, "{}: nothing to compare", file.display());
    }
    assert!(outputs > 1000, "only {outputs} outputs compared over every scenario");
    assert!(forwards > 1000, "only {forwards} forwarded datagrams compared over every scenario");
}

#[test]
fn a_replay_that_misses_one_input_is_told_apart() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/dns_responses_1.toml");
    let (scenario, world) = recorded_world(&file);
    let mut journal = world.drivers[0].journal().expect("recording was on").clone();
    let first_datagram = journal
        .inputs
        .iter()
        .position(|(_, input)| matches!(input, Recorded::ClientDatagram { .. }))
        .expect("a client datagram");
    journal.inputs.remove(first_datagram);
    let replayed = replay(World::balancer(&scenario, scenario.seed, 0), &journal);
    assert_ne!(replayed.observed, journal.observed, "the comparison notices a missing input");
}
