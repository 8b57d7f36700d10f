//! Unit tests for the bucket layout, both histograms, and agreement with `hdrhistogram`.

use super::*;
use std::sync::Arc;
use std::thread;

/// Number of samples in each generated sample set.
const SAMPLES: usize = 100_000;

/// Allowed relative difference from `hdrhistogram`: one bucket of ours plus
/// hdrhistogram's own 3-significant-digit precision.
const RELATIVE_TOLERANCE: f64 = 1.0 / (1u64 << SUB_BITS) as f64 + 0.001;

/// Allowed absolute difference from `hdrhistogram`.
const ABSOLUTE_TOLERANCE: u64 = 1;

/// Quantiles compared with `hdrhistogram`: p50, p90, p99, p99.9, p100.
const QUANTILES: [(u64, u64); 5] = [(50, 100), (90, 100), (99, 100), (999, 1000), (1, 1)];

/// A small deterministic pseudo-random generator (SplitMix64).
struct SplitMix64 {
    /// Generator state.
    state: u64,
}

impl SplitMix64 {
    /// SplitMix64's state increment (the golden ratio in 64 bits).
    const INCREMENT: u64 = 0x9E37_79B9_7F4A_7C15;
    /// First output mixing multiplier.
    const MIX_FIRST: u64 = 0xBF58_476D_1CE4_E5B9;
    /// Second output mixing multiplier.
    const MIX_SECOND: u64 = 0x94D0_49BB_1331_11EB;

    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::INCREMENT);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(Self::MIX_FIRST);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(Self::MIX_SECOND);
        mixed ^ (mixed >> 31)
    }

    /// A value in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// A float in the open interval (0, 1).
    fn unit_open(&mut self) -> f64 {
        const MANTISSA_BITS: u32 = 53;
        ((self.next_u64() >> (u64::BITS - MANTISSA_BITS)) as f64 + 0.5)
            / (1u64 << MANTISSA_BITS) as f64
    }
}

/// Uniform samples in 1 ns ..= 1 ms.
fn uniform_samples(seed: u64) -> Vec<u64> {
    const LARGEST: u64 = 1_000_000;
    let mut random = SplitMix64::new(seed);
    (0..SAMPLES).map(|_| random.between(1, LARGEST)).collect()
}

/// Uniform samples that straddle the exact range (below and just above 128).
fn small_samples(seed: u64) -> Vec<u64> {
    const LARGEST: u64 = 300;
    let mut random = SplitMix64::new(seed);
    (0..SAMPLES).map(|_| random.between(0, LARGEST)).collect()
}

/// Exponentially distributed samples with a mean of 5 us.
fn exponential_samples(seed: u64) -> Vec<u64> {
    const MEAN: f64 = 5_000.0;
    let mut random = SplitMix64::new(seed);
    (0..SAMPLES)
        .map(|_| (-random.unit_open().ln() * MEAN) as u64)
        .collect()
}

/// Three in four samples near 1 us, one in four near 200 us.
fn bimodal_samples(seed: u64) -> Vec<u64> {
    const HIGH_MODE_ONE_IN: u64 = 4;
    const LOW_MODE: (u64, u64) = (900, 1_100);
    const HIGH_MODE: (u64, u64) = (180_000, 220_000);
    let mut random = SplitMix64::new(seed);
    (0..SAMPLES)
        .map(|_| {
            let (low, high) = if random.next_u64().is_multiple_of(HIGH_MODE_ONE_IN) {
                HIGH_MODE
            } else {
                LOW_MODE
            };
            random.between(low, high)
        })
        .collect()
}

/// Pareto-distributed samples (shape 1.1, from 1 us), clamped to
/// [`MAX_VALUE`].
fn heavy_tail_samples(seed: u64) -> Vec<u64> {
    const SCALE: f64 = 1_000.0;
    const ALPHA: f64 = 1.1;
    let mut random = SplitMix64::new(seed);
    (0..SAMPLES)
        .map(|_| {
            let value = SCALE / random.unit_open().powf(1.0 / ALPHA);
            (value as u64).min(MAX_VALUE)
        })
        .collect()
}

fn histogram_of(samples: &[u64]) -> Histogram {
    let mut histogram = Histogram::new();
    for &sample in samples {
        histogram.record(sample);
    }
    histogram
}

