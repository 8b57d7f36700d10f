//! The kernel's side of the workloads in `bench-apps/`: the `Strands`, `Contexts` and `Processors` interfaces they are written against, and the runs behind `--bench mixed,forkjoin,pingpong,blocking` and `selftest=uthreads,activations`, with their scalars.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use spindle_bench_threads::{Kernel, Kind};
use spindle_sched_ext::{
    CpuId, CpuSet, DomainId, Nanoseconds, ProcessorClient, SchedParams, StrandId,
};
use spindle_services::contexts::{Body, Contexts, ExecutionContext, Outcome, Suspend};
use spindle_services::processors::Processors;
use spindle_services::strands::{Recorder, Strands};

use crate::arch::thread_context::{Resumed, Suspender, ThreadContext};
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

/// The kernel's processor allocation, as thread packages see it.
pub struct KernelProcessors;

/// The one instance packages get.
pub static PROCESSORS: KernelProcessors = KernelProcessors;

/// What the benchmarks and self-tests are handed.
const KERNEL: Kernel = Kernel {
    strands: &STRANDS,
    contexts: &CONTEXTS,
    processors: &PROCESSORS,
};

impl Processors for KernelProcessors {
    fn register(
        &self,
        name: &'static str,
        client: Arc<dyn ProcessorClient>,
    ) -> Result<DomainId, String> {
        let rr = spindle_sched_ext::find("rr").ok_or("rr is not in the catalogue")?;
        strand::domains::register(name, rr, client).map_err(|error| error.to_string())
    }

    fn spawn_held_in(
        &self,
        domain: DomainId,
        body: Box<dyn FnOnce() + Send>,
        affinity: CpuSet,
    ) -> Result<StrandId, String> {
        strand::spawn_in(domain, body, affinity, SchedParams::default())
            .map_err(|error| error.to_string())
    }

    fn request_processors(&self, domain: DomainId, count: usize) -> usize {
        strand::domains::request_processors(domain, count)
    }

    fn grant(&self, domain: DomainId, cpu: CpuId) -> Result<(), String> {
        strand::domains::grant(domain, cpu).map_err(|error| error.to_string())
    }

    fn release(&self, domain: DomainId, cpu: CpuId) -> Result<(), String> {
        strand::domains::release_then(domain, cpu, false).map_err(|error| error.to_string())
    }

    fn revoke(&self, domain: DomainId, cpu: CpuId, notice: Nanoseconds) -> Result<(), String> {
        strand::domains::revoke(domain, cpu, notice)
            .map(drop)
            .map_err(|error| error.to_string())
    }

    fn allocated(&self, domain: DomainId) -> CpuSet {
        strand::domains::allocated(domain)
    }

    fn set_affinity(&self, strand: StrandId, affinity: CpuSet) -> Result<(), String> {
        strand::set_affinity(strand, affinity).map_err(|error| format!("{error:?}"))
    }

    fn is_idle(&self, domain: DomainId) -> bool {
        strand::domains::is_idle(domain)
    }

    fn interrupt(&self, cpu: CpuId) {
        strand::interrupt(cpu);
    }
}

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

    fn current_cpu(&self) -> CpuId {
        CpuId(cpu::current_index() as u16)
    }

    fn stalled_nanoseconds(&self, cpu: CpuId) -> u64 {
        crate::timer::stalled_nanoseconds(cpu.index())
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
            crate::extensions::halt_until_interrupt();
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
pub fn mixed(duration_ms: u64, job_ns: u64) -> Vec<String> {
    let report = spindle_bench_mixed::run(&STRANDS, duration_ms, job_ns);
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
        console::write_scalar_u64(
            console,
            "edf.deadline_misses_in_stalls",
            report.deadline_misses_in_stalls,
        );
        console::write_scalar_u64(console, "edf.jobs", report.jobs);
    });
    report.problems
}

/// Bytes of stack each thread package thread gets (plus a guard page).
const THREAD_STACK_BYTES: usize = 16 * 1024;

