//! The flow manager: admission, the flow table, teardown, drain and NAT return.
//!
//! A flow is one client's conversation through one listener with one backend. It is keyed by
//! the listener's VIP address and the client address (with or without the client port, per
//! the listener's `affinity`), lives in a slab slot, and owns one upstream. The life of a flow
//! and the meaning of every teardown knob are described in `docs/architecture.md`
//! ("Flow lifecycle").

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{Affinity, Config, OnBackendDown, ProxyProtocolConfig, ValidationError};
use crate::health::{AdminState, Health};
use crate::id::{BackendId, ClusterId, FlowId, ListenerId};
use crate::outcome::{CloseReason, DropReason, PassiveFailure};
use crate::select::{Candidate, Selector};
use crate::stats::Stats;
use crate::time::Instant;
use crate::timer::{DeadlineIndex, TimerHandle};

mod backends;
mod control;
mod datapath;
mod entry;
mod invariants;
mod key;
mod passive;
mod quic;
mod reload;
mod retry;
mod snapshot;
mod sources;
mod table;

pub use crate::outcome::QuicRoute;
pub use invariants::InvariantViolation;
pub use reload::ReloadSummary;

use entry::Teardown;
use key::KeyedHasher;
use table::FlowTable;

/// Bytes a caller must leave free in front of every client datagram it hands to the core,
/// so a PROXY v2 header can be written in place (see [`ClientDatagram`]).
pub const DATAGRAM_HEADROOM: usize = 128;

const _: () = assert!(DATAGRAM_HEADROOM >= crate::proxy_v2::MAX_PROXY_HEADER_LEN);

/// The two keys the core hashes with. Both are injected: the core has no randomness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// Shared by every instance that must agree on selection (consistent-hash tables,
    /// random picks, probe jitter). Same key, same configuration → same decisions.
    pub selection: [u8; 32],
    /// Secret to this process: keys the flow-table hash so that spoofed floods cannot aim at
    /// hash collisions. The shell draws it from the operating system at start.
    pub table: [u8; 16],
    /// The first 8 bytes of every PROXY v2 UNIQUE_ID this worker sends (the flow's serial
    /// follows): different for every worker of every process, so that IDs never repeat across
    /// workers or restarts. The shell draws 6 random bytes at start and appends the worker's
    /// number.
    pub unique: [u8; 8],
}

impl Keys {
    /// Both keys derived from one seed (for tests and the simulator; not secret).
    pub fn from_seed(seed: u64) -> Keys {
        // SplitMix64: a tiny, well-known generator, enough to spread one seed over 48 bytes.
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut selection = [0u8; 32];
        for chunk in selection.chunks_exact_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let mut table = [0u8; 16];
        for chunk in table.chunks_exact_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let unique = next().to_le_bytes();
        Keys { selection, table, unique }
    }
}

/// A client datagram as the shell received it.
///
/// `buffer[..headroom]` is free space; the payload is `buffer[headroom..]`. If the core adds
/// a PROXY v2 header it writes it into the end of the headroom, so the bytes to send are
/// `buffer[headroom - prefix_len..]` and nothing is copied. `headroom` should be
/// [`DATAGRAM_HEADROOM`].
#[derive(Debug)]
pub struct ClientDatagram<'a> {
    /// The listener (VIP) it arrived on.
    pub listener: ListenerId,
    /// The client's address as seen by the listener socket.
    pub client: SocketAddr,
    /// The address the client sent to, when the shell knows it (IP_PKTINFO): on a wildcard
    /// listener (`0.0.0.0`, `[::]`) it names the VIP the client used, which keys its flow,
    /// goes in its PROXY header and is where its replies leave from. Ignored on a listener
    /// bound to one address, which is always its own; `None` on a wildcard listener leaves the
    /// wildcard in its place.
    pub local: Option<IpAddr>,
    /// Headroom followed by the payload.
    pub buffer: &'a mut [u8],
    /// Length of the free space in front of the payload.
    pub headroom: usize,
    /// The shell's buffer was too small for the datagram (MSG_TRUNC).
    pub truncated: bool,
}