/// The exact sample at rank `ceil(len * numerator / denominator)` (at
/// least 1).
fn exact_quantile(samples: &[u64], numerator: u64, denominator: u64) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() as u64 * numerator)
        .div_ceil(denominator)
        .max(1);
    sorted[rank as usize - 1]
}

// ---- bucket layout ----

#[test]
fn bucket_count_matches_layout() {
    assert_eq!(BUCKETS, 2240);
    assert_eq!(bucket_index(MAX_VALUE), BUCKETS - 1);
    assert_eq!(bucket_high(BUCKETS - 1), MAX_VALUE);
}

#[test]
fn values_below_exact_limit_have_exact_buckets() {
    for value in 0..EXACT_LIMIT {
        let index = bucket_index(value);
        assert_eq!(index, value as usize);
        assert_eq!(bucket_low(index), value);
        assert_eq!(bucket_high(index), value);
        assert_eq!(bucket_mid(index), value);
    }
    assert_eq!(bucket_index(EXACT_LIMIT), EXACT_BUCKETS);
    assert_eq!(bucket_low(EXACT_BUCKETS), 128);
    assert_eq!(bucket_high(EXACT_BUCKETS), 129);
}

#[test]
fn buckets_are_contiguous_and_cover_every_value() {
    assert_eq!(bucket_low(0), 0);
    for index in 0..BUCKETS {
        let low = bucket_low(index);
        let high = bucket_high(index);
        assert!(low <= high, "bucket {index}: {low} > {high}");
        assert_eq!(bucket_index(low), index);
        assert_eq!(bucket_index(high), index);
        if index + 1 < BUCKETS {
            assert_eq!(
                bucket_low(index + 1),
                high + 1,
                "gap or overlap after {index}"
            );
        }
    }
    assert_eq!(bucket_high(BUCKETS - 1), MAX_VALUE);
}

#[test]
fn bucket_width_is_within_precision() {
    for index in EXACT_BUCKETS..BUCKETS {
        let low = bucket_low(index);
        let width = bucket_high(index) - low + 1;
        assert!(
            width << SUB_BITS <= low,
            "bucket {index} [{low}, +{width}) is wider than 2^-{SUB_BITS} of its low bound"
        );
    }
}

#[test]
fn bucket_index_around_powers_of_two() {
    for exponent in 1..VALUE_BITS {
        let power = 1u64 << exponent;
        for value in [power - 1, power, power + 1] {
            let index = bucket_index(value);
            assert!(bucket_low(index) <= value && value <= bucket_high(index));
        }
        assert!(bucket_index(power - 1) < bucket_index(power));
    }
}

#[test]
fn bucket_mid_is_between_bounds() {
    for index in 0..BUCKETS {
        let low = bucket_low(index);
        let high = bucket_high(index);
        let mid = bucket_mid(index);
        assert_eq!(mid, (low + high) / 2);
        assert!(low <= mid && mid <= high);
    }
}

#[test]
fn values_above_max_go_to_last_bucket() {
    assert_eq!(bucket_index(MAX_VALUE + 1), BUCKETS - 1);
    assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
}

#[test]
#[should_panic(expected = "out of range")]
fn bucket_low_panics_past_last_bucket() {
    let _ = bucket_low(BUCKETS);
}

#[test]
#[should_panic(expected = "out of range")]
fn bucket_high_panics_past_last_bucket() {
    let _ = bucket_high(usize::MAX);
}

// ---- plain histogram ----

#[test]
fn empty_histogram_reports_zeroes() {
    let histogram = Histogram::new();
    assert_eq!(histogram.count(), 0);
    assert_eq!(histogram.min(), 0);
    assert_eq!(histogram.max(), 0);
    assert_eq!(histogram.sum(), 0);
    assert_eq!(histogram.mean(), 0);
    assert_eq!(histogram.clamped(), 0);
    for (numerator, denominator) in QUANTILES {
        assert_eq!(histogram.value_at_quantile(numerator, denominator), 0);
    }
    assert_eq!(histogram.value_at_quantile(0, 1), 0);
    assert_eq!(histogram.nonzero_buckets().count(), 0);
    assert!(histogram.counts().iter().all(|&count| count == 0));
    assert_eq!(Histogram::default(), histogram);
}

