//! A log-bucket latency histogram: constant relative precision (32 sub-buckets per power of
//! two, so a reported percentile is at most 1/32 ≈ 3.1 % above the true value), fixed size,
//! no allocation per sample. The same idea as HdrHistogram, reduced to what the benchmark needs.

/// Sub-buckets per power of two, as a power of two.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Enough buckets for any `u64` value.
const BUCKETS: usize = ((64 - SUB_BUCKET_BITS + 1) as usize) * SUB_BUCKETS as usize;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    pub fn record(&mut self, value: u64) {
        self.counts[bucket_index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0 < q ≤ 1): the highest value of the bucket that holds the
    /// ⌈q·n⌉-th smallest sample, capped at the largest sample seen. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_highest(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

fn bucket_index(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros();
    let shift = magnitude - SUB_BUCKET_BITS;
    let sub = (value >> shift) & (SUB_BUCKETS - 1);
    ((shift as u64 + 1) * SUB_BUCKETS + sub) as usize
}

/// The lowest value that falls into bucket `index`.
fn bucket_lowest(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    (SUB_BUCKETS + index % SUB_BUCKETS) << shift
}

fn bucket_highest(index: usize) -> u64 {
    if index + 1 >= BUCKETS { u64::MAX } else { bucket_lowest(index + 1) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut histogram = Histogram::new();
        for value in 0..32 {
            histogram.record(value);
        }
        assert_eq!(histogram.quantile(0.5), Some(15));
        assert_eq!(histogram.quantile(1.0), Some(31));
    }

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        for index in 0..BUCKETS - 1 {
            assert_eq!(bucket_highest(index) + 1, bucket_lowest(index + 1));
            assert_eq!(bucket_index(bucket_lowest(index)), index);
            assert_eq!(bucket_index(bucket_highest(index)), index);
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_uniform_samples_are_within_precision() {
        let mut histogram = Histogram::new();
        for value in 1..=100_000u64 {
            histogram.record(value * 1000);
        }
        for (q, exact) in [(0.5, 50_000_000.0), (0.99, 99_000_000.0), (0.999, 99_900_000.0)] {
            let reported = histogram.quantile(q).unwrap() as f64;
            assert!(reported >= exact, "q {q}: {reported} below {exact}");
            assert!(reported <= exact * (1.0 + 1.0 / 32.0), "q {q}: {reported} too far above {exact}");
        }
    }

    #[test]
    fn quantile_never_exceeds_the_largest_sample_and_empty_has_none() {
        let mut histogram = Histogram::new();
        assert_eq!(histogram.quantile(0.5), None);
        histogram.record(1000);
        assert_eq!(histogram.quantile(0.999), Some(1000));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(20);
        b.record(30);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(1.0), Some(30));
    }
}
