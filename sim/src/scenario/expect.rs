//! The `[[expect]]` part of a scenario file: what must hold at the end of a run (or at a time),
//! each field typed when the file loads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use udplb_core::names::{EventName, Named};
use udplb_core::{CloseReason, DropReason, Health};

use super::{Name, TimeOf};

/// What must hold at the end of a run (or at a time).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// The backend's health state at time `by` (and from then on until the next timeline
    /// action that touches it).
    Health { backend: Name, state: Health, by: TimeOf },
    /// After `after`, the backend reaches `state` (`down` or `up`) within the worst case the
    /// health scheduler itself computes for its cluster's settings (intervals per state,
    /// jitter, per-probe timeout, rise/fall), plus the network's round trips.
    Detected { backend: Name, state: Detectable, after: TimeOf },
    /// No new flow went to the backend between `from` and `to`.
    NoNewFlows { backend: Name, from: TimeOf, to: TimeOf },
    /// At least this many new flows went to the backend (in the whole run).
    NewFlowsAtLeast { backend: Name, count: u64 },
    /// The fraction of all requests that got all their replies: at least / at most.
    Answered(Answered),
    /// The fraction of each client's requests that got all their replies (every client that
    /// expects replies): at least / at most.
    AnsweredPerClient(AnsweredPerClient),
    /// Packets `quic` backend hosts received for a connection they do not have (a short
    /// header to a connection ID they did not issue), of those received by `backend` and/or
    /// of those whose connection ID `issued_by` issued: at least / at most.
    QuicUnknownConnections(QuicUnknownConnections),
    /// Datagrams dropped for `reason` over the run (those from clients, or with `direction =
    /// "to_client"` those from backends — on a flow or matching none —, or `"both"`): at least /
    /// at most.
    Drops {
        reason: DropReason,
        #[serde(default)]
        direction: DropDirection,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// Flows closed for `reason`: at least / at most.
    Closes {
        reason: CloseReason,
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
    Events { event: EventSelector, count: u64 },
    /// Of the client datagrams forwarded to any backend between `from` and `to` (every
    /// instance), the share that went to `backend`.
    Share(Share),
    /// The fraction of one client's requests that got all their replies: at least / at most.
    ClientAnswered(ClientAnswered),
    /// Datagrams forwarded to backends (`direction = "to_backend"`) or returned to clients
    /// (`"to_client"`), of one backend and/or one client, between `from` and `until` (the
    /// whole run by default): at least / at most.
    Datagrams(Datagrams),
    /// The backend is in `state` at `from` (on the first instance) and makes no transition
    /// until `until`.
    HealthHeld { backend: Name, state: Health, from: TimeOf, until: TimeOf },
    /// Balancer instance `instance` (default 0) has exited after a SIGTERM by `by` (drained:
    /// no flow left on any worker).
    Exited {
        #[serde(default)]
        instance: usize,
        by: TimeOf,
    },
    /// Replies from the backend's IP that matched no flow (a reply from another port, a late
    /// reply to a flow that ended): at least / at most, over every instance.
    Strays {
        backend: Name,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// No health transition of `backend` (into `to`, or any) between `from` and `until`.
    NoTransition(NoTransition),
    /// At most this many requests never got all their replies, over every client or `client`.
    Lost {
        at_most: u64,
        #[serde(default)]
        client: Option<Name>,
    },
    /// Health transitions (of `backend`, or of every backend; into `to`, or any) between
    /// `from` and `until`: at least / at most.
    Transitions(Transitions),
    /// What the balancer's sockets saw over the run (every instance): a drawn `[platform]`
    /// fault, or stray datagrams on upstream sockets: at least / at most.
    Platform {
        count: PlatformCount,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
}

/// What a `platform` expectation counts (the names of `record::PlatformCounts::named`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformCount {
    /// Upstream sockets that failed to open (`open_fail`).
    OpenFailed,
    UpstreamSendFailed,
    UpstreamTooLong,
    /// Datagrams to backends not sent because the socket's send buffer was full.
    UpstreamBufferFull,
    ClientSendFailed,
    ClientTooLong,
    /// Datagrams to clients not sent because the listener's send buffer was full.
    ClientBufferFull,
    /// Datagrams that reached an upstream socket from an address with no flow on it.
    StrayDatagrams,
    /// Upstream pool sockets (local ports) opened over the run, every instance.
    PoolSockets,
}

impl PlatformCount {
    pub fn name(self) -> &'static str {
        match self {
            PlatformCount::OpenFailed => "open_failed",
            PlatformCount::UpstreamSendFailed => "upstream_send_failed",
            PlatformCount::UpstreamTooLong => "upstream_too_long",
            PlatformCount::UpstreamBufferFull => "upstream_buffer_full",
            PlatformCount::ClientSendFailed => "client_send_failed",
            PlatformCount::ClientTooLong => "client_too_long",
            PlatformCount::ClientBufferFull => "client_buffer_full",
            PlatformCount::StrayDatagrams => "stray_datagrams",
            PlatformCount::PoolSockets => "pool_sockets",
        }
    }
}

/// A `transitions` expectation: how many health transitions (of `backend` or any backend,
/// into `to` or any state) the first instance saw from `from` to `until`, both included.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "TransitionsKeys")]
pub struct Transitions {
    pub backend: Option<Name>,
    pub to: Option<Health>,
    pub from: TimeOf,
    pub until: TimeOf,
    pub at_least: Option<u64>,
    pub at_most: Option<u64>,
}

/// A `transitions` expectation as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionsKeys {
    #[serde(default)]
    backend: Option<Name>,
    #[serde(default)]
    to: Option<Health>,
    from: TimeOf,
    until: TimeOf,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
}

