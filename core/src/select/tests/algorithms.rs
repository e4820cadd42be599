//! Each algorithm on small cases: weights respected, exclusions, ineligible backends skipped,
//! ties broken deterministically.

use super::*;

#[test]
fn round_robin_interleaves_by_weight() {
    let list = candidates(&[5, 1, 1]);
    let mut selector = build(Algorithm::RoundRobin, &list);
    // nginx's example: weights 5, 1, 1 give a a b a c a a.
    let expected = [0, 0, 1, 0, 2, 0, 0].map(Some);
    assert_eq!(picks(&mut selector, &list, &[], 7), expected);
    assert_eq!(picks(&mut selector, &list, &[], 7), expected, "and again, every Σ weights picks");
}

#[test]
fn round_robin_skips_ineligible_zero_weight_and_excluded_backends() {
    let mut list = candidates(&[1, 0, 1, 1]);
    list[3].eligible = false;
    let mut selector = build(Algorithm::RoundRobin, &list);
    assert_eq!(picks(&mut selector, &list, &[BackendId(2)], 3), [Some(0); 3]);
    assert_eq!(picks(&mut selector, &list, &[BackendId(0), BackendId(2)], 1), [None]);
}

#[test]
fn random_follows_weights() {
    let list = candidates(&[1, 2, 3, 4]);
    let mut selector = build(Algorithm::Random, &list);
    let trials = 40_000;
    let shares = counts(&picks(&mut selector, &list, &[], trials), 4);
    for (backend, &count) in shares.iter().enumerate() {
        let p = (backend + 1) as f64 / 10.0;
        assert!(within_binomial(count, trials, p, 5.0), "backend {backend}: {shares:?}");
    }
}

#[test]
fn random_with_exclusions_follows_the_remaining_weights() {
    let mut list = candidates(&[1, 2, 3, 4]);
    list[0].eligible = false;
    let mut selector = build(Algorithm::Random, &list);
    let trials = 30_000;
    let shares = counts(&picks(&mut selector, &list, &[BackendId(3)], trials), 4);
    assert_eq!((shares[0], shares[3]), (0, 0), "{shares:?}");
    assert!(within_binomial(shares[1], trials, 0.4, 5.0), "{shares:?}");
}

#[test]
fn least_flows_compares_flows_per_weight_exactly() {
    let mut list = candidates(&[3, 1, 2]);
    // Loads 10/3 ≈ 3.33, 3/1 = 3, 7/2 = 3.5.
    (list[0].flows, list[1].flows, list[2].flows) = (10, 3, 7);
    let mut selector = build(Algorithm::LeastFlows, &list);
    assert_eq!(pick(&mut selector, &list, 0, &[]), Some(1));
    // Flow counts are read live: no update needed.
    list[1].flows = 4;
    assert_eq!(pick(&mut selector, &list, 0, &[]), Some(0));
    assert_eq!(pick(&mut selector, &list, 0, &[BackendId(0)]), Some(2));
    // 3·2^53 + 1 flows over weight 3 is a hair above 2^53 over weight 1; as f64 both loads
    // round to 2^53 and the tie would go to the first. Integers see the difference.
    let mut list = candidates(&[3, 1]);
    (list[0].flows, list[1].flows) = (3 * (1 << 53) + 1, 1 << 53);
    let mut selector = build(Algorithm::LeastFlows, &list);
    assert_eq!(pick(&mut selector, &list, 0, &[]), Some(1));
}

#[test]
fn least_flows_ties_go_to_canonical_order_and_skip_ineligible() {
    let mut list = candidates(&[1, 2, 1, 1]);
    (list[0].flows, list[1].flows, list[2].flows, list[3].flows) = (4, 8, 4, 0);
    list[3].eligible = false;
    let mut selector = build(Algorithm::LeastFlows, &list);
    // Backends 0, 1 and 2 all carry 4 flows per unit of weight.
    assert_eq!(picks(&mut selector, &list, &[], 5), [Some(0); 5]);
    assert_eq!(pick(&mut selector, &list, 0, &[BackendId(0)]), Some(1));
}

#[test]
fn power_of_two_keeps_the_lighter_of_two_draws() {
    let mut list = candidates(&[1, 1]);
    list[0].flows = 100;
    let mut selector = build(Algorithm::PowerOfTwo, &list);
    let trials = 20_000;
    let shares = counts(&picks(&mut selector, &list, &[], trials), 2);
    // The loaded backend wins only when both draws land on it.
    assert!(within_binomial(shares[0], trials, 0.25, 5.0), "{shares:?}");
}

