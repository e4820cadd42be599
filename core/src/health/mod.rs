//! The health monitor: probe scheduling, hysteresis, backend health and admin states, and
//! the events they produce. One per process; the flow managers of every worker follow it
//! through [`HealthOutput::BackendChanged`] and feed it passive failures.
//!
//! Like the rest of the core it is sans-io. It never opens a socket: it asks for probes
//! ([`HealthOutput::StartProbe`]) and is told their results ([`HealthMonitor::handle_probe_result`],
//! [`HealthMonitor::handle_probe_reply`]). It never reads a clock: every input takes `now`, and
//! it owns every deadline, probe timeouts included, behind [`HealthMonitor::poll_timeout`]. Its
//! only randomness (first-probe stagger, interval jitter) comes from the injected selection key.
//!
//! # How it is driven
//!
//! After **any** call, the caller drains [`HealthMonitor::poll_output`] until `None` (starting
//! the probes it asks for, updating the flow managers' health view, logging events), then
//! re-arms its timer from [`HealthMonitor::poll_timeout`]. When the timer fires it calls
//! [`HealthMonitor::handle_timeout`]; waking up early is harmless.
//!
//! # Semantics, and where they come from
//!
//! - **Silence is never healthy.** A probe with no answer within `timeout` is a Timeout
//!   failure, decided by the monitor's own deadline; a result that arrives later names a probe
//!   the monitor no longer waits for and is ignored (and counted).
//! - **Hysteresis** follows the cluster's `model`: HAProxy's single counter in
//!   `[0, rise+fall−1]` (a failure decrements it and snaps it to 0 below `rise`; a pass
//!   increments it and snaps it to full at `rise`; Up while it is at least `rise`), or separate
//!   pass / failure streaks. Unknown resolves on the first result (the counter starts at
//!   `rise−1`). `hysteresis.rs` has the derivation.
//! - **Intervals** follow HAProxy's `inter` / `fastinter` / `downinter`; first probes are
//!   staggered over the interval and every interval is jittered, both seeded.
//! - **Eligible** (may take new flows) = health Up or Unknown, and admin Enabled. Unknown is
//!   eligible on purpose: a restart that mapped Unknown to ineligible would black-hole new
//!   flows until the first probes came back (vpp-maglev needed a warm-up window for this).
//! - **Admin states**: Paused keeps its health state and is not probed (resuming restarts
//!   probing); Disabled and Draining take no new flows but keep being probed, so their health
//!   is current when they are enabled again; Removed is gone.
//! - **Passive health** (without probes, or with ejection off): data-path refusals and
//!   unanswered flows count as failed checks when `passive_refused` / `passive_unanswered`
//!   allow, except for paused backends. A passive
//!   failure that moves a backend pulls its next probe in to `fast_interval`, as HAProxy's
//!   `on-error fastinter` does, so the hint is confirmed or refuted quickly.
//! - **Outlier ejection**: with active probes, passive signals do not move the hysteresis;
//!   they feed outlier detection (`outlier.rs`), which takes a failing backend out for a time
//!   no passing probe shortens. A TCP check and the UDP datapath test different things, and
//!   letting both move one counter made them fight.
//! - **`mode = "off"`**: no probes. A backend starts Up at full health (HAProxy treats a
//!   server without `check` as always up; starting Unknown would let a single passive failure
//!   take it down, since Unknown resolves on the first result). Passive failures count down as
//!   usual; a backend taken Down by them comes back Up after `passive_recovery` without a
//!   further passive failure (each one restarts the wait, since it means the backend is still
//!   failing), and an Up backend with failures on record forgets them after the same quiet
//!   time, so isolated refusals days apart never add up to `fall`.
//!
//! # Check codes
//!
//! Transitions and the history carry a short code, HAProxy's where HAProxy has one:
//!
//! | code | meaning |
//! |---|---|
//! | `L4OK` | TCP connect succeeded (`mode = "tcp"`) |
//! | `L4CON` | refused: TCP RST or ICMP unreachable, for a TCP or a UDP probe |
//! | `L4TOUT` | TCP connect got no answer within `timeout` |
//! | `L7OK` | UDP probe answered as expected (`udp`), or both probes passed (`tcp+udp`) |
//! | `L7TOUT` | UDP probe got no reply within `timeout` |
//! | `L7RSP` | UDP probe got a reply that does not match `udp_expect` |
//! | `SOCKERR` | the shell could not run the probe (a local socket error) |
//! | `PCON` | passive: the data path saw a refusal (ICMP port unreachable) |
//! | `PTOUT` | passive: a flow's owed replies never came |
//! | `PRECOV` | passive recovery: `passive_recovery` passed with no new passive failure |
//! | `INI` | a reload changed the probe settings and the backend restarted |
//!
//! For `tcp+udp` the check passes only if both probes pass (`L7OK`). A failed check reports
//! the TCP probe's code if it failed, else the UDP probe's: like HAProxy, the lowest layer that
//! failed is named, since a layer-4 failure explains a layer-7 one.

