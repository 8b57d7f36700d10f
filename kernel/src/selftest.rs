//! Self-tests that need the whole machine: `selftest=dispatch-churn` installs and removes handlers on CPU 0 while every other CPU raises the event.
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
            console::write_record(console, "scalar", |record| {
                record
                    .str("name", full_name.as_str())?
                    .u64("value", value)?;
                Ok(())
            });
        }
        console::write_record(console, "scalar", |record| {
            record
                .str("name", "churn.raises_per_cpu")?
                .u64_list("value", raises_per_cpu.iter().copied())?;
            Ok(())
        });
        console::write_record(console, "scalar", |record| {
            record
                .str("name", "churn.duration_ms")?
                .u64("value", duration_ms)?;
            Ok(())
        });
    });
}
