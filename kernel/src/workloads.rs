//! The kernel's side of the workloads in `bench-apps/`: the `Strands` and `Contexts` interfaces they are written against, and the runs behind `--bench mixed,forkjoin,pingpong` and `selftest=uthreads`, with their scalars.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use spindle_sched_ext::{CpuId, CpuSet, SchedParams, StrandId};
use spindle_services::contexts::{Body, Contexts, ExecutionContext, Outcome, Suspend};
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

/// `--bench forkjoin` and `--bench pingpong`: each on kernel strands and on
/// `uthreads`, `rounds` samples each; returns the problems found.
pub fn threads(forkjoin: bool, pingpong: bool, rounds: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |name: &str, outcome: Result<(), String>| {
        if let Err(error) = outcome {
            problems.push(format!("{name}: {error}"));
        }
    };
    if forkjoin {
        check(
            "forkjoin.strand",
            spindle_bench_threads::forkjoin_strands(&STRANDS, rounds),
        );
        check(
            "forkjoin.uthreads",
            spindle_bench_threads::forkjoin_uthreads(&STRANDS, &CONTEXTS, rounds),
        );
    }
    if pingpong {
        check(
            "pingpong.strand",
            spindle_bench_threads::pingpong_strands(&STRANDS, rounds),
        );
        check(
            "pingpong.uthreads",
            spindle_bench_threads::pingpong_uthreads(&STRANDS, &CONTEXTS, rounds),
        );
    }
    problems
}

/// `--bench blocking`: eight threads per CPU computing and making blocking
/// kernel calls, under `uthreads`; reports `blocking.utilisation.uthreads`
/// (percent) and `blocking.calls.uthreads`.
pub fn blocking() -> Vec<String> {
    const THREADS_PER_CPU: u64 = 8;
    const STEPS: u64 = 40;
    let threads = THREADS_PER_CPU * u64::from(STRANDS.cpu_count());
    match spindle_bench_threads::blocking_uthreads(&STRANDS, &CONTEXTS, threads, STEPS) {
        Ok(report) => {
            console::with_console(|console| {
                console::write_record(console, "scalar", |record| {
                    record.str("name", "blocking.utilisation.uthreads")?.fixed(
                        "value",
                        report.utilisation_permille,
                        1,
                    )?;
                    Ok(())
                });
                console::write_scalar_u64(
                    console,
                    "blocking.calls.uthreads",
                    report.blocking_calls,
                );
                console::write_scalar_u64(console, "blocking.threads", report.threads);
            });
            Vec::new()
        }
        Err(error) => alloc::vec![error],
    }
}

/// `selftest=uthreads`: `threads` threads on every CPU, spawned, joined and
/// counting under a mutex; reports `uthreads.*` scalars.
pub fn uthreads_stress(threads: u64) -> Vec<String> {
    const INCREMENTS: u64 = 10;
    let mut problems = Vec::new();
    match spindle_bench_threads::stress(&STRANDS, &CONTEXTS, threads, INCREMENTS) {
        Ok(report) => {
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
    match spindle_bench_threads::preemption(&STRANDS, &CONTEXTS) {
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
    match spindle_bench_threads::condvar_rounds(&STRANDS, &CONTEXTS) {
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
