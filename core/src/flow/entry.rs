//! One flow's state and the teardown rules that decide when it ends.
//!
//! Deadlines are derived from the flow's timestamps, never stored per datagram: a client
//! datagram moves `last_client`, a backend datagram moves `last_backend`, and the one timer
//! entry the flow keeps is re-armed only when it fires. That works because activity only
//! moves a flow's real deadline *later* than its armed entry, with one exception handled by
//! [`Teardown::arm_time`]: a client datagram that starts a wait for a reply creates a back
//! deadline `idle_timeout.back` from now, so a flow that is not waiting is armed no later
//! than `back` from now.

use std::net::{IpAddr, SocketAddr};
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
    /// The client: where replies go, unless it came through a trusted upstream (`via`). With
    /// `affinity = "client_address"` it follows the client's port.
    pub(crate) client: SocketAddr,
    /// The trusted upstream balancer the client's latest datagram came through (its PROXY
    /// v2 header named `client`): replies go there. Out of line: most flows have none.
    pub(crate) via: Option<Box<SocketAddr>>,
    /// The address the client sent to, where replies leave from: part of the flow key (on a
    /// wildcard listener, each address the host has is a VIP of its own).
    pub(crate) local: IpAddr,
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
    /// What only a flow that counts replies (`responses` set) keeps: its write-offs, copies
    /// and floor, and its recent datagrams. Out of line, so that flows which count nothing
    /// stay small; allocated with the flow's first datagram.
    pub(crate) recent: Option<Box<Recent>>,
    /// Reached `requests`, or had every owed reply written off: out of the index, waiting
    /// only for owed (or late) replies.
    pub(crate) retired: bool,
    /// This flow is itself a retry after a refusal: it is not retried again.
    pub(crate) retried: bool,
    /// How its backend was chosen at admission (`show flow`).
    pub(crate) decision: super::Decision,
    /// Under an amplification cap: the bytes its backend may still send back (the cap's
    /// allowance, plus `factor` times each client datagram forwarded, minus each reply
    /// returned). Unused without a cap.
    pub(crate) return_credit: u32,
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
            idle_back: cluster.idle_back(),
            lifetime: cluster.lifetime,
        }
    }

    /// Replies owed in total for `requests` client datagrams (`None`: the count is unknown).
    pub(crate) fn owed_for(&self, requests: u32) -> Option<u64> {
        let expected = self.responses?;
        let mode = if crate::mutants::active(crate::mutants::Mutant::ResponsesPerFlow) {
            ResponsesMode::PerFlow
        } else {
            self.responses_mode
        };
        Some(match mode {
            ResponsesMode::PerRequest => u64::from(requests) * u64::from(expected),
            ResponsesMode::PerFlow => u64::from(expected),
        })
    }

    /// Replies settled: returned, written off, or never owed (for a copied request).
    pub(crate) fn settled(flow: &Flow) -> u64 {
        u64::from(flow.responses) + u64::from(flow.written_off()) + u64::from(flow.copies())
    }

    /// Whether the backend still owes replies: `Some(true)` or `Some(false)` when the
    /// `responses` count says, `None` when the count is unknown.
    pub(crate) fn owes_replies(&self, flow: &Flow) -> Option<bool> {
        Some(Self::settled(flow) < self.owed_for(flow.requests)?)
    }

    /// Replies owed now (0 when the count is unknown).
    pub(crate) fn owed_now(&self, flow: &Flow) -> u32 {
        let owed = self.owed_for(flow.requests).unwrap_or(0).saturating_sub(Self::settled(flow));
        u32::try_from(owed).unwrap_or(u32::MAX)
    }

    /// The replies a wait that ran its full `idle_timeout.back` writes off: those owed the
    /// whole time (its floor), and how many requests they leave unanswered.
    ///
    /// Replies are counted, not matched to requests, so when a reply is lost and the next
    /// request's reply comes, the count cannot say which request lost its reply; but the
    /// debt never falls back to zero. The floor is that debt. On a socket that always has
    /// requests in flight, the floor also includes the fewest ever in flight: those replies
    /// still come, and each one that comes after its request was written off is taken back
    /// (see [`Teardown::takes_back`]).
    pub(crate) fn due_at_deadline(&self, flow: &Flow, now: Instant, fastest: Option<Duration>) -> (u32, u32) {
        // Per request, the oldest owed request by order is the one the floor stands for; if
        // it was sent too recently to be overdue, the floor is requests in flight (a socket
        // that always has some), not replies lost.
        if let (Some(expected), ResponsesMode::PerRequest) = (self.responses, self.responses_mode)
            && expected > 0
        {
            let oldest_owed = u32::try_from(Self::settled(flow) / u64::from(expected))
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            if !flow.overdue(now, oldest_owed, fastest) {
                return (0, 0);
            }
        }
        let replies = flow.floor().min(self.owed_now(flow));
        (replies, self.requests_of(replies))
    }

    /// Whether replies are counted per request (`responses` > 0, `per_request`): then each
    /// reply can be matched to the request it completes.
    pub(crate) fn counts_per_request(&self) -> bool {
        matches!((self.responses, self.responses_mode), (Some(n), ResponsesMode::PerRequest) if n > 0)
    }

    /// The request (counting from 1, in order) a reply that brings `settled` replies settles
    /// completes, where replies are counted per request.
    pub(crate) fn answered_request(&self, flow: &Flow) -> Option<u32> {
        match (self.responses, self.responses_mode) {
            (Some(expected), ResponsesMode::PerRequest) if expected > 0 => {
                let settled = Self::settled(flow);
                (settled % u64::from(expected) == 0)
                    .then(|| u32::try_from(settled / u64::from(expected)).unwrap_or(u32::MAX))
            }
            _ => None,
        }
    }

    /// Whether a reply that just came is taken for a late answer to a request written off:
    /// whenever some are. Replies mostly come in the order of their requests, and those
    /// written off were the oldest owed, so a reply after a write-off most likely answers one
    /// of them: it takes the write-off back instead of settling a newer request, which stays
    /// owed. (When the reply was in fact for a newer request, that request's debt is written
    /// off again at the next deadline: a lost reply may be counted against its backend twice,
    /// never a late one once too often.)
    pub(crate) fn takes_back(&self, flow: &Flow) -> bool {
        flow.written_off() > 0 && !crate::mutants::active(crate::mutants::Mutant::LateRepliesNotTakenBack)
    }

    /// Requests left unanswered by the replies still owed (for a flow closing `IdleBack`).
    pub(crate) fn unanswered_requests(&self, flow: &Flow) -> u32 {
        self.requests_of(self.owed_now(flow))
    }

    /// How many requests `replies` owed replies stand for.
    fn requests_of(&self, replies: u32) -> u32 {
        match (self.responses, self.responses_mode) {
            (Some(expected), ResponsesMode::PerRequest) if expected > 0 => replies.div_ceil(expected),
            _ => u32::from(replies > 0),
        }
    }

    /// Whether this reply (already counted in `flow.responses`) completed a request: every
    /// reply it was owed has come (for `per_flow`, the flow's last owed reply).
    pub(crate) fn completes_request(&self, flow: &Flow) -> bool {
        match (self.responses, self.responses_mode) {
            (Some(expected), ResponsesMode::PerRequest) if expected > 0 => {
                Self::settled(flow) % u64::from(expected) == 0
            }
            (Some(expected), ResponsesMode::PerFlow) if expected > 0 => {
                Self::settled(flow) == u64::from(expected)
            }
            _ => false,
        }
    }

    /// Whether a reply byte-for-byte equal to a recent one is a copy the network made: where
    /// each request (or the flow) is owed exactly one reply. With more, a backend may well
    /// send the same bytes twice on purpose, and each copy counts.
    pub(crate) fn drops_copies(&self) -> bool {
        self.responses == Some(1)
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
                // Retired by a write-off: it waits `back` for the replies written off, in
                // case they were only late.
                Some(false) if flow.awaits_late_replies() && flow.is_awaiting() => {
                    consider(flow.awaiting_since + self.idle_back, CloseReason::IdleBack)
                }
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

/// Recent requests and replies of a flow, as fingerprints with their arrival times, to tell
/// copies the network made from new datagrams.
///
/// A datagram is a copy when it equals (by fingerprint: its length, first 64 and last 32 bytes)
/// one of the flow's last [`ECHOES`] of its direction that arrived less than [`COPY_WINDOW`]
/// before it. Networks duplicate within microseconds to milliseconds; a client that repeats
/// itself (a retransmission after a timeout, a keepalive) does so after much longer, and
/// its repeat is a new request owed its own reply.
#[derive(Clone, Debug, Default)]
pub(crate) struct Echoes {
    requests: Ring,
    replies: Ring,
}

/// Datagrams remembered per flow and direction.
pub(crate) const ECHOES: usize = 4;
/// How close two equal datagrams must be to be taken for a copy and its original.
pub(crate) const COPY_WINDOW: Duration = Duration::from_millis(100);

/// The last [`ECHOES`] datagrams of one direction: fingerprints and arrival times (in
/// microseconds since the flow was created, wrapping).
#[derive(Clone, Debug, Default)]
struct Ring {
    prints: [u32; ECHOES],
    at: [u32; ECHOES],
    /// How many are recorded (at most `ECHOES`), and the slot the next one takes.
    len: u8,
    next: u8,
}

impl Ring {
    /// Records a datagram that arrived `at` unless it is a copy of a recent one; returns
    /// whether it is new.
    fn note(&mut self, payload: &[u8], at: u32) -> bool {
        let print = fingerprint(payload);
        let window = COPY_WINDOW.as_micros() as u32;
        let recorded = usize::from(self.len);
        let copy = (0..recorded).any(|i| self.prints[i] == print && at.wrapping_sub(self.at[i]) < window);
        if copy {
            return false;
        }
        let slot = usize::from(self.next);
        self.prints[slot] = print;
        self.at[slot] = at;
        self.next = ((slot + 1) % ECHOES) as u8;
        self.len = (recorded + 1).min(ECHOES) as u8;
        true
    }
}

/// What a counting flow keeps beside the common state (see [`Flow::recent`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Recent {
    /// Replies owed that were written off at a back deadline: they count as settled.
    pub(crate) written_off: u32,
    /// Requests that were copies the network made: forwarded, but owed no reply of their own.
    pub(crate) copies: u32,
    /// The fewest replies owed at any moment since the current wait began
    /// (`awaiting_since`): replies owed all that time, `idle_timeout.back` or longer, are the
    /// ones written off when the wait ends.
    pub(crate) floor: u32,
    echoes: Echoes,
    sends: Sends,
}

