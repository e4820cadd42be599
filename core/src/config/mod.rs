//! Configuration: plain data with defaults, the TOML parser and validation.
//!
//! One schema serves the shell's configuration file and a simulator scenario's `[lb]`
//! section, so a scenario tests exactly what an operator deploys. Parsing text is not I/O,
//! so it lives here in the core: the shell reads the file and hands the text to
//! [`Config::from_toml_str`]. Every field and its default is listed in
//! `docs/configuration.md`.
//!
//! Maps are `BTreeMap`s keyed by name: iteration order is the names' order, which is also the
//! order in which the core numbers listeners and clusters. Nothing depends on the order of
//! the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod address;
pub mod duration;
mod error;
pub mod health;
mod locate;
mod parse;
#[cfg(test)]
mod tests;
mod validate;
mod warnings;
mod workers;

pub use address::IpPrefix;
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, FieldPath, Location, PathSegment};
pub use health::{ExpectMatch, HealthConfig, HealthMode, HealthProblem, HysteresisModel, OutlierConfig};

pub use warnings::{ConfigWarning, render_warnings};
pub use workers::{worker_config, worker_share};

pub use validate::{
    IdleSide, MAX_CONTROL_SOCKET_PATH_BYTES, MAX_FLOWS_LIMIT, MAX_NAME_BYTES, MAX_WEIGHT, NameProblem,
    ProxyProtocolOption, ValidationError,
};

/// A whole configuration: process settings, listeners and clusters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings for the whole process.
    #[serde(default)]
    pub process: ProcessConfig,
    /// Listeners by name. A name is 1 to 64 bytes of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`.
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerConfig>,
    /// Clusters by name, with the same rules as listener names.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

/// Settings for the whole process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Most flows alive at once across every listener, retired flows included. `None` lets
    /// the caller choose (the shell derives it from RLIMIT_NOFILE and the ephemeral port
    /// range); the core then uses [`ProcessConfig::DEFAULT_MAX_FLOWS`].
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// Bytes of client datagrams kept, across all flows, so a request refused by one backend
    /// can be re-sent to another (`retry_on_refused`); absent = 4 MiB. A flow keeps at most
    /// its last datagram, and only until its first reply.
    #[serde(default)]
    pub retry_buffer_bytes: Option<u32>,
    /// The selection key, 64 hex digits: instances that must place clients identically
    /// (consistent hashing behind ECMP) share it. Absent: a fixed default, so instances with
    /// the same file agree. It is not secret; the flow-table key, which is, never appears here.
    #[serde(default)]
    pub selection_key: Option<String>,
    /// How the `udplb` binary writes its log.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where the `udplb` binary creates its control socket (a unix stream socket, mode 0600,
    /// for `udplb ctl`). Absent: no control socket. `/run/udplb/control.sock` is the usual
    /// choice under systemd (`RuntimeDirectory=udplb`).
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Where the `udplb` binary serves Prometheus metrics (`GET /metrics`). Absent: no
    /// metrics endpoint.
    #[serde(default, deserialize_with = "address::deserialize_optional")]
    pub metrics_addr: Option<SocketAddr>,
    /// Worker threads of the `udplb` binary, each with its own SO_REUSEPORT listener sockets,
    /// flow table and upstream sockets; one health monitor serves them all. Absent: 1.
    /// `max_flows` is split evenly between them. Changing it needs a restart.
    #[serde(default)]
    pub workers: Option<u32>,
    /// How the `udplb` binary reaches backends: `"pool"` (default) shares each local port
    /// between flows to different backends; `"per_flow"` gives every flow its own connected
    /// socket. Changing it needs a restart. See docs/architecture.md, "Upstream sockets".
    #[serde(default)]
    pub upstream_mode: UpstreamMode,
    /// How long a stop (SIGTERM) may take: listeners drain, flows end by their own rules or
    /// their listener's `drain_timeout`, and whatever is left after this long is closed
    /// (`Shutdown`) so the process exits. Absent: [`ProcessConfig::DEFAULT_STOP_TIMEOUT`].
    #[serde(default, with = "duration::optional")]
    pub stop_timeout: Option<Duration>,
}

