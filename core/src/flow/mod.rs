//! The flow manager: admission, the flow table, teardown, drain and NAT return.
//!
//! A flow is one client's conversation through one listener with one backend. It is keyed by
//! the listener's VIP address and the client address (with or without the client port, per
//! the listener's `affinity`), lives in a slab slot, and owns one upstream. The life of a flow
//! and the meaning of every teardown knob are described in `docs/architecture.md`
//! ("Flow lifecycle").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Affinity, Config, ProxyProtocolConfig, ValidationError};
use crate::id::{BackendId, ClusterId, FlowId, ListenerId, UpstreamId};
use crate::outcome::{CloseReason, DropReason};
use crate::select::{Candidate, Selector, identity_hash};
use crate::stats::Stats;
use crate::time::Instant;
use crate::timer::{DeadlineIndex, TimerHandle};

mod control;
mod datapath;
mod entry;
mod invariants;
mod key;
mod table;

pub use invariants::InvariantViolation;

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
        Keys { selection, table }
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
    /// Headroom followed by the payload.
    pub buffer: &'a mut [u8],
    /// Length of the free space in front of the payload.
    pub headroom: usize,
    /// The shell's buffer was too small for the datagram (MSG_TRUNC).
    pub truncated: bool,
}

/// The verdict on a client datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Send `buffer[headroom - prefix_len..]` on `upstream`.
    Forward { flow: FlowId, upstream: UpstreamId, prefix_len: usize },
    /// Do not send; the reason is counted.
    Drop(DropReason),
}

/// The verdict on a backend datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendVerdict {
    /// Send the payload to `client` from `listener`'s socket.
    Return { listener: ListenerId, client: SocketAddr },
    /// Do not send; the reason is counted.
    Drop(DropReason),
}

/// Control outputs, drained with [`FlowManager::poll_output`] after every call and before the
/// caller acts on a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open an upstream towards `address` for `flow`; datagrams the backend sends back on it
    /// are handed to [`FlowManager::handle_backend_datagram`] with `flow`.
    OpenUpstream {
        upstream: UpstreamId,
        flow: FlowId,
        listener: ListenerId,
        backend: BackendId,
        address: SocketAddr,
    },
    /// Close an upstream; its flow has ended for `reason`.
    CloseUpstream { upstream: UpstreamId, flow: FlowId, reason: CloseReason },
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
}

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
}

/// What the core knows about one live flow (for status output and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub flow: FlowId,
    pub listener: ListenerId,
    pub backend: BackendId,
    /// Where replies go.
    pub client: SocketAddr,
    pub created: Instant,
    /// Client datagrams forwarded.
    pub requests: u32,
    /// Backend datagrams returned.
    pub responses: u32,
    /// Reached `requests`: takes no new client datagrams, still returns owed replies.
    pub retired: bool,
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
    drain_timeout: Option<Duration>,
    drain: DrainState,
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
    /// Backends in canonical order (by id), as the selector sees them.
    candidates: Vec<Candidate>,
    selector: Selector,
    teardown: Teardown,
    proxy_protocol: ProxyProtocolConfig,
}

/// Runtime state of a backend.
#[derive(Debug)]
struct Backend {
    name: String,
    address: SocketAddr,
}

/// What a timer entry belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TimerKey {
    Flow { slot: u32 },
    ListenerDrain(ListenerId),
}

/// The datapath half of the core, for one worker.
///
/// See the crate documentation for the calling convention.
#[derive(Debug)]
pub struct FlowManager {
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    backends: Vec<Backend>,
    /// Selection key; the consistent-hash algorithms will need it.
    selection_hasher: KeyedHasher,
    table: FlowTable,
    timers: DeadlineIndex<TimerKey>,
    outputs: VecDeque<Output>,
    stats: Stats,
    max_flows: u32,
    next_serial: u64,
    /// The latest time seen; time never runs backwards inside the core.
    now: Instant,
    /// The `now` of the latest `handle_timeout`: nothing may be due at or before it.
    timeouts_handled_until: Option<Instant>,
    /// The flow whose upstream the latest input asked to open (cleared by the next input).
    opened_this_turn: Option<FlowId>,
}

