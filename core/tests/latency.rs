//! Reply latency per backend: what `udplb_backend_reply_seconds` reports.

mod common;

use std::time::Duration;

use common::{Harness, one_listener};
use udplb_core::stats::{LATENCY_BOUNDS_MICROS, LatencyHistogram};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn latency(h: &Harness) -> LatencyHistogram {
    let mut total = LatencyHistogram::default();
    for backend in &h.core.stats().backends {
        total.absorb(&backend.reply_latency);
    }
    total
}

/// The bucket a duration falls in.
fn bucket(took: Duration) -> usize {
    LATENCY_BOUNDS_MICROS.partition_point(|bound| *bound < took.as_micros() as u64)
}

#[test]
fn with_replies_counted_per_request_each_request_is_timed_to_its_reply() {
    let mut h = Harness::new(&one_listener(1, "responses = 1", ""));
    // Two requests in flight on one socket, answered in order after 3 ms and 40 ms.
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.advance(ms(1));
    h.forward("192.0.2.1:5000", b"q2");
    h.advance(ms(2));
    h.backend(flow, b"r1");
    h.advance(ms(38));
    h.backend(flow, b"r2");
    let seen = latency(&h);
    assert_eq!(seen.count, 2);
    assert_eq!(seen.sum_micros, 3_000 + 40_000);
    assert_eq!(seen.buckets[bucket(ms(3))], 1);
    assert_eq!(seen.buckets[bucket(ms(40))], 1);
}

#[test]
fn without_a_reply_count_the_first_reply_after_a_request_ends_the_wait() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.1:5000", b"q1");
    h.advance(ms(7));
    h.backend(flow, b"r1");
    // More replies with no new request: not a reply to anything newly asked.
    h.advance(ms(5));
    h.backend(flow, b"r1 again");
    // A new request after 100 ms of silence, answered in 12 ms.
    h.advance(ms(100));
    h.forward("192.0.2.1:5000", b"q2");
    h.advance(ms(12));
    h.backend(flow, b"r2");
    let seen = latency(&h);
    assert_eq!((seen.count, seen.sum_micros), (2, 19_000), "{seen:?}");
}

#[test]
fn a_one_way_flow_has_no_latency_to_report() {
    let mut h = Harness::new(&one_listener(1, "responses = 0", ""));
    let flow = h.forward("192.0.2.1:5000", b"log line");
    h.advance(ms(3));
    h.backend(flow, b"unexpected");
    assert_eq!(latency(&h).count, 0);
}

#[test]
fn the_histogram_puts_each_sample_in_the_first_bucket_that_holds_it() {
    let mut histogram = LatencyHistogram::default();
    for took in
        [Duration::from_micros(250), Duration::from_micros(251), Duration::from_secs(11), Duration::ZERO]
    {
        histogram.record(took);
    }
    assert_eq!(histogram.buckets[0], 2, "0 and 250 µs: at most 250 µs");
    assert_eq!(histogram.buckets[1], 1, "251 µs");
    assert_eq!(histogram.buckets[LATENCY_BOUNDS_MICROS.len()], 1, "over 10 s");
    assert_eq!(histogram.count, 4);
}
