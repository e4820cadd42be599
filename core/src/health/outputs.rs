//! The monitor's output queue, bounded whether or not the caller drains it.
//!
//! Three kinds of entry, bounded three ways:
//!
//! - **Events** are for logs and `ctl watch`. At most [`MAX_QUEUED_EVENTS`] wait at once;
//!   beyond that an event is dropped and counted, never queued without limit.
//! - **Backend changes** are for the flow managers' health view, which needs only the latest
//!   state. At most one per backend waits: a second change while one is queued does not
//!   queue another, and the entry is filled in from the backend's state *when it is polled*.
//!   They are never dropped.
//! - **Probe starts** are at most one per backend and probe protocol, and also filled in when
//!   polled: if the probe they stood for was abandoned (it timed out, the backend was paused)
//!   and another started, the entry announces the live one; if none is live, it is skipped.
//!   Never dropped.
//!
//! So the queue holds at most `MAX_QUEUED_EVENTS + 3 × backends` entries.

use std::collections::{BTreeMap, VecDeque};

use super::HealthEvent;
use crate::id::BackendId;

/// Events that may wait in the queue at once; more are dropped and counted.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// The protocol of one probe of a check (`tcp+udp` runs one of each).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn index(self) -> usize {
        match self {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        }
    }
}

/// A queued output, materialised by the monitor when polled.
#[derive(Clone, Debug)]
pub(crate) enum Queued {
    Event(HealthEvent),
    Changed(BackendId),
    Start(BackendId, Protocol),
}

/// Which entries a backend has waiting, so it never has two of a kind.
#[derive(Copy, Clone, Debug, Default)]
struct Pending {
    changed: bool,
    start: [bool; 2],
}

impl Pending {
    fn is_empty(self) -> bool {
        !self.changed && !self.start[0] && !self.start[1]
    }

    fn count(self) -> usize {
        usize::from(self.changed) + usize::from(self.start[0]) + usize::from(self.start[1])
    }
}

#[derive(Debug, Default)]
pub(crate) struct Outputs {
    queue: VecDeque<Queued>,
    pending: BTreeMap<BackendId, Pending>,
    events: usize,
    events_dropped: u64,
}

impl Outputs {
    /// Queues an event, or drops and counts it when [`MAX_QUEUED_EVENTS`] are waiting.
    pub(crate) fn push_event(&mut self, event: HealthEvent) {
        if self.events >= MAX_QUEUED_EVENTS {
            self.events_dropped += 1;
            return;
        }
        self.events += 1;
        self.queue.push_back(Queued::Event(event));
    }

    /// Queues a backend change unless one is already waiting for this backend.
    pub(crate) fn push_changed(&mut self, backend: BackendId) {
        let pending = self.pending.entry(backend).or_default();
        if !pending.changed {
            pending.changed = true;
            self.queue.push_back(Queued::Changed(backend));
        }
    }

    /// Queues a probe start unless one is already waiting for this backend and protocol.
    pub(crate) fn push_start(&mut self, backend: BackendId, protocol: Protocol) {
        let pending = self.pending.entry(backend).or_default();
        if !pending.start[protocol.index()] {
            pending.start[protocol.index()] = true;
            self.queue.push_back(Queued::Start(backend, protocol));
        }
    }

    /// Whether a change entry is waiting for this backend.
    pub(crate) fn change_pending(&self, backend: BackendId) -> bool {
        self.pending.get(&backend).is_some_and(|pending| pending.changed)
    }

    pub(crate) fn pop(&mut self) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        let (backend, clear): (BackendId, fn(&mut Pending)) = match &queued {
            Queued::Event(_) => {
                self.events -= 1;
                return Some(queued);
            }
            Queued::Changed(backend) => (*backend, |p| p.changed = false),
            Queued::Start(backend, Protocol::Tcp) => (*backend, |p| p.start[0] = false),
            Queued::Start(backend, Protocol::Udp) => (*backend, |p| p.start[1] = false),
        };
        if let Some(pending) = self.pending.get_mut(&backend) {
            clear(pending);
            if pending.is_empty() {
                self.pending.remove(&backend);
            }
        }
        Some(queued)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The most entries the queue can hold now: the event cap plus three per backend with
    /// something pending.
    pub(crate) fn bound(&self) -> usize {
        MAX_QUEUED_EVENTS + 3 * self.pending.len()
    }

    pub(crate) fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The queue agrees with its bookkeeping and respects its bounds.
    pub(crate) fn check(&self) -> Result<(), String> {
        let flagged: usize = self.pending.values().map(|pending| pending.count()).sum();
        if self.events > MAX_QUEUED_EVENTS {
            return Err(format!("{} events queued, over the cap of {MAX_QUEUED_EVENTS}", self.events));
        }
        if self.queue.len() != self.events + flagged {
            return Err(format!(
                "output queue holds {} entries; {} events and {flagged} flagged changes and starts",
                self.queue.len(),
                self.events
            ));
        }
        if self.pending.values().any(|pending| pending.is_empty()) {
            return Err("an empty pending record was kept".to_string());
        }
        Ok(())
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_unit_enum!(Protocol { Tcp, Udp });

impl Outputs {
    /// Snapshots are taken with every output polled: only the drop count is state.
    pub(crate) fn snapshot_state(&self) -> Result<u64, usize> {
        if self.queue.is_empty() && self.pending.is_empty() && self.events == 0 {
            Ok(self.events_dropped)
        } else {
            Err(self.queue.len())
        }
    }

    pub(crate) fn restore_state(&mut self, events_dropped: u64) {
        self.events_dropped = events_dropped;
    }
}
