//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4).
//!
//! The table has a prime number `M` of entries (65,537 by default, the paper's choice). Each
//! backend walks its own permutation of the entries, `offset, offset + skip, …` modulo `M`,
//! with `offset` and `skip` taken from two keyed hashes of its identity; because `M` is prime
//! and `1 ≤ skip < M`, the walk visits every entry. Backends take turns claiming the next free
//! entry of their walk until the table is full, and a flow goes to the owner of the entry its
//! affinity hash maps to (by multiply-shift onto `[0, M)`). The paper shows that this keeps the table balanced and that removing
//! one of `N` backends reassigns little more than the `1/N` of entries it owned.
//!
//! Weights: the paper's turns are rounds in which every backend claims once. Here a backend
//! earns `weight / max weight` of a claim per round and claims when it has earned a whole one,
//! so the heaviest backends claim once per round and the others in proportion to their
//! weights (entry counts match weight shares to within about one entry per backend). A backend
//! of weight `w` makes its `k`-th claim in round `⌈k · max / w⌉`, so backends of equal weight
//! claim in the same rounds: they form a *class*. Within a round, classes go heaviest first
//! and, inside a class, backends go in identity order; with equal weights that is exactly the
//! paper's order. A small heap of classes keyed by their next round serves the turns, so the
//! build costs `O(M)` claims plus `O(rounds · log classes)` heap work, however the weights are
//! spread (a literal round-by-round scan of every backend would cost `O(M · max / mean
//! weight)`, and a heap of backends `O(M log N)`, which doubles the build time at N = 1,000).
//!
//! Members arrive sorted by identity (see `RoutableSet`): the paper hands out the first rounds
//! in iteration order, so an unsorted input would let listing order change the table.

use core::cmp::Reverse;
use core::hash::Hasher;
use std::collections::BinaryHeap;

use siphasher::sip::SipHasher13;

use super::routable::Member;

/// An entry no member has claimed yet.
const EMPTY: u32 = u32::MAX;

/// The table size actually used for `requested`: the next prime at or above it (validation
/// only lets primes through; this keeps a careless caller from a walk that never ends).
pub(super) fn table_size(requested: u32) -> u32 {
    let mut size = requested.max(2);
    while !is_prime(size) {
        // Below 2^32 gaps between primes are far shorter than the distance to overflow, but
        // the largest 32-bit prime stands in rather than wrapping if they were not.
        size = match size.checked_add(1) {
            Some(next) => next,
            None => return 4_294_967_291,
        };
    }
    size
}

