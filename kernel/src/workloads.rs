//! The kernel's side of the workloads in `bench-apps/`: the `Strands` interface they are written against, and the runs behind `--bench mixed`, with their scalars.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use spindle_sched_ext::{CpuId, CpuSet, SchedParams, StrandId};
use spindle_services::strands::{Recorder, Strands};

use crate::arch::{cpu, tsc};
use crate::console;
use crate::metrics::{self, PerCpuHistogram};
use crate::strand;

impl Recorder for PerCpuHistogram {
    fn record(&self, value: u64) {
        PerCpuHistogram::record(self, value);
    }
}

/// The kernel's strands, as workloads see them.
pub struct KernelStrands;

/// The one instance workloads get.
pub static STRANDS: KernelStrands = KernelStrands;

/// Histograms registered by name (a workload may ask twice).
static HISTOGRAMS: crate::sync::IrqMutex<Vec<(&'static str, &'static PerCpuHistogram)>> =
    crate::sync::irq_mutex(Vec::new());

impl Strands for KernelStrands {
    fn cpu_count(&self) -> u16 {
        cpu::cpus_found() as u16
    }

    fn now(&self) -> u64 {
        crate::kernel::nanoseconds_since_boot()
    }

    fn spawn_held(
        &self,
        body: Box<dyn FnOnce() + Send>,
        affinity: CpuSet,
        params: SchedParams,
    ) -> Result<StrandId, String> {
        strand::spawn_held(body, affinity, params).map_err(|error| format!("{error}"))
    }

    fn start(&self, strand: StrandId) -> bool {
        strand::start(strand)
    }

    fn yield_now(&self) {
        strand::yield_now();
    }

    fn sleep(&self, nanoseconds: u64) {
        strand::sleep(nanoseconds);
    }

    fn block(&self) {
        strand::block();
    }

    fn unblock(&self, strand: StrandId) -> bool {
        strand::unblock(strand)
    }

    fn join(&self, strand: StrandId) -> Result<(), String> {
        strand::join(strand).map_err(|error| format!("{error:?}"))
    }

    fn current(&self) -> Option<StrandId> {
        strand::current_id()
    }

    fn run_time(&self, strand: StrandId) -> Option<u64> {
        strand::run_time(strand)
    }

    fn busy_nanoseconds(&self, cpu: CpuId) -> u64 {
        strand::busy_nanoseconds(cpu.index())
    }

    fn strand_counts(&self) -> (u64, u64) {
        let counters = &strand::COUNTERS;
        (
            counters.created.load(Ordering::Relaxed),
            counters.exited.load(Ordering::Relaxed),
        )
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, timeout_ns: u64) -> bool {
        let deadline = tsc::now() + tsc::ns_to_cycles(timeout_ns);
        while !done() {
            if tsc::now() > deadline {
                return false;
            }
            cpu::enable_interrupts_and_halt();
        }
        true
    }

    fn histogram(&self, name: &'static str) -> &'static dyn Recorder {
        let mut histograms = HISTOGRAMS.lock();
        if let Some(&(_, histogram)) = histograms.iter().find(|(known, _)| *known == name) {
            return histogram;
        }
        let histogram = metrics::register(name, "ns");
        histograms.push((name, histogram));
        histogram
    }
}

/// `--bench mixed` for `duration_ms`: runs `bench-apps/mixed` and reports
/// its scalars with the scheduler's; returns the problems found.
pub fn mixed(duration_ms: u64) -> Vec<String> {
    let report = spindle_bench_mixed::run(&STRANDS, duration_ms);
    let (created, exited) = STRANDS.strand_counts();
    if exited != created {
        strand::dump_live_strands();
    }
    crate::selftest::report_scheduler_scalars(created, exited);
    console::with_console(|console| {
        console::write_record(console, "scalar", |record| {
            record.str("name", "cpu_utilisation")?.fixed(
                "value",
                report.utilisation_permille,
                1,
            )?;
            Ok(())
        });
        console::write_record(console, "scalar", |record| {
            record.str("name", "stride.share_error_pct")?.fixed(
                "value",
                report.share_error_permille,
                1,
            )?;
            Ok(())
        });
        console::write_scalar_u64(console, "edf.deadline_misses", report.deadline_misses);
        console::write_scalar_u64(console, "edf.jobs", report.jobs);
    });
    report.problems
}
