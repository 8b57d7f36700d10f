//! Self-tests that need the whole machine: `selftest=dispatch-churn` installs and removes handlers on CPU 0 while every other CPU raises the event; `selftest=strands` runs strands on every CPU.
//!
//! The workload and its checks are `bench-apps/dispatch`'s `churn` module;
//! this file runs it on real CPUs, with interrupts on, for `selftest_ms`,
//! and reports its counts as `churn.*` scalars.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use spindle_bench_dispatch::churn::{Churn, ChurnReport};

use crate::arch::{cpu, smp, tsc};
use crate::console;

/// How long each churned handler stays installed.
const INSTALLED_NS: u64 = 20_000;
/// How long a raising CPU may take to notice the end.
const STOP_TIMEOUT_NS: u64 = 5_000_000_000;

static CHURN: Once<Churn> = Once::new();
static RAISING: AtomicBool = AtomicBool::new(false);
/// Raises made by each CPU.
static RAISES_PER_CPU: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];

/// A raising CPU's loop.
fn raise_until_stopped() {
    let churn = CHURN.get().expect("churn built");
    let raises = &RAISES_PER_CPU[cpu::current_index()];
    let mut sequence = 0u64;
    while RAISING.load(Ordering::Relaxed) {
        churn.raise_step(sequence);
        sequence += 1;
    }
    raises.store(sequence, Ordering::Relaxed);
}

/// Runs the churn test for `duration_ms` and reports it. Returns the
/// problems found (empty when every rule held).
pub fn dispatch_churn(duration_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let churn = match Churn::new(crate::extensions::dispatcher()) {
        Ok(churn) => CHURN.call_once(|| churn),
        Err(error) => return alloc::vec![format!("{error}")],
    };
    let online: Vec<usize> = (1..cpu::cpus_found())
        .filter(|&index| cpu::per_cpu(index).online.load(Ordering::Acquire))
        .collect();
    if online.is_empty() {
        problems.push(String::from("dispatch-churn needs at least 2 CPUs"));
    }
    RAISING.store(true, Ordering::Relaxed);
    let raisers: Vec<smp::Posted> = online
        .iter()
        .filter_map(|&index| smp::post(index, raise_until_stopped))
        .collect();
    if raisers.len() != online.len() {
        problems.push(format!(
            "{} CPUs could not be started",
            online.len() - raisers.len()
        ));
    }
    let deadline = tsc::now() + tsc::ns_to_cycles(duration_ms * 1_000_000);
    let mut cycles = 0u64;
    while tsc::now() < deadline {
        if let Err(error) = churn.churn_step(cycles, || tsc::delay_ns(INSTALLED_NS)) {
            problems.push(format!("{error}"));
            break;
        }
        cycles += 1;
    }
    RAISING.store(false, Ordering::Relaxed);
    for posted in raisers {
        if !smp::wait_done(posted, STOP_TIMEOUT_NS) {
            problems.push(String::from("a raising CPU did not stop"));
        }
    }
    let report = churn.report();
    let raises_per_cpu: Vec<u64> = (0..cpu::cpus_found())
        .map(|index| RAISES_PER_CPU[index].load(Ordering::Relaxed))
        .collect();
    for &index in &online {
        if raises_per_cpu[index] == 0 {
            problems.push(format!("cpu {index} made no raise"));
        }
    }
    if report.single_installs == 0 || report.extension_installs == 0 {
        problems.push(String::from("no handler was churned"));
    }
    if report.problems() > 0 {
        problems.push(format!("{} broken rules: {report:?}", report.problems()));
    }
    report_scalars(&report, &raises_per_cpu, duration_ms);
    problems
}

fn report_scalars(report: &ChurnReport, raises_per_cpu: &[u64], duration_ms: u64) {
    console::with_console(|console| {
        for (name, value) in Churn::fields(report) {
            let mut full_name = console::BoundedText::new();
            let _ = core::fmt::Write::write_fmt(&mut full_name, format_args!("churn.{name}"));
            console::write_scalar_u64(console, full_name.as_str(), value);
        }
        console::write_record(console, "scalar", |record| {
            record
                .str("name", "churn.raises_per_cpu")?
                .u64_list("value", raises_per_cpu.iter().copied())?;
            Ok(())
        });
        console::write_scalar_u64(console, "churn.duration_ms", duration_ms);
    });
}

/// Rounds of a yielding strand, and its computing time per round.
const YIELD_ROUNDS: u64 = 20;
const ROUND_NS: u64 = 200_000;
/// How long the self-test waits for every strand to exit.
const STRANDS_TIMEOUT_NS: u64 = 60_000_000_000;

/// Computes (spins) until `end`, in nanoseconds since boot: the CPU-bound
/// work of the strand workloads.
pub fn compute_until(end: u64) {
    let mut iterations = 0u64;
    while crate::kernel::nanoseconds_since_boot() < end {
        iterations = core::hint::black_box(iterations + 1);
    }
}

/// Computes for `nanoseconds` of wall time.
fn compute_for(nanoseconds: u64) {
    compute_until(crate::kernel::nanoseconds_since_boot() + nanoseconds);
}

