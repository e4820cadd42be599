//! Unit tests of the selector: each algorithm on small cases, tiers, fail-open, exclusions,
//! rebuild accounting and fingerprints. `properties.rs` holds the property tests.

use std::net::{Ipv4Addr, SocketAddr};

use super::*;

mod algorithms;
mod properties;

/// A fixed selection key, so pinned values stay pinned.
const KEY: [u8; 32] = *b"udplb selection key for tests...";

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RoundRobin,
    Algorithm::Random,
    Algorithm::LeastFlows,
    Algorithm::PowerOfTwo,
    Algorithm::Hrw,
    Algorithm::Maglev,
];

/// Backend `index`, named `backend-NNNN` at 10.0.x.y:53, weight `weight`, pool 0, healthy.
fn candidate(index: u32, weight: u32) -> Candidate {
    let address = SocketAddr::from((Ipv4Addr::new(10, 0, (index >> 8) as u8, index as u8), 53));
    Candidate {
        backend: BackendId(index),
        identity: identity_hash(&KEY, &format!("backend-{index:04}"), address),
        weight,
        pool: 0,
        backup: false,
        eligible: true,
        enabled: true,
        flows: 0,
    }
}

fn candidates(weights: &[u32]) -> Vec<Candidate> {
    weights.iter().enumerate().map(|(i, &w)| candidate(i as u32, w)).collect()
}

/// A selector for cluster "test", updated with `list`.
fn build(algorithm: Algorithm, list: &[Candidate]) -> Selector {
    let mut selector = Selector::new(algorithm, DEFAULT_TABLE_SIZE, &KEY, "test");
    selector.update(list);
    selector
}

const DEFAULT_TABLE_SIZE: u32 = crate::config::DEFAULT_MAGLEV_TABLE_SIZE;

fn request(affinity_hash: u64, exclude: &[BackendId]) -> SelectionRequest<'_> {
    SelectionRequest { affinity_hash, exclude, fail_open: false }
}

/// The backend chosen for `affinity_hash`, excluding `exclude`.
fn pick(
    selector: &mut Selector,
    list: &[Candidate],
    affinity_hash: u64,
    exclude: &[BackendId],
) -> Option<u32> {
    selector.select(list, request(affinity_hash, exclude)).map(|s| s.backend.0)
}

/// `n` picks for spread-out affinity hashes.
fn picks(selector: &mut Selector, list: &[Candidate], exclude: &[BackendId], n: u64) -> Vec<Option<u32>> {
    (0..n).map(|i| pick(selector, list, spread(i), exclude)).collect()
}

/// Spreads consecutive integers over 64 bits (SplitMix64's finaliser), standing in for the
/// keyed affinity hashes of distinct clients.
fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many of `picks` went to each of `n` backends.
fn counts(picks: &[Option<u32>], n: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n];
    for backend in picks.iter().flatten() {
        counts[*backend as usize] += 1;
    }
    counts
}

/// Whether `observed` out of `trials` is within `sigmas` standard deviations of a binomial
/// with success probability `p` (plus one, for tiny expectations).
fn within_binomial(observed: u64, trials: u64, p: f64, sigmas: f64) -> bool {
    let expected = trials as f64 * p;
    let deviation = (trials as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - expected).abs() <= sigmas * deviation + 1.0
}

/// The identity owning each entry of a Maglev selector's table.
fn table_owners(selector: &Selector) -> Vec<u64> {
    selector.maglev.entries().iter().map(|&m| selector.routable.members[m as usize].identity).collect()
}

#[test]
fn identity_hash_is_pinned_canonical_and_covers_id_and_address() {
    let address: SocketAddr = "192.0.2.10:53".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:192.0.2.10]:53".parse().unwrap();
    let hash = identity_hash(&KEY, "dns-1", address);
    // Pinned: if this changes, tables built by two versions of udplb would disagree.
    assert_eq!(hash, PINNED_IDENTITY, "got {hash:#x}");
    assert_eq!(identity_hash(&KEY, "dns-1", mapped), hash);
    assert_ne!(identity_hash(&KEY, "dns-2", address), hash);
    assert_ne!(identity_hash(&KEY, "dns-1", "192.0.2.10:54".parse().unwrap()), hash);
    assert_ne!(identity_hash(&KEY, "dns-1", "192.0.2.11:53".parse().unwrap()), hash);
    let mut other_key = KEY;
    other_key[20] ^= 1;
    assert_ne!(identity_hash(&other_key, "dns-1", address), hash);
}

const PINNED_IDENTITY: u64 = 0x87c1_7ccb_a671_f7f4;

