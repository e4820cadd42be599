//! The flow table: a slab of flows plus a keyed hash index over the live, non-retired ones.
//!
//! Slots are reused through a free list, so the slab never grows past the most flows alive at
//! once (bounded by `max_flows`). The index stores only slot numbers; each flow keeps its own
//! hash, so the index can grow without rehashing keys. A retired flow (one that reached its
//! `requests`) leaves the index but keeps its slot until its replies are delivered.

use std::net::SocketAddr;

use hashbrown::HashTable;

use super::entry::Flow;
use super::key::{KeyedHasher, same_client};
use crate::config::Affinity;
use crate::id::{FlowId, ListenerId};

#[derive(Debug)]
enum Slot {
    Occupied(Flow),
    Vacant { next_free: u32 },
}

/// End of the free list.
const NO_SLOT: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct FlowTable {
    slots: Vec<Slot>,
    free_head: u32,
    index: HashTable<u32>,
    hasher: KeyedHasher,
    occupied: usize,
}

impl FlowTable {
    pub(crate) fn new(hasher: KeyedHasher) -> Self {
        FlowTable { slots: Vec::new(), free_head: NO_SLOT, index: HashTable::new(), hasher, occupied: 0 }
    }

    pub(crate) fn hash(&self, vip: SocketAddr, client: SocketAddr, affinity: Affinity) -> u64 {
        self.hasher.flow_hash(vip, client, affinity)
    }

