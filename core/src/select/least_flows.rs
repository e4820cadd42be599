//! Load-aware choices: `least_flows`, and the comparison `power_of_two` applies to its two
//! random candidates.
//!
//! Load is live flows divided by weight. Comparing `a.flows / a.weight` with
//! `b.flows / b.weight` as `a.flows · b.weight` against `b.flows · a.weight` in 128-bit
//! integers is exact, so no rounding can make two instances disagree.

use core::cmp::Ordering;

use super::Candidate;
use super::routable::Tier;
use crate::id::BackendId;

/// Compares the load (flows per unit of weight) of two candidates with non-zero weights.
fn compare_load(a: &Candidate, b: &Candidate) -> Ordering {
    let a_scaled = u128::from(a.flows) * u128::from(b.weight);
    let b_scaled = u128::from(b.flows) * u128::from(a.weight);
    a_scaled.cmp(&b_scaled)
}

/// The admitted candidate with the least load; on a tie, the first in canonical order.
pub(super) fn pick(candidates: &[Candidate], tier: Tier, exclude: &[BackendId]) -> Option<usize> {
    let mut best: Option<(usize, &Candidate)> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        if !tier.admits(candidate, exclude) {
            continue;
        }
        if best.is_none_or(|(_, b)| compare_load(candidate, b) == Ordering::Less) {
            best = Some((index, candidate));
        }
    }
    best.map(|(index, _)| index)
}

/// Of two candidates drawn by `power_of_two`, the one with the lower load; on a tie, the
/// first drawn.
pub(super) fn lighter_of(candidates: &[Candidate], first: usize, second: usize) -> usize {
    match (candidates.get(first), candidates.get(second)) {
        (Some(a), Some(b)) if compare_load(b, a) == Ordering::Less => second,
        _ => first,
    }
}
