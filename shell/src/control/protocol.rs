//! The control protocol, shared by the server ([`super::server`]) and `udplb ctl`
//! ([`super::ctl`]): JSON lines over a unix stream socket.
//!
//! A client writes one [`Request`] per line and reads one [`Response`] per line, in order.
//! `watch` is the exception: its response is followed by one [`WatchEvent`] per line for as
//! long as the connection stays open. Field names are part of the contract (scripts read them
//! with `--json`), so fields are only ever added, and optional ones are left out when empty.
//!
//! ```text
//! → {"command":"show","what":"backends"}
//! ← {"ok":true,"backends":[{"cluster":"dns","id":"a","address":"10.0.0.1:53","health":"up",...}]}
//! → {"command":"backend","cluster":"dns","id":"a","action":"weight","weight":5}
//! ← {"ok":true,"message":"dns/a: weight 5"}
//! → {"command":"listener","name":"dns","action":"drain"}
//! ← {"ok":true,"message":"dns: draining, 12 flows remaining"}
//! → {"command":"show","what":"flow","client":"192.0.2.7:40000"}
//! ← {"ok":true,"flows":[...],"explanations":[...]}
//! → {"command":"flow","client":"192.0.2.7","action":"close"}
//! ← {"ok":true,"message":"closed 2 flows of 192.0.2.7","flows":[...]}
//! → {"command":"watch"}
//! ← {"ok":true,"watching":true}
//! ← {"time":"2026-12-03T04:10:11.123Z","event":"backend_health","cluster":"dns","backend":"a","from":"up","to":"down","code":"L4CON","uptime_ms":81234}
//! ```

use serde::{Deserialize, Serialize};

/// Longest request line the server reads, in bytes; a longer one closes the connection.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Flows listed by `show flows` when the request sets no `limit`: the table can hold
/// millions, and one response line must stay small enough to hold in memory twice.
pub const DEFAULT_FLOW_LIMIT: usize = 1000;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Read state. `client` is required for `what = "flow"`: an address with a port (that
    /// client socket) or without one (every flow of that host).
    Show {
        what: ShowWhat,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// Most flows to list (`show flows`); absent: [`DEFAULT_FLOW_LIMIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Change one backend's admin state or weight. `weight` is required with `action = "weight"`.
    Backend {
        cluster: String,
        id: String,
        action: BackendAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<u32>,
    },
    /// Drain a listener (no new flows; existing flows end by their own teardown, or at its
    /// `drain_timeout`) or resume it.
    Listener { name: String, action: ListenerAction },
    /// Act on a client's live flows: `close` ends them now (close reason `aborted`); the
    /// client's next datagram starts a new flow. `client` as in `show flow`.
    Flow { client: String, action: FlowAction },
    /// Re-read the configuration file, exactly as SIGHUP does.
    Reload,
    /// Stream events on this connection until it closes.
    Watch,
    /// A new udplb (`udplb run --takeover`, process `pid`) asks for this one's sockets and
    /// state: the answer is not a JSON line but the handover itself (`crate::handover`).
    Handover { pid: u32, protocol: u32 },
}

/// What `show` lists.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowWhat {
    Listeners,
    Clusters,
    Backends,
    Flows,
    /// The live flows of one client, and why each went where it went.
    Flow,
}

/// What `backend` does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAction {
    Pause,
    Resume,
    Enable,
    Disable,
    Drain,
    Weight,
    /// Close every live flow on the backend now (close reason `aborted`); its state and new
    /// flows are not affected (`disable` or `drain` first to keep clients away).
    CloseFlows,
}

/// What `flow` does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    Close,
}

/// What `listener` does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerAction {
    Drain,
    Resume,
}

/// The answer to one request. `ok` says whether it succeeded; on failure `error` says why.
/// Exactly one of the other fields is set on success, depending on the request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<ListenerView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<ClusterView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<BackendView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<FlowView>>,
    /// Live flows in all (`show flows` lists at most `limit` of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows_total: Option<u64>,
    /// `show flow`: why each of the client's flows went where it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanations: Option<Vec<FlowExplanation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watching: Option<bool>,
}

impl Response {
    pub fn ok() -> Response {
        Response { ok: true, ..Response::default() }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), ..Response::default() }
    }

    pub fn message(message: impl Into<String>) -> Response {
        Response { message: Some(message.into()), ..Response::ok() }
    }
}

/// One listener (VIP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    pub name: String,
    pub address: String,
    pub cluster: String,
    /// `client_address_port` or `client_address`.
    pub affinity: String,
    /// `unknown`, `up` or `down`, derived from the cluster's backends.
    pub state: String,
    pub draining: bool,
    /// Flows alive (retired ones included): while draining, the flows remaining.
    pub flows: u64,
    pub flows_retired: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
}

/// One cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub name: String,
    pub algorithm: String,
    /// The selection fingerprint, 16 hex digits: instances that must agree show the same.
    pub fingerprint: String,
    pub backends: usize,
    /// Backends that may take new flows now.
    pub eligible: usize,
    /// In an all-down episode: new flows fail open or are dropped.
    pub all_down: bool,
    pub fail_open: bool,
    pub listeners: Vec<String>,
}