impl TryFrom<TransitionsKeys> for Transitions {
    type Error = String;

    fn try_from(keys: TransitionsKeys) -> Result<Transitions, String> {
        let TransitionsKeys { backend, to, from, until, at_least, at_most } = keys;
        if at_least.is_none() && at_most.is_none() {
            return Err("`transitions` needs `at_least`, `at_most` or both".into());
        }
        if from.0 > until.0 {
            return Err(format!("`transitions` needs `from` ({from}) no later than `until` ({until})"));
        }
        if let (Some(low), Some(high)) = (at_least, at_most)
            && low > high
        {
            return Err(format!("`transitions` bounds cross: `at_least` {low} is above `at_most` {high}"));
        }
        Ok(Transitions { backend, to, from, until, at_least, at_most })
    }
}

/// A `share` expectation: of the client datagrams forwarded between `from` and `to`, the
/// fraction `backend` carried is within the bounds given (at least one of them).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "ShareKeys")]
pub struct Share {
    pub backend: Name,
    pub from: TimeOf,
    pub to: TimeOf,
    pub at_least: Option<Fraction>,
    pub at_most: Option<Fraction>,
}

/// A `share` expectation as written, before its keys are checked against each other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareKeys {
    backend: Name,
    from: TimeOf,
    to: TimeOf,
    #[serde(default)]
    at_least: Option<Fraction>,
    #[serde(default)]
    at_most: Option<Fraction>,
}

impl TryFrom<ShareKeys> for Share {
    type Error = String;

    fn try_from(keys: ShareKeys) -> Result<Share, String> {
        let ShareKeys { backend, from, to, at_least, at_most } = keys;
        if at_least.is_none() && at_most.is_none() {
            return Err("`share` needs `at_least`, `at_most` or both".into());
        }
        if from.0 >= to.0 {
            return Err(format!("`share` needs `from` ({from}) before `to` ({to})"));
        }
        if let (Some(low), Some(high)) = (at_least, at_most)
            && low.0 > high.0
        {
            return Err(format!("`share` bounds cross: `at_least` {low} is above `at_most` {high}"));
        }
        Ok(Share { backend, from, to, at_least, at_most })
    }
}

/// A `no_transition` expectation: `backend` made no health transition (into `to`, when given)
/// from `from` to `until`, both included.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "NoTransitionKeys")]
pub struct NoTransition {
    pub backend: Name,
    pub from: TimeOf,
    pub until: TimeOf,
    pub to: Option<Health>,
}

/// A `no_transition` expectation as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoTransitionKeys {
    backend: Name,
    from: TimeOf,
    until: TimeOf,
    #[serde(default)]
    to: Option<Health>,
}

