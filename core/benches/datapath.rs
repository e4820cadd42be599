//! Datapath benchmarks: an established-flow datagram, new-flow admission, timer churn with
//! 100k flows, and memory per flow (measured with a counting allocator, printed once).
//!
//! Run: `cargo bench -p udplb-core --bench datapath`. Results go in BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use udplb_core::{
    BackendVerdict, ClientDatagram, ClientVerdict, Config, DATAGRAM_HEADROOM, FlowId, FlowManager, Instant,
    Keys, ListenerId,
};

/// Counts live heap bytes, so memory per flow is measured rather than estimated.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const FLOWS: u32 = 100_000;

/// The benchmark's configuration with `listener_extra` in the listener and `extra` in the
/// cluster.
fn config_with(listener_extra: &str, extra: &str) -> Config {
    let text = format!(
        r#"
        [process]
        max_flows = 1000000
        [listeners.dns]
        address = "10.0.0.1:53"
        cluster = "pool"
        {listener_extra}
        [clusters.pool]
        idle_timeout = {{ front = "30s", back = "10s" }}
        {extra}
        backends = [
          {{ id = "b1", address = "10.1.0.1:53", server_id = "01" }},
          {{ id = "b2", address = "10.1.0.2:53", server_id = "02" }},
          {{ id = "b3", address = "10.1.0.3:53", server_id = "03" }},
          {{ id = "b4", address = "10.1.0.4:53", server_id = "04" }},
        ]
        "#
    );
    Config::from_toml_str(&text).expect("bench config")
}

fn client(index: u32) -> SocketAddr {
    let [a, b, c, d] = (0x0A00_0000 + index / 60_000).to_be_bytes();
    SocketAddr::from(([a, b, c, d], 1024 + (index % 60_000) as u16))
}

fn drain(core: &mut FlowManager) {
    while let Some(output) = core.poll_output() {
        black_box(output);
    }
}

/// A client datagram as the driver handles it: a new flow is staged, then confirmed (its
/// upstream "opens" at once).
fn send(core: &mut FlowManager, now: Instant, buffer: &mut [u8], from: SocketAddr) -> ClientVerdict {
    let verdict = core.handle_client_datagram(
        now,
        ClientDatagram {
            listener: ListenerId(0),
            client: from,
            local: None,
            buffer: &mut *buffer,
            headroom: DATAGRAM_HEADROOM,
            truncated: false,
        },
    );
    let verdict = match verdict {
        ClientVerdict::Open(incoming) => {
            let start = DATAGRAM_HEADROOM - incoming.prefix_len();
            core.accept(now, incoming, &buffer[start..])
        }
        verdict => verdict,
    };
    drain(core);
    verdict
}

/// A core holding `count` established flows, and their ids.
fn populated(count: u32, extra: &str) -> (FlowManager, Vec<FlowId>) {
    populated_with(count, "", extra)
}

fn populated_with(count: u32, listener_extra: &str, extra: &str) -> (FlowManager, Vec<FlowId>) {
    let mut core = FlowManager::new(&config_with(listener_extra, extra), Keys::from_seed(1)).expect("valid");
    let mut buffer = vec![0u8; DATAGRAM_HEADROOM + 64];
    let flows = (0..count)
        .map(|i| match send(&mut core, Instant::ZERO, &mut buffer, client(i)) {
            ClientVerdict::Forward { flow, .. } => flow,
            other => panic!("{other:?}"),
        })
        .collect();
    (core, flows)
}

/// Live heap bytes per flow for a core holding `FLOWS` established flows.
fn heap_per_flow(extra: &str) -> f64 {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let (core, flows) = populated(FLOWS, extra);
    let ids_bytes = flows.capacity() * std::mem::size_of::<FlowId>();
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    drop(core);
    (after - before - ids_bytes) as f64 / f64::from(FLOWS)
}

fn report_memory_per_flow() {
    let state = heap_per_flow("retry_on_refused = false");
    println!(
        "memory per flow: {state:.1} bytes of heap at {FLOWS} flows (slab + index + timer entry), \
         measured with a counting allocator"
    );
    let with_retry = heap_per_flow("");
    println!(
        "memory per flow with retry_on_refused (default) and a 64-byte unanswered datagram kept per flow \
         until the 4 MiB budget is spent: {with_retry:.1} bytes"
    );
    let counted = heap_per_flow("retry_on_refused = false\nresponses = 1");
    println!(
        "memory per flow counting replies (responses = 1: write-offs, copies, send times kept out of line): \
         {counted:.1} bytes"
    );
}

