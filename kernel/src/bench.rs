//! The base measurements: IPI round trips from CPU 0 to every other CPU,
//! and the cost of reading the TSC on every CPU.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;

use crate::arch::interrupts::{register_handler, InterruptFrame};
use crate::arch::{apic, cpu, smp, tsc};
use crate::metrics::{self, PerCpuHistogram};

/// How long CPU 0 waits for one IPI answer before counting it lost.
const IPI_ANSWER_TIMEOUT_NS: u64 = 500_000_000;
/// How long a CPU may take for its share of the TSC benchmark.
const TSC_BENCH_TIMEOUT_NS: u64 = 30_000_000_000;

static IPI_ROUND_TRIP: Once<&'static PerCpuHistogram> = Once::new();
static TSC_READ_COST: Once<&'static PerCpuHistogram> = Once::new();
static PONG_RECEIVED: AtomicBool = AtomicBool::new(false);
static TSC_SAMPLES: AtomicU64 = AtomicU64::new(0);

/// Registers the histograms and IPI handlers (bootstrap processor, once the
/// CPU count is known).
pub fn init() {
    IPI_ROUND_TRIP.call_once(|| metrics::register("ipi.round_trip", "ns"));
    TSC_READ_COST.call_once(|| metrics::register("tsc.read_cost", "ns"));
    register_handler(apic::VECTOR_IPI_PING, on_ping);
    register_handler(apic::VECTOR_IPI_PONG, on_pong);
    register_handler(apic::VECTOR_IPI_WAKE, on_wake);
}

fn on_ping(_frame: &mut InterruptFrame) {
    let block = cpu::current();
    block.ipi_answered.fetch_add(1, Ordering::Relaxed);
    apic::end_of_interrupt();
    apic::send_ipi(
        cpu::per_cpu(0).apic_id.load(Ordering::Relaxed),
        apic::VECTOR_IPI_PONG,
    );
}

fn on_pong(_frame: &mut InterruptFrame) {
    PONG_RECEIVED.store(true, Ordering::Release);
    apic::end_of_interrupt();
}

fn on_wake(_frame: &mut InterruptFrame) {
    // The idle loop runs the mailbox once `hlt` returns.
    apic::end_of_interrupt();
}

/// CPU 0 pings each other online CPU `rounds` times and times the answers.
/// Returns the number of pings that went unanswered.
pub fn ipi_round_trips(rounds: u64) -> u64 {
    let histogram = IPI_ROUND_TRIP.get().expect("bench::init ran");
    let timeout = tsc::ns_to_cycles(IPI_ANSWER_TIMEOUT_NS);
    let mut lost = 0;
    for index in 1..cpu::cpus_found() {
        let target = cpu::per_cpu(index);
        if !target.online.load(Ordering::Acquire) {
            continue;
        }
        let apic_id = target.apic_id.load(Ordering::Relaxed);
        for _ in 0..rounds {
            PONG_RECEIVED.store(false, Ordering::Release);
            let start = tsc::now();
            apic::send_ipi(apic_id, apic::VECTOR_IPI_PING);
            while !PONG_RECEIVED.load(Ordering::Acquire) {
                if tsc::now() - start > timeout {
                    break;
                }
                core::hint::spin_loop();
            }
            let end = tsc::now();
            if PONG_RECEIVED.load(Ordering::Acquire) {
                histogram.record_for(index, tsc::cycles_to_ns(end - start));
            } else {
                lost += 1;
            }
        }
    }
    lost
}

fn measure_tsc_read_cost() {
    let histogram = TSC_READ_COST.get().expect("bench::init ran");
    let samples = TSC_SAMPLES.load(Ordering::Relaxed);
    let were_enabled = cpu::disable_interrupts();
    for _ in 0..samples {
        let first = tsc::now();
        let second = tsc::now();
        histogram.record(tsc::cycles_to_ns(second - first));
    }
    cpu::restore_interrupts(were_enabled);
}

/// Measures back-to-back TSC reads on every online CPU, `samples` each.
/// Returns the number of CPUs that did not run it in time.
pub fn tsc_read_cost(samples: u64) -> u64 {
    TSC_SAMPLES.store(samples, Ordering::Relaxed);
    let mut missed = 0;
    for index in 0..cpu::cpus_found() {
        if cpu::per_cpu(index).online.load(Ordering::Acquire)
            && !smp::run_on(index, measure_tsc_read_cost, TSC_BENCH_TIMEOUT_NS)
        {
            missed += 1;
        }
    }
    missed
}
