//! Fixed-memory, mergeable, log-linear latency histograms that never allocate.
//!
//! # Layout
//!
//! Values are unsigned integers (the kernel records nanoseconds). With
//! [`SUB_BITS`] = *S* = 6:
//!
//! * every value below 2^(S+1) = 128 has its own bucket (exact), and
//! * each power-of-two range [2^k, 2^(k+1)) above that is cut into 2^S = 64
//!   equal buckets of width 2^(k−S).
//!
//! Values above [`MAX_VALUE`] (2^40 − 1, about 18 minutes in nanoseconds)
//! are recorded as [`MAX_VALUE`] and counted in [`Histogram::clamped`].
//! [`BUCKETS`] (2240) buckets of `u32` cover `0..=MAX_VALUE`: a histogram is
//! about 9 KiB, the same for every workload, and recording is a few integer
//! instructions with no allocation and no floating point.
//!
//! # Precision
//!
//! A bucket whose lowest value is `low` is at most `low / 2^S` wide
//! (1.5625 % for S = 6), and the buckets below 128 are exact. So:
//!
//! * [`Histogram::value_at_quantile`] returns the highest value of the bucket
//!   that holds the sample of the requested rank, clamped to
//!   `[min, max]`. It is never below the exact sample of that rank `v` and
//!   exceeds it by less than `v / 2^S` (it is exact for values below 128,
//!   for the minimum and for the maximum).
//! * [`bucket_mid`] is within half a bucket (0.78 %) of every value in the
//!   bucket.
//! * [`Histogram::min`], [`Histogram::max`] and [`Histogram::count`] are
//!   exact; [`Histogram::sum`] and [`Histogram::mean`] are exact until the
//!   sum saturates at `u64::MAX`.
//!
//! The unit tests check these bounds against the `hdrhistogram` crate.
//!
//! # Merging and rebuilding
//!
//! Histograms merge by adding bucket counts ([`Histogram::merge`]); merging
//! gives exactly the histogram of all the samples. A host rebuilds a
//! histogram sent as `(index, count)` pairs with [`Histogram::add_bucket`]
//! and [`Histogram::set_summary`].
//!
//! [`AtomicHistogram`] records from any context (interrupt handlers, many
//! CPUs at once) without locks; [`AtomicHistogram::snapshot_into`] copies it
//! into a plain [`Histogram`] for reporting.
//!
//! ```
//! use spindle_histogram::{AtomicHistogram, Histogram};
//!
//! static LATENCY: AtomicHistogram = AtomicHistogram::new();
//! for nanoseconds in [90, 1_000, 1_020, 250_000] {
//!     LATENCY.record(nanoseconds);
//! }
//! let mut snapshot = Histogram::new();
//! LATENCY.snapshot_into(&mut snapshot);
//! assert_eq!(snapshot.count(), 4);
//! assert_eq!(snapshot.value_at_quantile(0, 1), 90); // exact minimum
//! assert_eq!(snapshot.value_at_quantile(1, 2), 1_007); // p50: top of the bucket 1000..=1007
//! assert_eq!(snapshot.value_at_quantile(1, 1), 250_000); // exact maximum
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Sub-bucket bits: values below 2^(`SUB_BITS`+1) get exact buckets; above,
/// each range [2^k, 2^(k+1)) is cut into 2^`SUB_BITS` equal buckets.
pub const SUB_BITS: u32 = 6;

/// Number of bits of the largest value a histogram holds exactly in range.
pub const VALUE_BITS: u32 = 40;

/// The largest value a histogram records; larger values are clamped to it
/// and counted in [`Histogram::clamped`].
pub const MAX_VALUE: u64 = (1 << VALUE_BITS) - 1;

/// Values below this limit have one bucket each (2^(`SUB_BITS`+1)).
const EXACT_LIMIT: u64 = 1 << (SUB_BITS + 1);