fn benches(c: &mut Criterion) {
    report_memory_per_flow();

    let mut group = c.benchmark_group("datapath");
    // An established flow among 100k others: forward one client datagram.
    let (mut core, flows) = populated(FLOWS, "");
    let mut buffer = vec![7u8; DATAGRAM_HEADROOM + 64];
    let mut now = Instant::from_secs(1);
    let target = client(FLOWS / 2);
    group.bench_function("established_flow_client_datagram_100k_flows", |b| {
        b.iter(|| {
            now = now + Duration::from_nanos(50);
            black_box(send(&mut core, now, &mut buffer, black_box(target)))
        })
    });
    let flow = flows[(FLOWS / 2) as usize];
    group.bench_function("established_flow_backend_datagram_100k_flows", |b| {
        b.iter(|| {
            now = now + Duration::from_nanos(50);
            let verdict = core.handle_backend_datagram(now, black_box(flow), &buffer[..64], false);
            assert!(matches!(verdict, BackendVerdict::Return { .. }));
            drain(&mut core);
            black_box(verdict)
        })
    });
    drop(core);

    // The same established flow, one datagram each way per iteration, without and with the
    // abuse guards (per-source limits on the listener, an amplification cap on the cluster):
    // what the checks cost a flow that is already open.
    for (name, listener_extra, extra) in [
        ("established_flow_both_ways_100k_flows", "", ""),
        (
            "established_flow_both_ways_100k_flows_with_abuse_guards",
            "source_limits = { new_flows_per_second = 16777216, max_flows = 16777216 }",
            "amplification = { factor = 1000, allowance_bytes = 65536 }",
        ),
    ] {
        let (mut core, flows) = populated_with(FLOWS, listener_extra, extra);
        let flow = flows[(FLOWS / 2) as usize];
        let mut now = Instant::from_secs(1);
        group.bench_function(name, |b| {
            b.iter(|| {
                now = now + Duration::from_nanos(50);
                black_box(send(&mut core, now, &mut buffer, black_box(target)));
                let verdict = core.handle_backend_datagram(now, black_box(flow), &buffer[..64], false);
                assert!(matches!(verdict, BackendVerdict::Return { .. }));
                drain(&mut core);
                black_box(verdict)
            })
        });
        drop(core);
    }

    // DNS-like: each query opens a flow (admission, selection, open upstream) and its answer
    // closes it (responses = 1). Measures a whole short flow's life, among 10k standing flows.
    let (mut core, _) = populated(10_000, "responses = 1");
    let mut next_client = 1_000_000u32;
    let mut now = Instant::from_secs(1);
    group.bench_function("new_flow_query_and_answer_responses_1", |b| {
        b.iter(|| {
            next_client += 1;
            now = now + Duration::from_nanos(100);
            let ClientVerdict::Forward { flow, .. } = send(&mut core, now, &mut buffer, client(next_client))
            else {
                panic!("admission failed")
            };
            let verdict = core.handle_backend_datagram(now, flow, &buffer[..64], false);
            drain(&mut core);
            black_box(verdict)
        })
    });
    drop(core);

    // The same short flows in a `quic_lb` cluster: each query's connection ID is decoded (in
    // plaintext, or with the four-pass cipher) and routes it; or it names no backend and the
    // algorithm places it. What QUIC-LB adds to a new flow.
    const KEY: &str = "fdf726a9893ec05c0632d3956680baf0";
    let key: [u8; 16] = std::array::from_fn(|i| u8::from_str_radix(&KEY[2 * i..2 * i + 2], 16).unwrap());
    for (name, key, server) in [
        ("new_flow_quic_lb_plaintext_routed_responses_1", None, "02"),
        ("new_flow_quic_lb_four_pass_routed_responses_1", Some(key), "02"),
        ("new_flow_quic_lb_unknown_server_responses_1", None, "7f"),
    ] {
        let quic_lb = match key {
            Some(_) => format!(
                "quic_lb = {{ configs = [{{ id = 0, server_id_len = 1, nonce_len = 8, key = \"{KEY}\" }}] }}"
            ),
            None => "quic_lb = { configs = [{ id = 0, server_id_len = 1, nonce_len = 8 }] }".to_owned(),
        };
        let (mut core, _) = populated(10_000, &format!("responses = 1\n{quic_lb}"));
        let config = udplb_core::quic_lb::QuicLbConfig::new(0, 1, 8, key).unwrap();
        let server_id = udplb_core::quic_lb::ServerId::from_hex(server).unwrap();
        let cid = config.encode(&server_id, &[7; 8], 0, true).unwrap();
        let mut packet = vec![0u8; DATAGRAM_HEADROOM + 64];
        packet[DATAGRAM_HEADROOM] = 0x40;
        packet[DATAGRAM_HEADROOM + 1..DATAGRAM_HEADROOM + 1 + cid.len()].copy_from_slice(&cid);
        let mut next_client = 1_000_000u32;
        let mut now = Instant::from_secs(1);
        group.bench_function(name, |b| {
            b.iter(|| {
                next_client += 1;
                now = now + Duration::from_nanos(100);
                let ClientVerdict::Forward { flow, .. } =
                    send(&mut core, now, &mut packet, client(next_client))
                else {
                    panic!("admission failed")
                };
                let verdict = core.handle_backend_datagram(now, flow, &packet[..64], false);
                drain(&mut core);
                black_box(verdict)
            })
        });
        let routed = core.stats().listeners[0].quic_lb[udplb_core::flow::QuicRoute::Routed.index()];
        assert_eq!(routed > 0, server == "02", "{name}: {routed} routed");
        drop(core);
    }

    // Timer churn: 100k flows whose armed entries all fire early (the clients stayed active)
    // and are re-armed once each, in one handle_timeout call. Reported per batch of 100k.
    group.sample_size(10);
    group.bench_function("timer_rearm_100k_flows_one_handle_timeout", |b| {
        b.iter_batched(
            || {
                let (mut core, flows) = populated(FLOWS, "");
                // Every backend answers at 5s, so no flow waits for a reply any more.
                for flow in flows {
                    core.handle_backend_datagram(Instant::from_secs(5), flow, b"answer", false);
                }
                drain(&mut core);
                core
            },
            |mut core| {
                // Entries armed at 10s (the wait for a reply) fire early; each flow re-arms
                // once, at 20s, and none closes.
                core.handle_timeout(Instant::from_secs(10));
                drain(&mut core);
                assert_eq!(core.stats().flows.active, u64::from(FLOWS));
                core
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(datapath, benches);
criterion_main!(datapath);
