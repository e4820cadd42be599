//! Property tests: consistency and balance of the consistent-hash algorithms, determinism of
//! every algorithm, independence from input order, rebuild accounting, and a reference model
//! of tiers and fail-open.
//!
//! Maglev properties are stated over table entries (every key in an entry moves with it), so
//! they are exact measurements rather than samples. Figures measured with the release build
//! at M = 65,537, 40 removals per N: removing one of N equal backends changes at most 1.58/N
//! of the entries at N = 100 (the removed backend's 1/N plus up to 0.58/N moved between
//! survivors), and survivors keep on average 99.5% of their entries (99.4% at N = 100).

use proptest::prelude::*;

use super::*;

/// Identities owning each entry after `list[removed]` leaves, and before.
fn owners_around_removal(list: &mut [Candidate], removed: usize) -> (Vec<u64>, Vec<u64>) {
    let mut selector = build(Algorithm::Maglev, list);
    let before = table_owners(&selector);
    list[removed].eligible = false;
    selector.update(list);
    assert_eq!(selector.rebuilds(), 2);
    (before, table_owners(&selector))
}

/// Fractions of all entries, and of the survivors' entries, whose owner changed.
fn changed_fractions(before: &[u64], after: &[u64], gone: u64) -> (f64, f64) {
    let changed = before.iter().zip(after).filter(|(b, a)| b != a).count();
    let survivors = before.iter().filter(|&&b| b != gone).count();
    let survivors_changed = before.iter().zip(after).filter(|(b, a)| **b != gone && b != a).count();
    (changed as f64 / before.len() as f64, survivors_changed as f64 / survivors as f64)
}

/// A small cluster with random weights, pools, backup flags and states.
fn any_cluster() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec((0u32..4, 0u32..3, any::<bool>(), 0u8..4, any::<bool>()), 0..10).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (weight, pool, backup, health, enabled))| {
                let mut candidate = candidate(i as u32, weight);
                (candidate.pool, candidate.backup) = (pool, backup);
                // Eligible implies enabled, as in the health view.
                candidate.enabled = enabled || health > 0;
                candidate.eligible = health > 1;
                candidate.flows = u64::from(health) * 3;
                candidate
            })
            .collect()
    })
}

