//! Smooth weighted round robin, the algorithm nginx uses.
//!
//! Each pick adds every admitted backend's weight to its running score, takes the highest
//! score (the first in canonical order on ties) and subtracts the total weight from the
//! winner. Over any window of `Σ weights` picks each backend is chosen exactly `weight` times,
//! and picks are interleaved rather than bunched.

use super::Candidate;
use super::routable::Tier;
use crate::id::BackendId;

/// Running scores, indexed like the candidate list.
#[derive(Clone, Debug, Default)]
pub(super) struct RoundRobin {
    scores: Vec<i64>,
}

impl RoundRobin {
    /// The running scores (snapshots).
    pub(super) fn scores(&self) -> &[i64] {
        &self.scores
    }

    /// Restores [`RoundRobin::scores`] (snapshots).
    pub(super) fn set_scores(&mut self, scores: Vec<i64>) {
        self.scores = scores;
    }

    /// Forgets the running scores and sizes them for `candidates` backends.
    pub(super) fn reset(&mut self, candidates: usize) {
        self.scores.clear();
        self.scores.resize(candidates, 0);
    }

    /// The next pick among the candidates `tier` admits.
    pub(super) fn pick(
        &mut self,
        candidates: &[Candidate],
        tier: Tier,
        exclude: &[BackendId],
    ) -> Option<usize> {
        if self.scores.len() != candidates.len() {
            // The list changed length without an update; the old indices mean nothing now.
            self.reset(candidates.len());
        }
        let mut total_weight: i64 = 0;
        let mut best: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            if !tier.admits(candidate, exclude) {
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
        Some(chosen)
    }
}
