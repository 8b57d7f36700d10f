//! Thread packages (issue 6): the context primitive, `uthreads` and scheduler activations with thousands of threads, the activations' upcall invariants, and `--bench forkjoin,pingpong,blocking` on strands, uthreads and activations.
//!
//! These runs ask for TCG: the stress test makes tens of thousands of
//! switches, which the nested PVM "KVM" here makes slow without changing
//! what is checked.

use spindle_tests::{boot_tcg, expect_status, histogram, ExitStatusKind, RunReport};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

fn run(smp: u32, append: &str) -> RunReport {
    let report = boot_tcg(smp, append, TIMEOUT);
    expect_status(&report, ExitStatusKind::Ok);
    report
}

fn scalar(report: &RunReport, name: &str) -> u64 {
    report.document[name]
        .as_u64()
        .unwrap_or_else(|| panic!("scalar {name} missing"))
}

fn expect_threads_kept_their_count(smp: u32) {
    let report = run(
        smp,
        "bench=tsc tsc_samples=1 selftest=uthreads thread_count=3000 watchdog_ms=30000 budget_ms=2000",
    );
    // Every thread was spawned, ran and was joined.
    assert_eq!(scalar(&report, "uthreads.threads"), 3000, "-smp {smp}");
    assert_eq!(scalar(&report, "uthreads.finished"), 3000, "-smp {smp}");
    // Each thread yields inside its critical section, and the carriers are
    // preempted by the strands' tick: only the mutex keeps the count.
    assert_eq!(
        scalar(&report, "uthreads.counter"),
        3000 * scalar(&report, "uthreads.increments"),
        "-smp {smp}"
    );
    // Finished threads' contexts are reused: far fewer stacks than threads.
    assert!(
        scalar(&report, "uthreads.contexts_made") < 1000,
        "-smp {smp}"
    );
    if smp > 1 {
        // Carriers on other CPUs took threads from the spawning one's queue.
        assert!(scalar(&report, "uthreads.steals") > 0, "-smp {smp}");
    }
    // The carriers are strands: none lost.
    assert_eq!(scalar(&report, "strands_lost"), 0, "-smp {smp}");
    // SPIN's Checkpoint and Resume for the package: one carrier runs a
    // thread that spins until another thread sets a flag; a strand competes
    // for the CPU. The flag is seen only because the kernel, preempting the
    // carrier, handed the spinner back to the package, whose own scheduler
    // then ran the other thread.
    assert_eq!(
        scalar(&report, "uthreads.preemption.flag_seen"),
        1,
        "-smp {smp}"
    );
    assert!(
        scalar(&report, "uthreads.preemption.handed_back") >= 1,
        "-smp {smp}"
    );
    assert!(scalar(&report, "threads_handed_back") >= 1, "-smp {smp}");
    // A producer and a consumer hand 200 values over one slot with a mutex
    // and two condition variables: every value arrives, in order.
    assert_eq!(
        scalar(&report, "uthreads.condvar_rounds"),
        200,
        "-smp {smp}"
    );
}

#[test]
fn thousands_of_uthreads_on_one_cpu() {
    expect_threads_kept_their_count(1);
}

#[test]
fn thousands_of_uthreads_on_two_cpus() {
    expect_threads_kept_their_count(2);
}

#[test]
fn thousands_of_uthreads_on_four_cpus() {
    expect_threads_kept_their_count(4);
}

/// Every invariant the activations count held: never more running
/// activations than granted processors, never two on one processor, never
/// a granted processor idle while threads waited, no kernel event lost.
fn expect_activation_invariants(report: &RunReport, context: &str) {
    assert!(
        scalar(report, "activations.invariant_checks") > 0,
        "{context}: the invariants were never checked"
    );
    for violation in [
        "activations.violations.over_granted",
        "activations.violations.double_running",
        "activations.violations.idle_with_ready",
        "activations.violations.occupied",
        "activations.events_dropped",
    ] {
        assert_eq!(scalar(report, violation), 0, "{context}: {violation}");
    }
}