/// How the `udplb` binary's upstream sockets are shared between flows.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamMode {
    /// A pool of unconnected sockets: a local port serves at most one flow per backend, and
    /// replies are told apart by (local port, backend address). Few descriptors and ports, and
    /// datagrams to one socket go out in batches.
    #[default]
    Pool,
    /// One connected socket (and one ephemeral port) per flow.
    PerFlow,
}

/// Validation errors on one line each joined by "; ", each with its field path: for logs and
/// messages where no file is at hand (a configuration built in memory).
pub fn render_errors(errors: &[ValidationError]) -> String {
    errors.iter().map(|error| format!("field `{}`: {error}", error.path())).collect::<Vec<_>>().join("; ")
}

impl UpstreamMode {
    /// The name the configuration file uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamMode::Pool => "pool",
            UpstreamMode::PerFlow => "per_flow",
        }
    }
}

/// Log line format of the `udplb` binary.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl ProcessConfig {
    /// The process-wide flow cap when neither the file nor the caller sets one.
    pub const DEFAULT_MAX_FLOWS: u32 = 65_536;

    /// How long a stop may take when the file does not say: under the 30 s systemd gives a
    /// service to stop by default (and `examples/udplb.service` keeps), so udplb closes its
    /// last flows and exits on its own before it would be killed.
    pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(20);

    /// The effective stop bound.
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout.unwrap_or(Self::DEFAULT_STOP_TIMEOUT)
    }

    /// The retry buffer's budget when the file does not set one.
    pub const DEFAULT_RETRY_BUFFER_BYTES: u32 = 4 << 20;

    /// The selection key as bytes (the default when absent or, for an unvalidated config,
    /// malformed).
    pub fn selection_key_bytes(&self) -> [u8; 32] {
        let mut key = *b"udplb default selection key v1..";
        if let Some(text) = &self.selection_key
            && let Ok(bytes) = health::parse_hex(text)
            && bytes.len() == 32
        {
            key.copy_from_slice(&bytes);
        }
        key
    }

    /// The effective retry buffer budget, in bytes.
    pub fn retry_buffer_bytes(&self) -> u32 {
        self.retry_buffer_bytes.unwrap_or(Self::DEFAULT_RETRY_BUFFER_BYTES)
    }

    /// Most worker threads a process may run.
    pub const MAX_WORKERS: u32 = 256;

    /// The effective number of worker threads.
    pub fn workers(&self) -> u32 {
        self.workers.unwrap_or(1)
    }

    /// The effective process-wide flow cap.
    pub fn max_flows(&self) -> u32 {
        self.max_flows.unwrap_or(Self::DEFAULT_MAX_FLOWS)
    }

    /// The settings a reload cannot change, by their names in the file, that differ between
    /// the running process (`self`, as it started) and `next`: they take effect at the next
    /// start, and a reload says so rather than keep the old values in silence.
    pub fn restart_only_changes(&self, next: &ProcessConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.selection_key_bytes() != next.selection_key_bytes() {
            changed.push("process.selection_key");
        }
        if self.log_format != next.log_format {
            changed.push("process.log_format");
        }
        if self.control_socket != next.control_socket {
            changed.push("process.control_socket");
        }
        if self.metrics_addr != next.metrics_addr {
            changed.push("process.metrics_addr");
        }
        if self.workers() != next.workers() {
            changed.push("process.workers");
        }
        if self.upstream_mode != next.upstream_mode {
            changed.push("process.upstream_mode");
        }
        changed
    }
}

