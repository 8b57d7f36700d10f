//! Thread packages on kernel strands (issue 6, first part): the context primitive, `uthreads` with thousands of threads, and `--bench forkjoin,pingpong` on strands and on uthreads.
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
        "bench=tsc tsc_samples=1 selftest=uthreads thread_count=3000 watchdog_ms=30000",
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

#[test]
fn forkjoin_and_pingpong_run_on_strands_and_on_uthreads() {
    let report = run(2, "bench=forkjoin,pingpong thread_rounds=300");
    for name in [
        "forkjoin.strand",
        "forkjoin.uthreads",
        "pingpong.strand",
        "pingpong.uthreads",
    ] {
        let samples = histogram(&report, name)["count"].as_u64().unwrap();
        assert_eq!(samples, 300, "{name}");
    }
}

#[test]
fn blocking_calls_block_a_uthreads_carrier() {
    let report = run(2, "bench=blocking");
    let threads = scalar(&report, "blocking.threads");
    assert_eq!(threads, 16);
    // Forty steps per thread, a blocking call every fourth.
    assert_eq!(scalar(&report, "blocking.calls.uthreads"), threads * 10);
    let utilisation = report.document["blocking.utilisation.uthreads"]
        .as_f64()
        .expect("blocking.utilisation.uthreads");
    // A carrier's CPU idles while its strand waits in the kernel.
    assert!(utilisation > 0.0 && utilisation < 90.0, "{utilisation}");
}
