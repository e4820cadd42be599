//! Scenario files: a balancer configuration, a small world around it, a timeline of faults and
//! operator actions, and the expectations that must hold. The format is documented in
//! `docs/scenarios.md`; unknown fields are rejected everywhere.
//!
//! The `[lb]` section is the shell's configuration schema: it deserializes into the core's own
//! `Config` (same serde types, same `deny_unknown_fields`) and goes through the same
//! `validate()`, so a scenario tests exactly what an operator deploys.
//!
//! Everything a scenario names is typed when it loads, and a name that means nothing is an
//! error at its line and column, never a count that silently stays zero: health states, drop
//! and close reasons and events by the core's stable names (`udplb_core::names`; `transition`
//! counts every health transition), backend commands, and the backends, listeners, clients and
//! hosts that timeline actions, clients, links and expectations refer to, checked against
//! `[lb]` (and every reload's `lb`) and the `[[backend]]` and `[[client]]` hosts. Fractions
//! are checked where they are written, and what is wrong with an expectation as a whole (a
//! window that ends before it starts, no bound at all) at its `[[expect]]` line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use udplb_core::config::{QuicLbEntry, duration};
use udplb_core::{BackendCommand, Config};

mod expect;
mod user_config;

pub use expect::{
    Answered, AnsweredPerClient, ClientAnswered, Datagrams, Detectable, Direction, DropDirection,
    EventSelector, Expectation, Fraction, NoTransition, PlatformCount, QuicUnknownConnections, Share,
    Transitions,
};

/// One scenario file. Read it with [`Scenario::parse`] or [`Scenario::load`]: the file's
/// `kind` and `action` keys are turned into serde's enum form first (see `retag`), so that
/// every key is deserialized straight from the text and an error points at its own line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in verdict tables.
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// Seed of the run (overridable from the command line).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Virtual time the run lasts.
    #[serde(with = "duration::required")]
    pub duration: Duration,
    /// The balancer's configuration, in the shell's schema.
    pub lb: Config,
    /// The network between every pair of hosts.
    #[serde(default)]
    pub network: NetworkSpec,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientSpec>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendSpec>,
    #[serde(default, rename = "timeline")]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// The faults `sweep` may draw from: the expectations must hold anywhere in it.
    #[serde(default)]
    pub envelope: Envelope,
    /// Several balancer instances behind an ECMP-like spreader.
    #[serde(default)]
    pub ecmp: Ecmp,
    /// The scenario is that `[lb]` is refused: validation must reject it with a message
    /// containing this text (empty: any message). Nothing runs; the verdict is the refusal.
    #[serde(default)]
    pub rejected: Option<String>,
    /// When the liveness phase runs after the scenario's end (`docs/scenarios.md`, "sweep").
    #[serde(default)]
    pub liveness: Liveness,
    /// What the balancer's simulated kernel fails, and how often.
    #[serde(default)]
    pub platform: PlatformSpec,
}

/// When a run ends with the liveness phase: every fault healed, clients sending on, and
/// every client answered and every enabled backend Up within a bound the configuration gives.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Under `sweep` only (the default): `run` stops at `duration`, as the snapshots show.
    #[default]
    Sweep,
    /// In every run, `run` included (a shrunk reproduction of a liveness failure says this).
    Always,
    /// Never: the scenario's end state is not meant to recover (a backend that stays dead).
    Off,
}

/// Faults of the balancer's own sockets (`[platform]`): each a probability, drawn per open or
/// per send from a random stream of the platform's own. All zero (the default): nothing is
/// drawn at all.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSpec {
    /// Opening an upstream socket fails (a pool socket when the pool grows, or a per-flow
    /// socket), as with EMFILE.
    #[serde(default)]
    pub open_fail: f64,
    /// A send to a backend fails with an error (one the shell's retry does not clear).
    #[serde(default)]
    pub upstream_send_fail: f64,
    /// A send to a backend fails with EMSGSIZE.
    #[serde(default)]
    pub upstream_too_long: f64,
    /// A send to a backend finds its socket's send buffer full (EAGAIN, ENOBUFS).
    #[serde(default)]
    pub upstream_buffer_full: f64,
    /// A send to a client (from a listener socket) fails with an error.
    #[serde(default)]
    pub client_send_fail: f64,
    /// A send to a client fails with EMSGSIZE.
    #[serde(default)]
    pub client_too_long: f64,
    /// A send to a client finds the listener's send buffer full.
    #[serde(default)]
    pub client_buffer_full: f64,
    /// How the kernel picks a worker's listener socket for a client datagram (with
    /// `process.workers` > 1): `steered` (the default) runs the shell's steering program
    /// (`udplb_core::steer`: the affinity key, hashed); `kernel` is the kernel's own hash of
    /// the 4-tuple with a per-boot secret, as a shell without the program would get — to show
    /// what the steering prevents. Not a fault: a sweep never draws it.
    #[serde(default)]
    pub reuseport: Reuseport,
}

/// How a listener's SO_REUSEPORT group picks a socket (`[platform] reuseport`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reuseport {
    /// The shell's steering program: the affinity key decides.
    #[default]
    Steered,
    /// The kernel's hash of the 4-tuple.
    Kernel,
}

impl PlatformSpec {
    /// No fault can happen.
    pub fn is_empty(&self) -> bool {
        self.probabilities().iter().all(|(_, p)| *p <= 0.0)
    }

