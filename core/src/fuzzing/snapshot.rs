//! `snapshot_decode`: [`Balancer::restore`] and [`PlatformState::decode`] against arbitrary
//! bytes.

use std::net::SocketAddr;

use crate::balancer::Balancer;
use crate::config::Config;
use crate::id::{BackendId, FlowId};
use crate::pool::Acquire;
use crate::snapshot::PlatformState;
use crate::time::Instant;
use crate::{Input, Keys};

/// The configurations snapshots are restored under: a TCP-checked round-robin pair, a
/// UDP-checked Maglev pair with a backup and per-source limits, and a passive-only weighted
/// random trio in two pools.
pub fn snapshot_config(selector: u8) -> Config {
    let (algorithm, health, backends, sources) = match selector % 3 {
        0 => (
            "round_robin",
            r#"mode = "tcp", interval = "1s", timeout = "400ms", rise = 2, fall = 2"#,
            r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b2", address = "10.1.0.2:53" }"#,
            "",
        ),
        1 => (
            "maglev",
            r#"mode = "udp", udp_payload = "ping", udp_expect = "pong", model = "haproxy", interval = "700ms", timeout = "300ms""#,
            r#"{ id = "b1", address = "10.1.0.1:53" }, { id = "b3", address = "10.1.0.3:53", backup = true }"#,
            "source_limits = { prefix_v4 = 24, new_flows_per_second = 5, burst = 3, max_flows = 2, table_size = 2 }",
        ),
        _ => (
            "random",
            r#"mode = "off", fall = 1, passive_recovery = "2s""#,
            r#"{ id = "b1", address = "10.1.0.1:53", weight = 3 }, { id = "b2", address = "10.1.0.2:53" }, { id = "b4", address = "[2001:db8::4]:53", pool = 1 }"#,
            "",
        ),
    };
    let text = format!(
        r#"
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        drain_timeout = "2s"
        {sources}
        [clusters.pool]
        algorithm = "{algorithm}"
        responses = 1
        idle_timeout = {{ front = "3s", back = "1s" }}
        health = {{ {health} }}
        backends = [{backends}]
        "#
    );
    Config::from_toml_str(&text)
        .unwrap_or_else(|errors| panic!("the fuzz configuration is invalid: {errors:?}"))
}

/// The first byte picks the configuration ([`snapshot_config`]); the rest is the snapshot.
///
/// Promises checked: `restore` never panics, whatever the bytes; a snapshot it accepts is
/// canonical (taking a snapshot of the restored balancer gives exactly the same bytes back);
/// and the restored balancer's invariants hold (restore checks them and refuses otherwise).
pub fn snapshot_decode(data: &[u8]) {
    let Some((&selector, snapshot)) = data.split_first() else {
        return;
    };
    platform_state(snapshot);
    let config = snapshot_config(selector);
    let Ok(mut balancer) = Balancer::restore(&config, snapshot) else {
        return;
    };
    let again = balancer.snapshot(&config).expect("a restored balancer has no pending outputs");
    assert!(again == snapshot, "restore then snapshot changed the bytes");
    balancer.check_invariants().expect("restore checked the invariants");
    // A fresh balancer's snapshot under another configuration is refused, never restored.
    let fresh = Balancer::new(&snapshot_config(selector.wrapping_add(1)), Keys::from_seed(0)).expect("valid");
    let other = fresh.snapshot(&snapshot_config(selector.wrapping_add(1))).expect("no outputs");
    assert!(Balancer::restore(&config, &other).is_err(), "a snapshot under another configuration restored");
    // The time it resumes at: whatever it had pending runs without a panic.
    let _ = balancer.handle(Instant::from_secs(u64::from(u32::MAX)), Input::Timeout);
    while balancer.poll_output().is_some() {}
}

/// The same bytes as a handover's platform state ([`PlatformState::decode`]).
///
/// Promises checked: decoding never panics; a state it accepts is canonical (encoding it gives
/// the same bytes back); and its pool goes on deciding without a panic: new flows to a few
/// addresses (growing it when it asks), then their release.
fn platform_state(bytes: &[u8]) {
    let Ok(mut state) = PlatformState::decode(bytes) else {
        return;
    };
    assert!(state.encode() == bytes, "decode then encode changed the bytes");
    let addresses: [SocketAddr; 3] =
        ["10.1.0.1:53", "10.1.0.2:53", "[2001:db8::4]:53"].map(|text| text.parse().expect("an address"));
    let now = Instant::from_secs(u64::from(u32::MAX));
    for (serial, address) in (u64::MAX - 8..).zip(addresses.iter().cycle().take(6)) {
        let socket = match state.pool.acquire(*address, now) {
            Acquire::Socket(socket) => socket,
            Acquire::Grow => state.pool.add_socket(*address),
        };
        let flow = FlowId { slot: u32::MAX, serial };
        if state.pool.binding(flow).is_none() && state.pool.occupant(socket, *address).is_none() {
            state.pool.bind(flow, socket, *address, BackendId(0));
            state.pool.release(flow, now);
        }
    }
}
