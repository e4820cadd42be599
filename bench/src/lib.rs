//! `udplb-bench`: the end-to-end benchmark of udplb on loopback.
//!
//! It owns three programs and the pure parts they share. `udplb-echo` is the backend (it
//! echoes every datagram to its sender); `udplb-load` is the client side (K flows, closed
//! loop with a window, open loop at a fixed rate, a fresh flow per request, or many flows held
//! open for the memory measurement), and it checks that every reply came back to the flow that
//! sent it; `udplb-compare` starts backends and the proxies under test (udplb, nginx's stream
//! module) and a direct path, runs the same workloads against each, interleaved and repeated,
//! and prints medians with their spread and the proxies' CPU time per forwarded datagram read
//! from `/proc`.
//!
//! It never asserts on a timing: a run fails only on a functional fault (a target that returns
//! nothing, or a reply delivered to the wrong flow). Everything it starts is bounded in time and
//! killed when the driver exits, and it sends only to loopback addresses.

pub mod compare;
pub mod echo;
pub mod faults;
pub mod histogram;
pub mod load;
pub mod process;
pub mod procfs;
pub mod proxy_config;
pub mod summary;
pub mod wire;