/// Halts this CPU's own context (strands run meanwhile) until `finished`
/// reaches `spawned` and every created strand has exited and been reaped,
/// or `timeout_ns` passes.
pub fn wait_for_strands(finished: &AtomicU64, spawned: u64, timeout_ns: u64) {
    let counters = &crate::strand::COUNTERS;
    let deadline = tsc::now() + tsc::ns_to_cycles(timeout_ns);
    while (finished.load(Ordering::Relaxed) < spawned
        || counters.exited.load(Ordering::Relaxed) < counters.created.load(Ordering::Relaxed))
        && tsc::now() < deadline
    {
        cpu::enable_interrupts_and_halt();
    }
}

/// Creates `count` strands on every CPU (half CPU-bound, preempted by the
/// timer; half yielding every round), waits for all to exit, checks that
/// each ran its whole body exactly once, and reports the scheduler's counts.
pub fn strands(count: u64, cpu_bound_ms: u64) -> Vec<String> {
    use alloc::sync::Arc;
    use spindle_sched_ext::{CpuSet, SchedParams};

    let mut problems = Vec::new();
    let cpus = cpu::cpus_found() as u16;
    let rounds: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let finished = Arc::new(AtomicU64::new(0));
    let mut spawned = 0u64;
    // Strands are created held and started together at the end: this
    // context is the CPU's idle context, which no strand ever yields to.
    let mut held = Vec::new();
    for index in 0..count {
        let rounds = Arc::clone(&rounds);
        let finished = Arc::clone(&finished);
        let cpu_bound = index % 2 == 0;
        let body = alloc::boxed::Box::new(move || {
            let slot = &rounds[index as usize];
            if cpu_bound {
                compute_for(cpu_bound_ms * 1_000_000);
                slot.fetch_add(YIELD_ROUNDS, Ordering::Relaxed);
            } else {
                for _ in 0..YIELD_ROUNDS {
                    compute_for(ROUND_NS);
                    slot.fetch_add(1, Ordering::Relaxed);
                    crate::strand::yield_now();
                }
            }
            finished.fetch_add(1, Ordering::Relaxed);
        });
        match crate::strand::spawn_held(body, CpuSet::all(cpus), SchedParams::default()) {
            Ok(id) => {
                spawned += 1;
                held.push(id);
            }
            Err(error) => problems.push(format!("strand {index}: {error}")),
        }
    }
    for id in held {
        crate::strand::start(id);
    }
    let counters = &crate::strand::COUNTERS;
    wait_for_strands(&finished, spawned, STRANDS_TIMEOUT_NS);
    let created = counters.created.load(Ordering::Relaxed);
    let exited = counters.exited.load(Ordering::Relaxed);
    let wrong: Vec<u64> = (0..count)
        .filter(|&index| rounds[index as usize].load(Ordering::Relaxed) != YIELD_ROUNDS)
        .collect();
    if !wrong.is_empty() {
        problems.push(format!(
            "strands {wrong:?} did not run their body exactly once"
        ));
    }
    if exited != created {
        problems.push(format!(
            "{} of {created} strands did not exit",
            created - exited
        ));
    }
    report_scheduler_scalars(created, exited);
    problems
}

/// Writes the scheduler's scalars: strand counts, switches, migrations,
/// refused picks, the running policy, swaps and ejections.
pub fn report_scheduler_scalars(created: u64, exited: u64) {
    let counters = &crate::strand::COUNTERS;
    console::with_console(|console| {
        let values = [
            ("strands_created", created),
            ("strands_exited", exited),
            ("strands_lost", created - exited.min(created)),
            (
                "context_switches",
                counters.context_switches.load(Ordering::Relaxed),
            ),
            ("migrations", counters.migrations.load(Ordering::Relaxed)),
            (
                "rejected_decisions",
                counters.rejected_decisions.load(Ordering::Relaxed),
            ),
        ];
        for (name, value) in values {
            console::write_scalar_u64(console, name, value);
        }
        console::write_record(console, "scalar", |record| {
            record
                .str("name", "sched")?
                .str("value", crate::strand::current_policy())?;
            Ok(())
        });
        console::write_scalar_u64(console, "swaps", counters.swaps.load(Ordering::Relaxed));
        console::write_record(console, "scalar", |record| {
            record.str("name", "busy_ns_per_cpu")?.u64_list(
                "value",
                (0..cpu::cpus_found()).map(crate::strand::busy_nanoseconds),
            )?;
            Ok(())
        });
        let log = crate::strand::swap_log();
        console::write_record(console, "scalar", |record| {
            record.str("name", "ejections")?;
            record.object_list(
                "value",
                log.iter()
                    .filter(|swap| swap.ejection.is_some() && swap.failed.is_none()),
                |object, swap| {
                    object.str("extension", swap.from)?;
                    object.str("reason", swap.ejection.unwrap_or(""))?;
                    Ok(())
                },
            )?;
            Ok(())
        });
        console::write_record(console, "scalar", |record| {
            record.str("name", "swap_log")?;
            record.object_list("value", log.iter(), |object, swap| {
                object.str("from", swap.from)?;
                object.str("to", swap.to)?;
                object.u64("at_ns", swap.at_ns)?;
                object.u64("pause_ns", swap.pause_ns)?;
                object.u64("strands", swap.strands as u64)?;
                object.bool("kernel_view", swap.kernel_view)?;
                object.str("failed", swap.failed.unwrap_or(""))?;
                Ok(())
            })?;
            Ok(())
        });
    });
}
