//! One of three DNS servers stops mid-run: no query is lost. (Measured on this machine: nginx
//! stream lost none in the first 10 s after one of three servers behind it was stopped.)

mod common;

use std::time::Duration;

use common::balancer::{Answer, BalancerHarness};
use udplb_core::Input;
use udplb_core::balancer::Output;
use udplb_core::{BackendVerdict, ClientVerdict, Health, Instant, UpstreamError};

#[test]
fn no_query_is_lost_when_one_of_three_dns_servers_stops() {
    let mut h = BalancerHarness::new(&common::config(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "resolvers"
        [clusters.resolvers]
        responses = 1
        idle_timeout = { back = "2s" }
        health = { mode = "udp", udp_payload = "probe", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }
        backends = [
          { id = "r1", address = "10.1.0.1:53" },
          { id = "r2", address = "10.1.0.2:53" },
          { id = "r3", address = "10.1.0.3:53" },
        ]
        "#,
    ));
    let stopped = h.backend("resolvers", "r2");
    let mut answered = 0u32;
    let mut queries = 0u32;
    let mut resent = 0u32;
    let stop_at = Instant::from_secs(2);
    let end = Instant::from_secs(12);
    let mut t = Instant::from_millis(10);
    while t < end {
        h.run_until(t);
        if t >= stop_at {
            h.answers.insert(stopped, Answer::Refuse);
        }
        queries += 1;
        let client = format!("192.0.2.{}:{}", queries % 200, 10_000 + queries % 50_000);
        let ClientVerdict::Forward { flow, .. } = h.client(&client, b"query") else {
            panic!("query dropped")
        };
        let mut flow = flow;
        if t >= stop_at && h.core.flows().flow(flow).map(|f| f.backend) == Some(stopped) {
            // The stopped server's port is closed: the kernel answers with ICMP port
            // unreachable, which the shell reports; the core re-sends on another server.
            let before = h.outputs.len();
            h.core.handle(h.now, Input::UpstreamError { flow, error: UpstreamError::Refused }).unwrap();
            h.run_until(h.now);
            let retry = h.outputs[before..].iter().find_map(|o| match o {
                Output::Flow(udplb_core::Output::Resend { incoming, .. }) => Some(incoming.flow()),
                _ => None,
            });
            flow = retry.expect("the refused query is re-sent");
            resent += 1;
            assert_ne!(h.core.flows().flow(flow).unwrap().backend, stopped);
        }
        if matches!(
            h.core.handle_backend_datagram(h.now, flow, b"answer", false),
            BackendVerdict::Return { .. }
        ) {
            answered += 1;
        }
        t = t + Duration::from_millis(10);
    }
    assert_eq!(answered, queries, "{} of {queries} queries lost", queries - answered);
    assert_eq!(h.core.monitor().backend(stopped).unwrap().health, Health::Down);
    // Only the queries sent before the monitor saw it Down needed a re-send: within the
    // detection time, well under the 10 s of the run.
    assert!(resent > 0 && resent < 300, "{resent} re-sends");
}
