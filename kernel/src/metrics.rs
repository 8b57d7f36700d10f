//! Named latency histograms, one fixed-memory `AtomicHistogram` per CPU each:
//! recording never allocates or locks (safe in interrupt handlers), and the
//! dump merges nothing: each CPU's histogram goes out as its own `hist`
//! record, and the host merges them.

use alloc::boxed::Box;
use alloc::vec::Vec;

use spindle_histogram::{AtomicHistogram, Histogram, SUB_BITS};

use crate::arch::cpu;
use crate::console;

/// A histogram name and its per-CPU recorders.
pub struct PerCpuHistogram {
    /// Record name, e.g. `apic.timer_lateness`.
    pub name: &'static str,
    /// Unit of the values (`ns`).
    pub unit: &'static str,
    slots: Box<[AtomicHistogram]>,
}

static REGISTRY: spin::Mutex<Vec<&'static PerCpuHistogram>> = spin::Mutex::new(Vec::new());

impl PerCpuHistogram {
    /// Records `value` for the calling CPU.
    #[inline]
    pub fn record(&self, value: u64) {
        self.record_for(cpu::current_index(), value);
    }

    /// Records `value` under CPU `index` (e.g. the target of an IPI).
    #[inline]
    pub fn record_for(&self, index: usize, value: u64) {
        if let Some(slot) = self.slots.get(index) {
            slot.record(value);
        }
    }
}

/// Creates (once, at init time; it allocates) a histogram with one slot per
/// CPU found, and registers it for `dump`.
pub fn register(name: &'static str, unit: &'static str) -> &'static PerCpuHistogram {
    let slots: Box<[AtomicHistogram]> = (0..cpu::cpus_found().max(1))
        .map(|_| AtomicHistogram::new())
        .collect();
    let histogram: &'static PerCpuHistogram =
        Box::leak(Box::new(PerCpuHistogram { name, unit, slots }));
    REGISTRY.lock().push(histogram);
    histogram
}

/// Writes one `hist` record per CPU with samples, for every histogram.
pub fn dump() {
    let histograms: Vec<&'static PerCpuHistogram> = REGISTRY.lock().clone();
    let mut snapshot = Box::new(Histogram::new());
    for histogram in histograms {
        for (index, slot) in histogram.slots.iter().enumerate() {
            if slot.count() == 0 {
                continue;
            }
            slot.snapshot_into(&mut snapshot);
            write_histogram(histogram, index, &snapshot);
        }
    }
}

fn write_histogram(histogram: &PerCpuHistogram, index: usize, snapshot: &Histogram) {
    console::record("hist", |record| {
        record
            .str("name", histogram.name)?
            .str("unit", histogram.unit)?
            .u64("cpu", index as u64)?
            .u64("sub_bits", u64::from(SUB_BITS))?
            .u64("count", snapshot.count())?
            .u64("min", snapshot.min())?
            .u64("max", snapshot.max())?
            .u64("sum", snapshot.sum())?
            .pairs(
                "buckets",
                snapshot
                    .nonzero_buckets()
                    .map(|(bucket, count)| (bucket as u64, u64::from(count))),
            )?;
        Ok(())
    });
}

/// Prints one human summary line per histogram (p50/p99 of all CPUs merged).
pub fn print_summaries() {
    let histograms: Vec<&'static PerCpuHistogram> = REGISTRY.lock().clone();
    for histogram in histograms {
        print_summary(histogram);
    }
}

fn print_summary(histogram: &PerCpuHistogram) {
    let mut merged = Box::new(Histogram::new());
    let mut snapshot = Box::new(Histogram::new());
    for slot in histogram.slots.iter() {
        slot.snapshot_into(&mut snapshot);
        merged.merge(&snapshot);
    }
    crate::kprintln!(
        "{}: {} samples, p50 {} {unit}, p99 {} {unit}, max {} {unit}",
        histogram.name,
        merged.count(),
        merged.value_at_quantile(50, 100),
        merged.value_at_quantile(99, 100),
        merged.max(),
        unit = histogram.unit
    );
}