#[test]
fn one_sample_is_every_quantile() {
    for value in [0, 1, 127, 128, 1_000, 123_456_789, MAX_VALUE] {
        let mut histogram = Histogram::new();
        histogram.record(value);
        assert_eq!(histogram.count(), 1);
        assert_eq!(histogram.min(), value);
        assert_eq!(histogram.max(), value);
        assert_eq!(histogram.sum(), value);
        assert_eq!(histogram.mean(), value);
        assert_eq!(histogram.value_at_quantile(0, 1), value);
        for (numerator, denominator) in QUANTILES {
            assert_eq!(histogram.value_at_quantile(numerator, denominator), value);
        }
        let buckets: Vec<_> = histogram.nonzero_buckets().collect();
        assert_eq!(buckets, vec![(bucket_index(value), 1)]);
    }
}

#[test]
fn all_equal_samples_give_that_value() {
    let mut histogram = Histogram::new();
    for _ in 0..1_000 {
        histogram.record(5_555);
    }
    for (numerator, denominator) in QUANTILES {
        assert_eq!(histogram.value_at_quantile(numerator, denominator), 5_555);
    }
    assert_eq!(histogram.value_at_quantile(0, 100), 5_555);
    assert_eq!(histogram.mean(), 5_555);
    assert_eq!(histogram.sum(), 5_555_000);
}

#[test]
fn quantiles_of_exact_values_are_exact() {
    let samples: Vec<u64> = (1..=100).collect();
    let histogram = histogram_of(&samples);
    assert_eq!(histogram.value_at_quantile(50, 100), 50);
    assert_eq!(histogram.value_at_quantile(90, 100), 90);
    assert_eq!(histogram.value_at_quantile(99, 100), 99);
    assert_eq!(histogram.value_at_quantile(1, 1), 100);
    // Rank ceil(100 / 3) = 34.
    assert_eq!(histogram.value_at_quantile(1, 3), 34);
    // Rank ceil(100 * 1 / 1000) = 1.
    assert_eq!(histogram.value_at_quantile(1, 1000), 1);
    // Rank rounds up: ceil(100 * 501 / 1000) = 51.
    assert_eq!(histogram.value_at_quantile(501, 1000), 51);
}

#[test]
fn quantile_zero_is_min_and_one_is_max() {
    let histogram = histogram_of(&[300, 1_000, 70_000, 9_999_999]);
    assert_eq!(histogram.value_at_quantile(0, 1), 300);
    assert_eq!(histogram.value_at_quantile(0, 0), 300);
    assert_eq!(histogram.value_at_quantile(1, 1), 9_999_999);
    assert_eq!(histogram.value_at_quantile(1_000, 1_000), 9_999_999);
}

#[test]
fn quantile_above_one_or_zero_denominator_is_max() {
    let histogram = histogram_of(&[10, 20, 30_000]);
    assert_eq!(histogram.value_at_quantile(3, 2), 30_000);
    assert_eq!(histogram.value_at_quantile(u64::MAX, 1), 30_000);
    assert_eq!(histogram.value_at_quantile(1, 0), 30_000);
}

#[test]
fn quantile_with_huge_operands_does_not_overflow() {
    let mut histogram = Histogram::new();
    histogram.record_n(1_000, u32::MAX);
    histogram.record_n(2_000, u32::MAX);
    let almost_half = u64::MAX / 2 - 1;
    let low_bucket_high = bucket_high(bucket_index(1_000));
    assert_eq!(
        histogram.value_at_quantile(almost_half, u64::MAX),
        low_bucket_high
    );
    assert_eq!(histogram.value_at_quantile(u64::MAX - 1, u64::MAX), 2_000);
}

#[test]
fn quantile_is_upper_bound_of_bucket_within_precision() {
    for samples in [
        uniform_samples(1),
        exponential_samples(2),
        heavy_tail_samples(3),
    ] {
        let histogram = histogram_of(&samples);
        for (numerator, denominator) in QUANTILES {
            let exact = exact_quantile(&samples, numerator, denominator);
            let estimate = histogram.value_at_quantile(numerator, denominator);
            assert!(estimate >= exact, "{estimate} < exact {exact}");
            assert!(
                (estimate - exact) << SUB_BITS <= exact,
                "{estimate} is more than 2^-{SUB_BITS} above exact {exact}"
            );
        }
    }
}

