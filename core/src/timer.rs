//! The deadline index: one ordered set of deadlines for everything the core times (flows,
//! listener drains, and later probes).
//!
//! Entries are keyed by `(deadline, sequence)`; the sequence number is unique and increasing,
//! so entries with equal deadlines fire in the order they were armed, on every machine. Each
//! timed object keeps the [`TimerHandle`] of its one armed entry and removes it eagerly when
//! it goes away, so the index never holds more entries than there are live objects: a flood of
//! short flows cannot grow it. Insertion and removal are O(log n).
//!
//! Flows do not re-arm on every datagram. A flow's entry may fire *before* the flow's real
//! deadline (activity moved it later); the flow manager then re-arms it once. The index
//! itself knows nothing about that.

use std::collections::BTreeMap;

use crate::time::Instant;

/// Identifies one armed entry, so its owner can remove it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerHandle {
    pub(crate) deadline: Instant,
    sequence: u64,
}

/// An ordered set of deadlines, each carrying a small key naming its owner.
#[derive(Debug)]
pub(crate) struct DeadlineIndex<K> {
    entries: BTreeMap<(Instant, u64), K>,
    next_sequence: u64,
}

impl TimerHandle {
    /// A handle that names no entry: removing it does nothing. Owners start with it.
    pub(crate) const DISARMED: TimerHandle = TimerHandle { deadline: Instant::MAX, sequence: u64::MAX };
}

impl<K: Copy> DeadlineIndex<K> {
    pub(crate) fn new() -> Self {
        DeadlineIndex { entries: BTreeMap::new(), next_sequence: 0 }
    }

    /// Arms a deadline for `key` and returns its handle.
    pub(crate) fn insert(&mut self, deadline: Instant, key: K) -> TimerHandle {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.entries.insert((deadline, sequence), key);
        TimerHandle { deadline, sequence }
    }

    /// Disarms an entry. Returns its key, or `None` if it already fired or was removed.
    pub(crate) fn remove(&mut self, handle: TimerHandle) -> Option<K> {
        self.entries.remove(&(handle.deadline, handle.sequence))
    }

    /// Whether the entry is still armed with this key.
    pub(crate) fn contains(&self, handle: TimerHandle) -> bool {
        self.entries.contains_key(&(handle.deadline, handle.sequence))
    }

    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|((deadline, _), _)| *deadline)
    }

    /// Removes and returns the earliest entry whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(TimerHandle, K)> {
        let entry = self.entries.first_entry()?;
        let (deadline, sequence) = *entry.key();
        if deadline > now {
            return None;
        }
        let key = entry.remove();
        Some((TimerHandle { deadline, sequence }, key))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every armed entry, earliest first (for invariant checks).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TimerHandle, K)> + '_ {
        self.entries.iter().map(|(&(deadline, sequence), &key)| (TimerHandle { deadline, sequence }, key))
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(TimerHandle { deadline, sequence });

impl<K: Copy + crate::snapshot::Codec> crate::snapshot::Codec for DeadlineIndex<K> {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        self.entries.put(w);
        self.next_sequence.put(w);
    }
    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        let entries: BTreeMap<(Instant, u64), K> = crate::snapshot::Codec::get(r)?;
        let next_sequence: u64 = crate::snapshot::Codec::get(r)?;
        if entries.keys().any(|&(_, sequence)| sequence >= next_sequence) {
            return Err(r.invalid("timer sequence"));
        }
        Ok(DeadlineIndex { entries, next_sequence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_deadlines_fire_in_arming_order_and_only_when_due() {
        let mut index = DeadlineIndex::new();
        let later = index.insert(Instant::from_secs(2), 'c');
        index.insert(Instant::from_secs(1), 'a');
        index.insert(Instant::from_secs(1), 'b');
        assert_eq!(index.next_deadline(), Some(Instant::from_secs(1)));
        assert!(index.pop_expired(Instant::from_millis(999)).is_none());
        let fired: Vec<char> =
            std::iter::from_fn(|| index.pop_expired(Instant::from_secs(1)).map(|(_, k)| k)).collect();
        assert_eq!(fired, vec!['a', 'b']);
        assert!(index.contains(later));
        assert_eq!(index.remove(later), Some('c'));
        assert_eq!(index.remove(later), None);
        assert_eq!(index.len(), 0);
        assert_eq!(index.next_deadline(), None);
    }
}