/// The verdict on a client datagram (and on [`FlowManager::accept`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Send `buffer[headroom + skip - prefix_len..]` on `flow`'s upstream: `skip` bytes of the
    /// payload (a PROXY v2 header from a trusted upstream, see `accept_proxy`) left out and
    /// `prefix_len` bytes of PROXY header for the backend put in front. `closes`: the flow
    /// ended with this datagram (it owes no reply); its `CloseUpstream` output follows, to
    /// act on after the send.
    Forward { flow: FlowId, prefix_len: usize, skip: usize, closes: bool },
    /// The datagram starts a new flow, not booked yet: open its upstream, then confirm with
    /// [`FlowManager::accept`] (which returns the `Forward`) or report the failure with
    /// [`FlowManager::refuse`].
    Open(Incoming),
    /// Do not send; the reason is counted.
    Drop(DropReason),
}

/// A new flow the core has decided on (admitted, its backend selected, its PROXY header
/// written) but not booked: a flow exists only once its upstream does.
///
/// The caller opens an upstream for [`Incoming::flow`] towards [`Incoming::address`] and
/// hands the `Incoming` back, before any other input: to [`FlowManager::accept`] if the
/// upstream is open, to [`FlowManager::refuse`] if it could not be. An `Incoming` whose id or
/// key was taken meanwhile (another flow booked in its slot or with its serial, or for its
/// client) is refused as `upstream_open_failed`, and the caller closes the upstream it opened;
/// flows that merely closed in between (a re-send staged while the same input took its old
/// backend down) do not make it stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    flow: FlowId,
    listener: ListenerId,
    backend: BackendId,
    address: SocketAddr,
    client: SocketAddr,
    /// The address the client sent to (see [`ClientDatagram::local`]).
    local: SocketAddr,
    hash: u64,
    /// Narrow types keep `Incoming` (and the `Output::Resend` that carries one) small: a
    /// header is at most `MAX_PROXY_HEADER_LEN` bytes, a datagram at most 65,535.
    prefix_len: u16,
    payload_len: u32,
    fail_open: bool,
    /// A request refused by another backend, re-sent on this new flow.
    resend: bool,
    /// How the backend was chosen, kept by the flow.
    decision: Decision,
    /// The trusted upstream the client came through (replies go there), if any.
    via: Option<SocketAddr>,
    /// Bytes of the payload's front the datagram leaves out (see [`Incoming::skip`]).
    skip: u16,
}

impl Incoming {
    /// The id the flow will have; upstreams are named by it.
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// The listener the flow's client came through.
    pub fn listener(&self) -> ListenerId {
        self.listener
    }

    /// The backend selected for the flow.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// Where the upstream sends: the backend's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The client the flow serves.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The address the client sent to: the listener's, or on a wildcard listener the one
    /// the datagram named.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Bytes of PROXY header in front of the payload of the datagram to send.
    pub fn prefix_len(&self) -> usize {
        usize::from(self.prefix_len)
    }

    /// Bytes at the front of the received payload the datagram to send leaves out (a trusted
    /// upstream's PROXY v2 header).
    pub fn skip(&self) -> usize {
        usize::from(self.skip)
    }

    /// Where, in a buffer whose payload starts at `headroom`, the datagram to send starts.
    pub fn datagram_start(&self, headroom: usize) -> usize {
        (headroom + self.skip()).saturating_sub(self.prefix_len())
    }
}

/// The verdict on a backend datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendVerdict {
    /// Send the payload to `client` from `listener`'s socket, with `local` (the address the
    /// client sent to) as its source: on a wildcard listener the kernel would otherwise pick
    /// one, and a client that checks where replies come from would drop it.
    Return { listener: ListenerId, client: SocketAddr, local: SocketAddr },
    /// Do not send; the reason is counted.
    Drop(DropReason),
}

/// Control outputs, drained with [`FlowManager::poll_output`] after every call, once the
/// caller has acted on the call's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Close `flow`'s upstream; the flow has ended for `reason`.
    CloseUpstream { flow: FlowId, reason: CloseReason },
    /// A request refused by another backend, to re-send once on a new flow: open an upstream
    /// for `incoming` as for [`ClientVerdict::Open`], confirm it with
    /// [`FlowManager::accept`]`(now, incoming, &datagram)`, and send `datagram` (its PROXY
    /// header included, if due) on it.
    Resend { incoming: Incoming, datagram: Vec<u8> },
    /// Evidence about a backend's health, for the health monitor.
    PassiveFailure { backend: BackendId, failure: PassiveFailure },
    /// `answered` requests got every reply they were owed from `backend` (counted only where
    /// `responses` is set), for the health monitor's outlier detection. Not sent per reply:
    /// the flow manager keeps a tally per backend and hands it over just before a passive
    /// failure of that backend, on the first answer after one, and every 32 answers, so the
    /// monitor sees successes and failures in the order they happened.
    PassiveSuccess { backend: BackendId, answered: u32 },
    /// Something an operator may want to see.
    Event(Event),
}