/// Trial division up to the square root: at most 65,536 steps, and only at construction.
fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    n >= 2 && (2u64..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Where one member is in its permutation.
#[derive(Copy, Clone, Debug)]
struct Walk {
    next: u64,
    skip: u64,
}

/// Members of equal weight, which claim in the same rounds: `order[start..end]`.
#[derive(Copy, Clone, Debug)]
struct Class {
    weight: u32,
    start: usize,
    end: usize,
    /// Claims each member of the class has made so far.
    claims: u64,
}

/// A Maglev lookup table and the scratch space to rebuild it without reallocating.
#[derive(Clone)]
pub(super) struct MaglevTable {
    size: u32,
    /// Member index (into the routable set) per entry; empty until the first build.
    entries: Vec<u32>,
    walks: Vec<Walk>,
    /// Member indices, heaviest first, identity order within a weight.
    order: Vec<u32>,
    classes: Vec<Class>,
    /// (round of the next claim, class index): the class whose turn comes next on top.
    turns: BinaryHeap<Reverse<(u64, usize)>>,
}

impl MaglevTable {
    pub(super) fn new(size: u32) -> MaglevTable {
        MaglevTable {
            size,
            entries: Vec::new(),
            walks: Vec::new(),
            order: Vec::new(),
            classes: Vec::new(),
            turns: BinaryHeap::new(),
        }
    }

    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// The member owning each entry.
    #[cfg(test)]
    pub(super) fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// Fills the table from `members` (sorted by identity, weights above zero). With no
    /// members the table is empty and every lookup misses.
    pub(super) fn build(&mut self, members: &[Member], offset_key: &SipHasher13, skip_key: &SipHasher13) {
        self.entries.clear();
        self.walks.clear();
        self.order.clear();
        self.classes.clear();
        self.turns.clear();
        let Some(max_weight) = members.iter().map(|m| u64::from(m.weight)).max().filter(|&w| w > 0) else {
            return;
        };
        let size = u64::from(self.size);
        self.entries.resize(self.size as usize, EMPTY);
        for member in members {
            let identity = member.identity.to_le_bytes();
            let offset = offset_key.hash(&identity) % size;
            let skip = skip_key.hash(&identity) % (size - 1) + 1;
            self.walks.push(Walk { next: offset, skip });
        }
        self.order.extend((0..members.len()).filter(|&i| members[i].weight > 0).map(|i| i as u32));
        // Stable: identity order is kept within a weight.
        self.order.sort_by_key(|&i| Reverse(members[i as usize].weight));
        for (position, &index) in self.order.iter().enumerate() {
            let weight = members[index as usize].weight;
            match self.classes.last_mut() {
                Some(class) if class.weight == weight => class.end = position + 1,
                _ => self.classes.push(Class { weight, start: position, end: position + 1, claims: 0 }),
            }
        }
        for (class_index, class) in self.classes.iter().enumerate() {
            self.turns.push(Reverse((claim_round(1, max_weight, class.weight), class_index)));
        }
        let mut filled = 0u64;
        'turns: while let Some(Reverse((_, class_index))) = self.turns.pop() {
            let class = &mut self.classes[class_index];
            for &index in &self.order[class.start..class.end] {
                if filled == size || !claim(&mut self.entries, &mut self.walks[index as usize], size, index) {
                    break 'turns;
                }
                filled += 1;
            }
            class.claims += 1;
            self.turns.push(Reverse((claim_round(class.claims + 1, max_weight, class.weight), class_index)));
        }
        debug_assert_eq!(filled, size, "a Maglev table over a prime size always fills");
    }

    /// The first entry, starting at the flow's own and moving forward, whose member `accept`
    /// takes; `accept` returns the candidate index to use. Starting at the flow's own entry
    /// makes the common case one lookup; moving forward lets an excluded or stale owner fall
    /// through deterministically to a neighbour, which is a different backend about as often
    /// as the table's shares say. Bounded by the table size.
    pub(super) fn lookup(
        &self,
        affinity_hash: u64,
        mut accept: impl FnMut(u32) -> Option<usize>,
    ) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let size = self.entries.len();
        // Multiply-shift maps the 64-bit hash onto [0, size) without a division.
        let start = ((u128::from(affinity_hash) * size as u128) >> 64) as usize;
        for step in 0..size {
            let slot = (start + step) % size;
            if let Some(index) = accept(self.entries[slot]) {
                return Some(index);
            }
        }
        None
    }

    /// Feeds the entries to a fingerprint, in table order.
    pub(super) fn hash_into(&self, hasher: &mut SipHasher13) {
        hasher.write(&self.size.to_le_bytes());
        let mut chunk = [0u8; 4 * 256];
        for entries in self.entries.chunks(256) {
            for (bytes, entry) in chunk.chunks_exact_mut(4).zip(entries) {
                bytes.copy_from_slice(&entry.to_le_bytes());
            }
            hasher.write(&chunk[..entries.len() * 4]);
        }
    }
}

/// The round in which a member of weight `weight` makes its `claim`-th claim, when it earns
/// `weight / max_weight` of a claim per round: `⌈claim · max_weight / weight⌉`.
fn claim_round(claim: u64, max_weight: u64, weight: u32) -> u64 {
    let weight = u64::from(weight.max(1));
    (claim * max_weight).div_ceil(weight)
}

/// Claims the next free entry on `walk` for member `index`. A walk over a prime-sized table
/// visits every entry within `size` steps, so while the table has a free entry this succeeds.
fn claim(entries: &mut [u32], walk: &mut Walk, size: u64, index: u32) -> bool {
    for _ in 0..size {
        let slot = walk.next as usize;
        walk.next += walk.skip;
        if walk.next >= size {
            walk.next -= size;
        }
        if entries[slot] == EMPTY {
            entries[slot] = index;
            return true;
        }
    }
    false
}
