//! Checks on a parsed [`Config`]: what TOML and serde cannot express (references between
//! sections, uniqueness, ranges, contradictions).
//!
//! Validation sees only the typed configuration, so each [`ValidationError`] carries the data
//! to name its field ([`ValidationError::path`]); the parser then finds that field in the text
//! for a line and column. Every rule is checked and every violation reported, in a
//! deterministic order (names in order, backends in file order).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{
    BackendConfig, ClusterConfig, Config, FieldPath, HealthProblem, ListenerConfig, MAX_UDP_PAYLOAD,
    ProcessConfig, ProxyProtocolMode,
};

/// Longest listener name, cluster name or backend id, in bytes. Names appear in metrics
/// labels, logs and control-socket commands; 64 bytes is ample for a name and keeps those
/// lines short.
pub const MAX_NAME_BYTES: usize = 64;

/// Largest backend `weight`. Selection tables (Maglev, weighted round robin) scale with the
/// ratio of weights; 16 bits of ratio is more precision than any deployment needs and keeps
/// the table arithmetic well inside `u32`.
pub const MAX_WEIGHT: u32 = 65_535;

/// Largest `max_flows`, process-wide or per listener: 2^24 (16,777,216). A flow holds a slab
/// slot, an index entry and (today) a connected socket, so a cap far above any real
/// descriptor limit (Linux's `fs.nr_open` defaults to 1,048,576) would only let a typo make
/// the flow table preallocate gigabytes.
pub const MAX_FLOWS_LIMIT: u32 = 1 << 24;

/// Longest `control_socket` path, in bytes: a unix socket address holds 108 bytes of path on
/// Linux (`sun_path`), the last of them the terminating NUL. A longer path would only fail at
/// start, with a less helpful message.
pub const MAX_CONTROL_SOCKET_PATH_BYTES: usize = 107;

/// Why a name (listener, cluster or backend id) is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    /// The name is the empty string.
    #[error("is empty")]
    Empty,
    /// The name has a character outside `A-Z a-z 0-9 _ . -`.
    #[error("contains {character:?}; names may contain only letters A-Z and a-z, digits, `_`, `.` and `-`")]
    InvalidCharacter {
        /// The first such character.
        character: char,
    },
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("is {length} bytes long; the limit is {MAX_NAME_BYTES}")]
    TooLong {
        /// The name's length in bytes.
        length: usize,
    },
}

/// Which side of a flow an idle timeout watches.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IdleSide {
    /// `idle_timeout.front`: the client.
    Front,
    /// `idle_timeout.back`: the backend.
    Back,
}

impl IdleSide {
    fn key(self) -> &'static str {
        match self {
            IdleSide::Front => "front",
            IdleSide::Back => "back",
        }
    }
}

/// A PROXY protocol v2 option that needs a header to travel in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProxyProtocolOption {
    /// `crc32c`.
    Crc32c,
    /// `unique_id`.
    UniqueId,
}

impl ProxyProtocolOption {
    fn key(self) -> &'static str {
        match self {
            ProxyProtocolOption::Crc32c => "crc32c",
            ProxyProtocolOption::UniqueId => "unique_id",
        }
    }
}

