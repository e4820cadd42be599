//! Several workers in one process: one leader probes and decides health for all, followers
//! take its backend states and hand it their passive failures (`docs/architecture.md`, "Two
//! halves" and "Workers").

mod common;

use udplb_core::Input;
use udplb_core::balancer::Output;
use udplb_core::health::{ProbeFailure, ProbeResult};
use udplb_core::{
    Balancer, ClientDatagram, ClientVerdict, DATAGRAM_HEADROOM, Health, Instant, Keys, ListenerId, Role,
    UpstreamError,
};

const CONFIG: &str = r#"
    [listeners.l]
    address = "10.0.0.1:53"
    cluster = "c"
    [clusters.c]
    responses = 1
    algorithm = "round_robin"
    health = { mode = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 1, outlier = { enabled = false } }
    backends = [
      { id = "a", address = "10.1.0.1:53" },
      { id = "b", address = "10.1.0.2:53" },
    ]
"#;

fn drain(core: &mut Balancer) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn client(core: &mut Balancer, now: Instant, n: u16) -> ClientVerdict {
    let mut buffer = vec![0u8; DATAGRAM_HEADROOM + 5];
    buffer[DATAGRAM_HEADROOM..].copy_from_slice(b"query");
    let datagram = ClientDatagram {
        listener: ListenerId(0),
        client: format!("192.0.2.1:{}", 1000 + n).parse().unwrap(),
        local: None,
        buffer: &mut buffer,
        headroom: DATAGRAM_HEADROOM,
        truncated: false,
    };
    match core.handle_client_datagram(now, datagram) {
        ClientVerdict::Open(incoming) => {
            let start = DATAGRAM_HEADROOM - incoming.prefix_len();
            core.accept(now, incoming, &buffer[start..])
        }
        verdict => verdict,
    }
}

/// Hands every backend state the leader reported to the follower.
fn follow(leader_outputs: &[Output], follower: &mut Balancer, now: Instant) -> usize {
    let mut sent = 0;
    for output in leader_outputs {
        if let Output::BackendState { backend, state } = output {
            follower.handle(now, Input::BackendState { backend: *backend, state: *state }).unwrap();
            sent += 1;
        }
    }
    sent
}

#[test]
fn only_the_leader_probes_and_every_follower_sees_its_health() {
    let config = common::config(CONFIG);
    let keys = Keys::from_seed(7);
    let mut leader = Balancer::with_role(&config, keys.clone(), Role::Leader).unwrap();
    let mut follower = Balancer::with_role(&config, keys, Role::Follower).unwrap();
    let a = leader.flows().backend_id("c", "a").unwrap();
    assert_eq!(follower.flows().backend_id("c", "a"), Some(a), "same file, same ids");

    // Only the leader has a probe deadline, and only it starts probes.
    assert!(follower.poll_timeout().is_none());
    // Probes are staggered over the interval: run the leader until each backend has one.
    let mut probes = Vec::new();
    let mut t = Instant::ZERO;
    while probes.len() < 2 {
        t = leader.poll_timeout().expect("probes are scheduled");
        assert!(t < Instant::from_secs(1), "both probed within the first interval");
        follower.handle(t, Input::Timeout).unwrap();
        assert!(!drain(&mut follower).iter().any(|o| matches!(o, Output::Probe(_))));
        leader.handle(t, Input::Timeout).unwrap();
        probes.extend(drain(&mut leader).into_iter().filter_map(|o| match o {
            Output::Probe(p) => Some(p),
            _ => None,
        }));
    }
    assert_eq!(probes.len(), 2, "one probe per backend per process");

    // Backend a refuses its probe: the leader takes it down and says so; the follower then
    // sends no new flow to it.
    let now = t;
    for probe in &probes {
        let result =
            if probe.backend == a { ProbeResult::Fail(ProbeFailure::Refused) } else { ProbeResult::Pass };
        leader.handle(now, Input::ProbeResult { probe: probe.probe, result }).unwrap();
    }
    let outputs = drain(&mut leader);
    assert!(follow(&outputs, &mut follower, now) >= 2, "{outputs:?}");
    assert_eq!(follower.flows().backend_eligible(a), Some(false));
    for n in 0..20 {
        let ClientVerdict::Forward { flow, .. } = client(&mut follower, now, n) else { panic!("dropped") };
        assert_ne!(follower.flows().flow(flow).unwrap().backend, a);
    }

    // A refusal on the follower's datapath is handed out, not judged there; the leader's
    // monitor counts it (fall = 1) and every worker learns the result.
    let ClientVerdict::Forward { flow, .. } = client(&mut follower, now, 100) else { panic!("dropped") };
    let b = follower.flows().flow(flow).unwrap().backend;
    drain(&mut follower);
    follower.handle(now, Input::UpstreamError { flow, error: UpstreamError::Refused }).unwrap();
    let failures: Vec<_> = drain(&mut follower)
        .into_iter()
        .filter_map(|o| match o {
            Output::Flow(udplb_core::Output::PassiveFailure { backend, failure }) => Some((backend, failure)),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(follower.monitor().backend(b).map(|s| s.health), Some(Health::Unknown), "not judged here");
    for (backend, failure) in failures {
        leader.handle(now, Input::PassiveFailure { backend, failure }).unwrap();
    }
    let outputs = drain(&mut leader);
    assert_eq!(leader.monitor().backend(b).map(|s| s.health), Some(Health::Down));
    follow(&outputs, &mut follower, now);
    assert_eq!(follower.flows().backend_eligible(b), Some(false));
    leader.check_invariants().unwrap();
}