/// Number of exact buckets (one per value below [`EXACT_LIMIT`]).
const EXACT_BUCKETS: usize = EXACT_LIMIT as usize;

/// Buckets per power-of-two range above the exact range.
const SUB_BUCKETS: usize = 1 << SUB_BITS;

/// Exponent of the first power-of-two range that is split into sub-buckets.
const FIRST_RANGE_EXPONENT: u32 = SUB_BITS + 1;

/// Number of power-of-two ranges split into sub-buckets.
const RANGES: usize = (VALUE_BITS - FIRST_RANGE_EXPONENT) as usize;

/// Number of buckets needed to cover `0..=MAX_VALUE` (2240 for the current
/// constants).
pub const BUCKETS: usize = EXACT_BUCKETS + RANGES * SUB_BUCKETS;

/// The stored minimum of an empty histogram (any sample is below it).
const EMPTY_MIN: u64 = u64::MAX;

/// Clamps `value` to [`MAX_VALUE`]; the flag says whether it was clamped.
const fn clamp_value(value: u64) -> (u64, bool) {
    if value > MAX_VALUE {
        (MAX_VALUE, true)
    } else {
        (value, false)
    }
}

/// The bucket that holds `value`; values above [`MAX_VALUE`] go to the last
/// bucket.
pub const fn bucket_index(value: u64) -> usize {
    let (value, _) = clamp_value(value);
    if value < EXACT_LIMIT {
        return value as usize;
    }
    let exponent = u64::BITS - 1 - value.leading_zeros();
    let width_bits = exponent - SUB_BITS;
    let sub_bucket = (value >> width_bits) as usize - SUB_BUCKETS;
    EXACT_BUCKETS + (exponent - FIRST_RANGE_EXPONENT) as usize * SUB_BUCKETS + sub_bucket
}

/// Number of low bits that vary inside bucket `index` (its width is
/// 2^result).
const fn bucket_width_bits(index: usize) -> u32 {
    if index < EXACT_BUCKETS {
        0
    } else {
        ((index - EXACT_BUCKETS) / SUB_BUCKETS) as u32 + FIRST_RANGE_EXPONENT - SUB_BITS
    }
}

/// Panics unless `index` names a bucket.
const fn check_index(index: usize) {
    assert!(index < BUCKETS, "histogram bucket index out of range");
}

/// The smallest value in bucket `index`.
///
/// # Panics
///
/// If `index >= BUCKETS`.
pub const fn bucket_low(index: usize) -> u64 {
    check_index(index);
    if index < EXACT_BUCKETS {
        return index as u64;
    }
    let sub_bucket = (index - EXACT_BUCKETS) % SUB_BUCKETS;
    ((SUB_BUCKETS + sub_bucket) as u64) << bucket_width_bits(index)
}

/// The largest value in bucket `index` (inclusive).
///
/// # Panics
///
/// If `index >= BUCKETS`.
pub const fn bucket_high(index: usize) -> u64 {
    bucket_low(index) + ((1 << bucket_width_bits(index)) - 1)
}

/// The middle of bucket `index`: `(bucket_low + bucket_high) / 2`, rounded
/// down.
///
/// # Panics
///
/// If `index >= BUCKETS`.
pub const fn bucket_mid(index: usize) -> u64 {
    let low = bucket_low(index);
    low + (bucket_high(index) - low) / 2
}

/// Why a histogram refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramError {
    /// A bucket index is not below [`BUCKETS`].
    IndexOutOfRange {
        /// The index that was given.
        index: usize,
    },
}

impl fmt::Display for HistogramError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index } => write!(
                formatter,
                "histogram bucket index {index} is out of range (there are {BUCKETS} buckets)"
            ),
        }
    }
}

impl core::error::Error for HistogramError {}

