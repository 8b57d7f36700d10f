//! Self-tests that need the whole machine: `selftest=dispatch-churn` installs and removes handlers on CPU 0 while every other CPU raises the event; `selftest=grace-stall` holds a raise on CPU 1 while CPU 0 installs, and checks the stall report; `selftest=strands` runs strands on every CPU; `selftest=strand-ops` checks join, directed yield and affinity changes.
//!
//! The workload and its checks are `bench-apps/dispatch`'s `churn` module;
//! this file runs it on real CPUs, with interrupts on, for `selftest_ms`,
//! and reports its counts as `churn.*` scalars.

pub mod grace_stall;
pub mod processors;

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
        crate::extensions::halt_until_interrupt();
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
            ("policy_faults", crate::strand::policy_faults()),
            (
                "directed_yields",
                counters.directed_yields.load(Ordering::Relaxed),
            ),
            (
                "directed_yields_refused",
                counters.directed_yields_refused.load(Ordering::Relaxed),
            ),
            (
                "affinity_changes",
                counters.affinity_changes.load(Ordering::Relaxed),
            ),
            (
                "affinity_refusals",
                counters.affinity_refusals.load(Ordering::Relaxed),
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
            record.str("name", "tickless_entries_per_cpu")?.u64_list(
                "value",
                (0..cpu::cpus_found())
                    .map(|index| cpu::per_cpu(index).tickless_entries.load(Ordering::Relaxed)),
            )?;
            Ok(())
        });
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

/// Children the `strand-ops` parent creates and joins.
const JOIN_CHILDREN: u64 = 16;
/// Directed yields each of the `strand-ops` pair makes.
const DIRECTED_ROUNDS: u64 = 200;