/// The kernel's execution contexts, as thread packages see them.
pub struct KernelContexts;

/// The one instance thread packages get.
pub static CONTEXTS: KernelContexts = KernelContexts;

impl Suspend for Suspender {
    fn suspend(&self) {
        Suspender::suspend(self);
    }
}

impl ExecutionContext for ThreadContext {
    fn resume(&mut self) -> Outcome {
        match ThreadContext::resume(self) {
            Resumed::Suspended => Outcome::Suspended,
            Resumed::Finished => Outcome::Finished,
            Resumed::Preempted => Outcome::Preempted,
        }
    }

    fn reuse(&mut self, body: Body) -> Result<(), Body> {
        if !self.is_finished() {
            return Err(body);
        }
        ThreadContext::reuse(self, move |suspender: &Suspender| body(suspender))
            .map_err(|_| unreachable!("the context has finished"))
    }
}

impl Contexts for KernelContexts {
    fn create(&self, body: Body) -> Result<Box<dyn ExecutionContext>, String> {
        ThreadContext::new(THREAD_STACK_BYTES, move |suspender: &Suspender| {
            body(suspender)
        })
        .map(|context| Box::new(context) as Box<dyn ExecutionContext>)
        .map_err(|error| format!("thread context: {error}"))
    }
}

/// Whether scheduler activations can run here (a CPU besides CPU 0); says
/// so on the console when they cannot.
fn activations_possible(what: &str) -> bool {
    if STRANDS.cpu_count() >= 2 {
        return true;
    }
    crate::kprintln!("{what}: scheduler activations skipped (they need -smp 2 or more)");
    false
}

/// `--bench forkjoin,pingpong`: `rounds` samples of each on strands,
/// `uthreads` and (with a CPU besides CPU 0) scheduler activations.
pub fn threads(forkjoin: bool, pingpong: bool, rounds: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |name: &str, outcome: Result<(), String>| {
        if let Err(error) = outcome {
            problems.push(format!("{name}: {error}"));
        }
    };
    let activations = (forkjoin || pingpong) && activations_possible("forkjoin, pingpong");
    if forkjoin {
        check(
            "forkjoin.strand",
            spindle_bench_threads::forkjoin_strands(&STRANDS, rounds),
        );
        check(
            "forkjoin.uthreads",
            spindle_bench_threads::forkjoin_threads(KERNEL, Kind::Uthreads, rounds),
        );
        if activations {
            check(
                "forkjoin.activations",
                spindle_bench_threads::forkjoin_threads(KERNEL, Kind::Activations, rounds),
            );
        }
    }
    if pingpong {
        check(
            "pingpong.strand",
            spindle_bench_threads::pingpong_strands(&STRANDS, rounds),
        );
        check(
            "pingpong.uthreads",
            spindle_bench_threads::pingpong_threads(KERNEL, Kind::Uthreads, rounds),
        );
        if activations {
            check(
                "pingpong.activations",
                spindle_bench_threads::pingpong_threads(KERNEL, Kind::Activations, rounds),
            );
        }
    }
    problems
}

/// The activations' counts as scalars: `activations.upcalls.<kind>`,
/// `activations.downcalls.<kind>`, the invariant checks and violations.
fn write_activations_report(report: &spindle_activations::runtime::Report) {
    let counts = report.ledger;
    console::with_console(|console| {
        for (name, value) in [
            (
                "activations.upcalls.processor_added",
                counts.processors_added,
            ),
            (
                "activations.upcalls.processor_preempted",
                counts.processors_preempted,
            ),
            (
                "activations.upcalls.activation_blocked",
                counts.activations_blocked,
            ),
            (
                "activations.upcalls.activation_unblocked",
                counts.activations_unblocked,
            ),
            (
                "activations.downcalls.add_more_processors",
                counts.add_more_processors,
            ),
            (
                "activations.downcalls.processor_is_idle",
                counts.processor_is_idle,
            ),
            ("activations.invariant_checks", counts.invariant_checks),
            ("activations.violations.over_granted", counts.over_granted),
            (
                "activations.violations.idle_with_ready",
                counts.idle_with_ready,
            ),
            ("activations.violations.occupied", counts.occupied),
            (
                "activations.violations.double_running",
                report.double_running,
            ),
            ("activations.events_dropped", report.events_dropped),
            ("activations.blocking_calls", report.blocking_calls),
            ("activations.created", report.activations_created),
            ("activations.revocations", report.revocations_requested),
            (
                "alloc.given_up",
                strand::domains::COUNTERS.given_up.load(Ordering::Relaxed),
            ),
            (
                "alloc.forced",
                strand::domains::COUNTERS.forced.load(Ordering::Relaxed),
            ),
            (
                "alloc.released",
                strand::domains::COUNTERS.released.load(Ordering::Relaxed),
            ),
        ] {
            console::write_scalar_u64(console, name, value);
        }
    });
}