#[test]
fn tiers_prefer_the_lowest_primary_pool_for_every_algorithm() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 1, 1, 1]);
        list[0].pool = 2;
        list[1].pool = 1;
        list[2].pool = 1;
        list[3].pool = 0;
        list[3].backup = true;
        let mut selector = build(algorithm, &list);
        // Pool 1 is the lowest primary pool; the pool-0 backup waits.
        let chosen = picks(&mut selector, &list, &[], 200);
        assert!(chosen.iter().all(|b| matches!(b, Some(1 | 2))), "{algorithm:?}: {chosen:?}");
        // Least flows sees no flows here, so its ties all go to the first backend.
        if algorithm != Algorithm::LeastFlows {
            assert!(chosen.contains(&Some(1)) && chosen.contains(&Some(2)), "{algorithm:?} uses the tier");
        }
        // Pool 1 down: pool 2.
        list[1].eligible = false;
        list[2].eligible = false;
        selector.update(&list);
        assert!(picks(&mut selector, &list, &[], 50).iter().all(|b| *b == Some(0)), "{algorithm:?}");
        // Every primary down: the backup.
        list[0].eligible = false;
        selector.update(&list);
        assert!(picks(&mut selector, &list, &[], 50).iter().all(|b| *b == Some(3)), "{algorithm:?}");
    }
}

#[test]
fn backups_take_flows_only_when_no_primary_qualifies() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 1, 1, 0]);
        list[0].backup = true;
        list[1].backup = true;
        list[1].pool = 1;
        list[2].pool = 9;
        // A zero-weight primary does not qualify, so it does not hold the backups back.
        list[3].pool = 0;
        let mut selector = build(algorithm, &list);
        assert!(picks(&mut selector, &list, &[], 50).iter().all(|b| *b == Some(2)), "{algorithm:?}");
        // Excluding the only primary moves the request to the backups' lowest pool.
        let retry = picks(&mut selector, &list, &[BackendId(2)], 50);
        assert!(retry.iter().all(|b| *b == Some(0)), "{algorithm:?}: {retry:?}");
        list[2].eligible = false;
        selector.update(&list);
        assert!(picks(&mut selector, &list, &[], 50).iter().all(|b| *b == Some(0)), "{algorithm:?}");
        let retry = picks(&mut selector, &list, &[BackendId(0)], 50);
        assert!(retry.iter().all(|b| *b == Some(1)), "{algorithm:?}: {retry:?}");
        assert_eq!(pick(&mut selector, &list, 7, &[BackendId(0), BackendId(1)]), None, "{algorithm:?}");
    }
}

#[test]
fn fail_open_routes_over_enabled_backends_and_says_so() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 1, 1, 1]);
        for candidate in &mut list {
            candidate.eligible = false;
        }
        list[0].enabled = false;
        list[3].enabled = false;
        list[3].pool = 0;
        let mut selector = build(algorithm, &list);
        assert_eq!(pick(&mut selector, &list, 1, &[]), None, "{algorithm:?}: fail-open off");
        let mut seen = [false; 4];
        for i in 0..100 {
            let open = SelectionRequest { affinity_hash: spread(i), exclude: &[], fail_open: true };
            let selection = selector.select(&list, open).expect("enabled backends remain");
            assert!(selection.fail_open, "{algorithm:?}");
            assert_eq!(list[selection.candidate].backend, selection.backend);
            seen[selection.backend.0 as usize] = true;
        }
        let expected = if algorithm == Algorithm::LeastFlows {
            [false, true, false, false]
        } else {
            [false, true, true, false]
        };
        assert_eq!(seen, expected, "{algorithm:?}: enabled backends only");
        // Excluding both enabled backends leaves nothing, even in fail-open.
        let exclude = [BackendId(1), BackendId(2)];
        let open = SelectionRequest { affinity_hash: 5, exclude: &exclude, fail_open: true };
        assert_eq!(selector.select(&list, open), None, "{algorithm:?}");
        // One backend healthy again: normal selection, not fail-open.
        list[2].eligible = true;
        selector.update(&list);
        let open = SelectionRequest { affinity_hash: 5, exclude: &[], fail_open: true };
        let selection = selector.select(&list, open).unwrap();
        assert_eq!((selection.backend, selection.fail_open), (BackendId(2), false), "{algorithm:?}");
    }
}

#[test]
fn nothing_enabled_or_nothing_weighted_selects_nothing() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 1]);
        for candidate in &mut list {
            candidate.eligible = false;
            candidate.enabled = false;
        }
        let mut selector = build(algorithm, &list);
        let open = SelectionRequest { affinity_hash: 1, exclude: &[], fail_open: true };
        assert_eq!(selector.select(&list, open), None, "{algorithm:?}");
        let zero = candidates(&[0, 0]);
        let mut selector = build(algorithm, &zero);
        assert_eq!(selector.select(&zero, open), None, "{algorithm:?}");
        let mut selector = build(algorithm, &[]);
        assert_eq!(selector.select(&[], open), None, "{algorithm:?}");
    }
}

