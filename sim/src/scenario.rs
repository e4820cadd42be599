//! Scenario files: a balancer configuration, a small world around it, a timeline of faults and
//! operator actions, and the expectations that must hold. The format is documented in
//! `docs/scenarios.md`; unknown fields are rejected everywhere.
//!
//! The `[lb]` section is the shell's configuration schema: it deserializes into the core's own
//! `Config` (same serde types, same `deny_unknown_fields`) and goes through the same
//! `validate()`, so a scenario tests exactly what an operator deploys.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use udplb_core::config::duration;
use udplb_core::{Config, DropReason};

/// One scenario file.
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
}

/// Balancer instances sharing the listeners' addresses: a spreader hashes each client address
/// to one of them, as ECMP routing does; `rehash` on the timeline changes the hash.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecmp {
    #[serde(default = "one_instance")]
    pub instances: usize,
}

fn one_instance() -> usize {
    1
}

impl Default for Ecmp {
    fn default() -> Self {
        Ecmp { instances: 1 }
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
}

fn default_seed() -> u64 {
    1
}

/// Link properties, the same for every pair of hosts, changeable on the timeline.
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
    /// ICMP errors a host sends per second at most (kernels rate-limit them).
    #[serde(default = "NetworkSpec::default_icmp_rate")]
    pub icmp_per_second: u32,
}

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
        }
    }
}

/// A client host. (Unknown keys are rejected by the flattened model: serde cannot combine
/// `deny_unknown_fields` with `flatten` on the same struct.)
#[derive(Clone, Debug, Deserialize)]
pub struct ClientSpec {
    pub name: String,
    /// Its IP address.
    pub address: IpAddr,
    /// The listener it talks to (by name).
    pub listener: String,
    #[serde(flatten)]
    pub model: ClientModel,
}

/// What a client does.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
        /// Bytes per request (at least the request's own tag).
        #[serde(default = "default_size")]
        size: usize,
    },
    /// Spoofed sources: `count` one-way datagrams, each from another address of `sources`
    /// addresses, one every `interval` from `start`. Nothing answers them.
    Flood {
        #[serde(default = "zero", with = "duration::required")]
        start: Duration,
        #[serde(with = "duration::required")]
        interval: Duration,
        count: u32,
        sources: u32,
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

/// Something that happens at a point of virtual time. (Unknown keys are rejected by the
/// flattened action.)
#[derive(Clone, Debug, Deserialize)]
pub struct TimelineEntry {
    #[serde(with = "duration::required")]
    pub at: Duration,
    #[serde(flatten)]
    pub action: Action,
}

/// Timeline actions.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// The backend's process dies: its UDP and TCP ports are closed (ICMP refusals, TCP RST).
    Kill { backend: String },
    /// The backend answers again.
    Restore { backend: String },
    /// Its UDP port is closed but its companion TCP port still accepts.
    RefuseUdp { backend: String },
    /// A firewall drops everything to it silently (no ICMP, no RST).
    Blackhole { backend: String },
    /// Cut the link between two hosts (by name; "lb" is the balancer), both ways or one way.
    Partition {
        from: String,
        to: String,
        #[serde(default)]
        one_way: bool,
    },
    /// Remove every partition.
    Heal,
    /// Change link properties.
    Network(NetworkSpec),
    /// Drain a listener.
    DrainListener { listener: String },
    /// An operator command on a backend: pause, resume, enable, disable, drain.
    Backend { backend: String, command: String },
    /// Reload the balancer with a new configuration.
    Reload { lb: Config },
    /// The ECMP spreader rehashes: clients may move to another balancer instance.
    Rehash,
    /// A NAT in front of the client maps its socket to a new port; replies to the old port
    /// are dropped.
    Rebind { client: String },
}