/// A configuration that parses but cannot run as written.
///
/// Messages do not repeat the field path (the rendered error shows it before the message),
/// but say what is wrong and, where it is not obvious, what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `process.max_flows` is 0 or above [`MAX_FLOWS_LIMIT`].
    #[error(
        "max_flows = {max_flows} is out of range: it must be between 1 and {MAX_FLOWS_LIMIT} (remove it to let udplb choose)"
    )]
    ProcessMaxFlowsOutOfRange {
        /// The configured value.
        max_flows: u32,
    },
    /// A listener name is empty, too long or has a character that is not allowed.
    #[error("listener name {listener:?} {problem}")]
    InvalidListenerName {
        /// The listener's name as written.
        listener: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A listener names a cluster that does not exist.
    #[error("no cluster is named {cluster:?} (clusters: {})", NameList(known))]
    UnknownCluster {
        /// The listener.
        listener: String,
        /// The cluster it names.
        cluster: String,
        /// The clusters that exist, in order.
        known: Vec<String>,
    },
    /// Two listeners receive on the same address.
    #[error("address {address} is already the address of listener {first_listener:?}")]
    DuplicateListenerAddress {
        /// The listener reported (every one after the first, in name order).
        listener: String,
        /// The shared address.
        address: SocketAddr,
        /// The first listener, in name order, with this address.
        first_listener: String,
    },
    /// A listener address with port 0, which would bind an arbitrary port.
    #[error("port 0 would bind a port chosen by the system, which clients cannot know; give a port")]
    ListenerPortZero {
        /// The listener.
        listener: String,
    },
    /// `max_datagram_size` outside 1..=[`MAX_UDP_PAYLOAD`].
    #[error(
        "max_datagram_size = {size} is out of range: it must be between 1 and {MAX_UDP_PAYLOAD} (the largest UDP payload over IPv4)"
    )]
    MaxDatagramSizeOutOfRange {
        /// The listener.
        listener: String,
        /// The configured value.
        size: u32,
    },
    /// A listener's `max_flows` is 0 or above [`MAX_FLOWS_LIMIT`].
    #[error(
        "max_flows = {max_flows} is out of range: it must be between 1 and {MAX_FLOWS_LIMIT} (remove it to apply only the process cap)"
    )]
    ListenerMaxFlowsOutOfRange {
        /// The listener.
        listener: String,
        /// The configured value.
        max_flows: u32,
    },
    /// A `source_limits` value is out of its range.
    #[error("{field} = {value} is out of range: it must be {range}")]
    SourceLimitOutOfRange {
        /// The listener.
        listener: String,
        /// The key in `source_limits`.
        field: &'static str,
        /// The configured value.
        value: u64,
        /// The range, in words.
        range: &'static str,
    },
    /// A cluster name is empty, too long or has a character that is not allowed.
    #[error("cluster name {cluster:?} {problem}")]
    InvalidClusterName {
        /// The cluster's name as written.
        cluster: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// `requests` without `responses`: a retired flow cannot tell when its replies are done,
    /// so each one would hold a slot of the flow table for `idle_timeout.back` after its last
    /// datagram; under load that fills `max_flows` and sheds every new client of the process.
    #[error(
        "requests = {requests} needs `responses`: without a reply count, every retired flow holds \
         its slot for idle_timeout.back after its last datagram, and under load that fills the \
         flow table; set responses to the replies each request gets (0 for one-way traffic)"
    )]
    RequestsWithoutResponses {
        /// The cluster.
        cluster: String,
        /// The `requests` value.
        requests: u32,
    },
    /// `requests = 0`: a flow that takes no datagram cannot exist.
    #[error("requests = 0 would retire every flow before its first datagram; remove it for no limit")]
    RequestsZero {
        /// The cluster.
        cluster: String,
    },
    /// An idle timeout of zero would close every flow at once.
    #[error("idle_timeout.{} must be longer than zero", side.key())]
    IdleTimeoutZero {
        /// The cluster.
        cluster: String,
        /// Which timeout.
        side: IdleSide,
    },
    /// `lifetime = "0s"` would close every flow at once.
    #[error("lifetime must be longer than zero; remove it for no limit")]
    LifetimeZero {
        /// The cluster.
        cluster: String,
    },
    /// A PROXY protocol option is set while no header is sent: the two settings contradict.
    #[error(
        "{} = true needs a PROXY protocol header, but proxy_protocol.mode is \"off\"; set mode to \"first\" or \"every\", or remove {}",
        option.key(), option.key()
    )]
    ProxyProtocolOptionWhileOff {
        /// The cluster.
        cluster: String,
        /// The option that is set.
        option: ProxyProtocolOption,
    },
    /// A backend id is empty, too long or has a character that is not allowed.
    #[error("backend id {id:?} {problem}")]
    InvalidBackendId {
        /// The cluster.
        cluster: String,
        /// The backend's position in `backends`, from 0.
        index: usize,
        /// The id as written.
        id: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// Two backends of one cluster share an id.
    #[error("backend id {id:?} is already used by backends[{first_index}]")]
    DuplicateBackendId {
        /// The cluster.
        cluster: String,
        /// The later backend's position.
        index: usize,
        /// The shared id.
        id: String,
        /// The first backend's position.
        first_index: usize,
    },
    /// A backend address with port 0, to which nothing can be sent.
    #[error("port 0 cannot receive datagrams; give the backend's port")]
    BackendPortZero {
        /// The cluster.
        cluster: String,
        /// The backend's position.
        index: usize,
    },
    /// A backend address of `0.0.0.0` or `::`, which names no host.
    #[error("{ip} names no host (it means \"any address\" only when binding); give the backend's address")]
    BackendAddressUnspecified {
        /// The cluster.
        cluster: String,
        /// The backend's position.
        index: usize,
        /// The unspecified IP address.
        ip: std::net::IpAddr,
    },
    /// Two backends of one cluster share an address.
    #[error("address {address} is already the address of backends[{first_index}]")]
    DuplicateBackendAddress {
        /// The cluster.
        cluster: String,
        /// The later backend's position.
        index: usize,
        /// The shared address.
        address: SocketAddr,
        /// The first backend's position.
        first_index: usize,
    },
    /// `process.workers` is 0 or above [`ProcessConfig::MAX_WORKERS`].
    #[error("workers = {workers} is out of range: it must be between 1 and {max} (one per core is the usual choice)", max = ProcessConfig::MAX_WORKERS)]
    WorkersOutOfRange {
        /// The configured value.
        workers: u32,
    },
    /// `process.selection_key` is not 64 hex digits.
    #[error(
        "selection_key must be 64 hexadecimal digits (32 bytes), such as the output of `openssl rand -hex 32`"
    )]
    SelectionKey,
    /// `process.metrics_addr` has port 0.
    #[error("port 0 would bind a port chosen by the system, which Prometheus cannot know; give a port")]
    MetricsPortZero,
    /// `process.control_socket` is the empty path.
    #[error(
        "is empty; give a path such as \"/run/udplb/control.sock\", or remove the key for no control socket"
    )]
    ControlSocketEmpty,
    /// `process.control_socket` is longer than a unix socket address can hold.
    #[error(
        "is {length} bytes long; a unix socket path holds at most {MAX_CONTROL_SOCKET_PATH_BYTES} bytes (choose a shorter path)"
    )]
    ControlSocketTooLong {
        /// The path's length in bytes.
        length: usize,
    },
    /// A problem in a cluster's `health` block.
    #[error("{problem}")]
    Health {
        /// The cluster.
        cluster: String,
        /// What is wrong, and with which key.
        problem: HealthProblem,
    },
    /// `maglev_table_size` is not a prime in range.
    #[error(
        "maglev_table_size = {size} must be a prime between {MIN_MAGLEV_TABLE_SIZE} and {MAX_MAGLEV_TABLE_SIZE} (65537 is the usual choice)"
    )]
    MaglevTableSize {
        /// The cluster.
        cluster: String,
        /// The configured value.
        size: u32,
    },
    /// A cluster's `quic_lb` table lists no configuration.
    #[error(
        "lists no configuration: add one, e.g. {{ id = 0, server_id_len = 1, nonce_len = 8 }}, or remove quic_lb"
    )]
    QuicLbEmpty {
        /// The cluster.
        cluster: String,
    },
    /// A field of one of a cluster's QUIC-LB configurations.
    #[error("{problem}")]
    QuicLbConfig {
        /// The cluster.
        cluster: String,
        /// The configuration's position in `quic_lb.configs`.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A backend's `server_id` in a cluster with `quic_lb` is missing, not hex, of the wrong
    /// length or another backend's.
    #[error("{problem}")]
    ServerId {
        /// The cluster.
        cluster: String,
        /// The backend's position.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// `weight` above [`MAX_WEIGHT`].
    #[error("weight = {weight} is over the maximum of {MAX_WEIGHT}")]
    WeightTooLarge {
        /// The cluster.
        cluster: String,
        /// The backend's position.
        index: usize,
        /// The configured value.
        weight: u32,
    },
}

/// Formats known names for a message: `"a", "b"`, or `none` when there are none.
struct NameList<'a>(&'a [String]);

