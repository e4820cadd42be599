//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! The core's driver (`udplb_core::driver`) turns verdicts and control outputs into socket
//! actions, generic over a small `Platform` trait (open/close upstream, send, start probe).
//! The simulator runs it on simulated sockets; [`event_loop`] runs it on mio in the `udplb`
//! binary. Every load-balancing decision stays in `udplb-core`; see `docs/architecture.md`.
//!
//! One job per file:
//!
//! - `event_loop.rs`: the turn every worker runs: poll, read listeners, upstreams and probes
//!   in batches, settle what failed, run the core's timer, serve connections;
//! - `event_loop/leader.rs`: the leader's duties: signals (SIGHUP reload, SIGTERM/SIGINT
//!   drain then exit), binding the control socket and metrics, spawning followers, relaying
//!   backend states to them, checking they are alive, stopping them;
//! - `event_loop/follower.rs`: a follower's duties: its link to the leader, applying the
//!   leader's messages, publishing its counters;
//! - `workers.rs`: what passes between workers (messages, handles) and how per-process
//!   budgets are split between them;
//! - `mio_platform.rs`: the platform: listener, pool, per-flow and probe sockets; sending,
//!   flushing, reading errors (which pool socket carries which flow is decided by the core's
//!   `udplb_core::pool`, which the simulator uses too);
//! - `batch.rs`: batched datagram I/O (`recvmmsg`, `sendmmsg`, the ICMP error queue);
//! - `notices.rs`: what becomes of every output of the core: kept for the other workers,
//!   counted, queued for watchers, logged;
//! - `counters.rs`: what the shell counts itself, and a worker's view of its counters;
//! - `control/` ([`control`]): the control socket: its protocol, server, commands and status
//!   views; `udplb ctl` is [`ctl`];
//! - `metrics.rs` and `metrics/` ([`metrics`]): Prometheus metrics: rendering, the HTTP
//!   endpoint, answering scrapes;
//! - `system.rs` ([`system`]): descriptor limits, keys, kernel drop counters and systemd
//!   readiness;
//! - `handover.rs` ([`handover`]): hitless restart: what a process hands its successor and
//!   how (over the control socket, or through systemd's descriptor store);
//!   `event_loop/handover.rs` freezes, hands over, resumes and adopts; `relay.rs`
//!   ([`relay`]) is the fallback when the new process cannot restore the old one's flows;
//! - `start.rs` ([`start`]): how `udplb run` starts: afresh, taking over, or from systemd's
//!   descriptor store.

mod batch;
pub mod control;
mod counters;
pub mod event_loop;
pub mod handover;
pub mod log_events;
pub mod metrics;
mod mio_platform;
mod notices;
pub mod relay;
pub mod start;
pub mod system;
mod workers;

pub use control::ctl;
pub use workers::worker_config;