/// What must hold at the end of a run (or at a time).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// The backend's health state at time `by` (and from then on until the next timeline
    /// action that touches it).
    Health { backend: String, state: String, by: TimeOf },
    /// After `after`, the backend reaches `state` ("down" or "up") within the worst case the
    /// health scheduler itself computes for its cluster's settings (intervals per state,
    /// jitter, per-probe timeout, rise/fall), plus the network's round trips.
    Detected { backend: String, state: String, after: TimeOf },
    /// No new flow went to the backend between `from` and `to`.
    NoNewFlows { backend: String, from: TimeOf, to: TimeOf },
    /// At least this many new flows went to the backend (in the whole run).
    NewFlowsAtLeast { backend: String, count: u64 },
    /// At least this fraction of all requests got all their replies.
    Answered { at_least: f64 },
    /// Client datagrams dropped for `reason` over the run: at least / at most.
    Drops {
        reason: String,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// Flows closed for `reason`: at least / at most.
    Closes {
        reason: String,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// Every client address whose flows went through more than one balancer instance was
    /// sent to the same backend by each (consistent hashing agreeing across instances), and
    /// at least `moved_at_least` clients did move.
    ConsistentPlacement { moved_at_least: u64 },
    /// Flows created over the run (every instance).
    FlowsCreated {
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// A health or flow event happened exactly `count` times.
    Events { event: String, count: u64 },
}

/// A point of virtual time written as a duration since the start ("14s").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TimeOf(#[serde(with = "duration::required")] pub Duration);

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

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| {
            let location = error
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!("{line}:{column}: ")
                })
                .unwrap_or_else(|| " ".to_owned());
            ScenarioError(format!("{location}{}", error.message()))
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    /// This scenario with its network faults drawn from its envelope by `seed`.
    pub fn with_faults_drawn(&self, seed: u64) -> Scenario {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{Rng, SeedableRng};
        // A stream of its own, so the draw does not shift the run's own random numbers.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5757_4545_5050_0001);
        let mut fraction = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut draw = |range: (f64, f64)| range.0 + (range.1 - range.0) * fraction();
        let mut scenario = self.clone();
        let network = &mut scenario.network;
        let envelope = &self.envelope;
        if let Some(range) = envelope.loss {
            network.loss = draw(range);
        }
        if let Some(range) = envelope.duplicate {
            network.duplicate = draw(range);
        }
        if let Some(range) = envelope.reorder {
            network.reorder = draw(range);
        }
        if let Some(range) = envelope.icmp_loss {
            network.icmp_loss = draw(range);
        }
        let mut draw_time = |(low, high): (TimeOf, TimeOf)| {
            let (low, high) = (low.0.as_nanos() as f64, high.0.as_nanos() as f64);
            Duration::from_nanos(draw((low, high)) as u64)
        };
        if let Some(range) = envelope.latency {
            network.latency = draw_time(range);
        }
        if let Some(range) = envelope.jitter {
            network.jitter = draw_time(range);
        }
        scenario.seed = seed;
        scenario
    }

    fn check(&self) -> Result<(), ScenarioError> {
        if !(1..=8).contains(&self.ecmp.instances) {
            return Err(ScenarioError(" ecmp.instances must be between 1 and 8".into()));
        }
        let lb_errors = |config: &Config, prefix: &str| {
            config.validate().map_err(|errors| {
                let lines: Vec<String> =
                    errors.iter().map(|e| format!(" field `{prefix}.{}`: {e}", e.path())).collect();
                ScenarioError(lines.join("\n"))
            })
        };
        lb_errors(&self.lb, "lb")?;
        for (index, entry) in self.timeline.iter().enumerate() {
            if let Action::Reload { lb } = &entry.action {
                lb_errors(lb, &format!("timeline[{index}].lb"))?;
            }
        }
        for client in &self.clients {
            if !self.lb.listeners.contains_key(&client.listener) {
                return Err(ScenarioError(format!(
                    " client {:?}: no listener {:?} in [lb]",
                    client.name, client.listener
                )));
            }
        }
        for expectation in &self.expectations {
            match expectation {
                Expectation::Drops { reason, .. } if parse_drop_reason(reason).is_none() => {
                    return Err(ScenarioError(format!(" expect: unknown drop reason {reason:?}")));
                }
                Expectation::Detected { state, .. } if !matches!(state.as_str(), "up" | "down") => {
                    return Err(ScenarioError(format!(
                        " expect: detected state {state:?} is not up or down"
                    )));
                }
                Expectation::Health { state, .. } if !matches!(state.as_str(), "up" | "down" | "unknown") => {
                    return Err(ScenarioError(format!(
                        " expect: health state {state:?} is not up, down or unknown"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A drop reason by its metrics name.
pub fn parse_drop_reason(name: &str) -> Option<DropReason> {
    DropReason::ALL.iter().copied().find(|r| r.as_str() == name)
}