/// Notable state changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The listener stopped taking new flows.
    ListenerDraining { listener: ListenerId, flows_remaining: u64 },
    /// A draining listener has no flows left (all ended, or `drain_timeout` closed them).
    ListenerDrained { listener: ListenerId },
    /// A draining listener takes new flows again.
    ListenerResumed { listener: ListenerId },
    /// A draining backend has no flows left.
    BackendDrained { backend: BackendId },
    /// The backend did something the datapath had to drop: replies from another port
    /// (`stray_reply`) or sends that failed on its path (`send_failed`). Reported at most once
    /// per backend and kind every [`FAULT_REPORT_INTERVAL`], with how many happened since the
    /// last report (`count`, this one included), so a log line names the backend without
    /// flooding.
    BackendFault { backend: BackendId, failure: PassiveFailure, count: u64 },
}

/// At most one [`Event::BackendFault`] per backend and kind in this long.
pub const FAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Errors on the path from the backend side that the shell reports for a flow.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// ICMP port unreachable / ECONNREFUSED: the flow closes (`UpstreamRefused`).
    Refused,
    /// ICMP host or network unreachable: the flow closes (`UpstreamUnreachable`).
    Unreachable,
    /// A forwarded datagram could not be sent (ENOBUFS, EAGAIN, ...): the datagram counts
    /// as dropped (`SendFailed`) instead of forwarded; the flow stays.
    SendFailed,
}

/// Operator commands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Take no new flows on the listener; existing flows end by their own teardown, and
    /// whatever remains after `drain_timeout` closes with `Drained`.
    DrainListener(ListenerId),
    /// Cancel a drain: take new flows again.
    ResumeListener(ListenerId),
    /// Close one flow now (`Aborted`).
    CloseFlow(FlowId),
    /// Close every flow now (`Shutdown`).
    CloseAll,
}

/// Why an admin command was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no such listener: {0}")]
    UnknownListener(ListenerId),
    #[error("no such flow: {0}")]
    UnknownFlow(FlowId),
    #[error("{0} is not draining")]
    NotDraining(ListenerId),
    #[error("no such backend: {0}")]
    UnknownBackend(BackendId),
    #[error("weight {0} is over the maximum of {max}", max = crate::config::MAX_WEIGHT)]
    WeightTooLarge(u32),
    #[error("{backend} is {state}; only a paused backend can be resumed")]
    NotPaused { backend: BackendId, state: crate::health::AdminState },
}

/// What the core knows about one live flow (for status output and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub flow: FlowId,
    pub listener: ListenerId,
    pub backend: BackendId,
    /// Where replies go.
    pub client: SocketAddr,
    /// The address the client sent to (the listener's, or on a wildcard listener the one its
    /// first datagram named): where replies leave from.
    pub local: SocketAddr,
    pub created: Instant,
    /// Client datagrams forwarded.
    pub requests: u32,
    /// Backend datagrams returned.
    pub responses: u32,
    /// Reached `requests`: takes no new client datagrams, still returns owed replies.
    pub retired: bool,
    /// How its backend was chosen when it was admitted.
    pub admission: Admission,
    /// The trusted upstream balancer the client's latest datagram came through, where replies
    /// go; `client` is the client its PROXY v2 header named. `None`: the client itself.
    pub via: Option<SocketAddr>,
}

/// How a flow's backend was chosen, as recorded when the flow was admitted: `show flow`
/// explains the decision, not today's state (a reload may have changed the algorithm since, a
/// backend may have left its pool, the table may have been rebuilt).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The cluster's algorithm then.
    pub algorithm: crate::config::Algorithm,
    /// The tier new flows went to: the chosen backend's pool (saturating at 65,535), and
    /// whether it was a backup (no primary backend qualified).
    pub pool: u16,
    pub backup: bool,
    /// Chosen in fail-open: no backend was eligible, so health was ignored.
    pub fail_open: bool,
    /// A re-send: another backend refused the flow's first datagram (`retry_on_refused`).
    pub retry: bool,
    /// The client's earlier flow was on a backend that went Down or was ejected, and
    /// `on_backend_down = "reselect"` moved the client to this new flow.
    pub reselected: bool,
    /// The high 32 bits of the cluster's selection fingerprint then (`show clusters` shows
    /// all 64 bits of today's).
    pub fingerprint_high: u32,
    /// In a cluster with `quic_lb`: whether the flow's first datagram was routed by its
    /// connection ID, or why not (then `algorithm` placed it). `None` without `quic_lb`.
    pub quic: Option<QuicRoute>,
}