impl Flow {
    /// The counting state, allocated on first use.
    pub(crate) fn recent(&mut self) -> &mut Recent {
        self.recent.get_or_insert_with(Default::default)
    }

    /// Retired by a write-off: it takes no client datagram and waits, until its deadline, for
    /// replies that were only late.
    pub(crate) fn awaits_late_replies(&self) -> bool {
        self.retired && self.written_off() > 0
    }

    pub(crate) fn written_off(&self) -> u32 {
        self.recent.as_ref().map_or(0, |r| r.written_off)
    }

    pub(crate) fn copies(&self) -> u32 {
        self.recent.as_ref().map_or(0, |r| r.copies)
    }

    pub(crate) fn floor(&self) -> u32 {
        self.recent.as_ref().map_or(0, |r| r.floor)
    }

    /// Records a request; returns whether it is new (not a copy the network made).
    pub(crate) fn note_request(&mut self, payload: &[u8], now: Instant) -> bool {
        let at = micros_since(self.created, now);
        self.recent().echoes.requests.note(payload, at)
    }

    /// Records a reply; returns whether it is new (not a copy the network made).
    pub(crate) fn note_reply(&mut self, payload: &[u8], now: Instant) -> bool {
        let at = micros_since(self.created, now);
        self.recent().echoes.replies.note(payload, at)
    }
}