impl std::fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (position, name) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name:?}")?;
        }
        Ok(())
    }
}

fn listener_path(listener: &str) -> FieldPath {
    FieldPath::root().key("listeners").key(listener)
}

fn cluster_path(cluster: &str) -> FieldPath {
    FieldPath::root().key("clusters").key(cluster)
}

fn backend_path(cluster: &str, index: usize) -> FieldPath {
    cluster_path(cluster).key("backends").index(index)
}

impl ValidationError {
    /// The field the error is about, for example `clusters.dns.backends[1].address`. For a
    /// bad name it is the named table itself (`listeners."bad name"`).
    pub fn path(&self) -> FieldPath {
        use ValidationError::*;
        match self {
            ProcessMaxFlowsOutOfRange { .. } => FieldPath::root().key("process").key("max_flows"),
            WorkersOutOfRange { .. } => FieldPath::root().key("process").key("workers"),
            InvalidListenerName { listener, .. } => listener_path(listener),
            UnknownCluster { listener, .. } => listener_path(listener).key("cluster"),
            DuplicateListenerAddress { listener, .. } | ListenerPortZero { listener } => {
                listener_path(listener).key("address")
            }
            MaxDatagramSizeOutOfRange { listener, .. } => listener_path(listener).key("max_datagram_size"),
            ListenerMaxFlowsOutOfRange { listener, .. } => listener_path(listener).key("max_flows"),
            SourceLimitOutOfRange { listener, field, .. } => {
                listener_path(listener).key("source_limits").key(*field)
            }
            InvalidClusterName { cluster, .. } => cluster_path(cluster),
            RequestsZero { cluster } => cluster_path(cluster).key("requests"),
            RequestsWithoutResponses { cluster, .. } => cluster_path(cluster).key("requests"),
            IdleTimeoutZero { cluster, side } => cluster_path(cluster).key("idle_timeout").key(side.key()),
            LifetimeZero { cluster } => cluster_path(cluster).key("lifetime"),
            ProxyProtocolOptionWhileOff { cluster, option } => {
                cluster_path(cluster).key("proxy_protocol").key(option.key())
            }
            InvalidBackendId { cluster, index, .. } | DuplicateBackendId { cluster, index, .. } => {
                backend_path(cluster, *index).key("id")
            }
            BackendPortZero { cluster, index }
            | BackendAddressUnspecified { cluster, index, .. }
            | DuplicateBackendAddress { cluster, index, .. } => backend_path(cluster, *index).key("address"),
            WeightTooLarge { cluster, index, .. } => backend_path(cluster, *index).key("weight"),
            Health { cluster, problem } => {
                problem.key().split('.').fold(cluster_path(cluster).key("health"), |path, key| path.key(key))
            }
            SelectionKey => FieldPath::root().key("process").key("selection_key"),
            MetricsPortZero => FieldPath::root().key("process").key("metrics_addr"),
            ControlSocketEmpty | ControlSocketTooLong { .. } => {
                FieldPath::root().key("process").key("control_socket")
            }
            MaglevTableSize { cluster, .. } => cluster_path(cluster).key("maglev_table_size"),
            QuicLbEmpty { cluster } => cluster_path(cluster).key("quic_lb").key("configs"),
            QuicLbConfig { cluster, index, field, .. } => {
                cluster_path(cluster).key("quic_lb").key("configs").index(*index).key(*field)
            }
            ServerId { cluster, index, .. } => backend_path(cluster, *index).key("server_id"),
        }
    }
}

