//! [`Balancer::snapshot`] and [`Balancer::restore`]; the format is described in
//! [`crate::snapshot`].

use std::collections::BTreeMap;

use super::{Balancer, FrontendState, Role};
use crate::config::Config;
use crate::flow::Keys;
use crate::health::BackendState;
use crate::id::{BackendId, ListenerId};
use crate::snapshot::{
    Codec, SECTION_BALANCER, SECTION_FLOWS, SECTION_HEADER, SECTION_HEALTH, SECTION_LAYOUT, Sections,
    SnapshotError, config_fingerprint, preamble,
};

crate::snapshot::codec_unit_enum!(Role { Whole, Leader, Follower });

impl Balancer {
    /// The balancer's whole dynamic state, for [`Balancer::restore`] under the same
    /// configuration (`config` must be the one it runs: its fingerprint is recorded). Every
    /// output must have been polled first ([`SnapshotError::PendingOutputs`]).
    pub fn snapshot(&self, config: &Config) -> Result<Vec<u8>, SnapshotError> {
        if !self.outputs.is_empty() {
            return Err(SnapshotError::PendingOutputs(self.outputs.len()));
        }
        let mut w = preamble();
        w.section(SECTION_HEADER, |w| {
            self.role.put(w);
            config_fingerprint(config).put(w);
            let keys = self.flows.keys();
            keys.selection.put(w);
            keys.table.put(w);
            keys.unique.put(w);
        });
        w.section(SECTION_LAYOUT, |w| self.flows.write_layout(w));
        let mut flows = Ok(());
        w.section(SECTION_FLOWS, |w| flows = self.flows.write_snapshot(w));
        flows?;
        let mut health = Ok(());
        w.section(SECTION_HEALTH, |w| health = self.monitor.write_snapshot(w));
        health?;
        w.section(SECTION_BALANCER, |w| {
            self.frontends.put(w);
            self.followed.put(w);
        });
        Ok(w.bytes)
    }

    /// A balancer in the state `snapshot` recorded, under `config` (the one it was taken
    /// under; the keys and the role come from the snapshot). Fed the inputs the original
    /// would have been fed, it gives the outputs the original would have given.
    pub fn restore(config: &Config, snapshot: &[u8]) -> Result<Balancer, SnapshotError> {
        let mut sections = Sections::open(snapshot)?;
        let mut header = sections.next(SECTION_HEADER)?;
        let role = Role::get(&mut header)?;
        let fingerprint = u64::get(&mut header)?;
        let keys = Keys {
            selection: Codec::get(&mut header)?,
            table: Codec::get(&mut header)?,
            unique: Codec::get(&mut header)?,
        };
        header.finish()?;
        let ours = config_fingerprint(config);
        if fingerprint != ours {
            return Err(SnapshotError::ConfigMismatch { snapshot: fingerprint, config: ours });
        }
        let mut balancer = Balancer::with_role(config, keys, role).map_err(|errors| {
            SnapshotError::InvalidConfig(
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            )
        })?;
        balancer.flows.check_layout(&mut sections.next(SECTION_LAYOUT)?)?;
        balancer.flows.read_snapshot(&mut sections.next(SECTION_FLOWS)?)?;
        balancer.monitor.read_snapshot(&mut sections.next(SECTION_HEALTH)?)?;
        let mut tail = sections.next(SECTION_BALANCER)?;
        let frontends: BTreeMap<ListenerId, FrontendState> = Codec::get(&mut tail)?;
        let followed: BTreeMap<BackendId, BackendState> = Codec::get(&mut tail)?;
        tail.finish()?;
        sections.finish()?;
        balancer.frontends = frontends;
        balancer.followed = followed;
        balancer.check_invariants().map_err(SnapshotError::Inconsistent)?;
        Ok(balancer)
    }
}
