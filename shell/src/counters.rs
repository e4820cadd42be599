//! The datapath counters the shell keeps: what one worker counts itself beside the core
//! ([`ShellCounters`]), and what it shares with the others: a [`WorkerView`] of each worker,
//! which followers publish and the leader adds to its own, and the [`BackendTraffic`] of each
//! backend inside it. The workers carry views between threads; metrics and `udplb ctl show`
//! read the sum.

use std::collections::BTreeMap;

use udplb_core::health::CheckCode;
use udplb_core::{BackendId, Balancer, Health, ListenerId, Stats};

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

/// How configuration reloads went (the leader's; followers do not reload on their own).
#[derive(Clone, Debug, Default)]
pub struct ReloadCounters {
    pub succeeded: u64,
    pub failed: u64,
    pub last_success: Option<std::time::SystemTime>,
    pub last_failure: Option<std::time::SystemTime>,
}

impl ReloadCounters {
    pub fn count(&mut self, succeeded: bool) {
        let now = Some(std::time::SystemTime::now());
        if succeeded {
            self.succeeded += 1;
            self.last_success = now;
        } else {
            self.failed += 1;
            self.last_failure = now;
        }
    }
}

/// What the shell counts itself, because the core counts it otherwise or not at all: traffic
/// per backend (the core books datagrams per listener) and health transitions per backend
/// and check code (the core keeps only the last few in each backend's history).
#[derive(Debug, Default)]
pub struct ShellCounters {
    /// Indexed by `BackendId`: ids are dense and never reused, so this grows only with the
    /// backends a reload adds.
    traffic: Vec<BackendTraffic>,
    transitions: BTreeMap<(BackendId, Health, CheckCode), u64>,
    /// Events that could not be queued for `watch`ers.
    pub watch_events_lost: u64,
    /// Datagrams on a pool socket from an address with no flow on it (a reply later than
    /// its flow, or a stranger): dropped.
    pub stray_upstream_datagrams: u64,
}

impl ShellCounters {
    fn traffic_mut(&mut self, backend: BackendId) -> &mut BackendTraffic {
        let index = backend.0 as usize;
        if self.traffic.len() <= index {
            self.traffic.resize(index + 1, BackendTraffic::default());
        }
        &mut self.traffic[index]
    }

    pub fn sent_to_backend(&mut self, backend: BackendId, bytes: usize) {
        let traffic = self.traffic_mut(backend);
        traffic.datagrams_sent += 1;
        traffic.bytes_sent += bytes as u64;
    }

    /// Takes back a datagram counted by `sent_to_backend` whose batched send failed.
    pub fn not_sent_to_backend(&mut self, backend: BackendId, bytes: usize) {
        let traffic = self.traffic_mut(backend);
        traffic.datagrams_sent = traffic.datagrams_sent.saturating_sub(1);
        traffic.bytes_sent = traffic.bytes_sent.saturating_sub(bytes as u64);
    }

    pub fn received_from_backend(&mut self, backend: BackendId, bytes: usize) {
        let traffic = self.traffic_mut(backend);
        traffic.datagrams_received += 1;
        traffic.bytes_received += bytes as u64;
    }

    pub fn transition(&mut self, backend: BackendId, to: Health, code: CheckCode) {
        *self.transitions.entry((backend, to, code)).or_default() += 1;
    }

    /// Health transitions since start, by backend, new state and check code.
    pub fn transitions(&self) -> &BTreeMap<(BackendId, Health, CheckCode), u64> {
        &self.transitions
    }

    /// Traffic of every backend, indexed by `BackendId`.
    pub fn all_traffic(&self) -> &[BackendTraffic] {
        &self.traffic
    }

    /// Forgets transitions of backends that no longer exist (after a reload), so the map
    /// stays bounded by the live backends.
    pub fn retain_backends(&mut self, live: impl Fn(BackendId) -> bool) {
        self.transitions.retain(|(backend, _, _), _| live(*backend));
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
    /// One worker's counters: its core's (`core`), its own (`counters`), and what its sockets
    /// tell (the kernel's drop count of each listener, the upstream sockets open now).
    pub(crate) fn of(
        core: &Balancer,
        counters: &ShellCounters,
        kernel_drops: Vec<(ListenerId, u64)>,
        upstream_sockets: u64,
    ) -> WorkerView {
        let flows = core.flows();
        let mut backend_flows = Vec::new();
        for backend in flows.backend_ids() {
            let index = backend.0 as usize;
            if backend_flows.len() <= index {
                backend_flows.resize(index + 1, 0);
            }
            backend_flows[index] = flows.backend_flows(backend);
        }
        WorkerView {
            workers: 1,
            stats: flows.stats().clone(),
            backend_flows,
            traffic: counters.all_traffic().to_vec(),
            kernel_drops,
            upstream_sockets,
            stray_upstream_datagrams: counters.stray_upstream_datagrams,
        }
    }

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
