//! Fuzz target bodies (feature `fuzzing`).
//!
//! Each target is one function that takes the fuzzer's bytes and panics exactly when the
//! core breaks a promise. They live here rather than in `fuzz/` for two reasons: a plain
//! `cargo test` on stable replays the committed corpus and every crash ever found through
//! them (`tests/fuzz_corpus.rs`), so a fixed bug stays fixed without a nightly toolchain; and
//! inside the crate they can build what callers cannot, such as a made-up [`FlowId`].
//! `fuzz/fuzz_targets/*.rs` are one-line wrappers around [`TARGETS`].
//!
//! The bodies obey the core's own rules (no clock, no OS randomness, no unordered maps): the
//! same bytes always replay the same run.
//!
//! [`FlowId`]: crate::FlowId

mod config_parse;
mod config_spec;
mod datagram_path;
mod proxy_v2;
mod quic_lb;
mod snapshot;

pub use config_parse::config_parse;
pub use datagram_path::datagram_path;
pub use proxy_v2::{proxy_v2_decode, proxy_v2_roundtrip};
pub use quic_lb::quic_lb_decode;
pub use snapshot::{snapshot_config, snapshot_decode};

/// A target body: the fuzzer's bytes in, a panic out when a promise is broken.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/corpus/` and `fuzz/regressions/`
/// and of its cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("datagram_path", datagram_path),
    ("proxy_v2_decode", proxy_v2_decode),
    ("proxy_v2_roundtrip", proxy_v2_roundtrip),
    ("config_parse", config_parse),
    ("quic_lb_decode", quic_lb_decode),
    ("snapshot_decode", snapshot_decode),
];