#[test]
fn clamping_records_max_value_and_counts() {
    let mut histogram = Histogram::new();
    histogram.record(MAX_VALUE);
    histogram.record(MAX_VALUE + 1);
    histogram.record(u64::MAX);
    histogram.record_n(u64::MAX, 2);
    assert_eq!(histogram.count(), 5);
    assert_eq!(histogram.clamped(), 4);
    assert_eq!(histogram.max(), MAX_VALUE);
    assert_eq!(histogram.min(), MAX_VALUE);
    assert_eq!(histogram.sum(), 5 * MAX_VALUE);
    assert_eq!(histogram.counts()[BUCKETS - 1], 5);
    assert_eq!(histogram.value_at_quantile(1, 2), MAX_VALUE);
}

#[test]
fn record_n_equals_repeated_record() {
    let mut repeated = Histogram::new();
    let mut batched = Histogram::new();
    for _ in 0..7 {
        repeated.record(4_321);
    }
    batched.record_n(4_321, 7);
    assert_eq!(repeated, batched);
}

#[test]
fn record_n_zero_changes_nothing() {
    let mut histogram = Histogram::new();
    histogram.record_n(4_321, 0);
    assert_eq!(histogram, Histogram::new());
    assert_eq!(histogram.min(), 0);
    histogram.record(10);
    histogram.record_n(1, 0);
    assert_eq!(histogram.min(), 10);
}

#[test]
fn bucket_counts_and_sum_saturate() {
    let mut histogram = Histogram::new();
    histogram.record_n(MAX_VALUE, u32::MAX);
    histogram.record_n(MAX_VALUE, u32::MAX);
    histogram.record(MAX_VALUE);
    assert_eq!(histogram.counts()[BUCKETS - 1], u32::MAX);
    assert_eq!(histogram.count(), 2 * u64::from(u32::MAX) + 1);
    assert_eq!(histogram.sum(), u64::MAX);
    // The rank lies past the saturated bucket: the answer is still max.
    assert_eq!(histogram.value_at_quantile(1, 1), MAX_VALUE);
}

#[test]
fn mean_rounds_down() {
    let histogram = histogram_of(&[1, 2]);
    assert_eq!(histogram.mean(), 1);
    let histogram = histogram_of(&[10, 20, 31]);
    assert_eq!(histogram.mean(), 20);
}

#[test]
fn merge_equals_recording_everything() {
    let first = exponential_samples(11);
    let second = bimodal_samples(12);
    let mut merged = histogram_of(&first);
    merged.merge(&histogram_of(&second));
    let mut all = first.clone();
    all.extend_from_slice(&second);
    assert_eq!(merged, histogram_of(&all));
}

#[test]
fn merge_with_clamped_samples_keeps_clamped_count() {
    let mut first = histogram_of(&[5, u64::MAX]);
    let second = histogram_of(&[MAX_VALUE + 10, 7]);
    first.merge(&second);
    assert_eq!(first.clamped(), 2);
    assert_eq!(first.count(), 4);
    assert_eq!(first.min(), 5);
    assert_eq!(first.max(), MAX_VALUE);
}

#[test]
fn merge_with_empty_is_identity() {
    let original = histogram_of(&uniform_samples(21));
    let mut merged = original.clone();
    merged.merge(&Histogram::new());
    assert_eq!(merged, original);
    let mut empty = Histogram::new();
    empty.merge(&original);
    assert_eq!(empty, original);
    let mut both_empty = Histogram::new();
    both_empty.merge(&Histogram::new());
    assert_eq!(both_empty.min(), 0);
    assert_eq!(both_empty.count(), 0);
}

#[test]
fn merge_saturates_bucket_counts() {
    let mut first = Histogram::new();
    first.record_n(3, u32::MAX);
    let second = first.clone();
    first.merge(&second);
    assert_eq!(first.counts()[3], u32::MAX);
    assert_eq!(first.count(), 2 * u64::from(u32::MAX));
}

#[test]
fn rebuild_from_buckets_and_summary_is_identical() {
    let original = histogram_of(&heavy_tail_samples(31));
    let mut rebuilt = Histogram::new();
    for (index, count) in original.nonzero_buckets() {
        rebuilt
            .add_bucket(index, count)
            .expect("index from nonzero_buckets is valid");
    }
    rebuilt.set_summary(original.min(), original.max(), original.sum());
    assert_eq!(rebuilt, original);
}

