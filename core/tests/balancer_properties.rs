//! Random sequences through the composed core: the halves' invariants hold and they agree on
//! every backend's eligibility after every step; the same seed replays identically.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use udplb_core::Input;
use udplb_core::balancer::Output;
use udplb_core::health::{ProbeFailure, ProbeRequest};
use udplb_core::{
    AdminCommand, BackendCommand, BackendId, Balancer, ClientDatagram, Config, DATAGRAM_HEADROOM, FlowId,
    Instant, Keys, ListenerId, ProbeResult, UpstreamError,
};

#[derive(Clone, Debug)]
enum Step {
    Advance(u16),
    Client { host: u8, port: u8 },
    Backend { nth: u8 },
    Refused { nth: u8 },
    AnswerProbe { nth: u8, answer: u8 },
    Command { backend: u8, command: u8 },
    DrainListener,
    Reload { index: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u16>().prop_map(|ms| Step::Advance(ms % 3_000)),
        6 => (0u8..5, 0u8..3).prop_map(|(host, port)| Step::Client { host, port }),
        4 => any::<u8>().prop_map(|nth| Step::Backend { nth }),
        2 => any::<u8>().prop_map(|nth| Step::Refused { nth }),
        5 => (any::<u8>(), 0u8..4).prop_map(|(nth, answer)| Step::AnswerProbe { nth, answer }),
        2 => (0u8..4, 0u8..7).prop_map(|(backend, command)| Step::Command { backend, command }),
        1 => Just(Step::DrainListener),
        1 => (0u8..3).prop_map(|index| Step::Reload { index }),
    ]
}

fn config(variant: u8) -> Config {
    let (health, backends) = match variant % 3 {
        0 => (
            r#"mode = "tcp", interval = "1s", timeout = "400ms", rise = 2, fall = 2"#,
            r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }"#,
        ),
        1 => (
            r#"mode = "udp", udp_payload = "ping", udp_expect = "pong", model = "haproxy", interval = "700ms", timeout = "300ms""#,
            r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b3", address = "10.1.0.3:53", backup = true }"#,
        ),
        _ => (
            r#"mode = "off", fall = 1, passive_recovery = "2s""#,
            r#"{ id = "b1", address = "10.1.0.1:53", weight = 3 }, { id = "b2", address = "10.1.0.2:53" }, { id = "b4", address = "10.1.0.4:53", pool = 1 }"#,
        ),
    };
    common::config(&format!(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        drain_timeout = "2s"
        [clusters.pool]
        responses = 1
        idle_timeout = {{ front = "3s", back = "1s" }}
        on_backend_down = "{}"
        health = {{ {health} }}
        backends = [{backends}]
        "#,
        if variant % 2 == 0 { "keep" } else { "close" }
    ))
}

fn run(first: u8, seed: u64, steps: &[Step]) -> Vec<String> {
    let mut core = Balancer::new(&config(first), Keys::from_seed(seed)).expect("valid");
    let mut now = Instant::ZERO;
    let mut flows: Vec<FlowId> = Vec::new();
    let mut probes: Vec<ProbeRequest> = Vec::new();
    let mut transcript = Vec::new();
    for step in steps {
        match *step {
            Step::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms));
                core.handle(now, Input::Timeout).unwrap();
            }
            Step::Client { host, port } => {
                let Some(listener) = core.flows().listener_id("dns") else { continue };
                let mut buffer = vec![1u8; DATAGRAM_HEADROOM + 8];
                let client = std::net::SocketAddr::from(([192, 0, 2, host], 1000 + u16::from(port)));
                let verdict = core.handle_client_datagram(
                    now,
                    ClientDatagram {
                        listener,
                        client,
                        local: None,
                        buffer: &mut buffer,
                        headroom: DATAGRAM_HEADROOM,
                        truncated: false,
                    },
                );
                let verdict = match verdict {
                    udplb_core::ClientVerdict::Open(incoming) => {
                        let start = DATAGRAM_HEADROOM - incoming.prefix_len();
                        core.accept(now, incoming, &buffer[start..])
                    }
                    verdict => verdict,
                };
                if let udplb_core::ClientVerdict::Forward { flow, .. } = verdict {
                    flows.push(flow);
                }
                transcript.push(format!("{now} {verdict:?}"));
            }
            Step::Backend { nth } => {
                if let Some(&flow) = flows.get(usize::from(nth) % flows.len().max(1)) {
                    let verdict = core.handle_backend_datagram(now, flow, b"answer", false);
                    transcript.push(format!("{now} {verdict:?}"));
                }
            }
            Step::Refused { nth } => {
                if let Some(&flow) = flows.get(usize::from(nth) % flows.len().max(1)) {
                    core.handle(now, Input::UpstreamError { flow, error: UpstreamError::Refused }).unwrap();
                }
            }
            Step::AnswerProbe { nth, answer } => {
                if probes.is_empty() {
                    continue;
                }
                let probe = probes.remove(usize::from(nth) % probes.len()).probe;
                match answer {
                    0 => core.handle(now, Input::ProbeResult { probe, result: ProbeResult::Pass }).unwrap(),
                    1 => core
                        .handle(
                            now,
                            Input::ProbeResult { probe, result: ProbeResult::Fail(ProbeFailure::Refused) },
                        )
                        .unwrap(),
                    2 => core.handle(now, Input::ProbeReply { probe, reply: b"pong".to_vec() }).unwrap(),
                    _ => core.handle(now, Input::ProbeReply { probe, reply: b"nope".to_vec() }).unwrap(),
                }
            }
            Step::Command { backend, command } => {
                let command = [
                    BackendCommand::Pause,
                    BackendCommand::Resume,
                    BackendCommand::Enable,
                    BackendCommand::Disable,
                    BackendCommand::Drain,
                    BackendCommand::Weight(0),
                    BackendCommand::Weight(5),
                ][usize::from(command)];
                let result =
                    core.handle(now, Input::Backend { backend: BackendId(u32::from(backend)), command });
                transcript.push(format!("{now} {command:?} {result:?}"));
            }
            Step::DrainListener => {
                let result = core.handle(now, Input::Admin(AdminCommand::DrainListener(ListenerId(0))));
                transcript.push(format!("{now} drain {result:?}"));
            }
            Step::Reload { index } => {
                let reload = core.apply_config(now, &config(index)).expect("valid");
                transcript.push(format!("{now} {reload:?}"));
            }
        }
        while let Some(output) = core.poll_output() {
            if let Output::Probe(request) = &output {
                probes.push(request.clone());
            }
            if let Output::Flow(udplb_core::Output::Resend { incoming, datagram }) = &output {
                let verdict = core.accept(now, incoming.clone(), datagram);
                transcript.push(format!("  resend {verdict:?}"));
            }
            transcript.push(format!("  {output:?}"));
        }
        if let Some(next) = core.poll_timeout() {
            assert!(
                next > now || !matches!(step, Step::Advance(_)),
                "deadline {next} due after handling {now}"
            );
        }
        if let Err(violation) = core.check_invariants() {
            panic!("{violation}\n{}", transcript.join("\n"));
        }
    }
    transcript.push(format!("{:?}", core.flows().stats()));
    transcript
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_both_halves_consistent(first in 0u8..3, seed in any::<u64>(), steps in prop::collection::vec(step(), 1..200)) {
        run(first, seed, &steps);
    }

    #[test]
    fn the_composed_core_replays_identically(first in 0u8..3, seed in any::<u64>(), steps in prop::collection::vec(step(), 1..120)) {
        prop_assert_eq!(run(first, seed, &steps), run(first, seed, &steps));
    }
}