#[test]
fn update_rebuilds_only_when_the_routable_set_changes() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 2, 3]);
        list[2].backup = true;
        let mut selector = build(algorithm, &list);
        assert_eq!(selector.rebuilds(), 1, "{algorithm:?}: the first update builds");
        let fingerprint = selector.fingerprint();
        selector.update(&list);
        list[0].flows = 1_000;
        list[1].flows = 7;
        selector.update(&list);
        // The backup is outside the routable tier while primaries are up.
        list[2].eligible = false;
        selector.update(&list);
        assert_eq!(selector.rebuilds(), 1, "{algorithm:?}: nothing routable changed");
        assert_eq!(selector.fingerprint(), fingerprint, "{algorithm:?}");
        list[1].weight = 5;
        selector.update(&list);
        assert_eq!(selector.rebuilds(), 2, "{algorithm:?}: a weight changed");
        list[0].eligible = false;
        selector.update(&list);
        assert_eq!(selector.rebuilds(), 3, "{algorithm:?}: a member left");
        assert_ne!(selector.fingerprint(), fingerprint, "{algorithm:?}");
        // A disabled, ineligible backend joins at the front: indices shift, the set does not.
        let before: Vec<_> = picks(&mut selector.clone(), &list, &[], 20);
        let mut newcomer = candidate(99, 1);
        newcomer.eligible = false;
        newcomer.enabled = false;
        list.insert(0, newcomer);
        selector.update(&list);
        assert_eq!(selector.rebuilds(), 3, "{algorithm:?}: only indices moved");
        if matches!(algorithm, Algorithm::Hrw | Algorithm::Maglev | Algorithm::LeastFlows) {
            assert_eq!(picks(&mut selector, &list, &[], 20), before, "{algorithm:?}: same backends");
        }
    }
}

#[test]
fn a_stale_candidate_list_never_yields_an_ineligible_backend() {
    for algorithm in ALGORITHMS {
        let mut list = candidates(&[1, 1, 1, 1]);
        let mut selector = build(algorithm, &list);
        // The caller marks a backend down and forgets to call `update`.
        list[1].eligible = false;
        let chosen = picks(&mut selector, &list, &[], 300);
        assert!(chosen.iter().all(|b| b.is_some() && *b != Some(1)), "{algorithm:?}");
        // A shorter list without an update: nothing prebuilt is trusted.
        let shorter = &list[2..];
        let chosen = picks(&mut selector, shorter, &[], 100);
        assert!(chosen.iter().all(|b| matches!(b, Some(2 | 3))), "{algorithm:?}: {chosen:?}");
    }
}

#[test]
fn fingerprints_agree_across_instances_and_differ_across_clusters_and_keys() {
    let list = candidates(&[1, 2, 3, 4, 5]);
    for algorithm in ALGORITHMS {
        let a = build(algorithm, &list);
        let b = build(algorithm, &list);
        assert_eq!(a.fingerprint(), b.fingerprint(), "{algorithm:?}");
        assert_eq!(a.algorithm(), algorithm);
    }
    let mut maglev = Selector::new(Algorithm::Maglev, DEFAULT_TABLE_SIZE, &KEY, "other-cluster");
    maglev.update(&list);
    assert_ne!(maglev.fingerprint(), build(Algorithm::Maglev, &list).fingerprint());
    let mut other_key = KEY;
    other_key[0] ^= 1;
    let mut maglev = Selector::new(Algorithm::Maglev, DEFAULT_TABLE_SIZE, &other_key, "test");
    maglev.update(&list);
    assert_ne!(maglev.fingerprint(), build(Algorithm::Maglev, &list).fingerprint());
}

#[test]
fn maglev_table_size_is_raised_to_a_prime() {
    for (requested, used) in [(65_537, 65_537), (65_536, 65_537), (1_000, 1_009), (0, 2), (251, 251)] {
        let selector = Selector::new(Algorithm::Maglev, requested, &KEY, "test");
        assert_eq!(selector.maglev.size(), used, "requested {requested}");
    }
}

#[test]
fn debug_output_is_short_and_shows_no_key_material() {
    let selector = build(Algorithm::Maglev, &candidates(&[1, 1]));
    let text = format!("{selector:?}");
    assert!(text.len() < 300, "{text}");
    assert!(text.contains("Maglev") && text.contains("rebuilds: 1"), "{text}");
}