/// `selftest=strand-ops`: join, directed yield and affinity changes, each
/// checked by the strands themselves; reports `ops.*` scalars and the
/// `sched.directed_yield` histogram (from a directed yield's call to the
/// named strand running, on one CPU).
pub fn strand_operations() -> Vec<String> {
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use spindle_sched_ext::{CpuId, CpuSet, SchedParams};

    use crate::strand::{self, AffinityError, JoinError};

    let mut problems = Vec::new();
    let cpus = cpu::cpus_found() as u16;
    let first = CpuSet::single(CpuId(0));
    let last_cpu = CpuId(cpus - 1);
    let last = CpuSet::single(last_cpu);
    let checks = Arc::new(OperationChecks::default());
    let handoff = crate::metrics::register("sched.directed_yield", "ns");
    let mut held = Vec::new();
    let spawn = |held: &mut Vec<spindle_sched_ext::StrandId>,
                 problems: &mut Vec<String>,
                 body: Box<dyn FnOnce() + Send>,
                 affinity| {
        match strand::spawn_held(body, affinity, SchedParams::default()) {
            Ok(id) => held.push(id),
            Err(error) => problems.push(format!("spawn: {error}")),
        }
    };

    // Join: the parent waits for each child, which must have finished.
    let parent_checks = Arc::clone(&checks);
    spawn(
        &mut held,
        &mut problems,
        Box::new(move || {
            let checks = parent_checks;
            let mut children = Vec::new();
            for _ in 0..JOIN_CHILDREN {
                let done = Arc::new(AtomicBool::new(false));
                let child_done = Arc::clone(&done);
                let child = Box::new(move || {
                    compute_for(100_000);
                    child_done.store(true, Ordering::Release);
                });
                if let Ok(id) = strand::spawn_held(child, CpuSet::all(cpus), SchedParams::default())
                {
                    strand::start(id);
                    children.push((id, done));
                }
            }
            for (id, done) in children {
                if strand::join(id).is_ok() && done.load(Ordering::Acquire) {
                    checks.joined.fetch_add(1, Ordering::Relaxed);
                }
                // Joining an exited strand returns at once.
                if strand::join(id).is_ok() {
                    checks.joined_again.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(me) = strand::current_id() {
                if strand::join(me) == Err(JoinError::SelfJoin) {
                    checks.self_join_refused.store(1, Ordering::Relaxed);
                }
            }
        }),
        CpuSet::all(cpus),
    );

    // Directed yield: two strands on one CPU hand it to each other.
    let partner: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let handed_at = Arc::new(AtomicU64::new(0));
    for side in 0..2usize {
        let partner = Arc::clone(&partner);
        let handed_at = Arc::clone(&handed_at);
        spawn(
            &mut held,
            &mut problems,
            Box::new(move || {
                for _ in 0..DIRECTED_ROUNDS {
                    let other = partner[1 - side].load(Ordering::Acquire);
                    handed_at.store(tsc::now(), Ordering::Release);
                    strand::yield_to(strand::unpack_id(other));
                    let started = handed_at.swap(0, Ordering::AcqRel);
                    if started != 0 {
                        handoff.record(tsc::cycles_to_ns(tsc::now().saturating_sub(started)));
                    }
                }
            }),
            last,
        );
    }
    if let [.., a, b] = held[..] {
        partner[0].store(strand::pack_id(a), Ordering::Release);
        partner[1].store(strand::pack_id(b), Ordering::Release);
    }

    // Affinity: a strand moves itself from the first CPU to the last.
    let mover_checks = Arc::clone(&checks);
    spawn(
        &mut held,
        &mut problems,
        Box::new(move || {
            let before = cpu::current_index() as u16;
            let moved =
                strand::current_id().is_some_and(|me| strand::set_affinity(me, last).is_ok());
            let after = cpu::current_index() as u16;
            if moved && before == 0 && after == last_cpu.0 {
                mover_checks.moved_itself.store(1, Ordering::Relaxed);
            }
            if strand::current_id().is_some_and(|me| {
                strand::set_affinity(me, CpuSet::empty()) == Err(AffinityError::NoUsableCpu)
            }) {
                mover_checks.empty_set_refused.store(1, Ordering::Relaxed);
            }
        }),
        first,
    );
    // ... and a blocked strand is moved by another context, then woken.
    let sleeper_checks = Arc::clone(&checks);
    spawn(
        &mut held,
        &mut problems,
        Box::new(move || {
            sleeper_checks.sleeper_ready.store(1, Ordering::Release);
            while sleeper_checks.sleeper_moved.load(Ordering::Acquire) == 0 {
                strand::block();
            }
            if cpu::current_index() as u16 == last_cpu.0 {
                sleeper_checks
                    .moved_while_blocked
                    .store(1, Ordering::Relaxed);
            }
        }),
        first,
    );
    let sleeper = held.last().copied();
    let spawned = held.len() as u64;
    for id in held {
        strand::start(id);
    }
    let deadline = tsc::now() + tsc::ns_to_cycles(STRANDS_TIMEOUT_NS);
    while checks.sleeper_ready.load(Ordering::Acquire) == 0 && tsc::now() < deadline {
        crate::extensions::halt_until_interrupt();
    }
    if let Some(sleeper) = sleeper {
        if let Err(error) = strand::set_affinity(sleeper, last) {
            problems.push(format!("set_affinity on a blocked strand: {error:?}"));
        }
        checks.sleeper_moved.store(1, Ordering::Release);
        strand::unblock(sleeper);
    }
    let counters = &strand::COUNTERS;
    let none_pending = AtomicU64::new(0);
    wait_for_strands(&none_pending, 0, STRANDS_TIMEOUT_NS);
    let created = counters.created.load(Ordering::Relaxed);
    let exited = counters.exited.load(Ordering::Relaxed);
    if created != spawned + JOIN_CHILDREN || exited != created {
        problems.push(format!(
            "{created} strands created ({} expected), {exited} exited",
            spawned + JOIN_CHILDREN
        ));
    }
    console::with_console(|console| {
        let values = [
            ("ops.joined", checks.joined.load(Ordering::Relaxed)),
            (
                "ops.joined_again",
                checks.joined_again.load(Ordering::Relaxed),
            ),
            (
                "ops.self_join_refused",
                checks.self_join_refused.load(Ordering::Relaxed),
            ),
            (
                "ops.moved_itself",
                checks.moved_itself.load(Ordering::Relaxed),
            ),
            (
                "ops.moved_while_blocked",
                checks.moved_while_blocked.load(Ordering::Relaxed),
            ),
            (
                "ops.empty_set_refused",
                checks.empty_set_refused.load(Ordering::Relaxed),
            ),
            ("ops.join_children", JOIN_CHILDREN),
            ("ops.directed_rounds", 2 * DIRECTED_ROUNDS),
        ];
        for (name, value) in values {
            console::write_scalar_u64(console, name, value);
        }
    });
    report_scheduler_scalars(created, exited);
    problems
}

/// What the `strand-ops` strands found (1: the check held).
#[derive(Default)]
struct OperationChecks {
    joined: AtomicU64,
    joined_again: AtomicU64,
    self_join_refused: AtomicU64,
    moved_itself: AtomicU64,
    moved_while_blocked: AtomicU64,
    empty_set_refused: AtomicU64,
    sleeper_ready: AtomicU64,
    sleeper_moved: AtomicU64,
}
