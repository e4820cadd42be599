//! Tiers and the routable set: which backends new flows may go to right now.

use super::Candidate;
use crate::id::BackendId;

/// The tier a request is served from: one pool, primary or backup, chosen by health or, in
/// fail-open, by admin state alone.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Tier {
    pub(super) pool: u32,
    pub(super) backup: bool,
    /// Chosen among enabled backends because none was eligible.
    pub(super) fail_open: bool,
}

impl Tier {
    /// Whether `candidate` may take this request's flow.
    pub(super) fn admits(self, candidate: &Candidate, exclude: &[BackendId]) -> bool {
        candidate.pool == self.pool
            && candidate.backup == self.backup
            && usable(candidate, self.fail_open)
            && !exclude.contains(&candidate.backend)
    }

    /// The lowest pool among qualifying primary backends, else the lowest pool among
    /// qualifying backups; `None` when nothing qualifies. With `fail_open`, "qualifying" reads
    /// `enabled` instead of `eligible`.
    pub(super) fn choose(candidates: &[Candidate], exclude: &[BackendId], fail_open: bool) -> Option<Tier> {
        let mut primary: Option<u32> = None;
        let mut backup: Option<u32> = None;
        for candidate in candidates {
            if !usable(candidate, fail_open) || exclude.contains(&candidate.backend) {
                continue;
            }
            let lowest = if candidate.backup { &mut backup } else { &mut primary };
            *lowest = Some(lowest.map_or(candidate.pool, |pool| pool.min(candidate.pool)));
        }
        primary
            .map(|pool| Tier { pool, backup: false, fail_open })
            .or_else(|| backup.map(|pool| Tier { pool, backup: true, fail_open }))
    }
}

/// Weighted above zero and, depending on the mode, eligible or merely enabled.
fn usable(candidate: &Candidate, fail_open: bool) -> bool {
    let ignore_health = crate::mutants::active(crate::mutants::Mutant::SelectionIgnoresHealth);
    candidate.weight > 0 && if fail_open || ignore_health { candidate.enabled } else { candidate.eligible }
}

/// One backend of the routable set.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) identity: u64,
    pub(super) weight: u32,
    /// Index in the caller's candidate list as of the last update.
    pub(super) candidate: u32,
}

/// The tier new flows go to when nothing is excluded, and its members sorted by identity:
/// the input every table is built from.
///
/// Sorting by identity rather than trusting the caller's order is what makes a Maglev table
/// independent of the order backends are listed in (Maglev hands out its first rounds in
/// member order). Identity ties (a 64-bit keyed-hash collision) fall back to weight, then to
/// the caller's order.
#[derive(Clone, Debug, Default)]
pub(super) struct RoutableSet {
    pub(super) tier: Option<Tier>,
    pub(super) members: Vec<Member>,
}

impl RoutableSet {
    /// Recomputes the set from `candidates`, reusing the allocation: the eligible tier, or the
    /// fail-open tier when nothing is eligible (the request decides whether fail-open is
    /// allowed; the set only records which tier it is).
    pub(super) fn collect(&mut self, candidates: &[Candidate]) {
        self.tier = Tier::choose(candidates, &[], false).or_else(|| Tier::choose(candidates, &[], true));
        self.members.clear();
        let Some(tier) = self.tier else { return };
        for (index, candidate) in candidates.iter().enumerate() {
            if tier.admits(candidate, &[]) {
                let candidate_index = u32::try_from(index).unwrap_or(u32::MAX);
                self.members.push(Member {
                    identity: candidate.identity,
                    weight: candidate.weight,
                    candidate: candidate_index,
                });
            }
        }
        if !crate::mutants::active(crate::mutants::Mutant::MaglevUnsorted) {
            self.members.sort_unstable_by_key(|m| (m.identity, m.weight, m.candidate));
        }
    }

    /// Whether both sets route alike: same tier, same identities with the same weights in the
    /// same order. Candidate indices and flow counts do not matter.
    pub(super) fn routes_like(&self, other: &RoutableSet) -> bool {
        self.tier == other.tier
            && self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| a.identity == b.identity && a.weight == b.weight)
    }

    /// The candidate index of member `member`, if there is such a member.
    pub(super) fn candidate_of(&self, member: u32) -> Option<usize> {
        self.members.get(member as usize).map(|m| m.candidate as usize)
    }
}