#[test]
fn add_bucket_without_summary_estimates_from_bounds() {
    let index = bucket_index(10_000);
    let mut histogram = Histogram::new();
    histogram.add_bucket(index, 3).expect("valid index");
    assert_eq!(histogram.count(), 3);
    assert_eq!(histogram.min(), bucket_low(index));
    assert_eq!(histogram.max(), bucket_high(index));
    assert_eq!(histogram.sum(), 3 * bucket_mid(index));
    assert_eq!(histogram.value_at_quantile(1, 2), bucket_high(index));
}

#[test]
fn add_bucket_rejects_bad_index_and_changes_nothing() {
    let mut histogram = histogram_of(&[1, 2, 3]);
    let before = histogram.clone();
    assert_eq!(
        histogram.add_bucket(BUCKETS, 1),
        Err(HistogramError::IndexOutOfRange { index: BUCKETS })
    );
    assert_eq!(
        histogram.add_bucket(usize::MAX, 0),
        Err(HistogramError::IndexOutOfRange { index: usize::MAX })
    );
    assert_eq!(histogram, before);
}

#[test]
fn add_bucket_zero_count_changes_nothing() {
    let mut histogram = Histogram::new();
    histogram.add_bucket(5, 0).expect("valid index");
    assert_eq!(histogram, Histogram::new());
}

#[test]
fn set_summary_with_inverted_bounds_does_not_panic() {
    let mut histogram = histogram_of(&[100, 200]);
    histogram.set_summary(500, 50, 0);
    assert_eq!(histogram.value_at_quantile(1, 2), 50);
}

#[test]
fn error_message_names_index() {
    let message = HistogramError::IndexOutOfRange { index: 9_999 }.to_string();
    assert_eq!(
        message,
        "histogram bucket index 9999 is out of range (there are 2240 buckets)"
    );
}

#[test]
fn debug_shows_summary() {
    let text = format!("{:?}", histogram_of(&[4, 6]));
    assert_eq!(
        text,
        "Histogram { count: 2, min: 4, max: 6, sum: 10, clamped: 0, nonzero_buckets: 2 }"
    );
}

#[test]
fn nonzero_buckets_are_sorted_and_complete() {
    let histogram = histogram_of(&bimodal_samples(41));
    let buckets: Vec<_> = histogram.nonzero_buckets().collect();
    assert!(buckets.windows(2).all(|pair| pair[0].0 < pair[1].0));
    assert!(buckets.iter().all(|&(_, count)| count > 0));
    let total: u64 = buckets.iter().map(|&(_, count)| u64::from(count)).sum();
    assert_eq!(total, histogram.count());
}

// ---- comparison with hdrhistogram ----

/// Asserts that `ours` and `reference` agree within the documented
/// precision.
fn assert_close(what: &str, ours: u64, reference: u64) {
    let difference = ours.abs_diff(reference);
    let smaller = ours.min(reference).max(1);
    let relative = difference as f64 / smaller as f64;
    assert!(
        difference <= ABSOLUTE_TOLERANCE || relative <= RELATIVE_TOLERANCE,
        "{what}: ours {ours}, hdrhistogram {reference} (relative difference {relative})"
    );
}

fn assert_agrees_with_hdrhistogram(name: &str, samples: &[u64]) {
    const SIGNIFICANT_DIGITS: u8 = 3;
    let ours = histogram_of(samples);
    let mut reference = hdrhistogram::Histogram::<u64>::new(SIGNIFICANT_DIGITS)
        .expect("3 significant digits is valid");
    for &sample in samples {
        reference
            .record(sample)
            .expect("auto-resizing histogram accepts any value");
    }
    assert_eq!(ours.count(), reference.len());
    // hdrhistogram reports min and max rounded to its own buckets; ours are
    // exact.
    assert_eq!(
        ours.min(),
        *samples.iter().min().expect("samples are not empty")
    );
    assert_eq!(
        ours.max(),
        *samples.iter().max().expect("samples are not empty")
    );
    assert_close(&format!("{name}: min"), ours.min(), reference.min());
    assert_close(&format!("{name}: max"), ours.max(), reference.max());
    for (numerator, denominator) in QUANTILES {
        assert_close(
            &format!("{name}: quantile {numerator}/{denominator}"),
            ours.value_at_quantile(numerator, denominator),
            reference.value_at_quantile(numerator as f64 / denominator as f64),
        );
    }
}

#[test]
fn agrees_with_hdrhistogram_uniform() {
    assert_agrees_with_hdrhistogram("uniform", &uniform_samples(101));
}