/// A plain (single-owner) log-linear histogram; see the crate docs.
///
/// Bucket counts saturate at `u32::MAX` and the sum at `u64::MAX`.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket.
    counts: [u32; BUCKETS],
    /// Number of samples.
    count: u64,
    /// Smallest sample, [`EMPTY_MIN`] when empty.
    min: u64,
    /// Largest sample, 0 when empty.
    max: u64,
    /// Sum of all samples, saturating.
    sum: u64,
    /// Samples that were above [`MAX_VALUE`].
    clamped: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            counts: [0; BUCKETS],
            count: 0,
            min: EMPTY_MIN,
            max: 0,
            sum: 0,
            clamped: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` samples of the same value (nothing when `n` is 0).
    pub fn record_n(&mut self, value: u64, n: u32) {
        if n == 0 {
            return;
        }
        let (value, was_clamped) = clamp_value(value);
        let bucket = &mut self.counts[bucket_index(value)];
        *bucket = bucket.saturating_add(n);
        let samples = u64::from(n);
        self.count = self.count.saturating_add(samples);
        self.sum = self.sum.saturating_add(value.saturating_mul(samples));
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if was_clamped {
            self.clamped = self.clamped.saturating_add(samples);
        }
    }

    /// Adds every sample of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.clamped = self.clamped.saturating_add(other.clamped);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample (after clamping); 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest sample (after clamping); 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Sum of all samples (after clamping), saturating at `u64::MAX`.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Number of samples that were above [`MAX_VALUE`] and recorded as
    /// [`MAX_VALUE`].
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Mean of the samples, rounded down; 0 when empty.
    pub fn mean(&self) -> u64 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }

    /// The value at quantile `numerator / denominator`, with integer
    /// arithmetic only.
    ///
    /// The rank is `ceil(count * numerator / denominator)`, at least 1 (the
    /// rank rule of `hdrhistogram`'s `value_at_quantile`); the result is the
    /// highest value of the bucket that holds that rank, clamped to
    /// `[min, max]`. Special cases: 0 when empty; exactly [`Self::min`] when
    /// `numerator` is 0; a quantile above 1 (or a zero `denominator`) is
    /// taken as 1, which gives [`Self::max`].
    pub fn value_at_quantile(&self, numerator: u64, denominator: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if numerator == 0 {
            return self.min();
        }
        let (numerator, denominator) = if denominator == 0 || numerator >= denominator {
            (1, 1)
        } else {
            (numerator, denominator)
        };
        let rank = (u128::from(self.count) * u128::from(numerator))
            .div_ceil(u128::from(denominator))
            .max(1);
        let mut seen: u128 = 0;
        for (index, &bucket_count) in self.counts.iter().enumerate() {
            seen += u128::from(bucket_count);
            if seen >= rank {
                return bucket_high(index).max(self.min).min(self.max);
            }
        }
        // Only reachable when bucket counts saturated (or a rebuilt summary
        // disagrees with the buckets): the rank lies past every bucket.
        self.max
    }

    /// The non-empty buckets as `(index, count)`, in increasing index order.
    pub fn nonzero_buckets(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &count)| count != 0)
            .map(|(index, &count)| (index, count))
    }

    /// All bucket counts, indexed by bucket.
    pub fn counts(&self) -> &[u32; BUCKETS] {
        &self.counts
    }

    /// Adds `count` samples to bucket `index`, for rebuilding a histogram
    /// from its buckets (on the host).
    ///
    /// Until [`Self::set_summary`] is called, min and max are estimated from
    /// the bucket bounds and the sum from the bucket midpoints.
    ///
    /// # Errors
    ///
    /// [`HistogramError::IndexOutOfRange`] if `index >= BUCKETS`; the
    /// histogram is then unchanged.
    pub fn add_bucket(&mut self, index: usize, count: u32) -> Result<(), HistogramError> {
        if index >= BUCKETS {
            return Err(HistogramError::IndexOutOfRange { index });
        }
        if count == 0 {
            return Ok(());
        }
        self.counts[index] = self.counts[index].saturating_add(count);
        let samples = u64::from(count);
        self.count = self.count.saturating_add(samples);
        self.sum = self
            .sum
            .saturating_add(bucket_mid(index).saturating_mul(samples));
        self.min = self.min.min(bucket_low(index));
        self.max = self.max.max(bucket_high(index));
        Ok(())
    }

    /// Replaces min, max and sum with exact figures, for rebuilding a
    /// histogram after [`Self::add_bucket`]. The values are stored as given.
    pub fn set_summary(&mut self, min: u64, max: u64, sum: u64) {
        self.min = min;
        self.max = max;
        self.sum = sum;
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max)
            .field("sum", &self.sum)
            .field("clamped", &self.clamped)
            .field("nonzero_buckets", &self.nonzero_buckets().count())
            .finish()
    }
}

/// A histogram that any number of CPUs and interrupt handlers record into
/// at once, without locks.
///
/// Recording is lock-free: bucket and sample counts are wait-free atomic
/// additions (`Relaxed`); min and max use `fetch_min`/`fetch_max`; the
/// saturating sum is a compare-and-swap loop. Unlike [`Histogram`], a bucket
/// count wraps (rather than saturates) after 2^32 samples in one bucket
/// between resets.
///
/// [`Self::snapshot_into`] and [`Self::reset`] are not atomic as a whole:
/// samples recorded while they run may be seen only partly (for example in
/// a bucket but not yet in the sum).
pub struct AtomicHistogram {
    /// Samples per bucket.
    counts: [AtomicU32; BUCKETS],
    /// Number of samples.
    count: AtomicU64,
    /// Smallest sample, [`EMPTY_MIN`] when empty.
    min: AtomicU64,
    /// Largest sample, 0 when empty.
    max: AtomicU64,
    /// Sum of all samples, saturating.
    sum: AtomicU64,
    /// Samples that were above [`MAX_VALUE`].
    clamped: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU32::new(0) }; BUCKETS],
            count: AtomicU64::new(0),
            min: AtomicU64::new(EMPTY_MIN),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            clamped: AtomicU64::new(0),
        }
    }

    /// Records one sample; safe to call from any CPU and any context.
    pub fn record(&self, value: u64) {
        let (value, was_clamped) = clamp_value(value);
        self.counts[bucket_index(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.min.fetch_min(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
        // The closure always returns `Some`, so the update cannot fail.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(value))
            });
        if was_clamped {
            self.clamped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A copy of the current contents (about 9 KiB on the stack; see
    /// [`Self::snapshot_into`] to fill an existing histogram instead).
    pub fn snapshot(&self) -> Histogram {
        let mut out = Histogram::new();
        self.snapshot_into(&mut out);
        out
    }

    /// Overwrites `out` with the current contents.
    ///
    /// The copy's sample count is the sum of the copied bucket counts, so
    /// its quantiles are consistent even while other CPUs keep recording.
    pub fn snapshot_into(&self, out: &mut Histogram) {
        let mut total: u64 = 0;
        for (copy, bucket) in out.counts.iter_mut().zip(self.counts.iter()) {
            *copy = bucket.load(Ordering::Relaxed);
            total = total.saturating_add(u64::from(*copy));
        }
        out.count = total;
        out.sum = self.sum.load(Ordering::Relaxed);
        out.clamped = self.clamped.load(Ordering::Relaxed);
        if total == 0 {
            out.min = EMPTY_MIN;
            out.max = 0;
        } else {
            out.min = self.min.load(Ordering::Relaxed);
            out.max = self.max.load(Ordering::Relaxed);
        }
    }

    /// Empties the histogram.
    pub fn reset(&self) {
        for bucket in &self.counts {
            bucket.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.min.store(EMPTY_MIN, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.clamped.store(0, Ordering::Relaxed);
    }

    /// Number of samples recorded since creation or the last reset.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