/// FNV-1a over the length, the first 64 and the last 32 bytes: cheap on long datagrams, and
/// enough to tell replies apart that differ in a header (a DNS id) or a trailer (a sequence
/// number).
fn fingerprint(payload: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut eat = |byte: u8| {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    };
    for byte in (payload.len() as u32).to_le_bytes() {
        eat(byte);
    }
    let head = &payload[..payload.len().min(64)];
    let tail = &payload[payload.len().saturating_sub(32).max(head.len())..];
    head.iter().chain(tail).for_each(|&byte| eat(byte));
    hash
}

/// Send times of a flow's last [`SENDS`] requests, as microseconds since the flow was created
/// (wrapping: only differences of less than an hour are ever taken).
#[derive(Clone, Debug, Default)]
pub(crate) struct Sends {
    at: [u32; SENDS],
}

/// Requests whose send time a flow remembers.
pub(crate) const SENDS: usize = 8;

fn micros_since(created: Instant, now: Instant) -> u32 {
    // Truncation is the point: offsets wrap, and only short differences are taken.
    (now.saturating_duration_since(created).as_micros() & u128::from(u32::MAX)) as u32
}

impl Flow {
    /// Notes the send time of request number `self.requests` (just counted).
    pub(crate) fn note_send(&mut self, now: Instant) {
        let index = (self.requests.wrapping_sub(1) as usize) % SENDS;
        let at = micros_since(self.created, now);
        self.recent().sends.at[index] = at;
    }

