//! The per-backend history: a bounded ring of the last transitions, for `ctl show backends`.
//!
//! It keeps health transitions (with the check code that caused them), admin changes and
//! restarts, each with its time. Its length is the cluster's `health.history` (validated to at
//! most 100): an old transition falls off when a new one arrives, so a flapping backend
//! cannot grow it.

use std::collections::VecDeque;

use super::{AdminState, CheckCode, Health};
use crate::time::Instant;

/// One remembered change of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: Instant,
    /// What changed.
    pub change: HistoryChange,
}

/// What a [`HistoryEntry`] records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryChange {
    /// The health state changed because of a check, a passive failure or passive recovery.
    Health { from: Health, to: Health, code: CheckCode },
    /// An operator changed the admin state.
    Admin { from: AdminState, to: AdminState },
    /// A reload changed the backend's probe settings: its counters were reset and it
    /// restarted in `to` (Unknown, or Up with `mode = "off"`).
    Restarted { from: Health, to: Health },
}

/// A ring of at most `capacity` entries, oldest first.
#[derive(Clone, Debug)]
pub(crate) struct History {
    entries: VecDeque<HistoryEntry>,
    capacity: usize,
}

impl History {
    pub(crate) fn new(capacity: u32) -> Self {
        let capacity = capacity as usize;
        History { entries: VecDeque::with_capacity(capacity.min(16)), capacity }
    }

    /// Appends an entry, dropping the oldest one if the ring is full.
    pub(crate) fn push(&mut self, at: Instant, change: HistoryChange) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(HistoryEntry { at, change });
    }

    /// Changes the bound (a reload changed `history`), keeping the newest entries.
    pub(crate) fn set_capacity(&mut self, capacity: u32) {
        self.capacity = capacity as usize;
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<HistoryEntry> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.entries.len() > self.capacity {
            return Err(format!("history holds {} entries, bound {}", self.entries.len(), self.capacity));
        }
        if self.entries.iter().zip(self.entries.iter().skip(1)).any(|(a, b)| a.at > b.at) {
            return Err("history is not in time order".to_string());
        }
        Ok(())
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(HistoryEntry { at, change });

impl crate::snapshot::Codec for HistoryChange {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        match self {
            HistoryChange::Health { from, to, code } => {
                0u8.put(w);
                from.put(w);
                to.put(w);
                code.put(w);
            }
            HistoryChange::Admin { from, to } => {
                1u8.put(w);
                from.put(w);
                to.put(w);
            }
            HistoryChange::Restarted { from, to } => {
                2u8.put(w);
                from.put(w);
                to.put(w);
            }
        }
    }
    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        match r.u8("history change")? {
            0 => Ok(HistoryChange::Health { from: Codec::get(r)?, to: Codec::get(r)?, code: Codec::get(r)? }),
            1 => Ok(HistoryChange::Admin { from: Codec::get(r)?, to: Codec::get(r)? }),
            2 => Ok(HistoryChange::Restarted { from: Codec::get(r)?, to: Codec::get(r)? }),
            _ => Err(r.invalid("history change")),
        }
    }
}

impl History {
    /// Snapshots: the entries (the capacity comes from the configuration).
    pub(crate) fn entries(&self) -> &VecDeque<HistoryEntry> {
        &self.entries
    }

    /// Restores [`History::entries`], refusing more than the capacity.
    pub(crate) fn restore_entries(&mut self, entries: VecDeque<HistoryEntry>) -> Result<(), String> {
        if entries.len() > self.capacity {
            return Err(format!("{} history entries, capacity {}", entries.len(), self.capacity));
        }
        self.entries = entries;
        Ok(())
    }
}
