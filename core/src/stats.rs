//! Counters: per listener, per direction, per drop reason and per close reason.
//!
//! [`Stats`] is a plain snapshot (clone it to keep one). The core keeps the books so that
//! conservation can be checked: for every listener and direction, `received` equals `passed`
//! plus the sum of `drops`.

use crate::outcome::{CloseReason, DropReason};

/// Datagram counters for one direction of one listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatagramCounters {
    /// Datagrams handed to the core.
    pub received: u64,
    /// Bytes of payload handed to the core.
    pub bytes_received: u64,
    /// Datagrams forwarded (client direction) or returned (backend direction).
    pub passed: u64,
    /// Payload bytes passed (without any PROXY header).
    pub bytes_passed: u64,
    /// Datagrams dropped, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl DatagramCounters {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every datagram received was passed or dropped, exactly once.
    pub fn is_conserved(&self) -> bool {
        self.received == self.passed + self.dropped_total()
    }

    pub(crate) fn receive(&mut self, bytes: usize) {
        self.received += 1;
        self.bytes_received += bytes as u64;
    }

    pub(crate) fn pass(&mut self, bytes: usize) {
        self.passed += 1;
        self.bytes_passed += bytes as u64;
    }

    pub(crate) fn drop_for(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// A datagram the core passed was then lost by the shell (send or upstream open
    /// failed): it moves from `passed` to `drops[reason]`, so it is still counted once. A
    /// report with nothing passed to take back (a caller bug) changes nothing, so the books
    /// stay balanced whatever the caller does; returns whether it was applied.
    pub(crate) fn reclassify_as_dropped(&mut self, bytes: usize, reason: DropReason) -> bool {
        if self.passed == 0 {
            return false;
        }
        self.passed -= 1;
        self.bytes_passed = self.bytes_passed.saturating_sub(bytes as u64);
        self.drops[reason.index()] += 1;
        true
    }
}

/// Flow counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows created.
    pub created: u64,
    /// Flows closed, indexed by [`CloseReason::index`].
    pub closed: [u64; CloseReason::COUNT],
    /// Flows alive now (retired ones included).
    pub active: u64,
    /// Flows alive now that reached `requests` and only wait for replies.
    pub retired: u64,
}

impl FlowCounters {
    /// Flows closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Flows closed for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

/// Counters of one listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Client → backend datagrams.
    pub client: DatagramCounters,
    /// Backend → client datagrams.
    pub backend: DatagramCounters,
    /// Flows of this listener.
    pub flows: FlowCounters,
    /// New flows routed by fail-open: no backend was eligible, so an enabled one was used.
    pub fail_open_flows: u64,
    /// With `source_limits`: sources tracked now, and sources forgotten to make room.
    pub sources_tracked: u64,
    pub sources_evicted: u64,
    /// In a cluster with `quic_lb`: new flows by how QUIC-LB placed them, indexed by
    /// [`crate::outcome::QuicRoute::index`] (routed by connection ID, or why not).
    pub quic_lb: [u64; crate::outcome::QuicRoute::COUNT],
}

/// A snapshot of every counter the core keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per listener, indexed by `ListenerId`.
    pub listeners: Vec<ListenerStats>,
    /// Datagrams that could not be attributed to a listener: client datagrams for an
    /// unknown listener (`UnknownListener`) and backend datagrams for a flow that no longer
    /// exists (`UnknownFlow`).
    pub unattributed: DatagramCounters,
    /// Flow counters summed over every listener.
    pub flows: FlowCounters,
    /// Re-sends after a refusal (`retry_on_refused`).
    pub retries: RetryCounters,
    /// Per backend, indexed by `BackendId` (removed backends keep their entry).
    pub backends: Vec<BackendStats>,
}