impl TryFrom<NoTransitionKeys> for NoTransition {
    type Error = String;

    fn try_from(keys: NoTransitionKeys) -> Result<NoTransition, String> {
        let NoTransitionKeys { backend, from, until, to } = keys;
        if from.0 > until.0 {
            return Err(format!("`no_transition` needs `from` ({from}) no later than `until` ({until})"));
        }
        Ok(NoTransition { backend, from, until, to })
    }
}

/// A fraction between 0 and 1 (both included), checked where the file writes it.
#[derive(Copy, Clone, Debug, Default, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fraction, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !(0.0..=1.0).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "a fraction is between 0 and 1 (both included), not {value}"
            )));
        }
        Ok(Fraction(value))
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The health state a `detected` expectation waits for: `up` or `down` (what probes reach;
/// a backend is `unknown` only before its first result).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Detectable(pub Health);

impl<'de> Deserialize<'de> for Detectable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Detectable, D::Error> {
        match Health::deserialize(deserializer)? {
            Health::Unknown => {
                Err(serde::de::Error::custom("a backend is detected `up` or `down`, never `unknown`"))
            }
            health => Ok(Detectable(health)),
        }
    }
}

impl fmt::Display for Detectable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an `events` expectation counts: one event by its stable name (`backend_down`,
/// `cluster_all_down`, `listener_drained`, `frontend_up`, ...), or `transition`: every health
/// transition (`backend_up`, `backend_down` and `backend_unknown` together).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventSelector {
    Event(EventName),
    Transition,
}

impl EventSelector {
    const TRANSITION: &str = "transition";

    /// Whether an event of this name counts.
    pub fn matches(self, name: EventName) -> bool {
        match self {
            EventSelector::Event(selected) => selected == name,
            EventSelector::Transition => name.transition().is_some(),
        }
    }
}

impl FromStr for EventSelector {
    type Err = String;

    fn from_str(name: &str) -> Result<EventSelector, String> {
        if name == Self::TRANSITION {
            return Ok(EventSelector::Transition);
        }
        EventName::from_name(name).map(EventSelector::Event).ok_or_else(|| {
            format!(
                "unknown event `{name}`, expected `{}` or one of {}",
                Self::TRANSITION,
                EventName::name_list()
            )
        })
    }
}

impl fmt::Display for EventSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventSelector::Event(name) => name.fmt(f),
            EventSelector::Transition => f.write_str(Self::TRANSITION),
        }
    }
}

impl<'de> Deserialize<'de> for EventSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventSelector, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Which datagrams a `drops` expectation counts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropDirection {
    /// Client datagrams on their way to a backend (the default).
    #[default]
    ToBackend,
    /// Backend datagrams on their way to a client.
    ToClient,
    /// Both.
    Both,
}

/// Which way a `datagrams` expectation counts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client datagrams the balancer forwarded to a backend.
    ToBackend,
    /// Backend datagrams the balancer returned to a client.
    ToClient,
}

/// An `answered` expectation: bounds on the fraction of all requests answered.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "AnsweredKeys")]
pub struct Answered {
    pub at_least: Option<Fraction>,
    pub at_most: Option<Fraction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnsweredKeys {
    #[serde(default)]
    at_least: Option<Fraction>,
    #[serde(default)]
    at_most: Option<Fraction>,
}

impl TryFrom<AnsweredKeys> for Answered {
    type Error = String;

    fn try_from(keys: AnsweredKeys) -> Result<Answered, String> {
        let AnsweredKeys { at_least, at_most } = keys;
        bounds_given("answered", at_least.map(|f| f.0), at_most.map(|f| f.0))?;
        Ok(Answered { at_least, at_most })
    }
}

/// An `answered_per_client` expectation: bounds on the fraction of each client's requests
/// answered, every client that expects replies.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "AnsweredKeys")]
pub struct AnsweredPerClient {
    pub at_least: Option<Fraction>,
    pub at_most: Option<Fraction>,
}

impl TryFrom<AnsweredKeys> for AnsweredPerClient {
    type Error = String;

