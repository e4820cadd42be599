//! Weighted rendezvous hashing (highest random weight).
//!
//! Each admitted backend scores the flow's affinity hash as `weight / −ln(u)`, where `u` is a
//! keyed hash of (affinity hash, backend identity) mapped into the open interval (0, 1); the
//! highest score wins. `−ln(u)` is exponentially distributed, so the winner is backend `i`
//! with probability `weight_i / Σ weight`, exactly. Removing a backend moves only the keys it
//! won, and an excluded backend's keys go to their next-highest score, which is what a retry
//! after a refusal wants.
//!
//! The logarithm is `libm::log`, a pure-Rust implementation: `f64::ln` calls the platform's
//! math library, whose last-bit results differ between platforms, and a last-bit difference
//! could flip a close comparison and make two instances disagree. Everything else is exact
//! IEEE 754 arithmetic (an integer converted exactly, a division by a power of two, one
//! division), which every platform rounds identically.

use siphasher::sip::SipHasher13;

use super::Candidate;
use super::routable::Tier;
use crate::id::BackendId;

/// 2^52: `u` takes 52 bits of the hash, so `bits + 0.5` is exact in an `f64`'s 53-bit
/// significand and `u` is never 0 or 1.
const UNIT_SCALE: f64 = (1u64 << 52) as f64;

/// The admitted candidate with the highest score for `affinity_hash`; on an exact tie, the
/// first in canonical order.
pub(super) fn pick(
    key: &SipHasher13,
    candidates: &[Candidate],
    tier: Tier,
    exclude: &[BackendId],
    affinity_hash: u64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        if !tier.admits(candidate, exclude) {
            continue;
        }
        let score = score(key, affinity_hash, candidate.identity, candidate.weight);
        if best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((index, score));
        }
    }
    best.map(|(index, _)| index)
}

/// `weight / −ln(u)`: finite and positive for every input, since `u` lies in
/// `[2^-53, 1 − 2^-53]`.
pub(super) fn score(key: &SipHasher13, affinity_hash: u64, identity: u64, weight: u32) -> f64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&affinity_hash.to_le_bytes());
    bytes[8..].copy_from_slice(&identity.to_le_bytes());
    let hash = key.hash(&bytes);
    let unit = ((hash >> 12) as f64 + 0.5) / UNIT_SCALE;
    f64::from(weight) / -libm::log(unit)
}
