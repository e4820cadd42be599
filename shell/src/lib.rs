//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! [`driver`] turns the core's verdicts and control outputs into socket actions, generic over a
//! small [`driver::Platform`] trait (send, open/close upstream, start probe, now). The simulator
//! runs it on simulated sockets today; the mio platform, the control socket, metrics, signals
//! and the `udplb` binary come with the shell issue (see the tracker). Every load-balancing
//! decision stays in `udplb-core`; see `docs/architecture.md`.

pub mod driver;