/// A listener: a VIP address that receives client datagrams and routes them to one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The address to receive on (the VIP). It is part of every flow key.
    #[serde(deserialize_with = "address::deserialize")]
    pub address: SocketAddr,
    /// Name of the cluster that serves this listener.
    pub cluster: String,
    /// Which parts of the client address identify a flow.
    #[serde(default)]
    pub affinity: Affinity,
    /// Most flows alive at once on this listener; `None` means only the process cap applies.
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// Largest datagram accepted in either direction, PROXY v2 header included.
    #[serde(default = "default_max_datagram_size")]
    pub max_datagram_size: u32,
    /// When the listener drains, how long its remaining flows may live. `None` waits for
    /// every flow to end by its own teardown.
    #[serde(default, with = "duration::optional")]
    pub drain_timeout: Option<Duration>,
    /// Bind even if `address` is not (yet) one of the host's (`IP_FREEBIND`): a VIP that a
    /// failover daemon or a BGP announcement brings up later. Read when the listener's
    /// socket is opened; the core ignores it.
    #[serde(default)]
    pub freebind: bool,
    /// What to do with an empty client datagram (legal UDP; some keepalive schemes send
    /// them): forward it like any other (the default), or drop it, counted as `empty`.
    #[serde(default)]
    pub empty_datagrams: EmptyDatagrams,
    /// Limits per client source (an address cut to a prefix): new flows per second and flows
    /// at once. Absent: none.
    #[serde(default)]
    pub source_limits: Option<SourceLimitsConfig>,
    /// Accept PROXY v2 headers from trusted upstream balancers: the client is the one the
    /// header names. Absent: a datagram's client is its sender.
    #[serde(default)]
    pub accept_proxy: Option<AcceptProxyConfig>,
}

/// Trusted ingress: PROXY v2 headers are taken from these sources only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptProxyConfig {
    /// The upstream balancers trusted to name the client: addresses or prefixes.
    pub from: Vec<IpPrefix>,
    /// Every datagram must come from a trusted source and carry a header; others are
    /// dropped. Otherwise a datagram without one is served as its sender's own.
    #[serde(default)]
    pub required: bool,
}

impl AcceptProxyConfig {
    /// Whether `ip` may send a header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.from.iter().any(|prefix| prefix.contains(ip))
    }
}

/// A listener's per-source limits. A source is a client address cut to `prefix_v4` or
/// `prefix_v6` bits: `/32` and `/128` are single hosts, `/24` and `/64` a subnet each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimitsConfig {
    /// Prefix length sources are aggregated by, for IPv4 clients (0 to 32).
    #[serde(default = "default_prefix_v4")]
    pub prefix_v4: u8,
    /// Prefix length sources are aggregated by, for IPv6 clients (0 to 128).
    #[serde(default = "default_prefix_v6")]
    pub prefix_v6: u8,
    /// New flows a source may start per second, on average. Absent: no rate limit.
    #[serde(default)]
    pub new_flows_per_second: Option<u32>,
    /// New flows a source may start at once after a quiet time. Absent: the rate (one
    /// second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Flows a source may hold at once. Absent: no limit per source.
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// Sources tracked at most; one that holds no flow is forgotten to make room (raised
    /// above the listener's flow cap, so a source with flows never is).
    #[serde(default = "default_source_table_size")]
    pub table_size: u32,
}

impl SourceLimitsConfig {
    /// The bucket's size in new flows.
    pub fn burst(&self) -> u32 {
        self.burst.or(self.new_flows_per_second).unwrap_or(1).max(1)
    }
}

fn default_prefix_v4() -> u8 {
    32
}

fn default_prefix_v6() -> u8 {
    64
}

fn default_source_table_size() -> u32 {
    65_536
}

/// What a listener does with an empty client datagram.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyDatagrams {
    /// Forward it like any other datagram: it opens or refreshes a flow, and counts as a
    /// request. The default.
    #[default]
    Forward,
    /// Drop it, counted as drop reason `empty`, before it can open or refresh a flow.
    Drop,
}

/// The largest UDP payload over IPv4 (65,535 − 8 − 20).
pub const MAX_UDP_PAYLOAD: u32 = 65_507;

