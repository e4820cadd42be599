//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! [`driver`] turns the core's verdicts and control outputs into socket actions, generic over a
//! small [`driver::Platform`] trait (send, open/close upstream, start probe, now). The simulator
//! runs it on simulated sockets; [`event_loop`] runs it on mio in the `udplb` binary, with
//! signals (SIGHUP reload, SIGTERM/SIGINT drain then exit) and [`system`] for descriptor
//! limits, keys and systemd readiness. The control socket and metrics come next (see the
//! tracker). Every load-balancing
//! decision stays in `udplb-core`; see `docs/architecture.md`.

pub mod driver;
pub mod event_loop;
pub mod system;