/// One backend: its health, admin state and recent history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub cluster: String,
    pub id: String,
    pub address: String,
    /// `unknown`, `up` or `down`.
    pub health: String,
    /// `enabled`, `paused`, `disabled` or `draining`.
    pub admin: String,
    pub eligible: bool,
    pub weight: u32,
    /// Live flows pinned to it.
    pub flows: u64,
    /// The hysteresis counter, such as `3/3` (HAProxy model: health out of full health) or
    /// `+2/2` (consecutive model: passes of rise; `-1/3`: failures of fall).
    pub counter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_code: Option<String>,
    /// Milliseconds since the last check completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_ms_ago: Option<u64>,
    /// The last transitions, oldest first.
    pub history: Vec<HistoryView>,
}

/// One remembered change of a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryView {
    /// Milliseconds since the change.
    pub ms_ago: u64,
    /// `health up -> down (L4CON)`, `admin enabled -> paused`, `restarted down -> unknown`.
    pub change: String,
}

/// One live flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    /// The flow's serial number (the PPv2 UNIQUE_ID, when sent): unique within its worker.
    pub flow: u64,
    /// The worker whose table holds it (0: the leader, or the only worker).
    #[serde(default)]
    pub worker: u32,
    pub listener: String,
    /// The address the client sent to: the listener's, or on a wildcard listener the one
    /// it used (its replies leave from it).
    #[serde(default)]
    pub vip: String,
    /// The client: the sender, or the client a trusted upstream's PROXY v2 header named.
    pub client: String,
    /// The trusted upstream balancer the client came through (replies go there), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub cluster: String,
    pub backend: String,
    pub backend_address: String,
    pub age_ms: u64,
    pub requests: u32,
    pub responses: u32,
    pub retired: bool,
}

/// Why a flow went to its backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowExplanation {
    pub flow: u64,
    /// The worker whose table holds the flow.
    #[serde(default)]
    pub worker: u32,
    /// The cluster's algorithm when the flow was admitted.
    pub algorithm: String,
    pub affinity: String,
    /// The flow key as the listener's affinity builds it: the VIP and the client address,
    /// with or without its port. Consistent-hash algorithms hash this key.
    pub key: String,
    /// The rule that chose the backend, in words: the algorithm and what it used (the key
    /// for consistent hashing), the pool, and fail-open, a re-send after a refusal, or a move
    /// off a backend that went down.
    #[serde(default)]
    pub rule: String,
    /// When the flow was admitted (ISO 8601, UTC).
    #[serde(default)]
    pub admitted_at: String,
    /// The chosen backend's pool at admission, and whether it was a backup.
    #[serde(default)]
    pub pool: u16,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub reselected: bool,
    /// In a cluster with `quic_lb`: `routed` (its first datagram's connection ID named the
    /// backend's server ID), or why it was unroutable (`not_quic`, `unknown_config`,
    /// `too_short`, `unknown_server`, `server_down`) and the algorithm placed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_lb: Option<String>,
    /// The cluster's table fingerprint when the flow was admitted: its first 8 hex digits.
    #[serde(default)]
    pub fingerprint_at_admission: String,
    /// The cluster's table fingerprint now (16 hex digits).
    pub fingerprint: String,
    /// The cluster's algorithm now, if a reload changed it since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_now: Option<String>,
    /// The backend's state now (at admission it was eligible, or fail-open chose it).
    pub backend_health_now: String,
    pub backend_admin_now: String,
    pub backend_eligible_now: bool,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadView {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub listeners_updated: Vec<String>,
    pub clusters_added: Vec<String>,
    pub clusters_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub health_restarted: Vec<String>,
    pub flows_closed: u64,
    /// Applied, but something needs attention (a listener that could not be opened, a
    /// setting that takes effect only at the next start).
    pub warnings: Vec<String>,
}

/// An event as it goes on the wire: the [`WatchEvent`]'s fields and `time`, the wall-clock
/// time udplb sent it, in ISO 8601 UTC with milliseconds (`2026-12-03T04:10:11.123Z`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(flatten)]
    pub event: WatchEvent,
}

/// An event streamed to `watch`ers. `uptime_ms` is the time since udplb started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    BackendHealth {
        cluster: String,
        backend: String,
        from: String,
        to: String,
        code: String,
        uptime_ms: u64,
    },
    BackendAdmin {
        cluster: String,
        backend: String,
        from: String,
        to: String,
        uptime_ms: u64,
    },
    BackendDrained {
        cluster: String,
        backend: String,
        uptime_ms: u64,
    },
    /// Outlier detection took the backend out for `for_ms`.
    BackendEjected {
        cluster: String,
        backend: String,
        for_ms: u64,
        uptime_ms: u64,
    },
    BackendReadmitted {
        cluster: String,
        backend: String,
        uptime_ms: u64,
    },
    /// The backend did something the datapath had to drop (`stray_reply`, `send_failed`),
    /// `count` times since the last such event.
    BackendFault {
        cluster: String,
        backend: String,
        fault: String,
        count: u64,
        uptime_ms: u64,
    },
    ClusterAllDown {
        cluster: String,
        uptime_ms: u64,
    },
    ClusterRecovered {
        cluster: String,
        uptime_ms: u64,
    },
    /// A listener's state (`unknown`, `up`, `down`) as its clients would see it.
    ListenerState {
        listener: String,
        state: String,
        uptime_ms: u64,
    },
    ListenerDraining {
        listener: String,
        flows_remaining: u64,
        uptime_ms: u64,
    },
    ListenerDrained {
        listener: String,
        uptime_ms: u64,
    },
    ListenerResumed {
        listener: String,
        uptime_ms: u64,
    },
    /// Events were lost before reaching this watcher (the server's queue was full).
    EventsLost {
        count: u64,
    },
    /// The last line a watcher gets when it reads too slowly: the server closes it.
    WatcherDropped {
        reason: String,
    },
}