/// What the datapath saw of one backend: how its requests fared, and the faults that are
/// its own (a reply from the wrong port, a send that failed on its path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Requests whose owed replies all came (counted only where `responses` is set).
    pub requests_answered: u64,
    /// Replies owed (by `responses`) that did not come within `idle_timeout.back` and were
    /// written off.
    pub replies_written_off: u64,
    /// Replies written off that came after all (and were returned): the write-off was taken
    /// back.
    pub replies_taken_back: u64,
    /// Replies dropped as copies of a reply already returned (`duplicate_reply`).
    pub duplicate_replies: u64,
    /// Replies from the backend's IP address but another port, which match no flow.
    pub stray_replies: u64,
    /// Datagrams to the backend that the shell could not send (EMSGSIZE, ENOBUFS, ...).
    pub send_failures: u64,
    /// Flows moved off it on their next datagram because it was Down or ejected
    /// (`on_backend_down = "reselect"`).
    pub flows_reselected: u64,
    /// Replies dropped by the cluster's amplification cap.
    pub amplification_drops: u64,
    /// How long its replies took: with `responses` counted per request, from each request to
    /// the reply that completes it; otherwise from the first request of a wait for a reply to
    /// the reply that ends the wait.
    pub reply_latency: LatencyHistogram,
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, in microseconds: 250 µs to 10 s, about
/// 2.5 per decade, which covers a loopback DNS answer and a reply just inside a long
/// `idle_timeout.back` alike.
pub const LATENCY_BOUNDS_MICROS: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A histogram of durations with fixed buckets ([`LATENCY_BOUNDS_MICROS`], then one for
/// anything longer): recording is a few comparisons and additions, never an allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket (not cumulative): `buckets[i]` counts samples at most
    /// `LATENCY_BOUNDS_MICROS[i]` and over the bound before; the last, those over 10 s.
    pub buckets: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
    /// The sum of every sample, in microseconds.
    pub sum_micros: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|bound| *bound < micros);
        self.buckets[bucket] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }

    pub fn absorb(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.count += other.count;
    }
}

impl BackendStats {
    fn absorb(&mut self, other: &BackendStats) {
        self.requests_answered += other.requests_answered;
        self.replies_written_off += other.replies_written_off;
        self.replies_taken_back += other.replies_taken_back;
        self.duplicate_replies += other.duplicate_replies;
        self.stray_replies += other.stray_replies;
        self.send_failures += other.send_failures;
        self.flows_reselected += other.flows_reselected;
        self.amplification_drops += other.amplification_drops;
        self.reply_latency.absorb(&other.reply_latency);
    }
}

/// What happened to requests refused by a backend before any reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryCounters {
    /// Re-sent once on another backend.
    pub resent: u64,
    /// Not re-sent: no other backend could take the flow.
    pub no_other_backend: u64,
    /// Datagrams not kept for a retry because `retry_buffer_bytes` was spent.
    pub not_kept_over_budget: u64,
    /// Bytes held in retry slots now.
    pub bytes_kept: u64,
}

impl DatagramCounters {
    fn absorb(&mut self, other: &DatagramCounters) {
        self.received += other.received;
        self.bytes_received += other.bytes_received;
        self.passed += other.passed;
        self.bytes_passed += other.bytes_passed;
        for (mine, theirs) in self.drops.iter_mut().zip(&other.drops) {
            *mine += theirs;
        }
    }
}

impl FlowCounters {
    fn absorb(&mut self, other: &FlowCounters) {
        self.created += other.created;
        for (mine, theirs) in self.closed.iter_mut().zip(&other.closed) {
            *mine += theirs;
        }
        self.active += other.active;
        self.retired += other.retired;
    }
}

impl Stats {
    /// Adds another worker's counters to these (listeners by id: workers of one process
    /// share their listener ids).
    pub fn absorb(&mut self, other: &Stats) {
        if self.listeners.len() < other.listeners.len() {
            self.listeners.resize(other.listeners.len(), ListenerStats::default());
        }
        for (mine, theirs) in self.listeners.iter_mut().zip(&other.listeners) {
            mine.client.absorb(&theirs.client);
            mine.backend.absorb(&theirs.backend);
            mine.flows.absorb(&theirs.flows);
            mine.fail_open_flows += theirs.fail_open_flows;
            mine.sources_tracked += theirs.sources_tracked;
            mine.sources_evicted += theirs.sources_evicted;
            for (mine, theirs) in mine.quic_lb.iter_mut().zip(theirs.quic_lb) {
                *mine += theirs;
            }
        }
        self.unattributed.absorb(&other.unattributed);
        self.flows.absorb(&other.flows);
        self.retries.resent += other.retries.resent;
        self.retries.no_other_backend += other.retries.no_other_backend;
        self.retries.not_kept_over_budget += other.retries.not_kept_over_budget;
        self.retries.bytes_kept += other.retries.bytes_kept;
        if self.backends.len() < other.backends.len() {
            self.backends.resize(other.backends.len(), BackendStats::default());
        }
        for (mine, theirs) in self.backends.iter_mut().zip(&other.backends) {
            mine.absorb(theirs);
        }
    }

    /// Client datagrams dropped for `reason`, summed over every listener.
    pub fn client_drops(&self, reason: DropReason) -> u64 {
        self.listeners.iter().map(|l| l.client.dropped(reason)).sum()
    }

    /// Backend datagrams dropped for `reason`, summed over every listener.
    pub fn backend_drops(&self, reason: DropReason) -> u64 {
        self.listeners.iter().map(|l| l.backend.dropped(reason)).sum()
    }
}