mod history;
mod hysteresis;
mod invariants;
mod monitor;
mod outlier;
mod outputs;
mod probes;
mod schedule;
mod snapshot;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use history::{HistoryChange, HistoryEntry};
pub use hysteresis::CounterView;
pub use monitor::HealthMonitor;
use outlier::Outlier;
pub use outputs::MAX_QUEUED_EVENTS;
pub use schedule::{max_jittered, min_jittered, worst_case_detection, worst_case_recovery};

use crate::config::HealthConfig;
pub use crate::id::ProbeId;
use crate::id::{BackendId, ClusterId};
use crate::time::Instant;

/// What the probes say about a backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// No result yet (new, or restarted by a reload). Eligible: see the module docs.
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

impl Health {
    /// Lower-case name, as shown by `ctl` and in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What an operator has decided about a backend, separate from its health.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminState {
    /// In service.
    Enabled,
    /// Out of service and not probed; its health state is kept as it was.
    Paused,
    /// No new flows; still probed.
    Disabled,
    /// No new flows while its existing flows end; still probed.
    Draining,
    /// Gone from the configuration.
    Removed,
}

impl AdminState {
    /// Lower-case name, as shown by `ctl` and in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Paused => "paused",
            AdminState::Disabled => "disabled",
            AdminState::Draining => "draining",
            AdminState::Removed => "removed",
        }
    }
}

/// A backend as the monitor needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoredBackend {
    /// Its cluster.
    pub cluster: ClusterId,
    /// The cluster's name: it seeds the stagger, so it is the same on every instance.
    pub cluster_name: String,
    /// The backend's id within its cluster.
    pub id: String,
    /// Its data address: UDP probes go here; TCP probes go to its IP and `tcp_port`.
    pub address: SocketAddr,
    /// The cluster's health settings (shared by its backends).
    pub health: Arc<HealthConfig>,
    /// The cluster sends PROXY v2 to its backends, so UDP probes carry a PPv2 LOCAL header
    /// in front of the payload and the backend's parser accepts them (PPv2 §2.2).
    pub proxy_v2_local: bool,
}

/// The result of one probe, as the shell observed it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// TCP connected, or a UDP reply arrived (use [`HealthMonitor::handle_probe_reply`] for
    /// UDP replies, so the monitor compares them with `udp_expect`).
    Pass,
    /// The probe failed.
    Fail(ProbeFailure),
}

/// Why a probe failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeFailure {
    /// TCP RST or ICMP unreachable.
    Refused,
    /// No answer within `timeout`. The monitor decides this itself from its own deadline;
    /// a shell may also report it.
    Timeout,
    /// A UDP reply that does not match `udp_expect`.
    Mismatch,
    /// The probe could not be run (a local socket error).
    Error,
}

/// Passive evidence from the datapath; one type shared with the flow manager's outputs.
pub use crate::outcome::PassiveFailure;

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Connect to `address` (the backend's IP and `tcp_port`); success passes.
    Tcp { address: SocketAddr },
    /// Send `datagram` to `address` and wait for a reply.
    Udp { address: SocketAddr, datagram: Vec<u8> },
}

/// A probe the shell should start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    /// Names the probe in its result.
    pub probe: ProbeId,
    /// The backend probed.
    pub backend: BackendId,
    /// What to do.
    pub kind: ProbeKind,
    /// When the monitor stops waiting (its own timer turns silence into a Timeout failure).
    /// The shell may release the probe's socket then: any later result is ignored.
    pub deadline: Instant,
}

/// An output of the monitor, drained with [`HealthMonitor::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthOutput {
    /// Start a probe.
    StartProbe(ProbeRequest),
    /// The backend's eligibility, health or admin state changed (or it was added or removed):
    /// the flow managers' health view. It carries the state *at the time it is polled*; at most
    /// one per backend waits in the queue, so a caller that falls behind sees the latest state,
    /// never a stale one. A removed backend is reported with `admin: Removed`.
    BackendChanged { backend: BackendId, state: BackendState },
    /// Something to log or show.
    Event(HealthEvent),
}

/// A backend's state as selection sees it: what the monitor decides, what the flow manager
/// follows, and what a leader sends its followers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BackendState {
    /// Whether it may take new flows (health, admin state and fail-open considered).
    pub eligible: bool,
    pub health: Health,
    pub admin: AdminState,
}