/// [`Admission`] as a flow keeps it: eight bytes (the retry flag is the flow's own).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    fingerprint_high: u32,
    pool: u16,
    flags: u8,
    algorithm: crate::config::Algorithm,
}

impl Decision {
    const BACKUP: u8 = 1;
    const FAIL_OPEN: u8 = 2;
    const RESELECTED: u8 = 4;
    /// Bits 3 to 5: the [`QuicRoute`] (0: the cluster has no `quic_lb`).
    const QUIC_SHIFT: u8 = 3;

    /// The decision `selection` made in `cluster`; `reselected` for a client moved off a
    /// backend that went down.
    fn of(
        cluster: &Cluster,
        selection: &crate::select::Selection,
        reselected: bool,
        quic: Option<QuicRoute>,
    ) -> Decision {
        let candidate = cluster.candidates.get(selection.candidate);
        let mut flags = 0;
        if candidate.is_some_and(|c| c.backup) {
            flags |= Self::BACKUP;
        }
        if selection.fail_open {
            flags |= Self::FAIL_OPEN;
        }
        if reselected {
            flags |= Self::RESELECTED;
        }
        if let Some(route) = quic {
            flags |= route.to_bits() << Self::QUIC_SHIFT;
        }
        Decision {
            fingerprint_high: (cluster.selector.fingerprint() >> 32) as u32,
            pool: candidate.map_or(0, |c| u16::try_from(c.pool).unwrap_or(u16::MAX)),
            flags,
            algorithm: cluster.algorithm,
        }
    }

    fn admission(self, retry: bool) -> Admission {
        Admission {
            algorithm: self.algorithm,
            pool: self.pool,
            backup: self.flags & Self::BACKUP != 0,
            fail_open: self.flags & Self::FAIL_OPEN != 0,
            retry,
            reselected: self.flags & Self::RESELECTED != 0,
            fingerprint_high: self.fingerprint_high,
            quic: QuicRoute::from_bits((self.flags >> Self::QUIC_SHIFT) & 0b111),
        }
    }
}

/// Runtime state of a listener.
#[derive(Debug)]
struct Listener {
    name: String,
    address: SocketAddr,
    cluster: ClusterId,
    affinity: Affinity,
    max_flows: u32,
    max_datagram_size: usize,
    /// `empty_datagrams = "drop"`.
    drops_empty: bool,
    /// `source_limits`, with the sources it tracks.
    sources: Option<sources::SourceTable>,
    /// `accept_proxy`: trusted upstreams whose PROXY v2 headers name the client.
    accept_proxy: Option<crate::config::AcceptProxyConfig>,
    drain_timeout: Option<Duration>,
    drain: DrainState,
    /// Gone from the configuration; the id is never reused.
    removed: bool,
    /// Flows alive when a reload last set `max_flows`: a lowered cap sheds new flows but
    /// never closes existing ones, so until they end the count may exceed the cap.
    flows_at_cap_change: u64,
}

