//! The datapath counters one worker shares with the others: a [`WorkerView`] of each worker,
//! which followers publish and the leader adds to its own, and the [`BackendTraffic`] of each
//! backend inside it. The workers carry views between threads; metrics and `udplb ctl show`
//! read the sum.

use udplb_core::{ListenerId, Stats};

/// Traffic on one backend's upstream sockets, as the shell sent and received it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTraffic {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

impl BackendTraffic {
    /// Adds another worker's traffic for the same backend.
    pub fn absorb(&mut self, other: &BackendTraffic) {
        self.datagrams_sent += other.datagrams_sent;
        self.bytes_sent += other.bytes_sent;
        self.datagrams_received += other.datagrams_received;
        self.bytes_received += other.bytes_received;
    }
}

/// One or more workers' datapath counters: each follower publishes its own, and the leader
/// adds them to its own for metrics and `udplb ctl show` (workers share listener and backend
/// ids, so the counters add up index by index).
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerView {
    /// How many workers these counters are of.
    pub workers: u32,
    pub stats: Stats,
    /// Flows per backend, indexed by `BackendId`.
    pub backend_flows: Vec<u64>,
    /// Traffic per backend, indexed by `BackendId`.
    pub traffic: Vec<BackendTraffic>,
    pub kernel_drops: Vec<(ListenerId, u64)>,
    pub upstream_sockets: u64,
    pub stray_upstream_datagrams: u64,
}

impl WorkerView {
    /// Adds another worker's (or workers') counters to these.
    pub(crate) fn absorb(&mut self, other: &WorkerView) {
        self.workers += other.workers;
        self.stats.absorb(&other.stats);
        add_by_index(&mut self.backend_flows, &other.backend_flows, |total, flows| *total += flows);
        add_by_index(&mut self.traffic, &other.traffic, |total, traffic| total.absorb(traffic));
        for (listener, drops) in &other.kernel_drops {
            match self.kernel_drops.iter_mut().find(|(id, _)| id == listener) {
                Some((_, total)) => *total += drops,
                None => self.kernel_drops.push((*listener, *drops)),
            }
        }
        self.upstream_sockets += other.upstream_sockets;
        self.stray_upstream_datagrams += other.stray_upstream_datagrams;
    }
}

/// `totals[i] += more[i]` for every `i`, growing `totals` as needed.
fn add_by_index<T: Default + Clone>(totals: &mut Vec<T>, more: &[T], add: impl Fn(&mut T, &T)) {
    if totals.len() < more.len() {
        totals.resize(more.len(), T::default());
    }
    for (total, value) in totals.iter_mut().zip(more) {
        add(total, value);
    }
}