fn default_max_datagram_size() -> u32 {
    MAX_UDP_PAYLOAD
}

/// The amplification cap of a cluster: per flow, the bytes returned may not exceed `factor`
/// times the bytes the client sent plus `allowance_bytes`, nor the datagrams returned `factor`
/// times the datagrams it sent plus `allowance_datagrams`. A reply over either is dropped
/// (`amplification`) and counted against its backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmplificationConfig {
    /// The multiple of what the client sent.
    pub factor: u32,
    /// Bytes allowed beyond `factor` times the client's: room for a first reply larger than
    /// its request (a DNS answer to a short query).
    #[serde(default)]
    pub allowance_bytes: u32,
    /// Datagrams allowed beyond `factor` times the client's.
    #[serde(default)]
    pub allowance_datagrams: u32,
}

/// Which parts of the client address key a flow (and, later, select its backend).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    /// Client address and port: each client socket is its own flow. The default.
    #[default]
    ClientAddressPort,
    /// Client address only: every socket of one client host shares a flow. Replies go to the
    /// port the client last sent from, so the flow follows a NAT rebinding.
    ClientAddress,
}

/// A cluster: a set of backends, how new flows are spread over them, how their health is
/// judged, and the rules that end flows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The backends, in any order (the core orders them by id).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Replies expected before the flow closes; `None` means unknown (never close on a reply
    /// count); `0` means no reply is expected (one-way traffic such as syslog).
    #[serde(default)]
    pub responses: Option<u32>,
    /// How `responses` is counted.
    #[serde(default)]
    pub responses_mode: ResponsesMode,
    /// Client datagrams a flow takes before it retires; `None` means no limit.
    #[serde(default)]
    pub requests: Option<u32>,
    /// Idle deadlines for each side of a flow.
    #[serde(default)]
    pub idle_timeout: IdleTimeout,
    /// Maximum age of a flow; `None` means no limit.
    #[serde(default, with = "duration::optional")]
    pub lifetime: Option<Duration>,
    /// PROXY protocol v2 towards the backends.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolConfig,
    /// How a new flow's backend is chosen.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Entries in a Maglev table; must be a prime. Larger tables balance better and cost
    /// more memory and build time.
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u32,
    /// When no backend is eligible, route new flows over every administratively enabled
    /// backend instead of dropping them.
    #[serde(default = "default_true")]
    pub fail_open: bool,
    /// What happens to a backend's flows when it goes Down (or is ejected). Absent: `reselect`
    /// when `responses` is set (each request stands alone), `keep` otherwise (a session's
    /// state lives on its backend); see [`ClusterConfig::on_backend_down`].
    #[serde(default)]
    pub on_backend_down: Option<OnBackendDown>,
    /// When the backend refuses a flow that has had no reply yet, re-send its last datagram
    /// once on another backend.
    #[serde(default = "default_true")]
    pub retry_on_refused: bool,
    /// When a backend drains (`udplb ctl backend CLUSTER ID drain`), how long its remaining
    /// flows may live; after that they close (`Drained`). `None` waits for every flow to end
    /// by its own teardown.
    #[serde(default, with = "duration::optional")]
    pub backend_drain_timeout: Option<Duration>,
    /// The most a backend may send back for what a client sent, per flow: a bound on what
    /// udplb returns to a spoofed source. Absent: no bound.
    #[serde(default)]
    pub amplification: Option<AmplificationConfig>,
    /// QUIC-LB connection-ID routing: a new flow whose destination connection ID names a
    /// backend's `server_id` goes to that backend (see `docs/quic.md`). Absent: flows are
    /// placed by `algorithm` alone.
    #[serde(default)]
    pub quic_lb: Option<QuicLbSection>,
    /// Active probes, hysteresis and passive health.
    #[serde(default)]
    pub health: HealthConfig,
}