impl FlowManager {
    /// Builds a flow manager for a validated configuration.
    pub fn new(config: &Config, keys: Keys) -> Result<FlowManager, Vec<ValidationError>> {
        config.validate()?;
        let cluster_ids: Vec<&String> = config.clusters.keys().collect();
        let mut backends = Vec::new();
        let mut clusters = Vec::new();
        for (name, cluster) in &config.clusters {
            let mut members: Vec<_> = cluster.backends.iter().collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            let mut candidates = Vec::with_capacity(members.len());
            for member in members {
                let id = BackendId(backends.len() as u32);
                backends.push(Backend { name: member.id.clone(), address: member.address });
                candidates.push(Candidate {
                    backend: id,
                    identity: identity_hash(&keys.selection, &member.id, member.address),
                    weight: member.weight,
                    pool: member.pool,
                    backup: member.backup,
                    eligible: true,
                    enabled: true,
                    flows: 0,
                });
            }
            let mut selector =
                Selector::new(cluster.algorithm, cluster.maglev_table_size, &keys.selection, name);
            selector.update(&candidates);
            clusters.push(Cluster {
                name: name.clone(),
                candidates,
                selector,
                teardown: Teardown::from_config(cluster),
                proxy_protocol: cluster.proxy_protocol,
            });
        }
        let max_flows = config.process.max_flows();
        let listeners = config
            .listeners
            .iter()
            .map(|(name, listener)| Listener {
                name: name.clone(),
                address: listener.address,
                cluster: ClusterId(
                    // validate() guarantees the cluster exists.
                    cluster_ids.iter().position(|c| **c == listener.cluster).unwrap_or(0) as u32,
                ),
                affinity: listener.affinity,
                max_flows: listener.max_flows.unwrap_or(max_flows).min(max_flows),
                max_datagram_size: listener.max_datagram_size as usize,
                drain_timeout: listener.drain_timeout,
                drain: DrainState::Active,
            })
            .collect::<Vec<_>>();
        let stats = Stats { listeners: vec![Default::default(); listeners.len()], ..Default::default() };
        let mut selection_key = [0u8; 16];
        selection_key.copy_from_slice(&keys.selection[..16]);
        Ok(FlowManager {
            listeners,
            clusters,
            backends,
            selection_hasher: KeyedHasher::new(selection_key),
            table: FlowTable::new(KeyedHasher::new(keys.table)),
            timers: DeadlineIndex::new(),
            outputs: VecDeque::new(),
            stats,
            max_flows,
            next_serial: 1,
            now: Instant::ZERO,
            timeouts_handled_until: None,
            opened_this_turn: None,
        })
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

    /// Every counter.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The listener with this name.
    pub fn listener_id(&self, name: &str) -> Option<ListenerId> {
        self.listeners.iter().position(|l| l.name == name).map(|i| ListenerId(i as u32))
    }

    /// The backend with this id in this cluster.
    pub fn backend_id(&self, cluster: &str, backend: &str) -> Option<BackendId> {
        let cluster = self.clusters.iter().find(|c| c.name == cluster)?;
        cluster.candidates.iter().map(|c| c.backend).find(|id| self.backends[id.0 as usize].name == backend)
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
            created: flow.created,
            requests: flow.requests,
            responses: flow.responses,
            retired: flow.retired,
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

    /// Health view input: whether `backend` may take new flows. Flows already pinned to it
    /// stay. (The health monitor drives this; until it exists, every backend is eligible.)
    pub fn handle_backend_eligibility(&mut self, now: Instant, backend: BackendId, eligible: bool) {
        self.observe(now);
        for cluster in &mut self.clusters {
            for candidate in &mut cluster.candidates {
                if candidate.backend == backend {
                    candidate.eligible = eligible;
                }
            }
            cluster.selector.update(&cluster.candidates);
        }
        self.debug_check();
    }

    /// Moves the core's clock forward (never backward) and returns the time to use.
    /// Every input calls it first; it also ends the previous turn.
    fn observe(&mut self, now: Instant) -> Instant {
        self.opened_this_turn = None;
        self.now = self.now.max(now);
        self.now
    }
}
