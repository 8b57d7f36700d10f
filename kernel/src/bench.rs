//! The kernel's benchmarks: IPI round trips from CPU 0 to every other CPU,
//! the cost of reading the TSC on every CPU, and the cost of raising an
//! event (the workload itself is `bench-apps/dispatch`; this file times it).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use spindle_bench_dispatch::bench::{Case, DispatchBench, CONTENDED_HISTOGRAM};

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

/// How long a CPU may take for its share of the dispatch benchmark.
const DISPATCH_BENCH_TIMEOUT_NS: u64 = 60_000_000_000;

/// The dispatch benchmark's events (built on CPU 0, raised everywhere).
static DISPATCH_BENCH: Once<DispatchBench> = Once::new();
/// One histogram per case, in `Case::ALL` order, and the contended one.
static DISPATCH_HISTOGRAMS: Once<[&'static PerCpuHistogram; Case::ALL.len()]> = Once::new();
static DISPATCH_CONTENDED: Once<&'static PerCpuHistogram> = Once::new();
static DISPATCH_SAMPLES: AtomicU64 = AtomicU64::new(0);
static DISPATCH_CALLS: AtomicU64 = AtomicU64::new(1);
/// Set while the other CPUs should keep raising (the contended case).
static DISPATCH_LOAD_RUNNING: AtomicBool = AtomicBool::new(false);
/// Failures of benchmark steps on any CPU.
static DISPATCH_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Times `samples` samples of `case` on this CPU into `histogram`, each the
/// mean of `dispatch_calls` calls (install cases: `case.calls_per_sample()`),
/// with interrupts off so that a timer tick does not land in a sample.
fn time_case(bench: &DispatchBench, case: Case, histogram: &PerCpuHistogram, samples: u64) {
    let calls = match case {
        Case::InstallAndRemove => case.calls_per_sample(),
        _ => DISPATCH_CALLS.load(Ordering::Relaxed),
    };
    for _ in 0..samples {
        let were_enabled = cpu::disable_interrupts();
        let start = tsc::now();
        let result = bench.run(case, calls);
        let end = tsc::now();
        cpu::restore_interrupts(were_enabled);
        if result.is_err() {
            DISPATCH_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let nanoseconds = tsc::cycles_to_ns(end - start);
        histogram.record((nanoseconds + calls / 2) / calls);
    }
}

/// Every case on the calling CPU.
fn measure_dispatch_cases() {
    let bench = DISPATCH_BENCH.get().expect("dispatch benchmark built");
    let histograms = DISPATCH_HISTOGRAMS
        .get()
        .expect("dispatch histograms registered");
    let samples = DISPATCH_SAMPLES.load(Ordering::Relaxed);
    for (case, histogram) in Case::ALL.iter().zip(histograms.iter()) {
        time_case(bench, *case, histogram, samples);
    }
}

/// The other CPUs' load in the contended case: raise the guarded event
/// until told to stop.
fn raise_guarded_in_a_loop() {
    let bench = DISPATCH_BENCH.get().expect("dispatch benchmark built");
    let mut value = 0u64;
    while DISPATCH_LOAD_RUNNING.load(Ordering::Relaxed) {
        value = bench.raise_guarded_once(value);
    }
}

/// The dispatch benchmark: every case on every online CPU in turn, then the
/// guarded raise on CPU 0 while every other CPU raises the same event.
/// Returns a description of what went wrong, if anything did.
pub fn dispatch(samples: u64, calls: u64) -> Result<(), alloc::string::String> {
    let bench = match DispatchBench::new(crate::extensions::dispatcher()) {
        Ok(bench) => DISPATCH_BENCH.call_once(|| bench),
        Err(error) => return Err(alloc::format!("{error}")),
    };
    DISPATCH_HISTOGRAMS
        .call_once(|| Case::ALL.map(|case| metrics::register(case.histogram_name(), "ns")));
    let contended = *DISPATCH_CONTENDED.call_once(|| metrics::register(CONTENDED_HISTOGRAM, "ns"));
    DISPATCH_SAMPLES.store(samples, Ordering::Relaxed);
    DISPATCH_CALLS.store(calls.max(1), Ordering::Relaxed);
    let online = |index: usize| cpu::per_cpu(index).online.load(Ordering::Acquire);
    for index in (0..cpu::cpus_found()).filter(|&index| online(index)) {
        if !smp::run_on(index, measure_dispatch_cases, DISPATCH_BENCH_TIMEOUT_NS) {
            return Err(alloc::format!(
                "cpu {index} did not run the dispatch benchmark in time"
            ));
        }
    }
    DISPATCH_LOAD_RUNNING.store(true, Ordering::Relaxed);
    let load: alloc::vec::Vec<smp::Posted> = (1..cpu::cpus_found())
        .filter(|&index| online(index))
        .filter_map(|index| smp::post(index, raise_guarded_in_a_loop))
        .collect();
    time_case(bench, Case::RaiseOneGuardedHandler, contended, samples);
    DISPATCH_LOAD_RUNNING.store(false, Ordering::Relaxed);
    let stragglers = load
        .into_iter()
        .filter(|&posted| !smp::wait_done(posted, DISPATCH_BENCH_TIMEOUT_NS))
        .count();
    let failures = DISPATCH_FAILURES.load(Ordering::Relaxed);
    if stragglers > 0 || failures > 0 {
        return Err(alloc::format!(
            "dispatch benchmark: {failures} failed samples, {stragglers} CPUs did not stop raising"
        ));
    }
    Ok(())
}
