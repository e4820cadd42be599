//! Passive signals: what the datapath tells the health monitor about each backend.
//!
//! Failures (a refusal, a reply written off, a send that failed, a reply from the wrong port)
//! are reported one by one as [`Output::PassiveFailure`]. Successes (a request that got every
//! reply it was owed) are far more frequent, so they are tallied per backend and handed over
//! as one [`Output::PassiveSuccess`] just before the backend's next failure, at once for the
//! first success after a failure, and whenever [`SUCCESS_BATCH`] have piled up: the monitor
//! then sees every success and failure in the order they happened, learns that a failure
//! streak ended as soon as it ends, and has current figures for every backend, with one
//! output per batch rather than per reply.
//!
//! Faults that are the backend's own and that nothing else would show (replies from another
//! port, sends that failed on its path) also raise an [`Event::BackendFault`], at most once
//! per backend and kind every [`FAULT_REPORT_INTERVAL`].

use std::net::SocketAddr;
use std::time::Duration;

use super::{Event, FAULT_REPORT_INTERVAL, FlowManager, Output};
use crate::id::BackendId;
use crate::outcome::{DropReason, PassiveFailure};
use crate::time::Instant;

/// Successes handed over at once when this many have piled up, so the monitor can compare a
/// failing backend with the rest of its cluster on current figures.
const SUCCESS_BATCH: u32 = 32;

/// One backend's passive signals not yet reported.
#[derive(Clone, Debug, Default)]
pub(super) struct Tally {
    /// Requests answered since the last `PassiveSuccess`.
    answered: u32,
    /// The last signal reported was a failure: the next success is reported at once.
    failing: bool,
    /// Per kind of fault (`stray_reply`, `send_failed`): when it was last reported, and how
    /// many happened since.
    faults: [FaultReport; 2],
}

#[derive(Clone, Debug, Default)]
struct FaultReport {
    last: Option<Instant>,
    unreported: u64,
}

fn fault_index(failure: PassiveFailure) -> Option<usize> {
    match failure {
        PassiveFailure::StrayReply => Some(0),
        PassiveFailure::SendFailed => Some(1),
        _ => None,
    }
}

impl FlowManager {
    /// `answered` requests of `backend` got all their replies.
    pub(super) fn passive_success(&mut self, backend: BackendId, answered: u32) {
        let tally = &mut self.backends[backend.0 as usize].passive;
        tally.answered = tally.answered.saturating_add(answered);
        self.stats.backends[backend.0 as usize].requests_answered += u64::from(answered);
        if tally.failing || tally.answered >= SUCCESS_BATCH {
            tally.failing = false;
            self.flush_successes(backend);
        }
    }

    /// A failure on `backend`: the successes before it first, then the failure itself, and
    /// for a fault of its own, the rate-limited event.
    pub(super) fn passive_failure(&mut self, now: Instant, backend: BackendId, failure: PassiveFailure) {
        self.flush_successes(backend);
        let tally = &mut self.backends[backend.0 as usize].passive;
        tally.failing = true;
        if let Some(index) = fault_index(failure) {
            let report = &mut tally.faults[index];
            report.unreported += 1;
            if report.last.is_none_or(|last| now >= last + FAULT_REPORT_INTERVAL) {
                let count = std::mem::take(&mut report.unreported);
                report.last = Some(now);
                self.outputs.push_back(Output::Event(Event::BackendFault { backend, failure, count }));
            }
        }
        self.outputs.push_back(Output::PassiveFailure { backend, failure });
    }

    fn flush_successes(&mut self, backend: BackendId) {
        let answered = std::mem::take(&mut self.backends[backend.0 as usize].passive.answered);
        if answered > 0 {
            self.outputs.push_back(Output::PassiveSuccess { backend, answered });
        }
    }

    /// A datagram on an upstream socket that matched no flow, from `from` (see
    /// [`crate::Input::StrayReply`]).
    pub fn handle_stray_reply(&mut self, now: Instant, from: SocketAddr, bytes: usize) {
        let now = self.observe(now);
        match self.stray_source(from) {
            Some(backend) => {
                self.stats.backends[backend.0 as usize].stray_replies += 1;
                self.passive_failure(now, backend, PassiveFailure::StrayReply);
            }
            None => {
                self.stats.unattributed.receive(bytes);
                self.stats.unattributed.drop_for(DropReason::UnknownFlow);
            }
        }
        self.debug_check();
    }

    /// The backend a stray datagram from `from` is blamed on: the live backend with `from`'s
    /// IP address (the lowest id if several share it), unless `from` is exactly some live
    /// backend's address, which makes it a late reply to a flow that already ended, nobody's
    /// fault.
    fn stray_source(&self, from: SocketAddr) -> Option<BackendId> {
        let live = || self.backends.iter().enumerate().filter(|(_, b)| !b.removed);
        if live().any(|(_, b)| b.address == from)
            || crate::mutants::active(crate::mutants::Mutant::StraysNotBlamed)
        {
            return None;
        }
        live().find(|(_, b)| b.address.ip() == from.ip()).map(|(id, _)| BackendId(id as u32))
    }
}

/// The fastest reply time a backend showed over the last one to two [`REPLY_TIME_PERIOD`]s
/// (a new period starts with the first sample after the last one ended), so it follows the
/// path's latency when it grows.
#[derive(Clone, Debug, Default)]
pub(super) struct FastestReply {
    current: Option<Duration>,
    previous: Option<Duration>,
    since: Option<Instant>,
}

/// How long a fastest reply time is remembered (between one and two of these).
pub(super) const REPLY_TIME_PERIOD: Duration = Duration::from_secs(10);

impl FastestReply {
    pub(super) fn sample(&mut self, now: Instant, took: Duration) {
        let since = *self.since.get_or_insert(now);
        if now >= since + REPLY_TIME_PERIOD {
            self.previous =
                if now < since + REPLY_TIME_PERIOD + REPLY_TIME_PERIOD { self.current } else { None };
            self.current = None;
            self.since = Some(now);
        }
        self.current = Some(self.current.map_or(took, |fastest| fastest.min(took)));
    }

    pub(super) fn fastest(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(Tally { answered, failing, faults });
crate::snapshot::codec_struct!(FaultReport { last, unreported });
crate::snapshot::codec_struct!(FastestReply { current, previous, since });