/// Checks a listener name, cluster name or backend id.
pub(crate) fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    let allowed =
        |character: &char| character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-');
    if let Some(character) = name.chars().find(|character| !allowed(character)) {
        return Err(NameProblem::InvalidCharacter { character });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameProblem::TooLong { length: name.len() });
    }
    Ok(())
}

fn max_flows_in_range(max_flows: u32) -> bool {
    (1..=MAX_FLOWS_LIMIT).contains(&max_flows)
}

impl Config {
    /// Checks everything the types cannot: references between sections, uniqueness,
    /// ranges and contradictions. Returns every violation, not just the first, in a
    /// deterministic order; `docs/configuration.md` lists the rules.
    ///
    /// [`Config::from_toml_str`] calls this. Call it directly for a `Config` built in code.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut errors = Vec::new();
        validate_process(&self.process, &mut errors);
        self.validate_listeners(&mut errors);
        for (name, cluster) in &self.clusters {
            validate_cluster(name, cluster, &mut errors);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn validate_listeners(&self, errors: &mut Vec<ValidationError>) {
        // Address → the first listener (in name order) that uses it. A `BTreeMap`, like
        // every map here, so that which listener is reported never depends on hashing.
        let mut first_listener_by_address: BTreeMap<SocketAddr, &str> = BTreeMap::new();
        for (name, listener) in &self.listeners {
            if let Err(problem) = check_name(name) {
                errors.push(ValidationError::InvalidListenerName { listener: name.clone(), problem });
            }
            if !self.clusters.contains_key(&listener.cluster) {
                errors.push(ValidationError::UnknownCluster {
                    listener: name.clone(),
                    cluster: listener.cluster.clone(),
                    known: self.clusters.keys().cloned().collect(),
                });
            }
            match first_listener_by_address.get(&listener.address) {
                Some(first_listener) => errors.push(ValidationError::DuplicateListenerAddress {
                    listener: name.clone(),
                    address: listener.address,
                    first_listener: (*first_listener).to_owned(),
                }),
                None => {
                    first_listener_by_address.insert(listener.address, name);
                }
            }
            validate_listener_fields(name, listener, errors);
        }
    }
}

fn validate_process(process: &ProcessConfig, errors: &mut Vec<ValidationError>) {
    if let Some(max_flows) = process.max_flows.filter(|max_flows| !max_flows_in_range(*max_flows)) {
        errors.push(ValidationError::ProcessMaxFlowsOutOfRange { max_flows });
    }
    if let Some(workers) = process.workers.filter(|w| !(1..=ProcessConfig::MAX_WORKERS).contains(w)) {
        errors.push(ValidationError::WorkersOutOfRange { workers });
    }
    if let Some(key) = &process.selection_key
        && super::health::parse_hex(key).map_or(true, |bytes| bytes.len() != 32)
    {
        errors.push(ValidationError::SelectionKey);
    }
    if process.metrics_addr.is_some_and(|address| address.port() == 0) {
        errors.push(ValidationError::MetricsPortZero);
    }
    if let Some(path) = &process.control_socket {
        let length = path.as_os_str().len();
        if length == 0 {
            errors.push(ValidationError::ControlSocketEmpty);
        } else if length > MAX_CONTROL_SOCKET_PATH_BYTES {
            errors.push(ValidationError::ControlSocketTooLong { length });
        }
    }
}

/// The checks that concern one listener alone.
fn validate_listener_fields(name: &str, listener: &ListenerConfig, errors: &mut Vec<ValidationError>) {
    if listener.address.port() == 0 {
        errors.push(ValidationError::ListenerPortZero { listener: name.to_owned() });
    }
    if !(1..=MAX_UDP_PAYLOAD).contains(&listener.max_datagram_size) {
        errors.push(ValidationError::MaxDatagramSizeOutOfRange {
            listener: name.to_owned(),
            size: listener.max_datagram_size,
        });
    }
    if let Some(max_flows) = listener.max_flows.filter(|max_flows| !max_flows_in_range(*max_flows)) {
        errors.push(ValidationError::ListenerMaxFlowsOutOfRange { listener: name.to_owned(), max_flows });
    }
    if let Some(limits) = &listener.source_limits {
        let mut check =
            |field: &'static str, value: Option<u64>, allowed: std::ops::RangeInclusive<u64>, range| {
                if let Some(value) = value.filter(|value| !allowed.contains(value)) {
                    errors.push(ValidationError::SourceLimitOutOfRange {
                        listener: name.to_owned(),
                        field,
                        value,
                        range,
                    });
                }
            };
        check("prefix_v4", Some(limits.prefix_v4.into()), 0..=32, "between 0 and 32");
        check("prefix_v6", Some(limits.prefix_v6.into()), 0..=128, "between 0 and 128");
        let flows = u64::from(MAX_FLOWS_LIMIT);
        check(
            "new_flows_per_second",
            limits.new_flows_per_second.map(u64::from),
            1..=flows,
            "between 1 and 16777216",
        );
        check("burst", limits.burst.map(u64::from), 1..=flows, "between 1 and 16777216");
        check("max_flows", limits.max_flows.map(u64::from), 1..=flows, "between 1 and 16777216");
        check("table_size", Some(limits.table_size.into()), 1..=flows, "between 1 and 16777216");
    }
}

