//! Selection benchmarks: a Maglev rebuild for 1,000 backends at M = 65,537 (the NSDI 2016
//! Maglev paper reports about 1.8 ms for its build), and the cost of one pick for every
//! algorithm over 100 backends. Before timing anything it counts heap allocations made by
//! 10,000 picks per algorithm and prints them: the steady path must allocate nothing.
//!
//! Run: `CARGO_BUILD_JOBS=1 cargo bench -p udplb-core --bench selection`. Results go in
//! BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use udplb_core::BackendId;
use udplb_core::config::{Algorithm, DEFAULT_MAGLEV_TABLE_SIZE};
use udplb_core::select::{Candidate, SelectionRequest, Selector, identity_hash};

/// Counts allocations, so "no allocation per pick" is measured rather than assumed.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const KEY: [u8; 32] = [0x5a; 32];

const ALGORITHMS: [(Algorithm, &str); 6] = [
    (Algorithm::RoundRobin, "round_robin"),
    (Algorithm::Random, "random"),
    (Algorithm::LeastFlows, "least_flows"),
    (Algorithm::PowerOfTwo, "power_of_two"),
    (Algorithm::Hrw, "hrw"),
    (Algorithm::Maglev, "maglev"),
];

/// `count` healthy backends, weights 1 to 4, flow counts spread so load-aware picks differ.
fn cluster(count: u32) -> Vec<Candidate> {
    (0..count)
        .map(|i| {
            let address = SocketAddr::from((Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8), 53));
            Candidate {
                backend: BackendId(i),
                identity: identity_hash(&KEY, &format!("backend-{i:04}"), address),
                weight: 1 + i % 4,
                pool: 0,
                backup: false,
                eligible: true,
                enabled: true,
                flows: u64::from(i * 7919 % 1000),
            }
        })
        .collect()
}

/// SplitMix64, standing in for the keyed affinity hashes of distinct clients.
fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn request(affinity_hash: u64) -> SelectionRequest<'static> {
    SelectionRequest { affinity_hash, exclude: &[], fail_open: true }
}

fn print_allocations_per_pick() {
    let candidates = cluster(100);
    for (algorithm, name) in ALGORITHMS {
        let mut selector = Selector::new(algorithm, DEFAULT_MAGLEV_TABLE_SIZE, &KEY, "bench");
        selector.update(&candidates);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..10_000 {
            black_box(selector.select(&candidates, request(spread(i))));
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("allocations in 10,000 picks, {name}, 100 backends: {allocations}");
    }
}

fn benches(c: &mut Criterion) {
    print_allocations_per_pick();

    // Each update flips one backend's eligibility, so each one rebuilds the whole table (and
    // its fingerprint) from 1,000 or 999 members: what a health transition costs.
    for (label, weighted) in [("equal_weights", false), ("weights_1_to_4", true)] {
        let mut candidates = cluster(1_000);
        if !weighted {
            candidates.iter_mut().for_each(|c| c.weight = 1);
        }
        let mut selector = Selector::new(Algorithm::Maglev, DEFAULT_MAGLEV_TABLE_SIZE, &KEY, "bench");
        selector.update(&candidates);
        c.bench_function(&format!("maglev_rebuild_1000_backends_m65537_{label}"), |b| {
            b.iter(|| {
                candidates[500].eligible = !candidates[500].eligible;
                selector.update(black_box(&candidates));
            })
        });
    }

    let candidates = cluster(100);
    for (algorithm, name) in ALGORITHMS {
        let mut selector = Selector::new(algorithm, DEFAULT_MAGLEV_TABLE_SIZE, &KEY, "bench");
        selector.update(&candidates);
        let mut i = 0u64;
        c.bench_function(&format!("pick_{name}_100_backends"), |b| {
            b.iter(|| {
                i += 1;
                black_box(selector.select(black_box(&candidates), request(spread(i))))
            })
        });
    }

    // A retry after a refusal: one backend excluded, so the tier is recomputed per pick.
    for (algorithm, name) in [(Algorithm::Maglev, "maglev"), (Algorithm::Random, "random")] {
        let mut selector = Selector::new(algorithm, DEFAULT_MAGLEV_TABLE_SIZE, &KEY, "bench");
        selector.update(&candidates);
        let exclude = [BackendId(42)];
        let mut i = 0u64;
        c.bench_function(&format!("pick_{name}_100_backends_one_excluded"), |b| {
            b.iter(|| {
                i += 1;
                let retry = SelectionRequest { affinity_hash: spread(i), exclude: &exclude, fail_open: true };
                black_box(selector.select(black_box(&candidates), retry))
            })
        });
    }
}

criterion_group!(selection, benches);
criterion_main!(selection);