    /// How long ago request number `request` (counting from 1) was sent, if it is remembered.
    fn sent_ago(&self, now: Instant, request: u32) -> Option<Duration> {
        if request == 0 || request > self.requests || self.requests - request >= SENDS as u32 {
            return None;
        }
        let sent = self.recent.as_ref()?.sends.at[(request - 1) as usize % SENDS];
        Some(Duration::from_micros(u64::from(micros_since(self.created, now).wrapping_sub(sent))))
    }

    /// A reply completed request number `request`, matching replies to requests in order:
    /// the time since it was sent. After a lost reply the match is off by one and the time
    /// too long, never too short, so the fastest of many is the backend's reply time.
    pub(crate) fn reply_time(&self, now: Instant, request: u32) -> Option<Duration> {
        self.sent_ago(now, request)
    }

    /// Whether request number `request`, still owed, is overdue: sent longer ago than four
    /// times the backend's fastest recent reply, plus 10 ms (or no reply time is known, or it
    /// is too old to be remembered).
    pub(crate) fn overdue(&self, now: Instant, request: u32, fastest: Option<Duration>) -> bool {
        match (self.sent_ago(now, request), fastest) {
            (Some(age), Some(fastest)) => age > fastest * 4 + Duration::from_millis(10),
            _ => true,
        }
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

/// The most capacity a snapshot may give a flow's retry slot: twice the largest datagram with
/// its PROXY header (a `Vec` at most doubles past what it holds), rounded up. The budget
/// counts capacity, not length, so the capacity is part of the state.
const MAX_RETRY_CAPACITY: usize = 256 * 1024;

impl crate::snapshot::Codec for Flow {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        let Flow {
            serial,
            hash,
            listener,
            backend,
            client,
            via,
            local,
            created,
            last_client,
            last_backend,
            awaiting_since,
            timer,
            requests,
            responses,
            recent,
            retired,
            retried,
            decision,
            return_credit,
            retry,
        } = self;
        serial.put(w);
        hash.put(w);
        listener.put(w);
        backend.put(w);
        client.put(w);
        via.put(w);
        local.put(w);
        created.put(w);
        last_client.put(w);
        last_backend.put(w);
        awaiting_since.put(w);
        timer.put(w);
        requests.put(w);
        responses.put(w);
        recent.put(w);
        retired.put(w);
        retried.put(w);
        decision.put(w);
        return_credit.put(w);
        retry.capacity().put(w);
        retry.put(w);
    }
    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        let (serial, hash, listener, backend) = Codec::get(r)?;
        let (client, via, local, created) = Codec::get(r)?;
        let (last_client, last_backend, awaiting_since, timer) = Codec::get(r)?;
        let (requests, responses, recent, retired) = Codec::get(r)?;
        let (retried, decision, return_credit) = Codec::get(r)?;
        let capacity: usize = Codec::get(r)?;
        let bytes: Vec<u8> = Codec::get(r)?;
        if capacity > MAX_RETRY_CAPACITY || capacity < bytes.len() {
            return Err(r.invalid("retry slot capacity"));
        }
        let mut retry = Vec::with_capacity(capacity);
        retry.extend_from_slice(&bytes);
        Ok(Flow {
            serial,
            hash,
            listener,
            backend,
            client,
            via,
            local,
            created,
            last_client,
            last_backend,
            awaiting_since,
            timer,
            requests,
            responses,
            recent,
            retired,
            retried,
            decision,
            return_credit,
            retry,
        })
    }
}
crate::snapshot::codec_struct!(Recent { written_off, copies, floor, echoes, sends });
crate::snapshot::codec_struct!(Echoes { requests, replies });
crate::snapshot::codec_struct!(Sends { at });

impl crate::snapshot::Codec for Ring {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        self.prints.put(w);
        self.at.put(w);
        self.len.put(w);
        self.next.put(w);
    }
    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        let ring =
            Ring { prints: Codec::get(r)?, at: Codec::get(r)?, len: Codec::get(r)?, next: Codec::get(r)? };
        if usize::from(ring.len) > ECHOES || usize::from(ring.next) >= ECHOES {
            return Err(r.invalid("echo ring position"));
        }
        Ok(ring)
    }
}