fn validate_cluster(name: &str, cluster: &ClusterConfig, errors: &mut Vec<ValidationError>) {
    let cluster_name = || name.to_owned();
    if let Err(problem) = check_name(name) {
        errors.push(ValidationError::InvalidClusterName { cluster: cluster_name(), problem });
    }
    if cluster.requests == Some(0) {
        errors.push(ValidationError::RequestsZero { cluster: cluster_name() });
    } else if let (Some(requests), None) = (cluster.requests, cluster.responses) {
        errors.push(ValidationError::RequestsWithoutResponses { cluster: cluster_name(), requests });
    }
    for (side, timeout) in
        [(IdleSide::Front, cluster.idle_timeout.front), (IdleSide::Back, cluster.idle_back())]
    {
        if timeout.is_zero() {
            errors.push(ValidationError::IdleTimeoutZero { cluster: cluster_name(), side });
        }
    }
    if cluster.lifetime.is_some_and(|lifetime| lifetime.is_zero()) {
        errors.push(ValidationError::LifetimeZero { cluster: cluster_name() });
    }
    let proxy_protocol = &cluster.proxy_protocol;
    if proxy_protocol.mode == ProxyProtocolMode::Off {
        for (option, set) in [
            (ProxyProtocolOption::Crc32c, proxy_protocol.crc32c),
            (ProxyProtocolOption::UniqueId, proxy_protocol.unique_id),
        ] {
            if set {
                errors.push(ValidationError::ProxyProtocolOptionWhileOff { cluster: cluster_name(), option });
            }
        }
    }
    if !valid_maglev_table_size(cluster.maglev_table_size) {
        errors.push(ValidationError::MaglevTableSize {
            cluster: cluster_name(),
            size: cluster.maglev_table_size,
        });
    }
    for problem in cluster.health.problems() {
        errors.push(ValidationError::Health { cluster: cluster_name(), problem });
    }
    validate_backends(name, &cluster.backends, errors);
    if let Some(quic_lb) = &cluster.quic_lb {
        validate_quic_lb(name, quic_lb, &cluster.backends, errors);
    }
}