impl ClusterConfig {
    /// The back deadline in force: the file's `idle_timeout.back`, or
    /// [`DEFAULT_IDLE_BACK_COUNTED`] where `responses` counts replies, [`DEFAULT_IDLE_BACK`]
    /// otherwise.
    pub fn idle_back(&self) -> Duration {
        self.idle_timeout.back.unwrap_or(match self.responses {
            Some(n) if n > 0 => DEFAULT_IDLE_BACK_COUNTED,
            _ => DEFAULT_IDLE_BACK,
        })
    }

    /// The `on_backend_down` in force: the file's, or the default for this kind of traffic.
    pub fn on_backend_down(&self) -> OnBackendDown {
        self.on_backend_down.unwrap_or(match self.responses {
            Some(_) => OnBackendDown::Reselect,
            None => OnBackendDown::Keep,
        })
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backends: Vec::new(),
            responses: None,
            responses_mode: ResponsesMode::default(),
            requests: None,
            idle_timeout: IdleTimeout::default(),
            lifetime: None,
            proxy_protocol: ProxyProtocolConfig::default(),
            algorithm: Algorithm::default(),
            maglev_table_size: default_maglev_table_size(),
            fail_open: true,
            on_backend_down: None,
            retry_on_refused: true,
            backend_drain_timeout: None,
            amplification: None,
            quic_lb: None,
            health: HealthConfig::default(),
        }
    }
}

/// The Maglev paper's default table size, a prime.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;

fn default_maglev_table_size() -> u32 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

fn default_true() -> bool {
    true
}

/// How a new flow's backend is chosen among the eligible ones.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted random (seeded by the shared selection key).
    Random,
    /// The backend with the fewest flows relative to its weight.
    LeastFlows,
    /// Two weighted random candidates; the one with fewer flows relative to its weight.
    PowerOfTwo,
    /// Weighted rendezvous hashing on the affinity key: consistent, no table.
    Hrw,
    /// Weighted Maglev consistent hashing on the affinity key.
    Maglev,
}

/// What happens to a backend's flows when it goes Down.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendDown {
    /// Flows stay pinned until their own teardown; only new flows avoid the backend.
    Keep,
    /// Flows close at once (`BackendDown`); the client's next datagram starts a new flow.
    Close,
    /// Flows stay, but a flow whose backend is Down or ejected when its client sends again
    /// is closed (`Reselected`) and the datagram starts a new flow on an eligible backend.
    /// Replies still owed on the old flow are dropped with it.
    Reselect,
}

/// How the `responses` count is applied.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesMode {
    /// `responses` replies per client datagram forwarded: a flow with several requests in
    /// flight closes only when every one of them has its replies (nginx counts this way).
    #[default]
    PerRequest,
    /// `responses` replies in total for the whole flow.
    PerFlow,
}

/// Idle deadlines. Each side has its own.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleTimeout {
    /// The flow closes (`IdleFront`) when the client has sent nothing for this long.
    #[serde(default = "IdleTimeout::default_front", with = "duration::required")]
    pub front: Duration,
    /// How long the backend has to deliver a reply it owes. Where `responses` is set, replies
    /// owed all that time are written off (and count against the backend); otherwise the
    /// flow closes (`IdleBack`) when the backend has sent nothing for this long since the
    /// first unanswered client datagram. Absent: see [`ClusterConfig::idle_back`].
    #[serde(default, with = "duration::optional")]
    pub back: Option<Duration>,
}

impl IdleTimeout {
    fn default_front() -> Duration {
        Duration::from_secs(60)
    }
}

impl Default for IdleTimeout {
    fn default() -> Self {
        IdleTimeout { front: Self::default_front(), back: None }
    }
}

/// The back deadline where `responses` counts replies: a request/response client (a DNS stub
/// resolver, a game's ping) has given up on a reply long before, and a backend that loses
/// replies must be found out within seconds.
pub const DEFAULT_IDLE_BACK_COUNTED: Duration = Duration::from_secs(1);
/// The back deadline where the reply count is unknown (sessions): only a backend silent this
/// long while the client talks ends the flow.
pub const DEFAULT_IDLE_BACK: Duration = Duration::from_secs(30);

