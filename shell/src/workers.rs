//! Several workers in one process (`process.workers = N`): N threads, each an event loop with
//! its own SO_REUSEPORT listener sockets (the kernel spreads clients over them by 4-tuple),
//! its own flow table and its own upstream sockets. Worker 0, the *leader*, runs on the main
//! thread: it alone probes backends, decides their health, serves the control socket,
//! metrics and signals. The *followers* take every backend state change from it and hand it
//! the passive failures their datapath sees ([`udplb_core::Role`]). Messages go over
//! channels, each followed by a wake-up of the receiving loop (`mio::Waker`).
//!
//! Followers publish a [`WorkerView`] of their counters a few times per second; the leader's
//! metrics add them up.
//!
//! This module holds what passes between the workers (the messages, the leader's handle on a
//! follower, a follower's link to its leader) and how the process's budgets are split; the
//! leader's and a follower's parts of the loop are `event_loop/leader.rs` and
//! `event_loop/follower.rs`.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::Waker;
use udplb_core::{Config, Input};

pub(crate) use crate::counters::WorkerView;

/// From the leader to a follower.
#[derive(Debug)]
pub(crate) enum ToFollower {
    /// An input for the follower's core: a backend's new state, a listener command, an
    /// operator's weight for a backend (until the next reload).
    Input(Input),
    /// The leader applied this configuration (already validated, flow cap already split).
    Reload(Arc<Config>),
    /// SIGTERM: drain every listener, then end the thread once no flow is left.
    Stop,
}

/// From a follower to the leader: an input for the leader's core (a passive failure the
/// follower's datapath saw).
#[derive(Debug)]
pub(crate) enum ToLeader {
    Input(Input),
}

/// The leader's handle on one follower.
pub(crate) struct Follower {
    pub sender: Sender<ToFollower>,
    pub waker: Arc<Waker>,
    pub view: Arc<Mutex<WorkerView>>,
    pub thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Sends a message and wakes the follower. A follower that has ended is not told.
    pub(crate) fn send(&self, message: ToFollower) {
        if self.sender.send(message).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|thread| thread.is_finished())
    }
}

/// A follower's link to its leader.
pub(crate) struct LeaderLink {
    pub inbox: Receiver<ToFollower>,
    pub sender: Sender<ToLeader>,
    pub leader_waker: Arc<Waker>,
    pub view: Arc<Mutex<WorkerView>>,
    /// Worker number, for logs.
    pub index: u32,
}

impl LeaderLink {
    pub(crate) fn send(&self, message: ToLeader) {
        if self.sender.send(message).is_ok() {
            let _ = self.leader_waker.wake();
        }
    }
}

/// The flow cap of one of `workers` workers: the cap split evenly, rounded up (so the workers
/// together may hold up to `workers - 1` flows more than the cap, and each at least one).
pub(crate) fn share(max_flows: u32, workers: u32) -> u32 {
    max_flows.div_ceil(workers.max(1)).max(1)
}

/// What one of `workers` workers runs: the file's configuration with every process-wide
/// budget split between the workers — `max_flows` (the file's, or `default_max_flows`), each
/// listener's `max_flows`, and `retry_buffer_bytes` — since each worker enforces its own.
pub fn worker_config(config: &Config, workers: u32, default_max_flows: u32) -> Config {
    let mut effective = config.clone();
    let process = &mut effective.process;
    process.max_flows = Some(share(process.max_flows.unwrap_or(default_max_flows), workers));
    if workers > 1 {
        process.retry_buffer_bytes = Some(process.retry_buffer_bytes() / workers);
        for listener in effective.listeners.values_mut() {
            listener.max_flows = listener.max_flows.map(|cap| share(cap, workers));
        }
    }
    effective
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_process_wide_budget_is_split_between_workers() {
        let config = udplb_core::Config::from_toml_str(
            "[process]\nretry_buffer_bytes = 1000\n[listeners.l]\naddress = \"127.0.0.1:53\"\ncluster = \"c\"\nmax_flows = 101\n\
             [clusters.c]\nbackends = [{ id = \"b\", address = \"127.0.0.1:54\" }]\n",
        )
        .unwrap();
        let one = super::worker_config(&config, 1, 5000);
        assert_eq!((one.process.max_flows, one.process.retry_buffer_bytes), (Some(5000), Some(1000)));
        assert_eq!(one.listeners["l"].max_flows, Some(101));
        let two = super::worker_config(&config, 2, 5000);
        assert_eq!((two.process.max_flows, two.process.retry_buffer_bytes), (Some(2500), Some(500)));
        assert_eq!(two.listeners["l"].max_flows, Some(51));
    }

    #[test]
    fn the_flow_cap_is_split_evenly() {
        assert_eq!(super::share(65_536, 1), 65_536);
        assert_eq!(super::share(65_536, 2), 32_768);
        assert_eq!(super::share(10, 3), 4);
        assert_eq!(super::share(1, 4), 1);
    }
}