/// Reference model of tiers: the candidates a request may go to, and whether that is fail-open.
fn reference_tier(list: &[Candidate], exclude: &[BackendId], fail_open: bool) -> (Vec<u32>, bool) {
    let qualifying = |open: bool| {
        list.iter()
            .filter(|c| c.weight > 0 && !exclude.contains(&c.backend))
            .filter(|c| if open { c.enabled } else { c.eligible })
            .collect::<Vec<_>>()
    };
    for open in [false, true] {
        if open && !fail_open {
            break;
        }
        let qualifying = qualifying(open);
        let primaries: Vec<_> = qualifying.iter().filter(|c| !c.backup).collect();
        let tier = if primaries.is_empty() { qualifying.iter().collect() } else { primaries };
        if let Some(pool) = tier.iter().map(|c| c.pool).min() {
            return (tier.iter().filter(|c| c.pool == pool).map(|c| c.backend.0).collect(), open);
        }
    }
    (Vec::new(), false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn maglev_removing_one_of_n_changes_at_most_1_7_over_n_of_entries(
        n in 3usize..100,
        removed in any::<prop::sample::Index>(),
    ) {
        let mut list = candidates(&vec![1; n]);
        let removed = removed.index(n);
        let gone = list[removed].identity;
        let (before, after) = owners_around_removal(&mut list, removed);
        prop_assert!(after.iter().all(|&owner| owner != gone));
        let (changed, survivors_changed) = changed_fractions(&before, &after, gone);
        prop_assert!(changed <= 1.7 / n as f64, "{changed} of entries changed at N = {n}");
        // The survivors keep the vast majority of their entries (measured: ≤ 0.6/N moves).
        prop_assert!(survivors_changed <= 0.75 / n as f64, "survivors lost {survivors_changed} at N = {n}");
    }

    #[test]
    fn weighted_maglev_removal_changes_little_beyond_the_removed_share(
        weights in prop::collection::vec(1u32..=10, 3..60),
        removed in any::<prop::sample::Index>(),
    ) {
        let n = weights.len();
        let mut list = candidates(&weights);
        let removed = removed.index(n);
        let share = f64::from(weights[removed]) / f64::from(weights.iter().sum::<u32>());
        let gone = list[removed].identity;
        let (before, after) = owners_around_removal(&mut list, removed);
        let (changed, survivors_changed) = changed_fractions(&before, &after, gone);
        prop_assert!(changed <= share + 1.0 / n as f64, "{changed} changed; the removed share was {share}");
        prop_assert!(survivors_changed <= 1.0 / n as f64, "survivors lost {survivors_changed}");
    }

    #[test]
    fn maglev_entries_per_backend_are_within_10_percent_of_its_weight_share(
        weights in prop::collection::vec(1u32..=100, 1..60),
    ) {
        let list = candidates(&weights);
        let owners = table_owners(&build(Algorithm::Maglev, &list));
        let total_weight = f64::from(weights.iter().sum::<u32>());
        for candidate in &list {
            let entries = owners.iter().filter(|&&o| o == candidate.identity).count() as f64;
            let expected = owners.len() as f64 * f64::from(candidate.weight) / total_weight;
            prop_assert!((entries - expected).abs() <= 0.1 * expected, "{entries} entries, {expected} expected");
        }
    }

    /// The named mutant "Maglev built from unsorted backends": the selector sorts the routable
    /// set by identity before building, so listing the same backends in another order must
    /// give the same table entry for entry. Building from the input order instead (drop the
    /// sort in `RoutableSet::collect`) fails this test.
    #[test]
    fn maglev_and_hrw_ignore_the_order_candidates_are_listed_in(
        (list, shuffled) in prop::collection::vec(1u32..=5, 2..40)
            .prop_map(|weights| candidates(&weights))
            .prop_flat_map(|list| (Just(list.clone()), Just(list).prop_shuffle())),
    ) {
        for algorithm in [Algorithm::Maglev, Algorithm::Hrw] {
            let mut listed = build(algorithm, &list);
            let mut reordered = build(algorithm, &shuffled);
            prop_assert_eq!(listed.fingerprint(), reordered.fingerprint());
            if algorithm == Algorithm::Maglev {
                prop_assert_eq!(table_owners(&listed), table_owners(&reordered));
            }
            for i in 0..200 {
                let key = spread(i);
                prop_assert_eq!(pick(&mut listed, &list, key, &[]), pick(&mut reordered, &shuffled, key, &[]));
            }
        }
    }

    #[test]
    fn hrw_key_shares_follow_weights(weights in prop::collection::vec(1u32..=10, 2..16)) {
        let list = candidates(&weights);
        let mut selector = build(Algorithm::Hrw, &list);
        let keys = 20_000;
        let shares = counts(&picks(&mut selector, &list, &[], keys), weights.len());
        let total = f64::from(weights.iter().sum::<u32>());
        for (count, weight) in shares.iter().zip(&weights) {
            // Five standard deviations of a binomial: a false alarm about once in 3.5 million.
            prop_assert!(within_binomial(*count, keys, f64::from(*weight) / total, 5.0), "{:?}", shares);
        }
    }

    #[test]
    fn hrw_removal_moves_exactly_the_removed_backends_keys(
        weights in prop::collection::vec(1u32..=5, 2..30),
        removed in any::<prop::sample::Index>(),
    ) {
        let mut list = candidates(&weights);
        let removed = removed.index(weights.len()) as u32;
        let mut selector = build(Algorithm::Hrw, &list);
        let keys = 3_000;
        let before = picks(&mut selector, &list, &[], keys);
        list[removed as usize].eligible = false;
        selector.update(&list);
        let after = picks(&mut selector, &list, &[], keys);
        for (b, a) in before.iter().zip(&after) {
            if *b == Some(removed) {
                prop_assert!(a.is_some() && *a != Some(removed));
            } else {
                prop_assert_eq!(a, b, "a surviving backend's key moved");
            }
        }
        let moved = before.iter().filter(|b| **b == Some(removed)).count() as u64;
        let share = f64::from(weights[removed as usize]) / f64::from(weights.iter().sum::<u32>());
        prop_assert!(within_binomial(moved, keys, share, 5.0), "{moved} of {keys} moved, share {share}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn two_selectors_with_the_same_inputs_make_the_same_picks(
        list in any_cluster(),
        steps in prop::collection::vec((any::<u64>(), 0u16..1024, any::<bool>(), 0usize..10, 0u64..20), 1..60),
    ) {
        for algorithm in ALGORITHMS {
            let mut list = list.clone();
            let mut one = build(algorithm, &list);
            let mut two = build(algorithm, &list);
            for &(affinity_hash, exclude_mask, fail_open, touched, flows) in &steps {
                let exclude: Vec<BackendId> =
                    list.iter().filter(|c| exclude_mask & (1 << c.backend.0) != 0).map(|c| c.backend).collect();
                let request = SelectionRequest { affinity_hash, exclude: &exclude, fail_open };
                prop_assert_eq!(one.select(&list, request), two.select(&list, request), "{:?}", algorithm);
                if let Some(candidate) = list.get_mut(touched) {
                    candidate.flows = flows;
                    if flows == 0 {
                        candidate.eligible = !candidate.eligible;
                    }
                    one.update(&list);
                    two.update(&list);
                }
                prop_assert_eq!(one.fingerprint(), two.fingerprint());
                prop_assert_eq!(one.rebuilds(), two.rebuilds());
            }
        }
    }

    #[test]
    fn selections_stay_in_the_tier_a_reference_model_computes(
        list in any_cluster(),
        requests in prop::collection::vec((any::<u64>(), 0u16..1024, any::<bool>()), 1..30),
    ) {
        for algorithm in ALGORITHMS {
            let mut selector = build(algorithm, &list);
            for &(affinity_hash, exclude_mask, fail_open) in &requests {
                let exclude: Vec<BackendId> =
                    list.iter().filter(|c| exclude_mask & (1 << c.backend.0) != 0).map(|c| c.backend).collect();
                let (allowed, open) = reference_tier(&list, &exclude, fail_open);
                let selection = selector.select(&list, SelectionRequest { affinity_hash, exclude: &exclude, fail_open });
                match selection {
                    None => prop_assert!(allowed.is_empty(), "{:?} chose nothing; {:?} allowed", algorithm, allowed),
                    Some(selection) => {
                        prop_assert!(allowed.contains(&selection.backend.0), "{:?}: {:?} not in {:?}", algorithm, selection, allowed);
                        prop_assert_eq!(selection.fail_open, open);
                        prop_assert_eq!(list[selection.candidate].backend, selection.backend);
                    }
                }
            }
        }
    }

    #[test]
    fn flow_count_changes_never_rebuild(
        list in any_cluster(),
        changes in prop::collection::vec((0usize..10, any::<u64>()), 1..20),
    ) {
        for algorithm in ALGORITHMS {
            let mut list = list.clone();
            let mut selector = build(algorithm, &list);
            let (rebuilds, fingerprint) = (selector.rebuilds(), selector.fingerprint());
            for &(index, flows) in &changes {
                if let Some(candidate) = list.get_mut(index) {
                    candidate.flows = flows;
                }
                selector.update(&list);
                selector.select(&list, request(flows, &[]));
            }
            prop_assert_eq!(selector.rebuilds(), rebuilds, "{:?}", algorithm);
            prop_assert_eq!(selector.fingerprint(), fingerprint);
        }
    }
}