#[test]
fn agrees_with_hdrhistogram_small_values() {
    assert_agrees_with_hdrhistogram("small", &small_samples(102));
}

#[test]
fn agrees_with_hdrhistogram_exponential() {
    assert_agrees_with_hdrhistogram("exponential", &exponential_samples(103));
}

#[test]
fn agrees_with_hdrhistogram_bimodal() {
    assert_agrees_with_hdrhistogram("bimodal", &bimodal_samples(104));
}

#[test]
fn agrees_with_hdrhistogram_heavy_tail() {
    assert_agrees_with_hdrhistogram("heavy tail", &heavy_tail_samples(105));
}

#[test]
fn agrees_with_hdrhistogram_on_several_seeds() {
    for seed in 200..205 {
        assert_agrees_with_hdrhistogram("uniform", &uniform_samples(seed));
        assert_agrees_with_hdrhistogram("exponential", &exponential_samples(seed));
        assert_agrees_with_hdrhistogram("bimodal", &bimodal_samples(seed));
        assert_agrees_with_hdrhistogram("heavy tail", &heavy_tail_samples(seed));
    }
}

// ---- atomic histogram ----

#[test]
fn atomic_histogram_matches_plain_histogram() {
    let samples = heavy_tail_samples(51);
    let atomic = AtomicHistogram::new();
    for &sample in &samples {
        atomic.record(sample);
    }
    assert_eq!(atomic.count(), SAMPLES as u64);
    assert_eq!(atomic.snapshot(), histogram_of(&samples));
}

#[test]
fn atomic_histogram_from_many_threads() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 20_000;
    let atomic = Arc::new(AtomicHistogram::new());
    let handles: Vec<_> = (0..THREADS)
        .map(|thread_number| {
            let atomic = Arc::clone(&atomic);
            thread::spawn(move || {
                for step in 0..PER_THREAD {
                    atomic.record(thread_number * PER_THREAD + step);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("recording thread panicked");
    }
    let all: Vec<u64> = (0..THREADS * PER_THREAD).collect();
    assert_eq!(atomic.count(), THREADS * PER_THREAD);
    assert_eq!(atomic.snapshot(), histogram_of(&all));
}

#[test]
fn atomic_histogram_clamps() {
    let atomic = AtomicHistogram::new();
    atomic.record(u64::MAX);
    atomic.record(3);
    let snapshot = atomic.snapshot();
    assert_eq!(snapshot.clamped(), 1);
    assert_eq!(snapshot.max(), MAX_VALUE);
    assert_eq!(snapshot.min(), 3);
    assert_eq!(snapshot.sum(), MAX_VALUE + 3);
}

#[test]
fn atomic_histogram_sum_saturates() {
    let atomic = AtomicHistogram::new();
    let samples_to_overflow = u64::MAX / MAX_VALUE + 1;
    for _ in 0..samples_to_overflow {
        atomic.record(MAX_VALUE);
    }
    assert_eq!(atomic.snapshot().sum(), u64::MAX);
}

#[test]
fn atomic_histogram_reset_empties() {
    let atomic = AtomicHistogram::default();
    for value in [1, 500, u64::MAX] {
        atomic.record(value);
    }
    atomic.reset();
    assert_eq!(atomic.count(), 0);
    assert_eq!(atomic.snapshot(), Histogram::new());
    atomic.record(42);
    let snapshot = atomic.snapshot();
    assert_eq!(snapshot.min(), 42);
    assert_eq!(snapshot.max(), 42);
    assert_eq!(snapshot.clamped(), 0);
}

#[test]
fn snapshot_into_overwrites_previous_contents() {
    let atomic = AtomicHistogram::new();
    atomic.record(77);
    let mut out = histogram_of(&[1, 2, 3, u64::MAX]);
    atomic.snapshot_into(&mut out);
    assert_eq!(out, histogram_of(&[77]));
    let empty = AtomicHistogram::new();
    empty.snapshot_into(&mut out);
    assert_eq!(out, Histogram::new());
}

#[test]
fn atomic_histogram_works_in_a_static() {
    static SHARED: AtomicHistogram = AtomicHistogram::new();
    SHARED.record(9);
    assert!(SHARED.count() >= 1);
    assert_eq!(SHARED.snapshot().counts()[9], 1);
}
