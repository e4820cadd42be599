//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! The core's driver (`udplb_core::driver`) turns verdicts and control outputs into socket
//! actions, generic over a small `Platform` trait (open/close upstream, send, start probe).
//! The simulator runs it on simulated sockets; [`event_loop`] runs it on mio in the `udplb`
//! binary (`mio_platform.rs` is its platform), with
//! signals (SIGHUP reload, SIGTERM/SIGINT drain then exit) and [`system`] for descriptor
//! limits, keys, kernel drop counters and systemd readiness. The same loop serves the control
//! socket ([`control`]: its server, its protocol, the commands it executes, the rendering of
//! the core's state; `udplb ctl` is [`ctl`]) and Prometheus metrics ([`metrics`]). Every
//! load-balancing decision stays in `udplb-core`; see `docs/architecture.md`.

mod batch;
pub mod control;
mod counters;
pub mod event_loop;
pub mod metrics;
mod mio_platform;
mod notices;
mod pool;
pub mod system;
mod workers;

pub use control::ctl;
pub use workers::worker_config;