    /// The live, non-retired flow of `client` on `listener` at `vip`, if any.
    pub(crate) fn find(
        &self,
        hash: u64,
        listener: ListenerId,
        vip: SocketAddr,
        client: SocketAddr,
        affinity: Affinity,
    ) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&slot| match &slots[slot as usize] {
                Slot::Occupied(flow) => {
                    flow.listener == listener
                        && flow.local == vip.ip()
                        && same_client(flow.client, client, affinity)
                }
                Slot::Vacant { .. } => false,
            })
            .copied()
    }

    /// The slot a new flow will take: the head of the free list, or a new one at the end.
    pub(crate) fn next_slot(&self) -> u32 {
        if self.free_head != NO_SLOT { self.free_head } else { self.slots.len() as u32 }
    }

    /// Whether [`FlowTable::insert_at`] can use `slot`: it is vacant, or the next new one.
    pub(crate) fn is_free(&self, slot: u32) -> bool {
        match self.slots.get(slot as usize) {
            Some(Slot::Vacant { .. }) => true,
            Some(Slot::Occupied(_)) => false,
            None => slot as usize == self.slots.len(),
        }
    }

    /// Stores a new flow in `slot` (which [`FlowTable::is_free`] accepted) and indexes it under
    /// `flow.hash`. The caller checked that no indexed flow has the same key. `slot` is almost
    /// always the free list's head (the slot [`FlowTable::next_slot`] named when the flow was
    /// staged); when flows closed in between, it is found further down the list.
    pub(crate) fn insert_at(&mut self, slot: u32, flow: Flow) {
        let hash = flow.hash;
        if slot as usize == self.slots.len() {
            self.slots.push(Slot::Occupied(flow));
        } else {
            let next_free = match self.slots[slot as usize] {
                Slot::Vacant { next_free } => next_free,
                Slot::Occupied(_) => unreachable!("inserting into an occupied slot"),
            };
            if self.free_head == slot {
                self.free_head = next_free;
            } else {
                // Unlink it: walk the free list to the slot that points at it.
                let mut at = self.free_head;
                loop {
                    match &mut self.slots[at as usize] {
                        Slot::Vacant { next_free: next } if *next == slot => {
                            *next = next_free;
                            break;
                        }
                        Slot::Vacant { next_free: next } => at = *next,
                        Slot::Occupied(_) => unreachable!("free list points at an occupied slot"),
                    }
                }
            }
            self.slots[slot as usize] = Slot::Occupied(flow);
        }
        let slots = &self.slots;
        self.index.insert_unique(hash, slot, |&s| match &slots[s as usize] {
            Slot::Occupied(flow) => flow.hash,
            Slot::Vacant { .. } => 0,
        });
        self.occupied += 1;
    }

    /// Removes `slot` from the index (the flow retires); the flow keeps its slot.
    pub(crate) fn unindex(&mut self, slot: u32) {
        let hash = self.get(slot).hash;
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    /// Frees `slot` (and its index entry, if it has one) and returns its flow.
    pub(crate) fn remove(&mut self, slot: u32) -> Flow {
        self.unindex(slot);
        let vacant = Slot::Vacant { next_free: self.free_head };
        match std::mem::replace(&mut self.slots[slot as usize], vacant) {
            Slot::Occupied(flow) => {
                self.free_head = slot;
                self.occupied -= 1;
                flow
            }
            Slot::Vacant { .. } => unreachable!("removing a vacant slot"),
        }
    }

    /// The live flow in `slot`. Slots handed out by this table are always valid while the
    /// flow lives; a vacant slot here is a bug in the flow manager.
    pub(crate) fn get(&self, slot: u32) -> &Flow {
        match &self.slots[slot as usize] {
            Slot::Occupied(flow) => flow,
            Slot::Vacant { .. } => unreachable!("flow slot {slot} is vacant"),
        }
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut Flow {
        match &mut self.slots[slot as usize] {
            Slot::Occupied(flow) => flow,
            Slot::Vacant { .. } => unreachable!("flow slot {slot} is vacant"),
        }
    }

    /// The slot of a flow handle from outside, if that flow is still alive.
    pub(crate) fn resolve(&self, id: FlowId) -> Option<u32> {
        match self.slots.get(id.slot as usize) {
            Some(Slot::Occupied(flow)) if flow.serial == id.serial => Some(id.slot),
            _ => None,
        }
    }

    /// Live flows (retired included).
    pub(crate) fn len(&self) -> usize {
        self.occupied
    }

    /// Indexed (non-retired) flows.
    pub(crate) fn indexed_len(&self) -> usize {
        self.index.len()
    }

    /// Every live flow with its slot, in slot order (deterministic).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Flow)> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, s)| match s {
            Slot::Occupied(flow) => Some((slot as u32, flow)),
            Slot::Vacant { .. } => None,
        })
    }

    /// Every slot in the index (for invariant checks).
    pub(crate) fn indexed_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.iter().copied()
    }

    /// Whether `slot` holds a live flow.
    pub(crate) fn is_occupied(&self, slot: u32) -> bool {
        matches!(self.slots.get(slot as usize), Some(Slot::Occupied(_)))
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

impl FlowTable {
    /// Writes the slab (flows and free list); the index is rebuilt on restore.
    pub(crate) fn write_snapshot(&self, w: &mut crate::snapshot::Writer) {
        use crate::snapshot::Codec;
        self.slots.len().put(w);
        for slot in &self.slots {
            match slot {
                Slot::Vacant { next_free } => {
                    0u8.put(w);
                    next_free.put(w);
                }
                Slot::Occupied(flow) => {
                    1u8.put(w);
                    flow.put(w);
                }
            }
        }
        self.free_head.put(w);
    }

    /// Replaces the slab with a snapshot's and indexes its live, non-retired flows (the index
    /// is only looked up, never iterated into an output, so its internal order is free).
    pub(crate) fn read_snapshot(
        &mut self,
        r: &mut crate::snapshot::Reader<'_>,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        let len = r.len("flow slots")?;
        let mut slots = Vec::with_capacity(len);
        for _ in 0..len {
            slots.push(match r.u8("flow slot tag")? {
                0 => Slot::Vacant { next_free: u32::get(r)? },
                1 => Slot::Occupied(Flow::get(r)?),
                _ => return Err(r.invalid("flow slot tag")),
            });
        }
        let free_head = u32::get(r)?;
        // The free list must visit only vacant slots, each once, and end.
        let mut at = free_head;
        let mut seen = 0usize;
        while at != NO_SLOT {
            match slots.get(at as usize) {
                Some(Slot::Vacant { next_free }) if seen < slots.len() => at = *next_free,
                _ => return Err(r.invalid("flow free list")),
            }
            seen += 1;
        }
        if seen != slots.iter().filter(|s| matches!(s, Slot::Vacant { .. })).count() {
            return Err(r.invalid("flow free list"));
        }
        self.slots = slots;
        self.free_head = free_head;
        self.occupied = self.slots.len() - seen;
        self.index = HashTable::new();
        for slot in 0..self.slots.len() {
            let (hash, retired) = match &self.slots[slot] {
                Slot::Occupied(flow) => (flow.hash, flow.retired),
                Slot::Vacant { .. } => continue,
            };
            if retired {
                continue;
            }
            let slots = &self.slots;
            self.index.insert_unique(hash, slot as u32, |&s| match &slots[s as usize] {
                Slot::Occupied(flow) => flow.hash,
                Slot::Vacant { .. } => 0,
            });
        }
        Ok(())
    }
}
