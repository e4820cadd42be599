//! Several workers in one process (`process.workers = N`): N threads, each an event loop with
//! its own SO_REUSEPORT listener sockets (a steering program spreads clients over them by the
//! listener's affinity key, `udplb_core::steer`, so a client always reaches one worker),
//! its own flow table and its own upstream sockets. Worker 0, the *leader*, runs on the main
//! thread: it alone probes backends, decides their health, serves the control socket,
//! metrics and signals. The *followers* take every backend state change from it and hand it
//! the passive failures their datapath sees ([`udplb_core::Role`]). Messages go over
//! channels, each followed by a wake-up of the receiving loop (`mio::Waker`).
//!
//! Budgets are split between workers by `udplb_core::config::worker_config`.
//!
//! Followers publish a [`WorkerView`] of their counters a few times per second; the leader's
//! metrics add them up.
//!
//! This module holds what passes between the workers (the messages, the leader's handle on a
//! follower, a follower's link to its leader) and how the process's budgets are split; the
//! leader's and a follower's parts of the loop are `event_loop/leader.rs` and
//! `event_loop/follower.rs`.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::Waker;
use udplb_core::{Config, Input};

pub(crate) use crate::control::protocol::{FlowExplanation, FlowView, ReloadView};
pub(crate) use crate::counters::WorkerView;

/// From the leader to a follower.
#[derive(Debug)]
pub(crate) enum ToFollower {
    /// An input for the follower's core: a backend's new state, a listener command, an
    /// operator's weight for a backend (until the next reload).
    Input(Input),
    /// The leader applied this configuration (already validated, flow cap already split).
    /// With `ack`, the follower answers [`ToLeader::Answer`] with that id once it has applied
    /// it and opened its listeners: `total` is the flows the reload closed, `error` what
    /// went wrong. A `ctl reload` is answered only then.
    Reload { config: Arc<Config>, ack: Option<u64> },
    /// SIGTERM: drain every listener, then end the thread once no flow is left.
    Stop,
    /// A question about this worker's flows (`show flows`, `show flow`), answered with
    /// [`ToLeader::Answer`] carrying the same `id`.
    Query { id: u64, question: FlowQuestion },
    /// A handover: send your last passive signals, then your state and copies of your
    /// sockets on `reply` (with your number), and wait for [`ToFollower::Thaw`] or
    /// [`ToFollower::Exit`] (`event_loop/handover.rs`).
    Freeze { reply: Sender<(u32, Result<crate::handover::WorkerState, String>)> },
    /// The handover was called off: serve on.
    Thaw,
    /// The new process could not restore this one's flows and relays their datagrams on
    /// `relay` (`crate::relay`): stop reading the listeners, serve what comes on the relay,
    /// drain, and end when no flow is left.
    FallBack { relay: std::os::fd::OwnedFd },
    /// The new process serves: end the thread now, without draining.
    Exit,
}

/// A question about flows that every worker answers from its own table: the leader asks its
/// followers, answers for itself, and responds once every answer is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlowQuestion {
    /// `show flows`: up to `limit` flows, and how many are live.
    Flows { limit: usize },
    /// `show flow CLIENT`: the client's flows and why each went where it went.
    Client(String),
    /// `flow CLIENT close`: close the client's flows; the answer lists those closed.
    CloseClient(String),
    /// `backend CLUSTER ID close-flows`: close the backend's flows; the answer lists them.
    /// `label` is how the operator named it (`cluster/id`).
    CloseBackend { backend: udplb_core::BackendId, label: String },
    /// Never sent to a follower: a `ctl reload` the leader has applied, waiting for every
    /// follower's [`ToFollower::Reload`] acknowledgement before it is answered (until then,
    /// a follower may still hold the replaced listeners' sockets, and a client steered to one
    /// goes unanswered).
    Reloaded(Box<ReloadView>),
}

/// One worker's answer to a [`FlowQuestion`].
#[derive(Clone, Debug, Default)]
pub(crate) struct FlowAnswer {
    pub flows: Vec<FlowView>,
    pub explanations: Vec<FlowExplanation>,
    /// Live flows in this worker's table (`show flows`).
    pub total: u64,
    /// The question could not be answered (a client that is not an address).
    pub error: Option<String>,
}

/// The leader's questions its followers have not all answered yet.
#[derive(Debug, Default)]
pub(crate) struct FlowQueries {
    pub next_id: u64,
    pub pending: Vec<PendingQuery>,
}

/// A question asked on behalf of a control connection.
#[derive(Debug)]
pub(crate) struct PendingQuery {
    pub id: u64,
    /// The control connection that asked: it gets no other answer until this one.
    pub token: mio::Token,
    pub question: FlowQuestion,
    /// Answers so far, by worker.
    pub answers: Vec<(u32, FlowAnswer)>,
    /// Workers asked, the leader included.
    pub workers: u32,
    /// When to give up on a worker that has not answered.
    pub deadline: std::time::Instant,
}

impl FlowQueries {
    /// Whether a question of `token`'s is still waiting for answers.
    pub(crate) fn waits_on(&self, token: mio::Token) -> bool {
        self.pending.iter().any(|query| query.token == token)
    }
}

/// From a follower to the leader: an input for the leader's core (a passive failure the
/// follower's datapath saw).
#[derive(Debug)]
pub(crate) enum ToLeader {
    Input(Input),
    /// Worker `worker`'s answer to question `id`.
    Answer {
        id: u64,
        worker: u32,
        answer: FlowAnswer,
    },
}

/// The leader's handle on one follower.
pub(crate) struct Follower {
    pub sender: Sender<ToFollower>,
    pub waker: Arc<Waker>,
    pub view: Arc<Mutex<WorkerView>>,
    pub thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Sends a message and wakes the follower. A follower that has ended is not told.
    pub(crate) fn send(&self, message: ToFollower) {
        if self.sender.send(message).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|thread| thread.is_finished())
    }
}

/// A follower's link to its leader.
pub(crate) struct LeaderLink {
    pub inbox: Receiver<ToFollower>,
    pub sender: Sender<ToLeader>,
    pub leader_waker: Arc<Waker>,
    pub view: Arc<Mutex<WorkerView>>,
    /// Worker number, for logs.
    pub index: u32,
}

impl LeaderLink {
    pub(crate) fn send(&self, message: ToLeader) {
        if self.sender.send(message).is_ok() {
            let _ = self.leader_waker.wake();
        }
    }
}

pub use udplb_core::config::worker_config;
