//! The udplb shell: everything that touches the operating system, and nothing that decides.
//!
//! This crate will hold the driver that turns the core's verdicts and control outputs into
//! socket actions (generic over a small platform trait: receive, send, open/close upstream,
//! start probe, now), its mio platform, the control socket, metrics, signals and the `udplb`
//! binary. Every load-balancing decision stays in `udplb-core`; see `docs/architecture.md`.
//!
//! Nothing lives here yet: the shell is a later issue (see the tracker).