    fn probabilities(&self) -> [(&'static str, f64); 7] {
        [
            ("open_fail", self.open_fail),
            ("upstream_send_fail", self.upstream_send_fail),
            ("upstream_too_long", self.upstream_too_long),
            ("upstream_buffer_full", self.upstream_buffer_full),
            ("client_send_fail", self.client_send_fail),
            ("client_too_long", self.client_too_long),
            ("client_buffer_full", self.client_buffer_full),
        ]
    }

    /// Each probability in 0..=1, and the three of one direction's sends together too.
    fn check(&self) -> Result<(), ScenarioError> {
        for (key, p) in self.probabilities() {
            if !(0.0..=1.0).contains(&p) {
                return Err(ScenarioError(format!(" platform.{key} must lie in 0..=1, not {p}")));
            }
        }
        let upstream = self.upstream_send_fail + self.upstream_too_long + self.upstream_buffer_full;
        let client = self.client_send_fail + self.client_too_long + self.client_buffer_full;
        for (direction, sum) in [("upstream", upstream), ("client", client)] {
            if sum > 1.0 {
                return Err(ScenarioError(format!(
                    " platform: the {direction}_* probabilities add up to {sum}, more than 1"
                )));
            }
        }
        Ok(())
    }
}

/// Balancer instances sharing the listeners' addresses: a spreader hashes each client address
/// to one of them, as ECMP routing does; `rehash` on the timeline changes the hash. Each
/// instance is a process of its own, with `[lb]`'s configuration or, given `[[ecmp.instance]]`
/// tables, each its own (`[ecmp.instance.lb]`; an instance without one runs `[lb]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecmp {
    /// How many instances (default: one, or as many as `[[ecmp.instance]]` tables).
    #[serde(default)]
    pub instances: Option<usize>,
    #[serde(default, rename = "instance")]
    pub instance_specs: Vec<InstanceSpec>,
}

/// One balancer instance of `[ecmp]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// This instance's own configuration, instead of `[lb]`.
    #[serde(default)]
    pub lb: Option<Config>,
}

impl Ecmp {
    /// The number of balancer instances.
    pub fn count(&self) -> usize {
        self.instances.unwrap_or(self.instance_specs.len().max(1))
    }
}

impl Scenario {
    /// The configuration instance `instance` starts with.
    pub fn lb_of(&self, instance: usize) -> &Config {
        self.ecmp.instance_specs.get(instance).and_then(|spec| spec.lb.as_ref()).unwrap_or(&self.lb)
    }
}

/// Ranges of network faults within which a scenario's expectations must hold. `sweep` draws
/// each seed's values from these ranges (swarm testing), so a sweep failure is a real bug,
/// not an unfair draw. A missing range keeps the `[network]` value.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(default)]
    pub loss: Option<(f64, f64)>,
    #[serde(default)]
    pub duplicate: Option<(f64, f64)>,
    #[serde(default)]
    pub reorder: Option<(f64, f64)>,
    #[serde(default)]
    pub icmp_loss: Option<(f64, f64)>,
    #[serde(default)]
    pub latency: Option<(TimeOf, TimeOf)>,
    #[serde(default)]
    pub jitter: Option<(TimeOf, TimeOf)>,
    /// Ranges of the `[platform]` faults (a missing range keeps the `[platform]` value).
    #[serde(default)]
    pub open_fail: Option<(f64, f64)>,
    #[serde(default)]
    pub upstream_send_fail: Option<(f64, f64)>,
    #[serde(default)]
    pub upstream_too_long: Option<(f64, f64)>,
    #[serde(default)]
    pub upstream_buffer_full: Option<(f64, f64)>,
    #[serde(default)]
    pub client_send_fail: Option<(f64, f64)>,
    #[serde(default)]
    pub client_too_long: Option<(f64, f64)>,
    #[serde(default)]
    pub client_buffer_full: Option<(f64, f64)>,
}

fn default_seed() -> u64 {
    1
}

