//! One flow's state and the teardown rules that decide when it ends.
//!
//! Deadlines are derived from the flow's timestamps, never stored per datagram: a client
//! datagram moves `last_client`, a backend datagram moves `last_backend`, and the one timer
//! entry the flow keeps is re-armed only when it fires. That works because activity only
//! moves a flow's real deadline *later* than its armed entry, with one exception handled by
//! [`Teardown::arm_time`]: a client datagram that starts a wait for a reply creates a back
//! deadline `idle_timeout.back` from now, so a flow that is not waiting is armed no later
//! than `back` from now.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ClusterConfig, ResponsesMode};
use crate::id::{BackendId, ListenerId};
use crate::outcome::CloseReason;
use crate::time::Instant;
use crate::timer::TimerHandle;

/// A live flow. Kept small: the table holds one per client conversation.
#[derive(Debug)]
pub(crate) struct Flow {
    /// Process-unique serial; with the slot, the public `FlowId`.
    pub(crate) serial: u64,
    /// Keyed hash of the flow key, kept so the index never rehashes keys.
    pub(crate) hash: u64,
    pub(crate) listener: ListenerId,
    pub(crate) backend: BackendId,
    /// Where replies go. With `affinity = "client_address"` it follows the client's port.
    pub(crate) client: SocketAddr,
    pub(crate) created: Instant,
    /// Last client datagram forwarded (for a retired flow: when it retired).
    pub(crate) last_client: Instant,
    /// Last backend datagram returned (`created` until the first one).
    pub(crate) last_backend: Instant,
    /// Since when the backend owes a reply; `Instant::MAX` when it owes none.
    pub(crate) awaiting_since: Instant,
    /// The flow's one armed timer entry; never later than its real deadline.
    pub(crate) timer: TimerHandle,
    /// Client datagrams forwarded.
    pub(crate) requests: u32,
    /// Backend datagrams returned.
    pub(crate) responses: u32,
    /// Reached `requests`: out of the index, waiting only for owed replies.
    pub(crate) retired: bool,
    /// This flow is itself a retry after a refusal: it is not retried again.
    pub(crate) retried: bool,
    /// The last client datagram, until the first reply (see `retry.rs`).
    pub(crate) retry: Vec<u8>,
}

impl Flow {
    pub(crate) fn is_awaiting(&self) -> bool {
        self.awaiting_since != Instant::MAX
    }
}

/// A cluster's teardown knobs, in the form the datapath uses.
#[derive(Clone, Debug)]
pub(crate) struct Teardown {
    pub(crate) responses: Option<u32>,
    pub(crate) responses_mode: ResponsesMode,
    pub(crate) requests: Option<u32>,
    pub(crate) idle_front: Duration,
    pub(crate) idle_back: Duration,
    pub(crate) lifetime: Option<Duration>,
}

impl Teardown {
    pub(crate) fn from_config(cluster: &ClusterConfig) -> Self {
        Teardown {
            responses: cluster.responses,
            responses_mode: cluster.responses_mode,
            requests: cluster.requests,
            idle_front: cluster.idle_timeout.front,
            idle_back: cluster.idle_timeout.back,
            lifetime: cluster.lifetime,
        }
    }

    /// Whether the backend still owes replies: `Some(true)` or `Some(false)` when the
    /// `responses` count says, `None` when the count is unknown.
    pub(crate) fn owes_replies(&self, flow: &Flow) -> Option<bool> {
        let expected = self.responses?;
        let mode = if crate::mutants::active(crate::mutants::Mutant::ResponsesPerFlow) {
            ResponsesMode::PerFlow
        } else {
            self.responses_mode
        };
        let owed_total = match mode {
            ResponsesMode::PerRequest => u64::from(flow.requests) * u64::from(expected),
            ResponsesMode::PerFlow => u64::from(expected),
        };
        Some(u64::from(flow.responses) < owed_total)
    }

    /// The flow got every reply its `responses` count asked for (and some were asked for).
    pub(crate) fn responses_reached(&self, flow: &Flow) -> bool {
        self.responses.is_some_and(|n| n > 0) && self.owes_replies(flow) == Some(false)
    }

    /// Whether this client datagram (already counted in `flow.requests`) retires the flow.
    pub(crate) fn requests_reached(&self, flow: &Flow) -> bool {
        self.requests.is_some_and(|limit| flow.requests >= limit)
    }

    /// The flow's real deadline and the reason it would close then. Candidates are compared
    /// in a fixed order (lifetime, front, back) so ties resolve the same way everywhere.
    pub(crate) fn deadline(&self, flow: &Flow) -> (Instant, CloseReason) {
        let mut best = (Instant::MAX, CloseReason::LifetimeReached);
        let mut consider = |at: Instant, reason: CloseReason| {
            if at < best.0 {
                best = (at, reason);
            }
        };
        if let Some(lifetime) = self.lifetime {
            consider(flow.created + lifetime, CloseReason::LifetimeReached);
        }
        if !flow.retired {
            consider(flow.last_client + self.idle_front, CloseReason::IdleFront);
            if flow.is_awaiting() {
                consider(flow.awaiting_since + self.idle_back, CloseReason::IdleBack);
            }
        } else {
            match self.owes_replies(flow) {
                // Replies are owed and counted: the backend has `back` to deliver each one.
                Some(true) => consider(flow.awaiting_since + self.idle_back, CloseReason::IdleBack),
                // Nothing more is owed: a retired flow in this state is closed at once; if it
                // were ever seen here, it is due now.
                Some(false) => consider(flow.last_client, CloseReason::RequestsReached),
                // The count is unknown: the flow ends once the backend has been quiet for
                // `back` since its last reply or since the flow retired.
                None => consider(
                    flow.last_backend.max(flow.last_client) + self.idle_back,
                    CloseReason::RequestsReached,
                ),
            }
        }
        best
    }

    /// When to arm the flow's timer at `now`: its real deadline, but no later than `back`
    /// from now while a client datagram could still start a wait for a reply (a wait that
    /// starts at or after `now` ends at or after `now + back`, so the armed entry is never
    /// late). Always later than `now` when the real deadline is.
    pub(crate) fn arm_time(&self, flow: &Flow, now: Instant) -> Instant {
        let (deadline, _) = self.deadline(flow);
        let may_start_waiting =
            !flow.retired && !flow.is_awaiting() && self.owes_replies(flow) != Some(false);
        if may_start_waiting { deadline.min(now + self.idle_back) } else { deadline }
    }
}
