//! The control feature: an operator's way into a running balancer, over a unix socket.
//!
//! - [`protocol`]: the wire format, JSON lines shared by both ends;
//! - [`server`]: the control socket in the event loop's poll, which only moves bytes;
//! - `commands.rs`: executing requests in the event loop, through the driver, and streaming
//!   events to watchers;
//! - [`status`]: rendering the core's state as the protocol's views;
//! - [`ctl`]: `udplb ctl`, the client.

mod commands;
pub mod ctl;
pub mod protocol;
pub mod server;
pub mod status;