/// Link properties, the same for every pair of hosts, and faults of one host's own link;
/// changeable on the timeline.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way delay.
    #[serde(default = "NetworkSpec::default_latency", with = "duration::required")]
    pub latency: Duration,
    /// Up to this much extra delay, uniformly drawn per datagram.
    #[serde(default = "NetworkSpec::default_zero", with = "duration::required")]
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    #[serde(default)]
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay` (and so overtaken).
    #[serde(default)]
    pub reorder: f64,
    #[serde(default = "NetworkSpec::default_reorder_delay", with = "duration::required")]
    pub reorder_delay: Duration,
    /// Largest datagram a link carries; bigger ones are dropped.
    #[serde(default = "NetworkSpec::default_mtu")]
    pub mtu: usize,
    /// Probability that an ICMP error is lost.
    #[serde(default)]
    pub icmp_loss: f64,
    /// ICMP errors a host sends per second at most, to all destinations together (kernels
    /// rate-limit them; Linux's `net.ipv4.icmp_msgs_per_sec`).
    #[serde(default = "NetworkSpec::default_icmp_rate")]
    pub icmp_per_second: u32,
    /// Linux's per-destination ICMP rate limit (`net.ipv4.icmp_ratelimit`): each host keeps a
    /// token bucket per destination IP that gains a token every this long, holds at most
    /// `icmp_burst`, and spends one per ICMP error. Zero (the default) turns it off.
    #[serde(default = "NetworkSpec::default_zero", with = "duration::required")]
    pub icmp_ratelimit: Duration,
    /// The per-destination bucket's size (Linux: 6), and what it holds at first.
    #[serde(default = "NetworkSpec::default_icmp_burst")]
    pub icmp_burst: u32,
    /// How long a host keeps a path MTU it learned from an ICMP "fragmentation needed"
    /// (Linux's `net.ipv4.route.mtu_expires`: 10 minutes).
    #[serde(default = "NetworkSpec::default_pmtu_expires", with = "duration::required")]
    pub pmtu_expires: Duration,
    /// Faults of one host's link only (`[[network.link]]`), on top of the above.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
}

/// One host's own link: what happens to every datagram (and ICMP error) it sends or receives,
/// beside what the whole network does.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The host, by name (`lb` is the balancer).
    pub host: Name,
    /// Probability that a datagram to or from the host is lost on its link, drawn apart from
    /// the network's own `loss`.
    #[serde(default)]
    pub loss: Fraction,
    /// Which of the host's datagrams `loss` takes: `both` (the default), `in` (those sent to
    /// it) or `out` (those it sends), as a firewall rule on one chain would.
    #[serde(default)]
    pub direction: LinkDirection,
    /// Largest IP packet (payload and 28 bytes of IPv4 and UDP headers) that reaches the host
    /// over its link. A bigger datagram sent to it is lost on the way, and the router before
    /// the link sends its sender an ICMP "fragmentation needed" naming this MTU; the host's own
    /// datagrams are fragmented by its own kernel and get through.
    #[serde(default)]
    pub mtu: Option<usize>,
    /// Which packets the link's faults take: `any` (the default), or `udp` only (as a firewall
    /// rule with `-p udp` would: TCP health probes then pass).
    #[serde(default)]
    pub protocol: LinkProtocol,
    /// Extra one-way delay of every datagram through the link (in its `direction`), on top of
    /// the network's latency.
    #[serde(default = "zero", with = "duration::required")]
    pub latency: Duration,
    /// Probability that a datagram through the link (in its `direction`) is delivered twice.
    #[serde(default)]
    pub duplicate: Fraction,
}

/// Which packets a host link's faults apply to.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkProtocol {
    /// Every packet: UDP datagrams, ICMP errors and TCP probes.
    #[default]
    Any,
    /// UDP datagrams (and ICMP errors) only.
    Udp,
}

/// Which way a host link's loss applies.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkDirection {
    /// Datagrams to and from the host.
    #[default]
    Both,
    /// Datagrams to the host only.
    In,
    /// Datagrams from the host only.
    Out,
}

/// Bytes of IPv4 and UDP headers in front of a datagram's payload, for link MTUs.
pub const IP_UDP_HEADERS: usize = 28;

impl NetworkSpec {
    fn default_latency() -> Duration {
        Duration::from_millis(1)
    }
    fn default_zero() -> Duration {
        Duration::ZERO
    }
    fn default_reorder_delay() -> Duration {
        Duration::from_millis(5)
    }
    fn default_mtu() -> usize {
        65_535
    }
    fn default_icmp_rate() -> u32 {
        1_000
    }
    fn default_icmp_burst() -> u32 {
        6
    }
    fn default_pmtu_expires() -> Duration {
        Duration::from_secs(600)
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency: Self::default_latency(),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Self::default_reorder_delay(),
            mtu: Self::default_mtu(),
            icmp_loss: 0.0,
            icmp_per_second: Self::default_icmp_rate(),
            icmp_ratelimit: Duration::ZERO,
            icmp_burst: Self::default_icmp_burst(),
            pmtu_expires: Self::default_pmtu_expires(),
            links: Vec::new(),
        }
    }
}

/// A client host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: String,
    /// Its IP address.
    pub address: IpAddr,
    /// The listener it talks to (by name).
    pub listener: Name,
    /// The balancer's address it sends to, when its listener is on a wildcard address
    /// (`0.0.0.0`, `[::]`, where it is required): one of the host's addresses, each a VIP of
    /// its own. Replies must come back from it: a client with a connected socket (most
    /// resolvers, QUIC stacks) drops any other.
    #[serde(default)]
    pub to: Option<IpAddr>,
    /// What it does: the file's `kind` and that kind's keys, beside the three above.
    pub model: ClientModel,
}

/// What a client does.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientModel {
    /// Sends `count` requests, one every `interval` from `start`, and expects `replies` to
    /// each (a request is answered when all have come back).
    RequestResponse {
        #[serde(default = "zero", with = "duration::required")]
        start: Duration,
        #[serde(with = "duration::required")]
        interval: Duration,
        count: u32,
        #[serde(default = "one")]
        replies: u32,
        /// A new source port per request (a stub resolver) instead of one socket.
        #[serde(default)]
        new_port_per_request: bool,
        #[serde(default = "default_port")]
        port: u16,
        /// Bytes per request (at least the request's own tag), or 0: empty datagrams (legal
        /// UDP; some keepalive schemes send them), each answered by the oldest request still
        /// owed a reply.
        #[serde(default = "default_size")]
        size: usize,
        /// The client is an upstream balancer relaying for this client: every request starts
        /// with a PROXY v2 header naming it (what `accept_proxy` reads).
        #[serde(default)]
        proxy_for: Option<SocketAddr>,
    },
    /// Spoofed sources: `count` one-way datagrams, each from another of `sources` addresses of
    /// 198.18.0.0/15 (or, with `one_host`, of `sources` ports of the client's address), one
    /// every `interval` from `start`. Nothing answers them.
    Flood {
        #[serde(default = "zero", with = "duration::required")]
        start: Duration,
        #[serde(with = "duration::required")]
        interval: Duration,
        count: u32,
        sources: u32,
        /// Each source keeps one port (N senders that keep sending), instead of a new port per
        /// datagram (a spoofed flood).
        #[serde(default)]
        keep_ports: bool,
        /// Every datagram from the client's own `address`: the `sources` are its ports (one
        /// host behind which many senders sit, or one host flooding from many ports).
        #[serde(default)]
        one_host: bool,
    },
    /// One QUIC connection from one socket on `port`: `count` requests, one every `interval`
    /// from `start`, each `size` bytes after its QUIC header and expecting one reply. Its
    /// first requests are Initials (long headers to a DCID of its own choosing); once a reply
    /// carries the server's connection ID, short headers to that ID (`sim/src/quic.rs`).
    Quic {
        #[serde(default = "zero", with = "duration::required")]
        start: Duration,
        #[serde(with = "duration::required")]
        interval: Duration,
        count: u32,
        #[serde(default = "default_port")]
        port: u16,
        /// Bytes after the header (at least the request's own tag).
        #[serde(default = "default_size")]
        size: usize,
    },
}

fn zero() -> Duration {
    Duration::ZERO
}
fn one() -> u32 {
    1
}
fn default_port() -> u16 {
    40_000
}
fn default_size() -> usize {
    32
}

/// A backend host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub name: String,
    /// Where it receives UDP (the address of a backend in `[lb]`).
    pub address: SocketAddr,
    /// How it answers.
    #[serde(default)]
    pub model: BackendModel,
    /// Extra time before each answer.
    #[serde(default = "zero", with = "duration::required")]
    pub delay: Duration,
    /// Its companion TCP port accepts connections (TCP health probes).
    #[serde(default = "yes")]
    pub tcp_open: bool,
    /// Decode and check a PROXY v2 header on the datagrams it receives.
    #[serde(default)]
    pub expect_proxy: Option<ProxyExpectation>,
    /// It answers from this UDP port instead of the one it received on (some servers reply
    /// from another socket than their listening one).
    #[serde(default)]
    pub reply_port: Option<u16>,
    /// It answers from this IP address instead of its own (a multi-homed server whose kernel
    /// picks another source address).
    #[serde(default)]
    pub reply_address: Option<IpAddr>,
    /// Up to this much more delay per answer, uniformly drawn (a server whose latency
    /// varies).
    #[serde(default = "zero", with = "duration::required")]
    pub delay_jitter: Duration,
    /// Each answer is sent a second time, this long after the first (a server that retries
    /// its reply, or a copy made late on the way back).
    #[serde(default)]
    pub late_copy: Option<TimeOf>,
    /// A `quic` backend's QUIC-LB server ID, in hex (two digits per octet): what it encodes
    /// in the connection IDs it issues.
    #[serde(default)]
    pub server_id: Option<String>,
    /// The QUIC-LB configuration a `quic` backend issues connection IDs with (`id`,
    /// `server_id_len`, `nonce_len`, `key`: the same table as `[lb]`'s `quic_lb.configs`).
    #[serde(default)]
    pub cid_config: Option<QuicLbEntry>,
}

impl BackendSpec {
    /// Whether the host is, or may become on the timeline, a `quic` server.
    pub fn quic_in(&self, timeline: &[TimelineEntry]) -> bool {
        self.model == BackendModel::Quic
            || timeline.iter().any(|entry| {
                matches!(&entry.action, Action::SetBackend(change)
                    if change.backend == *self.name && change.model == Some(BackendModel::Quic))
            })
    }
}

/// What `set_backend` changes in a backend host from then on; a missing key keeps its value.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendChange {
    pub backend: Name,
    #[serde(default)]
    pub model: Option<BackendModel>,
    #[serde(default)]
    pub delay: Option<TimeOf>,
    #[serde(default)]
    pub delay_jitter: Option<TimeOf>,
    #[serde(default)]
    pub late_copy: Option<TimeOf>,
    #[serde(default)]
    pub reply_port: Option<u16>,
    #[serde(default)]
    pub reply_address: Option<IpAddr>,
    #[serde(default)]
    pub tcp_open: Option<bool>,
    /// A `quic` backend issues new connection IDs with this configuration (a config
    /// rotation); its connections keep theirs.
    #[serde(default)]
    pub cid_config: Option<QuicLbEntry>,
}

fn yes() -> bool {
    true
}

/// How a backend answers a datagram.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendModel {
    /// One reply carrying the request's payload.
    #[default]
    Echo,
    /// One reply per request, like a DNS server (the same as echo, named for readability).
    Dns,
    /// Two replies per request.
    TwoReplies,
    /// Never answers, but accepts (no ICMP).
    Silent,
    /// One reply ten times the request's size: a reflector (an open resolver answering a
    /// short query with a long answer).
    Amplifier,
    /// A QUIC server that issues connection IDs with QUIC-LB (its `server_id` and
    /// `cid_config`): it answers a packet of a connection it has, opens one for an Initial,
    /// and stays silent for a short header to an ID it did not issue (`sim/src/quic.rs`).
    Quic,
}

/// Which datagrams must carry a PROXY v2 header.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyExpectation {
    /// The first datagram of each upstream (flow) only.
    First,
    /// Every datagram.
    Every,
}

/// Something that happens at a point of virtual time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    #[serde(with = "duration::required")]
    pub at: Duration,
    /// The file's `action` and that action's keys.
    pub action: Action,
}

/// Timeline actions.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// The backend's process dies: its UDP and TCP ports are closed (ICMP refusals, TCP RST).
    Kill { backend: Name },
    /// The backend answers again, as its `[[backend]]` says (from its own port, or its
    /// `reply_port`).
    Restore { backend: Name },
    /// Its UDP port is closed but its companion TCP port still accepts.
    RefuseUdp { backend: Name },
    /// A firewall drops its UDP datagrams silently; its companion TCP port still accepts.
    DropUdp { backend: Name },
    /// It answers from UDP port `port` instead of the one it received on, until `restore`.
    ReplyFrom { backend: Name, port: u16 },
    /// A firewall drops everything to it silently (no ICMP, no RST).
    Blackhole { backend: Name },
    /// Cut the link between two hosts (by name; "lb" is the balancer), both ways or one way.
    Partition {
        from: Name,
        to: Name,
        #[serde(default)]
        one_way: bool,
    },
    /// Remove every partition.
    Heal,
    /// Change link properties.
    Network(NetworkSpec),
    /// Drain a listener.
    DrainListener { listener: Name },
    /// An operator command on a backend (by its id in `[lb]`).
    Backend { backend: Name, command: Command },
    /// Reload the balancer (every instance, or instance `instance`) with a new configuration.
    /// With `rejected`, the configuration must be refused, with a message containing that text
    /// (empty: any), and the running one kept.
    Reload {
        lb: Config,
        #[serde(default)]
        instance: Option<usize>,
        #[serde(default)]
        rejected: Option<String>,
    },
    /// SIGTERM to the balancer (every instance, or instance `instance`): every listener of
    /// every worker drains; the process exits once no flow is left, and its sockets close.
    Sigterm {
        #[serde(default)]
        instance: Option<usize>,
    },
    /// Restart with handover (every instance, or instance `instance`): each worker's core is
    /// replaced by one restored from its snapshot, its sockets kept (issue 15). The run must go
    /// on exactly as without it.
    Handover {
        #[serde(default)]
        instance: Option<usize>,
    },
    /// Cancel a listener's drain: it takes new flows again.
    ResumeListener { listener: Name },
    /// A backend host changes how it answers (its model, delays, reply source, TCP port).
    SetBackend(BackendChange),
    /// The ECMP spreader rehashes: clients may move to another balancer instance.
    Rehash,
    /// A NAT in front of the client maps its socket to a new port; replies to the old port
    /// are dropped.
    Rebind { client: Name },
}

impl Action {
    /// Actions that take no key besides `at` and `action`.
    const UNITS: &[&str] = &["heal", "rehash"];

    /// The action's name, as the file writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill { .. } => "kill",
            Action::Restore { .. } => "restore",
            Action::RefuseUdp { .. } => "refuse_udp",
            Action::DropUdp { .. } => "drop_udp",
            Action::ReplyFrom { .. } => "reply_from",
            Action::Blackhole { .. } => "blackhole",
            Action::Partition { .. } => "partition",
            Action::Heal => "heal",
            Action::Network(_) => "network",
            Action::DrainListener { .. } => "drain_listener",
            Action::Backend { .. } => "backend",
            Action::Reload { .. } => "reload",
            Action::Rehash => "rehash",
            Action::Rebind { .. } => "rebind",
            Action::Sigterm { .. } => "sigterm",
            Action::Handover { .. } => "handover",
            Action::ResumeListener { .. } => "resume_listener",
            Action::SetBackend(_) => "set_backend",
        }
    }
}

/// An operator command on a backend, as a scenario writes it: `pause`, `resume`, `enable`,
/// `disable`, `drain` or `weight N`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Command(pub BackendCommand);

impl FromStr for Command {
    type Err = String;

    fn from_str(text: &str) -> Result<Command, String> {
        let command = match text {
            "pause" => BackendCommand::Pause,
            "resume" => BackendCommand::Resume,
            "enable" => BackendCommand::Enable,
            "disable" => BackendCommand::Disable,
            "drain" => BackendCommand::Drain,
            other => match other.strip_prefix("weight ").map(str::parse) {
                Some(Ok(weight)) => BackendCommand::Weight(weight),
                _ => {
                    return Err(format!(
                        "unknown backend command `{other}`, expected one of `pause`, `resume`, \
                         `enable`, `disable`, `drain`, `weight N`"
                    ));
                }
            },
        };
        Ok(Command(command))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            BackendCommand::Pause => f.write_str("pause"),
            BackendCommand::Resume => f.write_str("resume"),
            BackendCommand::Enable => f.write_str("enable"),
            BackendCommand::Disable => f.write_str("disable"),
            BackendCommand::Drain => f.write_str("drain"),
            BackendCommand::Weight(weight) => write!(f, "weight {weight}"),
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Command, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A name that refers to something declared elsewhere in the file (a backend, a listener, a
/// host), kept with where it was written so that a name that matches nothing is reported at
/// its own line. It reads as the name itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Name(Spanned<String>);

impl Name {
    pub fn as_str(&self) -> &str {
        self.0.get_ref()
    }

    /// Where the name is in the file's text (byte offsets).
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

/// A point of virtual time written as a duration since the start ("14s").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TimeOf(#[serde(with = "duration::required")] pub Duration);

impl fmt::Display for TimeOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As written: `2s`, `1.5s`, `250ms`.
        write!(f, "{:?}", self.0)
    }
}

/// Why a scenario file cannot run.
#[derive(Debug)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: cannot read: {e}", path.display())))?;
        Scenario::parse(&text)
            .map_err(|ScenarioError(message)| ScenarioError(format!("{}:{message}", path.display())))
    }

    /// Reads and checks a scenario file to run against a user's own configuration file (the
    /// shell's format, read as `udplb run -c FILE` reads it): the scenario supplies the world,
    /// `config_path` the `[lb]`, replacing the scenario's own if it has one. Names in the
    /// scenario are checked against the configuration; every backend the configuration lists
    /// needs a `[[backend]]` host at its address, and a host named as a backend must be at
    /// that backend's address (`docs/scenarios.md`, "Writing scenarios for your deployment").
    pub fn load_with_config(path: &Path, config_path: &Path) -> Result<Scenario, ScenarioError> {
        let config_file = config_path.display().to_string();
        let config_text = std::fs::read_to_string(config_path)
            .map_err(|e| ScenarioError(format!("{config_file}: cannot read: {e}")))?;
        let config = Config::from_toml_str(&config_text)
            .map_err(|errors| ScenarioError(errors.render(&config_file)))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: cannot read: {e}", path.display())))?;
        let in_file = |ScenarioError(message)| ScenarioError(format!("{}:{message}", path.display()));
        let scenario = Scenario::parse_with(&text, Some((config, &config_file))).map_err(in_file)?;
        let config_error = |span, message: &str| {
            let ScenarioError(message) = located(&config_text, span, message);
            ScenarioError(format!("{config_file}:{message}"))
        };
        let file = path.display().to_string();
        user_config::check_addresses(&scenario, (&file, &text), (&config_file, &config_text)).map_err(
            |error| match error {
                user_config::Mismatch::InScenario(span, message) => in_file(located(&text, span, &message)),
                user_config::Mismatch::InConfig(span, message) => config_error(span, &message),
            },
        )?;
        Ok(scenario)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_with(text, None)
    }

    /// Parses and checks scenario text; with `lb`, a configuration and the name of its file,
    /// the scenario's `[lb]` is that configuration.
    fn parse_with(text: &str, lb: Option<(Config, &str)>) -> Result<Scenario, ScenarioError> {
        let toml_error = |error: toml::de::Error| located(text, error.span(), error.message());
        let mut root = DeTable::parse(text).map_err(toml_error)?;
        let table = root.get_mut();
        if lb.is_none() && !table.contains_key("lb") {
            return Err(ScenarioError(
                " no [lb]: a scenario without one runs against a configuration file \
                 (`udplb-sim run --config FILE SCENARIO`)"
                    .into(),
            ));
        }
        if lb.is_some() {
            // Replaced below: an empty table stands in for it (every `[lb]` key has a default).
            table.remove("lb");
            let key = Spanned::new(0..0, std::borrow::Cow::Borrowed("lb"));
            table.insert(key, Spanned::new(0..0, DeValue::Table(DeTable::new())));
        }
        retag(text, table, "expect", "kind", &[], None, &[])?;
        retag(text, table, "timeline", "action", &["at"], Some("action"), Action::UNITS)?;
        retag(text, table, "client", "kind", &["name", "address", "listener", "to"], Some("model"), &[])?;
        let mut scenario = Scenario::deserialize(toml::de::Deserializer::from(root)).map_err(toml_error)?;
        let lb_place = match lb {
            Some((config, file)) => {
                scenario.lb = config;
                file.to_owned()
            }
            None => "[lb]".to_owned(),
        };
        scenario.check(text, &lb_place)?;
        Ok(scenario)
    }

    /// What serde cannot see: settings that depend on each other, and names that must refer
    /// to something the file declares elsewhere.
    /// `lb_place` says where `[lb]` came from (`[lb]`, or a configuration file's name).
    fn check(&self, text: &str, lb_place: &str) -> Result<(), ScenarioError> {
        let in_lb = format!(" in {lb_place}");
        let instances = self.ecmp.count();
        if !(1..=8).contains(&instances) {
            return Err(ScenarioError(" ecmp.instances must be between 1 and 8".into()));
        }
        if !self.ecmp.instance_specs.is_empty() && self.ecmp.instance_specs.len() != instances {
            return Err(ScenarioError(format!(
                " ecmp.instances is {instances} but there are {} [[ecmp.instance]] tables",
                self.ecmp.instance_specs.len()
            )));
        }
        self.platform.check()?;
        let lb_errors = |config: &Config, prefix: &str| {
            config.validate().map_err(|errors| {
                let lines: Vec<String> =
                    errors.iter().map(|e| format!(" field `{prefix}.{}`: {e}", e.path())).collect();
                ScenarioError(lines.join("\n"))
            })
        };
        // A configuration the scenario expects refused: refused, and for the reason given.
        let refused = |config: &Config, expected: &str, what: &str| match config.validate() {
            Ok(()) => Err(ScenarioError(format!(" {what} is expected to be rejected, but it is valid"))),
            Err(errors) => {
                let rendered = udplb_core::config::render_errors(&errors);
                if rendered.contains(expected) {
                    Ok(())
                } else {
                    Err(ScenarioError(format!(" {what} is rejected, but not with `{expected}`: {rendered}")))
                }
            }
        };
        if let Some(expected) = &self.rejected {
            return refused(&self.lb, expected, "[lb]");
        }
        lb_errors(&self.lb, "lb")?;
        let mut configs = vec![&self.lb];
        for (index, spec) in self.ecmp.instance_specs.iter().enumerate() {
            if let Some(lb) = &spec.lb {
                lb_errors(lb, &format!("ecmp.instance[{index}].lb"))?;
                configs.push(lb);
            }
        }
        for (index, entry) in self.timeline.iter().enumerate() {
            match &entry.action {
                Action::Reload { lb, instance, rejected } => {
                    if instance.is_some_and(|i| i >= instances) {
                        return Err(ScenarioError(format!(
                            " timeline[{index}]: no instance {}; there are {instances}",
                            instance.unwrap_or_default()
                        )));
                    }
                    match rejected {
                        Some(expected) => refused(lb, expected, &format!("timeline[{index}].lb"))?,
                        None => {
                            lb_errors(lb, &format!("timeline[{index}].lb"))?;
                            configs.push(lb);
                        }
                    }
                }
                Action::Sigterm { instance: Some(instance) }
                | Action::Handover { instance: Some(instance) }
                    if *instance >= instances =>
                {
                    return Err(ScenarioError(format!(
                        " timeline[{index}]: no instance {instance}; there are {instances}"
                    )));
                }
                _ => {}
            }
        }
        // Backends and listeners by their names in `[lb]` or any reload's `lb`.
        let mut lb_backends: Vec<&str> = configs
            .iter()
            .flat_map(|c| c.clusters.values())
            .flat_map(|c| &c.backends)
            .map(|b| b.id.as_str())
            .collect();
        let mut lb_listeners: Vec<&str> =
            configs.iter().flat_map(|c| c.listeners.keys()).map(String::as_str).collect();
        let backend_hosts: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let clients: Vec<&str> = self.clients.iter().map(|c| c.name.as_str()).collect();
        let mut hosts: Vec<&str> = std::iter::once("lb").chain(backend_hosts.iter().copied()).collect();
        hosts.extend(&clients);
        for names in [&mut lb_backends, &mut lb_listeners] {
            names.sort_unstable();
            names.dedup();
        }
        // `what` names the kind of thing looked for, `place` where (may be empty).
        let known = |name: &Name, names: &[&str], what: &str, place: &str| {
            if names.contains(&name.as_str()) {
                return Ok(());
            }
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            let list = if list.is_empty() { "none".to_owned() } else { list.join(", ") };
            let message = format!("no {what} `{name}`{place}; there are: {list}");
            Err(located(text, Some(name.span()), &message))
        };
        let initial_listeners: Vec<&str> = self.lb.listeners.keys().map(String::as_str).collect();
        for client in &self.clients {
            known(&client.listener, &initial_listeners, "listener", &in_lb)?;
            let Some(listener) = self.lb.listeners.get(client.listener.as_str()) else { continue };
            let wildcard = listener.address.ip().is_unspecified();
            let problem = match client.to {
                None if wildcard => Some(format!(
                    "client `{}` talks to listener `{}` on {}, a wildcard address: say which of \
                     the balancer's addresses it sends to, e.g. `to = \"{}\"`",
                    client.name.as_str(),
                    client.listener.as_str(),
                    listener.address,
                    if listener.address.is_ipv4() { "10.0.0.1" } else { "2001:db8::1" },
                )),
                Some(to) if !wildcard && to != listener.address.ip() => Some(format!(
                    "client `{}` sends to {to}, but listener `{}` is on {} only: `to` is for \
                     listeners on a wildcard address",
                    client.name.as_str(),
                    client.listener.as_str(),
                    listener.address,
                )),
                Some(to) if wildcard && listener.address.is_ipv4() && !to.is_ipv4() => Some(format!(
                    "client `{}` sends to {to}, an IPv6 address, but listener `{}` on {} takes \
                     IPv4 only",
                    client.name.as_str(),
                    client.listener.as_str(),
                    listener.address,
                )),
                _ => None,
            };
            if let Some(message) = problem {
                return Err(located(text, Some(client.listener.span()), &message));
            }
        }
        let links = std::iter::once(&self.network)
            .chain(self.timeline.iter().filter_map(|entry| match &entry.action {
                Action::Network(network) => Some(network),
                _ => None,
            }))
            .flat_map(|network| &network.links);
        for link in links {
            known(&link.host, &hosts, "host", "")?;
        }
        // A client named by an expectation on its replies: one that expects some.
        let answering = |name: &Name| {
            known(name, &clients, "[[client]]", "")?;
            match self.clients.iter().find(|c| c.name == *name).map(|c| &c.model) {
                Some(ClientModel::Flood { .. }) => {
                    let message = format!("client `{name}` is a flood: it expects no replies");
                    Err(located(text, Some(name.span()), &message))
                }
                _ => Ok(()),
            }
        };
        for entry in &self.timeline {
            match &entry.action {
                Action::Kill { backend }
                | Action::Restore { backend }
                | Action::RefuseUdp { backend }
                | Action::DropUdp { backend }
                | Action::ReplyFrom { backend, .. }
                | Action::SetBackend(BackendChange { backend, .. })
                | Action::Blackhole { backend } => known(backend, &backend_hosts, "[[backend]] host", "")?,
                Action::Partition { from, to, .. } => {
                    known(from, &hosts, "host", "")?;
                    known(to, &hosts, "host", "")?;
                }
                Action::DrainListener { listener } | Action::ResumeListener { listener } => {
                    known(listener, &lb_listeners, "listener", &in_lb)?
                }
                Action::Backend { backend, .. } => known(backend, &lb_backends, "backend", &in_lb)?,
                Action::Rebind { client } => known(client, &clients, "[[client]]", "")?,
                Action::Heal
                | Action::Network(_)
                | Action::Reload { .. }
                | Action::Rehash
                | Action::Sigterm { .. }
                | Action::Handover { .. } => {}
            }
        }
        self.check_quic()?;
        let quic_hosts: Vec<&str> =
            self.backends.iter().filter(|b| b.quic_in(&self.timeline)).map(|b| b.name.as_str()).collect();
        for expectation in &self.expectations {
            match expectation {
                Expectation::Health { backend, .. }
                | Expectation::Detected { backend, .. }
                | Expectation::NoNewFlows { backend, .. }
                | Expectation::NewFlowsAtLeast { backend, .. }
                | Expectation::HealthHeld { backend, .. }
                | Expectation::Strays { backend, .. }
                | Expectation::Share(Share { backend, .. })
                | Expectation::NoTransition(NoTransition { backend, .. })
                | Expectation::Transitions(Transitions { backend: Some(backend), .. }) => {
                    known(backend, &lb_backends, "backend", &in_lb)?
                }
                Expectation::ClientAnswered(ClientAnswered { client, .. })
                | Expectation::Lost { client: Some(client), .. } => answering(client)?,
                Expectation::Datagrams(Datagrams { backend, client, .. }) => {
                    if let Some(backend) = backend {
                        known(backend, &lb_backends, "backend", &in_lb)?;
                    }
                    if let Some(client) = client {
                        known(client, &clients, "[[client]]", "")?;
                    }
                }
                Expectation::QuicUnknownConnections(QuicUnknownConnections {
                    backend, issued_by, ..
                }) => {
                    if quic_hosts.is_empty() {
                        let message = " a `quic_unknown_connections` expectation, but no [[backend]] is a \
                                       `quic` server (`model = \"quic\"`)";
                        return Err(ScenarioError(message.into()));
                    }
                    for name in [backend, issued_by].into_iter().flatten() {
                        known(name, &quic_hosts, "`quic` [[backend]] host", "")?;
                    }
                }
                Expectation::AnsweredPerClient(_) => {
                    if !self.clients.iter().any(|c| !matches!(c.model, ClientModel::Flood { .. })) {
                        return Err(ScenarioError(
                            " an `answered_per_client` expectation, but no client expects replies".into(),
                        ));
                    }
                }
                Expectation::Lost { client: None, .. }
                | Expectation::Transitions(Transitions { backend: None, .. })
                | Expectation::Answered(_)
                | Expectation::Drops { .. }
                | Expectation::Closes { .. }
                | Expectation::ConsistentPlacement { .. }
                | Expectation::FlowsCreated { .. }
                | Expectation::Platform { .. }
                | Expectation::Events { .. } => {}
                Expectation::Exited { instance, .. } => {
                    if *instance >= self.ecmp.count() {
                        return Err(ScenarioError(format!(
                            " an `exited` expectation names instance {instance}; there are {}",
                            self.ecmp.count()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// `quic` backend hosts: each needs a server ID and a configuration that fit each other,
    /// as does every configuration the timeline rotates it to; no other host takes them.
    fn check_quic(&self) -> Result<(), ScenarioError> {
        for backend in &self.backends {
            let error =
                |message: String| ScenarioError(format!(" [[backend]] `{}`: {message}", backend.name));
            match (backend.quic_in(&self.timeline), &backend.server_id, &backend.cid_config) {
                (true, Some(server_id), Some(config)) => {
                    crate::quic::QuicServer::new(server_id, config).map_err(error)?;
                }
                (true, _, _) => {
                    return Err(error("a `quic` server needs `server_id` and `cid_config`".into()));
                }
                (false, None, None) => {}
                (false, _, _) => {
                    return Err(error(
                        "`server_id` and `cid_config` are a `quic` server's (`model = \"quic\"`)".into(),
                    ));
                }
            }
        }
        for (index, entry) in self.timeline.iter().enumerate() {
            let Action::SetBackend(BackendChange { backend, cid_config: Some(config), .. }) = &entry.action
            else {
                continue;
            };
            let host = self.backends.iter().find(|b| b.name == *backend);
            let error = |message: &str| ScenarioError(format!(" timeline[{index}]: `{backend}` {message}"));
            let Some(host) = host.filter(|host| host.quic_in(&self.timeline)) else {
                return Err(error("is not a `quic` server: `cid_config` is a `quic` server's"));
            };
            if let Some(server_id) = &host.server_id {
                crate::quic::QuicServer::new(server_id, config).map_err(|message| error(&message))?;
            }
        }
        Ok(())
    }
}

/// A message at a place in the text: `LINE:COLUMN: message` (a leading space alone when the
/// place is unknown), for [`Scenario::load`] to put the file's path in front of.
fn located(text: &str, span: Option<Range<usize>>, message: &str) -> ScenarioError {
    let location = span
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{column}: ")
        })
        .unwrap_or_else(|| " ".to_owned());
    ScenarioError(format!("{location}{message}"))
}

/// Turns each table of the array `array` from the file's tagged form into serde's enum form,
/// keeping every span: `{ TAG = "kind", k = v, .. }` becomes `{ kind = { k = v, .. } }`, and,
/// with `wrapper`, `{ OUTER.., wrapper = { kind = { .. } } }` where `outer` keys stay where
/// they were.
///
/// serde's own tagged enums (`#[serde(tag = ..)]`, `flatten`) buffer a table before choosing
/// the variant, which loses every position inside it: an error would point at the array's
/// first table instead of the key at fault, and `Spanned` names could not be kept at all. In
/// this form each key is deserialized straight from the text. Tables without the tag, or a
/// unit kind (`units`) given other keys, are reported here.
fn retag(
    text: &str,
    root: &mut DeTable<'_>,
    array: &str,
    tag: &str,
    outer: &[&str],
    wrapper: Option<&str>,
    units: &[&str],
) -> Result<(), ScenarioError> {
    let Some(value) = root.get_mut(array) else { return Ok(()) };
    // Anything but an array of tables is left for serde to reject with its own message.
    let DeValue::Array(entries) = value.get_mut() else { return Ok(()) };
    for entry in entries.iter_mut() {
        let span = entry.span();
        let DeValue::Table(table) = entry.get_mut() else { continue };
        let Some(kind) = table.remove(tag) else {
            return Err(located(text, Some(span), &format!("missing `{tag}` in this [[{array}]]")));
        };
        let kind_span = kind.span();
        let DeValue::String(kind) = kind.into_inner() else {
            return Err(located(text, Some(kind_span), &format!("`{tag}` must be a string")));
        };
        let mut kept = DeTable::new();
        for key in outer {
            if let Some((key, value)) = table.remove_entry(*key) {
                kept.insert(key, value);
            }
        }
        let inner = std::mem::take(table);
        if units.contains(&kind.as_ref())
            && let Some((key, _)) = inner.iter().next()
        {
            let message =
                format!("unknown field `{}`: `{tag} = \"{kind}\"` takes no other keys", key.get_ref());
            return Err(located(text, Some(key.span()), &message));
        }
        let variant = Spanned::new(kind_span.clone(), kind);
        let mut tagged = DeTable::new();
        tagged.insert(variant, Spanned::new(span.clone(), DeValue::Table(inner)));
        *table = match wrapper {
            Some(wrapper) => {
                kept.insert(
                    Spanned::new(kind_span, std::borrow::Cow::Owned(wrapper.to_owned())),
                    Spanned::new(span, DeValue::Table(tagged)),
                );
                kept
            }
            None => tagged,
        };
    }
    Ok(())
}
