//! Property tests: arbitrary input sequences with monotone time never panic, keep every
//! invariant, and give identical outputs for identical seeds and inputs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use udplb_core::{
    AdminCommand, BackendId, ClientDatagram, Config, DATAGRAM_HEADROOM, FlowId, FlowManager, Instant, Keys,
    ListenerId, UpstreamError,
};

#[derive(Clone, Debug)]
enum Step {
    Advance {
        millis: u16,
    },
    Client {
        listener: u8,
        host: u8,
        port: u8,
        len: u16,
        truncated: bool,
    },
    /// A backend datagram on the `nth` flow handed out so far (possibly closed by now).
    Backend {
        nth: u8,
        len: u16,
    },
    UpstreamError {
        nth: u8,
        error: u8,
    },
    OpenFailed {
        nth: u8,
    },
    Drain {
        listener: u8,
    },
    Resume {
        listener: u8,
    },
    Eligibility {
        backend: u8,
        eligible: bool,
        /// An operator's drain instead of a health change (with `eligible` for its health).
        draining: bool,
    },
    CloseAll,
    /// Apply the `index`th of the case's alternative configurations.
    Reload {
        index: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u16>().prop_map(|millis| Step::Advance { millis: millis % 5_000 }),
        8 => (0u8..3, 0u8..6, 0u8..4, 0u16..80, proptest::bool::weighted(0.05))
            .prop_map(|(listener, host, port, len, truncated)| Step::Client { listener, host, port, len, truncated }),
        6 => (any::<u8>(), 0u16..80).prop_map(|(nth, len)| Step::Backend { nth, len }),
        1 => (any::<u8>(), 0u8..3).prop_map(|(nth, error)| Step::UpstreamError { nth, error }),
        1 => any::<u8>().prop_map(|nth| Step::OpenFailed { nth }),
        1 => (0u8..3).prop_map(|listener| Step::Drain { listener }),
        1 => (0u8..3).prop_map(|listener| Step::Resume { listener }),
        1 => (0u8..4, any::<bool>(), proptest::bool::weighted(0.3))
            .prop_map(|(backend, eligible, draining)| Step::Eligibility { backend, eligible, draining }),
        1 => Just(Step::CloseAll),
        1 => (0u8..3).prop_map(|index| Step::Reload { index }),
    ]
}

/// A configuration drawn from the knobs that change teardown and admission.
fn config() -> impl Strategy<Value = Config> {
    (knobs(), 0u8..12).prop_map(|(text, variant)| {
        // Variants change membership and identities: a backend removed, one moved to another
        // address, one added, listener b moved to another address.
        let (backends, address_b) = match variant % 4 {
            0 => (r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53", weight = 2 }"#, "[2001:db8::1]:53"),
            1 => (r#"{ id = "b1", address = "10.1.0.1:53" }"#, "[2001:db8::1]:53"),
            2 => (r#"{ id = "b1", address = "10.1.0.9:53" }, { id = "b2", address = "10.1.0.2:53" }, { id = "b3", address = "10.1.0.3:53" }"#, "[2001:db8::1]:53"),
            _ => (r#"{ id = "b2", address = "10.1.0.2:53", weight = 3 }"#, "[2001:db8::2]:53"),
        };
        let algorithm = ["round_robin", "random", "least_flows", "power_of_two", "hrw", "maglev"][usize::from(variant) % 6];
        let text = text.replace("BACKENDS", backends).replace("ADDRESS_B", address_b)
            + &format!("algorithm = \"{algorithm}\"\n");
        Config::from_toml_str(&text).expect("generated config is valid")
    })
}

fn knobs() -> impl Strategy<Value = String> {
    (
        prop::option::of(0u32..3),
        any::<bool>(),
        prop::option::of(1u32..4),
        1u64..4_000,
        1u64..4_000,
        prop::option::of(1u64..10_000),
        1u32..8,
        any::<bool>(),
        prop::option::of(0u64..3_000),
        0u8..3,
        prop::option::of(0u64..3_000),
        0u8..3,
    )
        .prop_map(
            |(
                responses,
                per_flow,
                requests,
                front,
                back,
                lifetime,
                max_flows,
                by_address,
                drain,
                proxy,
                backend_drain,
                sources,
            )| {
                let mut text = format!(
                    "[process]\nmax_flows = {max_flows}\n\
                     [listeners.a]\naddress = \"10.0.0.1:53\"\ncluster = \"c\"\nmax_datagram_size = 64\n{}{}{}\
                     [listeners.b]\naddress = \"ADDRESS_B\"\ncluster = \"c\"\n\
                     [clusters.c]\nbackends = [BACKENDS]\n\
                     idle_timeout = {{ front = \"{front}ms\", back = \"{back}ms\" }}\n",
                    if by_address { "affinity = \"client_address\"\n" } else { "" },
                    drain.map(|d| format!("drain_timeout = \"{d}ms\"\n")).unwrap_or_default(),
                    // Tight per-source limits (a table smaller than the flows it must track,
                    // which the core raises), a rate alone, or none.
                    match sources {
                        1 => "source_limits = { prefix_v4 = 24, prefix_v6 = 120, new_flows_per_second = 5, burst = 3, max_flows = 2, table_size = 2 }\n",
                        2 => "source_limits = { new_flows_per_second = 1 }\n",
                        _ => "",
                    },
                );
                if let Some(responses) = responses {
                    text.push_str(&format!("responses = {responses}\n"));
                }
                if per_flow {
                    text.push_str("responses_mode = \"per_flow\"\n");
                }
                // `requests` needs a reply count (validation refuses it without one).
                if let (Some(requests), Some(_)) = (requests, responses) {
                    text.push_str(&format!("requests = {requests}\n"));
                }
                if let Some(lifetime) = lifetime {
                    text.push_str(&format!("lifetime = \"{lifetime}ms\"\n"));
                }
                if let Some(backend_drain) = backend_drain {
                    text.push_str(&format!("backend_drain_timeout = \"{backend_drain}ms\"\n"));
                }
                match proxy {
                    1 => text.push_str("proxy_protocol = { mode = \"first\", crc32c = true }\n"),
                    2 => text.push_str("proxy_protocol = { mode = \"every\", unique_id = true }\n"),
                    _ => {}
                }
                text
            },
        )
}

fn client_address(host: u8, port: u8) -> SocketAddr {
    if host % 2 == 0 {
        SocketAddr::from(([192, 0, 2, host], 1000 + u16::from(port)))
    } else {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host)], 1000 + u16::from(port)))
    }
}