/// Something that happened, for logs, metrics and `ctl watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// The backend's health state changed.
    Transition {
        cluster: ClusterId,
        backend: BackendId,
        from: Health,
        to: Health,
        code: CheckCode,
        at: Instant,
    },
    /// An operator (or a removal) changed the backend's admin state.
    AdminChanged { cluster: ClusterId, backend: BackendId, from: AdminState, to: AdminState, at: Instant },
    /// The cluster has enabled backends but none is eligible. Fires once per episode.
    ClusterAllDown { cluster: ClusterId, at: Instant },
    /// The all-down episode ended: an enabled backend is eligible again. Fires once.
    ClusterRecovered { cluster: ClusterId, at: Instant },
    /// Outlier detection took the backend out of selection until `until` (its health is
    /// unchanged; no probe readmits it earlier).
    Ejected { cluster: ClusterId, backend: BackendId, until: Instant, at: Instant },
    /// The backend's ejection ended.
    Readmitted { cluster: ClusterId, backend: BackendId, at: Instant },
}

/// The short code recorded with a transition (see the module docs for the table).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckCode {
    L4Ok,
    L4Con,
    L4Tout,
    L7Ok,
    L7Tout,
    L7Rsp,
    SockErr,
    PassiveCon,
    PassiveTout,
    PassiveRecovery,
    Init,
}

impl CheckCode {
    /// The short text: `L4OK`, `L4CON`, `L4TOUT`, `L7OK`, `L7TOUT`, `L7RSP`, `SOCKERR`, `PCON`,
    /// `PTOUT`, `PRECOV`, `INI`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckCode::L4Ok => "L4OK",
            CheckCode::L4Con => "L4CON",
            CheckCode::L4Tout => "L4TOUT",
            CheckCode::L7Ok => "L7OK",
            CheckCode::L7Tout => "L7TOUT",
            CheckCode::L7Rsp => "L7RSP",
            CheckCode::SockErr => "SOCKERR",
            CheckCode::PassiveCon => "PCON",
            CheckCode::PassiveTout => "PTOUT",
            CheckCode::PassiveRecovery => "PRECOV",
            CheckCode::Init => "INI",
        }
    }
}

impl std::fmt::Display for CheckCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything `ctl show backends` shows about one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub cluster: ClusterId,
    pub health: Health,
    pub admin: AdminState,
    /// Whether new flows may go to it: health Up or Unknown, and admin Enabled.
    pub eligible: bool,
    /// The hysteresis counters.
    pub counter: CounterView,
    /// The code of the last check or passive failure.
    pub last_code: Option<CheckCode>,
    /// When the last check completed.
    pub last_check_at: Option<Instant>,
    /// When the next check starts, if one is scheduled; with `mode = "off"`, when passive
    /// recovery is due.
    pub next_check_at: Option<Instant>,
    /// Whether a check is in flight.
    pub checking: bool,
    /// The last transitions, oldest first, at most `history` of them.
    pub history: Vec<HistoryEntry>,
    /// Until when outlier detection keeps it out, if it does.
    pub ejected_until: Option<Instant>,
    /// Times outlier detection ejected it.
    pub ejections: u64,
    /// How long its checks took, by result.
    pub check_durations: CheckDurations,
}

/// How long a backend's checks took, from the start of the check (both probes of `tcp+udp`
/// start together) to its result; a check that timed out counts its whole timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckDurations {
    pub passed: crate::stats::LatencyHistogram,
    pub failed: crate::stats::LatencyHistogram,
}

/// Counters of the monitor, for metrics. Every ignored input is counted here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthStats {
    /// Probes asked for (a `tcp+udp` check asks for two).
    pub probes_started: u64,
    /// Checks completed, passed and failed.
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Probes that failed, by cause (timeouts include those the monitor decided itself).
    pub probes_refused: u64,
    pub probes_timed_out: u64,
    pub probes_mismatched: u64,
    pub probes_errored: u64,
    /// Results for a probe the monitor had stopped waiting for (timed out, paused, removed,
    /// restarted): ignored.
    pub results_late: u64,
    /// Results for a probe id the monitor never issued: ignored.
    pub results_unknown: u64,
    /// A second result for the same probe: ignored.
    pub results_duplicate: u64,
    /// A reply passed to `handle_probe_reply` for a TCP probe: ignored.
    pub replies_to_tcp_probes: u64,
    /// Passive failures fed to the hysteresis.
    pub passive_counted: u64,
    /// Passive failures ignored: the backend is paused, or the cluster does not count that kind.
    pub passive_ignored: u64,
    /// Requests the datapath saw answered (outlier detection's successes).
    pub passive_answered: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Ejections not made: `max_ejected_percent` was reached, or the backend was the last
    /// eligible one of its cluster.
    pub ejections_refused: u64,
    /// Inputs naming a backend the monitor does not know: ignored.
    pub unknown_backend: u64,
    /// Health transitions.
    pub transitions: u64,
    /// Events dropped because [`MAX_QUEUED_EVENTS`] were already waiting.
    pub events_dropped: u64,
}

/// An input the monitor refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("{0} is not monitored")]
    UnknownBackend(BackendId),
}

/// A broken invariant of the monitor: a bug in the core, described for a human.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("health monitor invariant violated: {0}")]
pub struct MonitorInvariantViolation(pub String);
