//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! The core's driver (`udplb_core::driver`) turns verdicts and control outputs into socket
//! actions, generic over a small `Platform` trait (open/close upstream, send, start probe).
//! The simulator runs it on simulated sockets; [`event_loop`] runs it on mio in the `udplb`
//! binary (`mio_platform.rs` is its platform), with
//! signals (SIGHUP reload, SIGTERM/SIGINT drain then exit) and [`system`] for descriptor
//! limits, keys, kernel drop counters and systemd readiness. The same loop serves the control
//! socket ([`control`], speaking [`protocol`]; `udplb ctl` is [`ctl`]) and Prometheus metrics
//! ([`metrics`]); `commands.rs` joins them to the driver and [`status`] renders the core's
//! state for them. Every load-balancing decision stays in `udplb-core`; see
//! `docs/architecture.md`.

mod batch;
mod commands;
pub mod control;
mod counters;
pub mod ctl;
pub mod event_loop;
pub mod log_events;
pub mod metrics;
mod mio_platform;
mod pool;
pub mod protocol;
pub mod status;
pub mod system;
mod workers;

pub use workers::worker_config;
