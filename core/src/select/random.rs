//! Weighted random draws from the selector's ChaCha8 stream (`random`, and the two
//! candidates of `power_of_two`).
//!
//! A draw maps one value of the stream onto `[0, total weight)` without modulo bias, then
//! finds the backend whose slice of the running weights holds it. Two instances with the same
//! stream position and the same routable set therefore pick the same backend.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use super::Candidate;
use super::routable::{Member, Tier};
use crate::id::BackendId;

/// Most values drawn for one bounded number. Each draw is rejected with probability below
/// `bound / 2^64`, which is at most 2^-16 for the weights validation allows, so reaching this
/// limit is practically impossible; if it happens the last value is used, slightly biased,
/// rather than looping without bound.
const MAX_DRAWS: u32 = 64;

/// A uniform value in `[0, bound)`, by Lemire's multiply-and-reject method: the high half of
/// `x · bound` is uniform once the low half is outside the short biased range.
pub(super) fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0, "no value lies below zero");
    let mut product = u128::from(rng.next_u64()) * u128::from(bound);
    for _ in 1..MAX_DRAWS {
        let low = product as u64;
        // `2^64 mod bound` values of the low half are over-represented; the modulo is only
        // computed in the rare case that the low half could be one of them.
        if low >= bound || low >= bound.wrapping_neg() % bound {
            break;
        }
        product = u128::from(rng.next_u64()) * u128::from(bound);
    }
    (product >> 64) as u64
}

/// Fills `cumulative` with the running weights of `members`.
pub(super) fn cumulate(members: &[Member], cumulative: &mut Vec<u64>) {
    cumulative.clear();
    let mut total = 0u64;
    for member in members {
        total += u64::from(member.weight);
        cumulative.push(total);
    }
}

/// One weighted draw over the prebuilt running weights: the index of a member, or `None`
/// when the set is empty. O(log n).
pub(super) fn draw_member(rng: &mut ChaCha8Rng, cumulative: &[u64]) -> Option<u32> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let point = below(rng, total);
    let member = cumulative.partition_point(|&running| running <= point);
    u32::try_from(member).ok()
}

/// One weighted draw over the candidates `tier` admits, in the caller's order: two linear
/// passes and no allocation. Used when exclusions or a stale set rule out the prebuilt
/// weights.
pub(super) fn draw_candidate(
    rng: &mut ChaCha8Rng,
    candidates: &[Candidate],
    tier: Tier,
    exclude: &[BackendId],
) -> Option<usize> {
    let admitted = || candidates.iter().enumerate().filter(|(_, c)| tier.admits(c, exclude));
    let total: u64 = admitted().map(|(_, c)| u64::from(c.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = below(rng, total);
    for (index, candidate) in admitted() {
        let weight = u64::from(candidate.weight);
        if point < weight {
            return Some(index);
        }
        point -= weight;
    }
    None
}