impl Listener {
    /// The address a client of this listener sent to: its own, or on a wildcard listener the
    /// datagram's destination when the shell read it (see [`ClientDatagram::local`]).
    fn vip(&self, local: Option<IpAddr>) -> SocketAddr {
        match local {
            Some(ip) if self.address.ip().is_unspecified() => SocketAddr::new(ip, self.address.port()),
            _ => self.address,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum DrainState {
    Active,
    /// Draining: no new flows. `timer` is armed while `drain_timeout` is set and flows
    /// remain; `drained` once the last flow has ended (reported with `ListenerDrained`).
    Draining {
        timer: Option<TimerHandle>,
        drained: bool,
    },
}

/// Runtime state of a cluster.
#[derive(Debug)]
struct Cluster {
    name: String,
    algorithm: crate::config::Algorithm,
    maglev_table_size: u32,
    /// Backends in canonical order (by id), as the selector sees them.
    candidates: Vec<Candidate>,
    selector: Selector,
    teardown: Teardown,
    proxy_protocol: ProxyProtocolConfig,
    retry_on_refused: bool,
    on_backend_down: OnBackendDown,
    fail_open: bool,
    backend_drain_timeout: Option<Duration>,
    amplification: Option<crate::config::AmplificationConfig>,
    /// With a `quic_lb` table: its configurations and the backends' server IDs.
    quic_lb: Option<quic::QuicRouting>,
    /// The last reload set a cap where there was none (see `settle_flows_after_reload`).
    cap_started: bool,
    /// Gone from the configuration; the id is never reused.
    removed: bool,
}

/// Runtime state of a backend. Its identity is (cluster, id, address): a reload that keeps
/// all three keeps the `BackendId`, its flows and its health.
#[derive(Debug)]
struct Backend {
    name: String,
    address: SocketAddr,
    cluster: ClusterId,
    /// Gone from the configuration; the id is never reused.
    removed: bool,
    /// The health view, as the health monitor last reported it.
    health: Health,
    admin: AdminState,
    /// Live flows pinned to this backend (mirrored into its candidate, which the
    /// least-flows algorithms read).
    flows: u64,
    /// Position of its candidate in its cluster's list.
    candidate: usize,
    /// A draining backend whose last flow ended has been reported drained.
    drained_reported: bool,
    /// While it drains with flows left and its cluster sets `backend_drain_timeout`: when
    /// the flows left close.
    drain_timer: TimerHandle,
    /// Passive signals not yet handed to the monitor (see `passive.rs`).
    passive: passive::Tally,
    /// Its fastest recent reply, to tell a reply lost from one in flight.
    reply_time: passive::FastestReply,
}

/// What a timer entry belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TimerKey {
    Flow { slot: u32 },
    ListenerDrain(ListenerId),
    BackendDrain(BackendId),
}

/// The datapath half of the core, for one worker.
///
/// See the crate documentation for the calling convention.
#[derive(Debug)]
pub struct FlowManager {
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    backends: Vec<Backend>,
    /// Keys the affinity hash that consistent-hash selection uses.
    selection_hasher: KeyedHasher,
    /// The shared selection key, for building selectors.
    selection_key: [u8; 32],
    /// Keys the per-source tables' hashes (the flow table's key; the sources hash under a
    /// tag of their own).
    source_key: [u8; 16],
    /// [`Keys::unique`]: the first half of every UNIQUE_ID.
    unique_prefix: [u8; 8],
    table: FlowTable,
    timers: DeadlineIndex<TimerKey>,
    outputs: VecDeque<Output>,
    stats: Stats,
    max_flows: u32,
    /// As `Listener::flows_at_cap_change`, for the process-wide cap.
    flows_at_cap_change: u64,
    retry_slots: retry::RetryBudget,
    next_serial: u64,
    /// The latest time seen; time never runs backwards inside the core.
    now: Instant,
    /// The `now` of the latest `handle_timeout`: nothing may be due at or before it.
    timeouts_handled_until: Option<Instant>,
}

impl FlowManager {
    /// Builds a flow manager for a configuration (validated first).
    pub fn new(config: &Config, keys: Keys) -> Result<FlowManager, Vec<ValidationError>> {
        let mut selection_key = [0u8; 16];
        selection_key.copy_from_slice(&keys.selection[..16]);
        let mut manager = FlowManager {
            listeners: Vec::new(),
            clusters: Vec::new(),
            backends: Vec::new(),
            selection_hasher: KeyedHasher::new(selection_key),
            selection_key: keys.selection,
            unique_prefix: keys.unique,
            table: FlowTable::new(KeyedHasher::new(keys.table)),
            source_key: keys.table,
            timers: DeadlineIndex::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            max_flows: config.process.max_flows(),
            flows_at_cap_change: 0,
            retry_slots: retry::RetryBudget::new(u64::from(config.process.retry_buffer_bytes())),
            next_serial: 1,
            now: Instant::ZERO,
            timeouts_handled_until: None,
        };
        manager.apply_config(Instant::ZERO, config)?;
        // Building is not a reload: nothing to report.
        manager.outputs.clear();
        Ok(manager)
    }

    /// The next control output, or `None` when there is nothing left. Call after every input
    /// until it returns `None`, and before acting on the input's verdict.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest time at which [`FlowManager::handle_timeout`] has work, or `None`. Ask
    /// again after every call: any input may change it. Calling `handle_timeout` earlier is
    /// harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// A listener's source table, if it has `source_limits`: the sources tracked now and how
    /// many were forgotten to make room.
    pub fn listener_sources(&self, listener: ListenerId) -> Option<(usize, u64)> {
        let sources = self.listeners.get(listener.0 as usize)?.sources.as_ref()?;
        Some((sources.len(), sources.evictions))
    }

    /// Whether the listener's cluster routes QUIC connection IDs (`quic_lb`).
    pub fn listener_routes_quic(&self, listener: ListenerId) -> bool {
        self.listeners
            .get(listener.0 as usize)
            .and_then(|l| self.clusters.get(l.cluster.0 as usize))
            .is_some_and(|c| c.quic_lb.is_some())
    }

    /// Every counter.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The listener with this name.
    pub fn listener_id(&self, name: &str) -> Option<ListenerId> {
        self.listeners.iter().position(|l| l.name == name && !l.removed).map(|i| ListenerId(i as u32))
    }

    /// The backend with this id in this cluster.
    pub fn backend_id(&self, cluster: &str, backend: &str) -> Option<BackendId> {
        let cluster = self.clusters.iter().find(|c| c.name == cluster && !c.removed)?;
        cluster.candidates.iter().map(|c| c.backend).find(|id| self.backends[id.0 as usize].name == backend)
    }

    /// The PROXY v2 UNIQUE_ID of the flow with serial `serial`: this worker's prefix, then the
    /// serial, big-endian.
    pub fn unique_id(&self, serial: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.unique_prefix);
        id[8..].copy_from_slice(&serial.to_be_bytes());
        id
    }

    /// A listener's affinity: what keys its flows (and, with several workers, steers its
    /// clients to a worker: [`crate::steer`]).
    pub fn listener_affinity(&self, listener: ListenerId) -> Option<Affinity> {
        self.listeners.get(listener.0 as usize).map(|l| l.affinity)
    }

    /// A listener's name and VIP address.
    pub fn listener(&self, listener: ListenerId) -> Option<(&str, SocketAddr)> {
        self.listeners.get(listener.0 as usize).map(|l| (l.name.as_str(), l.address))
    }

    /// A backend's id (within its cluster) and address.
    pub fn backend(&self, backend: BackendId) -> Option<(&str, SocketAddr)> {
        self.backends.get(backend.0 as usize).map(|b| (b.name.as_str(), b.address))
    }

    /// One live flow, or `None` if it has ended.
    pub fn flow(&self, flow: FlowId) -> Option<FlowInfo> {
        self.table.resolve(flow).map(|slot| self.flow_info(slot))
    }

    /// Every live flow, in slot order.
    pub fn flows(&self) -> impl Iterator<Item = FlowInfo> + '_ {
        self.table.iter().map(|(slot, _)| self.flow_info(slot))
    }