/// PROXY protocol v2 towards a cluster's backends.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Which datagrams of a flow carry the header.
    #[serde(default)]
    pub mode: ProxyProtocolMode,
    /// Add a CRC32C (Castagnoli) TLV over the header.
    #[serde(default)]
    pub crc32c: bool,
    /// Add a UNIQUE_ID TLV carrying the flow's serial number.
    #[serde(default)]
    pub unique_id: bool,
}

/// Which datagrams of a flow carry the PROXY v2 header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolMode {
    /// No header.
    #[default]
    Off,
    /// Only the flow's first datagram (the receiver must track sessions).
    First,
    /// Every datagram (the receiver needs no session state).
    Every,
}

/// A backend of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Identifier, unique within the cluster. With the address, it is the backend's identity:
    /// a changed address is a new backend.
    pub id: String,
    /// Where datagrams are sent.
    #[serde(deserialize_with = "address::deserialize")]
    pub address: SocketAddr,
    /// Relative share of new flows; 0 takes no new flows.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Priority: new flows go to the lowest-numbered pool that has an eligible backend.
    #[serde(default)]
    pub pool: u32,
    /// Used only when no primary (non-backup) backend of the cluster is eligible.
    #[serde(default)]
    pub backup: bool,
    /// The QUIC-LB server ID its QUIC server encodes in the connection IDs it issues, in hex
    /// (`"0a"`, two digits per octet); required in a cluster with `quic_lb`.
    #[serde(default)]
    pub server_id: Option<String>,
}

/// A cluster's `quic_lb` table: the QUIC-LB configurations its servers may issue connection
/// IDs with, up to one per config ID (the top three bits of a connection ID's first octet).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbSection {
    pub configs: Vec<QuicLbEntry>,
}

/// One QUIC-LB configuration as the file writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbEntry {
    /// The config ID (config rotation bits), 0 to 6; 7 marks connection IDs as unroutable.
    pub id: u8,
    /// Octets of server ID in a connection ID, 1 to 15.
    pub server_id_len: u8,
    /// Octets of nonce after it, 4 to 18; with `server_id_len` at most 19.
    pub nonce_len: u8,
    /// The 16-octet AES-128 key, in 32 hex digits; absent, connection IDs are in plaintext.
    #[serde(default)]
    pub key: Option<String>,
}

impl QuicLbEntry {
    /// The key's octets: `None` without a key, `Err` for anything but 32 hex digits.
    pub fn key_bytes(&self) -> Result<Option<[u8; 16]>, String> {
        let Some(key) = &self.key else { return Ok(None) };
        let bytes = decode_hex(key)?;
        let key: [u8; 16] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!("is {} octets; a QUIC-LB key is 16 octets, 32 hex digits", bytes.len())
        })?;
        Ok(Some(key))
    }

    /// The codec's configuration; `Err` for what validation rejects.
    pub fn to_codec(&self) -> Result<crate::quic_lb::QuicLbConfig, String> {
        let key = self.key_bytes()?;
        crate::quic_lb::QuicLbConfig::new(self.id, self.server_id_len, self.nonce_len, key)
            .map_err(|error| error.to_string())
    }
}

impl QuicLbSection {
    /// The codec's configuration set; `Err` for what validation rejects.
    pub fn to_codec(&self) -> Result<crate::quic_lb::QuicLbConfigs, String> {
        let configs = self.configs.iter().map(QuicLbEntry::to_codec).collect::<Result<Vec<_>, _>>()?;
        crate::quic_lb::QuicLbConfigs::new(configs).map_err(|error| error.to_string())
    }
}

/// Octets from hex digits (either case; no separators).
pub(crate) fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("{text:?} has an odd number of hex digits; write two per octet"));
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => Ok(high << 4 | low),
            _ => Err(format!("{text:?} is not hex: write two digits 0-9, a-f per octet")),
        })
        .collect()
}

fn default_weight() -> u32 {
    1
}