/// `--bench blocking`: eight threads per CPU (CPU 0 aside) computing and
/// making blocking kernel calls, under `uthreads` and then under scheduler
/// activations in the same run, on the same CPUs; reports
/// `blocking.utilisation.<package>` (percent), `blocking.calls.<package>`
/// and the activations' upcall counts.
pub fn blocking() -> Vec<String> {
    const THREADS_PER_CPU: u64 = 8;
    const STEPS: u64 = 100;
    let cpus = STRANDS.cpu_count();
    let threads = THREADS_PER_CPU * u64::from(cpus.saturating_sub(1).max(1));
    let mut problems = Vec::new();
    let mut kinds = alloc::vec![Kind::Uthreads];
    if activations_possible("blocking") {
        kinds.push(Kind::Activations);
    }
    for kind in kinds {
        match spindle_bench_threads::blocking(KERNEL, kind, threads, STEPS) {
            Ok(report) => {
                let utilisation: &'static str = match kind {
                    Kind::Uthreads => "blocking.utilisation.uthreads",
                    Kind::Activations => "blocking.utilisation.activations",
                };
                let calls: &'static str = match kind {
                    Kind::Uthreads => "blocking.calls.uthreads",
                    Kind::Activations => "blocking.calls.activations",
                };
                console::with_console(|console| {
                    console::write_record(console, "scalar", |record| {
                        record.str("name", utilisation)?.fixed(
                            "value",
                            report.utilisation_permille,
                            1,
                        )?;
                        Ok(())
                    });
                    console::write_scalar_u64(console, calls, report.blocking_calls);
                    console::write_scalar_u64(console, "blocking.threads", report.threads);
                });
                if let Some(activations) = &report.activations {
                    write_activations_report(activations);
                    check_invariants(activations, &mut problems);
                }
            }
            Err(error) => problems.push(format!("blocking.{}: {error}", kind.name())),
        }
    }
    problems
}

/// `selftest=activations`: `threads` threads spawned and joined under
/// scheduler activations, counting under a mutex while the kernel takes a
/// processor back every 20 ms; then the condition-variable hand-over.
/// Reports `activations.*` scalars; any broken invariant is a problem.
pub fn activations_stress(threads: u64) -> Vec<String> {
    const INCREMENTS: u64 = 10;
    let mut problems = Vec::new();
    if !activations_possible("selftest=activations") {
        return alloc::vec![String::from(
            "selftest=activations needs -smp 2 or more (CPU 0 is never granted)"
        )];
    }
    match spindle_bench_threads::stress(KERNEL, Kind::Activations, threads, INCREMENTS) {
        Ok(report) => {
            check_stress(&report, &mut problems);
            console::with_console(|console| {
                for (name, value) in [
                    ("activations.threads", report.threads),
                    ("activations.finished", report.finished),
                    ("activations.counter", report.counter),
                    ("activations.increments", report.increments),
                    ("activations.handed_back", report.handed_back),
                    ("activations.recovered", report.recovered),
                ] {
                    console::write_scalar_u64(console, name, value);
                }
            });
            if let Some(activations) = &report.activations {
                write_activations_report(activations);
                check_invariants(activations, &mut problems);
            }
        }
        Err(error) => problems.push(error),
    }
    match spindle_bench_threads::condvar_rounds(KERNEL, Kind::Activations) {
        Ok(received) => {
            if received != spindle_bench_threads::CONDVAR_ROUNDS {
                problems.push(format!(
                    "{received} of {} condition-variable hand-overs arrived in order",
                    spindle_bench_threads::CONDVAR_ROUNDS
                ));
            }
            console::with_console(|console| {
                console::write_scalar_u64(console, "activations.condvar_rounds", received);
            });
        }
        Err(error) => problems.push(error),
    }
    let (created, exited) = STRANDS.strand_counts();
    crate::selftest::report_scheduler_scalars(created, exited);
    problems
}

