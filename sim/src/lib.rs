//! The udplb simulator: a deterministic, discrete-event world around the core.
//!
//! This crate will hold the event engine (virtual time, one seeded ChaCha stream), the network
//! model (latency, loss, duplication, reordering, partitions, ICMP), client and backend host
//! models, the scenario-file runner with its invariants, and trace snapshots. It drives the
//! shell's own driver on simulated sockets, so what it tests is the production path.
//!
//! Nothing lives here yet: the simulator is a later issue (see the tracker).