/// Runs `steps` and returns a transcript of every verdict and output. `reloads` are the
/// configurations `Step::Reload` switches between.
fn run(config: &Config, reloads: &[Config], seed: u64, steps: &[Step]) -> Vec<String> {
    let mut core = FlowManager::new(config, Keys::from_seed(seed)).expect("valid");
    let mut now = Instant::ZERO;
    let mut flows: Vec<FlowId> = Vec::new();
    // Set by `OpenFailed`: the next staged open fails.
    let mut fail_next_open = false;
    let mut transcript = Vec::new();
    for step in steps {
        let line = match *step {
            Step::Advance { millis } => {
                now = now + Duration::from_millis(u64::from(millis));
                core.handle_timeout(now);
                if let Some(next) = core.poll_timeout() {
                    assert!(next > now, "next deadline {next} not after {now}");
                }
                format!("{now} timeout")
            }
            Step::Client { listener, host, port, len, truncated } => {
                let mut buffer = vec![0xAB; DATAGRAM_HEADROOM + usize::from(len)];
                let verdict = core.handle_client_datagram(
                    now,
                    ClientDatagram {
                        listener: ListenerId(u32::from(listener)),
                        client: client_address(host, port),
                        local: None,
                        buffer: &mut buffer,
                        headroom: DATAGRAM_HEADROOM,
                        truncated,
                    },
                );
                let verdict = match verdict {
                    udplb_core::ClientVerdict::Open(incoming) if std::mem::take(&mut fail_next_open) => {
                        core.refuse(now, incoming);
                        udplb_core::ClientVerdict::Drop(udplb_core::DropReason::UpstreamOpenFailed)
                    }
                    udplb_core::ClientVerdict::Open(incoming) => {
                        let start = DATAGRAM_HEADROOM - incoming.prefix_len();
                        core.accept(now, incoming, &buffer[start..])
                    }
                    verdict => verdict,
                };
                if let udplb_core::ClientVerdict::Forward { flow, prefix_len, .. } = verdict {
                    flows.push(flow);
                    assert!(buffer[DATAGRAM_HEADROOM..].iter().all(|&b| b == 0xAB), "payload untouched");
                    assert!(prefix_len <= DATAGRAM_HEADROOM);
                }
                format!("{now} client {verdict:?}")
            }
            Step::Backend { nth, len } => match flows.get(usize::from(nth) % flows.len().max(1)) {
                Some(&flow) => {
                    let verdict = core.handle_backend_datagram(now, flow, &vec![1; usize::from(len)], false);
                    format!("{now} backend {verdict:?}")
                }
                None => continue,
            },
            Step::UpstreamError { nth, error } => match flows.get(usize::from(nth) % flows.len().max(1)) {
                Some(&flow) => {
                    let error =
                        [UpstreamError::Refused, UpstreamError::Unreachable, UpstreamError::SendFailed]
                            [usize::from(error)];
                    // A send failure is only reported for a datagram that was forwarded.
                    if error == UpstreamError::SendFailed && core.flow(flow).is_none() {
                        continue;
                    }
                    core.handle_upstream_error(now, flow, error);
                    format!("{now} upstream error {error:?}")
                }
                None => continue,
            },
            Step::OpenFailed { nth } => {
                // The shell fails the next upstream it is asked to open.
                let _ = nth;
                fail_next_open = true;
                format!("{now} next open fails")
            }
            Step::Drain { listener } => {
                let result =
                    core.handle_admin(now, AdminCommand::DrainListener(ListenerId(u32::from(listener))));
                format!("{now} drain {result:?}")
            }
            Step::Resume { listener } => {
                let result =
                    core.handle_admin(now, AdminCommand::ResumeListener(ListenerId(u32::from(listener))));
                format!("{now} resume {result:?}")
            }
            Step::Eligibility { backend, eligible, draining } => {
                let health = if eligible { udplb_core::Health::Up } else { udplb_core::Health::Down };
                let admin =
                    if draining { udplb_core::AdminState::Draining } else { udplb_core::AdminState::Enabled };
                core.handle_backend_state(
                    now,
                    BackendId(u32::from(backend)),
                    udplb_core::BackendState { eligible: eligible && !draining, health, admin },
                );
                format!("{now} eligible {backend} {eligible} draining {draining}")
            }
            Step::Reload { index } => match reloads.get(usize::from(index)) {
                Some(next) => {
                    let summary = core.apply_config(now, next).expect("generated configs are valid");
                    format!("{now} reload {summary:?}")
                }
                None => continue,
            },
            Step::CloseAll => {
                core.handle_admin(now, AdminCommand::CloseAll).expect("close all");
                format!("{now} close all")
            }
        };
        transcript.push(line);
        while let Some(output) = core.poll_output() {
            transcript.push(format!("  {output:?}"));
            if let udplb_core::Output::Resend { incoming, datagram } = output {
                let verdict = if std::mem::take(&mut fail_next_open) {
                    core.refuse(now, incoming);
                    udplb_core::ClientVerdict::Drop(udplb_core::DropReason::UpstreamOpenFailed)
                } else {
                    core.accept(now, incoming, &datagram)
                };
                if let udplb_core::ClientVerdict::Forward { flow, .. } = verdict {
                    flows.push(flow);
                }
                transcript.push(format!("  resend {verdict:?}"));
            }
        }
        if let Err(violation) = core.check_invariants() {
            panic!("{violation}\ntranscript:\n{}", transcript.join("\n"));
        }
    }
    transcript.push(format!("{:?}", core.stats()));
    transcript
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_input_sequences_keep_every_invariant(
        config in config(),
        reloads in prop::collection::vec(config(), 3),
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..200),
    ) {
        run(&config, &reloads, seed, &steps);
    }

    #[test]
    fn the_same_seed_and_inputs_give_identical_outputs(
        config in config(),
        reloads in prop::collection::vec(config(), 3),
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        prop_assert_eq!(run(&config, &reloads, seed, &steps), run(&config, &reloads, seed, &steps));
    }
}

#[test]
fn the_same_seed_gives_the_same_transcript_on_a_fixed_scenario() {
    let config = common::one_listener(3, "responses = 1\nrequests = 2", "");
    let steps: Vec<Step> = (0..300u16)
        .map(|i| match i % 5 {
            0 | 1 => Step::Client {
                listener: 0,
                host: (i % 7) as u8,
                port: (i % 3) as u8,
                len: 20,
                truncated: false,
            },
            2 | 3 => Step::Backend { nth: (i % 11) as u8, len: 30 },
            _ => Step::Advance { millis: 700 },
        })
        .collect();
    let first = run(&config, &[], 42, &steps);
    let second = run(&config, &[], 42, &steps);
    assert_eq!(first, second);
    assert!(first.len() > 300);
}
