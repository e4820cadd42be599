//! Backend selection: the narrow interface between admission and the algorithms.
//!
//! Admission asks a cluster's [`Selector`] for one backend, passing the flow's affinity hash
//! (for consistent-hash algorithms) and a list of backends to exclude (for a retry after a
//! refusal). The selector sees the cluster's backends through a health view: each backend's
//! `eligible` flag, which the health half of the core sets through an explicit input. Only
//! smooth weighted round robin exists so far; the other algorithms plug in behind the same
//! call.

use crate::id::BackendId;

/// What a selector knows about one backend of its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The backend.
    pub backend: BackendId,
    /// Relative share of new flows; 0 takes none.
    pub weight: u32,
    /// Whether the health view allows new flows to it.
    pub eligible: bool,
}

/// A selection request for one new flow.
#[derive(Copy, Clone, Debug)]
pub struct SelectionRequest<'a> {
    /// Keyed hash of the flow's affinity key (VIP + client address, with or without port).
    pub affinity_hash: u64,
    /// Backends that must not be chosen.
    pub exclude: &'a [BackendId],
}

/// The outcome of a selection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index into the cluster's candidate list.
    pub candidate: usize,
    /// The chosen backend.
    pub backend: BackendId,
}

/// Smooth weighted round robin (the algorithm nginx uses): each pick adds every eligible
/// backend's weight to its running score, takes the highest score (first in canonical order
/// on ties) and subtracts the total weight from the winner. Over any window of `Σ weights`
/// picks each backend is chosen exactly `weight` times, and picks are interleaved rather than
/// bunched.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    scores: Vec<i64>,
}

impl Selector {
    /// Picks a backend among `candidates` (in canonical order, by backend id) for `request`.
    /// Returns `None` when no candidate is eligible, weighted above zero and not excluded.
    pub fn select(&mut self, candidates: &[Candidate], request: SelectionRequest<'_>) -> Option<Selection> {
        if self.scores.len() != candidates.len() {
            self.scores = vec![0; candidates.len()];
        }
        let mut total_weight: i64 = 0;
        let mut best: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            if !candidate.eligible || candidate.weight == 0 || request.exclude.contains(&candidate.backend) {
                continue;
            }
            let weight = i64::from(candidate.weight);
            self.scores[index] += weight;
            total_weight += weight;
            if best.is_none_or(|b| self.scores[index] > self.scores[b]) {
                best = Some(index);
            }
        }
        let chosen = best?;
        self.scores[chosen] -= total_weight;
        Some(Selection { candidate: chosen, backend: candidates[chosen].backend })
    }

    /// Forgets accumulated scores (after the candidate set changes).
    pub fn reset(&mut self) {
        self.scores.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate { backend: BackendId(i as u32), weight, eligible: true })
            .collect()
    }

    fn picks(selector: &mut Selector, candidates: &[Candidate], exclude: &[BackendId], n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                selector
                    .select(candidates, SelectionRequest { affinity_hash: 0, exclude })
                    .map_or(u32::MAX, |s| s.backend.0)
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_by_weight() {
        let mut selector = Selector::default();
        // nginx's example: weights 5, 1, 1 give a a b a c a a.
        assert_eq!(picks(&mut selector, &candidates(&[5, 1, 1]), &[], 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn skips_ineligible_zero_weight_and_excluded_backends() {
        let mut selector = Selector::default();
        let mut list = candidates(&[1, 0, 1, 1]);
        list[3].eligible = false;
        assert_eq!(picks(&mut selector, &list, &[BackendId(2)], 3), vec![0, 0, 0]);
        assert_eq!(picks(&mut selector, &list, &[BackendId(0), BackendId(2)], 1), vec![u32::MAX]);
    }
}
