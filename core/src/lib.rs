//! udplb-core: every decision udplb makes, and no I/O.
//!
//! This crate owns admission, the flow table, flow teardown, drain, flow caps and shedding,
//! backend selection, health checking (probe scheduling, hysteresis, passive health,
//! fail-open), reload, and the PROXY protocol v2 codec. It never opens a socket, reads a clock
//! or asks the operating system for randomness: time arrives as an [`Instant`] argument on
//! every input, and the two keys it hashes with (a selection key shared by every instance
//! that must agree, and a per-process flow-table key) are injected at construction. The same
//! inputs therefore give the same outputs, byte for byte, on every machine; the simulator and
//! the fuzzers rely on it.
//!
//! # How it is driven
//!
//! The core has two halves: a [`HealthMonitor`] (probes, hysteresis, backend states; one per
//! process) and a [`FlowManager`] (admission, flows, selection over a health view; one per
//! worker), joined by explicit inputs. [`Balancer`] composes both for a single worker and is
//! what the shell and the simulator drive, through the same [`driver::Driver`].
//!
//! The datapath has two inputs that return their own verdict, so no datagram ever goes
//! through a queue: [`Balancer::handle_client_datagram`] and
//! [`Balancer::handle_backend_datagram`]. Every other input is one [`Input`] for
//! [`Balancer::handle`] (a timer, an upstream error, a probe's outcome, a command); a reload
//! is [`Balancer::apply_config`]. Each takes `now` first. After **any** call, the caller:
//!
//! 1. acts on the verdict: a new flow is staged ([`ClientVerdict::Open`]) and booked only
//!    once its upstream is open ([`Balancer::accept`], or [`Balancer::refuse`] if the open
//!    failed);
//! 2. drains [`Balancer::poll_output`] until it returns `None` (close upstreams, re-send a
//!    refused request on a new staged flow, start probes, events);
//! 3. re-arms its timer from [`Balancer::poll_timeout`]. Waking up early is harmless.
//!
//! The whole loop, with the sockets left out (this is what [`driver::Driver`] does):
//!
//! ```
//! use udplb_core::{Balancer, ClientDatagram, ClientVerdict, Config, DATAGRAM_HEADROOM, Input, Instant, Keys};
//! use udplb_core::balancer::Output;
//!
//! let config = Config::from_toml_str(r#"
//!     [listeners.dns]
//!     address = "192.0.2.53:53"
//!     cluster = "resolvers"
//!     [clusters.resolvers]
//!     responses = 1
//!     backends = [{ id = "r1", address = "10.0.0.1:53" }]
//! "#).expect("valid");
//! let mut core = Balancer::new(&config, Keys::from_seed(1)).expect("valid");
//! let listener = core.flows().listener_id("dns").unwrap();
//! let mut now = Instant::ZERO;
//!
//! // A client datagram, with room in front for a PROXY v2 header.
//! let mut buffer = vec![0u8; DATAGRAM_HEADROOM + 5];
//! buffer[DATAGRAM_HEADROOM..].copy_from_slice(b"query");
//! let client = "198.51.100.7:33000".parse().unwrap();
//! let datagram =
//!     ClientDatagram { listener, client, local: None, buffer: &mut buffer, headroom: DATAGRAM_HEADROOM, truncated: false };
//! let verdict = match core.handle_client_datagram(now, datagram) {
//!     // A new flow: open an upstream towards `incoming.address()` here, then confirm.
//!     ClientVerdict::Open(incoming) => {
//!         let start = DATAGRAM_HEADROOM - incoming.prefix_len();
//!         core.accept(now, incoming, &buffer[start..])
//!     }
//!     verdict => verdict,
//! };
//! let ClientVerdict::Forward { flow, prefix_len, .. } = verdict else { panic!("{verdict:?}") };
//! let _send_this = &buffer[DATAGRAM_HEADROOM - prefix_len..]; // on `flow`'s upstream
//! while let Some(output) = core.poll_output() {
//!     // Close upstreams, start probes, log events...
//!     let _ = output;
//! }
//!
//! // The backend answers: return the reply to the client; `responses = 1` closes the flow.
//! core.handle_backend_datagram(now, flow, b"answer", false);
//! let closed = std::iter::from_fn(|| core.poll_output())
//!     .any(|o| matches!(o, Output::Flow(udplb_core::Output::CloseUpstream { flow: f, .. }) if f == flow));
//! assert!(closed);
//!
//! // Sleep until the next deadline, then tell the core the time has come.
//! if let Some(deadline) = core.poll_timeout() {
//!     now = deadline;
//!     core.handle(now, Input::Timeout).expect("a timer is never refused");
//! }
//! ```
//!
//! `docs/architecture.md` has the whole contract and the reasoning behind it.

pub mod balancer;
pub mod config;
pub mod driver;
pub mod flow;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod id;
// Public with the test-only `mutants` feature; otherwise a private module whose switches are
// constant `false`, so the core's mutant checks compile away.
#[cfg(feature = "mutants")]
pub mod mutants;
#[cfg(not(feature = "mutants"))]
mod mutants;
pub mod names;
pub mod outcome;
pub mod pool;
pub mod proxy_v2;
pub mod quic_lb;
pub mod select;
pub mod snapshot;
pub mod stats;
pub mod steer;
pub mod time;
mod timer;

pub use balancer::{BackendCommand, BackendState, Balancer, FrontendState, Input, Reload, Role};
pub use config::Config;
pub use flow::{
    AdminCommand, AdminError, Admission, BackendVerdict, ClientDatagram, ClientVerdict, DATAGRAM_HEADROOM,
    Event, FlowInfo, FlowManager, Incoming, InvariantViolation, Keys, Output, ReloadSummary, UpstreamError,
};
pub use health::{
    AdminState, Health, HealthEvent, HealthMonitor, HealthOutput, MonitoredBackend, ProbeResult,
};
pub use id::{BackendId, ClusterId, FlowId, ListenerId, ProbeId};
pub use outcome::{CloseReason, DropReason, PassiveFailure};
pub use stats::{BackendStats, Stats};
pub use time::Instant;

/// The test-only features this build of the core was compiled with: empty in anything that
/// ships. `cargo test --workspace` unifies dev-dependency features (`mutants` from the
/// simulator's tests, `fuzzing` from the core's own) into every crate it builds, the `udplb`
/// binary included, so the binary reports these (`udplb --version`) to show which build it is.
pub const TEST_FEATURES: &[&str] = &[
    #[cfg(feature = "mutants")]
    "mutants",
    #[cfg(feature = "fuzzing")]
    "fuzzing",
];