fn expect_activations_kept_their_count(smp: u32) {
    let report = run(
        smp,
        "bench=tsc tsc_samples=1 selftest=activations thread_count=3000 watchdog_ms=30000 budget_ms=2000",
    );
    let context = format!("-smp {smp}");
    assert_eq!(scalar(&report, "activations.threads"), 3000, "{context}");
    assert_eq!(scalar(&report, "activations.finished"), 3000, "{context}");
    // Each thread yields inside its critical section while the kernel takes
    // a processor back every 20 ms: only the mutex keeps the count.
    assert_eq!(
        scalar(&report, "activations.counter"),
        3000 * scalar(&report, "activations.increments"),
        "{context}"
    );
    // The package got every CPU but CPU 0, lost processors to revocation
    // and got them back: each change reached it as an upcall.
    let revocations = scalar(&report, "activations.revocations");
    assert!(revocations >= 1, "{context}: no processor was taken back");
    assert!(
        scalar(&report, "activations.upcalls.processor_preempted") >= revocations,
        "{context}: a revocation without a processor-preempted upcall"
    );
    assert!(
        scalar(&report, "activations.upcalls.processor_added") > revocations,
        "{context}"
    );
    assert!(
        scalar(&report, "activations.downcalls.add_more_processors") >= 1,
        "{context}"
    );
    expect_activation_invariants(&report, &context);
    assert_eq!(
        scalar(&report, "activations.condvar_rounds"),
        200,
        "{context}"
    );
    assert_eq!(scalar(&report, "strands_lost"), 0, "{context}");
}

#[test]
fn thousands_of_threads_on_scheduler_activations_at_two_cpus() {
    expect_activations_kept_their_count(2);
}

#[test]
fn thousands_of_threads_on_scheduler_activations_at_four_cpus() {
    expect_activations_kept_their_count(4);
}

#[test]
fn scheduler_activations_need_a_processor_besides_cpu0() {
    let report = boot_tcg(1, "selftest=activations thread_count=10", TIMEOUT);
    expect_status(&report, ExitStatusKind::KernelFailed);
    let message = report.message.clone().unwrap_or_default();
    assert!(message.contains("needs -smp 2 or more"), "{message}");
}

#[test]
fn forkjoin_and_pingpong_run_on_strands_uthreads_and_activations() {
    let report = run(2, "bench=forkjoin,pingpong thread_rounds=300");
    for name in [
        "forkjoin.strand",
        "forkjoin.uthreads",
        "forkjoin.activations",
        "pingpong.strand",
        "pingpong.uthreads",
        "pingpong.activations",
    ] {
        let samples = histogram(&report, name)["count"].as_u64().unwrap();
        assert_eq!(samples, 300, "{name}");
    }
}

#[test]
fn blocking_calls_idle_a_uthreads_carrier_but_not_an_activations_processor() {
    let report = run(2, "bench=blocking");
    let threads = scalar(&report, "blocking.threads");
    // Eight threads on each CPU but CPU 0.
    assert_eq!(threads, 8);
    // A hundred steps per thread, a blocking call every fourth.
    for package in ["uthreads", "activations"] {
        assert_eq!(
            scalar(&report, &format!("blocking.calls.{package}")),
            threads * 25,
            "{package}"
        );
    }
    // Every blocking call under activations blocked an activation and
    // came back through an upcall.
    assert_eq!(
        scalar(&report, "activations.upcalls.activation_blocked"),
        threads * 25
    );
    assert_eq!(
        scalar(&report, "activations.upcalls.activation_unblocked"),
        threads * 25
    );
    expect_activation_invariants(&report, "blocking");
    let utilisation = |package: &str| {
        let name = format!("blocking.utilisation.{package}");
        report.document[name.as_str()]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}"))
    };
    let (uthreads, activations) = (utilisation("uthreads"), utilisation("activations"));
    // A carrier's CPU idles while its strand waits in the kernel; an
    // activations processor runs other threads meanwhile. (The figures
    // themselves are in docs/thread-packages.md: a ratio in one run is all
    // a test on a noisy host may assert.)
    assert!(uthreads > 0.0 && uthreads < 90.0, "{uthreads}");
    assert!(
        activations > uthreads * 1.5,
        "activations {activations} against uthreads {uthreads}"
    );
}
