//! The health monitor's part of a snapshot (`crate::snapshot`): each backend's hysteresis,
//! admin state, check in flight, jitter position, history and outlier state; the clusters'
//! stagger and all-down latches; probes awaited, timers and counters. Each backend's spec
//! (settings, probe datagram) is rebuilt from the configuration.

use std::collections::{BTreeMap, BTreeSet};

use super::monitor::{Check, HealthMonitor, ProbeSlot, TimerKey, View};
use crate::id::BackendId;
use crate::snapshot::{Codec, Reader, SnapshotError, Writer, codec_struct};

codec_struct!(ProbeSlot { id, result, announced });
codec_struct!(Check { started, timeout, tcp, udp });
codec_struct!(View { health, admin, ejected });

impl Codec for TimerKey {
    fn put(&self, w: &mut Writer) {
        let (tag, backend) = match self {
            TimerKey::Schedule(backend) => (0u8, backend),
            TimerKey::CheckTimeout(backend) => (1, backend),
            TimerKey::Readmit(backend) => (2, backend),
        };
        tag.put(w);
        backend.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let tag = r.u8("health timer key")?;
        let backend = BackendId::get(r)?;
        match tag {
            0 => Ok(TimerKey::Schedule(backend)),
            1 => Ok(TimerKey::CheckTimeout(backend)),
            2 => Ok(TimerKey::Readmit(backend)),
            _ => Err(r.invalid("health timer key")),
        }
    }
}

impl HealthMonitor {
    /// Writes the dynamic state; every output must have been polled.
    pub(crate) fn write_snapshot(&self, w: &mut Writer) -> Result<(), SnapshotError> {
        let events_dropped = self.outputs.snapshot_state().map_err(SnapshotError::PendingOutputs)?;
        self.backends.len().put(w);
        for (id, backend) in &self.backends {
            id.put(w);
            backend.hysteresis.put(w);
            backend.admin.put(w);
            backend.schedule.put(w);
            backend.check.put(w);
            let word_pos = backend.jitter.word_pos();
            (word_pos as u64).put(w);
            ((word_pos >> 64) as u64).put(w);
            backend.slot.put(w);
            backend.last_code.put(w);
            backend.last_check_at.put(w);
            backend.history.entries().put(w);
            backend.outlier.put(w);
            backend.check_durations.put(w);
        }
        self.clusters.len().put(w);
        for (id, cluster) in &self.clusters {
            id.put(w);
            cluster.phase.put(w);
            cluster.next_slot.put(w);
            cluster.members.put(w);
            cluster.all_down.put(w);
        }
        self.probes.put(w);
        self.timers.put(w);
        events_dropped.put(w);
        self.removed.put(w);
        self.next_probe_id.put(w);
        self.stats.put(w);
        Ok(())
    }

    /// Replaces the dynamic state of a monitor built from the same configuration.
    pub(crate) fn read_snapshot(&mut self, r: &mut Reader<'_>) -> Result<(), SnapshotError> {
        let count = r.len("monitored backend count")?;
        if count != self.backends.len() {
            return Err(r.invalid("monitored backend count (not the configuration's)"));
        }
        for (id, backend) in &mut self.backends {
            if BackendId::get(r)? != *id {
                return Err(r.invalid("monitored backend id (not the configuration's)"));
            }
            backend.hysteresis = Codec::get(r)?;
            backend.admin = Codec::get(r)?;
            backend.schedule = Codec::get(r)?;
            backend.check = Codec::get(r)?;
            let low: u64 = Codec::get(r)?;
            let high: u64 = Codec::get(r)?;
            if high >= 16 {
                // ChaCha's position has 68 bits.
                return Err(r.invalid("jitter generator position"));
            }
            backend.jitter.set_word_pos(u128::from(low) | (u128::from(high) << 64));
            backend.slot = Codec::get(r)?;
            backend.last_code = Codec::get(r)?;
            backend.last_check_at = Codec::get(r)?;
            let entries = Codec::get(r)?;
            backend.history.restore_entries(entries).map_err(|_| r.invalid("history (over its capacity)"))?;
            backend.outlier = Codec::get(r)?;
            backend.check_durations = Codec::get(r)?;
        }
        let count = r.len("monitored cluster count")?;
        if count != self.clusters.len() {
            return Err(r.invalid("monitored cluster count (not the configuration's)"));
        }
        for (id, cluster) in &mut self.clusters {
            if crate::id::ClusterId::get(r)? != *id {
                return Err(r.invalid("monitored cluster id (not the configuration's)"));
            }
            cluster.phase = Codec::get(r)?;
            cluster.next_slot = Codec::get(r)?;
            let members: BTreeSet<BackendId> = Codec::get(r)?;
            if members != cluster.members {
                return Err(r.invalid("cluster members (not the configuration's)"));
            }
            cluster.all_down = Codec::get(r)?;
        }
        self.probes = Codec::get(r)?;
        self.timers = Codec::get(r)?;
        self.outputs.restore_state(Codec::get(r)?);
        let removed: BTreeMap<BackendId, View> = Codec::get(r)?;
        self.removed = removed;
        self.next_probe_id = Codec::get(r)?;
        self.stats = Codec::get(r)?;
        r.finish()?;
        // Every backend the state names is monitored (the monitor indexes by them).
        let unknown =
            self.probes.values().map(|(backend, _)| *backend).chain(self.timers.iter().map(|(_, key)| {
                match key {
                    TimerKey::Schedule(backend)
                    | TimerKey::CheckTimeout(backend)
                    | TimerKey::Readmit(backend) => backend,
                }
            }));
        for backend in unknown.collect::<Vec<_>>() {
            if !self.backends.contains_key(&backend) {
                return Err(SnapshotError::Inconsistent(format!(
                    "the health state names {backend}, not monitored"
                )));
            }
        }
        Ok(())
    }
}
