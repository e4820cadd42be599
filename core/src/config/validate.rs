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
    /// A cluster name is empty, too long or has a character that is not allowed.
    #[error("cluster name {cluster:?} {problem}")]
    InvalidClusterName {
        /// The cluster's name as written.
        cluster: String,
        /// What is wrong with it.
        problem: NameProblem,
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
            InvalidListenerName { listener, .. } => listener_path(listener),
            UnknownCluster { listener, .. } => listener_path(listener).key("cluster"),
            DuplicateListenerAddress { listener, .. } | ListenerPortZero { listener } => {
                listener_path(listener).key("address")
            }
            MaxDatagramSizeOutOfRange { listener, .. } => listener_path(listener).key("max_datagram_size"),
            ListenerMaxFlowsOutOfRange { listener, .. } => listener_path(listener).key("max_flows"),
            InvalidClusterName { cluster, .. } => cluster_path(cluster),
            RequestsZero { cluster } => cluster_path(cluster).key("requests"),
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
            Health { cluster, problem } => cluster_path(cluster).key("health").key(problem.key()),
            MaglevTableSize { cluster, .. } => cluster_path(cluster).key("maglev_table_size"),
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
}

fn validate_cluster(name: &str, cluster: &ClusterConfig, errors: &mut Vec<ValidationError>) {
    let cluster_name = || name.to_owned();
    if let Err(problem) = check_name(name) {
        errors.push(ValidationError::InvalidClusterName { cluster: cluster_name(), problem });
    }
    if cluster.requests == Some(0) {
        errors.push(ValidationError::RequestsZero { cluster: cluster_name() });
    }
    for (side, timeout) in
        [(IdleSide::Front, cluster.idle_timeout.front), (IdleSide::Back, cluster.idle_timeout.back)]
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigErrorKind;

    /// The validation errors of `text`, which must parse. Goes through `from_toml_str` so that
    /// every test also checks that the errors survive location lookup.
    fn invalid(text: &str) -> Vec<ValidationError> {
        let errors = match Config::from_toml_str(text) {
            Ok(config) => panic!("expected validation errors, got {config:#?}"),
            Err(errors) => errors,
        };
        errors
            .into_iter()
            .map(|error| match error.kind {
                ConfigErrorKind::Invalid(validation) => {
                    assert_eq!(error.path, validation.path());
                    validation
                }
                other => panic!("expected a validation error, got {other:?}"),
            })
            .collect()
    }

    fn valid(text: &str) -> Config {
        match Config::from_toml_str(text) {
            Ok(config) => config,
            Err(errors) => panic!("expected a valid config, got:\n{errors}"),
        }
    }

    /// A valid configuration with `extra` appended to the listener table `dns` and `cluster`
    /// to the cluster table `dns`, before its backends.
    fn with(listener: &str, cluster: &str) -> String {
        format!(
            "[listeners.dns]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n{listener}\n\
             [clusters.dns]\n{cluster}\nbackends = [\n  {{ id = \"a\", address = \"127.0.0.1:5301\" }},\n\
             ]\n"
        )
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("test addresses are valid")
    }

    #[test]
    fn base_configuration_is_valid() {
        valid(&with("", ""));
    }

    #[test]
    fn listener_cluster_must_name_an_existing_cluster() {
        let text = with("", "").replace("cluster = \"dns\"", "cluster = \"dnss\"");
        assert_eq!(
            invalid(&text),
            [ValidationError::UnknownCluster {
                listener: "dns".into(),
                cluster: "dnss".into(),
                known: vec!["dns".into()],
            }]
        );
    }

    #[test]
    fn listener_addresses_must_be_unique_across_listeners() {
        let text = format!(
            "{}[listeners.b]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n\
             [listeners.c]\naddress = \"127.0.0.1:5353\"\ncluster = \"dns\"\n",
            with("", "")
        );
        // In name order `b` comes first, so `c` and `dns` are reported against it, in the
        // order they appear in the file.
        assert_eq!(
            invalid(&text),
            [
                ValidationError::DuplicateListenerAddress {
                    listener: "dns".into(),
                    address: address("127.0.0.1:5353"),
                    first_listener: "b".into(),
                },
                ValidationError::DuplicateListenerAddress {
                    listener: "c".into(),
                    address: address("127.0.0.1:5353"),
                    first_listener: "b".into(),
                },
            ]
        );
    }

    #[test]
    fn same_port_on_different_addresses_is_allowed() {
        valid(&format!("{}[listeners.b]\naddress = \"[::1]:5353\"\ncluster = \"dns\"\n", with("", "")));
    }

    #[test]
    fn listener_port_zero_is_rejected() {
        let text = with("", "").replace("127.0.0.1:5353", "127.0.0.1:0");
        assert_eq!(invalid(&text), [ValidationError::ListenerPortZero { listener: "dns".into() }]);
    }

    #[test]
    fn backend_port_zero_is_rejected() {
        let text = with("", "").replace("127.0.0.1:5301", "127.0.0.1:0");
        assert_eq!(invalid(&text), [ValidationError::BackendPortZero { cluster: "dns".into(), index: 0 }]);
    }

    #[test]
    fn backend_unspecified_address_is_rejected() {
        let text = with("", "").replace("127.0.0.1:5301", "[::]:5301");
        assert_eq!(
            invalid(&text),
            [ValidationError::BackendAddressUnspecified {
                cluster: "dns".into(),
                index: 0,
                ip: "::".parse().expect("valid"),
            }]
        );
    }

    #[test]
    fn names_follow_the_character_and_length_rules() {
        assert_eq!(check_name("dns-1.eu_west"), Ok(()));
        assert_eq!(check_name(&"a".repeat(MAX_NAME_BYTES)), Ok(()));
        assert_eq!(check_name(""), Err(NameProblem::Empty));
        assert_eq!(check_name("dns 1"), Err(NameProblem::InvalidCharacter { character: ' ' }));
        assert_eq!(check_name("dné"), Err(NameProblem::InvalidCharacter { character: 'é' }));
        assert_eq!(check_name("a/b"), Err(NameProblem::InvalidCharacter { character: '/' }));
        assert_eq!(
            check_name(&"a".repeat(MAX_NAME_BYTES + 1)),
            Err(NameProblem::TooLong { length: MAX_NAME_BYTES + 1 })
        );
    }

    #[test]
    fn listener_names_are_checked() {
        let text = with("", "").replace("[listeners.dns]", "[listeners.\"dns v2\"]");
        assert_eq!(
            invalid(&text),
            [ValidationError::InvalidListenerName {
                listener: "dns v2".into(),
                problem: NameProblem::InvalidCharacter { character: ' ' },
            }]
        );
    }

    #[test]
    fn cluster_names_are_checked() {
        let long = "c".repeat(65);
        let text = with("", "")
            .replace("[clusters.dns]", &format!("[clusters.{long}]"))
            .replace("cluster = \"dns\"", &format!("cluster = \"{long}\""));
        assert_eq!(
            invalid(&text),
            [ValidationError::InvalidClusterName {
                cluster: long,
                problem: NameProblem::TooLong { length: 65 },
            }]
        );
    }

    #[test]
    fn backend_ids_are_checked() {
        let text = with("", "").replace("id = \"a\"", "id = \"\"");
        assert_eq!(
            invalid(&text),
            [ValidationError::InvalidBackendId {
                cluster: "dns".into(),
                index: 0,
                id: String::new(),
                problem: NameProblem::Empty,
            }]
        );
    }

    #[test]
    fn backend_ids_must_be_unique_within_a_cluster() {
        let text = with("", "").replace(
            "},\n]",
            "},\n  { id = \"b\", address = \"127.0.0.1:5302\" },\n  { id = \"a\", address = \"127.0.0.1:5303\" },\n]",
        );
        assert_eq!(
            invalid(&text),
            [ValidationError::DuplicateBackendId {
                cluster: "dns".into(),
                index: 2,
                id: "a".into(),
                first_index: 0,
            }]
        );
    }

    #[test]
    fn backend_addresses_must_be_unique_within_a_cluster() {
        let text = with("", "").replace("},\n]", "},\n  { id = \"b\", address = \"127.0.0.1:5301\" },\n]");
        assert_eq!(
            invalid(&text),
            [ValidationError::DuplicateBackendAddress {
                cluster: "dns".into(),
                index: 1,
                address: address("127.0.0.1:5301"),
                first_index: 0,
            }]
        );
    }

    #[test]
    fn the_same_backend_id_and_address_may_serve_two_clusters() {
        valid(&format!(
            "{}[clusters.other]\nbackends = [{{ id = \"a\", address = \"127.0.0.1:5301\" }}]\n",
            with("", "")
        ));
    }

    #[test]
    fn weight_is_at_most_65535_and_zero_is_allowed() {
        let text = with("", "").replace("\" }", "\", weight = 65535 }");
        valid(&text);
        let text = with("", "").replace("\" }", "\", weight = 0 }");
        assert_eq!(valid(&text).clusters["dns"].backends[0].weight, 0);
        let text = with("", "").replace("\" }", "\", weight = 65536 }");
        assert_eq!(
            invalid(&text),
            [ValidationError::WeightTooLarge { cluster: "dns".into(), index: 0, weight: 65536 }]
        );
    }

    #[test]
    fn max_datagram_size_is_between_1_and_65507() {
        valid(&with("max_datagram_size = 1", ""));
        valid(&with("max_datagram_size = 65507", ""));
        for size in [0, 65508] {
            assert_eq!(
                invalid(&with(&format!("max_datagram_size = {size}"), "")),
                [ValidationError::MaxDatagramSizeOutOfRange { listener: "dns".into(), size }]
            );
        }
    }

    #[test]
    fn listener_max_flows_is_at_least_one_when_set() {
        valid(&with("max_flows = 1", ""));
        valid(&with(&format!("max_flows = {MAX_FLOWS_LIMIT}"), ""));
        for max_flows in [0, MAX_FLOWS_LIMIT + 1] {
            assert_eq!(
                invalid(&with(&format!("max_flows = {max_flows}"), "")),
                [ValidationError::ListenerMaxFlowsOutOfRange { listener: "dns".into(), max_flows }]
            );
        }
    }

    #[test]
    fn process_max_flows_is_at_least_one_when_set() {
        valid(&format!("[process]\nmax_flows = 1\n{}", with("", "")));
        for max_flows in [0, MAX_FLOWS_LIMIT + 1] {
            let text = format!("[process]\nmax_flows = {max_flows}\n{}", with("", ""));
            assert_eq!(invalid(&text), [ValidationError::ProcessMaxFlowsOutOfRange { max_flows }]);
        }
    }

    #[test]
    fn requests_is_at_least_one_when_set_and_zero_responses_is_valid() {
        let config = valid(&with("", "requests = 1\nresponses = 0"));
        assert_eq!(config.clusters["dns"].requests, Some(1));
        assert_eq!(config.clusters["dns"].responses, Some(0));
        assert_eq!(
            invalid(&with("", "requests = 0")),
            [ValidationError::RequestsZero { cluster: "dns".into() }]
        );
    }

    #[test]
    fn idle_timeouts_must_be_longer_than_zero() {
        let config = valid(&with("", "idle_timeout = { front = \"1ns\", back = \"1ns\" }"));
        assert_eq!(config.clusters["dns"].idle_timeout.front, Duration::from_nanos(1));
        assert_eq!(
            invalid(&with("", "idle_timeout = { front = \"0s\", back = \"0ms\" }")),
            [
                ValidationError::IdleTimeoutZero { cluster: "dns".into(), side: IdleSide::Front },
                ValidationError::IdleTimeoutZero { cluster: "dns".into(), side: IdleSide::Back },
            ]
        );
    }

    #[test]
    fn lifetime_must_be_longer_than_zero_when_set() {
        valid(&with("", "lifetime = \"1s\""));
        assert_eq!(
            invalid(&with("", "lifetime = \"0s\"")),
            [ValidationError::LifetimeZero { cluster: "dns".into() }]
        );
    }

    #[test]
    fn proxy_protocol_options_need_a_mode_other_than_off() {
        valid(&with("", "proxy_protocol = { mode = \"first\", crc32c = true, unique_id = true }"));
        valid(&with("", "proxy_protocol = { mode = \"off\", crc32c = false }"));
        assert_eq!(
            invalid(&with("", "proxy_protocol = { crc32c = true, unique_id = true }")),
            [
                ValidationError::ProxyProtocolOptionWhileOff {
                    cluster: "dns".into(),
                    option: ProxyProtocolOption::Crc32c,
                },
                ValidationError::ProxyProtocolOptionWhileOff {
                    cluster: "dns".into(),
                    option: ProxyProtocolOption::UniqueId,
                },
            ]
        );
    }

    #[test]
    fn drain_timeout_of_zero_is_valid() {
        let config = valid(&with("drain_timeout = \"0s\"", ""));
        assert_eq!(config.listeners["dns"].drain_timeout, Some(Duration::ZERO));
    }

    #[test]
    fn cluster_without_backends_is_valid() {
        let config =
            valid("[listeners.dns]\naddress = \"127.0.0.1:5353\"\ncluster = \"empty\"\n[clusters.empty]\n");
        assert!(config.clusters["empty"].backends.is_empty());
    }

    #[test]
    fn every_violation_is_reported_not_just_the_first() {
        let config = Config {
            process: ProcessConfig { max_flows: Some(0), retry_buffer_bytes: None },
            listeners: BTreeMap::from([(
                "bad name".to_owned(),
                ListenerConfig {
                    address: address("127.0.0.1:0"),
                    cluster: "missing".into(),
                    affinity: Default::default(),
                    max_flows: Some(0),
                    max_datagram_size: 0,
                    drain_timeout: None,
                },
            )]),
            clusters: BTreeMap::new(),
        };
        let errors = config.validate().expect_err("every field above is invalid");
        let paths: Vec<String> = errors.iter().map(|error| error.path().to_string()).collect();
        assert_eq!(
            paths,
            [
                "process.max_flows",
                "listeners.\"bad name\"",
                "listeners.\"bad name\".cluster",
                "listeners.\"bad name\".address",
                "listeners.\"bad name\".max_datagram_size",
                "listeners.\"bad name\".max_flows",
            ]
        );
    }
}