/// The activations' invariants held throughout (counted, not assumed).
fn check_invariants(report: &spindle_activations::runtime::Report, problems: &mut Vec<String>) {
    if report.violations() > 0 {
        problems.push(format!(
            "scheduler-activation invariants broken: {report:?}"
        ));
    }
}

/// The stress test's two rules: the count is exact, every thread finished.
fn check_stress(report: &spindle_bench_threads::StressReport, problems: &mut Vec<String>) {
    if report.counter != report.threads * report.increments {
        problems.push(format!(
            "the shared counter is {} instead of {}",
            report.counter,
            report.threads * report.increments
        ));
    }
    if report.finished != report.threads {
        problems.push(format!(
            "{} of {} threads finished",
            report.finished, report.threads
        ));
    }
}

/// `selftest=uthreads`: `threads` threads on every CPU, spawned, joined and
/// counting under a mutex; reports `uthreads.*` scalars.
pub fn uthreads_stress(threads: u64) -> Vec<String> {
    const INCREMENTS: u64 = 10;
    let mut problems = Vec::new();
    match spindle_bench_threads::stress(KERNEL, Kind::Uthreads, threads, INCREMENTS) {
        Ok(report) => {
            check_stress(&report, &mut problems);
            console::with_console(|console| {
                for (name, value) in [
                    ("uthreads.threads", report.threads),
                    ("uthreads.finished", report.finished),
                    ("uthreads.counter", report.counter),
                    ("uthreads.increments", report.increments),
                    ("uthreads.contexts_made", report.contexts_made),
                    ("uthreads.steals", report.steals),
                    ("uthreads.handed_back", report.handed_back),
                    ("uthreads.recovered", report.recovered),
                ] {
                    console::write_scalar_u64(console, name, value);
                }
            });
        }
        Err(error) => problems.push(error),
    }
    match spindle_bench_threads::preemption(KERNEL) {
        Ok(report) => {
            if !report.flag_seen {
                problems.push(String::from(
                    "a preempted thread was not handed back: the other thread never ran",
                ));
            }
            console::with_console(|console| {
                console::write_scalar_u64(
                    console,
                    "uthreads.preemption.flag_seen",
                    u64::from(report.flag_seen),
                );
                console::write_scalar_u64(
                    console,
                    "uthreads.preemption.handed_back",
                    report.handed_back,
                );
                console::write_scalar_u64(
                    console,
                    "threads_handed_back",
                    strand::COUNTERS.threads_handed_back.load(Ordering::Relaxed),
                );
            });
        }
        Err(error) => problems.push(error),
    }
    match spindle_bench_threads::condvar_rounds(KERNEL, Kind::Uthreads) {
        Ok(received) => {
            if received != spindle_bench_threads::CONDVAR_ROUNDS {
                problems.push(format!(
                    "{received} of {} condition-variable hand-overs arrived in order",
                    spindle_bench_threads::CONDVAR_ROUNDS
                ));
            }
            console::with_console(|console| {
                console::write_scalar_u64(console, "uthreads.condvar_rounds", received);
            });
        }
        Err(error) => problems.push(error),
    }
    let (created, exited) = STRANDS.strand_counts();
    crate::selftest::report_scheduler_scalars(created, exited);
    problems
}