/// The checks on a cluster's `quic_lb` table and its backends' server IDs: the ranges the
/// QUIC-LB draft sets, one configuration per config ID, one server ID length for all (every
/// configuration routes the same backends' IDs), and a distinct server ID per backend.
fn validate_quic_lb(
    cluster: &str,
    quic_lb: &super::QuicLbSection,
    backends: &[BackendConfig],
    errors: &mut Vec<ValidationError>,
) {
    let config_error = |index: usize, field: &'static str, problem: String| ValidationError::QuicLbConfig {
        cluster: cluster.to_owned(),
        index,
        field,
        problem,
    };
    let Some(first) = quic_lb.configs.first() else {
        errors.push(ValidationError::QuicLbEmpty { cluster: cluster.to_owned() });
        return;
    };
    let mut first_index_by_id: BTreeMap<u8, usize> = BTreeMap::new();
    for (index, entry) in quic_lb.configs.iter().enumerate() {
        if entry.id > 6 {
            errors.push(config_error(
                index,
                "id",
                format!(
                    "id = {} is out of range: config IDs are 0 to 6 (7 marks a connection ID unroutable)",
                    entry.id
                ),
            ));
        } else if let Some(first_index) = first_index_by_id.insert(entry.id, index) {
            first_index_by_id.insert(entry.id, first_index);
            errors.push(config_error(
                index,
                "id",
                format!("id = {} is already the id of quic_lb.configs[{first_index}]", entry.id),
            ));
        }
        let server_id_ok = (1..=15).contains(&entry.server_id_len);
        if !server_id_ok {
            errors.push(config_error(
                index,
                "server_id_len",
                format!(
                    "server_id_len = {} is out of range: a server ID is 1 to 15 octets",
                    entry.server_id_len
                ),
            ));
        } else if entry.server_id_len != first.server_id_len {
            errors.push(config_error(
                index,
                "server_id_len",
                format!(
                    "server_id_len = {} differs from quic_lb.configs[0]'s {}: every configuration routes \
                     the same backends' server_id, so they must be of one length",
                    entry.server_id_len, first.server_id_len
                ),
            ));
        }
        if !(4..=18).contains(&entry.nonce_len) {
            errors.push(config_error(
                index,
                "nonce_len",
                format!("nonce_len = {} is out of range: a nonce is 4 to 18 octets", entry.nonce_len),
            ));
        } else if server_id_ok && entry.server_id_len + entry.nonce_len > 19 {
            errors.push(config_error(
                index,
                "nonce_len",
                format!(
                    "server_id_len + nonce_len = {} is over 19: a connection ID holds at most 20 octets, \
                     the first of which is the config octet",
                    entry.server_id_len + entry.nonce_len
                ),
            ));
        }
        if let Err(problem) = entry.key_bytes() {
            errors.push(config_error(index, "key", problem));
        }
    }
    let length = usize::from(first.server_id_len);
    let mut first_index_by_server: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let problem = match backend.server_id.as_deref().map(super::decode_hex) {
            None => Some(format!(
                "is missing: every backend of a cluster with quic_lb needs the server ID its QUIC server \
                 encodes in its connection IDs ({length} octets, {} hex digits)",
                length * 2
            )),
            Some(Err(problem)) => Some(problem),
            Some(Ok(octets)) if octets.len() != length && (1..=15).contains(&length) => Some(format!(
                "is {} octets; quic_lb.configs says server_id_len = {length} ({} hex digits)",
                octets.len(),
                length * 2
            )),
            Some(Ok(octets)) => match first_index_by_server.get(&octets) {
                Some(&first_index) => Some(format!(
                    "{:?} is already the server_id of backend {:?}: each server needs its own, or its \
                     connections would reach the other",
                    backend.server_id.as_deref().unwrap_or_default(),
                    backends[first_index].id
                )),
                None => {
                    first_index_by_server.insert(octets, index);
                    None
                }
            },
        };
        if let Some(problem) = problem {
            errors.push(ValidationError::ServerId { cluster: cluster.to_owned(), index, problem });
        }
    }
}