#[test]
fn power_of_two_ties_take_the_first_draw() {
    // With equal loads, pick k is draw 2k of the stream, which is what `random` picks on its
    // own (2k)-th call: same key, same cluster, same routable set.
    let list = candidates(&[1, 2, 3, 4, 5]);
    let mut two = build(Algorithm::PowerOfTwo, &list);
    let mut random = build(Algorithm::Random, &list);
    for _ in 0..500 {
        let first = pick(&mut random, &list, 0, &[]);
        pick(&mut random, &list, 0, &[]);
        assert_eq!(pick(&mut two, &list, 0, &[]), first);
    }
}

#[test]
fn hrw_is_sticky_and_an_exclusion_takes_the_next_highest_score() {
    let list = candidates(&[1, 2, 1, 3, 1]);
    let mut selector = build(Algorithm::Hrw, &list);
    for i in 0..300 {
        let key = spread(i);
        let first = pick(&mut selector, &list, key, &[]).unwrap();
        assert_eq!(pick(&mut selector, &list, key, &[]), Some(first), "same key, same backend");
        let second = pick(&mut selector, &list, key, &[BackendId(first)]).unwrap();
        assert_ne!(second, first);
        // The runner-up is the winner once the first backend is gone from the list entirely.
        let mut without = list.clone();
        without[first as usize].eligible = false;
        let mut fresh = build(Algorithm::Hrw, &without);
        assert_eq!(pick(&mut fresh, &without, key, &[]), Some(second));
        let third = pick(&mut selector, &list, key, &[BackendId(first), BackendId(second)]).unwrap();
        assert!(third != first && third != second);
    }
}

#[test]
fn maglev_is_sticky_and_an_exclusion_falls_through_to_the_following_entries() {
    let list = candidates(&[1, 1, 2, 1, 1]);
    let mut selector = build(Algorithm::Maglev, &list);
    let owners = table_owners(&selector);
    let size = owners.len();
    let backend_of = |identity: u64| list.iter().find(|c| c.identity == identity).unwrap().backend.0;
    for i in 0..300 {
        let key = spread(i);
        let slot = ((u128::from(key) * size as u128) >> 64) as usize;
        let first = pick(&mut selector, &list, key, &[]).unwrap();
        assert_eq!(first, backend_of(owners[slot]), "a key goes to its entry's owner");
        let retry = pick(&mut selector, &list, key, &[BackendId(first)]).unwrap();
        let following = (1..size).map(|step| backend_of(owners[(slot + step) % size]));
        assert_eq!(Some(retry), following.into_iter().find(|&b| b != first));
    }
}

#[test]
fn maglev_never_routes_to_an_ineligible_backend_and_splits_entries_by_weight() {
    let mut list = candidates(&[1, 2, 3, 4]);
    list[2].eligible = false;
    let mut selector = build(Algorithm::Maglev, &list);
    let owners = table_owners(&selector);
    let entries = |identity: u64| owners.iter().filter(|&&o| o == identity).count() as f64;
    let size = owners.len() as f64;
    assert_eq!(entries(list[2].identity), 0.0);
    for (backend, share) in [(0, 1.0 / 7.0), (1, 2.0 / 7.0), (3, 4.0 / 7.0)] {
        let ratio = entries(list[backend].identity) / (size * share);
        assert!((ratio - 1.0).abs() < 0.001, "backend {backend}: {ratio}");
    }
    assert!(picks(&mut selector, &list, &[], 500).iter().all(|b| b.is_some() && *b != Some(2)));
}

#[test]
fn maglev_retry_that_empties_the_table_tier_uses_rendezvous_over_the_next_tier() {
    let mut list = candidates(&[1, 1, 1, 1]);
    for candidate in &mut list[1..] {
        candidate.pool = 1;
    }
    let mut maglev = build(Algorithm::Maglev, &list);
    let mut hrw = build(Algorithm::Hrw, &list);
    for i in 0..200 {
        let key = spread(i);
        assert_eq!(pick(&mut maglev, &list, key, &[]), Some(0));
        let retry = pick(&mut maglev, &list, key, &[BackendId(0)]);
        assert_eq!(retry, pick(&mut hrw, &list, key, &[BackendId(0)]));
        assert!(matches!(retry, Some(1..=3)));
    }
}

#[test]
fn maglev_handles_the_widest_weight_spread_validation_allows() {
    let weights = [65_535, 1, 1, 7, 300];
    let list = candidates(&weights);
    let owners = table_owners(&build(Algorithm::Maglev, &list));
    let total = f64::from(weights.iter().sum::<u32>());
    for (candidate, weight) in list.iter().zip(weights) {
        let entries = owners.iter().filter(|&&o| o == candidate.identity).count() as f64;
        let expected = owners.len() as f64 * f64::from(weight) / total;
        // Each backend's count is its share rounded down, to within one claim, and the
        // heaviest takes up what the others' rounding left: at most one entry per backend.
        assert!(
            (entries - expected).abs() <= weights.len() as f64,
            "weight {weight}: {entries} entries, {expected} expected"
        );
    }
}
