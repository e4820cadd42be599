//! The amplification cap: what a backend may send back for what a client sent, per flow.

mod common;

use common::{Harness, one_listener};
use udplb_core::{BackendVerdict, DropReason};

fn capped(cap: &str, extra: &str) -> Harness {
    Harness::new(&one_listener(1, &format!("amplification = {{ {cap} }}\n{extra}"), ""))
}

#[test]
fn replies_beyond_the_multiple_of_what_the_client_sent_are_dropped_and_counted() {
    // 3x the client's bytes plus 1,000 bytes for a first reply; 3x its datagrams plus 1.
    let mut h = capped("factor = 3, allowance_bytes = 1000, allowance_datagrams = 1", "");
    // A 100-byte request earns 300 bytes: with the allowance, 1,300 may come back.
    let flow = h.forward("192.0.2.66:53", &[0; 100]);
    assert!(matches!(h.backend(flow, &[1; 1000]), BackendVerdict::Return { .. }), "within the allowance");
    assert_eq!(h.backend(flow, &[1; 1000]), BackendVerdict::Drop(DropReason::Amplification), "300 left");
    assert!(matches!(h.backend(flow, &[1; 300]), BackendVerdict::Return { .. }), "exactly what is left");
    assert_eq!(h.backend(flow, &[1; 1]), BackendVerdict::Drop(DropReason::Amplification));
    // Another request earns 300 more.
    h.forward("192.0.2.66:53", &[0; 100]);
    assert!(matches!(h.backend(flow, &[1; 300]), BackendVerdict::Return { .. }));
    let stats = h.core.stats();
    assert_eq!(stats.backends[0].amplification_drops, 2);
    assert_eq!(stats.listeners[0].backend.dropped(DropReason::Amplification), 2);
    h.core.check_invariants().unwrap();
}

#[test]
fn the_datagram_count_is_capped_too() {
    // Plenty of bytes, but at most 2 replies per request plus 1.
    let mut h = capped("factor = 2, allowance_bytes = 100000, allowance_datagrams = 1", "");
    let flow = h.forward("192.0.2.66:53", &[0; 10]);
    let returned = (0..10).filter(|_| matches!(h.backend(flow, b"x"), BackendVerdict::Return { .. })).count();
    assert_eq!(returned, 3);
}

/// A spoofed victim: requests "from" it, a backend answering ten times their size. What
/// reaches the victim stays within the multiple of what was sent in its name, plus the
/// allowance, however long the attack goes on.
#[test]
fn a_reflection_attempt_is_bounded_by_the_cap() {
    let mut h =
        capped("factor = 2, allowance_bytes = 512", "idle_timeout = { front = \"60s\", back = \"60s\" }");
    let (mut sent, mut returned) = (0u64, 0u64);
    let mut flow = None;
    for _ in 0..500 {
        let request = [0u8; 60];
        let this = h.forward("192.0.2.66:123", &request);
        flow = Some(this);
        sent += request.len() as u64;
        if let BackendVerdict::Return { .. } = h.backend(this, &[7u8; 600]) {
            returned += 600;
        }
    }
    assert!(flow.is_some());
    assert!(returned <= 2 * sent + 512, "{returned} bytes returned for {sent} sent");
    assert!(returned >= 2 * sent - 600, "and the cap lets that much through: {returned} of {sent}");
}

#[test]
fn without_a_cap_nothing_is_counted_or_dropped() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.66:53", &[0; 10]);
    for _ in 0..5 {
        assert!(matches!(h.backend(flow, &[1; 5000]), BackendVerdict::Return { .. }));
    }
    assert_eq!(h.core.stats().backends[0].amplification_drops, 0);
}

/// A cap added by a reload gives existing flows its allowance to start from; a cap kept by
/// a reload keeps what each flow has left.
#[test]
fn a_cap_added_by_a_reload_starts_existing_flows_at_the_allowance() {
    let mut h = Harness::new(&one_listener(1, "", ""));
    let flow = h.forward("192.0.2.66:53", &[0; 10]);
    let capped =
        one_listener(1, "amplification = { factor = 1, allowance_bytes = 100, allowance_datagrams = 5 }", "");
    h.core.apply_config(h.now, &capped).unwrap();
    assert!(matches!(h.backend(flow, &[1; 100]), BackendVerdict::Return { .. }), "the allowance");
    assert_eq!(h.backend(flow, &[1; 1]), BackendVerdict::Drop(DropReason::Amplification));
    h.core.apply_config(h.now, &capped).unwrap();
    assert_eq!(
        h.backend(flow, &[1; 1]),
        BackendVerdict::Drop(DropReason::Amplification),
        "kept, not refilled"
    );
    h.core.check_invariants().unwrap();
}