    fn try_from(keys: AnsweredKeys) -> Result<AnsweredPerClient, String> {
        let AnsweredKeys { at_least, at_most } = keys;
        bounds_given("answered_per_client", at_least.map(|f| f.0), at_most.map(|f| f.0))?;
        Ok(AnsweredPerClient { at_least, at_most })
    }
}

/// A `quic_unknown_connections` expectation: a count of packets `quic` servers received for
/// connections they do not have.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "QuicUnknownKeys")]
pub struct QuicUnknownConnections {
    /// Only those this backend host received.
    pub backend: Option<Name>,
    /// Only those sent to a connection ID this backend host issued.
    pub issued_by: Option<Name>,
    pub at_least: Option<u64>,
    pub at_most: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuicUnknownKeys {
    #[serde(default)]
    backend: Option<Name>,
    #[serde(default)]
    issued_by: Option<Name>,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
}

impl TryFrom<QuicUnknownKeys> for QuicUnknownConnections {
    type Error = String;

    fn try_from(keys: QuicUnknownKeys) -> Result<QuicUnknownConnections, String> {
        let QuicUnknownKeys { backend, issued_by, at_least, at_most } = keys;
        bounds_given("quic_unknown_connections", at_least.map(|n| n as f64), at_most.map(|n| n as f64))?;
        Ok(QuicUnknownConnections { backend, issued_by, at_least, at_most })
    }
}

/// A `client_answered` expectation: bounds on the fraction of `client`'s requests answered.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "ClientAnsweredKeys")]
pub struct ClientAnswered {
    pub client: Name,
    pub at_least: Option<Fraction>,
    pub at_most: Option<Fraction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientAnsweredKeys {
    client: Name,
    #[serde(default)]
    at_least: Option<Fraction>,
    #[serde(default)]
    at_most: Option<Fraction>,
}

impl TryFrom<ClientAnsweredKeys> for ClientAnswered {
    type Error = String;

    fn try_from(keys: ClientAnsweredKeys) -> Result<ClientAnswered, String> {
        let ClientAnsweredKeys { client, at_least, at_most } = keys;
        bounds_given("client_answered", at_least.map(|f| f.0), at_most.map(|f| f.0))?;
        Ok(ClientAnswered { client, at_least, at_most })
    }
}

/// A `datagrams` expectation: a count of datagrams one way, of a backend and/or a client.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "DatagramsKeys")]
pub struct Datagrams {
    pub direction: Direction,
    pub backend: Option<Name>,
    pub client: Option<Name>,
    pub from: Option<TimeOf>,
    pub until: Option<TimeOf>,
    pub at_least: Option<u64>,
    pub at_most: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatagramsKeys {
    direction: Direction,
    #[serde(default)]
    backend: Option<Name>,
    #[serde(default)]
    client: Option<Name>,
    #[serde(default)]
    from: Option<TimeOf>,
    #[serde(default)]
    until: Option<TimeOf>,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
}

impl TryFrom<DatagramsKeys> for Datagrams {
    type Error = String;

    fn try_from(keys: DatagramsKeys) -> Result<Datagrams, String> {
        let DatagramsKeys { direction, backend, client, from, until, at_least, at_most } = keys;
        bounds_given("datagrams", at_least.map(|n| n as f64), at_most.map(|n| n as f64))?;
        if backend.is_none() && client.is_none() {
            return Err("`datagrams` needs `backend`, `client` or both".into());
        }
        if let (Some(from), Some(until)) = (from, until)
            && from.0 > until.0
        {
            return Err(format!("`datagrams` needs `from` ({from}) no later than `until` ({until})"));
        }
        Ok(Datagrams { direction, backend, client, from, until, at_least, at_most })
    }
}

/// At least one bound, and bounds that do not cross.
fn bounds_given(kind: &str, at_least: Option<f64>, at_most: Option<f64>) -> Result<(), String> {
    if at_least.is_none() && at_most.is_none() {
        return Err(format!("`{kind}` needs `at_least`, `at_most` or both"));
    }
    if let (Some(low), Some(high)) = (at_least, at_most)
        && low > high
    {
        return Err(format!("`{kind}` bounds cross: `at_least` {low} is above `at_most` {high}"));
    }
    Ok(())
}