    fn flow_info(&self, slot: u32) -> FlowInfo {
        let flow = self.table.get(slot);
        FlowInfo {
            flow: FlowId { slot, serial: flow.serial },
            listener: flow.listener,
            backend: flow.backend,
            client: flow.client,
            local: SocketAddr::new(flow.local, self.listeners[flow.listener.0 as usize].address.port()),
            created: flow.created,
            requests: flow.requests,
            responses: flow.responses,
            retired: flow.retired,
            admission: flow.decision.admission(flow.retried),
            via: flow.via.as_deref().copied(),
        }
    }

    /// Flows alive on a listener (retired flows included): "draining flows remaining".
    pub fn listener_flows(&self, listener: ListenerId) -> u64 {
        self.stats.listeners.get(listener.0 as usize).map_or(0, |s| s.flows.active)
    }

    /// Whether the listener is draining.
    pub fn is_draining(&self, listener: ListenerId) -> bool {
        self.listeners
            .get(listener.0 as usize)
            .is_some_and(|l| matches!(l.drain, DrainState::Draining { .. }))
    }

    /// The teardown rules of a flow: those of its backend's cluster (a reload may point the
    /// flow's listener at another cluster; the flow stays with the backend it has).
    fn teardown_of(&self, flow: &entry::Flow) -> &Teardown {
        &self.clusters[self.backends[flow.backend.0 as usize].cluster.0 as usize].teardown
    }

    /// Moves the core's clock forward (never backward) and returns the time to use.
    /// Every input calls it first.
    fn observe(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }
}
