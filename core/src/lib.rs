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
//! what the shell and the simulator drive.
//!
//! The datapath has two inputs that return their own verdict, so no datagram ever goes
//! through a queue: [`Balancer::handle_client_datagram`] and
//! [`Balancer::handle_backend_datagram`]. Every other input (upstream errors, probe results,
//! admin commands, reloads, [`Balancer::handle_timeout`]) takes `now` first. After **any**
//! call, the caller:
//!
//! 1. drains [`Balancer::poll_output`] until it returns `None` (open, close or send on
//!    upstreams, start probes, events), *before* acting on the verdict, so that a new flow's
//!    upstream exists before its first datagram is sent;
//! 2. acts on the verdict;
//! 3. re-arms its timer from [`Balancer::poll_timeout`]. Waking up early is harmless.
//!
//! `docs/architecture.md` has the whole contract and the reasoning behind it.

pub mod balancer;
pub mod config;
pub mod flow;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod id;
pub mod mutants;
pub mod names;
pub mod outcome;
pub mod proxy_v2;
pub mod select;
pub mod stats;
pub mod time;
mod timer;

pub use balancer::{BackendCommand, Balancer, FrontendState, Reload, Role};
pub use config::Config;
pub use flow::{
    AdminCommand, AdminError, BackendVerdict, ClientDatagram, ClientVerdict, DATAGRAM_HEADROOM, Event,
    FlowInfo, FlowManager, InvariantViolation, Keys, Output, ReloadSummary, UpstreamError,
};
pub use health::{
    AdminState, Health, HealthEvent, HealthMonitor, HealthOutput, MonitoredBackend, ProbeResult,
};
pub use id::{BackendId, ClusterId, FlowId, ListenerId, ProbeId, UpstreamId};
pub use outcome::{CloseReason, DropReason, PassiveFailure};
pub use stats::Stats;
pub use time::Instant;