/// Smallest Maglev table: a table needs many entries per backend to balance at all.
pub const MIN_MAGLEV_TABLE_SIZE: u32 = 251;
/// Largest Maglev table: about 4 MB of entries, and a build time in the tens of milliseconds.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 1_000_003;

fn valid_maglev_table_size(size: u32) -> bool {
    (MIN_MAGLEV_TABLE_SIZE..=MAX_MAGLEV_TABLE_SIZE).contains(&size) && is_prime(size)
}

/// Trial division: at most ~1,000 steps for the sizes allowed.
fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| d * d <= n).all(|d| n % d != 0)
}

/// The checks on a cluster's backends. A cluster without backends is valid: every new flow
/// is then a counted drop at run time, which lets an operator stage a cluster or empty it.
fn validate_backends(cluster: &str, backends: &[BackendConfig], errors: &mut Vec<ValidationError>) {
    let mut first_index_by_id: BTreeMap<&str, usize> = BTreeMap::new();
    let mut first_index_by_address: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let cluster_name = || cluster.to_owned();
        if let Err(problem) = check_name(&backend.id) {
            errors.push(ValidationError::InvalidBackendId {
                cluster: cluster_name(),
                index,
                id: backend.id.clone(),
                problem,
            });
        }
        match first_index_by_id.get(backend.id.as_str()) {
            Some(&first_index) => errors.push(ValidationError::DuplicateBackendId {
                cluster: cluster_name(),
                index,
                id: backend.id.clone(),
                first_index,
            }),
            None => {
                first_index_by_id.insert(&backend.id, index);
            }
        }
        if backend.address.ip().is_unspecified() {
            errors.push(ValidationError::BackendAddressUnspecified {
                cluster: cluster_name(),
                index,
                ip: backend.address.ip(),
            });
        }
        if backend.address.port() == 0 {
            errors.push(ValidationError::BackendPortZero { cluster: cluster_name(), index });
        }
        match first_index_by_address.get(&backend.address) {
            Some(&first_index) => errors.push(ValidationError::DuplicateBackendAddress {
                cluster: cluster_name(),
                index,
                address: backend.address,
                first_index,
            }),
            None => {
                first_index_by_address.insert(backend.address, index);
            }
        }
        if backend.weight > MAX_WEIGHT {
            errors.push(ValidationError::WeightTooLarge {
                cluster: cluster_name(),
                index,
                weight: backend.weight,
            });
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
