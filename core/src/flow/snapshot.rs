//! The flow manager's part of a snapshot (`crate::snapshot`): what inputs changed. The
//! listeners', clusters' and backends' settings are rebuilt from the configuration; their
//! identities (the layout) are checked against the snapshot's.

use super::{Backend, Cluster, DrainState, FlowManager, Listener, TimerKey};
use crate::config::Algorithm;
use crate::snapshot::{Codec, Reader, SnapshotError, Writer, codec_struct};

codec_struct!(Decision { fingerprint_high, pool, flags, algorithm });
use super::Decision;

impl Codec for DrainState {
    fn put(&self, w: &mut Writer) {
        match self {
            DrainState::Active => 0u8.put(w),
            DrainState::Draining { timer, drained } => {
                1u8.put(w);
                timer.put(w);
                drained.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("drain state")? {
            0 => Ok(DrainState::Active),
            1 => Ok(DrainState::Draining { timer: Codec::get(r)?, drained: Codec::get(r)? }),
            _ => Err(r.invalid("drain state")),
        }
    }
}

impl Codec for TimerKey {
    fn put(&self, w: &mut Writer) {
        match self {
            TimerKey::Flow { slot } => {
                0u8.put(w);
                slot.put(w);
            }
            TimerKey::ListenerDrain(listener) => {
                1u8.put(w);
                listener.put(w);
            }
            TimerKey::BackendDrain(backend) => {
                2u8.put(w);
                backend.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("flow timer key")? {
            0 => Ok(TimerKey::Flow { slot: Codec::get(r)? }),
            1 => Ok(TimerKey::ListenerDrain(Codec::get(r)?)),
            2 => Ok(TimerKey::BackendDrain(Codec::get(r)?)),
            _ => Err(r.invalid("flow timer key")),
        }
    }
}

impl FlowManager {
    /// The keys it was built with.
    pub(crate) fn keys(&self) -> super::Keys {
        super::Keys { selection: self.selection_key, table: self.source_key, unique: self.unique_prefix }
    }

    /// The layout: what every id stands for (name, address, cluster, removed).
    pub(crate) fn write_layout(&self, w: &mut Writer) {
        self.listeners.len().put(w);
        for Listener { name, address, cluster, removed, .. } in &self.listeners {
            name.as_bytes().to_vec().put(w);
            address.put(w);
            cluster.put(w);
            removed.put(w);
        }
        self.clusters.len().put(w);
        for Cluster { name, removed, .. } in &self.clusters {
            name.as_bytes().to_vec().put(w);
            removed.put(w);
        }
        self.backends.len().put(w);
        for Backend { name, address, cluster, removed, .. } in &self.backends {
            name.as_bytes().to_vec().put(w);
            address.put(w);
            cluster.put(w);
            removed.put(w);
        }
    }

    /// Writes the dynamic state.
    pub(crate) fn write_snapshot(&self, w: &mut Writer) -> Result<(), SnapshotError> {
        if !self.outputs.is_empty() {
            return Err(SnapshotError::PendingOutputs(self.outputs.len()));
        }
        for listener in &self.listeners {
            listener.drain.put(w);
            listener.flows_at_cap_change.put(w);
            match &listener.sources {
                None => 0u8.put(w),
                Some(sources) => {
                    1u8.put(w);
                    sources.write_snapshot(w);
                }
            }
        }
        for cluster in &self.clusters {
            cluster.candidates.put(w);
            cluster.cap_started.put(w);
            let (word_pos, scores, rebuilds) = cluster.selector.dynamic_state();
            (word_pos as u64).put(w);
            ((word_pos >> 64) as u64).put(w);
            scores.put(w);
            rebuilds.put(w);
        }
        for backend in &self.backends {
            backend.health.put(w);
            backend.admin.put(w);
            backend.flows.put(w);
            backend.candidate.put(w);
            backend.drained_reported.put(w);
            backend.drain_timer.put(w);
            backend.passive.put(w);
            backend.reply_time.put(w);
        }
        self.table.write_snapshot(w);
        self.timers.put(w);
        self.stats.put(w);
        self.flows_at_cap_change.put(w);
        self.retry_slots.bytes_kept().put(w);
        self.next_serial.put(w);
        self.now.put(w);
        self.timeouts_handled_until.put(w);
        Ok(())
    }

    /// Checks the layout against this (freshly built) manager's.
    pub(crate) fn check_layout(&self, r: &mut Reader<'_>) -> Result<(), SnapshotError> {
        let mismatch = |what, index, snapshot: String, config: String| {
            Err(SnapshotError::LayoutMismatch { what, index, snapshot, config })
        };
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        let count = r.len("listener count")?;
        if count != self.listeners.len() {
            return mismatch("listener count", 0, count.to_string(), self.listeners.len().to_string());
        }
        for (index, listener) in self.listeners.iter().enumerate() {
            let entry: (Vec<u8>, std::net::SocketAddr, crate::id::ClusterId, bool) = Codec::get(r)?;
            let ours =
                (listener.name.as_bytes().to_vec(), listener.address, listener.cluster, listener.removed);
            if entry != ours {
                return mismatch(
                    "listener",
                    index,
                    format!("{} {} {} removed={}", text(entry.0), entry.1, entry.2, entry.3),
                    format!("{} {} {} removed={}", listener.name, ours.1, ours.2, ours.3),
                );
            }
        }
        let count = r.len("cluster count")?;
        if count != self.clusters.len() {
            return mismatch("cluster count", 0, count.to_string(), self.clusters.len().to_string());
        }
        for (index, cluster) in self.clusters.iter().enumerate() {
            let entry: (Vec<u8>, bool) = Codec::get(r)?;
            if entry != (cluster.name.as_bytes().to_vec(), cluster.removed) {
                return mismatch(
                    "cluster",
                    index,
                    format!("{} removed={}", text(entry.0), entry.1),
                    format!("{} removed={}", cluster.name, cluster.removed),
                );
            }
        }
        let count = r.len("backend count")?;
        if count != self.backends.len() {
            return mismatch("backend count", 0, count.to_string(), self.backends.len().to_string());
        }
        for (index, backend) in self.backends.iter().enumerate() {
            let entry: (Vec<u8>, std::net::SocketAddr, crate::id::ClusterId, bool) = Codec::get(r)?;
            let ours = (backend.name.as_bytes().to_vec(), backend.address, backend.cluster, backend.removed);
            if entry != ours {
                return mismatch(
                    "backend",
                    index,
                    format!("{} {} {} removed={}", text(entry.0), entry.1, entry.2, entry.3),
                    format!("{} {} {} removed={}", backend.name, ours.1, ours.2, ours.3),
                );
            }
        }
        r.finish()
    }

    /// Replaces the dynamic state with a snapshot's (the layout already checked).
    pub(crate) fn read_snapshot(&mut self, r: &mut Reader<'_>) -> Result<(), SnapshotError> {
        for listener in &mut self.listeners {
            listener.drain = Codec::get(r)?;
            listener.flows_at_cap_change = Codec::get(r)?;
            match (r.u8("source table tag")?, &mut listener.sources) {
                (0, None) => {}
                (1, Some(sources)) => sources.read_snapshot(r)?,
                _ => return Err(r.invalid("source table tag (does the listener have source_limits?)")),
            }
        }
        for cluster in &mut self.clusters {
            let candidates: Vec<crate::select::Candidate> = Codec::get(r)?;
            if candidates.len() != cluster.candidates.len()
                || candidates.iter().zip(&cluster.candidates).any(|(a, b)| {
                    (a.backend, a.identity, a.pool, a.backup) != (b.backend, b.identity, b.pool, b.backup)
                })
            {
                return Err(r.invalid("cluster candidates (not the configuration's backends)"));
            }
            cluster.candidates = candidates;
            cluster.cap_started = Codec::get(r)?;
            let word_pos: u128 = {
                let low: u64 = Codec::get(r)?;
                let high: u64 = Codec::get(r)?;
                if high >= 16 {
                    // ChaCha's position has 68 bits.
                    return Err(r.invalid("selection generator position"));
                }
                u128::from(low) | (u128::from(high) << 64)
            };
            let scores: Vec<i64> = Codec::get(r)?;
            let rebuilds: u64 = Codec::get(r)?;
            if cluster.algorithm == Algorithm::RoundRobin && scores.len() > cluster.candidates.len() {
                return Err(r.invalid("round-robin scores"));
            }
            cluster.selector.restore_dynamic_state(&cluster.candidates, word_pos, scores, rebuilds);
        }
        for backend in &mut self.backends {
            backend.health = Codec::get(r)?;
            backend.admin = Codec::get(r)?;
            backend.flows = Codec::get(r)?;
            let candidate: usize = Codec::get(r)?;
            if candidate != backend.candidate {
                return Err(r.invalid("backend candidate position"));
            }
            backend.drained_reported = Codec::get(r)?;
            backend.drain_timer = Codec::get(r)?;
            backend.passive = Codec::get(r)?;
            backend.reply_time = Codec::get(r)?;
        }
        self.table.read_snapshot(r)?;
        self.timers = Codec::get(r)?;
        let stats: crate::stats::Stats = Codec::get(r)?;
        if stats.listeners.len() != self.stats.listeners.len()
            || stats.backends.len() != self.stats.backends.len()
        {
            return Err(r.invalid("stats (not one entry per listener and backend)"));
        }
        self.stats = stats;
        self.flows_at_cap_change = Codec::get(r)?;
        self.retry_slots.restore_bytes_kept(Codec::get(r)?);
        self.next_serial = Codec::get(r)?;
        self.now = Codec::get(r)?;
        self.timeouts_handled_until = Codec::get(r)?;
        r.finish()?;
        self.check_references()
    }

    /// Every id the state names exists (the invariant checks that follow index by them), and
    /// the sums those checks take do not overflow (a snapshot this code wrote never does).
    fn check_references(&self) -> Result<(), SnapshotError> {
        let sum = |first: u64, rest: &[u64]| rest.iter().try_fold(first, |total, n| total.checked_add(*n));
        let datagrams = self
            .stats
            .listeners
            .iter()
            .flat_map(|l| [&l.client, &l.backend])
            .chain([&self.stats.unattributed]);
        for counters in datagrams {
            if sum(counters.passed, &counters.drops).is_none() {
                return Err(SnapshotError::Inconsistent("datagram counters overflow".into()));
            }
        }
        for counters in self.stats.listeners.iter().map(|l| &l.flows).chain([&self.stats.flows]) {
            if sum(counters.active, &counters.closed).is_none() {
                return Err(SnapshotError::Inconsistent("flow counters overflow".into()));
            }
        }
        let listener = |id: crate::id::ListenerId| (id.0 as usize) < self.listeners.len();
        let backend = |id: crate::id::BackendId| (id.0 as usize) < self.backends.len();
        for (slot, flow) in self.table.iter() {
            if !listener(flow.listener) || !backend(flow.backend) {
                return Err(SnapshotError::Inconsistent(format!(
                    "the flow in slot {slot} names {} and {}, which do not exist",
                    flow.listener, flow.backend
                )));
            }
        }
        for (_, key) in self.timers.iter() {
            let known = match key {
                TimerKey::Flow { slot } => self.table.is_occupied(slot),
                TimerKey::ListenerDrain(id) => listener(id),
                TimerKey::BackendDrain(id) => backend(id),
            };
            if !known {
                return Err(SnapshotError::Inconsistent(format!(
                    "a timer names {key:?}, which does not exist"
                )));
            }
        }
        Ok(())
    }
}
