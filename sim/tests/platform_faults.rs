//! The `[platform]` section: faults of the balancer's own sockets, drawn from a stream of their
//! own. Checked here: a scenario without it (or with every probability 0) draws nothing and runs
//! exactly as before; the faults depend on the seed and only on it; the section and the
//! `platform` expectation are typed when the file loads; a sweep draws them from the envelope.

use std::path::Path;

use udplb_sim::scenario::Scenario;

const BASE: &str = r#"name = "faults"
duration = "3s"

[lb.listeners.dns]
address = "10.0.0.1:53"
cluster = "pool"

[lb.clusters.pool]
responses = 1
backends = [{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }]

[network]
loss = 0.02
jitter = "2ms"

[[backend]]
name = "b1"
address = "10.1.0.1:53"

[[backend]]
name = "b2"
address = "10.1.0.2:53"

[[client]]
name = "stubs"
address = "192.0.2.10"
listener = "dns"
kind = "request_response"
interval = "5ms"
count = 500
new_port_per_request = true
"#;

fn run(text: &str, seed: u64) -> udplb_sim::RunReport {
    let scenario = Scenario::parse(text).expect("the scenario loads");
    udplb_sim::run(&scenario, Path::new("faults.toml"), Some(seed))
}

fn summary_line<'a>(trace: &'a str, prefix: &str) -> Option<&'a str> {
    trace.lines().map(str::trim_start).find(|line| line.starts_with(prefix))
}

#[test]
fn without_platform_faults_nothing_is_drawn_and_the_run_is_unchanged() {
    let zeros = format!("{BASE}\n[platform]\nopen_fail = 0.0\nclient_buffer_full = 0.0\n");
    for seed in [1, 2, 3] {
        assert_eq!(run(BASE, seed).trace, run(&zeros, seed).trace, "seed {seed}");
    }
    assert!(summary_line(&run(BASE, 1).trace, "end platform faults").is_none());
}

#[test]
fn platform_faults_are_drawn_by_the_seed() {
    let faulty = format!(
        "{BASE}\n[platform]\nopen_fail = 0.2\nupstream_send_fail = 0.05\nclient_buffer_full = 0.05\n"
    );
    let one = run(&faulty, 5);
    assert_eq!(one.trace, run(&faulty, 5).trace, "same seed, same faults, same trace");
    let line = summary_line(&one.trace, "end platform faults:").expect("a platform faults line").to_owned();
    for name in ["open_failed", "upstream_send_failed", "client_buffer_full"] {
        assert!(line.contains(name), "{line}");
    }
    let other = run(&faulty, 6);
    assert_ne!(Some(line.as_str()), summary_line(&other.trace, "end platform faults:"));
    // The faults are the only difference from the run without them: with the same seed the
    // network draws the same losses, so the run without faults loses no more than with them.
    assert_ne!(one.trace, run(BASE, 5).trace);
}

#[test]
fn the_platform_section_and_its_expectation_are_typed() {
    let error = |extra: &str| Scenario::parse(&format!("{BASE}{extra}")).unwrap_err().0;
    let unknown = error("\n[platform]\nopen_fails = 0.1\n");
    assert!(unknown.contains("unknown field `open_fails`"), "{unknown}");
    let range = error("\n[platform]\nopen_fail = 1.5\n");
    assert!(range.contains("platform.open_fail must lie in 0..=1"), "{range}");
    let sum = error("\n[platform]\nclient_send_fail = 0.6\nclient_buffer_full = 0.6\n");
    assert!(sum.contains("client_* probabilities add up to"), "{sum}");
    let count = error("\n[[expect]]\nkind = \"platform\"\ncount = \"strays\"\nat_least = 1\n");
    assert!(count.contains("unknown variant `strays`"), "{count}");
    let line = count.split(':').next().unwrap_or_default();
    assert_eq!(line, "35", "{count}");
}

#[test]
fn a_sweep_draws_platform_faults_from_the_envelope() {
    let text = format!("{BASE}\n[platform]\nclient_too_long = 0.01\n\n[envelope]\nopen_fail = [0.1, 0.2]\n");
    let scenario = Scenario::parse(&text).unwrap();
    // As the sweep draws: swarm testing turns the kind on for some seeds (a value in its range)
    // and off for others (the range's gentlest end).
    let drawn_with = |seed: u64| {
        let mut scenario = scenario.clone();
        let draw = udplb_sim::sweep::draw::Draw::from_seed(&scenario.envelope, seed);
        draw.apply(&mut scenario.network, &mut scenario.platform);
        scenario.platform
    };
    let drawn: Vec<f64> = (1..=20).map(|seed| drawn_with(seed).open_fail).collect();
    assert!(drawn.iter().all(|p| (0.1..=0.2).contains(p)), "{drawn:?}");
    assert!(drawn.iter().any(|p| *p > 0.1), "some seeds switch it on: {drawn:?}");
    assert!(drawn.contains(&0.1), "some seeds switch it off: {drawn:?}");
    assert_eq!(drawn_with(7).client_too_long, 0.01, "no range: kept");
}
