//! QUIC-LB routing benchmarks: the cost of `QuicLbConfigs::route` for one short-header
//! datagram in each format (plaintext, single-pass AES, four passes on an odd and an even
//! plaintext length, each with the server ID no longer than the nonce, so the balancer's
//! three-pass shortcut applies, and one where it does not), and for an Initial whose
//! client-chosen DCID is unroutable.
//!
//! Run: `cargo bench -p udplb-core --bench quic_lb`. Results go in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use udplb_core::quic_lb::{QuicLbConfig, QuicLbConfigs, Route, ServerId, Unroutable};

const KEY: [u8; 16] =
    [0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20, 0x7f];

/// A 1200-octet short-header datagram carrying a connection ID of `config` for a server
/// ID of its length.
fn short_header_datagram(config: &QuicLbConfig) -> (Vec<u8>, ServerId) {
    let server_id = ServerId::new(&[0x5a; 15][..config.server_id_len()]).unwrap();
    let nonce = [0x3c; 18];
    let cid = config.encode(&server_id, &nonce[..config.nonce_len()], 0, true).unwrap();
    let mut datagram = vec![0x40];
    datagram.extend_from_slice(&cid);
    datagram.resize(1200, 0x77);
    (datagram, server_id)
}

fn benches(c: &mut Criterion) {
    let cases = [
        ("plaintext_3_4", QuicLbConfig::new(0, 3, 4, None).unwrap()),
        ("single_pass_8_8", QuicLbConfig::new(1, 8, 8, Some(KEY)).unwrap()),
        ("four_pass_odd_3_4", QuicLbConfig::new(2, 3, 4, Some(KEY)).unwrap()),
        ("four_pass_even_4_8", QuicLbConfig::new(3, 4, 8, Some(KEY)).unwrap()),
        ("four_pass_odd_10_5_fourth_pass", QuicLbConfig::new(4, 10, 5, Some(KEY)).unwrap()),
    ];
    let configs = QuicLbConfigs::new(cases.iter().map(|(_, config)| config.clone()).collect()).unwrap();
    for (name, config) in &cases {
        let (datagram, server_id) = short_header_datagram(config);
        assert_eq!(configs.route(&datagram), Route::Server(server_id));
        c.bench_function(&format!("quic_lb_route_{name}"), |b| {
            b.iter(|| configs.route(black_box(&datagram)))
        });
    }

    // A client's first Initial: QUIC v1 long header, an 8-octet random DCID whose rotation
    // bits (0b111) name no config, padded to 1200 octets.
    let mut initial = vec![0xc3, 0, 0, 0, 1, 8, 0xe7, 0x21, 0x9a, 0x4b, 0x03, 0xdd, 0x5f, 0x18, 8];
    initial.extend_from_slice(&[0x11; 8]);
    initial.resize(1200, 0);
    assert_eq!(configs.route(&initial), Route::Unroutable(Unroutable::UnknownConfig(7)));
    c.bench_function("quic_lb_route_unroutable_initial", |b| b.iter(|| configs.route(black_box(&initial))));
}

criterion_group!(quic_lb, benches);
criterion_main!(quic_lb);
